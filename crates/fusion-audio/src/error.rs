use std::path::PathBuf;

use thiserror::Error;

/// Errors of fusion-audio.
#[derive(Debug, Error)]
pub enum Error {
    /// A WAV file that cannot be read: missing, truncated or not a WAV.
    #[error("cannot read WAV {path}: {reason}")]
    Wav {
        /// The audio file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A WAV file that is well formed but unusable.
    #[error("unusable WAV {path}: {reason}")]
    Unusable {
        /// The audio file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A parameter that cannot work (an FFT size of 0, fmin above fmax…).
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
}

/// Result with fusion-audio's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
