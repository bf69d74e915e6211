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
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Manifest, Modality, Problem, Record, Result, Split};

/// How one modality's files become a feature vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureConfig {
    /// An image resized (antialiased bilinear) to `size × size`, grey or RGB, values in
    /// `[0, 1]`, flattened channels-first.
    Pixels {
        /// Output side in pixels.
        size: u32,
        /// One luminance channel instead of RGB.
        #[serde(default = "yes")]
        grey: bool,
    },
    /// A log-mel spectrogram of the mono signal at `sample_rate`: `n_mels × frames`
    /// (longer clips cut, shorter ones padded with the clip's quietest value), in dB relative
    /// to the clip's peak with an 80 dB floor, mapped to `[0, 1]`, flattened band by band.
    LogMel {
        /// Rate the audio is resampled to.
        sample_rate: u32,
        /// Mel bands.
        n_mels: usize,
        /// Frames kept.
        frames: usize,
        /// FFT size.
        #[serde(default = "default_n_fft")]
        n_fft: usize,
        /// Hop between frames, in samples.
        #[serde(default = "default_hop")]
        hop_length: usize,
    },
    /// Hashed bag of lower-cased words and word bigrams (FNV-1a into `dim` buckets),
    /// L2-normalised.
    HashedWords {
        /// Buckets.
        dim: usize,
    },
    /// `frames` frames spread uniformly over a video, grey, `size × size`, values in
    /// `[0, 1]`, flattened frame by frame.
    VideoFrames {
        /// Frames kept.
        frames: usize,
        /// Output side in pixels.
        size: u32,
    },
}

fn yes() -> bool {
    true
}
fn default_n_fft() -> usize {
    256
}
fn default_hop() -> usize {
    128
}

/// Version of the feature computations, part of every cache key: bump it whenever
/// [`FeatureConfig::compute`] (or a fixed setting it uses) changes, so that old vectors are
/// not reused.
pub const FEATURE_VERSION: u32 = 1;

/// Largest feature vector a configuration may ask for (a typo like `size: 28000` would
/// otherwise allocate gigabytes per sample).
pub const MAX_FEATURE_DIM: usize = 1 << 22;

impl FeatureConfig {
    /// Length of the feature vector.
    pub fn dim(&self) -> usize {
        let side = |s: u32| (s as usize).saturating_mul(s as usize);
        match self {
            Self::Pixels { size, grey } => side(*size).saturating_mul(if *grey { 1 } else { 3 }),
            Self::LogMel { n_mels, frames, .. } => n_mels.saturating_mul(*frames),
            Self::HashedWords { dim } => *dim,
            Self::VideoFrames { frames, size } => frames.saturating_mul(side(*size)),
        }
    }

    /// The modality these features are made from.
    pub fn modality(&self) -> Modality {
        match self {
            Self::Pixels { .. } => Modality::Image,
            Self::LogMel { .. } => Modality::Audio,
            Self::HashedWords { .. } => Modality::Text,
            Self::VideoFrames { .. } => Modality::Video,
        }
    }

    /// Checks sizes, naming the offending field under `field`.
    pub fn validate(&self, field: &str) -> Result<()> {
        let bad = |name: &str, why: String| Err(Error::Config(format!("{field}.{name}: {why}")));
        let dim = self.dim();
        if dim == 0 || dim > MAX_FEATURE_DIM {
            return bad(
                "kind",
                format!("{dim} features per sample; allowed 1..={MAX_FEATURE_DIM}"),
            );
        }
        if let Self::LogMel {
            sample_rate,
            n_fft,
            hop_length,
            n_mels,
            ..
        } = self
        {
            let mut mel = fusion_audio::MelConfig::new(*sample_rate);
            mel.n_fft = *n_fft;
            mel.hop_length = *hop_length;
            mel.n_mels = *n_mels;
            if let Err(e) = fusion_audio::MelExtractor::new(mel) {
                return bad("sample_rate/n_fft/hop_length/n_mels", e.to_string());
            }
        }
        Ok(())
    }

    /// Hex SHA-256 of the configuration and [`FEATURE_VERSION`]: the cache folder's name.
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(FEATURE_VERSION.to_le_bytes());
        hasher.update(serde_json::to_vec(self).unwrap_or_default());
        hex(&hasher.finalize())
    }

    /// Features of one source: `bytes` is the file's content (or the inline text) and
    /// `path` names it in errors (and is where video is decoded from).
    pub fn compute(&self, bytes: &[u8], path: &Path) -> std::result::Result<Vec<f32>, String> {
        match self {
            Self::Pixels { size, grey } => {
                let decoded = fusion_image::decode_bytes(bytes, path, fusion_image::DEFAULT_PIXEL_BUDGET)
                    .map_err(|e| e.to_string())?;
                let channels = if *grey { 1 } else { 3 };
                let pipeline = fusion_image::Pipeline {
                    channels: if *grey {
                        fusion_image::Channels::Grey
                    } else {
                        fusion_image::Channels::Rgb
                    },
                    resize: fusion_image::Resize::Exact {
                        width: *size,
                        height: *size,
                    },
                    filter: fusion_image::Filter::Bilinear,
                    crop: fusion_image::Crop::None,
                    flip_probability: 0.0,
                    mean: vec![0.0; channels],
                    std: vec![1.0; channels],
                    pixel_budget: fusion_image::DEFAULT_PIXEL_BUDGET,
                };
                Ok(pipeline.apply(&decoded, 0).map_err(|e| e.to_string())?.data)
            }
            Self::LogMel {
                sample_rate,
                n_mels,
                frames,
                n_fft,
                hop_length,
            } => {
                let clip = fusion_audio::read_wav_bytes(bytes, path)
                    .map_err(|e| e.to_string())?
                    .to_mono();
                let samples = if clip.sample_rate == *sample_rate {
                    clip.samples
                } else {
                    fusion_audio::resample(&clip.samples, clip.sample_rate, *sample_rate).map_err(|e| e.to_string())?
                };
                if samples.is_empty() {
                    return Err("the recording has no samples".into());
                }
                let mut mel = fusion_audio::MelConfig::new(*sample_rate);
                mel.n_fft = *n_fft;
                mel.hop_length = *hop_length;
                mel.n_mels = *n_mels;
                let extractor = fusion_audio::MelExtractor::new(mel).map_err(|e| e.to_string())?;
                let db = fusion_audio::DbConfig {
                    reference: fusion_audio::DbReference::Max,
                    amin: 1e-10,
                    top_db: Some(80.0),
                };
                let log_mel = extractor.log_mel(&samples, &db).map_err(|e| e.to_string())?;
                let peak = log_mel.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let fixed = fusion_audio::fixed_width(&log_mel, *frames);
                Ok(fixed
                    .data
                    .iter()
                    .map(|v| ((v - peak + 80.0) / 80.0).clamp(0.0, 1.0))
                    .collect())
            }
            Self::HashedWords { dim } => {
                let text = std::str::from_utf8(bytes).map_err(|e| format!("text is not UTF-8: {e}"))?;
                hashed_words(text, *dim)
            }
            Self::VideoFrames { frames, size } => {
                let frame_size = fusion_video::FrameSize {
                    width: *size,
                    height: *size,
                    fit: fusion_video::Fit::Stretch,
                };
                let decoded =
                    fusion_video::read_frames(path, fusion_video::Sampling::Uniform(*frames), Some(frame_size))
                        .map_err(|e| e.to_string())?;
                if decoded.timestamps.is_empty() {
                    return Err("no frame could be decoded".into());
                }
                // Grey as PIL's L; a short clip repeats its last frame.
                let plane = (*size as usize) * (*size as usize);
                let grey: Vec<f32> = decoded
                    .rgb
                    .chunks_exact(3)
                    .map(|p| (f32::from(p[0]) * 299.0 + f32::from(p[1]) * 587.0 + f32::from(p[2]) * 114.0) / 255_000.0)
                    .collect();
                let mut out = Vec::with_capacity(frames * plane);
                for t in 0..*frames {
                    let source = t.min(decoded.timestamps.len() - 1);
                    out.extend_from_slice(&grey[source * plane..(source + 1) * plane]);
                }
                Ok(out)
            }
        }
    }
}

fn hashed_words(text: &str, dim: usize) -> std::result::Result<Vec<f32>, String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        return Err("the text has no words".into());
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

impl std::str::FromStr for Shard {
    type Err = String;

    /// Parses `i/n`.
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("shard `{text}` is not i/n"))?;
        let index = i
            .trim()
            .parse()
            .map_err(|_| format!("shard index `{i}` is not a number"))?;
        let count = n
            .trim()
            .parse()
            .map_err(|_| format!("shard count `{n}` is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 ≤ i < n"));
        }
        Ok(Self { index, count })
    }
}

/// Features of the good records of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Extraction {
    /// The records whose every present modality was extracted, in manifest order.
    pub records: Vec<Record>,
    /// Per modality (in the order asked), per kept record: the features, `None` where the
    /// record has no such modality.
    pub features: Vec<Vec<Option<Vec<f32>>>>,
    /// Records left out, with the reason (file missing, undecodable…).
    pub problems: Vec<Problem>,
    /// Feature vectors read from the cache.
    pub cached: usize,
    /// Feature vectors computed (and written to the cache).
    pub computed: usize,
    /// Cache writes that failed (the features are still returned: the cache is only a
    /// speed-up).
    pub cache_errors: Vec<String>,
}

impl Extraction {
    /// Indices of the kept records in `split` (records without a split count as train).
    pub fn split_indices(&self, split: Split) -> Vec<usize> {
        self.records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.split.unwrap_or(Split::Train) == split)
            .map(|(i, _)| i)
            .collect()
    }
}

/// A source's bytes and the path that names it, or the path and why it cannot be read.
type Source = std::result::Result<(Vec<u8>, PathBuf), (PathBuf, String)>;

/// Where a record's modality comes from: its bytes (file content or inline text) and the
/// path that names it; `None` when the record lacks the modality.
fn source(record: &Record, modality: Modality) -> Option<Source> {
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
    };
    Some(
        std::fs::read(path)
            .map(|bytes| (bytes, path.clone()))
            .map_err(|e| (path.clone(), format!("cannot read: {e}"))),
    )
}

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
        self.root.join(&config.hash()[..16])
    }

    /// Every vector stored for `config`, by content hash. Unreadable shards are reported in
    /// the error, not skipped silently: a damaged cache should be deleted, not trusted.
    pub fn load(&self, config: &FeatureConfig) -> Result<HashMap<String, Vec<f32>>> {
        let folder = self.folder(config);
        let mut found = HashMap::new();
        let Ok(entries) = std::fs::read_dir(&folder) else {
            return Ok(found);
        };
        let dim = config.dim();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "safetensors") {
                continue;
            }
            let broken = |reason: String| Error::Cache {
                path: path.clone(),
                reason,
            };
            let bytes = std::fs::read(&path).map_err(|e| broken(e.to_string()))?;
            let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| broken(format!("{e:?}")))?;
            for (key, view) in tensors.tensors() {
                if view.dtype() != safetensors::Dtype::F32 || view.shape() != [dim] {
                    return Err(broken(format!(
                        "{key}: {:?} {:?}, expected F32 [{dim}]",
                        view.dtype(),
                        view.shape()
                    )));
                }
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                found.insert(key, values);
            }
        }
        Ok(found)
    }

    /// Stores `vectors` (content hash → features) as one new shard.
    pub fn store(&self, config: &FeatureConfig, vectors: &BTreeMap<String, Vec<f32>>) -> Result<()> {
        if vectors.is_empty() {
            return Ok(());
        }
        let folder = self.folder(config);
        let io = |path: &Path, e: std::io::Error| Error::Cache {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
        let description = folder.join("config.json");
        if !description.exists() {
            let text = serde_json::to_string_pretty(config).unwrap_or_default();
            write_atomic(&description, text.as_bytes()).map_err(|e| io(&description, e))?;
        }
        let bytes: Vec<(String, Vec<u8>)> = vectors
            .iter()
            .map(|(key, v)| (key.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect();
        let dim = [config.dim()];
        let views = bytes
            .iter()
            .map(|(key, data)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, dim.to_vec(), data)
                    .map(|view| (key.clone(), view))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Cache {
                path: folder.clone(),
                reason: format!("{e:?}"),
            })?;
        let keys: String = vectors.keys().map(String::as_str).collect();
        let name = format!("{}.safetensors", &hex(&Sha256::digest(keys.as_bytes()))[..24]);
        let target = folder.join(name);
        let data = safetensors::serialize(views, &None).map_err(|e| Error::Cache {
            path: target.clone(),
            reason: format!("{e:?}"),
        })?;
        write_atomic(&target, &data).map_err(|e| io(&target, e))
    }
}

/// Writes through a uniquely named temporary file in the same folder (so writers on
/// several machines sharing the folder never collide), synced, then renamed into place.
fn write_atomic(target: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let folder = target.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(folder)?;
    file.write_all(data)?;
    file.as_file().sync_all()?;
    file.persist(target).map(drop).map_err(|e| e.error)
}

/// Extracts `specs` for the records of `manifest` in `shard` (all when `None`), reading
/// and filling `cache` when given. Records with an unreadable or undecodable file are left
/// out and listed in [`Extraction::problems`]; `progress` is called with the number of
/// records done so far.
pub fn extract(
    manifest: &Manifest,
    specs: &[FeatureSpec],
    cache: Option<&FeatureCache>,
    shard: Option<Shard>,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Extraction> {
    for (i, spec) in specs.iter().enumerate() {
        spec.config.validate(&format!("modalities[{i}].features"))?;
    }
    let stored: Vec<HashMap<String, Vec<f32>>> = match cache {
        Some(cache) => specs.iter().map(|s| cache.load(&s.config)).collect::<Result<_>>()?,
        None => specs.iter().map(|_| HashMap::new()).collect(),
    };
    let records: Vec<&Record> = manifest
        .records
        .iter()
        .enumerate()
        .filter(|(i, _)| shard.is_none_or(|s| i % s.count == s.index))
        .map(|(_, r)| r)
        .collect();
    let done = AtomicUsize::new(0);
    type Outcome = std::result::Result<Vec<Option<(String, Vec<f32>, bool)>>, Problem>;
    let outcomes: Vec<Outcome> = records
        .par_iter()
        .map(|record| {
            let outcome = specs
                .iter()
                .zip(&stored)
                .map(|(spec, stored)| {
                    let problem = |path: Option<PathBuf>, reason: String| Problem {
                        id: record.id.clone(),
                        modality: Some(spec.name.clone()),
                        path,
                        reason,
                    };
                    let Some(found) = source(record, spec.config.modality()) else {
                        return Ok(None);
                    };
                    let (bytes, path) = found.map_err(|(path, reason)| problem(Some(path), reason))?;
                    let key = hex(&Sha256::digest(&bytes));
                    if let Some(values) = stored.get(&key) {
                        return Ok(Some((key, values.clone(), true)));
                    }
                    let values = spec
                        .config
                        .compute(&bytes, &path)
                        .map_err(|reason| problem(Some(path.clone()), reason))?;
                    Ok(Some((key, values, false)))
                })
                .collect();
            progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            outcome
        })
        .collect();
    let mut extraction = Extraction {
        records: Vec::new(),
        features: vec![Vec::new(); specs.len()],
        problems: Vec::new(),
        cached: 0,
        computed: 0,
        cache_errors: Vec::new(),
    };
    let mut fresh: Vec<BTreeMap<String, Vec<f32>>> = vec![BTreeMap::new(); specs.len()];
    for (record, outcome) in records.into_iter().zip(outcomes) {
        match outcome {
            Err(problem) => extraction.problems.push(problem),
            Ok(values) if values.iter().all(Option::is_none) => extraction.problems.push(Problem {
                id: record.id.clone(),
                modality: None,
                path: None,
                reason: format!(
                    "has none of the configured modalities ({})",
                    specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }),
            Ok(values) => {
                extraction.records.push(record.clone());
                for (m, value) in values.into_iter().enumerate() {
                    extraction.features[m].push(value.map(|(key, values, cached)| {
                        if cached {
                            extraction.cached += 1;
                        } else {
                            extraction.computed += 1;
                            fresh[m].insert(key, values.clone());
                        }
                        values
                    }));
                }
            }
        }
    }
    if let Some(cache) = cache {
        for (spec, vectors) in specs.iter().zip(&fresh) {
            if let Err(e) = cache.store(&spec.config, vectors) {
                extraction.cache_errors.push(e.to_string());
            }
        }
    }
    Ok(extraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_words_count_words_and_bigrams() -> std::result::Result<(), String> {
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
        let bad_rate = FeatureConfig::LogMel {
            sample_rate: 0,
            n_mels: 8,
            frames: 4,
            n_fft: 64,
            hop_length: 32,
        };
        assert!(bad_rate.validate("f").is_err());
    }
}
