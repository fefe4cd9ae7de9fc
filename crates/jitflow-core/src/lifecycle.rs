//! The connection lifecycle as a pure state machine: `decide` turns a command into events or a
//! rejection; `evolve` applies one event to the state.
//!
//! Timers and effects are not stored separately from the state: they are *derived* from it
//! ([`Connection::timers`], [`Connection::pending_effects`]). `decide` records on each event the
//! timers it arms and cancels and the effects it starts, computed as the difference of those
//! derived sets before and after the event, so the store and the scheduler need no lifecycle
//! knowledge and the timer index can always be checked against the projections.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::activation::{Activation, ActivationStatus, EndReason};
use crate::backoff;
use crate::client::ClientInfo;
use crate::connection::{
    Connection, ConnectionSpec, ConnectionState, ConnectionType, ConnectionUpdate, Patch,
    StandingRevoke,
};
use crate::id::{ActivationId, ConnectionId, IdentityId};
use crate::policy::{MissingAccessAction, PatchOp, Policy};
use crate::time::{Minutes, Timestamp};

pub use crate::policy::MAX_PERIOD_MINS;
/// The longest error or refusal text kept on an activation, in bytes; longer texts are cut.
pub const MAX_ERROR_LEN: usize = 1024;

/// Who caused a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// jitflow itself: timers and effect results.
    System,
    /// A person or machine identity.
    Identity(IdentityId),
}

/// Lifecycle settings that are not policy: retries, alerting and warnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Grant tries before provisioning gives up (the activation ends ERROR, fail closed).
    pub grant_max_attempts: u32,
    /// Revoke tries after which the activation is flagged stuck and an alert raised. Revokes
    /// are retried forever regardless.
    pub stuck_after: u32,
    /// Delay before the second try.
    pub backoff_base: Duration,
    /// Longest delay between tries.
    pub backoff_cap: Duration,
    /// How long before expiry the expiring-soon warning is sent, unless the tenant's policy
    /// sets its own (`Policy::expiry_warning`).
    pub warning_lead: Duration,
    /// Mixed into every retry's jitter.
    pub jitter_seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            grant_max_attempts: 5,
            stuck_after: 8,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            warning_lead: Duration::from_secs(300),
            jitter_seed: 0,
        }
    }
}

/// What `decide` needs besides the state and the command. The clock is an argument.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The current time.
    pub now: Timestamp,
    /// Who sends the command.
    pub actor: &'a Actor,
    /// The tenant's policy as it is now.
    pub policy: &'a Policy,
    /// Retry and warning settings.
    pub config: &'a Config,
}

/// What the timer is for. One connection has at most one timer of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimerKind {
    /// The activation's access expires.
    Expiry,
    /// The expiring-soon warning is due.
    Warning,
    /// The next grant or revoke try of the activation is due.
    Retry,
    /// The next try to remove standing access is due.
    StandingRetry,
}

/// A durable timer of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timer {
    /// When it is due. It never fires earlier.
    pub due: Timestamp,
    /// What it is for.
    pub kind: TimerKind,
}

/// A call to the embedder's code that a committed intent asks for. Effects run at least once;
/// [`Effect::idempotency_key`] lets the target recognise a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Effect {
    /// Run the workflow's own validation of the activation.
    Validate {
        /// The activation.
        activation: ActivationId,
    },
    /// Grant the access (try `attempt`).
    Grant {
        /// The activation.
        activation: ActivationId,
        /// The try, from 1.
        attempt: u32,
    },
    /// Revoke the access granted by the activation (try `attempt`).
    Revoke {
        /// The activation.
        activation: ActivationId,
        /// The try, from 1.
        attempt: u32,
    },
    /// Revoke the connection's standing access (try `attempt`).
    RevokeStanding {
        /// The try, from 1.
        attempt: u32,
    },
}

impl Effect {
    /// The key the target can use to recognise a repeated call: the same intent after a
    /// restart carries the same key.
    pub fn idempotency_key(&self, connection: ConnectionId) -> String {
        match self {
            Effect::Validate { activation } => format!("{activation}:validate"),
            Effect::Grant {
                activation,
                attempt,
            } => format!("{activation}:grant:{attempt}"),
            Effect::Revoke {
                activation,
                attempt,
            } => format!("{activation}:revoke:{attempt}"),
            Effect::RevokeStanding { attempt } => format!("{connection}:standing-revoke:{attempt}"),
        }
    }
}

/// A request to change one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Register a new connection (the ingestion path).
    Register(ConnectionSpec),
    /// Change descriptive fields.
    Update(ConnectionUpdate),
    /// Remove the connection.
    Remove,
    /// Change the type (JIT, STANDING, NA), with its lifecycle effects.
    ChangeType(ConnectionType),
    /// Apply a validated JSON Patch: the `standalone` flag, then the type, all or nothing (one
    /// event per field that changes).
    Patch(Patch),
    /// Start an activation; `period` missing means the policy default. The caller picks the id
    /// so that the decision stays deterministic.
    Activate {
        /// The new activation's id.
        activation: ActivationId,
        /// Requested minutes.
        period: Option<Minutes>,
        /// The client's `requestOrigin` and `metaData`, recorded on the event.
        client: Option<ClientInfo>,
    },
    /// Extend the running activation; `by` missing means the policy default extension.
    Extend {
        /// Extra minutes.
        by: Option<Minutes>,
        /// The client's `requestOrigin` and `metaData`, recorded on the event.
        client: Option<ClientInfo>,
    },
    /// End the running activation early.
    Deactivate {
        /// The client's `requestOrigin` and `metaData`, recorded on the event.
        client: Option<ClientInfo>,
    },
    /// The workflow's validation accepted the activation.
    ValidationPassed {
        /// The activation validated.
        activation: ActivationId,
    },
    /// The workflow's validation refused the activation.
    ValidationRefused {
        /// The activation refused.
        activation: ActivationId,
        /// Why.
        reason: String,
    },
    /// A grant try succeeded.
    GrantSucceeded {
        /// The activation.
        activation: ActivationId,
        /// The try.
        attempt: u32,
    },
    /// A grant try failed; `retryable: false` means the target refused for good.
    GrantFailed {
        /// The activation.
        activation: ActivationId,
        /// The try.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// Whether another try may succeed.
        retryable: bool,
    },
    /// A revoke try succeeded.
    RevokeSucceeded {
        /// The activation.
        activation: ActivationId,
        /// The try.
        attempt: u32,
    },
    /// A revoke try failed (it is retried forever).
    RevokeFailed {
        /// The activation.
        activation: ActivationId,
        /// The try.
        attempt: u32,
        /// What went wrong.
        error: String,
    },
    /// A standing-access revoke try succeeded.
    StandingRevokeSucceeded {
        /// The try.
        attempt: u32,
    },
    /// A standing-access revoke try failed (it is retried forever).
    StandingRevokeFailed {
        /// The try.
        attempt: u32,
        /// What went wrong.
        error: String,
    },
    /// A timer of this connection is due.
    TimerFired(Timer),
    /// The provisioner inspected the target (issue 16's drift): whether it holds the
    /// connection's access, as seen when the connection was at `version`. Refused as stale if
    /// the connection changed since, since a grant or revoke in between makes the inspection
    /// say nothing about the state now.
    Inspected {
        /// Whether the target holds the access.
        held: bool,
        /// The connection's version when the inspection was asked for.
        version: u64,
    },
}

impl Command {
    /// A short name for logs and metrics.
    pub const fn name(&self) -> &'static str {
        match self {
            Command::Register(_) => "register",
            Command::Update(_) => "update",
            Command::Remove => "remove",
            Command::ChangeType(_) => "change_type",
            Command::Patch(_) => "patch",
            Command::Activate { .. } => "activate",
            Command::Extend { .. } => "extend",
            Command::Deactivate { .. } => "deactivate",
            Command::ValidationPassed { .. } => "validation_passed",
            Command::ValidationRefused { .. } => "validation_refused",
            Command::GrantSucceeded { .. } => "grant_succeeded",
            Command::GrantFailed { .. } => "grant_failed",
            Command::RevokeSucceeded { .. } => "revoke_succeeded",
            Command::RevokeFailed { .. } => "revoke_failed",
            Command::StandingRevokeSucceeded { .. } => "standing_revoke_succeeded",
            Command::StandingRevokeFailed { .. } => "standing_revoke_failed",
            Command::TimerFired(_) => "timer_fired",
            Command::Inspected { .. } => "inspected",
        }
    }

    /// What the client said with a signal (activate, extend, deactivate); `None` for every
    /// other command.
    pub const fn client(&self) -> Option<&ClientInfo> {
        match self {
            Command::Activate { client, .. }
            | Command::Extend { client, .. }
            | Command::Deactivate { client } => client.as_ref(),
            _ => None,
        }
    }
}

/// What happened to a connection. Persisted: never reorder or reuse variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The connection was registered (with the type the policy gave it).
    Registered(ConnectionSpec),
    /// Descriptive fields changed.
    Updated(ConnectionUpdate),
    /// The connection was removed.
    Removed,
    /// The type changed.
    TypeChanged {
        /// The old type.
        from: ConnectionType,
        /// The new type.
        to: ConnectionType,
    },
    /// An activation was requested; validation starts.
    ActivationRequested {
        /// The period granted.
        period: Minutes,
    },
    /// Validation passed; the first grant try starts.
    ValidationPassed,
    /// Validation refused; the activation ends INVALID.
    ValidationRefused {
        /// Why.
        reason: String,
    },
    /// A grant try failed; another is scheduled.
    GrantFailed {
        /// The failed try.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// When the next try is due.
        retry_at: Timestamp,
    },
    /// Provisioning gave up; the grant's outcome is unknown, so a revoke starts (fail closed).
    GrantAbandoned {
        /// The last try.
        attempt: u32,
        /// What went wrong.
        error: String,
    },
    /// A scheduled grant try starts.
    GrantRetried {
        /// The new try.
        attempt: u32,
    },
    /// The grant succeeded; access is held until `expires_at`.
    Provisioned {
        /// The successful try.
        attempt: u32,
        /// When access expires.
        expires_at: Timestamp,
        /// When the expiring-soon warning is due, if still ahead.
        warn_at: Option<Timestamp>,
    },
    /// A grant in flight when deactivate arrived has settled; the revoke starts.
    CancelledGrantSettled {
        /// The try that settled.
        attempt: u32,
        /// Its error, if it failed (the revoke runs either way: fail closed).
        error: Option<String>,
    },
    /// The running activation was extended.
    Extended {
        /// Minutes added.
        by: Minutes,
        /// The new expiry.
        expires_at: Timestamp,
        /// The new warning time, if still ahead.
        warn_at: Option<Timestamp>,
    },
    /// The expiring-soon warning fell due.
    ExpiryWarned {
        /// The expiry it warns of.
        expires_at: Timestamp,
    },
    /// Deactivation was requested.
    DeactivationRequested,
    /// The expiry timer fired; the revoke starts.
    Expired,
    /// A revoke try failed; another is scheduled.
    RevokeFailed {
        /// The failed try.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// When the next try is due.
        retry_at: Timestamp,
        /// The tries just reached the stuck bound (raise the alert once).
        became_stuck: bool,
    },
    /// A scheduled revoke try starts.
    RevokeRetried {
        /// The new try.
        attempt: u32,
    },
    /// The revoke succeeded; the activation ends.
    Revoked {
        /// The successful try.
        attempt: u32,
        /// Why access was removed.
        reason: EndReason,
    },
    /// A standing-access revoke try failed; another is scheduled.
    StandingRevokeFailed {
        /// The failed try.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// When the next try is due.
        retry_at: Timestamp,
        /// The tries just reached the stuck bound.
        became_stuck: bool,
    },
    /// A scheduled standing-access revoke try starts.
    StandingRevokeRetried {
        /// The new try.
        attempt: u32,
    },
    /// Standing access was removed; the connection is AVAILABLE as JIT.
    StandingRevoked {
        /// The successful try.
        attempt: u32,
    },
    /// An inspection of the target disagreed with the state (issue 16). Unexpected access is
    /// revoked like standing access (the connection goes DEACTIVATING, then AVAILABLE); missing
    /// access is recorded and reported, and then answered in the same decision by the tenant
    /// policy's [`MissingAccessAction`]: nothing more (the default), a
    /// [`Change::RegrantStarted`], or a [`Change::DeactivationRequested`].
    DriftFound {
        /// What disagreed.
        drift: Drift,
    },
    /// Access found missing while ACTIVE is granted again (the tenant policy's
    /// [`MissingAccessAction::GrantAgain`], right after the [`Change::DriftFound`]): the running
    /// activation goes back to provisioning (the connection is ACTIVATING) with grant try
    /// `attempt`, counted on from its earlier tries so that each try carries a new idempotency
    /// key, and keeps its expiry. The grant then runs as any grant: retried up to
    /// `grant_max_attempts` tries in all, else abandoned with a fail-closed revoke.
    RegrantStarted {
        /// The grant try that starts.
        attempt: u32,
    },
}

/// How the target disagrees with the engine's state. Persisted in [`Change::DriftFound`]: never
/// reorder or reuse variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Drift {
    /// The target holds access that no running activation explains (a revoke that reported
    /// success but did not take, or a grant made by hand).
    UnexpectedAccess,
    /// The engine says the access is held (ACTIVE), the target does not hold it.
    MissingAccess,
}

impl Drift {
    /// A short name for logs, metrics and notices.
    pub const fn as_str(self) -> &'static str {
        match self {
            Drift::UnexpectedAccess => "unexpected_access",
            Drift::MissingAccess => "missing_access",
        }
    }
}

/// What an embedder's `Notifier` is told about. Not persisted: it is derived from each
/// committed event by [`Event::notice`], so a new kind of notice needs no change of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Notice {
    /// An activation was requested.
    Started,
    /// Access was granted.
    Provisioned,
    /// Access expires soon (the pre-expiry warning).
    ExpiringSoon,
    /// The activation was extended.
    Extended,
    /// Access was removed after deactivate.
    Deactivated,
    /// Access was removed after expiry.
    Expired,
    /// The workflow's validation refused the activation; it ends INVALID.
    Refused,
    /// Provisioning gave up (tries exhausted, or the target refused for good); the activation
    /// ends ERROR after a fail-closed revoke.
    GrantFailed,
    /// A revoke keeps failing; someone must look.
    Stuck,
    /// A revoke that had been flagged stuck finally succeeded (the access is gone).
    Recovered,
    /// An inspection of the target disagreed with the state ([`Change::DriftFound`]).
    DriftFound,
}

/// One committed fact about one connection, with the timers and effects it implies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The connection (the stream).
    pub connection: ConnectionId,
    /// The activation it concerns, if any.
    pub activation: Option<ActivationId>,
    /// When it happened.
    pub at: Timestamp,
    /// Who caused it.
    pub actor: Actor,
    /// What happened.
    pub change: Change,
    /// Timers this event arms.
    pub arm: Vec<Timer>,
    /// Timers this event cancels.
    pub cancel: Vec<Timer>,
    /// Effects this event starts.
    pub effects: Vec<Effect>,
    /// What the client said with the signal that caused this event (`requestOrigin`,
    /// `metaData`): only on the events of a client's signal ([`Change::records_client`]).
    ///
    /// Not part of the event's serde form: the store encodes it as a trailing section of the
    /// event's record, written only when present, so events without one keep the bytes they had
    /// before it existed; the audit export writes it as `requestOrigin` and `metaData`.
    #[serde(skip)]
    pub client: Option<ClientInfo>,
}

impl Event {
    /// The notification this event triggers, if any. `stuck_after` is the engine's stuck bound
    /// ([`Config::stuck_after`]): a revoke that succeeds on a try past it had its try at the
    /// bound fail, which raised the stuck alert, so its end is told as [`Notice::Recovered`]
    /// instead of the usual deactivated or expired notice. (The event does not record whether
    /// the activation was stuck; if the bound was changed between the alert and the recovery,
    /// the recovery may be told as a plain end, or a plain end as a recovery.)
    pub fn notice(&self, stuck_after: u32) -> Option<Notice> {
        match &self.change {
            Change::ActivationRequested { .. } => Some(Notice::Started),
            Change::Provisioned { .. } => Some(Notice::Provisioned),
            Change::ExpiryWarned { .. } => Some(Notice::ExpiringSoon),
            Change::Extended { .. } => Some(Notice::Extended),
            Change::Revoked { attempt, .. } | Change::StandingRevoked { attempt }
                if *attempt > stuck_after =>
            {
                Some(Notice::Recovered)
            }
            Change::Revoked {
                reason: EndReason::Deactivated,
                ..
            } => Some(Notice::Deactivated),
            Change::Revoked {
                reason: EndReason::Expired,
                ..
            } => Some(Notice::Expired),
            Change::ValidationRefused { .. } => Some(Notice::Refused),
            Change::DriftFound { .. } => Some(Notice::DriftFound),
            Change::GrantAbandoned { .. } => Some(Notice::GrantFailed),
            Change::RevokeFailed {
                became_stuck: true, ..
            }
            | Change::StandingRevokeFailed {
                became_stuck: true, ..
            } => Some(Notice::Stuck),
            _ => None,
        }
    }
}

/// Why a command was refused. Each variant maps to one error of the contract; [`Rejection::kind`]
/// says which class. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No connection with this id (404).
    #[error("connection {0} not found")]
    NotFound(ConnectionId),
    /// Register of an id that exists (409).
    #[error("connection {0} already exists")]
    AlreadyExists(ConnectionId),
    /// Register of a second connection for an assignment (entitlement, identity, account) that
    /// another connection already holds (409).
    #[error(
        "connection {existing} already connects this identity, account and entitlement; \
         {connection} cannot be registered for them too"
    )]
    AssignmentTaken {
        /// The connection refused.
        connection: ConnectionId,
        /// The connection that holds the assignment.
        existing: ConnectionId,
    },
    /// The operation needs another connection type (409).
    #[error("connection {connection} is of type {actual}, and {operation} needs type {needed}")]
    WrongType {
        /// The connection.
        connection: ConnectionId,
        /// The operation refused.
        operation: &'static str,
        /// Its type.
        actual: &'static str,
        /// The type the operation needs.
        needed: &'static str,
    },
    /// The operation is not allowed in the connection's state (409).
    #[error("connection {connection} is {state}; {operation} is not allowed in that state")]
    WrongState {
        /// The connection.
        connection: ConnectionId,
        /// The operation refused.
        operation: &'static str,
        /// The connection's state.
        state: &'static str,
    },
    /// Extend or deactivate without a running activation (400, as the contract says).
    #[error("connection {0} has no running activation")]
    NoRunningActivation(ConnectionId),
    /// No period given and the policy has no default (400).
    #[error("no {0} given and the policy sets no default")]
    PeriodRequired(&'static str),
    /// The period is outside 1..=max (400).
    #[error("{what} of {requested} minutes is outside the allowed 1..={max}")]
    PeriodOutOfRange {
        /// `activationPeriodMins` or `activationPeriodExtensionMins`.
        what: &'static str,
        /// The minutes asked for.
        requested: u32,
        /// The most allowed.
        max: u32,
    },
    /// The extension would take the activation past the policy's extension cap (400).
    #[error(
        "extension of {requested} minutes exceeds the policy's cap of {cap} minutes in total ({used} used)"
    )]
    ExtensionOverCap {
        /// The minutes asked for.
        requested: u32,
        /// Minutes already added by earlier extensions.
        used: u32,
        /// The policy's total cap.
        cap: u32,
    },
    /// A field is invalid (400).
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The activation id is already used on this connection (409).
    #[error("activation id {0} is already used")]
    DuplicateActivation(ActivationId),
    /// An effect result or timer that no longer applies (a late or repeated delivery). Not a
    /// client error: the engine drops it.
    #[error("stale {0}")]
    Stale(&'static str),
    /// A timer delivered before its due time. The engine never does this; the core refuses it
    /// so that no timer can fire early.
    #[error("timer due at {due} delivered at {now}")]
    TimerNotDue {
        /// The due time.
        due: Timestamp,
        /// The time of delivery.
        now: Timestamp,
    },
}

/// The class of a [`Rejection`], for mapping to a transport's status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectionKind {
    /// The thing does not exist (404).
    NotFound,
    /// The request is malformed or out of bounds (400).
    Invalid,
    /// The request conflicts with the current state (409).
    Conflict,
    /// The caller may not do this (403): for example, approving an item it is not an approver
    /// of. Only access-request rejections use it.
    Forbidden,
    /// An internal delivery that no longer applies; no client sees it.
    Stale,
}

impl Rejection {
    /// The class of this rejection.
    pub const fn kind(&self) -> RejectionKind {
        match self {
            Rejection::NotFound(_) => RejectionKind::NotFound,
            Rejection::AlreadyExists(_)
            | Rejection::AssignmentTaken { .. }
            | Rejection::WrongType { .. }
            | Rejection::WrongState { .. }
            | Rejection::DuplicateActivation(_) => RejectionKind::Conflict,
            Rejection::NoRunningActivation(_)
            | Rejection::PeriodRequired(_)
            | Rejection::PeriodOutOfRange { .. }
            | Rejection::ExtensionOverCap { .. }
            | Rejection::InvalidField { .. } => RejectionKind::Invalid,
            Rejection::Stale(_) | Rejection::TimerNotDue { .. } => RejectionKind::Stale,
        }
    }
}

/// Why an event could not be applied: the log and the state disagree. `decide` only produces
/// events that apply, so this means a corrupt or foreign log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {change} cannot apply to connection {connection}: {reason}")]
pub struct EvolveError {
    /// The connection.
    pub connection: ConnectionId,
    /// The change's name.
    pub change: &'static str,
    /// What does not fit.
    pub reason: String,
}

impl Change {
    /// Whether a client's [`ClientInfo`] may be recorded on an event of this change: the
    /// changes a client's signal commits (activate, extend, deactivate).
    pub const fn records_client(&self) -> bool {
        matches!(
            self,
            Change::ActivationRequested { .. }
                | Change::Extended { .. }
                | Change::DeactivationRequested
        )
    }

    /// A short name for logs, metrics and errors.
    pub const fn name(&self) -> &'static str {
        match self {
            Change::Registered(_) => "registered",
            Change::Updated(_) => "updated",
            Change::Removed => "removed",
            Change::TypeChanged { .. } => "type_changed",
            Change::ActivationRequested { .. } => "activation_requested",
            Change::ValidationPassed => "validation_passed",
            Change::ValidationRefused { .. } => "validation_refused",
            Change::GrantFailed { .. } => "grant_failed",
            Change::GrantAbandoned { .. } => "grant_abandoned",
            Change::GrantRetried { .. } => "grant_retried",
            Change::Provisioned { .. } => "provisioned",
            Change::CancelledGrantSettled { .. } => "cancelled_grant_settled",
            Change::Extended { .. } => "extended",
            Change::ExpiryWarned { .. } => "expiry_warned",
            Change::DeactivationRequested => "deactivation_requested",
            Change::Expired => "expired",
            Change::RevokeFailed { .. } => "revoke_failed",
            Change::RevokeRetried { .. } => "revoke_retried",
            Change::Revoked { .. } => "revoked",
            Change::StandingRevokeFailed { .. } => "standing_revoke_failed",
            Change::StandingRevokeRetried { .. } => "standing_revoke_retried",
            Change::StandingRevoked { .. } => "standing_revoked",
            Change::DriftFound { .. } => "drift_found",
            Change::RegrantStarted { .. } => "regrant_started",
        }
    }
}

impl Connection {
    /// Whether the target should hold this connection's access, as far as the state says:
    /// `Some(false)` for a JIT connection at rest without access (AVAILABLE, EXPIRED),
    /// `Some(true)` while ACTIVE (JIT or standing), `None` while the access is moving
    /// (ACTIVATING, DEACTIVATING: a grant or revoke in flight explains any difference) or for a
    /// connection the engine does not govern (NA).
    pub fn expects_access(&self) -> Option<bool> {
        match (self.spec.kind, self.state) {
            (ConnectionType::Jit, ConnectionState::Available | ConnectionState::Expired) => {
                Some(false)
            }
            (ConnectionType::Jit | ConnectionType::Standing, ConnectionState::Active) => Some(true),
            _ => None,
        }
    }

    /// The drift an inspection that found the access `held` (or not) shows, if any.
    pub fn drift(&self, held: bool) -> Option<Drift> {
        match (self.expects_access(), held) {
            (Some(false), true) => Some(Drift::UnexpectedAccess),
            (Some(true), false) => Some(Drift::MissingAccess),
            _ => None,
        }
    }

    /// The timers this connection has armed, derived from its state.
    pub fn timers(&self) -> Vec<Timer> {
        let mut timers = Vec::new();
        if let Some(a) = self.running_activation() {
            match a.status {
                ActivationStatus::Provisioned => {
                    if let Some(due) = a.expires_at {
                        timers.push(Timer {
                            due,
                            kind: TimerKind::Expiry,
                        });
                    }
                    if let Some(due) = a.warn_at {
                        timers.push(Timer {
                            due,
                            kind: TimerKind::Warning,
                        });
                    }
                }
                ActivationStatus::Activating | ActivationStatus::Deprovisioning => {
                    if let Some(due) = a.retry_at {
                        timers.push(Timer {
                            due,
                            kind: TimerKind::Retry,
                        });
                    }
                }
                _ => {}
            }
        }
        if let Some(due) = self.standing_revoke.as_ref().and_then(|r| r.retry_at) {
            timers.push(Timer {
                due,
                kind: TimerKind::StandingRetry,
            });
        }
        timers
    }

    /// The effects whose intent is committed and whose result is not: after a restart the
    /// engine runs these again, with the same idempotency keys.
    pub fn pending_effects(&self) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Some(a) = self.running_activation() {
            match (a.status, a.retry_at) {
                (ActivationStatus::Creating, _) => {
                    effects.push(Effect::Validate { activation: a.id })
                }
                (ActivationStatus::Activating, None) => effects.push(Effect::Grant {
                    activation: a.id,
                    attempt: a.attempt,
                }),
                (ActivationStatus::Deprovisioning, None) => effects.push(Effect::Revoke {
                    activation: a.id,
                    attempt: a.attempt,
                }),
                _ => {}
            }
        }
        if let Some(r) = self
            .standing_revoke
            .as_ref()
            .filter(|r| r.retry_at.is_none())
        {
            effects.push(Effect::RevokeStanding { attempt: r.attempt });
        }
        effects
    }
}

/// The elements of `of` that are not in `minus`, in order: what an event arms, cancels or
/// starts, from the derived sets before and after it.
pub(crate) fn difference<T: PartialEq + Copy>(of: &[T], minus: &[T]) -> Vec<T> {
    of.iter().filter(|x| !minus.contains(x)).copied().collect()
}

pub(crate) fn cut_error(text: &str) -> String {
    if text.len() <= MAX_ERROR_LEN {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn retry_seed(config: &Config, salt: u128, attempt: u32) -> u64 {
    config.jitter_seed ^ (salt as u64) ^ ((salt >> 64) as u64) ^ u64::from(attempt).rotate_left(32)
}

pub(crate) fn retry_delay(config: &Config, salt: u128, attempt: u32) -> Duration {
    backoff::delay(
        attempt,
        config.backoff_base,
        config.backoff_cap,
        retry_seed(config, salt, attempt),
    )
}

/// When the expiring-soon warning of an expiry is due, if still ahead: the tenant policy's
/// lead (`Policy::expiry_warning`) before the expiry, else the engine's `warning_lead`.
fn warn_time(expires_at: Timestamp, ctx: &Context<'_>) -> Option<Timestamp> {
    let (now, config) = (ctx.now, ctx.config);
    let lead = ctx
        .policy
        .expiry_warning
        .map_or(config.warning_lead, Minutes::to_duration);
    let at = expires_at.saturating_sub(lead);
    (at > now && at < expires_at).then_some(at)
}

fn wrong_state(c: &Connection, operation: &'static str) -> Rejection {
    Rejection::WrongState {
        connection: c.id(),
        operation,
        state: c.state.as_str(),
    }
}

fn check_minutes(
    requested: Option<Minutes>,
    default: Option<Minutes>,
    max: Option<Minutes>,
    what: &'static str,
) -> Result<Minutes, Rejection> {
    let minutes = requested
        .or(default)
        .ok_or(Rejection::PeriodRequired(what))?;
    let max = max.map_or(MAX_PERIOD_MINS, |m| m.get().min(MAX_PERIOD_MINS));
    if minutes.get() < 1 || minutes.get() > max {
        return Err(Rejection::PeriodOutOfRange {
            what,
            requested: minutes.get(),
            max,
        });
    }
    Ok(minutes)
}

/// Decides what a command means for a connection: the events to commit, or why it is refused.
///
/// `state` is `None` for a connection that was never registered or was removed. Deterministic:
/// the same state, command and context always give the same result.
pub fn decide(
    connection: ConnectionId,
    state: Option<&Connection>,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Vec<Event>, Rejection> {
    Ok(decide_states(connection, state, command, ctx)?
        .into_iter()
        .map(|(event, _)| event)
        .collect())
}

/// [`decide`], with the state each event leaves (what [`evolve`] gives for it, computed once:
/// `decide` evolves each event to derive its timers and effects, and the caller needs the
/// same state to commit beside it).
pub fn decide_states(
    connection: ConnectionId,
    state: Option<&Connection>,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Vec<(Event, Option<Connection>)>, Rejection> {
    if let Some(c) = state {
        assert_eq!(c.id(), connection, "state of another connection");
    }
    if let Command::Register(spec) = command
        && spec.id != connection
    {
        return Err(Rejection::InvalidField {
            field: "id",
            reason: format!("register names {} for connection {connection}", spec.id),
        });
    }
    if let Command::Patch(patch) = command {
        return decide_patch(connection, state, patch, ctx);
    }
    let (activation, change) = match state {
        None => match command {
            Command::Register(spec) => (None, register(spec, ctx)?),
            Command::TimerFired(_)
            | Command::ValidationPassed { .. }
            | Command::ValidationRefused { .. }
            | Command::GrantSucceeded { .. }
            | Command::GrantFailed { .. }
            | Command::RevokeSucceeded { .. }
            | Command::RevokeFailed { .. }
            | Command::StandingRevokeSucceeded { .. }
            | Command::StandingRevokeFailed { .. } => {
                return Err(Rejection::Stale("delivery for a removed connection"));
            }
            _ => return Err(Rejection::NotFound(connection)),
        },
        Some(c) => match decide_existing(c, command, ctx)? {
            Some(decided) => decided,
            None => return Ok(Vec::new()),
        },
    };
    let client = command.client().cloned();
    let (event, after) = stamp(connection, state, activation, change, client, ctx);
    let answer = match (&event.change, &after) {
        (
            Change::DriftFound {
                drift: Drift::MissingAccess,
            },
            Some(after),
        ) => answer_missing_access(connection, after, ctx),
        _ => Vec::new(),
    };
    let mut events = vec![(event, after)];
    events.extend(answer);
    Ok(events)
}

/// The event of `change`, stamped with the timers it arms and cancels and the effects it
/// starts (the difference of the derived sets before and after it), and the state after it.
fn stamp(
    connection: ConnectionId,
    state: Option<&Connection>,
    activation: Option<ActivationId>,
    change: Change,
    client: Option<ClientInfo>,
    ctx: &Context<'_>,
) -> (Event, Option<Connection>) {
    let mut event = Event {
        connection,
        activation,
        at: ctx.now,
        actor: ctx.actor.clone(),
        change,
        arm: Vec::new(),
        cancel: Vec::new(),
        effects: Vec::new(),
        client,
    };
    let after = evolve(state.cloned(), &event)
        .unwrap_or_else(|e| panic!("decide produced an event that does not apply: {e}"));
    let (timers_before, effects_before) = state.map_or((Vec::new(), Vec::new()), |c| {
        (c.timers(), c.pending_effects())
    });
    let (timers_after, effects_after) = after.as_ref().map_or((Vec::new(), Vec::new()), |c| {
        (c.timers(), c.pending_effects())
    });
    event.arm = difference(&timers_after, &timers_before);
    event.cancel = difference(&timers_before, &timers_after);
    event.effects = difference(&effects_after, &effects_before);
    (event, after)
}

/// What follows a missing-access drift of `c` (the state after the `DriftFound`), by the
/// tenant policy's [`MissingAccessAction`]: nothing (report only), a regrant, or the
/// activation's end. Standing access has no activation to act on: it is reported only.
fn answer_missing_access(
    connection: ConnectionId,
    c: &Connection,
    ctx: &Context<'_>,
) -> Vec<(Event, Option<Connection>)> {
    let Some(a) = c.running_activation() else {
        return Vec::new();
    };
    match ctx.policy.on_missing_access {
        MissingAccessAction::Report => Vec::new(),
        MissingAccessAction::GrantAgain => match a.attempt.checked_add(1) {
            Some(attempt) => {
                let change = Change::RegrantStarted { attempt };
                vec![stamp(connection, Some(c), Some(a.id), change, None, ctx)]
            }
            // No try number left: the drift stays reported.
            None => Vec::new(),
        },
        // An ACTIVE activation can always be deactivated; were it refused, the drift would
        // stay reported.
        MissingAccessAction::EndActivation => {
            let deactivate = Command::Deactivate { client: None };
            decide_states(connection, Some(c), &deactivate, ctx).unwrap_or_default()
        }
    }
}

/// A patch is the update of its `standalone` flag followed by its type change, each decided
/// against the state the one before leaves, so that a refusal of either refuses both.
fn decide_patch(
    connection: ConnectionId,
    state: Option<&Connection>,
    patch: &Patch,
    ctx: &Context<'_>,
) -> Result<Vec<(Event, Option<Connection>)>, Rejection> {
    let Some(start) = state else {
        return Err(Rejection::NotFound(connection));
    };
    // A field already at its patched value is no change, so it commits no event.
    let steps = [
        patch
            .standalone
            .filter(|flag| *flag != start.spec.standalone)
            .map(|flag| {
                Command::Update(ConnectionUpdate {
                    standalone: Some(flag),
                    ..ConnectionUpdate::default()
                })
            }),
        patch.kind.map(Command::ChangeType),
    ];
    let mut current = start.clone();
    let mut events = Vec::new();
    for step in steps.into_iter().flatten() {
        for (event, after) in decide_states(connection, Some(&current), &step, ctx)? {
            current = after.clone().expect("a patch never removes the connection");
            events.push((event, after));
        }
    }
    Ok(events)
}

fn register(spec: &ConnectionSpec, ctx: &Context<'_>) -> Result<Change, Rejection> {
    spec.validate()
        .map_err(|(field, reason)| Rejection::InvalidField { field, reason })?;
    let mut spec = spec.clone();
    if ctx.policy.apply_to_future_assignments && ctx.policy.governs(&spec.entitlement) {
        spec.kind = ConnectionType::Jit;
    }
    Ok(Change::Registered(spec))
}

type Decided = Option<(Option<ActivationId>, Change)>;

fn decide_existing(
    c: &Connection,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Decided, Rejection> {
    let running = c.running_activation();
    let current = running.map(|a| a.id);
    let decided = match command {
        Command::Register(spec) => return Err(Rejection::AlreadyExists(spec.id)),
        Command::Patch(_) => unreachable!("decide splits a patch into its steps"),
        Command::Update(update) => {
            update
                .validate()
                .map_err(|(field, reason)| Rejection::InvalidField { field, reason })?;
            if update.is_empty() {
                return Ok(None);
            }
            (None, Change::Updated(update.clone()))
        }
        Command::Remove => {
            let holds_standing =
                c.kind() == ConnectionType::Standing && c.state == ConnectionState::Active;
            if !(c.state.is_at_rest() || holds_standing) {
                return Err(wrong_state(c, "remove"));
            }
            (None, Change::Removed)
        }
        Command::ChangeType(to) => {
            let from = c.kind();
            if *to == from {
                return Ok(None);
            }
            let allowed = match (from, *to) {
                // Changing to or from NA never moves access, so only at rest.
                (_, ConnectionType::Na) | (ConnectionType::Na, _) => c.state.is_at_rest(),
                // JIT -> STANDING keeps access held by a provisioned activation.
                (ConnectionType::Jit, _) => {
                    c.state.is_at_rest() || c.state == ConnectionState::Active
                }
                // STANDING -> JIT revokes standing access when it is held.
                (ConnectionType::Standing, _) => {
                    c.state.is_at_rest() || c.state == ConnectionState::Active
                }
            };
            if !allowed {
                return Err(wrong_state(c, "type change"));
            }
            (current, Change::TypeChanged { from, to: *to })
        }
        Command::Activate {
            activation, period, ..
        } => {
            if c.kind() != ConnectionType::Jit {
                return Err(Rejection::WrongType {
                    connection: c.id(),
                    operation: "activate",
                    actual: c.kind().as_str(),
                    needed: "JIT",
                });
            }
            if !c.state.is_at_rest() {
                return Err(wrong_state(c, "activate"));
            }
            if c.activation.as_ref().is_some_and(|a| a.id == *activation) {
                return Err(Rejection::DuplicateActivation(*activation));
            }
            let period = check_minutes(
                *period,
                ctx.policy.default_activation_period,
                ctx.policy.max_activation_period,
                "activationPeriodMins",
            )?;
            (Some(*activation), Change::ActivationRequested { period })
        }
        Command::Extend { by, .. } => {
            let a = running.ok_or(Rejection::NoRunningActivation(c.id()))?;
            if a.status != ActivationStatus::Provisioned {
                return Err(wrong_state(c, "extend"));
            }
            // Past its expiry the access is already due to go, even if the timer has not been
            // processed yet: extending it now would let access outlive its expiry.
            if a.expires_at.is_none_or(|due| due <= ctx.now) {
                return Err(Rejection::WrongState {
                    connection: c.id(),
                    operation: "extend",
                    state: "EXPIRING",
                });
            }
            let by = check_minutes(
                *by,
                ctx.policy.default_extension,
                None,
                "activationPeriodExtensionMins",
            )?;
            let cap = ctx
                .policy
                .max_extension
                .map_or(MAX_PERIOD_MINS, |m| m.get().min(MAX_PERIOD_MINS));
            let used = a.extended_by.get();
            if u64::from(used) + u64::from(by.get()) > u64::from(cap) {
                return Err(Rejection::ExtensionOverCap {
                    requested: by.get(),
                    used,
                    cap,
                });
            }
            let old = a.expires_at.unwrap_or(ctx.now);
            let expires_at = old.plus_minutes(by);
            let warn_at = warn_time(expires_at, ctx);
            (
                current,
                Change::Extended {
                    by,
                    expires_at,
                    warn_at,
                },
            )
        }
        Command::Deactivate { .. } => {
            let a = running.ok_or(Rejection::NoRunningActivation(c.id()))?;
            if a.status == ActivationStatus::Deprovisioning || a.cancel_requested {
                return Err(wrong_state(c, "deactivate"));
            }
            (current, Change::DeactivationRequested)
        }
        Command::ValidationPassed { activation } => {
            expect(running, *activation, ActivationStatus::Creating)?;
            (current, Change::ValidationPassed)
        }
        Command::ValidationRefused { activation, reason } => {
            expect(running, *activation, ActivationStatus::Creating)?;
            (
                current,
                Change::ValidationRefused {
                    reason: cut_error(reason),
                },
            )
        }
        Command::GrantSucceeded {
            activation,
            attempt,
        } => {
            let a = expect_in_flight(running, *activation, ActivationStatus::Activating, *attempt)?;
            if a.cancel_requested {
                (
                    current,
                    Change::CancelledGrantSettled {
                        attempt: *attempt,
                        error: None,
                    },
                )
            } else {
                // A regrant (after missing access was found) keeps the expiry it had.
                let expires_at = a
                    .expires_at
                    .unwrap_or_else(|| ctx.now.plus_minutes(a.period));
                (
                    current,
                    Change::Provisioned {
                        attempt: *attempt,
                        expires_at,
                        warn_at: warn_time(expires_at, ctx),
                    },
                )
            }
        }
        Command::GrantFailed {
            activation,
            attempt,
            error,
            retryable,
        } => {
            let a = expect_in_flight(running, *activation, ActivationStatus::Activating, *attempt)?;
            let error = cut_error(error);
            if a.cancel_requested {
                (
                    current,
                    Change::CancelledGrantSettled {
                        attempt: *attempt,
                        error: Some(error),
                    },
                )
            } else if *retryable && *attempt < ctx.config.grant_max_attempts {
                let retry_at =
                    ctx.now
                        .saturating_add(retry_delay(ctx.config, a.id.as_u128(), *attempt));
                (
                    current,
                    Change::GrantFailed {
                        attempt: *attempt,
                        error,
                        retry_at,
                    },
                )
            } else {
                (
                    current,
                    Change::GrantAbandoned {
                        attempt: *attempt,
                        error,
                    },
                )
            }
        }
        Command::RevokeSucceeded {
            activation,
            attempt,
        } => {
            let a = expect_in_flight(
                running,
                *activation,
                ActivationStatus::Deprovisioning,
                *attempt,
            )?;
            let reason = a
                .end_reason
                .unwrap_or_else(|| panic!("deprovisioning activation {} has no end reason", a.id));
            (
                current,
                Change::Revoked {
                    attempt: *attempt,
                    reason,
                },
            )
        }
        Command::RevokeFailed {
            activation,
            attempt,
            error,
        } => {
            let a = expect_in_flight(
                running,
                *activation,
                ActivationStatus::Deprovisioning,
                *attempt,
            )?;
            let retry_at =
                ctx.now
                    .saturating_add(retry_delay(ctx.config, a.id.as_u128(), *attempt));
            (
                current,
                Change::RevokeFailed {
                    attempt: *attempt,
                    error: cut_error(error),
                    retry_at,
                    became_stuck: !a.stuck && *attempt >= ctx.config.stuck_after,
                },
            )
        }
        Command::StandingRevokeSucceeded { attempt } => {
            let job = expect_standing(c, *attempt)?;
            (
                None,
                Change::StandingRevoked {
                    attempt: job.attempt,
                },
            )
        }
        Command::StandingRevokeFailed { attempt, error } => {
            let job = expect_standing(c, *attempt)?;
            let retry_at =
                ctx.now
                    .saturating_add(retry_delay(ctx.config, c.id().as_u128(), *attempt));
            (
                None,
                Change::StandingRevokeFailed {
                    attempt: *attempt,
                    error: cut_error(error),
                    retry_at,
                    became_stuck: !job.stuck && *attempt >= ctx.config.stuck_after,
                },
            )
        }
        Command::Inspected { held, version } => {
            if c.version != *version {
                return Err(Rejection::Stale(
                    "the connection changed since the inspection",
                ));
            }
            // Nothing to record when the target agrees, or the access is moving.
            let Some(drift) = c.drift(*held) else {
                return Ok(None);
            };
            (current, Change::DriftFound { drift })
        }
        Command::TimerFired(timer) => {
            if !c.timers().contains(timer) {
                return Err(Rejection::Stale("timer"));
            }
            if ctx.now < timer.due {
                return Err(Rejection::TimerNotDue {
                    due: timer.due,
                    now: ctx.now,
                });
            }
            match timer.kind {
                TimerKind::Expiry => (current, Change::Expired),
                TimerKind::Warning => {
                    let expires_at = running.and_then(|a| a.expires_at).unwrap_or(timer.due);
                    if expires_at <= ctx.now {
                        // Delivered late (after downtime), with the expiry due too: a warning now
                        // would come after the fact, so the activation expires instead.
                        (current, Change::Expired)
                    } else {
                        (current, Change::ExpiryWarned { expires_at })
                    }
                }
                TimerKind::Retry => {
                    let a = running.unwrap_or_else(|| panic!("retry timer without activation"));
                    let attempt = a.attempt + 1;
                    if a.status == ActivationStatus::Activating {
                        (current, Change::GrantRetried { attempt })
                    } else {
                        (current, Change::RevokeRetried { attempt })
                    }
                }
                TimerKind::StandingRetry => {
                    let attempt = c.standing_revoke.as_ref().map_or(1, |r| r.attempt + 1);
                    (None, Change::StandingRevokeRetried { attempt })
                }
            }
        }
    };
    Ok(Some(decided))
}

fn expect(
    running: Option<&Activation>,
    id: ActivationId,
    status: ActivationStatus,
) -> Result<&Activation, Rejection> {
    running
        .filter(|a| a.id == id && a.status == status)
        .ok_or(Rejection::Stale("activation result"))
}

/// The activation `id` in `status` with try `attempt` in flight (not waiting to retry).
fn expect_in_flight(
    running: Option<&Activation>,
    id: ActivationId,
    status: ActivationStatus,
    attempt: u32,
) -> Result<&Activation, Rejection> {
    expect(running, id, status)?;
    running
        .filter(|a| a.attempt == attempt && a.retry_at.is_none())
        .ok_or(Rejection::Stale("effect result"))
}

fn expect_standing(c: &Connection, attempt: u32) -> Result<&StandingRevoke, Rejection> {
    c.standing_revoke
        .as_ref()
        .filter(|r| r.attempt == attempt && r.retry_at.is_none())
        .ok_or(Rejection::Stale("standing revoke result"))
}

/// Applies one event. Deterministic; the result passes [`Connection::check_invariants`].
pub fn evolve(state: Option<Connection>, event: &Event) -> Result<Option<Connection>, EvolveError> {
    let fail = |reason: String| EvolveError {
        connection: event.connection,
        change: event.change.name(),
        reason,
    };
    if event.client.is_some() && !event.change.records_client() {
        return Err(fail(
            "client info on a change no client's signal commits".into(),
        ));
    }
    let at = event.at;
    let mut c = match (state, &event.change) {
        (None, Change::Registered(spec)) => {
            if spec.id != event.connection {
                return Err(fail(format!("spec names connection {}", spec.id)));
            }
            let held = spec.kind == ConnectionType::Standing;
            let c = Connection {
                spec: spec.clone(),
                state: if held {
                    ConnectionState::Active
                } else {
                    ConnectionState::Available
                },
                jit: Default::default(),
                created: at,
                modified: at,
                state_changed: at,
                state_changed_by: event.actor.clone(),
                activation: None,
                standing_revoke: None,
                version: 1,
            };
            return Ok(Some(c));
        }
        (None, _) => return Err(fail("connection does not exist".into())),
        (Some(_), Change::Registered(_)) => return Err(fail("connection exists".into())),
        (Some(c), Change::Removed) => {
            if !(c.state.is_at_rest()
                || (c.kind() == ConnectionType::Standing && c.state == ConnectionState::Active))
            {
                return Err(fail(format!("removed while {}", c.state.as_str())));
            }
            return Ok(None);
        }
        (Some(c), _) => c,
    };
    if c.id() != event.connection {
        return Err(fail(format!("state is connection {}", c.id())));
    }
    let old_state = c.state;
    let running_id = c.running_activation().map(|a| a.id);
    let needs_running = !matches!(
        event.change,
        Change::Updated(_)
            | Change::TypeChanged { .. }
            | Change::ActivationRequested { .. }
            | Change::StandingRevokeFailed { .. }
            | Change::StandingRevokeRetried { .. }
            | Change::StandingRevoked { .. }
            | Change::DriftFound { .. }
    );
    // A drift names the running activation when there is one (missing access), else none.
    let names_other =
        matches!(event.change, Change::DriftFound { .. }) && running_id != event.activation;
    if names_other || (needs_running && (running_id.is_none() || running_id != event.activation)) {
        return Err(fail(format!(
            "event names activation {:?}, running is {:?}",
            event.activation, running_id
        )));
    }
    match &event.change {
        Change::Registered(_) | Change::Removed => unreachable!("handled above"),
        Change::Updated(update) => c.spec.apply(update),
        Change::TypeChanged { from, to } => {
            if c.kind() != *from {
                return Err(fail(format!("type is {}", c.kind().as_str())));
            }
            c.spec.kind = *to;
            match (*from, *to, c.state) {
                (ConnectionType::Jit, ConnectionType::Standing, ConnectionState::Active) => {
                    // The access stays, now standing; the activation's timers end with it.
                    let a = running_mut(&mut c).ok_or_else(|| fail("no activation".into()))?;
                    a.status = ActivationStatus::Completed;
                    a.ended_at = Some(at);
                    a.warn_at = None;
                }
                (ConnectionType::Standing, ConnectionType::Jit, ConnectionState::Active) => {
                    start_standing_revoke(&mut c, at);
                }
                (_, _, state) if state.is_at_rest() => {}
                (from, to, state) => {
                    return Err(fail(format!(
                        "{} -> {} while {}",
                        from.as_str(),
                        to.as_str(),
                        state.as_str()
                    )));
                }
            }
        }
        Change::ActivationRequested { period } => {
            let id = event
                .activation
                .ok_or_else(|| fail("no activation id".into()))?;
            if running_id.is_some() || !c.state.is_at_rest() || c.kind() != ConnectionType::Jit {
                return Err(fail("activation already running".into()));
            }
            c.activation = Some(Activation {
                id,
                connection: c.id(),
                period: *period,
                requested_by: event.actor.clone(),
                status: ActivationStatus::Creating,
                requested_at: at,
                validated_at: None,
                provisioned_at: None,
                deprovision_started_at: None,
                ended_at: None,
                expires_at: None,
                warn_at: None,
                extended_by: Minutes(0),
                extensions: 0,
                attempt: 0,
                retry_at: None,
                cancel_requested: false,
                end_reason: None,
                last_error: None,
                stuck: false,
            });
            c.state = ConnectionState::Activating;
            c.jit = crate::connection::JitTimes {
                activation: Some(at),
                ..Default::default()
            };
        }
        Change::ValidationPassed => {
            let a = running_in(&mut c, ActivationStatus::Creating).map_err(&fail)?;
            a.status = ActivationStatus::Activating;
            a.validated_at = Some(at);
            a.attempt = 1;
        }
        Change::ValidationRefused { reason } => {
            let a = running_in(&mut c, ActivationStatus::Creating).map_err(&fail)?;
            a.status = ActivationStatus::Invalid;
            a.last_error = Some(reason.clone());
            a.ended_at = Some(at);
            c.state = ConnectionState::Available;
        }
        Change::GrantFailed {
            attempt,
            error,
            retry_at,
        } => {
            let a = running_in(&mut c, ActivationStatus::Activating).map_err(&fail)?;
            check_attempt(a, *attempt).map_err(&fail)?;
            a.retry_at = Some(*retry_at);
            a.last_error = Some(error.clone());
        }
        Change::GrantAbandoned { attempt, error } => {
            let a = running_in(&mut c, ActivationStatus::Activating).map_err(&fail)?;
            check_attempt(a, *attempt).map_err(&fail)?;
            a.last_error = Some(error.clone());
            start_revoke(a, EndReason::ProvisionFailed, at);
            c.state = ConnectionState::Deactivating;
            c.jit.deactivation = Some(at);
        }
        Change::GrantRetried { attempt } | Change::RevokeRetried { attempt } => {
            let a = running_mut(&mut c).ok_or_else(|| fail("no activation".into()))?;
            if a.retry_at.is_none_or(|due| due > at) || *attempt != a.attempt + 1 {
                return Err(fail(format!("retry {attempt} not due")));
            }
            a.retry_at = None;
            a.attempt = *attempt;
        }
        Change::Provisioned {
            attempt,
            expires_at,
            warn_at,
        } => {
            let a = running_in(&mut c, ActivationStatus::Activating).map_err(&fail)?;
            check_attempt(a, *attempt).map_err(&fail)?;
            if a.cancel_requested {
                return Err(fail("provisioned after cancel".into()));
            }
            a.status = ActivationStatus::Provisioned;
            a.provisioned_at = Some(at);
            a.expires_at = Some(*expires_at);
            a.warn_at = *warn_at;
            a.last_error = None;
            c.state = ConnectionState::Active;
            c.jit.provision = Some(at);
            c.jit.expiration = Some(*expires_at);
        }
        Change::CancelledGrantSettled { attempt, error } => {
            let a = running_in(&mut c, ActivationStatus::Activating).map_err(&fail)?;
            check_attempt(a, *attempt).map_err(&fail)?;
            if !a.cancel_requested {
                return Err(fail("no cancel requested".into()));
            }
            if let Some(e) = error {
                a.last_error = Some(e.clone());
            }
            a.cancel_requested = false;
            start_revoke(a, EndReason::Deactivated, at);
        }
        Change::Extended {
            by,
            expires_at,
            warn_at,
        } => {
            let a = running_in(&mut c, ActivationStatus::Provisioned).map_err(&fail)?;
            a.extended_by = Minutes(a.extended_by.get().saturating_add(by.get()));
            a.extensions = a.extensions.saturating_add(1);
            a.expires_at = Some(*expires_at);
            a.warn_at = *warn_at;
            c.jit.expiration = Some(*expires_at);
        }
        Change::ExpiryWarned { .. } => {
            let a = running_in(&mut c, ActivationStatus::Provisioned).map_err(&fail)?;
            a.warn_at = None;
        }
        Change::DeactivationRequested => {
            let a = running_mut(&mut c).ok_or_else(|| fail("no activation".into()))?;
            match (a.status, a.retry_at) {
                (ActivationStatus::Creating, _) => {
                    // Nothing was granted: the activation ends at once.
                    a.status = ActivationStatus::Revoked;
                    a.end_reason = Some(EndReason::Deactivated);
                    a.ended_at = Some(at);
                    c.state = ConnectionState::Available;
                }
                (ActivationStatus::Activating, None) => {
                    // A grant is in flight: revoking now could race it, so wait for it to settle.
                    a.cancel_requested = true;
                    c.state = ConnectionState::Deactivating;
                }
                (ActivationStatus::Activating, Some(_)) | (ActivationStatus::Provisioned, _) => {
                    start_revoke(a, EndReason::Deactivated, at);
                    c.state = ConnectionState::Deactivating;
                }
                (status, _) => return Err(fail(format!("deactivate while {}", status.as_str()))),
            }
            c.jit.deactivation = Some(at);
        }
        Change::Expired => {
            let a = running_in(&mut c, ActivationStatus::Provisioned).map_err(&fail)?;
            if a.expires_at.is_none_or(|due| due > at) {
                return Err(fail("expired before its expiry".into()));
            }
            start_revoke(a, EndReason::Expired, at);
            c.state = ConnectionState::Deactivating;
            c.jit.deactivation = Some(at);
        }
        Change::RevokeFailed {
            attempt,
            error,
            retry_at,
            became_stuck,
        } => {
            let a = running_in(&mut c, ActivationStatus::Deprovisioning).map_err(&fail)?;
            check_attempt(a, *attempt).map_err(&fail)?;
            a.retry_at = Some(*retry_at);
            a.last_error = Some(error.clone());
            a.stuck |= *became_stuck;
        }
        Change::Revoked { attempt, reason } => {
            let a = running_in(&mut c, ActivationStatus::Deprovisioning).map_err(&fail)?;
            check_attempt(a, *attempt).map_err(&fail)?;
            if a.end_reason != Some(*reason) {
                return Err(fail(format!("reason {:?} != {:?}", reason, a.end_reason)));
            }
            a.status = match reason {
                EndReason::Expired => ActivationStatus::Completed,
                EndReason::Deactivated => ActivationStatus::Revoked,
                EndReason::ProvisionFailed => ActivationStatus::Error,
            };
            a.ended_at = Some(at);
            a.stuck = false;
            c.state = if *reason == EndReason::Expired {
                ConnectionState::Expired
            } else {
                ConnectionState::Available
            };
            c.jit.deprovision = Some(at);
        }
        Change::StandingRevokeFailed {
            attempt,
            error,
            retry_at,
            became_stuck,
        } => {
            let job = c
                .standing_revoke
                .as_mut()
                .filter(|j| j.attempt == *attempt && j.retry_at.is_none())
                .ok_or_else(|| fail(format!("no standing revoke try {attempt} in flight")))?;
            job.retry_at = Some(*retry_at);
            job.last_error = Some(error.clone());
            job.stuck |= *became_stuck;
        }
        Change::StandingRevokeRetried { attempt } => {
            let job = c
                .standing_revoke
                .as_mut()
                .filter(|j| j.retry_at.is_some_and(|due| due <= at) && *attempt == j.attempt + 1)
                .ok_or_else(|| fail(format!("standing retry {attempt} not due")))?;
            job.retry_at = None;
            job.attempt = *attempt;
        }
        Change::DriftFound { drift } => {
            if c.drift(*drift == Drift::UnexpectedAccess) != Some(*drift) {
                return Err(fail(format!(
                    "{} while {} ({})",
                    drift.as_str(),
                    c.state.as_str(),
                    c.kind().as_str()
                )));
            }
            if *drift == Drift::UnexpectedAccess {
                // Revoked like standing access: retried for ever, flagged stuck at the bound.
                start_standing_revoke(&mut c, at);
            }
        }
        Change::RegrantStarted { attempt } => {
            let a = running_in(&mut c, ActivationStatus::Provisioned).map_err(&fail)?;
            if a.attempt.checked_add(1) != Some(*attempt) {
                return Err(fail(format!(
                    "regrant try {attempt} does not follow try {}",
                    a.attempt
                )));
            }
            a.status = ActivationStatus::Activating;
            a.attempt = *attempt;
            a.retry_at = None;
            a.warn_at = None;
            c.state = ConnectionState::Activating;
        }
        Change::StandingRevoked { attempt } => {
            if c.standing_revoke
                .as_ref()
                .is_none_or(|j| j.attempt != *attempt || j.retry_at.is_some())
            {
                return Err(fail(format!("no standing revoke try {attempt} in flight")));
            }
            c.standing_revoke = None;
            c.state = ConnectionState::Available;
            c.jit.deprovision = Some(at);
        }
    }
    c.modified = at;
    if c.state != old_state {
        c.state_changed = at;
        c.state_changed_by = event.actor.clone();
    }
    c.version += 1;
    c.check_invariants().map_err(fail)?;
    Ok(Some(c))
}

fn running_mut(c: &mut Connection) -> Option<&mut Activation> {
    c.activation.as_mut().filter(|a| !a.status.is_terminal())
}

fn running_in(c: &mut Connection, status: ActivationStatus) -> Result<&mut Activation, String> {
    match running_mut(c) {
        Some(a) if a.status == status => Ok(a),
        Some(a) => Err(format!(
            "activation is {}, not {}",
            a.status.as_str(),
            status.as_str()
        )),
        None => Err("no running activation".into()),
    }
}

fn check_attempt(a: &Activation, attempt: u32) -> Result<(), String> {
    if a.attempt != attempt || a.retry_at.is_some() {
        return Err(format!(
            "try {attempt} is not in flight (try {}, retry at {:?})",
            a.attempt, a.retry_at
        ));
    }
    Ok(())
}

/// Starts removing access that no activation holds (standing access, or drift found): the
/// connection is DEACTIVATING until the revoke succeeds.
fn start_standing_revoke(c: &mut Connection, at: Timestamp) {
    c.state = ConnectionState::Deactivating;
    c.jit.deactivation = Some(at);
    c.standing_revoke = Some(StandingRevoke {
        attempt: 1,
        retry_at: None,
        stuck: false,
        last_error: None,
    });
}

fn start_revoke(a: &mut Activation, reason: EndReason, at: Timestamp) {
    a.status = ActivationStatus::Deprovisioning;
    a.end_reason = Some(reason);
    a.deprovision_started_at = Some(at);
    a.attempt = 1;
    a.retry_at = None;
    a.warn_at = None;
    a.stuck = false;
}

/// A committed change of a tenant's policy: who, when, and the whole old and new values, so the
/// audit shows policy history without replaying patches. Persisted: never reorder fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEvent {
    /// When it happened.
    pub at: Timestamp,
    /// Who changed it.
    pub actor: Actor,
    /// The policy before (`None` when it is first stored).
    pub previous: Option<Policy>,
    /// The policy after; its `version` is the previous version + 1 (1 when first stored).
    pub policy: Policy,
}

/// A request to change a tenant's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyCommand {
    /// Store a whole policy (creates it, or replaces every field but the id of a stored one).
    Put(Policy),
    /// The contract's PATCH: replace operations applied all or nothing.
    Patch {
        /// The operations, in order.
        ops: Vec<PatchOp>,
        /// The version the caller based the patch on; a different stored version is a conflict.
        expected_version: Option<u64>,
    },
}

/// Why a policy change was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyRejection {
    /// Patch of a policy that was never stored (404).
    #[error("the JIT activation policy has not been stored yet")]
    NotFound,
    /// The policy changed since the version the caller based its patch on (409).
    #[error("the policy is at version {actual}, not the expected {expected}")]
    VersionConflict {
        /// The version the caller expected.
        expected: u64,
        /// The stored version.
        actual: u64,
    },
    /// The patch or the resulting policy is invalid (400).
    #[error(transparent)]
    Invalid(#[from] crate::policy::Error),
}

/// Decides a policy change: the event to commit, or why it is refused.
pub fn decide_policy(
    current: Option<&Policy>,
    command: &PolicyCommand,
    ctx: &Context<'_>,
) -> Result<PolicyEvent, PolicyRejection> {
    let policy = match command {
        PolicyCommand::Put(new) => {
            let mut new = new.clone();
            match current {
                Some(old) => {
                    new.id.clone_from(&old.id);
                    new.version = old
                        .version
                        .checked_add(1)
                        .ok_or(crate::policy::Error::VersionExhausted)?;
                }
                None => new.version = 1,
            }
            new.validate()?;
            new
        }
        PolicyCommand::Patch {
            ops,
            expected_version,
        } => {
            let old = current.ok_or(PolicyRejection::NotFound)?;
            if let Some(expected) = *expected_version
                && expected != old.version
            {
                return Err(PolicyRejection::VersionConflict {
                    expected,
                    actual: old.version,
                });
            }
            old.patched(ops)?
        }
    };
    Ok(PolicyEvent {
        at: ctx.now,
        actor: ctx.actor.clone(),
        previous: current.cloned(),
        policy,
    })
}
