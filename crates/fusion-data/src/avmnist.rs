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
}

impl Default for AvMnistOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            train: 55_000,
            val: 5_000,
            test: 10_000,
            test_speakers: None,
        }
    }
}

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
        let audio_name = source.file_name().map(PathBuf::from).unwrap_or_default();
        if used[usize::from(test)].insert(source.clone()) {
            let target = out.join("audio").join(&audio_name);
            std::fs::copy(source, &target).map_err(|e| io(source, e))?;
        }
        let id = format!("{split}_{n:05}");
        let image_path = out.join("images").join(split).join(format!("{id}.png"));
        let pixels = images.data[index * images.item_size..(index + 1) * images.item_size].to_vec();
        let picture = image::GrayImage::from_raw(28, 28, pixels).ok_or_else(|| bad("image size".into()))?;
        picture.save(&image_path).map_err(|e| Error::Dataset {
            path: image_path.clone(),
            reason: e.to_string(),
        })?;
        let line = serde_json::json!({
            "id": id,
            "label": digit.to_string(),
            "split": split,
            "image": format!("images/{split}/{id}.png"),
            "audio": format!("audio/{}", audio_name.display()),
        });
        manifest.push_str(&line.to_string());
        manifest.push('\n');
        counts[["train", "val", "test"].iter().position(|s| *s == split).unwrap_or(0)] += 1;
    }
    let manifest_path = out.join("manifest.jsonl");
    std::fs::write(&manifest_path, &manifest).map_err(|e| io(&manifest_path, e))?;
    let manifest_sha256 = Sha256::digest(manifest.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(AvMnistSummary {
        manifest: manifest_path,
        counts,
        recordings: [used[0].len(), used[1].len()],
        manifest_sha256,
    })
}
