//! `fusion calibrate`: a temperature and conformal scores fitted on the val split.

use std::path::Path;

use anyhow::Result;
use fusion_run::{Predictor, ProbabilityScores};
use tch::Device;

use crate::ui::{Shown, Ui};

/// One line of probability scores.
pub fn scores_line(scores: &ProbabilityScores) -> String {
    format!(
        "accuracy {:.4}, NLL {:.4}, ECE {:.4}, Brier {:.4}",
        scores.accuracy, scores.nll, scores.ece, scores.brier
    )
}

/// `fusion calibrate`.
pub fn calibrate(folder: &Path, manifest: Option<&Path>, ui: Ui, device: Device) -> Result<()> {
    let mut predictor = Predictor::load(folder, device)?;
    let calibration = predictor.calibrate(manifest, &Shown::new(ui))?;
    ui.say(format!(
        "temperature {:.4}, fitted on {} {} records",
        calibration.temperature, calibration.records, calibration.fitted_on
    ));
    ui.say(format!("  before: {}", scores_line(&calibration.before)));
    ui.say(format!("  after:  {}", scores_line(&calibration.after)));
    ui.say(format!(
        "written to {}; `fusion eval` and `fusion predict` apply it (`--coverage 0.9` adds prediction sets)",
        folder.join(fusion_run::CALIBRATION_FILE).display()
    ));
    ui.result(&calibration)
}
