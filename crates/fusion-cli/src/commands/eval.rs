//! `fusion eval`: a run or an ensemble on a split.

use std::path::Path;

use anyhow::Result;
use fusion_data::Split;
use fusion_run::{Predictor, Run, SplitData};
use tch::Device;

use super::{plot_confusion, say_eval};
use crate::{
    report,
    ui::{Shown, Ui},
};

/// The run's data for `split` from `manifest` (default: the run's).
pub fn run_split(run: &Run, manifest: Option<&Path>, split: Split, ui: Ui, device: Device) -> Result<SplitData> {
    Ok(run.split(manifest, split, device, &Shown::new(ui))?.0)
}

/// `fusion eval` of a run or an ensemble.
pub fn eval(folder: &Path, manifest: Option<&Path>, split: Split, ui: Ui, device: Device) -> Result<()> {
    let predictor = Predictor::load(folder, device)?;
    let record = predictor.evaluate(manifest, split, &Shown::new(ui))?;
    say_eval(ui, &record);
    super::plot_reliability(folder, &record)?;
    if predictor.task() == fusion_core::Task::Contrastive {
        super::retrieval::plot_similarity(folder, &predictor, manifest, split, ui)?;
    }
    match predictor.ensemble() {
        Some(file) => super::ensemble::write_report(folder, file, Some(&record))?,
        None => {
            let run = Run::new(folder);
            plot_confusion(&run, &record)?;
            report::write(&run)?;
        }
    }
    ui.result(&record)
}
