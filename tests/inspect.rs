//! `advscan inspect` through the real binary: the committed models, and
//! models that must be refused with exit status 2 and one clear sentence.

mod common;
use common::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn inspects_every_committed_model_as_json() {
    for name in ["pneumonia_cnn", "pneumonia_resnet", "pneumonia_mixed_ops"] {
        let path = format!("models/{name}.onnx");
        let out = advscan(&["inspect", &path, "--json"]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON");
        assert_eq!(v["input"]["name"], "image");
        assert_eq!(v["input"]["shape"], serde_json::json!(["N", 1, 28, 28]), "{name}: dynamic batch shown as such");
        assert_eq!(v["input"]["elem_type"], "float");
        assert!(v["gradient_error"].is_null(), "{name}: {}", v["gradient_error"]);
        let ops = v["ops"].as_array().unwrap();
        assert!(ops.iter().any(|o| o["op"] == "Conv" && o["differentiable"] == true && o["on_gradient_path"] == true));
        assert_eq!(v["softmax_stripped"], name == "pneumonia_resnet", "{name}");
    }
}

#[test]
fn resnet_softmax_is_stripped_and_reported() {
    let out = advscan(&["inspect", "models/pneumonia_resnet.onnx"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("graph ends in Softmax; gradients are taken on its input"), "{text}");
    assert!(text.contains("BatchNormalization"), "{text}");
}

#[test]
fn pytorch_shape_subgraph_and_opset18_reduce_mean_are_handled() {
    let out = advscan(&["inspect", "models/pneumonia_mixed_ops.onnx", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["opset"], 18);
    let ops = v["ops"].as_array().unwrap();
    let has = |op: &str| ops.iter().any(|o| o["op"] == op);
    for op in ["Shape", "Gather", "Concat", "Reshape", "ReduceMean"] {
        assert!(has(op), "the PyTorch export should contain {op}");
    }
    // Shape is evaluated (shape-static) but never differentiated.
    let shape = ops.iter().find(|o| o["op"] == "Shape").unwrap();
    assert_eq!(shape["on_gradient_path"], false);
    assert!(v["gradient_error"].is_null(), "{}", v["gradient_error"]);
}

fn refused(bytes: &[u8], name: &str, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, bytes);
    let out = advscan(&["inspect", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(name), "the message names the file: {err}");
    assert!(err.contains(reason), "expected '{reason}' in: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
}

#[test]
fn refuses_files_that_are_not_onnx() {
    refused(b"", "zero_bytes.onnx", "not a readable ONNX model");
    refused(b"\x89PNG\r\n\x1a\n this is not a model at all", "png_bytes.onnx", "not a readable ONNX model");
    let mut truncated = tiny_classifier(None);
    truncated.truncate(truncated.len() / 2);
    refused(&truncated, "truncated.onnx", "not a readable ONNX model");
}

#[test]
fn refuses_several_image_inputs() {
    let bytes = model_bytes(
        vec![value_info("a", FLOAT, &[-1, 1, 2, 2]), value_info("b", FLOAT, &[-1, 1, 2, 2])],
        vec![value_info("y", FLOAT, &[-1, 1, 2, 2])],
        vec![node("Add", &["a", "b"], &["y"])],
        vec![],
        13,
    );
    refused(&bytes, "two_inputs.onnx", "has 2 inputs (a, b)");
}

#[test]
fn refuses_non_float_or_wrong_rank_inputs() {
    let int_input = model_bytes(
        vec![value_info("image", INT64, &[-1, 1, 2, 2])],
        vec![value_info("y", INT64, &[-1, 1, 2, 2])],
        vec![node("Identity", &["image"], &["y"])],
        vec![],
        13,
    );
    refused(&int_input, "int64_input.onnx", "element type int64");
    let flat_input = model_bytes(
        vec![value_info("image", FLOAT, &[-1, 4])],
        vec![value_info("y", FLOAT, &[-1, 4])],
        vec![node("Relu", &["image"], &["y"])],
        vec![],
        13,
    );
    refused(&flat_input, "rank2_input.onnx", "has rank 2");
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let out = advscan(&["inspect", "models/does_not_exist.onnx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("models/does_not_exist.onnx: cannot read the file"));
}

#[test]
fn unsupported_op_on_the_path_is_reported_with_node_and_alternatives() {
    // Sin has no backward rule: inspect still works and says why gradients are unavailable.
    let bytes = model_bytes(
        vec![value_info("image", FLOAT, &[-1, 1, 2, 2])],
        vec![value_info("logits", FLOAT, &[-1, 2])],
        vec![node("Sin", &["image"], &["s"]), node("Flatten", &["s"], &["f"]), node("Gemm", &["f", "W"], &["logits"])],
        vec![float_tensor("W", &[4, 2], &[1.0; 8])],
        13,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "sin.onnx", &bytes);
    let out = advscan(&["inspect", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = v["gradient_error"].as_str().unwrap();
    assert!(err.contains("node 'Sin_s' is a Sin"), "{err}");
    assert!(err.contains("Conv") && err.contains("square"), "lists supported ops and the gradient-free attack: {err}");
}
