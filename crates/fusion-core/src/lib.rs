//! # fusion-core
//!
//! Multi-modal fusion on libtorch (through [`tch`]): fusion modules, models, training and
//! evaluation. "Early" fusion combines features (feature level), "late" fusion combines
//! decisions (decision level), as in the fusion literature.
//!
//! ```
//! use fusion_core::{DeviceChoice, tensor_fusion};
//! use tch::Tensor;
//!
//! let device = "cpu".parse::<DeviceChoice>()?.resolve()?;
//! let text = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]).to_device(device);
//! let audio = Tensor::from_slice(&[3.0f32]).view([1, 1]).to_device(device);
//! // Outer product of [1, 2, 1] and [3, 1], flattened.
//! let fused = tensor_fusion(&[&text, &audio])?;
//! assert_eq!(fused.size(), [1, 6]);
//! # Ok::<(), fusion_core::Error>(())
//! ```

mod device;
mod error;
mod fusion;

pub use device::{DeviceChoice, cuda_available, cuda_device_count};
pub use error::{Error, Result};
pub use fusion::tensor_fusion;
