//! A multi-label run's calibration: a temperature per label, fitted on the val split
//! (`label_calibration.json`). Each label's probability is a two-outcome distribution, so
//! its temperature is the classification's on `(1 − p, p)`: `p ← σ(logit(p) / T)`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Run};

/// The file of a calibrated multi-label run.
pub const LABEL_CALIBRATION_FILE: &str = "label_calibration.json";

/// How good label probabilities are, over every (record, label) pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelScores {
    /// Share of labels decided right at 0.5.
    pub label_accuracy: f64,
    /// Mean binary cross-entropy.
    pub nll: f64,
    /// Expected calibration error of the decisions (15 bins of confidence).
    pub ece: f64,
    /// Mean squared distance between a label's probability and its state.
    pub brier: f64,
}

impl LabelScores {
    /// The scores of `probabilities` (one per label) against `truths`.
    pub fn of(probabilities: &[Vec<f32>], truths: &[Vec<bool>]) -> Self {
        let (mut right, mut nll, mut brier, mut count) = (0usize, 0.0, 0.0, 0usize);
        let (mut predicted, mut truth, mut confidence) = (Vec::new(), Vec::new(), Vec::new());
        for (row, states) in probabilities.iter().zip(truths) {
            for (&p, &state) in row.iter().zip(states) {
                let p = f64::from(p).clamp(1e-12, 1.0 - 1e-12);
                let decided = p >= fusion_core::THRESHOLD;
                right += usize::from(decided == state);
                nll -= if state { p.ln() } else { (1.0 - p).ln() };
                brier += (p - f64::from(u8::from(state))).powi(2);
                count += 1;
                predicted.push(usize::from(decided));
                truth.push(usize::from(state));
                confidence.push(p.max(1.0 - p));
            }
        }
        let n = count.max(1) as f64;
        Self {
            label_accuracy: right as f64 / n,
            nll: nll / n,
            ece: fusion_core::expected_calibration_error(&predicted, &truth, &confidence),
            brier: brier / n,
        }
    }
}

/// `label_calibration.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelCalibration {
    /// The labels, in output order.
    pub labels: Vec<String>,
    /// Each label's temperature.
    pub temperatures: Vec<f64>,
    /// The split it was fitted on.
    pub fitted_on: String,
    /// Records of that split.
    pub records: usize,
    /// On those records, before.
    pub before: LabelScores,
    /// Calibrated.
    pub after: LabelScores,
}

/// What a label calibration did on an evaluated split (in `eval.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelCalibratedEval {
    /// Each label's temperature.
    pub temperatures: Vec<f64>,
    /// The model's own probabilities.
    pub before: LabelScores,
    /// Calibrated.
    pub after: LabelScores,
}

impl LabelCalibration {
    /// Fits a temperature per label to `probabilities` of records whose labels are
    /// `truths` (of `split`).
    pub fn fit(probabilities: &[Vec<f32>], truths: &[Vec<bool>], labels: &[String], split: &str) -> Self {
        let temperatures: Vec<f64> = (0..labels.len())
            .map(|l| {
                let pairs: Vec<Vec<f32>> = probabilities.iter().map(|row| vec![1.0 - row[l], row[l]]).collect();
                let states: Vec<usize> = truths.iter().map(|t| usize::from(t[l])).collect();
                fusion_core::fit_temperature(&pairs, &states)
            })
            .collect();
        let mut calibration = Self {
            labels: labels.to_vec(),
            temperatures,
            fitted_on: split.into(),
            records: truths.len(),
            before: LabelScores::of(probabilities, truths),
            after: LabelScores::of(probabilities, truths),
        };
        calibration.after = LabelScores::of(&calibration.apply_all(probabilities), truths);
        calibration
    }

    /// Calibrated label probabilities of one record.
    pub fn apply(&self, probabilities: &[f32]) -> Vec<f32> {
        probabilities
            .iter()
            .zip(&self.temperatures)
            .map(|(&p, &t)| fusion_core::with_temperature(&[1.0 - p, p], t)[1])
            .collect()
    }

    /// Calibrated label probabilities of many records.
    pub fn apply_all(&self, probabilities: &[Vec<f32>]) -> Vec<Vec<f32>> {
        probabilities.iter().map(|p| self.apply(p)).collect()
    }

    /// What the calibration does to `probabilities` of records whose labels are `truths`.
    pub fn evaluate(&self, probabilities: &[Vec<f32>], truths: &[Vec<bool>]) -> LabelCalibratedEval {
        LabelCalibratedEval {
            temperatures: self.temperatures.clone(),
            before: LabelScores::of(probabilities, truths),
            after: LabelScores::of(&self.apply_all(probabilities), truths),
        }
    }

    /// The label calibration of the run at `folder`, when it has one, for the run's
    /// `labels`; a damaged or edited file is an error naming it.
    pub fn read(folder: &Path, labels: &[String]) -> Result<Option<Self>> {
        let run = Run::new(folder);
        if !run.file(LABEL_CALIBRATION_FILE).exists() {
            return Ok(None);
        }
        let calibration: Self = run.read_json(LABEL_CALIBRATION_FILE)?;
        let bad = |why: &str| Error::Config(format!("{}: {why}", run.file(LABEL_CALIBRATION_FILE).display()));
        if calibration.labels != labels || calibration.temperatures.len() != labels.len() {
            return Err(bad("its labels are not the run's"));
        }
        if calibration.temperatures.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(bad("a temperature is not a positive number"));
        }
        Ok(Some(calibration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_temperatures_are_recovered_per_label_and_decisions_kept() {
        // Label l's true probability σ(z); the model reports σ(z · T_l): overconfident for
        // T > 1, underconfident below. A deterministic low-discrepancy z and draw.
        let planted = [3.0, 1.0, 0.4];
        let n = 4000;
        let (mut probabilities, mut truths) = (Vec::new(), Vec::new());
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        for i in 0..n {
            let z = -3.0 + 6.0 * ((i as f64 * 0.618_033_988_7) % 1.0);
            let u = (i as f64 * 0.414_213_562_3 + 0.1) % 1.0;
            let state = u < sigmoid(z);
            probabilities.push(planted.iter().map(|t| sigmoid(z * t) as f32).collect::<Vec<f32>>());
            truths.push(vec![state; 3]);
        }
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let calibration = LabelCalibration::fit(&probabilities, &truths, &labels, "val");
        for (fitted, planted) in calibration.temperatures.iter().zip(planted) {
            assert!((fitted / planted - 1.0).abs() < 0.1, "{fitted} for {planted}");
        }
        assert!(calibration.after.nll <= calibration.before.nll);
        assert!(calibration.after.ece < calibration.before.ece);
        // A temperature keeps every decision at 0.5.
        assert_eq!(calibration.after.label_accuracy, calibration.before.label_accuracy);
    }
}
