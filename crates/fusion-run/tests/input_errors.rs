//! Every encoder a run configuration can name refuses a wrongly shaped or typed input with
//! a typed error (`InputMismatch`: what it expects, what it was given), never a panic
//! inside libtorch.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fusion_core::{Encoder, ModalityInput};
use fusion_run::ModalitySpec;
use tch::{Device, Kind, Tensor, nn::VarStore};

fn fixtures() -> PathBuf {
    std::env::var_os("FUSION_FIXTURES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
        PathBuf::from,
    )
}

/// Modality specifications covering every encoder kind that needs no downloaded weights.
fn specs() -> Vec<String> {
    let tokenizer = fixtures().join("text/tiny_tokenizer.json");
    let mut specs = vec![
        r#"{"name": "image", "features": {"kind": "pixels", "size": 8}, "encoder": {"kind": "mlp", "hidden": [8]}}"#.to_string(),
        r#"{"name": "image", "features": {"kind": "pixels", "size": 8}, "encoder": {"kind": "identity"}}"#.to_string(),
        r#"{"name": "image", "features": {"kind": "image", "size": 28, "grey": true}, "encoder": {"kind": "lenet"}}"#.to_string(),
        r#"{"name": "image", "features": {"kind": "image", "size": 28, "grey": true}, "encoder": {"kind": "multibench_lenet", "extra_layers": 1}}"#.to_string(),
        r#"{"name": "image", "features": {"kind": "image", "size": 32}, "encoder": {"kind": "resnet18", "width": 4}}"#.to_string(),
        r#"{"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 16, "frames": 16}, "encoder": {"kind": "audio_cnn", "base_channels": 4, "blocks": 2}}"#.to_string(),
        r#"{"name": "audio", "features": {"kind": "log_mel", "sample_rate": 8000, "n_mels": 16, "frames": 16}, "encoder": {"kind": "audio_gru", "hidden": 8}}"#.to_string(),
        r#"{"name": "video", "features": {"kind": "video_frames", "frames": 2, "size": 28}, "encoder": {"kind": "video", "frame": {"kind": "lenet"}}}"#.to_string(),
        format!(
            r#"{{"name": "text", "features": {{"kind": "tokens", "tokenizer": "{}", "max_len": 8}}, "encoder": {{"kind": "transformer", "width": 16, "layers": 1, "heads": 2}}}}"#,
            tokenizer.display()
        ),
        r#"{"name": "table", "features": {"kind": "table", "columns": [{"kind": "numeric", "name": "x", "mean": 0.0, "std": 1.0}, {"kind": "categorical", "name": "c", "categories": ["a", "b"]}]}, "encoder": {"kind": "tabular_mlp", "hidden": [8]}}"#.to_string(),
        r#"{"name": "table", "features": {"kind": "table", "columns": [{"kind": "numeric", "name": "x", "mean": 0.0, "std": 1.0}, {"kind": "categorical", "name": "c", "categories": ["a", "b"]}]}, "encoder": {"kind": "feature_tokenizer"}}"#.to_string(),
    ];
    let models = fusion_run::models_dir().unwrap_or_default();
    if models.join("efficientnet-lite0/model.safetensors").exists() {
        specs.push(r#"{"name": "image", "features": {"kind": "image", "size": 224, "normalize": "imagenet"}, "encoder": {"kind": "efficientnet_lite0"}}"#.to_string());
    }
    let minilm = models.join("all-MiniLM-L6-v2");
    if minilm.join("model.safetensors").exists() {
        specs.push(format!(
            r#"{{"name": "text", "features": {{"kind": "tokens", "tokenizer": "{}"}}, "encoder": {{"kind": "bert", "model": "all-MiniLM-L6-v2"}}}}"#,
            minilm.join("tokenizer.json").display()
        ));
    }
    specs
}

#[test]
fn every_encoder_refuses_a_wrong_input_with_a_typed_error() {
    let wrong = [
        Tensor::zeros([2, 1, 1, 1, 1, 1], (Kind::Float, Device::Cpu)),
        Tensor::zeros([2], (Kind::Int64, Device::Cpu)),
    ];
    let specs = specs();
    // `cargo xtask test` fetches the pretrained weights: both pretrained encoders count.
    let expected = if std::env::var_os("FUSION_REQUIRE_ASSETS").is_some() {
        13
    } else {
        11
    };
    assert!(specs.len() >= expected, "{} encoders", specs.len());
    for json in &specs {
        let spec: ModalitySpec = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        let vs = VarStore::new(Device::Cpu);
        let encoder: Box<dyn Encoder> = spec
            .encoder
            .build(&vs.root(), &spec.features, 16, 0.0)
            .unwrap_or_else(|e| panic!("{json}: {e}"));
        for input in &wrong {
            let batch = ModalityInput::dense(input.shallow_clone());
            let refused = encoder.encode(&batch, false).map(|_| ()).unwrap_err();
            assert_eq!(refused.shape, input.size(), "{json}");
            assert!(!refused.expected.is_empty(), "{json}");
            assert!(refused.to_string().starts_with("expected "), "{json}: {refused}");
        }
    }
}
