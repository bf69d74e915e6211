use thiserror::Error;

/// Errors of fusion-core.
#[derive(Debug, Error)]
pub enum Error {
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
    /// Inputs whose shapes cannot be combined.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// An error raised inside libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result with fusion-core's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
