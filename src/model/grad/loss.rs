//! Attack objectives on the logits. Each is an objective to *maximise*:
//! untargeted objectives grow as the label loses, targeted ones as the target
//! wins. Per-sample values are summed for the backward pass, so a sample's
//! gradient does not depend on the other samples in its batch.

use super::Elem;
use crate::error::GradError;
use ndarray::{Array2, ArrayView2};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Cross-entropy `lse(z) − z_y`.
    CrossEntropy,
    /// Margin `max_{j≠y} z_j − z_y` (the un-normalised core of AutoAttack's DLR).
    Margin,
    /// Difference of logits ratio (Croce & Hein 2020):
    /// `−(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e-12)`; needs at least 3 classes.
    Dlr,
}

/// An objective: which loss, and whether `classes` are labels to move away
/// from (untargeted) or targets to move towards (targeted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    pub kind: LossKind,
    pub targeted: bool,
}

impl Loss {
    pub const CE: Loss = Loss { kind: LossKind::CrossEntropy, targeted: false };
    pub const MARGIN: Loss = Loss { kind: LossKind::Margin, targeted: false };
}

/// Per-sample objectives and ∂(Σ objectives)/∂logits.
pub fn loss_and_dlogits<T: Elem>(
    logits: ArrayView2<T>,
    classes: &[usize],
    loss: Loss,
) -> Result<(Vec<T>, Array2<T>), GradError> {
    let (batch, n) = logits.dim();
    if classes.len() != batch {
        return Err(GradError::Graph(format!("{} classes given for a batch of {batch}", classes.len())));
    }
    if n < 2 {
        return Err(GradError::Graph(format!("the model has {n} output; attacks need at least 2 classes")));
    }
    if loss.kind == LossKind::Dlr && n < 3 {
        return Err(GradError::Graph(format!("the DLR loss needs at least 3 classes, the model has {n}")));
    }
    let mut losses = Vec::with_capacity(batch);
    let mut d = Array2::zeros((batch, n));
    // Untargeted objectives push the class down, targeted ones push it up:
    // the targeted objective is the negated untargeted one.
    let sign = if loss.targeted { -T::one() } else { T::one() };
    for (b, z) in logits.outer_iter().enumerate() {
        let y = classes[b];
        if y >= n {
            return Err(GradError::Graph(format!("class {y} is out of range for a model with {n} classes")));
        }
        let mut row = d.row_mut(b);
        // Best other class: ties go to the lowest index, as torch.argmax does.
        let best_other = (0..n).filter(|&j| j != y).fold(None, |best: Option<usize>, j| match best {
            Some(k) if z[k] >= z[j] => Some(k),
            _ => Some(j),
        });
        let j = best_other.unwrap_or(0);
        match loss.kind {
            LossKind::CrossEntropy => {
                // lse(z) − z_y; ∂/∂z_k = p_k for k ≠ y and ∂/∂z_y = p_y − 1 = −Σ_{k≠y} p_k.
                // Both the loss and ∂/∂z_y are formed from the other classes'
                // probabilities: with a confident prediction p_y − 1 and
                // lse − z_y cancel catastrophically in f32 (a loss of 1e-6 next
                // to logits of 10 keeps no correct digit).
                let m = z.fold(T::neg_infinity(), |a, &b| a.max(b));
                let sum: T = z.iter().map(|&v| (v - m).exp()).sum();
                let lse = m + sum.ln();
                let mut others = T::zero();
                for k in (0..n).filter(|&k| k != y) {
                    let p = (z[k] - lse).exp();
                    row[k] = sign * p;
                    others += p;
                }
                row[y] = -sign * others;
                let ce = if z[y] >= m {
                    // ln(1 + Σ_{k≠y} e^{z_k − z_y}), every exponent ≤ 0.
                    (0..n).filter(|&k| k != y).map(|k| (z[k] - z[y]).exp()).sum::<T>().ln_1p()
                } else {
                    lse - z[y]
                };
                losses.push(sign * ce);
            }
            LossKind::Margin => {
                // z_j − z_y with j the best other class; ∂/∂z = e_j − e_y.
                losses.push(sign * (z[j] - z[y]));
                row[j] += sign;
                row[y] -= sign;
            }
            LossKind::Dlr => {
                // f = −(z_y − z_j)/s with s = z_π1 − z_π3 (sorted descending).
                // ∂f/∂z_y = −1/s, ∂f/∂z_j = 1/s, and through s:
                // ∂f/∂z_π1 += (z_y − z_j)/s², ∂f/∂z_π3 −= (z_y − z_j)/s².
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&a, &b| z[b].partial_cmp(&z[a]).unwrap_or(std::cmp::Ordering::Equal));
                let s = z[order[0]] - z[order[2]] + T::of(1e-12);
                let num = z[y] - z[j];
                losses.push(sign * (-num / s));
                row[y] -= sign / s;
                row[j] += sign / s;
                row[order[0]] += sign * num / (s * s);
                row[order[2]] -= sign * num / (s * s);
            }
        }
    }
    Ok((losses, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// Central differences of each objective in f64 agree with its analytic
    /// derivative; smooth functions, so 1e-7 is the f64 truncation bound.
    #[test]
    fn dlogits_match_finite_differences() {
        let z = array![[0.3f64, -1.2, 2.0, 0.7], [1.5, 1.4, -0.2, 0.1]];
        let classes = [2usize, 0];
        for kind in [LossKind::CrossEntropy, LossKind::Margin, LossKind::Dlr] {
            for targeted in [false, true] {
                let loss = Loss { kind, targeted };
                let (_, d) = loss_and_dlogits(z.view(), &classes, loss).unwrap();
                for b in 0..2 {
                    for k in 0..4 {
                        let h = 1e-6;
                        let mut zp = z.clone();
                        zp[[b, k]] += h;
                        let mut zm = z.clone();
                        zm[[b, k]] -= h;
                        let fp: f64 = loss_and_dlogits(zp.view(), &classes, loss).unwrap().0.iter().sum();
                        let fm: f64 = loss_and_dlogits(zm.view(), &classes, loss).unwrap().0.iter().sum();
                        let fd = (fp - fm) / (2.0 * h);
                        assert!(
                            (fd - d[[b, k]]).abs() < 1e-7,
                            "{kind:?} targeted={targeted} [{b},{k}]: fd {fd} vs {}",
                            d[[b, k]]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn cross_entropy_is_stable_for_large_logits() {
        let z = array![[1000.0f32, -1000.0]];
        let (l, d) = loss_and_dlogits(z.view(), &[1], Loss::CE).unwrap();
        assert!((l[0] - 2000.0).abs() < 1e-3 && d.iter().all(|v| v.is_finite()));
    }

    /// A confident prediction (gap 13) has CE ≈ 2e-6: the f32 loss and
    /// gradient must keep their digits (relative error ≲ 1e-5 against f64),
    /// which forming p_y − 1 or lse − z_y directly does not.
    #[test]
    fn confident_cross_entropy_keeps_precision_in_f32() {
        let z32 = array![[6.5f32, -6.5]];
        let z64 = z32.mapv(f64::from);
        let (l32, d32) = loss_and_dlogits(z32.view(), &[0], Loss::CE).unwrap();
        let (l64, d64) = loss_and_dlogits(z64.view(), &[0], Loss::CE).unwrap();
        assert!(((l32[0] as f64) - l64[0]).abs() <= 1e-5 * l64[0], "{} vs {}", l32[0], l64[0]);
        for k in 0..2 {
            assert!(((d32[[0, k]] as f64) - d64[[0, k]]).abs() <= 1e-5 * d64[[0, k]].abs());
        }
    }
}
