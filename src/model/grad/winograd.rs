//! Winograd F(2×2, 3×3): 3×3 stride-1 convolutions with 16 multiplications
//! per 2×2 output tile and channel pair instead of 36.
//!
//! Most of a CNN's arithmetic is 3×3 stride-1 convolutions, and the input
//! gradient of one is again such a convolution (with the kernel flipped and
//! transposed, see `Geom::adjoint`), so both passes of a PGD step use this.
//! In 1-D, two outputs of a 3-tap correlation y_o = Σ_j g_j·d_{o+j} are
//!   m0 = (d0 − d2)·g0,  m1 = (d1 + d2)·(g0 + g1 + g2)/2,
//!   m2 = (d2 − d1)·(g0 − g1 + g2)/2,  m3 = (d1 − d3)·g2,
//!   y0 = m0 + m1 + m2,  y1 = m1 − m2 − m3
//! (expand: y0 = d0g0 + d1g1 + d2g2, y1 = d1g0 + d2g1 + d3g2), i.e.
//! y = Aᵀ[(G g) ⊙ (Bᵀ d)] with the matrices below; in 2-D, per 4×4 input
//! tile d and kernel g, Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A. Summed over input
//! channels, each of the 16 positions ξ of the transformed tile is a matrix
//! product U_ξ (out channels × in channels, the transformed kernel, packed
//! once) · V_ξ (in channels × tiles), run by the packed AVX-512 kernel of
//! `panel`. Per output element the work is 16/4 = 4 products per channel
//! pair instead of 9; the transforms are additions, linear in the channels.
//!
//! Every output depends only on its own tile's column of V, so a sample's
//! result does not depend on the batch or on how tiles are chunked. Rounding
//! differs from the direct sum (the transformed values are sums of up to
//! nine products), at the level of f32 rounding of the output's scale.
//! Like `panel`, this runs only on AVX-512F CPUs with f32 (`Winograd::new`
//! declines elsewhere and the convolution keeps its direct path).

use super::Elem;
use super::panel::{PackedRows, as_f32, as_f32_mut};
use super::value::with_scratch;
use ndarray::{Array2, ArrayView4};

/// G (4×3), the kernel transform.
const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];

/// Values of V and M (the transformed input and products) per chunk of
/// tiles: 4 MiB, so that a chunk's data stays near the L2/L3 caches while
/// the chunks give each product hundreds of columns.
const CHUNK_VALUES: usize = 1 << 20;

/// A 3×3 kernel of `rows` output and `depth` input channels, transformed
/// and packed: `u[ξ]` is U_ξ[m, c] = (G g_{m,c} Gᵀ)[ξ / 4][ξ % 4].
pub(super) struct Winograd {
    u: Vec<PackedRows>,
    rows: usize,
    depth: usize,
}

/// One image plane of a 3×3 stride-1 convolution: output (oy, ox) reads the
/// input at (oy − pad[0] + i, ox − pad[1] + j), i, j ∈ 0..3, zero outside.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Plane {
    pub input: [usize; 2],
    pub pad: [usize; 2],
    pub out: [usize; 2],
}

impl Plane {
    fn tiles(&self) -> [usize; 2] {
        [self.out[0].div_ceil(2), self.out[1].div_ceil(2)]
    }

    /// Tile rows (one image's row of 2×2 tiles) per chunk of about
    /// `values` values of V and M, for `channels` = in + out channels.
    fn rows_per_chunk(&self, channels: usize, units: usize, values: usize) -> usize {
        (values / (16 * channels * self.tiles()[1]).max(1)).clamp(1, units.max(1))
    }
}

/// Padding between the 16 matrices V_ξ (and M_ξ), in values. Without it
/// their distance is often a multiple of 4 KiB (16 channels × 256 tiles),
/// the 16 streams the transforms read or write fall into the same L1 cache
/// sets, and the transforms ran at a fraction of their speed.
const SKEW: usize = 16;

impl Winograd {
    /// Transforms and packs `w` ([rows, depth, 3, 3]); `None` unless `T` is
    /// f32 on an AVX-512 CPU (see `PackedRows::pack`) and both channel
    /// counts fill the kernel's 8-row panels.
    pub fn new<T: Elem>(w: ArrayView4<'_, T>) -> Option<Self> {
        let (rows, depth, kh, kw) = w.dim();
        if (kh, kw) != (3, 3) || rows < 8 || depth < 8 {
            return None;
        }
        let mut a: Vec<Array2<T>> = (0..16).map(|_| Array2::zeros((rows, depth))).collect();
        for (m, c) in ndarray::indices((rows, depth)) {
            let g: [[f64; 3]; 3] =
                std::array::from_fn(|r| std::array::from_fn(|s| w[[m, c, r, s]].to_f64().unwrap_or(f64::NAN)));
            // (G g)[i][s], then (G g Gᵀ)[i][j] = Σ_s (G g)[i][s]·G[j][s], in f64, rounded once.
            let gg: [[f64; 3]; 4] =
                std::array::from_fn(|i| std::array::from_fn(|s| (0..3).map(|r| G[i][r] * g[r][s]).sum()));
            for (xi, a) in a.iter_mut().enumerate() {
                let (i, j) = (xi / 4, xi % 4);
                let v: f64 = (0..3).map(|s| gg[i][s] * G[j][s]).sum();
                a[[m, c]] = T::from_f64(v).unwrap_or_else(T::nan);
            }
        }
        let u = a.iter().map(|a| PackedRows::pack(a.view())).collect::<Option<Vec<_>>>()?;
        Some(Winograd { u, rows, depth })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// y[n, m] = Σ_c conv(x[n, c], w[m, c]) (+ bias[m]) for `n` images of
    /// `depth` planes of `plane.input` in `x` and `rows` planes of
    /// `plane.out` in `y`, every value of which is written. Returns false,
    /// touching nothing, when `T` is not f32 or a slice is too short.
    pub fn conv<T: Elem>(&self, x: &[T], n: usize, plane: &Plane, bias: Option<&[T]>, y: &mut [T]) -> bool {
        self.conv_in_chunks(x, n, plane, bias, y, CHUNK_VALUES)
    }

    /// [`Winograd::conv`] with chunks of about `chunk_values` values of V
    /// and M (tests make them small to cross images and tile rows).
    fn conv_in_chunks<T: Elem>(
        &self,
        x: &[T],
        n: usize,
        plane: &Plane,
        bias: Option<&[T]>,
        y: &mut [T],
        chunk_values: usize,
    ) -> bool {
        let (Some(x), Some(y)) = (as_f32(x), as_f32_mut(y)) else { return false };
        let bias = match bias.map(as_f32) {
            Some(Some(b)) if b.len() >= self.rows => Some(b),
            Some(_) => return false,
            None => None,
        };
        let ([ih, iw], [oh, ow]) = (plane.input, plane.out);
        if x.len() < n * self.depth * ih * iw || y.len() < n * self.rows * oh * ow {
            return false;
        }
        let [th, tw] = plane.tiles();
        let units = n * th;
        if units == 0 || tw == 0 {
            return true;
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (bias, chunk_values);
            false
        }
        #[cfg(target_arch = "x86_64")]
        {
            let per = plane.rows_per_chunk(self.rows + self.depth, units, chunk_values);
            let most = per * tw;
            let (v_len, m_len) = (16 * (self.depth * most + SKEW), 16 * (self.rows * most + SKEW));
            with_scratch(v_len + m_len, |s: &mut [f32]| {
                let (v, m) = s.split_at_mut(v_len);
                for first in (0..units).step_by(per) {
                    let chunk = first..(first + per).min(units);
                    let nt = chunk.len() * tw;
                    let (v_stride, m_stride) = (self.depth * nt + SKEW, self.rows * nt + SKEW);
                    for (k, img, tys) in segments(chunk.clone(), th) {
                        for c in 0..self.depth {
                            let x_plane = &x[(img * self.depth + c) * ih * iw..][..ih * iw];
                            let v = &mut v[c * nt + k * tw..];
                            // SAFETY: AVX-512F (a Winograd exists only then); v
                            // holds 16 slices of v_stride from here, each with
                            // the segment's tiles.
                            unsafe { avx512::input(x_plane, plane, tys.clone(), v, v_stride) };
                        }
                    }
                    for (xi, u) in self.u.iter().enumerate() {
                        let vx = &v[xi * v_stride..][..self.depth * nt];
                        // The slices hold these shapes and the type is f32: it cannot decline.
                        u.mul(vx, nt, &mut m[xi * m_stride..][..self.rows * nt], false);
                    }
                    for (k, img, tys) in segments(chunk, th) {
                        for r in 0..self.rows {
                            let y_plane = &mut y[(img * self.rows + r) * oh * ow..][..oh * ow];
                            let b = bias.map_or(0.0, |b| b[r]);
                            // SAFETY: AVX-512F; m holds 16 slices of m_stride
                            // from this offset with the segment's tiles in each.
                            unsafe { avx512::output(&m[r * nt + k * tw..], m_stride, plane, tys.clone(), b, y_plane) };
                        }
                    }
                }
            });
            true
        }
    }
}

/// The tile rows of `units` (unit = image · th + tile row), image by image:
/// (offset of the first in `units`, image, its tile rows).
fn segments(units: std::ops::Range<usize>, th: usize) -> impl Iterator<Item = (usize, usize, std::ops::Range<usize>)> {
    let start = units.start;
    std::iter::successors(Some(start).filter(|&u| u < units.end), move |&u| {
        Some((u / th + 1) * th).filter(|&next| next < units.end)
    })
    .map(move |u| {
        let end = ((u / th + 1) * th).min(units.end);
        (u - start, u / th, u % th..end - u / th * th)
    })
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::panel::lane_mask as mask;
    use super::Plane;
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Lanes l < 16 with 0 ≤ start + l < len: which of 16 columns from
    /// `start` lie inside a row of `len`.
    fn inside(start: isize, len: usize) -> __mmask16 {
        let lo = (-start).clamp(0, 16) as usize;
        let hi = (len as isize - start).clamp(0, 16) as usize;
        mask(hi) & !mask(lo)
    }

    /// V for one input channel's tile rows `tys`: V_ξ[tx] = (Bᵀ d B)[ξ / 4][ξ % 4]
    /// of the 4×4 input tile d at (2·ty − pad[0], 2·tx − pad[1]) (zero
    /// outside the input), written to `v[ξ·stride + k·tw + tx]` for the k-th
    /// tile row, 16 tiles per step. Each of the tile's rows is multiplied by
    /// B (d_k = row[2tx + k]: d0 − d2, d1 + d2, d2 − d1, d1 − d3, the even and
    /// odd columns split with two permutes), then Bᵀ combines the four rows'
    /// results the same way.
    ///
    /// # Safety
    /// AVX-512F is available, `x.len() ≥ input[0]·input[1]` and
    /// `v.len() ≥ 15·stride + |tys|·tw`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn input(x: &[f32], plane: &Plane, tys: Range<usize>, v: &mut [f32], stride: usize) {
        let ([ih, iw], [pt, pl]) = (plane.input, plane.pad);
        let tw = plane.out[1].div_ceil(2);
        debug_assert!(x.len() >= ih * iw && v.len() >= 15 * stride + tys.len() * tw);
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        for (k, ty) in tys.enumerate() {
            for tx in (0..tw).step_by(16) {
                let live = mask(tw - tx);
                // Input column of lane 0 of the first 32 and of the 32 from 2 on.
                let c0 = (2 * tx) as isize - pl as isize;
                let masks = [inside(c0, iw), inside(c0 + 16, iw), inside(c0 + 2, iw), inside(c0 + 18, iw)];
                // rows[i] = row i of the tile times B (four column results).
                let mut rows = [[_mm512_setzero_ps(); 4]; 4];
                for (i, t) in rows.iter_mut().enumerate() {
                    let Some(r) = (2 * ty + i).checked_sub(pt).filter(|&r| r < ih) else { continue };
                    // SAFETY: only lanes inside row r are loaded (masked-off
                    // lanes are not accessed; their addresses may lie outside
                    // `x`, hence wrapping arithmetic).
                    unsafe {
                        let p = x.as_ptr().add(r * iw).wrapping_offset(c0);
                        let a = _mm512_maskz_loadu_ps(masks[0], p);
                        let b = _mm512_maskz_loadu_ps(masks[1], p.wrapping_add(16));
                        let a2 = _mm512_maskz_loadu_ps(masks[2], p.wrapping_add(2));
                        let b2 = _mm512_maskz_loadu_ps(masks[3], p.wrapping_add(18));
                        let d0 = _mm512_permutex2var_ps(a, even, b);
                        let d1 = _mm512_permutex2var_ps(a, odd, b);
                        let d2 = _mm512_permutex2var_ps(a2, even, b2);
                        let d3 = _mm512_permutex2var_ps(a2, odd, b2);
                        *t = [
                            _mm512_sub_ps(d0, d2),
                            _mm512_add_ps(d1, d2),
                            _mm512_sub_ps(d2, d1),
                            _mm512_sub_ps(d1, d3),
                        ];
                    }
                }
                let [r0, r1, r2, r3] = rows;
                for (j, (d0, d1, d2, d3)) in (0..4).map(|j| (r0[j], r1[j], r2[j], r3[j])).enumerate() {
                    // SAFETY: stores masked to tiles < tw, inside v.
                    unsafe {
                        let out = v.as_mut_ptr().add(j * stride + k * tw + tx);
                        _mm512_mask_storeu_ps(out, live, _mm512_sub_ps(d0, d2));
                        _mm512_mask_storeu_ps(out.add(4 * stride), live, _mm512_add_ps(d1, d2));
                        _mm512_mask_storeu_ps(out.add(8 * stride), live, _mm512_sub_ps(d2, d1));
                        _mm512_mask_storeu_ps(out.add(12 * stride), live, _mm512_sub_ps(d1, d3));
                    }
                }
            }
        }
    }

    /// Y = Aᵀ M A + `bias` for one output channel's tile rows `tys`, M_ξ[tx]
    /// of the k-th at `m[ξ·stride + k·tw + tx]`: per tile and column j,
    /// s0_j = M_0j + M_1j + M_2j and s1_j = M_1j − M_2j − M_3j (Aᵀ over the
    /// rows), then along the columns (s_0 + s_1 + s_2, s_1 − s_2 − s_3): the
    /// tile's two output rows, written where they fall inside `y`
    /// (out[0] × out[1]).
    ///
    /// # Safety
    /// AVX-512F is available, `m.len() ≥ 15·stride + |tys|·tw`,
    /// `y.len() = out[0]·out[1]` and the tile rows lie inside the plane.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn output(m: &[f32], stride: usize, plane: &Plane, tys: Range<usize>, bias: f32, y: &mut [f32]) {
        let [oh, ow] = plane.out;
        let tw = ow.div_ceil(2);
        debug_assert!(m.len() >= 15 * stride + tys.len() * tw && y.len() == oh * ow && 2 * tys.end <= oh + 1);
        let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        let bias = _mm512_set1_ps(bias);
        let add3 = |a, b, c| _mm512_add_ps(_mm512_add_ps(a, b), c);
        let sub3 = |a, b, c| _mm512_sub_ps(_mm512_sub_ps(a, b), c);
        if tw <= 8 {
            // Narrow planes (≤ 16 columns): 16 / tw tile rows per vector, as
            // they lie in M (tile row k at k·tw), instead of one tile row in
            // tw of 16 lanes; each tile row's outputs are then interleaved
            // out of the vector with its own permutation.
            let per = 16 / tw;
            // Lane l of tile row q's output row: tile q·tw + l/2, from `even`
            // (l even) or `odd` (l odd, index + 16).
            let half = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
            let parity = _mm512_setr_epi32(0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16);
            let interleave = |q: usize| {
                let tile = _mm512_add_epi32(half, _mm512_set1_epi32((q * tw) as i32));
                _mm512_or_si512(_mm512_and_si512(tile, _mm512_set1_epi32(15)), parity)
            };
            let row = mask(ow);
            for first in (0..tys.len()).step_by(per) {
                let count = (tys.len() - first).min(per);
                let live = mask(count * tw);
                // SAFETY: loads are masked to the group's tiles; stores to the
                // ow columns of rows < oh.
                unsafe {
                    let l: [__m512; 16] =
                        std::array::from_fn(|xi| _mm512_maskz_loadu_ps(live, m.as_ptr().add(xi * stride + first * tw)));
                    let s0: [__m512; 4] = std::array::from_fn(|j| add3(l[j], l[4 + j], l[8 + j]));
                    let s1: [__m512; 4] = std::array::from_fn(|j| sub3(l[4 + j], l[8 + j], l[12 + j]));
                    for (dr, s) in [s0, s1].iter().enumerate() {
                        let even = _mm512_add_ps(add3(s[0], s[1], s[2]), bias);
                        let odd = _mm512_add_ps(sub3(s[1], s[2], s[3]), bias);
                        for q in 0..count {
                            let r = 2 * (tys.start + first + q) + dr;
                            if r < oh {
                                let out = _mm512_permutex2var_ps(even, interleave(q), odd);
                                _mm512_mask_storeu_ps(y.as_mut_ptr().add(r * ow), row, out);
                            }
                        }
                    }
                }
            }
            return;
        }
        for (k, ty) in tys.enumerate() {
            // The second output row is absent at the end of an odd-height plane.
            let rows = [Some(2 * ty), Some(2 * ty + 1).filter(|&r| r < oh)];
            for tx in (0..tw).step_by(16) {
                let live = mask(tw - tx);
                let cols = ow - 2 * tx;
                let (k0, k1) = (mask(cols), mask(cols.saturating_sub(16)));
                // SAFETY: loads are masked to tiles < tw, stores to columns < ow of rows < oh.
                unsafe {
                    let l: [__m512; 16] = std::array::from_fn(|xi| {
                        _mm512_maskz_loadu_ps(live, m.as_ptr().add(xi * stride + k * tw + tx))
                    });
                    let s0: [__m512; 4] = std::array::from_fn(|j| add3(l[j], l[4 + j], l[8 + j]));
                    let s1: [__m512; 4] = std::array::from_fn(|j| sub3(l[4 + j], l[8 + j], l[12 + j]));
                    for (s, r) in [s0, s1].iter().zip(rows) {
                        let Some(r) = r else { continue };
                        let even = _mm512_add_ps(add3(s[0], s[1], s[2]), bias);
                        let odd = _mm512_add_ps(sub3(s[1], s[2], s[3]), bias);
                        let at = y.as_mut_ptr().add(r * ow + 2 * tx);
                        _mm512_mask_storeu_ps(at, k0, _mm512_permutex2var_ps(even, lo, odd));
                        _mm512_mask_storeu_ps(at.wrapping_add(16), k1, _mm512_permutex2var_ps(even, hi, odd));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::grad::testutil::uniform;
    use ndarray::{Array4, ArrayD};

    fn avx512() -> bool {
        PackedRows::pack(Array2::<f32>::zeros((1, 1)).view()).is_some()
    }

    /// y[n, m, oy, ox] = b[m] + Σ_{c, i, j} w[m, c, i, j]·x[n, c, oy − pt + i, ox − pl + j]
    /// (zero outside the input), in f64.
    fn naive(x: &ArrayD<f64>, w: &ArrayD<f64>, b: &[f64], plane: &Plane) -> Vec<f64> {
        let (n, depth, rows) = (x.shape()[0], x.shape()[1], w.shape()[0]);
        let ([ih, iw], [pt, pl], [oh, ow]) = (plane.input, plane.pad, plane.out);
        let mut y = Vec::new();
        for (ni, m, oy, ox) in ndarray::indices((n, rows, oh, ow)) {
            let mut acc = b[m];
            for (c, i, j) in ndarray::indices((depth, 3, 3)) {
                let (r, q) = ((oy + i) as isize - pt as isize, (ox + j) as isize - pl as isize);
                if (0..ih as isize).contains(&r) && (0..iw as isize).contains(&q) {
                    acc += w[[m, c, i, j]] * x[[ni, c, r as usize, q as usize]];
                }
            }
            y.push(acc);
        }
        y
    }

    fn f32s(a: &ArrayD<f64>) -> Vec<f32> {
        a.iter().map(|&v| v as f32).collect()
    }

    /// Against the definition in f64 over odd and even output sizes, a row
    /// of more than 16 tiles (two vector steps, the second partial), rows of
    /// 16 < width < 32 (the second half of an output store is partial), pads
    /// 0–2 on either side (pad_end shows as the output size), channel counts
    /// off the 8/12-row panels, and small chunks that split images and tile
    /// rows — which must give bit-identical results to one chunk.
    #[test]
    fn conv_matches_the_definition() {
        if !avx512() {
            eprintln!("this CPU has no AVX-512F: Winograd is not used and was not checked");
            return;
        }
        // (n, depth, rows, input, pad (top, left), pad (bottom, right))
        let cases = [
            (2, 8, 13, [7, 9], [1, 1], [1, 1]),
            (1, 9, 8, [10, 40], [1, 1], [1, 1]),
            (3, 16, 12, [5, 6], [2, 0], [1, 2]),
            (1, 8, 8, [6, 6], [0, 0], [0, 0]),
            (2, 12, 20, [11, 35], [0, 2], [2, 1]),
            (1, 8, 9, [5, 20], [1, 1], [1, 1]),
        ];
        for (k, (n, depth, rows, input, pad, pad_end)) in cases.into_iter().enumerate() {
            let out = [input[0] + pad[0] + pad_end[0] - 2, input[1] + pad[1] + pad_end[1] - 2];
            let plane = Plane { input, pad, out };
            let x = uniform(&[n, depth, input[0], input[1]], 30 + k as u64, -1.0, 1.0);
            let w = uniform(&[rows, depth, 3, 3], 40 + k as u64, -0.3, 0.3);
            let b = uniform(&[rows], 50 + k as u64, -0.5, 0.5);
            let b: Vec<f64> = b.iter().copied().collect();
            let want = naive(&x, &w, &b, &plane);
            let w32 = Array4::from_shape_vec((rows, depth, 3, 3), f32s(&w)).unwrap();
            let wg = Winograd::new(w32.view()).expect("f32 on AVX-512 with ≥ 8 channels each way");
            let (x32, b32): (Vec<f32>, Vec<f32>) = (f32s(&x), b.iter().map(|&v| v as f32).collect());
            // A guard of NaNs after the output must stay untouched.
            let mut whole = vec![f32::NAN; want.len() + 64];
            assert!(wg.conv(&x32, n, &plane, Some(&b32), &mut whole));
            assert!(whole[want.len()..].iter().all(|v| v.is_nan()), "case {k}: wrote past the output");
            // Each output is about 16·depth products of transformed values a
            // few times its own scale, rounded in f32 (ε ≈ 6e-8): errors of
            // a few 1e-6 of the output scale; 2e-5 leaves a margin.
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (i, (a, e)) in whole.iter().zip(&want).enumerate() {
                assert!((f64::from(*a) - e).abs() <= 2e-5 * scale, "case {k}, output {i}: {a} vs {e}");
            }
            for chunk_values in [1, 16 * (rows + depth) * 2 * out[1].div_ceil(2)] {
                let mut chunked = vec![f32::NAN; want.len() + 64];
                assert!(wg.conv_in_chunks(&x32, n, &plane, Some(&b32), &mut chunked, chunk_values));
                assert!(chunked.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()), "case {k}");
            }
        }
    }

    /// A NaN in the input reaches exactly the outputs whose window holds it
    /// (each tile's two outputs per axis combine d0..d2 and d1..d3 only).
    #[test]
    fn a_nan_reaches_exactly_the_windows_that_hold_it() {
        if !avx512() {
            return;
        }
        let plane = Plane { input: [6, 7], pad: [1, 1], out: [6, 7] };
        let w = Array4::from_shape_fn((8, 8, 3, 3), |(m, c, i, j)| 0.1 + (m + c + i + j) as f32 * 0.01);
        let wg = Winograd::new(w.view()).unwrap();
        for (r, q) in [(0, 0), (2, 3), (5, 6), (3, 0)] {
            let mut x = vec![0.5f32; 8 * 6 * 7];
            x[2 * 42 + r * 7 + q] = f32::NAN;
            let mut y = vec![0.0f32; 8 * 6 * 7];
            assert!(wg.conv(&x, 1, &plane, None, &mut y));
            for (i, v) in y.iter().enumerate() {
                let (oy, ox) = ((i % 42) / 7, i % 7);
                let holds = oy.abs_diff(r) <= 1 && ox.abs_diff(q) <= 1;
                assert_eq!(v.is_nan(), holds, "NaN at ({r}, {q}), output ({oy}, {ox})");
            }
        }
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        let w = |shape: (usize, usize, usize, usize)| Array4::<f32>::zeros(shape);
        assert!(Winograd::new(w((8, 8, 5, 5)).view()).is_none(), "5×5 kernel");
        assert!(Winograd::new(w((8, 1, 3, 3)).view()).is_none(), "one input channel");
        assert!(Winograd::new(w((4, 8, 3, 3)).view()).is_none(), "four output channels");
        assert!(Winograd::new(Array4::<f64>::zeros((8, 8, 3, 3)).view()).is_none(), "f64");
        let Some(wg) = Winograd::new(w((64, 64, 3, 3)).view()) else { return };
        let p7 = Plane { input: [7, 7], pad: [1, 1], out: [7, 7] };
        let mut y = vec![0.0f32; 64 * 49];
        assert!(!wg.conv(&[0.0f32; 10], 1, &p7, None, &mut y), "input too short");
        assert!(!wg.conv(&vec![0.0f32; 64 * 49], 1, &p7, Some(&[0.0f32; 3]), &mut y), "bias too short");
    }
}
