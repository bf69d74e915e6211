//! The `best` preset of a classification table, as AutoGluon builds one (Erickson et al.
//! 2020): a portfolio of configurations over the `fast` encoders, each trained into
//! `RUN/members/NAME/` from one extraction, bagged over k folds of train+val where the val
//! split is small, then a greedy ensemble of them (Caruana et al. 2004) selected on their
//! out-of-fold predictions (on val when not bagged). The ensemble folder is read by
//! [`crate::Predictor`] like a run.

use std::{collections::BTreeMap, path::Path, time::Instant};

use fusion_core::{EarlyMethod, EarlyStopping, FusionConfig, LateCombiner, StopMetric, Strategy, Task};
use fusion_data::Split;
use tch::Device;

use crate::{EVAL_BATCH, EnsembleFile, Error, EvalRecord, Fitted, Loaded, Member, Observer, Result, Run, RunConfig};

/// Epochs of the portfolio's interaction member (at least).
pub const INTERACTION_EPOCHS: usize = 600;

/// The interaction member's learning rate (at least).
pub const INTERACTION_LR: f64 = 3e-3;

/// The interaction member's dropout (at least).
pub const INTERACTION_DROPOUT: f64 = 0.5;

/// Greedy selection rounds of the portfolio's ensemble.
pub const PORTFOLIO_ROUNDS: usize = 25;

/// Folds of a bagged member.
pub const BAG_FOLDS: usize = 5;

/// Most folds a member may be bagged over.
pub const MAX_FOLDS: usize = 20;

/// A val split with fewer records than this is too small to stop training and select
/// weights on alone: the members are bagged over train+val.
pub const BAG_BELOW_VAL: usize = 500;

/// Members of the portfolio, by name: the `fast` configuration `base` under each fusion
/// family, and one for labels that need modalities together: low-rank tensor fusion (Liu
/// et al. 2018) trained longer, stopped on accuracy, without modality dropout (dropping
/// one factor of an interaction leaves a label nothing can predict). On a development draw
/// of xor_pair, where each modality alone is at chance: 0.27 test accuracy with modality
/// dropout, 0.325 without, against 0.11 for `fast`.
pub fn portfolio_members(base: &RunConfig) -> Vec<(&'static str, RunConfig)> {
    // Each member is itself: none tries another fusion after training.
    let base = &RunConfig {
        interactions_fallback: false,
        ..base.clone()
    };
    let with = |fusion: FusionConfig| RunConfig { fusion, ..base.clone() };
    vec![
        ("late", base.clone()),
        (
            "early",
            with(FusionConfig::Early {
                method: EarlyMethod::Concat,
            }),
        ),
        (
            "hybrid",
            with(FusionConfig::Hybrid {
                early: EarlyMethod::Concat,
                combiner: LateCombiner::Learned,
            }),
        ),
        ("interactions", interaction_config(base)),
    ]
}

/// `base` with low-rank tensor fusion (rank 8) for labels that need modalities together:
/// at least 600 epochs at a learning rate of at least 3e-3 and dropout of at least 0.5,
/// stopped on validation accuracy after 200 epochs without a better one, without modality
/// dropout or per-branch losses (the portfolio's interaction member, and `fast`'s
/// fallback). Such a model fits its training records within a few epochs and only then,
/// held back by dropout, slowly finds the interaction (on the development draw of xor_pair,
/// val accuracy 0.35 after 80 epochs at 1e-3 and dropout 0.1, 0.68 after 600 at 3e-3 and
/// 0.5).
pub fn interaction_config(base: &RunConfig) -> RunConfig {
    let mut interactions = RunConfig {
        fusion: FusionConfig::Early {
            method: EarlyMethod::LowRank { rank: 8 },
        },
        interactions_fallback: false,
        dropout: base.dropout.max(INTERACTION_DROPOUT),
        ..base.clone()
    };
    interactions.train.epochs = interactions.train.epochs.max(INTERACTION_EPOCHS);
    interactions.train.optimizer = base
        .train
        .optimizer
        .clone()
        .with_lr(base.train.optimizer.lr().max(INTERACTION_LR));
    interactions.train.early_stopping = Some(EarlyStopping {
        metric: StopMetric::Accuracy,
        patience: INTERACTION_EPOCHS / 3,
    });
    interactions.train.modality_dropout = 0.0;
    interactions.train.branch_loss_weight = 0.0;
    interactions
}

/// How long the portfolio may train, and how it bags.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortfolioOptions {
    /// Every member's epoch count instead of its own.
    pub epochs: Option<usize>,
    /// Seconds since the start the portfolio may take (see [`train_portfolio`]).
    pub time_limit: Option<f64>,
    /// Folds each member is bagged over (1: none); by default [`BAG_FOLDS`] when val
    /// holds fewer than [`BAG_BELOW_VAL`] records.
    pub folds: Option<usize>,
}

/// What the portfolio trained and selected.
#[derive(Debug)]
pub struct Portfolio {
    /// Per member: its name and, per fold (one when not bagged), its run and training.
    pub members: Vec<(String, Vec<(Run, Fitted)>)>,
    /// The ensemble written in the portfolio's folder.
    pub ensemble: EnsembleFile,
    /// The ensemble on test; `None` without a test record with a usable label (said to
    /// the observer).
    pub eval: Option<EvalRecord>,
    /// Folds of each member (1: not bagged).
    pub folds: usize,
}

/// Trains the portfolio of `base` (a classification) into `run_dir`: its members (see
/// [`portfolio_members`]) from one extraction, bagged over [`BAG_FOLDS`] folds of
/// train+val when val holds fewer than [`BAG_BELOW_VAL`] records, then the greedy ensemble
/// of them, evaluated. With a time limit (seconds since `started`), a member that would end
/// past it (judged by the slowest member so far) is not started; the first always is.
/// `options.folds` sets the bagging instead (1: none; at most [`MAX_FOLDS`]).
pub fn train_portfolio(
    base: RunConfig,
    run_dir: &Path,
    options: PortfolioOptions,
    started: Instant,
    device: Device,
    observer: &dyn Observer,
) -> Result<Portfolio> {
    let PortfolioOptions {
        epochs,
        time_limit,
        folds,
    } = options;
    base.validate()?;
    if let Some(folds) = folds.filter(|f| !(1..=MAX_FOLDS).contains(f)) {
        return Err(Error::Config(format!("folds: {folds}, from 1 to {MAX_FOLDS}")));
    }
    if base.task != Task::Classification {
        return Err(Error::Config(format!(
            "the portfolio ensembles class probabilities: a {} run cannot be one",
            base.task.name()
        )));
    }
    // The ensemble cannot go where a run is: refused before any member trains.
    if run_dir.join("run.json").exists() {
        return Err(Error::Config(format!(
            "{} holds a trained run: give the `best` preset a folder of its own",
            run_dir.display()
        )));
    }
    let (base, mut loaded) = crate::load(&base, None, None, observer)?;
    base.check_manifest(&loaded.manifest)?;
    let mut members = portfolio_members(&base);
    for (_, member) in members.iter_mut().filter(|_| epochs.is_some()) {
        member.train.epochs = epochs.unwrap_or(member.train.epochs);
    }
    let folds = fold_of_records(&loaded, folds);
    let k = folds
        .as_ref()
        .map_or(1, |f| f.iter().flatten().max().map_or(1, |m| m + 1));
    let count = members.len();
    observer.step(&format!(
        "best: {count} members ({}){}, then a greedy ensemble of them selected on {}",
        members.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        if k > 1 {
            format!(", each bagged over {k} folds of train+val")
        } else {
            String::new()
        },
        if k > 1 { "their out-of-fold predictions" } else { "val" }
    ));
    let elapsed = || started.elapsed().as_secs_f64();
    let mut trained = Vec::new();
    // Per member: the scores of each selection record (index into the extraction).
    let mut scores: Vec<RecordScores> = Vec::new();
    // Per run, in training order: its scores of the test records.
    let mut test_scores: Vec<RecordScores> = Vec::new();
    let mut first_classes: Option<Vec<String>> = None;
    let mut slowest = 0.0f64;
    for (i, (name, member)) in members.into_iter().enumerate() {
        let began = elapsed();
        if let Some(limit) = time_limit.filter(|_| i > 0) {
            let eta = began + slowest;
            if eta > limit {
                observer.warn(&format!(
                    "time limit: {} of {count} members trained; the next would end at about {eta:.0} s, past {limit:.0} s",
                    trained.len()
                ));
                break;
            }
        }
        let remaining = time_limit.map_or(String::new(), |l| format!(", {:.0} s left", (l - began).max(0.0)));
        observer.step(&format!("[{}/{count}] {name}{remaining}", i + 1));
        let folder = run_dir.join("members").join(name);
        let mut runs = Vec::new();
        let mut member_scores = BTreeMap::new();
        for fold in 0..k {
            let run = Run::new(if k > 1 {
                folder.join(format!("fold{fold}"))
            } else {
                folder.clone()
            });
            std::fs::create_dir_all(run.root()).map_err(|source| Error::Io {
                path: run.root().to_path_buf(),
                source,
            })?;
            run.write_json("config.json", &member.portable())?;
            let original = folds.as_ref().map(|f| assign_fold(&mut loaded, f, fold));
            let fitted = crate::fit_loaded(&member, &loaded, &run, device, Strategy::SingleProcess, &());
            // Val is the fold's held-out records while they are assigned; test is untouched.
            let held_out = fitted.and_then(|fitted| Ok((scores_of(&run, &loaded, device)?, fitted)));
            if let Some(original) = original {
                restore_splits(&mut loaded, original);
            }
            let ((selection, test), fitted) = held_out?;
            let classes = run.classes()?;
            match &first_classes {
                None => first_classes = Some(classes),
                Some(first) if *first != classes => {
                    return Err(Error::Config(format!(
                        "{} learned the classes {classes:?}, the portfolio's first run {first:?}: its runs must share them",
                        run.root().display()
                    )));
                }
                Some(_) => {}
            }
            member_scores.extend(selection);
            test_scores.push(test);
            runs.push((run, fitted));
        }
        slowest = slowest.max(elapsed() - began);
        trained.push((name.to_string(), runs));
        scores.push(member_scores);
    }
    let ensemble = select(&trained, &scores, &loaded, k)?;
    let out = Run::new(run_dir);
    crate::Calibration::forget(run_dir)?;
    out.write_json(crate::ENSEMBLE_FILE, &ensemble)?;
    out.write_json("classes.json", &ensemble.classes)?;
    let eval = test_evaluation(&ensemble, &test_scores, &loaded);
    match &eval {
        Some(record) => out.write_json("eval.json", record)?,
        None => observer.warn("not evaluated on test: no test record has one of the classes"),
    }
    Ok(Portfolio {
        members: trained,
        ensemble,
        eval,
        folds: k,
    })
}

/// The fold of each train or val record, over `folds` folds or, by default, over
/// [`BAG_FOLDS`] when val is too small to rely on alone (see [`BAG_BELOW_VAL`]): within
/// each label, records in manifest order take folds in turn, so every fold holds each
/// label's share. `None`: no bagging.
fn fold_of_records(loaded: &Loaded, folds: Option<usize>) -> Option<Vec<Option<usize>>> {
    let extraction = &loaded.extraction;
    let val = extraction.split_indices(Split::Val).len();
    let pool: Vec<usize> = (0..extraction.records.len())
        .filter(|&i| extraction.records[i].split_or_train() != Split::Test)
        .collect();
    let k = folds.unwrap_or(if val < BAG_BELOW_VAL { BAG_FOLDS } else { 1 });
    if k < 2 || pool.len() < 2 * k {
        return None;
    }
    // A label with fewer records than folds stays in every fold's training records: held
    // out, it would be missing from one fold's classes.
    let mut per_label: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in &pool {
        *per_label.entry(extraction.records[i].label.as_str()).or_insert(0) += 1;
    }
    let mut folds = vec![None; extraction.records.len()];
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in pool
        .iter()
        .filter(|&&i| per_label[extraction.records[i].label.as_str()] >= k)
    {
        let turn = seen.entry(extraction.records[i].label.as_str()).or_insert(0);
        folds[i] = Some(*turn % k);
        *turn += 1;
    }
    Some(folds)
}

/// Makes fold `fold`'s records the val split and the other train+val records the train
/// split; returns the splits as they were.
fn assign_fold(loaded: &mut Loaded, folds: &[Option<usize>], fold: usize) -> Vec<Option<Split>> {
    let records = &mut loaded.extraction.records;
    let original = records.iter().map(|r| r.split).collect();
    for (record, of) in records.iter_mut().zip(folds) {
        if let Some(of) = of {
            record.split = Some(if *of == fold { Split::Val } else { Split::Train });
        }
    }
    original
}

fn restore_splits(loaded: &mut Loaded, original: Vec<Option<Split>>) {
    for (record, split) in loaded.extraction.records.iter_mut().zip(original) {
        record.split = split;
    }
}

/// Class probabilities by index into the extraction.
type RecordScores = BTreeMap<usize, Vec<f32>>;

/// The run's best weights (loaded once) on the val records of `loaded` as it stands (a
/// fold's held-out records when bagged) and on its test records (none without a test
/// split, or without a usable label), by index into the extraction.
fn scores_of(run: &Run, loaded: &Loaded, device: Device) -> Result<(RecordScores, RecordScores)> {
    let (model, _vs) = run.model(device)?;
    let score = |data: crate::SplitData| -> Result<RecordScores> {
        let evaluation = fusion_core::evaluate(&model, &data.data, EVAL_BATCH)?;
        Ok(data.records.into_iter().zip(evaluation.probabilities).collect())
    };
    let selection = score(run.split_of(loaded, Split::Val, device, &())?)?;
    let test = match run.split_of(loaded, Split::Test, device, &()) {
        Ok(data) => score(data)?,
        Err(_) => BTreeMap::new(),
    };
    Ok((selection, test))
}

/// The ensemble on the test records, from its runs' scores (`test_scores`, in the order of
/// the file's members): per record the weighted mean of the runs that scored it, blended as
/// [`crate::Predictor`] blends them. `None` without a scored test record.
fn test_evaluation(ensemble: &EnsembleFile, test_scores: &[RecordScores], loaded: &Loaded) -> Option<EvalRecord> {
    let records = &loaded.extraction.records;
    let mut blend = crate::predictor::Blend::new();
    for (member, scores) in ensemble.members.iter().zip(test_scores) {
        for (&i, p) in scores.iter().filter(|_| member.weight > 0.0) {
            blend.add(&records[i].id, || i, p, member.weight);
        }
    }
    let classes = &ensemble.classes;
    let (mut probabilities, mut labels, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    for (_, &i, blended, _) in blend.records() {
        let Some(label) = classes.iter().position(|c| *c == records[i].label) else {
            continue;
        };
        probabilities.push(blended);
        labels.push(label);
        groups.extend(records[i].group.clone());
    }
    if labels.is_empty() {
        return None;
    }
    let groups = (groups.len() == labels.len()).then_some(groups);
    let fairness = groups.as_deref().map(|groups| {
        crate::Fairness::compute(&probabilities, &crate::fairness::Truth::Classes(&labels), groups, None)
    });
    let (loss, metrics, groups, _) =
        fusion_core::probability_metrics(&probabilities, &labels, groups.as_deref(), classes.len());
    let test: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| r.split_or_train() == Split::Test)
        .map(|r| r.id.as_str())
        .collect();
    Some(EvalRecord {
        split: Split::Test.name().into(),
        loss,
        metrics,
        task: fusion_core::TaskMetrics::Classification,
        groups,
        classes: classes.clone(),
        skipped: loaded
            .extraction
            .problems
            .iter()
            .filter(|p| test.contains(p.id.as_str()))
            .cloned()
            .collect(),
        calibration: None,
        intervals: None,
        fairness,
        label_calibration: None,
    })
}

/// Greedy selection over the members' scores on the records every member scored; a
/// bagged member's weight is shared by its folds.
fn select(
    trained: &[(String, Vec<(Run, Fitted)>)],
    scores: &[RecordScores],
    loaded: &Loaded,
    k: usize,
) -> Result<EnsembleFile> {
    let Some(((_, first), first_scores)) = trained.first().zip(scores.first()) else {
        return Err(Error::Config("the portfolio trained no member".into()));
    };
    let classes = first[0].0.classes()?;
    let shared: Vec<usize> = first_scores
        .keys()
        .copied()
        .filter(|i| scores.iter().all(|s| s.contains_key(i)))
        .collect();
    let label_of = |i: usize| classes.iter().position(|c| *c == loaded.extraction.records[i].label);
    let (records, labels): (Vec<usize>, Vec<usize>) = shared.iter().filter_map(|&i| Some((i, label_of(i)?))).unzip();
    if labels.is_empty() {
        return Err(Error::Config(
            "no record is scored by every member: nothing to select the weights on".into(),
        ));
    }
    let members: Vec<Vec<Vec<f32>>> = scores
        .iter()
        .map(|s| records.iter().map(|i| s[i].clone()).collect())
        .collect();
    let selection = fusion_core::select_ensemble(&members, &labels, PORTFOLIO_ROUNDS)?;
    let mut file_members = Vec::new();
    for (((_, runs), weight), probabilities) in trained.iter().zip(&selection.weights).zip(&members) {
        let loss = fusion_core::log_loss(probabilities, &labels);
        for (run, _) in runs {
            file_members.push(Member {
                run: std::path::absolute(run.root()).map_err(|source| Error::Io {
                    path: run.root().to_path_buf(),
                    source,
                })?,
                weight: weight / runs.len() as f64,
                loss,
            });
        }
    }
    Ok(EnsembleFile {
        members: file_members,
        classes,
        selected_on: if k > 1 {
            format!("out-of-fold train+val ({k} folds)")
        } else {
            "val".into()
        },
        records: labels.len(),
        rounds: PORTFOLIO_ROUNDS,
        losses: selection.losses,
    })
}
