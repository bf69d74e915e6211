//! # fusion-audio
//!
//! Turns audio files into model inputs. Reads WAV (8/16/24/32-bit integer and 32-bit float,
//! any channel count) into `f32` samples in `[-1, 1]`, mixed to mono. Needs no libtorch.
//!
//! ```no_run
//! let clip = fusion_audio::read_wav_mono("7_jackson_32.wav")?;
//! println!("{} samples at {} Hz", clip.samples.len(), clip.sample_rate);
//! # Ok::<(), fusion_audio::Error>(())
//! ```

mod error;
mod wav;

pub use error::{Error, Result};
pub use wav::{MonoClip, read_wav_mono};
