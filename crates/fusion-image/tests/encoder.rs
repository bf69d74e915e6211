//! Image encoders inside fusion models: gradients, input checks, and learning shapes.
#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used)]

use fusion_core::{
    EarlyMethod, Encoder, EncoderConfig, FusionConfig, FusionModel, Learner, ModalityConfig, ModalityInput,
    ModelConfig, Optimizer, RunFolder, TensorDataset, TrainConfig, evaluate, testing::parameters_without_gradient,
};
use fusion_image::{ChwImage, LeNet, MultibenchLeNet, ResNet18, batch_images};
use tch::{Device, Kind, Tensor, nn::VarStore};

fn model(encoder: Box<dyn Encoder>, vs: &VarStore) -> FusionModel {
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
    FusionModel::with_encoders(&vs.root(), &config, vec![encoder]).unwrap()
}

const NAMES: [&str; 3] = ["lenet", "resnet", "multibench_lenet"];

fn encoder(index: usize, vs: &VarStore) -> Box<dyn Encoder> {
    let p = vs.root() / "encoder" / "image";
    match index {
        0 => Box::new(LeNet::new(&p, 1, 16)),
        1 => Box::new(ResNet18::new(&p, 1, 4, true, 16)),
        _ => Box::new(MultibenchLeNet::new(&p, 1, 6, 3)),
    }
}

#[test]
fn multibench_lenet_has_multibench_sizes() {
    // MultiBench's AV-MNIST encoders: LeNet(1, 6, 3) on 28×28 images gives 48 features,
    // LeNet(1, 6, 5) on 112×112 spectrograms 192; the head reads 240.
    for (extra, side, features, parameters) in [(3, 28, 48, 150 + 648 + 2592 + 10368 + 2 * 90), (5, 112, 192, 0)] {
        let vs = VarStore::new(Device::Cpu);
        let encoder = MultibenchLeNet::new(&(vs.root() / "e"), 1, 6, extra);
        assert_eq!(encoder.output_dim(), features);
        let input = ModalityInput::dense(Tensor::rand([3, 1, side, side], (Kind::Float, Device::Cpu)));
        assert_eq!(encoder.forward(&input, true).size(), [3, features]);
        if parameters > 0 {
            // Convolutions without bias, batch norms with weight and bias.
            let trainable: i64 = vs.trainable_variables().iter().map(Tensor::numel).sum::<usize>() as i64;
            assert_eq!(trainable, parameters);
        }
    }
    assert!(
        MultibenchLeNet::new(&VarStore::new(Device::Cpu).root(), 1, 6, 3)
            .check_input(&Tensor::zeros([1, 1, 15, 15], (Kind::Float, Device::Cpu)))
            .is_err()
    );
}

#[test]
fn every_trainable_parameter_gets_a_gradient() {
    for (index, name) in NAMES.iter().enumerate() {
        let vs = VarStore::new(Device::Cpu);
        let model = model(encoder(index, &vs), &vs);
        let present = Tensor::from_slice(&[true, true, true, false]);
        let input = ModalityInput::with_presence(Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu)), present);
        let mut optimizer = Optimizer::new(&vs, &Default::default());
        optimizer.zero_grad();
        model
            .forward_t(&[input], true)
            .unwrap()
            .loss(&Tensor::from_slice(&[0i64, 1, 1, 0]), 1.0)
            .backward();
        assert_eq!(parameters_without_gradient(&vs), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn inputs_are_checked_and_batches_need_one_shape() {
    let vs = VarStore::new(Device::Cpu);
    for (index, name) in NAMES.iter().enumerate() {
        let encoder = encoder(index, &vs);
        let rgb = Tensor::zeros([2, 3, 28, 28], (Kind::Float, Device::Cpu));
        assert!(
            encoder.check_input(&rgb).unwrap_err().expected.contains("[B, 1, H, W]"),
            "{name}"
        );
        let tiny = Tensor::zeros([2, 1, 4, 4], (Kind::Float, Device::Cpu));
        assert!(encoder.check_input(&tiny).is_err(), "{name}");
    }
    let a = ChwImage {
        shape: [1, 2, 2],
        data: vec![0.0; 4],
    };
    let b = ChwImage {
        shape: [1, 3, 2],
        data: vec![0.0; 6],
    };
    assert!(
        batch_images(&[a.clone(), b], Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("[1, 2, 2]")
    );
    assert_eq!(batch_images(&[a.clone(), a], Device::Cpu).unwrap().size(), [2, 1, 2, 2]);
}

/// 28×28 images of a horizontal (class 0) or vertical (class 1) bar at a random place,
/// in noise.
fn bars(n: i64) -> TensorDataset {
    tch::manual_seed(3);
    let labels = Tensor::randint(2, [n], (Kind::Int64, Device::Cpu));
    let positions = Vec::<i64>::try_from(Tensor::randint_low(4, 24, [n], (Kind::Int64, Device::Cpu))).unwrap();
    let images = Tensor::randn([n, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.3;
    for (i, (&label, &at)) in Vec::<i64>::try_from(&labels)
        .unwrap()
        .iter()
        .zip(&positions)
        .enumerate()
    {
        let image = images.get(i as i64).get(0);
        let mut bar = if label == 0 {
            image.narrow(0, at, 2)
        } else {
            image.narrow(1, at, 2)
        };
        let _ = bar.fill_(1.5);
    }
    TensorDataset::dense(vec![images], labels).unwrap()
}

#[test]
fn both_encoders_learn_bar_orientation() {
    let data = bars(256);
    for (index, name) in NAMES.iter().enumerate() {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let model = model(encoder(index, &vs), &vs);
        let dir = tempfile::tempdir().unwrap();
        let training = TrainConfig {
            epochs: 10,
            optimizer: fusion_core::OptimizerConfig::adam(3e-3),
            ..TrainConfig::new(32)
        };
        Learner::new(&model, &vs, &training)
            .fit(&data, None, &RunFolder::new(dir.path()), &mut |_| {})
            .unwrap();
        let accuracy = evaluate(&model, &data, 64).unwrap().metrics.accuracy;
        assert!(accuracy > 0.95, "{name}: accuracy {accuracy}");
    }
}
