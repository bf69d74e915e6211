use std::path::PathBuf;

use thiserror::Error;

/// Errors of fusion-video.
#[derive(Debug, Error)]
pub enum Error {
    /// FFmpeg could not open or read the file.
    #[error("cannot read video {path}: {source}")]
    Ffmpeg {
        /// The media file.
        path: PathBuf,
        /// FFmpeg's error.
        source: ffmpeg_next::Error,
    },
    /// The file could not be opened as a regular file.
    #[error("cannot read video {path}: {reason}")]
    Unreadable {
        /// The media file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file opened but holds no video stream.
    #[error("{path} has no video stream")]
    NoVideoStream {
        /// The media file.
        path: PathBuf,
    },
    /// A stream beyond what is decoded (its frames would take gigabytes).
    #[error("{path}: {reason}")]
    TooLarge {
        /// The media file.
        path: PathBuf,
        /// Which limit, and by how much.
        reason: String,
    },
    /// A sampling or output setting that cannot work.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
}

/// Result with fusion-video's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
