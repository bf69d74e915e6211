//! Explanation and robustness: exact per-modality Shapley values, accuracy under missing
//! modality subsets and under feature noise, and model complexity.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{FusionModel, ModalityInput, Result, Task, TensorDataset, train::argmax};

/// Per-modality Shapley values of the prediction: the probability of the predicted class,
/// the mean probability of each label's predicted state (multi-label), or the predicted
/// number (regression).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapleyReport {
    /// Modality names.
    pub modalities: Vec<String>,
    /// `values[i][m]`: contribution of modality `m` to sample `i`'s prediction (0 where
    /// the sample lacks `m`).
    pub values: Vec<Vec<f64>>,
    /// Mean contribution of each modality over the samples that have it.
    pub mean: Vec<f64>,
    /// Mean absolute contribution over the samples that have it.
    pub mean_abs: Vec<f64>,
    /// How many samples have each modality (the means are over these).
    #[serde(default)]
    pub present: Vec<usize>,
    /// Probability of the predicted class with no modality (the baseline `v(∅)`).
    pub baseline: Vec<f64>,
}

/// Exact Shapley values: the model is evaluated on every subset of modalities (through
/// the presence masks, 2^M passes), with `v(S)` = probability of the class predicted from
/// all of the sample's modalities. For each sample only its present modalities play, so
/// the values sum to `v(present) − v(∅)`.
pub fn shapley_values(model: &FusionModel, data: &TensorDataset, batch_size: usize) -> Result<ShapleyReport> {
    predicts(model)?;
    let count = model.modality_names().len();
    let subsets = 1usize << count;
    let device = model.device();
    let mut values = Vec::with_capacity(data.len() as usize);
    let mut baseline = Vec::with_capacity(data.len() as usize);
    tch::no_grad(|| -> Result<()> {
        for indices in data.batches(batch_size, None) {
            let (inputs, _) = data.batch(&indices, device);
            let present: Vec<Vec<bool>> = inputs
                .iter()
                .map(|i| Vec::<bool>::try_from(i.present.to_device(tch::Device::Cpu)))
                .collect::<std::result::Result<_, _>>()?;
            // probs[s][i][c] with only the modalities of subset s.
            let mut probs: Vec<Vec<Vec<f32>>> = Vec::with_capacity(subsets);
            for subset in 0..subsets {
                let masked: Vec<ModalityInput> = inputs
                    .iter()
                    .enumerate()
                    .map(|(m, input)| input.hidden_unless(subset & (1 << m) != 0))
                    .collect();
                probs.push(class_probabilities(model, &masked)?);
            }
            for i in 0..present.first().map_or(0, Vec::len) {
                let have: usize = (0..count).filter(|&m| present[m][i]).map(|m| 1 << m).sum();
                let full = &probs[have][i];
                let target = argmax(full);
                let value = |s: usize| -> f64 {
                    let row = &probs[s & have][i];
                    match model.task() {
                        Task::Classification => f64::from(row[target]),
                        Task::MultiLabel => {
                            let decided = |q: f32| f64::from(q) >= crate::THRESHOLD;
                            let agree = |(p, q): (&f32, &f32)| f64::from(if decided(*q) { *p } else { 1.0 - *p });
                            row.iter().zip(full).map(agree).sum::<f64>() / row.len().max(1) as f64
                        }
                        // Refused above.
                        Task::Regression | Task::Contrastive => f64::from(row[0]),
                    }
                };
                let players = have.count_ones() as usize;
                let mut phi = vec![0.0; count];
                for (m, slot) in phi.iter_mut().enumerate().filter(|(m, _)| have & (1 << m) != 0) {
                    for s in (0..subsets).filter(|s| s & !have == 0 && s & (1 << m) == 0) {
                        let size = s.count_ones() as usize;
                        let weight = factorial(size) * factorial(players - size - 1) / factorial(players);
                        *slot += weight * (value(s | (1 << m)) - value(s));
                    }
                }
                values.push(phi);
                baseline.push(value(0));
            }
        }
        Ok(())
    })?;
    let present_rows = |m: usize| -> Vec<bool> { Vec::<bool>::try_from(&data.present[m]).unwrap_or_default() };
    let (mut mean, mut mean_abs, mut present) = (vec![0.0; count], vec![0.0; count], vec![0; count]);
    for m in 0..count {
        let rows = present_rows(m);
        let have: Vec<f64> = values
            .iter()
            .zip(&rows)
            .filter(|(_, p)| **p)
            .map(|(v, _)| v[m])
            .collect();
        present[m] = have.len();
        let n = have.len().max(1) as f64;
        mean[m] = have.iter().sum::<f64>() / n;
        mean_abs[m] = have.iter().map(|v| v.abs()).sum::<f64>() / n;
    }
    Ok(ShapleyReport {
        modalities: model.modality_names().to_vec(),
        values,
        mean,
        mean_abs,
        present,
        baseline,
    })
}

/// Explanations and robustness read a prediction: a contrastive model makes none.
fn predicts(model: &FusionModel) -> Result<()> {
    match model.task() {
        Task::Contrastive => Err(crate::Error::Config(
            "a contrastive model predicts no class or value to explain or to score under noise: evaluate its retrieval"
                .into(),
        )),
        _ => Ok(()),
    }
}

fn factorial(n: usize) -> f64 {
    (1..=n).map(|k| k as f64).product()
}

/// Each sample's class probabilities, label probabilities, or predicted number.
fn class_probabilities(model: &FusionModel, inputs: &[ModalityInput]) -> Result<Vec<Vec<f32>>> {
    let scores = model.forward_t(inputs, false)?.scores();
    Ok(Vec::<Vec<f32>>::try_from(scores.to_device(tch::Device::Cpu))?)
}

/// The task's accuracy with `edit` applied to the inputs: of the class, of the whole label
/// set (multi-label), or a regression's R² (0 for a constant target).
fn accuracy(
    model: &FusionModel,
    data: &TensorDataset,
    batch_size: usize,
    edit: &dyn Fn(usize, &ModalityInput) -> ModalityInput,
) -> Result<f64> {
    predicts(model)?;
    let mut correct = 0i64;
    let (mut predicted_values, mut targets) = (Vec::new(), Vec::new());
    tch::no_grad(|| -> Result<()> {
        for indices in data.batches(batch_size, None) {
            let (inputs, labels) = data.batch(&indices, model.device());
            let edited: Vec<ModalityInput> = inputs.iter().enumerate().map(|(m, i)| edit(m, i)).collect();
            let prediction = model.forward_t(&edited, false)?.prediction;
            match model.task() {
                Task::Classification => {
                    correct += i64::try_from(prediction.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64))?;
                }
                Task::MultiLabel => {
                    let decided = prediction.argmax(-1, false);
                    let exact = decided.eq_tensor(&labels.to_kind(Kind::Int64)).all_dim(1, false);
                    correct += i64::try_from(exact.sum(Kind::Int64))?;
                }
                // Refused above.
                Task::Regression | Task::Contrastive => {
                    predicted_values.extend(Vec::<f64>::try_from(
                        prediction.to_kind(Kind::Double).to_device(tch::Device::Cpu),
                    )?);
                    targets.extend(Vec::<f64>::try_from(
                        labels.to_kind(Kind::Double).to_device(tch::Device::Cpu),
                    )?);
                }
            }
        }
        Ok(())
    })?;
    if model.task() == Task::Regression {
        return Ok(crate::RegressionMetrics::compute(&predicted_values, &targets)
            .r2
            .unwrap_or(0.0));
    }
    Ok(correct as f64 / data.len().max(1) as f64)
}

/// Accuracy when only a subset of modalities is available.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetAccuracy {
    /// Modalities kept (the others are marked missing for every sample).
    pub modalities: Vec<String>,
    /// The task's accuracy on the dataset (subset accuracy for multi-label, R² for regression).
    pub accuracy: f64,
}

/// Accuracy under every non-empty subset of modalities (the others masked as missing).
pub fn missing_modality_accuracy(
    model: &FusionModel,
    data: &TensorDataset,
    batch_size: usize,
) -> Result<Vec<SubsetAccuracy>> {
    let names = model.modality_names();
    (1usize..1 << names.len())
        .map(|subset| {
            let keep = |m: usize| subset & (1 << m) != 0;
            let accuracy = accuracy(model, data, batch_size, &|m, input| input.hidden_unless(keep(m)))?;
            let modalities = names
                .iter()
                .enumerate()
                .filter(|(m, _)| keep(*m))
                .map(|(_, n)| n.clone())
                .collect();
            Ok(SubsetAccuracy { modalities, accuracy })
        })
        .collect()
}

/// Accuracy as Gaussian noise grows on one modality's features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseCurve {
    /// The noised modality.
    pub modality: String,
    /// `(level, accuracy)`: noise standard deviation as a fraction of the features' own.
    pub points: Vec<(f64, f64)>,
}

/// Noise levels of the robustness curves: 0, 0.1, …, 0.9.
pub const NOISE_LEVELS: [f64; 10] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// For each modality, accuracy with `level · std(features) · N(0, 1)` added to its
/// features, at each of `levels`; seeded.
pub fn noise_robustness(
    model: &FusionModel,
    data: &TensorDataset,
    batch_size: usize,
    levels: &[f64],
    seed: i64,
) -> Result<Vec<NoiseCurve>> {
    let names = model.modality_names();
    names
        .iter()
        .enumerate()
        .map(|(target, name)| {
            let features = &data.features[target];
            if !features.is_floating_point() {
                return Err(crate::Error::Config(format!(
                    "noise robustness: modality `{name}` has {:?} features (token ids?); Gaussian noise needs floats",
                    features.kind()
                )));
            }
            let scale = f64::try_from(features.f_std(true)?)?;
            let points = levels
                .iter()
                .map(|&level| {
                    tch::manual_seed(seed);
                    let acc = accuracy(model, data, batch_size, &|m, input| {
                        let mut edited = input.with_present(input.present.shallow_clone());
                        if m == target && level > 0.0 {
                            edited.features = &input.features + input.features.randn_like() * (level * scale);
                        }
                        edited
                    })?;
                    Ok((level, acc))
                })
                .collect::<Result<_>>()?;
            Ok(NoiseCurve {
                modality: name.clone(),
                points,
            })
        })
        .collect()
}

/// Size and speed of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Complexity {
    /// Trainable parameters.
    pub trainable_parameters: i64,
    /// All parameters.
    pub parameters: i64,
    /// Mean seconds of one training step (forward, backward, no update) on a batch.
    pub train_step_seconds: f64,
    /// Mean seconds of one inference pass on a batch.
    pub inference_seconds: f64,
    /// Peak resident memory of this process so far (bytes; Linux), or on CUDA the
    /// allocator's peak is not exposed by tch and this stays the CPU figure.
    pub peak_rss_bytes: Option<u64>,
}

/// Counts parameters and times `repeats` training and inference passes on one batch.
pub fn complexity(
    model: &FusionModel,
    vs: &tch::nn::VarStore,
    data: &TensorDataset,
    batch_size: usize,
    repeats: usize,
) -> Result<Complexity> {
    let variables = vs.variables();
    let parameters = variables.values().map(Tensor::numel).sum::<usize>() as i64;
    let trainable_parameters = variables
        .values()
        .filter(|t| t.requires_grad())
        .map(Tensor::numel)
        .sum::<usize>() as i64;
    let indices = data
        .batches(batch_size, None)
        .into_iter()
        .next()
        .unwrap_or_else(|| Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu)));
    let (inputs, labels) = data.batch(&indices, model.device());
    let repeats = repeats.max(1);
    let started = Instant::now();
    for _ in 0..repeats {
        model.forward_t(&inputs, true)?.loss(&labels, 1.0).f_backward()?;
    }
    let train_step_seconds = started.elapsed().as_secs_f64() / repeats as f64;
    for var in variables.values() {
        let mut var = var.shallow_clone();
        var.zero_grad();
    }
    let started = Instant::now();
    tch::no_grad(|| -> Result<()> {
        for _ in 0..repeats {
            model.forward_t(&inputs, false)?;
        }
        Ok(())
    })?;
    let inference_seconds = started.elapsed().as_secs_f64() / repeats as f64;
    Ok(Complexity {
        trainable_parameters,
        parameters,
        train_step_seconds,
        inference_seconds,
        peak_rss_bytes: crate::peak_rss_bytes(),
    })
}
