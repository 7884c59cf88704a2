//! Elementwise activations (one input, same-shape output) and
//! Softmax/LogSoftmax. Derivatives follow PyTorch's conventions at the
//! kinks (ReLU'(0) = 0, HardSwish'(±3) from the inner branch, ...), so
//! gradients agree with the peers even on exactly-zero pre-activations.

use super::value::{finput, norm_axis};
use super::vmath;
use super::{Backward, BuildCtx, Elem, Op, OpResult, Value, op_bail};
use crate::model::graph::Node;
use ndarray::{ArrayD, Axis, Zip};
use std::borrow::Cow;
use std::marker::PhantomData;

/// y = f(x) elementwise; `d(x, y)` is f'(x), given both x and y so rules
/// like sigmoid can reuse the output.
struct Unary<T, F, D> {
    f: F,
    d: D,
    _t: PhantomData<T>,
}

impl<T, F, D> Op<T> for Unary<T, F, D>
where
    T: Elem,
    F: Fn(T) -> T + Send + Sync,
    D: Fn(T, T) -> T + Send + Sync,
{
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        Ok(vec![Value::F(map(finput(inputs, 0)?, &self.f))])
    }
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        // ∂L/∂x = ∂L/∂y · f'(x)
        let dx = scaled(ctx.dout, finput(ctx.inputs, 0)?, ctx.output.float()?, &self.d);
        let mut out = vec![None; ctx.inputs.len()];
        out[0] = Some(dx);
        Ok(out)
    }
}

/// f(x) elementwise; contiguous inputs (the engine's) in the vectorised slice loop.
fn map<T: Elem>(x: &ArrayD<T>, f: impl Fn(T) -> T) -> ArrayD<T> {
    match x.as_slice().map(|xs| ArrayD::from_shape_vec(x.raw_dim(), vmath::map(xs, &f))) {
        Some(Ok(y)) => y,
        _ => x.mapv(f),
    }
}

/// g · d(x, y) elementwise, in the vectorised slice loop when all three are contiguous.
fn scaled<T: Elem>(g: &ArrayD<T>, x: &ArrayD<T>, y: &ArrayD<T>, d: impl Fn(T, T) -> T) -> ArrayD<T> {
    if let (Some(gs), Some(xs), Some(ys)) = (g.as_slice(), x.as_slice(), y.as_slice())
        && gs.len() == xs.len()
        && gs.len() == ys.len()
        && let Ok(dx) = ArrayD::from_shape_vec(g.raw_dim(), vmath::scaled(gs, xs, ys, &d))
    {
        return dx;
    }
    let mut dx = g.clone();
    Zip::from(&mut dx).and(x).and(y).for_each(|g, &x, &y| *g = *g * d(x, y));
    dx
}

fn unary<T, F, D>(f: F, d: D) -> OpResult<Box<dyn Op<T>>>
where
    T: Elem,
    F: Fn(T) -> T + Send + Sync + 'static,
    D: Fn(T, T) -> T + Send + Sync + 'static,
{
    Ok(Box::new(Unary { f, d, _t: PhantomData }))
}

fn attr<T: Elem>(node: &Node, name: &str, default: f64) -> T {
    T::of(node.attr_float(name).map(f64::from).unwrap_or(default))
}

fn step<T: Elem>(c: bool) -> T {
    if c { T::one() } else { T::zero() }
}

pub fn build_relu<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    unary(relu, |x: T, _| step(x > T::zero()))
}

/// y = max(x, 0); y' = 1 for x > 0, else 0 (0 at x = 0, as PyTorch). A NaN
/// gives 0 (`max` returns the other operand).
pub(super) fn relu<T: Elem>(x: T) -> T {
    x.max(T::zero())
}

/// The output gradient an op's own rule starts from: `ctx.dout`, or with a
/// ReLU absorbed (see [`super::Op::absorb_relu`]) ∂L/∂x of the node's
/// output y = relu(x), from y alone: y > 0 exactly where x > 0 (a NaN x
/// gives y = 0), so this is the Relu op's rule, bit for bit.
pub(super) fn dout_through<'a, T: Elem>(ctx: &Backward<'a, T>, relu: bool) -> OpResult<Cow<'a, ArrayD<T>>> {
    if !relu {
        return Ok(Cow::Borrowed(ctx.dout));
    }
    let y = ctx.output.float()?;
    if y.shape() != ctx.dout.shape() {
        op_bail!("output shape {:?} differs from the output gradient's {:?}", y.shape(), ctx.dout.shape());
    }
    Ok(Cow::Owned(scaled(ctx.dout, y, y, |y: T, _| step(y > T::zero()))))
}

pub fn build_leaky_relu<T: Elem>(n: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // y = x (x ≥ 0), αx (x < 0); y' = 1 for x > 0, else α (PyTorch's choice at 0).
    let a: T = attr(n, "alpha", 0.01);
    unary(move |x: T| if x >= T::zero() { x } else { a * x }, move |x: T, _| if x > T::zero() { T::one() } else { a })
}

pub fn build_sigmoid<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // y = 1/(1+e^−x); y' = y(1−y).
    unary(sigmoid, |_, y: T| y * (T::one() - y))
}

fn sigmoid<T: Elem>(x: T) -> T {
    // Stable on both tails: never evaluates e^{+large}. With e = e^{−|x|},
    // σ(x) = 1/(1 + e) for x ≥ 0 and e/(1 + e) below; both sides are
    // computed and one selected, so the loop has no branch to vectorise.
    let e = (-x.abs()).exp_inline();
    let r = T::one() / (T::one() + e);
    if x >= T::zero() { r } else { e * r }
}

pub fn build_tanh<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // y' = 1 − y².
    unary(|x: T| x.tanh_inline(), |_, y: T| T::one() - y * y)
}

pub fn build_elu<T: Elem>(n: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // y = x (x > 0), α(eˣ−1) (x ≤ 0); y' = 1 (x > 0), αeˣ = y + α (x ≤ 0).
    let a: T = attr(n, "alpha", 1.0);
    unary(
        move |x: T| {
            // Both sides computed, one selected: a loop without a branch
            // vectorises (eˣ of a large x is ∞ there, and not selected).
            let neg = a * (x.exp_inline() - T::one());
            if x > T::zero() { x } else { neg }
        },
        move |x: T, y: T| if x > T::zero() { T::one() } else { y + a },
    )
}

pub fn build_hard_sigmoid<T: Elem>(n: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // y = clamp(αx+β, 0, 1); y' = α strictly inside, 0 outside (PyTorch's hardsigmoid).
    let a: T = attr(n, "alpha", 0.2);
    let b: T = attr(n, "beta", 0.5);
    unary(
        move |x: T| (a * x + b).max(T::zero()).min(T::one()),
        move |x: T, _| {
            let z = a * x + b;
            if z > T::zero() && z < T::one() { a } else { T::zero() }
        },
    )
}

pub fn build_hard_swish<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // y = x·clamp(x/6 + 1/2, 0, 1); y' = 0 (x < −3), x/3 + 1/2 (−3 ≤ x ≤ 3), 1 (x > 3),
    // the branch boundaries as in PyTorch's hardswish_backward.
    let three = T::of(3.0);
    let six = T::of(6.0);
    let half = T::of(0.5);
    unary(
        move |x: T| x * (x / six + half).max(T::zero()).min(T::one()),
        move |x: T, _| {
            if x < -three {
                T::zero()
            } else if x <= three {
                x / three + half
            } else {
                T::one()
            }
        },
    )
}

pub fn build_gelu<T: Elem>(n: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    match n.attr_str("approximate").unwrap_or("none") {
        // y = xΦ(x), Φ(x) = (1 + erf(x/√2))/2; y' = Φ(x) + xφ(x), φ(x) = e^{−x²/2}/√(2π).
        "none" => unary(
            |x: T| T::of(0.5) * x * (T::one() + (x * T::of(std::f64::consts::FRAC_1_SQRT_2)).erf()),
            |x: T, _| {
                let cdf = T::of(0.5) * (T::one() + (x * T::of(std::f64::consts::FRAC_1_SQRT_2)).erf());
                let pdf = (-(x * x) * T::of(0.5)).exp_inline() * T::of(1.0 / (2.0 * std::f64::consts::PI).sqrt());
                cdf + x * pdf
            },
        ),
        // y = x(1 + tanh(u))/2, u = √(2/π)(x + 0.044715x³);
        // y' = (1 + t)/2 + x(1 − t²)u'/2, u' = √(2/π)(1 + 3·0.044715x²).
        "tanh" => {
            let k = T::of((2.0 / std::f64::consts::PI).sqrt());
            let c = T::of(0.044715);
            unary(
                move |x: T| T::of(0.5) * x * (T::one() + (k * (x + c * x * x * x)).tanh_inline()),
                move |x: T, _| {
                    let t = (k * (x + c * x * x * x)).tanh_inline();
                    let du = k * (T::one() + T::of(3.0) * c * x * x);
                    T::of(0.5) * (T::one() + t) + T::of(0.5) * x * (T::one() - t * t) * du
                },
            )
        }
        other => op_bail!("unknown approximate mode '{other}'"),
    }
}

pub fn build_erf<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // erf'(x) = 2/√π · e^{−x²}.
    unary(|x: T| x.erf(), |x: T, _| T::of(std::f64::consts::FRAC_2_SQRT_PI) * (-(x * x)).exp_inline())
}

pub fn build_exp<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // (eˣ)' = eˣ = y.
    unary(|x: T| x.exp_inline(), |_, y: T| y)
}

pub fn build_log<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // (ln x)' = 1/x.
    unary(|x: T| x.ln(), |x: T, _| x.recip())
}

pub fn build_sqrt<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // (√x)' = 1/(2√x) = 1/(2y).
    unary(|x: T| x.sqrt(), |_, y: T| T::of(0.5) / y)
}

pub fn build_neg<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    unary(|x: T| -x, |_, _| -T::one())
}

pub fn build_abs<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // |x|' = sign(x), 0 at 0.
    unary(
        |x: T| x.abs(),
        |x: T, _| {
            if x > T::zero() {
                T::one()
            } else if x < T::zero() {
                -T::one()
            } else {
                T::zero()
            }
        },
    )
}

pub fn build_softplus<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // y = ln(1 + eˣ) = max(x,0) + ln(1 + e^{−|x|}); y' = sigmoid(x).
    unary(|x: T| x.max(T::zero()) + (-x.abs()).exp().ln_1p(), |x: T, _| sigmoid(x))
}

/// Piecewise-constant ops: the derivative is 0 wherever it exists, which is
/// what PyTorch autograd returns too. They are how gradient masking looks in
/// a model, and the trust checks are there to notice.
pub fn build_round<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // ONNX Round: halves to even.
    unary(
        |x: T| {
            let r = x.round();
            if (x - x.trunc()).abs() == T::of(0.5) { T::of(2.0) * (x / T::of(2.0)).round() } else { r }
        },
        |_, _| T::zero(),
    )
}

pub fn build_floor<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    unary(|x: T| x.floor(), |_, _| T::zero())
}

pub fn build_ceil<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    unary(|x: T| x.ceil(), |_, _| T::zero())
}

/// Identity and inference-mode Dropout: y = x, so ∂L/∂x = ∂L/∂y.
struct PassThrough;

impl<T: Elem> Op<T> for PassThrough {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        match inputs.first().copied().flatten() {
            Some(v) => Ok(vec![v.clone()]),
            None => op_bail!("missing input 0"),
        }
    }
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        let mut out = vec![None; ctx.inputs.len()];
        out[0] = Some(ctx.dout.clone());
        Ok(out)
    }
}

pub fn build_identity<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(PassThrough))
}

pub fn build_clip<T: Elem>(n: &Node, ctx: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    // Before opset 11 the bounds are attributes, from 11 optional inputs.
    let attrs = (ctx.opset < 11).then(|| {
        (
            n.attr_float("min").map(f64::from).unwrap_or(f64::NEG_INFINITY),
            n.attr_float("max").map(f64::from).unwrap_or(f64::INFINITY),
        )
    });
    Ok(Box::new(Clip { attrs }))
}

struct Clip {
    attrs: Option<(f64, f64)>,
}

impl Clip {
    fn bounds<T: Elem>(&self, inputs: &[Option<&Value<T>>]) -> OpResult<(T, T)> {
        if let Some((lo, hi)) = self.attrs {
            return Ok((T::of(lo), T::of(hi)));
        }
        let scalar = |i: usize, default: f64| -> OpResult<T> {
            match inputs.get(i).copied().flatten() {
                None => Ok(T::of(default)),
                Some(v) => match v.floats().as_slice() {
                    [] => Ok(T::of(default)),
                    [x] => Ok(T::of(*x)),
                    _ => op_bail!("Clip bound {i} must be a scalar"),
                },
            }
        };
        Ok((scalar(1, f64::NEG_INFINITY)?, scalar(2, f64::INFINITY)?))
    }
}

impl<T: Elem> Op<T> for Clip {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let (lo, hi) = self.bounds(inputs)?;
        // ONNX: min(max(x, lo), hi), so hi wins when lo > hi.
        Ok(vec![Value::F(map(finput(inputs, 0)?, |x| x.max(lo).min(hi)))])
    }
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        // y = min(max(x, lo), hi): ∂y/∂x = 1 for lo ≤ x ≤ hi (inclusive, as torch.clamp),
        // ∂y/∂lo = 1 where x < lo (and lo ≤ hi), ∂y/∂hi = 1 where x > hi.
        let (lo, hi) = self.bounds(ctx.inputs)?;
        let x = finput(ctx.inputs, 0)?;
        let mut out = vec![None; ctx.inputs.len()];
        if ctx.wrt[0] {
            // `&`, not `&&`: no branch, so the loop vectorises.
            out[0] = Some(scaled(ctx.dout, x, x, |x, _| step((x >= lo) & (x <= hi))));
        }
        for (i, pick) in [(1usize, true), (2, false)] {
            if ctx.wrt.get(i) == Some(&true) {
                let mut s = T::zero();
                Zip::from(ctx.dout).and(x).for_each(|&g, &x| {
                    if (pick && x < lo && lo <= hi) || (!pick && x > hi) {
                        s += g;
                    }
                });
                let shape = ctx.inputs[i].map(|v| v.shape().to_vec()).unwrap_or_default();
                out[i] = Some(ArrayD::from_elem(shape, s));
            }
        }
        Ok(out)
    }
}

/// Softmax and LogSoftmax over a view of the input as (outer, n, inner):
/// opset < 13 coerces to 2-D at `axis` (default 1), so n is the product of
/// all dims from `axis` on; opset ≥ 13 normalises along `axis` alone (default −1).
struct Softmax {
    axis: i64,
    coerce_2d: bool,
    log: bool,
}

impl Softmax {
    fn dims(&self, shape: &[usize]) -> OpResult<(usize, usize, usize)> {
        let rank = shape.len();
        if rank == 0 {
            op_bail!("Softmax of a scalar");
        }
        let axis = if self.coerce_2d && self.axis == rank as i64 { rank } else { norm_axis(self.axis, rank)? };
        let outer: usize = shape[..axis].iter().product();
        if self.coerce_2d {
            Ok((outer, shape[axis..].iter().product(), 1))
        } else {
            Ok((outer, shape[axis], shape[axis + 1..].iter().product()))
        }
    }
}

impl<T: Elem> Op<T> for Softmax {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = finput(inputs, 0)?;
        let (outer, n, inner) = self.dims(x.shape())?;
        let mut y = x.as_standard_layout().into_owned();
        let shape = y.shape().to_vec();
        let mut v = y.view_mut().into_shape_with_order((outer, n, inner)).map_err(|e| super::OpError(e.to_string()))?;
        for mut lane in v.lanes_mut(Axis(1)) {
            let m = lane.fold(T::neg_infinity(), |a, &b| a.max(b));
            let sum: T = lane.iter().map(|&z| (z - m).exp()).sum();
            let lse = m + sum.ln();
            lane.mapv_inplace(|z| if self.log { z - lse } else { (z - lse).exp() });
        }
        debug_assert_eq!(y.shape(), shape.as_slice());
        Ok(vec![Value::F(y)])
    }
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        // Softmax: y = softmax(x); ∂L/∂x = y ⊙ (g − Σ g⊙y).
        // LogSoftmax: y = x − lse(x); ∂L/∂x = g − softmax(x)·Σ g = g − e^y·Σ g.
        let y = ctx.output.float()?.as_standard_layout().into_owned();
        let (outer, n, inner) = self.dims(y.shape())?;
        let mut dx = ctx.dout.as_standard_layout().into_owned();
        let err = |e: ndarray::ShapeError| super::OpError(e.to_string());
        let yv = y.view().into_shape_with_order((outer, n, inner)).map_err(err)?;
        let mut dv = dx.view_mut().into_shape_with_order((outer, n, inner)).map_err(err)?;
        for (mut g, y) in dv.lanes_mut(Axis(1)).into_iter().zip(yv.lanes(Axis(1))) {
            if self.log {
                let s: T = g.iter().copied().sum();
                Zip::from(&mut g).and(&y).for_each(|g, &y| *g -= y.exp() * s);
            } else {
                let s: T = g.iter().zip(y.iter()).map(|(&g, &y)| g * y).sum();
                Zip::from(&mut g).and(&y).for_each(|g, &y| *g = y * (*g - s));
            }
        }
        let mut out = vec![None; ctx.inputs.len()];
        out[0] = Some(dx);
        Ok(out)
    }
}

fn softmax<T: Elem>(n: &Node, ctx: &BuildCtx, log: bool) -> OpResult<Box<dyn Op<T>>> {
    let coerce_2d = ctx.opset < 13;
    let axis = n.attr_int("axis").unwrap_or(if coerce_2d { 1 } else { -1 });
    Ok(Box::new(Softmax { axis, coerce_2d, log }))
}

pub fn build_softmax<T: Elem>(n: &Node, ctx: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    softmax(n, ctx, false)
}

pub fn build_log_softmax<T: Elem>(n: &Node, ctx: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    softmax(n, ctx, true)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{check_rule, f, floats, node, run_forward};
    use crate::model::graph::Attr;

    #[test]
    fn unary_rules_match_finite_differences() {
        for (op, attrs) in [
            ("Relu", vec![]),
            ("LeakyRelu", vec![("alpha", Attr::Float(0.1))]),
            ("Sigmoid", vec![]),
            ("Tanh", vec![]),
            ("Elu", vec![("alpha", Attr::Float(0.7))]),
            ("HardSigmoid", vec![]),
            ("HardSigmoid", vec![("alpha", Attr::Float(0.5)), ("beta", Attr::Float(0.3))]),
            ("HardSwish", vec![]),
            ("Gelu", vec![]),
            ("Gelu", vec![("approximate", Attr::Str("tanh".into()))]),
            ("Erf", vec![]),
            ("Exp", vec![]),
            ("Neg", vec![]),
            ("Abs", vec![]),
            ("Softplus", vec![]),
            ("Identity", vec![]),
            ("Dropout", vec![]),
            ("Round", vec![]),
            ("Floor", vec![]),
        ] {
            // Range ±4 covers both saturated tails of HardSigmoid/HardSwish (kinks at ±2.5, ±3).
            let x = Some(super::Value::F(super::super::testutil::uniform(&[2, 3, 4], 7, -4.0, 4.0)));
            check_rule(&node(op, &attrs), 17, vec![x], &[true]);
        }
        for op in ["Log", "Sqrt"] {
            let x = Some(super::Value::F(super::super::testutil::uniform(&[2, 5], 3, 0.1, 3.0)));
            check_rule(&node(op, &[]), 17, vec![x], &[true]);
        }
    }

    #[test]
    fn clip_with_attributes_and_inputs() {
        check_rule(
            &node("Clip", &[("min", Attr::Float(-0.5)), ("max", Attr::Float(0.8))]),
            6,
            vec![f(&[3, 4], 1)],
            &[true],
        );
        let y = check_rule(
            &node("Clip", &[]),
            13,
            vec![f(&[3, 4], 2), floats(&[], &[-0.5]), floats(&[], &[0.8])],
            &[true, true, true],
        );
        assert!(y.iter().all(|&v| (-0.5..=0.8).contains(&v)));
        // Only a max given: min input absent.
        check_rule(&node("Clip", &[]), 13, vec![f(&[5], 3), None, floats(&[], &[0.1])], &[true]);
    }

    #[test]
    fn softmax_both_axis_conventions() {
        for log in ["Softmax", "LogSoftmax"] {
            // opset 13: along one axis (here the middle one).
            check_rule(&node(log, &[("axis", Attr::Int(1))]), 13, vec![f(&[2, 3, 4], 5)], &[true]);
            check_rule(&node(log, &[]), 13, vec![f(&[2, 5], 6)], &[true]);
            // opset 11: coerced to 2-D at axis 1, normalising over 3×4 = 12 values.
            let y = check_rule(&node(log, &[]), 11, vec![f(&[2, 3, 4], 8)], &[true]);
            if log == "Softmax" {
                for b in 0..2 {
                    let s: f64 = y.index_axis(ndarray::Axis(0), b).sum();
                    assert!((s - 1.0).abs() < 1e-12, "opset-11 softmax sums to 1 over the coerced row");
                }
            }
        }
    }

    #[test]
    fn round_is_half_to_even() {
        let y = run_forward(&node("Round", &[]), 13, &[floats(&[4], &[0.5, 1.5, 2.5, -0.5])]);
        assert_eq!(y[0].floats(), vec![0.0, 2.0, 2.0, 0.0]);
    }
}
