use std::path::PathBuf;

use thiserror::Error;

/// Errors of fusion-image.
#[derive(Debug, Error)]
pub enum Error {
    /// A file that cannot be read or decoded as an image.
    #[error("cannot decode image {path}: {source}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// A JPEG whose last scan has no end-of-image marker after it: the file was cut short
    /// (decoders fill the missing rows with grey and say nothing).
    #[error("image {path} is cut short: its last scan never ends (no end-of-image marker)")]
    Truncated {
        /// The image file.
        path: PathBuf,
    },
    /// Mean/std lists that do not match the channel count.
    #[error("normalisation needs one mean and one std per channel: {channels} channels, {means} means, {stds} stds")]
    Normalization {
        /// Channels of the image.
        channels: usize,
        /// Number of means given.
        means: usize,
        /// Number of standard deviations given.
        stds: usize,
    },
    /// A decoded size over the pixel budget (a decompression bomb, or a huge scan).
    #[error("image {path} is {width}×{height} pixels, over the budget of {budget} pixels")]
    TooLarge {
        /// The image file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The budget in pixels.
        budget: u64,
    },
    /// A pipeline step that cannot apply to this file (a crop larger than the image…).
    #[error("cannot transform image {path}: {reason}")]
    Transform {
        /// The image file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Weights that are missing, unreadable or do not fit the network.
    #[error("weights {path}: {reason}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A setting that cannot work.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
}

/// Result with fusion-image's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
