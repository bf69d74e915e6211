//! Spectral features computed the way librosa computes them: STFT (periodic Hann window,
//! centred frames), mel filterbanks (Slaney or HTK scale, Slaney area normalisation),
//! power/dB conversion, log-mel, MFCC (DCT-II, orthonormal), and fixed-size spectrogram
//! images. Computed in f64, returned as f32.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::{Error, Result};

/// How the signal is padded before the first and after the last centred frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// Zeros (librosa ≥ 0.10's default).
    Constant,
    /// Mirror without repeating the edge sample (numpy's `reflect`).
    Reflect,
}

/// Frequency scale of the mel filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelScale {
    /// Slaney's Auditory Toolbox: linear below 1 kHz, logarithmic above (librosa's default).
    Slaney,
    /// HTK: `2595 · log10(1 + f / 700)`.
    Htk,
}

/// Normalisation of the mel filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelNorm {
    /// Peak 1.
    None,
    /// Each filter divided by its width in Hz (`2 / (f_high − f_low)`): constant energy
    /// per channel (librosa's default).
    Slaney,
}

/// Parameters of [`MelExtractor`]; the defaults are librosa's.
#[derive(Debug, Clone, PartialEq)]
pub struct MelConfig {
    /// Sample rate of the input.
    pub sample_rate: u32,
    /// FFT size (2048).
    pub n_fft: usize,
    /// Samples between frames (512).
    pub hop_length: usize,
    /// Window length, at most `n_fft`, centred in it (`None`: `n_fft`).
    pub win_length: Option<usize>,
    /// Mel bands (128).
    pub n_mels: usize,
    /// Lowest filter edge in Hz (0).
    pub fmin: f64,
    /// Highest filter edge in Hz (`None`: half the sample rate).
    pub fmax: Option<f64>,
    /// Mel scale (Slaney).
    pub scale: MelScale,
    /// Filter normalisation (Slaney).
    pub norm: MelNorm,
    /// Exponent of the magnitude: 2 for power, 1 for magnitude (2).
    pub power: f64,
    /// Centre frames on `t · hop_length` by padding `n_fft / 2` on both sides (true).
    pub center: bool,
    /// Padding used when centring (constant).
    pub pad_mode: PadMode,
}

impl MelConfig {
    /// librosa's defaults at `sample_rate`.
    pub fn new(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            n_fft: 2048,
            hop_length: 512,
            win_length: None,
            n_mels: 128,
            fmin: 0.0,
            fmax: None,
            scale: MelScale::Slaney,
            norm: MelNorm::Slaney,
            power: 2.0,
            center: true,
            pad_mode: PadMode::Constant,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidSetting(why));
        let nyquist = f64::from(self.sample_rate) / 2.0;
        let fmax = self.fmax.unwrap_or(nyquist);
        if self.sample_rate == 0 {
            return bad("sample_rate must be positive".into());
        }
        if self.n_fft < 2 || self.hop_length == 0 || self.n_mels == 0 {
            return bad(format!(
                "n_fft {} (≥ 2), hop_length {} and n_mels {} (≥ 1)",
                self.n_fft, self.hop_length, self.n_mels
            ));
        }
        if let Some(win) = self.win_length
            && (win == 0 || win > self.n_fft)
        {
            return bad(format!("win_length {win} must be in 1..={}", self.n_fft));
        }
        if !(0.0..fmax).contains(&self.fmin) || fmax > nyquist {
            return bad(format!("need 0 ≤ fmin ({}) < fmax ({fmax}) ≤ {nyquist}", self.fmin));
        }
        if !(self.power > 0.0 && self.power.is_finite()) {
            return bad(format!("power {} must be positive", self.power));
        }
        Ok(())
    }
}

/// A feature matrix `[rows, frames]`, row-major (rows: frequency bins, mel bands or
/// coefficients).
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrogram {
    /// Number of rows.
    pub rows: usize,
    /// Number of frames (columns).
    pub frames: usize,
    /// `rows · frames` values.
    pub data: Vec<f32>,
}

impl Spectrogram {
    /// Value at `(row, frame)`.
    pub fn get(&self, row: usize, frame: usize) -> f32 {
        self.data[row * self.frames + frame]
    }
}

fn hz_to_mel(hz: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + hz / 700.0).log10(),
        MelScale::Slaney => {
            let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
            if hz >= min_log_hz {
                min_log_hz / f_sp + (hz / min_log_hz).ln() / (6.4f64.ln() / 27.0)
            } else {
                hz / f_sp
            }
        }
    }
}

fn mel_to_hz(mel: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(mel / 2595.0) - 1.0),
        MelScale::Slaney => {
            let (f_sp, min_log_hz) = (200.0 / 3.0, 1000.0);
            let min_log_mel = min_log_hz / f_sp;
            if mel >= min_log_mel {
                min_log_hz * ((6.4f64.ln() / 27.0) * (mel - min_log_mel)).exp()
            } else {
                f_sp * mel
            }
        }
    }
}

/// Triangular mel filters `[n_mels, n_fft / 2 + 1]` (row-major), as `librosa.filters.mel`.
pub fn mel_filterbank(
    sample_rate: u32,
    n_fft: usize,
    n_mels: usize,
    fmin: f64,
    fmax: f64,
    scale: MelScale,
    norm: MelNorm,
) -> Vec<f64> {
    let bins = n_fft / 2 + 1;
    let nyquist = f64::from(sample_rate) / 2.0;
    let fft_freqs: Vec<f64> = (0..bins).map(|k| nyquist * k as f64 / (bins - 1) as f64).collect();
    let (low, high) = (hz_to_mel(fmin, scale), hz_to_mel(fmax, scale));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(low + (high - low) * i as f64 / (n_mels + 1) as f64, scale))
        .collect();
    let mut weights = vec![0.0; n_mels * bins];
    for m in 0..n_mels {
        let (left, center, right) = (edges[m], edges[m + 1], edges[m + 2]);
        let area = match norm {
            MelNorm::Slaney => 2.0 / (right - left),
            MelNorm::None => 1.0,
        };
        for (k, &f) in fft_freqs.iter().enumerate() {
            let rising = (f - left) / (center - left);
            let falling = (right - f) / (right - center);
            weights[m * bins + k] = rising.min(falling).max(0.0) * area;
        }
    }
    weights
}

/// Computes spectrograms, mel spectrograms, log-mel and MFCC for one configuration; the
/// FFT plan, window and filters are made once and shared (the extractor is `Sync`).
pub struct MelExtractor {
    config: MelConfig,
    window: Vec<f64>,
    filters: Vec<f64>,
    /// Per filter, the range of bins where its weight is not zero.
    spans: Vec<std::ops::Range<usize>>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl std::fmt::Debug for MelExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelExtractor").field("config", &self.config).finish()
    }
}

/// Decibel conversion settings, as `librosa.power_to_db`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DbConfig {
    /// Reference power (0 dB); librosa's default 1.0.
    pub reference: DbReference,
    /// Floor on the power (1e-10).
    pub amin: f64,
    /// Clip to this many dB below the maximum (80); `None` keeps everything.
    pub top_db: Option<f64>,
}

/// The power that maps to 0 dB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DbReference {
    /// A fixed power.
    Value(f64),
    /// The spectrogram's own maximum (`ref=np.max`).
    Max,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            reference: DbReference::Value(1.0),
            amin: 1e-10,
            top_db: Some(80.0),
        }
    }
}

impl MelExtractor {
    /// Checks `config` and prepares the FFT, window and filters.
    pub fn new(config: MelConfig) -> Result<Self> {
        config.validate()?;
        let fmax = config.fmax.unwrap_or(f64::from(config.sample_rate) / 2.0);
        let filters = mel_filterbank(
            config.sample_rate,
            config.n_fft,
            config.n_mels,
            config.fmin,
            fmax,
            config.scale,
            config.norm,
        );
        // Periodic Hann of win_length, centred in n_fft (scipy's get_window + pad_center).
        let mut window = vec![0.0; config.n_fft];
        let win_length = config.win_length.unwrap_or(config.n_fft);
        let offset = (config.n_fft - win_length) / 2;
        for i in 0..win_length {
            window[offset + i] = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / win_length as f64).cos();
        }
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(config.n_fft);
        let bins = config.n_fft / 2 + 1;
        let spans = filters
            .chunks(bins)
            .map(|row| {
                let start = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let end = row.iter().rposition(|&w| w != 0.0).map_or(start, |last| last + 1);
                start..end
            })
            .collect();
        Ok(Self {
            config,
            window,
            filters,
            spans,
            fft,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MelConfig {
        &self.config
    }

    /// `|STFT|^power` `[n_fft / 2 + 1, frames]`. An empty signal is an error.
    pub fn spectrogram(&self, samples: &[f32]) -> Result<Spectrogram> {
        let c = &self.config;
        if samples.is_empty() {
            return Err(Error::InvalidSetting(
                "cannot compute a spectrogram of 0 samples".into(),
            ));
        }
        let pad = if c.center { c.n_fft / 2 } else { 0 };
        let signal: Vec<f64> = samples.iter().map(|&s| f64::from(s)).collect();
        let padded_len = signal.len() + 2 * pad;
        if padded_len < c.n_fft {
            return Err(Error::InvalidSetting(format!(
                "{} samples are shorter than n_fft {} without centring",
                samples.len(),
                c.n_fft
            )));
        }
        if c.center && c.pad_mode == PadMode::Reflect && signal.len() <= pad {
            return Err(Error::InvalidSetting(format!(
                "reflect padding needs more than {pad} samples, got {}",
                signal.len()
            )));
        }
        let sample_at = |i: usize| -> f64 {
            // i indexes the padded signal.
            let j = i as isize - pad as isize;
            let n = signal.len() as isize;
            match c.pad_mode {
                _ if (0..n).contains(&j) => signal[j as usize],
                PadMode::Constant => 0.0,
                PadMode::Reflect => {
                    let reflected = if j < 0 { -j } else { 2 * (n - 1) - j };
                    signal[reflected as usize]
                }
            }
        };
        let frames = 1 + (padded_len - c.n_fft) / c.hop_length;
        let bins = c.n_fft / 2 + 1;
        let mut data = vec![0f32; bins * frames];
        let mut input = self.fft.make_input_vec();
        let mut output = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        for t in 0..frames {
            let start = t * c.hop_length;
            for (k, slot) in input.iter_mut().enumerate() {
                *slot = sample_at(start + k) * self.window[k];
            }
            // Lengths come from the plan itself, so this cannot fail.
            let _ = self.fft.process_with_scratch(&mut input, &mut output, &mut scratch);
            for (k, value) in output.iter().enumerate() {
                let magnitude_squared = value.norm_sqr();
                let scaled = if c.power == 2.0 {
                    magnitude_squared
                } else {
                    magnitude_squared.powf(c.power / 2.0)
                };
                data[k * frames + t] = scaled as f32;
            }
        }
        Ok(Spectrogram {
            rows: bins,
            frames,
            data,
        })
    }

    /// Mel spectrogram `[n_mels, frames]` (`librosa.feature.melspectrogram`).
    pub fn mel_spectrogram(&self, samples: &[f32]) -> Result<Spectrogram> {
        let spectrum = self.spectrogram(samples)?;
        let (bins, frames, mels) = (spectrum.rows, spectrum.frames, self.config.n_mels);
        let mut data = vec![0f32; mels * frames];
        let mut column = vec![0f64; bins];
        for t in 0..frames {
            for (k, slot) in column.iter_mut().enumerate() {
                *slot = f64::from(spectrum.data[k * frames + t]);
            }
            for (m, span) in self.spans.iter().enumerate() {
                // Only the bins under the triangle: the rest of the row is zero.
                let filter = &self.filters[m * bins + span.start..m * bins + span.end];
                let value: f64 = filter.iter().zip(&column[span.clone()]).map(|(w, s)| w * s).sum();
                data[m * frames + t] = value as f32;
            }
        }
        Ok(Spectrogram {
            rows: mels,
            frames,
            data,
        })
    }

    /// Log-mel in dB: `power_to_db(mel_spectrogram(samples))`.
    pub fn log_mel(&self, samples: &[f32], db: &DbConfig) -> Result<Spectrogram> {
        Ok(power_to_db(&self.mel_spectrogram(samples)?, db))
    }

    /// `n_mfcc` coefficients `[n_mfcc, frames]`: DCT-II (orthonormal) of the dB mel
    /// spectrogram over the mel axis (`librosa.feature.mfcc`).
    pub fn mfcc(&self, samples: &[f32], n_mfcc: usize, db: &DbConfig) -> Result<Spectrogram> {
        let mels = self.config.n_mels;
        if n_mfcc == 0 || n_mfcc > mels {
            return Err(Error::InvalidSetting(format!("n_mfcc {n_mfcc} must be in 1..={mels}")));
        }
        let log_mel = self.log_mel(samples, db)?;
        let frames = log_mel.frames;
        let basis: Vec<f64> = (0..n_mfcc)
            .flat_map(|k| {
                let scale = if k == 0 {
                    (1.0 / mels as f64).sqrt()
                } else {
                    (2.0 / mels as f64).sqrt()
                };
                (0..mels).map(move |n| {
                    scale * (std::f64::consts::PI * k as f64 * (2 * n + 1) as f64 / (2 * mels) as f64).cos()
                })
            })
            .collect();
        let mut data = vec![0f32; n_mfcc * frames];
        for t in 0..frames {
            for k in 0..n_mfcc {
                let row = &basis[k * mels..(k + 1) * mels];
                let value: f64 = row
                    .iter()
                    .enumerate()
                    .map(|(n, b)| b * f64::from(log_mel.data[n * frames + t]))
                    .sum();
                data[k * frames + t] = value as f32;
            }
        }
        Ok(Spectrogram {
            rows: n_mfcc,
            frames,
            data,
        })
    }
}

impl MelExtractor {
    /// Log-mel of every WAV file (mixed to mono; resampled when its rate differs from the
    /// configuration's), computed in parallel; each file's own result, so one bad file
    /// does not stop the others.
    pub fn log_mel_files<P: AsRef<std::path::Path> + Sync>(
        &self,
        paths: &[P],
        db: &DbConfig,
    ) -> Vec<Result<Spectrogram>> {
        use rayon::prelude::*;
        paths
            .par_iter()
            .map(|path| {
                let clip = crate::read_wav_mono(path)?;
                let samples = if clip.sample_rate == self.config.sample_rate {
                    clip.samples
                } else {
                    crate::resample(&clip.samples, clip.sample_rate, self.config.sample_rate)?
                };
                self.log_mel(&samples, db)
            })
            .collect()
    }
}

/// `10 · log10(max(amin, S) / ref)`, clipped to `top_db` below the maximum
/// (`librosa.power_to_db`).
pub fn power_to_db(spectrogram: &Spectrogram, db: &DbConfig) -> Spectrogram {
    let amin = db.amin;
    let reference = match db.reference {
        DbReference::Value(v) => v.abs(),
        DbReference::Max => spectrogram.data.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs())),
    };
    let offset = 10.0 * amin.max(reference).log10();
    let mut values: Vec<f64> = spectrogram
        .data
        .iter()
        .map(|&v| 10.0 * amin.max(f64::from(v)).log10() - offset)
        .collect();
    if let Some(top_db) = db.top_db {
        let peak = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for v in &mut values {
            *v = v.max(peak - top_db);
        }
    }
    Spectrogram {
        rows: spectrogram.rows,
        frames: spectrogram.frames,
        data: values.into_iter().map(|v| v as f32).collect(),
    }
}

/// A fixed `rows × width` image of a spectrogram (MultiBench's AV-MNIST feeds audio as a
/// fixed-size spectrogram image): frames beyond `width` are cut, missing ones are filled
/// with the spectrogram's minimum (silence in dB).
pub fn fixed_width(spectrogram: &Spectrogram, width: usize) -> Spectrogram {
    let floor = spectrogram.data.iter().copied().fold(f32::INFINITY, f32::min);
    let mut data = vec![floor; spectrogram.rows * width];
    let keep = spectrogram.frames.min(width);
    for r in 0..spectrogram.rows {
        let source = &spectrogram.data[r * spectrogram.frames..r * spectrogram.frames + keep];
        data[r * width..r * width + keep].copy_from_slice(source);
    }
    Spectrogram {
        rows: spectrogram.rows,
        frames: width,
        data,
    }
}

/// Pads with zeros or trims the end so the clip lasts exactly `seconds`.
pub fn fit_duration(samples: &[f32], sample_rate: u32, seconds: f64) -> Vec<f32> {
    let target = (seconds * f64::from(sample_rate)).round().max(0.0) as usize;
    let mut out: Vec<f32> = samples.iter().copied().take(target).collect();
    out.resize(target, 0.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scales_by_hand() {
        // Slaney: linear at 200/3 Hz per mel below 1 kHz (15 mel), logarithmic above.
        assert!((hz_to_mel(1000.0, MelScale::Slaney) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(500.0, MelScale::Slaney) - 7.5).abs() < 1e-12);
        assert!(
            (hz_to_mel(6400.0, MelScale::Slaney) - 42.0).abs() < 1e-9,
            "15 + 27 mel per factor 6.4"
        );
        assert!((hz_to_mel(700.0, MelScale::Htk) - 2595.0 * 2f64.log10()).abs() < 1e-9);
        for scale in [MelScale::Slaney, MelScale::Htk] {
            for hz in [0.0, 123.0, 999.0, 1000.0, 4321.0] {
                assert!((mel_to_hz(hz_to_mel(hz, scale), scale) - hz).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn one_htk_filter_by_hand() {
        // 8 kHz, n_fft 8: bins at 0, 1, 2, 3, 4 kHz; one filter from 0 to 4 kHz peaking at
        // the mel midpoint.
        let weights = mel_filterbank(8000, 8, 1, 0.0, 4000.0, MelScale::Htk, MelNorm::None);
        let center = 700.0 * (10f64.powf(2595.0 * (1.0 + 4000.0 / 700.0f64).log10() / 2.0 / 2595.0) - 1.0);
        let expected = [
            0.0,
            1000.0 / center,
            2000.0 / (4000.0 - center),
            1000.0 / (4000.0 - center),
            0.0,
        ];
        for (w, e) in weights.iter().zip(expected) {
            assert!((w - e).abs() < 1e-12, "{weights:?} vs {expected:?}");
        }
        let slaney = mel_filterbank(8000, 8, 1, 0.0, 4000.0, MelScale::Htk, MelNorm::Slaney);
        assert!(
            (slaney[1] - expected[1] * 2.0 / 4000.0).abs() < 1e-15,
            "divided by half the width"
        );
    }

    #[test]
    fn stft_of_a_constant_by_hand() -> Result<()> {
        // No centring, n_fft 8, hop 4: a periodic Hann window sums to 4, so DC power is 16.
        let config = MelConfig {
            n_fft: 8,
            hop_length: 4,
            n_mels: 2,
            center: false,
            ..MelConfig::new(8000)
        };
        let spectrum = MelExtractor::new(config)?.spectrogram(&[1.0; 16])?;
        assert_eq!((spectrum.rows, spectrum.frames), (5, 3));
        for t in 0..3 {
            assert!((spectrum.get(0, t) - 16.0).abs() < 1e-9);
            assert!(
                (spectrum.get(1, t) - 4.0).abs() < 1e-9,
                "the window leaks (N/4)² into bin 1"
            );
            assert!(spectrum.get(2, t).abs() < 1e-9);
        }
        Ok(())
    }

    #[test]
    fn reflect_padding_mirrors_without_the_edge() -> Result<()> {
        let base = MelConfig {
            n_fft: 4,
            hop_length: 2,
            n_mels: 1,
            ..MelConfig::new(8000)
        };
        let reflect = MelExtractor::new(MelConfig {
            pad_mode: PadMode::Reflect,
            ..base.clone()
        })?;
        let constant = MelExtractor::new(base)?;
        // [1, 2, 3, 4, 5] reflected by 2: [3, 2 | 1 2 3 4 5 | 4, 3]; frame 0 = [3, 2, 1, 2].
        let by_hand = {
            let manual = MelConfig {
                n_fft: 4,
                hop_length: 2,
                n_mels: 1,
                center: false,
                ..MelConfig::new(8000)
            };
            MelExtractor::new(manual)?.spectrogram(&[3.0, 2.0, 1.0, 2.0])?
        };
        let padded = reflect.spectrogram(&[1.0, 2.0, 3.0, 4.0, 5.0])?;
        for k in 0..3 {
            assert!((padded.get(k, 0) - by_hand.get(k, 0)).abs() < 1e-5);
        }
        assert_ne!(padded, constant.spectrogram(&[1.0, 2.0, 3.0, 4.0, 5.0])?);
        assert!(reflect.spectrogram(&[1.0, 2.0]).is_err(), "too short to reflect");
        Ok(())
    }

    #[test]
    fn impossible_settings_and_inputs_are_errors() {
        let base = MelConfig::new(8000);
        for bad in [
            MelConfig {
                n_fft: 0,
                ..base.clone()
            },
            MelConfig {
                hop_length: 0,
                ..base.clone()
            },
            MelConfig {
                win_length: Some(4096),
                ..base.clone()
            },
            MelConfig {
                fmin: 3000.0,
                fmax: Some(2000.0),
                ..base.clone()
            },
            MelConfig {
                fmax: Some(5000.0),
                ..base.clone()
            },
            MelConfig {
                sample_rate: 0,
                ..base.clone()
            },
        ] {
            assert!(matches!(MelExtractor::new(bad), Err(Error::InvalidSetting(_))));
        }
        let extractor = MelExtractor::new(base).ok();
        assert!(extractor.as_ref().is_some_and(|e| e.spectrogram(&[]).is_err()));
        assert!(
            extractor
                .as_ref()
                .is_some_and(|e| e.mfcc(&[0.1; 4000], 129, &DbConfig::default()).is_err())
        );
    }

    #[test]
    fn db_conversion_and_fixed_shapes() {
        let spectrogram = Spectrogram {
            rows: 1,
            frames: 4,
            data: vec![1.0, 0.1, 1e-12, 100.0],
        };
        let db = power_to_db(&spectrogram, &DbConfig::default());
        assert_eq!(
            db.data,
            [0.0, -10.0, -60.0, 20.0],
            "1e-12 floors at -100 dB, then top_db clips to 20 - 80"
        );
        let relative = power_to_db(
            &spectrogram,
            &DbConfig {
                reference: DbReference::Max,
                top_db: None,
                ..Default::default()
            },
        );
        assert_eq!(relative.data, [-20.0, -30.0, -120.0, 0.0]);
        let wide = fixed_width(&db, 6);
        assert_eq!(wide.data, [0.0, -10.0, -60.0, 20.0, -60.0, -60.0]);
        assert_eq!(fixed_width(&db, 2).data, [0.0, -10.0]);
        assert_eq!(fit_duration(&[1.0, 2.0, 3.0], 2, 2.5), [1.0, 2.0, 3.0, 0.0, 0.0]);
        assert_eq!(fit_duration(&[1.0, 2.0, 3.0], 2, 0.5), [1.0]);
    }
}
