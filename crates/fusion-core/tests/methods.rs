//! Every fusion method: output shapes, gradients reaching every parameter, and the
//! semantics of missing modalities and padding. The first three tests run on
//! `FUSION_TEST_DEVICE` (default the CPU; `benchmarks/gpu.sh` runs them on a GPU).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fusion_core::{
    EarlyMethod, Error, FusionConfig, FusionModel, LateCombiner, ModalityInput, Optimizer,
    testing::parameters_without_gradient,
};
use tch::{Device, Kind, Tensor, nn::VarStore};

fn perturbed_where_absent(inputs: &[ModalityInput]) -> Vec<ModalityInput> {
    inputs
        .iter()
        .map(|input| {
            let noise = input.features.randn_like() * 100.0;
            let mut keep = input.present.shallow_clone();
            for _ in 1..input.features.dim() {
                keep = keep.unsqueeze(-1);
            }
            // Padded tokens are as irrelevant as absent samples.
            if let Some(mask) = &input.padding_mask {
                keep = keep.logical_and(&mask.unsqueeze(-1));
            }
            let mut edited = input.with_present(input.present.shallow_clone());
            edited.features = input.features.where_self(&keep, &(&input.features + noise));
            edited
        })
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

#[test]
fn every_parameter_of_every_method_gets_a_gradient_and_moves() {
    let _rng = rng_lock();
    let (inputs, labels) = three_modality_batch_on_device();
    for fusion in all_fusions() {
        tch::manual_seed(3);
        let vs = VarStore::new(test_device());
        let model = FusionModel::new(&vs.root(), &three_modality_config(fusion.clone())).unwrap();
        let output = model.forward_t(&inputs, true).unwrap();
        assert_eq!(output.prediction.size(), [8, 3], "{fusion:?}");
        let before: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.copy())).collect();
        let mut optimizer = Optimizer::new(&vs, &Default::default());
        optimizer.zero_grad();
        output.loss(&labels, 1.0).backward();
        // Every variable of these models is trainable.
        assert_eq!(vs.trainable_variables().len(), vs.variables().len());
        assert_eq!(parameters_without_gradient(&vs), Vec::<String>::new(), "{fusion:?}");
        optimizer.step(1e-2);
        let variables = vs.variables();
        for (name, old) in before {
            assert!(
                max_abs_diff(&variables[&name], &old) > 0.0,
                "{fusion:?}: `{name}` did not move"
            );
        }
    }
}

#[test]
fn absent_modalities_and_padding_change_nothing() {
    let _rng = rng_lock();
    let (inputs, _) = three_modality_batch_on_device();
    let edited = perturbed_where_absent(&inputs);
    for fusion in all_fusions() {
        tch::manual_seed(4);
        let vs = VarStore::new(test_device());
        let model = FusionModel::new(&vs.root(), &three_modality_config(fusion.clone())).unwrap();
        let base = model.forward_t(&inputs, false).unwrap().prediction;
        let other = model.forward_t(&edited, false).unwrap().prediction;
        assert!(
            max_abs_diff(&base, &other) < 1e-5,
            "{fusion:?}: absent features leaked into the output"
        );
        let sums = base.exp().sum_dim_intlist(-1, false, Kind::Float);
        assert!(
            max_abs_diff(&sums, &sums.ones_like()) < 1e-5,
            "{fusion:?}: not a distribution"
        );
    }
}

#[test]
fn present_features_do_change_the_output() {
    let _rng = rng_lock();
    let (inputs, _) = three_modality_batch_on_device();
    for fusion in all_fusions() {
        tch::manual_seed(5);
        let vs = VarStore::new(test_device());
        let model = FusionModel::new(&vs.root(), &three_modality_config(fusion.clone())).unwrap();
        let base = model.forward_t(&inputs, false).unwrap().prediction;
        let mut edited: Vec<ModalityInput> = inputs
            .iter()
            .map(|i| i.with_present(i.present.shallow_clone()))
            .collect();
        edited[0].features = &inputs[0].features + inputs[0].features.randn_like() * 5.0;
        let other = model.forward_t(&edited, false).unwrap().prediction;
        // Sample 0 has modality `a`.
        assert!(
            max_abs_diff(&base.get(0), &other.get(0)) > 1e-6,
            "{fusion:?}: modality `a` is ignored"
        );
    }
}

#[test]
fn late_and_attention_weights_cover_present_modalities_only() {
    let _rng = rng_lock();
    let (inputs, _) = three_modality_batch();
    let present = Tensor::stack(
        &inputs
            .iter()
            .map(|i| i.present.to_kind(Kind::Float))
            .collect::<Vec<_>>(),
        1,
    );
    let cases = [
        FusionConfig::Late {
            combiner: LateCombiner::Learned,
        },
        FusionConfig::Late {
            combiner: LateCombiner::Mean,
        },
        FusionConfig::Early {
            method: EarlyMethod::Attention { heads: 2, layers: 1 },
        },
    ];
    for fusion in cases {
        let vs = VarStore::new(Device::Cpu);
        let model = FusionModel::new(&vs.root(), &three_modality_config(fusion.clone())).unwrap();
        let weights = model.forward_t(&inputs, false).unwrap().modality_weights.unwrap();
        assert_eq!(weights.size(), [8, 3]);
        let absent = present.ones_like() - &present;
        let on_absent = f64::try_from((&weights * absent).abs().max()).unwrap();
        assert!(on_absent < 1e-7, "{fusion:?}: weight on an absent modality");
        // Attention also gives some to [CLS]; late weights sum to 1.
        let sums = Vec::<f32>::try_from(weights.sum_dim_intlist(1, false, Kind::Float)).unwrap();
        assert!(sums.iter().all(|&s| s > 0.0 && s <= 1.0 + 1e-5), "{fusion:?}: {sums:?}");
    }
}

/// For [`three_modality_config`]: sequences `a` (4 tokens) and `b` (3 tokens) with padding
/// and an embedding `c`; sample 1 lacks `b`, and sample 3 has only `a`.
fn padded_sequence_batch() -> (Vec<ModalityInput>, Tensor) {
    let f = (Kind::Float, Device::Cpu);
    let mut a = ModalityInput::dense(Tensor::randn([4, 4, 5], f));
    a.padding_mask = Some(bools(&[1, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1]).view([4, 4]));
    let mut b = ModalityInput::with_presence(Tensor::randn([4, 3, 4], f), bools(&[1, 0, 1, 0]));
    b.padding_mask = Some(bools(&[1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1]).view([4, 3]));
    let c = ModalityInput::with_presence(Tensor::randn([4, 6], f), bools(&[1, 1, 1, 0]));
    (vec![a, b, c], Tensor::from_slice(&[0i64, 1, 2, 1]))
}

/// `inputs` with large noise added to modality `m`'s features where `edit` (`[B]` or
/// `[B, T]`) holds.
fn edited(inputs: &[ModalityInput], m: usize, edit: &Tensor) -> Vec<ModalityInput> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let mut copy = input.with_present(input.present.shallow_clone());
            if i == m {
                let mut at = edit.shallow_clone();
                while at.dim() < input.features.dim() {
                    at = at.unsqueeze(-1);
                }
                let noisy = &input.features + input.features.randn_like() * 100.0;
                copy.features = input.features.where_self(&at.logical_not(), &noisy);
            }
            copy
        })
        .collect()
}

#[test]
fn cross_modal_attention_ignores_padding_and_absent_modalities_and_trains_every_parameter() {
    let _rng = rng_lock();
    tch::manual_seed(6);
    let (inputs, labels) = padded_sequence_batch();
    let vs = VarStore::new(Device::Cpu);
    let config = three_modality_config(FusionConfig::Early {
        method: EarlyMethod::CrossModal { heads: 2, layers: 2 },
    });
    let model = FusionModel::new(&vs.root(), &config).unwrap();
    let output = model.forward_t(&inputs, false).unwrap();
    assert!(output.modality_weights.is_none());
    let base = output.prediction;
    assert_eq!(base.size(), [4, 3]);
    let finite = |t: &Tensor| bool::try_from(t.isfinite().all()).unwrap();
    // Sample 3 has no source for any pair: still finite.
    assert!(finite(&base), "{base}");

    // (a) Padded tokens, whether queried (target) or attended to (source).
    for (m, input) in inputs.iter().enumerate().take(2) {
        let padded = input.padding_mask.as_ref().unwrap().logical_not();
        let other = model.forward_t(&edited(&inputs, m, &padded), false).unwrap().prediction;
        assert!(max_abs_diff(&base, &other) < 1e-6, "padding of modality {m} leaked");
    }
    // (b) Absent modalities (`b` in samples 1 and 3, `c` in sample 3).
    for (m, input) in inputs.iter().enumerate().skip(1) {
        let other = model
            .forward_t(&edited(&inputs, m, &input.present.logical_not()), false)
            .unwrap()
            .prediction;
        assert!(finite(&other));
        assert!(max_abs_diff(&base, &other) < 1e-6, "absent modality {m} leaked");
    }
    // Real tokens of every modality do count (sample 0 has all three).
    for (m, input) in inputs.iter().enumerate() {
        let real = match &input.padding_mask {
            Some(mask) => mask.logical_and(&input.present.unsqueeze(1)),
            None => input.present.shallow_clone(),
        };
        let other = model.forward_t(&edited(&inputs, m, &real), false).unwrap().prediction;
        assert!(
            max_abs_diff(&base.get(0), &other.get(0)) > 1e-6,
            "modality {m} is ignored"
        );
    }

    // (c) Gradients reach every parameter, each of the six pairs included.
    model.forward_t(&inputs, true).unwrap().loss(&labels, 1.0).backward();
    assert_eq!(parameters_without_gradient(&vs), Vec::<String>::new());
    let cross: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| name.contains("cross_modal"))
        .collect();
    // Projections and type embedding, 6 pairs × (2 blocks × 18 + final norm), 3 merges.
    assert_eq!(cross.len(), 3 * 2 + 1 + 6 * (2 * 18 + 2) + 3 * 2);
    for (name, tensor) in &cross {
        assert!(fusion_core::testing::has_gradient(tensor), "`{name}` got no gradient");
    }
}

#[test]
fn cross_modal_attention_configs_are_validated() {
    let _rng = rng_lock();
    let vs = VarStore::new(Device::Cpu);
    let cross = |heads, layers| FusionConfig::Early {
        method: EarlyMethod::CrossModal { heads, layers },
    };
    let message = FusionModel::new(&vs.root(), &three_modality_config(cross(3, 1)))
        .unwrap_err()
        .to_string();
    assert!(message.contains("fusion.heads") && message.contains("3"), "{message}");
    let message = FusionModel::new(&vs.root(), &three_modality_config(cross(2, 0)))
        .unwrap_err()
        .to_string();
    assert!(message.contains("fusion.layers"), "{message}");
    let mut config = three_modality_config(cross(2, 1));
    config.modalities.truncate(1);
    let message = FusionModel::new(&vs.root(), &config).unwrap_err().to_string();
    assert!(message.contains("two modalities"), "{message}");

    let json = r#"{"family":"early","method":"cross_modal","heads":2,"layers":1}"#;
    assert_eq!(serde_json::from_str::<FusionConfig>(json).unwrap(), cross(2, 1));
}

#[test]
fn bad_configs_and_inputs_are_typed_errors_naming_the_field() {
    let _rng = rng_lock();
    let vs = VarStore::new(Device::Cpu);
    let mut config = three_modality_config(FusionConfig::Early {
        method: EarlyMethod::Attention { heads: 3, layers: 1 },
    });
    let message = FusionModel::new(&vs.root(), &config).unwrap_err().to_string();
    assert!(message.contains("fusion.heads"), "{message}");

    config.fusion = FusionConfig::Late {
        combiner: LateCombiner::Fixed {
            weights: vec![1.0, 2.0],
        },
    };
    let message = FusionModel::new(&vs.root(), &config).unwrap_err().to_string();
    assert!(
        message.contains("fusion.weights") && message.contains("3 branches"),
        "{message}"
    );

    config.fusion = FusionConfig::Early {
        method: EarlyMethod::Tensor,
    };
    config.modalities = (0..3).map(|m| modality(&format!("m{m}"), 4, 200)).collect();
    let message = FusionModel::new(&vs.root(), &config).unwrap_err().to_string();
    assert!(
        message.contains("low_rank"),
        "tensor fusion of 201³ features must be refused: {message}"
    );

    config.modalities[1].name = "m0".into();
    let message = FusionModel::new(&vs.root(), &config).unwrap_err().to_string();
    assert!(message.contains("modalities[1].name"), "{message}");

    let json =
        r#"{"modalities":[{"name":"a","input_dim":4}],"num_classes":2,"fusion":{"family":"early","method":"fancy"}}"#;
    let message = serde_json::from_str::<fusion_core::ModelConfig>(json)
        .unwrap_err()
        .to_string();
    assert!(message.contains("fancy"), "{message}");

    let model = FusionModel::new(
        &vs.root(),
        &three_modality_config(FusionConfig::Late {
            combiner: LateCombiner::Mean,
        }),
    )
    .unwrap();
    let (mut inputs, _) = three_modality_batch();
    inputs[1].features = Tensor::zeros([8, 7], (Kind::Float, Device::Cpu));
    let error = model.forward_t(&inputs, false).unwrap_err();
    assert!(
        matches!(&error, Error::Input { modality, mismatch } if modality == "b" && mismatch.shape == [8, 7]),
        "{error}"
    );
    inputs.pop();
    assert!(matches!(model.forward_t(&inputs, false), Err(Error::Shape(_))));
}

#[test]
fn complexity_counts_parameters_by_hand_and_times_steps() {
    let _rng = rng_lock();
    let config = fusion_core::ModelConfig {
        modalities: vec![
            fusion_core::ModalityConfig {
                name: "a".into(),
                input_dim: 5,
                encoder: fusion_core::EncoderConfig::Identity,
            },
            fusion_core::ModalityConfig {
                name: "b".into(),
                input_dim: 3,
                encoder: fusion_core::EncoderConfig::Identity,
            },
        ],
        num_classes: 2,
        task: Default::default(),
        hidden_dim: 4,
        dropout: 0.0,
        fusion: FusionConfig::Late {
            combiner: LateCombiner::Learned,
        },
    };
    let vs = VarStore::new(Device::Cpu);
    let model = FusionModel::new(&vs.root(), &config).unwrap();
    let f = (Kind::Float, Device::Cpu);
    let data = fusion_core::TensorDataset::dense(
        vec![Tensor::randn([6, 5], f), Tensor::randn([6, 3], f)],
        Tensor::from_slice(&[0i64, 1, 0, 1, 1, 0]),
    )
    .unwrap();
    let report = fusion_core::complexity(&model, &vs, &data, 4, 2).unwrap();
    // Heads: (5·4 + 4) + (4·2 + 2) and (3·4 + 4) + (4·2 + 2); two learned branch weights.
    assert_eq!(report.parameters, 34 + 26 + 2);
    assert_eq!(report.trainable_parameters, report.parameters);
    assert!(report.train_step_seconds > 0.0 && report.inference_seconds > 0.0);
    assert!(report.peak_rss_bytes.is_some_and(|b| b > 1 << 20));
}

#[test]
fn noise_robustness_refuses_integer_features() {
    let _rng = rng_lock();
    let vs = VarStore::new(Device::Cpu);
    let model = FusionModel::new(
        &vs.root(),
        &three_modality_config(FusionConfig::Late {
            combiner: LateCombiner::Mean,
        }),
    )
    .unwrap();
    let ids = Tensor::zeros([4, 5], (Kind::Int64, Device::Cpu));
    let f = (Kind::Float, Device::Cpu);
    let data = fusion_core::TensorDataset::dense(
        vec![ids, Tensor::zeros([4, 4], f), Tensor::zeros([4, 3, 6], f)],
        Tensor::zeros([4], (Kind::Int64, Device::Cpu)),
    )
    .unwrap();
    let error = fusion_core::noise_robustness(&model, &data, 2, &[0.0, 0.5], 0).unwrap_err();
    assert!(
        matches!(&error, Error::Config(m) if m.contains("`a`") && m.contains("Int64")),
        "{error}"
    );
}
