//! Export of a trained model to TorchScript, for `torch.jit.load` in Python or
//! `tch::CModule` in Rust.

use std::{cell::RefCell, path::Path};

use serde::{Deserialize, Serialize};
use tch::{CModule, Tensor, nn::VarStore};

use crate::{Error, FusionModel, ModalityInput, Result, Task, write_atomic, write_file_atomic};

/// One dimension of an exported input: a size the module needs, or a named one the caller
/// chooses (`"batch"`, and `"length"` for sequences).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// Any size, the same for every input that names it.
    Free(String),
    /// Exactly this size.
    Fixed(i64),
}

/// One positional input of an exported module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedInput {
    /// `<modality>.features`, `<modality>.present` or `<modality>.padding_mask`.
    pub name: String,
    /// Its shape: `["batch", 4096]`, `["batch", "length", 384]`…
    pub shape: Vec<Dim>,
    /// `float32`, `int64` (token ids) or `bool`.
    pub dtype: String,
}

/// How to call an exported module: positional inputs in this order, one output: the
/// class log-probabilities `[B, C]`, each label's log-probabilities of off and on
/// `[B, L, 2]` (multi-label), or the number `[B]` (regression). Saved beside the module as
/// `<file>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSignature {
    /// Inputs in call order.
    pub inputs: Vec<ExportedInput>,
    /// Output names (`log_probs`, `label_log_probs` or `value`).
    pub outputs: Vec<String>,
    /// What the model predicts.
    #[serde(default)]
    pub task: Task,
    /// Class (or label) count; 1 for a regression.
    pub num_classes: i64,
    /// Class (or label) names, in the order of the output's columns; a regression's one
    /// name is `value`.
    pub classes: Vec<String>,
    /// The calibration traced into the module, when it has one: the classification's
    /// temperature, or a multi-label model's temperature per label (the output is then of
    /// the calibrated probabilities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperatures: Option<Vec<f64>>,
}

/// Traces `model` (whose variables live in `vs`) in evaluation mode on `example` and saves the TorchScript module at
/// `path` (written atomically) with its [`ExportSignature`] at `path` + `.json`; `classes`
/// names the output's columns. `temperatures` (a classification's one, or one per label of
/// a multi-label model) are traced into the module: it then outputs calibrated
/// log-probabilities, `log_softmax(log p / T)`.
///
/// Each modality contributes `features` and `present`, then `padding_mask` when the
/// example has one. Tracing records the example's structure: a modality that had a padding
/// mask must be given one; sequence lengths and the batch size may change.
pub fn export_torchscript(
    model: &FusionModel,
    vs: &VarStore,
    example: &[ModalityInput],
    classes: &[String],
    temperatures: Option<&[f64]>,
    path: &Path,
) -> Result<ExportSignature> {
    let num_classes = model.config().num_classes;
    let scale = temperatures.map(|t| temperature_scale(model, t)).transpose()?;
    if classes.len() as i64 != num_classes {
        return Err(Error::Config(format!(
            "{} class names for a model of {num_classes} classes",
            classes.len()
        )));
    }
    // Run once untraced for a typed error on bad shapes (tracing would bury it).
    tch::no_grad(|| model.forward_t(example, false))?;
    let flat = export_arguments(example);
    let has_mask: Vec<bool> = example.iter().map(|input| input.padding_mask.is_some()).collect();
    // Names and shapes in the order of `export_arguments`.
    let mut inputs = Vec::new();
    for (input, name) in example.iter().zip(model.modality_names()) {
        let parts = [
            ("features", Some(&input.features)),
            ("present", Some(&input.present)),
            ("padding_mask", input.padding_mask.as_ref()),
        ];
        for (suffix, tensor) in parts {
            if let Some(t) = tensor {
                // The batch is free, and so is a sequence's length (the dimension its
                // padding mask has).
                let sequence = input.padding_mask.is_some();
                let shape = t
                    .size()
                    .into_iter()
                    .enumerate()
                    .map(|(d, size)| match d {
                        0 => Dim::Free("batch".into()),
                        1 if sequence => Dim::Free("length".into()),
                        _ => Dim::Fixed(size),
                    })
                    .collect();
                inputs.push(ExportedInput {
                    name: format!("{name}.{suffix}"),
                    shape,
                    dtype: dtype_name(t.kind()).into(),
                });
            }
        }
    }
    // The tracer stores parameters as constants, which it refuses while they require
    // gradients: switch that off for the trace and restore it after (frozen variables
    // stay frozen).
    let trainable: Vec<Tensor> = vs
        .trainable_variables()
        .into_iter()
        .filter(Tensor::requires_grad)
        .collect();
    for var in &trainable {
        let _ = var.set_requires_grad(false);
    }
    let failure = RefCell::new(None);
    let traced = tch::no_grad(|| {
        CModule::create_by_tracing("FusionModel", "forward", &flat, &mut |tensors: &[Tensor]| {
            let mut rest = tensors.iter();
            let mut next = || rest.next().map(Tensor::shallow_clone).unwrap_or_default();
            let rebuilt: Vec<ModalityInput> = has_mask
                .iter()
                .map(|&mask| {
                    let features = next();
                    let present = next();
                    ModalityInput {
                        features,
                        present,
                        padding_mask: mask.then(&mut next),
                    }
                })
                .collect();
            match model.forward_t(&rebuilt, false) {
                Ok(output) => vec![match &scale {
                    Some(scale) => (&output.prediction / scale).log_softmax(-1, tch::Kind::Float),
                    None => output.prediction,
                }],
                Err(e) => {
                    *failure.borrow_mut() = Some(e);
                    Vec::new()
                }
            }
        })
    });
    // Saved before gradients come back: the module holds the parameters themselves as
    // constants, and a constant that requires gradients cannot be loaded again.
    let saved = match (traced, failure.into_inner()) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(e.into()),
        (Ok(module), None) => write_atomic(path, |tmp| Ok(module.save(tmp)?)),
    };
    for var in &trainable {
        let _ = var.set_requires_grad(true);
    }
    saved?;
    let signature = ExportSignature {
        inputs,
        outputs: vec![
            match model.task() {
                Task::Classification => "log_probs",
                Task::MultiLabel => "label_log_probs",
                Task::Regression => "value",
                Task::Contrastive => "embeddings",
            }
            .into(),
        ],
        task: model.task(),
        num_classes,
        classes: classes.to_vec(),
        temperatures: temperatures.map(<[f64]>::to_vec),
    };
    let json = serde_json::to_string_pretty(&signature).map_err(|e| Error::Config(e.to_string()))?;
    let sidecar = signature_path(path);
    write_file_atomic(&sidecar, json)?;
    Ok(signature)
}

/// The divisor of a model's log-probabilities for `temperatures`: `[1]` for a
/// classification's one, `[1, L, 1]` for a multi-label model's one per label.
fn temperature_scale(model: &FusionModel, temperatures: &[f64]) -> Result<Tensor> {
    let labels = model.config().num_classes;
    let shape: &[i64] = match model.task() {
        Task::Classification if temperatures.len() == 1 => &[1],
        Task::MultiLabel if temperatures.len() as i64 == labels => &[1, labels, 1],
        task => {
            return Err(Error::Config(format!(
                "{} temperatures for a {} model of {labels} outputs",
                temperatures.len(),
                task.name()
            )));
        }
    };
    if temperatures.iter().any(|t| !(t.is_finite() && *t > 0.0)) {
        return Err(Error::Config(format!(
            "temperatures {temperatures:?}: each must be positive"
        )));
    }
    Ok(Tensor::from_slice(temperatures)
        .to_kind(tch::Kind::Float)
        .view(shape)
        .to_device(model.device()))
}

/// The positional arguments of an exported module for `inputs`: per modality its features,
/// its presence mask, then its padding mask when it has one (see [`ExportSignature`]).
pub fn export_arguments(inputs: &[ModalityInput]) -> Vec<Tensor> {
    inputs
        .iter()
        .flat_map(|input| {
            [Some(&input.features), Some(&input.present), input.padding_mask.as_ref()]
                .into_iter()
                .flatten()
        })
        .map(Tensor::shallow_clone)
        .collect()
}

/// Where [`export_torchscript`] writes the signature of the module at `path`.
pub fn signature_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".json");
    name.into()
}

/// The PyTorch name of a tensor kind in a signature.
fn dtype_name(kind: tch::Kind) -> &'static str {
    match kind {
        tch::Kind::Bool => "bool",
        tch::Kind::Int64 => "int64",
        tch::Kind::Uint8 => "uint8",
        tch::Kind::Double => "float64",
        _ => "float32",
    }
}
