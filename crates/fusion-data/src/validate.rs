//! Checks every record of a manifest in parallel: each present modality's file exists,
//! decodes, and is within limits. Bad records are listed with the reason; nothing stops on
//! one bad file.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Manifest, Modality, Record};

/// Limits a record's files must respect.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest decoded image, in pixels.
    pub image_pixels: u64,
    /// Longest audio clip, in seconds.
    pub audio_seconds: f64,
    /// Longest video, in seconds.
    pub video_seconds: f64,
    /// Largest text file, in bytes.
    pub text_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            image_pixels: fusion_image::DEFAULT_PIXEL_BUDGET,
            audio_seconds: 3600.0,
            video_seconds: 3600.0,
            text_bytes: 16 << 20,
        }
    }
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
}

impl ValidationReport {
    /// Writes the report as JSON, for people and scripts.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }
}

fn modality_name(modality: Modality) -> &'static str {
    match modality {
        Modality::Text => "text",
        Modality::Image => "image",
        Modality::Audio => "audio",
        Modality::Video => "video",
    }
}

fn check(record: &Record, modality: Modality, limits: &Limits) -> Option<(Option<PathBuf>, String)> {
    let path = match modality {
        Modality::Text if record.text_path.is_none() => return None, // inline text
        Modality::Text => record.text_path.clone(),
        Modality::Image => record.image.clone(),
        Modality::Audio => record.audio.clone(),
        Modality::Video => record.video.clone(),
    }?;
    // Errors from the modality crates name the file already; our own reasons get it here.
    let failed = |error: String| Some((Some(path.clone()), error));
    let fail = |reason: String| Some((Some(path.clone()), format!("{}: {reason}", path.display())));
    match modality {
        Modality::Text => match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > limits.text_bytes => {
                fail(format!("{} bytes, over {}", meta.len(), limits.text_bytes))
            }
            _ => match fusion_text::read_text(&path) {
                Ok(text) if text.trim().is_empty() => fail("empty text".into()),
                Ok(_) => None,
                Err(e) => failed(e.to_string()),
            },
        },
        Modality::Image => fusion_image::decode(&path, limits.image_pixels)
            .err()
            .and_then(|e| failed(e.to_string())),
        Modality::Audio => match fusion_audio::read_wav(&path) {
            Ok(clip) => {
                let seconds = clip.frames() as f64 / f64::from(clip.sample_rate);
                if seconds > limits.audio_seconds {
                    fail(format!("{seconds:.1} s, over {} s", limits.audio_seconds))
                } else {
                    None
                }
            }
            Err(e) => failed(e.to_string()),
        },
        Modality::Video => match fusion_video::probe(&path) {
            Ok(info) if info.duration_s > limits.video_seconds => {
                fail(format!("{:.1} s, over {} s", info.duration_s, limits.video_seconds))
            }
            // Opening is not decoding: one frame proves the stream decodes.
            Ok(_) => match fusion_video::read_frames(&path, fusion_video::Sampling::Uniform(1), None) {
                Ok(frames) if frames.is_empty() => fail("no frame decodes".into()),
                Ok(_) => None,
                Err(e) => failed(e.to_string()),
            },
            Err(e) => failed(e.to_string()),
        },
    }
}

/// Checks every record of `manifest` (in parallel) against `limits`.
pub fn validate(manifest: &Manifest, limits: &Limits) -> ValidationReport {
    let all = [Modality::Text, Modality::Image, Modality::Audio, Modality::Video];
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
                        modality: Some(modality_name(m).into()),
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
    }
}
