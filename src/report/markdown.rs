//! `summary.md`: a short Markdown summary sized for a CI job summary or a
//! merge-request comment — headline figures, one table row per run, the
//! minimal-ε summary, trust checks and the gate verdict. Rendered from
//! [`Results`] (and the gate's [`Verdict`]) only; nothing is recomputed.

use super::json::{Results, Status};
use crate::gate::Verdict;
use std::fmt::Write as _;

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", 100.0 * v)).unwrap_or_else(|| "—".into())
}

/// Table cells must not break the row: escape the pipe.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn status(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Warn => "warn",
        Status::Fail => "**fail**",
    }
}

pub fn render(r: &Results, verdict: Option<&Verdict>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## advscan robustness summary\n");
    if let Some(v) = verdict {
        let failed = v.failures().count();
        let _ = if failed == 0 {
            writeln!(s, "**Gate: passed** ({} requirement(s) hold)\n", v.outcomes.len())
        } else {
            writeln!(s, "**Gate: FAILED** ({failed} of {} requirement(s) fail)\n", v.outcomes.len())
        };
    }
    let sha = r.model.sha256.get(..12).unwrap_or(&r.model.sha256);
    let _ = writeln!(s, "- model: `{}` (sha256 `{sha}…`)", r.model.path);
    let _ = writeln!(
        s,
        "- data: `{}`: {} sample(s), {} labelled, {} skipped",
        r.data.path,
        r.data.samples,
        r.data.labelled,
        r.data.skipped.len()
    );
    let _ = writeln!(s, "- clean accuracy: {}", pct(r.clean.accuracy));
    let _ = writeln!(s, "\n| attack | norm | ε | robust accuracy | flip rate |\n|---|---|---|---:|---:|");
    for run in &r.runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            cell(&run.attack),
            cell(&run.norm),
            cell(&run.eps_label),
            pct(run.robust_accuracy),
            pct(Some(run.flip_rate))
        );
    }
    if let Some(m) = &r.min_eps {
        let f = |v: Option<f32>| v.map(|v| format!("{v:.5}")).unwrap_or_else(|| format!("> {:.5}", m.eps_max));
        let _ = writeln!(
            s,
            "\nMinimal flipping ε ({} {}): median {}, quartiles {} – {}; {} of {} flipped by ε ≤ {:.5}.",
            m.attack,
            m.norm,
            f(m.median),
            f(m.q1),
            f(m.q3),
            m.flipped,
            r.data.samples,
            m.eps_max
        );
    }
    let _ = writeln!(s, "\n| trust check | status | detail |\n|---|---|---|");
    for c in &r.checks {
        let _ = writeln!(s, "| {} | {} | {} |", cell(&c.name), status(c.status), cell(&c.detail));
    }
    if let Some(v) = verdict {
        let _ = writeln!(s, "\n| gate requirement | measured | limit | result |\n|---|---|---|---|");
        for o in &v.outcomes {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                cell(&o.requirement),
                cell(&o.measured),
                cell(&o.limit),
                if o.passed { "pass" } else { "**FAIL**" }
            );
        }
    }
    if !r.data.skipped.is_empty() {
        let _ = writeln!(
            s,
            "\n{} input file(s) were skipped (see `data.skipped` in results.json); the run exits with status 2.",
            r.data.skipped.len()
        );
    }
    s
}
