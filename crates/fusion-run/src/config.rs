//! The run configuration: data, per-modality features and encoders, fusion, training.

use std::path::{Path, PathBuf};

use fusion_core::{EncoderConfig, FusionConfig, ModalityConfig, ModelConfig, ParamGroup, Task, TrainConfig};
use fusion_data::{FeatureConfig, FeatureSpec, Manifest, Split};
use serde::{Deserialize, Serialize};

use crate::{EncoderSpec, Error, Result};

/// One modality of a run: where its features come from and how they are encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModalitySpec {
    /// The modality's name: the manifest field read (`image`, `audio`, `text`, `video`),
    /// or `sound_track` for a video's sound.
    pub name: String,
    /// How files become model inputs.
    pub features: FeatureConfig,
    /// The encoder of those inputs.
    #[serde(default, deserialize_with = "fusion_core::deserialize_strict")]
    pub encoder: EncoderSpec,
    /// Random changes to training images, drawn anew each epoch from the cached features
    /// (no re-decoding); evaluation, prediction and export see the images as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augment>,
}

impl ModalitySpec {
    /// Shape of one sample's input as the encoder reads it: flattened for flat encoders,
    /// the features' own shape otherwise (the longest, for token ids).
    pub fn input_shape(&self) -> Vec<i64> {
        match self.encoder.layout() {
            crate::Layout::Flat => vec![self.features.dim() as i64],
            crate::Layout::Shaped => self.features.shape().iter().map(|&s| s as i64).collect(),
        }
    }
}

/// Per-epoch image augmentation of [`ModalitySpec::augment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Mirror each image left-right with probability ½.
    #[serde(default)]
    pub flip: bool,
    /// Shift the batch's images by up to this many pixels each way (a random crop of the
    /// image padded with its mean), 0 for none.
    #[serde(default)]
    pub shift: u32,
}

/// A fusion method to train in `compare` (a contrastive task's rows change encoders only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedFusion {
    /// Row name in the table.
    pub name: String,
    /// The method (left out for a contrastive task).
    #[serde(default = "unfused")]
    pub fusion: FusionConfig,
    /// Encoders of this row, by modality name, replacing the run's (e.g. CNNs beside MLPs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modalities: Vec<ModalitySpec>,
}

/// Everything a training run needs; saved as `run.json` in the run folder with its paths
/// made absolute. A configuration file may also list `compare` rows: those are a
/// [`CompareConfig`]'s, beside this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The dataset manifest (relative to the configuration file).
    pub manifest: PathBuf,
    /// Feature cache folder (relative to the configuration file); default: the user's
    /// cache folder (`$XDG_CACHE_HOME/fusion/features` or `~/.cache/fusion/features`).
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// Modalities in model input order.
    pub modalities: Vec<ModalitySpec>,
    /// Common hidden size of the fusion model (and default encoder output size).
    #[serde(default = "default_hidden")]
    pub hidden_dim: i64,
    /// Dropout in encoders and classifiers.
    #[serde(default)]
    pub dropout: f64,
    /// What the label is: a class (`classification`, the default), `;`-separated tags
    /// (`multi_label`), or a number (`regression`).
    #[serde(default, skip_serializing_if = "is_classification")]
    pub task: Task,
    /// The fusion method of `train`; a contrastive task has none (the field may be left out).
    #[serde(default = "unfused")]
    pub fusion: FusionConfig,
    /// Training settings.
    pub train: TrainConfig,
    /// What a file that cannot be used (missing, undecodable, over a limit) costs.
    #[serde(default)]
    pub on_bad_file: OnBadFile,
    /// Limits of the files read (sizes, image pixels, audio and video durations): those of
    /// `fusion validate`, which are the defaults.
    #[serde(default)]
    pub limits: fusion_data::Limits,
    /// Whether the manifest may name files outside its own folder (`../..`, absolute paths
    /// elsewhere); by default such a record is rejected with the reason.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_paths_outside_manifest: bool,
    /// The manifest's columns by name and the role of each (`"photo": "image"`,
    /// `"price": "label"`, `"age": "table"`), for a table whose column names are not the
    /// record fields; without it, the columns are the record fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<fusion_data::ColumnMap>,
    /// Records without a split drawn into val and test, stratified by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<fusion_data::Holdout>,
    /// Each class's weight in the training loss, times each record's own `weight`:
    /// `"balanced"` (inverse to the class's training records) or a weight per class name
    /// (see [`ClassWeights`](crate::ClassWeights)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<crate::ClassWeights>,
    /// A classification whose every modality alone is at chance on val after training
    /// (its label may need modalities together) also trains low-rank tensor fusion
    /// ([`interaction_config`](crate::interaction_config)) and keeps whichever scores
    /// higher on val. The `fast` preset sets it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interactions_fallback: bool,
}

/// What a contrastive configuration holds in `fusion`: nothing reads it.
fn unfused() -> FusionConfig {
    FusionConfig::Early {
        method: fusion_core::EarlyMethod::Concat,
    }
}

fn is_classification(task: &Task) -> bool {
    *task == Task::Classification
}

/// What a record loses when one of its files cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBadFile {
    /// That modality is absent for that record; its other modalities are kept.
    #[default]
    AbsentModality,
    /// The whole record is left out.
    SkipRecord,
}

fn default_hidden() -> i64 {
    64
}

/// Longest name of a `compare` row.
pub const MAX_ROW_NAME_CHARS: usize = 100;

/// Largest configuration file read, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Largest `hidden_dim` accepted (a typo like `1e9` would otherwise fail inside libtorch).
pub const MAX_HIDDEN_DIM: i64 = 1 << 16;

impl RunConfig {
    /// The files the manifest's records may name.
    pub fn path_scope(&self) -> fusion_data::PathScope {
        if self.allow_paths_outside_manifest {
            fusion_data::PathScope::Anywhere
        } else {
            fusion_data::PathScope::ManifestFolder
        }
    }

    /// Reads `path` (default: the configuration's manifest) through the column map, and
    /// draws the holdout splits.
    pub fn load_manifest(&self, path: Option<&Path>) -> Result<Manifest> {
        let path = path.unwrap_or(&self.manifest);
        let mut manifest = Manifest::load_mapped(path, self.path_scope(), self.columns.as_ref())?;
        if let Some(holdout) = &self.holdout {
            // Numbers and tag sets are rarely repeated: one stratum.
            holdout.assign(&mut manifest.records, self.task == Task::Classification);
        }
        Ok(manifest)
    }

    /// This configuration with the statistics its table features lack (means, deviations,
    /// categories) fitted on the training records of `manifest`: what training reads and
    /// a configuration saved afterwards carries.
    pub fn with_fitted_tables(&self, manifest: &Manifest) -> Result<Self> {
        let mut fitted = self.clone();
        fit_table_columns(fitted.modalities.iter_mut(), &training_tables(manifest))?;
        Ok(fitted)
    }

    /// Reads a JSON configuration; errors name the file and the field (`fusion.method`…).
    /// `compare` rows in the file are checked and left to [`CompareConfig::load`].
    pub fn load(path: &Path) -> Result<Self> {
        Ok(CompareConfig::load(path)?.run)
    }

    /// [`Self::load`] of a configuration's bytes; `path` names it and its folder resolves
    /// relative paths.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        Ok(CompareConfig::parse(bytes, path)?.run)
    }

    /// This configuration as JSON, as [`RunConfig::parse`] reads it back (a contrastive
    /// task's unused fusion left out).
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let mut value = serde_json::to_value(self).map_err(|e| Error::Config(e.to_string()))?;
        if let (Task::Contrastive, Some(fields)) = (self.task, value.as_object_mut()) {
            fields.remove("fusion");
        }
        Ok(value)
    }

    /// This configuration as it is written into a run folder: a tokenizer of a fetched
    /// model is named by the model (`all-MiniLM-L6-v2/tokenizer.json`, found again in the
    /// models folder of whichever machine reads it), not by this machine's path.
    pub fn portable(&self) -> Self {
        let mut config = self.clone();
        let Some(models) = crate::models_dir() else {
            return config;
        };
        for m in &mut config.modalities {
            if let FeatureConfig::Tokens { tokenizer, .. } = &mut m.features
                && let Ok(name) = tokenizer.strip_prefix(&models)
            {
                *tokenizer = name.to_path_buf();
            }
        }
        config
    }

    /// Makes every relative path absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.manifest = absolute(&base.join(&self.manifest));
        self.cache = self.cache.as_ref().map(|c| absolute(&base.join(c)));
        resolve_modality_paths(self.modalities.iter_mut(), base);
    }

    /// Checks what serde cannot: modality names, feature sizes, encoders against their
    /// features, hidden sizes; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let config = |e: Error| Error::Config(format!("config: {e}"));
        if self.modalities.is_empty() {
            return Err(Error::Config(
                "config: field `modalities`: at least one modality is needed".into(),
            ));
        }
        if !(1..=MAX_HIDDEN_DIM).contains(&self.hidden_dim) {
            return Err(Error::Config(format!(
                "config: field `hidden_dim`: {} is outside 1..={MAX_HIDDEN_DIM}",
                self.hidden_dim
            )));
        }
        check_modalities(&self.modalities, "modalities").map_err(config)?;
        if let Some(columns) = &self.columns {
            fusion_data::check_column_map(columns)
                .map_err(|e| Error::Config(format!("config: field `columns`: {e}")))?;
        }
        if let Some(holdout) = &self.holdout {
            holdout
                .check()
                .map_err(|e| Error::Config(format!("config: field `holdout`: {e}")))?;
        }
        self.train.validate().map_err(|e| config(e.into()))?;
        if self.task == Task::Contrastive {
            if self.modalities.len() < 2 {
                return Err(Error::Config(format!(
                    "config: field `modalities`: a contrastive task aligns two or more modalities, {} given",
                    self.modalities.len()
                )));
            }
            if self.interactions_fallback {
                return Err(Error::Config(
                    "config: field `interactions_fallback`: it falls back to a fusion; a contrastive task has none"
                        .into(),
                ));
            }
            if self.train.batch_size < 2 {
                return Err(Error::Config(format!(
                    "config: field `train.batch_size`: {} — a contrastive batch needs two records or more (each \
                     record's negatives are the others)",
                    self.train.batch_size
                )));
            }
        }
        // Class names are checked against the training records when they are read.
        if self.class_weights.is_some() {
            crate::ClassWeights::check_task(self.task)?;
        }
        self.limits.validate().map_err(|(field, value)| {
            Error::Config(format!("config: field `limits.{field}`: {value} is not positive"))
        })?;
        self.model_config(&self.placeholder_outputs(), &self.fusion)?
            .validate()
            .map_err(|e| config(e.into()))
    }

    /// Outputs of the task's smallest model, to check a configuration before its data.
    fn placeholder_outputs(&self) -> Vec<String> {
        match self.task {
            Task::Regression => vec![crate::REGRESSION_OUTPUT.into()],
            _ => vec!["a".into(), "b".into()],
        }
    }

    /// Checks the configuration against a manifest: every modality is in some record and
    /// there is something to train on.
    pub fn check_manifest(&self, manifest: &Manifest) -> Result<()> {
        let training = |r: &&fusion_data::Record| r.split_or_train() == Split::Train;
        for (i, m) in self.modalities.iter().enumerate() {
            let modality = m.features.modality();
            if !manifest.records.iter().any(|r| r.has(modality)) {
                return Err(Error::Config(format!(
                    "config: field `modalities[{i}].name`: no record of {} has `{}`",
                    manifest.path.display(),
                    modality.name()
                )));
            }
            if !manifest.records.iter().filter(training).any(|r| r.has(modality)) {
                return Err(Error::Config(format!(
                    "config: field `modalities[{i}].name`: no training record of {} has `{}`: its encoder would never learn",
                    manifest.path.display(),
                    modality.name()
                )));
            }
        }
        if !manifest.records.iter().any(|r| r.split_or_train() == Split::Train) {
            return Err(Error::Config(format!(
                "{}: no training records (split `train` or none)",
                manifest.path.display()
            )));
        }
        Ok(())
    }

    /// Modality names in input order.
    pub fn names(&self) -> Vec<String> {
        self.modalities.iter().map(|m| m.name.clone()).collect()
    }

    /// Whether `other` continues this run: the same data, features, model and training,
    /// the epoch count aside (the cache folder does not matter).
    pub fn same_run(&self, other: &Self) -> bool {
        let comparable = |c: &Self| Self {
            cache: None,
            // How long a run trains and how often it saves do not change what it computes.
            train: TrainConfig {
                epochs: 0,
                checkpoint_every_s: 0.0,
                data: Default::default(),
                ..c.train.clone()
            },
            ..c.clone()
        };
        comparable(self) == comparable(other)
    }

    /// The feature extraction asked for.
    pub fn feature_specs(&self) -> Vec<FeatureSpec> {
        specs_of(self.modalities.iter())
    }

    /// For each modality, the column of `specs` (an extraction's, e.g. from
    /// [`Self::feature_specs`]) holding its features; an error names a modality they lack.
    pub fn columns(&self, specs: &[FeatureSpec]) -> Result<Vec<usize>> {
        self.modalities
            .iter()
            .map(|m| {
                specs
                    .iter()
                    .position(|s| s.name == m.name && s.config == m.features)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "modality `{}`: the extraction has no {} features",
                            m.name,
                            m.features.kind_name()
                        ))
                    })
            })
            .collect()
    }

    /// The fusion-core model configuration for `classes` and `fusion`: each encoder is
    /// described in full (features and encoder), so `model.json` says what was trained.
    pub fn model_config(&self, classes: &[String], fusion: &FusionConfig) -> Result<ModelConfig> {
        let modalities = self
            .modalities
            .iter()
            .map(|m| {
                Ok(ModalityConfig {
                    name: m.name.clone(),
                    input_dim: m.features.dim() as i64,
                    encoder: EncoderConfig::Custom {
                        description: serde_json::json!({"features": m.features, "encoder": m.encoder}),
                        output_dim: m.encoder.output_dim(&m.features, self.hidden_dim)?,
                    },
                })
            })
            .collect::<Result<_>>()?;
        Ok(ModelConfig {
            modalities,
            // A contrastive model without labelled records still names one class.
            num_classes: (classes.len() as i64).max(i64::from(self.task == Task::Contrastive)),
            task: self.task,
            hidden_dim: self.hidden_dim,
            dropout: self.dropout,
            fusion: fusion.clone(),
        })
    }

    /// The training settings with the learning rates of fine-tuned pretrained encoders.
    pub fn train_config(&self) -> TrainConfig {
        let mut train = self.train.clone();
        for m in &self.modalities {
            if let Some(lr) = m.encoder.learning_rate() {
                // A video's own lr is its frame encoder's, not the temporal pooling's.
                let inner = if matches!(m.encoder, EncoderSpec::Video { .. }) {
                    "frame."
                } else {
                    ""
                };
                train.param_groups.push(ParamGroup {
                    prefix: format!("encoder.{}.{inner}", m.name),
                    lr,
                });
            }
        }
        train
    }

    /// The same contrastive run aligning only modalities `pair` (a row of `compare`).
    pub fn pair(&self, pair: [usize; 2]) -> Self {
        Self {
            modalities: pair.iter().map(|&m| self.modalities[m].clone()).collect(),
            ..self.clone()
        }
    }

    /// The same run with only modality `index` (a unimodal baseline).
    pub fn only(&self, index: usize) -> Self {
        Self {
            modalities: vec![self.modalities[index].clone()],
            fusion: FusionConfig::Late {
                combiner: fusion_core::LateCombiner::Mean,
            },
            ..self.clone()
        }
    }

    /// The feature cache to use.
    pub fn cache_folder(&self) -> Option<PathBuf> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        self.cache.clone().or_else(|| {
            var("XDG_CACHE_HOME")
                .or_else(|| var("HOME").map(|h| h.join(".cache")))
                .map(|c| c.join("fusion").join("features"))
        })
    }
}

/// A configuration and the methods `compare` trains beside it: read from one file, whose
/// `compare` list holds the rows (a `fusion train` of the same file reads only the run).
#[derive(Debug, Clone, PartialEq)]
pub struct CompareConfig {
    /// The configuration every row starts from.
    pub run: RunConfig,
    /// Methods trained side by side (each with the same seed); unimodal baselines are
    /// always added. Empty: [`default_methods`](crate::default_methods).
    pub rows: Vec<NamedFusion>,
}

impl CompareConfig {
    /// Reads a JSON configuration with its `compare` rows; errors name the file and the
    /// field (`compare[1].fusion`…).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fusion_data::read_bounded(path, MAX_CONFIG_BYTES).map_err(|reason| Error::Io {
            path: path.into(),
            source: std::io::Error::other(reason),
        })?;
        Self::parse(&bytes, path)
    }

    /// [`Self::load`] of a configuration's bytes; `path` names it and its folder resolves
    /// relative paths.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |field: String, reason: String| {
            Error::Config(format!(
                "config {}: field `{field}`: {}",
                path.display(),
                fusion_core::with_suggestion(&reason)
            ))
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Error::Config(format!("config {}: not UTF-8: {e}", path.display())))?;
        // A key given twice is refused with its place (a JSON value would keep the last).
        let mut deserializer = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, UniqueKeys>(&mut deserializer)
            .map_err(|e| bad(e.path().to_string(), e.inner().to_string()))?;
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("config {}: {e}", path.display())))?;
        let given_rows = value
            .as_object_mut()
            .and_then(|fields| fields.remove("compare"))
            .unwrap_or_else(|| serde_json::Value::Array(Vec::new()));
        let named_fusion = value.get("fusion").is_some();
        let mut run: RunConfig =
            serde_path_to_error::deserialize(&value).map_err(|e| bad(e.path().to_string(), e.inner().to_string()))?;
        let mut rows: Vec<NamedFusion> = serde_path_to_error::deserialize(&given_rows).map_err(|e| {
            let below = e.path().to_string();
            let field = match below.as_str() {
                "." => "compare".to_string(),
                _ => format!("compare{below}"),
            };
            bad(field, e.inner().to_string())
        })?;
        // Every row is an object here; a missing fusion took its default when it was read.
        for (i, row) in given_rows.as_array().into_iter().flatten().enumerate() {
            match (row.get("fusion").is_some(), run.task) {
                (true, Task::Contrastive) => {
                    return Err(bad(
                        format!("compare[{i}].fusion"),
                        "a contrastive task has no fusion (a row changes encoders only): leave it out".into(),
                    ));
                }
                (false, task) if task != Task::Contrastive => {
                    return Err(bad(
                        format!("compare[{i}].fusion"),
                        format!("missing (each row of a {} names its fusion method)", task.name()),
                    ));
                }
                _ => {}
            }
        }
        if named_fusion && run.task == Task::Contrastive {
            return Err(bad(
                "fusion".into(),
                "a contrastive task has no fusion (each modality is projected into one space): leave it out".into(),
            ));
        }
        if !named_fusion && run.task != Task::Contrastive {
            return Err(bad(
                "fusion".into(),
                format!(
                    "missing (a {} needs its fusion family, e.g. {{\"family\": \"late\", \"combiner\": \"product\"}})",
                    run.task.name()
                ),
            ));
        }
        let parent = path.parent().unwrap_or(Path::new("."));
        // Resolved so that reports and errors show plain paths, not `a/../b`.
        let base = parent.canonicalize().unwrap_or_else(|_| parent.to_path_buf());
        run.resolve_paths(&base);
        resolve_modality_paths(rows.iter_mut().flat_map(|r| r.modalities.iter_mut()), &base);
        Ok(Self { run, rows })
    }

    /// [`RunConfig::validate`], then each row: a name that can be a folder's, once; the
    /// same modalities; a model that can be built.
    pub fn validate(&self) -> Result<()> {
        self.run.validate()?;
        let config = |e: Error| Error::Config(format!("config: {e}"));
        for (i, named) in self.rows.iter().enumerate() {
            // Names become folder names: checked before any row trains.
            let length = named.name.chars().count();
            if !(1..=MAX_ROW_NAME_CHARS).contains(&length) {
                return Err(Error::Config(format!(
                    "config: field `compare[{i}].name`: {length} characters (1 to {MAX_ROW_NAME_CHARS})"
                )));
            }
            if self.rows[..i].iter().any(|other| other.name == named.name) {
                return Err(Error::Config(format!(
                    "config: field `compare[{i}].name`: `{}` appears twice",
                    named.name
                )));
            }
            if self.run.task == Task::Contrastive && named.fusion != unfused() {
                return Err(Error::Config(format!(
                    "config: field `compare[{i}].fusion`: a contrastive task has no fusion (a row changes encoders only)"
                )));
            }
            let row = named.applied_to(&self.run);
            let field = format!("compare[{i}].modalities");
            check_modalities(&row.modalities, &field).map_err(config)?;
            if row
                .modalities
                .iter()
                .map(|m| &m.name)
                .ne(self.run.modalities.iter().map(|m| &m.name))
            {
                return Err(Error::Config(format!(
                    "config: field `{field}`: a row may change encoders, not the modalities ({})",
                    self.run.names().join(", ")
                )));
            }
            row.model_config(&self.run.placeholder_outputs(), &row.fusion)?
                .validate()
                .map_err(|e| Error::Config(format!("config: compare[{i}] (`{}`): {e}", named.name)))?;
        }
        Ok(())
    }

    /// The feature extraction asked for: the run's and the rows' features, once each.
    pub fn feature_specs(&self) -> Vec<FeatureSpec> {
        specs_of(
            self.run
                .modalities
                .iter()
                .chain(self.rows.iter().flat_map(|r| r.modalities.iter())),
        )
    }

    /// [`RunConfig::with_fitted_tables`] for the run and every row.
    pub fn with_fitted_tables(&self, manifest: &Manifest) -> Result<Self> {
        let mut rows = self.rows.clone();
        fit_table_columns(
            rows.iter_mut().flat_map(|r| r.modalities.iter_mut()),
            &training_tables(manifest),
        )?;
        Ok(Self {
            run: self.run.with_fitted_tables(manifest)?,
            rows,
        })
    }
}

impl NamedFusion {
    /// The run of this row: `run` with its fusion, and its encoders where it names them.
    pub fn applied_to(&self, run: &RunConfig) -> RunConfig {
        let modalities = if self.modalities.is_empty() {
            run.modalities.clone()
        } else {
            self.modalities.clone()
        };
        RunConfig {
            modalities,
            fusion: self.fusion.clone(),
            ..run.clone()
        }
    }
}

/// Any JSON, read only to refuse an object that gives a key twice.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self, A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
            }
            map.next_value::<UniqueKeys>()?;
            seen.insert(key);
        }
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> std::result::Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> std::result::Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> std::result::Result<Self, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> std::result::Result<Self, E> {
        Ok(UniqueKeys)
    }
}

/// The table cells of `manifest`'s training records.
fn training_tables(manifest: &Manifest) -> Vec<&std::collections::BTreeMap<String, String>> {
    manifest
        .records
        .iter()
        .filter(|r| r.split_or_train() == Split::Train)
        .map(|r| &r.table)
        .collect()
}

/// Fits the statistics of every table feature among `modalities` on `training`'s cells.
fn fit_table_columns<'a>(
    modalities: impl Iterator<Item = &'a mut ModalitySpec>,
    training: &[&std::collections::BTreeMap<String, String>],
) -> Result<()> {
    for m in modalities {
        if let FeatureConfig::Table { columns } = &mut m.features {
            fusion_tabular::fit(columns, training.iter().copied())
                .map_err(|e| Error::Config(format!("modality `{}`: {e}", m.name)))?;
        }
    }
    Ok(())
}

/// Makes the tokenizer and model paths of `modalities` absolute against `base`.
fn resolve_modality_paths<'a>(modalities: impl Iterator<Item = &'a mut ModalitySpec>, base: &Path) {
    for m in modalities {
        if let FeatureConfig::Tokens { tokenizer, .. } = &mut m.features {
            // Beside the configuration, else a fetched model's (`all-MiniLM-L6-v2/tokenizer.json`).
            let fetched = crate::models_dir().map(|d| d.join(&*tokenizer));
            *tokenizer = match fetched {
                Some(path) if !base.join(&*tokenizer).exists() && path.exists() => path,
                _ => absolute(&base.join(&*tokenizer)),
            };
        }
        m.encoder.resolve_paths(base);
    }
}

/// The features `modalities` read, each (name, features) once.
fn specs_of<'a>(modalities: impl Iterator<Item = &'a ModalitySpec>) -> Vec<FeatureSpec> {
    let mut specs: Vec<FeatureSpec> = Vec::new();
    for m in modalities {
        if !specs.iter().any(|s| s.name == m.name && s.config == m.features) {
            specs.push(FeatureSpec {
                name: m.name.clone(),
                config: m.features.clone(),
            });
        }
    }
    specs
}

fn check_modalities(modalities: &[ModalitySpec], field: &str) -> Result<()> {
    for (i, m) in modalities.iter().enumerate() {
        let wanted = m.features.default_name();
        if m.name != wanted {
            return Err(Error::Config(format!(
                "field `{field}[{i}].name`: `{}` but features of kind {} are named `{wanted}`",
                m.name,
                m.features.kind_name()
            )));
        }
        if modalities[..i].iter().any(|o| o.name == m.name) {
            return Err(Error::Config(format!(
                "field `{field}[{i}].name`: `{}` appears twice",
                m.name
            )));
        }
        m.features.validate(&format!("{field}[{i}].features"))?;
        if let Some(augment) = &m.augment {
            let side = m.features.shape().last().copied().unwrap_or(0);
            let images =
                matches!(m.features, FeatureConfig::Image { .. }) && m.encoder.layout() == crate::Layout::Shaped;
            if !images || augment.shift as usize >= side {
                return Err(Error::Config(format!(
                    "field `{field}[{i}].augment`: needs image features [C, H, W] (kind `image`) read by an image \
                     encoder, and a shift below the side ({side})"
                )));
            }
        }
        m.encoder.check(&m.features, &format!("{field}[{i}].encoder"))?;
    }
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"manifest": "m.jsonl",
        "modalities": [{"name": "text", "features": {"kind": "hashed_words", "dim": 8}, "encoder": {"kind": "mlp", "hidden": [4]}}],
        "fusion": {"family": "late", "combiner": "mean"}, "train": {"epochs": 1, "batch_size": 8},
        "compare": [{"name": "early", "fusion": {"family": "early", "method": "concat"}},
                    {"name": "wide", "fusion": {"family": "late", "combiner": "mean"},
                     "modalities": [{"name": "text", "features": {"kind": "hashed_words", "dim": 16}, "encoder": {"kind": "mlp", "hidden": [4]}}]}]}"#;

    #[test]
    fn one_file_holds_a_run_and_its_compare_rows_beside_it() -> Result<()> {
        let path = Path::new("/tmp/compare/c.json");
        let compared = CompareConfig::parse(FILE.as_bytes(), path)?;
        let run = RunConfig::parse(FILE.as_bytes(), path)?;
        assert_eq!(compared.run, run, "`train` reads the same run, without the rows");
        assert_eq!(run.manifest, Path::new("/tmp/compare/m.jsonl"));
        let names: Vec<&str> = compared.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["early", "wide"]);
        compared.validate()?;
        // The rows' features are extracted once each beside the run's.
        let dims: Vec<usize> = compared.feature_specs().iter().map(|s| s.config.dim()).collect();
        assert_eq!(dims, [8, 16]);
        assert_eq!(run.feature_specs().len(), 1);
        let wide = compared.rows[1].applied_to(&run);
        assert_eq!(
            (wide.modalities[0].features.dim(), &wide.fusion),
            (16, &compared.rows[1].fusion)
        );
        assert_eq!(wide.train, run.train);
        Ok(())
    }

    #[test]
    fn a_typo_in_a_row_names_the_row_and_the_field() {
        let typo = FILE.replace(r#""name": "early""#, r#""nmae": "early""#);
        let error = CompareConfig::parse(typo.as_bytes(), Path::new("c.json"))
            .expect_err("a typo")
            .to_string();
        assert!(
            error.contains("field `compare[0].nmae`: unknown field `nmae`") && error.contains("did you mean `name`"),
            "{error}"
        );
        let parse = |text: &str| {
            CompareConfig::parse(text.as_bytes(), Path::new("c.json"))
                .expect_err("refused")
                .to_string()
        };
        // A key given twice is refused where it is, not read as its last value.
        let repeated = parse(&FILE.replace(r#""train": {"epochs": 1,"#, r#""train": {"epochs": 1, "epochs": 2,"#));
        assert!(
            repeated.contains("field `train`: duplicate field `epochs` at line 3"),
            "{repeated}"
        );
        let head = &FILE[..FILE.find(r#""compare""#).expect("a compare list")];
        let not_rows = parse(&format!(r#"{head}"compare": 5}}"#));
        assert!(
            not_rows.contains("field `compare`: invalid type: integer `5`"),
            "{not_rows}"
        );
        let not_a_row = parse(&FILE.replace(r#""compare": ["#, r#""compare": ["row", "#));
        assert!(
            not_a_row.contains("field `compare[0]`: invalid type: string"),
            "{not_a_row}"
        );
        let twice = FILE.replace(r#""name": "wide""#, r#""name": "early""#);
        let error = CompareConfig::parse(twice.as_bytes(), Path::new("c.json"))
            .and_then(|c| c.validate())
            .expect_err("a name twice")
            .to_string();
        assert!(error.contains("`compare[1].name`: `early` appears twice"), "{error}");
    }

    #[test]
    fn table_statistics_are_fitted_into_a_new_configuration_on_the_training_records() -> Result<()> {
        let text = r#"{"manifest": "m.jsonl",
            "modalities": [{"name": "table", "features": {"kind": "table", "columns": [{"kind": "numeric", "name": "age"}]}, "encoder": {"kind": "tabular_mlp", "hidden": [4]}}],
            "fusion": {"family": "late", "combiner": "mean"}, "train": {"epochs": 1, "batch_size": 8},
            "compare": [{"name": "row", "fusion": {"family": "late", "combiner": "mean"},
                         "modalities": [{"name": "table", "features": {"kind": "table", "columns": [{"kind": "numeric", "name": "age"}]}, "encoder": {"kind": "tabular_mlp", "hidden": [8]}}]}]}"#;
        let given = CompareConfig::parse(text.as_bytes(), Path::new("/tmp/c.json"))?;
        let lines = [
            r#"{"id": "a", "label": "x", "split": "train", "table": {"age": 20}}"#,
            r#"{"id": "b", "label": "y", "split": "train", "table": {"age": 40}}"#,
            r#"{"id": "c", "label": "y", "split": "test", "table": {"age": 1000}}"#,
        ];
        let manifest = Manifest::parse_jsonl(
            lines.join("\n").as_bytes(),
            Path::new("/tmp/m.jsonl"),
            fusion_data::PathScope::ManifestFolder,
        );
        let fitted = given.with_fitted_tables(&manifest)?;
        let statistics = |m: &ModalitySpec| match &m.features {
            FeatureConfig::Table { columns } => match &columns[0] {
                fusion_tabular::Column::Numeric { mean, std, .. } => (*mean, *std),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        // Mean and population deviation of the training rows only (20 and 40).
        assert_eq!(statistics(&fitted.run.modalities[0]), (Some(30.0), Some(10.0)));
        assert_eq!(statistics(&fitted.rows[0].modalities[0]), (Some(30.0), Some(10.0)));
        assert_eq!(
            statistics(&given.run.modalities[0]),
            (None, None),
            "the given one is unchanged"
        );
        assert_eq!(fitted.run, given.run.with_fitted_tables(&manifest)?);
        Ok(())
    }
}
