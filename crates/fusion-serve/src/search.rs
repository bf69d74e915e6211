//! `POST /v1/search`: each record of a request, embedded by a contrastive run, searched
//! for in an index that run wrote (`fusion embed`).

use std::sync::{Arc, Mutex, PoisonError};

use axum::{
    Json,
    extract::{Query, Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use fusion_run::{SearchAnswer, Searcher};
use serde::{Deserialize, Serialize};

use crate::{
    ServeError,
    http::{Shared, Unpredicted, read_request, unpredicted},
};

/// Most hits one query may ask for.
pub const MAX_HITS: usize = 1000;

/// An index `POST /v1/search` answers from, opened with the served run
/// ([`Searcher::open`]).
#[derive(Clone)]
pub struct SearchIndex {
    searcher: Arc<Mutex<Searcher>>,
    /// [`Searcher::indexed`], read without the lock.
    indexed: Arc<[String]>,
}

impl SearchIndex {
    /// Serves `searcher`'s index.
    pub fn new(searcher: Searcher) -> Self {
        Self {
            indexed: searcher.indexed().into(),
            searcher: Arc::new(Mutex::new(searcher)),
        }
    }
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SearchIndex")
    }
}

/// `?k=10&among=image`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default)]
    among: Option<String>,
}

fn default_k() -> usize {
    10
}

/// One query's hits.
#[derive(Serialize)]
struct Found {
    id: String,
    #[serde(flatten)]
    answer: SearchAnswer,
}

#[derive(Serialize)]
struct SearchResponse {
    results: Vec<Found>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<Unpredicted>,
}

pub(crate) async fn search(
    State(shared): State<Shared>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ServeError> {
    let Some(index) = shared.search.clone() else {
        return Err(ServeError::NotFound(
            "this server has no index to search: start it with `fusion serve --index FILE` (from `fusion embed`)"
                .into(),
        ));
    };
    let Query(params) = Query::<SearchParams>::try_from_uri(request.uri())
        .map_err(|e| ServeError::BadRequest(format!("the query string: {}", e.body_text())))?;
    if !(1..=MAX_HITS).contains(&params.k) {
        return Err(ServeError::BadRequest(format!("k: between 1 and {MAX_HITS} hits")));
    }
    if let Some(among) = params.among.as_ref().filter(|among| !index.indexed.contains(among)) {
        return Err(ServeError::BadRequest(format!(
            "among: no indexed record has a `{among}` embedding (indexed: {})",
            index.indexed.join(", ")
        )));
    }
    let (incoming, _body_permit) = read_request(&shared, &headers, request).await?;
    let answer = shared.batcher.predict(incoming.records.clone(), false).await?;
    let errors = unpredicted(&answer.predictions, &incoming);
    let queries: Vec<_> = answer
        .predictions
        .predictions
        .into_iter()
        .map(|p| (p.id, p.embeddings.unwrap_or_default()))
        .collect();
    let (results, refused) = tokio::task::spawn_blocking(move || {
        // The index is only read: a search that panicked left nothing half-written.
        let searcher = index.searcher.lock().unwrap_or_else(PoisonError::into_inner);
        let mut results = Vec::new();
        let mut refused = Vec::new();
        for (id, query) in queries {
            match searcher.search(&query, params.among.as_deref(), params.k) {
                Ok(answer) => results.push(Found { id, answer }),
                // What the record asked cannot be searched: its own error, not the request's.
                Err(e @ (fusion_run::Error::Record(_) | fusion_run::Error::Config(_))) => {
                    refused.push((id, e.to_string()));
                }
                Err(e) => return Err(ServeError::Model(e.to_string())),
            }
        }
        Ok((results, refused))
    })
    .await
    .map_err(|e| ServeError::Internal(format!("the search stopped: {e}")))??;
    let errors: Vec<Unpredicted> = errors
        .into_iter()
        .chain(refused.into_iter().map(|(id, error)| Unpredicted {
            id,
            error,
            modality: None,
        }))
        .collect();
    let status = if results.is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(SearchResponse { results, errors })).into_response())
}
