//! `fusion train`: a configuration, or a table with no configuration (a preset, or the
//! `best` portfolio), trained into a run folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use fusion_core::Strategy;
use fusion_run::{EvalRecord, Run, RunConfig};
use tch::Device;

use super::{MB, plot_confusion, plot_training, say_eval, started};
use crate::{
    report,
    ui::{Shown, Ui},
};

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
    let base = RunConfig::load(config_path)?;
    let options = fusion_run::PortfolioOptions {
        epochs,
        time_limit,
        folds,
    };
    let portfolio = fusion_run::train_portfolio(base, run_dir, options, started(), device, &Shown::new(ui))?;
    for (_, runs) in &portfolio.members {
        for (run, fitted) in runs {
            plot_training(run, &fitted.summary, &run.config()?)?;
            report::write(run)?;
        }
    }
    let file = &portfolio.ensemble;
    // Twenty fold runs of which most get no weight: only the chosen ones.
    let chosen: Vec<_> = file.members.iter().filter(|m| m.weight > 0.0).collect();
    super::ensemble::say_selection(ui, file, &chosen);
    if let Some(eval) = &portfolio.eval {
        say_eval(ui, eval);
    }
    super::ensemble::write_report(run_dir, file, portfolio.eval.as_ref())?;
    ui.say(format!("report: {}", run_dir.join("report.md").display()));
    ui.result(&serde_json::json!({"ensemble": file, "eval": portfolio.eval, "folds": portfolio.folds}))
}

/// `fusion train`, alone or as one rank of a data-parallel group (see
/// [`fusion_run::fit`]): progress, the evaluation and baselines said, plots and report.
pub fn train(
    config_path: &Path,
    run_dir: &Path,
    epochs: Option<usize>,
    ui: Ui,
    device: Device,
    strategy: Strategy<'_>,
) -> Result<()> {
    let mut config = RunConfig::load(config_path)?;
    if let Some(epochs) = epochs {
        config.train.epochs = epochs;
    }
    let run = Run::new(run_dir);
    let (fitted, loaded) = fusion_run::fit(&config, &run, device, strategy, started(), &Shown::new(ui))?;
    if !strategy.writes() {
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
