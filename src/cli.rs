//! Command-line arguments (clap derive). Validation only: nothing here
//! touches a file.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "advscan",
    version,
    about = "Measure how easily an ONNX diagnostic imaging model's predictions flip under adversarial perturbations."
)]
pub struct Cli {
    /// Worker threads for inference and attacks (default: all cores).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe a model: input, output, softmax, op histogram and which ops advscan can differentiate.
    Inspect {
        /// The ONNX model file.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}
