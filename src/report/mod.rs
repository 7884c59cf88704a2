//! Outputs rendered from one [`json::Results`] structure: `results.json`,
//! the HTML page, the Markdown summary and the JUnit file, never
//! recomputing anything.

pub mod anonymize;
pub mod digest;
pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod plot;
pub mod spill;
pub mod staging;
pub mod table;

/// Attack strength for choosing one run to show (gallery, confusion
/// tables): lower is stronger; unknown attacks come last.
pub fn attack_rank(name: &str) -> usize {
    ["apgd", "apgd-dlr", "pgd", "fgsm", "square", "noise"].iter().position(|a| *a == name).unwrap_or(6)
}

use crate::error::Error;
use std::path::Path;

/// Refuses an output folder that exists, is not empty and holds no
/// `results.json`: it is not an advscan report, and writing reports (and
/// `adversarial/`) into it could mix them with — or be mistaken for — the
/// user's own files, such as the scans themselves. An advscan report folder
/// is reused.
pub fn check_out_dir(out: &Path) -> Result<(), Error> {
    let Ok(mut entries) = std::fs::read_dir(out) else { return Ok(()) };
    if entries.next().is_none() || out.join("results.json").is_file() {
        return Ok(());
    }
    Err(Error::Output {
        path: out.to_path_buf(),
        reason: "--out is a folder that is not empty and holds no results.json, so it is not an advscan report; \
                 choose a new or empty folder (advscan never writes among other files)"
            .into(),
    })
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// flushed, then renamed over the target, so an interrupted run leaves the
/// previous file or the complete new one, never a truncated one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// [`write_atomic`] for content produced by `write` into a buffered writer,
/// so a large file (results.json of a big data set) is never held whole in
/// memory.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), Error> {
    use std::io::Write;
    let err = |e: std::io::Error| Error::Output { path: path.to_path_buf(), reason: e.to_string() };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|f| {
        let mut out = std::io::BufWriter::new(f);
        write(&mut out)?;
        out.flush()?;
        out.get_ref().sync_all()
    });
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, path)) {
        // Best effort: a half-written temporary file is of no use to anyone.
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// Writes `report.html`, `summary.md` and `junit.xml` into `dir` (beside its results.json).
pub fn write_reports(
    dir: &Path,
    results: &digest::Summary,
    verdict: Option<&crate::gate::Verdict>,
) -> Result<(), Error> {
    write_atomic(&dir.join("report.html"), html::render(results, verdict).as_bytes())?;
    write_atomic(&dir.join("summary.md"), markdown::render(results, verdict).as_bytes())?;
    write_atomic(&dir.join("junit.xml"), junit::render(results, verdict).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_results_json_is_the_same_text_as_the_in_memory_one() {
        let results = crate::gate::tests::results();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        std::fs::write(&path, "previous").unwrap();
        write_atomic_with(&path, |w| results.write_json(w)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), results.to_json());
        // Only the target is left: the temporary file was renamed over it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_stream_leaves_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        std::fs::write(&path, "previous").unwrap();
        let failed = write_atomic_with(&path, |w| {
            w.write_all(b"{\"partial\":")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(matches!(failed, Err(Error::Output { .. })), "{failed:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "previous");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "the temporary file is removed");
    }
}
