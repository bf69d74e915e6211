use fusion_nn::InputMismatch;
use thiserror::Error;

/// Errors of fusion-core.
#[derive(Debug, Error)]
pub enum Error {
    /// A run folder another process is training or writing into.
    #[error("{folder} is in use by another process (it holds {lock}); wait for it to finish or use another folder")]
    Busy {
        /// The run folder.
        folder: std::path::PathBuf,
        /// Its lock file.
        lock: std::path::PathBuf,
    },
    /// A device string that is not `cpu`, `cuda`, `cuda:N` or `auto`.
    #[error("unknown device `{0}`: expected cpu, cuda, cuda:N or auto")]
    UnknownDevice(String),
    /// CUDA was asked for but libtorch sees no usable GPU.
    #[error("device `{requested}` requested but CUDA is not available (GPUs visible: {visible})")]
    CudaUnavailable {
        /// The device string that was asked for.
        requested: String,
        /// Number of CUDA devices libtorch can see.
        visible: usize,
    },
    /// A model or training configuration that cannot work; names the field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file that cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A checkpoint or run folder that does not fit the model.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Inputs whose shapes cannot be combined.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A modality's input its encoder cannot read.
    #[error("shape mismatch: modality `{modality}`: {mismatch}")]
    Input {
        /// The modality.
        modality: String,
        /// What its encoder expects and what it was given.
        mismatch: InputMismatch,
    },
    /// A collective operation of a data-parallel group that failed (a peer gone, a timeout).
    #[error("data-parallel group: {0}")]
    Collective(String),
    /// An error raised inside libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result with fusion-core's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<fusion_nn::Error> for Error {
    fn from(error: fusion_nn::Error) -> Self {
        match error {
            fusion_nn::Error::Io { path, source } => Self::Io { path, source },
            fusion_nn::Error::Damaged { path, reason } => Self::Checkpoint { path, reason },
            fusion_nn::Error::Torch(error) => Self::Torch(error),
        }
    }
}
