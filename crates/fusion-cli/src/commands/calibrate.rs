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

/// An interval's width, or `unbounded` (too few held-out records for the coverage).
pub fn width(width: Option<f64>) -> String {
    match width {
        Some(width) if width.is_finite() => format!("{width:.4}"),
        _ => "unbounded".into(),
    }
}

/// `fusion calibrate`: a temperature and conformal scores, or a regression's intervals.
pub fn calibrate(folder: &Path, manifest: Option<&Path>, ui: Ui, device: Device) -> Result<()> {
    let mut predictor = Predictor::load(folder, device)?;
    if predictor.task() == fusion_core::Task::Regression {
        let intervals = predictor.fit_intervals(manifest, &Shown::new(ui))?;
        ui.say(format!(
            "conformal intervals from {} {} residuals: ± {} at 0.8, ± {} at 0.9, ± {} at 0.95",
            intervals.records,
            intervals.fitted_on,
            width(Some(intervals.half_width(0.8))),
            width(Some(intervals.half_width(0.9))),
            width(Some(intervals.half_width(0.95)))
        ));
        ui.say(format!(
            "written to {}; `fusion eval` reports their coverage, `fusion predict --coverage 0.9` adds an interval per record",
            folder.join(fusion_run::INTERVALS_FILE).display()
        ));
        return ui.result(&intervals);
    }
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
