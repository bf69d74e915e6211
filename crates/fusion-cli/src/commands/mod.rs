//! One module per command (cargo's `commands/` shape), each parsing nothing and computing
//! nothing of its own: it calls fusion-run, then prints, plots and writes the report.
//! Helpers the commands share are here.

pub mod calibrate;
pub mod compare;
pub mod demo;
pub mod ensemble;
pub mod eval;
pub mod explain;
pub mod export;
pub mod info;
pub mod predict;
pub mod retrieval;
pub mod serve;
pub mod train;
pub mod validate;

use std::path::PathBuf;

use anyhow::{Context, Result};
use fusion_core::{FusionConfig, Task, TaskMetrics, TrainSummary};
use fusion_run::{EvalRecord, Run, RunConfig};

use crate::{
    plots,
    ui::{Ui, four_places},
};

/// When this process started (set first thing by `main`).
pub static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// When this process started.
pub fn started() -> std::time::Instant {
    *STARTED.get_or_init(std::time::Instant::now)
}

/// Bytes in a MiB.
const MB: f64 = (1 << 20) as f64;

/// Where the stem of a plot of `run` goes (`.png` and `.svg` are added).
pub fn plot_path(run: &Run, name: &str) -> Result<PathBuf> {
    let dir = run.file("plots");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.join(name))
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

/// A calibrated evaluation's reliability diagram (accuracy against confidence, before and
/// after calibration, and the diagonal of perfect calibration), as a plot of `folder`.
pub fn plot_reliability(folder: &std::path::Path, record: &EvalRecord) -> Result<()> {
    let Some(calibrated) = &record.calibration else {
        return Ok(());
    };
    let points = |bins: &[fusion_core::ReliabilityBin]| bins.iter().map(|b| (b.confidence, b.accuracy)).collect();
    let panel = plots::Panel {
        y_label: "accuracy".into(),
        series: vec![
            ("perfectly calibrated".into(), vec![(0.0, 0.0), (1.0, 1.0)]),
            (
                "the model's probabilities".into(),
                points(&calibrated.reliability_before),
            ),
            (
                format!("calibrated (temperature {:.3})", calibrated.temperature),
                points(&calibrated.reliability_after),
            ),
        ],
    };
    plots::lines(
        &plot_path(&Run::new(folder), "reliability")?,
        &format!("Reliability on {}: accuracy against confidence", record.split),
        "confidence (top probability, mean per bin)",
        &[panel],
    )?;
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
        TaskMetrics::Retrieval { pairs } => {
            let directions: Vec<String> = pairs
                .iter()
                .map(|p| {
                    let recall: Vec<String> = p
                        .metrics
                        .recall_at
                        .iter()
                        .map(|(k, r)| format!("R@{k} {r:.4}"))
                        .collect();
                    format!(
                        "{} → {}: {}, median rank {}, MRR {:.4} ({} queries)",
                        p.query,
                        p.key,
                        recall.join(" "),
                        p.metrics.median_rank,
                        p.metrics.mean_reciprocal_rank,
                        p.metrics.queries
                    )
                })
                .collect();
            format!("mean recall@1 {:.4}; {}", m.accuracy, directions.join("; "))
        }
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
    if let Some(labels) = &eval.label_calibration {
        ui.say(format!(
            "  calibrated (a temperature per label): before {}",
            calibrate::label_scores_line(&labels.before)
        ));
        ui.say(format!("  after {}", calibrate::label_scores_line(&labels.after)));
    }
    if let Some(fairness) = &eval.fairness {
        say_fairness(ui, fairness, eval.groups.is_none());
    }
    if let Some(intervals) = &eval.intervals {
        for c in &intervals.coverage {
            ui.say(format!(
                "  conformal intervals at {:.2}: coverage {:.4}, width {}",
                c.target,
                c.achieved,
                calibrate::width(c.width)
            ));
        }
        say_group_coverage(ui, &intervals.groups);
    }
    if let Some(calibrated) = &eval.calibration {
        ui.say(format!(
            "  calibrated (temperature {:.4}): before {}",
            calibrated.temperature,
            calibrate::scores_line(&calibrated.before)
        ));
        ui.say(format!("  after {}", calibrate::scores_line(&calibrated.after)));
        for c in &calibrated.coverage {
            ui.say(format!(
                "  conformal sets at {:.2}: coverage {:.4}, {:.2} classes per set",
                c.target, c.achieved, c.mean_set_size
            ));
        }
        say_group_coverage(ui, &calibrated.groups);
    }
}

/// The worst group, the gap and the modality leaned on differently (with a line per group
/// when `each_group`: the task's metric is not printed per group above).
fn say_fairness(ui: Ui, fairness: &fusion_run::Fairness, each_group: bool) {
    if each_group {
        for g in &fairness.groups {
            ui.say(format!(
                "  group {}: {} {} ({} samples)",
                g.group,
                fairness.metric,
                four_places(g.score),
                g.records
            ));
        }
    }
    if let (Some(worst), Some(gap)) = (&fairness.worst, fairness.gap) {
        ui.say(format!("  worst group {worst}; {} gap {gap:.4}", fairness.metric));
    }
    if let Some(l) = &fairness.leaning {
        ui.say(format!(
            "  modality leaned on most differently: {} (mean Shapley value {:.4} for {}, {:.4} for {})",
            l.modality, l.most.1, l.most.0, l.least.1, l.least.0
        ));
    }
}

/// A line per group of its conformal coverage at each target.
fn say_group_coverage<C: fusion_run::Achieved>(ui: Ui, groups: &[fusion_run::GroupCoverage<C>]) {
    for group in groups {
        let at = |(target, achieved): (f64, f64)| format!("{target:.2}: {achieved:.4}");
        ui.say(format!(
            "    group {} ({} records): coverage {}",
            group.group,
            group.records,
            group.achieved().into_iter().map(at).collect::<Vec<_>>().join(", ")
        ));
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}
