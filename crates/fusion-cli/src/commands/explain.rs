//! `fusion explain` and `fusion robustness`: per-modality contributions, and accuracy
//! under missing modalities and noise.

use std::path::Path;

use anyhow::Result;
use fusion_core::Task;
use fusion_data::Split;
use fusion_run::{Run, SplitData, score_name};
use tch::Device;

use super::eval::run_split;
use super::{capitalised, plot_path};
use crate::{
    plots, report,
    ui::{Shown, Ui},
};

/// `fusion explain`: exact per-modality Shapley values and their plot.
pub fn explain(run_dir: &Path, manifest: Option<&Path>, split: Split, ui: Ui, device: Device) -> Result<()> {
    let run = Run::new(run_dir);
    let data = run_split(&run, manifest, split, ui, device)?;
    explain_on(&run, &data, split, ui, device)
}

/// [`explain`] on data already loaded (see [`Run::split_of`]).
pub fn explain_on(run: &Run, data: &SplitData, split: Split, ui: Ui, device: Device) -> Result<()> {
    let record = run.explain(data, split, device)?;
    let shapley = &record.shapley;
    for (m, name) in shapley.modalities.iter().enumerate() {
        ui.say(format!(
            "{name}: mean Shapley value {:+.4}, mean |value| {:.4} (over the {} of {} records that have it)",
            shapley.mean[m],
            shapley.mean_abs[m],
            shapley.present.get(m).copied().unwrap_or(0),
            shapley.values.len()
        ));
    }
    let of_what = match run.config()?.task {
        Task::Classification => "the predicted class's probability",
        Task::MultiLabel => "the predicted labels' mean probability",
        Task::Regression => "the predicted number",
        Task::Contrastive => "nothing (a contrastive model is not explained)",
    };
    plots::bars(
        &plot_path(run, "contributions")?,
        "Modality contributions",
        &format!("mean |Shapley value| of {of_what}"),
        &shapley.modalities,
        &shapley.mean_abs,
    )?;
    report::write(run)?;
    ui.result(&record)
}

/// `fusion robustness`: accuracy under missing modalities and growing noise, with plots.
pub fn robustness(
    run_dir: &Path,
    manifest: Option<&Path>,
    split: Split,
    noise: bool,
    ui: Ui,
    device: Device,
) -> Result<()> {
    let run = Run::new(run_dir);
    let data = run_split(&run, manifest, split, ui, device)?;
    robustness_on(&run, &data, split, noise, ui, device)
}

/// [`robustness`] on data already loaded (see [`Run::split_of`]).
pub fn robustness_on(run: &Run, data: &SplitData, split: Split, noise: bool, ui: Ui, device: Device) -> Result<()> {
    let record = run.robustness(data, split, noise, device, &Shown::new(ui))?;
    let score = score_name(run.config()?.task);
    for subset in &record.subsets {
        ui.say(format!(
            "with {}: {score} {:.4}",
            subset.modalities.join(" + "),
            subset.accuracy
        ));
    }
    let labels: Vec<String> = record.subsets.iter().map(|s| s.modalities.join("+")).collect();
    let values: Vec<f64> = record.subsets.iter().map(|s| s.accuracy).collect();
    plots::bars(
        &plot_path(run, "missing_modalities")?,
        &format!("{} with only these modalities", capitalised(score)),
        score,
        &labels,
        &values,
    )?;
    for curve in &record.noise {
        let points: Vec<String> = curve
            .points
            .iter()
            .map(|(level, accuracy)| format!("{level}: {accuracy:.4}"))
            .collect();
        ui.say(format!(
            "noise on {} (std / feature std: {score}): {}",
            curve.modality,
            points.join(", ")
        ));
    }
    if !record.noise.is_empty() {
        let series: Vec<(String, Vec<(f64, f64)>)> = record
            .noise
            .iter()
            .map(|c| (c.modality.clone(), c.points.clone()))
            .collect();
        plots::lines(
            &plot_path(run, "noise")?,
            &format!("{} as noise grows on one modality", capitalised(score)),
            "noise std / feature std",
            &[plots::Panel {
                y_label: score.into(),
                series,
            }],
        )?;
    }
    report::write(run)?;
    ui.result(&record)
}
