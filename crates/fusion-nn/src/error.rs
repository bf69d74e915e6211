use thiserror::Error;

/// Errors of fusion-nn.
#[derive(Debug, Error)]
pub enum Error {
    /// A file that cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A weights file that is damaged or not safetensors.
    #[error("checkpoint {path}: {reason}")]
    Damaged {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An error raised inside libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result with fusion-nn's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// An input batch an encoder cannot read: what it expects, and what it was given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expected {expected}, got {kind} {shape:?}")]
pub struct InputMismatch {
    /// What the encoder reads, such as `float images [B, 3, H, W] with H, W ≥ 32`.
    pub expected: String,
    /// The element type given (`Float`, `Int64`…).
    pub kind: String,
    /// The shape given.
    pub shape: Vec<i64>,
}

impl InputMismatch {
    /// `features` where `expected` was wanted.
    pub fn new(expected: impl Into<String>, features: &tch::Tensor) -> Self {
        Self {
            expected: expected.into(),
            kind: format!("{:?}", features.kind()),
            shape: features.size(),
        }
    }
}
