//! Cross-modal attention: a small pre-norm transformer over modality tokens.

use tch::{Kind, Tensor, nn, nn::Module};

/// One token per embedding modality and one per real token of a sequence modality, each
/// projected to `hidden` plus a learned modality-type embedding, after a learned [CLS]
/// token whose final state is the fused representation. Keys of absent modalities and
/// of padding are masked out, so they receive no attention.
#[derive(Debug)]
pub struct ModalityTransformer {
    projections: Vec<nn::Linear>,
    type_embedding: Tensor,
    cls: Tensor,
    layers: Vec<Layer>,
    final_norm: nn::LayerNorm,
    heads: i64,
}

#[derive(Debug)]
struct Layer {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    out: nn::Linear,
    norm2: nn::LayerNorm,
    ff1: nn::Linear,
    ff2: nn::Linear,
}

impl ModalityTransformer {
    /// `dims` are the modalities' embedding sizes; `heads` divides `hidden`.
    pub fn new(p: &nn::Path, dims: &[i64], hidden: i64, heads: i64, layers: usize) -> Self {
        let projections = dims
            .iter()
            .enumerate()
            .map(|(m, &d)| crate::linear(p / format!("proj_{m}"), d, hidden))
            .collect();
        let layers = (0..layers)
            .map(|l| {
                let q = p / format!("layer_{l}");
                Layer {
                    norm1: nn::layer_norm(&q / "norm1", vec![hidden], Default::default()),
                    qkv: crate::linear(&q / "qkv", hidden, 3 * hidden),
                    out: crate::linear(&q / "out", hidden, hidden),
                    norm2: nn::layer_norm(&q / "norm2", vec![hidden], Default::default()),
                    ff1: crate::linear(&q / "ff1", hidden, 2 * hidden),
                    ff2: crate::linear(&q / "ff2", 2 * hidden, hidden),
                }
            })
            .collect();
        Self {
            projections,
            type_embedding: p.randn("type_embedding", &[dims.len() as i64, hidden], 0.0, 0.02),
            cls: p.randn("cls", &[hidden], 0.0, 0.02),
            layers,
            final_norm: nn::layer_norm(p / "final_norm", vec![hidden], Default::default()),
            heads,
        }
    }

    /// Returns the [CLS] state `[B, H]` and the attention the [CLS] query of the last layer
    /// gave each modality `[B, M]` (summed over its tokens, averaged over heads).
    pub fn forward(&self, sequences: &[(Tensor, Option<Tensor>)], presence: &Tensor) -> (Tensor, Tensor) {
        // Shapes derive from tensors, not from Rust integers, so a traced (exported) model
        // accepts any batch size.
        let column = presence.narrow(1, 0, 1); // [B, 1]
        let mut tokens = vec![column.unsqueeze(-1).zeros_like() + self.cls.view([1, 1, -1])];
        let mut valid = vec![column.ones_like().to_kind(Kind::Bool)];
        let mut spans = Vec::with_capacity(sequences.len());
        let mut start = 1;
        for (m, ((features, padding), projection)) in sequences.iter().zip(&self.projections).enumerate() {
            let seq = if features.dim() == 2 {
                features.unsqueeze(1)
            } else {
                features.shallow_clone()
            };
            let length = seq.size()[1];
            tokens.push(projection.forward(&seq) + self.type_embedding.get(m as i64));
            let here = presence.select(1, m as i64).gt(0.5).unsqueeze(1);
            let real = match padding {
                Some(mask) if features.dim() == 3 => mask.to_kind(Kind::Bool),
                _ => seq.select(-1, 0).ones_like().to_kind(Kind::Bool),
            };
            valid.push(real.logical_and(&here));
            spans.push((start, length));
            start += length;
        }
        let mut h = Tensor::cat(&tokens, 1);
        let key_valid = Tensor::cat(&valid, 1);
        let mut cls_attention = key_valid.zeros_like().to_kind(Kind::Float);
        for layer in &self.layers {
            let (attended, probs) = self.attend(layer, &h.apply(&layer.norm1), &key_valid);
            // Out of place (not `+=`): autograd keeps `h` for the layer norm's backward.
            h = h.g_add(&attended);
            h = &h + h.apply(&layer.norm2).apply(&layer.ff1).relu().apply(&layer.ff2);
            cls_attention = probs.select(2, 0).mean_dim(1, false, Kind::Float);
        }
        let per_modality: Vec<Tensor> = spans
            .iter()
            .map(|&(s, n)| cls_attention.narrow(1, s, n).sum_dim_intlist(1, false, Kind::Float))
            .collect();
        (h.select(1, 0).apply(&self.final_norm), Tensor::stack(&per_modality, 1))
    }

    /// Multi-head self-attention with masked keys; returns the output and the attention
    /// probabilities `[B, heads, L, L]`.
    fn attend(&self, layer: &Layer, x: &Tensor, key_valid: &Tensor) -> (Tensor, Tensor) {
        let qkv = layer.qkv.forward(x).chunk(3, -1);
        let (out, probs) = masked_attention(&qkv[0], &qkv[1], &qkv[2], key_valid, self.heads);
        (layer.out.forward(&out), probs)
    }
}

/// Multi-head scaled dot-product attention: `q` is `[B, Lq, H]`, `k` and `v` are
/// `[B, Lk, H]`, and keys where `key_valid` `[B, Lk]` is false get no attention (a row
/// without any valid key would get NaN). Returns the heads' outputs merged back to
/// `[B, Lq, H]`, before any output projection, and the probabilities `[B, heads, Lq, Lk]`.
pub(crate) fn masked_attention(q: &Tensor, k: &Tensor, v: &Tensor, key_valid: &Tensor, heads: i64) -> (Tensor, Tensor) {
    let head_dim = q.size().last().copied().unwrap_or(heads) / heads;
    // Only the feature axis is split and merged, so neither the batch size nor the
    // sequence lengths are baked into a trace.
    let split = |x: &Tensor| x.unflatten(-1, [heads, head_dim]).transpose(1, 2);
    let (q, k, v) = (split(q), split(k), split(v));
    let scores = q.matmul(&k.transpose(-2, -1)) / (head_dim as f64).sqrt();
    let blocked = key_valid.logical_not().unsqueeze(1).unsqueeze(1);
    let probs = scores.masked_fill(&blocked, f64::NEG_INFINITY).softmax(-1, Kind::Float);
    let out = probs.matmul(&v).transpose(1, 2).flatten(-2, -1);
    (out, probs)
}
