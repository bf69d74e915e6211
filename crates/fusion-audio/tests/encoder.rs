//! Audio encoders inside fusion models: shapes, masks, gradients, and learning tones.
#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used)]

use fusion_audio::{AudioCnn, AudioGru, DbConfig, MelConfig, MelExtractor, Spectrogram, batch_spectrograms};
use fusion_core::{
    EarlyMethod, Encoder, EncoderConfig, FusionConfig, FusionModel, Learner, ModalityConfig, ModalityInput,
    ModelConfig, Optimizer, RunFolder, TensorDataset, TrainConfig, evaluate, testing::parameters_without_gradient,
};
use tch::{Device, Kind, Tensor, nn::VarStore};

const MELS: i64 = 16;

fn single_modality(encoder: Box<dyn Encoder>, vs: &VarStore) -> FusionModel {
    let config = ModelConfig {
        modalities: vec![ModalityConfig {
            name: "audio".into(),
            input_dim: MELS,
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
    FusionModel::with_encoders(&vs.root(), &config, vec![encoder]).unwrap()
}

#[test]
fn spectrograms_batch_frames_first_with_a_mask() {
    let a = Spectrogram {
        rows: 2,
        frames: 3,
        data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    };
    let b = Spectrogram {
        rows: 2,
        frames: 1,
        data: vec![-7.0, -8.0],
    };
    let (features, mask) = batch_spectrograms(&[a, b], Device::Cpu);
    assert_eq!(features.size(), [2, 3, 2]);
    let values = Vec::<f32>::try_from(features.flatten(0, -1)).unwrap();
    assert_eq!(
        values,
        [1.0, 4.0, 2.0, 5.0, 3.0, 6.0, -7.0, -8.0, -8.0, -8.0, -8.0, -8.0]
    );
    assert_eq!(
        Vec::<bool>::try_from(mask.flatten(0, -1)).unwrap(),
        [true, true, true, true, false, false]
    );
}

#[test]
fn every_trainable_parameter_gets_a_gradient() {
    let f = (Kind::Float, Device::Cpu);
    for use_gru in [false, true] {
        let vs = VarStore::new(Device::Cpu);
        let p = vs.root() / "encoder" / "audio";
        let encoder: Box<dyn Encoder> = if use_gru {
            Box::new(AudioGru::new(&p, MELS, 12, 2, 8))
        } else {
            Box::new(AudioCnn::new(&p, MELS, 4, 2, 8))
        };
        let model = single_modality(encoder, &vs);
        // The last sample lacks audio, so the early-fusion placeholder is used too.
        let present = Tensor::from_slice(&[true, true, true, false]);
        let mut input = ModalityInput::with_presence(Tensor::randn([4, 20, MELS], f), present);
        input.padding_mask = Some(
            Tensor::arange(20, (Kind::Int64, Device::Cpu))
                .unsqueeze(0)
                .lt(15)
                .repeat([4, 1]),
        );
        let mut optimizer = Optimizer::new(&vs, &Default::default());
        optimizer.zero_grad();
        model
            .forward_t(&[input], true)
            .unwrap()
            .loss(&Tensor::from_slice(&[0i64, 1, 1, 0]), 1.0)
            .backward();
        assert_eq!(parameters_without_gradient(&vs), Vec::<String>::new(), "gru: {use_gru}");
    }
}

#[test]
fn gru_ignores_padded_frames_and_inputs_are_checked() {
    let vs = VarStore::new(Device::Cpu);
    let gru = AudioGru::new(&vs.root(), MELS, 12, 1, 8);
    let x = Tensor::randn([2, 10, MELS], (Kind::Float, Device::Cpu));
    let mask = Tensor::arange(10, (Kind::Int64, Device::Cpu))
        .unsqueeze(0)
        .lt(6)
        .repeat([2, 1]);
    let noisy = x.where_self(&mask.unsqueeze(-1), &(&x * 50.0));
    let encode = |features: &Tensor| {
        let mut input = ModalityInput::dense(features.shallow_clone());
        input.padding_mask = Some(mask.shallow_clone());
        gru.forward(&input, false)
    };
    let diff = f64::try_from((encode(&x) - encode(&noisy)).abs().max()).unwrap();
    assert!(diff < 1e-6, "{diff}");
    assert!(
        gru.check_input(&Tensor::zeros([2, 10, 15], (Kind::Float, Device::Cpu)))
            .unwrap_err()
            .expected
            .contains("[B, T, 16]")
    );
    let cnn = AudioCnn::new(&vs.root(), MELS, 4, 3, 8);
    assert!(
        cnn.check_input(&Tensor::zeros([2, 4, MELS], (Kind::Float, Device::Cpu)))
            .unwrap_err()
            .expected
            .contains("pooling blocks leave nothing")
    );
}

/// The frame-state GRU hands fusion every frame: real frames do not depend on the padding
/// after them, and the output keeps the input's positions.
#[test]
fn gru_frames_are_a_sequence_unaffected_by_later_padding() {
    let vs = VarStore::new(Device::Cpu);
    let gru = AudioGru::frames(&vs.root(), MELS, 12, 2);
    assert_eq!(gru.output_dim(), 12);
    let x = Tensor::randn([2, 10, MELS], (Kind::Float, Device::Cpu));
    let real = Tensor::arange(10, (Kind::Int64, Device::Cpu)).lt(6).view([1, 10, 1]);
    let noisy = x.where_self(&real, &(&x * 50.0));
    let states = gru.forward(&ModalityInput::dense(x), false);
    assert_eq!(states.size(), [2, 10, 12]);
    let other = gru.forward(&ModalityInput::dense(noisy), false);
    let real_frames = |t: &Tensor| t.narrow(1, 0, 6);
    let diff = f64::try_from((real_frames(&states) - real_frames(&other)).abs().max()).unwrap();
    assert!(diff < 1e-6, "{diff}");
    let padded = f64::try_from((states.narrow(1, 6, 4) - other.narrow(1, 6, 4)).abs().max()).unwrap();
    assert!(padded > 1e-3, "later frames do change later states: {padded}");
}

/// Half a second at 8 kHz: a tone at 440 Hz (class 0) or 1760 Hz (class 1), random phase
/// and level, in white noise.
fn tone(class: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    let (frequency, level, phase) = (
        [440.0, 1760.0][class],
        0.1 + 0.4 * uniform(),
        std::f32::consts::TAU * uniform(),
    );
    (0..4000)
        .map(|n| {
            level * (std::f32::consts::TAU * frequency * n as f32 / 8000.0 + phase).sin() + 0.1 * (uniform() - 0.5)
        })
        .collect()
}

#[test]
fn cnn_learns_to_tell_tones_apart_from_log_mel() {
    tch::manual_seed(0);
    let extractor = MelExtractor::new(MelConfig {
        n_fft: 256,
        hop_length: 128,
        n_mels: MELS as usize,
        ..MelConfig::new(8000)
    })
    .unwrap();
    let spectrograms: Vec<Spectrogram> = (0..80)
        .map(|i| extractor.log_mel(&tone(i % 2, i as u64), &DbConfig::default()).unwrap())
        .collect();
    let (features, mask) = batch_spectrograms(&spectrograms, Device::Cpu);
    // dB values around -40..20: scale to unit range for the network.
    let features = features / 40.0;
    let labels = Tensor::from_slice(&(0..80).map(|i| (i % 2) as i64).collect::<Vec<_>>());
    let data = TensorDataset {
        features: vec![features],
        padding: vec![Some(mask)],
        present: vec![Tensor::ones([80], (Kind::Bool, Device::Cpu))],
        labels,
        groups: None,
        weights: None,
    };
    let vs = VarStore::new(Device::Cpu);
    let model = single_modality(
        Box::new(AudioCnn::new(&(vs.root() / "encoder" / "audio"), MELS, 4, 2, 8)),
        &vs,
    );
    let dir = tempfile::tempdir().unwrap();
    let training = TrainConfig {
        epochs: 20,
        optimizer: fusion_core::OptimizerConfig::adam(3e-3),
        ..TrainConfig::new(16)
    };
    Learner::new(&model, &vs, &training)
        .fit(&data, None, &RunFolder::new(dir.path()), &mut |_| {})
        .unwrap();
    let accuracy = evaluate(&model, &data, 40).unwrap().metrics.accuracy;
    assert!(accuracy > 0.95, "accuracy {accuracy}");
}
