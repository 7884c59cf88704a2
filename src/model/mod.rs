//! The model under test: the ONNX graph as read from the file (`graph`),
//! tract's optimised forward pass (`onnx`), and our reverse pass (`grad`).

pub mod grad;
pub mod graph;
pub mod onnx;

pub use onnx::{Classifier, Session};
