//! Activations: one workflow run that grants a JIT connection's access for a period.

use serde::{Deserialize, Serialize};

use crate::id::{ActivationId, ConnectionId};
use crate::lifecycle::Actor;
use crate::time::{Minutes, Timestamp};

/// The contract's `ActivationWorkflowStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActivationStatus {
    /// Requested; the workflow's own validation (tickets, approvals, MFA) runs.
    Creating,
    /// Validated; the grant is being provisioned (or waits to be retried).
    Activating,
    /// Access granted; the expiry timer runs.
    Provisioned,
    /// Access is being revoked (deactivate, expiry or fail-closed cleanup).
    Deprovisioning,
    /// Ended by its expiry timer, or converted to standing access by a type change.
    Completed,
    /// Ended by deactivate.
    Revoked,
    /// Refused by the workflow's validation; nothing was granted.
    Invalid,
    /// Provisioning gave up; any grant of unknown outcome was revoked.
    Error,
}

impl ActivationStatus {
    /// Whether the workflow has ended.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            ActivationStatus::Completed
                | ActivationStatus::Revoked
                | ActivationStatus::Invalid
                | ActivationStatus::Error
        )
    }

    /// The contract's spelling (`CREATING`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ActivationStatus::Creating => "CREATING",
            ActivationStatus::Activating => "ACTIVATING",
            ActivationStatus::Provisioned => "PROVISIONED",
            ActivationStatus::Deprovisioning => "DEPROVISIONING",
            ActivationStatus::Completed => "COMPLETED",
            ActivationStatus::Revoked => "REVOKED",
            ActivationStatus::Invalid => "INVALID",
            ActivationStatus::Error => "ERROR",
        }
    }

    /// The status in the activation history document's vocabulary, which differs from the
    /// workflow status enum: CREATING is the validation wait (`AWAITING_FRICTIONS`), ACTIVATING
    /// is `PROVISIONING`, COMPLETED is `COMPLETE`, INVALID is `CANCELLED` (validation refused it).
    pub const fn history_str(self) -> &'static str {
        match self {
            ActivationStatus::Creating => "AWAITING_FRICTIONS",
            ActivationStatus::Activating => "PROVISIONING",
            ActivationStatus::Provisioned => "PROVISIONED",
            ActivationStatus::Deprovisioning => "DEPROVISIONING",
            ActivationStatus::Completed => "COMPLETE",
            ActivationStatus::Revoked => "REVOKED",
            ActivationStatus::Invalid => "CANCELLED",
            ActivationStatus::Error => "ERROR",
        }
    }
}

/// Why access is being removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EndReason {
    /// The expiry timer fired; ends COMPLETED and the connection EXPIRED.
    Expired,
    /// Someone deactivated it; ends REVOKED and the connection AVAILABLE.
    Deactivated,
    /// Provisioning gave up; the revoke fails closed; ends ERROR and the connection AVAILABLE.
    ProvisionFailed,
}

/// One activation workflow instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// Its id.
    pub id: ActivationId,
    /// The connection it activates.
    pub connection: ConnectionId,
    /// The period granted, in minutes (the request's, or the policy default).
    pub period: Minutes,
    /// Who asked for it.
    pub requested_by: Actor,
    /// Where the workflow is.
    pub status: ActivationStatus,
    /// When it was requested.
    pub requested_at: Timestamp,
    /// When validation passed.
    pub validated_at: Option<Timestamp>,
    /// When the grant succeeded.
    pub provisioned_at: Option<Timestamp>,
    /// When removal began.
    pub deprovision_started_at: Option<Timestamp>,
    /// When the workflow ended.
    pub ended_at: Option<Timestamp>,
    /// When access expires (set once provisioned; moved by extensions).
    pub expires_at: Option<Timestamp>,
    /// When the expiring-soon warning is due, until it has been sent.
    pub warn_at: Option<Timestamp>,
    /// Minutes added by extensions so far.
    pub extended_by: Minutes,
    /// How many extensions were granted.
    pub extensions: u32,
    /// The try of the current phase's effect (grant or revoke), from 1.
    pub attempt: u32,
    /// When the next try is due, while waiting after a failure.
    pub retry_at: Option<Timestamp>,
    /// Deactivate arrived while a grant was in flight: revoke once it settles.
    pub cancel_requested: bool,
    /// Why access is being (or was) removed.
    pub end_reason: Option<EndReason>,
    /// The last error (a refusal reason, or a grant or revoke failure).
    pub last_error: Option<String>,
    /// Revoke tries reached the configured bound; an alert was raised.
    pub stuck: bool,
}
