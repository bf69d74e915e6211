//! Contrastive alignment end to end: two towers trained with the symmetric InfoNCE loss on
//! pairs that share a hidden code find each other's pair, and the learned temperature moves
//! and stays within CLIP's clamp.
#![allow(clippy::unwrap_used)]

use fusion_core::{
    EarlyStopping, Encoder, EncoderConfig, FusionModel, Learner, MlpEncoder, ModalityConfig, ModalityInput,
    ModelConfig, Optimizer, OptimizerConfig, RunFolder, StopMetric, Task, TaskMetrics, TensorDataset, TrainConfig,
    contrastive::{
        LogitScale, MAX_LOGIT_SCALE, RetrievalMetrics, first_relevant_ranks, l2_normalize, pairwise_clip_loss,
    },
    evaluate,
};
use tch::{Device, Kind, Tensor, nn::VarStore};

/// libtorch's generator is global to the process and tests run on parallel threads: each
/// test holds this while it draws data, builds models and trains.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `n` pairs: a hidden code of 8 numbers seen by two modalities through different random
/// linear maps into 24 and 16 features, each with its own noise.
fn paired(n: i64, maps: &(Tensor, Tensor), seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let f = (Kind::Float, Device::Cpu);
    let code = Tensor::randn([n, 8], f);
    let a = code.matmul(&maps.0) + Tensor::randn([n, 24], f) * 0.3;
    let b = code.matmul(&maps.1) + Tensor::randn([n, 16], f) * 0.3;
    (a, b)
}

#[test]
fn towers_trained_on_shared_codes_retrieve_their_pairs() {
    let _rng = rng_lock();
    tch::manual_seed(1);
    let f = (Kind::Float, Device::Cpu);
    let maps = (Tensor::randn([8, 24], f), Tensor::randn([8, 16], f));
    let (train_a, train_b) = paired(2048, &maps, 2);
    let (test_a, test_b) = paired(200, &maps, 3);
    tch::manual_seed(4);
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let tower_a = MlpEncoder::new(&(&root / "a"), 24, &[64, 32], 0.0);
    let tower_b = MlpEncoder::new(&(&root / "b"), 16, &[64, 32], 0.0);
    let scale = LogitScale::new(&root);
    let start = f64::try_from(scale.scale()).unwrap();
    let mut optimizer = Optimizer::new(&vs, &OptimizerConfig::adam(3e-3));
    let embed = |a: &Tensor, b: &Tensor, train: bool| {
        (
            l2_normalize(&tower_a.forward(&ModalityInput::dense(a.shallow_clone()), train)),
            l2_normalize(&tower_b.forward(&ModalityInput::dense(b.shallow_clone()), train)),
        )
    };
    let present = [
        Tensor::ones([128], (Kind::Bool, Device::Cpu)),
        Tensor::ones([128], (Kind::Bool, Device::Cpu)),
    ];
    for epoch in 0..15 {
        let order = Tensor::randperm(2048, (Kind::Int64, Device::Cpu));
        for batch in 0..16 {
            let rows = order.narrow(0, batch * 128, 128);
            let (a, b) = embed(&train_a.index_select(0, &rows), &train_b.index_select(0, &rows), true);
            let loss = pairwise_clip_loss(&[a, b], &present, &scale.scale()).unwrap();
            optimizer.zero_grad();
            loss.backward();
            optimizer.step(3e-3);
        }
        let value = f64::try_from(scale.scale()).unwrap();
        assert!(value <= MAX_LOGIT_SCALE + 1e-6, "epoch {epoch}: scale {value}");
    }
    let moved = f64::try_from(scale.scale()).unwrap();
    assert!(
        (moved - start).abs() > 0.1,
        "the temperature did not move: {start} → {moved}"
    );
    let (a, b) = tch::no_grad(|| embed(&test_a, &test_b, false));
    let relevant: Vec<Vec<usize>> = (0..200).map(|i| vec![i]).collect();
    for (queries, keys) in [(&a, &b), (&b, &a)] {
        let ranks = first_relevant_ranks(&queries.matmul(&keys.transpose(0, 1)), &relevant).unwrap();
        let metrics = RetrievalMetrics::of(&ranks);
        assert!(metrics.recall_at[0].1 > 0.9, "{metrics:?}");
    }
}

#[test]
fn the_logit_scale_stops_at_its_clamp() {
    let _rng = rng_lock();
    // Pushed up hard (the loss falls as the scale grows on separable pairs): it rises, then
    // stays at 100 however long the push goes on.
    let vs = VarStore::new(Device::Cpu);
    let scale = LogitScale::new(&vs.root());
    let mut optimizer = Optimizer::new(&vs, &OptimizerConfig::adam(0.5));
    let a = l2_normalize(&Tensor::eye(4, (Kind::Float, Device::Cpu)));
    let present = [
        Tensor::ones([4], (Kind::Bool, Device::Cpu)),
        Tensor::ones([4], (Kind::Bool, Device::Cpu)),
    ];
    let mut highest: f64 = 0.0;
    for _ in 0..200 {
        let loss = pairwise_clip_loss(&[a.shallow_clone(), a.shallow_clone()], &present, &scale.scale()).unwrap();
        optimizer.zero_grad();
        loss.backward();
        optimizer.step(0.5);
        highest = highest.max(f64::try_from(scale.scale()).unwrap());
    }
    assert!((highest - MAX_LOGIT_SCALE).abs() < 1e-3, "{highest}");
}

/// Three modalities of a hidden code (24, 16 and 12 features), each record missing one
/// modality at random one time in five (never two).
fn triples(n: i64, maps: &[Tensor; 3], seed: i64) -> TensorDataset {
    tch::manual_seed(seed);
    let f = (Kind::Float, Device::Cpu);
    let code = Tensor::randn([n, 8], f);
    let features: Vec<Tensor> = maps
        .iter()
        .map(|m| code.matmul(m) + Tensor::randn([n, m.size()[1]], f) * 0.3)
        .collect();
    let mut data = TensorDataset::dense(features, Tensor::full([n], -1, (Kind::Int64, Device::Cpu))).unwrap();
    let missing = Tensor::randint(3, [n], (Kind::Int64, Device::Cpu));
    let drops = Tensor::rand([n], f).lt(0.2);
    for m in 0..3 {
        data.present[m] = missing.ne(m as i64).logical_or(&drops.logical_not());
    }
    data
}

#[test]
fn a_contrastive_model_trains_through_the_trainer_and_retrieves_in_every_direction() {
    let _rng = rng_lock();
    let maps = code_maps();
    let train_set = triples(2048, &maps, 2);
    let val_set = triples(200, &maps, 3);
    let (model, vs) = three_towers(&[64, 32], 4);
    let start = f64::try_from(model.logit_scale().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let training = TrainConfig {
        epochs: 12,
        optimizer: OptimizerConfig::adam(3e-3),
        early_stopping: Some(EarlyStopping {
            metric: StopMetric::Accuracy,
            patience: 4,
        }),
        ..TrainConfig::new(128)
    };
    let summary = Learner::new(&model, &vs, &training)
        .fit(&train_set, Some(&val_set), &RunFolder::new(dir.path()), &mut |_| {})
        .unwrap();
    // The epoch's "accuracy" is the mean recall@1 over the six directions.
    let last = summary.epochs.last().unwrap();
    assert!(last.val_accuracy.unwrap() > 0.9, "{last:?}");
    assert!(last.val_macro_f1.is_none() && last.val_ece.is_none());
    let moved = f64::try_from(model.logit_scale().unwrap()).unwrap();
    assert!(
        (moved - start).abs() > 0.1,
        "the temperature did not move: {start} → {moved}"
    );
    let evaluation = evaluate(&model, &val_set, 64).unwrap();
    let TaskMetrics::Retrieval { pairs } = &evaluation.task else {
        panic!("{:?}", evaluation.task)
    };
    assert_eq!(pairs.len(), 6, "a→b, a→c, b→a, …");
    let present: Vec<Vec<bool>> = val_set
        .present
        .iter()
        .map(|p| Vec::<bool>::try_from(p).unwrap())
        .collect();
    let index = |name: &str| ["a", "b", "c"].iter().position(|n| *n == name).unwrap();
    for pair in pairs {
        let (q, k) = (index(&pair.query), index(&pair.key));
        // Records missing either modality are neither queries nor keys.
        let both = (0..200).filter(|&i| present[q][i] && present[k][i]).count();
        assert_eq!(pair.metrics.queries, both, "{pair:?}");
        assert!(both < 200 && both > 150);
        assert!(pair.metrics.recall_at[0].1 > 0.9, "{pair:?}");
    }
    // The evaluation's loss is the mean over batches of 64 records in order, each batch's
    // loss weighted by its records (200 = 64 + 64 + 64 + 8).
    let embeddings = fusion_core::embed(&model, &val_set, 64).unwrap();
    let scale = model.logit_scale().unwrap();
    let mut weighted = 0.0;
    for start in (0..200).step_by(64) {
        let len = 64.min(200 - start);
        let presence: Vec<Tensor> = (0..3).map(|m| val_set.present[m].narrow(0, start, len)).collect();
        let rows: Vec<Tensor> = (0..3).map(|m| embeddings.select(1, m).narrow(0, start, len)).collect();
        weighted += f64::try_from(pairwise_clip_loss(&rows, &presence, &scale).unwrap()).unwrap() * len as f64;
    }
    let expected = weighted / 200.0;
    assert!(
        (evaluation.loss - expected).abs() < 1e-4,
        "{} vs {expected}",
        evaluation.loss
    );
}

/// The random maps from a hidden code to `triples`' three modalities.
fn code_maps() -> [Tensor; 3] {
    tch::manual_seed(1);
    let f = (Kind::Float, Device::Cpu);
    [
        Tensor::randn([8, 24], f),
        Tensor::randn([8, 16], f),
        Tensor::randn([8, 12], f),
    ]
}

/// A contrastive model of three MLP towers (`hidden` sizes; the last is the space's) over
/// `triples`' modalities, its weights drawn from `seed`.
fn three_towers(hidden: &[i64], seed: i64) -> (FusionModel, VarStore) {
    let modality = |name: &str, input_dim| ModalityConfig {
        name: name.into(),
        input_dim,
        encoder: EncoderConfig::Mlp {
            hidden: hidden.to_vec(),
        },
    };
    let config = ModelConfig {
        modalities: vec![modality("a", 24), modality("b", 16), modality("c", 12)],
        num_classes: 1,
        task: Task::Contrastive,
        hidden_dim: *hidden.last().unwrap(),
        dropout: 0.0,
        fusion: serde_json::from_str(r#"{"family": "early", "method": "concat"}"#).unwrap(),
    };
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    (FusionModel::new(&vs.root(), &config).unwrap(), vs)
}

fn weights(vs: &VarStore) -> Tensor {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::cat(
        &named.iter().map(|(_, t)| t.detach().reshape([-1])).collect::<Vec<_>>(),
        0,
    )
}

#[test]
fn contrastive_training_resumes_and_streams_as_it_trains_in_memory() {
    let _rng = rng_lock();
    let maps = code_maps();
    let train_set = triples(300, &maps, 2);
    let val_set = triples(60, &maps, 3);
    let training = |epochs| TrainConfig {
        epochs,
        optimizer: OptimizerConfig::adam(3e-3),
        ..TrainConfig::new(64)
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, epochs, data: &dyn fusion_core::TrainingData| {
        let (model, vs) = three_towers(&[16, 8], 4);
        let folder = RunFolder::new(dir.path().join(name));
        Learner::new(&model, &vs, &training(epochs))
            .fit(data, Some(&val_set), &folder, &mut |_| {})
            .unwrap();
        weights(&vs)
    };
    let whole = run("whole", 3, &train_set);
    let (_, untrained) = three_towers(&[16, 8], 4);
    assert!(f64::try_from((&whole - weights(&untrained)).abs().max()).unwrap() > 1e-3);
    // Stopped after one epoch, then resumed to three.
    let _first_epoch = run("resumed", 1, &train_set);
    let resumed = run("resumed", 3, &train_set);
    assert!(
        resumed.equal(&whole),
        "resumed differs by {:?}",
        (&resumed - &whole).abs().max()
    );
    let shards = fusion_core::ShardedDataset::write(&train_set, dir.path().join("shards"), 4096).unwrap();
    let streamed = run("streamed", 3, &shards);
    assert!(
        streamed.equal(&whole),
        "streamed differs by {:?}",
        (&streamed - &whole).abs().max()
    );
    // Autocast to bfloat16 (CPU): the loss is computed in float32 and training moves the
    // weights about as far.
    let (model, vs) = three_towers(&[16, 8], 4);
    let half = TrainConfig {
        precision: fusion_core::Precision::Bf16,
        ..training(3)
    };
    let folder = RunFolder::new(dir.path().join("bf16"));
    let summary = Learner::new(&model, &vs, &half)
        .fit(&train_set, Some(&val_set), &folder, &mut |_| {})
        .unwrap();
    assert!(summary.epochs.iter().all(|e| e.train_loss.is_finite()));
    let gap = f64::try_from((weights(&vs) - &whole).abs().max()).unwrap();
    assert!(
        gap > 0.0 && gap < 0.05,
        "bfloat16 training differs from float32 by {gap}"
    );
}

#[test]
fn a_contrastive_model_refuses_weights_and_what_it_cannot_predict() {
    let _rng = rng_lock();
    let modality = |name: &str| ModalityConfig {
        name: name.into(),
        input_dim: 4,
        encoder: EncoderConfig::Identity,
    };
    let mut config = ModelConfig {
        modalities: vec![modality("a")],
        num_classes: 1,
        task: Task::Contrastive,
        hidden_dim: 8,
        dropout: 0.0,
        fusion: serde_json::from_str(r#"{"family": "early", "method": "concat"}"#).unwrap(),
    };
    let vs = VarStore::new(Device::Cpu);
    let message = FusionModel::new(&vs.root(), &config).unwrap_err().to_string();
    assert!(message.contains("two or more modalities"), "{message}");
    config.modalities.push(modality("b"));
    let model = FusionModel::new(&vs.root(), &config).unwrap();
    let features = (0..2)
        .map(|_| Tensor::randn([8, 4], (Kind::Float, Device::Cpu)))
        .collect();
    let mut data = TensorDataset::dense(features, Tensor::zeros([8], (Kind::Int64, Device::Cpu))).unwrap();
    let message = fusion_core::shapley_values(&model, &data, 8).unwrap_err().to_string();
    assert!(message.contains("contrastive"), "{message}");
    data.weights = Some(Tensor::ones([8], (Kind::Float, Device::Cpu)));
    let dir = tempfile::tempdir().unwrap();
    let message = Learner::new(&model, &vs, &TrainConfig::new(4))
        .fit(&data, None, &RunFolder::new(dir.path()), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(message.contains("contrastive"), "{message}");
}
