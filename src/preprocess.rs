//! Preprocessing from the attack variable to the model input, forward and
//! backward: window → resize → channels → normalise. The attack variable `x`
//! of one sample is the scan in its own pixel grid, `C_s × H_s × W_s`, in
//! display units (physical value / unit scale: the window width for DICOM,
//! 2^bits − 1 for PNG); the model sees `forward(x)`, and attacks need the
//! exact vector-Jacobian product `backward`, which this module owns.
//! It does not decide the spec (the caller builds it from the model config,
//! the scan and the model) and does not decode files.
//!
//! Every step matches PyTorch in f32 where PyTorch defines it:
//! - window: `u = clamp(x − offset, 0, 1)`, then `1 − u` if inverted
//!   (MONOCHROME1). Gradient 1 strictly inside (0, 1), 0 at and outside the
//!   bounds, as `torch.clamp` with scalar bounds (checked on torch 2.15:
//!   `clamp([-0.5, 0, 0.5, 1, 1.5], 0, 1)` backward is `[0, 0, 1, 0, 0]`).
//!   With offset 0, no inversion and a valid range inside [0, 1] (PNG) the
//!   step is skipped: there the clamp is the identity, and skipping it
//!   keeps the gradient at pixels exactly 0 or 1, which the clamp would zero
//!   and so freeze saturated pixels.
//! - resize: `F.interpolate` with `mode='nearest'` (index `floor(dst·in/out)`
//!   in f32, exact copies for equal sizes and ×2), `mode='bilinear'`
//!   (`align_corners=False`, no antialias: source `(dst + 0.5)·in/out − 0.5`
//!   in f32, clamped at 0, neighbours clamped at the border) and
//!   `mode='area'` (`adaptive_avg_pool2d`: output j averages input
//!   `floor(j·in/out) .. ceil((j+1)·in/out)`). Each is separable, a 1-D
//!   linear map per axis (rows, then columns); the backward pass applies the
//!   transposes in reverse order. PyTorch interpolates both axes in one
//!   expression and divides an area sum by its count where we multiply by
//!   1/count, so results agree to a few f32 ulps, not bit for bit.
//! - channels: grey replicated to 3 (backward sums), RGB to grey by BT.601
//!   luma `0.299 R + 0.587 G + 0.114 B` (backward distributes), or identity.
//! - normalise: `(u − mean[c]) / std[c]`, as torchvision's `Normalize`.
//!
//! The maths is generic over `num_traits::Float` ([`Pipeline::forward_generic`],
//! [`Pipeline::backward_generic`]) rather than written for f32 and checked
//! against a separate f64 copy: the tests run the very code the attacks run,
//! in f64, against central differences. Resize weights are computed once, in
//! f32 as PyTorch computes them, and stored as f64 (exact), so the f32 and
//! f64 pipelines apply the same linear map.

use crate::attack::{Loss, LossGrad, Objective};
use crate::config::ConfigError;
use crate::error::{Error, GradError};
use ndarray::{Array2, ArrayD, IxDyn};
use num_traits::Float;
use serde::{Deserialize, Serialize};

/// The resize filter, named as PyTorch's `F.interpolate` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    Nearest,
    Bilinear,
    Area,
}

impl ResizeFilter {
    pub fn as_str(self) -> &'static str {
        match self {
            ResizeFilter::Nearest => "nearest",
            ResizeFilter::Bilinear => "bilinear",
            ResizeFilter::Area => "area",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            ResizeFilter::Nearest => "floor(dst·in/out), as PyTorch 'nearest'",
            ResizeFilter::Bilinear => "half-pixel, no antialias",
            ResizeFilter::Area => "adaptive average pooling, as PyTorch 'area'",
        }
    }
}

impl std::fmt::Display for ResizeFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that decides one sample's preprocessing; samples with equal
/// specs can be batched together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineSpec {
    /// `[C_s, H_s, W_s]` of the attack variable.
    pub src: [usize; 3],
    /// The window's lower edge in x units: `(centre − width/2) / unit_scale`, 0 for PNG.
    pub offset: f32,
    /// MONOCHROME1: the model sees `1 − u`.
    pub invert: bool,
    /// The scan's valid range reaches outside the window `[offset, offset + 1]`,
    /// so the window clips (a CT whose window starts at 0 HU, say). When
    /// false, with offset 0 and no inversion (PNG), the step is the identity
    /// on every valid input and is skipped.
    pub clip: bool,
    /// The model's `[C, H, W]`.
    pub dst: [usize; 3],
    pub filter: ResizeFilter,
    /// Per channel of the model input; length 1 applies to every channel.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// How channels are converted (after the resize).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channels {
    Same,
    GreyToRgb,
    RgbToGrey,
}

/// BT.601 luma weights for R, G, B.
const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

/// One axis of a separable resize: a sparse `out_len × in_len` matrix by
/// rows. Output j is Σ `weight[k]·input[index[k]]` over k in
/// `start[j]..start[j + 1]`.
#[derive(Debug, Clone, PartialEq)]
struct AxisMap {
    in_len: usize,
    start: Vec<usize>,
    index: Vec<usize>,
    weight: Vec<f64>,
}

impl AxisMap {
    fn new(filter: ResizeFilter, in_len: usize, out_len: usize) -> AxisMap {
        let mut m = AxisMap { in_len, start: vec![0], index: Vec::new(), weight: Vec::new() };
        // PyTorch's `compute_scales_value` without scale factors: in/out in f32.
        let scale = in_len as f32 / out_len as f32;
        for j in 0..out_len {
            match filter {
                ResizeFilter::Nearest => {
                    // `nearest_idx` in ATen's UpSample.h.
                    let i = if out_len == in_len {
                        j
                    } else if out_len == 2 * in_len {
                        j >> 1
                    } else {
                        ((j as f32 * scale).floor() as usize).min(in_len - 1)
                    };
                    m.push(i, 1.0);
                }
                ResizeFilter::Bilinear => {
                    // `area_pixel_compute_source_index` and
                    // `compute_indices_weights_linear` (UpSampleKernel.cpp), in f32.
                    let real = (scale * (j as f32 + 0.5) - 0.5).max(0.0);
                    let i0 = (real.floor() as usize).min(in_len - 1);
                    let lambda1 = (real - i0 as f32).clamp(0.0, 1.0);
                    let lambda0 = 1.0 - lambda1;
                    let i1 = if i0 < in_len - 1 { i0 + 1 } else { i0 };
                    m.push(i0, f64::from(lambda0));
                    m.push(i1, f64::from(lambda1));
                }
                ResizeFilter::Area => {
                    // `start_index` / `end_index` of adaptive average pooling, in integers.
                    let lo = j * in_len / out_len;
                    let hi = ((j + 1) * in_len).div_ceil(out_len);
                    let w = 1.0 / (hi - lo) as f64;
                    for i in lo..hi {
                        m.push(i, w);
                    }
                }
            }
            m.start.push(m.index.len());
        }
        m
    }

    fn push(&mut self, i: usize, w: f64) {
        self.index.push(i);
        self.weight.push(w);
    }

    fn out_len(&self) -> usize {
        self.start.len() - 1
    }

    /// `y[o, j, i] = Σ_k weight[k] · x[o, index[k], i]` for `x` laid out as
    /// `[outer, in_len, inner]`.
    fn apply<T: Float>(&self, x: &[T], outer: usize, inner: usize) -> Vec<T> {
        let (n_in, n_out) = (self.in_len, self.out_len());
        assert_eq!(x.len(), outer * n_in * inner, "resize input length");
        let mut y = vec![T::zero(); outer * n_out * inner];
        for (xs, ys) in x.chunks_exact(n_in * inner).zip(y.chunks_exact_mut(n_out * inner)) {
            for (j, yr) in ys.chunks_exact_mut(inner).enumerate() {
                for k in self.start[j]..self.start[j + 1] {
                    let w: T = cast(self.weight[k]);
                    let xr = &xs[self.index[k] * inner..][..inner];
                    for (a, &b) in yr.iter_mut().zip(xr) {
                        *a = *a + w * b;
                    }
                }
            }
        }
        y
    }

    /// The transpose of [`AxisMap::apply`]: `dx[o, index[k], i] += weight[k] · dy[o, j, i]`.
    fn apply_transpose<T: Float>(&self, g: &[T], outer: usize, inner: usize) -> Vec<T> {
        let (n_in, n_out) = (self.in_len, self.out_len());
        assert_eq!(g.len(), outer * n_out * inner, "resize gradient length");
        let mut dx = vec![T::zero(); outer * n_in * inner];
        for (gs, ds) in g.chunks_exact(n_out * inner).zip(dx.chunks_exact_mut(n_in * inner)) {
            for (j, gr) in gs.chunks_exact(inner).enumerate() {
                for k in self.start[j]..self.start[j + 1] {
                    let w: T = cast(self.weight[k]);
                    let dr = &mut ds[self.index[k] * inner..][..inner];
                    for (a, &b) in dr.iter_mut().zip(gr) {
                        *a = *a + w * b;
                    }
                }
            }
        }
        dx
    }
}

fn cast<T: Float>(v: f64) -> T {
    T::from(v).expect("an f64 converts to any float type")
}

/// A preprocessing pipeline built once from a [`PipelineSpec`]: the resize
/// maps are precomputed, so forward and backward passes only apply them.
#[derive(Debug, Clone)]
pub struct Pipeline {
    spec: PipelineSpec,
    window: bool,
    /// The row (H) and column (W) maps; `None` where the size is unchanged.
    rows: Option<AxisMap>,
    cols: Option<AxisMap>,
    channels: Channels,
    normalise: bool,
}

impl Pipeline {
    /// Refuses specs no pipeline can honour: zero sizes, a channel change
    /// other than 1 → 3 or 3 → 1, mean/std of a length other than 1 or the
    /// model's C, a std that is not > 0, non-finite values.
    pub fn new(spec: PipelineSpec) -> Result<Pipeline, ConfigError> {
        let bad = |reason: String| Err(ConfigError::Preprocess { reason });
        if spec.src.contains(&0) || spec.dst.contains(&0) {
            return bad(format!("sizes must be positive: scan {:?}, model input {:?}", spec.src, spec.dst));
        }
        let channels = match (spec.src[0], spec.dst[0]) {
            (a, b) if a == b => Channels::Same,
            (1, 3) => Channels::GreyToRgb,
            (3, 1) => Channels::RgbToGrey,
            (a, b) => {
                return bad(format!(
                    "cannot convert {a} channels to the model's {b}: only grey → RGB (replicated) and RGB → grey \
                     (BT.601 luma) are supported"
                ));
            }
        };
        if !spec.offset.is_finite() {
            return bad(format!("the window offset {} is not finite", spec.offset));
        }
        let c = spec.dst[0];
        for (name, v) in [("mean", &spec.mean), ("std", &spec.std)] {
            if v.len() != 1 && v.len() != c {
                return bad(format!("normalisation {name} has {} values; give 1 or the model's {c} channels", v.len()));
            }
        }
        if let Some(m) = spec.mean.iter().find(|m| !m.is_finite()) {
            return bad(format!("normalisation mean {m} is not finite"));
        }
        if let Some(s) = spec.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return bad(format!("normalisation std {s} must be a finite number > 0"));
        }
        let map = |i: usize| (spec.src[i] != spec.dst[i]).then(|| AxisMap::new(spec.filter, spec.src[i], spec.dst[i]));
        Ok(Pipeline {
            window: spec.offset != 0.0 || spec.invert || spec.clip,
            rows: map(1),
            cols: map(2),
            channels,
            normalise: spec.mean.iter().any(|&m| m != 0.0) || spec.std.iter().any(|&s| s != 1.0),
            spec,
        })
    }

    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// The model input shape for a batch of `batch` samples.
    pub fn output_shape(&self, batch: usize) -> [usize; 4] {
        let [c, h, w] = self.spec.dst;
        [batch, c, h, w]
    }

    /// Checks that `shape` is a batch of attack variables `[B, C_s, H_s, W_s]`.
    pub fn check_input(&self, shape: &[usize]) -> Result<(), GradError> {
        let [c, h, w] = self.spec.src;
        if shape.len() != 4 || shape[1..] != [c, h, w] {
            return Err(GradError::InputShape { got: shape.to_vec(), expected: format!("[batch, {c}, {h}, {w}]") });
        }
        Ok(())
    }

    /// x: `[B, C_s, H_s, W_s]` → model input `[B, C, H, W]`.
    ///
    /// # Panics
    /// If `x` does not have that shape ([`Pipeline::check_input`] first).
    pub fn forward(&self, x: &ArrayD<f32>) -> ArrayD<f32> {
        self.forward_generic(x)
    }

    /// ∂L/∂x given x and ∂L/∂(model input).
    ///
    /// # Panics
    /// If `x` or `grad_out` does not have its shape.
    pub fn backward(&self, x: &ArrayD<f32>, grad_out: &ArrayD<f32>) -> ArrayD<f32> {
        self.backward_generic(x, grad_out)
    }

    /// [`Pipeline::forward`] in any float type (the tests run it in f64).
    pub fn forward_generic<T: Float>(&self, x: &ArrayD<T>) -> ArrayD<T> {
        if let Err(e) = self.check_input(x.shape()) {
            panic!("Pipeline::forward: {e}");
        }
        let b = x.shape()[0];
        let [cs, _, ws] = self.spec.src;
        let [c, h, w] = self.spec.dst;
        let mut v: Vec<T> = x.iter().copied().collect();
        if self.window {
            let off: T = cast(f64::from(self.spec.offset));
            for e in &mut v {
                // NaN stays NaN, as torch.clamp.
                let d = *e - off;
                let u = if d < T::zero() {
                    T::zero()
                } else if d > T::one() {
                    T::one()
                } else {
                    d
                };
                *e = if self.spec.invert { T::one() - u } else { u };
            }
        }
        if let Some(m) = &self.rows {
            v = m.apply(&v, b * cs, ws);
        }
        if let Some(m) = &self.cols {
            v = m.apply(&v, b * cs * h, 1);
        }
        let plane = h * w;
        v = match self.channels {
            Channels::Same => v,
            Channels::GreyToRgb => v.chunks_exact(plane).flat_map(|p| p.iter().chain(p).chain(p).copied()).collect(),
            Channels::RgbToGrey => {
                let k: [T; 3] = LUMA.map(cast);
                v.chunks_exact(3 * plane)
                    .flat_map(|s| (0..plane).map(move |i| k[0] * s[i] + k[1] * s[plane + i] + k[2] * s[2 * plane + i]))
                    .collect()
            }
        };
        if self.normalise {
            for (ch, p) in v.chunks_exact_mut(plane).enumerate() {
                let (mean, std) = self.mean_std::<T>(ch % c);
                for e in p {
                    *e = (*e - mean) / std;
                }
            }
        }
        ArrayD::from_shape_vec(IxDyn(&[b, c, h, w]), v).expect("the pipeline computes the model input's size")
    }

    /// [`Pipeline::backward`] in any float type: the transpose of each
    /// step's Jacobian, in reverse order.
    pub fn backward_generic<T: Float>(&self, x: &ArrayD<T>, grad_out: &ArrayD<T>) -> ArrayD<T> {
        if let Err(e) = self.check_input(x.shape()) {
            panic!("Pipeline::backward: {e}");
        }
        let b = x.shape()[0];
        let [cs, hs, ws] = self.spec.src;
        let [c, h, w] = self.spec.dst;
        assert_eq!(grad_out.shape(), &[b, c, h, w], "Pipeline::backward: gradient shape");
        let plane = h * w;
        let mut g: Vec<T> = grad_out.iter().copied().collect();
        if self.normalise {
            for (ch, p) in g.chunks_exact_mut(plane).enumerate() {
                let (_, std) = self.mean_std::<T>(ch % c);
                for e in p {
                    *e = *e / std;
                }
            }
        }
        g = match self.channels {
            Channels::Same => g,
            Channels::GreyToRgb => g
                .chunks_exact(3 * plane)
                .flat_map(|s| (0..plane).map(move |i| s[i] + s[plane + i] + s[2 * plane + i]))
                .collect(),
            Channels::RgbToGrey => {
                let k: [T; 3] = LUMA.map(cast);
                g.chunks_exact(plane)
                    .flat_map(|p| k.into_iter().flat_map(move |k| p.iter().map(move |&e| k * e)))
                    .collect()
            }
        };
        if let Some(m) = &self.cols {
            g = m.apply_transpose(&g, b * cs * h, 1);
        }
        if let Some(m) = &self.rows {
            g = m.apply_transpose(&g, b * cs, ws);
        }
        if self.window {
            let off: T = cast(f64::from(self.spec.offset));
            let sign = if self.spec.invert { -T::one() } else { T::one() };
            for (e, &xv) in g.iter_mut().zip(x.iter()) {
                let d = xv - off;
                *e = if d > T::zero() && d < T::one() { sign * *e } else { T::zero() };
            }
        }
        ArrayD::from_shape_vec(IxDyn(&[b, cs, hs, ws]), g).expect("the pipeline computes the input's size")
    }

    fn mean_std<T: Float>(&self, ch: usize) -> (T, T) {
        let pick = |v: &[f32]| cast::<T>(f64::from(if v.len() == 1 { v[0] } else { v[ch] }));
        (pick(&self.spec.mean), pick(&self.spec.std))
    }

    /// One line per step for reports; identity steps are omitted.
    pub fn describe(&self) -> Vec<String> {
        let s = &self.spec;
        let mut out = Vec::new();
        if self.window {
            let mut line = format!("window: clip to [0, 1] after offset {:.4}", s.offset);
            if s.invert {
                line.push_str(", then inverted (1 − u, MONOCHROME1)");
            }
            out.push(line);
        }
        if self.rows.is_some() || self.cols.is_some() {
            out.push(format!(
                "resize {}×{} → {}×{} {} ({})",
                s.src[1],
                s.src[2],
                s.dst[1],
                s.dst[2],
                s.filter,
                s.filter.detail()
            ));
        }
        match self.channels {
            Channels::Same => {}
            Channels::GreyToRgb => out.push("channels: grey replicated to 3".into()),
            Channels::RgbToGrey => {
                out.push("channels: RGB to grey by BT.601 luma (0.299 R + 0.587 G + 0.114 B)".into())
            }
        }
        if self.normalise {
            out.push(format!("normalise: mean {:?} std {:?}", s.mean, s.std));
        }
        out
    }
}

/// An [`Objective`] seen through a pipeline: attacks run on x, the model
/// sees `forward(x)`. Logits and losses are the inner objective's; the
/// gradient is carried back to x by [`Pipeline::backward`].
pub struct Preprocessed<'a> {
    pub inner: &'a dyn Objective,
    pub pipeline: &'a Pipeline,
}

impl Objective for Preprocessed<'_> {
    fn logits(&self, x: &ArrayD<f32>) -> Result<Array2<f32>, Error> {
        self.pipeline.check_input(x.shape())?;
        self.inner.logits(&self.pipeline.forward(x))
    }

    fn loss_and_grad(&self, x: ArrayD<f32>, classes: &[usize], loss: Loss) -> Result<LossGrad<f32>, Error> {
        self.pipeline.check_input(x.shape())?;
        let out = self.inner.loss_and_grad(self.pipeline.forward(&x), classes, loss)?;
        let expected = self.pipeline.output_shape(x.shape()[0]);
        if out.grad.shape() != expected {
            return Err(GradError::InputShape {
                got: out.grad.shape().to_vec(),
                expected: format!("a gradient of the model input's shape {expected:?}"),
            }
            .into());
        }
        let grad = self.pipeline.backward(&x, &out.grad);
        Ok(LossGrad { grad, ..out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic uniform values in [lo, hi) (splitmix64).
    fn uniform(shape: &[usize], seed: u64, lo: f64, hi: f64) -> ArrayD<f64> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                lo + (hi - lo) * ((z >> 11) as f64 / (1u64 << 53) as f64)
            })
            .collect();
        ArrayD::from_shape_vec(IxDyn(shape), data).unwrap()
    }

    fn spec(src: [usize; 3], dst: [usize; 3], filter: ResizeFilter) -> PipelineSpec {
        PipelineSpec { src, offset: 0.0, clip: false, invert: false, dst, filter, mean: vec![0.0], std: vec![1.0] }
    }

    fn pipeline(s: PipelineSpec) -> Pipeline {
        Pipeline::new(s).expect("valid spec")
    }

    /// Window inputs kept ≥ 1e-3 away from the clip kinks at offset and offset + 1,
    /// some below, inside and above the window.
    fn window_safe(shape: &[usize], seed: u64, offset: f64) -> ArrayD<f64> {
        uniform(shape, seed, -0.5, 1.5).mapv(|u| {
            let u = if (u - 0.0).abs() < 1e-3 || (u - 1.0).abs() < 1e-3 { u + 3e-3 } else { u };
            u + offset
        })
    }

    /// Checks `backward` against central differences of `forward` in f64 for
    /// L = ⟨v, forward(x)⟩ with a fixed random v. Every step is linear or
    /// piecewise linear and the points avoid the kinks, so the differences are
    /// exact up to rounding: h = 1e-6 gives an error ≈ 1e-16·|L|/h ≈ 1e-10·|L|,
    /// and 1e-7·(1 + |∂L/∂x|) is loose for a correct rule yet fails any
    /// missing or wrong term (errors ≥ 1e-3).
    fn check_backward(p: &Pipeline, x: &ArrayD<f64>) {
        let y = p.forward_generic(x);
        let v = uniform(y.shape(), 4242, -1.0, 1.0);
        let g = p.backward_generic(x, &v);
        assert_eq!(g.shape(), x.shape());
        let h = 1e-6;
        let loss = |x: &ArrayD<f64>| (&p.forward_generic(x) * &v).sum();
        for k in 0..x.len() {
            let mut plus = x.clone();
            let mut minus = x.clone();
            plus.as_slice_mut().unwrap()[k] += h;
            minus.as_slice_mut().unwrap()[k] -= h;
            let fd = (loss(&plus) - loss(&minus)) / (2.0 * h);
            let a = g.as_slice().unwrap()[k];
            assert!((fd - a).abs() <= 1e-7 * (1.0 + fd.abs()), "{:?}: element {k}: analytic {a} vs fd {fd}", p.spec);
        }
    }

    fn dot(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
        (a * b).sum()
    }

    fn row(p: &Pipeline, values: &[f32]) -> Vec<f32> {
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, values.len()]), values.to_vec()).unwrap();
        p.forward(&x).iter().copied().collect()
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len());
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "element {k}: got {g}, want {w}\n{got:?}");
        }
    }

    const SIZES: [(usize, usize); 8] = [(4, 2), (2, 4), (5, 3), (3, 7), (7, 3), (6, 4), (5, 10), (1, 3)];

    #[test]
    fn window_backward_matches_central_differences() {
        // ∂u/∂x = 1 strictly inside the window (0 < x − offset < 1), 0 outside; inverted: −1.
        for invert in [false, true] {
            let p =
                pipeline(PipelineSpec { offset: 0.29, invert, ..spec([1, 3, 4], [1, 3, 4], ResizeFilter::Bilinear) });
            let x = window_safe(&[2, 1, 3, 4], 7, 0.29);
            check_backward(&p, &x);
            let g = p.backward_generic(&x, &ArrayD::ones(IxDyn(&[2, 1, 3, 4])));
            for (&xv, &gv) in x.iter().zip(&g) {
                let inside = xv - 0.29 > 0.0 && xv - 0.29 < 1.0;
                assert_eq!(
                    gv,
                    if !inside {
                        0.0
                    } else if invert {
                        -1.0
                    } else {
                        1.0
                    }
                );
            }
        }
    }

    #[test]
    fn window_gradient_is_zero_on_the_bounds_as_torch_clamp() {
        // torch 2.15: clamp([-0.5, 0, 0.5, 1, 1.5], 0, 1).sum() backward = [0, 0, 1, 0, 0].
        let p = pipeline(PipelineSpec { offset: 0.25, ..spec([1, 1, 5], [1, 1, 5], ResizeFilter::Nearest) });
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 5]), vec![-0.25f32, 0.25, 0.75, 1.25, 1.75]).unwrap();
        assert_eq!(p.forward(&x).iter().copied().collect::<Vec<_>>(), [0.0, 0.0, 0.5, 1.0, 1.0]);
        let g = p.backward(&x, &ArrayD::ones(IxDyn(&[1, 1, 1, 5])));
        assert_eq!(g.iter().copied().collect::<Vec<_>>(), [0.0, 0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn a_window_starting_at_zero_still_clips_a_range_beyond_it() {
        // Found by fuzzing: a CT window whose lower edge is exactly 0 HU has
        // offset 0 like a PNG, but bone above the window must still clip to 1.
        let p = pipeline(PipelineSpec { clip: true, ..spec([1, 1, 3], [1, 1, 3], ResizeFilter::Nearest) });
        let x = ndarray::arr1(&[-0.5f32, 0.5, 2.0]).into_shape_with_order(IxDyn(&[1, 1, 1, 3])).unwrap();
        assert_eq!(p.forward(&x).iter().copied().collect::<Vec<f32>>(), [0.0, 0.5, 1.0]);
    }

    #[test]
    fn png_window_is_skipped_so_saturated_pixels_keep_their_gradient() {
        let p = pipeline(spec([1, 1, 3], [1, 1, 3], ResizeFilter::Nearest));
        assert!(p.describe().is_empty());
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 3]), vec![0.0f32, 0.5, 1.0]).unwrap();
        let g = p.backward(&x, &ArrayD::ones(IxDyn(&[1, 1, 1, 3])));
        assert_eq!(g.iter().copied().collect::<Vec<_>>(), [1.0, 1.0, 1.0]);
    }

    #[test]
    fn resize_backward_matches_central_differences() {
        // The resize is linear, y = R_W R_H x: ∂L/∂x = R_Hᵀ R_Wᵀ v.
        for filter in [ResizeFilter::Nearest, ResizeFilter::Bilinear, ResizeFilter::Area] {
            for &(a, b) in &SIZES {
                let p = pipeline(spec([1, a, b + 1], [1, b, a + 1], filter));
                check_backward(&p, &uniform(&[2, 1, a, b + 1], 11, -1.0, 1.0));
            }
        }
    }

    #[test]
    fn resize_backward_is_the_adjoint() {
        // ⟨R a, b⟩ = ⟨a, Rᵀ b⟩ for every filter and size pair (up, down, non-integer ratios).
        for filter in [ResizeFilter::Nearest, ResizeFilter::Bilinear, ResizeFilter::Area] {
            for &(a, b) in &SIZES {
                for &(c, d) in &SIZES {
                    let p = pipeline(spec([2, a, c], [2, b, d], filter));
                    let x = uniform(&[3, 2, a, c], 1, -1.0, 1.0);
                    let y = uniform(&[3, 2, b, d], 2, -1.0, 1.0);
                    let lhs = dot(&p.forward_generic(&x), &y);
                    let rhs = dot(&x, &p.backward_generic(&x, &y));
                    assert!(
                        (lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()),
                        "{filter} {a}×{c} → {b}×{d}: {lhs} vs {rhs}"
                    );
                }
            }
        }
    }

    #[test]
    fn resize_matches_pytorch_interpolate() {
        // Reference values from torch 2.15 F.interpolate (align_corners=False, antialias=False).
        let bilinear = |n, v: &[f32]| row(&pipeline(spec([1, 1, v.len()], [1, 1, n], ResizeFilter::Bilinear)), v);
        let nearest = |n, v: &[f32]| row(&pipeline(spec([1, 1, v.len()], [1, 1, n], ResizeFilter::Nearest)), v);
        let area = |n, v: &[f32]| row(&pipeline(spec([1, 1, v.len()], [1, 1, n], ResizeFilter::Area)), v);
        // 2 → 4: half-pixel sources −0.25 (clamped to 0), 0.25, 0.75, 1.25 (right neighbour clamped):
        // weights 0.75/0.25 and 0.25/0.75 in the middle.
        assert_eq!(bilinear(4, &[1.0, 2.0]), [1.0, 1.25, 1.75, 2.0]);
        // 7 → 3: sources 7/6 − 0.5 + (7/3)·j = 2/3, 3, 16/3.
        assert_close(&bilinear(3, &[0., 1., 2., 3., 4., 5., 6.]), &[0.6666666, 3.0, 5.333333], 1e-6);
        assert_close(&bilinear(7, &[0., 1., 4.]), &[0.0, 0.14285715, 0.5714286, 1.0, 2.2857144, 3.5714288, 4.0], 1e-6);
        // Nearest picks floor(j·in/out): 4 → 3 reads 0, 1, 2; 3 → 7 reads 0,0,0,1,1,2,2; ×2 repeats.
        assert_eq!(nearest(3, &[0., 1., 2., 3.]), [0.0, 1.0, 2.0]);
        assert_eq!(nearest(7, &[0., 1., 2.]), [0., 0., 0., 1., 1., 2., 2.]);
        assert_eq!(nearest(10, &[0., 1., 2., 3., 4.]), [0., 0., 1., 1., 2., 2., 3., 3., 4., 4.]);
        // Area averages floor(j·in/out) .. ceil((j+1)·in/out): 5 → 3 averages [0,1], [1,2,3], [3,4].
        assert_eq!(area(3, &[0., 1., 2., 3., 4.]), [0.5, 2.0, 3.5]);
        assert_eq!(area(5, &[1.0, 3.0]), [1.0, 1.0, 2.0, 3.0, 3.0]);
        // 4×4 → 2×2 area: the 2×2 block means of 0..16.
        let p = pipeline(spec([1, 4, 4], [1, 2, 2], ResizeFilter::Area));
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 4, 4]), (0..16).map(|v| v as f32).collect()).unwrap();
        assert_eq!(p.forward(&x).iter().copied().collect::<Vec<_>>(), [2.5, 4.5, 10.5, 12.5]);
    }

    #[test]
    fn channels_backward_matches_central_differences() {
        // 1 → 3: y_c = x, so ∂L/∂x = Σ_c v_c. 3 → 1: y = Σ_c k_c x_c, so ∂L/∂x_c = k_c v.
        for (src, dst) in [(1, 3), (3, 1), (3, 3)] {
            let p = pipeline(spec([src, 2, 3], [dst, 2, 3], ResizeFilter::Nearest));
            check_backward(&p, &uniform(&[2, src, 2, 3], 5, 0.0, 1.0));
        }
        let p = pipeline(spec([3, 1, 1], [1, 1, 1], ResizeFilter::Nearest));
        let rgb = ArrayD::from_shape_vec(IxDyn(&[1, 3, 1, 1]), vec![1.0f32, 0.0, 0.0]).unwrap();
        assert_eq!(p.forward(&rgb).iter().copied().collect::<Vec<_>>(), [0.299]);
    }

    #[test]
    fn normalise_backward_matches_central_differences() {
        // y_c = (u_c − mean_c) / std_c: ∂L/∂u_c = v_c / std_c.
        let p = pipeline(PipelineSpec {
            mean: vec![0.1, 0.2, 0.3],
            std: vec![0.5, 0.25, 2.0],
            ..spec([3, 2, 2], [3, 2, 2], ResizeFilter::Nearest)
        });
        check_backward(&p, &uniform(&[2, 3, 2, 2], 9, 0.0, 1.0));
    }

    #[test]
    fn composed_pipeline_backward_matches_central_differences() {
        // y = N(C(R(W(x)))): ∂L/∂x = Wᵀ Rᵀ Cᵀ Nᵀ v, the window's mask taken at x.
        let cases = [
            ([1, 9, 7], 0.31, true, [3, 4, 5], ResizeFilter::Bilinear, vec![0.5], vec![0.25]),
            ([3, 6, 6], 0.0, false, [1, 4, 3], ResizeFilter::Area, vec![0.4], vec![0.3]),
            ([1, 5, 5], -0.2, false, [3, 8, 3], ResizeFilter::Nearest, vec![0.1, 0.2, 0.3], vec![0.5, 0.6, 0.7]),
        ];
        for (src, offset, invert, dst, filter, mean, std) in cases {
            let p = pipeline(PipelineSpec { src, offset, invert, clip: false, dst, filter, mean, std });
            let x = window_safe(&[2, src[0], src[1], src[2]], 3, f64::from(offset));
            check_backward(&p, &x);
        }
    }

    /// The input and cotangent of the PyTorch reference: x_k = 0.5 + 0.8 sin(1 + 0.37k),
    /// v_k = cos(0.3k) over flat indices.
    fn torch_case(spec: PipelineSpec) -> (Vec<f32>, Vec<f32>) {
        let p = pipeline(spec);
        let [c, h, w] = p.spec.src;
        let x: Vec<f32> = (0..c * h * w).map(|k| (0.5 + 0.8 * (1.0 + 0.37 * k as f64).sin()) as f32).collect();
        let x = ArrayD::from_shape_vec(IxDyn(&[1, c, h, w]), x).unwrap();
        let y = p.forward(&x);
        let v: Vec<f32> = (0..y.len()).map(|k| (0.3 * k as f64).cos() as f32).collect();
        let v = ArrayD::from_shape_vec(y.raw_dim(), v).unwrap();
        (y.iter().copied().collect(), p.backward(&x, &v).iter().copied().collect())
    }

    #[test]
    #[allow(clippy::excessive_precision)] // the values as torch printed them
    fn composed_pipeline_matches_pytorch_autograd() {
        // Reference: torch 2.15 in f32, `y = (interp(window(x)) → channels − mean) / std`
        // with torch.clamp, F.interpolate, `repeat`/luma, then (v·y).sum().backward().
        // The f32 results agree to ≤ 2e-7 relative (rounding order only); 1e-6 leaves room.
        let (y, g) = torch_case(PipelineSpec {
            src: [1, 5, 7],
            offset: 0.2,
            clip: false,
            invert: true,
            dst: [3, 3, 4],
            filter: ResizeFilter::Bilinear,
            mean: vec![0.5],
            std: vec![0.25],
        });
        let y_ref = [
            -6.2196136e-01,
            -6.6216481e-01,
            -1.7566347e-01,
            1.0744536e+00,
            6.8961239e-01,
            -1.2030383e+00,
            -1.9880533e+00,
            -1.9591978e+00,
            1.0816331e+00,
            1.6551034e+00,
            7.2123456e-01,
            -4.1175699e-01,
        ];
        assert_close(&y, &[y_ref; 3].concat(), 1e-6);
        #[rustfmt::skip]
        let g_ref = [
            -1.1859882e+00, 0.0, 0.0, -3.2168993e-01, -9.0773726e-01, -1.6727002e-01, -2.7878338e-01,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            1.7357975e-01, 1.0414785e-01, 1.0497609e+00, 4.0178558e-01, 0.0, 0.0, 1.6558967e+00,
            6.3492644e-01, 3.8095585e-01, 9.2563927e-01, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 5.1580995e-01, 1.7593926e+00, 6.4729142e-01, 1.0788190e+00,
        ];
        assert_close(&g, &g_ref, 1e-6);

        let (y, g) = torch_case(PipelineSpec {
            src: [3, 5, 4],
            offset: 0.0,
            clip: false,
            invert: false,
            dst: [3, 3, 2],
            filter: ResizeFilter::Area,
            mean: vec![0.1, 0.2, 0.3],
            std: vec![0.5, 0.6, 0.7],
        });
        #[rustfmt::skip]
        let y_ref = [
            1.8892925e+00, 1.3327916e+00, 2.7774101e-01, 1.8990426e-01, 8.9491254e-01, 1.6505804e+00,
            5.9640723e-01, -7.8152046e-02, 5.9872340e-02, 3.5669810e-01, 1.4015677e+00, 1.4030844e+00,
            -4.1987327e-01, -5.2950323e-01, 3.2787052e-01, 6.1376327e-01, 8.9571398e-01, 3.5709152e-01,
        ];
        assert_close(&y, &y_ref, 1e-6);
        #[rustfmt::skip]
        let g_ref = [
            5.0000000e-01, 5.0000000e-01, 4.7766826e-01, 4.7766826e-01, 7.7511191e-01, 7.7511191e-01,
            6.8487155e-01, 6.8487155e-01, 2.7511188e-01, 2.7511188e-01, 2.0720333e-01, 2.0720333e-01,
            4.5629078e-01, 4.5629078e-01, 2.4257192e-01, 2.4257192e-01, 1.8117888e-01, 1.8117888e-01,
            3.5368599e-02, 3.5368599e-02, -9.4667532e-02, -9.4667532e-02, -2.1035253e-01, -2.1035253e-01,
            -2.9949912e-01, -2.9949912e-01, -4.6148366e-01, -4.6148366e-01, -2.0483159e-01, -2.0483159e-01,
            -2.5113115e-01, -2.5113115e-01, -6.1732846e-01, -6.1732846e-01, -6.6258103e-01, -6.6258103e-01,
            -4.1249686e-01, -4.1249686e-01, -4.1144988e-01, -4.1144988e-01, -3.2027087e-01, -3.2027087e-01,
            -2.5926155e-01, -2.5926155e-01, -4.3699962e-01, -4.3699962e-01, -3.0945104e-01, -3.0945104e-01,
            -1.1672876e-01, -1.1672876e-01, -5.0189480e-02, -5.0189480e-02, -8.5479125e-02, -8.5479125e-02,
            8.4802568e-02, 8.4802568e-02, 3.1249639e-02, 3.1249639e-02, 1.3499205e-01, 1.3499205e-01,
        ];
        assert_close(&g, &g_ref, 1e-6);

        let (y, g) = torch_case(PipelineSpec {
            src: [3, 5, 5],
            offset: 0.0,
            clip: false,
            invert: false,
            dst: [1, 3, 3],
            filter: ResizeFilter::Nearest,
            mean: vec![0.5],
            std: vec![0.5],
        });
        #[rustfmt::skip]
        let y_ref = [
            -1.7701858e-01, -2.4948013e-01, -2.8786814e-01, -1.7568296e-01, -7.8989148e-02, 1.3193679e-01,
            2.4741292e-02, -8.2516313e-02, -2.5052178e-01,
        ];
        assert_close(&y, &y_ref, 1e-6);
        // Luma channel c of the nearest-picked pixels gets k_c·v/std; the others nothing.
        #[rustfmt::skip]
        let g_ref: [f32; 25] = [
            5.9799999e-01, 5.7129121e-01, 0.0, 4.9355069e-01, 0.0,
            3.7172276e-01, 2.1668994e-01, 0.0, 4.2300843e-02, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
            -1.3586685e-01, -3.0189797e-01, 0.0, -4.4096145e-01, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        let scaled = |k: f32| g_ref.map(|v| v * k / 0.299);
        assert_close(&g, &[g_ref, scaled(0.587), scaled(0.114)].concat(), 1e-6);
    }

    #[test]
    fn f32_and_f64_pipelines_agree() {
        let p = pipeline(PipelineSpec {
            src: [1, 12, 10],
            offset: 0.3,
            clip: false,
            invert: false,
            dst: [3, 5, 7],
            filter: ResizeFilter::Bilinear,
            mean: vec![0.5],
            std: vec![0.25],
        });
        let x = uniform(&[2, 1, 12, 10], 8, 0.0, 1.5);
        let y64 = p.forward_generic(&x);
        let y32 = p.forward(&x.mapv(|v| v as f32));
        for (a, b) in y64.iter().zip(&y32) {
            assert!((a - f64::from(*b)).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn new_refuses_impossible_specs() {
        let ok = spec([1, 4, 4], [3, 2, 2], ResizeFilter::Area);
        assert!(Pipeline::new(ok.clone()).is_ok());
        let cases = [
            (PipelineSpec { src: [3, 4, 4], dst: [2, 2, 2], ..ok.clone() }, "channels"),
            (PipelineSpec { src: [0, 4, 4], ..ok.clone() }, "positive"),
            (PipelineSpec { dst: [3, 2, 0], ..ok.clone() }, "positive"),
            (PipelineSpec { std: vec![0.0], ..ok.clone() }, "std"),
            (PipelineSpec { std: vec![-1.0], ..ok.clone() }, "std"),
            (PipelineSpec { mean: vec![0.0, 0.0], ..ok.clone() }, "mean has 2 values"),
            (PipelineSpec { offset: f32::NAN, ..ok.clone() }, "offset"),
        ];
        for (s, needle) in cases {
            let e = Pipeline::new(s).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn describe_lists_the_non_identity_steps() {
        let p = pipeline(PipelineSpec {
            src: [1, 128, 128],
            offset: 0.29333,
            clip: false,
            invert: true,
            dst: [3, 64, 64],
            filter: ResizeFilter::Bilinear,
            mean: vec![0.5],
            std: vec![0.5],
        });
        assert_eq!(
            p.describe(),
            [
                "window: clip to [0, 1] after offset 0.2933, then inverted (1 − u, MONOCHROME1)",
                "resize 128×128 → 64×64 bilinear (half-pixel, no antialias)",
                "channels: grey replicated to 3",
                "normalise: mean [0.5] std [0.5]",
            ]
        );
        assert!(pipeline(spec([3, 8, 8], [3, 8, 8], ResizeFilter::Area)).describe().is_empty());
    }

    /// A linear model on the flattened input: logits_c = ⟨w_c, y⟩, objective = logit of the class.
    struct Linear {
        w: Vec<ArrayD<f32>>,
    }

    impl Objective for Linear {
        fn logits(&self, x: &ArrayD<f32>) -> Result<Array2<f32>, Error> {
            let n = x.shape()[0];
            Ok(Array2::from_shape_fn((n, self.w.len()), |(i, c)| {
                (&x.index_axis(ndarray::Axis(0), i) * &self.w[c].index_axis(ndarray::Axis(0), 0)).sum()
            }))
        }

        fn loss_and_grad(&self, x: ArrayD<f32>, classes: &[usize], _: Loss) -> Result<LossGrad<f32>, Error> {
            let logits = self.logits(&x)?;
            let losses = classes.iter().enumerate().map(|(i, &c)| logits[[i, c]]).collect();
            let views: Vec<_> = classes.iter().map(|&c| self.w[c].index_axis(ndarray::Axis(0), 0)).collect();
            let grad = ndarray::stack(ndarray::Axis(0), &views).unwrap().into_dyn();
            Ok(LossGrad { logits, losses, grad })
        }
    }

    #[test]
    fn preprocessed_objective_sees_the_pipeline() {
        let p = pipeline(PipelineSpec {
            src: [1, 6, 6],
            offset: 0.1,
            clip: false,
            invert: false,
            dst: [3, 4, 4],
            filter: ResizeFilter::Area,
            mean: vec![0.5],
            std: vec![0.5],
        });
        let w = (0..2).map(|c| uniform(&[1, 3, 4, 4], c, -1.0, 1.0).mapv(|v| v as f32)).collect();
        let model = Linear { w };
        let obj = Preprocessed { inner: &model, pipeline: &p };
        let x = uniform(&[2, 1, 6, 6], 3, 0.0, 1.0).mapv(|v| v as f32);
        let y = p.forward(&x);
        assert_eq!(obj.logits(&x).unwrap(), model.logits(&y).unwrap());
        let out = obj.loss_and_grad(x.clone(), &[0, 1], Loss::CE).unwrap();
        let inner = model.loss_and_grad(y, &[0, 1], Loss::CE).unwrap();
        assert_eq!(out.losses, inner.losses);
        assert_eq!(out.logits, inner.logits);
        assert_eq!(out.grad, p.backward(&x, &inner.grad));
        // A batch of the model's shape rather than the scan's is an error, not a panic.
        assert!(obj.logits(&ArrayD::zeros(IxDyn(&[1, 3, 4, 4]))).is_err());
    }
}
