use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

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

impl Split {
    /// Every split, in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The split's name in manifests, files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A split name that is none of `train`, `val`, `test`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown split `{0}` (train, val or test)")]
pub struct UnknownSplit(pub String);

impl std::str::FromStr for Split {
    type Err = UnknownSplit;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        Split::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| UnknownSplit(text.to_string()))
    }
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
    /// Table cells (numbers and categories), the record's `table` field.
    Table,
}

impl Modality {
    /// The manifest field: `text`, `image`, `audio` or `video`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Table => "table",
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
    /// Group for per-group (fairness) metrics and group-robust training.
    #[serde(default)]
    pub group: Option<String>,
    /// How much the record counts in the training loss (a finite number ≥ 0; 1 without
    /// one): a weight of 2 counts as the record twice.
    #[serde(default, deserialize_with = "weight")]
    pub weight: Option<f64>,
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
    /// Table cells by column name (a JSON object of strings or numbers; with a column
    /// mapping, a manifest's columns of role `table`); an empty cell is a missing value.
    #[serde(default, deserialize_with = "cells")]
    pub table: BTreeMap<String, String>,
}

/// The fields a record may have; any other is reported as unknown.
pub const RECORD_FIELDS: [&str; 11] = [
    "id",
    "label",
    "split",
    "group",
    "weight",
    "text",
    "text_path",
    "image",
    "audio",
    "video",
    "table",
];

/// A table cell given as an array or an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table cell `{column}`: expected a string, a number, a boolean or null")]
pub struct BadCell {
    /// The cell's column.
    pub column: String,
}

/// A table cell given as JSON, as a manifest's text holds it (null is an empty, missing
/// cell); an array or object is an error naming the column.
pub fn cell_text(column: &str, value: serde_json::Value) -> std::result::Result<String, BadCell> {
    match value {
        serde_json::Value::Null => Ok(String::new()),
        serde_json::Value::String(text) => Ok(text),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        _ => Err(BadCell { column: column.into() }),
    }
}

fn cells<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<BTreeMap<String, String>, D::Error> {
    let object = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
    object
        .into_iter()
        .map(|(column, value)| {
            cell_text(&column, value)
                .map(|cell| (column, cell))
                .map_err(serde::de::Error::custom)
        })
        .collect()
}

/// The fields of a record that name files.
pub const FILE_FIELDS: [&str; 4] = ["text_path", "image", "audio", "video"];

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

/// A record's weight: a number or a number's text (a CSV cell), finite and ≥ 0; an
/// empty cell is no weight.
fn weight<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Number(f64),
        Text(String),
    }
    let value = match Option::<Scalar>::deserialize(deserializer)
        .map_err(|_| serde::de::Error::custom("weight: expected a number"))?
    {
        None => return Ok(None),
        Some(Scalar::Number(n)) => n,
        Some(Scalar::Text(text)) if text.trim().is_empty() => return Ok(None),
        Some(Scalar::Text(text)) => text
            .trim()
            .parse::<f64>()
            .map_err(|_| serde::de::Error::custom(format!("weight `{text}` is not a number")))?,
    };
    if value.is_finite() && value >= 0.0 {
        Ok(Some(value))
    } else {
        Err(serde::de::Error::custom(format!(
            "weight {value} must be a finite number ≥ 0"
        )))
    }
}

impl Record {
    /// The split the record belongs to: its own, or train when the manifest gives none.
    pub fn split_or_train(&self) -> Split {
        self.split.unwrap_or(Split::Train)
    }

    /// The file field named `field` (one of [`FILE_FIELDS`]).
    pub fn file_mut(&mut self, field: &str) -> Option<&mut Option<PathBuf>> {
        match field {
            "text_path" => Some(&mut self.text_path),
            "image" => Some(&mut self.image),
            "audio" => Some(&mut self.audio),
            "video" => Some(&mut self.video),
            _ => None,
        }
    }

    /// Whether the record carries `modality` (a present, non-empty field).
    pub fn has(&self, modality: Modality) -> bool {
        let path_present = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| !p.as_os_str().is_empty());
        match modality {
            Modality::Text => self.text.as_ref().is_some_and(|t| !t.is_empty()) || path_present(&self.text_path),
            Modality::Image => path_present(&self.image),
            Modality::Audio => path_present(&self.audio),
            Modality::Video => path_present(&self.video),
            Modality::Table => self.table.values().any(|cell| !cell.trim().is_empty()),
        }
    }

    /// Resolves relative paths against `base` (the manifest's folder); with
    /// [`PathScope::ManifestFolder`], a path that leaves it, by its text or through a
    /// symbolic link, is an error naming the field.
    pub fn resolve_paths(&mut self, base: &Path, scope: PathScope) -> std::result::Result<(), OutsideFolder> {
        let [text_path, image, audio, video] = FILE_FIELDS;
        let fields = [
            (text_path, &mut self.text_path),
            (image, &mut self.image),
            (audio, &mut self.audio),
            (video, &mut self.video),
        ];
        for (field, path) in fields {
            let Some(path) = path.as_mut().filter(|p| !p.as_os_str().is_empty()) else {
                continue;
            };
            if path.is_relative() {
                *path = base.join(&*path);
            }
            if scope == PathScope::Anywhere {
                continue;
            }
            if !lexically_inside(path, base) {
                return Err(OutsideFolder {
                    field,
                    path: path.clone(),
                    through_link: None,
                    folder: absolute_lexical(base),
                });
            }
            // A symbolic link inside the folder may lead out of it: the file read is the
            // resolved one. (A file that does not exist yet is reported when it is read.)
            if let (Ok(resolved), Ok(folder)) = (path.canonicalize(), current_if_empty(base).canonicalize())
                && !resolved.starts_with(&folder)
            {
                return Err(OutsideFolder {
                    field,
                    path: path.clone(),
                    through_link: Some(resolved),
                    folder,
                });
            }
        }
        Ok(())
    }
}

/// A record's file outside its manifest's folder, by its path's text or through a symbolic
/// link: not read unless paths outside it are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideFolder {
    /// The record's field (`image`, `audio`…).
    pub field: &'static str,
    /// The path as resolved against the folder.
    pub path: PathBuf,
    /// Where a symbolic link inside the folder leads, when that is what leaves it.
    pub through_link: Option<PathBuf>,
    /// The manifest's folder.
    pub folder: PathBuf,
}

impl std::fmt::Display for OutsideFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (field, path, folder) = (self.field, self.path.display(), self.folder.display());
        match &self.through_link {
            None => write!(f, "`{field}` {path} is outside the manifest's folder {folder}")?,
            Some(resolved) => write!(
                f,
                "`{field}` {path} leads through a symbolic link to {}, outside the manifest's folder {folder}",
                resolved.display()
            )?,
        }
        f.write_str(
            ": not read unless paths outside it are allowed (`allow_paths_outside_manifest` in a run \
             configuration, `--allow-paths-outside-manifest` on the command line)",
        )
    }
}

impl std::error::Error for OutsideFolder {}

/// Which files a manifest may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathScope {
    /// Only files in the manifest's folder or below it (`../../etc/passwd` or
    /// `/proc/self/environ` reject the record), checked on the path's text and on the path
    /// with symbolic links resolved (a link inside the folder to a file outside it rejects
    /// the record too).
    #[default]
    ManifestFolder,
    /// Any file the process can read.
    Anywhere,
}

/// `.` for the empty path: the folder of a manifest named by a bare file name (`m.jsonl`),
/// whose parent is the empty path — inside which every path counted, so `fusion validate
/// m.jsonl` read `/etc/shadow`.
fn current_if_empty(folder: &Path) -> &Path {
    if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    }
}

/// `path` made absolute against the current folder with `.` and `..` folded away, without
/// touching the file system.
fn absolute_lexical(path: &Path) -> PathBuf {
    let path = current_if_empty(path);
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

pub(crate) fn lexically_inside(path: &Path, folder: &Path) -> bool {
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
pub(crate) fn manifest_bytes(path: &Path) -> Result<Vec<u8>> {
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

/// What a manifest column feeds when its name is not a record field's (a table from
/// elsewhere: `photo` → image, `price` → label, `age` → table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnRole {
    /// The record's id (without one, records are named `line{N}`).
    Id,
    /// The label.
    Label,
    /// The split (`train`, `val`, `test`).
    Split,
    /// The group of per-group metrics.
    Group,
    /// The record's weight in the training loss.
    Weight,
    /// Inline text; several text columns are joined, one per line, in column order.
    Text,
    /// A text file.
    TextPath,
    /// An image file.
    Image,
    /// An audio file.
    Audio,
    /// A video file.
    Video,
    /// A cell of the record's table (numbers and categories).
    Table,
    /// Not read.
    Ignore,
}

impl ColumnRole {
    /// The record field it fills, for roles that fill one field.
    fn field(self) -> Option<&'static str> {
        Some(match self {
            Self::Id => "id",
            Self::Label => "label",
            Self::Split => "split",
            Self::Group => "group",
            Self::Weight => "weight",
            Self::TextPath => "text_path",
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Text | Self::Table | Self::Ignore => return None,
        })
    }

    /// Whether at most one column may have it.
    pub fn single(self) -> bool {
        self.field().is_some()
    }
}

/// A manifest's columns by name with the role each plays (see [`ColumnRole`]); a column
/// it does not name is reported as unknown.
pub type ColumnMap = BTreeMap<String, ColumnRole>;

/// Checks a column map: one column at most per single-field role, and a label.
pub fn check_column_map(columns: &ColumnMap) -> Result<()> {
    for (name, role) in columns.iter().filter(|(_, r)| r.single()) {
        if let Some((other, _)) = columns.iter().find(|(n, r)| *r == role && *n < name) {
            return Err(Error::Config(format!(
                "columns `{other}` and `{name}` are both `{}`: a record has one",
                role.field().unwrap_or_default()
            )));
        }
    }
    if !columns.values().any(|r| *r == ColumnRole::Label) {
        return Err(Error::Config("no column is the `label`".into()));
    }
    Ok(())
}

/// Records without a split drawn into val and test, stratified by label for classes:
/// within each label (or among all records, for numbers and tag sets), records ordered by
/// a seeded hash of their id, the first `val` fraction to val, the next `test` fraction to
/// test (stable when records are added or reordered).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holdout {
    /// Fraction of each label's records for validation.
    pub val: f64,
    /// Fraction of each label's records for test.
    pub test: f64,
    /// Seed of the draw.
    #[serde(default)]
    pub seed: u64,
}

impl Holdout {
    /// Checks the fractions: each in `[0, 1)`, together below 1.
    pub fn check(&self) -> Result<()> {
        let fraction = |x: f64| (0.0..1.0).contains(&x);
        if fraction(self.val) && fraction(self.test) && self.val + self.test < 1.0 {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "val {} and test {} must be fractions in [0, 1) with a sum below 1",
                self.val, self.test
            )))
        }
    }

    /// Assigns val and test to the labelled records of `records` that have no split,
    /// within each label when `by_label` (a label that names a class).
    pub fn assign(&self, records: &mut [Record], by_label: bool) {
        use sha2::Digest;
        let mut strata: BTreeMap<&str, Vec<(Vec<u8>, usize)>> = BTreeMap::new();
        for (i, record) in records.iter().enumerate() {
            if record.split.is_none() && !record.label.is_empty() {
                let mut hasher = sha2::Sha256::new();
                hasher.update(self.seed.to_le_bytes());
                hasher.update(record.id.as_bytes());
                strata
                    .entry(if by_label { record.label.as_str() } else { "" })
                    .or_default()
                    .push((hasher.finalize().to_vec(), i));
            }
        }
        let mut assigned = Vec::new();
        for mut members in strata.into_values() {
            members.sort();
            let count = members.len() as f64;
            let val = (count * self.val).round() as usize;
            let test = (count * self.test).round() as usize;
            for (rank, (_, i)) in members.into_iter().enumerate() {
                let split = match rank {
                    r if r < val => Split::Val,
                    r if r < val + test => Split::Test,
                    _ => Split::Train,
                };
                assigned.push((i, split));
            }
        }
        for (i, split) in assigned {
            records[i].split = Some(split);
        }
    }
}

/// A line's number and its fields in column order, or why it cannot be read.
type ParsedLine = (usize, std::result::Result<Vec<(String, serde_json::Value)>, String>);

/// A record from one line's fields (in column order), read through `columns` when given;
/// `unknown` is told of every field that is not read.
fn record_from_fields(
    fields: Vec<(String, serde_json::Value)>,
    columns: Option<&ColumnMap>,
    line: usize,
    unknown: &mut dyn FnMut(&str),
) -> std::result::Result<Record, String> {
    let mut record = serde_json::Map::new();
    let mut table = serde_json::Map::new();
    let mut texts: Vec<String> = Vec::new();
    for (name, value) in fields {
        let role = match columns {
            Some(columns) => columns.get(&name).copied(),
            None if RECORD_FIELDS.contains(&name.as_str()) => {
                record.insert(name, value);
                continue;
            }
            None => None,
        };
        match role {
            None => unknown(&name),
            Some(ColumnRole::Ignore) => {}
            Some(ColumnRole::Table) => {
                table.insert(name, value);
            }
            Some(ColumnRole::Text) => match value {
                serde_json::Value::String(text) if !text.is_empty() => texts.push(text),
                serde_json::Value::Null => {}
                other => texts.push(other.to_string()),
            },
            Some(role) => {
                record.insert(role.field().unwrap_or_default().to_string(), value);
            }
        }
    }
    if columns.is_some() {
        if !texts.is_empty() {
            record.insert("text".into(), texts.join("\n").into());
        }
        if !table.is_empty() {
            record.insert("table".into(), table.into());
        }
        record
            .entry("id")
            .or_insert_with(|| serde_json::Value::String(format!("line{line}")));
    }
    Record::deserialize(serde_json::Value::Object(record)).map_err(|e| e.to_string())
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
        Self::load_mapped(path, scope, None)
    }

    /// [`Self::load_with`] reading the columns through `columns` (see [`ColumnMap`]).
    pub fn load_mapped(path: impl AsRef<Path>, scope: PathScope, columns: Option<&ColumnMap>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = manifest_bytes(path)?;
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            Self::parse_csv_mapped(&bytes, path, scope, columns)
        } else {
            Ok(Self::parse_jsonl_mapped(&bytes, path, scope, columns))
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
        Self::parse_csv_mapped(bytes, path, scope, None)
    }

    /// [`Self::parse_csv`] reading the columns through `columns`.
    pub fn parse_csv_mapped(bytes: &[u8], path: &Path, scope: PathScope, columns: Option<&ColumnMap>) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(bytes);
        let mut manifest = Self {
            path: path.to_path_buf(),
            ..Self::default()
        };
        let headers = reader
            .headers()
            .map_err(|e| Error::Csv {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
            .clone();
        let mut lines = Vec::new();
        for row in reader.records() {
            lines.push(match row {
                Err(e) => (e.position().map_or(0, |p| p.line() as usize), Err(e.to_string())),
                Ok(row) => {
                    let line = row.position().map_or(0, |p| p.line() as usize);
                    let fields = match too_long(row.as_slice().len()) {
                        Some(reason) => Err(reason),
                        // An empty cell is an absent value.
                        None => Ok(headers
                            .iter()
                            .zip(row.iter())
                            .filter(|(_, cell)| !cell.is_empty())
                            .map(|(name, cell)| (name.to_string(), serde_json::Value::String(cell.to_string())))
                            .collect()),
                    };
                    (line, fields)
                }
            });
        }
        manifest.add_lines(lines, path, scope, columns);
        // Columns are reported once, on the header line, whatever the rows hold.
        for unknown in &mut manifest.unknown_fields {
            unknown.line = 1;
            unknown.lines = 1;
        }
        let named = |h: &str| match columns {
            Some(columns) => columns.contains_key(h),
            None => RECORD_FIELDS.contains(&h),
        };
        for name in headers.iter().filter(|h| !named(h)) {
            if !manifest.unknown_fields.iter().any(|u| u.name == name) {
                manifest.note_unknown(name, 1);
            }
        }
        Ok(manifest)
    }

    /// Turns parsed lines (line number, fields or why the line is unreadable) into records,
    /// rejecting bad lines, repeated ids and paths outside the manifest's folder.
    fn add_lines(&mut self, lines: Vec<ParsedLine>, path: &Path, scope: PathScope, columns: Option<&ColumnMap>) {
        let base = path.parent().unwrap_or(Path::new("."));
        let mut seen = std::collections::HashSet::new();
        for (line, fields) in lines {
            let mut unknown = Vec::new();
            let parsed = fields.and_then(|fields| {
                record_from_fields(fields, columns, line, &mut |name| unknown.push(name.to_string()))
            });
            for name in unknown {
                self.note_unknown(&name, line);
            }
            let reject = |reason: String| RejectedLine { line, reason };
            match parsed {
                Err(reason) => self.rejected.push(reject(reason)),
                Ok(record) if !seen.insert(record.id.clone()) => {
                    self.rejected.push(reject(format!("duplicate id `{}`", record.id)));
                }
                Ok(mut record) => match record.resolve_paths(base, scope) {
                    Ok(()) => self.records.push(record),
                    Err(outside) => self.rejected.push(reject(outside.to_string())),
                },
            }
        }
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
        Self::parse_jsonl_mapped(bytes, path, scope, None)
    }

    /// [`Self::parse_jsonl`] reading the fields through `columns`.
    pub fn parse_jsonl_mapped(bytes: &[u8], path: &Path, scope: PathScope, columns: Option<&ColumnMap>) -> Self {
        let mut manifest = Self {
            path: path.to_path_buf(),
            ..Self::default()
        };
        let mut lines = Vec::new();
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            if let Some(reason) = too_long(raw.len()) {
                lines.push((line, Err(reason)));
                continue;
            }
            // One bad line costs that line, not the manifest.
            let text = match std::str::from_utf8(raw.strip_suffix(b"\r").unwrap_or(raw)) {
                Ok(text) => text,
                Err(e) => {
                    lines.push((
                        line,
                        Err(format!("not UTF-8 (invalid byte at column {})", e.valid_up_to() + 1)),
                    ));
                    continue;
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            let fields = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
                .map(|fields| fields.into_iter().collect())
                .map_err(|e| e.to_string());
            lines.push((line, fields));
        }
        manifest.add_lines(lines, path, scope, columns);
        manifest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_read_back_what_they_print() {
        for split in Split::ALL {
            assert_eq!(split.to_string().parse::<Split>(), Ok(split));
        }
        assert_eq!(
            "Test".parse::<Split>().map_err(|e| e.to_string()),
            Err("unknown split `Test` (train, val or test)".to_string())
        );
    }

    #[test]
    fn a_column_map_reads_any_table_and_a_holdout_stratifies_by_label() -> Result<()> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("table.csv");
        let csv = "photo,title,notes,age,colour,y,extra\n\
                   a.png,Red car,fast,31,red,yes,1\n\
                   ,Blue van,,,blue,no,2\n\
                   c.png,,,40.5,,yes,3\n";
        std::fs::write(&path, csv).expect("write csv");
        let columns: ColumnMap = [
            ("photo", ColumnRole::Image),
            ("title", ColumnRole::Text),
            ("notes", ColumnRole::Text),
            ("age", ColumnRole::Table),
            ("colour", ColumnRole::Table),
            ("y", ColumnRole::Label),
        ]
        .into_iter()
        .map(|(name, role)| (name.to_string(), role))
        .collect();
        check_column_map(&columns)?;
        let manifest = Manifest::load_mapped(&path, PathScope::ManifestFolder, Some(&columns))?;
        assert!(manifest.rejected.is_empty(), "{:?}", manifest.rejected);
        let ids: Vec<_> = manifest.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["line2", "line3", "line4"]);
        let first = &manifest.records[0];
        assert_eq!(first.text.as_deref(), Some("Red car\nfast"));
        assert_eq!(first.image.as_deref(), Some(dir.path().join("a.png").as_path()));
        assert_eq!(first.label, "yes");
        let cells: Vec<_> = first.table.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(cells, [("age", "31"), ("colour", "red")]);
        assert!(!manifest.records[1].has(Modality::Image) && manifest.records[1].has(Modality::Table));
        assert!(manifest.records[2].has(Modality::Table) && !manifest.records[2].has(Modality::Text));
        let unknown: Vec<_> = manifest
            .unknown_fields
            .iter()
            .map(|u| (u.name.as_str(), u.line))
            .collect();
        assert_eq!(unknown, [("extra", 1)]);

        let mut twice = columns.clone();
        twice.insert("other".into(), ColumnRole::Image);
        assert!(check_column_map(&twice).is_err_and(|e| e.to_string().contains("`other` and `photo`")));

        // 10 records of one label and 20 of another: 20 % each to val and test, per label.
        let mut records: Vec<Record> = (0..30)
            .map(|i| Record {
                id: format!("r{i}"),
                label: if i < 10 { "a".into() } else { "b".into() },
                split: (i == 0).then_some(Split::Train),
                ..Record::default()
            })
            .collect();
        let holdout = Holdout {
            val: 0.2,
            test: 0.2,
            seed: 7,
        };
        holdout.assign(&mut records, true);
        let count = |label: &str, split: Split| {
            records
                .iter()
                .filter(|r| r.label == label && r.split == Some(split))
                .count()
        };
        // Label a: record 0 keeps its train split; 9 drawn: 2 val, 2 test.
        assert_eq!((count("a", Split::Val), count("a", Split::Test)), (2, 2));
        assert_eq!((count("b", Split::Val), count("b", Split::Test)), (4, 4));
        assert_eq!(records[0].split, Some(Split::Train));
        let mut again: Vec<Record> = records
            .iter()
            .rev()
            .map(|r| Record {
                split: None,
                ..r.clone()
            })
            .collect();
        again[29].split = Some(Split::Train);
        holdout.assign(&mut again, true);
        again.reverse();
        assert_eq!(again, records, "the draw does not depend on record order");
        // Numbers are one stratum (per value, each would keep its one record in train).
        let mut numbers: Vec<Record> = (0..30)
            .map(|i| Record {
                id: format!("n{i}"),
                label: format!("{i}.5"),
                ..Record::default()
            })
            .collect();
        holdout.assign(&mut numbers, false);
        let drawn = |split| numbers.iter().filter(|r| r.split == Some(split)).count();
        assert_eq!((drawn(Split::Val), drawn(Split::Test)), (6, 6));
        assert!(
            Holdout {
                val: 0.6,
                test: 0.5,
                seed: 0
            }
            .check()
            .is_err()
        );
        Ok(())
    }

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
    fn weights_are_numbers_of_at_least_zero_and_a_bad_one_costs_its_record() -> Result<()> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("manifest.csv");
        let rows = [
            "id,label,weight",
            "a,1,2.5",
            "b,1,",
            "c,1,-1",
            "d,1,heavy",
            "e,1,inf",
            "f,0, 0 ",
        ];
        std::fs::write(&path, rows.join("\n")).expect("write manifest");
        let manifest = Manifest::load(&path)?;
        let weights: Vec<_> = manifest.records.iter().map(|r| (r.id.as_str(), r.weight)).collect();
        assert_eq!(weights, [("a", Some(2.5)), ("b", None), ("f", Some(0.0))]);
        let rejected: Vec<_> = manifest.rejected.iter().map(|r| (r.line, r.reason.clone())).collect();
        assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), [4, 5, 6]);
        assert!(
            rejected.iter().all(|(_, reason)| reason.contains("weight")),
            "{rejected:?}"
        );
        let jsonl = dir.path().join("manifest.jsonl");
        std::fs::write(&jsonl, "{\"id\": \"a\", \"label\": \"1\", \"weight\": 3}\n").expect("write manifest");
        assert_eq!(Manifest::load(&jsonl)?.records[0].weight, Some(3.0));
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

        // Symbolic links: to a file outside (directly, or through a linked folder) rejects
        // the line; to a file inside the folder is fine.
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "outside").expect("secret");
        std::fs::write(data.join("inside.txt"), "inside").expect("inside");
        std::os::unix::fs::symlink(&secret, data.join("shadow.txt")).expect("link");
        std::os::unix::fs::symlink(dir.path(), data.join("up")).expect("folder link");
        std::os::unix::fs::symlink(data.join("inside.txt"), data.join("alias.txt")).expect("link in");
        let linked = data.join("links.jsonl");
        std::fs::write(
            &linked,
            [
                r#"{"id": "shadow", "label": "1", "text_path": "shadow.txt"}"#,
                r#"{"id": "through", "label": "1", "text_path": "up/secret.txt"}"#,
                r#"{"id": "alias", "label": "1", "text_path": "alias.txt"}"#,
            ]
            .join("\n"),
        )
        .expect("write manifest");
        let manifest = Manifest::load(&linked)?;
        assert_eq!(
            manifest.records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["alias"]
        );
        assert_eq!(manifest.rejected.len(), 2);
        let mut shadow = Record {
            text_path: Some("shadow.txt".into()),
            ..Record::default()
        };
        let outside = shadow
            .resolve_paths(&data, PathScope::ManifestFolder)
            .expect_err("a link out of the folder");
        assert_eq!((outside.field, outside.path), ("text_path", data.join("shadow.txt")));
        assert_eq!(outside.through_link, Some(secret.canonicalize().expect("secret")));
        for rejected in &manifest.rejected {
            assert!(rejected.reason.contains("symbolic link to"), "{}", rejected.reason);
            assert!(rejected.reason.contains("secret.txt"), "{}", rejected.reason);
        }
        assert_eq!(Manifest::load_with(&linked, PathScope::Anywhere)?.records.len(), 3);
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
        // A bare file name's folder is the current one, not the empty path (inside which
        // every path counted: `fusion validate m.jsonl` read /etc/shadow).
        let bare = Manifest::parse_jsonl(
            b"{\"id\": \"a\", \"text_path\": \"/etc/shadow\"}\n{\"id\": \"b\", \"text_path\": \"../../etc/passwd\"}",
            Path::new("m.jsonl"),
            PathScope::ManifestFolder,
        );
        assert!(bare.records.is_empty(), "{:?}", bare.records);
        assert_eq!(bare.rejected.len(), 2);
        Ok(())
    }

    #[test]
    fn unreadable_manifest_names_the_file() {
        let err = Manifest::load_jsonl("/nonexistent/m.jsonl")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("/nonexistent/m.jsonl")));
    }

    #[test]
    fn a_table_cell_is_text_and_an_array_or_object_is_an_error_naming_its_column() {
        assert_eq!(cell_text("age", serde_json::json!(42)).as_deref(), Ok("42"));
        assert_eq!(cell_text("age", serde_json::json!(null)).as_deref(), Ok(""));
        assert_eq!(cell_text("yes", serde_json::json!(true)).as_deref(), Ok("true"));
        let bad = cell_text("tags", serde_json::json!(["a"])).expect_err("an array");
        assert_eq!(bad, BadCell { column: "tags".into() });
        assert_eq!(
            bad.to_string(),
            "table cell `tags`: expected a string, a number, a boolean or null"
        );
    }
}
