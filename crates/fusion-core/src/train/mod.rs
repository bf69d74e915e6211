//! Training: the loop (single process or data parallel), with clipping, early stopping,
//! resume and per-epoch metrics; settings in `config`, the optimiser in `optimizer`, the
//! run folder's files in `folder`, evaluation in `evaluation`.

use std::{
    collections::HashMap,
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor, nn::VarStore};

use crate::{
    Error, FusionModel, FusionOutput, ModelConfig, Result, RunLock, TensorDataset, TrainingData,
    config::Task,
    dataset::seeded_batches,
    input::modality_dropout,
    metrics::{GroupMetrics, Metrics, MultiLabelMetrics, RegressionMetrics, THRESHOLD},
    parallel::{ProcessGroup, Strategy, all_reduce_gradients, broadcast_from_rank0, shard, variables_in_order},
    precision::{Autocast, LossScaler, Precision},
    read_checked_safetensors, write_checked_safetensors, write_file_atomic,
};

mod checkpoint;
mod config;
mod evaluation;
mod folder;
mod objective;
mod optimizer;

use checkpoint::*;
pub use config::*;
pub use evaluation::*;
pub use folder::*;
pub use objective::*;
pub use optimizer::*;

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

/// Outcome of [`Learner::fit`].
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

/// Trains one model: the training entry point. [`Learner::fit`] trains `model` (whose
/// variables live in `vs`) as `config` says, alone or as one rank of a data-parallel group
/// ([`Learner::with_strategy`]).
///
/// Runs are deterministic on CPU for a given seed, thread count and libtorch: each epoch
/// reseeds libtorch's generator from `(seed, epoch)`, so a resumed run repeats the
/// uninterrupted one exactly. That generator is global to the process: other threads
/// drawing from it during training break the repeatability (not the training).
///
/// Data parallel, every rank holds the whole datasets and computes the same seeded batches
/// as one process would; each trains on its share of every batch
/// ([`shard`](crate::parallel::shard)), and the gradients are summed over the group before
/// each step, weighted so that the step is the one a single process takes on the whole
/// batch. The weights start from rank 0's (its checkpoint when it resumes), and rank 0
/// alone writes the run folder. As under PyTorch's DDP, batch normalisation sees per-rank
/// statistics, dropout draws per-rank masks, and a loss averaged over part of a batch
/// (per-branch losses over the samples that have the modality) is averaged per rank.
#[derive(Debug, Clone, Copy)]
pub struct Learner<'a> {
    model: &'a FusionModel,
    vs: &'a VarStore,
    config: &'a TrainConfig,
    strategy: Strategy<'a>,
}

impl<'a> Learner<'a> {
    /// A single-process learner.
    pub fn new(model: &'a FusionModel, vs: &'a VarStore, config: &'a TrainConfig) -> Self {
        Self {
            model,
            vs,
            config,
            strategy: Strategy::SingleProcess,
        }
    }

    /// The same learner, spread over processes as `strategy` says.
    pub fn with_strategy(self, strategy: Strategy<'a>) -> Self {
        Self { strategy, ..self }
    }

    /// Trains on `train_set`, evaluating on `val_set` after each epoch, writing everything
    /// to `run` (when the strategy says this process writes). If `run` holds a checkpoint
    /// of the same configuration, training resumes after its last finished epoch.
    pub fn fit(
        &self,
        train_set: &dyn TrainingData,
        val_set: Option<&TensorDataset>,
        run: &RunFolder,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<TrainSummary> {
        fit(self, train_set, val_set, run, progress)
    }
}

fn fit(
    learner: &Learner<'_>,
    train_set: &dyn TrainingData,
    val_set: Option<&TensorDataset>,
    run: &RunFolder,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<TrainSummary> {
    let Learner {
        model,
        vs,
        config,
        strategy,
    } = *learner;
    let group = strategy.group();
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
    if config
        .early_stopping
        .as_ref()
        .is_some_and(|s| s.metric == StopMetric::WorstGroupAccuracy)
        && (model.task() != Task::Classification || val_set.is_some_and(|v| v.groups.is_none()))
    {
        return Err(Error::Config(
            "train.early_stopping.metric: `worst_group_accuracy` needs a classification whose validation \
             records have groups (a `group` column)"
                .into(),
        ));
    }
    if config.sampling == Sampling::ClassBalanced && model.task() != Task::Classification {
        return Err(Error::Config(format!(
            "train.sampling: `class_balanced` needs a classification, not a {}",
            model.task().name()
        )));
    }
    let mut weighting = Weighting::new(config, train_set)?;
    if model.task() == Task::Contrastive
        && config
            .early_stopping
            .as_ref()
            .is_some_and(|s| s.metric == StopMetric::MacroF1)
    {
        return Err(Error::Config(
            "train.early_stopping.metric: a contrastive task has no macro-F1: `accuracy` (its mean recall@1) or `loss`"
                .into(),
        ));
    }
    if model.task() == Task::Contrastive && weighting.is_some() {
        return Err(Error::Config(
            "train.objective: a contrastive task trains every record alike (no record weights, no group objective)"
                .into(),
        ));
    }
    let class_labels: Vec<i64> = match config.sampling {
        Sampling::ClassBalanced => Vec::<i64>::try_from(train_set.labels().to_device(Device::Cpu))?,
        Sampling::Shuffle => Vec::new(),
    };
    // Rank 0 alone owns the run folder; the others train in step with it.
    let writes = strategy.writes();
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
        let state = TrainerState::read(&saved, &path)?;
        if let (Some(scaler), Some((scale, good_steps))) = (&mut scaler, state.loss_scale) {
            scaler.scale = scale;
            scaler.good_steps = good_steps;
        }
        resumed_from = state.epoch;
        best = state.best;
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
        if let Some(weighting) = weighting.as_mut().filter(|w| w.has_group_weights()) {
            let saved = state.group_weights.ok_or_else(|| Error::Checkpoint {
                path: path.clone(),
                reason: format!("`{GROUP_WEIGHTS_KEY}` missing: it was not saved by group DRO"),
            })?;
            let total: f64 = saved.iter().sum();
            if saved.len() != weighting.group_weights.len()
                || saved.iter().any(|q| !(q.is_finite() && *q >= 0.0))
                || (total - 1.0).abs() > 1e-6
            {
                return Err(Error::Checkpoint {
                    path,
                    reason: format!(
                        "group weights {saved:?} are no distribution over {} groups",
                        weighting.group_weights.len()
                    ),
                });
            }
            weighting.group_weights = saved;
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
        if let Some(weighting) = weighting.as_mut().filter(|w| w.has_group_weights()) {
            let mut shared = Tensor::from_slice(&weighting.group_weights);
            group.broadcast(&mut shared, 0)?;
            weighting.group_weights = Vec::<f64>::try_from(&shared)?;
        }
    }

    // Ranks of a contrastive model gather every rank's embeddings for each batch's loss.
    let gathering = group.filter(|_| model.task() == Task::Contrastive);
    let mut stopped_early = false;
    let mut last_checkpoint = Instant::now();
    let mut saved_epoch = resumed_from;
    for epoch in resumed_from..config.epochs {
        if let (Some(stop), Some(best)) = (&config.early_stopping, best)
            && stop.stops(epoch, best)
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
        let batches = match config.sampling {
            Sampling::Shuffle => {
                seeded_batches(train_set.len(), config.batch_size, Some(epoch_seed(config.seed, epoch)))
            }
            Sampling::ClassBalanced => {
                class_balanced_batches(&class_labels, config.batch_size, epoch_seed(config.seed, epoch))
            }
        };
        let steps = batches.len();
        let mut loss_sum = Tensor::from(0.0f64);
        let mut shown_loss = f64::NAN;
        let mine: Vec<Tensor> = batches
            .iter()
            .map(|indices| match group {
                Some(g) => shard(indices, g.rank(), g.world_size()),
                None => indices.shallow_clone(),
            })
            .collect();
        let rows: Vec<Tensor> = mine.iter().map(Tensor::shallow_clone).collect();
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
            // Each rank's mean weighted by its share of the batch: their sum is the whole
            // batch's mean (one process has all of it).
            let share = labels.size()[0] as f64 / batches[step].size()[0] as f64;
            // This rank's part of the batch's loss: the parts of every rank sum to it.
            let part = {
                let _autocast = Autocast::enter(config.precision, device)?;
                let output = (labels.size()[0] > 0)
                    .then(|| model.forward_t(&inputs, true))
                    .transpose()?;
                match (&mut weighting, &output, gathering) {
                    (None, output, Some(group)) => {
                        gathered_contrastive_loss(model, output.as_ref(), &batches[step], group)?
                    }
                    (Some(weighting), output, _) => weighting.loss(
                        output.as_ref().map(|o| (o, &labels)),
                        &rows[step],
                        &batches[step],
                        config.branch_loss_weight,
                        group,
                        device,
                    )?,
                    (None, Some(output), None) => output.loss(&labels, config.branch_loss_weight) * share,
                    // A rank whose share of a short last batch is empty adds nothing.
                    (None, None, None) => Tensor::zeros([], (Kind::Float, device)),
                }
            };
            if let Some(group) = group {
                // The zero term gives every parameter a gradient, so every rank sums
                // buffers of the same layout.
                ((&part + optimizer.zero_term()) * loss_scale(&scaler)).f_backward()?;
                optimizer.all_reduce_gradients(group)?;
            } else {
                (&part * loss_scale(&scaler)).f_backward()?;
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
            let counted = part.detach().to_kind(Kind::Double);
            // The rank's own mean, for the progress bar.
            let loss = &counted / share.max(1e-12);
            // Summed over the ranks at the end of the epoch: the whole batches' mean loss.
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
        // A regression's classification metrics are placeholders: not recorded; a
        // contrastive task's accuracy is its mean recall@1.
        let classified = val.as_ref().filter(|_| model.task() != Task::Regression);
        let calibrated = classified.filter(|_| model.task() != Task::Contrastive);
        let record = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / steps.max(1) as f64,
            val_loss: val.as_ref().map(|v| v.loss),
            val_accuracy: classified.map(|v| v.metrics.accuracy),
            val_macro_f1: calibrated.map(|v| v.metrics.macro_f1),
            val_ece: calibrated.map(|v| v.metrics.ece),
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
            .is_some_and(|(stop, best)| stop.stops(epoch + 1, best));
        if writes
            && (epoch + 1 == config.epochs
                || stops_next
                || last_checkpoint.elapsed().as_secs_f64() >= config.checkpoint_every_s)
        {
            // The best weights travel inside the checkpoint, so that best.safetensors never
            // holds an epoch a resumed run throws away.
            let state = TrainerState {
                epoch: epoch + 1,
                best,
                loss_scale: scaler.as_ref().map(|s| (s.scale, s.good_steps)),
                group_weights: weighting
                    .as_ref()
                    .filter(|w| w.has_group_weights())
                    .map(|w| w.group_weights.clone()),
            };
            save_checkpoint(vs, &optimizer, &state, best_weights.as_deref(), run)
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

/// This rank's part of a contrastive batch's loss under data parallelism, as CLIP computes
/// it: the embeddings of every rank's share gathered into the whole batch, the loss over all
/// of it. Its value is the loss over the ranks' number (the parts sum to it) and its gradient
/// reaches this rank's embeddings and this rank's share of the logit scale's, so that the
/// gradients summed over the ranks are the whole batch's.
fn gathered_contrastive_loss(
    model: &FusionModel,
    output: Option<&FusionOutput>,
    batch: &Tensor,
    group: &dyn ProcessGroup,
) -> Result<Tensor> {
    let world = group.world_size();
    let sizes: Vec<i64> = (0..world).map(|r| shard(batch, r, world).size()[0]).collect();
    let config = model.config();
    let device = model.device();
    let local = match output.and_then(FusionOutput::embeddings) {
        Some(embeddings) => embeddings.shallow_clone(),
        None => Tensor::zeros(
            [0, config.modalities.len() as i64, config.hidden_dim],
            (Kind::Float, device),
        ),
    };
    let scale = model.contrastive_scale()?;
    let share = 1.0 / world as f64;
    let scale = &scale * share + scale.detach() * (1.0 - share);
    let all = crate::contrastive::gather_embeddings(&local, &sizes, group.rank(), group)?;
    let loss = crate::contrastive::pairwise_sample_losses(&all, &scale).mean(Kind::Float);
    Ok(&loss - loss.detach() * (1.0 - share))
}

/// Fails on every rank alike unless all hold rank 0's number of training and validation
/// samples, of parameters, its training labels, groups and weights: otherwise their batches would not line
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
        // Group DRO's collectives are as long as the groups are many.
        train_set
            .groups()
            .map_or(0, |g| g.iter().collect::<std::collections::BTreeSet<_>>().len()) as f64,
        train_set
            .weights()
            .map_or(Ok(-1.0), |w| f64::try_from(w.sum(Kind::Double)))?,
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
