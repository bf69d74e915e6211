//! `fusion ensemble`: decision-level fusion of whole trained runs. Greedy ensemble
//! selection (Caruana et al. 2004) on the members' validation predictions picks weights;
//! the ensemble folder is then evaluated and predicted like a run (`eval`, `predict`).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use fusion_data::Split;
use fusion_run::{EnsembleFile, EvalRecord, Member, Predictor, is_ensemble};
use tch::Device;

use crate::{
    commands::say_eval,
    ui::{Shown, Ui},
};

/// Fails for commands that need one model (explain, robustness, export).
pub fn refuse(folder: &Path, command: &str) -> Result<()> {
    if is_ensemble(folder) {
        bail!(
            "{} is an ensemble: `{command}` works on one trained run; run it on a member",
            folder.display()
        );
    }
    Ok(())
}

/// `fusion ensemble`: selects weights on the members' val split (see
/// [`fusion_run::build_ensemble`]), then evaluates on test when the members' manifest has
/// one, and writes the report.
pub fn build(folders: &[PathBuf], out: &Path, rounds: usize, ui: Ui, device: Device) -> Result<()> {
    let shown = Shown::new(ui);
    let file = fusion_run::build_ensemble(folders, out, rounds, device, &shown)?;
    say_selection(ui, &file, &file.members.iter().collect::<Vec<_>>());
    let eval = match Predictor::load(out, device).and_then(|p| p.evaluate(None, Split::Test, &shown)) {
        Ok(record) => {
            say_eval(ui, &record);
            Some(record)
        }
        Err(e) => {
            ui.warn(format!("not evaluated on test: {e}"));
            None
        }
    };
    write_report(out, &file, eval.as_ref())?;
    ui.say(format!("report: {}", out.join("report.md").display()));
    ui.result(&serde_json::json!({"ensemble": file, "eval": eval}))
}

/// The weights greedy selection gave `members` (of `file`) and the ensemble's loss on the
/// records it selected on.
pub fn say_selection(ui: Ui, file: &EnsembleFile, members: &[&Member]) {
    for member in members {
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
}

/// The ensemble's `report.md`: members, weights and its evaluation.
pub fn write_report(folder: &Path, file: &EnsembleFile, eval: Option<&EvalRecord>) -> Result<()> {
    let mut out = format!(
        "# Ensemble: {}\n\nGreedy ensemble selection (Caruana et al. 2004, with replacement, {} rounds) on the {} records of `{}` that every member predicts; the prediction is the weighted mean of the members' class probabilities.\n\n| member | weight | {} log loss |\n|---|---|---|\n",
        folder.display(),
        file.rounds,
        file.records,
        file.selected_on,
        file.selected_on
    );
    for m in &file.members {
        let _ = writeln!(out, "| `{}` | {:.3} | {:.4} |", m.run.display(), m.weight, m.loss);
    }
    let _ = writeln!(
        out,
        "| **ensemble** | 1 | {:.4} |\n",
        file.losses.last().copied().unwrap_or(f64::NAN)
    );
    if let Some(eval) = eval {
        let _ = writeln!(
            out,
            "## Evaluation on {}\n\nAccuracy **{:.4}**, macro-F1 {:.4}, ECE {:.4}, log loss {:.4}, {} samples ({} left out).",
            eval.split,
            eval.metrics.accuracy,
            eval.metrics.macro_f1,
            eval.metrics.ece,
            eval.loss,
            eval.metrics.count,
            eval.skipped.len()
        );
    }
    let path = folder.join("report.md");
    fusion_core::write_file_atomic(&path, out).with_context(|| format!("cannot write {}", path.display()))
}
