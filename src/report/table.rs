//! The short human summary printed to standard output after a run.

// Rendered from results.json with its per-sample records digested (see super::digest).
use super::digest::Summary as Results;
use std::fmt::Write as _;

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", 100.0 * v)).unwrap_or_else(|| "—".into())
}

pub fn render(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model {}  ({} samples, {} labelled, {} skipped)  clean accuracy {}",
        r.model.path,
        r.data.samples,
        r.data.labelled,
        r.data.skipped.len(),
        pct(r.clean.accuracy)
    );
    let _ = writeln!(
        s,
        "\n{:<10} {:<5} {:>10} {:>10} {:>9} {:>16} {:>10} {:>9}",
        "attack", "norm", "eps", "robust acc", "flip rate", "flip (quantised)", "success", "conf drop"
    );
    for run in &r.runs {
        let _ = writeln!(
            s,
            "{:<10} {:<5} {:>10} {:>10} {:>9} {:>16} {:>10} {:>9.3}",
            run.attack,
            run.norm,
            run.eps_label,
            pct(run.robust_accuracy),
            pct(Some(run.flip_rate)),
            pct(run.flip_rate_quantized),
            pct(run.attack_success_rate),
            run.mean_confidence_drop + 0.0 // print −0.000 as 0.000
        );
    }
    if let Some(m) = &r.min_eps {
        // Model scale, with the user's unit (HU, gl) in parentheses when every ε label has it.
        let unit = super::html::user_eps_unit(r);
        let f = |v: Option<f32>| match (v, unit) {
            (Some(v), Some(u)) => format!("{v:.5} ({})", super::html::eps_in_unit(v as f64, u)),
            (Some(v), None) => format!("{v:.5}"),
            (None, _) => "—".into(),
        };
        let _ = writeln!(
            s,
            "\nminimal flipping ε ({} {}, precision {}): median {}  quartiles {} – {}  ({} of {} flipped by ε ≤ {})",
            m.attack,
            m.norm,
            m.precision,
            f(m.median),
            f(m.q1),
            f(m.q3),
            m.flipped,
            r.data.samples,
            f(Some(m.eps_max))
        );
    }
    let _ = writeln!(s, "\nchecks:");
    for c in &r.checks {
        let _ = writeln!(s, "  {:<5} {:<28} {}", format!("{:?}", c.status).to_lowercase(), c.name, c.detail);
    }
    for sk in &r.data.skipped {
        // Decode errors already name their file.
        if sk.reason.starts_with(&sk.path) {
            let _ = writeln!(s, "skipped {}", sk.reason);
        } else {
            let _ = writeln!(s, "skipped {}: {}", sk.path, sk.reason);
        }
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
        let t = render(&r.summary());
        assert!(t.contains("flip (quantised)"));
        let rows: Vec<&str> = t.lines().filter(|l| l.starts_with("fgsm") || l.starts_with("pgd")).collect();
        assert_eq!(rows.len(), 4);
        assert!(rows[0].split_whitespace().nth(5) == Some("—"), "{}", rows[0]);
        assert!(rows[1].split_whitespace().nth(5) == Some("30.0%"), "{}", rows[1]);
        assert!(t.contains("median 0.01000 (15.0HU)") && t.contains("ε ≤ 0.01333 (20.0HU)"), "{t}");
        // Model-scale labels: no unit in parentheses.
        let t = render(&results().summary());
        assert!(t.contains("median 0.01176  quartiles"), "{t}");
    }
}
