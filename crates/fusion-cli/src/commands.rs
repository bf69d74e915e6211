//! The commands that train, evaluate, explain and export models on a manifest.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use fusion_core::{
    FusionConfig, FusionModel, GroupMetrics, Metrics, ModalityInput, NOISE_LEVELS, NoiseCurve, Progress, RunFolder,
    ShapleyReport, SubsetAccuracy, TrainSummary, evaluate, export_torchscript, missing_modality_accuracy,
    noise_robustness, shapley_values,
};
use fusion_data::{Extraction, FeatureCache, Manifest, Problem, Shard, Split};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::{
    plots, report,
    run::{Normalization, RunConfig, SplitData, classes_of, dataset},
};

/// Batch size of evaluation passes.
const EVAL_BATCH: usize = 256;

/// How much the program prints: text with progress bars, nothing, or one JSON value.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    /// No output except errors.
    pub quiet: bool,
    /// One JSON value on stdout, no text, no bars.
    pub json: bool,
    /// Print a line per training epoch.
    pub epochs: bool,
}

impl Ui {
    /// A line of text (not in quiet or JSON mode).
    pub fn say(&self, text: impl std::fmt::Display) {
        if !self.quiet && !self.json {
            println!("{text}");
        }
    }

    /// A warning on stderr (not in quiet mode).
    pub fn warn(&self, text: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// The command's result as JSON (JSON mode only).
    pub fn result(&self, value: &impl Serialize) -> Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(value)?);
        }
        Ok(())
    }

    /// A progress bar with rate and ETA on stderr (hidden in quiet/JSON mode and when
    /// stderr is not a terminal).
    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if self.quiet || self.json {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        let style = ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// A manifest's records turned into features, bad ones listed.
pub struct Loaded {
    /// The manifest read.
    pub manifest: Manifest,
    /// Features of the good records.
    pub extraction: Extraction,
}

/// Loads `manifest` (default: the configuration's) and extracts the configuration's
/// features through the cache, reporting bad lines and records.
pub fn load_data(config: &RunConfig, manifest: Option<&Path>, shard: Option<Shard>, ui: Ui) -> Result<Loaded> {
    let path = manifest.unwrap_or(&config.manifest);
    let manifest = Manifest::load(path)?;
    for line in &manifest.rejected {
        ui.warn(format!("skipped {}: {line}", path.display()));
    }
    let cache = config.cache_folder().map(FeatureCache::new);
    let records = manifest.records.len();
    let total = shard.map_or(records, |s| records.saturating_sub(s.index).div_ceil(s.count));
    let bar = ui.bar(total as u64, "features");
    let extraction = fusion_data::extract(&manifest, &config.feature_specs(), cache.as_ref(), shard, &|n| {
        bar.set_position(n as u64)
    })?;
    bar.finish_and_clear();
    for problem in &extraction.problems {
        ui.warn(format!("skipped record {}", describe(problem)));
    }
    for error in &extraction.cache_errors {
        ui.warn(format!("warning: features not cached: {error}"));
    }
    ui.say(format!(
        "{} records: {} usable, {} skipped, {} unreadable manifest lines; features {} from cache, {} computed",
        total,
        extraction.records.len(),
        extraction.problems.len(),
        manifest.rejected.len(),
        extraction.cached,
        extraction.computed
    ));
    Ok(Loaded { manifest, extraction })
}

/// `id (modality) path: reason`.
pub fn describe(problem: &Problem) -> String {
    let mut text = problem.id.clone();
    if let Some(modality) = &problem.modality {
        text += &format!(" ({modality})");
    }
    if let Some(path) = &problem.path {
        text += &format!(" {}", path.display());
    }
    format!("{text}: {}", problem.reason)
}

/// Files a CLI run folder holds beside fusion-core's checkpoints.
pub struct Run {
    /// fusion-core's files (model.json, checkpoints, metrics.jsonl).
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
    /// Where the stem of a plot goes (`.png` and `.svg` are added).
    pub fn plot(&self, name: &str) -> Result<PathBuf> {
        let dir = self.file("plots");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir.join(name))
    }
    /// Writes a JSON file of the run.
    pub fn write_json(&self, name: &str, value: &impl Serialize) -> Result<()> {
        let path = self.file(name);
        std::fs::create_dir_all(self.root()).with_context(|| format!("cannot create {}", self.root().display()))?;
        std::fs::write(&path, serde_json::to_string_pretty(value)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }
    /// Reads a JSON file of the run.
    pub fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T> {
        let path = self.file(name);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is {} a run folder?)",
                path.display(),
                self.root().display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }
    /// The run's configuration.
    pub fn config(&self) -> Result<RunConfig> {
        self.read_json("run.json")
    }
    /// The class names in index order.
    pub fn classes(&self) -> Result<Vec<String>> {
        self.read_json("classes.json")
    }
    /// The input standardisation fitted at training time.
    pub fn normalization(&self) -> Result<Normalization> {
        self.read_json("normalization.json")
    }
    /// The trained model (best weights) on `device`.
    pub fn model(&self, device: Device) -> Result<(FusionModel, tch::nn::VarStore)> {
        Ok(self.folder.load_model(device)?)
    }
}

/// An evaluation as stored in `eval.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Split evaluated.
    pub split: String,
    /// Mean negative log-likelihood.
    pub loss: f64,
    /// Accuracy, ECE, confusion matrix.
    pub metrics: Metrics,
    /// Per-group metrics when records have groups.
    pub groups: Option<GroupMetrics>,
    /// Class names of the confusion matrix.
    pub classes: Vec<String>,
    /// Records left out with the reason.
    pub skipped: Vec<Problem>,
}

/// Outcome of training one configuration.
pub struct Trained {
    /// Epoch records.
    pub summary: TrainSummary,
    /// Evaluation of the best weights on test (or val).
    pub eval: Option<EvalRecord>,
    /// Wall time of training.
    pub seconds: f64,
    /// Trainable parameters.
    pub parameters: i64,
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Val => "val",
        Split::Test => "test",
    }
}

/// Trains `fusion` on the extraction's train split into `run`, evaluating on val each
/// epoch, then evaluates the best weights on test (or val when there is no test split).
/// `columns` picks the extraction's feature columns, in the configuration's modality order.
/// A folder that already holds a run continues it when the configuration is the same
/// (epochs aside), with the classes and standardisation it started with; anything else is
/// refused before a file is touched.
pub fn train_one(
    config: &RunConfig,
    fusion: &FusionConfig,
    extraction: &Extraction,
    columns: &[(usize, usize)],
    run: &Run,
    ui: Ui,
    device: Device,
) -> Result<Trained> {
    let train_indices = extraction.split_indices(Split::Train);
    let classes = classes_of(train_indices.iter().map(|&i| extraction.records[i].label.as_str()));
    if classes.len() < 2 {
        bail!(
            "the training records have {} distinct label(s); need at least 2",
            classes.len()
        );
    }
    let run_config = RunConfig {
        fusion: fusion.clone(),
        ..config.clone()
    };
    let saved = if run.folder.model_config().exists() {
        let saved = run.config()?;
        if !saved.same_run(&run_config) {
            bail!(
                "{} holds a run of another configuration; use a new folder (or the same configuration to resume)",
                run.root().display()
            );
        }
        let saved_classes = run.classes()?;
        if saved_classes != classes {
            bail!(
                "{}: the training labels changed since this run started ({saved_classes:?}, now {classes:?}); use a new folder",
                run.root().display()
            );
        }
        Some(run.normalization()?)
    } else {
        None
    };
    // A training sample with none of the model's modalities teaches it nothing.
    let trainable: Vec<usize> = train_indices
        .iter()
        .copied()
        .filter(|&i| columns.iter().any(|&(c, _)| extraction.features[c][i].is_some()))
        .collect();
    let mut train_data = dataset(extraction, &trainable, &classes, columns, device)?;
    let normalization = match saved {
        Some(saved) => saved,
        None => Normalization::fit(&train_data.data)?,
    };
    normalization.apply(&mut train_data.data)?;
    let split = |s| -> Result<SplitData> {
        let mut data = dataset(extraction, &extraction.split_indices(s), &classes, columns, device)?;
        normalization.apply(&mut data.data)?;
        Ok(data)
    };
    let val = split(Split::Val)?;
    let val_data = (!val.records.is_empty()).then_some(&val.data);
    let model_config = run_config.model_config(classes.len() as i64, fusion);
    model_config.validate()?;
    run.write_json("run.json", &run_config)?;
    run.write_json("classes.json", &classes)?;
    run.write_json("normalization.json", &normalization)?;
    tch::manual_seed(config.train.seed as i64);
    let vs = tch::nn::VarStore::new(device);
    let model = FusionModel::new(&vs.root(), &model_config)?;
    let parameters: i64 = vs.trainable_variables().iter().map(Tensor::numel).sum::<usize>() as i64;
    let steps_per_epoch = train_data.records.len().div_ceil(config.train.batch_size.max(1));
    let bar = ui.bar((config.train.epochs * steps_per_epoch) as u64, "training");
    let started = Instant::now();
    let summary = fusion_core::train(
        &model,
        &vs,
        &config.train,
        &train_data.data,
        val_data,
        &run.folder,
        &mut |progress| match progress {
            Progress::Step {
                epoch,
                step,
                steps,
                loss,
            } => {
                bar.set_position(((epoch - 1) * steps + step) as u64);
                bar.set_message(format!("epoch {epoch} loss {loss:.3}"));
            }
            Progress::Epoch(record) if ui.epochs => {
                let val = record
                    .val_accuracy
                    .map(|a| format!(", val accuracy {a:.4}"))
                    .unwrap_or_default();
                let line = format!("epoch {:>3}: train loss {:.4}{val}", record.epoch, record.train_loss);
                // A hidden bar (no terminal) drops its println: print the line plainly.
                if bar.is_hidden() {
                    ui.say(line);
                } else {
                    bar.println(line);
                }
            }
            Progress::Epoch(_) => {}
        },
    )?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    if summary.resumed_from > 0 {
        ui.say(format!("resumed from epoch {}", summary.resumed_from));
    }
    plot_training(run, &summary)?;
    let target = if extraction.split_indices(Split::Test).is_empty() {
        Split::Val
    } else {
        Split::Test
    };
    let eval = if extraction.split_indices(target).is_empty() {
        None
    } else {
        let data = split(target)?;
        Some(evaluate_into(run, &data, &classes, split_name(target), device)?)
    };
    Ok(Trained {
        summary,
        eval,
        seconds,
        parameters,
    })
}

fn plot_training(run: &Run, summary: &TrainSummary) -> Result<()> {
    let series = |name: &str, pick: &dyn Fn(&fusion_core::EpochRecord) -> Option<f64>| {
        (
            name.to_string(),
            summary
                .epochs
                .iter()
                .filter_map(|e| pick(e).map(|v| (e.epoch as f64, v)))
                .collect::<Vec<_>>(),
        )
    };
    let mut curves = vec![series("train loss", &|e| Some(e.train_loss))];
    let val_loss = series("val loss", &|e| e.val_loss);
    if !val_loss.1.is_empty() {
        curves.push(val_loss);
        curves.push(series("val accuracy", &|e| e.val_accuracy));
    }
    plots::lines(&run.plot("training")?, "Training", "epoch", "loss / accuracy", &curves)?;
    Ok(())
}

/// Evaluates the run's best weights on `data`, writing `eval.json` and the confusion plot.
fn evaluate_into(run: &Run, data: &SplitData, classes: &[String], split: &str, device: Device) -> Result<EvalRecord> {
    let (model, _vs) = run.model(device)?;
    let evaluation = evaluate(&model, &data.data, EVAL_BATCH)?;
    let record = EvalRecord {
        split: split.to_string(),
        loss: evaluation.loss,
        metrics: evaluation.metrics,
        groups: evaluation.groups,
        classes: classes.to_vec(),
        skipped: data.problems.clone(),
    };
    run.write_json("eval.json", &record)?;
    plots::confusion(
        &run.plot("confusion")?,
        &format!("Confusion on {split} (accuracy {:.4})", record.metrics.accuracy),
        classes,
        &record.metrics.confusion,
    )?;
    Ok(record)
}

fn say_eval(ui: Ui, eval: &EvalRecord) {
    ui.say(format!(
        "{}: accuracy {:.4}, ECE {:.4}, loss {:.4} on {} samples",
        eval.split, eval.metrics.accuracy, eval.metrics.ece, eval.loss, eval.metrics.count
    ));
    if let Some(groups) = &eval.groups {
        for (name, metrics) in &groups.groups {
            ui.say(format!(
                "  group {name}: accuracy {:.4} ({} samples)",
                metrics.accuracy, metrics.count
            ));
        }
    }
}

/// `fusion train`.
pub fn train(config_path: &Path, run_dir: &Path, epochs: Option<usize>, ui: Ui, device: Device) -> Result<()> {
    let mut config = RunConfig::load(config_path)?;
    if let Some(epochs) = epochs {
        config.train.epochs = epochs;
    }
    config.validate()?;
    let loaded = load_data(&config, None, None, ui)?;
    config.check_manifest(&loaded.manifest)?;
    let run = Run::new(run_dir);
    let fusion = config.fusion.clone();
    let trained = train_one(
        &config,
        &fusion,
        &loaded.extraction,
        &config.columns(),
        &run,
        ui,
        device,
    )?;
    run.write_json("skipped.json", &loaded.extraction.problems)?;
    let best = trained.summary.best_epoch;
    ui.say(format!(
        "trained {} epochs in {:.1} s ({} parameters); best epoch {best}",
        trained.summary.epochs.len(),
        trained.seconds,
        trained.parameters
    ));
    if let Some(eval) = &trained.eval {
        say_eval(ui, eval);
    }
    report::write(&run)?;
    ui.say(format!("report: {}", run.file("report.md").display()));
    ui.result(&serde_json::json!({
        "run": run.root(),
        "epochs": trained.summary.epochs,
        "best_epoch": best,
        "train_seconds": trained.seconds,
        "parameters": trained.parameters,
        "resumed_from": trained.summary.resumed_from,
        "eval": trained.eval,
        "skipped": loaded.extraction.problems,
    }))
}

/// The run's data for `split` from `manifest` (default: the run's).
fn run_split(
    run: &Run,
    manifest: Option<&Path>,
    split: Split,
    ui: Ui,
    device: Device,
) -> Result<(SplitData, Vec<String>, Loaded)> {
    let config = run.config()?;
    let loaded = load_data(&config, manifest, None, ui)?;
    let (data, classes) = split_data(run, &config, &loaded, split, ui, device)?;
    Ok((data, classes, loaded))
}

/// The run's standardised dataset for `split` of data loaded with the run's configuration
/// `config`, and the run's classes.
pub fn split_data(
    run: &Run,
    config: &RunConfig,
    loaded: &Loaded,
    split: Split,
    ui: Ui,
    device: Device,
) -> Result<(SplitData, Vec<String>)> {
    let classes = run.classes()?;
    let indices = loaded.extraction.split_indices(split);
    if indices.is_empty() {
        bail!(
            "{}: no usable `{}` records",
            loaded.manifest.path.display(),
            split_name(split)
        );
    }
    let mut data = dataset(&loaded.extraction, &indices, &classes, &config.columns(), device)?;
    run.normalization()?.apply(&mut data.data)?;
    for problem in &data.problems {
        ui.warn(format!("skipped record {}", describe(problem)));
    }
    Ok((data, classes))
}

/// `fusion eval`.
pub fn eval(run_dir: &Path, manifest: Option<&Path>, split: Split, ui: Ui, device: Device) -> Result<()> {
    let run = Run::new(run_dir);
    let (data, classes, loaded) = run_split(&run, manifest, split, ui, device)?;
    let mut record = evaluate_into(&run, &data, &classes, split_name(split), device)?;
    record.skipped.extend(loaded.extraction.problems);
    run.write_json("eval.json", &record)?;
    say_eval(ui, &record);
    report::write(&run)?;
    ui.result(&record)
}

/// One line of `predict`'s output.
#[derive(Debug, Serialize)]
struct Prediction<'a> {
    id: &'a str,
    prediction: &'a str,
    confidence: f32,
    probabilities: std::collections::BTreeMap<&'a str, f32>,
    label: &'a str,
    missing: Vec<&'a str>,
}

/// `fusion predict`: one JSON line per record, bad records as `{"id", "error"}` lines.
pub fn predict(run_dir: &Path, manifest: Option<&Path>, out: Option<&Path>, ui: Ui, device: Device) -> Result<()> {
    let run = Run::new(run_dir);
    let config = run.config()?;
    let classes = run.classes()?;
    let loaded = load_data(&config, manifest, None, ui)?;
    let extraction = &loaded.extraction;
    let (model, _vs) = run.model(device)?;
    let all: Vec<usize> = (0..extraction.records.len()).collect();
    // Labels are not used to predict (manifests need one; any placeholder does): unknown
    // ones are kept with a placeholder index.
    let mut known = classes.clone();
    known.extend(extraction.records.iter().map(|r| r.label.clone()));
    let data = dataset(extraction, &all, &known, &config.columns(), device)?;
    let mut inputs = data.data;
    run.normalization()?.apply(&mut inputs)?;
    inputs.labels = inputs.labels.clamp_max(classes.len() as i64 - 1);
    let evaluation = evaluate(&model, &inputs, EVAL_BATCH)?;
    let mut lines = Vec::new();
    for (k, &i) in data.records.iter().enumerate() {
        let record = &extraction.records[i];
        let probabilities = &evaluation.probabilities[k];
        let predicted = evaluation.predicted[k];
        let missing = config
            .modalities
            .iter()
            .enumerate()
            .filter(|(m, _)| extraction.features[*m][i].is_none())
            .map(|(_, spec)| spec.name.as_str())
            .collect();
        let line = Prediction {
            id: &record.id,
            prediction: &classes[predicted],
            confidence: probabilities[predicted],
            probabilities: classes
                .iter()
                .map(String::as_str)
                .zip(probabilities.iter().copied())
                .collect(),
            label: &record.label,
            missing,
        };
        lines.push(serde_json::to_string(&line)?);
    }
    for problem in &extraction.problems {
        lines.push(serde_json::to_string(&serde_json::json!({
            "id": problem.id,
            "error": problem.reason,
            "modality": problem.modality,
            "path": problem.path,
        }))?);
    }
    let out = out.map_or_else(|| run.file("predictions.jsonl"), Path::to_path_buf);
    std::fs::write(&out, lines.join("\n") + "\n").with_context(|| format!("cannot write {}", out.display()))?;
    ui.say(format!(
        "{} predictions and {} skipped records written to {}",
        data.records.len(),
        extraction.problems.len(),
        out.display()
    ));
    ui.result(&serde_json::json!({"predictions": data.records.len(), "skipped": extraction.problems.len(), "out": out}))
}

/// What `explain` stores.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExplainRecord {
    /// Split explained.
    pub split: String,
    /// Per-modality Shapley values of the true class's probability.
    pub shapley: ShapleyReport,
}

/// `fusion explain`: exact per-modality Shapley values and their plot.
pub fn explain(run_dir: &Path, manifest: Option<&Path>, split: Split, ui: Ui, device: Device) -> Result<()> {
    let run = Run::new(run_dir);
    let (data, _, _) = run_split(&run, manifest, split, ui, device)?;
    explain_on(&run, &data, split, ui, device)
}

/// [`explain`] on data already loaded (see [`split_data`]).
pub fn explain_on(run: &Run, data: &SplitData, split: Split, ui: Ui, device: Device) -> Result<()> {
    let (model, _vs) = run.model(device)?;
    let shapley = shapley_values(&model, &data.data, EVAL_BATCH)?;
    for (m, name) in shapley.modalities.iter().enumerate() {
        ui.say(format!(
            "{name}: mean Shapley value {:+.4}, mean |value| {:.4}",
            shapley.mean[m], shapley.mean_abs[m]
        ));
    }
    plots::bars(
        &run.plot("contributions")?,
        "Modality contributions (mean |Shapley value| of the true class's probability)",
        "mean |Shapley value|",
        &shapley.modalities,
        &shapley.mean_abs,
    )?;
    let record = ExplainRecord {
        split: split_name(split).into(),
        shapley,
    };
    run.write_json("explain.json", &record)?;
    report::write(run)?;
    ui.result(&record)
}

/// What `robustness` stores.
#[derive(Debug, Serialize, Deserialize)]
pub struct RobustnessRecord {
    /// Split measured.
    pub split: String,
    /// Accuracy with only each subset of modalities present.
    pub subsets: Vec<SubsetAccuracy>,
    /// Accuracy as Gaussian noise grows on each modality.
    pub noise: Vec<NoiseCurve>,
}

/// `fusion robustness`: accuracy under missing modalities and growing noise, with plots.
pub fn robustness(run_dir: &Path, manifest: Option<&Path>, split: Split, ui: Ui, device: Device) -> Result<()> {
    let run = Run::new(run_dir);
    let (data, _, _) = run_split(&run, manifest, split, ui, device)?;
    robustness_on(&run, &data, split, ui, device)
}

/// [`robustness`] on data already loaded (see [`split_data`]).
pub fn robustness_on(run: &Run, data: &SplitData, split: Split, ui: Ui, device: Device) -> Result<()> {
    let (model, _vs) = run.model(device)?;
    let subsets = missing_modality_accuracy(&model, &data.data, EVAL_BATCH)?;
    let noise = noise_robustness(&model, &data.data, EVAL_BATCH, &NOISE_LEVELS, 0)?;
    for subset in &subsets {
        ui.say(format!(
            "with {}: accuracy {:.4}",
            subset.modalities.join(" + "),
            subset.accuracy
        ));
    }
    let labels: Vec<String> = subsets.iter().map(|s| s.modalities.join("+")).collect();
    let values: Vec<f64> = subsets.iter().map(|s| s.accuracy).collect();
    plots::bars(
        &run.plot("missing_modalities")?,
        "Accuracy with only these modalities",
        "accuracy",
        &labels,
        &values,
    )?;
    let series: Vec<(String, Vec<(f64, f64)>)> = noise.iter().map(|c| (c.modality.clone(), c.points.clone())).collect();
    plots::lines(
        &run.plot("noise")?,
        "Accuracy as noise grows on one modality",
        "noise std / feature std",
        "accuracy",
        &series,
    )?;
    let record = RobustnessRecord {
        split: split_name(split).into(),
        subsets,
        noise,
    };
    run.write_json("robustness.json", &record)?;
    report::write(run)?;
    ui.result(&record)
}

/// `fusion export`: TorchScript with a free batch size, plus its signature.
pub fn export(run_dir: &Path, out: Option<&Path>, ui: Ui, device: Device) -> Result<()> {
    let run = Run::new(run_dir);
    let config = run.config()?;
    let (model, vs) = run.model(device)?;
    let example: Vec<ModalityInput> = config
        .modalities
        .iter()
        .map(|m| ModalityInput::dense(Tensor::zeros([2, m.features.dim() as i64], (Kind::Float, device))))
        .collect();
    let out = out.map_or_else(|| run.file("model.pt"), Path::to_path_buf);
    let signature = export_torchscript(&model, &vs, &example, &out)?;
    ui.say(format!(
        "exported {} ({} inputs: {})",
        out.display(),
        signature.inputs.len(),
        signature
            .inputs
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    report::write(&run)?;
    ui.result(&serde_json::json!({"model": out, "signature": signature}))
}

/// One row of a comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareRow {
    /// Method name.
    pub name: String,
    /// Run folder.
    pub run: PathBuf,
    /// Split evaluated (test, or val when there is none).
    pub split: String,
    /// Samples evaluated.
    pub samples: usize,
    /// Test (or val) accuracy of the best weights.
    pub accuracy: f64,
    /// Expected calibration error.
    pub ece: f64,
    /// Trainable parameters.
    pub parameters: i64,
    /// Training wall time, seconds.
    pub seconds: f64,
}

/// The methods compared when the configuration names none.
pub fn default_methods() -> Vec<crate::run::NamedFusion> {
    let parse = |name: &str, json: &str| crate::run::NamedFusion {
        name: name.into(),
        fusion: serde_json::from_str(json).unwrap_or(FusionConfig::Late {
            combiner: fusion_core::LateCombiner::Mean,
        }),
    };
    vec![
        parse("early: concat", r#"{"family": "early", "method": "concat"}"#),
        parse("early: tensor", r#"{"family": "early", "method": "tensor"}"#),
        parse("late: mean", r#"{"family": "late", "combiner": "mean"}"#),
        parse("late: learned", r#"{"family": "late", "combiner": "learned"}"#),
        parse(
            "hybrid: concat + learned",
            r#"{"family": "hybrid", "early": {"method": "concat"}, "combiner": {"combiner": "learned"}}"#,
        ),
    ]
}

/// `fusion compare`: every method of the configuration (same encoders, features and seed)
/// and each modality alone, one table and one plot.
/// Returns the rows and the data loaded for them.
pub fn compare(config_path: &Path, out: &Path, ui: Ui, device: Device) -> Result<(Vec<CompareRow>, Loaded)> {
    let config = RunConfig::load(config_path)?;
    config.validate()?;
    let loaded = load_data(&config, None, None, ui)?;
    config.check_manifest(&loaded.manifest)?;
    let methods = if config.compare.is_empty() {
        default_methods()
    } else {
        config.compare.clone()
    };
    // Each modality alone (its own column of the one extraction), then the methods. Every
    // row is tested on the same records: where a unimodal model's modality is absent it has
    // nothing to go on and outputs the uniform distribution.
    let all_columns = config.columns();
    // Row name, configuration, method, feature columns.
    type Row = (String, RunConfig, FusionConfig, Vec<(usize, usize)>);
    let mut plan: Vec<Row> = Vec::new();
    for (m, spec) in config.modalities.iter().enumerate() {
        let alone = config.only(m);
        let fusion = alone.fusion.clone();
        plan.push((format!("{} only", spec.name), alone, fusion, vec![all_columns[m]]));
    }
    for method in methods {
        plan.push((method.name, config.clone(), method.fusion, all_columns.clone()));
    }
    let mut rows = Vec::new();
    let quiet_epochs = Ui { epochs: false, ..ui };
    for (i, (name, run_config, fusion, columns)) in plan.iter().enumerate() {
        ui.say(format!("[{}/{}] {name}", i + 1, plan.len()));
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let run = Run::new(out.join(format!("{i:02}_{}", slug.trim_matches('_'))));
        let trained = train_one(
            run_config,
            fusion,
            &loaded.extraction,
            columns,
            &run,
            quiet_epochs,
            device,
        )?;
        report::write(&run)?;
        let eval = trained.eval.ok_or_else(|| {
            anyhow!(
                "{}: no test or val records to compare on",
                loaded.manifest.path.display()
            )
        })?;
        rows.push(CompareRow {
            name: name.clone(),
            run: run.root().to_path_buf(),
            split: eval.split.clone(),
            samples: eval.metrics.count,
            accuracy: eval.metrics.accuracy,
            ece: eval.metrics.ece,
            parameters: trained.parameters,
            seconds: trained.seconds,
        });
    }
    let compare = Run::new(out);
    compare.write_json("compare.json", &rows)?;
    compare.write_json("skipped.json", &loaded.extraction.problems)?;
    let split = rows.first().map_or("test", |r| r.split.as_str());
    plots::bars(
        &compare.plot("compare")?,
        &format!("Accuracy on {split} by fusion method"),
        "accuracy",
        &rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.accuracy).collect::<Vec<_>>(),
    )?;
    let table = report::compare_table(&rows);
    report::write_compare(&compare, &config, &rows, &loaded)?;
    ui.say(format!("\n{table}"));
    ui.say(format!("report: {}", compare.file("report.md").display()));
    ui.result(&rows)?;
    Ok((rows, loaded))
}
