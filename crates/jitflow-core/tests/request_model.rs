//! Model-based property test of the access-request item lifecycle, with
//! `proptest-state-machine`.
//!
//! A reference model of one item's phases, written independently of the core, generates random
//! approvals, rejections, forwards (the model keeps the approver set), cancels, closes, supersedes, effect outcomes (a failed grant may have
//! landed anyway), JIT activations on the target connection, timer firings and time advances.
//! The model predicts whether the core accepts each command and what follows; a fake target
//! records whether the access is really held. After every step:
//! - the core accepts exactly what the model accepts, and a refusal changes nothing (so nothing
//!   changes after a terminal state);
//! - the item's status is the one the model's phase implies;
//! - the timers armed (folded from the events' arm and cancel lists) equal the timers the state
//!   implies, and both equal the model's;
//! - the pending effect is the model's;
//! - no grant ever starts before the approval, before the sunrise, or after the sunset.
//!
//! At the end, effects succeed and time passes until nothing is left: every item that had a
//! sunset, a revoke, a failed grant or a close mid-grant no longer holds access, each removal at a
//! sunset was started at or after it, and replaying the events gives the same item.

use std::collections::BTreeSet;
use std::time::Duration;

use jitflow_core::connection::ConnectionType;
use jitflow_core::id::{AccessRequestId, ActivationId, EntitlementId, IdentityId, ObjectId};
use jitflow_core::lifecycle::{Actor, Config};
use jitflow_core::policy::Policy;
use jitflow_core::request::item::{ApprovalScheme, MAX_FORWARDS};
use jitflow_core::request::submit::{Assignment, ObjectKind, ObjectRef, Origin, item_id};
use jitflow_core::request::{
    ApprovalStep, Closure, Command, Context, Effect, Event, Existing, Item, ItemSpec, ItemStatus,
    Rejection, RemovalReason, RequestType, Timer, TimerKind, WorkItemState, decide, evolve,
};
use jitflow_core::time::Timestamp;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

const MINUTE: Duration = Duration::from_secs(60);
const APPROVAL_WAIT_MINS: u32 = 90;
const GRANT_TRIES: u32 = 3;

fn t0() -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000).unwrap()
}

fn mins(m: u32) -> Timestamp {
    t0().saturating_add(MINUTE * m)
}

fn who(name: &str) -> IdentityId {
    IdentityId::parse(name).unwrap()
}

/// Who sends a decision.
#[derive(Debug, Clone, Copy, PartialEq)]
enum By {
    /// The item's approver (for approve and reject) or requester (for cancel).
    Party,
    /// Someone else.
    Stranger,
    /// An admin.
    Admin,
}

#[derive(Debug, Clone)]
enum Op {
    Approve(By),
    Reject(By),
    Cancel(By),
    Close {
        admin: bool,
    },
    Supersede,
    /// A JIT activation starts on the target connection.
    Activate,
    Advance(u32),
    /// Run the pending effect: `ok`, else fail; `landed`: a failed grant took effect anyway;
    /// `permanent`: a failed grant will never succeed.
    Effect {
        ok: bool,
        landed: bool,
        permanent: bool,
    },
    Fire(TimerKind),
    /// Forward the pending approval to `FORWARD_TO[to]`.
    Forward {
        by: By,
        to: usize,
    },
}

/// The new owners a forward names: approvers (bob at first), the identity the access is for
/// (alice), the requester (carol), and others.
const FORWARD_TO: [&str; 5] = ["bob", "erin", "frank", "alice", "carol"];

/// Why the model removes access.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Why {
    Revoked,
    Sunset,
    Failed,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Rejected,
    Cancelled,
    Expired,
    Lapsed,
    Removed,
    Failed,
    Closed,
    Superseded,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Pending,
    Scheduled,
    Granting {
        attempt: u32,
        wait: Option<Timestamp>,
        stop: Option<Why>,
    },
    Granted,
    Removing {
        attempt: u32,
        wait: Option<Timestamp>,
        deactivate: Option<u128>,
        why: Why,
    },
    Done(End),
}

#[derive(Debug, Clone)]
struct Model {
    now: Timestamp,
    revoke: bool,
    entitlement: bool,
    governed: bool,
    auto: bool,
    duplicate: bool,
    start: Option<Timestamp>,
    remove: Option<Timestamp>,
    phase: Phase,
    closed: bool,
    /// The JIT activation running on the target connection.
    running: Option<u128>,
    next_activation: u128,
    /// Whether the fake target holds the access.
    held: bool,
    /// Whether the last transition's command should be accepted (`None`: no command sent).
    accepted: Option<bool>,
    /// The approvers of the approval step.
    approvers: BTreeSet<&'static str>,
    /// How many times the approval was forwarded.
    forwards: usize,
    /// Who acts as `By::Party` for an approver's command: the first approver before the step.
    party: &'static str,
}

impl Model {
    fn begin(&mut self) {
        let now = self.now;
        self.phase = if self.revoke {
            if self.remove.is_some_and(|r| r > now) {
                Phase::Scheduled
            } else {
                self.removing(Why::Revoked)
            }
        } else if self.remove.is_some_and(|r| r <= now) {
            Phase::Done(End::Lapsed)
        } else if self.start.is_some_and(|s| s > now) {
            Phase::Scheduled
        } else {
            Phase::Granting {
                attempt: 1,
                wait: None,
                stop: None,
            }
        };
    }

    fn removing(&self, why: Why) -> Phase {
        Phase::Removing {
            attempt: 1,
            wait: None,
            deactivate: self.running,
            why,
        }
    }

    fn kind(&self) -> Option<ConnectionType> {
        self.entitlement.then_some(if self.governed {
            ConnectionType::Jit
        } else {
            ConnectionType::Standing
        })
    }

    fn timers(&self) -> BTreeSet<(TimerKind, Timestamp)> {
        let mut t = BTreeSet::new();
        match &self.phase {
            Phase::Pending if !self.auto => {
                t.insert((TimerKind::ApprovalExpiry, mins(APPROVAL_WAIT_MINS)));
            }
            Phase::Scheduled => {
                if self.revoke {
                    t.insert((TimerKind::Sunset, self.remove.unwrap()));
                } else {
                    t.insert((TimerKind::Sunrise, self.start.unwrap()));
                }
            }
            Phase::Granting { wait, stop, .. } => {
                if let Some(w) = wait {
                    t.insert((TimerKind::Retry, *w));
                }
                if let (Some(r), None) = (self.remove, stop) {
                    t.insert((TimerKind::Sunset, r));
                }
            }
            Phase::Granted => {
                if let Some(r) = self.remove {
                    t.insert((TimerKind::Sunset, r));
                }
            }
            Phase::Removing { wait: Some(w), .. } => {
                t.insert((TimerKind::Retry, *w));
            }
            _ => {}
        }
        t
    }

    fn effect(&self) -> Option<Effect> {
        match &self.phase {
            Phase::Granting {
                attempt,
                wait: None,
                ..
            } => Some(Effect::Grant {
                attempt: *attempt,
                kind: self.kind(),
            }),
            Phase::Removing {
                wait: None,
                deactivate: Some(a),
                ..
            } => Some(Effect::DeactivateJit {
                activation: ActivationId::from_u128(*a),
            }),
            Phase::Removing {
                attempt,
                wait: None,
                deactivate: None,
                ..
            } => Some(Effect::Revoke { attempt: *attempt }),
            _ => None,
        }
    }

    fn status(&self) -> ItemStatus {
        match self.phase {
            Phase::Pending => ItemStatus::PendingApproval,
            Phase::Scheduled => ItemStatus::Scheduled,
            Phase::Granting { .. } => ItemStatus::Granting,
            Phase::Granted => ItemStatus::Granted,
            Phase::Removing { .. } => ItemStatus::Removing,
            Phase::Done(end) => match end {
                End::Rejected => ItemStatus::Rejected,
                End::Cancelled => ItemStatus::Cancelled,
                End::Expired => ItemStatus::ApprovalExpired,
                End::Lapsed => ItemStatus::Lapsed,
                End::Removed => ItemStatus::Removed,
                End::Failed => ItemStatus::Failed,
                End::Closed => ItemStatus::Closed,
                End::Superseded => ItemStatus::Superseded,
            },
        }
    }

    fn done(&self) -> bool {
        matches!(self.phase, Phase::Done(_))
    }

    /// Applies one operation to the model; returns whether a command is sent and accepted.
    fn step(&mut self, op: &Op) -> Option<bool> {
        let pending = self.phase == Phase::Pending;
        self.party = self.approvers.first().copied().unwrap_or("bob");
        match op {
            Op::Forward { by, to } => {
                let to = FORWARD_TO[*to];
                let ok = pending
                    && *by != By::Stranger
                    && !self.approvers.contains(to)
                    && !["alice", "carol"].contains(&to)
                    && self.forwards < MAX_FORWARDS;
                if ok {
                    if *by == By::Party {
                        self.approvers.remove(self.party);
                    } else {
                        self.approvers.clear();
                    }
                    self.approvers.insert(to);
                    self.forwards += 1;
                }
                Some(ok)
            }
            Op::Approve(by) => {
                let ok = pending && *by != By::Stranger;
                if ok {
                    self.begin();
                }
                Some(ok)
            }
            Op::Reject(by) => {
                let ok = pending && *by != By::Stranger;
                if ok {
                    self.phase = Phase::Done(End::Rejected);
                }
                Some(ok)
            }
            Op::Cancel(by) => {
                let ok = pending && *by != By::Stranger;
                if ok {
                    self.phase = Phase::Done(End::Cancelled);
                }
                Some(ok)
            }
            Op::Close { admin } => {
                let ok = *admin && !self.closed && !self.done();
                if ok {
                    self.closed = true;
                    self.phase = match self.phase.clone() {
                        Phase::Pending | Phase::Scheduled => Phase::Done(End::Closed),
                        Phase::Granting { wait: Some(_), .. } => self.removing(Why::Closed),
                        Phase::Granting {
                            attempt,
                            wait: None,
                            stop: None,
                        } => Phase::Granting {
                            attempt,
                            wait: None,
                            stop: Some(Why::Closed),
                        },
                        other => other,
                    };
                }
                Some(ok)
            }
            Op::Supersede => {
                let ok = self.phase == Phase::Granted;
                if ok {
                    self.phase = Phase::Done(End::Superseded);
                }
                Some(ok)
            }
            Op::Activate => {
                self.next_activation += 1;
                self.running = Some(self.next_activation);
                None
            }
            Op::Advance(m) => {
                self.now = self.now.saturating_add(MINUTE * *m);
                None
            }
            Op::Effect {
                ok,
                landed,
                permanent,
            } => {
                self.effect()?;
                self.run_effect(*ok, *landed, *permanent);
                Some(true)
            }
            Op::Fire(kind) => {
                let (_, due) = *self.timers().iter().find(|(k, _)| k == kind)?;
                if due > self.now {
                    return Some(false);
                }
                self.fire(*kind);
                Some(true)
            }
        }
    }

    fn run_effect(&mut self, ok: bool, landed: bool, permanent: bool) {
        let now = self.now;
        self.phase = match self.phase.clone() {
            Phase::Granting {
                attempt,
                wait: None,
                stop,
            } => {
                self.held |= ok || landed;
                match stop {
                    Some(why) => self.removing(why),
                    None if ok => Phase::Granted,
                    None if !permanent && attempt < GRANT_TRIES => Phase::Granting {
                        attempt,
                        wait: Some(now),
                        stop: None,
                    },
                    None => self.removing(Why::Failed),
                }
            }
            Phase::Removing {
                attempt,
                wait: None,
                deactivate: Some(_),
                why,
            } => {
                // The engine reports back once the activation has ended.
                self.running = None;
                Phase::Removing {
                    attempt,
                    wait: None,
                    deactivate: None,
                    why,
                }
            }
            Phase::Removing {
                attempt,
                wait: None,
                deactivate: None,
                why,
            } => {
                if ok {
                    self.held = false;
                    Phase::Done(match why {
                        Why::Revoked | Why::Sunset => End::Removed,
                        Why::Failed => End::Failed,
                        Why::Closed => End::Closed,
                    })
                } else {
                    Phase::Removing {
                        attempt,
                        wait: Some(now),
                        deactivate: None,
                        why,
                    }
                }
            }
            other => panic!("no effect pending in {other:?}"),
        };
    }

    fn fire(&mut self, kind: TimerKind) {
        self.phase = match (kind, self.phase.clone()) {
            (TimerKind::ApprovalExpiry, Phase::Pending) => Phase::Done(End::Expired),
            (TimerKind::Sunrise, Phase::Scheduled) => {
                self.begin();
                return;
            }
            (TimerKind::Sunset, Phase::Scheduled) => self.removing(Why::Revoked),
            (
                TimerKind::Sunset,
                Phase::Granting {
                    attempt,
                    wait: None,
                    ..
                },
            ) => Phase::Granting {
                attempt,
                wait: None,
                stop: Some(Why::Sunset),
            },
            (TimerKind::Sunset, Phase::Granting { .. } | Phase::Granted) => {
                self.removing(Why::Sunset)
            }
            // A retry due after the sunset removes instead of granting again.
            (TimerKind::Retry, Phase::Granting { .. })
                if self.remove.is_some_and(|r| r <= self.now) =>
            {
                self.removing(Why::Sunset)
            }
            (
                TimerKind::Retry,
                Phase::Granting {
                    attempt,
                    wait: Some(_),
                    stop,
                },
            ) => Phase::Granting {
                attempt: attempt + 1,
                wait: None,
                stop,
            },
            (
                TimerKind::Retry,
                Phase::Removing {
                    attempt,
                    wait: Some(_),
                    deactivate,
                    why,
                },
            ) => Phase::Removing {
                attempt: attempt + 1,
                wait: None,
                deactivate,
                why,
            },
            (kind, phase) => panic!("model fired {kind:?} in {phase:?}"),
        };
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            proptest::bool::weighted(0.1),
            proptest::option::of(1u32..120),
            proptest::option::of(1u32..240),
            any::<bool>(),
        )
            .prop_map(
                |(revoke, entitlement, governed, auto, duplicate, start, remove, running)| {
                    let start = if revoke { None } else { start };
                    let remove = remove.map(|r| r + start.unwrap_or(0));
                    let mut m = Model {
                        now: t0(),
                        revoke,
                        entitlement,
                        governed,
                        auto,
                        duplicate,
                        start: start.map(mins),
                        remove: remove.map(mins),
                        phase: Phase::Pending,
                        closed: false,
                        running: running.then_some(1),
                        next_activation: 1,
                        held: revoke,
                        accepted: None,
                        approvers: if auto {
                            BTreeSet::new()
                        } else {
                            BTreeSet::from(["bob"])
                        },
                        forwards: 0,
                        party: "bob",
                    };
                    if duplicate {
                        m.phase = Phase::Done(End::Cancelled);
                    } else if auto {
                        m.begin();
                    }
                    m
                },
            )
            .boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Op> {
        let by =
            || prop_oneof![3 => Just(By::Party), 1 => Just(By::Stranger), 1 => Just(By::Admin)];
        prop_oneof![
            4 => by().prop_map(Op::Approve),
            1 => by().prop_map(Op::Reject),
            1 => by().prop_map(Op::Cancel),
            1 => any::<bool>().prop_map(|admin| Op::Close { admin }),
            1 => Just(Op::Supersede),
            1 => Just(Op::Activate),
            4 => prop_oneof![0u32..5, 0u32..120].prop_map(Op::Advance),
            8 => (any::<bool>(), any::<bool>(), proptest::bool::weighted(0.1))
                .prop_map(|(ok, landed, permanent)| Op::Effect { ok, landed, permanent }),
            4 => prop_oneof![
                Just(TimerKind::ApprovalExpiry),
                Just(TimerKind::Sunrise),
                Just(TimerKind::Sunset),
                Just(TimerKind::Retry),
            ]
            .prop_map(Op::Fire),
            2 => (by(), 0..FORWARD_TO.len()).prop_map(|(by, to)| Op::Forward { by, to }),
        ]
        .boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        state.accepted = state.step(op);
        state
    }
}

struct Sut {
    item: Option<Item>,
    events: Vec<Event>,
    armed: BTreeSet<Timer>,
    policy: Policy,
    config: Config,
    /// The time of each Revoke effect started.
    revokes_started: Vec<Timestamp>,
}

impl Sut {
    fn id() -> jitflow_core::id::RequestItemId {
        item_id(AccessRequestId::from_u128(3), 0)
    }

    fn item(&self) -> &Item {
        self.item.as_ref().expect("submitted")
    }

    fn send(
        &mut self,
        m: &Model,
        actor: &Actor,
        admin: bool,
        command: Command,
    ) -> Result<Vec<Event>, Rejection> {
        let ctx = Context {
            now: m.now,
            actor,
            admin,
            policy: &self.policy,
            config: &self.config,
            running_activation: m.running.map(ActivationId::from_u128),
        };
        let before = self.item.clone();
        let result = decide(Self::id(), self.item.as_ref(), &command, &ctx);
        match &result {
            Ok(events) => {
                for e in events {
                    let after = evolve(self.item.take(), e).expect("applies");
                    for effect in &e.effects {
                        if let Effect::Grant { .. } = effect {
                            // Never provisioned before approval and sunrise, nor after sunset.
                            assert_eq!(after.approval.state, WorkItemState::Approved);
                            assert!(after.spec.start_date.is_none_or(|s| e.at >= s));
                            assert!(after.spec.remove_date.is_none_or(|r| e.at < r));
                        }
                        if let Effect::Revoke { .. } = effect {
                            self.revokes_started.push(e.at);
                        }
                    }
                    for t in &e.cancel {
                        assert!(self.armed.remove(t), "cancelled a timer never armed: {t:?}");
                    }
                    for t in &e.arm {
                        assert!(self.armed.insert(*t), "armed twice: {t:?}");
                    }
                    self.item = Some(after);
                }
                self.events.extend(events.iter().cloned());
            }
            Err(_) => assert_eq!(self.item, before, "a refusal changes nothing"),
        }
        result
    }

    fn actor(by: By, party: &str) -> (Actor, bool) {
        match by {
            By::Party => (Actor::Identity(who(party)), false),
            By::Stranger => (Actor::Identity(who("mallory")), false),
            By::Admin => (Actor::Identity(who("root")), true),
        }
    }
}

struct RequestMachine;

impl StateMachineTest for RequestMachine {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(m: &Model) -> Sut {
        let mut policy = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
        if m.governed {
            policy.entitlement_ids = vec![EntitlementId::parse("db-admins").unwrap()];
            policy.apply_to_future_assignments = true;
        }
        let mut sut = Sut {
            item: None,
            events: Vec::new(),
            armed: BTreeSet::new(),
            policy,
            config: Config {
                grant_max_attempts: GRANT_TRIES,
                stuck_after: 3,
                // Retries are due at once, so the model knows every due time.
                backoff_base: Duration::ZERO,
                backoff_cap: Duration::ZERO,
                ..Config::default()
            },
            revokes_started: Vec::new(),
        };
        let spec = ItemSpec {
            id: Sut::id(),
            request: AccessRequestId::from_u128(3),
            request_type: if m.revoke {
                RequestType::Revoke
            } else {
                RequestType::Grant
            },
            requested_for: who("alice"),
            requester: who("carol"),
            object: ObjectRef {
                kind: if m.entitlement {
                    ObjectKind::Entitlement
                } else {
                    ObjectKind::Role
                },
                id: ObjectId::parse("db-admins").unwrap(),
            },
            comment: Some("needed".into()),
            client_metadata: Default::default(),
            request_metadata: Default::default(),
            start_date: m.start,
            remove_date: m.remove,
            accounts: Vec::new(),
            native_identity: None,
            form_instance_id: None,
        };
        let approval = if m.auto {
            ApprovalStep::Auto
        } else {
            ApprovalStep::Approvers {
                approvers: vec![who("bob")],
                scheme: ApprovalScheme::Manager,
                expires_after: MINUTE * APPROVAL_WAIT_MINS,
            }
        };
        let existing = Existing {
            // A revoke is for access held (the revoke rules); a grant may duplicate one.
            assignment: if m.revoke {
                Some(Assignment {
                    origin: Origin::Requested,
                    accounts: Vec::new(),
                    start_date: None,
                    remove_date: None,
                })
            } else {
                m.duplicate.then(|| Assignment {
                    origin: Origin::Requested,
                    accounts: Vec::new(),
                    start_date: m.start,
                    remove_date: m.remove,
                })
            },
            // A revoke is a duplicate only of one in progress.
            in_progress: (m.duplicate && m.revoke)
                .then(|| item_id(AccessRequestId::from_u128(4), 0)),
        };
        let command = Command::Submit {
            spec: Box::new(spec),
            approval,
            existing,
        };
        sut.send(m, &Actor::Identity(who("carol")), false, command)
            .expect("submit");
        sut
    }

    fn apply(mut sut: Sut, m: &Model, op: Op) -> Sut {
        let command = match &op {
            Op::Approve(by) | Op::Reject(by) => {
                let (actor, admin) = Sut::actor(*by, m.party);
                let command = match op {
                    Op::Approve(_) => Command::Approve { comment: None },
                    _ => Command::Reject {
                        comment: Some("no".into()),
                    },
                };
                Some((actor, admin, command))
            }
            Op::Cancel(by) => {
                let (actor, admin) = Sut::actor(*by, "carol");
                let command = Command::Cancel {
                    comment: "mistake".into(),
                };
                Some((actor, admin, command))
            }
            Op::Close { admin } => Some((
                Actor::Identity(who("root")),
                *admin,
                Command::Close(Closure::default()),
            )),
            Op::Supersede => Some((
                Actor::System,
                false,
                Command::Supersede {
                    by: item_id(AccessRequestId::from_u128(5), 0),
                },
            )),
            Op::Forward { by, to } => {
                let (actor, admin) = Sut::actor(*by, m.party);
                let command = Command::Forward {
                    to: who(FORWARD_TO[*to]),
                    comment: "over to you".into(),
                };
                Some((actor, admin, command))
            }
            Op::Activate | Op::Advance(_) => None,
            Op::Effect {
                ok,
                landed: _,
                permanent,
            } => sut.item().pending_effects().first().map(|e| {
                let command = match (*e, ok) {
                    (Effect::Grant { attempt, .. }, true) => Command::GrantSucceeded { attempt },
                    (Effect::Grant { attempt, .. }, false) => Command::GrantFailed {
                        attempt,
                        error: "timeout".into(),
                        retryable: !permanent,
                    },
                    (Effect::DeactivateJit { activation }, _) => {
                        Command::JitDeactivated { activation }
                    }
                    (Effect::Revoke { attempt }, true) => Command::RevokeSucceeded { attempt },
                    (Effect::Revoke { attempt }, false) => Command::RevokeFailed {
                        attempt,
                        error: "down".into(),
                    },
                };
                (Actor::System, false, command)
            }),
            Op::Fire(kind) => sut
                .item()
                .timers()
                .into_iter()
                .find(|t| t.kind == *kind)
                .map(|t| (Actor::System, false, Command::TimerFired(t))),
        };
        match (command, m.accepted) {
            (None, None) => {}
            (Some((actor, admin, command)), Some(expected)) => {
                let result = sut.send(m, &actor, admin, command.clone());
                match (&result, expected) {
                    (Ok(_), true) => {}
                    (Err(r), false) => {
                        if let Op::Fire(_) = op {
                            assert!(matches!(r, Rejection::TimerNotDue { .. }), "{r:?}");
                        }
                    }
                    _ => panic!(
                        "core and model disagree on {command:?}: core {result:?}, model {expected} (now {:?})",
                        m.phase
                    ),
                }
            }
            (command, expected) => panic!(
                "core and model disagree on whether {op:?} sends a command: {command:?} vs {expected:?} in {:?}",
                m.phase
            ),
        }
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        let item = sut.item();
        item.check_invariants().unwrap();
        assert_eq!(item.status, m.status(), "model phase {:?}", m.phase);
        let timers: BTreeSet<Timer> = item.timers().into_iter().collect();
        assert_eq!(timers, sut.armed, "timers armed differ from the state's");
        let expected: BTreeSet<(TimerKind, Timestamp)> =
            timers.iter().map(|t| (t.kind, t.due)).collect();
        assert_eq!(expected, m.timers(), "timers differ from the model's");
        assert_eq!(
            item.pending_effects(),
            m.effect().into_iter().collect::<Vec<_>>()
        );
        assert_eq!(item.closure.is_some(), m.closed);
        let approvers: Vec<&str> = item.approval.approvers.iter().map(|a| a.as_str()).collect();
        assert_eq!(approvers, m.approvers.iter().copied().collect::<Vec<_>>());
        assert_eq!(item.forwards.len(), m.forwards);
    }

    fn teardown(mut sut: Sut, mut m: Model) {
        // Approve what is pending, then let effects succeed and time pass until nothing is left.
        for _ in 0..32 {
            let op = if m.phase == Phase::Pending {
                Op::Approve(By::Admin)
            } else if m.effect().is_some() {
                Op::Effect {
                    ok: true,
                    landed: false,
                    permanent: false,
                }
            } else if let Some((kind, due)) = m.timers().into_iter().min_by_key(|(_, due)| *due) {
                m.now = m.now.max(due);
                Op::Fire(kind)
            } else {
                break;
            };
            m = Reference::apply(m, &op);
            sut = Self::apply(sut, &m, op);
            Self::check_invariants(&sut, &m);
        }
        let item = sut.item();
        assert!(item.timers().is_empty() && item.pending_effects().is_empty());
        match item.status {
            ItemStatus::Granted => assert!(m.held && item.spec.remove_date.is_none()),
            // The later item owns the access now.
            ItemStatus::Superseded => {}
            // Whatever this item granted or was asked to revoke is gone.
            _ if item.removal.is_some() => {
                assert!(!m.held, "access left held by a {:?} item", item.status)
            }
            // It never acted: a grant gave nothing, a revoke removed nothing.
            _ => assert_eq!(m.held, m.revoke, "{:?}", item.status),
        }
        assert!(item.status.is_terminal() || item.status == ItemStatus::Granted);
        if let (Some(remove), Some(RemovalReason::Sunset)) = (
            item.spec.remove_date,
            item.removal.as_ref().map(|r| r.reason),
        ) {
            assert!(
                sut.revokes_started.iter().all(|at| *at >= remove),
                "removed before the sunset"
            );
        }
        // Replaying the log gives the same item.
        let mut replay = None;
        for e in &sut.events {
            replay = Some(evolve(replay, e).unwrap());
        }
        assert_eq!(replay.as_ref(), sut.item.as_ref());
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_request_core_follows_the_model(sequential 1..60 => RequestMachine);
}
