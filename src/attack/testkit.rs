//! Test support for the attack tests: a linear classifier whose objectives
//! and gradients are known in closed form, the committed CNN loaded once, and
//! a few synthetic 28×28 inputs for it (not the dataset: the unit tests must
//! not depend on files outside the repository).

use super::{LossGrad, Objective, sample_rng, uniform01};
use crate::error::{Error, GradError};
use crate::model::Classifier;
use crate::model::grad::{Loss, LossKind};
use ndarray::{Array, Array2, ArrayD, Axis, IxDyn};
use std::path::Path;
use std::sync::OnceLock;

/// z = W·flatten(x) + b, with W `[classes, pixels]`, in f64.
/// Cross-entropy lse(z) − z_y has ∂/∂x = Wᵀ(p − e_y); the margin
/// z_j − z_y (j the best other class, ties to the lowest index) has
/// ∂/∂x = Wᵀ(e_j − e_y); DLR as `model::grad::loss`; targeted objectives
/// are the negations.
pub(crate) struct Linear {
    pub w: Array2<f64>,
    pub b: Vec<f64>,
}

impl Linear {
    /// Class 0 has zero weights, class 1 has weights `g`: the untargeted
    /// margin for label 0 is g·x and its gradient is `g` everywhere.
    pub fn two_class(g: impl AsRef<[f64]>) -> Linear {
        let g = g.as_ref();
        let mut w = Array2::zeros((2, g.len()));
        w.row_mut(1).assign(&ndarray::ArrayView1::from(g));
        Linear { w, b: vec![0.0, 0.0] }
    }

    /// A generic three-class model that adapts to any number of pixels
    /// (weights are a fixed pattern of the pixel index).
    pub fn three_class() -> Linear {
        Linear { w: Array2::zeros((3, 0)), b: vec![0.0, 0.3, -0.2] }
    }

    fn weights(&self, pixels: usize) -> Array2<f64> {
        if self.w.ncols() == pixels {
            self.w.clone()
        } else {
            Array2::from_shape_fn((self.b.len(), pixels), |(k, p)| ((k * 7 + p * 3) as f64).sin() * (k as f64 + 1.0))
        }
    }

    fn z(&self, x: &ArrayD<f32>) -> (Array2<f64>, Array2<f64>) {
        let n = x.shape()[0];
        let flat = x.as_standard_layout().into_owned().into_shape_with_order((n, x.len() / n.max(1))).unwrap();
        let flat = flat.mapv(f64::from);
        let w = self.weights(flat.ncols());
        let mut z = flat.dot(&w.t());
        for mut row in z.axis_iter_mut(Axis(0)) {
            row.iter_mut().zip(&self.b).for_each(|(v, b)| *v += b);
        }
        (z, w)
    }
}

impl Objective for Linear {
    fn logits(&self, x: &ArrayD<f32>) -> Result<Array2<f32>, Error> {
        Ok(self.z(x).0.mapv(|v| v as f32))
    }

    fn loss_and_grad(&self, x: ArrayD<f32>, classes: &[usize], loss: Loss) -> Result<LossGrad<f32>, Error> {
        let (z, w) = self.z(&x);
        let sign = if loss.targeted { -1.0 } else { 1.0 };
        let mut dz = Array2::<f64>::zeros(z.dim());
        let mut losses = Vec::new();
        for (i, zi) in z.outer_iter().enumerate() {
            let y = classes[i];
            let j = (0..zi.len())
                .filter(|&k| k != y)
                .fold(usize::MAX, |b, k| if b == usize::MAX || zi[k] > zi[b] { k } else { b });
            match loss.kind {
                LossKind::CrossEntropy => {
                    let m = zi.fold(f64::NEG_INFINITY, |a, &v| a.max(v));
                    let lse = m + zi.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                    for k in 0..zi.len() {
                        dz[[i, k]] = sign * ((zi[k] - lse).exp() - f64::from(u8::from(k == y)));
                    }
                    losses.push((sign * (lse - zi[y])) as f32);
                }
                LossKind::Margin => {
                    dz[[i, j]] += sign;
                    dz[[i, y]] -= sign;
                    losses.push((sign * (zi[j] - zi[y])) as f32);
                }
                LossKind::Dlr => {
                    // −(z_y − z_j)/s, s = z_π1 − z_π3 + 1e-12 (sorted descending);
                    // ∂/∂z_y = −1/s, ∂/∂z_j = 1/s, ∂/∂z_π1 += num/s², ∂/∂z_π3 −= num/s².
                    if zi.len() < 3 {
                        return Err(GradError::Graph("DLR needs at least 3 classes".into()).into());
                    }
                    let mut order: Vec<usize> = (0..zi.len()).collect();
                    order.sort_by(|&a, &b| zi[b].total_cmp(&zi[a]));
                    let s = zi[order[0]] - zi[order[2]] + 1e-12;
                    let num = zi[y] - zi[j];
                    losses.push((sign * (-num / s)) as f32);
                    dz[[i, y]] -= sign / s;
                    dz[[i, j]] += sign / s;
                    dz[[i, order[0]]] += sign * num / (s * s);
                    dz[[i, order[2]]] -= sign * num / (s * s);
                }
            }
        }
        let grad = dz.dot(&w).mapv(|v| v as f32).into_shape_with_order(IxDyn(x.shape())).unwrap();
        Ok(LossGrad { logits: z.mapv(|v| v as f32), losses, grad })
    }
}

/// `models/pneumonia_cnn.onnx` (28×28 grey, 2 classes, inputs in [0, 1]), loaded once.
pub(crate) fn cnn() -> &'static Classifier {
    static MODEL: OnceLock<Classifier> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/pneumonia_cnn.onnx");
        Classifier::load(&path).expect("the committed CNN loads")
    })
}

/// Six synthetic 28×28 images in [0, 1], shape `[6, 1, 28, 28]`: two
/// chest-like pictures (dark lung fields on a brighter body, one with a
/// hazy opacity), a radial gradient, smooth stripes, flat grey and a seeded
/// texture.
pub(crate) fn synthetic_batch() -> ArrayD<f32> {
    let lungs = |i: f32, j: f32, haze: f32| {
        let ell = |ci: f32, cj: f32| ((i - ci) / 9.0).powi(2) + ((j - cj) / 4.5).powi(2) < 1.0;
        let mut v = 0.75 - 0.01 * (j - 13.5).abs();
        if ell(14.0, 8.0) || ell(14.0, 19.0) {
            v = 0.25;
        }
        let d = ((i - 17.0).powi(2) + (j - 19.0).powi(2)).sqrt();
        v + haze * (1.0 - d / 6.0).max(0.0)
    };
    let mut rng = sample_rng(3, "texture");
    let texture: Vec<f32> = (0..784).map(|_| 0.3 + 0.4 * uniform01(&mut rng)).collect();
    Array::from_shape_fn(IxDyn(&[6, 1, 28, 28]), |ix| {
        let (n, i, j) = (ix[0], ix[2] as f32, ix[3] as f32);
        let v = match n {
            0 => lungs(i, j, 0.0),
            1 => lungs(i, j, 0.45),
            2 => 0.2 + 0.6 * (1.0 - ((i - 13.5).powi(2) + (j - 13.5).powi(2)).sqrt() / 19.1),
            3 => 0.5 + 0.35 * (i / 2.5).sin(),
            4 => 0.5,
            _ => texture[ix[2] * 28 + ix[3]],
        };
        v.clamp(0.0, 1.0)
    })
}

/// One generator per sample, seeded from its index.
pub(crate) fn rngs(n: usize, seed: u64) -> Vec<super::ChaCha8Rng> {
    (0..n).map(|i| super::sample_rng(seed, &i.to_string())).collect()
}
