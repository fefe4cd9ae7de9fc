//! `GET /jit-activation-history/v1` and its `/current-identity` variant: one
//! `JitActivationHistoryDocument` per activation, with the collection parameters.
//!
//! The document's `status` is the history vocabulary (`ActivationStatus::history_str`: CREATING
//! is AWAITING_FRICTIONS, ACTIVATING is PROVISIONING, COMPLETED is COMPLETE, INVALID is
//! CANCELLED). jitflow evaluates no frictions and has one policy per tenant without a display
//! name, so `policyDisplayNames` is empty and the friction fields are `null`.
//!
//! `activationDetails` (the contract's free-form object) is what the client sent with the
//! activate: `{"requestOrigin": ..., "metaData": {...}}` (each only when sent; `null` when
//! neither was), read from the activation's first event, one read per record of the page.

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use jitflow::query::{HISTORY, HISTORY_OF_IDENTITY, Page};
use jitflow::{Engine, Payload, Stream};
use jitflow_core::client::ClientInfo;
use jitflow_core::history::ActivationRecord;
use jitflow_core::id::TenantId;
use jitflow_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{self, Principal};
use crate::error::{ApiError, Errors};
use crate::list;

/// The contract's `JitActivationHistoryDocument`. Every nullable field is sent, as `null` when
/// unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryDocumentDto {
    /// The activation's id.
    pub id: String,
    /// The tenant (the token's).
    pub tenant_id: String,
    /// The identity the connection belongs to.
    pub identity_id: String,
    /// The account the entitlement was provisioned on.
    pub account_id: String,
    /// The entitlement.
    pub entitlement_id: String,
    /// The source.
    pub source_id: String,
    /// The connection the activation ran on.
    pub connection_id: String,
    /// The identity's display name.
    pub identity_name: String,
    /// The entitlement's display name.
    pub entitlement_name: String,
    /// The source's display name.
    pub source_display_name: String,
    /// Always empty: jitflow's policy has no display name.
    pub policy_display_names: Vec<String>,
    /// `AWAITING_FRICTIONS`, `PROVISIONING`, `PROVISIONED`, `DEPROVISIONING`, `COMPLETE`,
    /// `CANCELLED`, `ERROR` or `REVOKED`.
    pub status: String,
    /// The last error, once the activation ended `ERROR` or `CANCELLED`.
    pub error: Option<String>,
    /// Always `null` (no frictions).
    pub policy_friction_outcome: Option<String>,
    /// Always `null` (no frictions).
    pub policy_match_details: Option<Vec<String>>,
    /// When the activation was requested.
    #[schema(format = DateTime)]
    pub activation_initiated: Option<String>,
    /// When validation passed and provisioning began.
    #[schema(format = DateTime)]
    pub provision_start: Option<String>,
    /// When the grant succeeded.
    #[schema(format = DateTime)]
    pub provision_completed: Option<String>,
    /// When removal began.
    #[schema(format = DateTime)]
    pub deprovision_start: Option<String>,
    /// When the activation ended after a removal.
    #[schema(format = DateTime)]
    pub deprovision_complete: Option<String>,
    /// `provisionCompleted - provisionStart`, in minutes.
    pub provision_duration_mins: Option<f64>,
    /// `deprovisionComplete - deprovisionStart`, in minutes.
    pub deprovision_duration_mins: Option<f64>,
    /// Always `null` (no frictions).
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
    /// Always `null` (no frictions).
    #[schema(value_type = Option<Vec<Object>>)]
    pub frictions: Option<serde_json::Value>,
    /// What the client sent with the activate (`requestOrigin`, `metaData`); `null` when it
    /// sent neither.
    #[schema(value_type = Option<Object>)]
    pub activation_details: Option<serde_json::Value>,
    /// Always `null`.
    #[schema(value_type = Option<Object>)]
    pub activation_duration: Option<serde_json::Value>,
    /// Always `null`.
    #[schema(value_type = Option<Object>)]
    pub provisioning_details: Option<serde_json::Value>,
}

/// Minutes from `start` to `end`, when both happened.
fn minutes(start: Option<Timestamp>, end: Option<Timestamp>) -> Option<f64> {
    let (start, end) = (start?, end?);
    Some(end.since(start).as_secs_f64() / 60.0)
}

impl HistoryDocumentDto {
    /// The document of a record of `tenant`, with what the client sent with its activate.
    pub fn from_record(
        tenant: &str,
        r: &ActivationRecord,
        client: Option<&ClientInfo>,
    ) -> HistoryDocumentDto {
        let a = &r.activation;
        let time = |t: Option<Timestamp>| t.map(Timestamp::to_rfc3339);
        HistoryDocumentDto {
            id: a.id.to_string(),
            tenant_id: tenant.to_owned(),
            identity_id: r.identity.to_string(),
            account_id: r.account.to_string(),
            entitlement_id: r.entitlement.to_string(),
            source_id: r.source.to_string(),
            connection_id: a.connection.to_string(),
            identity_name: r.identity_name.clone(),
            entitlement_name: r.entitlement_name.clone(),
            source_display_name: r.source_name.clone(),
            policy_display_names: Vec::new(),
            status: a.status.history_str().to_owned(),
            error: r.error().map(str::to_owned),
            policy_friction_outcome: None,
            policy_match_details: None,
            activation_initiated: Some(r.activation_initiated().to_rfc3339()),
            provision_start: time(r.provision_start()),
            provision_completed: time(r.provision_completed()),
            deprovision_start: time(r.deprovision_start()),
            deprovision_complete: time(r.deprovision_complete()),
            provision_duration_mins: minutes(r.provision_start(), r.provision_completed()),
            deprovision_duration_mins: minutes(r.deprovision_start(), r.deprovision_complete()),
            summary: None,
            frictions: None,
            activation_details: client
                .map(|c| serde_json::to_value(c).expect("client info always serialises to JSON")),
            activation_duration: None,
            provisioning_details: None,
        }
    }
}

/// The collection parameters of the history lists, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "a parameter list for the OpenAPI document only")]
pub struct HistoryParams {
    /// Page size (0..=250).
    #[param(minimum = 0, maximum = 250, default = 250)]
    limit: Option<i32>,
    /// Records to skip (0..=10000; page further with `searchAfter`).
    #[param(minimum = 0, maximum = 10000, default = 0)]
    offset: Option<i32>,
    /// `true` sends the number of matching records in `X-Total-Count`.
    #[param(default = false)]
    count: Option<bool>,
    /// Comma-separated sort fields among `activationInitiated`, `provisionCompleted`, `status`
    /// and `id`, `-` for descending; default `-activationInitiated`.
    sorters: Option<String>,
    /// The sort values of the previous page's last record, one per sorter, comma separated,
    /// e.g. `2026-07-08T14:33:52.029Z,367fb802-1026-1835-a619-11a56e4c5be3` with
    /// `sorters=activationInitiated,id`.
    #[param(rename = "searchAfter")]
    search_after: Option<String>,
    /// A filter on `identityId` (admin view only), `entitlementId`, `sourceId`, `connectionId`,
    /// `status`, `activationInitiated` and `policyFrictionOutcome`.
    filters: Option<String>,
}

/// A page of records, each with what the client sent with its activate.
type Records = (Page<ActivationRecord>, Vec<Option<ClientInfo>>);

/// What the client sent with the activate of each record: the client info of the activation's
/// first event (its `ActivationRequested`).
fn with_clients(
    engine: &Engine,
    tenant: &TenantId,
    page: Page<ActivationRecord>,
) -> Result<Records, jitflow::Error> {
    let mut clients = Vec::with_capacity(page.items.len());
    for r in &page.items {
        let first = engine.history(tenant, Stream::Activation(r.activation.id), 0, 1)?;
        clients.push(first.into_iter().find_map(|e| match e.envelope.payload {
            Payload::Connection(event) => event.client,
            _ => None,
        }));
    }
    Ok((page, clients))
}

fn documents(tenant: &str, (page, clients): Records) -> Response {
    let items: Vec<HistoryDocumentDto> = page
        .items
        .iter()
        .zip(&clients)
        .map(|(r, client)| HistoryDocumentDto::from_record(tenant, r, client.as_ref()))
        .collect();
    list::answer(items, page.total)
}

/// Lists the tenant's activation history (newest first by default).
#[utoipa::path(
    get,
    path = "/jit-activation-history/v1",
    tag = "JIT Activations",
    operation_id = "listJitActivationHistoryV1",
    params(HistoryParams),
    responses(
        (status = 200, description = "The page of activation records; `X-Total-Count` when `count=true`.",
            body = Vec<HistoryDocumentDto>, headers(("X-Total-Count" = i32, description = "The number of matching records."))),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-activation-history:read"]))
)]
pub async fn search(
    State(state): State<AppState>,
    principal: Principal,
    uri: Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::HISTORY_READ)?;
    let query = list::query(&uri, HISTORY)?;
    let engine = state.engine(&principal.caller.tenant)?;
    let caller = principal.caller.clone();
    let page = list::blocking(&engine, move |e| {
        with_clients(e, &caller.tenant, e.activation_history(&caller, &query)?)
    })
    .await?;
    Ok(documents(principal.caller.tenant.as_str(), page))
}

/// Lists the caller's own activation history.
#[utoipa::path(
    get,
    path = "/jit-activation-history/v1/current-identity",
    tag = "JIT Activations",
    operation_id = "listJitActivationHistoryForCurrentIdentityV1",
    params(HistoryParams),
    responses(
        (status = 200, description = "The page of the caller's activation records; `X-Total-Count` when `count=true`.",
            body = Vec<HistoryDocumentDto>, headers(("X-Total-Count" = i32, description = "The number of matching records."))),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-activation-history-self:read"]))
)]
pub async fn search_current_identity(
    State(state): State<AppState>,
    principal: Principal,
    uri: Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::HISTORY_READ_SELF)?;
    let query = list::query(&uri, HISTORY_OF_IDENTITY)?;
    let engine = state.engine(&principal.caller.tenant)?;
    let (caller, identity) = (principal.caller.clone(), principal.identity.clone());
    let page = list::blocking(&engine, move |e| {
        let page = e.activation_history_of_identity(&caller, &identity, &query)?;
        with_clients(e, &caller.tenant, page)
    })
    .await?;
    Ok(documents(principal.caller.tenant.as_str(), page))
}
