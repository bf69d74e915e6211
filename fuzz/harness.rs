//! One function per fuzz target: feeds arbitrary bytes to a reader of untrusted input and
//! says whether it accepted them. Each must return (refusing is fine) without panicking,
//! hanging or allocating without bound.
//! Used by the `cargo fuzz` targets in `fuzz/fuzz_targets/` and, over the committed corpora
//! and every input that once failed, by the normal test suite
//! (`crates/fusion-run/tests/fuzz_regressions.rs`).

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use fusion_data::{FeatureCache, FeatureConfig, LogMelConfig, Manifest, PathScope, Prepared};

/// A target: reads the bytes, says whether it accepted them.
pub type Target = fn(&[u8]) -> bool;

/// The fuzz targets, by name.
pub const TARGETS: [(&str, Target); 13] = [
    ("wav_log_mel", wav_log_mel),
    ("image", image),
    ("video", video),
    ("tokens", tokens),
    ("manifest_jsonl", manifest_jsonl),
    ("manifest_csv", manifest_csv),
    ("feature_shard", feature_shard),
    ("run_config", run_config),
    ("checkpoint", checkpoint),
    ("table_inference", table_inference),
    ("ensemble_file", ensemble_file),
    ("shard_index", shard_index),
    ("run_json", run_json),
];

fn compute(config: &FeatureConfig, prepared: &Prepared, data: &[u8], path: &Path) -> bool {
    config.compute_prepared(prepared, data, path).is_ok_and(|v| v.is_some())
}

/// WAV reading, resampling and the log-mel spectrogram.
pub fn wav_log_mel(data: &[u8]) -> bool {
    let config = FeatureConfig::LogMel(LogMelConfig {
        sample_rate: 8000,
        n_mels: 16,
        frames: 16,
        n_fft: 256,
        hop_length: 128,
    });
    compute(&config, &Prepared::default(), data, Path::new("fuzz.wav"))
}

/// Image decoding (any supported format) and preprocessing to a normalised tensor.
pub fn image(data: &[u8]) -> bool {
    let config = FeatureConfig::Image {
        size: 16,
        grey: false,
        normalize: fusion_data::ImageNormalization::Imagenet,
    };
    compute(&config, &Prepared::default(), data, Path::new("fuzz.img"))
}

/// A folder of this process for files the readers need a path to (tmpfs when there is one).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("fusion-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    })
}

fn write_scratch(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    let _ = std::fs::write(&path, data);
    path
}

/// Video container opening and decoding of a few frames through FFmpeg.
pub fn video(data: &[u8]) -> bool {
    let path = write_scratch("fuzz.video", data);
    let config = FeatureConfig::VideoFrames {
        frames: 2,
        size: 8,
        grey: true,
        normalize: fusion_data::ImageNormalization::None,
    };
    compute(&config, &Prepared::default(), data, &path)
}

/// Tokenizer batch encoding of arbitrary (also invalid UTF-8) text.
pub fn tokens(data: &[u8]) -> bool {
    static PREPARED: OnceLock<(FeatureConfig, Prepared)> = OnceLock::new();
    let (config, prepared) = PREPARED.get_or_init(|| {
        let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/text/tiny_tokenizer.json")
            .canonicalize()
            .or_else(|_| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../fixtures/text/tiny_tokenizer.json")
                    .canonicalize()
            })
            .expect("the tiny tokenizer fixture");
        let config = FeatureConfig::Tokens { tokenizer, max_len: 32 };
        let prepared = config.prepare().expect("the tokenizer loads");
        (config, prepared)
    });
    compute(config, prepared, data, Path::new("fuzz.txt"))
}

/// The JSON Lines manifest parser.
pub fn manifest_jsonl(data: &[u8]) -> bool {
    !Manifest::parse_jsonl(data, Path::new("/fuzz/manifest.jsonl"), PathScope::ManifestFolder)
        .records
        .is_empty()
}

/// The CSV manifest parser.
pub fn manifest_csv(data: &[u8]) -> bool {
    Manifest::parse_csv(data, Path::new("/fuzz/manifest.csv"), PathScope::ManifestFolder)
        .is_ok_and(|m| !m.records.is_empty())
}

/// A feature-cache shard (safetensors with a checksum).
pub fn feature_shard(data: &[u8]) -> bool {
    let folder = scratch().join("cache");
    let _ = std::fs::create_dir_all(folder.join("shard"));
    let _ = std::fs::write(folder.join("shard/fuzz.safetensors"), data);
    FeatureCache::new(&folder)
        .load_named("shard", &|_: &[usize]| true, "any")
        .is_ok_and(|found| !found.is_empty())
}

/// A run configuration with its compare rows: parsing and validation.
pub fn run_config(data: &[u8]) -> bool {
    fusion_run::CompareConfig::parse(data, Path::new("/fuzz/config.json")).is_ok_and(|config| config.validate().is_ok())
}

/// A checkpoint: safetensors with a checksum, read by libtorch's loader.
pub fn checkpoint(data: &[u8]) -> bool {
    let path = write_scratch("fuzz.safetensors", data);
    fusion_core::read_checked_safetensors(&path).is_ok()
}

/// Zero-config table inference and the configuration built from it: the first byte picks
/// CSV (even) or JSON Lines (odd), the rest is the table; its `label` column is the label.
pub fn table_inference(data: &[u8]) -> bool {
    let Some((kind, table)) = data.split_first() else {
        return false;
    };
    let name = if kind % 2 == 0 { "table.csv" } else { "table.jsonl" };
    let path = write_scratch(name, table);
    let given = std::collections::BTreeMap::new();
    let Ok(inference) = fusion_data::infer_columns(&path, "label", &given, PathScope::ManifestFolder) else {
        return false;
    };
    let _ = inference.table();
    fusion_run::zero_config(&inference, fusion_run::Preset::Fast).is_ok_and(|(config, _)| config.validate().is_ok())
}

/// An ensemble's `ensemble.json`: parsing and its checks.
pub fn ensemble_file(data: &[u8]) -> bool {
    fusion_run::EnsembleFile::parse(data, Path::new("/fuzz/ensemble.json")).is_ok()
}

/// The folder of a streamed dataset whose `index.json` is the input, over three shards
/// written once (two modalities: flat numbers, and token ids with a padding mask): opening checks
/// the index against the shards, then every row is read.
pub fn shard_index(data: &[u8]) -> bool {
    static SHARDS: OnceLock<PathBuf> = OnceLock::new();
    let folder = SHARDS.get_or_init(|| {
        let folder = scratch().join("shards");
        let rows = 6;
        let flat = tch::Tensor::arange(rows * 3, (tch::Kind::Float, tch::Device::Cpu)).view([rows, 3]);
        let tokens = tch::Tensor::arange(rows * 4, (tch::Kind::Int64, tch::Device::Cpu)).view([rows, 4]);
        let labels = tch::Tensor::arange(rows, (tch::Kind::Int64, tch::Device::Cpu)).remainder(2);
        let mut data =
            fusion_core::TensorDataset::dense(vec![flat, tokens.shallow_clone()], labels).expect("a small dataset");
        data.padding[1] = Some(tokens.ge(2));
        fusion_core::ShardedDataset::write(&data, &folder, 150).expect("shards written");
        folder
    });
    let _ = std::fs::write(folder.join("index.json"), data);
    let Ok(dataset) = fusion_core::ShardedDataset::open(folder) else {
        return false;
    };
    let rows = fusion_core::TrainingData::len(&dataset);
    dataset
        .batch(&tch::Tensor::arange(rows, (tch::Kind::Int64, tch::Device::Cpu)))
        .is_ok()
}

/// A run folder's JSON files as the library reads them back: the first byte picks the
/// file (`run.json`, `classes.json`, `model.json`, `train.json`), the rest is its content.
pub fn run_json(data: &[u8]) -> bool {
    let Some((which, content)) = data.split_first() else {
        return false;
    };
    let folder = scratch().join("run");
    let _ = std::fs::create_dir_all(&folder);
    let run = fusion_run::Run::new(&folder);
    let name = ["run.json", "classes.json", "model.json", "train.json"][usize::from(*which) % 4];
    let _ = std::fs::write(folder.join(name), content);
    match name {
        "run.json" => run.config().is_ok(),
        "classes.json" => run.classes().is_ok(),
        "model.json" => run.folder.load_model_config().is_ok_and(|c| c.validate().is_ok()),
        _ => run
            .read_json::<fusion_core::TrainConfig>(name)
            .is_ok_and(|c| c.validate().is_ok()),
    }
}
