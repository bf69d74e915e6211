//! Early (feature-level) fusion after the unimodal encoders.

use tch::{Tensor, nn, nn::Module};

use crate::{
    attention::ModalityTransformer,
    config::{EarlyMethod, GatingForm},
    fusion::tensor_fusion,
};

/// Fuses per-modality embeddings into one feature vector.
///
/// Missing modalities: each modality has a learned placeholder embedding that replaces
/// its features where the sample lacks it, and the presence mask `[B, M]` is appended to
/// the fused features so the classifier knows which modalities were there. The attention
/// method instead masks absent modalities out of the keys.
#[derive(Debug)]
pub struct EarlyFusion {
    placeholders: Vec<Tensor>,
    kind: Op,
    out_dim: i64,
}

#[derive(Debug)]
enum Op {
    Concat,
    Sum(Vec<nn::Linear>),
    Product(Vec<nn::Linear>),
    Tensor,
    LowRank { factors: Vec<Tensor>, rank_weights: Tensor, bias: Tensor },
    Gating { form: GatingForm, x_proj: nn::Linear, generator: nn::Linear, shift: nn::Linear, x_dim: i64, hidden: i64 },
    Attention(ModalityTransformer),
}

impl EarlyFusion {
    /// Parameters live under `p`; `dims` are the embedding sizes, `hidden` the common size.
    pub fn new(p: &nn::Path, method: &EarlyMethod, dims: &[i64], hidden: i64) -> Self {
        let count = dims.len() as i64;
        let placeholders =
            dims.iter().enumerate().map(|(m, &d)| p.randn(&format!("placeholder_{m}"), &[d], 0.0, 0.02)).collect();
        let projections = |name: &str| -> Vec<nn::Linear> {
            dims.iter()
                .enumerate()
                .map(|(m, &d)| nn::linear(p / format!("{name}_{m}"), d, hidden, Default::default()))
                .collect()
        };
        let (kind, fused_dim) = match method {
            EarlyMethod::Concat => (Op::Concat, dims.iter().sum()),
            EarlyMethod::Sum => (Op::Sum(projections("proj")), hidden),
            EarlyMethod::Product => (Op::Product(projections("proj")), hidden),
            EarlyMethod::Tensor => (Op::Tensor, dims.iter().map(|d| d + 1).product()),
            EarlyMethod::LowRank { rank } => {
                let factors = dims
                    .iter()
                    .enumerate()
                    .map(|(m, &d)| p.randn(&format!("factor_{m}"), &[*rank, d + 1, hidden], 0.0, (1.0 / (d + 1) as f64).sqrt()))
                    .collect();
                let rank_weights = p.randn("rank_weights", &[*rank], 0.0, (1.0 / *rank as f64).sqrt());
                let bias = p.zeros("bias", &[hidden]);
                (Op::LowRank { factors, rank_weights, bias }, hidden)
            }
            EarlyMethod::Gating { form } => {
                let x_dim = dims[0];
                let z_dim: i64 = dims[1..].iter().sum();
                let generated = match form {
                    GatingForm::Matrix => x_dim * hidden,
                    GatingForm::Vector => hidden,
                    GatingForm::Scalar => 1,
                };
                let kind = Op::Gating {
                    form: *form,
                    x_proj: nn::linear(p / "x_proj", x_dim, hidden, Default::default()),
                    generator: nn::linear(p / "generator", z_dim, generated, Default::default()),
                    shift: nn::linear(p / "shift", z_dim, hidden, Default::default()),
                    x_dim,
                    hidden,
                };
                (kind, hidden)
            }
            EarlyMethod::Attention { heads, layers } => {
                (Op::Attention(ModalityTransformer::new(&(p / "attention"), dims, hidden, *heads, *layers)), hidden)
            }
        };
        Self { placeholders, kind, out_dim: fused_dim + count }
    }

    /// Size of the fused features (the presence mask included).
    pub fn out_dim(&self) -> i64 {
        self.out_dim
    }

    /// `embeddings[m]` is `[B, D_m]` (pooled) and `sequences[m]` the same modality before
    /// pooling with its padding mask; `presence` is `[B, M]` floats. Returns the fused
    /// features and, for attention, the weight each modality received `[B, M]`.
    pub fn forward(
        &self,
        embeddings: &[Tensor],
        sequences: &[(Tensor, Option<Tensor>)],
        presence: &Tensor,
    ) -> (Tensor, Option<Tensor>) {
        let filled: Vec<Tensor> = embeddings
            .iter()
            .zip(&self.placeholders)
            .enumerate()
            .map(|(m, (x, placeholder))| {
                let here = presence.select(1, m as i64).unsqueeze(1).gt(0.5);
                x.where_self(&here, &placeholder.unsqueeze(0).expand_as(x))
            })
            .collect();
        let mut weights = None;
        let fused = match &self.kind {
            Op::Concat => Tensor::cat(&filled, 1),
            Op::Sum(projections) => {
                filled.iter().zip(projections).map(|(x, l)| l.forward(x)).reduce(|a, b| a + b).unwrap_or_default()
            }
            Op::Product(projections) => {
                filled.iter().zip(projections).map(|(x, l)| l.forward(x)).reduce(|a, b| a * b).unwrap_or_default()
            }
            Op::Tensor => {
                let refs: Vec<&Tensor> = filled.iter().collect();
                // Shapes are checked by the model before fusion.
                tensor_fusion(&refs).unwrap_or_default()
            }
            Op::LowRank { factors, rank_weights, bias } => {
                let product = filled
                    .iter()
                    .zip(factors)
                    .map(|(x, w)| {
                        let ones = Tensor::ones([x.size()[0], 1], (x.kind(), x.device()));
                        Tensor::einsum("bd,rdh->rbh", &[Tensor::cat(&[x, &ones], 1), w.shallow_clone()], None::<&[i64]>)
                    })
                    .reduce(|a, b| a * b)
                    .unwrap_or_default();
                Tensor::einsum("r,rbh->bh", &[rank_weights, &product], None::<&[i64]>) + bias
            }
            Op::Gating { form, x_proj, generator, shift, x_dim, hidden } => {
                let x = &filled[0];
                let z = Tensor::cat(&filled[1..], 1);
                let generated = generator.forward(&z);
                let transformed = match form {
                    GatingForm::Matrix => {
                        let w = generated.view([-1, *x_dim, *hidden]);
                        Tensor::einsum("bd,bdh->bh", &[x, &w], None::<&[i64]>) + x_proj.forward(x)
                    }
                    GatingForm::Vector | GatingForm::Scalar => x_proj.forward(x) * generated,
                };
                transformed + shift.forward(&z)
            }
            Op::Attention(transformer) => {
                let (cls, modality_weights) = transformer.forward(sequences, presence);
                weights = Some(modality_weights);
                cls
            }
        };
        (Tensor::cat(&[fused, presence.shallow_clone()], 1), weights)
    }
}
