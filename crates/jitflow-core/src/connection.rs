//! Entitlement connections: one identity's eligibility for one entitlement through one account.

use serde::{Deserialize, Serialize};

use crate::activation::{Activation, ActivationStatus};
use crate::filter::FieldValue;
use crate::id::{AccountId, ConnectionId, EntitlementId, IdentityId, SourceId};
use crate::lifecycle::Actor;
use crate::policy::{PatchOp, PatchValue};
use crate::time::Timestamp;

/// The longest display name or attribute name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// The longest attribute value accepted, in bytes (directory DNs can be long).
pub const MAX_VALUE_LEN: usize = 2048;

/// The contract's connection `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConnectionType {
    /// Access is held only while an activation runs.
    Jit,
    /// Access is held permanently; [`ConnectionState::Active`] means it is held now.
    Standing,
    /// Not applicable: jitflow manages no access for it.
    Na,
}

impl ConnectionType {
    /// The contract's spelling: `JIT`, `STANDING`, `NA`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionType::Jit => "JIT",
            ConnectionType::Standing => "STANDING",
            ConnectionType::Na => "NA",
        }
    }

    /// Parses the contract's spelling (case-insensitive).
    pub fn parse(text: &str) -> Option<ConnectionType> {
        [
            ConnectionType::Jit,
            ConnectionType::Standing,
            ConnectionType::Na,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(text))
    }
}

/// The contract's connection `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConnectionState {
    /// No access held; a JIT connection may be activated.
    Available,
    /// An activation is being validated or provisioned.
    Activating,
    /// Access is held (until the expiry timer, for JIT).
    Active,
    /// Access is being removed.
    Deactivating,
    /// The last activation ended by its timer; may be activated again.
    Expired,
}

impl ConnectionState {
    /// The contract's spelling: `AVAILABLE`, `ACTIVATING`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Available => "AVAILABLE",
            ConnectionState::Activating => "ACTIVATING",
            ConnectionState::Active => "ACTIVE",
            ConnectionState::Deactivating => "DEACTIVATING",
            ConnectionState::Expired => "EXPIRED",
        }
    }

    /// Parses the contract's spelling (case-insensitive).
    pub fn parse(text: &str) -> Option<ConnectionState> {
        [
            ConnectionState::Available,
            ConnectionState::Activating,
            ConnectionState::Active,
            ConnectionState::Deactivating,
            ConnectionState::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    /// Whether no access is held or moving: the states a connection may be removed or retyped in.
    pub const fn is_at_rest(self) -> bool {
        matches!(self, ConnectionState::Available | ConnectionState::Expired)
    }
}

/// The JIT timestamps of the contract (`jitActivation` ... `jitExpiration`), of the latest activation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JitTimes {
    /// When the latest activation was requested.
    pub activation: Option<Timestamp>,
    /// When its grant succeeded.
    pub provision: Option<Timestamp>,
    /// When its removal began (deactivate, expiry or fail-closed cleanup).
    pub deactivation: Option<Timestamp>,
    /// When its revoke succeeded.
    pub deprovision: Option<Timestamp>,
    /// When its access expires (moves on extend).
    pub expiration: Option<Timestamp>,
}

/// What an embedder registers: the facts about a connection that come from its sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionSpec {
    /// The connection id.
    pub id: ConnectionId,
    /// The identity eligible for the entitlement.
    pub identity: IdentityId,
    /// The identity's display name.
    pub identity_name: String,
    /// The account through which the entitlement is held.
    pub account: AccountId,
    /// The account's name.
    pub account_name: String,
    /// The entitlement.
    pub entitlement: EntitlementId,
    /// The entitlement's display name.
    pub entitlement_name: String,
    /// The entitlement attribute on the source (e.g. `memberOf`).
    pub attribute_name: String,
    /// The entitlement attribute value on the source (e.g. a group DN).
    pub attribute_value: String,
    /// The entitlement's effective privilege level, if the source reports one.
    pub privilege_level: Option<String>,
    /// The source.
    pub source: SourceId,
    /// The source's display name.
    pub source_name: String,
    /// The connection type requested at registration (the policy may make it JIT).
    pub kind: ConnectionType,
    /// The contract's `standalone` flag.
    pub standalone: bool,
}

/// A change to the descriptive fields of a connection; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionUpdate {
    /// New identity display name.
    pub identity_name: Option<String>,
    /// New account name.
    pub account_name: Option<String>,
    /// New entitlement display name.
    pub entitlement_name: Option<String>,
    /// New attribute name.
    pub attribute_name: Option<String>,
    /// New attribute value.
    pub attribute_value: Option<String>,
    /// New privilege level (`Some(None)` clears it).
    pub privilege_level: Option<Option<String>>,
    /// New source display name.
    pub source_name: Option<String>,
    /// New `standalone` flag.
    pub standalone: Option<bool>,
}

impl ConnectionUpdate {
    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == ConnectionUpdate::default()
    }
}

/// Checks a free-text field: bounded and free of control characters.
pub(crate) fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!(
            "{field} is {} bytes long, more than the {max} allowed",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} contains a control character"));
    }
    Ok(())
}

/// Checks free-text fields given as (name, value if present, bound); the first failure wins.
fn check_fields<'a>(
    fields: impl IntoIterator<Item = (&'static str, Option<&'a str>, usize)>,
) -> Result<(), (&'static str, String)> {
    for (field, value, max) in fields {
        if let Some(value) = value {
            check_text(field, value, max).map_err(|e| (field, e))?;
        }
    }
    Ok(())
}

impl ConnectionUpdate {
    /// Checks the free-text fields it sets.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_fields([
            ("identityName", self.identity_name.as_deref(), MAX_NAME_LEN),
            ("accountName", self.account_name.as_deref(), MAX_NAME_LEN),
            (
                "entitlementName",
                self.entitlement_name.as_deref(),
                MAX_NAME_LEN,
            ),
            (
                "attributeName",
                self.attribute_name.as_deref(),
                MAX_NAME_LEN,
            ),
            (
                "attributeValue",
                self.attribute_value.as_deref(),
                MAX_VALUE_LEN,
            ),
            (
                "privilegeLevel",
                self.privilege_level.clone().flatten().as_deref(),
                MAX_NAME_LEN,
            ),
            ("sourceName", self.source_name.as_deref(), MAX_NAME_LEN),
        ])
    }
}

impl ConnectionSpec {
    /// Checks the free-text fields (ids are checked when they are parsed).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_fields([
            (
                "identityName",
                Some(self.identity_name.as_str()),
                MAX_NAME_LEN,
            ),
            (
                "accountName",
                Some(self.account_name.as_str()),
                MAX_NAME_LEN,
            ),
            (
                "entitlementName",
                Some(self.entitlement_name.as_str()),
                MAX_NAME_LEN,
            ),
            (
                "attributeName",
                Some(self.attribute_name.as_str()),
                MAX_NAME_LEN,
            ),
            (
                "attributeValue",
                Some(self.attribute_value.as_str()),
                MAX_VALUE_LEN,
            ),
            (
                "privilegeLevel",
                self.privilege_level.as_deref(),
                MAX_NAME_LEN,
            ),
            ("sourceName", Some(self.source_name.as_str()), MAX_NAME_LEN),
        ])
    }

    /// Applies an update (already validated).
    pub(crate) fn apply(&mut self, update: &ConnectionUpdate) {
        let ConnectionUpdate {
            identity_name,
            account_name,
            entitlement_name,
            attribute_name,
            attribute_value,
            privilege_level,
            source_name,
            standalone,
        } = update.clone();
        if let Some(v) = identity_name {
            self.identity_name = v;
        }
        if let Some(v) = account_name {
            self.account_name = v;
        }
        if let Some(v) = entitlement_name {
            self.entitlement_name = v;
        }
        if let Some(v) = attribute_name {
            self.attribute_name = v;
        }
        if let Some(v) = attribute_value {
            self.attribute_value = v;
        }
        if let Some(v) = privilege_level {
            self.privilege_level = v;
        }
        if let Some(v) = source_name {
            self.source_name = v;
        }
        if let Some(v) = standalone {
            self.standalone = v;
        }
    }
}

/// Removal of standing access (after a STANDING -> JIT type change), retried until it succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandingRevoke {
    /// The current try, from 1.
    pub attempt: u32,
    /// When the next try is due, while waiting after a failure.
    pub retry_at: Option<Timestamp>,
    /// Set once the tries reach the configured bound; stays set until the revoke succeeds.
    pub stuck: bool,
    /// The last failure.
    pub last_error: Option<String>,
}

/// A connection and the latest activation workflow run on it: the aggregate `decide` works on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The registered facts (the type lives here, in `spec.kind`).
    pub spec: ConnectionSpec,
    /// The lifecycle state.
    pub state: ConnectionState,
    /// The JIT timestamps of the latest activation.
    pub jit: JitTimes,
    /// When the connection was registered.
    pub created: Timestamp,
    /// When anything about it last changed.
    pub modified: Timestamp,
    /// When its state last changed.
    pub state_changed: Timestamp,
    /// Who last changed its state.
    pub state_changed_by: Actor,
    /// The latest activation: running, or the last one that ended.
    pub activation: Option<Activation>,
    /// A standing-access removal in progress.
    pub standing_revoke: Option<StandingRevoke>,
    /// The number of events applied to this connection since registration.
    pub version: u64,
}

impl Connection {
    /// The id.
    pub fn id(&self) -> ConnectionId {
        self.spec.id
    }

    /// The type.
    pub fn kind(&self) -> ConnectionType {
        self.spec.kind
    }

    /// The activation that has not ended yet, if any.
    pub fn running_activation(&self) -> Option<&Activation> {
        self.activation.as_ref().filter(|a| !a.status.is_terminal())
    }

    /// Checks the invariants that tie the connection's state to its activation. Used as the
    /// paired assertion after `evolve` and after decoding a stored record.
    pub fn check_invariants(&self) -> Result<(), String> {
        let running = self.running_activation();
        let revoking = self.standing_revoke.is_some();
        let ok = match self.state {
            ConnectionState::Available | ConnectionState::Expired => running.is_none() && !revoking,
            ConnectionState::Activating => matches!(
                running.map(|a| (a.status, a.cancel_requested)),
                Some((
                    ActivationStatus::Creating | ActivationStatus::Activating,
                    false
                ))
            ),
            ConnectionState::Active => match self.spec.kind {
                ConnectionType::Jit => {
                    running.is_some_and(|a| {
                        a.status == ActivationStatus::Provisioned && a.expires_at.is_some()
                    }) && !revoking
                }
                ConnectionType::Standing => running.is_none() && !revoking,
                ConnectionType::Na => false,
            },
            ConnectionState::Deactivating => {
                revoking != running.is_some()
                    && running.is_none_or(|a| {
                        a.status == ActivationStatus::Deprovisioning
                            || (a.status == ActivationStatus::Activating && a.cancel_requested)
                    })
            }
        };
        if !ok {
            return Err(format!(
                "connection {} is {} ({}) with activation {:?} and standing revoke {:?}",
                self.spec.id,
                self.state.as_str(),
                self.spec.kind.as_str(),
                self.activation
                    .as_ref()
                    .map(|a| (a.status, a.cancel_requested)),
                self.standing_revoke
            ));
        }
        if running.is_some() && self.spec.kind != ConnectionType::Jit {
            return Err(format!(
                "{} connection {} runs an activation",
                self.spec.kind.as_str(),
                self.spec.id
            ));
        }
        Ok(())
    }
}

/// The most operations one connection patch may hold.
pub const MAX_PATCH_OPS: usize = 16;

/// The paths a connection patch may replace, in the contract's JSON Patch spelling.
pub const PATCH_PATHS: [&str; 2] = ["/type", "/standalone"];

/// A validated JSON Patch of a connection: the fields to replace (`None` keeps a field).
///
/// Only `/type` (with its lifecycle effects, as [`crate::lifecycle::Command::ChangeType`]) and
/// `/standalone` can be patched: the other fields come from the identity source through
/// registration and update, and the state and JIT timestamps belong to the lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patch {
    /// The new type.
    pub kind: Option<ConnectionType>,
    /// The new `standalone` flag.
    pub standalone: Option<bool>,
}

/// Why a connection patch was refused; nothing is changed.
///
/// `index` is the 0-based position of the operation in the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The request holds no operation.
    #[error("The patch is empty: send at least one operation.")]
    Empty,
    /// The request holds more than [`MAX_PATCH_OPS`] operations.
    #[error("The patch has {0} operations, more than the {MAX_PATCH_OPS} allowed.")]
    TooMany(usize),
    /// An operation other than `replace`.
    #[error("Operation {index}: `{op}` is not supported; only `replace` is.")]
    UnsupportedOp {
        /// The operation's position.
        index: usize,
        /// The operation as sent (cut to 64 characters).
        op: String,
    },
    /// A path other than those in [`PATCH_PATHS`].
    #[error("Operation {index}: `{path}` cannot be patched; the paths are /type and /standalone.")]
    UnknownPath {
        /// The operation's position.
        index: usize,
        /// The path as sent (cut to 64 characters).
        path: String,
    },
    /// A value of the wrong JSON type for its path.
    #[error("Operation {index}: {path} takes {expected}, not {actual}.")]
    WrongValueType {
        /// The operation's position.
        index: usize,
        /// The path.
        path: &'static str,
        /// What the path takes.
        expected: &'static str,
        /// The JSON type sent.
        actual: String,
    },
    /// A `/type` value that names no connection type.
    #[error("Operation {index}: `{value}` is not a connection type; use JIT, STANDING or NA.")]
    InvalidType {
        /// The operation's position.
        index: usize,
        /// The value as sent (cut to 64 characters).
        value: String,
    },
}

impl Patch {
    /// Validates the operations as a whole and folds them into one patch, in order (a later
    /// operation on the same path wins, as in JSON Patch). An omitted `op` means `replace`.
    pub fn from_ops(ops: &[PatchOp]) -> Result<Patch, PatchError> {
        if ops.is_empty() {
            return Err(PatchError::Empty);
        }
        if ops.len() > MAX_PATCH_OPS {
            return Err(PatchError::TooMany(ops.len()));
        }
        let cut = |text: &str| text.chars().take(64).collect::<String>();
        let mut patch = Patch::default();
        for (index, op) in ops.iter().enumerate() {
            if let Some(name) = op.op.as_deref()
                && name != "replace"
            {
                return Err(PatchError::UnsupportedOp {
                    index,
                    op: cut(name),
                });
            }
            match (op.path.as_str(), &op.value) {
                ("/type", PatchValue::Text(text)) => {
                    let kind =
                        ConnectionType::parse(text).ok_or_else(|| PatchError::InvalidType {
                            index,
                            value: cut(text),
                        })?;
                    patch.kind = Some(kind);
                }
                ("/standalone", PatchValue::Bool(flag)) => patch.standalone = Some(*flag),
                ("/type", other) => {
                    return Err(PatchError::WrongValueType {
                        index,
                        path: "/type",
                        expected: "a string",
                        actual: other.type_name().to_owned(),
                    });
                }
                ("/standalone", other) => {
                    return Err(PatchError::WrongValueType {
                        index,
                        path: "/standalone",
                        expected: "a boolean",
                        actual: other.type_name().to_owned(),
                    });
                }
                (path, _) => {
                    return Err(PatchError::UnknownPath {
                        index,
                        path: cut(path),
                    });
                }
            }
        }
        Ok(patch)
    }
}

impl crate::filter::Fields for Connection {
    /// The fields of [`crate::filter::ENTITLEMENT_CONNECTION_FIELDS`] and
    /// [`crate::filter::ENTITLEMENT_CONNECTION_SORTERS`], named as in the contract's search hit.
    /// An empty privilege level reads as null, so that filters, sorters and `searchAfter` (where
    /// an empty value stands for null) agree on it.
    fn field(&self, name: &str) -> FieldValue<'_> {
        let s = &self.spec;
        let time = |t: Option<Timestamp>| t.map_or(FieldValue::Null, FieldValue::Timestamp);
        match name {
            "id" => FieldValue::Uuid(s.id.as_u128()),
            "identity.id" => FieldValue::Text(s.identity.as_str()),
            "identity.name" => FieldValue::Text(&s.identity_name),
            "source.id" => FieldValue::Text(s.source.as_str()),
            "source.name" => FieldValue::Text(&s.source_name),
            "account.id" => FieldValue::Text(s.account.as_str()),
            "account.name" => FieldValue::Text(&s.account_name),
            "entitlement.id" => FieldValue::Text(s.entitlement.as_str()),
            "entitlement.displayName" => FieldValue::Text(&s.entitlement_name),
            "entitlement.attribute" => FieldValue::Text(&s.attribute_name),
            "entitlement.value" => FieldValue::Text(&s.attribute_value),
            "entitlement.privilegeLevel.effective" => s
                .privilege_level
                .as_deref()
                .filter(|level| !level.is_empty())
                .map_or(FieldValue::Null, FieldValue::Text),
            "type" => FieldValue::Text(s.kind.as_str()),
            "state.value" => FieldValue::Text(self.state.as_str()),
            "standalone" => FieldValue::Bool(s.standalone),
            "jit.activation" => time(self.jit.activation),
            "jit.provision" => time(self.jit.provision),
            "jit.deactivation" => time(self.jit.deactivation),
            "jit.deprovision" => time(self.jit.deprovision),
            "jit.expiration" => time(self.jit.expiration),
            _ => FieldValue::Null,
        }
    }
}
