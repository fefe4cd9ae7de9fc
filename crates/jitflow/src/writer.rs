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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use jitflow_core::activation::Activation;
use jitflow_core::connection::{Connection, ConnectionSpec};
use jitflow_core::id::{ActivationId, ConnectionId, RequestItemId, TenantId};
use jitflow_core::lifecycle::{
    self, Actor, Command, Context, Effect, PolicyCommand, Rejection, decide_policy, decide_states,
};
use jitflow_core::policy::Policy;
use jitflow_core::request::{self, AccessRequestConfig, Item, ItemStatus, RequestType};
use jitflow_store::Store;
use jitflow_store::batch::{Batch, Entry, MAX_BATCH_ENTRIES};
use jitflow_store::idempotency::{Idempotency as KeyRecord, KeyPut};
use jitflow_store::read::Reader;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tracing::{debug, debug_span, error, info_span, warn};

use crate::clock::Clock;
use crate::error::Error;
use crate::heal::{self, Outage};
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
    /// Commands for access request items, decided together and committed in one batch: all
    /// or nothing (a submission's items, or one command for one item).
    Request {
        tenant: TenantId,
        /// Whether the caller is an administrator (see `request::Context::admin`).
        admin: bool,
        commands: Vec<(RequestItemId, request::Command)>,
    },
    /// Replace the `view` fields of a tenant's access request config, merged with the config
    /// as the batch sees it (validated by the core's `config::decide`).
    RequestConfig {
        tenant: TenantId,
        config: Box<AccessRequestConfig>,
        view: request::config::View,
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
    /// The items after their commands, in command order.
    Items(Vec<Item>),
    /// The access request config after the change.
    RequestConfig(Box<AccessRequestConfig>),
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

/// The one door to the writer: a cheap clone of its bounded queue's sender. The engine's API,
/// the scheduler, the effect runner and the notifier all send through it, so a request is
/// built in one place and every way of waiting (or not) for room and for the answer is named.
#[derive(Debug, Clone)]
pub(crate) struct WriterHandle {
    queue: mpsc::Sender<Request>,
}

/// The answer to a queued request, once the writer has committed (or refused) it.
pub(crate) type Answer = oneshot::Receiver<Result<Reply, Error>>;

impl WriterHandle {
    /// A bounded queue of `capacity` requests and its handle; the writer reads the receiver.
    pub(crate) fn channel(capacity: usize) -> (WriterHandle, mpsc::Receiver<Request>) {
        let (queue, rx) = mpsc::channel(capacity);
        (WriterHandle { queue }, rx)
    }

    fn request(op: Op, actor: Actor, idempotency: Option<Idempotency>) -> (Request, Answer) {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            op,
            actor,
            idempotency,
            reply,
        };
        (request, answer)
    }

    /// Queues `op` without waiting for room: [`Error::Busy`] when the queue is full (the
    /// caller's backpressure), [`Error::Stopped`] when the writer is gone.
    pub(crate) fn try_submit(
        &self,
        op: Op,
        actor: Actor,
        idempotency: Option<Idempotency>,
    ) -> Result<Answer, Error> {
        let (request, answer) = Self::request(op, actor, idempotency);
        match self.queue.try_send(request) {
            Ok(()) => Ok(answer),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Error::Busy(self.queue.max_capacity())),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Stopped),
        }
    }

    /// Queues `op` as the system, waiting for room (the engine's own work: timers, effect
    /// results, shutdown); [`Error::Stopped`] when the writer is gone.
    pub(crate) async fn submit(&self, op: Op) -> Result<Answer, Error> {
        let (request, answer) = Self::request(op, Actor::System, None);
        self.queue.send(request).await.map_err(|_| Error::Stopped)?;
        Ok(answer)
    }

    /// [`WriterHandle::submit`], then waits for the answer.
    pub(crate) async fn call(&self, op: Op) -> Result<Reply, Error> {
        self.submit(op).await?.await.map_err(|_| Error::Stopped)?
    }

    /// Queues `op` as the system if there is room, not waiting for its answer; whether it was
    /// queued. For work a later request covers (a consumer's cursor).
    pub(crate) fn offer(&self, op: Op) -> bool {
        let (request, _answer) = Self::request(op, Actor::System, None);
        self.queue.try_send(request).is_ok()
    }

    /// Requests in the queue now.
    pub(crate) fn queued(&self) -> usize {
        self.queue
            .max_capacity()
            .saturating_sub(self.queue.capacity())
    }
}

/// An effect to run, handed to the effect runner after its intent committed.
#[derive(Debug, Clone)]
pub(crate) enum Dispatch {
    /// An effect of a connection's lifecycle.
    Connection {
        tenant: TenantId,
        connection: Box<Connection>,
        effect: Effect,
    },
    /// An effect of an access request item.
    Item {
        tenant: TenantId,
        item: Box<Item>,
        effect: request::Effect,
    },
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
    /// Whether the writer can write (see `crate::heal`).
    pub health: crate::heal::Shared,
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
    /// Requests that did not fit the last batch: they start the next one, in order.
    pub carry: Vec<Request>,
    /// Set while a write failed and the store has not written again (see `crate::heal`).
    pub outage: Option<Outage>,
}

type Key = (TenantId, ConnectionId);

/// How often an idle writer with rows in the hot layer looks for a due checkpoint. Short
/// against the checkpoint interval (seconds), long enough to cost nothing while idle.
const CHECKPOINT_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The most events `request::decide` makes of one command: a submission is submitted, approved
/// and started (or cancelled as a duplicate); approve and close add at most one more event.
const MAX_ITEM_EVENTS_PER_COMMAND: usize = 3;

/// The most earlier items one request op supersedes (one event each). The duplicate rule keeps
/// one granted item per access in practice; more are left to their own course.
const MAX_SUPERSEDED: usize = 8;

/// The state of one batch: decisions see the earlier requests of the same batch through it.
#[derive(Default)]
struct Overlay {
    connections: HashMap<Key, Option<Connection>>,
    items: HashMap<(TenantId, RequestItemId), Item>,
    policies: HashMap<TenantId, Option<Policy>>,
    /// Access request configs changed by the batch (`None`: never stored, the defaults).
    request_configs: HashMap<TenantId, Option<AccessRequestConfig>>,
    keys: HashMap<(TenantId, String), (u64, Reply)>,
}

/// Wakes the writer thread when its queue has a request.
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The next request (`Some(None)` once every sender is gone), or `None` after `timeout`
/// without one. tokio's queue has a blocking receive but none with a timeout: this polls it
/// with a waker that unparks this thread, and parks until then or the deadline. No runtime
/// is needed, so it works whatever runtime (if any) the engine's tasks run on.
fn recv_timeout(
    rx: &mut mpsc::Receiver<Request>,
    timeout: std::time::Duration,
) -> Option<Option<Request>> {
    let deadline = Instant::now() + timeout;
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(received) = rx.poll_recv(&mut cx) {
            return Some(received);
        }
        // Spurious wake-ups only loop: the queue is polled again.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::park_timeout(left);
    }
}

impl Writer {
    /// Runs until shutdown. A failed write does not stop it: it heals (see `crate::heal`).
    pub fn run(mut self) {
        loop {
            let mut batch = std::mem::take(&mut self.carry);
            if batch.is_empty() {
                match self.next_request() {
                    Some(first) => batch.push(first),
                    None => break,
                }
            }
            while batch.len() < self.batch_max {
                match self.rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if !self.heal() {
                if !self.refuse(batch) {
                    break;
                }
                continue;
            }
            if !self.process(batch) {
                break;
            }
            self.checkpoint_if_due();
        }
        // A clean stop leaves the layer checkpointed, so the next open replays nothing.
        if !self.store.is_poisoned()
            && let Err(e) = self.store.checkpoint(Some(self.clock.now()))
        {
            error!(error = %e, "the checkpoint at shutdown failed; the next open replays the log");
        }
        // Anything still queued is answered, never dropped silently.
        self.rx.close();
        while let Ok(request) = self.rx.try_recv() {
            let _ = request.reply.send(Err(Error::Stopped));
        }
    }

    /// Waits for the next request. While the hot layer holds rows, it wakes every
    /// `CHECKPOINT_POLL` to write a checkpoint once one is due, so an idle engine still
    /// checkpoints within the store's interval.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            if self.store.stats().layer_entries == 0 && self.outage.is_none() {
                return self.rx.blocking_recv();
            }
            if self.outage.is_some() {
                // Heals without waiting for a request, so that an idle engine comes back (and
                // its overdue timers fire) as soon as the disk has space again.
                self.heal();
            } else if self.store.checkpoint_due() {
                self.checkpoint_if_due();
            }
            // Waits for a request, but at most `CHECKPOINT_POLL`: a request is taken the moment
            // it arrives (a sleep here would delay every request by up to the poll interval
            // while the layer holds rows, which it does for seconds after any write).
            if let Some(received) = recv_timeout(&mut self.rx, CHECKPOINT_POLL) {
                return received;
            }
        }
    }

    /// Writes a checkpoint if one is due (`Store::checkpoint_due`), purging expired
    /// idempotency keys with it. A failed checkpoint changes nothing committed; the writer
    /// moves to its outage state and heals.
    fn checkpoint_if_due(&mut self) {
        if self.outage.is_some() || !self.store.checkpoint_due() {
            return;
        }
        let started = Instant::now();
        match self.store.checkpoint(Some(self.clock.now())) {
            Ok(rows) => debug!(rows, elapsed = ?started.elapsed(), "checkpoint written"),
            Err(e) => Outage::failed(&mut self.outage, &self.signals.health, heal::cause(&e)),
        }
    }

    /// While down, tries to heal once the backoff allows: reopens the store in place and
    /// proves it writes with a checkpoint (which always commits). Returns whether the writer
    /// is up.
    fn heal(&mut self) -> bool {
        let Some(outage) = &self.outage else {
            return true;
        };
        if !outage.due() {
            return false;
        }
        if self.store.is_poisoned()
            && let Err(e) = self.reopen()
        {
            let cause = format!("the store cannot be reopened: {e}");
            Outage::failed(&mut self.outage, &self.signals.health, cause);
            return false;
        }
        match self.store.checkpoint(Some(self.clock.now())) {
            Ok(_) => {
                Outage::recovered(&mut self.outage, &self.signals.health);
                // Timers that fell due and effect results refused while down run now.
                self.signals.scheduler_wake.notify_one();
                self.signals.effects_overflow.store(true, Ordering::SeqCst);
                self.signals.effects_wake.notify_one();
                true
            }
            Err(e) => {
                Outage::failed(&mut self.outage, &self.signals.health, heal::cause(&e));
                false
            }
        }
    }

    /// One attempt to reopen the poisoned store in place, counted. On success the policy
    /// cache is dropped: the reopened store may hold a newer policy (a batch whose commit
    /// failed may be durable after all), and the cache is cheap to fill again.
    fn reopen(&mut self) -> Result<jitflow_store::Reopened, jitflow_store::open::Error> {
        self.signals
            .health
            .reopen_attempts
            .fetch_add(1, Ordering::Relaxed);
        let reopened = self.store.reopen()?;
        self.policies.clear();
        Ok(reopened)
    }

    /// Answers a batch while down: every request is refused with the outage's cause (nothing
    /// is changed). Returns `false` when the batch asked the writer to stop.
    fn refuse(&mut self, batch: Vec<Request>) -> bool {
        let cause = self
            .outage
            .as_ref()
            .map_or_else(String::new, |o| o.cause.clone());
        let mut stop = false;
        for request in batch {
            let answer = match request.op {
                Op::Shutdown => {
                    stop = true;
                    Ok(Reply::Stopped)
                }
                _ if stop => Err(Error::Stopped),
                _ => {
                    self.metrics.command(request_kind(&request.op), false);
                    Err(Error::Unavailable(cause.clone()))
                }
            };
            let _ = request.reply.send(answer);
        }
        if stop {
            for request in self.carry.drain(..) {
                let _ = request.reply.send(Err(Error::Stopped));
            }
        }
        !stop
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

    /// The tenant's access request config as the batch sees it (`None`: never stored). Read at
    /// decide time, so a submission is checked against every config change committed or
    /// decided before it.
    fn request_config(
        reader: &Reader,
        overlay: &Overlay,
        tenant: &TenantId,
    ) -> Result<Option<AccessRequestConfig>, Error> {
        match overlay.request_configs.get(tenant) {
            Some(c) => Ok(c.clone()),
            None => Ok(reader.access_request_config(tenant)?),
        }
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
                    let _ = request.reply.send(Err(Error::Unavailable(message.clone())));
                }
                return true;
            }
        };
        let mut answers: Vec<(ReplyTo, Result<Reply, Error>)> = Vec::with_capacity(batch.len());
        let mut stop = false;
        let mut requests = batch.into_iter();
        while let Some(request) = requests.next() {
            if let Op::Request { commands, .. } = &request.op
                && !batch_out.is_empty()
                && batch_out.len() + commands.len() * MAX_ITEM_EVENTS_PER_COMMAND + MAX_SUPERSEDED
                    > MAX_BATCH_ENTRIES
            {
                // It might not fit: it and everything after it start the next batch, in order.
                self.carry.push(request);
                self.carry.extend(requests.by_ref());
                break;
            }
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
                Op::Connection { .. }
                | Op::Policy { .. }
                | Op::Request { .. }
                | Op::RequestConfig { .. } => {}
            }
            let kind = request_kind(&request.op);
            let command_span = match &request.op {
                Op::Connection {
                    tenant, connection, ..
                } => debug_span!("command", kind, %tenant, %connection),
                Op::Policy { tenant, .. }
                | Op::Request { tenant, .. }
                | Op::RequestConfig { tenant, .. } => {
                    debug_span!("command", kind, %tenant)
                }
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
        let planned_last = self.store.stats().sequence + batch.len() as u64;
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
                if stopped_after_commit {
                    for request in self.carry.drain(..) {
                        let _ = request.reply.send(Err(Error::Stopped));
                    }
                }
                !stopped_after_commit
            }
            Err(e) => {
                self.metrics.commit_failed();
                let cause = heal::cause(&e);
                Outage::failed(&mut self.outage, &self.signals.health, cause.clone());
                // A fenced write (a shared store's lease passed to another node) was refused
                // before anything was written: a definite "not committed". Otherwise learn the
                // outcome now if the store reopens at once (a fault that passed, or a full
                // disk that still lets redb recover): callers then get a definite answer.
                let durable = if matches!(e, jitflow_store::append::Error::Fenced { .. }) {
                    Some(false)
                } else {
                    self.reopen()
                        .ok()
                        .map(|reopened| reopened.sequence >= planned_last)
                };
                debug!(?durable, %cause, "commit failed");
                for (reply, result) in answers {
                    // Refusals changed nothing and stay refusals.
                    let answer = match (result, durable) {
                        (Ok(reply), Some(true)) => Ok(reply),
                        (Ok(_), Some(false)) => Err(Error::Unavailable(cause.clone())),
                        (Ok(_), None) => Err(Error::OutcomeUnknown(cause.clone())),
                        (refused, _) => refused,
                    };
                    let _ = reply.send(answer);
                }
                if durable == Some(true) {
                    self.after_commit(&batch, planned_last);
                }
                if stopped_after_commit {
                    for request in self.carry.drain(..) {
                        let _ = request.reply.send(Err(Error::Stopped));
                    }
                }
                !stopped_after_commit
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
            Op::Connection { tenant, .. }
            | Op::Policy { tenant, .. }
            | Op::Request { tenant, .. }
            | Op::RequestConfig { tenant, .. } => tenant.clone(),
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
                // One evolve per event: `decide_states` hands back the state each event leaves.
                let decided = decide_states(*connection, state.as_ref(), command, &ctx)?;
                let mut after = state;
                for (event, next) in decided {
                    after = next;
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
            Op::Request {
                admin, commands, ..
            } => {
                let items = self.decide_items(
                    reader,
                    &tenant,
                    *admin,
                    commands,
                    (&ctx, &policy),
                    overlay,
                    batch,
                )?;
                Reply::Items(items)
            }
            Op::RequestConfig { config, view, .. } => {
                let current = Self::request_config(reader, overlay, &tenant)?;
                let merged = current.clone().unwrap_or_default().with(*view, config);
                let event = request::config::decide(current.as_ref(), merged, now, &request.actor)?;
                let config = event.config.clone();
                batch.push(Entry::RequestConfig {
                    tenant: tenant.clone(),
                    event,
                });
                overlay
                    .request_configs
                    .insert(tenant.clone(), Some(config.clone()));
                Reply::RequestConfig(Box::new(config))
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

    /// The duplicate rule's input for a submission of `object` for `identity`, from the
    /// writer's current view: the committed open items as this batch left them, the items this
    /// batch submitted (`local`: the op being decided), and the entitlement connection as
    /// committed or changed by the batch. Deciding with it in the writer is what makes exactly
    /// one of two racing identical submissions survive.
    fn current_existing(
        reader: &Reader,
        overlay: &Overlay,
        local: &HashMap<RequestItemId, Item>,
        tenant: &TenantId,
        (identity, object): (&jitflow_core::id::IdentityId, &request::ObjectRef),
    ) -> Result<request::Existing, Error> {
        let current = |id: RequestItemId| {
            local
                .get(&id)
                .or_else(|| overlay.items.get(&(tenant.clone(), id)))
        };
        let same = |i: &Item| i.spec.requested_for == *identity && i.spec.object == *object;
        let mut open: BTreeMap<RequestItemId, Item> = BTreeMap::new();
        for committed in reader.open_items(tenant, identity, object)? {
            let now = current(committed.id()).cloned().unwrap_or(committed);
            open.insert(now.id(), now);
        }
        let batch = (overlay.items.iter())
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, i)| i)
            .chain(local.values());
        for item in batch.filter(|i| same(i)) {
            open.insert(item.id(), item.clone());
        }
        open.retain(|_, i| !i.status.is_terminal());
        let registered = match crate::requests::entitlement_connection(identity, object) {
            Some(c) => match overlay.connections.get(&(tenant.clone(), c)) {
                Some(now) => now.is_some(),
                None => reader.connection(tenant, c)?.is_some(),
            },
            None => false,
        };
        let open: Vec<Item> = open.into_values().collect();
        Ok(crate::requests::existing_of(&open, registered))
    }

    /// Decides commands for access request items against one state, all or nothing: the first
    /// refusal refuses them all and nothing is pushed. Returns the items after their commands.
    #[expect(
        clippy::too_many_arguments,
        reason = "the writer's per-batch state, passed down"
    )]
    fn decide_items(
        &self,
        reader: &Reader,
        tenant: &TenantId,
        admin: bool,
        commands: &[(RequestItemId, request::Command)],
        (ctx, policy): (&Context<'_>, &Policy),
        overlay: &mut Overlay,
        batch: &mut Batch,
    ) -> Result<Vec<Item>, Error> {
        let mut local: HashMap<RequestItemId, Item> = HashMap::new();
        let mut staged = Vec::new();
        let mut order = Vec::with_capacity(commands.len());
        // The callers' commands, then the supersedes they cause (which never refuse the op).
        let mut work: std::collections::VecDeque<(RequestItemId, request::Command, bool)> =
            commands
                .iter()
                .map(|(id, c)| (*id, c.clone(), true))
                .collect();
        let mut superseded = 0;
        let rules = Self::request_config(reader, overlay, tenant)?.unwrap_or_default();
        while let Some((id, mut command, asked)) = work.pop_front() {
            if let request::Command::Submit { spec, existing, .. } = &mut command {
                // Whatever the caller read before the writer may be stale: decide with now.
                let what = (&spec.requested_for, &spec.object);
                *existing = Self::current_existing(reader, overlay, &local, tenant, what)?;
            }
            let (id, command) = (&id, &command);
            let state = match local.get(id) {
                Some(i) => Some(i.clone()),
                None => match overlay.items.get(&(tenant.clone(), *id)) {
                    Some(i) => Some(i.clone()),
                    None => reader.request_item(tenant, *id)?,
                },
            };
            let spec = match (&state, command) {
                (Some(i), _) => Some(&i.spec),
                (None, request::Command::Submit { spec, .. }) => Some(&**spec),
                (None, _) => None,
            };
            let running_activation = match spec.and_then(crate::requests::item_connection) {
                Some(c) => {
                    let connection = match overlay.connections.get(&(tenant.clone(), c)) {
                        Some(c) => c.clone(),
                        None => reader.connection(tenant, c)?,
                    };
                    connection.and_then(|c| c.running_activation().map(|a| a.id))
                }
                None => None,
            };
            let rctx = request::Context {
                now: ctx.now,
                actor: ctx.actor,
                admin,
                policy,
                config: ctx.config,
                running_activation,
            };
            let events = match request::decide_states(*id, state.as_ref(), command, &rctx) {
                Ok(events) => events,
                Err(e) if asked => return Err(e.into()),
                Err(e) => {
                    debug!(error = %e, item = %id, "supersede not applied");
                    continue;
                }
            };
            // The tenant's access request config as of this decision, after the item's own
            // rules and rights: a PUT committed or decided before a submission in flight
            // applies to it.
            match (&state, command, spec) {
                (None, request::Command::Submit { .. }, Some(spec)) if asked => {
                    let path = format!("item {id}");
                    rules
                        .check_item(&path, spec, admin, ctx.now)
                        .map_err(|r| request::Rejection::Invalid(r.into()))?;
                }
                (Some(_), request::Command::Reject { comment }, Some(spec)) if asked => {
                    rules
                        .check_denial(spec, comment.as_deref())
                        .map_err(|r| request::Rejection::Invalid(r.into()))?;
                }
                _ => {}
            }
            let status_before = state.as_ref().map(|i| i.status);
            // One evolve per event: `decide_states` hands back the state each event leaves.
            let mut after = state;
            for (event, next) in events {
                staged.push((event, next.clone()));
                after = Some(next);
            }
            let after = after.expect("a decided item exists");
            let took_over = match after.status {
                ItemStatus::Granted => true,
                ItemStatus::Removed => after.spec.request_type == RequestType::Revoke,
                _ => false,
            };
            if took_over && status_before != Some(after.status) {
                // A later grant of the same access takes it over, and a revoke's removal ends
                // it: the earlier granted items end without removing anything, so that their
                // sunsets no longer apply and they no longer count as assigned.
                let spec = &after.spec;
                let siblings = reader.open_items(tenant, &spec.requested_for, &spec.object)?;
                for sibling in siblings.iter().filter(|i| i.id() != *id) {
                    let current = local
                        .get(&sibling.id())
                        .or_else(|| overlay.items.get(&(tenant.clone(), sibling.id())))
                        .unwrap_or(sibling);
                    if current.status == ItemStatus::Granted && superseded < MAX_SUPERSEDED {
                        superseded += 1;
                        let by = request::Command::Supersede { by: *id };
                        work.push_back((sibling.id(), by, false));
                    }
                }
            }
            local.insert(*id, after);
            if asked {
                order.push(*id);
            }
        }
        for (event, after) in staged {
            batch.push(Entry::Request {
                tenant: tenant.clone(),
                event,
                after: Box::new(after),
            });
        }
        let items = order.iter().map(|id| local[id].clone()).collect();
        overlay
            .items
            .extend(local.into_iter().map(|(id, i)| ((tenant.clone(), id), i)));
        Ok(items)
    }

    fn after_commit(&self, batch: &Batch, last_sequence: u64) {
        let mut earliest: Option<u64> = None;
        let mut arm = |due: u64| earliest = Some(earliest.map_or(due, |e: u64| e.min(due)));
        for entry in batch.entries() {
            let dispatches: Vec<Dispatch> = match entry {
                Entry::Connection {
                    tenant,
                    event,
                    after,
                } => {
                    event.arm.iter().for_each(|t| arm(t.due.as_millis()));
                    if event.notice(self.lifecycle.stuck_after) == Some(lifecycle::Notice::Stuck) {
                        warn!(
                            %tenant,
                            connection = %event.connection,
                            "a revoke keeps failing: the access is stuck on the target and \
                             needs a person (revokes keep being retried, at the capped backoff)"
                        );
                    }
                    let Some(connection) = after else { continue };
                    (event.effects.iter())
                        .map(|effect| Dispatch::Connection {
                            tenant: tenant.clone(),
                            connection: Box::new(connection.clone()),
                            effect: *effect,
                        })
                        .collect()
                }
                Entry::Request {
                    tenant,
                    event,
                    after,
                } => {
                    event.arm.iter().for_each(|t| arm(t.due.as_millis()));
                    if event.notice(after, self.lifecycle.stuck_after)
                        == Some(request::Notice::Stuck)
                    {
                        warn!(
                            %tenant,
                            item = %event.item,
                            "an access request item's removal keeps failing: the access is \
                             stuck on the target and needs a person"
                        );
                    }
                    (event.effects.iter())
                        .map(|effect| Dispatch::Item {
                            tenant: tenant.clone(),
                            item: after.clone(),
                            effect: *effect,
                        })
                        .collect()
                }
                Entry::Policy { .. } | Entry::RequestConfig { .. } => continue,
            };
            for dispatch in dispatches {
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
        Op::Request { commands, .. } => commands.first().map_or("request", |(_, c)| c.name()),
        Op::RequestConfig { .. } => "request_config",
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
        Reply::Policy(_)
        | Reply::Items(_)
        | Reply::RequestConfig(_)
        | Reply::Moved
        | Reply::Stopped => None,
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

#[cfg(test)]
mod tests {
    //! The writer's decisions within and across batches, driven directly (no threads), so that
    //! what shares a batch is chosen by the test, not by timing.

    use jitflow_core::id::{AccessRequestId, IdentityId, ObjectId};
    use jitflow_core::request::submit::{ObjectKind, ObjectRef, RequestedItem};
    use jitflow_core::request::{
        ApprovalStep, Command as ItemCommand, Duplicate, Existing, ItemSpec, Submission,
        validate_submit,
    };
    use jitflow_core::time::Timestamp;

    use super::*;
    use crate::clock::ManualClock;

    const NOW: u64 = 1_800_000_000_000;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn dave() -> Actor {
        Actor::Identity(IdentityId::parse("dave").unwrap())
    }

    /// A writer over a new store in `dir`; its effect hand-offs go nowhere (the store keeps the
    /// intents).
    fn writer(dir: &tempfile::TempDir) -> Writer {
        let store = Store::open(dir.path().join("w.redb"), Default::default()).unwrap();
        let (_tx, rx) = mpsc::channel(4);
        let (effects, _) = mpsc::channel(64);
        let (committed, _) = broadcast::channel(4);
        Writer {
            store: Arc::new(store),
            rx,
            clock: Arc::new(ManualClock::new(Timestamp::from_millis(NOW).unwrap())),
            lifecycle: crate::Config::default().lifecycle(0),
            batch_max: 64,
            idempotency_ttl: std::time::Duration::from_secs(60),
            effects,
            signals: Arc::new(Signals {
                scheduler_next: AtomicU64::new(0),
                scheduler_wake: Notify::new(),
                effects_overflow: AtomicBool::new(false),
                effects_wake: Notify::new(),
                committed,
                health: Default::default(),
            }),
            metrics: Arc::new(Metrics::default()),
            policies: HashMap::new(),
            carry: Vec::new(),
            outage: None,
        }
    }

    /// The one item of a request `n` granting dave the entitlement `auditors`.
    fn spec(n: u128) -> ItemSpec {
        let submission = Submission {
            request_type: RequestType::Grant,
            requested_for: Some(vec![IdentityId::parse("dave").unwrap()]),
            requested_items: Some(vec![RequestedItem {
                object: Some(ObjectRef {
                    kind: ObjectKind::Entitlement,
                    id: ObjectId::parse("auditors").unwrap(),
                }),
                ..Default::default()
            }]),
            requested_for_with_items: None,
            client_metadata: Default::default(),
        };
        let now = Timestamp::from_millis(NOW).unwrap();
        let requester = IdentityId::parse("dave").unwrap();
        let specs = validate_submit(
            AccessRequestId::from_u128(n),
            &submission,
            &requester,
            false,
            &AccessRequestConfig::default(),
            now,
            |_, _| Existing::default(),
        )
        .unwrap();
        specs.into_iter().next().unwrap()
    }

    /// A submission as the engine queues it: `existing` is whatever the caller read before,
    /// here nothing (a stale read).
    fn submit(spec: &ItemSpec) -> ItemCommand {
        ItemCommand::Submit {
            spec: Box::new(spec.clone()),
            approval: ApprovalStep::Auto,
            existing: Existing::default(),
        }
    }

    fn request(
        commands: Vec<(RequestItemId, ItemCommand)>,
    ) -> (Request, oneshot::Receiver<Result<Reply, Error>>) {
        let (reply, answer) = oneshot::channel();
        let op = Op::Request {
            tenant: tenant(),
            admin: false,
            commands,
        };
        let request = Request {
            op,
            actor: dave(),
            idempotency: None,
            reply,
        };
        (request, answer)
    }

    fn answered(mut answer: oneshot::Receiver<Result<Reply, Error>>) -> Item {
        match answer.try_recv() {
            Ok(Ok(Reply::Items(items))) => items.into_iter().next().unwrap(),
            other => panic!("expected items, got {other:?}"),
        }
    }

    fn stored(w: &Writer, id: RequestItemId) -> Item {
        let reader = w.store.reader().unwrap();
        reader.request_item(&tenant(), id).unwrap().unwrap()
    }

    fn assert_verified(w: &Writer) {
        let report = w.store.verify().unwrap();
        assert!(report.is_clean(), "{:#?}", report.differences);
    }

    #[test]
    fn of_two_identical_submissions_in_one_batch_exactly_one_survives() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir);
        let (a, b) = (spec(1), spec(2));
        let (first, first_answer) = request(vec![(a.id, submit(&a))]);
        let (second, second_answer) = request(vec![(b.id, submit(&b))]);
        assert!(w.process(vec![first, second]));
        let (first, second) = (answered(first_answer), answered(second_answer));
        assert_eq!(first.status, ItemStatus::Granting);
        assert_eq!(second.status, ItemStatus::Cancelled);
        let duplicate = second.cancellation.as_ref().and_then(|c| c.duplicate);
        assert_eq!(duplicate, Some(Duplicate::InProgress(a.id)));
        assert_eq!(stored(&w, b.id), second, "the answer is what was committed");
        assert_verified(&w);
    }

    #[test]
    fn a_submission_decided_after_an_identical_one_committed_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir);
        let (a, b) = (spec(1), spec(2));
        // Both callers read "nothing exists" before either reached the writer.
        let (first, first_answer) = request(vec![(a.id, submit(&a))]);
        let (second, second_answer) = request(vec![(b.id, submit(&b))]);
        assert!(w.process(vec![first]));
        assert_eq!(answered(first_answer).status, ItemStatus::Granting);
        assert!(w.process(vec![second]));
        let second = answered(second_answer);
        assert_eq!(second.status, ItemStatus::Cancelled);
        let duplicate = second.cancellation.as_ref().and_then(|c| c.duplicate);
        assert_eq!(duplicate, Some(Duplicate::InProgress(a.id)));
        assert_verified(&w);
    }

    #[test]
    fn the_later_of_two_grants_in_one_batch_supersedes_the_earlier() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(&dir);
        let (a, b) = (spec(1), spec(2));
        // Two items for the same access both granting, as a store written before the writer
        // applied the duplicate rule could hold: committed straight through the store.
        let now = Timestamp::from_millis(NOW).unwrap();
        let policy = Policy::empty(String::new());
        let ctx = request::Context {
            now,
            actor: &dave(),
            admin: false,
            policy: &policy,
            config: &w.lifecycle,
            running_activation: None,
        };
        let mut batch = Batch::new();
        for spec in [&a, &b] {
            let mut item = None;
            for event in request::decide(spec.id, None, &submit(spec), &ctx).unwrap() {
                let after = request::evolve(item, &event).unwrap();
                item = Some(after.clone());
                batch.push(Entry::Request {
                    tenant: tenant(),
                    event,
                    after: Box::new(after),
                });
            }
            assert_eq!(item.unwrap().status, ItemStatus::Granting);
        }
        w.store.append_batch(&batch).unwrap();
        // Both grants succeed in one batch, `b`'s result after `a`'s.
        let succeeded = ItemCommand::GrantSucceeded { attempt: 1 };
        let (first, first_answer) = request(vec![(a.id, succeeded.clone())]);
        let (second, second_answer) = request(vec![(b.id, succeeded)]);
        assert!(w.process(vec![first, second]));
        assert_eq!(answered(first_answer).status, ItemStatus::Granted);
        assert_eq!(answered(second_answer).status, ItemStatus::Granted);
        let earlier = stored(&w, a.id);
        assert_eq!(earlier.status, ItemStatus::Superseded);
        assert!(earlier.removal.is_none(), "superseded, not removed");
        assert_eq!(stored(&w, b.id).status, ItemStatus::Granted);
        assert_verified(&w);
    }
}
