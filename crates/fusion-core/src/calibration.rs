//! Honest confidence after training, on class probabilities of any fusion family:
//! temperature scaling (Guo et al. 2017) fitted on held-out records, and split conformal
//! prediction sets (Angelopoulos & Bates 2021) whose coverage holds for exchangeable data.

/// Smallest probability whose logarithm is taken.
const FLOOR: f64 = 1e-12;

/// Temperatures searched, as `ln T`.
const LN_T_RANGE: (f64, f64) = (-4.0, 4.0);

/// `p ∝ exp(ln p / T)`: above 1 softens an overconfident model, below 1 sharpens. The
/// most probable class stays the most probable.
pub fn with_temperature(probabilities: &[f32], temperature: f64) -> Vec<f32> {
    let logits: Vec<f64> = probabilities
        .iter()
        .map(|&p| f64::from(p).max(FLOOR).ln() / temperature)
        .collect();
    let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / total) as f32).collect()
}

/// Mean negative log-likelihood of `labels` under `probabilities` at `temperature`.
pub fn nll_at(probabilities: &[Vec<f32>], labels: &[usize], temperature: f64) -> f64 {
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(p, &l)| {
            let scaled = with_temperature(p, temperature);
            -f64::from(scaled.get(l).copied().unwrap_or(0.0)).max(FLOOR).ln()
        })
        .sum();
    total / labels.len().max(1) as f64
}

/// The temperature minimising the negative log-likelihood of `labels` (golden-section
/// search over `ln T` in [-4, 4], to a relative precision of about 1e-6); 1 without
/// records.
pub fn fit_temperature(probabilities: &[Vec<f32>], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 1.0;
    }
    let loss = |ln_t: f64| nll_at(probabilities, labels, ln_t.exp());
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let (mut low, mut high) = LN_T_RANGE;
    let mut left = high - ratio * (high - low);
    let mut right = low + ratio * (high - low);
    let (mut f_left, mut f_right) = (loss(left), loss(right));
    while high - low > 1e-6 {
        if f_left <= f_right {
            high = right;
            right = left;
            f_right = f_left;
            left = high - ratio * (high - low);
            f_left = loss(left);
        } else {
            low = left;
            left = right;
            f_left = f_right;
            right = low + ratio * (high - low);
            f_right = loss(right);
        }
    }
    ((low + high) / 2.0).exp()
}

/// Mean Brier score: the squared distance between the probabilities and the one-hot label.
pub fn brier_score(probabilities: &[Vec<f32>], labels: &[usize]) -> f64 {
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(p, &l)| {
            p.iter()
                .enumerate()
                .map(|(c, &q)| (f64::from(q) - if c == l { 1.0 } else { 0.0 }).powi(2))
                .sum::<f64>()
        })
        .sum();
    total / labels.len().max(1) as f64
}

/// Split conformal nonconformity scores of held-out records, sorted: `1 − p(label)`.
pub fn conformal_scores(probabilities: &[Vec<f32>], labels: &[usize]) -> Vec<f64> {
    let mut scores: Vec<f64> = probabilities
        .iter()
        .zip(labels)
        .map(|(p, &l)| 1.0 - f64::from(p.get(l).copied().unwrap_or(0.0)))
        .collect();
    scores.sort_by(f64::total_cmp);
    scores
}

/// The score threshold of `coverage` (in (0, 1)) from sorted held-out scores: the
/// `⌈(n + 1) · coverage⌉`-th smallest, or infinity (every class) when that exceeds `n`.
/// A set of the classes scoring at or under it holds a new exchangeable record's label
/// with probability at least `coverage`.
pub fn conformal_threshold(sorted_scores: &[f64], coverage: f64) -> f64 {
    let n = sorted_scores.len();
    let rank = ((n as f64 + 1.0) * coverage).ceil() as usize;
    if rank == 0 {
        return f64::NEG_INFINITY;
    }
    sorted_scores.get(rank - 1).copied().unwrap_or(f64::INFINITY)
}

/// The classes whose score `1 − p` is at most `threshold`, most probable first; never
/// empty (the most probable class is always in: a superset keeps the coverage).
pub fn prediction_set(probabilities: &[f32], threshold: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    let mut set: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&c| 1.0 - f64::from(probabilities[c]) <= threshold)
        .collect();
    if set.is_empty() {
        set.extend(order.first());
    }
    set
}

/// One confidence bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReliabilityBin {
    /// The bin's upper confidence bound (it holds confidences above the previous bound).
    pub upper: f64,
    /// Records whose top probability falls in the bin.
    pub count: usize,
    /// Their mean top probability.
    pub confidence: f64,
    /// The share of them whose most probable class is the label.
    pub accuracy: f64,
}

/// The reliability diagram of class `probabilities` against `labels`: per non-empty bin of
/// the top probability (the [`crate::ECE_BINS`] equal-width bins of the ECE, whose
/// `Σ count/n · |accuracy − confidence|` it is), the mean confidence and accuracy.
pub fn reliability(probabilities: &[Vec<f32>], labels: &[usize]) -> Vec<ReliabilityBin> {
    let bins = crate::ECE_BINS;
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); bins];
    for (p, &label) in probabilities.iter().zip(labels) {
        let top = crate::argmax(p);
        let confidence = f64::from(p[top]);
        let bin = ((confidence * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        sums[bin].0 += 1;
        sums[bin].1 += confidence;
        sums[bin].2 += f64::from(u8::from(top == label));
    }
    sums.iter()
        .enumerate()
        .filter(|(_, (count, _, _))| *count > 0)
        .map(|(b, &(count, confidence, correct))| ReliabilityBin {
            upper: (b + 1) as f64 / bins as f64,
            count,
            confidence: confidence / count as f64,
            accuracy: correct / count as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliability_bins_are_the_eces() {
        // Top probabilities 0.95 (right), 0.9 (wrong), 0.55 (right), 0.5 (right): bins
        // (14/15, 1], (13/15, 14/15], (8/15, 9/15], (7/15, 8/15].
        let probabilities = vec![vec![0.95, 0.05], vec![0.9, 0.1], vec![0.45, 0.55], vec![0.5, 0.5]];
        let labels = [0, 1, 1, 0];
        let bins = reliability(&probabilities, &labels);
        let seen: Vec<(usize, f64, f64)> = bins
            .iter()
            .map(|b| (b.count, (b.confidence * 100.0).round() / 100.0, b.accuracy))
            .collect();
        assert_eq!(seen, [(1, 0.5, 1.0), (1, 0.55, 1.0), (1, 0.9, 0.0), (1, 0.95, 1.0)]);
        assert!((bins[2].upper - 14.0 / 15.0).abs() < 1e-12);
        // Σ count/n · |accuracy − confidence| is the ECE of the same records.
        let from_bins: f64 = bins
            .iter()
            .map(|b| b.count as f64 / 4.0 * (b.accuracy - b.confidence).abs())
            .sum();
        let (_, metrics, _, _) = crate::probability_metrics(&probabilities, &labels, None, 2);
        assert!((from_bins - metrics.ece).abs() < 1e-6, "{from_bins} vs {}", metrics.ece);
    }

    /// A seeded stream of uniform numbers in [0, 1).
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn softmax(logits: &[f64]) -> Vec<f32> {
        let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
        let total: f64 = exps.iter().sum();
        exps.iter().map(|e| (e / total) as f32).collect()
    }

    /// Records whose labels are drawn from `softmax(z)`, reported by a model that says
    /// `softmax(z · sharpen)`.
    fn planted(seed: u64, records: usize, classes: usize, sharpen: f64) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut draw = uniform(seed);
        let mut probabilities = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..records {
            let logits: Vec<f64> = (0..classes).map(|_| 3.0 * draw()).collect();
            let truth = softmax(&logits);
            let u = draw();
            let mut acc = 0.0;
            let label = truth
                .iter()
                .position(|&p| {
                    acc += f64::from(p);
                    u < acc
                })
                .unwrap_or(classes - 1);
            let sharp: Vec<f64> = logits.iter().map(|l| l * sharpen).collect();
            probabilities.push(softmax(&sharp));
            labels.push(label);
        }
        (probabilities, labels)
    }

    #[test]
    fn temperature_scaling_recovers_a_planted_temperature_and_keeps_every_decision() {
        // A model three times too sharp: the temperature that undoes it is 3.
        let (probabilities, labels) = planted(7, 20_000, 5, 3.0);
        let temperature = fit_temperature(&probabilities, &labels);
        assert!((temperature - 3.0).abs() < 0.15, "{temperature}");
        assert!(nll_at(&probabilities, &labels, temperature) < nll_at(&probabilities, &labels, 1.0));
        let argmax = |p: &[f32]| crate::argmax(p);
        for p in &probabilities {
            assert_eq!(argmax(&with_temperature(p, temperature)), argmax(p));
        }
        // A calibrated model is left alone.
        let (honest, labels) = planted(8, 20_000, 5, 1.0);
        let temperature = fit_temperature(&honest, &labels);
        assert!((temperature - 1.0).abs() < 0.08, "{temperature}");
    }

    #[test]
    fn conformal_sets_reach_their_coverage_on_exchangeable_data() {
        for coverage in [0.8, 0.9, 0.95] {
            let mut achieved = Vec::new();
            for seed in 0..40 {
                let (probabilities, labels) = planted(100 + seed, 600, 6, 1.5);
                let (held_out, test) = probabilities.split_at(300);
                let (held_out_labels, test_labels) = labels.split_at(300);
                let threshold = conformal_threshold(&conformal_scores(held_out, held_out_labels), coverage);
                let covered = test
                    .iter()
                    .zip(test_labels)
                    .filter(|(p, l)| prediction_set(p, threshold).contains(l))
                    .count();
                achieved.push(covered as f64 / test.len() as f64);
            }
            let mean = achieved.iter().sum::<f64>() / achieved.len() as f64;
            // Marginal coverage is at least the target on average over draws; one draw of
            // 300 records varies by a few points around it.
            assert!(mean >= coverage - 0.01, "{coverage}: {mean}");
            assert!(mean <= coverage + 0.05, "{coverage}: {mean} (sets far too large)");
        }
    }

    #[test]
    fn thresholds_and_sets_at_their_edges() {
        let scores = [0.1, 0.2, 0.3, 0.4];
        // (4 + 1) · 0.5 = 2.5 → the 3rd smallest.
        assert_eq!(conformal_threshold(&scores, 0.5), 0.3);
        // (4 + 1) · 0.9 = 4.5 → 5th of 4: every class.
        assert_eq!(conformal_threshold(&scores, 0.9), f64::INFINITY);
        assert_eq!(prediction_set(&[0.2, 0.5, 0.3], f64::INFINITY), vec![1, 2, 0]);
        assert_eq!(prediction_set(&[0.2, 0.5, 0.3], 0.0), vec![1]);
        assert_eq!(prediction_set(&[0.2, 0.5, 0.3], 0.75), vec![1, 2]);
        let brier = brier_score(&[vec![1.0, 0.0], vec![0.5, 0.5]], &[0, 1]);
        assert!((brier - 0.25).abs() < 1e-12, "{brier}");
    }
}
