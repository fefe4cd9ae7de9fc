//! Shared by the integration tests: a model world that produces valid batch entries by driving
//! the core's `decide` and `evolve`, and a memory storage backend that can inject faults.
#![allow(dead_code)] // Each test crate uses a different part.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jitflow_core::connection::{Connection, ConnectionSpec, ConnectionType, ConnectionUpdate};
use jitflow_core::id::{
    AccountId, ActivationId, ConnectionId, EntitlementId, IdentityId, SourceId, TenantId,
};
use jitflow_core::lifecycle::{
    Actor, Command, Config, Context, Effect, PolicyCommand, decide, decide_policy, evolve,
};
use jitflow_core::policy::Policy;
use jitflow_core::time::{Minutes, Timestamp};
use jitflow_store::Store;
use jitflow_store::batch::Entry;
use jitflow_store::intents::Intent;
use jitflow_store::read::MAX_READ_LIMIT;
use jitflow_store::timers::{Due, DueTimer};

/// What to do to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Register(ConnectionType),
    Update,
    Remove,
    ChangeType(ConnectionType),
    Activate(Option<u32>),
    Extend(Option<u32>),
    Deactivate,
    Validate { pass: bool },
    Grant { ok: bool, retryable: bool },
    Revoke { ok: bool },
    StandingRevoke { ok: bool },
    FireTimer,
}

/// One step of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Act on connection `slot` of tenant `tenant`.
    Act {
        tenant: usize,
        slot: usize,
        action: Action,
    },
    /// The natural next step of connection `slot` of tenant `tenant` (see [`World::advance`]).
    Advance {
        tenant: usize,
        slot: usize,
        roll: u64,
    },
    /// Move the clock forward.
    Tick { minutes: u32 },
    /// Store a new policy for a tenant.
    PutPolicy { tenant: usize, default_period: u32 },
}

/// One tenant of the model.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    /// The stored policy (`None` until the first policy event).
    pub policy: Option<Policy>,
    pub connections: BTreeMap<ConnectionId, Connection>,
}

/// A model of what the store should hold, producing the entries to append.
#[derive(Debug, Clone)]
pub struct World {
    pub now: Timestamp,
    pub config: Config,
    pub tenants: Vec<Tenant>,
    /// Distinguishes ids of worlds that share a store (rounds of the crash test).
    run: u64,
    next_activation: u64,
}

pub fn default_policy() -> Policy {
    let mut p = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
    p.max_activation_period = Some(Minutes(240));
    p.default_activation_period = Some(Minutes(60));
    p.max_extension = Some(Minutes(120));
    p.default_extension = Some(Minutes(15));
    p
}

/// The spec of connection `id`: its facts vary with the id's slot (low 32 bits), so queries
/// have identities, entitlements, sources, names and privilege levels to tell apart (names with
/// a comma and a backslash, and an empty privilege level, for `searchAfter`'s escapes).
pub fn spec(id: ConnectionId, kind: ConnectionType) -> ConnectionSpec {
    let slot = id.as_u128() as u32 as usize;
    let pick = |options: &[&'static str], by: usize| options[by % options.len()];
    ConnectionSpec {
        id,
        identity: IdentityId::parse(pick(&["alice", "bob", "carol"], slot)).unwrap(),
        identity_name: pick(&["Alice Example", "Bob, Jr.", "Carol \\ C"], slot).into(),
        account: AccountId::parse(pick(&["acct-1", "acct-2"], slot / 9)).unwrap(),
        account_name: pick(&["alice.admin", "ops"], slot / 9).into(),
        entitlement: EntitlementId::parse(pick(&["ent-admins", "ent-dba", "ent-ro"], slot / 3))
            .unwrap(),
        entitlement_name: pick(&["Domain Admins", "DBA", "Read only"], slot / 3).into(),
        attribute_name: pick(&["memberOf", "role"], slot / 4).into(),
        attribute_value: pick(
            &[
                "CN=Domain Admins,OU=Groups,DC=example,DC=com",
                "db_owner",
                "CN=Readers,OU=Groups,DC=example,DC=com",
            ],
            slot / 3,
        )
        .into(),
        privilege_level: [Some("HIGH"), None, Some("LOW"), Some("")][slot % 4].map(Into::into),
        source: SourceId::parse(pick(&["ad-prod", "sql"], slot / 5)).unwrap(),
        source_name: pick(&["Active Directory", "SQL, main"], slot / 5).into(),
        kind,
        standalone: slot % 3 == 1,
    }
}

impl World {
    /// A world with `tenants` tenants named `<prefix>-<n>`, ids unique to `run`.
    pub fn new(prefix: &str, tenants: usize, run: u64) -> World {
        World {
            now: Timestamp::from_millis(1_700_000_000_000).unwrap(),
            config: Config {
                warning_lead: Duration::from_secs(600),
                backoff_base: Duration::from_secs(1),
                backoff_cap: Duration::from_secs(60),
                ..Config::default()
            },
            tenants: (0..tenants)
                .map(|n| Tenant {
                    id: TenantId::parse(&format!("{prefix}-{n}")).unwrap(),
                    policy: None,
                    connections: BTreeMap::new(),
                })
                .collect(),
            run,
            next_activation: 0,
        }
    }

    /// Loads the stored policies of the world's tenants (a world resuming on a store).
    pub fn load_policies(&mut self, store: &Store) {
        let reader = store.reader().unwrap();
        for t in &mut self.tenants {
            t.policy = reader.policy(&t.id).unwrap();
        }
    }

    pub fn connection_id(&self, tenant: usize, slot: usize) -> ConnectionId {
        ConnectionId::from_u128(
            (u128::from(self.run) << 64) | ((tenant as u128) << 32) | slot as u128 | 1 << 127,
        )
    }

    /// Applies one op; returns the entry to append, or `None` when the core refused it or the
    /// op does not apply to the current state.
    pub fn apply(&mut self, op: Op) -> Option<Entry> {
        match op {
            Op::Tick { minutes } => {
                self.now = self.now.plus_minutes(Minutes(minutes));
                None
            }
            Op::PutPolicy {
                tenant,
                default_period,
            } => {
                let t = &mut self.tenants[tenant];
                let mut policy = default_policy();
                policy.default_activation_period = Some(Minutes(default_period.clamp(1, 240)));
                let ctx = Context {
                    now: self.now,
                    actor: &Actor::System,
                    policy: &policy,
                    config: &self.config,
                };
                let event =
                    decide_policy(t.policy.as_ref(), &PolicyCommand::Put(policy.clone()), &ctx)
                        .ok()?;
                t.policy = Some(event.policy.clone());
                Some(Entry::Policy {
                    tenant: t.id.clone(),
                    event,
                })
            }
            Op::Act {
                tenant,
                slot,
                action,
            } => self.act(tenant, slot, action),
            Op::Advance { tenant, slot, roll } => self.advance(tenant, slot, roll),
        }
    }

    fn command(&mut self, tenant: usize, id: ConnectionId, action: Action) -> Option<Command> {
        let state = self.tenants[tenant].connections.get(&id);
        let effects = state.map(Connection::pending_effects).unwrap_or_default();
        let command = match action {
            Action::Register(kind) => Command::Register(spec(id, kind)),
            Action::Update => Command::Update(ConnectionUpdate {
                identity_name: Some(format!("Alice {}", self.now.as_millis() % 1000)),
                ..Default::default()
            }),
            Action::Remove => Command::Remove,
            Action::ChangeType(kind) => Command::ChangeType(kind),
            Action::Activate(period) => {
                self.next_activation += 1;
                Command::Activate {
                    activation: ActivationId::from_u128(
                        (u128::from(self.run) << 64) | u128::from(self.next_activation),
                    ),
                    period: period.map(Minutes),
                    client: client(self.next_activation),
                }
            }
            Action::Extend(by) => Command::Extend {
                by: by.map(Minutes),
                client: client(self.now.as_millis() / 60_000),
            },
            Action::Deactivate => Command::Deactivate {
                client: client(self.now.as_millis() / 60_000 + 1),
            },
            Action::Validate { pass } => effects.iter().find_map(|e| match *e {
                Effect::Validate { activation } if pass => {
                    Some(Command::ValidationPassed { activation })
                }
                Effect::Validate { activation } => Some(Command::ValidationRefused {
                    activation,
                    reason: "ticket closed".into(),
                }),
                _ => None,
            })?,
            Action::Grant { ok, retryable } => effects.iter().find_map(|e| match *e {
                Effect::Grant {
                    activation,
                    attempt,
                } if ok => Some(Command::GrantSucceeded {
                    activation,
                    attempt,
                }),
                Effect::Grant {
                    activation,
                    attempt,
                } => Some(Command::GrantFailed {
                    activation,
                    attempt,
                    error: "connector timeout".into(),
                    retryable,
                }),
                _ => None,
            })?,
            Action::Revoke { ok } => effects.iter().find_map(|e| match *e {
                Effect::Revoke {
                    activation,
                    attempt,
                } if ok => Some(Command::RevokeSucceeded {
                    activation,
                    attempt,
                }),
                Effect::Revoke {
                    activation,
                    attempt,
                } => Some(Command::RevokeFailed {
                    activation,
                    attempt,
                    error: "connector timeout".into(),
                }),
                _ => None,
            })?,
            Action::StandingRevoke { ok } => effects.iter().find_map(|e| match *e {
                Effect::RevokeStanding { attempt } if ok => {
                    Some(Command::StandingRevokeSucceeded { attempt })
                }
                Effect::RevokeStanding { attempt } => Some(Command::StandingRevokeFailed {
                    attempt,
                    error: "connector timeout".into(),
                }),
                _ => None,
            })?,
            Action::FireTimer => {
                let timer = state?.timers().into_iter().min()?;
                if timer.due > self.now {
                    self.now = timer.due;
                }
                Command::TimerFired(timer)
            }
        };
        Some(command)
    }

    fn act(&mut self, tenant: usize, slot: usize, action: Action) -> Option<Entry> {
        let id = self.connection_id(tenant, slot);
        let command = self.command(tenant, id, action)?;
        let default = default_policy();
        let t = &mut self.tenants[tenant];
        let policy = t.policy.as_ref().unwrap_or(&default);
        let actor = Actor::Identity(IdentityId::parse("alice").unwrap());
        let ctx = Context {
            now: self.now,
            actor: &actor,
            policy,
            config: &self.config,
        };
        let state = t.connections.get(&id);
        let mut events = decide(id, state, &command, &ctx).ok()?;
        assert!(events.len() <= 1, "the core decides one event per command");
        let event = events.pop()?;
        let after = evolve(state.cloned(), &event).expect("decided events apply");
        match &after {
            Some(c) => t.connections.insert(id, c.clone()),
            None => t.connections.remove(&id),
        };
        Some(Entry::Connection {
            tenant: t.id.clone(),
            event,
            after,
        })
    }

    /// The natural next step of a connection's lifecycle (register, activate, validate, grant,
    /// extend, expire or deactivate, revoke, and now and then a type change, an update or a
    /// removal), with some failures: realistic arm and cancel. `roll` picks among the choices.
    pub fn advance(&mut self, tenant: usize, slot: usize, roll: u64) -> Option<Entry> {
        let id = self.connection_id(tenant, slot);
        let Some(c) = self.tenants[tenant].connections.get(&id) else {
            let kind = match roll % 8 {
                0 => ConnectionType::Standing,
                1 => ConnectionType::Na,
                _ => ConnectionType::Jit,
            };
            return self.act(tenant, slot, Action::Register(kind));
        };
        let mut tries: Vec<Action> = Vec::new();
        match c.pending_effects().first() {
            Some(Effect::Validate { .. }) => tries.push(Action::Validate {
                pass: !roll.is_multiple_of(10),
            }),
            Some(Effect::Grant { .. }) => tries.push(Action::Grant {
                ok: !roll.is_multiple_of(4),
                retryable: roll % 16 != 1,
            }),
            Some(Effect::Revoke { .. }) => tries.push(Action::Revoke {
                ok: !roll.is_multiple_of(4),
            }),
            Some(Effect::RevokeStanding { .. }) => tries.push(Action::StandingRevoke {
                ok: !roll.is_multiple_of(3),
            }),
            None => {}
        }
        let kind = c.kind();
        if roll.is_multiple_of(13) {
            tries.push(Action::Update);
        }
        if kind == ConnectionType::Standing && roll.is_multiple_of(2) {
            tries.push(Action::ChangeType(ConnectionType::Jit));
        }
        if kind == ConnectionType::Jit && roll.is_multiple_of(9) {
            tries.push(Action::ChangeType(if roll.is_multiple_of(2) {
                ConnectionType::Standing
            } else {
                ConnectionType::Na
            }));
        }
        if kind == ConnectionType::Na {
            tries.push(Action::ChangeType(ConnectionType::Jit));
        }
        if c.state.is_at_rest() && roll.is_multiple_of(11) {
            tries.push(Action::Remove);
        }
        if c.state.is_at_rest() {
            tries.push(Action::Activate(None));
        }
        if roll.is_multiple_of(3) {
            tries.push(Action::Extend(Some(5)));
        }
        if roll.is_multiple_of(5) {
            tries.push(Action::Deactivate);
        }
        tries.push(Action::FireTimer);
        tries.push(Action::Deactivate);
        tries
            .into_iter()
            .find_map(|action| self.act(tenant, slot, action))
    }

    /// Every timer of every connection of the model.
    pub fn timers(&self) -> Vec<DueTimer> {
        let mut out: Vec<DueTimer> = self
            .tenants
            .iter()
            .flat_map(|t| {
                t.connections.values().flat_map(|c| {
                    c.timers().into_iter().map(|timer| DueTimer {
                        due: timer.due,
                        tenant: t.id.clone(),
                        connection: c.id(),
                        timer,
                    })
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Every connection of the model with pending effects.
    pub fn intents(&self) -> Vec<Intent> {
        let mut out: Vec<Intent> = self
            .tenants
            .iter()
            .flat_map(|t| {
                t.connections
                    .values()
                    .filter(|c| !c.pending_effects().is_empty())
                    .map(|c| Intent {
                        tenant: t.id.clone(),
                        connection: c.id(),
                    })
            })
            .collect();
        out.sort();
        out
    }
}

/// Every timer in the store's index, paging with the cursor.
pub fn stored_timers(store: &Store) -> Vec<DueTimer> {
    let reader = store.reader().unwrap();
    let mut out: Vec<DueTimer> = Vec::new();
    let mut after: Option<Due> = None;
    loop {
        let page = reader.due_timers(after.as_ref(), None, 7).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        out.extend(page.into_iter().map(|d| match d {
            Due::Connection(t) => t,
            Due::Item(t) => panic!("request timer {t:?} in a connection-only store"),
        }));
    }
    out
}

/// Every intent in the store, paging with the cursor.
pub fn stored_intents(store: &Store) -> Vec<Intent> {
    let reader = store.reader().unwrap();
    let mut out: Vec<Intent> = Vec::new();
    loop {
        let page = reader.intents(out.last(), 5).unwrap();
        if page.is_empty() {
            break;
        }
        out.extend(page);
    }
    out
}

/// Every event of the log, in order.
pub fn all_events(store: &Store) -> Vec<jitflow_store::codec::Envelope> {
    let reader = store.reader().unwrap();
    let mut out: Vec<jitflow_store::codec::Envelope> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.sequence);
        let page = reader.events_after(after, MAX_READ_LIMIT).unwrap();
        if page.is_empty() {
            break;
        }
        out.extend(page);
    }
    out
}

/// A redb storage backend over memory that outlives the database (so a test can reopen the
/// same bytes), and can fail writes once a byte budget is spent, like a full disk.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    bytes: Arc<Mutex<Vec<u8>>>,
    /// Bytes the backend may still write or grow by; `u64::MAX` for no limit.
    budget: Arc<AtomicU64>,
    /// Syncs the backend may still do; `u64::MAX` for no limit.
    syncs: Arc<AtomicU64>,
    /// Set once a write or a sync failed.
    pub failed: Arc<AtomicBool>,
}

impl Memory {
    /// An unlimited backend.
    pub fn new() -> Memory {
        Memory {
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            syncs: Arc::new(AtomicU64::new(u64::MAX)),
            ..Memory::default()
        }
    }

    /// A backend over the same bytes with a fresh budget (`u64::MAX`: healthy).
    pub fn share(&self, budget: u64) -> Memory {
        Memory {
            bytes: Arc::clone(&self.bytes),
            budget: Arc::new(AtomicU64::new(budget)),
            syncs: Arc::new(AtomicU64::new(u64::MAX)),
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Lets the backend write `budget` more bytes, then fail (`u64::MAX`: no limit).
    pub fn set_budget(&self, budget: u64) {
        self.budget.store(budget, Ordering::SeqCst);
    }

    /// Lets the backend sync `syncs` more times, then fail every sync (`u64::MAX`: no limit).
    pub fn set_syncs(&self, syncs: u64) {
        self.syncs.store(syncs, Ordering::SeqCst);
    }

    fn spend(&self, n: u64) -> io::Result<()> {
        let spent = self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(n));
        if spent.is_err() {
            self.budget.store(0, Ordering::SeqCst);
            self.failed.store(true, Ordering::SeqCst);
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (injected)",
            ));
        }
        Ok(())
    }
}

impl redb::StorageBackend for Memory {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes.lock().unwrap();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let source = bytes
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read out of range"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut bytes = self.bytes.lock().unwrap();
        let grow = len.saturating_sub(bytes.len() as u64);
        self.spend(grow)?;
        bytes.resize(usize::try_from(len).map_err(io::Error::other)?, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let synced = self
            .syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| s.checked_sub(1));
        if synced.is_err() || self.budget.load(Ordering::SeqCst) == 0 {
            self.failed.store(true, Ordering::SeqCst);
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (injected, at sync)",
            ));
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.spend(data.len() as u64)?;
        let mut bytes = self.bytes.lock().unwrap();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let target = bytes
            .get_mut(start..start + data.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write out of range"))?;
        target.copy_from_slice(data);
        Ok(())
    }
}

/// What a client says with a signal, varied by `salt`: nothing, an origin, or an origin and
/// metadata, so that the log holds events with and without a client section.
fn client(salt: u64) -> Option<jitflow_core::client::ClientInfo> {
    let meta = match salt % 3 {
        0 => return None,
        1 => None,
        _ => Some(
            [
                ("n".to_owned(), serde_json::json!(salt)),
                ("tags".to_owned(), serde_json::json!(["a", {"b": null}])),
            ]
            .into_iter()
            .collect(),
        ),
    };
    jitflow_core::client::ClientInfo::new(Some(format!("world-{salt}")), meta).unwrap()
}
