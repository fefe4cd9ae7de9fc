//! `POST /jit-activations/v1/{activate,extend,deactivate}`: the activation signals.
//!
//! Each answers 202 once the signal is durable, with the activation as committed. A caller may
//! signal only its own connections unless it holds `idn:jit-activation-workflow:manage`; another
//! identity's connection is answered 404, as if it did not exist, so that ids cannot be probed.
//! An optional `Idempotency-Key` header (1..=256 bytes) makes a retry return the first answer.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jitflow_core::activation::Activation;
use jitflow_core::client::ClientInfo;
use jitflow_core::connection::Connection;
use jitflow_core::id::ConnectionId;
use jitflow_core::time::{Minutes, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{self, MANAGE_ACTIVATIONS, Principal};
use crate::body::JsonBody;
use crate::error::{ApiError, Errors};

/// The header that makes a signal idempotent (not in the vendor contract).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Body of `POST .../activate`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActivateRequest {
    /// The entitlement connection to activate.
    #[schema(format = "uuid")]
    pub connection_id: String,
    /// The activation period, in minutes (1 and up, within the policy's maximum).
    #[schema(minimum = 1, format = Int32)]
    pub activation_period_mins: i64,
    /// Where the request came from (newer SDKs' optional field): checked, then recorded in
    /// the activation's history (the signal's event).
    #[serde(default)]
    pub request_origin: Option<String>,
    /// Free-form details (newer SDKs' optional field): checked, then recorded in the
    /// activation's history (the signal's event).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub meta_data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Body of `POST .../extend`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtendRequest {
    /// The entitlement connection whose activation to extend.
    #[schema(format = "uuid")]
    pub connection_id: String,
    /// Minutes to add (1 and up, within the policy's extension cap).
    #[schema(minimum = 1, format = Int32)]
    pub activation_period_extension_mins: i64,
    /// Where the request came from (newer SDKs' optional field): checked, then recorded in
    /// the activation's history (the signal's event).
    #[serde(default)]
    pub request_origin: Option<String>,
    /// Free-form details (newer SDKs' optional field): checked, then recorded in the
    /// activation's history (the signal's event).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub meta_data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Body of `POST .../deactivate`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeactivateRequest {
    /// The entitlement connection whose activation to end.
    #[schema(format = "uuid")]
    pub connection_id: String,
    /// Where the request came from (newer SDKs' optional field): checked, then recorded in
    /// the activation's history (the signal's event).
    #[serde(default)]
    pub request_origin: Option<String>,
    /// Free-form details (newer SDKs' optional field): checked, then recorded in the
    /// activation's history (the signal's event).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub meta_data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Answer of `POST .../activate` (`JitActivationActivateResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivateResponse {
    /// `jit-activation-<activationId>`.
    pub id: String,
    /// The activation's id.
    #[schema(format = "uuid")]
    pub activation_id: String,
    /// The connection.
    #[schema(format = "uuid")]
    pub connection_id: String,
    /// The period granted, in minutes.
    pub activation_period_mins: u32,
    /// The workflow status (`CREATING` ... `REVOKED`).
    #[schema(value_type = WorkflowStatus)]
    pub status: String,
    /// When the activation was requested.
    #[schema(format = DateTime)]
    pub start_time: String,
}

/// Answer of `POST .../extend` (`JitActivationExtendResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtendResponse {
    /// `jit-activation-<activationId>`.
    pub id: String,
    /// The activation's id.
    #[schema(format = "uuid")]
    pub activation_id: String,
    /// The connection.
    #[schema(format = "uuid")]
    pub connection_id: String,
    /// The extension applied, in minutes.
    pub activation_period_extension_mins: u32,
    /// The workflow status.
    #[schema(value_type = WorkflowStatus)]
    pub status: String,
    /// When the extension was committed.
    #[schema(format = DateTime)]
    pub start_time: String,
}

/// Answer of `POST .../deactivate` (`JitActivationDeactivateResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeactivateResponse {
    /// `jit-activation-<activationId>`.
    pub id: String,
    /// The activation's id.
    #[schema(format = "uuid")]
    pub activation_id: String,
    /// The connection.
    #[schema(format = "uuid")]
    pub connection_id: String,
    /// The workflow status (`DEPROVISIONING` while the revoke runs, `REVOKED` when nothing was
    /// granted yet).
    #[schema(value_type = WorkflowStatus)]
    pub status: String,
    /// When the deactivation was committed.
    #[schema(format = DateTime)]
    pub start_time: String,
}

/// The headers the signals read, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "a parameter list for the OpenAPI document only")]
pub struct SignalHeaders {
    /// The vendor's experimental-API switch: accepted, not required.
    #[param(rename = "X-SailPoint-Experimental")]
    experimental: Option<String>,
    /// jitflow extension: a retry with the same key (1..=256 bytes) returns the first answer.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}

/// The contract's `ActivationWorkflowStatus`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "a schema for the OpenAPI document only")]
pub enum WorkflowStatus {
    /// Validation runs.
    #[schema(rename = "CREATING")]
    Creating,
    /// The grant is being provisioned.
    #[schema(rename = "ACTIVATING")]
    Activating,
    /// Validation refused it.
    #[schema(rename = "INVALID")]
    Invalid,
    /// Provisioning gave up.
    #[schema(rename = "ERROR")]
    Error,
    /// Access granted.
    #[schema(rename = "PROVISIONED")]
    Provisioned,
    /// Access is being revoked.
    #[schema(rename = "DEPROVISIONING")]
    Deprovisioning,
    /// Ended by expiry.
    #[schema(rename = "COMPLETED")]
    Completed,
    /// Ended by deactivation.
    #[schema(rename = "REVOKED")]
    Revoked,
}

/// The optional `requestOrigin` and `metaData` newer clients send with a signal, within the
/// core's bounds (`jitflow_core::client::MAX_*`; 400 naming the field otherwise).
fn client_info(
    origin: Option<String>,
    meta: Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<Option<ClientInfo>, ApiError> {
    ClientInfo::new(origin, meta).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// What a signal's log line says of its client info.
fn summary(client: Option<&ClientInfo>) -> String {
    client.map_or_else(String::new, ClientInfo::summary)
}

/// The contract's workflow id for an activation.
fn workflow_id(activation: &Activation) -> String {
    format!("jit-activation-{}", activation.id)
}

/// A period field: an integer 1..=i32::MAX (the contract's `int32`, `minimum: 1`).
fn minutes(field: &str, value: i64) -> Result<Minutes, ApiError> {
    match u32::try_from(value) {
        Ok(v) if v >= 1 && i32::try_from(v).is_ok() => Ok(Minutes(v)),
        _ => Err(ApiError::bad_request(format!(
            "{field} must be an integer from 1 to {}, not {value}",
            i32::MAX
        ))),
    }
}

/// Parses a connection id field.
pub fn connection_id(field: &str, text: &str) -> Result<ConnectionId, ApiError> {
    ConnectionId::parse(text).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
}

/// The optional idempotency key header.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|k| (1..=jitflow::MAX_IDEMPOTENCY_KEY).contains(&k.len()))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Idempotency-Key must be 1..={} characters of visible ASCII, spaces and tabs",
                        jitflow::MAX_IDEMPOTENCY_KEY
                    ))
                })
        })
        .transpose()
}

/// The connection id of a signal and its idempotency key, once the connection is known to be one
/// the caller may signal: its own, or any of its tenant's with the manage scope. Anything else is
/// 404.
fn target<'h>(
    state: &AppState,
    principal: &Principal,
    headers: &'h HeaderMap,
    connection: &str,
) -> Result<(ConnectionId, Option<&'h str>), ApiError> {
    let id = connection_id("connectionId", connection)?;
    let key = idempotency_key(headers)?;
    signalable(state, principal, id)?;
    Ok((id, key))
}

fn signalable(
    state: &AppState,
    principal: &Principal,
    id: ConnectionId,
) -> Result<Connection, ApiError> {
    let not_found = || ApiError::not_found(format!("connection {id} not found"));
    let connection = state
        .engine(&principal.caller.tenant)?
        .connection(&principal.caller.tenant, id)?
        .ok_or_else(not_found)?;
    if connection.spec.identity != principal.identity && !principal.has_scope(MANAGE_ACTIVATIONS) {
        return Err(not_found());
    }
    Ok(connection)
}

fn accepted<T: Serialize>(body: T) -> Response {
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// Starts an activation.
#[utoipa::path(
    post,
    path = "/jit-activations/v1/activate",
    tag = "JIT Activations",
    operation_id = "startActivateWorkflowV1",
    request_body = ActivateRequest,
    params(SignalHeaders),
    responses(
        (status = 202, description = "Accepted: the activation is durable and running.", body = ActivateResponse),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-activation-workflow:activate", "idn:jit-activation-workflow:manage"]))
)]
pub async fn activate(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::ACTIVATE)?;
    let body: ActivateRequest = body.parse()?;
    let period = minutes("activationPeriodMins", body.activation_period_mins)?;
    let client = client_info(body.request_origin, body.meta_data)?;
    let (id, key) = target(&state, &principal, &headers, &body.connection_id)?;
    let context = summary(client.as_ref());
    let activation = state
        .engine(&principal.caller.tenant)?
        .activate(&principal.caller, id, Some(period), key, client)
        .await?;
    tracing::info!(activation = %activation.id, connection = %id, %context, "activate");
    Ok(accepted(ActivateResponse {
        id: workflow_id(&activation),
        activation_id: activation.id.to_string(),
        connection_id: id.to_string(),
        activation_period_mins: activation.period.get(),
        status: activation.status.as_str().to_owned(),
        start_time: activation.requested_at.to_rfc3339(),
    }))
}

/// Extends the running activation.
#[utoipa::path(
    post,
    path = "/jit-activations/v1/extend",
    tag = "JIT Activations",
    operation_id = "startExtendWorkflowV1",
    request_body = ExtendRequest,
    params(SignalHeaders),
    responses(
        (status = 202, description = "Accepted: the extension is durable.", body = ExtendResponse),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-activation-workflow:extend", "idn:jit-activation-workflow:manage"]))
)]
pub async fn extend(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::EXTEND)?;
    let body: ExtendRequest = body.parse()?;
    let by = minutes(
        "activationPeriodExtensionMins",
        body.activation_period_extension_mins,
    )?;
    let client = client_info(body.request_origin, body.meta_data)?;
    let (id, key) = target(&state, &principal, &headers, &body.connection_id)?;
    let context = summary(client.as_ref());
    let activation = state
        .engine(&principal.caller.tenant)?
        .extend(&principal.caller, id, Some(by), key, client)
        .await?;
    tracing::info!(activation = %activation.id, connection = %id, %context, "extend");
    Ok(accepted(ExtendResponse {
        id: workflow_id(&activation),
        activation_id: activation.id.to_string(),
        connection_id: id.to_string(),
        activation_period_extension_mins: by.get(),
        status: activation.status.as_str().to_owned(),
        start_time: now(&state, &principal)?.to_rfc3339(),
    }))
}

/// Ends the running activation early.
#[utoipa::path(
    post,
    path = "/jit-activations/v1/deactivate",
    tag = "JIT Activations",
    operation_id = "startDeactivateWorkflowV1",
    request_body = DeactivateRequest,
    params(SignalHeaders),
    responses(
        (status = 202, description = "Accepted: the deactivation is durable; the revoke runs.", body = DeactivateResponse),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-activation-workflow:deactivate", "idn:jit-activation-workflow:manage"]))
)]
pub async fn deactivate(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::DEACTIVATE)?;
    let body: DeactivateRequest = body.parse()?;
    let client = client_info(body.request_origin, body.meta_data)?;
    let (id, key) = target(&state, &principal, &headers, &body.connection_id)?;
    let context = summary(client.as_ref());
    let activation = state
        .engine(&principal.caller.tenant)?
        .deactivate(&principal.caller, id, key, client)
        .await?;
    tracing::info!(activation = %activation.id, connection = %id, %context, "deactivate");
    Ok(accepted(DeactivateResponse {
        id: workflow_id(&activation),
        activation_id: activation.id.to_string(),
        connection_id: id.to_string(),
        status: activation.status.as_str().to_owned(),
        start_time: now(&state, &principal)?.to_rfc3339(),
    }))
}

fn now(state: &AppState, principal: &Principal) -> Result<Timestamp, ApiError> {
    Ok(state.engine(&principal.caller.tenant)?.now())
}
