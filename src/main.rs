//! The advscan binary: parse arguments, call the library, map the outcome to
//! an exit code (0 pass, 1 gate failed, 2 error).

mod cli;

use advscan::inspect::inspect;
use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(threads) = cli.threads {
        // One rayon pool for the whole run: every worker holds its own tract state.
        rayon::ThreadPoolBuilder::new().num_threads(threads.into()).build_global()?;
    }
    match cli.command {
        Command::Inspect { model, json } => {
            let report = inspect(&model)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("advscan: {e:#}");
            ExitCode::from(2)
        }
    }
}
