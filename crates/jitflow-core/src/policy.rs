//! The tenant's JIT activation policy (the contract's `JITActivationConfigResponse`) and the
//! replace-only patch that changes it (`PATCH /jit-activation-config/v1/{configType}`).
//!
//! A [`Policy`] names the entitlements that are governed by JIT activation, the longest period
//! an activation may be granted or extended for, the periods used when a request names none,
//! who is told about activation events, and whether new assignments of governed entitlements
//! become JIT.
//!
//! # Limits
//!
//! Every bound is a constant so that the HTTP layer can document it and tests can reach it:
//! [`MAX_PERIOD_MINS`] for each `*Mins` field (which must also be at least 1),
//! [`MAX_ENTITLEMENTS`], [`MAX_RECIPIENTS`], [`MAX_TEMPLATE_LEN`], [`MAX_EMAIL_LEN`] and
//! [`MAX_EMAIL_LOCAL_LEN`] for the stored values, and [`MAX_PATCH_OPS`] for one request. A
//! default period may not exceed its maximum when both are set. [`Policy::validate`] checks all
//! of them; a policy that fails it is never produced by [`Policy::patched`].
//!
//! # Patch semantics
//!
//! A patch is a non-empty list of [`PatchOp`]s, each replacing one of the ten fields named by
//! a [`PatchPath`]. [`Policy::patched`] is all-or-nothing:
//!
//! - each operation is checked on its own (op name, path, value type, value range) and applied,
//!   in order, to a copy, so a later operation on the same path wins;
//! - only then is the result validated as a whole, because rules that tie two fields together
//!   (default <= max) can only be judged once every operation has been applied: an intermediate
//!   state may break them;
//! - on success the copy comes back with `version` one higher; on any error the caller still
//!   holds the untouched original, so nothing needs rolling back.
//!
//! Errors that belong to one operation carry its 0-based `index` in the request array, so that an
//! API can tell the client which operation to fix.
//!
//! [`Policy::diff`] lists the fields two policies disagree on, for the audit event of a change.
//!
//! ```
//! use jitflow_core::policy::{Error, PatchOp, PatchPath, PatchValue, Policy};
//! use jitflow_core::time::Minutes;
//!
//! let policy = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".to_owned());
//! let patched = policy.patched(&[
//!     PatchOp {
//!         op: None,
//!         path: "/maxActivationPeriodMins".to_owned(),
//!         value: PatchValue::Int(120),
//!     },
//!     PatchOp {
//!         op: Some("replace".to_owned()),
//!         path: "/defaultMaxActivationPeriodMins".to_owned(),
//!         value: PatchValue::Int(60),
//!     },
//! ])?;
//! assert_eq!(patched.max_activation_period, Some(Minutes(120)));
//! assert_eq!(patched.default_activation_period, Some(Minutes(60)));
//! assert_eq!(patched.version, policy.version + 1);
//!
//! // A default above the maximum is refused as a whole; `patched` is left as it was.
//! let refused = patched.patched(&[PatchOp {
//!     op: None,
//!     path: "/defaultMaxActivationPeriodMins".to_owned(),
//!     value: PatchValue::Int(180),
//! }]);
//! assert!(matches!(refused, Err(Error::DefaultExceedsMax { default: 180, max: 120, .. })));
//! assert_eq!(patched.default_activation_period, Some(Minutes(60)));
//!
//! // The audit event of the change.
//! let changes = policy.diff(&patched);
//! assert_eq!(changes.len(), 2);
//! assert_eq!(changes[0].path, PatchPath::MaxActivationPeriodMins);
//! assert_eq!(changes[0].old, PatchValue::Null);
//! assert_eq!(changes[0].new, PatchValue::Int(120));
//! # Ok::<(), Error>(())
//! ```

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::EntitlementId;
use crate::time::Minutes;

/// The longest period any `*Mins` field may hold: one year (365 days) of minutes.
///
/// A standing grant disguised as a JIT one is what the policy exists to prevent, so the bound is
/// well below what `int32` minutes could express.
pub const MAX_PERIOD_MINS: u32 = 525_600;

/// The most entitlements one policy may govern.
///
/// Bounds the stored document and the cost of [`Policy::governs`], a linear scan.
pub const MAX_ENTITLEMENTS: usize = 1000;

/// The most notification recipients one policy may name.
///
/// Mail to more people than this belongs to a distribution list, named as one address.
pub const MAX_RECIPIENTS: usize = 100;

/// The most operations one patch request may hold.
///
/// The contract's eight paths twice over: enough for any honest request, small enough that a request
/// cannot make the core clone and scan a policy thousands of times.
pub const MAX_PATCH_OPS: usize = 16;

/// The longest notification template name, in bytes.
pub const MAX_TEMPLATE_LEN: usize = 128;

/// The longest notification recipient address, in bytes (the SMTP path limit minus `<>`).
pub const MAX_EMAIL_LEN: usize = 254;

/// The longest part of a recipient address before the `@`, in bytes (the SMTP limit).
pub const MAX_EMAIL_LOCAL_LEN: usize = 64;

/// The longest piece of client input quoted back in an error, in characters, so that a huge
/// value cannot blow up an error response or a log line.
const QUOTE_LEN: usize = 64;

/// The allowed paths, as a sentence fragment for [`Error::UnknownPath`].
const PATH_LIST: &str = "`/entitlementIds`, `/maxActivationPeriodMins`, \
`/maxActivationPeriodExtensionMins`, `/defaultMaxActivationPeriodMins`, \
`/defaultMaxActivationPeriodExtensionMins`, `/notificationRecipients`, \
`/notificationTemplate`, `/applyToFutureAssignments`, `/jitflowExpiryWarningMins` or \
`/jitflowOnMissingAccess`";

fn quote(input: &str) -> String {
    input.chars().take(QUOTE_LEN).collect()
}

/// Why a policy is invalid or a patch was refused.
///
/// The messages are sentences meant for the client that sent the patch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The patch holds no operation: the contract asks for a non-empty array.
    #[error("the patch is empty: send at least one operation")]
    EmptyPatch,
    /// The patch holds more than [`MAX_PATCH_OPS`] operations.
    #[error("the patch has {len} operations, more than the {max} allowed")]
    TooManyOps {
        /// How many operations the patch holds.
        len: usize,
        /// The bound, [`MAX_PATCH_OPS`].
        max: usize,
    },
    /// An operation's `op` is set to something other than `replace` (compared case-sensitively).
    #[error("operation {index}: op `{op}` is not supported; the only supported op is `replace`")]
    UnsupportedOp {
        /// The operation's position in the patch, from 0.
        index: usize,
        /// The op given, cut to 64 characters.
        op: String,
    },
    /// An operation's `path` is not one of the ten [`PatchPath`]s.
    #[error("operation {index}: path `{path}` is not one of {PATH_LIST}")]
    UnknownPath {
        /// The operation's position in the patch, from 0.
        index: usize,
        /// The path given, cut to 64 characters.
        path: String,
    },
    /// An operation's value has the wrong JSON type for its path (including `null` for a path
    /// that cannot be cleared, and any value the HTTP layer passed as [`PatchValue::Other`]).
    #[error("operation {index}: `{path}` takes {expected}, but the value given is of type {found}")]
    WrongValueType {
        /// The operation's position in the patch, from 0.
        index: usize,
        /// The path of the operation.
        path: PatchPath,
        /// What the path takes, e.g. `an integer or null`.
        expected: &'static str,
        /// The JSON type of the value given, e.g. `string` or `object`.
        found: String,
    },
    /// An operation's value has the right type but is out of range (a `*Mins` value below 1 or
    /// above [`MAX_PERIOD_MINS`]) or malformed (an entitlement id that does not parse).
    #[error("operation {index}: invalid value for `{path}`: {reason}")]
    InvalidValue {
        /// The operation's position in the patch, from 0.
        index: usize,
        /// The path of the operation.
        path: PatchPath,
        /// What is wrong with the value.
        reason: String,
    },
    /// The policy's `id` is not a canonical (lowercase, hyphenated) UUID.
    #[error("policy id `{value}` is not a lowercase hyphenated UUID")]
    BadId {
        /// The id, cut to 64 characters.
        value: String,
    },
    /// A stored `*Mins` field is below 1 or above [`MAX_PERIOD_MINS`]; a patch reports this as
    /// [`Error::InvalidValue`] instead, so this comes back only for a policy built or stored
    /// by other means.
    #[error("`{field}` is {value} minutes; it must be between 1 and {max}")]
    PeriodOutOfRange {
        /// The field.
        field: PatchPath,
        /// Its value in minutes.
        value: u32,
        /// The bound, [`MAX_PERIOD_MINS`].
        max: u32,
    },
    /// A default period is longer than its maximum, both being set.
    #[error(
        "`{field}` is {default} minutes, longer than `{max_field}` ({max} minutes)",
        max_field = max_of(*.field)
    )]
    DefaultExceedsMax {
        /// The default field: `/defaultMaxActivationPeriodMins` or
        /// `/defaultMaxActivationPeriodExtensionMins`.
        field: PatchPath,
        /// The default, in minutes.
        default: u32,
        /// The maximum it exceeds, in minutes.
        max: u32,
    },
    /// A list holds more entries than its bound ([`MAX_ENTITLEMENTS`] or [`MAX_RECIPIENTS`]).
    #[error("`{field}` has {len} entries, more than the {max} allowed")]
    TooMany {
        /// The list: `/entitlementIds` or `/notificationRecipients`.
        field: PatchPath,
        /// How many entries it holds.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A list names one value twice (recipients are compared ignoring ASCII case).
    #[error("`{field}` lists `{value}` more than once")]
    Duplicate {
        /// The list: `/entitlementIds` or `/notificationRecipients`.
        field: PatchPath,
        /// The second occurrence, as written, cut to 64 characters.
        value: String,
    },
    /// A stored entitlement id is malformed; a patch reports this as [`Error::InvalidValue`]
    /// instead, so this comes back only for a policy built or stored by other means.
    #[error("`{value}` in `/entitlementIds` is not a valid entitlement id: {reason}")]
    BadEntitlementId {
        /// The id, cut to 64 characters.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A notification recipient is not a plausible email address.
    #[error("`{value}` in `/notificationRecipients` is not a valid email address: {reason}")]
    BadEmail {
        /// The address, cut to 64 characters.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The notification template is set but empty, longer than [`MAX_TEMPLATE_LEN`] bytes, or
    /// holds a control character or whitespace other than a space.
    #[error("`/notificationTemplate` is not a valid template name: {reason}")]
    BadTemplate {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The policy's version is `u64::MAX`, so a change could not be told apart from the
    /// current version; it cannot happen by counting, only through a corrupted store.
    #[error("the policy version cannot be incremented any further")]
    VersionExhausted,
}

/// The maximum field a default field is bounded by, for [`Error::DefaultExceedsMax`].
fn max_of(default: PatchPath) -> &'static str {
    match default {
        PatchPath::DefaultMaxActivationPeriodExtensionMins => {
            PatchPath::MaxActivationPeriodExtensionMins.as_str()
        }
        _ => PatchPath::MaxActivationPeriodMins.as_str(),
    }
}

/// One of the ten fields a patch may replace, named by its contract path (the contract's
/// eight, and jitflow's extensions `/jitflowExpiryWarningMins` and `/jitflowOnMissingAccess`).
///
/// Serialised as the path itself (`"/maxActivationPeriodMins"`), as clients know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatchPath {
    /// `/entitlementIds`: [`Policy::entitlement_ids`].
    #[serde(rename = "/entitlementIds")]
    EntitlementIds,
    /// `/maxActivationPeriodMins`: [`Policy::max_activation_period`].
    #[serde(rename = "/maxActivationPeriodMins")]
    MaxActivationPeriodMins,
    /// `/maxActivationPeriodExtensionMins`: [`Policy::max_extension`].
    #[serde(rename = "/maxActivationPeriodExtensionMins")]
    MaxActivationPeriodExtensionMins,
    /// `/defaultMaxActivationPeriodMins`: [`Policy::default_activation_period`].
    #[serde(rename = "/defaultMaxActivationPeriodMins")]
    DefaultMaxActivationPeriodMins,
    /// `/defaultMaxActivationPeriodExtensionMins`: [`Policy::default_extension`].
    #[serde(rename = "/defaultMaxActivationPeriodExtensionMins")]
    DefaultMaxActivationPeriodExtensionMins,
    /// `/notificationRecipients`: [`Policy::notification_recipients`].
    #[serde(rename = "/notificationRecipients")]
    NotificationRecipients,
    /// `/notificationTemplate`: [`Policy::notification_template`].
    #[serde(rename = "/notificationTemplate")]
    NotificationTemplate,
    /// `/applyToFutureAssignments`: [`Policy::apply_to_future_assignments`].
    #[serde(rename = "/applyToFutureAssignments")]
    ApplyToFutureAssignments,
    /// `/jitflowExpiryWarningMins` (a jitflow extension): [`Policy::expiry_warning`].
    #[serde(rename = "/jitflowExpiryWarningMins")]
    ExpiryWarningMins,
    /// `/jitflowOnMissingAccess` (a jitflow extension): [`Policy::on_missing_access`].
    #[serde(rename = "/jitflowOnMissingAccess")]
    OnMissingAccess,
}

impl PatchPath {
    /// Every path, in the contract's order (also the order of [`Policy::diff`]).
    pub const ALL: [PatchPath; 10] = [
        PatchPath::EntitlementIds,
        PatchPath::MaxActivationPeriodMins,
        PatchPath::MaxActivationPeriodExtensionMins,
        PatchPath::DefaultMaxActivationPeriodMins,
        PatchPath::DefaultMaxActivationPeriodExtensionMins,
        PatchPath::NotificationRecipients,
        PatchPath::NotificationTemplate,
        PatchPath::ApplyToFutureAssignments,
        PatchPath::ExpiryWarningMins,
        PatchPath::OnMissingAccess,
    ];

    /// The path with this exact spelling (case-sensitive, leading `/` required), if any.
    pub fn parse(path: &str) -> Option<PatchPath> {
        PatchPath::ALL.into_iter().find(|p| p.as_str() == path)
    }

    /// The contract's spelling, e.g. `/maxActivationPeriodMins`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PatchPath::EntitlementIds => "/entitlementIds",
            PatchPath::MaxActivationPeriodMins => "/maxActivationPeriodMins",
            PatchPath::MaxActivationPeriodExtensionMins => "/maxActivationPeriodExtensionMins",
            PatchPath::DefaultMaxActivationPeriodMins => "/defaultMaxActivationPeriodMins",
            PatchPath::DefaultMaxActivationPeriodExtensionMins => {
                "/defaultMaxActivationPeriodExtensionMins"
            }
            PatchPath::NotificationRecipients => "/notificationRecipients",
            PatchPath::NotificationTemplate => "/notificationTemplate",
            PatchPath::ApplyToFutureAssignments => "/applyToFutureAssignments",
            PatchPath::ExpiryWarningMins => "/jitflowExpiryWarningMins",
            PatchPath::OnMissingAccess => "/jitflowOnMissingAccess",
        }
    }

    /// What a value for this path must be, as a phrase for [`Error::WrongValueType`].
    pub const fn expected(self) -> &'static str {
        match self {
            PatchPath::EntitlementIds | PatchPath::NotificationRecipients => "an array of strings",
            PatchPath::MaxActivationPeriodMins
            | PatchPath::MaxActivationPeriodExtensionMins
            | PatchPath::DefaultMaxActivationPeriodMins
            | PatchPath::DefaultMaxActivationPeriodExtensionMins
            | PatchPath::ExpiryWarningMins => "an integer or null",
            PatchPath::NotificationTemplate => "a string or null",
            PatchPath::ApplyToFutureAssignments => "a boolean",
            PatchPath::OnMissingAccess => "a string",
        }
    }
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A patch operation's value, as the HTTP layer mapped it from JSON.
///
/// Also the old and new values of a [`FieldChange`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum PatchValue {
    /// JSON `null`: clears a nullable field.
    Null,
    /// A JSON boolean.
    Bool(bool),
    /// A JSON integer that fits `i64`.
    Int(i64),
    /// A JSON string.
    Text(String),
    /// A JSON array whose items are all strings (an empty array included).
    TextList(Vec<String>),
    /// Any other JSON value (a float, an object, a mixed array, an integer beyond `i64`), named
    /// by its JSON type, e.g. `number` or `object`. No path takes one, so it is always refused
    /// with [`Error::WrongValueType`]; it exists so that the refusal names the operation.
    ///
    /// Holds a `String` rather than a `&'static str` so that the type can be deserialised.
    Other(String),
}

impl PatchValue {
    /// The JSON type of the value, for error messages: `null`, `boolean`, `integer`, `string`,
    /// `array`, or the name an [`PatchValue::Other`] carries.
    pub fn type_name(&self) -> &str {
        match self {
            PatchValue::Null => "null",
            PatchValue::Bool(_) => "boolean",
            PatchValue::Int(_) => "integer",
            PatchValue::Text(_) => "string",
            PatchValue::TextList(_) => "array",
            PatchValue::Other(name) => name,
        }
    }
}

/// One operation of a patch request (the contract's `JITAccessOperationRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchOp {
    /// The operation; `None` (omitted in the request) means `replace`, the only one supported.
    pub op: Option<String>,
    /// The path to replace, as sent; checked by [`Policy::patched`].
    pub path: String,
    /// The new value.
    pub value: PatchValue,
}

/// One field that differs between two policies, for the audit event of a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field.
    pub path: PatchPath,
    /// Its value before the change.
    pub old: PatchValue,
    /// Its value after the change.
    pub new: PatchValue,
}

/// The JIT activation policy of one tenant.
///
/// The `Option<Minutes>` fields are the contract's nullable `*Mins` fields: `None` means unset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The persisted config id (the contract's `id`, a UUID), canonical lowercase hyphenated text.
    pub id: String,
    /// Entitlements governed by JIT activation (`entitlementIds`).
    pub entitlement_ids: Vec<EntitlementId>,
    /// Longest activation period one grant may ask for (`maxActivationPeriodMins`).
    pub max_activation_period: Option<Minutes>,
    /// Most an activation may be extended in total (`maxActivationPeriodExtensionMins`).
    pub max_extension: Option<Minutes>,
    /// Period used when an activate request names none (`defaultMaxActivationPeriodMins`).
    pub default_activation_period: Option<Minutes>,
    /// Extension used when an extend request names none (`defaultMaxActivationPeriodExtensionMins`).
    pub default_extension: Option<Minutes>,
    /// Email addresses told about activation events (`notificationRecipients`).
    pub notification_recipients: Vec<String>,
    /// Email template name (`notificationTemplate`).
    pub notification_template: Option<String>,
    /// Whether newly registered connections of governed entitlements become JIT
    /// (`applyToFutureAssignments`).
    pub apply_to_future_assignments: bool,
    /// Optimistic-concurrency version: 0 for a policy never stored, +1 on every change.
    pub version: u64,
    /// How long before an activation's expiry its expiring-soon warning is sent (a jitflow
    /// extension, `jitflowExpiryWarningMins`); `None`: the engine's `warning_lead`.
    ///
    /// Not part of the policy's serde form: the store encodes it as a trailing section of the
    /// policy record and of the policy event, written only when it is set, so the policies and
    /// events of tenants that never set it keep the bytes they had before it existed.
    #[serde(skip)]
    pub expiry_warning: Option<Minutes>,
    /// What the engine does when an inspection of the target finds access missing where an
    /// activation is ACTIVE (a jitflow extension, `jitflowOnMissingAccess`; issue 16's drift):
    /// report it only (the default), grant it again, or end the activation.
    ///
    /// Not part of the policy's serde form, like [`Policy::expiry_warning`]: the store encodes
    /// it in a trailing section written only when it is not the default.
    #[serde(skip)]
    pub on_missing_access: MissingAccessAction,
}

/// What the engine does when an inspection of the target finds access missing where the state
/// says an activation is ACTIVE ([`Policy::on_missing_access`]). Persisted (the store's policy
/// section): never reorder or reuse variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum MissingAccessAction {
    /// Record the drift (a `DriftFound` event and its notice) and leave the activation to its
    /// expiry.
    #[default]
    Report,
    /// Record it and grant the access again: the activation goes back to provisioning, with its
    /// expiry kept.
    GrantAgain,
    /// Record it and end the activation (its revoke runs, as after a deactivate).
    EndActivation,
}

impl MissingAccessAction {
    /// Every action, in declaration order.
    pub const ALL: [MissingAccessAction; 3] = [
        MissingAccessAction::Report,
        MissingAccessAction::GrantAgain,
        MissingAccessAction::EndActivation,
    ];

    /// The JSON spelling: `REPORT`, `GRANT_AGAIN`, `END_ACTIVATION`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MissingAccessAction::Report => "REPORT",
            MissingAccessAction::GrantAgain => "GRANT_AGAIN",
            MissingAccessAction::EndActivation => "END_ACTIVATION",
        }
    }

    /// The action with this exact spelling, if any.
    pub fn parse(text: &str) -> Option<MissingAccessAction> {
        MissingAccessAction::ALL
            .into_iter()
            .find(|a| a.as_str() == text)
    }
}

impl fmt::Display for MissingAccessAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Policy {
    /// A policy with every limit unset, governing nothing.
    pub fn empty(id: String) -> Policy {
        Policy {
            id,
            entitlement_ids: Vec::new(),
            max_activation_period: None,
            max_extension: None,
            default_activation_period: None,
            default_extension: None,
            notification_recipients: Vec::new(),
            notification_template: None,
            apply_to_future_assignments: false,
            version: 0,
            expiry_warning: None,
            on_missing_access: MissingAccessAction::Report,
        }
    }

    /// Whether `entitlement` is governed by this policy.
    pub fn governs(&self, entitlement: &EntitlementId) -> bool {
        self.entitlement_ids.iter().any(|e| e == entitlement)
    }

    /// Checks every rule of the policy (see the [module documentation](self)), reporting the
    /// first one broken, in field order.
    ///
    /// The fields are public and the type is deserialisable, so a policy can be built or
    /// decoded without [`Policy::patched`]: stores and tests call this on such policies too.
    pub fn validate(&self) -> Result<(), Error> {
        check_id(&self.id)?;
        for path in PatchPath::ALL {
            if let Some(Minutes(value)) = self.minutes(path)
                && !(1..=MAX_PERIOD_MINS).contains(&value)
            {
                return Err(Error::PeriodOutOfRange {
                    field: path,
                    value,
                    max: MAX_PERIOD_MINS,
                });
            }
        }
        for (field, max_field) in [
            (
                PatchPath::DefaultMaxActivationPeriodMins,
                PatchPath::MaxActivationPeriodMins,
            ),
            (
                PatchPath::DefaultMaxActivationPeriodExtensionMins,
                PatchPath::MaxActivationPeriodExtensionMins,
            ),
        ] {
            if let (Some(Minutes(default)), Some(Minutes(max))) =
                (self.minutes(field), self.minutes(max_field))
                && default > max
            {
                return Err(Error::DefaultExceedsMax {
                    field,
                    default,
                    max,
                });
            }
        }
        self.check_entitlements()?;
        self.check_recipients()?;
        if let Some(template) = &self.notification_template {
            check_template(template)?;
        }
        Ok(())
    }

    /// Applies `ops` in order to a copy of this policy and validates the result; see the
    /// [module documentation](self) for the rules.
    ///
    /// Returns the new policy with `version` one higher, or the first error; `self` is never
    /// changed, so a refused patch needs no undo.
    pub fn patched(&self, ops: &[PatchOp]) -> Result<Policy, Error> {
        if ops.is_empty() {
            return Err(Error::EmptyPatch);
        }
        if ops.len() > MAX_PATCH_OPS {
            return Err(Error::TooManyOps {
                len: ops.len(),
                max: MAX_PATCH_OPS,
            });
        }
        let mut next = self.clone();
        for (index, op) in ops.iter().enumerate() {
            next.apply(index, op)?;
        }
        next.validate()?;
        next.version = self.version.checked_add(1).ok_or(Error::VersionExhausted)?;
        Ok(next)
    }

    /// The fields that differ from `self` to `other`, in [`PatchPath::ALL`] order.
    ///
    /// `id` and `version` are not compared: neither can be patched, and the version differs
    /// after every change by design.
    pub fn diff(&self, other: &Policy) -> Vec<FieldChange> {
        PatchPath::ALL
            .into_iter()
            .filter_map(|path| {
                let old = self.value_at(path);
                let new = other.value_at(path);
                (old != new).then_some(FieldChange { path, old, new })
            })
            .collect()
    }

    /// The value of one field, as a patch would set it (`Null` for an unset nullable field).
    pub fn value_at(&self, path: PatchPath) -> PatchValue {
        match path {
            PatchPath::EntitlementIds => PatchValue::TextList(
                self.entitlement_ids
                    .iter()
                    .map(|e| e.as_str().to_owned())
                    .collect(),
            ),
            PatchPath::NotificationRecipients => {
                PatchValue::TextList(self.notification_recipients.clone())
            }
            PatchPath::NotificationTemplate => match &self.notification_template {
                Some(template) => PatchValue::Text(template.clone()),
                None => PatchValue::Null,
            },
            PatchPath::ApplyToFutureAssignments => {
                PatchValue::Bool(self.apply_to_future_assignments)
            }
            PatchPath::OnMissingAccess => {
                PatchValue::Text(self.on_missing_access.as_str().to_owned())
            }
            minutes => match self.minutes(minutes) {
                Some(Minutes(m)) => PatchValue::Int(i64::from(m)),
                None => PatchValue::Null,
            },
        }
    }

    /// The `*Mins` field named by `path`, `None` for an unset field or another path.
    fn minutes(&self, path: PatchPath) -> Option<Minutes> {
        match path {
            PatchPath::MaxActivationPeriodMins => self.max_activation_period,
            PatchPath::MaxActivationPeriodExtensionMins => self.max_extension,
            PatchPath::DefaultMaxActivationPeriodMins => self.default_activation_period,
            PatchPath::DefaultMaxActivationPeriodExtensionMins => self.default_extension,
            PatchPath::ExpiryWarningMins => self.expiry_warning,
            _ => None,
        }
    }

    /// The `*Mins` field named by `path`, if it names one.
    fn minutes_mut(&mut self, path: PatchPath) -> Option<&mut Option<Minutes>> {
        match path {
            PatchPath::MaxActivationPeriodMins => Some(&mut self.max_activation_period),
            PatchPath::MaxActivationPeriodExtensionMins => Some(&mut self.max_extension),
            PatchPath::DefaultMaxActivationPeriodMins => Some(&mut self.default_activation_period),
            PatchPath::DefaultMaxActivationPeriodExtensionMins => Some(&mut self.default_extension),
            PatchPath::ExpiryWarningMins => Some(&mut self.expiry_warning),
            _ => None,
        }
    }

    /// Checks and applies one operation; the whole-policy rules are left to [`Policy::validate`].
    fn apply(&mut self, index: usize, op: &PatchOp) -> Result<(), Error> {
        if let Some(name) = &op.op
            && name != "replace"
        {
            return Err(Error::UnsupportedOp {
                index,
                op: quote(name),
            });
        }
        let path = PatchPath::parse(&op.path).ok_or_else(|| Error::UnknownPath {
            index,
            path: quote(&op.path),
        })?;
        let wrong_type = || Error::WrongValueType {
            index,
            path,
            expected: path.expected(),
            found: quote(op.value.type_name()),
        };
        match (path, &op.value) {
            (PatchPath::EntitlementIds, PatchValue::TextList(items)) => {
                self.entitlement_ids = items
                    .iter()
                    .map(|item| {
                        EntitlementId::parse(item).map_err(|e| Error::InvalidValue {
                            index,
                            path,
                            reason: format!("`{}` is not a valid entitlement id: {e}", quote(item)),
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            (PatchPath::NotificationRecipients, PatchValue::TextList(items)) => {
                self.notification_recipients = items.clone();
            }
            (PatchPath::NotificationTemplate, PatchValue::Null) => {
                self.notification_template = None;
            }
            (PatchPath::NotificationTemplate, PatchValue::Text(text)) => {
                self.notification_template = Some(text.clone());
            }
            (PatchPath::ApplyToFutureAssignments, PatchValue::Bool(flag)) => {
                self.apply_to_future_assignments = *flag;
            }
            (PatchPath::OnMissingAccess, PatchValue::Text(text)) => {
                self.on_missing_access =
                    MissingAccessAction::parse(text).ok_or_else(|| Error::InvalidValue {
                        index,
                        path,
                        reason: format!(
                            "`{}` is not one of REPORT, GRANT_AGAIN, END_ACTIVATION",
                            quote(text)
                        ),
                    })?;
            }
            (_, value @ (PatchValue::Null | PatchValue::Int(_))) => {
                // The only paths left that take an integer or null are the `*Mins` ones; any
                // other path must report the type, not the integer's range.
                let Some(slot) = self.minutes_mut(path) else {
                    return Err(wrong_type());
                };
                *slot = match value {
                    PatchValue::Int(n) => Some(period(index, path, *n)?),
                    _ => None,
                };
            }
            _ => return Err(wrong_type()),
        }
        Ok(())
    }

    fn check_entitlements(&self) -> Result<(), Error> {
        let field = PatchPath::EntitlementIds;
        if self.entitlement_ids.len() > MAX_ENTITLEMENTS {
            return Err(Error::TooMany {
                field,
                len: self.entitlement_ids.len(),
                max: MAX_ENTITLEMENTS,
            });
        }
        let mut seen = HashSet::with_capacity(self.entitlement_ids.len());
        for id in &self.entitlement_ids {
            // `EntitlementId` deserialises without its check, so a decoded policy may hold a
            // malformed one.
            if let Err(e) = EntitlementId::parse(id.as_str()) {
                return Err(Error::BadEntitlementId {
                    value: quote(id.as_str()),
                    reason: e.to_string(),
                });
            }
            if !seen.insert(id.as_str()) {
                return Err(Error::Duplicate {
                    field,
                    value: quote(id.as_str()),
                });
            }
        }
        Ok(())
    }

    fn check_recipients(&self) -> Result<(), Error> {
        let field = PatchPath::NotificationRecipients;
        if self.notification_recipients.len() > MAX_RECIPIENTS {
            return Err(Error::TooMany {
                field,
                len: self.notification_recipients.len(),
                max: MAX_RECIPIENTS,
            });
        }
        let mut seen = HashSet::with_capacity(self.notification_recipients.len());
        for address in &self.notification_recipients {
            check_email(address).map_err(|reason| Error::BadEmail {
                value: quote(address),
                reason,
            })?;
            // Mail systems treat the domain, and in practice the local part, case-insensitively:
            // two spellings of one mailbox would send every notification twice. Valid addresses
            // are ASCII, so ASCII folding is enough.
            if !seen.insert(address.to_ascii_lowercase()) {
                return Err(Error::Duplicate {
                    field,
                    value: quote(address),
                });
            }
        }
        Ok(())
    }
}

/// The minutes of a `*Mins` operation's integer, if in range.
fn period(index: usize, path: PatchPath, value: i64) -> Result<Minutes, Error> {
    u32::try_from(value)
        .ok()
        .filter(|m| (1..=MAX_PERIOD_MINS).contains(m))
        .map(Minutes)
        .ok_or_else(|| Error::InvalidValue {
            index,
            path,
            reason: format!("{value} is not between 1 and {MAX_PERIOD_MINS} minutes"),
        })
}

fn check_id(id: &str) -> Result<(), Error> {
    // `try_parse` also takes uppercase, simple, braced and URN forms; requiring the canonical
    // text keeps one config from being stored under several spellings of its id.
    let canonical = uuid::Uuid::try_parse(id)
        .ok()
        .is_some_and(|u| u.hyphenated().to_string() == id);
    if canonical {
        Ok(())
    } else {
        Err(Error::BadId { value: quote(id) })
    }
}

/// Checks that `address` is a plausible email address, returning what is wrong with it.
///
/// Deliberately narrower than RFC 5322 (no quoted local parts, comments or address literals, no
/// internationalised addresses): recipients end up in mail headers, and an unusual but valid
/// address is cheaper to refuse than a header injection is to clean up.
fn check_email(address: &str) -> Result<(), &'static str> {
    if address.is_empty() {
        return Err("it is empty");
    }
    if address.len() > MAX_EMAIL_LEN {
        return Err("it is longer than 254 bytes");
    }
    if address.chars().any(char::is_whitespace) {
        return Err("it contains whitespace");
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Err("it has no `@`");
    };
    if domain.contains('@') {
        return Err("it has more than one `@`");
    }
    if local.is_empty() {
        return Err("the part before `@` is empty");
    }
    if local.len() > MAX_EMAIL_LOCAL_LEN {
        return Err("the part before `@` is longer than 64 bytes");
    }
    // RFC 5322 `atext` plus dots: everything a dot-atom may hold.
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-.".contains(&b);
    if !local.bytes().all(atext) {
        return Err("the part before `@` has a character that is not allowed");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("the part before `@` starts or ends with a dot, or has two dots in a row");
    }
    if !domain.contains('.') {
        return Err("the domain has no dot");
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("the domain has an empty label");
        }
        if label.len() > 63 {
            return Err("a domain label is longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("the domain has a character outside [A-Za-z0-9-]");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a domain label starts or ends with a hyphen");
        }
    }
    Ok(())
}

fn check_template(template: &str) -> Result<(), Error> {
    let reason = if template.is_empty() {
        "it is empty; use null to clear it"
    } else if template.len() > MAX_TEMPLATE_LEN {
        "it is longer than 128 bytes"
    } else if template
        .chars()
        .any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
    {
        // Tabs and line breaks (including U+2028/U+2029) would forge lines in mail headers and logs.
        "it contains a control character or whitespace other than a space"
    } else {
        return Ok(());
    };
    Err(Error::BadTemplate { reason })
}
