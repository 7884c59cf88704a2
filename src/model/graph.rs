//! The ONNX graph as the gradient engine sees it: nodes with parsed
//! attributes, initializers as plain tensors, and the one image input and
//! classifier output. Op meaning comes from the versioned ONNX spec, not from
//! tract's internal op types, so the reverse pass does not depend on tract's
//! optimiser. This module only reads the file; tract runs it (`model::onnx`).

use crate::error::ModelError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// A dense tensor read from the model file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    pub shape: Vec<usize>,
    pub data: Elements,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    Float(Vec<f64>),
    Int(Vec<i64>),
}

/// An attribute value of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Float(f32),
    Int(i64),
    Str(String),
    Tensor(TensorData),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<String>),
    /// Graphs and other kinds no rule reads.
    Other,
}

/// One ONNX node. Absent optional inputs are empty strings, as in ONNX.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: HashMap<String, Attr>,
}

impl Node {
    pub fn attr_int(&self, name: &str) -> Option<i64> {
        match self.attrs.get(name) {
            Some(Attr::Int(i)) => Some(*i),
            _ => None,
        }
    }
    pub fn attr_float(&self, name: &str) -> Option<f32> {
        match self.attrs.get(name) {
            Some(Attr::Float(f)) => Some(*f),
            Some(Attr::Int(i)) => Some(*i as f32),
            _ => None,
        }
    }
    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        match self.attrs.get(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }
    pub fn attr_floats(&self, name: &str) -> Option<&[f32]> {
        match self.attrs.get(name) {
            Some(Attr::Floats(v)) => Some(v),
            _ => None,
        }
    }
    pub fn attr_str(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(Attr::Str(s)) => Some(s),
            _ => None,
        }
    }
    pub fn attr_tensor(&self, name: &str) -> Option<&TensorData> {
        match self.attrs.get(name) {
            Some(Attr::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// A node for tests and synthetic graphs.
    pub fn new(op_type: &str) -> Node {
        Node { name: format!("{op_type}_0"), op_type: op_type.to_string(), ..Node::default() }
    }
    pub fn with(mut self, name: &str, attr: Attr) -> Node {
        self.attrs.insert(name.to_string(), attr);
        self
    }
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(d) => write!(f, "{d}"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// A graph input or output as declared in the file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TensorInfo {
    pub name: String,
    /// ONNX element type name (`float`, `double`, ...).
    pub elem_type: String,
    /// `None` when the file declares no shape.
    pub shape: Option<Vec<Dim>>,
}

/// A parsed ONNX classifier: one image input, its first graph output.
#[derive(Debug, Clone)]
pub struct Graph {
    pub path: PathBuf,
    pub opset: i64,
    pub nodes: Vec<Node>,
    pub initializers: HashMap<String, TensorData>,
    pub input: TensorInfo,
    pub output: TensorInfo,
}

fn elem_type_name(t: i32) -> &'static str {
    match t {
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => "unknown",
    }
}

fn tensor_info(v: &pb::ValueInfoProto) -> TensorInfo {
    let mut info = TensorInfo { name: v.name.clone(), elem_type: "unknown".into(), shape: None };
    if let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        info.elem_type = elem_type_name(t.elem_type).to_string();
        info.shape = t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .enumerate()
                .map(|(i, d)| match &d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if *v > 0 => Dim::Fixed(*v as usize),
                    Some(pb::tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => {
                        Dim::Symbolic(p.clone())
                    }
                    _ => Dim::Symbolic(format!("?{i}")),
                })
                .collect()
        });
    }
    info
}

/// Converts a tensor stored in the model file. `model_dir` resolves external data.
pub fn tensor_data(t: &pb::TensorProto, model_path: Option<&Path>) -> Result<TensorData, String> {
    let dir = model_path.and_then(|p| p.parent()).map(|d| d.to_string_lossy().into_owned());
    let resolver = tract_onnx::data_resolver::MmapDataResolver;
    // tract's loader panics (unimplemented!) on a few exotic element types; a
    // model file is untrusted input, so contain that as an error.
    let loaded = std::panic::catch_unwind(|| tract_onnx::tensor::load_tensor(&resolver, t, dir.as_deref()))
        .map_err(|_| format!("tensor '{}' has an element type advscan cannot read", t.name))?
        // `{e:#}`: tract's top context alone ("Canonicalizing ONNX external
        // data path ...") hides why, e.g. that the external data file is missing.
        .map_err(|e| format!("tensor '{}': {e:#}", t.name))?;
    let shape = loaded.shape().to_vec();
    let dt = loaded.datum_type();
    let data = if dt.is_float() {
        let c = loaded.cast_to::<f64>().map_err(|e| e.to_string())?;
        Elements::Float(c.to_plain_array_view::<f64>().map_err(|e| e.to_string())?.iter().copied().collect())
    } else {
        let c = loaded.cast_to::<i64>().map_err(|e| format!("tensor '{}': {e}", t.name))?;
        Elements::Int(c.to_plain_array_view::<i64>().map_err(|e| e.to_string())?.iter().copied().collect())
    };
    let len = match &data {
        Elements::Float(v) => v.len(),
        Elements::Int(v) => v.len(),
    };
    if len != shape.iter().product::<usize>() {
        return Err(format!("tensor '{}' has {len} values for shape {shape:?}", t.name));
    }
    Ok(TensorData { shape, data })
}

fn attr(a: &pb::AttributeProto, model_path: &Path) -> Result<Attr, String> {
    use pb::attribute_proto::AttributeType as A;
    Ok(match A::try_from(a.r#type).unwrap_or(A::Undefined) {
        A::Float => Attr::Float(a.f),
        A::Int => Attr::Int(a.i),
        A::String => Attr::Str(String::from_utf8_lossy(&a.s).into_owned()),
        A::Tensor => match &a.t {
            Some(t) => Attr::Tensor(tensor_data(t, Some(model_path))?),
            None => Attr::Other,
        },
        A::Floats => Attr::Floats(a.floats.clone()),
        A::Ints => Attr::Ints(a.ints.clone()),
        A::Strings => Attr::Strings(a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()),
        _ => Attr::Other,
    })
}

impl Graph {
    /// Reads and checks a model file: exactly one image input, float, rank 3 or 4.
    pub fn from_path(path: &Path) -> Result<Graph, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        let not_onnx = |reason: String| ModelError::NotOnnx { path: path.into(), reason };
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(|e| not_onnx(format!("protobuf decoding failed: {e}")))?;
        Graph::from_proto(&proto, path)
    }

    pub fn from_proto(proto: &pb::ModelProto, path: &Path) -> Result<Graph, ModelError> {
        let not_onnx = |reason: String| ModelError::NotOnnx { path: path.into(), reason };
        let unsupported = |reason: String| ModelError::Unsupported { path: path.into(), reason };
        let graph = proto.graph.as_ref().ok_or_else(|| not_onnx("the file contains no graph".into()))?;
        if graph.node.is_empty() {
            return Err(not_onnx("the graph has no nodes".into()));
        }
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(1);
        let mut initializers = HashMap::new();
        for t in &graph.initializer {
            initializers.insert(t.name.clone(), tensor_data(t, Some(path)).map_err(&not_onnx)?);
        }
        let inputs: Vec<TensorInfo> =
            graph.input.iter().filter(|i| !initializers.contains_key(&i.name)).map(tensor_info).collect();
        let input = match inputs.as_slice() {
            [one] => one.clone(),
            [] => return Err(unsupported("the model has no input".into())),
            many => {
                let names: Vec<_> = many.iter().map(|i| i.name.as_str()).collect();
                return Err(unsupported(format!(
                    "the model has {} inputs ({}); advscan needs exactly one image input",
                    many.len(),
                    names.join(", ")
                )));
            }
        };
        if !matches!(input.elem_type.as_str(), "float" | "double" | "float16" | "bfloat16") {
            return Err(unsupported(format!(
                "input '{}' has element type {}; advscan needs a floating-point image input",
                input.name, input.elem_type
            )));
        }
        match &input.shape {
            Some(s) if s.len() == 3 || s.len() == 4 => {}
            Some(s) => {
                return Err(unsupported(format!(
                    "input '{}' has rank {}; advscan needs a 3-D (N,C,L) or 4-D (N,C,H,W) image input",
                    input.name,
                    s.len()
                )));
            }
            None => {
                return Err(unsupported(format!(
                    "input '{}' declares no shape; advscan needs a 3-D or 4-D input",
                    input.name
                )));
            }
        }
        let output =
            graph.output.first().map(tensor_info).ok_or_else(|| unsupported("the model has no output".into()))?;
        let mut nodes = Vec::with_capacity(graph.node.len());
        for (i, n) in graph.node.iter().enumerate() {
            let mut attrs = HashMap::new();
            for a in &n.attribute {
                attrs.insert(a.name.clone(), attr(a, path).map_err(&not_onnx)?);
            }
            nodes.push(Node {
                name: if n.name.is_empty() { format!("{}_{i}", n.op_type) } else { n.name.clone() },
                op_type: n.op_type.clone(),
                domain: n.domain.clone(),
                inputs: n.input.clone(),
                outputs: n.output.clone(),
                attrs,
            });
        }
        Ok(Graph { path: path.into(), opset, nodes, initializers, input, output })
    }

    /// The node producing `tensor`, if any.
    pub fn producer(&self, tensor: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.outputs.iter().any(|o| o == tensor))
    }

    /// If the graph's output comes straight from a Softmax or LogSoftmax, the
    /// name of that node's input (the logits) and the op type.
    pub fn softmax_tail(&self) -> Option<(&str, &str)> {
        let last = self.producer(&self.output.name)?;
        match last.op_type.as_str() {
            "Softmax" | "LogSoftmax" => last.inputs.first().map(|i| (i.as_str(), last.op_type.as_str())),
            _ => None,
        }
    }

    /// The tensor attacks take gradients of: the logits.
    pub fn logits_name(&self) -> &str {
        self.softmax_tail().map(|(logits, _)| logits).unwrap_or(&self.output.name)
    }
}
