//! `fusion compare` as a library: each modality alone and every fusion method of a
//! configuration (same encoders, features and seed) trained from one extraction into
//! `OUT/NN_name/`, evaluated on the same records, and the simple baselines on those
//! records as rows of their own (`compare.json`, `baselines.json`).

use std::path::{Path, PathBuf};

use fusion_core::{EarlyMethod, FusionConfig, LateCombiner, Task};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::{Baselines, Error, EvalRecord, Fitted, Loaded, NamedFusion, Observer, Result, Run, RunConfig};

/// One row of a comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareRow {
    /// Method name.
    pub name: String,
    /// Run folder (none for a simple baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<PathBuf>,
    /// Split evaluated (test, or val when there is none).
    pub split: String,
    /// Samples evaluated.
    pub samples: usize,
    /// Test (or val) score of the best weights: accuracy (a multi-label run's subset
    /// accuracy, a regression's R²; see [`score_name`]).
    pub accuracy: f64,
    /// Expected calibration error.
    pub ece: f64,
    /// Trainable parameters.
    pub parameters: i64,
    /// Training wall time, seconds.
    pub seconds: f64,
    /// The worst group's score, when records have groups (see [`crate::Fairness`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_group_score: Option<f64>,
    /// Best minus worst group score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_gap: Option<f64>,
}

/// The score `compare` and robustness rank by (see [`score_name`]); a regression with a
/// constant target (no R²) scores 0.
pub fn task_score(eval: &EvalRecord) -> f64 {
    eval.task.accuracy(&eval.metrics).unwrap_or(0.0)
}

/// What robustness and `compare` measure for a task (see
/// [`fusion_core::SubsetAccuracy::accuracy`]).
pub fn score_name(task: Task) -> &'static str {
    match task {
        Task::Classification => "accuracy",
        Task::MultiLabel => "subset accuracy",
        Task::Regression => "R²",
        Task::Contrastive => "mean recall@1",
    }
}

/// The methods compared when the configuration names none.
pub fn default_methods() -> Vec<NamedFusion> {
    let named = |name: &str, fusion: FusionConfig| NamedFusion {
        name: name.into(),
        fusion,
        modalities: Vec::new(),
    };
    let early = |method| FusionConfig::Early { method };
    let late = |combiner| FusionConfig::Late { combiner };
    vec![
        named("early: concat", early(EarlyMethod::Concat)),
        named("early: tensor", early(EarlyMethod::Tensor)),
        named("late: mean", late(LateCombiner::Mean)),
        named("late: learned", late(LateCombiner::Learned)),
        named(
            "hybrid: concat + learned",
            FusionConfig::Hybrid {
                early: EarlyMethod::Concat,
                combiner: LateCombiner::Learned,
            },
        ),
    ]
}

/// A comparison's rows, runs and the data they were trained on.
#[derive(Debug)]
pub struct Compared {
    /// Each modality alone, the methods, then the simple baselines.
    pub rows: Vec<CompareRow>,
    /// The trained rows' runs, in order, with what training said.
    pub runs: Vec<(Run, Fitted)>,
    /// The simple baselines (classification).
    pub baselines: Option<Baselines>,
    /// The records every row read.
    pub loaded: Loaded,
    /// The configuration, its table statistics fitted.
    pub config: RunConfig,
}

/// Trains each modality of `config` alone, then each of its `compare` methods (default:
/// [`default_methods`]), into `out/NN_name/` from one extraction, and evaluates every row
/// on the same records (where a unimodal model's modality is absent it outputs the
/// uniform distribution); then the simple baselines. Writes `compare.json`,
/// `baselines.json`, `skipped.json` and `unusable.json` into `out`.
pub fn compare(mut config: RunConfig, out: &Path, device: Device, observer: &dyn Observer) -> Result<Compared> {
    config.validate()?;
    if config.task == Task::Contrastive {
        return Err(crate::Error::Config(
            "compare trains fusion methods side by side on a prediction task; a contrastive run has no fusion \
             (train each configuration and compare their `fusion eval` recall)"
                .into(),
        ));
    }
    let loaded = crate::load(&mut config, None, None, observer)?;
    config.check_manifest(&loaded.manifest)?;
    let methods = if config.compare.is_empty() {
        default_methods()
    } else {
        config.compare.clone()
    };
    let mut plan: Vec<(String, RunConfig)> = Vec::new();
    for (m, spec) in config.modalities.iter().enumerate() {
        plan.push((format!("{} only", spec.name), config.only(m)));
    }
    for method in &methods {
        plan.push((method.name.clone(), config.for_row(method)));
    }
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    for (i, (name, row_config)) in plan.iter().enumerate() {
        observer.step(&format!("[{}/{}] {name}", i + 1, plan.len()));
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
        let fitted = crate::fit_loaded(row_config, &loaded, &run, device, None, observer)?;
        let eval = fitted.eval.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "{}: no test or val records to compare on",
                loaded.manifest.path.display()
            ))
        })?;
        rows.push(CompareRow {
            name: name.clone(),
            run: Some(run.root().to_path_buf()),
            split: eval.split.clone(),
            samples: eval.metrics.count,
            accuracy: task_score(eval),
            ece: eval.metrics.ece,
            parameters: fitted.parameters,
            seconds: fitted.seconds,
            worst_group_score: eval.fairness.as_ref().and_then(|f| {
                let worst = f.worst.as_ref()?;
                f.groups.iter().find(|g| &g.group == worst)?.score
            }),
            group_gap: eval.fairness.as_ref().and_then(|f| f.gap),
        });
        runs.push((run, fitted));
    }
    let compared = Run::new(out);
    // The simple baselines on the same inputs and test records, as rows of their own.
    let mut baselines = None;
    if let Some((first, _)) = runs.first() {
        baselines = crate::simple_baselines(&config, &loaded, &first.classes()?, device)?;
        for b in baselines.iter().flat_map(|b| &b.rows) {
            rows.push(CompareRow {
                name: format!("baseline: {}", b.name),
                run: None,
                split: rows[0].split.clone(),
                samples: rows[0].samples,
                accuracy: b.accuracy,
                ece: b.ece,
                parameters: b.parameters,
                seconds: b.seconds,
                worst_group_score: None,
                group_gap: None,
            });
        }
        if let Some(baselines) = &baselines {
            compared.write_json("baselines.json", baselines)?;
        }
    }
    compared.write_json("compare.json", &rows)?;
    compared.write_json("skipped.json", &loaded.extraction.problems)?;
    compared.write_json("unusable.json", &loaded.extraction.absent)?;
    Ok(Compared {
        rows,
        runs,
        baselines,
        loaded,
        config,
    })
}
