//! # fusion-nn
//!
//! What a modality encoder needs to plug into a fusion model, and nothing of the trainer:
//! the [`Encoder`] trait (checked input, typed [`InputMismatch`]), the [`ModalityInput`] it
//! reads (features, padding mask, presence), [`ParameterSet`] for pretrained weights
//! loaded by checkpoint key, [`linear`] and [`conv2d`] initialised as PyTorch's, and
//! safetensors files with a checksum ([`read_checked_safetensors`]). The modality crates
//! (fusion-image, -audio, -text, -video, -tabular) build on it alone; `fusion-core` re-exports it.
//!
//! ```
//! use fusion_nn::{Encoder, MlpEncoder, ModalityInput};
//! use tch::{Device, Kind, Tensor, nn};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let encoder = MlpEncoder::new(&vs.root(), 8, &[16, 4], 0.0);
//! let batch = ModalityInput::dense(Tensor::randn([5, 8], (Kind::Float, Device::Cpu)));
//! assert_eq!(encoder.encode(&batch, false)?.size(), [5, 4]);
//!
//! // A batch of the wrong width is an error that says what was expected, not a panic.
//! let wrong = ModalityInput::dense(Tensor::randn([5, 3], (Kind::Float, Device::Cpu)));
//! let mismatch = encoder.encode(&wrong, false).unwrap_err();
//! assert_eq!(mismatch.shape, [5, 3]);
//! # Ok::<(), fusion_nn::InputMismatch>(())
//! ```

mod encoder;
mod error;
mod input;
mod layers;
mod params;
mod weights;

pub use encoder::{Encoder, IdentityEncoder, MlpEncoder};
pub use error::{Error, InputMismatch, Result};
pub use input::ModalityInput;
pub use layers::{conv2d, linear};
pub use params::{ParameterSet, WeightsMismatch};
pub use weights::{CHECKSUM_KEY, checksum, read_checked_safetensors};
