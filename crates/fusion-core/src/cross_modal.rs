//! Pairwise cross-modal attention (MulT, Tsai et al. 2019).

use tch::{Kind, Tensor, nn, nn::Module};

use crate::attention::masked_attention;

/// For every ordered pair (target, source) of modalities, a stack of pre-norm
/// cross-attention blocks in which the target's tokens query the source's tokens. As in
/// MulT, keys and values come from the source's input tokens at every depth, and each
/// stack ends with a layer norm. Modalities are first projected to `hidden` plus a learned
/// modality-type embedding. Per target, the outputs of its pairs are concatenated,
/// projected to `hidden` and mean-pooled over the target's real tokens; the fused features
/// are the targets' results side by side, `[B, M * hidden]`.
///
/// Padding and absent sources are masked out of the keys, and an absent target contributes
/// zeros. There are no modality weights: each pair's softmax runs over one source only, so
/// the attention mass a source receives says no more than whether it is present.
#[derive(Debug)]
pub struct CrossModalTransformer {
    projections: Vec<nn::Linear>,
    type_embedding: Tensor,
    /// `pairs[t]`: the stacks in which modality `t` is the target, one per source.
    pairs: Vec<Vec<Pair>>,
    /// Per target: its pairs' outputs `(M - 1) * hidden` to `hidden`.
    merges: Vec<nn::Linear>,
    heads: i64,
}

#[derive(Debug)]
struct Pair {
    source: usize,
    blocks: Vec<Block>,
    final_norm: nn::LayerNorm,
}

#[derive(Debug)]
struct Block {
    norm_q: nn::LayerNorm,
    norm_kv: nn::LayerNorm,
    q: nn::Linear,
    kv: nn::Linear,
    out: nn::Linear,
    norm_ff: nn::LayerNorm,
    ff1: nn::Linear,
    ff2: nn::Linear,
    /// A learned key and value always attended to beside the source's tokens: with a
    /// one-token source (an embedding) the softmax would otherwise be 1 whatever the
    /// query, and the query layer would never learn.
    null_key: Tensor,
    null_value: Tensor,
}

fn block(p: &nn::Path, hidden: i64) -> Block {
    Block {
        norm_q: nn::layer_norm(p / "norm_q", vec![hidden], Default::default()),
        norm_kv: nn::layer_norm(p / "norm_kv", vec![hidden], Default::default()),
        q: crate::linear(p / "q", hidden, hidden),
        // Keys and values share one layer: the key bias alone gets no gradient (softmax
        // ignores a constant added to every score of a row).
        kv: crate::linear(p / "kv", hidden, 2 * hidden),
        out: crate::linear(p / "out", hidden, hidden),
        norm_ff: nn::layer_norm(p / "norm_ff", vec![hidden], Default::default()),
        ff1: crate::linear(p / "ff1", hidden, 2 * hidden),
        ff2: crate::linear(p / "ff2", 2 * hidden, hidden),
        null_key: p.randn("null_key", &[hidden], 0.0, 0.02),
        null_value: p.randn("null_value", &[hidden], 0.0, 0.02),
    }
}

impl CrossModalTransformer {
    /// `dims` are the modalities' embedding sizes (at least two); `heads` divides `hidden`.
    pub fn new(p: &nn::Path, dims: &[i64], hidden: i64, heads: i64, layers: usize) -> Self {
        let count = dims.len();
        let projections = dims
            .iter()
            .enumerate()
            .map(|(m, &d)| crate::linear(p / format!("proj_{m}"), d, hidden))
            .collect();
        let pairs: Vec<Vec<Pair>> = (0..count)
            .map(|t| {
                (0..count)
                    .filter(|&s| s != t)
                    .map(|s| {
                        let q = p / format!("pair_{s}_to_{t}");
                        Pair {
                            source: s,
                            blocks: (0..layers)
                                .map(|l| block(&(&q / format!("layer_{l}")), hidden))
                                .collect(),
                            final_norm: nn::layer_norm(&q / "final_norm", vec![hidden], Default::default()),
                        }
                    })
                    .collect::<Vec<Pair>>()
            })
            .collect();
        let merges = (0..count)
            .map(|t| crate::linear(p / format!("merge_{t}"), (count as i64 - 1) * hidden, hidden))
            .collect();
        Self {
            projections,
            type_embedding: p.randn("type_embedding", &[count as i64, hidden], 0.0, 0.02),
            pairs,
            merges,
            heads,
        }
    }

    /// `sequences[m]` is modality `m`'s encoder output `[B, D]` or `[B, T, D]` with its
    /// padding mask (true = real token); `presence` is `[B, M]` floats. Returns
    /// `[B, M * hidden]`.
    pub fn forward(&self, sequences: &[(Tensor, Option<Tensor>)], presence: &Tensor) -> Tensor {
        // Shapes derive from tensors, not from Rust integers, so a traced (exported) model
        // accepts any batch size and sequence length.
        // Per modality: its tokens [B, T, H] and which of them are real and present [B, T].
        let (tokens, valid): (Vec<Tensor>, Vec<Tensor>) = sequences
            .iter()
            .zip(&self.projections)
            .enumerate()
            .map(|(m, ((features, padding), projection))| {
                let seq = if features.dim() == 2 {
                    features.unsqueeze(1)
                } else {
                    features.shallow_clone()
                };
                let here = presence.select(1, m as i64).gt(0.5).unsqueeze(1);
                let real = match padding {
                    Some(mask) if features.dim() == 3 => mask.to_kind(Kind::Bool),
                    _ => seq.select(-1, 0).ones_like().to_kind(Kind::Bool),
                };
                let x = projection.forward(&seq) + self.type_embedding.get(m as i64);
                (x, real.logical_and(&here))
            })
            .unzip();
        let pooled: Vec<Tensor> = self
            .pairs
            .iter()
            .zip(&self.merges)
            .enumerate()
            .map(|(t, (pairs, merge))| {
                let outputs: Vec<Tensor> = pairs
                    .iter()
                    .map(|pair| pair.forward(&tokens[t], &tokens[pair.source], &valid[pair.source], self.heads))
                    .collect();
                let merged = merge.forward(&Tensor::cat(&outputs, -1));
                // Padding and an absent target weigh 0: an absent target pools to zeros.
                let weights = valid[t].to_kind(Kind::Float).unsqueeze(-1);
                let total = (merged * &weights).sum_dim_intlist(1, false, Kind::Float);
                total / weights.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
            })
            .collect();
        Tensor::cat(&pooled, 1)
    }
}

impl Pair {
    /// The target's tokens `[B, Tt, H]` after attending to the source's tokens `[B, Ts, H]`,
    /// of which only those where `source_valid` `[B, Ts]` holds may be attended to.
    fn forward(&self, target: &Tensor, source: &Tensor, source_valid: &Tensor, heads: i64) -> Tensor {
        // An absent source's attention output is multiplied by 0: it adds nothing.
        let has_key = source_valid.any_dim(1, true);
        let keep = has_key.to_kind(Kind::Float).unsqueeze(-1);
        // The null token (first) is always valid, so no row's softmax is empty.
        let key_valid = Tensor::cat(&[has_key.ones_like(), source_valid.shallow_clone()], 1);
        let slot = source.narrow(1, 0, 1).zeros_like(); // [B, 1, H], shaped by tensors
        let mut h = target.shallow_clone();
        for block in &self.blocks {
            let kv = block.kv.forward(&source.apply(&block.norm_kv)).chunk(2, -1);
            let keys = Tensor::cat(&[&slot + &block.null_key, kv[0].shallow_clone()], 1);
            let values = Tensor::cat(&[&slot + &block.null_value, kv[1].shallow_clone()], 1);
            let query = block.q.forward(&h.apply(&block.norm_q));
            let (attended, _) = masked_attention(&query, &keys, &values, &key_valid, heads);
            // Out of place (not `+=`): autograd keeps `h` for the layer norms' backward.
            h = h.g_add(&(block.out.forward(&attended) * &keep));
            h = &h + h.apply(&block.norm_ff).apply(&block.ff1).relu().apply(&block.ff2);
        }
        h.apply(&self.final_norm)
    }
}
