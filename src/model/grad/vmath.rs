//! Elementwise maths the compiler can vectorise: eˣ and tanh in f32 written
//! as branch-free polynomials (libm's are opaque calls, one element at a
//! time: 13% of a PGD run on pneumonia_mixed_ops), the slice loops the
//! activation rules run them in, compiled for AVX-512 or AVX2 when the CPU
//! has it, and sums in a fixed lane order (a plain running sum cannot
//! vectorise).
//!
//! Results do not depend on the vector width: the functions use only
//! IEEE-754 add, multiply, divide, min/max and bit moves, never a fused
//! multiply-add (Rust does not contract `a * b + c`), so the AVX-512 and
//! AVX2 loops, the baseline SSE2 loop and a scalar call give the same bits.

use super::Elem;
use super::simd::Isa;

/// eˣ in f32, within 2 ulp of the exact value over the whole range (the
/// test's sweep of 2·10⁷ arguments finds at most 1)
/// (Cody–Waite reduction x = n·ln 2 + r, |r| ≤ ln 2 / 2, then Cephes'
/// degree-6 polynomial for eʳ); overflows to +∞ past ln(f32::MAX),
/// underflows through the subnormals to 0, and passes NaN through.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2⁹.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer (ties to even) for |v| < 2²².
    const ROUND: f32 = 12_582_912.0;
    // Outside [−104, 89] the result is 0 or +∞ anyway; the clamp keeps n in
    // [−150, 129] so that both halves of 2ⁿ below are normal numbers.
    let xc = x.clamp(-104.0, 89.0);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let er = p * (r * r) + r + 1.0;
    // 2ⁿ as two factors 2^⌊n/2⌋ · 2^(n − ⌊n/2⌋): each exponent lies in
    // [−75, 65], so neither factor is subnormal or infinite, and the
    // products round to the subnormal or infinite result exactly once.
    // n read from t's bits: t lies in [2²³, 2²⁴), where one ulp is 1, so
    // bits(t) − bits(ROUND) = t − ROUND = n. (`n as i32` would be a
    // saturating conversion that the compiler does one lane at a time.)
    // For a NaN x this is garbage, and the NaN is returned instead.
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let half = ni >> 1;
    let pow2 = |e: i32| f32::from_bits((e.wrapping_add(127) as u32) << 23);
    let y = er * pow2(half) * pow2(ni.wrapping_sub(half));
    if x.is_nan() { x } else { y }
}

/// tanh in f32, within 3 ulp (1 in the test's sweep): Cephes' odd polynomial for |x| < 0.625
/// (where 1 − 2/(e^{2|x|} + 1) would lose digits to cancellation), else
/// 1 − 2/(e^{2|x|} + 1), with x's sign. ±1 for large |x|; NaN passes through.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let mut p = -5.704_988_7e-3_f32;
    p = p * z + 2.063_908_9e-2;
    p = p * z - 5.373_971_6e-2;
    p = p * z + 0.133_314_42;
    p = p * z - 0.333_332_82;
    // Both on |x|, then x's sign: tanh is odd, and −0 stays −0.
    let small = a + a * z * p;
    let large = 1.0 - 2.0 / (exp(a + a) + 1.0);
    (if a < 0.625 { small } else { large }).copysign(x)
}

/// `f` applied to every element of `xs`.
///
/// This and the other functions that return a new vector ([`zip`],
/// [`scaled`]) write each value once into the vector's spare capacity
/// rather than into zeros written first. The output goes to [`wide`] as
/// its `out` argument, never captured by the closure: as an argument LLVM
/// knows that it aliases no input and vectorises the loop; captured (as
/// `scaled` collected into its Vec until the twelfth pass) the loop ran
/// one element at a time, which had cost pneumonia_mixed_ops a tenth of its
/// attack time (and made every earlier try at skipping the zeros slower).
pub fn map<T: Copy, F: Fn(T) -> T>(xs: &[T], f: F) -> Vec<T> {
    let mut out = Vec::with_capacity(xs.len());
    wide(&mut out.spare_capacity_mut()[..xs.len()], xs, &[], |out, xs, _| {
        for (o, &x) in out.iter_mut().zip(xs) {
            o.write(f(x));
        }
    });
    // SAFETY: the loop wrote all xs.len() slots (out is as long as xs).
    unsafe { out.set_len(xs.len()) };
    out
}

/// f(xs[i], ys[i]) over the common length, as a new vector (see [`map`]).
pub fn zip<T: Copy, F: Fn(T, T) -> T>(xs: &[T], ys: &[T], f: F) -> Vec<T> {
    let n = xs.len().min(ys.len());
    let mut out = Vec::with_capacity(n);
    wide(&mut out.spare_capacity_mut()[..n], xs, ys, |out, xs, ys| {
        for ((o, &x), &y) in out.iter_mut().zip(xs).zip(ys) {
            o.write(f(x, y));
        }
    });
    // SAFETY: the loop wrote all n slots (xs and ys hold at least n).
    unsafe { out.set_len(n) };
    out
}

/// xs[i] = f(xs[i]), in place.
pub fn map_in_place<T: Copy, F: Fn(T) -> T>(xs: &mut [T], f: F) {
    wide(xs, &[], &[], |out: &mut [T], _: &[T], _: &[T]| {
        for o in out.iter_mut() {
            *o = f(*o);
        }
    });
}

/// out[i] = f(xs[i]) over the common length.
pub fn map_into<T: Copy, F: Fn(T) -> T>(out: &mut [T], xs: &[T], f: F) {
    let rows = |out: &mut [T], _: &[T], _: &[T]| map_rows(out, xs, &f);
    wide(out, &[], &[], rows);
}

/// out[i] = f(xs[i], ys[i]) over the common length.
pub fn zip_into<T: Copy, F: Fn(T, T) -> T>(out: &mut [T], xs: &[T], ys: &[T], f: F) {
    wide(out, xs, ys, |out, xs, ys| zip_rows(out, xs, ys, &f));
}

/// g · d(x, y) elementwise over the common length, as a new vector (see
/// [`map`]), in one pass (a backward rule's ∂L/∂x; copying g and scaling
/// the copy reads and writes it twice).
pub fn scaled<T: Copy + std::ops::Mul<Output = T>, D: Fn(T, T) -> T>(g: &[T], xs: &[T], ys: &[T], d: D) -> Vec<T> {
    let n = g.len().min(xs.len()).min(ys.len());
    let mut out = Vec::with_capacity(n);
    wide(&mut out.spare_capacity_mut()[..n], xs, ys, |out, xs, ys| {
        for (((o, &g), &x), &y) in out.iter_mut().zip(g).zip(xs).zip(ys) {
            o.write(g * d(x, y));
        }
    });
    // SAFETY: the loop wrote all n slots (g, xs and ys hold at least n).
    unsafe { out.set_len(n) };
    out
}

/// Runs `rows(out, xs, ys)` compiled for the widest vectors this CPU has.
/// `rows` must be `#[inline(always)]`-able (a closure over inline loops):
/// it is inlined into the `#[target_feature]` function, which is what
/// compiles it for that instruction set.
#[inline(always)]
fn wide<O, T, R: FnOnce(&mut [O], &[T], &[T])>(out: &mut [O], xs: &[T], ys: &[T], rows: R) {
    #[cfg(target_arch = "x86_64")]
    match Isa::detect() {
        // SAFETY: the CPU has the instruction set detect() returned.
        Some(Isa::Avx512) => return unsafe { wide_avx512(out, xs, ys, rows) },
        Some(Isa::Avx2) => return unsafe { wide_avx2(out, xs, ys, rows) },
        None => {}
    }
    rows(out, xs, ys);
}

/// Lanes of the running sums in [`sum_map`] and [`sum_zip`].
const LANES: usize = 16;

/// Σ f(xᵢ), in an order that vectorises: 16 running sums (element i goes
/// to sum i mod 16), then folded 8 + 8, 4 + 4, 2 + 2, 1 + 1. A single
/// running sum is one dependent add per element (4 cycles each); this is
/// one vector add per 16. The order is fixed by the length alone, so the
/// result does not depend on the batch or the thread count.
#[inline]
pub fn sum_map<T: Elem, F: Fn(T) -> T>(xs: &[T], f: F) -> T {
    sum_zip(xs, xs, |x, _| f(x))
}

/// Σ f(aᵢ, bᵢ) over the common length, in [`sum_map`]'s order.
#[inline]
pub fn sum_zip<T: Elem, F: Fn(T, T) -> T>(a: &[T], b: &[T], f: F) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += f(x, y);
        }
    }
    for ((s, &x), &y) in acc.iter_mut().zip(ca.remainder()).zip(cb.remainder()) {
        *s += f(x, y);
    }
    fold(acc)
}

#[inline(always)]
fn fold<T: Elem>(mut acc: [T; LANES]) -> T {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] = acc[i] + acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

#[inline(always)]
fn map_rows<T: Copy, F: Fn(T) -> T>(out: &mut [T], xs: &[T], f: &F) {
    for (o, &x) in out.iter_mut().zip(xs) {
        *o = f(x);
    }
}

#[inline(always)]
fn zip_rows<T: Copy, F: Fn(T, T) -> T>(out: &mut [T], xs: &[T], ys: &[T], f: &F) {
    for ((o, &x), &y) in out.iter_mut().zip(xs).zip(ys) {
        *o = f(x, y);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn wide_avx512<O, T, R: FnOnce(&mut [O], &[T], &[T])>(out: &mut [O], xs: &[T], ys: &[T], rows: R) {
    rows(out, xs, ys);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn wide_avx2<O, T, R: FnOnce(&mut [O], &[T], &[T])>(out: &mut [O], xs: &[T], ys: &[T], rows: R) {
    rows(out, xs, ys);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_are_the_fixed_order_sum() {
        // Integers are exact in f64 whatever the order, so the lane sums must
        // equal the plain sum; lengths around the 16 lanes, remainder included.
        for n in [0usize, 1, 5, 16, 17, 31, 32, 100] {
            let xs: Vec<f64> = (0..n).map(|i| (i * i % 7) as f64 - 3.0).collect();
            let ys: Vec<f64> = (0..n).map(|i| (i % 5) as f64).collect();
            assert_eq!(sum_map(&xs, |x| 2.0 * x), xs.iter().map(|x| 2.0 * x).sum::<f64>(), "n = {n}");
            assert_eq!(sum_zip(&xs, &ys, |x, y| x * y), xs.iter().zip(&ys).map(|(x, y)| x * y).sum::<f64>(), "n = {n}");
        }
        // The order itself, in f32: sixteen 1 + ε, then −1 (into lane 0).
        // Folded as documented every partial sum is representable and the
        // result is exactly 15 + 16ε; a running sum rounds the ε's away once
        // it passes 2.
        let mut xs = vec![1.0f32 + f32::EPSILON; 16];
        xs.push(-1.0);
        let s = sum_map(&xs, |x| x);
        assert_eq!(s, 15.0 + 16.0 * f32::EPSILON, "{s}");
    }

    /// Distance in units in the last place between `got` and the exact
    /// value `want` (rounded to f32 first; both finite).
    fn ulps(got: f32, want: f64) -> u32 {
        let want = want as f32;
        if got == want {
            return 0;
        }
        // Order-preserving integer map of the f32 line.
        let key = |v: f32| {
            let b = v.to_bits() as i32;
            if b < 0 { i32::MIN - b } else { b }
        };
        key(got).abs_diff(key(want))
    }

    /// Every 97th f32 in [lo, hi] (≈ 10⁷ values over the interesting range
    /// covers every exponent and many mantissas of each).
    fn sweep(lo: f32, hi: f32) -> impl Iterator<Item = f32> {
        let (mut a, b) = (lo, hi);
        std::iter::from_fn(move || {
            if a > b {
                return None;
            }
            let v = a;
            // Step through the bit patterns: up for positives, down for negatives.
            let bits = a.to_bits();
            a = if a >= 0.0 {
                f32::from_bits(bits + 97)
            } else if bits > 0x8000_0060 {
                f32::from_bits(bits - 97)
            } else {
                0.0
            };
            Some(v)
        })
    }

    /// The largest distance of `f` from the f64 reference over [`sweep`]`(lo, hi)`, and where.
    fn worst_ulps(f: fn(f32) -> f32, reference: fn(f64) -> f64, lo: f32, hi: f32) -> (u32, f32) {
        sweep(lo, hi).map(|x| (ulps(f(x), reference(x as f64)), x)).fold((0, 0.0), |w, c| if c.0 > w.0 { c } else { w })
    }

    #[test]
    fn exp_within_two_ulp_everywhere() {
        // Reference: f64 exp (error ≪ f32 ulp). Below −87.3 the result is
        // subnormal, where an ulp is absolute (1.4e-45): measure those too.
        let (u, at) = worst_ulps(exp, f64::exp, -104.0, 88.72);
        assert!(u <= 2, "exp is {u} ulp off at {at}");
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(1e30), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(-104.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        // The largest finite result: e^88.72 ≈ 3.4e38 must not overflow.
        let near_max = exp(88.722);
        assert!(near_max.is_finite() && near_max > 3.3e38, "{near_max}");
        // Smallest normal region and the subnormals keep their value.
        assert!(ulps(exp(-87.0), (-87.0f64).exp()) <= 2);
        assert!(exp(-100.0) > 0.0);
    }

    #[test]
    fn tanh_within_three_ulp_everywhere() {
        let (u, at) = worst_ulps(tanh, f64::tanh, -12.0, 12.0);
        assert!(u <= 3, "tanh is {u} ulp off at {at}");
    }

    #[test]
    fn tanh_edges() {
        assert_eq!(tanh(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh(1e-30), 1e-30);
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn vector_loops_match_scalar_calls() {
        // Lengths around the 16-lane width, values across both tanh branches
        // and exp's range, NaN included: the loop must give the scalar bits.
        for len in [0, 1, 15, 16, 17, 33, 100] {
            let xs: Vec<f32> =
                (0..len).map(|i| (i as f32 - 50.0) * 0.37 + if i == 7 { f32::NAN } else { 0.0 }).collect();
            let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
            let ys = map(&xs, tanh);
            for (&x, &y) in xs.iter().zip(&ys) {
                assert!(same(y, tanh(x)), "tanh({x}) in a loop of {len}");
            }
            let g = vec![2.0f32; len];
            let dx = scaled(&g, &xs, &ys, |x, y| exp(x) * y);
            assert_eq!(dx.len(), len);
            for ((&g, &x), &y) in dx.iter().zip(&xs).zip(&ys) {
                assert!(same(g, 2.0 * (exp(x) * y)), "scaled at {x}");
            }
        }
    }
}
