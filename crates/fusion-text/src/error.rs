use std::path::PathBuf;

use thiserror::Error;

/// Errors of fusion-text.
#[derive(Debug, Error)]
pub enum Error {
    /// A tokenizer file that is missing or cannot be parsed.
    #[error("cannot load tokenizer {path}: {reason}")]
    Tokenizer {
        /// The tokenizer.json that failed.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A text file that cannot be read or is not UTF-8.
    #[error("cannot read text {path}: {reason}")]
    Text {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A model configuration (config.json, pooling or sentence-transformers files) that is
    /// missing, malformed or unusable.
    #[error("model configuration {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Weights that are missing, unreadable or do not fit the configuration.
    #[error("weights {path}: {reason}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Encoding a batch of texts failed inside the tokenizer.
    #[error("cannot encode text: {0}")]
    Encode(String),
    /// A configuration value that cannot work.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// An error raised inside libtorch.
    #[cfg(feature = "torch")]
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result with fusion-text's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
