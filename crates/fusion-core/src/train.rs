//! Training: optimisers, learning-rate schedules, clipping, early stopping, atomic
//! safetensors checkpoints, resume, and per-epoch metrics as JSON Lines.

use std::{
    collections::HashMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn::VarStore};

use crate::{
    Error, FusionModel, ModelConfig, Result, RunLock, TensorDataset, TrainingData,
    config::Task,
    dataset::seeded_batches,
    input::modality_dropout,
    metrics::{GroupMetrics, Metrics, MultiLabelMetrics, RegressionMetrics, THRESHOLD},
    parallel::{ProcessGroup, all_reduce_gradients, broadcast_from_rank0, shard, variables_in_order},
    precision::{Autocast, LossScaler, Precision},
    read_checked_safetensors, write_checked_safetensors, write_file_atomic,
};

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

    fn lr(&self) -> f64 {
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
}

/// Stop when the metric has not improved for `patience` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Watched metric.
    pub metric: StopMetric,
    /// Epochs without improvement before stopping.
    pub patience: usize,
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
    fn is_auto(&self) -> bool {
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

/// Whether `tensor` received a gradient with a non-zero entry in the last backward pass.
pub fn has_gradient(tensor: &Tensor) -> bool {
    let grad = tensor.grad();
    grad.defined()
        && grad
            .f_abs()
            .and_then(|a| a.f_sum(Kind::Double))
            .ok()
            .and_then(|s| f64::try_from(s).ok())
            .is_some_and(|s| s > 0.0)
}

/// Names of the trainable variables of `vs` that received no gradient (or an all-zero one)
/// in the last backward pass, sorted: the parts of a model that would not learn.
pub fn parameters_without_gradient(vs: &VarStore) -> Vec<String> {
    let mut names: Vec<String> = vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad() && !has_gradient(v))
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names
}

/// AdamW or SGD over a var store's trainable variables, with state that checkpoints hold,
/// so a resumed run continues exactly.
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    params: Vec<(String, Tensor)>,
    /// Per parameter: its learning rate as a multiple of the base rate.
    lr_scale: Vec<f64>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    steps: i64,
}

impl Optimizer {
    /// Tracks every variable of `vs` that requires a gradient (frozen ones are left out),
    /// in name order.
    pub fn new(vs: &VarStore, config: &OptimizerConfig) -> Self {
        Self::with_groups(vs, config, &[])
    }

    /// As [`Optimizer::new`], with the learning rates of `groups`.
    pub fn with_groups(vs: &VarStore, config: &OptimizerConfig, groups: &[ParamGroup]) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let lr_scale = params
            .iter()
            .map(|(name, _)| {
                groups
                    .iter()
                    .filter(|g| name.starts_with(&g.prefix))
                    .max_by_key(|g| g.prefix.len())
                    .map_or(1.0, |g| g.lr / config.lr())
            })
            .collect();
        let zeros = |params: &[(String, Tensor)]| params.iter().map(|(_, t)| t.zeros_like()).collect::<Vec<_>>();
        Self {
            config: config.clone(),
            first: zeros(&params),
            second: zeros(&params),
            lr_scale,
            params,
            steps: 0,
        }
    }

    /// Zero that depends on every tracked parameter: added to a loss, it gives each one a
    /// gradient (zero where the loss does not reach it).
    fn zero_term(&self) -> Tensor {
        self.params
            .iter()
            .map(|(_, p)| p.sum(p.kind()) * 0.0)
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::from(0.0f32))
    }

    /// Sums the gradients over `group` (see [`train_data_parallel`]).
    fn all_reduce_gradients(&self, group: &dyn ProcessGroup) -> Result<()> {
        let params: Vec<Tensor> = self.params.iter().map(|(_, p)| p.shallow_clone()).collect();
        all_reduce_gradients(group, &params)
    }

    /// The defined gradients of the tracked parameters.
    fn grads(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(Tensor::defined)
            .collect()
    }

    /// Clears the gradients.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm
    /// before clipping as a 0-dimensional tensor on the gradients' device (nothing is read
    /// back to the host, so a GPU is never waited for).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Tensor {
        let grads = self.grads();
        let Some(first) = grads.first() else {
            return Tensor::from(0.0f64);
        };
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm().to_kind(Kind::Double)).collect();
        let total = Tensor::stack(&norms, 0).to_device(first.device()).norm();
        let scale = (max_norm / (&total + 1e-6)).clamp_max(1.0);
        tch::no_grad(|| {
            for mut g in grads {
                let factor = scale.to_kind(g.kind());
                let _ = g.g_mul_(&factor);
            }
        });
        total
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let t = self.steps as f64;
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter_mut().enumerate() {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let lr = lr * self.lr_scale[i];
                match self.config {
                    OptimizerConfig::AdamW {
                        weight_decay,
                        beta1,
                        beta2,
                        eps,
                        ..
                    } => {
                        let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
                        let m = &mut self.first[i];
                        let _ = m.g_mul_scalar_(beta1).g_add_(&(&grad * (1.0 - beta1)));
                        let v = &mut self.second[i];
                        let _ = v.g_mul_scalar_(beta2).g_add_(&(grad.square() * (1.0 - beta2)));
                        let m_hat = &*m / (1.0 - beta1.powf(t));
                        let v_hat = &*v / (1.0 - beta2.powf(t));
                        let _ = p.g_sub_(&(m_hat / (v_hat.sqrt() + eps) * lr));
                    }
                    OptimizerConfig::Sgd {
                        momentum, weight_decay, ..
                    } => {
                        let grad = grad + &*p * weight_decay;
                        let direction = if momentum > 0.0 {
                            let buffer = &mut self.first[i];
                            let _ = buffer.g_mul_scalar_(momentum).g_add_(&grad);
                            buffer.shallow_clone()
                        } else {
                            grad
                        };
                        let _ = p.g_sub_(&(direction * lr));
                    }
                }
            }
        });
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = vec![("__optimizer__.steps".to_string(), Tensor::from(self.steps))];
        for (i, (name, _)) in self.params.iter().enumerate() {
            state.push((format!("__optimizer__.first.{name}"), self.first[i].shallow_clone()));
            state.push((format!("__optimizer__.second.{name}"), self.second[i].shallow_clone()));
        }
        state
    }

    fn load_state(&mut self, saved: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
        let get = |key: &str| {
            saved.get(key).ok_or_else(|| Error::Checkpoint {
                path: path.into(),
                reason: format!("`{key}` missing"),
            })
        };
        self.steps = i64::try_from(get("__optimizer__.steps")?)?;
        tch::no_grad(|| -> Result<()> {
            for (i, (name, _)) in self.params.iter().enumerate() {
                self.first[i].f_copy_(get(&format!("__optimizer__.first.{name}"))?)?;
                self.second[i].f_copy_(get(&format!("__optimizer__.second.{name}"))?)?;
            }
            Ok(())
        })
    }
}

/// Metrics of one epoch, one line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss.
    pub val_loss: Option<f64>,
    /// Validation accuracy.
    pub val_accuracy: Option<f64>,
    /// Validation macro-F1.
    pub val_macro_f1: Option<f64>,
    /// Validation expected calibration error.
    pub val_ece: Option<f64>,
    /// Validation R² of a regression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_r2: Option<f64>,
    /// Wall time of the epoch.
    pub seconds: f64,
}

/// What the progress callback hears.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A training step finished.
    Step {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// Steps in the epoch.
        steps: usize,
        /// Training loss as last read back (every few steps, so up to 7 steps old).
        loss: f64,
    },
    /// An epoch finished (its metrics line written).
    Epoch(&'a EpochRecord),
}

/// Outcome of [`train`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Every epoch's record, including those of an earlier, resumed process.
    pub epochs: Vec<EpochRecord>,
    /// Epoch whose weights are in `best.safetensors`.
    pub best_epoch: usize,
    /// Epoch training resumed from (0 for a fresh run).
    pub resumed_from: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
}

/// Files of a run folder.
#[derive(Debug, Clone)]
pub struct RunFolder {
    /// The folder.
    pub root: PathBuf,
}

impl RunFolder {
    /// A run folder at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// `model.json`: the model configuration.
    pub fn model_config(&self) -> PathBuf {
        self.root.join("model.json")
    }
    /// `train.json`: the training configuration.
    pub fn train_config(&self) -> PathBuf {
        self.root.join("train.json")
    }
    /// `metrics.jsonl`: one [`EpochRecord`] per line.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    /// Weights, optimiser and trainer state after the last saved epoch (the last one, or one
    /// at most [`TrainConfig::checkpoint_every_s`] of training earlier).
    pub fn last_checkpoint(&self) -> PathBuf {
        self.root.join("checkpoints/last.safetensors")
    }
    /// Weights of the best epoch (by the early-stopping metric, else the last).
    pub fn best_weights(&self) -> PathBuf {
        self.root.join("checkpoints/best.safetensors")
    }

    /// Reads the model configuration saved in the folder.
    pub fn load_model_config(&self) -> Result<ModelConfig> {
        read_json(&self.model_config())
    }

    /// Rebuilds the model from the folder alone (`model.json` and the best weights) on
    /// `device`. Models with encoders from other crates are rebuilt with
    /// [`FusionModel::with_encoders`] and [`load_weights`] instead.
    pub fn load_model(&self, device: tch::Device) -> Result<(FusionModel, VarStore)> {
        let config = self.load_model_config()?;
        let vs = VarStore::new(device);
        let model = FusionModel::new(&vs.root(), &config)?;
        load_weights(&vs, &self.best_weights())?;
        Ok((model, vs))
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Config(format!(
            "{}: {}",
            path.display(),
            crate::with_suggestion(&e.to_string())
        ))
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Config(e.to_string()))?;
    write_file_atomic(path, text)
}

/// Saves the model's weights (variable names as keys) as safetensors, atomically.
pub fn save_weights(vs: &VarStore, path: &Path) -> Result<()> {
    save_named(&vs.variables().into_iter().collect::<Vec<_>>(), path)
}

/// Loads weights saved by [`save_weights`] (or a checkpoint) into `vs`; every variable
/// must be there with its shape.
pub fn load_weights(vs: &VarStore, path: &Path) -> Result<HashMap<String, Tensor>> {
    let saved = read_checked_safetensors(path)?;
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vs.variables() {
            let checkpoint = |reason: String| Error::Checkpoint {
                path: path.into(),
                reason,
            };
            let value = saved
                .get(&name)
                .ok_or_else(|| checkpoint(format!("variable `{name}` missing")))?;
            if value.size() != var.size() {
                return Err(checkpoint(format!(
                    "`{name}` has shape {:?}, model wants {:?}",
                    value.size(),
                    var.size()
                )));
            }
            var.f_copy_(value)?;
        }
        Ok(())
    })?;
    Ok(saved)
}

/// Trains `model` (whose variables live in `vs`) on `train_set`, evaluating on `val_set`
/// after each epoch, writing everything to `run`. If `run` holds a checkpoint of the same
/// configuration, training resumes after its last finished epoch.
///
/// Runs are deterministic on CPU for a given seed, thread count and libtorch: each epoch
/// reseeds libtorch's generator from `(seed, epoch)`, so a resumed run repeats the
/// uninterrupted one exactly. That generator is global to the process: other threads
/// drawing from it during training break the repeatability (not the training).
pub fn train(
    model: &FusionModel,
    vs: &VarStore,
    config: &TrainConfig,
    train_set: &dyn TrainingData,
    val_set: Option<&TensorDataset>,
    run: &RunFolder,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<TrainSummary> {
    train_in(model, vs, config, train_set, val_set, run, None, progress)
}

/// As [`train`], as one rank of a data-parallel `group`: every rank holds the whole
/// datasets and computes the same seeded batches as one process would; each trains on its
/// share of every batch ([`shard`](crate::parallel::shard)), and the gradients are summed
/// over the group before each step, weighted so that the step is the one a single process
/// takes on the whole batch. The weights start from rank 0's (its checkpoint when it
/// resumes), and rank 0 alone writes `run`. As under PyTorch's DDP, batch normalisation
/// sees per-rank statistics, dropout draws per-rank masks, and a loss averaged over part of
/// a batch (per-branch losses over the samples that have the modality) is averaged per rank.
#[allow(clippy::too_many_arguments)]
pub fn train_data_parallel(
    model: &FusionModel,
    vs: &VarStore,
    config: &TrainConfig,
    train_set: &dyn TrainingData,
    val_set: Option<&TensorDataset>,
    run: &RunFolder,
    group: &dyn ProcessGroup,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<TrainSummary> {
    train_in(model, vs, config, train_set, val_set, run, Some(group), progress)
}

#[allow(clippy::too_many_arguments)]
fn train_in(
    model: &FusionModel,
    vs: &VarStore,
    config: &TrainConfig,
    train_set: &dyn TrainingData,
    val_set: Option<&TensorDataset>,
    run: &RunFolder,
    group: Option<&dyn ProcessGroup>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<TrainSummary> {
    config.validate()?;
    train_set.check()?;
    if train_set.is_empty() {
        return Err(Error::Config("train: the training set is empty".into()));
    }
    model.check_labels(train_set.labels())?;
    if let Some(val) = val_set {
        model.check_labels(&val.labels)?;
    }
    if config.early_stopping.is_some() && val_set.is_none() {
        return Err(Error::Config("train.early_stopping: needs a validation set".into()));
    }
    // Rank 0 alone owns the run folder; the others train in step with it.
    let writes = group.is_none_or(|g| g.rank() == 0);
    let _lock = writes.then(|| RunLock::acquire(&run.root)).transpose()?;
    if writes {
        prepare_run_folder(run, model.config(), config)?;
    }
    // A resumed run reads the same statistics back from its checkpoint.
    model.fit_target(train_set.labels());
    let device = vs.device();
    let mut optimizer = Optimizer::with_groups(vs, &config.optimizer, &config.param_groups);
    let mut scaler = (config.precision == Precision::Fp16).then(LossScaler::default);
    let mut epochs: Vec<EpochRecord> = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    let mut best_weights: Option<Vec<(String, Tensor)>> = None;
    let mut best_unsaved = false;
    let mut resumed_from: usize = 0;
    if writes && run.last_checkpoint().exists() {
        let path = run.last_checkpoint();
        let saved = load_weights(vs, &path)?;
        optimizer.load_state(&saved, &path)?;
        if let (Some(scaler), Some(scale), Some(good)) = (&mut scaler, saved.get(SCALE_KEY), saved.get(GOOD_STEPS_KEY))
        {
            scaler.scale = f64::try_from(scale)?;
            scaler.good_steps = u32::try_from(i64::try_from(good)?).unwrap_or(0);
        }
        let scalar = |key: &str| -> Result<f64> {
            let value = saved.get(key).ok_or_else(|| Error::Checkpoint {
                path: path.clone(),
                reason: format!("`{key}` missing"),
            })?;
            Ok(f64::try_from(value)?)
        };
        let (epoch, best_epoch) = (scalar("__trainer__.epoch")?, scalar("__trainer__.best_epoch")?);
        if !(epoch >= 1.0 && epoch.fract() == 0.0 && (0.0..=epoch).contains(&best_epoch) && best_epoch.fract() == 0.0) {
            return Err(Error::Checkpoint {
                path,
                reason: format!("impossible trainer state: epoch {epoch}, best epoch {best_epoch}"),
            });
        }
        resumed_from = epoch as usize;
        let best_epoch = best_epoch as usize;
        if best_epoch > 0 {
            best = Some((best_epoch, scalar("__trainer__.best_score")?));
        }
        let saved_best: Vec<(String, Tensor)> = saved
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(BEST_PREFIX)
                    .map(|name| (name.to_string(), v.shallow_clone()))
            })
            .collect();
        if !saved_best.is_empty() {
            // A killed process may have written best weights of an epoch after this
            // checkpoint: the checkpoint's own copy replaces them.
            save_named(&saved_best, &run.best_weights())?;
            best_weights = Some(saved_best);
        }
        epochs = read_metrics(&run.metrics(), resumed_from)?;
        if epochs.len() < resumed_from {
            return Err(Error::Checkpoint {
                path,
                reason: format!(
                    "it ends epoch {resumed_from} but {} holds {} epochs",
                    run.metrics().display(),
                    epochs.len()
                ),
            });
        }
    }
    if writes {
        rewrite_metrics(&run.metrics(), &epochs)?;
    }
    if let Some(group) = group {
        check_same_setup(group, vs, train_set, val_set)?;
        resumed_from = start_from_rank0(group, vs, &mut optimizer, &mut scaler, resumed_from, &mut best)?;
    }

    let mut stopped_early = false;
    let mut last_checkpoint = Instant::now();
    let mut saved_epoch = resumed_from;
    for epoch in resumed_from..config.epochs {
        if let (Some(stop), Some((best_epoch, _))) = (&config.early_stopping, best)
            && epoch - best_epoch >= stop.patience
        {
            stopped_early = true;
            break;
        }
        let started = Instant::now();
        let lr = config.optimizer.lr() * config.schedule.factor(epoch, config.epochs);
        // Every epoch's randomness derives from (seed, epoch): a resumed run repeats it.
        // Each rank draws its own dropout masks (rank 0 those of a single process); the
        // batch order below is the same on every rank.
        let rank = group.map_or(0, |g| g.rank()) as u64;
        tch::manual_seed(epoch_seed(config.seed ^ rank.wrapping_mul(0x9e37_79b9_7f4a_7c15), epoch) as i64);
        let batches = seeded_batches(train_set.len(), config.batch_size, Some(epoch_seed(config.seed, epoch)));
        let steps = batches.len();
        let mut loss_sum = Tensor::from(0.0f64);
        let mut shown_loss = f64::NAN;
        let mine = batches
            .iter()
            .map(|indices| match group {
                Some(g) => shard(indices, g.rank(), g.world_size()),
                None => indices.shallow_clone(),
            })
            .collect();
        for (step, batch) in train_set.assemble(mine, device).enumerate() {
            let (mut inputs, labels) = batch?;
            if config.modality_dropout > 0.0 {
                let present: Vec<Tensor> = inputs.iter().map(|i| i.present.shallow_clone()).collect();
                for (input, kept) in inputs
                    .iter_mut()
                    .zip(modality_dropout(&present, config.modality_dropout))
                {
                    input.present = kept;
                }
            }
            optimizer.zero_grad();
            let loss = if labels.size()[0] > 0 {
                let _autocast = Autocast::enter(config.precision, device)?;
                model.forward_t(&inputs, true)?.loss(&labels, config.branch_loss_weight)
            } else {
                // A rank whose share of a short last batch is empty adds nothing.
                Tensor::zeros([], (Kind::Float, device))
            };
            // Each rank's mean weighted by its share of the batch: their sum is the whole
            // batch's mean (one process has all of it).
            let share = labels.size()[0] as f64 / batches[step].size()[0] as f64;
            if let Some(group) = group {
                // The zero term gives every parameter a gradient, so every rank sums
                // buffers of the same layout.
                ((&loss * share + optimizer.zero_term()) * loss_scale(&scaler)).f_backward()?;
                optimizer.all_reduce_gradients(group)?;
            } else {
                (&loss * loss_scale(&scaler)).f_backward()?;
            }
            // An overflowing float16 step is skipped (the same on every rank: the gradients
            // were summed first).
            let take_step = match &mut scaler {
                Some(scaler) => scaler.unscale(&optimizer.grads())?,
                None => true,
            };
            if take_step {
                if let Some(max_norm) = config.grad_clip {
                    let _norm = optimizer.clip_grad_norm(max_norm);
                }
                optimizer.step(lr);
            }
            let loss = loss.detach().to_kind(Kind::Double);
            // Summed over the ranks at the end of the epoch: the whole batches' mean loss.
            let counted = &loss * share;
            loss_sum = if step == 0 { counted } else { loss_sum + &counted };
            // Reading a value back waits for the device: done every few steps, not each.
            if step == 0 || (step + 1) % LOSS_READ_EVERY == 0 || step + 1 == steps {
                shown_loss = f64::try_from(&loss)?;
                // Ranks decide on the summed loss at the epoch's end, all alike.
                if group.is_none() && !f64::try_from(&loss_sum)?.is_finite() {
                    return Err(Error::Config(format!(
                        "training diverged: loss {shown_loss} at epoch {}, by step {}",
                        epoch + 1,
                        step + 1
                    )));
                }
            }
            progress(Progress::Step {
                epoch: epoch + 1,
                step: step + 1,
                steps,
                loss: shown_loss,
            });
        }
        if let Some(group) = group {
            group.all_reduce_sum(&mut loss_sum)?;
            // Batch-norm statistics differ per rank: everyone evaluates with rank 0's.
            broadcast_from_rank0(group, &buffers(vs))?;
        }
        let loss_sum = f64::try_from(&loss_sum)?;
        if !loss_sum.is_finite() {
            return Err(Error::Config(format!(
                "training diverged: summed loss {loss_sum} over epoch {}",
                epoch + 1
            )));
        }
        // Inference needs no small batches: larger ones keep the convolutions busy.
        let val_batch = config.batch_size.max(VALIDATION_BATCH);
        // Rank 0 evaluates; the others take its score below.
        let val = val_set
            .filter(|_| writes)
            .map(|v| evaluate(model, v, val_batch))
            .transpose()?;
        // A regression's classification metrics are placeholders: not recorded.
        let classified = val.as_ref().filter(|_| model.task() != Task::Regression);
        let record = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / steps.max(1) as f64,
            val_loss: val.as_ref().map(|v| v.loss),
            val_accuracy: classified.map(|v| v.metrics.accuracy),
            val_macro_f1: classified.map(|v| v.metrics.macro_f1),
            val_ece: classified.map(|v| v.metrics.ece),
            val_r2: val.as_ref().and_then(|v| match &v.task {
                TaskMetrics::Regression(r) => r.r2,
                _ => None,
            }),
            seconds: started.elapsed().as_secs_f64(),
        };
        let mut score = match (&config.early_stopping, &val) {
            (Some(stop), Some(v)) => v.score(stop.metric),
            _ => (epoch + 1) as f64,
        };
        if let Some(group) = group {
            // One decision for every rank (their scores could differ in the last bits).
            let mut shared = Tensor::from(score);
            group.broadcast(&mut shared, 0)?;
            score = f64::try_from(&shared)?;
        }
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((epoch + 1, score));
            best_weights = writes.then(|| snapshot(vs));
            best_unsaved = writes;
        }
        if writes {
            append_metrics(&run.metrics(), &record)?;
        }
        let stops_next = config
            .early_stopping
            .as_ref()
            .zip(best)
            .is_some_and(|(stop, (best_epoch, _))| epoch + 1 - best_epoch >= stop.patience);
        if writes
            && (epoch + 1 == config.epochs
                || stops_next
                || last_checkpoint.elapsed().as_secs_f64() >= config.checkpoint_every_s)
        {
            // The best weights travel inside the checkpoint, so that best.safetensors never
            // holds an epoch a resumed run throws away.
            save_checkpoint(
                vs,
                &optimizer,
                scaler.as_ref(),
                run,
                epoch + 1,
                best,
                best_weights.as_deref(),
            )
            .map_err(|e| unsaved(&run.last_checkpoint(), epoch + 1, saved_epoch, &e))?;
            saved_epoch = epoch + 1;
            if best_unsaved && let Some(weights) = &best_weights {
                save_named(weights, &run.best_weights())
                    .map_err(|e| unsaved(&run.best_weights(), epoch + 1, saved_epoch, &e))?;
                best_unsaved = false;
            }
            last_checkpoint = Instant::now();
        }
        epochs.push(record);
        if let Some(last) = epochs.last() {
            progress(Progress::Epoch(last));
        }
    }
    Ok(TrainSummary {
        epochs,
        best_epoch: best.map_or(0, |b| b.0),
        resumed_from,
        stopped_early,
    })
}

/// Fails on every rank alike unless all hold rank 0's number of training and validation
/// samples, of parameters, and its training labels: otherwise their batches would not line
/// up, and collectives of different sizes hang or mix.
fn check_same_setup(
    group: &dyn ProcessGroup,
    vs: &VarStore,
    train_set: &dyn TrainingData,
    val_set: Option<&TensorDataset>,
) -> Result<()> {
    let labels = train_set.labels().to_kind(Kind::Double).reshape([-1]);
    let positions = Tensor::arange(labels.numel() as i64, (Kind::Double, labels.device())) + 1.0;
    let mine = Tensor::from_slice(&[
        train_set.len() as f64,
        val_set.map_or(-1.0, |v| v.len() as f64),
        vs.variables().values().map(Tensor::numel).sum::<usize>() as f64,
        f64::try_from(labels.sum(Kind::Double))?,
        f64::try_from((&labels * positions).sum(Kind::Double))?,
    ]);
    let mut theirs = mine.copy();
    group.broadcast(&mut theirs, 0)?;
    let mut differing = Tensor::from_slice(&[f64::from(!mine.equal(&theirs))]);
    group.all_reduce_sum(&mut differing)?;
    match f64::try_from(&differing)? {
        0.0 => Ok(()),
        count => Err(Error::Collective(format!(
            "{count} rank(s) differ from rank 0 in training samples, validation samples, parameters or \
             labels (this rank: {:?}, rank 0: {:?}); every rank needs the same data and configuration",
            Vec::<f64>::try_from(&mine)?,
            Vec::<f64>::try_from(&theirs)?
        ))),
    }
}

/// Gives every rank rank 0's weights, optimizer state and trainer state (what rank 0
/// resumed from, if anything); returns the epoch to resume after.
fn start_from_rank0(
    group: &dyn ProcessGroup,
    vs: &VarStore,
    optimizer: &mut Optimizer,
    scaler: &mut Option<LossScaler>,
    resumed_from: usize,
    best: &mut Option<(usize, f64)>,
) -> Result<usize> {
    let (best_epoch, best_score) = best.unwrap_or((0, 0.0));
    let (scale, good_steps) = scaler.map_or((1.0, 0), |s| (s.scale, s.good_steps));
    let mut state = Tensor::from_slice(&[
        resumed_from as f64,
        best_epoch as f64,
        best_score,
        optimizer.steps as f64,
        scale,
        f64::from(good_steps),
    ]);
    group.broadcast(&mut state, 0)?;
    let state = Vec::<f64>::try_from(&state)?;
    optimizer.steps = state[3] as i64;
    if let Some(scaler) = scaler {
        scaler.scale = state[4];
        scaler.good_steps = state[5] as u32;
    }
    *best = (state[1] > 0.0).then(|| (state[1] as usize, state[2]));
    let mut tensors = variables_in_order(vs);
    tensors.extend(
        optimizer
            .first
            .iter()
            .chain(&optimizer.second)
            .map(Tensor::shallow_clone),
    );
    broadcast_from_rank0(group, &tensors)?;
    Ok(state[0] as usize)
}

/// The variables of `vs` that are not trained (batch-norm statistics, target scale).
fn buffers(vs: &VarStore) -> Vec<Tensor> {
    variables_in_order(vs)
        .into_iter()
        .filter(|t| !t.requires_grad())
        .collect()
}

/// Steps between reads of the training loss (each read waits for the device).
const LOSS_READ_EVERY: usize = 8;

/// Smallest batch of the validation pass during training.
const VALIDATION_BATCH: usize = 256;

/// A well-mixed seed per `(seed, epoch)`, below 2^63 so that it is a valid libtorch seed.
/// (Shifting an unmixed `seed·φ + epoch` gave epochs 2k and 2k+1 the same shuffle and
/// dropout masks.)
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    crate::dataset::SplitMix64(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).next() >> 1
}

fn prepare_run_folder(run: &RunFolder, model: &ModelConfig, train: &TrainConfig) -> Result<()> {
    if run.model_config().exists() {
        let saved_model: ModelConfig = read_json(&run.model_config())?;
        let saved_train: TrainConfig = read_json(&run.train_config())?;
        let same_run = saved_model == *model
            && TrainConfig {
                epochs: train.epochs,
                checkpoint_every_s: train.checkpoint_every_s,
                data: train.data,
                ..saved_train
            } == *train;
        if !same_run {
            return Err(Error::Config(format!(
                "{} holds a run of another configuration; use a new folder",
                run.root.display()
            )));
        }
    }
    write_json(&run.model_config(), model)?;
    write_json(&run.train_config(), train)
}

/// Keys of a float16 run's loss scale inside a checkpoint.
const SCALE_KEY: &str = "__scaler__.scale";
const GOOD_STEPS_KEY: &str = "__scaler__.good_steps";

/// The loss scale multiplying the loss before the backward pass (1 without a scaler).
fn loss_scale(scaler: &Option<LossScaler>) -> f64 {
    scaler.as_ref().map_or(1.0, |s| s.scale)
}

/// Key prefix of the best weights inside a checkpoint.
const BEST_PREFIX: &str = "__best__.";

/// A copy of every variable, by name.
fn snapshot(vs: &VarStore) -> Vec<(String, Tensor)> {
    tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .map(|(name, t)| (name, t.detach().copy()))
            .collect()
    })
}

/// A checkpoint that could not be written (full disk, file-size limit, read-only folder),
/// with what is left to resume from: the write is atomic, so the previous file is whole.
fn unsaved(path: &Path, epoch: usize, saved_epoch: usize, error: &Error) -> Error {
    let left = match saved_epoch {
        0 => "no earlier checkpoint exists".to_string(),
        n => format!("the checkpoint of epoch {n} is intact; the same command resumes from it"),
    };
    Error::Checkpoint {
        path: path.into(),
        reason: format!("epoch {epoch} not saved ({error}); {left}"),
    }
}

/// Writes named tensors as safetensors (sorted by name), atomically.
fn save_named(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    write_checked_safetensors(named, path)
}

fn save_checkpoint(
    vs: &VarStore,
    optimizer: &Optimizer,
    scaler: Option<&LossScaler>,
    run: &RunFolder,
    epoch: usize,
    best: Option<(usize, f64)>,
    best_weights: Option<&[(String, Tensor)]>,
) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.extend(optimizer.state());
    for (name, tensor) in best_weights.into_iter().flatten() {
        named.push((format!("{BEST_PREFIX}{name}"), tensor.shallow_clone()));
    }
    let (best_epoch, best_score) = best.unwrap_or((0, 0.0));
    named.push(("__trainer__.epoch".into(), Tensor::from(epoch as i64)));
    named.push(("__trainer__.best_epoch".into(), Tensor::from(best_epoch as i64)));
    named.push(("__trainer__.best_score".into(), Tensor::from(best_score)));
    if let Some(scaler) = scaler {
        named.push((SCALE_KEY.into(), Tensor::from(scaler.scale)));
        named.push((GOOD_STEPS_KEY.into(), Tensor::from(i64::from(scaler.good_steps))));
    }
    write_checked_safetensors(&named, &run.last_checkpoint())
}

fn read_metrics(path: &Path, keep: usize) -> Result<Vec<EpochRecord>> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .take(keep)
        .map(|line| serde_json::from_str(line).map_err(|e| Error::Config(format!("{}: {e}", path.display()))))
        .collect()
}

fn rewrite_metrics(path: &Path, records: &[EpochRecord]) -> Result<()> {
    let text: String = records
        .iter()
        .filter_map(|r| serde_json::to_string(r).ok())
        .map(|l| l + "\n")
        .collect();
    write_file_atomic(path, text)
}

fn append_metrics(path: &Path, record: &EpochRecord) -> Result<()> {
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let line = serde_json::to_string(record).map_err(|e| Error::Config(e.to_string()))?;
    writeln!(file, "{line}").map_err(io)?;
    // On disk before the checkpoint that counts it (a resume checks the two agree).
    file.sync_data().map_err(io)
}

/// Predictions and metrics on a dataset.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Mean loss of the fused prediction (negative log-likelihood; binary cross-entropy
    /// per label; squared error of the standardised target).
    pub loss: f64,
    /// Classification metrics. A multi-label task's accuracy is the subset accuracy and its
    /// macro-F1 the mean over labels (no confusion matrix); a regression's are 0.
    pub metrics: Metrics,
    /// Per-group metrics when the dataset has groups (classification).
    pub groups: Option<GroupMetrics>,
    /// Predicted class of each sample (classification).
    pub predicted: Vec<usize>,
    /// True class of each sample (classification).
    pub labels: Vec<usize>,
    /// Each sample's class probabilities, label probabilities (multi-label), or its
    /// predicted number (regression, one value).
    pub probabilities: Vec<Vec<f32>>,
    /// The task's own metrics.
    pub task: TaskMetrics,
}

/// Metrics that only a task has.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum TaskMetrics {
    /// Everything is in [`Evaluation::metrics`].
    #[default]
    Classification,
    /// Subset and per-label accuracy, micro/macro-F1, ROC-AUC and AP per label.
    MultiLabel(MultiLabelMetrics),
    /// RMSE, MAE, R².
    Regression(RegressionMetrics),
}

impl TaskMetrics {
    /// The task's accuracy: `metrics.accuracy` (a multi-label task's subset accuracy), or a
    /// regression's R² (`None` for a constant target).
    pub fn accuracy(&self, metrics: &Metrics) -> Option<f64> {
        match self {
            Self::Regression(r) => r.r2,
            _ => Some(metrics.accuracy),
        }
    }
}

impl Evaluation {
    /// The score early stopping and robustness curves compare (higher is better): the
    /// task's accuracy ([`TaskMetrics::accuracy`]) for `Accuracy`, macro-F1 (a regression's
    /// R²) for `MacroF1`, minus the loss for `Loss` and for a regression without R².
    pub fn score(&self, metric: StopMetric) -> f64 {
        let accuracy = self.task.accuracy(&self.metrics);
        match (&self.task, metric) {
            (_, StopMetric::Loss) => -self.loss,
            (TaskMetrics::Regression(_), _) | (_, StopMetric::Accuracy) => accuracy.unwrap_or(-self.loss),
            (_, StopMetric::MacroF1) => self.metrics.macro_f1,
        }
    }
}

/// Runs `model` in evaluation mode over `data`.
pub fn evaluate(model: &FusionModel, data: &TensorDataset, batch_size: usize) -> Result<Evaluation> {
    model.check_labels(&data.labels)?;
    let device = model.device();
    let outputs = model.config().num_classes as usize;
    let mut loss_sum = 0.0;
    let mut probabilities = Vec::with_capacity(data.len() as usize);
    tch::no_grad(|| -> Result<()> {
        for indices in data.batches(batch_size, None) {
            let (inputs, labels) = data.batch(&indices, device);
            let output = model.forward_t(&inputs, false)?;
            loss_sum += f64::try_from(output.per_sample_loss(&labels).sum(Kind::Double))?;
            probabilities.extend(Vec::<Vec<f32>>::try_from(output.scores().to_device(tch::Device::Cpu))?);
        }
        Ok(())
    })?;
    let loss = loss_sum / data.len().max(1) as f64;
    let count = probabilities.len();
    let cpu_labels = data.labels.to_device(tch::Device::Cpu);
    let widen = |rows: &[Vec<f32>]| -> Vec<Vec<f64>> {
        rows.iter().map(|r| r.iter().map(|&v| f64::from(v)).collect()).collect()
    };
    Ok(match model.task() {
        Task::Classification => {
            let labels: Vec<usize> = Vec::<i64>::try_from(&cpu_labels)?
                .into_iter()
                .map(|l| l.max(0) as usize)
                .collect();
            let (_, metrics, groups, predicted) =
                crate::probability_metrics(&probabilities, &labels, data.groups.as_deref(), outputs);
            Evaluation {
                loss,
                metrics,
                groups,
                predicted,
                labels,
                probabilities,
                task: TaskMetrics::Classification,
            }
        }
        Task::MultiLabel => {
            let truths: Vec<Vec<bool>> = Vec::<f32>::try_from(cpu_labels.to_kind(Kind::Float).flatten(0, -1))?
                .chunks(outputs.max(1))
                .map(|row| row.iter().map(|&v| v >= 0.5).collect())
                .collect();
            let scores = widen(&probabilities);
            let task = MultiLabelMetrics::compute(&scores, &truths);
            let (predicted, truth): (Vec<usize>, Vec<usize>) = scores
                .iter()
                .flatten()
                .zip(truths.iter().flatten())
                .map(|(&s, &t)| (usize::from(s >= THRESHOLD), usize::from(t)))
                .unzip();
            let confidence: Vec<f64> = scores.iter().flatten().map(|&s| s.max(1.0 - s)).collect();
            let metrics = Metrics {
                accuracy: task.subset_accuracy,
                macro_f1: task.macro_f1,
                ece: crate::expected_calibration_error(&predicted, &truth, &confidence),
                ..Metrics::empty(count)
            };
            Evaluation {
                loss,
                metrics,
                groups: None,
                predicted: Vec::new(),
                labels: Vec::new(),
                probabilities,
                task: TaskMetrics::MultiLabel(task),
            }
        }
        Task::Regression => {
            let targets: Vec<f64> = Vec::<f64>::try_from(cpu_labels.to_kind(Kind::Double))?;
            let predicted: Vec<f64> = probabilities.iter().map(|p| f64::from(p[0])).collect();
            Evaluation {
                loss,
                metrics: Metrics::empty(count),
                groups: None,
                predicted: Vec::new(),
                labels: Vec::new(),
                probabilities,
                task: TaskMetrics::Regression(RegressionMetrics::compute(&predicted, &targets)),
            }
        }
    })
}

/// Index of the largest value (the first on a tie; 0 for an empty slice).
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |best, (i, &v)| if v > best.1 { (i, v) } else { best },
        )
        .0
}

#[cfg(test)]
mod tests {
    use super::DataSource;

    #[test]
    fn auto_streams_inputs_over_a_quarter_of_the_available_memory() {
        let gib = 1u64 << 30;
        assert!(!DataSource::Auto.streams(gib, Some(4 * gib)));
        assert!(DataSource::Auto.streams(gib + 1, Some(4 * gib)));
        assert!(
            !DataSource::Auto.streams(100 * gib, None),
            "unknown memory: held in memory"
        );
        assert!(DataSource::Stream.streams(1, Some(100 * gib)));
        assert!(!DataSource::Memory.streams(100 * gib, Some(gib)));
        let parsed: Result<DataSource, _> = serde_json::from_str("\"disk\"");
        assert!(parsed.is_err(), "an unknown source is refused");
    }

    #[test]
    fn every_epoch_gets_its_own_seed() {
        for seed in [0, 1, 42] {
            let seeds: std::collections::BTreeSet<u64> = (0..1000).map(|e| super::epoch_seed(seed, e)).collect();
            assert_eq!(seeds.len(), 1000, "epochs share a shuffle");
            assert!(seeds.iter().all(|s| *s < 1 << 63), "not a valid libtorch seed");
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn adamw_steps_match_the_formula() {
        use tch::{Device, Kind, nn::VarStore};
        let vs = VarStore::new(Device::Cpu);
        let mut x = vs.root().zeros("x", &[2]);
        tch::no_grad(|| x.copy_(&tch::Tensor::from_slice(&[1.0f32, -2.0])));
        let config = super::OptimizerConfig::AdamW {
            lr: 0.1,
            weight_decay: 0.5,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-3,
        };
        let mut optimizer = super::Optimizer::new(&vs, &config);
        // Loss Σ c·x gives the gradient c; the same formula in f64 beside it.
        let (c, lr, wd, b1, b2, eps) = ([3.0, -0.5], 0.1, 0.5, 0.9, 0.99, 1e-3);
        let (mut value, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
        for step in 1..=3 {
            optimizer.zero_grad();
            (&x * tch::Tensor::from_slice(&[3.0f32, -0.5]))
                .sum(Kind::Float)
                .backward();
            optimizer.step(lr);
            for i in 0..2 {
                value[i] *= 1.0 - lr * wd;
                m[i] = b1 * m[i] + (1.0 - b1) * c[i];
                v[i] = b2 * v[i] + (1.0 - b2) * c[i] * c[i];
                let m_hat = m[i] / (1.0 - b1.powi(step));
                let v_hat = v[i] / (1.0 - b2.powi(step));
                value[i] -= lr * m_hat / (v_hat.sqrt() + eps);
            }
            let got = Vec::<f32>::try_from(&x).unwrap();
            for i in 0..2 {
                assert!(
                    (f64::from(got[i]) - value[i]).abs() < 1e-5,
                    "step {step}: {got:?} vs {value:?}"
                );
            }
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn clipping_scales_every_gradient_by_the_global_norm() {
        use tch::{Device, Kind, Tensor, nn::VarStore};
        let vs = VarStore::new(Device::Cpu);
        let a = vs.root().zeros("a", &[2]);
        let b = vs.root().zeros("b", &[1]);
        let mut optimizer = super::Optimizer::new(&vs, &Default::default());
        // Gradients (3, 0) and (4): global norm 5.
        let loss = (&a * Tensor::from_slice(&[3.0f32, 0.0])).sum(Kind::Float) + (&b * 4.0).sum(Kind::Float);
        loss.backward();
        let total = f64::try_from(optimizer.clip_grad_norm(2.5)).unwrap();
        assert!((total - 5.0).abs() < 1e-9);
        let scaled = |t: &Tensor| Vec::<f32>::try_from(t.grad()).unwrap();
        let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(&scaled(&a), &[1.5, 0.0]), "{:?}", scaled(&a));
        assert!(close(&scaled(&b), &[2.0]), "{:?}", scaled(&b));
        // Below the limit nothing changes.
        let total = f64::try_from(optimizer.clip_grad_norm(10.0)).unwrap();
        assert!((total - 2.5).abs() < 1e-5);
        assert!(close(&scaled(&a), &[1.5, 0.0]));
    }
}
