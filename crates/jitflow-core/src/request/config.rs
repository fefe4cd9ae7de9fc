//! A tenant's access request configuration (the contract's `AccessRequestConfig`, served as
//! `/access-request-config/v1` and `/v2`), its validation, and the rules it adds to a
//! submission and to a denial.
//!
//! # One model, two views
//!
//! [`AccessRequestConfig`] holds every field of both versions. v2 drops two v1 fields and adds
//! two; the rest is the same field for field:
//!
//! | field | v1 | v2 | default |
//! |---|---|---|---|
//! | `approvalsMustBeExternal` | yes | yes | false |
//! | `autoApprovalEnabled` | yes | no | false |
//! | `reauthorizationEnabled` | yes | yes | false |
//! | `requestOnBehalfOfConfig` (4 flags) | yes | yes | false, false, true, false |
//! | `approvalReminderAndEscalationConfig` | yes | no | absent |
//! | `entitlementRequestConfig` | yes | yes | no schemes, every flag false, no max, no form |
//! | `govGroupVisibilityEnabled` | no | yes | false |
//! | `machineIdentityAccessRequestEnabled` | no | yes | true |
//!
//! A PUT of one version replaces the fields that version has and keeps the stored values of the
//! fields only the other version has ([`AccessRequestConfig::with`]), so a v1 client cannot
//! silently reset a v2-only field and the reverse. A GET answers the stored config, or [`AccessRequestConfig::default`] (the
//! contract's defaults) before the first PUT.
//!
//! # What is enforced
//!
//! [`AccessRequestConfig::check_item`] applies to each item of a submission:
//!
//! - `approvalsMustBeExternal`: "blocks Request Center access requests and returns an error for
//!   any user who isn't an org admin": a non-admin's submission is refused.
//! - `requestOnBehalfOfConfig`, for GRANT_ACCESS: an item for someone other than the requester
//!   needs an admin or `allowRequestOnBehalfOfAnyoneByAnyone`. jitflow knows no managers, so
//!   `allowRequestOnBehalfOfEmployeeByManager` cannot establish that the requester manages the
//!   identity and allows nothing (fail closed). REVOKE_ACCESS is never a self request; its
//!   manager rule is not part of this config and stays as it was.
//! - `entitlementRequestConfig.accessRequestConfig`, for GRANT_ACCESS items of an
//!   ENTITLEMENT (the config is the entitlement request config; roles and access profiles have
//!   their own in the vendor's product): `requestCommentRequired` (a non-blank comment),
//!   `requireEndDate` (a `removeDate`), `maxPermittedAccessDuration` (a `removeDate` at most that
//!   long after the access starts: `startDate` if given, else the time of the check; a request
//!   without a `removeDate` would be unbounded, so it is refused too).
//!
//! [`AccessRequestConfig::check_denial`] applies `denialCommentRequired` to the rejection of an
//! entitlement item's approval.
//!
//! Stored and returned, with no effect on jitflow, because jitflow has nothing they act on:
//! `autoApprovalEnabled`, `approvalReminderAndEscalationConfig` and the `approvalSchemes` (the
//! contract moved them to the approval configuration; jitflow's approval step is the embedder's
//! `Config::approvers`), `reauthorizationEnabled` and `reauthorizationRequired` (no
//! reauthorization step), `formDefinitionId` (no forms), `govGroupVisibilityEnabled` (no
//! governance groups), and the machine identity flags (jitflow does not tell machine identities
//! from people, and does not support `MODIFY_ACCESS`).
//!
//! # Limits
//!
//! [`MAX_APPROVAL_SCHEMES`] schemes per list, ids of at most [`MAX_CONFIG_ID_LEN`] bytes,
//! reminder days up to [`MAX_REMINDER_DAYS`], `maxReminders` up to [`MAX_REMINDERS`] (the
//! contract's), and a maximum access duration of at most ten years in any unit
//! ([`TimeUnit::max_value`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::connection::check_text;
use crate::id::IdentityId;
use crate::lifecycle::Actor;
use crate::request::submit::{ItemSpec, ObjectKind, RequestType};
use crate::time::Timestamp;

/// The most approval schemes in one list (jitflow's bound; the contract sets none).
pub const MAX_APPROVAL_SCHEMES: usize = 10;
/// The longest `approverId` or `formDefinitionId`, in bytes.
pub const MAX_CONFIG_ID_LEN: usize = 128;
/// The most reminder notifications (the contract's `maxReminders` maximum).
pub const MAX_REMINDERS: u32 = 20;
/// The most days in `daysUntilEscalation` and `daysBetweenReminders` (jitflow's bound).
pub const MAX_REMINDER_DAYS: u32 = 365;

/// A tenant's access request configuration: every field of v1 and v2 (see the module docs for
/// the mapping). Persisted: never reorder fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequestConfig {
    /// `approvalsMustBeExternal`.
    pub approvals_must_be_external: bool,
    /// `autoApprovalEnabled` (v1 only).
    pub auto_approval_enabled: bool,
    /// `reauthorizationEnabled`.
    pub reauthorization_enabled: bool,
    /// `requestOnBehalfOfConfig`.
    pub on_behalf_of: OnBehalfOf,
    /// `approvalReminderAndEscalationConfig` (v1 only; `None` when never set or set to null).
    pub reminders: Option<Reminders>,
    /// `entitlementRequestConfig`.
    pub entitlement: EntitlementRequest,
    /// `govGroupVisibilityEnabled` (v2 only).
    pub gov_group_visibility_enabled: bool,
    /// `machineIdentityAccessRequestEnabled` (v2 only).
    pub machine_identity_access_request_enabled: bool,
}

impl Default for AccessRequestConfig {
    /// The contract's defaults: every flag false but `machineIdentityAccessRequestEnabled` and
    /// `allowRequestOnBehalfOfForMachineIdentity`, no schemes, no reminder config, no maximum.
    fn default() -> AccessRequestConfig {
        AccessRequestConfig {
            approvals_must_be_external: false,
            auto_approval_enabled: false,
            reauthorization_enabled: false,
            on_behalf_of: OnBehalfOf::default(),
            reminders: None,
            entitlement: EntitlementRequest::default(),
            gov_group_visibility_enabled: false,
            machine_identity_access_request_enabled: true,
        }
    }
}

/// `requestOnBehalfOfConfig` (the same in v1 and v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnBehalfOf {
    /// `allowRequestOnBehalfOfAnyoneByAnyone`.
    pub anyone_by_anyone: bool,
    /// `allowRequestOnBehalfOfEmployeeByManager` (allows nothing: jitflow knows no managers).
    pub employee_by_manager: bool,
    /// `allowRequestOnBehalfOfForMachineIdentity` (default true; no effect).
    pub for_machine_identity: bool,
    /// `allowRequestForMachineByOwner` (no effect).
    pub machine_by_owner: bool,
}

impl Default for OnBehalfOf {
    fn default() -> OnBehalfOf {
        OnBehalfOf {
            anyone_by_anyone: false,
            employee_by_manager: false,
            for_machine_identity: true,
            machine_by_owner: false,
        }
    }
}

/// `approvalReminderAndEscalationConfig` (v1 only). Every field is nullable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminders {
    /// `daysUntilEscalation`, 0 to [`MAX_REMINDER_DAYS`].
    pub days_until_escalation: Option<u32>,
    /// `daysBetweenReminders`, 0 to [`MAX_REMINDER_DAYS`].
    pub days_between_reminders: Option<u32>,
    /// `maxReminders`, 0 to [`MAX_REMINDERS`].
    pub max_reminders: Option<u32>,
    /// `fallbackApproverRef.id` (its `type`, `name` and `email` are read-only in the contract).
    pub fallback_approver: Option<IdentityId>,
}

/// `entitlementRequestConfig` (the same in v1 and v2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitlementRequest {
    /// `accessRequestConfig`.
    pub access: EntitlementAccess,
    /// `revocationRequestConfig.approvalSchemes`.
    pub revocation_schemes: Vec<ApprovalScheme>,
}

/// `entitlementRequestConfig.accessRequestConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitlementAccess {
    /// `approvalSchemes`, in order (empty: no approval required).
    pub approval_schemes: Vec<ApprovalScheme>,
    /// `requestCommentRequired`.
    pub request_comment_required: bool,
    /// `denialCommentRequired`.
    pub denial_comment_required: bool,
    /// `reauthorizationRequired`.
    pub reauthorization_required: bool,
    /// `requireEndDate`.
    pub require_end_date: bool,
    /// `maxPermittedAccessDuration` (`None`: null, no maximum).
    pub max_duration: Option<AccessDuration>,
    /// `formDefinitionId`.
    pub form_definition_id: Option<String>,
}

/// One approval step of an entitlement request (the contract's `EntitlementApprovalScheme`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalScheme {
    /// `approverType`.
    pub approver_type: ApproverType,
    /// `approverId`: required for GOVERNANCE_GROUP and WORKFLOW, absent otherwise.
    pub approver_id: Option<String>,
}

/// The contract's `approverType`. Persisted: never reorder variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApproverType {
    /// `ENTITLEMENT_OWNER`.
    EntitlementOwner,
    /// `SOURCE_OWNER`.
    SourceOwner,
    /// `MANAGER`.
    Manager,
    /// `GOVERNANCE_GROUP` (names its group in `approverId`).
    GovernanceGroup,
    /// `WORKFLOW` (names its workflow in `approverId`; exclusive of every other step).
    Workflow,
}

impl ApproverType {
    const ALL: [ApproverType; 5] = [
        ApproverType::EntitlementOwner,
        ApproverType::SourceOwner,
        ApproverType::Manager,
        ApproverType::GovernanceGroup,
        ApproverType::Workflow,
    ];

    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ApproverType::EntitlementOwner => "ENTITLEMENT_OWNER",
            ApproverType::SourceOwner => "SOURCE_OWNER",
            ApproverType::Manager => "MANAGER",
            ApproverType::GovernanceGroup => "GOVERNANCE_GROUP",
            ApproverType::Workflow => "WORKFLOW",
        }
    }

    /// Parses the contract's spelling (exact).
    pub fn parse(text: &str) -> Option<ApproverType> {
        ApproverType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// Whether the step names its approver in `approverId`.
    pub const fn needs_id(self) -> bool {
        matches!(self, ApproverType::GovernanceGroup | ApproverType::Workflow)
    }
}

/// `maxPermittedAccessDuration`: a number of units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessDuration {
    /// `value`, 1 to [`TimeUnit::max_value`].
    pub value: u32,
    /// `timeUnit`.
    pub unit: TimeUnit,
}

impl fmt::Display for AccessDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.value, self.unit.as_str())
    }
}

impl AccessDuration {
    /// The instant this long after `start`: hours, days and weeks are fixed lengths; months are
    /// calendar months (the day of the month is kept, or clamped to the last day of a shorter
    /// month: January 31 plus one month is the last day of February). Saturates at
    /// [`Timestamp::MAX`].
    pub fn after(self, start: Timestamp) -> Timestamp {
        const HOUR: u64 = 3_600_000;
        let fixed = |hours: u64| {
            let ms = u64::from(self.value).saturating_mul(hours * HOUR);
            start.saturating_add(std::time::Duration::from_millis(ms))
        };
        match self.unit {
            TimeUnit::Hours => fixed(1),
            TimeUnit::Days => fixed(24),
            TimeUnit::Weeks => fixed(24 * 7),
            TimeUnit::Months => start.plus_months(self.value),
        }
    }
}

/// `timeUnit` of `maxPermittedAccessDuration`. Persisted: never reorder variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimeUnit {
    /// `HOURS`.
    Hours,
    /// `DAYS`.
    Days,
    /// `WEEKS`.
    Weeks,
    /// `MONTHS`.
    Months,
}

impl TimeUnit {
    const ALL: [TimeUnit; 4] = [
        TimeUnit::Hours,
        TimeUnit::Days,
        TimeUnit::Weeks,
        TimeUnit::Months,
    ];

    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            TimeUnit::Hours => "HOURS",
            TimeUnit::Days => "DAYS",
            TimeUnit::Weeks => "WEEKS",
            TimeUnit::Months => "MONTHS",
        }
    }

    /// Parses the contract's spelling (exact).
    pub fn parse(text: &str) -> Option<TimeUnit> {
        TimeUnit::ALL.into_iter().find(|u| u.as_str() == text)
    }

    /// The largest `value` accepted in this unit: ten years (jitflow's bound).
    pub const fn max_value(self) -> u32 {
        match self {
            TimeUnit::Hours => 87_600,
            TimeUnit::Days => 3_650,
            TimeUnit::Weeks => 521,
            TimeUnit::Months => 120,
        }
    }
}

/// Why a configuration was refused. Nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An approval scheme list longer than [`MAX_APPROVAL_SCHEMES`].
    #[error("{field} holds {count} approval schemes; at most {MAX_APPROVAL_SCHEMES} are allowed")]
    TooManySchemes {
        /// Which list.
        field: &'static str,
        /// How many.
        count: usize,
    },
    /// A GOVERNANCE_GROUP or WORKFLOW step without `approverId`.
    #[error("{field}[{index}]: approverId is required when approverType is {approver_type}")]
    ApproverIdRequired {
        /// Which list.
        field: &'static str,
        /// The step's position.
        index: usize,
        /// Its type's spelling.
        approver_type: &'static str,
    },
    /// An `approverId` on a step of another type.
    #[error(
        "{field}[{index}]: approverId is used only when approverType is GOVERNANCE_GROUP or WORKFLOW, not {approver_type}"
    )]
    ApproverIdNotAllowed {
        /// Which list.
        field: &'static str,
        /// The step's position.
        index: usize,
        /// Its type's spelling.
        approver_type: &'static str,
    },
    /// A WORKFLOW step next to other steps.
    #[error("{field}: a WORKFLOW approval is exclusive of other approval types")]
    WorkflowNotExclusive {
        /// Which list.
        field: &'static str,
    },
    /// A `maxPermittedAccessDuration.value` outside 1 to the unit's maximum.
    #[error(
        "entitlementRequestConfig.accessRequestConfig.maxPermittedAccessDuration.value {value} is out of range: 1 to {max} {unit}"
    )]
    Duration {
        /// The value sent.
        value: i64,
        /// The unit's spelling.
        unit: &'static str,
        /// The largest value in that unit.
        max: u32,
    },
    /// A reminder setting out of range.
    #[error("approvalReminderAndEscalationConfig.{field} {value} is out of range: 0 to {max}")]
    Reminder {
        /// The field.
        field: &'static str,
        /// The value sent.
        value: i64,
        /// The bound.
        max: u32,
    },
    /// An id that is empty, too long or holds a control character.
    #[error("{field}: {reason}")]
    InvalidText {
        /// Where.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

const ACCESS_SCHEMES: &str = "entitlementRequestConfig.accessRequestConfig.approvalSchemes";
const REVOCATION_SCHEMES: &str = "entitlementRequestConfig.revocationRequestConfig.approvalSchemes";

/// Which fields of a config a PUT replaces (see [`AccessRequestConfig::with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every field: the body is the whole new config.
    All,
    /// The fields of the contract's v1 schema; the v2-only fields are kept.
    V1,
    /// The fields of the contract's v2 schema; the v1-only fields are kept.
    V2,
}

impl AccessRequestConfig {
    /// Checks every rule: scheme lists bounded, `approverId` exactly where the type needs one, a
    /// WORKFLOW step alone, ids bounded, durations and reminders in range. The first rule broken
    /// is returned.
    pub fn validate(&self) -> Result<(), Error> {
        let access = &self.entitlement.access;
        check_schemes(ACCESS_SCHEMES, &access.approval_schemes)?;
        check_schemes(REVOCATION_SCHEMES, &self.entitlement.revocation_schemes)?;
        if let Some(d) = access.max_duration
            && !(1..=d.unit.max_value()).contains(&d.value)
        {
            return Err(Error::Duration {
                value: i64::from(d.value),
                unit: d.unit.as_str(),
                max: d.unit.max_value(),
            });
        }
        if let Some(form) = &access.form_definition_id {
            check_id(
                "entitlementRequestConfig.accessRequestConfig.formDefinitionId",
                form,
            )?;
        }
        if let Some(r) = &self.reminders {
            for (field, value, max) in [
                (
                    "daysUntilEscalation",
                    r.days_until_escalation,
                    MAX_REMINDER_DAYS,
                ),
                (
                    "daysBetweenReminders",
                    r.days_between_reminders,
                    MAX_REMINDER_DAYS,
                ),
                ("maxReminders", r.max_reminders, MAX_REMINDERS),
            ] {
                if let Some(value) = value.filter(|v| *v > max) {
                    return Err(Error::Reminder {
                        field,
                        value: i64::from(value),
                        max,
                    });
                }
            }
        }
        Ok(())
    }

    /// This config with the fields of `body` that `view` covers replaced, the others kept: the
    /// one merge of a PUT, applied by the engine's writer to the config as committed, so that
    /// two PUTs of different versions racing each other do not drop each other's fields.
    /// `body` holds what the PUT said, with the contract's defaults for what it left out. A v1
    /// body keeps the v2-only fields here (`govGroupVisibilityEnabled`,
    /// `machineIdentityAccessRequestEnabled`); a v2 body keeps the v1-only ones
    /// (`autoApprovalEnabled`, `approvalReminderAndEscalationConfig`).
    pub fn with(&self, view: View, body: &AccessRequestConfig) -> AccessRequestConfig {
        match view {
            View::All => body.clone(),
            View::V1 => AccessRequestConfig {
                gov_group_visibility_enabled: self.gov_group_visibility_enabled,
                machine_identity_access_request_enabled: self
                    .machine_identity_access_request_enabled,
                ..body.clone()
            },
            View::V2 => AccessRequestConfig {
                auto_approval_enabled: self.auto_approval_enabled,
                reminders: self.reminders.clone(),
                ..body.clone()
            },
        }
    }

    /// Checks one item of a submission against the rules this config adds (see the module
    /// docs). `path` names the item in messages; `admin` is whether the requester is an org
    /// admin; `now` is the time of the check.
    pub fn check_item(
        &self,
        path: &str,
        spec: &ItemSpec,
        admin: bool,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        if self.approvals_must_be_external && !admin {
            return Err(Refusal::ApprovalsExternal);
        }
        if spec.request_type != RequestType::Grant {
            return Ok(());
        }
        if spec.requested_for != spec.requester && !admin && !self.on_behalf_of.anyone_by_anyone {
            return Err(Refusal::OnBehalfOf {
                requester: spec.requester.clone(),
                identity: spec.requested_for.clone(),
            });
        }
        if spec.object.kind != ObjectKind::Entitlement {
            return Ok(());
        }
        let access = &self.entitlement.access;
        let path = path.to_owned();
        if access.request_comment_required
            && spec.comment.as_deref().is_none_or(|c| c.trim().is_empty())
        {
            return Err(Refusal::CommentRequired { path });
        }
        match (spec.remove_date, access.max_duration) {
            (None, _) if access.require_end_date => Err(Refusal::EndDateRequired {
                path,
                rule: "requireEndDate",
            }),
            (None, Some(_)) => Err(Refusal::EndDateRequired {
                path,
                rule: "maxPermittedAccessDuration",
            }),
            (Some(remove), Some(max)) => {
                let start = spec.start_date.unwrap_or(now);
                let latest = max.after(start);
                if remove > latest {
                    Err(Refusal::TooLong {
                        path,
                        remove,
                        latest,
                        max,
                    })
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Checks the rejection of an item's approval: `denialCommentRequired` asks for a
    /// non-blank comment when the item is an entitlement.
    pub fn check_denial(&self, spec: &ItemSpec, comment: Option<&str>) -> Result<(), Refusal> {
        if spec.object.kind == ObjectKind::Entitlement
            && self.entitlement.access.denial_comment_required
            && comment.is_none_or(|c| c.trim().is_empty())
        {
            return Err(Refusal::DenialCommentRequired);
        }
        Ok(())
    }
}

fn check_id(field: &str, value: &str) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidText {
        field: field.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("is empty".into()));
    }
    check_text("the id", value, MAX_CONFIG_ID_LEN).map_err(invalid)
}

fn check_schemes(field: &'static str, schemes: &[ApprovalScheme]) -> Result<(), Error> {
    if schemes.len() > MAX_APPROVAL_SCHEMES {
        return Err(Error::TooManySchemes {
            field,
            count: schemes.len(),
        });
    }
    for (index, s) in schemes.iter().enumerate() {
        let approver_type = s.approver_type.as_str();
        match (&s.approver_id, s.approver_type.needs_id()) {
            (None, true) => {
                return Err(Error::ApproverIdRequired {
                    field,
                    index,
                    approver_type,
                });
            }
            (Some(_), false) => {
                return Err(Error::ApproverIdNotAllowed {
                    field,
                    index,
                    approver_type,
                });
            }
            (Some(id), true) => check_id(&format!("{field}[{index}].approverId"), id)?,
            (None, false) => {}
        }
    }
    if schemes.len() > 1
        && schemes
            .iter()
            .any(|s| s.approver_type == ApproverType::Workflow)
    {
        return Err(Error::WorkflowNotExclusive { field });
    }
    Ok(())
}

/// A submission or denial the tenant's access request config refuses (the HTTP shim answers
/// 400). Each message names the config field behind the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// `approvalsMustBeExternal` is set and the requester is not an org admin.
    #[error(
        "approvalsMustBeExternal is set in the access request config: access requests are processed by an external system, and only an org admin may submit one"
    )]
    ApprovalsExternal,
    /// A GRANT_ACCESS item for another identity by a non-admin, while
    /// `allowRequestOnBehalfOfAnyoneByAnyone` is false.
    #[error(
        "{requester} may not request access for {identity}: requestOnBehalfOfConfig.allowRequestOnBehalfOfAnyoneByAnyone is false in the access request config (jitflow knows no managers, so allowRequestOnBehalfOfEmployeeByManager allows nothing)"
    )]
    OnBehalfOf {
        /// Who submitted.
        requester: IdentityId,
        /// The identity the item is for.
        identity: IdentityId,
    },
    /// An entitlement item without a comment while `requestCommentRequired` is set.
    #[error(
        "{path}: a comment is required (entitlementRequestConfig.accessRequestConfig.requestCommentRequired is set in the access request config)"
    )]
    CommentRequired {
        /// Where.
        path: String,
    },
    /// An entitlement item without `removeDate` while `requireEndDate` or
    /// `maxPermittedAccessDuration` is set.
    #[error(
        "{path}: removeDate is required (entitlementRequestConfig.accessRequestConfig.{rule} is set in the access request config)"
    )]
    EndDateRequired {
        /// Where.
        path: String,
        /// `requireEndDate` or `maxPermittedAccessDuration`.
        rule: &'static str,
    },
    /// An entitlement item whose `removeDate` is later than `maxPermittedAccessDuration` allows.
    #[error(
        "{path}: removeDate {remove} is later than {latest}, the end of the {max} allowed from the start of the access (entitlementRequestConfig.accessRequestConfig.maxPermittedAccessDuration in the access request config)"
    )]
    TooLong {
        /// Where.
        path: String,
        /// The date asked for.
        remove: Timestamp,
        /// The latest date allowed.
        latest: Timestamp,
        /// The maximum.
        max: AccessDuration,
    },
    /// A rejection of an entitlement item without a comment while `denialCommentRequired` is
    /// set.
    #[error(
        "a comment is required to reject this approval (entitlementRequestConfig.accessRequestConfig.denialCommentRequired is set in the access request config)"
    )]
    DenialCommentRequired,
}

/// A committed change of a tenant's access request config: who, when, and the whole old and new
/// values, for the audit. Persisted: never reorder fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened.
    pub at: Timestamp,
    /// Who changed it.
    pub actor: Actor,
    /// The config before (`None` when it is first stored: the defaults applied).
    pub previous: Option<AccessRequestConfig>,
    /// The config after.
    pub config: AccessRequestConfig,
}

/// Decides a PUT: validates the whole new config and makes the event that stores it. `current`
/// is the stored config (`None` before the first PUT).
pub fn decide(
    current: Option<&AccessRequestConfig>,
    new: AccessRequestConfig,
    now: Timestamp,
    actor: &Actor,
) -> Result<Event, Error> {
    new.validate()?;
    Ok(Event {
        at: now,
        actor: actor.clone(),
        previous: current.cloned(),
        config: new,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn months_are_calendar_months_clamped_to_the_month_end() {
        let months = |start: &str, n| {
            AccessDuration {
                value: n,
                unit: TimeUnit::Months,
            }
            .after(at(start))
        };
        assert_eq!(
            months("2026-01-31T10:00:00Z", 1),
            at("2026-02-28T10:00:00Z")
        );
        assert_eq!(
            months("2028-01-31T10:00:00Z", 1),
            at("2028-02-29T10:00:00Z")
        );
        assert_eq!(
            months("2026-11-15T00:00:00Z", 3),
            at("2027-02-15T00:00:00Z")
        );
        assert_eq!(
            months("2026-05-01T00:00:00Z", 120),
            at("2036-05-01T00:00:00Z")
        );
        assert_eq!(months("9999-12-01T00:00:00Z", 2), Timestamp::MAX);
        let weeks = AccessDuration {
            value: 2,
            unit: TimeUnit::Weeks,
        };
        assert_eq!(
            weeks.after(at("2026-01-01T00:00:00Z")),
            at("2026-01-15T00:00:00Z")
        );
    }
}
