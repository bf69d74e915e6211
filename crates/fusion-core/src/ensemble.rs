//! Ensembles of whole trained models, fused at the decision level: greedy forward
//! selection with replacement on held-out predictions (Caruana et al., "Ensemble Selection
//! from Libraries of Models", ICML 2004), as AutoGluon's weighted ensemble does.

use serde::{Deserialize, Serialize};

use crate::{BinaryMetrics, Error, GroupMetrics, Metrics, Result, THRESHOLD, train::argmax};

/// Outcome of [`select_ensemble`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Weight of each member (pick count / rounds; sums to 1).
    pub weights: Vec<f64>,
    /// The member picked at each round.
    pub picks: Vec<usize>,
    /// Log loss of the ensemble after each round.
    pub losses: Vec<f64>,
}

/// Smallest probability a log loss takes the logarithm of.
const FLOOR: f64 = 1e-12;

/// Mean negative log-probability of the true class.
pub fn log_loss(probabilities: &[Vec<f32>], labels: &[usize]) -> f64 {
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(p, &l)| -f64::from(p.get(l).copied().unwrap_or(0.0)).max(FLOOR).ln())
        .sum();
    total / labels.len().max(1) as f64
}

/// `Σ weights[m] · members[m]`, record by record.
pub fn weighted_average(members: &[Vec<Vec<f32>>], weights: &[f64]) -> Vec<Vec<f32>> {
    let records = members.first().map_or(0, Vec::len);
    (0..records)
        .map(|i| {
            let classes = members[0][i].len();
            (0..classes)
                .map(|c| {
                    members
                        .iter()
                        .zip(weights)
                        .map(|(member, &w)| w * f64::from(member[i][c]))
                        .sum::<f64>() as f32
                })
                .collect()
        })
        .collect()
}

/// Checks that every member has one probability row per label, all of one width, and
/// every label is a column.
fn check_shapes(members: &[Vec<Vec<f32>>], labels: &[usize]) -> Result<usize> {
    let bad = |reason: String| Err(Error::Config(format!("ensemble: {reason}")));
    let Some(first) = members.first() else {
        return bad("no members".into());
    };
    let classes = first.first().map_or(0, Vec::len);
    if labels.is_empty() || classes == 0 {
        return bad("no held-out records to select on".into());
    }
    for (m, member) in members.iter().enumerate() {
        if member.len() != labels.len() || member.iter().any(|row| row.len() != classes) {
            return bad(format!(
                "member {m} gives {} rows for {} records (all rows need {classes} classes)",
                member.len(),
                labels.len()
            ));
        }
    }
    if let Some(label) = labels.iter().find(|&&l| l >= classes) {
        return bad(format!("label {label} of {classes} classes"));
    }
    Ok(classes)
}

/// Greedy forward selection with replacement: `rounds` times, adds the member whose
/// inclusion gives the lowest log loss of the averaged probabilities on `labels` (the
/// lowest index on a tie). `members[m][i]` are member `m`'s class probabilities of record `i`.
pub fn select_ensemble(members: &[Vec<Vec<f32>>], labels: &[usize], rounds: usize) -> Result<Selection> {
    let classes = check_shapes(members, labels)?;
    if rounds == 0 {
        return Err(Error::Config("ensemble: rounds must be at least 1".into()));
    }
    let mut sums = vec![vec![0.0f64; classes]; labels.len()];
    let mut counts = vec![0usize; members.len()];
    let (mut picks, mut losses) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 1..=rounds {
        let loss_with = |member: &Vec<Vec<f32>>| -> f64 {
            let total: f64 = sums
                .iter()
                .zip(member)
                .zip(labels)
                .map(|((sum, row), &l)| -((sum[l] + f64::from(row[l])) / round as f64).max(FLOOR).ln())
                .sum();
            total / labels.len() as f64
        };
        let (best, loss) = members
            .iter()
            .map(loss_with)
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |best, (m, loss)| if loss < best.1 { (m, loss) } else { best },
            );
        for (sum, row) in sums.iter_mut().zip(&members[best]) {
            for (s, &p) in sum.iter_mut().zip(row) {
                *s += f64::from(p);
            }
        }
        counts[best] += 1;
        picks.push(best);
        losses.push(loss);
    }
    Ok(Selection {
        weights: counts.iter().map(|&c| c as f64 / rounds as f64).collect(),
        picks,
        losses,
    })
}

/// Predictions and metrics of class probabilities against labels, as [`crate::evaluate`]
/// reports them for a model (and an ensemble for its averaged probabilities): log loss,
/// metrics, per-group metrics when `groups` is given, predicted classes.
pub fn probability_metrics(
    probabilities: &[Vec<f32>],
    labels: &[usize],
    groups: Option<&[String]>,
    classes: usize,
) -> (f64, Metrics, Option<GroupMetrics>, Vec<usize>) {
    let predicted: Vec<usize> = probabilities.iter().map(|p| argmax(p)).collect();
    let confidence: Vec<f64> = probabilities
        .iter()
        .zip(&predicted)
        .map(|(p, &c)| f64::from(p[c]))
        .collect();
    let mut metrics = Metrics::compute(&predicted, labels, &confidence, classes);
    if classes == 2 {
        let scores: Vec<f64> = probabilities.iter().map(|p| f64::from(p[1])).collect();
        let truths: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
        metrics.binary = Some(BinaryMetrics::compute(&scores, &truths, THRESHOLD));
    }
    let groups = groups.map(|g| GroupMetrics::compute(&predicted, labels, &confidence, g, classes));
    (log_loss(probabilities, labels), metrics, groups, predicted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three members on four records of two classes: `a` is right on records 0–1 and
    /// unsure elsewhere, `b` right on 2–3, `c` confidently wrong everywhere.
    fn members() -> Vec<Vec<Vec<f32>>> {
        let a = vec![vec![0.9, 0.1], vec![0.1, 0.9], vec![0.5, 0.5], vec![0.5, 0.5]];
        let b = vec![vec![0.5, 0.5], vec![0.5, 0.5], vec![0.8, 0.2], vec![0.2, 0.8]];
        let c = vec![vec![0.05, 0.95], vec![0.95, 0.05], vec![0.05, 0.95], vec![0.95, 0.05]];
        vec![a, b, c]
    }

    const LABELS: [usize; 4] = [0, 1, 0, 1];

    #[test]
    fn selection_matches_a_hand_computed_run() -> Result<()> {
        let selection = select_ensemble(&members(), &LABELS, 4)?;
        // True-class probabilities per record. Round 1: a alone (.9,.9,.5,.5) → −(2 ln .9 +
        // 2 ln .5)/4 = 0.399254; b alone (.5,.5,.8,.8) → 0.458145; c 2.24 → a. Round 2: a+a
        // 0.399254, a+b (.7,.7,.65,.65) → 0.393729 → b. Round 3: 2a+b (.7667,.7667,.6,.6) →
        // −ln(.46)/2 = 0.388264; a+2b (.6333,.6333,.7,.7) → 0.406716 → a. Round 4: 3a+b
        // (.8,.8,.575,.575) → −ln(.46)/2 again; 2a+2b 0.393729 → a.
        assert_eq!(selection.picks, [0, 1, 0, 0]);
        assert_eq!(selection.weights, [0.75, 0.25, 0.0]);
        let expected = [0.399_254, 0.393_729, 0.388_264, 0.388_264];
        for (got, want) in selection.losses.iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{:?}", selection.losses);
        }
        let averaged = weighted_average(&members(), &selection.weights);
        assert!((log_loss(&averaged, &LABELS) - expected[3]).abs() < 1e-5);
        assert!((averaged[2][0] - 0.575).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn the_ensemble_never_does_worse_than_its_best_member() -> Result<()> {
        let members = members();
        let best_alone = members
            .iter()
            .map(|m| log_loss(m, &LABELS))
            .fold(f64::INFINITY, f64::min);
        let selection = select_ensemble(&members, &LABELS, 10)?;
        assert!(selection.losses.iter().all(|&l| l <= best_alone + 1e-12));
        assert!((selection.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let (loss, metrics, groups, predicted) = probability_metrics(
            &weighted_average(&members, &selection.weights),
            &LABELS,
            Some(&["x", "x", "y", "y"].map(String::from)),
            2,
        );
        assert_eq!(predicted, LABELS);
        assert_eq!(metrics.binary.as_ref().and_then(|b| b.roc_auc), Some(1.0));
        assert!((loss - selection.losses[9]).abs() < 1e-5);
        assert_eq!(metrics.accuracy, 1.0);
        assert_eq!(groups.map(|g| g.groups.len()), Some(2));
        Ok(())
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        let members = members();
        assert!(select_ensemble(&[], &LABELS, 3).is_err());
        assert!(select_ensemble(&members, &LABELS[..3], 3).is_err());
        assert!(select_ensemble(&members, &[0, 1, 2, 0], 3).is_err());
        assert!(select_ensemble(&members, &LABELS, 0).is_err());
        let mut ragged = members.clone();
        ragged[1][2] = vec![1.0];
        assert!(select_ensemble(&ragged, &LABELS, 3).is_err());
    }
}
