//! The library path from a configuration to its data, and from a trained run to its
//! evaluation: what `fusion extract`, `train`, `eval` and `compare` do, without printing.

use std::path::Path;

use fusion_core::{GroupMetrics, Metrics, TaskMetrics};
use fusion_data::{Extraction, FeatureCache, FeatureSpec, Manifest, Problem, Shard, Split};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::{Error, OnBadFile, Result, Run, RunConfig, SplitData};

/// Batch size of evaluation passes.
pub const EVAL_BATCH: usize = 256;

/// A manifest's records turned into a configuration's features, bad ones listed.
#[derive(Debug)]
pub struct Loaded {
    /// The manifest read (its rejected lines and unknown fields included).
    pub manifest: Manifest,
    /// The features extracted, one column each.
    pub specs: Vec<FeatureSpec>,
    /// Features of the good records; records and files that could not be used.
    pub extraction: Extraction,
}

impl Loaded {
    /// Records left out (a record with several bad files counts once).
    pub fn skipped_records(&self) -> usize {
        let ids: std::collections::HashSet<&str> = self.extraction.problems.iter().map(|p| p.id.as_str()).collect();
        ids.len()
    }
}

/// Loads `manifest` (default: the configuration's) and extracts the configuration's
/// features through its cache (`shard`: one share of the records); `progress` is told the
/// records done and the records to do. Table statistics the configuration lacks are fitted on the manifest's
/// training records first; with `on_bad_file: skip_record`, a record with an unusable file
/// is left out whole.
pub fn load(
    config: &mut RunConfig,
    manifest: Option<&Path>,
    shard: Option<Shard>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Loaded> {
    let path = manifest.unwrap_or(&config.manifest).to_path_buf();
    let manifest = config.load_manifest(Some(&path))?;
    config.fit_tables(&manifest)?;
    let cache = config.cache_folder().map(FeatureCache::new);
    let specs = config.feature_specs();
    let records = manifest.records.len();
    let total = shard.map_or(records, |s| s.share_of(records));
    let mut extraction = fusion_data::extract(&manifest, &specs, cache.as_ref(), shard, &config.limits, &|n| {
        progress(n, total)
    })?;
    if config.on_bad_file == OnBadFile::SkipRecord {
        extraction.skip_records_with_absent_files();
    }
    Ok(Loaded {
        manifest,
        specs,
        extraction,
    })
}

/// The name of a split in files and messages.
pub fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Val => "val",
        Split::Test => "test",
    }
}

/// An evaluation as stored in `eval.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Split evaluated.
    pub split: String,
    /// Mean loss of the task (negative log-likelihood, binary cross-entropy per label, or
    /// squared error of the standardised target).
    pub loss: f64,
    /// Accuracy, ECE, confusion matrix (see [`fusion_core::Evaluation::metrics`] for the
    /// other tasks).
    pub metrics: Metrics,
    /// The task's own metrics (multi-label, regression).
    #[serde(default)]
    pub task: TaskMetrics,
    /// Per-group metrics when records have groups.
    pub groups: Option<GroupMetrics>,
    /// Class names of the confusion matrix.
    pub classes: Vec<String>,
    /// Records left out with the reason.
    pub skipped: Vec<Problem>,
}

impl Run {
    /// Evaluates the run's best weights on `data` (of `split`, over `classes`) and writes
    /// `eval.json`. No record with a usable label is an error.
    pub fn evaluate(&self, data: &SplitData, classes: &[String], split: &str, device: Device) -> Result<EvalRecord> {
        let (model, _vs) = self.model(device)?;
        let evaluation = fusion_core::evaluate(&model, &data.data, EVAL_BATCH)?;
        let record = EvalRecord {
            split: split.to_string(),
            loss: evaluation.loss,
            metrics: evaluation.metrics,
            task: evaluation.task,
            groups: evaluation.groups,
            classes: classes.to_vec(),
            skipped: data.problems.clone(),
        };
        if record.metrics.count == 0 {
            return Err(Error::Config(format!(
                "no {split} record has a label the run can use ({}): nothing to evaluate",
                classes.join(", ")
            )));
        }
        self.write_json("eval.json", &record)?;
        Ok(record)
    }
}

/// A run's outputs for every usable record of loaded data.
#[derive(Debug)]
pub struct Predicted {
    /// The run's configuration.
    pub config: RunConfig,
    /// The run's outputs (the probabilities' columns): classes, tags, or `value`.
    pub classes: Vec<String>,
    /// The records and features the prediction read.
    pub loaded: Loaded,
    /// Index into `loaded.extraction.records` of each prediction.
    pub records: Vec<usize>,
    /// Scores of each prediction (see [`fusion_core::FusionOutput::scores`]).
    pub probabilities: Vec<Vec<f32>>,
    /// The extraction column of each of the run's modalities.
    pub columns: Vec<usize>,
}

impl Run {
    /// The run's best weights on every usable record of `loaded` (read with the run's
    /// configuration `config`), whatever their labels; frozen encoders' outputs come from
    /// the cache as in an evaluation.
    pub fn predict_loaded(&self, config: RunConfig, loaded: Loaded, device: Device) -> Result<Predicted> {
        let classes = self.classes()?;
        let columns = config.columns(&loaded.specs)?;
        let extraction = &loaded.extraction;
        let (records, probabilities) = if extraction.records.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let (model, _vs) = self.model(device)?;
            let all: Vec<usize> = (0..extraction.records.len()).collect();
            let data = crate::prediction_dataset(&config, extraction, &loaded.specs, &all, &classes, device)?;
            let evaluation = fusion_core::evaluate(&model, &data.data, EVAL_BATCH)?;
            (data.records, evaluation.probabilities)
        };
        Ok(Predicted {
            config,
            classes,
            loaded,
            records,
            probabilities,
            columns,
        })
    }
}
