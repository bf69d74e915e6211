use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{Error, Result};

/// Dataset split a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training data.
    Train,
    /// Validation data (model selection, early stopping).
    Val,
    /// Held-out test data.
    Test,
}

/// The modalities a record can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    /// Inline text or a UTF-8 text file.
    Text,
    /// An image file.
    Image,
    /// An audio file.
    Audio,
    /// A video file.
    Video,
}

/// One sample of a manifest. Paths are resolved against the manifest's folder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Record {
    /// Unique sample id.
    pub id: String,
    /// Class label.
    pub label: String,
    /// Split, when the manifest assigns one.
    #[serde(default)]
    pub split: Option<Split>,
    /// Group for per-group (fairness) metrics.
    #[serde(default)]
    pub group: Option<String>,
    /// Inline text.
    #[serde(default)]
    pub text: Option<String>,
    /// A UTF-8 text file.
    #[serde(default)]
    pub text_path: Option<PathBuf>,
    /// An image file.
    #[serde(default)]
    pub image: Option<PathBuf>,
    /// An audio file.
    #[serde(default)]
    pub audio: Option<PathBuf>,
    /// A video file.
    #[serde(default)]
    pub video: Option<PathBuf>,
}

impl Record {
    /// Whether the record carries `modality` (a present, non-empty field).
    pub fn has(&self, modality: Modality) -> bool {
        let path_present = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| !p.as_os_str().is_empty());
        match modality {
            Modality::Text => self.text.as_ref().is_some_and(|t| !t.is_empty()) || path_present(&self.text_path),
            Modality::Image => path_present(&self.image),
            Modality::Audio => path_present(&self.audio),
            Modality::Video => path_present(&self.video),
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.text_path, &mut self.image, &mut self.audio, &mut self.video]
            .into_iter()
            .flatten()
        {
            if !path.as_os_str().is_empty() && path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
}

/// A manifest line that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedLine {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong with it.
    pub reason: String,
}

impl fmt::Display for RejectedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The records of a manifest, with the lines that were rejected.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// Usable records, in file order.
    pub records: Vec<Record>,
    /// Lines that could not be parsed, or that repeat an id.
    pub rejected: Vec<RejectedLine>,
}

impl Manifest {
    /// Reads a JSON Lines manifest (one JSON object per line; blank lines are skipped).
    pub fn load_jsonl(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut manifest = Self {
            path: path.to_path_buf(),
            ..Self::default()
        };
        let mut seen = std::collections::HashSet::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let reject = |reason: String| RejectedLine {
                line: index + 1,
                reason,
            };
            match serde_json::from_str::<Record>(line) {
                Ok(record) if !seen.insert(record.id.clone()) => {
                    manifest.rejected.push(reject(format!("duplicate id `{}`", record.id)));
                }
                Ok(mut record) => {
                    record.resolve_paths(base);
                    manifest.records.push(record);
                }
                Err(e) => manifest.rejected.push(reject(e.to_string())),
            }
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_records_resolves_paths_and_reports_bad_lines() -> Result<()> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("manifest.jsonl");
        let lines = [
            r#"{"id": "a", "label": "7", "split": "train", "image": "img/a.png", "audio": "/abs/a.wav"}"#,
            "",
            r#"{"id": "b", "label": "3", "text": "three", "audio": ""}"#,
            r#"{"id": "c", "label": "1", "split": "holdout"}"#,
            r#"{"id": "a", "label": "7"}"#,
            r#"{"label": "no id"}"#,
        ];
        std::fs::write(&path, lines.join("\n")).expect("write manifest");

        let manifest = Manifest::load_jsonl(&path)?;
        let ids: Vec<_> = manifest.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let a = &manifest.records[0];
        assert_eq!(a.split, Some(Split::Train));
        assert_eq!(a.image.as_deref(), Some(dir.path().join("img/a.png").as_path()));
        assert_eq!(a.audio.as_deref(), Some(Path::new("/abs/a.wav")));
        assert!(a.has(Modality::Image) && a.has(Modality::Audio) && !a.has(Modality::Text));
        let b = &manifest.records[1];
        assert!(
            b.has(Modality::Text) && !b.has(Modality::Audio),
            "empty field means missing"
        );

        let rejected: Vec<_> = manifest.rejected.iter().map(|r| r.line).collect();
        assert_eq!(rejected, [4, 5, 6]);
        assert!(manifest.rejected[0].reason.contains("holdout"));
        assert!(manifest.rejected[1].reason.contains("duplicate id `a`"));
        assert!(manifest.rejected[2].reason.contains("id"));
        Ok(())
    }

    #[test]
    fn unreadable_manifest_names_the_file() {
        let err = Manifest::load_jsonl("/nonexistent/m.jsonl")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("/nonexistent/m.jsonl")));
    }
}
