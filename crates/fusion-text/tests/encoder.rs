//! The BERT encoder without pretrained files: loading errors, frozen versus fine-tuned
//! inside a fusion model, and training from scratch.
#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used)]

use std::io::Write;

use fusion_core::{
    EarlyMethod, Encoder, Error as CoreError, FusionConfig, FusionModel, Learner, ModalityConfig, ModalityInput,
    ModelConfig, Optimizer, RunFolder, TensorDataset, TrainConfig, evaluate,
};
use fusion_text::{Bert, BertConfig, Error, Pooling, TextEncoder, TextTokenizer};
use tch::{Device, Kind, Tensor, nn::VarStore};

fn tiny_config() -> BertConfig {
    BertConfig {
        hidden_size: 16,
        num_attention_heads: 2,
        intermediate_size: 32,
        num_hidden_layers: 1,
        max_position_embeddings: 32,
        hidden_dropout_prob: 0.0,
        attention_probs_dropout_prob: 0.0,
        ..BertConfig::small(20)
    }
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn weights_that_do_not_fit_the_config_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let vs = VarStore::new(Device::Cpu);
    let bert = Bert::new(&vs.root(), &tiny_config()).unwrap();
    let weights = dir.path().join("model.safetensors");
    Tensor::write_safetensors(bert.named_parameters(), &weights).unwrap();

    // Round trip: another encoder loads them and computes the same states.
    let other_vs = VarStore::new(Device::Cpu);
    let other = Bert::new(&other_vs.root(), &tiny_config()).unwrap();
    other.load_safetensors(&weights).unwrap();
    let ids = Tensor::from_slice(&[2i64, 5, 7, 0]).view([1, 4]);
    let mask = Tensor::from_slice(&[1i64, 1, 1, 0]).view([1, 4]);
    let diff = (bert.forward_t(&ids, &mask, None, false) - other.forward_t(&ids, &mask, None, false))
        .abs()
        .max();
    assert_eq!(f64::try_from(diff).unwrap(), 0.0);

    let wider = BertConfig {
        intermediate_size: 64,
        ..tiny_config()
    };
    let wider_vs = VarStore::new(Device::Cpu);
    let error = Bert::new(&wider_vs.root(), &wider)
        .unwrap()
        .load_safetensors(&weights)
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, Error::Weights { path, .. } if *path == weights),
        "{message}"
    );
    assert!(
        message.contains("encoder.layer.0.intermediate.dense.weight"),
        "{message}"
    );

    let deeper = BertConfig {
        num_hidden_layers: 2,
        ..tiny_config()
    };
    let deeper_vs = VarStore::new(Device::Cpu);
    let message = Bert::new(&deeper_vs.root(), &deeper)
        .unwrap()
        .load_safetensors(&weights)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("encoder.layer.1") && message.contains("missing"),
        "{message}"
    );

    let garbage = write(dir.path(), "garbage.safetensors", "not safetensors");
    let error = other.load_safetensors(&garbage).unwrap_err();
    assert!(
        matches!(&error, Error::Weights { path, .. } if *path == garbage),
        "{error}"
    );
}

#[test]
fn bad_config_files_are_typed_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("config.json");
    assert!(matches!(BertConfig::from_file(&missing), Err(Error::Config { path, .. }) if path == missing));
    let malformed = write(dir.path(), "malformed.json", "{ \"hidden_size\": ");
    assert!(matches!(BertConfig::from_file(&malformed), Err(Error::Config { path, .. }) if path == malformed));
    let mut bad_heads = serde_json::to_value(tiny_config()).unwrap();
    bad_heads["num_attention_heads"] = 3.into();
    let heads = write(dir.path(), "heads.json", &bad_heads.to_string());
    let message = BertConfig::from_file(&heads).unwrap_err().to_string();
    assert!(
        message.contains("heads.json") && message.contains("num_attention_heads"),
        "{message}"
    );
    let mut rotary = serde_json::to_value(tiny_config()).unwrap();
    rotary["position_embedding_type"] = "relative_key".into();
    let rotary = write(dir.path(), "rotary.json", &rotary.to_string());
    assert!(
        BertConfig::from_file(&rotary)
            .unwrap_err()
            .to_string()
            .contains("relative_key")
    );
}

#[test]
fn invalid_utf8_text_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.txt");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(b"caf\xe9 au lait")
        .unwrap();
    let error = fusion_text::read_text(&path).unwrap_err();
    assert!(matches!(&error, Error::Text { path: p, .. } if *p == path), "{error}");
    assert!(error.to_string().contains("offset 3"), "{error}");
    assert!(matches!(
        fusion_text::read_text(dir.path().join("absent.txt")),
        Err(Error::Text { .. })
    ));
}

fn text_model(vs: &VarStore, trainable: bool) -> FusionModel {
    let text = TextEncoder::new(&(vs.root() / "encoder" / "text"), &tiny_config(), Pooling::Mean, false).unwrap();
    text.set_trainable(trainable);
    let config = ModelConfig {
        modalities: vec![
            ModalityConfig {
                name: "text".into(),
                input_dim: 1,
                encoder: fusion_core::EncoderConfig::Identity,
            },
            ModalityConfig {
                name: "tabular".into(),
                input_dim: 3,
                encoder: Default::default(),
            },
        ],
        num_classes: 2,
        task: Default::default(),
        hidden_dim: 8,
        dropout: 0.0,
        fusion: FusionConfig::Early {
            method: EarlyMethod::Attention { heads: 2, layers: 1 },
        },
    };
    let tabular = fusion_core::MlpEncoder::new(&(vs.root() / "encoder" / "tabular"), 3, &[8], 0.0);
    FusionModel::with_encoders(&vs.root(), &config, vec![Box::new(text), Box::new(tabular)]).unwrap()
}

fn text_batch() -> (Vec<ModalityInput>, Tensor) {
    let ids = Tensor::from_slice(&[2i64, 3, 4, 0, 5, 6, 0, 0, 7, 8, 9, 10]).view([3, 4]);
    let mask = ids.ne(0);
    let mut text = ModalityInput::dense(ids);
    text.padding_mask = Some(mask);
    let tabular = ModalityInput::dense(Tensor::randn([3, 3], (Kind::Float, Device::Cpu)));
    (vec![text, tabular], Tensor::from_slice(&[0i64, 1, 0]))
}

#[test]
fn fine_tuned_encoder_gets_gradients_and_frozen_one_none() {
    for trainable in [true, false] {
        let vs = VarStore::new(Device::Cpu);
        let model = text_model(&vs, trainable);
        let (inputs, labels) = text_batch();
        let mut optimizer = Optimizer::new(&vs, &Default::default());
        optimizer.zero_grad();
        model.forward_t(&inputs, true).unwrap().loss(&labels, 1.0).backward();
        for (name, var) in vs.variables() {
            let is_text = name.starts_with("encoder.text.");
            let moved = fusion_core::testing::has_gradient(&var);
            // Padding ids never reach the word embeddings' rows, but the table gets gradients.
            if is_text && !trainable {
                assert!(!moved && !var.requires_grad(), "frozen `{name}` has a gradient");
            } else {
                assert!(moved, "`{name}` has no gradient (trainable: {trainable})");
            }
        }
    }
}

#[test]
fn token_ids_of_the_wrong_kind_or_length_are_rejected() {
    let vs = VarStore::new(Device::Cpu);
    let model = text_model(&vs, true);
    let (mut inputs, _) = text_batch();
    inputs[0].features = inputs[0].features.to_kind(Kind::Float);
    let error = model.forward_t(&inputs, false).unwrap_err();
    assert!(
        matches!(&error, CoreError::Input { modality, mismatch } if modality == "text" && mismatch.expected.contains("int64") && mismatch.kind == "Float"),
        "{error}"
    );
    let encoder = TextEncoder::new(&vs.root(), &tiny_config(), Pooling::Cls, true).unwrap();
    let too_long = Tensor::zeros([1, 40], (Kind::Int64, Device::Cpu));
    assert!(
        encoder
            .check_input(&too_long)
            .unwrap_err()
            .expected
            .contains("32 positions")
    );
}

/// A word-level tokenizer over a tiny vocabulary.
fn tokenizer(dir: &std::path::Path) -> TextTokenizer {
    let words = [
        "[PAD]", "[UNK]", "good", "great", "fine", "bad", "awful", "poor", "the", "film", "was", "plot",
    ];
    let vocab: serde_json::Map<String, serde_json::Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), i.into()))
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "[UNK]", "vocab": vocab}
    });
    TextTokenizer::from_file(write(dir, "tokenizer.json", &json.to_string()), 16).unwrap()
}

#[test]
fn a_small_encoder_learns_from_scratch() {
    tch::manual_seed(0);
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = tokenizer(dir.path());
    let (positive, negative, filler) = (
        ["good", "great", "fine"],
        ["bad", "awful", "poor"],
        ["the", "film", "was", "plot"],
    );
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for i in 0..240usize {
        let label = i % 2;
        let cue = if label == 0 {
            positive[i / 2 % 3]
        } else {
            negative[i / 2 % 3]
        };
        let mut words: Vec<&str> = (0..(i % 5 + 2)).map(|k| filler[(i + k) % 4]).collect();
        words.insert(i % words.len(), cue);
        texts.push(words.join(" "));
        labels.push(label as i64);
    }
    let batch = tokenizer.encode_batch(&texts).unwrap();
    let (ids, mask, _) = batch.to_tensors(Device::Cpu);
    let data = TensorDataset {
        features: vec![ids],
        padding: vec![Some(mask.ne(0))],
        present: vec![Tensor::ones([240], (Kind::Bool, Device::Cpu))],
        labels: Tensor::from_slice(&labels),
        groups: None,
        weights: None,
    };
    let vs = VarStore::new(Device::Cpu);
    let config = ModelConfig {
        modalities: vec![ModalityConfig {
            name: "text".into(),
            input_dim: 1,
            encoder: fusion_core::EncoderConfig::Identity,
        }],
        num_classes: 2,
        task: Default::default(),
        hidden_dim: 16,
        dropout: 0.0,
        fusion: FusionConfig::Early {
            method: EarlyMethod::Concat,
        },
    };
    let encoder = TextEncoder::new(
        &(vs.root() / "encoder" / "text"),
        &BertConfig {
            vocab_size: 12,
            ..tiny_config()
        },
        Pooling::Cls,
        false,
    )
    .unwrap();
    let model = FusionModel::with_encoders(&vs.root(), &config, vec![Box::new(encoder)]).unwrap();
    let training = TrainConfig {
        epochs: 15,
        optimizer: fusion_core::OptimizerConfig::adam(3e-3),
        ..TrainConfig::new(16)
    };
    Learner::new(&model, &vs, &training)
        .fit(&data, None, &RunFolder::new(dir.path().join("run")), &mut |_| {})
        .unwrap();
    let accuracy = evaluate(&model, &data, 64).unwrap().metrics.accuracy;
    assert!(accuracy > 0.95, "accuracy {accuracy}");
}
