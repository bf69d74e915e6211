//! Classification metrics: accuracy, macro-F1, confusion matrix, calibration, per group.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Metrics of one set of predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of samples.
    pub count: usize,
    /// Fraction predicted correctly.
    pub accuracy: f64,
    /// Unweighted mean of per-class F1 over classes that occur in labels or predictions.
    pub macro_f1: f64,
    /// Expected calibration error over 15 equal-width confidence bins.
    pub ece: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

/// Number of confidence bins for the expected calibration error.
pub const ECE_BINS: usize = 15;

impl Metrics {
    /// `confidence[i]` is the probability the model gave its prediction `predicted[i]`.
    pub fn compute(predicted: &[usize], labels: &[usize], confidence: &[f64], num_classes: usize) -> Self {
        let count = labels.len();
        let mut confusion = vec![vec![0usize; num_classes]; num_classes];
        for (&p, &l) in predicted.iter().zip(labels) {
            if p < num_classes && l < num_classes {
                confusion[l][p] += 1;
            }
        }
        let correct: usize = (0..num_classes).map(|c| confusion[c][c]).sum();
        let accuracy = if count == 0 { 0.0 } else { correct as f64 / count as f64 };
        let mut f1_sum = 0.0;
        let mut classes_seen = 0;
        for c in 0..num_classes {
            let true_positive = confusion[c][c] as f64;
            let actual: usize = confusion[c].iter().sum();
            let predicted_c: usize = confusion.iter().map(|row| row[c]).sum();
            if actual + predicted_c == 0 {
                continue;
            }
            classes_seen += 1;
            f1_sum += 2.0 * true_positive / (actual + predicted_c) as f64;
        }
        let macro_f1 = if classes_seen == 0 {
            0.0
        } else {
            f1_sum / classes_seen as f64
        };
        Self {
            count,
            accuracy,
            macro_f1,
            ece: expected_calibration_error(predicted, labels, confidence),
            confusion,
        }
    }
}

/// `Σ_bins |bin| / n · |accuracy(bin) − mean confidence(bin)|`.
pub fn expected_calibration_error(predicted: &[usize], labels: &[usize], confidence: &[f64]) -> f64 {
    let n = labels.len();
    if n == 0 {
        return 0.0;
    }
    let mut bins = [(0usize, 0.0f64, 0.0f64); ECE_BINS];
    for ((&p, &l), &c) in predicted.iter().zip(labels).zip(confidence) {
        let bin = ((c * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1;
        bins[bin].0 += 1;
        bins[bin].1 += f64::from(u8::from(p == l));
        bins[bin].2 += c;
    }
    bins.iter()
        .filter(|(count, _, _)| *count > 0)
        .map(|&(count, correct, conf)| (count as f64 / n as f64) * (correct / count as f64 - conf / count as f64).abs())
        .sum()
}

/// Metrics per group and the spread between groups (fairness).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMetrics {
    /// Metrics of each group's samples.
    pub groups: BTreeMap<String, Metrics>,
    /// Best minus worst group accuracy.
    pub accuracy_gap: f64,
    /// Best minus worst group macro-F1.
    pub macro_f1_gap: f64,
}

impl GroupMetrics {
    /// Splits predictions by `groups[i]` and computes [`Metrics`] for each group.
    pub fn compute(
        predicted: &[usize],
        labels: &[usize],
        confidence: &[f64],
        groups: &[String],
        num_classes: usize,
    ) -> Self {
        let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, g) in groups.iter().enumerate() {
            members.entry(g.as_str()).or_default().push(i);
        }
        let groups: BTreeMap<String, Metrics> = members
            .into_iter()
            .map(|(g, idx)| {
                let pick = |v: &[usize]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
                let conf: Vec<f64> = idx.iter().map(|&i| confidence[i]).collect();
                (
                    g.to_string(),
                    Metrics::compute(&pick(predicted), &pick(labels), &conf, num_classes),
                )
            })
            .collect();
        let spread = |f: fn(&Metrics) -> f64| {
            let values: Vec<f64> = groups.values().map(f).collect();
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            if values.is_empty() { 0.0 } else { max - min }
        };
        let accuracy_gap = spread(|m| m.accuracy);
        let macro_f1_gap = spread(|m| m.macro_f1);
        Self {
            groups,
            accuracy_gap,
            macro_f1_gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_by_hand() {
        // labels 0 0 1 1 2, predictions 0 1 1 1 0
        let m = Metrics::compute(&[0, 1, 1, 1, 0], &[0, 0, 1, 1, 2], &[0.9, 0.6, 0.8, 0.7, 0.5], 3);
        assert_eq!(m.confusion, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        // F1: class 0 = 2·1/(2+2) = 0.5; class 1 = 2·2/(2+3) = 0.8; class 2 = 0.
        assert!((m.macro_f1 - (0.5 + 0.8 + 0.0) / 3.0).abs() < 1e-12);
        // Bins: 0.5 → bin 7 (wrong), 0.6 → 8 (wrong), 0.7 → 10 (right), 0.8 → 11 (right), 0.9 → 13 (right).
        let ece = (0.5 + 0.6 + 0.3 + 0.2 + 0.1) / 5.0;
        assert!((m.ece - ece).abs() < 1e-12, "{}", m.ece);
    }

    #[test]
    fn group_gap() {
        let groups: Vec<String> = ["a", "a", "b", "b"].iter().map(|s| s.to_string()).collect();
        let g = GroupMetrics::compute(&[0, 1, 0, 0], &[0, 1, 1, 1], &[1.0; 4], &groups, 2);
        assert_eq!(g.groups["a"].accuracy, 1.0);
        assert_eq!(g.groups["b"].accuracy, 0.0);
        assert_eq!(g.accuracy_gap, 1.0);
    }
}
