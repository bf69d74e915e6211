//! The library path from a configuration to its data, and from a trained run to its
//! evaluation: what `fusion extract`, `train`, `eval` and `compare` do, without printing.

use std::path::Path;

use fusion_core::{FusionModel, GroupMetrics, Metrics, TaskMetrics};
use fusion_data::{Extraction, FeatureCache, FeatureSpec, Manifest, Problem, Shard};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::{CompareConfig, Error, Observer, OnBadFile, Result, Run, RunConfig, SplitData};

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
    /// The share of the manifest's records extracted, when not all of them.
    pub shard: Option<Shard>,
}

impl Loaded {
    /// Records considered: the manifest's, or the shard's share of them.
    pub fn considered(&self) -> usize {
        let records = self.manifest.records.len();
        self.shard.map_or(records, |s| s.share_of(records))
    }

    /// Records left out (a record with several bad files counts once).
    pub fn skipped_records(&self) -> usize {
        let ids: std::collections::HashSet<&str> = self.extraction.problems.iter().map(|p| p.id.as_str()).collect();
        ids.len()
    }
}

/// Loads `manifest` (default: the configuration's) and extracts the configuration's
/// features through its cache (`shard`: one share of the records); `observer` is told the
/// records done and the records to do, then what was loaded. Returns the configuration
/// with the table statistics it lacked fitted on the manifest's training records (what
/// training reads, see [`RunConfig::with_fitted_tables`]) and the data. With
/// `on_bad_file: skip_record`, a record with an unusable file is left out whole.
pub fn load(
    config: &RunConfig,
    manifest: Option<&Path>,
    shard: Option<Shard>,
    observer: &dyn Observer,
) -> Result<(RunConfig, Loaded)> {
    let path = manifest.unwrap_or(&config.manifest).to_path_buf();
    let manifest = config.load_manifest(Some(&path))?;
    let config = config.with_fitted_tables(&manifest)?;
    let specs = config.feature_specs();
    let loaded = extract(&config, manifest, specs, shard, observer)?;
    Ok((config, loaded))
}

/// [`load`] for a configuration with its compare rows: the rows' features too, once each,
/// and the rows' table statistics fitted.
pub fn load_compared(
    config: &CompareConfig,
    shard: Option<Shard>,
    observer: &dyn Observer,
) -> Result<(CompareConfig, Loaded)> {
    let manifest = config.run.load_manifest(None)?;
    let config = config.with_fitted_tables(&manifest)?;
    let specs = config.feature_specs();
    let loaded = extract(&config.run, manifest, specs, shard, observer)?;
    Ok((config, loaded))
}

/// The features `specs` of `manifest`'s records, as `config` reads files (its cache,
/// limits and what a bad file costs).
fn extract(
    config: &RunConfig,
    manifest: fusion_data::Manifest,
    specs: Vec<FeatureSpec>,
    shard: Option<Shard>,
    observer: &dyn Observer,
) -> Result<Loaded> {
    let cache = config.cache_folder().map(FeatureCache::new);
    let records = manifest.records.len();
    let total = shard.map_or(records, |s| s.share_of(records));
    let mut extraction = fusion_data::extract(&manifest, &specs, cache.as_ref(), shard, &config.limits, &|n| {
        observer.features(n, total)
    })?;
    if config.on_bad_file == OnBadFile::SkipRecord {
        extraction.skip_records_with_absent_files();
    }
    let loaded = Loaded {
        manifest,
        specs,
        extraction,
        shard,
    };
    observer.loaded(&loaded);
    Ok(loaded)
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
    /// What calibration did, when the run or ensemble is calibrated (the metrics above are
    /// then of the calibrated probabilities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::CalibratedEval>,
    /// How a regression's conformal intervals covered the split, when it has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<crate::IntervalEval>,
    /// The task's metric, calibration and modalities' contributions per group, when
    /// records have groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness: Option<crate::Fairness>,
    /// What a multi-label run's per-label temperatures did (the metrics above are then of
    /// the calibrated probabilities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_calibration: Option<crate::LabelCalibratedEval>,
}

impl Run {
    /// Evaluates the run's best weights on `data` (of `split`, over `classes`) and writes
    /// `eval.json`. No record with a usable label is an error.
    pub fn evaluate(&self, data: &SplitData, classes: &[String], split: &str, device: Device) -> Result<EvalRecord> {
        let (model, _vs) = self.model(device)?;
        let record = eval_record(&model, data, classes, split)?;
        self.write_json("eval.json", &record)?;
        Ok(record)
    }
}

/// `model` evaluated on `data` (of `split`, over `classes`). No record with a usable label
/// is an error.
pub(crate) fn eval_record(
    model: &FusionModel,
    data: &SplitData,
    classes: &[String],
    split: &str,
) -> Result<EvalRecord> {
    let evaluation = fusion_core::evaluate(model, &data.data, EVAL_BATCH)?;
    let mut record = record_of(&evaluation, data, classes, split)?;
    record.fairness = crate::fairness::of_evaluation(model, &evaluation, &data.data)?;
    Ok(record)
}

/// The record of an `evaluation` of `data` (of `split`, over `classes`).
pub(crate) fn record_of(
    evaluation: &fusion_core::Evaluation,
    data: &SplitData,
    classes: &[String],
    split: &str,
) -> Result<EvalRecord> {
    let record = EvalRecord {
        split: split.to_string(),
        loss: evaluation.loss,
        metrics: evaluation.metrics.clone(),
        task: evaluation.task.clone(),
        groups: evaluation.groups.clone(),
        classes: classes.to_vec(),
        skipped: data.problems.clone(),
        calibration: None,
        intervals: None,
        fairness: None,
        label_calibration: None,
    };
    if record.metrics.count == 0 {
        return Err(Error::Config(format!(
            "no {split} record has a label the run can use ({}): nothing to evaluate",
            classes.join(", ")
        )));
    }
    Ok(record)
}
