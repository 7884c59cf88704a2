//! Shape and data-movement ops: Cast, Flatten, Reshape, Transpose,
//! Squeeze/Unsqueeze, Concat, Slice, Gather, Pad, and the sources of shape
//! subgraphs (Constant, ConstantOfShape, Shape, Size). Every data movement is
//! written once, generic over the element type, so the same code moves float
//! tensors on the gradient path and the integer tensors of shape subgraphs
//! (Shape → Gather → Unsqueeze → Concat → Reshape). Backward rules are the
//! adjoint data movements: reshape back, inverse permutation, slice,
//! scatter-add. Integer arithmetic on shapes (Add, Mul, ...) is not here: it
//! belongs to the elementwise family. Attribute and input values come from an
//! untrusted file, so every rank, length and index is checked into an error.

use super::value::{input, norm_axis, reshape, to_standard};
use super::{Backward, BuildCtx, Elem, Op, OpResult, Value, op_bail};
use crate::model::graph::{Elements, Node, TensorData};
use ndarray::{ArrayD, CowArray, IxDyn};

/// What a backward rule returns: one slot per input.
pub(super) type Grads<T> = OpResult<Vec<Option<ArrayD<T>>>>;

/// Largest tensor a shape op may create (2³¹ elements, 8 GiB in f32): an
/// absurd ConstantOfShape, Pad or Resize in a model file must be an error,
/// not an allocation abort.
const MAX_ELEMENTS: usize = 1 << 31;

/// Number of elements of `shape`, or an error if it is absurdly large.
pub(super) fn check_size(shape: &[usize]) -> OpResult<usize> {
    let mut n: usize = 1;
    for &d in shape {
        n = match n.checked_mul(d) {
            Some(n) if n <= MAX_ELEMENTS => n,
            _ => op_bail!("a tensor of shape {shape:?} is too large"),
        };
    }
    Ok(n)
}

/// Runs one generic data movement on whichever variant a value holds; the
/// body is instantiated once for `T` and once for `i64`.
macro_rules! each_value {
    ($v:expr, |$a:ident| $body:expr) => {
        match $v {
            Value::F($a) => Value::F($body),
            Value::I($a) => Value::I($body),
        }
    };
}

/// Gradient slots for an op whose only differentiable input is input 0. The
/// other inputs (shapes, axes, indices, pads) are integer-valued: the output
/// is piecewise constant in them, so their derivative is zero.
pub(super) fn grads_first<T: Elem>(ctx: &Backward<'_, T>, d0: impl FnOnce() -> OpResult<ArrayD<T>>) -> Grads<T> {
    let wrt = |i: usize| ctx.wrt.get(i).copied().unwrap_or(false);
    let mut out = Vec::with_capacity(ctx.inputs.len());
    if ctx.inputs.is_empty() {
        return Ok(out);
    }
    out.push(if wrt(0) { Some(d0()?) } else { None });
    for i in 1..ctx.inputs.len() {
        out.push(if wrt(i) { ctx.inputs[i].map(|v| ArrayD::zeros(IxDyn(v.shape()))) } else { None });
    }
    Ok(out)
}

/// A view of `a` in standard (row-major) layout, copied only if needed.
pub(super) fn standard<E: Clone>(a: &ArrayD<E>) -> CowArray<'_, E, IxDyn> {
    if a.is_standard_layout() { CowArray::from(a.view()) } else { CowArray::from(to_standard(a.view())) }
}

/// The elements of a [`standard`] view, in order.
pub(super) fn standard_slice<'a, E>(a: &'a CowArray<'_, E, IxDyn>) -> OpResult<&'a [E]> {
    match a.as_slice() {
        Some(s) => Ok(s),
        None => op_bail!("internal: tensor not contiguous"),
    }
}

/// (product of dims before `axis`, dim at `axis`, product of dims after `axis`).
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

/// One axis of a separable data movement: output position `j` along `axis`
/// reads input position `src[j]`, or the fill value where `src[j]` is `None`.
pub(super) struct AxisMap {
    pub axis: usize,
    pub in_dim: usize,
    pub src: Vec<Option<usize>>,
}

impl AxisMap {
    fn is_identity(&self) -> bool {
        self.src.len() == self.in_dim && self.src.iter().enumerate().all(|(j, s)| *s == Some(j))
    }
}

/// Gathers along one axis: `out[.., j, ..] = a[.., src[j], ..]` (or `fill`).
pub(super) fn take_axis<E: Clone>(
    a: &ArrayD<E>,
    axis: usize,
    src: &[Option<usize>],
    fill: Option<&E>,
) -> OpResult<ArrayD<E>> {
    if axis >= a.ndim() {
        op_bail!("axis {axis} is out of range for rank {}", a.ndim());
    }
    let a = standard(a);
    let s = standard_slice(&a)?;
    let (outer, d, inner) = split_at_axis(a.shape(), axis);
    let mut out_shape = a.shape().to_vec();
    out_shape[axis] = src.len();
    check_size(&out_shape)?;
    for m in src {
        match (m, fill) {
            (Some(i), _) if *i >= d => op_bail!("index {i} is out of range for an axis of length {d}"),
            (None, None) => op_bail!("internal: no fill value for a padded position"),
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(outer * src.len() * inner);
    for o in 0..outer {
        let row = &s[o * d * inner..(o + 1) * d * inner];
        if inner == 1 {
            // The last axis (Slice, Pad and Resize along the width): one element per index.
            out.extend(src.iter().map(|m| match (m, fill) {
                (Some(i), _) => row[*i].clone(),
                (None, Some(f)) => f.clone(),
                (None, None) => unreachable!("checked above"),
            }));
            continue;
        }
        for m in src {
            match (m, fill) {
                (Some(i), _) => out.extend_from_slice(&row[i * inner..(i + 1) * inner]),
                (None, Some(f)) => out.extend(std::iter::repeat_n(f.clone(), inner)),
                (None, None) => unreachable!("checked above"),
            }
        }
    }
    match ArrayD::from_shape_vec(IxDyn(&out_shape), out) {
        Ok(r) => Ok(r),
        Err(e) => op_bail!("internal: {e}"),
    }
}

/// The adjoint of [`take_axis`]: scatter-adds `g[.., j, ..]` into position
/// `src[j]` of an axis of length `in_dim`; filled positions get nothing.
pub(super) fn take_axis_adjoint<T: Elem>(
    g: &ArrayD<T>,
    axis: usize,
    src: &[Option<usize>],
    in_dim: usize,
) -> OpResult<ArrayD<T>> {
    if axis >= g.ndim() || g.shape()[axis] != src.len() {
        op_bail!("gradient of shape {:?} does not match the forward map on axis {axis}", g.shape());
    }
    let g = standard(g);
    let gs = standard_slice(&g)?;
    let (outer, n, inner) = split_at_axis(g.shape(), axis);
    if let Some(i) = src.iter().flatten().find(|&&i| i >= in_dim) {
        op_bail!("index {i} is out of range for an axis of length {in_dim}");
    }
    let mut res = vec![T::zero(); outer * in_dim * inner];
    for o in 0..outer {
        if inner == 1 {
            // The last axis: one element per index, the same sums in the same order.
            let (from, to) = (&gs[o * n..(o + 1) * n], &mut res[o * in_dim..(o + 1) * in_dim]);
            for (m, &v) in src.iter().zip(from) {
                if let Some(i) = *m {
                    to[i] += v;
                }
            }
            continue;
        }
        for (j, m) in src.iter().enumerate() {
            let Some(i) = *m else { continue };
            let from = &gs[(o * n + j) * inner..][..inner];
            for (r, &v) in res[(o * in_dim + i) * inner..][..inner].iter_mut().zip(from) {
                *r += v;
            }
        }
    }
    let mut shape = g.shape().to_vec();
    shape[axis] = in_dim;
    match ArrayD::from_shape_vec(IxDyn(&shape), res) {
        Ok(r) => Ok(r),
        Err(e) => op_bail!("internal: {e}"),
    }
}

/// Applies the per-axis maps in order (identity maps are skipped).
fn apply_maps<E: Clone>(a: &ArrayD<E>, maps: &[AxisMap], fill: Option<&E>) -> OpResult<ArrayD<E>> {
    let mut cur: Option<ArrayD<E>> = None;
    for m in maps.iter().filter(|m| !m.is_identity()) {
        cur = Some(take_axis(cur.as_ref().unwrap_or(a), m.axis, &m.src, fill)?);
    }
    Ok(cur.unwrap_or_else(|| a.clone()))
}

/// The adjoint of [`apply_maps`]: the adjoint maps in reverse order.
fn adjoint_maps<T: Elem>(g: &ArrayD<T>, maps: &[AxisMap]) -> OpResult<ArrayD<T>> {
    let mut cur: Option<ArrayD<T>> = None;
    for m in maps.iter().rev().filter(|m| !m.is_identity()) {
        cur = Some(take_axis_adjoint(cur.as_ref().unwrap_or(g), m.axis, &m.src, m.in_dim)?);
    }
    Ok(cur.unwrap_or_else(|| g.clone()))
}

/// Normalises a list of axes (negative counts from the end) into `0..rank`,
/// rejecting duplicates.
fn norm_axes(axes: &[i64], rank: usize) -> OpResult<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = norm_axis(a, rank)?;
        if out.contains(&n) {
            op_bail!("axis {a} is repeated in {axes:?}");
        }
        out.push(n);
    }
    Ok(out)
}

/// An optional input that is absent or has zero elements (both mean "not given").
fn given<'a, T: Elem>(inputs: &[Option<&'a Value<T>>], i: usize) -> Option<&'a Value<T>> {
    inputs.get(i).copied().flatten().filter(|v| v.shape().iter().product::<usize>() > 0)
}

fn permute<E: Clone>(a: &ArrayD<E>, perm: &[usize]) -> ArrayD<E> {
    to_standard(a.view().permuted_axes(IxDyn(perm)))
}

fn tensor_value<T: Elem>(t: &TensorData) -> OpResult<Value<T>> {
    let shape = IxDyn(&t.shape);
    let r = match &t.data {
        Elements::Float(v) => ArrayD::from_shape_vec(shape, v.iter().map(|&x| T::of(x)).collect()).map(Value::F),
        Elements::Int(v) => ArrayD::from_shape_vec(shape, v.clone()).map(Value::I),
    };
    match r {
        Ok(v) => Ok(v),
        Err(_) => op_bail!("tensor attribute of shape {:?} has the wrong number of values", t.shape),
    }
}

// ---------------------------------------------------------------- Cast

#[derive(Debug, Clone, Copy, PartialEq)]
enum CastTo {
    Float,
    Int { bits: u32, signed: bool },
    Bool,
}

/// Two's-complement wrap to a narrower integer type, as ONNX integer casts do.
fn wrap(v: i64, bits: u32, signed: bool) -> i64 {
    if bits >= 64 {
        return v;
    }
    let m = v & ((1i64 << bits) - 1);
    if signed && m >= 1i64 << (bits - 1) { m - (1i64 << bits) } else { m }
}

struct Cast {
    to: CastTo,
}

impl<T: Elem> Op<T> for Cast {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = input(inputs, 0)?;
        let y = match (self.to, x) {
            (CastTo::Float, Value::F(a)) => Value::F(a.clone()),
            (CastTo::Float, Value::I(a)) => Value::F(a.mapv(|v| T::of(v as f64))),
            (CastTo::Bool, Value::F(a)) => Value::I(a.mapv(|v| (v != T::zero()) as i64)),
            (CastTo::Bool, Value::I(a)) => Value::I(a.mapv(|v| (v != 0) as i64)),
            // Float → integer truncates toward zero, as a C cast does (NaN → 0).
            (CastTo::Int { bits, signed }, Value::F(a)) => {
                Value::I(a.mapv(|v| wrap(v.f64().trunc() as i64, bits, signed)))
            }
            (CastTo::Int { bits, signed }, Value::I(a)) => Value::I(a.mapv(|v| wrap(v, bits, signed))),
        };
        Ok(vec![y])
    }

    /// Float → float: y = x, so dX = dY (float16/bfloat16 rounding is not
    /// modelled; its derivative would be zero almost everywhere, and PyTorch
    /// autograd also passes gradients through casts). Casts to integer types
    /// stop the gradient and are never differentiated.
    fn backward(&self, ctx: &Backward<'_, T>) -> Grads<T> {
        if self.to != CastTo::Float {
            op_bail!("a cast to an integer type has no gradient");
        }
        grads_first(ctx, || Ok(ctx.dout.clone()))
    }

    fn stops_gradient(&self) -> bool {
        self.to != CastTo::Float
    }
}

pub fn build_cast<T: Elem>(n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let Some(code) = n.attr_int("to") else { op_bail!("Cast needs the attribute 'to'") };
    let to = match code {
        // float, float16, double, bfloat16, and the float8 types (values kept as they are).
        1 | 10 | 11 | 16 | 17..=20 => CastTo::Float,
        2 => CastTo::Int { bits: 8, signed: false },
        3 => CastTo::Int { bits: 8, signed: true },
        4 => CastTo::Int { bits: 16, signed: false },
        5 => CastTo::Int { bits: 16, signed: true },
        6 => CastTo::Int { bits: 32, signed: true },
        7 => CastTo::Int { bits: 64, signed: true },
        9 => CastTo::Bool,
        12 => CastTo::Int { bits: 32, signed: false },
        13 => CastTo::Int { bits: 64, signed: false },
        _ => op_bail!("Cast to ONNX element type {code} is not supported"),
    };
    Ok(Box::new(Cast { to }))
}

// ---------------------------------------------------------------- Flatten

struct Flatten {
    axis: i64,
}

impl<T: Elem> Op<T> for Flatten {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = input(inputs, 0)?;
        let r = x.shape().len() as i64;
        let axis = if self.axis < 0 { self.axis + r } else { self.axis };
        if !(0..=r).contains(&axis) {
            op_bail!("Flatten axis {} is out of range for rank {r}", self.axis);
        }
        let (head, tail) = x.shape().split_at(axis as usize);
        let to = [head.iter().product::<usize>(), tail.iter().product::<usize>()];
        Ok(vec![each_value!(x, |a| reshape(a.clone(), &to)?)])
    }

    /// A reshape: dX = reshape(dY, shape(X)).
    fn backward(&self, ctx: &Backward<'_, T>) -> Grads<T> {
        grads_first(ctx, || reshape(ctx.dout.clone(), input(ctx.inputs, 0)?.shape()))
    }
}

pub fn build_flatten<T: Elem>(n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(Flatten { axis: n.attr_int("axis").unwrap_or(1) }))
}

// ---------------------------------------------------------------- Reshape

/// The output shape of Reshape: 0 copies the input dim (unless `allowzero`),
/// one -1 is inferred.
fn reshape_target(from: &[usize], spec: &[i64], allowzero: bool) -> OpResult<Vec<usize>> {
    let total: usize = from.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 => {
                if infer.replace(i).is_some() {
                    op_bail!("Reshape shape {spec:?} has more than one -1");
                }
                out.push(1);
            }
            0 if !allowzero => match from.get(i) {
                Some(&d) => out.push(d),
                None => op_bail!("Reshape shape {spec:?} copies dim {i} of a rank-{} input", from.len()),
            },
            s if s >= 0 => out.push(s as usize),
            _ => op_bail!("Reshape shape {spec:?} has a negative dim other than -1"),
        }
    }
    if allowzero && infer.is_some() && spec.contains(&0) {
        op_bail!("Reshape shape {spec:?} has both 0 and -1 with allowzero=1");
    }
    let known = out.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
    let Some(known) = known else { op_bail!("Reshape shape {spec:?} is too large") };
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            op_bail!("cannot reshape {from:?} to {spec:?}");
        }
        out[i] = total / known;
    } else if known != total {
        op_bail!("cannot reshape {from:?} to {spec:?}");
    }
    Ok(out)
}

struct Reshape {
    /// Reshape-1..4 carried the shape as an attribute.
    attr_shape: Option<Vec<i64>>,
    allowzero: bool,
}

impl<T: Elem> Op<T> for Reshape {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = input(inputs, 0)?;
        let spec = match &self.attr_shape {
            Some(s) => s.clone(),
            None => input(inputs, 1)?.ints()?,
        };
        let to = reshape_target(x.shape(), &spec, self.allowzero)?;
        Ok(vec![each_value!(x, |a| reshape(a.clone(), &to)?)])
    }

    /// dX = reshape(dY, shape(X)).
    fn backward(&self, ctx: &Backward<'_, T>) -> Grads<T> {
        grads_first(ctx, || reshape(ctx.dout.clone(), input(ctx.inputs, 0)?.shape()))
    }
}

pub fn build_reshape<T: Elem>(n: &Node, c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let attr_shape = if c.opset < 5 {
        match n.attr_ints("shape") {
            Some(s) => Some(s.to_vec()),
            None => op_bail!("Reshape before opset 5 needs the attribute 'shape'"),
        }
    } else {
        None
    };
    let allowzero = c.opset >= 14 && n.attr_int("allowzero").unwrap_or(0) != 0;
    Ok(Box::new(Reshape { attr_shape, allowzero }))
}

// ---------------------------------------------------------------- Transpose

struct Transpose {
    perm: Option<Vec<i64>>,
}

impl Transpose {
    fn perm(&self, rank: usize) -> OpResult<Vec<usize>> {
        let Some(p) = &self.perm else { return Ok((0..rank).rev().collect()) };
        if p.len() != rank {
            op_bail!("Transpose perm {p:?} does not match rank {rank}");
        }
        let mut seen = vec![false; rank];
        let mut out = Vec::with_capacity(rank);
        for &a in p {
            // Negative entries are not in the spec; accept them like axes elsewhere.
            let a = norm_axis(a, rank)?;
            if std::mem::replace(&mut seen[a], true) {
                op_bail!("Transpose perm {p:?} is not a permutation");
            }
            out.push(a);
        }
        Ok(out)
    }
}

impl<T: Elem> Op<T> for Transpose {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = input(inputs, 0)?;
        let perm = self.perm(x.shape().len())?;
        Ok(vec![each_value!(x, |a| permute(a, &perm))])
    }

    /// Y = Xᵀ(perm), so dX = dYᵀ(perm⁻¹).
    fn backward(&self, ctx: &Backward<'_, T>) -> Grads<T> {
        grads_first(ctx, || {
            let perm = self.perm(input(ctx.inputs, 0)?.shape().len())?;
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            if ctx.dout.ndim() != perm.len() {
                op_bail!("gradient rank {} does not match the output", ctx.dout.ndim());
            }
            Ok(permute(ctx.dout, &inv))
        })
    }
}

pub fn build_transpose<T: Elem>(n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(Transpose { perm: n.attr_ints("perm").map(|p| p.to_vec()) }))
}

// ---------------------------------------------------------------- Squeeze / Unsqueeze

struct Squeeze {
    /// Squeeze-1..12 carried the axes as an attribute; from 13 they are input 1.
    attr_axes: Option<Vec<i64>>,
    from_input: bool,
}

impl<T: Elem> Op<T> for Squeeze {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = input(inputs, 0)?;
        let shape = x.shape();
        let axes = match (&self.attr_axes, self.from_input) {
            (Some(a), _) => a.clone(),
            (None, true) => given(inputs, 1).map(|v| v.ints()).transpose()?.unwrap_or_default(),
            (None, false) => vec![],
        };
        let drop: Vec<usize> = if axes.is_empty() {
            (0..shape.len()).filter(|&i| shape[i] == 1).collect()
        } else {
            let drop = norm_axes(&axes, shape.len())?;
            if let Some(&a) = drop.iter().find(|&&a| shape[a] != 1) {
                op_bail!("Squeeze axis {a} has size {}, not 1 (shape {shape:?})", shape[a]);
            }
            drop
        };
        let to: Vec<usize> = (0..shape.len()).filter(|i| !drop.contains(i)).map(|i| shape[i]).collect();
        Ok(vec![each_value!(x, |a| reshape(a.clone(), &to)?)])
    }

    /// A reshape: dX = reshape(dY, shape(X)).
    fn backward(&self, ctx: &Backward<'_, T>) -> Grads<T> {
        grads_first(ctx, || reshape(ctx.dout.clone(), input(ctx.inputs, 0)?.shape()))
    }
}

pub fn build_squeeze<T: Elem>(n: &Node, c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let from_input = c.opset >= 13;
    let attr_axes = if from_input { None } else { n.attr_ints("axes").map(|a| a.to_vec()) };
    Ok(Box::new(Squeeze { attr_axes, from_input }))
}

struct Unsqueeze {
    /// Unsqueeze-1..12 carried the axes as an attribute; from 13 they are input 1.
    attr_axes: Option<Vec<i64>>,
}

impl<T: Elem> Op<T> for Unsqueeze {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = input(inputs, 0)?;
        let axes = match &self.attr_axes {
            Some(a) => a.clone(),
            None => input(inputs, 1)?.ints()?,
        };
        // Axes refer to the output rank.
        let out_rank = x.shape().len() + axes.len();
        let ins = norm_axes(&axes, out_rank)?;
        let mut dims = x.shape().iter();
        let to: Vec<usize> =
            (0..out_rank).map(|i| if ins.contains(&i) { 1 } else { dims.next().copied().unwrap_or(1) }).collect();
        Ok(vec![each_value!(x, |a| reshape(a.clone(), &to)?)])
    }

    /// A reshape: dX = reshape(dY, shape(X)).
    fn backward(&self, ctx: &Backward<'_, T>) -> Grads<T> {
        grads_first(ctx, || reshape(ctx.dout.clone(), input(ctx.inputs, 0)?.shape()))
    }
}

pub fn build_unsqueeze<T: Elem>(n: &Node, c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let attr_axes = if c.opset >= 13 {
        None
    } else {
        match n.attr_ints("axes") {
            Some(a) => Some(a.to_vec()),
            None => op_bail!("Unsqueeze before opset 13 needs the attribute 'axes'"),
        }
    };
    Ok(Box::new(Unsqueeze { attr_axes }))
}

// ---------------------------------------------------------------- Concat

/// Concatenation in standard layout: for each index before `axis`, each
/// input contributes one contiguous block (its dim at `axis` × the dims
/// after). `ndarray::concatenate` instead puts `axis` outermost in memory,
/// and every consumer of that layout fell back to element-by-element
/// iteration (half of a batch-16 PGD on pneumonia_mixed_ops).
fn concat<E: Clone>(arrays: &[&ArrayD<E>], axis: usize) -> OpResult<ArrayD<E>> {
    let Some(first) = arrays.first() else { op_bail!("Concat needs at least one input") };
    let mut shape = first.shape().to_vec();
    shape[axis] = arrays.iter().map(|a| a.shape()[axis]).sum();
    check_size(&shape)?;
    let (outer, _, _) = split_at_axis(&shape, axis);
    let inputs: Vec<_> = arrays.iter().map(|a| standard(a)).collect();
    let mut blocks: Vec<(&[E], usize)> = Vec::with_capacity(inputs.len());
    for a in &inputs {
        let (_, len, inner) = split_at_axis(a.shape(), axis);
        blocks.push((standard_slice(a)?, len * inner));
    }
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for &(src, block) in &blocks {
            data.extend_from_slice(&src[o * block..(o + 1) * block]);
        }
    }
    match ArrayD::from_shape_vec(IxDyn(&shape), data) {
        Ok(r) => Ok(r),
        Err(e) => op_bail!("Concat: {e}"),
    }
}

/// The adjoint of [`concat`]: the block of `dy` (standard layout) that input
/// `i` of shape `shape` contributed, starting at `start` along `axis`.
fn concat_part<T: Clone>(dy: &[T], dy_shape: &[usize], shape: &[usize], axis: usize, start: usize) -> Vec<T> {
    let (outer, total, inner) = split_at_axis(dy_shape, axis);
    let block = shape[axis] * inner;
    let mut out = Vec::with_capacity(outer * block);
    for o in 0..outer {
        let at = (o * total + start) * inner;
        out.extend_from_slice(&dy[at..at + block]);
    }
    out
}

struct Concat {
    axis: i64,
}

impl Concat {
    /// The normalised axis, after checking every input has the same rank and
    /// the same dims off the axis.
    fn axis(&self, shapes: &[&[usize]]) -> OpResult<usize> {
        let Some(first) = shapes.first() else { op_bail!("Concat needs at least one input") };
        let axis = norm_axis(self.axis, first.len())?;
        for s in shapes {
            let same =
                s.len() == first.len() && s.iter().zip(first.iter()).enumerate().all(|(i, (a, b))| i == axis || a == b);
            if !same {
                op_bail!("Concat inputs of shapes {first:?} and {s:?} do not match off axis {axis}");
            }
        }
        Ok(axis)
    }
}

impl<T: Elem> Op<T> for Concat {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let xs: Vec<&Value<T>> = (0..inputs.len()).map(|i| input(inputs, i)).collect::<OpResult<_>>()?;
        let shapes: Vec<&[usize]> = xs.iter().map(|v| v.shape()).collect();
        let axis = self.axis(&shapes)?;
        let floats: Vec<&ArrayD<T>> =
            xs.iter().filter_map(|v| if let Value::F(a) = v { Some(a) } else { None }).collect();
        let ints: Vec<&ArrayD<i64>> =
            xs.iter().filter_map(|v| if let Value::I(a) = v { Some(a) } else { None }).collect();
        let y = match (floats.len(), ints.len()) {
            (_, 0) => Value::F(concat(&floats, axis)?),
            (0, _) => Value::I(concat(&ints, axis)?),
            _ => op_bail!("Concat inputs mix floating-point and integer tensors"),
        };
        Ok(vec![y])
    }

    /// Y = [X₁ | X₂ | …] along the axis, so dXᵢ is the slice of dY at Xᵢ's offset.
    fn backward(&self, ctx: &Backward<'_, T>) -> Grads<T> {
        let xs: Vec<&Value<T>> = (0..ctx.inputs.len()).map(|i| input(ctx.inputs, i)).collect::<OpResult<_>>()?;
        let shapes: Vec<&[usize]> = xs.iter().map(|v| v.shape()).collect();
        let axis = self.axis(&shapes)?;
        let total: usize = shapes.iter().map(|s| s[axis]).sum();
        let mut y_shape = shapes[0].to_vec();
        y_shape[axis] = total;
        if ctx.dout.shape() != y_shape {
            op_bail!("gradient of shape {:?} does not match the Concat output {y_shape:?}", ctx.dout.shape());
        }
        let dy = standard(ctx.dout);
        let dy_slice = standard_slice(&dy)?;
        let mut out = Vec::with_capacity(xs.len());
        let mut start = 0;
        for (i, s) in shapes.iter().enumerate() {
            let out_i = match ctx.wrt.get(i) {
                Some(true) => Some(super::conv::array(s, concat_part(dy_slice, dy.shape(), s, axis, start))?),
                _ => None,
            };
            out.push(out_i);
            start += s[axis];
        }
        Ok(out)
    }
}

pub fn build_concat<T: Elem>(n: &Node, c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let axis = match n.attr_int("axis") {
        Some(a) => a,
        // Concat-1 defaulted to axis 1; from opset 4 the attribute is required.
        None if c.opset < 4 => 1,
        None => op_bail!("Concat needs the attribute 'axis'"),
    };
    Ok(Box::new(Concat { axis }))
}

// ---------------------------------------------------------------- Slice

/// The input positions one Slice axis selects, with the spec's clamping:
/// negative starts/ends count from the end; for a positive step both clamp
/// to [0, d], for a negative step start clamps to [0, d−1] and end to [−1, d−1].
fn slice_positions(d: usize, start: i64, end: i64, step: i64) -> OpResult<Vec<Option<usize>>> {
    if step == 0 {
        op_bail!("Slice step must not be 0");
    }
    let di = d as i64;
    if di == 0 {
        return Ok(vec![]);
    }
    let start = if start < 0 { start.saturating_add(di) } else { start };
    let end = if end < 0 { end.saturating_add(di) } else { end };
    let stride = step.unsigned_abs() as usize;
    let positions: Vec<Option<usize>> = if step > 0 {
        let (s, e) = (start.clamp(0, di), end.clamp(0, di));
        (s..e).step_by(stride).map(|i| Some(i as usize)).collect()
    } else {
        let (s, e) = (start.clamp(0, di - 1), end.clamp(-1, di - 1));
        ((e + 1)..=s).rev().step_by(stride).map(|i| Some(i as usize)).collect()
    };
    Ok(positions)
}

/// Slice-1..9 attributes: starts, ends, optional axes.
type SliceAttrs = (Vec<i64>, Vec<i64>, Option<Vec<i64>>);

struct SliceOp {
    attrs: Option<SliceAttrs>,
}

impl SliceOp {
    fn maps<T: Elem>(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<AxisMap>> {
        let shape = input(inputs, 0)?.shape();
        let (starts, ends, axes, steps) = match &self.attrs {
            Some((s, e, a)) => (s.clone(), e.clone(), a.clone(), None),
            None => (
                input(inputs, 1)?.ints()?,
                input(inputs, 2)?.ints()?,
                given(inputs, 3).map(|v| v.ints()).transpose()?,
                given(inputs, 4).map(|v| v.ints()).transpose()?,
            ),
        };
        if starts.len() != ends.len() {
            op_bail!("Slice starts {starts:?} and ends {ends:?} differ in length");
        }
        let axes = match axes {
            Some(a) if a.len() != starts.len() => op_bail!("Slice axes {a:?} and starts {starts:?} differ in length"),
            Some(a) => norm_axes(&a, shape.len())?,
            None if starts.len() > shape.len() => {
                op_bail!("Slice has {} starts for a rank-{} input", starts.len(), shape.len())
            }
            None => (0..starts.len()).collect(),
        };
        let steps = match steps {
            Some(s) if s.len() != starts.len() => op_bail!("Slice steps {s:?} and starts {starts:?} differ in length"),
            Some(s) => s,
            None => vec![1; starts.len()],
        };
        let mut maps = Vec::with_capacity(axes.len());
        for (k, &axis) in axes.iter().enumerate() {
            let src = slice_positions(shape[axis], starts[k], ends[k], steps[k])?;
            maps.push(AxisMap { axis, in_dim: shape[axis], src });
        }
        Ok(maps)
    }
}

impl<T: Elem> Op<T> for SliceOp {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let maps = self.maps(inputs)?;
        Ok(vec![each_value!(input(inputs, 0)?, |a| apply_maps(a, &maps, None)?)])
    }

    /// Y = X[sel] selects each element at most once, so dX is dY scattered
    /// into zeros at the selected positions.
    fn backward(&self, ctx: &Backward<'_, T>) -> Grads<T> {
        grads_first(ctx, || adjoint_maps(ctx.dout, &self.maps(ctx.inputs)?))
    }
}

pub fn build_slice<T: Elem>(n: &Node, c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let attrs = if c.opset < 10 {
        let (Some(s), Some(e)) = (n.attr_ints("starts"), n.attr_ints("ends")) else {
            op_bail!("Slice before opset 10 needs the attributes 'starts' and 'ends'")
        };
        Some((s.to_vec(), e.to_vec(), n.attr_ints("axes").map(|a| a.to_vec())))
    } else {
        None
    };
    Ok(Box::new(SliceOp { attrs }))
}

// ---------------------------------------------------------------- Gather

struct Gather {
    axis: i64,
}

impl Gather {
    /// (axis, flattened indices normalised into range, output shape).
    fn plan<T: Elem>(&self, inputs: &[Option<&Value<T>>]) -> OpResult<(usize, Vec<Option<usize>>, Vec<usize>)> {
        let shape = input(inputs, 0)?.shape();
        let idx = input(inputs, 1)?;
        let axis = norm_axis(self.axis, shape.len())?;
        let d = shape[axis] as i64;
        let src = idx
            .ints()?
            .into_iter()
            .map(|i| {
                let j = if i < 0 { i + d } else { i };
                if !(0..d).contains(&j) {
                    op_bail!("Gather index {i} is out of range for an axis of length {d}");
                }
                Ok(Some(j as usize))
            })
            .collect::<OpResult<Vec<_>>>()?;
        let out: Vec<usize> = shape[..axis].iter().chain(idx.shape()).chain(&shape[axis + 1..]).copied().collect();
        Ok((axis, src, out))
    }
}

impl<T: Elem> Op<T> for Gather {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let (axis, src, out) = self.plan(inputs)?;
        Ok(vec![each_value!(input(inputs, 0)?, |a| reshape(take_axis(a, axis, &src, None)?, &out)?)])
    }

    /// Y[.., j, ..] = X[.., idx[j], ..], so dX[.., i, ..] = Σ_{j: idx[j] = i} dY[.., j, ..]
    /// (a scatter-add: repeated indices accumulate).
    fn backward(&self, ctx: &Backward<'_, T>) -> Grads<T> {
        grads_first(ctx, || {
            let (axis, src, _) = self.plan(ctx.inputs)?;
            let shape = input(ctx.inputs, 0)?.shape();
            let mut flat = shape.to_vec();
            flat[axis] = src.len();
            let g = reshape(ctx.dout.clone(), &flat)?;
            take_axis_adjoint(&g, axis, &src, shape[axis])
        })
    }
}

pub fn build_gather<T: Elem>(n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(Gather { axis: n.attr_int("axis").unwrap_or(0) }))
}

// ---------------------------------------------------------------- Pad

#[derive(Debug, Clone, Copy, PartialEq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// Mirror position `p` into `0..n` without repeating the edge (numpy
/// "reflect"), reflecting again as often as needed.
fn reflect(p: i64, n: i64) -> i64 {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = p.rem_euclid(period);
    if m < n { m } else { period - m }
}

/// The input positions of one padded axis. Negative pads crop first, then
/// the positive pads are filled from the cropped range (as onnxruntime does).
fn pad_positions(d: usize, begin: i64, end: i64, mode: PadMode) -> OpResult<Vec<Option<usize>>> {
    let lim = MAX_ELEMENTS as i64;
    if begin.abs() > lim || end.abs() > lim {
        op_bail!("pads ({begin}, {end}) are too large");
    }
    let d = d as i64;
    let (lo, hi) = ((-begin).max(0), (-end).max(0));
    let kept = d - lo - hi;
    if kept < 0 {
        op_bail!("pads ({begin}, {end}) crop more than the axis length {d}");
    }
    let (b, e) = (begin.max(0), end.max(0));
    if kept == 0 && b + e > 0 && mode != PadMode::Constant {
        op_bail!("cannot {mode:?}-pad an empty axis");
    }
    let out = kept + b + e;
    if out > lim {
        op_bail!("padded axis length {out} is too large");
    }
    let positions = (0..out)
        .map(|j| {
            let p = j - b;
            let q = if (0..kept).contains(&p) {
                p
            } else {
                match mode {
                    PadMode::Constant => return None,
                    PadMode::Edge => p.clamp(0, kept - 1),
                    PadMode::Reflect => reflect(p, kept),
                    PadMode::Wrap => p.rem_euclid(kept),
                }
            };
            Some((lo + q) as usize)
        })
        .collect();
    Ok(positions)
}

struct Pad {
    mode: PadMode,
    /// Pad-1..10 carried pads and the constant as attributes.
    attrs: Option<(Vec<i64>, f64)>,
    /// Pad-18 added the optional `axes` input.
    axes_input: bool,
}

impl Pad {
    fn maps<T: Elem>(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<AxisMap>> {
        let shape = input(inputs, 0)?.shape();
        let pads = match &self.attrs {
            Some((p, _)) => p.clone(),
            None => input(inputs, 1)?.ints()?,
        };
        let axes = match given(inputs, 3).filter(|_| self.axes_input) {
            Some(a) => norm_axes(&a.ints()?, shape.len())?,
            None => (0..shape.len()).collect(),
        };
        if pads.len() != 2 * axes.len() {
            op_bail!("Pad has {} pads for {} axes (need 2 per axis)", pads.len(), axes.len());
        }
        let mut maps = Vec::with_capacity(axes.len());
        for (k, &axis) in axes.iter().enumerate() {
            let src = pad_positions(shape[axis], pads[k], pads[k + axes.len()], self.mode)?;
            maps.push(AxisMap { axis, in_dim: shape[axis], src });
        }
        let out: Vec<usize> = (0..shape.len())
            .map(|i| maps.iter().find(|m| m.axis == i).map(|m| m.src.len()).unwrap_or(shape[i]))
            .collect();
        check_size(&out)?;
        Ok(maps)
    }

    /// The constant as (float, integer): from the attribute, or input 2 (a
    /// scalar or one-element tensor, 0 when absent).
    fn constant<T: Elem>(&self, inputs: &[Option<&Value<T>>]) -> OpResult<(f64, i64)> {
        if let Some((_, v)) = &self.attrs {
            return Ok((*v, *v as i64));
        }
        let Some(c) = given(inputs, 2) else { return Ok((0.0, 0)) };
        if c.shape().iter().product::<usize>() != 1 {
            op_bail!("Pad constant_value must have one element, got shape {:?}", c.shape());
        }
        Ok(match c {
            Value::I(a) => {
                let v = a.iter().next().copied().unwrap_or(0);
                (v as f64, v)
            }
            Value::F(a) => {
                let v = a.iter().next().map(|v| v.f64()).unwrap_or(0.0);
                (v, v as i64)
            }
        })
    }
}

impl<T: Elem> Op<T> for Pad {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let maps = self.maps(inputs)?;
        let (cf, ci) = self.constant(inputs)?;
        let y = match input(inputs, 0)? {
            Value::F(a) => Value::F(apply_maps(a, &maps, Some(&T::of(cf)))?),
            Value::I(a) => Value::I(apply_maps(a, &maps, Some(&ci))?),
        };
        Ok(vec![y])
    }

    /// Each output element is one input element or the constant c, so
    /// dX[i] = Σ_{outputs j reading i} dY[j] (constant mode: the inner slice
    /// of dY; reflect/edge/wrap: the mirrored or replicated positions add
    /// their contributions back) and dc = Σ_{outputs j filled with c} dY[j].
    fn backward(&self, ctx: &Backward<'_, T>) -> Grads<T> {
        let maps = self.maps(ctx.inputs)?;
        let mut out = grads_first(ctx, || adjoint_maps(ctx.dout, &maps))?;
        if self.attrs.is_none()
            && ctx.wrt.get(2).copied().unwrap_or(false)
            && let Some(c) = ctx.inputs.get(2).copied().flatten()
        {
            let dc: T = if self.mode == PadMode::Constant {
                let ones = ArrayD::<T>::ones(IxDyn(input(ctx.inputs, 0)?.shape()));
                let inside = apply_maps(&ones, &maps, Some(&T::zero()))?;
                if inside.shape() != ctx.dout.shape() {
                    op_bail!("gradient of shape {:?} does not match the Pad output", ctx.dout.shape());
                }
                ctx.dout.iter().zip(inside.iter()).filter(|(_, m)| **m == T::zero()).map(|(g, _)| *g).sum()
            } else {
                T::zero()
            };
            out[2] = Some(ArrayD::from_elem(IxDyn(c.shape()), dc));
        }
        Ok(out)
    }
}

pub fn build_pad<T: Elem>(n: &Node, c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let mode = match n.attr_str("mode").unwrap_or("constant") {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => op_bail!("Pad mode '{m}' is not supported (constant, reflect, edge, wrap)"),
    };
    let attrs = if c.opset < 11 {
        // Pad-1 called the attribute 'paddings'.
        let Some(p) = n.attr_ints("pads").or_else(|| n.attr_ints("paddings")) else {
            op_bail!("Pad before opset 11 needs the attribute 'pads'")
        };
        Some((p.to_vec(), n.attr_float("value").unwrap_or(0.0) as f64))
    } else {
        None
    };
    Ok(Box::new(Pad { mode, attrs, axes_input: c.opset >= 18 }))
}

// ---------------------------------------------------------------- Constant, ConstantOfShape

struct Constant<T> {
    value: Value<T>,
}

impl<T: Elem> Op<T> for Constant<T> {
    fn forward(&self, _inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        Ok(vec![self.value.clone()])
    }

    /// No inputs, so no gradient slots.
    fn backward(&self, _ctx: &Backward<'_, T>) -> Grads<T> {
        Ok(vec![])
    }
}

pub fn build_constant<T: Elem>(n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    const KINDS: [&str; 8] = [
        "value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
        "sparse_value",
        "value_string",
        "value_strings",
    ];
    let present: Vec<&str> = KINDS.iter().copied().filter(|k| n.attrs.contains_key(*k)).collect();
    if present.len() != 1 {
        op_bail!("Constant needs exactly one value attribute, found {present:?}");
    }
    let bad = || -> OpResult<Value<T>> { op_bail!("Constant attribute '{}' has the wrong type", present[0]) };
    let value = match present[0] {
        "value" => match n.attr_tensor("value") {
            Some(t) => tensor_value(t)?,
            None => bad()?,
        },
        "value_float" => match n.attr_float("value_float") {
            Some(v) => Value::F(ArrayD::from_elem(IxDyn(&[]), T::of(v as f64))),
            None => bad()?,
        },
        "value_floats" => match n.attr_floats("value_floats") {
            Some(v) => Value::F(ndarray::Array1::from_iter(v.iter().map(|&x| T::of(x as f64))).into_dyn()),
            None => bad()?,
        },
        "value_int" => match n.attr_int("value_int") {
            Some(v) => Value::I(ArrayD::from_elem(IxDyn(&[]), v)),
            None => bad()?,
        },
        "value_ints" => match n.attr_ints("value_ints") {
            Some(v) => Value::I(ndarray::Array1::from_vec(v.to_vec()).into_dyn()),
            None => bad()?,
        },
        other => op_bail!("Constant attribute '{other}' is not supported"),
    };
    Ok(Box::new(Constant { value }))
}

struct ConstantOfShape<T> {
    /// The fill value: a one-element F or I array.
    value: Value<T>,
}

impl<T: Elem> Op<T> for ConstantOfShape<T> {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let spec = input(inputs, 0)?.ints()?;
        let mut shape = Vec::with_capacity(spec.len());
        for &d in &spec {
            if d < 0 {
                op_bail!("ConstantOfShape shape {spec:?} has a negative dim");
            }
            shape.push(d as usize);
        }
        check_size(&shape)?;
        let y = match &self.value {
            Value::F(a) => Value::F(ArrayD::from_elem(IxDyn(&shape), a.iter().next().copied().unwrap_or_else(T::zero))),
            Value::I(a) => Value::I(ArrayD::from_elem(IxDyn(&shape), a.iter().next().copied().unwrap_or(0))),
        };
        Ok(vec![y])
    }
}

pub fn build_constant_of_shape<T: Elem>(n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let value = match n.attr_tensor("value") {
        Some(t) => {
            let v = tensor_value(t)?;
            if v.shape().iter().product::<usize>() != 1 {
                op_bail!("ConstantOfShape value must have one element, got shape {:?}", t.shape);
            }
            v
        }
        None if n.attrs.contains_key("value") => op_bail!("ConstantOfShape attribute 'value' is not a tensor"),
        None => Value::F(ArrayD::from_elem(IxDyn(&[1]), T::zero())),
    };
    Ok(Box::new(ConstantOfShape { value }))
}

// ---------------------------------------------------------------- Shape, Size

struct ShapeOp {
    start: i64,
    end: Option<i64>,
}

impl<T: Elem> Op<T> for ShapeOp {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let shape = input(inputs, 0)?.shape();
        let r = shape.len() as i64;
        // Negative start/end count from the end; both then clamp to [0, rank].
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let (s, e) = (clamp(self.start), clamp(self.end.unwrap_or(r)));
        let dims: Vec<i64> = if s < e { shape[s..e].iter().map(|&d| d as i64).collect() } else { vec![] };
        Ok(vec![Value::I(ndarray::Array1::from_vec(dims).into_dyn())])
    }

    fn stops_gradient(&self) -> bool {
        true
    }
}

pub fn build_shape<T: Elem>(n: &Node, c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let (start, end) = if c.opset >= 15 { (n.attr_int("start").unwrap_or(0), n.attr_int("end")) } else { (0, None) };
    Ok(Box::new(ShapeOp { start, end }))
}

struct Size;

impl<T: Elem> Op<T> for Size {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let n: usize = input(inputs, 0)?.shape().iter().product();
        Ok(vec![Value::I(ArrayD::from_elem(IxDyn(&[]), n as i64))])
    }

    fn stops_gradient(&self) -> bool {
        true
    }
}

pub fn build_size<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(Size))
}

#[cfg(test)]
mod tests {
    //! Gradients are checked by `check_rule` (central differences in f64; all
    //! these ops are linear in their data input, so the differences are exact
    //! up to rounding). Forward values are checked against hand-worked cases.

    use super::super::testutil::{check_rule, f, floats, ints, node, run_forward};
    use super::super::{BuildCtx, OpError, Value, registry};
    use crate::model::graph::{Attr, Elements, TensorData};
    use ndarray::{ArrayD, IxDyn, arr0};

    fn iv(shape: &[usize], v: &[i64]) -> Option<Value<f64>> {
        Some(Value::I(ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap()))
    }

    fn fv(out: &Value<f64>) -> Vec<f64> {
        out.float().unwrap().iter().copied().collect()
    }

    /// The error from building or running `node` (panics if both succeed).
    fn error(node: &crate::model::graph::Node, opset: i64, inputs: &[Option<Value<f64>>]) -> OpError {
        let entry = registry::<f64>().into_iter().find(|e| e.name == node.op_type).unwrap();
        let op = match (entry.build)(node, &BuildCtx { opset }) {
            Ok(op) => op,
            Err(e) => return e,
        };
        let args: Vec<_> = inputs.iter().map(|v| v.as_ref()).collect();
        match op.forward(&args) {
            Ok(v) => panic!("{} unexpectedly succeeded: {v:?}", node.op_type),
            Err(e) => e,
        }
    }

    #[test]
    fn cast_to_float_is_identity_and_to_int_truncates() {
        let y = check_rule(&node("Cast", &[("to", Attr::Int(1))]), 13, vec![f(&[2, 3], 1)], &[true]);
        assert_eq!(y.shape(), &[2, 3]);
        let n = node("Cast", &[("to", Attr::Int(7))]);
        let out = run_forward(&n, 13, &[floats(&[4], &[-1.7, 2.9, -0.2, 3.0])]);
        assert_eq!(out[0], Value::I(ndarray::arr1(&[-1, 2, 0, 3]).into_dyn()));
        let out = run_forward(&node("Cast", &[("to", Attr::Int(2))]), 13, &[ints(&[-1, 256, 7])]);
        assert_eq!(out[0], Value::I(ndarray::arr1(&[255, 0, 7]).into_dyn()));
        let out = run_forward(&node("Cast", &[("to", Attr::Int(9))]), 13, &[floats(&[2], &[0.0, -0.5])]);
        assert_eq!(out[0], Value::I(ndarray::arr1(&[0, 1]).into_dyn()));
        let out = run_forward(&node("Cast", &[("to", Attr::Int(1))]), 13, &[ints(&[3, -2])]);
        assert_eq!(fv(&out[0]), vec![3.0, -2.0]);
        let reg = registry::<f64>().into_iter().find(|e| e.name == "Cast").unwrap();
        let int = (reg.build)(&node("Cast", &[("to", Attr::Int(7))]), &BuildCtx { opset: 13 }).unwrap();
        let flt = (reg.build)(&node("Cast", &[("to", Attr::Int(10))]), &BuildCtx { opset: 13 }).unwrap();
        assert!(int.stops_gradient() && !flt.stops_gradient());
        error(&node("Cast", &[("to", Attr::Int(8))]), 13, &[f(&[1], 1)]);
    }

    #[test]
    fn flatten_axes() {
        for (axis, shape) in [(0, [1, 12]), (1, [2, 6]), (-1, [6, 2]), (3, [12, 1])] {
            let y = check_rule(&node("Flatten", &[("axis", Attr::Int(axis))]), 13, vec![f(&[2, 3, 2], 2)], &[true]);
            assert_eq!(y.shape(), &shape, "axis {axis}");
        }
        error(&node("Flatten", &[("axis", Attr::Int(4))]), 13, &[f(&[2, 3, 2], 2)]);
    }

    #[test]
    fn reshape_zero_and_infer() {
        let y = check_rule(&node("Reshape", &[]), 13, vec![f(&[2, 3, 2], 3), ints(&[0, -1])], &[true, false]);
        assert_eq!(y.shape(), &[2, 6]);
        let y = check_rule(&node("Reshape", &[]), 13, vec![f(&[2, 3, 2], 3), ints(&[-1, 0, 2])], &[true, false]);
        assert_eq!(y.shape(), &[2, 3, 2]);
        let n = node("Reshape", &[("allowzero", Attr::Int(1))]);
        let out = run_forward(&n, 14, &[floats(&[0, 3], &[]), ints(&[3, 0])]);
        assert_eq!(out[0].shape(), &[3, 0]);
        let old = node("Reshape", &[("shape", Attr::Ints(vec![3, 4]))]);
        assert_eq!(check_rule(&old, 4, vec![f(&[2, 6], 3)], &[true]).shape(), &[3, 4]);
        error(&node("Reshape", &[]), 13, &[f(&[2, 3], 3), ints(&[4, -1])]);
        error(&node("Reshape", &[]), 13, &[f(&[2, 3], 3), ints(&[5])]);
        error(&node("Reshape", &[]), 13, &[f(&[2, 3], 3), ints(&[-1, -1])]);
        error(&node("Reshape", &[]), 13, &[f(&[2, 3], 3), ints(&[0, 0, 0])]);
    }

    #[test]
    fn transpose_perm_and_default() {
        let n = node("Transpose", &[("perm", Attr::Ints(vec![2, 0, 1]))]);
        let y = check_rule(&n, 13, vec![f(&[2, 3, 4], 4)], &[true]);
        assert_eq!(y.shape(), &[4, 2, 3]);
        let y = check_rule(&node("Transpose", &[]), 13, vec![f(&[2, 3], 4)], &[true]);
        assert_eq!(y.shape(), &[3, 2]);
        let out = run_forward(&node("Transpose", &[]), 13, &[iv(&[2, 2], &[1, 2, 3, 4])]);
        assert_eq!(out[0], Value::I(ndarray::arr2(&[[1, 3], [2, 4]]).into_dyn()));
        error(&node("Transpose", &[("perm", Attr::Ints(vec![0, 0]))]), 13, &[f(&[2, 2], 1)]);
        error(&node("Transpose", &[("perm", Attr::Ints(vec![0, 1, 2]))]), 13, &[f(&[2, 2], 1)]);
    }

    #[test]
    fn squeeze_unsqueeze_attr_and_input_axes() {
        let sq = node("Squeeze", &[("axes", Attr::Ints(vec![1]))]);
        assert_eq!(check_rule(&sq, 11, vec![f(&[2, 1, 3, 1], 5)], &[true]).shape(), &[2, 3, 1]);
        assert_eq!(check_rule(&node("Squeeze", &[]), 11, vec![f(&[2, 1, 3, 1], 5)], &[true]).shape(), &[2, 3]);
        let y = check_rule(&node("Squeeze", &[]), 13, vec![f(&[2, 1, 3, 1], 5), ints(&[-1])], &[true, false]);
        assert_eq!(y.shape(), &[2, 1, 3]);
        assert_eq!(check_rule(&node("Squeeze", &[]), 13, vec![f(&[2, 1, 3, 1], 5)], &[true]).shape(), &[2, 3]);
        let un = node("Unsqueeze", &[("axes", Attr::Ints(vec![0, -1]))]);
        assert_eq!(check_rule(&un, 11, vec![f(&[2, 3], 6)], &[true]).shape(), &[1, 2, 3, 1]);
        let y = check_rule(&node("Unsqueeze", &[]), 13, vec![f(&[2, 3], 6), ints(&[1, 3])], &[true, false]);
        assert_eq!(y.shape(), &[2, 1, 3, 1]);
        error(&node("Squeeze", &[]), 13, &[f(&[2, 1], 1), ints(&[2])]);
        error(&node("Squeeze", &[]), 13, &[f(&[2, 1], 1), ints(&[0])]);
        error(&node("Unsqueeze", &[]), 13, &[f(&[2], 1), ints(&[0, 0])]);
        error(&node("Unsqueeze", &[]), 13, &[f(&[2], 1), ints(&[3])]);
    }

    #[test]
    fn concat_three_inputs_axis_1() {
        let n = node("Concat", &[("axis", Attr::Int(1))]);
        let y = check_rule(&n, 13, vec![f(&[2, 1, 2], 7), f(&[2, 2, 2], 8), f(&[2, 3, 2], 9)], &[true, true, true]);
        assert_eq!(y.shape(), &[2, 6, 2]);
        // Values and layout, by hand: per batch row, a's block then b's. The
        // result must be standard layout (consumers take a slice of it).
        let a = floats(&[2, 1, 2], &[0.0, 1.0, 10.0, 11.0]);
        let b = floats(&[2, 2, 2], &[2.0, 3.0, 4.0, 5.0, 12.0, 13.0, 14.0, 15.0]);
        let out = run_forward(&node("Concat", &[("axis", Attr::Int(1))]), 13, &[a, b]);
        let Value::F(y) = &out[0] else { panic!("Concat of floats gave {:?}", out[0]) };
        assert!(y.is_standard_layout());
        assert_eq!(fv(&out[0]), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0]);
        let n = node("Concat", &[("axis", Attr::Int(-1))]);
        let y = check_rule(&n, 13, vec![f(&[2, 1], 7), f(&[2, 2], 8)], &[false, true]);
        assert_eq!(y.shape(), &[2, 3]);
        let out = run_forward(&node("Concat", &[("axis", Attr::Int(0))]), 13, &[ints(&[1]), ints(&[]), ints(&[2, 3])]);
        assert_eq!(out[0], Value::I(ndarray::arr1(&[1, 2, 3]).into_dyn()));
        error(&node("Concat", &[("axis", Attr::Int(0))]), 13, &[f(&[2, 1], 1), f(&[2, 2], 1)]);
        error(&node("Concat", &[("axis", Attr::Int(0))]), 13, &[f(&[2], 1), ints(&[2])]);
    }

    #[test]
    fn slice_values_steps_and_clamping() {
        let x: Vec<f64> = (0..12).map(|v| v as f64).collect();
        let x = floats(&[3, 4], &x);
        // Negative step from the last column to the front: columns 3, 1.
        let out =
            run_forward(&node("Slice", &[]), 13, &[x.clone(), ints(&[-1]), ints(&[i64::MIN]), ints(&[1]), ints(&[-2])]);
        assert_eq!(fv(&out[0]), vec![3.0, 1.0, 7.0, 5.0, 11.0, 9.0]);
        // Out-of-range ends clamp; axes input picks rows.
        let out = run_forward(&node("Slice", &[]), 13, &[x.clone(), ints(&[1]), ints(&[100]), ints(&[0])]);
        assert_eq!(out[0].shape(), &[2, 4]);
        assert_eq!(fv(&out[0])[0], 4.0);
        // Start past the end with a negative step clamps to the last element.
        let out = run_forward(
            &node("Slice", &[]),
            13,
            &[x.clone(), ints(&[10, 9]), ints(&[0, -10]), ints(&[0, 1]), ints(&[-1, -3])],
        );
        assert_eq!(fv(&out[0]), vec![11.0, 8.0, 7.0, 4.0]);
        // Empty selection.
        let out = run_forward(&node("Slice", &[]), 13, &[x.clone(), ints(&[2]), ints(&[1]), ints(&[1])]);
        assert_eq!(out[0].shape(), &[3, 0]);
        // Integer tensors (shape subgraphs).
        let out = run_forward(&node("Slice", &[]), 13, &[ints(&[5, 6, 7, 8]), ints(&[-2]), ints(&[i64::MAX])]);
        assert_eq!(out[0], Value::I(ndarray::arr1(&[7, 8]).into_dyn()));
        // Opset 9 attributes.
        let n = node("Slice", &[("starts", Attr::Ints(vec![0, 1])), ("ends", Attr::Ints(vec![2, -1]))]);
        assert_eq!(run_forward(&n, 9, std::slice::from_ref(&x))[0].shape(), &[2, 2]);

        let y = check_rule(
            &node("Slice", &[]),
            13,
            vec![f(&[3, 4], 10), ints(&[-1, 2]), ints(&[i64::MIN, 0]), ints(&[1, 0]), ints(&[-2, -1])],
            &[true],
        );
        assert_eq!(y.shape(), &[2, 2]);
        let y = check_rule(&node("Slice", &[]), 13, vec![f(&[3, 4], 11), ints(&[1]), ints(&[3]), ints(&[-1])], &[true]);
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(check_rule(&n, 9, vec![f(&[3, 4], 12)], &[true]).shape(), &[2, 2]);

        error(&node("Slice", &[]), 13, &[f(&[3, 4], 1), ints(&[0]), ints(&[1]), ints(&[2])]);
        error(&node("Slice", &[]), 13, &[f(&[3, 4], 1), ints(&[0]), ints(&[1]), ints(&[0]), ints(&[0])]);
        error(&node("Slice", &[]), 13, &[f(&[3, 4], 1), ints(&[0, 0]), ints(&[1])]);
    }

    #[test]
    fn gather_values_and_scatter_add() {
        let x: Vec<f64> = (0..12).map(|v| v as f64).collect();
        let x = floats(&[3, 4], &x);
        let n = node("Gather", &[("axis", Attr::Int(1))]);
        let out = run_forward(&n, 13, &[x.clone(), iv(&[2, 2], &[0, -1, 3, 0])]);
        assert_eq!(out[0].shape(), &[3, 2, 2]);
        assert_eq!(fv(&out[0])[..4], [0.0, 3.0, 3.0, 0.0]);
        let out = run_forward(&node("Gather", &[]), 13, &[x.clone(), Some(Value::I(arr0(-1).into_dyn()))]);
        assert_eq!(fv(&out[0]), vec![8.0, 9.0, 10.0, 11.0]);
        // Repeated indices accumulate in the backward pass.
        let y = check_rule(&n, 13, vec![f(&[3, 4], 13), iv(&[2, 2], &[0, -1, 3, 0])], &[true, false]);
        assert_eq!(y.shape(), &[3, 2, 2]);
        let y = check_rule(&node("Gather", &[]), 13, vec![f(&[3, 2], 14), iv(&[], &[2])], &[true, false]);
        assert_eq!(y.shape(), &[2]);
        error(&n, 13, &[x.clone(), ints(&[4])]);
        error(&n, 13, &[x.clone(), ints(&[-5])]);
        error(&node("Gather", &[("axis", Attr::Int(2))]), 13, &[x, ints(&[0])]);
    }

    #[test]
    fn pad_modes_values() {
        let x = floats(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let pads = ints(&[0, 2, 0, 1]);
        let cases = [
            ("constant", vec![9.0, 9.0, 1.0, 2.0, 3.0, 9.0]),
            ("reflect", vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0]),
            ("edge", vec![1.0, 1.0, 1.0, 2.0, 3.0, 3.0]),
            ("wrap", vec![2.0, 3.0, 1.0, 2.0, 3.0, 1.0]),
        ];
        for (mode, row0) in cases {
            let n = node("Pad", &[("mode", Attr::Str(mode.into()))]);
            let out = run_forward(&n, 11, &[x.clone(), pads.clone(), floats(&[], &[9.0])]);
            assert_eq!(out[0].shape(), &[2, 6], "{mode}");
            assert_eq!(fv(&out[0])[..6], row0, "{mode}");
        }
        // Negative pads crop; opset 2 attributes.
        let n = node("Pad", &[("pads", Attr::Ints(vec![-1, 1, 0, -1])), ("value", Attr::Float(7.0))]);
        assert_eq!(fv(&run_forward(&n, 2, std::slice::from_ref(&x))[0]), vec![7.0, 4.0, 5.0]);
        // Opset 18 axes input, integer data.
        let n = node("Pad", &[]);
        let out = run_forward(&n, 18, &[iv(&[1, 2], &[1, 2]), ints(&[1, 0]), iv(&[], &[5]), ints(&[-1])]);
        assert_eq!(out[0], Value::I(ndarray::arr2(&[[5, 1, 2]]).into_dyn()));
        error(&n, 11, &[x.clone(), ints(&[1, 1])]);
        error(&n, 11, &[x.clone(), ints(&[0, -2, 0, -2])]);
        error(&node("Pad", &[("mode", Attr::Str("reflect".into()))]), 11, &[floats(&[1, 0], &[]), ints(&[0, 1, 0, 0])]);
    }

    #[test]
    fn pad_gradients() {
        for mode in ["constant", "reflect", "edge", "wrap"] {
            let n = node("Pad", &[("mode", Attr::Str(mode.into()))]);
            let y = check_rule(&n, 11, vec![f(&[3, 4], 15), ints(&[1, 3, 2, -1])], &[true, false]);
            assert_eq!(y.shape(), &[6, 6], "{mode}");
        }
        // The constant itself: dc sums the padded positions of dY.
        let n = node("Pad", &[]);
        check_rule(&n, 11, vec![f(&[2, 3], 16), ints(&[1, 0, 0, 2]), floats(&[], &[0.5])], &[true, false, true]);
        let n = node("Pad", &[("pads", Attr::Ints(vec![1, 1, 1, 1])), ("mode", Attr::Str("reflect".into()))]);
        check_rule(&n, 10, vec![f(&[3, 3], 17)], &[true]);
    }

    #[test]
    fn constants_shape_and_size() {
        let t = TensorData { shape: vec![2], data: Elements::Int(vec![3, 4]) };
        let out = run_forward(&node("Constant", &[("value", Attr::Tensor(t))]), 13, &[]);
        assert_eq!(out[0], Value::I(ndarray::arr1(&[3, 4]).into_dyn()));
        let out = run_forward(&node("Constant", &[("value_float", Attr::Float(1.5))]), 13, &[]);
        assert_eq!(out[0], Value::F(arr0(1.5).into_dyn()));
        let out = run_forward(&node("Constant", &[("value_floats", Attr::Floats(vec![1.0, 2.0]))]), 13, &[]);
        assert_eq!(fv(&out[0]), vec![1.0, 2.0]);
        let out = run_forward(&node("Constant", &[("value_int", Attr::Int(-3))]), 13, &[]);
        assert_eq!(out[0], Value::I(arr0(-3).into_dyn()));
        let out = run_forward(&node("Constant", &[("value_ints", Attr::Ints(vec![1, 2]))]), 13, &[]);
        assert_eq!(out[0], Value::I(ndarray::arr1(&[1, 2]).into_dyn()));
        error(&node("Constant", &[]), 13, &[]);
        error(&node("Constant", &[("value_int", Attr::Int(1)), ("value_float", Attr::Float(1.0))]), 13, &[]);

        let out = run_forward(&node("ConstantOfShape", &[]), 13, &[ints(&[2, 3])]);
        assert_eq!(out[0], Value::F(ArrayD::zeros(IxDyn(&[2, 3]))));
        let t = TensorData { shape: vec![1], data: Elements::Int(vec![7]) };
        let out = run_forward(&node("ConstantOfShape", &[("value", Attr::Tensor(t))]), 13, &[ints(&[2])]);
        assert_eq!(out[0], Value::I(ndarray::arr1(&[7, 7]).into_dyn()));
        error(&node("ConstantOfShape", &[]), 13, &[ints(&[2, -1])]);
        error(&node("ConstantOfShape", &[]), 13, &[ints(&[1 << 40, 1 << 40])]);

        let x = f(&[2, 3, 4, 5], 1);
        assert_eq!(
            run_forward(&node("Shape", &[]), 13, std::slice::from_ref(&x))[0],
            Value::I(ndarray::arr1(&[2, 3, 4, 5]).into_dyn())
        );
        let n = node("Shape", &[("start", Attr::Int(1)), ("end", Attr::Int(-1))]);
        assert_eq!(run_forward(&n, 15, std::slice::from_ref(&x))[0], Value::I(ndarray::arr1(&[3, 4]).into_dyn()));
        let n = node("Shape", &[("start", Attr::Int(-10)), ("end", Attr::Int(10))]);
        assert_eq!(run_forward(&n, 15, std::slice::from_ref(&x))[0].shape(), &[4]);
        assert_eq!(run_forward(&node("Size", &[]), 13, &[x])[0], Value::I(arr0(120).into_dyn()));
    }

    /// The shape subgraph PyTorch emits for `x.view(x.size(0), -1)`, evaluated
    /// op by op on integer tensors.
    #[test]
    fn shape_gather_unsqueeze_concat_reshape_chain() {
        let x = f(&[2, 3, 4], 20);
        let shape = run_forward(&node("Shape", &[]), 13, std::slice::from_ref(&x)).remove(0);
        let batch =
            run_forward(&node("Gather", &[("axis", Attr::Int(0))]), 13, &[Some(shape), iv(&[], &[0])]).remove(0);
        assert_eq!(batch, Value::I(arr0(2).into_dyn()));
        let batch = run_forward(&node("Unsqueeze", &[]), 13, &[Some(batch), ints(&[0])]).remove(0);
        let target = run_forward(&node("Concat", &[("axis", Attr::Int(0))]), 13, &[Some(batch), ints(&[-1])]).remove(0);
        assert_eq!(target, Value::I(ndarray::arr1(&[2, -1]).into_dyn()));
        let y = run_forward(&node("Reshape", &[]), 13, &[x.clone(), Some(target)]).remove(0);
        assert_eq!(y.shape(), &[2, 12]);
        assert_eq!(fv(&y), fv(x.as_ref().unwrap()));
    }
}
