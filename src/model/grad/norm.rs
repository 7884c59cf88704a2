//! Normalisation layers: BatchNormalization in inference mode (a fixed
//! per-channel affine map), InstanceNormalization and LayerNormalization
//! (statistics of the input itself, so their gradients carry the terms
//! through the mean and variance).

use super::conv::contiguous;
use super::value::{broadcast_to, finput, norm_axis};
use super::vmath;
use super::{Backward, BuildCtx, Elem, Op, OpResult, Value, op_bail};
use crate::model::graph::Node;
use ndarray::{ArrayD, Axis, IxDyn, Zip};

/// Per-channel (axis 1) scale k_c and shift s_c with y = k_c·x + s_c.
fn bn_affine<T: Elem>(inputs: &[Option<&Value<T>>], eps: f64) -> OpResult<(Vec<T>, Vec<T>)> {
    let x = finput(inputs, 0)?;
    if x.ndim() < 2 {
        op_bail!("BatchNormalization input must have a channel axis, got shape {:?}", x.shape());
    }
    let c = x.shape()[1];
    let param = |i: usize, name: &str| -> OpResult<Vec<T>> {
        let p = finput(inputs, i)?;
        if p.len() != c {
            op_bail!("BatchNormalization {name} has {} values for {c} channels", p.len());
        }
        Ok(p.iter().copied().collect())
    };
    let (scale, bias, mean, var) = (param(1, "scale")?, param(2, "bias")?, param(3, "mean")?, param(4, "var")?);
    Ok(affine(&scale, &bias, &mean, &var, eps))
}

/// k_c = scale_c/√(var_c + ε) and s_c = bias_c − mean_c·k_c.
fn affine<T: Elem>(scale: &[T], bias: &[T], mean: &[T], var: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let k: Vec<T> = scale.iter().zip(var).map(|(&g, &v)| g / (v + T::of(eps)).sqrt()).collect();
    let s: Vec<T> = bias.iter().zip(mean).zip(&k).map(|((&b, &m), &k)| b - m * k).collect();
    (k, s)
}

/// The per-channel map y = k_c·x + s_c of BatchNormalization node `n` in
/// inference mode, from its four constant parameters (scale, bias, mean,
/// var), computed as the op computes it; `None` when the node would not
/// build (training mode) or the parameters are not `channels` floats each.
pub(super) fn batch_norm_affine<T: Elem>(
    n: &Node,
    params: [Option<&Value<T>>; 4],
    channels: usize,
) -> Option<(Vec<T>, Vec<T>)> {
    if n.attr_int("training_mode").unwrap_or(0) != 0 {
        return None;
    }
    let eps = n.attr_float("epsilon").map(f64::from).unwrap_or(1e-5);
    let p: Vec<Vec<T>> = params
        .iter()
        .map(|v| match v {
            Some(Value::F(a)) if a.len() == channels => Some(a.iter().copied().collect()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    Some(affine(&p[0], &p[1], &p[2], &p[3], eps))
}

/// y = k_c·x (+ s_c) per channel (axis 1). Contiguous inputs (the engine's
/// usual case) are mapped plane by plane with the channel's constants hoisted.
fn per_channel<T: Elem>(x: &ArrayD<T>, k: &[T], s: Option<&[T]>) -> ArrayD<T> {
    let c = x.shape()[1];
    let plane: usize = x.shape()[2..].iter().product();
    if let Some(xs) = x.as_slice()
        && plane > 0
    {
        let mut y = Vec::with_capacity(xs.len());
        for (i, p) in xs.chunks_exact(plane).enumerate() {
            let kc = k[i % c];
            match s {
                Some(s) => {
                    let sc = s[i % c];
                    y.extend(p.iter().map(|&v| kc * v + sc));
                }
                None => y.extend(p.iter().map(|&v| kc * v)),
            }
        }
        if let Ok(y) = ArrayD::from_shape_vec(x.raw_dim(), y) {
            return y;
        }
    }
    let mut y = x.to_owned();
    for (ch, mut lane) in y.axis_iter_mut(Axis(1)).enumerate() {
        let (kc, sc) = (k[ch], s.map(|s| s[ch]));
        lane.mapv_inplace(|v| match sc {
            Some(sc) => kc * v + sc,
            None => kc * v,
        });
    }
    y
}

struct BatchNorm {
    eps: f64,
}

impl<T: Elem> Op<T> for BatchNorm {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let (k, s) = bn_affine(inputs, self.eps)?;
        Ok(vec![Value::F(per_channel(finput(inputs, 0)?, &k, Some(&s)))])
    }
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        // y = k_c·x + s_c with k_c = scale_c/√(var_c+ε): ∂L/∂x = k_c·g.
        if ctx.wrt.iter().skip(1).any(|&w| w) {
            op_bail!("gradients with respect to BatchNormalization parameters are not supported");
        }
        let (k, _) = bn_affine(ctx.inputs, self.eps)?;
        let mut out = vec![None; ctx.inputs.len()];
        out[0] = Some(per_channel(ctx.dout, &k, None));
        Ok(out)
    }
}

pub fn build_batch_norm<T: Elem>(n: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    if n.attr_int("training_mode").unwrap_or(0) != 0 {
        op_bail!("BatchNormalization in training mode: export the model in eval mode");
    }
    Ok(Box::new(BatchNorm { eps: n.attr_float("epsilon").map(f64::from).unwrap_or(1e-5) }))
}

/// Normalises contiguous groups of `size` values: x̂ = (x − μ)/√(σ² + ε)
/// with the biased variance. Returns x̂ and, per group, μ and 1/√(σ² + ε).
fn normalize<T: Elem>(x: &[T], size: usize, eps: f64) -> (Vec<T>, Vec<T>, Vec<T>) {
    let mut xhat = vec![T::zero(); x.len()];
    let groups = x.len() / size.max(1);
    let (mut means, mut inv) = (Vec::with_capacity(groups), Vec::with_capacity(groups));
    let n = T::of(size as f64);
    for (xs, hs) in x.chunks(size).zip(xhat.chunks_mut(size)) {
        let mean = vmath::sum_map(xs, |v| v) / n;
        let var = vmath::sum_map(xs, |v| (v - mean) * (v - mean)) / n;
        let r = (var + T::of(eps)).sqrt().recip();
        for (h, &v) in hs.iter_mut().zip(xs) {
            *h = (v - mean) * r;
        }
        means.push(mean);
        inv.push(r);
    }
    (xhat, means, inv)
}

/// x̂ from the statistics [`normalize`] returned, with the same arithmetic.
fn renormalize<T: Elem>(x: &[T], size: usize, means: &[T], inv: &[T]) -> Vec<T> {
    let mut xhat = Vec::with_capacity(x.len());
    for ((xs, &mean), &r) in x.chunks(size).zip(means).zip(inv) {
        xhat.extend(xs.iter().map(|&v| (v - mean) * r));
    }
    xhat
}

/// Adjoint of [`normalize`]: given dx̂, returns
/// dx = r·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) per group, with r = 1/√(σ² + ε).
fn normalize_backward<T: Elem>(xhat: &[T], inv: &[T], dxhat: &[T], size: usize) -> Vec<T> {
    let n = T::of(size as f64);
    let mut dx = vec![T::zero(); xhat.len()];
    for (((h, d), out), &r) in xhat.chunks(size).zip(dxhat.chunks(size)).zip(dx.chunks_mut(size)).zip(inv) {
        let md = vmath::sum_map(d, |d| d) / n;
        let mdh = vmath::sum_zip(d, h, |d, h| d * h) / n;
        for ((o, &d), &h) in out.iter_mut().zip(d).zip(h) {
            *o = r * (d - md - h * mdh);
        }
    }
    dx
}

/// InstanceNormalization: per (n, c), over the spatial axes; y = scale_c·x̂ + B_c.
struct InstanceNorm {
    eps: f64,
}

impl InstanceNorm {
    fn layout<T: Elem>(x: &ArrayD<T>, inputs: &[Option<&Value<T>>]) -> OpResult<(usize, usize, Vec<T>, Vec<T>)> {
        if x.ndim() < 3 {
            op_bail!("InstanceNormalization needs (N, C, spatial...), got {:?}", x.shape());
        }
        let c = x.shape()[1];
        let size: usize = x.shape()[2..].iter().product();
        let scale: Vec<T> = finput(inputs, 1)?.iter().copied().collect();
        let bias: Vec<T> = finput(inputs, 2)?.iter().copied().collect();
        if scale.len() != c || bias.len() != c {
            op_bail!("InstanceNormalization scale/bias must have {c} values");
        }
        Ok((c, size, scale, bias))
    }
}

impl<T: Elem> Op<T> for InstanceNorm {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = finput(inputs, 0)?;
        let (c, size, scale, bias) = Self::layout(x, inputs)?;
        let (mut y, means, inv) = normalize(&contiguous(x), size.max(1), self.eps);
        for (i, plane) in y.chunks_mut(size.max(1)).enumerate() {
            let (s, b) = (scale[i % c], bias[i % c]);
            for v in plane {
                *v = s * *v + b;
            }
        }
        let y = ArrayD::from_shape_vec(IxDyn(x.shape()), y).map_err(|e| super::OpError(e.to_string()))?;
        let groups = means.len();
        let mut stats = means;
        stats.extend(inv);
        let stats = ArrayD::from_shape_vec(IxDyn(&[2, groups]), stats).map_err(|e| super::OpError(e.to_string()))?;
        Ok(vec![Value::F(y), Value::F(stats)])
    }

    /// Per (n, c) group: the mean and 1/√(σ² + ε), shape [2, N·C], so the
    /// backward pass does not compute the statistics again.
    fn saves_for_backward(&self) -> bool {
        true
    }

    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        // y = scale_c·x̂ + B_c: dx̂ = scale_c·g, then the normalisation adjoint;
        // dscale_c = Σ g·x̂, dB_c = Σ g over (n, spatial).
        let x = finput(ctx.inputs, 0)?;
        let (c, size, scale, _) = Self::layout(x, ctx.inputs)?;
        let size = size.max(1);
        let xs = contiguous(x);
        let groups = xs.len() / size;
        let (xhat, inv) = match ctx.saved.map(Value::float) {
            Some(Ok(stats)) if stats.shape() == [2, groups] => {
                let stats = contiguous(stats);
                let (means, inv) = stats.split_at(groups);
                (renormalize(&xs, size, means, inv), inv.to_vec())
            }
            _ => {
                let (xhat, _, inv) = normalize(&xs, size, self.eps);
                (xhat, inv)
            }
        };
        let g = contiguous(ctx.dout);
        let mut out = vec![None; ctx.inputs.len()];
        if ctx.wrt[0] {
            let mut dxhat = Vec::with_capacity(g.len());
            for (i, plane) in g.chunks(size).enumerate() {
                let s = scale[i % c];
                dxhat.extend(plane.iter().map(|&g| g * s));
            }
            let dx = normalize_backward(&xhat, &inv, &dxhat, size);
            out[0] = Some(ArrayD::from_shape_vec(IxDyn(x.shape()), dx).map_err(|e| super::OpError(e.to_string()))?);
        }
        for (slot, with_xhat) in [(1usize, true), (2, false)] {
            if ctx.wrt.get(slot) == Some(&true) {
                let mut d = vec![T::zero(); c];
                for (i, &g) in g.iter().enumerate() {
                    d[(i / size) % c] += if with_xhat { g * xhat[i] } else { g };
                }
                out[slot] = Some(ArrayD::from_shape_vec(IxDyn(&[c]), d).map_err(|e| super::OpError(e.to_string()))?);
            }
        }
        Ok(out)
    }
}

pub fn build_instance_norm<T: Elem>(n: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(InstanceNorm { eps: n.attr_float("epsilon").map(f64::from).unwrap_or(1e-5) }))
}

/// LayerNormalization (opset 17): normalises over the axes from `axis` on;
/// Scale and optional B broadcast to those axes. Only output Y is produced.
struct LayerNorm {
    axis: i64,
    eps: f64,
}

impl<T: Elem> Op<T> for LayerNorm {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = finput(inputs, 0)?;
        let axis = norm_axis(self.axis, x.ndim())?;
        let size: usize = x.shape()[axis..].iter().product();
        let (xhat, _, _) = normalize(&contiguous(x), size.max(1), self.eps);
        let xhat = ArrayD::from_shape_vec(IxDyn(x.shape()), xhat).map_err(|e| super::OpError(e.to_string()))?;
        let scale = broadcast_to(finput(inputs, 1)?, x.shape())?;
        let mut y = &xhat * &scale;
        if let Some(b) = inputs.get(2).copied().flatten() {
            y += &broadcast_to(b.float()?, x.shape())?;
        }
        Ok(vec![Value::F(y)])
    }
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        // y = scale·x̂ + B: dx̂ = scale·g, then the normalisation adjoint;
        // dscale = Σ g·x̂ and dB = Σ g over the leading (non-normalised) axes.
        let x = finput(ctx.inputs, 0)?;
        let axis = norm_axis(self.axis, x.ndim())?;
        let size: usize = x.shape()[axis..].iter().product();
        let (xhat, _, inv) = normalize(&contiguous(x), size.max(1), self.eps);
        let scale = finput(ctx.inputs, 1)?;
        let mut out = vec![None; ctx.inputs.len()];
        if ctx.wrt[0] {
            let mut dxhat = ctx.dout.as_standard_layout().into_owned();
            Zip::from(&mut dxhat).and(&broadcast_to(scale, x.shape())?).for_each(|d, &s| *d = *d * s);
            let dx = normalize_backward(&xhat, &inv, &contiguous(&dxhat), size.max(1));
            out[0] = Some(ArrayD::from_shape_vec(IxDyn(x.shape()), dx).map_err(|e| super::OpError(e.to_string()))?);
        }
        let xhat = ArrayD::from_shape_vec(IxDyn(x.shape()), xhat).map_err(|e| super::OpError(e.to_string()))?;
        for (slot, with_xhat) in [(1usize, true), (2, false)] {
            if ctx.wrt.get(slot) == Some(&true) {
                let p = finput(ctx.inputs, slot)?;
                let d = if with_xhat { ctx.dout * &xhat } else { ctx.dout.clone() };
                out[slot] = Some(super::value::reduce_to_shape(d, p.shape()));
            }
        }
        Ok(out)
    }
}

pub fn build_layer_norm<T: Elem>(n: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(LayerNorm {
        axis: n.attr_int("axis").unwrap_or(-1),
        eps: n.attr_float("epsilon").map(f64::from).unwrap_or(1e-5),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::Value;
    use super::super::testutil::{check_rule, f, floats, node, uniform};
    use crate::model::graph::Attr;

    #[test]
    fn batch_norm_inference_is_a_per_channel_affine_map() {
        let var = Some(Value::F(uniform(&[3], 5, 0.2, 2.0)));
        let y = check_rule(
            &node("BatchNormalization", &[("epsilon", Attr::Float(1e-3))]),
            15,
            vec![f(&[2, 3, 2, 2], 1), f(&[3], 2), f(&[3], 3), f(&[3], 4), var],
            &[true],
        );
        assert_eq!(y.shape(), &[2, 3, 2, 2]);
        // Hand value: x=1, scale=2, B=0.5, mean=0.5, var=0.99, ε=0.01 → 2·0.5/1 + 0.5 = 1.5.
        let one = |v: f64| floats(&[1], &[v]);
        let y = super::super::testutil::run_forward(
            &node("BatchNormalization", &[("epsilon", Attr::Float(0.01))]),
            15,
            &[floats(&[1, 1, 1], &[1.0]), one(2.0), one(0.5), one(0.5), one(0.99)],
        );
        assert!((y[0].floats()[0] - 1.5).abs() < 1e-6);
    }

    #[test]
    fn instance_norm_gradient_includes_statistics_terms() {
        check_rule(
            &node("InstanceNormalization", &[]),
            13,
            vec![f(&[2, 3, 2, 3], 1), f(&[3], 2), f(&[3], 3)],
            &[true, true, true],
        );
    }

    /// The backward pass with the statistics the forward saved and with
    /// them recomputed: the same arithmetic, so the same bits.
    #[test]
    fn instance_norm_saved_statistics_change_nothing() {
        use super::super::{Backward, BuildCtx};
        let op =
            super::build_instance_norm::<f64>(&node("InstanceNormalization", &[]), &BuildCtx { opset: 13 }).unwrap();
        let (x, s, b) = (f(&[2, 3, 4, 5], 1).unwrap(), f(&[3], 2).unwrap(), f(&[3], 3).unwrap());
        let inputs = [Some(&x), Some(&s), Some(&b)];
        let outs = op.forward(&inputs).unwrap();
        assert_eq!(outs[1].shape(), &[2, 6]);
        let dout = uniform(&[2, 3, 4, 5], 9, -1.0, 1.0);
        let grad = |saved| {
            let ctx = Backward { inputs: &inputs, output: &outs[0], dout: &dout, wrt: &[true, true, true], saved };
            op.backward(&ctx).unwrap()
        };
        assert_eq!(grad(Some(&outs[1])), grad(None));
    }

    #[test]
    fn layer_norm_over_last_and_last_two_axes() {
        check_rule(
            &node("LayerNormalization", &[]),
            17,
            vec![f(&[2, 3, 4], 1), f(&[4], 2), f(&[4], 3)],
            &[true, true, true],
        );
        check_rule(
            &node("LayerNormalization", &[("axis", Attr::Int(-2))]),
            17,
            vec![f(&[2, 3, 4], 4), f(&[3, 4], 5)],
            &[true, true],
        );
    }
}
