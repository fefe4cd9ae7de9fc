//! `GET` and `PUT /access-request-config/v1` and `/v2`: the tenant's access request config
//! (`v1` is also served as `/v2026/access-request-config`, like every vendor v1 path).
//!
//! Both versions read and write one stored config (`jitflow_core::request::config`): a `GET`
//! renders the version's view, and a `PUT` replaces the fields its version has and keeps the
//! fields only the other version has (`autoApprovalEnabled` and
//! `approvalReminderAndEscalationConfig` are v1's; `govGroupVisibilityEnabled` and
//! `machineIdentityAccessRequestEnabled` v2's). Before the first `PUT` a `GET` answers the
//! contract's defaults. Bodies are closed (an unknown field is 400); an omitted field takes the
//! contract's default, and `null` is accepted only where the contract says nullable.
//!
//! Rules: `GET` needs `idn:access-request-config:read` and any user level; `PUT` needs
//! `idn:access-request-config:manage` and ORG_ADMIN (the path files' `security` and
//! `x-sailpoint-userLevels`; SOURCE_ADMIN and SOURCE_SUBADMIN are not levels of the shim's
//! tokens, and USER is the lowest it has).
//!
//! The merge is made by the engine's writer with the config as committed
//! (`Engine::put_access_request_config` with `View::V1` or `View::V2`), so two `PUT`s of
//! different versions racing each other keep each other's fields.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use jitflow_core::id::IdentityId;
use jitflow_core::request::AccessRequestConfig;
use jitflow_core::request::config::{
    self, AccessDuration, ApprovalScheme, ApproverType, EntitlementAccess, EntitlementRequest,
    MAX_REMINDER_DAYS, MAX_REMINDERS, OnBehalfOf, Reminders, TimeUnit, View,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{self, Principal};
use crate::body::JsonBody;
use crate::error::{ApiError, Errors};

/// The contract's `AccessRequestConfig` (v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConfigV1Dto {
    /// Approvals are processed by an external system; only org admins may submit requests.
    pub approvals_must_be_external: bool,
    /// Stored and returned; no effect (moved to the approval configuration by the contract).
    pub auto_approval_enabled: bool,
    /// Stored and returned; no effect (jitflow has no reauthorization step).
    pub reauthorization_enabled: bool,
    /// Who may request for whom.
    pub request_on_behalf_of_config: OnBehalfOfDto,
    /// Stored and returned; no effect (moved to the approval configuration by the contract).
    pub approval_reminder_and_escalation_config: RemindersDto,
    /// The entitlement request rules.
    pub entitlement_request_config: EntitlementRequestDto,
}

impl Default for ConfigV1Dto {
    fn default() -> ConfigV1Dto {
        ConfigV1Dto::of(&AccessRequestConfig::default())
    }
}

/// The contract's `AccessRequestConfigV2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConfigV2Dto {
    /// Approvals are processed by an external system; only org admins may submit requests.
    pub approvals_must_be_external: bool,
    /// Stored and returned; no effect (jitflow has no reauthorization step).
    pub reauthorization_enabled: bool,
    /// Who may request for whom.
    pub request_on_behalf_of_config: OnBehalfOfDto,
    /// The entitlement request rules.
    pub entitlement_request_config: EntitlementRequestDto,
    /// Stored and returned; no effect (jitflow has no governance groups).
    pub gov_group_visibility_enabled: bool,
    /// Stored and returned; no effect (jitflow does not tell machine identities apart).
    pub machine_identity_access_request_enabled: bool,
}

impl Default for ConfigV2Dto {
    fn default() -> ConfigV2Dto {
        ConfigV2Dto::of(&AccessRequestConfig::default())
    }
}

/// The contract's `RequestOnBehalfOfConfig` (the same in v1 and v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OnBehalfOfDto {
    /// Anyone may request for anyone.
    pub allow_request_on_behalf_of_anyone_by_anyone: bool,
    /// Managers may request for their reports (jitflow knows no managers: allows nothing).
    pub allow_request_on_behalf_of_employee_by_manager: bool,
    /// Stored and returned; no effect.
    pub allow_request_on_behalf_of_for_machine_identity: bool,
    /// Stored and returned; no effect.
    pub allow_request_for_machine_by_owner: bool,
}

impl Default for OnBehalfOfDto {
    fn default() -> OnBehalfOfDto {
        OnBehalfOfDto::of(OnBehalfOf::default())
    }
}

impl OnBehalfOfDto {
    fn of(o: OnBehalfOf) -> OnBehalfOfDto {
        OnBehalfOfDto {
            allow_request_on_behalf_of_anyone_by_anyone: o.anyone_by_anyone,
            allow_request_on_behalf_of_employee_by_manager: o.employee_by_manager,
            allow_request_on_behalf_of_for_machine_identity: o.for_machine_identity,
            allow_request_for_machine_by_owner: o.machine_by_owner,
        }
    }

    fn core(self) -> OnBehalfOf {
        OnBehalfOf {
            anyone_by_anyone: self.allow_request_on_behalf_of_anyone_by_anyone,
            employee_by_manager: self.allow_request_on_behalf_of_employee_by_manager,
            for_machine_identity: self.allow_request_on_behalf_of_for_machine_identity,
            machine_by_owner: self.allow_request_for_machine_by_owner,
        }
    }
}

/// The contract's `ApprovalReminderAndEscalationConfig` (v1 only). Every field is nullable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RemindersDto {
    /// Days before the first reminder (or the escalation), 0 to 365.
    #[schema(format = Int32)]
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub days_until_escalation: Option<i64>,
    /// Days between reminders, 0 to 365.
    #[schema(format = Int32)]
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub days_between_reminders: Option<i64>,
    /// Reminders before escalation, 0 to 20.
    #[schema(format = Int32)]
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub max_reminders: Option<i64>,
    /// The fallback approver (only its `id` is kept).
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub fallback_approver_ref: Option<IdentityRefDto>,
}

/// The contract's `IdentityReferenceWithNameAndEmail`: `type`, `name` and `email` are
/// read-only (accepted, not kept; `type` must be `IDENTITY` when sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityRefDto {
    /// Always `IDENTITY`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The identity id.
    pub id: String,
    /// The display name (jitflow knows none: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// The email address (jitflow knows none: `null`).
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub email: Option<String>,
}

/// The contract's `EntitlementRequestConfig` (the same in v1 and v2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EntitlementRequestDto {
    /// The rules of a grant of an entitlement.
    pub access_request_config: EntitlementAccessDto,
    /// The rules of a revocation of an entitlement.
    pub revocation_request_config: RevocationDto,
}

/// The contract's `EntitlementAccessRequestConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EntitlementAccessDto {
    /// Approval steps, in order (stored and returned; jitflow's approval step is the engine's).
    pub approval_schemes: Vec<SchemeDto>,
    /// A grant of an entitlement needs a comment.
    pub request_comment_required: bool,
    /// A rejection of an entitlement's approval needs a comment.
    pub denial_comment_required: bool,
    /// Stored and returned; no effect.
    pub reauthorization_required: bool,
    /// A grant of an entitlement needs a `removeDate`.
    pub require_end_date: bool,
    /// The longest a granted entitlement may be held (`null`: no maximum).
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub max_permitted_access_duration: Option<DurationDto>,
    /// Stored and returned; no effect (jitflow has no forms).
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub form_definition_id: Option<String>,
}

/// The contract's `EntitlementRevocationRequestConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RevocationDto {
    /// Approval steps, in order (stored and returned).
    pub approval_schemes: Vec<SchemeDto>,
}

/// The contract's `EntitlementApprovalScheme`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchemeDto {
    /// `ENTITLEMENT_OWNER`, `SOURCE_OWNER`, `MANAGER`, `GOVERNANCE_GROUP` or `WORKFLOW`.
    pub approver_type: String,
    /// The group or workflow id (GOVERNANCE_GROUP and WORKFLOW only).
    #[serde(default, deserialize_with = "crate::body::nullable")]
    pub approver_id: Option<String>,
}

/// `maxPermittedAccessDuration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DurationDto {
    /// How many units: 1 to ten years' worth.
    #[schema(format = Int32)]
    pub value: i64,
    /// `HOURS`, `DAYS`, `WEEKS` or `MONTHS`.
    pub time_unit: String,
}

impl ConfigV1Dto {
    /// The v1 view of a config.
    pub fn of(c: &AccessRequestConfig) -> ConfigV1Dto {
        ConfigV1Dto {
            approvals_must_be_external: c.approvals_must_be_external,
            auto_approval_enabled: c.auto_approval_enabled,
            reauthorization_enabled: c.reauthorization_enabled,
            request_on_behalf_of_config: OnBehalfOfDto::of(c.on_behalf_of),
            approval_reminder_and_escalation_config: RemindersDto::of(c.reminders.as_ref()),
            entitlement_request_config: EntitlementRequestDto::of(&c.entitlement),
        }
    }

    /// The config this body describes; the v2-only fields have their defaults (the caller
    /// merges them with `AccessRequestConfig::with` and `View::V1`).
    fn core(self) -> Result<AccessRequestConfig, ApiError> {
        Ok(AccessRequestConfig {
            approvals_must_be_external: self.approvals_must_be_external,
            auto_approval_enabled: self.auto_approval_enabled,
            reauthorization_enabled: self.reauthorization_enabled,
            on_behalf_of: self.request_on_behalf_of_config.core(),
            reminders: self.approval_reminder_and_escalation_config.core()?,
            entitlement: self.entitlement_request_config.core()?,
            ..AccessRequestConfig::default()
        })
    }
}

impl ConfigV2Dto {
    /// The v2 view of a config.
    pub fn of(c: &AccessRequestConfig) -> ConfigV2Dto {
        ConfigV2Dto {
            approvals_must_be_external: c.approvals_must_be_external,
            reauthorization_enabled: c.reauthorization_enabled,
            request_on_behalf_of_config: OnBehalfOfDto::of(c.on_behalf_of),
            entitlement_request_config: EntitlementRequestDto::of(&c.entitlement),
            gov_group_visibility_enabled: c.gov_group_visibility_enabled,
            machine_identity_access_request_enabled: c.machine_identity_access_request_enabled,
        }
    }

    /// The config this body describes; the v1-only fields have their defaults (the caller
    /// merges them with `AccessRequestConfig::with` and `View::V2`).
    fn core(self) -> Result<AccessRequestConfig, ApiError> {
        Ok(AccessRequestConfig {
            approvals_must_be_external: self.approvals_must_be_external,
            reauthorization_enabled: self.reauthorization_enabled,
            on_behalf_of: self.request_on_behalf_of_config.core(),
            entitlement: self.entitlement_request_config.core()?,
            gov_group_visibility_enabled: self.gov_group_visibility_enabled,
            machine_identity_access_request_enabled: self.machine_identity_access_request_enabled,
            ..AccessRequestConfig::default()
        })
    }
}

/// A config rule broken while reading the body, as the core words it.
fn refused(e: config::Error) -> ApiError {
    ApiError::bad_request(e.to_string())
}

impl RemindersDto {
    fn of(r: Option<&Reminders>) -> RemindersDto {
        let r = r.cloned().unwrap_or_default();
        RemindersDto {
            days_until_escalation: r.days_until_escalation.map(i64::from),
            days_between_reminders: r.days_between_reminders.map(i64::from),
            max_reminders: r.max_reminders.map(i64::from),
            fallback_approver_ref: r.fallback_approver.map(|id| IdentityRefDto {
                kind: Some("IDENTITY".to_owned()),
                name: Some(id.as_str().to_owned()),
                id: id.as_str().to_owned(),
                email: None,
            }),
        }
    }

    /// The reminders, `None` when every field is `null` (the same as never set).
    fn core(self) -> Result<Option<Reminders>, ApiError> {
        let count = |field: &'static str, value: Option<i64>, max: u32| {
            value
                .map(|v| {
                    u32::try_from(v).ok().filter(|v| *v <= max).ok_or_else(|| {
                        refused(config::Error::Reminder {
                            field,
                            value: v,
                            max,
                        })
                    })
                })
                .transpose()
        };
        let fallback_approver = match self.fallback_approver_ref {
            None => None,
            Some(r) => {
                if r.kind.as_deref().is_some_and(|k| k != "IDENTITY") {
                    return Err(ApiError::bad_request(
                        "approvalReminderAndEscalationConfig.fallbackApproverRef.type must be IDENTITY",
                    ));
                }
                Some(IdentityId::parse(&r.id).map_err(|e| {
                    ApiError::bad_request(format!(
                        "approvalReminderAndEscalationConfig.fallbackApproverRef.id: {e}"
                    ))
                })?)
            }
        };
        let reminders = Reminders {
            days_until_escalation: count(
                "daysUntilEscalation",
                self.days_until_escalation,
                MAX_REMINDER_DAYS,
            )?,
            days_between_reminders: count(
                "daysBetweenReminders",
                self.days_between_reminders,
                MAX_REMINDER_DAYS,
            )?,
            max_reminders: count("maxReminders", self.max_reminders, MAX_REMINDERS)?,
            fallback_approver,
        };
        Ok(Some(reminders).filter(|r| *r != Reminders::default()))
    }
}

impl EntitlementRequestDto {
    fn of(e: &EntitlementRequest) -> EntitlementRequestDto {
        let a = &e.access;
        EntitlementRequestDto {
            access_request_config: EntitlementAccessDto {
                approval_schemes: a.approval_schemes.iter().map(SchemeDto::of).collect(),
                request_comment_required: a.request_comment_required,
                denial_comment_required: a.denial_comment_required,
                reauthorization_required: a.reauthorization_required,
                require_end_date: a.require_end_date,
                max_permitted_access_duration: a.max_duration.map(|d| DurationDto {
                    value: i64::from(d.value),
                    time_unit: d.unit.as_str().to_owned(),
                }),
                form_definition_id: a.form_definition_id.clone(),
            },
            revocation_request_config: RevocationDto {
                approval_schemes: e.revocation_schemes.iter().map(SchemeDto::of).collect(),
            },
        }
    }

    fn core(self) -> Result<EntitlementRequest, ApiError> {
        let a = self.access_request_config;
        let max_duration = match a.max_permitted_access_duration {
            None => None,
            Some(d) => {
                let unit = TimeUnit::parse(&d.time_unit).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "entitlementRequestConfig.accessRequestConfig.maxPermittedAccessDuration.timeUnit `{}` is not one of HOURS, DAYS, WEEKS, MONTHS",
                        d.time_unit.chars().take(32).collect::<String>()
                    ))
                })?;
                let out_of_range = || {
                    refused(config::Error::Duration {
                        value: d.value,
                        unit: unit.as_str(),
                        max: unit.max_value(),
                    })
                };
                let value = u32::try_from(d.value).map_err(|_| out_of_range())?;
                Some(AccessDuration { value, unit })
            }
        };
        Ok(EntitlementRequest {
            access: EntitlementAccess {
                approval_schemes: schemes("accessRequestConfig", a.approval_schemes)?,
                request_comment_required: a.request_comment_required,
                denial_comment_required: a.denial_comment_required,
                reauthorization_required: a.reauthorization_required,
                require_end_date: a.require_end_date,
                max_duration,
                form_definition_id: a.form_definition_id,
            },
            revocation_schemes: schemes(
                "revocationRequestConfig",
                self.revocation_request_config.approval_schemes,
            )?,
        })
    }
}

impl SchemeDto {
    fn of(s: &ApprovalScheme) -> SchemeDto {
        SchemeDto {
            approver_type: s.approver_type.as_str().to_owned(),
            approver_id: s.approver_id.clone(),
        }
    }
}

/// The schemes of a body; the core checks their number and ids when it stores them.
fn schemes(list: &str, dtos: Vec<SchemeDto>) -> Result<Vec<ApprovalScheme>, ApiError> {
    dtos.into_iter()
        .enumerate()
        .map(|(i, s)| {
            let approver_type = ApproverType::parse(&s.approver_type).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "entitlementRequestConfig.{list}.approvalSchemes[{i}].approverType `{}` is not one of ENTITLEMENT_OWNER, SOURCE_OWNER, MANAGER, GOVERNANCE_GROUP, WORKFLOW",
                    s.approver_type.chars().take(32).collect::<String>()
                ))
            })?;
            Ok(ApprovalScheme {
                approver_type,
                approver_id: s.approver_id,
            })
        })
        .collect()
}

/// Reads the access request config (v1 view, deprecated by the contract in favour of v2).
#[utoipa::path(
    get,
    path = "/access-request-config/v1",
    tag = "Access Requests",
    operation_id = "getAccessRequestConfigV1",
    responses(
        (status = 200, description = "Access Request Configuration Details (deprecated: use v2).", body = ConfigV1Dto),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-config:read"]))
)]
pub async fn get_v1(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(auth::REQUEST_CONFIG_READ)?;
    let config = state
        .engine(&principal.caller.tenant)?
        .access_request_config(&principal.caller.tenant)?;
    Ok(Json(ConfigV1Dto::of(&config)).into_response())
}

/// Replaces the v1 fields of the access request config.
#[utoipa::path(
    put,
    path = "/access-request-config/v1",
    tag = "Access Requests",
    operation_id = "setAccessRequestConfigV1",
    request_body = ConfigV1Dto,
    responses(
        (status = 200, description = "Access Request Configuration Details (deprecated: use v2).", body = ConfigV1Dto),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-config:manage"]))
)]
pub async fn put_v1(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::REQUEST_CONFIG_MANAGE)?;
    let wanted = body.parse::<ConfigV1Dto>()?.core()?;
    let stored = state
        .engine(&principal.caller.tenant)?
        .put_access_request_config(&principal.caller, View::V1, wanted)
        .await?;
    Ok(Json(ConfigV1Dto::of(&stored)).into_response())
}

/// Reads the access request config (v2 view).
#[utoipa::path(
    get,
    path = "/access-request-config/v2",
    tag = "Access Requests",
    operation_id = "getAccessRequestConfigV2",
    responses(
        (status = 200, description = "Access Request Configuration Details.", body = ConfigV2Dto),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-config:read"]))
)]
pub async fn get_v2(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(auth::REQUEST_CONFIG_READ)?;
    let config = state
        .engine(&principal.caller.tenant)?
        .access_request_config(&principal.caller.tenant)?;
    Ok(Json(ConfigV2Dto::of(&config)).into_response())
}

/// Replaces the v2 fields of the access request config.
#[utoipa::path(
    put,
    path = "/access-request-config/v2",
    tag = "Access Requests",
    operation_id = "setAccessRequestConfigV2",
    request_body = ConfigV2Dto,
    responses(
        (status = 200, description = "Access Request Configuration Details.", body = ConfigV2Dto),
        Errors,
    ),
    security(("userAuth" = ["idn:access-request-config:manage"]))
)]
pub async fn put_v2(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(auth::REQUEST_CONFIG_MANAGE)?;
    let wanted = body.parse::<ConfigV2Dto>()?.core()?;
    let stored = state
        .engine(&principal.caller.tenant)?
        .put_access_request_config(&principal.caller, View::V2, wanted)
        .await?;
    Ok(Json(ConfigV2Dto::of(&stored)).into_response())
}
