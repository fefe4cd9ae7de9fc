//! The shim's drift endpoints (jitflow extensions, issue 16): what inspections of the target
//! found, and an inspection of one connection on demand.
//!
//! - `GET /jitflow/v1/drift`: the tenant's drift findings (its `DriftFound` events) among the
//!   `limit` (1..=`jitflow::MAX_PAGE`, default [`DEFAULT_DRIFT_PAGE`]) events after global
//!   sequence `after` (default 0), in order, each with what jitflow did about it. The scan is
//!   bounded by `limit` whatever the tenant, like the audit export's: a page may be short or
//!   empty; continue from `X-Next-After` until it equals the `after` sent. Needs
//!   `idn:jit-activation-history:read` and ORG_ADMIN, like the event history.
//! - `POST /jitflow/v1/connections/{id}/reconcile`: asks the target about one connection now
//!   (`Engine::reconcile`, what the background pass does for each connection) and answers what
//!   it said and the drift committed, if any. It may revoke access no activation explains, or
//!   act on missing access as the policy says, so it needs `idn:entitlement-connections:manage`
//!   and ORG_ADMIN, like the other changes of a connection. No body, no query.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use jitflow::{DriftFinding, DriftResponse, Inspection};
use jitflow_core::lifecycle::Drift;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::activations::connection_id;
use crate::auth::{self, Principal};
use crate::body::Segment;
use crate::entitlement_connections::actor_text;
use crate::error::{ApiError, Errors};
use crate::events::{EventParams, paging, with_next_after};
use crate::list;

/// The events scanned for findings when `limit` is absent.
pub const DEFAULT_DRIFT_PAGE: usize = 1000;

/// How the target disagreed with jitflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DriftKindDto {
    /// The target holds access no running activation explains (a revoke that did not take, a
    /// grant made by hand).
    UnexpectedAccess,
    /// jitflow says the access is held (ACTIVE); the target does not hold it.
    MissingAccess,
}

impl From<Drift> for DriftKindDto {
    fn from(drift: Drift) -> DriftKindDto {
        match drift {
            Drift::UnexpectedAccess => DriftKindDto::UnexpectedAccess,
            Drift::MissingAccess => DriftKindDto::MissingAccess,
        }
    }
}

/// What jitflow did about a drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DriftResponseDto {
    /// The access was revoked (retried for ever, like a standing-access revoke).
    Revoke,
    /// Recorded and reported only (the policy's `jitflowOnMissingAccess` is `REPORT`).
    Report,
    /// The access was granted again (`GRANT_AGAIN`).
    GrantAgain,
    /// The activation was ended (`END_ACTIVATION`).
    EndActivation,
}

impl From<DriftResponse> for DriftResponseDto {
    fn from(response: DriftResponse) -> DriftResponseDto {
        match response {
            DriftResponse::Revoke => DriftResponseDto::Revoke,
            DriftResponse::Report => DriftResponseDto::Report,
            DriftResponse::GrantAgain => DriftResponseDto::GrantAgain,
            DriftResponse::EndActivation => DriftResponseDto::EndActivation,
        }
    }
}

/// One drift finding: a committed `DriftFound` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftFindingDto {
    /// The event's global sequence.
    pub sequence: u64,
    /// When it was found.
    #[schema(format = DateTime)]
    pub at: String,
    /// Who asked: `system` for the background pass, else the identity that asked.
    pub actor: String,
    /// The connection.
    #[schema(format = "uuid")]
    pub connection_id: String,
    /// The running activation, for missing access; else `null`.
    #[schema(format = "uuid")]
    pub activation_id: Option<String>,
    /// How the target disagreed.
    pub kind: DriftKindDto,
    /// What jitflow did about it.
    pub response: DriftResponseDto,
}

impl DriftFindingDto {
    fn from_finding(f: &DriftFinding) -> DriftFindingDto {
        DriftFindingDto {
            sequence: f.sequence,
            at: f.at.to_rfc3339(),
            actor: actor_text(&f.actor),
            connection_id: f.connection.to_string(),
            activation_id: f.activation.map(|a| a.to_string()),
            kind: f.drift.into(),
            response: f.response.into(),
        }
    }
}

/// What the target said about one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InspectionDto {
    /// It holds the access.
    Held,
    /// It does not.
    NotHeld,
    /// It cannot tell (or the provisioner cannot ask it).
    Unknown,
    /// The inspection failed or did not answer in time.
    Failed,
    /// Nothing was asked: the access is moving (ACTIVATING, DEACTIVATING) or not governed (NA).
    NotAsked,
}

impl From<Inspection> for InspectionDto {
    fn from(inspection: Inspection) -> InspectionDto {
        match inspection {
            Inspection::Held => InspectionDto::Held,
            Inspection::NotHeld => InspectionDto::NotHeld,
            Inspection::Unknown => InspectionDto::Unknown,
            Inspection::Failed => InspectionDto::Failed,
            Inspection::NotAsked => InspectionDto::NotAsked,
        }
    }
}

/// The answer of `POST /jitflow/v1/connections/{id}/reconcile`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconciledDto {
    /// The connection.
    #[schema(format = "uuid")]
    pub connection_id: String,
    /// What the target said.
    pub inspection: InspectionDto,
    /// The drift committed (a `DriftFound` event), or `null` when the target agrees, could not
    /// tell, or the connection changed while it was asked.
    pub drift: Option<DriftKindDto>,
}

/// The tenant's drift findings (jitflow extension).
#[utoipa::path(
    get,
    path = "/jitflow/v1/drift",
    tag = "jitflow extensions",
    operation_id = "listDriftFindings",
    params(EventParams),
    responses(
        (status = 200, description = "The tenant's findings among the events scanned, in order; continue from `X-Next-After` until it equals `after`.",
            body = Vec<DriftFindingDto>,
            headers(("X-Next-After" = u64, description = "The last global sequence scanned."))),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-activation-history:read"]))
)]
pub async fn findings(
    State(state): State<AppState>,
    principal: Principal,
    uri: Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::HISTORY_READ)?;
    let (after, limit) = paging(&uri, DEFAULT_DRIFT_PAGE, jitflow::MAX_PAGE)?;
    let engine = state.engine(&principal.caller.tenant)?;
    let tenant = principal.caller.tenant;
    let page = list::blocking(&engine, move |e| e.drift_findings(&tenant, after, limit)).await?;
    let items: Vec<DriftFindingDto> = page
        .findings
        .iter()
        .map(DriftFindingDto::from_finding)
        .collect();
    Ok(with_next_after(
        axum::Json(items).into_response(),
        page.next_after,
    ))
}

/// Inspects one connection on the target now, and acts on a drift (jitflow extension).
#[utoipa::path(
    post,
    path = "/jitflow/v1/connections/{id}/reconcile",
    tag = "jitflow extensions",
    operation_id = "reconcileConnection",
    params(("id" = String, Path, description = "The connection id.")),
    responses(
        (status = 200, description = "What the target said, and the drift committed if it disagreed.", body = ReconciledDto),
        Errors,
    ),
    security(("userAuth" = ["idn:entitlement-connections:manage"]))
)]
pub async fn reconcile(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    principal.require(auth::CONNECTIONS_MANAGE)?;
    if uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::bad_request(
            "this operation takes no query parameters",
        ));
    }
    if !body.is_empty() {
        return Err(ApiError::bad_request("this operation takes no body"));
    }
    let id = connection_id("id", &id)?;
    let reconciled = state
        .engine(&principal.caller.tenant)?
        .reconcile(&principal.caller, id)
        .await?;
    Ok(axum::Json(ReconciledDto {
        connection_id: id.to_string(),
        inspection: reconciled.inspection.into(),
        drift: reconciled.drift.map(DriftKindDto::from),
    })
    .into_response())
}
