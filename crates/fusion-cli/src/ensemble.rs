//! `fusion ensemble`: decision-level fusion of whole trained runs. Greedy ensemble
//! selection (Caruana et al. 2004) on the members' validation predictions picks weights;
//! the ensemble folder is then evaluated and predicted like a run (`eval`, `predict`).

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use fusion_core::{evaluate, log_loss, probability_metrics, select_ensemble};
use fusion_data::Split;
use fusion_run::{ENSEMBLE_FILE, EVAL_BATCH, EnsembleFile, EvalRecord, Member, Run, is_ensemble, split_name};
use tch::Device;

use crate::commands::{Prediction, Ui, predict_records, run_split, say_eval, write_lines};

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

/// A member's predictions on a split, keyed by record id.
struct SplitPredictions {
    ids: Vec<String>,
    labels: Vec<usize>,
    groups: Option<Vec<String>>,
    probabilities: Vec<Vec<f32>>,
    skipped: Vec<fusion_data::Problem>,
}

fn split_predictions(
    run: &Run,
    manifest: Option<&Path>,
    split: Split,
    ui: Ui,
    device: Device,
) -> Result<SplitPredictions> {
    let (data, _, loaded) = run_split(run, manifest, split, ui, device)?;
    let (model, _vs) = run.model(device)?;
    let evaluation = evaluate(&model, &data.data, EVAL_BATCH)?;
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
    Ok(SplitPredictions {
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

/// Weighted sums of members' probabilities per record id, in order of first appearance;
/// `T` is what the first member to predict a record says about it (its label…).
struct Blend<T> {
    order: Vec<String>,
    entries: HashMap<String, (T, Vec<f64>, f64, usize)>,
}

impl<T> Blend<T> {
    fn new() -> Self {
        Self {
            order: Vec::new(),
            entries: HashMap::new(),
        }
    }

    /// Adds `weight · probabilities` to record `id`; returns what the record's first member
    /// said of it.
    fn add(&mut self, id: &str, about: impl FnOnce() -> T, probabilities: &[f32], weight: f64) -> &T {
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
    fn records(&self) -> impl Iterator<Item = (&str, &T, Vec<f32>, usize)> {
        self.order.iter().map(|id| {
            let (about, sum, weight, members) = &self.entries[id];
            let probabilities = sum.iter().map(|s| (s / weight) as f32).collect();
            (id.as_str(), about, probabilities, *members)
        })
    }
}

/// Class probabilities of each record, per member.
type MemberProbabilities = Vec<Vec<Vec<f32>>>;

/// Every member's predictions on the records all of them predicted, in the first member's
/// order, and those records' labels.
fn align(runs: &[Run], predictions: &[SplitPredictions]) -> Result<(MemberProbabilities, Vec<usize>)> {
    let lookups: Vec<HashMap<&str, usize>> = predictions
        .iter()
        .map(|p| p.ids.iter().enumerate().map(|(k, id)| (id.as_str(), k)).collect())
        .collect();
    let first = &predictions[0];
    let mut members = vec![Vec::new(); predictions.len()];
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
            if predictions[m].labels[row] != first.labels[k] {
                bail!(
                    "record {id} has another label for {} than for {}: the members must share one dataset",
                    runs[m].root().display(),
                    runs[0].root().display()
                );
            }
            members[m].push(predictions[m].probabilities[row].clone());
        }
        labels.push(first.labels[k]);
    }
    Ok((members, labels))
}

/// The members as runs, checked: distinct, trained, one class list.
fn load_members(folders: &[PathBuf]) -> Result<(Vec<Run>, Vec<String>)> {
    if folders.is_empty() {
        bail!("an ensemble needs at least one run");
    }
    let mut runs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut classes: Option<(Vec<String>, PathBuf)> = None;
    for folder in folders {
        let absolute = std::path::absolute(folder).with_context(|| format!("{}", folder.display()))?;
        if !seen.insert(absolute.clone()) {
            bail!("{} is listed twice", folder.display());
        }
        if is_ensemble(&absolute) {
            bail!("{} is an ensemble; list its members instead", folder.display());
        }
        let run = Run::new(&absolute);
        let task = run.config()?.task;
        if task != fusion_core::Task::Classification {
            // Greedy selection minimises the log loss of class probabilities.
            bail!(
                "{} is a {} run: ensembles combine classification runs",
                folder.display(),
                task.name()
            );
        }
        let own = run.classes()?;
        match &classes {
            None => classes = Some((own, absolute.clone())),
            Some((first, first_run)) if *first != own => bail!(
                "{} has the classes {own:?}, {} has {first:?}: members must share their classes",
                folder.display(),
                first_run.display()
            ),
            Some(_) => {}
        }
        runs.push(run);
    }
    Ok((runs, classes.map(|c| c.0).unwrap_or_default()))
}

/// `fusion ensemble`: selects weights on the members' val split, then evaluates on test
/// (when the members' manifest has one) and writes the ensemble folder.
pub fn build(folders: &[PathBuf], out: &Path, rounds: usize, ui: Ui, device: Device) -> Result<()> {
    let (runs, classes) = load_members(folders)?;
    // An ensemble file inside a trained run would turn that run into an ensemble.
    let target = std::path::absolute(out).with_context(|| format!("{}", out.display()))?;
    if runs.iter().any(|r| r.root() == target) || target.join("run.json").exists() {
        bail!(
            "{} holds a trained run: give the ensemble a folder of its own",
            out.display()
        );
    }
    let mut predictions = Vec::new();
    for run in &runs {
        ui.say(format!("predicting val with {}", run.root().display()));
        predictions.push(split_predictions(run, None, Split::Val, ui, device)?);
    }
    let (members, labels) = align(&runs, &predictions)?;
    if labels.is_empty() {
        bail!("no val record is predicted by every member: nothing to select the weights on");
    }
    let selection = select_ensemble(&members, &labels, rounds)?;
    let file = EnsembleFile {
        members: runs
            .iter()
            .zip(&selection.weights)
            .zip(&members)
            .map(|((run, &weight), probabilities)| Member {
                run: run.root().to_path_buf(),
                weight,
                loss: log_loss(probabilities, &labels),
            })
            .collect(),
        classes,
        selected_on: "val".into(),
        records: labels.len(),
        rounds,
        losses: selection.losses,
    };
    let ensemble = Run::new(out);
    ensemble.write_json(ENSEMBLE_FILE, &file)?;
    ensemble.write_json("classes.json", &file.classes)?;
    for member in &file.members {
        ui.say(format!(
            "{}: weight {:.3}, val log loss {:.4}",
            member.run.display(),
            member.weight,
            member.loss
        ));
    }
    ui.say(format!(
        "ensemble: val log loss {:.4} on {} records",
        file.losses.last().copied().unwrap_or(f64::NAN),
        file.records
    ));
    let eval = match evaluate_ensemble(&file, None, Split::Test, ui, device) {
        Ok(record) => {
            say_eval(ui, &record);
            ensemble.write_json("eval.json", &record)?;
            Some(record)
        }
        Err(e) => {
            ui.warn(format!("not evaluated on test: {e}"));
            None
        }
    };
    write_report(&ensemble, &file, eval.as_ref())?;
    ui.say(format!("report: {}", ensemble.file("report.md").display()));
    ui.result(&serde_json::json!({"ensemble": file, "eval": eval}))
}

fn evaluate_ensemble(
    file: &EnsembleFile,
    manifest: Option<&Path>,
    split: Split,
    ui: Ui,
    device: Device,
) -> Result<EvalRecord> {
    let mut blend = Blend::new();
    let mut skipped: Vec<fusion_data::Problem> = Vec::new();
    for member in file.members.iter().filter(|m| m.weight > 0.0) {
        let predictions = split_predictions(&Run::new(&member.run), manifest, split, ui, device)?;
        for (k, id) in predictions.ids.iter().enumerate() {
            let label = predictions.labels[k];
            let group = predictions.groups.as_ref().map(|g| g[k].clone());
            let first = blend.add(id, || (label, group), &predictions.probabilities[k], member.weight);
            if first.0 != label {
                bail!(
                    "record {id} has another label for {} than for the members before it: the members must share one dataset",
                    member.run.display()
                );
            }
        }
        for p in predictions.skipped {
            if !skipped.iter().any(|s| s.id == p.id) {
                skipped.push(p);
            }
        }
    }
    // A record one member left out but another predicted is evaluated, not skipped.
    skipped.retain(|p| !blend.entries.contains_key(&p.id));
    let (mut averaged, mut labels, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    for (_, (label, group), probabilities, _) in blend.records() {
        averaged.push(probabilities);
        labels.push(*label);
        groups.extend(group.clone());
    }
    if labels.is_empty() {
        bail!("no {} record is predicted by any member", split_name(split));
    }
    let groups = (groups.len() == labels.len()).then_some(groups);
    let (loss, metrics, groups, _) = probability_metrics(&averaged, &labels, groups.as_deref(), file.classes.len());
    Ok(EvalRecord {
        split: split_name(split).into(),
        loss,
        metrics,
        task: fusion_core::TaskMetrics::Classification,
        groups,
        classes: file.classes.clone(),
        skipped,
    })
}

/// `fusion eval` on an ensemble folder.
pub fn eval(folder: &Path, manifest: Option<&Path>, split: Split, ui: Ui, device: Device) -> Result<()> {
    let file = EnsembleFile::read(folder)?;
    let record = evaluate_ensemble(&file, manifest, split, ui, device)?;
    say_eval(ui, &record);
    let ensemble = Run::new(folder);
    ensemble.write_json("eval.json", &record)?;
    write_report(&ensemble, &file, Some(&record))?;
    ui.result(&record)
}

/// `fusion predict` on an ensemble folder: every record some member could predict, with
/// the weights of the members that did renormalised; the others as `{"id", "error"}` lines.
pub fn predict(folder: &Path, manifest: Option<&Path>, out: Option<&Path>, ui: Ui, device: Device) -> Result<()> {
    let file = EnsembleFile::read(folder)?;
    let out = out.map_or_else(|| folder.join("predictions.jsonl"), Path::to_path_buf);
    let mut blend = Blend::new();
    let mut errors: HashMap<String, String> = HashMap::new();
    for member in file.members.iter().filter(|m| m.weight > 0.0) {
        let predicted = predict_records(&Run::new(&member.run), manifest, ui, device)?;
        // One error line per problem, in order.
        let problems = &predicted.loaded.extraction.problems;
        for (problem, line) in problems.iter().zip(crate::commands::error_lines(&predicted)?) {
            errors.entry(problem.id.clone()).or_insert(line);
        }
        for (&i, probabilities) in predicted.records.iter().zip(&predicted.probabilities) {
            let record = &predicted.loaded.extraction.records[i];
            blend.add(&record.id, || record.label.clone(), probabilities, member.weight);
        }
    }
    let mut lines = Vec::new();
    for (id, label, probabilities, members) in blend.records() {
        let line = Prediction {
            members: Some(members),
            ..Prediction::new(
                id,
                label,
                fusion_core::Task::Classification,
                &file.classes,
                &probabilities,
            )
        };
        lines.push(serde_json::to_string(&line)?);
    }
    let predicted = lines.len();
    let mut unpredicted: Vec<(&String, &String)> = errors
        .iter()
        .filter(|(id, _)| !blend.entries.contains_key(*id))
        .collect();
    unpredicted.sort();
    lines.extend(unpredicted.iter().map(|(_, line)| (*line).clone()));
    write_lines(&out, &lines)?;
    if predicted == 0 {
        bail!(
            "no record could be predicted by any member; errors in {}",
            out.display()
        );
    }
    ui.say(format!(
        "{predicted} predictions and {} records no member could read written to {}",
        unpredicted.len(),
        out.display()
    ));
    ui.result(&serde_json::json!({"predictions": predicted, "skipped": unpredicted.len(), "out": out}))
}

fn write_report(ensemble: &Run, file: &EnsembleFile, eval: Option<&EvalRecord>) -> Result<()> {
    let mut out = format!(
        "# Ensemble: {}\n\nGreedy ensemble selection (Caruana et al. 2004, with replacement, {} rounds) on the {} records of `{}` that every member predicts; the prediction is the weighted mean of the members' class probabilities.\n\n| member | weight | {} log loss |\n|---|---|---|\n",
        ensemble.root().display(),
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
    let path = ensemble.file("report.md");
    fusion_core::write_file_atomic(&path, out).with_context(|| format!("cannot write {}", path.display()))
}
