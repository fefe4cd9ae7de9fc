//! The activation history: one record per activation, as the contract's
//! `JitActivationHistoryDocument` describes it.
//!
//! A record joins an [`Activation`] with the facts of its connection that the document shows
//! (identity, account, entitlement, source and their display names). The store writes it with
//! every event that names the activation, so it stays readable after the connection moves on to
//! a later activation or is removed; the names are those of the connection at the activation's
//! last event.
//!
//! Status vocabulary: the record keeps the workflow status ([`ActivationStatus`]); the document's
//! `status` is [`ActivationStatus::history_str`]. jitflow evaluates no frictions, so
//! `policyFrictionOutcome` is always null and `TIMED_OUT` never occurs.

use serde::{Deserialize, Serialize};

use crate::activation::{Activation, ActivationStatus};
use crate::connection::Connection;
use crate::filter::{FieldValue, Fields};
use crate::id::{AccountId, EntitlementId, IdentityId, SourceId};
use crate::time::Timestamp;

/// One activation history record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationRecord {
    /// The activation, as it stands after its last event (its id is the record's `id`, its
    /// connection the record's `connectionId`, its `requested_by` the requester).
    pub activation: Activation,
    /// The identity eligible through the connection (`identityId`).
    pub identity: IdentityId,
    /// The identity's display name (`identityName`).
    pub identity_name: String,
    /// The account the entitlement was provisioned on (`accountId`).
    pub account: AccountId,
    /// The entitlement (`entitlementId`).
    pub entitlement: EntitlementId,
    /// The entitlement's display name (`entitlementName`).
    pub entitlement_name: String,
    /// The source (`sourceId`).
    pub source: SourceId,
    /// The source's display name (`sourceDisplayName`).
    pub source_name: String,
}

impl ActivationRecord {
    /// The record of `activation` run on `connection` (the connection's facts at that moment).
    pub fn new(activation: &Activation, connection: &Connection) -> ActivationRecord {
        let s = &connection.spec;
        ActivationRecord {
            activation: activation.clone(),
            identity: s.identity.clone(),
            identity_name: s.identity_name.clone(),
            account: s.account.clone(),
            entitlement: s.entitlement.clone(),
            entitlement_name: s.entitlement_name.clone(),
            source: s.source.clone(),
            source_name: s.source_name.clone(),
        }
    }

    /// The workflow status.
    pub fn status(&self) -> ActivationStatus {
        self.activation.status
    }

    /// `activationInitiated`: when the activation was requested.
    pub fn activation_initiated(&self) -> Timestamp {
        self.activation.requested_at
    }

    /// `provisionStart`: when validation passed and provisioning began.
    pub fn provision_start(&self) -> Option<Timestamp> {
        self.activation.validated_at
    }

    /// `provisionCompleted`: when the grant succeeded.
    pub fn provision_completed(&self) -> Option<Timestamp> {
        self.activation.provisioned_at
    }

    /// `deprovisionStart`: when removal began.
    pub fn deprovision_start(&self) -> Option<Timestamp> {
        self.activation.deprovision_started_at
    }

    /// `deprovisionComplete`: when the workflow ended after a removal (an activation that ends
    /// without one, such as a refused validation or a change to standing access, has none).
    pub fn deprovision_complete(&self) -> Option<Timestamp> {
        self.activation
            .deprovision_started_at
            .and(self.activation.ended_at)
    }

    /// `error`: the last error, once the workflow ended `ERROR` or was refused (`CANCELLED`).
    pub fn error(&self) -> Option<&str> {
        match self.activation.status {
            ActivationStatus::Error | ActivationStatus::Invalid => {
                self.activation.last_error.as_deref()
            }
            _ => None,
        }
    }
}

impl Fields for ActivationRecord {
    /// The fields of [`crate::filter::ACTIVATION_HISTORY_FIELDS`] and
    /// [`crate::filter::ACTIVATION_HISTORY_SORTERS`], named as in the document.
    fn field(&self, name: &str) -> FieldValue<'_> {
        match name {
            "id" => FieldValue::Uuid(self.activation.id.as_u128()),
            "identityId" => FieldValue::Text(self.identity.as_str()),
            "entitlementId" => FieldValue::Text(self.entitlement.as_str()),
            "sourceId" => FieldValue::Text(self.source.as_str()),
            "connectionId" => FieldValue::Uuid(self.activation.connection.as_u128()),
            "status" => FieldValue::Text(self.activation.status.history_str()),
            "activationInitiated" => FieldValue::Timestamp(self.activation_initiated()),
            "provisionCompleted" => self
                .provision_completed()
                .map_or(FieldValue::Null, FieldValue::Timestamp),
            _ => FieldValue::Null,
        }
    }
}
