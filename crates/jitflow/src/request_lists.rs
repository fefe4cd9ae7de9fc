//! The access request lists (issue 7) through the engine: the request status list and its
//! administrators' variant, the pending and completed approvals, the approval summary, the
//! approvers of a request and an identity's entitlement details, served from the store's people index (see
//! [`jitflow_store::request_query`] for the plans and the bounds, and [`crate::query`] for the
//! collection parameters).
//!
//! # Rights
//!
//! A [`Rights::User`] sees only what concerns it: its status list is scoped to requests it made
//! or that were made for it (`regarding-identity` = the caller when no identity is given), and
//! it may name only itself in `requested-for`, `requested-by`, `regarding-identity`,
//! `assigned-to` and an approval list's owner; naming another identity is
//! [`Error::Forbidden`]. A [`Rights::Admin`] may name anyone; the administrators' list is for
//! admins only.
//!
//! # Limits
//!
//! A page holds at most [`MAX_LIMIT`](crate::query::MAX_LIMIT) rows; a list examines at most
//! [`Query::max_examined`] index keys and items; [`Engine::request_approvers`] reads one
//! request's items (at most [`MAX_REQUEST_ITEMS`](jitflow_store::request::MAX_REQUEST_ITEMS)).

use jitflow_core::connection::Connection;
use jitflow_core::filter::{CmpOp, Expr, Value};
use jitflow_core::id::{AccessRequestId, ApprovalId, EntitlementId, IdentityId, ObjectId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::request::{ApprovalRow, Item, ObjectKind, ObjectRef, WorkItemState};
use jitflow_core::time::Timestamp;
use jitflow_store::query::{
    COMPLETED_APPROVALS, PENDING_APPROVALS, Page, Query, REQUEST_ADMINISTRATION, REQUEST_STATUS,
};
pub use jitflow_store::request_query::{ApprovalSummary, Approvals, Scope};

use crate::engine::{Caller, Engine};
use crate::error::Error;
use crate::requests::Rights;

/// What an identity holds of one entitlement ([`Engine::entitlement_details`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementDetails {
    /// Its connections for the entitlement (at most a page: 250 accounts).
    pub connections: Vec<Connection>,
    /// The request items for it that have not ended (at most
    /// [`MAX_OPEN_ITEMS`](jitflow_store::request::MAX_OPEN_ITEMS)).
    pub items: Vec<Item>,
}

/// The caller's identity, if it acts as one.
fn identity_of(caller: &Caller) -> Option<&IdentityId> {
    match &caller.actor {
        Actor::Identity(i) => Some(i),
        _ => None,
    }
}

/// Refuses a user naming another identity than itself in a list's scope.
fn own_scope(caller: &Caller, rights: Rights, named: &[Option<&IdentityId>]) -> Result<(), Error> {
    if rights == Rights::Admin {
        return Ok(());
    }
    let me = identity_of(caller);
    match named.iter().flatten().find(|i| Some(**i) != me) {
        Some(other) => Err(Error::Forbidden(format!(
            "only an admin may list the access requests of another identity ({other})"
        ))),
        None => Ok(()),
    }
}

impl Engine {
    /// The request status list (`GET /access-request-status`): one row per request item within
    /// `scope`, as `query` selects (fields of [`REQUEST_STATUS`]). A user's list with no
    /// identity in `scope` is the requests it made or that were made for it.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] when a user names another identity; [`Error::Query`] for a query
    /// the collection refuses or one that would examine too much; [`Error::Storage`].
    pub fn request_status(
        &self,
        caller: &Caller,
        rights: Rights,
        scope: &Scope,
        query: &Query,
    ) -> Result<Page<Item>, Error> {
        own_scope(
            caller,
            rights,
            &[
                scope.requested_for.as_ref(),
                scope.requested_by.as_ref(),
                scope.regarding.as_ref(),
                scope.assigned_to.as_ref(),
            ],
        )?;
        let mut scope = scope.clone();
        let unscoped = scope.requested_for.is_none()
            && scope.requested_by.is_none()
            && scope.regarding.is_none()
            && scope.assigned_to.is_none();
        if unscoped && rights == Rights::User {
            scope.regarding = identity_of(caller).cloned();
        }
        self.read_query(|r| {
            r.query_items(
                &caller.tenant,
                REQUEST_STATUS,
                query,
                &scope,
                |_| true,
                |i| i,
            )
        })
    }

    /// The administrators' request list (`GET /access-request-administration`): as
    /// [`Engine::request_status`] with the fields of [`REQUEST_ADMINISTRATION`] (`status`
    /// among them), for admins only; an empty `scope` lists the whole tenant.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] for a user; otherwise as [`Engine::request_status`].
    pub fn request_administration(
        &self,
        caller: &Caller,
        rights: Rights,
        scope: &Scope,
        query: &Query,
    ) -> Result<Page<Item>, Error> {
        if rights != Rights::Admin {
            return Err(Error::Forbidden(
                "only an admin may list every access request".into(),
            ));
        }
        self.read_query(|r| {
            r.query_items(
                &caller.tenant,
                REQUEST_ADMINISTRATION,
                query,
                scope,
                |_| true,
                |i| i,
            )
        })
    }

    /// The approvals of `owner` (the caller when `None`) that are `which` (pending or
    /// completed), as `query` selects (fields of [`PENDING_APPROVALS`] or
    /// [`COMPLETED_APPROVALS`]; `id` is the approval id). Automatic approvals are in no list.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] when a user names another owner; [`Error::Invalid`] when the
    /// caller is not an identity and names no owner; otherwise as [`Engine::request_status`].
    pub fn approvals(
        &self,
        caller: &Caller,
        rights: Rights,
        which: Approvals,
        owner: Option<&IdentityId>,
        query: &Query,
    ) -> Result<Page<ApprovalRow>, Error> {
        let owner = self.approval_owner(caller, rights, owner)?;
        let scope = Scope {
            assigned_to: Some(owner),
            ..Scope::default()
        };
        let collection = match which {
            Approvals::Pending => PENDING_APPROVALS,
            Approvals::Completed => COMPLETED_APPROVALS,
        };
        self.read_query(|r| {
            r.query_items(
                &caller.tenant,
                collection,
                query,
                &scope,
                |i| which.admits(i),
                ApprovalRow,
            )
        })
    }

    /// The approval summary of `owner` (the caller when `None`): its approvals pending,
    /// approved and rejected, those decided (or created, when pending) from `from` on.
    ///
    /// # Errors
    ///
    /// As [`Engine::approvals`].
    pub fn approval_summary(
        &self,
        caller: &Caller,
        rights: Rights,
        owner: Option<&IdentityId>,
        from: Option<Timestamp>,
    ) -> Result<ApprovalSummary, Error> {
        let owner = self.approval_owner(caller, rights, owner)?;
        self.read_query(|r| {
            r.approval_summary(
                &caller.tenant,
                &owner,
                from,
                jitflow_store::query::MAX_EXAMINED,
            )
        })
    }

    /// The identities that may still decide on `request`: for each of its items whose
    /// approval is pending, each approver with the approval id, in item order (admins only).
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] for a user; [`Error::NotFound`] when the request does not exist;
    /// [`Error::Storage`].
    pub fn request_approvers(
        &self,
        caller: &Caller,
        rights: Rights,
        request: AccessRequestId,
    ) -> Result<Vec<(IdentityId, ApprovalId)>, Error> {
        if rights != Rights::Admin {
            return Err(Error::Forbidden(
                "only an admin may list the approvers of an access request".into(),
            ));
        }
        let items = self.request_items(&caller.tenant, request)?;
        if items.is_empty() {
            return Err(Error::NotFound(format!(
                "access request {request} not found"
            )));
        }
        Ok(items
            .iter()
            .filter(|i| i.approval.state == WorkItemState::Pending)
            .flat_map(|i| {
                i.approval
                    .approvers
                    .iter()
                    .map(|a| (a.clone(), i.approval.id))
            })
            .collect())
    }

    /// What `identity` holds of `entitlement` (the contract's identity entitlement details,
    /// `revocable-objects`): its connections for the entitlement (one per account) and the
    /// request items for it that have not ended. A user may ask only about itself.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] when a user names another identity; [`Error::NotFound`] when the
    /// identity has neither a connection nor an open item for the entitlement;
    /// [`Error::Storage`].
    pub fn entitlement_details(
        &self,
        caller: &Caller,
        rights: Rights,
        identity: &IdentityId,
        entitlement: &EntitlementId,
    ) -> Result<EntitlementDetails, Error> {
        own_scope(caller, rights, &[Some(identity)])?;
        let query = Query {
            filter: Some(Expr::Cmp {
                field: "entitlement.id",
                op: CmpOp::Eq,
                value: Value::Text(entitlement.as_str().to_owned()),
            }),
            ..Query::default()
        };
        let connections = self
            .read_query(|r| r.query_connections(&caller.tenant, &query, Some(identity)))?
            .items;
        let object = ObjectRef {
            kind: ObjectKind::Entitlement,
            id: ObjectId::parse(entitlement.as_str())
                .map_err(|e| Error::Invalid(format!("entitlementId: {e}")))?,
        };
        let items = crate::error::read(self.store(), |r| {
            r.open_items(&caller.tenant, identity, &object)
        })?;
        if connections.is_empty() && items.is_empty() {
            return Err(Error::NotFound(format!(
                "{identity} holds no entitlement {entitlement}"
            )));
        }
        Ok(EntitlementDetails { connections, items })
    }

    /// The owner of an approval list: `owner`, or the caller's identity.
    fn approval_owner(
        &self,
        caller: &Caller,
        rights: Rights,
        owner: Option<&IdentityId>,
    ) -> Result<IdentityId, Error> {
        own_scope(caller, rights, &[owner])?;
        owner
            .or(identity_of(caller))
            .cloned()
            .ok_or_else(|| Error::Invalid("an approval list needs an owner identity".into()))
    }
}
