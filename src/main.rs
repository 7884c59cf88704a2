//! The advscan binary: parse arguments, call the library, map the outcome to
//! an exit code (0 pass, 1 gate failed, 2 error). When several apply, the
//! highest wins: an error or a skipped input (2) outranks a failed gate (1),
//! since a gate verdict on an incomplete run cannot be trusted as a pass or a
//! fail on its own.

mod cli;

use advscan::gate::{self, Policy, Verdict};
use advscan::inspect::inspect;
use advscan::report::digest::Summary;
use advscan::report::staging::Staging;
use advscan::run::{AttackRequest, run_attack};
use clap::Parser;
use cli::{Cli, Command};
use std::path::Path;
use std::process::ExitCode;

/// Every forward and backward pass allocates its tensors and frees them
/// again. glibc hands freed blocks of more than a few MiB back to the
/// kernel (the worker threads' arenas trim their heaps, even with the
/// thresholds raised by `mallopt`, which the engine did up to the eleventh
/// pass), and the next step's tensor of the same size faults its pages in
/// again, zeroed by the kernel behind a lock both workers contend for.
/// mimalloc keeps freed memory per thread for the next request: on
/// ResNet-18 at batch 4 and 2 threads the run went from 845,000 page faults
/// to 300,000–400,000 (most of them the first touch of its ~1 GB) and from
/// 2.6 to 3.6–4.0 images/s. The choice is the binary's: the library sets
/// no process-wide allocator behaviour.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes report.html, summary.md and junit.xml into `dir` (beside its
/// results.json) and gates `results` when a policy is given. The outer error
/// is a failure to write; the inner one a policy that cannot be applied — the
/// reports are written either way, since the run's figures are still worth reading.
fn gate_and_report(
    dir: &Path,
    results: &Summary,
    policy: Option<&Policy>,
    baseline: Option<&Path>,
) -> anyhow::Result<anyhow::Result<Option<Verdict>>> {
    let verdict = baseline
        .map(gate::read_summary)
        .transpose()
        .and_then(|b| policy.map(|p| gate::evaluate(p, results, b.as_ref())).transpose());
    advscan::report::write_reports(dir, results, verdict.as_ref().ok().and_then(Option::as_ref))?;
    Ok(verdict.map_err(Into::into))
}

fn print_verdict(v: &Verdict) -> ExitCode {
    for f in v.failures() {
        println!("FAIL {}: measured {}, limit {}", f.requirement, f.measured, f.limit);
    }
    let failed = v.failures().count();
    if failed == 0 {
        println!("gate: passed ({} requirement(s))", v.outcomes.len());
        ExitCode::SUCCESS
    } else {
        println!("gate: FAILED ({failed} of {} requirement(s))", v.outcomes.len());
        ExitCode::from(1)
    }
}

fn parent(p: &Path) -> &Path {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// What `attack` and `merge` do once results.json is staged: gate, write the
/// reports beside it, swap the finished report folder in over `--out`, print
/// the table, and turn verdict and skipped inputs into the exit status.
fn finish(staging: Staging, policy: Option<&Policy>) -> anyhow::Result<ExitCode> {
    // Render from the file as written, exactly as `advscan report` does, so
    // both produce the same bytes whatever float parsing does; its samples
    // are digested as they are read, never held.
    let written = gate::read_summary(&staging.path().join("results.json"))?;
    let results = &written;
    let verdict = gate_and_report(staging.path(), &written, policy, None)?;
    // A signal that arrived after the last batch still means "stop": the
    // previous report stays.
    advscan::interrupt::check()?;
    let out = staging.out().to_path_buf();
    staging.commit()?;
    let results_path = out.join("results.json");
    print!("{}", advscan::report::table::render(results));
    println!("\nresults: {}", results_path.display());
    let code = verdict?.as_ref().map(print_verdict).unwrap_or(ExitCode::SUCCESS);
    let skipped = results.data.skipped.len();
    if skipped > 0 {
        // The run completed, but some inputs were not evaluated: say so in the status.
        eprintln!("advscan: {skipped} input(s) skipped; see data.skipped in {}", results_path.display());
        return Ok(ExitCode::from(2));
    }
    Ok(code)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(threads) = cli.threads {
        // One rayon pool for the whole run: every worker holds its own tract state.
        rayon::ThreadPoolBuilder::new().num_threads(threads.into()).build_global()?;
    }
    match cli.command {
        Command::Inspect { model, json, model_config } => {
            let report = inspect(&model, model_config.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Attack(a) => {
            // Read the policy first: a malformed one should fail before a long run, not after.
            let policy = a.policy.as_deref().map(Policy::from_file).transpose()?;
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
                gallery: a.gallery,
                anonymize: a.anonymize,
                ids_file: a.ids_file,
                shard: a.shard,
                model_config: a.model_config,
                save_adversarial: a.save_adversarial,
            };
            advscan::interrupt::install()?;
            let outcome = run_attack(&req)?;
            finish(outcome.staging, policy.as_ref())
        }
        Command::Merge { inputs, policy, out } => {
            let policy = policy.as_deref().map(Policy::from_file).transpose()?;
            let outcome = advscan::merge::merge(&inputs, &out)?;
            println!("merged {} shard(s): {} sample(s)", inputs.len(), outcome.results.samples.len());
            finish(outcome.staging, policy.as_ref())
        }
        Command::Gate { policy, baseline, results } => {
            let policy = Policy::from_file(&policy)?;
            let r = gate::read_summary(&results)?;
            let verdict = gate_and_report(parent(&results), &r, Some(&policy), baseline.as_deref())??;
            Ok(print_verdict(&verdict.expect("a policy was given")))
        }
        Command::Report { results, policy, baseline } => {
            let policy = policy.as_deref().map(Policy::from_file).transpose()?;
            let r = gate::read_summary(&results)?;
            gate_and_report(parent(&results), &r, policy.as_ref(), baseline.as_deref())??;
            println!("wrote report.html, summary.md and junit.xml in {}", parent(&results).display());
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
