//! Constant matrices (convolution weights) packed once, when the engine is
//! built, into row panels, and the product C = A·B that reads them, on
//! AVX-512F or AVX2 with FMA (one kernel, `simd::Lanes`).
//!
//! matrixmultiply packs both operands of every product into tiles. For a
//! convolution the weight matrix is the same on every call, and on the late
//! layers of a network (many channels, few output pixels) packing it costs
//! a third to a half of the product. Here the weight is packed once; the
//! other operand (the column matrix) is copied block by block, KC rows × NR
//! columns (two vectors), into a contiguous buffer that every row panel of
//! the weight then reads. The copy matters: reading B in place, with a row
//! stride that is a multiple of 4 KiB (64×64 and 32×32 images), maps every
//! row of a block to the same cache sets and made a CT model's gradient
//! 1.4× slower.
//!
//! Each element of C is one accumulator that adds its k products in order
//! p = 0, 1, …, k − 1 with fused multiply-adds (starting from C's old value
//! when accumulating). The blocking over k only stores and reloads that
//! accumulator, which is exact, so the result depends on neither the
//! blocking nor the other columns: a sample's output does not depend on its
//! batch, and both instruction sets give the same bits. Only CPUs with one
//! of them use this path (checked at run time); elsewhere
//! `PackedRows::pack` declines and the caller uses matrixmultiply.

use super::Elem;
use super::simd::Isa;
#[cfg(target_arch = "x86_64")]
use super::simd::{F32x8, F32x16, Lanes};
use ndarray::ArrayView2;
use std::any::TypeId;

/// Rows of B (depth) per pass over C, so that the NR-column slice of B a
/// pass reads (KC × NR × 4 bytes) stays in the L1/L2 cache while every row
/// panel of A goes past it. Measured on Zen 4: 128–512 within noise.
const KC: usize = 256;

/// How far ahead (in values, 4 KiB) the kernel prefetches the packed A
/// stream, one cache line per line it consumes. The weights of a large
/// network's late layers do not stay in the caches between steps (ResNet-18's
/// Winograd kernels are ~200 MB per forward and backward), and with only
/// 64 columns of B per product the hardware prefetchers did not keep up:
/// a 512×512 by 512×64 product whose A came from memory ran at 100 GFLOP/s
/// against 145 with A in L3; with this prefetch, 130–140. 512 to 4,096
/// measured within noise of each other; ResNet-18's PGD step ~7% faster.
const PREFETCH_A: usize = 1024;

thread_local! {
    /// Each worker's KC × NR block of B, reused by every product it runs.
    static BLOCK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// An m×k matrix stored as ⌈m/mr⌉ panels of mr rows, each panel k-major
/// (the mr entries of column p are adjacent), the last panel zero-padded;
/// depth-block major: the panels' columns p0..p0 + KC come one panel after
/// the other, then the next KC columns. A pass over one depth block (every
/// panel against one block of B) then reads one contiguous stream, which
/// the hardware prefetchers follow; panel-major, each panel's part was a
/// separate run of KC·mr values, k·mr values after the previous one, and
/// the products whose weights come from memory (Winograd's at batch 1)
/// waited on those loads.
pub(super) struct PackedRows {
    panels: Vec<f32>,
    m: usize,
    k: usize,
    mr: usize,
    isa: Isa,
}

impl PackedRows {
    /// Packs `a` when `T` is f32 and this CPU has one of the kernels'
    /// instruction sets; `None` otherwise (the caller keeps its general path).
    pub fn pack<T: Elem>(a: ArrayView2<'_, T>) -> Option<Self> {
        Self::pack_for(Isa::detect()?, a)
    }

    /// [`PackedRows::pack`] for the kernel of `isa`, which this CPU must have.
    pub fn pack_for<T: Elem>(isa: Isa, a: ArrayView2<'_, T>) -> Option<Self> {
        if TypeId::of::<T>() != TypeId::of::<f32>() {
            return None;
        }
        let (m, k) = a.dim();
        if m == 0 || k == 0 {
            return None;
        }
        // Rows per panel: as many accumulators as the registers hold (two
        // vectors per row). AVX-512: 8 or 12 rows of 32 registers, whichever
        // pads fewer (12 on a tie: fewer panels). AVX2: 6 rows of 16, or 4
        // for at most 4 rows; 4 rows for every matrix keep too few products
        // in flight to hide the FMA latency (ResNet-18's gradient took 1.8×
        // as long on Zen 3), which costs more than 6's padding.
        let mr = match isa {
            Isa::Avx512 if m.div_ceil(8) * 8 < m.div_ceil(12) * 12 => 8,
            Isa::Avx512 => 12,
            Isa::Avx2 if m <= 4 => 4,
            Isa::Avx2 => 6,
        };
        let padded = m.div_ceil(mr) * mr;
        let mut panels = vec![0.0f32; padded * k];
        for (i, row) in a.outer_iter().enumerate() {
            let (panel, r) = (i / mr, i % mr);
            for (p, v) in row.iter().enumerate() {
                let p0 = p - p % KC;
                let depth = (k - p0).min(KC);
                // T is f32 (checked above).
                panels[p0 * padded + (panel * depth + p - p0) * mr + r] = v.to_f32().unwrap_or(f32::NAN);
            }
        }
        Some(PackedRows { panels, m, k, mr, isa })
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    pub fn depth(&self) -> usize {
        self.k
    }

    /// C = A·B, or C += A·B when `accumulate`, with B a row-major k×n and C a
    /// row-major m×n matrix. Returns false, touching nothing, when `T` is not
    /// f32 or the slices are shorter than those shapes.
    pub fn mul<T: Elem>(&self, b: &[T], n: usize, c: &mut [T], accumulate: bool) -> bool {
        self.mul_strided(b, n, n, c, n, accumulate)
    }

    /// [`PackedRows::mul`] with B's rows `ldb` ≥ n and C's rows `ldc` ≥ n
    /// apart: B and C are the first n columns of wider row-major matrices
    /// (a band of columns of a wider product).
    pub fn mul_strided<T: Elem>(
        &self,
        b: &[T],
        ldb: usize,
        n: usize,
        c: &mut [T],
        ldc: usize,
        accumulate: bool,
    ) -> bool {
        let (Some(b), Some(c)) = (as_f32(b), as_f32_mut(c)) else { return false };
        if ldb < n || ldc < n || b.len() < (self.k - 1) * ldb + n || c.len() < (self.m - 1) * ldc + n {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: a PackedRows exists only for an instruction set this
            // CPU has; the slice lengths were checked above.
            unsafe {
                match self.isa {
                    Isa::Avx512 => self.mul_avx512(b, ldb, n, c, ldc, accumulate),
                    Isa::Avx2 => self.mul_avx2(b, ldb, n, c, ldc, accumulate),
                }
            }
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (b, ldb, c, ldc, accumulate);
            false
        }
    }

    /// # Safety
    /// As [`PackedRows::mul_with`], on AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn mul_avx512(&self, b: &[f32], ldb: usize, n: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
        unsafe { self.mul_with::<F32x16>(b, ldb, n, c, ldc, accumulate) }
    }

    /// # Safety
    /// As [`PackedRows::mul_with`], on AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mul_avx2(&self, b: &[f32], ldb: usize, n: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
        unsafe { self.mul_with::<F32x8>(b, ldb, n, c, ldc, accumulate) }
    }

    /// # Safety
    /// `L`'s instruction set is available, `ldb ≥ n`, `ldc ≥ n`,
    /// `b.len() ≥ (k − 1)·ldb + n` and `c.len() ≥ (m − 1)·ldc + n`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn mul_with<L: Lanes>(&self, b: &[f32], ldb: usize, n: usize, c: &mut [f32], ldc: usize, accumulate: bool) {
        let (m, k, mr) = (self.m, self.k, self.mr);
        let padded = m.div_ceil(mr) * mr;
        let nr = 2 * L::N;
        // The worker's block buffer, kept between products (every entry a
        // block uses is written before it is read).
        let mut buffer = BLOCK.take();
        buffer.resize(KC * nr, 0.0);
        for p0 in (0..k).step_by(KC) {
            let depth = (k - p0).min(KC);
            for j in (0..n).step_by(nr) {
                let width = (n - j).min(nr);
                // SAFETY (all blocks below): L's instruction set is available.
                let masks = unsafe { [L::first(width), L::first(width.saturating_sub(L::N))] };
                // B[p0.., j..j + width] as depth rows of nr, zero-padded on the right.
                let block = &mut buffer[..depth * nr];
                for (dst, src) in block.chunks_exact_mut(nr).zip(b[p0 * ldb + j..].chunks(ldb)) {
                    // SAFETY: `src` holds at least `width` values (each row
                    // has n ≥ j + width columns), and only those lanes are
                    // loaded (the second half's address may lie past a short
                    // last row: wrapping_add); `dst` holds nr. Two masked
                    // moves instead of memcpy + memset calls, which cost
                    // more than the copy for 64 or 128 bytes.
                    unsafe {
                        L::store(dst.as_mut_ptr(), L::load_masked(masks[0], src.as_ptr()));
                        L::store(dst.as_mut_ptr().add(L::N), L::load_masked(masks[1], src.as_ptr().wrapping_add(L::N)));
                    }
                }
                let block = &*block;
                // A block of at most L::N columns (a narrow product, or the
                // last block) needs only the first vector of each row; it
                // takes two panels per call, so that as many accumulators
                // are in flight as with two vectors.
                let narrow = width <= L::N;
                let panels = m.div_ceil(mr);
                let mut panel = 0;
                while panel < panels {
                    let pair = narrow && panel + 1 < panels;
                    let tile = Tile {
                        a: &self.panels[p0 * padded + panel * depth * mr..][..(1 + pair as usize) * depth * mr],
                        b: block,
                        depth,
                        c: &mut c[panel * mr * ldc + j..],
                        ldc,
                        rows: (m - panel * mr).min((1 + pair as usize) * mr),
                        width,
                        masks,
                        load_c: accumulate || p0 > 0,
                    };
                    // SAFETY: L's instruction set is available; `block` holds
                    // depth ≤ KC rows of nr; the panels of a depth block are
                    // adjacent, so `a` holds depth·mr values per panel of the
                    // call; c has `rows` rows of stride ldc from column j,
                    // width ≤ n − j of them valid.
                    unsafe {
                        match (mr, narrow, pair) {
                            (4, false, _) => kernel::<L, 4, 2, 1>(tile),
                            (4, true, _) => kernel::<L, 4, 1, 1>(tile),
                            (6, false, _) => kernel::<L, 6, 2, 1>(tile),
                            (6, true, false) => kernel::<L, 6, 1, 1>(tile),
                            (6, true, true) => kernel::<L, 6, 1, 2>(tile),
                            (8, false, _) => kernel::<L, 8, 2, 1>(tile),
                            (8, true, false) => kernel::<L, 8, 1, 1>(tile),
                            (8, true, true) => kernel::<L, 8, 1, 2>(tile),
                            (_, false, _) => kernel::<L, 12, 2, 1>(tile),
                            (_, true, false) => kernel::<L, 12, 1, 1>(tile),
                            (_, true, true) => kernel::<L, 12, 1, 2>(tile),
                        }
                    }
                    panel += 1 + pair as usize;
                }
            }
        }
        BLOCK.set(buffer);
    }
}

/// `s` as an f32 slice when `T` is f32.
pub(super) fn as_f32<T: Elem>(s: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (checked), so the slice is an f32 slice.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

/// `s` as a mutable f32 slice when `T` is f32.
pub(super) fn as_f32_mut<T: Elem>(s: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: T is f32 (checked), so the slice is an f32 slice.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
}

/// Whether the kernels written for AVX-512 only (strided im2col/col2im,
/// pooling, depthwise rows) run: the CPU has AVX-512F and `ADVSCAN_ISA`
/// does not ask for AVX2 or for no packed kernels ([`Isa::detect`]), so
/// that `ADVSCAN_ISA=avx2` on an AVX-512 machine runs what an AVX2 machine
/// runs.
pub(super) fn avx512() -> bool {
    Isa::detect() == Some(Isa::Avx512)
}

/// The low `width` bits set (all 16 for width ≥ 16): which lanes of a
/// 16-lane vector hold data.
#[inline]
pub(super) fn lane_mask(width: usize) -> u16 {
    if width >= 16 { u16::MAX } else { ((1u32 << width) - 1) as u16 }
}

/// Lanes j of a 16-lane vector with lo ≤ j < hi (the bounds clamped to 0..=16).
#[inline]
pub(super) fn lanes_between(lo: isize, hi: isize) -> u16 {
    lane_mask(hi.clamp(0, 16) as usize) & !lane_mask(lo.clamp(0, 16) as usize)
}

/// One kernel call: C[0..rows, 0..width] (+)= A-panels · B[0..depth, 0..width].
#[cfg(target_arch = "x86_64")]
struct Tile<'a, M> {
    /// One or two panels of depth × MR, each k-major, one after the other.
    a: &'a [f32],
    /// depth × NR, row-major.
    b: &'a [f32],
    depth: usize,
    c: &'a mut [f32],
    ldc: usize,
    rows: usize,
    width: usize,
    /// Which lanes of each of a row's two vectors hold columns < width.
    masks: [M; 2],
    load_c: bool,
}

/// P panels of MR rows × L::N·V columns of C (V = 1 or 2) in P·MR·V vector
/// registers; row q·MR + r of the tile is row r of panel q. A full-width
/// tile reads and writes C without masks (AVX2's masked store is several
/// times slower than a plain one).
///
/// # Safety
/// L's instruction set is available; `a` holds P·depth·MR values and `b`
/// depth·2·L::N; for every row r < rows the masked lanes of
/// `c[r·ldc ..][..L::N·V]` lie inside `c` (masked-off lanes are never read
/// or written); with V = 1 the second mask is empty (width ≤ L::N).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn kernel<L: Lanes, const MR: usize, const V: usize, const P: usize>(t: Tile<'_, L::Mask>) {
    let nr = 2 * L::N;
    let full = t.width == V * L::N;
    let c = t.c.as_mut_ptr();
    unsafe {
        let mut acc = [[[L::zero(); V]; MR]; P];
        if t.load_c {
            for (q, acc) in acc.iter_mut().enumerate() {
                for (r, acc) in acc.iter_mut().enumerate().take(t.rows.saturating_sub(q * MR)) {
                    for (h, acc) in acc.iter_mut().enumerate() {
                        let at = c.add((q * MR + r) * t.ldc + L::N * h);
                        *acc = if full { L::load(at) } else { L::load_masked(t.masks[h], at) };
                    }
                }
            }
        }
        let panels: [&[f32]; P] = std::array::from_fn(|q| &t.a[q * t.depth * MR..][..t.depth * MR]);
        for (p, b) in t.b.chunks_exact(nr).take(t.depth).enumerate() {
            // One prefetch per 16 values (a cache line) of each panel's stream.
            // The address may lie past the matrix (wrapping_add, never
            // dereferenced): prefetching it cannot fault.
            if (p * MR) % 16 < MR {
                for panel in &panels {
                    core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                        panel.as_ptr().wrapping_add(p * MR + PREFETCH_A).cast(),
                    );
                }
            }
            let b: [L; V] = std::array::from_fn(|h| L::load(b.as_ptr().add(L::N * h)));
            for (panel, acc) in panels.iter().zip(acc.iter_mut()) {
                let a = panel.as_ptr().add(p * MR);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = L::splat(*a.add(r));
                    for (acc, b) in acc.iter_mut().zip(b) {
                        *acc = L::fmadd(a, b, *acc);
                    }
                }
            }
        }
        for (q, acc) in acc.iter().enumerate() {
            for (r, acc) in acc.iter().enumerate().take(t.rows.saturating_sub(q * MR)) {
                for (h, acc) in acc.iter().enumerate() {
                    let at = c.add((q * MR + r) * t.ldc + L::N * h);
                    if full { L::store(at, *acc) } else { L::store_masked(at, t.masks[h], *acc) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// C = A·B by the definition, summing p = 0, 1, … in f64.
    fn reference(a: &Array2<f32>, b: &Array2<f32>, c0: Option<&Array2<f32>>) -> Array2<f64> {
        let (m, k) = a.dim();
        let n = b.ncols();
        Array2::from_shape_fn((m, n), |(i, j)| {
            let start = c0.map_or(0.0, |c| f64::from(c[[i, j]]));
            (0..k).fold(start, |s, p| s + f64::from(a[[i, p]]) * f64::from(b[[p, j]]))
        })
    }

    /// Small integers: every product and partial sum is an integer below
    /// 2^24, so f32 arithmetic is exact and the kernel must match exactly.
    fn ints(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| ((i * 5 + j * 3 + (i * j) % 11 + seed * 7) % 7) as f32 - 3.0)
    }

    /// The instruction sets this CPU has (the tests run the kernel of each).
    fn isas() -> Vec<Isa> {
        let isas = Isa::available();
        if isas.is_empty() {
            eprintln!("this CPU has neither AVX-512F nor AVX2: the packed path is not used here, nothing to test");
        }
        isas
    }

    #[test]
    fn exact_on_integers_for_every_tail() {
        for isa in isas() {
            exact_on_integers(isa);
        }
    }

    fn exact_on_integers(isa: Isa) {
        // m: both panel heights and their tails; n: below, at and across the
        // 16/32-column vector tails; k: below and across the KC block.
        for &m in &[1, 7, 8, 12, 13, 16, 24, 37] {
            for &n in &[1, 15, 16, 17, 32, 33, 49, 70] {
                for &k in &[1, 9, 255, 256, 257, 600] {
                    let (a, b, c0) = (ints(m, k, 1), ints(k, n, 2), ints(m, n, 3));
                    let packed = PackedRows::pack_for(isa, a.view()).expect("f32");
                    for accumulate in [false, true] {
                        // NaN where accumulate = false must be overwritten, not added.
                        let mut c = if accumulate { c0.clone() } else { Array2::from_elem((m, n), f32::NAN) };
                        let mut slice = c.as_slice_mut().expect("standard layout").to_vec();
                        assert!(packed.mul(b.as_slice().expect("standard layout"), n, &mut slice, accumulate));
                        c = Array2::from_shape_vec((m, n), slice).expect("m·n values");
                        let want = reference(&a, &b, accumulate.then_some(&c0)).mapv(|v| v as f32);
                        assert_eq!(c, want, "{isa:?} m {m} n {n} k {k} accumulate {accumulate}");
                    }
                }
            }
        }
    }

    /// A product of n columns of a wider B into n columns of a wider C
    /// writes what `mul` writes into an m×n C, bit for bit, and no other
    /// entry of C.
    #[test]
    fn a_band_of_wider_matrices_gets_the_same_bits_and_nothing_else() {
        for isa in isas() {
            for &(m, k, n, ldc, j0) in
                &[(13, 40, 33, 70, 5), (24, 300, 16, 16, 0), (8, 7, 1, 9, 8), (37, 257, 49, 100, 51)]
            {
                let (a, b) = (ints(m, k, 1), ints(k, n, 2));
                let b = b.as_slice().expect("standard layout");
                let packed = PackedRows::pack_for(isa, a.view()).expect("f32");
                let mut alone = vec![f32::NAN; m * n];
                assert!(packed.mul(b, n, &mut alone, false));
                let untouched = -7.5f32;
                let mut wide = vec![untouched; m * ldc];
                // B's n columns from column 3 of a k × (n + 5) matrix.
                let b_wide: Vec<f32> = b
                    .chunks_exact(n)
                    .flat_map(|r| [9.0; 3].into_iter().chain(r.iter().copied()).chain([9.0; 2]))
                    .collect();
                assert!(packed.mul_strided(&b_wide[3..], n + 5, n, &mut wide[j0..], ldc, false));
                for (r, row) in wide.chunks_exact(ldc).enumerate() {
                    for (j, v) in row.iter().enumerate() {
                        let want = if (j0..j0 + n).contains(&j) { alone[r * n + j - j0] } else { untouched };
                        assert_eq!(
                            v.to_bits(),
                            want.to_bits(),
                            "{isa:?} m {m} k {k} n {n} ldc {ldc} row {r} column {j}"
                        );
                    }
                }
            }
        }
    }

    /// Real values, against f64; and every instruction set gives the same
    /// bits (one fused multiply-add per product, in the same order).
    #[test]
    fn close_to_f64_on_real_values_and_the_same_on_every_isa() {
        let (m, k, n) = (64, 1152, 49);
        let a = Array2::from_shape_fn((m, k), |(i, p)| ((i * 31 + p * 17) % 101) as f32 / 101.0 - 0.5);
        let b = Array2::from_shape_fn((k, n), |(p, j)| ((p * 13 + j * 29) % 97) as f32 / 97.0 - 0.5);
        let want = reference(&a, &b, None);
        let mut first: Option<Vec<f32>> = None;
        for isa in isas() {
            let packed = PackedRows::pack_for(isa, a.view()).expect("f32");
            let mut c = vec![0.0f32; m * n];
            assert!(packed.mul(b.as_slice().expect("standard layout"), n, &mut c, false));
            // Sequential f32 sums of k = 1152 terms of size ≤ 0.25: the rounding
            // error is at most k·ε·Σ|terms| ≈ 1152 · 6e-8 · 288 ≈ 0.02 in the
            // worst case, typically √k times smaller; 2e-3 is ~10× the typical.
            for (got, want) in c.iter().zip(want.iter()) {
                assert!((f64::from(*got) - want).abs() < 2e-3, "{isa:?}: {got} vs {want}");
            }
            let first = first.get_or_insert_with(|| c.clone());
            assert!(first.iter().zip(&c).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?} differs");
        }
    }

    #[test]
    fn declines_f64_and_short_slices() {
        for isa in isas() {
            assert!(PackedRows::pack_for(isa, Array2::<f64>::zeros((4, 4)).view()).is_none());
            let packed = PackedRows::pack_for(isa, ints(4, 3, 0).view()).expect("f32");
            let mut c = vec![0.0f32; 4 * 5];
            assert!(!packed.mul(&[0.0f32; 14], 5, &mut c, false), "B needs 3·5 values");
            assert!(!packed.mul(&[0.0f32; 15], 5, &mut c[..19], false), "C needs 4·5 values");
            assert!(packed.mul(&[0.0f32; 15], 5, &mut c, false));
        }
    }
}
