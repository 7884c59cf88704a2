//! Pooling: MaxPool, AveragePool (opsets 1–22) and their global forms.
//!
//! The window geometry (auto_pad, pads, strides, dilations, ceil_mode) is the
//! one `conv.rs` resolves for Conv, so the ops agree on output sizes. MaxPool
//! routes the gradient to the first maximum of each window, recomputed from
//! the saved input; AveragePool spreads it over the counted positions with
//! the onnxruntime/PyTorch divisor rule. LpPool and MaxRoiPool are not here.

use super::conv::{Geom, Win, Window, array, attr_flag, checked_len, contiguous};
use super::panel::{as_f32, as_f32_mut, avx512, lane_mask};
use super::simd::Isa;
use super::value::finput;
use super::{Backward, BuildCtx, Elem, Op, OpResult, Value, op_bail};
use crate::model::graph::Node;
use ndarray::ArrayD;

/// Checks a pooling input ([N, C, spatial...] with 1 to 3 spatial axes) and
/// resolves its window.
fn pool_geometry(win: &Window, shape: &[usize]) -> OpResult<Geom> {
    if !(3..=5).contains(&shape.len()) {
        op_bail!("pooling supports 1-D to 3-D inputs (rank 3 to 5), got shape {shape:?}");
    }
    let Some(kernel) = &win.kernel else { op_bail!("attribute 'kernel_shape' is required") };
    let g = win.geometry(&shape[2..], kernel)?;
    checked_len(&out_shape(shape, &g))?;
    Ok(g)
}

fn out_shape(input: &[usize], g: &Geom) -> Vec<usize> {
    let mut s = input[..2].to_vec();
    s.extend_from_slice(g.out_dims());
    s
}

/// Per-axis window tables of one geometry.
fn windows(g: &Geom) -> [Vec<Win>; 3] {
    [g.windows(0), g.windows(1), g.windows(2)]
}

/// One output position's window: a product of per-axis ranges.
#[derive(Clone, Copy)]
struct Cell<'a> {
    d: &'a Win,
    h: &'a Win,
    w: &'a Win,
}

impl Cell<'_> {
    /// Calls `f(i)` with the plane-relative input index of every window
    /// position inside the input, in window scan order (depth, height, width).
    #[inline]
    fn each(&self, g: &Geom, mut f: impl FnMut(usize)) {
        let [_, in_h, in_w] = g.input;
        let [dd, dh, dw] = g.dil;
        for jd in self.d.lo..self.d.hi {
            let id = (self.d.start + (jd * dd) as isize) as usize;
            for jh in self.h.lo..self.h.hi {
                let ih = (self.h.start + (jh * dh) as isize) as usize;
                let row = (id * in_h + ih) * in_w;
                let w0 = (self.w.start + (self.w.lo * dw) as isize) as usize;
                for k in 0..self.w.hi - self.w.lo {
                    f(row + w0 + k * dw);
                }
            }
        }
    }

    /// Positions counted by AveragePool's divisor (see [`AveragePool::inv_divisors`]).
    fn count(&self, include_pad: bool) -> usize {
        if include_pad {
            self.d.padded * self.h.padded * self.w.padded
        } else {
            (self.d.hi - self.d.lo) * (self.h.hi - self.h.lo) * (self.w.hi - self.w.lo)
        }
    }
}

/// Calls `f` with the window of every output position of a plane, row-major.
#[inline]
fn for_each_cell(w: &[Vec<Win>; 3], mut f: impl FnMut(Cell<'_>)) {
    for d in &w[0] {
        for h in &w[1] {
            for w in &w[2] {
                f(Cell { d, h, w });
            }
        }
    }
}

// ---------------------------------------------------------------------------
// MaxPool.

struct MaxPool {
    win: Window,
    /// The node asks for its second output (Indices).
    indices: bool,
    /// storage_order = 1: Indices count the spatial axes column-major.
    col_major: bool,
}

pub fn build_max_pool<T: Elem>(n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let win = Window::parse(n)?;
    if win.kernel.is_none() {
        op_bail!("attribute 'kernel_shape' is required");
    }
    let indices = n.outputs.get(1).is_some_and(|o| !o.is_empty());
    let col_major = attr_flag(n, "storage_order")?;
    Ok(Box::new(MaxPool { win, indices, col_major }))
}

/// For every output element, the flat index into `x` of its window's first
/// maximum in scan order, or `None` for a window that covers only padding.
/// Padding never wins (it acts as −∞). As in PyTorch, a NaN wins over any
/// number, so NaNs propagate.
fn argmax<T: Elem>(x: &[T], planes: usize, g: &Geom) -> Vec<Option<usize>> {
    let w = windows(g);
    if interior(g, &w) {
        argmax_interior(x, planes, g)
    } else if g.dil == [1; 3] && g.input[0] == 1 && g.kernel[0] == 1 {
        argmax_2d(x, planes, g, &w)
    } else {
        argmax_general(x, planes, g, &w)
    }
}

/// Every window lies wholly inside the input, undilated: no padding or
/// ceil-mode overhang, so a window is `kernel` consecutive elements per row.
fn interior(g: &Geom, w: &[Vec<Win>; 3]) -> bool {
    g.dil == [1; 3] && w.iter().zip(g.kernel).all(|(a, k)| a.iter().all(|c| c.lo == 0 && c.hi == k))
}

/// MaxPool's output and saved argmax (flat i64 indices) for the 2×2/stride-2
/// pool with every window inside the input, f32, on CPUs with AVX-512F or
/// AVX2: 16 or 8 windows per step, without the per-window `Option` of
/// [`argmax`] and the passes that turn it into y and the saved indices. The
/// winner is the first position holding the maximum (a pair of rows holding
/// a NaN takes [`argmax`]'s scan rule instead), and y is the value at the
/// winner — the same winners and values as [`argmax`] (tested). `None` when
/// the pool, the type or the CPU does not fit.
fn max_pool_2x2<T: Elem>(x: &[T], planes: usize, g: &Geom) -> Option<(Vec<T>, Vec<i64>)> {
    max_pool_2x2_on(Isa::detect()?, x, planes, g)
}

/// [`max_pool_2x2`] in the kernel of `isa`, which this CPU must have.
fn max_pool_2x2_on<T: Elem>(isa: Isa, x: &[T], planes: usize, g: &Geom) -> Option<(Vec<T>, Vec<i64>)> {
    let window = g.kernel == [1, 2, 2] && g.stride[1..] == [2, 2] && g.dil == [1; 3] && g.out[0] == 1;
    if !window || !interior(g, &windows(g)) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    return match isa {
        Isa::Avx512 => vector_pool(x, planes, g, max_pool_2x2_avx512),
        Isa::Avx2 => vector_pool(x, planes, g, max_pool_2x2_avx2),
    };
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, x, planes);
        None
    }
}

/// MaxPool's output and saved argmax, sized for `g` and filled by `kernel`
/// (a vector pool whose geometry and instruction set the caller has
/// checked), when `T` is f32.
#[cfg(target_arch = "x86_64")]
fn vector_pool<T: Elem>(
    x: &[T],
    planes: usize,
    g: &Geom,
    kernel: unsafe fn(&[f32], usize, &Geom, &mut [f32], &mut [i64]),
) -> Option<(Vec<T>, Vec<i64>)> {
    let xf = as_f32(x)?;
    let n = planes * g.out_len();
    let (mut y, mut arg) = (vec![T::zero(); n], vec![0i64; n]);
    // SAFETY: the caller checked the geometry and the instruction set `kernel` needs.
    unsafe { kernel(xf, planes, g, as_f32_mut(&mut y)?, &mut arg) };
    Some((y, arg))
}

/// Windows ow ∈ `cols` of the 2×2/stride-2 output row whose row pair starts
/// at `r0` in `x`, one at a time ([`first_max_2x2`]): a vector kernel's
/// tail, and its rows that hold a NaN.
#[inline(always)]
fn max_pool_2x2_scalar(
    x: &[f32],
    r0: usize,
    in_w: usize,
    cols: std::ops::Range<usize>,
    y: &mut [f32],
    arg: &mut [i64],
) {
    for ow in cols {
        let c = r0 + 2 * ow;
        let best = c + first_max_2x2([x[c], x[c + 1], x[c + in_w], x[c + in_w + 1]], in_w);
        y[ow] = x[best];
        arg[ow] = best as i64;
    }
}

/// # Safety
/// AVX2 is available; every 2×2/stride-2 window lies inside `x`'s planes;
/// `y` and `arg` hold planes·out_h·out_w values.
///
/// Eight windows per step, the AVX-512 kernel's operations on 8 lanes: the
/// two rows' 16 values split into even and odd columns, the maximum, then
/// the first candidate equal to it (later candidates blended first).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_pool_2x2_avx2(x: &[f32], planes: usize, g: &Geom, y: &mut [f32], arg: &mut [i64]) {
    use std::arch::x86_64::*;
    let in_w = g.input[2];
    let [_, out_h, out_w] = g.out;
    let in_len = g.in_len();
    assert!(x.len() >= planes * in_len && y.len() >= planes * out_h * out_w && arg.len() == y.len());
    // Even (odd) columns of 16 values a‖b: the in-lane shuffle gives
    // [a0 a2 b0 b2 | a4 a6 b4 b6]; the 64-bit permute puts them in order.
    let split = |a: __m256, b: __m256, odd: bool| {
        let s = if odd { _mm256_shuffle_ps::<0b11_01_11_01>(a, b) } else { _mm256_shuffle_ps::<0b10_00_10_00>(a, b) };
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(s)))
    };
    // Window k of a step starts at column 2k of the pair of rows.
    let column = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    let offset = |o: usize| _mm256_castsi256_ps(_mm256_set1_epi32(o as i32));
    let mut o = 0;
    for plane in 0..planes {
        for oh in 0..out_h {
            let r0 = plane * in_len + 2 * oh * in_w;
            let (yrow, arow) = (&mut y[o..][..out_w], &mut arg[o..][..out_w]);
            o += out_w;
            let (top, bottom) = (&x[r0..][..2 * out_w], &x[r0 + in_w..][..2 * out_w]);
            if top.iter().chain(bottom).fold(false, |nan, v| nan | v.is_nan()) {
                max_pool_2x2_scalar(x, r0, in_w, 0..out_w, yrow, arow);
                continue;
            }
            let whole = out_w / 8 * 8;
            for ow in (0..whole).step_by(8) {
                // SAFETY: columns 2·ow .. 2·ow + 16 ≤ 2·out_w of both rows.
                let (t, b) = unsafe {
                    let (tp, bp) = (top.as_ptr().add(2 * ow), bottom.as_ptr().add(2 * ow));
                    (
                        (_mm256_loadu_ps(tp), _mm256_loadu_ps(tp.add(8))),
                        (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8))),
                    )
                };
                let (te, to) = (split(t.0, t.1, false), split(t.0, t.1, true));
                let (be, bo) = (split(b.0, b.1, false), split(b.0, b.1, true));
                let m = _mm256_max_ps(_mm256_max_ps(te, to), _mm256_max_ps(be, bo));
                let mut off = offset(in_w + 1);
                let mut val = bo;
                for (cand, o) in [(be, in_w), (to, 1), (te, 0)] {
                    let k = _mm256_cmp_ps::<_CMP_EQ_OQ>(cand, m);
                    off = _mm256_blendv_ps(off, offset(o), k);
                    val = _mm256_blendv_ps(val, cand, k);
                }
                let rel = _mm256_add_epi32(_mm256_castps_si256(off), column);
                let start = _mm256_set1_epi64x((r0 + 2 * ow) as i64);
                let lo = _mm256_add_epi64(start, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(rel)));
                let hi = _mm256_add_epi64(start, _mm256_cvtepi32_epi64(_mm256_extracti128_si256::<1>(rel)));
                // SAFETY: outputs ow .. ow + 8 ≤ out_w of the row's slices.
                unsafe {
                    _mm256_storeu_ps(yrow.as_mut_ptr().add(ow), val);
                    _mm256_storeu_si256(arow.as_mut_ptr().add(ow).cast(), lo);
                    _mm256_storeu_si256(arow.as_mut_ptr().add(ow + 4).cast(), hi);
                }
            }
            max_pool_2x2_scalar(x, r0, in_w, whole..out_w, yrow, arow);
        }
    }
}

/// # Safety
/// AVX-512F is available; every 2×2/stride-2 window lies inside `x`'s planes;
/// `y` and `arg` hold planes·out_h·out_w values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_pool_2x2_avx512(x: &[f32], planes: usize, g: &Geom, y: &mut [f32], arg: &mut [i64]) {
    use std::arch::x86_64::*;
    let in_w = g.input[2];
    let [_, out_h, out_w] = g.out;
    let in_len = g.in_len();
    // Lane k of a deinterleave holds element 2k (even) or 2k + 1 (odd) of a 32-float run.
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    // Window k of a step starts at column 2k of the pair of rows.
    let column = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let mut o = 0;
    for plane in 0..planes {
        for oh in 0..out_h {
            let r0 = plane * in_len + 2 * oh * in_w;
            let (top, bottom) = (&x[r0..][..2 * out_w], &x[r0 + in_w..][..2 * out_w]);
            let (yrow, arow) = (&mut y[o..][..out_w], &mut arg[o..][..out_w]);
            o += out_w;
            if top.iter().chain(bottom).fold(false, |nan, v| nan | v.is_nan()) {
                // Rare: the scan rule (a later NaN wins), window by window.
                max_pool_2x2_scalar(x, r0, in_w, 0..out_w, yrow, arow);
                continue;
            }
            for ow in (0..out_w).step_by(16) {
                // Up to 16 windows: 2·width floats of each row, other lanes masked off.
                let width = (out_w - ow).min(16);
                let (m0, m1, mo) = (lane_mask(2 * width), lane_mask((2 * width).saturating_sub(16)), lane_mask(width));
                // SAFETY: the unmasked lanes are the 2·width floats from 2·ow,
                // inside `top`/`bottom` (2·out_w long); masked-off lanes are not
                // read (the second half's address may lie past the row: wrapping_add).
                let (te, to, be, bo) = unsafe {
                    let (tp, bp) = (top.as_ptr().add(2 * ow), bottom.as_ptr().add(2 * ow));
                    let t = (_mm512_maskz_loadu_ps(m0, tp), _mm512_maskz_loadu_ps(m1, tp.wrapping_add(16)));
                    let b = (_mm512_maskz_loadu_ps(m0, bp), _mm512_maskz_loadu_ps(m1, bp.wrapping_add(16)));
                    (
                        _mm512_permutex2var_ps(t.0, even, t.1),
                        _mm512_permutex2var_ps(t.0, odd, t.1),
                        _mm512_permutex2var_ps(b.0, even, b.1),
                        _mm512_permutex2var_ps(b.0, odd, b.1),
                    )
                };
                let m = _mm512_max_ps(_mm512_max_ps(te, to), _mm512_max_ps(be, bo));
                // Later candidates first, so the earliest equal one wins (scan order t0, t1, b0, b1).
                let (k_b0, k_t1, k_t0) =
                    (_mm512_cmpeq_ps_mask(be, m), _mm512_cmpeq_ps_mask(to, m), _mm512_cmpeq_ps_mask(te, m));
                let mut off = _mm512_set1_epi32((in_w + 1) as i32);
                let mut val = bo;
                off = _mm512_mask_blend_epi32(k_b0, off, _mm512_set1_epi32(in_w as i32));
                val = _mm512_mask_blend_ps(k_b0, val, be);
                off = _mm512_mask_blend_epi32(k_t1, off, _mm512_set1_epi32(1));
                val = _mm512_mask_blend_ps(k_t1, val, to);
                off = _mm512_mask_blend_epi32(k_t0, off, _mm512_setzero_si512());
                val = _mm512_mask_blend_ps(k_t0, val, te);
                let rel = _mm512_add_epi32(off, column);
                let start = _mm512_set1_epi64((r0 + 2 * ow) as i64);
                let lo = _mm512_add_epi64(start, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(rel)));
                let hi = _mm512_add_epi64(start, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64::<1>(rel)));
                // SAFETY: the `width` unmasked outputs from ow lie inside the row's slices.
                unsafe {
                    _mm512_mask_storeu_ps(yrow.as_mut_ptr().add(ow), mo, val);
                    _mm512_mask_storeu_epi64(arow.as_mut_ptr().add(ow), mo as u8, lo);
                    _mm512_mask_storeu_epi64(arow.as_mut_ptr().wrapping_add(ow + 8), (mo >> 8) as u8, hi);
                }
            }
        }
    }
}

/// MaxPool's output and saved argmax for 2-D undilated windows of any size
/// and padding with a width stride of 1 or 2, f32, on CPUs with AVX-512F
/// (ResNet's 3×3/stride-2 pool with padding 1, for one): 16 windows of an
/// output row per step, each window position a compare and two blends.
/// The running best follows [`argmax`]'s scan exactly — positions in scan
/// order, inside the input only, a later one replacing the best when
/// greater or NaN — so winners and values are the same (tested); a window
/// of padding only gives the lowest finite value and −1, as `forward` does
/// for [`argmax`]'s `None`. `None` when the pool, the type or the CPU does
/// not fit.
fn max_pool_rows<T: Elem>(x: &[T], planes: usize, g: &Geom) -> Option<(Vec<T>, Vec<i64>)> {
    // Indices within a plane are computed in i32 lanes.
    let small = i32::try_from(g.in_len()).is_ok();
    let two_d = g.input[0] == 1 && g.kernel[0] == 1 && g.out[0] == 1;
    let fits = small && two_d && g.dil == [1; 3] && (1..=2).contains(&g.stride[2]);
    if !fits {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    return avx512().then(|| vector_pool(x, planes, g, max_pool_rows_avx512)).flatten();
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, planes);
        None
    }
}

/// # Safety
/// AVX-512F is available; `g` is 2-D (depth 1), undilated, with width
/// stride 1 or 2; `x` holds `planes` input planes, `y` and `arg`
/// planes·out_h·out_w values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_pool_rows_avx512(x: &[f32], planes: usize, g: &Geom, y: &mut [f32], arg: &mut [i64]) {
    use super::panel::lanes_between;
    use std::arch::x86_64::*;
    let [_, in_h, in_w] = g.input;
    let [_, out_h, out_w] = g.out;
    let (in_len, sw, kw) = (g.in_len(), g.stride[2], g.kernel[2]);
    let rows = g.windows(1);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // Column of lane l relative to lane 0's: sw·l.
    let step = _mm512_mullo_epi32(lane, _mm512_set1_epi32(sw as i32));
    let mut o = 0;
    for plane in 0..planes {
        let xp = &x[plane * in_len..][..in_h * in_w];
        for wh in rows.iter().take(out_h) {
            for ow in (0..out_w).step_by(16) {
                let live = lane_mask(out_w - ow);
                let c0 = (ow * sw) as isize - g.pad_begin[2] as isize;
                let (mut best, mut at, mut has) = (_mm512_set1_ps(f32::MIN), _mm512_set1_epi32(-1), 0 as __mmask16);
                for jh in wh.lo..wh.hi {
                    let r = (wh.start + jh as isize) as usize;
                    let row = xp[r * in_w..][..in_w].as_ptr();
                    for j in 0..kw {
                        let c = c0 + j as isize;
                        // Lanes whose column c + sw·l lies inside the row.
                        let inside = live & {
                            let (lo, hi) = (-c, in_w as isize - c);
                            if sw == 1 {
                                lanes_between(lo, hi)
                            } else {
                                lanes_between((lo + 1).div_euclid(2), (hi + 1).div_euclid(2))
                            }
                        };
                        if inside == 0 {
                            continue;
                        }
                        // SAFETY: only columns inside the row are loaded (masked-off
                        // lanes are not accessed; their addresses may lie outside
                        // the row, hence wrapping arithmetic).
                        let v = unsafe {
                            let p = row.wrapping_offset(c);
                            if sw == 1 {
                                _mm512_maskz_loadu_ps(inside, p)
                            } else {
                                // Lane l's column c + 2l is element 2l of the 32 from c.
                                let (lo, hi) = (-c, in_w as isize - c);
                                let a = _mm512_maskz_loadu_ps(lanes_between(lo, hi), p);
                                let b = _mm512_maskz_loadu_ps(lanes_between(lo - 16, hi - 16), p.wrapping_add(16));
                                _mm512_permutex2var_ps(a, even, b)
                            }
                        };
                        let greater =
                            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                        let take = inside & (!has | greater);
                        best = _mm512_mask_mov_ps(best, take, v);
                        let index = _mm512_add_epi32(_mm512_set1_epi32((r * in_w) as i32 + c as i32), step);
                        at = _mm512_mask_mov_epi32(at, take, index);
                        has |= inside;
                    }
                }
                // Flat index into x; −1 stays for a window of padding only.
                let base = _mm512_set1_epi64((plane * in_len) as i64);
                let wide = |h: __m256i, taken: u8| {
                    let h = _mm512_cvtepi32_epi64(h);
                    _mm512_mask_add_epi64(h, taken, h, base)
                };
                let lo = wide(_mm512_castsi512_si256(at), has as u8);
                let hi = wide(_mm512_extracti64x4_epi64::<1>(at), (has >> 8) as u8);
                // SAFETY: the live outputs from o + ow lie inside y and arg.
                unsafe {
                    _mm512_mask_storeu_ps(y.as_mut_ptr().add(o + ow), live, best);
                    _mm512_mask_storeu_epi64(arg.as_mut_ptr().add(o + ow), live as u8, lo);
                    _mm512_mask_storeu_epi64(arg.as_mut_ptr().wrapping_add(o + ow + 8), (live >> 8) as u8, hi);
                }
            }
            o += out_w;
        }
    }
}

/// [`argmax`] for any window: padding, dilation, ceil mode.
fn argmax_general<T: Elem>(x: &[T], planes: usize, g: &Geom, w: &[Vec<Win>; 3]) -> Vec<Option<usize>> {
    let in_len = g.in_len();
    let [_, in_h, in_w] = g.input;
    let [dd, dh, dw] = g.dil;
    let mut out = Vec::with_capacity(planes * g.out_len());
    for plane in 0..planes {
        let base = plane * in_len;
        let xp = &x[base..base + in_len];
        for_each_cell(w, |cell| {
            // `best == NONE` until the first position inside the input; then
            // a later value replaces the best if greater or NaN (the scan of
            // `Cell::each`, written out so the row loop is a plain slice scan).
            const NONE: usize = usize::MAX;
            let (mut best, mut best_v) = (NONE, T::zero());
            let n = cell.w.hi - cell.w.lo;
            for jd in cell.d.lo..cell.d.hi {
                let id = (cell.d.start + (jd * dd) as isize) as usize;
                for jh in cell.h.lo..cell.h.hi {
                    let ih = (cell.h.start + (jh * dh) as isize) as usize;
                    let row0 = (id * in_h + ih) * in_w + (cell.w.start + (cell.w.lo * dw) as isize) as usize;
                    let row = &xp[row0..];
                    for (k, &v) in row.iter().step_by(dw).take(n).enumerate() {
                        if best == NONE || v > best_v || v.is_nan() {
                            best = row0 + k * dw;
                            best_v = v;
                        }
                    }
                }
            }
            out.push((best != NONE).then(|| base + best));
        });
    }
    out
}

/// [`argmax`] for undilated 2-D windows that may reach into the padding or
/// past the input (ResNet's 3×3/stride-2/pad-1 stem pool, ceil mode): a
/// window's positions inside the input are a rectangle of whole row runs,
/// and the winner is the general scan's (first maximum; a later NaN wins).
fn argmax_2d<T: Elem>(x: &[T], planes: usize, g: &Geom, w: &[Vec<Win>; 3]) -> Vec<Option<usize>> {
    let in_len = g.in_len();
    let in_w = g.input[2];
    let better = |v: T, best: T| (v > best) | v.is_nan();
    let mut out = Vec::with_capacity(planes * g.out_len());
    for plane in 0..planes {
        let base = plane * in_len;
        let xp = &x[base..base + in_len];
        for wd in &w[0] {
            for wh in &w[1] {
                for ww in &w[2] {
                    if wd.lo >= wd.hi || wh.lo >= wh.hi || ww.lo >= ww.hi {
                        out.push(None);
                        continue;
                    }
                    let ih0 = (wh.start + wh.lo as isize) as usize;
                    let iw0 = (ww.start + ww.lo as isize) as usize;
                    let width = ww.hi - ww.lo;
                    let rows = (ih0..ih0 + (wh.hi - wh.lo)).map(|ih| ih * in_w + iw0);
                    // Without NaNs the scan's winner is the first position holding
                    // the maximum: a max, then a backwards pass of selects (the
                    // scan itself needs a branch per position on its running best).
                    let (mut m, mut nan) = (xp[ih0 * in_w + iw0], false);
                    for row0 in rows.clone() {
                        for &v in &xp[row0..row0 + width] {
                            m = if v > m { v } else { m };
                            nan |= v.is_nan();
                        }
                    }
                    let mut best = ih0 * in_w + iw0;
                    if nan {
                        // Rare: the scan rule (a later NaN wins) as written.
                        let mut best_v = xp[best];
                        for row0 in rows {
                            for (k, &v) in xp[row0..row0 + width].iter().enumerate() {
                                if better(v, best_v) {
                                    best = row0 + k;
                                    best_v = v;
                                }
                            }
                        }
                    } else {
                        for row0 in rows.rev() {
                            for (k, &v) in xp[row0..row0 + width].iter().enumerate().rev() {
                                best = if v == m { row0 + k } else { best };
                            }
                        }
                    }
                    out.push(Some(base + best));
                }
            }
        }
    }
    out
}

/// The winner of one 2×2 window [top-left, top-right, bottom-left,
/// bottom-right], as its offset from the top-left (0, 1, in_w, in_w + 1):
/// the first maximum in scan order, a later NaN winning (the rule of
/// [`argmax`]).
#[inline(always)]
fn first_max_2x2<T: Elem>(v: [T; 4], in_w: usize) -> usize {
    let [t0, t1, b0, b1] = v;
    if t0.is_nan() | t1.is_nan() | b0.is_nan() | b1.is_nan() {
        // Rare: the scan rule (a later NaN wins) as written.
        let (mut best, mut best_v) = (0, t0);
        for (off, v) in [(1, t1), (in_w, b0), (in_w + 1, b1)] {
            if (v > best_v) | v.is_nan() {
                best = off;
                best_v = v;
            }
        }
        best
    } else {
        // Without NaNs the scan's winner is the first position holding the
        // maximum. Written as a max and integer selects, which compile
        // without branches: which of four values wins is data-dependent,
        // and mispredicted branches cost more.
        let m = t0.max(t1).max(b0.max(b1));
        let off = if b0 == m { in_w } else { in_w + 1 };
        let off = if t1 == m { 1 } else { off };
        if t0 == m { 0 } else { off }
    }
}

/// [`argmax`] when every window lies wholly inside the input with dilation 1
/// (no padding reached: the usual 2×2/stride-2 and global pools), with the
/// same scan order and tie/NaN rule, as plain index arithmetic.
fn argmax_interior<T: Elem>(x: &[T], planes: usize, g: &Geom) -> Vec<Option<usize>> {
    let in_len = g.in_len();
    let [_, in_h, in_w] = g.input;
    let [out_d, out_h, out_w] = g.out;
    let [kd, kh, kw] = g.kernel;
    let [sd, sh, sw] = g.stride;
    let mut out = Vec::with_capacity(planes * g.out_len());
    // The first position in scan order wins unless a later one is greater or NaN.
    // `|` not `||`: no branch, so the compiler can use selects (see the 2×2 loop).
    let better = |v: T, best: T| (v > best) | v.is_nan();
    if [kd, kh, kw] == [1, 2, 2] && out_d == 1 {
        // The 2×2 pool, unrolled: candidates in scan order r, r+1, r+W, r+W+1.
        if [sh, sw] == [2, 2] {
            // Non-overlapping windows: pairs of two rows, no index arithmetic.
            for plane in 0..planes {
                let base = plane * in_len;
                for oh in 0..out_h {
                    let r0 = 2 * oh * in_w;
                    let (top, bottom) = (&x[base + r0..][..in_w], &x[base + r0 + in_w..][..in_w]);
                    for (ow, (t, b)) in top.chunks_exact(2).zip(bottom.chunks_exact(2)).take(out_w).enumerate() {
                        let best = first_max_2x2([t[0], t[1], b[0], b[1]], in_w);
                        out.push(Some(base + r0 + 2 * ow + best));
                    }
                }
            }
            return out;
        }
        for plane in 0..planes {
            let base = plane * in_len;
            let xp = &x[base..base + in_len];
            for oh in 0..out_h {
                for ow in 0..out_w {
                    let r = oh * sh * in_w + ow * sw;
                    let mut best = r;
                    for i in [r + 1, r + in_w, r + in_w + 1] {
                        if better(xp[i], xp[best]) {
                            best = i;
                        }
                    }
                    out.push(Some(base + best));
                }
            }
        }
        return out;
    }
    for plane in 0..planes {
        let base = plane * in_len;
        let xp = &x[base..base + in_len];
        for od in 0..out_d {
            for oh in 0..out_h {
                for ow in 0..out_w {
                    // Start at the window's first element (windows are never empty
                    // here); comparing it with itself changes nothing.
                    let mut best = (od * sd * in_h + oh * sh) * in_w + ow * sw;
                    let mut best_v = xp[best];
                    for jd in 0..kd {
                        for jh in 0..kh {
                            let row0 = ((od * sd + jd) * in_h + oh * sh + jh) * in_w + ow * sw;
                            for (k, &v) in xp[row0..row0 + kw].iter().enumerate() {
                                let take = better(v, best_v);
                                best = if take { row0 + k } else { best };
                                best_v = if take { v } else { best_v };
                            }
                        }
                    }
                    out.push(Some(base + best));
                }
            }
        }
    }
    out
}

impl<T: Elem> Op<T> for MaxPool {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = finput(inputs, 0)?;
        let g = pool_geometry(&self.win, x.shape())?;
        let xs = contiguous(x);
        let planes = x.shape()[0] * x.shape()[1];
        let shape = out_shape(x.shape(), &g);
        if !self.indices
            && let Some((y, arg)) = max_pool_2x2(&xs, planes, &g).or_else(|| max_pool_rows(&xs, planes, &g))
        {
            return Ok(vec![Value::F(array(&shape, y)?), Value::I(array(&shape, arg)?)]);
        }
        let arg = argmax(&xs, planes, &g);
        // A window entirely in padding has no maximum; onnxruntime starts its
        // scan at the lowest finite value, which is what it then outputs.
        let y: Vec<T> = arg.iter().map(|a| a.map_or(T::min_value(), |i| xs[i])).collect();
        let mut outs = vec![Value::F(array(&shape, y)?)];
        let saved = Value::I(array(&shape, arg.iter().map(|a| a.map_or(-1, |i| i as i64)).collect())?);
        if self.indices {
            // ONNX Indices: the flat index into the whole input tensor;
            // storage_order 1 flattens the spatial axes column-major.
            let (in_len, [_, in_h, in_w]) = (g.in_len(), g.input);
            let idx = arg
                .iter()
                .map(|a| {
                    let Some(i) = *a else { return -1 };
                    let i = if self.col_major {
                        let (plane, r) = (i / in_len, i % in_len);
                        let (d, h, w) = (r / (in_h * in_w), r / in_w % in_h, r % in_w);
                        plane * in_len + d * in_h * in_w + w * in_h + h
                    } else {
                        i
                    };
                    i as i64
                })
                .collect();
            outs.push(Value::I(array(&shape, idx)?));
        }
        outs.push(saved);
        Ok(outs)
    }

    /// The argmax of every window (flat index into X, −1 for a window of
    /// padding only), so the backward pass does not scan the windows again.
    fn saves_for_backward(&self) -> bool {
        true
    }

    /// y[o] = x[a(o)] with a(o) the window's first argmax, so
    /// ∂L/∂x[i] = Σ_{o : a(o) = i} dY[o] (piecewise: exact away from ties).
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        let mut grads: Vec<Option<ArrayD<T>>> = vec![None; ctx.inputs.len()];
        if !ctx.wrt.first().copied().unwrap_or(false) {
            return Ok(grads);
        }
        let x = finput(ctx.inputs, 0)?;
        let g = pool_geometry(&self.win, x.shape())?;
        let planes = x.shape()[0] * x.shape()[1];
        check_dout(ctx.dout, &out_shape(x.shape(), &g))?;
        let xs = contiguous(x);
        let dy = contiguous(ctx.dout);
        let mut dx = vec![T::zero(); xs.len()];
        // Windows that share no input (stride > dilated extent − 1) let the
        // saved indices be stored with a vector scatter.
        let disjoint = (0..3).all(|a| g.stride[a] > g.dil[a] * (g.kernel[a] - 1));
        if let Some(Value::I(arg)) = ctx.saved
            && disjoint
            && let Some(arg) = arg.as_slice().filter(|a| a.len() == dy.len())
            && scatter_disjoint(arg, &dy, &mut dx)
        {
            grads[0] = Some(array(x.shape(), dx)?);
            return Ok(grads);
        }
        let mut scatter = |i: Option<usize>, d: T| -> OpResult<()> {
            match i.map(|i| dx.get_mut(i)) {
                None => Ok(()),
                Some(Some(slot)) => {
                    *slot += d;
                    Ok(())
                }
                Some(None) => op_bail!("saved argmax index out of range"),
            }
        };
        match ctx.saved {
            Some(Value::I(arg)) if arg.len() == dy.len() => {
                for (&a, &d) in arg.iter().zip(dy.iter()) {
                    scatter(usize::try_from(a).ok(), d)?;
                }
            }
            _ => {
                for (&a, &d) in argmax(&xs, planes, &g).iter().zip(dy.iter()) {
                    scatter(a, d)?;
                }
            }
        }
        grads[0] = Some(array(x.shape(), dx)?);
        Ok(grads)
    }
}

/// dx[arg[o]] = dy[o] for every o with arg[o] ≥ 0, when no two windows
/// share an input (stride > dilated extent − 1), so every index occurs at
/// most once and a store is the scatter-add: 8 outputs per AVX-512 scatter,
/// elsewhere one store each (without the general loop's per-window checks).
/// False, touching nothing, unless `T` is f32 and every index is below
/// dx.len() (the caller's checked loop reports a bad one).
fn scatter_disjoint<T: Elem>(arg: &[i64], dy: &[T], dx: &mut [T]) -> bool {
    let (Some(dy), Some(dx)) = (as_f32(dy), as_f32_mut(dx)) else { return false };
    if dy.len() != arg.len() || arg.iter().any(|&a| a >= dx.len() as i64) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F (checked); every index is below dx.len() (checked)
        // and negative ones are masked off.
        unsafe { scatter_disjoint_avx512(arg, dy, dx) };
        return true;
    }
    // One store per window, as the scatter does (not an add onto the zero,
    // which would turn a −0 into +0): the same bits on every CPU.
    for (&a, &d) in arg.iter().zip(dy) {
        if let Ok(i) = usize::try_from(a) {
            dx[i] = d;
        }
    }
    true
}

/// # Safety
/// AVX-512F; `arg` and `dy` have one length; every index is < dx.len().
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scatter_disjoint_avx512(arg: &[i64], dy: &[f32], dx: &mut [f32]) {
    use std::arch::x86_64::*;
    for (a, d) in arg.chunks(8).zip(dy.chunks(8)) {
        let lanes = ((1u32 << a.len()) - 1) as __mmask8;
        // SAFETY: loads masked to the chunk's values; the scatter writes
        // only lanes with a non-negative index, each < dx.len().
        unsafe {
            let idx = _mm512_maskz_loadu_epi64(lanes, a.as_ptr().cast());
            let val = _mm256_maskz_loadu_ps(lanes, d.as_ptr());
            let keep = lanes & _mm512_cmpge_epi64_mask(idx, _mm512_setzero_si512());
            _mm512_mask_i64scatter_ps(dx.as_mut_ptr().cast(), keep, idx, val, 4);
        }
    }
}

fn check_dout<T>(dout: &ArrayD<T>, shape: &[usize]) -> OpResult<()> {
    if dout.shape() != shape {
        op_bail!("output gradient shape {:?} differs from the output shape {shape:?}", dout.shape());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// AveragePool.

struct AveragePool {
    win: Window,
    count_include_pad: bool,
}

pub fn build_average_pool<T: Elem>(n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let win = Window::parse(n)?;
    if win.kernel.is_none() {
        op_bail!("attribute 'kernel_shape' is required");
    }
    let count_include_pad = attr_flag(n, "count_include_pad")?;
    Ok(Box::new(AveragePool { win, count_include_pad }))
}

impl AveragePool {
    /// 1/divisor for every output position of a plane (row-major), by the
    /// onnxruntime/PyTorch rule: the window is first clipped to the padded
    /// extent [−pad_begin, in + pad_end) (this only bites in ceil mode);
    /// count_include_pad = 1 divides by the positions left, 0 by those of
    /// them inside the input. A window with nothing to count (possible only
    /// when pads reach past a whole window) outputs 0 and passes no gradient.
    fn inv_divisors<T: Elem>(&self, w: &[Vec<Win>; 3]) -> Vec<T> {
        let mut out = Vec::with_capacity(w.iter().map(Vec::len).product());
        for_each_cell(w, |cell| {
            let d = cell.count(self.count_include_pad);
            out.push(if d == 0 { T::zero() } else { T::one() / T::of(d as f64) });
        });
        out
    }
}

impl<T: Elem> Op<T> for AveragePool {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = finput(inputs, 0)?;
        let g = pool_geometry(&self.win, x.shape())?;
        let w = windows(&g);
        let inv: Vec<T> = self.inv_divisors(&w);
        let xs = contiguous(x);
        let mut y = Vec::with_capacity(x.shape()[0] * x.shape()[1] * g.out_len());
        if interior(&g, &w) && g.out[0] == 1 && g.kernel == [1, 2, 2] && g.stride == [1, 2, 2] {
            let planes = xs.len() / g.in_len();
            y.resize(planes * g.out_len(), T::zero());
            if avg_pool_2x2_fast(&xs, &inv, &g, Pass::Forward(&mut y)) {
                return Ok(vec![Value::F(array(&out_shape(x.shape(), &g), y)?)]);
            }
            y.clear();
            // 2×2, stride 2: pairs of rows; ((0 + x00) + x01) + x10) + x11 as below.
            let [_, out_h, out_w] = g.out;
            let in_w = g.input[2];
            for xp in xs.chunks_exact(g.in_len()) {
                for oh in 0..out_h {
                    let (top, bottom) = (&xp[2 * oh * in_w..][..in_w], &xp[(2 * oh + 1) * in_w..][..in_w]);
                    let inv_row = &inv[oh * out_w..][..out_w];
                    let pairs = top.chunks_exact(2).zip(bottom.chunks_exact(2));
                    y.extend(pairs.zip(inv_row).map(|((t, b), &i)| (T::zero() + t[0] + t[1] + b[0] + b[1]) * i));
                }
            }
            return Ok(vec![Value::F(array(&out_shape(x.shape(), &g), y)?)]);
        }
        for xp in xs.chunks_exact(g.in_len()) {
            let mut k = 0;
            for_each_cell(&w, |cell| {
                let mut s = T::zero();
                cell.each(&g, |i| s += xp[i]);
                y.push(s * inv[k]);
                k += 1;
            });
        }
        Ok(vec![Value::F(array(&out_shape(x.shape(), &g), y)?)])
    }

    /// y[o] = (1/d(o))·Σ_{i ∈ window(o) ∩ input} x[i], linear in x, so
    /// ∂L/∂x[i] = Σ_{o : i ∈ window(o)} dY[o]/d(o).
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        let mut grads: Vec<Option<ArrayD<T>>> = vec![None; ctx.inputs.len()];
        if !ctx.wrt.first().copied().unwrap_or(false) {
            return Ok(grads);
        }
        let x = finput(ctx.inputs, 0)?;
        let g = pool_geometry(&self.win, x.shape())?;
        check_dout(ctx.dout, &out_shape(x.shape(), &g))?;
        let w = windows(&g);
        let inv: Vec<T> = self.inv_divisors(&w);
        let dy = contiguous(ctx.dout);
        let mut dx = vec![T::zero(); x.len()];
        if interior(&g, &w) && g.out[0] == 1 && g.kernel == [1, 2, 2] && g.stride == [1, 2, 2] {
            if avg_pool_2x2_fast(&dy, &inv, &g, Pass::Backward(&mut dx)) {
                grads[0] = Some(array(x.shape(), dx)?);
                return Ok(grads);
            }
            // 2×2, stride 2: every input is in exactly one window.
            let [_, out_h, out_w] = g.out;
            let in_w = g.input[2];
            for (dxp, dyp) in dx.chunks_exact_mut(g.in_len()).zip(dy.chunks_exact(g.out_len())) {
                for oh in 0..out_h {
                    let (top, bottom) = dxp[2 * oh * in_w..][..2 * in_w].split_at_mut(in_w);
                    let shares = dyp[oh * out_w..][..out_w].iter().zip(&inv[oh * out_w..][..out_w]);
                    for ((t, b), (&d, &i)) in top.chunks_exact_mut(2).zip(bottom.chunks_exact_mut(2)).zip(shares) {
                        let share = d * i;
                        t[0] += share;
                        t[1] += share;
                        b[0] += share;
                        b[1] += share;
                    }
                }
            }
            grads[0] = Some(array(x.shape(), dx)?);
            return Ok(grads);
        }
        for (dxp, dyp) in dx.chunks_exact_mut(g.in_len()).zip(dy.chunks_exact(g.out_len())) {
            let mut k = 0;
            for_each_cell(&w, |cell| {
                let share = dyp[k] * inv[k];
                cell.each(&g, |i| dxp[i] += share);
                k += 1;
            });
        }
        grads[0] = Some(array(x.shape(), dx)?);
        Ok(grads)
    }
}

/// Which direction [`avg_pool_2x2_fast`] runs, with the buffer it writes.
enum Pass<'a, T> {
    /// Reads x, writes y (planes·out_len).
    Forward(&'a mut [T]),
    /// Reads dY, writes dX (planes·in_len, all zeros on entry).
    Backward(&'a mut [T]),
}

/// AveragePool's interior 2×2/stride-2 loops for f32 on CPUs with AVX-512F,
/// 16 windows per step: the scalar loops' exact operations, so the same
/// bits (tested). Forward: y = ((((0 + x00) + x01) + x10) + x11)·inv.
/// Backward: each input is in exactly one window, so dX = 0 + dY·inv at
/// each of its four positions. False (nothing written) when the type or the
/// CPU does not fit; the caller checked the geometry.
fn avg_pool_2x2_fast<T: Elem>(from: &[T], inv: &[T], g: &Geom, pass: Pass<'_, T>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if avx512()
        && let (Some(from), Some(inv)) = (as_f32(from), as_f32(inv))
    {
        let (forward, to) = match pass {
            Pass::Forward(y) => (true, y),
            Pass::Backward(dx) => (false, dx),
        };
        let Some(to) = as_f32_mut(to) else { return false };
        // SAFETY: AVX-512F was detected; the caller checked the interior
        // 2×2/stride-2 geometry, and `from`/`to` hold whole planes of it.
        unsafe { avg_pool_2x2_avx512(from, inv, g, forward, to) };
        return true;
    }
    let _ = (from, inv, g, pass);
    false
}

/// # Safety
/// AVX-512F is available; every 2×2/stride-2 window lies inside the planes
/// of `g`; forward: `from` holds x's planes and `to` as many y planes;
/// backward: `from` holds dY's planes and `to` (zeros) as many dX planes;
/// `inv` holds out_len divisors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avg_pool_2x2_avx512(from: &[f32], inv: &[f32], g: &Geom, forward: bool, to: &mut [f32]) {
    use std::arch::x86_64::*;
    let ([_, _, in_w], [_, out_h, out_w]) = (g.input, g.out);
    let (in_len, out_len) = (g.in_len(), g.out_len());
    // Lane k of a deinterleave holds element 2k (even) or 2k + 1 (odd) of a 32-float run.
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    // Lanes 2k and 2k + 1 of the first (second) half take window k (8 + k).
    let spread_lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let spread_hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    let planes = if forward { from.len() / in_len } else { from.len() / out_len };
    assert!(to.len() >= planes * if forward { out_len } else { in_len }, "average pool buffer sizes");
    for plane in 0..planes {
        for oh in 0..out_h {
            // The pair of input rows of output row oh, the output row, its divisors.
            let (top, bottom) = (plane * in_len + 2 * oh * in_w, plane * in_len + (2 * oh + 1) * in_w);
            let (o, inv_row) = (plane * out_len + oh * out_w, &inv[oh * out_w..][..out_w]);
            for ow in (0..out_w).step_by(16) {
                let width = (out_w - ow).min(16);
                let (m0, m1, mo) = (lane_mask(2 * width), lane_mask((2 * width).saturating_sub(16)), lane_mask(width));
                // SAFETY: the unmasked lanes are the 2·width inputs from column
                // 2·ow of rows `top`/`bottom` (inside the plane: the windows
                // are interior) and the `width` outputs from ow of row o;
                // masked-off lanes are not touched (the second half's address
                // may lie past the row: wrapping_add).
                unsafe {
                    let iv = _mm512_maskz_loadu_ps(mo, inv_row.as_ptr().add(ow));
                    if forward {
                        let (tp, bp) = (from.as_ptr().add(top + 2 * ow), from.as_ptr().add(bottom + 2 * ow));
                        let t = (_mm512_maskz_loadu_ps(m0, tp), _mm512_maskz_loadu_ps(m1, tp.wrapping_add(16)));
                        let b = (_mm512_maskz_loadu_ps(m0, bp), _mm512_maskz_loadu_ps(m1, bp.wrapping_add(16)));
                        let mut sum = _mm512_add_ps(_mm512_setzero_ps(), _mm512_permutex2var_ps(t.0, even, t.1));
                        sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(t.0, odd, t.1));
                        sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(b.0, even, b.1));
                        sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(b.0, odd, b.1));
                        _mm512_mask_storeu_ps(to.as_mut_ptr().add(o + ow), mo, _mm512_mul_ps(sum, iv));
                    } else {
                        let dy = _mm512_maskz_loadu_ps(mo, from.as_ptr().add(o + ow));
                        let share = _mm512_add_ps(_mm512_setzero_ps(), _mm512_mul_ps(dy, iv));
                        let (lo, hi) =
                            (_mm512_permutexvar_ps(spread_lo, share), _mm512_permutexvar_ps(spread_hi, share));
                        for row in [top, bottom] {
                            let p = to.as_mut_ptr().add(row + 2 * ow);
                            _mm512_mask_storeu_ps(p, m0, lo);
                            _mm512_mask_storeu_ps(p.wrapping_add(16), m1, hi);
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// GlobalAveragePool, GlobalMaxPool.

/// Reduces every (n, c) plane of an [N, C, spatial...] input to one value.
struct GlobalPool {
    max: bool,
}

pub fn build_global_average_pool<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(GlobalPool { max: false }))
}

pub fn build_global_max_pool<T: Elem>(_n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    Ok(Box::new(GlobalPool { max: true }))
}

impl GlobalPool {
    /// (planes, plane length, output shape [N, C, 1, …]).
    fn dims(shape: &[usize]) -> OpResult<(usize, usize, Vec<usize>)> {
        if shape.len() < 3 {
            op_bail!("global pooling needs an input [N, C, spatial...], got shape {shape:?}");
        }
        let spatial: usize = shape[2..].iter().product();
        if spatial == 0 {
            op_bail!("global pooling over an empty spatial extent (shape {shape:?})");
        }
        let mut out = shape.to_vec();
        out[2..].fill(1);
        Ok((shape[0] * shape[1], spatial, out))
    }
}

/// Index of the first maximum of a non-empty slice (NaN wins, as in MaxPool).
fn first_argmax<T: Elem>(v: &[T]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate().skip(1) {
        if x > v[best] || x.is_nan() {
            best = i;
        }
    }
    best
}

impl<T: Elem> Op<T> for GlobalPool {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = finput(inputs, 0)?;
        let (_, s, shape) = Self::dims(x.shape())?;
        let xs = contiguous(x);
        let inv = T::one() / T::of(s as f64);
        let y = xs
            .chunks_exact(s)
            .map(|p| if self.max { p[first_argmax(p)] } else { super::vmath::sum_map(p, |v| v) * inv })
            .collect();
        Ok(vec![Value::F(array(&shape, y)?)])
    }

    /// Average: y = (1/S)·Σ x over the plane, so ∂L/∂x[i] = dY/S everywhere.
    /// Max: y = x[a] with a the plane's first argmax, so ∂L/∂x[a] = dY, 0 elsewhere.
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        let mut grads: Vec<Option<ArrayD<T>>> = vec![None; ctx.inputs.len()];
        if !ctx.wrt.first().copied().unwrap_or(false) {
            return Ok(grads);
        }
        let x = finput(ctx.inputs, 0)?;
        let (_, s, shape) = Self::dims(x.shape())?;
        check_dout(ctx.dout, &shape)?;
        let xs = contiguous(x);
        let dy = contiguous(ctx.dout);
        let mut dx = vec![T::zero(); xs.len()];
        let inv = T::one() / T::of(s as f64);
        for ((dxp, xp), &d) in dx.chunks_exact_mut(s).zip(xs.chunks_exact(s)).zip(dy.iter()) {
            if self.max {
                dxp[first_argmax(xp)] = d;
            } else {
                dxp.fill(d * inv);
            }
        }
        grads[0] = Some(array(x.shape(), dx)?);
        Ok(grads)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{check_rule, f, floats, node, run_forward};
    use super::*;
    use crate::model::graph::Attr;

    fn ints(v: &[i64]) -> Attr {
        Attr::Ints(v.to_vec())
    }

    #[test]
    fn interior_argmax_equals_the_general_scan_with_ties_and_nans() {
        // 2×2/stride 2 and 3×3/stride 1 windows, all inside the input: the fast
        // path must pick the same (first, NaN-last) positions as the general one.
        // An odd size (7) leaves a last row and column no window reads.
        for side in [6usize, 7] {
            let mut x: Vec<f64> = (0..2 * side * side).map(|i| ((i * 7) % 5) as f64).collect();
            x[8] = f64::NAN;
            x[40] = f64::NAN;
            x[41] = f64::NAN;
            for (k, s) in [(2usize, 2usize), (2, 1), (3, 1), (6, 6)] {
                let n = node(
                    "MaxPool",
                    &[("kernel_shape", Attr::Ints(vec![k as i64; 2])), ("strides", Attr::Ints(vec![s as i64; 2]))],
                );
                let g = pool_geometry(&Window::parse(&n).unwrap(), &[1, 2, side, side]).unwrap();
                let fast = argmax_interior(&x, 2, &g);
                let general = argmax_general(&x, 2, &g, &windows(&g));
                assert_eq!(fast, general, "side {side} kernel {k} stride {s}");
                assert_eq!(argmax(&x, 2, &g), fast);
            }
        }
    }

    #[test]
    fn row_pool_equals_the_general_scan_with_padding_ties_nans_and_signed_zeros() {
        // (kernel, strides, pads [top, left, bottom, right], ceil mode, input h × w):
        // ResNet's 3×3/2 pad 1, stride-1 windows, a width wider than its
        // stride, pads on one side, ceil-mode overhang, and output widths
        // below, at and past a 16-window vector (5 … 40); the last is the
        // 2×2/2 pool with padding, which `max_pool_2x2` declines.
        let cases: [([i64; 2], [i64; 2], [i64; 4], bool, [usize; 2]); 7] = [
            ([3, 3], [2, 2], [1, 1, 1, 1], false, [12, 33]),
            ([3, 3], [1, 1], [1, 1, 1, 1], false, [6, 40]),
            ([2, 3], [1, 2], [0, 2, 1, 0], false, [7, 34]),
            ([3, 2], [3, 2], [0, 0, 0, 0], true, [10, 31]),
            ([1, 4], [2, 1], [0, 3, 0, 3], false, [5, 13]),
            ([3, 3], [2, 2], [1, 1, 1, 1], true, [9, 64]),
            ([2, 2], [2, 2], [1, 1, 1, 1], false, [6, 9]),
        ];
        for (k, (kernel, strides, pads, ceil, [h, w])) in cases.into_iter().enumerate() {
            let n = node(
                "MaxPool",
                &[
                    ("kernel_shape", ints(&kernel)),
                    ("strides", ints(&strides)),
                    ("pads", ints(&pads)),
                    ("ceil_mode", Attr::Int(i64::from(ceil))),
                ],
            );
            let g = pool_geometry(&Window::parse(&n).unwrap(), &[1, 2, h, w]).unwrap();
            // Ties everywhere (values mod 5, negative so padding would win
            // if it counted), NaNs, and a tie of −0 before +0.
            let mut x: Vec<f32> = (0..2 * h * w).map(|i| ((i * 7) % 5) as f32 - 4.0).collect();
            x[w + 3] = f32::NAN;
            x[h * w + 2 * w + 5] = f32::NAN;
            x[h * w + 2 * w + 6] = f32::NAN;
            x[3 * w..3 * w + 2].copy_from_slice(&[-0.0, 0.0]);
            // Plane 1's last three rows −∞: windows inside them must still
            // pick their first position (not report "padding only").
            x[2 * h * w - 3 * w..].fill(f32::NEG_INFINITY);
            let Some((y, arg)) = max_pool_rows(&x, 2, &g) else {
                eprintln!("no AVX-512F here: max_pool_rows declines and the general path is used");
                return;
            };
            let general = argmax_general(&x, 2, &g, &windows(&g));
            let want: Vec<i64> = general.iter().map(|a| a.map_or(-1, |i| i as i64)).collect();
            assert_eq!(arg, want, "case {k}");
            let want_y: Vec<u32> = general.iter().map(|a| a.map_or(f32::MIN, |i| x[i]).to_bits()).collect();
            assert_eq!(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want_y, "case {k}: values at the winners");
        }
        // Dilation, width stride 3 and f64 decline.
        for (attrs, f64_input) in [
            (vec![("kernel_shape", ints(&[2, 2])), ("dilations", ints(&[2, 2]))], false),
            (vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[1, 3]))], false),
            (vec![("kernel_shape", ints(&[3, 3]))], true),
        ] {
            let g = pool_geometry(&Window::parse(&node("MaxPool", &attrs)).unwrap(), &[1, 1, 9, 9]).unwrap();
            let declined = if f64_input {
                max_pool_rows(&[0.0f64; 81], 1, &g).is_none()
            } else {
                max_pool_rows(&[0.0f32; 81], 1, &g).is_none()
            };
            assert!(declined, "{attrs:?}");
        }
    }

    #[test]
    fn two_by_two_pool_equals_the_general_scan_with_ties_nans_and_signed_zeros() {
        // f32, on every instruction set this CPU has: widths with whole
        // 16- and 8-window vectors and tails; ties everywhere
        // (values mod 5), a NaN in one pair of rows, and a window whose
        // maximum is a tie of −0 and +0 (the value must be the first one's).
        let mut vector_rows = 0;
        for side in [6usize, 32, 34, 41] {
            let mut x: Vec<f32> = (0..2 * side * side).map(|i| ((i * 7) % 5) as f32 - 4.0).collect();
            x[side + 3] = f32::NAN;
            let w0 = 2 * side * 4; // the window at row pair 4, column 0 of plane 0
            x[w0..w0 + 2].copy_from_slice(&[-0.0, 0.0]);
            x[w0 + side..w0 + side + 2].copy_from_slice(&[-1.0, -2.0]);
            let n = node("MaxPool", &[("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))]);
            let g = pool_geometry(&Window::parse(&n).unwrap(), &[1, 2, side, side]).unwrap();
            let general = argmax_general(&x, 2, &g, &windows(&g));
            let want: Vec<i64> = general.iter().map(|a| a.map_or(-1, |i| i as i64)).collect();
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let want_y: Vec<f32> = general.iter().map(|a| x[a.unwrap()]).collect();
            for isa in Isa::available() {
                let (y, arg) = max_pool_2x2_on(isa, &x, 2, &g).expect("f32, interior 2×2/2");
                assert_eq!(arg, want, "{isa:?} side {side}");
                assert_eq!(bits(&y), bits(&want_y), "{isa:?} side {side}: values at the winners");
                assert_eq!(y[4 * (side / 2)].to_bits(), (-0.0f32).to_bits(), "{isa:?} side {side}: −0 first wins");
                vector_rows += usize::from(side / 2 >= 16);
            }
        }
        // Three sizes reach the 16-window (and so the 8-window) vector loop.
        assert_eq!(vector_rows, 3 * Isa::available().len());
        // Other windows and f64 decline.
        let n = node("MaxPool", &[("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2]))]);
        let g = pool_geometry(&Window::parse(&n).unwrap(), &[1, 1, 9, 9]).unwrap();
        assert!(max_pool_2x2(&[0.0f32; 81], 1, &g).is_none());
        let n = node("MaxPool", &[("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))]);
        let g = pool_geometry(&Window::parse(&n).unwrap(), &[1, 1, 8, 8]).unwrap();
        assert!(max_pool_2x2(&[0.0f64; 64], 1, &g).is_none());
    }

    #[test]
    fn disjoint_scatter_stores_each_index_and_skips_padding() {
        // 19 outputs (two whole groups of 8 and a tail of 3), distinct
        // indices in scrambled order, two windows of padding only (−1).
        let arg: Vec<i64> = (0..19).map(|o| if o == 4 || o == 17 { -1 } else { (o * 7 % 19) * 2 + 1 }).collect();
        let dy: Vec<f32> = (0..19).map(|o| o as f32 + 0.5).collect();
        let mut dx = vec![0.0f32; 40];
        assert!(scatter_disjoint(&arg, &dy, &mut dx), "f32 with every index inside dX");
        let mut want = vec![0.0f32; 40];
        for (&a, &d) in arg.iter().zip(&dy) {
            if a >= 0 {
                want[a as usize] += d;
            }
        }
        assert_eq!(dx, want);
        // An index past dX is left to the checked loop (which reports it).
        let mut untouched = vec![0.0f32; 40];
        assert!(!scatter_disjoint(&[3, 40], &[1.0, 2.0], &mut untouched));
        assert!(untouched.iter().all(|&v| v == 0.0));
        assert!(!scatter_disjoint(&[3i64], &[1.0f64], &mut [0.0f64; 4]), "f64");
    }

    #[test]
    fn padded_2d_argmax_equals_the_general_scan_with_ties_and_nans() {
        // Windows reaching into the padding and (ceil mode) past the input,
        // including windows of padding only (pads ≥ kernel): the 2-D path
        // must pick the same positions, and None, as the general scan.
        let (mut padded, mut padding_only) = (0, 0);
        for side in [6usize, 7] {
            let mut x: Vec<f64> = (0..2 * side * side).map(|i| ((i * 7) % 5) as f64).collect();
            x[0] = f64::NAN;
            x[8] = f64::NAN;
            x[41] = f64::NAN;
            for (k, s, pad, ceil) in [(3i64, 2i64, 1i64, 0i64), (3, 1, 1, 0), (2, 2, 1, 1), (3, 2, 0, 1), (2, 1, 2, 0)]
            {
                let n = node(
                    "MaxPool",
                    &[
                        ("kernel_shape", ints(&[k, k])),
                        ("strides", ints(&[s, s])),
                        ("pads", ints(&[pad; 4])),
                        ("ceil_mode", Attr::Int(ceil)),
                    ],
                );
                let Ok(g) = pool_geometry(&Window::parse(&n).unwrap(), &[1, 2, side, side]) else {
                    continue;
                };
                let w = windows(&g);
                let general = argmax_general(&x, 2, &g, &w);
                assert_eq!(
                    argmax_2d(&x, 2, &g, &w),
                    general,
                    "side {side} kernel {k} stride {s} pad {pad} ceil {ceil}"
                );
                assert_eq!(argmax(&x, 2, &g), general);
                padded += usize::from(!interior(&g, &w));
                padding_only += general.iter().filter(|i| i.is_none()).count();
            }
        }
        assert!(padded >= 8, "only {padded} cases reached the padding");
        assert!(padding_only > 0, "no window of padding only was tested");
    }

    #[test]
    fn average_pool_2x2_fast_path_gives_the_scalar_bits() {
        // f32 takes the AVX-512 loops where the CPU has them; the scalar
        // loops' operations are written out here. Widths below, at and above
        // a 16-window step, odd sizes (a last row and column no window
        // reads), and ±0 inputs (0 + (−0) is +0: the loops must add to a
        // zero, not copy).
        let ctx = BuildCtx { opset: 19 };
        let attrs = [("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))];
        let op = build_average_pool::<f32>(&node("AveragePool", &attrs), &ctx).unwrap();
        for [h, w] in [[4usize, 4], [14, 14], [7, 7], [32, 32], [6, 70], [5, 33]] {
            let (oh, ow) = (h / 2, w / 2);
            let shape = [2usize, 3, h, w];
            let len = shape.iter().product::<usize>();
            let signed_zero = |i: usize, v: f32| if i % 5 == 2 { if v < 0.0 { -0.0 } else { 0.0 } } else { v };
            let x: Vec<f32> = (0..len).map(|i| signed_zero(i, ((i * 37 % 101) as f32 - 50.0) / 7.0)).collect();
            let planes = 6;
            let dy: Vec<f32> =
                (0..planes * oh * ow).map(|i| signed_zero(i, ((i * 53 % 89) as f32 - 44.0) / 3.0)).collect();
            let mut want_y = Vec::new();
            let mut want_dx = vec![0.0f32; len];
            for p in 0..planes {
                for r in 0..oh {
                    for c in 0..ow {
                        let at = |dr: usize, dc: usize| p * h * w + (2 * r + dr) * w + 2 * c + dc;
                        want_y.push((0.0 + x[at(0, 0)] + x[at(0, 1)] + x[at(1, 0)] + x[at(1, 1)]) * 0.25);
                        let share = dy[(p * oh + r) * ow + c] * 0.25;
                        for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            want_dx[at(dr, dc)] += share;
                        }
                    }
                }
            }
            let xv = Value::F(ArrayD::from_shape_vec(shape.to_vec(), x).unwrap());
            let y = op.forward(&[Some(&xv)]).unwrap().remove(0);
            let dout = ArrayD::from_shape_vec(vec![2, 3, oh, ow], dy).unwrap();
            let back = Backward { inputs: &[Some(&xv)], output: &y, dout: &dout, wrt: &[true], saved: None };
            let dx = op.backward(&back).unwrap().remove(0).unwrap();
            let bits = |v: &mut dyn Iterator<Item = f32>| v.map(f32::to_bits).collect::<Vec<_>>();
            let y = y.float().unwrap();
            assert_eq!(bits(&mut y.iter().copied()), bits(&mut want_y.into_iter()), "forward {h}×{w}");
            assert_eq!(bits(&mut dx.iter().copied()), bits(&mut want_dx.into_iter()), "backward {h}×{w}");
        }
    }

    fn check(op: &str, attrs: &[(&str, Attr)], x: &[usize]) -> ArrayD<f64> {
        check_rule(&node(op, attrs), 13, vec![f(x, 1)], &[true])
    }

    fn values(op: &str, attrs: &[(&str, Attr)], shape: &[usize], x: &[f64]) -> (Vec<usize>, Vec<f64>) {
        let y = run_forward(&node(op, attrs), 19, &[floats(shape, x)]).remove(0);
        let y = y.float().unwrap();
        (y.shape().to_vec(), y.iter().copied().collect())
    }

    fn one_to(n: usize) -> Vec<f64> {
        (1..=n).map(|v| v as f64).collect()
    }

    #[test]
    fn max_pool_pads_strides() {
        let a = [("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))];
        assert_eq!(check("MaxPool", &a, &[2, 2, 5, 5]).shape(), &[2, 2, 3, 3]);
        let asym = [("kernel_shape", ints(&[2, 3])), ("pads", ints(&[0, 2, 1, 0]))];
        assert_eq!(check("MaxPool", &asym, &[1, 2, 4, 4]).shape(), &[1, 2, 4, 4]);
    }

    #[test]
    fn max_pool_dilations() {
        let a = [("kernel_shape", ints(&[2, 2])), ("dilations", ints(&[2, 2])), ("pads", ints(&[1, 0, 1, 0]))];
        assert_eq!(check("MaxPool", &a, &[1, 2, 5, 5]).shape(), &[1, 2, 5, 3]);
    }

    #[test]
    fn max_pool_ceil_mode() {
        // in 6, k 3, stride 2: floor gives ⌊3/2⌋+1 = 2, ceil ⌈3/2⌉+1 = 3.
        let a = |ceil| [("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2])), ("ceil_mode", Attr::Int(ceil))];
        assert_eq!(check("MaxPool", &a(0), &[1, 2, 6, 6]).shape(), &[1, 2, 2, 2]);
        assert_eq!(check("MaxPool", &a(1), &[1, 2, 6, 6]).shape(), &[1, 2, 3, 3]);
    }

    #[test]
    fn ceil_mode_drops_a_window_starting_in_the_right_padding() {
        // in 5, k 3, stride 3, pads 1+1: ⌈(7−3)/3⌉+1 = 3, but window 2 would
        // start at 2·3 − 1 = 5 = in, inside the right padding: 2 outputs.
        let w = Window::parse(&node(
            "MaxPool",
            &[
                ("kernel_shape", ints(&[3])),
                ("strides", ints(&[3])),
                ("pads", ints(&[1, 1])),
                ("ceil_mode", Attr::Int(1)),
            ],
        ))
        .unwrap();
        assert_eq!(w.geometry(&[5], &[3]).unwrap().out_dims(), &[2]);
        assert_eq!(w.geometry(&[6], &[3]).unwrap().out_dims(), &[3]);
    }

    #[test]
    fn max_pool_1d_and_3d() {
        let a = [
            ("kernel_shape", ints(&[3])),
            ("strides", ints(&[2])),
            ("pads", ints(&[1, 0])),
            ("ceil_mode", Attr::Int(1)),
        ];
        assert_eq!(check("MaxPool", &a, &[2, 3, 8]).shape(), &[2, 3, 4]);
        let a3 = [("kernel_shape", ints(&[2, 2, 2])), ("strides", ints(&[1, 2, 2]))];
        assert_eq!(check("MaxPool", &a3, &[1, 2, 3, 4, 4]).shape(), &[1, 2, 2, 2, 2]);
    }

    #[test]
    fn max_pool_auto_pad() {
        for mode in ["SAME_UPPER", "SAME_LOWER"] {
            let a = [("kernel_shape", ints(&[2, 3])), ("strides", ints(&[2, 2])), ("auto_pad", Attr::Str(mode.into()))];
            assert_eq!(check("MaxPool", &a, &[1, 2, 5, 4]).shape(), &[1, 2, 3, 2]);
        }
    }

    #[test]
    fn max_pool_forward_indices_and_padding() {
        // 1×1×3×3 input 1..9 negated, so padding (−∞) would win if it counted.
        let x: Vec<f64> = one_to(9).iter().map(|v| -v).collect();
        let a = [("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 0, 0]))];
        assert_eq!(values("MaxPool", &a, &[1, 1, 3, 3], &x), (vec![1, 1, 2, 2], vec![-1.0, -2.0, -4.0, -5.0]));

        let mut n = node("MaxPool", &[("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))]);
        n.outputs = vec!["y".into(), "i".into()];
        let x =
            floats(&[1, 2, 2, 4], &[0.0, 5.0, 1.0, 0.0, 3.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 8.0]);
        let out = run_forward(&n, 12, std::slice::from_ref(&x));
        assert_eq!(out[1], Value::I(ArrayD::from_shape_vec(vec![1, 2, 1, 2], vec![1, 7, 12, 15]).unwrap()));
        n = n.with("storage_order", Attr::Int(1));
        let out = run_forward(&n, 12, &[x]);
        // Column-major within the plane: (h, w) ↦ h + 2·w, plus the plane offset 8.
        assert_eq!(out[1], Value::I(ArrayD::from_shape_vec(vec![1, 2, 1, 2], vec![2, 7, 9, 15]).unwrap()));
    }

    #[test]
    fn max_pool_ties_go_to_the_first_maximum() {
        let n = node("MaxPool", &[("kernel_shape", ints(&[2, 2]))]);
        let op = build_max_pool::<f64>(&n, &BuildCtx { opset: 13 }).unwrap();
        let x = floats(&[1, 1, 2, 2], &[1.0, 3.0, 3.0, 3.0]).unwrap();
        let outs = op.forward(&[Some(&x)]).unwrap();
        let dout = ArrayD::from_elem(vec![1, 1, 1, 1], 2.0);
        // With the argmax the forward saved, and recomputed without it.
        for saved in [Some(&outs[1]), None] {
            let ctx = Backward { inputs: &[Some(&x)], output: &outs[0], dout: &dout, wrt: &[true], saved };
            let g = op.backward(&ctx).unwrap();
            assert_eq!(g[0].as_ref().unwrap().iter().copied().collect::<Vec<_>>(), vec![0.0, 2.0, 0.0, 0.0]);
        }
    }

    /// Windows wholly inside the input (the 2×2/stride-2 pair-of-rows path,
    /// and the general path for other kernels): values against the
    /// definition, gradients against central differences.
    #[test]
    fn average_pool_interior_windows_match_the_definition() {
        for (k, s) in [([2, 2], [2, 2]), ([3, 3], [1, 1]), ([2, 3], [1, 2])] {
            let a = [("kernel_shape", ints(&k)), ("strides", ints(&s))];
            let shape = [2, 3, 7, 6];
            let y = check("AveragePool", &a, &shape);
            let x = f(&shape, 1).unwrap();
            let x = x.float().unwrap();
            let (oh, ow) = ((7 - k[0] as usize) / s[0] as usize + 1, (6 - k[1] as usize) / s[1] as usize + 1);
            assert_eq!(y.shape(), &[2, 3, oh, ow]);
            for ((n, c, i, j), &got) in y.view().into_dimensionality::<ndarray::Ix4>().unwrap().indexed_iter() {
                let (r0, c0) = (i * s[0] as usize, j * s[1] as usize);
                let mut sum = 0.0;
                for r in r0..r0 + k[0] as usize {
                    for q in c0..c0 + k[1] as usize {
                        sum += x[[n, c, r, q]];
                    }
                }
                let want = sum / (k[0] * k[1]) as f64;
                assert!((got - want).abs() < 1e-12, "kernel {k:?} stride {s:?} at {:?}", (n, c, i, j));
            }
        }
    }

    #[test]
    fn average_pool_count_include_pad() {
        for cip in [0, 1] {
            let a = [
                ("kernel_shape", ints(&[3, 2])),
                ("strides", ints(&[2, 1])),
                ("pads", ints(&[1, 0, 2, 1])),
                ("count_include_pad", Attr::Int(cip)),
            ];
            assert_eq!(check("AveragePool", &a, &[2, 2, 5, 4]).shape(), &[2, 2, 3, 4]);
        }
    }

    #[test]
    fn average_pool_ceil_mode_and_dilations() {
        for cip in [0, 1] {
            let a = [
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[1, 1, 1, 1])),
                ("ceil_mode", Attr::Int(1)),
                ("count_include_pad", Attr::Int(cip)),
            ];
            assert_eq!(check("AveragePool", &a, &[1, 2, 6, 5]).shape(), &[1, 2, 4, 3]);
            let d = [
                ("kernel_shape", ints(&[2])),
                ("dilations", ints(&[2])),
                ("pads", ints(&[1, 1])),
                ("count_include_pad", Attr::Int(cip)),
            ];
            assert_eq!(check("AveragePool", &d, &[1, 2, 6]).shape(), &[1, 2, 6]);
        }
        let same =
            [("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2])), ("auto_pad", Attr::Str("SAME_LOWER".into()))];
        assert_eq!(check("AveragePool", &same, &[1, 1, 5, 4]).shape(), &[1, 1, 3, 2]);
    }

    #[test]
    fn average_pool_divisors_hand_computed() {
        // Ones 3×3, kernel 2, stride 2, pads 1: windows cover 1, 2, 2 and 4
        // input positions, always 4 padded ones.
        let a = |cip| {
            [
                ("kernel_shape", ints(&[2, 2])),
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[1, 1, 1, 1])),
                ("count_include_pad", Attr::Int(cip)),
            ]
        };
        assert_eq!(values("AveragePool", &a(1), &[1, 1, 3, 3], &[1.0; 9]).1, vec![0.25, 0.5, 0.5, 1.0]);
        assert_eq!(values("AveragePool", &a(0), &[1, 1, 3, 3], &[1.0; 9]).1, vec![1.0; 4]);

        // 1..6, k 3, stride 2, pad 1, ceil: 4 windows; the last, [5, 8), is
        // clipped to the padded extent [−1, 7) = {5, 6}: with padding counted
        // the divisor is 2 (6/2 = 3, as PyTorch), without it 1.
        let c = |cip| {
            [
                ("kernel_shape", ints(&[3])),
                ("strides", ints(&[2])),
                ("pads", ints(&[1, 1])),
                ("ceil_mode", Attr::Int(1)),
                ("count_include_pad", Attr::Int(cip)),
            ]
        };
        assert_eq!(values("AveragePool", &c(1), &[1, 1, 6], &one_to(6)).1, vec![1.0, 3.0, 5.0, 3.0]);
        assert_eq!(values("AveragePool", &c(0), &[1, 1, 6], &one_to(6)).1, vec![1.5, 3.0, 5.0, 6.0]);
    }

    #[test]
    fn global_pools() {
        assert_eq!(check("GlobalAveragePool", &[], &[2, 3, 4, 5]).shape(), &[2, 3, 1, 1]);
        assert_eq!(check("GlobalMaxPool", &[], &[2, 3, 4, 5]).shape(), &[2, 3, 1, 1]);
        assert_eq!(check("GlobalAveragePool", &[], &[1, 2, 5]).shape(), &[1, 2, 1]);
        assert_eq!(values("GlobalAveragePool", &[], &[1, 2, 2, 2], &one_to(8)).1, vec![2.5, 6.5]);
        assert_eq!(values("GlobalMaxPool", &[], &[1, 2, 1, 3], &[3.0, 1.0, 2.0, -1.0, -3.0, -2.0]).1, vec![3.0, -1.0]);
    }

    #[test]
    fn bad_attributes_are_errors() {
        let ctx = BuildCtx { opset: 13 };
        assert!(build_max_pool::<f64>(&node("MaxPool", &[]), &ctx).is_err());
        assert!(
            build_max_pool::<f64>(
                &node("MaxPool", &[("kernel_shape", ints(&[2, 2])), ("pads", ints(&[1, 1, 1]))]),
                &ctx
            )
            .is_err()
        );
        assert!(
            build_average_pool::<f64>(
                &node("AveragePool", &[("kernel_shape", ints(&[2])), ("count_include_pad", Attr::Int(2))]),
                &ctx
            )
            .is_err()
        );
        let op = build_max_pool::<f64>(
            &node("MaxPool", &[("kernel_shape", ints(&[2, 2])), ("strides", ints(&[1, 1]))]),
            &ctx,
        )
        .unwrap();
        let x = f(&[1, 1, 5], 1);
        assert!(op.forward(&[x.as_ref()]).is_err(), "2-D kernel on a 1-D input");
        let x = f(&[1, 1, 1, 5], 1);
        assert!(op.forward(&[x.as_ref()]).unwrap_err().0.contains("larger than"));
        let g = build_global_max_pool::<f64>(&node("GlobalMaxPool", &[]), &ctx).unwrap();
        assert!(g.forward(&[f(&[2, 3], 1).as_ref()]).is_err());
    }
}
