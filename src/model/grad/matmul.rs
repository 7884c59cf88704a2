//! Matrix products for the fully connected ops (Gemm), where one operand is
//! a weight matrix and the other has one row per sample.
//!
//! matrixmultiply packs both operands into tiles before multiplying, which
//! pays off for the square-ish products of a convolution but not here: a
//! classifier head at batch 1 is a matrix–vector product, where packing
//! copies the whole weight matrix per call and the 16-row micro-kernel does
//! one useful row. These kernels instead compute each output row on its own,
//! as dot products with the rows of a row-major matrix (y = a·Wᵀ) or as
//! scaled row sums (y = a·W). Each output element is summed in a fixed order
//! that does not depend on how many rows the batch has, so a sample's result
//! is the same whatever batch it is evaluated in.
//!
//! On x86-64 CPUs with AVX2 the same code is compiled a second time with
//! AVX2 enabled and chosen at run time (the default target has only SSE2).
//! Only the vector width changes, not the order of the additions, and FMA is
//! not enabled, so both versions return bit-identical results.

use super::Elem;
use ndarray::{ArrayView2, ArrayViewMut2};

/// Independent partial sums in [`dot`]: enough to fill the vector registers
/// and hide the latency of the additions; their order is fixed.
const LANES: usize = 32;

/// Σ a[i]·b[i], accumulated in [`LANES`] interleaved partial sums that are
/// then added pairwise, in an order independent of the caller.
#[inline(always)]
fn dot<T: Elem>(a: &[T], b: &[T]) -> T {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [T::zero(); LANES];
    let (ac, ar) = a.as_chunks::<LANES>();
    let (bc, br) = b.as_chunks::<LANES>();
    if !lanes_f32_avx2(ac, bc, &mut acc) {
        for (x, y) in ac.iter().zip(bc) {
            for l in 0..LANES {
                acc[l] += x[l] * y[l];
            }
        }
    }
    for (l, (&x, &y)) in ar.iter().zip(br).enumerate() {
        acc[l] += x * y;
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0]
}

/// The main loop of [`dot`] for f32 on AVX2, written with intrinsics
/// because the compiler does not vectorise the generic loop well: four
/// 8-lane registers hold acc[0..32] in order, each lane multiplied and then
/// added exactly as in the generic loop (no FMA), so the partial sums are
/// bit-identical. Returns false (doing nothing) for f64 or without AVX2.
#[inline(always)]
fn lanes_f32_avx2<T: Elem>(a: &[[T; LANES]], b: &[[T; LANES]], acc: &mut [T; LANES]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: T is f32 (checked above), so these are the same memory with
        // the same layout; AVX2 is present (checked above).
        unsafe {
            let a = std::slice::from_raw_parts(a.as_ptr().cast::<[f32; LANES]>(), a.len());
            let b = std::slice::from_raw_parts(b.as_ptr().cast::<[f32; LANES]>(), b.len());
            let acc = &mut *(acc as *mut [T; LANES]).cast::<[f32; LANES]>();
            lanes_f32_avx2_impl(a, b, acc);
        }
        return true;
    }
    let _ = (a, b, acc);
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn lanes_f32_avx2_impl(a: &[[f32; LANES]], b: &[[f32; LANES]], acc: &mut [f32; LANES]) {
    use std::arch::x86_64::{__m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_storeu_ps};
    // SAFETY (all pointer reads and writes below): each pointer is to an
    // array of LANES = 32 f32, read or written 8 at offsets 0, 8, 16, 24.
    unsafe {
        let mut s: [__m256; 4] = [
            _mm256_loadu_ps(acc.as_ptr()),
            _mm256_loadu_ps(acc.as_ptr().add(8)),
            _mm256_loadu_ps(acc.as_ptr().add(16)),
            _mm256_loadu_ps(acc.as_ptr().add(24)),
        ];
        for (x, y) in a.iter().zip(b) {
            for (k, sk) in s.iter_mut().enumerate() {
                let p = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(8 * k)), _mm256_loadu_ps(y.as_ptr().add(8 * k)));
                *sk = _mm256_add_ps(*sk, p);
            }
        }
        for (k, sk) in s.iter().enumerate() {
            _mm256_storeu_ps(acc.as_mut_ptr().add(8 * k), *sk);
        }
    }
}

/// c = α·a·b + β·c (the contract of ndarray's `general_mat_mul`, β = 0
/// ignoring what c held), row by row: for each row i of a,
/// c[i, j] = β·c[i, j] + α·Σ_k a[i, k]·b[k, j].
///
/// When b's columns are contiguous (b = Wᵀ of a row-major W) each entry is a
/// [`dot`]; when its rows are (b = W), row i of c accumulates
/// a[i, k]·b[k, ·] over k in order. Any other layout is made contiguous first.
pub(super) fn row_mat_mul<T: Elem>(
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    c: ArrayViewMut2<'_, T>,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { row_mat_mul_avx2(alpha, a, b, beta, c) };
    }
    row_mat_mul_any(alpha, a, b, beta, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_mat_mul_avx2<T: Elem>(alpha: T, a: ArrayView2<'_, T>, b: ArrayView2<'_, T>, beta: T, c: ArrayViewMut2<'_, T>) {
    row_mat_mul_any(alpha, a, b, beta, c)
}

#[inline(always)]
fn row_mat_mul_any<T: Elem>(
    alpha: T,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    beta: T,
    mut c: ArrayViewMut2<'_, T>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    debug_assert_eq!(b.nrows(), k);
    debug_assert_eq!(c.dim(), (m, n));
    let a = a.as_standard_layout();
    let Some(a) = a.as_slice() else { unreachable!("as_standard_layout is contiguous") };
    // Output rows are written through a contiguous buffer when c is strided.
    let mut row_out = vec![T::zero(); n];
    let bt = b.t();
    if let Some(bt) = bt.as_slice() {
        // b[k, j] = bt[j·k_len + k]: column j of b is row j of bt.
        for i in 0..m {
            let ai = &a[i * k..(i + 1) * k];
            for (j, out) in row_out.iter_mut().enumerate() {
                *out = alpha * dot(ai, &bt[j * k..(j + 1) * k]);
            }
            store(&mut c, i, &row_out, beta);
        }
        return;
    }
    let b = b.as_standard_layout();
    let Some(b) = b.as_slice() else { unreachable!("as_standard_layout is contiguous") };
    for i in 0..m {
        row_out.fill(T::zero());
        for (kk, bk) in b.chunks_exact(n.max(1)).take(k).enumerate() {
            let s = a[i * k + kk];
            for (o, &v) in row_out.iter_mut().zip(bk) {
                *o += s * v;
            }
        }
        for o in row_out.iter_mut() {
            *o = alpha * *o;
        }
        store(&mut c, i, &row_out, beta);
    }
}

/// c[i, ·] = row + β·c[i, ·] (β = 0: c's old values are not read, so a NaN
/// there does not survive).
fn store<T: Elem>(c: &mut ArrayViewMut2<'_, T>, i: usize, row: &[T], beta: T) {
    let mut ci = c.row_mut(i);
    if beta == T::zero() {
        for (o, &v) in ci.iter_mut().zip(row) {
            *o = v;
        }
    } else {
        for (o, &v) in ci.iter_mut().zip(row) {
            *o = v + beta * *o;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, linalg::general_mat_mul};

    fn filled(r: usize, c: usize, seed: u64) -> Array2<f64> {
        let mut s = seed;
        Array2::from_shape_fn((r, c), |_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
    }

    /// Against ndarray's GEMM for every layout the kernels take (b = W and
    /// b = Wᵀ, a transposed, a strided c), sizes around the lane width, and
    /// β = 0 / β ≠ 0. In f64 both compute the same sums in different orders,
    /// so they agree to rounding (1e-12 on entries of order 1–10).
    #[test]
    fn row_mat_mul_equals_gemm() {
        for (m, k, n) in [(1, 1, 1), (1, 17, 3), (3, 16, 5), (4, 33, 2), (7, 100, 9), (2, 0, 3)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let a0 = if ta { filled(k, m, 1) } else { filled(m, k, 1) };
                let b0 = if tb { filled(n, k, 2) } else { filled(k, n, 2) };
                let a = if ta { a0.t() } else { a0.view() };
                let b = if tb { b0.t() } else { b0.view() };
                for beta in [0.0, 0.7] {
                    let c0 = filled(n, m, 3);
                    let mut want = c0.t().to_owned();
                    general_mat_mul(1.3, &a, &b, beta, &mut want);
                    let mut got = c0.clone();
                    row_mat_mul(1.3, a, b, beta, got.view_mut().reversed_axes());
                    for (g, w) in got.t().iter().zip(&want) {
                        assert!((g - w).abs() < 1e-12, "{m}×{k}×{n} ta={ta} tb={tb} β={beta}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn beta_zero_ignores_nan_in_c() {
        let (a, b) = (filled(2, 3, 4), filled(3, 2, 5));
        let mut c = Array2::from_elem((2, 2), f64::NAN);
        row_mat_mul(1.0, a.view(), b.view(), 0.0, c.view_mut());
        assert!(c.iter().all(|v| v.is_finite()));
    }

    /// The AVX2 main loop leaves the same partial sums, bit for bit, as the
    /// portable one (on a CPU without AVX2 both sides are the portable loop).
    #[test]
    fn avx2_lanes_equal_the_portable_loop() {
        for n in [0usize, 1, 31, 32, 33, 100, 1568] {
            let a: Vec<f32> = filled(1, n.max(1), 8).iter().map(|&v| v as f32 * 3.0).take(n).collect();
            let b: Vec<f32> = filled(1, n.max(1), 9).iter().map(|&v| v as f32).take(n).collect();
            let (ac, _) = a.as_chunks::<LANES>();
            let (bc, _) = b.as_chunks::<LANES>();
            let mut portable = [0.0f32; LANES];
            for (x, y) in ac.iter().zip(bc) {
                for l in 0..LANES {
                    portable[l] += x[l] * y[l];
                }
            }
            let mut fast = [0.0f32; LANES];
            if !lanes_f32_avx2(ac, bc, &mut fast) {
                fast = portable;
            }
            assert_eq!(fast.map(f32::to_bits), portable.map(f32::to_bits), "n = {n}");
        }
    }

    /// A row's result must not depend on the other rows of its batch.
    #[test]
    fn a_row_is_computed_alike_in_any_batch() {
        let (a, w) = (filled(5, 37, 6).mapv(|v| v as f32), filled(4, 37, 7).mapv(|v| v as f32));
        let mut all = Array2::<f32>::zeros((5, 4));
        row_mat_mul(1.0, a.view(), w.t(), 0.0, all.view_mut());
        for i in 0..5 {
            let mut one = Array2::<f32>::zeros((1, 4));
            row_mat_mul(1.0, a.slice(ndarray::s![i..i + 1, ..]), w.t(), 0.0, one.view_mut());
            assert_eq!(one.row(0).to_vec(), all.row(i).to_vec());
        }
    }
}
