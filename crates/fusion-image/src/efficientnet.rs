//! EfficientNet-Lite0 (Tan & Le 2019; the Lite variants drop squeeze-excitation and use
//! ReLU6) with efficientnet_pytorch's parameter names, loadable from the weights that
//! `cargo xtask models` converts to safetensors. A frozen or fine-tuned feature extractor
//! (1280 features) or an ImageNet classifier.

use std::path::Path;

use fusion_nn::{Encoder, ModalityInput, ParameterSet};
use tch::{Kind, Tensor, nn, nn::Module};

use crate::{Error, Result};

/// (kernel, stride, expansion, output channels, repeats) of the seven stages.
const STAGES: [(i64, i64, i64, i64, usize); 7] = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
];
const STEM: i64 = 32;
const HEAD: i64 = 1280;

/// TensorFlow "same" padding for a `kernel`, `stride` convolution: output size
/// `ceil(input / stride)`, the extra pixel on the right and bottom.
fn same_pad(x: &Tensor, kernel: i64, stride: i64) -> Tensor {
    let size = x.size();
    let pad = |input: i64| ((input + stride - 1) / stride - 1) * stride + kernel - input;
    let (pad_h, pad_w) = (pad(size[2]).max(0), pad(size[3]).max(0));
    x.constant_pad_nd([pad_w / 2, pad_w - pad_w / 2, pad_h / 2, pad_h - pad_h / 2])
}

#[derive(Debug)]
struct MbConv {
    expand: Option<(nn::Conv2D, nn::BatchNorm)>,
    depthwise: nn::Conv2D,
    depthwise_norm: nn::BatchNorm,
    project: nn::Conv2D,
    project_norm: nn::BatchNorm,
    kernel: i64,
    stride: i64,
    residual: bool,
}

/// EfficientNet-Lite0 over `[B, 3, H, W]` ImageNet-normalised images.
#[derive(Debug)]
pub struct EfficientNetLite0 {
    stem: nn::Conv2D,
    stem_norm: nn::BatchNorm,
    blocks: Vec<MbConv>,
    head: nn::Conv2D,
    head_norm: nn::BatchNorm,
    classifier: nn::Linear,
    parameters: ParameterSet,
    /// Whether training normalises with each batch's statistics (and moves the running
    /// ones) rather than the pretrained ones.
    batch_statistics: bool,
}

impl EfficientNetLite0 {
    /// A randomly initialised network under `p` (keys `_conv_stem.weight`, `_blocks.0.…`,
    /// `_fc.weight`, as efficientnet_pytorch).
    pub fn new(p: &nn::Path) -> Self {
        let mut params = ParameterSet::new(p);
        let conv = |stride, groups| nn::ConvConfig {
            stride,
            groups,
            bias: false,
            ..Default::default()
        };
        let norm = nn::BatchNormConfig {
            eps: 1e-3,
            momentum: 0.01,
            ..Default::default()
        };
        let stem = params.conv2d(p / "_conv_stem", 3, STEM, 3, conv(2, 1));
        let stem_norm = params.batch_norm2d(p / "_bn0", STEM, norm);
        let mut blocks = Vec::new();
        let mut channels = STEM;
        for (kernel, stride, expansion, output, repeats) in STAGES {
            for r in 0..repeats {
                let at = p / "_blocks" / blocks.len();
                let stride = if r == 0 { stride } else { 1 };
                let inner = channels * expansion;
                let expand = (expansion != 1).then(|| {
                    (
                        params.conv2d(&at / "_expand_conv", channels, inner, 1, conv(1, 1)),
                        params.batch_norm2d(&at / "_bn0", inner, norm),
                    )
                });
                let block = MbConv {
                    expand,
                    depthwise: params.conv2d(&at / "_depthwise_conv", inner, inner, kernel, conv(stride, inner)),
                    depthwise_norm: params.batch_norm2d(&at / "_bn1", inner, norm),
                    project: params.conv2d(&at / "_project_conv", inner, output, 1, conv(1, 1)),
                    project_norm: params.batch_norm2d(&at / "_bn2", output, norm),
                    kernel,
                    stride,
                    residual: stride == 1 && channels == output,
                };
                blocks.push(block);
                channels = output;
            }
        }
        let head = params.conv2d(p / "_conv_head", channels, HEAD, 1, conv(1, 1));
        let head_norm = params.batch_norm2d(p / "_bn1", HEAD, norm);
        let classifier = params.linear(p / "_fc", HEAD, 1000);
        Self {
            stem,
            stem_norm,
            blocks,
            head,
            head_norm,
            classifier,
            parameters: params,
            batch_statistics: true,
        }
    }

    /// The network with pretrained weights from a safetensors file (batch-norm statistics
    /// included); the error names the file and the key that does not fit.
    pub fn pretrained(p: &nn::Path, weights: &Path) -> Result<Self> {
        let network = Self::new(p);
        network
            .parameters
            .load_safetensors(weights, &[])
            .map_err(|reason| Error::Weights {
                path: weights.into(),
                reason: reason.to_string(),
            })?;
        Ok(network)
    }

    /// Whether fine-tuning normalises with each batch's statistics and moves the running
    /// ones (`true`, as a network trained from scratch must) or keeps the pretrained
    /// statistics while the rest trains (`false`): a few dozen to a few hundred steps at
    /// batch norm's momentum of 0.01 move running statistics too little for the weights
    /// trained on batch statistics, so evaluation would normalise with statistics they
    /// never saw.
    pub fn with_batch_statistics(mut self, batch_statistics: bool) -> Self {
        self.batch_statistics = batch_statistics;
        self
    }

    /// Frozen (`false`) or fine-tuned (`true`).
    pub fn set_trainable(&self, trainable: bool) {
        self.parameters.set_trainable(trainable);
    }

    /// Pooled features `[B, 1280]` (`train`: batch statistics in batch norm, when the
    /// network uses them; see [`EfficientNetLite0::with_batch_statistics`]).
    pub fn features(&self, images: &Tensor, train: bool) -> Tensor {
        let train = train && self.batch_statistics;
        let run = || {
            let mut x = same_pad(images, 3, 2)
                .apply(&self.stem)
                .apply_t(&self.stem_norm, train)
                .relu6();
            for block in &self.blocks {
                let mut h = x.shallow_clone();
                if let Some((conv, norm)) = &block.expand {
                    h = h.apply(conv).apply_t(norm, train).relu6();
                }
                h = same_pad(&h, block.kernel, block.stride)
                    .apply(&block.depthwise)
                    .apply_t(&block.depthwise_norm, train)
                    .relu6();
                h = h.apply(&block.project).apply_t(&block.project_norm, train);
                x = if block.residual { h + x } else { h };
            }
            x.apply(&self.head)
                .apply_t(&self.head_norm, train)
                .relu6()
                .mean_dim([2, 3].as_slice(), false, Kind::Float)
        };
        if self.parameters.is_trainable() {
            run()
        } else {
            tch::no_grad(run)
        }
    }

    /// ImageNet logits `[B, 1000]`, in evaluation mode.
    pub fn logits(&self, images: &Tensor) -> Tensor {
        self.classifier.forward(&self.features(images, false))
    }
}

impl Encoder for EfficientNetLite0 {
    fn output_dim(&self) -> i64 {
        HEAD
    }

    fn check_input(&self, features: &Tensor) -> std::result::Result<(), fusion_nn::InputMismatch> {
        match features.size().as_slice() {
            [_, 3, h, w] if features.is_floating_point() && *h >= 32 && *w >= 32 => Ok(()),
            _ => Err(fusion_nn::InputMismatch::new(
                "float images [B, 3, H, W] with H, W ≥ 32",
                features,
            )),
        }
    }

    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        self.features(&input.features, train)
    }
}
