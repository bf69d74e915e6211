//! Training settings: optimiser, learning-rate schedule, early stopping, where the data
//! is read from, and their checks.

use super::*;

/// Optimiser and its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Adam with decoupled weight decay (Loshchilov & Hutter 2019).
    AdamW {
        /// Learning rate.
        lr: f64,
        /// Decoupled weight decay.
        #[serde(default = "default_weight_decay")]
        weight_decay: f64,
        /// First-moment decay.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// Second-moment decay.
        #[serde(default = "default_beta2")]
        beta2: f64,
        /// Denominator term.
        #[serde(default = "default_eps")]
        eps: f64,
    },
    /// Stochastic gradient descent with momentum and (L2) weight decay.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum (0 for plain SGD).
        #[serde(default)]
        momentum: f64,
        /// L2 weight decay added to the gradient.
        #[serde(default)]
        weight_decay: f64,
    },
}

fn default_weight_decay() -> f64 {
    0.01
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self::AdamW {
            lr: 1e-3,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl OptimizerConfig {
    /// AdamW at learning rate `lr` without weight decay (that is, Adam), other settings at
    /// their defaults.
    pub fn adam(lr: f64) -> Self {
        Self::AdamW {
            lr,
            weight_decay: 0.0,
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
        }
    }

    /// The same optimiser at base learning rate `lr`.
    pub fn with_lr(mut self, lr: f64) -> Self {
        let (Self::AdamW { lr: base, .. } | Self::Sgd { lr: base, .. }) = &mut self;
        *base = lr;
        self
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Self::AdamW { lr, .. } | Self::Sgd { lr, .. } => *lr,
        }
    }
}

/// Learning rate over epochs, as a factor of the optimiser's base rate.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Linear warm-up, then cosine decay to `min_ratio` of the base rate.
    Cosine {
        /// Epochs of linear warm-up.
        #[serde(default)]
        warmup_epochs: usize,
        /// Final rate as a fraction of the base rate.
        #[serde(default)]
        min_ratio: f64,
    },
    /// Multiply by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: usize,
        /// Decay factor.
        gamma: f64,
    },
}

impl Schedule {
    /// Factor of the base rate at `epoch` (0-based) of `epochs`.
    pub fn factor(&self, epoch: usize, epochs: usize) -> f64 {
        match self {
            Self::Constant => 1.0,
            Self::Cosine {
                warmup_epochs,
                min_ratio,
            } => {
                if epoch < *warmup_epochs {
                    (epoch + 1) as f64 / warmup_epochs.saturating_add(1) as f64
                } else {
                    let span = epochs.saturating_sub(*warmup_epochs).max(1) as f64;
                    let progress = (epoch - warmup_epochs) as f64 / span;
                    min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
            Self::Step { every, gamma } => gamma.powi((epoch / (*every).max(1)) as i32),
        }
    }
}

/// Metric watched by early stopping and for keeping the best checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMetric {
    /// Validation accuracy (higher is better): a multi-label task's subset accuracy, a
    /// regression's R².
    Accuracy,
    /// Validation macro-F1 (higher is better); a regression's R².
    MacroF1,
    /// Validation loss (lower is better).
    Loss,
    /// The lowest accuracy of any group of the validation records (higher is better; a
    /// classification with a `group` column).
    WorstGroupAccuracy,
}

/// Stop when the metric has not improved for `patience` epochs, or has reached its best
/// possible value (1 for every metric but the loss).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Watched metric.
    pub metric: StopMetric,
    /// Epochs without improvement before stopping.
    pub patience: usize,
}

impl EarlyStopping {
    /// Whether training stops after `epochs_done` epochs, the best `best_score` at epoch
    /// `best_epoch`. A perfect score cannot be beaten: the weights kept stay the same
    /// whether training goes on or not.
    pub fn stops(&self, epochs_done: usize, (best_epoch, best_score): (usize, f64)) -> bool {
        epochs_done - best_epoch >= self.patience || (self.metric != StopMetric::Loss && best_score >= 1.0)
    }
}

/// Everything about a training run except the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of passes over the training set.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Optimiser.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    #[serde(default, deserialize_with = "crate::config::deserialize_strict")]
    pub schedule: Schedule,
    /// Clip the global gradient norm to this value.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Early stopping on a validation metric (needs a validation set).
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// Seed of initialisation, shuffling, dropout and modality dropout.
    #[serde(default)]
    pub seed: u64,
    /// Probability of hiding each modality of each training sample (at least one stays).
    #[serde(default)]
    pub modality_dropout: f64,
    /// Weight of the per-branch losses (late, hybrid, CentralNet).
    #[serde(default = "default_branch_weight")]
    pub branch_loss_weight: f64,
    /// Learning rates of their own for the variables under some paths (a pretrained
    /// encoder fine-tuned slower than the fusion head); the schedule scales them alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub param_groups: Vec<ParamGroup>,
    /// Most seconds of training between two saves of the whole state (weights, optimiser,
    /// trainer): the last epoch and the one before an early stop are always saved, others
    /// once this much time has passed since the last save (0: every epoch). A resumed run
    /// repeats the epochs after its checkpoint exactly. The best weights travel inside each
    /// checkpoint and are written beside it (`best.safetensors`) at the same moments.
    #[serde(default = "default_checkpoint_every_s")]
    pub checkpoint_every_s: f64,
    /// Where training reads its inputs from: `memory`, `stream` (shards on disk read batch
    /// by batch, see [`ShardedDataset`](crate::ShardedDataset)) or `auto` (streamed when
    /// they would fill more than a quarter of the memory available). Either gives the same
    /// run, bit for bit.
    #[serde(default, skip_serializing_if = "DataSource::is_auto")]
    pub data: DataSource,
    /// Precision of the training forward pass: `fp32`, `bf16` (autocast to bfloat16) or
    /// `fp16` (autocast to float16 with a dynamic loss scale kept in the checkpoint).
    /// Evaluation runs in float32.
    #[serde(default, skip_serializing_if = "Precision::is_fp32")]
    pub precision: Precision,
    /// What the loss is: `erm` (the mean over samples, weighted by their weights),
    /// `reweight_groups` (every group weighing alike) or `group_dro` (the worst groups'
    /// loss, Sagawa et al. 2020); the last two need each record's group.
    #[serde(default, skip_serializing_if = "Objective::is_erm")]
    pub objective: Objective,
    /// Group DRO's step size and generalisation adjustment (with `objective: group_dro`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_dro: Option<GroupDro>,
    /// How batches are drawn: `shuffle` (every sample once per epoch) or `class_balanced`
    /// (every class equally often, with replacement; classification).
    #[serde(default, skip_serializing_if = "Sampling::is_shuffle")]
    pub sampling: Sampling,
}

/// [`TrainConfig::data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// Streamed when the inputs would take more than a quarter of the available memory.
    #[default]
    Auto,
    /// Held in memory (the fastest when they fit).
    Memory,
    /// Read from shards on disk, batch by batch.
    Stream,
}

impl DataSource {
    pub(super) fn is_auto(&self) -> bool {
        *self == Self::Auto
    }

    /// Whether inputs of `bytes` are streamed, given `available` bytes of memory (unknown:
    /// held in memory).
    pub fn streams(self, bytes: u64, available: Option<u64>) -> bool {
        match self {
            Self::Memory => false,
            Self::Stream => true,
            Self::Auto => available.is_some_and(|a| bytes > a / 4),
        }
    }
}

/// Memory the system could give this process now (`MemAvailable`), where it reports it.
pub fn available_memory() -> Option<u64> {
    crate::device::proc_bytes("/proc/meminfo", "MemAvailable")
}

/// Variables whose name starts with `prefix` train at learning rate `lr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroup {
    /// Variable-name prefix, e.g. `encoder.image.` (the longest matching prefix wins).
    pub prefix: String,
    /// Base learning rate of the group.
    pub lr: f64,
}

fn default_branch_weight() -> f64 {
    1.0
}
fn default_checkpoint_every_s() -> f64 {
    30.0
}

impl TrainConfig {
    /// One epoch of `batch_size` with the defaults: AdamW (lr 1e-3), constant rate, no
    /// clipping, no early stopping, seed 0, no modality dropout, branch losses weighted 1.
    pub fn new(batch_size: usize) -> Self {
        Self {
            epochs: 1,
            batch_size,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::default(),
            grad_clip: None,
            early_stopping: None,
            seed: 0,
            modality_dropout: 0.0,
            branch_loss_weight: default_branch_weight(),
            param_groups: Vec::new(),
            checkpoint_every_s: default_checkpoint_every_s(),
            data: DataSource::Auto,
            precision: Precision::Fp32,
            objective: Objective::Erm,
            group_dro: None,
            sampling: Sampling::Shuffle,
        }
    }

    /// Checks every setting's range before any work, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| Err(Error::Config(format!("train.{field}: {why}")));
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if !(self.optimizer.lr() > 0.0 && self.optimizer.lr().is_finite()) {
            return bad("optimizer.lr", "must be positive");
        }
        if !(0.0..1.0).contains(&self.modality_dropout) {
            return bad("modality_dropout", "must be in [0, 1)");
        }
        match &self.optimizer {
            OptimizerConfig::AdamW {
                weight_decay,
                beta1,
                beta2,
                eps,
                ..
            } => {
                if !(*weight_decay >= 0.0 && weight_decay.is_finite()) {
                    return bad("optimizer.weight_decay", "must be a finite number ≥ 0");
                }
                for (field, beta) in [("optimizer.beta1", beta1), ("optimizer.beta2", beta2)] {
                    if !(0.0..1.0).contains(beta) {
                        return bad(field, "must be in [0, 1)");
                    }
                }
                if !(*eps > 0.0 && eps.is_finite()) {
                    return bad("optimizer.eps", "must be positive");
                }
            }
            OptimizerConfig::Sgd {
                momentum, weight_decay, ..
            } => {
                if !(0.0..1.0).contains(momentum) {
                    return bad("optimizer.momentum", "must be in [0, 1)");
                }
                if !(*weight_decay >= 0.0 && weight_decay.is_finite()) {
                    return bad("optimizer.weight_decay", "must be a finite number ≥ 0");
                }
            }
        }
        match &self.schedule {
            Schedule::Constant => {}
            Schedule::Cosine { min_ratio, .. } => {
                if !(0.0..=1.0).contains(min_ratio) {
                    return bad("schedule.min_ratio", "must be in [0, 1]");
                }
            }
            Schedule::Step { every, gamma } => {
                if *every == 0 {
                    return bad("schedule.every", "must be at least 1");
                }
                if !(*gamma > 0.0 && gamma.is_finite()) {
                    return bad("schedule.gamma", "must be positive");
                }
            }
        }
        if self.early_stopping.as_ref().is_some_and(|s| s.patience == 0) {
            return bad("early_stopping.patience", "must be at least 1");
        }
        if !(self.branch_loss_weight >= 0.0 && self.branch_loss_weight.is_finite()) {
            return bad("branch_loss_weight", "must be a finite number ≥ 0");
        }
        if self.grad_clip.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
            return bad("grad_clip", "must be positive");
        }
        if !(self.checkpoint_every_s >= 0.0 && self.checkpoint_every_s.is_finite()) {
            return bad("checkpoint_every_s", "must be a finite number of seconds ≥ 0");
        }
        if let Some(dro) = &self.group_dro {
            if self.objective != Objective::GroupDro {
                return bad("group_dro", "is read only with `objective: group_dro`");
            }
            if !(dro.step_size > 0.0 && dro.step_size.is_finite()) {
                return bad("group_dro.step_size", "must be positive");
            }
            if !(dro.adjustment >= 0.0 && dro.adjustment.is_finite()) {
                return bad("group_dro.adjustment", "must be a finite number ≥ 0");
            }
        }
        for (i, group) in self.param_groups.iter().enumerate() {
            if !(group.lr > 0.0 && group.lr.is_finite()) {
                return bad(&format!("param_groups[{i}].lr"), "must be positive");
            }
            if group.prefix.is_empty() {
                return bad(&format!("param_groups[{i}].prefix"), "must not be empty");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_lr_changes_only_the_learning_rate() {
        let adam = OptimizerConfig::default().with_lr(3e-3);
        assert_eq!(
            adam,
            OptimizerConfig::AdamW {
                lr: 3e-3,
                weight_decay: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            }
        );
        let sgd = OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
        };
        assert_eq!(
            sgd.with_lr(0.5),
            OptimizerConfig::Sgd {
                lr: 0.5,
                momentum: 0.9,
                weight_decay: 1e-4,
            }
        );
    }
}
