//! `fusion export`: a run as TorchScript with its signature.

use std::path::Path;

use anyhow::Result;
use fusion_run::Run;
use tch::Device;

use fusion_core::{ModalityInput, export_torchscript};

use crate::{report, ui::Ui};

/// `fusion export`: TorchScript with a free batch size, plus its signature.
pub fn export(run_dir: &Path, out: Option<&Path>, ui: Ui, device: Device) -> Result<()> {
    let run = Run::new(run_dir);
    let config = run.config()?;
    let (model, vs) = run.model(device)?;
    let example: Vec<ModalityInput> = fusion_run::example_inputs(&config, device);
    let out = out.map_or_else(|| run.file("model.pt"), Path::to_path_buf);
    let classes = run.classes()?;
    // A calibrated run exports its calibrated probabilities.
    let temperatures = match config.task {
        fusion_core::Task::Classification => fusion_run::Calibration::read(run_dir)?.map(|c| vec![c.temperature]),
        fusion_core::Task::MultiLabel => fusion_run::LabelCalibration::read(run_dir, &classes)?.map(|c| c.temperatures),
        fusion_core::Task::Regression | fusion_core::Task::Contrastive => None,
    };
    let signature = export_torchscript(&model, &vs, &example, &classes, temperatures.as_deref(), &out)?;
    ui.say(format!(
        "exported {} ({} inputs: {})",
        out.display(),
        signature.inputs.len(),
        signature
            .inputs
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    report::write(&run)?;
    ui.result(&serde_json::json!({"model": out, "signature": signature}))
}
