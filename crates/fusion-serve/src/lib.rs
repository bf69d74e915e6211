//! # fusion-serve
//!
//! A trained run (or ensemble) of this workspace behind HTTP, decoding images, audio,
//! video, text and table cells in the same process:
//!
//! - [`Batcher`]: dynamic batching without HTTP. Requests are decoded on blocking threads
//!   (at most `decode_threads` at once), then wait in a bounded queue and are grouped up to
//!   `max_batch` records or `max_delay`, whichever comes first, into one pass through the
//!   model on the one thread that owns it. A full queue refuses at once; every request has
//!   a deadline. An application `.predict(records, explain).await`s from as many tasks as
//!   it likes.
//! - [`router`]: the HTTP endpoints over a [`Batcher`], as an axum `Router` an application
//!   can mount: `POST /v1/predict` (JSON with base64 files, or one multipart record),
//!   `GET /v1/signature`, `/healthz`, `/readyz`, `/metrics` (Prometheus) and `GET /`, a page
//!   to try the model; [`router_with_index`] adds `POST /v1/search` over a contrastive
//!   run's index ([`SearchIndex`]).
//! - [`serve`]: the whole server on an address, until SIGTERM or Ctrl-C (in-flight requests
//!   finish, new ones are refused).
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let predictor = fusion_run::Predictor::load("runs/demo/hybrid", tch::Device::Cpu)?;
//! let batcher = fusion_serve::Batcher::start(predictor, Default::default(), Arc::default())?;
//! let record = fusion_data::Record {
//!     id: "new".into(),
//!     image: Some("digit.png".into()),
//!     ..Default::default()
//! };
//! let answer = batcher.predict(vec![record], false).await?;
//! println!("{}", answer.predictions.predictions[0].prediction);
//! # Ok(())
//! # }
//! ```

mod batcher;
mod http;
mod metrics;
mod request;
mod search;

use fusion_run::{Predictor, Preparer};
use serde::Serialize;

pub use batcher::{Answer, BatchOptions, Batcher};
pub use http::{Access, Bodies, ServeOptions, router, router_with_index, serve};
pub use metrics::Metrics;
pub use search::{MAX_HITS, SearchIndex};

/// Why a request was not answered with predictions.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServeError {
    /// The request is malformed or names something the model does not read (400).
    #[error("{0}")]
    BadRequest(String),
    /// What the request asks for is not served here (404).
    #[error("{0}")]
    NotFound(String),
    /// The request or one of its files is over a limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// No valid bearer token (401).
    #[error("a valid bearer token is needed (Authorization: Bearer …)")]
    Unauthorized,
    /// The request names a server-side file the operator did not allow (403).
    #[error("{0}")]
    Forbidden(String),
    /// The server holds as many requests (records, or bodies being read) as it admits;
    /// try again shortly (429).
    #[error("the server is busy: try again shortly")]
    Busy,
    /// The server is stopping (503).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The request's body did not arrive within the deadline (408).
    #[error("the request's body did not arrive within {0:?}")]
    SlowBody(std::time::Duration),
    /// The request was not answered within its deadline (504).
    #[error("no answer within the deadline of {0:?}")]
    Deadline(std::time::Duration),
    /// The model failed on the batch (500).
    #[error("the model failed: {0}")]
    Model(String),
    /// Something in the server failed (500).
    #[error("{0}")]
    Internal(String),
    /// The server's own options are wrong (at start-up).
    #[error("{0}")]
    Options(String),
}

/// What a served model reads and predicts (`GET /v1/signature`).
#[derive(Debug, Clone, Serialize)]
pub struct Signature {
    /// The folder's name.
    pub name: String,
    /// This server's version.
    pub version: String,
    /// `classification`, `multi_label` or `regression`.
    pub task: String,
    /// The classes, tags, or `value`, in the order of a prediction's scores.
    pub outputs: Vec<String>,
    /// The modalities read, each from one field of a record.
    pub modalities: Vec<ModalitySignature>,
    /// Runs in the folder (more than one: an ensemble).
    pub members: usize,
    /// Whether probabilities are calibrated (then `coverage` sets are possible).
    pub calibrated: bool,
    /// Whether a request may ask for per-modality Shapley values (one run).
    pub explainable: bool,
}

/// One modality of a [`Signature`].
#[derive(Debug, Clone, Serialize)]
pub struct ModalitySignature {
    /// The modality's name in the run.
    pub name: String,
    /// The record field it reads: `text` (or `text_path`), `image`, `audio`, `video` or
    /// `table`.
    pub field: String,
    /// Its features (`pixels`, `log_mel`, `tokens`…).
    pub features: String,
    /// A table's columns.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnSignature>,
}

/// One column of a table modality.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnSignature {
    /// The cell's key in a record's `table`.
    pub name: String,
    /// `numeric` or `categorical`.
    pub kind: String,
}

impl Signature {
    fn of(predictor: &Predictor, preparer: &Preparer) -> Self {
        let modalities = preparer
            .modalities()
            .into_iter()
            .map(|spec| ModalitySignature {
                name: spec.name.clone(),
                field: spec.config.modality().name().to_string(),
                features: spec.config.kind_name(),
                columns: match &spec.config {
                    fusion_data::FeatureConfig::Table { columns } => columns
                        .iter()
                        .map(|c| {
                            let kind = match c {
                                fusion_tabular::Column::Numeric { .. } => "numeric",
                                fusion_tabular::Column::Categorical { .. } => "categorical",
                            };
                            ColumnSignature {
                                name: c.name().to_string(),
                                kind: kind.to_string(),
                            }
                        })
                        .collect(),
                    _ => Vec::new(),
                },
            })
            .collect();
        let members = predictor
            .ensemble()
            .map_or(1, |e| e.members.iter().filter(|m| m.weight > 0.0).count());
        Self {
            name: predictor.root().file_name().map_or_else(
                || predictor.root().display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            version: env!("CARGO_PKG_VERSION").to_string(),
            task: predictor.task().name().to_string(),
            outputs: predictor.outputs().to_vec(),
            modalities,
            members,
            calibrated: predictor.calibration().is_some(),
            explainable: predictor.ensemble().is_none(),
        }
    }
}
