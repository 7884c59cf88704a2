//! A report folder is replaced as a whole or not at all. A run writes every
//! output (results.json, the HTML/Markdown/JUnit reports, ids.csv,
//! adversarial/) into a hidden staging folder beside `--out`, and only a
//! finished run swaps it in ([`Staging::commit`]). Whatever stops the run
//! before that — an error, Ctrl-C, SIGTERM, `kill -9`, a power cut — leaves
//! the previous report exactly as it was (or no report), never a mix of old
//! and new files or a truncated results.json.
//!
//! On Linux the swap is one `renameat2(RENAME_EXCHANGE)`, atomic even when a
//! previous report exists; elsewhere (or on a file system without it) the old
//! folder is first renamed aside, leaving a moment in which `--out` is
//! missing but the old report is still whole under its aside name.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The staging folder of one run; removed on drop unless committed.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    out: PathBuf,
    committed: bool,
}

/// `.NAME.advscan-partial-PID` beside `out`.
const MARK: &str = ".advscan-partial-";

fn out_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Output { path: path.to_path_buf(), reason: reason.to_string() }
}

fn parent_and_name(out: &Path) -> Result<(PathBuf, String), Error> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| out_err(out, "--out must name a folder (not '/', '.' or '..')"))?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    Ok((parent, name))
}

impl Staging {
    /// Checks `out` (see [`super::check_out_dir`]), creates its parent and an
    /// empty staging folder beside it, and removes staging folders of earlier
    /// runs into the same `out` that were killed (their process is gone).
    pub fn begin(out: &Path) -> Result<Staging, Error> {
        super::check_out_dir(out)?;
        if out.exists() && !out.is_dir() {
            return Err(out_err(out, "--out exists and is not a folder"));
        }
        let (parent, name) = parent_and_name(out)?;
        std::fs::create_dir_all(&parent).map_err(|e| out_err(&parent, e))?;
        remove_stale(&parent, &name);
        let dir = parent.join(format!(".{name}{MARK}{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| out_err(&dir, e))?;
        }
        std::fs::create_dir(&dir).map_err(|e| out_err(&dir, format!("cannot create the staging folder: {e}")))?;
        Ok(Staging { dir, out: out.to_path_buf(), committed: false })
    }

    /// Where this run writes its outputs until [`Staging::commit`].
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The folder the outputs end up in.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Puts the staged report in place of `out` (and deletes the previous one).
    pub fn commit(mut self) -> Result<(), Error> {
        // Refuse what appeared meanwhile: check_out_dir's rule holds at the swap too.
        super::check_out_dir(&self.out)?;
        let previous = if self.out.exists() {
            exchange(&self.dir, &self.out)
                .map_err(|e| out_err(&self.out, format!("cannot replace the report: {e}")))?;
            // `self.dir` now holds the previous report.
            Some(self.dir.clone())
        } else {
            std::fs::rename(&self.dir, &self.out).map_err(|e| out_err(&self.out, e))?;
            None
        };
        self.committed = true;
        if let Some(old) = previous {
            // The new report is in place; failing to delete the old one loses nothing.
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Swaps two folders: `a` becomes `b` and `b` becomes `a`.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let ca = CString::new(a.as_os_str().as_bytes())?;
        let cb = CString::new(b.as_os_str().as_bytes())?;
        // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        // Not supported by this kernel or file system: fall through to two renames.
        if !matches!(err.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)) {
            return Err(err);
        }
    }
    let aside = a.with_file_name(format!(
        "{}.previous",
        a.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    std::fs::rename(b, &aside)?;
    if let Err(e) = std::fs::rename(a, b) {
        let _ = std::fs::rename(&aside, b);
        return Err(e);
    }
    std::fs::rename(&aside, a)
}

/// Removes `.NAME.advscan-partial-PID` folders whose process no longer runs
/// (a run killed with SIGKILL cannot clean up after itself). Only on Linux,
/// where /proc says which processes run; elsewhere they stay (hidden).
fn remove_stale(parent: &Path, name: &str) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let prefix = format!(".{name}{MARK}");
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name.strip_prefix(&prefix) else { continue };
        let pid = pid.trim_end_matches(".previous");
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_staging_leaves_the_previous_report_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("report");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("results.json"), "old").unwrap();
        let staging = Staging::begin(&out).unwrap();
        std::fs::write(staging.path().join("results.json"), "new, unfinished").unwrap();
        let dir = staging.path().to_path_buf();
        drop(staging);
        assert!(!dir.exists(), "the staging folder is removed");
        assert_eq!(std::fs::read_to_string(out.join("results.json")).unwrap(), "old");
    }

    #[test]
    fn commit_replaces_the_whole_previous_report() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("report");
        std::fs::create_dir_all(out.join("adversarial")).unwrap();
        std::fs::write(out.join("results.json"), "old").unwrap();
        std::fs::write(out.join("adversarial/a.png"), "old").unwrap();
        let staging = Staging::begin(&out).unwrap();
        std::fs::write(staging.path().join("results.json"), "new").unwrap();
        staging.commit().unwrap();
        assert_eq!(std::fs::read_to_string(out.join("results.json")).unwrap(), "new");
        assert!(!out.join("adversarial").exists(), "nothing of the old report stays");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("report")], "no staging or aside folder is left");
    }

    #[test]
    fn commit_creates_a_new_report_folder_and_its_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("a/b/report");
        let staging = Staging::begin(&out).unwrap();
        std::fs::write(staging.path().join("results.json"), "new").unwrap();
        staging.commit().unwrap();
        assert_eq!(std::fs::read_to_string(out.join("results.json")).unwrap(), "new");
    }

    #[test]
    fn a_folder_of_other_files_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("scan.dcm"), "x").unwrap();
        assert!(Staging::begin(tmp.path()).is_err());
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("scan.dcm")]);
    }

    #[test]
    fn staging_of_a_killed_run_is_removed_by_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("report");
        // PIDs are below 2^22 on Linux, so this one cannot be running.
        let stale = tmp.path().join(format!(".report{MARK}4294967294"));
        std::fs::create_dir(&stale).unwrap();
        let staging = Staging::begin(&out).unwrap();
        if cfg!(target_os = "linux") {
            assert!(!stale.exists());
        }
        staging.commit().unwrap();
    }
}
