//! `GET /health` and `GET /metrics` (Prometheus text format), for operators. Neither needs a
//! token: they say nothing about any tenant's data, only counts. Bind the server to a private
//! address (the default is 127.0.0.1) if even counts are sensitive.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorResponseDto};

/// Answer of `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct Health {
    /// `UP`.
    pub status: String,
}

/// Whether the engine answers reads.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    operation_id = "health",
    responses(
        (status = 200, description = "The engine reads its store.", body = Health),
        (status = 503, description = "The store cannot be read, or the engine cannot write (degraded: the message names the cause) or stopped.", body = ErrorResponseDto),
    )
)]
pub async fn health(State(state): State<AppState>) -> Result<Response, ApiError> {
    state
        .engine
        .last_sequence()
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if let jitflow::Health::Degraded { cause, for_, .. } = state.engine.health() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "degraded: the engine cannot write ({cause}) for {} s; it reopens its store by \
                 itself",
                for_.as_secs()
            ),
        ));
    }
    Ok(axum::Json(Health {
        status: "UP".to_owned(),
    })
    .into_response())
}

/// The engine's series in the Prometheus text format (`Engine::scrape`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain"),
        (status = 500, description = "The store cannot be read.", body = ErrorResponseDto),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    // The scrape reads the store: off the async workers.
    let engine = state.engine.clone();
    let text = tokio::task::spawn_blocking(move || engine.scrape())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [(header::CONTENT_TYPE, jitflow::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}
