//! Conv (opsets 1–22): forward by im2col (`im2col.rs`) + GEMM per group, with a direct loop
//! for depthwise convolutions and Winograd (`winograd.rs`) for ungrouped 3×3
//! stride-1 ones; backward by the adjoint of each step (dX = col2im(Wᵀ·dY),
//! or at stride 1 a convolution of dY with the flipped kernel; dW = dY·colᵀ,
//! dB = Σ dY).
//!
//! This file also owns the sliding-window geometry the pooling ops in
//! `pool.rs` share (auto_pad, pads, strides, dilations, ceil_mode → output
//! size and per-axis window tables), so Conv and the pools follow one reading
//! of the ONNX spec. Spatial ranks 1–3 are all handled as 3-D, with leading
//! axes of size 1 (kernel 1, stride 1, no padding): one code path, and the
//! extra loop levels cost nothing for 2-D inputs. It does not own ConvTranspose
//! or QLinearConv.

use super::activation::{dout_through, relu};
use super::im2col::{col2im, col2im_onto, im2col};
use super::panel::{PackedRows, as_f32, as_f32_mut, avx512};
use super::value::{finput, with_scratch};
use super::vmath;
use super::winograd::{Plane, Winograd};
use super::{Backward, BuildCtx, Elem, Op, OpError, OpResult, Value, op_bail};
use crate::model::graph::{Attr, Node};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayD, ArrayView2, ArrayViewMut2, IxDyn};
use std::borrow::Cow;
use std::ops::Range;

// ---------------------------------------------------------------------------
// Attribute parsing and window geometry, shared with pool.rs.

/// Attribute values above this are rejected: no real model comes near it, and
/// it keeps every later index computation far from overflow on untrusted files.
const MAX_ATTR: i64 = 1 << 20;

/// Outputs larger than this many elements are rejected rather than allocated
/// (huge pads in a malformed file would otherwise abort the process).
const MAX_ELEMS: usize = 1 << 32;

/// An optional list-of-ints attribute; an empty list counts as absent, as in
/// onnxruntime (some exporters write `pads: []`).
pub(super) fn attr_ints_opt(n: &Node, name: &str) -> OpResult<Option<Vec<i64>>> {
    match n.attrs.get(name) {
        None => Ok(None),
        Some(Attr::Ints(v)) if v.is_empty() => Ok(None),
        Some(Attr::Ints(v)) => Ok(Some(v.clone())),
        Some(_) => op_bail!("attribute '{name}' must be a list of integers"),
    }
}

/// An int attribute with a default.
pub(super) fn attr_int_or(n: &Node, name: &str, default: i64) -> OpResult<i64> {
    match n.attrs.get(name) {
        None => Ok(default),
        Some(Attr::Int(i)) => Ok(*i),
        Some(_) => op_bail!("attribute '{name}' must be an integer"),
    }
}

/// A 0/1 flag attribute.
pub(super) fn attr_flag(n: &Node, name: &str) -> OpResult<bool> {
    match attr_int_or(n, name, 0)? {
        0 => Ok(false),
        1 => Ok(true),
        v => op_bail!("attribute '{name}' must be 0 or 1, got {v}"),
    }
}

fn to_usize(name: &str, v: Vec<i64>, min: i64) -> OpResult<Vec<usize>> {
    v.into_iter()
        .map(|x| {
            if x < min || x > MAX_ATTR {
                op_bail!("attribute '{name}' has value {x}, expected {min}..={MAX_ATTR}")
            }
            Ok(x as usize)
        })
        .collect()
}

/// Product of `shape`, rejected above [`MAX_ELEMS`].
pub(super) fn checked_len(shape: &[usize]) -> OpResult<usize> {
    match shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) {
        Some(n) if n <= MAX_ELEMS => Ok(n),
        _ => op_bail!("output shape {shape:?} is too large"),
    }
}

/// The data of `a` in row-major order, borrowed when already contiguous.
pub(super) fn contiguous<T: Clone>(a: &ArrayD<T>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(super::value::standard_vec(a.view())),
    }
}

/// Wraps a row-major buffer as an array.
pub(super) fn array<T>(shape: &[usize], data: Vec<T>) -> OpResult<ArrayD<T>> {
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| OpError(format!("internal shape error: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// The window attributes of Conv, MaxPool and AveragePool, parsed once.
/// Lengths are checked against each other here and against the input's
/// spatial rank in [`Window::geometry`], which is the first time it is known.
#[derive(Debug, Clone)]
pub(super) struct Window {
    pub auto_pad: AutoPad,
    pub kernel: Option<Vec<usize>>,
    pub strides: Option<Vec<usize>>,
    pub dilations: Option<Vec<usize>>,
    /// ONNX order: all begins, then all ends.
    pub pads: Option<Vec<usize>>,
    pub ceil_mode: bool,
}

impl Window {
    pub fn parse(n: &Node) -> OpResult<Window> {
        let auto_pad = match n.attrs.get("auto_pad") {
            None => AutoPad::NotSet,
            Some(Attr::Str(s)) => match s.as_str() {
                "NOTSET" | "" => AutoPad::NotSet,
                "SAME_UPPER" => AutoPad::SameUpper,
                "SAME_LOWER" => AutoPad::SameLower,
                "VALID" => AutoPad::Valid,
                other => op_bail!("unknown auto_pad '{other}'"),
            },
            Some(_) => op_bail!("attribute 'auto_pad' must be a string"),
        };
        let list = |name: &str, min: i64| -> OpResult<Option<Vec<usize>>> {
            attr_ints_opt(n, name)?.map(|v| to_usize(name, v, min)).transpose()
        };
        let w = Window {
            auto_pad,
            kernel: list("kernel_shape", 1)?,
            strides: list("strides", 1)?,
            dilations: list("dilations", 1)?,
            pads: list("pads", 0)?,
            ceil_mode: attr_flag(n, "ceil_mode")?,
        };
        if let Some(p) = &w.pads
            && p.len() % 2 != 0
        {
            op_bail!("'pads' must have an even length (begins then ends), got {p:?}");
        }
        let lens = [
            ("kernel_shape", w.kernel.as_ref().map(Vec::len)),
            ("strides", w.strides.as_ref().map(Vec::len)),
            ("dilations", w.dilations.as_ref().map(Vec::len)),
            ("pads", w.pads.as_ref().map(|p| p.len() / 2)),
        ];
        let known: Vec<_> = lens.iter().filter_map(|(name, l)| l.map(|l| (name, l))).collect();
        if let Some(&(first, rank)) = known.first()
            && let Some((other, _)) = known.iter().find(|(_, l)| *l != rank)
        {
            op_bail!("attributes '{first}' and '{other}' disagree on the number of spatial axes ({lens:?})");
        }
        Ok(w)
    }

    /// Resolves the window over an input with spatial dims `input` and a
    /// kernel of spatial dims `kernel`.
    ///
    /// Output size per axis, with dk = dilation·(k−1)+1 the dilated extent:
    /// - SAME_*: out = ⌈in/stride⌉, total pad = max(0, (out−1)·stride + dk − in),
    ///   the odd unit at the end (UPPER) or the beginning (LOWER);
    /// - otherwise (VALID = no pads): out = ⌊(in + pads − dk)/stride⌋ + 1, or with
    ///   ceil_mode ⌈…⌉ + 1, less one if that last window would start in the
    ///   right padding (the PyTorch/onnxruntime rule; such a window covers no input).
    pub fn geometry(&self, input: &[usize], kernel: &[usize]) -> OpResult<Geom> {
        let r = input.len();
        if !(1..=3).contains(&r) {
            op_bail!("only 1-D, 2-D and 3-D windows are supported, got {r} spatial axes");
        }
        if kernel.len() != r {
            op_bail!("kernel has {} spatial axes, input has {r}", kernel.len());
        }
        for (name, len) in [
            ("strides", self.strides.as_ref().map(Vec::len)),
            ("dilations", self.dilations.as_ref().map(Vec::len)),
            ("pads", self.pads.as_ref().map(|p| p.len() / 2)),
        ] {
            if let Some(len) = len
                && len != r
            {
                op_bail!("'{name}' is for {len} spatial axes, the input has {r}");
            }
        }
        let mut g = Geom {
            rank: r,
            input: [1; 3],
            kernel: [1; 3],
            stride: [1; 3],
            dil: [1; 3],
            pad_begin: [0; 3],
            pad_end: [0; 3],
            out: [1; 3],
        };
        let off = 3 - r;
        for a in 0..r {
            let (i, k) = (input[a], kernel[a]);
            if i == 0 {
                op_bail!("spatial axis {a} of the input is empty");
            }
            if k == 0 || k as i64 > MAX_ATTR {
                op_bail!("kernel size {k} on spatial axis {a} is out of range");
            }
            let s = self.strides.as_ref().map_or(1, |v| v[a]);
            let d = self.dilations.as_ref().map_or(1, |v| v[a]);
            let dk = d * (k - 1) + 1;
            let (pb, pe, out) = match self.auto_pad {
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let out = i.div_ceil(s);
                    let total = ((out - 1) * s + dk).saturating_sub(i);
                    let pb = if self.auto_pad == AutoPad::SameUpper { total / 2 } else { total - total / 2 };
                    (pb, total - pb, out)
                }
                AutoPad::NotSet | AutoPad::Valid => {
                    let (pb, pe) = match (&self.pads, self.auto_pad) {
                        (Some(p), AutoPad::NotSet) => (p[a], p[a + r]),
                        _ => (0, 0),
                    };
                    let span = i + pb + pe;
                    if span < dk {
                        op_bail!("window of extent {dk} is larger than the padded input ({span}) on spatial axis {a}");
                    }
                    let out = if self.ceil_mode {
                        let o = (span - dk).div_ceil(s) + 1;
                        if (o - 1) * s >= i + pb { o - 1 } else { o }
                    } else {
                        (span - dk) / s + 1
                    };
                    (pb, pe, out)
                }
            };
            g.input[off + a] = i;
            g.kernel[off + a] = k;
            g.stride[off + a] = s;
            g.dil[off + a] = d;
            g.pad_begin[off + a] = pb;
            g.pad_end[off + a] = pe;
            g.out[off + a] = out;
        }
        checked_len(&g.out)?;
        Ok(g)
    }
}

/// A resolved window over three spatial axes (depth, height, width); 1-D
/// and 2-D inputs have leading axes of size 1 with kernel 1, stride 1 and no
/// padding. Output position o on an axis covers input positions
/// o·stride − pad_begin + j·dil for j in 0..kernel.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Geom {
    /// The real number of spatial axes (1..=3).
    pub rank: usize,
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub dil: [usize; 3],
    pub pad_begin: [usize; 3],
    pub pad_end: [usize; 3],
    pub out: [usize; 3],
}

/// One output position's window on one axis.
#[derive(Debug, Clone, Copy)]
pub(super) struct Win {
    /// Input position of kernel index 0 (negative inside the left padding).
    pub start: isize,
    /// Kernel indices `lo..hi` fall inside the input.
    pub lo: usize,
    pub hi: usize,
    /// Kernel indices `0..padded` fall inside the padded extent
    /// [−pad_begin, in + pad_end) (fewer than `kernel` only in ceil mode).
    pub padded: usize,
}

impl Geom {
    pub fn in_len(&self) -> usize {
        self.input.iter().product()
    }
    pub fn out_len(&self) -> usize {
        self.out.iter().product()
    }
    pub fn kernel_len(&self) -> usize {
        self.kernel.iter().product()
    }
    /// The output's spatial dims (the real axes only).
    pub fn out_dims(&self) -> &[usize] {
        &self.out[3 - self.rank..]
    }

    /// For every output position on axis `a`, its window (for pooling).
    pub fn windows(&self, a: usize) -> Vec<Win> {
        let (i, k, s, d) =
            (self.input[a] as isize, self.kernel[a] as isize, self.stride[a] as isize, self.dil[a] as isize);
        let (pb, pe) = (self.pad_begin[a] as isize, self.pad_end[a] as isize);
        // Every count below is of j ≥ 0 with start + j·d on one side of a bound,
        // a ceiling division of a non-negative distance.
        let count_below = |bound: isize, start: isize| if bound <= start { 0 } else { (bound - start + d - 1) / d };
        (0..self.out[a] as isize)
            .map(|o| {
                let start = o * s - pb;
                let lo = count_below(0, start).min(k);
                let hi = count_below(i, start).min(k).max(lo);
                let padded = count_below(i + pe, start).min(k);
                Win { start, lo: lo as usize, hi: hi as usize, padded: padded as usize }
            })
            .collect()
    }

    /// For every kernel index j on axis `a`: the output positions `lo..hi`
    /// whose tap j lands inside the input, and the input position of tap j at
    /// output 0 (`offset`, so output o reads o·stride + offset). For im2col.
    fn taps(&self, a: usize) -> Vec<Tap> {
        let (i, s, d, pb) =
            (self.input[a] as isize, self.stride[a] as isize, self.dil[a] as isize, self.pad_begin[a] as isize);
        let out = self.out[a] as isize;
        (0..self.kernel[a] as isize)
            .map(|j| {
                let offset = j * d - pb;
                // o·s + offset ≥ 0  ⇔  o ≥ ⌈−offset/s⌉;  o·s + offset < i  ⇔  o < ⌈(i − offset)/s⌉.
                let lo = if offset >= 0 { 0 } else { (-offset + s - 1) / s }.min(out);
                let hi = if i <= offset { 0 } else { (i - offset + s - 1) / s }.min(out).max(lo);
                Tap { lo: lo as usize, hi: hi as usize, offset }
            })
            .collect()
    }

    /// For a stride-1 window, its adjoint as a window of the same kind:
    /// y[o] = Σ_j w[j]·x[o − p_b + j·d] gives
    /// ∂L/∂x[i] = Σ_j w[j]·dY[i + p_b − j·d] = Σ_j′ w[k−1−j′]·dY[i − p_b′ + j′·d]
    /// with j′ = k−1−j and p_b′ = d(k−1) − p_b: a convolution of dY with the
    /// flipped kernel, padded by d(k−1) − p_b before and d(k−1) − p_e after,
    /// whose output has the input's size (out = in + p_b + p_e − d(k−1)).
    /// `None` for other strides, or a pad wider than the dilated kernel.
    fn adjoint(&self) -> Option<Geom> {
        if self.stride != [1; 3] {
            return None;
        }
        let mut a = self.clone();
        for ax in 0..3 {
            let span = self.dil[ax] * (self.kernel[ax] - 1);
            a.pad_begin[ax] = span.checked_sub(self.pad_begin[ax])?;
            a.pad_end[ax] = span.checked_sub(self.pad_end[ax])?;
            a.input[ax] = self.out[ax];
            a.out[ax] = self.input[ax];
        }
        Some(a)
    }

    /// Output rows `rows` of a 2-D geometry as a geometry of their own, over
    /// the input rows it reads (returned; the caller copies them out): its
    /// output row o is this one's row rows.start + o, reading the same input
    /// values or the same padding. `None` unless 2-D, or where the band
    /// would read no input row (padding at least as tall as the window).
    fn band(&self, rows: Range<usize>) -> Option<(Geom, Range<usize>)> {
        if self.input[0] != 1 || self.out[0] != 1 || rows.is_empty() || rows.end > self.out[1] {
            return None;
        }
        let (s, pb) = (self.stride[1] as isize, self.pad_begin[1] as isize);
        let extent = (self.dil[1] * (self.kernel[1] - 1) + 1) as isize;
        let first = rows.start as isize * s - pb;
        let end = (rows.end as isize - 1) * s - pb + extent;
        let (lo, hi) = (first.max(0), end.min(self.input[1] as isize));
        if hi <= lo {
            return None;
        }
        let mut g = self.clone();
        g.input[1] = (hi - lo) as usize;
        g.pad_begin[1] = (lo - first) as usize;
        g.pad_end[1] = (end - hi) as usize;
        g.out[1] = rows.len();
        Some((g, lo as usize..hi as usize))
    }

    fn is_pointwise(&self) -> bool {
        self.kernel == [1; 3] && self.stride == [1; 3] && self.pad_begin == [0; 3] && self.pad_end == [0; 3]
    }
}

/// Kernel index j on one axis: output positions `lo..hi` read inside the
/// input, output o reading input o·stride + `offset`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tap {
    pub lo: usize,
    pub hi: usize,
    pub offset: isize,
}

/// Per-axis tap tables of one geometry.
pub(super) struct Taps(pub [Vec<Tap>; 3]);

impl Taps {
    pub fn new(g: &Geom) -> Taps {
        Taps([g.taps(0), g.taps(1), g.taps(2)])
    }

    /// Every (out_row, in_row, jd, jh): output row (od, oh) and kernel row
    /// (jd, jh) whose input row lies inside the input; rows index the
    /// flattened (depth, height) planes. For 2-D inputs the order is output
    /// row outer, kernel row inner, so a row's accumulations stay in cache.
    /// A list rather than a callback: the row loops that walk it are
    /// compiled for AVX-512, and a closure called from there would not be.
    fn row_pairs(&self, g: &Geom) -> Vec<[usize; 4]> {
        let mut pairs = Vec::new();
        let [_, in_h, _] = g.input;
        let [out_d, out_h, _] = g.out;
        for od in 0..out_d {
            for (jd, td) in self.0[0].iter().enumerate() {
                if od < td.lo || od >= td.hi {
                    continue;
                }
                let id = (od * g.stride[0]) as isize + td.offset;
                for oh in 0..out_h {
                    for (jh, th) in self.0[1].iter().enumerate() {
                        if oh < th.lo || oh >= th.hi {
                            continue;
                        }
                        let ih = (oh * g.stride[1]) as isize + th.offset;
                        pairs.push([od * out_h + oh, id as usize * in_h + ih as usize, jd, jh]);
                    }
                }
            }
        }
        pairs
    }
}

fn view<T>(s: &[T], rows: usize, cols: usize) -> OpResult<ArrayView2<'_, T>> {
    ArrayView2::from_shape((rows, cols), &s[..rows * cols]).map_err(|e| OpError(format!("internal shape error: {e}")))
}

fn view_mut<T>(s: &mut [T], rows: usize, cols: usize) -> OpResult<ArrayViewMut2<'_, T>> {
    ArrayViewMut2::from_shape((rows, cols), &mut s[..rows * cols])
        .map_err(|e| OpError(format!("internal shape error: {e}")))
}

// ---------------------------------------------------------------------------
// Conv.

/// Sizes of one evaluation, checked against each other.
#[derive(Debug, Clone)]
struct Dims {
    n: usize,
    c: usize,
    m: usize,
    group: usize,
    geom: Geom,
}

impl Dims {
    fn cg(&self) -> usize {
        self.c / self.group
    }
    fn mg(&self) -> usize {
        self.m / self.group
    }
    /// Rows of a group's im2col matrix.
    fn ck(&self) -> usize {
        self.cg() * self.geom.kernel_len()
    }
    fn out_shape(&self) -> Vec<usize> {
        let mut s = vec![self.n, self.m];
        s.extend_from_slice(self.geom.out_dims());
        s
    }
}

struct Conv {
    win: Window,
    group: usize,
    /// Depthwise convolutions (group = C > 1) take the direct loop; tests turn
    /// it off to compare with the grouped GEMM path.
    depthwise_fast: bool,
    /// The weight packed for the forward and the input-gradient products,
    /// when it is a constant and the CPU has AVX-512 (see [`Op::prepare`]).
    panels: Option<ConvPanels>,
    /// The output is relu(conv), a Relu absorbed (see [`Op::absorb_relu`]).
    relu: bool,
}

/// Per group g, W[g] as [M/g, C/g·k] (forward: Y = W·col) and W[g]ᵀ
/// (backward: ∂L/∂col = Wᵀ·dY), packed once; for stride-1 convolutions also
/// the flipped kernel W′[g] as [C/g, M/g·k], W′[c, (m, j′)] = W[m, c, k−1−j′]
/// (backward as a convolution: ∂L/∂X = W′·col(dY), see [`Geom::adjoint`]).
/// Ungrouped 3×3 stride-1 undilated convolutions also keep W and W′ for
/// Winograd, transformed into the tile size a plane needs on first use
/// (see [`Winograd`]).
struct ConvPanels {
    forward: Vec<PackedRows>,
    transposed: Vec<PackedRows>,
    flipped: Vec<PackedRows>,
    winograd: Option<Winograd>,
    winograd_adjoint: Option<Winograd>,
}

impl ConvPanels {
    /// `stride_1`: every stride is 1; `undilated`: every dilation is 1
    /// (Winograd needs both). Where W′ is kept in Winograd form, the flipped
    /// kernel is not packed: a layer Winograd declines at run time (pads
    /// wider than 2) takes the transposed product and col2im instead.
    fn pack<T: Elem>(w: &ArrayD<T>, group: usize, stride_1: bool, undilated: bool) -> Option<ConvPanels> {
        let s = w.shape();
        // Depthwise convolutions (one input channel per group) take the direct loop.
        if s.len() < 3 || !s[0].is_multiple_of(group) || (group > 1 && s[1] == 1) {
            return None;
        }
        let (mg, ck) = (s[0] / group, s[1..].iter().product::<usize>());
        let standard = w.as_standard_layout();
        let grouped = standard.view().into_shape_with_order((group, mg, ck)).ok()?;
        let mut panels = ConvPanels {
            forward: Vec::new(),
            transposed: Vec::new(),
            flipped: Vec::new(),
            winograd: None,
            winograd_adjoint: None,
        };
        if let (true, 1, Ok(w4)) = (stride_1 && undilated, group, w.view().into_dimensionality::<ndarray::Ix4>()) {
            panels.winograd = Winograd::new(w4.view());
            // W′[c, m, i, j] = W[m, c, 2 − i, 2 − j]: the adjoint's kernel.
            let flipped = w4.permuted_axes([1, 0, 2, 3]);
            panels.winograd_adjoint = Winograd::new(flipped.slice(ndarray::s![.., .., ..;-1, ..;-1]));
        }
        let (cg, taps) = (s[1], ck / s[1].max(1));
        for wg in grouped.outer_iter() {
            panels.forward.push(PackedRows::pack(wg)?);
            panels.transposed.push(PackedRows::pack(wg.t())?);
            if stride_1 && panels.winograd_adjoint.is_none() {
                // Reversing every spatial axis of a row-major tap index reverses the flat index.
                let flipped = ndarray::Array2::from_shape_fn((cg, mg * taps), |(c, mj)| {
                    let (m, j) = (mj / taps, mj % taps);
                    wg[[m, c * taps + taps - 1 - j]]
                });
                panels.flipped.push(PackedRows::pack(flipped.view())?);
            }
        }
        Some(panels)
    }

    /// Group g's packed matrix in `which`, if it has the shape rows × depth.
    fn get(which: &[PackedRows], g: usize, rows: usize, depth: usize) -> Option<&PackedRows> {
        which.get(g).filter(|p| p.rows() == rows && p.depth() == depth)
    }
}

pub fn build_conv<T: Elem>(n: &Node, _c: &BuildCtx) -> OpResult<Box<dyn Op<T>>> {
    let mut win = Window::parse(n)?;
    // Conv has no ceil_mode; ignore a stray one rather than change the output size.
    win.ceil_mode = false;
    let group = attr_int_or(n, "group", 1)?;
    if !(1..=MAX_ATTR).contains(&group) {
        op_bail!("attribute 'group' must be at least 1, got {group}");
    }
    Ok(Box::new(Conv::new(win, group as usize)))
}

/// `wg` and the plane geometry of `g`, when `wg` (of `rows` × `depth`
/// channels; it exists only for ungrouped convolutions) applies to it: a
/// 2-D 3×3 stride-1 undilated window with pads ≤ 2. The choice must not
/// depend on the batch size (a sample's result does not depend on its
/// batch), so it is taken even on 7×7 maps, where at batch 1 the 16
/// F(2×2) tiles fill half of the packed kernel's 32 columns and Winograd
/// is 0.9–1.0× the direct product (1.7× at batch 16).
fn winograd_for<'a>(wg: Option<&'a Winograd>, g: &Geom, rows: usize, depth: usize) -> Option<(&'a Winograd, Plane)> {
    let wg = wg.filter(|w| w.rows() == rows && w.depth() == depth)?;
    let square = g.kernel == [1, 3, 3] && g.stride == [1; 3] && g.dil[1..] == [1, 1];
    let flat = g.input[0] == 1 && g.out[0] == 1 && g.pad_begin[0] == 0 && g.pad_end[0] == 0;
    let pads = g.pad_begin[1..].iter().chain(&g.pad_end[1..]).all(|&p| p <= 2);
    if !(square && flat && pads) {
        return None;
    }
    Some((
        wg,
        Plane { input: [g.input[1], g.input[2]], pad: [g.pad_begin[1], g.pad_begin[2]], out: [g.out[1], g.out[2]] },
    ))
}

impl Conv {
    /// A convolution as the model states it: nothing packed or absorbed yet.
    fn new(win: Window, group: usize) -> Conv {
        Conv { win, group, depthwise_fast: true, panels: None, relu: false }
    }

    fn dims(&self, x: &[usize], w: &[usize], b: Option<&[usize]>) -> OpResult<Dims> {
        if !(3..=5).contains(&x.len()) {
            op_bail!("Conv supports 1-D to 3-D convolutions (input rank 3 to 5), got input shape {x:?}");
        }
        if w.len() != x.len() {
            op_bail!("weight shape {w:?} does not match the rank of input shape {x:?}");
        }
        let (n, c, m, group) = (x[0], x[1], w[0], self.group);
        if c % group != 0 {
            op_bail!("input channels {c} are not divisible by group {group}");
        }
        if w[1] != c / group {
            op_bail!("weight shape {w:?}: second dim must be input channels / group = {}", c / group);
        }
        if m % group != 0 {
            op_bail!("output channels {m} are not divisible by group {group}");
        }
        if let Some(k) = &self.win.kernel
            && k.as_slice() != &w[2..]
        {
            op_bail!("kernel_shape {k:?} does not match the weight's spatial dims {:?}", &w[2..]);
        }
        if let Some(b) = b
            && b != [m]
        {
            op_bail!("bias shape {b:?} should be [{m}]");
        }
        let geom = self.win.geometry(&x[2..], &w[2..])?;
        let dims = Dims { n, c, m, group, geom };
        checked_len(&dims.out_shape())?;
        Ok(dims)
    }

    fn depthwise(&self, d: &Dims) -> bool {
        self.depthwise_fast && d.group == d.c && d.group > 1
    }
}

impl<T: Elem> Op<T> for Conv {
    fn prepare(&mut self, constants: &[Option<&Value<T>>]) {
        if let Some(Ok(w)) = constants.get(1).copied().flatten().map(Value::float) {
            let ones = |v: &Option<Vec<usize>>| v.as_ref().is_none_or(|s| s.iter().all(|&s| s == 1));
            self.panels = ConvPanels::pack(w, self.group, ones(&self.win.strides), ones(&self.win.dilations));
        }
    }

    fn forward(&self, inputs: &[Option<&Value<T>>]) -> OpResult<Vec<Value<T>>> {
        let x = finput(inputs, 0)?;
        let w = finput(inputs, 1)?;
        let b = match inputs.get(2).copied().flatten() {
            Some(v) => Some(v.float()?),
            None => None,
        };
        let d = self.dims(x.shape(), w.shape(), b.map(|b| b.shape()))?;
        let (xs, ws) = (contiguous(x), contiguous(w));
        let bs = b.map(contiguous);
        let mut y = vec![T::zero(); d.n * d.m * d.geom.out_len()];
        let winograd = self.panels.as_ref().and_then(|p| winograd_for(p.winograd.as_ref(), &d.geom, d.m, d.c));
        if self.depthwise(&d) {
            depthwise_forward(&xs, &ws, bs.as_deref(), &d, &mut y);
        } else if !winograd.is_some_and(|(wg, plane)| wg.conv(&xs, d.n, &plane, bs.as_deref(), &mut y)) {
            gemm_forward(&xs, &ws, bs.as_deref(), &d, self.panels.as_ref(), &mut y, BAND_VALUES)?;
        }
        if self.relu {
            vmath::map_in_place(&mut y, relu);
        }
        Ok(vec![Value::F(array(&d.out_shape(), y)?)])
    }

    fn absorb_relu(&mut self) -> bool {
        self.relu = true;
        true
    }

    /// Y is bilinear in (X, W) plus B: y[n, m, o] = b[m] + Σ_{c, j} w[m, c, j]·x[n, c, o·s + j·d − p]
    /// (padding reads 0), so ∂L/∂x[n, c, i] = Σ_{m, o, j : o·s + j·d − p = i} w[m, c, j]·dY[n, m, o],
    /// ∂L/∂w[m, c, j] = Σ_{n, o} dY[n, m, o]·x[n, c, o·s + j·d − p] and ∂L/∂b[m] = Σ_{n, o} dY[n, m, o];
    /// the GEMM and depthwise helpers below compute exactly these sums.
    fn backward(&self, ctx: &Backward<'_, T>) -> OpResult<Vec<Option<ArrayD<T>>>> {
        let x = finput(ctx.inputs, 0)?;
        let w = finput(ctx.inputs, 1)?;
        let b = match ctx.inputs.get(2).copied().flatten() {
            Some(v) => Some(v.float()?),
            None => None,
        };
        let d = self.dims(x.shape(), w.shape(), b.map(|b| b.shape()))?;
        if ctx.dout.shape() != d.out_shape() {
            op_bail!("output gradient shape {:?} differs from the output shape {:?}", ctx.dout.shape(), d.out_shape());
        }
        let dout = dout_through(ctx, self.relu)?;
        let wants = |i: usize| ctx.wrt.get(i).copied().unwrap_or(false);
        let (xs, ws, dy) = (contiguous(x), contiguous(w), contiguous(&dout));
        let mut dx = wants(0).then(|| vec![T::zero(); xs.len()]);
        let mut dw = wants(1).then(|| vec![T::zero(); ws.len()]);
        if dx.is_some() || dw.is_some() {
            if self.depthwise(&d) {
                depthwise_backward(&xs, &ws, &dy, &d, dx.as_deref_mut(), dw.as_deref_mut());
            } else {
                let (dx, dw) = (dx.as_deref_mut(), dw.as_deref_mut());
                gemm_backward(&xs, &ws, &dy, &d, self.panels.as_ref(), dx, dw, BAND_VALUES)?;
            }
        }
        // y[n, m, p] = b[m] + …, so ∂L/∂b[m] = Σ_{n,p} dY[n, m, p].
        let db = match (b, wants(2)) {
            (Some(_), true) => {
                let p = d.geom.out_len();
                let mut db = vec![T::zero(); d.m];
                for (i, plane) in dy.chunks_exact(p).enumerate() {
                    db[i % d.m] += plane.iter().copied().sum::<T>();
                }
                Some(array(&[d.m], db)?)
            }
            _ => None,
        };
        let mut grads: Vec<Option<ArrayD<T>>> = vec![None; ctx.inputs.len()];
        if let Some(dx) = dx {
            grads[0] = Some(array(x.shape(), dx)?);
        }
        if let Some(dw) = dw {
            grads[1] = Some(array(w.shape(), dw)?);
        }
        if let (Some(db), Some(slot)) = (db, grads.get_mut(2)) {
            *slot = Some(db);
        }
        Ok(grads)
    }
}

/// Column-matrix values per band of output rows (512 KiB) where a product
/// runs in bands (see [`bands`]): the whole matrix of a large image's first
/// convolution (ResNet-18's is 147 × 12,544 per image, 7.4 MB) went
/// through memory, 147 rows 50 KB apart for every 32 columns of the
/// product, and so did ∂L/∂col in the backward pass; a band's stay in L2.
/// ResNet-18's first convolution, forward and backward: 0.55 → 0.41 s per
/// 80 image-steps; bands of 2 MiB were half as good, 256 KiB the same.
const BAND_VALUES: usize = 1 << 17;

/// Output rows `rows` of a convolution as a convolution of their own (see
/// [`Geom::band`]) over the input rows `input_rows`.
struct Band {
    geom: Geom,
    taps: Taps,
    rows: Range<usize>,
    input_rows: Range<usize>,
}

impl Band {
    /// Where the band's input rows lie in each of `channels` planes of
    /// `in_len` values, rows `in_w` long: one range per channel, each
    /// `input_rows.len() · in_w` values (the band's own input planes).
    fn input_ranges(&self, channels: usize, in_len: usize, in_w: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        let len = self.input_rows.len() * in_w;
        (0..channels).map(move |c| {
            let start = c * in_len + self.input_rows.start * in_w;
            start..start + len
        })
    }
}

/// The bands of about `band_values` column-matrix values that a 2-D,
/// ungrouped, not pointwise convolution with `ck` matrix rows runs in,
/// when its whole matrix would hold more than twice that; `None` otherwise.
fn bands(g: &Geom, ck: usize, group: usize, band_values: usize) -> Option<Vec<Band>> {
    if g.is_pointwise() || group != 1 || ck * g.out_len() <= 2 * band_values {
        return None;
    }
    let [_, out_h, out_w] = g.out;
    let per_band = (band_values / (ck * out_w).max(1)).max(1);
    (0..out_h)
        .step_by(per_band)
        .map(|r0| {
            let rows = r0..(r0 + per_band).min(out_h);
            let (geom, input_rows) = g.band(rows.clone())?;
            Some(Band { taps: Taps::new(&geom), geom, rows, input_rows })
        })
        .collect()
}

/// Scratch for the bands: the largest band's column matrix, then its input rows.
fn band_scratch(bands: &[Band], ck: usize, cg: usize, in_w: usize) -> (usize, usize) {
    bands.iter().fold((0, 0), |(c, r), b| (c.max(ck * b.geom.out_len()), r.max(cg * b.input_rows.len() * in_w)))
}

/// Y[n, g] = W[g] · col(X[n, g]) + b, with W[g] as [M/g, C/g·k] and col as
/// [C/g·k, out]. Pointwise convolutions (1×1, stride 1, no padding) use X
/// itself as the column matrix. `panels`, when given, hold W packed; then,
/// where [`bands`] says so, the product runs in bands of about
/// `band_values` column-matrix values (`BAND_VALUES`; tests take others).
/// A band is its own convolution over a copy of the input rows it reads,
/// and its product writes its columns of Y (`PackedRows::mul_strided`):
/// every output is the same sum in the same order, so banding changes no bit.
fn gemm_forward<T: Elem>(
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    d: &Dims,
    panels: Option<&ConvPanels>,
    y: &mut [T],
    band_values: usize,
) -> OpResult<()> {
    let g = &d.geom;
    let (cg, mg, ck, p, in_len) = (d.cg(), d.mg(), d.ck(), g.out_len(), g.in_len());
    let pointwise = g.is_pointwise();
    let (out_w, in_w) = (g.out[2], g.input[2]);
    let packed_forward = |gi: usize| panels.and_then(|w| ConvPanels::get(&w.forward, gi, mg, ck));
    let bands = packed_forward(0).and_then(|_| bands(g, ck, d.group, band_values));
    let (col_len, rows_len) = match &bands {
        Some(bands) => band_scratch(bands, ck, cg, in_w),
        None if pointwise => (0, 0),
        None => (ck * p, 0),
    };
    let taps = Taps::new(g);
    // The column matrix (and a band's input rows) live in the worker's
    // reused scratch: im2col and the copy write every entry later read.
    with_scratch(col_len + rows_len, |scratch: &mut [T]| {
        let (col, x_rows) = scratch.split_at_mut(col_len);
        for ni in 0..d.n {
            for gi in 0..d.group {
                let xg = &x[(ni * d.c + gi * cg) * in_len..][..cg * in_len];
                let yg = &mut y[(ni * d.m + gi * mg) * p..][..mg * p];
                if let Some(b) = b {
                    for (row, &bm) in yg.chunks_exact_mut(p).zip(&b[gi * mg..(gi + 1) * mg]) {
                        row.fill(bm);
                    }
                }
                let packed = packed_forward(gi);
                if let (Some(bands), Some(packed)) = (&bands, packed) {
                    for band in bands {
                        let band_in = band.input_rows.len() * in_w;
                        for (dst, src) in x_rows.chunks_exact_mut(band_in).zip(band.input_ranges(cg, in_len, in_w)) {
                            dst.copy_from_slice(&xg[src]);
                        }
                        let n_band = band.geom.out_len();
                        let cols = &mut col[..ck * n_band];
                        im2col(&x_rows[..cg * band_in], cg, &band.geom, &band.taps, cols);
                        let y_band = &mut yg[band.rows.start * out_w..];
                        if !packed.mul_strided(cols, n_band, n_band, y_band, p, b.is_some()) {
                            op_bail!("the packed product declined a band of {} output rows", band.rows.len());
                        }
                    }
                    continue;
                }
                let cols: &[T] = if pointwise {
                    xg
                } else {
                    im2col(xg, cg, g, &taps, col);
                    col
                };
                if !packed.is_some_and(|w| w.mul(cols, p, yg, b.is_some())) {
                    let wv = view(&w[gi * mg * ck..], mg, ck)?;
                    let beta = if b.is_some() { T::one() } else { T::zero() };
                    general_mat_mul(T::one(), &wv, &view(cols, ck, p)?, beta, &mut view_mut(yg, mg, p)?);
                }
            }
        }
        Ok(())
    })
}

/// Adjoints of [`gemm_forward`], per sample n and group g:
/// Y = W·col  ⇒  ∂L/∂col = Wᵀ·dY (then col2im scatters it back to X, the
/// adjoint of the gather im2col did), and ∂L/∂W = Σ_n dY·colᵀ. ∂L/∂X by
/// the transposed product runs in the forward pass's bands (`band_values`).
#[allow(clippy::too_many_arguments)]
fn gemm_backward<T: Elem>(
    x: &[T],
    w: &[T],
    dy: &[T],
    d: &Dims,
    panels: Option<&ConvPanels>,
    mut dx: Option<&mut [T]>,
    mut dw: Option<&mut [T]>,
    band_values: usize,
) -> OpResult<()> {
    let g = &d.geom;
    let (cg, mg, ck, p, in_len) = (d.cg(), d.mg(), d.ck(), g.out_len(), g.in_len());
    let pointwise = g.is_pointwise();
    let taps = Taps::new(g);
    // Ungrouped 3×3 stride 1: ∂L/∂X as a Winograd convolution of dY with
    // W′, every image at once (it writes all of dX).
    if let Some(dxs) = dx.as_deref_mut()
        && let Some(ga) = g.adjoint()
        && let Some((wg, plane)) = winograd_for(panels.and_then(|p| p.winograd_adjoint.as_ref()), &ga, d.c, d.m)
        && wg.conv(dy, d.n, &plane, None, dxs)
    {
        dx = None;
    }
    // Otherwise ∂L/∂X as a convolution of dY with the flipped kernel (stride
    // 1): an im2col gather of dY instead of col2im's scatter-add. Only where
    // that moves no more data (M/g ≤ C/g: col(dY) is M/g·k × in, the old
    // column matrix C/g·k × out) and with at least 8 input channels per
    // group, so that W′'s C/g rows fill the packed kernel's 8- or 12-row panels.
    let adjoint = match panels {
        Some(w) if dx.is_some() && !pointwise && cg >= 8 && mg <= cg && w.flipped.len() == d.group => g.adjoint(),
        _ => None,
    }
    .map(|ga| {
        let taps = Taps::new(&ga);
        (ga, taps)
    });
    let kk = g.kernel_len();
    let (out_w, in_w) = (g.out[2], g.input[2]);
    let packed_transposed = |gi: usize| panels.and_then(|w| ConvPanels::get(&w.transposed, gi, ck, mg));
    // Wᵀ·dY and col2im in bands of output rows, as the forward pass runs
    // (only for ∂L/∂X by the transposed product: the weight gradient's
    // im2col wants the whole matrix).
    let bands = match (&dx, &dw, &adjoint) {
        (Some(_), None, None) => packed_transposed(0).and_then(|_| bands(g, ck, d.group, band_values)),
        _ => None,
    };
    // Scratch for Wᵀ·dY (overwritten by the GEMM, β = 0) or for im2col (every
    // entry written), and a band's rows of dX (copied in before they are
    // read): none reads what an earlier call left.
    let (col_len, rows_len) = match &bands {
        Some(bands) => band_scratch(bands, ck, cg, in_w),
        None if pointwise => (0, 0),
        None => ((ck * p).max(if adjoint.is_some() { mg * kk * in_len } else { 0 }), 0),
    };
    with_scratch(col_len + rows_len, |scratch: &mut [T]| {
        let (buf, dx_rows) = scratch.split_at_mut(col_len);
        for ni in 0..d.n {
            for gi in 0..d.group {
                let x_at = (ni * d.c + gi * cg) * in_len;
                let dyg = &dy[(ni * d.m + gi * mg) * p..][..mg * p];
                let dyv = view(dyg, mg, p)?;
                let wv = view(&w[gi * mg * ck..], mg, ck)?;
                if let Some(dx) = dx.as_deref_mut() {
                    let dxg = &mut dx[x_at..][..cg * in_len];
                    // Groups write disjoint slices of dX, so no accumulation is needed.
                    let flipped = panels.and_then(|w| ConvPanels::get(&w.flipped, gi, cg, mg * kk));
                    let as_convolution = match (&adjoint, flipped) {
                        (Some((ga, ta)), Some(wf)) => {
                            let cols = &mut buf[..mg * kk * in_len];
                            im2col(dyg, mg, ga, ta, cols);
                            wf.mul(cols, in_len, dxg, false)
                        }
                        _ => false,
                    };
                    let banded = match (&bands, packed_transposed(gi)) {
                        (Some(bands), Some(wt)) if !as_convolution => Some((bands, wt)),
                        _ => None,
                    };
                    if let Some((bands, wt)) = banded {
                        // Last band first. An input row two bands share gets
                        // the later band's taps first, which are the lower
                        // kernel rows (output row o reads input row
                        // o·s − p + j·d, so a later o means a lower j there);
                        // the whole col2im adds kernel rows in order too, so
                        // every element gets the same adds in the same order.
                        for band in bands.iter().rev() {
                            let n_band = band.geom.out_len();
                            let dcol = &mut buf[..ck * n_band];
                            if !wt.mul_strided(&dyg[band.rows.start * out_w..], p, n_band, dcol, n_band, false) {
                                op_bail!("the packed product declined a band of {} output rows", band.rows.len());
                            }
                            let band_in = band.input_rows.len() * in_w;
                            let rows = &mut dx_rows[..cg * band_in];
                            for (r, at) in rows.chunks_exact_mut(band_in).zip(band.input_ranges(cg, in_len, in_w)) {
                                r.copy_from_slice(&dxg[at]);
                            }
                            col2im_onto(dcol, cg, &band.geom, &band.taps, rows);
                            for (r, at) in rows.chunks_exact(band_in).zip(band.input_ranges(cg, in_len, in_w)) {
                                dxg[at].copy_from_slice(r);
                            }
                        }
                    } else if !as_convolution {
                        let dcol: &mut [T] = if pointwise { dxg } else { &mut buf[..ck * p] };
                        if !packed_transposed(gi).is_some_and(|wt| wt.mul(dyg, p, dcol, false)) {
                            general_mat_mul(T::one(), &wv.t(), &dyv, T::zero(), &mut view_mut(dcol, ck, p)?);
                        }
                        if !pointwise {
                            // This group's dX is still the zeros it was created with.
                            col2im(buf, cg, g, &taps, &mut dx[x_at..][..cg * in_len]);
                        }
                    }
                }
                if let Some(dw) = dw.as_deref_mut() {
                    let xg = &x[x_at..][..cg * in_len];
                    let colv = if pointwise {
                        view(xg, ck, p)?
                    } else {
                        im2col(xg, cg, g, &taps, buf);
                        view(buf, ck, p)?
                    };
                    let mut dwv = view_mut(&mut dw[gi * mg * ck..], mg, ck)?;
                    general_mat_mul(T::one(), &dyv, &colv.t(), T::one(), &mut dwv);
                }
            }
        }
        Ok(())
    })
}

/// Depthwise convolution (group = C): output channel m reads only input
/// channel m / (M/C), so each output row is a sum of shifted, scaled input
/// rows — a direct loop, contiguous when the width stride is 1.
fn depthwise_forward<T: Elem>(x: &[T], w: &[T], b: Option<&[T]>, d: &Dims, y: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        if d.geom.stride[2] == 1
            && let (Some(x), Some(w), Some(y)) = (as_f32(x), as_f32(w), as_f32_mut(y))
        {
            let b = b.and_then(as_f32);
            // SAFETY: the CPU has AVX-512F; width stride 1; the slices are
            // the op's (checked shapes).
            return unsafe { depthwise::forward(x, w, b, d, y) };
        }
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { depthwise_forward_avx512(x, w, b, d, y) };
    }
    depthwise_forward_rows(x, w, b, d, y)
}

/// [`depthwise_forward_rows`] compiled for AVX-512: its row updates are
/// slice loops the compiler vectorises 16 lanes wide (4 on the baseline
/// target), elementwise and without fused multiply-adds, so the result is
/// the same bits either way.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn depthwise_forward_avx512<T: Elem>(x: &[T], w: &[T], b: Option<&[T]>, d: &Dims, y: &mut [T]) {
    depthwise_forward_rows(x, w, b, d, y)
}

#[inline(always)]
fn depthwise_forward_rows<T: Elem>(x: &[T], w: &[T], b: Option<&[T]>, d: &Dims, y: &mut [T]) {
    let g = &d.geom;
    let (mult, p, in_len, kk) = (d.m / d.c, g.out_len(), g.in_len(), g.kernel_len());
    let (in_w, out_w, sw) = (g.input[2], g.out[2], g.stride[2]);
    let taps = Taps::new(g);
    let rows = taps.row_pairs(g);
    for (plane, yp) in y.chunks_exact_mut(p).enumerate() {
        let (ni, mi) = (plane / d.m, plane % d.m);
        let xp = &x[(ni * d.c + mi / mult) * in_len..][..in_len];
        let wk = &w[mi * kk..][..kk];
        if let Some(b) = b {
            yp.fill(b[mi]);
        }
        for &[orow, irow, jd, jh] in &rows {
            let yrow = &mut yp[orow * out_w..][..out_w];
            let xrow = &xp[irow * in_w..][..in_w];
            let wrow = &wk[(jd * g.kernel[1] + jh) * g.kernel[2]..][..g.kernel[2]];
            for (tw, &wv) in taps.0[2].iter().zip(wrow) {
                if tw.hi == tw.lo {
                    continue;
                }
                let iw0 = ((tw.lo * sw) as isize + tw.offset) as usize;
                let dst = &mut yrow[tw.lo..tw.hi];
                if sw == 1 {
                    for (o, &xv) in dst.iter_mut().zip(&xrow[iw0..]) {
                        *o += wv * xv;
                    }
                } else {
                    for (o, &xv) in dst.iter_mut().zip(xrow[iw0..].iter().step_by(sw)) {
                        *o += wv * xv;
                    }
                }
            }
        }
    }
}

/// Adjoint of [`depthwise_forward`]: each term y[o] += w·x[i] gives
/// ∂L/∂x[i] += w·dY[o] and ∂L/∂w += dY[o]·x[i], over the same (o, i) pairs.
fn depthwise_backward<T: Elem>(x: &[T], w: &[T], dy: &[T], d: &Dims, dx: Option<&mut [T]>, dw: Option<&mut [T]>) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        let mut dx = dx;
        if d.geom.stride[2] == 1
            && let (Some(w), Some(dy), Some(dxf)) = (as_f32(w), as_f32(dy), dx.as_deref_mut().and_then(as_f32_mut))
        {
            // SAFETY: as for the forward; dX is the caller's zeros.
            unsafe { depthwise::backward_x(w, dy, d, dxf) };
            if dw.is_none() {
                return;
            }
            dx = None;
        }
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { depthwise_backward_avx512(x, w, dy, d, dx, dw) };
    }
    depthwise_backward_rows(x, w, dy, d, dx, dw)
}

/// [`depthwise_backward_rows`] compiled for AVX-512 (same bits, as for the forward).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn depthwise_backward_avx512<T: Elem>(
    x: &[T],
    w: &[T],
    dy: &[T],
    d: &Dims,
    dx: Option<&mut [T]>,
    dw: Option<&mut [T]>,
) {
    depthwise_backward_rows(x, w, dy, d, dx, dw)
}

#[inline(always)]
fn depthwise_backward_rows<T: Elem>(
    x: &[T],
    w: &[T],
    dy: &[T],
    d: &Dims,
    mut dx: Option<&mut [T]>,
    mut dw: Option<&mut [T]>,
) {
    let g = &d.geom;
    let (mult, p, in_len, kk) = (d.m / d.c, g.out_len(), g.in_len(), g.kernel_len());
    let (in_w, out_w, sw) = (g.input[2], g.out[2], g.stride[2]);
    let taps = Taps::new(g);
    let rows = taps.row_pairs(g);
    for (plane, dyp) in dy.chunks_exact(p).enumerate() {
        let (ni, mi) = (plane / d.m, plane % d.m);
        let x_at = (ni * d.c + mi / mult) * in_len;
        let wk = &w[mi * kk..][..kk];
        if let Some(dx) = dx.as_deref_mut() {
            let dxp = &mut dx[x_at..][..in_len];
            for &[orow, irow, jd, jh] in &rows {
                let dyrow = &dyp[orow * out_w..][..out_w];
                let dxrow = &mut dxp[irow * in_w..][..in_w];
                let wrow = &wk[(jd * g.kernel[1] + jh) * g.kernel[2]..][..g.kernel[2]];
                for (tw, &wv) in taps.0[2].iter().zip(wrow) {
                    if tw.hi == tw.lo {
                        continue;
                    }
                    let iw0 = ((tw.lo * sw) as isize + tw.offset) as usize;
                    let src = &dyrow[tw.lo..tw.hi];
                    if sw == 1 {
                        for (o, &g) in dxrow[iw0..].iter_mut().zip(src) {
                            *o += wv * g;
                        }
                    } else {
                        for (o, &g) in dxrow[iw0..].iter_mut().step_by(sw).zip(src) {
                            *o += wv * g;
                        }
                    }
                }
            }
        }
        if let Some(dw) = dw.as_deref_mut() {
            let xp = &x[x_at..][..in_len];
            let dwk = &mut dw[mi * kk..][..kk];
            for &[orow, irow, jd, jh] in &rows {
                let dyrow = &dyp[orow * out_w..][..out_w];
                let xrow = &xp[irow * in_w..][..in_w];
                let dwrow = &mut dwk[(jd * g.kernel[1] + jh) * g.kernel[2]..][..g.kernel[2]];
                for (tw, dwv) in taps.0[2].iter().zip(dwrow) {
                    if tw.hi == tw.lo {
                        continue;
                    }
                    let iw0 = ((tw.lo * sw) as isize + tw.offset) as usize;
                    let s: T =
                        dyrow[tw.lo..tw.hi].iter().zip(xrow[iw0..].iter().step_by(sw)).map(|(&a, &b)| a * b).sum();
                    *dwv += s;
                }
            }
        }
    }
}

/// Depthwise rows at width stride 1 for f32 on AVX-512, 16 columns per
/// step, every tap of a row added in registers and the row stored once.
///
/// The compiled slice loops of [`depthwise_forward_rows`] run one kernel tap
/// at a time over 30–32-column runs, whose last 14–16 columns fall to a
/// scalar remainder; and each tap reloads the row the previous one stored.
/// Here each output element receives the same operations in the same order:
/// y = b (or 0), then y += w·x for every (row pair, width tap) in
/// [`Taps::row_pairs`] order, as a multiply and a separate add, only on the
/// lanes the scalar loop visits (a masked add, so no lane gains a w·0 term),
/// giving the same bits.
#[cfg(target_arch = "x86_64")]
mod depthwise {
    use super::{Dims, Geom, Taps};
    use crate::model::grad::panel::{lane_mask, lanes_between};
    use std::arch::x86_64::*;

    /// The geometry's taps and its row pairs [out_row, in_row, jd, jh]
    /// grouped by output row (`key` 0) or input row (`key` 1): for every row
    /// r, the pairs with that row are `pairs[start[r]..start[r + 1]]`, in
    /// [`Taps::row_pairs`] order (a stable counting sort).
    fn grouped(g: &Geom, key: usize) -> (Taps, Vec<usize>, Vec<[usize; 4]>) {
        let taps = Taps::new(g);
        let rows = taps.row_pairs(g);
        let count = if key == 0 { g.out[0] * g.out[1] } else { g.input[0] * g.input[1] };
        let mut start = vec![0usize; count + 1];
        for r in &rows {
            start[r[key] + 1] += 1;
        }
        for i in 0..count {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut sorted = vec![[0usize; 4]; rows.len()];
        for r in &rows {
            sorted[fill[r[key]]] = *r;
            fill[r[key]] += 1;
        }
        (taps, start, sorted)
    }

    /// # Safety
    /// AVX-512F is available; `g.stride[2]` is 1; x, w, b, y have the shapes of `d`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn forward(x: &[f32], w: &[f32], b: Option<&[f32]>, d: &Dims, y: &mut [f32]) {
        let g = &d.geom;
        let (mult, p, in_len, kk) = (d.m / d.c, g.out_len(), g.in_len(), g.kernel_len());
        let (in_w, out_w, kw) = (g.input[2], g.out[2], g.kernel[2]);
        let (taps, start, pairs) = grouped(g, 0);
        assert!(y.len() == d.n * d.m * p && x.len() == d.n * d.c * in_len && w.len() >= d.m * kk);
        // Per 16-column step and width tap: the lanes it adds to (output
        // columns tw.lo..tw.hi) and where its input run starts. The same
        // for every row and plane, so worked out once.
        let steps: Vec<(u16, isize)> = (0..out_w)
            .step_by(16)
            .flat_map(|ow0| {
                taps.0[2].iter().map(move |tw| {
                    let lanes = lanes_between(tw.lo as isize - ow0 as isize, tw.hi as isize - ow0 as isize);
                    (lanes, ow0 as isize + tw.offset)
                })
            })
            .collect();
        for (plane, yp) in y.chunks_exact_mut(p).enumerate() {
            let (ni, mi) = (plane / d.m, plane % d.m);
            let xp = &x[(ni * d.c + mi / mult) * in_len..][..in_len];
            let wk = &w[mi * kk..][..kk];
            let init = b.map_or(0.0, |b| b[mi]);
            for (orow, yrow) in yp.chunks_exact_mut(out_w).enumerate() {
                for (ow0, step) in (0..out_w).step_by(16).zip(steps.chunks_exact(kw)) {
                    let mut acc = _mm512_set1_ps(init);
                    for &[_, irow, jd, jh] in &pairs[start[orow]..start[orow + 1]] {
                        let xrow = xp[irow * in_w..][..in_w].as_ptr();
                        let wrow = &wk[(jd * g.kernel[1] + jh) * kw..][..kw];
                        for (&(m, from), &wv) in step.iter().zip(wrow) {
                            // SAFETY: the unmasked lanes (output columns
                            // tw.lo..tw.hi) read input columns inside 0..in_w.
                            let xv = unsafe { _mm512_maskz_loadu_ps(m, xrow.wrapping_offset(from)) };
                            acc = _mm512_mask_add_ps(acc, m, acc, _mm512_mul_ps(_mm512_set1_ps(wv), xv));
                        }
                    }
                    // SAFETY: the stored lanes are output columns ow0.. below out_w.
                    unsafe { _mm512_mask_storeu_ps(yrow.as_mut_ptr().add(ow0), lane_mask(out_w - ow0), acc) };
                }
            }
        }
    }

    /// ∂L/∂x of [`forward`]: each term y[o] += w·x[i] gives dX[i] += w·dY[o],
    /// over the same pairs, so the pairs are grouped by input row (keeping
    /// their order) and each input row is built in registers and stored
    /// once. With a depth multiplier of 1 each dX plane belongs to one output
    /// channel and is still zero, so it is not read back.
    ///
    /// # Safety
    /// AVX-512F is available; `g.stride[2]` is 1; w, dy, dx have the shapes
    /// of `d`; dx is all zeros.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn backward_x(w: &[f32], dy: &[f32], d: &Dims, dx: &mut [f32]) {
        let g = &d.geom;
        let (mult, p, in_len, kk) = (d.m / d.c, g.out_len(), g.in_len(), g.kernel_len());
        let (in_w, out_w, kw) = (g.input[2], g.out[2], g.kernel[2]);
        let (taps, start, pairs) = grouped(g, 1);
        assert!(dy.len() == d.n * d.m * p && dx.len() == d.n * d.c * in_len && w.len() >= d.m * kk);
        // Per 16-column step and width tap: the lanes it adds to (input
        // column iw receives output column iw − offset, for outputs lo..hi)
        // and where its dY run starts; worked out once, as in `forward`.
        let steps: Vec<(u16, isize)> = (0..in_w)
            .step_by(16)
            .flat_map(|iw0| {
                taps.0[2].iter().map(move |tw| {
                    let (lo, hi) = (tw.lo as isize + tw.offset, tw.hi as isize + tw.offset);
                    (lanes_between(lo - iw0 as isize, hi - iw0 as isize), iw0 as isize - tw.offset)
                })
            })
            .collect();
        for (plane, dyp) in dy.chunks_exact(p).enumerate() {
            let (ni, mi) = (plane / d.m, plane % d.m);
            let dxp = &mut dx[(ni * d.c + mi / mult) * in_len..][..in_len];
            let wk = &w[mi * kk..][..kk];
            for (irow, dxrow) in dxp.chunks_exact_mut(in_w).enumerate() {
                for (iw0, step) in (0..in_w).step_by(16).zip(steps.chunks_exact(kw)) {
                    let m_row = lane_mask(in_w - iw0);
                    let at = dxrow.as_mut_ptr().wrapping_add(iw0);
                    // SAFETY: the unmasked lanes are input columns iw0.. below in_w.
                    let mut acc =
                        if mult == 1 { _mm512_setzero_ps() } else { unsafe { _mm512_maskz_loadu_ps(m_row, at) } };
                    for &[orow, _, jd, jh] in &pairs[start[irow]..start[irow + 1]] {
                        let dyrow = dyp[orow * out_w..][..out_w].as_ptr();
                        let wrow = &wk[(jd * g.kernel[1] + jh) * kw..][..kw];
                        for (&(m, from), &wv) in step.iter().zip(wrow) {
                            // SAFETY: the unmasked lanes read output columns inside lo..hi ⊆ 0..out_w.
                            let gv = unsafe { _mm512_maskz_loadu_ps(m, dyrow.wrapping_offset(from)) };
                            acc = _mm512_mask_add_ps(acc, m, acc, _mm512_mul_ps(_mm512_set1_ps(wv), gv));
                        }
                    }
                    // SAFETY: as for the load.
                    unsafe { _mm512_mask_storeu_ps(at, m_row, acc) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{check_rule, f, floats, node, run_forward, uniform};
    use super::*;
    use crate::model::graph::Attr;

    fn ints(v: &[i64]) -> Attr {
        Attr::Ints(v.to_vec())
    }

    /// ∂L/∂X, ∂L/∂W and ∂L/∂B against f64 central differences.
    fn check(attrs: &[(&str, Attr)], x: &[usize], w: &[usize], bias: bool) -> ArrayD<f64> {
        let n = node("Conv", attrs);
        let mut inputs = vec![f(x, 1), f(w, 2)];
        let mut wrt = vec![true, true];
        if bias {
            inputs.push(f(&[w[0]], 3));
            wrt.push(true);
        }
        check_rule(&n, 13, inputs, &wrt)
    }

    #[test]
    fn conv_2d_plain_and_bias() {
        assert_eq!(check(&[], &[2, 3, 5, 5], &[4, 3, 3, 3], true).shape(), &[2, 4, 3, 3]);
        check(&[], &[1, 2, 4, 4], &[3, 2, 2, 2], false);
    }

    #[test]
    fn conv_1d() {
        let y = check(&[("pads", ints(&[1, 2])), ("strides", ints(&[2]))], &[2, 3, 7], &[2, 3, 3], true);
        assert_eq!(y.shape(), &[2, 2, 4]);
    }

    #[test]
    fn conv_3d() {
        let y = check(&[("pads", ints(&[1, 0, 1, 0, 1, 1]))], &[1, 2, 3, 4, 3], &[2, 2, 2, 3, 2], true);
        assert_eq!(y.shape(), &[1, 2, 3, 3, 4]);
    }

    #[test]
    fn conv_strides_2() {
        let y = check(&[("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))], &[1, 2, 6, 7], &[3, 2, 3, 3], true);
        assert_eq!(y.shape(), &[1, 3, 3, 4]);
    }

    #[test]
    fn conv_dilations_2() {
        let y =
            check(&[("dilations", ints(&[2, 2])), ("pads", ints(&[2, 1, 2, 1]))], &[1, 2, 6, 6], &[2, 2, 3, 3], true);
        assert_eq!(y.shape(), &[1, 2, 6, 4]);
    }

    #[test]
    fn conv_asymmetric_pads() {
        let y = check(&[("pads", ints(&[0, 2, 1, 0]))], &[1, 2, 5, 4], &[2, 2, 3, 2], false);
        assert_eq!(y.shape(), &[1, 2, 4, 5]);
    }

    #[test]
    fn conv_auto_pad() {
        let same = |s: &str| [("auto_pad", Attr::Str(s.into())), ("strides", ints(&[2, 1]))];
        // SAME: out = ⌈in/stride⌉ = [3, 4]; H pads 2 in total, W pads 1 (odd).
        assert_eq!(check(&same("SAME_UPPER"), &[1, 2, 5, 4], &[2, 2, 3, 2], true).shape(), &[1, 2, 3, 4]);
        assert_eq!(check(&same("SAME_LOWER"), &[1, 2, 5, 4], &[2, 2, 3, 2], true).shape(), &[1, 2, 3, 4]);
        let valid = [("auto_pad", Attr::Str("VALID".into())), ("pads", ints(&[5, 5, 5, 5]))];
        assert_eq!(check(&valid, &[1, 2, 5, 4], &[2, 2, 3, 2], true).shape(), &[1, 2, 3, 3]);
    }

    #[test]
    fn conv_same_upper_and_lower_place_the_odd_pad() {
        // 1×1 input channel of width 4, kernel [1, 1] of width 2: one pad in
        // total, after the input (UPPER) or before it (LOWER).
        let x = floats(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let w = floats(&[1, 1, 2], &[1.0, 1.0]);
        let run = |mode: &str| {
            let n = node("Conv", &[("auto_pad", Attr::Str(mode.into()))]);
            run_forward(&n, 13, &[x.clone(), w.clone()])[0].float().unwrap().iter().copied().collect::<Vec<_>>()
        };
        assert_eq!(run("SAME_UPPER"), vec![3.0, 5.0, 7.0, 4.0]);
        assert_eq!(run("SAME_LOWER"), vec![1.0, 3.0, 5.0, 7.0]);
    }

    #[test]
    fn conv_groups_2() {
        let y = check(&[("group", Attr::Int(2)), ("pads", ints(&[1, 1, 1, 1]))], &[1, 4, 4, 4], &[6, 2, 3, 3], true);
        assert_eq!(y.shape(), &[1, 6, 4, 4]);
    }

    #[test]
    fn conv_depthwise() {
        let a = [("group", Attr::Int(3)), ("pads", ints(&[1, 1, 1, 1]))];
        check(&a, &[2, 3, 5, 5], &[3, 1, 3, 3], true);
        check(&a, &[1, 3, 5, 4], &[6, 1, 3, 3], false);
        let strided = [
            ("group", Attr::Int(3)),
            ("pads", ints(&[1, 0, 2, 1])),
            ("strides", ints(&[2, 2])),
            ("dilations", ints(&[1, 2])),
        ];
        check(&strided, &[1, 3, 6, 7], &[6, 1, 3, 2], true);
    }

    #[test]
    fn conv_pointwise() {
        check(&[], &[2, 4, 3, 3], &[5, 4, 1, 1], true);
        check(&[("group", Attr::Int(2))], &[1, 4, 3, 2], &[4, 2, 1, 1], false);
    }

    #[test]
    fn conv_wrt_x_only_leaves_others_none() {
        let n = node("Conv", &[]);
        let inputs = vec![f(&[1, 2, 4, 4], 1), f(&[2, 2, 3, 3], 2), f(&[2], 3)];
        check_rule(&n, 13, inputs.clone(), &[true, false, false]);
        let op = build_conv::<f64>(&n, &BuildCtx { opset: 13 }).unwrap();
        let args: Vec<_> = inputs.iter().map(|v| v.as_ref()).collect();
        let y = op.forward(&args).unwrap().remove(0);
        let dout = ArrayD::ones(y.shape());
        let g = op
            .backward(&Backward { inputs: &args, output: &y, dout: &dout, wrt: &[true, false, false], saved: None })
            .unwrap();
        assert!(g[0].is_some() && g[1].is_none() && g[2].is_none());
    }

    #[test]
    fn conv_forward_hand_computed() {
        // 3×3 input 1..9, kernel [[1, 0], [0, −1]], bias 10, pads 0:
        // y[i, j] = x[i, j] − x[i+1, j+1] + 10 = −4 + 10 everywhere.
        let x = floats(&[1, 1, 3, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        let w = floats(&[1, 1, 2, 2], &[1.0, 0.0, 0.0, -1.0]);
        let b = floats(&[1], &[10.0]);
        let y = run_forward(&node("Conv", &[]), 13, &[x.clone(), w.clone(), b])[0].float().unwrap().clone();
        assert_eq!(y.shape(), &[1, 1, 2, 2]);
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![6.0; 4]);

        // Same input, 3×3 box kernel, pads 1, stride 2: sums of the clipped
        // 3×3 neighbourhoods of the corners (0,0), (0,2), (2,0), (2,2).
        let ones = floats(&[1, 1, 3, 3], &[1.0; 9]);
        let n = node("Conv", &[("pads", ints(&[1, 1, 1, 1])), ("strides", ints(&[2, 2]))]);
        let y = run_forward(&n, 13, &[x, ones])[0].float().unwrap().clone();
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![12.0, 16.0, 24.0, 28.0]);
    }

    #[test]
    fn conv_forward_dilated_1d_hand_computed() {
        // x = 0..6, kernel [1, 1] with dilation 3: y[i] = x[i] + x[i+3].
        let x = floats(&[1, 1, 6], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let w = floats(&[1, 1, 2], &[1.0, 1.0]);
        let y = run_forward(&node("Conv", &[("dilations", ints(&[3]))]), 13, &[x, w])[0].float().unwrap().clone();
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![3.0, 5.0, 7.0]);
    }

    /// Conv straight from the ONNX definition, one output element at a time:
    /// y[n, m, o] = b[m] + Σ_{c in m's group, j} w[m, c, j]·x[n, g·C/g + c, o·s + j·d − pad_begin].
    fn naive_conv(x: &ArrayD<f64>, w: &ArrayD<f64>, b: &ArrayD<f64>, group: usize, g: &Geom) -> Vec<f64> {
        let (n, c, m) = (x.shape()[0], x.shape()[1], w.shape()[0]);
        let (cg, mg) = (c / group, m / group);
        let x5 = x.to_shape([n, c, g.input[0], g.input[1], g.input[2]]).unwrap();
        let w5 = w.to_shape([m, cg, g.kernel[0], g.kernel[1], g.kernel[2]]).unwrap();
        let mut y = Vec::new();
        for ni in 0..n {
            for mi in 0..m {
                for (o0, o1, o2) in ndarray::indices(g.out) {
                    let o = [o0, o1, o2];
                    let mut acc = b[mi];
                    for ci in 0..cg {
                        for (j0, j1, j2) in ndarray::indices(g.kernel) {
                            let j = [j0, j1, j2];
                            let mut at = [0usize; 3];
                            let mut inside = true;
                            for a in 0..3 {
                                let p = (o[a] * g.stride[a] + j[a] * g.dil[a]) as isize - g.pad_begin[a] as isize;
                                inside &= p >= 0 && p < g.input[a] as isize;
                                at[a] = p.max(0) as usize;
                            }
                            if inside {
                                acc +=
                                    w5[[mi, ci, j[0], j[1], j[2]]] * x5[[ni, mi / mg * cg + ci, at[0], at[1], at[2]]];
                            }
                        }
                    }
                    y.push(acc);
                }
            }
        }
        y
    }

    #[test]
    fn conv_forward_matches_the_definition() {
        type Case = (Vec<(&'static str, Attr)>, Vec<usize>, Vec<usize>, usize);
        let cases: Vec<Case> = vec![
            (
                vec![("pads", ints(&[2, 1])), ("strides", ints(&[3])), ("dilations", ints(&[2]))],
                vec![2, 4, 11],
                vec![6, 2, 3],
                2,
            ),
            (
                vec![("pads", ints(&[1, 0, 2, 1])), ("strides", ints(&[2, 1])), ("dilations", ints(&[1, 2]))],
                vec![2, 3, 7, 8],
                vec![4, 3, 3, 2],
                1,
            ),
            (vec![("pads", ints(&[0, 2, 1, 3])), ("strides", ints(&[1, 3]))], vec![1, 6, 5, 9], vec![6, 2, 2, 3], 3),
            (vec![("pads", ints(&[1, 1, 1, 1])), ("strides", ints(&[2, 2]))], vec![1, 4, 7, 7], vec![8, 1, 3, 3], 4),
            (
                vec![("auto_pad", Attr::Str("SAME_LOWER".into())), ("strides", ints(&[2, 3]))],
                vec![1, 2, 6, 7],
                vec![3, 2, 4, 3],
                1,
            ),
            (vec![("strides", ints(&[2, 2]))], vec![1, 4, 5, 5], vec![6, 4, 1, 1], 1),
            (
                vec![("pads", ints(&[1, 0, 1, 0, 1, 1])), ("strides", ints(&[1, 2, 1]))],
                vec![1, 2, 4, 5, 3],
                vec![4, 1, 2, 3, 2],
                2,
            ),
        ];
        for (attrs, xs, ws, group) in cases {
            let n = node("Conv", &attrs).with("group", Attr::Int(group as i64));
            let (x, w, b) = (uniform(&xs, 1, -1.0, 1.0), uniform(&ws, 2, -1.0, 1.0), uniform(&[ws[0]], 3, -1.0, 1.0));
            let y =
                run_forward(&n, 13, &[Some(Value::F(x.clone())), Some(Value::F(w.clone())), Some(Value::F(b.clone()))]);
            let geom = Window::parse(&n).unwrap().geometry(&xs[2..], &ws[2..]).unwrap();
            let want = naive_conv(&x, &w, &b, group, &geom);
            let got: Vec<f64> = y[0].float().unwrap().iter().copied().collect();
            assert_eq!(got.len(), want.len());
            assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12), "{attrs:?}");
        }
    }

    /// The packed-weight paths (AVX-512 CPUs) against the f64 general path:
    /// forward with bias and input gradient, for a 3×3 convolution with an
    /// odd channel count (panel tails), a strided grouped one, a pointwise
    /// one (the column matrix is the input itself) and stride-1 ones whose
    /// input gradient is computed as a convolution (see `Geom::adjoint`);
    /// the 3×3 stride-1 ones marked take Winograd both ways (asserted).
    #[test]
    fn conv_with_packed_weights_agrees_with_f64() {
        let cases = [
            (vec![("pads", ints(&[1, 1, 1, 1]))], [2, 16, 14, 14], [37, 16, 3, 3]),
            (vec![("pads", ints(&[2, 0, 1, 2]))], [2, 16, 9, 11], [12, 16, 3, 3]),
            (vec![("strides", ints(&[2, 2])), ("group", Attr::Int(2))], [1, 8, 9, 11], [6, 4, 3, 3]),
            (vec![], [2, 24, 7, 7], [20, 24, 1, 1]),
            // Stride 1: ∂L/∂X as a convolution with the flipped kernel, here
            // with dilation, asymmetric pads and groups; then pads wider than
            // the kernel reaches, where that path declines.
            (
                vec![("pads", ints(&[2, 1, 0, 3])), ("dilations", ints(&[2, 2])), ("group", Attr::Int(2))],
                [1, 16, 9, 10],
                [12, 8, 3, 3],
            ),
            (vec![("pads", ints(&[1, 1, 1, 1]))], [2, 12, 8, 8], [12, 12, 3, 3]),
            (vec![("pads", ints(&[3, 3, 3, 3]))], [1, 8, 6, 6], [8, 8, 3, 3]),
        ];
        let winograd_cases = [0, 1, 5];
        let avx512 =
            crate::model::grad::panel::PackedRows::pack(ndarray::Array2::<f32>::zeros((1, 1)).view()).is_some();
        for (k, (attrs, xs, ws)) in cases.into_iter().enumerate() {
            let n = node("Conv", &attrs);
            let x = uniform(&xs, 7 + k as u64, -1.0, 1.0);
            let w = uniform(&ws, 8 + k as u64, -0.3, 0.3);
            let b = uniform(&[ws[0]], 9 + k as u64, -0.5, 0.5);
            let packed = || -> (ArrayD<f64>, ArrayD<f64>) {
                let group = attrs.iter().find(|a| a.0 == "group").map_or(1, |_| 2);
                let mut op = Conv::new(Window::parse(&n).unwrap(), group);
                let c = |a: &ArrayD<f64>| Value::F(a.mapv(|v| v as f32));
                let ins = [c(&x), c(&w), c(&b)];
                Op::<f32>::prepare(&mut op, &[None, Some(&ins[1]), Some(&ins[2])]);
                assert_eq!(op.panels.is_some(), avx512, "case {k}: packed exactly when the CPU has AVX-512F");
                if let Some(p) = &op.panels {
                    let d = op.dims(&xs, &ws, Some(&[ws[0]])).unwrap();
                    let both = winograd_for(p.winograd.as_ref(), &d.geom, d.m, d.c).is_some()
                        && (d.geom.adjoint())
                            .and_then(|ga| winograd_for(p.winograd_adjoint.as_ref(), &ga, d.c, d.m))
                            .is_some();
                    assert_eq!(both, winograd_cases.contains(&k), "case {k}: Winograd forward and backward");
                }
                let args = [Some(&ins[0]), Some(&ins[1]), Some(&ins[2])];
                let y = op.forward(&args).unwrap().remove(0);
                let dout = uniform(y.float().unwrap().shape(), 11, -1.0, 1.0).mapv(|v| v as f32);
                let back = Backward { inputs: &args, output: &y, dout: &dout, wrt: &[true, false, false], saved: None };
                let dx = op.backward(&back).unwrap().remove(0).unwrap();
                (y.float().unwrap().mapv(f64::from), dx.mapv(f64::from))
            };
            let (y64, dx64) = {
                let op = build_conv::<f64>(&n, &BuildCtx { opset: 13 }).unwrap();
                let ins = [Value::F(x.clone()), Value::F(w.clone()), Value::F(b.clone())];
                let args = [Some(&ins[0]), Some(&ins[1]), Some(&ins[2])];
                let y = op.forward(&args).unwrap().remove(0);
                let dout = uniform(y.float().unwrap().shape(), 11, -1.0, 1.0).mapv(|v| f64::from(v as f32));
                let back = Backward { inputs: &args, output: &y, dout: &dout, wrt: &[true, false, false], saved: None };
                (y.float().unwrap().clone(), op.backward(&back).unwrap().remove(0).unwrap())
            };
            let (y, dx) = packed();
            // Sums of ≤ 145 terms of magnitude ≤ 0.5 in f32: ~1e-6 absolute
            // rounding error, well under 1e-5 of the output scale.
            for (got, want) in [(&y, &y64), (&dx, &dx64)] {
                assert_eq!(got.shape(), want.shape());
                let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                for (a, b) in got.iter().zip(want.iter()) {
                    assert!((a - b).abs() <= 1e-5 * scale, "case {k}: {a} vs {b}");
                }
            }
        }
        if !avx512 {
            eprintln!("this CPU has no AVX-512F: the packed path was not taken, only the general one was checked");
        }
    }

    /// Banded products (see `gemm_forward` and `gemm_backward`) give the
    /// whole matrix's bits, forward and ∂L/∂X, with bands of one row, of a
    /// few rows with a short last band, and of windows that reach into the
    /// top or bottom padding, overlap (stride < kernel) or leave gaps.
    #[test]
    fn banded_products_give_the_whole_products_bits() {
        let cases = [
            (vec![("strides", ints(&[2, 2])), ("pads", ints(&[3, 3, 3, 3]))], [2, 3, 30, 26], [8, 3, 7, 7]),
            (vec![("strides", ints(&[2, 1])), ("pads", ints(&[2, 0, 1, 2]))], [1, 5, 17, 11], [9, 5, 3, 3]),
            (vec![("dilations", ints(&[2, 2])), ("pads", ints(&[0, 1, 4, 1]))], [1, 4, 13, 9], [12, 4, 3, 3]),
            (vec![("strides", ints(&[3, 3])), ("pads", ints(&[1, 1, 1, 1]))], [1, 2, 20, 8], [8, 2, 2, 2]),
        ];
        for (k, (attrs, xs, ws)) in cases.into_iter().enumerate() {
            let n = node("Conv", &attrs);
            let f32s = |a: ArrayD<f64>| a.mapv(|v| v as f32).into_raw_vec_and_offset().0;
            let x = f32s(uniform(&xs, 3 + k as u64, -1.0, 1.0));
            let w = uniform(&ws, 4 + k as u64, -0.3, 0.3).mapv(|v| v as f32);
            let b = f32s(uniform(&[ws[0]], 5, -0.5, 0.5));
            let mut op = Conv::new(Window::parse(&n).unwrap(), 1);
            Op::<f32>::prepare(&mut op, &[None, Some(&Value::F(w.clone())), None]);
            let Some(panels) = op.panels.as_ref() else {
                eprintln!("this CPU has no packed kernel: nothing is banded, nothing to compare");
                return;
            };
            let d = op.dims(&xs, &ws, Some(&[ws[0]])).unwrap();
            let w = w.into_raw_vec_and_offset().0;
            let run = |bias: Option<&[f32]>, band_values: usize| {
                let mut y = vec![f32::NAN; d.n * d.m * d.geom.out_len()];
                gemm_forward(&x, &w, bias, &d, Some(panels), &mut y, band_values).unwrap();
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let dy = f32s(uniform(&[d.n, d.m, d.geom.out[1], d.geom.out[2]], 6 + k as u64, -1.0, 1.0));
            let input_gradient = |band_values: usize| {
                let mut dx = vec![0.0f32; x.len()];
                gemm_backward(&x, &w, &dy, &d, Some(panels), Some(&mut dx), None, band_values).unwrap();
                dx.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let row_values = d.ck() * d.geom.out[2];
            let (whole, whole_dx) = (run(Some(&b), usize::MAX / 4), input_gradient(usize::MAX / 4));
            let whole_unbiased = run(None, usize::MAX / 4);
            for rows in [1, 2, 3] {
                let band_values = rows * row_values;
                assert!(d.ck() * d.geom.out_len() > 2 * band_values, "case {k}: {rows}-row bands are taken");
                assert!(run(Some(&b), band_values) == whole, "case {k}: forward, bands of {rows} rows");
                assert!(
                    run(None, band_values) == whole_unbiased,
                    "case {k}: forward without bias, bands of {rows} rows"
                );
                assert!(input_gradient(band_values) == whole_dx, "case {k}: ∂L/∂X, bands of {rows} rows");
            }
        }
    }

    #[test]
    fn conv_f32_agrees_with_f64() {
        let n = node("Conv", &[("pads", ints(&[1, 1, 1, 1]))]);
        let x = uniform(&[2, 16, 14, 14], 7, -1.0, 1.0);
        let w = uniform(&[32, 16, 3, 3], 8, -0.3, 0.3);
        let b = uniform(&[32], 9, -0.5, 0.5);
        let y64 = {
            let op = build_conv::<f64>(&n, &BuildCtx { opset: 13 }).unwrap();
            let ins = [Value::F(x.clone()), Value::F(w.clone()), Value::F(b.clone())];
            op.forward(&[Some(&ins[0]), Some(&ins[1]), Some(&ins[2])]).unwrap().remove(0)
        };
        let y32 = {
            let op = build_conv::<f32>(&n, &BuildCtx { opset: 13 }).unwrap();
            let c = |a: &ArrayD<f64>| Value::F(a.mapv(|v| v as f32));
            let ins = [c(&x), c(&w), c(&b)];
            op.forward(&[Some(&ins[0]), Some(&ins[1]), Some(&ins[2])]).unwrap().remove(0)
        };
        let (y64, y32) = (y64.float().unwrap(), y32.float().unwrap());
        assert_eq!(y64.shape(), &[2, 32, 14, 14]);
        // Each output sums 145 terms of magnitude ≤ 0.3: f32 rounding gives
        // ~1e-6 absolute error, well under 1e-5 of the output scale.
        let scale = y64.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (a, b) in y64.iter().zip(y32.iter()) {
            assert!((a - *b as f64).abs() <= 1e-5 * scale, "{a} vs {b}");
        }
    }

    #[test]
    fn depthwise_fast_path_equals_grouped_gemm() {
        for (attrs, w_shape) in [
            (vec![("pads", ints(&[1, 1, 1, 1]))], [8usize, 1, 3, 3]),
            (
                vec![("pads", ints(&[0, 1, 2, 1])), ("strides", ints(&[2, 3])), ("dilations", ints(&[2, 1]))],
                [8, 1, 3, 2],
            ),
        ] {
            let n = node("Conv", &attrs).with("group", Attr::Int(4));
            let conv = |fast: bool| Conv { depthwise_fast: fast, ..Conv::new(Window::parse(&n).unwrap(), 4) };
            let ins = [
                Value::F(uniform(&[2, 4, 9, 8], 1, -1.0, 1.0)),
                Value::F(uniform(&w_shape, 2, -1.0, 1.0)),
                Value::F(uniform(&[8], 3, -1.0, 1.0)),
            ];
            let args = [Some(&ins[0]), Some(&ins[1]), Some(&ins[2])];
            let run = |op: Conv| {
                let y = Op::<f64>::forward(&op, &args).unwrap().remove(0);
                let dout = uniform(y.shape(), 4, -1.0, 1.0);
                let g = op
                    .backward(&Backward {
                        inputs: &args,
                        output: &y,
                        dout: &dout,
                        wrt: &[true, true, true],
                        saved: None,
                    })
                    .unwrap();
                (y, g)
            };
            let (y_fast, g_fast) = run(conv(true));
            let (y_gemm, g_gemm) = run(conv(false));
            let close = |a: &ArrayD<f64>, b: &ArrayD<f64>| {
                assert_eq!(a.shape(), b.shape());
                assert!(a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-12), "{a:?} vs {b:?}");
            };
            close(y_fast.float().unwrap(), y_gemm.float().unwrap());
            for (a, b) in g_fast.iter().zip(&g_gemm) {
                close(a.as_ref().unwrap(), b.as_ref().unwrap());
            }
        }
    }

    #[test]
    fn depthwise_vector_rows_give_the_slice_loops_bits() {
        // f32 at width stride 1 takes `depthwise` on AVX-512 machines; the
        // generic row loops are the reference (elementwise, so their bits do
        // not depend on how they were compiled). Rows narrower and wider
        // than a 16-column step, depth multiplier 1 and 2 (dX read back),
        // dilation with pads past the kernel, height stride 2, a 3-D case.
        let cases: Vec<(Vec<(&str, Attr)>, Vec<usize>, Vec<usize>)> = vec![
            (vec![("pads", ints(&[1, 1, 1, 1]))], vec![2, 4, 9, 32], vec![4, 1, 3, 3]),
            (vec![("pads", ints(&[1, 1, 1, 1]))], vec![1, 3, 6, 7], vec![6, 1, 3, 3]),
            (vec![("pads", ints(&[4, 3, 0, 2])), ("dilations", ints(&[2, 2]))], vec![1, 2, 11, 37], vec![2, 1, 5, 5]),
            (vec![("strides", ints(&[2, 1])), ("pads", ints(&[0, 1, 1, 0]))], vec![1, 3, 10, 18], vec![3, 1, 3, 2]),
            (vec![("pads", ints(&[1, 1, 1, 1, 1, 1]))], vec![1, 2, 4, 5, 17], vec![2, 1, 3, 3, 3]),
        ];
        for (k, (attrs, xs, ws)) in cases.into_iter().enumerate() {
            let mut attrs = attrs;
            attrs.push(("group", Attr::Int(xs[1] as i64)));
            let n = node("Conv", &attrs);
            let op = Conv::new(Window::parse(&n).unwrap(), xs[1]);
            let d = op.dims(&xs, &ws, Some(&[ws[0]])).unwrap();
            assert!(op.depthwise(&d), "case {k} is depthwise");
            let signed_zero = |i: usize, v: f64| if i % 6 == 1 { if v < 0.0 { -0.0 } else { 0.0 } } else { v as f32 };
            let data = |shape: &[usize], seed: u64| -> Vec<f32> {
                uniform(shape, seed, -1.0, 1.0).iter().enumerate().map(|(i, &v)| signed_zero(i, v)).collect()
            };
            let (x, mut w, b) = (data(&xs, 20 + k as u64), data(&ws, 30 + k as u64), data(&[ws[0]], 40));
            // An infinite weight: ∞·0 is NaN, so a padding lane given a w·0
            // term would show even where other terms then dominate the sum.
            w[0] = f32::INFINITY;
            let out: Vec<usize> = d.out_shape();
            let dy = data(&out, 50 + k as u64);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let y_len = out.iter().product();
            for bias in [Some(&b[..]), None] {
                let (mut fast, mut rows) = (vec![0.0f32; y_len], vec![0.0f32; y_len]);
                depthwise_forward(&x, &w, bias, &d, &mut fast);
                depthwise_forward_rows(&x, &w, bias, &d, &mut rows);
                assert_eq!(bits(&fast), bits(&rows), "forward, case {k}, bias {}", bias.is_some());
            }
            let (mut fast, mut rows) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
            depthwise_backward(&x, &w, &dy, &d, Some(&mut fast), None);
            depthwise_backward_rows(&x, &w, &dy, &d, Some(&mut rows), None);
            assert_eq!(bits(&fast), bits(&rows), "backward, case {k}");
        }
    }

    #[test]
    fn bad_attributes_are_errors() {
        let ctx = BuildCtx { opset: 13 };
        let built = |attrs: &[(&str, Attr)]| build_conv::<f64>(&node("Conv", attrs), &ctx);
        assert!(built(&[("pads", ints(&[1, 1, 1]))]).is_err());
        assert!(built(&[("strides", ints(&[0, 1]))]).is_err());
        assert!(built(&[("group", Attr::Int(0))]).is_err());
        assert!(built(&[("auto_pad", Attr::Str("SAME".into()))]).is_err());
        assert!(built(&[("kernel_shape", ints(&[3, 3])), ("strides", ints(&[1]))]).is_err());

        let x = f(&[1, 4, 5, 5], 1);
        let forward = |attrs: &[(&str, Attr)], w: &[usize]| {
            let op = built(attrs).unwrap();
            let w = f(w, 2);
            op.forward(&[x.as_ref(), w.as_ref()]).err().map(|e| e.0)
        };
        assert!(forward(&[("kernel_shape", ints(&[2, 2]))], &[2, 4, 3, 3]).unwrap().contains("kernel_shape"));
        assert!(forward(&[("pads", ints(&[1, 1]))], &[2, 4, 3, 3]).is_some());
        assert!(forward(&[("group", Attr::Int(3))], &[3, 1, 3, 3]).unwrap().contains("group"));
        assert!(forward(&[("group", Attr::Int(2))], &[2, 4, 3, 3]).unwrap().contains("second dim"));
        assert!(forward(&[], &[2, 4, 6, 6]).unwrap().contains("larger than"));
        assert!(
            forward(&[("pads", ints(&[1 << 20, 1 << 20, 1 << 20, 1 << 20]))], &[1, 4, 1, 1])
                .unwrap()
                .contains("too large")
        );
    }
}
