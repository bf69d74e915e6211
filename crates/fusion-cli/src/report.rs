//! `report.md`: one page tying a run's configuration, curves, metrics, explanations and
//! robustness together, rebuilt from the run folder's files after every command.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use fusion_core::{EpochRecord, Task, TaskMetrics};

use fusion_run::{Run, RunConfig, describe};

use fusion_run::{EvalRecord, Loaded};

use fusion_run::{CompareRow, ExplainRecord, RobustnessRecord, score_name};

use crate::{commands::headline, ui::four_places};

fn image(out: &mut String, run: &Run, stem: &str, alt: &str) {
    if run.file(&format!("plots/{stem}.png")).exists() {
        let _ = writeln!(out, "\n![{alt}](plots/{stem}.png) ([SVG](plots/{stem}.svg))\n");
    }
}

fn optional<T: for<'de> serde::Deserialize<'de>>(run: &Run, name: &str) -> Option<T> {
    run.file(name).exists().then(|| run.read_json(name).ok()).flatten()
}

fn epochs(run: &Run) -> Vec<EpochRecord> {
    std::fs::read_to_string(run.folder.metrics())
        .map(|text| text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}

/// The evaluation section: the task's metrics, per-group rows, the confusion matrix of a
/// classification, and the records left out.
/// The simple baselines on the same records, and the run's gain over the best of them.
fn write_baselines(out: &mut String, baselines: &fusion_run::Baselines, accuracy: f64) {
    let _ = writeln!(
        out,
        "## Simple baselines on {}

A logistic regression per modality on the same inputs (L2 penalty chosen on val; a record without the modality counts as wrong) and the late fusion of those regressions (the sum of their log-probabilities over a record's modalities).

| baseline | L2 | val accuracy | accuracy | macro-F1 |
|---|---|---|---|---|",
        baselines.split
    );
    for row in &baselines.rows {
        let l2 = row.l2.map_or("–".to_string(), |l2| format!("{l2:.0e}"));
        let _ = writeln!(
            out,
            "| {} | {l2} | {:.4} | {:.4} | {:.4} |",
            row.name, row.val_accuracy, row.accuracy, row.macro_f1
        );
    }
    for skipped in &baselines.skipped {
        let _ = writeln!(
            out,
            "
No baseline for {skipped}."
        );
    }
    if let Some(best) = baselines.best() {
        let _ = writeln!(
            out,
            "
Fusion gain over the best baseline ({}): **{:+.4}** accuracy.
",
            best.name,
            accuracy - best.accuracy
        );
    }
}

fn write_eval(out: &mut String, run: &Run, eval: &EvalRecord) {
    if eval.task != TaskMetrics::Classification {
        let _ = writeln!(out, "## Evaluation on {}\n\n{}.\n", eval.split, headline(eval));
    } else {
        let _ = writeln!(
            out,
            "## Evaluation on {}\n\nAccuracy **{:.4}**, macro-F1 {:.4}, ECE {:.4}, loss {:.4}, {} samples.\n",
            eval.split, eval.metrics.accuracy, eval.metrics.macro_f1, eval.metrics.ece, eval.loss, eval.metrics.count
        );
        if let Some(groups) = &eval.groups {
            *out += "| group | samples | accuracy | macro-F1 |\n|---|---|---|---|\n";
            for (name, m) in &groups.groups {
                let _ = writeln!(out, "| {name} | {} | {:.4} | {:.4} |", m.count, m.accuracy, m.macro_f1);
            }
            let _ = writeln!(
                out,
                "\nLargest gap between groups: accuracy {:.4}, macro-F1 {:.4}.\n",
                groups.accuracy_gap, groups.macro_f1_gap
            );
        }
        image(out, run, "confusion", "confusion matrix");
    }
    if let Some(c) = &eval.calibration {
        let _ = writeln!(
            out,
            "### Calibration\n\nTemperature {:.4} (fitted on val), on these records:\n\n| | accuracy | NLL | ECE | Brier |\n|---|---|---|---|---|\n| the model's probabilities | {:.4} | {:.4} | {:.4} | {:.4} |\n| calibrated | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            c.temperature,
            c.before.accuracy,
            c.before.nll,
            c.before.ece,
            c.before.brier,
            c.after.accuracy,
            c.after.nll,
            c.after.ece,
            c.after.brier
        );
        image(
            out,
            run,
            "reliability",
            "reliability diagram before and after calibration",
        );
        *out += "| conformal sets at | coverage | classes per set |\n|---|---|---|\n";
        for k in &c.coverage {
            let _ = writeln!(out, "| {:.2} | {:.4} | {:.2} |", k.target, k.achieved, k.mean_set_size);
        }
        *out += "\n";
        group_coverage(out, &c.groups);
    }
    if let Some(labels) = &eval.label_calibration {
        let _ = writeln!(
            out,
            "### Calibration\n\nA temperature per label (fitted on val): {}. On these records:\n\n| | label accuracy | NLL | ECE | Brier |\n|---|---|---|---|---|\n| the model's probabilities | {:.4} | {:.4} | {:.4} | {:.4} |\n| calibrated | {:.4} | {:.4} | {:.4} | {:.4} |\n",
            labels
                .temperatures
                .iter()
                .map(|t| format!("{t:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            labels.before.label_accuracy,
            labels.before.nll,
            labels.before.ece,
            labels.before.brier,
            labels.after.label_accuracy,
            labels.after.nll,
            labels.after.ece,
            labels.after.brier
        );
    }
    if let Some(intervals) = &eval.intervals {
        *out += "### Conformal intervals\n\nSplit conformal intervals (prediction ± a quantile of the val records' absolute residuals) on these records:\n\n| coverage asked | achieved | width |\n|---|---|---|\n";
        for k in &intervals.coverage {
            let _ = writeln!(
                out,
                "| {:.2} | {:.4} | {} |",
                k.target,
                k.achieved,
                crate::commands::calibrate::width(k.width)
            );
        }
        *out += "\n";
        group_coverage(out, &intervals.groups);
    }
    write_fairness(out, eval.fairness.as_ref());
    if !eval.skipped.is_empty() {
        let _ = writeln!(
            out,
            "{} records were left out of this evaluation:\n",
            eval.skipped.len()
        );
        for p in eval.skipped.iter().take(20) {
            let _ = writeln!(out, "- {}", describe(p));
        }
        *out += "\n";
    }
}

/// Per group: the task's metric, calibration and each modality's mean Shapley value; the
/// worst group, the gap, and the modality leaned on most differently.
fn write_fairness(out: &mut String, fairness: Option<&fusion_run::Fairness>) {
    *out += "### Fairness\n\n";
    let Some(f) = fairness else {
        *out += "The records have no groups: a manifest column `group` (or `--column-types NAME=group`) gives per-group metrics, calibration and contributions here.\n\n";
        return;
    };
    let _ = write!(out, "| group | records | {} | ECE |", f.metric);
    for m in &f.modalities {
        let _ = write!(out, " Shapley {m} |");
    }
    let _ = write!(out, "\n|---|---|---|---|{}\n", "---|".repeat(f.modalities.len()));
    for g in &f.groups {
        let _ = write!(
            out,
            "| {} | {} | {} | {} |",
            g.group,
            g.records,
            four_places(g.score),
            four_places(g.ece)
        );
        for v in &g.shapley {
            let _ = write!(out, " {} |", four_places(*v));
        }
        *out += "\n";
    }
    if let (Some(worst), Some(gap)) = (&f.worst, f.gap) {
        let _ = writeln!(
            out,
            "\nWorst group: **{worst}**; gap between the best and the worst group: {gap:.4} {}.",
            f.metric
        );
    }
    match &f.leaning {
        Some(l) => {
            let _ = writeln!(
                out,
                "The modality the model leans on most differently between groups: **{}** (mean Shapley value {:.4} for {}, {:.4} for {}).\n",
                l.modality, l.most.1, l.most.0, l.least.1, l.least.0
            );
        }
        None => *out += "\n",
    }
}

/// A table of conformal coverage within each group; nothing when there are no groups.
fn group_coverage<C: fusion_run::Achieved>(out: &mut String, groups: &[fusion_run::GroupCoverage<C>]) {
    let Some(first) = groups.first() else {
        return;
    };
    *out +=
        "Coverage within each group (the guarantee is on average over records, not per group):\n\n| group | records | ";
    *out += &first
        .achieved()
        .iter()
        .map(|(t, _)| format!("{t:.2}"))
        .collect::<Vec<_>>()
        .join(" | ");
    *out += " |\n|---|---|";
    *out += &"---|".repeat(first.coverage.len());
    *out += "\n";
    for group in groups {
        let cells: Vec<String> = group.achieved().iter().map(|(_, a)| format!("{a:.4}")).collect();
        let _ = writeln!(out, "| {} | {} | {} |", group.group, group.records, cells.join(" | "));
    }
    *out += "\n";
}

/// Writes the run's `report.md` from what its folder holds.
pub fn write(run: &Run) -> Result<()> {
    let config: RunConfig = run.config()?;
    let mut out = format!("# Run report: {}\n\n", run.root().display());
    let _ = writeln!(out, "Manifest: `{}`\n", config.manifest.display());
    out += "## Model\n\n| modality | features | size | encoder |\n|---|---|---|---|\n";
    for m in &config.modalities {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | `{}` |",
            m.name,
            serde_json::to_string(&m.features)?,
            m.features.dim(),
            serde_json::to_string(&m.encoder)?
        );
    }
    let _ = writeln!(
        out,
        "\nTask: {}. Fusion: `{}`; hidden size {}, dropout {}.\n\nTraining: `{}`\n",
        config.task.name(),
        serde_json::to_string(&config.fusion)?,
        config.hidden_dim,
        config.dropout,
        serde_json::to_string(&config.train)?
    );
    if let Ok(resources) = run.read_json::<fusion_run::Resources>(fusion_run::RESOURCES_FILE) {
        let _ = writeln!(out, "Cost: {resources}.\n");
    }
    let records = epochs(run);
    if !records.is_empty() {
        out += "## Training\n\n";
        if !matches!(config.fusion, fusion_core::FusionConfig::Early { .. }) && config.train.branch_loss_weight > 0.0 {
            let _ = writeln!(
                out,
                "The train loss is the fused prediction's plus {} × the mean of the per-branch losses; the val loss is the fused prediction's alone.\n",
                config.train.branch_loss_weight
            );
        }
        let val_score = if config.task == Task::Regression {
            "val R²"
        } else {
            "val accuracy"
        };
        let _ = writeln!(
            out,
            "| epoch | lr | train loss | val loss | {val_score} | seconds |\n|---|---|---|---|---|---|"
        );
        let cell = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.4}"));
        for e in &records {
            let _ = writeln!(
                out,
                "| {} | {:.2e} | {:.4} | {} | {} | {:.2} |",
                e.epoch,
                e.lr,
                e.train_loss,
                cell(e.val_loss),
                cell(e.val_accuracy.or(e.val_r2)),
                e.seconds
            );
        }
        image(&mut out, run, "training", "training curves");
    }
    if let Some(alone) = optional::<Vec<fusion_run::ModalityAlone>>(run, "modalities.json")
        && !alone.is_empty()
    {
        out += "## Each modality alone

The best weights on the validation records that have the modality, every other modality absent; chance is always answering the commonest class of those records.

| modality | records | accuracy | chance | |
|---|---|---|---|---|
";
        for a in &alone {
            let _ = writeln!(
                out,
                "| {} | {} | {:.4} | {:.4} | {} |",
                a.modality,
                a.samples,
                a.accuracy,
                a.chance,
                if a.at_chance { "**at chance**" } else { "" }
            );
        }
        for warning in alone.iter().filter_map(fusion_run::ModalityAlone::warning) {
            let _ = writeln!(
                out,
                "
> {warning}"
            );
        }
        out += "
";
    }
    if let Some(eval) = optional::<EvalRecord>(run, "eval.json") {
        write_eval(&mut out, run, &eval);
        if let Some(baselines) = optional::<fusion_run::Baselines>(run, "baselines.json")
            && baselines.split == eval.split
        {
            write_baselines(&mut out, &baselines, eval.metrics.accuracy);
        }
    }
    if let Some(explain) = optional::<ExplainRecord>(run, "explain.json") {
        let s = &explain.shapley;
        let _ = writeln!(
            out,
            "## Modality contributions ({})\n\nExact Shapley values of {} (absent modalities as the baseline), on {} records. Each mean is over the records that have that modality, not over all of them.\n\n| modality | records with it | mean | mean abs |\n|---|---|---|---|",
            explain.split,
            match config.task {
                Task::Classification => "the probability of the class predicted from all of a record's modalities",
                Task::MultiLabel =>
                    "the mean probability of each label's state predicted from all of a record's modalities",
                Task::Regression => "the predicted number",
                Task::Contrastive => "nothing (a contrastive model is not explained)",
            },
            s.values.len()
        );
        for (m, name) in s.modalities.iter().enumerate() {
            let with = s.present.get(m).map_or("–".to_string(), usize::to_string);
            let _ = writeln!(out, "| {name} | {with} | {:+.4} | {:.4} |", s.mean[m], s.mean_abs[m]);
        }
        image(&mut out, run, "contributions", "modality contributions");
    }
    if let Some(robust) = optional::<RobustnessRecord>(run, "robustness.json") {
        let _ = writeln!(
            out,
            "## Robustness ({})\n\n| modalities present | {} |\n|---|---|",
            robust.split,
            score_name(config.task)
        );
        for s in &robust.subsets {
            let _ = writeln!(out, "| {} | {:.4} |", s.modalities.join(" + "), s.accuracy);
        }
        image(&mut out, run, "missing_modalities", "accuracy with missing modalities");
        if let Some(first) = robust.noise.first() {
            let _ = write!(
                out,
                "{} as Gaussian noise (std as a fraction of the features' own) grows on one modality:\n\n| modality |",
                score_name(config.task)
            );
            for (level, _) in &first.points {
                let _ = write!(out, " {level} |");
            }
            out += "\n|---|";
            out += &"---|".repeat(first.points.len());
            out += "\n";
            for curve in &robust.noise {
                let _ = write!(out, "| {} |", curve.modality);
                for (_, accuracy) in &curve.points {
                    let _ = write!(out, " {accuracy:.4} |");
                }
                out += "\n";
            }
        }
        image(&mut out, run, "noise", "accuracy under noise");
    }
    if run.file("model.pt").exists() {
        out += "## Export\n\nTorchScript: `model.pt`, inputs in `model.pt.json`; it takes raw features (the standardisation fitted in training is part of the model).\n";
    }
    let path = run.file("report.md");
    fusion_core::write_file_atomic(&path, out).with_context(|| format!("cannot write {}", path.display()))
}

/// The comparison as a Markdown table.
pub fn compare_table(rows: &[CompareRow], task: Task) -> String {
    if task == Task::Contrastive {
        return retrieval_table(rows);
    }
    let groups = rows.iter().any(|r| r.worst_group_score.is_some());
    let mut out = format!(
        "| method | samples | {} | ECE | parameters | train s |",
        score_name(task)
    );
    out += if groups { " worst group | group gap |\n" } else { "\n" };
    out += &"|---".repeat(if groups { 8 } else { 6 });
    out += "|\n";
    for r in rows {
        // A regression has no calibration error to show.
        let ece = if task == Task::Regression {
            "–".to_string()
        } else {
            format!("{:.4}", r.ece)
        };
        let _ = write!(
            out,
            "| {} | {} | {:.4} | {ece} | {} | {:.1} |",
            r.name, r.samples, r.accuracy, r.parameters, r.seconds
        );
        if groups {
            let _ = write!(
                out,
                " {} | {} |",
                four_places(r.worst_group_score),
                four_places(r.group_gap)
            );
        }
        out += "\n";
    }
    out
}

/// A contrastive comparison: recall and MRR averaged over every direction of each row.
fn retrieval_table(rows: &[CompareRow]) -> String {
    let mut out = "| row | records | mean R@1 | R@5 | R@10 | MRR | parameters | train s |\n".to_string();
    out += &"|---".repeat(8);
    out += "|\n";
    for r in rows {
        let Some(summary) = &r.retrieval else { continue };
        let at = |k: usize| four_places(summary.recall_at.iter().find(|(at, _)| *at == k).map(|(_, v)| *v));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.4} | {} | {:.1} |",
            r.name,
            r.samples,
            at(1),
            at(5),
            at(10),
            summary.mean_reciprocal_rank,
            r.parameters,
            r.seconds
        );
    }
    out
}

/// The comparison folder's `report.md`.
pub fn write_compare(run: &Run, config: &RunConfig, rows: &[CompareRow], loaded: &Loaded) -> Result<()> {
    let seed = config.train.seed;
    let (title, shared, rows_read) = match config.task {
        Task::Contrastive => (
            "Retrieval comparison",
            format!("Same features and seed ({seed}) for every row (a row may change encoders)"),
            "for every row: recall and mean reciprocal rank averaged over every direction between the row's modalities (records with the same content count as hits)",
        ),
        _ => (
            "Fusion comparison",
            format!("Same features, encoders and seed ({seed}) for every method"),
            "for every row: where a single-modality model's modality is absent it outputs the uniform distribution (a regression: the training mean)",
        ),
    };
    let mut out = format!(
        "# {title}: {}\n\nManifest `{}`: {} usable records, {} left out. {shared}, and the same test records (val when there is no test split) {rows_read}. Scores of the best epoch's weights.\n\n",
        run.root().display(),
        loaded.manifest.path.display(),
        loaded.extraction.records.len(),
        loaded.extraction.problems.len() + loaded.manifest.rejected.len(),
    );
    out += &compare_table(rows, config.task);
    image(&mut out, run, "compare", &format!("{} by row", score_name(config.task)));
    out += "\nRuns (each with its own report):\n\n";
    for r in rows {
        let Some(name) = r.run.as_ref().and_then(|run| run.file_name()) else {
            continue;
        };
        let name = name.to_string_lossy();
        let _ = writeln!(out, "- {}: [{name}/report.md]({name}/report.md)", r.name);
    }
    if rows.iter().any(|r| r.run.is_none()) {
        out += "
The `baseline:` rows are logistic regressions fitted on the same inputs (one per modality, L2 penalty chosen on val) and their late fusion; `baselines.json` holds them.\n";
    }
    if !loaded.extraction.problems.is_empty() {
        out += "\nRecords left out:\n\n";
        for p in &loaded.extraction.problems {
            let _ = writeln!(out, "- {}", describe(p));
        }
    }
    if !loaded.extraction.absent.is_empty() {
        out += "\nFiles that could not be used (that modality is absent for that record, the rest kept):\n\n";
        for p in &loaded.extraction.absent {
            let _ = writeln!(out, "- {}", describe(p));
        }
    }
    let path = run.file("report.md");
    fusion_core::write_file_atomic(&path, out).with_context(|| format!("cannot write {}", path.display()))
}
