use std::path::PathBuf;

use thiserror::Error;

/// Errors of fusion-data.
#[derive(Debug, Error)]
pub enum Error {
    /// A manifest file that cannot be read at all.
    #[error("cannot read manifest {path}: {source}")]
    Io {
        /// The manifest file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A CSV manifest whose header cannot be read.
    #[error("cannot read CSV manifest {path}: {reason}")]
    Csv {
        /// The manifest file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Source data for a dataset builder that is missing or malformed.
    #[error("dataset source {path}: {reason}")]
    Dataset {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A feature cache shard that cannot be read or written.
    #[error("feature cache {path}: {reason}")]
    Cache {
        /// The shard or folder.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A configuration value that cannot work, with the field named.
    #[error("bad configuration: {0}")]
    Config(String),
}

/// Result with fusion-data's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Why one source's features cannot be computed: the record is reported with it and keeps
/// its other modalities.
#[derive(Debug, Error)]
pub enum FeatureError {
    /// A picture that cannot be decoded or prepared.
    #[cfg(feature = "image")]
    #[error(transparent)]
    Image(#[from] fusion_image::Error),
    /// A recording that cannot be read, resampled or turned into log-mels.
    #[cfg(feature = "audio")]
    #[error(transparent)]
    Audio(#[from] fusion_audio::Error),
    /// A video whose frames or sound track cannot be decoded.
    #[cfg(feature = "video")]
    #[error(transparent)]
    Video(#[from] fusion_video::Error),
    /// A text the tokenizer refuses.
    #[cfg(feature = "text")]
    #[error(transparent)]
    Text(#[from] fusion_text::Error),
    /// Table cells that do not fit their columns.
    #[error(transparent)]
    Table(#[from] fusion_tabular::Error),
    /// Table cells that are not a JSON object of strings.
    #[error("table cells: {0}")]
    TableCells(serde_json::Error),
    /// A text that is not UTF-8.
    #[error("text is not UTF-8: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    /// A source with nothing to compute features from (no words, no samples, no frame).
    #[error("{0}")]
    Empty(&'static str),
    /// A token id that a float32 feature cannot hold exactly.
    #[error("token id {0} is outside 0..2^24")]
    TokenId(i64),
    /// Grey frames asked for with ImageNet normalisation.
    #[error("grey frames are not ImageNet-normalised (set `grey: false`)")]
    GreyImagenet,
    /// Features computed without what [`FeatureConfig::prepare`](crate::FeatureConfig::prepare)
    /// loads (a tokenizer).
    #[error("no {0} loaded")]
    NotPrepared(&'static str),
    /// What computing them needs could not be loaded (a tokenizer, log-mel's filters).
    #[error(transparent)]
    Prepare(Box<Error>),
    /// A kind of features this build of fusion-data cannot compute.
    #[error("fusion-data was built without the `{0}` feature")]
    MissingFeature(&'static str),
}
