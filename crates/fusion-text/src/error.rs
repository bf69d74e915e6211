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
    /// Encoding a batch of texts failed inside the tokenizer.
    #[error("cannot encode text: {0}")]
    Encode(String),
    /// A configuration value that cannot work.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
}

/// Result with fusion-text's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
