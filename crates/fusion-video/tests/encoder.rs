//! The video encoder on real decoded frames: shapes, padding, gradients.
#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used)]

use std::path::Path;

use fusion_core::{Encoder, ModalityInput};
use fusion_image::LeNet;
use fusion_video::{Fit, FrameSize, Sampling, TemporalPooling, VideoEncoder, read_frames};
use tch::{Device, Kind, Tensor, nn::VarStore};

const POOLINGS: [TemporalPooling; 4] = [
    TemporalPooling::Mean,
    TemporalPooling::Max,
    TemporalPooling::Attention,
    TemporalPooling::Conv,
];

fn clip() -> Tensor {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/video/testsrc_h264_aac.mp4");
    let size = FrameSize {
        width: 32,
        height: 32,
        fit: Fit::Crop,
    };
    let frames = read_frames(path, Sampling::Fps(5.0), Some(size)).unwrap();
    let chw = frames.to_chw([0.5; 3], [0.25; 3]);
    Tensor::from_slice(&chw).view([1, frames.len() as i64, 3, 32, 32])
}

#[test]
fn padded_frames_change_nothing_and_every_parameter_learns() {
    let real = clip(); // [1, 5, 3, 32, 32]
    // The same clip padded with 3 frames of noise, masked out.
    let padded = Tensor::cat(
        &[
            real.shallow_clone(),
            Tensor::randn([1, 3, 3, 32, 32], (Kind::Float, Device::Cpu)) * 10.0,
        ],
        1,
    );
    let mask = Tensor::from_slice(&[true, true, true, true, true, false, false, false]).view([1, 8]);
    for pooling in POOLINGS {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let encoder = VideoEncoder::new(
            &(vs.root() / "video"),
            Box::new(LeNet::new(&(vs.root() / "frames"), 3, 12)),
            pooling,
        );
        assert!(encoder.check_input(&real).is_ok());
        assert!(
            encoder
                .check_input(&real.select(1, 0))
                .unwrap_err()
                .expected
                .contains("[B, T, C, H, W]")
        );
        let alone = encoder.forward(&ModalityInput::dense(real.shallow_clone()), false);
        let mut input = ModalityInput::dense(padded.shallow_clone());
        input.padding_mask = Some(mask.shallow_clone());
        let with_padding = encoder.forward(&input, false);
        assert_eq!(alone.size(), [1, 12]);
        let diff = f64::try_from((&alone - &with_padding).abs().max()).unwrap();
        assert!(diff < 1e-5, "{pooling:?}: padding changed the output by {diff}");

        // Two clips so the attention softmax has something to compare.
        let batch = Tensor::cat(&[real.shallow_clone(), real.flip([1])], 0);
        let output = encoder.forward(&ModalityInput::dense(batch), true);
        (output.square().sum(Kind::Float) + output.select(1, 0).sum(Kind::Float)).backward();
        // Every variable here is trainable.
        assert_eq!(vs.trainable_variables().len(), vs.variables().len());
        assert_eq!(
            fusion_core::testing::parameters_without_gradient(&vs),
            Vec::<String>::new(),
            "{pooling:?}"
        );
    }
}
