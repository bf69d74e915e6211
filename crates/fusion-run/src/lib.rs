//! # fusion-run
//!
//! The steps from a run configuration to a trained, evaluated model, as a library:
//! above fusion-core (fusion methods, training) and the modality crates (features and
//! encoders), which know nothing of each other.
//!
//! - [`RunConfig`]: the manifest, per modality its features (fusion-data's
//!   [`fusion_data::FeatureConfig`]: flat vectors, images `[C, H, W]`, log-mel `[T, n_mels]`,
//!   token ids, video frames `[T, C, H, W]`, a video's sound track) and its
//!   [`EncoderSpec`] (MLP, LeNet, ResNet-18, pretrained EfficientNet-Lite0, audio CNN/GRU,
//!   pretrained BERT/MiniLM, a small transformer, per-frame video encoders), the fusion
//!   method and training settings; every encoder is checked against its features.
//! - [`CompareConfig`]: a configuration and the rows [`compare`] trains beside it (one
//!   file: its `compare` list).
//! - [`build_model`]: the model of a configuration; inputs are standardised inside the
//!   model (statistics stored as variables), so checkpoints and exported modules take raw
//!   features.
//! - [`train`]: features → datasets → training into a [`Run`] folder, resumable.
//! - [`Predictor`]: a run or ensemble folder loaded back, evaluating a split and predicting
//!   new records (from a manifest through the feature cache, or from raw files): the one
//!   path of `fusion eval`, `fusion predict` and an application.
//!
//! Predicting one new record with a trained run:
//!
//! ```no_run
//! use fusion_data::Record;
//!
//! let predictor = fusion_run::Predictor::load("runs/demo/hybrid", tch::Device::Cpu)?;
//! let record = Record {
//!     id: "new".into(),
//!     image: Some("digit.png".into()),
//!     audio: Some("digit.wav".into()),
//!     ..Record::default()
//! };
//! let prediction = &predictor.predict(&[record])?[0];
//! println!("{} ({:?} missing)", prediction.prediction, prediction.missing);
//! # Ok::<(), fusion_run::Error>(())
//! ```

mod alone;
mod analysis;
mod baselines;
mod calibration;
mod compare;
mod config;
mod data;
mod encoder;
mod ensemble;
mod error;
mod evaluation;
mod fairness;
mod fit;
mod frozen;
mod label_calibration;
mod portfolio;
mod predictor;
mod preset;
mod retrieval;
mod run;
mod weights;

pub use alone::{ModalityAlone, modalities_alone};
pub use analysis::{ExplainRecord, RobustnessRecord};
pub use baselines::{Baseline, Baselines, MAX_BASELINE_INPUTS, fit_baselines, fit_logistic};
pub use calibration::{
    Achieved, CALIBRATION_FILE, COVERAGE_TARGETS, CalibratedEval, Calibration, Coverage, GroupCoverage,
    GroupIntervalCoverage, INTERVALS_FILE, IntervalCoverage, IntervalEval, Intervals, ProbabilityScores,
};
pub use compare::{CompareRow, Compared, RetrievalSummary, compare, default_methods, score_name, task_score};
pub use config::{Augment, CompareConfig, MAX_HIDDEN_DIM, ModalitySpec, NamedFusion, OnBadFile, RunConfig};
pub use data::{
    REGRESSION_OUTPUT, SplitData, TAG_SEPARATOR, classes_of, dataset, fit_standardization, modality_tensor, outputs_of,
    tags_of,
};
pub use encoder::{EncoderSpec, Layout, TextPooling, VideoPooling, models_dir};
pub use ensemble::{ENSEMBLE_FILE, EnsembleFile, Member, is_ensemble};
pub use error::{Error, Result};
pub use evaluation::{EVAL_BATCH, EvalRecord, Loaded, load, load_compared};
pub use fairness::{Fairness, GroupFairness, Leaning};
pub use fit::{Fitted, RESOURCES_FILE, Resources, fit, fit_loaded, peak_rss_mb, simple_baselines};
pub use frozen::FrozenCounts;
pub use label_calibration::{LABEL_CALIBRATION_FILE, LabelCalibratedEval, LabelCalibration, LabelScores};
pub use portfolio::{
    BAG_BELOW_VAL, BAG_FOLDS, INTERACTION_DROPOUT, INTERACTION_EPOCHS, INTERACTION_LR, MAX_FOLDS, PORTFOLIO_ROUNDS,
    Portfolio, PortfolioOptions, interaction_config, portfolio_members, train_portfolio,
};
pub use predictor::{Observer, Prediction, Predictions, Predictor, Prepared, Preparer, build_ensemble};
pub use preset::{HOLDOUT_FRACTION, Preset, zero_config};
pub use retrieval::{
    ClassDescriptions, Embeddings, GraphBuilt, KeyIndex, RECALL_SAMPLES, SearchAnswer, SearchHit, Searcher,
    ZeroShotRecord, prompts_from_templates,
};
pub use run::{
    Run, Trained, build_model, decision, describe, example_inputs, export_features, held_out_split, prediction_dataset,
    split_dataset, train,
};
pub use weights::{ClassWeights, training_weights};
