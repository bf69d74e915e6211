//! Task types: multi-label and regression through every fusion family (shapes, gradients,
//! missing modalities), training on generated data whose answer is known, and the
//! regression's target scale kept with the weights.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fusion_core::{
    EarlyMethod, FusionConfig, FusionModel, LateCombiner, Learner, ModelConfig, RunFolder, Task, TaskMetrics,
    TensorDataset, evaluate, load_weights, missing_modality_accuracy, save_weights, shapley_values,
    testing::parameters_without_gradient,
};
use tch::{Device, Kind, Tensor, nn::VarStore};

fn with_task(config: ModelConfig, task: Task, outputs: i64) -> ModelConfig {
    ModelConfig {
        task,
        num_classes: outputs,
        ..config
    }
}

/// Fusions a regression accepts: every early method, the averaging combiners, hybrids
/// with them, CentralNet.
fn accepts(task: Task, fusion: &FusionConfig) -> bool {
    let averaging = |c: &LateCombiner| {
        matches!(
            c,
            LateCombiner::Mean | LateCombiner::Fixed { .. } | LateCombiner::Learned | LateCombiner::Stacking
        )
    };
    match fusion {
        FusionConfig::Late { combiner } | FusionConfig::Hybrid { combiner, .. } if task == Task::Regression => {
            averaging(combiner)
        }
        _ => true,
    }
}

#[test]
fn every_fusion_predicts_each_task_and_trains_every_parameter() {
    let (inputs, _) = three_modality_batch();
    let labels_of = |task: Task| match task {
        Task::MultiLabel => bools(&[1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1])
            .view([8, 3])
            .to_kind(Kind::Float),
        _ => Tensor::from_slice(&[1.5f32, -2.0, 0.0, 3.0, 10.0, -4.5, 2.0, 0.5]),
    };
    for (task, outputs, shape) in [(Task::MultiLabel, 3, vec![8, 3, 2]), (Task::Regression, 1, vec![8])] {
        for fusion in all_fusions() {
            // Weights of a fixed hybrid combiner are per branch, the early one included.
            let config = with_task(three_modality_config(fusion.clone()), task, outputs);
            if !accepts(task, &fusion) {
                let refused = FusionModel::new(&VarStore::new(Device::Cpu).root(), &config);
                assert!(
                    refused.is_err_and(|e| e.to_string().contains("combines numbers")),
                    "{fusion:?}"
                );
                continue;
            }
            tch::manual_seed(3);
            let vs = VarStore::new(Device::Cpu);
            let model = FusionModel::new(&vs.root(), &config).unwrap();
            let output = model.forward_t(&inputs, true).unwrap();
            assert_eq!(output.prediction.size(), shape, "{task:?} {fusion:?}");
            assert_eq!(output.scores().size(), [8, outputs], "{task:?} {fusion:?}");
            if task == Task::MultiLabel {
                // Off and on are one distribution per label.
                let total = output.prediction.exp().sum_dim_intlist(-1, false, Kind::Float);
                assert!(f64::try_from((total - 1.0).abs().max()).unwrap() < 1e-5, "{fusion:?}");
            }
            let loss = output.loss(&labels_of(task), 1.0);
            assert!(f64::try_from(&loss).unwrap().is_finite(), "{task:?} {fusion:?}");
            loss.backward();
            assert_eq!(
                parameters_without_gradient(&vs),
                Vec::<String>::new(),
                "{task:?} {fusion:?}"
            );
        }
    }
}

/// Two modalities of 4 features; `y = 3·a₀ − 2·b₁ + 50` with a little noise (the offset and
/// scale test the target's standardisation).
fn regression_data(n: i64, seed: i64) -> TensorDataset {
    tch::manual_seed(seed);
    let f = (Kind::Float, Device::Cpu);
    let (a, b) = (Tensor::randn([n, 4], f), Tensor::randn([n, 4], f));
    let y = a.select(1, 0) * 3.0 - b.select(1, 1) * 2.0 + 50.0 + Tensor::randn([n], f) * 0.1;
    TensorDataset::dense(vec![a, b], y).unwrap()
}

/// Three tags: `a₀ > 0`, `b₀ > 0`, `a₁ + b₁ > 0` (the last needs both modalities).
fn multi_label_data(n: i64, seed: i64) -> TensorDataset {
    tch::manual_seed(seed);
    let f = (Kind::Float, Device::Cpu);
    let (a, b) = (Tensor::randn([n, 4], f), Tensor::randn([n, 4], f));
    let tags = Tensor::stack(
        &[
            a.select(1, 0).gt(0.0),
            b.select(1, 0).gt(0.0),
            (a.select(1, 1) + b.select(1, 1)).gt(0.0),
        ],
        1,
    )
    .to_kind(Kind::Float);
    TensorDataset::dense(vec![a, b], tags).unwrap()
}

fn two_modality(task: Task, outputs: i64, fusion: FusionConfig) -> ModelConfig {
    ModelConfig {
        modalities: vec![modality("a", 4, 16), modality("b", 4, 16)],
        num_classes: outputs,
        task,
        hidden_dim: 16,
        dropout: 0.0,
        fusion,
    }
}

#[test]
fn regression_learns_a_linear_target_in_its_own_units() {
    let _rng = rng_lock();
    let (train_set, test) = (regression_data(1024, 1), regression_data(256, 2));
    for fusion in [
        FusionConfig::Early {
            method: EarlyMethod::Concat,
        },
        FusionConfig::Late {
            combiner: LateCombiner::Stacking,
        },
    ] {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let model = FusionModel::new(&vs.root(), &two_modality(Task::Regression, 1, fusion.clone())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        Learner::new(&model, &vs, &task_training(40, 0))
            .fit(&train_set, Some(&test), &RunFolder::new(dir.path()), &mut |_| {})
            .unwrap();
        // The scale is the training targets' own.
        let targets = Vec::<f64>::try_from(train_set.labels.to_kind(Kind::Double)).unwrap();
        let mean = targets.iter().sum::<f64>() / targets.len() as f64;
        let std = (targets.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / targets.len() as f64).sqrt();
        let (fitted_mean, fitted_std) = model.target_scale().unwrap();
        assert!((fitted_mean - mean).abs() < 1e-4 && (fitted_std - std).abs() < 1e-4);
        let evaluation = evaluate(&model, &test, 128).unwrap();
        let TaskMetrics::Regression(metrics) = &evaluation.task else {
            panic!("{:?}", evaluation.task)
        };
        // The target's std is √13 ≈ 3.6: R² above 0.95 is an RMSE under 0.8.
        assert!(metrics.r2.unwrap() > 0.95, "{fusion:?}: {metrics:?}");
        assert!(metrics.rmse < 0.8, "{fusion:?}: {metrics:?}");
        // Predictions are in the target's units, not standardised ones.
        let predicted: f64 = evaluation.probabilities.iter().map(|p| f64::from(p[0])).sum::<f64>() / 256.0;
        assert!((predicted - 50.0).abs() < 1.0, "{predicted}");

        // The scale travels with the weights.
        let path = dir.path().join("weights.safetensors");
        save_weights(&vs, &path).unwrap();
        let other = VarStore::new(Device::Cpu);
        let reloaded = FusionModel::new(&other.root(), &two_modality(Task::Regression, 1, fusion)).unwrap();
        load_weights(&other, &path).unwrap();
        assert_eq!(reloaded.target_scale(), model.target_scale());
        let again = evaluate(&reloaded, &test, 128).unwrap();
        assert_eq!(again.probabilities, evaluation.probabilities);
    }
}

#[test]
fn multi_label_learns_tags_that_need_both_modalities() {
    let _rng = rng_lock();
    let (train_set, test) = (multi_label_data(2048, 3), multi_label_data(512, 4));
    for fusion in [
        FusionConfig::Early {
            method: EarlyMethod::Concat,
        },
        FusionConfig::Hybrid {
            early: EarlyMethod::Concat,
            combiner: LateCombiner::Learned,
        },
    ] {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let model = FusionModel::new(&vs.root(), &two_modality(Task::MultiLabel, 3, fusion.clone())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let training = task_training(30, 0);
        Learner::new(&model, &vs, &training)
            .fit(&train_set, None, &RunFolder::new(dir.path()), &mut |_| {})
            .unwrap();
        let evaluation = evaluate(&model, &test, 256).unwrap();
        let TaskMetrics::MultiLabel(metrics) = &evaluation.task else {
            panic!("{:?}", evaluation.task)
        };
        assert!(metrics.label_accuracy > 0.93, "{fusion:?}: {metrics:?}");
        assert!(metrics.macro_roc_auc.unwrap() > 0.97, "{fusion:?}: {metrics:?}");
        // The tag that needs both modalities is learnt too.
        assert!(metrics.labels[2].f1 > 0.85, "{fusion:?}: {:?}", metrics.labels[2]);
        assert_eq!(evaluation.metrics.accuracy, metrics.subset_accuracy);
        // Without `b`, its own tag is a coin toss: whole label sets are mostly wrong.
        let subsets = missing_modality_accuracy(&model, &test, 256).unwrap();
        let with = |names: &[&str]| subsets.iter().find(|s| s.modalities == names).unwrap().accuracy;
        assert!(with(&["a", "b"]) > with(&["a"]) + 0.3, "{subsets:?}");
    }
}

#[test]
fn regression_shapley_values_add_up_to_the_prediction() {
    let _rng = rng_lock();
    let data = regression_data(64, 5);
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let fusion = FusionConfig::Late {
        combiner: LateCombiner::Mean,
    };
    let model = FusionModel::new(&vs.root(), &two_modality(Task::Regression, 1, fusion)).unwrap();
    model.fit_target(&data.labels);
    let report = shapley_values(&model, &data, 32).unwrap();
    let predicted = evaluate(&model, &data, 64).unwrap().probabilities;
    for ((values, baseline), row) in report.values.iter().zip(&report.baseline).zip(&predicted) {
        let total = baseline + values.iter().sum::<f64>();
        assert!((total - f64::from(row[0])).abs() < 1e-3, "{total} vs {row:?}");
    }
    // With no modality a late mean predicts the training mean.
    let (mean, _) = model.target_scale().unwrap();
    assert!(report.baseline.iter().all(|b| (b - mean).abs() < 1e-3));
}

#[test]
fn labels_that_do_not_fit_the_task_are_refused() {
    let vs = VarStore::new(Device::Cpu);
    let fusion = FusionConfig::Early {
        method: EarlyMethod::Concat,
    };
    let regression = FusionModel::new(&vs.root(), &two_modality(Task::Regression, 1, fusion.clone())).unwrap();
    let multi = FusionModel::new(&(vs.root() / "m"), &two_modality(Task::MultiLabel, 3, fusion.clone())).unwrap();
    let classes = FusionModel::new(&(vs.root() / "c"), &two_modality(Task::Classification, 3, fusion)).unwrap();
    let bad = [
        (&regression, Tensor::from_slice(&[1i64, 2])),
        (&regression, Tensor::from_slice(&[1.0f32, f32::NAN])),
        (&multi, Tensor::ones([2, 2], (Kind::Float, Device::Cpu))),
        (
            &multi,
            Tensor::from_slice(&[0.0f32, 1.0, 0.5, 0.0, 1.0, 1.0]).view([2, 3]),
        ),
        (&classes, Tensor::from_slice(&[0i64, 3])),
        (&classes, Tensor::from_slice(&[0.0f32, 1.0])),
    ];
    for (model, labels) in bad {
        assert!(model.check_labels(&labels).is_err(), "{labels:?}");
    }
    assert!(
        multi
            .check_labels(&Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0, 0.0, 1.0]).view([2, 3]))
            .is_ok()
    );
    // A regression predicts one number.
    let two = ModelConfig {
        num_classes: 2,
        ..two_modality(Task::Regression, 1, FusionConfig::CentralNet { depth: 1 })
    };
    assert!(FusionModel::new(&(vs.root() / "r"), &two).is_err());
}
