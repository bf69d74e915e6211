//! Training a configuration into its run folder as `fusion train` does: its data loaded
//! once (rank 0 fills the feature cache before the other ranks read it), trained alone or
//! as one rank of a data-parallel group, the best weights evaluated on the held-out split,
//! the simple baselines fitted beside it, and what the run cost recorded. Printing, plots
//! and reports are the caller's.

use std::{path::PathBuf, time::Instant};

use fusion_core::{Strategy, Task, TrainSummary};
use fusion_data::Split;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::{
    Baselines, EvalRecord, Loaded, ModalityAlone, Observer, Result, Run, RunConfig, describe, held_out_split,
    split_dataset,
};

/// `resources.json`: what a training run cost.
pub const RESOURCES_FILE: &str = "resources.json";

/// What a run cost: wall time from the process's start (extraction, training, evaluation,
/// baselines), training alone, and the peak resident memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Seconds from the process's start to the end of the run's work.
    pub wall_seconds: f64,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Peak resident memory in MB, where the system reports it.
    pub peak_rss_mb: Option<f64>,
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wall time {:.1} s (training {:.1} s), peak memory ",
            self.wall_seconds, self.train_seconds
        )?;
        match self.peak_rss_mb {
            Some(mb) => write!(f, "{mb:.0} MB"),
            None => f.write_str("not reported by this system"),
        }
    }
}

/// Bytes in a MiB.
const MB: f64 = (1 << 20) as f64;

/// The peak resident memory of this process in MB, where the system reports it.
pub fn peak_rss_mb() -> Option<f64> {
    fusion_core::peak_rss_bytes().map(|b| b as f64 / MB)
}

/// A configuration trained into its run folder.
#[derive(Debug)]
pub struct Fitted {
    /// Epoch records.
    pub summary: TrainSummary,
    /// The best weights on test (or val without a test split); `None` on a rank other
    /// than 0, or when no held-out record has a usable label.
    pub eval: Option<EvalRecord>,
    /// Wall time of training.
    pub seconds: f64,
    /// Trainable parameters.
    pub parameters: i64,
    /// Where the training inputs were streamed from, when they were.
    pub streamed: Option<PathBuf>,
    /// Each modality alone on val (see [`crate::modalities_alone`]).
    pub alone: Vec<ModalityAlone>,
    /// The simple baselines beside the run (classification; see [`crate::fit_baselines`]).
    pub baselines: Option<Baselines>,
}

/// Trains `config` on `loaded` (read with it) into `run`, telling `observer` how it goes,
/// then evaluates the best weights on test (or val when there is no test split) into
/// `eval.json`. A process that `strategy` says does not write (a data-parallel rank
/// other than 0) only trains.
/// Compare rows and portfolio members share one `loaded`.
pub fn fit_loaded(
    config: &RunConfig,
    loaded: &Loaded,
    run: &Run,
    device: Device,
    strategy: Strategy<'_>,
    observer: &dyn Observer,
) -> Result<Fitted> {
    let extraction = &loaded.extraction;
    let train_records = extraction.split_indices(Split::Train).len();
    observer.training(
        config.train.epochs,
        train_records.div_ceil(config.train.batch_size.max(1)),
    );
    let mut progress = |progress: fusion_core::Progress<'_>| observer.progress(&progress);
    let trained = crate::train(config, extraction, &loaded.specs, run, device, strategy, &mut progress)?;
    observer.trained();
    let mut fitted = Fitted {
        summary: trained.summary,
        eval: None,
        seconds: trained.seconds,
        parameters: trained.parameters,
        streamed: trained.streamed,
        alone: trained.alone,
        baselines: None,
    };
    if !strategy.writes() {
        return Ok(fitted);
    }
    for problem in &trained.skipped {
        observer.warn(&format!("skipped training record {}", describe(problem)));
    }
    for warning in fitted.alone.iter().filter_map(ModalityAlone::warning) {
        observer.warn(&warning);
    }
    let resumed_from = fitted.summary.resumed_from;
    if resumed_from >= config.train.epochs && resumed_from > 0 {
        observer.warn(&format!(
            "{} already trained {resumed_from} epochs (asked for {}): nothing trained; evaluating its best weights (epoch {})",
            run.root().display(),
            config.train.epochs,
            fitted.summary.best_epoch
        ));
    } else if resumed_from > 0 {
        observer.step(&format!("resumed from epoch {resumed_from}"));
    }
    let target = held_out_split(extraction);
    let data = split_dataset(config, extraction, &loaded.specs, target, &trained.classes, device)?;
    if data.records.is_empty() {
        // Not an accuracy over nothing; the training itself is fine.
        observer.warn(&format!(
            "no {} record has a label the run can use: nothing evaluated",
            target.name()
        ));
    } else {
        fitted.eval = Some(run.evaluate(&data, &trained.classes, target.name(), device)?);
    }
    if let Some(folder) = &fitted.streamed {
        observer.step(&format!("training inputs streamed from {}", folder.display()));
    }
    Ok(fitted)
}

/// `fusion train`: loads `config`'s data, trains it into `run` (alone, or as one rank of
/// a data-parallel group, as `strategy` says), evaluates it, and on rank 0 fits the simple baselines beside
/// it (`baselines.json`) and writes the records left out (`skipped.json`,
/// `unusable.json`) and what the run cost since `started` (`resources.json`).
pub fn fit(
    config: &RunConfig,
    run: &Run,
    device: Device,
    strategy: Strategy<'_>,
    started: Instant,
    observer: &dyn Observer,
) -> Result<(Fitted, Loaded)> {
    config.validate()?;
    // Rank 0 fills the feature cache first; the others then read it rather than compute it.
    let leader = strategy.writes();
    if let Some(group) = strategy.group().filter(|_| !leader) {
        group.barrier()?;
    }
    // A rank 0 that fails here exits, and the others' barrier fails with it.
    let (config, loaded) = crate::load(config, None, None, observer)?;
    if let Some(group) = strategy.group().filter(|_| leader) {
        group.barrier()?;
    }
    config.check_manifest(&loaded.manifest)?;
    let mut fitted = fit_loaded(&config, &loaded, run, device, strategy, observer)?;
    if !leader {
        return Ok((fitted, loaded));
    }
    if strategy.group().is_none() && config.interactions_fallback && every_modality_at_chance(&config, &fitted) {
        fitted = try_interactions(&config, &loaded, run, device, fitted, observer)?;
    }
    // Beside a trained run (not each compare row: they share their inputs).
    if fitted.eval.is_some() {
        fitted.baselines = simple_baselines(&config, &loaded, &run.classes()?, device)?;
        if let Some(baselines) = &fitted.baselines {
            run.write_json("baselines.json", baselines)?;
        }
    }
    run.write_json("skipped.json", &loaded.extraction.problems)?;
    run.write_json("unusable.json", &loaded.extraction.absent)?;
    let resources = Resources {
        wall_seconds: started.elapsed().as_secs_f64(),
        train_seconds: fitted.seconds,
        peak_rss_mb: peak_rss_mb(),
    };
    run.write_json(RESOURCES_FILE, &resources)?;
    Ok((fitted, loaded))
}

/// Whether a classification of several modalities learned nothing from any one alone.
fn every_modality_at_chance(config: &RunConfig, fitted: &Fitted) -> bool {
    config.task == Task::Classification && fitted.alone.len() > 1 && fitted.alone.iter().all(|a| a.at_chance)
}

/// The best epoch's validation accuracy of a fitted run (0 without one).
fn best_val_accuracy(fitted: &Fitted) -> f64 {
    let best = fitted.summary.best_epoch;
    fitted
        .summary
        .epochs
        .iter()
        .find(|e| e.epoch == best)
        .and_then(|e| e.val_accuracy)
        .unwrap_or(0.0)
}

/// Trains [`crate::interaction_config`] of `config` beside `run` (on the same loaded
/// data) and, when it scores higher on val than `fitted`, puts it in `run`'s place (the
/// zero-config files carried over, `fallback.json` saying why); otherwise removes it.
fn try_interactions(
    config: &RunConfig,
    loaded: &Loaded,
    run: &Run,
    device: Device,
    fitted: Fitted,
    observer: &dyn Observer,
) -> Result<Fitted> {
    let root = run.root().to_path_buf();
    let beside = |suffix: &str| {
        let mut name = root.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        root.with_file_name(name)
    };
    let (tried, replaced) = (beside(".interactions"), beside(".late"));
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| crate::Error::Io { path, source }
    };
    for stale in [&tried, &replaced] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).map_err(io(stale))?;
        }
    }
    observer.step(
        "every modality alone is at chance on val: the label may need modalities together; \
         training low-rank tensor fusion to compare",
    );
    let interactions = crate::interaction_config(config);
    let other = fit_loaded(
        &interactions,
        loaded,
        &Run::new(&tried),
        device,
        Strategy::SingleProcess,
        observer,
    )?;
    let (late, tensor) = (best_val_accuracy(&fitted), best_val_accuracy(&other));
    if tensor <= late {
        std::fs::remove_dir_all(&tried).map_err(io(&tried))?;
        observer.step(&format!(
            "kept late fusion: val accuracy {late:.3}, low-rank tensor fusion {tensor:.3}"
        ));
        return Ok(fitted);
    }
    let other_run = Run::new(&tried);
    for file in ["columns.json"] {
        if run.file(file).exists() {
            std::fs::copy(run.file(file), other_run.file(file)).map_err(io(&other_run.file(file)))?;
        }
    }
    if run.file("config.json").exists() {
        other_run.write_json("config.json", &interactions.portable())?;
    }
    other_run.write_json(
        "fallback.json",
        &serde_json::json!({
            "reason": "every modality alone was at chance on val",
            "late_fusion_val_accuracy": late,
            "low_rank_tensor_fusion_val_accuracy": tensor,
            "kept": "low_rank_tensor_fusion",
        }),
    )?;
    std::fs::rename(&root, &replaced).map_err(io(&root))?;
    std::fs::rename(&tried, &root).map_err(io(&tried))?;
    std::fs::remove_dir_all(&replaced).map_err(io(&replaced))?;
    observer.step(&format!(
        "kept low-rank tensor fusion: val accuracy {tensor:.3} against late fusion's {late:.3} ({} now holds it)",
        root.display()
    ));
    Ok(other)
}

/// The simple baselines (see [`crate::fit_baselines`]) of a classification with
/// `config`'s inputs over `classes`, on the split evaluation uses.
pub fn simple_baselines(
    config: &RunConfig,
    loaded: &Loaded,
    classes: &[String],
    device: Device,
) -> Result<Option<Baselines>> {
    if config.task != Task::Classification {
        return Ok(None);
    }
    let split = held_out_split(&loaded.extraction);
    let of = |split| split_dataset(config, &loaded.extraction, &loaded.specs, split, classes, device);
    let (train, val, held_out) = (of(Split::Train)?, of(Split::Val)?, of(split)?);
    crate::fit_baselines(
        config,
        &train.data,
        &val.data,
        &held_out.data,
        split.name(),
        classes.len(),
    )
}
