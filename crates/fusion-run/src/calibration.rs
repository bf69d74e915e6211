//! A run's (or ensemble's) calibration, fitted after training on the val split and
//! stored beside it (`calibration.json`), so `eval`, `predict` and every application
//! read calibrated probabilities: temperature scaling of the class probabilities (of the
//! combined output, whatever the fusion family), and the held-out scores that give split
//! conformal prediction sets at any coverage.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Run};

/// The file of a calibrated run or ensemble.
pub const CALIBRATION_FILE: &str = "calibration.json";

/// Coverages `eval` reports the conformal sets' achieved coverage at.
pub const COVERAGE_TARGETS: [f64; 3] = [0.8, 0.9, 0.95];

/// How good class probabilities are on some records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilityScores {
    /// Accuracy of the most probable class.
    pub accuracy: f64,
    /// Mean negative log-likelihood of the label.
    pub nll: f64,
    /// Expected calibration error (15 bins of confidence).
    pub ece: f64,
    /// Mean Brier score.
    pub brier: f64,
}

impl ProbabilityScores {
    /// The scores of `probabilities` against `labels` over `classes` classes.
    pub fn of(probabilities: &[Vec<f32>], labels: &[usize], classes: usize) -> Self {
        let (nll, metrics, _, _) = fusion_core::probability_metrics(probabilities, labels, None, classes);
        Self {
            accuracy: metrics.accuracy,
            nll,
            ece: metrics.ece,
            brier: fusion_core::brier_score(probabilities, labels),
        }
    }
}

/// How often conformal sets held the label, and how large they were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coverage {
    /// The coverage asked for.
    pub target: f64,
    /// The share of records whose set held the label.
    pub achieved: f64,
    /// Classes per set, on average.
    pub mean_set_size: f64,
}

/// What calibration did on an evaluated split (in `eval.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibratedEval {
    /// The temperature applied.
    pub temperature: f64,
    /// The model's own probabilities.
    pub before: ProbabilityScores,
    /// Calibrated.
    pub after: ProbabilityScores,
    /// Conformal sets at each of [`COVERAGE_TARGETS`].
    pub coverage: Vec<Coverage>,
}

/// `calibration.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Temperature of the class probabilities: `p ∝ exp(ln p / T)`.
    pub temperature: f64,
    /// The split it was fitted on.
    pub fitted_on: String,
    /// Records of that split.
    pub records: usize,
    /// On those records, before and after.
    pub before: ProbabilityScores,
    /// Calibrated.
    pub after: ProbabilityScores,
    /// Conformal nonconformity scores (`1 − p(label)`, calibrated) of those records, sorted.
    pub conformal_scores: Vec<f64>,
}

impl Calibration {
    /// Fits a temperature to `probabilities` of records labelled `labels` (of `split`,
    /// over `classes` classes), and keeps their conformal scores.
    pub fn fit(probabilities: &[Vec<f32>], labels: &[usize], classes: usize, split: &str) -> Self {
        let temperature = fusion_core::fit_temperature(probabilities, labels);
        let calibrated: Vec<Vec<f32>> = probabilities
            .iter()
            .map(|p| fusion_core::with_temperature(p, temperature))
            .collect();
        Self {
            temperature,
            fitted_on: split.into(),
            records: labels.len(),
            before: ProbabilityScores::of(probabilities, labels, classes),
            after: ProbabilityScores::of(&calibrated, labels, classes),
            conformal_scores: fusion_core::conformal_scores(&calibrated, labels),
        }
    }

    /// Calibrated probabilities of one record.
    pub fn apply(&self, probabilities: &[f32]) -> Vec<f32> {
        fusion_core::with_temperature(probabilities, self.temperature)
    }

    /// Calibrated probabilities of many records.
    pub fn apply_all(&self, probabilities: &[Vec<f32>]) -> Vec<Vec<f32>> {
        probabilities.iter().map(|p| self.apply(p)).collect()
    }

    /// The classes of a conformal set at `coverage` for calibrated `probabilities`, most
    /// probable first.
    pub fn set(&self, probabilities: &[f32], coverage: f64) -> Vec<usize> {
        let threshold = fusion_core::conformal_threshold(&self.conformal_scores, coverage);
        fusion_core::prediction_set(probabilities, threshold)
    }

    /// What the calibration does to the model's `probabilities` of records labelled
    /// `labels`, and how its conformal sets cover them.
    pub fn evaluate(&self, probabilities: &[Vec<f32>], labels: &[usize]) -> CalibratedEval {
        let classes = probabilities.first().map_or(0, Vec::len);
        let calibrated = self.apply_all(probabilities);
        let coverage = COVERAGE_TARGETS
            .iter()
            .map(|&target| {
                let sets: Vec<Vec<usize>> = calibrated.iter().map(|p| self.set(p, target)).collect();
                let held = sets.iter().zip(labels).filter(|(s, l)| s.contains(l)).count();
                let sizes: usize = sets.iter().map(Vec::len).sum();
                let n = labels.len().max(1) as f64;
                Coverage {
                    target,
                    achieved: held as f64 / n,
                    mean_set_size: sizes as f64 / n,
                }
            })
            .collect();
        CalibratedEval {
            temperature: self.temperature,
            before: ProbabilityScores::of(probabilities, labels, classes),
            after: ProbabilityScores::of(&calibrated, labels, classes),
            coverage,
        }
    }

    /// Removes the calibration of `folder`, if any: the model it was fitted to changes
    /// (trained again, an ensemble rebuilt).
    pub fn forget(folder: &Path) -> Result<()> {
        let path = folder.join(CALIBRATION_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io { path, source: e }),
            _ => Ok(()),
        }
    }

    /// The calibration of the run or ensemble at `folder`, when it has one; a damaged or
    /// edited file is an error naming it.
    pub fn read(folder: &Path) -> Result<Option<Self>> {
        let run = Run::new(folder);
        if !run.file(CALIBRATION_FILE).exists() {
            return Ok(None);
        }
        let calibration: Self = run.read_json(CALIBRATION_FILE)?;
        let bad = |why: &str| Error::Config(format!("{}: {why}", run.file(CALIBRATION_FILE).display()));
        if !(calibration.temperature.is_finite() && calibration.temperature > 0.0) {
            return Err(bad("the temperature is not a positive number"));
        }
        let scores = &calibration.conformal_scores;
        if scores.iter().any(|s| !(0.0..=1.0).contains(s)) || scores.windows(2).any(|w| w[0] > w[1]) {
            return Err(bad("conformal scores must be sorted numbers from 0 to 1"));
        }
        Ok(Some(calibration))
    }
}
