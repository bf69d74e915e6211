//! Shared fixtures of the integration tests: configurations of every method and a
//! synthetic task on which no single modality suffices.
#![allow(dead_code, clippy::unwrap_used)]

use fusion_core::{
    ConfidenceMeasure, EarlyMethod, EncoderConfig, FusionConfig, GatingForm, LateCombiner, ModalityConfig, ModelConfig,
    OptimizerConfig, TensorDataset, TrainConfig,
};
use tch::{Device, Kind, Tensor};

pub fn modality(name: &str, input_dim: i64, embedding: i64) -> ModalityConfig {
    ModalityConfig {
        name: name.into(),
        input_dim,
        encoder: EncoderConfig::Mlp {
            hidden: vec![embedding],
        },
    }
}

/// Every early method.
pub fn early_methods() -> Vec<EarlyMethod> {
    vec![
        EarlyMethod::Concat,
        EarlyMethod::Sum,
        EarlyMethod::Product,
        EarlyMethod::Tensor,
        EarlyMethod::LowRank { rank: 3 },
        EarlyMethod::Gating {
            form: GatingForm::Matrix,
        },
        EarlyMethod::Gating {
            form: GatingForm::Vector,
        },
        EarlyMethod::Gating {
            form: GatingForm::Scalar,
        },
        EarlyMethod::Attention { heads: 2, layers: 2 },
        EarlyMethod::CrossModal { heads: 2, layers: 2 },
    ]
}

/// Every late combiner, for `branches` branches.
pub fn late_combiners(branches: usize) -> Vec<LateCombiner> {
    vec![
        LateCombiner::Mean,
        LateCombiner::Fixed {
            weights: (1..=branches).map(|w| w as f64).collect(),
        },
        LateCombiner::Confidence {
            measure: ConfidenceMeasure::Entropy,
        },
        LateCombiner::Confidence {
            measure: ConfidenceMeasure::MaxProb,
        },
        LateCombiner::Learned,
        LateCombiner::Max,
        LateCombiner::MajorityVote,
        LateCombiner::ProductOfExperts,
        LateCombiner::Stacking,
    ]
}

/// Every method of every family, for three modalities.
pub fn all_fusions() -> Vec<FusionConfig> {
    let mut all: Vec<FusionConfig> = early_methods()
        .into_iter()
        .map(|method| FusionConfig::Early { method })
        .collect();
    all.extend(
        late_combiners(3)
            .into_iter()
            .map(|combiner| FusionConfig::Late { combiner }),
    );
    all.push(FusionConfig::Hybrid {
        early: EarlyMethod::Concat,
        combiner: LateCombiner::Learned,
    });
    all.push(FusionConfig::Hybrid {
        early: EarlyMethod::Attention { heads: 2, layers: 1 },
        combiner: LateCombiner::Stacking,
    });
    all.push(FusionConfig::Hybrid {
        early: EarlyMethod::LowRank { rank: 2 },
        combiner: LateCombiner::Mean,
    });
    all.push(FusionConfig::CentralNet { depth: 2 });
    all
}

/// The device the device-aware tests run on: `FUSION_TEST_DEVICE` (`cpu`, `cuda`, `cuda:N`,
/// `auto`), the CPU when unset. `benchmarks/gpu.sh` sets it to run them on a GPU.
pub fn test_device() -> tch::Device {
    fusion_core::testing::device_from_env("FUSION_TEST_DEVICE").unwrap_or_else(|e| panic!("{e}"))
}

/// [`three_modality_batch`] on [`test_device`].
pub fn three_modality_batch_on_device() -> (Vec<fusion_core::ModalityInput>, Tensor) {
    let device = test_device();
    let (inputs, labels) = three_modality_batch();
    (
        inputs.iter().map(|i| i.to_device(device)).collect(),
        labels.to_device(device),
    )
}

/// Two embeddings (`a`: 5, `b`: 4 features) and a sequence (`c`: 3 tokens of 6).
pub fn three_modality_config(fusion: FusionConfig) -> ModelConfig {
    ModelConfig {
        modalities: vec![modality("a", 5, 6), modality("b", 4, 5), modality("c", 6, 4)],
        num_classes: 3,
        task: Default::default(),
        hidden_dim: 8,
        dropout: 0.0,
        fusion,
    }
}

pub fn bools(values: &[u8]) -> Tensor {
    Tensor::from_slice(&values.iter().map(|&v| v != 0).collect::<Vec<_>>())
}

/// A batch of 8 for [`three_modality_config`], every modality missing somewhere, every
/// sample with at least one, and padded tokens in `c`.
pub fn three_modality_batch() -> (Vec<fusion_core::ModalityInput>, Tensor) {
    tch::manual_seed(11);
    let f = (Kind::Float, Device::Cpu);
    let a = Tensor::randn([8, 5], f);
    let b = Tensor::randn([8, 4], f);
    let c = Tensor::randn([8, 3, 6], f);
    let mut c_input = fusion_core::ModalityInput::with_presence(c, bools(&[0, 1, 1, 1, 1, 1, 0, 1]));
    c_input.padding_mask =
        Some(bools(&[1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0]).view([8, 3]));
    let inputs = vec![
        fusion_core::ModalityInput::with_presence(a, bools(&[1, 1, 0, 1, 1, 0, 1, 1])),
        fusion_core::ModalityInput::with_presence(b, bools(&[1, 0, 1, 1, 0, 1, 1, 1])),
        c_input,
    ];
    (inputs, Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]))
}

pub const CLASSES: i64 = 4;
pub const DIM: i64 = 8;

/// Two modalities of 8 features, 4 classes: each modality alone is informative for half
/// of the samples (best single-modality accuracy ≈ 0.625), together for all of them.
pub fn complementary_task(n: i64, seed: i64) -> TensorDataset {
    fusion_core::testing::complementary_task(n, CLASSES, DIM, seed).unwrap()
}

/// The same task keeping one modality.
pub fn only(data: &TensorDataset, m: usize) -> TensorDataset {
    TensorDataset::dense(vec![data.features[m].shallow_clone()], data.labels.shallow_clone()).unwrap()
}

pub fn task_config(names: &[&str], fusion: FusionConfig) -> ModelConfig {
    ModelConfig {
        modalities: names.iter().map(|n| modality(n, DIM, 16)).collect(),
        num_classes: CLASSES,
        task: Default::default(),
        hidden_dim: 16,
        dropout: 0.0,
        fusion,
    }
}

pub fn task_training(epochs: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 64,
        optimizer: OptimizerConfig::adam(5e-3),
        schedule: Default::default(),
        grad_clip: Some(5.0),
        early_stopping: None,
        seed,
        modality_dropout: 0.0,
        branch_loss_weight: 0.5,
        param_groups: Vec::new(),
        checkpoint_every_s: 0.0,
        data: Default::default(),
        precision: Default::default(),
        objective: Default::default(),
        group_dro: None,
        sampling: Default::default(),
    }
}

/// libtorch's random generator is global to the process: tests that seed it and expect
/// repeatable numbers hold this lock so that parallel tests do not draw from it meanwhile.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    fusion_core::testing::generator_lock()
}
