//! # fusion-image
//!
//! Turns image files into model inputs: decode (PNG, JPEG, WebP, BMP, GIF, TIFF), convert
//! to grey or RGB, and normalise to a channels-first `f32` array. Needs no libtorch.
//!
//! ```no_run
//! use fusion_image::{Channels, load_normalized};
//!
//! let chw = load_normalized("digit.png", Channels::Grey, &[0.1307], &[0.3081])?;
//! assert_eq!(chw.shape[0], 1);
//! # Ok::<(), fusion_image::Error>(())
//! ```

mod error;
mod preprocess;

pub use error::{Error, Result};
pub use preprocess::{Channels, ChwImage, load_normalized, normalize};
