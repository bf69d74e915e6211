//! A BERT-family encoder on libtorch: HuggingFace `config.json` + `model.safetensors`,
//! checkpoint keys equal to the struct tree (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, …).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn, nn::Module};

use fusion_nn::ParameterSet;

use crate::{Error, Result};

/// The fields of a HuggingFace BERT `config.json` the encoder uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Token vocabulary size.
    pub vocab_size: i64,
    /// Width of every token state.
    pub hidden_size: i64,
    /// Transformer layers.
    pub num_hidden_layers: i64,
    /// Attention heads per layer (divides `hidden_size`).
    pub num_attention_heads: i64,
    /// Width of the feed-forward layer.
    pub intermediate_size: i64,
    /// Feed-forward activation.
    #[serde(default)]
    pub hidden_act: HiddenAct,
    /// Longest input in tokens.
    pub max_position_embeddings: i64,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    /// Epsilon of every layer norm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Dropout on embeddings and layer outputs while training.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities while training.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Only `absolute` is supported.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

/// The feed-forward activation of a BERT layer, as HuggingFace configurations name it; any
/// other name is refused when the configuration is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    /// Exact GELU.
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU's tanh approximation.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
}
fn default_type_vocab() -> i64 {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}
fn default_position_type() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let fail = |reason: String| Error::Config {
            path: path.into(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        config.validate().map_err(|e| fail(e.to_string()))?;
        Ok(config)
    }

    /// A small encoder for training from scratch: 2 layers of width 128, 4 heads.
    pub fn small(vocab_size: i64) -> Self {
        Self {
            vocab_size,
            hidden_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 256,
            hidden_act: HiddenAct::Gelu,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            position_embedding_type: default_position_type(),
        }
    }

    /// Says what cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((field, value)) = positive.iter().find(|(_, v)| *v < 1) {
            return Err(Error::InvalidSetting(format!("{field} = {value} must be positive")));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::InvalidSetting(format!(
                "num_attention_heads = {} does not divide hidden_size = {}",
                self.num_attention_heads, self.hidden_size
            )));
        }
        if self.position_embedding_type != "absolute" {
            return Err(Error::InvalidSetting(format!(
                "position_embedding_type `{}` is not supported (absolute)",
                self.position_embedding_type
            )));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attention_out: nn::Linear,
    attention_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
    output_norm: nn::LayerNorm,
}

/// A BERT encoder: token ids `[B, T]` → token states `[B, T, hidden]`.
#[derive(Debug)]
pub struct Bert {
    config: BertConfig,
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    embedding_norm: nn::LayerNorm,
    layers: Vec<Layer>,
    parameters: ParameterSet,
}

impl Bert {
    /// A randomly initialised encoder with parameters under `p` (keys as in HuggingFace
    /// checkpoints).
    pub fn new(p: &nn::Path, config: &BertConfig) -> Result<Self> {
        config.validate()?;
        let mut params = ParameterSet::new(p);
        let (hidden, eps) = (config.hidden_size, config.layer_norm_eps);
        let embeddings = p / "embeddings";
        let word = params.embedding(&embeddings / "word_embeddings", config.vocab_size, hidden);
        let position = params.embedding(
            &embeddings / "position_embeddings",
            config.max_position_embeddings,
            hidden,
        );
        let token_type = params.embedding(&embeddings / "token_type_embeddings", config.type_vocab_size, hidden);
        let embedding_norm = params.layer_norm(&embeddings / "LayerNorm", hidden, eps);
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let layer = p / "encoder" / "layer" / l;
                let attention = &layer / "attention";
                Layer {
                    query: params.linear(&attention / "self" / "query", hidden, hidden),
                    key: params.linear(&attention / "self" / "key", hidden, hidden),
                    value: params.linear(&attention / "self" / "value", hidden, hidden),
                    attention_out: params.linear(&attention / "output" / "dense", hidden, hidden),
                    attention_norm: params.layer_norm(&attention / "output" / "LayerNorm", hidden, eps),
                    intermediate: params.linear(&layer / "intermediate" / "dense", hidden, config.intermediate_size),
                    output: params.linear(&layer / "output" / "dense", config.intermediate_size, hidden),
                    output_norm: params.layer_norm(&layer / "output" / "LayerNorm", hidden, eps),
                }
            })
            .collect();
        Ok(Self {
            config: config.clone(),
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            parameters: params,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Every parameter with its checkpoint key.
    pub fn named_parameters(&self) -> &[(String, Tensor)] {
        self.parameters.entries()
    }

    /// Copies weights from a safetensors file whose keys are this encoder's (a `bert.`
    /// prefix, as in task checkpoints, is accepted). Every parameter must be there with its
    /// shape; extra entries (a pooler, position ids) are ignored.
    pub fn load_safetensors(&self, path: &Path) -> Result<()> {
        self.parameters
            .load_safetensors(path, &["bert."])
            .map_err(|reason| Error::Weights {
                path: path.into(),
                reason: reason.to_string(),
            })
    }

    /// Switches gradients of every parameter on or off (a frozen encoder is a fixed
    /// feature extractor; optimisers skip it).
    pub fn set_trainable(&self, trainable: bool) {
        self.parameters.set_trainable(trainable);
    }

    /// Whether the parameters receive gradients.
    pub fn is_trainable(&self) -> bool {
        self.parameters.is_trainable()
    }

    /// Token states `[B, T, hidden]` of `ids` `[B, T]` (int64) with `attention_mask`
    /// `[B, T]` (1 for real tokens) and optional `type_ids`.
    pub fn forward_t(&self, ids: &Tensor, attention_mask: &Tensor, type_ids: Option<&Tensor>, train: bool) -> Tensor {
        // Positions from tensor operations, not a Rust length, so a traced (exported)
        // encoder takes any sequence length.
        let positions = ids.ones_like().cumsum(1, Kind::Int64) - 1;
        let types = type_ids.map_or_else(|| ids.zeros_like(), Tensor::shallow_clone);
        let embeddings = self.word.forward(ids) + self.position.forward(&positions) + self.token_type.forward(&types);
        let mut h = embeddings
            .apply(&self.embedding_norm)
            .dropout(self.config.hidden_dropout_prob, train);
        // Additive mask as in HuggingFace: the most negative float where there is padding.
        let blocked = attention_mask.to_kind(Kind::Float).ones_like() - attention_mask.to_kind(Kind::Float);
        let additive = (blocked * f64::from(f32::MIN)).unsqueeze(1).unsqueeze(1);
        for layer in &self.layers {
            h = self.layer_forward(layer, &h, &additive, train);
        }
        h
    }

    fn layer_forward(&self, layer: &Layer, h: &Tensor, additive_mask: &Tensor, train: bool) -> Tensor {
        let hidden = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let head_dim = hidden / heads;
        let split = |x: Tensor| x.unflatten(-1, [heads, head_dim]).transpose(1, 2);
        let (q, k, v) = (
            split(layer.query.forward(h)),
            split(layer.key.forward(h)),
            split(layer.value.forward(h)),
        );
        // libtorch's fused attention (HuggingFace's default "sdpa" path): the same
        // softmax(q kᵀ / √d + mask) v, faster and lighter on memory.
        let attention_dropout = if train {
            self.config.attention_probs_dropout_prob
        } else {
            0.0
        };
        let context = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(additive_mask),
            attention_dropout,
            false,
            None,
            false,
        )
        .transpose(1, 2)
        .flatten(2, 3);
        let dropout = self.config.hidden_dropout_prob;
        let attended = (layer.attention_out.forward(&context).dropout(dropout, train) + h).apply(&layer.attention_norm);
        let inner = self.activation(&layer.intermediate.forward(&attended));
        (layer.output.forward(&inner).dropout(dropout, train) + attended).apply(&layer.output_norm)
    }

    fn activation(&self, x: &Tensor) -> Tensor {
        match self.config.hidden_act {
            HiddenAct::Relu => x.relu(),
            HiddenAct::GeluTanh => x.gelu("tanh"),
            HiddenAct::Gelu => x.gelu("none"),
        }
    }
}

/// Longest input a configuration allows, in tokens.
pub(crate) fn default_max_tokens(config: &BertConfig) -> usize {
    config.max_position_embeddings.max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_are_read_by_their_huggingface_names_and_others_refused() {
        let with = |act: &str| {
            let mut config = serde_json::to_value(BertConfig::small(100)).unwrap_or_default();
            config["hidden_act"] = serde_json::json!(act);
            serde_json::from_value::<BertConfig>(config).map(|c| c.hidden_act)
        };
        assert_eq!(with("gelu").ok(), Some(HiddenAct::Gelu));
        assert_eq!(with("gelu_new").ok(), Some(HiddenAct::GeluTanh));
        assert_eq!(with("gelu_pytorch_tanh").ok(), Some(HiddenAct::GeluTanh));
        assert_eq!(with("relu").ok(), Some(HiddenAct::Relu));
        let refused = with("swish").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("unknown variant `swish`"), "{refused}");
    }
}
