//! Checks every record of a manifest in parallel: each present modality's file exists,
//! decodes, and is within limits. Bad records are listed with the reason; nothing stops on
//! one bad file.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Manifest, Modality, Record};

/// Largest decoded image accepted by default, in pixels (fusion-image's budget).
pub const DEFAULT_PIXEL_BUDGET: u64 = 64 * 1024 * 1024;

/// Limits a record's files must respect, in validation and extraction alike (a run
/// configuration's `limits`; every field optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest decoded image, in pixels.
    pub image_pixels: u64,
    /// Longest audio clip, in seconds.
    pub audio_seconds: f64,
    /// Most audio channels.
    pub audio_channels: u16,
    /// Longest video, in seconds.
    pub video_seconds: f64,
    /// Largest text file, in bytes.
    pub text_bytes: u64,
    /// Largest image, audio or video file read, in bytes.
    pub file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            image_pixels: DEFAULT_PIXEL_BUDGET,
            audio_seconds: 3600.0,
            audio_channels: 64,
            video_seconds: 3600.0,
            text_bytes: 16 << 20,
            file_bytes: 1 << 30,
        }
    }
}

impl Limits {
    /// Checks that every limit is positive; the error is the first field that is not, with
    /// its value.
    pub fn validate(&self) -> Result<(), (&'static str, f64)> {
        let positive = [
            ("image_pixels", self.image_pixels as f64),
            ("audio_seconds", self.audio_seconds),
            ("audio_channels", f64::from(self.audio_channels)),
            ("video_seconds", self.video_seconds),
            ("text_bytes", self.text_bytes as f64),
            ("file_bytes", self.file_bytes as f64),
        ];
        match positive.into_iter().find(|(_, v)| v.is_nan() || *v <= 0.0) {
            Some(bad) => Err(bad),
            None => Ok(()),
        }
    }

    /// The audio limits, as the WAV reader takes them.
    #[cfg(feature = "audio")]
    pub fn wav(&self) -> fusion_audio::WavLimits {
        fusion_audio::WavLimits {
            max_seconds: self.audio_seconds,
            max_channels: self.audio_channels,
        }
    }

    /// The video limits, as the video reader takes them.
    #[cfg(feature = "video")]
    pub fn video(&self) -> fusion_video::VideoLimits {
        fusion_video::VideoLimits {
            max_seconds: self.video_seconds,
        }
    }

    /// Largest file of `modality` read, in bytes.
    pub fn bytes_of(&self, modality: Modality) -> u64 {
        match modality {
            Modality::Text => self.text_bytes,
            _ => self.file_bytes,
        }
    }
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    /// The system refused.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// A folder, FIFO or device: a FIFO would block the reader, `/dev/zero` never end.
    #[error("not a regular file (a folder, FIFO or device): not read")]
    NotAFile,
    /// Larger than allowed.
    #[error("{bytes} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The file's size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// Grew past the limit while read.
    #[error("grew past the limit of {limit} bytes while read")]
    Grew {
        /// The limit.
        limit: u64,
    },
}

/// Whether `path` is a regular file of at most `max_bytes`, from its metadata alone
/// (a FIFO would block the reader, `/dev/zero` would never end); its size.
pub fn check_readable(path: &Path, max_bytes: u64) -> Result<u64, Unreadable> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Unreadable::NotAFile);
    }
    if meta.len() > max_bytes {
        return Err(Unreadable::TooLarge {
            bytes: meta.len(),
            limit: max_bytes,
        });
    }
    Ok(meta.len())
}

/// Reads a regular file of at most `max_bytes` (see [`check_readable`]); one that grows
/// past the limit while read is refused too.
pub fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, Unreadable> {
    use std::io::Read;
    let size = check_readable(path, max_bytes)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Never blocks on a FIFO swapped in since the check; the open file is checked again.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path)?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(Unreadable::NotAFile);
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(Unreadable::Grew { limit: max_bytes });
    }
    Ok(bytes)
}

/// One problem with one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// The record's id.
    pub id: String,
    /// The modality at fault, `None` for the record itself (e.g. no modality at all).
    pub modality: Option<String>,
    /// The file at fault.
    pub path: Option<PathBuf>,
    /// Why.
    pub reason: String,
}

/// Outcome of [`validate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationReport {
    /// Records checked.
    pub checked: usize,
    /// Ids of records with no problem, in manifest order.
    pub valid: Vec<String>,
    /// Problems, in manifest order (a record may have several).
    pub problems: Vec<Problem>,
    /// Lines of the manifest that did not even parse.
    pub rejected_lines: Vec<String>,
    /// Fields or columns of the manifest that are not record fields (typos drop data).
    pub unknown_fields: Vec<String>,
}

impl ValidationReport {
    /// Writes the report as JSON, for people and scripts (atomically).
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        crate::features::write_atomic(path, text.as_bytes())
    }

    /// Whether every record is valid and every line and field was understood.
    pub fn is_clean(&self) -> bool {
        self.valid.len() == self.checked && self.rejected_lines.is_empty() && self.unknown_fields.is_empty()
    }
}

fn check(record: &Record, modality: Modality, limits: &Limits) -> Option<(Option<PathBuf>, String)> {
    let path = match modality {
        Modality::Text if record.text_path.is_none() => return None, // inline text
        Modality::Table => return None,                              // cells, read with the line
        Modality::Text => record.text_path.clone(),
        Modality::Image => record.image.clone(),
        Modality::Audio => record.audio.clone(),
        Modality::Video => record.video.clone(),
    }?;
    let problem = match (modality, check_readable(&path, limits.bytes_of(modality))) {
        (_, Err(reason)) => Some(Failure::Own(reason.to_string())),
        (Modality::Text, Ok(_)) => check_text(&path),
        (Modality::Image, Ok(_)) => check_image(&path, limits),
        (Modality::Audio, Ok(_)) => check_audio(&path, limits),
        (Modality::Video, Ok(_)) => check_video(&path, limits),
        (Modality::Table, Ok(_)) => None,
    };
    problem.map(|failure| match failure {
        Failure::Named(error) => (Some(path.clone()), error),
        Failure::Own(reason) => (Some(path.clone()), format!("{}: {reason}", path.display())),
    })
}

/// Why a file failed: a modality crate's error (which names the file already), or a
/// reason of ours (the file's name is added).
#[cfg_attr(
    not(any(feature = "text", feature = "image", feature = "audio", feature = "video")),
    allow(dead_code)
)]
enum Failure {
    Named(String),
    Own(String),
}

/// A modality that a build without its feature cannot decode.
#[allow(dead_code)]
fn without(feature: &str) -> Option<Failure> {
    Some(Failure::Own(format!(
        "fusion-data was built without the `{feature}` feature: cannot decode it"
    )))
}

#[cfg(feature = "text")]
fn check_text(path: &Path) -> Option<Failure> {
    match fusion_text::read_text(path) {
        Ok(text) if text.trim().is_empty() => Some(Failure::Own("empty text".into())),
        Ok(_) => None,
        Err(e) => Some(Failure::Named(e.to_string())),
    }
}

#[cfg(not(feature = "text"))]
fn check_text(_: &Path) -> Option<Failure> {
    without("text")
}

#[cfg(feature = "image")]
fn check_image(path: &Path, limits: &Limits) -> Option<Failure> {
    fusion_image::decode(path, limits.image_pixels)
        .err()
        .map(|e| Failure::Named(e.to_string()))
}

#[cfg(not(feature = "image"))]
fn check_image(_: &Path, _: &Limits) -> Option<Failure> {
    without("image")
}

#[cfg(feature = "audio")]
fn check_audio(path: &Path, limits: &Limits) -> Option<Failure> {
    fusion_audio::read_wav(path, &limits.wav())
        .err()
        .map(|e| Failure::Named(e.to_string()))
}

#[cfg(not(feature = "audio"))]
fn check_audio(_: &Path, _: &Limits) -> Option<Failure> {
    without("audio")
}

#[cfg(feature = "video")]
fn check_video(path: &Path, limits: &Limits) -> Option<Failure> {
    // Opening checks the header against the limits, as extraction does; one frame proves
    // the stream decodes.
    let first = fusion_video::Sampling::Uniform(1);
    match fusion_video::read_frames_within(path, first, None, &limits.video()) {
        Ok(frames) if frames.is_empty() => Some(Failure::Own("no frame decodes".into())),
        Ok(_) => None,
        Err(e) => Some(Failure::Named(e.to_string())),
    }
}

#[cfg(not(feature = "video"))]
fn check_video(_: &Path, _: &Limits) -> Option<Failure> {
    without("video")
}

/// Checks every record of `manifest` (in parallel) against `limits`.
pub fn validate(manifest: &Manifest, limits: &Limits) -> ValidationReport {
    let all = [
        Modality::Text,
        Modality::Image,
        Modality::Audio,
        Modality::Video,
        Modality::Table,
    ];
    let per_record: Vec<Vec<Problem>> = manifest
        .records
        .par_iter()
        .map(|record| {
            let present: Vec<Modality> = all.into_iter().filter(|m| record.has(*m)).collect();
            if present.is_empty() {
                return vec![Problem {
                    id: record.id.clone(),
                    modality: None,
                    path: None,
                    reason: "no modality at all".into(),
                }];
            }
            present
                .into_iter()
                .filter_map(|m| {
                    check(record, m, limits).map(|(path, reason)| Problem {
                        id: record.id.clone(),
                        modality: Some(m.name().into()),
                        path,
                        reason,
                    })
                })
                .collect()
        })
        .collect();
    let valid = manifest
        .records
        .iter()
        .zip(&per_record)
        .filter(|(_, p)| p.is_empty())
        .map(|(r, _)| r.id.clone())
        .collect();
    ValidationReport {
        checked: manifest.records.len(),
        valid,
        problems: per_record.into_iter().flatten().collect(),
        rejected_lines: manifest.rejected.iter().map(ToString::to_string).collect(),
        unknown_fields: manifest.unknown_fields.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(all(test, feature = "image"))]
mod tests {
    #[test]
    fn the_default_pixel_budget_is_fusion_images() {
        assert_eq!(super::DEFAULT_PIXEL_BUDGET, fusion_image::DEFAULT_PIXEL_BUDGET);
    }
}
