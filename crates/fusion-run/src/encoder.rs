//! Every encoder of every modality crate, chosen by name in a run configuration, checked
//! against its modality's features and built into a fusion-core [`Encoder`].

use std::path::{Path, PathBuf};

use fusion_core::{Encoder, IdentityEncoder, MlpEncoder, ModalityInput};
use fusion_data::FeatureConfig;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use crate::{Error, Result};

/// An encoder of one modality, by `kind`. Output sizes default to the run's `hidden_dim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EncoderSpec {
    /// The features as they are (flattened).
    Identity,
    /// Linear layers with ReLU over the flattened features, or over each row of
    /// `[T, D]` features (`sequence: true`, e.g. log-mel frames) as a sequence for fusion.
    Mlp {
        /// Output size of each layer.
        hidden: Vec<i64>,
        /// Keep the first axis as a sequence of tokens.
        #[serde(default)]
        sequence: bool,
    },
    /// LeNet-5 (two 5×5 convolutions, 120 and 84 units) over images `[C, H, W]`, or over a
    /// log-mel picture `[T, n_mels]` as one channel (MultiBench's spectrogram LeNet).
    Lenet {
        /// Embedding size.
        #[serde(default)]
        output_dim: Option<i64>,
    },
    /// MultiBench's AV-MNIST LeNet over images `[C, H, W]` or a log-mel picture: a 5×5
    /// convolution to `channels`, then `extra_layers` 3×3 convolutions doubling them, each
    /// with batch norm, ReLU and 2×2 max pooling; `channels · 2^extra_layers` features
    /// (MultiBench: 6 and 3 for 28×28 digits, 6 and 5 for 112×112 spectrograms).
    MultibenchLenet {
        /// Channels of the first convolution.
        #[serde(default = "default_lenet_channels")]
        channels: i64,
        /// Convolutions after the first.
        extra_layers: usize,
    },
    /// A ResNet-18-style CNN from scratch over images or a log-mel picture.
    Resnet18 {
        /// Channels of the first stage (64 in the original; doubles per stage).
        #[serde(default = "default_width")]
        width: i64,
        /// Embedding size.
        #[serde(default)]
        output_dim: Option<i64>,
    },
    /// EfficientNet-Lite0 pretrained on ImageNet (1280 features) over ImageNet-normalised
    /// RGB images.
    EfficientnetLite0 {
        /// The safetensors weights; default: `efficientnet-lite0` from `cargo xtask models`.
        #[serde(default)]
        weights: Option<PathBuf>,
        /// A fixed feature extractor (`true`) or fine-tuned.
        #[serde(default = "yes")]
        frozen: bool,
        /// Learning rate when fine-tuned (default: the optimiser's).
        #[serde(default)]
        lr: Option<f64>,
        /// While fine-tuned, normalise with each batch's statistics and move the running
        /// ones (`true`), or keep the pretrained statistics (`false`, the default). Left out
        /// of the written config when false, so frozen outputs cached before it keep their
        /// key.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        batch_statistics: bool,
    },
    /// A 2-D CNN over log-mel `[T, n_mels]`.
    AudioCnn {
        /// Channels of the first block (doubling per block).
        #[serde(default = "default_base_channels")]
        base_channels: i64,
        /// Convolution blocks (each halves time and frequency).
        #[serde(default = "default_blocks")]
        blocks: usize,
        /// Embedding size.
        #[serde(default)]
        output_dim: Option<i64>,
    },
    /// A GRU over log-mel frames; `sequence: true` hands fusion every frame's state.
    AudioGru {
        /// GRU width.
        #[serde(default = "default_gru_hidden")]
        hidden: i64,
        /// GRU layers.
        #[serde(default = "default_layers")]
        layers: i64,
        /// Embedding size.
        #[serde(default)]
        output_dim: Option<i64>,
        /// Keep the frames as a sequence.
        #[serde(default)]
        sequence: bool,
    },
    /// A pretrained BERT-family model folder (all-MiniLM-L6-v2 or any sentence-transformers
    /// folder: `config.json`, `model.safetensors`, `tokenizer.json`) over token ids.
    Bert {
        /// The folder, or the name of a model fetched by `cargo xtask models`.
        model: PathBuf,
        /// How token states become one vector; default: the folder's own pooling.
        #[serde(default)]
        pooling: Option<TextPooling>,
        /// A fixed feature extractor (`true`) or fine-tuned.
        #[serde(default = "yes")]
        frozen: bool,
        /// Learning rate when fine-tuned (default: the optimiser's).
        #[serde(default)]
        lr: Option<f64>,
    },
    /// A small transformer trained from scratch over token ids (the tokenizer's
    /// vocabulary; BERT layout).
    Transformer {
        /// Width.
        #[serde(default = "default_transformer_width")]
        width: i64,
        /// Layers.
        #[serde(default = "default_layers_2")]
        layers: i64,
        /// Attention heads (divide `width`).
        #[serde(default = "default_heads")]
        heads: i64,
        /// How token states become one vector.
        #[serde(default)]
        pooling: Option<TextPooling>,
    },
    /// Table rows (features `table`): category embeddings beside the numbers and their
    /// missing indicators, then linear layers with ReLU.
    TabularMlp {
        /// Output size of each layer.
        #[serde(default = "default_tabular_hidden")]
        hidden: Vec<i64>,
        /// Size of each categorical column's embedding.
        #[serde(default = "default_embedding_dim")]
        embedding_dim: i64,
    },
    /// Table rows (features `table`) as one token per column (FT-Transformer's feature
    /// tokenizer), for attention-based fusion to attend over columns; flat fusion methods
    /// read the mean token.
    FeatureTokenizer {
        /// Token width (default: the run's `hidden_dim`).
        #[serde(default)]
        width: Option<i64>,
    },
    /// An image encoder applied to every frame `[T, C, H, W]`, then temporal pooling.
    Video {
        /// The per-frame encoder (`lenet`, `multibench_lenet`, `resnet18` or
        /// `efficientnet_lite0`).
        frame: Box<EncoderSpec>,
        /// How frame features become one clip feature.
        #[serde(default)]
        pooling: VideoPooling,
    },
}

/// Pooling of token states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextPooling {
    /// Mean over real tokens.
    Mean,
    /// The first token's state.
    Cls,
    /// Element-wise maximum over real tokens.
    Max,
    /// Every token's state, for sequence fusion.
    Sequence,
}

/// Pooling of frame features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoPooling {
    /// Mean over frames.
    #[default]
    Mean,
    /// Element-wise maximum.
    Max,
    /// Learned attention weights over frames.
    Attention,
    /// A temporal convolution, then the mean.
    Conv,
    /// Every frame's features, for sequence fusion.
    Sequence,
}

fn yes() -> bool {
    true
}
fn default_width() -> i64 {
    16
}
fn default_lenet_channels() -> i64 {
    6
}

/// Most channels a CNN stage may have (a typo in a width would otherwise allocate
/// gigabytes of weights).
const MAX_CNN_CHANNELS: i64 = 1 << 14;

/// Widest layer a configuration may ask for (`hidden`, `width`, `output_dim`…): a
/// 16384 × 16384 layer is 1 GiB of weights. Wider ones made libtorch's allocation fail
/// inside tch, which panics.
pub const MAX_WIDTH: i64 = 1 << 14;

/// Most weights in one fully connected layer (1 GiB of `f32`): the first layer of an MLP
/// over wide inputs is bounded by it, not by its width alone.
const MAX_LAYER_WEIGHTS: i64 = 1 << 28;

/// Most layers of a recurrent or transformer encoder.
const MAX_LAYERS: i64 = 64;
fn default_base_channels() -> i64 {
    16
}
fn default_blocks() -> usize {
    3
}
fn default_gru_hidden() -> i64 {
    64
}
fn default_layers() -> i64 {
    1
}
fn default_layers_2() -> i64 {
    2
}
fn default_transformer_width() -> i64 {
    64
}
fn default_heads() -> i64 {
    4
}
fn default_tabular_hidden() -> Vec<i64> {
    vec![64, 64]
}
fn default_embedding_dim() -> i64 {
    8
}

impl Default for EncoderSpec {
    fn default() -> Self {
        Self::Mlp {
            hidden: vec![64],
            sequence: false,
        }
    }
}

/// Where `cargo xtask models` stores weights: `$FUSION_CACHE_DIR/models`, else
/// `$XDG_CACHE_HOME/fusion/models`, else `~/.cache/fusion/models`.
pub fn models_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("FUSION_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("fusion")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("fusion")))
        .map(|c| c.join("models"))
}

/// A model folder: the path itself when it exists, else a fetched model of that name.
fn model_folder(model: &Path) -> PathBuf {
    if model.exists() {
        return model.to_path_buf();
    }
    models_dir().map_or_else(|| model.to_path_buf(), |d| d.join(model))
}

fn efficientnet_weights(weights: Option<&Path>) -> PathBuf {
    weights.map_or_else(
        || model_folder(Path::new("efficientnet-lite0")).join("model.safetensors"),
        Path::to_path_buf,
    )
}

/// How the dataset lays out a modality's features for its encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[N, dim]`.
    Flat,
    /// `[N, ...shape]` as the features are.
    Shaped,
}

impl EncoderSpec {
    /// The name as written in a configuration.
    pub fn kind_name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
            .unwrap_or_default()
    }

    /// The layout this encoder reads.
    pub fn layout(&self) -> Layout {
        match self {
            Self::Identity | Self::Mlp { sequence: false, .. } => Layout::Flat,
            _ => Layout::Shaped,
        }
    }

    /// Whether the encoder's weights come from a pretrained file (its inputs are not
    /// standardised: they must look like what it was trained on).
    pub fn pretrained(&self) -> bool {
        match self {
            Self::EfficientnetLite0 { .. } | Self::Bert { .. } => true,
            Self::Video { frame, .. } => frame.pretrained(),
            _ => false,
        }
    }

    /// The learning rate of its own, for a fine-tuned pretrained encoder.
    pub fn learning_rate(&self) -> Option<f64> {
        match self {
            Self::EfficientnetLite0 { lr, frozen: false, .. } | Self::Bert { lr, frozen: false, .. } => *lr,
            Self::Video { frame, .. } => frame.learning_rate(),
            _ => None,
        }
    }

    /// Makes relative paths absolute against `base` (the configuration's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        match self {
            Self::EfficientnetLite0 {
                weights: Some(path), ..
            } => *path = base.join(&*path),
            Self::Bert { model, .. } if base.join(&*model).exists() => *model = base.join(&*model),
            Self::Video { frame, .. } => frame.resolve_paths(base),
            _ => {}
        }
    }

    /// Checks that this encoder can read `features` (and its own settings), naming
    /// `field` (e.g. `modalities[1].encoder`).
    pub fn check(&self, features: &FeatureConfig, field: &str) -> Result<()> {
        let shape = features.shape();
        let described = || format!("features `{}` give {shape:?}", features.kind_name());
        let refuse = |wants: &str| {
            Err(Error::Config(format!(
                "{field}: `{}` reads {wants}; {}",
                self.kind_name(),
                described()
            )))
        };
        // Every size a configuration gives is bounded here, before anything is allocated.
        let within = |name: &str, value: i64, most: i64| {
            if (1..=most).contains(&value) {
                Ok(())
            } else {
                Err(Error::Config(format!("{field}.{name}: {value} is outside 1..={most}")))
            }
        };
        let positive = |name: &str, value: i64| {
            let most = if name == "layers" { MAX_LAYERS } else { MAX_WIDTH };
            within(name, value, most)
        };
        // Hidden sizes of a stack of fully connected layers over `inputs` values.
        let layers = |name: &str, hidden: &[i64], inputs: i64| {
            if hidden.is_empty() {
                return Err(Error::Config(format!(
                    "{field}.{name}: {hidden:?} needs positive sizes"
                )));
            }
            let mut previous = inputs.max(1);
            for &h in hidden {
                within(name, h, MAX_WIDTH)?;
                if previous.saturating_mul(h) > MAX_LAYER_WEIGHTS {
                    return Err(Error::Config(format!(
                        "{field}.{name}: a layer of {previous} × {h} weights is over {MAX_LAYER_WEIGHTS}; {}",
                        described()
                    )));
                }
                previous = h;
            }
            Ok(())
        };
        let is_image = matches!(features, FeatureConfig::Image { .. });
        let is_log_mel = matches!(features, FeatureConfig::LogMel(_) | FeatureConfig::SoundTrack(_));
        let is_tokens = matches!(features, FeatureConfig::Tokens { .. });
        if !is_tokens && features.integer() {
            return refuse("float features");
        }
        let is_table = matches!(features, FeatureConfig::Table { .. });
        let reads_table = matches!(self, Self::TabularMlp { .. } | Self::FeatureTokenizer { .. });
        if is_table && !reads_table {
            return refuse("no table rows (table rows need `tabular_mlp` or `feature_tokenizer`)");
        }
        match self {
            Self::Identity => {
                if is_tokens {
                    return refuse("float features (token ids need `bert` or `transformer`)");
                }
            }
            Self::Mlp { hidden, sequence } => {
                if is_tokens {
                    return refuse("float features (token ids need `bert` or `transformer`)");
                }
                let inputs = if *sequence {
                    shape.last().copied().unwrap_or(1)
                } else {
                    features.dim()
                };
                layers("hidden", hidden, i64::try_from(inputs).unwrap_or(i64::MAX))?;
                if *sequence && shape.len() != 2 {
                    return refuse("a sequence [T, D] with `sequence: true`");
                }
            }
            Self::MultibenchLenet { channels, extra_layers } => {
                if !(is_image || is_log_mel) {
                    return refuse("images [C, H, W] (features `image`) or a log-mel picture [T, n_mels]");
                }
                positive("channels", *channels)?;
                if *extra_layers > 8 || *channels > MAX_CNN_CHANNELS >> extra_layers {
                    return Err(Error::Config(format!(
                        "{field}.extra_layers: {channels} channels doubled {extra_layers} times exceed {MAX_CNN_CHANNELS}"
                    )));
                }
                let min_side = fusion_image::MultibenchLeNet::min_side(*extra_layers);
                if shape.iter().rev().take(2).any(|&s| (s as i64) < min_side) {
                    return refuse(&format!(
                        "pictures at least {min_side} × {min_side} with {extra_layers} extra layers"
                    ));
                }
            }
            Self::Lenet { output_dim } | Self::Resnet18 { output_dim, .. } => {
                if !(is_image || is_log_mel) {
                    return refuse("images [C, H, W] (features `image`) or a log-mel picture [T, n_mels]");
                }
                let min_side = if matches!(self, Self::Lenet { .. }) { 12 } else { 8 };
                if shape.iter().rev().take(2).any(|&s| s < min_side) {
                    return refuse(&format!("pictures at least {min_side} × {min_side}"));
                }
                if let Self::Resnet18 { width, .. } = self {
                    positive("width", *width)?;
                }
                positive("output_dim", output_dim.unwrap_or(1))?;
            }
            Self::EfficientnetLite0 {
                weights,
                lr,
                frozen,
                batch_statistics,
            } => {
                if *frozen && *batch_statistics {
                    return Err(Error::Config(format!(
                        "{field}.batch_statistics: a frozen encoder's batch norm never trains; set `\"frozen\": false` to fine-tune with batch statistics"
                    )));
                }
                match features {
                    FeatureConfig::Image {
                        grey: false,
                        size,
                        normalize: fusion_data::ImageNormalization::Imagenet,
                    } if *size >= 32 => {}
                    _ => {
                        return refuse(
                            "ImageNet-normalised RGB images [3, H, W] of at least 32 × 32 (features `image`, \
                             `\"normalize\": \"imagenet\"`)",
                        );
                    }
                }
                let path = efficientnet_weights(weights.as_deref());
                if !path.is_file() {
                    return Err(Error::Config(format!(
                        "{field}.weights: {} is not a file (run `cargo xtask models efficientnet-lite0`)",
                        path.display()
                    )));
                }
                check_lr(lr, field)?;
            }
            Self::AudioCnn {
                base_channels,
                blocks,
                output_dim,
            } => {
                if !is_log_mel {
                    return refuse("log-mel [T, n_mels] (features `log_mel` or `sound_track`)");
                }
                positive("base_channels", *base_channels)?;
                positive("output_dim", output_dim.unwrap_or(1))?;
                let shrink = 1usize.checked_shl(*blocks as u32).unwrap_or(usize::MAX);
                if *blocks == 0 || *blocks > 8 || shape.iter().any(|&s| s < shrink) {
                    return Err(Error::Config(format!(
                        "{field}.blocks: {blocks} pooling blocks need 1..=8 blocks and at least {shrink} frames and bands; {}",
                        described()
                    )));
                }
            }
            Self::AudioGru {
                hidden,
                layers,
                output_dim,
                sequence,
            } => {
                if !is_log_mel {
                    return refuse("log-mel [T, n_mels] (features `log_mel` or `sound_track`)");
                }
                if *sequence && output_dim.is_some() {
                    return Err(Error::Config(format!(
                        "{field}.output_dim: frame states (`sequence: true`) have the GRU's width `hidden`"
                    )));
                }
                positive("hidden", *hidden)?;
                positive("layers", *layers)?;
                positive("output_dim", output_dim.unwrap_or(1))?;
            }
            Self::Bert { model, lr, .. } => {
                let FeatureConfig::Tokens { tokenizer, max_len } = features else {
                    return refuse("token ids (features `tokens`)");
                };
                let folder = model_folder(model);
                if let Some(absent) = ["model.safetensors", "tokenizer.json"]
                    .iter()
                    .map(|f| folder.join(f))
                    .find(|f| !f.is_file())
                {
                    return Err(Error::Config(format!(
                        "{field}.model: {} is missing (a BERT folder, or a model fetched by `cargo xtask models`)",
                        absent.display()
                    )));
                }
                let config = fusion_text::BertConfig::from_file(&folder.join("config.json"))
                    .map_err(|e| Error::Config(format!("{field}.model: {e}")))?;
                if *max_len as i64 > config.max_position_embeddings {
                    return Err(Error::Config(format!(
                        "{field}: {max_len} tokens exceed the model's {} positions",
                        config.max_position_embeddings
                    )));
                }
                let vocabulary = vocabulary_size(tokenizer)?;
                if vocabulary > config.vocab_size {
                    return Err(Error::Config(format!(
                        "{field}.model: the tokenizer {} has {vocabulary} ids, the model {} embeddings: not its tokenizer",
                        tokenizer.display(),
                        config.vocab_size
                    )));
                }
                check_lr(lr, field)?;
            }
            Self::Transformer {
                width, layers, heads, ..
            } => {
                if !is_tokens {
                    return refuse("token ids (features `tokens`)");
                }
                positive("width", *width)?;
                positive("layers", *layers)?;
                if *heads < 1 || width % heads != 0 {
                    return Err(Error::Config(format!(
                        "{field}.heads: {heads} must divide width {width}"
                    )));
                }
            }
            Self::TabularMlp { hidden, embedding_dim } => {
                if !is_table {
                    return refuse("table rows (features `table`)");
                }
                positive("embedding_dim", *embedding_dim)?;
                // Each value of the row becomes at most one embedding.
                let inputs = i64::try_from(features.dim())
                    .unwrap_or(i64::MAX)
                    .saturating_mul(*embedding_dim);
                layers("hidden", hidden, inputs)?;
            }
            Self::FeatureTokenizer { width } => {
                if !is_table {
                    return refuse("table rows (features `table`)");
                }
                positive("width", width.unwrap_or(1))?;
            }
            Self::Video { frame, .. } => {
                let FeatureConfig::VideoFrames {
                    size, grey, normalize, ..
                } = features
                else {
                    return refuse("frames [T, C, H, W] (features `video_frames`)");
                };
                if !matches!(
                    **frame,
                    Self::Lenet { .. }
                        | Self::MultibenchLenet { .. }
                        | Self::Resnet18 { .. }
                        | Self::EfficientnetLite0 { .. }
                ) {
                    return Err(Error::Config(format!(
                        "{field}.frame: `{}` is not an image encoder (lenet, multibench_lenet, resnet18, efficientnet_lite0)",
                        frame.kind_name()
                    )));
                }
                let per_frame = FeatureConfig::Image {
                    size: *size,
                    grey: *grey,
                    normalize: *normalize,
                };
                frame.check(&per_frame, &format!("{field}.frame"))?;
            }
        }
        Ok(())
    }

    /// Size of the encoder's output (its last dimension).
    pub fn output_dim(&self, features: &FeatureConfig, hidden_dim: i64) -> Result<i64> {
        Ok(match self {
            Self::Identity => features.dim() as i64,
            Self::Mlp { hidden, .. } => hidden.last().copied().unwrap_or(hidden_dim),
            // Frame states are the GRU's own width.
            Self::AudioGru {
                hidden, sequence: true, ..
            } => *hidden,
            Self::Lenet { output_dim }
            | Self::Resnet18 { output_dim, .. }
            | Self::AudioCnn { output_dim, .. }
            | Self::AudioGru { output_dim, .. } => output_dim.unwrap_or(hidden_dim),
            Self::MultibenchLenet { channels, extra_layers } => channels << extra_layers,
            Self::EfficientnetLite0 { .. } => 1280,
            Self::Bert { model, .. } => {
                fusion_text::BertConfig::from_file(&model_folder(model).join("config.json"))
                    .map_err(|e| Error::Config(e.to_string()))?
                    .hidden_size
            }
            Self::Transformer { width, .. } => *width,
            Self::TabularMlp { hidden, .. } => hidden.last().copied().unwrap_or(hidden_dim),
            Self::FeatureTokenizer { width } => width.unwrap_or(hidden_dim),
            Self::Video { frame, .. } => frame.output_dim(features, hidden_dim)?,
        })
    }

    /// Builds the encoder of `features` with its parameters under `p` (pretrained weights
    /// loaded, frozen ones switched off for the optimiser). Call [`Self::check`] first.
    pub fn build(
        &self,
        p: &nn::Path,
        features: &FeatureConfig,
        hidden_dim: i64,
        dropout: f64,
    ) -> Result<Box<dyn Encoder>> {
        if self.caches_outputs() {
            // A frozen pretrained network is a fixed function of the models folder's file:
            // its variables live apart from the model's, so checkpoints do not copy them
            // (they made a run's checkpoints 330 MB).
            let own = nn::VarStore::new(p.device());
            let encoder = self.build_in(&own.root(), features, hidden_dim, dropout)?;
            return Ok(Box::new(Pretrained { encoder, _vs: own }));
        }
        self.build_in(p, features, hidden_dim, dropout)
    }

    fn build_in(
        &self,
        p: &nn::Path,
        features: &FeatureConfig,
        hidden_dim: i64,
        dropout: f64,
    ) -> Result<Box<dyn Encoder>> {
        let shape: Vec<i64> = features.shape().iter().map(|&s| s as i64).collect();
        let output = |dim: &Option<i64>| dim.unwrap_or(hidden_dim);
        // Images [C, H, W] as they are; a log-mel picture [T, M] gains one channel.
        let picture = |encoder: Box<dyn Encoder>| -> Box<dyn Encoder> {
            if shape.len() == 2 {
                Box::new(AddChannel(encoder))
            } else {
                encoder
            }
        };
        let channels = if shape.len() == 3 { shape[0] } else { 1 };
        Ok(match self {
            Self::Identity => Box::new(IdentityEncoder::new(features.dim() as i64)),
            Self::Mlp { hidden, sequence } => {
                let input = if *sequence {
                    shape.last().copied().unwrap_or(1)
                } else {
                    features.dim() as i64
                };
                Box::new(MlpEncoder::new(p, input, hidden, dropout))
            }
            Self::Lenet { output_dim } => picture(Box::new(fusion_image::LeNet::new(p, channels, output(output_dim)))),
            Self::MultibenchLenet {
                channels: width,
                extra_layers,
            } => picture(Box::new(fusion_image::MultibenchLeNet::new(
                p,
                channels,
                *width,
                *extra_layers,
            ))),
            Self::Resnet18 { width, output_dim } => {
                let small = shape.iter().rev().take(2).all(|&s| s < 96);
                picture(Box::new(fusion_image::ResNet18::new(
                    p,
                    channels,
                    *width,
                    small,
                    output(output_dim),
                )))
            }
            Self::EfficientnetLite0 {
                weights,
                frozen,
                batch_statistics,
                ..
            } => {
                let path = efficientnet_weights(weights.as_deref());
                let network = fusion_image::EfficientNetLite0::pretrained(p, &path)
                    .map_err(|e| Error::Config(format!("efficientnet_lite0: {e}")))?
                    .with_batch_statistics(*batch_statistics);
                network.set_trainable(!*frozen);
                frozen_if(Box::new(network), *frozen)
            }
            Self::AudioCnn {
                base_channels,
                blocks,
                output_dim,
            } => Box::new(fusion_audio::AudioCnn::new(
                p,
                shape[1],
                *base_channels,
                *blocks,
                output(output_dim),
            )),
            Self::AudioGru {
                hidden,
                layers,
                output_dim,
                sequence,
            } => {
                if *sequence {
                    Box::new(fusion_audio::AudioGru::frames(p, shape[1], *hidden, *layers))
                } else {
                    Box::new(fusion_audio::AudioGru::new(
                        p,
                        shape[1],
                        *hidden,
                        *layers,
                        output(output_dim),
                    ))
                }
            }
            Self::Bert {
                model, pooling, frozen, ..
            } => {
                let (encoder, _) = fusion_text::TextEncoder::pretrained(p, &model_folder(model))
                    .map_err(|e| Error::Config(format!("bert: {e}")))?;
                encoder.set_trainable(!*frozen);
                frozen_if(text_encoder(encoder, *pooling), *frozen)
            }
            Self::Transformer {
                width,
                layers,
                heads,
                pooling,
            } => {
                let FeatureConfig::Tokens { tokenizer, max_len } = features else {
                    return Err(Error::Config("transformer: needs token features".into()));
                };
                let mut config = fusion_text::BertConfig::small(vocabulary_size(tokenizer)?);
                config.hidden_size = *width;
                config.num_hidden_layers = *layers;
                config.num_attention_heads = *heads;
                config.intermediate_size = 2 * width;
                config.max_position_embeddings = (*max_len as i64).max(8);
                config.hidden_dropout_prob = dropout;
                config.attention_probs_dropout_prob = dropout;
                let encoder = fusion_text::TextEncoder::new(p, &config, fusion_text::Pooling::Mean, false)
                    .map_err(|e| Error::Config(format!("transformer: {e}")))?;
                text_encoder(encoder, Some(pooling.unwrap_or(TextPooling::Mean)))
            }
            Self::TabularMlp { hidden, embedding_dim } => Box::new(
                fusion_tabular::TabularMlp::new(p, table_columns(features)?, *embedding_dim, hidden, dropout)
                    .map_err(|e| Error::Config(format!("tabular_mlp: {e}")))?,
            ),
            Self::FeatureTokenizer { width } => Box::new(
                fusion_tabular::FeatureTokenizer::new(p, table_columns(features)?, width.unwrap_or(hidden_dim))
                    .map_err(|e| Error::Config(format!("feature_tokenizer: {e}")))?,
            ),
            Self::Video { frame, pooling } => {
                let FeatureConfig::VideoFrames {
                    size, grey, normalize, ..
                } = features
                else {
                    return Err(Error::Config("video: needs video_frames features".into()));
                };
                let per_frame = FeatureConfig::Image {
                    size: *size,
                    grey: *grey,
                    normalize: *normalize,
                };
                let frames = frame.build(&(p / "frame"), &per_frame, hidden_dim, dropout)?;
                if *pooling == VideoPooling::Sequence {
                    Box::new(FrameSequence(frames))
                } else {
                    // A frozen frame encoder pooled without parameters is a fixed function
                    // of the clip: its output is cached per file like a frozen image's.
                    frozen_if(video_encoder(p, frames, pooling)?, self.caches_outputs())
                }
            }
        })
    }
}

/// A video encoder pooling frame encodings over time.
#[cfg(feature = "video")]
fn video_encoder(p: &nn::Path, frames: Box<dyn Encoder>, pooling: &VideoPooling) -> Result<Box<dyn Encoder>> {
    let temporal = match pooling {
        VideoPooling::Mean | VideoPooling::Sequence => fusion_video::TemporalPooling::Mean,
        VideoPooling::Max => fusion_video::TemporalPooling::Max,
        VideoPooling::Attention => fusion_video::TemporalPooling::Attention,
        VideoPooling::Conv => fusion_video::TemporalPooling::Conv,
    };
    Ok(Box::new(fusion_video::VideoEncoder::new(p, frames, temporal)))
}

#[cfg(not(feature = "video"))]
fn video_encoder(_: &nn::Path, _: Box<dyn Encoder>, _: &VideoPooling) -> Result<Box<dyn Encoder>> {
    Err(Error::Config(
        "video: this build has no video support (fusion-run's `video` feature, FFmpeg)".into(),
    ))
}

/// The columns of table features.
fn table_columns(features: &FeatureConfig) -> Result<&[fusion_tabular::Column]> {
    match features {
        FeatureConfig::Table { columns } => Ok(columns),
        other => Err(Error::Config(format!(
            "a table encoder needs features `table`, not `{}`",
            other.kind_name()
        ))),
    }
}

fn check_lr(lr: &Option<f64>, field: &str) -> Result<()> {
    match lr {
        Some(lr) if !(*lr > 0.0 && lr.is_finite()) => Err(Error::Config(format!("{field}.lr: {lr} must be positive"))),
        _ => Ok(()),
    }
}

/// Number of ids of a `tokenizer.json`.
fn vocabulary_size(tokenizer: &Path) -> Result<i64> {
    fusion_text::TextTokenizer::from_file(tokenizer, 512)
        .map(|t| t.vocabulary_size() as i64)
        .map_err(|e| Error::Config(format!("tokenizer {}: {e}", tokenizer.display())))
}

fn text_encoder(encoder: fusion_text::TextEncoder, pooling: Option<TextPooling>) -> Box<dyn Encoder> {
    let normalize = encoder.normalizes();
    match pooling {
        None => Box::new(encoder),
        Some(TextPooling::Sequence) => Box::new(TokenStates(encoder)),
        Some(pooling) => Box::new(encoder.with_pooling(
            match pooling {
                TextPooling::Cls => fusion_text::Pooling::Cls,
                TextPooling::Max => fusion_text::Pooling::Max,
                _ => fusion_text::Pooling::Mean,
            },
            normalize,
        )),
    }
}

fn frozen_if(encoder: Box<dyn Encoder>, frozen: bool) -> Box<dyn Encoder> {
    if frozen { Box::new(Frozen(encoder)) } else { encoder }
}

/// A fixed feature extractor: always in evaluation mode (batch-norm statistics and
/// dropout as trained), and no graph is built through it. It also takes its own outputs,
/// computed once per file and cached, and passes them through.
#[derive(Debug)]
struct Frozen(Box<dyn Encoder>);

impl Encoder for Frozen {
    fn output_dim(&self) -> i64 {
        self.0.output_dim()
    }
    fn check_input(&self, features: &Tensor) -> std::result::Result<(), fusion_core::InputMismatch> {
        if self.accepts_encoded(features) {
            return Ok(());
        }
        self.0.check_input(features)
    }
    fn forward(&self, input: &ModalityInput, _train: bool) -> Tensor {
        if self.accepts_encoded(&input.features) {
            return input.features.shallow_clone();
        }
        tch::no_grad(|| self.0.forward(input, false))
    }
}

/// A frozen pretrained encoder with the variables it owns, outside the model's store.
#[derive(Debug)]
struct Pretrained {
    encoder: Box<dyn Encoder>,
    _vs: nn::VarStore,
}

impl Encoder for Pretrained {
    fn output_dim(&self) -> i64 {
        self.encoder.output_dim()
    }
    fn check_input(&self, features: &Tensor) -> std::result::Result<(), fusion_core::InputMismatch> {
        self.encoder.check_input(features)
    }
    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        self.encoder.forward(input, train)
    }
}

/// `[B, T, M]` log-mel pictures as one-channel images `[B, 1, T, M]`.
#[derive(Debug)]
struct AddChannel(Box<dyn Encoder>);

impl Encoder for AddChannel {
    fn output_dim(&self) -> i64 {
        self.0.output_dim()
    }
    fn check_input(&self, features: &Tensor) -> std::result::Result<(), fusion_core::InputMismatch> {
        if features.dim() != 3 {
            return Err(fusion_core::InputMismatch::new("pictures [B, T, M]", features));
        }
        self.0.check_input(&features.unsqueeze(1))
    }
    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        self.0.forward(&input.with_features(input.features.unsqueeze(1)), train)
    }
}

/// A text encoder's token states `[B, T, D]` instead of one pooled vector.
#[derive(Debug)]
struct TokenStates(fusion_text::TextEncoder);

impl Encoder for TokenStates {
    fn output_dim(&self) -> i64 {
        self.0.output_dim()
    }
    fn check_input(&self, features: &Tensor) -> std::result::Result<(), fusion_core::InputMismatch> {
        self.0.check_input(features)
    }
    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        let mask = input
            .padding_mask
            .as_ref()
            .map_or_else(|| input.features.ones_like(), |m| m.to_kind(Kind::Int64));
        self.0.bert().forward_t(&input.features, &mask, None, train)
    }
}

/// Per-frame image features `[B, T, D]` as a sequence.
#[derive(Debug)]
struct FrameSequence(Box<dyn Encoder>);

impl Encoder for FrameSequence {
    fn output_dim(&self) -> i64 {
        self.0.output_dim()
    }
    fn check_input(&self, features: &Tensor) -> std::result::Result<(), fusion_core::InputMismatch> {
        if features.dim() != 5 {
            return Err(fusion_core::InputMismatch::new("frames [B, T, C, H, W]", features));
        }
        self.0.check_input(&features.flatten(0, 1))
    }
    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        let size = input.features.size();
        let frames = ModalityInput::dense(input.features.flatten(0, 1));
        self.0.forward(&frames, train).view([-1, size[1], self.0.output_dim()])
    }
}

/// Input standardisation inside the model: `(x − mean) / std` with the training split's
/// per-value mean and one scale per modality (or per value), stored as (untrained)
/// variables so that they travel with every checkpoint and exported module; absent samples
/// stay zero.
#[derive(Debug)]
pub(crate) struct Standardized {
    inner: Box<dyn Encoder>,
    mean: Tensor,
    std: Tensor,
}

impl Standardized {
    /// Variables `mean` (`shape`) and `std` (`[1]`, or `shape` when `per_value`) under
    /// `p`, set to `fitted` when given (training) and left for the checkpoint to fill
    /// otherwise (loading).
    pub(crate) fn new(
        p: &nn::Path,
        inner: Box<dyn Encoder>,
        shape: &[i64],
        per_value: bool,
        fitted: Option<&(Tensor, Tensor)>,
    ) -> Self {
        let scale_shape = if per_value { shape } else { &[1][..] };
        let mut mean = p.zeros_no_train("mean", shape);
        let mut std = p.ones_no_train("std", scale_shape);
        if let Some((values, scale)) = fitted {
            tch::no_grad(|| {
                mean.copy_(&values.view(shape).to_device(mean.device()));
                std.copy_(&scale.view(scale_shape).to_device(std.device()));
            });
        }
        Self { inner, mean, std }
    }
}

impl Encoder for Standardized {
    fn output_dim(&self) -> i64 {
        self.inner.output_dim()
    }
    fn check_input(&self, features: &Tensor) -> std::result::Result<(), fusion_core::InputMismatch> {
        let size = features.size();
        if size.get(1..) != Some(&self.mean.size()[..]) {
            let dims: Vec<String> = self.mean.size().iter().map(ToString::to_string).collect();
            return Err(fusion_core::InputMismatch::new(
                format!("features [B, {}]", dims.join(", ")),
                features,
            ));
        }
        self.inner.check_input(features)
    }
    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        let mut present = input.present.to_kind(Kind::Float);
        for _ in 1..input.features.dim() {
            present = present.unsqueeze(-1);
        }
        let standardized = (&input.features - &self.mean) / &self.std * present;
        self.inner.forward(&input.with_features(standardized), train)
    }
}

impl EncoderSpec {
    /// Whether the encoder is a frozen pretrained network whose outputs are cached per file
    /// (a pooled output: token-state sequences are computed each time).
    pub fn caches_outputs(&self) -> bool {
        match self {
            Self::EfficientnetLite0 { frozen, .. } => *frozen,
            Self::Bert { frozen, pooling, .. } => *frozen && *pooling != Some(TextPooling::Sequence),
            Self::Video { frame, pooling } => {
                frame.caches_outputs() && matches!(pooling, VideoPooling::Mean | VideoPooling::Max)
            }
            _ => false,
        }
    }

    /// Whether some of the encoder's weights live outside the model's variables (a frozen
    /// pretrained network whose outputs are cached, or such a network per video frame):
    /// they come from the models folder and are not in checkpoints.
    pub(crate) fn has_external_weights(&self) -> bool {
        self.caches_outputs() || matches!(self, Self::Video { frame, .. } if frame.has_external_weights())
    }

    /// The files whose content decides a pretrained encoder's outputs.
    pub(crate) fn weight_files(&self) -> Vec<PathBuf> {
        match self {
            Self::EfficientnetLite0 { weights, .. } => vec![efficientnet_weights(weights.as_deref())],
            Self::Bert { model, .. } => {
                let folder = model_folder(model);
                [
                    "config.json",
                    "model.safetensors",
                    "1_Pooling/config.json",
                    "modules.json",
                ]
                .iter()
                .map(|f| folder.join(f))
                .collect()
            }
            Self::Video { frame, .. } => frame.weight_files(),
            _ => Vec::new(),
        }
    }

    /// The same encoder without where its files lie (their content is hashed instead).
    pub(crate) fn without_paths(&self) -> Self {
        match self {
            Self::EfficientnetLite0 {
                frozen,
                lr,
                batch_statistics,
                ..
            } => Self::EfficientnetLite0 {
                weights: None,
                frozen: *frozen,
                lr: *lr,
                batch_statistics: *batch_statistics,
            },
            Self::Bert {
                pooling, frozen, lr, ..
            } => Self::Bert {
                model: PathBuf::new(),
                pooling: *pooling,
                frozen: *frozen,
                lr: *lr,
            },
            other => other.clone(),
        }
    }
}

/// Whether `features` are already an encoder's outputs `[B, output_dim]` (or
/// `[B, T, output_dim]`) rather than its raw inputs: raw inputs of the frozen encoders are
/// images `[B, 3, H, W]` or int64 token ids, so the two cannot be confused.
fn already_encoded(features: &Tensor, output_dim: i64) -> bool {
    features.is_floating_point() && (2..=3).contains(&features.dim()) && features.size().last() == Some(&output_dim)
}

impl Frozen {
    fn accepts_encoded(&self, features: &Tensor) -> bool {
        already_encoded(features, self.0.output_dim())
    }
}

/// Per-epoch augmentation of images `[B, C, H, W]` in training: a left-right flip of each
/// image with probability ½ and one random shift of the batch (a crop of the image padded
/// with zeros, which standardised inputs read as the mean). Draws come from libtorch's
/// generator, which training seeds per epoch, so runs repeat. Outside training it passes
/// the images through.
#[derive(Debug)]
pub(crate) struct Augmented {
    inner: Box<dyn Encoder>,
    augment: crate::config::Augment,
}

impl Augmented {
    pub(crate) fn new(inner: Box<dyn Encoder>, augment: crate::config::Augment) -> Self {
        Self { inner, augment }
    }
}

impl Encoder for Augmented {
    fn output_dim(&self) -> i64 {
        self.inner.output_dim()
    }
    fn check_input(&self, features: &Tensor) -> std::result::Result<(), fusion_core::InputMismatch> {
        self.inner.check_input(features)
    }
    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        if !train || input.features.dim() != 4 {
            return self.inner.forward(input, train);
        }
        let mut x = input.features.shallow_clone();
        if self.augment.flip {
            let flip = x
                .select(1, 0)
                .select(1, 0)
                .select(1, 0)
                .rand_like()
                .lt(0.5)
                .view([-1, 1, 1, 1]);
            x = x.flip([3]).where_self(&flip, &x);
        }
        let shift = i64::from(self.augment.shift);
        if shift > 0 {
            let size = x.size();
            let (height, width) = (size[2], size[3]);
            let offsets = Tensor::randint(2 * shift + 1, [2], (Kind::Int64, tch::Device::Cpu));
            let offsets = Vec::<i64>::try_from(offsets).unwrap_or_else(|_| vec![shift, shift]);
            x = x
                .constant_pad_nd([shift, shift, shift, shift])
                .narrow(2, offsets[0], height)
                .narrow(3, offsets[1], width)
                .contiguous();
        }
        self.inner.forward(&input.with_features(x), train)
    }
}

#[cfg(test)]
mod tests {
    use fusion_core::{Encoder, IdentityEncoder, ModalityInput};
    use tch::{Device, Kind, Tensor};

    use super::Augmented;
    use crate::config::Augment;

    fn images() -> Tensor {
        Tensor::arange(16 * 2 * 3 * 3, (Kind::Float, Device::Cpu)).view([16, 2, 3, 3]) + 1.0
    }

    fn augmented(flip: bool, shift: u32) -> Augmented {
        Augmented::new(Box::new(IdentityEncoder::new(9)), Augment { flip, shift })
    }

    #[test]
    fn augmentation_flips_and_shifts_in_training_only() {
        let x = images();
        let input = ModalityInput::dense(x.shallow_clone());
        let same = |a: &Tensor, b: &Tensor| a.equal(b);
        assert!(
            same(&augmented(true, 1).forward(&input, false), &x),
            "evaluation sees the images"
        );

        tch::manual_seed(3);
        let flipped = augmented(true, 0).forward(&input, true);
        let mirrored = x.flip([3]);
        let mut flips = 0;
        for i in 0..16 {
            let row = flipped.get(i);
            assert!(same(&row, &x.get(i)) || same(&row, &mirrored.get(i)), "row {i}");
            flips += usize::from(same(&row, &mirrored.get(i)));
        }
        assert!((3..=13).contains(&flips), "about half flipped: {flips}");
        tch::manual_seed(3);
        assert!(
            same(&augmented(true, 0).forward(&input, true), &flipped),
            "seeded draws repeat"
        );

        // A shift keeps the size; every value is the image's own or the zero padding.
        tch::manual_seed(5);
        let shifted = augmented(false, 1).forward(&input, true);
        assert_eq!(shifted.size(), x.size());
        let kept = shifted.ne(0.0).sum(Kind::Int64);
        let total = i64::try_from(kept).unwrap_or(0);
        assert!((16 * 2 * 4..=16 * 2 * 9).contains(&total), "{total}");
        let original: std::collections::HashSet<i64> = Vec::<f32>::try_from(x.view([-1]))
            .unwrap_or_default()
            .iter()
            .map(|v| *v as i64)
            .collect();
        let moved = Vec::<f32>::try_from(shifted.view([-1])).unwrap_or_default();
        assert!(moved.iter().all(|v| *v == 0.0 || original.contains(&(*v as i64))));
    }

    #[test]
    fn efficientnet_batch_statistics_keep_old_cache_keys_and_need_a_fine_tuned_tower() {
        let parse = |text: &str| serde_json::from_str::<super::EncoderSpec>(text).map_err(|e| e.to_string());
        let frozen = parse(r#"{"kind": "efficientnet_lite0"}"#).unwrap_or_else(|e| panic!("{e}"));
        // Frozen outputs are cached under the JSON of the encoder: unchanged by the field.
        let written = serde_json::to_string(&frozen.without_paths()).unwrap_or_default();
        assert_eq!(
            written,
            r#"{"kind":"efficientnet_lite0","weights":null,"frozen":true,"lr":null}"#
        );
        let features: fusion_data::FeatureConfig =
            serde_json::from_str(r#"{"kind": "image", "size": 64, "normalize": "imagenet"}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        let both =
            parse(r#"{"kind": "efficientnet_lite0", "batch_statistics": true}"#).unwrap_or_else(|e| panic!("{e}"));
        let message = both
            .check(&features, "modalities[0].encoder")
            .err()
            .map(|e| e.to_string());
        assert!(
            message
                .as_deref()
                .unwrap_or_default()
                .contains("modalities[0].encoder.batch_statistics: a frozen"),
            "{message:?}"
        );
        let tuned = parse(r#"{"kind": "efficientnet_lite0", "frozen": false, "batch_statistics": true}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            serde_json::to_string(&tuned)
                .unwrap_or_default()
                .contains(r#""batch_statistics":true"#)
        );
    }
}
