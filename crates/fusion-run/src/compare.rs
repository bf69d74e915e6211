//! `fusion compare` as a library: each modality alone and every fusion method of a
//! configuration (same encoders, features and seed) trained from one extraction into
//! `OUT/NN_name/`, evaluated on the same records, and the simple baselines on those
//! records as rows of their own (`compare.json`, `baselines.json`). A contrastive
//! configuration's rows: itself, each pair of its modalities, and each row of encoders
//! (frozen, locked or fine-tuned towers side by side), scored by retrieval.

use std::path::{Path, PathBuf};

use fusion_core::{EarlyMethod, FusionConfig, LateCombiner, Strategy, Task};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::{
    Baselines, CompareConfig, Error, EvalRecord, Fitted, Loaded, NamedFusion, Observer, Result, Run, RunConfig,
};

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
    /// A contrastive row's retrieval, averaged over every direction between its modalities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<RetrievalSummary>,
}

/// Retrieval averaged over every direction between a contrastive run's modalities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalSummary {
    /// Mean recall@K over the directions, for K = 1, 5, 10.
    pub recall_at: Vec<(usize, f64)>,
    /// Mean over the directions of the mean reciprocal rank.
    pub mean_reciprocal_rank: f64,
    /// Directions averaged (query → key pairs of modalities).
    pub directions: usize,
}

impl RetrievalSummary {
    /// The summary of a contrastive evaluation (none for another task).
    pub fn of(eval: &EvalRecord) -> Option<Self> {
        let fusion_core::TaskMetrics::Retrieval { pairs } = &eval.task else {
            return None;
        };
        use fusion_core::contrastive::{RECALL_AT, mean_recall_at};
        Some(Self {
            recall_at: RECALL_AT.iter().map(|&k| (k, mean_recall_at(pairs, k))).collect(),
            mean_reciprocal_rank: pairs.iter().map(|p| p.metrics.mean_reciprocal_rank).sum::<f64>()
                / pairs.len().max(1) as f64,
            directions: pairs.len(),
        })
    }
}

/// The rows `compare` trains: each modality alone then each method; for a contrastive
/// task the configuration itself, each pair of its modalities when it has three or more,
/// then each row of encoders.
fn plan(config: &RunConfig, methods: &[NamedFusion]) -> Vec<(String, RunConfig)> {
    let mut plan: Vec<(String, RunConfig)> = Vec::new();
    if config.task == Task::Contrastive {
        plan.push((config.names().join(" + "), config.clone()));
        let m = config.modalities.len();
        if m > 2 {
            for a in 0..m {
                for b in a + 1..m {
                    let pair = config.pair([a, b]);
                    plan.push((pair.names().join(" + "), pair));
                }
            }
        }
    } else {
        for (m, spec) in config.modalities.iter().enumerate() {
            plan.push((format!("{} only", spec.name), config.only(m)));
        }
    }
    for method in methods {
        plan.push((method.name.clone(), method.applied_to(config)));
    }
    plan
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

/// Trains each modality of the configuration alone, then each of its rows (default:
/// [`default_methods`]), into `out/NN_name/` from one extraction, and evaluates every row
/// on the same records (where a unimodal model's modality is absent it outputs the
/// uniform distribution); then the simple baselines. Writes `compare.json`,
/// `baselines.json`, `skipped.json` and `unusable.json` into `out`.
pub fn compare(compared: &CompareConfig, out: &Path, device: Device, observer: &dyn Observer) -> Result<Compared> {
    compared.validate()?;
    let (compared, loaded) = crate::load_compared(compared, None, observer)?;
    let CompareConfig { run: config, rows } = compared;
    config.check_manifest(&loaded.manifest)?;
    let methods = match (rows.is_empty(), config.task) {
        (false, _) => rows,
        (true, Task::Contrastive) => Vec::new(),
        (true, _) => default_methods(),
    };
    let plan = plan(&config, &methods);
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
        let fitted = crate::fit_loaded(row_config, &loaded, &run, device, Strategy::SingleProcess, observer)?;
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
            retrieval: RetrievalSummary::of(eval),
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
                retrieval: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contrastive_plan_trains_the_configuration_each_pair_and_each_row() -> Result<()> {
        let all = [
            r#"{"name": "image", "features": {"kind": "pixels", "size": 4}, "encoder": {"kind": "mlp", "hidden": [4]}}"#,
            r#"{"name": "text", "features": {"kind": "hashed_words", "dim": 8}, "encoder": {"kind": "mlp", "hidden": [4]}}"#,
            r#"{"name": "audio", "features": {"kind": "log_mel_stats", "sample_rate": 8000, "n_mels": 8, "frames": 4}, "encoder": {"kind": "mlp", "hidden": [4]}}"#,
        ]
        .join(", ");
        let text = format!(
            r#"{{"manifest": "m.jsonl", "task": "contrastive", "modalities": [{all}],
                "compare": [{{"name": "wider", "modalities": [{all}]}}], "train": {{"epochs": 1, "batch_size": 8}}}}"#
        );
        let config = CompareConfig::parse(text.as_bytes(), Path::new("/tmp/c.json"))?;
        let planned = plan(&config.run, &config.rows);
        let names: Vec<&str> = planned.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "image + text + audio",
                "image + text",
                "image + audio",
                "text + audio",
                "wider"
            ]
        );
        assert_eq!(planned[2].1.names(), ["image", "audio"]);
        config.validate()?;
        assert!(planned.iter().all(|(_, c)| c.task == Task::Contrastive));
        Ok(())
    }
}
