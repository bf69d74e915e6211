use std::path::PathBuf;

/// Errors of fusion-run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that cannot work, naming the field.
    #[error("{0}")]
    Config(String),
    /// A record that cannot be used, naming it, its file and the reason.
    #[error("{0}")]
    Record(String),
    /// A file that cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// From fusion-core.
    #[error(transparent)]
    Core(#[from] fusion_core::Error),
    /// From fusion-data.
    #[error(transparent)]
    Data(#[from] fusion_data::Error),
    /// From libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl From<fusion_nn::Error> for Error {
    fn from(error: fusion_nn::Error) -> Self {
        Self::Core(error.into())
    }
}

/// Result of fusion-run.
pub type Result<T> = std::result::Result<T, Error>;
