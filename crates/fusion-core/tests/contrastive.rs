//! Contrastive alignment end to end: two towers trained with the symmetric InfoNCE loss on
//! pairs that share a hidden code find each other's pair, and the learned temperature moves
//! and stays within CLIP's clamp.
#![allow(clippy::unwrap_used)]

use fusion_core::{
    Encoder, MlpEncoder, ModalityInput, Optimizer, OptimizerConfig,
    contrastive::{
        LogitScale, MAX_LOGIT_SCALE, RetrievalMetrics, first_relevant_ranks, l2_normalize, pairwise_clip_loss,
    },
};
use tch::{Device, Kind, Tensor, nn::VarStore};

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
            l2_normalize(&tower_a.encode(&ModalityInput::dense(a.shallow_clone()), train)),
            l2_normalize(&tower_b.encode(&ModalityInput::dense(b.shallow_clone()), train)),
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
