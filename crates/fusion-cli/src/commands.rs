//! The commands that train, evaluate, explain and export models on a manifest.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use fusion_core::{
    FusionConfig, ModalityInput, ProcessGroup, Progress, Task, TaskMetrics, TrainSummary, export_torchscript,
};
use fusion_data::{Problem, Shard, Split};
use fusion_run::{
    CompareRow, EvalRecord, Loaded, Observer, Predictor, Run, RunConfig, SplitData, describe, score_name,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tch::Device;

use crate::{plots, report};

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

/// Shows a library call's progress: a bar while features are extracted, then what the
/// loading found (bad lines, records and files) and a summary line.
pub struct Shown {
    ui: Ui,
    bar: std::sync::Mutex<Option<ProgressBar>>,
    training: std::sync::Mutex<Option<ProgressBar>>,
}

impl Shown {
    /// Shows through `ui`.
    pub fn new(ui: Ui) -> Self {
        Self {
            ui,
            bar: std::sync::Mutex::new(None),
            training: std::sync::Mutex::new(None),
        }
    }
}

/// The bar in `slot`, whatever a panicking holder left.
fn lock(slot: &std::sync::Mutex<Option<ProgressBar>>) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Observer for Shown {
    fn features(&self, done: usize, total: usize) {
        let mut bar = lock(&self.bar);
        let bar = bar.get_or_insert_with(|| self.ui.bar(0, "features"));
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }

    fn loaded(&self, loaded: &Loaded) {
        let bar = self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let (ui, manifest) = (self.ui, &loaded.manifest);
        let path = manifest.path.display();
        for line in &manifest.rejected {
            ui.warn(format!("skipped {path}: {line}"));
        }
        for field in &manifest.unknown_fields {
            ui.warn(format!("{path}: {}", fusion_core::with_suggestion(&field.to_string())));
        }
        let extraction = &loaded.extraction;
        for problem in &extraction.absent {
            ui.warn(format!("unusable file, its modality left out: {}", describe(problem)));
        }
        for problem in &extraction.problems {
            ui.warn(format!("skipped record {}", describe(problem)));
        }
        for error in &extraction.cache_errors {
            ui.warn(format!("warning: features not cached: {error}"));
        }
        ui.say(format!(
            "{} records: {} usable, {} skipped, {} files unusable (modality left out), {} unreadable manifest lines; features {} from cache, {} computed",
            loaded.considered(),
            extraction.records.len(),
            loaded.skipped_records(),
            extraction.absent.len(),
            manifest.rejected.len(),
            extraction.cached,
            extraction.computed
        ));
    }

    fn training(&self, epochs: usize, steps: usize) {
        *lock(&self.training) = Some(self.ui.bar((epochs * steps) as u64, "training"));
    }

    fn progress(&self, progress: &Progress<'_>) {
        let training = lock(&self.training);
        let Some(bar) = training.as_ref() else {
            return;
        };
        match progress {
            Progress::Step {
                epoch,
                step,
                steps,
                loss,
            } => {
                bar.set_position(((epoch - 1) * steps + step) as u64);
                bar.set_message(format!("epoch {epoch} loss {loss:.3}"));
            }
            Progress::Epoch(record) if self.ui.epochs => {
                let val = match (record.val_accuracy, record.val_r2) {
                    (Some(a), _) => format!(", val accuracy {a:.4}"),
                    (None, Some(r2)) => format!(", val R² {r2:.4}"),
                    (None, None) => String::new(),
                };
                let line = format!("epoch {:>3}: train loss {:.4}{val}", record.epoch, record.train_loss);
                // A hidden bar (no terminal) drops its println: print the line plainly.
                if bar.is_hidden() {
                    self.ui.say(line);
                } else {
                    bar.println(line);
                }
            }
            Progress::Epoch(_) => {}
        }
    }

    fn trained(&self) {
        if let Some(bar) = lock(&self.training).take() {
            bar.finish_and_clear();
        }
    }

    fn step(&self, text: &str) {
        self.ui.say(text);
    }

    fn warn(&self, text: &str) {
        self.ui.warn(text);
    }
}

/// Loads `manifest` (default: the configuration's) and extracts the configuration's
/// features through the cache (see [`fusion_run::load`]), shown through `ui`.
pub fn load_data(config: &mut RunConfig, manifest: Option<&Path>, shard: Option<Shard>, ui: Ui) -> Result<Loaded> {
    Ok(fusion_run::load(config, manifest, shard, &Shown::new(ui))?)
}

/// Where the stem of a plot of `run` goes (`.png` and `.svg` are added).
pub fn plot_path(run: &Run, name: &str) -> Result<PathBuf> {
    let dir = run.file("plots");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.join(name))
}

/// Says how a classification run compares with its simple baselines.
fn say_baselines(baselines: &fusion_run::Baselines, eval: &EvalRecord, ui: Ui) {
    for row in &baselines.rows {
        ui.say(format!(
            "  baseline {}: accuracy {:.4}, macro-F1 {:.4}",
            row.name, row.accuracy, row.macro_f1
        ));
    }
    if let Some(best) = baselines.best() {
        let gain = eval.metrics.accuracy - best.accuracy;
        let line = format!(
            "fusion gain over the best simple baseline ({}): {gain:+.4} accuracy",
            best.name
        );
        if gain < 0.0 { ui.warn(line) } else { ui.say(line) }
    }
}

fn plot_training(run: &Run, summary: &TrainSummary, config: &RunConfig) -> Result<()> {
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
    // Models with per-branch heads train on the fused loss plus their weighted mean; the
    // validation loss is the fused prediction's alone.
    let branch_weight = config.train.branch_loss_weight;
    let train_loss = match config.fusion {
        FusionConfig::Early { .. } => "train loss".to_string(),
        _ if branch_weight == 0.0 => "train loss".to_string(),
        _ => format!("train loss (fused + {branch_weight} × mean branch loss)"),
    };
    let losses = plots::Panel {
        y_label: "loss".into(),
        series: vec![
            series(&train_loss, &|e| Some(e.train_loss)),
            series("val loss", &|e| e.val_loss),
        ],
    };
    let accuracy = if config.task == Task::Regression {
        plots::Panel {
            y_label: "R²".into(),
            series: vec![series("val R²", &|e| e.val_r2)],
        }
    } else {
        plots::Panel {
            y_label: "accuracy".into(),
            series: vec![series("val accuracy", &|e| e.val_accuracy)],
        }
    };
    plots::lines(&plot_path(run, "training")?, "Training", "epoch", &[losses, accuracy])?;
    Ok(())
}

/// The confusion matrix of a classification's evaluation, as a plot of `run`.
fn plot_confusion(run: &Run, record: &EvalRecord) -> Result<()> {
    if record.task == TaskMetrics::Classification {
        plots::confusion(
            &plot_path(run, "confusion")?,
            &format!(
                "Confusion on {} (accuracy {:.4})",
                record.split, record.metrics.accuracy
            ),
            &record.classes,
            &record.metrics.confusion,
        )?;
    }
    Ok(())
}

/// One line of an evaluation's main metrics, for its task.
pub fn headline(eval: &EvalRecord) -> String {
    let m = &eval.metrics;
    let optional = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
    let metrics = match &eval.task {
        TaskMetrics::Classification => {
            let binary = m.binary.as_ref().map_or_else(String::new, |b| {
                format!(
                    ", ROC-AUC {}, AP {}, F1@{} {:.4}",
                    optional(b.roc_auc),
                    optional(b.average_precision),
                    b.threshold,
                    b.f1
                )
            });
            format!(
                "accuracy {:.4}, macro-F1 {:.4}{binary}, ECE {:.4}",
                m.accuracy, m.macro_f1, m.ece
            )
        }
        TaskMetrics::MultiLabel(ml) => format!(
            "subset accuracy {:.4}, label accuracy {:.4}, micro-F1 {:.4}, macro-F1 {:.4}, macro ROC-AUC {}, macro AP {}",
            ml.subset_accuracy,
            ml.label_accuracy,
            ml.micro_f1,
            ml.macro_f1,
            optional(ml.macro_roc_auc),
            optional(ml.macro_average_precision)
        ),
        TaskMetrics::Regression(r) => format!("RMSE {:.4}, MAE {:.4}, R² {}", r.rmse, r.mae, optional(r.r2)),
    };
    format!(
        "{}: {metrics}, loss {:.4} on {} samples",
        eval.split, eval.loss, m.count
    )
}

pub fn say_eval(ui: Ui, eval: &EvalRecord) {
    ui.say(headline(eval));
    if let Some(groups) = &eval.groups {
        for (name, metrics) in &groups.groups {
            ui.say(format!(
                "  group {name}: accuracy {:.4}, macro-F1 {:.4} ({} samples)",
                metrics.accuracy, metrics.macro_f1, metrics.count
            ));
        }
        ui.say(format!(
            "  largest gap between groups: accuracy {:.4}, macro-F1 {:.4}",
            groups.accuracy_gap, groups.macro_f1_gap
        ));
    }
}

/// A table to train on without a configuration.
pub struct Table<'a> {
    /// The table (CSV or JSON Lines).
    pub path: &'a Path,
    /// The label column.
    pub label: &'a str,
    /// What the configuration spends.
    pub preset: fusion_run::Preset,
    /// Kinds the user set.
    pub column_types: &'a std::collections::BTreeMap<String, fusion_data::ColumnKind>,
    /// The task the user set, instead of the one the label suggests.
    pub task: Option<fusion_data::LabelKind>,
    /// Whether files outside the table's folder may be read.
    pub anywhere: bool,
}

/// Infers the table's columns, prints them, and writes the preset's configuration (and
/// the inference, `columns.json`) into the run folder; returns the configuration's path.
pub fn zero_config(table: &Table, run_dir: &Path, ui: Ui) -> Result<PathBuf> {
    let scope = if table.anywhere {
        fusion_data::PathScope::Anywhere
    } else {
        fusion_data::PathScope::ManifestFolder
    };
    let mut inference = fusion_data::infer_columns(table.path, table.label, table.column_types, scope)
        .map_err(|e| anyhow!(fusion_core::with_suggestion(&e.to_string())))?;
    if let Some(task) = table.task {
        inference.label = task;
        for column in inference.columns.iter_mut().filter(|c| c.name == table.label) {
            column.reason = "--label; --task".into();
        }
    }
    ui.say(format!("{} rows; columns as read:", inference.rows));
    ui.say(inference.table());
    // `best` on classes is a portfolio (see [`portfolio`]) over the `fast` encoders.
    let portfolio = table.preset == fusion_run::Preset::Best && inference.label == fusion_data::LabelKind::Classes;
    let preset = if portfolio {
        fusion_run::Preset::Fast
    } else {
        table.preset
    };
    let (mut config, notes) = fusion_run::zero_config(&inference, preset)?;
    config.allow_paths_outside_manifest = table.anywhere;
    for note in notes {
        ui.say(note);
    }
    config.validate()?;
    std::fs::create_dir_all(run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let run = Run::new(run_dir);
    run.write_json("columns.json", &inference)?;
    run.write_json("config.json", &config.portable())?;
    let path = run.file("config.json");
    ui.say(format!(
        "configuration: {} (edit it and train again with --config)",
        path.display()
    ));
    Ok(path)
}

/// When this process started (set first thing by `main`).
pub static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// When this process started.
pub fn started() -> std::time::Instant {
    *STARTED.get_or_init(std::time::Instant::now)
}

/// The `best` preset of a classification table (see [`fusion_run::train_portfolio`]):
/// the members' reports and curves, the ensemble's weights, evaluation and report.
pub fn portfolio(
    config_path: &Path,
    run_dir: &Path,
    epochs: Option<usize>,
    time_limit: Option<f64>,
    folds: Option<usize>,
    ui: Ui,
    device: Device,
) -> Result<()> {
    let mut base = RunConfig::load(config_path)?;
    if let Some(epochs) = epochs {
        base.train.epochs = epochs;
    }
    let portfolio = fusion_run::train_portfolio(base, run_dir, time_limit, folds, started(), device, &Shown::new(ui))?;
    for (_, runs) in &portfolio.members {
        for (run, fitted) in runs {
            plot_training(run, &fitted.summary, &run.config()?)?;
            report::write(run)?;
        }
    }
    let file = &portfolio.ensemble;
    for member in file.members.iter().filter(|m| m.weight > 0.0) {
        ui.say(format!(
            "{}: weight {:.3}, {} log loss {:.4}",
            member.run.display(),
            member.weight,
            file.selected_on,
            member.loss
        ));
    }
    ui.say(format!(
        "ensemble: {} log loss {:.4} on {} records",
        file.selected_on,
        file.losses.last().copied().unwrap_or(f64::NAN),
        file.records
    ));
    if let Some(eval) = &portfolio.eval {
        say_eval(ui, eval);
    }
    crate::ensemble::write_report(run_dir, file, portfolio.eval.as_ref())?;
    ui.say(format!("report: {}", run_dir.join("report.md").display()));
    ui.result(&serde_json::json!({"ensemble": file, "eval": portfolio.eval, "folds": portfolio.folds}))
}

/// `fusion train`, alone or as one rank of a data-parallel `group` (see
/// [`fusion_run::fit`]): progress, the evaluation and baselines said, plots and report.
pub fn train(
    config_path: &Path,
    run_dir: &Path,
    epochs: Option<usize>,
    ui: Ui,
    device: Device,
    group: Option<&dyn ProcessGroup>,
) -> Result<()> {
    let mut config = RunConfig::load(config_path)?;
    if let Some(epochs) = epochs {
        config.train.epochs = epochs;
    }
    let run = Run::new(run_dir);
    let (fitted, loaded) = fusion_run::fit(config.clone(), &run, device, group, started(), &Shown::new(ui))?;
    if group.is_some_and(|g| g.rank() != 0) {
        return Ok(());
    }
    plot_training(&run, &fitted.summary, &config)?;
    if let Some(eval) = &fitted.eval {
        plot_confusion(&run, eval)?;
    }
    if let (Some(baselines), Some(eval)) = (&fitted.baselines, &fitted.eval) {
        say_baselines(baselines, eval, ui);
    }
    let best = fitted.summary.best_epoch;
    ui.say(format!(
        "trained {} epochs in {:.1} s ({} parameters); best epoch {best}",
        fitted.summary.epochs.len(),
        fitted.seconds,
        fitted.parameters
    ));
    if let Some(eval) = &fitted.eval {
        say_eval(ui, eval);
    }
    let gpu = fusion_core::gpu_peak_memory(device);
    if let Some(gpu) = gpu {
        ui.say(format!(
            "peak GPU memory: {:.0} MB in tensors, {:.0} MB reserved",
            gpu.peak_allocated as f64 / MB,
            gpu.peak_reserved as f64 / MB
        ));
    }
    report::write(&run)?;
    let resources: fusion_run::Resources = run.read_json(fusion_run::RESOURCES_FILE)?;
    ui.say(resources.to_string());
    ui.say(format!("report: {}", run.file("report.md").display()));
    ui.result(&serde_json::json!({
        "run": run.root(),
        "epochs": fitted.summary.epochs,
        "best_epoch": best,
        "train_seconds": fitted.seconds,
        "parameters": fitted.parameters,
        "resumed_from": fitted.summary.resumed_from,
        "streamed_from": fitted.streamed,
        "peak_rss_mb": fusion_run::peak_rss_mb(),
        "peak_gpu_mb": gpu.map(|g| serde_json::json!({
            "allocated": g.peak_allocated as f64 / MB,
            "reserved": g.peak_reserved as f64 / MB,
        })),
        "eval": fitted.eval,
        "skipped": loaded.extraction.problems,
        "unusable": loaded.extraction.absent,
    }))
}

/// Bytes in a MiB.
const MB: f64 = (1 << 20) as f64;

/// The run's data for `split` from `manifest` (default: the run's).
pub fn run_split(run: &Run, manifest: Option<&Path>, split: Split, ui: Ui, device: Device) -> Result<SplitData> {
    Ok(run.split(manifest, split, device, &Shown::new(ui))?.0)
}

/// `fusion eval` of a run or an ensemble.
pub fn eval(folder: &Path, manifest: Option<&Path>, split: Split, ui: Ui, device: Device) -> Result<()> {
    let predictor = Predictor::load(folder, device)?;
    let record = predictor.evaluate(manifest, split, &Shown::new(ui))?;
    say_eval(ui, &record);
    match predictor.ensemble() {
        Some(file) => crate::ensemble::write_report(folder, file, Some(&record))?,
        None => {
            let run = Run::new(folder);
            plot_confusion(&run, &record)?;
            report::write(&run)?;
        }
    }
    ui.result(&record)
}

/// A `{"id", "error", ...}` line of a record that could not be predicted.
fn error_line(problem: &Problem) -> Result<String> {
    Ok(serde_json::to_string(&serde_json::json!({
        "id": problem.id,
        "error": problem.reason,
        "modality": problem.modality,
        "path": problem.path,
    }))?)
}

/// Writes prediction lines to `out` atomically.
fn write_lines(out: &Path, lines: &[String]) -> Result<()> {
    fusion_core::write_file_atomic(out, lines.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", out.display()))
}

/// `fusion predict` of a run or an ensemble: one JSON line per record, then the records
/// that could not be predicted as `{"id", "error"}` lines; fails (after writing them)
/// when no record could be predicted.
pub fn predict(folder: &Path, manifest: Option<&Path>, out: Option<&Path>, ui: Ui, device: Device) -> Result<()> {
    let predicted = Predictor::load(folder, device)?.predict_manifest(manifest, &Shown::new(ui))?;
    let out = out.map_or_else(|| folder.join("predictions.jsonl"), Path::to_path_buf);
    let mut lines = predicted
        .predictions
        .iter()
        .map(serde_json::to_string)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for problem in &predicted.errors {
        lines.push(error_line(problem)?);
    }
    write_lines(&out, &lines)?;
    let (count, skipped) = (predicted.predictions.len(), predicted.skipped);
    if count == 0 {
        bail!(
            "no record could be predicted: {skipped} skipped, listed in {}",
            out.display()
        );
    }
    ui.say(format!(
        "{count} predictions and {skipped} skipped records written to {}",
        out.display()
    ));
    ui.result(&serde_json::json!({"predictions": count, "skipped": skipped, "out": out}))
}

/// `fusion explain`: exact per-modality Shapley values and their plot.
pub fn explain(run_dir: &Path, manifest: Option<&Path>, split: Split, ui: Ui, device: Device) -> Result<()> {
    let run = Run::new(run_dir);
    let data = run_split(&run, manifest, split, ui, device)?;
    explain_on(&run, &data, split, ui, device)
}

/// [`explain`] on data already loaded (see [`Run::split_of`]).
pub fn explain_on(run: &Run, data: &SplitData, split: Split, ui: Ui, device: Device) -> Result<()> {
    let record = run.explain(data, split, device)?;
    let shapley = &record.shapley;
    for (m, name) in shapley.modalities.iter().enumerate() {
        ui.say(format!(
            "{name}: mean Shapley value {:+.4}, mean |value| {:.4} (over the {} of {} records that have it)",
            shapley.mean[m],
            shapley.mean_abs[m],
            shapley.present.get(m).copied().unwrap_or(0),
            shapley.values.len()
        ));
    }
    let of_what = match run.config()?.task {
        Task::Classification => "the predicted class's probability",
        Task::MultiLabel => "the predicted labels' mean probability",
        Task::Regression => "the predicted number",
    };
    plots::bars(
        &plot_path(run, "contributions")?,
        "Modality contributions",
        &format!("mean |Shapley value| of {of_what}"),
        &shapley.modalities,
        &shapley.mean_abs,
    )?;
    report::write(run)?;
    ui.result(&record)
}

/// `fusion robustness`: accuracy under missing modalities and growing noise, with plots.
pub fn robustness(
    run_dir: &Path,
    manifest: Option<&Path>,
    split: Split,
    noise: bool,
    ui: Ui,
    device: Device,
) -> Result<()> {
    let run = Run::new(run_dir);
    let data = run_split(&run, manifest, split, ui, device)?;
    robustness_on(&run, &data, split, noise, ui, device)
}

/// [`robustness`] on data already loaded (see [`Run::split_of`]).
pub fn robustness_on(run: &Run, data: &SplitData, split: Split, noise: bool, ui: Ui, device: Device) -> Result<()> {
    let record = run.robustness(data, split, noise, device, &Shown::new(ui))?;
    let score = score_name(run.config()?.task);
    for subset in &record.subsets {
        ui.say(format!(
            "with {}: {score} {:.4}",
            subset.modalities.join(" + "),
            subset.accuracy
        ));
    }
    let labels: Vec<String> = record.subsets.iter().map(|s| s.modalities.join("+")).collect();
    let values: Vec<f64> = record.subsets.iter().map(|s| s.accuracy).collect();
    plots::bars(
        &plot_path(run, "missing_modalities")?,
        &format!("{} with only these modalities", capitalised(score)),
        score,
        &labels,
        &values,
    )?;
    for curve in &record.noise {
        let points: Vec<String> = curve
            .points
            .iter()
            .map(|(level, accuracy)| format!("{level}: {accuracy:.4}"))
            .collect();
        ui.say(format!(
            "noise on {} (std / feature std: {score}): {}",
            curve.modality,
            points.join(", ")
        ));
    }
    if !record.noise.is_empty() {
        let series: Vec<(String, Vec<(f64, f64)>)> = record
            .noise
            .iter()
            .map(|c| (c.modality.clone(), c.points.clone()))
            .collect();
        plots::lines(
            &plot_path(run, "noise")?,
            &format!("{} as noise grows on one modality", capitalised(score)),
            "noise std / feature std",
            &[plots::Panel {
                y_label: score.into(),
                series,
            }],
        )?;
    }
    report::write(run)?;
    ui.result(&record)
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

/// `fusion export`: TorchScript with a free batch size, plus its signature.
pub fn export(run_dir: &Path, out: Option<&Path>, ui: Ui, device: Device) -> Result<()> {
    let run = Run::new(run_dir);
    let config = run.config()?;
    let (model, vs) = run.model(device)?;
    let example: Vec<ModalityInput> = fusion_run::example_inputs(&config, device);
    let out = out.map_or_else(|| run.file("model.pt"), Path::to_path_buf);
    let signature = export_torchscript(&model, &vs, &example, &run.classes()?, &out)?;
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

/// `fusion compare` (see [`fusion_run::compare`]): every row's curves, confusion and
/// report, then one table, one plot and the comparison's report.
/// Returns the rows and the data loaded for them.
pub fn compare(config_path: &Path, out: &Path, ui: Ui, device: Device) -> Result<(Vec<CompareRow>, Loaded)> {
    let config = RunConfig::load(config_path)?;
    let shown = Shown::new(Ui { epochs: false, ..ui });
    let compared = fusion_run::compare(config, out, device, &shown)?;
    for (run, fitted) in &compared.runs {
        plot_training(run, &fitted.summary, &run.config()?)?;
        if let Some(eval) = &fitted.eval {
            plot_confusion(run, eval)?;
        }
        report::write(run)?;
    }
    let rows = compared.rows;
    let compare = Run::new(out);
    let split = rows.first().map_or("test", |r| r.split.as_str());
    let score = score_name(compared.config.task);
    plots::bars(
        &plot_path(&compare, "compare")?,
        &format!("{} on {split} by fusion method", capitalised(score)),
        score,
        &rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        &rows.iter().map(|r| r.accuracy).collect::<Vec<_>>(),
    )?;
    let table = report::compare_table(&rows, compared.config.task);
    report::write_compare(&compare, &compared.config, &rows, &compared.loaded)?;
    ui.say(format!("\n{table}"));
    ui.say(format!("report: {}", compare.file("report.md").display()));
    ui.result(&rows)?;
    Ok((rows, compared.loaded))
}
