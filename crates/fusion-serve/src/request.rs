//! A predict request's body turned into records: JSON with base64 files (or server-side
//! paths, when the operator allows a folder) and one-record multipart uploads. Uploaded
//! files are written into a private scratch folder removed with the request.

use std::{collections::BTreeMap, path::PathBuf};

use base64::Engine;
use fusion_data::{FILE_FIELDS, PathScope, Record};
use serde::Deserialize;
use tempfile::TempDir;

use crate::{ServeError, Signature};

/// Where a request's files may come from.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// A bearer token every `/v1/*` and `/metrics` request must carry.
    pub token: Option<String>,
    /// The one folder (and below) whose files a request may name by path; none when unset.
    pub files: Option<PathBuf>,
    /// Where uploaded files are written while their request is decoded (when unset:
    /// `/dev/shm` where there is one, else the system's temporary folder).
    pub scratch: Option<PathBuf>,
}

/// The records of one request, with the files they name.
pub(crate) struct Incoming {
    pub records: Vec<Record>,
    pub explain: bool,
    /// Uploaded files; removed when the request is done.
    pub scratch: Option<TempDir>,
    /// The folder `{"path"}` files are read from, if any (kept out of answers).
    files_folder: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    records: Vec<RecordBody>,
    #[serde(default)]
    explain: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RecordBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    text_path: Option<FileBody>,
    #[serde(default)]
    image: Option<FileBody>,
    #[serde(default)]
    audio: Option<FileBody>,
    #[serde(default)]
    video: Option<FileBody>,
    #[serde(default)]
    table: BTreeMap<String, serde_json::Value>,
}

/// A file given in a JSON record: its bytes in base64, or a path in the allowed folder.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBody {
    #[serde(default)]
    base64: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

/// A file's contents or where it is.
enum Source {
    Bytes(Vec<u8>),
    Path(String),
}

impl RecordBody {
    fn files(&mut self) -> [(&'static str, Option<FileBody>); 4] {
        [
            ("text_path", self.text_path.take()),
            ("image", self.image.take()),
            ("audio", self.audio.take()),
            ("video", self.video.take()),
        ]
    }
}

/// Counts a body's records without holding them (a `Vec` of a zero-sized type allocates
/// nothing), so that a body of millions of tiny records is refused before it is built.
#[derive(Deserialize)]
struct RecordCount {
    #[serde(default)]
    records: Vec<serde::de::IgnoredAny>,
}

/// Reads a JSON predict body (`{"records": [...], "explain": bool}`) of at most
/// `max_records` records.
pub(crate) fn from_json(
    bytes: &[u8],
    max_records: usize,
    signature: &Signature,
    access: &Access,
    limits: &fusion_data::Limits,
) -> Result<Incoming, ServeError> {
    if let Ok(count) = serde_json::from_slice::<RecordCount>(bytes)
        && count.records.len() > max_records
    {
        return Err(ServeError::TooLarge(format!(
            "{} records in one request; at most {max_records}",
            count.records.len()
        )));
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let body: Body = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        ServeError::BadRequest(if at == "." {
            format!("the body is not a predict request: {inner}")
        } else {
            format!("{at}: {inner}")
        })
    })?;
    let mut records = Vec::with_capacity(body.records.len());
    for (k, mut record) in body.records.into_iter().enumerate() {
        let files = record
            .files()
            .into_iter()
            .filter_map(|(field, file)| file.map(|f| (field, f)))
            .map(|(field, file)| match (file.base64, file.path) {
                (Some(text), None) => decode_base64(&text, field, limits).map(|b| (field, Source::Bytes(b))),
                (None, Some(path)) => Ok((field, Source::Path(path))),
                _ => Err(ServeError::BadRequest(format!(
                    "records[{k}].{field}: give exactly one of `base64` and `path`"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let table = record
            .table
            .into_iter()
            .map(|(column, value)| fusion_data::cell_text(&column, value).map(|c| (column, c)))
            .collect::<Result<_, _>>()
            .map_err(|e| ServeError::BadRequest(format!("records[{k}]: {e}")))?;
        records.push(Draft {
            id: record.id.unwrap_or_else(|| (k + 1).to_string()),
            text: record.text,
            table,
            files,
        });
    }
    build(records, body.explain, signature, access, limits)
}

/// One record of a request before its files are placed.
pub(crate) struct Draft {
    id: String,
    text: Option<String>,
    table: BTreeMap<String, String>,
    files: Vec<(&'static str, Source)>,
}

/// Reads the fields of a one-record multipart upload: `id`, `explain`, `text`, files
/// `text_path`, `image`, `audio`, `video`, and table cells `table.COLUMN`.
pub(crate) async fn from_multipart(
    mut multipart: axum::extract::Multipart,
    signature: &Signature,
    access: &Access,
    limits: &fusion_data::Limits,
) -> Result<Incoming, ServeError> {
    let mut draft = Draft {
        id: "1".into(),
        text: None,
        table: BTreeMap::new(),
        files: Vec::new(),
    };
    let mut explain = false;
    let bad = |e: axum::extract::multipart::MultipartError| {
        let status = e.status();
        let text = format!("multipart body: {}", e.body_text());
        if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ServeError::TooLarge(text)
        } else {
            ServeError::BadRequest(text)
        }
    };
    let mut seen = std::collections::HashSet::new();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        if !seen.insert(name.clone()) {
            return Err(ServeError::BadRequest(format!(
                "multipart field `{name}` is given twice (one record per multipart request)"
            )));
        }
        if let Some(&file) = FILE_FIELDS.iter().find(|f| **f == name) {
            let bytes = field.bytes().await.map_err(bad)?;
            if bytes.is_empty() {
                continue; // an empty file input of a form
            }
            check_size(bytes.len() as u64, file, limits)?;
            draft.files.push((file, Source::Bytes(bytes.to_vec())));
            continue;
        }
        let value = field.text().await.map_err(bad)?;
        match name.as_str() {
            "id" => draft.id = value,
            "explain" => explain = matches!(value.as_str(), "true" | "1" | "on" | "yes"),
            "text" if !value.is_empty() => draft.text = Some(value),
            "text" => {}
            other => match other.strip_prefix("table.") {
                Some(column) => {
                    draft.table.insert(column.to_string(), value);
                }
                None => {
                    return Err(ServeError::BadRequest(format!(
                        "multipart field `{other}`: expected id, explain, text, text_path, image, audio, video or table.COLUMN"
                    )));
                }
            },
        }
    }
    build(vec![draft], explain, signature, access, limits)
}

/// The limit on one file of `field`, in bytes.
fn limit_of(field: &str, limits: &fusion_data::Limits) -> u64 {
    if field == "text_path" {
        limits.text_bytes
    } else {
        limits.file_bytes
    }
}

fn check_size(bytes: u64, field: &str, limits: &fusion_data::Limits) -> Result<(), ServeError> {
    let limit = limit_of(field, limits);
    if bytes > limit {
        return Err(ServeError::TooLarge(format!(
            "`{field}`: {bytes} bytes, over the run's limit of {limit}"
        )));
    }
    Ok(())
}

/// Decodes a base64 file, refusing it by its encoded length before decoding when too large.
fn decode_base64(text: &str, field: &str, limits: &fusion_data::Limits) -> Result<Vec<u8>, ServeError> {
    let text = text.trim();
    let padding = text.bytes().rev().take_while(|b| *b == b'=').count().min(2) as u64;
    check_size(
        ((text.len() as u64).div_ceil(4) * 3).saturating_sub(padding),
        field,
        limits,
    )?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| ServeError::BadRequest(format!("`{field}`: not base64 ({e})")))
}

/// Checks the drafts against the model's modalities and places their files.
fn build(
    drafts: Vec<Draft>,
    explain: bool,
    signature: &Signature,
    access: &Access,
    limits: &fusion_data::Limits,
) -> Result<Incoming, ServeError> {
    let read: Vec<&str> = signature.modalities.iter().map(|m| m.field.as_str()).collect();
    let columns: Vec<&str> = signature
        .modalities
        .iter()
        .flat_map(|m| m.columns.iter().map(|c| c.name.as_str()))
        .collect();
    let reads = |field: &str| read.contains(&if field == "text_path" { "text" } else { field });
    let mut seen = std::collections::HashSet::new();
    let mut scratch: Option<TempDir> = None;
    let files_folder = access.files.clone();
    let mut records = Vec::with_capacity(drafts.len());
    for (k, draft) in drafts.into_iter().enumerate() {
        let at = format!("record {} ({})", k + 1, draft.id);
        if !seen.insert(draft.id.clone()) {
            return Err(ServeError::BadRequest(format!("{at}: the id is given twice")));
        }
        let given = draft
            .files
            .iter()
            .map(|(f, _)| *f)
            .chain(draft.text.as_ref().map(|_| "text"));
        let given: Vec<&str> = given.chain((!draft.table.is_empty()).then_some("table")).collect();
        if let Some(field) = given.iter().find(|f| !reads(f)) {
            return Err(ServeError::BadRequest(format!(
                "{at}: `{field}` is not read by this model (it reads {})",
                read.join(", ")
            )));
        }
        if let Some(column) = draft.table.keys().find(|c| !columns.contains(&c.as_str())) {
            return Err(ServeError::BadRequest(format!(
                "{at}: table column `{column}` is not one of this model's ({})",
                columns.join(", ")
            )));
        }
        let mut record = Record {
            id: draft.id,
            text: draft.text,
            table: draft.table,
            ..Record::default()
        };
        let mut uploads = Vec::new();
        for (field, source) in draft.files {
            match source {
                Source::Path(path) => {
                    let Some(folder) = &access.files else {
                        return Err(ServeError::Forbidden(format!(
                            "{at}: `{field}` names a file on the server, and this server reads none (the operator allows a folder with --files)"
                        )));
                    };
                    // Checked alone, so that the answer names the path as the client gave
                    // it, never where the folder or a link's target lies.
                    let mut alone = Record::default();
                    if let Some(slot) = alone.file_mut(field) {
                        *slot = Some(PathBuf::from(&path));
                    }
                    alone.resolve_paths(folder, PathScope::ManifestFolder).map_err(|_| {
                        ServeError::Forbidden(format!(
                            "{at}: `{field}` {path} is outside the folder this server reads from (or leads out of it through a link)"
                        ))
                    })?;
                    let resolved = alone.file_mut(field).and_then(Option::take);
                    if let Some(slot) = record.file_mut(field) {
                        *slot = resolved;
                    }
                }
                Source::Bytes(bytes) => uploads.push((field, bytes)),
            }
        }
        for (field, bytes) in uploads {
            check_size(bytes.len() as u64, field, limits)?;
            let folder = match &scratch {
                Some(folder) => folder,
                None => scratch.insert(scratch_folder(access)?),
            };
            let path = folder.path().join(format!("{k}.{field}"));
            std::fs::write(&path, bytes).map_err(|e| {
                ServeError::Internal(format!("cannot write an upload into {}: {e}", folder.path().display()))
            })?;
            if let Some(slot) = record.file_mut(field) {
                *slot = Some(path);
            }
        }
        records.push(record);
    }
    Ok(Incoming {
        records,
        explain,
        scratch,
        files_folder,
    })
}

/// A private folder for one request's uploads (mode 0700 through `tempfile`): in the
/// operator's scratch folder, else in memory (`/dev/shm`) where there is one that is not
/// small (a container's is often 64 MB), else in the system's temporary folder. (Uploads
/// are bounded by the bodies admitted at once.)
fn scratch_folder(access: &Access) -> Result<TempDir, ServeError> {
    static DEFAULT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let root = match &access.scratch {
        Some(root) => root,
        None => DEFAULT.get_or_init(|| {
            let shared_memory = std::path::Path::new("/dev/shm");
            if shared_memory_is_large() && tempfile::tempdir_in(shared_memory).is_ok() {
                shared_memory.to_path_buf()
            } else {
                std::env::temp_dir()
            }
        }),
    };
    tempfile::Builder::new()
        .prefix("fusion-request-")
        .tempdir_in(root)
        .map_err(|e| ServeError::Internal(format!("cannot make a scratch folder in {}: {e}", root.display())))
}

/// Whether `/dev/shm` is mounted without a size below 1 GiB (a tmpfs without `size=` holds
/// half the memory).
fn shared_memory_is_large() -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    // The last mount at /dev/shm is the one in effect.
    let Some(options) = mounts.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"/dev/shm")).then(|| fields.get(3).copied().unwrap_or_default())
    }) else {
        return false;
    };
    let Some(size) = options.split(',').find_map(|o| o.strip_prefix("size=")) else {
        return true;
    };
    let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
    let scale: u64 = match unit {
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        _ => 1,
    };
    digits.parse::<u64>().is_ok_and(|n| n.saturating_mul(scale) >= 1 << 30)
}

impl Incoming {
    /// `text` with the server's folders taken out (the scratch folder becomes `upload`, the
    /// allowed folder goes): a caller sees which of its files failed, not where the server
    /// keeps them.
    pub fn clean(&self, text: &str) -> String {
        let mut text = text.to_string();
        if let Some(folder) = &self.scratch {
            text = text.replace(&*folder.path().to_string_lossy(), "upload");
        }
        if let Some(folder) = &self.files_folder {
            text = text.replace(&format!("{}/", folder.display()), "");
        }
        text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{ModalitySignature, Signature};

    fn signature() -> Signature {
        Signature {
            name: "run".into(),
            version: "0".into(),
            task: "classification".into(),
            outputs: vec!["a".into(), "b".into()],
            modalities: vec![ModalitySignature {
                name: "image".into(),
                field: "image".into(),
                features: "pixels".into(),
                columns: Vec::new(),
            }],
            members: 1,
            calibrated: false,
            explainable: true,
        }
    }

    fn bad(body: serde_json::Value, limits: &fusion_data::Limits) -> ServeError {
        match from_json(
            body.to_string().as_bytes(),
            64,
            &signature(),
            &Access::default(),
            limits,
        ) {
            Ok(_) => panic!("{body} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn files_over_the_runs_limit_are_refused_before_they_are_decoded() {
        let limits = fusion_data::Limits {
            file_bytes: 30,
            ..Default::default()
        };
        // 40 base64 characters hold 30 bytes: at the limit; 44 hold 33: over it, refused by
        // their length even though they are not valid base64.
        let at = base64::engine::general_purpose::STANDARD.encode([7u8; 30]);
        let incoming = from_json(
            serde_json::json!({"records": [{"image": {"base64": at}}]})
                .to_string()
                .as_bytes(),
            64,
            &signature(),
            &Access::default(),
            &limits,
        )
        .unwrap();
        let path = incoming.records[0].image.clone().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), [7u8; 30]);
        let scratch = incoming.scratch.as_ref().unwrap().path().to_path_buf();
        assert!(path.starts_with(&scratch));
        drop(incoming);
        assert!(!scratch.exists(), "the uploads outlive their request");
        let over = bad(
            serde_json::json!({"records": [{"image": {"base64": "!".repeat(44)}}]}),
            &limits,
        );
        // Padding counts: 31 bytes are 44 characters ending in `=` and fit a limit of 31.
        let limits = fusion_data::Limits {
            file_bytes: 31,
            ..Default::default()
        };
        let padded = base64::engine::general_purpose::STANDARD.encode([7u8; 31]);
        assert!(padded.len() == 44 && padded.ends_with('='));
        let body = serde_json::json!({"records": [{"image": {"base64": padded}}]}).to_string();
        assert!(from_json(body.as_bytes(), 64, &signature(), &Access::default(), &limits).is_ok());
        assert!(
            matches!(&over, ServeError::TooLarge(m) if m.contains("`image`: 33 bytes, over the run's limit of 30")),
            "{over}"
        );
    }

    #[test]
    fn a_file_is_given_one_way() {
        let limits = fusion_data::Limits::default();
        let both = bad(
            serde_json::json!({"records": [{"image": {"base64": "", "path": "a.png"}}]}),
            &limits,
        );
        assert!(
            matches!(&both, ServeError::BadRequest(m) if m.contains("exactly one of `base64` and `path`")),
            "{both}"
        );
        let neither = bad(serde_json::json!({"records": [{"image": {}}]}), &limits);
        assert!(matches!(neither, ServeError::BadRequest(_)));
        let cell = bad(serde_json::json!({"records": [{"table": {"n": [1]}}]}), &limits);
        assert!(
            matches!(&cell, ServeError::BadRequest(m) if m.contains("cell `n`")),
            "{cell}"
        );
    }
}
