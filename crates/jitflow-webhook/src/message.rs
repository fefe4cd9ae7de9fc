//! The one JSON schema every notice is sent in ([`Message`]), its `type` names, and the human
//! sentence each carries.
//!
//! The schema is stable: every field is always present (`null` or `[]` when it does not apply),
//! fields are only ever added, and `schemaVersion` changes if a field's meaning ever does.

use jitflow::hooks::{Notification, RequestNotification};
use jitflow_core::connection::ConnectionSpec;
use jitflow_core::id::IdentityId;
use jitflow_core::lifecycle::Notice;
use jitflow_core::request;
use jitflow_core::time::Timestamp;
use serde::{Deserialize, Serialize};

/// The version of the schema this crate sends (`schemaVersion`).
pub const SCHEMA_VERSION: u32 = 1;

/// The longest `message` sentence kept when a body is cut to its minimal form.
const MINIMAL_SENTENCE: usize = 512;

/// One notice, as POSTed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Message {
    /// `<prefix>_<sequence>`: unique per notice of one engine and the same on every redelivery
    /// (also sent as `webhook-id`), so receivers de-duplicate by it.
    pub id: String,
    /// What happened: one of [`ACTIVATION_TYPES`] or [`REQUEST_TYPES`].
    #[serde(rename = "type")]
    pub kind: String,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The tenant.
    pub tenant: String,
    /// When it happened (the committed event's time), RFC 3339 UTC.
    pub time: String,
    /// The committed event's global log sequence: notices of one engine arrive in increasing
    /// sequence.
    pub sequence: u64,
    /// The connection, for activation notices; `null` for access request notices.
    pub connection: Option<ConnectionRef>,
    /// The activation, where the notice is about one; else `null`.
    pub activation: Option<ActivationRef>,
    /// The access request item, for access request notices; else `null`.
    pub request_item: Option<RequestItemRef>,
    /// Who the tenant's policy says to tell (`notificationRecipients`), for activation notices;
    /// `[]` for access request notices (their people are in `requestItem`).
    pub recipients: Vec<String>,
    /// What went wrong, for the notices that report a failure (the validator's reason, the
    /// target's last error); else `null`.
    pub detail: Option<String>,
    /// One sentence for people.
    pub message: String,
    /// Whether lists and texts were left out to keep the body within the receiver's bound.
    pub truncated: bool,
}

/// The connection a notice is about. Its facts are `null` if it was removed before delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionRef {
    /// The connection id.
    pub id: String,
    /// The identity holding the access.
    pub identity_id: Option<String>,
    /// Its display name.
    pub identity_name: Option<String>,
    /// The account on the source.
    pub account_id: Option<String>,
    /// Its display name.
    pub account_name: Option<String>,
    /// The entitlement.
    pub entitlement_id: Option<String>,
    /// Its display name.
    pub entitlement_name: Option<String>,
    /// The source (target system).
    pub source_id: Option<String>,
    /// Its display name.
    pub source_name: Option<String>,
}

/// The activation a notice is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActivationRef {
    /// The activation id.
    pub id: String,
    /// When its access expires (or expired), RFC 3339; `null` before it was granted.
    pub expires_at: Option<String>,
}

/// The access request item a notice is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestItemRef {
    /// The item id.
    pub id: String,
    /// The access request it belongs to.
    pub request_id: String,
    /// `GRANT_ACCESS` or `REVOKE_ACCESS`.
    pub request_type: String,
    /// The identity the access is for.
    pub requested_for: String,
    /// Who submitted the request.
    pub requester: String,
    /// `ROLE`, `ACCESS_PROFILE` or `ENTITLEMENT`.
    pub object_type: String,
    /// The requested object's id.
    pub object_id: String,
    /// The sunrise, RFC 3339; `null` without one.
    pub start_date: Option<String>,
    /// The sunset, RFC 3339; `null` without one.
    pub remove_date: Option<String>,
    /// Who may decide the approval, as it stands at delivery; `[]` for an automatic approval.
    pub approvers: Vec<String>,
}

/// Every activation `type`, in the order of [`jitflow_core::lifecycle::Notice`]'s variants.
pub const ACTIVATION_TYPES: [&str; 11] = [
    "activation.requested",
    "activation.granted",
    "activation.expiring",
    "activation.extended",
    "activation.revoked",
    "activation.expired",
    "activation.refused",
    "activation.grant_failed",
    "revoke.stuck",
    "revoke.recovered",
    "drift.found",
];

/// Every access request `type`, in the order of [`jitflow_core::request::Notice`]'s variants.
pub const REQUEST_TYPES: [&str; 13] = [
    "access_request.approval_waiting",
    "access_request.forwarded",
    "access_request.approved",
    "access_request.rejected",
    "access_request.cancelled",
    "access_request.approval_expired",
    "access_request.granted",
    "access_request.grant_failed",
    "access_request.revoked",
    "access_request.closed",
    "access_request.sunset_done",
    "access_request.removal_stuck",
    "access_request.removal_recovered",
];

/// The `type` of an activation notice.
pub const fn activation_type(notice: Notice) -> &'static str {
    // An exhaustive match, so a new notice cannot compile without a type name.
    let i = match notice {
        Notice::Started => 0,
        Notice::Provisioned => 1,
        Notice::ExpiringSoon => 2,
        Notice::Extended => 3,
        Notice::Deactivated => 4,
        Notice::Expired => 5,
        Notice::Refused => 6,
        Notice::GrantFailed => 7,
        Notice::Stuck => 8,
        Notice::Recovered => 9,
        Notice::DriftFound => 10,
    };
    ACTIVATION_TYPES[i]
}

/// The `type` of an access request notice.
pub const fn request_type(notice: request::Notice) -> &'static str {
    use request::Notice as N;
    let i = match notice {
        N::ApprovalRequested => 0,
        N::Forwarded => 1,
        N::Approved => 2,
        N::Rejected => 3,
        N::Cancelled => 4,
        N::ApprovalExpired => 5,
        N::Granted => 6,
        N::GrantFailed => 7,
        N::Revoked => 8,
        N::Closed => 9,
        N::SunsetRemoved => 10,
        N::Stuck => 11,
        N::Recovered => 12,
    };
    REQUEST_TYPES[i]
}

/// The id of the notice of log sequence `sequence`.
pub fn message_id(prefix: &str, sequence: u64) -> String {
    format!("{prefix}_{sequence}")
}

fn time(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// `: detail.` or `.`: a sentence's end.
fn end(detail: Option<&str>) -> String {
    match detail {
        Some(d) => format!(": {}.", d.trim_end_matches('.')),
        None => ".".to_owned(),
    }
}

/// The access a connection gives, for a sentence.
fn access(spec: Option<&ConnectionSpec>, id: &str) -> String {
    match spec {
        Some(s) => format!(
            "{} on {} for {} (account {})",
            s.entitlement_name, s.source_name, s.identity_name, s.account_name
        ),
        None => format!("connection {id} (since removed)"),
    }
}

/// The sentence of an activation notice.
fn activation_sentence(n: &Notification) -> String {
    let what = access(n.spec.as_ref(), &n.connection.to_string());
    let until = n
        .expires_at
        .map_or_else(|| "an unknown time".to_owned(), time);
    let detail = n.detail.as_deref();
    match n.notice {
        Notice::Started => format!("Activation of {what} was requested."),
        Notice::Provisioned => format!("Access to {what} was granted until {until}."),
        Notice::ExpiringSoon => format!("Access to {what} expires at {until}."),
        Notice::Extended => format!("Access to {what} was extended until {until}."),
        Notice::Deactivated => format!("Access to {what} was revoked after deactivation."),
        Notice::Expired => format!("Access to {what} expired and was revoked."),
        Notice::Refused => format!(
            "Activation of {what} was refused by validation{}",
            end(detail)
        ),
        Notice::GrantFailed => format!(
            "Granting access to {what} failed and was given up; anything granted is being revoked{}",
            end(detail)
        ),
        Notice::Stuck => format!(
            "Revoking access to {what} keeps failing and is still retried; someone must look{}",
            end(detail)
        ),
        Notice::Recovered => {
            format!("The stuck revoke of access to {what} succeeded; the access is gone.")
        }
        Notice::DriftFound => format!(
            "The target disagrees with jitflow about access to {what}{}",
            end(detail)
        ),
    }
}

fn names(ids: &[IdentityId]) -> String {
    if ids.is_empty() {
        "nobody (automatic approval)".to_owned()
    } else {
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The sentence of an access request notice.
fn request_sentence(n: &RequestNotification) -> String {
    use request::Notice as N;
    let s = &n.spec;
    let object = match s.object.kind {
        request::ObjectKind::Role => "role",
        request::ObjectKind::AccessProfile => "access profile",
        request::ObjectKind::Entitlement => "entitlement",
    };
    let what = format!(
        "{object} {} for {} (request {})",
        s.object.id, s.requested_for, s.request
    );
    let detail = n.detail.as_deref();
    match n.notice {
        N::ApprovalRequested => format!(
            "The access request of {} for {what} waits for approval by {}.",
            s.requester,
            names(&n.approvers)
        ),
        N::Forwarded => format!(
            "The approval of {what} was forwarded; it now waits for {}.",
            names(&n.approvers)
        ),
        N::Approved => format!("The access request for {what} was approved."),
        N::Rejected => format!("The access request for {what} was rejected."),
        N::Cancelled => format!("The access request for {what} was cancelled."),
        N::ApprovalExpired => {
            format!("The approval of {what} expired unanswered; the request was cancelled.")
        }
        N::Granted => match s.start_date {
            Some(start) => format!(
                "Access to {what} was granted at its start date ({}).",
                time(start)
            ),
            None => format!("Access to {what} was granted."),
        },
        N::GrantFailed => format!(
            "Granting access to {what} failed and was given up; anything granted is being removed{}",
            end(detail)
        ),
        N::Revoked => format!("Access to {what} was revoked as requested."),
        N::Closed => format!("The access request for {what} was closed by an administrator."),
        N::SunsetRemoved => match s.remove_date {
            Some(sunset) => format!(
                "Access to {what} was removed at its end date ({}).",
                time(sunset)
            ),
            None => format!("Access to {what} was removed at its end date."),
        },
        N::Stuck => format!(
            "Removing access to {what} keeps failing and is still retried; someone must look{}",
            end(detail)
        ),
        N::Recovered => format!("The stuck removal of access to {what} succeeded."),
    }
}

impl Message {
    /// The message of an activation notice.
    pub fn activation(n: &Notification, id_prefix: &str) -> Message {
        let connection = n.connection.to_string();
        let spec = n.spec.as_ref();
        Message {
            id: message_id(id_prefix, n.sequence),
            kind: activation_type(n.notice).to_owned(),
            schema_version: SCHEMA_VERSION,
            tenant: n.tenant.to_string(),
            time: time(n.at),
            sequence: n.sequence,
            connection: Some(ConnectionRef {
                id: connection,
                identity_id: spec.map(|s| s.identity.to_string()),
                identity_name: spec.map(|s| s.identity_name.clone()),
                account_id: spec.map(|s| s.account.to_string()),
                account_name: spec.map(|s| s.account_name.clone()),
                entitlement_id: spec.map(|s| s.entitlement.to_string()),
                entitlement_name: spec.map(|s| s.entitlement_name.clone()),
                source_id: spec.map(|s| s.source.to_string()),
                source_name: spec.map(|s| s.source_name.clone()),
            }),
            activation: n.activation.map(|a| ActivationRef {
                id: a.to_string(),
                expires_at: n.expires_at.map(time),
            }),
            request_item: None,
            recipients: n.recipients.clone(),
            detail: n.detail.clone(),
            message: activation_sentence(n),
            truncated: false,
        }
    }

    /// The message of an access request notice.
    pub fn request(n: &RequestNotification, id_prefix: &str) -> Message {
        let s = &n.spec;
        Message {
            id: message_id(id_prefix, n.sequence),
            kind: request_type(n.notice).to_owned(),
            schema_version: SCHEMA_VERSION,
            tenant: n.tenant.to_string(),
            time: time(n.at),
            sequence: n.sequence,
            connection: None,
            activation: None,
            request_item: Some(RequestItemRef {
                id: n.item.to_string(),
                request_id: s.request.to_string(),
                request_type: s.request_type.as_str().to_owned(),
                requested_for: s.requested_for.to_string(),
                requester: s.requester.to_string(),
                object_type: s.object.kind.as_str().to_owned(),
                object_id: s.object.id.to_string(),
                start_date: s.start_date.map(time),
                remove_date: s.remove_date.map(time),
                approvers: n.approvers.iter().map(ToString::to_string).collect(),
            }),
            recipients: Vec::new(),
            detail: n.detail.clone(),
            message: request_sentence(n),
            truncated: false,
        }
    }

    /// The JSON body, at most `max_bytes` long: past it, the lists and the failure detail are
    /// left out, and past that the connection, activation and item too and the sentence is cut
    /// (`truncated: true` either way), so every notice can be delivered whatever its size.
    /// `None` only if even the minimal form does not fit (a bound below what
    /// [`crate::MIN_BODY_BYTES`] allows).
    pub fn body(&self, max_bytes: usize) -> Option<Vec<u8>> {
        let encode = |m: &Message| serde_json::to_vec(m).ok().filter(|b| b.len() <= max_bytes);
        if let Some(body) = encode(self) {
            return Some(body);
        }
        let mut lean = self.clone();
        lean.truncated = true;
        lean.recipients.clear();
        lean.detail = None;
        if let Some(item) = lean.request_item.as_mut() {
            item.approvers.clear();
        }
        if let Some(body) = encode(&lean) {
            return Some(body);
        }
        lean.connection = None;
        lean.activation = None;
        lean.request_item = None;
        lean.message = lean.message.chars().take(MINIMAL_SENTENCE).collect();
        encode(&lean)
    }
}

/// One message of every type ([`ACTIVATION_TYPES`], then [`REQUEST_TYPES`]), with fixed
/// example values: for receivers' tests, documentation, and the schema checks.
pub fn samples() -> Vec<Message> {
    use jitflow_core::id::{
        AccessRequestId, ActivationId, ConnectionId, ObjectId, RequestItemId, TenantId,
    };
    use jitflow_core::request::{ItemSpec, ObjectKind, ObjectRef, RequestType};
    // Constants that parse: a failure is a bug in this function, not bad input.
    const VALID: &str = "a valid constant";
    let at = Timestamp::from_millis(1_800_000_000_000).expect(VALID);
    let tenant = TenantId::parse("acme").expect(VALID);
    let who = |s: &str| IdentityId::parse(s).expect(VALID);
    let activation = |notice: Notice| {
        Notification {
        tenant: tenant.clone(),
        notice,
        connection: ConnectionId::parse("757fb803-9024-5861-e510-83a56e4c5bd3").expect(VALID),
        spec: Some(ConnectionSpec {
            id: ConnectionId::parse("757fb803-9024-5861-e510-83a56e4c5bd3").expect(VALID),
            identity: who("alice"),
            identity_name: "Alice".into(),
            account: jitflow_core::id::AccountId::parse("alice-adm").expect(VALID),
            account_name: "alice.adm".into(),
            entitlement: jitflow_core::id::EntitlementId::parse("domain-admins").expect(VALID),
            entitlement_name: "Domain Admins".into(),
            attribute_name: "memberOf".into(),
            attribute_value: "CN=Domain Admins,DC=example,DC=com".into(),
            privilege_level: None,
            source: jitflow_core::id::SourceId::parse("ad").expect(VALID),
            source_name: "Active Directory".into(),
            kind: jitflow_core::connection::ConnectionType::Jit,
            standalone: false,
        }),
        activation: Some(ActivationId::parse("0b1c5a3e-1111-4222-8333-944455556666").expect(VALID)),
        expires_at: Some(at),
        detail: match notice {
            Notice::Refused | Notice::GrantFailed | Notice::Stuck => {
                Some("target answered 503".to_owned())
            }
            Notice::DriftFound => Some(
                "unexpected access: the target holds it with no activation running; it is being revoked"
                    .to_owned(),
            ),
            _ => None,
        },
        recipients: vec!["owners@example.com".into()],
        at,
        sequence: 42,
    }
    };
    let item = |notice: request::Notice| RequestNotification {
        tenant: tenant.clone(),
        notice,
        item: RequestItemId::parse("2b1c5a3e-1111-4222-8333-944455556666").expect(VALID),
        spec: ItemSpec {
            id: RequestItemId::parse("2b1c5a3e-1111-4222-8333-944455556666").expect(VALID),
            request: AccessRequestId::parse("3b1c5a3e-1111-4222-8333-944455556666").expect(VALID),
            request_type: RequestType::Grant,
            requested_for: who("alice"),
            requester: who("alice"),
            object: ObjectRef {
                kind: ObjectKind::Role,
                id: ObjectId::parse("auditors").expect(VALID),
            },
            comment: None,
            client_metadata: Default::default(),
            request_metadata: Default::default(),
            start_date: Some(at),
            remove_date: None,
            accounts: Vec::new(),
            native_identity: None,
            form_instance_id: None,
        },
        approvers: vec![who("bob"), who("carol")],
        detail: matches!(
            notice,
            request::Notice::GrantFailed | request::Notice::Stuck
        )
        .then(|| "target answered 503".to_owned()),
        at,
        sequence: 43,
    };
    use request::Notice as N;
    let activations = [
        Notice::Started,
        Notice::Provisioned,
        Notice::ExpiringSoon,
        Notice::Extended,
        Notice::Deactivated,
        Notice::Expired,
        Notice::Refused,
        Notice::GrantFailed,
        Notice::Stuck,
        Notice::Recovered,
        Notice::DriftFound,
    ];
    let requests = [
        N::ApprovalRequested,
        N::Forwarded,
        N::Approved,
        N::Rejected,
        N::Cancelled,
        N::ApprovalExpired,
        N::Granted,
        N::GrantFailed,
        N::Revoked,
        N::Closed,
        N::SunsetRemoved,
        N::Stuck,
        N::Recovered,
    ];
    activations
        .into_iter()
        .map(|n| Message::activation(&activation(n), "jitflow"))
        .chain(
            requests
                .into_iter()
                .map(|n| Message::request(&item(n), "jitflow")),
        )
        .collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    fn keys(value: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn every_type_has_one_schema_with_every_field_present() {
        let messages = samples();
        let values: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| serde_json::to_value(m).unwrap())
            .collect();
        let first = keys(&values[0]);
        assert_eq!(
            first,
            [
                "activation",
                "connection",
                "detail",
                "id",
                "message",
                "recipients",
                "requestItem",
                "schemaVersion",
                "sequence",
                "tenant",
                "time",
                "truncated",
                "type"
            ]
        );
        for (m, v) in messages.iter().zip(&values) {
            assert_eq!(keys(v), first, "{}", m.kind);
            assert!(
                m.message.ends_with('.') || m.message.ends_with("said no"),
                "{}",
                m.message
            );
            // The body a receiver gets reads back as the same message.
            let body = m.body(64 * 1024).unwrap();
            assert_eq!(&serde_json::from_slice::<Message>(&body).unwrap(), m);
        }
        let kinds: std::collections::HashSet<&str> =
            messages.iter().map(|m| m.kind.as_str()).collect();
        assert_eq!(kinds.len(), ACTIVATION_TYPES.len() + REQUEST_TYPES.len());
        assert_eq!(messages[0].id, "jitflow_42");
        assert_eq!(messages[0].time, "2027-01-15T08:00:00.000Z");
        let forwarded = messages
            .iter()
            .find(|m| m.kind == "access_request.forwarded")
            .unwrap();
        assert_eq!(
            forwarded.message,
            "The approval of role auditors for alice (request 3b1c5a3e-1111-4222-8333-944455556666) \
             was forwarded; it now waits for bob, carol."
        );
    }

    #[test]
    fn a_body_over_the_bound_drops_lists_then_facts_and_says_so() {
        let mut m = samples()
            .into_iter()
            .find(|m| m.kind == "revoke.stuck")
            .unwrap();
        m.recipients = vec!["owners@example.com".into(); 100];
        let full = m.body(1 << 20).unwrap();
        assert!(full.len() > 2000, "a hundred recipients");
        let lean: Message = serde_json::from_slice(&m.body(2000).unwrap()).unwrap();
        assert!(lean.truncated && lean.recipients.is_empty() && lean.detail.is_none());
        assert_eq!(
            lean.connection, m.connection,
            "the facts fit without the lists"
        );
        let minimal: Message = serde_json::from_slice(&m.body(600).unwrap()).unwrap();
        assert!(minimal.truncated && minimal.connection.is_none());
        assert_eq!((minimal.id, minimal.kind), (m.id.clone(), m.kind.clone()));
        assert_eq!(m.body(10), None);
    }

    #[test]
    fn type_names_are_unique_and_dotted() {
        let all: Vec<&str> = ACTIVATION_TYPES
            .iter()
            .chain(&REQUEST_TYPES)
            .copied()
            .collect();
        let unique: std::collections::HashSet<&str> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len());
        assert!(all.iter().all(|t| t.contains('.') && t.is_ascii()));
    }
}
