//! The contract's entitlement-connections API: the list (`GET /entitlement-connections/v1` and
//! its `/current-identity` variant), the JSON Patch of one connection (by id, or by the
//! assignment's `entitlementId`, `identityId` and `accountId`), and the bulk type update
//! (`POST /entitlement-connections/v1`, answered 207 with one result per item).
//!
//! The list's items are the contract's `EntitlementConnectionSearchHit`; the patch answers the
//! `EntitlementConnection` entity. The current-identity list is constrained to the token's
//! identity by the engine, whatever the filter says.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jitflow::bulk::{ItemError, MAX_TYPE_UPDATES, TypeUpdate};
use jitflow::query::{CONNECTIONS, Page};
use jitflow_core::connection::Connection;
use jitflow_core::id::{AccountId, EntitlementId, IdentityId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::policy::PatchOp;
use jitflow_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::activations::connection_id;
use crate::auth::{self, Principal};
use crate::body::{JsonBody, Params, Segment};
use crate::error::{ApiError, Errors};
use crate::list;
use crate::policy::{OperationDto, patch_ops};

/// The largest bulk type update body, in bytes (100 items with room for whitespace).
pub const MAX_BULK_BYTES: usize = 64 * 1024;

/// The parameters of the patch by assignment.
const ASSIGNMENT_PARAMS: &[&str] = &["entitlementId", "identityId", "accountId"];

/// An id and a display name (the hit's `account` and `source`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NamedRef {
    /// The id.
    pub id: String,
    /// The display name.
    pub name: String,
}

/// The hit's `identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IdentityRef {
    /// The identity's id.
    pub id: String,
    /// Always `IDENTITY` (jitflow has no machine identities).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its display name.
    pub name: String,
}

/// The entitlement's privilege classification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrivilegeLevelDto {
    /// The effective privilege level; absent when none was registered (the contract's
    /// string is not nullable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective: Option<String>,
}

/// The contract's `EntitlementConnectionSearchHitEntitlement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HitEntitlementDto {
    /// The entitlement's id.
    pub id: String,
    /// Its name (the registered display name).
    pub name: String,
    /// Its display name.
    pub display_name: String,
    /// The source attribute carrying it (e.g. `memberOf`).
    pub attribute: String,
    /// The attribute's value.
    pub value: String,
    /// Its privilege classification.
    pub privilege_level: PrivilegeLevelDto,
}

/// The hit's `state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HitStateDto {
    /// `AVAILABLE`, `ACTIVATING`, `ACTIVE`, `DEACTIVATING` or `EXPIRED` (the spelling the
    /// filters and the `EntitlementConnection` use).
    pub value: String,
    /// When the state last changed.
    #[schema(format = DateTime)]
    pub changed: String,
}

/// The hit's `jit`: the latest activation's timestamps, `null` until they happen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HitJitDto {
    /// When it was requested.
    #[schema(format = DateTime)]
    pub activation: Option<String>,
    /// When its grant succeeded.
    #[schema(format = DateTime)]
    pub provisioned: Option<String>,
    /// When its removal began.
    #[schema(format = DateTime)]
    pub deactivation: Option<String>,
    /// When its revoke succeeded.
    #[schema(format = DateTime)]
    pub deprovisioned: Option<String>,
    /// When its access expires (or expired).
    #[schema(format = DateTime)]
    pub expiration: Option<String>,
}

/// The contract's `EntitlementConnectionSearchHit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SearchHitDto {
    /// The connection's id (the value to give `searchAfter` with `sorters=id`).
    pub id: String,
    /// The identity.
    pub identity: IdentityRef,
    /// The account.
    pub account: NamedRef,
    /// The entitlement.
    pub entitlement: HitEntitlementDto,
    /// The source.
    pub source: NamedRef,
    /// The lifecycle state.
    pub state: HitStateDto,
    /// The JIT timestamps.
    pub jit: HitJitDto,
    /// Whether the connection stands alone.
    pub standalone: bool,
    /// `JIT`, `STANDING` or `NA`.
    #[serde(rename = "type")]
    #[schema(value_type = ConnectionTypeDto)]
    pub kind: String,
}

/// The contract's connection type enum.
#[derive(ToSchema)]
#[allow(dead_code, reason = "a schema for the OpenAPI document only")]
pub enum ConnectionTypeDto {
    /// Access only while activated.
    #[schema(rename = "JIT")]
    Jit,
    /// Access held all the time.
    #[schema(rename = "STANDING")]
    Standing,
    /// Not applicable.
    #[schema(rename = "NA")]
    Na,
}

/// The contract's `EntitlementConnection` (the patch's answer). The JIT timestamps are `null`
/// until they happen; `machineIdentityId` and `deleteAfter` are never sent (jitflow has neither).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementConnectionDto {
    /// The tenant (the token's).
    pub tenant_id: String,
    /// The connection's id.
    pub connection_id: String,
    /// The identity.
    pub identity_id: String,
    /// The account.
    pub account_id: String,
    /// The entitlement.
    pub entitlement_id: String,
    /// The source.
    pub source_id: String,
    /// Whether the connection stands alone.
    pub standalone: bool,
    /// The entitlement's attribute name.
    pub attribute_name: String,
    /// The entitlement's attribute value.
    pub attribute_value: String,
    /// `JIT`, `STANDING` or `NA`.
    #[serde(rename = "type")]
    #[schema(value_type = ConnectionTypeDto)]
    pub kind: String,
    /// `AVAILABLE`, `ACTIVATING`, `ACTIVE`, `DEACTIVATING` or `EXPIRED`.
    pub state: String,
    /// When the state last changed.
    #[schema(format = DateTime)]
    pub state_changed: String,
    /// Who last changed the state: an identity id, or `system` (timers and effect results).
    pub state_changed_by: String,
    /// When the latest activation was requested.
    #[schema(format = DateTime)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jit_activation: Option<String>,
    /// When its grant succeeded.
    #[schema(format = DateTime)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jit_provision: Option<String>,
    /// When its removal began.
    #[schema(format = DateTime)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jit_deactivation: Option<String>,
    /// When its revoke succeeded.
    #[schema(format = DateTime)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jit_deprovision: Option<String>,
    /// When its access expires.
    #[schema(format = DateTime)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jit_expiration: Option<String>,
    /// When the connection was registered.
    #[schema(format = DateTime)]
    pub created: String,
    /// When anything about it last changed.
    #[schema(format = DateTime)]
    pub modified: String,
    /// The actor of the latest state change, as `stateChangedBy`.
    pub actor_name: String,
}

/// One item of the bulk type update (`EntitlementConnectionBulkUpdateItem`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkItemDto {
    /// The connection (a UUID with or without hyphens).
    pub connection_id: String,
    /// `JIT` or `STANDING`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// One result of the bulk type update (`EntitlementConnectionBulkUpdateResultItem`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkResultDto {
    /// The connection id as sent.
    pub connection_id: String,
    /// The type as sent.
    #[serde(rename = "type")]
    pub kind: String,
    /// 201 changed (or already of that type), 400 malformed id, 404 not found, 409 duplicate
    /// in the request or refused by the connection's state, 422 invalid type, 429 busy.
    #[schema(format = Int32)]
    pub status: u16,
    /// `success`, or why the item was refused.
    pub description: String,
}

fn time(t: Option<Timestamp>) -> Option<String> {
    t.map(Timestamp::to_rfc3339)
}

/// An actor as the contract's `stateChangedBy` text.
pub fn actor_text(actor: &Actor) -> String {
    match actor {
        Actor::Identity(id) => id.to_string(),
        Actor::System => "system".to_owned(),
    }
}

impl SearchHitDto {
    /// The search hit of a connection.
    pub fn from_connection(c: &Connection) -> SearchHitDto {
        let s = &c.spec;
        SearchHitDto {
            id: s.id.to_string(),
            identity: IdentityRef {
                id: s.identity.to_string(),
                kind: "IDENTITY".to_owned(),
                name: s.identity_name.clone(),
            },
            account: NamedRef {
                id: s.account.to_string(),
                name: s.account_name.clone(),
            },
            entitlement: HitEntitlementDto {
                id: s.entitlement.to_string(),
                name: s.entitlement_name.clone(),
                display_name: s.entitlement_name.clone(),
                attribute: s.attribute_name.clone(),
                value: s.attribute_value.clone(),
                privilege_level: PrivilegeLevelDto {
                    effective: s.privilege_level.clone().filter(|l| !l.is_empty()),
                },
            },
            source: NamedRef {
                id: s.source.to_string(),
                name: s.source_name.clone(),
            },
            state: HitStateDto {
                value: c.state.as_str().to_owned(),
                changed: c.state_changed.to_rfc3339(),
            },
            jit: HitJitDto {
                activation: time(c.jit.activation),
                provisioned: time(c.jit.provision),
                deactivation: time(c.jit.deactivation),
                deprovisioned: time(c.jit.deprovision),
                expiration: time(c.jit.expiration),
            },
            standalone: s.standalone,
            kind: s.kind.as_str().to_owned(),
        }
    }
}

impl EntitlementConnectionDto {
    /// The entity of a connection of `tenant`.
    pub fn from_connection(tenant: &str, c: &Connection) -> EntitlementConnectionDto {
        let s = &c.spec;
        EntitlementConnectionDto {
            tenant_id: tenant.to_owned(),
            connection_id: s.id.to_string(),
            identity_id: s.identity.to_string(),
            account_id: s.account.to_string(),
            entitlement_id: s.entitlement.to_string(),
            source_id: s.source.to_string(),
            standalone: s.standalone,
            attribute_name: s.attribute_name.clone(),
            attribute_value: s.attribute_value.clone(),
            kind: s.kind.as_str().to_owned(),
            state: c.state.as_str().to_owned(),
            state_changed: c.state_changed.to_rfc3339(),
            state_changed_by: actor_text(&c.state_changed_by),
            jit_activation: time(c.jit.activation),
            jit_provision: time(c.jit.provision),
            jit_deactivation: time(c.jit.deactivation),
            jit_deprovision: time(c.jit.deprovision),
            jit_expiration: time(c.jit.expiration),
            created: c.created.to_rfc3339(),
            modified: c.modified.to_rfc3339(),
            actor_name: actor_text(&c.state_changed_by),
        }
    }
}

/// The collection parameters of the connection lists, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "a parameter list for the OpenAPI document only")]
pub struct ListParams {
    /// Records to skip (0..=10000; page further with `searchAfter`).
    #[param(minimum = 0, maximum = 10000, default = 0)]
    offset: Option<i32>,
    /// Page size (0..=250).
    #[param(minimum = 0, maximum = 250, default = 250)]
    limit: Option<i32>,
    /// `true` sends the number of matching records in `X-Total-Count`.
    #[param(default = false)]
    count: Option<bool>,
    /// The sort values of the previous page's last record, one per sorter, comma separated.
    #[param(rename = "searchAfter")]
    search_after: Option<String>,
    /// A filter on `identity.id`, `identity.name`, `source.id`, `source.name`, `account.id`,
    /// `account.name`, `entitlement.id`, `entitlement.attribute`, `entitlement.value`,
    /// `entitlement.privilegeLevel.effective`, `type`, `state.value`, `standalone` and the
    /// `jit.*` timestamps, e.g. `state.value eq "EXPIRED"`.
    filters: Option<String>,
    /// Comma-separated sort fields, `-` for descending; default `id`.
    sorters: Option<String>,
}

fn hits(page: Page<Connection>) -> Response {
    let items: Vec<SearchHitDto> = page
        .items
        .iter()
        .map(SearchHitDto::from_connection)
        .collect();
    list::answer(items, page.total)
}

/// Lists the tenant's entitlement connections.
#[utoipa::path(
    get,
    path = "/entitlement-connections/v1",
    tag = "Entitlement Connections",
    operation_id = "listEntitlementConnectionsV1",
    params(ListParams),
    responses(
        (status = 200, description = "The page of connections; `X-Total-Count` when `count=true`.",
            body = Vec<SearchHitDto>, headers(("X-Total-Count" = String, description = "The number of matching connections."))),
        Errors,
    ),
    security(("userAuth" = ["idn:entitlement-connections:list"]))
)]
pub async fn search(
    State(state): State<AppState>,
    principal: Principal,
    uri: Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::CONNECTIONS_LIST)?;
    let query = list::query(&uri, CONNECTIONS)?;
    let engine = state.engine(&principal.caller.tenant)?;
    let caller = principal.caller;
    let page = list::blocking(&engine, move |e| e.connections(&caller, &query)).await?;
    Ok(hits(page))
}

/// Lists the caller's own entitlement connections, whatever the filter says.
#[utoipa::path(
    get,
    path = "/entitlement-connections/v1/current-identity",
    tag = "Entitlement Connections",
    operation_id = "listEntitlementConnectionsForCurrentIdentityV1",
    params(ListParams),
    responses(
        (status = 200, description = "The page of the caller's connections; `X-Total-Count` when `count=true`.",
            body = Vec<SearchHitDto>, headers(("X-Total-Count" = String, description = "The number of matching connections."))),
        Errors,
    ),
    security(("userAuth" = ["idn:entitlement-connections:read"]))
)]
pub async fn search_current_identity(
    State(state): State<AppState>,
    principal: Principal,
    uri: Uri,
) -> Result<Response, ApiError> {
    principal.require(auth::CONNECTIONS_READ_SELF)?;
    let query = list::query(&uri, CONNECTIONS)?;
    let engine = state.engine(&principal.caller.tenant)?;
    let (caller, identity) = (principal.caller, principal.identity);
    let page = list::blocking(&engine, move |e| {
        e.connections_of_identity(&caller, &identity, &query)
    })
    .await?;
    Ok(hits(page))
}

/// Applies the patch and answers the connection as committed.
async fn apply_patch(
    state: &AppState,
    principal: &Principal,
    id: jitflow_core::id::ConnectionId,
    ops: &[PatchOp],
) -> Result<Response, ApiError> {
    let connection = state
        .engine(&principal.caller.tenant)?
        .patch_connection(&principal.caller, id, ops)
        .await?;
    Ok(axum::Json(EntitlementConnectionDto::from_connection(
        principal.caller.tenant.as_str(),
        &connection,
    ))
    .into_response())
}

/// Applies JSON Patch operations (`replace` of `/type` or `/standalone`) to one connection.
#[utoipa::path(
    patch,
    path = "/entitlement-connections/v1/{connectionId}",
    tag = "Entitlement Connections",
    operation_id = "patchEntitlementConnectionByIdV1",
    params(("connectionId" = String, Path, description = "Connection ID (UUID with or without hyphens).")),
    request_body(content = Vec<OperationDto>, content_type = "application/json-patch+json"),
    responses(
        (status = 200, description = "The connection after the change.", body = EntitlementConnectionDto),
        Errors,
    ),
    security(("userAuth" = ["idn:entitlement-connections:manage"]))
)]
pub async fn patch_by_id(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::CONNECTIONS_MANAGE)?;
    let id = connection_id("connectionId", &id)?;
    let ops = patch_ops(&body, false)?;
    apply_patch(&state, &principal, id, &ops).await
}

/// The assignment ids of the patch by query: each required and well formed.
fn assignment(uri: &Uri) -> Result<(EntitlementId, IdentityId, AccountId), ApiError> {
    let params = Params::from_uri(uri)?;
    let p = params.only(ASSIGNMENT_PARAMS)?;
    let bad =
        |name: &str, e: jitflow_core::id::Error| ApiError::bad_request(format!("{name}: {e}"));
    let entitlement =
        EntitlementId::parse(p.required("entitlementId")?).map_err(|e| bad("entitlementId", e))?;
    let identity =
        IdentityId::parse(p.required("identityId")?).map_err(|e| bad("identityId", e))?;
    let account = AccountId::parse(p.required("accountId")?).map_err(|e| bad("accountId", e))?;
    Ok((entitlement, identity, account))
}

/// Applies JSON Patch operations to the one connection that gives the identity the entitlement
/// through the account.
#[utoipa::path(
    patch,
    path = "/entitlement-connections/v1",
    tag = "Entitlement Connections",
    operation_id = "patchEntitlementConnectionByQueryV1",
    params(
        ("entitlementId" = String, Query, description = "The entitlement."),
        ("identityId" = String, Query, description = "The identity."),
        ("accountId" = String, Query, description = "The account."),
    ),
    request_body(content = Vec<OperationDto>, content_type = "application/json-patch+json"),
    responses(
        (status = 200, description = "The connection after the change.", body = EntitlementConnectionDto),
        (status = 409, description = "Several connections hold the assignment, or the connection's state forbids the change.", body = crate::error::ErrorResponseDto),
        Errors,
    ),
    security(("userAuth" = ["idn:entitlement-connections:manage"]))
)]
pub async fn patch_by_query(
    State(state): State<AppState>,
    principal: Principal,
    uri: Uri,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::CONNECTIONS_MANAGE)?;
    let (entitlement, identity, account) = assignment(&uri)?;
    // The ops are checked before the lookup, so a malformed patch is a 400 whatever the ids.
    let ops = patch_ops(&body, false)?;
    let found = state.engine(&principal.caller.tenant)?
        .connection_by_assignment(&principal.caller, &entitlement, &identity, &account)
        .map_err(|e| match e {
            // The only query refusal of this read: several connections hold the assignment.
            jitflow::Error::Query(text) => ApiError::new(StatusCode::CONFLICT, text),
            other => other.into(),
        })?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no connection gives identity {identity} the entitlement {entitlement} through account {account}"
            ))
        })?;
    apply_patch(&state, &principal, found.id(), &ops).await
}

/// The result row of one bulk item.
fn bulk_result(item: &TypeUpdate, outcome: Result<Connection, ItemError>) -> BulkResultDto {
    let (status, description) = match outcome {
        Ok(_) => (201, "success".to_owned()),
        Err(ItemError::Engine(engine)) => {
            let e = ApiError::from(engine);
            let status = e.status.as_u16();
            if e.status.is_server_error() {
                tracing::error!(status, error = %e.text, "bulk item failed");
                (status, "An internal fault occurred.".to_owned())
            } else {
                (status, e.text)
            }
        }
        Err(e @ ItemError::InvalidId(_)) => (400, e.to_string()),
        Err(e @ ItemError::InvalidType(_)) => (422, e.to_string()),
        Err(e @ ItemError::Duplicate) => (409, e.to_string()),
    };
    BulkResultDto {
        connection_id: item.connection_id.chars().take(64).collect(),
        kind: item.kind.chars().take(64).collect(),
        status,
        description,
    }
}

/// Changes the type of up to 100 connections, each on its own: 207 with one result per item.
#[utoipa::path(
    post,
    path = "/entitlement-connections/v1",
    tag = "Entitlement Connections",
    operation_id = "updateEntitlementConnectionsBulkV1",
    request_body = Vec<BulkItemDto>,
    responses(
        (status = 207, description = "One result per item, in order.", body = Vec<BulkResultDto>),
        Errors,
    ),
    security(("userAuth" = ["idn:entitlement-connections:manage"]))
)]
pub async fn bulk(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::CONNECTIONS_MANAGE)?;
    let items: Vec<BulkItemDto> = body.parse_list()?;
    if !(1..=MAX_TYPE_UPDATES).contains(&items.len()) {
        return Err(ApiError::bad_request(format!(
            "the request holds {} items; send 1..={MAX_TYPE_UPDATES}",
            items.len()
        )));
    }
    let items: Vec<TypeUpdate> = items
        .into_iter()
        .map(|i| TypeUpdate {
            connection_id: i.connection_id,
            kind: i.kind,
        })
        .collect();
    let outcomes = state
        .engine(&principal.caller.tenant)?
        .bulk_change_type(&principal.caller, &items)
        .await?;
    let results: Vec<BulkResultDto> = items
        .iter()
        .zip(outcomes)
        .map(|(item, outcome)| bulk_result(item, outcome))
        .collect();
    Ok((StatusCode::MULTI_STATUS, axum::Json(results)).into_response())
}
