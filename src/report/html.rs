//! `report.html`: one self-contained page (inline CSS, charts as inline SVG,
//! images as `data:` PNGs; no script, font, stylesheet or image fetched from
//! anywhere) rendered from [`Results`] and the gate's [`Verdict`] alone, so
//! `advscan report` rebuilds it byte for byte. Every string taken from
//! results.json is HTML-escaped here; the charts are drawn by `plot.rs`,
//! which escapes its own text. Nothing is recomputed beyond choosing what to
//! show (which run is the strongest, histogram bins).

use super::json::{Results, Run, Status};
use super::plot::{self, LineChart, Reference, Series};
use crate::gate::Verdict;
use std::fmt::Write as _;

/// The section headings, in page order (tests and the browser check use them).
pub const SECTIONS: [&str; 6] = [
    "Verdict and headline",
    "Robustness curve",
    "Flip rate, confusion and confidence",
    "Most fragile samples",
    "Trust checks",
    "Method",
];

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// A base64 string goes into a `src` attribute: keep only base64 characters,
/// so an edited results.json cannot break out of the attribute.
fn base64_attr(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')).collect()
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", 100.0 * v)).unwrap_or_else(|| "—".into())
}

fn badge(s: Status) -> &'static str {
    match s {
        Status::Pass => "<span class=\"badge pass\">pass</span>",
        Status::Warn => "<span class=\"badge warn\">warn</span>",
        Status::Fail => "<span class=\"badge fail\">fail</span>",
    }
}

const CSS: &str = "
:root{--fg:#1d232a;--muted:#5b6570;--line:#d9dee3;--pass:#1a7f37;--warn:#9a6700;--fail:#cf222e}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:var(--fg);margin:0 auto;max-width:1100px;padding:24px 32px;line-height:1.45}
h1{font-size:1.6em;margin:0 0 .2em}
h2{font-size:1.25em;border-bottom:2px solid var(--line);padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin:1.2em 0 .4em}
.muted{color:var(--muted)}
code{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:.92em;word-break:break-all}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.93em}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f6f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.diag{font-weight:600;background:#eef6ee}
.headline{display:flex;flex-wrap:wrap;gap:12px;margin:1em 0}
.stat{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:150px}
.stat b{display:block;font-size:1.4em}
.verdict{font-size:1.2em;font-weight:700;padding:8px 14px;border-radius:6px;display:inline-block}
.verdict.pass{background:#dafbe1;color:var(--pass)}
.verdict.fail{background:#ffebe9;color:var(--fail)}
.badge{display:inline-block;border-radius:10px;padding:0 9px;font-size:.85em;font-weight:700;color:#fff}
.badge.pass{background:var(--pass)}.badge.warn{background:var(--warn)}.badge.fail{background:var(--fail)}
.chart svg{max-width:100%;height:auto;border:1px solid var(--line)}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px}
.gallery{display:grid;grid-template-columns:1fr;gap:14px}
.item{border:1px solid var(--line);border-radius:6px;padding:10px;break-inside:avoid;page-break-inside:avoid}
.item .imgs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0;text-align:center}
figure img{width:192px;height:192px;object-fit:contain;image-rendering:pixelated;image-rendering:crisp-edges;background:#000;display:block}
figcaption{font-size:.85em;color:var(--muted)}
.pred{font-size:.93em;min-width:220px}
.flip{color:var(--fail);font-weight:700}
@media print{body{max-width:none;padding:0;font-size:10pt}h2{break-after:avoid;page-break-after:avoid}
.chart,table,.item{break-inside:avoid;page-break-inside:avoid}.charts{grid-template-columns:1fr 1fr}
figure img{width:128px;height:128px}a{color:inherit;text-decoration:none}}
";

/// ε labels of every run, unique, in increasing ε.
fn eps_axis(r: &Results) -> Vec<(f32, String)> {
    let mut v: Vec<(f32, String)> = Vec::new();
    for run in &r.runs {
        if !v.iter().any(|(_, l)| *l == run.eps_label) {
            v.push((run.eps, run.eps_label.clone()));
        }
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// Attack names in the order run.
fn attacks(r: &Results) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for run in &r.runs {
        if !v.contains(&run.attack) {
            v.push(run.attack.clone());
        }
    }
    v
}

fn series(r: &Results, axis: &[(f32, String)], value: impl Fn(&Run) -> Option<f64>) -> Vec<Series> {
    attacks(r)
        .into_iter()
        .map(|a| Series {
            name: if a == "noise" { "noise (baseline)".into() } else { a.clone() },
            baseline: a == "noise",
            points: r
                .runs
                .iter()
                .filter(|run| run.attack == a)
                .filter_map(|run| {
                    let i = axis.iter().position(|(_, l)| *l == run.eps_label)?;
                    Some((i, value(run)?))
                })
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

fn chart(svg: String) -> String {
    format!("<div class=\"chart\">{svg}</div>\n")
}

pub fn render(r: &Results, verdict: Option<&Verdict>) -> String {
    let mut h = String::new();
    let e = escape;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>advscan report: {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        e(&r.model.path)
    );
    let _ = writeln!(h, "<h1>advscan robustness report</h1>");
    let _ = writeln!(
        h,
        "<p class=\"muted\">{} {} · results schema v{}</p>",
        e(&r.tool.name),
        e(&r.tool.version),
        r.schema_version
    );

    // 1. Verdict and headline.
    let _ = writeln!(h, "<section id=\"verdict\">\n<h2>1. {}</h2>", SECTIONS[0]);
    match verdict {
        Some(v) => {
            let failed = v.failures().count();
            let _ = if failed == 0 {
                writeln!(h, "<p class=\"verdict pass\">Gate passed: all {} requirement(s) hold</p>", v.outcomes.len())
            } else {
                writeln!(
                    h,
                    "<p class=\"verdict fail\">Gate FAILED: {failed} of {} requirement(s) fail</p>",
                    v.outcomes.len()
                )
            };
            let _ = writeln!(h, "<table><tr><th>requirement</th><th>measured</th><th>limit</th><th>result</th></tr>");
            for o in &v.outcomes {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                    e(&o.requirement),
                    e(&o.measured),
                    e(&o.limit),
                    badge(if o.passed { Status::Pass } else { Status::Fail })
                );
            }
            let _ = writeln!(h, "</table>");
        }
        None => {
            let _ = writeln!(
                h,
                "<p class=\"muted\">No gate policy was applied (run <code>advscan gate --policy …</code> for a verdict).</p>"
            );
        }
    }
    let worst =
        r.runs.iter().filter_map(|run| run.robust_accuracy.map(|a| (a, run))).min_by(|a, b| a.0.total_cmp(&b.0));
    let max_flip = r.runs.iter().max_by(|a, b| a.flip_rate.total_cmp(&b.flip_rate));
    let _ = writeln!(h, "<div class=\"headline\">");
    let _ = writeln!(h, "<div class=\"stat\">clean accuracy<b>{}</b></div>", pct(r.clean.accuracy));
    if let Some((a, run)) = worst {
        let _ = writeln!(
            h,
            "<div class=\"stat\">lowest robust accuracy<b>{}</b>{} ε={}</div>",
            pct(Some(a)),
            e(&run.attack),
            e(&run.eps_label)
        );
    }
    if let Some(run) = max_flip {
        let _ = writeln!(
            h,
            "<div class=\"stat\">highest flip rate<b>{}</b>{} ε={}</div>",
            pct(Some(run.flip_rate)),
            e(&run.attack),
            e(&run.eps_label)
        );
    }
    let _ = writeln!(
        h,
        "<div class=\"stat\">samples<b>{}</b>{} labelled, {} skipped</div>",
        r.data.samples,
        r.data.labelled,
        r.data.skipped.len()
    );
    let _ = writeln!(h, "</div>");
    let _ = writeln!(
        h,
        "<table><tr><th>model</th><td><code>{}</code></td></tr><tr><th>sha256</th><td><code>{}</code></td></tr>\
         <tr><th>data</th><td><code>{}</code></td></tr></table>\n</section>",
        e(&r.model.path),
        e(&r.model.sha256),
        e(&r.data.path)
    );

    // 2. Robustness curve.
    let axis = eps_axis(r);
    let labels: Vec<String> = axis.iter().map(|(_, l)| l.clone()).collect();
    let x_desc = format!("ε ({} norm, as given)", r.settings.norm);
    let labelled = r.clean.accuracy.is_some();
    let has_noise = r.runs.iter().any(|run| run.attack == "noise");
    let _ = writeln!(h, "<section id=\"robustness\">\n<h2>2. {}</h2>", SECTIONS[1]);
    if r.runs.is_empty() {
        let _ = writeln!(h, "<p>No attack was run.</p>");
    } else if labelled {
        let _ = writeln!(
            h,
            "<p>Share of labelled samples still classified correctly under each attack, by ε (higher is more robust). \
             The flat line is the clean accuracy{}.</p>",
            if has_noise {
                "; the grey line is random noise of the same size, a baseline any model should withstand"
            } else {
                "; no noise baseline was run"
            }
        );
        let s = series(r, &axis, |run| run.robust_accuracy);
        let _ = write!(
            h,
            "{}",
            chart(plot::line_chart(&LineChart {
                caption: "Robust accuracy vs ε",
                x_desc: &x_desc,
                y_desc: "robust accuracy",
                x_labels: &labels,
                series: &s,
                reference: r.clean.accuracy.map(|a| Reference { name: "clean accuracy".into(), value: a }),
                y_range: (0.0, 1.0),
                percent: true,
            }))
        );
    } else {
        let _ = writeln!(
            h,
            "<p><b>No sample is labelled, so robust accuracy cannot be measured: this chart shows the flip rate instead</b> \
             (share of samples whose prediction changes under attack; lower is more robust){}.</p>",
            if has_noise { "; the grey line is the random-noise baseline" } else { "; no noise baseline was run" }
        );
        let s = series(r, &axis, |run| Some(run.flip_rate));
        let _ = write!(
            h,
            "{}",
            chart(plot::line_chart(&LineChart {
                caption: "Flip rate vs ε (unlabelled data)",
                x_desc: &x_desc,
                y_desc: "flip rate",
                x_labels: &labels,
                series: &s,
                reference: None,
                y_range: (0.0, 1.0),
                percent: true,
            }))
        );
    }
    let _ = writeln!(
        h,
        "<table><tr><th>attack</th><th>ε</th><th>robust accuracy</th><th>flip rate</th><th>attack success</th><th>mean confidence drop</th></tr>"
    );
    for run in &r.runs {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.3}</td></tr>",
            e(&run.attack),
            e(&run.eps_label),
            pct(run.robust_accuracy),
            pct(Some(run.flip_rate)),
            pct(run.attack_success_rate),
            run.mean_confidence_drop
        );
    }
    let _ = writeln!(h, "</table>\n</section>");

    // 3. Flip rate, confusion, minimal ε, confidence drop.
    let _ = writeln!(h, "<section id=\"details\">\n<h2>3. {}</h2>", SECTIONS[2]);
    if !r.runs.is_empty() {
        let flips = series(r, &axis, |run| Some(run.flip_rate));
        let drops = series(r, &axis, |run| Some(run.mean_confidence_drop));
        let lo = r.runs.iter().map(|run| run.mean_confidence_drop).fold(0.0, f64::min);
        let hi = r.runs.iter().map(|run| run.mean_confidence_drop).fold(0.1, f64::max);
        let _ = writeln!(h, "<div class=\"charts\">");
        let _ = write!(
            h,
            "{}{}",
            chart(plot::line_chart(&LineChart {
                caption: "Flip rate vs ε",
                x_desc: &x_desc,
                y_desc: "flip rate",
                x_labels: &labels,
                series: &flips,
                reference: None,
                y_range: (0.0, 1.0),
                percent: true,
            })),
            chart(plot::line_chart(&LineChart {
                caption: "Mean confidence drop vs ε",
                x_desc: &x_desc,
                y_desc: "drop in clean-class probability",
                x_labels: &labels,
                series: &drops,
                reference: None,
                y_range: (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)),
                percent: false,
            }))
        );
        let _ = writeln!(h, "</div>");
        let _ = writeln!(
            h,
            "<p class=\"muted\">Flip rate: share of samples whose prediction under attack differs from the clean prediction. \
             Confidence drop: mean over samples of the clean prediction's probability before minus after the attack.</p>"
        );
    }
    let _ = writeln!(
        h,
        "<h3>Which class flips into which</h3>\n<p class=\"muted\">Rows: {} class; columns: prediction under the strongest attack run at each ε. \
         Diagonal cells (shaded) kept their class.</p>",
        if labelled { "true (labelled)" } else { "clean-predicted (no labels)" }
    );
    for (_, label) in &axis {
        let Some(run) =
            r.runs.iter().filter(|run| run.eps_label == *label).min_by_key(|run| super::attack_rank(&run.attack))
        else {
            continue;
        };
        let classes = run.per_class.iter().map(|c| c.predicted_as.len()).max().unwrap_or(0);
        let _ =
            writeln!(h, "<table><caption style=\"text-align:left\"><b>{} ε={}</b></caption>", e(&run.attack), e(label));
        let _ = write!(h, "<tr><th>class</th><th>n</th>");
        for k in 0..classes {
            let _ = write!(h, "<th>→ {k}</th>");
        }
        let _ = writeln!(h, "<th>robust accuracy</th><th>flip rate</th></tr>");
        for c in &run.per_class {
            let _ = write!(h, "<tr><td>{}</td><td class=\"num\">{}</td>", c.class, c.n);
            for k in 0..classes {
                let n = c.predicted_as.get(k).copied().unwrap_or(0);
                let _ = write!(h, "<td class=\"num{}\">{n}</td>", if k == c.class { " diag" } else { "" });
            }
            let _ = writeln!(
                h,
                "<td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                pct(c.robust_accuracy),
                pct(Some(c.flip_rate))
            );
        }
        let _ = writeln!(h, "</table>");
    }
    if let Some(m) = &r.min_eps {
        let found: Vec<f64> = r.samples.iter().filter_map(|s| s.min_eps.flatten()).map(|v| v as f64).collect();
        let grey = r.settings.eps.iter().any(|l| l.contains("/255"));
        let tick = move |v: f64| if grey { format!("{:.1}/255", v * 255.0) } else { format!("{v:.4}") };
        let f = |v: Option<f32>| v.map(|v| tick(v as f64)).unwrap_or_else(|| format!("> {}", tick(m.eps_max as f64)));
        let _ = writeln!(
            h,
            "<h3>Minimal flipping ε</h3>\n<p>Smallest ε ({} {}, bisection to {}) that flips each sample: median {}, quartiles {} – {}. \
             {} of {} sample(s) flipped by ε ≤ {}; the others are not shown.</p>",
            e(&m.attack),
            e(&m.norm),
            tick(m.precision as f64),
            f(m.median),
            f(m.q1),
            f(m.q3),
            m.flipped,
            r.data.samples,
            tick(m.eps_max as f64)
        );
        let _ = write!(
            h,
            "{}",
            chart(plot::histogram(
                "Minimal flipping ε",
                "minimal ε (model-input scale)",
                &found,
                m.eps_max as f64,
                12,
                &tick
            ))
        );
    }
    let _ = writeln!(h, "</section>");

    // 4. Gallery.
    let _ = writeln!(h, "<section id=\"gallery\">\n<h2>4. {}</h2>", SECTIONS[3]);
    if r.gallery.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"muted\">No gallery in these results (run <code>advscan attack --gallery N</code> with N &gt; 0).</p>"
        );
    } else {
        let g0 = &r.gallery[0];
        let _ = writeln!(
            h,
            "<p>The {} most fragile sample(s) ({}) under {} ε={}, shown as the model sees them (after its preprocessing). \
             The perturbation is amplified: mid-grey is no change, black/white is the largest change (×scale stated per image).</p>",
            r.gallery.len(),
            if r.min_eps.is_some() { "smallest minimal flipping ε first" } else { "largest confidence drop first" },
            e(&g0.attack),
            e(&g0.eps_label)
        );
        let _ = writeln!(h, "<div class=\"gallery\">");
        for g in &r.gallery {
            let img = |b64: &str, alt: &str, cap: &str| {
                format!(
                    "<figure><img src=\"data:image/png;base64,{}\" alt=\"{alt}\"><figcaption>{cap}</figcaption></figure>",
                    base64_attr(b64)
                )
            };
            let flipped = g.adv_pred != g.clean_pred;
            let _ = writeln!(
                h,
                "<div class=\"item\"><h3><code>{}</code></h3><div class=\"imgs\">{}{}{}<div class=\"pred\">\
                 <p>before: class <b>{}</b> ({:.1}%)<br>after: class <b{}>{}</b> ({:.1}%){}</p>\
                 <p class=\"muted\">{} {} ε={}; perturbation ×{:.1}</p></div></div></div>",
                e(&g.id),
                img(&g.clean_png, "original", "original"),
                img(&g.adversarial_png, "adversarial", "adversarial"),
                img(&g.perturbation_png, "perturbation", &format!("perturbation ×{:.1}", g.scale)),
                g.clean_pred,
                100.0 * g.clean_confidence,
                if flipped { " class=\"flip\"" } else { "" },
                g.adv_pred,
                100.0 * g.adv_confidence,
                if flipped { " — <span class=\"flip\">flipped</span>" } else { " — unchanged" },
                e(&g.attack),
                e(&g.norm),
                e(&g.eps_label),
                g.scale
            );
        }
        let _ = writeln!(h, "</div>");
    }
    let _ = writeln!(h, "</section>");

    // 5. Trust checks.
    let _ = writeln!(
        h,
        "<section id=\"checks\">\n<h2>5. {}</h2>\n<p class=\"muted\">Whether the measurement itself can be trusted \
         (deterministic model, working gradients, sane ε behaviour). A failed check means the figures above may overstate robustness.</p>",
        SECTIONS[4]
    );
    let _ = writeln!(h, "<table><tr><th>check</th><th>status</th><th>detail</th></tr>");
    for c in &r.checks {
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            e(&c.name),
            badge(c.status),
            e(&c.detail)
        );
    }
    let _ = writeln!(h, "</table>\n</section>");

    // 6. Method.
    let s = &r.settings;
    let _ = writeln!(h, "<section id=\"method\">\n<h2>6. {}</h2>", SECTIONS[5]);
    let row = |h: &mut String, k: &str, v: String| {
        let _ = writeln!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    let _ = writeln!(h, "<table>");
    row(&mut h, "tool", format!("{} {}", e(&r.tool.name), e(&r.tool.version)));
    row(
        &mut h,
        "model input",
        format!(
            "<code>{}</code> {} {}",
            e(&r.model.input.name),
            e(&r.model.input.elem_type),
            e(&serde_json::to_string(&r.model.input.shape).unwrap_or_default())
        ),
    );
    row(
        &mut h,
        "model output",
        format!(
            "<code>{}</code> {} {}",
            e(&r.model.output.name),
            e(&r.model.output.elem_type),
            e(&serde_json::to_string(&r.model.output.shape).unwrap_or_default())
        ),
    );
    row(
        &mut h,
        "logits",
        format!(
            "<code>{}</code>{}",
            e(&r.model.logits),
            if r.model.softmax_stripped { " (final softmax stripped: the loss is taken on logits)" } else { "" }
        ),
    );
    row(
        &mut h,
        "labels",
        r.data
            .labels
            .as_deref()
            .map(|l| format!("<code>{}</code>", e(l)))
            .unwrap_or_else(|| "from class folders, or none".into()),
    );
    row(&mut h, "attacks", e(&s.attacks.join(", ")));
    row(&mut h, "ε", e(&s.eps.join(", ")));
    row(&mut h, "norm", e(&s.norm));
    row(&mut h, "steps", s.steps.map(|v| v.to_string()).unwrap_or_else(|| "each attack's default".into()));
    row(&mut h, "step size", e(&s.step_size));
    row(&mut h, "restarts", s.restarts.to_string());
    row(&mut h, "random start", s.random_start.to_string());
    row(
        &mut h,
        "targeted",
        s.targeted
            .map(|t| format!("class {t}"))
            .unwrap_or_else(|| "no (away from the label, or the clean prediction)".into()),
    );
    row(&mut h, "minimal ε", s.min_eps.to_string());
    row(&mut h, "seed", s.seed.to_string());
    row(&mut h, "threads", s.threads.to_string());
    row(&mut h, "batch size", s.batch_size.to_string());
    row(
        &mut h,
        "timing",
        format!(
            "{:.2} s, {} forward and {} gradient evaluations, {:.1} images/s",
            r.timing.seconds, r.timing.forward_evals, r.timing.gradient_evals, r.timing.images_per_second
        ),
    );
    let _ = writeln!(h, "</table>");
    let _ = writeln!(
        h,
        "<h3>Runs</h3>\n<table><tr><th>attack</th><th>norm</th><th>ε</th><th>ε (model scale)</th><th>steps</th><th>step size</th>\
         <th>restarts</th><th>random start</th><th>loss</th><th>seconds</th></tr>"
    );
    for run in &r.runs {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.6}</td><td class=\"num\">{}</td><td class=\"num\">{:.6}</td>\
             <td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.2}</td></tr>",
            e(&run.attack),
            e(&run.norm),
            e(&run.eps_label),
            run.eps,
            run.steps,
            run.step_size,
            run.restarts,
            run.random_start,
            e(&run.loss),
            run.seconds
        );
    }
    let _ = writeln!(h, "</table>");
    if !r.data.notes.is_empty() {
        let _ = writeln!(h, "<h3>Notes</h3>\n<ul>");
        for n in &r.data.notes {
            let _ = writeln!(h, "<li>{}</li>", e(n));
        }
        let _ = writeln!(h, "</ul>");
    }
    let _ = writeln!(h, "<h3>Skipped files</h3>");
    if r.data.skipped.is_empty() {
        let _ = writeln!(h, "<p>None: every input file was evaluated.</p>");
    } else {
        let _ = writeln!(h, "<table><tr><th>file</th><th>reason</th></tr>");
        for sk in &r.data.skipped {
            let _ = writeln!(h, "<tr><td><code>{}</code></td><td>{}</td></tr>", e(&sk.path), e(&sk.reason));
        }
        let _ = writeln!(h, "</table>");
    }
    let _ = writeln!(h, "</section>\n</body>\n</html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::tests::results;
    use crate::report::json::{GalleryItem, SkippedRecord};

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(escape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
        assert_eq!(base64_attr("iVBOR\"><script>=="), "iVBORscript==");
    }

    #[test]
    fn every_section_in_order_and_strings_escaped() {
        let mut r = results();
        r.data.skipped.push(SkippedRecord { path: "a<b>.dcm".into(), reason: "bad & \"odd\"".into() });
        r.checks[0].detail = "<script>alert(1)</script>".into();
        r.gallery.push(GalleryItem {
            id: "pat<1>".into(),
            index: 0,
            attack: "pgd".into(),
            norm: "linf".into(),
            eps_label: "4/255".into(),
            clean_pred: 0,
            clean_confidence: 0.9,
            adv_pred: 1,
            adv_confidence: 0.8,
            drop: 0.1,
            scale: 12.5,
            clean_png: "AAAA".into(),
            adversarial_png: "AAAA".into(),
            perturbation_png: "AAAA".into(),
        });
        let h = render(&r, None);
        let mut at = 0;
        for s in SECTIONS {
            let p = h[at..].find(&format!("{s}</h2>")).unwrap_or_else(|| panic!("missing or out of order: {s}"));
            at += p;
        }
        assert!(!h.contains("<script>") && h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(h.contains("a&lt;b&gt;.dcm") && h.contains("bad &amp; &quot;odd&quot;") && h.contains("pat&lt;1&gt;"));
        assert!(h.contains("data:image/png;base64,AAAA") && h.contains("perturbation ×12.5"));
        assert!(h.matches("<svg").count() >= 4, "robustness, flip, drop, min-ε charts");
        // Nothing fetched from elsewhere.
        assert!(!h.contains("src=\"http") && !h.contains("href=") && !h.contains("url(") && !h.contains("<link"));
    }

    #[test]
    fn unlabelled_results_plot_flip_rate_and_say_so() {
        let mut r = results();
        r.clean.accuracy = None;
        for run in &mut r.runs {
            run.robust_accuracy = None;
        }
        let h = render(&r, None);
        assert!(h.contains("this chart shows the flip rate instead"));
        assert!(h.contains("Flip rate vs ε (unlabelled data)"));
    }
}
