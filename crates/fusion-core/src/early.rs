//! Early (feature-level) fusion after the unimodal encoders.

use tch::{Tensor, nn, nn::Module};

use crate::{
    attention::ModalityTransformer,
    config::{EarlyMethod, GatingForm},
    cross_modal::CrossModalTransformer,
    fusion::tensor_fusion,
};

/// Fuses per-modality embeddings into one feature vector.
///
/// Missing modalities: each modality has a learned placeholder embedding that replaces
/// its features where the sample lacks it, and the presence mask `[B, M]` is appended to
/// the fused features so the classifier knows which modalities were there. The attention
/// methods instead mask absent modalities out of the keys.
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
    LowRank {
        factors: Vec<Tensor>,
        rank_weights: Tensor,
        bias: Tensor,
    },
    Gating {
        form: GatingForm,
        x_proj: nn::Linear,
        generator: nn::Linear,
        shift: nn::Linear,
        x_dim: i64,
        hidden: i64,
    },
    Attention(ModalityTransformer),
    CrossModal(CrossModalTransformer),
}

impl EarlyFusion {
    /// Parameters live under `p`; `dims` are the embedding sizes, `hidden` the common size.
    pub fn new(p: &nn::Path, method: &EarlyMethod, dims: &[i64], hidden: i64) -> Self {
        let count = dims.len() as i64;
        // The attention methods mask absent modalities out of their keys and need no
        // placeholder.
        let placeholders = if matches!(method, EarlyMethod::Attention { .. } | EarlyMethod::CrossModal { .. }) {
            Vec::new()
        } else {
            dims.iter()
                .enumerate()
                .map(|(m, &d)| p.randn(&format!("placeholder_{m}"), &[d], 0.0, 0.02))
                .collect()
        };
        let projections = |name: &str| -> Vec<nn::Linear> {
            dims.iter()
                .enumerate()
                .map(|(m, &d)| crate::linear(p / format!("{name}_{m}"), d, hidden))
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
                    .map(|(m, &d)| {
                        p.randn(
                            &format!("factor_{m}"),
                            &[*rank, d + 1, hidden],
                            0.0,
                            (1.0 / (d + 1) as f64).sqrt(),
                        )
                    })
                    .collect();
                let rank_weights = p.randn("rank_weights", &[*rank], 0.0, (1.0 / *rank as f64).sqrt());
                let bias = p.zeros("bias", &[hidden]);
                (
                    Op::LowRank {
                        factors,
                        rank_weights,
                        bias,
                    },
                    hidden,
                )
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
                    x_proj: crate::linear(p / "x_proj", x_dim, hidden),
                    generator: crate::linear(p / "generator", z_dim, generated),
                    shift: crate::linear(p / "shift", z_dim, hidden),
                    x_dim,
                    hidden,
                };
                (kind, hidden)
            }
            EarlyMethod::Attention { heads, layers } => (
                Op::Attention(ModalityTransformer::new(
                    &(p / "attention"),
                    dims,
                    hidden,
                    *heads,
                    *layers,
                )),
                hidden,
            ),
            EarlyMethod::CrossModal { heads, layers } => (
                Op::CrossModal(CrossModalTransformer::new(
                    &(p / "cross_modal"),
                    dims,
                    hidden,
                    *heads,
                    *layers,
                )),
                count * hidden,
            ),
        };
        Self {
            placeholders,
            kind,
            out_dim: fused_dim + count,
        }
    }

    /// Size of the fused features (the presence mask included).
    pub fn out_dim(&self) -> i64 {
        self.out_dim
    }

    /// `embeddings[m]` is `[B, D_m]` (pooled) and `sequences[m]` the same modality before
    /// pooling with its padding mask; `presence` is `[B, M]` floats. Returns the fused
    /// features and, for attention (not cross-modal attention), the weight each modality
    /// received `[B, M]`.
    pub fn forward(
        &self,
        embeddings: &[Tensor],
        sequences: &[(Tensor, Option<Tensor>)],
        presence: &Tensor,
    ) -> (Tensor, Option<Tensor>) {
        // Empty for the attention methods, which have no placeholders and do not use it.
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
            Op::Sum(projections) => filled
                .iter()
                .zip(projections)
                .map(|(x, l)| l.forward(x))
                .reduce(|a, b| a + b)
                .unwrap_or_default(),
            Op::Product(projections) => filled
                .iter()
                .zip(projections)
                .map(|(x, l)| l.forward(x))
                .reduce(|a, b| a * b)
                .unwrap_or_default(),
            Op::Tensor => {
                let refs: Vec<&Tensor> = filled.iter().collect();
                // Shapes are checked by the model before fusion.
                tensor_fusion(&refs).unwrap_or_default()
            }
            Op::LowRank {
                factors,
                rank_weights,
                bias,
            } => {
                let product = filled
                    .iter()
                    .zip(factors)
                    .map(|(x, w)| {
                        let ones = x.narrow(1, 0, 1).ones_like();
                        Tensor::einsum(
                            "bd,rdh->rbh",
                            &[Tensor::cat(&[x, &ones], 1), w.shallow_clone()],
                            None::<&[i64]>,
                        )
                    })
                    .reduce(|a, b| a * b)
                    .unwrap_or_default();
                Tensor::einsum("r,rbh->bh", &[rank_weights, &product], None::<&[i64]>) + bias
            }
            Op::Gating {
                form,
                x_proj,
                generator,
                shift,
                x_dim,
                hidden,
            } => {
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
            Op::CrossModal(transformer) => transformer.forward(sequences, presence),
        };
        (Tensor::cat(&[fused, presence.shallow_clone()], 1), weights)
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, nn::VarStore};

    use super::*;

    fn matrix(rows: &[&[f32]]) -> Tensor {
        let width = rows[0].len() as i64;
        Tensor::from_slice(&rows.concat()).view([-1, width])
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        f64::try_from((a - b).abs().max()).unwrap_or(f64::INFINITY)
    }

    #[test]
    fn concat_fills_absent_modalities_with_the_placeholder_and_appends_presence() {
        let vs = VarStore::new(Device::Cpu);
        let fusion = EarlyFusion::new(&vs.root(), &EarlyMethod::Concat, &[2, 1], 4);
        let a = matrix(&[&[1.0, 2.0], &[3.0, 4.0]]);
        let b = matrix(&[&[5.0], &[6.0]]);
        let presence = matrix(&[&[1.0, 1.0], &[1.0, 0.0]]);
        let (out, weights) = fusion.forward(&[a, b], &[], &presence);
        assert!(weights.is_none());
        let placeholder = f32::try_from(&fusion.placeholders[1].get(0)).unwrap_or(f32::NAN);
        let expected = matrix(&[&[1.0, 2.0, 5.0, 1.0, 1.0], &[3.0, 4.0, placeholder, 1.0, 0.0]]);
        assert_eq!(out.size(), [2, fusion.out_dim()]);
        assert!(max_diff(&out, &expected) == 0.0, "{out}");
    }

    #[test]
    fn sum_product_and_gating_follow_their_formulas() {
        tch::manual_seed(0);
        let a = Tensor::randn([3, 2], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([3, 3], (Kind::Float, Device::Cpu));
        let presence = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
        let methods = [
            EarlyMethod::Sum,
            EarlyMethod::Product,
            EarlyMethod::Gating {
                form: GatingForm::Vector,
            },
            EarlyMethod::Gating {
                form: GatingForm::Scalar,
            },
            EarlyMethod::Gating {
                form: GatingForm::Matrix,
            },
        ];
        for method in methods {
            let vs = VarStore::new(Device::Cpu);
            let fusion = EarlyFusion::new(&vs.root(), &method, &[2, 3], 4);
            let (out, _) = fusion.forward(&[a.shallow_clone(), b.shallow_clone()], &[], &presence);
            let expected = match &fusion.kind {
                Op::Sum(l) => l[0].forward(&a) + l[1].forward(&b),
                Op::Product(l) => l[0].forward(&a) * l[1].forward(&b),
                Op::Gating {
                    form: GatingForm::Matrix,
                    x_proj,
                    generator,
                    shift,
                    ..
                } => {
                    // Sample by sample: x · W(z) with W(z) a 2×4 matrix.
                    let rows: Vec<Tensor> = (0..3)
                        .map(|i| {
                            a.get(i)
                                .unsqueeze(0)
                                .matmul(&generator.forward(&b.get(i)).view([2, 4]))
                                .squeeze_dim(0)
                        })
                        .collect();
                    Tensor::stack(&rows, 0) + x_proj.forward(&a) + shift.forward(&b)
                }
                Op::Gating {
                    x_proj,
                    generator,
                    shift,
                    ..
                } => x_proj.forward(&a) * generator.forward(&b) + shift.forward(&b),
                other => panic!("unexpected {other:?}"),
            };
            assert!(max_diff(&out.narrow(1, 0, 4), &expected) < 1e-5, "{method:?}");
            assert!(max_diff(&out.narrow(1, 4, 2), &presence) == 0.0);
        }
    }

    #[test]
    fn low_rank_equals_tensor_fusion_with_the_factored_weight() {
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let fusion = EarlyFusion::new(&vs.root(), &EarlyMethod::LowRank { rank: 3 }, &[2, 3], 4);
        let a = Tensor::randn([5, 2], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
        let presence = Tensor::ones([5, 2], (Kind::Float, Device::Cpu));
        let (out, _) = fusion.forward(&[a.shallow_clone(), b.shallow_clone()], &[], &presence);
        let Op::LowRank {
            factors,
            rank_weights,
            bias,
        } = &fusion.kind
        else {
            panic!("not low-rank")
        };
        // The full tensor-fusion weight that the rank-3 factors stand for (Liu et al. 2018).
        let full = Tensor::einsum(
            "r,rah,rbh->abh",
            &[rank_weights, &factors[0], &factors[1]],
            None::<&[i64]>,
        );
        let reference = tensor_fusion(&[&a, &b]).unwrap_or_default().matmul(&full.view([12, 4])) + bias;
        assert!(max_diff(&out.narrow(1, 0, 4), &reference) < 1e-5);
    }
}
