//! # fusion-image
//!
//! Turns image files into model inputs, without libtorch: decode (PNG, JPEG, WebP, BMP,
//! GIF, TIFF) with EXIF orientation applied and a pixel budget against decompression bombs,
//! convert to grey or RGB (as PIL does), resize with antialiasing (bilinear or bicubic,
//! matching torchvision/PIL within one level), crop, flip, and normalise to a
//! channels-first `f32` array; batches decode in parallel. With the `torch` feature: LeNet
//! and ResNet-18 encoders, and pretrained EfficientNet-Lite0.
//!
//! ```no_run
//! use fusion_image::{Channels, Pipeline, load_normalized};
//!
//! let digit = load_normalized("digit.png", Channels::Grey, &[0.1307], &[0.3081])?;
//! assert_eq!(digit.shape[0], 1);
//! let photo = Pipeline::imagenet(256, 224).load("photo.jpg")?;
//! assert_eq!(photo.shape, [3, 224, 224]);
//! # Ok::<(), fusion_image::Error>(())
//! ```

mod budget;
#[cfg(feature = "torch")]
mod efficientnet;
#[cfg(feature = "torch")]
mod encoder;
mod error;
mod pipeline;
mod preprocess;

pub use budget::{DEFAULT_DECODE_BUDGET, decode_budget_usage, set_decode_budget};
#[cfg(feature = "torch")]
pub use efficientnet::EfficientNetLite0;
#[cfg(feature = "torch")]
pub use encoder::{LeNet, MultibenchLeNet, ResNet18, batch_images};
pub use error::{Error, Result};
pub use pipeline::{
    Crop, DEFAULT_PIXEL_BUDGET, Decoded, Filter, Header, Pipeline, Resize, SplitMix64, decode, decode_bytes, header,
};
pub use preprocess::{Channels, ChwImage, load_normalized, normalize};
