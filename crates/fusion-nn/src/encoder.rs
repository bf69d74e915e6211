//! The encoder interface every modality implements, and the two encoders of plain
//! feature vectors.

use tch::{Tensor, nn, nn::Module};

use crate::{InputMismatch, ModalityInput};

/// Turns one modality's input into an embedding `[B, D]` or a sequence `[B, T, D]`.
/// Modality crates implement it for their encoders (CNNs, text transformers); the input
/// may be anything batch-first (token ids, images, spectrograms).
pub trait Encoder: std::fmt::Debug + Send {
    /// Size of the last dimension of the output.
    fn output_dim(&self) -> i64;
    /// Checks a batch's features before encoding; the error says what was expected.
    fn check_input(&self, features: &Tensor) -> std::result::Result<(), InputMismatch>;
    /// Encodes `input` (its padding mask, when there is one, marks real tokens); `train`
    /// enables dropout and other training-only behaviour. A sequence output keeps the
    /// input's token positions, so the input's padding mask still applies to it. The
    /// encoder's own computation, for an input [`Encoder::check_input`] accepted (libtorch
    /// panics on others): what an implementor writes, and what a caller that has checked
    /// the batch (a model, a wrapping encoder) calls. Others call [`Encoder::encode`].
    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor;
    /// [`Encoder::forward`] after [`Encoder::check_input`]: a wrongly shaped or typed input
    /// is an [`InputMismatch`] saying what was expected, not a panic inside libtorch.
    fn encode(&self, input: &ModalityInput, train: bool) -> std::result::Result<Tensor, InputMismatch> {
        self.check_input(&input.features)?;
        Ok(self.forward(input, train))
    }
}

/// Accepts float features `[B, input_dim]` or `[B, T, input_dim]`.
fn check_feature_vectors(features: &Tensor, input_dim: i64) -> std::result::Result<(), InputMismatch> {
    let size = features.size();
    if (2..=3).contains(&size.len()) && size.last() == Some(&input_dim) && features.is_floating_point() {
        Ok(())
    } else {
        Err(InputMismatch::new(
            format!("float [B, {input_dim}] or [B, T, {input_dim}] features"),
            features,
        ))
    }
}

/// Passes features through unchanged.
#[derive(Debug)]
pub struct IdentityEncoder {
    dim: i64,
}

impl IdentityEncoder {
    /// Features of `dim` values.
    pub fn new(dim: i64) -> Self {
        Self { dim }
    }
}

impl Encoder for IdentityEncoder {
    fn output_dim(&self) -> i64 {
        self.dim
    }

    fn check_input(&self, features: &Tensor) -> std::result::Result<(), InputMismatch> {
        check_feature_vectors(features, self.dim)
    }

    fn forward(&self, input: &ModalityInput, _train: bool) -> Tensor {
        input.features.shallow_clone()
    }
}

/// Linear layers with ReLU and dropout between them, applied to the last dimension.
#[derive(Debug)]
pub struct MlpEncoder {
    layers: Vec<nn::Linear>,
    input_dim: i64,
    dropout: f64,
}

impl MlpEncoder {
    /// Layers `input_dim → hidden[0] → … → hidden[n-1]` under `p`.
    pub fn new(p: &nn::Path, input_dim: i64, hidden: &[i64], dropout: f64) -> Self {
        let mut layers = Vec::with_capacity(hidden.len());
        let mut previous = input_dim;
        for (i, &size) in hidden.iter().enumerate() {
            layers.push(crate::linear(p / format!("layer_{i}"), previous, size));
            previous = size;
        }
        Self {
            layers,
            input_dim,
            dropout,
        }
    }
}

impl Encoder for MlpEncoder {
    fn output_dim(&self) -> i64 {
        self.layers.last().map_or(0, |l| l.ws.size()[0])
    }

    fn check_input(&self, features: &Tensor) -> std::result::Result<(), InputMismatch> {
        check_feature_vectors(features, self.input_dim)
    }

    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        let start = input.features.shallow_clone();
        self.layers
            .iter()
            .fold(start, |x, layer| layer.forward(&x).relu().dropout(self.dropout, train))
    }
}
