//! `summary.md`: a short Markdown summary sized for a CI job summary or a
//! merge-request comment — headline figures, one table row per run, the
//! minimal-ε summary, trust checks and the gate verdict. Rendered from
//! [`Results`] (and the gate's [`Verdict`]) only; nothing is recomputed.

// Rendered from results.json with its per-sample records digested (see super::digest).
use super::digest::Summary as Results;
use super::json::Status;
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
    if let Some(m) = &r.data.manifest_sha256 {
        let _ = writeln!(s, "- data manifest: sha256 `{m}` ({} file(s))", r.data.manifest_files);
    }
    let _ = writeln!(s, "- clean accuracy: {}", pct(r.clean.accuracy));
    let _ = writeln!(
        s,
        "\n| attack | norm | ε | robust accuracy | flip rate | flip rate (quantised) |\n|---|---|---|---:|---:|---:|"
    );
    for run in &r.runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&run.attack),
            cell(&run.norm),
            cell(&run.eps_label),
            pct(run.robust_accuracy),
            pct(Some(run.flip_rate)),
            pct(run.flip_rate_quantized)
        );
    }
    if let Some(m) = &r.min_eps {
        // Model scale, with the user's unit (HU, gl) in parentheses when every ε label has it.
        let unit = super::html::user_eps_unit(r);
        let g = |v: f32| match unit {
            Some(u) => format!("{v:.5} ({})", super::html::eps_in_unit(v as f64, u)),
            None => format!("{v:.5}"),
        };
        let f = |v: Option<f32>| v.map(g).unwrap_or_else(|| format!("> {}", g(m.eps_max)));
        let _ = writeln!(
            s,
            "\nMinimal flipping ε ({} {}, model-input scale): median {}, quartiles {} – {}; {} of {} flipped by ε ≤ {}.",
            m.attack,
            m.norm,
            f(m.median),
            f(m.q1),
            f(m.q3),
            m.flipped,
            r.data.samples,
            g(m.eps_max)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::tests::results;

    #[test]
    fn quantised_column_and_min_eps_in_hu() {
        let mut r = crate::report::html::tests::hu_results();
        r.runs[0].flip_rate_quantized = None;
        let m = render(&r.summary(), None);
        assert!(m.contains("| flip rate | flip rate (quantised) |\n|---|---|---|---:|---:|---:|"), "{m}");
        assert!(m.contains("| fgsm | linf | 10HU | 80.0% | 10.0% | — |"), "{m}");
        assert!(m.contains("| pgd | linf | 20HU | 60.0% | 40.0% | 40.0% |"), "{m}");
        assert!(m.contains("median 0.01000 (15.0HU)") && m.contains("flipped by ε ≤ 0.01333 (20.0HU)."), "{m}");
        let m = render(&results().summary(), None);
        assert!(m.contains("median 0.01176, quartiles"), "{m}");
    }
}
