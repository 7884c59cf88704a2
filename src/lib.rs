//! advscan: measures how easily an ONNX diagnostic imaging model's
//! predictions flip under adversarial perturbations.
//!
//! The pipeline is the layout: scan → decode → preprocess → model (forward
//! with tract, exact input gradients of our own) → attack → evaluate →
//! report → gate.

pub mod attack;
pub mod config;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod gate;
pub mod inspect;
pub mod interrupt;
pub mod io;
pub mod merge;
pub mod model;
pub mod preprocess;
pub mod report;
pub mod run;
pub mod save;
pub mod scan;
pub mod synthetic;

pub use error::{Error, GateError, GradError, ModelError};
