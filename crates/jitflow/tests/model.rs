//! Model-based test of the engine (issue 14's "real engine model"), with
//! `proptest-state-machine`.
//!
//! A reference model of a few connections, written here independently of `jitflow-core` (it
//! never calls `decide` or `evolve`), generates random commands and predicts the engine's exact
//! answer to each and every state that follows. The commands: register and remove connections,
//! activate (with or without minutes, in and out of the policy's range), extend, deactivate,
//! change a connection's type (JIT, STANDING, NA), replace the policy (periods, extensions,
//! warning lead; some invalid), idempotency keys on the signals (replays, conflicts, keys that
//! expire, a client sending its last keyed signal again), two signals sent at once (the writer
//! may decide them in one batch), advance the manual clock (small and large steps, exactly to
//! the next due time and one millisecond before it), script the target to fail the next grants
//! or revokes of a connection (transiently or for good), make the workflow's validation refuse,
//! hold validations, grants or revokes at the target (so that they are seen in flight, and
//! deactivate meets a validation or a grant in flight), and restart the engine on the same store
//! (held calls are lost, as in a crash, and run again with the same keys). Besides random ones,
//! some commands are aimed at what the state makes interesting (extend or retype a connection
//! that holds access, deactivate one whose access moves). Half the cases run the store with a
//! checkpoint after every batch, so reads come from the checkpointed tables as well as from the
//! hot layer.
//!
//! After each command the engine is settled: the test waits until no effect is pending except
//! calls held at the target and no timer is due on the manual clock. Retries are timed by the
//! manual clock (`retry_at` in the state, fired by the scheduler), so nothing moves between
//! commands, and the model knows every due time but a retry's: its jitter comes from the
//! activation id, which the engine draws at random. The model keeps the backoff's bounds
//! (half the nominal delay to all of it) and never stops the clock inside them: an advance that
//! would land there goes on to the bound's end, where the retry has certainly fired. One call
//! is left to timing, and not compared: the validation of an activation deactivated before that
//! validation reached the target (see `Model::unsure`).
//!
//! Checked at every step:
//! - the answer: `Ok` with the activation (every field: id, status, times, expiry, warning,
//!   extensions, try, retry time within its bounds, errors) or the connection as the model
//!   predicts, or the exact error (`Rejected` with the exact `Rejection`, `IdempotencyConflict`,
//!   `PolicyRejected`); anything else fails, storage errors and unknown outcomes included;
//! - every connection read through the engine equals the model's (state, type, JIT times,
//!   version, who changed the state, the latest activation, a standing revoke);
//! - what the target holds, and every call it saw (validate, grant, revoke; per connection, in
//!   order, with the activation, the try and the manual clock's time) equal the model's.
//!
//! At the end, a drain: the target recovers, STANDING and NA connections become JIT again, and
//! the clock moves to each next due time until nothing is left. Then every connection is at
//! rest, the target holds nothing, every activation read by id equals the model's and has
//! ended, no activation that ended by expiry was revoked before its expiry (the revoke times
//! the target saw against each expiry), and `Engine::verify` is clean (also after each restart).
//!
//! Cases: `PROPTEST_CASES` (default [`DEFAULT_CASES`], about half a minute in a debug build on
//! two cores), of up to [`MAX_STEPS`] commands. A failure is shrunk for at most
//! [`SHRINK_SECONDS`] and saved in `tests/model.proptest-regressions` (proptest's default), whose
//! cases run first next time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{START, Storage, caller, conn, spec};
use jitflow::clock::{Clock, ManualClock};
use jitflow::hooks::{
    BoxFuture, EffectRequest, ProvisionError, Provisioner, ValidationRequest, Validator,
};
use jitflow::{Config, Engine, Error};
use jitflow_core::activation::{Activation, ActivationStatus, EndReason};
use jitflow_core::connection::{
    Connection, ConnectionState, ConnectionType, JitTimes, StandingRevoke,
};
use jitflow_core::id::{ActivationId, ConnectionId};
use jitflow_core::lifecycle::{Actor, Effect, PolicyRejection, Rejection};
use jitflow_core::policy::{self, MAX_PERIOD_MINS, PatchPath, Policy};
use jitflow_core::time::{Minutes, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use tokio::sync::watch;

/// Connections in play (`common::conn(0..CONNS)`).
const CONNS: usize = 3;
/// Idempotency keys in play.
const KEYS: usize = 2;
/// Cases when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 64;
/// The most commands of one case (before the drain).
const MAX_STEPS: usize = 40;
/// How long a failure is shrunk.
const SHRINK_SECONDS: u32 = 120;
/// How long the engine may take to settle after one command, in real time.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
const MINUTE: u64 = 60_000;

/// The engine's settings: `common::config()` (3 grant tries, stuck after 3 revoke tries,
/// retries 1 s to 30 s, a 5 minute warning lead), idempotency keys kept an hour, and calls that
/// may wait at the target (held) as long as a case runs.
fn settings() -> Config {
    Config {
        idempotency_ttl: Duration::from_secs(3600),
        effect_timeout: Duration::from_secs(600),
        ..common::config()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).expect("short")
}

fn ts(millis: u64) -> Timestamp {
    Timestamp::from_millis(millis).expect("in range")
}

fn alice() -> Actor {
    caller().actor
}

// ---------------------------------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Jit,
    Standing,
    Na,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Jit => "JIT",
            Kind::Standing => "STANDING",
            Kind::Na => "NA",
        }
    }

    fn engine(self) -> ConnectionType {
        match self {
            Kind::Jit => ConnectionType::Jit,
            Kind::Standing => ConnectionType::Standing,
            Kind::Na => ConnectionType::Na,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Available,
    Activating,
    Active,
    Deactivating,
    Expired,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Available => "AVAILABLE",
            State::Activating => "ACTIVATING",
            State::Active => "ACTIVE",
            State::Deactivating => "DEACTIVATING",
            State::Expired => "EXPIRED",
        }
    }

    fn at_rest(self) -> bool {
        matches!(self, State::Available | State::Expired)
    }

    fn engine(self) -> ConnectionState {
        match self {
            State::Available => ConnectionState::Available,
            State::Activating => ConnectionState::Activating,
            State::Active => ConnectionState::Active,
            State::Deactivating => ConnectionState::Deactivating,
            State::Expired => ConnectionState::Expired,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Validation runs.
    Creating,
    /// The grant runs or waits to be tried again.
    Granting,
    Provisioned,
    /// The revoke runs or waits to be tried again.
    Revoking,
    Completed,
    Revoked,
    Invalid,
    Error,
}

impl Status {
    fn ended(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Revoked | Status::Invalid | Status::Error
        )
    }

    fn engine(self) -> ActivationStatus {
        match self {
            Status::Creating => ActivationStatus::Creating,
            Status::Granting => ActivationStatus::Activating,
            Status::Provisioned => ActivationStatus::Provisioned,
            Status::Revoking => ActivationStatus::Deprovisioning,
            Status::Completed => ActivationStatus::Completed,
            Status::Revoked => ActivationStatus::Revoked,
            Status::Invalid => ActivationStatus::Invalid,
            Status::Error => ActivationStatus::Error,
        }
    }
}

/// Why access is being removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Expired,
    Deactivated,
    GrantFailed,
}

impl Why {
    fn engine(self) -> EndReason {
        match self {
            Why::Expired => EndReason::Expired,
            Why::Deactivated => EndReason::Deactivated,
            Why::GrantFailed => EndReason::ProvisionFailed,
        }
    }
}

/// When a retry is due: the engine's jitter puts it somewhere in `lo..=hi` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    lo: u64,
    hi: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum CallKind {
    Validate,
    Grant,
    Revoke,
}

/// A call the target should see: of which activation (by number; `None`: standing access),
/// which try (0 for a validation), at what time (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Call {
    kind: CallKind,
    act: Option<usize>,
    attempt: u32,
    at: u64,
}

/// Which kinds of call the target holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Held {
    validate: bool,
    grant: bool,
    revoke: bool,
}

impl Held {
    fn holds(self, kind: CallKind) -> bool {
        match kind {
            CallKind::Validate => self.validate,
            CallKind::Grant => self.grant,
            CallKind::Revoke => self.revoke,
        }
    }
}

/// The target's error texts, which the engine keeps as `last_error`.
const TRANSIENT: &str = "503 from the target";
const PERMANENT: &str = "no such group";
const REVOKE_DOWN: &str = "connection refused";
const REFUSED: &str = "no ticket";

/// One activation, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Act {
    conn: usize,
    period: u32,
    status: Status,
    requested_at: u64,
    validated_at: Option<u64>,
    provisioned_at: Option<u64>,
    deprovision_started_at: Option<u64>,
    ended_at: Option<u64>,
    expires_at: Option<u64>,
    warn_at: Option<u64>,
    extended_by: u32,
    extensions: u32,
    attempt: u32,
    retry: Option<Window>,
    cancel: bool,
    why: Option<Why>,
    error: Option<String>,
    stuck: bool,
}

/// A standing-access revoke in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    attempt: u32,
    retry: Option<Window>,
    stuck: bool,
    error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Jit {
    activation: Option<u64>,
    provision: Option<u64>,
    deactivation: Option<u64>,
    deprovision: Option<u64>,
    expiration: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Conn {
    registered: bool,
    kind: Kind,
    state: State,
    /// The latest activation, by number.
    latest: Option<usize>,
    standing: Option<Job>,
    jit: Jit,
    created: u64,
    modified: u64,
    state_changed: u64,
    /// Whether the engine itself (a timer or an effect's result) made the last state change.
    changed_by_system: bool,
    version: u64,
}

impl Conn {
    fn unregistered() -> Conn {
        Conn {
            registered: false,
            kind: Kind::Jit,
            state: State::Available,
            latest: None,
            standing: None,
            jit: Jit::default(),
            created: 0,
            modified: 0,
            state_changed: 0,
            changed_by_system: false,
            version: 0,
        }
    }

    fn registered(now: u64) -> Conn {
        Conn {
            registered: true,
            created: now,
            modified: now,
            state_changed: now,
            version: 1,
            ..Conn::unregistered()
        }
    }
}

/// What the target will do with the next calls for one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Script {
    /// Grants to fail.
    grants: u32,
    /// Whether those failures are permanent.
    permanent: bool,
    /// Revokes to fail.
    revokes: u32,
}

/// The policy's limits; `version` counts stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pol {
    max: Option<u32>,
    default: Option<u32>,
    max_ext: Option<u32>,
    default_ext: Option<u32>,
    warning: Option<u32>,
    version: u64,
}

impl Pol {
    /// `common::policy()`, stored once.
    fn initial() -> Pol {
        Pol {
            max: Some(240),
            default: Some(60),
            max_ext: Some(60),
            default_ext: Some(15),
            warning: None,
            version: 1,
        }
    }

    fn engine(&self) -> Policy {
        Policy {
            max_activation_period: self.max.map(Minutes),
            default_activation_period: self.default.map(Minutes),
            max_extension: self.max_ext.map(Minutes),
            default_extension: self.default_ext.map(Minutes),
            expiry_warning: self.warning.map(Minutes),
            version: self.version,
            ..common::policy()
        }
    }
}

/// A stored idempotency key: the request it answered and the activation it named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    op: &'static str,
    conn: usize,
    minutes: Option<u32>,
    act: usize,
    expires: u64,
}

fn key_name(k: usize) -> String {
    format!("model-key-{k}")
}

/// The answer the last command should get.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// No call to the engine (clock, target, restart).
    Nothing,
    /// The activation with this number, as it stood when the command committed.
    Activation(usize, Box<Act>),
    /// The connection as it stood when the command committed, with its latest activation.
    Connection(usize, Box<Conn>, Option<Box<Act>>),
    Removed,
    Policy(Pol),
    Refused(Error),
    /// The answers of a pair, in order.
    Pair(Box<Expect>, Box<Expect>),
}

/// How far the clock moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// By this many ms.
    By(u64),
    /// To the next due time (for a retry: the end of its bounds).
    ToNext,
    /// To one ms before the next due time (for a retry: before its bounds).
    JustBefore,
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Register(usize),
    Remove(usize),
    /// Connection, minutes, idempotency key.
    Activate(usize, Option<u32>, Option<usize>),
    Extend(usize, Option<u32>, Option<usize>),
    Deactivate(usize, Option<usize>),
    ChangeType(usize, Kind),
    Policy(Pol),
    Advance(Step),
    /// The target follows this script for one connection (`None`: for all).
    Fail(Option<usize>, Script),
    /// The target holds the calls of these kinds until released (a later `Hold` without them).
    Hold(Held),
    /// The workflow's validation refuses activations.
    Refuse(bool),
    Restart,
    /// Two commands sent at once: the writer may decide them in one batch.
    Pair(Box<Op>, Box<Op>),
}

#[derive(Clone)]
struct Model {
    /// The manual clock (ms).
    now: u64,
    policy: Pol,
    conns: Vec<Conn>,
    /// Every activation, by number (the order the engine accepted them).
    acts: Vec<Act>,
    keys: Vec<Option<Key>>,
    /// What the target holds, per connection.
    held: Vec<bool>,
    scripts: Vec<Script>,
    /// Every call the target saw, per connection.
    calls: Vec<Vec<Call>>,
    hold: Held,
    refuse: bool,
    /// Calls waiting at the target in this engine's life: (connection, kind, activation, try).
    waiting: BTreeSet<(usize, CallKind, Option<usize>, u32)>,
    /// Activations (by number) deactivated before their validation reached the target (both
    /// sent at once): the engine has already handed the validation to its effect runner, which
    /// may call the validator before or after it sees the deactivation (the result is stale
    /// either way), so whether the target sees that call depends on timing.
    unsure: BTreeSet<usize>,
    /// The last signal sent with an idempotency key, which a client may send again.
    last_keyed: Option<Op>,
    expect: Expect,
    /// A setting of the engine under test that changes nothing the model predicts: the store
    /// writes a checkpoint after every batch, so reads come from the checkpointed tables as
    /// well as from the hot layer.
    eager_checkpoints: bool,
}

/// The model in short (a failing case prints its initial state).
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let conns: Vec<_> = (0..CONNS)
            .filter(|i| self.conns[*i].registered)
            .map(|i| {
                let c = &self.conns[i];
                let running = self.running(i).map(|n| (n, &self.acts[n]));
                (i, c.kind, c.state, running, &c.standing)
            })
            .collect();
        f.debug_struct("Model")
            .field("now", &self.now)
            .field("policy", &self.policy)
            .field("connections", &conns)
            .field("activations", &self.acts.len())
            .field("held", &self.held)
            .field("scripts", &self.scripts)
            .field("hold", &self.hold)
            .field("refuse", &self.refuse)
            .field("eager_checkpoints", &self.eager_checkpoints)
            .finish_non_exhaustive()
    }
}

/// What happens to an effect in flight.
enum Flight {
    /// Its call just reached the target, which holds it.
    Arrived,
    /// Its call waits at the target.
    Waiting,
    /// Its call completes now.
    Completes,
}

impl Model {
    fn new(registered: usize, eager_checkpoints: bool) -> Model {
        let mut conns = vec![Conn::unregistered(); CONNS];
        for c in conns.iter_mut().take(registered) {
            *c = Conn::registered(START);
        }
        Model {
            now: START,
            policy: Pol::initial(),
            conns,
            acts: Vec::new(),
            keys: vec![None; KEYS],
            held: vec![false; CONNS],
            scripts: vec![Script::default(); CONNS],
            calls: vec![Vec::new(); CONNS],
            hold: Held::default(),
            refuse: false,
            waiting: BTreeSet::new(),
            unsure: BTreeSet::new(),
            last_keyed: None,
            expect: Expect::Nothing,
            eager_checkpoints,
        }
    }

    /// The running activation of connection `i`, by number.
    fn running(&self, i: usize) -> Option<usize> {
        self.conns[i]
            .latest
            .filter(|n| !self.acts[*n].status.ended())
    }

    /// One event on connection `i`: by the engine itself (`system`) or by Alice; `state` is
    /// the state after it.
    fn event(&mut self, i: usize, system: bool, state: State) {
        let now = self.now;
        let c = &mut self.conns[i];
        c.modified = now;
        c.version += 1;
        if c.state != state {
            c.state = state;
            c.state_changed = now;
            c.changed_by_system = system;
        }
    }

    fn wrong_state(&self, i: usize, operation: &'static str) -> Rejection {
        Rejection::WrongState {
            connection: conn(i as u128),
            operation,
            state: self.conns[i].state.name(),
        }
    }

    /// The minutes asked for, else the default, checked against 1..=max.
    fn minutes(
        requested: Option<u32>,
        default: Option<u32>,
        max: Option<u32>,
        what: &'static str,
    ) -> Result<u32, Rejection> {
        let minutes = requested
            .or(default)
            .ok_or(Rejection::PeriodRequired(what))?;
        let max = max.map_or(MAX_PERIOD_MINS, |m| m.min(MAX_PERIOD_MINS));
        if !(1..=max).contains(&minutes) {
            return Err(Rejection::PeriodOutOfRange {
                what,
                requested: minutes,
                max,
            });
        }
        Ok(minutes)
    }

    /// When the expiring-soon warning of `expires` is due, if still ahead.
    fn warn_time(&self, expires: u64) -> Option<u64> {
        let lead = self
            .policy
            .warning
            .map_or(ms(settings().warning_lead), |m| u64::from(m) * MINUTE);
        let at = expires.saturating_sub(lead);
        (at > self.now && at < expires).then_some(at)
    }

    /// The bounds of the retry after try `attempt` failed now: capped exponential backoff,
    /// then "equal jitter" (half the delay fixed, the other half spread).
    fn retry_window(&self, attempt: u32) -> Window {
        let s = settings();
        let nominal = ms(s.retry_base)
            .saturating_mul(1 << attempt.saturating_sub(1).min(31))
            .min(ms(s.retry_cap));
        Window {
            lo: self.now + nominal / 2,
            hi: self.now + nominal,
        }
    }

    /// Applies a command, then lets the engine settle.
    fn apply(&mut self, op: &Op) {
        if let Op::Pair(first, second) = op {
            // The writer decides them in order, before any effect they start reports back.
            self.command(first);
            let first = std::mem::replace(&mut self.expect, Expect::Nothing);
            self.command(second);
            let second = std::mem::replace(&mut self.expect, Expect::Nothing);
            self.expect = Expect::Pair(Box::new(first), Box::new(second));
        } else {
            self.command(op);
        }
        self.settle();
        // Released calls of activations that moved on complete as stale results.
        let hold = self.hold;
        self.waiting.retain(|(_, kind, ..)| hold.holds(*kind));
    }

    /// What a command does at once, and the answer it gets.
    fn command(&mut self, op: &Op) {
        self.expect = Expect::Nothing;
        if let Op::Activate(.., Some(_)) | Op::Extend(.., Some(_)) | Op::Deactivate(_, Some(_)) = op
        {
            self.last_keyed = Some(op.clone());
        }
        match *op {
            Op::Register(i) => self.register(i),
            Op::Remove(i) => self.remove(i),
            Op::Activate(i, minutes, key) => {
                self.signal(key, "activate", i, minutes, |m| m.activate(i, minutes));
            }
            Op::Extend(i, minutes, key) => {
                self.signal(key, "extend", i, minutes, |m| m.extend(i, minutes));
            }
            Op::Deactivate(i, key) => self.signal(key, "deactivate", i, None, |m| m.deactivate(i)),
            Op::ChangeType(i, kind) => self.change_type(i, kind),
            Op::Policy(p) => self.put_policy(p),
            Op::Advance(step) => self.now = self.advance(step),
            Op::Fail(which, script) => {
                for i in (0..CONNS).filter(|i| which.is_none_or(|c| c == *i)) {
                    self.scripts[i] = script;
                }
            }
            Op::Hold(on) => self.hold = on,
            Op::Refuse(on) => self.refuse = on,
            // Calls held at the target are lost with the engine; the next one calls again.
            Op::Restart => self.waiting.clear(),
            Op::Pair(..) => unreachable!("a pair holds single commands"),
        }
    }

    fn register(&mut self, i: usize) {
        self.expect = if self.conns[i].registered {
            Expect::Refused(Rejection::AlreadyExists(conn(i as u128)).into())
        } else {
            self.conns[i] = Conn::registered(self.now);
            Expect::Connection(i, Box::new(self.conns[i].clone()), None)
        };
    }

    fn remove(&mut self, i: usize) {
        let c = &self.conns[i];
        self.expect = if !c.registered {
            Expect::Refused(Rejection::NotFound(conn(i as u128)).into())
        } else if c.state.at_rest() || (c.kind == Kind::Standing && c.state == State::Active) {
            self.conns[i] = Conn::unregistered();
            Expect::Removed
        } else {
            Expect::Refused(self.wrong_state(i, "remove").into())
        };
    }

    /// An activation signal, with its idempotency key: a live key for the same request answers
    /// with the activation it named, as it stands now; for another request, a conflict.
    fn signal(
        &mut self,
        key: Option<usize>,
        op: &'static str,
        i: usize,
        minutes: Option<u32>,
        run: impl FnOnce(&mut Model) -> Result<usize, Rejection>,
    ) {
        if let Some(k) = key
            && let Some(stored) = self.keys[k].filter(|s| s.expires > self.now)
        {
            self.expect = if (stored.op, stored.conn, stored.minutes) == (op, i, minutes) {
                Expect::Activation(stored.act, Box::new(self.acts[stored.act].clone()))
            } else {
                Expect::Refused(Error::IdempotencyConflict(key_name(k)))
            };
            return;
        }
        self.expect = match run(self) {
            Ok(n) => {
                if let Some(k) = key {
                    self.keys[k] = Some(Key {
                        op,
                        conn: i,
                        minutes,
                        act: n,
                        expires: self.now + ms(settings().idempotency_ttl),
                    });
                }
                Expect::Activation(n, Box::new(self.acts[n].clone()))
            }
            Err(r) => Expect::Refused(r.into()),
        };
    }

    fn activate(&mut self, i: usize, minutes: Option<u32>) -> Result<usize, Rejection> {
        let id = conn(i as u128);
        let c = &self.conns[i];
        if !c.registered {
            return Err(Rejection::NotFound(id));
        }
        if c.kind != Kind::Jit {
            return Err(Rejection::WrongType {
                connection: id,
                operation: "activate",
                actual: c.kind.name(),
                needed: "JIT",
            });
        }
        if !c.state.at_rest() {
            return Err(self.wrong_state(i, "activate"));
        }
        let period = Model::minutes(
            minutes,
            self.policy.default,
            self.policy.max,
            "activationPeriodMins",
        )?;
        let n = self.acts.len();
        self.acts.push(Act {
            conn: i,
            period,
            status: Status::Creating,
            requested_at: self.now,
            validated_at: None,
            provisioned_at: None,
            deprovision_started_at: None,
            ended_at: None,
            expires_at: None,
            warn_at: None,
            extended_by: 0,
            extensions: 0,
            attempt: 0,
            retry: None,
            cancel: false,
            why: None,
            error: None,
            stuck: false,
        });
        self.conns[i].latest = Some(n);
        self.conns[i].jit = Jit {
            activation: Some(self.now),
            ..Jit::default()
        };
        self.event(i, false, State::Activating);
        Ok(n)
    }

    fn extend(&mut self, i: usize, minutes: Option<u32>) -> Result<usize, Rejection> {
        let id = conn(i as u128);
        if !self.conns[i].registered {
            return Err(Rejection::NotFound(id));
        }
        let n = self.running(i).ok_or(Rejection::NoRunningActivation(id))?;
        let a = &self.acts[n];
        if a.status != Status::Provisioned {
            return Err(self.wrong_state(i, "extend"));
        }
        let expires = a.expires_at.expect("provisioned");
        if expires <= self.now {
            return Err(Rejection::WrongState {
                connection: id,
                operation: "extend",
                state: "EXPIRING",
            });
        }
        let by = Model::minutes(
            minutes,
            self.policy.default_ext,
            None,
            "activationPeriodExtensionMins",
        )?;
        let cap = self
            .policy
            .max_ext
            .map_or(MAX_PERIOD_MINS, |m| m.min(MAX_PERIOD_MINS));
        let used = a.extended_by;
        if used + by > cap {
            return Err(Rejection::ExtensionOverCap {
                requested: by,
                used,
                cap,
            });
        }
        let expires = expires + u64::from(by) * MINUTE;
        let warn_at = self.warn_time(expires);
        let a = &mut self.acts[n];
        a.extended_by += by;
        a.extensions += 1;
        a.expires_at = Some(expires);
        a.warn_at = warn_at;
        self.conns[i].jit.expiration = Some(expires);
        let state = self.conns[i].state;
        self.event(i, false, state);
        Ok(n)
    }

    fn deactivate(&mut self, i: usize) -> Result<usize, Rejection> {
        let id = conn(i as u128);
        if !self.conns[i].registered {
            return Err(Rejection::NotFound(id));
        }
        let n = self.running(i).ok_or(Rejection::NoRunningActivation(id))?;
        let now = self.now;
        let a = &mut self.acts[n];
        if a.status == Status::Revoking || a.cancel {
            return Err(self.wrong_state(i, "deactivate"));
        }
        let state = match (a.status, a.retry) {
            (Status::Creating, _) => {
                // Nothing was granted: it ends at once.
                if !self.waiting.contains(&(i, CallKind::Validate, Some(n), 0)) {
                    self.unsure.insert(n);
                }
                a.status = Status::Revoked;
                a.why = Some(Why::Deactivated);
                a.ended_at = Some(now);
                State::Available
            }
            (Status::Granting, None) => {
                // The grant in flight settles first; the revoke follows.
                a.cancel = true;
                State::Deactivating
            }
            _ => {
                Model::start_revoke(a, Why::Deactivated, now);
                State::Deactivating
            }
        };
        self.conns[i].jit.deactivation = Some(now);
        self.event(i, false, state);
        Ok(n)
    }

    fn start_revoke(a: &mut Act, why: Why, now: u64) {
        a.status = Status::Revoking;
        a.why = Some(why);
        a.deprovision_started_at = Some(now);
        a.attempt = 1;
        a.retry = None;
        a.warn_at = None;
        a.stuck = false;
    }

    fn change_type(&mut self, i: usize, to: Kind) {
        let id = conn(i as u128);
        let c = &self.conns[i];
        if !c.registered {
            self.expect = Expect::Refused(Rejection::NotFound(id).into());
            return;
        }
        let from = c.kind;
        if from != to {
            let allowed = if from == Kind::Na || to == Kind::Na {
                c.state.at_rest()
            } else {
                c.state.at_rest() || c.state == State::Active
            };
            if !allowed {
                self.expect = Expect::Refused(self.wrong_state(i, "type change").into());
                return;
            }
            let mut state = c.state;
            match (from, to, c.state) {
                (Kind::Jit, Kind::Standing, State::Active) => {
                    // The access stays, now standing; the activation ends with its timers.
                    let n = self.running(i).expect("active");
                    let a = &mut self.acts[n];
                    a.status = Status::Completed;
                    a.ended_at = Some(self.now);
                    a.warn_at = None;
                }
                (Kind::Standing, Kind::Jit, State::Active) => {
                    state = State::Deactivating;
                    self.conns[i].jit.deactivation = Some(self.now);
                    self.conns[i].standing = Some(Job {
                        attempt: 1,
                        retry: None,
                        stuck: false,
                        error: None,
                    });
                }
                _ => {}
            }
            self.conns[i].kind = to;
            self.event(i, false, state);
        }
        let latest = self.conns[i].latest.map(|n| Box::new(self.acts[n].clone()));
        self.expect = Expect::Connection(i, Box::new(self.conns[i].clone()), latest);
    }

    fn put_policy(&mut self, p: Pol) {
        for (default, max, field) in [
            (p.default, p.max, PatchPath::DefaultMaxActivationPeriodMins),
            (
                p.default_ext,
                p.max_ext,
                PatchPath::DefaultMaxActivationPeriodExtensionMins,
            ),
        ] {
            if let (Some(default), Some(max)) = (default, max)
                && default > max
            {
                let e = policy::Error::DefaultExceedsMax {
                    field,
                    default,
                    max,
                };
                self.expect = Expect::Refused(PolicyRejection::Invalid(e).into());
                return;
            }
        }
        self.policy = Pol {
            version: self.policy.version + 1,
            ..p
        };
        self.expect = Expect::Policy(self.policy);
    }

    /// The retry windows of every connection.
    fn windows(&self) -> Vec<Window> {
        let mut windows = Vec::new();
        for (i, c) in self.conns.iter().enumerate() {
            windows.extend(c.standing.as_ref().and_then(|j| j.retry));
            if let Some(n) = self.running(i) {
                windows.extend(self.acts[n].retry);
            }
        }
        windows
    }

    /// Where the clock goes. It never stops inside a retry's bounds, where the model cannot
    /// tell whether the retry fired: it goes on to the bounds' end.
    fn advance(&self, step: Step) -> u64 {
        let now = self.now;
        let windows = self.windows();
        let provisioned = |n: usize| self.acts[n].status == Status::Provisioned;
        let exact: Vec<u64> = (0..CONNS)
            .filter_map(|i| self.running(i).filter(|n| provisioned(*n)))
            .flat_map(|n| [self.acts[n].warn_at, self.acts[n].expires_at])
            .flatten()
            .collect();
        let next = |dues: Vec<u64>| dues.into_iter().filter(|t| *t > now).min();
        let mut to = match step {
            Step::By(d) => now + d,
            Step::ToNext => next(
                exact
                    .into_iter()
                    .chain(windows.iter().map(|w| w.hi))
                    .collect(),
            )
            .unwrap_or(now + MINUTE),
            Step::JustBefore => next(
                exact
                    .into_iter()
                    .chain(windows.iter().map(|w| w.lo))
                    .map(|t| t - 1)
                    .collect(),
            )
            .unwrap_or(now),
        };
        while let Some(w) = windows.iter().find(|w| w.lo <= to && to < w.hi) {
            to = w.hi;
        }
        to
    }

    /// Lets every effect run and every due timer fire, as the engine does between commands.
    fn settle(&mut self) {
        for i in 0..CONNS {
            let mut steps = 0;
            while self.step(i) {
                steps += 1;
                assert!(steps < 1000, "the model never settles");
            }
        }
    }

    /// An effect's call: it reaches the target once per engine life, and completes unless the
    /// target holds calls of its kind.
    fn flight(&mut self, i: usize, kind: CallKind, act: Option<usize>, attempt: u32) -> Flight {
        let key = (i, kind, act, attempt);
        let call = Call {
            kind,
            act,
            attempt,
            at: self.now,
        };
        if self.hold.holds(kind) {
            if self.waiting.insert(key) {
                self.calls[i].push(call);
                return Flight::Arrived;
            }
            return Flight::Waiting;
        }
        if !self.waiting.remove(&key) {
            self.calls[i].push(call);
        }
        Flight::Completes
    }

    /// Whether the target fails this revoke of connection `i` (its script says so).
    fn revoke_fails(&mut self, i: usize) -> bool {
        let left = &mut self.scripts[i].revokes;
        let fails = *left > 0;
        *left = left.saturating_sub(1);
        fails
    }

    /// Whether a retry in `window` has fired by now; the clock is never inside the window.
    fn retry_due(&self, window: Window) -> bool {
        assert!(
            self.now < window.lo || self.now >= window.hi,
            "the clock stopped inside a retry's bounds"
        );
        self.now >= window.hi
    }

    /// One thing that happens to connection `i` by itself; false when nothing does.
    fn step(&mut self, i: usize) -> bool {
        let now = self.now;
        if let Some(job) = self.conns[i].standing.clone() {
            match job.retry {
                Some(w) => {
                    if !self.retry_due(w) {
                        return false;
                    }
                    let job = self.conns[i].standing.as_mut().expect("standing");
                    job.retry = None;
                    job.attempt += 1;
                }
                None => match self.flight(i, CallKind::Revoke, None, job.attempt) {
                    Flight::Arrived => return true,
                    Flight::Waiting => return false,
                    Flight::Completes => {
                        if self.revoke_fails(i) {
                            let retry = self.retry_window(job.attempt);
                            let stuck = job.stuck || job.attempt >= settings().stuck_after;
                            let job = self.conns[i].standing.as_mut().expect("standing");
                            job.retry = Some(retry);
                            job.error = Some(REVOKE_DOWN.into());
                            job.stuck = stuck;
                        } else {
                            self.held[i] = false;
                            self.conns[i].standing = None;
                            self.conns[i].jit.deprovision = Some(now);
                            self.event(i, true, State::Available);
                            return true;
                        }
                    }
                },
            }
            let state = self.conns[i].state;
            self.event(i, true, state);
            return true;
        }
        let Some(n) = self.running(i) else {
            return false;
        };
        let a = self.acts[n].clone();
        let mut state = self.conns[i].state;
        match (a.status, a.retry) {
            (Status::Granting | Status::Revoking, Some(w)) => {
                if !self.retry_due(w) {
                    return false;
                }
                let a = &mut self.acts[n];
                a.retry = None;
                a.attempt += 1;
            }
            (Status::Creating, _) => match self.flight(i, CallKind::Validate, Some(n), 0) {
                Flight::Arrived => return true,
                Flight::Waiting => return false,
                Flight::Completes => {
                    let a = &mut self.acts[n];
                    if self.refuse {
                        a.status = Status::Invalid;
                        a.error = Some(REFUSED.into());
                        a.ended_at = Some(now);
                        state = State::Available;
                    } else {
                        a.status = Status::Granting;
                        a.validated_at = Some(now);
                        a.attempt = 1;
                    }
                }
            },
            (Status::Granting, None) => match self.flight(i, CallKind::Grant, Some(n), a.attempt) {
                Flight::Arrived => return true,
                Flight::Waiting => return false,
                Flight::Completes => {
                    let script = &mut self.scripts[i];
                    let failed = script.grants > 0;
                    if failed {
                        script.grants -= 1;
                    } else {
                        self.held[i] = true;
                    }
                    let permanent = script.permanent;
                    let retry = self.retry_window(a.attempt);
                    let expires = now + u64::from(a.period) * MINUTE;
                    let warn_at = self.warn_time(expires);
                    let act = &mut self.acts[n];
                    if failed {
                        act.error = Some(if permanent { PERMANENT } else { TRANSIENT }.into());
                    }
                    if a.cancel {
                        // Deactivated while the grant was in flight: revoke either way.
                        act.cancel = false;
                        Model::start_revoke(act, Why::Deactivated, now);
                    } else if !failed {
                        act.status = Status::Provisioned;
                        act.provisioned_at = Some(now);
                        act.expires_at = Some(expires);
                        act.warn_at = warn_at;
                        act.error = None;
                        state = State::Active;
                        self.conns[i].jit.provision = Some(now);
                        self.conns[i].jit.expiration = Some(expires);
                    } else if !permanent && a.attempt < settings().grant_max_attempts {
                        act.retry = Some(retry);
                    } else {
                        // Given up: whatever the grant did is revoked (fail closed).
                        Model::start_revoke(act, Why::GrantFailed, now);
                        state = State::Deactivating;
                        self.conns[i].jit.deactivation = Some(now);
                    }
                }
            },
            (Status::Provisioned, _) => {
                let expires = a.expires_at.expect("provisioned");
                let warned = a.warn_at.is_some_and(|w| w <= now);
                if !warned && expires > now {
                    return false;
                }
                if expires <= now {
                    // A warning due with its expiry expires the activation instead.
                    Model::start_revoke(&mut self.acts[n], Why::Expired, now);
                    state = State::Deactivating;
                    self.conns[i].jit.deactivation = Some(now);
                } else {
                    self.acts[n].warn_at = None;
                }
            }
            (Status::Revoking, None) => {
                match self.flight(i, CallKind::Revoke, Some(n), a.attempt) {
                    Flight::Arrived => return true,
                    Flight::Waiting => return false,
                    Flight::Completes => {
                        if self.revoke_fails(i) {
                            let retry = self.retry_window(a.attempt);
                            let act = &mut self.acts[n];
                            act.retry = Some(retry);
                            act.error = Some(REVOKE_DOWN.into());
                            act.stuck |= a.attempt >= settings().stuck_after;
                        } else {
                            self.held[i] = false;
                            let why = a.why.expect("revoking");
                            let act = &mut self.acts[n];
                            act.status = match why {
                                Why::Expired => Status::Completed,
                                Why::Deactivated => Status::Revoked,
                                Why::GrantFailed => Status::Error,
                            };
                            act.ended_at = Some(now);
                            act.stuck = false;
                            state = if why == Why::Expired {
                                State::Expired
                            } else {
                                State::Available
                            };
                            self.conns[i].jit.deprovision = Some(now);
                        }
                    }
                }
            }
            (status, _) => panic!("the model runs an activation {status:?}"),
        }
        self.event(i, true, state);
        true
    }

    /// Whether anything is left to run or fire.
    fn busy(&self) -> bool {
        (0..CONNS).any(|i| {
            self.conns[i].registered
                && (!self.conns[i].state.at_rest() || self.conns[i].standing.is_some())
        })
    }
}

struct Reference;

fn minutes_asked(cap: u32) -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        2 => Just(None),
        4 => (1u32..=5).prop_map(Some),
        2 => (6u32..=cap).prop_map(Some),
        1 => Just(Some(0)),
        1 => Just(Some(MAX_PERIOD_MINS + 1)),
    ]
}

fn policy_strategy() -> impl Strategy<Value = Pol> {
    let pick = |values: [u32; 2]| proptest::option::of(proptest::sample::select(values.to_vec()));
    (
        pick([30, 240]),
        pick([15, 60]),
        pick([20, 60]),
        pick([10, 15]),
        pick([2, 10]),
    )
        .prop_map(|(max, default, max_ext, default_ext, warning)| Pol {
            max,
            default,
            max_ext,
            default_ext,
            warning,
            version: 0,
        })
}

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        (prop_oneof![3 => Just(CONNS), 1 => 1..CONNS], any::<bool>())
            .prop_map(|(registered, eager)| Model::new(registered, eager))
            .boxed()
    }

    fn transitions(m: &Model) -> BoxedStrategy<Op> {
        let c = || 0..CONNS;
        let key = || prop_oneof![3 => Just(None), 1 => (0..KEYS).prop_map(Some)];
        let kind =
            prop_oneof![2 => Just(Kind::Jit), 2 => Just(Kind::Standing), 1 => Just(Kind::Na)];
        let step = prop_oneof![
            2 => (1u64..60_000).prop_map(Step::By),
            2 => (60_000u64..900_000).prop_map(Step::By),
            1 => (900_000u64..20_000_000).prop_map(Step::By),
            3 => Just(Step::ToNext),
            2 => Just(Step::JustBefore),
        ];
        let signal = move |i: usize| {
            prop_oneof![
                (minutes_asked(300), key()).prop_map(move |(m, k)| Op::Activate(i, m, k)),
                (minutes_asked(30), key()).prop_map(move |(m, k)| Op::Extend(i, m, k)),
                key().prop_map(move |k| Op::Deactivate(i, k)),
            ]
        };
        let pair = c()
            .prop_flat_map(move |i| (signal(i), signal(i)))
            .prop_map(|(a, b)| Op::Pair(Box::new(a), Box::new(b)));
        let ops = prop_oneof![
            6 => (c(), minutes_asked(300), key()).prop_map(|(i, m, k)| Op::Activate(i, m, k)),
            3 => (c(), minutes_asked(30), key()).prop_map(|(i, m, k)| Op::Extend(i, m, k)),
            3 => (c(), key()).prop_map(|(i, k)| Op::Deactivate(i, k)),
            8 => step.prop_map(Op::Advance),
            2 => (
                proptest::option::of(c()),
                0u32..4,
                0u32..6,
                proptest::bool::weighted(0.2),
            )
                .prop_map(|(which, grants, revokes, permanent)| {
                    let script = Script {
                        grants,
                        permanent,
                        revokes,
                    };
                    Op::Fail(which, script)
                }),
            1 => Just(Op::Hold(Held::default())),
            2 => (any::<bool>(), any::<bool>(), any::<bool>())
                .prop_map(|(validate, grant, revoke)| Op::Hold(Held { validate, grant, revoke })),
            1 => any::<bool>().prop_map(Op::Refuse),
            1 => policy_strategy().prop_map(Op::Policy),
            2 => (c(), kind).prop_map(|(i, k)| Op::ChangeType(i, k)),
            1 => c().prop_map(Op::Remove),
            1 => c().prop_map(Op::Register),
            1 => Just(Op::Restart),
            2 => pair,
        ];
        // Besides random commands, a few aimed at what the state makes interesting: the last
        // keyed signal sent again (a client retrying after a lost answer), a type change of a
        // connection that holds access, a deactivation while access moves.
        let mut aimed: Vec<(u32, BoxedStrategy<Op>)> = vec![(24, ops.boxed())];
        if let Some(again) = &m.last_keyed {
            aimed.push((2, Just(again.clone()).boxed()));
            let twice = Op::Pair(Box::new(again.clone()), Box::new(again.clone()));
            aimed.push((1, Just(twice).boxed()));
        }
        for (i, c) in m.conns.iter().enumerate().filter(|(_, c)| c.registered) {
            match (c.kind, c.state) {
                (Kind::Jit, State::Active) => {
                    aimed.push((1, Just(Op::ChangeType(i, Kind::Standing)).boxed()));
                    let extend = (minutes_asked(30), key());
                    aimed.push((
                        2,
                        extend.prop_map(move |(m, k)| Op::Extend(i, m, k)).boxed(),
                    ));
                }
                (Kind::Standing, State::Active) => {
                    aimed.push((1, Just(Op::ChangeType(i, Kind::Jit)).boxed()));
                }
                (_, State::Activating | State::Deactivating) => {
                    aimed.push((1, Just(Op::Deactivate(i, None)).boxed()));
                }
                _ => {}
            }
        }
        proptest::strategy::Union::new_weighted(aimed).boxed()
    }

    /// Removing a STANDING connection that holds its access leaves the access to the embedder,
    /// which the drain could not take back: not generated.
    fn preconditions(m: &Model, op: &Op) -> bool {
        !matches!(*op, Op::Remove(i)
            if m.conns[i].kind == Kind::Standing && m.conns[i].state == State::Active)
    }

    fn apply(mut m: Model, op: &Op) -> Model {
        m.apply(op);
        m
    }
}

// ---------------------------------------------------------------------------------------------
// The target: validator and provisioner, scripted per connection, able to hold calls.

/// A call the target saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    kind: CallKind,
    activation: Option<ActivationId>,
    attempt: u32,
    at: Timestamp,
}

type CallKey = (ConnectionId, CallKind, Option<ActivationId>, u32);

#[derive(Debug, Default)]
struct TargetState {
    held: BTreeSet<ConnectionId>,
    scripts: BTreeMap<ConnectionId, Script>,
    refuse: bool,
    hold: Held,
    /// The engine's life; calls of an earlier one never complete (lost in the crash).
    epoch: u64,
    /// Calls waiting for the hold to end.
    waiting: BTreeSet<CallKey>,
    calls: BTreeMap<ConnectionId, Vec<Seen>>,
}

#[derive(Clone)]
struct Target {
    state: Arc<Mutex<TargetState>>,
    /// Bumped whenever a call arrives or the hold or the epoch changes.
    changed: Arc<watch::Sender<u64>>,
    clock: ManualClock,
    /// The engine life this handle serves.
    epoch: u64,
}

impl Target {
    fn new(clock: ManualClock) -> Target {
        Target {
            state: Arc::default(),
            changed: Arc::new(watch::Sender::new(0)),
            clock,
            epoch: 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TargetState> {
        self.state.lock().expect("not poisoned")
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn set_hold(&self, hold: Held) {
        let mut s = self.lock();
        s.hold = hold;
        s.waiting.retain(|(_, kind, ..)| hold.holds(*kind));
        drop(s);
        self.bump();
    }

    /// A handle for the next engine life: calls held for this one are lost.
    fn next_life(&self) -> Target {
        let mut s = self.lock();
        s.epoch += 1;
        s.waiting.clear();
        let epoch = s.epoch;
        drop(s);
        self.bump();
        Target {
            epoch,
            ..self.clone()
        }
    }

    /// Records a call and waits while the target holds calls of its kind. Never returns for a
    /// call of an earlier engine life.
    async fn arrive(
        &self,
        connection: ConnectionId,
        kind: CallKind,
        request: (Option<ActivationId>, u32),
    ) {
        let (activation, attempt) = request;
        let mut changes = self.changed.subscribe();
        {
            let mut s = self.lock();
            s.calls.entry(connection).or_default().push(Seen {
                kind,
                activation,
                attempt,
                at: self.clock.now(),
            });
            if s.hold.holds(kind) {
                s.waiting.insert((connection, kind, activation, attempt));
            }
        }
        self.bump();
        loop {
            let (lost, held) = {
                let s = self.lock();
                (s.epoch != self.epoch, s.hold.holds(kind))
            };
            if lost {
                std::future::pending::<()>().await;
            }
            if !held {
                return;
            }
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Validator for Target {
    fn validate(&self, request: ValidationRequest) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let id = request.connection.id;
            self.arrive(id, CallKind::Validate, (Some(request.activation), 0))
                .await;
            if self.lock().refuse {
                Err(REFUSED.into())
            } else {
                Ok(())
            }
        })
    }
}

impl Target {
    /// A grant or a revoke: recorded, held while the target holds its kind, failed while the
    /// connection's script says so.
    async fn provision(
        &self,
        kind: CallKind,
        request: EffectRequest,
    ) -> Result<(), ProvisionError> {
        let id = request.connection.id;
        self.arrive(id, kind, (request.activation, request.attempt))
            .await;
        let mut s = self.lock();
        let script = s.scripts.entry(id).or_default();
        let (failures, error) = match kind {
            CallKind::Grant if script.permanent => {
                (&mut script.grants, ProvisionError::permanent(PERMANENT))
            }
            CallKind::Grant => (&mut script.grants, ProvisionError::transient(TRANSIENT)),
            _ => (&mut script.revokes, ProvisionError::transient(REVOKE_DOWN)),
        };
        if *failures > 0 {
            *failures -= 1;
            return Err(error);
        }
        if kind == CallKind::Grant {
            s.held.insert(id);
        } else {
            s.held.remove(&id);
        }
        Ok(())
    }
}

impl Provisioner for Target {
    fn grant(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(self.provision(CallKind::Grant, request))
    }

    fn revoke(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(self.provision(CallKind::Revoke, request))
    }
}

// ---------------------------------------------------------------------------------------------
// The engine under test.

/// What the engine answered.
#[derive(Debug)]
enum Answer {
    Nothing,
    Activation(Result<Activation, Error>),
    Connection(Result<Box<Connection>, Error>),
    Removed(Result<(), Error>),
    Policy(Result<Policy, Error>),
    Pair(Box<Answer>, Box<Answer>),
}

/// Sends one command to the engine, as Alice.
async fn send(engine: &Engine, op: &Op) -> Answer {
    let me = caller();
    let id = |i: usize| conn(i as u128);
    match *op {
        Op::Register(i) => {
            Answer::Connection(engine.register(&me, spec(id(i))).await.map(Box::new))
        }
        Op::Remove(i) => Answer::Removed(engine.remove(&me, id(i)).await),
        Op::Activate(i, minutes, key) => {
            let key = key.map(key_name);
            let minutes = minutes.map(Minutes);
            Answer::Activation(
                engine
                    .activate(&me, id(i), minutes, key.as_deref(), None)
                    .await,
            )
        }
        Op::Extend(i, minutes, key) => {
            let key = key.map(key_name);
            let minutes = minutes.map(Minutes);
            Answer::Activation(
                engine
                    .extend(&me, id(i), minutes, key.as_deref(), None)
                    .await,
            )
        }
        Op::Deactivate(i, key) => {
            let key = key.map(key_name);
            Answer::Activation(engine.deactivate(&me, id(i), key.as_deref(), None).await)
        }
        Op::ChangeType(i, kind) => Answer::Connection(
            engine
                .change_type(&me, id(i), kind.engine())
                .await
                .map(Box::new),
        ),
        Op::Policy(p) => Answer::Policy(engine.put_policy(&me, p.engine()).await),
        _ => unreachable!("{op:?} is not a command to the engine"),
    }
}

struct Sut {
    runtime: tokio::runtime::Runtime,
    storage: Storage,
    clock: ManualClock,
    target: Target,
    engine: Option<Engine>,
    eager_checkpoints: bool,
    /// The engine's ids of the model's activations, by number.
    ids: Vec<ActivationId>,
}

impl Sut {
    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("running")
    }

    fn open(&mut self) {
        let mut store = jitflow_store::open::Options::default();
        if self.eager_checkpoints {
            store.checkpoint_interval = Duration::ZERO;
        }
        let builder = self
            .runtime
            .block_on(self.storage.builder())
            .store_options(store)
            .config(settings())
            .clock(self.clock.clone())
            .provisioner(self.target.clone())
            .validator(self.target.clone());
        self.engine = Some(self.runtime.block_on(builder.open()).expect("engine opens"));
    }

    fn restart(&mut self) {
        let engine = self.engine.take().expect("running");
        self.runtime.block_on(engine.shutdown());
        drop(engine);
        self.target = self.target.next_life();
        self.open();
        self.verify("after a restart");
    }

    fn verify(&self, when: &str) {
        let report = self.engine().verify().expect("verify reads the store");
        assert!(report.is_clean(), "verify {when}: {report:?}");
    }

    fn read(&self, i: usize) -> Option<Connection> {
        self.engine()
            .connection(&caller().tenant, conn(i as u128))
            .expect("the engine reads its connection")
    }

    /// Whether the engine is quiet: no timer due and no effect pending but calls the target
    /// holds.
    fn quiet(&self) -> bool {
        let now = self.clock.now();
        let waiting = self.target.lock().waiting.clone();
        (0..CONNS).all(|i| {
            self.read(i).is_none_or(|c| {
                c.timers().iter().all(|t| t.due > now)
                    && c.pending_effects()
                        .iter()
                        .all(|e| waiting.contains(&call_key(c.id(), e)))
            })
        })
    }

    /// Waits until the engine is quiet.
    fn settle(&self, op: &Op) {
        let engine = self.engine();
        let mut changes = self.target.changed.subscribe();
        self.runtime.block_on(async {
            let mut events = engine.subscribe(engine.last_sequence().expect("reads"));
            let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
            while !self.quiet() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the engine did not settle after {op:?}: {:?}",
                    (0..CONNS).map(|i| self.read(i)).collect::<Vec<_>>()
                );
                tokio::select! {
                    _ = events.next() => {}
                    _ = changes.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        });
    }

    /// The model's activation `n`, as the engine should show it; the retry time is the one the
    /// engine chose, once checked within the model's bounds.
    fn expected_activation(&self, n: usize, a: &Act, actual: &Activation) -> Activation {
        Activation {
            id: self.ids[n],
            connection: conn(a.conn as u128),
            period: Minutes(a.period),
            requested_by: alice(),
            status: a.status.engine(),
            requested_at: ts(a.requested_at),
            validated_at: a.validated_at.map(ts),
            provisioned_at: a.provisioned_at.map(ts),
            deprovision_started_at: a.deprovision_started_at.map(ts),
            ended_at: a.ended_at.map(ts),
            expires_at: a.expires_at.map(ts),
            warn_at: a.warn_at.map(ts),
            extended_by: Minutes(a.extended_by),
            extensions: a.extensions,
            attempt: a.attempt,
            retry_at: within(a.retry, actual.retry_at, "an activation's retry"),
            cancel_requested: a.cancel,
            end_reason: a.why.map(Why::engine),
            last_error: a.error.clone(),
            stuck: a.stuck,
        }
    }

    /// The model's connection `i` as the engine should show it.
    fn expected_connection(
        &self,
        i: usize,
        c: &Conn,
        latest: Option<(usize, &Act)>,
        actual: &Connection,
    ) -> Connection {
        let mut registered = spec(conn(i as u128));
        registered.kind = c.kind.engine();
        Connection {
            spec: registered,
            state: c.state.engine(),
            jit: JitTimes {
                activation: c.jit.activation.map(ts),
                provision: c.jit.provision.map(ts),
                deactivation: c.jit.deactivation.map(ts),
                deprovision: c.jit.deprovision.map(ts),
                expiration: c.jit.expiration.map(ts),
            },
            created: ts(c.created),
            modified: ts(c.modified),
            state_changed: ts(c.state_changed),
            state_changed_by: if c.changed_by_system {
                Actor::System
            } else {
                alice()
            },
            activation: latest.map(|(n, a)| match &actual.activation {
                Some(got) => self.expected_activation(n, a, got),
                None => panic!("connection {i} lost its activation {n}: {actual:?}"),
            }),
            standing_revoke: c.standing.as_ref().map(|j| StandingRevoke {
                attempt: j.attempt,
                retry_at: within(
                    j.retry,
                    actual.standing_revoke.as_ref().and_then(|r| r.retry_at),
                    "a standing revoke's retry",
                ),
                stuck: j.stuck,
                last_error: j.error.clone(),
            }),
            version: c.version,
        }
    }

    /// The model's calls for connection `i`, as the target should have seen them.
    fn expected_calls(&self, calls: &[Call]) -> Vec<Seen> {
        calls
            .iter()
            .map(|c| Seen {
                kind: c.kind,
                activation: c.act.map(|n| self.ids[n]),
                attempt: c.attempt,
                at: ts(c.at),
            })
            .collect()
    }

    /// Compares an answer with the model's; records the id of a new activation.
    fn check_answer(&mut self, expect: &Expect, op: &Op, answer: Answer) {
        let wrong = |answer: &Answer| -> ! {
            panic!("{op:?}: the engine answered {answer:?}, the model expects {expect:?}")
        };
        match (expect, answer) {
            (Expect::Nothing, Answer::Nothing) | (Expect::Removed, Answer::Removed(Ok(()))) => {}
            (Expect::Activation(n, a), Answer::Activation(Ok(got))) => {
                if *n == self.ids.len() {
                    // A new activation: its id is the engine's to choose.
                    assert!(
                        !self.ids.contains(&got.id),
                        "activation id {} reused",
                        got.id
                    );
                    self.ids.push(got.id);
                }
                assert_eq!(got, self.expected_activation(*n, a, &got), "{op:?}");
            }
            (Expect::Connection(i, c, a), Answer::Connection(Ok(got))) => {
                let latest = c.latest.zip(a.as_deref());
                let expected = self.expected_connection(*i, c, latest, &got);
                assert_eq!(*got, expected, "{op:?}");
            }
            (Expect::Policy(p), Answer::Policy(Ok(got))) => assert_eq!(got, p.engine(), "{op:?}"),
            (Expect::Pair(first, second), Answer::Pair(a, b)) => {
                self.check_answer(first, op, *a);
                self.check_answer(second, op, *b);
            }
            (
                Expect::Refused(e),
                Answer::Activation(Err(got))
                | Answer::Connection(Err(got))
                | Answer::Removed(Err(got))
                | Answer::Policy(Err(got)),
            ) => assert_eq!(got, *e, "{op:?}"),
            (_, answer) => wrong(&answer),
        }
    }
}

/// The retry time the engine chose, which must lie within the model's bounds.
fn within(window: Option<Window>, actual: Option<Timestamp>, what: &str) -> Option<Timestamp> {
    let w = window?;
    match actual {
        Some(t) if (w.lo..=w.hi).contains(&t.as_millis()) => Some(t),
        _ => panic!(
            "{what} is due at {actual:?}, not within {}..={}",
            ts(w.lo),
            ts(w.hi)
        ),
    }
}

/// The target's record of the call an effect makes.
fn call_key(connection: ConnectionId, effect: &Effect) -> CallKey {
    match *effect {
        Effect::Validate { activation } => (connection, CallKind::Validate, Some(activation), 0),
        Effect::Grant {
            activation,
            attempt,
        } => (connection, CallKind::Grant, Some(activation), attempt),
        Effect::Revoke {
            activation,
            attempt,
        } => (connection, CallKind::Revoke, Some(activation), attempt),
        Effect::RevokeStanding { attempt } => (connection, CallKind::Revoke, None, attempt),
    }
}

struct EngineMachine;

impl StateMachineTest for EngineMachine {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(m: &Model) -> Sut {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let clock = ManualClock::new(ts(m.now));
        let mut sut = Sut {
            runtime,
            storage: Storage::new()
                .expect("the backend is there (the_engine_follows_the_model checked)"),
            target: Target::new(clock.clone()),
            clock,
            engine: None,
            eager_checkpoints: m.eager_checkpoints,
            ids: Vec::new(),
        };
        sut.open();
        let engine = sut.engine().clone();
        sut.runtime.block_on(async {
            let stored = engine.put_policy(&caller(), common::policy()).await;
            assert_eq!(stored, Ok(m.policy.engine()));
            for i in (0..CONNS).filter(|i| m.conns[*i].registered) {
                engine
                    .register(&caller(), spec(conn(i as u128)))
                    .await
                    .expect("registers");
            }
        });
        sut
    }

    fn apply(mut sut: Sut, m: &Model, op: Op) -> Sut {
        let engine = sut.engine().clone();
        let answer = match &op {
            Op::Pair(first, second) => {
                let both =
                    async { tokio::join!(biased; send(&engine, first), send(&engine, second)) };
                let (first, second) = sut.runtime.block_on(both);
                Answer::Pair(Box::new(first), Box::new(second))
            }
            Op::Register(_)
            | Op::Remove(_)
            | Op::Activate(..)
            | Op::Extend(..)
            | Op::Deactivate(..)
            | Op::ChangeType(..)
            | Op::Policy(_) => sut.runtime.block_on(send(&engine, &op)),
            Op::Advance(_) => {
                assert!(
                    m.now >= sut.clock.now().as_millis(),
                    "the model's clock went back"
                );
                sut.clock.set(ts(m.now));
                Answer::Nothing
            }
            Op::Fail(which, script) => {
                let mut s = sut.target.lock();
                for i in (0..CONNS).filter(|i| which.is_none_or(|c| c == *i)) {
                    s.scripts.insert(conn(i as u128), *script);
                }
                Answer::Nothing
            }
            Op::Hold(hold) => {
                sut.target.set_hold(*hold);
                Answer::Nothing
            }
            Op::Refuse(on) => {
                sut.target.lock().refuse = *on;
                Answer::Nothing
            }
            Op::Restart => {
                drop(engine);
                sut.restart();
                Answer::Nothing
            }
        };
        sut.check_answer(&m.expect, &op, answer);
        sut.settle(&op);
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        for i in 0..CONNS {
            let c = &m.conns[i];
            match (c.registered, sut.read(i)) {
                (false, None) => {}
                (true, Some(got)) => {
                    let latest = c.latest.map(|n| (n, &m.acts[n]));
                    let expected = sut.expected_connection(i, c, latest, &got);
                    assert_eq!(got, expected, "connection {i}");
                }
                (registered, got) => {
                    panic!(
                        "connection {i}: the model has it registered {registered}, the engine reads {got:?}"
                    )
                }
            }
        }
        let s = sut.target.lock();
        let held: BTreeSet<ConnectionId> = (0..CONNS)
            .filter(|i| m.held[*i])
            .map(|i| conn(i as u128))
            .collect();
        assert_eq!(s.held, held, "what the target holds");
        let unsure: BTreeSet<ActivationId> = m.unsure.iter().map(|n| sut.ids[*n]).collect();
        for i in 0..CONNS {
            let mut seen = s.calls.get(&conn(i as u128)).cloned().unwrap_or_default();
            seen.retain(|c| {
                c.kind != CallKind::Validate || c.activation.is_none_or(|a| !unsure.contains(&a))
            });
            assert_eq!(
                seen,
                sut.expected_calls(&m.calls[i]),
                "the calls for connection {i}"
            );
        }
    }

    /// The drain and the final checks.
    fn teardown(mut sut: Sut, mut m: Model) {
        let run = |op: Op, m: &mut Model, sut: Sut| -> Sut {
            *m = Reference::apply(m.clone(), &op);
            let sut = Self::apply(sut, m, op);
            Self::check_invariants(&sut, m);
            sut
        };
        sut = run(Op::Hold(Held::default()), &mut m, sut);
        sut = run(Op::Fail(None, Script::default()), &mut m, sut);
        for i in 0..CONNS {
            if m.conns[i].registered && m.conns[i].kind != Kind::Jit {
                sut = run(Op::ChangeType(i, Kind::Jit), &mut m, sut);
            }
        }
        for _ in 0..64 {
            if !m.busy() {
                break;
            }
            sut = run(Op::Advance(Step::ToNext), &mut m, sut);
        }
        assert!(!m.busy(), "the model never came to rest: {m:?}");

        let engine = sut.engine().clone();
        let tenant = caller().tenant;
        for i in 0..CONNS {
            if let Some(c) = sut.read(i) {
                assert!(c.state.is_at_rest(), "connection {i} is not at rest: {c:?}");
                assert_eq!(c.kind(), ConnectionType::Jit);
            }
        }
        assert!(
            sut.target.lock().held.is_empty(),
            "access left on the target"
        );
        // Every activation, read by id, is the model's and has ended; none that ended by its
        // expiry lost its access before it.
        let calls = sut.target.lock().calls.clone();
        for (n, a) in m.acts.iter().enumerate() {
            let got = engine
                .activation(&tenant, sut.ids[n])
                .expect("reads")
                .unwrap_or_else(|| panic!("activation {n} lost"));
            assert_eq!(got, sut.expected_activation(n, a, &got));
            assert!(got.status.is_terminal(), "{got:?}");
            if got.end_reason == Some(EndReason::Expired) {
                let expires = got.expires_at.expect("an expired activation had an expiry");
                let revokes: Vec<Timestamp> = calls
                    .get(&got.connection)
                    .into_iter()
                    .flatten()
                    .filter(|c| c.kind == CallKind::Revoke && c.activation == Some(got.id))
                    .map(|c| c.at)
                    .collect();
                assert!(
                    !revokes.is_empty(),
                    "activation {n} expired without a revoke"
                );
                assert!(
                    revokes.iter().all(|at| *at >= expires),
                    "activation {n} was revoked at {revokes:?}, before its expiry {expires}"
                );
                assert!(got.ended_at.is_some_and(|at| at >= expires));
            }
        }
        sut.verify("after the drain");

        sut.runtime.block_on(engine.shutdown());
    }
}

/// `PROPTEST_CASES` cases (default [`DEFAULT_CASES`]), failures shrunk for a bounded time.
fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    ProptestConfig {
        cases,
        max_shrink_time: SHRINK_SECONDS * 1000,
        ..ProptestConfig::default()
    }
}

prop_state_machine! {
    #![proptest_config(proptest_config())]

    fn machine(sequential 1..=MAX_STEPS => EngineMachine);
}

#[test]
fn the_engine_follows_the_model() {
    // Skips where the binary's backend is missing (PostgreSQL outside CI). The store held here
    // also keeps the PostgreSQL cluster up between the cases, each on a database of its own.
    let Some(_store) = Storage::new() else {
        return;
    };
    machine();
}
