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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{ConnectionSpec, ConnectionState, ConnectionType, JitTimes};
    use crate::filter::{
        ACTIVATION_HISTORY_FIELDS, ACTIVATION_HISTORY_SORTERS, ENTITLEMENT_CONNECTION_FIELDS,
        ENTITLEMENT_CONNECTION_SORTERS, parse_filter,
    };
    use crate::id::{ActivationId, ConnectionId};
    use crate::lifecycle::Actor;
    use crate::time::Minutes;

    fn t(minutes: u32) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000)
            .unwrap()
            .plus_minutes(Minutes(minutes))
    }

    fn connection() -> Connection {
        let activation = Activation {
            id: ActivationId::from_u128(7),
            connection: ConnectionId::from_u128(9),
            period: Minutes(30),
            requested_by: Actor::System,
            status: ActivationStatus::Error,
            requested_at: t(1),
            validated_at: Some(t(2)),
            provisioned_at: None,
            deprovision_started_at: Some(t(4)),
            ended_at: Some(t(5)),
            expires_at: None,
            warn_at: None,
            extended_by: Minutes(0),
            extensions: 0,
            attempt: 1,
            retry_at: None,
            cancel_requested: false,
            end_reason: None,
            last_error: Some("boom".into()),
            stuck: false,
        };
        Connection {
            spec: ConnectionSpec {
                id: ConnectionId::from_u128(9),
                identity: IdentityId::parse("id-1").unwrap(),
                identity_name: "Identity name".into(),
                account: AccountId::parse("acct-1").unwrap(),
                account_name: "Account name".into(),
                entitlement: EntitlementId::parse("ent-1").unwrap(),
                entitlement_name: "Entitlement name".into(),
                attribute_name: "attr".into(),
                attribute_value: "value".into(),
                privilege_level: Some("HIGH".into()),
                source: SourceId::parse("src-1").unwrap(),
                source_name: "Source name".into(),
                kind: ConnectionType::Jit,
                standalone: true,
            },
            state: ConnectionState::Available,
            jit: JitTimes {
                activation: Some(t(1)),
                provision: Some(t(2)),
                deactivation: Some(t(3)),
                deprovision: Some(t(4)),
                expiration: None,
            },
            created: t(0),
            modified: t(5),
            state_changed: t(5),
            state_changed_by: Actor::System,
            activation: Some(activation),
            standing_revoke: None,
            version: 3,
        }
    }

    /// Each field name reads the value it names; every listed field and sorter is known.
    #[test]
    fn fields_read_what_they_name() {
        let c = connection();
        let text = |v: &'static str| FieldValue::Text(v);
        let cases = [
            ("id", FieldValue::Uuid(9)),
            ("identity.id", text("id-1")),
            ("identity.name", text("Identity name")),
            ("source.id", text("src-1")),
            ("source.name", text("Source name")),
            ("account.id", text("acct-1")),
            ("account.name", text("Account name")),
            ("entitlement.id", text("ent-1")),
            ("entitlement.displayName", text("Entitlement name")),
            ("entitlement.attribute", text("attr")),
            ("entitlement.value", text("value")),
            ("entitlement.privilegeLevel.effective", text("HIGH")),
            ("type", text("JIT")),
            ("state.value", text("AVAILABLE")),
            ("standalone", FieldValue::Bool(true)),
            ("jit.activation", FieldValue::Timestamp(t(1))),
            ("jit.provision", FieldValue::Timestamp(t(2))),
            ("jit.deactivation", FieldValue::Timestamp(t(3))),
            ("jit.deprovision", FieldValue::Timestamp(t(4))),
            ("jit.expiration", FieldValue::Null),
            ("colour", FieldValue::Null),
        ];
        for (name, value) in cases {
            assert_eq!(c.field(name), value, "{name}");
        }
        for spec in ENTITLEMENT_CONNECTION_FIELDS {
            assert!(cases.iter().any(|(n, _)| *n == spec.name), "{}", spec.name);
        }
        for name in ENTITLEMENT_CONNECTION_SORTERS {
            assert!(cases.iter().any(|(n, _)| n == name), "{name}");
        }
        let mut empty = c.clone();
        empty.spec.privilege_level = Some(String::new());
        assert_eq!(
            empty.field("entitlement.privilegeLevel.effective"),
            FieldValue::Null
        );

        let r = ActivationRecord::new(c.activation.as_ref().unwrap(), &c);
        let cases = [
            ("id", FieldValue::Uuid(7)),
            ("identityId", text("id-1")),
            ("entitlementId", text("ent-1")),
            ("sourceId", text("src-1")),
            ("connectionId", FieldValue::Uuid(9)),
            ("status", text("ERROR")),
            ("activationInitiated", FieldValue::Timestamp(t(1))),
            ("provisionCompleted", FieldValue::Null),
            ("policyFrictionOutcome", FieldValue::Null),
        ];
        for (name, value) in cases {
            assert_eq!(r.field(name), value, "{name}");
        }
        for spec in ACTIVATION_HISTORY_FIELDS {
            assert!(cases.iter().any(|(n, _)| *n == spec.name), "{}", spec.name);
        }
        for name in ACTIVATION_HISTORY_SORTERS {
            assert!(cases.iter().any(|(n, _)| n == name), "{name}");
        }
        assert_eq!(
            (
                r.provision_start(),
                r.deprovision_start(),
                r.deprovision_complete()
            ),
            (Some(t(2)), Some(t(4)), Some(t(5)))
        );
        assert_eq!(r.error(), Some("boom"));
        // A UUID field matches a text literal with or without hyphens.
        for literal in [
            "00000000-0000-0000-0000-000000000009",
            "00000000000000000000000000000009",
        ] {
            let f = parse_filter(
                &format!("connectionId eq \"{literal}\""),
                ACTIVATION_HISTORY_FIELDS,
            )
            .unwrap();
            assert!(f.matches(&r), "{literal}");
        }
        let f = parse_filter("connectionId eq \"9\"", ACTIVATION_HISTORY_FIELDS).unwrap();
        assert!(!f.matches(&r));
    }
}
