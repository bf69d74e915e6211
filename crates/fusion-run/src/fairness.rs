//! The fairness section of an evaluation: the task's metric and calibration per group,
//! the worst group and the gap, and the modality the model leans on differently from one
//! group to another (mean Shapley value per group).

use fusion_core::{FusionModel, RegressionMetrics, THRESHOLD, Task, TensorDataset};
use serde::{Deserialize, Serialize};

use crate::{EVAL_BATCH, Error, Result};

/// Most modalities whose Shapley values an evaluation computes per group (64 passes).
pub const MAX_SHAPLEY_MODALITIES: usize = 6;

/// How the model fares per group of the evaluated records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fairness {
    /// The metric compared: `accuracy`, `subset accuracy` (multi-label) or `R²`.
    pub metric: String,
    /// Every group, by name.
    pub groups: Vec<GroupFairness>,
    /// The group with the lowest metric.
    pub worst: Option<String>,
    /// Highest minus lowest metric over the groups.
    pub gap: Option<f64>,
    /// Modality names of the Shapley means.
    #[serde(default)]
    pub modalities: Vec<String>,
    /// The modality whose mean Shapley value differs most between two groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaning: Option<Leaning>,
}

/// One group's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupFairness {
    /// Its name.
    pub group: String,
    /// Its records.
    pub records: usize,
    /// The task's metric on them (`None`: undefined, e.g. R² of a constant target).
    pub score: Option<f64>,
    /// Expected calibration error on them (classification and multi-label).
    pub ece: Option<f64>,
    /// Mean Shapley value of each modality over the group's records that have it
    /// (`None` without such a record; empty when not computed, e.g. for an ensemble).
    pub shapley: Vec<Option<f64>>,
}

/// A modality the model leans on more for one group than for another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leaning {
    /// The modality.
    pub modality: String,
    /// The group where its mean Shapley value is highest, and that value.
    pub most: (String, f64),
    /// The group where it is lowest, and that value.
    pub least: (String, f64),
}

/// What the records' truth is, per task.
pub(crate) enum Truth<'a> {
    /// Class indices; scores are class probabilities.
    Classes(&'a [usize]),
    /// Each label's state; scores are label probabilities.
    Labels(Vec<Vec<bool>>),
    /// Numbers; a score row holds the predicted number.
    Numbers(Vec<f64>),
}

impl<'a> Truth<'a> {
    /// The truth of `data`'s records as `task` reads it (`classes`: the classification's
    /// class indices, already read).
    pub(crate) fn of(task: Task, data: &TensorDataset, classes: &'a [usize]) -> Result<Self> {
        let labels = data.labels.to_device(tch::Device::Cpu).to_kind(tch::Kind::Double);
        Ok(match task {
            Task::Classification => Self::Classes(classes),
            Task::MultiLabel => Self::Labels(fusion_core::label_states(&data.labels)?),
            Task::Contrastive => {
                return Err(Error::Config(
                    "fairness: a contrastive model predicts nothing to compare between groups".into(),
                ));
            }
            Task::Regression => {
                Self::Numbers(Vec::<f64>::try_from(labels.reshape([-1])).map_err(fusion_core::Error::from)?)
            }
        })
    }

    fn metric(&self) -> &'static str {
        match self {
            Self::Classes(_) => "accuracy",
            Self::Labels(_) => "subset accuracy",
            Self::Numbers(_) => "R²",
        }
    }

    /// The metric and ECE over the records `members`.
    fn score(&self, scores: &[Vec<f32>], members: &[usize]) -> (Option<f64>, Option<f64>) {
        match self {
            Self::Classes(labels) => {
                let predicted: Vec<usize> = members.iter().map(|&i| fusion_core::argmax(&scores[i])).collect();
                let truth: Vec<usize> = members.iter().map(|&i| labels[i]).collect();
                let confidence: Vec<f64> = members
                    .iter()
                    .map(|&i| scores[i].iter().copied().fold(0.0f32, f32::max).into())
                    .collect();
                let correct = predicted.iter().zip(&truth).filter(|(p, t)| p == t).count();
                (
                    Some(correct as f64 / members.len().max(1) as f64),
                    Some(fusion_core::expected_calibration_error(&predicted, &truth, &confidence)),
                )
            }
            Self::Labels(truths) => {
                let decide = |s: f32| f64::from(s) >= THRESHOLD;
                let exact = members
                    .iter()
                    .filter(|&&i| scores[i].iter().zip(&truths[i]).all(|(&s, &t)| decide(s) == t))
                    .count();
                let (mut predicted, mut truth, mut confidence) = (Vec::new(), Vec::new(), Vec::new());
                for &i in members {
                    for (&s, &t) in scores[i].iter().zip(&truths[i]) {
                        predicted.push(usize::from(decide(s)));
                        truth.push(usize::from(t));
                        confidence.push(f64::from(s.max(1.0 - s)));
                    }
                }
                (
                    Some(exact as f64 / members.len().max(1) as f64),
                    Some(fusion_core::expected_calibration_error(&predicted, &truth, &confidence)),
                )
            }
            Self::Numbers(targets) => {
                let predicted: Vec<f64> = members.iter().map(|&i| f64::from(scores[i][0])).collect();
                let truth: Vec<f64> = members.iter().map(|&i| targets[i]).collect();
                (RegressionMetrics::compute(&predicted, &truth).r2, None)
            }
        }
    }
}

/// Per-modality Shapley values of each record and whether it has each modality.
pub(crate) struct Contributions {
    modalities: Vec<String>,
    values: Vec<Vec<f64>>,
    present: Vec<Vec<bool>>,
}

impl Contributions {
    /// Exact Shapley values of `model` on `data` ([`fusion_core::shapley_values`]).
    pub(crate) fn of(model: &FusionModel, data: &TensorDataset) -> Result<Self> {
        let report = fusion_core::shapley_values(model, data, EVAL_BATCH)?;
        let per_modality: Vec<Vec<bool>> = data
            .present
            .iter()
            .map(|p| Vec::<bool>::try_from(p.to_device(tch::Device::Cpu)).map_err(fusion_core::Error::from))
            .collect::<std::result::Result<_, _>>()?;
        let present = (0..report.values.len())
            .map(|i| per_modality.iter().map(|m| m[i]).collect())
            .collect();
        Ok(Self {
            modalities: report.modalities,
            values: report.values,
            present,
        })
    }
}

/// The fairness of `model`'s `evaluation` of `data` when its records have groups, with
/// the Shapley values of its modalities.
pub(crate) fn of_evaluation(
    model: &FusionModel,
    evaluation: &fusion_core::Evaluation,
    data: &TensorDataset,
) -> Result<Option<Fairness>> {
    let (Some(groups), false) = (&data.groups, model.task() == Task::Contrastive) else {
        return Ok(None);
    };
    let truth = Truth::of(model.task(), data, &evaluation.labels)?;
    // Exact Shapley values take 2^M passes over the split: bounded.
    let contributions = (model.modality_names().len() <= MAX_SHAPLEY_MODALITIES)
        .then(|| Contributions::of(model, data))
        .transpose()?;
    Ok(Some(Fairness::compute(
        &evaluation.probabilities,
        &truth,
        groups,
        contributions.as_ref(),
    )))
}

impl Fairness {
    /// The fairness of `scores` (one row per record, as [`fusion_core::Evaluation`]'s
    /// probabilities) against `truth` within `groups`; with Shapley values when given.
    pub(crate) fn compute(
        scores: &[Vec<f32>],
        truth: &Truth<'_>,
        groups: &[String],
        contributions: Option<&Contributions>,
    ) -> Self {
        let mut members: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, g) in groups.iter().enumerate().take(scores.len()) {
            members.entry(g.as_str()).or_default().push(i);
        }
        let groups: Vec<GroupFairness> = members
            .into_iter()
            .map(|(group, members)| {
                let (score, ece) = truth.score(scores, &members);
                let shapley = contributions.map_or_else(Vec::new, |c| {
                    (0..c.modalities.len())
                        .map(|m| {
                            let having: Vec<f64> = members
                                .iter()
                                .filter(|&&i| c.present[i][m])
                                .map(|&i| c.values[i][m])
                                .collect();
                            (!having.is_empty()).then(|| having.iter().sum::<f64>() / having.len() as f64)
                        })
                        .collect()
                });
                GroupFairness {
                    group: group.to_string(),
                    records: members.len(),
                    score,
                    ece,
                    shapley,
                }
            })
            .collect();
        let scored: Vec<(&str, f64)> = groups
            .iter()
            .filter_map(|g| g.score.map(|s| (g.group.as_str(), s)))
            .collect();
        let worst = scored.iter().min_by(|a, b| a.1.total_cmp(&b.1));
        let best = scored.iter().max_by(|a, b| a.1.total_cmp(&b.1));
        let modalities = contributions.map_or_else(Vec::new, |c| c.modalities.clone());
        let leaning = (0..modalities.len())
            .filter_map(|m| {
                let values: Vec<(&str, f64)> = groups
                    .iter()
                    .filter_map(|g| g.shapley.get(m).copied().flatten().map(|v| (g.group.as_str(), v)))
                    .collect();
                let most = values.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
                let least = values.iter().min_by(|a, b| a.1.total_cmp(&b.1))?;
                (values.len() >= 2).then(|| Leaning {
                    modality: modalities[m].clone(),
                    most: (most.0.to_string(), most.1),
                    least: (least.0.to_string(), least.1),
                })
            })
            .max_by(|a, b| (a.most.1 - a.least.1).total_cmp(&(b.most.1 - b.least.1)));
        Self {
            metric: truth.metric().into(),
            worst: worst.map(|w| w.0.to_string()),
            gap: worst.zip(best).map(|(w, b)| b.1 - w.1),
            groups,
            modalities,
            leaning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_worst_gap_and_the_modality_leaned_on_are_hand_computed() {
        // Group a: 2 of 2 right; group b: 1 of 3 right.
        let scores: Vec<Vec<f32>> = vec![
            vec![0.9, 0.1],
            vec![0.2, 0.8],
            vec![0.6, 0.4],
            vec![0.7, 0.3],
            vec![0.4, 0.6],
        ];
        let labels = [0, 1, 0, 1, 0];
        let groups: Vec<String> = ["a", "a", "b", "b", "b"].iter().map(|s| s.to_string()).collect();
        let contributions = Contributions {
            modalities: vec!["image".into(), "audio".into()],
            // image: a 0.3, b 0.1 (b's third record lacks it); audio: a 0.0, b 0.5.
            values: vec![
                vec![0.2, 0.0],
                vec![0.4, 0.0],
                vec![0.1, 0.6],
                vec![0.1, 0.4],
                vec![0.0, 0.5],
            ],
            present: vec![
                vec![true, true],
                vec![true, true],
                vec![true, true],
                vec![true, true],
                vec![false, true],
            ],
        };
        let fairness = Fairness::compute(&scores, &Truth::Classes(&labels), &groups, Some(&contributions));
        assert_eq!(fairness.groups.len(), 2);
        assert_eq!(fairness.groups[0].score, Some(1.0));
        let b = &fairness.groups[1];
        assert!((b.score.unwrap_or_default() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(fairness.worst.as_deref(), Some("b"));
        assert!((fairness.gap.unwrap_or_default() - 2.0 / 3.0).abs() < 1e-12);
        assert!(
            (b.shapley[0].unwrap_or_default() - 0.1).abs() < 1e-12,
            "{:?}",
            b.shapley
        );
        let leaning = fairness.leaning.expect("a leaning");
        assert_eq!(leaning.modality, "audio");
        assert_eq!((leaning.most.0.as_str(), leaning.least.0.as_str()), ("b", "a"));
        assert!((leaning.most.1 - 0.5).abs() < 1e-12);
        // A regression's metric is R² per group.
        let numbers: Vec<Vec<f32>> = vec![vec![1.0], vec![2.0], vec![3.0], vec![5.0]];
        let groups: Vec<String> = ["x", "x", "y", "y"].iter().map(|s| s.to_string()).collect();
        let fairness = Fairness::compute(&numbers, &Truth::Numbers(vec![1.0, 2.0, 3.0, 4.0]), &groups, None);
        assert_eq!(fairness.metric, "R²");
        assert_eq!(fairness.groups[0].score, Some(1.0));
        // y: residual 1 over a variance of 0.5 around 3.5: R² = 1 − 1/0.5 = −1.
        assert!((fairness.groups[1].score.unwrap_or_default() + 1.0).abs() < 1e-9);
        assert_eq!(fairness.worst.as_deref(), Some("y"));
        assert!(fairness.leaning.is_none() && fairness.groups[0].ece.is_none());
    }
}
