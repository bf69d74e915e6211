//! A run folder, the model built from a configuration, training a configuration on
//! extracted features, and predicting new records from their raw files.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use fusion_core::{
    Encoder, FusionConfig, FusionModel, Learner, Progress, RunFolder, ShardedDataset, Strategy, Task, TensorDataset,
    TrainSummary, TrainingData,
};
use fusion_data::{Extraction, FeatureSpec, Problem, Split};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor, nn};

use crate::{
    Error, Result, RunConfig,
    alone::{ModalityAlone, modalities_alone},
    data::{Inputs, SplitData, fit_standardization, labelled, outputs_of, standardized},
    encoder::{Augmented, Standardized},
    frozen::{FrozenCounts, encode_frozen},
};

/// Builds the model of `config` for `classes` with `fusion`, its variables in `vs`
/// (`encoder.<modality>`, `input.<modality>` for the standardisation, then fusion-core's
/// names). `fitted` sets the standardisation (training); without it the checkpoint loaded
/// next provides it.
pub fn build_model(
    vs: &nn::VarStore,
    config: &RunConfig,
    classes: &[String],
    fusion: &FusionConfig,
    fitted: Option<&[Option<(Tensor, Tensor)>]>,
) -> Result<FusionModel> {
    let root = vs.root();
    let mut encoders: Vec<Box<dyn Encoder>> = Vec::new();
    for (m, spec) in config.modalities.iter().enumerate() {
        let mut encoder = spec.encoder.build(
            &(&root / "encoder" / spec.name.as_str()),
            &spec.features,
            config.hidden_dim,
            config.dropout,
        )?;
        if let Some(augment) = spec.augment {
            encoder = Box::new(Augmented::new(encoder, augment));
        }
        encoders.push(if standardized(spec) {
            let shape = spec.input_shape();
            let fit = fitted.and_then(|f| f.get(m)).and_then(Option::as_ref);
            Box::new(Standardized::new(
                &(&root / "input" / spec.name.as_str()),
                encoder,
                &shape,
                spec.features.scaled_per_value(),
                fit,
            ))
        } else {
            encoder
        });
    }
    let model_config = config.model_config(classes, fusion)?;
    Ok(FusionModel::with_encoders(&root, &model_config, encoders)?)
}

/// Largest JSON file of a run folder read, in bytes.
const MAX_RUN_JSON_BYTES: u64 = 64 << 20;

/// Why a list of class names cannot be a model's outputs: none, too many, or one twice.
pub(crate) fn check_classes(classes: &[String]) -> std::result::Result<(), String> {
    const MAX_CLASSES: usize = 1 << 20;
    if classes.is_empty() {
        return Err("no class: a model has at least one output".into());
    }
    if classes.len() > MAX_CLASSES {
        return Err(format!("{} classes, at most {MAX_CLASSES}", classes.len()));
    }
    let mut seen = std::collections::HashSet::new();
    match classes.iter().find(|c| !seen.insert(c.as_str())) {
        Some(twice) => Err(format!("class `{twice}` twice")),
        None => Ok(()),
    }
}

/// The files of a run folder: fusion-core's (`model.json`, `train.json`, checkpoints,
/// `metrics.jsonl`) and `run.json` (the run configuration) and `classes.json`.
#[derive(Debug, Clone)]
pub struct Run {
    /// fusion-core's files.
    pub folder: RunFolder,
}

impl Run {
    /// The run at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            folder: RunFolder::new(root),
        }
    }
    /// The folder.
    pub fn root(&self) -> &Path {
        &self.folder.root
    }
    /// A file of the run.
    pub fn file(&self, name: &str) -> PathBuf {
        self.folder.root.join(name)
    }
    /// Writes a JSON file of the run atomically (a temporary file renamed into place).
    pub fn write_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(|e| Error::Config(e.to_string()))?;
        Ok(fusion_core::write_file_atomic(&self.file(name), text)?)
    }
    /// Reads a JSON file of the run (at most 64 MiB).
    pub fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T> {
        let path = self.file(name);
        let bytes = fusion_data::read_bounded(&path, MAX_RUN_JSON_BYTES).map_err(|e| {
            Error::Config(format!(
                "{}: {e} (is {} a run folder?)",
                path.display(),
                self.root().display()
            ))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Config(format!("{} is damaged: {e}", path.display())))
    }
    /// The run's configuration, parsed (relative paths against the run folder) and checked
    /// as a configuration given to `train` is: an edited `run.json` cannot size what
    /// `train` would refuse.
    pub fn config(&self) -> Result<RunConfig> {
        let path = self.file("run.json");
        let bytes = fusion_data::read_bounded(&path, crate::config::MAX_CONFIG_BYTES).map_err(|e| {
            Error::Config(format!(
                "{}: {e} (is {} a run folder?)",
                path.display(),
                self.root().display()
            ))
        })?;
        let config = RunConfig::parse(&bytes, &path)?;
        config.validate()?;
        Ok(config)
    }
    /// The class names in index order (present and distinct).
    pub fn classes(&self) -> Result<Vec<String>> {
        let classes: Vec<String> = self.read_json("classes.json")?;
        check_classes(&classes).map_err(|e| Error::Config(format!("{}: {e}", self.file("classes.json").display())))?;
        Ok(classes)
    }
    /// The trained model (best weights) on `device`, rebuilt from `run.json`. A frozen
    /// pretrained encoder's weights come from the models folder: a file that changed since
    /// the run trained (`backbones.json`) is refused, not silently used.
    pub fn model(&self, device: Device) -> Result<(FusionModel, nn::VarStore)> {
        let config = self.config()?;
        if self.file(crate::frozen::BACKBONES_FILE).exists() {
            let trained: std::collections::BTreeMap<String, String> = self.read_json(crate::frozen::BACKBONES_FILE)?;
            let now = crate::frozen::backbone_digests(&config);
            let changed = trained
                .keys()
                .chain(now.keys())
                .find(|name| trained.get(*name) != now.get(*name));
            if let Some(name) = changed {
                return Err(Error::Config(format!(
                    "{}: the pretrained weights of modality `{name}` are not those it was trained with \
                     (the models folder's file changed; fetch the same version or train again)",
                    self.root().display()
                )));
            }
        }
        let classes = self.classes()?;
        let vs = nn::VarStore::new(device);
        let model = build_model(&vs, &config, &classes, &config.fusion, None)?;
        fusion_core::load_weights(&vs, &self.folder.best_weights())?;
        Ok((model, vs))
    }
}

/// What [`train`] did, and the trained model (last epoch's weights).
pub struct Trained {
    /// Epoch records.
    pub summary: TrainSummary,
    /// Wall time of training.
    pub seconds: f64,
    /// Trainable parameters.
    pub parameters: i64,
    /// The model's outputs in order: class names, tags (multi-label), or `value`.
    pub classes: Vec<String>,
    /// Train and val records left out (no label, or one the task cannot use).
    pub skipped: Vec<Problem>,
    /// Each modality alone on the validation records, with the best weights
    /// (classification with a validation split; also in the run's `modalities.json`).
    pub alone: Vec<ModalityAlone>,
    /// Frozen-encoder outputs read from the cache and computed, for train and val.
    pub frozen: FrozenCounts,
    /// Where the training inputs were streamed from, when they were (see
    /// [`fusion_core::TrainConfig::data`]).
    pub streamed: Option<PathBuf>,
    /// The model after the last epoch.
    pub model: FusionModel,
    /// Its variables.
    pub vs: nn::VarStore,
}

/// The split evaluated after training: test, or validation when there is no test split.
pub fn held_out_split(extraction: &Extraction) -> Split {
    if extraction.split_indices(Split::Test).is_empty() {
        Split::Val
    } else {
        Split::Test
    }
}

/// The run's dataset for `split` of `extraction` (made with `specs`); frozen encoders'
/// outputs come from the cache (see [`FrozenCounts`]).
pub fn split_dataset(
    config: &RunConfig,
    extraction: &Extraction,
    specs: &[FeatureSpec],
    split: Split,
    classes: &[String],
    device: Device,
) -> Result<SplitData> {
    let indices = extraction.split_indices(split);
    Ok(encoded_dataset(config, extraction, specs, &indices, classes, device)?.0)
}

/// Every record of `extraction` at `indices` as the model reads it, whatever its label (to
/// predict; labels are placeholders): cached frozen encoders' outputs as in
/// [`split_dataset`], so predicting costs what evaluating does (it once ran the frozen
/// backbone on every record again and held every raw picture: 6.4 GB and 127 s where
/// `eval` took 1.5 GB and 3 s).
pub fn prediction_dataset(
    config: &RunConfig,
    extraction: &Extraction,
    specs: &[FeatureSpec],
    indices: &[usize],
    classes: &[String],
    device: Device,
) -> Result<SplitData> {
    let mut data = crate::data::unlabelled(
        extraction,
        indices,
        (config.task, classes),
        &config.modalities,
        &config.columns(specs)?,
        device,
        Inputs::EncodedLater,
    )?;
    encode_frozen(config, extraction, specs, &mut data, device)?;
    Ok(data)
}

/// The dataset of the extraction's records at `indices` as the model reads it: a cached
/// frozen encoder's outputs in place of its raw inputs, which are never gathered into one
/// tensor (the outputs come from the cache, or are computed from the extraction a few
/// records at a time).
fn encoded_dataset(
    config: &RunConfig,
    extraction: &Extraction,
    specs: &[FeatureSpec],
    indices: &[usize],
    classes: &[String],
    device: Device,
) -> Result<(SplitData, FrozenCounts)> {
    let mut data = labelled(
        extraction,
        indices,
        (config.task, classes),
        &config.modalities,
        &config.columns(specs)?,
        device,
        Inputs::EncodedLater,
    )?;
    let counts = encode_frozen(config, extraction, specs, &mut data, device)?;
    Ok((data, counts))
}

/// Writes the model inputs of every split that has records to one safetensors file, for
/// tools outside this workspace (a PyTorch peer, a scikit-learn baseline) to train on exactly
/// what a run sees: `{split}.{modality}` (as the modality's encoder reads it, before the
/// model's standardisation), `{split}.{modality}.present` (u8), `{split}.labels` (the task's
/// targets: int64 indices into the returned classes, float 0/1 `[N, tags]` for multi-label,
/// float numbers for regression, whose one "class" is `value`). Written through a
/// temporary file and a rename.
pub fn export_features(
    config: &RunConfig,
    extraction: &Extraction,
    specs: &[FeatureSpec],
    path: &Path,
) -> Result<Vec<String>> {
    let train_indices = extraction.split_indices(Split::Train);
    let classes = outputs_of(
        config.task,
        train_indices.iter().map(|&i| extraction.records[i].label.as_str()),
    );
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (split, name) in [(Split::Train, "train"), (Split::Val, "val"), (Split::Test, "test")] {
        if extraction.split_indices(split).is_empty() {
            continue;
        }
        let data = split_dataset(config, extraction, specs, split, &classes, Device::Cpu)?.data;
        for (modality, (features, present)) in config.modalities.iter().zip(data.features.iter().zip(&data.present)) {
            named.push((format!("{name}.{}", modality.name), features.shallow_clone()));
            named.push((
                format!("{name}.{}.present", modality.name),
                present.to_kind(tch::Kind::Uint8),
            ));
        }
        named.push((format!("{name}.labels"), data.labels.shallow_clone()));
    }
    fusion_core::write_atomic(path, |tmp| Ok(Tensor::write_safetensors(&named, tmp)?))?;
    Ok(classes)
}

/// Trains `config` on the extraction's train split into `run`, evaluating on val each
/// epoch, alone or as one rank of a data-parallel group (see [`fusion_core::Learner`]):
/// only the process that `strategy` says writes checks and writes `run`; every rank needs
/// the same extraction. A folder that already holds a run continues it when the
/// configuration is the same (epochs aside) and the classes too; anything else is refused
/// before a file is touched.
pub fn train(
    config: &RunConfig,
    extraction: &Extraction,
    specs: &[FeatureSpec],
    run: &Run,
    device: Device,
    strategy: Strategy<'_>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Trained> {
    config.validate()?;
    let leader = strategy.writes();
    let train_indices = extraction.split_indices(Split::Train);
    let classes = outputs_of(
        config.task,
        train_indices.iter().map(|&i| extraction.records[i].label.as_str()),
    );
    let fewest = match config.task {
        Task::Classification => 2,
        Task::MultiLabel | Task::Regression => 1,
        // Pairs need no label.
        Task::Contrastive => 0,
    };
    if classes.len() < fewest {
        return Err(Error::Config(format!(
            "the training records have {} distinct label(s); a {} needs at least {fewest}",
            classes.len(),
            config.task.name()
        )));
    }
    let resuming = run.folder.model_config().exists();
    if leader && resuming {
        let saved = run.config()?;
        if !saved.same_run(config) {
            return Err(Error::Config(format!(
                "{} holds a run of another configuration; use a new folder (or the same configuration to resume)",
                run.root().display()
            )));
        }
        let saved_classes = run.classes()?;
        if saved_classes != classes {
            return Err(Error::Config(format!(
                "{}: the training labels changed since this run started ({saved_classes:?}, now {classes:?}); use a new folder",
                run.root().display()
            )));
        }
    }
    // Held until training ends: a second process on this folder is refused, not interleaved.
    let _lock = leader.then(|| fusion_core::RunLock::acquire(run.root())).transpose()?;
    if leader {
        // A calibration fitted to other weights would be applied to these.
        crate::Calibration::forget(run.root())?;
    }
    let columns = config.columns(specs)?;
    // A training sample with none of the model's modalities teaches it nothing.
    let trainable: Vec<usize> = train_indices
        .iter()
        .copied()
        .filter(|&i| columns.iter().any(|&c| extraction.features[c][i].is_some()))
        .collect();
    let (mut train_data, mut frozen) = encoded_dataset(config, extraction, specs, &trainable, &classes, device)?;
    if let (true, Some(first)) = (train_data.records.is_empty(), train_data.problems.first()) {
        return Err(Error::Config(format!(
            "no training record has a label a {} can use ({} left out; the first: {})",
            config.task.name(),
            train_data.problems.len(),
            describe(first)
        )));
    }
    let record_weights: Vec<Option<f64>> = train_data
        .records
        .iter()
        .map(|&i| extraction.records[i].weight)
        .collect();
    train_data.data.weights = crate::weights::training_weights(
        config.task,
        &classes,
        &train_data.data.labels,
        &record_weights,
        config.class_weights.as_ref(),
    )?;
    let val_indices = extraction.split_indices(Split::Val);
    let (val, counts) = encoded_dataset(config, extraction, specs, &val_indices, &classes, device)?;
    frozen.cached += counts.cached;
    frozen.computed += counts.computed;
    let fitted = fit_standardization(&train_data.data, &config.modalities)?;
    tch::manual_seed(config.train.seed as i64);
    let vs = nn::VarStore::new(device);
    let model = build_model(&vs, config, &classes, &config.fusion, Some(&fitted))?;
    if leader && !resuming {
        run.write_json("run.json", &config.portable().to_json()?)?;
        run.write_json("classes.json", &classes)?;
        run.write_json(crate::frozen::BACKBONES_FILE, &crate::frozen::backbone_digests(config))?;
    }
    let parameters = vs
        .trainable_variables()
        .iter()
        .filter(|t| t.requires_grad())
        .map(Tensor::numel)
        .sum::<usize>() as i64;
    let train_config = config.train_config();
    // Rank 0 streams from the run folder; the others (which write nothing there) from a
    // temporary folder that goes when training ends.
    let mut scratch = None;
    let streamed = match train_config
        .data
        .streams(train_data.data.bytes(), fusion_core::available_memory())
    {
        true => {
            let folder = match leader {
                true => run.root().join("inputs"),
                false => scratch
                    .insert(tempfile::tempdir().map_err(|e| Error::Config(format!("no temporary folder: {e}")))?)
                    .path()
                    .to_path_buf(),
            };
            let shards = ShardedDataset::write(&train_data.data, folder, SHARD_BYTES)?;
            // Read from disk from now on: the copy in memory goes.
            train_data.data = TensorDataset::dense(Vec::new(), Tensor::zeros([0], (tch::Kind::Int64, Device::Cpu)))?;
            Some(shards)
        }
        false => None,
    };
    let inputs: &dyn TrainingData = match &streamed {
        Some(shards) => shards,
        None => &train_data.data,
    };
    let val_data = (!val.records.is_empty()).then_some(&val.data);
    let started = Instant::now();
    let summary = Learner::new(&model, &vs, &train_config).with_strategy(strategy).fit(
        inputs,
        val_data,
        &run.folder,
        progress,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let alone = match (leader, config.task, val_data) {
        (true, Task::Classification, Some(val_data)) => {
            fusion_core::load_weights(&vs, &run.folder.best_weights())?;
            let alone = modalities_alone(&model, model.modality_names(), val_data, train_config.batch_size)?;
            run.write_json("modalities.json", &alone)?;
            alone
        }
        _ => Vec::new(),
    };
    Ok(Trained {
        summary,
        seconds,
        parameters,
        alone,
        classes,
        skipped: [train_data.problems, val.problems].concat(),
        frozen,
        streamed: streamed.filter(|_| scratch.is_none()).map(|s| s.folder().to_path_buf()),
        model,
        vs,
    })
}

/// Streamed training inputs go to shards of about this many bytes.
const SHARD_BYTES: u64 = 64 << 20;

/// A prediction's label from its scores (see [`fusion_core::FusionOutput::scores`]): the
/// most probable class, the labels at or above [`fusion_core::THRESHOLD`] joined by `;`,
/// or the number.
pub fn decision(task: Task, outputs: &[String], scores: &[f32]) -> String {
    match task {
        Task::Classification => outputs.get(fusion_core::argmax(scores)).cloned().unwrap_or_default(),
        Task::MultiLabel => outputs
            .iter()
            .zip(scores)
            .filter(|(_, s)| f64::from(**s) >= fusion_core::THRESHOLD)
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(&crate::TAG_SEPARATOR.to_string()),
        Task::Regression => scores.first().map(|v| v.to_string()).unwrap_or_default(),
        // Embeddings decide nothing.
        Task::Contrastive => String::new(),
    }
}

/// `id (modality) path: reason`.
pub fn describe(problem: &Problem) -> String {
    let mut text = problem.id.clone();
    if let Some(modality) = &problem.modality {
        text += &format!(" ({modality})");
    }
    // Most readers' reasons name the file already.
    if let Some(path) = problem
        .path
        .as_ref()
        .filter(|p| !problem.reason.contains(&*p.to_string_lossy()))
    {
        text += &format!(" {}", path.display());
    }
    format!("{text}: {}", problem.reason)
}

/// A batch of two all-zero samples with the inputs `config`'s model takes (features as
/// its encoders read them, int64 token ids with a padding mask), e.g. to trace an export.
pub fn example_inputs(config: &RunConfig, device: Device) -> Vec<fusion_core::ModalityInput> {
    config
        .modalities
        .iter()
        .map(|m| {
            let present = Tensor::ones([2], (tch::Kind::Bool, device));
            if m.features.integer() {
                let ids = Tensor::zeros([2, 4], (tch::Kind::Int64, device));
                return fusion_core::ModalityInput {
                    padding_mask: Some(ids.ones_like().to_kind(tch::Kind::Bool)),
                    features: ids,
                    present,
                };
            }
            let shape = [vec![2], m.input_shape()].concat();
            fusion_core::ModalityInput::with_presence(
                Tensor::zeros(shape.as_slice(), (tch::Kind::Float, device)),
                present,
            )
        })
        .collect()
}
