//! A run folder's files: configurations, weights, and the metrics log (checkpoints and
//! the trainer's state in `checkpoint`).

use super::*;

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

pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
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

pub(super) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
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

pub(super) fn prepare_run_folder(run: &RunFolder, model: &ModelConfig, train: &TrainConfig) -> Result<()> {
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

/// The loss scale multiplying the loss before the backward pass (1 without a scaler).
pub(super) fn loss_scale(scaler: &Option<LossScaler>) -> f64 {
    scaler.as_ref().map_or(1.0, |s| s.scale)
}

/// A copy of every variable, by name.
pub(super) fn snapshot(vs: &VarStore) -> Vec<(String, Tensor)> {
    tch::no_grad(|| {
        vs.variables()
            .into_iter()
            .map(|(name, t)| (name, t.detach().copy()))
            .collect()
    })
}

/// A checkpoint that could not be written (full disk, file-size limit, read-only folder),
/// with what is left to resume from: the write is atomic, so the previous file is whole.
pub(super) fn unsaved(path: &Path, epoch: usize, saved_epoch: usize, error: &Error) -> Error {
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
pub(super) fn save_named(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    write_checked_safetensors(named, path)
}

pub(super) fn read_metrics(path: &Path, keep: usize) -> Result<Vec<EpochRecord>> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .take(keep)
        .map(|line| serde_json::from_str(line).map_err(|e| Error::Config(format!("{}: {e}", path.display()))))
        .collect()
}

pub(super) fn rewrite_metrics(path: &Path, records: &[EpochRecord]) -> Result<()> {
    let text: String = records
        .iter()
        .filter_map(|r| serde_json::to_string(r).ok())
        .map(|l| l + "\n")
        .collect();
    write_file_atomic(path, text)
}

pub(super) fn append_metrics(path: &Path, record: &EpochRecord) -> Result<()> {
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
