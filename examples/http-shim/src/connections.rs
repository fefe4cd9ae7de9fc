//! The shim's extension endpoints (not part of the vendor contract) that register, show and
//! remove entitlement connections: `POST /jitflow/v1/connections` and
//! `DELETE /jitflow/v1/connections/{id}` need `idn:entitlement-connections:manage` and
//! `ORG_ADMIN`; `GET /jitflow/v1/connections/{id}` (one connection with its latest activation,
//! its armed timers and its pending effects, for operators' tools) needs
//! `idn:entitlement-connections:list` and `ORG_ADMIN`, like the connection list.
//!
//! The import answers 200 with one result per item, in order: 200 registered, 400 invalid, 409
//! the id exists (and, rarely, 429 or 500 for an item the engine could not take). The items
//! are sent to the engine together, so they share group commits.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jitflow_core::activation::{Activation, EndReason};
use jitflow_core::connection::{ConnectionSpec, ConnectionType};
use jitflow_core::id::{AccountId, ConnectionId, EntitlementId, IdentityId, SourceId};
use jitflow_core::lifecycle::{Effect, TimerKind};
use jitflow_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::activations::connection_id;
use crate::auth::{self, Principal};
use crate::body::{JsonBody, Segment};
use crate::entitlement_connections::{SearchHitDto, actor_text};
use crate::error::{ApiError, ErrorResponseDto, Errors};

/// The most connections one import may hold.
pub const MAX_IMPORT: usize = jitflow::bulk::MAX_IMPORT;
/// The largest import body, in bytes (1000 connections of the largest allowed fields fit).
pub const MAX_IMPORT_BYTES: usize = 8 * 1024 * 1024;

/// One connection to register (camelCase JSON).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionSpecDto {
    /// A UUID with or without hyphens; generated when absent.
    #[schema(format = "uuid")]
    pub id: Option<String>,
    /// The identity eligible for the entitlement.
    pub identity_id: String,
    /// Its display name.
    pub identity_name: String,
    /// The account the entitlement is granted to.
    pub account_id: String,
    /// Its display name.
    pub account_name: String,
    /// The entitlement.
    pub entitlement_id: String,
    /// Its display name.
    pub entitlement_name: String,
    /// The entitlement's attribute name (e.g. `memberOf`).
    pub attribute_name: String,
    /// The entitlement's attribute value.
    pub attribute_value: String,
    /// The privilege level, if any.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub privilege_level: Option<String>,
    /// The source.
    pub source_id: String,
    /// Its display name.
    pub source_name: String,
    /// `JIT`, `STANDING` or `NA`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether the connection stands alone.
    pub standalone: bool,
}

/// Body of the import.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// 1..=1000 connections; each item is checked on its own.
    #[schema(value_type = Vec<ConnectionSpecDto>)]
    pub connections: Vec<serde_json::Value>,
}

/// The outcome of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportResult {
    /// The connection's id (as sent, or generated; empty if the item had none that parses).
    pub id: String,
    /// 200 registered, 400 invalid, 409 the id exists.
    pub status: u16,
    /// Why the item was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorResponseDto>,
}

/// Answer of the import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportResponse {
    /// One result per item, in order.
    pub results: Vec<ImportResult>,
}

impl ConnectionSpecDto {
    /// The core's spec, or 400 naming the field.
    pub fn into_spec(self) -> Result<ConnectionSpec, ApiError> {
        let bad =
            |field: &str, e: &dyn std::fmt::Display| ApiError::bad_request(format!("{field}: {e}"));
        let id = match &self.id {
            Some(text) => connection_id("id", text)?,
            None => ConnectionId::from_u128(uuid::Uuid::new_v4().as_u128()),
        };
        let spec = ConnectionSpec {
            id,
            identity: IdentityId::parse(&self.identity_id).map_err(|e| bad("identityId", &e))?,
            identity_name: self.identity_name,
            account: AccountId::parse(&self.account_id).map_err(|e| bad("accountId", &e))?,
            account_name: self.account_name,
            entitlement: EntitlementId::parse(&self.entitlement_id)
                .map_err(|e| bad("entitlementId", &e))?,
            entitlement_name: self.entitlement_name,
            attribute_name: self.attribute_name,
            attribute_value: self.attribute_value,
            privilege_level: self.privilege_level,
            source: SourceId::parse(&self.source_id).map_err(|e| bad("sourceId", &e))?,
            source_name: self.source_name,
            kind: ConnectionType::parse(&self.kind)
                .ok_or_else(|| ApiError::bad_request("type: must be one of JIT, STANDING, NA"))?,
            standalone: self.standalone,
        };
        spec.validate()
            .map_err(|(field, reason)| bad(field, &reason))?;
        Ok(spec)
    }
}

fn refused(id: String, e: ApiError) -> ImportResult {
    ImportResult {
        id,
        status: e.status.as_u16(),
        error: Some(e.dto()),
    }
}

/// Registers connections.
#[utoipa::path(
    post,
    path = "/jitflow/v1/connections",
    tag = "jitflow extensions",
    operation_id = "importConnections",
    request_body = ImportRequest,
    responses(
        (status = 200, description = "One result per item, in order.", body = ImportResponse),
        Errors,
    ),
    security(("userAuth" = ["idn:entitlement-connections:manage"]))
)]
pub async fn import(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::CONNECTIONS_MANAGE)?;
    let request: ImportRequest = body.parse()?;
    let n = request.connections.len();
    if !(1..=MAX_IMPORT).contains(&n) {
        return Err(ApiError::bad_request(format!(
            "connections holds {n} items; send 1..={MAX_IMPORT}"
        )));
    }
    let mut results: Vec<Option<ImportResult>> = vec![None; n];
    let mut valid = Vec::with_capacity(n);
    let mut specs = Vec::with_capacity(n);
    for (index, item) in request.connections.into_iter().enumerate() {
        let sent_id = item
            .get("id")
            .and_then(|v| v.as_str())
            .map(|s| s.chars().take(64).collect())
            .unwrap_or_default();
        let spec = crate::body::object::<ConnectionSpecDto>(item)
            .map_err(|e| ApiError::bad_request(format!("connections[{index}]: {}", e.text)))
            .and_then(ConnectionSpecDto::into_spec);
        match spec {
            Err(e) => results[index] = Some(refused(sent_id, e)),
            Ok(spec) => {
                valid.push((index, spec.id.to_string()));
                specs.push(spec);
            }
        }
    }
    // The engine queues the items in request order (so the first of two items for the same
    // assignment is the one registered) and they share group commits.
    if !specs.is_empty() {
        let outcomes = state
            .engine(&principal.caller.tenant)?
            .import(&principal.caller, specs)
            .await?;
        for ((index, id), outcome) in valid.into_iter().zip(outcomes) {
            results[index] = Some(match outcome {
                Ok(_) => ImportResult {
                    id,
                    status: 200,
                    error: None,
                },
                Err(e) => refused(id, ApiError::from(e)),
            });
        }
    }
    let results = results.into_iter().flatten().collect();
    Ok(axum::Json(ImportResponse { results }).into_response())
}

/// Removes a connection (refused with 409 while access is moving or held by JIT).
#[utoipa::path(
    delete,
    path = "/jitflow/v1/connections/{id}",
    tag = "jitflow extensions",
    operation_id = "removeConnection",
    params(("id" = String, Path, description = "The connection id.")),
    responses(
        (status = 204, description = "Removed."),
        Errors,
    ),
    security(("userAuth" = ["idn:entitlement-connections:manage"]))
)]
pub async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    principal.require(auth::CONNECTIONS_MANAGE)?;
    let id = connection_id("id", &id)?;
    state
        .engine(&principal.caller.tenant)?
        .remove(&principal.caller, id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One connection as operators see it (jitflow extension): the contract's search hit, its
/// latest activation, and what the engine still has to do for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionDetailDto {
    /// The connection, as the connection list shows it.
    pub connection: SearchHitDto,
    /// Its latest activation, running or ended; `null` if it was never activated.
    pub activation: Option<ActivationDto>,
    /// Whether `activation` is still running (not COMPLETED, REVOKED, INVALID or ERROR).
    pub running: bool,
    /// Its armed timers, in due order.
    pub timers: Vec<TimerDto>,
    /// Its effects committed and not yet settled (running, or waiting for a retry).
    pub pending_effects: Vec<EffectDto>,
    /// Whether a revoke (of the activation or of standing access) reached the stuck bound.
    pub stuck: bool,
}

/// An activation workflow instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivationDto {
    /// Its id.
    pub id: String,
    /// The workflow status (`CREATING`, `ACTIVATING`, `PROVISIONED`, `DEPROVISIONING`,
    /// `COMPLETED`, `REVOKED`, `INVALID`, `ERROR`).
    pub status: String,
    /// The period granted, in minutes.
    pub period_mins: u32,
    /// Who asked for it: an identity id, or `system`.
    pub requested_by: String,
    /// When it was requested.
    pub requested_at: String,
    /// When the grant succeeded.
    pub provisioned_at: Option<String>,
    /// When access expires (moved by extensions).
    pub expires_at: Option<String>,
    /// When the expiring-soon warning is due, until it is sent.
    pub warn_at: Option<String>,
    /// When removal began.
    pub deprovision_started_at: Option<String>,
    /// When the workflow ended.
    pub ended_at: Option<String>,
    /// Extensions granted, and the minutes they added.
    pub extensions: u32,
    /// Minutes added by extensions.
    pub extended_by_mins: u32,
    /// The try of the current grant or revoke, from 1.
    pub attempt: u32,
    /// When the next try is due, while waiting after a failure.
    pub retry_at: Option<String>,
    /// Why access is being or was removed: `EXPIRED`, `DEACTIVATED`, `PROVISION_FAILED`.
    pub end_reason: Option<String>,
    /// The last error (a refusal, or a grant or revoke failure).
    pub last_error: Option<String>,
    /// Revoke tries reached the stuck bound; an alert was raised.
    pub stuck: bool,
}

/// An armed timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimerDto {
    /// `EXPIRY`, `WARNING`, `RETRY` (a grant or revoke try) or `STANDING_RETRY`.
    pub kind: String,
    /// When it is due; it never fires earlier.
    pub due: String,
}

/// An effect committed and not yet settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectDto {
    /// `VALIDATE`, `GRANT`, `REVOKE` or `REVOKE_STANDING`.
    pub kind: String,
    /// The try, from 1 (0 for a validation).
    pub attempt: u32,
    /// The key the target sees on this call and its repeats.
    pub idempotency_key: String,
}

fn time(t: Option<Timestamp>) -> Option<String> {
    t.map(Timestamp::to_rfc3339)
}

impl ActivationDto {
    fn from_activation(a: &Activation) -> ActivationDto {
        ActivationDto {
            id: a.id.to_string(),
            status: a.status.as_str().to_owned(),
            period_mins: a.period.0,
            requested_by: actor_text(&a.requested_by),
            requested_at: a.requested_at.to_rfc3339(),
            provisioned_at: time(a.provisioned_at),
            expires_at: time(a.expires_at),
            warn_at: time(a.warn_at),
            deprovision_started_at: time(a.deprovision_started_at),
            ended_at: time(a.ended_at),
            extensions: a.extensions,
            extended_by_mins: a.extended_by.0,
            attempt: a.attempt,
            retry_at: time(a.retry_at),
            end_reason: a.end_reason.map(|r| {
                match r {
                    EndReason::Expired => "EXPIRED",
                    EndReason::Deactivated => "DEACTIVATED",
                    EndReason::ProvisionFailed => "PROVISION_FAILED",
                }
                .to_owned()
            }),
            last_error: a.last_error.clone(),
            stuck: a.stuck,
        }
    }
}

impl ConnectionDetailDto {
    /// The detail of a connection.
    pub fn from_connection(c: &jitflow_core::connection::Connection) -> ConnectionDetailDto {
        let mut timers = c.timers();
        timers.sort();
        ConnectionDetailDto {
            connection: SearchHitDto::from_connection(c),
            activation: c.activation.as_ref().map(ActivationDto::from_activation),
            running: c.running_activation().is_some(),
            timers: timers
                .iter()
                .map(|t| TimerDto {
                    kind: match t.kind {
                        TimerKind::Expiry => "EXPIRY",
                        TimerKind::Warning => "WARNING",
                        TimerKind::Retry => "RETRY",
                        TimerKind::StandingRetry => "STANDING_RETRY",
                    }
                    .to_owned(),
                    due: t.due.to_rfc3339(),
                })
                .collect(),
            pending_effects: c
                .pending_effects()
                .iter()
                .map(|e| {
                    let (kind, attempt) = match *e {
                        Effect::Validate { .. } => ("VALIDATE", 0),
                        Effect::Grant { attempt, .. } => ("GRANT", attempt),
                        Effect::Revoke { attempt, .. } => ("REVOKE", attempt),
                        Effect::RevokeStanding { attempt } => ("REVOKE_STANDING", attempt),
                    };
                    EffectDto {
                        kind: kind.to_owned(),
                        attempt,
                        idempotency_key: e.idempotency_key(c.spec.id),
                    }
                })
                .collect(),
            stuck: c
                .activation
                .as_ref()
                .is_some_and(|a| a.stuck && !a.status.is_terminal())
                || c.standing_revoke.as_ref().is_some_and(|r| r.stuck),
        }
    }
}

/// One connection with its latest activation, armed timers and pending effects (jitflow
/// extension, for operators' tools).
#[utoipa::path(
    get,
    path = "/jitflow/v1/connections/{id}",
    tag = "jitflow extensions",
    operation_id = "showConnection",
    params(("id" = String, Path, description = "The connection id.")),
    responses(
        (status = 200, description = "The connection.", body = ConnectionDetailDto),
        Errors,
    ),
    security(("userAuth" = ["idn:entitlement-connections:list"]))
)]
pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    principal.require(auth::CONNECTIONS_LIST)?;
    let id = connection_id("id", &id)?;
    let engine = state.engine(&principal.caller.tenant)?;
    let tenant = principal.caller.tenant;
    let connection = crate::list::blocking(&engine, move |e| e.connection(&tenant, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("connection {id} does not exist")))?;
    Ok(axum::Json(ConnectionDetailDto::from_connection(&connection)).into_response())
}
