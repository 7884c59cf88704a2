//! Plans and runs the reverse pass over the nodes between the image input and
//! the logits.
//!
//! Every tensor is classified once, when the engine is built:
//! *const* (initializers, Constant nodes and anything computed only from
//! them: folded at build time), *path* (depends differentiably on the image:
//! evaluated every forward, differentiated every backward) or *shape-static*
//! (depends on the image only through a gradient-stopping op such as Shape:
//! evaluated every forward, never differentiated). Nodes that do not lead to
//! the logits are ignored, so a final Softmax is never evaluated. An
//! inference BatchNormalization that alone reads a Conv's output is folded
//! into that Conv's constant weight and bias.

use super::loss::{Loss, loss_and_dlogits};
use super::{Backward, BuildCtx, Elem, Op, Value, registry};
use crate::error::GradError;
use crate::model::graph::{Dim, Elements, Graph, TensorData};
use ndarray::{Array2, ArrayD, IxDyn};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Const,
    Static,
    Path,
}

struct PlanNode<T: Elem> {
    name: String,
    op_type: String,
    op: Box<dyn Op<T>>,
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
    kind: Kind,
    /// `wrt[i]`: input i is on the gradient path.
    wrt: Vec<bool>,
    /// Op types of nodes folded into this one (a BatchNormalization into its Conv).
    absorbed: Vec<String>,
}

/// The reverse-mode differentiator for one model. Immutable after
/// construction, so one engine is shared by every worker thread.
pub struct Engine<T: Elem> {
    names: Vec<String>,
    kinds: Vec<Kind>,
    consts: Vec<Option<Value<T>>>,
    /// Nodes evaluated on every forward (path and shape-static), in topological order.
    live: Vec<PlanNode<T>>,
    input: usize,
    input_dims: Vec<Dim>,
    logits: usize,
    softmax_stripped: bool,
}

/// The values of one forward pass, kept for the backward pass.
pub struct Tape<T: Elem> {
    values: Vec<Option<Value<T>>>,
    /// Per live node (same order as `Engine::live`): what its forward saved for its backward.
    saved: Vec<Option<Value<T>>>,
    logits: Array2<T>,
}

impl<T: Elem> Tape<T> {
    /// Logits, shape `[batch, classes]`.
    pub fn logits(&self) -> &Array2<T> {
        &self.logits
    }
}

/// Logits, per-sample objective values and ∂(Σ objectives)/∂input.
pub struct LossGrad<T> {
    pub logits: Array2<T>,
    pub losses: Vec<T>,
    pub grad: ArrayD<T>,
}

fn to_value<T: Elem>(t: &TensorData) -> Value<T> {
    let shape = IxDyn(&t.shape);
    match &t.data {
        Elements::Float(v) => Value::F(
            ArrayD::from_shape_vec(shape, v.iter().map(|&x| T::of(x)).collect())
                .expect("graph::tensor_data checks the length"),
        ),
        Elements::Int(v) => {
            Value::I(ArrayD::from_shape_vec(shape, v.clone()).expect("graph::tensor_data checks the length"))
        }
    }
}

/// W′ and b′ for folding BatchNormalization `bn` (inputs `inputs`, outputs
/// `outputs`) into `conv`, the Conv whose output only it reads: the BN is
/// y = k_c·z + s_c per channel of z = W∗x + b, so y = (k_c·W_c)∗x + (k_c·b_c + s_c).
/// One op instead of two on every forward and backward; the result differs
/// from the two ops' by rounding only (W′ and b′ are rounded once). `None`
/// unless the BN is in inference mode with constant parameters and one
/// output, and the Conv has constant W (and b) with one output channel per
/// BN channel.
fn fold_batch_norm<T: Elem>(
    conv: &PlanNode<T>,
    bn: &crate::model::graph::Node,
    inputs: &[Option<usize>],
    outputs: &[usize],
    kinds: &HashMap<usize, Kind>,
    consts: &HashMap<usize, Value<T>>,
) -> Option<(ArrayD<T>, ArrayD<T>)> {
    let constant = |i: Option<&Option<usize>>| {
        let i = (*i?)?;
        (kinds.get(&i) == Some(&Kind::Const)).then(|| consts.get(&i)).flatten()
    };
    if conv.op_type != "Conv" || !conv.absorbed.is_empty() || conv.outputs.len() != 1 || outputs.len() != 1 {
        return None;
    }
    let Some(Value::F(w)) = constant(conv.inputs.get(1)) else { return None };
    let channels = *w.shape().first()?;
    let bias: Vec<T> = match conv.inputs.get(2).copied().flatten() {
        None => vec![T::zero(); channels],
        Some(_) => match constant(conv.inputs.get(2)) {
            Some(Value::F(b)) if b.shape() == [channels] => b.iter().copied().collect(),
            _ => return None,
        },
    };
    let params = [1, 2, 3, 4].map(|k| constant(inputs.get(k)));
    let (k, s) = super::norm::batch_norm_affine(bn, params, channels)?;
    let mut folded = w.as_standard_layout().into_owned();
    for (mut filter, &kc) in folded.outer_iter_mut().zip(&k) {
        filter.mapv_inplace(|v| v * kc);
    }
    let b: Vec<T> = (0..channels).map(|c| bias[c] * k[c] + s[c]).collect();
    Some((folded, ArrayD::from_shape_vec(IxDyn(&[channels]), b).ok()?))
}

impl<T: Elem> Engine<T> {
    /// Plans the reverse pass from the image input to the logits (the input
    /// of a final Softmax/LogSoftmax, which is stripped), folding each
    /// inference BatchNormalization that alone reads a Conv's output into
    /// that Conv (see [`fold_batch_norm`]), and each Relu that alone reads
    /// an op's output into that op where it can apply it (see
    /// [`super::Op::absorb_relu`]).
    pub fn new(graph: &Graph) -> Result<Self, GradError> {
        Self::build(graph, true, true)
    }

    /// [`Engine::new`], with the BatchNormalization folding and the ReLU
    /// absorption each on or off.
    fn build(graph: &Graph, fold_batch_norms: bool, absorb_relus: bool) -> Result<Self, GradError> {
        let ctx = BuildCtx { opset: graph.opset };
        let entries: HashMap<&str, _> = registry::<T>().into_iter().map(|e| (e.name, e)).collect();

        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut names: Vec<String> = Vec::new();
        let mut id_of = |name: &str, names: &mut Vec<String>| -> usize {
            *ids.entry(name.to_string()).or_insert_with(|| {
                names.push(name.to_string());
                names.len() - 1
            })
        };
        let input = id_of(&graph.input.name, &mut names);
        let logits_name = graph.logits_name().to_string();
        let logits = id_of(&logits_name, &mut names);

        // Which nodes lead to the logits: walk producers backwards.
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for (i, n) in graph.nodes.iter().enumerate() {
            for o in &n.outputs {
                producer.insert(o.as_str(), i);
            }
        }
        let mut needed = vec![false; graph.nodes.len()];
        let mut stack = vec![logits_name.as_str()];
        while let Some(t) = stack.pop() {
            if let Some(&p) = producer.get(t) {
                if !needed[p] {
                    needed[p] = true;
                    stack.extend(graph.nodes[p].inputs.iter().filter(|s| !s.is_empty()).map(|s| s.as_str()));
                }
            }
        }
        if !producer.contains_key(logits_name.as_str()) && logits_name != graph.input.name {
            return Err(GradError::Graph(format!("no node produces the logits tensor '{logits_name}'")));
        }

        let mut kinds: HashMap<usize, Kind> = HashMap::new();
        let mut consts: HashMap<usize, Value<T>> = HashMap::new();
        kinds.insert(input, Kind::Path);
        for (name, t) in &graph.initializers {
            if name == &graph.input.name {
                continue;
            }
            let id = id_of(name, &mut names);
            kinds.insert(id, Kind::Const);
            consts.insert(id, to_value(t));
        }

        // How many needed nodes read each tensor (the logits count as read).
        let mut uses: HashMap<&str, usize> = HashMap::from([(logits_name.as_str(), 1)]);
        for (node, _) in graph.nodes.iter().zip(&needed).filter(|(_, n)| **n) {
            for i in node.inputs.iter().filter(|s| !s.is_empty()) {
                *uses.entry(i.as_str()).or_default() += 1;
            }
        }
        let mut live: Vec<PlanNode<T>> = Vec::new();
        // Outputs after the first of a path node carry no gradient (masks, indices).
        let mut non_differentiable: HashMap<usize, String> = HashMap::new();
        for (node, _) in graph.nodes.iter().zip(&needed).filter(|(_, n)| **n) {
            let node_err =
                |reason: String| GradError::Node { node: node.name.clone(), op: node.op_type.clone(), reason };
            let inputs: Vec<Option<usize>> =
                node.inputs.iter().map(|s| (!s.is_empty()).then(|| id_of(s, &mut names))).collect();
            let outputs: Vec<usize> = node.outputs.iter().map(|s| id_of(s, &mut names)).collect();
            for &i in inputs.iter().flatten() {
                if !kinds.contains_key(&i) {
                    return Err(node_err(format!("input '{}' is not produced by any node or initializer", names[i])));
                }
                if let Some(from) = non_differentiable.get(&i) {
                    return Err(node_err(format!(
                        "input '{}' is a non-differentiable output of node '{from}' on the gradient path",
                        names[i]
                    )));
                }
            }
            let input_kinds: Vec<Kind> = inputs.iter().map(|i| i.map(|i| kinds[&i]).unwrap_or(Kind::Const)).collect();
            let any_path = input_kinds.contains(&Kind::Path);
            let supported = || crate::model::grad::differentiable_ops().join(", ");
            let entry = match entries.get(node.op_type.as_str()) {
                Some(e) if node.domain.is_empty() || node.domain == "ai.onnx" => e,
                _ if any_path => {
                    return Err(GradError::UnsupportedOp {
                        node: node.name.clone(),
                        op: node.op_type.clone(),
                        supported: supported(),
                    });
                }
                _ => {
                    return Err(node_err(
                        "advscan cannot evaluate this op, and the logits depend on its output".into(),
                    ));
                }
            };
            let op = (entry.build)(node, &ctx).map_err(|e| node_err(e.0))?;
            let kind = if any_path && !op.stops_gradient() {
                if !entry.differentiable {
                    return Err(GradError::UnsupportedOp {
                        node: node.name.clone(),
                        op: node.op_type.clone(),
                        supported: supported(),
                    });
                }
                Kind::Path
            } else if input_kinds.iter().any(|k| *k != Kind::Const) {
                Kind::Static
            } else {
                Kind::Const
            };
            for (k, &o) in outputs.iter().enumerate() {
                kinds.insert(o, kind);
                if kind == Kind::Path && k > 0 {
                    non_differentiable.insert(o, node.name.clone());
                }
            }
            if fold_batch_norms
                && kind == Kind::Path
                && node.op_type == "BatchNormalization"
                && let Some(conv) = live.iter_mut().rev().find(|n| n.outputs.first() == inputs[0].as_ref())
                && uses.get(node.inputs[0].as_str()) == Some(&1)
                && let Some((w, b)) = fold_batch_norm(conv, node, &inputs, &outputs, &kinds, &consts)
            {
                // The Conv now computes the BatchNormalization's output with
                // W′ and b′ as new constants (W may be shared with other nodes).
                // Their ids are fresh, not looked up by name: a model's own
                // tensor may carry any name, these two included.
                let [w_id, b_id] = [(w, "weight"), (b, "bias")].map(|(v, suffix)| {
                    names.push(format!("{}::folded_{suffix}", node.name));
                    let id = names.len() - 1;
                    kinds.insert(id, Kind::Const);
                    consts.insert(id, Value::F(v));
                    id
                });
                conv.inputs.resize(3, None);
                conv.wrt.resize(3, false);
                (conv.inputs[1], conv.inputs[2]) = (Some(w_id), Some(b_id));
                conv.outputs[0] = outputs[0];
                conv.absorbed.push(node.op_type.clone());
                let constants: Vec<Option<&Value<T>>> = conv
                    .inputs
                    .iter()
                    .map(|i| i.filter(|i| kinds.get(i) == Some(&Kind::Const)).and_then(|i| consts.get(&i)))
                    .collect();
                conv.op.prepare(&constants);
                kinds.insert(outputs[0], Kind::Path);
                continue;
            }
            if absorb_relus
                && kind == Kind::Path
                && node.op_type == "Relu"
                && outputs.len() == 1
                && let [Some(z)] = inputs[..]
                && let Some(op) = live.iter_mut().rev().find(|n| n.outputs.first() == Some(&z))
                && op.outputs.len() == 1
                && uses.get(names[z].as_str()) == Some(&1)
                && op.op.absorb_relu()
            {
                // The op now computes the Relu's output; its own output,
                // read by the Relu alone, is never held.
                op.outputs[0] = outputs[0];
                op.absorbed.push(node.op_type.clone());
                continue;
            }
            if kind == Kind::Const {
                let args: Vec<Option<&Value<T>>> = inputs.iter().map(|i| i.and_then(|i| consts.get(&i))).collect();
                let mut values = op.forward(&args).map_err(|e| node_err(e.0))?;
                if op.saves_for_backward() {
                    values.pop();
                }
                for (o, v) in outputs.iter().zip(values) {
                    consts.insert(*o, v);
                }
                continue;
            }
            let mut op = op;
            let constants: Vec<Option<&Value<T>>> = inputs
                .iter()
                .zip(&input_kinds)
                .map(|(i, k)| i.filter(|_| *k == Kind::Const).and_then(|i| consts.get(&i)))
                .collect();
            op.prepare(&constants);
            let wrt = input_kinds.iter().map(|k| *k == Kind::Path).collect();
            live.push(PlanNode {
                name: node.name.clone(),
                op_type: node.op_type.clone(),
                op,
                inputs,
                outputs,
                kind,
                wrt,
                absorbed: Vec::new(),
            });
        }
        if kinds.get(&logits) != Some(&Kind::Path) {
            return Err(GradError::Graph(format!(
                "the logits '{logits_name}' do not depend differentiably on the input '{}'",
                graph.input.name
            )));
        }
        let n = names.len();
        let mut kind_vec = vec![Kind::Const; n];
        let mut const_vec: Vec<Option<Value<T>>> = (0..n).map(|_| None).collect();
        for (i, k) in kinds {
            kind_vec[i] = k;
        }
        for (i, v) in consts {
            const_vec[i] = Some(v);
        }
        let engine = Engine {
            names,
            kinds: kind_vec,
            consts: const_vec,
            live,
            input,
            input_dims: graph.input.shape.clone().unwrap_or_default(),
            logits,
            softmax_stripped: graph.softmax_tail().is_some(),
        };
        engine.warm_up();
        Ok(engine)
    }

    /// One forward and backward pass of a zero image at the input's
    /// declared size, so that what ops prepare per input size on first use
    /// (each Winograd kernel's transform into the tile its plane needs, and
    /// that of its adjoint, which only the backward pass uses) is prepared
    /// while the model loads, not inside the first attack step. Skipped when
    /// a dimension other than the batch is symbolic; a failure is left for
    /// the real passes to report.
    fn warm_up(&self) {
        let Some((batch, sample)) = self.input_dims.split_first() else { return };
        let batch = match batch {
            Dim::Fixed(n) => *n,
            Dim::Symbolic(_) => 1,
        };
        let sample: Option<Vec<usize>> =
            sample.iter().map(|d| if let Dim::Fixed(n) = d { Some(*n) } else { None }).collect();
        if let Some(sample) = sample {
            let shape: Vec<usize> = std::iter::once(batch).chain(sample).collect();
            // A declared size past 16 Mi values is left to the real input (no
            // gigabyte allocations while merely loading a hostile model).
            if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_some_and(|n| n <= 1 << 24) {
                if let Ok(tape) = self.forward(ArrayD::zeros(IxDyn(&shape))) {
                    let _ = self.backward(&tape, &Array2::zeros(tape.logits.raw_dim()));
                }
            }
        }
    }

    /// True when the graph ended in Softmax/LogSoftmax and gradients are taken on its input.
    pub fn softmax_stripped(&self) -> bool {
        self.softmax_stripped
    }

    /// Op types on the gradient path, in evaluation order (for reports),
    /// folded ones after the op they were folded into.
    pub fn path_ops(&self) -> impl Iterator<Item = &str> {
        self.live
            .iter()
            .filter(|n| n.kind == Kind::Path)
            .flat_map(|n| std::iter::once(n.op_type.as_str()).chain(n.absorbed.iter().map(String::as_str)))
    }

    fn check_input(&self, shape: &[usize]) -> Result<(), GradError> {
        let ok = shape.len() == self.input_dims.len()
            && shape.iter().zip(&self.input_dims).all(|(s, d)| match d {
                Dim::Fixed(f) => f == s,
                Dim::Symbolic(_) => *s > 0,
            });
        if ok || self.input_dims.is_empty() {
            Ok(())
        } else {
            let dims: Vec<String> = self.input_dims.iter().map(|d| d.to_string()).collect();
            Err(GradError::InputShape { got: shape.to_vec(), expected: format!("[{}]", dims.join(", ")) })
        }
    }

    /// Runs the path and shape-static nodes, keeping every value for the backward pass.
    pub fn forward(&self, x: ArrayD<T>) -> Result<Tape<T>, GradError> {
        let batch = x.shape().first().copied().unwrap_or(0);
        let (values, saved) = self.evaluate(x, true)?;
        let logits = self.logits_of(&values, batch)?;
        Ok(Tape { values, saved, logits })
    }

    /// The logits alone: [`Engine::forward`] without a tape. Each value is
    /// dropped after the last node that reads it and what an op saves for
    /// its backward pass is dropped at once, so a pass holds a few layers'
    /// activations instead of all of them (the verdicts of a run are such
    /// passes). The same ops on the same values: the same bits as `forward`.
    pub fn logits(&self, x: ArrayD<T>) -> Result<Array2<T>, GradError> {
        let batch = x.shape().first().copied().unwrap_or(0);
        let (values, _) = self.evaluate(x, false)?;
        self.logits_of(&values, batch)
    }

    /// Every live node's outputs, and with `tape` what each saved for its
    /// backward; without it, values no later node reads are dropped as it goes.
    #[allow(clippy::type_complexity)]
    fn evaluate(&self, x: ArrayD<T>, tape: bool) -> Result<(Vec<Option<Value<T>>>, Vec<Option<Value<T>>>), GradError> {
        self.check_input(x.shape())?;
        let mut values: Vec<Option<Value<T>>> = (0..self.names.len()).map(|_| None).collect();
        values[self.input] = Some(Value::F(x));
        // The last live node that reads each value (the logits are kept).
        let mut last_read: Vec<Option<usize>> = vec![None; self.names.len()];
        if !tape {
            for (at, node) in self.live.iter().enumerate() {
                for &i in node.inputs.iter().flatten() {
                    last_read[i] = Some(at);
                }
            }
            last_read[self.logits] = None;
        }
        let mut saved = Vec::with_capacity(if tape { self.live.len() } else { 0 });
        for (at, node) in self.live.iter().enumerate() {
            let mut outs = {
                let args: Vec<Option<&Value<T>>> =
                    node.inputs.iter().map(|i| i.and_then(|i| self.value(&values, i))).collect();
                node.op.forward(&args).map_err(|e| self.node_err(node, e.0))?
            };
            let kept = if node.op.saves_for_backward() { outs.pop() } else { None };
            if tape {
                saved.push(kept);
            }
            for (o, v) in node.outputs.iter().zip(outs) {
                values[*o] = Some(v);
            }
            for &i in node.inputs.iter().flatten() {
                if last_read[i] == Some(at) {
                    values[i] = None;
                }
            }
        }
        Ok((values, saved))
    }

    /// The logits value of a pass, as [batch, classes].
    fn logits_of(&self, values: &[Option<Value<T>>], batch: usize) -> Result<Array2<T>, GradError> {
        let logits = match self.value(values, self.logits) {
            Some(Value::F(l)) => l,
            _ => return Err(GradError::Graph("the logits are not a floating-point tensor".into())),
        };
        let classes = logits.len() / batch.max(1);
        logits
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((batch, classes))
            .map_err(|_| GradError::Graph(format!("logits of shape {:?} are not [batch, classes]", logits.shape())))
    }

    fn value<'a>(&'a self, values: &'a [Option<Value<T>>], id: usize) -> Option<&'a Value<T>> {
        match self.kinds[id] {
            Kind::Const => self.consts[id].as_ref(),
            _ => values[id].as_ref(),
        }
    }

    fn node_err(&self, node: &PlanNode<T>, reason: String) -> GradError {
        GradError::Node { node: node.name.clone(), op: node.op_type.clone(), reason }
    }

    /// ∂(Σ_b ⟨dlogits_b, logits_b⟩)/∂input: the vector-Jacobian product of the
    /// whole model. `dlogits` has the shape of [`Tape::logits`].
    pub fn backward(&self, tape: &Tape<T>, dlogits: &Array2<T>) -> Result<ArrayD<T>, GradError> {
        let mut grads: Vec<Option<ArrayD<T>>> = (0..self.names.len()).map(|_| None).collect();
        let logits_shape = tape.values[self.logits].as_ref().map(|v| v.shape().to_vec()).unwrap_or_default();
        let seed = dlogits
            .clone()
            .into_dyn()
            .into_shape_with_order(IxDyn(&logits_shape))
            .map_err(|_| GradError::Graph("dlogits do not match the logits".into()))?;
        grads[self.logits] = Some(seed);
        for (at, node) in self.live.iter().enumerate().rev().filter(|(_, n)| n.kind == Kind::Path) {
            let Some(dout) = grads[node.outputs[0]].take() else { continue };
            let args: Vec<Option<&Value<T>>> =
                node.inputs.iter().map(|i| i.and_then(|i| self.value(&tape.values, i))).collect();
            let Some(output) = self.value(&tape.values, node.outputs[0]) else { continue };
            let saved = tape.saved.get(at).and_then(Option::as_ref);
            let ctx = Backward { inputs: &args, output, dout: &dout, wrt: &node.wrt, saved };
            let dins = node.op.backward(&ctx).map_err(|e| self.node_err(node, e.0))?;
            for ((din, input), wrt) in dins.into_iter().zip(&node.inputs).zip(&node.wrt) {
                let (Some(din), Some(input), true) = (din, input, wrt) else { continue };
                match &mut grads[*input] {
                    Some(acc) if acc.shape() == din.shape() => *acc += &din,
                    Some(acc) => {
                        let reason = format!("gradient shape {:?} does not match {:?}", din.shape(), acc.shape());
                        return Err(self.node_err(node, reason));
                    }
                    slot => *slot = Some(din),
                }
            }
        }
        let input_shape = tape.values[self.input].as_ref().map(|v| v.shape().to_vec()).unwrap_or_default();
        Ok(grads[self.input].take().unwrap_or_else(|| ArrayD::zeros(IxDyn(&input_shape))))
    }

    /// Forward, loss on the logits and backward in one call. `classes[b]` is
    /// the label (untargeted) or the target (targeted) of sample `b`.
    pub fn loss_and_grad(&self, x: ArrayD<T>, classes: &[usize], loss: Loss) -> Result<LossGrad<T>, GradError> {
        let tape = self.forward(x)?;
        let (losses, dlogits) = loss_and_dlogits(tape.logits.view(), classes, loss)?;
        let grad = self.backward(&tape, &dlogits)?;
        Ok(LossGrad { logits: tape.logits, losses, grad })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Classifier;

    /// A committed model, `models/NAME.onnx`.
    fn committed(name: &str) -> Classifier {
        Classifier::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("models/{name}.onnx"))).unwrap()
    }

    /// The input shape of a batch of `n` samples for `model`.
    fn batch_of(n: usize, model: &Classifier) -> Vec<usize> {
        std::iter::once(n).chain(model.sample_shape().iter().copied()).collect()
    }

    /// The tape-free pass runs the same ops on the same values as
    /// `forward`, so its logits are the same bits, on every committed model
    /// (pneumonia_resnet's skip connections read values several nodes
    /// later); and it holds no value that a node reads once that node has run.
    #[test]
    fn logits_without_a_tape_are_the_forward_bits_and_hold_no_read_value() {
        for name in ["pneumonia_cnn", "pneumonia_resnet", "pneumonia_mixed_ops", "ct_nodule_cnn"] {
            let model = committed(name);
            let engine = Engine::<f32>::build(model.graph(), true, true).unwrap();
            let shape = batch_of(3, &model);
            let x = ArrayD::from_shape_fn(IxDyn(&shape), |d| {
                ((0..shape.len()).map(|i| (i + 2) * d[i]).sum::<usize>() % 13) as f32 / 13.0
            });
            let bits = |z: &Array2<f32>| z.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let taped = engine.forward(x.clone()).unwrap();
            assert_eq!(bits(&engine.logits(x.clone()).unwrap()), bits(taped.logits()), "{name}");
            let (values, saved) = engine.evaluate(x, false).unwrap();
            assert!(saved.is_empty(), "{name}");
            for &i in engine.live.iter().flat_map(|n| n.inputs.iter().flatten()) {
                assert!(values[i].is_none() || i == engine.logits, "{name}: {} is still held", engine.names[i]);
            }
            assert!(values[engine.logits].is_some(), "{name}");
        }
    }

    /// A Relu absorbed into the op before it changes no bit of the logits or
    /// of the input gradient (relu is exact, and the absorbed rule is the
    /// Relu's own), on the committed models with ReLUs, with the
    /// BatchNormalizations folded or not; and every Relu that alone reads a
    /// Conv or an Add is absorbed (the others read a Gemm or, unfolded, a
    /// BatchNormalization).
    #[test]
    fn absorbed_relus_change_no_bit() {
        // (model, Relus absorbed into Convs with the BatchNormalizations folded / not, into Adds)
        for (name, convs, adds) in
            [("pneumonia_cnn", [2, 2], 0), ("pneumonia_resnet", [4, 0], 3), ("ct_nodule_cnn", [3, 3], 0)]
        {
            let model = committed(name);
            let shape = batch_of(3, &model);
            // Values around 0, so that some pre-activations are negative.
            let x = ArrayD::from_shape_fn(IxDyn(&shape), |d| {
                ((0..shape.len()).map(|i| (i + 3) * d[i]).sum::<usize>() % 17) as f32 / 8.0 - 1.0
            });
            let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for (fold, convs) in [true, false].into_iter().zip(convs) {
                let (absorbed, plain) = (
                    Engine::<f32>::build(model.graph(), fold, true).unwrap(),
                    Engine::<f32>::build(model.graph(), fold, false).unwrap(),
                );
                let relus = |e: &Engine<f32>| e.live.iter().filter(|n| n.op_type == "Relu").count();
                let into = |op: &str| {
                    let ends_in_relu = |n: &&PlanNode<f32>| n.absorbed.last().is_some_and(|a| a == "Relu");
                    absorbed.live.iter().filter(|n| n.op_type == op).filter(ends_in_relu).count()
                };
                assert_eq!((into("Conv"), into("Add")), (convs, adds), "{name}, folded {fold}");
                assert_eq!(relus(&plain) - relus(&absorbed), convs + adds, "{name}, folded {fold}");
                assert_eq!(absorbed.path_ops().count(), plain.path_ops().count(), "{name}: absorbed ops are reported");
                let (a, p) = (
                    absorbed.loss_and_grad(x.clone(), &[0, 1, 0], Loss::CE).unwrap(),
                    plain.loss_and_grad(x.clone(), &[0, 1, 0], Loss::CE).unwrap(),
                );
                assert_eq!(bits(a.logits.as_slice().unwrap()), bits(p.logits.as_slice().unwrap()), "{name} logits");
                assert_eq!(bits(a.grad.as_slice().unwrap()), bits(p.grad.as_slice().unwrap()), "{name} gradient");
                assert!(a.grad.iter().any(|&g| g != 0.0), "{name}: a gradient of zeros proves nothing");
            }
        }
    }

    /// pneumonia_resnet keeps its nine BatchNormalization nodes, each reading
    /// a Conv's output alone: all nine fold, the reported path still lists
    /// them, and logits and input gradients agree with the unfolded engine
    /// in f64 to 1e-12 relative (W′ = k·W and b′ rounded once in f64,
    /// ~1e-16 each, against the two ops' own rounding).
    #[test]
    fn batch_norms_fold_into_their_convs_without_changing_the_gradient() {
        let model = committed("pneumonia_resnet");
        let (folded, plain) = (
            Engine::<f64>::build(model.graph(), true, false).unwrap(),
            Engine::<f64>::build(model.graph(), false, false).unwrap(),
        );
        assert_eq!(plain.live.len() - folded.live.len(), 9, "every BatchNormalization folds");
        let count = |e: &Engine<f64>| e.path_ops().filter(|op| *op == "BatchNormalization").count();
        assert_eq!((count(&folded), count(&plain)), (9, 9), "folded nodes are still reported on the path");
        let x =
            ArrayD::from_shape_fn(IxDyn(&[2, 1, 28, 28]), |d| ((d[0] * 7 + d[2] * 3 + d[3] * 5) % 11) as f64 / 11.0);
        let (a, b) = (
            folded.loss_and_grad(x.clone(), &[0, 1], Loss::CE).unwrap(),
            plain.loss_and_grad(x, &[0, 1], Loss::CE).unwrap(),
        );
        let rel = |p: &ArrayD<f64>, q: &ArrayD<f64>| {
            let num: f64 = p.iter().zip(q).map(|(u, v)| (u - v).powi(2)).sum::<f64>().sqrt();
            num / q.iter().map(|v| v * v).sum::<f64>().sqrt()
        };
        assert!(rel(&a.logits.clone().into_dyn(), &b.logits.clone().into_dyn()) < 1e-12, "logits");
        assert!(rel(&a.grad, &b.grad) < 1e-12, "input gradients");
    }
}
