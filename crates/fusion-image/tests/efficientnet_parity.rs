//! EfficientNet-Lite0 logits against the PyTorch implementation in
//! fixtures/image/make_efficientnet_reference.py, on the same weights.
#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use fusion_image::{EfficientNetLite0, Error};
use tch::{Device, Kind, Tensor, nn::VarStore};

fn weights() -> Option<PathBuf> {
    let path =
        std::env::var_os("FUSION_MODELS_DIR").map(|d| PathBuf::from(d).join("efficientnet-lite0/model.safetensors"));
    match path {
        Some(path) if path.exists() => Some(path),
        _ if std::env::var_os("FUSION_REQUIRE_ASSETS").is_some() => {
            panic!("EfficientNet-Lite0 missing: run `cargo xtask models`")
        }
        _ => {
            eprintln!("skipping: EfficientNet-Lite0 not found (FUSION_MODELS_DIR); run `cargo xtask models`");
            None
        }
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/image")
}

fn input(name: &str) -> Tensor {
    if name == "pattern_224" {
        let h = Tensor::arange(224, (Kind::Int64, Device::Cpu)).view([1, 224, 1]);
        let w = Tensor::arange(224, (Kind::Int64, Device::Cpu)).view([1, 1, 224]);
        let c = Tensor::arange(3, (Kind::Int64, Device::Cpu)).view([3, 1, 1]);
        let values = (h * 7 + w * 13 + c * 31).remainder(255);
        return (values.to_kind(Kind::Float) / 255.0 - 0.5).unsqueeze(0);
    }
    let image = image::open(fixtures().join("reference").join(name)).unwrap().to_rgb8();
    let (w, h) = (image.width() as i64, image.height() as i64);
    let pixels = Tensor::from_slice(image.as_raw())
        .view([h, w, 3])
        .permute([2, 0, 1])
        .to_kind(Kind::Float)
        / 255.0;
    let mean = Tensor::from_slice(&[0.485f32, 0.456, 0.406]).view([3, 1, 1]);
    let std = Tensor::from_slice(&[0.229f32, 0.224, 0.225]).view([3, 1, 1]);
    ((pixels - mean) / std).unsqueeze(0)
}

#[test]
fn logits_match_the_pytorch_reference() {
    let Some(weights) = weights() else { return };
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("efficientnet_reference.json")).unwrap())
            .unwrap();
    let vs = VarStore::new(Device::Cpu);
    let network = EfficientNetLite0::pretrained(&vs.root(), &weights).unwrap();
    network.set_trainable(false);
    for output in reference["outputs"].as_array().unwrap() {
        let name = output["input"].as_str().unwrap();
        let logits = network.logits(&input(name)).get(0);
        let expected: Vec<f32> = output["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let diff = f64::try_from((&logits - Tensor::from_slice(&expected)).abs().max()).unwrap();
        eprintln!("{name}: max abs logit difference {diff:.2e}");
        assert!(diff < 1e-4, "{name}: {diff}");
    }
}

#[test]
fn weights_that_do_not_fit_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    Tensor::write_safetensors(
        &[(
            "_conv_stem.weight",
            Tensor::zeros([8, 3, 3, 3], (Kind::Float, Device::Cpu)),
        )],
        &path,
    )
    .unwrap();
    let vs = VarStore::new(Device::Cpu);
    let error = EfficientNetLite0::pretrained(&vs.root(), &path).unwrap_err();
    assert!(
        matches!(&error, Error::Weights { path: p, reason } if *p == path && reason.contains("_conv_stem.weight")),
        "{error}"
    );
}

#[test]
fn frozen_or_fine_tuned_inside_a_fusion_model() {
    use fusion_core::{
        EarlyMethod, EncoderConfig, FusionConfig, FusionModel, ModalityConfig, ModalityInput, ModelConfig, Optimizer,
    };
    for trainable in [false, true] {
        let vs = VarStore::new(Device::Cpu);
        let network = EfficientNetLite0::new(&(vs.root() / "encoder" / "image"));
        network.set_trainable(trainable);
        let config = ModelConfig {
            modalities: vec![ModalityConfig {
                name: "image".into(),
                input_dim: 1,
                encoder: EncoderConfig::Identity,
            }],
            num_classes: 2,
            task: Default::default(),
            hidden_dim: 8,
            dropout: 0.0,
            fusion: FusionConfig::Early {
                method: EarlyMethod::Concat,
            },
        };
        let model = FusionModel::with_encoders(&vs.root(), &config, vec![Box::new(network)]).unwrap();
        let present = Tensor::from_slice(&[true, false]);
        let input = ModalityInput::with_presence(Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu)), present);
        let mut optimizer = Optimizer::new(&vs, &Default::default());
        optimizer.zero_grad();
        model
            .forward_t(&[input], true)
            .unwrap()
            .loss(&Tensor::from_slice(&[0i64, 1]), 1.0)
            .backward();
        for (name, var) in vs.variables() {
            let in_network = name.starts_with("encoder.image.");
            let statistic = name.ends_with("running_mean") || name.ends_with("running_var");
            // The ImageNet classifier is not used by the encoder.
            let classifier = name.starts_with("encoder.image._fc.");
            let moved = fusion_core::testing::has_gradient(&var);
            // A projection's batch-norm shift only feeds convolutions and sums that end in
            // another batch norm before any non-linearity: in training mode that norm
            // removes it, so its gradient is zero up to rounding (it matters in evaluation).
            if trainable && name.ends_with("._bn2.bias") {
                continue;
            }
            let expected = !statistic && !classifier && (trainable || !in_network);
            assert_eq!(moved, expected, "`{name}` (trainable: {trainable})");
        }
    }
}

#[test]
fn fine_tuning_keeps_or_moves_the_batch_norm_statistics_as_asked() {
    for batch_statistics in [false, true] {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let network = EfficientNetLite0::new(&vs.root()).with_batch_statistics(batch_statistics);
        network.set_trainable(true);
        let statistics = || -> Vec<Tensor> {
            let mut named: Vec<(String, Tensor)> = vs
                .variables()
                .into_iter()
                .filter(|(name, _)| name.contains("running_"))
                .collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named.into_iter().map(|(_, t)| t.copy()).collect()
        };
        let before = statistics();
        assert!(!before.is_empty());
        let images = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        let trained = network.features(&images, true);
        let moved = before.iter().zip(statistics()).any(|(a, b)| !a.equal(&b));
        assert_eq!(moved, batch_statistics, "running statistics moved: {moved}");
        // With the pretrained statistics kept, training normalises as evaluation does.
        let evaluated = network.features(&images, false);
        let same = trained.allclose(&evaluated, 1e-5, 1e-5, false);
        assert_eq!(same, !batch_statistics);
        // The convolutions still receive gradients.
        trained.sum(Kind::Float).backward();
        let stem = vs.variables()["_conv_stem.weight"].grad();
        assert!(stem.defined() && f64::try_from(stem.abs().sum(Kind::Float)).unwrap() > 0.0);
    }
}
