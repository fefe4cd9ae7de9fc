//! Values for the crate's unit tests, made with the core's `decide` and `evolve`.

use jitflow_core::connection::{Connection, ConnectionSpec, ConnectionType};
use jitflow_core::id::{
    AccountId, ActivationId, ConnectionId, EntitlementId, IdentityId, SourceId,
};
use jitflow_core::lifecycle::{
    Actor, Command, Config, Context, Event, PolicyCommand, PolicyEvent, decide, decide_policy,
    evolve,
};
use jitflow_core::policy::Policy;
use jitflow_core::time::{Minutes, Timestamp};

use crate::Store;
use crate::batch::{Batch, Entry};

pub(crate) const CONN: ConnectionId =
    ConnectionId::from_u128(0x757f_b803_9024_5861_e510_83a5_6e4c_5bd3);
pub(crate) const ACT: ActivationId = ActivationId::from_u128(0xa1);

pub(crate) fn spec(id: ConnectionId) -> ConnectionSpec {
    ConnectionSpec {
        id,
        identity: IdentityId::parse("alice").unwrap(),
        identity_name: "Alice".into(),
        account: AccountId::parse("acct-1").unwrap(),
        account_name: "alice.admin".into(),
        entitlement: EntitlementId::parse("ent-admins").unwrap(),
        entitlement_name: "Domain Admins".into(),
        attribute_name: "memberOf".into(),
        attribute_value: "CN=Domain Admins,DC=example,DC=com".into(),
        privilege_level: Some("HIGH".into()),
        source: SourceId::parse("ad").unwrap(),
        source_name: "Active Directory".into(),
        kind: ConnectionType::Jit,
        standalone: false,
    }
}

pub(crate) fn policy() -> Policy {
    let mut p = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
    p.max_activation_period = Some(Minutes(120));
    p.default_activation_period = Some(Minutes(60));
    p
}

pub(crate) fn now() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000).unwrap()
}

/// Decides `command` against `state` and applies the single event.
pub(crate) fn step(state: Option<Connection>, command: Command) -> (Event, Option<Connection>) {
    let policy = policy();
    let config = Config::default();
    let actor = Actor::Identity(IdentityId::parse("alice").unwrap());
    let ctx = Context {
        now: now(),
        actor: &actor,
        policy: &policy,
        config: &config,
    };
    let mut events = decide(CONN, state.as_ref(), &command, &ctx).expect("accepted");
    assert_eq!(events.len(), 1);
    let event = events.remove(0);
    let after = evolve(state, &event).expect("applies");
    (event, after)
}

/// An activation request: arms nothing, starts validation.
pub(crate) fn event() -> Event {
    let (_, registered) = step(None, Command::Register(spec(CONN)));
    step(
        registered,
        Command::Activate {
            activation: ACT,
            period: None,
            client: None,
        },
    )
    .0
}

/// A connection with a running activation.
pub(crate) fn connection() -> Connection {
    let (_, registered) = step(None, Command::Register(spec(CONN)));
    step(
        registered,
        Command::Activate {
            activation: ACT,
            period: None,
            client: None,
        },
    )
    .1
    .unwrap()
}

pub(crate) fn policy_event() -> PolicyEvent {
    let actor = Actor::System;
    let policy = policy();
    let config = Config::default();
    let ctx = Context {
        now: now(),
        actor: &actor,
        policy: &policy,
        config: &config,
    };
    decide_policy(None, &PolicyCommand::Put(policy.clone()), &ctx).unwrap()
}

/// Appends `event` of `tenant`, which leaves the connection `after`, as a batch of its own.
pub(crate) fn append(
    store: &Store,
    tenant: &jitflow_core::id::TenantId,
    event: Event,
    after: Option<Connection>,
) {
    let mut batch = Batch::new();
    batch.push(Entry::Connection {
        tenant: tenant.clone(),
        event,
        after,
    });
    store.append_batch(&batch).unwrap();
}
