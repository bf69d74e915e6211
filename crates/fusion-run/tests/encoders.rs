//! Every encoder kind from a run configuration, end to end on a slice of the demo data
//! (images, recordings, video clips with sound, and generated texts): trains, reloads from
//! its folder to the same outputs, predicts raw records to the same probabilities, and
//! exports TorchScript that computes them too. The end-to-end tests run on
//! `FUSION_TEST_DEVICE` (`cpu`, `cuda`…; default the CPU): `benchmarks/gpu.sh` runs them on a GPU.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fusion_core::{FusionModel, ModalityInput, TensorDataset, export_arguments, export_torchscript};
use fusion_data::{FeatureCache, Manifest, Record, Split};
use fusion_run::{Predictor, Run, RunConfig};
use tch::{Device, Kind, Tensor};

const WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// The repository's fixtures; `FUSION_FIXTURES` names them where the test binary runs away
/// from the checkout it was built in (`benchmarks/gpu.sh`).
fn fixtures() -> PathBuf {
    std::env::var_os("FUSION_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
        PathBuf::from,
    )
}

/// The first `per_split` train and test records of the demo, with absolute paths and a
/// text naming the digit (every 4th text names another digit: text alone is not enough).
fn manifest(dir: &Path, per_split: usize) -> PathBuf {
    let demo = fixtures().join("demo");
    let text = std::fs::read_to_string(demo.join("manifest.jsonl")).unwrap();
    let mut lines = Vec::new();
    for split in ["train", "test"] {
        let taken = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["split"] == split && r["id"].as_str().unwrap().starts_with(split))
            .filter(|r| ["image", "audio", "video"].iter().all(|f| r.get(*f).is_some()))
            .take(per_split);
        for (i, mut record) in taken.enumerate() {
            for field in ["image", "audio", "video"] {
                record[field] = demo.join(record[field].as_str().unwrap()).display().to_string().into();
            }
            let digit: usize = record["label"].as_str().unwrap().parse().unwrap();
            let said = if i % 4 == 3 { (digit + 3) % 10 } else { digit };
            record["text"] = format!("the {}", WORDS[said]).into();
            lines.push(record.to_string());
        }
    }
    let path = dir.join("manifest.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn config(dir: &Path, modalities: &str, fusion: &str, epochs: usize) -> RunConfig {
    let tokenizer = fixtures().join("text/tiny_tokenizer.json");
    let text = format!(
        r#"{{
  "manifest": "manifest.jsonl",
  "allow_paths_outside_manifest": true,
  "cache": "cache",
  "modalities": [{modalities}],
  "hidden_dim": 16,
  "fusion": {fusion},
  "train": {{"epochs": {epochs}, "batch_size": 16, "optimizer": {{"kind": "adam_w", "lr": 0.003}}, "seed": 3}}
}}"#
    )
    .replace("TOKENIZER", &tokenizer.display().to_string());
    let path = dir.join("config.json");
    std::fs::write(&path, text).unwrap();
    RunConfig::load(&path).unwrap()
}

/// The device of the end-to-end tests.
fn test_device() -> Device {
    fusion_core::testing::device_from_env("FUSION_TEST_DEVICE").unwrap_or_else(|e| panic!("{e}"))
}

fn log_probs(model: &FusionModel, data: &TensorDataset) -> Tensor {
    let all = Tensor::arange(data.len(), (Kind::Int64, Device::Cpu));
    let (inputs, _) = data.batch(&all, model.device());
    tch::no_grad(|| model.forward_t(&inputs, false)).unwrap().prediction
}

fn max_difference(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

/// Trains `config`, then checks reload, prediction from raw files and export; returns the
/// test accuracy and the training outcome.
fn end_to_end(dir: &Path, config: &RunConfig) -> f64 {
    train_and_check(dir, config, "run").0
}

fn train_and_check(dir: &Path, config: &RunConfig, run_name: &str) -> (f64, fusion_run::Trained) {
    config.validate().unwrap();
    let device = test_device();
    // The records name the repository's fixtures, outside the run's folder.
    let manifest = Manifest::load_with(&config.manifest, config.path_scope()).unwrap();
    let specs = config.feature_specs();
    let cache = FeatureCache::new(config.cache_folder().unwrap());
    let extraction = fusion_data::extract(&manifest, &specs, Some(&cache), None, &Default::default(), &|_| {}).unwrap();
    assert!(extraction.problems.is_empty(), "{:?}", extraction.problems);
    let run = Run::new(dir.join(run_name));
    let trained = fusion_run::train(
        config,
        &extraction,
        &specs,
        &run,
        device,
        fusion_core::Strategy::SingleProcess,
        &mut |_| {},
    )
    .unwrap();
    let test = fusion_run::split_dataset(config, &extraction, &specs, Split::Test, &trained.classes, device).unwrap();
    let trained_out = log_probs(&trained.model, &test.data);
    // Raw inputs (frozen encoders run their backbone) give what cached outputs give.
    let raw = fusion_run::dataset(
        &extraction,
        &extraction.split_indices(Split::Test),
        (config.task, &trained.classes),
        &config.modalities,
        &config.columns(&specs).unwrap(),
        device,
    )
    .unwrap();
    assert!(max_difference(&trained_out, &log_probs(&trained.model, &raw.data)) < 1e-5);

    // The model rebuilt from the folder alone is the trained one.
    let (reloaded, vs) = run.model(device).unwrap();
    let reloaded_out = log_probs(&reloaded, &test.data);
    assert!(max_difference(&trained_out, &reloaded_out) < 1e-6);
    let model_json = std::fs::read_to_string(run.folder.model_config()).unwrap();
    for m in &config.modalities {
        assert!(
            model_json.contains(&format!("\"kind\": \"{}\"", m.encoder.kind_name())),
            "model.json describes the {} encoder",
            m.name
        );
    }

    // Raw files through the predictor give the same probabilities.
    let records: Vec<Record> = test.records.iter().map(|&i| extraction.records[i].clone()).collect();
    let predictions = Predictor::load(run.root(), device).unwrap().predict(&records).unwrap();
    let predicted: Vec<f64> = predictions
        .iter()
        .flat_map(|p| p.scores.iter().map(|&v| f64::from(v)))
        .collect();
    let expected = Vec::<f64>::try_from(trained_out.exp().to_kind(Kind::Double).view([-1])).unwrap();
    let worst = predicted
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "predictor differs by {worst}");

    // TorchScript traced on a two-sample example computes the same on the whole test set.
    let path = dir.join("model.pt");
    let signature = export_torchscript(
        &reloaded,
        &vs,
        &fusion_run::example_inputs(config, device),
        &trained.classes,
        None,
        &path,
    )
    .unwrap();
    for (m, spec) in config.modalities.iter().enumerate() {
        let dtype = &signature
            .inputs
            .iter()
            .find(|i| i.name == format!("{}.features", spec.name))
            .unwrap()
            .dtype;
        let want = if spec.features.integer() { "int64" } else { "float32" };
        assert_eq!(dtype, want, "modality {m}");
    }
    let module = tch::CModule::load_on_device(&path, device).unwrap();
    let all = Tensor::arange(test.data.len(), (Kind::Int64, Device::Cpu));
    let (inputs, labels): (Vec<ModalityInput>, Tensor) = raw.data.batch(&all, device);
    let exported = tch::no_grad(|| module.forward_ts(&export_arguments(&inputs))).unwrap();
    assert!(max_difference(&trained_out, &exported) < 1e-4);
    let accuracy = f64::try_from(
        trained_out
            .argmax(-1, false)
            .eq_tensor(&labels)
            .to_kind(Kind::Double)
            .mean(Kind::Double),
    )
    .unwrap();
    // The library path from the configuration alone: the same records, and an evaluation
    // (written to eval.json) with the accuracy computed here.
    let (_, loaded) = fusion_run::load(config, None, None, &()).unwrap();
    assert_eq!(loaded.extraction.records.len(), extraction.records.len());
    let eval = run.evaluate(&test, &trained.classes, "test", device).unwrap();
    assert!(
        (eval.metrics.accuracy - accuracy).abs() < 1e-9,
        "{} vs {accuracy}",
        eval.metrics.accuracy
    );
    assert!(run.file("eval.json").exists());
    // Predicting every record of the manifest (through the feature cache, as `fusion
    // predict` does) gives the test records the trained model's outputs, and the raw-file
    // path gives the same predictions: one path, two sources of features.
    let predictor = Predictor::load(run.root(), device).unwrap();
    let predicted = predictor.predict_manifest(None, &()).unwrap();
    assert_eq!(predicted.predictions.len(), loaded.extraction.records.len());
    let expected: Vec<Vec<f32>> = Vec::try_from(trained_out.exp().to_kind(Kind::Float)).unwrap();
    for (k, &i) in test.records.iter().enumerate() {
        let id = &extraction.records[i].id;
        let line = predicted.predictions.iter().find(|p| &p.id == id).unwrap();
        let worst = line
            .scores
            .iter()
            .zip(&expected[k])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "record {i}: {worst}");
        let from_files = &predictions[k];
        assert_eq!((&from_files.id, &from_files.prediction), (&line.id, &line.prediction));
        assert_eq!(from_files.missing, line.missing);
    }
    (accuracy, trained)
}

const IMAGE_LENET: &str =
    r#"{"name": "image", "features": {"kind": "image", "size": 28, "grey": true}, "encoder": {"kind": "lenet"}}"#;
const AUGMENTED_LENET: &str = r#"{"name": "image", "features": {"kind": "image", "size": 28, "grey": true}, "encoder": {"kind": "lenet"}, "augment": {"shift": 2}}"#;
const AUDIO_CNN: &str = r#"{"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 32, "frames": 32}, "encoder": {"kind": "audio_cnn", "base_channels": 8}}"#;

#[test]
fn cnn_encoders_over_images_and_log_mels() {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 48);
    let config = config(
        dir.path(),
        &format!("{AUGMENTED_LENET}, {AUDIO_CNN}"),
        r#"{"family": "early", "method": "concat"}"#,
        12,
    );
    // 12 epochs of 3 steps: over seeds 0..20 the last epoch's loss lies in 1.04..1.70
    // (from ln 10 = 2.30) and test accuracy in 0.25..0.48; 6 epochs left some seeds at chance.
    let (accuracy, trained) = train_and_check(dir.path(), &config, "run");
    let last_loss = trained.summary.epochs.last().unwrap().train_loss;
    assert!(
        last_loss < 1.9,
        "LeNet + audio CNN fit the training set: loss {last_loss}"
    );
    assert!(accuracy > 0.2, "LeNet + audio CNN learn something: {accuracy}");
}

#[test]
fn resnet_and_spectrogram_lenet_and_gru() {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 24);
    let modalities = [
        r#"{"name": "image", "features": {"kind": "image", "size": 28, "grey": true}, "encoder": {"kind": "resnet18", "width": 4}}"#,
        r#"{"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 28, "frames": 28}, "encoder": {"kind": "lenet"}}"#,
    ];
    let cnn = config(
        dir.path(),
        &modalities.join(", "),
        r#"{"family": "late", "combiner": "learned"}"#,
        2,
    );
    end_to_end(dir.path(), &cnn);
    let gru = [
        r#"{"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 16, "frames": 20}, "encoder": {"kind": "audio_gru", "hidden": 16}}"#,
    ];
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 24);
    let gru = config(
        dir.path(),
        &gru.join(", "),
        r#"{"family": "early", "method": "concat"}"#,
        2,
    );
    end_to_end(dir.path(), &gru);
}

/// Sequences reach the fusion: token states of a small transformer, GRU frame states and
/// per-frame video features, fused by cross-modal attention with their padding masks.
#[test]
#[cfg(feature = "video")]
fn sequences_fused_by_attention() {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 24);
    let modalities = [
        r#"{"name": "text", "features": {"kind": "tokens", "tokenizer": "TOKENIZER", "max_len": 8}, "encoder": {"kind": "transformer", "width": 16, "layers": 1, "heads": 2, "pooling": "sequence"}}"#,
        r#"{"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 16, "frames": 12}, "encoder": {"kind": "audio_gru", "hidden": 12, "sequence": true}}"#,
        r#"{"name": "video", "features": {"kind": "video_frames", "frames": 2, "size": 28}, "encoder": {"kind": "video", "frame": {"kind": "lenet"}, "pooling": "sequence"}}"#,
    ];
    let config = config(
        dir.path(),
        &modalities.join(", "),
        r#"{"family": "early", "method": "attention", "heads": 2, "layers": 1}"#,
        2,
    );
    end_to_end(dir.path(), &config);
}

#[test]
#[cfg(feature = "video")]
fn video_encoder_pooling_and_sound_track() {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 24);
    let modalities = [
        r#"{"name": "video", "features": {"kind": "video_frames", "frames": 2, "size": 28}, "encoder": {"kind": "video", "frame": {"kind": "lenet"}, "pooling": "attention"}}"#,
        r#"{"name": "sound_track", "features": {"kind": "sound_track", "sample_rate": 8000, "n_mels": 16, "frames": 16}, "encoder": {"kind": "audio_cnn", "base_channels": 4, "blocks": 2}}"#,
    ];
    let config = config(
        dir.path(),
        &modalities.join(", "),
        r#"{"family": "hybrid", "early": {"method": "concat"}, "combiner": {"combiner": "mean"}}"#,
        2,
    );
    end_to_end(dir.path(), &config);
}

/// Encoders are checked against their features, naming the field.
#[test]
fn mismatched_encoders_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 4);
    let cases = [
        (
            r#"{"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 8, "frames": 8}, "encoder": {"kind": "efficientnet_lite0"}}"#,
            "modalities[0].encoder: `efficientnet_lite0` reads ImageNet-normalised RGB images",
        ),
        (
            r#"{"name": "image", "features": {"kind": "image", "size": 32}, "encoder": {"kind": "efficientnet_lite0"}}"#,
            "ImageNet-normalised",
        ),
        (
            r#"{"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 8, "frames": 8}, "encoder": {"kind": "audio_gru", "sequence": true, "output_dim": 8}}"#,
            "modalities[0].encoder.output_dim",
        ),
        (
            r#"{"name": "image", "features": {"kind": "pixels", "size": 28}, "encoder": {"kind": "mlp", "hidden": [8]}, "augment": {"flip": true}}"#,
            "modalities[0].augment",
        ),
        (
            r#"{"name": "image", "features": {"kind": "pixels", "size": 28}, "encoder": {"kind": "lenet"}}"#,
            "modalities[0].encoder: `lenet` reads images",
        ),
        (
            r#"{"name": "text", "features": {"kind": "tokens", "tokenizer": "TOKENIZER"}, "encoder": {"kind": "mlp", "hidden": [8]}}"#,
            "token ids need `bert` or `transformer`",
        ),
        (
            r#"{"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 8, "frames": 8}, "encoder": {"kind": "audio_cnn", "blocks": 4}}"#,
            "modalities[0].encoder.blocks",
        ),
        (
            r#"{"name": "video", "features": {"kind": "video_frames", "frames": 2, "size": 28}, "encoder": {"kind": "video", "frame": {"kind": "audio_gru"}}}"#,
            "modalities[0].encoder.frame",
        ),
        (
            r#"{"name": "text", "features": {"kind": "tokens", "tokenizer": "TOKENIZER"}, "encoder": {"kind": "transformer", "width": 10, "heads": 3}}"#,
            "modalities[0].encoder.heads",
        ),
        // Sizes that made libtorch's allocation fail inside tch (a panic, exit 101).
        (
            r#"{"name": "image", "features": {"kind": "pixels", "size": 8}, "encoder": {"kind": "mlp", "hidden": [50000]}}"#,
            "modalities[0].encoder.hidden: 50000 is outside 1..=16384",
        ),
        (
            r#"{"name": "image", "features": {"kind": "pixels", "size": 224}, "encoder": {"kind": "mlp", "hidden": [16384]}}"#,
            "modalities[0].encoder.hidden: a layer of 50176 × 16384 weights",
        ),
        (
            r#"{"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 8, "frames": 8}, "encoder": {"kind": "audio_gru", "hidden": 100000}}"#,
            "modalities[0].encoder.hidden: 100000 is outside",
        ),
        (
            r#"{"name": "image", "features": {"kind": "image", "size": 32}, "encoder": {"kind": "resnet18", "output_dim": 1000000}}"#,
            "modalities[0].encoder.output_dim: 1000000 is outside",
        ),
        (
            r#"{"name": "text", "features": {"kind": "tokens", "tokenizer": "TOKENIZER"}, "encoder": {"kind": "transformer", "width": 32, "heads": 4, "layers": 1000}}"#,
            "modalities[0].encoder.layers: 1000 is outside 1..=64",
        ),
    ];
    for (modality, expected) in cases {
        let config = config(dir.path(), modality, r#"{"family": "late", "combiner": "mean"}"#, 1);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(expected), "`{expected}` not in {error}");
    }
    // Every compare row's fusion is checked before anything trains.
    let rows = fusion_run::CompareConfig {
        run: config(dir.path(), IMAGE_LENET, r#"{"family": "late", "combiner": "mean"}"#, 1),
        rows: vec![
            serde_json::from_str(
                r#"{"name": "bad row", "fusion": {"family": "early", "method": "attention", "heads": 3, "layers": 1}}"#,
            )
            .unwrap(),
        ],
    };
    let error = rows.validate().unwrap_err().to_string();
    assert!(error.contains("compare[0]") && error.contains("heads"), "{error}");

    let path = dir.path().join("typo.json");
    std::fs::write(
        &path,
        r#"{"manifest": "m.jsonl", "modalities": [{"name": "image", "features": {"kind": "image", "size": 28}, "encoder": {"kind": "lenet", "outptu_dim": 4}}], "fusion": {"family": "late", "combiner": "mean"}, "train": {"epochs": 1, "batch_size": 4}}"#,
    )
    .unwrap();
    let error = RunConfig::load(&path).unwrap_err().to_string();
    assert!(
        error.contains("modalities[0].encoder") && error.contains("outptu_dim"),
        "{error}"
    );
}

/// The fetched models folder, or `None` (skipping) when `cargo xtask models` has not run;
/// `cargo xtask test` requires it.
fn models() -> Option<PathBuf> {
    match fusion_run::models_dir().filter(|d| d.join("efficientnet-lite0/model.safetensors").exists()) {
        Some(dir) => Some(dir),
        None if std::env::var_os("FUSION_REQUIRE_ASSETS").is_some() => {
            panic!("pretrained models missing: run `cargo xtask models`")
        }
        None => {
            eprintln!("skipping: pretrained models not fetched (`cargo xtask models`)");
            None
        }
    }
}

fn variable(trained: &fusion_run::Trained, name: &str) -> Tensor {
    trained.vs.variables().remove(name).unwrap()
}

/// A frozen pretrained encoder keeps its weights and runs once per file: a second run
/// reads every output from the cache; fine-tuned, its weights move.
#[test]
fn frozen_efficientnet_runs_once_per_file_and_fine_tuned_moves() {
    let Some(models) = models() else { return };
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 16);
    let efficientnet = |encoder: &str| {
        format!(
            r#"{{"name": "image", "features": {{"kind": "image", "size": 32, "normalize": "imagenet"}}, "encoder": {encoder}}}, {AUDIO_CNN}"#
        )
    };
    let frozen = config(
        dir.path(),
        &efficientnet(r#"{"kind": "efficientnet_lite0"}"#),
        r#"{"family": "early", "method": "concat"}"#,
        2,
    );
    let (_, first) = train_and_check(dir.path(), &frozen, "frozen");
    // 16 train and 16 test images: every train file once (test ones at evaluation).
    assert_eq!((first.frozen.computed, first.frozen.cached), (16, 0));
    let (_, second) = train_and_check(dir.path(), &frozen, "frozen_again");
    assert_eq!(
        (second.frozen.computed, second.frozen.cached),
        (0, 16),
        "no backbone pass"
    );
    let pretrained: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(models.join("efficientnet-lite0/model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let stem = "encoder.image._conv_stem.weight";
    // The frozen backbone is neither counted as trained nor stored: its variables are not
    // the model's, and checkpoints hold none of them (train_and_check showed that its raw
    // outputs are the cached ones and that the folder alone rebuilds the model).
    assert!(first.parameters < 100_000, "{}", first.parameters);
    assert!(first.vs.variables().keys().all(|k| !k.starts_with("encoder.image.")));
    for checkpoint in ["best", "last"] {
        let path = dir.path().join(format!("frozen/checkpoints/{checkpoint}.safetensors"));
        let saved = Tensor::read_safetensors(&path).unwrap();
        assert!(saved.iter().all(|(k, _)| !k.contains("encoder.image.")), "{checkpoint}");
        assert!(std::fs::metadata(&path).unwrap().len() < 2 << 20, "{checkpoint}");
    }
    // The run names the weights it was trained with; other weights are refused on loading.
    let backbones = dir.path().join("frozen/backbones.json");
    let named = std::fs::read_to_string(&backbones).unwrap();
    let digest: std::collections::BTreeMap<String, String> = serde_json::from_str(&named).unwrap();
    assert_eq!(digest["image"].len(), 64, "{named}");
    let other = named.replace(&digest["image"], &"0".repeat(64));
    std::fs::write(&backbones, other).unwrap();
    let refused = Run::new(dir.path().join("frozen"))
        .model(test_device())
        .err()
        .map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("modality `image` are not those it was trained with")),
        "{refused:?}"
    );
    std::fs::write(&backbones, named).unwrap();
    assert!(Run::new(dir.path().join("frozen")).model(test_device()).is_ok());

    let tuned = config(
        dir.path(),
        &efficientnet(r#"{"kind": "efficientnet_lite0", "frozen": false, "lr": 0.0001}"#),
        r#"{"family": "early", "method": "concat"}"#,
        1,
    );
    let (_, tuned) = train_and_check(dir.path(), &tuned, "tuned");
    assert_eq!(tuned.frozen, fusion_run::FrozenCounts::default());
    assert!(max_difference(&variable(&tuned, stem), &pretrained["_conv_stem.weight"]) > 0.0);
    assert!(tuned.parameters > 3_000_000, "{}", tuned.parameters);
}

/// all-MiniLM-L6-v2 over token ids: frozen (outputs cached) and fine-tuned (weights move).
#[test]
fn minilm_frozen_and_fine_tuned() {
    let Some(models) = models() else { return };
    let tokenizer = models.join("all-MiniLM-L6-v2/tokenizer.json");
    let dir = tempfile::tempdir().unwrap();
    manifest(dir.path(), 16);
    let text = |encoder: &str| {
        format!(
            r#"{{"name": "text", "features": {{"kind": "tokens", "tokenizer": "{}", "max_len": 16}}, "encoder": {encoder}}}, {IMAGE_LENET}"#,
            tokenizer.display()
        )
    };
    let frozen = config(
        dir.path(),
        &text(r#"{"kind": "bert", "model": "all-MiniLM-L6-v2"}"#),
        r#"{"family": "late", "combiner": "mean"}"#,
        2,
    );
    let (_, first) = train_and_check(dir.path(), &frozen, "frozen");
    assert!(
        first.frozen.computed > 0 && first.frozen.cached == 0,
        "{:?}",
        first.frozen
    );
    let (_, again) = train_and_check(dir.path(), &frozen, "again");
    assert_eq!(again.frozen.computed, 0);
    let word = "encoder.text.embeddings.word_embeddings.weight";
    assert!(
        !first.vs.variables().contains_key(word),
        "frozen MiniLM is not the model's"
    );
    let before = Tensor::read_safetensors(models.join("all-MiniLM-L6-v2/model.safetensors"))
        .unwrap()
        .into_iter()
        .find(|(name, _)| name == "embeddings.word_embeddings.weight")
        .unwrap()
        .1;
    let tuned = config(
        dir.path(),
        &text(r#"{"kind": "bert", "model": "all-MiniLM-L6-v2", "frozen": false, "lr": 0.0001, "pooling": "sequence"}"#),
        r#"{"family": "early", "method": "cross_modal", "heads": 2, "layers": 1}"#,
        1,
    );
    let (_, tuned) = train_and_check(dir.path(), &tuned, "tuned");
    assert!(
        max_difference(&variable(&tuned, word), &before) > 0.0,
        "fine-tuning moves MiniLM"
    );
}

/// The AV-MNIST benchmark's committed configurations (`configs/avmnist/`) parse, pass
/// validation, build their models and run them: a typo there would only surface hours into
/// `cargo xtask bench avmnist`. The MultiBench-like rows have MultiBench's sizes.
#[test]
fn avmnist_benchmark_configurations_build() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/avmnist");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 16, "{files:?}");
    let classes: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let config = RunConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let model = fusion_run::build_model(&vs, &config, &classes, &config.fusion, None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let inputs = fusion_run::example_inputs(&config, Device::Cpu);
        let out = model
            .forward_t(&inputs, false)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.prediction.size(), [2, 10], "{name}");
        if name == "concat" {
            // LeNet(1, 6, 3): convolutions 150 + 648 + 2,592 + 10,368, batch norms 180;
            // LeNet(1, 6, 5): two more convolutions (41,472 + 165,888), batch norms 756;
            // placeholders for absent modalities 48 + 192; head (240 + 2 presence) → 100 → 10.
            let image = 150 + 648 + 2_592 + 10_368 + 180;
            let audio = 150 + 648 + 2_592 + 10_368 + 41_472 + 165_888 + 756;
            let trainable: usize = vs.trainable_variables().iter().map(Tensor::numel).sum();
            assert_eq!(
                trainable,
                image + audio + 240 + 242 * 100 + 100 + 100 * 10 + 10,
                "{name}"
            );
        }
    }
}
