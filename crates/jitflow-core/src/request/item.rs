//! The request item record (the aggregate), its internal status, its approval, and the contract's
//! status vocabularies with the mapping from one to the other.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::submit::{Duplicate, ItemSpec, RequestType};
use crate::connection::ConnectionType;
use crate::id::{ActivationId, ApprovalId, IdentityId, RequestItemId};
use crate::lifecycle::Actor;
use crate::time::Timestamp;

/// The most approvers one approval step may name.
pub const MAX_APPROVERS: usize = 100;
/// The longest an approval may wait before it expires: one year.
pub const MAX_APPROVAL_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);
/// The shortest an approval may wait before it expires: one minute.
pub const MIN_APPROVAL_WAIT: Duration = Duration::from_secs(60);
/// The most times one approval may be forwarded. The contract sets no bound; this one keeps an
/// item's forward history (stored with the item and shown in every approval row) small, and a
/// chain of ten forwards already means the approval step is misconfigured.
pub const MAX_FORWARDS: usize = 10;

/// Where an item is in its workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ItemStatus {
    /// Waiting for the approval step (the approval-expiry timer runs).
    PendingApproval,
    /// Approved, waiting for its date: a grant's sunrise, or a revoke's removal date.
    Scheduled,
    /// The grant is being provisioned (or waits to be retried).
    Granting,
    /// The access is granted; a sunset timer runs if the item has a removal date.
    Granted,
    /// The access is being removed (a revoke, a sunset, or a fail-closed cleanup); retried
    /// forever.
    Removing,
    /// The approval step rejected it. Terminal.
    Rejected,
    /// Cancelled by the requester or an admin, or as a duplicate. Terminal.
    Cancelled,
    /// Nobody answered the approval in time. Terminal.
    ApprovalExpired,
    /// Its removal date passed before its grant could start; nothing was granted. Terminal.
    Lapsed,
    /// The access was removed (revoked, or at its sunset). Terminal.
    Removed,
    /// Provisioning gave up; whatever a failed grant may have left was removed. Terminal.
    Failed,
    /// Closed by an admin before anything was granted, or closed mid-grant and cleaned up.
    /// Terminal.
    Closed,
    /// A later item for the same access took it over (its dates); this one ends without
    /// removing anything. Terminal.
    Superseded,
}

impl ItemStatus {
    /// Whether the workflow has ended: nothing changes after this.
    pub const fn is_terminal(self) -> bool {
        !matches!(
            self,
            ItemStatus::PendingApproval
                | ItemStatus::Scheduled
                | ItemStatus::Granting
                | ItemStatus::Granted
                | ItemStatus::Removing
        )
    }

    /// A name for messages and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ItemStatus::PendingApproval => "PENDING_APPROVAL",
            ItemStatus::Scheduled => "SCHEDULED",
            ItemStatus::Granting => "GRANTING",
            ItemStatus::Granted => "GRANTED",
            ItemStatus::Removing => "REMOVING",
            ItemStatus::Rejected => "REJECTED",
            ItemStatus::Cancelled => "CANCELLED",
            ItemStatus::ApprovalExpired => "APPROVAL_EXPIRED",
            ItemStatus::Lapsed => "LAPSED",
            ItemStatus::Removed => "REMOVED",
            ItemStatus::Failed => "FAILED",
            ItemStatus::Closed => "CLOSED",
            ItemStatus::Superseded => "SUPERSEDED",
        }
    }
}

/// The contract's `RequestedItemStatusRequestState` (`requesteditemstatusrequeststate.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestState {
    /// `EXECUTING`.
    Executing,
    /// `REQUEST_COMPLETED`.
    RequestCompleted,
    /// `CANCELLED`.
    Cancelled,
    /// `TERMINATED`.
    Terminated,
    /// `PROVISIONING_VERIFICATION_PENDING` (jitflow never reports it: a grant's result is
    /// verified by the provisioner's answer).
    ProvisioningVerificationPending,
    /// `REJECTED`.
    Rejected,
    /// `PROVISIONING_FAILED`.
    ProvisioningFailed,
    /// `NOT_ALL_ITEMS_PROVISIONED` (only from a close with `completionStatus: Incomplete`).
    NotAllItemsProvisioned,
    /// `ERROR` (jitflow never reports it: failures are `PROVISIONING_FAILED`).
    Error,
}

impl RequestState {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestState::Executing => "EXECUTING",
            RequestState::RequestCompleted => "REQUEST_COMPLETED",
            RequestState::Cancelled => "CANCELLED",
            RequestState::Terminated => "TERMINATED",
            RequestState::ProvisioningVerificationPending => "PROVISIONING_VERIFICATION_PENDING",
            RequestState::Rejected => "REJECTED",
            RequestState::ProvisioningFailed => "PROVISIONING_FAILED",
            RequestState::NotAllItemsProvisioned => "NOT_ALL_ITEMS_PROVISIONED",
            RequestState::Error => "ERROR",
        }
    }
}

/// The contract's `ManualWorkItemState` (`manualworkitemstate.yaml`): an approval's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkItemState {
    /// `PENDING`.
    Pending,
    /// `APPROVED`.
    Approved,
    /// `REJECTED`.
    Rejected,
    /// `EXPIRED`.
    Expired,
    /// `CANCELLED`: the item was cancelled or closed before anyone decided.
    Cancelled,
    /// `ARCHIVED` (jitflow never reports it).
    Archived,
}

impl WorkItemState {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkItemState::Pending => "PENDING",
            WorkItemState::Approved => "APPROVED",
            WorkItemState::Rejected => "REJECTED",
            WorkItemState::Expired => "EXPIRED",
            WorkItemState::Cancelled => "CANCELLED",
            WorkItemState::Archived => "ARCHIVED",
        }
    }

    /// The contract's `CompletedApprovalState` (`APPROVED`, `REJECTED`) of a decided approval;
    /// `None` while pending or when nobody decided.
    pub const fn completed_str(self) -> Option<&'static str> {
        match self {
            WorkItemState::Approved => Some("APPROVED"),
            WorkItemState::Rejected => Some("REJECTED"),
            _ => None,
        }
    }
}

/// The contract's `ApprovalScheme`: who is responsible for an approval step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApprovalScheme {
    /// `APP_OWNER`.
    AppOwner,
    /// `SOURCE_OWNER`.
    SourceOwner,
    /// `MANAGER`.
    Manager,
    /// `ROLE_OWNER`.
    RoleOwner,
    /// `ACCESS_PROFILE_OWNER`.
    AccessProfileOwner,
    /// `ENTITLEMENT_OWNER`.
    EntitlementOwner,
    /// `GOVERNANCE_GROUP`.
    GovernanceGroup,
}

impl ApprovalScheme {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ApprovalScheme::AppOwner => "APP_OWNER",
            ApprovalScheme::SourceOwner => "SOURCE_OWNER",
            ApprovalScheme::Manager => "MANAGER",
            ApprovalScheme::RoleOwner => "ROLE_OWNER",
            ApprovalScheme::AccessProfileOwner => "ACCESS_PROFILE_OWNER",
            ApprovalScheme::EntitlementOwner => "ENTITLEMENT_OWNER",
            ApprovalScheme::GovernanceGroup => "GOVERNANCE_GROUP",
        }
    }
}

/// The contract's `AccessRequestPhases.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PhaseState {
    /// `PENDING`.
    Pending,
    /// `EXECUTING`.
    Executing,
    /// `COMPLETED`.
    Completed,
    /// `CANCELLED`.
    Cancelled,
    /// `NOT_EXECUTED`.
    NotExecuted,
}

impl PhaseState {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            PhaseState::Pending => "PENDING",
            PhaseState::Executing => "EXECUTING",
            PhaseState::Completed => "COMPLETED",
            PhaseState::Cancelled => "CANCELLED",
            PhaseState::NotExecuted => "NOT_EXECUTED",
        }
    }
}

/// The contract's `AccessRequestPhases.result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PhaseResult {
    /// `SUCCESSFUL`.
    Successful,
    /// `FAILED`.
    Failed,
}

impl PhaseResult {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            PhaseResult::Successful => "SUCCESSFUL",
            PhaseResult::Failed => "FAILED",
        }
    }
}

/// One entry of the contract's `accessRequestPhases`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    /// `APPROVAL_PHASE` or `PROVISIONING_PHASE`.
    pub name: &'static str,
    /// When it started.
    pub started: Timestamp,
    /// When it finished.
    pub finished: Option<Timestamp>,
    /// Its state.
    pub state: PhaseState,
    /// Its result, once finished.
    pub result: Option<PhaseResult>,
}

/// The contract's close `executionStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExecutionStatus {
    /// `Terminated` (the contract's default).
    Terminated,
    /// `Completed`.
    Completed,
}

impl ExecutionStatus {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Terminated => "Terminated",
            ExecutionStatus::Completed => "Completed",
        }
    }
}

/// The contract's close `completionStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompletionStatus {
    /// `Success`.
    Success,
    /// `Incomplete`.
    Incomplete,
    /// `Failure` (the contract's default).
    Failure,
}

impl CompletionStatus {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            CompletionStatus::Success => "Success",
            CompletionStatus::Incomplete => "Incomplete",
            CompletionStatus::Failure => "Failure",
        }
    }
}

/// The contract's default close message.
pub const DEFAULT_CLOSE_MESSAGE: &str =
    "The IdentityNow Administrator manually closed this request.";

/// A close, as asked for and as recorded (the contract's `CloseAccessRequest` without the ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// `executionStatus`.
    pub execution: ExecutionStatus,
    /// `completionStatus`.
    pub completion: CompletionStatus,
    /// `message`.
    pub message: String,
}

impl Default for Closure {
    /// The contract's defaults: `Terminated`, `Failure`, and its default message.
    fn default() -> Closure {
        Closure {
            execution: ExecutionStatus::Terminated,
            completion: CompletionStatus::Failure,
            message: DEFAULT_CLOSE_MESSAGE.to_owned(),
        }
    }
}

impl Closure {
    /// The request state a close reports.
    pub const fn request_state(&self) -> RequestState {
        match (self.execution, self.completion) {
            (ExecutionStatus::Terminated, _) => RequestState::Terminated,
            (ExecutionStatus::Completed, CompletionStatus::Success) => {
                RequestState::RequestCompleted
            }
            (ExecutionStatus::Completed, CompletionStatus::Incomplete) => {
                RequestState::NotAllItemsProvisioned
            }
            (ExecutionStatus::Completed, CompletionStatus::Failure) => {
                RequestState::ProvisioningFailed
            }
        }
    }
}

/// The approval step an embedder configures for an item (its hook answers this before the
/// item is submitted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApprovalStep {
    /// Approved at once, by jitflow.
    Auto,
    /// Any one of `approvers` (or an admin) approves or rejects; unanswered, it expires.
    Approvers {
        /// Who may decide: 1 to [`MAX_APPROVERS`] identities.
        approvers: Vec<IdentityId>,
        /// Who they are, in the contract's terms.
        scheme: ApprovalScheme,
        /// How long the approval waits before it expires: [`MIN_APPROVAL_WAIT`] to
        /// [`MAX_APPROVAL_WAIT`].
        expires_after: Duration,
    },
}

/// An item's approval: the step and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The contract's `approvalId`.
    pub id: ApprovalId,
    /// Who may decide; empty for an automatic approval.
    pub approvers: Vec<IdentityId>,
    /// Who they are (none for an automatic approval).
    pub scheme: Option<ApprovalScheme>,
    /// When it expires unanswered (none for an automatic approval).
    pub expires_at: Option<Timestamp>,
    /// Its state.
    pub state: WorkItemState,
    /// Who decided.
    pub decided_by: Option<Actor>,
    /// When it was decided, expired or cancelled.
    pub decided_at: Option<Timestamp>,
    /// The approver's comment.
    pub comment: Option<String>,
}

/// The contract's `ReassignmentType` (`reassignmenttype.yaml`): how an approval came to its
/// current owner. Persisted in [`Forward`]: never reorder variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReassignmentType {
    /// `MANUAL_REASSIGNMENT`: forwarded by an owner of the approval (or an admin). The only
    /// kind jitflow makes.
    ManualReassignment,
    /// `AUTOMATIC_REASSIGNMENT` (jitflow has no reassignment configurations).
    AutomaticReassignment,
    /// `AUTO_ESCALATION` (jitflow has no escalation).
    AutoEscalation,
    /// `SELF_REVIEW_DELEGATION` (jitflow refuses self-review instead of delegating it).
    SelfReviewDelegation,
}

impl ReassignmentType {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReassignmentType::ManualReassignment => "MANUAL_REASSIGNMENT",
            ReassignmentType::AutomaticReassignment => "AUTOMATIC_REASSIGNMENT",
            ReassignmentType::AutoEscalation => "AUTO_ESCALATION",
            ReassignmentType::SelfReviewDelegation => "SELF_REVIEW_DELEGATION",
        }
    }
}

/// One forward of an item's pending approval (the contract's `ApprovalForwardHistory`).
/// Persisted (in the item record's forward section, see [`Item::forwards`]): never reorder
/// fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The approvers the approval was taken from: the forwarding approver, or every approver
    /// when an admin who is not one forwards it. Sorted.
    pub from: Vec<IdentityId>,
    /// The new owner.
    pub to: IdentityId,
    /// Who forwarded it.
    pub by: Actor,
    /// The forwarder's comment.
    pub comment: String,
    /// When.
    pub at: Timestamp,
    /// How (always `ManualReassignment` today).
    pub reassignment: ReassignmentType,
}

/// Why access is being (or was) removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RemovalReason {
    /// A REVOKE_ACCESS item was approved (and its removal date, if any, came). Ends REMOVED.
    Revoked,
    /// A grant's sunset came. Ends REMOVED.
    Sunset,
    /// Provisioning gave up: a failed grant may have landed, so it is removed. Ends FAILED.
    ProvisionFailed,
    /// An admin closed the item while its grant was in progress. Ends CLOSED.
    Closed,
}

impl RemovalReason {
    /// The terminal status the removal ends in.
    pub const fn end_status(self) -> ItemStatus {
        match self {
            RemovalReason::Revoked | RemovalReason::Sunset => ItemStatus::Removed,
            RemovalReason::ProvisionFailed => ItemStatus::Failed,
            RemovalReason::Closed => ItemStatus::Closed,
        }
    }
}

/// A grant in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The connection type an entitlement grant gives (none for roles and access profiles).
    pub kind: Option<ConnectionType>,
    /// The current try, from 1.
    pub attempt: u32,
    /// When the next try is due, while waiting after a failure.
    pub retry_at: Option<Timestamp>,
    /// A sunset or a close arrived while a try was in flight: remove once it settles.
    pub stop: Option<RemovalReason>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// A removal in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// Why.
    pub reason: RemovalReason,
    /// A JIT activation to deactivate before the revoke runs.
    pub deactivate: Option<ActivationId>,
    /// The current revoke try, from 1.
    pub attempt: u32,
    /// When the next try is due, while waiting after a failure.
    pub retry_at: Option<Timestamp>,
    /// Tries reached the configured bound; an alert was raised. Stays until it succeeds.
    pub stuck: bool,
    /// The last failure.
    pub last_error: Option<String>,
}

/// A cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    /// Who cancelled (jitflow itself for a duplicate).
    pub by: Actor,
    /// When.
    pub at: Timestamp,
    /// Why.
    pub comment: String,
    /// What it duplicated, when cancelled as a duplicate.
    pub duplicate: Option<Duplicate>,
}

/// One request item and its workflow: the aggregate `decide` works on, and the stream the store
/// keys. See the module documentation for why the item, not the request, is the aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// What was submitted.
    pub spec: ItemSpec,
    /// Where the workflow is.
    pub status: ItemStatus,
    /// The approval step.
    pub approval: Approval,
    /// The grant in progress (or the last one).
    pub grant: Option<Grant>,
    /// The removal in progress (or the last one).
    pub removal: Option<Removal>,
    /// How it was cancelled.
    pub cancellation: Option<Cancellation>,
    /// How it was closed.
    pub closure: Option<Closure>,
    /// When it was submitted.
    pub created: Timestamp,
    /// When anything about it last changed.
    pub modified: Timestamp,
    /// When its provisioning began (a grant or a removal).
    pub provisioning_started: Option<Timestamp>,
    /// When the access was granted.
    pub granted_at: Option<Timestamp>,
    /// When the workflow ended.
    pub ended_at: Option<Timestamp>,
    /// The number of events applied since submission.
    pub version: u64,
    /// The forwards of the approval, oldest first (at most [`MAX_FORWARDS`]).
    ///
    /// Not part of the item's serde form: the store encodes it as a separate trailing section
    /// of the item record, written only when it is not empty, so that the record of an item
    /// never forwarded keeps the bytes it had before forwarding existed.
    #[serde(skip)]
    pub forwards: Vec<Forward>,
}

impl Item {
    /// The id.
    pub fn id(&self) -> RequestItemId {
        self.spec.id
    }

    /// The contract's request `state`.
    ///
    /// | internal | contract |
    /// |---|---|
    /// | closed (any status, `closure` set) | from `executionStatus`/`completionStatus`: `Terminated` -> TERMINATED, `Completed` + `Success` -> REQUEST_COMPLETED, + `Incomplete` -> NOT_ALL_ITEMS_PROVISIONED, + `Failure` -> PROVISIONING_FAILED |
    /// | PENDING_APPROVAL, SCHEDULED, GRANTING, REMOVING (revoke or fail-closed cleanup) | EXECUTING |
    /// | GRANTED, REMOVED, SUPERSEDED, REMOVING after a grant's sunset | REQUEST_COMPLETED |
    /// | REJECTED | REJECTED |
    /// | CANCELLED, APPROVAL_EXPIRED | CANCELLED |
    /// | LAPSED | TERMINATED |
    /// | FAILED | PROVISIONING_FAILED |
    pub fn request_state(&self) -> RequestState {
        if let Some(c) = &self.closure {
            return c.request_state();
        }
        match self.status {
            ItemStatus::PendingApproval | ItemStatus::Scheduled | ItemStatus::Granting => {
                RequestState::Executing
            }
            ItemStatus::Removing => match self.removal.as_ref().map(|r| r.reason) {
                Some(RemovalReason::Sunset) => RequestState::RequestCompleted,
                _ => RequestState::Executing,
            },
            ItemStatus::Granted | ItemStatus::Removed | ItemStatus::Superseded => {
                RequestState::RequestCompleted
            }
            ItemStatus::Rejected => RequestState::Rejected,
            ItemStatus::Cancelled | ItemStatus::ApprovalExpired => RequestState::Cancelled,
            ItemStatus::Lapsed | ItemStatus::Closed => RequestState::Terminated,
            ItemStatus::Failed => RequestState::ProvisioningFailed,
        }
    }

    /// The contract's `cancelable`: only while the approval step has not passed.
    pub fn cancelable(&self) -> bool {
        self.status == ItemStatus::PendingApproval
    }

    /// The contract's `accessRequestPhases`: the approval phase, then the provisioning phase
    /// once it started.
    pub fn phases(&self) -> Vec<Phase> {
        let a = &self.approval;
        let (state, result) = match a.state {
            WorkItemState::Pending => (PhaseState::Executing, None),
            WorkItemState::Approved => (PhaseState::Completed, Some(PhaseResult::Successful)),
            WorkItemState::Rejected | WorkItemState::Expired => {
                (PhaseState::Completed, Some(PhaseResult::Failed))
            }
            WorkItemState::Cancelled | WorkItemState::Archived => (PhaseState::Cancelled, None),
        };
        let mut phases = vec![Phase {
            name: "APPROVAL_PHASE",
            started: self.created,
            finished: a.decided_at,
            state,
            result,
        }];
        if let Some(started) = self.provisioning_started {
            let (state, result, finished) = match self.status {
                ItemStatus::Granting | ItemStatus::Removing => (PhaseState::Executing, None, None),
                ItemStatus::Failed => (
                    PhaseState::Completed,
                    Some(PhaseResult::Failed),
                    self.ended_at,
                ),
                ItemStatus::Closed => (PhaseState::Cancelled, None, self.ended_at),
                _ => (
                    PhaseState::Completed,
                    Some(PhaseResult::Successful),
                    self.granted_at.or(self.ended_at),
                ),
            };
            phases.push(Phase {
                name: "PROVISIONING_PHASE",
                started,
                finished,
                state,
                result,
            });
        }
        phases
    }

    /// Checks the invariants that tie the status to the approval, grant and removal records.
    /// Used as the paired assertion after `evolve` and after decoding a stored record.
    pub fn check_invariants(&self) -> Result<(), String> {
        let approved = self.approval.state == WorkItemState::Approved;
        let grant_running = self.grant.as_ref();
        let removal = self.removal.as_ref();
        let ok = match self.status {
            ItemStatus::PendingApproval => {
                self.approval.state == WorkItemState::Pending && grant_running.is_none()
            }
            ItemStatus::Scheduled => approved && grant_running.is_none() && removal.is_none(),
            ItemStatus::Granting => {
                approved
                    && self.spec.request_type == RequestType::Grant
                    && grant_running.is_some_and(|g| g.attempt >= 1)
                    && removal.is_none()
            }
            ItemStatus::Granted => {
                approved
                    && self.spec.request_type == RequestType::Grant
                    && self.granted_at.is_some()
                    && removal.is_none()
            }
            ItemStatus::Removing => {
                approved
                    && removal.is_some_and(|r| r.attempt >= 1)
                    && (self.spec.request_type == RequestType::Revoke)
                        == (removal.map(|r| r.reason) == Some(RemovalReason::Revoked))
            }
            ItemStatus::Rejected => self.approval.state == WorkItemState::Rejected,
            ItemStatus::ApprovalExpired => self.approval.state == WorkItemState::Expired,
            ItemStatus::Cancelled => self.cancellation.is_some() && grant_running.is_none(),
            ItemStatus::Lapsed => approved && grant_running.is_none(),
            ItemStatus::Removed => removal.is_some_and(|r| r.reason.end_status() == self.status),
            ItemStatus::Failed => {
                removal.is_some_and(|r| r.reason == RemovalReason::ProvisionFailed)
            }
            ItemStatus::Closed => {
                self.closure.is_some() && removal.is_none_or(|r| r.reason == RemovalReason::Closed)
            }
            ItemStatus::Superseded => self.granted_at.is_some(),
        };
        // Forwards happen only while pending, each to one new owner, so a forwarded approval
        // has approvers and a bounded history.
        let forwards_ok = self.forwards.len() <= MAX_FORWARDS
            && (self.forwards.is_empty() || !self.approval.approvers.is_empty());
        if !ok || !forwards_ok || self.status.is_terminal() != self.ended_at.is_some() {
            return Err(format!(
                "item {} is {} with approval {}, grant {:?}, removal {:?}, ended {:?}",
                self.id(),
                self.status.as_str(),
                self.approval.state.as_str(),
                self.grant,
                self.removal,
                self.ended_at
            ));
        }
        Ok(())
    }
}
