//! The robustness gate: a TOML policy plus a `results.json` (and optionally a
//! baseline `results.json`) → a [`Verdict`] with one outcome per requirement.
//! It is a pure function of its inputs: it reads no file except the policy in
//! [`Policy::from_file`], recomputes nothing (every figure comes from
//! [`Results`]) and does not decide exit codes or write reports — the binary
//! and `report::{markdown, junit}` do. A requirement that cannot be evaluated
//! (a run that was not done, an ambiguous match, accuracy on unlabelled data,
//! a baseline requirement without a baseline) is a [`GateError`], never a pass.
//!
//! Policy format: any number of `[[require]]` tables, each with exactly one
//! kind key — `min_robust_accuracy`, `max_flip_rate` (both with `attack`,
//! `eps`, optional `norm`, optional `quantized = true` to gate on the figures
//! after rounding adversarial images to what their files can store),
//! `min_median_min_eps`, `no_failed_checks = true`, or
//! `max_robust_accuracy_drop` (with `--baseline`; optional `attack`, `eps`,
//! `norm` narrow which runs are compared). `eps` matches a run's `eps_label`
//! exactly, or its value as `parse_eps` reads it (`"4/255"` matches `0.0156863`);
//! an ε in HU or grey levels matches by label only. `min_median_min_eps` is in
//! model-input scale.

use crate::error::GateError;
use crate::report::json::{Results, Run, Status};
use crate::run::parse_eps;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Figures are ratios k/n stored as f64: allow rounding noise so `3/5 ≥ 0.6`
/// holds whichever way the division was written.
const TOLERANCE: f64 = 1e-9;

/// A parsed, validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub path: PathBuf,
    pub requirements: Vec<Requirement>,
}

/// One `[[require]]` entry and the line of its table in the policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub line: usize,
    pub kind: Kind,
}

/// Which runs a requirement concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub attack: Option<String>,
    pub eps: Option<String>,
    pub norm: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    MinRobustAccuracy { limit: f64, run: Selector, quantized: bool },
    MaxFlipRate { limit: f64, run: Selector, quantized: bool },
    MinMedianMinEps { limit: f32, label: String },
    NoFailedChecks,
    MaxRobustAccuracyDrop { limit: f64, runs: Selector },
}

/// The gate's answer: one outcome per requirement, in policy order.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcomes: Vec<RequirementOutcome>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequirementOutcome {
    /// One line, e.g. `robust accuracy of pgd linf ε=4/255 ≥ 0.6`.
    pub requirement: String,
    pub measured: String,
    pub limit: String,
    pub passed: bool,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.passed)
    }
    pub fn failures(&self) -> impl Iterator<Item = &RequirementOutcome> {
        self.outcomes.iter().filter(|o| !o.passed)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    require: Vec<toml::Spanned<RawRequirement>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EpsField {
    Text(String),
    Number(f64),
}

impl EpsField {
    fn label(&self) -> String {
        match self {
            EpsField::Text(s) => s.trim().to_string(),
            EpsField::Number(v) => v.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    min_robust_accuracy: Option<f64>,
    max_flip_rate: Option<f64>,
    min_median_min_eps: Option<EpsField>,
    no_failed_checks: Option<bool>,
    max_robust_accuracy_drop: Option<f64>,
    attack: Option<String>,
    eps: Option<EpsField>,
    norm: Option<String>,
    quantized: Option<bool>,
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The key a toml error concerns: named in the message for unknown fields,
/// otherwise the left-hand side of the `key = value` line the span points at.
fn key_of(src: &str, err: &toml::de::Error) -> Option<String> {
    let msg = err.message();
    if let Some(rest) = msg.split("unknown field `").nth(1) {
        return rest.split('`').next().map(str::to_string);
    }
    let start = err.span()?.start.min(src.len());
    let line_start = src[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = src[line_start..].lines().next().unwrap_or("");
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && !k.starts_with('[')).then(|| k.to_string())
}

impl Policy {
    pub fn from_file(path: &Path) -> Result<Policy, GateError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| GateError::Io { path: path.to_path_buf(), source })?;
        Policy::parse(&text, path)
    }

    /// Parses policy text; `path` is only used to name the file in errors.
    pub fn parse(src: &str, path: &Path) -> Result<Policy, GateError> {
        let raw: RawPolicy = toml::from_str(src).map_err(|e| GateError::Policy {
            path: path.to_path_buf(),
            line: e.span().map(|s| line_of(src, s.start)).unwrap_or(1),
            key: key_of(src, &e),
            reason: e.message().trim().to_string(),
        })?;
        let requirements = raw
            .require
            .into_iter()
            .map(|spanned| {
                // The span of a table array element starts at its first key;
                // report the `[[require]]` header line above it when there is one.
                let line = line_of(src, spanned.span().start);
                let header = src[..spanned.span().start].rfind("[[require]]").map(|i| line_of(src, i)).unwrap_or(line);
                Requirement::validate(spanned.into_inner(), header, path)
            })
            .collect::<Result<_, _>>()?;
        Ok(Policy { path: path.to_path_buf(), requirements })
    }
}

impl Requirement {
    fn validate(r: RawRequirement, line: usize, path: &Path) -> Result<Requirement, GateError> {
        let err = |key: &str, reason: String| GateError::Policy {
            path: path.to_path_buf(),
            line,
            key: Some(key.to_string()),
            reason,
        };
        let kinds: Vec<&str> = [
            ("min_robust_accuracy", r.min_robust_accuracy.is_some()),
            ("max_flip_rate", r.max_flip_rate.is_some()),
            ("min_median_min_eps", r.min_median_min_eps.is_some()),
            ("no_failed_checks", r.no_failed_checks.is_some()),
            ("max_robust_accuracy_drop", r.max_robust_accuracy_drop.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        let kind = match kinds[..] {
            [k] => k,
            [] => {
                return Err(GateError::Policy {
                    path: path.to_path_buf(),
                    line,
                    key: None,
                    reason: "a [[require]] entry needs one of min_robust_accuracy, max_flip_rate, \
                             min_median_min_eps, no_failed_checks, max_robust_accuracy_drop"
                        .into(),
                });
            }
            _ => {
                return Err(err(
                    kinds[1],
                    format!("one requirement per [[require]] entry, found {}", kinds.join(", ")),
                ));
            }
        };
        let ratio = |key: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(err(key, format!("must be a fraction in [0, 1], got {v}")))
            }
        };
        let eps_of = |key: &str, e: &EpsField| -> Result<(f32, String), GateError> {
            let label = e.label();
            let spec = parse_eps(&label).map_err(|m| err(key, m))?;
            if key == "min_median_min_eps" && spec.unit != crate::scan::EpsUnit::Model {
                return Err(err(key, format!("'{label}': give the minimal ε in model-input scale (e.g. \"1/255\")")));
            }
            Ok((spec.value, label))
        };
        let selector = |r: &RawRequirement| -> Result<Selector, GateError> {
            if let Some(e) = &r.eps {
                eps_of("eps", e)?;
            }
            if let Some(n) = &r.norm
                && n != "linf"
                && n != "l2"
            {
                return Err(err("norm", format!("'{n}' is not a norm; use linf or l2")));
            }
            Ok(Selector { attack: r.attack.clone(), eps: r.eps.as_ref().map(EpsField::label), norm: r.norm.clone() })
        };
        // Keys that only make sense with some kinds are refused elsewhere,
        // so a typo'd intent never turns into a silently broader requirement.
        let forbid = |keys: &[(&str, bool)]| -> Result<(), GateError> {
            match keys.iter().find(|(_, set)| *set) {
                Some((k, _)) => Err(err(k, format!("does not apply to {kind}"))),
                None => Ok(()),
            }
        };
        let needs_run = |r: &RawRequirement| -> Result<(), GateError> {
            if r.attack.is_none() {
                return Err(err(kind, "needs `attack` (the run's attack name, e.g. \"pgd\")".into()));
            }
            if r.eps.is_none() {
                return Err(err(kind, "needs `eps` (e.g. \"4/255\")".into()));
            }
            Ok(())
        };
        let kind = match kind {
            "min_robust_accuracy" => {
                needs_run(&r)?;
                Kind::MinRobustAccuracy {
                    limit: ratio(kind, r.min_robust_accuracy.unwrap_or_default())?,
                    run: selector(&r)?,
                    quantized: r.quantized == Some(true),
                }
            }
            "max_flip_rate" => {
                needs_run(&r)?;
                Kind::MaxFlipRate {
                    limit: ratio(kind, r.max_flip_rate.unwrap_or_default())?,
                    run: selector(&r)?,
                    quantized: r.quantized == Some(true),
                }
            }
            "min_median_min_eps" => {
                forbid(&[
                    ("attack", r.attack.is_some()),
                    ("eps", r.eps.is_some()),
                    ("norm", r.norm.is_some()),
                    ("quantized", r.quantized.is_some()),
                ])?;
                let (limit, label) = eps_of(kind, r.min_median_min_eps.as_ref().expect("kind is set"))?;
                Kind::MinMedianMinEps { limit, label }
            }
            "no_failed_checks" => {
                forbid(&[
                    ("attack", r.attack.is_some()),
                    ("eps", r.eps.is_some()),
                    ("norm", r.norm.is_some()),
                    ("quantized", r.quantized.is_some()),
                ])?;
                if r.no_failed_checks != Some(true) {
                    return Err(err(
                        kind,
                        "only `true` is meaningful; remove the entry to drop the requirement".into(),
                    ));
                }
                Kind::NoFailedChecks
            }
            _ => {
                forbid(&[("quantized", r.quantized.is_some())])?;
                Kind::MaxRobustAccuracyDrop {
                    limit: ratio(kind, r.max_robust_accuracy_drop.unwrap_or_default())?,
                    runs: selector(&r)?,
                }
            }
        };
        Ok(Requirement { line, kind })
    }

    /// The one-line description used in verdicts, FAIL lines and reports.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::MinRobustAccuracy { limit, run, quantized } => {
                format!("{}robust accuracy of {} ≥ {limit}", if *quantized { "quantised " } else { "" }, run.describe())
            }
            Kind::MaxFlipRate { limit, run, quantized } => {
                format!("{}flip rate of {} ≤ {limit}", if *quantized { "quantised " } else { "" }, run.describe())
            }
            Kind::MinMedianMinEps { label, .. } => format!("median minimal flipping ε ≥ {label}"),
            Kind::NoFailedChecks => "no trust check fails".into(),
            Kind::MaxRobustAccuracyDrop { limit, runs } => {
                let scope = if runs.is_any() { "any run".to_string() } else { format!("runs of {}", runs.describe()) };
                format!("robust accuracy drop from baseline of {scope} ≤ {limit}")
            }
        }
    }
}

impl Selector {
    fn is_any(&self) -> bool {
        self.attack.is_none() && self.eps.is_none() && self.norm.is_none()
    }

    fn describe(&self) -> String {
        let mut parts = vec![self.attack.clone().unwrap_or_else(|| "any attack".into())];
        if let Some(n) = &self.norm {
            parts.push(n.clone());
        }
        if let Some(e) = &self.eps {
            parts.push(format!("ε={e}"));
        }
        parts.join(" ")
    }

    fn matches(&self, run: &Run) -> bool {
        self.attack.as_ref().is_none_or(|a| *a == run.attack)
            && self.norm.as_ref().is_none_or(|n| *n == run.norm)
            && self.eps.as_ref().is_none_or(|e| eps_matches(e, run))
    }
}

/// Exactly the label the user wrote, or the same value: both go through
/// `parse_eps`, so equal fractions give bit-identical f32s; the tolerance
/// only absorbs decimals written with fewer digits than f32 holds.
fn eps_matches(label: &str, run: &Run) -> bool {
    if label == run.eps_label {
        return true;
    }
    match parse_eps(label) {
        Ok(e) if e.unit == crate::scan::EpsUnit::Model => {
            ((e.value - run.eps).abs() as f64) <= 1e-7 + 1e-6 * run.eps.abs() as f64
        }
        _ => false,
    }
}

fn run_name(run: &Run) -> String {
    format!("{} {} ε={}", run.attack, run.norm, run.eps_label)
}

fn num(v: f64) -> String {
    // Four decimals read well for ratios of a few hundred samples; trailing
    // zeros are noise.
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Applies the policy. `baseline` is needed by `max_robust_accuracy_drop`.
pub fn evaluate<S, B>(
    policy: &Policy,
    results: &Results<S>,
    baseline: Option<&Results<B>>,
) -> Result<Verdict, GateError> {
    let outcomes =
        policy.requirements.iter().map(|req| outcome(policy, req, results, baseline)).collect::<Result<_, _>>()?;
    Ok(Verdict { outcomes })
}

fn outcome<S, B>(
    policy: &Policy,
    req: &Requirement,
    results: &Results<S>,
    baseline: Option<&Results<B>>,
) -> Result<RequirementOutcome, GateError> {
    let requirement = req.describe();
    let cannot = |reason: String| GateError::Unmatched {
        path: policy.path.clone(),
        line: req.line,
        requirement: requirement.clone(),
        reason,
    };
    let done = || {
        let runs: Vec<String> = results.runs.iter().map(run_name).collect();
        if runs.is_empty() { "none".to_string() } else { runs.join(", ") }
    };
    let single = |sel: &Selector| -> Result<&Run, GateError> {
        let found: Vec<&Run> = results.runs.iter().filter(|r| sel.matches(r)).collect();
        match found[..] {
            [run] => Ok(run),
            [] => Err(cannot(format!("no such run in the results; runs done: {}", done()))),
            _ => Err(cannot(format!(
                "{} runs match ({}); add `norm` or write `eps` as its exact label",
                found.len(),
                found.iter().map(|r| run_name(r)).collect::<Vec<_>>().join(", ")
            ))),
        }
    };
    let (measured, limit, passed) = match &req.kind {
        Kind::MinRobustAccuracy { limit, run: sel, quantized } => {
            let run = single(sel)?;
            let acc = run.robust_accuracy.ok_or_else(|| {
                cannot("the results are unlabelled, so robust accuracy is not defined; gate on max_flip_rate".into())
            })?;
            let acc = if *quantized {
                run.robust_accuracy_quantized.ok_or_else(|| cannot(NOT_QUANTIZED.into()))?
            } else {
                acc
            };
            (num(acc), num(*limit), acc + TOLERANCE >= *limit)
        }
        Kind::MaxFlipRate { limit, run: sel, quantized } => {
            let run = single(sel)?;
            let flip = if *quantized {
                run.flip_rate_quantized.ok_or_else(|| cannot(NOT_QUANTIZED.into()))?
            } else {
                run.flip_rate
            };
            (num(flip), num(*limit), flip <= *limit + TOLERANCE)
        }
        Kind::MinMedianMinEps { limit, label } => {
            let m = results
                .min_eps
                .as_ref()
                .ok_or_else(|| cannot("the results have no minimal-ε measurement; run with --min-eps".into()))?;
            let limit_text = format!("{label} ({limit:.6})");
            match m.median {
                Some(median) => (format!("{median:.6}"), limit_text, median >= *limit),
                // The median sample did not flip within eps_max: the median is
                // above eps_max, which settles the question only if eps_max ≥ limit.
                None if m.eps_max >= *limit => (format!("> {:.6} (ε_max)", m.eps_max), limit_text, true),
                None => {
                    return Err(cannot(format!(
                        "the median sample did not flip within ε_max = {:.6}, below the limit; the median is unknown",
                        m.eps_max
                    )));
                }
            }
        }
        Kind::NoFailedChecks => {
            let failed: Vec<&str> =
                results.checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.name.as_str()).collect();
            let measured = if failed.is_empty() {
                "0 failed".to_string()
            } else {
                format!("{} failed ({})", failed.len(), failed.join(", "))
            };
            (measured, "0 failed".into(), failed.is_empty())
        }
        Kind::MaxRobustAccuracyDrop { limit, runs: sel } => {
            let base = baseline.ok_or_else(|| cannot("it compares against a baseline; pass --baseline".into()))?;
            let mut worst: Option<(f64, String)> = None;
            for cur in results.runs.iter().filter(|r| sel.matches(r)) {
                let Some(old) = base
                    .runs
                    .iter()
                    .find(|b| b.attack == cur.attack && b.norm == cur.norm && eps_matches(&b.eps_label, cur))
                else {
                    continue;
                };
                let (Some(a), Some(b)) = (old.robust_accuracy, cur.robust_accuracy) else {
                    return Err(cannot(format!(
                        "{}: robust accuracy is not defined on unlabelled results (baseline or current)",
                        run_name(cur)
                    )));
                };
                let drop = a - b;
                if worst.as_ref().is_none_or(|(w, _)| drop > *w) {
                    worst = Some((drop, format!("{}: {} → {}", run_name(cur), num(a), num(b))));
                }
            }
            let (drop, which) = worst
                .ok_or_else(|| cannot("no run matching it is present in both the results and the baseline".into()))?;
            (format!("{} ({which})", num(drop)), num(*limit), drop <= *limit + TOLERANCE)
        }
    };
    Ok(RequirementOutcome { requirement, measured, limit, passed })
}

/// Reads a `results.json` written by `advscan attack`.
pub fn read_results(path: &Path) -> Result<Results, GateError> {
    read_results_as(path)
}

/// results.json with its samples digested as they are read, for the reports
/// and the gate: memory does not grow with the number of samples.
pub fn read_summary(path: &Path) -> Result<crate::report::digest::Summary, GateError> {
    read_results_as(path)
}

/// results.json, its schema version checked, with `samples` read as `S`;
/// streamed from the file, never held whole in memory.
pub fn read_results_as<S: serde::de::DeserializeOwned>(path: &Path) -> Result<Results<S>, GateError> {
    let err = |reason: String| GateError::Results { path: path.to_path_buf(), reason };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let results: Results<S> = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| err(e.to_string()))?;
    if results.schema_version != crate::report::json::SCHEMA_VERSION {
        return Err(err(format!(
            "schema version {} (this advscan reads {})",
            results.schema_version,
            crate::report::json::SCHEMA_VERSION
        )));
    }
    Ok(results)
}

const NOT_QUANTIZED: &str =
    "these results have no quantised figures (written by an advscan without quantisation); run the attack again";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::json::*;

    fn run(attack: &str, eps_label: &str, eps: f32, acc: Option<f64>, flip: f64) -> Run {
        Run {
            attack: attack.into(),
            norm: "linf".into(),
            eps,
            eps_label: eps_label.into(),
            steps: 10,
            step_size: eps / 4.0,
            restarts: 1,
            random_start: true,
            loss: "ce".into(),
            robust_accuracy: acc,
            flip_rate: flip,
            attack_success_rate: None,
            mean_confidence_drop: 0.0,
            per_class: vec![],
            flip_rate_quantized: Some(flip),
            robust_accuracy_quantized: acc,
            seconds: 0.0,
        }
    }

    pub(crate) fn results() -> Results {
        let t = |name: &str| TensorRecord { name: name.into(), elem_type: "f32".into(), shape: vec![] };
        Results {
            schema_version: SCHEMA_VERSION,
            tool: Tool { name: "advscan".into(), version: "0".into() },
            model: ModelRecord {
                path: "m.onnx".into(),
                sha256: "ab".repeat(32),
                input: t("image"),
                output: t("logits"),
                logits: "logits".into(),
                softmax_stripped: false,
                config_path: None,
                config: None,
                class_names: vec![],
                positive_class: None,
            },
            data: DataRecord {
                path: "data".into(),
                labels: None,
                samples: 10,
                labelled: 10,
                skipped: vec![],
                notes: vec![],
                preprocessing: vec![],
                manifest_sha256: None,
                manifest_files: 0,
            },
            settings: Settings {
                attacks: vec!["fgsm".into(), "pgd".into()],
                eps: vec!["2/255".into(), "4/255".into()],
                norm: "linf".into(),
                steps: None,
                step_size: "eps/4".into(),
                restarts: 1,
                random_start: true,
                targeted: None,
                min_eps: true,
                seed: 0,
                threads: 1,
                batch_size: 1,
                gallery: 0,
                shard: None,
            },
            clean: Clean { accuracy: Some(0.9) },
            runs: vec![
                run("fgsm", "2/255", 2.0 / 255.0, Some(0.8), 0.1),
                run("fgsm", "4/255", 4.0 / 255.0, Some(0.6), 0.3),
                run("pgd", "2/255", 2.0 / 255.0, Some(0.7), 0.2),
                run("pgd", "4/255", 4.0 / 255.0, Some(0.6), 0.4),
            ],
            samples: vec![],
            min_eps: Some(MinEpsSummary {
                attack: "pgd".into(),
                norm: "linf".into(),
                precision: 0.001,
                eps_max: 8.0 / 255.0,
                flipped: 8,
                median: Some(3.0 / 255.0),
                q1: Some(2.0 / 255.0),
                q3: Some(5.0 / 255.0),
            }),
            checks: vec![
                Check { name: "monotone_in_eps".into(), status: Status::Pass, detail: "ok".into() },
                Check { name: "noise_baseline".into(), status: Status::Warn, detail: "hm".into() },
            ],
            timing: Timing { seconds: 1.0, forward_evals: 1, gradient_evals: 1, images_per_second: 1.0 },
            gallery: vec![],
        }
    }

    fn policy(src: &str) -> Result<Policy, GateError> {
        Policy::parse(src, Path::new("p.toml"))
    }

    fn verdict(src: &str, r: &Results, base: Option<&Results>) -> Result<Verdict, GateError> {
        evaluate(&policy(src)?, r, base)
    }

    fn passes(src: &str) -> bool {
        verdict(src, &results(), None).unwrap().passed()
    }

    #[test]
    fn min_robust_accuracy_pass_and_fail() {
        // 0.6 ≥ 0.6 holds: limits are inclusive.
        assert!(passes("[[require]]\nmin_robust_accuracy = 0.6\nattack = \"pgd\"\neps = \"4/255\"\n"));
        let v =
            verdict("[[require]]\nmin_robust_accuracy = 0.65\nattack = \"pgd\"\neps = \"4/255\"\n", &results(), None)
                .unwrap();
        assert!(!v.passed());
        let f = &v.outcomes[0];
        assert_eq!((f.measured.as_str(), f.limit.as_str()), ("0.6", "0.65"));
        assert_eq!(f.requirement, "robust accuracy of pgd ε=4/255 ≥ 0.65");
    }

    #[test]
    fn eps_matches_label_or_value() {
        // 0.0156863 is 4/255 to 6 significant digits; "2/255.0" is the same value as "2/255".
        assert!(passes("[[require]]\nmin_robust_accuracy = 0.6\nattack = \"pgd\"\neps = 0.0156863\n"));
        assert!(passes("[[require]]\nmax_flip_rate = 0.2\nattack = \"pgd\"\neps = \"2/255.0\"\nnorm = \"linf\"\n"));
    }

    #[test]
    fn max_flip_rate_pass_and_fail() {
        assert!(passes("[[require]]\nmax_flip_rate = 0.3\nattack = \"fgsm\"\neps = \"4/255\"\nquantized = false\n"));
        assert!(!passes("[[require]]\nmax_flip_rate = 0.25\nattack = \"fgsm\"\neps = \"4/255\"\n"));
    }

    #[test]
    fn quantized_requirements_read_the_quantised_figures() {
        let mut r = results();
        let fgsm = r.runs.iter_mut().find(|run| run.attack == "fgsm" && run.eps_label == "4/255").unwrap();
        fgsm.flip_rate_quantized = Some(0.5);
        let p = "[[require]]\nmax_flip_rate = 0.3\nattack = \"fgsm\"\neps = \"4/255\"\nquantized = true\n";
        let v = verdict(p, &r, None).unwrap();
        assert!(!v.passed());
        assert_eq!(v.outcomes[0].measured, "0.5");
        // Results written before quantisation existed cannot answer a quantised requirement.
        r.runs.iter_mut().for_each(|run| run.flip_rate_quantized = None);
        assert!(verdict(p, &r, None).is_err());
    }

    #[test]
    fn min_median_min_eps_pass_and_fail() {
        assert!(passes("[[require]]\nmin_median_min_eps = \"2/255\"\n"));
        assert!(!passes("[[require]]\nmin_median_min_eps = \"4/255\"\n"));
        let mut r = results();
        r.min_eps = None;
        let e = verdict("[[require]]\nmin_median_min_eps = \"2/255\"\n", &r, None).unwrap_err().to_string();
        assert!(e.contains("--min-eps"), "{e}");
    }

    #[test]
    fn no_failed_checks_pass_and_fail() {
        // A warning is not a failure.
        assert!(passes("[[require]]\nno_failed_checks = true\n"));
        let mut r = results();
        r.checks[0].status = Status::Fail;
        let v = verdict("[[require]]\nno_failed_checks = true\n", &r, None).unwrap();
        assert!(!v.passed());
        assert_eq!(v.outcomes[0].measured, "1 failed (monotone_in_eps)");
    }

    #[test]
    fn baseline_drop() {
        let src = "[[require]]\nmax_robust_accuracy_drop = 0.05\n";
        let mut base = results();
        base.runs[3].robust_accuracy = Some(0.64);
        // 0.64 − 0.6 = 0.04 ≤ 0.05.
        assert!(verdict(src, &results(), Some(&base)).unwrap().passed());
        base.runs[3].robust_accuracy = Some(0.7);
        let v = verdict(src, &results(), Some(&base)).unwrap();
        assert!(!v.passed());
        assert_eq!(v.outcomes[0].measured, "0.1 (pgd linf ε=4/255: 0.7 → 0.6)");
        let e = verdict(src, &results(), None).unwrap_err().to_string();
        assert!(e.contains("--baseline"), "{e}");
        // A filter narrows the comparison to fgsm, whose figures did not move.
        assert!(
            verdict("[[require]]\nmax_robust_accuracy_drop = 0.05\nattack = \"fgsm\"\n", &results(), Some(&base))
                .unwrap()
                .passed()
        );
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = policy("# policy\n[[require]]\nmin_robust_accuracy = 0.6\natack = \"pgd\"\neps = \"4/255\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:4: key 'atack'"), "{e}");
        let e = policy("[[require]]\nmax_flip_rate = \"high\"\n").unwrap_err().to_string();
        assert!(e.starts_with("p.toml:2: key 'max_flip_rate'"), "{e}");
        let e = policy("[[require]]\nmax_flip_rate = 0.3\nmin_robust_accuracy = 0.5\n").unwrap_err().to_string();
        assert!(e.contains("one requirement per [[require]] entry"), "{e}");
    }

    #[test]
    fn missing_run_is_an_error() {
        let e = verdict("\n[[require]]\nmax_flip_rate = 0.3\nattack = \"apgd\"\neps = \"4/255\"\n", &results(), None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:2: requirement 'flip rate of apgd ε=4/255 ≤ 0.3'"), "{e}");
        assert!(e.contains("no such run") && e.contains("pgd linf ε=4/255"), "{e}");
        let e = verdict("[[require]]\nmax_flip_rate = 0.3\nattack = \"pgd\"\neps = \"3/255\"\n", &results(), None)
            .unwrap_err();
        assert!(e.to_string().contains("no such run"));
    }

    #[test]
    fn ambiguity_is_an_error() {
        let mut r = results();
        let mut l2 = r.runs[3].clone();
        l2.norm = "l2".into();
        r.runs.push(l2);
        let src = "[[require]]\nmax_flip_rate = 0.5\nattack = \"pgd\"\neps = \"4/255\"\n";
        let e = verdict(src, &r, None).unwrap_err().to_string();
        assert!(e.contains("2 runs match") && e.contains("add `norm`"), "{e}");
        assert!(verdict(&format!("{src}norm = \"l2\"\n"), &r, None).unwrap().passed());
    }

    #[test]
    fn robust_accuracy_on_unlabelled_results_is_an_error() {
        let mut r = results();
        for run in &mut r.runs {
            run.robust_accuracy = None;
        }
        let e = verdict("[[require]]\nmin_robust_accuracy = 0.6\nattack = \"pgd\"\neps = \"4/255\"\n", &r, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unlabelled"), "{e}");
    }
}
