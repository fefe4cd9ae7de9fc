//! The embedder's code the engine calls: [`Provisioner`] (grant, revoke, terminate sessions on
//! the target system), [`Validator`] (the workflow's own checks: tickets, approvals, MFA) and
//! [`Notifier`] (activation and access request events for people).
//!
//! Calls run at least once: after a crash, an intent committed without its result runs again with
//! the same [`EffectRequest::idempotency_key`], so an implementation should treat a repeated key
//! as the same request.

use std::future::Future;
use std::pin::Pin;

use jitflow_core::connection::ConnectionSpec;
use jitflow_core::id::{ActivationId, ConnectionId, IdentityId, RequestItemId, TenantId};
use jitflow_core::lifecycle::{Actor, Notice};
use jitflow_core::request::{self, ItemSpec};
use jitflow_core::time::{Minutes, Timestamp};

/// A boxed, sendable future: the return type of the hooks, so they can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One call to the target system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectRequest {
    /// The tenant.
    pub tenant: TenantId,
    /// The connection's registered facts (identity, account, entitlement, source).
    pub connection: ConnectionSpec,
    /// The activation, for grants and revokes of JIT access; `None` for standing access.
    pub activation: Option<ActivationId>,
    /// The try, from 1.
    pub attempt: u32,
    /// Stable across repeats of the same try: `<activation>:grant:<try>` and the like.
    pub idempotency_key: String,
}

/// Why a provisioning call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProvisionError {
    /// What went wrong, as the target said it (kept up to 1024 bytes).
    pub message: String,
    /// Whether another try may succeed. A grant that fails with `false` gives up at once; revokes
    /// are retried regardless.
    pub retryable: bool,
}

impl ProvisionError {
    /// A failure worth retrying (timeouts, 5xx).
    pub fn transient(message: impl Into<String>) -> ProvisionError {
        ProvisionError {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry will fix (the entitlement does not exist).
    pub fn permanent(message: impl Into<String>) -> ProvisionError {
        ProvisionError {
            message: message.into(),
            retryable: false,
        }
    }
}

/// Grants and revokes access on target systems.
pub trait Provisioner: Send + Sync + 'static {
    /// Grants the entitlement to the account.
    fn grant(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>>;
    /// Revokes the entitlement from the account. Must succeed if the access is already gone.
    fn revoke(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>>;
    /// Ends the account's live sessions after a revoke, where the target supports it. The
    /// default does nothing. A failure fails the revoke, which is then retried whole.
    fn terminate_sessions(
        &self,
        request: EffectRequest,
    ) -> BoxFuture<'_, Result<(), ProvisionError>> {
        let _ = request;
        Box::pin(async { Ok(()) })
    }
    /// Grants an access request item's role or access profile to its identity. Entitlements
    /// never come here: they go through their connection and [`Provisioner::grant`]. The
    /// default refuses for good (the item's provisioning fails, closed): implement it to serve
    /// role and access profile requests.
    fn grant_item(&self, request: ItemRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        let _ = request;
        Box::pin(async {
            Err(ProvisionError::permanent(
                "this provisioner does not grant roles or access profiles",
            ))
        })
    }
    /// Removes an access request item's role or access profile. Must succeed if the access is
    /// already gone; the default succeeds, since the default [`Provisioner::grant_item`] never
    /// grants anything.
    fn revoke_item(&self, request: ItemRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        let _ = request;
        Box::pin(async { Ok(()) })
    }
    /// Says whether the target holds the connection's access (issue 16's drift), for
    /// `Engine::reconcile`: `request.activation` is the running activation, if any, and
    /// `attempt` is 0 (an inspection changes nothing and is never retried). The default cannot
    /// tell, which keeps the behaviour of embedders that do not implement it: nothing is
    /// compared, nothing revoked.
    fn inspect(&self, request: EffectRequest) -> BoxFuture<'_, Result<Holding, ProvisionError>> {
        let _ = request;
        Box::pin(async { Ok(Holding::Unknown) })
    }
    /// The connection an approved entitlement item creates (its registered facts). The default
    /// derives them from the item ([`crate::requests::item_connection_spec`]): the account and
    /// source chosen in the request, else the identity's id and the source `access-request`, and
    /// the entitlement id as its names. Implement it to register the source's real facts.
    fn describe_item(
        &self,
        tenant: TenantId,
        item: ItemSpec,
    ) -> BoxFuture<'_, Result<ConnectionSpec, ProvisionError>> {
        let _ = tenant;
        Box::pin(async move {
            crate::requests::item_connection_spec(&item).map_err(ProvisionError::permanent)
        })
    }
}

/// What an inspection of the target found ([`Provisioner::inspect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holding {
    /// The target holds the access.
    Held,
    /// The target does not hold it.
    NotHeld,
    /// The target cannot say (or the provisioner cannot ask it).
    Unknown,
}

/// One call to the target system for an access request item's role or access profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRequest {
    /// The tenant.
    pub tenant: TenantId,
    /// The item: who, what, which accounts, and its request.
    pub item: ItemSpec,
    /// The try, from 1.
    pub attempt: u32,
    /// Stable across repeats of the same try: `<item>:grant:<try>` and the like.
    pub idempotency_key: String,
}

/// What the validator is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationRequest {
    /// The tenant.
    pub tenant: TenantId,
    /// The connection's registered facts.
    pub connection: ConnectionSpec,
    /// The activation.
    pub activation: ActivationId,
    /// The period asked for.
    pub period: Minutes,
    /// Who asked.
    pub requested_by: Actor,
}

/// The workflow's own validation of an activation request (tickets, approvals, MFA).
pub trait Validator: Send + Sync + 'static {
    /// `Ok(())` lets the activation proceed; `Err(reason)` refuses it (it ends INVALID). A
    /// validator that cannot decide should refuse: failing closed is the safe side.
    fn validate(&self, request: ValidationRequest) -> BoxFuture<'_, Result<(), String>>;
}

/// A validator that accepts every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl Validator for AcceptAll {
    fn validate(&self, _request: ValidationRequest) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Something people should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The tenant.
    pub tenant: TenantId,
    /// What happened.
    pub notice: Notice,
    /// The connection.
    pub connection: ConnectionId,
    /// The connection's registered facts, as they are at delivery (`None` if it was removed
    /// before a late delivery).
    pub spec: Option<ConnectionSpec>,
    /// The activation, if the notice is about one.
    pub activation: Option<ActivationId>,
    /// When the activation's access expires (or expired), as the event or the activation says
    /// at delivery; `None` when the notice is not about a granted activation.
    pub expires_at: Option<Timestamp>,
    /// What went wrong, for the notices that report a failure: the validator's reason, the
    /// target's last grant or revoke error.
    pub detail: Option<String>,
    /// The tenant's policy's `notificationRecipients` as they are at delivery (empty when the
    /// tenant has no policy).
    pub recipients: Vec<String>,
    /// When it happened.
    pub at: Timestamp,
    /// The committed event's global sequence number: a stable key for de-duplication.
    pub sequence: u64,
}

/// Why a notification was not delivered. The engine tries it again after a capped backoff
/// (`Config::notify_retry_base`, `Config::notify_retry_cap`) and does not move past it until it
/// is delivered, so notices keep their commit order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct NotifyError {
    /// The class of failure (the `reason` label of the failure metric).
    pub kind: NotifyErrorKind,
    /// What went wrong, for logs.
    pub message: String,
}

/// The class of a [`NotifyError`]: a small fixed set, so it can label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotifyErrorKind {
    /// The receiver could not be reached (connection refused, DNS, reset).
    Unreachable,
    /// The receiver did not answer in time.
    Timeout,
    /// The receiver answered, but not with success (an HTTP status other than 2xx).
    Refused,
    /// Anything else (the notice could not be encoded, a bound was hit).
    Other,
}

impl NotifyErrorKind {
    /// Every kind, in the order of [`NotifyErrorKind::as_str`]'s metric labels.
    pub const ALL: [NotifyErrorKind; 4] = [
        NotifyErrorKind::Unreachable,
        NotifyErrorKind::Timeout,
        NotifyErrorKind::Refused,
        NotifyErrorKind::Other,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            NotifyErrorKind::Unreachable => "unreachable",
            NotifyErrorKind::Timeout => "timeout",
            NotifyErrorKind::Refused => "refused",
            NotifyErrorKind::Other => "other",
        }
    }
}

impl std::fmt::Display for NotifyErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl NotifyError {
    /// A failure of this kind.
    pub fn new(kind: NotifyErrorKind, message: impl Into<String>) -> NotifyError {
        NotifyError {
            kind,
            message: message.into(),
        }
    }
}

/// Tells people about activation and access request events. Delivery is at least once, in
/// commit order: the engine hands over one notification at a time and moves on only after
/// `Ok`; an `Err`, or no answer within `Config::notify_timeout`, is tried again after a capped
/// backoff, for ever. After a crash, notifications past the last saved position come again
/// with the same `sequence`. A notifier that fails delays only notifications, never the
/// lifecycle.
pub trait Notifier: Send + Sync + 'static {
    /// Delivers one notification; `Ok` once it is delivered (the engine may then forget it).
    fn notify(&self, notification: Notification) -> BoxFuture<'_, Result<(), NotifyError>>;
    /// Delivers one access request notification (approval requested or forwarded, approved,
    /// rejected, cancelled, expired, granted, grant failed, revoked, closed, removed at sunset,
    /// stuck, recovered), with the same guarantees. The default drops it.
    fn notify_request(
        &self,
        notification: RequestNotification,
    ) -> BoxFuture<'_, Result<(), NotifyError>> {
        let _ = notification;
        Box::pin(async { Ok(()) })
    }
}

/// Something people should hear about an access request item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestNotification {
    /// The tenant.
    pub tenant: TenantId,
    /// What happened.
    pub notice: request::Notice,
    /// The item.
    pub item: RequestItemId,
    /// The item's facts (who, what, its request).
    pub spec: ItemSpec,
    /// Who may decide the item's approval, as it stands at delivery (after a forward: its new
    /// owner); empty for an automatic approval.
    pub approvers: Vec<IdentityId>,
    /// What went wrong, for the notices that report a failure (the last grant or removal
    /// error).
    pub detail: Option<String>,
    /// When it happened.
    pub at: Timestamp,
    /// The committed event's global sequence number: a stable key for de-duplication.
    pub sequence: u64,
}

/// A notifier that drops everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn notify(&self, _notification: Notification) -> BoxFuture<'_, Result<(), NotifyError>> {
        Box::pin(async { Ok(()) })
    }
}
