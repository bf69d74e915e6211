//! Run configurations chosen for a table whose columns were inferred (zero-config
//! training): encoders per modality, fusion and training settings by preset.

use std::path::Path;

use fusion_data::{ColumnInference, ColumnKind, LabelKind};
use serde_json::{Value, json};

use crate::{Error, Result, RunConfig, models_dir};

/// How much a zero-config run spends for accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preset {
    /// Frozen pretrained encoders (outputs cached per file: images and video frames through
    /// EfficientNet-Lite0, text through MiniLM; small pictures through a LeNet instead),
    /// band statistics of the sound, a table MLP, fused late as a product of experts:
    /// minutes on a CPU.
    #[default]
    Fast,
    /// Fine-tuned pretrained encoders, one token per table column, and a transformer over
    /// the modalities' tokens; longer training.
    Best,
}

impl std::str::FromStr for Preset {
    type Err = fusion_data::UnknownName;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text {
            "fast" => Ok(Self::Fast),
            "best" => Ok(Self::Best),
            other => Err(fusion_data::UnknownName {
                what: "preset",
                value: other.into(),
                expected: "`fast` or `best`".into(),
            }),
        }
    }
}

/// Share of each label's records held out for validation and for test when the table has
/// no split column.
pub const HOLDOUT_FRACTION: f64 = 0.15;

/// Pictures whose median longer side is at most this are read at their own size by a
/// LeNet trained from scratch: an ImageNet backbone sees upscaled blurs there (noisy 28 px
/// digits on the development draw of digits_av: 0.34 alone through frozen
/// EfficientNet-Lite0, 0.56 through LeNet; the fused run 0.755 against 0.865).
pub const SMALL_PICTURE_SIDE: u32 = 64;

/// Whether `cargo xtask models` fetched `name` (with `file` in it).
fn fetched(name: &str, file: &str) -> bool {
    models_dir().is_some_and(|d| d.join(name).join(file).is_file())
}

/// The configuration `preset` chooses for the inferred table, and a line per choice that
/// a user may want to know of (a pretrained model missing, so a smaller encoder used).
pub fn zero_config(inference: &ColumnInference, preset: Preset) -> Result<(RunConfig, Vec<String>)> {
    let best = preset == Preset::Best;
    let mut notes = Vec::new();
    let mut modalities: Vec<Value> = Vec::new();
    let small_pictures = inference.images.filter(|s| s.median_side <= SMALL_PICTURE_SIDE);
    if let Some(sample) = small_pictures.filter(|_| inference.has(ColumnKind::Image)) {
        // LeNet's two 5×5 convolutions and poolings need 28 px at least.
        let side = sample.median_side.max(28);
        notes.push(format!(
            "images: small ({} px median side of {} sampled): read at {side} px by a LeNet trained from scratch",
            sample.median_side, sample.read
        ));
        modalities.push(json!({
            "name": "image",
            "features": {"kind": "image", "size": side, "grey": sample.grey},
            "encoder": {"kind": "lenet"},
        }));
    } else if inference.has(ColumnKind::Image) {
        modalities.push(if fetched("efficientnet-lite0", "model.safetensors") {
            json!({
                "name": "image",
                "features": {"kind": "image", "size": 224, "grey": false, "normalize": "imagenet"},
                "encoder": if best {
                    json!({"kind": "efficientnet_lite0", "frozen": false, "lr": 1e-4})
                } else {
                    json!({"kind": "efficientnet_lite0"})
                },
            })
        } else {
            notes.push(
                "images: EfficientNet-Lite0 is not fetched (`cargo xtask models`): a ResNet-18 from scratch".into(),
            );
            json!({
                "name": "image",
                "features": {"kind": "image", "size": 64, "grey": false},
                "encoder": {"kind": "resnet18", "width": 16},
            })
        });
    }
    if inference.has(ColumnKind::Text) {
        modalities.push(if fetched("all-MiniLM-L6-v2", "tokenizer.json") {
            json!({
                "name": "text",
                "features": {"kind": "tokens", "tokenizer": "all-MiniLM-L6-v2/tokenizer.json", "max_len": 128},
                "encoder": if best {
                    json!({"kind": "bert", "model": "all-MiniLM-L6-v2", "frozen": false, "lr": 3e-5})
                } else {
                    json!({"kind": "bert", "model": "all-MiniLM-L6-v2"})
                },
            })
        } else {
            notes.push("text: all-MiniLM-L6-v2 is not fetched (`cargo xtask models`): hashed words and an MLP".into());
            json!({
                "name": "text",
                "features": {"kind": "hashed_words", "dim": 4096},
                "encoder": {"kind": "mlp", "hidden": [64]},
            })
        });
    }
    if inference.has(ColumnKind::Audio) {
        // Band statistics over each clip's own frames (25 ms windows, 10 ms hops, up to a
        // minute), standardised per value, into an MLP: a CNN from scratch over the
        // log-mel picture stayed at chance on a thousand unseen clips where a linear
        // model on these statistics did not.
        modalities.push(json!({
            "name": "audio",
            "features": {"kind": "log_mel_stats", "sample_rate": 16000, "n_mels": 64, "frames": 6000, "n_fft": 400, "hop_length": 160},
            "encoder": {"kind": "mlp", "hidden": [128]},
        }));
    }
    if inference.has(ColumnKind::Video) {
        modalities.push(if fetched("efficientnet-lite0", "model.safetensors") {
            // Four frames through the frozen ImageNet network, averaged: computed once per
            // file and cached, where a network trained from scratch on every frame cost
            // minutes per epoch.
            json!({
                "name": "video",
                "features": {"kind": "video_frames", "frames": 4, "size": 112, "grey": false, "normalize": "imagenet"},
                "encoder": {"kind": "video", "frame": {"kind": "efficientnet_lite0"}, "pooling": "mean"},
            })
        } else {
            json!({
                "name": "video",
                "features": {"kind": "video_frames", "frames": 8, "size": 64, "grey": false},
                "encoder": {"kind": "video", "frame": {"kind": "resnet18", "width": 16}},
            })
        });
    }
    let numeric = inference.of_kind(ColumnKind::Numeric);
    let categorical = inference.of_kind(ColumnKind::Categorical);
    if !numeric.is_empty() || !categorical.is_empty() {
        let columns: Vec<Value> = inference
            .columns
            .iter()
            .filter_map(|c| match c.kind {
                ColumnKind::Numeric => Some(json!({"kind": "numeric", "name": c.name})),
                ColumnKind::Categorical => Some(json!({"kind": "categorical", "name": c.name})),
                _ => None,
            })
            .collect();
        modalities.push(json!({
            "name": "table",
            "features": {"kind": "table", "columns": columns},
            "encoder": if best { json!({"kind": "feature_tokenizer"}) } else { json!({"kind": "tabular_mlp"}) },
        }));
    }
    if modalities.is_empty() {
        return Err(Error::Config(format!(
            "{}: no column to learn from (each is the label, an id, the split, ignored or empty); \
             set kinds with --column-types",
            inference.path.display()
        )));
    }
    // `fast`: one head per modality and the sum of their log-probabilities (a product of
    // experts), which renormalises over whatever modalities a record has; chosen over
    // concatenation on a development set (a second draw of digits_av, see
    // benchmarks/quality) for its loss and calibration at equal accuracy. A regression has
    // no probabilities to multiply: it keeps concatenation.
    let modalities_count = modalities.len();
    let fusion = if best && modalities.len() > 1 {
        json!({"family": "early", "method": "attention", "heads": 4, "layers": 2})
    } else if modalities.len() > 1 && inference.label != LabelKind::Numbers {
        json!({"family": "late", "combiner": "product_of_experts"})
    } else {
        json!({"family": "early", "method": "concat"})
    };
    let holdout = (!inference.has(ColumnKind::Split))
        .then(|| json!({"val": HOLDOUT_FRACTION, "test": HOLDOUT_FRACTION, "seed": 0}));
    // Absolute, so that the written configuration works from any folder.
    let manifest = std::path::absolute(&inference.path).unwrap_or_else(|_| inference.path.clone());
    let task = match inference.label {
        LabelKind::Classes => "classification",
        LabelKind::Tags => "multi_label",
        LabelKind::Numbers => "regression",
    };
    let config = json!({
        "manifest": manifest,
        "task": task,
        "columns": inference.column_map(),
        "holdout": holdout,
        "modalities": modalities,
        "hidden_dim": if best { 128 } else { 64 },
        "dropout": 0.1,
        "fusion": fusion,
        "train": {
            "epochs": if best { 60 } else { 30 },
            "batch_size": 32,
            "optimizer": {"kind": "adam_w", "lr": 1e-3, "weight_decay": 0.01},
            "early_stopping": {"metric": "loss", "patience": if best { 10 } else { 5 }},
            "seed": 0,
            "modality_dropout": 0.1,
        },
    });
    let mut config: RunConfig = serde_json::from_value(config)
        .map_err(|e| Error::Config(format!("zero-config preset: {e} (a bug: please report it)")))?;
    // Late fusion cannot learn a label no modality predicts alone (xor_pair in
    // benchmarks/quality): `fast` then tries interactions.
    config.interactions_fallback = !best && inference.label == LabelKind::Classes && modalities_count > 1;
    config.resolve_paths(manifest.parent().unwrap_or(Path::new(".")));
    Ok((config, notes))
}

#[cfg(test)]
mod tests {
    use fusion_data::{FeatureConfig, ImageSample, InferredColumn};

    use super::*;
    use crate::EncoderSpec;

    fn pictures(images: Option<ImageSample>) -> ColumnInference {
        let column = |name: &str, kind| InferredColumn {
            name: name.into(),
            kind,
            filled: 10,
            distinct: 10,
            reason: String::new(),
        };
        ColumnInference {
            path: "/data/table.csv".into(),
            rows: 10,
            label: LabelKind::Classes,
            columns: vec![column("picture", ColumnKind::Image), column("y", ColumnKind::Label)],
            images,
        }
    }

    /// Small pictures are read at their own size (28 px at least) by a LeNet, in both
    /// presets; larger ones, or unknown sizes, go to the pretrained path.
    #[test]
    fn small_pictures_are_read_by_a_lenet_at_their_own_size() -> Result<()> {
        let sample = |median_side, grey| {
            Some(ImageSample {
                median_side,
                grey,
                read: 10,
            })
        };
        for preset in [Preset::Fast, Preset::Best] {
            for (images, side, grey) in [(sample(20, true), 28, true), (sample(64, false), 64, false)] {
                let (config, notes) = zero_config(&pictures(images), preset)?;
                let image = &config.modalities[0];
                assert_eq!(
                    image.features,
                    FeatureConfig::Image {
                        size: side,
                        grey,
                        normalize: fusion_data::ImageNormalization::None,
                    }
                );
                assert!(
                    matches!(image.encoder, EncoderSpec::Lenet { .. }),
                    "{:?}",
                    image.encoder
                );
                assert!(notes.iter().any(|n| n.contains("LeNet")), "{notes:?}");
                config.validate()?;
            }
            for images in [sample(65, true), None] {
                let (config, _) = zero_config(&pictures(images), preset)?;
                assert!(!matches!(config.modalities[0].encoder, EncoderSpec::Lenet { .. }));
            }
        }
        Ok(())
    }
}
