//! `fusion validate`: a manifest's records checked without training.

use std::path::Path;

use anyhow::Result;

use crate::ui::Ui;

/// Validates `path` and reports; returns whether the manifest is clean.
pub fn validate(
    path: &Path,
    scope: fusion_data::PathScope,
    report_path: Option<&Path>,
    limits: &fusion_data::Limits,
    ui: Ui,
) -> Result<bool> {
    let manifest = fusion_data::Manifest::load_with(path, scope)?;
    let report = fusion_data::validate(&manifest, limits);
    if let Some(out) = report_path {
        report
            .write_json(out)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    }
    for line in &report.rejected_lines {
        ui.say(format!("rejected {}: {line}", path.display()));
    }
    for field in &report.unknown_fields {
        ui.say(format!("{}: {}", path.display(), fusion_core::with_suggestion(field)));
    }
    for problem in &report.problems {
        let modality = problem.modality.as_deref().unwrap_or("record");
        ui.say(format!("bad {} ({modality}): {}", problem.id, problem.reason));
    }
    ui.say(format!(
        "{} records checked: {} valid, {} with problems, {} unreadable lines",
        report.checked,
        report.valid.len(),
        report.checked - report.valid.len(),
        report.rejected_lines.len()
    ));
    ui.result(&report)?;
    Ok(report.is_clean())
}
