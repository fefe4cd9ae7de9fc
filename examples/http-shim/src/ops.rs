//! `GET /health` and `GET /metrics` (Prometheus text format), for operators. Neither needs a
//! token: they say nothing about any tenant's data, only counts. Bind the server to a private
//! address (the default is 127.0.0.1) if even counts are sensitive.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jitflow_store::read::MAX_READ_LIMIT;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorResponseDto};

/// The stuck gauge is counted among at most this many connections with pending effects (a
/// scrape reads no more); at the cap it means "at least". The timer and effect gauges are exact.
pub const GAUGE_CAP: usize = MAX_READ_LIMIT;

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
        (status = 503, description = "The store cannot be read or the engine stopped.", body = ErrorResponseDto),
    )
)]
pub async fn health(State(state): State<AppState>) -> Result<Response, ApiError> {
    state
        .engine
        .last_sequence()
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    if state.engine.store().is_poisoned() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "a commit failed; the engine must be restarted",
        ));
    }
    Ok(axum::Json(Health {
        status: "UP".to_owned(),
    })
    .into_response())
}

/// Gauges read from the store.
struct Gauges {
    backlog: jitflow_store::read::Backlog,
    stuck: usize,
    /// How far the earliest armed timer is past its due time, in milliseconds (0 when none is
    /// overdue): the scheduler's lag.
    timer_lag_ms: u64,
}

fn gauges(state: &AppState) -> Result<Gauges, jitflow_store::read::Error> {
    let reader = state.engine.store().reader()?;
    // Exact and constant time: redb keeps each table's length.
    let backlog = reader.backlog()?;
    // A stuck activation or standing revoke always has its revoke pending, so the connections
    // with pending effects are the only ones to look at.
    let intents = reader.intents(None, GAUGE_CAP)?;
    let mut stuck = 0;
    for intent in &intents {
        if let Some(c) = reader.connection(&intent.tenant, intent.connection)? {
            let activation_stuck = c.activation.as_ref().is_some_and(|a| a.stuck);
            let standing_stuck = c.standing_revoke.as_ref().is_some_and(|r| r.stuck);
            if activation_stuck || standing_stuck {
                stuck += 1;
            }
        }
    }
    let now = state.engine.now();
    let timer_lag_ms = reader
        .due_timers(None, None, 1)?
        .first()
        .map_or(0, |t| now.as_millis().saturating_sub(t.due().as_millis()));
    Ok(Gauges {
        backlog,
        stuck,
        timer_lag_ms,
    })
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The engine's counters and gauges in the Prometheus text format.
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
    let m = state.engine.metrics();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let for_gauges = state.clone();
    let g = tokio::task::spawn_blocking(move || gauges(&for_gauges))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut out = String::new();
    metric(
        &mut out,
        "jitflow_commits_total",
        "counter",
        "Transactions committed.",
        &[("", get(&m.commits))],
    );
    metric(
        &mut out,
        "jitflow_commit_failures_total",
        "counter",
        "Commits that failed (outcome unknown).",
        &[("", get(&m.commit_failures))],
    );
    metric(
        &mut out,
        "jitflow_events_total",
        "counter",
        "Events committed; divided by commits, the mean batch size.",
        &[("", get(&m.events))],
    );
    metric(
        &mut out,
        "jitflow_commit_seconds_total",
        "counter",
        "Time spent committing, in seconds.",
        &[],
    );
    let _ = writeln!(
        out,
        "jitflow_commit_seconds_total {}",
        get(&m.commit_micros) as f64 / 1e6
    );
    metric(
        &mut out,
        "jitflow_commands_total",
        "counter",
        "Commands by outcome.",
        &[
            ("{outcome=\"accepted\"}", get(&m.accepted)),
            ("{outcome=\"refused\"}", get(&m.refused)),
        ],
    );
    metric(
        &mut out,
        "jitflow_signals_total",
        "counter",
        "Activation signals accepted, by kind.",
        &[
            ("{kind=\"activate\"}", get(&m.signals[0])),
            ("{kind=\"extend\"}", get(&m.signals[1])),
            ("{kind=\"deactivate\"}", get(&m.signals[2])),
        ],
    );
    metric(
        &mut out,
        "jitflow_timers_fired_total",
        "counter",
        "Timers fired.",
        &[("", get(&m.timers_fired))],
    );
    metric(
        &mut out,
        "jitflow_effects_total",
        "counter",
        "Grant, revoke and validate calls, by outcome.",
        &[
            ("{outcome=\"ok\"}", get(&m.effects_ok)),
            ("{outcome=\"failed\"}", get(&m.effects_failed)),
        ],
    );
    metric(
        &mut out,
        "jitflow_timers_pending",
        "gauge",
        "Armed timers (activations' and access request items').",
        &[("", g.backlog.timers)],
    );
    metric(
        &mut out,
        "jitflow_effects_pending",
        "gauge",
        "Connections and access request items with effects in flight or waiting to retry.",
        &[
            ("{of=\"connection\"}", g.backlog.connection_intents),
            ("{of=\"request_item\"}", g.backlog.item_intents),
        ],
    );
    metric(
        &mut out,
        "jitflow_timer_lag_seconds",
        "gauge",
        "How far the earliest armed timer is past its due time (0 when none is overdue).",
        &[],
    );
    let _ = writeln!(
        out,
        "jitflow_timer_lag_seconds {}",
        g.timer_lag_ms as f64 / 1e3
    );
    metric(
        &mut out,
        "jitflow_stuck_activations",
        "gauge",
        "Activations and standing revokes flagged stuck (among the first 10000 connections with pending effects).",
        &[("", g.stuck as u64)],
    );
    let store = state.engine.store_stats();
    metric(
        &mut out,
        "jitflow_store_layer_entries",
        "gauge",
        "Rows in the store's hot layer (changed since the last checkpoint).",
        &[("", store.layer_entries)],
    );
    metric(
        &mut out,
        "jitflow_store_layer_bytes",
        "gauge",
        "Key and value bytes in the store's hot layer.",
        &[("", store.layer_bytes)],
    );
    metric(
        &mut out,
        "jitflow_store_checkpoint_lag_events",
        "gauge",
        "Events committed since the last checkpoint (the open replays them after a crash).",
        &[("", store.sequence - store.checkpoint)],
    );
    metric(
        &mut out,
        "jitflow_store_checkpoints_total",
        "counter",
        "Checkpoints written since the engine started.",
        &[("", store.checkpoints)],
    );
    metric(
        &mut out,
        "jitflow_store_checkpoint_rows_total",
        "counter",
        "Rows written by checkpoints since the engine started.",
        &[("", store.checkpoint_rows)],
    );
    metric(
        &mut out,
        "jitflow_store_checkpoint_bytes_total",
        "counter",
        "Key and value bytes written by checkpoints since the engine started.",
        &[("", store.checkpoint_bytes)],
    );
    metric(
        &mut out,
        "jitflow_store_last_checkpoint_microseconds",
        "gauge",
        "How long the last checkpoint took (the writer waits for it), in microseconds.",
        &[("", store.last_checkpoint_micros)],
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
