//! Image encoders on libtorch (feature `torch`): a LeNet-style CNN for small inputs and a
//! ResNet-18-style CNN, both trainable from scratch; they take `[B, C, H, W]` and
//! implement fusion-nn's [`Encoder`].

use fusion_nn::{Encoder, InputMismatch, ModalityInput};
use tch::{Kind, Tensor, nn, nn::Module};

use crate::ChwImage;

/// Stacks same-sized images into `[B, C, H, W]`.
pub fn batch_images(images: &[ChwImage], device: tch::Device) -> crate::Result<Tensor> {
    let Some(first) = images.first() else {
        return Err(crate::Error::InvalidSetting("no images to batch".into()));
    };
    if let Some(other) = images.iter().find(|i| i.shape != first.shape) {
        return Err(crate::Error::InvalidSetting(format!(
            "images of shapes {:?} and {:?} cannot share a batch",
            first.shape, other.shape
        )));
    }
    let data: Vec<f32> = images.iter().flat_map(|i| i.data.iter().copied()).collect();
    let [c, h, w] = first.shape.map(|d| d as i64);
    Ok(Tensor::from_slice(&data)
        .view([images.len() as i64, c, h, w])
        .to_device(device))
}

fn check_images(features: &Tensor, channels: i64, min_side: i64) -> Result<(), InputMismatch> {
    let size = features.size();
    match size.as_slice() {
        [_, c, h, w] if *c == channels && features.is_floating_point() && *h >= min_side && *w >= min_side => Ok(()),
        _ => Err(InputMismatch::new(
            format!("float images [B, {channels}, H, W] with H, W ≥ {min_side}"),
            features,
        )),
    }
}

/// LeNet-5 style (LeCun et al. 1998): two 5×5 convolutions with ReLU and 2×2 max pooling,
/// then 120 and 84 units, then `output_dim`. Sized for 28×28 digits; other sizes are
/// averaged to the 5×5 map the dense layers expect.
#[derive(Debug)]
pub struct LeNet {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    fc1: nn::Linear,
    fc2: nn::Linear,
    out: nn::Linear,
    channels: i64,
    output_dim: i64,
}

impl LeNet {
    /// `channels` input channels, parameters under `p`.
    pub fn new(p: &nn::Path, channels: i64, output_dim: i64) -> Self {
        let padded = nn::ConvConfig {
            padding: 2,
            ..Default::default()
        };
        Self {
            conv1: fusion_nn::conv2d(p / "conv1", channels, 6, 5, padded),
            conv2: fusion_nn::conv2d(p / "conv2", 6, 16, 5, Default::default()),
            fc1: fusion_nn::linear(p / "fc1", 16 * 5 * 5, 120),
            fc2: fusion_nn::linear(p / "fc2", 120, 84),
            out: fusion_nn::linear(p / "out", 84, output_dim),
            channels,
            output_dim,
        }
    }
}

impl Encoder for LeNet {
    fn output_dim(&self) -> i64 {
        self.output_dim
    }

    fn check_input(&self, features: &Tensor) -> Result<(), InputMismatch> {
        check_images(features, self.channels, 12)
    }

    fn forward(&self, input: &ModalityInput, _train: bool) -> Tensor {
        let x = self.conv1.forward(&input.features).relu().max_pool2d_default(2);
        let x = self
            .conv2
            .forward(&x)
            .relu()
            .max_pool2d_default(2)
            .adaptive_avg_pool2d([5, 5]);
        self.out
            .forward(&self.fc2.forward(&self.fc1.forward(&x.flatten(1, -1)).relu()).relu())
    }
}

/// MultiBench's AV-MNIST `LeNet(in_channels, channels, extra_layers)` (from the CentralNet
/// code): a bias-free 5×5 convolution to `channels`, then `extra_layers` bias-free 3×3
/// convolutions each doubling the channels, every one followed by batch norm, ReLU and
/// 2×2 max pooling; convolutions initialised Kaiming-uniform (gain √2). The output is the
/// last map averaged over space: `channels · 2^extra_layers` features (the map is already
/// 1×1 for 28×28 images with 3 extra layers and 112×112 spectrograms with 5).
#[derive(Debug)]
pub struct MultibenchLeNet {
    stages: Vec<(nn::Conv2D, nn::BatchNorm)>,
    channels: i64,
    output_dim: i64,
}

impl MultibenchLeNet {
    /// `channels` input channels, `width` channels after the first convolution.
    pub fn new(p: &nn::Path, channels: i64, width: i64, extra_layers: usize) -> Self {
        let mut stages = Vec::with_capacity(extra_layers + 1);
        let mut input = channels;
        for stage in 0..=extra_layers {
            let output = width << stage;
            let kernel = if stage == 0 { 5 } else { 3 };
            let fan_in = (input * kernel * kernel) as f64;
            let bound = (6.0 / fan_in).sqrt();
            let config = nn::ConvConfig {
                padding: kernel / 2,
                bias: false,
                ws_init: nn::Init::Uniform { lo: -bound, up: bound },
                ..Default::default()
            };
            stages.push((
                nn::conv2d(p / format!("conv{stage}"), input, output, kernel, config),
                // Scale 1 and shift 0 at the start, as PyTorch's BatchNorm2d (tch draws
                // the scale uniformly from [0, 1]).
                nn::batch_norm2d(
                    p / format!("bn{stage}"),
                    output,
                    nn::BatchNormConfig {
                        ws_init: nn::Init::Const(1.0),
                        ..Default::default()
                    },
                ),
            ));
            input = output;
        }
        Self {
            stages,
            channels,
            output_dim: input,
        }
    }

    /// Smallest input side for which every pooling stage still has a pixel.
    pub fn min_side(extra_layers: usize) -> i64 {
        1 << (extra_layers + 1).min(62)
    }
}

impl Encoder for MultibenchLeNet {
    fn output_dim(&self) -> i64 {
        self.output_dim
    }

    fn check_input(&self, features: &Tensor) -> Result<(), InputMismatch> {
        check_images(features, self.channels, Self::min_side(self.stages.len() - 1))
    }

    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        let map = self
            .stages
            .iter()
            .fold(input.features.shallow_clone(), |x, (conv, norm)| {
                x.apply(conv).apply_t(norm, train).relu().max_pool2d_default(2)
            });
        map.mean_dim(&[2i64, 3][..], false, Kind::Float)
    }
}

#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    norm1: nn::BatchNorm,
    conv2: nn::Conv2D,
    norm2: nn::BatchNorm,
    shortcut: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(p: &nn::Path, input: i64, output: i64, stride: i64) -> Self {
        let conv = |p: nn::Path, i, o, k, s, pad| {
            nn::conv2d(
                p,
                i,
                o,
                k,
                nn::ConvConfig {
                    stride: s,
                    padding: pad,
                    bias: false,
                    ..Default::default()
                },
            )
        };
        Self {
            conv1: conv(p / "conv1", input, output, 3, stride, 1),
            norm1: nn::batch_norm2d(p / "bn1", output, Default::default()),
            conv2: conv(p / "conv2", output, output, 3, 1, 1),
            norm2: nn::batch_norm2d(p / "bn2", output, Default::default()),
            shortcut: (stride != 1 || input != output).then(|| {
                (
                    conv(p / "downsample" / "0", input, output, 1, stride, 0),
                    nn::batch_norm2d(p / "downsample" / "1", output, Default::default()),
                )
            }),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x
            .apply(&self.conv1)
            .apply_t(&self.norm1, train)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.norm2, train);
        let skip = match &self.shortcut {
            Some((conv, norm)) => x.apply(conv).apply_t(norm, train),
            None => x.shallow_clone(),
        };
        (y + skip).relu()
    }
}

/// ResNet-18 layout (He et al. 2016): a stem, four stages of two basic blocks (widths
/// `width`, 2×, 4×, 8×; stride 2 from the second stage), global average pooling, and a
/// linear layer to `output_dim`. `small_inputs` uses a 3×3 stride-1 stem without max
/// pooling (for 28–64 px images) instead of ImageNet's 7×7 stride-2 stem and pooling.
#[derive(Debug)]
pub struct ResNet18 {
    stem: nn::Conv2D,
    stem_norm: nn::BatchNorm,
    stages: Vec<Vec<BasicBlock>>,
    projection: nn::Linear,
    small_inputs: bool,
    channels: i64,
    output_dim: i64,
}

impl ResNet18 {
    /// Parameters under `p` (`conv1`, `bn1`, `layer1.0.conv1`…, `projection`).
    pub fn new(p: &nn::Path, channels: i64, width: i64, small_inputs: bool, output_dim: i64) -> Self {
        let (kernel, stride, padding) = if small_inputs { (3, 1, 1) } else { (7, 2, 3) };
        let stem_config = nn::ConvConfig {
            stride,
            padding,
            bias: false,
            ..Default::default()
        };
        let mut input = width;
        let stages = (0..4)
            .map(|s| {
                let output = width << s;
                let stride = if s == 0 { 1 } else { 2 };
                let stage = p / format!("layer{}", s + 1);
                let blocks = vec![
                    BasicBlock::new(&(&stage / "0"), input, output, stride),
                    BasicBlock::new(&(&stage / "1"), output, output, 1),
                ];
                input = output;
                blocks
            })
            .collect();
        Self {
            stem: nn::conv2d(p / "conv1", channels, width, kernel, stem_config),
            stem_norm: nn::batch_norm2d(p / "bn1", width, Default::default()),
            stages,
            projection: fusion_nn::linear(p / "projection", input, output_dim),
            small_inputs,
            channels,
            output_dim,
        }
    }
}

impl Encoder for ResNet18 {
    fn output_dim(&self) -> i64 {
        self.output_dim
    }

    fn check_input(&self, features: &Tensor) -> Result<(), InputMismatch> {
        check_images(features, self.channels, if self.small_inputs { 8 } else { 32 })
    }

    fn forward(&self, input: &ModalityInput, train: bool) -> Tensor {
        let mut x = input.features.apply(&self.stem).apply_t(&self.stem_norm, train).relu();
        if !self.small_inputs {
            x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for block in self.stages.iter().flatten() {
            x = block.forward_t(&x, train);
        }
        self.projection
            .forward(&x.mean_dim([2, 3].as_slice(), false, Kind::Float))
    }
}
