//! What each training sample counts for: sample weights, class-balanced batches and the
//! group-robust objectives (reweighted groups, group DRO).

use super::*;
use crate::model::sample_mass;

/// What training minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// The mean loss (weighted by the samples' weights): empirical risk minimisation.
    #[default]
    Erm,
    /// The mean loss with every group's samples weighing alike in total: each sample's
    /// weight times `total / (groups · its group's total)`.
    ReweightGroups,
    /// Group DRO (Sagawa et al. 2020): each group's mean loss in the batch, weighted by
    /// group weights `q` that an exponentiated-gradient step moves towards the groups
    /// with the largest loss ([`GroupDro`]).
    GroupDro,
}

impl Objective {
    pub(super) fn is_erm(&self) -> bool {
        *self == Self::Erm
    }

    fn name(self) -> &'static str {
        match self {
            Self::Erm => "erm",
            Self::ReweightGroups => "reweight_groups",
            Self::GroupDro => "group_dro",
        }
    }
}

/// Settings of group DRO's online group weights: before each step,
/// `q_g ← q_g · exp(η · (L_g + C / √n_g))`, then `q ← q / Σ q`, where `L_g` is group
/// `g`'s mean loss in the batch (0 when it has no sample there) and `n_g` its number of
/// training samples; the step then minimises `Σ_g q_g · L_g`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupDro {
    /// Step size η of the group weights' update.
    #[serde(default = "default_dro_step_size")]
    pub step_size: f64,
    /// Generalisation adjustment C: a small group's training loss flatters it, so it
    /// counts `C / √n_g` more in the update (0: none).
    #[serde(default)]
    pub adjustment: f64,
}

fn default_dro_step_size() -> f64 {
    0.01
}

impl Default for GroupDro {
    fn default() -> Self {
        Self {
            step_size: default_dro_step_size(),
            adjustment: 0.0,
        }
    }
}

/// How the samples of each epoch's batches are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// Every sample once per epoch, in a seeded order.
    #[default]
    Shuffle,
    /// As many draws per epoch as samples, with replacement, every class equally likely
    /// (then a uniform sample of it): rare classes are seen as often as common ones.
    ClassBalanced,
}

impl Sampling {
    pub(super) fn is_shuffle(&self) -> bool {
        *self == Self::Shuffle
    }
}

/// One exponentiated-gradient step of group DRO's weights (see [`GroupDro`]):
/// `losses[g]` is group `g`'s mean loss in the batch, `sizes[g]` its training samples.
pub fn update_group_weights(weights: &mut [f64], losses: &[f64], sizes: &[f64], settings: &GroupDro) {
    for ((q, loss), size) in weights.iter_mut().zip(losses).zip(sizes) {
        let adjusted = loss + settings.adjustment / size.max(1.0).sqrt();
        *q *= (settings.step_size * adjusted).exp();
    }
    let total: f64 = weights.iter().sum();
    if total > 0.0 && total.is_finite() {
        weights.iter_mut().for_each(|q| *q /= total);
    } else {
        // An overflow loses the ordering; start over from uniform weights.
        let uniform = 1.0 / weights.len().max(1) as f64;
        weights.iter_mut().for_each(|q| *q = uniform);
    }
}

/// Batches of `batch_size` for one epoch of class-balanced sampling ([`Sampling`]):
/// `labels.len()` draws, each a class uniformly among those present, then one of its
/// samples uniformly; seeded, so every rank and a resumed run draw the same.
pub fn class_balanced_batches(labels: &[i64], batch_size: usize, seed: u64) -> Vec<Tensor> {
    let mut members: std::collections::BTreeMap<i64, Vec<i64>> = std::collections::BTreeMap::new();
    for (i, &label) in labels.iter().enumerate() {
        members.entry(label).or_default().push(i as i64);
    }
    let classes: Vec<&Vec<i64>> = members.values().collect();
    if classes.is_empty() {
        return Vec::new();
    }
    let mut rng = crate::dataset::SplitMix64(seed);
    let draws: Vec<i64> = (0..labels.len())
        .map(|_| {
            let class = classes[(rng.next() % classes.len() as u64) as usize];
            class[(rng.next() % class.len() as u64) as usize]
        })
        .collect();
    draws.chunks(batch_size.max(1)).map(Tensor::from_slice).collect()
}

/// The training set's weights and groups as the loss reads them, built once before
/// training when anything differs from a plain mean.
pub(super) struct Weighting {
    /// `[N]` or `[N, L]` weights on the CPU (`None`: all 1).
    weights: Option<Tensor>,
    /// Each sample's weight (the mean of its labels' weights).
    mass: Vec<f64>,
    /// Each sample's group index, when the objective reads groups.
    group_of: Vec<usize>,
    /// Training samples of each group.
    group_sizes: Vec<f64>,
    dro: Option<GroupDro>,
    /// Group DRO's current group weights.
    pub(super) group_weights: Vec<f64>,
}

impl Weighting {
    /// `None` when every sample weighs 1 under ERM (the plain mean, as without weights).
    pub(super) fn new(config: &TrainConfig, train_set: &dyn TrainingData) -> Result<Option<Self>> {
        let n = train_set.len();
        let weights = match train_set.weights() {
            Some(w) => Some(checked_weights(w, train_set.labels(), n)?),
            None => None,
        };
        if config.objective.is_erm() && weights.is_none() {
            return Ok(None);
        }
        let mut mass = match &weights {
            Some(w) => Vec::<f64>::try_from(sample_mass(w).to_kind(Kind::Double))?,
            None => vec![1.0; n as usize],
        };
        let mut weights = weights;
        let (group_of, group_sizes) = match config.objective {
            Objective::Erm => (Vec::new(), Vec::new()),
            objective => {
                let groups = train_set.groups().ok_or_else(|| {
                    Error::Config(format!(
                        "train.objective: `{}` needs each training record's group (a `group` column)",
                        objective.name()
                    ))
                })?;
                let names: std::collections::BTreeSet<&str> = groups.iter().map(String::as_str).collect();
                let names: Vec<&str> = names.into_iter().collect();
                let group_of: Vec<usize> = groups
                    .iter()
                    .map(|g| names.binary_search(&g.as_str()).unwrap_or(0))
                    .collect();
                let mut sizes = vec![0.0; names.len()];
                group_of.iter().for_each(|&g| sizes[g] += 1.0);
                (group_of, sizes)
            }
        };
        if config.objective == Objective::ReweightGroups {
            let mut totals = vec![0.0; group_sizes.len()];
            group_of.iter().zip(&mass).for_each(|(&g, m)| totals[g] += m);
            let total: f64 = totals.iter().sum();
            let factor: Vec<f64> = group_of
                .iter()
                .map(|&g| total / (totals.len() as f64 * totals[g].max(1e-12)))
                .collect();
            let factor_tensor = Tensor::from_slice(&factor).to_kind(Kind::Float);
            weights = Some(match weights {
                Some(w) if w.dim() == 2 => w * factor_tensor.unsqueeze(1),
                Some(w) => w * factor_tensor,
                None => factor_tensor,
            });
            mass.iter_mut().zip(&factor).for_each(|(m, f)| *m *= f);
        }
        let dro = (config.objective == Objective::GroupDro).then(|| config.group_dro.unwrap_or_default());
        let groups = group_sizes.len();
        Ok(Some(Self {
            weights,
            mass,
            group_of,
            group_sizes,
            dro,
            group_weights: vec![1.0 / groups.max(1) as f64; groups],
        }))
    }

    /// Whether the group weights are part of the trainer's state.
    pub(super) fn has_group_weights(&self) -> bool {
        self.dro.is_some()
    }

    /// This rank's part of the loss of the batch `batch` (every rank's parts sum to the
    /// batch's loss), from the forward pass over its samples `mine` (`None` when it has
    /// none: it still joins group DRO's collective).
    pub(super) fn loss(
        &mut self,
        output: Option<(&FusionOutput, &Tensor)>,
        mine: &Tensor,
        batch: &Tensor,
        branch_weight: f64,
        group: Option<&dyn ProcessGroup>,
        device: Device,
    ) -> Result<Tensor> {
        let mine_rows = Vec::<i64>::try_from(mine)?;
        let batch_rows = Vec::<i64>::try_from(batch)?;
        let weights = self
            .weights
            .as_ref()
            .filter(|_| !mine_rows.is_empty())
            .map(|w| w.index_select(0, mine).to_device(device));
        let losses = output.map(|(output, labels)| output.weighted_sample_losses(labels, weights.as_ref()));
        let fused = match self.dro {
            None => {
                let total: f64 = batch_rows.iter().map(|&i| self.mass[i as usize]).sum();
                match &losses {
                    Some(losses) => losses.sum(Kind::Float) / total.max(1e-12),
                    None => Tensor::zeros([], (Kind::Float, device)),
                }
            }
            Some(settings) => {
                let groups = self.group_sizes.len();
                let mut totals = vec![0.0; groups];
                for &i in &batch_rows {
                    totals[self.group_of[i as usize]] += self.mass[i as usize];
                }
                // Each group's summed loss over this rank's samples `[G]`.
                let sums = match &losses {
                    Some(losses) => {
                        let ids: Vec<i64> = mine_rows.iter().map(|&i| self.group_of[i as usize] as i64).collect();
                        let one_hot = Tensor::from_slice(&ids)
                            .to_device(device)
                            .one_hot(groups as i64)
                            .to_kind(Kind::Float);
                        one_hot
                            .transpose(0, 1)
                            .matmul(&losses.to_kind(Kind::Float).unsqueeze(1))
                            .squeeze_dim(1)
                    }
                    None => Tensor::zeros([groups as i64], (Kind::Float, device)),
                };
                let mut whole = sums.detach().to_kind(Kind::Double);
                if let Some(group) = group {
                    group.all_reduce_sum(&mut whole)?;
                }
                let means: Vec<f64> = Vec::<f64>::try_from(whole.to_device(Device::Cpu))?
                    .iter()
                    .zip(&totals)
                    .map(|(sum, total)| if *total > 0.0 { sum / total } else { 0.0 })
                    .collect();
                update_group_weights(&mut self.group_weights, &means, &self.group_sizes, &settings);
                let coefficients: Vec<f32> = self
                    .group_weights
                    .iter()
                    .zip(&totals)
                    .map(|(q, total)| if *total > 0.0 { (q / total) as f32 } else { 0.0 })
                    .collect();
                (sums * Tensor::from_slice(&coefficients).to_device(device)).sum(Kind::Float)
            }
        };
        let branches = match output {
            Some((output, labels)) if branch_weight != 0.0 => output.branch_loss(labels, weights.as_ref()),
            _ => None,
        };
        Ok(match branches {
            // Per-branch losses are averaged per rank, as without weights.
            Some(branches) => {
                fused + branches * (branch_weight * mine_rows.len() as f64 / batch_rows.len().max(1) as f64)
            }
            None => fused,
        })
    }
}

/// The training set's weights on the CPU as float, checked: one row per sample (`[N]`, or
/// `[N, L]` matching a multi-label target), every value finite and ≥ 0, some positive.
fn checked_weights(weights: &Tensor, labels: &Tensor, n: i64) -> Result<Tensor> {
    let size = weights.size();
    let fits = match size.as_slice() {
        [rows] => *rows == n,
        [rows, width] => *rows == n && labels.dim() == 2 && labels.size()[1] == *width,
        _ => false,
    };
    if !fits {
        return Err(Error::Shape(format!(
            "sample weights of shape {size:?} for {n} samples with targets of shape {:?}",
            labels.size()
        )));
    }
    let weights = weights.to_device(Device::Cpu).to_kind(Kind::Float);
    let values = Vec::<f32>::try_from(weights.reshape([-1]))?;
    if let Some(bad) = values.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(Error::Config(format!(
            "sample weight {bad}: must be a finite number ≥ 0"
        )));
    }
    if !values.iter().any(|w| *w > 0.0) {
        return Err(Error::Config("every sample weight is 0: nothing to train on".into()));
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_weights_follow_the_update_rule_on_a_hand_computed_example() {
        // Two groups, q = (1/2, 1/2), losses (1, 3), η = 0.5, no adjustment:
        // q ∝ (½e^0.5, ½e^1.5) → (1/(1+e), e/(1+e)).
        let settings = GroupDro {
            step_size: 0.5,
            adjustment: 0.0,
        };
        let mut q = vec![0.5, 0.5];
        update_group_weights(&mut q, &[1.0, 3.0], &[10.0, 10.0], &settings);
        let e = std::f64::consts::E;
        assert!((q[0] - 1.0 / (1.0 + e)).abs() < 1e-12, "{q:?}");
        assert!((q[1] - e / (1.0 + e)).abs() < 1e-12, "{q:?}");
        // With the adjustment C = 2 and sizes (4, 100): adjusted losses (1 + 1, 3 + 0.2);
        // from (1/(1+e), e/(1+e)): q ∝ (e^1 / (1+e), e · e^1.6 / (1+e)).
        let adjusted = GroupDro {
            step_size: 0.5,
            adjustment: 2.0,
        };
        update_group_weights(&mut q, &[1.0, 3.0], &[4.0, 100.0], &adjusted);
        let (a, b) = (e, e * (1.6f64).exp());
        assert!((q[0] - a / (a + b)).abs() < 1e-12, "{q:?}");
        assert!((q[1] - b / (a + b)).abs() < 1e-12, "{q:?}");
        // An overflow starts over from uniform weights.
        let mut q = vec![0.5, 0.5];
        update_group_weights(
            &mut q,
            &[1e308, 1e308],
            &[1.0, 1.0],
            &GroupDro {
                step_size: 10.0,
                adjustment: 0.0,
            },
        );
        assert_eq!(q, [0.5, 0.5]);
    }

    #[test]
    fn class_balanced_batches_draw_every_class_alike() {
        // 90 samples of class 0, 10 of class 1: about half the draws are class 1.
        let labels: Vec<i64> = (0..100).map(|i| i64::from(i >= 90)).collect();
        let batches = class_balanced_batches(&labels, 32, 7);
        assert_eq!(batches.iter().map(|b| b.size()[0]).sum::<i64>(), 100);
        assert_eq!(batches.len(), 4);
        let mut rare = 0;
        let mut total = 0;
        for seed in 0..50 {
            for batch in class_balanced_batches(&labels, 100, seed) {
                let drawn = Vec::<i64>::try_from(&batch).unwrap_or_default();
                rare += drawn.iter().filter(|&&i| i >= 90).count();
                total += drawn.len();
            }
        }
        let share = rare as f64 / total as f64;
        assert!((share - 0.5).abs() < 0.03, "class 1 drawn {share}");
        assert_eq!(
            Vec::<i64>::try_from(&class_balanced_batches(&labels, 100, 3)[0]).ok(),
            Vec::<i64>::try_from(&class_balanced_batches(&labels, 100, 3)[0]).ok(),
            "seeded"
        );
    }
}
