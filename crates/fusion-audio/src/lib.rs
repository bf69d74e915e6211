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
mod features;
mod resample;
mod wav;

pub use error::{Error, Result};
pub use features::{
    DbConfig, DbReference, MelConfig, MelExtractor, MelNorm, MelScale, PadMode, Spectrogram, fit_duration, fixed_width,
    mel_filterbank, power_to_db,
};
pub use resample::resample;
pub use wav::{Clip, MonoClip, read_wav, read_wav_mono};
