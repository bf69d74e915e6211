//! A trained model in a folder (one run, or an ensemble of runs) loaded once, then
//! evaluated and predicted through one path: `fusion eval` and `fusion predict`, a Rust
//! application's [`Predictor::predict`] and a server all come here.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use fusion_core::{FusionModel, Task};
use fusion_data::{Extraction, FeatureSpec, Manifest, Problem, Record, Split};
use serde::Serialize;
use tch::{Device, nn};

use crate::{
    Calibration, EVAL_BATCH, EnsembleFile, Error, EvalRecord, Loaded, Result, Run, RunConfig, SplitData, decision,
    describe, is_ensemble,
};

/// What a long library call tells its caller as it goes. Every method does nothing unless
/// overridden; `()` observes nothing.
pub trait Observer: Sync {
    /// `done` of `total` records' features extracted.
    fn features(&self, _done: usize, _total: usize) {}
    /// A manifest read and its features extracted (its rejected lines, unusable files and
    /// skipped records are in `loaded`).
    fn loaded(&self, _loaded: &Loaded) {}
    /// Training begins: `epochs` epochs of `steps` steps each.
    fn training(&self, _epochs: usize, _steps: usize) {}
    /// A training step or epoch done.
    fn progress(&self, _progress: &fusion_core::Progress<'_>) {}
    /// Training ended.
    fn trained(&self) {}
    /// A step worth a line of its own.
    fn step(&self, _text: &str) {}
    /// Something the caller should know, such as a record left out of a split.
    fn warn(&self, _text: &str) {}
}

impl Observer for () {}

/// One record's prediction: a line of `fusion predict`'s output, and what
/// [`Predictor::predict`] returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The record.
    pub id: String,
    /// The most probable class, the `;`-joined labels at or above the threshold
    /// (multi-label), or the number (regression).
    pub prediction: String,
    /// The predicted class's probability (classification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// Every class's (or label's) probability; a regression's number as `value`.
    pub probabilities: BTreeMap<String, f32>,
    /// The conformal prediction set, most probable first (with a coverage asked for; see
    /// [`Predictor::with_coverage`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<Vec<String>>,
    /// The record's label, when it has one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub label: String,
    /// The run's modalities the record lacks (one run; an ensemble's members may differ).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<String>>,
    /// Files of the record that could not be used (their modality is in `missing`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unusable: Vec<String>,
    /// A regression's conformal interval `[low, high]` (with a coverage asked for; an
    /// unbounded end is null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
    /// How many members of an ensemble predicted the record (their weights renormalised).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<usize>,
    /// A contrastive run's embedding of each modality the record has (unit vectors; its
    /// prediction is empty and it has no probabilities).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<BTreeMap<String, Vec<f32>>>,
    /// The scores in the order of [`Predictor::outputs`] (see
    /// [`fusion_core::FusionOutput::scores`]).
    #[serde(skip)]
    pub scores: Vec<f32>,
}

impl Prediction {
    /// The prediction of record `id` (labelled `label`, empty when unknown) from a
    /// `task`'s `scores` over `outputs`.
    pub fn new(id: &str, label: &str, task: Task, outputs: &[String], scores: Vec<f32>) -> Self {
        Self {
            id: id.to_string(),
            prediction: decision(task, outputs, &scores),
            confidence: (task == Task::Classification).then(|| scores[fusion_core::argmax(&scores)]),
            // A contrastive run's scores are embeddings, not one per output.
            probabilities: match task {
                Task::Contrastive => BTreeMap::new(),
                _ => outputs.iter().cloned().zip(scores.iter().copied()).collect(),
            },
            set: None,
            interval: None,
            label: label.to_string(),
            missing: None,
            unusable: Vec::new(),
            members: None,
            embeddings: None,
            scores,
        }
    }

    /// The prediction of a contrastive run's record: its `scores`, every modality's
    /// embedding one after another (`names` in order), split into the modalities it has.
    fn embedded(mut self, names: &[String]) -> Self {
        let dim = self.scores.len() / names.len().max(1);
        let missing = self.missing.clone().unwrap_or_default();
        self.embeddings = Some(
            names
                .iter()
                .zip(self.scores.chunks(dim.max(1)))
                .filter(|(name, _)| !missing.contains(name))
                .map(|(name, values)| (name.clone(), values.to_vec()))
                .collect(),
        );
        self
    }
}

/// The predictions of a manifest's records.
#[derive(Debug, Clone)]
pub struct Predictions {
    /// One per record the model could read, in the manifest's order.
    pub predictions: Vec<Prediction>,
    /// Why records could not be predicted: one run's every problem (a record may have
    /// several), an ensemble's first problem of each record no member could read.
    pub errors: Vec<Problem>,
    /// Records left out.
    pub skipped: usize,
}

/// Reads records into a [`Predictor`]'s features (see [`Predictor::preparer`]); holds no
/// model, so it can be cloned onto other threads.
#[derive(Debug, Clone)]
pub struct Preparer {
    /// Per member: its features, ready to extract, and what a bad file costs.
    members: std::sync::Arc<Vec<(fusion_data::Extractor, crate::OnBadFile)>>,
}

impl Preparer {
    /// Reads and decodes `records`' files within the runs' limits, each member's features
    /// computed as in training (without the cache). A file that cannot be used leaves its
    /// modality absent, said in [`Prepared::problems`].
    pub fn prepare(&self, records: &[Record]) -> Result<Prepared> {
        let manifest = Manifest {
            path: PathBuf::from("(records)"),
            records: records.to_vec(),
            ..Manifest::default()
        };
        let members = self
            .members
            .iter()
            .map(|(extractor, on_bad_file)| {
                let mut extraction = extractor.extract(&manifest, None, None, &|_| {})?;
                // As when the run reads a manifest.
                if *on_bad_file == crate::OnBadFile::SkipRecord {
                    extraction.skip_records_with_absent_files();
                }
                Ok(Loaded {
                    manifest: manifest.clone(),
                    specs: extractor.specs().to_vec(),
                    extraction,
                    shard: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Prepared {
            records: records.len(),
            members,
        })
    }

    /// The modalities read, with their features: the first run's (every run's, for an
    /// ensemble, in order of first appearance).
    pub fn modalities(&self) -> Vec<&FeatureSpec> {
        let mut seen: Vec<&FeatureSpec> = Vec::new();
        for spec in self.members.iter().flat_map(|(e, _)| e.specs()) {
            if !seen.iter().any(|s| s.name == spec.name) {
                seen.push(spec);
            }
        }
        seen
    }

    /// The runs' limits on what a record's files may hold (the first run's: an ensemble's
    /// members are checked to share one dataset, not one configuration).
    pub fn limits(&self) -> &fusion_data::Limits {
        self.members[0].0.limits()
    }
}

/// Records read into every member's features by a [`Preparer`], ready for
/// [`Predictor::predict_prepared`].
#[derive(Debug)]
pub struct Prepared {
    records: usize,
    pub(crate) members: Vec<Loaded>,
}

/// Joins a group's index to a record id while groups share one pass (ids cannot hold it:
/// manifests are text and the character is a control one).
const GROUP_MARK: char = '\u{1f}';

impl Prepared {
    /// Records handed to [`Preparer::prepare`].
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether no record was handed.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Files that could not be used (their modality is absent for their record) and records
    /// with no usable modality, as every member read them (each problem once).
    pub fn problems(&self) -> Vec<&Problem> {
        let mut seen = std::collections::HashSet::new();
        self.members
            .iter()
            .flat_map(|m| m.extraction.problems.iter().chain(&m.extraction.absent))
            .filter(|p| seen.insert((&p.id, &p.modality, &p.path)))
            .collect()
    }

    /// Member `m`'s extractions of `groups` as one, each record id tagged with its group.
    fn merged(groups: &[&Prepared], m: usize) -> Loaded {
        let first = &groups[0].members[m];
        let mut manifest = Manifest {
            path: first.manifest.path.clone(),
            ..Manifest::default()
        };
        let mut extraction = Extraction {
            features: vec![Vec::new(); first.specs.len()],
            keys: vec![Vec::new(); first.specs.len()],
            ..Extraction::default()
        };
        let tag = |group: usize, id: &str| format!("{group}{GROUP_MARK}{id}");
        for (group, prepared) in groups.iter().enumerate() {
            let part = &prepared.members[m];
            manifest.records.extend(part.manifest.records.iter().map(|r| Record {
                id: tag(group, &r.id),
                ..r.clone()
            }));
            extraction
                .records
                .extend(part.extraction.records.iter().map(|r| Record {
                    id: tag(group, &r.id),
                    ..r.clone()
                }));
            for (all, these) in extraction.features.iter_mut().zip(&part.extraction.features) {
                all.extend(these.iter().cloned());
            }
            for (all, these) in extraction.keys.iter_mut().zip(&part.extraction.keys) {
                all.extend(these.iter().cloned());
            }
            let tagged = |p: &Problem| Problem {
                id: tag(group, &p.id),
                ..p.clone()
            };
            extraction.problems.extend(part.extraction.problems.iter().map(tagged));
            extraction.absent.extend(part.extraction.absent.iter().map(tagged));
        }
        Loaded {
            manifest,
            specs: first.specs.clone(),
            extraction,
            shard: None,
        }
    }

    /// Removes the group tag from the start of `text` (a record id, or a problem's
    /// description); returns the group (0 for text without one).
    fn untag(text: &mut String) -> usize {
        let Some((group, rest)) = text.split_once(GROUP_MARK) else {
            return 0;
        };
        let Ok(group) = group.parse() else { return 0 };
        *text = rest.to_string();
        group
    }
}

/// One run of the folder, its model built once.
#[derive(Debug)]
pub(crate) struct LoadedRun {
    run: Run,
    pub(crate) config: RunConfig,
    pub(crate) classes: Vec<String>,
    pub(crate) model: FusionModel,
    weight: f64,
    pub(crate) vs: nn::VarStore,
}

/// A regression run's predicted and true values on the labelled records of a split.
struct SplitValues {
    predicted: Vec<f64>,
    targets: Vec<f64>,
    groups: Option<Vec<String>>,
}

impl SplitValues {
    fn of(model: &FusionModel, data: SplitData) -> Result<Self> {
        let evaluation = fusion_core::evaluate(model, &data.data, EVAL_BATCH)?;
        Self::from_evaluation(&evaluation, data)
    }

    /// The values of an `evaluation` of `data`.
    fn from_evaluation(evaluation: &fusion_core::Evaluation, data: SplitData) -> Result<Self> {
        let targets = Vec::<f64>::try_from(
            data.data
                .labels
                .to_kind(tch::Kind::Double)
                .to_device(Device::Cpu)
                .reshape([-1]),
        )
        .map_err(fusion_core::Error::from)?;
        Ok(Self {
            predicted: evaluation.probabilities.iter().map(|p| f64::from(p[0])).collect(),
            targets,
            groups: data.data.groups,
        })
    }
}

/// One run's outputs on the labelled records of a split.
struct SplitScores {
    ids: Vec<String>,
    labels: Vec<usize>,
    groups: Option<Vec<String>>,
    probabilities: Vec<Vec<f32>>,
    skipped: Vec<Problem>,
}

impl LoadedRun {
    fn load(run: Run, weight: f64, device: Device) -> Result<Self> {
        let (model, vs) = run.model(device)?;
        Ok(Self {
            config: run.config()?,
            classes: run.classes()?,
            run,
            model,
            weight,
            vs,
        })
    }

    /// Every usable record of `loaded` (read with this run's configuration) through the
    /// best weights, whatever its label; frozen encoders' outputs come from the cache as
    /// in an evaluation.
    fn predict(&self, loaded: &Loaded) -> Result<Predictions> {
        let extraction = &loaded.extraction;
        let columns = self.config.columns(&loaded.specs)?;
        let mut predictions = Vec::new();
        if !extraction.records.is_empty() {
            let all: Vec<usize> = (0..extraction.records.len()).collect();
            let device = self.model.device();
            let data = crate::prediction_dataset(&self.config, extraction, &loaded.specs, &all, &self.classes, device)?;
            // A contrastive run's scores are its embeddings: no N × N retrieval over them.
            let scores: Vec<Vec<f32>> = match self.config.task {
                Task::Contrastive => {
                    Vec::<Vec<f32>>::try_from(fusion_core::embed(&self.model, &data.data, EVAL_BATCH)?.flatten(1, -1))
                        .map_err(fusion_core::Error::from)?
                }
                _ => fusion_core::evaluate(&self.model, &data.data, EVAL_BATCH)?.probabilities,
            };
            for (&i, scores) in data.records.iter().zip(scores) {
                let record = &extraction.records[i];
                let prediction = Prediction {
                    // As the model saw it: a video without sound lacks `sound_track`.
                    missing: Some(
                        self.config
                            .modalities
                            .iter()
                            .zip(&columns)
                            .filter(|(_, c)| extraction.features[**c][i].is_none())
                            .map(|(spec, _)| spec.name.clone())
                            .collect(),
                    ),
                    unusable: extraction
                        .absent
                        .iter()
                        .filter(|p| p.id == record.id)
                        .map(describe)
                        .collect(),
                    ..Prediction::new(&record.id, &record.label, self.config.task, &self.classes, scores)
                };
                predictions.push(match self.config.task {
                    Task::Contrastive => prediction.embedded(self.model.modality_names()),
                    _ => prediction,
                });
            }
        }
        Ok(Predictions {
            predictions,
            errors: extraction.problems.clone(),
            skipped: loaded.skipped_records(),
        })
    }

    fn split_values(&self, manifest: Option<&Path>, split: Split, observer: &dyn Observer) -> Result<SplitValues> {
        let (data, _) = self.run.split(manifest, split, self.model.device(), observer)?;
        SplitValues::of(&self.model, data)
    }

    fn split_scores(&self, manifest: Option<&Path>, split: Split, observer: &dyn Observer) -> Result<SplitScores> {
        let (data, loaded) = self.run.split(manifest, split, self.model.device(), observer)?;
        let evaluation = fusion_core::evaluate(&self.model, &data.data, EVAL_BATCH)?;
        // The records of this split left out: unknown labels, and unreadable records.
        let in_split: std::collections::HashSet<&str> = loaded
            .manifest
            .records
            .iter()
            .filter(|r| r.split_or_train() == split)
            .map(|r| r.id.as_str())
            .collect();
        let mut skipped = data.problems;
        skipped.extend(
            loaded
                .extraction
                .problems
                .iter()
                .filter(|p| in_split.contains(p.id.as_str()))
                .cloned(),
        );
        Ok(SplitScores {
            ids: data
                .records
                .iter()
                .map(|&i| loaded.extraction.records[i].id.clone())
                .collect(),
            labels: evaluation.labels,
            groups: data.data.groups,
            probabilities: evaluation.probabilities,
            skipped,
        })
    }
}

impl Run {
    /// The run's dataset of `split` from `manifest` (default: the run's), with the data it
    /// was read from (see [`Run::split_of`]).
    pub fn split(
        &self,
        manifest: Option<&Path>,
        split: Split,
        device: Device,
        observer: &dyn Observer,
    ) -> Result<(SplitData, Loaded)> {
        let (_, loaded) = crate::load(&self.config()?, manifest, None, observer)?;
        Ok((self.split_of(&loaded, split, device, observer)?, loaded))
    }

    /// The run's dataset of `split` of `loaded` (read with the run's configuration). No
    /// usable record of the split, or none with one of the run's labels, is an error;
    /// records left out are told to `observer`.
    pub fn split_of(
        &self,
        loaded: &Loaded,
        split: Split,
        device: Device,
        observer: &dyn Observer,
    ) -> Result<SplitData> {
        let config = self.config()?;
        let classes = self.classes()?;
        let path = loaded.manifest.path.display();
        if loaded.extraction.split_indices(split).is_empty() {
            return Err(Error::Config(format!("{path}: no usable `{}` records", split.name())));
        }
        let data = crate::split_dataset(&config, &loaded.extraction, &loaded.specs, split, &classes, device)?;
        for problem in &data.problems {
            observer.warn(&format!("skipped record {}", describe(problem)));
        }
        if data.records.is_empty() {
            return Err(Error::Config(format!(
                "{path}: no `{}` record has one of the run's labels",
                split.name()
            )));
        }
        Ok(data)
    }
}

/// A trained model loaded from its folder: one run, or an ensemble of runs (the weighted
/// mean of its members' probabilities).
#[derive(Debug)]
pub struct Predictor {
    root: PathBuf,
    ensemble: Option<EnsembleFile>,
    classes: Vec<String>,
    task: Task,
    members: Vec<LoadedRun>,
    calibration: Option<Calibration>,
    /// A multi-label run's temperature per label.
    label_calibration: Option<crate::LabelCalibration>,
    /// A regression's conformal intervals.
    intervals: Option<crate::Intervals>,
    coverage: Option<f64>,
}

impl Predictor {
    /// Loads the run or ensemble folder `folder` on `device` (an ensemble's members with a
    /// weight).
    pub fn load(folder: impl AsRef<Path>, device: Device) -> Result<Self> {
        let root = folder.as_ref().to_path_buf();
        if !is_ensemble(&root) {
            let run = LoadedRun::load(Run::new(&root), 1.0, device)?;
            // Calibration scales class probabilities; a regression has intervals instead.
            let calibration = match run.config.task {
                Task::Classification => Calibration::read(&root)?,
                _ => None,
            };
            let intervals = match run.config.task {
                Task::Regression => crate::Intervals::read(&root)?,
                _ => None,
            };
            let label_calibration = match run.config.task {
                Task::MultiLabel => crate::LabelCalibration::read(&root, &run.classes)?,
                _ => None,
            };
            return Ok(Self {
                classes: run.classes.clone(),
                task: run.config.task,
                members: vec![run],
                ensemble: None,
                calibration,
                label_calibration,
                intervals,
                coverage: None,
                root,
            });
        }
        let file = EnsembleFile::read(&root)?;
        let members = file
            .members
            .iter()
            .filter(|m| m.weight > 0.0)
            .map(|m| LoadedRun::load(Run::new(&m.run), m.weight, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            classes: file.classes.clone(),
            task: Task::Classification,
            members,
            ensemble: Some(file),
            calibration: Calibration::read(&root)?,
            label_calibration: None,
            intervals: None,
            coverage: None,
            root,
        })
    }

    /// Predictions also carry a conformal prediction set holding the label (or, for a
    /// regression, an interval holding the value) with probability at least `coverage`
    /// (in (0, 1)); needs a calibrated folder.
    pub fn with_coverage(mut self, coverage: f64) -> Result<Self> {
        if !(coverage > 0.0 && coverage < 1.0) {
            return Err(Error::Config(format!("coverage {coverage}: a number between 0 and 1")));
        }
        if self.task == Task::MultiLabel {
            return Err(Error::Config(
                "coverage: conformal sets are for a classification, intervals for a regression; a multi-label run has neither".into(),
            ));
        }
        if self.calibration.is_none() && self.intervals.is_none() {
            let what = match self.task {
                Task::Regression => "intervals come from its held-out residuals",
                _ => "prediction sets come from its calibration",
            };
            return Err(Error::Config(format!(
                "{} is not calibrated: {what} (`fusion calibrate --run {}`)",
                self.root.display(),
                self.root.display()
            )));
        }
        self.coverage = Some(coverage);
        Ok(self)
    }

    /// The calibration applied, when the folder has one.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// A regression's conformal intervals, when fitted.
    pub fn intervals(&self) -> Option<&crate::Intervals> {
        self.intervals.as_ref()
    }

    /// Fits a regression run's conformal intervals on the val split of `manifest`
    /// (default: the run's) and writes them into the folder (`intervals.json`); from then
    /// on `evaluate` reports their coverage and, with a coverage asked for, predictions
    /// carry an `interval`.
    pub fn fit_intervals(&mut self, manifest: Option<&Path>, observer: &dyn Observer) -> Result<crate::Intervals> {
        let (None, [run], Task::Regression) = (&self.ensemble, self.members.as_slice(), self.task) else {
            return Err(Error::Config(format!(
                "conformal intervals are a regression run's; {} is a {} {}",
                self.root.display(),
                self.task.name(),
                if self.ensemble.is_some() { "ensemble" } else { "run" }
            )));
        };
        let values = run.split_values(manifest, Split::Val, observer)?;
        if values.targets.is_empty() {
            return Err(Error::Config(format!(
                "{}: no val record with a number to fit intervals on",
                self.root.display()
            )));
        }
        if let Some(k) = (0..values.targets.len()).find(|&k| !(values.predicted[k] - values.targets[k]).is_finite()) {
            return Err(Error::Config(format!(
                "{}: val record {} has no finite residual (predicted {}, target {}): the model cannot be calibrated",
                self.root.display(),
                k + 1,
                values.predicted[k],
                values.targets[k]
            )));
        }
        let intervals = crate::Intervals::fit(&values.predicted, &values.targets, "val");
        Run::new(&self.root).write_json(crate::INTERVALS_FILE, &intervals)?;
        self.intervals = Some(intervals.clone());
        Ok(intervals)
    }

    /// Fits a calibration on the val split of `manifest` (default: the run's) to the
    /// model's own probabilities and writes it into the folder (`calibration.json`), from
    /// where every later evaluation and prediction applies it. Classification only.
    pub fn calibrate(&mut self, manifest: Option<&Path>, observer: &dyn Observer) -> Result<Calibration> {
        if self.task != Task::Classification {
            return Err(Error::Config(format!(
                "calibration scales class probabilities: a {} run is not calibrated",
                self.task.name()
            )));
        }
        if let Some(file) = self.ensemble.as_ref().filter(|f| f.selected_on != "val") {
            return Err(Error::Config(format!(
                "{}: its members trained on the val records too (weights selected on {}): no held-out split to calibrate on",
                self.root.display(),
                file.selected_on
            )));
        }
        let scores = self.split_scores(manifest, Split::Val, observer)?;
        let calibration = Calibration::fit(&scores.probabilities, &scores.labels, self.classes.len(), "val");
        Run::new(&self.root).write_json(crate::CALIBRATION_FILE, &calibration)?;
        self.calibration = Some(calibration.clone());
        Ok(calibration)
    }

    /// Fits a temperature per label of a multi-label run on the val split of `manifest`
    /// (default: the run's) and writes it into the folder (`label_calibration.json`), from
    /// where `eval`, `predict` and applications apply it.
    pub fn calibrate_labels(
        &mut self,
        manifest: Option<&Path>,
        observer: &dyn Observer,
    ) -> Result<crate::LabelCalibration> {
        let (Task::MultiLabel, [run]) = (self.task, self.members.as_slice()) else {
            return Err(Error::Config(format!(
                "per-label temperatures are for a multi-label run, not a {}",
                self.task.name()
            )));
        };
        let (data, _) = run.run.split(manifest, Split::Val, run.model.device(), observer)?;
        if data.records.is_empty() {
            return Err(Error::Config("no val record to calibrate on".into()));
        }
        let evaluation = fusion_core::evaluate(&run.model, &data.data, EVAL_BATCH)?;
        let truths = fusion_core::label_states(&data.data.labels)?;
        let calibration = crate::LabelCalibration::fit(&evaluation.probabilities, &truths, &self.classes, "val");
        Run::new(&self.root).write_json(crate::LABEL_CALIBRATION_FILE, &calibration)?;
        self.label_calibration = Some(calibration.clone());
        Ok(calibration)
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The outputs in the scores' order: classes, tags, or `value`.
    pub fn outputs(&self) -> &[String] {
        &self.classes
    }

    /// The task.
    pub fn task(&self) -> Task {
        self.task
    }

    /// The folder's runs (one, or an ensemble's members).
    pub(crate) fn members(&self) -> &[LoadedRun] {
        &self.members
    }

    /// The ensemble's file, when the folder is one.
    pub fn ensemble(&self) -> Option<&EnsembleFile> {
        self.ensemble.as_ref()
    }

    /// One run's model (`None` for an ensemble).
    pub fn model(&self) -> Option<&FusionModel> {
        match (&self.ensemble, self.members.as_slice()) {
            (None, [run]) => Some(&run.model),
            _ => None,
        }
    }

    /// Predicts `records` from their raw files (features computed as in training, without
    /// the cache). A record whose file cannot be read or decoded is an error naming it.
    pub fn predict(&self, records: &[Record]) -> Result<Vec<Prediction>> {
        let prepared = self.preparer()?.prepare(records)?;
        // Here every file counts: a caller handing records expects each used as given.
        if let Some(problem) = prepared.problems().first() {
            return Err(Error::Record(describe(problem)));
        }
        Ok(self.predict_prepared(&[&prepared])?.remove(0).predictions)
    }

    /// What reads records into this model's features (every member's), without the model:
    /// a server decodes requests with it on many threads while one thread predicts. Loads
    /// tokenizers and log-mel filters once, for every record it prepares.
    pub fn preparer(&self) -> Result<Preparer> {
        let members = self
            .members
            .iter()
            .map(|m| {
                let extractor = fusion_data::Extractor::new(&m.config.feature_specs(), &m.config.limits)?;
                Ok((extractor, m.config.on_bad_file))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Preparer {
            members: std::sync::Arc::new(members),
        })
    }

    /// Predicts several prepared groups of records in one pass through each member (the
    /// groups' record ids may repeat one another); one [`Predictions`] per group, in
    /// order. A record with an unusable file is predicted without that modality (its
    /// `unusable` says which), one with no usable modality is in its group's `errors`.
    pub fn predict_prepared(&self, groups: &[&Prepared]) -> Result<Vec<Predictions>> {
        if let Some(group) = groups.iter().find(|g| g.members.len() != self.members.len()) {
            return Err(Error::Config(format!(
                "records prepared for {} runs, this folder has {}",
                group.members.len(),
                self.members.len()
            )));
        }
        let each = self
            .members
            .iter()
            .enumerate()
            .map(|(m, member)| member.predict(&Prepared::merged(groups, m)))
            .collect::<Result<Vec<_>>>()?;
        let all = self.finish(self.combine(each)?);
        let mut split: Vec<Predictions> = groups
            .iter()
            .map(|_| Predictions {
                predictions: Vec::new(),
                errors: Vec::new(),
                skipped: 0,
            })
            .collect();
        for mut p in all.predictions {
            let group = Prepared::untag(&mut p.id);
            // `unusable` describes problems by their (tagged) record id.
            for text in &mut p.unusable {
                Prepared::untag(text);
            }
            split[group].predictions.push(p);
        }
        for mut problem in all.errors {
            let group = Prepared::untag(&mut problem.id);
            split[group].errors.push(problem);
        }
        for (group, predictions) in groups.iter().zip(&mut split) {
            // Records with no usable modality, once each.
            let mut ids: Vec<&str> = predictions.errors.iter().map(|p| p.id.as_str()).collect();
            ids.dedup();
            predictions.skipped = ids.len();
            debug_assert!(predictions.predictions.len() + predictions.skipped <= group.len());
        }
        Ok(split)
    }

    /// Exact per-modality Shapley values of the predictions of `prepared` (one run's model,
    /// before any calibration; records with no usable modality are left out). An ensemble
    /// has none: its members may differ in their modalities.
    pub fn explain_prepared(&self, prepared: &Prepared) -> Result<fusion_core::ShapleyReport> {
        let (None, [run]) = (&self.ensemble, self.members.as_slice()) else {
            return Err(Error::Config(format!(
                "{} is an ensemble of {} runs: explanations are of one run's modalities",
                self.root.display(),
                self.members.len()
            )));
        };
        let loaded = &prepared.members[0];
        let all: Vec<usize> = (0..loaded.extraction.records.len()).collect();
        let data = crate::prediction_dataset(
            &run.config,
            &loaded.extraction,
            &loaded.specs,
            &all,
            &self.classes,
            run.model.device(),
        )?;
        Ok(fusion_core::shapley_values(&run.model, &data.data, EVAL_BATCH)?)
    }

    /// Predicts every usable record of `manifest` (default: each run's own), its features
    /// read through the cache as training read them.
    pub fn predict_manifest(&self, manifest: Option<&Path>, observer: &dyn Observer) -> Result<Predictions> {
        let each = self
            .members
            .iter()
            .map(|member| member.predict(&crate::load(&member.config, manifest, None, observer)?.1))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.finish(self.combine(each)?))
    }

    /// Calibrated probabilities (and their decision) and conformal sets or intervals,
    /// where asked for.
    fn finish(&self, mut predictions: Predictions) -> Predictions {
        if let (Some(intervals), Some(coverage)) = (&self.intervals, self.coverage) {
            for p in &mut predictions.predictions {
                let (low, high) = intervals.interval(f64::from(p.scores[0]), coverage);
                p.interval = Some([low, high]);
            }
        }
        // A prediction rebuilt from calibrated scores (and their decision), with its set.
        let rebuilt = |p: &mut Prediction, scores: Vec<f32>, set: Option<Vec<String>>| Prediction {
            set,
            missing: p.missing.take(),
            unusable: std::mem::take(&mut p.unusable),
            members: p.members,
            ..Prediction::new(&p.id, &p.label, self.task, &self.classes, scores)
        };
        if let Some(calibration) = &self.label_calibration {
            for p in &mut predictions.predictions {
                *p = rebuilt(p, calibration.apply(&p.scores), None);
            }
        }
        let Some(calibration) = &self.calibration else {
            return predictions;
        };
        for p in &mut predictions.predictions {
            let scores = calibration.apply(&p.scores);
            let set = self.coverage.map(|c| {
                calibration
                    .set(&scores, c)
                    .into_iter()
                    .map(|k| self.classes[k].clone())
                    .collect()
            });
            *p = rebuilt(p, scores, set);
        }
        predictions
    }

    /// One run's predictions as they are; an ensemble's blended record by record.
    fn combine(&self, mut each: Vec<Predictions>) -> Result<Predictions> {
        if self.ensemble.is_none() {
            return Ok(each.remove(0));
        }
        let mut blend = Blend::new();
        let mut errors: HashMap<String, Problem> = HashMap::new();
        for (member, predictions) in self.members.iter().zip(each) {
            for problem in predictions.errors {
                errors.entry(problem.id.clone()).or_insert(problem);
            }
            for p in predictions.predictions {
                blend.add(&p.id, || p.label.clone(), &p.scores, member.weight);
            }
        }
        let predictions: Vec<Prediction> = blend
            .records()
            .map(|(id, label, scores, members)| Prediction {
                members: Some(members),
                ..Prediction::new(id, label, self.task, &self.classes, scores)
            })
            .collect();
        let mut errors: Vec<Problem> = errors
            .into_values()
            .filter(|p| !blend.entries.contains_key(&p.id))
            .collect();
        errors.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Predictions {
            predictions,
            skipped: errors.len(),
            errors,
        })
    }

    /// Evaluates the model on `split` of `manifest` (default: each run's own) and writes
    /// `eval.json` into the folder. An ensemble evaluates every record some member
    /// predicts, with the weights of the members that did renormalised.
    pub fn evaluate(&self, manifest: Option<&Path>, split: Split, observer: &dyn Observer) -> Result<EvalRecord> {
        let record = match (&self.ensemble, &self.calibration) {
            (None, None) => {
                let run = &self.members[0];
                let (data, loaded) = run.run.split(manifest, split, run.model.device(), observer)?;
                // One pass through the model serves the metrics and the intervals.
                let evaluation = fusion_core::evaluate(&run.model, &data.data, EVAL_BATCH)?;
                let mut record = crate::evaluation::record_of(&evaluation, &data, &self.classes, split.name())?;
                // Per-label temperatures change the probabilities every group is judged on.
                let calibrated = match &self.label_calibration {
                    Some(calibration) => {
                        calibrate_labels(&mut record, calibration, &evaluation, &data.data)?;
                        Some(fusion_core::Evaluation {
                            probabilities: calibration.apply_all(&evaluation.probabilities),
                            ..evaluation.clone()
                        })
                    }
                    None => None,
                };
                record.fairness =
                    crate::fairness::of_evaluation(&run.model, calibrated.as_ref().unwrap_or(&evaluation), &data.data)?;
                if let Some(intervals) = &self.intervals {
                    let values = SplitValues::from_evaluation(&evaluation, data)?;
                    record.intervals =
                        Some(intervals.evaluate(&values.predicted, &values.targets, values.groups.as_deref()));
                }
                record.skipped.extend(loaded.extraction.problems);
                record
            }
            _ => self.evaluate_probabilities(manifest, split, observer)?,
        };
        Run::new(&self.root).write_json("eval.json", &record)?;
        Ok(record)
    }

    /// The model's class probabilities (before any calibration) on the labelled records
    /// of `split`: one run's, or an ensemble's blend of every record some member predicts.
    fn split_scores(&self, manifest: Option<&Path>, split: Split, observer: &dyn Observer) -> Result<SplitScores> {
        if self.ensemble.is_none() {
            return self.members[0].split_scores(manifest, split, observer);
        }
        let mut blend = Blend::new();
        let mut skipped: Vec<Problem> = Vec::new();
        for member in &self.members {
            let scores = member.split_scores(manifest, split, observer)?;
            for (k, id) in scores.ids.iter().enumerate() {
                let label = scores.labels[k];
                let group = scores.groups.as_ref().map(|g| g[k].clone());
                let first = blend.add(id, || (label, group), &scores.probabilities[k], member.weight);
                if first.0 != label {
                    return Err(Error::Config(format!(
                        "record {id} has another label for {} than for the members before it: the members must share one dataset",
                        member.run.root().display()
                    )));
                }
            }
            for p in scores.skipped {
                if !skipped.iter().any(|s| s.id == p.id) {
                    skipped.push(p);
                }
            }
        }
        // A record one member left out but another predicted is evaluated, not skipped.
        skipped.retain(|p| !blend.entries.contains_key(&p.id));
        let (mut ids, mut probabilities, mut labels, mut groups) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, (label, group), averaged, _) in blend.records() {
            ids.push(id.to_string());
            probabilities.push(averaged);
            labels.push(*label);
            groups.extend(group.clone());
        }
        if labels.is_empty() {
            return Err(Error::Config(format!(
                "no {} record is predicted by any member",
                split.name()
            )));
        }
        let groups = (groups.len() == labels.len()).then_some(groups);
        Ok(SplitScores {
            ids,
            labels,
            groups,
            probabilities,
            skipped,
        })
    }

    /// An evaluation computed from class probabilities: an ensemble's, or a calibrated
    /// run's (with the calibration's effect and the conformal sets' coverage).
    fn evaluate_probabilities(
        &self,
        manifest: Option<&Path>,
        split: Split,
        observer: &dyn Observer,
    ) -> Result<EvalRecord> {
        let scores = self.split_scores(manifest, split, observer)?;
        let calibrated = self
            .calibration
            .as_ref()
            .map(|c| c.evaluate(&scores.probabilities, &scores.labels, scores.groups.as_deref()));
        let probabilities = match &self.calibration {
            Some(c) => c.apply_all(&scores.probabilities),
            None => scores.probabilities,
        };
        let (loss, metrics, groups, _) = fusion_core::probability_metrics(
            &probabilities,
            &scores.labels,
            scores.groups.as_deref(),
            self.classes.len(),
        );
        // An ensemble has no one model whose modalities' Shapley values to compare.
        let fairness = scores.groups.as_deref().map(|groups| {
            crate::Fairness::compute(
                &probabilities,
                &crate::fairness::Truth::Classes(&scores.labels),
                groups,
                None,
            )
        });
        Ok(EvalRecord {
            split: split.name().into(),
            loss,
            metrics,
            task: fusion_core::TaskMetrics::Classification,
            groups,
            classes: self.classes.clone(),
            skipped: scores.skipped,
            calibration: calibrated,
            intervals: None,
            fairness,
            label_calibration: None,
        })
    }
}

/// `record`'s multi-label metrics recomputed from label-calibrated probabilities, with what
/// the calibration did.
fn calibrate_labels(
    record: &mut EvalRecord,
    calibration: &crate::LabelCalibration,
    evaluation: &fusion_core::Evaluation,
    data: &fusion_core::TensorDataset,
) -> Result<()> {
    let truths = fusion_core::label_states(&data.labels)?;
    let calibrated = calibration.apply_all(&evaluation.probabilities);
    let widened: Vec<Vec<f64>> = calibrated
        .iter()
        .map(|row| row.iter().map(|&p| f64::from(p)).collect())
        .collect();
    let task = fusion_core::MultiLabelMetrics::compute(&widened, &truths);
    let effect = calibration.evaluate(&evaluation.probabilities, &truths);
    record.metrics.accuracy = task.subset_accuracy;
    record.metrics.macro_f1 = task.macro_f1;
    record.metrics.ece = effect.after.ece;
    record.task = fusion_core::TaskMetrics::MultiLabel(task);
    record.label_calibration = Some(effect);
    Ok(())
}

/// Weighted sums of members' probabilities per record id, in order of first appearance;
/// `T` is what the first member to predict a record says about it (its label…).
pub(crate) struct Blend<T> {
    order: Vec<String>,
    entries: HashMap<String, (T, Vec<f64>, f64, usize)>,
}

impl<T> Blend<T> {
    pub(crate) fn new() -> Self {
        Self {
            order: Vec::new(),
            entries: HashMap::new(),
        }
    }

    /// Adds `weight · probabilities` to record `id`; returns what the record's first member
    /// said of it.
    pub(crate) fn add(&mut self, id: &str, about: impl FnOnce() -> T, probabilities: &[f32], weight: f64) -> &T {
        let entry = self.entries.entry(id.to_string()).or_insert_with(|| {
            self.order.push(id.to_string());
            (about(), vec![0.0; probabilities.len()], 0.0, 0)
        });
        for (sum, &p) in entry.1.iter_mut().zip(probabilities) {
            *sum += weight * f64::from(p);
        }
        entry.2 += weight;
        entry.3 += 1;
        &entry.0
    }

    /// Per record in order: what its first member said, its probabilities (the weights of
    /// the members that predicted it renormalised), how many members did.
    pub(crate) fn records(&self) -> impl Iterator<Item = (&str, &T, Vec<f32>, usize)> {
        self.order.iter().map(|id| {
            let (about, sum, weight, members) = &self.entries[id];
            let probabilities = sum.iter().map(|s| (s / weight) as f32).collect();
            (id.as_str(), about, probabilities, *members)
        })
    }
}

/// Builds an ensemble of the trained classification runs `folders` in `out`: greedy
/// selection (Caruana et al. 2004, `rounds` rounds with replacement) on the val records
/// every member predicts, written to `ensemble.json` and `classes.json`. The ensemble is
/// then a folder [`Predictor::load`] reads like a run.
pub fn build_ensemble(
    folders: &[PathBuf],
    out: &Path,
    rounds: usize,
    device: Device,
    observer: &dyn Observer,
) -> Result<EnsembleFile> {
    let runs = crate::ensemble::check_members(folders, out)?;
    let mut scores = Vec::new();
    let mut loaded = Vec::new();
    for run in runs {
        observer.step(&format!("predicting val with {}", run.root().display()));
        let member = LoadedRun::load(run, 1.0, device)?;
        scores.push(member.split_scores(None, Split::Val, observer)?);
        loaded.push(member);
    }
    let (members, labels) = align(&loaded, &scores)?;
    if labels.is_empty() {
        return Err(Error::Config(
            "no val record is predicted by every member: nothing to select the weights on".into(),
        ));
    }
    let selection = fusion_core::select_ensemble(&members, &labels, rounds)?;
    let file = EnsembleFile {
        members: loaded
            .iter()
            .zip(&selection.weights)
            .zip(&members)
            .map(|((member, &weight), probabilities)| crate::Member {
                run: member.run.root().to_path_buf(),
                weight,
                loss: fusion_core::log_loss(probabilities, &labels),
            })
            .collect(),
        classes: loaded[0].classes.clone(),
        selected_on: "val".into(),
        records: labels.len(),
        rounds,
        losses: selection.losses,
    };
    let ensemble = Run::new(out);
    Calibration::forget(out)?;
    ensemble.write_json(crate::ENSEMBLE_FILE, &file)?;
    ensemble.write_json("classes.json", &file.classes)?;
    Ok(file)
}

/// Class probabilities of each record, per member.
type MemberProbabilities = Vec<Vec<Vec<f32>>>;

/// Every member's predictions on the records all of them predicted, in the first member's
/// order, and those records' labels.
fn align(runs: &[LoadedRun], scores: &[SplitScores]) -> Result<(MemberProbabilities, Vec<usize>)> {
    let lookups: Vec<HashMap<&str, usize>> = scores
        .iter()
        .map(|p| p.ids.iter().enumerate().map(|(k, id)| (id.as_str(), k)).collect())
        .collect();
    let first = &scores[0];
    let mut members = vec![Vec::new(); scores.len()];
    let mut labels = Vec::new();
    for (k, id) in first.ids.iter().enumerate() {
        let Some(rows) = lookups
            .iter()
            .map(|l| l.get(id.as_str()).copied())
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        for (m, &row) in rows.iter().enumerate() {
            if scores[m].labels[row] != first.labels[k] {
                return Err(Error::Config(format!(
                    "record {id} has another label for {} than for {}: the members must share one dataset",
                    runs[m].run.root().display(),
                    runs[0].run.root().display()
                )));
            }
            members[m].push(scores[m].probabilities[row].clone());
        }
        labels.push(first.labels[k]);
    }
    Ok((members, labels))
}
