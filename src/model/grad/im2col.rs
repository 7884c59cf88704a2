//! The column matrix of a convolution: `im2col` gathers every kernel tap's
//! shifted copy of the input into one row of a matrix that a GEMM multiplies
//! by the weights, and `col2im`, its adjoint, adds such a matrix back onto
//! the input's shape. The geometry (taps, strides, padding) is `conv.rs`'s.
//!
//! Both work on whole output planes per (channel, tap). A plane is one of
//! three cases: a stride-1 plane as wide as the input is one contiguous run
//! (one copy, then the padding entries cleared); a plane of width stride 2
//! on an AVX-512 CPU goes 16 output columns per step through masked loads
//! and a two-source permutation that picks every other input column (col2im,
//! for kernels wider than one column, adds all of a channel's taps to an
//! input row at once there, see `avx512::scatter_planes`); any other plane
//! goes row by row. All three
//! write or add exactly the same values: copies are exact, and col2im's
//! additions are the same single f32 adds in the same order per element
//! (column-matrix row after row), so the path taken never changes a result.

use super::Elem;
use super::conv::{Geom, Tap, Taps};
use super::panel::{as_f32, as_f32_mut, avx512, lanes_between};

/// Fills `col` ([channels·kernel_len, out_len], row-major) with the input
/// patches of `x` ([channels, in_len]): row (c, jd, jh, jw), column (od, oh, ow)
/// holds x[c, od·sd + jd·dd − pd, …], or 0 where that is padding. Every entry
/// is written exactly once (no clearing pass).
pub(super) fn im2col<T: Elem>(x: &[T], channels: usize, g: &Geom, taps: &Taps, col: &mut [T]) {
    let (in_len, out_len) = (g.in_len(), g.out_len());
    let [_, in_h, in_w] = g.input;
    let [_, out_h, out_w] = g.out;
    let sd = g.stride[0];
    let plane_len = in_h * in_w;
    let contiguous_rows = contiguous_rows(g);
    let vector = vector_planes(g);
    let mut rows = col.chunks_exact_mut(out_len);
    for xc in x.chunks_exact(in_len).take(channels) {
        for td in &taps.0[0] {
            for th in &taps.0[1] {
                for tw in &taps.0[2] {
                    let Some(row) = rows.next() else { return };
                    let n = tw.hi - tw.lo;
                    for (od, plane) in row.chunks_exact_mut(out_h * out_w).enumerate() {
                        if od < td.lo || od >= td.hi || n == 0 || th.hi == th.lo {
                            plane.fill(T::zero());
                            continue;
                        }
                        let id = ((od * sd) as isize + td.offset) as usize;
                        let xplane = &xc[id * plane_len..][..plane_len];
                        if contiguous_rows {
                            // Rows th.lo..th.hi of this plane read consecutive
                            // input rows at one shift: one copy of the whole
                            // span, then the entries that stood for padding
                            // (and picked up neighbouring pixels) are cleared.
                            let ih0 = (th.lo as isize + th.offset) as usize;
                            let src = ih0 * in_w + (tw.lo as isize + tw.offset) as usize;
                            let dst = th.lo * out_w + tw.lo;
                            let len = (th.hi - th.lo - 1) * out_w + n;
                            plane[dst..dst + len].copy_from_slice(&xplane[src..src + len]);
                            plane[..th.lo * out_w].fill(T::zero());
                            plane[th.hi * out_w..].fill(T::zero());
                            clear_columns(plane, th.lo..th.hi, out_w, tw.lo, tw.hi);
                        } else if !(vector && gather_plane_fast(xplane, g, th, tw, plane)) {
                            gather_plane(xplane, g, th, tw, plane);
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every column entry back onto the input
/// position it was copied from (entries that stood for padding are dropped).
///
/// `dx` must be all zeros on entry (the caller's fresh gradient): where every
/// input plane is reached from one depth tap only (all 1-D and 2-D
/// convolutions), the AVX-512 path writes planes instead of reading them
/// back, which gives the same bits as adding onto zeros.
///
/// `col` is scratch: in the contiguous case (see [`im2col`]) its padding
/// entries are zeroed so that a whole plane's run can be added at once.
pub(super) fn col2im<T: Elem>(col: &mut [T], channels: usize, g: &Geom, taps: &Taps, dx: &mut [T]) {
    col2im_adding(col, channels, g, taps, dx, true);
}

/// [`col2im`] onto a `dx` that need not be zeros: every entry is read back
/// and added to, the same adds in the same order per element. A banded
/// backward pass (`conv.rs`) adds band after band onto the rows they share.
pub(super) fn col2im_onto<T: Elem>(col: &mut [T], channels: usize, g: &Geom, taps: &Taps, dx: &mut [T]) {
    col2im_adding(col, channels, g, taps, dx, false);
}

fn col2im_adding<T: Elem>(col: &mut [T], channels: usize, g: &Geom, taps: &Taps, dx: &mut [T], zeroed: bool) {
    let (in_len, out_len) = (g.in_len(), g.out_len());
    let [_, in_h, in_w] = g.input;
    let [_, out_h, out_w] = g.out;
    let sd = g.stride[0];
    let (plane_len, out_plane) = (in_h * in_w, out_h * out_w);
    let contiguous_rows = contiguous_rows(g);
    let [depth_taps, height_taps, width_taps] = &taps.0;
    // With one depth tap, od ↦ id is one-to-one: each plane is visited once,
    // and is still the caller's zeros when it is. The vector path visits
    // every input row and column; a 1-wide kernel at stride 2 reaches only
    // every other one of each, which the row-by-row loop skips (the 1×1
    // stride-2 shortcuts of a ResNet: ∂L/∂x a third faster that way).
    let spread =
        (vector_planes(g) && g.kernel[2] > 1).then(|| Spread::new(g, width_taps, zeroed && depth_taps.len() == 1));
    // The rows of one (channel, depth tap): one per (height, width) tap.
    let mut groups = col.chunks_exact_mut(out_len * height_taps.len() * width_taps.len());
    for dxc in dx.chunks_exact_mut(in_len).take(channels) {
        for td in depth_taps {
            let Some(group) = groups.next() else { return };
            for od in td.lo..td.hi {
                let id = ((od * sd) as isize + td.offset) as usize;
                let dxplane = &mut dxc[id * plane_len..][..plane_len];
                if let Some(spread) = &spread
                    && scatter_planes_fast(group, out_len, od * out_plane, g, taps, spread, dxplane)
                {
                    continue;
                }
                let plane_taps = height_taps.iter().flat_map(|th| width_taps.iter().map(move |tw| (th, tw)));
                for ((th, tw), row) in plane_taps.zip(group.chunks_exact_mut(out_len)) {
                    if th.hi == th.lo || tw.hi == tw.lo {
                        continue;
                    }
                    let plane = &mut row[od * out_plane..][..out_plane];
                    if contiguous_rows {
                        // The adjoint of im2col's one-span copy: clear the
                        // padding entries, then add the whole span.
                        clear_columns(plane, th.lo..th.hi, out_w, tw.lo, tw.hi);
                        let ih0 = (th.lo as isize + th.offset) as usize;
                        let dst = ih0 * in_w + (tw.lo as isize + tw.offset) as usize;
                        let src = th.lo * out_w + tw.lo;
                        let len = (th.hi - th.lo - 1) * out_w + (tw.hi - tw.lo);
                        for (d, s) in dxplane[dst..dst + len].iter_mut().zip(&plane[src..src + len]) {
                            *d += *s;
                        }
                    } else {
                        scatter_plane(plane, g, th, tw, dxplane);
                    }
                }
            }
        }
    }
}

/// Stride 1 on both plane axes and as wide an output as input: output row
/// oh + 1 reads the input row after the one row oh reads, so a kernel row's
/// entries for a whole plane are one contiguous run of the input.
fn contiguous_rows(g: &Geom) -> bool {
    g.stride[1] == 1 && g.stride[2] == 1 && g.input[2] == g.out[2]
}

/// Whether planes may take the AVX-512 loops: width stride 2, on a CPU that
/// has AVX-512F (the element type is checked per call). Stride 1 is either
/// contiguous or rare (unpadded or over-padded layers) and stays row by row.
fn vector_planes(g: &Geom) -> bool {
    g.stride[2] == 2 && avx512()
}

/// Zeroes columns `0..lo` and `hi..out_w` of rows `rows` of a plane with
/// rows of `out_w`: the positions whose kernel tap falls in the padding. Only
/// the sides that have such columns are visited (none for a centre tap).
#[inline]
fn clear_columns<T: Elem>(plane: &mut [T], rows: std::ops::Range<usize>, out_w: usize, lo: usize, hi: usize) {
    // One padding column per side (3×3 kernels, pads 1) is the common case:
    // single stores, where a general loop would become a memset call per row.
    match lo {
        0 => {}
        1 => rows.clone().for_each(|oh| plane[oh * out_w] = T::zero()),
        _ => rows.clone().for_each(|oh| plane[oh * out_w..oh * out_w + lo].fill(T::zero())),
    }
    match out_w - hi {
        0 => {}
        1 => rows.for_each(|oh| plane[oh * out_w + hi] = T::zero()),
        _ => rows.for_each(|oh| plane[oh * out_w + hi..(oh + 1) * out_w].fill(T::zero())),
    }
}

/// One output plane of [`im2col`] for kernel taps (th, tw), row by row:
/// `plane[oh, ow] = xplane[oh·sh + th.offset, ow·sw + tw.offset]`, 0 outside.
fn gather_plane<T: Elem>(xplane: &[T], g: &Geom, th: &Tap, tw: &Tap, plane: &mut [T]) {
    let (in_w, out_w, sh, sw) = (g.input[2], g.out[2], g.stride[1], g.stride[2]);
    let n = tw.hi - tw.lo;
    let iw0 = (tw.lo * sw) as isize + tw.offset;
    for (oh, dst) in plane.chunks_exact_mut(out_w).enumerate() {
        if oh < th.lo || oh >= th.hi {
            dst.fill(T::zero());
            continue;
        }
        let ih = ((oh * sh) as isize + th.offset) as usize;
        let src = &xplane[ih * in_w + iw0 as usize..];
        dst[..tw.lo].fill(T::zero());
        dst[tw.hi..].fill(T::zero());
        let dst = &mut dst[tw.lo..tw.hi];
        if sw == 1 {
            dst.copy_from_slice(&src[..n]);
        } else {
            for (d, s) in dst.iter_mut().zip(src.iter().step_by(sw)) {
                *d = *s;
            }
        }
    }
}

/// The adjoint of [`gather_plane`]: adds `plane` onto the input positions it
/// was read from.
fn scatter_plane<T: Elem>(plane: &[T], g: &Geom, th: &Tap, tw: &Tap, dxplane: &mut [T]) {
    let (in_w, out_w, sh, sw) = (g.input[2], g.out[2], g.stride[1], g.stride[2]);
    let iw0 = ((tw.lo * sw) as isize + tw.offset) as usize;
    for oh in th.lo..th.hi {
        let ih = ((oh * sh) as isize + th.offset) as usize;
        let src = &plane[oh * out_w..][tw.lo..tw.hi];
        let dst = &mut dxplane[ih * in_w + iw0..];
        for (d, s) in dst.iter_mut().step_by(sw).zip(src) {
            *d += *s;
        }
    }
}

/// [`gather_plane`] in the AVX-512 loop when `T` is f32; false (nothing
/// written) otherwise.
fn gather_plane_fast<T: Elem>(xplane: &[T], g: &Geom, th: &Tap, tw: &Tap, plane: &mut [T]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), Some(p)) = (as_f32(xplane), as_f32_mut(plane)) {
        // SAFETY: the caller checked AVX-512F and width stride 2
        // (`vector_planes`); the slices are whole planes of `g`.
        unsafe { avx512::gather_plane(x, g, th, tw, p) };
        return true;
    }
    let _ = (xplane, g, th, tw, plane);
    false
}

/// Where the stride-2 AVX-512 col2im adds each width tap's values, per
/// 32-column step of an input row (the same for every row, so computed once
/// per call). Input column i = 2·ow + off receives output column ow of the
/// width tap with offset `off`; in a step starting at an even column s those
/// are the lanes j ≡ off (mod 2), j = 2k + q with q = off mod 2, reading
/// output columns o0 + k, o0 = (s + q − off)/2: 16 consecutive values, each
/// added to one of every other lane of the step's two vectors.
struct Spread {
    /// Per step, per width tap: o0, which of the 16 values lie in the tap's
    /// lo..hi, and the lanes of the two vectors that receive them.
    steps: Vec<(isize, u16, [u16; 2])>,
    /// Whether each plane is all zeros when visited and visited once (see
    /// [`col2im`]): rows are then written, not read back.
    fresh: bool,
}

impl Spread {
    fn new(g: &Geom, width_taps: &[Tap], fresh: bool) -> Spread {
        let mut steps = Vec::new();
        for s in (0..g.input[2] as isize).step_by(32) {
            for tw in width_taps {
                let q = tw.offset.rem_euclid(2);
                let o0 = (s + q - tw.offset) / 2;
                let (k_lo, k_hi) = ((tw.lo as isize - o0).clamp(0, 16), (tw.hi as isize - o0).clamp(0, 16));
                let parity = if q == 0 { 0x5555 } else { 0xAAAA };
                let (l0, l1) = (2 * k_lo + q, 2 * k_hi + q);
                steps.push((
                    o0,
                    lanes_between(k_lo, k_hi),
                    [lanes_between(l0, l1) & parity, lanes_between(l0 - 16, l1 - 16) & parity],
                ));
            }
        }
        Spread { steps, fresh }
    }
}

/// [`scatter_plane`] for every (height, width) tap of one (channel, depth
/// tap) at once, in the AVX-512 loop, when `T` is f32: `group` holds one
/// column-matrix row per tap (`row_len` apart, height tap outer), this
/// plane's part at `plane_at`. False (nothing added) otherwise.
fn scatter_planes_fast<T: Elem>(
    group: &[T],
    row_len: usize,
    plane_at: usize,
    g: &Geom,
    taps: &Taps,
    spread: &Spread,
    dxplane: &mut [T],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let (Some(rows), Some(dx)) = (as_f32(group), as_f32_mut(dxplane)) {
        // SAFETY: as in `gather_plane_fast`; `group` holds a row per plane
        // tap, `spread` was built for `g` and `taps`.
        unsafe { avx512::scatter_planes(rows, row_len, plane_at, g, taps, spread, dx) };
        return true;
    }
    let _ = (group, row_len, plane_at, g, taps, spread, dxplane);
    false
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! Width stride 2, 16 output columns per step. Lanes that would read or
    //! write outside a row are masked off: masked loads read them as 0 (the
    //! padding's value) and masked stores leave them alone, so the addresses
    //! may lie outside the row (hence `wrapping_offset`).
    use super::{Geom, Spread, Tap, Taps};
    use crate::model::grad::panel::{lane_mask, lanes_between};
    use std::arch::x86_64::*;

    /// Lanes j of a 16-lane vector whose input column `first + j` lies in 0..in_w.
    #[inline]
    fn inside(first: isize, in_w: usize) -> u16 {
        lanes_between(-first, in_w as isize - first)
    }

    /// Output column ow reads input column 2·ow + tw.offset: a step from ow0
    /// loads the 32 input columns from 2·ow0 + tw.offset and keeps the even
    /// ones. Steps are the outer loop, so each step's masks serve every row.
    ///
    /// # Safety
    /// AVX-512F is available; `g.stride[2]` is 2; `th`, `tw` are taps of `g`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_plane(xplane: &[f32], g: &Geom, th: &Tap, tw: &Tap, plane: &mut [f32]) {
        let ([_, in_h, in_w], [_, out_h, out_w], sh) = (g.input, g.out, g.stride[1]);
        assert!(xplane.len() == in_h * in_w && plane.len() == out_h * out_w, "im2col plane sizes");
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for ow0 in (0..out_w).step_by(16) {
            let first = (2 * ow0) as isize + tw.offset;
            let (ma, mb, mo) = (inside(first, in_w), inside(first + 16, in_w), lane_mask(out_w - ow0));
            for oh in 0..out_h {
                let dst = plane[oh * out_w + ow0..].as_mut_ptr();
                // SAFETY: the unmasked output lanes are columns ow0.. below
                // out_w of row oh; the unmasked input lanes are columns
                // inside 0..in_w of row ih < in_h (a tap's rows lo..hi read
                // inside the input).
                unsafe {
                    if oh < th.lo || oh >= th.hi {
                        _mm512_mask_storeu_ps(dst, mo, _mm512_setzero_ps());
                        continue;
                    }
                    let ih = ((oh * sh) as isize + th.offset) as usize;
                    let p = xplane.as_ptr().add(ih * in_w).wrapping_offset(first);
                    let a = _mm512_maskz_loadu_ps(ma, p);
                    let b = _mm512_maskz_loadu_ps(mb, p.wrapping_add(16));
                    _mm512_mask_storeu_ps(dst, mo, _mm512_permutex2var_ps(a, even, b));
                }
            }
        }
    }

    /// Width stride 2, input row by input row: each row of the input plane
    /// is built 32 columns at a time in registers from the contributions of
    /// every (height, width) tap that reaches it, added in tap order, and
    /// stored once. Each element receives the same additions in the same
    /// order as column-matrix row after row would give it, without a store
    /// and reload per tap. A `fresh` plane is not even read: a load that
    /// overlaps a recent masked store (the previous row's, whose masked-off
    /// tail covers this row's start when rows are narrower than 32) waits
    /// until that store reaches the cache, which cost more than the sums.
    ///
    /// # Safety
    /// AVX-512F is available; `g.stride[2]` is 2; `rows` holds a row of
    /// `row_len` per (height, width) tap of `taps`, each with an output plane
    /// (out_h·out_w) of `g` at `plane_at`; `dxplane` is an input plane
    /// (in_h·in_w) of `g`, all zeros if `spread.fresh`; `spread` was built
    /// for `g` and `taps`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scatter_planes(
        rows: &[f32],
        row_len: usize,
        plane_at: usize,
        g: &Geom,
        taps: &Taps,
        spread: &Spread,
        dxplane: &mut [f32],
    ) {
        let (in_w, out_w, sh) = (g.input[2], g.out[2], g.stride[1]);
        let [_, height_taps, width_taps] = &taps.0;
        // Lanes 2k and 2k + 1 of the first (second) vector take value k (8 + k).
        let spread_lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        let spread_hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
        // Per height tap, the next output row it has not yet delivered: rows
        // arrive in order, so no division is needed to find which output row
        // (if any) reads input row ih.
        let mut next: Vec<usize> = height_taps.iter().map(|th| th.lo).collect();
        for (ih, dst) in dxplane.chunks_exact_mut(in_w).enumerate() {
            for (s, step) in (0..in_w).step_by(32).zip(spread.steps.chunks_exact(width_taps.len())) {
                let (m0, m1) = (lane_mask(in_w - s), lane_mask((in_w - s).saturating_sub(16)));
                let p = dst[s..].as_mut_ptr();
                let (mut d0, mut d1) = if spread.fresh {
                    (_mm512_setzero_ps(), _mm512_setzero_ps())
                } else {
                    // SAFETY: the unmasked lanes are input columns s.. below
                    // in_w of this row (the second address may lie past it).
                    unsafe { (_mm512_maskz_loadu_ps(m0, p), _mm512_maskz_loadu_ps(m1, p.wrapping_add(16))) }
                };
                for (a, (th, &oh)) in height_taps.iter().zip(&next).enumerate() {
                    if oh >= th.hi || (oh * sh) as isize + th.offset != ih as isize {
                        continue;
                    }
                    let row = &rows[a * width_taps.len() * row_len + plane_at + oh * out_w..];
                    for (b, &(o0, values, [l0, l1])) in step.iter().enumerate() {
                        if values == 0 {
                            continue;
                        }
                        let src = row[b * row_len..][..out_w].as_ptr();
                        // SAFETY: only this output row's columns in the tap's lo..hi are read.
                        let v = unsafe { _mm512_maskz_loadu_ps(values, src.wrapping_offset(o0)) };
                        d0 = _mm512_mask_add_ps(d0, l0, d0, _mm512_permutexvar_ps(spread_lo, v));
                        d1 = _mm512_mask_add_ps(d1, l1, d1, _mm512_permutexvar_ps(spread_hi, v));
                    }
                }
                // SAFETY: as for the loads.
                unsafe {
                    _mm512_mask_storeu_ps(p, m0, d0);
                    _mm512_mask_storeu_ps(p.wrapping_add(16), m1, d1);
                }
            }
            for (th, oh) in height_taps.iter().zip(&mut next) {
                if *oh < th.hi && (*oh * sh) as isize + th.offset == ih as isize {
                    *oh += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::grad::conv::Window;
    use crate::model::grad::testutil::{node, uniform};
    use crate::model::graph::Attr;

    /// A geometry from Conv attributes: spatial input `dims` (2-D or 3-D),
    /// a k×k kernel (3 deep for 3-D inputs), the same stride, pad and
    /// dilation on every axis.
    fn geom(dims: &[usize], k: usize, stride: i64, pad: i64, dil: i64) -> Geom {
        let r = dims.len();
        let ints = |v: i64| Attr::Ints(vec![v; r]);
        let n = node(
            "Conv",
            &[("strides", ints(stride)), ("pads", Attr::Ints(vec![pad; 2 * r])), ("dilations", ints(dil))],
        );
        let kernel: Vec<usize> = (0..r).map(|a| if a + 2 < r { 3 } else { k }).collect();
        Window::parse(&n).unwrap().geometry(dims, &kernel).unwrap()
    }

    /// f32 values in [−1, 1] with some exact ±0 among them, so that a path
    /// which added where the definition copies (or the reverse) would show
    /// in the sign of a zero.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let u = uniform(&[len], seed, -1.0, 1.0);
        u.iter()
            .enumerate()
            .map(|(i, &v)| if i % 7 == 3 { if v < 0.0 { -0.0 } else { 0.0 } } else { v as f32 })
            .collect()
    }

    /// The definitions, entry by entry in column-matrix order (so col2im's
    /// reference adds in the order the module promises to keep).
    fn reference(x: &[f32], channels: usize, g: &Geom, col: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let in_len = g.in_len();
        let mut gathered = Vec::new();
        let mut dx = vec![0.0f32; channels * in_len];
        let mut it = col.iter();
        // Input position on axis a of output o and kernel index j.
        let at = |a: usize, o: usize, j: usize| (o * g.stride[a] + j * g.dil[a]) as isize - g.pad_begin[a] as isize;
        for c in 0..channels {
            for j in 0..g.kernel_len() {
                let j = [j / (g.kernel[1] * g.kernel[2]), j / g.kernel[2] % g.kernel[1], j % g.kernel[2]];
                for o in 0..g.out_len() {
                    let o = [o / (g.out[1] * g.out[2]), o / g.out[2] % g.out[1], o % g.out[2]];
                    let i: Vec<isize> = (0..3).map(|a| at(a, o[a], j[a])).collect();
                    let inside = (0..3).all(|a| (0..g.input[a] as isize).contains(&i[a]));
                    let v = *it.next().unwrap();
                    if inside {
                        let flat =
                            c * in_len + ((i[0] as usize * g.input[1]) + i[1] as usize) * g.input[2] + i[2] as usize;
                        gathered.push(x[flat]);
                        dx[flat] += v;
                    } else {
                        gathered.push(0.0);
                    }
                }
            }
        }
        (gathered, dx)
    }

    #[test]
    fn every_plane_path_gives_the_definitions_bits() {
        // Width stride 2 on AVX-512 machines takes the vector loops: rows
        // narrower and wider than a 32-column step, odd and even sizes,
        // pads from 0 to past the kernel, dilation, 1×1 and 7×7 kernels,
        // and a 3-D case, where planes are reached from several depth taps
        // and col2im must read back what it added. Stride 1 covers the
        // contiguous and the row-by-row paths, stride 3 the row-by-row
        // strided path.
        let cases: [(&[usize], usize, i64, i64, i64); 14] = [
            (&[28, 28], 3, 2, 1, 1),
            (&[14, 14], 3, 2, 1, 1),
            (&[15, 13], 3, 2, 1, 1),
            (&[9, 70], 3, 2, 1, 1),
            (&[11, 37], 5, 2, 2, 1),
            (&[12, 33], 3, 2, 0, 1),
            (&[10, 21], 3, 2, 3, 1),
            (&[16, 40], 3, 2, 2, 2),
            (&[28, 28], 1, 2, 0, 1),
            (&[23, 47], 7, 2, 3, 1),
            (&[5, 9, 35], 3, 2, 1, 1),
            (&[28, 28], 3, 1, 1, 1),
            (&[9, 19], 3, 1, 0, 1),
            (&[13, 26], 3, 3, 1, 1),
        ];
        for (n, &(dims, k, stride, pad, dil)) in cases.iter().enumerate() {
            let g = geom(dims, k, stride, pad, dil);
            let taps = Taps::new(&g);
            let channels = 3;
            let x = values(channels * g.in_len(), n as u64);
            let rows = channels * g.kernel_len();
            let dcol = values(rows * g.out_len(), 100 + n as u64);
            let (want_col, want_dx) = reference(&x, channels, &g, &dcol);

            let mut col = vec![f32::NAN; rows * g.out_len()];
            im2col(&x, channels, &g, &taps, &mut col);
            let mut dx = vec![0.0f32; x.len()];
            col2im(&mut dcol.clone(), channels, &g, &taps, &mut dx);

            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&col), bits(&want_col), "im2col, case {n}: {dims:?} k{k} s{stride} p{pad} d{dil}");
            assert_eq!(bits(&dx), bits(&want_dx), "col2im, case {n}: {dims:?} k{k} s{stride} p{pad} d{dil}");
        }
    }
}
