//! The model config (`MODEL.toml`): how scans are turned into this model's
//! input (size, resize filter, channels, DICOM window, PNG scale,
//! normalisation) and what its classes are called. This module finds the
//! file beside the model (`models/foo.onnx` → `models/foo.model.toml`, or an
//! explicit `--model-config PATH`), parses and validates it, and says which
//! defaults were used. It does not look at the model or the scans: values
//! that depend on them (the model's size, channel and class counts, a file's
//! own VOI window) are applied by the caller through the helpers below.
//!
//! Every key is optional. Unknown keys, wrong types and invalid values are
//! errors naming the file, the line and the key (`models/foo.model.toml:7:
//! key 'window.width': ...`), never silently ignored.

use crate::preprocess::ResizeFilter;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A model config that cannot be read or used, or a preprocessing spec that
/// cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the model config: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{}:{line}: {}{reason}",
        path.display(),
        key.as_ref().map(|k| format!("key '{k}': ")).unwrap_or_default()
    )]
    Invalid { path: PathBuf, line: usize, key: Option<String>, reason: String },
    /// The config does not fit the model (e.g. class names for another class count).
    #[error("{}: {reason}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "model config".into()))]
    Model { path: Option<PathBuf>, reason: String },
    #[error("cannot build the preprocessing: {reason}")]
    Preprocess { reason: String },
}

/// A parsed, validated model config. Unset keys stay `None` (serialised as
/// `null`): the defaults depend on the model and are applied by the helpers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub input: InputConfig,
    #[serde(default)]
    pub window: WindowConfig,
    #[serde(default)]
    pub png: PngConfig,
    #[serde(default)]
    pub normalize: NormalizeConfig,
    #[serde(default)]
    pub classes: ClassesConfig,
    /// The file this config was read from, for error messages.
    #[serde(skip)]
    source: Option<PathBuf>,
}

/// `[input]`: the model input the scan is brought to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// `[H, W]` the scan is resized to; default: the model's own H, W.
    pub size: Option<[usize; 2]>,
    /// Default bilinear.
    pub resize: Option<ResizeFilter>,
    /// Channels the model takes (1 or 3), checked against the model; default:
    /// the model's C. Each scan keeps its own channels: grey is replicated
    /// when the model takes 3, RGB becomes BT.601 luma when it takes 1.
    pub channels: Option<usize>,
}

/// `[window]`: the DICOM display window, in physical units (HU for CT).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    pub center: Option<f64>,
    pub width: Option<f64>,
    /// Use each file's own WindowCenter/WindowWidth instead (falling back to
    /// center/width when a file has none).
    #[serde(default)]
    pub use_file_voi: bool,
    /// The unit centre and width are in (e.g. `"HU"`): the window then applies
    /// only to scans whose modality LUT gives that unit; others use their own
    /// VOI window. Unset: it applies to every greyscale DICOM.
    pub units: Option<String>,
}

/// `[png]`: how PNG grey levels become display units.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PngConfig {
    pub scale: Option<PngScale>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PngScale {
    /// Divide by 2^bits − 1, so values lie in [0, 1].
    #[default]
    #[serde(rename = "full-range")]
    FullRange,
}

/// `[normalize]`: `(u − mean[c]) / std[c]` after the resize; length 1 applies to every channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeConfig {
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
}

/// `[classes]`: class names and the disease class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassesConfig {
    pub names: Option<Vec<String>>,
    pub positive: Option<String>,
}

impl ModelConfig {
    /// The config file looked for beside a model: `models/foo.onnx` → `models/foo.model.toml`.
    pub fn sibling_path(model_path: &Path) -> PathBuf {
        model_path.with_extension("model.toml")
    }

    pub fn load(path: &Path) -> Result<ModelConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
        ModelConfig::parse(&text, path)
    }

    /// Parses config text; `path` names the file in errors.
    pub fn parse(src: &str, path: &Path) -> Result<ModelConfig, ConfigError> {
        let mut cfg: ModelConfig = toml::from_str(src).map_err(|e| {
            let offset = e.span().map(|s| s.start.min(src.len()));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line: offset.map(|o| line_of(src, o)).unwrap_or(1),
                key: offset.and_then(|o| key_of(src, o, e.message())),
                reason: e.message().trim().to_string(),
            }
        })?;
        cfg.source = Some(path.to_path_buf());
        cfg.validate(src, path)?;
        Ok(cfg)
    }

    /// `explicit` (`--model-config`) if given, else the sibling file if it
    /// exists, else defaults. Returns the config, the file used, and one line
    /// per default applied (for the CLI to print).
    pub fn resolve(
        model_path: &Path,
        explicit: Option<&Path>,
    ) -> Result<(ModelConfig, Option<PathBuf>, Vec<String>), ConfigError> {
        let file = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => Some(ModelConfig::sibling_path(model_path)).filter(|p| p.is_file()),
        };
        let cfg = match &file {
            Some(p) => ModelConfig::load(p)?,
            None => ModelConfig::default(),
        };
        let defaults = cfg.defaults_used();
        Ok((cfg, file, defaults))
    }

    /// The file this config came from (`None` for defaults).
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// One line per key left to its default.
    pub fn defaults_used(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut note = |unset: bool, line: &str| {
            if unset {
                out.push(line.to_string());
            }
        };
        note(self.input.size.is_none(), "input.size: the model's own H×W (no resize unless the scan differs)");
        note(self.input.resize.is_none(), "input.resize: bilinear");
        note(self.input.channels.is_none(), "input.channels: the model's channel count");
        note(
            self.window.center.is_none() && !self.window.use_file_voi,
            "window: none set (DICOM scans need their own WindowCenter/WindowWidth)",
        );
        note(self.png.scale.is_none(), "png.scale: full-range (÷ 2^bits − 1)");
        note(self.normalize.mean.is_none(), "normalize.mean: 0 (normalisation inside the model)");
        note(self.normalize.std.is_none(), "normalize.std: 1 (normalisation inside the model)");
        note(self.classes.names.is_none(), "classes.names: \"0\", \"1\", … from the model's class count");
        note(self.classes.positive.is_none(), "classes.positive: none");
        out
    }

    /// `(center, width)` in physical units, when both are set.
    pub fn window(&self) -> Option<(f64, f64)> {
        self.window.center.zip(self.window.width)
    }

    /// The configured window, if it applies to scans whose values are in `units`.
    pub fn window_for(&self, units: &str) -> Option<(f64, f64)> {
        self.window().filter(|_| self.window.units.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(units)))
    }

    pub fn resize(&self) -> ResizeFilter {
        self.input.resize.unwrap_or(ResizeFilter::Bilinear)
    }

    /// `[H, W]` of the model input: the configured size, else the model's.
    pub fn input_size(&self, model_hw: [usize; 2]) -> [usize; 2] {
        self.input.size.unwrap_or(model_hw)
    }

    /// Channels of the attack variable: the configured count, else the model's.
    pub fn channels(&self, model_channels: usize) -> usize {
        self.input.channels.unwrap_or(model_channels)
    }

    pub fn png_scale(&self) -> PngScale {
        self.png.scale.unwrap_or_default()
    }

    /// `(mean, std)` per channel (length 1 or C); default `([0], [1])`.
    pub fn mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        (
            self.normalize.mean.clone().unwrap_or_else(|| vec![0.0]),
            self.normalize.std.clone().unwrap_or_else(|| vec![1.0]),
        )
    }

    /// The configured names, or `"0"`, `"1"`, … A name missing for a class
    /// (a list shorter than `classes`) is its number; [`ModelConfig::positive_class`]
    /// refuses a list of the wrong length.
    pub fn class_names(&self, classes: usize) -> Vec<String> {
        let names = self.classes.names.as_deref().unwrap_or_default();
        (0..classes).map(|c| names.get(c).cloned().unwrap_or_else(|| c.to_string())).collect()
    }

    /// The index of the disease class, if one is named. Errors when the names
    /// do not match the model's class count or the class is unknown.
    pub fn positive_class(&self, classes: usize) -> Result<Option<usize>, ConfigError> {
        let err = |reason: String| ConfigError::Model { path: self.source.clone(), reason };
        if let Some(names) = &self.classes.names
            && names.len() != classes
        {
            return Err(err(format!(
                "classes.names lists {} classes but the model has {classes}: {names:?}",
                names.len()
            )));
        }
        let Some(positive) = &self.classes.positive else { return Ok(None) };
        let names = self.class_names(classes);
        match names.iter().position(|n| n == positive) {
            Some(i) => Ok(Some(i)),
            None => Err(err(format!("classes.positive '{positive}' is not one of the classes {names:?}"))),
        }
    }

    fn validate(&self, src: &str, path: &Path) -> Result<(), ConfigError> {
        let err = |table: &str, key: &str, reason: String| {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of_key(src, table, key),
                key: Some(format!("{table}.{key}")),
                reason,
            })
        };
        if let Some(s) = self.input.size
            && s.contains(&0)
        {
            return err("input", "size", format!("sizes must be positive, got {s:?}"));
        }
        if let Some(c) = self.input.channels
            && c != 1
            && c != 3
        {
            return err("input", "channels", format!("must be 1 (grey) or 3 (RGB), got {c}"));
        }
        let w = &self.window;
        if let Some(c) = w.center
            && !c.is_finite()
        {
            return err("window", "center", format!("must be a finite number, got {c}"));
        }
        if let Some(v) = w.width
            && !(v.is_finite() && v > 0.0)
        {
            return err("window", "width", format!("must be a finite number > 0, got {v}"));
        }
        match (w.center, w.width) {
            (Some(_), None) => return err("window", "center", "needs window.width too".into()),
            (None, Some(_)) => return err("window", "width", "needs window.center too".into()),
            _ => {}
        }
        let n = &self.normalize;
        if let Some(m) = &n.mean
            && (m.is_empty() || m.iter().any(|v| !v.is_finite()))
        {
            return err("normalize", "mean", format!("needs 1 or C finite numbers, got {m:?}"));
        }
        if let Some(s) = &n.std
            && (s.is_empty() || s.iter().any(|v| !(v.is_finite() && *v > 0.0)))
        {
            return err("normalize", "std", format!("needs 1 or C finite numbers > 0, got {s:?}"));
        }
        if let (Some(m), Some(s)) = (&n.mean, &n.std)
            && m.len() != s.len()
            && m.len() != 1
            && s.len() != 1
        {
            return err("normalize", "std", format!("has {} values but mean has {}", s.len(), m.len()));
        }
        if let Some(names) = &self.classes.names {
            if names.is_empty() {
                return err("classes", "names", "must list at least one class".into());
            }
            if let Some(dup) = names.iter().enumerate().find(|&(i, n)| names[..i].contains(n)) {
                return err("classes", "names", format!("'{}' is listed twice", dup.1));
            }
            if let Some(p) = &self.classes.positive
                && !names.contains(p)
            {
                return err("classes", "positive", format!("'{p}' is not one of the names {names:?}"));
            }
        }
        Ok(())
    }
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The `[table]` header in force on the line that starts at `line_start`, if any.
fn table_before(src: &str, line_start: usize) -> Option<String> {
    src[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find_map(|l| l.strip_prefix('[').and_then(|l| l.split(']').next()).map(|t| t.trim().to_string()))
}

/// The key a toml error concerns, qualified by its table: named in the
/// message for unknown fields, otherwise the left-hand side of the
/// `key = value` line the error points at (an unknown `[table]` is itself
/// the key).
fn key_of(src: &str, offset: usize, message: &str) -> Option<String> {
    let line_start = src[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = src[line_start..].lines().next().unwrap_or("").trim();
    let header = line.strip_prefix('[').and_then(|t| t.split(']').next()).map(|t| t.trim().to_string());
    let qualify = |k: &str| match (&header, table_before(src, line_start)) {
        (None, Some(t)) if !t.is_empty() => format!("{t}.{k}"),
        _ => k.to_string(),
    };
    if let Some(rest) = message.split("unknown field `").nth(1) {
        return rest.split('`').next().map(qualify);
    }
    if header.is_some() {
        return header;
    }
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    (!k.is_empty()).then(|| qualify(k))
}

/// The line of `key` in `[table]` (or of the table's header, or 1).
fn line_of_key(src: &str, table: &str, key: &str) -> usize {
    let mut current = String::new();
    let mut header = None;
    for (i, line) in src.lines().enumerate() {
        let l = line.trim();
        if let Some(t) = l.strip_prefix('[') {
            current = t.split(']').next().unwrap_or("").trim().to_string();
            if current == table {
                header = Some(i + 1);
            }
            continue;
        }
        let Some((k, _)) = l.split_once('=') else { continue };
        let k = k.trim();
        if (current == table && k == key) || (current.is_empty() && k == format!("{table}.{key}")) {
            return i + 1;
        }
    }
    header.unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"# models/ct_nodule_cnn.model.toml
[input]
size = [64, 64]          # H, W the scan is resized to; default: the model's own H, W
resize = "bilinear"      # nearest | bilinear | area; default bilinear
channels = 1             # default: the model's C; grey is replicated to 3 when the model needs 3
[window]                 # DICOM only: physical units (HU for CT)
center = -600.0
width = 1500.0
use_file_voi = false     # true: use each file's own WindowCenter/Width instead
units = "HU"
[png]
scale = "full-range"     # the only value for now: divide by 2^bits − 1
[normalize]
mean = [0.5]
std = [0.5]              # default: mean 0, std 1 (normalisation inside the model)
[classes]
names = ["normal", "nodule"]   # default: "0", "1", ... from the model's class count
positive = "nodule"            # the disease class; default: none
"#;

    fn parse(src: &str) -> Result<ModelConfig, ConfigError> {
        ModelConfig::parse(src, Path::new("models/m.model.toml"))
    }

    /// The error's message, checked to name the file, `line` and `key`.
    fn error_at(src: &str, line: usize, key: &str) -> String {
        let e = parse(src).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("models/m.model.toml:{line}: key '{key}': ")), "{msg}");
        msg
    }

    #[test]
    fn parses_the_documented_example() {
        let cfg = parse(EXAMPLE).unwrap();
        assert_eq!(cfg.input.size, Some([64, 64]));
        assert_eq!(cfg.resize(), ResizeFilter::Bilinear);
        assert_eq!(cfg.channels(3), 1);
        assert_eq!(cfg.window(), Some((-600.0, 1500.0)));
        assert!(!cfg.window.use_file_voi);
        // The window is in HU: it applies to CT, not to a radiograph in unspecified units.
        assert_eq!(cfg.window_for("hu"), Some((-600.0, 1500.0)));
        assert_eq!(cfg.window_for("US"), None);
        assert_eq!(cfg.png_scale(), PngScale::FullRange);
        assert_eq!(cfg.mean_std(), (vec![0.5], vec![0.5]));
        assert_eq!(cfg.class_names(2), ["normal", "nodule"]);
        assert_eq!(cfg.positive_class(2).unwrap(), Some(1));
        assert!(cfg.defaults_used().is_empty(), "{:?}", cfg.defaults_used());
        assert_eq!(cfg.source(), Some(Path::new("models/m.model.toml")));
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["input"]["resize"], "bilinear");
        assert_eq!(json["png"]["scale"], "full-range");
    }

    #[test]
    fn missing_keys_take_defaults_and_are_listed() {
        let cfg = parse("[input]\nresize = \"area\"\n").unwrap();
        assert_eq!(cfg.resize(), ResizeFilter::Area);
        assert_eq!(cfg.input_size([32, 48]), [32, 48]);
        assert_eq!(cfg.channels(3), 3);
        assert_eq!(cfg.window(), None);
        assert_eq!(cfg.mean_std(), (vec![0.0], vec![1.0]));
        assert_eq!(cfg.class_names(3), ["0", "1", "2"]);
        assert_eq!(cfg.positive_class(3).unwrap(), None);
        let d = cfg.defaults_used();
        assert!(!d.iter().any(|l| l.starts_with("input.resize")), "{d:?}");
        for key in ["input.size", "input.channels", "window", "png.scale", "normalize.mean", "classes.names"] {
            assert!(d.iter().any(|l| l.starts_with(key)), "{key} not listed in {d:?}");
        }
        assert_eq!(ModelConfig::default().defaults_used().len(), 9);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let msg = error_at("[input]\nsize = [8, 8]\n\n[window]\ncentre = 40.0\n", 5, "window.centre");
        assert!(msg.contains("unknown field"), "{msg}");
        error_at("[input]\nsize = [8, 8]\n[output]\nx = 1\n", 3, "output");
        error_at("colour = 1\n", 1, "colour");
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        error_at("[window]\ncenter = 40.0\nwidth = \"wide\"\n", 3, "window.width");
        error_at("[input]\n\nsize = 64\n", 3, "input.size");
        error_at("[input]\nresize = \"bicubic\"\n", 2, "input.resize");
        error_at("[png]\nscale = \"percentile\"\n", 2, "png.scale");
        error_at("[normalize]\nmean = 0.5\n", 2, "normalize.mean");
    }

    #[test]
    fn invalid_values_name_their_key_and_line() {
        error_at("[window]\ncenter = 40.0\nwidth = 0.0\n", 3, "window.width");
        error_at("[window]\n\ncenter = 40.0\n", 3, "window.center");
        error_at("[normalize]\nmean = [0.5]\nstd = [0.0]\n", 3, "normalize.std");
        error_at("[normalize]\nmean = [0.1, 0.2, 0.3]\nstd = [0.5, 0.5]\n", 3, "normalize.std");
        error_at("[input]\nsize = [0, 64]\n", 2, "input.size");
        error_at("[input]\nchannels = 2\n", 2, "input.channels");
        error_at("[classes]\nnames = [\"a\", \"b\"]\npositive = \"c\"\n", 3, "classes.positive");
        // Mean of length 3 with one std (broadcast) is fine.
        parse("[normalize]\nmean = [0.485, 0.456, 0.406]\nstd = [0.25]\n").unwrap();
    }

    #[test]
    fn positive_class_checks_the_model_class_count() {
        let cfg = parse("[classes]\nnames = [\"normal\", \"nodule\"]\npositive = \"nodule\"\n").unwrap();
        let e = cfg.positive_class(3).unwrap_err().to_string();
        assert!(e.starts_with("models/m.model.toml: classes.names lists 2 classes but the model has 3"), "{e}");
        assert_eq!(cfg.class_names(3), ["normal", "nodule", "2"]);
        let numbered = parse("[classes]\npositive = \"1\"\n").unwrap();
        assert_eq!(numbered.positive_class(2).unwrap(), Some(1));
        assert!(numbered.positive_class(1).is_err());
    }

    #[test]
    fn resolve_prefers_explicit_then_sibling_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("ct.onnx");
        let (cfg, file, defaults) = ModelConfig::resolve(&model, None).unwrap();
        assert_eq!((cfg, file, defaults.len()), (ModelConfig::default(), None, 9));

        let sibling = dir.path().join("ct.model.toml");
        assert_eq!(ModelConfig::sibling_path(&model), sibling);
        std::fs::write(&sibling, "[input]\nresize = \"nearest\"\n").unwrap();
        let (cfg, file, defaults) = ModelConfig::resolve(&model, None).unwrap();
        assert_eq!((cfg.resize(), file.as_deref()), (ResizeFilter::Nearest, Some(sibling.as_path())));
        assert_eq!(defaults.len(), 8);

        let explicit = dir.path().join("other.toml");
        std::fs::write(&explicit, "[input]\nresize = \"area\"\n").unwrap();
        let (cfg, file, _) = ModelConfig::resolve(&model, Some(&explicit)).unwrap();
        assert_eq!((cfg.resize(), file.as_deref()), (ResizeFilter::Area, Some(explicit.as_path())));

        let missing = dir.path().join("missing.toml");
        let e = ModelConfig::resolve(&model, Some(&missing)).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }) && e.to_string().contains("missing.toml"), "{e}");
    }
}
