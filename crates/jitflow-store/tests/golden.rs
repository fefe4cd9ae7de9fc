//! Golden fixtures: the stored bytes of every core `Change` variant (in an event envelope), of
//! the signals' events with a client section (`event_client_*`, format version 6), of a
//! policy event, of an access request config event, and of each projection record (the activation history record included),
//! committed under `tests/golden/`.
//!
//! Each fixture is decoded and compared with the value built here, and the value is encoded and
//! compared with the bytes: any change to the format (a reordered field or variant in the core, a
//! bincode upgrade, a codec change) fails this test. To accept an intended change, bump the
//! record format version (with an upgrade from the old one), then regenerate:
//!
//! ```text
//! JITFLOW_BLESS=1 cargo test -p jitflow-store --test golden
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;

use jitflow_core::activation::{Activation, ActivationStatus, EndReason};
use jitflow_core::client::ClientInfo;
use jitflow_core::connection::{
    Connection, ConnectionSpec, ConnectionState, ConnectionType, ConnectionUpdate, JitTimes,
    StandingRevoke,
};
use jitflow_core::history::ActivationRecord;
use jitflow_core::id::{
    AccessRequestId, AccountId, ActivationId, ConnectionId, EntitlementId, IdentityId, ObjectId,
    SourceId, TenantId,
};
use jitflow_core::lifecycle::{Actor, Change, Drift, Effect, Event, PolicyEvent, Timer, TimerKind};
use jitflow_core::policy::{MissingAccessAction, Policy};
use jitflow_core::request;
use jitflow_core::request::submit::{AccountRef, ObjectKind, ObjectRef, SourceSelection};
use jitflow_core::time::{Minutes, Timestamp};
use jitflow_store::codec::{self, Envelope, Payload};
use jitflow_store::idempotency::Idempotency;

const CONN: ConnectionId = ConnectionId::from_u128(0x757f_b803_9024_5861_e510_83a5_6e4c_5bd3);
const ACT: ActivationId = ActivationId::from_u128(0x2c91_8086_7e20_630b_017e_20be_7c22_2492);

/// The number of `Change` variants. `Change::name` matches without a wildcard arm, so a new
/// variant names itself there, and [`every_change_variant_has_a_fixture`] then asks for its
/// fixture.
const CHANGE_VARIANTS: usize = 24;

/// The number of access request `request::Change` variants (as [`CHANGE_VARIANTS`]).
const REQUEST_CHANGE_VARIANTS: usize = 21;
/// The sequence of the `event_request_config` fixture (it was blessed with this one).
const REQUEST_CONFIG_SEQUENCE: u64 = 44;
/// The `Change` variants blessed in the first batch of fixtures (see `fixtures`).
const FIRST_BATCH: usize = 22;
/// The sequence of the first `Change` fixture blessed after the first batch.
const LATER_CHANGES_SEQUENCE: u64 = 100;
/// The sequence of the `event_policy_extensions` fixture (it was blessed with this one).
const POLICY_EXTENSIONS_SEQUENCE: u64 = 120;
/// The sequence of the first event fixture with a client section (format version 7).
const CLIENT_SEQUENCE: u64 = 200;

/// The client sections of the three signal fixtures: both fields (with metadata of every JSON
/// kind), metadata alone, the origin alone.
fn clients() -> [ClientInfo; 3] {
    let meta = |value: serde_json::Value| match value {
        serde_json::Value::Object(map) => Some(map),
        _ => unreachable!("an object"),
    };
    [
        ClientInfo::new(
            Some("sailpoint-sdk-go/1.4 (portal)".into()),
            // Keys in order, so the text is the same whether or not serde_json keeps the
            // order of insertion (its `preserve_order` feature).
            meta(serde_json::json!({
                "attempt": 2,
                "note": null,
                "ratio": 0.5,
                "requester": {"id": "2c918086", "site": "Zürich"},
                "tags": ["prod", "db"],
                "ticket": "CHG-4711",
                "urgent": true,
            })),
        ),
        ClientInfo::new(
            None,
            meta(serde_json::json!({"reason": "maintenance window"})),
        ),
        ClientInfo::new(Some("cli".into()), None),
    ]
    .map(|c| c.unwrap().expect("something said"))
}

const REQUEST: AccessRequestId =
    AccessRequestId::from_u128(0x1f2e_3d4c_5b6a_4978_8695_a4b3_c2d1_e0f0);

fn t(minutes: u64) -> Timestamp {
    Timestamp::from_millis(1_767_225_600_000 + minutes * 60_000).unwrap()
}

fn alice() -> Actor {
    Actor::Identity(IdentityId::parse("alice").unwrap())
}

fn timer(kind: TimerKind, minutes: u64) -> Timer {
    Timer {
        due: t(minutes),
        kind,
    }
}

fn spec() -> ConnectionSpec {
    ConnectionSpec {
        id: CONN,
        identity: IdentityId::parse("2c9180867e20630b017e20be7c222492").unwrap(),
        identity_name: "Alice Example".into(),
        account: AccountId::parse("acct-1").unwrap(),
        account_name: "alice.admin".into(),
        entitlement: EntitlementId::parse("ent-admins").unwrap(),
        entitlement_name: "Domain Admins".into(),
        attribute_name: "memberOf".into(),
        attribute_value: "CN=Domain Admins,OU=Groups,DC=example,DC=com".into(),
        privilege_level: Some("HIGH".into()),
        source: SourceId::parse("ad-prod").unwrap(),
        source_name: "Active Directory".into(),
        kind: ConnectionType::Jit,
        standalone: false,
    }
}

fn policy(version: u64) -> Policy {
    let mut p = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
    p.entitlement_ids = vec![EntitlementId::parse("ent-admins").unwrap()];
    p.max_activation_period = Some(Minutes(240));
    p.max_extension = Some(Minutes(120));
    p.default_activation_period = Some(Minutes(60));
    p.default_extension = Some(Minutes(15));
    p.notification_recipients = vec!["secops@example.com".into()];
    p.notification_template = Some("jit-default".into());
    p.apply_to_future_assignments = true;
    p.version = version;
    p
}

/// [`policy`] with both jitflow extensions set: a warning lead and a missing-access action.
fn policy_with_extensions(version: u64) -> Policy {
    let mut p = policy(version);
    p.expiry_warning = Some(Minutes(25));
    p.on_missing_access = MissingAccessAction::GrantAgain;
    p
}

/// The parts of one sample event: change, activation, actor, arm, cancel, effects.
type Sample = (
    Change,
    Option<ActivationId>,
    Actor,
    Vec<Timer>,
    Vec<Timer>,
    Vec<Effect>,
);

/// The event of connection `CONN` a sample makes, at minute `sequence`.
fn event_of(sample: Sample, sequence: u64, client: Option<ClientInfo>) -> Event {
    let (change, activation, actor, arm, cancel, effects) = sample;
    Event {
        connection: CONN,
        activation,
        at: t(sequence),
        actor,
        change,
        arm,
        cancel,
        effects,
        client,
    }
}

/// One event per `Change` variant, with arms, cancels and effects of every kind among them.
fn changes() -> Vec<Sample> {
    use TimerKind::*;
    let a = Some(ACT);
    let grant = |attempt| Effect::Grant {
        activation: ACT,
        attempt,
    };
    let revoke = |attempt| Effect::Revoke {
        activation: ACT,
        attempt,
    };
    vec![
        (
            Change::Registered(spec()),
            None,
            alice(),
            vec![],
            vec![],
            vec![],
        ),
        (
            Change::Updated(ConnectionUpdate {
                identity_name: Some("Alice B. Example".into()),
                privilege_level: Some(None),
                standalone: Some(true),
                ..ConnectionUpdate::default()
            }),
            None,
            alice(),
            vec![],
            vec![],
            vec![],
        ),
        (Change::Removed, None, alice(), vec![], vec![], vec![]),
        (
            Change::TypeChanged {
                from: ConnectionType::Standing,
                to: ConnectionType::Jit,
            },
            None,
            alice(),
            vec![],
            vec![],
            vec![Effect::RevokeStanding { attempt: 1 }],
        ),
        (
            Change::ActivationRequested {
                period: Minutes(60),
            },
            a,
            alice(),
            vec![],
            vec![],
            vec![Effect::Validate { activation: ACT }],
        ),
        (
            Change::ValidationPassed,
            a,
            Actor::System,
            vec![],
            vec![],
            vec![grant(1)],
        ),
        (
            Change::ValidationRefused {
                reason: "ticket INC-42 is closed".into(),
            },
            a,
            Actor::System,
            vec![],
            vec![],
            vec![],
        ),
        (
            Change::GrantFailed {
                attempt: 1,
                error: "connector timeout".into(),
                retry_at: t(1),
            },
            a,
            Actor::System,
            vec![timer(Retry, 1)],
            vec![],
            vec![],
        ),
        (
            Change::GrantAbandoned {
                attempt: 5,
                error: "access denied".into(),
            },
            a,
            Actor::System,
            vec![],
            vec![],
            vec![revoke(1)],
        ),
        (
            Change::GrantRetried { attempt: 2 },
            a,
            Actor::System,
            vec![],
            vec![timer(Retry, 1)],
            vec![grant(2)],
        ),
        (
            Change::Provisioned {
                attempt: 2,
                expires_at: t(62),
                warn_at: Some(t(52)),
            },
            a,
            Actor::System,
            vec![timer(Expiry, 62), timer(Warning, 52)],
            vec![],
            vec![],
        ),
        (
            Change::CancelledGrantSettled {
                attempt: 1,
                error: Some("connector timeout".into()),
            },
            a,
            Actor::System,
            vec![],
            vec![],
            vec![revoke(1)],
        ),
        (
            Change::Extended {
                by: Minutes(15),
                expires_at: t(77),
                warn_at: None,
            },
            a,
            alice(),
            vec![timer(Expiry, 77)],
            vec![timer(Expiry, 62), timer(Warning, 52)],
            vec![],
        ),
        (
            Change::ExpiryWarned { expires_at: t(62) },
            a,
            Actor::System,
            vec![],
            vec![timer(Warning, 52)],
            vec![],
        ),
        (
            Change::DeactivationRequested,
            a,
            alice(),
            vec![],
            vec![timer(Expiry, 62)],
            vec![revoke(1)],
        ),
        (
            Change::Expired,
            a,
            Actor::System,
            vec![],
            vec![timer(Expiry, 62)],
            vec![revoke(1)],
        ),
        (
            Change::RevokeFailed {
                attempt: 8,
                error: "connector down".into(),
                retry_at: t(70),
                became_stuck: true,
            },
            a,
            Actor::System,
            vec![timer(Retry, 70)],
            vec![],
            vec![],
        ),
        (
            Change::RevokeRetried { attempt: 9 },
            a,
            Actor::System,
            vec![],
            vec![timer(Retry, 70)],
            vec![revoke(9)],
        ),
        (
            Change::Revoked {
                attempt: 9,
                reason: EndReason::Expired,
            },
            a,
            Actor::System,
            vec![],
            vec![],
            vec![],
        ),
        (
            Change::StandingRevokeFailed {
                attempt: 1,
                error: "connector down".into(),
                retry_at: t(3),
                became_stuck: false,
            },
            None,
            Actor::System,
            vec![timer(StandingRetry, 3)],
            vec![],
            vec![],
        ),
        (
            Change::StandingRevokeRetried { attempt: 2 },
            None,
            Actor::System,
            vec![],
            vec![timer(StandingRetry, 3)],
            vec![Effect::RevokeStanding { attempt: 2 }],
        ),
        (
            Change::StandingRevoked { attempt: 2 },
            None,
            Actor::System,
            vec![],
            vec![],
            vec![],
        ),
        (
            Change::DriftFound {
                drift: Drift::UnexpectedAccess,
            },
            None,
            Actor::System,
            vec![],
            vec![],
            vec![Effect::RevokeStanding { attempt: 1 }],
        ),
        (
            Change::RegrantStarted { attempt: 2 },
            a,
            Actor::System,
            vec![],
            vec![timer(Expiry, 77), timer(Warning, 67)],
            vec![grant(2)],
        ),
    ]
}

fn activation() -> Activation {
    Activation {
        id: ACT,
        connection: CONN,
        period: Minutes(60),
        requested_by: alice(),
        status: ActivationStatus::Provisioned,
        requested_at: t(0),
        validated_at: Some(t(0)),
        provisioned_at: Some(t(2)),
        deprovision_started_at: None,
        ended_at: None,
        expires_at: Some(t(77)),
        warn_at: None,
        extended_by: Minutes(15),
        extensions: 1,
        attempt: 2,
        retry_at: None,
        cancel_requested: false,
        end_reason: None,
        last_error: Some("connector timeout".into()),
        stuck: false,
    }
}

fn connection() -> Connection {
    Connection {
        spec: spec(),
        state: ConnectionState::Active,
        jit: JitTimes {
            activation: Some(t(0)),
            provision: Some(t(2)),
            deactivation: None,
            deprovision: None,
            expiration: Some(t(77)),
        },
        created: t(0),
        modified: t(20),
        state_changed: t(2),
        state_changed_by: Actor::System,
        activation: Some(activation()),
        standing_revoke: None,
        version: 7,
    }
}

fn standing_connection() -> Connection {
    Connection {
        spec: ConnectionSpec {
            kind: ConnectionType::Jit,
            ..spec()
        },
        state: ConnectionState::Deactivating,
        jit: JitTimes {
            deactivation: Some(t(1)),
            ..JitTimes::default()
        },
        created: t(0),
        modified: t(3),
        state_changed: t(1),
        state_changed_by: alice(),
        activation: None,
        standing_revoke: Some(StandingRevoke {
            attempt: 1,
            retry_at: Some(t(3)),
            stuck: false,
            last_error: Some("connector down".into()),
        }),
        version: 3,
    }
}

/// A stored value of one fixture.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Envelope(Envelope),
    Connection(Connection),
    Activation(Activation),
    Policy(Policy),
    Idempotency(Idempotency),
    History(ActivationRecord),
    Item(Box<request::Item>),
    RequestConfig(Box<request::AccessRequestConfig>),
    Extras(codec::Extras),
}

const TENANT: &str = "acme-prod";

impl Value {
    fn encode(&self) -> Vec<u8> {
        match self {
            Value::Envelope(e) => codec::encode_envelope(e),
            Value::Connection(c) => codec::encode_connection(c),
            Value::Activation(a) => codec::encode_activation(a),
            Value::Policy(p) => codec::encode_policy(p),
            Value::Idempotency(i) => codec::encode_idempotency(i),
            Value::History(r) => codec::encode_history(r),
            Value::Item(i) => codec::encode_item(i),
            Value::RequestConfig(c) => codec::encode_request_config(c),
            Value::Extras(x) => codec::encode_extras(x),
        }
    }

    fn decode_like(&self, bytes: &[u8]) -> Result<Value, codec::Error> {
        Ok(match self {
            Value::Envelope(e) => Value::Envelope(codec::decode_envelope(e.sequence, bytes)?),
            Value::Connection(c) => {
                Value::Connection(codec::decode_connection(TENANT, c.id(), bytes)?)
            }
            Value::Activation(a) => {
                Value::Activation(codec::decode_activation(TENANT, a.id, bytes)?)
            }
            Value::Policy(_) => Value::Policy(codec::decode_policy(TENANT, bytes)?),
            Value::Idempotency(_) => {
                Value::Idempotency(codec::decode_idempotency(TENANT, "req-1", bytes)?)
            }
            Value::History(r) => {
                Value::History(codec::decode_history(TENANT, r.activation.id, bytes)?)
            }
            Value::Item(i) => Value::Item(Box::new(codec::decode_item(TENANT, i.id(), bytes)?)),
            Value::RequestConfig(_) => {
                Value::RequestConfig(Box::new(codec::decode_request_config(TENANT, bytes)?))
            }
            Value::Extras(_) => Value::Extras(codec::decode_extras(7, bytes)?),
        })
    }
}

fn fixtures() -> Vec<(String, Value)> {
    let tenant = TenantId::parse(TENANT).unwrap();
    let mut out = Vec::new();
    let all = changes();
    // Pinned: the first `FIRST_BATCH` changes were blessed as one batch with the policy event
    // last, and a batch's bounds are part of every fixture's bytes; a change variant added
    // later is an envelope of its own after the other fixtures, so adding one adds one file.
    let last = FIRST_BATCH as u64 + 1;
    for (n, sample) in all.into_iter().enumerate() {
        let sequence = if n < FIRST_BATCH {
            n as u64 + 1
        } else {
            LATER_CHANGES_SEQUENCE + (n - FIRST_BATCH) as u64
        };
        let (batch_first, batch_last) = if n < FIRST_BATCH {
            (1, last)
        } else {
            (sequence, sequence)
        };
        let name = format!("event_{:02}_{}", n, sample.0.name());
        let event = event_of(sample, sequence, None);
        out.push((
            name,
            Value::Envelope(Envelope {
                sequence,
                tenant: tenant.clone(),
                stream_version: n as u64 + 1,
                batch_first,
                batch_last,
                payload: Payload::Connection(event),
            }),
        ));
    }
    // Format version 6: the signals' events with a client section (pinned sequences, one
    // envelope each): an origin and metadata, metadata alone, the origin alone.
    let signals: Vec<Sample> = changes()
        .into_iter()
        .filter(|c| c.0.records_client())
        .collect();
    assert_eq!(signals.len(), 3, "activate, extend and deactivate");
    for (n, (sample, client)) in signals.into_iter().zip(clients()).enumerate() {
        let sequence = CLIENT_SEQUENCE + n as u64;
        out.push((
            format!("event_client_{}", sample.0.name()),
            Value::Envelope(Envelope {
                sequence,
                tenant: tenant.clone(),
                stream_version: 30 + n as u64,
                batch_first: sequence,
                batch_last: sequence,
                payload: Payload::Connection(event_of(sample, sequence, Some(client))),
            }),
        ));
    }
    out.push((
        "event_policy".into(),
        Value::Envelope(Envelope {
            sequence: last,
            tenant: tenant.clone(),
            stream_version: 2,
            batch_first: 1,
            batch_last: last,
            payload: Payload::Policy(PolicyEvent {
                at: t(30),
                actor: alice(),
                previous: Some(policy(1)),
                policy: policy(2),
            }),
        }),
    ));
    let item = request::submit::item_id(REQUEST, 0);
    for (n, (change, arm, cancel, effects)) in request_changes().into_iter().enumerate() {
        let sequence = last + 1 + n as u64;
        out.push((
            format!("request_{:02}_{}", n, change.name()),
            Value::Envelope(Envelope {
                sequence,
                tenant: tenant.clone(),
                stream_version: n as u64 + 1,
                batch_first: sequence,
                batch_last: sequence,
                payload: Payload::Request(request::Event {
                    item,
                    at: t(40 + n as u64),
                    actor: alice(),
                    change,
                    arm,
                    cancel,
                    effects,
                }),
            }),
        ));
    }
    // Pinned: the sequence is part of the fixture's bytes, so it must not move when another
    // request change variant is added before it.
    let sequence = REQUEST_CONFIG_SEQUENCE;
    out.push((
        "event_request_config".into(),
        Value::Envelope(Envelope {
            sequence,
            tenant: tenant.clone(),
            stream_version: 2,
            batch_first: sequence,
            batch_last: sequence,
            payload: Payload::RequestConfig(request::config::Event {
                at: t(90),
                actor: alice(),
                previous: Some(request::AccessRequestConfig::default()),
                config: request_config(),
            }),
        }),
    ));
    out.push((
        "record_request_config".into(),
        Value::RequestConfig(Box::new(request_config())),
    ));
    out.push(("record_item".into(), Value::Item(Box::new(request_item()))));
    out.push((
        "record_item_forwarded".into(),
        Value::Item(Box::new(forwarded_item())),
    ));
    out.push(("record_connection".into(), Value::Connection(connection())));
    out.push((
        "record_connection_standing_revoke".into(),
        Value::Connection(standing_connection()),
    ));
    out.push(("record_activation".into(), Value::Activation(activation())));
    out.push((
        "record_history".into(),
        Value::History(ActivationRecord::new(&activation(), &connection())),
    ));
    out.push(("record_policy".into(), Value::Policy(policy(2))));
    // Format version 6: the policy's jitflow extensions, the warning lead and the
    // missing-access action, as the record's and the event's trailing sections.
    out.push((
        "record_policy_extensions".into(),
        Value::Policy(policy_with_extensions(3)),
    ));
    out.push((
        "event_policy_extensions".into(),
        Value::Envelope(Envelope {
            sequence: POLICY_EXTENSIONS_SEQUENCE,
            tenant: tenant.clone(),
            stream_version: 3,
            batch_first: POLICY_EXTENSIONS_SEQUENCE,
            batch_last: POLICY_EXTENSIONS_SEQUENCE,
            payload: Payload::Policy(PolicyEvent {
                at: t(31),
                actor: alice(),
                previous: Some(policy(2)),
                policy: policy_with_extensions(3),
            }),
        }),
    ));
    out.push((
        "record_idempotency".into(),
        Value::Idempotency(Idempotency {
            fingerprint: 0x0123_4567_89ab_cdef,
            result: br#"{"status":202,"activationId":"2c918086"}"#.to_vec(),
            expires_at: t(1440),
        }),
    ));
    // Format version 4: the log's extras record (two keys, two cursors).
    out.push((
        "record_extras".into(),
        Value::Extras(codec::Extras {
            keys: vec![
                jitflow_store::idempotency::KeyPut {
                    tenant: tenant.clone(),
                    key: "req-1".into(),
                    record: Idempotency {
                        fingerprint: 0x0123_4567_89ab_cdef,
                        result: br#"{"status":202}"#.to_vec(),
                        expires_at: t(1440),
                    },
                },
                jitflow_store::idempotency::KeyPut {
                    tenant: TenantId::parse("globex").unwrap(),
                    key: "retry-7".into(),
                    record: Idempotency {
                        fingerprint: 7,
                        result: Vec::new(),
                        expires_at: t(60),
                    },
                },
            ],
            cursors: vec![("notifier".into(), 42), ("export".into(), 7)],
        }),
    ));
    out
}

/// An access request config with every field away from its default and every enum variant
/// used.
fn request_config() -> request::AccessRequestConfig {
    use request::config::{
        AccessDuration, ApprovalScheme, ApproverType, EntitlementAccess, EntitlementRequest,
        OnBehalfOf, Reminders, TimeUnit,
    };
    let scheme = |approver_type, id: Option<&str>| ApprovalScheme {
        approver_type,
        approver_id: id.map(str::to_owned),
    };
    request::AccessRequestConfig {
        approvals_must_be_external: true,
        auto_approval_enabled: true,
        reauthorization_enabled: true,
        on_behalf_of: OnBehalfOf {
            anyone_by_anyone: true,
            employee_by_manager: true,
            for_machine_identity: false,
            machine_by_owner: true,
        },
        reminders: Some(Reminders {
            days_until_escalation: Some(3),
            days_between_reminders: Some(1),
            max_reminders: Some(20),
            fallback_approver: Some(IdentityId::parse("2c9180867e20630b017e20be7c222492").unwrap()),
        }),
        entitlement: EntitlementRequest {
            access: EntitlementAccess {
                approval_schemes: vec![
                    scheme(ApproverType::EntitlementOwner, None),
                    scheme(ApproverType::SourceOwner, None),
                    scheme(ApproverType::Manager, None),
                    scheme(
                        ApproverType::GovernanceGroup,
                        Some("e3eab852-8315-467f-9de7-70eda97f63c8"),
                    ),
                ],
                request_comment_required: true,
                denial_comment_required: true,
                reauthorization_required: true,
                require_end_date: true,
                max_duration: Some(AccessDuration {
                    value: 6,
                    unit: TimeUnit::Months,
                }),
                form_definition_id: Some("78258e80-e9e2-4e1a-a11f-ce0b7c62f25d".into()),
            },
            revocation_schemes: vec![scheme(ApproverType::Workflow, Some("wf-revoke"))],
        },
        gov_group_visibility_enabled: true,
        machine_identity_access_request_enabled: false,
    }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.push('\n');
    s
}

fn from_hex(text: &str) -> Vec<u8> {
    let text = text.trim();
    assert!(text.len().is_multiple_of(2), "odd number of hex digits");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn blessing() -> bool {
    std::env::var_os("JITFLOW_BLESS").is_some_and(|v| v == "1")
}

/// One access request item event: change, timers armed, cancelled, effects started.
type RequestSample = (
    request::Change,
    Vec<request::Timer>,
    Vec<request::Timer>,
    Vec<request::Effect>,
);

fn item_spec() -> request::ItemSpec {
    request::ItemSpec {
        id: request::submit::item_id(REQUEST, 0),
        request: REQUEST,
        request_type: request::RequestType::Grant,
        requested_for: IdentityId::parse("2c9180867e20630b017e20be7c222492").unwrap(),
        requester: IdentityId::parse("carol").unwrap(),
        object: ObjectRef {
            kind: ObjectKind::Entitlement,
            id: ObjectId::parse("ent-admins").unwrap(),
        },
        comment: Some("on call this week".into()),
        client_metadata: [("ticket".to_owned(), "OPS-42".to_owned())].into(),
        request_metadata: [("origin".to_owned(), "portal".to_owned())].into(),
        start_date: Some(t(60)),
        remove_date: Some(t(600)),
        accounts: vec![SourceSelection {
            source: Some(SourceId::parse("ad").unwrap()),
            accounts: vec![AccountRef {
                account_uuid: None,
                native_identity: Some("CN=Alice,OU=Admins".into()),
            }],
        }],
        native_identity: None,
        form_instance_id: Some("form-7".into()),
    }
}

fn approval() -> request::Approval {
    request::Approval {
        id: request::approval_id(request::submit::item_id(REQUEST, 0)),
        approvers: vec![IdentityId::parse("bob").unwrap()],
        scheme: Some(request::ApprovalScheme::Manager),
        expires_at: Some(t(1440)),
        state: request::WorkItemState::Pending,
        decided_by: None,
        decided_at: None,
        comment: None,
    }
}

/// One event per access request `Change` variant, with every timer and effect kind among them.
fn request_changes() -> Vec<RequestSample> {
    use request::Change as C;
    use request::TimerKind::*;
    let timer = |kind, minutes| request::Timer {
        due: t(minutes),
        kind,
    };
    let other = request::submit::item_id(REQUEST, 1);
    vec![
        (
            C::Submitted {
                spec: Box::new(item_spec()),
                approval: approval(),
            },
            vec![timer(ApprovalExpiry, 1440)],
            vec![],
            vec![],
        ),
        (
            C::Approved {
                comment: Some("ok".into()),
                auto: false,
            },
            vec![timer(Sunrise, 60)],
            vec![timer(ApprovalExpiry, 1440)],
            vec![],
        ),
        (C::Rejected { comment: None }, vec![], vec![], vec![]),
        (C::ApprovalExpired, vec![], vec![], vec![]),
        (
            C::Cancelled {
                comment: "duplicate".into(),
                duplicate: Some(request::Duplicate::InProgress(other)),
            },
            vec![],
            vec![],
            vec![],
        ),
        (
            C::Closed(request::Closure {
                execution: request::ExecutionStatus::Completed,
                completion: request::CompletionStatus::Incomplete,
                message: "closed by ops".into(),
            }),
            vec![],
            vec![],
            vec![],
        ),
        (C::Superseded { by: other }, vec![], vec![], vec![]),
        (C::Lapsed, vec![], vec![], vec![]),
        (
            C::GrantStarted {
                kind: Some(ConnectionType::Jit),
            },
            vec![timer(Sunset, 600)],
            vec![timer(Sunrise, 60)],
            vec![request::Effect::Grant {
                attempt: 1,
                kind: Some(ConnectionType::Jit),
            }],
        ),
        (
            C::GrantFailed {
                attempt: 1,
                error: "timeout".into(),
                retry_at: t(62),
            },
            vec![timer(Retry, 62)],
            vec![],
            vec![],
        ),
        (
            C::GrantRetried { attempt: 2 },
            vec![],
            vec![timer(Retry, 62)],
            vec![request::Effect::Grant {
                attempt: 2,
                kind: None,
            }],
        ),
        (C::Granted { attempt: 2 }, vec![], vec![], vec![]),
        (
            C::GrantAbandoned {
                attempt: 3,
                error: "refused".into(),
                deactivate: Some(ACT),
            },
            vec![],
            vec![timer(Sunset, 600)],
            vec![request::Effect::DeactivateJit { activation: ACT }],
        ),
        (
            C::StopRequested {
                reason: request::RemovalReason::Closed,
            },
            vec![],
            vec![],
            vec![],
        ),
        (
            C::GrantSettled {
                attempt: 1,
                error: Some("late".into()),
                deactivate: None,
            },
            vec![],
            vec![],
            vec![request::Effect::Revoke { attempt: 1 }],
        ),
        (
            C::RemovalStarted {
                reason: request::RemovalReason::Sunset,
                deactivate: Some(ACT),
            },
            vec![],
            vec![],
            vec![request::Effect::DeactivateJit { activation: ACT }],
        ),
        (
            C::JitDeactivated,
            vec![],
            vec![],
            vec![request::Effect::Revoke { attempt: 1 }],
        ),
        (
            C::RevokeFailed {
                attempt: 1,
                error: "503".into(),
                retry_at: t(700),
                became_stuck: true,
            },
            vec![timer(Retry, 700)],
            vec![],
            vec![],
        ),
        (
            C::RevokeRetried { attempt: 2 },
            vec![],
            vec![timer(Retry, 700)],
            vec![request::Effect::Revoke { attempt: 2 }],
        ),
        (C::Removed { attempt: 2 }, vec![], vec![], vec![]),
        (
            C::Forwarded {
                from: vec![IdentityId::parse("bob").unwrap()],
                to: IdentityId::parse("erin").unwrap(),
                comment: "Forwarding from Bob to Erin".into(),
                reassignment: request::ReassignmentType::ManualReassignment,
            },
            vec![],
            vec![],
            vec![],
        ),
    ]
}

/// A pending item whose approval was forwarded twice (by an approver, then by an admin), built
/// by the core: its record carries the forward section.
fn forwarded_item() -> request::Item {
    let spec = item_spec();
    let id = spec.id;
    let policy = policy(1);
    let config = jitflow_core::lifecycle::Config::default();
    let who = |name: &str| IdentityId::parse(name).unwrap();
    let step = request::ApprovalStep::Approvers {
        approvers: vec![who("bob"), who("carol")],
        scheme: request::ApprovalScheme::Manager,
        expires_after: std::time::Duration::from_secs(24 * 3600),
    };
    let forward = |to: &str| request::Command::Forward {
        to: who(to),
        comment: format!("over to {to}"),
    };
    let submit = request::Command::Submit {
        spec: Box::new(spec),
        approval: step,
        existing: request::Existing::default(),
    };
    let steps = [
        (t(1), alice(), false, submit),
        (t(2), Actor::Identity(who("bob")), false, forward("erin")),
        (t(3), Actor::Identity(who("root")), true, forward("frank")),
    ];
    let mut item: Option<request::Item> = None;
    for (now, actor, admin, command) in steps {
        let ctx = request::Context {
            now,
            actor: &actor,
            admin,
            policy: &policy,
            config: &config,
            running_activation: None,
        };
        for event in request::decide(id, item.as_ref(), &command, &ctx).unwrap() {
            item = Some(request::evolve(item, &event).unwrap());
        }
    }
    let item = item.unwrap();
    assert_eq!(item.forwards.len(), 2);
    assert_eq!(item.approval.approvers, vec![who("frank")]);
    item
}

/// An item in the middle of its workflow, built by the core: approved by a person after its
/// submission, its sunrise came, and its grant's first try failed.
fn request_item() -> request::Item {
    let spec = item_spec();
    let id = spec.id;
    let policy = policy(1);
    let config = jitflow_core::lifecycle::Config::default();
    let bob = Actor::Identity(IdentityId::parse("bob").unwrap());
    let step = request::ApprovalStep::Approvers {
        approvers: vec![IdentityId::parse("bob").unwrap()],
        scheme: request::ApprovalScheme::Manager,
        expires_after: std::time::Duration::from_secs(24 * 3600),
    };
    let commands = [
        (
            t(1),
            request::Command::Submit {
                spec: Box::new(spec),
                approval: step,
                existing: request::Existing::default(),
            },
        ),
        (t(2), request::Command::Approve { comment: None }),
        (
            t(60),
            request::Command::TimerFired(request::Timer {
                due: t(60),
                kind: request::TimerKind::Sunrise,
            }),
        ),
        (
            t(61),
            request::Command::GrantFailed {
                attempt: 1,
                error: "timeout".into(),
                retryable: true,
            },
        ),
    ];
    let mut item: Option<request::Item> = None;
    for (now, command) in commands {
        let ctx = request::Context {
            now,
            actor: &bob,
            admin: false,
            policy: &policy,
            config: &config,
            running_activation: None,
        };
        for event in request::decide(id, item.as_ref(), &command, &ctx).unwrap() {
            item = Some(request::evolve(item, &event).unwrap());
        }
    }
    item.unwrap()
}

#[test]
fn every_request_change_variant_has_a_fixture() {
    let names: BTreeSet<&str> = request_changes().iter().map(|c| c.0.name()).collect();
    assert_eq!(
        names.len(),
        REQUEST_CHANGE_VARIANTS,
        "one fixture per request Change variant"
    );
}

#[test]
fn every_change_variant_has_a_fixture() {
    let names: BTreeSet<&str> = changes().iter().map(|c| c.0.name()).collect();
    assert_eq!(
        names.len(),
        CHANGE_VARIANTS,
        "one fixture per Change variant"
    );
}

#[test]
fn fixtures_decode_to_their_values_and_values_encode_to_their_bytes() {
    let dir = golden_dir();
    if blessing() {
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for (name, value) in fixtures() {
            std::fs::write(dir.join(format!("{name}.hex")), to_hex(&value.encode())).unwrap();
        }
    }
    let fixtures = fixtures();
    for (name, value) in &fixtures {
        let path = dir.join(format!("{name}.hex"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; generate fixtures with JITFLOW_BLESS=1 (only for an intended format change)",
                path.display()
            )
        });
        let bytes = from_hex(&text);
        let decoded = value
            .decode_like(&bytes)
            .unwrap_or_else(|e| panic!("fixture {name} no longer decodes: {e}"));
        assert_eq!(&decoded, value, "fixture {name} decodes to another value");
        assert_eq!(
            to_hex(&value.encode()),
            to_hex(&bytes),
            "fixture {name}: the encoding changed"
        );
    }
    // No stale fixture left behind.
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> = fixtures.iter().map(|(n, _)| format!("{n}.hex")).collect();
    assert_eq!(on_disk, expected);
}

/// The forward section of an item record: every truncation, an empty section and trailing
/// garbage are typed errors that name the item, never a panic or a silently shorter history.
#[test]
fn a_corrupt_forward_section_is_a_typed_error_naming_the_item() {
    let item = forwarded_item();
    let id = item.id();
    let plain = codec::encode_item(&request_item());
    let bytes = codec::encode_item(&item);
    assert!(bytes.len() > plain.len() + 1);
    let named = |e: &codec::Error| e.to_string().contains(&id.to_string());
    // Cut anywhere inside the section (the cut at its start is a valid unforwarded record).
    let item_len = codec::encode_item(&request::Item {
        forwards: Vec::new(),
        ..item.clone()
    })
    .len();
    for len in item_len + 1..bytes.len() {
        let e = codec::decode_item(TENANT, id, &bytes[..len]).expect_err("truncated");
        assert!(named(&e), "at {len}: {e}");
    }
    // bincode of an empty list: the encoder never writes it.
    let mut empty = plain.clone();
    empty.push(0);
    let e = codec::decode_item(TENANT, request_item().id(), &empty).unwrap_err();
    assert!(e.to_string().contains("empty forward section"), "{e}");
    // One byte too many after the section.
    let mut longer = bytes.clone();
    longer.push(7);
    let e = codec::decode_item(TENANT, id, &longer).unwrap_err();
    assert!(named(&e), "{e}");
    assert_eq!(codec::decode_item(TENANT, id, &bytes).unwrap(), item);
}

/// The client section of a signal's event: every truncation inside it, the section after an
/// event no client's signal commits, an empty section, metadata that is not a JSON object, an
/// origin out of bounds and a byte after the section are typed errors naming the event, never a
/// panic or a silently dropped section.
#[test]
fn a_corrupt_client_section_is_a_typed_error_naming_the_event() {
    let fixtures = fixtures();
    let Some((_, Value::Envelope(with))) = fixtures
        .iter()
        .find(|(name, _)| name == "event_client_activation_requested")
    else {
        panic!("the fixture exists");
    };
    let Payload::Connection(event) = &with.payload else {
        panic!("a connection event");
    };
    let bytes = codec::encode_envelope(with);
    let without = |event: Event| {
        codec::encode_envelope(&Envelope {
            payload: Payload::Connection(Event {
                client: None,
                ..event
            }),
            ..with.clone()
        })
    };
    let plain = without(event.clone());
    assert_eq!(
        &bytes[..plain.len()],
        plain.as_slice(),
        "a trailing section"
    );
    let section = &bytes[plain.len()..];
    let decode = |bytes: &[u8]| codec::decode_envelope(with.sequence, bytes);
    let named = |e: &codec::Error| {
        e.to_string()
            .starts_with(&format!("cannot decode event {}", with.sequence))
    };
    // Cut anywhere inside the section (the cut at its start is the event without one).
    for len in plain.len() + 1..bytes.len() {
        let e = decode(&bytes[..len]).expect_err("truncated");
        assert!(named(&e), "at {len}: {e}");
    }
    assert_eq!(
        decode(&plain).unwrap().payload,
        Payload::Connection(Event {
            client: None,
            ..event.clone()
        })
    );
    let with_section = |head: &[u8], tail: &[u8]| [head, tail].concat();
    // After an event that no client's signal commits.
    let other = without(Event {
        change: Change::ValidationPassed,
        ..event.clone()
    });
    let e = decode(&with_section(&other, section)).unwrap_err();
    assert!(named(&e) && e.to_string().contains("client section"), "{e}");
    // Sections the encoder never writes.
    for (what, tail) in [
        (
            "empty",
            codec::encode_raw(&(None::<String>, None::<String>)),
        ),
        (
            "metadata not an object",
            codec::encode_raw(&(None::<String>, Some("[1, 2]"))),
        ),
        (
            "metadata not JSON",
            codec::encode_raw(&(None::<String>, Some("{\"a\":"))),
        ),
        (
            "an empty origin",
            codec::encode_raw(&(Some(""), None::<String>)),
        ),
        (
            "an origin with a control character",
            codec::encode_raw(&(Some("a\u{7}b"), None::<String>)),
        ),
    ] {
        let e = decode(&with_section(&plain, &tail)).unwrap_err();
        assert!(named(&e), "{what}: {e}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let e = decode(&longer).unwrap_err();
    assert!(named(&e), "{e}");
    assert_eq!(decode(&bytes).unwrap(), *with);
}
