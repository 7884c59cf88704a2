//! The short human summary printed to standard output after a run.

use super::json::Results;
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
        "\n{:<10} {:<5} {:>10} {:>10} {:>9} {:>10} {:>9}",
        "attack", "norm", "eps", "robust acc", "flip rate", "success", "conf drop"
    );
    for run in &r.runs {
        let _ = writeln!(
            s,
            "{:<10} {:<5} {:>10} {:>10} {:>9} {:>10} {:>9.3}",
            run.attack,
            run.norm,
            run.eps_label,
            pct(run.robust_accuracy),
            pct(Some(run.flip_rate)),
            pct(run.attack_success_rate),
            run.mean_confidence_drop + 0.0 // print −0.000 as 0.000
        );
    }
    if let Some(m) = &r.min_eps {
        let f = |v: Option<f32>| v.map(|v| format!("{v:.5}")).unwrap_or_else(|| "—".into());
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
            m.eps_max
        );
    }
    let _ = writeln!(s, "\nchecks:");
    for c in &r.checks {
        let _ = writeln!(s, "  {:<5} {:<28} {}", format!("{:?}", c.status).to_lowercase(), c.name, c.detail);
    }
    for sk in &r.data.skipped {
        let _ = writeln!(s, "skipped {}: {}", sk.path, sk.reason);
    }
    s
}
