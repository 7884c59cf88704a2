//! Shared helpers for the integration tests: build small ONNX models in
//! code (so broken or unusual models need no binary fixtures), and run the
//! real binary.
#![allow(dead_code)]

use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Output;
use tract_onnx::pb;

pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn advscan(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_advscan"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("advscan binary runs")
}

/// Runs the binary and reads `--out DIR/results.json` (Null when absent).
pub fn run(args: &[&str]) -> (Output, serde_json::Value) {
    let out = advscan(args);
    let dir = args.iter().position(|a| *a == "--out").map(|i| args[i + 1]).expect("--out given");
    let results = std::fs::read(Path::new(dir).join("results.json"))
        .map(|b| serde_json::from_slice(&b).expect("results.json is JSON"))
        .unwrap_or(serde_json::Value::Null);
    (out, results)
}

/// `advscan attack` with one cheap attack (FGSM at `eps`, no gallery) of
/// `model` on `data` into `out`, the way most input-handling tests need it.
pub fn fgsm_run(model: &str, data: &Path, out: &Path, eps: &str) -> (Output, serde_json::Value) {
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    run(&[
        "attack",
        "--model",
        model,
        "--data",
        data,
        "--attack",
        "fgsm",
        "--eps",
        eps,
        "--gallery",
        "0",
        "--quiet",
        "--out",
        out,
    ])
}

/// A process's output bytes as text (lossy), for assertion messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn arr<'a>(v: &'a serde_json::Value, what: &str) -> &'a Vec<serde_json::Value> {
    v.as_array().unwrap_or_else(|| panic!("expected {what} to be a JSON array, got {v}"))
}

pub fn num(v: &serde_json::Value, what: &str) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("expected {what} to be a number, got {v}"))
}

pub fn value_info(name: &str, elem_type: i32, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(if d < 0 { Value::DimParam("N".into()) } else { Value::DimValue(d) }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: format!("{op}_{}", outputs.first().copied().unwrap_or("")),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn float_tensor(name: &str, dims: &[i64], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

/// Serialises a model with the given graph parts at `opset`.
pub fn model_bytes(
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    opset: i64,
) -> Vec<u8> {
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: opset }],
        graph: Some(pb::GraphProto {
            name: "test".into(),
            node: nodes,
            initializer: initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// A linear classifier on a [N,1,2,2] image: flatten → Gemm to 2 logits, with
/// `tail` ops (e.g. "Softmax") appended.
pub fn tiny_classifier(tail: Option<&str>) -> Vec<u8> {
    let mut nodes = vec![node("Flatten", &["image"], &["flat"]), node("Gemm", &["flat", "W", "B"], &["logits"])];
    let mut out = "logits";
    if let Some(op) = tail {
        nodes.push(node(op, &["logits"], &["probs"]));
        out = "probs";
    }
    let w = float_tensor("W", &[4, 2], &[0.5, -0.5, 1.0, -1.0, -0.25, 0.25, 2.0, 0.0]);
    let b = float_tensor("B", &[2], &[0.1, -0.1]);
    model_bytes(
        vec![value_info("image", FLOAT, &[-1, 1, 2, 2])],
        vec![value_info(out, FLOAT, &[-1, 2])],
        nodes,
        vec![w, b],
        13,
    )
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}

/// `models/pneumonia_cnn.onnx` with a hard quantisation step in front:
/// x → round(255·x)/255. On 8-bit images it predicts exactly as the CNN, but
/// its input gradient is zero everywhere (Round has derivative 0): the
/// textbook gradient-masked model.
pub fn gradient_masked_cnn() -> Vec<u8> {
    let bytes = std::fs::read(repo().join("models/pneumonia_cnn.onnx")).expect("committed model");
    let mut model = pb::ModelProto::decode(bytes.as_slice()).expect("committed model decodes");
    let graph = model.graph.as_mut().expect("graph");
    for n in &mut graph.node {
        for i in &mut n.input {
            if i == "image" {
                *i = "quantised".into();
            }
        }
    }
    let mut nodes = vec![
        node("Mul", &["image", "k255"], &["scaled"]),
        node("Round", &["scaled"], &["rounded"]),
        node("Div", &["rounded", "k255"], &["quantised"]),
    ];
    nodes.append(&mut graph.node);
    graph.node = nodes;
    graph.initializer.push(float_tensor("k255", &[], &[255.0]));
    model.encode_to_vec()
}

/// Writes the first `n` images of the synthetic demo set into `dir/data` and returns that folder.
pub fn demo_data(dir: &Path, n: usize) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("create data folder");
    for (name, img) in advscan::synthetic::demo_set(n) {
        img.save(data.join(name)).expect("write demo image");
    }
    data
}
