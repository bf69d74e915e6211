//! Layers initialised as PyTorch's, so models match their PyTorch peers.

use tch::nn;

/// A linear layer initialised as PyTorch's `nn.Linear`: weights and bias uniform in
/// `±1/√in` (tch's default is He initialisation, √6 times wider, which trained the same
/// models measurably worse than their PyTorch peers).
pub fn linear(p: nn::Path<'_>, input: i64, output: i64) -> nn::Linear {
    let bound = 1.0 / (input.max(1) as f64).sqrt();
    let config = nn::LinearConfig {
        ws_init: nn::Init::Uniform { lo: -bound, up: bound },
        bs_init: Some(nn::Init::Uniform { lo: -bound, up: bound }),
        bias: true,
    };
    nn::linear(p, input, output, config)
}

/// A 2-D convolution initialised as PyTorch's `nn.Conv2d`: weights and bias uniform in
/// `±1/√(in · k²)` (tch's default is He initialisation with a zero bias, √6 times wider: a
/// LeNet trained with it retrieved measurably worse than its PyTorch peer).
pub fn conv2d(p: nn::Path<'_>, input: i64, output: i64, kernel: i64, config: nn::ConvConfig) -> nn::Conv2D {
    let bound = 1.0 / ((input / config.groups.max(1)).max(1) as f64 * (kernel * kernel) as f64).sqrt();
    let config = nn::ConvConfig {
        ws_init: nn::Init::Uniform { lo: -bound, up: bound },
        bs_init: nn::Init::Uniform { lo: -bound, up: bound },
        ..config
    };
    nn::conv2d(p, input, output, kernel, config)
}
