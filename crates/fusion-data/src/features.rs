//! Model inputs from a manifest: each record's files turned into fixed-size `f32` vectors,
//! extracted in parallel and cached on disk.
//!
//! The cache is content-addressed: a feature vector is stored under the SHA-256 of the
//! source file's bytes (or the inline text) in a folder named by the hash of the feature
//! configuration, in safetensors shards. Renaming or moving files, rebuilding a manifest or
//! running on another machine reuses it; editing a file or changing the configuration
//! misses it. Shards are written atomically under names derived from their contents, so
//! several processes (`shard i/n`) or machines can fill one cache and folders can be merged
//! by copying.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, FeatureError, Manifest, Modality, Problem, Record, Result, Split};

/// How one modality's files become model inputs. Every kind has a shape ([`Self::shape`]);
/// the values are stored flat in that shape's row-major order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureConfig {
    /// An image resized (antialiased bilinear) to `size × size`, grey or RGB, values in
    /// `[0, 1]`: a flat vector `[C·size·size]` (channels first) for MLP encoders.
    Pixels {
        /// Output side in pixels.
        size: u32,
        /// One luminance channel instead of RGB.
        #[serde(default = "yes")]
        grey: bool,
    },
    /// An image resized (antialiased bilinear) to `size × size` as `[C, size, size]`, for
    /// CNN encoders: values in `[0, 1]`, or ImageNet-normalised for pretrained networks.
    Image {
        /// Output side in pixels.
        size: u32,
        /// One luminance channel instead of RGB.
        #[serde(default)]
        grey: bool,
        /// Per-channel normalisation after scaling to `[0, 1]`.
        #[serde(default)]
        normalize: ImageNormalization,
    },
    /// A log-mel spectrogram of the mono signal at `sample_rate`, `[frames, n_mels]` (time
    /// first, as the audio encoders read it; longer clips cut, shorter ones padded with the
    /// clip's quietest value), in dB relative to the clip's peak with an 80 dB floor, mapped
    /// to `[0, 1]`. With `n_mels = frames = 112` it is MultiBench's spectrogram picture.
    LogMel(LogMelConfig),
    /// The same log-mel picture of a video file's own sound track (read from the
    /// record's `video` field; a clip without sound is a missing modality).
    SoundTrack(LogMelConfig),
    /// Statistics of the clip's log-mel bands over its own frames (at most `frames` of
    /// them; never the padding): per band the mean and standard deviation, and the mean
    /// absolute value and standard deviation of the frame-to-frame change, `[4 · n_mels]`
    /// on the same `[0, 1]` scale. What a linear model on speech reads well: cheap, fixed
    /// size, no training of a network over time.
    LogMelStats(LogMelConfig),
    /// Hashed bag of lower-cased words and word bigrams (FNV-1a into `dim` buckets),
    /// L2-normalised.
    HashedWords {
        /// Buckets.
        dim: usize,
    },
    /// Token ids `[T]` (at most `max_len`, special tokens included) from a
    /// `tokenizer.json`; batches pad them and carry a padding mask. Stored as `f32` (exact
    /// for ids below 2^24) and handed to encoders as int64.
    Tokens {
        /// The `tokenizer.json` (relative to the run configuration).
        tokenizer: PathBuf,
        /// Longest encoding kept.
        #[serde(default = "default_max_tokens")]
        max_len: usize,
    },
    /// `frames` frames spread uniformly over a video, `size × size`, values in `[0, 1]`
    /// (or ImageNet-normalised), `[frames, C, size, size]` (grey: one channel).
    VideoFrames {
        /// Frames kept.
        frames: usize,
        /// Output side in pixels.
        size: u32,
        /// One luminance channel instead of RGB.
        #[serde(default = "yes")]
        grey: bool,
        /// Per-channel normalisation after scaling to `[0, 1]` (ImageNet's for a
        /// pretrained frame encoder).
        #[serde(default, skip_serializing_if = "ImageNormalization::is_none")]
        normalize: ImageNormalization,
    },
    /// The record's table cells as one vector (see `fusion-tabular`): per numeric column
    /// the standardised value and a missing-value indicator, per categorical column the
    /// category's id (0: missing or unseen). Statistics not given are fitted on the
    /// training records when a run starts, and saved with the run.
    Table {
        /// The columns, in vector order.
        columns: Vec<fusion_tabular::Column>,
    },
}

/// Settings of a log-mel spectrogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogMelConfig {
    /// Rate the audio is resampled to.
    pub sample_rate: u32,
    /// Mel bands.
    pub n_mels: usize,
    /// Frames kept.
    pub frames: usize,
    /// FFT size.
    #[serde(default = "default_n_fft")]
    pub n_fft: usize,
    /// Hop between frames, in samples.
    #[serde(default = "default_hop")]
    pub hop_length: usize,
}

/// Per-channel normalisation of [`FeatureConfig::Image`] and [`FeatureConfig::VideoFrames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageNormalization {
    /// Values in `[0, 1]`.
    #[default]
    None,
    /// ImageNet mean and standard deviation (what pretrained ImageNet networks expect).
    Imagenet,
}

impl ImageNormalization {
    /// Whether values stay in `[0, 1]`.
    pub fn is_none(&self) -> bool {
        *self == Self::None
    }
}

#[cfg(any(feature = "image", feature = "video"))]
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
#[cfg(any(feature = "image", feature = "video"))]
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

fn yes() -> bool {
    true
}
fn default_n_fft() -> usize {
    256
}
fn default_hop() -> usize {
    128
}
fn default_max_tokens() -> usize {
    128
}

/// Version of the feature computations, part of every cache key: bump it whenever
/// [`FeatureConfig::compute`] (or a fixed setting it uses) changes, so that old vectors are
/// not reused. 2: log-mel stored time first.
pub const FEATURE_VERSION: u32 = 2;

/// Largest feature vector a configuration may ask for (a typo like `size: 28000` would
/// otherwise allocate gigabytes per sample).
pub const MAX_FEATURE_DIM: usize = 1 << 22;

/// Largest token id stored exactly as `f32`.
#[cfg(feature = "text")]
const MAX_TOKEN_ID: u32 = 1 << 24;

/// What a feature computation needs beyond the configuration, loaded once per extraction.
#[derive(Debug, Default)]
pub struct Prepared {
    #[cfg(feature = "text")]
    tokenizer: Option<fusion_text::TextTokenizer>,
    /// Log-mel's FFT plan, window and filters.
    #[cfg(feature = "audio")]
    mel: Option<fusion_audio::MelExtractor>,
    /// The limits files are decoded within (set by [`extract`]; the defaults otherwise).
    limits: crate::Limits,
}

impl FeatureConfig {
    /// Shape of one sample's features; for [`Self::Tokens`] the longest (sequences are
    /// shorter when the text is).
    pub fn shape(&self) -> Vec<usize> {
        let side = *match self {
            Self::Pixels { size, .. } | Self::Image { size, .. } | Self::VideoFrames { size, .. } => size,
            _ => &0,
        } as usize;
        let channels = |grey: bool| if grey { 1 } else { 3 };
        match self {
            Self::Pixels { grey, .. } => vec![side.saturating_mul(side).saturating_mul(channels(*grey))],
            Self::Image { grey, .. } => vec![channels(*grey), side, side],
            Self::LogMel(mel) | Self::SoundTrack(mel) => vec![mel.frames, mel.n_mels],
            Self::LogMelStats(mel) => vec![mel.n_mels.saturating_mul(STATS_PER_BAND)],
            Self::HashedWords { dim } => vec![*dim],
            Self::Tokens { max_len, .. } => vec![*max_len],
            Self::VideoFrames { frames, grey, .. } => vec![*frames, channels(*grey), side, side],
            Self::Table { columns } => vec![fusion_tabular::row_width(columns)],
        }
    }

    /// Whether samples differ in length along the first axis (padded per batch).
    pub fn variable_length(&self) -> bool {
        matches!(self, Self::Tokens { .. })
    }

    /// Whether each value gets its own scale when a model standardises these features
    /// (statistics of different kinds side by side); otherwise one scale for all, which
    /// keeps a picture's values comparable.
    pub fn scaled_per_value(&self) -> bool {
        matches!(self, Self::LogMelStats(_))
    }

    /// Whether the values are integer ids (handed to encoders as int64).
    pub fn integer(&self) -> bool {
        matches!(self, Self::Tokens { .. })
    }

    /// Number of values per sample (the most, for variable lengths).
    pub fn dim(&self) -> usize {
        self.shape().iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }

    /// The manifest field these features are made from.
    pub fn modality(&self) -> Modality {
        match self {
            Self::Pixels { .. } | Self::Image { .. } => Modality::Image,
            Self::LogMel(_) | Self::LogMelStats(_) => Modality::Audio,
            Self::HashedWords { .. } | Self::Tokens { .. } => Modality::Text,
            Self::VideoFrames { .. } | Self::SoundTrack(_) => Modality::Video,
            Self::Table { .. } => Modality::Table,
        }
    }

    /// The modality name a run gives these features: the manifest field, or `sound_track`
    /// for the sound of the video field.
    pub fn default_name(&self) -> &'static str {
        match self {
            Self::SoundTrack(_) => "sound_track",
            other => other.modality().name(),
        }
    }

    /// The configuration's name as written (`pixels`, `log_mel`…).
    pub fn kind_name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
            .unwrap_or_default()
    }

    /// Checks sizes, naming the offending field under `field`.
    pub fn validate(&self, field: &str) -> Result<()> {
        let bad = |name: &str, why: String| Err(Error::Config(format!("{field}.{name}: {why}")));
        let dim = self.dim();
        if self.shape().contains(&0) || dim > MAX_FEATURE_DIM {
            return bad(
                "kind",
                format!(
                    "shape {:?} per sample; each size ≥ 1, at most {MAX_FEATURE_DIM} values",
                    self.shape()
                ),
            );
        }
        #[cfg(feature = "audio")]
        if let Self::LogMel(mel) | Self::SoundTrack(mel) | Self::LogMelStats(mel) = self
            && let Err(e) = mel.extractor()
        {
            return bad("sample_rate/n_fft/hop_length/n_mels", e.to_string());
        }
        if let Self::Tokens { tokenizer, .. } = self
            && !tokenizer.is_file()
        {
            return bad("tokenizer", format!("{} is not a file", tokenizer.display()));
        }
        if let Self::Table { columns } = self {
            fusion_tabular::check_columns(columns).map_err(|e| Error::Config(format!("{field}.columns: {e}")))?;
        }
        Ok(())
    }

    /// Hex SHA-256 of the configuration, [`FEATURE_VERSION`] and, for tokens, the
    /// tokenizer file's bytes: the cache folder's name.
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(FEATURE_VERSION.to_le_bytes());
        let mut described = self.clone();
        if let Self::Tokens { tokenizer, max_len } = self {
            // The file's content, not where it lies, decides the ids.
            hasher.update(std::fs::read(tokenizer).unwrap_or_default());
            described = Self::Tokens {
                tokenizer: PathBuf::new(),
                max_len: *max_len,
            };
        }
        hasher.update(serde_json::to_vec(&described).unwrap_or_default());
        hex(&hasher.finalize())
    }

    /// Loads what computing these features needs (a tokenizer, log-mel's filters), once.
    pub fn prepare(&self) -> Result<Prepared> {
        match self {
            #[cfg(feature = "text")]
            Self::Tokens { tokenizer, max_len } => Ok(Prepared {
                tokenizer: Some(
                    fusion_text::TextTokenizer::from_file(tokenizer, *max_len)
                        .map_err(|e| Error::Config(format!("tokenizer {}: {e}", tokenizer.display())))?,
                ),
                ..Prepared::default()
            }),
            #[cfg(not(feature = "text"))]
            Self::Tokens { .. } => Err(Error::Config(missing_feature("text"))),
            #[cfg(feature = "audio")]
            Self::LogMel(mel) | Self::LogMelStats(mel) | Self::SoundTrack(mel) => Ok(Prepared {
                mel: Some(mel.extractor().map_err(|e| Error::Config(format!("log-mel: {e}")))?),
                ..Prepared::default()
            }),
            _ => Ok(Prepared::default()),
        }
    }

    /// Features of one source: `bytes` is the file's content (or the inline text) and
    /// `path` names it in errors (and is where video is decoded from). Loads a tokenizer
    /// per call: extraction uses [`Self::compute_prepared`].
    pub fn compute(&self, bytes: &[u8], path: &Path) -> std::result::Result<Vec<f32>, FeatureError> {
        let prepared = self.prepare().map_err(|e| FeatureError::Prepare(Box::new(e)))?;
        self.compute_present(&prepared, bytes, path)
    }

    /// [`Self::compute`] with what [`Self::prepare`] loaded; `None` when the source lacks
    /// what these features read (a video without sound): a missing modality.
    pub fn compute_prepared(
        &self,
        prepared: &Prepared,
        bytes: &[u8],
        path: &Path,
    ) -> std::result::Result<Option<Vec<f32>>, FeatureError> {
        if let Self::SoundTrack(mel) = self {
            return sound_track_of(mel, path, prepared);
        }
        self.compute_present(prepared, bytes, path).map(Some)
    }

    fn compute_present(
        &self,
        prepared: &Prepared,
        bytes: &[u8],
        path: &Path,
    ) -> std::result::Result<Vec<f32>, FeatureError> {
        match self {
            Self::Pixels { size, grey } => {
                image_values(bytes, path, *size, *grey, ImageNormalization::None, &prepared.limits)
            }
            Self::Image { size, grey, normalize } => {
                image_values(bytes, path, *size, *grey, *normalize, &prepared.limits)
            }
            Self::LogMel(mel) => log_mel_of(mel, bytes, path, prepared),
            Self::LogMelStats(mel) => log_mel_stats_of(mel, bytes, path, prepared),
            // A video without sound is an error here; compute_prepared makes it a missing modality.
            Self::SoundTrack(mel) => {
                sound_track_of(mel, path, prepared)?.ok_or(FeatureError::Empty("the video has no sound track"))
            }
            Self::HashedWords { dim } => hashed_words(std::str::from_utf8(bytes)?, *dim),
            Self::Tokens { .. } => tokens_of(prepared, bytes),
            Self::VideoFrames {
                frames,
                size,
                grey,
                normalize,
            } => frames_of(*frames, *size, *grey, *normalize, path, &prepared.limits),
            Self::Table { columns } => {
                let cells: BTreeMap<String, String> =
                    serde_json::from_slice(bytes).map_err(FeatureError::TableCells)?;
                Ok(fusion_tabular::encode_row(columns, &cells)?)
            }
        }
    }
}

/// Why a kind of features cannot be computed by this build.
#[allow(dead_code)]
fn missing_feature(feature: &str) -> String {
    format!("fusion-data was built without the `{feature}` feature")
}

/// Statistics per mel band of [`FeatureConfig::LogMelStats`].
const STATS_PER_BAND: usize = 4;

/// The mono signal of a WAV file at `mel`'s sample rate.
#[cfg(feature = "audio")]
fn samples_of(
    mel: &LogMelConfig,
    bytes: &[u8],
    path: &Path,
    limits: &crate::Limits,
) -> std::result::Result<Vec<f32>, FeatureError> {
    let clip = fusion_audio::read_wav_bytes(bytes, path, &limits.wav())?.to_mono();
    if clip.sample_rate == mel.sample_rate {
        Ok(clip.samples)
    } else {
        Ok(fusion_audio::resample(
            &clip.samples,
            clip.sample_rate,
            mel.sample_rate,
        )?)
    }
}

#[cfg(feature = "audio")]
fn log_mel_of(
    mel: &LogMelConfig,
    bytes: &[u8],
    path: &Path,
    prepared: &Prepared,
) -> std::result::Result<Vec<f32>, FeatureError> {
    mel.compute(&samples_of(mel, bytes, path, &prepared.limits)?, prepared.mel.as_ref())
}

#[cfg(feature = "audio")]
fn log_mel_stats_of(
    mel: &LogMelConfig,
    bytes: &[u8],
    path: &Path,
    prepared: &Prepared,
) -> std::result::Result<Vec<f32>, FeatureError> {
    mel.statistics(&samples_of(mel, bytes, path, &prepared.limits)?, prepared.mel.as_ref())
}

#[cfg(not(feature = "audio"))]
fn log_mel_of(_: &LogMelConfig, _: &[u8], _: &Path, _: &Prepared) -> std::result::Result<Vec<f32>, FeatureError> {
    Err(FeatureError::MissingFeature("audio"))
}

#[cfg(not(feature = "audio"))]
fn log_mel_stats_of(_: &LogMelConfig, _: &[u8], _: &Path, _: &Prepared) -> std::result::Result<Vec<f32>, FeatureError> {
    Err(FeatureError::MissingFeature("audio"))
}

#[cfg(all(feature = "audio", feature = "video"))]
fn sound_track_of(
    mel: &LogMelConfig,
    path: &Path,
    prepared: &Prepared,
) -> std::result::Result<Option<Vec<f32>>, FeatureError> {
    match fusion_video::read_sound_track_within(path, mel.sample_rate, &prepared.limits.video()) {
        Ok(Some(track)) => mel.compute(&track.samples, prepared.mel.as_ref()).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(all(feature = "audio", feature = "video")))]
fn sound_track_of(_: &LogMelConfig, _: &Path, _: &Prepared) -> std::result::Result<Option<Vec<f32>>, FeatureError> {
    Err(FeatureError::MissingFeature("audio` and `video"))
}

#[cfg(feature = "text")]
fn tokens_of(prepared: &Prepared, bytes: &[u8]) -> std::result::Result<Vec<f32>, FeatureError> {
    let text = std::str::from_utf8(bytes)?;
    let tokenizer = prepared
        .tokenizer
        .as_ref()
        .ok_or(FeatureError::NotPrepared("tokenizer"))?;
    let batch = tokenizer.encode_batch(&[text])?;
    if batch.ids.is_empty() {
        return Err(FeatureError::Empty("the text gives no tokens"));
    }
    batch
        .ids
        .iter()
        .map(|&id| {
            u32::try_from(id)
                .ok()
                .filter(|&id| id < MAX_TOKEN_ID)
                .map(|id| id as f32)
                .ok_or(FeatureError::TokenId(id))
        })
        .collect()
}

#[cfg(not(feature = "text"))]
fn tokens_of(_: &Prepared, _: &[u8]) -> std::result::Result<Vec<f32>, FeatureError> {
    Err(FeatureError::MissingFeature("text"))
}

#[cfg(feature = "video")]
fn frames_of(
    frames: usize,
    size: u32,
    grey: bool,
    normalize: ImageNormalization,
    path: &Path,
    limits: &crate::Limits,
) -> std::result::Result<Vec<f32>, FeatureError> {
    let frame_size = fusion_video::FrameSize {
        width: size,
        height: size,
        fit: fusion_video::Fit::Stretch,
    };
    let sampling = fusion_video::Sampling::Uniform(frames);
    let decoded = fusion_video::read_frames_within(path, sampling, Some(frame_size), &limits.video())?;
    if decoded.timestamps.is_empty() {
        return Err(FeatureError::Empty("no frame could be decoded"));
    }
    // Grey as PIL's L; a short clip repeats its last frame.
    let values: Vec<f32> = match (grey, normalize) {
        (true, ImageNormalization::None) => decoded
            .rgb
            .chunks_exact(3)
            .map(|p| (f32::from(p[0]) * 299.0 + f32::from(p[1]) * 587.0 + f32::from(p[2]) * 114.0) / 255_000.0)
            .collect(),
        (true, ImageNormalization::Imagenet) => {
            return Err(FeatureError::GreyImagenet);
        }
        (false, ImageNormalization::None) => decoded.to_chw([0.0; 3], [1.0; 3]),
        (false, ImageNormalization::Imagenet) => decoded.to_chw(IMAGENET_MEAN, IMAGENET_STD),
    };
    let per_frame = values.len() / decoded.timestamps.len();
    let mut out = Vec::with_capacity(frames * per_frame);
    for t in 0..frames {
        let source = t.min(decoded.timestamps.len() - 1);
        out.extend_from_slice(&values[source * per_frame..(source + 1) * per_frame]);
    }
    Ok(out)
}

#[cfg(not(feature = "video"))]
fn frames_of(
    _: usize,
    _: u32,
    _: bool,
    _: ImageNormalization,
    _: &Path,
    _: &crate::Limits,
) -> std::result::Result<Vec<f32>, FeatureError> {
    Err(FeatureError::MissingFeature("video"))
}

#[cfg(feature = "audio")]
impl LogMelConfig {
    fn extractor(&self) -> std::result::Result<fusion_audio::MelExtractor, fusion_audio::Error> {
        let mut mel = fusion_audio::MelConfig::new(self.sample_rate);
        mel.n_fft = self.n_fft;
        mel.hop_length = self.hop_length;
        mel.n_mels = self.n_mels;
        fusion_audio::MelExtractor::new(mel)
    }

    /// The clip's log-mel bands first `[n_mels, T]` (T its own frames), in dB relative
    /// to its peak with an 80 dB floor, mapped to `[0, 1]`.
    fn scaled_log_mel(
        &self,
        samples: &[f32],
        prepared: Option<&fusion_audio::MelExtractor>,
    ) -> std::result::Result<fusion_audio::Spectrogram, FeatureError> {
        if samples.is_empty() {
            return Err(FeatureError::Empty("the recording has no samples"));
        }
        let built;
        let extractor = match prepared {
            Some(extractor) => extractor,
            None => {
                built = self.extractor()?;
                &built
            }
        };
        let db = fusion_audio::DbConfig {
            reference: fusion_audio::DbReference::Max,
            amin: 1e-10,
            top_db: Some(80.0),
        };
        let mut log_mel = extractor.log_mel(samples, &db)?;
        let peak = log_mel.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for value in &mut log_mel.data {
            *value = ((*value - peak + 80.0) / 80.0).clamp(0.0, 1.0);
        }
        Ok(log_mel)
    }

    /// `[frames, n_mels]`, time first, of a mono signal at `sample_rate`.
    fn compute(
        &self,
        samples: &[f32],
        prepared: Option<&fusion_audio::MelExtractor>,
    ) -> std::result::Result<Vec<f32>, FeatureError> {
        let fixed = fusion_audio::fixed_width(&self.scaled_log_mel(samples, prepared)?, self.frames);
        // The spectrogram is bands first: transpose to frames first.
        let mut out = Vec::with_capacity(fixed.rows * fixed.frames);
        for t in 0..fixed.frames {
            for r in 0..fixed.rows {
                out.push(fixed.data[r * fixed.frames + t]);
            }
        }
        Ok(out)
    }

    /// `[4 · n_mels]`: per band, over the clip's first `frames` frames, the mean and
    /// standard deviation of the level, then the mean absolute value and standard
    /// deviation of its change from one frame to the next.
    fn statistics(
        &self,
        samples: &[f32],
        prepared: Option<&fusion_audio::MelExtractor>,
    ) -> std::result::Result<Vec<f32>, FeatureError> {
        let log_mel = self.scaled_log_mel(samples, prepared)?;
        let frames = log_mel.frames.min(self.frames);
        let mut out = vec![0f32; log_mel.rows * STATS_PER_BAND];
        if frames == 0 {
            return Ok(out);
        }
        let moments = |values: &mut dyn Iterator<Item = f32>| {
            let (mut n, mut sum, mut squares, mut absolute) = (0f64, 0f64, 0f64, 0f64);
            for v in values {
                let v = f64::from(v);
                n += 1.0;
                sum += v;
                squares += v * v;
                absolute += v.abs();
            }
            if n == 0.0 {
                return (0.0, 0.0, 0.0);
            }
            let mean = sum / n;
            (
                (mean) as f32,
                (squares / n - mean * mean).max(0.0).sqrt() as f32,
                (absolute / n) as f32,
            )
        };
        for band in 0..log_mel.rows {
            let row = &log_mel.data[band * log_mel.frames..band * log_mel.frames + frames];
            let (mean, std, _) = moments(&mut row.iter().copied());
            let (_, change_std, change_abs) = moments(&mut row.windows(2).map(|w| w[1] - w[0]));
            out[band] = mean;
            out[log_mel.rows + band] = std;
            out[2 * log_mel.rows + band] = change_abs;
            out[3 * log_mel.rows + band] = change_std;
        }
        Ok(out)
    }
}

#[cfg(not(feature = "image"))]
fn image_values(
    _: &[u8],
    _: &Path,
    _: u32,
    _: bool,
    _: ImageNormalization,
    _: &crate::Limits,
) -> std::result::Result<Vec<f32>, FeatureError> {
    Err(FeatureError::MissingFeature("image"))
}

#[cfg(feature = "image")]
fn image_values(
    bytes: &[u8],
    path: &Path,
    size: u32,
    grey: bool,
    normalize: ImageNormalization,
    limits: &crate::Limits,
) -> std::result::Result<Vec<f32>, FeatureError> {
    let decoded = fusion_image::decode_bytes(bytes, path, limits.image_pixels)?;
    let channels = if grey { 1 } else { 3 };
    let (mean, std) = match normalize {
        ImageNormalization::None => (vec![0.0; channels], vec![1.0; channels]),
        ImageNormalization::Imagenet if grey => {
            let luminance = |v: [f32; 3]| v[0] * 0.299 + v[1] * 0.587 + v[2] * 0.114;
            (vec![luminance(IMAGENET_MEAN)], vec![luminance(IMAGENET_STD)])
        }
        ImageNormalization::Imagenet => (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec()),
    };
    let pipeline = fusion_image::Pipeline {
        channels: if grey {
            fusion_image::Channels::Grey
        } else {
            fusion_image::Channels::Rgb
        },
        resize: fusion_image::Resize::Exact {
            width: size,
            height: size,
        },
        filter: fusion_image::Filter::Bilinear,
        crop: fusion_image::Crop::None,
        flip_probability: 0.0,
        mean,
        std,
        pixel_budget: fusion_image::DEFAULT_PIXEL_BUDGET,
    };
    Ok(pipeline.apply(&decoded, 0)?.data)
}

fn hashed_words(text: &str, dim: usize) -> std::result::Result<Vec<f32>, FeatureError> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        return Err(FeatureError::Empty("the text has no words"));
    }
    let fnv = |s: &str| {
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    let mut out = vec![0f32; dim];
    for word in &words {
        out[(fnv(word) % dim as u64) as usize] += 1.0;
    }
    for pair in words.windows(2) {
        out[(fnv(&format!("{} {}", pair[0], pair[1])) % dim as u64) as usize] += 1.0;
    }
    let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
    out.iter_mut().for_each(|v| *v /= norm);
    Ok(out)
}

/// Lower-case hexadecimal of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One modality to extract: its name in reports and its feature configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    /// Modality name (`image`, `audio`, `text`, `video`).
    pub name: String,
    /// How its files become features.
    pub config: FeatureConfig,
}

/// Which part of the records to extract: records whose index modulo `count` is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's part, `0..count`.
    pub index: usize,
    /// Number of parts.
    pub count: usize,
}

impl Shard {
    /// How many of `records` records fall in this part.
    pub fn share_of(&self, records: usize) -> usize {
        records.saturating_sub(self.index).div_ceil(self.count)
    }
}

/// A `--shard` that is not `i/n` with `0 ≤ i < n`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadShard(pub String);

impl std::str::FromStr for Shard {
    type Err = BadShard;

    /// Parses `i/n`.
    fn from_str(text: &str) -> std::result::Result<Self, BadShard> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| BadShard(format!("shard `{text}` is not i/n")))?;
        let index = i
            .trim()
            .parse()
            .map_err(|_| BadShard(format!("shard index `{i}` is not a number")))?;
        let count = n
            .trim()
            .parse()
            .map_err(|_| BadShard(format!("shard count `{n}` is not a number")))?;
        if count == 0 || index >= count {
            return Err(BadShard(format!("shard {index}/{count}: need 0 ≤ i < n")));
        }
        Ok(Self { index, count })
    }
}

/// Features of the good records of a manifest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Extraction {
    /// The records with at least one configured modality extracted, in manifest order.
    pub records: Vec<Record>,
    /// Per modality (in the order asked), per kept record: the features, `None` where the
    /// record has no such modality or its file could not be used (see [`Self::absent`]).
    pub features: Vec<Vec<Option<Vec<f32>>>>,
    /// Per modality, per kept record: the SHA-256 of the source's bytes (the cache key).
    pub keys: Vec<Vec<Option<String>>>,
    /// Records left out, with the reason: each of their unusable files (missing,
    /// undecodable, over a limit), or the record itself when it has none of the configured
    /// modalities. A record may appear more than once.
    pub problems: Vec<Problem>,
    /// Files of kept records that could not be used: that modality is absent for that
    /// record (the fusion methods handle absence), its other modalities are kept.
    pub absent: Vec<Problem>,
    /// Feature vectors read from the cache.
    pub cached: usize,
    /// Feature vectors computed (and written to the cache).
    pub computed: usize,
    /// Cache writes that failed (the features are still returned: the cache is only a
    /// speed-up).
    pub cache_errors: Vec<String>,
}

impl Extraction {
    /// Leaves out every record with an unusable file, as if each were wholly bad (for
    /// those who would rather lose the record than train on what is left of it).
    pub fn skip_records_with_absent_files(&mut self) {
        let bad: std::collections::HashSet<&str> = self.absent.iter().map(|p| p.id.as_str()).collect();
        let keep: Vec<bool> = self.records.iter().map(|r| !bad.contains(r.id.as_str())).collect();
        fn kept<T>(column: &mut Vec<T>, keep: &[bool]) {
            let mut flags = keep.iter();
            column.retain(|_| flags.next().copied().unwrap_or(false));
        }
        for column in &mut self.features {
            kept(column, &keep);
        }
        for column in &mut self.keys {
            kept(column, &keep);
        }
        kept(&mut self.records, &keep);
        self.problems.append(&mut self.absent);
    }

    /// Indices of the kept records in `split` (records without a split count as train).
    pub fn split_indices(&self, split: Split) -> Vec<usize> {
        self.records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.split_or_train() == split)
            .map(|(i, _)| i)
            .collect()
    }
}

/// A source's bytes and the path that names it, or the path and why it cannot be read.
type Source = std::result::Result<(Vec<u8>, PathBuf), (PathBuf, String)>;

/// Where a record's modality comes from: its bytes (file content or inline text) and the
/// path that names it; `None` when the record lacks the modality.
fn source(record: &Record, modality: Modality, limits: &crate::Limits) -> Option<Source> {
    if !record.has(modality) {
        return None;
    }
    let path = match modality {
        Modality::Text => {
            if let Some(text) = &record.text {
                return Some(Ok((
                    text.as_bytes().to_vec(),
                    PathBuf::from(format!("{}:text", record.id)),
                )));
            }
            record.text_path.as_ref()?
        }
        Modality::Image => record.image.as_ref()?,
        Modality::Audio => record.audio.as_ref()?,
        Modality::Video => record.video.as_ref()?,
        Modality::Table => {
            // The cells themselves are the source (and, hashed, the cache key).
            let cells = serde_json::to_vec(&record.table).unwrap_or_default();
            return Some(Ok((cells, PathBuf::from(format!("{}:table", record.id)))));
        }
    };
    Some(
        crate::read_bounded(path, limits.bytes_of(modality))
            .map(|bytes| (bytes, path.clone()))
            .map_err(|reason| (path.clone(), reason.to_string())),
    )
}

/// The cache key (content hash) of each record's source of `modality`; `None` where the
/// record lacks it or it cannot be read (extraction reports why).
fn source_keys(records: &[&Record], modality: Modality, limits: &crate::Limits) -> Vec<Option<String>> {
    records
        .par_iter()
        .map(|record| {
            let (bytes, _) = source(record, modality, limits)?.ok()?;
            Some(hex(&Sha256::digest(&bytes)))
        })
        .collect()
}

/// An array's shape and its values in row-major order.
pub type ShapedArray = (Vec<usize>, Vec<f32>);

/// A content-addressed store of feature vectors (see the module documentation).
#[derive(Debug, Clone)]
pub struct FeatureCache {
    root: PathBuf,
}

impl FeatureCache {
    /// A cache under `root` (created when first written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder of one feature configuration.
    pub fn folder(&self, config: &FeatureConfig) -> PathBuf {
        self.named_folder(&config.hash()[..16])
    }

    /// The folder of any other content-keyed arrays (e.g. a frozen encoder's outputs).
    pub fn named_folder(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Every vector stored for `config`, by content hash. Unreadable shards are reported in
    /// the error, not skipped silently: a damaged cache should be deleted, not trusted.
    pub fn load(&self, config: &FeatureConfig) -> Result<HashMap<String, Vec<f32>>> {
        self.load_where(config, &|_| true)
    }

    /// [`Self::load`] of the vectors whose content hash is in `wanted` only: a cache that
    /// several manifests share holds the others' too.
    pub fn load_wanted(&self, config: &FeatureConfig, wanted: &HashSet<String>) -> Result<HashMap<String, Vec<f32>>> {
        self.load_where(config, &|key| wanted.contains(key))
    }

    fn load_where(&self, config: &FeatureConfig, keep: &dyn Fn(&str) -> bool) -> Result<HashMap<String, Vec<f32>>> {
        let shape = config.shape();
        let fits = |stored: &[usize]| {
            if config.variable_length() {
                stored.len() == 1 && (1..=shape[0]).contains(&stored[0])
            } else {
                stored == shape
            }
        };
        let found = self.load_named_where(&config.hash()[..16], &fits, &format!("{shape:?}"), keep)?;
        Ok(found.into_iter().map(|(key, (_, values))| (key, values)).collect())
    }

    /// Every array stored in the folder `name`, by key, with its shape; each shape must
    /// pass `fits` (described by `expected` in the error).
    pub fn load_named(
        &self,
        name: &str,
        fits: &dyn Fn(&[usize]) -> bool,
        expected: &str,
    ) -> Result<HashMap<String, ShapedArray>> {
        self.load_named_where(name, fits, expected, &|_| true)
    }

    /// [`Self::load_named`] of the keys `keep` accepts (every shard's checksum is still
    /// checked whole).
    fn load_named_where(
        &self,
        name: &str,
        fits: &dyn Fn(&[usize]) -> bool,
        expected: &str,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<HashMap<String, ShapedArray>> {
        let folder = self.named_folder(name);
        let mut found = HashMap::new();
        let Ok(entries) = std::fs::read_dir(&folder) else {
            return Ok(found);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "safetensors") {
                continue;
            }
            let broken = |reason: String| Error::Cache {
                path: path.clone(),
                reason,
            };
            let bytes = crate::read_bounded(&path, MAX_SHARD_BYTES).map_err(|e| broken(e.to_string()))?;
            let (_, metadata) =
                safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| broken(format!("{e:?}")))?;
            let stored_sum = metadata
                .metadata()
                .as_ref()
                .and_then(|m| m.get(CHECKSUM_FIELD))
                .cloned();
            let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| broken(format!("{e:?}")))?;
            let mut views = tensors.tensors();
            views.sort_by(|a, b| a.0.cmp(&b.0));
            // Shards of older versions carry no checksum; their values are still checked.
            if let Some(stored) = stored_sum {
                let actual = shard_checksum(views.iter().map(|(k, v)| (k.as_str(), v.shape(), v.data())));
                if stored != actual {
                    return Err(broken(format!(
                        "damaged: checksum {actual} does not match the stored {stored}; delete the shard"
                    )));
                }
            }
            for (key, view) in views.into_iter().filter(|(key, _)| keep(key)) {
                if view.dtype() != safetensors::Dtype::F32 || !fits(view.shape()) {
                    return Err(broken(format!(
                        "{key}: {:?} {:?}, expected F32 {expected}",
                        view.dtype(),
                        view.shape()
                    )));
                }
                let values: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                if let Some(bad) = values
                    .iter()
                    .find(|v| !v.is_finite() || v.abs() > MAX_FEATURE_MAGNITUDE)
                {
                    return Err(broken(format!(
                        "{key}: value {bad} is not a feature (finite, at most {MAX_FEATURE_MAGNITUDE} in size); delete the shard"
                    )));
                }
                found.insert(key, (view.shape().to_vec(), values));
            }
        }
        Ok(found)
    }

    /// Stores `vectors` (content hash → features) as one new shard.
    pub fn store<V: AsRef<[f32]>>(&self, config: &FeatureConfig, vectors: &BTreeMap<String, V>) -> Result<()> {
        let shape = config.shape();
        // Borrowed, not copied: a chunk of pictures is hundreds of megabytes.
        let shaped: BTreeMap<String, (Vec<usize>, &[f32])> = vectors
            .iter()
            .map(|(key, v)| {
                let v = v.as_ref();
                let shape = if config.variable_length() {
                    vec![v.len()]
                } else {
                    shape.clone()
                };
                (key.clone(), (shape, v))
            })
            .collect();
        let description = serde_json::to_value(config).unwrap_or_default();
        self.store_named(&config.hash()[..16], &shaped, &description)
    }

    /// Stores `arrays` (key → shape and values) as one new shard of the folder `name`,
    /// with `description` saved once as its `config.json`.
    pub fn store_named<V: AsRef<[f32]>>(
        &self,
        name: &str,
        arrays: &BTreeMap<String, (Vec<usize>, V)>,
        description: &serde_json::Value,
    ) -> Result<()> {
        if arrays.is_empty() {
            return Ok(());
        }
        let folder = self.named_folder(name);
        let io = |path: &Path, e: std::io::Error| Error::Cache {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
        let config_file = folder.join("config.json");
        if !config_file.exists() {
            let text = serde_json::to_string_pretty(description).unwrap_or_default();
            write_atomic(&config_file, text.as_bytes()).map_err(|e| io(&config_file, e))?;
        }
        let bytes: Vec<(String, Vec<usize>, std::borrow::Cow<'_, [u8]>)> = arrays
            .iter()
            .map(|(key, (shape, v))| (key.clone(), shape.clone(), little_endian_bytes(v.as_ref())))
            .collect();
        let views = bytes
            .iter()
            .map(|(key, shape, data)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map(|view| (key.clone(), view))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Cache {
                path: folder.clone(),
                reason: format!("{e:?}"),
            })?;
        let keys: String = arrays.keys().map(String::as_str).collect();
        let shard = format!("{}.safetensors", &hex(&Sha256::digest(keys.as_bytes()))[..24]);
        let target = folder.join(shard);
        let sum = shard_checksum(bytes.iter().map(|(k, s, d)| (k.as_str(), s.as_slice(), d.as_ref())));
        let metadata = HashMap::from([(CHECKSUM_FIELD.to_string(), sum)]);
        let data = safetensors::serialize(views, &Some(metadata)).map_err(|e| Error::Cache {
            path: target.clone(),
            reason: format!("{e:?}"),
        })?;
        write_atomic(&target, &data).map_err(|e| io(&target, e))
    }
}

/// The values as safetensors stores them (little-endian): the memory itself where the
/// machine is little-endian, a converted copy elsewhere.
fn little_endian_bytes(values: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        std::borrow::Cow::Owned(values.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// Metadata field of a shard's checksum.
const CHECKSUM_FIELD: &str = "crc32";

/// Largest cache shard read, in bytes.
const MAX_SHARD_BYTES: u64 = 16 << 30;

/// Largest magnitude of a cached value: token ids are below 2^24, and every other feature
/// (pixels, decibels, embeddings) far below; anything else is damage.
pub const MAX_FEATURE_MAGNITUDE: f32 = (1u32 << 24) as f32;

/// CRC-32 of every array's key, shape and bytes, in key order, as hex.
fn shard_checksum<'a>(arrays: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>) -> String {
    let mut hasher = crc32fast::Hasher::new();
    for (key, shape, data) in arrays {
        hasher.update(key.as_bytes());
        hasher.update(format!("{shape:?}").as_bytes());
        hasher.update(data);
    }
    format!("{:08x}", hasher.finalize())
}

/// Writes through a uniquely named temporary file in the same folder (so writers on
/// several machines sharing the folder never collide), synced, then renamed into place
/// and the folder synced (the rename is durable then); mode 0666 less the umask, as any
/// file a program creates.
pub(crate) fn write_atomic(target: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::PermissionsExt};
    let folder = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(folder)?;
    file.write_all(data)?;
    file.as_file().sync_all()?;
    file.persist(target).map_err(|e| e.error)?;
    // Best effort: not every file system lets a folder be opened.
    if let Ok(dir) = std::fs::File::open(folder) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Records extracted (in parallel) between two writes to the cache.
pub const EXTRACT_CHUNK: usize = 1024;

/// Extracts `specs` for the records of `manifest` in `shard` (all when `None`), reading
/// and filling `cache` when given. A file that cannot be read or decoded makes that
/// modality absent for its record ([`Extraction::absent`]); a record left with none of the
/// configured modalities is left out ([`Extraction::problems`]). Files are read and decoded
/// within `limits` (those of validation). `progress` is called with the number of records
/// done so far. (An [`Extractor`] does the same many times over, its setup done once.)
pub fn extract(
    manifest: &Manifest,
    specs: &[FeatureSpec],
    cache: Option<&FeatureCache>,
    shard: Option<Shard>,
    limits: &crate::Limits,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Extraction> {
    Extractor::new(specs, limits)?.extract(manifest, cache, shard, progress)
}

/// Feature configurations checked, with what computing them needs (tokenizers, log-mel
/// filters) loaded once: for extracting many small manifests, as a server does per request.
#[derive(Debug)]
pub struct Extractor {
    specs: Vec<FeatureSpec>,
    prepared: Vec<Prepared>,
    limits: crate::Limits,
}

impl Extractor {
    /// Checks `specs` and loads what they need; files will be decoded within `limits`.
    pub fn new(specs: &[FeatureSpec], limits: &crate::Limits) -> Result<Self> {
        for (i, spec) in specs.iter().enumerate() {
            spec.config.validate(&format!("modalities[{i}].features"))?;
        }
        let prepared = specs
            .iter()
            .map(|s| {
                s.config.prepare().map(|mut prepared| {
                    prepared.limits = limits.clone();
                    prepared
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            specs: specs.to_vec(),
            prepared,
            limits: limits.clone(),
        })
    }

    /// The features extracted, in order.
    pub fn specs(&self) -> &[FeatureSpec] {
        &self.specs
    }

    /// The limits files are decoded within.
    pub fn limits(&self) -> &crate::Limits {
        &self.limits
    }

    /// [`extract`] with these features.
    pub fn extract(
        &self,
        manifest: &Manifest,
        cache: Option<&FeatureCache>,
        shard: Option<Shard>,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Extraction> {
        let (specs, prepared, limits) = (&self.specs, &self.prepared, &self.limits);
        let records: Vec<&Record> = manifest
            .records
            .iter()
            .enumerate()
            .filter(|(i, _)| shard.is_none_or(|s| i % s.count == s.index))
            .map(|(_, r)| r)
            .collect();
        // With a cache, each source is hashed once up front (per modality, whatever number of
        // specs read it): only these records' vectors are loaded (a cache shared by several
        // manifests holds the others' too), and a source found there is not read again.
        let mut known_keys: HashMap<Modality, Vec<Option<String>>> = HashMap::new();
        if cache.is_some() {
            for spec in specs {
                let modality = spec.config.modality();
                known_keys
                    .entry(modality)
                    .or_insert_with(|| source_keys(&records, modality, limits));
            }
        }
        // Cached vectors are moved out as records take them (a copy would hold each twice).
        let mut stored: Vec<HashMap<String, Vec<f32>>> = match cache {
            Some(cache) => specs
                .iter()
                .map(|s| {
                    let wanted: HashSet<String> = known_keys[&s.config.modality()].iter().flatten().cloned().collect();
                    cache.load_wanted(&s.config, &wanted)
                })
                .collect::<Result<_>>()?,
            None => specs.iter().map(|_| HashMap::new()).collect(),
        };
        // Per modality, where a vector an earlier chunk computed or took from the cache is (a
        // file may appear twice).
        let mut computed_at: Vec<HashMap<String, usize>> = vec![HashMap::new(); specs.len()];
        let done = AtomicUsize::new(0);
        // One modality of a record: its key, its values (none: to be taken from the cache)
        // and whether they were cached.
        type Found = (String, Option<Vec<f32>>, bool);
        // Per modality: nothing (absent), what was found, or why its file could not be used.
        type Outcome = Vec<std::result::Result<Option<Found>, Problem>>;
        let mut extraction = Extraction {
            records: Vec::new(),
            features: vec![Vec::new(); specs.len()],
            keys: vec![Vec::new(); specs.len()],
            problems: Vec::new(),
            absent: Vec::new(),
            cached: 0,
            computed: 0,
            cache_errors: Vec::new(),
        };
        // In chunks, each cached as soon as it is done: a killed extraction keeps its work.
        for (c, chunk) in records.chunks(EXTRACT_CHUNK).enumerate() {
            let outcomes: Vec<Outcome> = chunk
                .par_iter()
                .enumerate()
                .map(|(j, record)| {
                    let outcome = specs
                        .iter()
                        .enumerate()
                        .zip(&stored)
                        .zip(prepared)
                        .map(|(((m, spec), stored), prepared)| {
                            let problem = |path: Option<PathBuf>, reason: String| Problem {
                                id: record.id.clone(),
                                modality: Some(spec.name.clone()),
                                path,
                                reason,
                            };
                            let modality = spec.config.modality();
                            let reused = |key: &String| -> Option<Found> {
                                let earlier = computed_at[m]
                                    .get(key)
                                    .and_then(|&row| extraction.features[m][row].as_ref());
                                match earlier {
                                    Some(values) => Some((key.clone(), Some(values.clone()), true)),
                                    None => stored.contains_key(key).then(|| (key.clone(), None, true)),
                                }
                            };
                            let known = known_keys
                                .get(&modality)
                                .and_then(|keys| keys[c * EXTRACT_CHUNK + j].as_ref());
                            if let Some(found) = known.and_then(reused) {
                                return Ok(Some(found));
                            }
                            let Some(found) = source(record, modality, limits) else {
                                return Ok(None);
                            };
                            let (bytes, path) = found.map_err(|(path, reason)| problem(Some(path), reason))?;
                            let key = hex(&Sha256::digest(&bytes));
                            if let Some(found) = reused(&key) {
                                return Ok(Some(found));
                            }
                            let values = spec
                                .config
                                .compute_prepared(prepared, &bytes, &path)
                                .map_err(|reason| problem(Some(path.clone()), reason.to_string()))?;
                            Ok(values.map(|values| (key, Some(values), false)))
                        })
                        .collect();
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                    outcome
                })
                .collect();
            // Per modality, the rows this chunk computed, by key: cached from where they lie.
            let mut fresh: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); specs.len()];
            // Per modality, the rows this chunk took from the cache, by key (a file twice).
            let mut taken: Vec<HashMap<String, usize>> = vec![HashMap::new(); specs.len()];
            for (record, outcome) in chunk.iter().copied().zip(outcomes) {
                let mut failed = Vec::new();
                let values: Vec<Option<Found>> = outcome
                    .into_iter()
                    .map(|value| {
                        value.unwrap_or_else(|problem| {
                            failed.push(problem);
                            None
                        })
                    })
                    .collect();
                // Two feature configurations of one file (e.g. pixels and an image) fail once.
                let mut seen = std::collections::HashSet::new();
                failed.retain(|p| seen.insert((p.modality.clone(), p.path.clone())));
                if values.iter().all(Option::is_none) {
                    if failed.is_empty() {
                        extraction.problems.push(Problem {
                            id: record.id.clone(),
                            modality: None,
                            path: None,
                            reason: format!(
                                "has none of the configured modalities ({})",
                                specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                        });
                    }
                    // Else its unusable files say why it is left out.
                    extraction.problems.append(&mut failed);
                    continue;
                }
                extraction.absent.append(&mut failed);
                extraction.records.push(record.clone());
                for (m, value) in values.into_iter().enumerate() {
                    let row = extraction.features[m].len();
                    extraction.keys[m].push(value.as_ref().map(|(key, _, _)| key.clone()));
                    let value = value.map(|(key, values, cached)| {
                        let values = values.or_else(|| {
                            let values = stored[m].remove(&key);
                            match values {
                                Some(values) => {
                                    taken[m].insert(key.clone(), row);
                                    Some(values)
                                }
                                // Taken by an earlier record of this chunk.
                                None => taken[m].get(&key).and_then(|&at| extraction.features[m][at].clone()),
                            }
                        });
                        (key, values, cached)
                    });
                    extraction.features[m].push(value.and_then(|(key, values, cached)| {
                        if cached {
                            extraction.cached += 1;
                        } else {
                            extraction.computed += 1;
                            fresh[m].insert(key, row);
                        }
                        values
                    }));
                }
            }
            for (m, rows) in fresh.iter().enumerate() {
                computed_at[m].extend(rows.iter().map(|(key, &row)| (key.clone(), row)));
                computed_at[m].extend(taken[m].drain());
            }
            let Some(cache) = cache else { continue };
            for (m, (spec, rows)) in specs.iter().zip(&fresh).enumerate() {
                let vectors: BTreeMap<String, &[f32]> = rows
                    .iter()
                    .filter_map(|(key, &row)| extraction.features[m][row].as_deref().map(|v| (key.clone(), v)))
                    .collect();
                if let Err(e) = cache.store(&spec.config, &vectors) {
                    let error = e.to_string();
                    if !extraction.cache_errors.contains(&error) {
                        extraction.cache_errors.push(error);
                    }
                }
            }
        }
        Ok(extraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_words_count_words_and_bigrams() -> std::result::Result<(), FeatureError> {
        let v = hashed_words("Red red, blue!", 1 << 16)?;
        // Words red ×2, blue; bigrams "red red", "red blue": squares 4 + 1 + 1 + 1.
        let norm = 7f32.sqrt();
        let mut sorted: Vec<f32> = v.iter().copied().filter(|x| *x > 0.0).collect();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted.len(), 4);
        assert!((sorted[3] - 2.0 / norm).abs() < 1e-6);
        assert!(sorted[..3].iter().all(|x| (x - 1.0 / norm).abs() < 1e-6));
        assert!(hashed_words(" ,. ", 8).is_err());
        Ok(())
    }

    #[test]
    fn shards_parse_and_reject_nonsense() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1", "a/2", "0/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_are_checked_naming_the_field() {
        let huge = FeatureConfig::Pixels {
            size: 100_000,
            grey: true,
        };
        let error = huge
            .validate("modalities[0].features")
            .expect_err("too large")
            .to_string();
        assert!(error.contains("modalities[0].features"), "{error}");
        let bad_rate = FeatureConfig::LogMel(LogMelConfig {
            sample_rate: 0,
            n_mels: 8,
            frames: 4,
            n_fft: 64,
            hop_length: 32,
        });
        assert!(bad_rate.validate("f").is_err());
    }
}
