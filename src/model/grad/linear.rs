//! Gemm and MatMul. Both are bilinear, so each operand's gradient is the
//! other operand multiplied by the output gradient. Gemm's products with the
//! weight matrix go through `matmul::row_mat_mul` (one output row per sample,
//! no packing); MatMul's through ndarray's `general_mat_mul`
//! (matrixmultiply's sgemm/dgemm).

use super::matmul::row_mat_mul;
use super::value::{broadcast_shape, finput, reduce_to_shape, reshape};
use super::{Backward, BuildCtx, Elem, Op, OpResult, Value, op_bail};
use crate::model::graph::Node;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, Array3, ArrayD, ArrayView2, Ix2, IxDyn};

fn as2<'a, T: Elem>(a: &'a ArrayD<T>, what: &str) -> OpResult<ArrayView2<'a, T>> {
    match a.view().into_dimensionality::<Ix2>() {
        Ok(v) => Ok(v),
        Err(_) => op_bail!("{what} must be 2-D, got shape {:?}", a.shape()),
    }
}

/// Y = α·A'·B' + β·C, A' = Aᵀ if transA, B' = Bᵀ if transB; C broadcasts to Y.
struct Gemm {
    alpha: f64,
    beta: f64,
    trans_a: bool,
    trans_b: bool,
}

impl<T: Elem> Op<T> for Gemm {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let a = as2(finput(inputs, 0)?, "Gemm input A")?;
        let b = as2(finput(inputs, 1)?, "Gemm input B")?;
        let a = if self.trans_a { a.t() } else { a };
        let b = if self.trans_b { b.t() } else { b };
        if a.ncols() != b.nrows() {
            op_bail!("Gemm: A' is {:?} and B' is {:?}", a.dim(), b.dim());
        }
        let mut y = Array2::<T>::zeros((a.nrows(), b.ncols()));
        if let Some(c) = inputs.get(2).copied().flatten() {
            let c = c.float()?;
            match c.broadcast(IxDyn(&[a.nrows(), b.ncols()])) {
                Some(cb) => y.assign(
                    &cb.into_dimensionality::<Ix2>()
                        .map_err(|e| super::OpError(e.to_string()))?
                        .mapv(|v| v * T::of(self.beta)),
                ),
                None => op_bail!("Gemm: C of shape {:?} does not broadcast to {:?}", c.shape(), y.dim()),
            }
        }
        row_mat_mul(T::of(self.alpha), a, b, T::one(), y.view_mut());
        Ok(vec![Value::F(y.into_dyn())])
    }

    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        // dA' = α·g·B'ᵀ, dB' = α·A'ᵀ·g, dC = β·g summed to C's shape;
        // a transposed operand gets the transposed gradient.
        let a = as2(finput(ctx.inputs, 0)?, "Gemm input A")?;
        let b = as2(finput(ctx.inputs, 1)?, "Gemm input B")?;
        let g = as2(ctx.dout, "Gemm output gradient")?;
        let a1 = if self.trans_a { a.t() } else { a };
        let b1 = if self.trans_b { b.t() } else { b };
        let alpha = T::of(self.alpha);
        let mut out = vec![None; ctx.inputs.len()];
        if ctx.wrt[0] {
            let mut da = Array2::<T>::zeros(a.dim());
            if self.trans_a {
                general_mat_mul(alpha, &b1, &g.t(), T::zero(), &mut da);
            } else {
                row_mat_mul(alpha, g, b1.t(), T::zero(), da.view_mut());
            }
            out[0] = Some(da.into_dyn());
        }
        if ctx.wrt[1] {
            let mut db = Array2::<T>::zeros(b.dim());
            if self.trans_b {
                general_mat_mul(alpha, &g.t(), &a1, T::zero(), &mut db);
            } else {
                general_mat_mul(alpha, &a1.t(), &g, T::zero(), &mut db);
            }
            out[1] = Some(db.into_dyn());
        }
        if ctx.wrt.get(2) == Some(&true) {
            let c = finput(ctx.inputs, 2)?;
            out[2] = Some(reduce_to_shape(ctx.dout.mapv(|v| v * T::of(self.beta)), c.shape()));
        }
        Ok(out)
    }
}

pub fn build_gemm<T: Elem>(n: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(Gemm {
        alpha: n.attr_float("alpha").map(f64::from).unwrap_or(1.0),
        beta: n.attr_float("beta").map(f64::from).unwrap_or(1.0),
        trans_a: n.attr_int("transA").unwrap_or(0) != 0,
        trans_b: n.attr_int("transB").unwrap_or(0) != 0,
    }))
}

/// numpy.matmul: 1-D operands are promoted (a row for A, a column for B)
/// and the added axis removed again; leading batch axes broadcast.
struct MatMul;

/// Shapes after 1-D promotion and batch broadcasting.
struct Plan {
    a: Vec<usize>,
    b: Vec<usize>,
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    out: Vec<usize>,
}

fn plan(a: &[usize], b: &[usize]) -> OpResult<Plan> {
    if a.is_empty() || b.is_empty() {
        op_bail!("MatMul of a scalar");
    }
    let pa = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let pb = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (pa[pa.len() - 2], pa[pa.len() - 1]);
    let (k2, n) = (pb[pb.len() - 2], pb[pb.len() - 1]);
    if k != k2 {
        op_bail!("MatMul: shapes {a:?} and {b:?} do not chain");
    }
    let batch = broadcast_shape(&pa[..pa.len() - 2], &pb[..pb.len() - 2])?;
    let mut out = batch.clone();
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(Plan { a: pa, b: pb, batch, m, k, n, out })
}

/// Broadcasts `x` (promoted shape) to `batch + [r, c]` and lays it out as (B, r, c).
fn batched<T: Elem>(x: &ArrayD<T>, promoted: &[usize], batch: &[usize], r: usize, c: usize) -> OpResult<Array3<T>> {
    let x = x.view().into_shape_with_order(IxDyn(promoted)).map_err(|e| super::OpError(e.to_string()))?;
    let mut full = batch.to_vec();
    full.extend([r, c]);
    let b = match x.broadcast(IxDyn(&full)) {
        Some(v) => v.to_owned(),
        None => op_bail!("MatMul: cannot broadcast {promoted:?} to {full:?}"),
    };
    let nb = batch.iter().product();
    b.into_shape_with_order((nb, r, c)).map_err(|e| super::OpError(e.to_string()))
}

fn bmm<T: Elem>(a: &Array3<T>, b: &Array3<T>, ta: bool, tb: bool) -> Array3<T> {
    let (nb, r, c) = {
        let (nb, ar, ac) = a.dim();
        let (_, br, bc) = b.dim();
        (nb, if ta { ac } else { ar }, if tb { br } else { bc })
    };
    let mut y = Array3::<T>::zeros((nb, r, c));
    for ((a, b), mut y) in a.outer_iter().zip(b.outer_iter()).zip(y.outer_iter_mut()) {
        let a = if ta { a.t() } else { a };
        let b = if tb { b.t() } else { b };
        general_mat_mul(T::one(), &a, &b, T::zero(), &mut y);
    }
    y
}

impl<T: Elem> Op<T> for MatMul {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let (a, b) = (finput(inputs, 0)?, finput(inputs, 1)?);
        let p = plan(a.shape(), b.shape())?;
        let y = bmm(&batched(a, &p.a, &p.batch, p.m, p.k)?, &batched(b, &p.b, &p.batch, p.k, p.n)?, false, false);
        Ok(vec![Value::F(reshape(y.into_dyn(), &p.out)?)])
    }

    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        // Per batch: dA = g·Bᵀ, dB = Aᵀ·g; then summed over the batch axes the
        // operand was broadcast along, and the 1-D promotion undone.
        let (a, b) = (finput(ctx.inputs, 0)?, finput(ctx.inputs, 1)?);
        let p = plan(a.shape(), b.shape())?;
        let nb: usize = p.batch.iter().product();
        let g = ctx.dout.as_standard_layout().into_owned();
        let g = reshape(g, &[nb, p.m, p.n])?
            .into_dimensionality::<ndarray::Ix3>()
            .map_err(|e| super::OpError(e.to_string()))?;
        let ab = batched(a, &p.a, &p.batch, p.m, p.k)?;
        let bb = batched(b, &p.b, &p.batch, p.k, p.n)?;
        let unbatch = |d: Array3<T>, promoted: &[usize], r: usize, c: usize, orig: &[usize]| -> OpResult<ArrayD<T>> {
            let mut full = p.batch.clone();
            full.extend([r, c]);
            let d = reshape(d.into_dyn(), &full)?;
            let d = reduce_to_shape(d, promoted);
            reshape(d, orig)
        };
        let mut out = vec![None; ctx.inputs.len()];
        if ctx.wrt[0] {
            out[0] = Some(unbatch(bmm(&g, &bb, false, true), &p.a, p.m, p.k, a.shape())?);
        }
        if ctx.wrt[1] {
            out[1] = Some(unbatch(bmm(&ab, &g, true, false), &p.b, p.k, p.n, b.shape())?);
        }
        Ok(out)
    }
}

pub fn build_matmul<T: Elem>(_: &Node, _: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(MatMul))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{check_rule, f, node};
    use crate::model::graph::Attr;

    #[test]
    fn gemm_all_transposes_alpha_beta() {
        for (ta, tb) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let a = if ta == 1 { vec![4, 3] } else { vec![3, 4] };
            let b = if tb == 1 { vec![5, 4] } else { vec![4, 5] };
            let n = node(
                "Gemm",
                &[
                    ("transA", Attr::Int(ta)),
                    ("transB", Attr::Int(tb)),
                    ("alpha", Attr::Float(0.7)),
                    ("beta", Attr::Float(1.3)),
                ],
            );
            check_rule(&n, 13, vec![f(&a, 1), f(&b, 2), f(&[5], 3)], &[true, true, true]);
            check_rule(&n, 13, vec![f(&a, 4), f(&b, 5), f(&[3, 5], 6)], &[true, true, true]);
        }
        // No C.
        check_rule(&node("Gemm", &[]), 13, vec![f(&[2, 3], 7), f(&[3, 2], 8)], &[true, true]);
    }

    #[test]
    fn matmul_2d_batched_and_promoted() {
        for (sa, sb) in [
            (vec![3, 4], vec![4, 2]),
            (vec![2, 3, 4], vec![2, 4, 5]),
            (vec![2, 1, 3, 4], vec![3, 4, 2]),
            (vec![4], vec![2, 4, 3]),
            (vec![2, 3, 4], vec![4]),
        ] {
            check_rule(&node("MatMul", &[]), 13, vec![f(&sa, 1), f(&sb, 2)], &[true, true]);
        }
    }
}
