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
}

/// Result with fusion-image's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
