//! all-MiniLM-L6-v2 through fusion-text against sentence-transformers' own outputs
//! (fixtures/text/minilm_reference.json, made by fixtures/text/make_minilm_reference.py).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fusion_text::{Pooling, SentenceEncoder, TextEncoder};
use serde_json::Value;
use tch::{Device, Tensor};

/// The model folder fetched by `cargo xtask models`; `None` (the test skips) when it is
/// absent, unless `cargo xtask test` asked for every asset.
fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FUSION_MODELS_DIR").map(|d| PathBuf::from(d).join("all-MiniLM-L6-v2"));
    match dir {
        Some(dir) if dir.join("model.safetensors").exists() => Some(dir),
        _ if std::env::var_os("FUSION_REQUIRE_ASSETS").is_some() => {
            panic!("all-MiniLM-L6-v2 is missing: run `cargo xtask models`")
        }
        _ => {
            eprintln!("skipping: all-MiniLM-L6-v2 not found (FUSION_MODELS_DIR); run `cargo xtask models`");
            None
        }
    }
}

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/text/minilm_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(value: &Value) -> Tensor {
    let values: Vec<f32> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    Tensor::from_slice(&values)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

#[test]
fn embeddings_match_sentence_transformers() {
    let Some(dir) = model_dir() else { return };
    let reference = reference();
    let sentences = reference["sentences"].as_array().unwrap();
    assert!(sentences.len() >= 20);
    let texts: Vec<&str> = sentences.iter().map(|s| s["text"].as_str().unwrap()).collect();
    let model = SentenceEncoder::from_dir(&dir, Device::Cpu).unwrap();
    assert_eq!(model.tokenizer.max_len(), 256);

    // Token ids first: a difference here would explain any below.
    for (sentence, text) in sentences.iter().zip(&texts) {
        let batch = model.tokenizer.encode_batch(&[*text]).unwrap();
        let expected: Vec<i64> = sentence["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(batch.ids, expected, "token ids of {text:?}");
    }

    // Normalised mean pooling, batched by length like sentence-transformers (8 per batch).
    let embeddings = model.encode(&texts, 8).unwrap();
    assert_eq!(embeddings.size(), [texts.len() as i64, 384]);
    let mut worst = 0.0f64;
    for (i, sentence) in sentences.iter().enumerate() {
        let diff = max_abs_diff(&embeddings.get(i as i64), &floats(&sentence["mean_normalized"]));
        assert!(diff < 1e-4, "sentence {i} ({:?}): max abs difference {diff}", texts[i]);
        worst = worst.max(diff);
    }
    eprintln!(
        "mean pooling: worst max abs difference {worst:.2e} over {} sentences",
        texts.len()
    );

    // CLS and max pooling of the same token states, one sentence at a time.
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let (encoder, tokenizer) = TextEncoder::pretrained(&vs.root(), &dir).unwrap();
    let encoder = encoder.with_pooling(Pooling::Cls, false);
    let max_vs = tch::nn::VarStore::new(Device::Cpu);
    let max_encoder = TextEncoder::pretrained(&max_vs.root(), &dir)
        .unwrap()
        .0
        .with_pooling(Pooling::Max, false);
    for (i, (sentence, text)) in sentences.iter().zip(&texts).enumerate() {
        let batch = tokenizer.encode_batch(&[*text]).unwrap();
        let cls = encoder.embed(&batch, Device::Cpu).get(0);
        let max = max_encoder.embed(&batch, Device::Cpu).get(0);
        assert!(
            max_abs_diff(&cls, &floats(&sentence["cls"])) < 1e-4,
            "CLS of sentence {i}"
        );
        assert!(
            max_abs_diff(&max, &floats(&sentence["max"])) < 1e-4,
            "max of sentence {i}"
        );
    }
}

#[test]
fn padding_in_a_batch_changes_no_embedding() {
    let Some(dir) = model_dir() else { return };
    let model = SentenceEncoder::from_dir(&dir, Device::Cpu).unwrap();
    let texts = [
        "short",
        "a considerably longer sentence that forces padding on the first one",
    ];
    let together = model.encode(&texts, 2).unwrap();
    let alone = model.encode(&texts[..1], 1).unwrap();
    assert!(max_abs_diff(&together.get(0), &alone.get(0)) < 1e-5);
    let norms = together.norm_scalaropt_dim(2.0, [1], false);
    assert!(max_abs_diff(&norms, &norms.ones_like()) < 1e-5, "normalised");
    assert_eq!(model.encode(&Vec::<&str>::new(), 4).unwrap().size(), [0, 384]);
    assert!(model.encode(&texts, 0).is_err());
}

/// A limit that leaves no room beside [CLS] and [SEP] is a typed error (tokenizers itself
/// would panic on it), and the smallest useful one keeps one word.
#[test]
fn token_limit_below_the_special_tokens_is_an_error() {
    let Some(dir) = model_dir() else { return };
    let tokenizer = dir.join("tokenizer.json");
    let error = fusion_text::TextTokenizer::from_file(&tokenizer, 2)
        .unwrap_err()
        .to_string();
    assert!(error.contains("2 special tokens"), "{error}");
    let smallest = fusion_text::TextTokenizer::from_file(&tokenizer, 3).unwrap();
    assert_eq!(smallest.encode_batch(&["hello world"]).unwrap().seq_len, 3);
}
