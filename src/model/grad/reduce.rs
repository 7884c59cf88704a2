//! ReduceMean and ReduceSum. Axes come as an attribute in older opsets and
//! as an optional input in newer ones (ReduceSum from 13, ReduceMean from
//! 18); PyTorch's `x.mean(dim=…)` exported at opset 18 uses the input form.

use super::value::{broadcast_owned, finput, norm_axis, reshape};
use super::{Backward, BuildCtx, Elem, Op, OpResult, Value};
use crate::model::graph::Node;
use ndarray::{ArrayD, Axis};

struct Reduce {
    mean: bool,
    /// Axes from the attribute form; `None` when they come as input 1.
    attr_axes: Option<Vec<i64>>,
    keepdims: bool,
    noop_with_empty_axes: bool,
}

impl Reduce {
    /// The sorted, normalised axes to reduce; an empty list means "all"
    /// unless `noop_with_empty_axes`, then it means "none".
    fn axes<T: Elem>(&self, inputs: &[Option<&Value<T>>], rank: usize) -> OpResult<Vec<usize>> {
        let raw = match &self.attr_axes {
            Some(a) => a.clone(),
            None => match inputs.get(1).copied().flatten() {
                Some(v) => v.ints()?,
                None => vec![],
            },
        };
        let mut axes: Vec<usize> = raw.iter().map(|&a| norm_axis(a, rank)).collect::<OpResult<_>>()?;
        if axes.is_empty() && !self.noop_with_empty_axes {
            axes = (0..rank).collect();
        }
        axes.sort_unstable();
        axes.dedup();
        Ok(axes)
    }
}

impl<T: Elem> Op<T> for Reduce {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = finput(inputs, 0)?;
        let axes = self.axes(inputs, x.ndim())?;
        let mut y = x.clone();
        for &a in axes.iter().rev() {
            y = y.sum_axis(Axis(a));
        }
        if self.mean {
            let n: usize = axes.iter().map(|&a| x.shape()[a]).product();
            y.mapv_inplace(|v| v / T::of(n as f64));
        }
        if self.keepdims {
            let shape: Vec<usize> = (0..x.ndim()).map(|i| if axes.contains(&i) { 1 } else { x.shape()[i] }).collect();
            y = reshape(y, &shape)?;
        }
        Ok(vec![Value::F(y)])
    }
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        // Sum: ∂y/∂x_i = 1 for every x_i in y's group → dx = g broadcast back.
        // Mean: the same divided by the group size.
        let x = finput(ctx.inputs, 0)?;
        let axes = self.axes(ctx.inputs, x.ndim())?;
        let kept: Vec<usize> = (0..x.ndim()).map(|i| if axes.contains(&i) { 1 } else { x.shape()[i] }).collect();
        let g = reshape(ctx.dout.clone(), &kept)?;
        let scale = if self.mean {
            T::of(axes.iter().map(|&a| x.shape()[a]).product::<usize>() as f64).recip()
        } else {
            T::one()
        };
        let mut dx = broadcast_owned(&g, x.shape())?;
        if scale != T::one() {
            dx.mapv_inplace(|v| v * scale);
        }
        let mut out = vec![None; ctx.inputs.len()];
        out[0] = Some(dx);
        Ok(out)
    }
}

fn build<T: Elem>(n: &Node, ctx: &BuildCtx, mean: bool) -> OpResult<Box<dyn Op<T>>> {
    let axes_as_input_from = if mean { 18 } else { 13 };
    let attr_axes =
        (ctx.opset < axes_as_input_from).then(|| n.attr_ints("axes").map(<[i64]>::to_vec).unwrap_or_default());
    Ok(Box::new(Reduce {
        mean,
        attr_axes,
        keepdims: n.attr_int("keepdims").unwrap_or(1) != 0,
        noop_with_empty_axes: n.attr_int("noop_with_empty_axes").unwrap_or(0) != 0,
    }))
}

pub fn build_reduce_mean<T: Elem>(n: &Node, ctx: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    build(n, ctx, true)
}

pub fn build_reduce_sum<T: Elem>(n: &Node, ctx: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    build(n, ctx, false)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{check_rule, f, ints, node};
    use crate::model::graph::Attr;

    #[test]
    fn axes_as_attribute_and_as_input_with_keepdims() {
        for op in ["ReduceMean", "ReduceSum"] {
            for keep in [0, 1] {
                let attrs = [("axes", Attr::Ints(vec![2, -1])), ("keepdims", Attr::Int(keep))];
                let y = check_rule(&node(op, &attrs), 11, vec![f(&[2, 3, 4, 5], 1)], &[true]);
                assert_eq!(y.shape(), if keep == 1 { &[2, 3, 1, 1][..] } else { &[2, 3][..] });
                let y = check_rule(
                    &node(op, &[("keepdims", Attr::Int(keep))]),
                    18,
                    vec![f(&[2, 3, 4, 5], 2), ints(&[2, 3])],
                    &[true],
                );
                assert_eq!(y.shape(), if keep == 1 { &[2, 3, 1, 1][..] } else { &[2, 3][..] });
            }
            // No axes: reduce everything.
            let y = check_rule(&node(op, &[("keepdims", Attr::Int(0))]), 18, vec![f(&[2, 3], 3)], &[true]);
            assert_eq!(y.ndim(), 0);
        }
    }
}
