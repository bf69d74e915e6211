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

impl Modality {
    /// The manifest field: `text`, `image`, `audio` or `video`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Video => "video",
        }
    }
}

/// One sample of a manifest. Paths are resolved against the manifest's folder.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Record {
    /// Unique sample id (a JSON integer is read as its digits).
    #[serde(deserialize_with = "string_or_integer")]
    pub id: String,
    /// Class label; empty when the record has none (enough to predict, validate or
    /// extract; training and evaluation leave such records out and say so). A JSON integer
    /// is read as its digits: `3` and `"3"` are one class.
    #[serde(default, deserialize_with = "string_or_integer")]
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

/// The fields a record may have; any other is reported as unknown.
pub const RECORD_FIELDS: [&str; 9] = [
    "id",
    "label",
    "split",
    "group",
    "text",
    "text_path",
    "image",
    "audio",
    "video",
];

fn string_or_integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Integer(i64),
    }
    Ok(
        match Scalar::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected a string or an integer"))?
        {
            Scalar::Text(text) => text,
            Scalar::Integer(n) => n.to_string(),
        },
    )
}

impl Record {
    /// The split the record belongs to: its own, or train when the manifest gives none.
    pub fn split_or_train(&self) -> Split {
        self.split.unwrap_or(Split::Train)
    }

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

    /// Resolves relative paths against `base` (the manifest's folder); with
    /// [`PathScope::ManifestFolder`], a path that leaves it is an error naming the field.
    fn resolve_paths(&mut self, base: &Path, scope: PathScope) -> std::result::Result<(), String> {
        let fields = [
            ("text_path", &mut self.text_path),
            ("image", &mut self.image),
            ("audio", &mut self.audio),
            ("video", &mut self.video),
        ];
        for (field, path) in fields {
            let Some(path) = path.as_mut().filter(|p| !p.as_os_str().is_empty()) else {
                continue;
            };
            if path.is_relative() {
                *path = base.join(&*path);
            }
            if scope == PathScope::ManifestFolder && !lexically_inside(path, base) {
                return Err(format!(
                    "`{field}` {} is outside the manifest's folder {}: not read unless paths outside \
                     it are allowed (`allow_paths_outside_manifest` in a run configuration, \
                     `--allow-paths-outside-manifest` on the command line)",
                    path.display(),
                    absolute_lexical(base).display()
                ));
            }
        }
        Ok(())
    }
}

/// Which files a manifest may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathScope {
    /// Only files in the manifest's folder or below it (`../../etc/passwd` or
    /// `/proc/self/environ` reject the record). Checked on the path's text: a symbolic link
    /// inside the folder is followed.
    #[default]
    ManifestFolder,
    /// Any file the process can read.
    Anywhere,
}

/// `path` made absolute against the current folder with `.` and `..` folded away, without
/// touching the file system.
fn absolute_lexical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut folded = PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::ParentDir => {
                folded.pop();
            }
            std::path::Component::CurDir => {}
            other => folded.push(other),
        }
    }
    folded
}

fn lexically_inside(path: &Path, folder: &Path) -> bool {
    absolute_lexical(path).starts_with(absolute_lexical(folder))
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

/// A field (JSON Lines) or column (CSV) that is not a record field: most often a typo
/// (`imgae`) that would otherwise silently drop a modality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    /// The field or column name.
    pub name: String,
    /// First line it appears on (1-based).
    pub line: usize,
    /// Lines it appears on.
    pub lines: usize,
}

impl fmt::Display for UnknownField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // In serde's words, so that a caller can add a "did you mean" to it.
        let more = match self.lines {
            0 | 1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        write!(
            f,
            "line {}{more}: unknown field `{}`, expected one of {}; ignored",
            self.line,
            self.name,
            RECORD_FIELDS.map(|f| format!("`{f}`")).join(", ")
        )
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
    /// Fields or columns that are not record fields, in order of first appearance.
    pub unknown_fields: Vec<UnknownField>,
}

/// Largest manifest read, in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 30;

/// Longest manifest line (a record), in bytes: inline text beyond this belongs in a
/// `text_path` file.
pub const MAX_LINE_BYTES: usize = 16 << 20;

fn too_long(bytes: usize) -> Option<String> {
    (bytes > MAX_LINE_BYTES).then(|| format!("{bytes} bytes long, over the limit of {MAX_LINE_BYTES} bytes"))
}

/// The manifest's bytes without a UTF-8 byte-order mark.
fn manifest_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = crate::read_bounded(path, MAX_MANIFEST_BYTES).map_err(|reason| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(reason),
    })?;
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    Ok(bytes)
}

impl Manifest {
    fn note_unknown(&mut self, name: &str, line: usize) {
        match self.unknown_fields.iter_mut().find(|u| u.name == name) {
            Some(known) => known.lines += 1,
            None => self.unknown_fields.push(UnknownField {
                name: name.to_string(),
                line,
                lines: 1,
            }),
        }
    }
}

/// A CSV row: every column optional text, an empty cell meaning "absent".
#[derive(Debug, Deserialize)]
struct CsvRow {
    #[serde(default)]
    id: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    split: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    text_path: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    audio: String,
    #[serde(default)]
    video: String,
}

impl CsvRow {
    fn into_record(self) -> std::result::Result<Record, String> {
        let some = |s: String| (!s.is_empty()).then_some(s);
        if self.id.is_empty() {
            return Err("missing field `id`".into());
        }
        let split = match self.split.as_str() {
            "" => None,
            "train" => Some(Split::Train),
            "val" => Some(Split::Val),
            "test" => Some(Split::Test),
            other => return Err(format!("unknown split `{other}`, expected `train`, `val` or `test`")),
        };
        Ok(Record {
            id: self.id,
            label: self.label,
            split,
            group: some(self.group),
            text: some(self.text),
            text_path: some(self.text_path).map(PathBuf::from),
            image: some(self.image).map(PathBuf::from),
            audio: some(self.audio).map(PathBuf::from),
            video: some(self.video).map(PathBuf::from),
        })
    }
}

impl Manifest {
    /// Reads a manifest by its extension: `.csv` (a header row naming the columns) or JSON
    /// Lines (anything else).
    /// Files outside the manifest's folder reject their record (see [`Self::load_with`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, PathScope::ManifestFolder)
    }

    /// [`Self::load`] with the files records may name.
    pub fn load_with(path: impl AsRef<Path>, scope: PathScope) -> Result<Self> {
        let path = path.as_ref();
        let bytes = manifest_bytes(path)?;
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            Self::parse_csv(&bytes, path, scope)
        } else {
            Ok(Self::parse_jsonl(&bytes, path, scope))
        }
    }

    /// Reads a CSV manifest: columns `id`, `label`, and any of `split`, `group`, `text`,
    /// `text_path`, `image`, `audio`, `video` (others are ignored); an empty cell is an
    /// absent value. Bad rows are rejected with their line number.
    pub fn load_csv(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::parse_csv(&manifest_bytes(path)?, path, PathScope::ManifestFolder)
    }

    /// [`Self::load_csv`] of bytes already read (without a byte-order mark); `path` names
    /// the manifest and its folder resolves relative paths; `scope` says which files records
    /// may name.
    pub fn parse_csv(bytes: &[u8], path: &Path, scope: PathScope) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(bytes);
        let base = path.parent().unwrap_or(Path::new("."));
        let mut manifest = Self {
            path: path.to_path_buf(),
            ..Self::default()
        };
        let mut seen = std::collections::HashSet::new();
        let headers = reader
            .headers()
            .map_err(|e| Error::Csv {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
            .clone();
        for name in headers.iter().filter(|h| !RECORD_FIELDS.contains(h)) {
            manifest.note_unknown(name, 1);
        }
        for row in reader.records() {
            let (line, parsed) = match row {
                Err(e) => (e.position().map_or(0, |p| p.line() as usize), Err(e.to_string())),
                Ok(row) => {
                    let line = row.position().map_or(0, |p| p.line() as usize);
                    let parsed = match too_long(row.as_slice().len()) {
                        Some(reason) => Err(reason),
                        None => row
                            .deserialize::<CsvRow>(Some(&headers))
                            .map_err(|e| e.to_string())
                            .and_then(CsvRow::into_record),
                    };
                    (line, parsed)
                }
            };
            match parsed {
                Err(reason) => manifest.rejected.push(RejectedLine { line, reason }),
                Ok(record) if !seen.insert(record.id.clone()) => {
                    manifest.rejected.push(RejectedLine {
                        line,
                        reason: format!("duplicate id `{}`", record.id),
                    });
                }
                Ok(mut record) => match record.resolve_paths(base, scope) {
                    Ok(()) => manifest.records.push(record),
                    Err(reason) => manifest.rejected.push(RejectedLine { line, reason }),
                },
            }
        }
        Ok(manifest)
    }

    /// Reads a JSON Lines manifest (one JSON object per line; blank lines are skipped).
    pub fn load_jsonl(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Ok(Self::parse_jsonl(
            &manifest_bytes(path)?,
            path,
            PathScope::ManifestFolder,
        ))
    }

    /// [`Self::load_jsonl`] of bytes already read (without a byte-order mark); `path`
    /// names the manifest and its folder resolves relative paths; `scope` says which files
    /// records may name.
    pub fn parse_jsonl(bytes: &[u8], path: &Path, scope: PathScope) -> Self {
        let base = path.parent().unwrap_or(Path::new("."));
        let mut manifest = Self {
            path: path.to_path_buf(),
            ..Self::default()
        };
        let mut seen = std::collections::HashSet::new();
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let reject = |reason: String| RejectedLine {
                line: index + 1,
                reason,
            };
            if let Some(reason) = too_long(raw.len()) {
                manifest.rejected.push(reject(reason));
                continue;
            }
            // One bad line costs that line, not the manifest.
            let line = match std::str::from_utf8(raw.strip_suffix(b"\r").unwrap_or(raw)) {
                Ok(line) => line,
                Err(e) => {
                    manifest.rejected.push(reject(format!(
                        "not UTF-8 (invalid byte at column {})",
                        e.valid_up_to() + 1
                    )));
                    continue;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let fields = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line);
            if let Ok(fields) = &fields {
                for name in fields.keys().filter(|k| !RECORD_FIELDS.contains(&k.as_str())) {
                    manifest.note_unknown(name, index + 1);
                }
            }
            match fields.and_then(|f| Record::deserialize(serde_json::Value::Object(f))) {
                Ok(record) if !seen.insert(record.id.clone()) => {
                    manifest.rejected.push(reject(format!("duplicate id `{}`", record.id)));
                }
                Ok(mut record) => match record.resolve_paths(base, scope) {
                    Ok(()) => manifest.records.push(record),
                    Err(reason) => manifest.rejected.push(reject(reason)),
                },
                Err(e) => manifest.rejected.push(reject(e.to_string())),
            }
        }
        manifest
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

        let manifest = Manifest::load_with(&path, PathScope::Anywhere)?;
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
    fn csv_manifest_with_empty_cells_and_bad_rows() -> Result<()> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("manifest.csv");
        let rows = [
            "id,label,split,image,audio,text,notes",
            "a,7,train,img/a.png,,,first",
            "b,3,,,snd/b.wav,\"three, with a comma\",",
            "c,1,holdout,,,,",
            ",2,test,x.png,,,",
            "a,7,val,,,,",
            "d,,test,,,,",
        ];
        std::fs::write(&path, rows.join("\n")).expect("write manifest");
        let manifest = Manifest::load(&path)?;
        let ids: Vec<_> = manifest.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "d"], "a record without a label is kept (to predict)");
        assert_eq!(manifest.records[2].label, "");
        let (a, b) = (&manifest.records[0], &manifest.records[1]);
        assert_eq!(a.image.as_deref(), Some(dir.path().join("img/a.png").as_path()));
        assert!(a.has(Modality::Image) && !a.has(Modality::Audio) && !a.has(Modality::Text));
        assert_eq!((b.split, b.text.as_deref()), (None, Some("three, with a comma")));
        assert_eq!(b.audio.as_deref(), Some(dir.path().join("snd/b.wav").as_path()));
        let rejected: Vec<_> = manifest.rejected.iter().map(|r| (r.line, r.reason.clone())).collect();
        assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), [4, 5, 6]);
        assert!(rejected[0].1.contains("holdout") && rejected[1].1.contains("`id`"));
        assert!(rejected[2].1.contains("duplicate id `a`"));
        Ok(())
    }

    #[test]
    fn bad_bytes_cost_one_line_and_typos_are_reported() -> Result<()> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("manifest.jsonl");
        let mut bytes = b"\xEF\xBB\xBF".to_vec();
        bytes.extend(b"{\"id\": \"a\", \"label\": 3, \"imgae\": \"a.png\"}\r\n");
        bytes.extend(b"{\"id\": \"caf\xe9\", \"label\": \"1\"}\n");
        bytes.extend(b"{\"id\": 7, \"label\": \"3\", \"imgae\": \"b.png\", \"note\": 1}\n");
        bytes.extend(b"{\"id\": \"c\", \"label\": 2.5}\n");
        std::fs::write(&path, &bytes).expect("write manifest");
        let manifest = Manifest::load(&path)?;
        let got: Vec<(&str, &str)> = manifest
            .records
            .iter()
            .map(|r| (r.id.as_str(), r.label.as_str()))
            .collect();
        assert_eq!(got, [("a", "3"), ("7", "3")], "the BOM is not part of the first record");
        let rejected: Vec<(usize, &str)> = manifest.rejected.iter().map(|r| (r.line, r.reason.as_str())).collect();
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0], (2, "not UTF-8 (invalid byte at column 12)"));
        assert_eq!(rejected[1].0, 4);
        assert!(rejected[1].1.contains("a string or an integer"), "{}", rejected[1].1);
        assert_eq!(
            manifest.unknown_fields,
            [
                UnknownField {
                    name: "imgae".into(),
                    line: 1,
                    lines: 2
                },
                UnknownField {
                    name: "note".into(),
                    line: 3,
                    lines: 1
                }
            ]
        );
        assert!(
            manifest.unknown_fields[0]
                .to_string()
                .starts_with("line 1 and 1 more: unknown field `imgae`, expected one of `id`")
        );

        let csv = dir.path().join("manifest.csv");
        let mut bytes = b"\xEF\xBB\xBFid,label,imagee\n".to_vec();
        bytes.extend(b"a,1,x.png\n");
        bytes.extend(b"b\xff,2,y.png\n");
        bytes.extend(b"c,,z.png\n");
        bytes.extend(b",4,w.png\n");
        std::fs::write(&csv, &bytes).expect("write manifest");
        let manifest = Manifest::load(&csv)?;
        let ids: Vec<&str> = manifest.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"], "`id` is found behind the BOM");
        let lines: Vec<usize> = manifest.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [3, 5], "line numbers count the header: {:?}", manifest.rejected);
        assert_eq!(manifest.unknown_fields[0].name, "imagee");
        Ok(())
    }

    #[test]
    fn over_long_lines_cost_that_line() {
        let text = "word ".repeat(MAX_LINE_BYTES / 5 + 1);
        let jsonl = format!("{{\"id\": \"long\", \"text\": \"{text}\"}}\n{{\"id\": \"short\", \"text\": \"ok\"}}");
        let manifest = Manifest::parse_jsonl(jsonl.as_bytes(), Path::new("m.jsonl"), PathScope::ManifestFolder);
        assert_eq!(manifest.records.len(), 1);
        assert_eq!(manifest.rejected[0].line, 1);
        assert!(manifest.rejected[0].reason.contains("over the limit of 16777216 bytes"));
        let csv = format!("id,text\nlong,{text}\nshort,ok\n");
        let manifest = Manifest::parse_csv(csv.as_bytes(), Path::new("m.csv"), PathScope::ManifestFolder);
        let manifest = manifest.expect("parsed");
        assert_eq!(
            manifest.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["short"]
        );
        assert_eq!(manifest.rejected[0].line, 2);
    }

    #[test]
    fn files_outside_the_manifest_folder_need_an_opt_in() -> Result<()> {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data folder");
        let inside = data.join("img/a.png");
        let lines = [
            r#"{"id": "rel", "label": "1", "image": "img/./b/../a.png"}"#.to_string(),
            format!(r#"{{"id": "abs", "label": "1", "image": "{}"}}"#, inside.display()),
            r#"{"id": "up", "label": "1", "audio": "../../etc/passwd"}"#.into(),
            r#"{"id": "proc", "label": "1", "text_path": "/proc/self/environ"}"#.into(),
            r#"{"id": "sneaky", "label": "1", "video": "img/../../data2/v.mp4"}"#.into(),
        ];
        let jsonl = data.join("m.jsonl");
        std::fs::write(&jsonl, lines.join("\n")).expect("write manifest");
        let manifest = Manifest::load(&jsonl)?;
        let ids: Vec<&str> = manifest.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["rel", "abs"]);
        let rejected: Vec<(usize, &str)> = manifest.rejected.iter().map(|r| (r.line, r.reason.as_str())).collect();
        assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(rejected[0].1.starts_with("`audio` "), "{}", rejected[0].1);
        assert!(rejected[0].1.contains("allow_paths_outside_manifest"));
        assert!(rejected[1].1.starts_with("`text_path` /proc/self/environ is outside"));
        assert!(rejected[2].1.starts_with("`video` "));
        let anywhere = Manifest::load_with(&jsonl, PathScope::Anywhere)?;
        assert_eq!(anywhere.records.len(), 5);
        assert!(anywhere.rejected.is_empty());

        let csv = data.join("m.csv");
        std::fs::write(&csv, "id,label,image\nok,1,x.png\nout,1,../x.png\n").expect("write manifest");
        let manifest = Manifest::load(&csv)?;
        assert_eq!(manifest.records.len(), 1);
        assert_eq!(manifest.rejected[0].line, 3);
        // A manifest named by a relative path resolves against the current folder.
        let relative = Manifest::parse_jsonl(
            b"{\"id\": \"a\", \"image\": \"x.png\"}",
            Path::new("m.jsonl"),
            PathScope::ManifestFolder,
        );
        assert_eq!(relative.records.len(), 1);
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
