//! The shim's event endpoints (not part of the vendor contract), for auditors and operators; both
//! need `idn:jit-activation-history:read` and `ORG_ADMIN`, like the tenant's activation history.
//!
//! - `GET /jitflow/v1/connections/{id}/events` and `GET /jitflow/v1/activations/{id}/events`:
//!   the stream of one connection or activation, who did what and when, in order, a page of
//!   `limit` (1..=[`MAX_STREAM_PAGE`], default [`DEFAULT_STREAM_PAGE`]) after stream version
//!   `after` (default 0). The next page starts after the last item's `version`, which is also in
//!   [`NEXT_AFTER`].
//! - `GET /jitflow/v1/events`: the tenant's audit export, `application/x-ndjson`, one line per
//!   committed event ([`jitflow::export::json_line`]), among the `limit` (1..=`jitflow::MAX_PAGE`,
//!   default [`DEFAULT_EXPORT_PAGE`]) events after global sequence `after`. The scan is bounded
//!   by `limit` whatever the tenant, so a page may hold fewer lines than `limit` (or none):
//!   continue from [`NEXT_AFTER`] until it equals the `after` sent.

use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use jitflow::{Envelope, Payload, Stream, StreamEvent};
use jitflow_core::id::ActivationId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::activations::connection_id;
use crate::auth::{self, Principal};
use crate::body::{Params, Segment};
use crate::entitlement_connections::actor_text;
use crate::error::{ApiError, Errors};
use crate::list;

/// The most events one stream page holds.
pub const MAX_STREAM_PAGE: usize = 1000;
/// The stream page size when `limit` is absent.
pub const DEFAULT_STREAM_PAGE: usize = 100;
/// The export page size when `limit` is absent.
pub const DEFAULT_EXPORT_PAGE: usize = 1000;
/// The response header holding the `after` of the next page.
pub const NEXT_AFTER: &str = "x-next-after";

/// One event of a connection's or activation's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamEventDto {
    /// Its position in the stream read: the `after` of the next page.
    pub version: u64,
    /// Its global sequence (the audit export's `after` cursor).
    pub sequence: u64,
    /// When it happened.
    #[schema(format = DateTime)]
    pub at: String,
    /// Who caused it: an identity id, or `system` (timers and effect results).
    pub actor: String,
    /// What happened, e.g. `ActivationRequested`, `Provisioned`, `Expired`.
    pub change: String,
    /// The `requestOrigin` the client sent with the signal this event records (activate,
    /// extend, deactivate); absent when it sent none.
    #[serde(
        rename = "requestOrigin",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub request_origin: Option<String>,
    /// The `metaData` the client sent with the signal this event records; absent when it sent
    /// none.
    #[serde(rename = "metaData", default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta_data: Option<serde_json::Map<String, serde_json::Value>>,
    /// The whole event, as one line of the audit export.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// The name of a change: the variant's name in its serde form (`"Expired"` or
/// `{"Provisioned": {...}}`).
fn change_name(envelope: &Envelope) -> String {
    let change = match &envelope.payload {
        Payload::Connection(e) => serde_json::to_value(&e.change),
        Payload::Request(e) => serde_json::to_value(&e.change),
        Payload::Policy(_) => return "PolicyChanged".to_owned(),
        Payload::RequestConfig(_) => return "AccessRequestConfigChanged".to_owned(),
    };
    match change {
        Ok(serde_json::Value::String(name)) => name,
        Ok(serde_json::Value::Object(map)) => map.keys().next().cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

impl StreamEventDto {
    /// The item of one stream event.
    pub fn from_event(e: &StreamEvent) -> Result<StreamEventDto, ApiError> {
        let envelope = &e.envelope;
        let (actor, client) = match &envelope.payload {
            Payload::Connection(event) => (&event.actor, event.client.as_ref()),
            Payload::Request(event) => (&event.actor, None),
            Payload::Policy(event) => (&event.actor, None),
            Payload::RequestConfig(event) => (&event.actor, None),
        };
        let line = jitflow::export::json_line(envelope);
        let event = serde_json::from_str(&line)
            .map_err(|err| ApiError::internal(format!("an export line is not JSON: {err}")))?;
        Ok(StreamEventDto {
            version: e.version,
            sequence: envelope.sequence,
            at: envelope.at().to_rfc3339(),
            actor: actor_text(actor),
            change: change_name(envelope),
            request_origin: client.and_then(|c| c.request_origin().map(str::to_owned)),
            meta_data: client.and_then(|c| c.meta_data().cloned()),
            event,
        })
    }
}

/// The paging parameters of the event endpoints, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "a parameter list for the OpenAPI document only")]
pub struct EventParams {
    /// Start after this position (a stream version, or a global sequence for the export).
    #[param(minimum = 0, default = 0)]
    after: Option<u64>,
    /// The page size: 1..=1000 for a stream (default 100), 1..=10000 events scanned for the
    /// export and the drift findings (default 1000).
    #[param(minimum = 1)]
    limit: Option<u64>,
}

/// `after` and `limit` of a request, `limit` within 1..=`max`: the query's only parameters.
pub(crate) fn paging(uri: &Uri, default: usize, max: usize) -> Result<(u64, usize), ApiError> {
    let params = Params::from_uri(uri)?;
    let p = params.only(&["after", "limit"])?;
    let after = match p.get("after") {
        None => 0,
        Some(text) => text.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "after must be a whole number from 0 to {}, not `{}`",
                u64::MAX,
                text.chars().take(64).collect::<String>()
            ))
        })?,
    };
    let limit = match p.get("limit") {
        None => default,
        Some(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit must be a whole number from 1 to {max}, not `{}`",
                    text.chars().take(64).collect::<String>()
                ))
            })?,
    };
    Ok((after, limit))
}

/// `response` with the next page's `after` in [`NEXT_AFTER`].
pub(crate) fn with_next_after(mut response: Response, next_after: u64) -> Response {
    response
        .headers_mut()
        .insert(NEXT_AFTER, HeaderValue::from(next_after));
    response
}

/// A page of one stream; 404 when the stream has no event at all in the caller's tenant.
async fn stream_page(
    state: &AppState,
    principal: Principal,
    stream: Stream,
    what: String,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let (after, limit) = paging(uri, DEFAULT_STREAM_PAGE, MAX_STREAM_PAGE)?;
    let engine = state.engine(&principal.caller.tenant)?;
    let tenant = principal.caller.tenant;
    let events = list::blocking(&engine, move |e| e.history(&tenant, stream, after, limit)).await?;
    if events.is_empty() && after == 0 {
        return Err(ApiError::not_found(format!("{what} has no events")));
    }
    let next_after = events.last().map_or(after, |e| e.version);
    let items = events
        .iter()
        .map(StreamEventDto::from_event)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(with_next_after(
        axum::Json(items).into_response(),
        next_after,
    ))
}

/// The events of one connection (jitflow extension).
#[utoipa::path(
    get,
    path = "/jitflow/v1/connections/{id}/events",
    tag = "jitflow extensions",
    operation_id = "listConnectionEvents",
    params(("id" = String, Path, description = "The connection id."), EventParams),
    responses(
        (status = 200, description = "The page of events, in order; the next `after` in `X-Next-After`.",
            body = Vec<StreamEventDto>, headers(("X-Next-After" = u64, description = "The `after` of the next page."))),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-activation-history:read"]))
)]
pub async fn connection_events(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
    uri: Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::HISTORY_READ)?;
    let id = connection_id("id", &id)?;
    let what = format!("connection {id}");
    stream_page(&state, principal, Stream::Connection(id), what, &uri).await
}

/// The events of one activation (jitflow extension).
#[utoipa::path(
    get,
    path = "/jitflow/v1/activations/{id}/events",
    tag = "jitflow extensions",
    operation_id = "listActivationEvents",
    params(("id" = String, Path, description = "The activation id."), EventParams),
    responses(
        (status = 200, description = "The page of events, in order; the next `after` in `X-Next-After`.",
            body = Vec<StreamEventDto>, headers(("X-Next-After" = u64, description = "The `after` of the next page."))),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-activation-history:read"]))
)]
pub async fn activation_events(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
    uri: Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::HISTORY_READ)?;
    let id = ActivationId::parse(&id).map_err(|e| ApiError::bad_request(format!("id: {e}")))?;
    let what = format!("activation {id}");
    stream_page(&state, principal, Stream::Activation(id), what, &uri).await
}

/// The tenant's audit export as JSON lines (jitflow extension).
#[utoipa::path(
    get,
    path = "/jitflow/v1/events",
    tag = "jitflow extensions",
    operation_id = "exportEvents",
    params(EventParams),
    responses(
        (status = 200, description = "One JSON line per event of the tenant among those scanned; continue from `X-Next-After` until it equals `after`.",
            body = String, content_type = "application/x-ndjson",
            headers(("X-Next-After" = u64, description = "The last global sequence scanned."))),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-activation-history:read"]))
)]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    uri: Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::HISTORY_READ)?;
    let (after, limit) = paging(&uri, DEFAULT_EXPORT_PAGE, jitflow::MAX_PAGE)?;
    let engine = state.engine(&principal.caller.tenant)?;
    let tenant = principal.caller.tenant;
    let page = list::blocking(&engine, move |e| e.export(Some(&tenant), after, limit)).await?;
    let mut body = String::new();
    for event in &page.events {
        body.push_str(&jitflow::export::json_line(event));
        body.push('\n');
    }
    let response = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    Ok(with_next_after(response, page.next_after))
}
