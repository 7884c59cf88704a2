//! `advscan merge`: puts the results of `advscan attack --shard K/N` runs back
//! together into the `results.json` one unsharded run with the same settings
//! would have written (apart from `timing` and `runs[].seconds`).
//!
//! That works because a shard is cut from the data set listing before
//! decoding, every per-sample quantity depends on the sample alone (its
//! randomness is seeded from the seed and its id), each sample record carries
//! its listing index and the raw data of the trust checks, and every aggregate
//! is recomputed from the records by [`crate::eval::aggregate`], as `attack`
//! does. What is not per sample is rebuilt by the single run's rules:
//! - samples: concatenated and sorted by listing index;
//! - directional-derivative probes: a run probes its first 4 evaluated
//!   samples; the first 4 of the merged order are always among the first 4 of
//!   their shard, and the probes of every other sample are dropped;
//! - gallery: each shard holds its own top N by the gallery's ranking; the
//!   global top N lies in their union, which is re-ranked and cut to N;
//! - skipped inputs: union, duplicates dropped (the folder walk's entries are
//!   in every shard), sorted by path; folder notes: union;
//! - `timing` and `runs[].seconds`: sums over the shards (machine time, not
//!   wall time); `settings.threads` and `model.path`: those of shard 1.
//!
//! The inputs must be shards 1..N of one run, each once: same schema version,
//! advscan version, model (sha256), data path and labels, and identical
//! settings but for `shard` and `threads` (which never changes a result).
//! Anything else is refused with the offending input named.

use crate::error::{Error, GateError};
use crate::eval;
use crate::report::json::{Results, SampleRecord, Shard, SkippedRecord};
use crate::report::staging::Staging;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Why a merge was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// One input does not fit the others; the message names it.
    #[error("{}: {reason}", path.display())]
    Input { path: PathBuf, reason: String },
    /// The inputs as a set are not shards 1..N of one run.
    #[error("{0}")]
    Set(String),
    #[error(transparent)]
    Read(#[from] GateError),
    #[error(transparent)]
    Write(#[from] Error),
}

/// The merged record and where it was written.
pub struct MergeOutcome {
    pub results: Results,
    /// Holds results.json (and manifest.sha256) until the caller commits it over `--out`.
    pub staging: Staging,
}

/// One input: as given on the command line, its results.json, its results.
struct Part {
    given: PathBuf,
    file: PathBuf,
    results: Results,
    shard: Shard,
}

/// `DIR` or `DIR/results.json` → the results.json.
fn results_file(given: &Path) -> PathBuf {
    if given.is_dir() { given.join("results.json") } else { given.to_path_buf() }
}

/// The first place where two JSON values differ, as (path, left, right).
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<(String, String, String)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                first_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{at}.{k}"),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}[{i}]")))
        }
        _ if a == b => None,
        _ => Some((at.to_string(), a.to_string(), b.to_string())),
    }
}

fn without(mut v: Value, keys: &[&str]) -> Value {
    if let Value::Object(m) = &mut v {
        for k in keys {
            m.remove(*k);
        }
    }
    v
}

fn to_value<T: serde::Serialize>(t: &T) -> Value {
    // Plain data structures always serialise.
    serde_json::to_value(t).expect("results serialise")
}

/// What must be identical across the shards of one run, as JSON.
fn identity(r: &Results) -> Value {
    let runs: Vec<Value> = r
        .runs
        .iter()
        .map(|run| {
            without(
                to_value(run),
                &[
                    "robust_accuracy",
                    "flip_rate",
                    "attack_success_rate",
                    "mean_confidence_drop",
                    "per_class",
                    "flip_rate_quantized",
                    "robust_accuracy_quantized",
                    "seconds",
                ],
            )
        })
        .collect();
    serde_json::json!({
        "schema_version": r.schema_version,
        "tool": to_value(&r.tool),
        "model": without(to_value(&r.model), &["path"]),
        "data": { "path": r.data.path, "labels": r.data.labels },
        "settings": without(to_value(&r.settings), &["shard", "threads"]),
        "runs": runs,
    })
}

fn read_part(given: &Path) -> Result<Part, MergeError> {
    let file = results_file(given);
    let results = crate::gate::read_results(&file)?;
    let shard = results.settings.shard.ok_or_else(|| MergeError::Input {
        path: given.to_path_buf(),
        reason: "not the result of a sharded run (results.json has no settings.shard): merge the outputs of \
                 `advscan attack --shard K/N`"
            .into(),
    })?;
    Ok(Part { given: given.to_path_buf(), file, results, shard })
}

/// Checks that `parts` are shards 1..N of one run, each once; returns them ordered by K.
fn validate(mut parts: Vec<Part>) -> Result<Vec<Part>, MergeError> {
    let Some(first) = parts.first() else {
        return Err(MergeError::Set("nothing to merge: give the result folders of the shards".into()));
    };
    let (reference, ref_given, count) = (identity(&first.results), first.given.clone(), first.shard.count);
    let mut seen: BTreeMap<usize, PathBuf> = BTreeMap::new();
    for p in &parts {
        let bad = |reason: String| MergeError::Input { path: p.given.clone(), reason };
        if p.shard.count != count {
            return Err(bad(format!(
                "shard {}, but {} is shard {}: all shards must come from one split into N",
                p.shard,
                ref_given.display(),
                first.shard
            )));
        }
        if let Some(other) = seen.insert(p.shard.index, p.given.clone()) {
            return Err(bad(format!("shard {} is given twice (also {})", p.shard, other.display())));
        }
        if let Some((at, here, there)) = first_difference(&identity(&p.results), &reference, "") {
            return Err(bad(format!(
                "not a shard of the same run as {}: {} is {here} here but {there} there (shards must share \
                 the advscan version, model, data and every setting but --shard and --threads)",
                ref_given.display(),
                at.trim_start_matches('.'),
            )));
        }
        for s in &p.results.samples {
            if !p.shard.contains(s.index) {
                return Err(bad(format!(
                    "sample '{}' has listing index {}, which does not belong to shard {}",
                    s.id, s.index, p.shard
                )));
            }
        }
    }
    let missing: Vec<String> = (1..=count).filter(|k| !seen.contains_key(k)).map(|k| format!("{k}/{count}")).collect();
    if !missing.is_empty() {
        let given: Vec<String> = seen.iter().map(|(k, d)| format!("{k}/{count} from {}", d.display())).collect();
        return Err(MergeError::Set(format!(
            "shard(s) {} missing: every shard 1..{count} must be given once (given: {})",
            missing.join(", "),
            given.join("; ")
        )));
    }
    parts.sort_by_key(|p| p.shard.index);
    Ok(parts)
}

/// Merges the shard results in `inputs` (folders holding a results.json, or
/// the files) and writes `out/results.json` (and `out/manifest.sha256` when every
/// shard has one). The reports are the caller's (see the binary).
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<MergeOutcome, MergeError> {
    let results_path = out.join("results.json");
    crate::report::check_out_dir(out)?;
    let parts = inputs.iter().map(|g| read_part(g)).collect::<Result<Vec<_>, _>>()?;
    if let Some(p) = parts.iter().find(|p| {
        let same = |a: &Path, b: &Path| a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b);
        same(&p.file, &results_path)
    }) {
        return Err(MergeError::Input {
            path: p.given.clone(),
            reason: "--out would overwrite this shard's results.json; merge into another folder".into(),
        });
    }
    let parts = validate(parts)?;
    let classes = parts
        .iter()
        .flat_map(|p| &p.results.runs)
        .flat_map(|r| &r.per_class)
        .map(|c| c.predicted_as.len())
        .max()
        .unwrap_or(0);

    let mut merged = parts[0].results.clone();
    merged.settings.shard = None;
    let mut samples: Vec<SampleRecord> = parts.iter().flat_map(|p| p.results.samples.iter().cloned()).collect();
    samples.sort_by_key(|s| s.index);
    // Frames of one multi-frame file share a listing index and a shard, and
    // the stable sort keeps their order.
    if let Some(w) = samples.windows(2).find(|w| (w[0].index, &w[0].id) == (w[1].index, &w[1].id)) {
        return Err(MergeError::Set(format!("two shards hold listing index {} ('{}')", w[0].index, w[0].id)));
    }
    if samples.is_empty() {
        let skipped: usize = parts.iter().map(|p| p.results.data.skipped.len()).sum();
        return Err(MergeError::Set(format!("no image could be evaluated in any shard ({skipped} skipped)")));
    }
    // A single run probes its first evaluated samples only.
    for s in samples.iter_mut().skip(eval::DIRECTIONAL_PROBES) {
        s.check_data.directional = None;
    }
    merged.samples = samples;

    let mut skipped: Vec<SkippedRecord> = parts.iter().flat_map(|p| p.results.data.skipped.iter().cloned()).collect();
    crate::run::sort_skipped(&mut skipped);
    merged.data.skipped = skipped;
    merged.data.preprocessing = crate::run::preprocessing_records(
        parts.iter().flat_map(|p| &p.results.data.preprocessing).map(|r| (r.samples, r.steps.clone())),
    );
    merged.data.notes = Vec::new();
    for note in parts.iter().flat_map(|p| &p.results.data.notes) {
        if !merged.data.notes.contains(note) {
            merged.data.notes.push(note.clone());
        }
    }

    for (k, run) in merged.runs.iter_mut().enumerate() {
        run.seconds = parts.iter().map(|p| p.results.runs[k].seconds).sum();
    }
    let t = &mut merged.timing;
    t.seconds = parts.iter().map(|p| p.results.timing.seconds).sum();
    t.forward_evals = parts.iter().map(|p| p.results.timing.forward_evals).sum();
    t.gradient_evals = parts.iter().map(|p| p.results.timing.gradient_evals).sum();
    let images = (merged.runs.len() * merged.samples.len()) as f64;
    t.images_per_second = if t.seconds > 0.0 { images / t.seconds } else { 0.0 };

    // Gallery: the union of the shards' top N, ranked again and cut to N.
    let min_eps: HashMap<(usize, &str), Option<f32>> =
        merged.samples.iter().map(|s| ((s.index, s.id.as_str()), s.min_eps.flatten())).collect();
    let mut gallery = Vec::new();
    for p in &parts {
        for g in &p.results.gallery {
            let Some(m) = min_eps.get(&(g.index, g.id.as_str())) else {
                return Err(MergeError::Input {
                    path: p.given.clone(),
                    reason: format!("gallery item '{}' (listing index {}) is not one of its samples", g.id, g.index),
                });
            };
            gallery.push(((*m, g.drop, g.index), g.clone()));
        }
    }
    gallery.sort_by(|a, b| eval::fragility_cmp(a.0, b.0));
    gallery.truncate(merged.settings.gallery);
    merged.gallery = gallery.into_iter().map(|(_, g)| g).collect();

    eval::aggregate(&mut merged, classes).map_err(|reason| MergeError::Set(format!("cannot merge: {reason}")))?;

    // The data manifest: the shards' manifest files together (none when a
    // shard has none, as an anonymised one).
    let mut lines = Vec::new();
    let mut complete = true;
    for p in &parts {
        match std::fs::read_to_string(p.file.with_file_name(crate::run::MANIFEST_FILE)) {
            Ok(text) => lines
                .extend(text.lines().filter_map(|l| l.split_once("  ")).map(|(h, f)| (h.to_string(), f.to_string()))),
            Err(_) => complete = false,
        }
    }
    let manifest = complete.then(|| crate::run::manifest_text(lines));
    merged.data.manifest_files = manifest.as_ref().map_or(0, |m| m.lines().count());
    merged.data.manifest_sha256 = manifest.as_ref().map(|m| hex::encode(Sha256::digest(m.as_bytes())));
    let staging = Staging::begin(out)?;
    if let Some(manifest) = &manifest {
        crate::report::write_atomic(&staging.path().join(crate::run::MANIFEST_FILE), manifest.as_bytes())?;
    }
    crate::report::write_atomic_with(&staging.path().join("results.json"), |w| merged.write_json(w))?;
    Ok(MergeOutcome { results: merged, staging })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_names_the_path() {
        let a = serde_json::json!({"settings": {"seed": 1, "eps": ["1/255", "2/255"]}});
        let b = serde_json::json!({"settings": {"seed": 2, "eps": ["1/255", "2/255"]}});
        assert_eq!(first_difference(&a, &b, ""), Some((".settings.seed".into(), "1".into(), "2".into())));
        assert_eq!(first_difference(&a, &a, ""), None);
        let c = serde_json::json!({"settings": {"seed": 1, "eps": ["1/255", "4/255"]}});
        assert_eq!(first_difference(&a, &c, "").unwrap().0, ".settings.eps[1]");
    }
}
