//! Sentence embeddings: a [`Bert`] encoder with pooling, as a fusion-nn [`Encoder`] and
//! as a standalone embedder of texts (sentence-transformers folders included).

use std::path::Path;

use fusion_nn::{Encoder, ModalityInput};
use serde::Deserialize;
use tch::{Device, Kind, Tensor, nn};

use crate::{Bert, BertConfig, Error, Result, TextTokenizer, TokenBatch, bert::default_max_tokens};

/// How token states become one vector per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over real tokens.
    Mean,
    /// The first (`[CLS]`) token's state.
    Cls,
    /// Element-wise maximum over real tokens.
    Max,
}

/// A text encoder: [`Bert`], pooling, and optional L2 normalisation. Implements
/// fusion-nn's [`Encoder`] over token ids `[B, T]` (int64) whose padding mask is the
/// attention mask.
#[derive(Debug)]
pub struct TextEncoder {
    bert: Bert,
    pooling: Pooling,
    normalize: bool,
}

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertFile {
    max_seq_length: Option<usize>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let fail = |reason: String| Error::Config {
        path: path.into(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| fail(e.to_string()))
}

impl TextEncoder {
    /// A randomly initialised encoder (for training from scratch) under `p`.
    pub fn new(p: &nn::Path, config: &BertConfig, pooling: Pooling, normalize: bool) -> Result<Self> {
        Ok(Self {
            bert: Bert::new(p, config)?,
            pooling,
            normalize,
        })
    }

    /// A pretrained model folder: `config.json` and `model.safetensors`, plus, for a
    /// sentence-transformers folder, its pooling (`1_Pooling/config.json`), normalisation
    /// (`modules.json`) and length limit (`sentence_bert_config.json`); without them,
    /// mean pooling, no normalisation and the model's own limit. Returns the encoder (under
    /// `p`, trainable: call [`TextEncoder::set_trainable`] to freeze it) and its tokenizer.
    pub fn pretrained(p: &nn::Path, dir: &Path) -> Result<(Self, TextTokenizer)> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let pooling_path = dir.join("1_Pooling/config.json");
        let pooling = if pooling_path.exists() {
            let file: PoolingFile = read_json(&pooling_path)?;
            let modes = [
                file.pooling_mode_mean_tokens,
                file.pooling_mode_cls_token,
                file.pooling_mode_max_tokens,
            ];
            match (modes, file.pooling_mode_mean_sqrt_len_tokens) {
                ([true, false, false], false) => Pooling::Mean,
                ([false, true, false], false) => Pooling::Cls,
                ([false, false, true], false) => Pooling::Max,
                _ => {
                    return Err(Error::Config {
                        path: pooling_path,
                        reason: "exactly one of mean, cls or max pooling is supported".into(),
                    });
                }
            }
        } else {
            Pooling::Mean
        };
        let modules_path = dir.join("modules.json");
        let normalize = modules_path.exists()
            && read_json::<Vec<ModuleEntry>>(&modules_path)?
                .iter()
                .any(|m| m.kind.ends_with(".Normalize"));
        let limits_path = dir.join("sentence_bert_config.json");
        let max_tokens = if limits_path.exists() {
            read_json::<SentenceBertFile>(&limits_path)?.max_seq_length
        } else {
            None
        }
        .unwrap_or_else(|| default_max_tokens(&config));
        if max_tokens > config.max_position_embeddings as usize {
            return Err(Error::Config {
                path: limits_path,
                reason: format!(
                    "max_seq_length {max_tokens} exceeds {} positions",
                    config.max_position_embeddings
                ),
            });
        }
        let tokenizer = TextTokenizer::from_file(dir.join("tokenizer.json"), max_tokens)?;
        let encoder = Self::new(p, &config, pooling, normalize)?;
        encoder.bert.load_safetensors(&dir.join("model.safetensors"))?;
        Ok((encoder, tokenizer))
    }

    /// The same encoder with another pooling and normalisation.
    pub fn with_pooling(self, pooling: Pooling, normalize: bool) -> Self {
        Self {
            pooling,
            normalize,
            ..self
        }
    }

    /// The underlying transformer.
    pub fn bert(&self) -> &Bert {
        &self.bert
    }

    /// The pooling.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether embeddings are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Frozen (`false`: a fixed feature extractor) or fine-tuned (`true`).
    pub fn set_trainable(&self, trainable: bool) {
        self.bert.set_trainable(trainable);
    }

    /// Pooled (and maybe normalised) embeddings `[B, hidden]` of token ids `[B, T]`.
    pub fn forward_t(&self, ids: &Tensor, attention_mask: &Tensor, type_ids: Option<&Tensor>, train: bool) -> Tensor {
        let run = || {
            let states = self.bert.forward_t(ids, attention_mask, type_ids, train);
            self.pool(&states, attention_mask)
        };
        // A frozen encoder builds no graph.
        if self.bert.is_trainable() {
            run()
        } else {
            tch::no_grad(run)
        }
    }

    /// Embeddings of a tokenized batch, in evaluation mode, on `device`.
    pub fn embed(&self, batch: &TokenBatch, device: Device) -> Tensor {
        let (ids, mask, types) = batch.to_tensors(device);
        tch::no_grad(|| self.forward_t(&ids, &mask, Some(&types), false))
    }

    fn pool(&self, states: &Tensor, attention_mask: &Tensor) -> Tensor {
        let mask = attention_mask.to_kind(Kind::Float).unsqueeze(-1);
        let pooled = match self.pooling {
            Pooling::Cls => states.select(1, 0),
            // As sentence-transformers: sum over real tokens / max(count, 1e-9).
            Pooling::Mean => {
                (states * &mask).sum_dim_intlist(1, false, Kind::Float)
                    / mask.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9)
            }
            Pooling::Max => {
                let padding = (mask.ones_like() - &mask) * -1e9;
                (states + padding).amax(1, false)
            }
        };
        if self.normalize {
            let norm = pooled.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-12);
            pooled / norm
        } else {
            pooled
        }
    }
}

impl Encoder for TextEncoder {
    fn output_dim(&self) -> i64 {
        self.bert.config().hidden_size
    }

    fn check_input(&self, features: &Tensor) -> std::result::Result<(), fusion_nn::InputMismatch> {
        let size = features.size();
        let limit = self.bert.config().max_position_embeddings;
        if size.len() != 2 || features.kind() != Kind::Int64 {
            return Err(fusion_nn::InputMismatch::new("token ids [B, T] of int64", features));
        }
        if size[1] > limit {
            return Err(fusion_nn::InputMismatch::new(
                format!("at most the encoder's {limit} positions of tokens"),
                features,
            ));
        }
        Ok(())
    }

    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        let mask = input
            .padding_mask
            .as_ref()
            .map_or_else(|| input.features.ones_like(), Tensor::shallow_clone);
        self.forward_t(&input.features, &mask, None, train)
    }
}

/// A pretrained sentence encoder with its own variables and tokenizer, for embedding
/// texts outside a fusion model.
#[derive(Debug)]
pub struct SentenceEncoder {
    /// Holds the encoder's variables.
    pub vs: nn::VarStore,
    /// The encoder.
    pub encoder: TextEncoder,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
}

impl SentenceEncoder {
    /// Loads a model folder (see [`TextEncoder::pretrained`]) on `device`, frozen.
    pub fn from_dir(dir: &Path, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let (encoder, tokenizer) = TextEncoder::pretrained(&vs.root(), dir)?;
        encoder.set_trainable(false);
        Ok(Self { vs, encoder, tokenizer })
    }

    /// Embeddings `[N, hidden]` (on the CPU) of `texts`, `batch_size` at a time. Texts are
    /// batched by length, as sentence-transformers does, so little padding is computed;
    /// rows come back in input order.
    pub fn encode<S: AsRef<str> + Sync>(&self, texts: &[S], batch_size: usize) -> Result<Tensor> {
        if batch_size == 0 {
            return Err(Error::InvalidSetting("batch_size must be at least 1".into()));
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].as_ref().chars().count()));
        let mut rows = Vec::with_capacity(texts.len().div_ceil(batch_size));
        for chunk in order.chunks(batch_size) {
            let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_ref()).collect();
            let tokens = self.tokenizer.encode_batch(&batch)?;
            rows.push(self.encoder.embed(&tokens, self.vs.device()).to_device(Device::Cpu));
        }
        let hidden = self.encoder.output_dim();
        let sorted = if rows.is_empty() {
            Tensor::zeros([0, hidden], (Kind::Float, Device::Cpu))
        } else {
            Tensor::cat(&rows, 0)
        };
        // Row k of `sorted` is text order[k]; put it back at order[k].
        let mut inverse = vec![0i64; texts.len()];
        for (k, &i) in order.iter().enumerate() {
            inverse[i] = k as i64;
        }
        Ok(sorted.index_select(0, &Tensor::from_slice(&inverse)))
    }
}
