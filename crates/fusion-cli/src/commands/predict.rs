//! `fusion predict`: one JSON line per record of a manifest.

use std::path::Path;

use anyhow::{Context, Result, bail};
use fusion_data::Problem;
use fusion_run::Predictor;
use tch::Device;

use crate::ui::{Shown, Ui};

/// A `{"id", "error", ...}` line of a record that could not be predicted.
fn error_line(problem: &Problem) -> Result<String> {
    Ok(serde_json::to_string(&serde_json::json!({
        "id": problem.id,
        "error": problem.reason,
        "modality": problem.modality,
        "path": problem.path,
    }))?)
}

/// Writes prediction lines to `out` atomically.
fn write_lines(out: &Path, lines: &[String]) -> Result<()> {
    fusion_core::write_file_atomic(out, lines.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", out.display()))
}

/// `fusion predict` of a run or an ensemble: one JSON line per record, then the records
/// that could not be predicted as `{"id", "error"}` lines; fails (after writing them)
/// when no record could be predicted.
pub fn predict(
    folder: &Path,
    manifest: Option<&Path>,
    out: Option<&Path>,
    coverage: Option<f64>,
    ui: Ui,
    device: Device,
) -> Result<()> {
    let mut predictor = Predictor::load(folder, device)?;
    if let Some(coverage) = coverage {
        predictor = predictor.with_coverage(coverage)?;
    }
    let predicted = predictor.predict_manifest(manifest, &Shown::new(ui))?;
    let out = out.map_or_else(|| folder.join("predictions.jsonl"), Path::to_path_buf);
    let mut lines = predicted
        .predictions
        .iter()
        .map(serde_json::to_string)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for problem in &predicted.errors {
        lines.push(error_line(problem)?);
    }
    write_lines(&out, &lines)?;
    let (count, skipped) = (predicted.predictions.len(), predicted.skipped);
    // An ensemble's skipped records are those no member could read.
    let (by, left_out) = match predictor.ensemble() {
        Some(_) => (" by any member", "records no member could read"),
        None => ("", "skipped records"),
    };
    if count == 0 {
        bail!(
            "no record could be predicted{by}: {skipped} skipped, listed in {}",
            out.display()
        );
    }
    ui.say(format!(
        "{count} predictions and {skipped} {left_out} written to {}",
        out.display()
    ));
    ui.result(&serde_json::json!({"predictions": count, "skipped": skipped, "out": out}))
}
