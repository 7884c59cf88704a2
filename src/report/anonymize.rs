//! `--anonymize`: before anything is written, every sample name and input
//! path in the results is replaced by a short hash of it, and the mapping is
//! returned, for the key file `--ids-file` (never inside the report folder:
//! it re-identifies the samples).
//! File and folder names of clinical data often carry names or record
//! numbers; the model's path is not patient data and stays.

use super::json::{Results, SampleRecord};
use sha2::{Digest, Sha256};

const WITHHELD: &str = "withheld (--anonymize)";

/// `s-` and the first 12 hex digits of sha256(name): stable across runs, so
/// anonymised reports of the same data can still be compared.
pub fn short_id(name: &str) -> String {
    format!("s-{}", &hex::encode(Sha256::digest(name.as_bytes()))[..12])
}

/// Replaces identifying strings in `results`; returns (short id, original) pairs, sorted.
pub fn anonymize(results: &mut Results) -> Vec<(String, String)> {
    let mut map: Vec<(String, String)> = results.samples.iter_mut().map(anonymize_sample).collect();
    map.extend(anonymize_rest(results));
    map.sort();
    map.dedup();
    map
}

fn swap(name: &mut String) -> (String, String) {
    let id = short_id(name);
    (id.clone(), std::mem::replace(name, id))
}

/// One sample record's share of [`anonymize`], for records streamed one at a
/// time: its id is replaced; returns (short id, original).
pub fn anonymize_sample(s: &mut SampleRecord) -> (String, String) {
    swap(&mut s.id)
}

/// [`anonymize`] of everything but the samples (gallery, skipped inputs, data
/// paths and notes); returns its (short id, original) pairs, unsorted.
pub fn anonymize_rest<S>(results: &mut Results<S>) -> Vec<(String, String)> {
    let mut map = Vec::new();
    for g in &mut results.gallery {
        map.push(swap(&mut g.id));
    }
    for s in &mut results.data.skipped {
        let original = s.path.clone();
        map.push(swap(&mut s.path));
        // Error messages name the file: the same path inside a reason goes too.
        s.reason = s.reason.replace(&original, &s.path);
    }
    results.data.path = WITHHELD.into();
    if results.data.labels.is_some() {
        results.data.labels = Some(WITHHELD.into());
    }
    let notes = results.data.notes.len();
    results.data.notes =
        if notes > 0 { vec![format!("{notes} note(s) about input folders {WITHHELD}")] } else { vec![] };
    map
}

/// `ids.csv`: `id,path`, every field quoted.
pub fn ids_csv(map: &[(String, String)]) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out = String::from("id,path\n");
    for (id, path) in map {
        out.push_str(&format!("{},{}\n", q(id), q(path)));
    }
    out
}
