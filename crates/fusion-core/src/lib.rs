//! # fusion-core
//!
//! Multi-modal fusion on libtorch (through [`tch`]). "Early" fusion combines features
//! (feature level, here after the unimodal encoders), "late" fusion combines decisions
//! (decision level), and "hybrid" fusion does both, as in the fusion literature.
//!
//! A [`FusionModel`] is one [`Encoder`] per modality, a fusion method and a classifier,
//! built from a serde [`ModelConfig`]. Every input carries a presence mask, so a sample
//! may lack any modality.
//!
//! ```
//! use fusion_core::{
//!     FusionConfig, FusionModel, LateCombiner, Learner, ModalityConfig, ModalityInput, ModelConfig, RunFolder,
//!     TensorDataset, TrainConfig, evaluate,
//! };
//! use tch::{Device, Kind, Tensor, nn};
//!
//! // Two modalities (8 and 4 features), 3 classes, decisions combined by the mean of
//! // probabilities over the modalities each sample has.
//! let config = ModelConfig {
//!     modalities: vec![
//!         ModalityConfig { name: "image".into(), input_dim: 8, encoder: Default::default() },
//!         ModalityConfig { name: "audio".into(), input_dim: 4, encoder: Default::default() },
//!     ],
//!     num_classes: 3,
//!     task: Default::default(),
//!     hidden_dim: 16,
//!     dropout: 0.0,
//!     fusion: FusionConfig::Late { combiner: LateCombiner::Mean },
//! };
//! tch::manual_seed(0);
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = FusionModel::new(&vs.root(), &config)?;
//!
//! // A toy task: the class shifts the image features; audio is noise.
//! let labels = Tensor::randint(3, [300], (Kind::Int64, Device::Cpu));
//! let image = Tensor::randn([300, 8], (Kind::Float, Device::Cpu)) + labels.unsqueeze(1).to_kind(Kind::Float) * 2.0;
//! let audio = Tensor::randn([300, 4], (Kind::Float, Device::Cpu));
//! let data = TensorDataset::dense(vec![image, audio], labels)?;
//!
//! let run = tempfile::tempdir().map_err(|e| fusion_core::Error::Io { path: "tmp".into(), source: e })?;
//! let training = TrainConfig { epochs: 20, ..TrainConfig::new(32) };
//! let summary = Learner::new(&model, &vs, &training).fit(&data, None, &RunFolder::new(run.path()), &mut |_| {})?;
//! assert_eq!(summary.epochs.len(), 20);
//! assert!(evaluate(&model, &data, 100)?.metrics.accuracy > 0.8);
//!
//! // A sample may lack a modality: here the second and fifth have no audio.
//! let image = ModalityInput::dense(Tensor::randn([5, 8], (Kind::Float, Device::Cpu)));
//! let present = Tensor::from_slice(&[true, false, true, true, false]);
//! let audio = ModalityInput::with_presence(Tensor::randn([5, 4], (Kind::Float, Device::Cpu)), present);
//! let output = model.forward_t(&[image, audio], false)?;
//! assert_eq!(output.prediction.size(), [5, 3]);
//! # Ok::<(), fusion_core::Error>(())
//! ```

mod attention;
mod calibration;
mod config;
pub mod contrastive;
mod cross_modal;
mod dataset;
mod device;
mod early;
mod ensemble;
mod error;
mod explain;
mod export;
mod files;
mod fusion;
mod input;
mod late;
mod metrics;
mod model;
pub mod parallel;
mod precision;
pub mod search;
mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod train;

pub use calibration::{
    ReliabilityBin, brier_score, conformal_scores, conformal_threshold, fit_temperature, nll_at, prediction_set,
    reliability, with_temperature,
};
pub use config::{
    ConfidenceMeasure, EarlyMethod, EncoderConfig, FusionConfig, GatingForm, LateCombiner, ModalityConfig, ModelConfig,
    Task, deserialize_strict, with_suggestion,
};
pub use dataset::{TensorDataset, seeded_batches};
pub use device::{
    DeviceChoice, GpuMemory, cuda_available, cuda_device_count, gpu_peak_memory, peak_rss_bytes, reset_gpu_peak_memory,
};
pub use early::EarlyFusion;
pub use ensemble::{Selection, log_loss, probability_metrics, select_ensemble, weighted_average};
pub use error::{Error, Result};
pub use explain::{
    Complexity, NOISE_LEVELS, NoiseCurve, ShapleyReport, SubsetAccuracy, complexity, missing_modality_accuracy,
    noise_robustness, shapley_values,
};
pub use export::{Dim, ExportSignature, ExportedInput, export_arguments, export_torchscript, signature_path};
pub use files::{RunLock, write_atomic, write_checked_safetensors, write_file_atomic};
pub use fusion::tensor_fusion;
/// The encoder interface and weight files this crate builds on (its error type among them).
pub use fusion_nn;
pub use fusion_nn::{
    CHECKSUM_KEY, Encoder, IdentityEncoder, InputMismatch, MlpEncoder, ModalityInput, ParameterSet, WeightsMismatch,
    checksum, conv2d, linear, read_checked_safetensors,
};
pub use input::modality_dropout;
pub use late::LateFusion;
pub use metrics::{
    BinaryMetrics, ECE_BINS, GroupMetrics, Metrics, MultiLabelMetrics, RegressionMetrics, THRESHOLD,
    expected_calibration_error, macro_f1,
};
pub use model::{BranchOutput, FusionModel, FusionOutput};
pub use parallel::{ProcessGroup, Strategy};
pub use precision::{Autocast, LossScaler, Precision};
pub use stream::{Batch, Batches, PREFETCH_BATCHES, ShardWriter, ShardedDataset, TrainingData};
pub use train::{
    DataSource, EarlyStopping, EpochRecord, Evaluation, GroupDro, Learner, Objective, Optimizer, OptimizerConfig,
    ParamGroup, Progress, RunFolder, Sampling, Schedule, StopMetric, TaskMetrics, TrainConfig, TrainSummary, argmax,
    available_memory, embed, evaluate, label_states, load_weights, save_weights, update_group_weights,
};
