//! The vector instruction sets the packed kernels run on, and the few
//! vector operations they use, behind one trait ([`Lanes`]) so that each
//! kernel is written once and compiled for AVX-512F (16 lanes) and for
//! AVX2 with FMA (8 lanes).
//!
//! A kernel is a generic `#[inline(always)]` function over `L: Lanes`,
//! called from one `#[target_feature]` entry point per instruction set; the
//! trait's methods are `#[inline(always)]` too, so after inlining every
//! intrinsic sits in a function compiled for its instruction set and is
//! itself inlined. Each operation is one IEEE operation per lane (a fused
//! multiply-add rounds once on both), so a kernel that does the same
//! operations in the same order gives bit-identical results on both.

/// The instruction set a packed kernel runs on, chosen once per CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// The widest instruction set this CPU has, or `None` (the callers keep
    /// their general paths). `ADVSCAN_ISA=avx2` makes an AVX-512 machine use
    /// the AVX2 kernels, so that they can be measured there;
    /// `ADVSCAN_ISA=none` turns the packed kernels off.
    pub fn detect() -> Option<Isa> {
        static DETECTED: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            let available = Isa::available();
            match std::env::var("ADVSCAN_ISA").as_deref() {
                Ok("none") => None,
                Ok("avx2") => available.into_iter().find(|&isa| isa == Isa::Avx2),
                _ => available.first().copied(),
            }
        })
    }

    /// Every instruction set this CPU has, widest first (tests run each).
    pub fn available() -> Vec<Isa> {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2);
            }
        }
        isas
    }
}

/// One vector of f32 lanes and the operations the kernels need.
///
/// # Safety
/// Every method requires the implementing type's instruction set; the
/// pointer methods also require the lanes they read or write (all, or the
/// masked ones) to be valid. Masked-off lanes are never accessed.
#[cfg(target_arch = "x86_64")]
pub(super) trait Lanes: Copy {
    const N: usize;
    type Mask: Copy;
    /// Lanes l with l < `width` (all of them for width ≥ N).
    unsafe fn first(width: usize) -> Self::Mask;
    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// The masked lanes from `p`, zero elsewhere.
    unsafe fn load_masked(m: Self::Mask, p: *const f32) -> Self;
    unsafe fn store(p: *mut f32, v: Self);
    unsafe fn store_masked(p: *mut f32, m: Self::Mask, v: Self);
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn sub(a: Self, b: Self) -> Self;
    /// a·b + c, rounded once.
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{F32x8, F32x16};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// 16 lanes of AVX-512F.
    #[derive(Clone, Copy)]
    pub struct F32x16(__m512);

    /// 8 lanes of AVX2 (with FMA).
    #[derive(Clone, Copy)]
    pub struct F32x8(__m256);

    impl Lanes for F32x16 {
        const N: usize = 16;
        type Mask = __mmask16;
        #[inline(always)]
        unsafe fn first(width: usize) -> __mmask16 {
            super::super::panel::lane_mask(width)
        }
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { F32x16(_mm512_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { F32x16(_mm512_set1_ps(v)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            F32x16(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn load_masked(m: __mmask16, p: *const f32) -> Self {
            F32x16(unsafe { _mm512_maskz_loadu_ps(m, p) })
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            unsafe { _mm512_storeu_ps(p, v.0) }
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, m: __mmask16, v: Self) {
            unsafe { _mm512_mask_storeu_ps(p, m, v.0) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            unsafe { F32x16(_mm512_add_ps(a.0, b.0)) }
        }
        #[inline(always)]
        unsafe fn sub(a: Self, b: Self) -> Self {
            unsafe { F32x16(_mm512_sub_ps(a.0, b.0)) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            unsafe { F32x16(_mm512_fmadd_ps(a.0, b.0, c.0)) }
        }
    }

    impl Lanes for F32x8 {
        const N: usize = 8;
        type Mask = __m256i;
        #[inline(always)]
        unsafe fn first(width: usize) -> __m256i {
            // Lane l is all ones when l < width (a signed compare; width ≤ 8 after the clamp).
            unsafe {
                _mm256_cmpgt_epi32(_mm256_set1_epi32(width.min(8) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
            }
        }
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { F32x8(_mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { F32x8(_mm256_set1_ps(v)) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            F32x8(unsafe { _mm256_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn load_masked(m: __m256i, p: *const f32) -> Self {
            F32x8(unsafe { _mm256_maskload_ps(p, m) })
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self) {
            unsafe { _mm256_storeu_ps(p, v.0) }
        }
        #[inline(always)]
        unsafe fn store_masked(p: *mut f32, m: __m256i, v: Self) {
            unsafe { _mm256_maskstore_ps(p, m, v.0) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            unsafe { F32x8(_mm256_add_ps(a.0, b.0)) }
        }
        #[inline(always)]
        unsafe fn sub(a: Self, b: Self) -> Self {
            unsafe { F32x8(_mm256_sub_ps(a.0, b.0)) }
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            unsafe { F32x8(_mm256_fmadd_ps(a.0, b.0, c.0)) }
        }
    }
}
