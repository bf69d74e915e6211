//! The HTTP endpoints over a [`Batcher`], and the server that runs them until a signal.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use fusion_run::{Prediction, Predictor};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::{Answer, BatchOptions, Batcher, Metrics, SearchIndex, ServeError, request};

pub use crate::request::Access;

/// Everything `fusion serve` is started with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (loopback unless told otherwise).
    pub addr: SocketAddr,
    /// Batching and queue bounds.
    pub batch: BatchOptions,
    /// Token, allowed folder and scratch folder.
    pub access: Access,
    /// Bounds on request bodies.
    pub bodies: Bodies,
    /// The index `POST /v1/search` answers from (a contrastive run's).
    pub search: Option<SearchIndex>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            batch: BatchOptions::default(),
            access: Access::default(),
            bodies: Bodies::default(),
            search: None,
        }
    }
}

/// Bounds on request bodies, applied before and while they are read.
#[derive(Debug, Clone)]
pub struct Bodies {
    /// Largest request body, in bytes (413 beyond).
    pub max_bytes: usize,
    /// Most bytes of request bodies read and held at once (by their Content-Length, or
    /// `max_bytes` when they give none); a body beyond is answered 429 before it is read.
    pub total_bytes: usize,
    /// Longest a body may take to arrive (408 beyond).
    pub timeout: std::time::Duration,
}

impl Default for Bodies {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            total_bytes: 256 << 20,
            timeout: std::time::Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Shared {
    pub batcher: Batcher,
    access: Arc<Access>,
    /// Request bodies being read or held, in KiB.
    budget: Arc<tokio::sync::Semaphore>,
    bodies: Bodies,
    /// What `POST /v1/search` searches, if anything.
    pub search: Option<SearchIndex>,
}

/// Permits of [`Shared::bodies`] are KiB.
const BODY_UNIT: usize = 1024;

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Busy => StatusCode::TOO_MANY_REQUESTS,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Deadline(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Model(_) | Self::Internal(_) | Self::Options(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = (status, Json(serde_json::json!({"error": self.to_string()}))).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Busy | Self::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// The endpoints over `batcher`, as a router an application can mount or nest:
/// `GET /` (a page to try the model), `POST /v1/predict`, `GET /v1/signature`,
/// `GET /healthz`, `GET /readyz` and `GET /metrics`. With a token in `access`, `/v1/*` and
/// `/metrics` need it. Request bodies are bounded by `bodies`.
pub fn router(batcher: Batcher, access: Access, bodies: Bodies) -> Router {
    router_with_index(batcher, access, bodies, None)
}

/// [`router`], and `POST /v1/search?k=10&among=MODALITY` over `index` (records as
/// `/v1/predict` takes them, each giving one modality: its `k` most similar indexed
/// records; without an index it answers 404).
pub fn router_with_index(batcher: Batcher, access: Access, bodies: Bodies, index: Option<SearchIndex>) -> Router {
    let shared = Shared {
        batcher,
        access: Arc::new(access),
        budget: Arc::new(tokio::sync::Semaphore::new(
            bodies
                .total_bytes
                .max(bodies.max_bytes)
                .div_ceil(BODY_UNIT)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
        bodies: bodies.clone(),
        search: index,
    };
    let guarded = Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/search", post(crate::search::search))
        .route("/v1/signature", get(signature))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authorize));
    Router::new()
        .route("/", get(|| async { Html(include_str!("page.html")) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .merge(guarded)
        .layer(middleware::from_fn_with_state(shared.clone(), measure))
        .layer(DefaultBodyLimit::max(bodies.max_bytes))
        .with_state(shared)
}

/// Serves `predictor` at `options.addr` until SIGTERM or Ctrl-C; then refuses new
/// requests, answers those admitted and returns. `listening` is told the bound address
/// (a port of 0 picks a free one).
pub async fn serve(
    predictor: Predictor,
    options: ServeOptions,
    listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    if options.bodies.timeout.is_zero() || options.bodies.max_bytes == 0 {
        return Err(ServeError::Options(
            "bodies need a positive size limit and a positive time to arrive".into(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .map_err(|e| ServeError::Options(format!("cannot listen on {}: {e}", options.addr)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Options(format!("cannot read the bound address: {e}")))?;
    // Registered before anyone is told the address: from then on a SIGTERM stops the
    // server gracefully, never the process outright.
    let signals = StopSignals::register()?;
    let batcher = Batcher::start(predictor, options.batch.clone(), Arc::new(Metrics::default()))?;
    let app = router_with_index(
        batcher.clone(),
        options.access.clone(),
        options.bodies.clone(),
        options.search.clone(),
    );
    log(
        "listening",
        &[("addr", addr.to_string()), ("model", batcher.signature().name.clone())],
    );
    listening(addr);
    let stopping = batcher.clone();
    let (stopped, stop) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let signal = signals.recv().await;
        stopping.close();
        log(
            "stopping",
            &[
                ("signal", signal.to_string()),
                ("in_flight", stopping.in_flight().to_string()),
            ],
        );
        let _ = stopped.send(());
    });
    // Admitted requests end within their deadline; a connection that never finishes does
    // not keep the server up past it.
    let grace = options.batch.deadline + std::time::Duration::from_secs(5);
    tokio::select! {
        served = std::future::IntoFuture::into_future(server) => {
            served.map_err(|e| ServeError::Internal(format!("the server failed: {e}")))?;
        }
        () = async {
            let _ = stop.await;
            tokio::time::sleep(grace).await;
        } => log("stopped waiting for open connections", &[("after_seconds", grace.as_secs().to_string())]),
    }
    log("stopped", &[]);
    Ok(())
}

/// SIGTERM and SIGINT, caught.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn register() -> Result<Self, ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        let caught =
            |kind: SignalKind| signal(kind).map_err(|e| ServeError::Options(format!("cannot catch stop signals: {e}")));
        Ok(Self {
            terminate: caught(SignalKind::terminate())?,
            interrupt: caught(SignalKind::interrupt())?,
        })
    }

    /// Waits for either; returns its name.
    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// One structured log line on standard error.
fn log(event: &str, fields: &[(&str, String)]) {
    let mut line = serde_json::Map::new();
    let seconds = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    line.insert("time".into(), seconds.into());
    line.insert("event".into(), event.into());
    for (key, value) in fields {
        line.insert((*key).into(), value.clone().into());
    }
    eprintln!("{}", serde_json::Value::Object(line));
}

async fn authorize(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(token) = &shared.access.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return ServeError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

async fn measure(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status();
    shared
        .batcher
        .metrics()
        .request(&endpoint, status.as_u16(), started.elapsed().as_secs_f64());
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        log(
            "error",
            &[("endpoint", endpoint), ("status", status.as_u16().to_string())],
        );
    }
    response
}

async fn ready(State(shared): State<Shared>) -> Response {
    if shared.batcher.is_closed() {
        return ServeError::ShuttingDown.into_response();
    }
    if !shared.batcher.is_alive() {
        return ServeError::Internal("the model's thread has stopped".into()).into_response();
    }
    Json(serde_json::json!({"ready": true})).into_response()
}

async fn signature(State(shared): State<Shared>) -> Response {
    Json(shared.batcher.signature()).into_response()
}

async fn metrics(State(shared): State<Shared>) -> Response {
    let batcher = &shared.batcher;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        batcher.metrics().render(batcher.queue_depth(), batcher.in_flight()),
    )
        .into_response()
}

/// One record's answer: its prediction and, when asked for, each modality's contribution.
#[derive(Serialize)]
struct Predicted {
    #[serde(flatten)]
    prediction: Prediction,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<BTreeMap<String, f64>>,
}

/// A record that could not be predicted.
#[derive(Serialize)]
pub(crate) struct Unpredicted {
    pub id: String,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
}

#[derive(Serialize)]
struct PredictResponse {
    predictions: Vec<Predicted>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<Unpredicted>,
}

/// A predict or search request's records, its body bounded before and while it is read,
/// with its share of the body budget (held until the request is answered).
pub(crate) async fn read_request(
    shared: &Shared,
    headers: &HeaderMap,
    request: Request,
) -> Result<(request::Incoming, tokio::sync::OwnedSemaphorePermit), ServeError> {
    let batcher = &shared.batcher;
    if batcher.is_closed() {
        return Err(ServeError::ShuttingDown);
    }
    // Bodies are bounded before they are read: a flood of large ones is refused at once.
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(shared.bodies.max_bytes)
        .min(shared.bodies.max_bytes);
    let Ok(body_permit) = shared
        .budget
        .clone()
        .try_acquire_many_owned(announced.div_ceil(BODY_UNIT).max(1) as u32)
    else {
        batcher.metrics().rejected();
        return Err(ServeError::Busy);
    };
    let signature = batcher.signature().clone();
    let limits = batcher.limits().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // A client that sends its body slowly holds a share of the body budget: not for long.
    let patience = shared.bodies.timeout;
    let read = async {
        if content_type.starts_with("multipart/form-data") {
            let multipart = Multipart::from_request(request, &())
                .await
                .map_err(|e| ServeError::BadRequest(e.body_text()))?;
            request::from_multipart(multipart, &signature, &shared.access, &limits).await
        } else {
            let bytes = Bytes::from_request(request, &()).await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ServeError::TooLarge(format!("the body is over the server's limit: {}", e.body_text()))
                } else {
                    ServeError::BadRequest(e.body_text())
                }
            })?;
            let access = shared.access.clone();
            let max_records = batcher.options().max_records;
            tokio::task::spawn_blocking(move || request::from_json(&bytes, max_records, &signature, &access, &limits))
                .await
                .map_err(|e| ServeError::Internal(format!("reading the request stopped: {e}")))?
        }
    };
    let incoming = tokio::time::timeout(patience, read)
        .await
        .map_err(|_| ServeError::SlowBody(patience))??;
    Ok((incoming, body_permit))
}

async fn predict(State(shared): State<Shared>, headers: HeaderMap, request: Request) -> Result<Response, ServeError> {
    let batcher = &shared.batcher;
    let (incoming, _body_permit) = read_request(&shared, &headers, request).await?;
    let Answer {
        predictions,
        explanation,
    } = batcher.predict(incoming.records.clone(), incoming.explain).await?;
    let errors = unpredicted(&predictions, &incoming);
    let mut explained = explanation.map(|report| {
        let names = report.modalities;
        report
            .values
            .into_iter()
            .map(move |row| names.iter().cloned().zip(row).collect::<BTreeMap<_, _>>())
    });
    let answered: Vec<Predicted> = predictions
        .predictions
        .into_iter()
        .map(|mut prediction| {
            prediction.unusable = prediction.unusable.iter().map(|u| incoming.clean(u)).collect();
            Predicted {
                explanation: explained.as_mut().and_then(Iterator::next),
                prediction,
            }
        })
        .collect();
    // Nothing predicted: the request's files were the problem, not the server.
    let status = if answered.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(PredictResponse {
            predictions: answered,
            errors,
        }),
    )
        .into_response())
}

/// The records of `incoming` that `predictions` could not predict, with why.
pub(crate) fn unpredicted(predictions: &fusion_run::Predictions, incoming: &request::Incoming) -> Vec<Unpredicted> {
    predictions
        .errors
        .iter()
        .map(|problem| Unpredicted {
            id: problem.id.clone(),
            error: incoming.clean(&fusion_run::describe(problem)),
            modality: problem.modality.clone(),
        })
        .collect()
}
