//! Resize (opsets 10–19) and Upsample (opsets 7–9): nearest and linear
//! interpolation, as a separable product of 1-D linear maps, one per axis
//! whose map is not the identity. Each map lists, per output index, the input
//! indices it reads and their weights (one for nearest, two for linear); the
//! forward pass applies the maps axis by axis and the backward pass applies
//! their transposes in reverse order. Coordinates, output sizes and nearest
//! rounding follow onnxruntime bit for bit where the spec leaves room (f32
//! arithmetic, border clamping), which is also what PyTorch's
//! `F.interpolate` exports agree with. Cubic mode, `tf_crop_and_resize`,
//! antialiased downscaling and aspect-ratio policies other than `stretch` are
//! rejected with a clear error rather than approximated.

use super::shape::{Grads, check_size, grads_first, standard, standard_slice, take_axis};
use super::value::{input, norm_axis};
use super::{Backward, BuildCtx, Elem, Op, OpResult, Value, op_bail};
use crate::model::graph::Node;
use ndarray::{ArrayD, IxDyn};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
}

/// How an output coordinate maps back to an input coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
}

impl Coord {
    /// The input coordinate of output index `x` (spec formulas, in f32 as onnxruntime).
    fn original(self, x: f32, scale: f32, out_len: f32, in_len: f32) -> f32 {
        match self {
            Coord::HalfPixel => (x + 0.5) / scale - 0.5,
            Coord::HalfPixelSymmetric => {
                let adjustment = out_len / (scale * in_len);
                let offset = in_len / 2.0 * (1.0 - adjustment);
                offset + (x + 0.5) / scale - 0.5
            }
            Coord::PytorchHalfPixel if out_len > 1.0 => (x + 0.5) / scale - 0.5,
            Coord::PytorchHalfPixel => 0.0,
            Coord::AlignCorners if out_len == 1.0 => 0.0,
            Coord::AlignCorners => x * (in_len - 1.0) / (out_len - 1.0),
            Coord::Asymmetric => x / scale,
            Coord::TfHalfPixelForNn => (x + 0.5) / scale,
        }
    }
}

/// How nearest mode rounds an input coordinate to an index.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rounding {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Resize-10 and Upsample had no `nearest_mode`: onnxruntime truncates
    /// when upscaling and takes the ceiling when downscaling.
    Legacy,
}

impl Rounding {
    fn index(self, x: f32, downscale: bool) -> i64 {
        match self {
            Rounding::RoundPreferFloor if x == (x as i64) as f32 + 0.5 => x.floor() as i64,
            // f32::round rounds halves away from zero, as std::round does.
            Rounding::RoundPreferFloor | Rounding::RoundPreferCeil => x.round() as i64,
            Rounding::Floor => x.floor() as i64,
            Rounding::Ceil => x.ceil() as i64,
            Rounding::Legacy if downscale => x.ceil() as i64,
            Rounding::Legacy => x as i64,
        }
    }
}

/// Where the output size comes from.
#[derive(Debug, Clone, PartialEq)]
enum Sizing {
    /// Upsample-7: the `scales` attribute.
    AttrScales(Vec<f32>),
    /// Upsample-9 and Resize-10: scales are input 1.
    ScalesInput,
    /// Resize-11 and later: roi (1, unused), scales (2) or sizes (3).
    ScalesOrSizes,
}

/// One axis of the separable map: output index j reads `src[j][0]` with
/// weight `w[j][0]` and, in linear mode, `src[j][1]` with weight `w[j][1]`.
struct AxisMap<T> {
    axis: usize,
    in_dim: usize,
    src: Vec<[usize; 2]>,
    w: Vec<[T; 2]>,
}

struct Resize {
    op: &'static str,
    mode: Mode,
    coord: Coord,
    rounding: Rounding,
    sizing: Sizing,
    /// Resize-18 `axes`: the axes scales/sizes refer to (default: all).
    axes: Option<Vec<i64>>,
    antialias: bool,
    stretch: bool,
}

/// An optional input that is absent or has zero elements (both mean "not given").
fn given<'a, T: Elem>(inputs: &[Option<&'a Value<T>>], i: usize) -> Option<&'a Value<T>> {
    inputs.get(i).copied().flatten().filter(|v| v.shape().iter().product::<usize>() > 0)
}

impl Resize {
    /// The non-identity axis maps for an input of `shape`, given the op's inputs.
    fn plan<T: Elem>(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<AxisMap<T>>> {
        let op = self.op;
        let shape = input(inputs, 0)?.shape();
        let rank = shape.len();
        let axes: Vec<usize> = match &self.axes {
            Some(a) => {
                let mut out: Vec<usize> = Vec::with_capacity(a.len());
                for &ax in a {
                    let n = norm_axis(ax, rank)?;
                    if out.contains(&n) {
                        op_bail!("{op} axis {ax} is repeated in {a:?}");
                    }
                    out.push(n);
                }
                out
            }
            None => (0..rank).collect(),
        };
        let (scales, sizes): (Option<Vec<f32>>, Option<Vec<i64>>) = match &self.sizing {
            Sizing::AttrScales(s) => (Some(s.clone()), None),
            Sizing::ScalesInput => match given(inputs, 1) {
                Some(s) => (Some(s.floats().into_iter().map(|v| v as f32).collect()), None),
                None => op_bail!("{op} needs the scales input"),
            },
            Sizing::ScalesOrSizes => (
                given(inputs, 2).map(|s| s.floats().into_iter().map(|v| v as f32).collect()),
                given(inputs, 3).map(|s| s.ints()).transpose()?,
            ),
        };
        // (output length, scale) per axis; axes not listed keep their size.
        let mut per: Vec<(usize, f32)> = shape.iter().map(|&d| (d, 1.0)).collect();
        match (scales, sizes) {
            (Some(_), Some(_)) => op_bail!("{op} has both scales and sizes; exactly one may be given"),
            (None, None) => op_bail!("{op} has neither scales nor sizes"),
            (Some(s), None) => {
                if s.len() != axes.len() {
                    op_bail!("{op} has {} scales for {} axes", s.len(), axes.len());
                }
                for (&ax, &sc) in axes.iter().zip(&s) {
                    if !(sc > 0.0 && sc.is_finite()) {
                        op_bail!("{op} scale {sc} must be positive");
                    }
                    // floor(in × scale), computed in f32 as onnxruntime does
                    // (a float64 product can land just below an integer).
                    let out = sc * shape[ax] as f32;
                    if out >= (1u64 << 40) as f32 {
                        op_bail!("{op} output along axis {ax} is too large");
                    }
                    per[ax] = (out as usize, sc);
                }
            }
            (None, Some(z)) => {
                if !self.stretch {
                    op_bail!("{op} keep_aspect_ratio_policy other than 'stretch' is not supported");
                }
                if z.len() != axes.len() {
                    op_bail!("{op} has {} sizes for {} axes", z.len(), axes.len());
                }
                for (&ax, &out) in axes.iter().zip(&z) {
                    if !(0..1 << 40).contains(&out) {
                        op_bail!("{op} size {out} is out of range");
                    }
                    per[ax] = (out as usize, out as f32 / shape[ax] as f32);
                }
            }
        }
        let out_shape: Vec<usize> = per.iter().map(|p| p.0).collect();
        check_size(&out_shape)?;
        if self.antialias && self.mode == Mode::Linear && per.iter().any(|p| p.1 < 1.0) {
            op_bail!("{op} with antialias=1 and downscaling is not supported");
        }
        let mut maps = Vec::new();
        for (axis, (&in_len, &(out_len, scale))) in shape.iter().zip(&per).enumerate() {
            if in_len == 0 && out_len > 0 {
                op_bail!("{op} cannot resize an empty axis {axis} to length {out_len}");
            }
            let mut src = Vec::with_capacity(out_len);
            let mut w = Vec::with_capacity(out_len);
            let last = in_len.saturating_sub(1);
            for j in 0..out_len {
                let x = self.coord.original(j as f32, scale, out_len as f32, in_len as f32);
                match self.mode {
                    Mode::Nearest => {
                        let i = self.rounding.index(x, scale < 1.0).clamp(0, last as i64) as usize;
                        src.push([i, i]);
                        w.push([T::one(), T::zero()]);
                    }
                    Mode::Linear => {
                        // Clamp to the border, then interpolate between the two
                        // neighbours (onnxruntime and PyTorch both do this).
                        let x = x.clamp(0.0, last as f32);
                        let i0 = (x as usize).min(last);
                        let i1 = (i0 + 1).min(last);
                        let frac = x as f64 - i0 as f64;
                        src.push([i0, i1]);
                        w.push([T::of(1.0 - frac), T::of(frac)]);
                    }
                }
            }
            let identity = out_len == in_len
                && src.iter().zip(&w).enumerate().all(|(j, (s, w))| s[0] == j && w[0] == T::one() && w[1] == T::zero());
            if !identity {
                maps.push(AxisMap { axis, in_dim: in_len, src, w });
            }
        }
        Ok(maps)
    }

    fn linear(&self) -> bool {
        self.mode == Mode::Linear
    }
}

/// (product of dims before `axis`, dim at `axis`, product of dims after `axis`).
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

/// Applies one axis map: Y[o, j, i] = Σ_t w[j][t] · X[o, src[j][t], i].
fn apply<T: Elem>(x: &ArrayD<T>, m: &AxisMap<T>, linear: bool) -> OpResult<ArrayD<T>> {
    if !linear {
        let src: Vec<Option<usize>> = m.src.iter().map(|s| Some(s[0])).collect();
        return take_axis(x, m.axis, &src, None);
    }
    let x = standard(x);
    let xs = standard_slice(&x)?;
    let (outer, d, inner) = split_at_axis(x.shape(), m.axis);
    if d != m.in_dim {
        op_bail!("internal: axis {} has length {d}, the map expects {}", m.axis, m.in_dim);
    }
    if m.src.iter().any(|s| s[0].max(s[1]) >= d) {
        op_bail!("internal: a source index is out of range for an axis of length {d}");
    }
    let mut out = Vec::with_capacity(outer * m.src.len() * inner);
    for o in 0..outer {
        if inner == 1 {
            // The last axis: one element per output position, no inner slices.
            let row = &xs[o * d..(o + 1) * d];
            out.extend(m.src.iter().zip(&m.w).map(|(s, w)| w[0] * row[s[0]] + w[1] * row[s[1]]));
            continue;
        }
        for (s, w) in m.src.iter().zip(&m.w) {
            let r0 = &xs[(o * d + s[0]) * inner..][..inner];
            let r1 = &xs[(o * d + s[1]) * inner..][..inner];
            out.extend(r0.iter().zip(r1).map(|(&a, &b)| w[0] * a + w[1] * b));
        }
    }
    let mut shape = x.shape().to_vec();
    shape[m.axis] = m.src.len();
    match ArrayD::from_shape_vec(IxDyn(&shape), out) {
        Ok(r) => Ok(r),
        Err(e) => op_bail!("internal: {e}"),
    }
}

/// The transpose of [`apply`]: dX[o, src[j][t], i] += w[j][t] · dY[o, j, i].
fn apply_transpose<T: Elem>(g: &ArrayD<T>, m: &AxisMap<T>, linear: bool) -> OpResult<ArrayD<T>> {
    let g = standard(g);
    let gs = standard_slice(&g)?;
    if m.axis >= g.ndim() || g.shape()[m.axis] != m.src.len() {
        op_bail!("gradient of shape {:?} does not match the Resize output", g.shape());
    }
    let (outer, n, inner) = split_at_axis(g.shape(), m.axis);
    let d = m.in_dim;
    let mut res = vec![T::zero(); outer * d * inner];
    let taps = if linear { 2 } else { 1 };
    if m.src.iter().any(|s| s[..taps].iter().any(|&i| i >= d)) {
        op_bail!("internal: a source index is out of range for an axis of length {d}");
    }
    for o in 0..outer {
        if inner == 1 {
            // The last axis: the same sums in the same order, one element at a time.
            let (gr, rr) = (&gs[o * n..(o + 1) * n], &mut res[o * d..(o + 1) * d]);
            for ((s, w), &v) in m.src.iter().zip(&m.w).zip(gr) {
                for t in 0..taps {
                    rr[s[t]] += w[t] * v;
                }
            }
            continue;
        }
        for (j, (s, w)) in m.src.iter().zip(&m.w).enumerate() {
            let from = &gs[(o * n + j) * inner..][..inner];
            for t in 0..taps {
                for (r, &v) in res[(o * d + s[t]) * inner..][..inner].iter_mut().zip(from) {
                    *r += w[t] * v;
                }
            }
        }
    }
    let mut shape = g.shape().to_vec();
    shape[m.axis] = d;
    match ArrayD::from_shape_vec(IxDyn(&shape), res) {
        Ok(r) => Ok(r),
        Err(e) => op_bail!("internal: {e}"),
    }
}

impl<T: Elem> Op<T> for Resize {
    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let maps = self.plan::<T>(inputs)?;
        let y = match input(inputs, 0)? {
            Value::F(x) => {
                let mut cur = x.clone();
                for m in &maps {
                    cur = apply(&cur, m, self.linear())?;
                }
                Value::F(cur)
            }
            Value::I(x) => {
                if self.linear() && !maps.is_empty() {
                    op_bail!("{} in linear mode on an integer tensor is not supported", self.op);
                }
                let mut cur = x.clone();
                for m in &maps {
                    let src: Vec<Option<usize>> = m.src.iter().map(|s| Some(s[0])).collect();
                    cur = take_axis(&cur, m.axis, &src, None)?;
                }
                Value::I(cur)
            }
        };
        Ok(vec![y])
    }

    /// Y = A_k ⋯ A_1 X, one linear map Aᵢ per resized axis (fixed weights:
    /// the weights depend on shapes and scales only, never on X), so
    /// dX = A_1ᵀ ⋯ A_kᵀ dY: the transposes applied in reverse order.
    /// Scales, sizes and roi get no gradient (the output is piecewise
    /// constant in them).
    fn backward(&self, ctx: &Backward<'_, T>) -> Grads<T> {
        grads_first(ctx, || {
            let maps = self.plan::<T>(ctx.inputs)?;
            let mut g = ctx.dout.clone();
            for m in maps.iter().rev() {
                g = apply_transpose(&g, m, self.linear())?;
            }
            Ok(g)
        })
    }
}

fn parse_mode(n: &Node, op: &str) -> OpResult<Mode> {
    match n.attr_str("mode").unwrap_or("nearest") {
        "nearest" => Ok(Mode::Nearest),
        "linear" => Ok(Mode::Linear),
        "cubic" => op_bail!("{op} mode 'cubic' is not supported (nearest and linear are)"),
        m => op_bail!("{op} mode '{m}' is not a valid mode"),
    }
}

pub fn build_resize<T: Elem>(n: &Node, c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    if c.opset < 10 {
        op_bail!("Resize does not exist before opset 10");
    }
    let mode = parse_mode(n, "Resize")?;
    if c.opset == 10 {
        return Ok(Box::new(Resize {
            op: "Resize",
            mode,
            coord: Coord::Asymmetric,
            rounding: Rounding::Legacy,
            sizing: Sizing::ScalesInput,
            axes: None,
            antialias: false,
            stretch: true,
        }));
    }
    let coord = match n.attr_str("coordinate_transformation_mode").unwrap_or("half_pixel") {
        "half_pixel" => Coord::HalfPixel,
        "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        "asymmetric" => Coord::Asymmetric,
        "tf_half_pixel_for_nn" => Coord::TfHalfPixelForNn,
        "tf_crop_and_resize" => op_bail!("Resize coordinate_transformation_mode 'tf_crop_and_resize' is not supported"),
        m => op_bail!("Resize coordinate_transformation_mode '{m}' is not valid"),
    };
    let rounding = match n.attr_str("nearest_mode").unwrap_or("round_prefer_floor") {
        "round_prefer_floor" => Rounding::RoundPreferFloor,
        "round_prefer_ceil" => Rounding::RoundPreferCeil,
        "floor" => Rounding::Floor,
        "ceil" => Rounding::Ceil,
        m => op_bail!("Resize nearest_mode '{m}' is not valid"),
    };
    let (axes, antialias, stretch) = if c.opset >= 18 {
        let stretch = match n.attr_str("keep_aspect_ratio_policy").unwrap_or("stretch") {
            "stretch" => true,
            "not_larger" | "not_smaller" => false,
            p => op_bail!("Resize keep_aspect_ratio_policy '{p}' is not valid"),
        };
        (n.attr_ints("axes").map(|a| a.to_vec()), n.attr_int("antialias").unwrap_or(0) != 0, stretch)
    } else {
        (None, false, true)
    };
    Ok(Box::new(Resize {
        op: "Resize",
        mode,
        coord,
        rounding,
        sizing: Sizing::ScalesOrSizes,
        axes,
        antialias,
        stretch,
    }))
}

pub fn build_upsample<T: Elem>(n: &Node, c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let sizing = match c.opset {
        ..7 => op_bail!("Upsample before opset 7 (height_scale/width_scale) is not supported"),
        7 | 8 => match n.attr_floats("scales") {
            Some(s) => Sizing::AttrScales(s.to_vec()),
            None => op_bail!("Upsample before opset 9 needs the attribute 'scales'"),
        },
        _ => Sizing::ScalesInput,
    };
    Ok(Box::new(Resize {
        op: "Upsample",
        mode: parse_mode(n, "Upsample")?,
        coord: Coord::Asymmetric,
        rounding: Rounding::Legacy,
        sizing,
        axes: None,
        antialias: false,
        stretch: true,
    }))
}

#[cfg(test)]
mod tests {
    //! Gradients are checked by `check_rule` (central differences in f64;
    //! Resize is linear in X, so the differences are exact up to rounding).
    //! Forward values are the spec's worked examples, recomputed by hand.

    use super::super::testutil::{check_rule, f, floats, ints, node, run_forward};
    use super::super::{BuildCtx, Value, registry};
    use crate::model::graph::{Attr, Node};

    fn s(v: &str) -> Attr {
        Attr::Str(v.into())
    }

    fn values(out: &[Value<f64>]) -> Vec<f64> {
        out[0].float().unwrap().iter().copied().collect()
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    fn fails(n: &Node, opset: i64, inputs: &[Option<Value<f64>>]) -> String {
        let entry = registry::<f64>().into_iter().find(|e| e.name == n.op_type).unwrap();
        let op = match (entry.build)(n, &BuildCtx { opset }) {
            Ok(op) => op,
            Err(e) => return e.0,
        };
        let args: Vec<_> = inputs.iter().map(|v| v.as_ref()).collect();
        match op.forward(&args) {
            Ok(_) => panic!("{} unexpectedly succeeded", n.op_type),
            Err(e) => e.0,
        }
    }

    fn none() -> Option<Value<f64>> {
        None
    }

    fn x2x2() -> Option<Value<f64>> {
        floats(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0])
    }

    #[test]
    fn linear_half_pixel_2x2_to_4x4() {
        // Per axis: x = (j + 0.5)/2 − 0.5 = −0.25, 0.25, 0.75, 1.25, clamped to
        // [0, 1], so each row/column interpolates with weights (1,0), (¾,¼), (¼,¾), (0,1).
        let n = node("Resize", &[("mode", s("linear"))]);
        let out = run_forward(&n, 13, &[x2x2(), none(), floats(&[4], &[1.0, 1.0, 2.0, 2.0])]);
        assert_eq!(out[0].shape(), &[1, 1, 4, 4]);
        #[rustfmt::skip]
        let want = [1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0];
        close(&values(&out), &want);
        // Same through sizes (opset 11: empty roi and scales count as absent).
        let out = run_forward(&n, 11, &[x2x2(), floats(&[0], &[]), floats(&[0], &[]), ints(&[1, 1, 4, 4])]);
        close(&values(&out), &want);
    }

    #[test]
    fn linear_align_corners_and_downscale() {
        let n = node("Resize", &[("mode", s("linear")), ("coordinate_transformation_mode", s("align_corners"))]);
        let out = run_forward(&n, 13, &[x2x2(), none(), floats(&[4], &[1.0, 1.0, 2.0, 2.0])]);
        let t = 1.0 / 3.0;
        let row = |a: f64| [a, a + t, a + 2.0 * t, a + 1.0];
        let want: Vec<f64> = [1.0, 1.0 + 2.0 * t, 1.0 + 4.0 * t, 3.0].iter().flat_map(|&a| row(a)).collect();
        close(&values(&out), &want);
        // Downscale by 0.6 (half_pixel): the spec's example gives [[2.6666665, 4.3333331]].
        let x = floats(&[1, 1, 2, 4], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let n = node("Resize", &[("mode", s("linear"))]);
        let out = run_forward(&n, 13, &[x, none(), floats(&[4], &[1.0, 1.0, 0.6, 0.6])]);
        assert_eq!(out[0].shape(), &[1, 1, 1, 2]);
        close(&values(&out), &[8.0 / 3.0, 13.0 / 3.0]);
    }

    #[test]
    fn nearest_values() {
        let x: Vec<f64> = (1..=4).map(|v| v as f64).collect();
        let x = floats(&[1, 1, 1, 4], &x);
        let sizes = ints(&[1, 1, 1, 8]);
        // asymmetric: x = j/2; align_corners: x = 3j/7; tf_half_pixel_for_nn: x = (j + 0.5)/2.
        let cases = [
            ("asymmetric", "round_prefer_ceil", [1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 4.0]),
            ("asymmetric", "round_prefer_floor", [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]),
            ("asymmetric", "floor", [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]),
            ("asymmetric", "ceil", [1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 4.0]),
            ("align_corners", "floor", [1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0]),
            ("half_pixel", "round_prefer_floor", [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]),
            ("tf_half_pixel_for_nn", "round_prefer_floor", [1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 4.0]),
            ("tf_half_pixel_for_nn", "ceil", [2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 4.0, 4.0]),
        ];
        for (coord, rounding, want) in cases {
            let n = node("Resize", &[("coordinate_transformation_mode", s(coord)), ("nearest_mode", s(rounding))]);
            let out = run_forward(&n, 13, &[x.clone(), none(), none(), sizes.clone()]);
            assert_eq!(values(&out), want, "{coord} {rounding}");
        }
        // Downscale 0.6: [[1,2,3,4],[5,6,7,8]] → [[1, 3]] both at opset 10
        // (asymmetric, ceil when downscaling) and 11 (half_pixel, round_prefer_floor).
        let x8 = floats(&[1, 1, 2, 4], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let sc = floats(&[4], &[1.0, 1.0, 0.6, 0.6]);
        assert_eq!(values(&run_forward(&node("Resize", &[]), 10, &[x8.clone(), sc.clone()])), [1.0, 3.0]);
        assert_eq!(values(&run_forward(&node("Resize", &[]), 11, &[x8, none(), sc])), [1.0, 3.0]);
        // Integer tensors resize in nearest mode.
        let xi = Some(Value::I(ndarray::arr1(&[4, 5]).into_dyn()));
        let out = run_forward(&node("Resize", &[]), 13, &[xi, none(), floats(&[1], &[2.0])]);
        assert_eq!(out[0], Value::I(ndarray::arr1(&[4, 4, 5, 5]).into_dyn()));
    }

    #[test]
    fn upsample_values() {
        // The spec's example: scales (1, 1, 2, 3).
        let want = [
            1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0,
            4.0, 4.0, 4.0,
        ];
        let out = run_forward(&node("Upsample", &[]), 9, &[x2x2(), floats(&[4], &[1.0, 1.0, 2.0, 3.0])]);
        assert_eq!(values(&out), want);
        let n = node("Upsample", &[("scales", Attr::Floats(vec![1.0, 1.0, 2.0, 3.0]))]);
        assert_eq!(values(&run_forward(&n, 7, &[x2x2()])), want);
        // Linear is asymmetric: x = j/2 → rows/cols 0, ½, 1, 1 (clamped).
        let n = node("Upsample", &[("mode", s("linear"))]);
        let out = run_forward(&n, 9, &[x2x2(), floats(&[4], &[1.0, 1.0, 2.0, 2.0])]);
        let r = |a: f64| [a, a + 0.5, a + 1.0, a + 1.0];
        let want: Vec<f64> = [1.0, 2.0, 3.0, 3.0].iter().flat_map(|&a| r(a)).collect();
        close(&values(&out), &want);
    }

    #[test]
    fn nearest_gradients() {
        for rounding in ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"] {
            for coord in ["asymmetric", "half_pixel"] {
                let n = node("Resize", &[("nearest_mode", s(rounding)), ("coordinate_transformation_mode", s(coord))]);
                let up =
                    check_rule(&n, 13, vec![f(&[1, 2, 2, 3], 1), none(), floats(&[4], &[1.0, 1.0, 2.0, 2.0])], &[true]);
                assert_eq!(up.shape(), &[1, 2, 4, 6]);
                let down = check_rule(&n, 13, vec![f(&[1, 1, 4, 5], 2), none(), none(), ints(&[1, 1, 3, 2])], &[true]);
                assert_eq!(down.shape(), &[1, 1, 3, 2]);
            }
        }
    }

    #[test]
    fn linear_gradients() {
        for coord in ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"] {
            let n = node("Resize", &[("mode", s("linear")), ("coordinate_transformation_mode", s(coord))]);
            let up =
                check_rule(&n, 19, vec![f(&[1, 2, 2, 3], 3), none(), floats(&[4], &[1.0, 1.0, 2.0, 2.0])], &[true]);
            assert_eq!(up.shape(), &[1, 2, 4, 6]);
            let down =
                check_rule(&n, 19, vec![f(&[1, 1, 5, 4], 4), none(), floats(&[4], &[1.0, 1.0, 0.6, 0.5])], &[true]);
            assert_eq!(down.shape(), &[1, 1, 3, 2]);
            let sized = check_rule(&n, 19, vec![f(&[1, 1, 3, 4], 5), none(), none(), ints(&[1, 1, 5, 1])], &[true]);
            assert_eq!(sized.shape(), &[1, 1, 5, 1]);
        }
        // Opset 18 axes: sizes for the last two axes only.
        let n = node("Resize", &[("mode", s("linear")), ("axes", Attr::Ints(vec![-2, -1]))]);
        let y = check_rule(&n, 18, vec![f(&[1, 2, 2, 2], 6), none(), none(), ints(&[3, 5])], &[true]);
        assert_eq!(y.shape(), &[1, 2, 3, 5]);
    }

    #[test]
    fn upsample_gradients() {
        for mode in ["nearest", "linear"] {
            let n = node("Upsample", &[("mode", s(mode))]);
            let y = check_rule(&n, 9, vec![f(&[1, 1, 2, 3], 7), floats(&[4], &[1.0, 1.0, 2.0, 1.5])], &[true]);
            assert_eq!(y.shape(), &[1, 1, 4, 4]);
        }
    }

    #[test]
    fn unsupported_and_bad_inputs_are_errors() {
        let sc = floats(&[4], &[1.0, 1.0, 2.0, 2.0]);
        assert!(fails(&node("Resize", &[("mode", s("cubic"))]), 13, &[x2x2(), none(), sc.clone()]).contains("cubic"));
        let n = node("Resize", &[("coordinate_transformation_mode", s("tf_crop_and_resize"))]);
        assert!(fails(&n, 13, &[x2x2(), none(), sc.clone()]).contains("tf_crop_and_resize"));
        let n = node("Resize", &[("mode", s("linear")), ("antialias", Attr::Int(1))]);
        assert!(fails(&n, 18, &[x2x2(), none(), floats(&[4], &[1.0, 1.0, 0.5, 0.5])]).contains("antialias"));
        check_rule(&n, 18, vec![x2x2(), none(), sc.clone()], &[true]);
        let n = node("Resize", &[("keep_aspect_ratio_policy", s("not_larger"))]);
        assert!(fails(&n, 18, &[x2x2(), none(), none(), ints(&[1, 1, 3, 3])]).contains("keep_aspect_ratio_policy"));
        let n = node("Resize", &[]);
        fails(&n, 13, &[x2x2(), none(), floats(&[2], &[2.0, 2.0])]);
        fails(&n, 13, &[x2x2(), none(), floats(&[4], &[1.0, 1.0, -2.0, 2.0])]);
        fails(&n, 13, &[x2x2(), none(), none(), none()]);
        fails(&n, 13, &[x2x2(), none(), sc.clone(), ints(&[1, 1, 4, 4])]);
        fails(&n, 13, &[x2x2(), none(), floats(&[4], &[1.0, 1.0, 1e30, 1e30])]);
        fails(&node("Resize", &[("axes", Attr::Ints(vec![4]))]), 18, &[x2x2(), none(), floats(&[1], &[2.0])]);
        fails(&node("Upsample", &[]), 7, &[x2x2()]);
    }
}
