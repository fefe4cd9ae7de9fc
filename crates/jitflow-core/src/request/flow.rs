//! The request item lifecycle as a pure state machine: `decide` turns a command into events or a
//! rejection; `evolve` applies one event to the item.
//!
//! As for connections, timers ([`Item::timers`]) and in-flight effects
//! ([`Item::pending_effects`]) are derived from the state, and `decide` stamps each event with
//! the difference before and after it. One command may produce several events (a submission
//! that is approved at once and starts its grant is `Submitted`, `Approved`, `GrantStarted`);
//! each event's timers and effects are the difference across that event alone.

use serde::{Deserialize, Serialize};

use super::item::{
    Approval, ApprovalStep, Cancellation, Closure, Forward, Grant, Item, ItemStatus,
    MAX_APPROVAL_WAIT, MAX_APPROVERS, MAX_FORWARDS, MIN_APPROVAL_WAIT, ReassignmentType, Removal,
    RemovalReason, WorkItemState,
};
use super::submit::{
    Duplicate, Existing, ItemSpec, ObjectKind, RequestType, check_comment, duplicate_of,
};
use crate::connection::ConnectionType;
use crate::id::{ActivationId, ApprovalId, EntitlementId, IdentityId, RequestItemId};
use crate::lifecycle::{Actor, Config, RejectionKind, cut_error, difference, retry_delay};
use crate::policy::Policy;
use crate::time::Timestamp;

/// What `decide` needs besides the item and the command. The clock is an argument.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The current time.
    pub now: Timestamp,
    /// Who sends the command.
    pub actor: &'a Actor,
    /// Whether the actor is an administrator (ORG_ADMIN): it may approve, reject, cancel and
    /// close any item. The API layer knows the caller's levels; the core only applies the rule.
    pub admin: bool,
    /// The tenant's JIT policy as it is now (it decides whether an entitlement grant makes a JIT
    /// or a STANDING connection).
    pub policy: &'a Policy,
    /// Retry and alerting settings, shared with the connection lifecycle.
    pub config: &'a Config,
    /// The JIT activation running on the item's entitlement connection, if any, as the engine
    /// reads it from the connection's projection: a removal deactivates it first.
    pub running_activation: Option<ActivationId>,
}

/// What a timer is for. One item has at most one timer of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimerKind {
    /// The pending approval expires unanswered.
    ApprovalExpiry,
    /// A grant's sunrise (`startDate`): provisioning starts.
    Sunrise,
    /// A grant's sunset, or a revoke's removal date (`removeDate`): removal starts.
    Sunset,
    /// The next grant or revoke try is due.
    Retry,
}

/// A durable timer of one item.
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
    /// Grant the item's access (try `attempt`). For an entitlement, the engine creates or
    /// updates the entitlement connection with type `kind`, and provisions the access through
    /// the `Provisioner` only when `kind` is STANDING (a JIT connection gets access only while
    /// activated). For a role or an access profile (`kind` is `None`) it provisions the object.
    Grant {
        /// The try, from 1.
        attempt: u32,
        /// The connection type for an entitlement.
        kind: Option<ConnectionType>,
    },
    /// Deactivate the JIT activation running on the item's connection, and report back once it
    /// has ended (the connection's own lifecycle revokes it, with its retries).
    DeactivateJit {
        /// The activation.
        activation: ActivationId,
    },
    /// Remove the item's access (try `attempt`); succeed if it is already gone.
    Revoke {
        /// The try, from 1.
        attempt: u32,
    },
}

impl Effect {
    /// The key the target can use to recognise a repeated call: the same intent after a
    /// restart carries the same key.
    pub fn idempotency_key(&self, item: RequestItemId) -> String {
        match self {
            Effect::Grant { attempt, .. } => format!("{item}:grant:{attempt}"),
            Effect::DeactivateJit { activation } => format!("{item}:deactivate:{activation}"),
            Effect::Revoke { attempt } => format!("{item}:revoke:{attempt}"),
        }
    }
}

/// A request to change one item. The actor (approver, canceller, admin) is the context's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Start the item's workflow. `existing` is what the identity holds of the object and
    /// what is in progress for it (the duplicate rule's input); `approval` is the step the
    /// embedder configured.
    Submit {
        /// The item, from [`validate_submit`](super::validate_submit) (boxed: it is much larger
        /// than the other commands).
        spec: Box<ItemSpec>,
        /// The approval step.
        approval: ApprovalStep,
        /// What exists already.
        existing: Existing,
    },
    /// Approve the pending approval (an approver of the item, or an admin).
    Approve {
        /// The approver's comment.
        comment: Option<String>,
    },
    /// Reject the pending approval (an approver of the item, or an admin).
    Reject {
        /// The approver's comment.
        comment: Option<String>,
    },
    /// Cancel before the approval step has passed (the requester, or an admin).
    Cancel {
        /// Why (required by the contract).
        comment: String,
    },
    /// Close at any stage (an admin).
    Close(Closure),
    /// A later item for the same access took it over: end without removing it.
    Supersede {
        /// The later item.
        by: RequestItemId,
    },
    /// The JIT activation named by [`Effect::DeactivateJit`] has ended.
    JitDeactivated {
        /// The activation.
        activation: ActivationId,
    },
    /// A grant try succeeded.
    GrantSucceeded {
        /// The try.
        attempt: u32,
    },
    /// A grant try failed; `retryable: false` means the target refused for good.
    GrantFailed {
        /// The try.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// Whether another try may succeed.
        retryable: bool,
    },
    /// A revoke try succeeded.
    RevokeSucceeded {
        /// The try.
        attempt: u32,
    },
    /// A revoke try failed (it is retried forever).
    RevokeFailed {
        /// The try.
        attempt: u32,
        /// What went wrong.
        error: String,
    },
    /// A timer of this item is due (approval expiry, sunrise, sunset, retry).
    TimerFired(Timer),
    /// Forward the pending approval to a new owner (an approver of the item, or an admin). An
    /// approver hands its own place over; an admin who is not an approver takes the approval
    /// from every approver. The new owner must not be an approver already, nor the identity
    /// the access is for, nor its requester (self-review), and an approval is forwarded at most
    /// [`MAX_FORWARDS`] times.
    Forward {
        /// The new owner.
        to: IdentityId,
        /// Why (required by the contract).
        comment: String,
    },
}

impl Command {
    /// A short name for logs and metrics.
    pub const fn name(&self) -> &'static str {
        match self {
            Command::Submit { .. } => "submit",
            Command::Approve { .. } => "approve",
            Command::Reject { .. } => "reject",
            Command::Cancel { .. } => "cancel",
            Command::Close(_) => "close",
            Command::Supersede { .. } => "supersede",
            Command::JitDeactivated { .. } => "jit_deactivated",
            Command::GrantSucceeded { .. } => "grant_succeeded",
            Command::GrantFailed { .. } => "grant_failed",
            Command::RevokeSucceeded { .. } => "revoke_succeeded",
            Command::RevokeFailed { .. } => "revoke_failed",
            Command::TimerFired(_) => "timer_fired",
            Command::Forward { .. } => "forward",
        }
    }
}

/// What happened to an item. Persisted: the variant order is part of the file format, so never
/// reorder, remove or reuse variants; add new ones at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The item was submitted; its approval step starts.
    Submitted {
        /// What was submitted (boxed: it is much larger than the other changes).
        spec: Box<ItemSpec>,
        /// The approval step, with its id and expiry.
        approval: Approval,
    },
    /// The approval step approved it (`auto`: without an approver).
    Approved {
        /// The approver's comment.
        comment: Option<String>,
        /// Approved by the embedder's configuration, not by a person.
        auto: bool,
    },
    /// The approval step rejected it.
    Rejected {
        /// The approver's comment.
        comment: Option<String>,
    },
    /// Nobody answered the approval in time.
    ApprovalExpired,
    /// Cancelled before the approval step passed, or as a duplicate.
    Cancelled {
        /// Why.
        comment: String,
        /// What it duplicated, when cancelled as a duplicate.
        duplicate: Option<Duplicate>,
    },
    /// An admin closed it. Before anything was granted it ends here; mid-grant a cleanup
    /// follows; once granted or while removing, only the close is recorded.
    Closed(Closure),
    /// A later item took the access over.
    Superseded {
        /// The later item.
        by: RequestItemId,
    },
    /// The removal date passed before the grant could start; nothing is granted.
    Lapsed,
    /// The grant starts (try 1).
    GrantStarted {
        /// The connection type an entitlement grant gives.
        kind: Option<ConnectionType>,
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
    /// A scheduled grant try starts.
    GrantRetried {
        /// The new try.
        attempt: u32,
    },
    /// The grant succeeded.
    Granted {
        /// The successful try.
        attempt: u32,
    },
    /// Provisioning gave up; the grant's outcome is unknown, so removal starts (fail closed).
    GrantAbandoned {
        /// The last try.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// A JIT activation to deactivate first.
        deactivate: Option<ActivationId>,
    },
    /// A sunset or close arrived while a grant try was in flight: remove once it settles.
    StopRequested {
        /// Why access will be removed.
        reason: RemovalReason,
    },
    /// The grant try in flight when a stop was requested has settled; removal starts.
    GrantSettled {
        /// The try that settled.
        attempt: u32,
        /// Its error, if it failed (the removal runs either way: fail closed).
        error: Option<String>,
        /// A JIT activation to deactivate first.
        deactivate: Option<ActivationId>,
    },
    /// Removal starts (revoke approved and due, sunset, or close during a grant retry wait).
    RemovalStarted {
        /// Why.
        reason: RemovalReason,
        /// A JIT activation to deactivate first.
        deactivate: Option<ActivationId>,
    },
    /// The JIT activation was deactivated; the revoke starts.
    JitDeactivated,
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
    /// The access was removed; the item ends.
    Removed {
        /// The successful try.
        attempt: u32,
    },
    /// The pending approval was forwarded: `from` leave the approvers, `to` joins them, and
    /// the forward is added to the item's history (the event's actor and time are the
    /// forwarder's).
    Forwarded {
        /// The approvers it was taken from (sorted).
        from: Vec<IdentityId>,
        /// The new owner.
        to: IdentityId,
        /// The forwarder's comment.
        comment: String,
        /// How it was reassigned.
        reassignment: ReassignmentType,
    },
}

impl Change {
    /// A short name for logs, metrics and errors.
    pub const fn name(&self) -> &'static str {
        match self {
            Change::Submitted { .. } => "submitted",
            Change::Approved { .. } => "approved",
            Change::Rejected { .. } => "rejected",
            Change::ApprovalExpired => "approval_expired",
            Change::Cancelled { .. } => "cancelled",
            Change::Closed(_) => "closed",
            Change::Superseded { .. } => "superseded",
            Change::Lapsed => "lapsed",
            Change::GrantStarted { .. } => "grant_started",
            Change::GrantFailed { .. } => "grant_failed",
            Change::GrantRetried { .. } => "grant_retried",
            Change::Granted { .. } => "granted",
            Change::GrantAbandoned { .. } => "grant_abandoned",
            Change::StopRequested { .. } => "stop_requested",
            Change::GrantSettled { .. } => "grant_settled",
            Change::RemovalStarted { .. } => "removal_started",
            Change::JitDeactivated => "jit_deactivated",
            Change::RevokeFailed { .. } => "revoke_failed",
            Change::RevokeRetried { .. } => "revoke_retried",
            Change::Removed { .. } => "removed",
            Change::Forwarded { .. } => "forwarded",
        }
    }
}

/// What an embedder's notifier is told about an item. Not persisted: it is derived from each
/// committed event by [`Event::notice`].
///
/// The contract's Provisioning Completed trigger is any of [`Notice::Granted`],
/// [`Notice::GrantFailed`], [`Notice::Revoked`] and [`Notice::Closed`]
/// ([`Notice::is_provisioning_completed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Notice {
    /// An approval waits for its approvers.
    ApprovalRequested,
    /// The approval was forwarded: it now waits for its new owner.
    Forwarded,
    /// The item was approved.
    Approved,
    /// The item was rejected.
    Rejected,
    /// The item was cancelled (by a person, or as a duplicate).
    Cancelled,
    /// The approval expired unanswered.
    ApprovalExpired,
    /// The access was granted: at its sunrise (start date), or at approval without one.
    Granted,
    /// Provisioning gave up; a fail-closed removal follows.
    GrantFailed,
    /// A revoke request's access was removed.
    Revoked,
    /// An admin closed the item.
    Closed,
    /// The access was removed at its sunset.
    SunsetRemoved,
    /// A removal keeps failing; someone must look.
    Stuck,
    /// A removal that had been flagged stuck finally succeeded.
    Recovered,
}

impl Notice {
    /// Whether this is one of the contract's Provisioning Completed triggers.
    pub const fn is_provisioning_completed(self) -> bool {
        matches!(
            self,
            Notice::Granted | Notice::GrantFailed | Notice::Revoked | Notice::Closed
        )
    }
}

/// One committed fact about one item, with the timers and effects it implies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The item (the stream).
    pub item: RequestItemId,
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
}

impl Event {
    /// The notification this event triggers, if any; `after` is the item once the event is
    /// applied (a removal's notice depends on why the access was removed). `stuck_after` is the
    /// engine's stuck bound: a removal that succeeds on a try past it had been flagged stuck,
    /// and is told as [`Notice::Recovered`] (see `lifecycle::Event::notice` for the caveat).
    pub fn notice(&self, after: &Item, stuck_after: u32) -> Option<Notice> {
        match &self.change {
            Change::Submitted { approval, .. } if !approval.approvers.is_empty() => {
                Some(Notice::ApprovalRequested)
            }
            // The new owner is asked, as the approvers were at submission.
            Change::Forwarded { .. } => Some(Notice::Forwarded),
            Change::Approved { .. } => Some(Notice::Approved),
            Change::Rejected { .. } => Some(Notice::Rejected),
            Change::Cancelled { .. } => Some(Notice::Cancelled),
            Change::ApprovalExpired => Some(Notice::ApprovalExpired),
            Change::Granted { .. } => Some(Notice::Granted),
            Change::GrantAbandoned { .. } => Some(Notice::GrantFailed),
            Change::Closed(_) => Some(Notice::Closed),
            Change::Removed { attempt } if *attempt > stuck_after => Some(Notice::Recovered),
            Change::Removed { .. } => match after.removal.as_ref().map(|r| r.reason) {
                Some(RemovalReason::Sunset) => Some(Notice::SunsetRemoved),
                Some(RemovalReason::Revoked) => Some(Notice::Revoked),
                _ => None,
            },
            Change::RevokeFailed {
                became_stuck: true, ..
            } => Some(Notice::Stuck),
            _ => None,
        }
    }
}

/// Why a command was refused. A refused command changes nothing. [`Rejection::kind`] says which
/// class (and so which status code) it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No item with this id (404).
    #[error("access request item {0} not found")]
    NotFound(RequestItemId),
    /// Submit of an item id that exists (409).
    #[error("access request item {0} already exists")]
    AlreadyExists(RequestItemId),
    /// The submitted item or a comment breaks a rule (400).
    #[error(transparent)]
    Invalid(#[from] super::submit::Error),
    /// A submit whose spec names another item (400).
    #[error("submit for access request item {item} carries the spec of item {spec}")]
    WrongItem {
        /// The item the command was sent to.
        item: RequestItemId,
        /// The item the spec names.
        spec: RequestItemId,
    },
    /// The approval step is invalid (400): no approver, too many, or an expiry out of range.
    #[error("approval step: {0}")]
    InvalidApproval(String),
    /// Approve, reject or forward by someone who is neither an approver of the item nor an
    /// admin (403).
    #[error("{actor} is not an approver of access request item {item}")]
    NotApprover {
        /// The item.
        item: RequestItemId,
        /// Who tried, as text.
        actor: String,
    },
    /// Cancel by someone who neither submitted the request nor is an admin (403).
    #[error("only the requester or an admin may cancel access request item {0}")]
    NotRequester(RequestItemId),
    /// Close by someone who is not an admin (403).
    #[error("only an admin may close access request item {0}")]
    NotAdmin(RequestItemId),
    /// Approve, reject or forward of an approval that is no longer pending (400): approved
    /// twice, rejected after approval, or decided after expiry or cancellation.
    #[error("the approval of access request item {item} is already {state}")]
    AlreadyDecided {
        /// The item.
        item: RequestItemId,
        /// The approval's state (`APPROVED`, `REJECTED`, `EXPIRED`, `CANCELLED`).
        state: &'static str,
    },
    /// Cancel after the approval step has passed (400); close is the way then.
    #[error(
        "access request item {item} is {status}: it can be cancelled only before its approval step has passed"
    )]
    ApprovalPassed {
        /// The item.
        item: RequestItemId,
        /// Its status.
        status: &'static str,
    },
    /// Close of an item already closed (400).
    #[error("access request item {0} is already closed")]
    AlreadyClosed(RequestItemId),
    /// The operation needs another status (400): close of an item that has ended, supersede of
    /// an item that holds no access.
    #[error("access request item {item} is {status}; {operation} is not allowed in that status")]
    WrongStatus {
        /// The item.
        item: RequestItemId,
        /// The operation refused.
        operation: &'static str,
        /// Its status.
        status: &'static str,
    },
    /// Forward to an identity that is an approver of the item already, the forwarder itself
    /// included (400).
    #[error("{to} is already an approver of access request item {item}")]
    ForwardToApprover {
        /// The item.
        item: RequestItemId,
        /// The intended new owner.
        to: IdentityId,
    },
    /// Forward to the identity the access is for, or to the requester (400): they would
    /// review their own request.
    #[error("{to} may not approve access request item {item}: it is for or from them")]
    SelfReview {
        /// The item.
        item: RequestItemId,
        /// The intended new owner.
        to: IdentityId,
    },
    /// Forward of an approval already forwarded [`MAX_FORWARDS`] times (400).
    #[error(
        "the approval of access request item {item} was forwarded {limit} times, the most allowed"
    )]
    TooManyForwards {
        /// The item.
        item: RequestItemId,
        /// The bound.
        limit: usize,
    },
    /// An effect result or timer that no longer applies (a late or repeated delivery). Not a
    /// client error: the engine drops it.
    #[error("stale {0}")]
    Stale(&'static str),
    /// A timer delivered before its due time; the core refuses it so that no timer fires early.
    #[error("timer due at {due} delivered at {now}")]
    TimerNotDue {
        /// The due time.
        due: Timestamp,
        /// The time of delivery.
        now: Timestamp,
    },
}

impl Rejection {
    /// The class of this rejection. The contract lists no 409 for approve, reject, cancel and
    /// close, so refusals caused by the item's status are `Invalid` (400).
    pub const fn kind(&self) -> RejectionKind {
        match self {
            Rejection::NotFound(_) => RejectionKind::NotFound,
            Rejection::AlreadyExists(_) => RejectionKind::Conflict,
            Rejection::NotApprover { .. } | Rejection::NotRequester(_) | Rejection::NotAdmin(_) => {
                RejectionKind::Forbidden
            }
            Rejection::Invalid(_)
            | Rejection::WrongItem { .. }
            | Rejection::InvalidApproval(_)
            | Rejection::AlreadyDecided { .. }
            | Rejection::ApprovalPassed { .. }
            | Rejection::AlreadyClosed(_)
            | Rejection::WrongStatus { .. }
            | Rejection::ForwardToApprover { .. }
            | Rejection::SelfReview { .. }
            | Rejection::TooManyForwards { .. } => RejectionKind::Invalid,
            Rejection::Stale(_) | Rejection::TimerNotDue { .. } => RejectionKind::Stale,
        }
    }
}

/// Why an event could not be applied: the log and the state disagree. `decide` only produces
/// events that apply, so this means a corrupt or foreign log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {change} cannot apply to access request item {item}: {reason}")]
pub struct EvolveError {
    /// The item.
    pub item: RequestItemId,
    /// The change's name.
    pub change: &'static str,
    /// What does not fit.
    pub reason: String,
}

/// The approval id of an item: a fixed bijection of the item id, so the engine can find the
/// item from the approval id without an index, and the two never look alike.
pub fn approval_id(item: RequestItemId) -> ApprovalId {
    ApprovalId::from_u128(item.as_u128() ^ 0x6170_7072_6f76_616c_0000_0000_0000_0000)
}

/// The item an approval id belongs to (the inverse of [`approval_id`]).
pub fn approval_item(approval: ApprovalId) -> RequestItemId {
    RequestItemId::from_u128(approval_id(RequestItemId::from_u128(approval.as_u128())).as_u128())
}

impl Item {
    /// The timers this item has armed, derived from its state.
    pub fn timers(&self) -> Vec<Timer> {
        let timer = |due, kind| Timer { due, kind };
        let spec = &self.spec;
        let mut timers = Vec::new();
        match self.status {
            ItemStatus::PendingApproval => {
                if let Some(due) = self.approval.expires_at {
                    timers.push(timer(due, TimerKind::ApprovalExpiry));
                }
            }
            ItemStatus::Scheduled => match spec.request_type {
                RequestType::Grant => {
                    if let Some(due) = spec.start_date {
                        timers.push(timer(due, TimerKind::Sunrise));
                    }
                }
                RequestType::Revoke => {
                    if let Some(due) = spec.remove_date {
                        timers.push(timer(due, TimerKind::Sunset));
                    }
                }
            },
            ItemStatus::Granting => {
                if let Some(g) = &self.grant {
                    if let Some(due) = g.retry_at {
                        timers.push(timer(due, TimerKind::Retry));
                    }
                    if let Some(due) = spec.remove_date.filter(|_| g.stop.is_none()) {
                        timers.push(timer(due, TimerKind::Sunset));
                    }
                }
            }
            ItemStatus::Granted => {
                if let Some(due) = spec.remove_date {
                    timers.push(timer(due, TimerKind::Sunset));
                }
            }
            ItemStatus::Removing => {
                if let Some(due) = self.removal.as_ref().and_then(|r| r.retry_at) {
                    timers.push(timer(due, TimerKind::Retry));
                }
            }
            _ => {}
        }
        timers
    }

    /// The effects whose intent is committed and whose result is not: after a restart the
    /// engine runs these again, with the same idempotency keys.
    pub fn pending_effects(&self) -> Vec<Effect> {
        match self.status {
            ItemStatus::Granting => self
                .grant
                .as_ref()
                .filter(|g| g.retry_at.is_none())
                .map(|g| Effect::Grant {
                    attempt: g.attempt,
                    kind: g.kind,
                })
                .into_iter()
                .collect(),
            ItemStatus::Removing => self
                .removal
                .as_ref()
                .filter(|r| r.retry_at.is_none())
                .map(|r| match r.deactivate {
                    Some(activation) => Effect::DeactivateJit { activation },
                    None => Effect::Revoke { attempt: r.attempt },
                })
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Decides what a command means for an item: the events to commit, or why it is refused.
///
/// `state` is `None` for an item never submitted. Deterministic: the same state, command and
/// context always give the same result.
pub fn decide(
    item: RequestItemId,
    state: Option<&Item>,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Vec<Event>, Rejection> {
    Ok(decide_states(item, state, command, ctx)?
        .into_iter()
        .map(|(event, _)| event)
        .collect())
}

/// [`decide`], with the state each event leaves (what [`evolve`] gives for it, computed once:
/// `decide` evolves each event to derive its timers and effects, and the caller needs the
/// same state to commit beside it).
pub fn decide_states(
    item: RequestItemId,
    state: Option<&Item>,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Vec<(Event, Item)>, Rejection> {
    if let Some(i) = state {
        assert_eq!(i.id(), item, "state of another item");
    }
    let changes = match (state, command) {
        (
            None,
            Command::Submit {
                spec,
                approval,
                existing,
            },
        ) => submit(item, spec, approval, existing, ctx)?,
        (Some(_), Command::Submit { .. }) => return Err(Rejection::AlreadyExists(item)),
        (
            None,
            Command::JitDeactivated { .. }
            | Command::GrantSucceeded { .. }
            | Command::GrantFailed { .. }
            | Command::RevokeSucceeded { .. }
            | Command::RevokeFailed { .. }
            | Command::TimerFired(_),
        ) => return Err(Rejection::Stale("delivery for an unknown item")),
        (None, _) => return Err(Rejection::NotFound(item)),
        (Some(i), command) => decide_existing(i, command, ctx)?,
    };
    let mut current = state.cloned();
    let mut events = Vec::with_capacity(changes.len());
    for change in changes {
        let mut event = Event {
            item,
            at: ctx.now,
            actor: ctx.actor.clone(),
            change,
            arm: Vec::new(),
            cancel: Vec::new(),
            effects: Vec::new(),
        };
        let after = evolve(current.clone(), &event)
            .unwrap_or_else(|e| panic!("decide produced an event that does not apply: {e}"));
        let (timers_before, effects_before) =
            current.as_ref().map_or((Vec::new(), Vec::new()), |i| {
                (i.timers(), i.pending_effects())
            });
        let (timers_after, effects_after) = (after.timers(), after.pending_effects());
        event.arm = difference(&timers_after, &timers_before);
        event.cancel = difference(&timers_before, &timers_after);
        event.effects = difference(&effects_after, &effects_before);
        current = Some(after.clone());
        events.push((event, after));
    }
    Ok(events)
}

fn submit(
    item: RequestItemId,
    spec: &ItemSpec,
    step: &ApprovalStep,
    existing: &Existing,
    ctx: &Context<'_>,
) -> Result<Vec<Change>, Rejection> {
    if spec.id != item {
        return Err(Rejection::WrongItem {
            item,
            spec: spec.id,
        });
    }
    spec.check()?;
    let approval = match step {
        ApprovalStep::Auto => Approval {
            id: approval_id(item),
            approvers: Vec::new(),
            scheme: None,
            expires_at: None,
            state: WorkItemState::Pending,
            decided_by: None,
            decided_at: None,
            comment: None,
        },
        ApprovalStep::Approvers {
            approvers,
            scheme,
            expires_after,
        } => {
            if approvers.is_empty() || approvers.len() > MAX_APPROVERS {
                return Err(Rejection::InvalidApproval(format!(
                    "{} approvers; name 1 to {MAX_APPROVERS}",
                    approvers.len()
                )));
            }
            if !(MIN_APPROVAL_WAIT..=MAX_APPROVAL_WAIT).contains(expires_after) {
                return Err(Rejection::InvalidApproval(format!(
                    "expiry after {} is outside {} to {}",
                    crate::time::format_duration(*expires_after),
                    crate::time::format_duration(MIN_APPROVAL_WAIT),
                    crate::time::format_duration(MAX_APPROVAL_WAIT)
                )));
            }
            let mut approvers = approvers.clone();
            approvers.sort();
            approvers.dedup();
            Approval {
                id: approval_id(item),
                approvers,
                scheme: Some(*scheme),
                expires_at: Some(ctx.now.saturating_add(*expires_after)),
                state: WorkItemState::Pending,
                decided_by: None,
                decided_at: None,
                comment: None,
            }
        }
    };
    if spec.request_type == RequestType::Revoke {
        // The caller checked these rules on a snapshot; the state may have moved since (a
        // sunset removed the access): decide with the writer's current view.
        super::submit::check_revoke(
            &format!("item {item}"),
            &spec.requested_for,
            &spec.object,
            spec.remove_date,
            existing,
        )?;
    }
    let auto = approval.approvers.is_empty();
    let mut changes = vec![Change::Submitted {
        spec: Box::new(spec.clone()),
        approval,
    }];
    if let Some(duplicate) = duplicate_of(spec, existing) {
        changes.push(Change::Cancelled {
            comment: match duplicate {
                Duplicate::AlreadyAssigned => {
                    "cancelled as a duplicate: the access is already assigned with the same account and dates".into()
                }
                Duplicate::InProgress(other) => {
                    format!("cancelled as a duplicate of access request item {other}, in progress")
                }
            },
            duplicate: Some(duplicate),
        });
    } else if auto {
        changes.push(Change::Approved {
            comment: None,
            auto: true,
        });
        changes.extend(begin(spec, ctx));
    }
    Ok(changes)
}

/// What an approved item does next, at `ctx.now`: nothing yet (its date is ahead), or start.
fn begin(spec: &ItemSpec, ctx: &Context<'_>) -> Option<Change> {
    let now = ctx.now;
    match spec.request_type {
        RequestType::Grant => {
            if spec.remove_date.is_some_and(|d| d <= now) {
                // Granting now would give access after its own removal date.
                Some(Change::Lapsed)
            } else if spec.start_date.is_some_and(|d| d > now) {
                None
            } else {
                Some(Change::GrantStarted {
                    kind: connection_kind(spec, ctx.policy),
                })
            }
        }
        RequestType::Revoke => {
            if spec.remove_date.is_some_and(|d| d > now) {
                None
            } else {
                Some(Change::RemovalStarted {
                    reason: RemovalReason::Revoked,
                    deactivate: ctx.running_activation,
                })
            }
        }
    }
}

/// The connection type an entitlement grant gives: JIT when the policy governs the entitlement
/// and applies to future assignments, else STANDING. Roles and access profiles make none.
fn connection_kind(spec: &ItemSpec, policy: &Policy) -> Option<ConnectionType> {
    if spec.object.kind != ObjectKind::Entitlement {
        return None;
    }
    let governed = EntitlementId::parse(spec.object.id.as_str())
        .is_ok_and(|e| policy.apply_to_future_assignments && policy.governs(&e));
    Some(if governed {
        ConnectionType::Jit
    } else {
        ConnectionType::Standing
    })
}

fn may_decide(item: &Item, ctx: &Context<'_>) -> Result<(), Rejection> {
    let listed = match ctx.actor {
        Actor::Identity(id) => item.approval.approvers.contains(id),
        Actor::System => false,
    };
    if ctx.admin || listed {
        Ok(())
    } else {
        Err(Rejection::NotApprover {
            item: item.id(),
            actor: match ctx.actor {
                Actor::Identity(id) => id.to_string(),
                Actor::System => "jitflow".into(),
            },
        })
    }
}

fn pending(item: &Item) -> Result<(), Rejection> {
    if item.status == ItemStatus::PendingApproval {
        Ok(())
    } else {
        Err(Rejection::AlreadyDecided {
            item: item.id(),
            state: item.approval.state.as_str(),
        })
    }
}

fn check_optional_comment(path: &str, comment: &Option<String>) -> Result<(), Rejection> {
    if let Some(c) = comment {
        check_comment(path, c)?;
    }
    Ok(())
}

fn decide_existing(
    item: &Item,
    command: &Command,
    ctx: &Context<'_>,
) -> Result<Vec<Change>, Rejection> {
    let id = item.id();
    let stale_effect = Rejection::Stale("effect result");
    let changes = match command {
        Command::Submit { .. } => return Err(Rejection::AlreadyExists(id)),
        Command::Approve { comment } => {
            may_decide(item, ctx)?;
            pending(item)?;
            check_optional_comment("comment", comment)?;
            let mut changes = vec![Change::Approved {
                comment: comment.clone(),
                auto: false,
            }];
            changes.extend(begin(&item.spec, ctx));
            changes
        }
        Command::Reject { comment } => {
            may_decide(item, ctx)?;
            pending(item)?;
            check_optional_comment("comment", comment)?;
            vec![Change::Rejected {
                comment: comment.clone(),
            }]
        }
        Command::Cancel { comment } => {
            let requester = matches!(ctx.actor, Actor::Identity(i) if *i == item.spec.requester);
            if !(ctx.admin || requester) {
                return Err(Rejection::NotRequester(id));
            }
            if !item.cancelable() {
                return Err(Rejection::ApprovalPassed {
                    item: id,
                    status: item.status.as_str(),
                });
            }
            check_comment("comment", comment)?;
            vec![Change::Cancelled {
                comment: comment.clone(),
                duplicate: None,
            }]
        }
        Command::Close(closure) => {
            if !ctx.admin {
                return Err(Rejection::NotAdmin(id));
            }
            if item.closure.is_some() {
                return Err(Rejection::AlreadyClosed(id));
            }
            if item.status.is_terminal() {
                return Err(Rejection::WrongStatus {
                    item: id,
                    operation: "close",
                    status: item.status.as_str(),
                });
            }
            check_comment("message", &closure.message)?;
            // Closing a grant in progress stops provisioning, and whatever a try may have left
            // is removed (fail closed); a try in flight is left to settle first. If a sunset
            // already asked the grant to stop, that removal covers the close.
            let cleanup = match (item.status, &item.grant) {
                (ItemStatus::Granting, Some(g)) if g.retry_at.is_some() => {
                    Some(Change::RemovalStarted {
                        reason: RemovalReason::Closed,
                        deactivate: ctx.running_activation,
                    })
                }
                (ItemStatus::Granting, Some(g)) if g.stop.is_none() => {
                    Some(Change::StopRequested {
                        reason: RemovalReason::Closed,
                    })
                }
                _ => None,
            };
            std::iter::once(Change::Closed(closure.clone()))
                .chain(cleanup)
                .collect()
        }
        Command::Forward { to, comment } => {
            may_decide(item, ctx)?;
            pending(item)?;
            if comment.is_empty() {
                return Err(super::submit::Error::InvalidText {
                    path: "comment".into(),
                    reason: "is empty; a forward needs a comment".into(),
                }
                .into());
            }
            check_comment("comment", comment)?;
            let approvers = &item.approval.approvers;
            if approvers.contains(to) {
                return Err(Rejection::ForwardToApprover {
                    item: id,
                    to: to.clone(),
                });
            }
            if *to == item.spec.requested_for || *to == item.spec.requester {
                return Err(Rejection::SelfReview {
                    item: id,
                    to: to.clone(),
                });
            }
            if item.forwards.len() >= MAX_FORWARDS {
                return Err(Rejection::TooManyForwards {
                    item: id,
                    limit: MAX_FORWARDS,
                });
            }
            // An approver hands over its own place; an admin who is not one takes the
            // approval from all of them.
            let from = match ctx.actor {
                Actor::Identity(me) if approvers.contains(me) => vec![me.clone()],
                _ => approvers.clone(),
            };
            vec![Change::Forwarded {
                from,
                to: to.clone(),
                comment: comment.clone(),
                reassignment: ReassignmentType::ManualReassignment,
            }]
        }
        Command::Supersede { by } => {
            if item.status != ItemStatus::Granted {
                return Err(Rejection::WrongStatus {
                    item: id,
                    operation: "supersede",
                    status: item.status.as_str(),
                });
            }
            vec![Change::Superseded { by: *by }]
        }
        Command::JitDeactivated { activation } => {
            let r = removal_in_flight(item).ok_or(Rejection::Stale("deactivation result"))?;
            if r.deactivate != Some(*activation) {
                return Err(Rejection::Stale("deactivation result"));
            }
            vec![Change::JitDeactivated]
        }
        Command::GrantSucceeded { attempt } => {
            let g = grant_in_flight(item, *attempt).ok_or(stale_effect)?;
            vec![match g.stop {
                Some(_) => Change::GrantSettled {
                    attempt: *attempt,
                    error: None,
                    deactivate: ctx.running_activation,
                },
                None => Change::Granted { attempt: *attempt },
            }]
        }
        Command::GrantFailed {
            attempt,
            error,
            retryable,
        } => {
            let g = grant_in_flight(item, *attempt).ok_or(stale_effect)?;
            let error = cut_error(error);
            vec![if g.stop.is_some() {
                Change::GrantSettled {
                    attempt: *attempt,
                    error: Some(error),
                    deactivate: ctx.running_activation,
                }
            } else if *retryable && *attempt < ctx.config.grant_max_attempts {
                Change::GrantFailed {
                    attempt: *attempt,
                    error,
                    retry_at: ctx.now.saturating_add(retry_delay(
                        ctx.config,
                        id.as_u128(),
                        *attempt,
                    )),
                }
            } else {
                Change::GrantAbandoned {
                    attempt: *attempt,
                    error,
                    deactivate: ctx.running_activation,
                }
            }]
        }
        Command::RevokeSucceeded { attempt } => {
            revoke_in_flight(item, *attempt).ok_or(stale_effect)?;
            vec![Change::Removed { attempt: *attempt }]
        }
        Command::RevokeFailed { attempt, error } => {
            let r = revoke_in_flight(item, *attempt).ok_or(stale_effect)?;
            vec![Change::RevokeFailed {
                attempt: *attempt,
                error: cut_error(error),
                retry_at: ctx
                    .now
                    .saturating_add(retry_delay(ctx.config, !id.as_u128(), *attempt)),
                became_stuck: !r.stuck && *attempt >= ctx.config.stuck_after,
            }]
        }
        Command::TimerFired(timer) => {
            if !item.timers().contains(timer) {
                return Err(Rejection::Stale("timer"));
            }
            if ctx.now < timer.due {
                return Err(Rejection::TimerNotDue {
                    due: timer.due,
                    now: ctx.now,
                });
            }
            fire(item, timer.kind, ctx)
        }
    };
    Ok(changes)
}

/// What a due timer of `kind` (one the item has armed) means.
fn fire(item: &Item, kind: TimerKind, ctx: &Context<'_>) -> Vec<Change> {
    match (kind, item.status) {
        (TimerKind::ApprovalExpiry, _) => vec![Change::ApprovalExpired],
        (TimerKind::Sunrise, _) => begin(&item.spec, ctx).into_iter().collect(),
        (TimerKind::Sunset, ItemStatus::Scheduled) => vec![Change::RemovalStarted {
            reason: RemovalReason::Revoked,
            deactivate: ctx.running_activation,
        }],
        (TimerKind::Sunset, ItemStatus::Granting)
            if item.grant.as_ref().is_some_and(|g| g.retry_at.is_none()) =>
        {
            // A try is in flight: removing now could race it, so wait for it to settle.
            vec![Change::StopRequested {
                reason: RemovalReason::Sunset,
            }]
        }
        (TimerKind::Sunset, _) => vec![Change::RemovalStarted {
            reason: RemovalReason::Sunset,
            deactivate: ctx.running_activation,
        }],
        (TimerKind::Retry, ItemStatus::Granting)
            if item.spec.remove_date.is_some_and(|d| d <= ctx.now) =>
        {
            // Delivered once the sunset is due too: another try now would grant access after
            // its removal date, so the removal starts instead (a failed try may have landed).
            vec![Change::RemovalStarted {
                reason: RemovalReason::Sunset,
                deactivate: ctx.running_activation,
            }]
        }
        (TimerKind::Retry, ItemStatus::Granting) => vec![Change::GrantRetried {
            attempt: item.grant.as_ref().map_or(1, |g| g.attempt + 1),
        }],
        (TimerKind::Retry, _) => vec![Change::RevokeRetried {
            attempt: item.removal.as_ref().map_or(1, |r| r.attempt + 1),
        }],
    }
}

fn grant_in_flight(item: &Item, attempt: u32) -> Option<&Grant> {
    item.grant
        .as_ref()
        .filter(|g| item.status == ItemStatus::Granting && g.attempt == attempt)
        .filter(|g| g.retry_at.is_none())
}

fn removal_in_flight(item: &Item) -> Option<&Removal> {
    item.removal
        .as_ref()
        .filter(|r| item.status == ItemStatus::Removing && r.retry_at.is_none())
}

fn revoke_in_flight(item: &Item, attempt: u32) -> Option<&Removal> {
    removal_in_flight(item).filter(|r| r.deactivate.is_none() && r.attempt == attempt)
}

fn start_removal(
    i: &mut Item,
    reason: RemovalReason,
    deactivate: Option<ActivationId>,
    at: Timestamp,
) {
    i.status = ItemStatus::Removing;
    i.provisioning_started.get_or_insert(at);
    i.removal = Some(Removal {
        reason,
        deactivate,
        attempt: 1,
        retry_at: None,
        stuck: false,
        last_error: None,
    });
}

/// Starts the scheduled try `attempt` if it is the next one and due at `at`.
fn start_retry(
    retry_at: &mut Option<Timestamp>,
    current: &mut u32,
    attempt: u32,
    at: Timestamp,
) -> bool {
    let due = retry_at.is_some_and(|due| due <= at) && attempt == *current + 1;
    if due {
        *retry_at = None;
        *current = attempt;
    }
    due
}

fn end(i: &mut Item, status: ItemStatus, at: Timestamp) {
    i.status = status;
    i.ended_at = Some(at);
}

/// Applies one event. Deterministic; the result passes [`Item::check_invariants`].
pub fn evolve(state: Option<Item>, event: &Event) -> Result<Item, EvolveError> {
    let fail = |reason: String| EvolveError {
        item: event.item,
        change: event.change.name(),
        reason,
    };
    let at = event.at;
    let mut i = match (state, &event.change) {
        (None, Change::Submitted { spec, approval }) => {
            if spec.id != event.item || approval.id != approval_id(event.item) {
                return Err(fail(format!("spec names item {}", spec.id)));
            }
            if approval.state != WorkItemState::Pending {
                return Err(fail("approval is not pending".into()));
            }
            let i = Item {
                spec: (**spec).clone(),
                status: ItemStatus::PendingApproval,
                approval: approval.clone(),
                grant: None,
                removal: None,
                cancellation: None,
                closure: None,
                created: at,
                modified: at,
                provisioning_started: None,
                granted_at: None,
                ended_at: None,
                version: 1,
                forwards: Vec::new(),
            };
            i.check_invariants().map_err(fail)?;
            return Ok(i);
        }
        (None, _) => return Err(fail("item does not exist".into())),
        (Some(_), Change::Submitted { .. }) => return Err(fail("item exists".into())),
        (Some(i), _) => i,
    };
    if i.id() != event.item {
        return Err(fail(format!("state is item {}", i.id())));
    }
    if i.status.is_terminal() {
        return Err(fail(format!("item ended {}", i.status.as_str())));
    }
    let status = i.status;
    let expect = |wanted: ItemStatus| {
        if status == wanted {
            Ok(())
        } else {
            Err(fail(format!(
                "item is {}, not {}",
                status.as_str(),
                wanted.as_str()
            )))
        }
    };
    let no_try = |attempt: u32| fail(format!("try {attempt} is not in flight"));
    match &event.change {
        Change::Submitted { .. } => unreachable!("handled above"),
        Change::Approved { comment, auto } => {
            expect(ItemStatus::PendingApproval)?;
            if *auto != i.approval.approvers.is_empty() {
                return Err(fail("automatic approval of a step with approvers".into()));
            }
            i.status = ItemStatus::Scheduled;
            i.approval.state = WorkItemState::Approved;
            i.approval.decided_by = Some(event.actor.clone());
            i.approval.decided_at = Some(at);
            i.approval.comment.clone_from(comment);
        }
        Change::Rejected { comment } => {
            expect(ItemStatus::PendingApproval)?;
            i.approval.state = WorkItemState::Rejected;
            i.approval.decided_by = Some(event.actor.clone());
            i.approval.decided_at = Some(at);
            i.approval.comment.clone_from(comment);
            end(&mut i, ItemStatus::Rejected, at);
        }
        Change::ApprovalExpired => {
            expect(ItemStatus::PendingApproval)?;
            if i.approval.expires_at.is_none_or(|due| due > at) {
                return Err(fail("expired before its expiry".into()));
            }
            i.approval.state = WorkItemState::Expired;
            i.approval.decided_at = Some(at);
            end(&mut i, ItemStatus::ApprovalExpired, at);
        }
        Change::Cancelled { comment, duplicate } => {
            expect(ItemStatus::PendingApproval)?;
            i.approval.state = WorkItemState::Cancelled;
            i.approval.decided_at = Some(at);
            i.cancellation = Some(Cancellation {
                by: event.actor.clone(),
                at,
                comment: comment.clone(),
                duplicate: *duplicate,
            });
            end(&mut i, ItemStatus::Cancelled, at);
        }
        Change::Closed(closure) => {
            if i.closure.is_some() {
                return Err(fail("already closed".into()));
            }
            i.closure = Some(closure.clone());
            match status {
                ItemStatus::PendingApproval => {
                    i.approval.state = WorkItemState::Cancelled;
                    i.approval.decided_at = Some(at);
                    end(&mut i, ItemStatus::Closed, at);
                }
                ItemStatus::Scheduled => end(&mut i, ItemStatus::Closed, at),
                // Granting: a cleanup follows in the same decision; granted or removing: the
                // access keeps its own course (sunset, removal), only the close is recorded.
                _ => {}
            }
        }
        Change::Forwarded {
            from,
            to,
            comment,
            reassignment,
        } => {
            expect(ItemStatus::PendingApproval)?;
            let approvers = &mut i.approval.approvers;
            if from.is_empty() || !from.iter().all(|f| approvers.contains(f)) {
                return Err(fail(format!("forward from {from:?}, not all approvers")));
            }
            if approvers.contains(to) {
                return Err(fail(format!("forward to {to}, an approver already")));
            }
            if i.forwards.len() >= MAX_FORWARDS {
                return Err(fail(format!("more than {MAX_FORWARDS} forwards")));
            }
            approvers.retain(|a| !from.contains(a));
            approvers.push(to.clone());
            approvers.sort();
            i.forwards.push(Forward {
                from: from.clone(),
                to: to.clone(),
                by: event.actor.clone(),
                comment: comment.clone(),
                at,
                reassignment: *reassignment,
            });
        }
        Change::Superseded { .. } => {
            expect(ItemStatus::Granted)?;
            end(&mut i, ItemStatus::Superseded, at);
        }
        Change::Lapsed => {
            expect(ItemStatus::Scheduled)?;
            if i.spec.remove_date.is_none_or(|d| d > at) {
                return Err(fail("lapsed before its removal date".into()));
            }
            end(&mut i, ItemStatus::Lapsed, at);
        }
        Change::GrantStarted { kind } => {
            expect(ItemStatus::Scheduled)?;
            if i.spec.request_type != RequestType::Grant
                || i.spec.start_date.is_some_and(|d| d > at)
            {
                return Err(fail("grant before its sunrise".into()));
            }
            i.status = ItemStatus::Granting;
            i.provisioning_started = Some(at);
            i.grant = Some(Grant {
                kind: *kind,
                attempt: 1,
                retry_at: None,
                stop: None,
                last_error: None,
            });
        }
        Change::GrantFailed {
            attempt,
            error,
            retry_at,
        } => {
            if grant_in_flight(&i, *attempt).is_none_or(|g| g.stop.is_some()) {
                return Err(no_try(*attempt));
            }
            if let Some(g) = i.grant.as_mut() {
                g.retry_at = Some(*retry_at);
                g.last_error = Some(error.clone());
            }
        }
        Change::GrantRetried { attempt } => {
            expect(ItemStatus::Granting)?;
            let g = i.grant.as_mut().ok_or_else(|| fail("no grant".into()))?;
            if !start_retry(&mut g.retry_at, &mut g.attempt, *attempt, at) {
                return Err(fail(format!("retry {attempt} not due")));
            }
        }
        Change::Granted { attempt } => {
            if grant_in_flight(&i, *attempt).is_none_or(|g| g.stop.is_some()) {
                return Err(no_try(*attempt));
            }
            i.status = ItemStatus::Granted;
            i.granted_at = Some(at);
            if let Some(g) = i.grant.as_mut() {
                g.last_error = None;
            }
        }
        Change::GrantAbandoned {
            attempt,
            error,
            deactivate,
        } => {
            if grant_in_flight(&i, *attempt).is_none_or(|g| g.stop.is_some()) {
                return Err(no_try(*attempt));
            }
            if let Some(g) = i.grant.as_mut() {
                g.last_error = Some(error.clone());
            }
            start_removal(&mut i, RemovalReason::ProvisionFailed, *deactivate, at);
        }
        Change::StopRequested { reason } => {
            let g = i
                .grant
                .as_mut()
                .filter(|g| status == ItemStatus::Granting && g.retry_at.is_none())
                .filter(|g| g.stop.is_none())
                .ok_or_else(|| fail("no grant try in flight".into()))?;
            if !matches!(reason, RemovalReason::Sunset | RemovalReason::Closed) {
                return Err(fail(format!("stop for {reason:?}")));
            }
            g.stop = Some(*reason);
        }
        Change::GrantSettled {
            attempt,
            error,
            deactivate,
        } => {
            let reason = grant_in_flight(&i, *attempt)
                .and_then(|g| g.stop)
                .ok_or_else(|| no_try(*attempt))?;
            if let (Some(g), Some(e)) = (i.grant.as_mut(), error) {
                g.last_error = Some(e.clone());
            }
            start_removal(&mut i, reason, *deactivate, at);
        }
        Change::RemovalStarted { reason, deactivate } => {
            let allowed = match (reason, status) {
                (RemovalReason::Revoked, ItemStatus::Scheduled) => {
                    i.spec.request_type == RequestType::Revoke
                        && i.spec.remove_date.is_none_or(|d| d <= at)
                }
                (RemovalReason::Sunset, ItemStatus::Granted | ItemStatus::Granting)
                | (RemovalReason::Closed, ItemStatus::Granting) => {
                    let waiting = i.grant.as_ref().is_some_and(|g| g.retry_at.is_some());
                    let due = *reason == RemovalReason::Closed
                        || i.spec.remove_date.is_some_and(|d| d <= at);
                    due && (status == ItemStatus::Granted || waiting)
                }
                _ => false,
            };
            if !allowed {
                return Err(fail(format!(
                    "removal for {reason:?} while {}",
                    status.as_str()
                )));
            }
            start_removal(&mut i, *reason, *deactivate, at);
        }
        Change::JitDeactivated => {
            let r = i
                .removal
                .as_mut()
                .filter(|r| status == ItemStatus::Removing && r.retry_at.is_none())
                .filter(|r| r.deactivate.is_some())
                .ok_or_else(|| fail("no deactivation in flight".into()))?;
            r.deactivate = None;
        }
        Change::RevokeFailed {
            attempt,
            error,
            retry_at,
            became_stuck,
        } => {
            if revoke_in_flight(&i, *attempt).is_none() {
                return Err(no_try(*attempt));
            }
            if let Some(r) = i.removal.as_mut() {
                r.retry_at = Some(*retry_at);
                r.last_error = Some(error.clone());
                r.stuck |= *became_stuck;
            }
        }
        Change::RevokeRetried { attempt } => {
            expect(ItemStatus::Removing)?;
            let r = i
                .removal
                .as_mut()
                .ok_or_else(|| fail("no removal".into()))?;
            if !start_retry(&mut r.retry_at, &mut r.attempt, *attempt, at) {
                return Err(fail(format!("retry {attempt} not due")));
            }
        }
        Change::Removed { attempt } => {
            let reason = revoke_in_flight(&i, *attempt)
                .map(|r| r.reason)
                .ok_or_else(|| no_try(*attempt))?;
            if let Some(r) = i.removal.as_mut() {
                r.stuck = false;
            }
            end(&mut i, reason.end_status(), at);
        }
    }
    i.modified = at;
    i.version += 1;
    i.check_invariants().map_err(fail)?;
    Ok(i)
}
