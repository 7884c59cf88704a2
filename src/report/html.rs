//! `report.html`: one self-contained page (inline CSS, charts as inline SVG,
//! images as `data:` PNGs; no script, font, stylesheet or image fetched from
//! anywhere) rendered from [`Results`] and the gate's [`Verdict`] alone, so
//! `advscan report` rebuilds it byte for byte. Every string taken from
//! results.json is HTML-escaped here; the charts are drawn by `plot.rs`,
//! which escapes its own text. Nothing is recomputed beyond choosing what to
//! show (which run is the strongest, histogram bins).

// Rendered from results.json with its per-sample records digested (see super::digest).
use super::digest::Summary as Results;
use super::json::{Run, Status};
use super::plot::{self, LineChart, Reference, Series};
use crate::gate::Verdict;
use crate::scan::EpsUnit;
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

/// The unit every ε label is written in (`None`: no labels, or labels in several units).
fn label_unit(r: &Results) -> Option<EpsUnit> {
    let labels: Vec<&str> = if r.runs.is_empty() {
        r.settings.eps.iter().map(String::as_str).collect()
    } else {
        r.runs.iter().map(|run| run.eps_label.as_str()).collect()
    };
    let mut units = labels.iter().map(|l| crate::run::parse_eps(l).ok().map(|e| e.unit));
    let first = units.next()??;
    units.all(|u| u == Some(first)).then_some(first)
}

/// HU per model-scale unit (the window width in HU): the model config's window width, unless
/// each file's own window was used; else the width every sample's window shares. `None` when
/// no single width relates HU to the model scale.
pub fn hu_per_unit(r: &Results) -> Option<f64> {
    let config = r.model.config.as_ref().filter(|c| !c.window.use_file_voi).and_then(|c| c.window.width);
    config.or_else(|| r.samples.shared_window_width()).filter(|w| w.is_finite() && *w > 0.0)
}

/// `(factor, unit)` such that a model-scale ε × `factor` is in the unit the user wrote every ε
/// label in: HU (when [`hu_per_unit`] is known) or 8-bit grey levels. `None` keeps model scale.
pub fn user_eps_unit(r: &Results) -> Option<(f64, &'static str)> {
    match label_unit(r)? {
        EpsUnit::Hu => hu_per_unit(r).map(|w| (w, "HU")),
        EpsUnit::Gl => Some((255.0, "gl")),
        EpsUnit::Model => None,
    }
}

/// A model-scale ε in the user's unit (from [`user_eps_unit`]), e.g. `7.5HU` or `0.25gl`.
pub fn eps_in_unit(v: f64, (factor, unit): (f64, &str)) -> String {
    let x = v * factor;
    if unit == "gl" { format!("{x:.2}{unit}") } else { format!("{x:.1}{unit}") }
}

/// What the ε axis is measured in, for axis titles.
fn eps_axis_desc(r: &Results) -> String {
    let unit = match label_unit(r) {
        Some(EpsUnit::Hu) => "Hounsfield units",
        Some(EpsUnit::Gl) => "8-bit grey levels",
        Some(EpsUnit::Model) => "model-input scale",
        None => "as given",
    };
    format!("ε ({} norm, {unit})", r.settings.norm)
}

/// A class as the report prints it (HTML): its name from the model config when there is one,
/// else its index; the positive class is marked (+).
fn class_html(r: &Results, k: usize) -> String {
    let name = r.model.class_names.get(k).map(|n| escape(n)).unwrap_or_else(|| k.to_string());
    if r.model.positive_class == Some(k) {
        format!("{name} <span class=\"pos\" title=\"positive class\">(+)</span>")
    } else {
        name
    }
}

/// A JSON value of the model config for the method table; `null` is "default".
fn config_value<T: serde::Serialize>(v: &Option<T>) -> String {
    match v {
        Some(v) => format!("<code>{}</code>", escape(&serde_json::to_string(v).unwrap_or_default())),
        None => "<span class=\"muted\">default</span>".into(),
    }
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
.pos{color:var(--fail);font-weight:700;font-size:.85em}
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
            dashed: false,
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

/// Caption of the unrounded-vs-quantised flip-rate chart (drawn only when some run has quantised figures).
pub const QUANTISED_CAPTION: &str = "Flip rate vs ε, unrounded vs quantised";

/// Per attack, its flip rate (solid) followed by its quantised flip rate (dashed, same colour).
fn quantised_series(r: &Results, axis: &[(f32, String)]) -> Vec<Series> {
    let plain = series(r, axis, |run| Some(run.flip_rate));
    let rounded = series(r, axis, |run| run.flip_rate_quantized);
    let mut out = Vec::new();
    for s in plain {
        let q = rounded.iter().find(|q| q.name == s.name).map(|q| Series {
            name: format!("{} (quantised)", s.name.trim_end_matches(" (baseline)")),
            points: q.points.clone(),
            baseline: q.baseline,
            dashed: true,
        });
        out.push(s);
        out.extend(q);
    }
    out
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
         <tr><th>data</th><td><code>{}</code></td></tr>{}</table>\n</section>",
        e(&r.model.path),
        e(&r.model.sha256),
        e(&r.data.path),
        r.data.manifest_sha256.as_ref().map_or(String::new(), |m| format!(
            "<tr><th>data manifest sha256</th><td><code>{}</code> ({} file(s); <code>manifest.sha256</code>)</td></tr>",
            e(m),
            r.data.manifest_files
        ))
    );

    // 2. Robustness curve.
    let axis = eps_axis(r);
    let labels: Vec<String> = axis.iter().map(|(_, l)| l.clone()).collect();
    let x_desc = eps_axis_desc(r);
    let quantised = r.runs.iter().any(|run| run.flip_rate_quantized.is_some());
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
                legend_top: false,
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
                legend_top: false,
            }))
        );
    }
    let _ = writeln!(
        h,
        "<table><tr><th>attack</th><th>ε</th><th>robust accuracy</th><th>flip rate</th>{}<th>attack success</th><th>mean confidence drop</th></tr>",
        if quantised { "<th>robust accuracy (quantised)</th><th>flip rate (quantised)</th>" } else { "" }
    );
    for run in &r.runs {
        let q = if quantised {
            format!(
                "<td class=\"num\">{}</td><td class=\"num\">{}</td>",
                pct(run.robust_accuracy_quantized),
                pct(run.flip_rate_quantized)
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>{q}<td class=\"num\">{}</td><td class=\"num\">{:.3}</td></tr>",
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
                legend_top: false,
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
                legend_top: false,
            }))
        );
        if quantised {
            let pairs = quantised_series(r, &axis);
            let _ = write!(
                h,
                "{}",
                chart(plot::line_chart(&LineChart {
                    caption: QUANTISED_CAPTION,
                    x_desc: &x_desc,
                    y_desc: "flip rate",
                    x_labels: &labels,
                    series: &pairs,
                    reference: None,
                    y_range: (0.0, 1.0),
                    percent: true,
                    legend_top: true,
                }))
            );
        }
        let _ = writeln!(h, "</div>");
        let _ = writeln!(
            h,
            "<p class=\"muted\">Flip rate: share of samples whose prediction under attack differs from the clean prediction. \
             Confidence drop: mean over samples of the clean prediction's probability before minus after the attack.{}</p>",
            if quantised {
                " Quantised (dashed, square markers): the same adversarial images rounded to the values their file format \
                 can store (DICOM stored integers through the rescale slope and intercept; PNG 8- or 16-bit levels), as an \
                 attacker who must write a file would get them; solid lines are the unrounded images."
            } else {
                ""
            }
        );
    }
    let _ = writeln!(
        h,
        "<h3>Which class flips into which</h3>\n<p class=\"muted\">Rows: {} class; columns: prediction under the strongest attack run at each ε. \
         Diagonal cells (shaded) kept their class.{}</p>",
        if labelled { "true (labelled)" } else { "clean-predicted (no labels)" },
        if r.model.positive_class.is_some() { " (+) marks the positive class." } else { "" }
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
            let _ = write!(h, "<th>→ {}</th>", class_html(r, k));
        }
        let _ = writeln!(h, "<th>robust accuracy</th><th>flip rate</th></tr>");
        for c in &run.per_class {
            let _ = write!(h, "<tr><td>{}</td><td class=\"num\">{}</td>", class_html(r, c.class), c.n);
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
        let found: Vec<f64> = r.samples.min_eps_found.iter().map(|&v| v as f64).collect();
        let grey = r.settings.eps.iter().any(|l| l.contains("/255"));
        let unit = user_eps_unit(r);
        let tick = move |v: f64| match unit {
            Some(u) => eps_in_unit(v, u),
            None if grey => format!("{:.1}/255", v * 255.0),
            None => format!("{v:.4}"),
        };
        let hist_desc = match unit {
            Some((_, "HU")) => "minimal ε (Hounsfield units)",
            Some(_) => "minimal ε (8-bit grey levels)",
            None => "minimal ε (model-input scale)",
        };
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
            chart(plot::histogram("Minimal flipping ε", hist_desc, &found, m.eps_max as f64, 12, &tick))
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
                class_html(r, g.clean_pred),
                100.0 * g.clean_confidence,
                if flipped { " class=\"flip\"" } else { "" },
                class_html(r, g.adv_pred),
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
    row(
        &mut h,
        "model config",
        match (&r.model.config_path, &r.model.config) {
            (Some(p), _) => format!("<code>{}</code>", e(p)),
            (None, Some(_)) => "defaults (no model config file)".into(),
            (None, None) => "not recorded (results written before model configs)".into(),
        },
    );
    if !r.model.class_names.is_empty() {
        let names: Vec<String> =
            (0..r.model.class_names.len()).map(|k| format!("{k} = {}", class_html(r, k))).collect();
        row(&mut h, "classes", names.join(", "));
    }
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
            .map(|t| format!("class {}", class_html(r, t)))
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
    method_inputs(&mut h, r);
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

/// The method section's model config, preprocessing and input-format tables. Only
/// aggregate facts about the scans are shown (format, transfer syntax, photometric
/// interpretation, bits, counts): nothing that identifies a patient.
fn method_inputs(h: &mut String, r: &Results) {
    let e = escape;
    if let Some(c) = &r.model.config {
        let _ = writeln!(
            h,
            "<h3>Model config</h3>\n<p class=\"muted\">{} as resolved; <i>default</i>: the key was not set, \
             and the model's own value (size, channels) or the documented default applies.</p>\n<table>",
            match &r.model.config_path {
                Some(p) => format!("<code>{}</code>", e(p)),
                None => "No model config file: the defaults".into(),
            }
        );
        let row = |h: &mut String, k: &str, v: String| {
            let _ = writeln!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
        };
        row(h, "input.size", config_value(&c.input.size));
        row(h, "input.resize", config_value(&c.input.resize));
        row(h, "input.channels", config_value(&c.input.channels));
        row(h, "window.center", config_value(&c.window.center));
        row(h, "window.width", config_value(&c.window.width));
        row(h, "window.use_file_voi", format!("<code>{}</code>", c.window.use_file_voi));
        row(h, "png.scale", config_value(&c.png.scale));
        row(h, "normalize.mean", config_value(&c.normalize.mean));
        row(h, "normalize.std", config_value(&c.normalize.std));
        row(h, "classes.names", config_value(&c.classes.names));
        row(h, "classes.positive", config_value(&c.classes.positive));
        let _ = writeln!(h, "</table>");
    }
    if !r.data.preprocessing.is_empty() {
        let _ = writeln!(
            h,
            "<h3>Preprocessing</h3>\n<p class=\"muted\">Each distinct path from scan to model input, and how many samples took it.</p>\n\
             <table><tr><th>samples</th><th>steps</th></tr>"
        );
        for p in &r.data.preprocessing {
            let steps: Vec<String> = p.steps.iter().map(|s| e(s)).collect();
            let _ = writeln!(h, "<tr><td class=\"num\">{}</td><td>{}</td></tr>", p.samples, steps.join(" → "));
        }
        let _ = writeln!(h, "</table>");
    }
    let formats = &r.samples.formats;
    if !formats.is_empty() {
        let _ = writeln!(
            h,
            "<h3>Input formats</h3>\n<table><tr><th>format</th><th>transfer syntax</th><th>photometric</th><th>bits</th><th>samples</th></tr>"
        );
        for ((format, ts, photometric, bits), n) in formats {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{bits}</td><td class=\"num\">{n}</td></tr>",
                e(format),
                if ts.is_empty() { "—".into() } else { format!("<code>{}</code>", e(ts)) },
                e(photometric)
            );
        }
        let _ = writeln!(h, "</table>");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gate::tests::results;
    use crate::report::json::{GalleryItem, Results, SkippedRecord};

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
        let h = render(&r.summary(), None);
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
        let h = render(&r.summary(), None);
        assert!(h.contains("this chart shows the flip rate instead"));
        assert!(h.contains("Flip rate vs ε (unlabelled data)"));
    }

    /// A CT set-up: ε in HU, the model config's 1500 HU window, one scan record per sample.
    pub(crate) fn hu_results() -> Results {
        let mut r = results();
        for run in &mut r.runs {
            run.eps_label = format!("{}HU", (run.eps * 255.0).round() as i32 * 5);
            run.eps = (run.eps * 255.0).round() * 5.0 / 1500.0;
        }
        r.settings.eps = vec!["10HU".into(), "20HU".into()];
        let mut c = crate::config::ModelConfig::default();
        c.window.center = Some(-600.0);
        c.window.width = Some(1500.0);
        r.model.config = Some(c);
        r.model.config_path = Some("models/ct.model.toml".into());
        if let Some(m) = &mut r.min_eps {
            m.median = Some(15.0 / 1500.0);
            m.eps_max = 20.0 / 1500.0;
        }
        r
    }

    #[test]
    fn quantised_chart_only_when_quantised_figures_exist() {
        let r = results();
        assert!(r.runs.iter().all(|run| run.flip_rate_quantized.is_some()));
        let h = render(&r.summary(), None);
        assert!(h.contains(QUANTISED_CAPTION), "chart missing");
        assert!(h.contains("pgd (quantised)") && h.contains("flip rate (quantised)"));
        let with = h.matches("<svg").count();

        let mut r = results();
        for run in &mut r.runs {
            run.flip_rate_quantized = None;
            run.robust_accuracy_quantized = None;
        }
        let h = render(&r.summary(), None);
        assert!(!h.contains(QUANTISED_CAPTION) && !h.contains("(quantised)"));
        assert_eq!(h.matches("<svg").count(), with - 1);
    }

    #[test]
    fn quantised_series_pair_each_attack_with_a_dashed_companion() {
        let mut r = results();
        r.runs[3].flip_rate_quantized = None; // pgd 4/255 has no quantised figure
        let axis = eps_axis(&r.summary());
        let s = quantised_series(&r.summary(), &axis);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["fgsm", "fgsm (quantised)", "pgd", "pgd (quantised)"]);
        assert_eq!(s.iter().map(|s| s.dashed).collect::<Vec<_>>(), [false, true, false, true]);
        assert_eq!(s[3].points, [(0, 0.2)]);
    }

    #[test]
    fn class_names_replace_indices_and_the_positive_class_is_marked() {
        use crate::report::json::ClassRecord;
        let mut r = results();
        r.model.class_names = vec!["normal".into(), "nod<ule>".into()];
        r.model.positive_class = Some(1);
        r.settings.targeted = Some(1);
        for run in &mut r.runs {
            run.per_class = vec![
                ClassRecord { class: 0, n: 5, robust_accuracy: Some(0.8), flip_rate: 0.2, predicted_as: vec![4, 1] },
                ClassRecord { class: 1, n: 5, robust_accuracy: Some(0.6), flip_rate: 0.4, predicted_as: vec![2, 3] },
            ];
        }
        r.gallery.push(GalleryItem {
            id: "s1".into(),
            index: 0,
            attack: "pgd".into(),
            norm: "linf".into(),
            eps_label: "4/255".into(),
            clean_pred: 1,
            clean_confidence: 0.9,
            adv_pred: 0,
            adv_confidence: 0.8,
            drop: 0.1,
            scale: 1.0,
            clean_png: "AAAA".into(),
            adversarial_png: "AAAA".into(),
            perturbation_png: "AAAA".into(),
        });
        let h = render(&r.summary(), None);
        let pos = "nod&lt;ule&gt; <span class=\"pos\" title=\"positive class\">(+)</span>";
        assert!(h.contains("<th>→ normal</th>") && h.contains(&format!("<th>→ {pos}</th>")), "confusion header");
        assert!(h.contains("<tr><td>normal</td>") && h.contains(&format!("<tr><td>{pos}</td>")), "confusion rows");
        assert!(h.contains(&format!("before: class <b>{pos}</b>")), "gallery before");
        assert!(h.contains("after: class <b class=\"flip\">normal</b>"), "gallery after");
        assert!(h.contains(&format!("0 = normal, 1 = {pos}")) && h.contains(&format!("class {pos}")), "method");
        assert!(!h.contains("<th>→ 0</th>") && !h.contains("nod<ule>"));

        // Without names the indices stay.
        r.model.class_names.clear();
        r.model.positive_class = None;
        let h = render(&r.summary(), None);
        assert!(h.contains("<th>→ 0</th>") && h.contains("<th>→ 1</th>") && h.contains("before: class <b>1</b>"));
    }

    #[test]
    fn eps_in_the_users_unit() {
        let r = hu_results();
        assert_eq!(user_eps_unit(&r.summary()), Some((1500.0, "HU")));
        let h = render(&r.summary(), None);
        assert!(h.contains("ε (linf norm, Hounsfield units)") && h.contains("minimal ε (Hounsfield units)"));
        assert!(h.contains("median 15.0HU") && h.contains("flipped by ε ≤ 20.0HU"));
        // Each file's own window: no single width unless every sample shares one.
        let mut r2 = hu_results();
        r2.model.config.as_mut().unwrap().window.use_file_voi = true;
        assert_eq!(user_eps_unit(&r2.summary()), None);
        // Mixed or model-scale labels keep model scale; gl is always known.
        let mut r3 = hu_results();
        r3.runs[0].eps_label = "2/255".into();
        assert_eq!(user_eps_unit(&r3.summary()), None);
        assert_eq!(user_eps_unit(&results().summary()), None);
        let mut r4 = results();
        for run in &mut r4.runs {
            run.eps_label = run.eps_label.replace("/255", "gl");
        }
        assert_eq!(user_eps_unit(&r4.summary()), Some((255.0, "gl")));
        assert_eq!(eps_in_unit(1.0 / 1020.0, (255.0, "gl")), "0.25gl");
    }

    #[test]
    fn method_shows_config_preprocessing_and_input_formats() {
        use crate::report::json::{PreprocessRecord, SampleRecord};
        use crate::scan::ScanRecord;
        let mut r = hu_results();
        r.data.preprocessing = vec![PreprocessRecord {
            samples: 3,
            steps: vec!["window <a>".into(), "resize 128×128 → 64×64".into()],
        }];
        let scan = |format: &str, ts: Option<&str>| ScanRecord {
            format: format.into(),
            transfer_syntax: ts.map(Into::into),
            photometric: "MONOCHROME2".into(),
            bits: 16,
            size: [1, 8, 8],
            units: "HU".into(),
            rescale: Some([1.0, -1024.0]),
            window: Some(([-600.0, 1500.0], "config".into())),
            frame: None,
        };
        for (i, sc) in [scan("dicom", Some("RLE Lossless")), scan("dicom", Some("RLE Lossless")), scan("png", None)]
            .into_iter()
            .enumerate()
        {
            r.samples.push(SampleRecord {
                id: format!("s{i}"),
                index: i,
                label: Some(0),
                clean_pred: 0,
                clean_confidence: 0.9,
                outcomes: vec![],
                min_eps: None,
                check_data: Default::default(),
                scan: Some(sc),
            });
        }
        let h = render(&r.summary(), None);
        let method = &h[h.find("<section id=\"method\">").unwrap()..];
        assert!(method.contains("<tr><th>model config</th><td><code>models/ct.model.toml</code></td></tr>"));
        assert!(method.contains("<tr><th>window.width</th><td><code>1500.0</code></td></tr>"));
        assert!(method.contains("<tr><th>input.size</th><td><span class=\"muted\">default</span></td></tr>"));
        assert!(method.contains("<td class=\"num\">3</td><td>window &lt;a&gt; → resize 128×128 → 64×64</td>"));
        assert!(method.contains("<tr><td>dicom</td><td><code>RLE Lossless</code></td><td>MONOCHROME2</td><td class=\"num\">16</td><td class=\"num\">2</td></tr>"));
        assert!(method.contains(
            "<tr><td>png</td><td>—</td><td>MONOCHROME2</td><td class=\"num\">16</td><td class=\"num\">1</td></tr>"
        ));
        // The window every sample shares stands in for a config without one.
        r.model.config = None;
        r.model.config_path = None;
        assert_eq!(user_eps_unit(&r.summary()), Some((1500.0, "HU")));
        let h = render(&r.summary(), None);
        assert!(h.contains("not recorded") && !h.contains("<h3>Model config</h3>"));
    }
}
