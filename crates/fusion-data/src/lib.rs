//! # fusion-data
//!
//! Dataset manifests (JSON Lines or CSV): one record per sample with an id, a label and one
//! field per modality. An absent or empty modality field is a missing modality, not an
//! error; a line that cannot be parsed is reported with its line number and the rest of
//! the file loads. `validate` checks every record's files in parallel (exists, decodes,
//! within limits) and lists the bad ones with their reasons.
//!
//! ```no_run
//! let manifest = fusion_data::Manifest::load_jsonl("data/avmnist/manifest.jsonl")?;
//! for bad in &manifest.rejected {
//!     eprintln!("skipped {bad}");
//! }
//! println!("{} records", manifest.records.len());
//! # Ok::<(), fusion_data::Error>(())
//! ```

#[cfg(feature = "avmnist")]
mod avmnist;
#[cfg(feature = "avmnist")]
mod degrade;
mod error;
mod features;
mod infer;
mod manifest;
mod validate;

#[cfg(feature = "avmnist")]
pub use avmnist::{AvMnistOptions, AvMnistSummary, build_avmnist};
#[cfg(feature = "avmnist")]
pub use degrade::{Pca, add_noise};
pub use error::{Error, FeatureError, Result};
pub use features::{
    BadShard, EXTRACT_CHUNK, Extraction, Extractor, FEATURE_VERSION, FeatureCache, FeatureConfig, FeatureSpec,
    ImageNormalization, LogMelConfig, MAX_FEATURE_DIM, MAX_FEATURE_MAGNITUDE, Prepared, Shard, extract,
};
pub use infer::{
    ColumnInference, ColumnKind, ImageSample, InferredColumn, LabelKind, UnknownName, infer_columns, infer_label,
};
pub use manifest::{
    BadCell, ColumnMap, ColumnRole, FILE_FIELDS, Holdout, MAX_LINE_BYTES, MAX_MANIFEST_BYTES, Manifest, Modality,
    OutsideFolder, PathScope, RECORD_FIELDS, Record, RejectedLine, Split, UnknownField, UnknownSplit, cell_text,
    check_column_map,
};
pub use validate::{
    DEFAULT_PIXEL_BUDGET, Limits, Problem, Unreadable, ValidationReport, check_readable, read_bounded, validate,
};
