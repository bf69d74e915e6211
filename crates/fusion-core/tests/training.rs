//! Training end to end: fusion beats single modalities on a task that needs both,
//! checkpoints, determinism, resume after a killed process, explanation, robustness and
//! TorchScript export.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use fusion_core::{
    EarlyMethod, EarlyStopping, EpochRecord, Error, FusionConfig, FusionModel, LateCombiner, Learner, ModalityInput,
    NOISE_LEVELS, Precision, RunFolder, StopMetric, TensorDataset, TrainConfig, evaluate, export_torchscript,
    missing_modality_accuracy, noise_robustness, shapley_values,
};
use tch::{Device, Kind, Tensor, nn::VarStore};

fn fit(
    names: &[&str],
    fusion: FusionConfig,
    training: &TrainConfig,
    train_set: &TensorDataset,
    folder: &Path,
) -> (FusionModel, VarStore) {
    tch::manual_seed(training.seed as i64);
    let vs = VarStore::new(Device::Cpu);
    let model = FusionModel::new(&vs.root(), &task_config(names, fusion)).unwrap();
    Learner::new(&model, &vs, training)
        .fit(train_set, None, &RunFolder::new(folder), &mut |_| {})
        .unwrap();
    (model, vs)
}

#[test]
fn every_family_beats_the_best_single_modality() {
    let _rng = rng_lock();
    let train_set = complementary_task(1200, 1);
    let test_set = complementary_task(600, 2);
    let training = task_training(15, 7);
    let dir = tempfile::tempdir().unwrap();
    let single = [0usize, 1]
        .map(|m| {
            let fusion = FusionConfig::Early {
                method: EarlyMethod::Concat,
            };
            let folder = dir.path().join(format!("single_{m}"));
            let (model, _) = fit(&["x"], fusion, &training, &only(&train_set, m), &folder);
            evaluate(&model, &only(&test_set, m), 256).unwrap().metrics.accuracy
        })
        .into_iter()
        .fold(0.0, f64::max);
    // 0.5 + 0.5 / 4 when the carrier modality is read perfectly.
    assert!((0.55..0.70).contains(&single), "single-modality accuracy {single}");
    let families = [
        FusionConfig::Early {
            method: EarlyMethod::Concat,
        },
        FusionConfig::Early {
            method: EarlyMethod::Attention { heads: 2, layers: 1 },
        },
        FusionConfig::Late {
            combiner: LateCombiner::Mean,
        },
        FusionConfig::Late {
            combiner: LateCombiner::Confidence {
                measure: fusion_core::ConfidenceMeasure::Entropy,
            },
        },
        FusionConfig::Hybrid {
            early: EarlyMethod::Concat,
            combiner: LateCombiner::Learned,
        },
        FusionConfig::CentralNet { depth: 2 },
    ];
    for (i, fusion) in families.into_iter().enumerate() {
        let (model, _) = fit(
            &["a", "b"],
            fusion.clone(),
            &training,
            &train_set,
            &dir.path().join(format!("fused_{i}")),
        );
        let accuracy = evaluate(&model, &test_set, 256).unwrap().metrics.accuracy;
        assert!(
            accuracy > single + 0.2,
            "{fusion:?}: {accuracy} vs best single modality {single}"
        );
    }
}

fn records_without_time(records: &[EpochRecord]) -> Vec<EpochRecord> {
    records
        .iter()
        .map(|r| EpochRecord {
            seconds: 0.0,
            ..r.clone()
        })
        .collect()
}

fn read_records(run: &RunFolder) -> Vec<EpochRecord> {
    let text = std::fs::read_to_string(run.metrics()).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn hybrid() -> FusionConfig {
    FusionConfig::Hybrid {
        early: EarlyMethod::Concat,
        combiner: LateCombiner::Mean,
    }
}

fn training_with_dropout(epochs: usize) -> TrainConfig {
    // Dropout and modality dropout make the run depend on every seeded generator.
    TrainConfig {
        modality_dropout: 0.3,
        ..task_training(epochs, 3)
    }
}

fn run_training(folder: &Path, epochs: usize, slow: bool, checkpoint_every_s: f64) -> fusion_core::TrainSummary {
    try_training(folder, epochs, slow, checkpoint_every_s).unwrap()
}

fn try_training(
    folder: &Path,
    epochs: usize,
    slow: bool,
    checkpoint_every_s: f64,
) -> fusion_core::Result<fusion_core::TrainSummary> {
    let train_set = complementary_task(400, 5);
    let val_set = complementary_task(200, 6);
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let config = fusion_core::ModelConfig {
        dropout: 0.2,
        ..task_config(&["a", "b"], hybrid())
    };
    let model = FusionModel::new(&vs.root(), &config).unwrap();
    let mut progress = |_: fusion_core::Progress<'_>| {
        if slow {
            std::thread::sleep(Duration::from_millis(40));
        }
    };
    let training = TrainConfig {
        checkpoint_every_s,
        ..training_with_dropout(epochs)
    };
    Learner::new(&model, &vs, &training).fit(&train_set, Some(&val_set), &RunFolder::new(folder), &mut progress)
}

#[test]
fn seeded_runs_give_identical_metrics_and_weights() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let first = run_training(&dir.path().join("one"), 3, false, 0.0);
    let second = run_training(&dir.path().join("two"), 3, false, 0.0);
    assert_eq!(
        records_without_time(&first.epochs),
        records_without_time(&second.epochs)
    );
    let weights = |name: &str| -> std::collections::HashMap<String, Tensor> {
        Tensor::read_safetensors(RunFolder::new(dir.path().join(name)).best_weights())
            .unwrap()
            .into_iter()
            .collect()
    };
    let (one, two) = (weights("one"), weights("two"));
    assert_eq!(one.len(), two.len());
    for (name, a) in &one {
        assert!(a.equal(&two[name]), "`{name}` differs between seeded runs");
    }
    assert_eq!(read_records(&RunFolder::new(dir.path().join("one"))), first.epochs);
}

/// Runs as a separate process in `resume_after_the_process_is_killed`; it trains slowly
/// until killed.
#[test]
#[ignore = "helper process of resume_after_the_process_is_killed"]
fn resume_helper_process() {
    if let (Ok(folder), Ok(every)) = (
        std::env::var("FUSION_TEST_RUN_FOLDER"),
        std::env::var("FUSION_TEST_CHECKPOINT_EVERY"),
    ) {
        run_training(Path::new(&folder), 12, true, every.parse().unwrap());
    }
}

/// Kills a training process after its third epoch, trains again into the same folder and
/// checks that the result is the uninterrupted run's; returns the epoch it resumed from.
fn killed_and_resumed(checkpoint_every_s: f64) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("killed");
    let run = RunFolder::new(&folder);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "resume_helper_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FUSION_TEST_RUN_FOLDER", &folder)
        .env("FUSION_TEST_CHECKPOINT_EVERY", checkpoint_every_s.to_string())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(run.metrics()).map_or(0, |t| t.lines().count()) < 3 {
        let finished = child.try_wait().unwrap();
        assert!(
            finished.is_none(),
            "the helper ended before it was killed: {finished:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the helper made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // While it trains, nobody else may train into its folder.
    let refused = try_training(&folder, 12, false, checkpoint_every_s).map(|_| ());
    assert!(
        matches!(&refused, Err(fusion_core::Error::Busy { folder, .. }) if folder.ends_with("killed")),
        "{refused:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Whatever the killed process left as best weights, the resumed run ends with the
    // uninterrupted run's.
    let junk = vec![("junk".to_string(), Tensor::zeros([1], (Kind::Float, Device::Cpu)))];
    std::fs::create_dir_all(run.best_weights().parent().unwrap()).unwrap();
    Tensor::write_safetensors(&junk, run.best_weights()).unwrap();
    let resumed = run_training(&folder, 12, false, checkpoint_every_s);
    let uninterrupted = run_training(&dir.path().join("whole"), 12, false, checkpoint_every_s);
    let best = |root: &Path| {
        let mut named = Tensor::read_safetensors(RunFolder::new(root).best_weights()).unwrap();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    let (got, expected) = (best(&folder), best(&dir.path().join("whole")));
    assert_eq!(got.len(), expected.len());
    for ((name, a), (_, b)) in got.iter().zip(&expected) {
        assert!(a.equal(b), "best weights differ at `{name}`");
    }
    assert_eq!(
        records_without_time(&resumed.epochs),
        records_without_time(&uninterrupted.epochs)
    );
    assert_eq!(
        records_without_time(&read_records(&run)),
        records_without_time(&uninterrupted.epochs)
    );
    resumed.resumed_from
}

#[test]
fn resume_after_the_process_is_killed() {
    let _rng = rng_lock();
    // A checkpoint every epoch: the run goes on from the last one (the kill comes once the
    // third epoch's metrics line is written, maybe before its checkpoint is).
    let resumed_from = killed_and_resumed(0.0);
    assert!((2..12).contains(&resumed_from), "resumed from {resumed_from}");
    // None within the hour: the killed epochs are trained again, to the same result.
    assert_eq!(killed_and_resumed(3600.0), 0);
}

#[test]
fn run_folder_alone_rebuilds_the_model() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let data = complementary_task(300, 8);
    let fusion = FusionConfig::Early {
        method: EarlyMethod::LowRank { rank: 4 },
    };
    let (model, _) = fit(&["a", "b"], fusion, &task_training(2, 1), &data, dir.path());
    let expected = evaluate(&model, &data, 100).unwrap();

    let (rebuilt, _) = RunFolder::new(dir.path()).load_model(Device::Cpu).unwrap();
    let again = evaluate(&rebuilt, &data, 100).unwrap();
    assert_eq!(expected.probabilities, again.probabilities);

    // Another configuration cannot take these weights; the error names the file.
    let vs = VarStore::new(Device::Cpu);
    let _other = FusionModel::new(
        &vs.root(),
        &task_config(&["a", "b"], FusionConfig::CentralNet { depth: 1 }),
    )
    .unwrap();
    let best = RunFolder::new(dir.path()).best_weights();
    let error = fusion_core::load_weights(&vs, &best).unwrap_err();
    assert!(
        matches!(&error, Error::Checkpoint { path, .. } if *path == best),
        "{error}"
    );
    std::fs::write(&best, b"not a safetensors file").unwrap();
    let error = RunFolder::new(dir.path()).load_model(Device::Cpu).unwrap_err();
    assert!(
        matches!(&error, Error::Checkpoint { path, .. } if *path == best),
        "{error}"
    );
    // A run folder holding another configuration is not overwritten.
    let training = task_training(2, 99);
    let error = Learner::new(&model, &VarStore::new(Device::Cpu), &training).fit(
        &data,
        None,
        &RunFolder::new(dir.path()),
        &mut |_| {},
    );
    assert!(matches!(error, Err(Error::Config(m)) if m.contains("another configuration")));
}

/// Shapley values by their definition: the mean marginal contribution over every order
/// in which the players can arrive.
fn shapley_by_permutations(value: &dyn Fn(usize) -> f64, players: &[usize]) -> Vec<f64> {
    fn orders(items: &[usize]) -> Vec<Vec<usize>> {
        if items.is_empty() {
            return vec![Vec::new()];
        }
        let mut all = Vec::new();
        for (i, &first) in items.iter().enumerate() {
            let rest: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, &v)| v)
                .collect();
            all.extend(orders(&rest).into_iter().map(|mut o| {
                o.insert(0, first);
                o
            }));
        }
        all
    }
    let mut phi = vec![0.0; 3];
    let all = orders(players);
    for order in &all {
        let mut coalition = 0;
        for &m in order {
            phi[m] += (value(coalition | 1 << m) - value(coalition)) / all.len() as f64;
            coalition |= 1 << m;
        }
    }
    phi
}

#[test]
fn shapley_values_match_their_definition() {
    let _rng = rng_lock();
    let (inputs, labels) = three_modality_batch();
    tch::manual_seed(2);
    let vs = VarStore::new(Device::Cpu);
    let model = FusionModel::new(&vs.root(), &three_modality_config(hybrid_three())).unwrap();
    let data = TensorDataset {
        features: inputs.iter().map(|i| i.features.shallow_clone()).collect(),
        padding: inputs
            .iter()
            .map(|i| i.padding_mask.as_ref().map(Tensor::shallow_clone))
            .collect(),
        present: inputs.iter().map(|i| i.present.shallow_clone()).collect(),
        labels,
        groups: None,
        weights: None,
    };
    let report = shapley_values(&model, &data, 3).unwrap();
    assert_eq!(report.values.len(), 8);
    let full = model.forward_t(&inputs, false).unwrap().prediction.exp();
    for i in 0..8 {
        let have: Vec<usize> = (0..3)
            .filter(|&m| bool::try_from(inputs[m].present.get(i as i64)).unwrap())
            .collect();
        let target = i64::try_from(full.get(i as i64).argmax(-1, false)).unwrap();
        let value = |subset: usize| -> f64 {
            let masked: Vec<ModalityInput> = inputs
                .iter()
                .enumerate()
                .map(|(m, input)| input.hidden_unless(subset & (1 << m) != 0))
                .collect();
            let probs = model.forward_t(&masked, false).unwrap().prediction.exp();
            f64::try_from(probs.get(i as i64).get(target)).unwrap()
        };
        let expected = shapley_by_permutations(&value, &have);
        for (m, (got, want)) in report.values[i].iter().zip(&expected).enumerate() {
            assert!((got - want).abs() < 1e-5, "sample {i}, modality {m}");
        }
        // Efficiency: contributions add up to v(present) − v(∅).
        let all: usize = have.iter().map(|m| 1 << m).sum();
        let total: f64 = report.values[i].iter().sum();
        assert!((total - (value(all) - value(0))).abs() < 1e-5);
        assert!((report.baseline[i] - value(0)).abs() < 1e-6);
    }
    // Means are over the samples that have the modality, and say how many those are.
    for (m, input) in inputs.iter().enumerate() {
        let rows: Vec<usize> = (0..8)
            .filter(|&i| bool::try_from(input.present.get(i as i64)).unwrap())
            .collect();
        assert_eq!(report.present[m], rows.len());
        let mean = rows.iter().map(|&i| report.values[i][m]).sum::<f64>() / rows.len() as f64;
        assert!((report.mean[m] - mean).abs() < 1e-9, "modality {m}");
    }
}

fn hybrid_three() -> FusionConfig {
    FusionConfig::Hybrid {
        early: EarlyMethod::Concat,
        combiner: LateCombiner::Learned,
    }
}

#[test]
fn robustness_curves_start_at_clean_accuracy_and_subsets_cover_all() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let train_set = complementary_task(800, 1);
    let test_set = complementary_task(400, 2);
    let (model, _) = fit(
        &["a", "b"],
        FusionConfig::Late {
            combiner: LateCombiner::Mean,
        },
        &task_training(8, 2),
        &train_set,
        dir.path(),
    );
    let clean = evaluate(&model, &test_set, 128).unwrap().metrics.accuracy;
    let subsets = missing_modality_accuracy(&model, &test_set, 128).unwrap();
    let names: Vec<Vec<String>> = subsets.iter().map(|s| s.modalities.clone()).collect();
    assert_eq!(
        names,
        [vec!["a".to_string()], vec!["b".into()], vec!["a".into(), "b".into()]]
    );
    assert_eq!(subsets[2].accuracy, clean);
    // Each modality alone carries the label for half of the samples.
    assert!(
        subsets[0].accuracy < clean - 0.2 && subsets[1].accuracy < clean - 0.2,
        "{subsets:?}"
    );
    let curves = noise_robustness(&model, &test_set, 128, &NOISE_LEVELS, 0).unwrap();
    for curve in &curves {
        assert_eq!(curve.points.len(), 10);
        assert_eq!(curve.points[0], (0.0, clean));
        let last = curve.points[9].1;
        assert!(last < clean, "{}: noise 0.9 left accuracy at {last}", curve.modality);
    }
    assert_eq!(
        curves,
        noise_robustness(&model, &test_set, 128, &NOISE_LEVELS, 0).unwrap(),
        "seeded"
    );
}

/// `FUSION_TORCH_PYTHON`, else the Python of the setup venv, when it can import torch
/// (the slim CPU install cannot: it lacks cuBLAS).
fn python_with_torch() -> Result<std::path::PathBuf, String> {
    let python = match std::env::var_os("FUSION_TORCH_PYTHON") {
        Some(python) => python.into(),
        None => {
            let libtorch = std::env::var("LIBTORCH").map_err(|_| "LIBTORCH is not set".to_string())?;
            // <venv>/lib/python3.X/site-packages/torch → <venv>/bin/python
            Path::new(&libtorch)
                .ancestors()
                .nth(4)
                .ok_or("LIBTORCH is not inside a venv")?
                .join("bin/python")
        }
    };
    let probe = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if probe.status.success() {
        Ok(python)
    } else {
        let stderr = String::from_utf8_lossy(&probe.stderr);
        Err(format!(
            "`import torch` fails in {}: {}",
            python.display(),
            stderr.lines().last().unwrap_or("")
        ))
    }
}

#[test]
fn torchscript_export_runs_with_the_same_outputs() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.pt");
    let (inputs, _) = three_modality_batch();
    for (i, fusion) in [
        hybrid_three(),
        FusionConfig::Early {
            method: EarlyMethod::Attention { heads: 2, layers: 1 },
        },
        FusionConfig::Early {
            method: EarlyMethod::CrossModal { heads: 2, layers: 1 },
        },
    ]
    .into_iter()
    .enumerate()
    {
        tch::manual_seed(9);
        let vs = VarStore::new(Device::Cpu);
        let model = FusionModel::new(&vs.root(), &three_modality_config(fusion)).unwrap();
        let path = dir.path().join(format!("model_{i}.pt"));
        let classes: Vec<String> = ["cat", "dog", "a bird"].map(String::from).to_vec();
        let too_few = export_torchscript(&model, &vs, &inputs, &classes[..2], None, &path);
        assert!(too_few.is_err_and(|e| e.to_string().contains("2 class names for a model of 3 classes")));
        let two = export_torchscript(&model, &vs, &inputs, &classes, Some(&[1.0, 2.0]), &path);
        assert!(two.is_err_and(|e| e.to_string().contains("2 temperatures")));
        // A temperature traced in: the module's output is log_softmax(log p / T).
        let calibrated = dir.path().join(format!("calibrated_{i}.pt"));
        let signature = export_torchscript(&model, &vs, &inputs, &classes, Some(&[2.5]), &calibrated).unwrap();
        assert_eq!(signature.temperatures, Some(vec![2.5]));
        let expected = (model.forward_t(&inputs, false).unwrap().prediction / 2.5).log_softmax(-1, Kind::Float);
        let traced = tch::CModule::load(&calibrated)
            .unwrap()
            .forward_ts(&fusion_core::export_arguments(&inputs))
            .unwrap();
        assert!(f64::try_from((&traced - &expected).abs().max()).unwrap() < 1e-5);
        let signature = export_torchscript(&model, &vs, &inputs, &classes, None, &path).unwrap();
        assert_eq!(signature.classes, classes);
        // The batch is free everywhere, the sequence's length too; feature sizes are fixed.
        let free = |name: &str| fusion_core::Dim::Free(name.into());
        let shapes: Vec<&[fusion_core::Dim]> = signature.inputs.iter().map(|s| s.shape.as_slice()).collect();
        assert_eq!(shapes[0], [free("batch"), fusion_core::Dim::Fixed(5)]);
        assert_eq!(shapes[1], [free("batch")]);
        assert_eq!(shapes[4], [free("batch"), free("length"), fusion_core::Dim::Fixed(6)]);
        assert_eq!(shapes[6], [free("batch"), free("length")]);
        let names: Vec<&str> = signature.inputs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "a.features",
                "a.present",
                "b.features",
                "b.present",
                "c.features",
                "c.present",
                "c.padding_mask"
            ]
        );
        assert!(fusion_core::signature_path(&path).exists());

        // Reloaded in libtorch's own TorchScript runtime, on another batch size.
        let module = tch::CModule::load(&path).unwrap();
        let smaller: Vec<ModalityInput> = inputs
            .iter()
            .map(|input| ModalityInput {
                features: input.features.narrow(0, 2, 5),
                present: input.present.narrow(0, 2, 5),
                padding_mask: input.padding_mask.as_ref().map(|m| m.narrow(0, 2, 5)),
            })
            .collect();
        let expected = model.forward_t(&smaller, false).unwrap().prediction;
        let traced = module.forward_ts(&fusion_core::export_arguments(&smaller)).unwrap();
        assert!(f64::try_from((&traced - &expected).abs().max()).unwrap() < 1e-5);

        match python_with_torch() {
            Err(why) => eprintln!("skipping the Python half of the TorchScript test: {why}"),
            Ok(python) => {
                let flat_full = fusion_core::export_arguments(&inputs);
                let expected = model.forward_t(&inputs, false).unwrap().prediction;
                let tensors: Vec<(String, Tensor)> = flat_full
                    .iter()
                    .enumerate()
                    .map(|(k, t)| (format!("input_{k}"), t.to_kind(Kind::Float)))
                    .collect();
                let data = dir.path().join("inputs.json");
                let as_json = |t: &Tensor| serde_json::json!({"shape": t.size(), "values": Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()});
                let json = serde_json::json!({
                    "inputs": tensors.iter().map(|(_, t)| as_json(t)).collect::<Vec<_>>(),
                    "dtypes": signature.inputs.iter().map(|s| s.dtype.clone()).collect::<Vec<_>>(),
                    "expected": as_json(&expected),
                });
                std::fs::write(&data, json.to_string()).unwrap();
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torchscript_parity.py");
                let out = Command::new(python).arg(script).arg(&path).arg(&data).output().unwrap();
                assert!(
                    out.status.success(),
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    assert!(!path.exists());
}

#[test]
fn damaged_or_impossible_checkpoints_are_refused_by_name() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("run");
    let run = RunFolder::new(&folder);
    run_training(&folder, 2, false, 0.0);
    let checkpoint = std::fs::read(run.last_checkpoint()).unwrap();
    let metrics = std::fs::read(run.metrics()).unwrap();

    // One flipped bit in the last byte (weights data): refused, and nothing rewritten.
    let mut flipped = checkpoint.clone();
    *flipped.last_mut().unwrap() ^= 0x10;
    std::fs::write(run.last_checkpoint(), &flipped).unwrap();
    let error = try_training(&folder, 4, false, 0.0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("last.safetensors") && error.contains("checksum"),
        "{error}"
    );
    assert_eq!(std::fs::read(run.metrics()).unwrap(), metrics, "metrics kept");

    // A file without a checksum (as older versions wrote) whose trainer state is absurd.
    std::fs::write(run.last_checkpoint(), &checkpoint).unwrap();
    let mut state: Vec<(String, Tensor)> = Tensor::read_safetensors(run.last_checkpoint())
        .unwrap()
        .into_iter()
        .filter(|(name, _)| name != fusion_core::CHECKSUM_KEY)
        .collect();
    for (epoch, best_epoch) in [(-5i64, 0i64), (2, 3)] {
        for (name, value) in state.iter_mut() {
            match name.as_str() {
                "__trainer__.epoch" => *value = Tensor::from(epoch),
                "__trainer__.best_epoch" => *value = Tensor::from(best_epoch),
                _ => {}
            }
        }
        Tensor::write_safetensors(&state, run.last_checkpoint()).unwrap();
        let error = try_training(&folder, 4, false, 0.0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("impossible trainer state"),
            "{epoch}/{best_epoch}: {error}"
        );
        assert_eq!(std::fs::read(run.metrics()).unwrap(), metrics, "metrics kept");
    }
    // The same legacy file with a sane state resumes.
    for (name, value) in state.iter_mut() {
        match name.as_str() {
            "__trainer__.epoch" => *value = Tensor::from(2i64),
            "__trainer__.best_epoch" => *value = Tensor::from(2i64),
            _ => {}
        }
    }
    Tensor::write_safetensors(&state, run.last_checkpoint()).unwrap();
    assert_eq!(try_training(&folder, 4, false, 0.0).unwrap().resumed_from, 2);
}

#[test]
fn mixed_precision_trains_as_well_and_keeps_its_loss_scale_in_the_checkpoint() {
    let _rng = rng_lock();
    let train_set = complementary_task(1200, 1);
    let test_set = complementary_task(600, 2);
    let dir = tempfile::tempdir().unwrap();
    let fusion = || FusionConfig::Early {
        method: EarlyMethod::Concat,
    };
    let mut accuracy = Vec::new();
    for precision in [Precision::Fp32, Precision::Bf16, Precision::Fp16] {
        let training = TrainConfig {
            precision,
            ..task_training(15, 7)
        };
        let folder = dir.path().join(format!("{precision:?}"));
        let (model, _) = fit(&["a", "b"], fusion(), &training, &train_set, &folder);
        let evaluation = evaluate(&model, &test_set, 256).unwrap();
        accuracy.push((evaluation.metrics.accuracy, evaluation.loss));
        let saved = fusion_core::read_checked_safetensors(&RunFolder::new(&folder).last_checkpoint()).unwrap();
        let scale = saved.get("__scaler__.scale").map(|s| f64::try_from(s).unwrap());
        match precision {
            // 15 epochs of 19 steps: no growth yet, and no overflow on this task.
            Precision::Fp16 => assert_eq!(scale, Some(fusion_core::LossScaler::INITIAL)),
            _ => assert_eq!(scale, None, "{precision:?} has no loss scale"),
        }
    }
    // Both together reach ≈ 0.98 in float32; one modality alone ≈ 0.625.
    for (precision, (acc, _)) in ["fp32", "bf16", "fp16"].iter().zip(&accuracy) {
        assert!(*acc > 0.9, "{precision}: test accuracy {acc} ({accuracy:?})");
    }
    let (fp32, bf16, fp16) = (accuracy[0].1, accuracy[1].1, accuracy[2].1);
    assert!(
        fp32 != bf16 && fp32 != fp16,
        "autocast computed as float32 did: {accuracy:?}"
    );
}

/// Early stopping on accuracy ends at the first epoch whose validation accuracy is
/// perfect (no later epoch could be kept instead); on the loss, which has no best possible
/// value, training goes on.
#[test]
fn early_stopping_ends_at_a_perfect_validation_score() {
    let _rng = fusion_core::testing::seeded(3);
    let separable = |n: i64| {
        let labels = Tensor::randint(CLASSES, [n], (Kind::Int64, Device::Cpu));
        let shift = labels.one_hot(CLASSES).to_kind(Kind::Float).repeat([1, DIM / CLASSES]) * 10.0;
        let features = Tensor::randn([n, DIM], (Kind::Float, Device::Cpu)) + shift;
        TensorDataset::dense(vec![features], labels).unwrap()
    };
    let (train_set, val_set) = (separable(200), separable(60));
    let dir = tempfile::tempdir().unwrap();
    let mut epochs = Vec::new();
    for (name, metric) in [("accuracy", StopMetric::Accuracy), ("loss", StopMetric::Loss)] {
        let training = TrainConfig {
            early_stopping: Some(EarlyStopping { metric, patience: 100 }),
            ..task_training(40, 5)
        };
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let fusion = FusionConfig::Early {
            method: EarlyMethod::Concat,
        };
        let model = FusionModel::new(&vs.root(), &task_config(&["x"], fusion)).unwrap();
        let folder = RunFolder::new(dir.path().join(name));
        let summary = Learner::new(&model, &vs, &training)
            .fit(&train_set, Some(&val_set), &folder, &mut |_| {})
            .unwrap();
        epochs.push(summary.epochs);
    }
    let perfect = epochs[0].iter().position(|e| e.val_accuracy == Some(1.0));
    assert_eq!(perfect, Some(epochs[0].len() - 1), "{:?}", epochs[0]);
    assert!(epochs[0].len() < 40, "{}", epochs[0].len());
    assert_eq!(epochs[1].len(), 40);
}
