//! Video encoder on libtorch (feature `torch`): any per-frame image encoder (from
//! fusion-image: LeNet, ResNet-18, EfficientNet-Lite0) applied to every frame, then a
//! temporal step. Takes `[B, T, C, H, W]`; a padding mask `[B, T]` marks real frames.

use fusion_nn::{Encoder, ModalityInput};
use tch::{Kind, Tensor, nn, nn::Module};

/// How frame features become one clip feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalPooling {
    /// Mean over real frames.
    Mean,
    /// Element-wise maximum over real frames.
    Max,
    /// Softmax-weighted mean with learned scores (padding gets no weight).
    Attention,
    /// A 1-D convolution over time (kernel 3, same length) with ReLU, then the mean.
    Conv,
}

/// A per-frame encoder with temporal pooling.
#[derive(Debug)]
pub struct VideoEncoder {
    frames: Box<dyn Encoder>,
    pooling: TemporalPooling,
    attention: Option<nn::Linear>,
    conv: Option<nn::Conv1D>,
}

impl VideoEncoder {
    /// Wraps `frames`; the pooling's own parameters live under `p`.
    pub fn new(p: &nn::Path, frames: Box<dyn Encoder>, pooling: TemporalPooling) -> Self {
        let dim = frames.output_dim();
        let attention = (pooling == TemporalPooling::Attention).then(|| fusion_nn::linear(p / "attention", dim, 1));
        let conv_config = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let conv =
            (pooling == TemporalPooling::Conv).then(|| nn::conv1d(p / "temporal_conv", dim, dim, 3, conv_config));
        Self {
            frames,
            pooling,
            attention,
            conv,
        }
    }

    /// Frame weights of the attention pooling `[B, T]` for `features` `[B, T, D]`.
    fn attention_weights(&self, features: &Tensor, valid: &Tensor) -> Tensor {
        let scores = match &self.attention {
            Some(linear) => linear.forward(features).squeeze_dim(-1),
            None => features.select(-1, 0).zeros_like(),
        };
        scores
            .masked_fill(&valid.logical_not(), f64::NEG_INFINITY)
            .softmax(-1, Kind::Float)
    }
}

impl Encoder for VideoEncoder {
    fn output_dim(&self) -> i64 {
        self.frames.output_dim()
    }

    fn check_input(&self, features: &Tensor) -> Result<(), fusion_nn::InputMismatch> {
        if features.size().len() != 5 {
            return Err(fusion_nn::InputMismatch::new("frames [B, T, C, H, W]", features));
        }
        self.frames.check_input(&features.flatten(0, 1)).map_err(|inner| {
            fusion_nn::InputMismatch::new(format!("frames [B, T, C, H, W] each of {}", inner.expected), features)
        })
    }

    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        let size = input.features.size();
        let time = size[1];
        let frames = ModalityInput::dense(input.features.flatten(0, 1));
        let features = self
            .frames
            .forward(&frames, train)
            .view([-1, time, self.frames.output_dim()]);
        let valid = match &input.padding_mask {
            Some(mask) => mask.to_kind(Kind::Bool),
            None => features.select(-1, 0).ones_like().to_kind(Kind::Bool),
        };
        let weights = valid.to_kind(Kind::Float).unsqueeze(-1);
        let masked_mean = |x: &Tensor| {
            (x * &weights).sum_dim_intlist(1, false, Kind::Float)
                / weights.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0)
        };
        match self.pooling {
            TemporalPooling::Mean => masked_mean(&features),
            TemporalPooling::Max => features
                .masked_fill(&valid.logical_not().unsqueeze(-1), f64::NEG_INFINITY)
                .amax(1, false),
            TemporalPooling::Attention => {
                let w = self.attention_weights(&features, &valid).unsqueeze(-1);
                (&features * w).sum_dim_intlist(1, false, Kind::Float)
            }
            TemporalPooling::Conv => {
                let x = (&features * &weights).transpose(1, 2); // [B, D, T]
                let convolved = match &self.conv {
                    Some(conv) => conv.forward(&x).relu(),
                    None => x,
                };
                masked_mean(&convolved.transpose(1, 2))
            }
        }
    }
}
