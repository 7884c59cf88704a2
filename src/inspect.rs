//! `advscan inspect`: what a model file is, as advscan sees it — input and
//! output, whether a final Softmax is stripped for the gradient, the op
//! histogram, and which op types advscan can differentiate through. Reads
//! the file and builds the plans; runs nothing. Also the model config
//! resolved for it (file or defaults), so a user sees what preprocessing
//! `attack` will apply.

use crate::config::ModelConfig;
use crate::error::{Error, ModelError};
use crate::model::Classifier;
use crate::model::grad::differentiable_ops;
use crate::model::graph::TensorInfo;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct OpSummary {
    pub op: String,
    pub count: usize,
    /// advscan has a backward rule for this op type.
    pub differentiable: bool,
    /// Some node of this type lies between the input and the logits.
    pub on_gradient_path: bool,
}

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub path: String,
    pub sha256: String,
    pub opset: i64,
    pub input: TensorInfo,
    pub output: TensorInfo,
    /// The tensor gradients are taken of.
    pub logits: String,
    /// `Softmax` or `LogSoftmax` when the graph ends in one (stripped for gradients).
    pub ends_in: Option<String>,
    pub softmax_stripped: bool,
    pub nodes: usize,
    pub ops: Vec<OpSummary>,
    /// `null` when exact gradients are available, else why not.
    pub gradient_error: Option<String>,
    /// The model config file resolved for this model (`null`: none, defaults apply).
    pub config_path: Option<String>,
    /// The config as read (unset keys `null`).
    pub config: ModelConfig,
    /// One line per default applied.
    pub config_defaults: Vec<String>,
}

/// Inspects a model and resolves its config (`config`: `--model-config`, else
/// the `.model.toml` beside the model, else defaults).
pub fn inspect(path: &Path, config: Option<&Path>) -> Result<Inspection, Error> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
    inspect_bytes(&bytes, path, config)
}

/// [`inspect`] on the bytes of a model file; `path` names it and locates
/// its config and external data, as for a file. The fuzz targets enter here.
pub fn inspect_bytes(bytes: &[u8], path: &Path, config: Option<&Path>) -> Result<Inspection, Error> {
    let model = Classifier::from_bytes(bytes, path)?;
    let (config, config_path, config_defaults) = ModelConfig::resolve(path, config)?;
    let graph = model.graph();
    let mut hist: BTreeMap<&str, usize> = BTreeMap::new();
    for n in &graph.nodes {
        *hist.entry(n.op_type.as_str()).or_default() += 1;
    }
    let rules = differentiable_ops();
    let on_path: Vec<&str> = model.engine().map(|e| e.path_ops().collect()).unwrap_or_default();
    let ops = hist
        .into_iter()
        .map(|(op, count)| OpSummary {
            op: op.to_string(),
            count,
            differentiable: rules.contains(&op),
            on_gradient_path: on_path.contains(&op),
        })
        .collect();
    let tail = graph.softmax_tail();
    Ok(Inspection {
        path: path.display().to_string(),
        sha256: model.sha256().to_string(),
        opset: graph.opset,
        input: graph.input.clone(),
        output: graph.output.clone(),
        logits: graph.logits_name().to_string(),
        ends_in: tail.map(|(_, op)| op.to_string()),
        softmax_stripped: tail.is_some(),
        nodes: graph.nodes.len(),
        ops,
        gradient_error: model.engine().err().map(|e| e.to_string()),
        config_path: config_path.map(|p| p.display().to_string()),
        config,
        config_defaults,
    })
}

fn shape(t: &TensorInfo) -> String {
    match &t.shape {
        Some(dims) => format!("[{}]", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
        None => "(no shape declared)".into(),
    }
}

impl Inspection {
    fn config_sibling(&self) -> String {
        ModelConfig::sibling_path(Path::new(&self.path)).display().to_string()
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "model     {}", self.path);
        let _ = writeln!(s, "sha256    {}", self.sha256);
        let _ = writeln!(s, "opset     {}   nodes {}", self.opset, self.nodes);
        let _ = writeln!(s, "input     {} {} {}", self.input.name, shape(&self.input), self.input.elem_type);
        let _ = writeln!(s, "output    {} {} {}", self.output.name, shape(&self.output), self.output.elem_type);
        match &self.ends_in {
            Some(op) => {
                let _ = writeln!(s, "softmax   graph ends in {op}; gradients are taken on its input '{}'", self.logits);
            }
            None => {
                let _ = writeln!(s, "softmax   none; gradients are taken on '{}'", self.logits);
            }
        }
        let _ = writeln!(
            s,
            "gradient  {}",
            match &self.gradient_error {
                None => "exact input gradients available".to_string(),
                Some(e) => format!("unavailable: {e}"),
            }
        );
        match &self.config_path {
            Some(p) => {
                let _ = writeln!(s, "config    {p}");
            }
            None => {
                let _ = writeln!(s, "config    none found (looked for {}); defaults:", self.config_sibling());
            }
        }
        let c = &self.config;
        if let Some(size) = c.input.size {
            let _ = writeln!(s, "  input.size      {}×{}", size[0], size[1]);
        }
        let _ = writeln!(s, "  input.resize    {}", c.resize());
        if let Some((centre, width)) = c.window() {
            let _ = writeln!(
                s,
                "  window          centre {centre} width {width}{}",
                if c.window.use_file_voi { " (file VOI preferred)" } else { "" }
            );
        }
        let (mean, std) = c.mean_std();
        let _ = writeln!(s, "  normalize       mean {mean:?} std {std:?}");
        if let Some(names) = &c.classes.names {
            let _ = writeln!(s, "  classes         {}", names.join(", "));
        }
        if let Some(p) = &c.classes.positive {
            let _ = writeln!(s, "  positive class  {p}");
        }
        for d in &self.config_defaults {
            let _ = writeln!(s, "  default: {d}");
        }
        let _ = writeln!(s, "\n{:<24} {:>5}  {:<14} {}", "op", "count", "differentiable", "on gradient path");
        for op in &self.ops {
            let _ = writeln!(
                s,
                "{:<24} {:>5}  {:<14} {}",
                op.op,
                op.count,
                if op.differentiable { "yes" } else { "no" },
                if op.on_gradient_path { "yes" } else { "no" }
            );
        }
        s
    }
}
