//! The access request lists (issue 7): the request status list and its administrators'
//! variant, the pending and completed approvals and the approval summary, served from the
//! people index (who an item is for, who asked, who approves) with the collection parameters of
//! [`crate::query`] (`filters`, `sorters`, `offset`, `limit`, `count`, `searchAfter`).
//!
//! # Plans
//!
//! A list scoped to identities ([`Scope`]: `requested-for`, `requested-by`,
//! `regarding-identity`, `assigned-to`, an approval owner) reads the people index for the most
//! selective identity (the approver, then the requested-for identity, then the requester; both
//! of the last two for `regarding-identity`); an unscoped list (the administrators') reads the
//! tenant's items. Every candidate is checked against the whole scope and the filter, and the
//! page is sorted in memory as [`crate::query`]'s sorted plans are (`searchAfter` and `offset`
//! included). A query decodes at most [`Query::max_examined`] index keys and items and fails
//! with [`Error::ScanBound`] past it.

use std::collections::BTreeSet;

use jitflow_core::filter::Fields;
use jitflow_core::id::{IdentityId, RequestItemId, TenantId};
use jitflow_core::request::{Item, WorkItemState};
use jitflow_core::time::Timestamp;

use crate::codec;
use crate::query::{Budget, Collection, Error, Page, Query, SortedPage};
use crate::read::Reader;
use crate::request::Role;
use crate::tables::{REQUEST_ITEMS, REQUEST_PEOPLE};

/// Who the items of a list must concern (all the given conditions hold). Identities are
/// resolved already (`me` is the caller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// `requested-for`: the identity the access is for.
    pub requested_for: Option<IdentityId>,
    /// `requested-by`: the identity who submitted the request.
    pub requested_by: Option<IdentityId>,
    /// `regarding-identity`: the requester or the identity the access is for.
    pub regarding: Option<IdentityId>,
    /// `assigned-to` (or an approval list's owner): an approver of the item.
    pub assigned_to: Option<IdentityId>,
    /// `request-state=EXECUTING`: only items whose request state is `EXECUTING`.
    pub executing_only: bool,
}

impl Scope {
    /// Whether `item` is within the scope.
    pub fn admits(&self, item: &Item) -> bool {
        let spec = &item.spec;
        self.requested_for
            .as_ref()
            .is_none_or(|i| *i == spec.requested_for)
            && self
                .requested_by
                .as_ref()
                .is_none_or(|i| *i == spec.requester)
            && self
                .regarding
                .as_ref()
                .is_none_or(|i| *i == spec.requested_for || *i == spec.requester)
            && self
                .assigned_to
                .as_ref()
                .is_none_or(|i| item.approval.approvers.contains(i))
            && (!self.executing_only
                || item.request_state() == jitflow_core::request::RequestState::Executing)
    }

    /// The people index ranges to read, `None` for the whole tenant.
    fn ranges(&self) -> Option<Vec<(Role, &IdentityId)>> {
        if let Some(i) = &self.assigned_to {
            return Some(vec![(Role::Approver, i)]);
        }
        if let Some(i) = &self.requested_for {
            return Some(vec![(Role::RequestedFor, i)]);
        }
        if let Some(i) = &self.requested_by {
            return Some(vec![(Role::RequestedBy, i)]);
        }
        self.regarding
            .as_ref()
            .map(|i| vec![(Role::RequestedFor, i), (Role::RequestedBy, i)])
    }
}

/// Which approvals an approval list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Approvals {
    /// Still waiting for a decision (`PENDING`).
    Pending,
    /// Decided, expired or cancelled.
    Completed,
}

impl Approvals {
    /// Whether `item`'s approval is of this kind (an automatic approval, with no approvers, is
    /// in no approval list).
    pub fn admits(self, item: &Item) -> bool {
        if item.approval.approvers.is_empty() {
            return false;
        }
        (item.approval.state == WorkItemState::Pending) == (self == Approvals::Pending)
    }
}

/// The contract's `ApprovalSummary` of one approver: how many approvals are pending, approved
/// and rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ApprovalSummary {
    /// `pending`.
    pub pending: u64,
    /// `approved`.
    pub approved: u64,
    /// `rejected`.
    pub rejected: u64,
}

impl Reader {
    /// Calls `visit` with every item of `tenant` in `scope`'s index ranges (or every item of
    /// the tenant), each once, charging `budget` for every key and item read.
    fn scoped_items(
        &self,
        tenant: &TenantId,
        scope: &Scope,
        budget: &mut Budget,
        mut visit: impl FnMut(Item),
    ) -> Result<(), Error> {
        let t = tenant.as_str();
        let items = self.open(REQUEST_ITEMS)?;
        let Some(ranges) = scope.ranges() else {
            for entry in items.range((t, 0)..=(t, u128::MAX))? {
                budget.take()?;
                let (k, v) = entry?;
                let id = RequestItemId::from_u128(k.value().1);
                visit(codec::decode_item(t, id, v.value())?);
            }
            return Ok(());
        };
        let people = self.open(REQUEST_PEOPLE)?;
        let mut ids = BTreeSet::new();
        for (role, identity) in ranges {
            let (code, who) = (role as u8, identity.as_str());
            for entry in people.range((t, code, who, 0)..=(t, code, who, u128::MAX))? {
                budget.take()?;
                ids.insert(entry?.0.value().3);
            }
        }
        for id in ids {
            budget.take()?;
            let item = RequestItemId::from_u128(id);
            let Some(bytes) = items.get((t, id))? else {
                return Err(crate::read::Error::from(codec::Error::new(
                    codec::RecordName::Key {
                        table: "request_people",
                        key: format!("({t:?}, {item})"),
                    },
                    codec::Problem::Invalid("names an item that is not stored".to_owned()),
                ))
                .into());
            };
            visit(codec::decode_item(t, item, bytes.value())?);
        }
        Ok(())
    }

    /// Lists the items of `tenant` within `scope` that `query` selects on `collection`, each
    /// seen through `view` (the item itself for a status list, an
    /// [`ApprovalRow`](jitflow_core::request::ApprovalRow) for an approval list), keeping only
    /// those `keep` admits.
    ///
    /// # Errors
    ///
    /// A [`Query::validate`] error, [`Error::ScanBound`], or [`Error::Read`].
    pub fn query_items<V: Fields>(
        &self,
        tenant: &TenantId,
        collection: &Collection,
        query: &Query,
        scope: &Scope,
        keep: impl Fn(&Item) -> bool,
        view: impl Fn(Item) -> V,
    ) -> Result<Page<V>, Error> {
        query.validate(collection)?;
        let keys = query.order(collection);
        let mut budget = Budget {
            used: 0,
            max: query.max_examined,
        };
        let mut page = SortedPage::new(query, &keys);
        self.scoped_items(tenant, scope, &mut budget, |item| {
            if !scope.admits(&item) || !keep(&item) {
                return;
            }
            let row = view(item);
            if query.filter.as_ref().is_none_or(|f| f.matches(&row)) {
                page.push(row);
            }
        })?;
        tracing::debug!(
            collection = collection.name,
            examined = budget.used,
            "request list"
        );
        Ok(page.finish())
    }

    /// The approval summary of `approver` in `tenant`: its approvals pending, approved and
    /// rejected, counting only those decided (or, when pending, created) at or after `from`
    /// when given. Reads at most `max_examined` keys and items.
    ///
    /// # Errors
    ///
    /// [`Error::ScanBound`] or [`Error::Read`].
    pub fn approval_summary(
        &self,
        tenant: &TenantId,
        approver: &IdentityId,
        from: Option<Timestamp>,
        max_examined: usize,
    ) -> Result<ApprovalSummary, Error> {
        let scope = Scope {
            assigned_to: Some(approver.clone()),
            ..Scope::default()
        };
        let mut budget = Budget {
            used: 0,
            max: max_examined,
        };
        let mut summary = ApprovalSummary::default();
        self.scoped_items(tenant, &scope, &mut budget, |item| {
            let a = &item.approval;
            let when = a.decided_at.unwrap_or(item.created);
            if from.is_some_and(|from| when < from) {
                return;
            }
            match a.state {
                WorkItemState::Pending => summary.pending += 1,
                WorkItemState::Approved => summary.approved += 1,
                WorkItemState::Rejected => summary.rejected += 1,
                _ => {}
            }
        })?;
        Ok(summary)
    }
}
