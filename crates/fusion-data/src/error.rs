use std::path::PathBuf;

use thiserror::Error;

/// Errors of fusion-data.
#[derive(Debug, Error)]
pub enum Error {
    /// A manifest file that cannot be read at all.
    #[error("cannot read manifest {path}: {source}")]
    Io {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A CSV manifest whose header cannot be read.
    #[error("cannot read CSV manifest {path}: {reason}")]
    Csv {
        /// The manifest file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Source data for a dataset builder that is missing or malformed.
    #[error("dataset source {path}: {reason}")]
    Dataset {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A feature cache shard that cannot be read or written.
    #[error("feature cache {path}: {reason}")]
    Cache {
        /// The shard or folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A configuration value that cannot work, with the field named.
    #[error("bad configuration: {0}")]
    Config(String),
}

/// Result with fusion-data's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;
