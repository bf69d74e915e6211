//! Sample weights, class-balanced sampling and the group-robust objectives: a weight of 2
//! is a duplicated record, group DRO's step is the one its update rule gives, its group
//! weights survive a resume, and settings that cannot apply are refused by name.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fusion_core::{
    FusionConfig, FusionModel, GroupDro, LateCombiner, Learner, ModelConfig, Objective, OptimizerConfig, RunFolder,
    Sampling, StopMetric, Task, TensorDataset, TrainConfig, update_group_weights,
};
use tch::{Device, Kind, Tensor, nn::VarStore};

fn hybrid() -> FusionConfig {
    FusionConfig::Hybrid {
        early: fusion_core::EarlyMethod::Concat,
        combiner: LateCombiner::Mean,
    }
}

/// The synthetic task drawn under the RNG lock: another test's draws in between would
/// change it (and it would change theirs).
fn seeded_task(n: i64, seed: i64) -> TensorDataset {
    let _rng = rng_lock();
    complementary_task(n, seed)
}

/// Full-batch SGD, no dropout: one step per epoch, whatever the order of the samples.
fn full_batch(epochs: usize) -> TrainConfig {
    TrainConfig {
        batch_size: 1024,
        optimizer: OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
        },
        grad_clip: None,
        branch_loss_weight: 0.5,
        ..task_training(epochs, 11)
    }
}

/// `data`'s inputs (shared, not copied) with `labels`.
fn with_labels(data: &TensorDataset, labels: Tensor) -> TensorDataset {
    TensorDataset::dense(data.features.iter().map(Tensor::shallow_clone).collect(), labels).unwrap()
}

/// The variables of `vs` by name, in name order.
fn sorted_variables(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    variables
}

/// Trains a fresh model of `config` (seeded alike every time) and returns its variables.
fn trained(config: &ModelConfig, training: &TrainConfig, data: &TensorDataset) -> Vec<(String, Tensor)> {
    let _rng = rng_lock();
    let folder = tempfile::tempdir().unwrap();
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let model = FusionModel::new(&vs.root(), config).unwrap();
    Learner::new(&model, &vs, training)
        .fit(data, None, &RunFolder::new(folder.path()), &mut |_| {})
        .unwrap();
    sorted_variables(&vs)
}

fn largest_difference(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    a.iter()
        .zip(b)
        .map(|((name, x), (other, y))| {
            assert_eq!(name, other);
            f64::try_from((x - y).abs().max()).unwrap()
        })
        .fold(0.0, f64::max)
}

/// `data` with sample 0 appended once more.
fn with_first_twice(data: &TensorDataset) -> TensorDataset {
    let twice = |t: &Tensor| Tensor::cat(&[t.shallow_clone(), t.narrow(0, 0, 1)], 0);
    let mut copy = TensorDataset::dense(data.features.iter().map(twice).collect(), twice(&data.labels)).unwrap();
    copy.groups = data.groups.as_ref().map(|g| [g.clone(), vec![g[0].clone()]].concat());
    copy
}

#[test]
fn a_weight_of_two_equals_a_duplicated_record_in_every_task() {
    let base = seeded_task(40, 21);
    let one_hot = base.labels.one_hot(CLASSES).to_kind(Kind::Float);
    for (task, labels) in [
        (Task::Classification, base.labels.shallow_clone()),
        (Task::MultiLabel, one_hot),
    ] {
        let data = with_labels(&base, labels);
        let config = ModelConfig {
            task,
            ..task_config(&["a", "b"], hybrid())
        };
        let duplicated = trained(&config, &full_batch(3), &with_first_twice(&data));
        let mut weights = vec![1.0f32; 40];
        weights[0] = 2.0;
        let mut weighted = with_labels(&data, data.labels.shallow_clone());
        weighted.weights = Some(Tensor::from_slice(&weights));
        let by_weight = trained(&config, &full_batch(3), &weighted);
        let difference = largest_difference(&duplicated, &by_weight);
        assert!(difference < 1e-5, "{task:?}: weights differ by {difference}");
        let plain = trained(&config, &full_batch(3), &data);
        assert!(
            largest_difference(&plain, &by_weight) > 1e-4,
            "{task:?}: the weight changed nothing"
        );
        if task == Task::MultiLabel {
            // Per-label weights: a row of 2s is the record twice as well.
            let rows = Tensor::ones([40, CLASSES], (Kind::Float, Device::Cpu));
            let _ = rows.get(0).fill_(2.0);
            weighted.weights = Some(rows);
            let by_rows = trained(&config, &full_batch(3), &weighted);
            assert!(largest_difference(&duplicated, &by_rows) < 1e-5);
        }
    }
}

#[test]
fn weights_and_groups_stream_from_shards_as_from_memory() {
    // Per-label weights and groups written into shards with the inputs train the same
    // model as the dataset in memory (group DRO reads both).
    let base = grouped(28);
    let mut data = with_labels(&base, base.labels.one_hot(CLASSES).to_kind(Kind::Float));
    data.groups = base.groups.clone();
    data.weights = Some({
        let _rng = rng_lock();
        Tensor::rand([40, CLASSES], (Kind::Float, Device::Cpu)) * 2.0
    });
    let config = ModelConfig {
        task: Task::MultiLabel,
        ..task_config(&["a", "b"], hybrid())
    };
    let training = TrainConfig {
        objective: Objective::GroupDro,
        batch_size: 16,
        ..full_batch(2)
    };
    let folder = tempfile::tempdir().unwrap();
    let shards = fusion_core::ShardedDataset::write(&data, folder.path().join("shards"), 512).unwrap();
    let from_memory = trained(&config, &training, &data);
    let _rng = rng_lock();
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let model = FusionModel::new(&vs.root(), &config).unwrap();
    Learner::new(&model, &vs, &training)
        .fit(&shards, None, &RunFolder::new(folder.path().join("run")), &mut |_| {})
        .unwrap();
    let streamed = sorted_variables(&vs);
    let difference = largest_difference(&from_memory, &streamed);
    assert!(difference < 1e-6, "{difference}");
}

#[test]
fn a_weight_of_zero_removes_the_record() {
    let data = seeded_task(40, 22);
    let config = task_config(&["a", "b"], hybrid());
    let mut weights = vec![1.0f32; 40];
    weights[7] = 0.0;
    let mut weighted = with_labels(&data, data.labels.shallow_clone());
    weighted.weights = Some(Tensor::from_slice(&weights));
    let keep = Tensor::from_slice(&(0..40).filter(|&i| i != 7).collect::<Vec<i64>>());
    let without = TensorDataset::dense(
        data.features.iter().map(|f| f.index_select(0, &keep)).collect(),
        data.labels.index_select(0, &keep),
    )
    .unwrap();
    let difference = largest_difference(
        &trained(&config, &full_batch(2), &weighted),
        &trained(&config, &full_batch(2), &without),
    );
    assert!(difference < 1e-5, "{difference}");
}

/// Two groups: `a` the first 30 samples, `b` the last 10.
fn grouped(seed: i64) -> TensorDataset {
    let mut data = seeded_task(40, seed);
    data.groups = Some((0..40).map(|i| if i < 30 { "a" } else { "b" }.to_string()).collect());
    data
}

#[test]
fn group_dro_takes_the_step_its_update_rule_gives() {
    let data = grouped(23);
    // Late fusion without branch losses: the loss is Σ_g q_g L_g alone.
    let config = task_config(
        &["a", "b"],
        FusionConfig::Late {
            combiner: LateCombiner::Mean,
        },
    );
    let settings = GroupDro {
        step_size: 2.0,
        adjustment: 1.0,
    };
    let training = TrainConfig {
        objective: Objective::GroupDro,
        group_dro: Some(settings),
        branch_loss_weight: 0.0,
        ..full_batch(1)
    };
    let by_trainer = trained(&config, &training, &data);

    // The same step by hand, from the same initial weights.
    let _rng = rng_lock();
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let model = FusionModel::new(&vs.root(), &config).unwrap();
    model.fit_target(&data.labels);
    let (inputs, labels) = data.batch(&Tensor::arange(40, (Kind::Int64, Device::Cpu)), Device::Cpu);
    let losses = model.forward_t(&inputs, true).unwrap().per_sample_loss(&labels);
    let group_loss = |range: (i64, i64)| losses.narrow(0, range.0, range.1 - range.0).mean(Kind::Float);
    let (loss_a, loss_b) = (group_loss((0, 30)), group_loss((30, 40)));
    let mut q = vec![0.5, 0.5];
    update_group_weights(
        &mut q,
        &[f64::try_from(&loss_a).unwrap(), f64::try_from(&loss_b).unwrap()],
        &[30.0, 10.0],
        &settings,
    );
    // Hand-computed from the rule: q ∝ ½·exp(2·(L_g + 1/√n_g)).
    let expected_b = {
        let a = (2.0 * (f64::try_from(&loss_a).unwrap() + 1.0 / 30f64.sqrt())).exp();
        let b = (2.0 * (f64::try_from(&loss_b).unwrap() + 1.0 / 10f64.sqrt())).exp();
        b / (a + b)
    };
    assert!((q[1] - expected_b).abs() < 1e-12);
    let loss = loss_a * q[0] + loss_b * q[1];
    loss.backward();
    tch::no_grad(|| {
        for (_, mut variable) in vs.variables() {
            if variable.requires_grad() {
                let step = variable.grad() * 0.1;
                let _ = variable.f_sub_(&step).unwrap();
            }
        }
    });
    let by_hand = sorted_variables(&vs);
    let difference = largest_difference(&by_trainer, &by_hand);
    assert!(difference < 1e-6, "group DRO's step differs by {difference}");

    // Plain ERM takes another step.
    drop(_rng);
    let erm = trained(
        &config,
        &TrainConfig {
            branch_loss_weight: 0.0,
            ..full_batch(1)
        },
        &data,
    );
    assert!(largest_difference(&erm, &by_hand) > 1e-5);
}

#[test]
fn group_weights_survive_a_resume() {
    let data = grouped(24);
    let config = task_config(&["a", "b"], hybrid());
    let training = |epochs| TrainConfig {
        objective: Objective::GroupDro,
        group_dro: Some(GroupDro {
            step_size: 1.0,
            adjustment: 0.0,
        }),
        batch_size: 16,
        ..full_batch(epochs)
    };
    let straight = trained(&config, &training(4), &data);
    let _rng = rng_lock();
    let folder = tempfile::tempdir().unwrap();
    for epochs in [2, 4] {
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let model = FusionModel::new(&vs.root(), &config).unwrap();
        let summary = Learner::new(&model, &vs, &training(epochs))
            .fit(&data, None, &RunFolder::new(folder.path()), &mut |_| {})
            .unwrap();
        if epochs == 4 {
            assert_eq!(summary.resumed_from, 2);
            let resumed = sorted_variables(&vs);
            assert!(largest_difference(&straight, &resumed) < 1e-6);
        }
    }
    let saved = Tensor::read_safetensors(RunFolder::new(folder.path()).last_checkpoint()).unwrap();
    let (_, q) = saved.iter().find(|(k, _)| k == "__trainer__.group_weights").unwrap();
    let q = Vec::<f64>::try_from(q).unwrap();
    assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-9 && q.len() == 2, "{q:?}");
}

#[test]
fn settings_that_cannot_apply_are_refused_by_name() {
    let data = seeded_task(40, 25);
    let val = seeded_task(20, 26);
    // Models built below draw their weights from the shared generator.
    let _rng = rng_lock();
    let config = task_config(&["a", "b"], hybrid());
    let numbers = with_labels(&data, data.labels.to_kind(Kind::Float));
    let refusal = |training: TrainConfig, config: &ModelConfig, val: Option<&TensorDataset>| {
        let folder = tempfile::tempdir().unwrap();
        let vs = VarStore::new(Device::Cpu);
        let model = FusionModel::new(&vs.root(), config).unwrap();
        let data = if config.task == Task::Regression {
            &numbers
        } else {
            &data
        };
        Learner::new(&model, &vs, &training)
            .fit(data, val, &RunFolder::new(folder.path()), &mut |_| {})
            .unwrap_err()
            .to_string()
    };
    for objective in [Objective::GroupDro, Objective::ReweightGroups] {
        let message = refusal(
            TrainConfig {
                objective,
                ..full_batch(1)
            },
            &config,
            None,
        );
        assert!(
            message.contains("train.objective") && message.contains("group"),
            "{message}"
        );
    }
    let message = refusal(
        TrainConfig {
            group_dro: Some(GroupDro::default()),
            ..full_batch(1)
        },
        &config,
        None,
    );
    assert!(message.contains("train.group_dro"), "{message}");
    let regression = ModelConfig {
        task: Task::Regression,
        num_classes: 1,
        ..task_config(
            &["a", "b"],
            FusionConfig::Early {
                method: fusion_core::EarlyMethod::Concat,
            },
        )
    };
    let message = refusal(
        TrainConfig {
            sampling: Sampling::ClassBalanced,
            ..full_batch(1)
        },
        &regression,
        None,
    );
    assert!(message.contains("train.sampling"), "{message}");
    let message = refusal(
        TrainConfig {
            early_stopping: Some(fusion_core::EarlyStopping {
                metric: StopMetric::WorstGroupAccuracy,
                patience: 2,
            }),
            ..full_batch(1)
        },
        &config,
        Some(&val),
    );
    assert!(message.contains("worst_group_accuracy"), "{message}");
    let mut negative = with_labels(&data, data.labels.shallow_clone());
    negative.weights = Some(Tensor::from_slice(&[-1.0f32; 40]));
    let folder = tempfile::tempdir().unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = FusionModel::new(&vs.root(), &config).unwrap();
    let message = Learner::new(&model, &vs, &full_batch(1))
        .fit(&negative, None, &RunFolder::new(folder.path()), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(message.contains("sample weight -1"), "{message}");
}

#[test]
fn reweighted_groups_weigh_each_group_alike() {
    // 30 samples of `a`, 10 of `b`: weights 40/(2·30) and 40/(2·10) by hand.
    let data = grouped(27);
    let config = task_config(&["a", "b"], hybrid());
    let reweighted = trained(
        &config,
        &TrainConfig {
            objective: Objective::ReweightGroups,
            ..full_batch(2)
        },
        &data,
    );
    let mut by_hand = grouped(27);
    let weights: Vec<f32> = (0..40)
        .map(|i| if i < 30 { 40.0 / 60.0 } else { 40.0 / 20.0 })
        .collect();
    by_hand.weights = Some(Tensor::from_slice(&weights));
    let difference = largest_difference(&reweighted, &trained(&config, &full_batch(2), &by_hand));
    assert!(difference < 1e-5, "{difference}");
    assert!(largest_difference(&reweighted, &trained(&config, &full_batch(2), &data)) > 1e-4);
}
