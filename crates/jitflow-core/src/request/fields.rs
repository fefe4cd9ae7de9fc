//! The filterable and sortable fields of request items, for the contract's request status
//! lists ([`crate::filter::ACCESS_REQUEST_STATUS_FIELDS`],
//! [`crate::filter::ACCESS_REQUEST_ADMIN_FIELDS`]) and approval lists
//! ([`crate::filter::PENDING_APPROVAL_FIELDS`], [`crate::filter::COMPLETED_APPROVAL_FIELDS`]).
//!
//! An item is both a request status row and an approval row. The two differ only in what `id`
//! names: the item (`accountActivityItemId`) in a status list, the approval (`approvalId`) in an
//! approval list, so [`ApprovalRow`] wraps an item for the second.

use super::flow::approval_id;
use super::item::Item;
use crate::filter::{FieldValue, Fields};

impl Fields for Item {
    /// `id` and `accountActivityItemId` (the item), `accessRequestId`, `created`, `modified`,
    /// `name` (the requested object's id), `status` (the contract's request state),
    /// `requestedFor.id` and `requestedBy.id`.
    fn field(&self, name: &str) -> FieldValue<'_> {
        match name {
            "id" | "accountActivityItemId" => FieldValue::Uuid(self.id().as_u128()),
            "accessRequestId" => FieldValue::Uuid(self.spec.request.as_u128()),
            "created" => FieldValue::Timestamp(self.created),
            "modified" => FieldValue::Timestamp(self.modified),
            "name" => FieldValue::Text(self.spec.object.id.as_str()),
            "status" => FieldValue::Text(self.request_state().as_str()),
            "requestedFor.id" => FieldValue::Text(self.spec.requested_for.as_str()),
            "requestedBy.id" => FieldValue::Text(self.spec.requester.as_str()),
            _ => FieldValue::Null,
        }
    }
}

/// An item seen as its approval: `id` is the approval id; every other field is the item's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow(pub Item);

impl Fields for ApprovalRow {
    /// As [`Item`]'s fields, but `id` names the approval.
    fn field(&self, name: &str) -> FieldValue<'_> {
        match name {
            "id" => FieldValue::Uuid(approval_id(self.0.id()).as_u128()),
            other => self.0.field(other),
        }
    }
}
