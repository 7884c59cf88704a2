//! Winograd F(2×2, 3×3) and F(4×4, 3×3): 3×3 stride-1 convolutions with
//! 16 multiplications per 2×2 output tile and channel pair instead of 36,
//! or 36 per 4×4 tile instead of 144.
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
//! tile d and kernel g, Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A. F(4×4, 3×3) is the
//! same with 6×6 input tiles and the 6-point matrices of Lavin & Gray
//! (interpolation at 0, ±1, ±2, ∞). Summed over input channels, each
//! position ξ of the transformed tile (16 or 36) is a matrix product U_ξ
//! (out channels × in channels, the transformed kernel, packed once) · V_ξ
//! (in channels × tiles), run by the packed AVX-512 kernel of `panel`. Per
//! output element the work is 16/4 = 4 (or 36/16 = 2.25) products per
//! channel pair instead of 9; the transforms are linear in the channels.
//!
//! Every output depends only on its own tile's column of V, and the tile
//! size only on the plane's output size, so a sample's result does not
//! depend on the batch or on how tiles are chunked. Rounding differs from
//! the direct sum (the transformed values are sums of up to nine products,
//! weighted by up to 5 and 1/24 in F(4×4)): about 2e-7 of the output's
//! scale in F(2×2) and 3e-6 in F(4×4), measured in the tests below. In
//! F(2×2) a NaN or infinity reaches exactly the outputs whose window holds
//! it; in F(4×4) it can also reach the rest of its 4×4 output tile (the
//! transforms mix d1…d4 into every output), never beyond.
//! Like `panel`, this runs only with f32 on CPUs with AVX-512F or AVX2 and
//! FMA (`Winograd::new` declines elsewhere and the convolution keeps its
//! direct path). The AVX-512 transforms (`avx512`) split and interleave
//! tiles with two-source permutes; the AVX2 ones (`blocked`) gather a block
//! of tiles into vectors from a zero-bordered copy of the input; the
//! arithmetic is the same, operation for operation, so both give the same bits.

use super::Elem;
use super::panel::{PackedRows, as_f32, as_f32_mut};
use super::simd::Isa;
use super::value::with_scratch;
use ndarray::{Array2, ArrayView4};

/// G (4×3) of F(2×2, 3×3), the kernel transform.
const G2: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];

/// G (6×3) of F(4×4, 3×3) (interpolation points 0, ±1, ±2, ∞; its Bᵀ and
/// Aᵀ are written out in `avx512::input4` and `avx512::output4`).
const G4: [[f64; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Values of V and M (the transformed input and products) per chunk of
/// tiles: 4 MiB, so that a chunk's data stays near the L2/L3 caches while
/// the chunks give each product hundreds of columns.
const CHUNK_VALUES: usize = 1 << 20;

/// The output tile a convolution is computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tile {
    /// F(2×2, 3×3): 4×4 input tiles, 16 products per 4 outputs.
    F2,
    /// F(4×4, 3×3): 6×6 input tiles, 36 products per 16 outputs.
    F4,
}

impl Tile {
    /// Outputs per tile side.
    fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Input values per tile side, and the number of positions ξ (α²).
    fn alpha(self) -> usize {
        self.m() + 2
    }

    fn positions(self) -> usize {
        self.alpha() * self.alpha()
    }

    /// The tile for a plane, from its output size alone (never the batch:
    /// a sample's result must not depend on its batch).
    /// F(4×4) does 2.25 products per output against F(2×2)'s 4, but its
    /// transforms cost about as much per output and a plane that is not a
    /// multiple of 4 wastes more of them; measured on Zen 4, it wins from
    /// about 14 outputs per side (see `benches/HISTORY.md`, seventh pass).
    fn for_plane(plane: &Plane) -> Tile {
        if plane.out[0].min(plane.out[1]) >= F4_FROM { Tile::F4 } else { Tile::F2 }
    }
}

/// Planes with at least this many outputs per side use F(4×4, 3×3).
const F4_FROM: usize = 14;

/// A 3×3 kernel of `rows` output and `depth` input channels, in Winograd
/// form for each tile size, transformed and packed when a plane first asks
/// for it (a layer usually sees one plane size, so usually only one is).
pub(super) struct Winograd {
    /// [rows, depth, 3, 3].
    weight: ndarray::Array4<f32>,
    /// Per tile (`Tile as usize`), `u[ξ]` = U_ξ[m, c] = (G g_{m,c} Gᵀ)[ξ / α][ξ % α], packed.
    packed: [std::sync::OnceLock<Vec<PackedRows>>; 2],
    /// The instruction set of the transforms and of the products.
    isa: Isa,
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
    fn tiles(&self, tile: Tile) -> [usize; 2] {
        [self.out[0].div_ceil(tile.m()), self.out[1].div_ceil(tile.m())]
    }

    /// The chunks of the `units` tile rows (one image's row of tiles
    /// each), of about `values` values of V and M each for `channels`
    /// input and output channels together. Every chunk reads all of U (α²
    /// matrices of out × in channels) once more, and a product's speed
    /// falls with its columns, so a remainder of less than half a chunk
    /// joins the last one: on
    /// ResNet-18's 14×14 planes at batch 4 a chunk of 14 tile rows and one
    /// of 2 became one of 16, and the 2-row chunk's products (8 columns)
    /// had run at a third of the others' speed. (Equal shares instead,
    /// e.g. 98 columns where there were 112 and 84, were slower: a product
    /// is fastest at a multiple of 32 columns.)
    fn chunks(&self, tile: Tile, channels: usize, units: usize, values: usize) -> Vec<std::ops::Range<usize>> {
        let per = (values / (tile.positions() * channels * self.tiles(tile)[1]).max(1)).max(1);
        let mut chunks: Vec<std::ops::Range<usize>> =
            (0..units).step_by(per).map(|s| s..(s + per).min(units)).collect();
        if chunks.len() > 1 && chunks.last().is_some_and(|c| 2 * c.len() < per) {
            let tail = chunks.pop().map_or(units, |c| c.end);
            if let Some(last) = chunks.last_mut() {
                last.end = tail;
            }
        }
        chunks
    }
}

/// Padding between the matrices V_ξ (and M_ξ), in values. Without it
/// their distance is often a multiple of 4 KiB (16 channels × 256 tiles),
/// the streams the transforms read or write fall into the same L1 cache
/// sets, and the transforms ran at a fraction of their speed.
const SKEW: usize = 16;

impl Winograd {
    /// Keeps `w` ([rows, depth, 3, 3]) for its Winograd forms; `None` unless
    /// `T` is f32 on a CPU with a packed kernel (see `PackedRows::pack`) and
    /// both channel counts fill the kernel's panels of at least 6 rows.
    pub fn new<T: Elem>(w: ArrayView4<'_, T>) -> Option<Self> {
        Self::new_for(Isa::detect()?, w)
    }

    /// [`Winograd::new`] for the kernels of `isa`, which this CPU must have.
    pub fn new_for<T: Elem>(isa: Isa, w: ArrayView4<'_, T>) -> Option<Self> {
        let (rows, depth, kh, kw) = w.dim();
        if (kh, kw) != (3, 3) || rows < 8 || depth < 8 || as_f32(&[T::zero()]).is_none() {
            return None;
        }
        Some(Winograd { weight: w.mapv(|v| v.to_f32().unwrap_or(f32::NAN)), packed: Default::default(), isa })
    }

    pub fn rows(&self) -> usize {
        self.weight.dim().0
    }

    pub fn depth(&self) -> usize {
        self.weight.dim().1
    }

    /// The kernel in `tile`'s form, transformed and packed on first use.
    fn transformed(&self, tile: Tile) -> &[PackedRows] {
        self.packed[tile as usize].get_or_init(|| transform(self.isa, self.weight.view(), tile))
    }

    /// y[n, m] = Σ_c conv(x[n, c], w[m, c]) (+ bias[m]) for `n` images of
    /// `depth` planes of `plane.input` in `x` and `rows` planes of
    /// `plane.out` in `y`, every value of which is written. Returns false,
    /// touching nothing, when `T` is not f32 or a slice is too short.
    pub fn conv<T: Elem>(&self, x: &[T], n: usize, plane: &Plane, bias: Option<&[T]>, y: &mut [T]) -> bool {
        self.conv_in_chunks(Tile::for_plane(plane), x, n, plane, bias, y, CHUNK_VALUES)
    }

    /// [`Winograd::conv`] in `tile`, with chunks of about `chunk_values`
    /// values of V and M (tests make them small to cross images and tile rows).
    #[allow(clippy::too_many_arguments)]
    fn conv_in_chunks<T: Elem>(
        &self,
        tile: Tile,
        x: &[T],
        n: usize,
        plane: &Plane,
        bias: Option<&[T]>,
        y: &mut [T],
        chunk_values: usize,
    ) -> bool {
        let (Some(x), Some(y)) = (as_f32(x), as_f32_mut(y)) else { return false };
        let (rows, depth) = (self.rows(), self.depth());
        let bias = match bias.map(as_f32) {
            Some(Some(b)) if b.len() >= rows => Some(b),
            Some(_) => return false,
            None => None,
        };
        let ([ih, iw], [oh, ow]) = (plane.input, plane.out);
        if x.len() < n * depth * ih * iw || y.len() < n * rows * oh * ow {
            return false;
        }
        let [th, tw] = plane.tiles(tile);
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
            let (u, positions) = (self.transformed(tile), tile.positions());
            if u.len() != positions {
                return false;
            }
            let chunks = plane.chunks(tile, rows + depth, units, chunk_values);
            let most = chunks.iter().map(|c| c.len()).max().unwrap_or(0) * tw;
            let (v_len, m_len) = (positions * (depth * most + SKEW), positions * (rows * most + SKEW));
            with_scratch(v_len + m_len, |s: &mut [f32]| {
                let (v, m) = s.split_at_mut(v_len);
                for chunk in chunks {
                    let nt = chunk.len() * tw;
                    let (v_stride, m_stride) = (depth * nt + SKEW, rows * nt + SKEW);
                    for (k, img, tys) in segments(chunk.clone(), th) {
                        for c in 0..depth {
                            let x_plane = &x[(img * depth + c) * ih * iw..][..ih * iw];
                            let v = &mut v[c * nt + k * tw..];
                            // SAFETY: a Winograd exists only for an instruction
                            // set this CPU has; v holds α² slices of v_stride
                            // from here, each with the segment's tiles.
                            unsafe {
                                match (self.isa, tile) {
                                    (Isa::Avx512, Tile::F2) => avx512::input(x_plane, plane, tys.clone(), v, v_stride),
                                    (Isa::Avx512, Tile::F4) => avx512::input4(x_plane, plane, tys.clone(), v, v_stride),
                                    (Isa::Avx2, Tile::F2) => avx2::input(x_plane, plane, tys.clone(), v, v_stride),
                                    (Isa::Avx2, Tile::F4) => avx2::input4(x_plane, plane, tys.clone(), v, v_stride),
                                }
                            }
                        }
                    }
                    for (xi, u) in u.iter().enumerate() {
                        let vx = &v[xi * v_stride..][..depth * nt];
                        // The slices hold these shapes and the type is f32: it cannot decline.
                        u.mul(vx, nt, &mut m[xi * m_stride..][..rows * nt], false);
                    }
                    for (k, img, tys) in segments(chunk, th) {
                        for r in 0..rows {
                            let y_plane = &mut y[(img * rows + r) * oh * ow..][..oh * ow];
                            let b = bias.map_or(0.0, |b| b[r]);
                            let m = &m[r * nt + k * tw..];
                            // SAFETY: the instruction set is there (as above); m
                            // holds α² slices of m_stride from this offset with
                            // the segment's tiles in each.
                            unsafe {
                                match (self.isa, tile) {
                                    (Isa::Avx512, Tile::F2) => {
                                        avx512::output(m, m_stride, plane, tys.clone(), b, y_plane)
                                    }
                                    (Isa::Avx512, Tile::F4) => {
                                        avx512::output4(m, m_stride, plane, tys.clone(), b, y_plane)
                                    }
                                    (Isa::Avx2, Tile::F2) => avx2::output(m, m_stride, plane, tys.clone(), b, y_plane),
                                    (Isa::Avx2, Tile::F4) => avx2::output4(m, m_stride, plane, tys.clone(), b, y_plane),
                                }
                            }
                        }
                    }
                }
            });
            true
        }
    }
}

/// U_ξ = (G g Gᵀ)[ξ / α][ξ % α] per channel pair of `w`, in f64 and
/// rounded once, each packed.
fn transform(isa: Isa, w: ArrayView4<'_, f32>, tile: Tile) -> Vec<PackedRows> {
    let (rows, depth, _, _) = w.dim();
    let g_rows: &[[f64; 3]] = match tile {
        Tile::F2 => &G2,
        Tile::F4 => &G4,
    };
    let alpha = tile.alpha();
    let mut a: Vec<Array2<f32>> = (0..tile.positions()).map(|_| Array2::zeros((rows, depth))).collect();
    for (m, c) in ndarray::indices((rows, depth)) {
        let g: [[f64; 3]; 3] = std::array::from_fn(|r| std::array::from_fn(|s| f64::from(w[[m, c, r, s]])));
        // (G g)[i][s], then (G g Gᵀ)[i][j] = Σ_s (G g)[i][s]·G[j][s].
        let mut gg = [[0.0f64; 3]; 6];
        for (gg, gi) in gg.iter_mut().zip(g_rows) {
            *gg = std::array::from_fn(|s| (0..3).map(|r| gi[r] * g[r][s]).sum());
        }
        for (xi, a) in a.iter_mut().enumerate() {
            let (i, j) = (xi / alpha, xi % alpha);
            a[[m, c]] = (0..3).map(|s| gg[i][s] * g_rows[j][s]).sum::<f64>() as f32;
        }
    }
    // `Winograd::new` checked f32 and the instruction set, the only reasons
    // `pack` declines; `conv` checks that every position was packed all the same.
    a.iter().filter_map(|a| PackedRows::pack_for(isa, a.view())).collect()
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

/// The transforms of `avx512`, same contracts and same arithmetic, on AVX2:
/// over blocks of `BLOCK` consecutive tiles of a segment (tile-row-major, as
/// they lie in V and M), each value of a tile (input d_ij, transformed V_ξ,
/// product M_ξ) is two 8-lane vectors over the block's tiles, so every
/// operation is one vector instruction per 8 tiles. (Written as plain array
/// loops, the compiler left this arithmetic scalar.)
/// The segment's input rows are first copied into a zero-bordered buffer
/// that holds every tile's window, so the gathers need no bounds checks;
/// outputs are scattered into a buffer of whole tiles, whose rows inside
/// the plane are then copied out. Lanes past the segment's last tile are
/// computed from tile 0's values and never stored.
mod blocked {
    use super::super::simd::{F32x8, Lanes as _};
    use super::Plane;
    use std::ops::Range;

    /// Tiles per block: two 8-lane vectors.
    const BLOCK: usize = 16;

    /// One value of each of a block's tiles. Every operation on it is an
    /// AVX2 instruction: these functions are `unsafe` for that reason only,
    /// and are called only from the `avx2` entry points.
    #[derive(Clone, Copy)]
    struct Lanes([F32x8; 2]);

    thread_local! {
        /// Each worker's bordered input or whole-tile output buffer.
        static BUFFER: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    }

    /// The worker's buffer, resized to `len` (contents unspecified); give it
    /// back with `BUFFER.set`. (Not a closure-taking helper: a closure is
    /// compiled without the caller's instruction set unless inlined.)
    #[inline(always)]
    fn take_buffer(len: usize) -> Vec<f32> {
        let mut buffer = BUFFER.take();
        buffer.resize(len, 0.0);
        buffer
    }

    /// # Safety (every function taking or returning `Lanes`)
    /// AVX2 and FMA are available.
    #[inline(always)]
    unsafe fn zero() -> Lanes {
        unsafe { Lanes([F32x8::zero(); 2]) }
    }

    #[inline(always)]
    unsafe fn add(a: &Lanes, b: &Lanes) -> Lanes {
        unsafe { Lanes([F32x8::add(a.0[0], b.0[0]), F32x8::add(a.0[1], b.0[1])]) }
    }

    #[inline(always)]
    unsafe fn sub(a: &Lanes, b: &Lanes) -> Lanes {
        unsafe { Lanes([F32x8::sub(a.0[0], b.0[0]), F32x8::sub(a.0[1], b.0[1])]) }
    }

    /// k·a + b, rounded once (AVX-512's fmadd).
    #[inline(always)]
    unsafe fn fma(k: f32, a: &Lanes, b: &Lanes) -> Lanes {
        unsafe {
            let k = F32x8::splat(k);
            Lanes([F32x8::fmadd(k, a.0[0], b.0[0]), F32x8::fmadd(k, a.0[1], b.0[1])])
        }
    }

    /// −k·a + b, rounded once (AVX-512's fnmadd: −(k·a) + b is (−k)·a + b exactly).
    #[inline(always)]
    unsafe fn fnma(k: f32, a: &Lanes, b: &Lanes) -> Lanes {
        unsafe { fma(-k, a, b) }
    }

    /// The lanes from 16 values.
    #[inline(always)]
    unsafe fn from_array(v: &[f32; BLOCK]) -> Lanes {
        unsafe { Lanes([F32x8::load(v.as_ptr()), F32x8::load(v.as_ptr().add(8))]) }
    }

    #[inline(always)]
    unsafe fn to_array(t: &Lanes) -> [f32; BLOCK] {
        let mut out = [0.0; BLOCK];
        unsafe {
            F32x8::store(out.as_mut_ptr(), t.0[0]);
            F32x8::store(out.as_mut_ptr().add(8), t.0[1]);
        }
        out
    }

    /// The first `count` values of `s` (which holds at least that many), zero after.
    #[inline(always)]
    unsafe fn load(s: &[f32], count: usize) -> Lanes {
        if count == BLOCK {
            let s = &s[..BLOCK];
            // SAFETY: s holds 16 values.
            return unsafe { Lanes([F32x8::load(s.as_ptr()), F32x8::load(s.as_ptr().add(8))]) };
        }
        let mut out = [0.0; BLOCK];
        out[..count].copy_from_slice(&s[..count]);
        unsafe { from_array(&out) }
    }

    /// Stores the first `count` lanes of `t` at the start of `s`.
    #[inline(always)]
    unsafe fn store(s: &mut [f32], t: &Lanes, count: usize) {
        if count == BLOCK {
            let s = &mut s[..BLOCK];
            // SAFETY: s holds 16 values.
            return unsafe {
                F32x8::store(s.as_mut_ptr(), t.0[0]);
                F32x8::store(s.as_mut_ptr().add(8), t.0[1]);
            };
        }
        s[..count].copy_from_slice(&unsafe { to_array(t) }[..count]);
    }

    /// A segment's tiles of side `m` (output) and `alpha` (input): `tys.len()`
    /// tile rows of `tw` tiles.
    struct Segment {
        m: usize,
        alpha: usize,
        tw: usize,
        tiles: usize,
    }

    impl Segment {
        /// The segment of tile rows `tys` in tiles of m×m outputs; `None`
        /// when it has no tiles (nothing to transform).
        fn new(m: usize, plane: &Plane, tys: &Range<usize>) -> Option<Self> {
            let tw = plane.out[1].div_ceil(m);
            let seg = Segment { m, alpha: m + 2, tw, tiles: tys.len() * tw };
            (seg.tiles > 0).then_some(seg)
        }

        /// Width of the bordered input buffer (every tile's window).
        fn in_width(&self) -> usize {
            self.m * self.tw + 2
        }

        /// Width of the whole-tile output buffer.
        fn out_width(&self) -> usize {
            self.m * self.tw
        }

        /// The blocks: (first tile, tiles, per lane the offset of its tile's
        /// top-left value in a buffer of `width`; tile 0's past the end).
        /// Checks that each lane's tile, `side` values square, lies inside a
        /// buffer of `len` (true by construction), which is what lets
        /// [`gather`] and the scatters skip the per-value bounds checks.
        fn blocks(
            &self,
            width: usize,
            side: usize,
            len: usize,
        ) -> impl Iterator<Item = (usize, usize, [usize; BLOCK])> + '_ {
            (0..self.tiles).step_by(BLOCK).map(move |t0| {
                let count = (self.tiles - t0).min(BLOCK);
                let at: [usize; BLOCK] = std::array::from_fn(|l| {
                    let t = if l < count { t0 + l } else { 0 };
                    self.m * ((t / self.tw) * width + t % self.tw)
                });
                assert!(side <= width && at.iter().all(|&a| a + (side - 1) * width + side <= len));
                (t0, count, at)
            })
        }

        /// The worker's buffer holding the input rows the segment's tiles
        /// read (rows of `in_width`), zero where they fall outside the plane;
        /// give it back with `BUFFER.set`.
        fn bordered(&self, x: &[f32], plane: &Plane, tys: &Range<usize>) -> Vec<f32> {
            let ([ih, iw], [pt, pl]) = (plane.input, plane.pad);
            let width = self.in_width();
            let mut buffer = take_buffer((self.m * (tys.len() - 1) + self.alpha) * width);
            for (i, row) in buffer.chunks_exact_mut(width).enumerate() {
                row.fill(0.0);
                let Some(r) = (self.m * tys.start + i).checked_sub(pt).filter(|&r| r < ih) else { continue };
                // Input column q lands at q + pl, clipped to the buffer.
                let n = iw.min(width.saturating_sub(pl));
                row[pl..pl + n].copy_from_slice(&x[r * iw..][..n]);
            }
            buffer
        }
    }

    /// Gathers value (i, j) of every lane's tile, `offset` = i·width + j.
    ///
    /// # Safety
    /// AVX2 is available; `at` came from [`Segment::blocks`] for `buffer`
    /// and a tile side above i and j (so every `at[l] + offset` lies inside
    /// `buffer`).
    #[inline(always)]
    unsafe fn gather(buffer: &[f32], at: &[usize; BLOCK], offset: usize) -> Lanes {
        let mut v = [0.0; BLOCK];
        for (v, &at) in v.iter_mut().zip(at) {
            // SAFETY: the caller's contract.
            *v = unsafe { *buffer.get_unchecked(at + offset) };
        }
        unsafe { from_array(&v) }
    }

    /// Values j = 0..A of the tile row starting `offset` (= i·width) into
    /// every lane's tile.
    ///
    /// # Safety
    /// As [`gather`], for a tile side of at least A (and above i).
    #[inline(always)]
    unsafe fn tile_row<const A: usize>(buffer: &[f32], at: &[usize; BLOCK], offset: usize) -> [Lanes; A] {
        unsafe {
            let mut d = [zero(); A];
            for (j, d) in d.iter_mut().enumerate() {
                *d = gather(buffer, at, offset + j);
            }
            d
        }
    }

    /// As `avx512::input`.
    ///
    /// # Safety
    /// AVX2 and FMA are available (the slices are checked).
    #[inline(always)]
    pub unsafe fn input(x: &[f32], plane: &Plane, tys: Range<usize>, v: &mut [f32], stride: usize) {
        let Some(seg) = Segment::new(2, plane, &tys) else { return };
        let width = seg.in_width();
        let buffer = seg.bordered(x, plane, &tys);
        // SAFETY: AVX2 and FMA (the contract); the gathers' offsets are
        // within the side `blocks` checked.
        unsafe {
            for (t0, count, at) in seg.blocks(width, 4, buffer.len()) {
                let mut rows = [[zero(); 4]; 4];
                for (i, row) in rows.iter_mut().enumerate() {
                    let d: [Lanes; 4] = tile_row(&buffer, &at, i * width);
                    *row = [sub(&d[0], &d[2]), add(&d[1], &d[2]), sub(&d[2], &d[1]), sub(&d[1], &d[3])];
                }
                let [r0, r1, r2, r3] = &rows;
                for j in 0..4 {
                    let (d0, d1, d2, d3) = (&r0[j], &r1[j], &r2[j], &r3[j]);
                    for (q, t) in [sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3)].iter().enumerate() {
                        store(&mut v[(4 * q + j) * stride + t0..], t, count);
                    }
                }
            }
        }
        BUFFER.set(buffer);
    }

    /// Copies the rows of the whole-tile output `buffer` (rows of
    /// `out_width`) that lie inside the plane into `y`.
    fn copy_rows(seg: &Segment, plane: &Plane, tys: &Range<usize>, buffer: &[f32], y: &mut [f32]) {
        let [oh, ow] = plane.out;
        for (r, row) in buffer.chunks_exact(seg.out_width()).enumerate() {
            let r = seg.m * tys.start + r;
            if r < oh {
                y[r * ow..][..ow].copy_from_slice(&row[..ow]);
            }
        }
    }

    /// Writes lane l of `t` at `at[l] + offset` of `buffer`, for l < count.
    ///
    /// # Safety
    /// AVX2 is available; `at` came from [`Segment::blocks`] for `buffer`
    /// and a tile side above the row and column `offset` stands for.
    #[inline(always)]
    unsafe fn scatter(buffer: &mut [f32], at: &[usize; BLOCK], offset: usize, t: &Lanes, count: usize) {
        let t = unsafe { to_array(t) };
        for l in 0..count {
            // SAFETY: the caller's contract.
            unsafe { *buffer.get_unchecked_mut(at[l] + offset) = t[l] };
        }
    }

    /// As `avx512::output`.
    ///
    /// # Safety
    /// As [`input`].
    #[inline(always)]
    pub unsafe fn output(m: &[f32], stride: usize, plane: &Plane, tys: Range<usize>, bias: f32, y: &mut [f32]) {
        let Some(seg) = Segment::new(2, plane, &tys) else { return };
        let width = seg.out_width();
        let mut buffer = take_buffer(seg.m * tys.len() * width);
        let len = buffer.len();
        // SAFETY: AVX2 and FMA (the contract); the scatters' offsets are
        // within the side `blocks` checked.
        unsafe {
            let bias = from_array(&[bias; BLOCK]);
            // (Plain calls, not closures: see `take_buffer`.)
            #[inline(always)]
            unsafe fn add3(a: &Lanes, b: &Lanes, c: &Lanes) -> Lanes {
                unsafe { add(&add(a, b), c) }
            }
            #[inline(always)]
            unsafe fn sub3(a: &Lanes, b: &Lanes, c: &Lanes) -> Lanes {
                unsafe { sub(&sub(a, b), c) }
            }
            for (t0, count, at) in seg.blocks(width, 2, len) {
                let mut l = [zero(); 16];
                for (xi, l) in l.iter_mut().enumerate() {
                    *l = load(&m[xi * stride + t0..], count);
                }
                let (mut s0, mut s1) = ([zero(); 4], [zero(); 4]);
                for j in 0..4 {
                    s0[j] = add3(&l[j], &l[4 + j], &l[8 + j]);
                    s1[j] = sub3(&l[4 + j], &l[8 + j], &l[12 + j]);
                }
                for (dr, s) in [s0, s1].iter().enumerate() {
                    let even = add(&add3(&s[0], &s[1], &s[2]), &bias);
                    let odd = add(&sub3(&s[1], &s[2], &s[3]), &bias);
                    scatter(&mut buffer, &at, dr * width, &even, count);
                    scatter(&mut buffer, &at, dr * width + 1, &odd, count);
                }
            }
        }
        copy_rows(&seg, plane, &tys, &buffer, y);
        BUFFER.set(buffer);
    }

    /// As `avx512::bt4`.
    #[inline(always)]
    unsafe fn bt4(d: &[Lanes; 6]) -> [Lanes; 6] {
        unsafe {
            let (d12, d1m2) = (add(&d[1], &d[2]), sub(&d[1], &d[2]));
            let (d42, d31) = (sub(&d[4], &d[2]), sub(&d[3], &d[1]));
            [
                fma(4.0, &d[0], &fnma(5.0, &d[2], &d[4])),
                fnma(4.0, &d12, &add(&d[3], &d[4])),
                fma(4.0, &d1m2, &sub(&d[4], &d[3])),
                fma(2.0, &d31, &d42),
                fnma(2.0, &d31, &d42),
                fma(4.0, &d[1], &fnma(5.0, &d[3], &d[5])),
            ]
        }
    }

    /// As `avx512::at4`.
    #[inline(always)]
    unsafe fn at4(m: &[Lanes; 6]) -> [Lanes; 4] {
        unsafe {
            let (a, b) = (add(&m[1], &m[2]), sub(&m[1], &m[2]));
            let (c, e) = (add(&m[3], &m[4]), sub(&m[3], &m[4]));
            [add(&add(&m[0], &a), &c), fma(2.0, &e, &b), fma(4.0, &c, &a), fma(8.0, &e, &add(&b, &m[5]))]
        }
    }

    /// As `avx512::input4`.
    ///
    /// # Safety
    /// As [`input`].
    #[inline(always)]
    pub unsafe fn input4(x: &[f32], plane: &Plane, tys: Range<usize>, v: &mut [f32], stride: usize) {
        let Some(seg) = Segment::new(4, plane, &tys) else { return };
        let width = seg.in_width();
        let buffer = seg.bordered(x, plane, &tys);
        // SAFETY: as in `input`.
        unsafe {
            for (t0, count, at) in seg.blocks(width, 6, buffer.len()) {
                let mut rows = [[zero(); 6]; 6];
                for (i, row) in rows.iter_mut().enumerate() {
                    *row = bt4(&tile_row(&buffer, &at, i * width));
                }
                for j in 0..6 {
                    let mut column = [zero(); 6];
                    for (c, row) in column.iter_mut().zip(&rows) {
                        *c = row[j];
                    }
                    for (i, t) in bt4(&column).iter().enumerate() {
                        store(&mut v[(6 * i + j) * stride + t0..], t, count);
                    }
                }
            }
        }
        BUFFER.set(buffer);
    }

    /// As `avx512::output4`.
    ///
    /// # Safety
    /// As [`input`].
    #[inline(always)]
    pub unsafe fn output4(m: &[f32], stride: usize, plane: &Plane, tys: Range<usize>, bias: f32, y: &mut [f32]) {
        let Some(seg) = Segment::new(4, plane, &tys) else { return };
        let width = seg.out_width();
        let mut buffer = take_buffer(seg.m * tys.len() * width);
        let len = buffer.len();
        // SAFETY: as in `output`.
        unsafe {
            let bias = from_array(&[bias; BLOCK]);
            for (t0, count, at) in seg.blocks(width, 4, len) {
                // s[r][j] = (Aᵀ M)[r][j], r = 0..4.
                let mut s = [[zero(); 6]; 4];
                for j in 0..6 {
                    let mut column = [zero(); 6];
                    for (i, c) in column.iter_mut().enumerate() {
                        *c = load(&m[(6 * i + j) * stride + t0..], count);
                    }
                    for (r, v) in at4(&column).into_iter().enumerate() {
                        s[r][j] = v;
                    }
                }
                for (r, s) in s.iter().enumerate() {
                    for (c, out) in at4(s).iter().enumerate() {
                        scatter(&mut buffer, &at, r * width + c, &add(out, &bias), count);
                    }
                }
            }
        }
        copy_rows(&seg, plane, &tys, &buffer, y);
        BUFFER.set(buffer);
    }
}

/// `blocked` compiled for AVX2 with FMA.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Plane, blocked};
    use std::ops::Range;

    /// # Safety
    /// AVX2 and FMA are available (the slices are checked).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn input(x: &[f32], plane: &Plane, tys: Range<usize>, v: &mut [f32], stride: usize) {
        unsafe { blocked::input(x, plane, tys, v, stride) }
    }

    /// # Safety
    /// As [`input`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn input4(x: &[f32], plane: &Plane, tys: Range<usize>, v: &mut [f32], stride: usize) {
        unsafe { blocked::input4(x, plane, tys, v, stride) }
    }

    /// # Safety
    /// As [`input`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn output(m: &[f32], stride: usize, plane: &Plane, tys: Range<usize>, bias: f32, y: &mut [f32]) {
        unsafe { blocked::output(m, stride, plane, tys, bias, y) }
    }

    /// # Safety
    /// As [`input`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn output4(m: &[f32], stride: usize, plane: &Plane, tys: Range<usize>, bias: f32, y: &mut [f32]) {
        unsafe { blocked::output4(m, stride, plane, tys, bias, y) }
    }
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

    /// Calls `step(offset, live, parts)` for each vector step of F(4×4)
    /// tiles in tile rows `tys` of a plane with `tw` tiles per row: lane 0
    /// is the `offset`-th tile of `tys` in tile-row-major order, `live`
    /// lanes hold tiles, and each part puts `count` tiles of tile row `ty`
    /// from `tx0` in lanes `lane0..`. Rows of at most 8 tiles share a vector
    /// (16 / tw rows per step), as the tiles lie in V and M.
    #[inline(always)]
    fn steps(tys: Range<usize>, tw: usize, mut step: impl FnMut(usize, usize, &[Part])) {
        let per = if tw <= 8 { 16 / tw } else { 1 };
        let mut parts = [Part { ty: 0, tx0: 0, lane0: 0, count: 0 }; 16];
        for first in (0..tys.len()).step_by(per) {
            let rows = (tys.len() - first).min(per);
            for tx0 in (0..tw).step_by(16) {
                let count = (tw - tx0).min(16);
                for (q, part) in parts[..rows].iter_mut().enumerate() {
                    *part = Part { ty: tys.start + first + q, tx0, lane0: q * count, count };
                }
                step(first * tw + tx0, rows * count, &parts[..rows]);
            }
        }
    }

    /// `count` tiles of tile row `ty` from tile `tx0`, in lanes `lane0..`.
    #[derive(Clone, Copy)]
    struct Part {
        ty: usize,
        tx0: usize,
        lane0: usize,
        count: usize,
    }

    impl Part {
        /// Input (or output) column of lane 0's first value, for tiles of
        /// 4 columns from `4·tx0 − shift`.
        fn base(&self, shift: usize) -> isize {
            4 * (self.tx0 as isize - self.lane0 as isize) - shift as isize
        }

        /// At most 7 tiles: their 4·count + 2 ≤ 30 input columns fit two
        /// vectors loaded from the part's first column.
        fn narrow(&self) -> bool {
            self.count <= 7
        }

        fn lanes(&self) -> __mmask16 {
            super::super::panel::lanes_between(self.lane0 as isize, (self.lane0 + self.count) as isize)
        }
    }

    /// Bᵀd of F(4×4, 3×3) along one axis:
    /// Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1].
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn bt4(d: [__m512; 6]) -> [__m512; 6] {
        let (four, five, two) = (_mm512_set1_ps(4.0), _mm512_set1_ps(5.0), _mm512_set1_ps(2.0));
        let (d12, d1m2) = (_mm512_add_ps(d[1], d[2]), _mm512_sub_ps(d[1], d[2]));
        let (d42, d31) = (_mm512_sub_ps(d[4], d[2]), _mm512_sub_ps(d[3], d[1]));
        [
            _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4])),
            _mm512_fnmadd_ps(four, d12, _mm512_add_ps(d[3], d[4])),
            _mm512_fmadd_ps(four, d1m2, _mm512_sub_ps(d[4], d[3])),
            _mm512_fmadd_ps(two, d31, d42),
            _mm512_fnmadd_ps(two, d31, d42),
            _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5])),
        ]
    }

    /// Aᵀm of F(4×4, 3×3) along one axis:
    /// Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1].
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn at4(m: [__m512; 6]) -> [__m512; 4] {
        let (a, b) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
        let (c, e) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
        [
            _mm512_add_ps(_mm512_add_ps(m[0], a), c),
            _mm512_fmadd_ps(_mm512_set1_ps(2.0), e, b),
            _mm512_fmadd_ps(_mm512_set1_ps(4.0), c, a),
            _mm512_fmadd_ps(_mm512_set1_ps(8.0), e, _mm512_add_ps(b, m[5])),
        ]
    }

    /// V for one input channel's tile rows `tys` in F(4×4, 3×3):
    /// V_ξ[t] = (Bᵀ d B)[ξ / 6][ξ % 6] of the 6×6 input tile d at
    /// (4·ty − pad[0], 4·tx − pad[1]) (zero outside the input), written to
    /// `v[ξ·stride + t]` with t the tile's place in the tile-row-major order
    /// of `tys`. Per input row, 80 columns are loaded (masked to the
    /// input) and split into d_k[l] = column 4l + k by permutes; each row
    /// is multiplied by B, then Bᵀ combines the six rows' results.
    ///
    /// # Safety
    /// AVX-512F is available, `x.len() ≥ input[0]·input[1]` and
    /// `v.len() ≥ 35·stride + |tys|·tw`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn input4(x: &[f32], plane: &Plane, tys: Range<usize>, v: &mut [f32], stride: usize) {
        let ([ih, iw], [pt, pl]) = (plane.input, plane.pad);
        let tw = plane.out[1].div_ceil(4);
        debug_assert!(x.len() >= ih * iw && v.len() >= 35 * stride + tys.len() * tw);
        // split[k][l] = 4l + k for l < 8: lanes 0..8 of d_k from 32 columns.
        let split: [__m512i; 4] = std::array::from_fn(|k| {
            let k = k as i32;
            _mm512_setr_epi32(k, k + 4, k + 8, k + 12, k + 16, k + 20, k + 24, k + 28, 0, 0, 0, 0, 0, 0, 0, 0)
        });
        // d_{k+4}[l] = d_k[l + 1], the last lane from the fifth vector.
        let next = |k: i32| _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 + k);
        let next = [next(0), next(1)];
        let four_l = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60);
        steps(tys, tw, |offset, live, parts| {
            // Per part: where the loads start and their masks (the columns
            // its tiles read, clipped to the row). A narrow part loads two
            // vectors from its first column, lane l taking column
            // 4·(l − lane0) + k.
            let mut plans = [(0isize, [0 as __mmask16; 5]); 16];
            for (part, plan) in parts.iter().zip(&mut plans) {
                let narrow = part.narrow();
                // The part's first column; lane 0 reads from there (narrow) or 4·lane0 before it.
                let first = 4 * part.tx0 as isize - pl as isize;
                let base = if narrow { first } else { part.base(pl) };
                let (lo, hi) = (first.max(0), (first + 4 * part.count as isize + 2).min(iw as isize));
                let masks = std::array::from_fn(|q| {
                    let at = base + 16 * q as isize;
                    if narrow && q >= 2 { 0 } else { super::super::panel::lanes_between(lo - at, hi - at) }
                });
                *plan = (base, masks);
            }
            let mut rows = [[_mm512_setzero_ps(); 6]; 6];
            for (i, row) in rows.iter_mut().enumerate() {
                let mut d = [_mm512_setzero_ps(); 6];
                for (part, &(base, masks)) in parts.iter().zip(&plans) {
                    let Some(r) = (4 * part.ty + i).checked_sub(pt).filter(|&r| r < ih) else { continue };
                    // SAFETY: only lanes inside row r are loaded (masked-off
                    // lanes are not accessed; their addresses may lie outside
                    // `x`, hence wrapping arithmetic).
                    let raw: [__m512; 5] = std::array::from_fn(|q| unsafe {
                        let p = x.as_ptr().add(r * iw).wrapping_offset(base + 16 * q as isize);
                        if masks[q] == 0 { _mm512_setzero_ps() } else { _mm512_maskz_loadu_ps(masks[q], p) }
                    });
                    let lanes = part.lanes();
                    if part.narrow() {
                        // 4·(l − lane0) + k (wrapping in lanes outside the part, which are not kept).
                        let at = _mm512_sub_epi32(four_l, _mm512_set1_epi32(4 * part.lane0 as i32));
                        for (k, d) in d.iter_mut().enumerate() {
                            let idx = _mm512_add_epi32(at, _mm512_set1_epi32(k as i32));
                            *d = _mm512_mask_mov_ps(*d, lanes, _mm512_permutex2var_ps(raw[0], idx, raw[1]));
                        }
                    } else {
                        // Lane l reads columns base + 4l + k (0 ≤ k < 6) of the 80 loaded.
                        let mut e = [_mm512_setzero_ps(); 6];
                        for k in 0..4 {
                            let lo = _mm512_permutex2var_ps(raw[0], split[k], raw[1]);
                            let hi = _mm512_permutex2var_ps(raw[2], split[k], raw[3]);
                            e[k] = _mm512_shuffle_f32x4::<0x44>(lo, hi);
                        }
                        e[4] = _mm512_permutex2var_ps(e[0], next[0], raw[4]);
                        e[5] = _mm512_permutex2var_ps(e[1], next[1], raw[4]);
                        for (d, e) in d.iter_mut().zip(e) {
                            *d = _mm512_mask_mov_ps(*d, lanes, e);
                        }
                    }
                }
                *row = bt4(d);
            }
            let live = mask(live);
            for j in 0..6 {
                let column: [__m512; 6] = std::array::from_fn(|i| rows[i][j]);
                for (i, t) in bt4(column).into_iter().enumerate() {
                    // SAFETY: stores masked to the step's tiles, inside v.
                    unsafe { _mm512_mask_storeu_ps(v.as_mut_ptr().add((6 * i + j) * stride + offset), live, t) };
                }
            }
        });
    }

    /// Y = Aᵀ M A + `bias` in F(4×4, 3×3) for one output channel's tile rows
    /// `tys`, M_ξ[t] at `m[ξ·stride + t]` (t as in [`input4`]): Aᵀ over the
    /// six rows of M, then along the columns; the four outputs of each tile
    /// and row are interleaved into columns and written where they fall
    /// inside `y` (out[0] × out[1]).
    ///
    /// # Safety
    /// AVX-512F is available, `m.len() ≥ 35·stride + |tys|·tw`,
    /// `y.len() = out[0]·out[1]` and the tile rows lie inside the plane.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn output4(m: &[f32], stride: usize, plane: &Plane, tys: Range<usize>, bias: f32, y: &mut [f32]) {
        let [oh, ow] = plane.out;
        let tw = ow.div_ceil(4);
        debug_assert!(m.len() >= 35 * stride + tys.len() * tw && y.len() == oh * ow && 4 * tys.end < oh + 4);
        let pair_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let pair_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        let quad_lo = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
        let quad_hi = _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
        let bias = _mm512_set1_ps(bias);
        steps(tys, tw, |offset, live, parts| {
            let live = mask(live);
            // s[r][j] = (Aᵀ M)[r][j], r = 0..4.
            let mut s = [[_mm512_setzero_ps(); 6]; 4];
            for j in 0..6 {
                // SAFETY: loads masked to the step's tiles, inside m.
                let column: [__m512; 6] = std::array::from_fn(|i| unsafe {
                    _mm512_maskz_loadu_ps(live, m.as_ptr().add((6 * i + j) * stride + offset))
                });
                for (r, v) in at4(column).into_iter().enumerate() {
                    s[r][j] = v;
                }
            }
            for (r, s) in s.iter().enumerate() {
                let [y0, y1, y2, y3] = at4(*s).map(|v| _mm512_add_ps(v, bias));
                let (p01, p23) = (_mm512_permutex2var_ps(y0, pair_lo, y1), _mm512_permutex2var_ps(y2, pair_lo, y3));
                let (q01, q23) = (_mm512_permutex2var_ps(y0, pair_hi, y1), _mm512_permutex2var_ps(y2, pair_hi, y3));
                // Columns 4l + c of lane l's outputs, 16 per vector.
                let out = [
                    _mm512_permutex2var_ps(p01, quad_lo, p23),
                    _mm512_permutex2var_ps(p01, quad_hi, p23),
                    _mm512_permutex2var_ps(q01, quad_lo, q23),
                    _mm512_permutex2var_ps(q01, quad_hi, q23),
                ];
                for part in parts {
                    let row = 4 * part.ty + r;
                    if row >= oh {
                        continue;
                    }
                    // The part's columns inside the plane; output vector q's lane 0 is column at.
                    let (lo, hi) = (4 * part.tx0 as isize, (4 * (part.tx0 + part.count)).min(ow) as isize);
                    for (q, out) in out.iter().enumerate() {
                        let at = part.base(0) + 16 * q as isize;
                        let k = super::super::panel::lanes_between(lo - at, hi - at);
                        if k != 0 {
                            // SAFETY: stores masked to the part's columns < ow of row < oh.
                            unsafe { _mm512_mask_storeu_ps(y.as_mut_ptr().add(row * ow).wrapping_offset(at), k, *out) };
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::grad::testutil::uniform;
    use ndarray::{Array4, ArrayD};

    /// The instruction sets this CPU has (the tests run the transforms of each).
    fn isas() -> Vec<Isa> {
        let isas = Isa::available();
        if isas.is_empty() {
            eprintln!("this CPU has neither AVX-512F nor AVX2: Winograd is not used and was not checked");
        }
        isas
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

    #[test]
    fn a_remainder_of_less_than_half_a_chunk_joins_the_last_one() {
        // ResNet-18's 14×14 planes in F(4×4): 4 tiles per row, 36 positions; 14 rows fit the budget.
        let plane = Plane { input: [14, 14], pad: [1, 1], out: [14, 14] };
        let values = 14 * Tile::F4.positions() * 512 * 4;
        assert_eq!(plane.chunks(Tile::F4, 512, 16, values), vec![0..16]);
        assert_eq!(plane.chunks(Tile::F4, 512, 30, values), vec![0..14, 14..30]);
        assert_eq!(plane.chunks(Tile::F4, 512, 21, values), vec![0..14, 14..21]);
        assert_eq!(plane.chunks(Tile::F4, 512, 14, values), vec![0..14]);
        assert_eq!(plane.chunks(Tile::F4, 512, 3, 1), vec![0..1, 1..2, 2..3]);
    }

    /// Both tile sizes against the definition in f64 over odd and even
    /// output sizes, a row of more than 16 tiles (two vector steps, the
    /// second partial), rows of 16 < width < 32 (the second half of an
    /// output store is partial), F(4×4) rows of 1–7 tiles (several tile rows
    /// per vector, two-vector loads), of 8 (two rows per vector, the
    /// five-vector split) and of 9, 10 and 18, pads 0–2 on either side
    /// (pad_end shows as the output size), channel counts off the 8/12-row
    /// panels, and small chunks that split images and tile rows — which
    /// must give bit-identical results to one chunk, and every instruction
    /// set bit-identical results to the first.
    #[test]
    fn conv_matches_the_definition() {
        let isas = isas();
        // (n, depth, rows, input, pad (top, left), pad (bottom, right))
        let cases = [
            (2, 8, 13, [7, 9], [1, 1], [1, 1]),
            (1, 9, 8, [10, 40], [1, 1], [1, 1]),
            (3, 16, 12, [5, 6], [2, 0], [1, 2]),
            (1, 8, 8, [6, 6], [0, 0], [0, 0]),
            (2, 12, 20, [11, 35], [0, 2], [2, 1]),
            (1, 8, 9, [5, 20], [1, 1], [1, 1]),
            (1, 8, 8, [30, 30], [1, 1], [1, 1]),
            (2, 8, 8, [9, 28], [1, 1], [1, 1]),
            (1, 8, 8, [6, 70], [0, 1], [2, 1]),
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
            let wgs: Vec<Winograd> = isas
                .iter()
                .map(|&isa| Winograd::new_for(isa, w32.view()).expect("f32, ≥ 8 channels each way"))
                .collect();
            let (x32, b32): (Vec<f32>, Vec<f32>) = (f32s(&x), b.iter().map(|&v| v as f32).collect());
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            // Each output is about α²·depth products of transformed values a
            // few times its own scale, rounded in f32 (ε ≈ 6e-8): measured
            // worst errors are 1.2–1.9e-7 of the output scale in F(2×2) and
            // 1.4–3.1e-6 in F(4×4) (larger transform weights, up to 5 in Bᵀ
            // and 8 in Aᵀ); the bounds leave a margin of ~10×.
            for (tile, tolerance) in [(Tile::F2, 2e-6), (Tile::F4, 3e-5)] {
                let mut first: Option<Vec<f32>> = None;
                for wg in &wgs {
                    // A guard of NaNs after the output must stay untouched.
                    let mut whole = vec![f32::NAN; want.len() + 64];
                    assert!(wg.conv_in_chunks(tile, &x32, n, &plane, Some(&b32), &mut whole, CHUNK_VALUES));
                    assert!(whole[want.len()..].iter().all(|v| v.is_nan()), "case {k} {tile:?}: wrote past the output");
                    for (i, (a, e)) in whole.iter().zip(&want).enumerate() {
                        assert!(
                            (f64::from(*a) - e).abs() <= tolerance * scale,
                            "case {k} {tile:?}, output {i}: {a} vs {e}"
                        );
                    }
                    let one_row = tile.positions() * (rows + depth) * plane.tiles(tile)[1];
                    // 4 rows per chunk: a case with 5 tile rows has a 1-row remainder, which joins the last chunk.
                    for chunk_values in [1, 2 * one_row, 4 * one_row] {
                        let mut chunked = vec![f32::NAN; want.len() + 64];
                        assert!(wg.conv_in_chunks(tile, &x32, n, &plane, Some(&b32), &mut chunked, chunk_values));
                        assert!(
                            chunked.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "case {k} {tile:?}"
                        );
                    }
                    let first = first.get_or_insert_with(|| whole.clone());
                    let same = first.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "case {k} {tile:?}: {:?} differs from {:?}", wg.isa, wgs[0].isa);
                }
            }
        }
    }

    /// A NaN in the input reaches every output whose window holds it. In
    /// F(2×2) it reaches no other (each tile's two outputs per axis combine
    /// d0..d2 and d1..d3 only); in F(4×4) it may reach the rest of those
    /// outputs' tiles (Aᵀ mixes d1..d4 into all four), but no other tile.
    #[test]
    fn a_nan_reaches_the_windows_that_hold_it_and_stays_in_their_tiles() {
        for isa in isas() {
            let plane = Plane { input: [9, 10], pad: [1, 1], out: [9, 10] };
            let (ih, iw) = (9, 10);
            let w = Array4::from_shape_fn((8, 8, 3, 3), |(m, c, i, j)| 0.1 + (m + c + i + j) as f32 * 0.01);
            let wg = Winograd::new_for(isa, w.view()).unwrap();
            for tile in [Tile::F2, Tile::F4] {
                let m = tile.m();
                for (r, q) in [(0, 0), (2, 3), (8, 9), (3, 0), (4, 4), (5, 7)] {
                    let mut x = vec![0.5f32; 8 * ih * iw];
                    x[2 * ih * iw + r * iw + q] = f32::NAN;
                    let mut y = vec![0.0f32; 8 * ih * iw];
                    assert!(wg.conv_in_chunks(tile, &x, 1, &plane, None, &mut y, CHUNK_VALUES));
                    let mut reached_beyond = false;
                    for (i, v) in y.iter().enumerate() {
                        let (oy, ox) = ((i % (ih * iw)) / iw, i % iw);
                        let holds = oy.abs_diff(r) <= 1 && ox.abs_diff(q) <= 1;
                        // The tile's input rows are m·ty − 1 ..= m·ty + m (pad 1), likewise columns.
                        let in_tile = |o: usize, p: usize| (o / m * m).saturating_sub(1) <= p && p <= o / m * m + m;
                        let own_tile = in_tile(oy, r) && in_tile(ox, q);
                        assert!(!holds || v.is_nan(), "{tile:?}: NaN at ({r}, {q}) missed output ({oy}, {ox})");
                        assert!(!v.is_nan() || own_tile, "{tile:?}: NaN at ({r}, {q}) left its tiles: ({oy}, {ox})");
                        reached_beyond |= v.is_nan() && !holds;
                    }
                    assert!(tile == Tile::F4 || !reached_beyond, "F2: NaN at ({r}, {q}) outside its windows");
                }
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
