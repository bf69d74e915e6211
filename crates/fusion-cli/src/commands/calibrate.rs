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

/// A multi-label run's label scores on one line.
pub fn label_scores_line(scores: &fusion_run::LabelScores) -> String {
    format!(
        "label accuracy {:.4}, NLL {:.4}, ECE {:.4}, Brier {:.4}",
        scores.label_accuracy, scores.nll, scores.ece, scores.brier
    )
}

/// `fusion calibrate`: a temperature and conformal scores, a temperature per label, or a
/// regression's intervals.
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
    if predictor.task() == fusion_core::Task::MultiLabel {
        let calibration = predictor.calibrate_labels(manifest, &Shown::new(ui))?;
        let each: Vec<String> = calibration
            .labels
            .iter()
            .zip(&calibration.temperatures)
            .map(|(label, t)| format!("{label} {t:.3}"))
            .collect();
        ui.say(format!(
            "a temperature per label, fitted on {} {} records: {}",
            calibration.records,
            calibration.fitted_on,
            each.join(", ")
        ));
        ui.say(format!("  before: {}", label_scores_line(&calibration.before)));
        ui.say(format!("  after:  {}", label_scores_line(&calibration.after)));
        ui.say(format!(
            "written to {}; `fusion eval` and `fusion predict` apply it",
            folder.join(fusion_run::LABEL_CALIBRATION_FILE).display()
        ));
        return ui.result(&calibration);
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
