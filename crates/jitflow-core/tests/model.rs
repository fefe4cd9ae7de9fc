//! Model-based property test of the lifecycle.
//!
//! Random sequences of commands, effect outcomes, policy changes and time advances drive
//! `decide`/`evolve` and, beside them, a small reference model of the workflow's phases written
//! independently of the core. A fake target system records whether access is really held (a
//! failed grant may or may not have landed, as in real life). At every step:
//! - the core accepts exactly what the model accepts, and a refusal changes nothing;
//! - the connection's state is the one the model's phase implies;
//! - an ACTIVE JIT connection has its expiry armed at `jit.expiration`;
//! - an extension never takes the expiry past what the policy allowed when it was granted;
//! - a timer delivered before its due time is refused;
//! - a JIT connection at rest never leaves access held on the target.
//!
//! At the end, effects succeed and time passes: every activation ends, no access is held on a
//! JIT connection, and replaying the events from the start gives the same state.

use std::time::Duration;

use jitflow_core::activation::{ActivationStatus, EndReason};
use jitflow_core::connection::{Connection, ConnectionSpec, ConnectionState, ConnectionType};
use jitflow_core::id::{
    AccountId, ActivationId, ConnectionId, EntitlementId, IdentityId, SourceId,
};
use jitflow_core::lifecycle::{
    Actor, Command, Config, Context, Effect, Event, Rejection, RejectionKind, Timer, TimerKind,
    decide, evolve,
};
use jitflow_core::policy::Policy;
use jitflow_core::time::{Minutes, Timestamp};
use proptest::prelude::*;

const CONN: ConnectionId = ConnectionId::from_u128(42);

#[derive(Debug, Clone)]
enum Op {
    Activate(Option<u32>),
    Extend(Option<u32>),
    Deactivate,
    ChangeType(ConnectionType),
    SetPolicy {
        max: Option<u32>,
        max_ext: Option<u32>,
        default: Option<u32>,
        default_ext: Option<u32>,
    },
    Advance(u32),
    /// Run the pending effect: `ok`, else fail; `landed`: a failed grant took effect anyway;
    /// `permanent`: a failed grant will never succeed.
    Effect {
        ok: bool,
        landed: bool,
        permanent: bool,
    },
    FireDue,
    FireEarly,
}

fn kind_strategy() -> impl Strategy<Value = ConnectionType> {
    prop_oneof![
        6 => Just(ConnectionType::Jit),
        1 => Just(ConnectionType::Standing),
        1 => Just(ConnectionType::Na),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let mins = || proptest::option::weighted(0.8, 0u32..200);
    prop_oneof![
        4 => mins().prop_map(Op::Activate),
        3 => proptest::option::weighted(0.8, 0u32..40).prop_map(Op::Extend),
        2 => Just(Op::Deactivate),
        1 => kind_strategy().prop_map(Op::ChangeType),
        1 => (mins(), mins(), mins(), mins()).prop_map(|(max, max_ext, default, default_ext)| {
            Op::SetPolicy { max, max_ext, default, default_ext }
        }),
        4 => prop_oneof![0u32..120, 0u32..20_000].prop_map(Op::Advance),
        8 => (any::<bool>(), any::<bool>(), proptest::bool::weighted(0.1))
            .prop_map(|(ok, landed, permanent)| Op::Effect { ok, landed, permanent }),
        3 => Just(Op::FireDue),
        1 => Just(Op::FireEarly),
    ]
}

/// The reference model's phase of the connection.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// No access moving; `expired`: the last activation ended by its timer.
    Rest {
        expired: bool,
    },
    /// STANDING access held.
    Held,
    Validating {
        period: u32,
    },
    Granting {
        attempt: u32,
        cancel: bool,
        period: u32,
    },
    GrantWait {
        attempt: u32,
        period: u32,
    },
    Active {
        expires: Timestamp,
        limit: Timestamp,
    },
    Revoking {
        attempt: u32,
        reason: EndReason,
    },
    RevokeWait {
        attempt: u32,
        reason: EndReason,
    },
    StandingRevoking {
        attempt: u32,
    },
    StandingWait {
        attempt: u32,
    },
}

struct Harness {
    state: Option<Connection>,
    events: Vec<Event>,
    now: Timestamp,
    policy: Policy,
    config: Config,
    kind: ConnectionType,
    phase: Phase,
    /// Whether the fake target holds the access.
    held: bool,
    next_activation: u128,
}

fn spec(kind: ConnectionType) -> ConnectionSpec {
    ConnectionSpec {
        id: CONN,
        identity: IdentityId::parse("bob").unwrap(),
        identity_name: "Bob".into(),
        account: AccountId::parse("bob-adm").unwrap(),
        account_name: "bob.adm".into(),
        entitlement: EntitlementId::parse("root").unwrap(),
        entitlement_name: "root".into(),
        attribute_name: "group".into(),
        attribute_value: "wheel".into(),
        privilege_level: None,
        source: SourceId::parse("linux").unwrap(),
        source_name: "Linux".into(),
        kind,
        standalone: false,
    }
}

impl Harness {
    fn new(kind: ConnectionType) -> Harness {
        let mut policy = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
        policy.max_activation_period = Some(Minutes(120));
        policy.default_activation_period = Some(Minutes(30));
        policy.max_extension = Some(Minutes(60));
        policy.default_extension = Some(Minutes(10));
        let mut h = Harness {
            state: None,
            events: Vec::new(),
            now: Timestamp::from_millis(1_800_000_000_000).unwrap(),
            policy,
            config: Config {
                grant_max_attempts: 3,
                stuck_after: 4,
                backoff_base: Duration::from_secs(2),
                backoff_cap: Duration::from_secs(60),
                warning_lead: Duration::from_secs(300),
                jitter_seed: 7,
            },
            kind,
            phase: if kind == ConnectionType::Standing {
                Phase::Held
            } else {
                Phase::Rest { expired: false }
            },
            held: kind == ConnectionType::Standing,
            next_activation: 1,
        };
        h.send(Command::Register(spec(kind)), true)
            .expect("register");
        h
    }

    fn c(&self) -> &Connection {
        self.state.as_ref().expect("registered")
    }

    /// Sends a command; `expect_ok` is the model's prediction, checked against the core.
    fn send(&mut self, command: Command, expect_ok: bool) -> Result<Vec<Event>, Rejection> {
        let actor = Actor::Identity(IdentityId::parse("bob").unwrap());
        let ctx = Context {
            now: self.now,
            actor: &actor,
            policy: &self.policy,
            config: &self.config,
        };
        let before = self.state.clone();
        let result = decide(CONN, self.state.as_ref(), &command, &ctx);
        match &result {
            Ok(events) => {
                assert!(
                    expect_ok,
                    "core accepted what the model refuses: {command:?} in {:?}",
                    self.phase
                );
                for e in events {
                    for t in &e.arm {
                        assert!(t.due >= e.at, "timer armed in the past: {t:?}");
                    }
                    self.state = evolve(self.state.take(), e).expect("applies");
                }
                self.events.extend(events.iter().cloned());
            }
            Err(r) => {
                assert!(
                    !expect_ok,
                    "core refused what the model accepts: {command:?} in {:?}: {r}",
                    self.phase
                );
                assert_eq!(self.state, before, "a refusal changes nothing");
            }
        }
        result
    }

    fn resolve(
        requested: Option<u32>,
        default: Option<Minutes>,
        max: Option<Minutes>,
    ) -> Option<u32> {
        let m = requested.or(default.map(|d| d.get()))?;
        let max = max.map_or(525_600, |x| x.get().min(525_600));
        (1..=max).contains(&m).then_some(m)
    }

    fn step(&mut self, op: &Op) {
        match op.clone() {
            Op::Activate(period) => {
                let id = ActivationId::from_u128(self.next_activation);
                self.next_activation += 1;
                let resolved = Self::resolve(
                    period,
                    self.policy.default_activation_period,
                    self.policy.max_activation_period,
                );
                let ok = self.kind == ConnectionType::Jit
                    && matches!(self.phase, Phase::Rest { .. })
                    && resolved.is_some();
                let cmd = Command::Activate {
                    activation: id,
                    period: period.map(Minutes),
                    client: None,
                };
                if self.send(cmd, ok).is_ok() {
                    self.phase = Phase::Validating {
                        period: resolved.unwrap(),
                    };
                }
            }
            Op::Extend(by) => {
                let phase = self.phase.clone();
                let by_ok = Self::resolve(by, self.policy.default_extension, None);
                let ok = match &phase {
                    Phase::Active { expires, .. } => {
                        *expires > self.now
                            && by_ok.is_some_and(|b| {
                                let used = self.c().activation.as_ref().unwrap().extended_by.get();
                                let cap = self
                                    .policy
                                    .max_extension
                                    .map_or(525_600, |m| m.get().min(525_600));
                                used + b <= cap
                            })
                    }
                    _ => false,
                };
                if self
                    .send(
                        Command::Extend {
                            by: by.map(Minutes),
                            client: None,
                        },
                        ok,
                    )
                    .is_ok()
                {
                    let Phase::Active { expires, limit } = phase else {
                        unreachable!()
                    };
                    let new = expires.plus_minutes(Minutes(by_ok.unwrap()));
                    // What the policy allows now: provisioned + period + its total extension cap.
                    let a = self.c().activation.as_ref().unwrap();
                    let allowed = a
                        .provisioned_at
                        .unwrap()
                        .plus_minutes(a.period)
                        .plus_minutes(self.policy.max_extension.unwrap_or(Minutes(525_600)));
                    assert!(
                        new <= allowed,
                        "extension past the policy: {new} > {allowed}"
                    );
                    self.phase = Phase::Active {
                        expires: new,
                        limit: limit.max(allowed),
                    };
                }
            }
            Op::Deactivate => {
                let next = match self.phase {
                    Phase::Validating { .. } => Some(Phase::Rest { expired: false }),
                    Phase::Granting {
                        attempt,
                        cancel: false,
                        period,
                    } => Some(Phase::Granting {
                        attempt,
                        cancel: true,
                        period,
                    }),
                    Phase::GrantWait { .. } | Phase::Active { .. } => Some(Phase::Revoking {
                        attempt: 1,
                        reason: EndReason::Deactivated,
                    }),
                    _ => None,
                };
                if self
                    .send(Command::Deactivate { client: None }, next.is_some())
                    .is_ok()
                {
                    self.phase = next.unwrap();
                }
            }
            Op::ChangeType(to) => {
                let from = self.kind;
                let at_rest = matches!(self.phase, Phase::Rest { .. });
                let next = if to == from {
                    Some(self.phase.clone())
                } else {
                    match (from, to, &self.phase) {
                        (_, ConnectionType::Na, _) | (ConnectionType::Na, _, _) => {
                            at_rest.then(|| self.phase.clone())
                        }
                        (ConnectionType::Jit, ConnectionType::Standing, Phase::Active { .. }) => {
                            Some(Phase::Held)
                        }
                        (ConnectionType::Standing, ConnectionType::Jit, Phase::Held) => {
                            Some(Phase::StandingRevoking { attempt: 1 })
                        }
                        _ => at_rest.then(|| self.phase.clone()),
                    }
                };
                if self.send(Command::ChangeType(to), next.is_some()).is_ok() {
                    self.kind = to;
                    self.phase = next.unwrap();
                }
            }
            Op::SetPolicy {
                max,
                max_ext,
                default,
                default_ext,
            } => {
                self.policy.max_activation_period = max.map(Minutes);
                self.policy.max_extension = max_ext.map(Minutes);
                self.policy.default_activation_period = default.map(Minutes);
                self.policy.default_extension = default_ext.map(Minutes);
            }
            Op::Advance(secs) => {
                self.now = self.now.saturating_add(Duration::from_secs(secs.into()))
            }
            Op::Effect {
                ok,
                landed,
                permanent,
            } => self.run_effect(ok, landed, permanent),
            Op::FireDue => {
                let due: Vec<Timer> = self
                    .c()
                    .timers()
                    .into_iter()
                    .filter(|t| t.due <= self.now)
                    .collect();
                if let Some(t) = due.into_iter().min() {
                    self.fire(t);
                }
            }
            Op::FireEarly => {
                if let Some(t) = self.c().timers().into_iter().find(|t| t.due > self.now) {
                    let r = self.send(Command::TimerFired(t), false).unwrap_err();
                    assert!(matches!(r, Rejection::TimerNotDue { .. }), "{r:?}");
                }
            }
        }
        self.check();
    }

    fn fire(&mut self, t: Timer) {
        let next = match (t.kind, self.phase.clone()) {
            (TimerKind::Expiry, Phase::Active { expires, .. }) => {
                assert_eq!(t.due, expires);
                Phase::Revoking {
                    attempt: 1,
                    reason: EndReason::Expired,
                }
            }
            // A warning delivered once the expiry is due too expires the activation instead.
            (TimerKind::Warning, Phase::Active { expires, .. }) if expires <= self.now => {
                Phase::Revoking {
                    attempt: 1,
                    reason: EndReason::Expired,
                }
            }
            (TimerKind::Warning, p @ Phase::Active { .. }) => p,
            (TimerKind::Retry, Phase::GrantWait { attempt, period }) => Phase::Granting {
                attempt: attempt + 1,
                cancel: false,
                period,
            },
            (TimerKind::Retry, Phase::RevokeWait { attempt, reason }) => Phase::Revoking {
                attempt: attempt + 1,
                reason,
            },
            (TimerKind::StandingRetry, Phase::StandingWait { attempt }) => {
                Phase::StandingRevoking {
                    attempt: attempt + 1,
                }
            }
            (kind, phase) => panic!("core armed {kind:?} in model phase {phase:?}"),
        };
        self.send(Command::TimerFired(t), true).unwrap();
        self.phase = next;
    }

    fn run_effect(&mut self, ok: bool, landed: bool, permanent: bool) {
        let effects = self.c().pending_effects();
        assert!(effects.len() <= 1, "one effect at a time: {effects:?}");
        let Some(effect) = effects.first().copied() else {
            return;
        };
        let phase = self.phase.clone();
        let (cmd, next) = match (effect, phase) {
            (Effect::Validate { activation }, Phase::Validating { period }) => {
                if ok {
                    (
                        Command::ValidationPassed { activation },
                        Phase::Granting {
                            attempt: 1,
                            cancel: false,
                            period,
                        },
                    )
                } else {
                    (
                        Command::ValidationRefused {
                            activation,
                            reason: "refused".into(),
                        },
                        Phase::Rest { expired: false },
                    )
                }
            }
            (
                Effect::Grant {
                    activation,
                    attempt,
                },
                Phase::Granting {
                    attempt: a,
                    cancel,
                    period,
                },
            ) => {
                assert_eq!(attempt, a);
                // The target: a success grants; a failure may have landed anyway.
                self.held |= ok || landed;
                let revoke = |reason| Phase::Revoking { attempt: 1, reason };
                if ok {
                    let next = if cancel {
                        revoke(EndReason::Deactivated)
                    } else {
                        let expires = self.now.plus_minutes(Minutes(period));
                        Phase::Active {
                            expires,
                            limit: expires,
                        }
                    };
                    (
                        Command::GrantSucceeded {
                            activation,
                            attempt,
                        },
                        next,
                    )
                } else {
                    let next = if cancel {
                        revoke(EndReason::Deactivated)
                    } else if !permanent && attempt < self.config.grant_max_attempts {
                        Phase::GrantWait { attempt, period }
                    } else {
                        revoke(EndReason::ProvisionFailed)
                    };
                    let cmd = Command::GrantFailed {
                        activation,
                        attempt,
                        error: "boom".into(),
                        retryable: !permanent,
                    };
                    (cmd, next)
                }
            }
            (
                Effect::Revoke {
                    activation,
                    attempt,
                },
                Phase::Revoking { attempt: a, reason },
            ) => {
                assert_eq!(attempt, a);
                if ok {
                    self.held = false;
                    (
                        Command::RevokeSucceeded {
                            activation,
                            attempt,
                        },
                        Phase::Rest {
                            expired: reason == EndReason::Expired,
                        },
                    )
                } else {
                    (
                        Command::RevokeFailed {
                            activation,
                            attempt,
                            error: "down".into(),
                        },
                        Phase::RevokeWait { attempt, reason },
                    )
                }
            }
            (Effect::RevokeStanding { attempt }, Phase::StandingRevoking { attempt: a }) => {
                assert_eq!(attempt, a);
                if ok {
                    self.held = false;
                    (
                        Command::StandingRevokeSucceeded { attempt },
                        Phase::Rest { expired: false },
                    )
                } else {
                    (
                        Command::StandingRevokeFailed {
                            attempt,
                            error: "down".into(),
                        },
                        Phase::StandingWait { attempt },
                    )
                }
            }
            (effect, phase) => panic!("core asks for {effect:?} in model phase {phase:?}"),
        };
        self.send(cmd, true).unwrap();
        self.phase = next;
    }

    fn check(&self) {
        let c = self.c();
        c.check_invariants().unwrap();
        assert_eq!(c.kind(), self.kind);
        let expected = match &self.phase {
            Phase::Rest { expired: true } => ConnectionState::Expired,
            Phase::Rest { expired: false } => ConnectionState::Available,
            Phase::Held | Phase::Active { .. } => ConnectionState::Active,
            Phase::Validating { .. }
            | Phase::Granting { cancel: false, .. }
            | Phase::GrantWait { .. } => ConnectionState::Activating,
            Phase::Granting { cancel: true, .. }
            | Phase::Revoking { .. }
            | Phase::RevokeWait { .. }
            | Phase::StandingRevoking { .. }
            | Phase::StandingWait { .. } => ConnectionState::Deactivating,
        };
        assert_eq!(c.state, expected, "model phase {:?}", self.phase);
        if let Phase::Active { expires, limit } = self.phase {
            let timers = c.timers();
            assert!(
                timers.contains(&Timer {
                    due: expires,
                    kind: TimerKind::Expiry
                }),
                "ACTIVE without its expiry armed: {timers:?}"
            );
            assert_eq!(c.jit.expiration, Some(expires));
            assert!(expires <= limit);
        }
        for t in c.timers() {
            if t.kind == TimerKind::Retry || t.kind == TimerKind::StandingRetry {
                assert!(t.due.since(c.modified) <= self.config.backoff_cap);
            }
        }
        if self.kind == ConnectionType::Jit && matches!(self.phase, Phase::Rest { .. }) {
            assert!(
                !self.held,
                "JIT connection at rest with access held on the target"
            );
        }
    }

    /// Effects succeed and time passes until nothing is left to do.
    fn drain(&mut self) {
        for _ in 0..64 {
            if !self.c().pending_effects().is_empty() {
                self.run_effect(true, false, false);
            } else if let Some(t) = self.c().timers().into_iter().min() {
                self.now = self.now.max(t.due);
                self.fire(t);
            } else {
                break;
            }
            self.check();
        }
        let c = self.c();
        assert!(
            c.timers().is_empty() && c.pending_effects().is_empty(),
            "not quiescent: {c:?}"
        );
        assert!(
            c.running_activation().is_none(),
            "an activation never ended"
        );
        if self.kind == ConnectionType::Jit {
            assert!(!self.held, "access outlived its activation");
        }
        if let Some(a) = &c.activation {
            assert!(a.status.is_terminal());
            if a.status == ActivationStatus::Completed && a.end_reason == Some(EndReason::Expired) {
                assert!(
                    c.jit.deprovision.unwrap() >= a.expires_at.unwrap(),
                    "revoked before expiry"
                );
            }
        }
    }
}

fn run(kind: ConnectionType, ops: &[Op]) -> Harness {
    let mut h = Harness::new(kind);
    for op in ops {
        h.step(op);
    }
    h.drain();
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_core_follows_the_model(kind in kind_strategy(), ops in proptest::collection::vec(op_strategy(), 0..80)) {
        let h = run(kind, &ops);
        // Replaying the events from the start gives the same state.
        let mut replay = None;
        for e in &h.events {
            replay = evolve(replay, e).unwrap();
        }
        prop_assert_eq!(&replay, &h.state);
        // The same inputs give the same events (decide is deterministic).
        let again = run(kind, &ops);
        prop_assert_eq!(&again.events, &h.events);
        // Rejections of user commands are client errors, never "stale".
        let _ = RejectionKind::Stale;
    }
}
