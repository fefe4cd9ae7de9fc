//! Access requests (issue 7) through the engine: submit, approve, reject, forward, cancel, close,
//! and the effects of an item (grant, revoke, deactivate a running JIT activation).
//!
//! Every change goes through the writer like a connection command: a submission's items are
//! decided together and committed in one batch (all items or none), and every other operation
//! sends one command per item. The scheduler fires item timers (approval expiry, sunrise,
//! sunset, retries) and the effect runner runs item effects, both through the writer.
//!
//! # Provisioning an item
//!
//! - A role or an access profile is granted and revoked through
//!   [`Provisioner::grant_item`] and
//!   [`Provisioner::revoke_item`].
//! - An entitlement is held through its *entitlement connection*, whose id is derived from the
//!   identity and the entitlement ([`item_connection`]), so the engine finds it without an
//!   index. The grant registers the connection (facts from
//!   [`Provisioner::describe_item`]) or changes its
//!   type to the one the core chose. A STANDING grant then provisions the access through
//!   [`Provisioner::grant`] (no activation); a JIT grant
//!   provisions nothing: the identity activates it when needed.
//! - A removal deactivates a running JIT activation first (the connection's own lifecycle
//!   revokes it, with its retries) and waits for it to end, then revokes the standing access
//!   (which must succeed when there is none) and removes the connection.
//!
//! Idempotency keys, retries (grants up to `grant_max_attempts`, revokes forever, with the stuck
//! flag and its notification) and the effect timeout are those of the JIT effects.
//!
//! # Limits
//!
//! A submission has at most [`MAX_ITEMS`](jitflow_core::request::submit::MAX_ITEMS) items (and
//! the contract's smaller limits, checked by `validate_submit`); bulk approve and bulk cancel
//! take at most [`MAX_BULK_IDS`](jitflow_core::request::submit::MAX_BULK_IDS) ids.
//!
//! The duplicate rule is applied by the writer against its own current view (the committed
//! items plus those of its batch), so of two submissions of the same access racing each
//! other exactly one survives and the other is committed cancelled as a duplicate. The revoke
//! rules (`validate_submit`) read a snapshot before the writer.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use jitflow_core::connection::{Connection, ConnectionSpec, ConnectionType};
use jitflow_core::id::{
    AccessRequestId, AccountId, ActivationId, ApprovalId, ConnectionId, EntitlementId, IdentityId,
    RequestItemId, SourceId, TenantId,
};
use jitflow_core::lifecycle::{self, Actor};
use jitflow_core::request::submit::{Assignment, Origin, item_id};
use jitflow_core::request::{
    Bulk, Closure, Command, CompletionStatus, Effect, ExecutionStatus, Existing, Item, ItemSpec,
    ItemStatus, ObjectKind, ObjectRef, Rejection, RequestType, Submission, approval_item,
    validate_bulk, validate_submit,
};
use jitflow_store::Store;
use jitflow_store::read::Reader;
use tokio::sync::{oneshot, watch};
use tracing::debug;

use crate::engine::{Caller, Engine, fingerprint, uuid_v4};
use crate::error::Error;
use crate::hooks::{EffectRequest, ItemRequest, ProvisionError, Provisioner};
use crate::writer::{Op, Reply, Signals, WriterHandle};

/// What rights the caller has for an access request operation (the contract's USER and
/// ORG_ADMIN levels). An admin may approve, reject, cancel and close any item; a user may
/// approve or reject items it is an approver of and cancel its own requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rights {
    /// An ordinary user.
    User,
    /// An administrator (ORG_ADMIN).
    Admin,
}

impl Rights {
    const fn admin(self) -> bool {
        matches!(self, Rights::Admin)
    }
}

/// The longest a removal waits between looks at a JIT activation it asked to end, when no
/// commit wakes it earlier.
const DEACTIVATION_POLL: Duration = Duration::from_secs(1);

/// The entitlement connection of an item: its id is derived from the identity and the
/// entitlement, so every request for the same access names the same connection. `None` for a
/// role or an access profile.
pub fn item_connection(spec: &ItemSpec) -> Option<ConnectionId> {
    entitlement_connection(&spec.requested_for, &spec.object)
}

/// The entitlement connection of `identity` for `object` (see [`item_connection`]).
pub(crate) fn entitlement_connection(
    identity: &IdentityId,
    object: &ObjectRef,
) -> Option<ConnectionId> {
    if object.kind != ObjectKind::Entitlement {
        return None;
    }
    let (who, what) = (identity.as_str(), object.id.as_str());
    let high = fingerprint(&["jitflow:entitlement-connection:1", who, what]);
    let low = fingerprint(&["jitflow:entitlement-connection:2", who, what]);
    Some(ConnectionId::from_u128(
        (u128::from(high) << 64) | u128::from(low),
    ))
}

/// The registered facts of an entitlement item's connection, derived from the item alone: the
/// account chosen in the request (its native identity or UUID, if it is a valid id), else the
/// identity's id; the source chosen, else `access-request`; the entitlement id as its name and
/// attribute value. The type is set by the grant. Fails for a role or an access profile.
pub fn item_connection_spec(spec: &ItemSpec) -> Result<ConnectionSpec, String> {
    let id = item_connection(spec).ok_or("only an entitlement has a connection")?;
    let entitlement = EntitlementId::parse(spec.object.id.as_str()).map_err(|e| e.to_string())?;
    let selection = spec.accounts.first();
    let chosen = selection.and_then(|s| s.accounts.first()).and_then(|a| {
        [a.native_identity.as_deref(), a.account_uuid.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|text| AccountId::parse(text).ok())
    });
    let account = match chosen {
        Some(a) => a,
        None => AccountId::parse(spec.requested_for.as_str()).map_err(|e| e.to_string())?,
    };
    let source = match selection.and_then(|s| s.source.clone()) {
        Some(s) => s,
        None => SourceId::parse("access-request").map_err(|e| e.to_string())?,
    };
    Ok(ConnectionSpec {
        id,
        identity: spec.requested_for.clone(),
        identity_name: spec.requested_for.as_str().to_owned(),
        account_name: account.as_str().to_owned(),
        account,
        entitlement,
        entitlement_name: spec.object.id.as_str().to_owned(),
        attribute_name: "entitlement".to_owned(),
        attribute_value: spec.object.id.as_str().to_owned(),
        privilege_level: None,
        source_name: source.as_str().to_owned(),
        source,
        kind: ConnectionType::Standing,
        standalone: false,
    })
}

/// What an identity holds of an object and what is in progress for it: the duplicate rule's
/// and the revoke rules' input, read from the open items and the entitlement connection.
fn existing(
    reader: &Reader,
    tenant: &TenantId,
    identity: &IdentityId,
    object: &ObjectRef,
) -> Result<Existing, Error> {
    let open = reader.open_items(tenant, identity, object)?;
    let registered = match entitlement_connection(identity, object) {
        Some(c) => reader.connection(tenant, c)?.is_some(),
        None => false,
    };
    Ok(existing_of(&open, registered))
}

/// [`existing`] from what it reads: the open items of the identity for the object (in item id
/// order) and whether the entitlement connection is registered. The writer calls it with its
/// own current view, so the duplicate rule sees the items of its batch.
pub(crate) fn existing_of(open: &[Item], registered: bool) -> Existing {
    let in_progress = open
        .iter()
        .find(|i| i.status != ItemStatus::Granted)
        .map(Item::id);
    let granted = open
        .iter()
        .find(|i| i.status == ItemStatus::Granted && i.spec.request_type == RequestType::Grant);
    let assignment = match granted {
        Some(i) => Some(Assignment {
            origin: Origin::Requested,
            accounts: i.spec.accounts.clone(),
            start_date: i.spec.start_date,
            remove_date: i.spec.remove_date,
        }),
        // An entitlement connection the embedder registered counts as assigned, with no dates
        // and no account selection.
        None => registered.then(|| Assignment {
            origin: Origin::Requested,
            accounts: Vec::new(),
            start_date: None,
            remove_date: None,
        }),
    };
    Existing {
        assignment,
        in_progress,
    }
}

impl Engine {
    /// Submits an access request (the contract's `POST /access-requests`, answered 202): checks
    /// every rule and limit, expands it into items, and commits them all in one batch, each
    /// through the configured approval step (`Config::approvers`). An item for access that is
    /// already assigned or in progress is committed cancelled as a duplicate. Returns the new
    /// request id and its items.
    ///
    /// The tenant's access request config adds rules (see
    /// `jitflow_core::request::config`); `rights` says whether the caller is an org admin, who
    /// may request for anyone and submit while `approvalsMustBeExternal` is set. The config is
    /// checked here and again by the writer at decide time, so a config change committed
    /// before the submission's items are decided always applies to them.
    ///
    /// Errors: [`Error::RequestRejected`] with `Rejection::Invalid` for a broken rule, the
    /// config's included (nothing stored); [`Error::Invalid`] when the caller is not an
    /// identity.
    ///
    /// Timed as the bulk call `submit` (see [`crate::bulk::timed`]).
    pub async fn submit_request(
        &self,
        caller: &Caller,
        rights: Rights,
        submission: &Submission,
    ) -> Result<(AccessRequestId, Vec<Item>), Error> {
        let call = self.submit_items(caller, rights, submission);
        crate::bulk::timed(self, crate::bulk::Kind::Submit, call).await
    }

    /// [`Engine::submit_request`], untimed.
    async fn submit_items(
        &self,
        caller: &Caller,
        rights: Rights,
        submission: &Submission,
    ) -> Result<(AccessRequestId, Vec<Item>), Error> {
        let Actor::Identity(requester) = &caller.actor else {
            return Err(Error::Invalid(
                "an access request is submitted by an identity".into(),
            ));
        };
        let tenant = &caller.tenant;
        let request = AccessRequestId::from_u128(uuid_v4());
        let reader = self.store().reader()?;
        let failure: RefCell<Option<Error>> = RefCell::new(None);
        let lookup = |identity: &IdentityId, object: &ObjectRef| {
            existing(&reader, tenant, identity, object).unwrap_or_else(|e| {
                failure.borrow_mut().get_or_insert(e);
                Existing::default()
            })
        };
        let rules = reader.access_request_config(tenant)?.unwrap_or_default();
        let specs = validate_submit(
            request,
            submission,
            requester,
            rights.admin(),
            &rules,
            self.now(),
            lookup,
        )
        .map_err(Rejection::from)?;
        if let Some(e) = failure.into_inner() {
            return Err(e);
        }
        drop(reader);
        // The duplicate rule's input is read by the writer, from its current view including
        // the items of its batch, so that of two identical submissions racing each other
        // exactly one survives; the snapshot above only served the revoke rules.
        let commands = specs
            .into_iter()
            .map(|spec| {
                let id = spec.id;
                let command = Command::Submit {
                    spec: Box::new(spec),
                    approval: self.approval_step().clone(),
                    existing: Existing::default(),
                };
                (id, command)
            })
            .collect();
        let items = self.item_commands(caller, rights, commands).await?;
        Ok((request, items))
    }

    /// Approves an item's pending approval (an approver of the item, or an admin). Returns the
    /// item; an item without a start date starts provisioning at once.
    pub async fn approve(
        &self,
        caller: &Caller,
        rights: Rights,
        approval: ApprovalId,
        comment: Option<String>,
    ) -> Result<Item, Error> {
        self.decide_approval(caller, rights, approval, Command::Approve { comment })
            .await
    }

    /// Bulk approve's and approve's one approval: the item the approval id names.
    fn queue_approval(
        &self,
        caller: &Caller,
        rights: Rights,
        approval: ApprovalId,
    ) -> Result<oneshot::Receiver<Result<Reply, Error>>, Error> {
        let command = Command::Approve { comment: None };
        self.queue_items(caller, rights, vec![(approval_item(approval), command)])
    }

    /// Forwards an item's pending approval to `new_owner` (an approver of the item hands over
    /// its own place; an admin who is not an approver hands over the whole approval), with the
    /// forwarder's `comment`. Durable before it answers; returns the item, whose
    /// `approval.approvers` and `forwards` show the move.
    ///
    /// Errors (`Error::RequestRejected`): `NotFound` for an unknown approval, `NotApprover`
    /// when the caller is neither an approver nor an admin, `AlreadyDecided` once the approval
    /// is no longer pending, `ForwardToApprover`, `SelfReview`, `TooManyForwards`, and
    /// `Invalid` for an empty or overlong comment.
    pub async fn forward_approval(
        &self,
        caller: &Caller,
        rights: Rights,
        approval: ApprovalId,
        new_owner: IdentityId,
        comment: String,
    ) -> Result<Item, Error> {
        let command = Command::Forward {
            to: new_owner,
            comment,
        };
        self.decide_approval(caller, rights, approval, command)
            .await
    }

    /// Rejects an item's pending approval (an approver of the item, or an admin).
    pub async fn reject(
        &self,
        caller: &Caller,
        rights: Rights,
        approval: ApprovalId,
        comment: Option<String>,
    ) -> Result<Item, Error> {
        self.decide_approval(caller, rights, approval, Command::Reject { comment })
            .await
    }

    /// Sends an approver's decision to the item the approval id names.
    async fn decide_approval(
        &self,
        caller: &Caller,
        rights: Rights,
        approval: ApprovalId,
        command: Command,
    ) -> Result<Item, Error> {
        self.item_command(caller, rights, approval_item(approval), command)
            .await
    }

    /// Approves up to [`MAX_BULK_IDS`](jitflow_core::request::submit::MAX_BULK_IDS) approvals,
    /// each on its own: one result per id, in order. More ids, or none, is refused whole.
    pub async fn bulk_approve(
        &self,
        caller: &Caller,
        rights: Rights,
        approvals: &[ApprovalId],
    ) -> Result<Vec<Result<Item, Error>>, Error> {
        crate::bulk::timed(self, crate::bulk::Kind::Approve, async {
            validate_bulk(Bulk::Approve, approvals.len()).map_err(Rejection::from)?;
            let queued: Vec<_> = approvals
                .iter()
                .map(|a| self.queue_approval(caller, rights, *a))
                .collect();
            let mut out = Vec::with_capacity(queued.len());
            for answer in queued {
                out.push(match answer {
                    Ok(answer) => items_reply(answer).await.map(first),
                    Err(e) => Err(e),
                });
            }
            crate::bulk::whole(out, |e| Some(e))
        })
        .await
    }

    /// Cancels a request before its approval step has passed (the requester, or an admin): every
    /// item still open is cancelled, all or none (one item past its approval refuses the whole
    /// cancel: close the request instead). Returns the request's items.
    pub async fn cancel_request(
        &self,
        caller: &Caller,
        rights: Rights,
        request: AccessRequestId,
        comment: String,
    ) -> Result<Vec<Item>, Error> {
        let commands = self.open_item_commands(
            &caller.tenant,
            request,
            |_| true,
            || Command::Cancel {
                comment: comment.clone(),
            },
        )?;
        self.item_commands(caller, rights, commands).await?;
        self.request_items(&caller.tenant, request)
    }

    /// Cancels up to [`MAX_BULK_IDS`](jitflow_core::request::submit::MAX_BULK_IDS) requests,
    /// each on its own: one result per request, in order.
    pub async fn bulk_cancel(
        &self,
        caller: &Caller,
        rights: Rights,
        requests: &[AccessRequestId],
        comment: String,
    ) -> Result<Vec<Result<Vec<Item>, Error>>, Error> {
        self.each_request(Bulk::Cancel, requests, |request| {
            self.cancel_request(caller, rights, request, comment.clone())
        })
        .await
    }

    /// A bulk call over access requests (cancel, close): refused whole outside its bound, else
    /// `one` for each request in order, one result each (see [`crate::bulk`]), timed.
    async fn each_request<F, Fut>(
        &self,
        which: Bulk,
        requests: &[AccessRequestId],
        one: F,
    ) -> Result<Vec<Result<Vec<Item>, Error>>, Error>
    where
        F: Fn(AccessRequestId) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Item>, Error>>,
    {
        let kind = match which {
            Bulk::Approve => crate::bulk::Kind::Approve,
            Bulk::Cancel => crate::bulk::Kind::Cancel,
            Bulk::Close => crate::bulk::Kind::Close,
        };
        crate::bulk::timed(self, kind, async {
            validate_bulk(which, requests.len()).map_err(Rejection::from)?;
            let mut out = Vec::with_capacity(requests.len());
            for request in requests {
                out.push(one(*request).await);
            }
            crate::bulk::whole(out, |e| Some(e))
        })
        .await
    }

    /// Closes a request at any stage (an admin), recording `execution`, `completion` and
    /// `message` (the contract's defaults when `None`) on every item still open. An item that
    /// has granted nothing ends at once; a grant in progress stops and is cleaned up; granted
    /// access keeps its course (sunset). Returns the request's items.
    pub async fn close_request(
        &self,
        caller: &Caller,
        rights: Rights,
        request: AccessRequestId,
        execution: ExecutionStatus,
        completion: CompletionStatus,
        message: Option<String>,
    ) -> Result<Vec<Item>, Error> {
        let closure = Closure {
            execution,
            completion,
            message: message.unwrap_or_else(|| Closure::default().message),
        };
        // An item already closed keeps its close; the others get this one.
        let commands = self.open_item_commands(
            &caller.tenant,
            request,
            |i| i.closure.is_none(),
            || Command::Close(closure.clone()),
        )?;
        self.item_commands(caller, rights, commands).await?;
        self.request_items(&caller.tenant, request)
    }

    /// Closes up to [`MAX_CLOSE_IDS`](jitflow_core::request::submit::MAX_CLOSE_IDS) requests
    /// as [`Engine::close_request`] does, each on its own: one result per request, in order.
    /// More ids, or none, is refused whole; so is the call when the engine could not write one
    /// of them ([`Error::is_unavailable`]), as for every bulk call.
    pub async fn bulk_close(
        &self,
        caller: &Caller,
        rights: Rights,
        requests: &[AccessRequestId],
        execution: ExecutionStatus,
        completion: CompletionStatus,
        message: Option<String>,
    ) -> Result<Vec<Result<Vec<Item>, Error>>, Error> {
        self.each_request(Bulk::Close, requests, |request| {
            let message = message.clone();
            self.close_request(caller, rights, request, execution, completion, message)
        })
        .await
    }

    /// The access request item `id` of `tenant`.
    pub fn request_item(
        &self,
        tenant: &TenantId,
        id: RequestItemId,
    ) -> Result<Option<Item>, Error> {
        crate::error::read(self.store(), |r| r.request_item(tenant, id))
    }

    /// The items of the access request `request` of `tenant`, in item order (empty for an
    /// unknown request).
    pub fn request_items(
        &self,
        tenant: &TenantId,
        request: AccessRequestId,
    ) -> Result<Vec<Item>, Error> {
        crate::error::read(self.store(), |r| r.request_items(tenant, request))
    }

    /// `command` for every item of `request` that is still open and `wanted`; when there is
    /// none, for every item, so that the core says why the operation is refused. An unknown
    /// request is `Rejection::NotFound` naming its first item.
    fn open_item_commands(
        &self,
        tenant: &TenantId,
        request: AccessRequestId,
        wanted: impl Fn(&Item) -> bool,
        command: impl Fn() -> Command,
    ) -> Result<Vec<(RequestItemId, Command)>, Error> {
        let items = self.request_items(tenant, request)?;
        if items.is_empty() {
            return Err(Rejection::NotFound(item_id(request, 0)).into());
        }
        let open = |i: &&Item| !i.status.is_terminal() && wanted(i);
        let chosen: Vec<&Item> = match items.iter().filter(open).count() {
            0 => items.iter().collect(),
            _ => items.iter().filter(open).collect(),
        };
        Ok(chosen.into_iter().map(|i| (i.id(), command())).collect())
    }

    async fn item_command(
        &self,
        caller: &Caller,
        rights: Rights,
        item: RequestItemId,
        command: Command,
    ) -> Result<Item, Error> {
        self.item_commands(caller, rights, vec![(item, command)])
            .await
            .map(first)
    }

    async fn item_commands(
        &self,
        caller: &Caller,
        rights: Rights,
        commands: Vec<(RequestItemId, Command)>,
    ) -> Result<Vec<Item>, Error> {
        let answer = self.queue_items(caller, rights, commands)?;
        items_reply(answer).await
    }

    fn queue_items(
        &self,
        caller: &Caller,
        rights: Rights,
        commands: Vec<(RequestItemId, Command)>,
    ) -> Result<oneshot::Receiver<Result<Reply, Error>>, Error> {
        let op = Op::Request {
            tenant: caller.tenant.clone(),
            admin: rights.admin(),
            commands,
        };
        self.submit(caller, op, None)
    }
}

fn first(items: Vec<Item>) -> Item {
    items.into_iter().next().expect("one command, one item")
}

async fn items_reply(answer: oneshot::Receiver<Result<Reply, Error>>) -> Result<Vec<Item>, Error> {
    match answer.await.map_err(|_| Error::Stopped)?? {
        Reply::Items(items) => Ok(items),
        other => unreachable!("item commands answered {other:?}"),
    }
}

fn item_request(
    tenant: &TenantId,
    item: &Item,
    attempt: u32,
    idempotency_key: String,
) -> ItemRequest {
    ItemRequest {
        tenant: tenant.clone(),
        item: item.spec.clone(),
        attempt,
        idempotency_key,
    }
}

/// Runs the effects of access request items; see the module documentation.
pub(crate) struct ItemEffects {
    pub store: Arc<Store>,
    pub writer: WriterHandle,
    pub provisioner: Arc<dyn Provisioner>,
    pub signals: Arc<Signals>,
    pub timeout: Duration,
    pub shutdown: watch::Receiver<bool>,
}

impl ItemEffects {
    /// Runs one effect and returns the command that reports its result; `None` when the
    /// engine stops first (the intent stays and runs again after a restart).
    pub async fn run(&self, tenant: &TenantId, item: &Item, effect: Effect) -> Option<Command> {
        // A call that does not answer in time failed with an unknown outcome: retried.
        let timed_out = || {
            ProvisionError::transient(format!(
                "no answer within {}",
                jitflow_core::time::format_duration(self.timeout)
            ))
        };
        let key = effect.idempotency_key(item.id());
        Some(match effect {
            Effect::Grant { attempt, kind } => {
                let call = self.grant(tenant, item, attempt, kind, key);
                let result = tokio::time::timeout(self.timeout, call).await;
                match result.unwrap_or_else(|_| Err(timed_out())) {
                    Ok(()) => Command::GrantSucceeded { attempt },
                    Err(e) => Command::GrantFailed {
                        attempt,
                        error: e.message,
                        retryable: e.retryable,
                    },
                }
            }
            Effect::Revoke { attempt } => {
                let call = self.revoke(tenant, item, attempt, key);
                let result = tokio::time::timeout(self.timeout, call).await;
                match result.unwrap_or_else(|_| Err(timed_out())) {
                    Ok(()) => Command::RevokeSucceeded { attempt },
                    Err(e) => Command::RevokeFailed {
                        attempt,
                        error: e.message,
                    },
                }
            }
            Effect::DeactivateJit { activation } => {
                self.deactivate(tenant, item, activation).await?;
                Command::JitDeactivated { activation }
            }
        })
    }

    /// Reports an effect's result through the writer.
    pub async fn report(&self, tenant: &TenantId, item: RequestItemId, command: Command) {
        match self
            .connection_op(Op::Request {
                tenant: tenant.clone(),
                admin: false,
                commands: vec![(item, command)],
            })
            .await
        {
            Ok(_) => debug!("result committed"),
            Err(e) => debug!(error = %e, "result not applied"),
        }
    }

    /// Sends one op to the writer as the system and waits for its answer.
    async fn connection_op(&self, op: Op) -> Result<Reply, Error> {
        self.writer.call(op).await
    }

    fn connection(
        &self,
        tenant: &TenantId,
        id: ConnectionId,
    ) -> Result<Option<Connection>, ProvisionError> {
        crate::error::read(&self.store, |r| r.connection(tenant, id))
            .map_err(|e| ProvisionError::transient(e.to_string()))
    }

    /// Sends a lifecycle command to the item's connection; a refusal is a retryable failure.
    async fn connection_command(
        &self,
        tenant: &TenantId,
        connection: ConnectionId,
        command: lifecycle::Command,
    ) -> Result<Option<Connection>, ProvisionError> {
        let op = Op::Connection {
            tenant: tenant.clone(),
            connection,
            command,
        };
        match self.connection_op(op).await {
            Ok(Reply::Connection(c)) => Ok(c.map(|c| *c)),
            Ok(other) => unreachable!("connection command answered {other:?}"),
            // Another connection holds the assignment (an embedder's own, on the account the
            // item's connection would get): registering again can never succeed, so the grant
            // fails now, naming the holder, instead of retrying.
            Err(e @ Error::Rejected(lifecycle::Rejection::AssignmentTaken { .. })) => Err(
                ProvisionError::permanent(format!("connection {connection}: {e}")),
            ),
            Err(e) => Err(ProvisionError::transient(format!(
                "connection {connection}: {e}"
            ))),
        }
    }

    /// The registered facts of the item's connection `id`, from the provisioner.
    async fn describe(
        &self,
        tenant: &TenantId,
        item: &Item,
        id: ConnectionId,
    ) -> Result<ConnectionSpec, ProvisionError> {
        let mut spec = self
            .provisioner
            .describe_item(tenant.clone(), item.spec.clone())
            .await?;
        // The id is the engine's, whatever the provisioner says.
        spec.id = id;
        Ok(spec)
    }

    async fn grant(
        &self,
        tenant: &TenantId,
        item: &Item,
        attempt: u32,
        kind: Option<ConnectionType>,
        idempotency_key: String,
    ) -> Result<(), ProvisionError> {
        let Some(kind) = kind else {
            let request = item_request(tenant, item, attempt, idempotency_key);
            return self.provisioner.grant_item(request).await;
        };
        let id = item_connection(&item.spec)
            .ok_or_else(|| ProvisionError::permanent("a connection type for a non-entitlement"))?;
        let connection = match self.connection(tenant, id)? {
            Some(c) if c.kind() == kind => c,
            Some(_) => self
                .connection_command(tenant, id, lifecycle::Command::ChangeType(kind))
                .await?
                .ok_or_else(|| ProvisionError::transient("connection removed meanwhile"))?,
            None => {
                let mut spec = self.describe(tenant, item, id).await?;
                spec.kind = kind;
                self.connection_command(tenant, id, lifecycle::Command::Register(spec))
                    .await?
                    .ok_or_else(|| ProvisionError::transient("connection not registered"))?
            }
        };
        if kind != ConnectionType::Standing {
            // A JIT connection holds access only while activated: nothing to provision now.
            return Ok(());
        }
        self.provisioner
            .grant(EffectRequest {
                tenant: tenant.clone(),
                connection: connection.spec,
                activation: None,
                attempt,
                idempotency_key,
            })
            .await
    }

    async fn revoke(
        &self,
        tenant: &TenantId,
        item: &Item,
        attempt: u32,
        idempotency_key: String,
    ) -> Result<(), ProvisionError> {
        let Some(id) = item_connection(&item.spec) else {
            let request = item_request(tenant, item, attempt, idempotency_key);
            return self.provisioner.revoke_item(request).await;
        };
        let stored = self.connection(tenant, id)?;
        let spec = match &stored {
            Some(c) => c.spec.clone(),
            None => self.describe(tenant, item, id).await?,
        };
        let request = EffectRequest {
            tenant: tenant.clone(),
            connection: spec,
            activation: None,
            attempt,
            idempotency_key,
        };
        crate::effects::revoke(&*self.provisioner, request).await?;
        if stored.is_some() {
            // The access is gone: so is the eligibility the connection records.
            self.connection_command(tenant, id, lifecycle::Command::Remove)
                .await?;
        }
        Ok(())
    }

    /// Asks the connection to deactivate `activation` and waits until it has ended (its revoke
    /// succeeded). `None` when the engine stops first.
    async fn deactivate(
        &self,
        tenant: &TenantId,
        item: &Item,
        activation: ActivationId,
    ) -> Option<()> {
        let Some(connection) = item_connection(&item.spec) else {
            return Some(());
        };
        let mut committed = self.signals.committed.subscribe();
        let mut shutdown = self.shutdown.clone();
        let mut asked = false;
        loop {
            let ended = crate::error::read(&self.store, |r| r.activation(tenant, activation))
                .map(|a| a.is_none_or(|a| a.ended_at.is_some()));
            match ended {
                Ok(true) => return Some(()),
                Ok(false) if !asked => {
                    asked = true;
                    // Refused when a deactivation or expiry is already under way: either way
                    // the activation ends on its own course, which this waits for.
                    let result = self
                        .connection_command(
                            tenant,
                            connection,
                            lifecycle::Command::Deactivate { client: None },
                        )
                        .await;
                    debug!(?result, %activation, "deactivation asked");
                    continue;
                }
                Ok(false) => {}
                Err(e) => debug!(error = %e, "reading the activation failed; looking again"),
            }
            tokio::select! {
                _ = committed.recv() => {}
                _ = tokio::time::sleep(DEACTIVATION_POLL) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }
}
