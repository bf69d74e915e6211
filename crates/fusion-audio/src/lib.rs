//! # fusion-audio
//!
//! Turns audio files into model inputs, without libtorch: WAV (8/16/24/32-bit integer and
//! 32-bit float, any channel count, kept or mixed to mono), resampling, STFT, mel
//! spectrograms (Slaney and HTK, as librosa), dB, log-mel, MFCC and fixed-size spectrogram
//! images; files in parallel. With the `torch` feature: a 2-D CNN and a GRU encoder.
//!
//! ```no_run
//! use fusion_audio::{DbConfig, MelConfig, MelExtractor};
//!
//! let clip = fusion_audio::read_wav_mono("7_jackson_32.wav")?;
//! let samples = fusion_audio::resample(&clip.samples, clip.sample_rate, 16000)?;
//! let extractor = MelExtractor::new(MelConfig { n_fft: 512, hop_length: 160, n_mels: 64, ..MelConfig::new(16000) })?;
//! let log_mel = extractor.log_mel(&samples, &DbConfig::default())?;
//! println!("{} mel bands × {} frames", log_mel.rows, log_mel.frames);
//! # Ok::<(), fusion_audio::Error>(())
//! ```

#[cfg(feature = "torch")]
mod encoder;
mod error;
mod features;
mod resample;
mod wav;

#[cfg(feature = "torch")]
pub use encoder::{AudioCnn, AudioGru, batch_spectrograms};
pub use error::{Error, Result};
pub use features::{
    DbConfig, DbReference, MelConfig, MelExtractor, MelNorm, MelScale, PadMode, Spectrogram, fit_duration, fixed_width,
    mel_filterbank, power_to_db,
};
pub use resample::resample;
pub use wav::{
    Clip, DEFAULT_MAX_CHANNELS, DEFAULT_MAX_SECONDS, MonoClip, SAMPLE_RATES, WavLimits, read_wav, read_wav_bytes,
    read_wav_mono,
};
