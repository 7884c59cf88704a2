//! Broadcasting binary arithmetic (Add, Sub, Mul, Div) and PRelu. The
//! backward rules reduce each gradient back to its operand's shape (the
//! adjoint of broadcasting is a sum over the broadcast axes). Add/Sub/Mul/Div
//! also run on integer tensors, because PyTorch's shape subgraphs do
//! arithmetic on sizes.

use super::activation::{dout_through, relu};
use super::value::{broadcast_shape, broadcast_to, finput, input, reduce_to_shape};
use super::vmath;
use super::{Backward, BuildCtx, Elem, Op, OpResult, Value, op_bail};
use crate::model::graph::Node;
use ndarray::{ArrayD, IxDyn, Zip};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

struct Binary {
    arith: Arith,
    /// The output is relu(a ∘ b), a Relu absorbed (see [`Op::absorb_relu`]):
    /// a residual block's Add and the Relu after it.
    relu: bool,
}

fn int_op(op: Arith, a: i64, b: i64) -> OpResult<i64> {
    Ok(match op {
        Arith::Add => a.wrapping_add(b),
        Arith::Sub => a.wrapping_sub(b),
        Arith::Mul => a.wrapping_mul(b),
        // Integer division truncates toward zero (C semantics, as onnxruntime).
        Arith::Div if b == 0 => op_bail!("integer division by zero"),
        Arith::Div => a.wrapping_div(b),
    })
}

/// f(a, b) broadcast to `shape`, as slice loops, when both operands are
/// contiguous and each is either the whole `shape` or repeats with its own
/// length along it — a scalar, or a bias over the trailing axes (its dims
/// after any leading 1s are the output's last dims): the normalisation
/// constants, GELU's ½ and 1/√2, a Linear's bias. `None` for other
/// broadcasts, which take ndarray's Zip.
fn zip_slices<T: Elem>(shape: &[usize], a: &ArrayD<T>, b: &ArrayD<T>, f: impl Fn(T, T) -> T) -> Option<ArrayD<T>> {
    let (xs, ys) = (a.as_slice()?, b.as_slice()?);
    if a.shape() == shape && b.shape() == shape {
        return ArrayD::from_shape_vec(IxDyn(shape), vmath::zip(xs, ys, f)).ok();
    }
    let mut out = vec![T::zero(); shape.iter().product()];
    if a.shape() == shape && repeats_along(b.shape(), shape) {
        match ys {
            [y] => vmath::map_into(&mut out, xs, |x| f(x, *y)),
            _ => out
                .chunks_exact_mut(ys.len())
                .zip(xs.chunks_exact(ys.len()))
                .for_each(|(o, xs)| vmath::zip_into(o, xs, ys, &f)),
        }
    } else if b.shape() == shape && repeats_along(a.shape(), shape) {
        match xs {
            [x] => vmath::map_into(&mut out, ys, |y| f(*x, y)),
            _ => out
                .chunks_exact_mut(xs.len())
                .zip(ys.chunks_exact(xs.len()))
                .for_each(|(o, ys)| vmath::zip_into(o, xs, ys, &f)),
        }
    } else {
        return None;
    }
    ArrayD::from_shape_vec(IxDyn(shape), out).ok()
}

/// Whether an operand of shape `small` broadcast to `shape` is its own
/// elements repeated end to end: after its leading 1s, its dims are the
/// last dims of `shape`, and it has at least one element.
fn repeats_along(small: &[usize], shape: &[usize]) -> bool {
    let lead = small.iter().take_while(|&&d| d == 1).count();
    let tail = &small[lead..];
    tail.len() <= shape.len() && tail == &shape[shape.len() - tail.len()..] && !tail.contains(&0)
}

/// f(a, b) broadcast to `shape`: [`zip_slices`] where it applies, else
/// ndarray's Zip. Generic over `f`, so each op gets its own loop: through
/// one `fn` pointer shared by the four ops, every element was an indirect
/// call (a residual Add cost ten times a ReLU of the same size).
fn float_op<T: Elem>(shape: &[usize], a: &ArrayD<T>, b: &ArrayD<T>, f: impl Fn(T, T) -> T) -> OpResult<ArrayD<T>> {
    if let Some(out) = zip_slices(shape, a, b, &f) {
        return Ok(out);
    }
    let mut out = ArrayD::zeros(IxDyn(shape));
    Zip::from(&mut out).and(&broadcast_to(a, shape)?).and(&broadcast_to(b, shape)?).for_each(|o, &x, &y| *o = f(x, y));
    Ok(out)
}

impl<T: Elem> Op<T> for Binary {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let shape = broadcast_shape(a.shape(), b.shape())?;
        let mut y = match (a, b) {
            (Value::F(a), Value::F(b)) => Value::F(match self.arith {
                Arith::Add => float_op(&shape, a, b, |x, y| x + y)?,
                Arith::Sub => float_op(&shape, a, b, |x, y| x - y)?,
                Arith::Mul => float_op(&shape, a, b, |x, y| x * y)?,
                Arith::Div => float_op(&shape, a, b, |x, y| x / y)?,
            }),
            (Value::I(a), Value::I(b)) => {
                let (a, b) = (broadcast_to(a, &shape)?, broadcast_to(b, &shape)?);
                let v: OpResult<Vec<i64>> = a.iter().zip(b.iter()).map(|(&x, &y)| int_op(self.arith, x, y)).collect();
                Value::I(ArrayD::from_shape_vec(IxDyn(&shape), v?).map_err(|e| super::OpError(e.to_string()))?)
            }
            _ => op_bail!("{:?} of a float and an integer tensor", self.arith),
        };
        if self.relu {
            let Value::F(y) = &mut y else { op_bail!("Relu of an integer tensor") };
            match y.as_slice_mut() {
                Some(ys) => vmath::map_in_place(ys, relu),
                None => y.mapv_inplace(relu),
            }
        }
        Ok(vec![y])
    }

    fn absorb_relu(&mut self) -> bool {
        self.relu = true;
        true
    }

    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        // Add: ∂/∂a = g, ∂/∂b = g.          Sub: ∂/∂a = g, ∂/∂b = −g.
        // Mul: ∂/∂a = g·b, ∂/∂b = g·a.      Div: ∂/∂a = g/b, ∂/∂b = −g·a/b².
        // Each then summed over the axes its operand was broadcast along.
        let a = finput(ctx.inputs, 0)?;
        let b = finput(ctx.inputs, 1)?;
        let g = &*dout_through(ctx, self.relu)?;
        let shape = g.shape().to_vec();
        let (ab, bb) = (broadcast_to(a, &shape)?, broadcast_to(b, &shape)?);
        let mut out = vec![None; ctx.inputs.len()];
        if ctx.wrt[0] {
            let da = match self.arith {
                Arith::Add | Arith::Sub => g.clone(),
                Arith::Mul => zip_slices(&shape, g, b, |g, y| g * y).unwrap_or_else(|| g * &bb),
                Arith::Div => zip_slices(&shape, g, b, |g, y| g / y).unwrap_or_else(|| g / &bb),
            };
            out[0] = Some(reduce_to_shape(da, a.shape()));
        }
        if ctx.wrt[1] {
            let db = match self.arith {
                Arith::Add => g.clone(),
                Arith::Sub => g.mapv(|v| -v),
                Arith::Mul => zip_slices(&shape, g, a, |g, x| g * x).unwrap_or_else(|| g * &ab),
                Arith::Div => {
                    let mut d = g.clone();
                    Zip::from(&mut d).and(&ab).and(&bb).for_each(|d, &x, &y| *d = -*d * x / (y * y));
                    d
                }
            };
            out[1] = Some(reduce_to_shape(db, b.shape()));
        }
        Ok(out)
    }
}

pub fn build_add<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(Binary { arith: Arith::Add, relu: false }))
}
pub fn build_sub<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(Binary { arith: Arith::Sub, relu: false }))
}
pub fn build_mul<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(Binary { arith: Arith::Mul, relu: false }))
}
pub fn build_div<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(Binary { arith: Arith::Div, relu: false }))
}

/// PRelu: y = x (x > 0), slope·x otherwise; slope broadcasts to x.
struct PRelu;

impl<T: Elem> Op<T> for PRelu {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = finput(inputs, 0)?;
        let slope = finput(inputs, 1)?;
        let mut y = x.clone();
        Zip::from(&mut y).and(&broadcast_to(slope, x.shape())?).for_each(|y, &s| {
            if *y <= T::zero() {
                *y = *y * s
            }
        });
        Ok(vec![Value::F(y)])
    }
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        // ∂y/∂x = 1 (x > 0), slope (x ≤ 0); ∂y/∂slope = 0 (x > 0), x (x ≤ 0),
        // summed over the axes slope was broadcast along.
        let x = finput(ctx.inputs, 0)?;
        let slope = finput(ctx.inputs, 1)?;
        let sb = broadcast_to(slope, x.shape())?;
        let mut out = vec![None; ctx.inputs.len()];
        if ctx.wrt[0] {
            let mut dx = ctx.dout.clone();
            Zip::from(&mut dx).and(x).and(&sb).for_each(|g, &x, &s| {
                if x <= T::zero() {
                    *g = *g * s
                }
            });
            out[0] = Some(dx);
        }
        if ctx.wrt[1] {
            let mut ds = ctx.dout.clone();
            Zip::from(&mut ds).and(x).for_each(|g, &x| *g = if x > T::zero() { T::zero() } else { *g * x });
            out[1] = Some(reduce_to_shape(ds, slope.shape()));
        }
        Ok(out)
    }
}

pub fn build_prelu<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(PRelu))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{check_rule, f, ints, node, run_forward};

    #[test]
    fn broadcasting_arithmetic_reduces_gradients_to_operand_shapes() {
        for op in ["Add", "Sub", "Mul", "Div"] {
            // Same shape, trailing broadcast, leading broadcast, both operands stretched.
            for (sa, sb) in [
                (vec![2, 3], vec![2, 3]),
                (vec![2, 3, 4], vec![4]),
                (vec![1, 3, 1], vec![2, 1, 4]),
                (vec![2, 3], vec![]),
            ] {
                check_rule(&node(op, &[]), 14, vec![f(&sa, 1), f(&sb, 2)], &[true, true]);
            }
        }
    }

    #[test]
    fn slice_loops_agree_with_general_broadcasting() {
        // Operand pairs the slice loops take (same shape; a scalar or a
        // trailing-axes operand on either side, with and without leading 1s)
        // and ones they must leave to Zip (middle axes, both stretched).
        use super::super::value::{broadcast_shape, broadcast_to};
        use super::{Value, zip_slices};
        let pairs: [(&[usize], &[usize], bool); 8] = [
            (&[2, 3, 4], &[2, 3, 4], true),
            (&[2, 3, 4], &[], true),
            (&[1], &[2, 3, 4], true),
            (&[2, 3, 4], &[4], true),
            (&[1, 3, 4], &[2, 3, 4], true),
            (&[2, 3, 4], &[1, 1, 4], true),
            (&[2, 3, 4], &[3, 1], false),
            (&[1, 3, 1], &[2, 1, 4], false),
        ];
        for (sa, sb, sliced) in pairs {
            let (Some(Value::F(a)), Some(Value::F(b))) = (f(sa, 5), f(sb, 6)) else { unreachable!() };
            let shape = broadcast_shape(sa, sb).unwrap();
            let got = zip_slices(&shape, &a, &b, |x, y| x - 2.0 * y);
            assert_eq!(got.is_some(), sliced, "{sa:?} with {sb:?}");
            if let Some(got) = got {
                let (ab, bb) = (broadcast_to(&a, &shape).unwrap(), broadcast_to(&b, &shape).unwrap());
                let want = &ab - &(&bb * 2.0);
                assert_eq!(got, want, "{sa:?} with {sb:?}");
            }
            let n = node("Sub", &[]);
            let y = run_forward(&n, 14, &[f(sa, 5), f(sb, 6)]);
            let (ab, bb) = (broadcast_to(&a, &shape).unwrap(), broadcast_to(&b, &shape).unwrap());
            assert_eq!(y[0], Value::F(&ab - &bb), "Sub of {sa:?} and {sb:?}");
        }
    }

    #[test]
    fn prelu_with_per_channel_slope() {
        check_rule(&node("PRelu", &[]), 9, vec![f(&[2, 3, 2, 2], 1), f(&[3, 1, 1], 9)], &[true, true]);
        check_rule(&node("PRelu", &[]), 9, vec![f(&[2, 5], 3), f(&[1], 4)], &[true, true]);
    }

    #[test]
    fn integer_shape_arithmetic() {
        let y = run_forward(&node("Div", &[]), 13, &[ints(&[7, -7, 12]), ints(&[2])]);
        assert_eq!(y[0].ints().unwrap(), vec![3, -3, 6]);
        let y = run_forward(&node("Mul", &[]), 13, &[ints(&[3, 4]), ints(&[5, 6])]);
        assert_eq!(y[0].ints().unwrap(), vec![15, 24]);
    }
}
