//! What each column of a table is, inferred from its name and cells: an id, the split,
//! image / audio / video paths (from the files' first bytes), free text, numbers or
//! categories. The result is a [`ColumnMap`] and the table columns of a run.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    io::Read,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{ColumnMap, ColumnRole, Error, PathScope, Result};

/// The kind of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Record ids.
    Id,
    /// The label to predict.
    Label,
    /// `train` / `val` / `test`.
    Split,
    /// Groups of per-group metrics.
    Group,
    /// Each record's weight in the training loss.
    Weight,
    /// Image file paths.
    Image,
    /// Audio file paths.
    Audio,
    /// Video file paths.
    Video,
    /// Free text.
    Text,
    /// Numbers (a table column).
    Numeric,
    /// Categories (a table column).
    Categorical,
    /// Not used.
    Ignore,
}

impl ColumnKind {
    /// Every kind, in the order of the names below.
    pub const ALL: [Self; 12] = [
        Self::Id,
        Self::Label,
        Self::Split,
        Self::Group,
        Self::Weight,
        Self::Image,
        Self::Audio,
        Self::Video,
        Self::Text,
        Self::Numeric,
        Self::Categorical,
        Self::Ignore,
    ];

    /// The kind's name as written (`numeric`…).
    pub fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Label => "label",
            Self::Split => "split",
            Self::Group => "group",
            Self::Weight => "weight",
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Text => "text",
            Self::Numeric => "numeric",
            Self::Categorical => "categorical",
            Self::Ignore => "ignore",
        }
    }

    /// The record field a column of this kind fills.
    pub fn role(self) -> ColumnRole {
        match self {
            Self::Id => ColumnRole::Id,
            Self::Label => ColumnRole::Label,
            Self::Split => ColumnRole::Split,
            Self::Group => ColumnRole::Group,
            Self::Weight => ColumnRole::Weight,
            Self::Image => ColumnRole::Image,
            Self::Audio => ColumnRole::Audio,
            Self::Video => ColumnRole::Video,
            Self::Text => ColumnRole::Text,
            Self::Numeric | Self::Categorical => ColumnRole::Table,
            Self::Ignore => ColumnRole::Ignore,
        }
    }
}

/// A name that is none of the values it could be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`, expected {expected}")]
pub struct UnknownName {
    /// What the name was for (`variant`, `task`, `preset`).
    pub what: &'static str,
    /// The name given.
    pub value: String,
    /// The names it could be.
    pub expected: String,
}

impl std::str::FromStr for ColumnKind {
    type Err = UnknownName;

    fn from_str(text: &str) -> std::result::Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| UnknownName {
                what: "variant",
                value: text.into(),
                expected: format!("one of {}", Self::ALL.map(|k| format!("`{}`", k.name())).join(", ")),
            })
    }
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One column as inferred.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferredColumn {
    /// Its name.
    pub name: String,
    /// What it holds.
    pub kind: ColumnKind,
    /// Rows with a non-empty cell.
    pub filled: usize,
    /// Distinct non-empty cells.
    pub distinct: usize,
    /// Why this kind (or that the user chose it).
    pub reason: String,
}

/// What the label column holds, which decides the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    /// Class names: classification.
    Classes,
    /// `;`-separated tags: multi-label.
    Tags,
    /// Numbers: regression.
    Numbers,
}

impl std::str::FromStr for LabelKind {
    type Err = UnknownName;

    /// The task names of `--task`.
    fn from_str(text: &str) -> std::result::Result<Self, UnknownName> {
        match text {
            "classification" => Ok(Self::Classes),
            "multi_label" => Ok(Self::Tags),
            "regression" => Ok(Self::Numbers),
            other => Err(UnknownName {
                what: "task",
                value: other.into(),
                expected: "`classification`, `multi_label` or `regression`".into(),
            }),
        }
    }
}

/// Distinct integer labels above which numbers are a quantity rather than class codes.
const MAX_INTEGER_CLASSES: usize = 20;

/// The kind of a label column from its non-empty cells, and why.
pub fn infer_label(cells: &[&str]) -> (LabelKind, String) {
    if let Some(cell) = cells.iter().find(|c| c.contains(';')) {
        return (LabelKind::Tags, format!("`;`-separated tags (`{cell}`): multi-label"));
    }
    let numbers: Vec<f64> = cells.iter().filter_map(|c| fusion_tabular::parse_number(c)).collect();
    let distinct: HashSet<&str> = cells.iter().copied().collect();
    if !cells.is_empty() && numbers.len() == cells.len() {
        if numbers.iter().any(|v| v.fract() != 0.0) {
            return (LabelKind::Numbers, "numbers with fractions: regression".into());
        }
        if distinct.len() > MAX_INTEGER_CLASSES {
            return (
                LabelKind::Numbers,
                format!("{} distinct integers: regression", distinct.len()),
            );
        }
    }
    (
        LabelKind::Classes,
        format!("{} classes: classification", distinct.len()),
    )
}

/// The columns of a table, inferred.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnInference {
    /// The table.
    pub path: PathBuf,
    /// Data rows read.
    pub rows: usize,
    /// What the label holds.
    pub label: LabelKind,
    /// Every column, in the table's order.
    pub columns: Vec<InferredColumn>,
    /// What the headers of a sample of the image column's files say (`None` without an
    /// image column, or when none of the sample could be read).
    pub images: Option<ImageSample>,
}

/// The pictures of an image column, from the headers of up to 32 of its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSample {
    /// Median of each picture's longer side, in pixels.
    pub median_side: u32,
    /// Whether every sampled picture is stored as luminance.
    pub grey: bool,
    /// Pictures whose header was read.
    pub read: usize,
}

/// The headers of up to [`SNIFFED_FILES`] of an image column's files.
#[cfg(feature = "image")]
fn sample_images(cells: &[&str], base: &Path, scope: PathScope) -> Option<ImageSample> {
    let headers: Vec<fusion_image::Header> = cells
        .iter()
        .take(SNIFFED_FILES)
        .map(|cell| base.join(cell))
        .filter(|path| scope == PathScope::Anywhere || crate::manifest::lexically_inside(path, base))
        .filter(|path| path.metadata().is_ok_and(|m| m.is_file()))
        .filter_map(|path| fusion_image::header(&path).ok())
        .collect();
    let mut sides: Vec<u32> = headers.iter().map(|h| h.width.max(h.height)).collect();
    sides.sort_unstable();
    Some(ImageSample {
        median_side: *sides.get(sides.len() / 2)?,
        grey: headers.iter().all(|h| h.grey),
        read: headers.len(),
    })
}

#[cfg(not(feature = "image"))]
fn sample_images(_: &[&str], _: &Path, _: PathScope) -> Option<ImageSample> {
    None
}

impl ColumnInference {
    /// The column map that reads the table as records.
    pub fn column_map(&self) -> ColumnMap {
        self.columns.iter().map(|c| (c.name.clone(), c.kind.role())).collect()
    }

    /// The names of the columns of `kind`, in table order.
    pub fn of_kind(&self, kind: ColumnKind) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Whether some column is of `kind`.
    pub fn has(&self, kind: ColumnKind) -> bool {
        self.columns.iter().any(|c| c.kind == kind)
    }

    /// The table as aligned text, one column per line.
    pub fn table(&self) -> String {
        let width = self
            .columns
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let mut text = format!(
            "{:width$}  {:11}  {:>6}  {:>8}  why\n",
            "column", "kind", "filled", "distinct"
        );
        for c in &self.columns {
            text.push_str(&format!(
                "{:width$}  {:11}  {:>6}  {:>8}  {}\n",
                c.name,
                c.kind.name(),
                c.filled,
                c.distinct,
                c.reason
            ));
        }
        text
    }
}

/// How the reason of an id inferred from short unique cells (not from its name) begins.
const SHORT_NAMES: &str = "never repeated";

/// Files whose first bytes are read per path column.
const SNIFFED_FILES: usize = 32;

/// The first bytes' verdict: image, audio or video.
fn sniff(head: &[u8]) -> Option<ColumnKind> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"\x89PNG")
        || at(0, b"\xFF\xD8\xFF")
        || at(0, b"GIF8")
        || at(0, b"BM")
        || at(0, b"II*\0")
        || at(0, b"MM\0*")
    {
        return Some(ColumnKind::Image);
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return Some(ColumnKind::Image);
    }
    if at(0, b"RIFF") && at(8, b"WAVE") {
        return Some(ColumnKind::Audio);
    }
    if (at(0, b"RIFF") && at(8, b"AVI ")) || at(4, b"ftyp") || at(0, b"\x1A\x45\xDF\xA3") {
        return Some(ColumnKind::Video);
    }
    None
}

/// What files a column's cells name: the kind most sniffed files have, with counts.
fn file_kind(cells: &[&str], base: &Path, scope: PathScope) -> Option<(ColumnKind, String)> {
    let sample: Vec<&str> = cells.iter().copied().take(SNIFFED_FILES).collect();
    let mut kinds: BTreeMap<&'static str, (ColumnKind, usize)> = BTreeMap::new();
    let mut files = 0;
    for cell in &sample {
        let path = base.join(cell);
        if scope == PathScope::ManifestFolder && !crate::manifest::lexically_inside(&path, base) {
            continue;
        }
        let Ok(file) = std::fs::File::open(&path) else { continue };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        files += 1;
        let mut head = Vec::with_capacity(16);
        if file.take(16).read_to_end(&mut head).is_ok()
            && let Some(kind) = sniff(&head)
        {
            kinds.entry(kind.name()).or_insert((kind, 0)).1 += 1;
        }
    }
    // Most named files exist: a path column, even when some files are gone.
    if files * 2 <= sample.len() {
        return None;
    }
    let (kind, count) = kinds.into_values().max_by_key(|(_, n)| *n)?;
    Some((
        kind,
        format!("{count} of {} sampled cells are {} files", sample.len(), kind.name()),
    ))
}

fn is_id_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["id", "uid", "key", "identifier", "record_id", "sample_id"].contains(&lower.as_str()) || lower.ends_with("_id")
}

/// Cells that spreadsheets and data tools write for a missing or undefined number.
fn is_missing_number(cell: &str) -> bool {
    [
        "nan",
        "inf",
        "+inf",
        "-inf",
        "infinity",
        "+infinity",
        "-infinity",
        "na",
        "n/a",
        "null",
        "none",
        "?",
        "-",
    ]
    .contains(&cell.trim().to_ascii_lowercase().as_str())
}

fn is_group_name(name: &str) -> bool {
    ["group", "groups", "subgroup", "subgroups"].contains(&name.to_ascii_lowercase().as_str())
}

fn is_weight_name(name: &str) -> bool {
    ["weight", "weights", "sample_weight"].contains(&name.to_ascii_lowercase().as_str())
}

/// Kind of a column from its cells (non-empty ones in `cells`), with the reason.
fn infer_kind(name: &str, cells: &[&str], rows: usize, base: &Path, scope: PathScope) -> (ColumnKind, String) {
    let distinct: HashSet<&str> = cells.iter().copied().collect();
    if cells.is_empty() {
        return (ColumnKind::Ignore, "every cell is empty".into());
    }
    let unique = distinct.len() == cells.len() && cells.len() == rows;
    if name.eq_ignore_ascii_case("split") && distinct.iter().all(|c| ["train", "val", "test"].contains(c)) {
        return (ColumnKind::Split, "named split, values train/val/test".into());
    }
    if is_id_name(name) && unique {
        return (ColumnKind::Id, "an id's name, one value per row".into());
    }
    // Groups are what per-group metrics are reported over (a speaker, a site), not an
    // input: named so and repeated, never one per row.
    if is_group_name(name) && !unique {
        return (
            ColumnKind::Group,
            format!("a group's name, {} groups (per-group metrics)", distinct.len()),
        );
    }
    // A record's weight in the loss, not an input: named so, every cell a number ≥ 0.
    if is_weight_name(name)
        && cells
            .iter()
            .all(|c| c.trim().parse::<f64>().is_ok_and(|w| w.is_finite() && w >= 0.0))
    {
        return (
            ColumnKind::Weight,
            "a weight's name, numbers ≥ 0: each record's weight in the training loss, not an input \
             (`--column-types NAME=numeric` makes it one)"
                .into(),
        );
    }
    if let Some((kind, reason)) = file_kind(cells, base, scope) {
        return (kind, reason);
    }
    if distinct.len() == 1 {
        return (ColumnKind::Ignore, "one value in every row".into());
    }
    let numbers = cells
        .iter()
        .filter(|c| fusion_tabular::parse_number(c).is_some())
        .count();
    // `NaN`, `inf`, `n/a` and the like stand for a missing number, not for a word.
    let missing = cells.iter().filter(|c| is_missing_number(c)).count();
    if numbers > 0 && numbers * 20 >= (cells.len() - missing) * 19 {
        let odd = cells.len() - numbers;
        let reason = if odd == 0 {
            format!("{numbers} of {} cells are numbers", cells.len())
        } else {
            format!(
                "{numbers} of {} cells are numbers; {odd} other cells (`NaN`, `inf`, `n/a`, …) are read as missing",
                cells.len()
            )
        };
        return (ColumnKind::Numeric, reason);
    }
    let words = cells.iter().map(|c| c.split_whitespace().count()).sum::<usize>() as f64 / cells.len() as f64;
    // Short names, one per row (`outfit:Heavy Laser`, `r17`): what records are called.
    if unique && words < 3.0 {
        return (ColumnKind::Id, format!("{SHORT_NAMES}, {words:.1} words per cell"));
    }
    if words >= 3.0 || (words >= 2.0 && distinct.len() * 2 > cells.len()) {
        return (ColumnKind::Text, format!("{words:.1} words per cell"));
    }
    if distinct.len() <= fusion_tabular::MAX_CATEGORIES {
        return (
            ColumnKind::Categorical,
            format!("{} values, {words:.1} words per cell", distinct.len()),
        );
    }
    (
        ColumnKind::Ignore,
        "too many values for categories, too few words for text".into(),
    )
}

/// Reads a table (CSV with a header row, or JSON Lines) as rows of cells, in column order.
/// Column names in order, and each row's cells by column.
type Rows = (Vec<String>, Vec<BTreeMap<String, String>>);

fn read_rows(path: &Path) -> Result<Rows> {
    let bytes = crate::manifest::manifest_bytes(path)?;
    let table_error = |reason: String| Error::Csv {
        path: path.to_path_buf(),
        reason,
    };
    // Not UTF-8 (a Latin-1 or Windows-1252 export): every row would be unreadable.
    if let Err(e) = std::str::from_utf8(&bytes) {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        return Err(table_error(format!(
            "not UTF-8 text: byte {at} (line {line}) is 0x{:02X}; save the table as UTF-8 (it may be Latin-1 \
             or Windows-1252)",
            bytes[at]
        )));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(table_error("the file is empty: no header row and no records".into()));
    }
    let mut names: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(bytes.as_slice());
        let csv_error = |e: csv::Error| Error::Csv {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        names = reader
            .headers()
            .map_err(csv_error)?
            .iter()
            .map(str::to_string)
            .collect();
        // Unreadable rows are reported when the manifest is read; here they are skipped. A
        // row of another length than the header shifts or drops cells: refused, by line.
        for row in reader.records().flatten() {
            if row.len() != names.len() {
                let line = row.position().map_or(0, |p| p.line());
                return Err(table_error(format!(
                    "line {line} has {} cells where the header has {}",
                    row.len(),
                    names.len()
                )));
            }
            rows.push(names.iter().cloned().zip(row.iter().map(str::to_string)).collect());
        }
        if rows.is_empty() {
            return Err(table_error("a header row and no records".into()));
        }
    } else {
        for line in bytes.split(|&b| b == b'\n') {
            let Ok(fields) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line) else {
                continue;
            };
            let mut row = BTreeMap::new();
            for (name, value) in fields {
                if !names.contains(&name) {
                    names.push(name.clone());
                }
                let cell = match value {
                    serde_json::Value::String(text) => text,
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                row.insert(name, cell);
            }
            rows.push(row);
        }
    }
    Ok((names, rows))
}

/// Infers every column of the table at `path` (CSV or JSON Lines): `label` names the
/// label column; `given` sets the kinds of some columns (they are not inferred). Files are
/// looked for as the manifest reads them (relative to its folder, within `scope`). Only one
/// id, split, image, audio and video column is used: later ones are ignored, saying why.
pub fn infer_columns(
    path: &Path,
    label: &str,
    given: &BTreeMap<String, ColumnKind>,
    scope: PathScope,
) -> Result<ColumnInference> {
    let (names, rows) = read_rows(path)?;
    let unknown = |what: &str, name: &str| {
        Error::Config(format!(
            "{}: {what}: unknown field `{name}`, expected one of {}",
            path.display(),
            names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        ))
    };
    if !names.iter().any(|n| n == label) {
        return Err(unknown("--label", label));
    }
    if let Some(name) = given.keys().find(|g| !names.contains(g)) {
        return Err(unknown("--column-types", name));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut label_kind = LabelKind::Classes;
    let mut inferred: Vec<(ColumnKind, String, Vec<&str>)> = Vec::new();
    for name in &names {
        let cells: Vec<&str> = rows
            .iter()
            .filter_map(|r| r.get(name).map(String::as_str))
            .filter(|c| !c.is_empty())
            .collect();
        let (kind, reason) = match given.get(name) {
            _ if name == label => {
                let (kind, why) = infer_label(&cells);
                label_kind = kind;
                (ColumnKind::Label, format!("--label; {why}"))
            }
            Some(kind) => (*kind, "--column-types".to_string()),
            None => infer_kind(name, &cells, rows.len(), base, scope),
        };
        inferred.push((kind, reason, cells));
    }
    // Short unique names are the id only when no column is one by name (or by choice):
    // otherwise they are text (titles), not a second id to ignore.
    let short_names =
        |name: &str, kind: ColumnKind| kind == ColumnKind::Id && !is_id_name(name) && !given.contains_key(name);
    let id = names
        .iter()
        .zip(&inferred)
        .find(|(name, (kind, _, _))| *kind == ColumnKind::Id && !short_names(name, *kind))
        .map(|(name, _)| name.clone());
    let mut columns: Vec<InferredColumn> = Vec::new();
    let mut images = None;
    for (name, (kind, reason, cells)) in names.iter().zip(inferred) {
        let (kind, reason) = match &id {
            Some(id) if short_names(name, kind) => (ColumnKind::Text, format!("{reason}; `{id}` is the id")),
            _ => (kind, reason),
        };
        let single = kind.role().single();
        let (kind, reason) = match columns.iter().find(|c| single && c.kind == kind) {
            Some(first) => (
                ColumnKind::Ignore,
                format!("{kind} too, but a record has one: `{}` is used", first.name),
            ),
            None => (kind, reason),
        };
        if kind == ColumnKind::Image {
            images = sample_images(&cells, base, scope);
        }
        columns.push(InferredColumn {
            name: name.clone(),
            kind,
            filled: cells.len(),
            distinct: cells.iter().collect::<HashSet<_>>().len(),
            reason,
        });
    }
    Ok(ColumnInference {
        path: path.to_path_buf(),
        rows: rows.len(),
        label: label_kind,
        columns,
        images,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_unique_names_are_the_id_when_no_column_is_one_by_name() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        let path = dir.path().join("t.csv");
        let csv = "item,mass,y\nHeavy Laser,10,a\nBlaster,3,b\nMeteor Missile Launcher,7,a\n";
        std::fs::write(&path, csv).map_err(|e| Error::Config(e.to_string()))?;
        let inference = infer_columns(&path, "y", &BTreeMap::new(), PathScope::ManifestFolder)?;
        assert_eq!(inference.columns[0].kind, ColumnKind::Id, "{:?}", inference.columns[0]);
        assert!(inference.columns[0].reason.starts_with(SHORT_NAMES));
        Ok(())
    }

    /// Tables a user exports by accident: Latin-1 text, an empty file, a header alone, a
    /// row with a cell too many, and a numeric column with a few `NaN`/`inf`/`n/a` cells.
    #[test]
    fn odd_tables_are_named_errors_and_odd_numbers_are_missing() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        let write = |name: &str, bytes: &[u8]| -> Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).map_err(|e| Error::Config(e.to_string()))?;
            Ok(path)
        };
        let error = |path: &Path| {
            infer_columns(path, "y", &BTreeMap::new(), PathScope::ManifestFolder)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let latin1 = write("latin1.csv", b"name,y\ncaf\xe9,a\nthe,b\n")?;
        let said = error(&latin1);
        assert!(
            said.contains("latin1.csv") && said.contains("not UTF-8") && said.contains("line 2"),
            "{said}"
        );
        let empty = write("empty.csv", b"\n")?;
        assert!(error(&empty).contains("empty"), "{}", error(&empty));
        let header = write("header.csv", b"x,y\n")?;
        assert!(error(&header).contains("no records"), "{}", error(&header));
        let ragged = write("ragged.csv", b"x,y\n1,a\n2,b,extra\n3,c\n")?;
        let said = error(&ragged);
        assert!(said.contains("line 3 has 3 cells where the header has 2"), "{said}");

        let mut csv = String::from("price,y\n");
        for i in 0..120 {
            let cell = match i % 11 {
                0 => "NaN".to_string(),
                5 if i < 60 => "inf".into(),
                5 => "n/a".into(),
                _ => format!("{}.5", i * 3),
            };
            csv.push_str(&format!("{cell},{}\n", ["a", "b"][i % 2]));
        }
        let odd = write("odd.csv", csv.as_bytes())?;
        let inference = infer_columns(&odd, "y", &BTreeMap::new(), PathScope::ManifestFolder)?;
        let price = &inference.columns[0];
        assert_eq!(price.kind, ColumnKind::Numeric, "{price:?}");
        assert!(
            price.reason.contains("22 other cells") && price.reason.contains("missing"),
            "{price:?}"
        );
        Ok(())
    }

    #[test]
    fn the_label_decides_the_task() {
        let kind = |cells: &[&str]| infer_label(cells).0;
        assert_eq!(kind(&["cat", "dog", "cat"]), LabelKind::Classes);
        assert_eq!(kind(&["1", "0", "1"]), LabelKind::Classes);
        assert_eq!(kind(&["action;comedy", "drama"]), LabelKind::Tags);
        assert_eq!(kind(&["1.5", "2", "3"]), LabelKind::Numbers);
        let many: Vec<String> = (0..=MAX_INTEGER_CLASSES).map(|i| (i * 100).to_string()).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(kind(&many), LabelKind::Numbers);
        assert_eq!(kind(&many[1..]), LabelKind::Classes);
        // A word among numbers makes them names.
        assert_eq!(kind(&["1.5", "2.5", "n/a"]), LabelKind::Classes);
    }

    #[test]
    fn kinds_from_names_cells_and_file_contents() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes);
        for i in 0..4 {
            write(&format!("p{i}.png"), b"\x89PNG\r\n\x1a\n....").map_err(|e| Error::Config(e.to_string()))?;
            write(&format!("s{i}.wav"), b"RIFF\0\0\0\0WAVEfmt ").map_err(|e| Error::Config(e.to_string()))?;
        }
        let mut csv =
            String::from("sample_id,picture,sound,review,price,colour,split,same,code,empty,title,Group,weight,y\n");
        let reviews = [
            "a fine red thing",
            "not good at all",
            "would buy again",
            "too small for me",
        ];
        for i in 0..4 {
            let colour = ["red", "blue"][i % 2];
            csv.push_str(&format!(
                "r{i},p{i}.png,s{i}.wav,{},{}.5,{colour},{},x,c{i},,Heavy Laser{i},{},{},{}\n",
                reviews[i],
                i * 10,
                ["train", "val"][i % 2],
                ["north", "south"][i / 2],
                ["1", "2.5", "0", "1"][i],
                i % 2
            ));
        }
        let path = dir.path().join("t.csv");
        std::fs::write(&path, csv).map_err(|e| Error::Config(e.to_string()))?;
        let given = BTreeMap::from([("code".to_string(), ColumnKind::Categorical)]);
        let inference = infer_columns(&path, "y", &given, PathScope::ManifestFolder)?;
        let kinds: Vec<(&str, ColumnKind)> = inference.columns.iter().map(|c| (c.name.as_str(), c.kind)).collect();
        use ColumnKind::*;
        assert_eq!(
            kinds,
            [
                ("sample_id", Id),
                ("picture", Image),
                ("sound", Audio),
                ("review", Text),
                ("price", Numeric),
                ("colour", Categorical),
                ("split", Split),
                ("same", Ignore),
                ("code", Categorical),
                ("empty", Ignore),
                ("title", Text),
                ("Group", Group),
                ("weight", Weight),
                ("y", Label),
            ]
        );
        // Short names, never repeated, beside an id by name: text.
        assert!(
            inference.columns[10].reason.ends_with("`sample_id` is the id"),
            "{:?}",
            inference.columns[10]
        );
        assert_eq!(inference.rows, 4);
        let map = inference.column_map();
        assert_eq!(map.get("price"), Some(&ColumnRole::Table));
        assert!(inference.table().contains("--column-types"));

        let typo = infer_columns(&path, "yy", &BTreeMap::new(), PathScope::ManifestFolder);
        assert!(typo.is_err_and(|e| e.to_string().contains("unknown field `yy`")));
        // A second image column is ignored, naming the first.
        let two = BTreeMap::from([("sound".to_string(), Image)]);
        let inference = infer_columns(&path, "y", &two, PathScope::ManifestFolder)?;
        assert!(inference.columns[2].kind == Ignore && inference.columns[2].reason.contains("`picture` is used"));
        Ok(())
    }

    /// The image column's pictures are sampled from their headers: the median longer
    /// side and whether all are grey.
    #[test]
    #[cfg(feature = "avmnist")]
    fn image_headers_give_the_median_side_and_colour() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
        let save = |name: &str, image: image::DynamicImage| {
            image
                .save(dir.path().join(name))
                .map_err(|e| Error::Config(e.to_string()))
        };
        let mut csv = String::from("picture,y\n");
        for i in 0..3 {
            save(&format!("g{i}.png"), image::DynamicImage::new_luma8(20, 28))?;
            csv.push_str(&format!("g{i}.png,{}\n", i % 2));
        }
        let table = |csv: &str| -> Result<Option<ImageSample>> {
            let path = dir.path().join("t.csv");
            std::fs::write(&path, csv).map_err(|e| Error::Config(e.to_string()))?;
            Ok(infer_columns(&path, "y", &BTreeMap::new(), PathScope::ManifestFolder)?.images)
        };
        let grey = table(&csv)?;
        assert_eq!(
            grey,
            Some(ImageSample {
                median_side: 28,
                grey: true,
                read: 3
            })
        );
        save("big.jpg", image::DynamicImage::new_rgb8(300, 100))?;
        save("big2.jpg", image::DynamicImage::new_rgb8(100, 300))?;
        let mixed = table(&format!("{csv}big.jpg,1\nbig2.jpg,0\n"))?;
        assert_eq!(
            mixed,
            Some(ImageSample {
                median_side: 28,
                grey: false,
                read: 5
            })
        );
        let large = table(&format!("{csv}big.jpg,1\nbig2.jpg,0\nbig.jpg,1\nbig2.jpg,0\n"))?;
        assert_eq!(large.map(|s| s.median_side), Some(300));
        Ok(())
    }
}
