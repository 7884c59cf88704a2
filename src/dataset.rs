//! Finding the samples: `--data` (a folder, one image, or a labels CSV) and
//! `--labels` become a [`Dataset`] of [`Sample`]s `{ id, path, label? }` plus the
//! entries that were skipped and why. This module decides which files are
//! inputs and what their labels are; it never opens an image (that is `io/`),
//! so a corrupt file surfaces later as that sample's recorded outcome.
//!
//! Labels come from class sub-folders directly under the root, named by class
//! index (`0/`, `1/`) or by class name (matched exactly, else
//! case-insensitively), or from a CSV `path,label` (header optional, extra
//! columns ignored, paths relative to the CSV's folder, label as index or
//! name). A bad CSV row or an unreadable sub-folder is skipped with its reason;
//! only a missing `--data`, an unreadable root or CSV, or an empty result is an
//! error. Which extensions count as inputs is `io::InputKind`'s call, so DICOM
//! joins by adding its kind there.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use crate::error::DatasetError;
use crate::io::{InputKind, SUPPORTED_EXTENSIONS};

/// One input image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The path relative to the data root with `/` separators: stable across
    /// machines, so it can seed per-sample randomness and key reports.
    pub id: String,
    pub path: PathBuf,
    pub label: Option<usize>,
}

/// An entry that is not a sample, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// The walked inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The folder ids are relative to: the `--data` folder, or the CSV's folder.
    pub root: PathBuf,
    pub samples: Vec<Sample>,
    pub skipped: Vec<Skipped>,
    /// Things the user should know that affect no single entry, e.g. a class
    /// folder whose name is not a class, so its images are unlabelled.
    pub notes: Vec<String>,
}

impl Dataset {
    pub fn labelled(&self) -> usize {
        self.samples.iter().filter(|s| s.label.is_some()).count()
    }
}

/// Resolve `--data` (and `--labels`, if given) into samples. `class_names` may
/// be empty; then labels must be class indices.
///
/// - `data` a folder, no `labels`: walk it (see [`scan_folder`]).
/// - `data` a `.csv` file, or `labels` given: read the CSV (see [`scan_csv`]);
///   with `data` a folder, ids are relative to it and a CSV path not found
///   beside the CSV is looked up under it.
/// - `data` a single image: one unlabelled sample.
pub fn scan(data: &Path, labels: Option<&Path>, class_names: &[String]) -> Result<Dataset, DatasetError> {
    if !data.exists() {
        return Err(DatasetError::NotFound { path: data.to_path_buf() });
    }
    let is_csv = |p: &Path| p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if let Some(csv) = labels {
        let data_dir = data.is_dir().then_some(data);
        return scan_csv_with(csv, data_dir, class_names);
    }
    if data.is_dir() {
        return scan_folder(data, class_names);
    }
    if is_csv(data) {
        return scan_csv(data, class_names);
    }
    // A single image file.
    let root = data.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut ds = Dataset { root, samples: Vec::new(), skipped: Vec::new(), notes: Vec::new() };
    if InputKind::from_path(data).is_some() {
        let id = data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        ds.samples.push(Sample { id, path: data.to_path_buf(), label: None });
    } else {
        ds.skipped.push(Skipped { path: data.to_path_buf(), reason: unsupported_reason() });
    }
    non_empty(ds, data)
}

/// Walk `root` recursively. Files with a supported extension (case-insensitive)
/// are samples; other files and hidden entries (`.name`) are ignored;
/// symlinked folders are not followed (no cycles). Samples are sorted by id,
/// so the order does not depend on the file system.
pub fn scan_folder(root: &Path, class_names: &[String]) -> Result<Dataset, DatasetError> {
    if !root.exists() {
        return Err(DatasetError::NotFound { path: root.to_path_buf() });
    }
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    // The root must be readable; a sub-folder that is not is skipped.
    let entries = std::fs::read_dir(root).map_err(|source| DatasetError::Io { path: root.to_path_buf(), source })?;
    walk_entries(entries, root, &mut files, &mut skipped);

    let mut notes = Vec::new();
    // Top-level folder name → label, decided once per folder.
    let mut folder_labels: BTreeMap<String, Option<usize>> = BTreeMap::new();
    let mut samples = Vec::with_capacity(files.len());
    for path in files {
        let rel = path.strip_prefix(root).expect("walked paths lie under the root");
        let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let label = if parts.len() > 1 {
            let folder = &parts[0];
            *folder_labels.entry(folder.clone()).or_insert_with(|| match parse_label(folder, class_names) {
                Ok(label) => label,
                Err(why) => {
                    notes.push(format!(
                        "{}: the folder name is not a class ({why}); its images are unlabelled",
                        root.join(folder).display()
                    ));
                    None
                }
            })
        } else {
            None
        };
        samples.push(Sample { id: parts.join("/"), path, label });
    }
    samples.sort_by(|a, b| a.id.cmp(&b.id));
    non_empty(Dataset { root: root.to_path_buf(), samples, skipped, notes }, root)
}

fn walk_entries(entries: std::fs::ReadDir, dir: &Path, files: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) {
    let mut entries: Vec<_> = match entries.collect::<Result<_, _>>() {
        Ok(e) => e,
        Err(e) => {
            skipped.push(Skipped { path: dir.to_path_buf(), reason: format!("cannot list the folder: {e}") });
            return;
        }
    };
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(file_type) = entry.file_type() else {
            skipped.push(Skipped { path, reason: "cannot read the entry's type".into() });
            continue;
        };
        if file_type.is_dir() {
            match std::fs::read_dir(&path) {
                Ok(sub) => walk_entries(sub, &path, files, skipped),
                Err(e) => skipped.push(Skipped { path, reason: format!("cannot list the folder: {e}") }),
            }
        } else if InputKind::from_path(&path).is_some() {
            // Regular files and symlinks to files; a dangling link or a link
            // to a folder is not an image.
            if path.is_file() {
                files.push(path);
            } else {
                skipped.push(Skipped { path, reason: "not a regular file (dangling link or link to a folder)".into() });
            }
        }
    }
}

/// Read a labels CSV whose paths are relative to its own folder, which is also
/// the root ids are relative to.
pub fn scan_csv(csv: &Path, class_names: &[String]) -> Result<Dataset, DatasetError> {
    scan_csv_with(csv, None, class_names)
}

/// Headers recognised (case-insensitive) for the path and label columns.
const PATH_HEADERS: &[&str] =
    &["path", "file", "filename", "file_name", "filepath", "file_path", "image", "image_path"];
const LABEL_HEADERS: &[&str] = &["label", "class", "target", "class_index", "y"];

fn scan_csv_with(csv: &Path, data_dir: Option<&Path>, class_names: &[String]) -> Result<Dataset, DatasetError> {
    if !csv.is_file() {
        return Err(DatasetError::NotFound { path: csv.to_path_buf() });
    }
    let csv_dir = csv.parent().map(Path::to_path_buf).unwrap_or_default();
    let root = data_dir.map(Path::to_path_buf).unwrap_or_else(|| csv_dir.clone());
    let bad_csv = |reason: String| DatasetError::Csv { path: csv.to_path_buf(), reason };
    let file = std::fs::File::open(csv).map_err(|source| DatasetError::Io { path: csv.to_path_buf(), source })?;
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(file);

    let mut ds = Dataset { root: root.clone(), samples: Vec::new(), skipped: Vec::new(), notes: Vec::new() };
    let resolve = |cell: &str| -> PathBuf {
        let p = Path::new(cell);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        let beside_csv = csv_dir.join(p);
        match data_dir {
            Some(dir) if !beside_csv.exists() && dir.join(p).exists() => dir.join(p),
            _ => beside_csv,
        }
    };

    let mut columns: Option<(usize, Option<usize>)> = None;
    let mut first_line_of: HashMap<PathBuf, u64> = HashMap::new();
    for (index, record) in reader.records().enumerate() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                if index == 0 {
                    return Err(bad_csv(e.to_string()));
                }
                ds.skipped.push(Skipped { path: csv.to_path_buf(), reason: format!("line {line}: {e}") });
                continue;
            }
        };
        let line = record.position().map_or(index as u64 + 1, |p| p.line());
        let cells: Vec<&str> = record.iter().collect();
        if cells.iter().all(|c| c.is_empty()) {
            continue;
        }
        if columns.is_none() {
            // Decide on the first row whether it is a header.
            let lower: Vec<String> = cells.iter().map(|c| c.to_ascii_lowercase()).collect();
            let path_col = lower.iter().position(|c| PATH_HEADERS.contains(&c.as_str()));
            let label_col = lower.iter().position(|c| LABEL_HEADERS.contains(&c.as_str()));
            if path_col.is_some() || label_col.is_some() {
                if label_col.is_none() {
                    ds.notes.push(format!(
                        "{}: the header has no label column (one of {}); samples are unlabelled",
                        csv.display(),
                        LABEL_HEADERS.join(", ")
                    ));
                }
                columns = Some((path_col.unwrap_or(0), label_col));
                continue;
            }
            let label_col = (cells.len() > 1).then_some(1);
            columns = Some((0, label_col));
            // An unrecognised header: neither an existing file nor a label.
            let label_ok = label_col.is_none_or(|c| parse_label(cells[c], class_names).is_ok());
            if !resolve(cells[0]).exists() && !label_ok {
                ds.notes.push(format!("{}: the first row ({}) was taken as a header", csv.display(), cells.join(",")));
                continue;
            }
        }
        let (path_col, label_col) = columns.expect("set on the first row");
        let where_ = format!("{} line {line}", csv.display());
        let Some(cell) = cells.get(path_col).filter(|c| !c.is_empty()) else {
            ds.skipped.push(Skipped { path: csv.to_path_buf(), reason: format!("{where_}: no path") });
            continue;
        };
        let path = resolve(cell);
        let skip = |reason: String| Skipped { path: path.clone(), reason: format!("{where_}: {reason}") };
        if !path.exists() {
            ds.skipped.push(skip("file not found".into()));
            continue;
        }
        if !path.is_file() {
            ds.skipped.push(skip("not a file".into()));
            continue;
        }
        if InputKind::from_path(&path).is_none() {
            ds.skipped.push(skip(unsupported_reason()));
            continue;
        }
        let label = match label_col.and_then(|c| cells.get(c)) {
            None => None,
            Some(text) => match parse_label(text, class_names) {
                Ok(label) => label,
                Err(why) => {
                    ds.skipped.push(skip(why));
                    continue;
                }
            },
        };
        if let Some(first) = first_line_of.get(&path) {
            ds.skipped.push(skip(format!("listed again (first on line {first})")));
            continue;
        }
        first_line_of.insert(path.clone(), line);
        ds.samples.push(Sample { id: sample_id(&path, &root, cell), path, label });
    }
    if columns.is_none() {
        return Err(bad_csv("the file has no rows".into()));
    }
    non_empty(ds, csv)
}

/// The path relative to `root` with `/` separators, or the CSV cell as written
/// when the file lies outside the root.
fn sample_id(path: &Path, root: &Path, cell: &str) -> String {
    match path.strip_prefix(root) {
        Ok(rel) if rel.components().all(|c| matches!(c, Component::Normal(_))) => {
            rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
        }
        _ => cell.replace('\\', "/"),
    }
}

/// A label written as a class index or a class name. Empty means unlabelled.
fn parse_label(text: &str, class_names: &[String]) -> Result<Option<usize>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(index) = text.parse::<usize>() {
        if !class_names.is_empty() && index >= class_names.len() {
            return Err(format!(
                "label {index} is out of range: there are {} classes ({})",
                class_names.len(),
                class_names.join(", ")
            ));
        }
        return Ok(Some(index));
    }
    if let Some(i) = class_names.iter().position(|n| n == text) {
        return Ok(Some(i));
    }
    let folded: Vec<usize> =
        class_names.iter().enumerate().filter(|(_, n)| n.eq_ignore_ascii_case(text)).map(|(i, _)| i).collect();
    if let [i] = folded[..] {
        return Ok(Some(i));
    }
    if class_names.is_empty() {
        Err(format!("unknown label '{text}': not a class index, and no class names were given"))
    } else {
        Err(format!("unknown label '{text}': not a class index or one of {}", class_names.join(", ")))
    }
}

fn unsupported_reason() -> String {
    format!("unsupported file type; advscan reads {SUPPORTED_EXTENSIONS}")
}

fn non_empty(ds: Dataset, path: &Path) -> Result<Dataset, DatasetError> {
    if ds.samples.is_empty() {
        return Err(DatasetError::Empty { path: path.to_path_buf(), skipped: ds.skipped.len() });
    }
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::GrayImage::from_raw(1, 1, vec![9]).unwrap().save(path).unwrap();
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn ids_labels(ds: &Dataset) -> Vec<(&str, Option<usize>)> {
        ds.samples.iter().map(|s| (s.id.as_str(), s.label)).collect()
    }

    #[test]
    fn class_folders_by_index_with_nested_and_ignored_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        png(&root.join("1/b.png"));
        png(&root.join("0/z.PNG"));
        png(&root.join("0/a.png"));
        png(&root.join("1/patient7/c.JPEG"));
        png(&root.join("loose.png"));
        std::fs::write(root.join("0/notes.txt"), "x").unwrap();
        std::fs::write(root.join("0/scan.dcm.bak"), "x").unwrap();
        png(&root.join(".hidden/h.png"));
        let ds = scan(root, None, &[]).unwrap();
        assert_eq!(
            ids_labels(&ds),
            vec![
                ("0/a.png", Some(0)),
                ("0/z.PNG", Some(0)),
                ("1/b.png", Some(1)),
                ("1/patient7/c.JPEG", Some(1)),
                ("loose.png", None),
            ]
        );
        assert_eq!(ds.samples[0].path, root.join("0/a.png"));
        assert_eq!(ds.root, root);
        assert!(ds.skipped.is_empty() && ds.notes.is_empty());
        assert_eq!(ds.labelled(), 4);
    }

    #[test]
    fn class_folders_by_name_and_unknown_folders_noted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        png(&root.join("normal/a.png"));
        png(&root.join("Pneumonia/b.png"));
        png(&root.join("misc/c.png"));
        png(&root.join("5/d.png"));
        let classes = names(&["normal", "pneumonia"]);
        let ds = scan(root, None, &classes).unwrap();
        assert_eq!(
            ids_labels(&ds),
            vec![("5/d.png", None), ("Pneumonia/b.png", Some(1)), ("misc/c.png", None), ("normal/a.png", Some(0))]
        );
        assert_eq!(ds.notes.len(), 2, "{:?}", ds.notes);
        assert!(ds.notes.iter().any(|n| n.contains("misc") && n.contains("unlabelled")));
        assert!(ds.notes.iter().any(|n| n.contains("label 5 is out of range")));
    }

    #[test]
    fn walk_order_is_deterministic() {
        let make = |order: &[&str]| {
            let dir = tempfile::tempdir().unwrap();
            for name in order {
                png(&dir.path().join(name));
            }
            let ds = scan(dir.path(), None, &[]).unwrap();
            ds.samples.iter().map(|s| s.id.clone()).collect::<Vec<_>>()
        };
        let a = make(&["b/2.png", "a.png", "b/10.png", "c/x/y.png", "b.png"]);
        let b = make(&["c/x/y.png", "b.png", "b/10.png", "a.png", "b/2.png"]);
        assert_eq!(a, b);
        assert_eq!(a, vec!["a.png", "b.png", "b/10.png", "b/2.png", "c/x/y.png"]);
    }

    #[test]
    fn csv_with_header_extra_columns_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        png(&root.join("imgs/a.png"));
        png(&root.join("imgs/b.png"));
        png(&root.join("imgs/c.png"));
        let csv = root.join("labels.csv");
        std::fs::write(
            &csv,
            "file,label,label_name\nimgs/a.png,1,pneumonia\nimgs/b.png,normal,normal\nimgs/c.png,,?\n",
        )
        .unwrap();
        let ds = scan(&csv, None, &names(&["normal", "pneumonia"])).unwrap();
        assert_eq!(ids_labels(&ds), vec![("imgs/a.png", Some(1)), ("imgs/b.png", Some(0)), ("imgs/c.png", None)]);
        assert!(ds.skipped.is_empty(), "{:?}", ds.skipped);

        // Headerless: columns are `path,label`.
        let csv2 = root.join("plain.csv");
        std::fs::write(&csv2, "imgs/c.png,0\nimgs/a.png,1\n").unwrap();
        let ds = scan(&csv2, None, &[]).unwrap();
        assert_eq!(ids_labels(&ds), vec![("imgs/c.png", Some(0)), ("imgs/a.png", Some(1))]);

        // An unrecognised header is neither a file nor a label: taken as a header, with a note.
        let csv4 = root.join("odd_header.csv");
        std::fs::write(&csv4, "scan,diagnosis\nimgs/a.png,1\n").unwrap();
        let ds = scan(&csv4, None, &[]).unwrap();
        assert_eq!(ids_labels(&ds), vec![("imgs/a.png", Some(1))]);
        assert!(ds.skipped.is_empty() && ds.notes[0].contains("taken as a header"), "{:?}", ds.notes);

        // --data FOLDER --labels CSV: ids relative to the folder, paths found under it.
        let csv3 = root.join("elsewhere.csv");
        std::fs::write(&csv3, "path,class\na.png,0\n").unwrap();
        let ds = scan(&root.join("imgs"), Some(&csv3), &[]).unwrap();
        assert_eq!(ids_labels(&ds), vec![("a.png", Some(0))]);
        assert_eq!(ds.samples[0].path, root.join("imgs/a.png"));
    }

    #[test]
    fn csv_bad_rows_are_skipped_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        png(&root.join("a.png"));
        png(&root.join("b.png"));
        std::fs::write(root.join("notes.txt"), "x").unwrap();
        let csv = root.join("labels.csv");
        std::fs::write(
            &csv,
            "path,label\na.png,0\nmissing.png,1\nb.png,cancer\nnotes.txt,0\nb.png,7\na.png,1\n,1\nb.png,1\n",
        )
        .unwrap();
        let ds = scan(&csv, None, &names(&["normal", "pneumonia"])).unwrap();
        assert_eq!(ids_labels(&ds), vec![("a.png", Some(0)), ("b.png", Some(1))]);
        let reasons: Vec<&str> = ds.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(reasons.len(), 6, "{reasons:#?}");
        assert!(reasons[0].contains("line 3") && reasons[0].contains("file not found"), "{}", reasons[0]);
        assert!(reasons[1].contains("unknown label 'cancer'"), "{}", reasons[1]);
        assert!(reasons[2].contains("unsupported file type"), "{}", reasons[2]);
        assert!(reasons[3].contains("label 7 is out of range"), "{}", reasons[3]);
        assert!(reasons[4].contains("listed again (first on line 2)"), "{}", reasons[4]);
        assert!(reasons[5].contains("no path"), "{}", reasons[5]);
        assert_eq!(ds.skipped[0].path, root.join("missing.png"));
    }

    #[test]
    fn missing_and_empty_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(scan(&missing, None, &[]), Err(DatasetError::NotFound { .. })));
        std::fs::write(dir.path().join("readme.txt"), "x").unwrap();
        let err = scan(dir.path(), None, &[]).unwrap_err();
        assert!(matches!(err, DatasetError::Empty { skipped: 0, .. }), "{err}");
        let csv = dir.path().join("only_bad.csv");
        std::fs::write(&csv, "path,label\nmissing.png,0\n").unwrap();
        assert!(matches!(scan(&csv, None, &[]), Err(DatasetError::Empty { skipped: 1, .. })));
        let empty_csv = dir.path().join("empty.csv");
        std::fs::write(&empty_csv, "").unwrap();
        assert!(matches!(scan(&empty_csv, None, &[]), Err(DatasetError::Csv { .. })));

        // A single image is a dataset of one unlabelled sample.
        png(&dir.path().join("one.png"));
        let ds = scan(&dir.path().join("one.png"), None, &[]).unwrap();
        assert_eq!(ids_labels(&ds), vec![("one.png", None)]);
    }

    #[test]
    fn pneumoniamnist_test_split_if_present() {
        let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/pneumoniamnist/test/labels.csv");
        if !csv.exists() {
            println!("skipped: {} is not present", csv.display());
            return;
        }
        let ds = scan(&csv, None, &names(&["normal", "pneumonia"])).unwrap();
        assert_eq!(ds.samples.len(), 624, "skipped: {:?}", ds.skipped);
        assert!(ds.skipped.is_empty());
        assert!(ds.samples.iter().all(|s| matches!(s.label, Some(0 | 1))));
        assert!(ds.samples.iter().any(|s| s.label == Some(0)) && ds.samples.iter().any(|s| s.label == Some(1)));
        let first = crate::io::decode(&ds.samples[0].path, crate::io::DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(first.channels, 1);
    }
}
