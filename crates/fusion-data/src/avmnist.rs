//! AV-MNIST (Vielzeuf et al. 2018, as packaged by MultiBench): MNIST digit images paired
//! with spoken recordings of the same digit from the Free Spoken Digit Dataset.
//!
//! Choices, following MultiBench where the data allows: MNIST's 60,000 training images
//! are shuffled (seeded) into 55,000 train and 5,000 validation samples, its 10,000 test
//! images form the test split; each image is paired, at random (seeded), with a recording
//! of its digit from the split's pool. Test recordings never appear in train or validation:
//! by default the pools follow FSDD's own split (recordings 0–4 of every speaker and digit
//! are test, the rest train), or, with `test_speakers`, whole speakers are held out
//! (test speakers are never heard in training). Images are written as PNG, the recordings
//! used are copied, and `manifest.jsonl` ties them together; the same inputs and options
//! give byte-identical files and the same manifest hash.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
};

use fusion_image::SplitMix64;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct AvMnistOptions {
    /// Seed of the shuffles and pairings.
    pub seed: u64,
    /// Training samples taken from MNIST's training images.
    pub train: usize,
    /// Validation samples taken from the rest of MNIST's training images.
    pub val: usize,
    /// Test samples taken from MNIST's test images.
    pub test: usize,
    /// Speakers whose recordings are only used for test; `None` uses FSDD's split.
    pub test_speakers: Option<Vec<String>>,
    /// MultiBench's image degradation: keep the fewest principal components (fitted on
    /// training images) that hold this fraction of the variance (MultiBench: 0.25).
    pub pca_energy: Option<f64>,
    /// White noise mixed into every recording at an SNR drawn uniformly from this range
    /// (dB, seeded); each sample then gets its own WAV and its SNR band as its `group`.
    pub noise_snr_db: Option<(f64, f64)>,
}

impl Default for AvMnistOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            train: 55_000,
            val: 5_000,
            test: 10_000,
            test_speakers: None,
            pca_energy: None,
            noise_snr_db: None,
        }
    }
}

/// Training images used to fit the PCA (more add little to 784-dimensional components).
const PCA_FIT_IMAGES: usize = 5_000;
/// Most components the PCA degradation may keep.
const PCA_MAX_COMPONENTS: usize = 64;

/// What was built.
#[derive(Debug, Clone, PartialEq)]
pub struct AvMnistSummary {
    /// The manifest.
    pub manifest: PathBuf,
    /// Samples per split: train, val, test.
    pub counts: [usize; 3],
    /// Distinct recordings used in train+val and in test.
    pub recordings: [usize; 2],
    /// SHA-256 of the manifest.
    pub manifest_sha256: String,
}

struct Idx {
    items: usize,
    item_size: usize,
    data: Vec<u8>,
}

fn read_idx(path: &Path, magic: u32, dims: usize) -> Result<Idx> {
    let fail = |reason: String| Error::Dataset {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("not gzip IDX: {e}")))?;
    let word = |i: usize| {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    if word(0) != Some(magic) {
        return Err(fail(format!("IDX magic {:?}, expected {magic}", word(0))));
    }
    let sizes: Vec<usize> = (1..=dims)
        .map(|i| word(i).map(|w| w as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| fail("truncated header".into()))?;
    let items = sizes[0];
    let item_size: usize = sizes[1..].iter().product();
    let header = 4 * (dims + 1);
    if bytes.len() != header + items * item_size {
        return Err(fail(format!(
            "{} bytes of data for {items} items of {item_size}",
            bytes.len() - header.min(bytes.len())
        )));
    }
    Ok(Idx {
        items,
        item_size,
        data: bytes[header..].to_vec(),
    })
}

fn pixels_of(images: &Idx, index: usize) -> &[u8] {
    &images.data[index * images.item_size..(index + 1) * images.item_size]
}

/// One FSDD recording: speaker, index, file.
type Recording = (String, u32, PathBuf);

/// FSDD recordings by digit: `(speaker, index, path)`, sorted.
fn fsdd_recordings(dir: &Path) -> Result<BTreeMap<u8, Vec<Recording>>> {
    let fail = |reason: String| Error::Dataset {
        path: dir.to_path_buf(),
        reason,
    };
    let mut by_digit: BTreeMap<u8, Vec<Recording>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| fail(e.to_string()))? {
        let path = entry.map_err(|e| fail(e.to_string()))?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let parts: Vec<&str> = stem.split('_').collect();
        if let [digit, speaker, index] = parts[..]
            && let (Ok(digit), Ok(index)) = (digit.parse::<u8>(), index.parse::<u32>())
            && path.extension().is_some_and(|e| e == "wav")
        {
            by_digit
                .entry(digit)
                .or_default()
                .push((speaker.to_string(), index, path.clone()));
        }
    }
    for list in by_digit.values_mut() {
        list.sort();
    }
    if by_digit.len() != 10 {
        return Err(fail(format!(
            "recordings of {} digits found, expected 10",
            by_digit.len()
        )));
    }
    Ok(by_digit)
}

/// Writes `source` with white noise at `snr_db` as 16-bit PCM at its own rate.
fn write_noisy(source: &Path, target: &Path, snr_db: f64, rng: &mut SplitMix64) -> Result<()> {
    let fail = |path: &Path, reason: String| Error::Dataset {
        path: path.to_path_buf(),
        reason,
    };
    let clip = fusion_audio::read_wav_mono(source).map_err(|e| fail(source, e.to_string()))?;
    let noisy = crate::degrade::add_noise(&clip.samples, snr_db, rng);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: clip.sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let written = (|| {
        let mut writer = hound::WavWriter::create(target, spec)?;
        for sample in noisy {
            writer.write_sample((sample * 32768.0).round().clamp(-32768.0, 32767.0) as i16)?;
        }
        writer.finalize()
    })();
    written.map_err(|e| fail(target, e.to_string()))
}

/// Builds AV-MNIST from the MNIST IDX files (`*-idx?-ubyte.gz`) in `mnist` and the FSDD
/// recordings in `fsdd` (the `recordings` folder) into `out`.
pub fn build_avmnist(mnist: &Path, fsdd: &Path, out: &Path, options: &AvMnistOptions) -> Result<AvMnistSummary> {
    let train_images = read_idx(&mnist.join("train-images-idx3-ubyte.gz"), 2051, 3)?;
    let train_labels = read_idx(&mnist.join("train-labels-idx1-ubyte.gz"), 2049, 1)?;
    let test_images = read_idx(&mnist.join("t10k-images-idx3-ubyte.gz"), 2051, 3)?;
    let test_labels = read_idx(&mnist.join("t10k-labels-idx1-ubyte.gz"), 2049, 1)?;
    let bad = |reason: String| Error::Dataset {
        path: mnist.to_path_buf(),
        reason,
    };
    if train_images.item_size != 28 * 28
        || train_images.items != train_labels.items
        || test_images.items != test_labels.items
    {
        return Err(bad("image and label files disagree".into()));
    }
    if options.train + options.val > train_images.items || options.test > test_images.items {
        return Err(bad(format!(
            "asked for {} train + {} val of {} and {} test of {}",
            options.train, options.val, train_images.items, options.test, test_images.items
        )));
    }
    if let Some((low, high)) = options.noise_snr_db
        && !(low.is_finite() && high.is_finite() && low <= high)
    {
        return Err(Error::Config(format!(
            "noise_snr_db: ({low}, {high}) must be finite with low ≤ high"
        )));
    }
    let recordings = fsdd_recordings(fsdd)?;
    let is_test = |speaker: &str, index: u32| match &options.test_speakers {
        Some(speakers) => speakers.iter().any(|s| s == speaker),
        None => index < 5,
    };
    let mut rng = SplitMix64(options.seed);
    let mut order: Vec<usize> = (0..train_images.items).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let plan: Vec<(&str, &Idx, &Idx, usize)> = order[..options.train]
        .iter()
        .map(|&i| ("train", &train_images, &train_labels, i))
        .chain(
            order[options.train..options.train + options.val]
                .iter()
                .map(|&i| ("val", &train_images, &train_labels, i)),
        )
        .chain((0..options.test).map(|i| ("test", &test_images, &test_labels, i)))
        .collect();
    let pca = match options.pca_energy {
        None => None,
        Some(fraction) if !(fraction > 0.0 && fraction <= 1.0) => {
            return Err(bad(format!("pca_energy {fraction} is outside (0, 1]")));
        }
        Some(fraction) => {
            let rows: Vec<Vec<f64>> = order[..options.train.min(PCA_FIT_IMAGES)]
                .iter()
                .map(|&i| pixels_of(&train_images, i).iter().map(|&p| f64::from(p)).collect())
                .collect();
            let pca = crate::degrade::Pca::fit(&rows, PCA_MAX_COMPONENTS, options.seed);
            let keep = pca.components_for(fraction).ok_or_else(|| {
                bad(format!(
                    "pca_energy {fraction} needs more than {PCA_MAX_COMPONENTS} components"
                ))
            })?;
            Some((pca, keep))
        }
    };
    let io = |path: &Path, e: std::io::Error| Error::Dataset {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    for dir in ["images/train", "images/val", "images/test", "audio"] {
        std::fs::create_dir_all(out.join(dir)).map_err(|e| io(&out.join(dir), e))?;
    }
    let mut manifest = String::new();
    let mut counts = [0usize; 3];
    let mut used: [std::collections::BTreeSet<PathBuf>; 2] = Default::default();
    for (n, (split, images, labels, index)) in plan.into_iter().enumerate() {
        let digit = labels.data[index];
        let test = split == "test";
        let pool: Vec<&Recording> = recordings
            .get(&digit)
            .into_iter()
            .flatten()
            .filter(|(s, i, _)| is_test(s, *i) == test)
            .collect();
        if pool.is_empty() {
            return Err(Error::Dataset {
                path: fsdd.to_path_buf(),
                reason: format!("no {split} recording of digit {digit}"),
            });
        }
        let (_, _, source) = pool[rng.below(pool.len())];
        let id = format!("{split}_{n:05}");
        let mut group = None;
        let audio_name = match options.noise_snr_db {
            None => {
                let name = source.file_name().map(PathBuf::from).unwrap_or_default();
                if used[usize::from(test)].insert(source.clone()) {
                    std::fs::copy(source, out.join("audio").join(&name)).map_err(|e| io(source, e))?;
                }
                name
            }
            Some((low, high)) => {
                used[usize::from(test)].insert(source.clone());
                // A generator per sample, apart from the pairing's: the same seed pairs the
                // same images and recordings with and without noise.
                let mut noise = SplitMix64(options.seed ^ (n as u64 + 1).wrapping_mul(0xd1b5_4a32_d192_ed03));
                let snr = low + (high - low) * noise.next_f64();
                let band = (snr / 5.0).floor() * 5.0;
                group = Some(format!("snr {band:+} to {:+} dB", band + 5.0));
                let name = PathBuf::from(format!("{id}.wav"));
                write_noisy(source, &out.join("audio").join(&name), snr, &mut noise)?;
                name
            }
        };
        let image_path = out.join("images").join(split).join(format!("{id}.png"));
        let mut pixels = pixels_of(images, index).to_vec();
        if let Some((pca, keep)) = &pca {
            let row: Vec<f64> = pixels.iter().map(|&p| f64::from(p)).collect();
            pixels = pca
                .reconstruct(&row, *keep)
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect();
        }
        let picture = image::GrayImage::from_raw(28, 28, pixels).ok_or_else(|| bad("image size".into()))?;
        picture.save(&image_path).map_err(|e| Error::Dataset {
            path: image_path.clone(),
            reason: e.to_string(),
        })?;
        let mut line = serde_json::json!({
            "id": id,
            "label": digit.to_string(),
            "split": split,
            "image": format!("images/{split}/{id}.png"),
            "audio": format!("audio/{}", audio_name.display()),
        });
        if let Some(group) = group {
            line["group"] = group.into();
        }
        manifest.push_str(&line.to_string());
        manifest.push('\n');
        counts[["train", "val", "test"].iter().position(|s| *s == split).unwrap_or(0)] += 1;
    }
    let manifest_path = out.join("manifest.jsonl");
    std::fs::write(&manifest_path, &manifest).map_err(|e| io(&manifest_path, e))?;
    let manifest_sha256 = crate::features::hex(&Sha256::digest(manifest.as_bytes()));
    Ok(AvMnistSummary {
        manifest: manifest_path,
        counts,
        recordings: [used[0].len(), used[1].len()],
        manifest_sha256,
    })
}
