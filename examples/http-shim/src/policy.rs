//! `GET` and `PATCH /jit-activation-config/v1/{configType}`: the tenant's JIT activation policy,
//! and the shim's `PUT /jitflow/v1/jit-activation-config/{configType}` that stores a whole one
//! (the vendor contract has no way to create the policy; `PATCH` answers 404 until one exists).
//!
//! Only the `configType` `policy` exists; any other is 400, as the contract says. The `PATCH`
//! body is a non-empty array (at most `jitflow_core::policy::MAX_PATCH_OPS`) of `{op, path,
//! value}` replace operations, applied all or nothing by the core.
//!
//! The warning lead (a jitflow extension beside the contract's notification settings): the
//! policy carries `jitflowExpiryWarningMins`, how long before an activation's expiry its
//! expiring-soon notice is sent (`null`: the engine's `warning_lead`). Every answer sends it;
//! `PATCH` takes the path `/jitflowExpiryWarningMins` like any `*Mins` path, and the `PUT`
//! takes the field. The vendor's response schema allows properties it does not list, so the
//! conformance check passes it; the `PATCH` request schema's path enum does not list it, which
//! only a client that validates its own requests would notice.
//!
//! The answer to missing access (a jitflow extension, issue 16's drift): the policy carries
//! `jitflowOnMissingAccess`, what an inspection of the target that finds access missing where
//! an activation is ACTIVE leads to: `REPORT` (the default: recorded and reported only),
//! `GRANT_AGAIN` (granted again, the expiry kept) or `END_ACTIVATION` (the activation ends and
//! its revoke runs). Every answer sends it; `PATCH` takes `/jitflowOnMissingAccess` with one
//! of the three names, and the `PUT` the field (absent: `REPORT`).
//!
//! Concurrency (a jitflow extension): every answer with a policy carries its version as an
//! `ETag` (`"v3"`), and a `PATCH` with `If-Match` applies only if the policy is still at a
//! version it names (the core checks the version in the writer, so of two administrators
//! patching from the same read exactly one wins); otherwise 412 and nothing changes. Without
//! `If-Match` (or with `*`) a `PATCH` applies to whatever is stored, as the contract says.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jitflow_core::id::EntitlementId;
use jitflow_core::lifecycle::PolicyRejection;
use jitflow_core::policy::{MissingAccessAction, PatchOp, PatchValue, Policy};
use jitflow_core::time::Minutes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{self, Principal};
use crate::body::{JsonBody, Segment};
use crate::error::{ApiError, Errors};

/// The contract's `JITActivationConfigResponse`. Every nullable field is sent, as `null` when
/// unset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDto {
    /// The persisted config id.
    #[schema(format = "uuid")]
    pub id: String,
    /// Entitlements governed by JIT activation.
    pub entitlement_ids: Vec<String>,
    /// Longest activation period, in minutes.
    #[schema(format = Int32)]
    pub max_activation_period_mins: Option<u32>,
    /// Most an activation may be extended in total, in minutes.
    #[schema(format = Int32)]
    pub max_activation_period_extension_mins: Option<u32>,
    /// Default activation period, in minutes.
    #[schema(format = Int32)]
    pub default_max_activation_period_mins: Option<u32>,
    /// Default extension, in minutes.
    #[schema(format = Int32)]
    pub default_max_activation_period_extension_mins: Option<u32>,
    /// Email addresses told about activation events.
    pub notification_recipients: Vec<String>,
    /// Email template name.
    pub notification_template: Option<String>,
    /// Whether new assignments of governed entitlements become JIT.
    pub apply_to_future_assignments: bool,
    /// jitflow extension: how long before an activation's expiry its expiring-soon notice is
    /// sent, in minutes; `null`: the engine's `warning_lead` (5 minutes by default).
    #[schema(format = Int32)]
    pub jitflow_expiry_warning_mins: Option<u32>,
    /// jitflow extension: what an inspection that finds access missing where an activation
    /// is ACTIVE leads to: `REPORT` (record and report only, the default), `GRANT_AGAIN`, or
    /// `END_ACTIVATION`.
    pub jitflow_on_missing_access: MissingAccessDto,
}

/// jitflow extension: the policy's answer to access found missing while ACTIVE
/// (`jitflow_core::policy::MissingAccessAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MissingAccessDto {
    /// Record the drift and report it; the activation runs to its expiry.
    #[default]
    Report,
    /// Grant the access again (the activation keeps its expiry).
    GrantAgain,
    /// End the activation (its access is revoked).
    EndActivation,
}

impl From<MissingAccessAction> for MissingAccessDto {
    fn from(action: MissingAccessAction) -> MissingAccessDto {
        match action {
            MissingAccessAction::Report => MissingAccessDto::Report,
            MissingAccessAction::GrantAgain => MissingAccessDto::GrantAgain,
            MissingAccessAction::EndActivation => MissingAccessDto::EndActivation,
        }
    }
}

impl From<MissingAccessDto> for MissingAccessAction {
    fn from(action: MissingAccessDto) -> MissingAccessAction {
        match action {
            MissingAccessDto::Report => MissingAccessAction::Report,
            MissingAccessDto::GrantAgain => MissingAccessAction::GrantAgain,
            MissingAccessDto::EndActivation => MissingAccessAction::EndActivation,
        }
    }
}

impl PolicyDto {
    /// The contract's view of a stored policy.
    pub fn from_policy(p: &Policy) -> PolicyDto {
        PolicyDto {
            id: p.id.clone(),
            entitlement_ids: p.entitlement_ids.iter().map(|e| e.to_string()).collect(),
            max_activation_period_mins: p.max_activation_period.map(Minutes::get),
            max_activation_period_extension_mins: p.max_extension.map(Minutes::get),
            default_max_activation_period_mins: p.default_activation_period.map(Minutes::get),
            default_max_activation_period_extension_mins: p.default_extension.map(Minutes::get),
            notification_recipients: p.notification_recipients.clone(),
            notification_template: p.notification_template.clone(),
            apply_to_future_assignments: p.apply_to_future_assignments,
            jitflow_expiry_warning_mins: p.expiry_warning.map(Minutes::get),
            jitflow_on_missing_access: p.on_missing_access.into(),
        }
    }
}

/// One operation of a `PATCH` body (`JitAccessOperationRequest`, and the entitlement connection's
/// `JsonPatchOperation`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationDto {
    /// `replace` (the default when omitted, and the only one supported).
    pub op: Option<String>,
    /// The path: one of the policy's eight (and jitflow's two), or a connection's `/type` and
    /// `/standalone`.
    pub path: String,
    /// The new value; required, `null` clears a nullable field.
    #[schema(value_type = Object, nullable = true)]
    pub value: serde_json::Value,
}

/// Body of the shim's `PUT`: a whole policy. `id` is ignored (kept from the stored policy, or
/// generated for a new one).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyPutDto {
    /// Ignored.
    pub id: Option<String>,
    /// Entitlements governed by JIT activation.
    #[serde(default)]
    pub entitlement_ids: Vec<String>,
    /// Longest activation period, in minutes.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub max_activation_period_mins: Option<i64>,
    /// Most an activation may be extended in total, in minutes.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub max_activation_period_extension_mins: Option<i64>,
    /// Default activation period, in minutes.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub default_max_activation_period_mins: Option<i64>,
    /// Default extension, in minutes.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub default_max_activation_period_extension_mins: Option<i64>,
    /// Email addresses told about activation events.
    #[serde(default)]
    pub notification_recipients: Vec<String>,
    /// Email template name.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub notification_template: Option<String>,
    /// Whether new assignments of governed entitlements become JIT.
    #[serde(default)]
    pub apply_to_future_assignments: bool,
    /// jitflow extension: the expiring-soon notice's lead, in minutes; `null` or absent: the
    /// engine's setting.
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub jitflow_expiry_warning_mins: Option<i64>,
    /// jitflow extension: the answer to access found missing while ACTIVE; absent: `REPORT`.
    #[serde(default)]
    pub jitflow_on_missing_access: Option<MissingAccessDto>,
}

/// The JSON value as the core's patch value.
fn patch_value(value: serde_json::Value) -> PatchValue {
    use serde_json::Value;
    match value {
        Value::Null => PatchValue::Null,
        Value::Bool(b) => PatchValue::Bool(b),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| PatchValue::Other("number".to_owned()), PatchValue::Int),
        Value::String(s) => PatchValue::Text(s),
        Value::Array(items) => {
            let all_text = items.iter().all(Value::is_string);
            if all_text {
                PatchValue::TextList(
                    items
                        .into_iter()
                        .filter_map(|v| match v {
                            Value::String(s) => Some(s),
                            _ => None,
                        })
                        .collect(),
                )
            } else {
                PatchValue::Other("array".to_owned())
            }
        }
        Value::Object(_) => PatchValue::Other("object".to_owned()),
    }
}

/// A JSON Patch body (an array of `{op, path, value}` objects) as the core's operations: the
/// policy's `PATCH` and the entitlement connection's `PATCH` share it; the core checks the ops,
/// paths and values. `null_value` says whether `value` may be `null` (the policy's
/// `JitAccessOperationRequest` says so; the connection's `JsonPatchOperation` does not).
pub fn patch_ops(body: &JsonBody, null_value: bool) -> Result<Vec<PatchOp>, ApiError> {
    let ops: Vec<OperationDto> = body.parse_list()?;
    ops.into_iter()
        .enumerate()
        .map(|(i, o)| {
            if !null_value && o.value.is_null() {
                return Err(ApiError::bad_request(format!(
                    "item {i}: the body does not match the request schema at value: null is not allowed here"
                )));
            }
            Ok(PatchOp {
                op: o.op,
                path: o.path,
                value: patch_value(o.value),
            })
        })
        .collect()
}

/// The 200 answer with a policy and its [`etag`].
fn answer(policy: &Policy) -> Response {
    let mut response = axum::Json(PolicyDto::from_policy(policy)).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(policy.version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The entity tag of a policy version (a jitflow extension of the contract): strong, since a
/// version names exactly one representation.
pub fn etag(version: u64) -> String {
    format!("\"v{version}\"")
}

/// The most entity tags one `If-Match` may list.
pub const MAX_IF_MATCH_TAGS: usize = 16;

/// What a `PATCH`'s `If-Match` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match`, or `*`: apply to whatever version is stored (the contract's behaviour).
    Any,
    /// Apply only if the stored version is one of these (the strong tags of [`etag`]'s form;
    /// weak tags and others match nothing, as RFC 9110's strong comparison says).
    Versions(Vec<u64>),
}

/// Reads the `If-Match` header (RFC 9110 13.1.1): `*` or a comma-separated list of entity
/// tags; anything else is 400.
pub fn if_match(headers: &HeaderMap) -> Result<IfMatch, ApiError> {
    let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
    if values.peek().is_none() {
        return Ok(IfMatch::Any);
    }
    let malformed = || {
        ApiError::bad_request(format!(
            "If-Match must be `*` or a list of at most {MAX_IF_MATCH_TAGS} entity tags such as `\"v3\"`, as the policy's ETag gives"
        ))
    };
    let mut versions = Vec::new();
    let mut tags = 0usize;
    for value in values {
        let text = value.to_str().map_err(|_| malformed())?;
        for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                return Ok(IfMatch::Any);
            }
            tags += 1;
            if tags > MAX_IF_MATCH_TAGS {
                return Err(malformed());
            }
            let (weak, quoted) = match tag.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, tag),
            };
            let opaque = quoted
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|t| !t.contains('"'))
                .ok_or_else(malformed)?;
            if let Some(version) = opaque.strip_prefix('v').and_then(|v| v.parse::<u64>().ok())
                && !weak
            {
                versions.push(version);
            }
        }
    }
    if tags == 0 {
        return Err(malformed());
    }
    Ok(IfMatch::Versions(versions))
}

/// 400 unless the path segment is `policy`.
fn check_config_type(segment: &str) -> Result<(), ApiError> {
    if segment == "policy" {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "unknown configType `{}`: the only one is `policy`",
            segment.chars().take(64).collect::<String>()
        )))
    }
}

/// Reads the tenant's policy.
#[utoipa::path(
    get,
    path = "/jit-activation-config/v1/{configType}",
    tag = "JIT Access",
    operation_id = "getJitActivationConfigV1",
    params(
        ("configType" = String, Path, description = "Only `policy`."),
        ("X-SailPoint-Experimental" = Option<String>, Header, description = "Accepted, not required."),
    ),
    responses(
        (status = 200, description = "The policy, with its version as `ETag` (jitflow extension).", body = PolicyDto),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-policy:read", "idn:jit-policy:manage"]))
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Segment(config_type): Segment,
) -> Result<Response, ApiError> {
    principal.require(auth::POLICY_READ)?;
    check_config_type(&config_type)?;
    let policy = state
        .engine(&principal.caller.tenant)?
        .policy(&principal.caller.tenant)?
        .ok_or_else(|| ApiError::not_found("the JIT activation policy has not been stored yet"))?;
    Ok(answer(&policy))
}

/// Applies replace operations to the tenant's policy, all or nothing.
#[utoipa::path(
    patch,
    path = "/jit-activation-config/v1/{configType}",
    tag = "JIT Access",
    operation_id = "patchJitActivationConfigV1",
    params(
        ("configType" = String, Path, description = "Only `policy`."),
        ("X-SailPoint-Experimental" = Option<String>, Header, description = "Accepted, not required."),
        ("If-Match" = Option<String>, Header, description = "jitflow extension: apply only if the policy is still at this version (its `ETag`, e.g. `\"v3\"`); `*` or absent: any version."),
    ),
    request_body = Vec<OperationDto>,
    responses(
        (status = 200, description = "The policy after the change, with its new `ETag`.", body = PolicyDto),
        (status = 412, description = "jitflow extension: `If-Match` names a version that is no longer current; nothing changed.", body = crate::error::ErrorResponseDto),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-policy:update", "idn:jit-policy:manage"]))
)]
pub async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    Segment(config_type): Segment,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::POLICY_UPDATE)?;
    check_config_type(&config_type)?;
    let condition = if_match(&headers)?;
    let ops = patch_ops(&body, true)?;
    let stale = |current: u64| {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            format!(
                "If-Match does not name the current policy version: it is {}; read it again and retry",
                etag(current)
            ),
        )
    };
    let expected = match condition {
        IfMatch::Any => None,
        IfMatch::Versions(versions) => {
            // The core checks one expected version in the writer, so two patches based on the
            // same read cannot both apply; of several tags, the stored one is the one to check.
            let current = state
                .engine(&principal.caller.tenant)?
                .policy(&principal.caller.tenant)?
                .map(|p| p.version);
            match current {
                None => {
                    return Err(ApiError::not_found(
                        "the JIT activation policy has not been stored yet",
                    ));
                }
                Some(current) if versions.contains(&current) => Some(current),
                Some(current) => return Err(stale(current)),
            }
        }
    };
    match state
        .engine(&principal.caller.tenant)?
        .patch_policy(&principal.caller, ops, expected)
        .await
    {
        Ok(policy) => Ok(answer(&policy)),
        Err(jitflow::Error::PolicyRejected(PolicyRejection::VersionConflict {
            actual, ..
        })) => Err(stale(actual)),
        Err(e) => Err(e.into()),
    }
}

/// Stores a whole policy (jitflow extension: the vendor contract cannot create one).
#[utoipa::path(
    put,
    path = "/jitflow/v1/jit-activation-config/{configType}",
    tag = "jitflow extensions",
    operation_id = "putJitActivationConfig",
    params(("configType" = String, Path, description = "Only `policy`.")),
    request_body = PolicyPutDto,
    responses(
        (status = 200, description = "The stored policy.", body = PolicyDto),
        Errors,
    ),
    security(("userAuth" = ["idn:jit-policy:update", "idn:jit-policy:manage"]))
)]
pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    Segment(config_type): Segment,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::POLICY_UPDATE)?;
    check_config_type(&config_type)?;
    let dto: PolicyPutDto = body.parse()?;
    let policy = policy_from_put(dto)?;
    let stored = state
        .engine(&principal.caller.tenant)?
        .put_policy(&principal.caller, policy)
        .await?;
    Ok(answer(&stored))
}

/// A whole policy from the `PUT` body; the core validates the rest when it stores it.
fn policy_from_put(dto: PolicyPutDto) -> Result<Policy, ApiError> {
    let mins = |field: &str, v: Option<i64>| -> Result<Option<Minutes>, ApiError> {
        v.map(|v| {
            u32::try_from(v).map(Minutes).map_err(|_| {
                ApiError::bad_request(format!("{field}: {v} is not a period in minutes"))
            })
        })
        .transpose()
    };
    let mut policy = Policy::empty(uuid::Uuid::new_v4().hyphenated().to_string());
    if dto.entitlement_ids.len() > jitflow_core::policy::MAX_ENTITLEMENTS {
        return Err(ApiError::bad_request(format!(
            "entitlementIds has {} entries, more than the {} allowed",
            dto.entitlement_ids.len(),
            jitflow_core::policy::MAX_ENTITLEMENTS
        )));
    }
    policy.entitlement_ids = dto
        .entitlement_ids
        .iter()
        .map(|e| {
            EntitlementId::parse(e)
                .map_err(|err| ApiError::bad_request(format!("entitlementIds: {err}")))
        })
        .collect::<Result<_, _>>()?;
    policy.max_activation_period = mins("maxActivationPeriodMins", dto.max_activation_period_mins)?;
    policy.max_extension = mins(
        "maxActivationPeriodExtensionMins",
        dto.max_activation_period_extension_mins,
    )?;
    policy.default_activation_period = mins(
        "defaultMaxActivationPeriodMins",
        dto.default_max_activation_period_mins,
    )?;
    policy.default_extension = mins(
        "defaultMaxActivationPeriodExtensionMins",
        dto.default_max_activation_period_extension_mins,
    )?;
    policy.notification_recipients = dto.notification_recipients;
    policy.notification_template = dto.notification_template;
    policy.apply_to_future_assignments = dto.apply_to_future_assignments;
    policy.expiry_warning = mins("jitflowExpiryWarningMins", dto.jitflow_expiry_warning_mins)?;
    policy.on_missing_access = dto.jitflow_on_missing_access.unwrap_or_default().into();
    Ok(policy)
}
