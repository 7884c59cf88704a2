//! The advscan binary: parse arguments, call the library, map the outcome to
//! an exit code (0 pass, 1 gate failed, 2 error).

mod cli;

use advscan::inspect::inspect;
use advscan::run::{AttackRequest, run_attack};
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
        Command::Attack(a) => {
            let step_size_label = match a.step_size {
                advscan::run::StepSize::EpsOver(k) => format!("eps/{k}"),
                advscan::run::StepSize::Absolute(v) => v.to_string(),
            };
            let req = AttackRequest {
                model: a.model,
                data: a.data,
                labels: a.labels,
                out: a.out,
                attacks: a.attacks,
                eps: a.eps,
                norm: a.norm.into(),
                steps: a.steps,
                step_size: a.step_size,
                step_size_label,
                restarts: a.restarts as usize,
                random_start: !a.no_random_start,
                targeted: a.targeted,
                queries: a.queries,
                min_eps: a.min_eps,
                seed: a.seed,
                threads: rayon::current_num_threads(),
                batch_size: a.batch_size as usize,
                quiet: a.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()),
                max_pixels: a.max_pixels,
            };
            let outcome = run_attack(&req)?;
            print!("{}", advscan::report::table::render(&outcome.results));
            println!("\nresults: {}", outcome.results_path.display());
            let skipped = outcome.results.data.skipped.len();
            if skipped > 0 {
                // The run completed, but some inputs were not evaluated: say so in the status.
                eprintln!(
                    "advscan: {skipped} input(s) skipped; see data.skipped in {}",
                    outcome.results_path.display()
                );
                return Ok(ExitCode::from(2));
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
