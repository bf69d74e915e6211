//! Metrics: classification (accuracy, macro-F1, confusion matrix, calibration, per group;
//! ROC-AUC and average precision for two classes), multi-label and regression.

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
    /// Ranking and threshold metrics of the second class, for a binary task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<BinaryMetrics>,
}

/// Unweighted mean of the F1 of the first `classes` classes of `confusion`
/// (`confusion[true][predicted]`), over those that occur in labels or predictions. Rows and
/// columns past `classes` (an extra "no prediction" column) count as misses of the row's
/// class, never as a class of their own.
pub fn macro_f1(confusion: &[Vec<usize>], classes: usize) -> f64 {
    let mut f1_sum = 0.0;
    let mut classes_seen = 0;
    for c in 0..classes {
        let true_positive = confusion[c][c] as f64;
        let actual: usize = confusion[c].iter().sum();
        let predicted: usize = confusion.iter().map(|row| row[c]).sum();
        if actual + predicted == 0 {
            continue;
        }
        classes_seen += 1;
        f1_sum += 2.0 * true_positive / (actual + predicted) as f64;
    }
    if classes_seen == 0 {
        0.0
    } else {
        f1_sum / f64::from(classes_seen)
    }
}

/// Number of confidence bins for the expected calibration error.
pub const ECE_BINS: usize = 15;

impl Metrics {
    /// `count` samples and no classification metrics (a regression's).
    pub fn empty(count: usize) -> Self {
        Self {
            count,
            accuracy: 0.0,
            macro_f1: 0.0,
            ece: 0.0,
            confusion: Vec::new(),
            binary: None,
        }
    }

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
        Self {
            count,
            accuracy,
            macro_f1: macro_f1(&confusion, num_classes),
            ece: expected_calibration_error(predicted, labels, confidence),
            confusion,
            binary: None,
        }
    }
}

/// `a / b`, 0 for an empty denominator (a precision with nothing predicted, and the like).
fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Decision threshold of binary and multi-label predictions.
pub const THRESHOLD: f64 = 0.5;

/// Metrics of scores for one positive class against 0/1 truths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    /// Area under the ROC curve (ties count half); `None` without both outcomes.
    pub roc_auc: Option<f64>,
    /// Average precision, `Σ (Rₙ − Rₙ₋₁) Pₙ` over the distinct scores from the highest;
    /// `None` without a positive.
    pub average_precision: Option<f64>,
    /// Score at or above which the prediction is positive.
    pub threshold: f64,
    /// Precision at the threshold (0 when nothing is predicted positive).
    pub precision: f64,
    /// Recall at the threshold (0 without positives).
    pub recall: f64,
    /// F1 at the threshold.
    pub f1: f64,
}

impl BinaryMetrics {
    /// `scores[i]`: the model's probability that sample `i` is positive.
    pub fn compute(scores: &[f64], truths: &[bool], threshold: f64) -> Self {
        let positives = truths.iter().filter(|t| **t).count();
        let negatives = truths.len() - positives;
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        // Walk the distinct scores from the highest: a tie moves together.
        let (mut true_pos, mut false_pos, mut area, mut precision_sum) = (0usize, 0usize, 0.0, 0.0);
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let (mut tp, mut fp) = (0, 0);
            // `total_cmp`: NaN scores form a group too instead of stalling the walk.
            while end < order.len() && scores[order[end]].total_cmp(&scores[order[start]]).is_eq() {
                if truths[order[end]] {
                    tp += 1
                } else {
                    fp += 1
                }
                end += 1;
            }
            // Trapezoid of the ROC step (a tie is a diagonal: half credit).
            area += fp as f64 * (true_pos as f64 + tp as f64 / 2.0);
            true_pos += tp;
            false_pos += fp;
            precision_sum += tp as f64 * true_pos as f64 / (true_pos + false_pos) as f64;
            start = end;
        }
        let roc_auc = (positives > 0 && negatives > 0).then(|| area / (positives * negatives) as f64);
        let average_precision = (positives > 0).then(|| precision_sum / positives as f64);
        let predicted_pos = scores.iter().filter(|s| **s >= threshold).count();
        let hits = scores
            .iter()
            .zip(truths)
            .filter(|(s, t)| **s >= threshold && **t)
            .count();
        Self {
            roc_auc,
            average_precision,
            threshold,
            precision: ratio(hits, predicted_pos),
            recall: ratio(hits, positives),
            f1: ratio(2 * hits, predicted_pos + positives),
        }
    }
}

/// Metrics of a multi-label task: every label is a decision at [`THRESHOLD`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelMetrics {
    /// Number of samples.
    pub count: usize,
    /// Fraction of samples whose whole label set is right.
    pub subset_accuracy: f64,
    /// Fraction of (sample, label) decisions that are right.
    pub label_accuracy: f64,
    /// F1 of all (sample, label) decisions pooled.
    pub micro_f1: f64,
    /// Mean F1 over labels.
    pub macro_f1: f64,
    /// Mean ROC-AUC over the labels that have both outcomes.
    pub macro_roc_auc: Option<f64>,
    /// Mean average precision over the labels that occur.
    pub macro_average_precision: Option<f64>,
    /// Each label's own metrics, in label order.
    pub labels: Vec<BinaryMetrics>,
}

impl MultiLabelMetrics {
    /// `scores[i][l]`: probability that sample `i` has label `l`; `truths[i][l]` whether it does.
    pub fn compute(scores: &[Vec<f64>], truths: &[Vec<bool>]) -> Self {
        let count = scores.len();
        let labels = scores.first().map_or(0, Vec::len);
        let column = |l: usize| -> (Vec<f64>, Vec<bool>) {
            (
                scores.iter().map(|s| s[l]).collect(),
                truths.iter().map(|t| t[l]).collect(),
            )
        };
        let per_label: Vec<BinaryMetrics> = (0..labels)
            .map(|l| {
                let (s, t) = column(l);
                BinaryMetrics::compute(&s, &t, THRESHOLD)
            })
            .collect();
        let decided = |s: f64| s >= THRESHOLD;
        let exact = scores
            .iter()
            .zip(truths)
            .filter(|(s, t)| s.iter().zip(t.iter()).all(|(s, t)| decided(*s) == *t))
            .count();
        let (mut right, mut hits, mut predicted, mut actual) = (0usize, 0usize, 0usize, 0usize);
        for (s, t) in scores.iter().flatten().zip(truths.iter().flatten()) {
            right += usize::from(decided(*s) == *t);
            hits += usize::from(decided(*s) && *t);
            predicted += usize::from(decided(*s));
            actual += usize::from(*t);
        }
        let mean = |values: Vec<f64>| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        Self {
            count,
            subset_accuracy: ratio(exact, count),
            label_accuracy: ratio(right, count * labels),
            micro_f1: ratio(2 * hits, predicted + actual),
            macro_f1: mean(per_label.iter().map(|m| m.f1).collect()).unwrap_or(0.0),
            macro_roc_auc: mean(per_label.iter().filter_map(|m| m.roc_auc).collect()),
            macro_average_precision: mean(per_label.iter().filter_map(|m| m.average_precision).collect()),
            labels: per_label,
        }
    }
}

/// Metrics of a regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Number of samples.
    pub count: usize,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Coefficient of determination `1 − SS_res / SS_tot`; `None` for a constant target.
    pub r2: Option<f64>,
}

impl RegressionMetrics {
    /// Metrics of `predicted` against `targets`.
    pub fn compute(predicted: &[f64], targets: &[f64]) -> Self {
        let count = targets.len();
        let n = count.max(1) as f64;
        let residual: f64 = predicted.iter().zip(targets).map(|(p, t)| (p - t).powi(2)).sum();
        let mean = targets.iter().sum::<f64>() / n;
        let total: f64 = targets.iter().map(|t| (t - mean).powi(2)).sum();
        Self {
            count,
            rmse: (residual / n).sqrt(),
            mae: predicted.iter().zip(targets).map(|(p, t)| (p - t).abs()).sum::<f64>() / n,
            r2: (total > 0.0).then(|| 1.0 - residual / total),
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
    fn binary_ranking_metrics_by_hand() {
        // Scores high to low: 0.9 +, 0.8 −, 0.7 +, 0.7 −, 0.4 +, 0.1 −.
        let scores = [0.9, 0.8, 0.7, 0.7, 0.4, 0.1];
        let truths = [true, false, true, false, true, false];
        let m = BinaryMetrics::compute(&scores, &truths, 0.5);
        // Positive–negative pairs ranked right: 0.9 beats 3; 0.7 beats 0.1, ties 0.7 (½);
        // 0.4 beats 0.1: (3 + 1.5 + 1)/9.
        assert!((m.roc_auc.unwrap_or(0.0) - 5.5 / 9.0).abs() < 1e-12, "{m:?}");
        // Distinct thresholds: 0.9 (R ⅓, P 1), 0.8 (no recall step), 0.7 (R ⅔, P 2/4),
        // 0.4 (R 1, P 3/5): (1 + 0.5 + 0.6)/3.
        assert!((m.average_precision.unwrap_or(0.0) - 2.1 / 3.0).abs() < 1e-12, "{m:?}");
        // At 0.5: predicted 4 positives, 2 right; 3 positives in all.
        assert!((m.precision - 0.5).abs() < 1e-12 && (m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 4.0 / 7.0).abs() < 1e-12);
        // NaN scores (a diverged model) still give an answer.
        let nan = BinaryMetrics::compute(&[f64::NAN, 0.3, f64::NAN], &[true, false, false], 0.5);
        assert!(nan.roc_auc.is_some_and(|auc| (0.0..=1.0).contains(&auc)), "{nan:?}");
        let one_sided = BinaryMetrics::compute(&[0.2, 0.3], &[false, false], 0.5);
        assert_eq!((one_sided.roc_auc, one_sided.average_precision), (None, None));
    }

    #[test]
    fn multi_label_metrics_by_hand() {
        let scores = vec![vec![0.9, 0.2, 0.6], vec![0.4, 0.7, 0.1], vec![0.8, 0.3, 0.2]];
        let truths = vec![
            vec![true, false, true],
            vec![false, true, true],
            vec![false, false, false],
        ];
        let m = MultiLabelMetrics::compute(&scores, &truths);
        // Decisions: [1 0 1] right; [0 1 0] misses label 2; [1 0 0] has a false label 0.
        assert!((m.subset_accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.label_accuracy - 7.0 / 9.0).abs() < 1e-12);
        // Pooled: 4 predicted, 4 true, 3 hits → F1 6/8.
        assert!((m.micro_f1 - 0.75).abs() < 1e-12);
        // Per label F1: label 0 2/3, label 1 1, label 2 2/3.
        assert!((m.macro_f1 - (2.0 / 3.0 + 1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        // Label 0 AUC: the positive 0.9 beats 0.4 and 0.8: 1; label 1: 1; label 2: the
        // positives 0.6 and 0.1 against 0.2: (1 + 0)/2.
        assert!((m.macro_roc_auc.unwrap_or(0.0) - 2.5 / 3.0).abs() < 1e-12, "{m:?}");
    }

    #[test]
    fn regression_metrics_by_hand() {
        let m = RegressionMetrics::compute(&[2.0, 4.0, 5.0, 9.0], &[1.0, 4.0, 7.0, 8.0]);
        // Residuals 1, 0, −2, 1: squares 6/4, absolutes 4/4; targets' mean 5, SS_tot 16+1+4+9.
        assert!((m.rmse - 1.5f64.sqrt()).abs() < 1e-12);
        assert!((m.mae - 1.0).abs() < 1e-12);
        assert!((m.r2.unwrap_or(0.0) - (1.0 - 6.0 / 30.0)).abs() < 1e-12, "{m:?}");
        assert_eq!(RegressionMetrics::compute(&[1.0, 2.0], &[3.0, 3.0]).r2, None);
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
