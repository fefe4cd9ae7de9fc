//! The writer: one dedicated thread that owns every durable change.
//!
//! It blocks for the first request, drains what else is queued (up to `batch_max`), decides each
//! against state that includes the earlier requests of the same batch, writes all events,
//! projections, timer changes and idempotency keys in one transaction committed with
//! `Durability::Immediate`, and only then answers every caller. A refused request is answered
//! alone and never aborts the batch. After the commit it hands the new effects to the effect
//! runner, wakes the scheduler if a timer was armed earlier than it knew, and tells subscribers.
//! Those hand-offs never block the writer: the store holds the truth (the intents set and the
//! timer index), and a full hand-off queue only makes the other side rescan it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use jitflow_core::activation::Activation;
use jitflow_core::connection::{Connection, ConnectionSpec};
use jitflow_core::id::{ActivationId, ConnectionId, TenantId};
use jitflow_core::lifecycle::{
    self, Actor, Command, Context, Effect, PolicyCommand, Rejection, decide, decide_policy, evolve,
};
use jitflow_core::policy::Policy;
use jitflow_store::Store;
use jitflow_store::batch::{Batch, Entry};
use jitflow_store::idempotency::{Idempotency as KeyRecord, KeyPut};
use jitflow_store::read::Reader;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tracing::{debug, debug_span, error, info_span};

use crate::clock::Clock;
use crate::error::Error;
use crate::metrics::Metrics;

/// What a request asks the writer to do.
#[derive(Debug)]
pub(crate) enum Op {
    /// A lifecycle command for one connection.
    Connection {
        tenant: TenantId,
        connection: ConnectionId,
        command: Command,
    },
    /// A change of a tenant's policy.
    Policy {
        tenant: TenantId,
        command: PolicyCommand,
    },
    /// Move a named cursor of the log (a consumer's durable position).
    Cursor { name: &'static str, sequence: u64 },
    /// Finish the batch in flight and stop.
    Shutdown,
}

/// An idempotency key and a fingerprint of the request it was first used for.
#[derive(Debug, Clone)]
pub(crate) struct Idempotency {
    pub key: String,
    pub fingerprint: u64,
}

/// What the writer answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The connection after the command (`None`: removed). Boxed: it is most of the size.
    Connection(Option<Box<Connection>>),
    /// The policy after the change.
    Policy(Policy),
    /// The activation an idempotency key was first used for, as it stands now.
    Activation(Activation),
    /// A cursor was moved.
    Moved,
    /// Shutdown acknowledged.
    Stopped,
}

/// Where a request's answer goes.
pub(crate) type ReplyTo = oneshot::Sender<Result<Reply, Error>>;

/// One request in the writer's queue. Every request is answered exactly once.
#[derive(Debug)]
pub(crate) struct Request {
    pub op: Op,
    pub actor: Actor,
    pub idempotency: Option<Idempotency>,
    pub reply: ReplyTo,
}

/// An effect to run, handed to the effect runner after its intent committed.
#[derive(Debug, Clone)]
pub(crate) struct Dispatch {
    pub tenant: TenantId,
    pub connection: Connection,
    pub effect: Effect,
}

/// What the writer shares with the scheduler, the effect runner and log followers.
#[derive(Debug)]
pub(crate) struct Signals {
    /// The due time (ms) the scheduler sleeps towards; the writer wakes it for anything earlier.
    pub scheduler_next: AtomicU64,
    pub scheduler_wake: Notify,
    /// Set when an effect could not be handed over: the runner rescans the intents.
    pub effects_overflow: AtomicBool,
    pub effects_wake: Notify,
    /// The last committed global sequence, for subscribers.
    pub committed: broadcast::Sender<u64>,
}

pub(crate) struct Writer {
    pub store: Arc<Store>,
    pub rx: mpsc::Receiver<Request>,
    pub clock: Arc<dyn Clock>,
    pub lifecycle: lifecycle::Config,
    pub batch_max: usize,
    pub idempotency_ttl: std::time::Duration,
    pub effects: mpsc::Sender<Dispatch>,
    pub signals: Arc<Signals>,
    pub metrics: Arc<Metrics>,
    /// Policies by tenant, as committed. Loaded on first use.
    pub policies: HashMap<TenantId, Option<Policy>>,
}

type Key = (TenantId, ConnectionId);

/// The state of one batch: decisions see the earlier requests of the same batch through it.
#[derive(Default)]
struct Overlay {
    connections: HashMap<Key, Option<Connection>>,
    policies: HashMap<TenantId, Option<Policy>>,
    keys: HashMap<(TenantId, String), (u64, Reply)>,
}

impl Writer {
    /// Runs until shutdown, or until a failed commit leaves the store's state unknown.
    pub fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut batch = Vec::with_capacity(self.batch_max.min(64));
            batch.push(first);
            while batch.len() < self.batch_max {
                match self.rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if !self.process(batch) {
                break;
            }
        }
        // Anything still queued is answered, never dropped silently.
        self.rx.close();
        while let Ok(request) = self.rx.try_recv() {
            let _ = request.reply.send(Err(Error::Stopped));
        }
    }

    /// Refuses a registration whose assignment (entitlement, identity, account) another
    /// connection holds: committed and not removed by this batch, or registered earlier in it.
    /// The assignment index is what `PATCH ?entitlementId&identityId&accountId` resolves, so it
    /// must name one connection.
    fn check_assignment_free(
        reader: &Reader,
        overlay: &Overlay,
        tenant: &TenantId,
        spec: &ConnectionSpec,
    ) -> Result<(), Error> {
        let same = |c: &Connection| {
            c.spec.entitlement == spec.entitlement
                && c.spec.identity == spec.identity
                && c.spec.account == spec.account
        };
        let committed =
            reader.assignment_holders(tenant, &spec.entitlement, &spec.identity, &spec.account)?;
        let held_committed = committed.into_iter().find(|id| {
            // A holder changed by this batch counts as the batch left it.
            match overlay.connections.get(&(tenant.clone(), *id)) {
                Some(now) => now.as_ref().is_some_and(same),
                None => true,
            }
        });
        let held_in_batch = || {
            overlay.connections.iter().find_map(|((t, id), c)| {
                (t == tenant && c.as_ref().is_some_and(same)).then_some(*id)
            })
        };
        match held_committed.or_else(held_in_batch) {
            Some(existing) if existing != spec.id => Err(Rejection::AssignmentTaken {
                connection: spec.id,
                existing,
            }
            .into()),
            _ => Ok(()),
        }
    }

    fn policy(
        &mut self,
        reader: &Reader,
        overlay: &Overlay,
        tenant: &TenantId,
    ) -> Result<Option<Policy>, Error> {
        if let Some(p) = overlay.policies.get(tenant) {
            return Ok(p.clone());
        }
        if let Some(p) = self.policies.get(tenant) {
            return Ok(p.clone());
        }
        let p = reader.policy(tenant)?;
        self.policies.insert(tenant.clone(), p.clone());
        Ok(p)
    }

    /// Decides, commits and answers one batch. Returns false when the writer must stop.
    fn process(&mut self, batch: Vec<Request>) -> bool {
        let span = info_span!("batch", size = batch.len());
        let _enter = span.enter();
        let now = self.clock.now();
        let mut overlay = Overlay::default();
        let mut batch_out = Batch::new();
        // One snapshot for the whole batch: only this thread writes, and the overlay holds what
        // the batch itself changed, so the snapshot plus the overlay is the current state.
        let reader = match self.store.reader() {
            Ok(r) => r,
            Err(e) => {
                let message = e.to_string();
                for request in batch {
                    let _ = request.reply.send(Err(Error::Storage(message.clone())));
                }
                return true;
            }
        };
        let mut answers: Vec<(ReplyTo, Result<Reply, Error>)> = Vec::with_capacity(batch.len());
        let mut stop = false;
        for request in batch {
            if stop {
                answers.push((request.reply, Err(Error::Stopped)));
                continue;
            }
            match request.op {
                Op::Shutdown => {
                    stop = true;
                    answers.push((request.reply, Ok(Reply::Stopped)));
                    continue;
                }
                Op::Cursor { name, sequence } => {
                    batch_out.set_cursor(name, sequence);
                    answers.push((request.reply, Ok(Reply::Moved)));
                    continue;
                }
                Op::Connection { .. } | Op::Policy { .. } => {}
            }
            let kind = request_kind(&request.op);
            let command_span = match &request.op {
                Op::Connection {
                    tenant, connection, ..
                } => debug_span!("command", kind, %tenant, %connection),
                Op::Policy { tenant, .. } => debug_span!("command", kind, %tenant),
                Op::Cursor { .. } | Op::Shutdown => debug_span!("command", kind),
            };
            let result = command_span
                .in_scope(|| self.decide_one(&reader, &request, now, &mut overlay, &mut batch_out));
            if let Err(e) = &result {
                command_span.in_scope(|| debug!(error = %e, "refused"));
            }
            self.metrics
                .command(request_kind(&request.op), result.is_ok());
            answers.push((request.reply, result));
        }
        let stopped_after_commit = stop;
        if batch_out.is_empty() {
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
            return !stopped_after_commit;
        }
        drop(reader);
        let batch = batch_out;
        let started = Instant::now();
        match self.store.append_batch(&batch) {
            Ok(appended) => {
                let elapsed = started.elapsed();
                self.metrics.commit(batch.entries().len(), elapsed);
                debug!(
                    events = batch.entries().len(),
                    first = appended.first,
                    last = appended.last,
                    ?elapsed,
                    "committed"
                );
                self.policies.extend(overlay.policies);
                for (reply, result) in answers {
                    let _ = reply.send(result);
                }
                self.after_commit(&batch, appended.last);
                !stopped_after_commit
            }
            Err(e) => {
                error!(error = %e, "commit failed; the outcome of the batch is unknown");
                self.metrics.commit_failed();
                let message = e.to_string();
                for (reply, result) in answers {
                    // Refusals changed nothing and stay refusals; everything else is unknown.
                    let answer = match result {
                        Ok(_) => Err(Error::OutcomeUnknown(message.clone())),
                        refused => refused,
                    };
                    let _ = reply.send(answer);
                }
                false
            }
        }
    }

    fn decide_one(
        &mut self,
        reader: &Reader,
        request: &Request,
        now: jitflow_core::time::Timestamp,
        overlay: &mut Overlay,
        batch: &mut Batch,
    ) -> Result<Reply, Error> {
        let tenant = match &request.op {
            Op::Connection { tenant, .. } | Op::Policy { tenant, .. } => tenant.clone(),
            Op::Cursor { .. } | Op::Shutdown => unreachable!("handled by the caller"),
        };
        if let Some(idem) = &request.idempotency {
            let seen = match overlay.keys.get(&(tenant.clone(), idem.key.clone())) {
                Some((fingerprint, reply)) => Some((*fingerprint, reply.clone())),
                None => match reader.idempotency(&tenant, &idem.key, now)? {
                    Some(record) => Some((
                        record.fingerprint,
                        stored_reply(reader, &tenant, &record.result)?,
                    )),
                    None => None,
                },
            };
            if let Some((fingerprint, reply)) = seen {
                return if fingerprint == idem.fingerprint {
                    Ok(reply)
                } else {
                    Err(Error::IdempotencyConflict(idem.key.clone()))
                };
            }
        }
        let current_policy = self.policy(reader, overlay, &tenant)?;
        let policy = current_policy
            .clone()
            .unwrap_or_else(|| Policy::empty(String::new()));
        let ctx = Context {
            now,
            actor: &request.actor,
            policy: &policy,
            config: &self.lifecycle,
        };
        let reply = match &request.op {
            Op::Connection {
                connection,
                command,
                ..
            } => {
                let key = (tenant.clone(), *connection);
                let state = match overlay.connections.get(&key) {
                    Some(s) => s.clone(),
                    None => reader.connection(&tenant, *connection)?,
                };
                if let (None, Command::Register(spec)) = (&state, command) {
                    Self::check_assignment_free(reader, overlay, &tenant, spec)?;
                }
                let events = decide(*connection, state.as_ref(), command, &ctx)?;
                let mut after = state;
                for event in events {
                    after = evolve(after, &event).unwrap_or_else(|e| {
                        panic!("decide produced an event that does not apply: {e}")
                    });
                    batch.push(Entry::Connection {
                        tenant: tenant.clone(),
                        event,
                        after: after.clone(),
                    });
                }
                overlay.connections.insert(key, after.clone());
                Reply::Connection(after.map(Box::new))
            }
            Op::Policy { command, .. } => {
                let event = decide_policy(current_policy.as_ref(), command, &ctx)?;
                let policy = event.policy.clone();
                batch.push(Entry::Policy {
                    tenant: tenant.clone(),
                    event,
                });
                overlay
                    .policies
                    .insert(tenant.clone(), Some(policy.clone()));
                Reply::Policy(policy)
            }
            Op::Cursor { .. } | Op::Shutdown => unreachable!("handled by the caller"),
        };
        if let Some(idem) = &request.idempotency {
            overlay.keys.insert(
                (tenant.clone(), idem.key.clone()),
                (idem.fingerprint, reply.clone()),
            );
            batch.push_key(KeyPut {
                tenant,
                key: idem.key.clone(),
                record: KeyRecord {
                    fingerprint: idem.fingerprint,
                    result: encode_reply(&reply),
                    expires_at: now.saturating_add(self.idempotency_ttl),
                },
            });
        }
        Ok(reply)
    }

    fn after_commit(&self, batch: &Batch, last_sequence: u64) {
        let mut earliest: Option<u64> = None;
        for entry in batch.entries() {
            let Entry::Connection {
                tenant,
                event,
                after,
            } = entry
            else {
                continue;
            };
            for timer in &event.arm {
                let due = timer.due.as_millis();
                earliest = Some(earliest.map_or(due, |e| e.min(due)));
            }
            let Some(connection) = after else { continue };
            for effect in &event.effects {
                let dispatch = Dispatch {
                    tenant: tenant.clone(),
                    connection: connection.clone(),
                    effect: *effect,
                };
                if self.effects.try_send(dispatch).is_err() {
                    // The intent is durable; the runner will find it in the store.
                    self.signals.effects_overflow.store(true, Ordering::SeqCst);
                    self.signals.effects_wake.notify_one();
                }
            }
        }
        if let Some(due) = earliest
            && due < self.signals.scheduler_next.load(Ordering::SeqCst)
        {
            self.signals.scheduler_wake.notify_one();
        }
        if !batch.entries().is_empty() {
            let _ = self.signals.committed.send(last_sequence);
        }
    }
}

fn request_kind(op: &Op) -> &'static str {
    match op {
        Op::Connection { command, .. } => command.name(),
        Op::Policy { .. } => "policy",
        Op::Cursor { .. } => "cursor",
        Op::Shutdown => "shutdown",
    }
}

/// What an idempotency key keeps: the id of the activation the first request touched (16 bytes,
/// big-endian), or nothing. A retry answers with that activation as it stands now.
fn encode_reply(reply: &Reply) -> Vec<u8> {
    let activation = match reply {
        Reply::Connection(c) => c
            .as_deref()
            .and_then(|c| c.activation.as_ref())
            .map(|a| a.id),
        Reply::Activation(a) => Some(a.id),
        Reply::Policy(_) | Reply::Moved | Reply::Stopped => None,
    };
    activation.map_or_else(Vec::new, |id| id.to_bytes().to_vec())
}

/// The answer kept under an idempotency key: the activation it names, as it stands now.
fn stored_reply(reader: &Reader, tenant: &TenantId, result: &[u8]) -> Result<Reply, Error> {
    let bytes: [u8; 16] = result
        .try_into()
        .map_err(|_| Error::Storage(format!("idempotency result of {} bytes", result.len())))?;
    let id = ActivationId::from_bytes(bytes);
    reader
        .activation(tenant, id)?
        .map(Reply::Activation)
        .ok_or_else(|| Error::Storage(format!("activation {id} of an idempotency key is missing")))
}
