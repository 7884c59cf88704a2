//! Tensor values flowing through the engine, and the small tensor helpers
//! every rule family shares (broadcasting, reducing a gradient back to an
//! operand's shape, axis normalisation).

use super::{OpResult, op_bail};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};
use std::fmt::Debug;

/// The floating-point type the engine computes in: `f32` in production,
/// `f64` for the rule tests' reference.
pub trait Elem:
    num_traits::Float
    + num_traits::FromPrimitive
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::ops::DivAssign
    + std::iter::Sum
    + Default
    + Debug
    + Send
    + Sync
    + 'static
{
    fn of(v: f64) -> Self;
    fn f64(self) -> f64;
    fn erf(self) -> Self;
    /// eˣ as an inlinable, vectorisable function (f32: [`super::vmath::exp`],
    /// within 2 ulp; f64: `exp`).
    fn exp_inline(self) -> Self;
    /// tanh likewise (f32: [`super::vmath::tanh`], within 3 ulp).
    fn tanh_inline(self) -> Self;
}

impl Elem for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
    fn erf(self) -> Self {
        libm::erff(self)
    }
    #[inline(always)]
    fn exp_inline(self) -> Self {
        super::vmath::exp(self)
    }
    #[inline(always)]
    fn tanh_inline(self) -> Self {
        super::vmath::tanh(self)
    }
}

impl Elem for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn f64(self) -> f64 {
        self
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn exp_inline(self) -> Self {
        self.exp()
    }
    fn tanh_inline(self) -> Self {
        self.tanh()
    }
}

/// A tensor: floating point (anything on the gradient path, weights) or
/// integer (shapes, indices, axes computed by shape subgraphs).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<T> {
    F(ArrayD<T>),
    I(ArrayD<i64>),
}

impl<T: Elem> Value<T> {
    pub fn shape(&self) -> &[usize] {
        match self {
            Value::F(a) => a.shape(),
            Value::I(a) => a.shape(),
        }
    }

    pub fn float(&self) -> OpResult<&ArrayD<T>> {
        match self {
            Value::F(a) => Ok(a),
            Value::I(_) => op_bail!("expected a floating-point tensor, got an integer one"),
        }
    }

    /// The values as integers: integer tensors as they are, float tensors
    /// only when every value is integral (old exporters store shapes as floats).
    pub fn ints(&self) -> OpResult<Vec<i64>> {
        match self {
            Value::I(a) => Ok(a.iter().copied().collect()),
            Value::F(a) => a
                .iter()
                .map(|v| {
                    let v = v.f64();
                    if v.fract() == 0.0 && v.is_finite() {
                        Ok(v as i64)
                    } else {
                        op_bail!("expected integer values, got {v}")
                    }
                })
                .collect(),
        }
    }

    /// The values as floats (integer tensors converted).
    pub fn floats(&self) -> Vec<f64> {
        match self {
            Value::I(a) => a.iter().map(|&v| v as f64).collect(),
            Value::F(a) => a.iter().map(|v| v.f64()).collect(),
        }
    }
}

/// Unwraps a required input.
pub fn input<'a, T>(inputs: &[Option<&'a Value<T>>], i: usize) -> OpResult<&'a Value<T>> {
    match inputs.get(i).copied().flatten() {
        Some(v) => Ok(v),
        None => op_bail!("missing required input {i}"),
    }
}

/// Unwraps a required floating-point input.
pub fn finput<'a, T: Elem>(inputs: &[Option<&'a Value<T>>], i: usize) -> OpResult<&'a ArrayD<T>> {
    input(inputs, i)?.float()
}

/// Maps an ONNX axis (negative counts from the end) into `0..rank`.
pub fn norm_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        op_bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(a as usize)
}

/// Numpy-style broadcast shape of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> OpResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => op_bail!("shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    Ok(out)
}

/// Broadcasts a view to `shape`, with a clear error instead of a panic.
pub fn broadcast_to<'a, E>(a: &'a ArrayD<E>, shape: &[usize]) -> OpResult<ArrayViewD<'a, E>> {
    match a.broadcast(IxDyn(shape)) {
        Some(v) => Ok(v),
        None => op_bail!("shape {:?} does not broadcast to {:?}", a.shape(), shape),
    }
}

/// The elements of `v` in standard (row-major) order. A dynamic-rank view
/// steps a dynamic index per element (~2.5 ns each: a ReduceMean's backward
/// cost more than its forward), so the copy runs on the view converted to
/// its fixed rank, whose iteration walks the innermost axis in a loop.
pub fn standard_vec<E: Clone>(v: ArrayViewD<'_, E>) -> Vec<E> {
    fn fixed<E: Clone, D: ndarray::Dimension>(v: &ArrayViewD<'_, E>, out: &mut Vec<E>) -> bool {
        match v.view().into_dimensionality::<D>() {
            Ok(f) => f.iter().for_each(|x| out.push(x.clone())),
            Err(_) => return false,
        }
        true
    }
    if let Some(s) = v.as_slice() {
        return s.to_vec();
    }
    let mut out = Vec::with_capacity(v.len());
    let done = match v.ndim() {
        1 => fixed::<E, ndarray::Ix1>(&v, &mut out),
        2 => fixed::<E, ndarray::Ix2>(&v, &mut out),
        3 => fixed::<E, ndarray::Ix3>(&v, &mut out),
        4 => fixed::<E, ndarray::Ix4>(&v, &mut out),
        5 => fixed::<E, ndarray::Ix5>(&v, &mut out),
        6 => fixed::<E, ndarray::Ix6>(&v, &mut out),
        _ => false,
    };
    if !done {
        v.iter().for_each(|x| out.push(x.clone()));
    }
    out
}

/// `v` as an owned array in standard layout (copied by [`standard_vec`]).
pub fn to_standard<E: Clone>(v: ArrayViewD<'_, E>) -> ArrayD<E> {
    let shape = v.raw_dim();
    // The element count always matches the view's own shape, so the
    // fallback (ndarray's per-element copy) is never taken.
    match ArrayD::from_shape_vec(shape, standard_vec(v.view())) {
        Ok(a) => a,
        Err(_) => v.as_standard_layout().into_owned(),
    }
}

/// `a` broadcast to `shape`, materialised in standard layout.
pub fn broadcast_owned<E: Clone>(a: &ArrayD<E>, shape: &[usize]) -> OpResult<ArrayD<E>> {
    Ok(to_standard(broadcast_to(a, shape)?))
}

/// The adjoint of broadcasting `shape` up to `grad.shape()`: sums `grad`
/// over the axes that broadcasting created or stretched.
pub fn reduce_to_shape<T: Elem>(grad: ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    if grad.shape() == shape {
        return grad;
    }
    let extra = grad.ndim() - shape.len();
    let mut g = grad;
    for _ in 0..extra {
        g = g.sum_axis(Axis(0));
    }
    for (axis, &d) in shape.iter().enumerate() {
        if d == 1 && g.shape()[axis] != 1 {
            g = g.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    g
}

/// Reshapes an owned array (standard layout forced first), with a clear error.
pub fn reshape<E: Clone>(a: ArrayD<E>, shape: &[usize]) -> OpResult<ArrayD<E>> {
    let a = if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() };
    let from = a.shape().to_vec();
    match a.into_shape_with_order(IxDyn(shape)) {
        Ok(r) => Ok(r),
        Err(_) => op_bail!("cannot reshape {from:?} to {shape:?}"),
    }
}

thread_local! {
    /// Per-thread scratch buffers (one `Vec<T>` per element type), reused by
    /// [`with_scratch`] across calls so the attack loop does not allocate and
    /// zero a fresh im2col matrix per convolution. Each rayon worker keeps its
    /// own, grown to the largest request it has seen.
    static SCRATCH: std::cell::RefCell<Vec<Box<dyn std::any::Any>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Calls `f` with a scratch slice of `len` elements whose contents are
/// unspecified (left over from earlier calls): `f` must write every element
/// it reads. The buffer is taken out of the thread-local pool for the call,
/// so a nested call gets a buffer of its own rather than a borrow conflict.
pub fn with_scratch<T: Elem, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let taken = SCRATCH.with(|pool| {
        let mut pool = pool.borrow_mut();
        let at = pool.iter().position(|b| b.is::<Vec<T>>())?;
        pool.swap_remove(at).downcast::<Vec<T>>().ok()
    });
    let mut buf: Box<Vec<T>> = taken.unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, T::zero());
    }
    let r = f(&mut buf[..len]);
    SCRATCH.with(|pool| pool.borrow_mut().push(buf));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, s};

    #[test]
    fn standard_vec_is_the_logical_order_of_any_view() {
        // Against ndarray's own logical-order iteration, for views whose rows
        // are slices, fills (broadcast axes, inner and outer), strided walks
        // (permuted, reversed, stepped) and the degenerate 0-d and empty views.
        let a = Array::from_shape_fn(IxDyn(&[2, 3, 4]), |d| (d[0] * 100 + d[1] * 10 + d[2]) as i64);
        let col = Array::from_shape_fn(IxDyn(&[3, 1]), |d| d[0] as i64);
        let row = Array::from_shape_fn(IxDyn(&[4]), |d| 7 + d[0] as i64);
        let views: Vec<ArrayViewD<'_, i64>> = vec![
            a.view(),
            a.view().permuted_axes(IxDyn(&[2, 0, 1])),
            a.slice(s![.., ..;-1, 1..;2]).into_dyn(),
            col.broadcast(IxDyn(&[2, 3, 5])).unwrap(),
            row.broadcast(IxDyn(&[3, 4])).unwrap(),
            a.slice(s![0, 1, 2]).into_dyn(),
            a.slice(s![.., 0..0, ..]).into_dyn(),
        ];
        for v in views {
            let want: Vec<i64> = v.iter().copied().collect();
            assert_eq!(standard_vec(v.view()), want, "view of shape {:?} strides {:?}", v.shape(), v.strides());
            let owned = to_standard(v.view());
            assert!(owned.is_standard_layout());
            assert_eq!(owned, v);
        }
    }
}
