//! A run's (or ensemble's) calibration, fitted after training on the val split and
//! stored beside it (`calibration.json`), so `eval`, `predict` and every application
//! read calibrated probabilities: temperature scaling of the class probabilities (of the
//! combined output, whatever the fusion family), and the held-out scores that give split
//! conformal prediction sets at any coverage; for a regression, the held-out absolute
//! residuals that give split conformal intervals (`intervals.json`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Run};

/// The file of a calibrated run or ensemble.
pub const CALIBRATION_FILE: &str = "calibration.json";

/// The file of a regression run's conformal intervals.
pub const INTERVALS_FILE: &str = "intervals.json";

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
    /// The reliability diagram of the model's probabilities (bins of the top probability).
    #[serde(default)]
    pub reliability_before: Vec<fusion_core::ReliabilityBin>,
    /// Of the calibrated probabilities.
    #[serde(default)]
    pub reliability_after: Vec<fusion_core::ReliabilityBin>,
    /// Conformal sets at each of [`COVERAGE_TARGETS`].
    pub coverage: Vec<Coverage>,
    /// The same per group, when records have groups (a set's coverage holds on average
    /// over records, not within each group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupCoverage>,
}

/// Conformal coverage within one group: of sets ([`Coverage`]) or of a regression's
/// intervals ([`IntervalCoverage`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupCoverage<C = Coverage> {
    /// The group.
    pub group: String,
    /// Its records.
    pub records: usize,
    /// At each of [`COVERAGE_TARGETS`].
    pub coverage: Vec<C>,
}

/// Conformal intervals' coverage within one group.
pub type GroupIntervalCoverage = GroupCoverage<IntervalCoverage>;

/// A coverage asked for and the one achieved.
pub trait Achieved {
    /// `(target, achieved)`.
    fn achieved(&self) -> (f64, f64);
}

impl Achieved for Coverage {
    fn achieved(&self) -> (f64, f64) {
        (self.target, self.achieved)
    }
}

impl Achieved for IntervalCoverage {
    fn achieved(&self) -> (f64, f64) {
        (self.target, self.achieved)
    }
}

impl<C: Achieved> GroupCoverage<C> {
    /// `(target, achieved)` at each coverage asked for.
    pub fn achieved(&self) -> Vec<(f64, f64)> {
        self.coverage.iter().map(Achieved::achieved).collect()
    }
}

/// `coverage_of` the records of each group (by the records' `groups`, in name order).
fn per_group<C>(groups: Option<&[String]>, coverage_of: impl Fn(&[usize]) -> Vec<C>) -> Vec<GroupCoverage<C>> {
    let mut by_group: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
    for (r, group) in groups.unwrap_or_default().iter().enumerate() {
        by_group.entry(group.as_str()).or_default().push(r);
    }
    by_group
        .into_iter()
        .map(|(group, records)| GroupCoverage {
            group: group.to_string(),
            records: records.len(),
            coverage: coverage_of(&records),
        })
        .collect()
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
    /// `labels`, and how its conformal sets cover them, overall and within each of the
    /// records' `groups`.
    pub fn evaluate(&self, probabilities: &[Vec<f32>], labels: &[usize], groups: Option<&[String]>) -> CalibratedEval {
        let classes = probabilities.first().map_or(0, Vec::len);
        let calibrated = self.apply_all(probabilities);
        let all: Vec<usize> = (0..labels.len()).collect();
        let coverage_of = |records: &[usize]| -> Vec<Coverage> {
            COVERAGE_TARGETS
                .iter()
                .map(|&target| {
                    let sets: Vec<(Vec<usize>, usize)> = records
                        .iter()
                        .map(|&r| (self.set(&calibrated[r], target), labels[r]))
                        .collect();
                    let held = sets.iter().filter(|(s, l)| s.contains(l)).count();
                    let sizes: usize = sets.iter().map(|(s, _)| s.len()).sum();
                    let n = records.len().max(1) as f64;
                    Coverage {
                        target,
                        achieved: held as f64 / n,
                        mean_set_size: sizes as f64 / n,
                    }
                })
                .collect()
        };
        CalibratedEval {
            temperature: self.temperature,
            before: ProbabilityScores::of(probabilities, labels, classes),
            after: ProbabilityScores::of(&calibrated, labels, classes),
            reliability_before: fusion_core::reliability(probabilities, labels),
            reliability_after: fusion_core::reliability(&calibrated, labels),
            coverage: coverage_of(&all),
            groups: per_group(groups, coverage_of),
        }
    }

    /// Removes the calibration (and a regression's intervals) of `folder`, if any: the
    /// model it was fitted to changes (trained again, an ensemble rebuilt).
    pub fn forget(folder: &Path) -> Result<()> {
        for file in [CALIBRATION_FILE, INTERVALS_FILE, crate::LABEL_CALIBRATION_FILE] {
            let path = folder.join(file);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::Io { path, source: e }),
                _ => {}
            }
        }
        Ok(())
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

/// `intervals.json`: a regression run's split conformal intervals — the absolute residuals
/// `|y − ŷ|` of held-out records, sorted. At coverage `c` the interval is `ŷ ± q`, `q` the
/// `⌈(n + 1) · c⌉`-th smallest residual (unbounded when that exceeds `n`): it holds a new
/// exchangeable record's value with probability at least `c`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intervals {
    /// The split it was fitted on.
    pub fitted_on: String,
    /// Records of that split.
    pub records: usize,
    /// Their absolute residuals, sorted.
    pub residuals: Vec<f64>,
}

/// How often conformal intervals held the value, and how wide they were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalCoverage {
    /// The coverage asked for.
    pub target: f64,
    /// The share of records whose interval held the value.
    pub achieved: f64,
    /// The intervals' width (`2q`, the same for every record); none (null) when the
    /// held-out records are too few for the target: the intervals are unbounded.
    pub width: Option<f64>,
}

/// What the intervals did on an evaluated split (in `eval.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalEval {
    /// At each of [`COVERAGE_TARGETS`].
    pub coverage: Vec<IntervalCoverage>,
    /// The same per group, when records have groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupIntervalCoverage>,
}

impl Intervals {
    /// Keeps the absolute residuals of `predicted` against `targets` (records of `split`).
    pub fn fit(predicted: &[f64], targets: &[f64], split: &str) -> Self {
        let mut residuals: Vec<f64> = predicted.iter().zip(targets).map(|(p, t)| (t - p).abs()).collect();
        residuals.sort_by(f64::total_cmp);
        Self {
            fitted_on: split.into(),
            records: residuals.len(),
            residuals,
        }
    }

    /// Half the width of the intervals at `coverage`.
    pub fn half_width(&self, coverage: f64) -> f64 {
        fusion_core::conformal_threshold(&self.residuals, coverage).max(0.0)
    }

    /// The interval of a predicted `value` at `coverage`.
    pub fn interval(&self, value: f64, coverage: f64) -> (f64, f64) {
        let q = self.half_width(coverage);
        (value - q, value + q)
    }

    /// How the intervals cover `targets` around `predicted`, overall and within each of
    /// the records' `groups`.
    pub fn evaluate(&self, predicted: &[f64], targets: &[f64], groups: Option<&[String]>) -> IntervalEval {
        let coverage_of = |records: &[usize]| -> Vec<IntervalCoverage> {
            COVERAGE_TARGETS
                .iter()
                .map(|&target| {
                    let q = self.half_width(target);
                    let held = records
                        .iter()
                        .filter(|&&r| (targets[r] - predicted[r]).abs() <= q)
                        .count();
                    IntervalCoverage {
                        target,
                        achieved: held as f64 / records.len().max(1) as f64,
                        width: q.is_finite().then_some(2.0 * q),
                    }
                })
                .collect()
        };
        let all: Vec<usize> = (0..targets.len()).collect();
        IntervalEval {
            coverage: coverage_of(&all),
            groups: per_group(groups, coverage_of),
        }
    }

    /// The intervals of the regression run at `folder`, when it has them; a damaged or
    /// edited file is an error naming it.
    pub fn read(folder: &Path) -> Result<Option<Self>> {
        let run = Run::new(folder);
        if !run.file(INTERVALS_FILE).exists() {
            return Ok(None);
        }
        let intervals: Self = run.read_json(INTERVALS_FILE)?;
        let residuals = &intervals.residuals;
        if residuals.iter().any(|r| !(r.is_finite() && *r >= 0.0)) || residuals.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::Config(format!(
                "{}: residuals must be sorted non-negative numbers",
                run.file(INTERVALS_FILE).display()
            )));
        }
        Ok(Some(intervals))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformal_intervals_cover_exchangeable_values_over_many_seeds() {
        // y = 2x + noise, predicted 2x; calibrate on 200, test on 1,000, 40 draws.
        let mut state = 12345u64;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for target in COVERAGE_TARGETS {
            let mut achieved = 0.0;
            for _ in 0..40 {
                let mut draw = |n: usize| -> (Vec<f64>, Vec<f64>) {
                    (0..n)
                        .map(|_| {
                            let x = uniform();
                            // Heavy-ish noise: the sum of three uniforms, scaled.
                            let noise = (uniform() + uniform() + uniform() - 1.5) * 3.0;
                            (2.0 * x, 2.0 * x + noise)
                        })
                        .unzip()
                };
                let (predicted, targets) = draw(200);
                let intervals = Intervals::fit(&predicted, &targets, "val");
                let (predicted, targets) = draw(1000);
                achieved += intervals.evaluate(&predicted, &targets, None).coverage
                    [COVERAGE_TARGETS.iter().position(|&t| t == target).unwrap_or(0)]
                .achieved;
            }
            let mean = achieved / 40.0;
            assert!(mean >= target - 0.01, "coverage {mean} at {target}");
            assert!(mean <= target + 0.03, "coverage {mean} at {target}: intervals too wide");
        }
    }

    #[test]
    fn intervals_are_the_residual_quantile_around_the_prediction() {
        // Residuals 1..=9: at 0.8 the ⌈10 · 0.8⌉ = 8th smallest is 8.
        let predicted = vec![0.0; 9];
        let targets: Vec<f64> = (1..=9)
            .map(|k| if k % 2 == 0 { f64::from(k) } else { -f64::from(k) })
            .collect();
        let intervals = Intervals::fit(&predicted, &targets, "val");
        assert_eq!(intervals.residuals, (1..=9).map(f64::from).collect::<Vec<_>>());
        assert_eq!(intervals.interval(10.0, 0.8), (2.0, 18.0));
        // At 0.95, ⌈10 · 0.95⌉ = 10 > 9 records: unbounded.
        assert_eq!(intervals.half_width(0.95), f64::INFINITY);
        let eval = intervals.evaluate(&[0.0, 0.0], &[7.5, 8.5], Some(&["a".into(), "b".into()]));
        assert_eq!(eval.coverage[0].achieved, 0.5);
        assert_eq!(eval.coverage[0].width, Some(16.0));
        // Unbounded at 0.95 (9 records): written as null and read back as such.
        assert_eq!(eval.coverage[2].width, None);
        let written = serde_json::to_string(&eval).unwrap_or_default();
        assert_eq!(
            serde_json::from_str::<IntervalEval>(&written).ok().as_ref(),
            Some(&eval)
        );
        assert_eq!(eval.groups[0].coverage[0].achieved, 1.0);
        assert_eq!(eval.groups[1].coverage[0].achieved, 0.0);
    }

    #[test]
    fn coverage_is_counted_overall_and_within_each_group() {
        // Held-out scores 0.2 and 0.6: at 0.8 the threshold is the ⌈3 · 0.8⌉ = 3rd of 2,
        // so every class; at any target the most probable class is in.
        let calibration = Calibration {
            temperature: 1.0,
            fitted_on: "val".into(),
            records: 2,
            before: ProbabilityScores::of(&[], &[], 2),
            after: ProbabilityScores::of(&[], &[], 2),
            conformal_scores: vec![0.2, 0.6],
        };
        let probabilities = vec![vec![0.9, 0.1], vec![0.7, 0.3], vec![0.4, 0.6]];
        let labels = [0, 1, 1];
        let groups = ["a".to_string(), "a".into(), "b".into()];
        let eval = calibration.evaluate(&probabilities, &labels, Some(&groups));
        // Every set holds both classes: full coverage, two classes per set, in each group.
        assert_eq!(eval.coverage[0].achieved, 1.0);
        assert_eq!(eval.coverage[0].mean_set_size, 2.0);
        assert_eq!(eval.groups.len(), 2);
        assert_eq!((eval.groups[0].group.as_str(), eval.groups[0].records), ("a", 2));
        assert_eq!(eval.groups[1].coverage[0].achieved, 1.0);
        // With more held-out scores the sets shrink: 1 − p ≤ 0.35 keeps p ≥ 0.65.
        let tight = Calibration {
            conformal_scores: vec![0.05, 0.1, 0.2, 0.3, 0.35, 0.35, 0.35, 0.35, 0.35],
            ..calibration
        };
        let eval = tight.evaluate(&probabilities, &labels, Some(&groups));
        // Sets {0}, {0}, {1}: record 2 of group a is missed.
        assert_eq!(eval.groups[0].coverage[0].achieved, 0.5);
        assert_eq!(eval.groups[1].coverage[0].achieved, 1.0);
        assert!((eval.coverage[0].achieved - 2.0 / 3.0).abs() < 1e-12);
    }
}
