//! What the list endpoints share: the contract's collection parameters (`offset`, `limit`,
//! `count`, `searchAfter`, `filters`, `sorters`), running a query off the async workers, and the
//! answer (a JSON array, with `X-Total-Count` when `count=true`).
//!
//! The parameters are parsed by `jitflow_store::query::Query::parse` against the endpoint's
//! collection, so the field tables, bounds and `searchAfter` encoding are the engine's (see the
//! README's list section); each problem is a 400 naming it.

use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use jitflow::Engine;
use jitflow::query::{Collection, Query};
use serde::Serialize;

use crate::body::Params;
use crate::error::ApiError;

/// The query parameters every list endpoint takes.
pub const PARAMS: &[&str] = &[
    "offset",
    "limit",
    "count",
    "searchAfter",
    "filters",
    "sorters",
];

/// The response header that carries the total when `count=true`.
pub const TOTAL_COUNT: &str = "x-total-count";

/// The list query of a request's URI on `collection`: 400 for an unknown or repeated parameter
/// and for any value the collection refuses.
pub fn query(uri: &Uri, collection: &Collection) -> Result<Query, ApiError> {
    let params = Params::from_uri(uri)?;
    let p = params.only(PARAMS)?;
    Query::parse(
        collection,
        p.get("filters"),
        p.get("sorters"),
        p.get("offset"),
        p.get("limit"),
        p.get("count"),
        p.get("searchAfter"),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Runs a store read on the blocking pool: a list query may examine up to a million records,
/// which must not stall the async workers that serve the signals.
pub async fn blocking<T: Send + 'static>(
    engine: &Engine,
    read: impl FnOnce(&Engine) -> Result<T, jitflow::Error> + Send + 'static,
) -> Result<T, ApiError> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || read(&engine))
        .await
        .map_err(|e| ApiError::internal(format!("a read task failed: {e}")))?
        .map_err(ApiError::from)
}

/// The 200 answer of a list: the items as a JSON array, and `X-Total-Count` when counted.
pub fn answer<T: Serialize>(items: Vec<T>, total: Option<u64>) -> Response {
    let mut response = axum::Json(items).into_response();
    if let Some(total) = total {
        response
            .headers_mut()
            .insert(TOTAL_COUNT, HeaderValue::from(total));
    }
    response
}
