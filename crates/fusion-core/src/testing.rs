//! Helpers for tests (the `testing` feature): gradient checks, the device tests run on,
//! seeding libtorch's global generator under a lock, and synthetic tasks with known
//! structure.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tch::{Device, Kind, Tensor, nn::VarStore};

use crate::{DeviceChoice, Result, TensorDataset};

/// Whether `tensor` received a gradient with a non-zero entry in the last backward pass.
pub fn has_gradient(tensor: &Tensor) -> bool {
    let grad = tensor.grad();
    grad.defined()
        && grad
            .f_abs()
            .and_then(|a| a.f_sum(Kind::Double))
            .ok()
            .and_then(|s| f64::try_from(s).ok())
            .is_some_and(|s| s > 0.0)
}

/// Names of the trainable variables of `vs` that received no gradient (or an all-zero one)
/// in the last backward pass, sorted: the parts of a model that would not learn.
pub fn parameters_without_gradient(vs: &VarStore) -> Vec<String> {
    let mut names: Vec<String> = vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad() && !has_gradient(v))
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names
}

/// The device named by the environment variable `name` (written as `--device` takes it),
/// the CPU when it is unset: how device-aware tests learn where to run
/// (`FUSION_TEST_DEVICE`). An unknown or unavailable device is an error naming it.
pub fn device_from_env(name: &str) -> Result<Device> {
    DeviceChoice::from_setting(name, std::env::var(name).ok())
}

static GENERATOR: Mutex<()> = Mutex::new(());

/// Holds libtorch's global random generator for this thread: tests that expect repeatable
/// numbers draw only while they hold it, so parallel tests of the same process do not draw
/// from it meanwhile.
#[must_use = "the generator is held only while the guard lives"]
pub fn generator_lock() -> MutexGuard<'static, ()> {
    GENERATOR.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seeds libtorch's global generator with `seed` and holds it (see [`generator_lock`]):
/// the only way here to seed it, so a seeded test cannot forget the lock.
#[must_use = "the generator is held only while the guard lives"]
pub fn seeded(seed: i64) -> MutexGuard<'static, ()> {
    let guard = generator_lock();
    tch::manual_seed(seed);
    guard
}

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
