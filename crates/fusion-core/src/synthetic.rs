//! Synthetic tasks for checking fusion methods: data with known structure.

use tch::{Device, Kind, Tensor};

use crate::{Result, TensorDataset};

/// `samples` samples of `classes` classes and two modalities of `dim` features
/// (`dim ≥ classes`). For each sample a coin picks the modality that carries the label
/// (the class prototype `3·e_y` plus N(0, 0.5²) noise); the other modality holds N(0, 1)
/// noise. Each modality alone is informative for half of the samples, so the best a single
/// modality can do is about `0.5 + 0.5 / classes`; both together can be read perfectly.
pub fn complementary_task(samples: i64, classes: i64, dim: i64, seed: i64) -> Result<TensorDataset> {
    tch::manual_seed(seed);
    let f = (Kind::Float, Device::Cpu);
    let labels = Tensor::randint(classes, [samples], (Kind::Int64, Device::Cpu));
    let carrier = Tensor::randint(2, [samples], (Kind::Int64, Device::Cpu));
    let prototypes = Tensor::eye_m(classes, dim, f) * 3.0;
    let modality = |m: i64| {
        let signal = prototypes.index_select(0, &labels) + Tensor::randn([samples, dim], f) * 0.5;
        let noise = Tensor::randn([samples, dim], f);
        signal.where_self(&carrier.eq(m).unsqueeze(1), &noise)
    };
    let (a, b) = (modality(0), modality(1));
    TensorDataset::dense(vec![a, b], labels)
}
