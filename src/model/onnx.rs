//! The classifier under test: the ONNX file read once, run forward by an
//! optimised tract plan (built for the model's fixed batch size, or for
//! batch 1 when the batch axis is symbolic; shared by all workers, whose
//! tract states are pooled and reused) and differentiated by our [`Engine`]. tract's output is set to the logits
//! (the input of a final Softmax, when there is one), so predictions,
//! confidences and losses all come from the same tensor. Verdicts
//! ([`Classifier::verdict_logits`]) are the engine's forward pass wherever
//! it is clear of a tie, and tract's where it is not, so their argmax is
//! tract's as long as the two differ by less than half the tie threshold.

use super::grad::{Engine, Loss, engine::LossGrad};
use super::graph::{Dim, Graph};
use crate::error::{Error, GradError, ModelError};
use ndarray::{Array2, ArrayD, Axis, IxDyn};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;

type Plan = Arc<TypedRunnableModel>;

pub struct Classifier {
    graph: Graph,
    sha256: String,
    plan: Plan,
    /// The reverse pass, or why this model cannot be differentiated (the
    /// gradient-free attacks still run).
    engine: Result<Engine<f32>, GradError>,
    /// Input shape without the batch axis.
    sample_shape: Vec<usize>,
    batch_fixed: Option<usize>,
    /// The batch size tract's plan was built for: the model's own when it
    /// is fixed, else 1 (see [`build_plan`]).
    plan_batch: usize,
    /// tract states of finished sessions, reused by the next ones: building
    /// a state allocates every intermediate tensor of the plan, which costs
    /// as much as a forward pass of a small model. At most one per thread
    /// that ever held a session at the same time.
    idle_states: std::sync::Mutex<Vec<TypedSimpleState>>,
}

impl Classifier {
    pub fn load(path: &Path) -> Result<Classifier, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        Classifier::from_bytes(&bytes, path)
    }

    /// [`Classifier::load`] on the bytes of a model file. `path` names it in
    /// errors, and external tensor data is resolved beside it, as for a file.
    /// The fuzz targets (`fuzz/`) enter here.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Classifier, ModelError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &*bytes)
            .map_err(|e| ModelError::NotOnnx { path: path.into(), reason: format!("protobuf decoding failed: {e}") })?;
        let graph = Graph::from_proto(&proto, path)?;
        let unsupported = |reason: String| ModelError::Unsupported { path: path.into(), reason };
        if graph.input.elem_type != "float" {
            return Err(unsupported(format!(
                "input '{}' is {}; advscan runs models with float32 inputs",
                graph.input.name, graph.input.elem_type
            )));
        }
        let dims = graph.input.shape.clone().unwrap_or_default();
        let mut sample_shape = Vec::new();
        for (i, d) in dims.iter().enumerate().skip(1) {
            match d {
                Dim::Fixed(n) => sample_shape.push(*n),
                Dim::Symbolic(s) => {
                    return Err(unsupported(format!(
                        "input '{}' has a dynamic dimension '{s}' at axis {i}; advscan needs a fixed image size",
                        graph.input.name
                    )));
                }
            }
        }
        let batch_fixed = match dims.first() {
            Some(Dim::Fixed(n)) => Some(*n),
            _ => None,
        };
        let symbolic_batch = matches!(dims.first(), Some(Dim::Symbolic(_)));
        let plan_batch = batch_fixed.unwrap_or(1);
        let plan_input = symbolic_batch.then(|| [&[plan_batch][..], &sample_shape].concat());
        // tract asserts its own invariants with panics in places, and a model
        // file is untrusted input: contain them as an error.
        let plan = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            build_plan(&proto, path, graph.logits_name(), plan_input.as_deref())
        }))
        .map_err(|payload| ModelError::Tract {
            path: path.into(),
            reason: format!("tract failed on this model ({})", crate::error::panic_message(&*payload)),
        })?
        .map_err(|e| ModelError::Tract { path: path.into(), reason: format!("{e:#}") })?;
        let engine = Engine::new(&graph);
        Ok(Classifier {
            graph,
            sha256,
            plan,
            engine,
            sample_shape,
            batch_fixed,
            plan_batch,
            idle_states: Default::default(),
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    pub fn path(&self) -> &Path {
        &self.graph.path
    }
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// Shape of one sample (input shape without the batch axis).
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }
    pub fn softmax_stripped(&self) -> bool {
        self.graph.softmax_tail().is_some()
    }
    /// The gradient engine, or why the model cannot be differentiated.
    pub fn engine(&self) -> Result<&Engine<f32>, &GradError> {
        self.engine.as_ref()
    }

    /// A forward-pass session with its own tract state (taken from the pool of
    /// idle ones, returned to it when the session is dropped): one per worker thread.
    pub fn session(&self) -> Result<Session<'_>, Error> {
        // A poisoned lock only means another thread panicked while pushing or
        // popping; the Vec itself is intact.
        let idle = self.idle_states.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let state = match idle {
            Some(state) => state,
            None => TypedSimpleState::new(&self.plan).map_err(|e| self.tract_err(e))?,
        };
        Ok(Session { model: self, state: Some(state) })
    }

    fn tract_err(&self, e: impl std::fmt::Display) -> Error {
        ModelError::Tract { path: self.graph.path.clone(), reason: e.to_string() }.into()
    }

    /// Logits for every sample of `x` (shape `[n, sample_shape...]`), in
    /// chunks of `batch_size` spread over the current rayon pool.
    pub fn logits(&self, x: &ArrayD<f32>, batch_size: usize) -> Result<Array2<f32>, Error> {
        let n = x.shape().first().copied().unwrap_or(0);
        let chunk = self.batch_fixed.unwrap_or(batch_size.max(1));
        let starts: Vec<usize> = (0..n).step_by(chunk.max(1)).collect();
        let parts: Vec<Array2<f32>> = starts
            .par_iter()
            .map_init(
                || self.session(),
                |session, &start| {
                    let session = session.as_mut().map_err(|e| self.tract_err(e))?;
                    let end = (start + chunk).min(n);
                    session.logits(x.slice_axis(Axis(0), (start..end).into()).to_owned())
                },
            )
            .collect::<Result<_, _>>()?;
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| self.tract_err(e))
    }

    /// Whether [`Classifier::verdict_logits`] uses the engine: it has one,
    /// and the model accepts one sample at a time (a batch fixed at more
    /// than 1 does not; tract pads it).
    pub fn verdicts_by_engine(&self) -> bool {
        self.engine.is_ok() && matches!(self.batch_fixed, None | Some(1))
    }

    /// Logits to decide on: the gradient engine's forward pass without a
    /// tape, with every near-tie re-run by tract. Their argmax is
    /// tract's while the two differ by less than `NEAR_TIE / 2` (see
    /// [`NEAR_TIE`]); without an engine, or when the model fixes its batch
    /// at more than 1, they are tract's own. A row never depends on its
    /// batch (`tests/verdicts.rs`).
    pub fn verdict_logits(&self, x: &ArrayD<f32>) -> Result<Array2<f32>, Error> {
        self.verdict_logits_within(x, NEAR_TIE)
    }

    /// [`Classifier::verdict_logits`] with the near-tie threshold as a
    /// parameter: `f32::INFINITY` sends every row to tract, `0.0` none.
    pub fn verdict_logits_within(&self, x: &ArrayD<f32>, near_tie: f32) -> Result<Array2<f32>, Error> {
        let engine = match &self.engine {
            Ok(engine) if self.verdicts_by_engine() => engine,
            _ => return self.session()?.logits(x.clone()),
        };
        let n = x.shape().first().copied().unwrap_or(0);
        if n == 0 {
            return self.session()?.logits(x.clone());
        }
        // The whole batch in one pass (unless the model takes one sample at
        // a time): the engine's rows do not depend on their batch (each
        // column of its products is computed alone, see `winograd`), and a
        // batch's products run faster than n products of one column block.
        let chunk = if self.batch_fixed == Some(1) { 1 } else { n };
        let parts = (0..n)
            .step_by(chunk)
            .map(|s| Ok(engine.logits(x.slice_axis(Axis(0), (s..(s + chunk).min(n)).into()).to_owned())?))
            .collect::<Result<Vec<_>, Error>>()?;
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        let mut logits =
            ndarray::concatenate(Axis(0), &views).map_err(|e| self.tract_err(format!("stacking logits: {e}")))?;
        let mut session = None;
        for (i, mut row) in logits.outer_iter_mut().enumerate() {
            if is_near_tie(row.as_slice().unwrap_or(&[]), near_tie) {
                let tract = match &mut session {
                    Some(s) => s,
                    None => session.insert(self.session()?),
                };
                let z = tract.logits(x.slice_axis(Axis(0), (i..i + 1).into()).to_owned())?;
                if z.shape() != [1, row.len()] {
                    return Err(self.tract_err(format!("tract gave logits of shape {:?} for one sample", z.shape())));
                }
                row.assign(&z.row(0));
            }
        }
        Ok(logits)
    }

    /// Per-sample objectives and their exact input gradient (`f32`).
    pub fn loss_and_grad(&self, x: ArrayD<f32>, classes: &[usize], loss: Loss) -> Result<LossGrad<f32>, Error> {
        let engine = self.engine.as_ref().map_err(|e| GradError::Graph(e.to_string()))?;
        Ok(engine.loss_and_grad(x, classes, loss)?)
    }
}

/// How close two logits may come, relative to max(1, max |z|), before a
/// verdict is left to tract. The engine and tract each match PyTorch to
/// 1e-4 on logits of magnitude ≲ 10 (`tests/gradients_match_pytorch.rs`),
/// so a margin can move by at most 4e-4 between them; on the committed
/// models' test sets they differ by at most 1.6e-6. `run.rs` measures the
/// gap on every clean sample (the `engine_matches_tract` check, which fails
/// above `NEAR_TIE / 8`).
pub const NEAR_TIE: f32 = 1e-3;

/// Whether the top two of `z` are within `near_tie` (relative to
/// max(1, max |z|)) of each other, or `z` is not all finite: then only tract
/// may decide.
pub fn is_near_tie(z: &[f32], near_tie: f32) -> bool {
    if z.len() < 2 {
        return !z.iter().all(|v| v.is_finite());
    }
    let (mut first, mut second, mut scale) = (f32::NEG_INFINITY, f32::NEG_INFINITY, 1f32);
    for &v in z {
        if !v.is_finite() {
            return true;
        }
        scale = scale.max(v.abs());
        if v > first {
            second = first;
            first = v;
        } else if v > second {
            second = v;
        }
    }
    !(first - second > near_tie * scale)
}

/// The gap between two logit rows, relative to max(1, max |z|) of the
/// first: what [`NEAR_TIE`] must cover. NaN when either is not finite.
pub fn relative_gap(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || !a.iter().chain(b).all(|v| v.is_finite()) {
        return f32::NAN;
    }
    let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale
}

/// tract's optimised plan up to the logits. `input` fixes the input shape
/// when the model leaves its batch axis symbolic: advscan then plans for
/// batch 1 and runs samples one at a time. A plan with every dimension known
/// lets tract choose its kernels and lay out its buffers once; on the
/// bundled models it runs 1.4–3.7× faster per image than the symbolic plan
/// at any batch size (`examples/profile_pgd.rs`, mode `fwd`), and a sample's
/// logits no longer depend on the batch it is evaluated in.
fn build_plan(
    proto: &tract_onnx::pb::ModelProto,
    path: &Path,
    logits: &str,
    input: Option<&[usize]>,
) -> TractResult<Plan> {
    let dir = path.parent().map(|d| d.to_string_lossy().into_owned());
    let mut model = tract_onnx::onnx().parse(proto, dir.as_deref())?.model;
    model.select_outputs_by_name([logits])?;
    if let Some(shape) = input {
        model.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))?;
    }
    model.into_optimized()?.into_runnable()
}

/// One worker's forward state over the shared plan.
pub struct Session<'a> {
    model: &'a Classifier,
    /// Always `Some` until the session is dropped and hands it back.
    state: Option<TypedSimpleState>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // A state that was running when its thread panicked is dropped, not reused.
        if let Some(state) = self.state.take()
            && !std::thread::panicking()
        {
            self.model.idle_states.lock().unwrap_or_else(|p| p.into_inner()).push(state);
        }
    }
}

impl Session<'_> {
    /// Logits `[batch, classes]` for a batch `[batch, sample_shape...]`.
    pub fn logits(&mut self, x: ArrayD<f32>) -> Result<Array2<f32>, Error> {
        let m = self.model;
        if x.shape().get(1..) != Some(m.sample_shape.as_slice()) {
            let mut expected = vec!["N".to_string()];
            expected.extend(m.sample_shape.iter().map(|d| d.to_string()));
            return Err(GradError::InputShape {
                got: x.shape().to_vec(),
                expected: format!("[{}]", expected.join(", ")),
            }
            .into());
        }
        // The plan's batch at a time; a short last chunk is zero-padded.
        let (n, b) = (x.shape().first().copied().unwrap_or(0), m.plan_batch.max(1));
        if n == b {
            // The common case (one sample on a batch-1 plan): no copy.
            return self.run(x);
        }
        let mut parts = Vec::with_capacity(n.div_ceil(b));
        for start in (0..n).step_by(b) {
            let rows = b.min(n - start);
            let mut shape = x.shape().to_vec();
            shape[0] = b;
            let mut chunk = ArrayD::zeros(IxDyn(&shape));
            chunk
                .slice_axis_mut(Axis(0), (0..rows).into())
                .assign(&x.slice_axis(Axis(0), (start..start + rows).into()));
            let logits = self.run(chunk)?;
            parts.push(if logits.nrows() == rows {
                logits
            } else {
                logits.slice_axis(Axis(0), (0..rows).into()).to_owned()
            });
        }
        match parts.len() {
            0 => return Ok(Array2::zeros((0, 0))),
            1 => return Ok(parts.remove(0)),
            _ => {}
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| m.tract_err(format!("stacking logits: {e}")))
    }

    /// One run of the plan on exactly its batch.
    fn run(&mut self, x: ArrayD<f32>) -> Result<Array2<f32>, Error> {
        let m = self.model;
        let state = self.state.as_mut().ok_or_else(|| m.tract_err("session used after it was returned"))?;
        let out = state.run(tvec!(Tensor::from(x).into_tvalue())).map_err(|e| m.tract_err(e))?;
        let out = out[0].to_plain_array_view::<f32>().map_err(|e| m.tract_err(e))?;
        let total = out.shape().first().copied().unwrap_or(0);
        let classes = out.len().checked_div(total).unwrap_or(0);
        out.to_owned()
            .into_shape_with_order((total, classes))
            .map_err(|e| m.tract_err(format!("logits of shape {:?}: {e}", out.shape())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_ties_are_measured_against_the_larger_of_one_and_the_largest_logit() {
        // Margin 0.2 at scale 1: a tie only for thresholds ≥ 0.2.
        assert!(!is_near_tie(&[0.1, -0.1], 1e-3));
        assert!(is_near_tie(&[0.1, -0.1], 0.2));
        // Margin 0.05 at scale 100 (relative 5e-4): within 1e-3.
        assert!(is_near_tie(&[100.0, 99.95, -3.0], 1e-3));
        assert!(!is_near_tie(&[100.0, 99.0, -3.0], 1e-3));
        // The runner-up may come first; an exact tie is always one.
        assert!(is_near_tie(&[-2.0, 5.0, 5.0], 0.0));
        assert!(!is_near_tie(&[-2.0, 5.0, 4.0], 1e-3));
        // Anything not finite goes to tract, as does a single logit that is not.
        assert!(is_near_tie(&[f32::NAN, 1.0], 1e-3));
        assert!(is_near_tie(&[f32::INFINITY, 1.0], 1e-3));
        assert!(!is_near_tie(&[3.0], 1e-3));
        assert!(is_near_tie(&[f32::NAN], 1e-3));
    }

    #[test]
    fn the_gap_is_the_largest_difference_over_the_first_rows_scale() {
        assert_eq!(relative_gap(&[0.5, -0.5], &[0.5, -0.25]), 0.25);
        // Scale max(1, 8) = 8: a difference of 2 is 0.25.
        assert_eq!(relative_gap(&[8.0, -1.0], &[6.0, -1.0]), 0.25);
        assert!(relative_gap(&[1.0, f32::NAN], &[1.0, 2.0]).is_nan());
        assert!(relative_gap(&[1.0], &[1.0, 2.0]).is_nan());
    }
}
