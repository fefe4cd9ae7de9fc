//! Table tests: every row of the lifecycle table in DESIGN.md and the edge cases it names.

use std::time::Duration;

use jitflow_core::activation::{ActivationStatus, EndReason};
use jitflow_core::connection::{Connection, ConnectionSpec, ConnectionState, ConnectionType};
use jitflow_core::id::{
    AccountId, ActivationId, ConnectionId, EntitlementId, IdentityId, SourceId,
};
use jitflow_core::lifecycle::{
    Actor, Change, Command, Config, Context, Drift, Effect, Notice, Rejection, RejectionKind,
    Timer, TimerKind, decide, evolve,
};
use jitflow_core::policy::{MissingAccessAction, Policy};
use jitflow_core::time::{Minutes, Timestamp};

const CONN: ConnectionId = ConnectionId::from_u128(0x757f_b803_9024_5861_e510_83a5_6e4c_5bd3);
const A1: ActivationId = ActivationId::from_u128(1);
const A2: ActivationId = ActivationId::from_u128(2);

fn spec(kind: ConnectionType) -> ConnectionSpec {
    ConnectionSpec {
        id: CONN,
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
        kind,
        standalone: false,
    }
}

fn policy() -> Policy {
    let mut p = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
    p.max_activation_period = Some(Minutes(120));
    p.default_activation_period = Some(Minutes(60));
    p.max_extension = Some(Minutes(30));
    p.default_extension = Some(Minutes(15));
    p
}

/// A connection driven through decide + evolve, with its own clock.
struct World {
    state: Option<Connection>,
    now: Timestamp,
    policy: Policy,
    config: Config,
    actor: Actor,
    events: Vec<jitflow_core::lifecycle::Event>,
}

impl World {
    fn new() -> World {
        World {
            state: None,
            now: Timestamp::from_millis(1_700_000_000_000).unwrap(),
            policy: policy(),
            config: Config {
                warning_lead: Duration::from_secs(600),
                ..Config::default()
            },
            actor: Actor::Identity(IdentityId::parse("alice").unwrap()),
            events: Vec::new(),
        }
    }

    fn with(kind: ConnectionType) -> World {
        let mut w = World::new();
        w.ok(Command::Register(spec(kind)));
        w
    }

    fn try_send(
        &mut self,
        command: Command,
    ) -> Result<Vec<jitflow_core::lifecycle::Event>, Rejection> {
        let ctx = Context {
            now: self.now,
            actor: &self.actor,
            policy: &self.policy,
            config: &self.config,
        };
        let events = decide(CONN, self.state.as_ref(), &command, &ctx)?;
        for e in &events {
            self.state = evolve(self.state.take(), e).expect("decided events apply");
        }
        self.events.extend(events.iter().cloned());
        Ok(events)
    }

    fn ok(&mut self, command: Command) -> jitflow_core::lifecycle::Event {
        let mut events = self.try_send(command).expect("accepted");
        assert_eq!(events.len(), 1);
        events.remove(0)
    }

    fn refused(&mut self, command: Command) -> Rejection {
        let before = self.state.clone();
        let n = self.events.len();
        let r = self.try_send(command).expect_err("refused");
        assert_eq!(self.state, before, "a refusal changes nothing");
        assert_eq!(self.events.len(), n);
        r
    }

    fn c(&self) -> &Connection {
        self.state.as_ref().expect("registered")
    }

    fn status(&self) -> ActivationStatus {
        self.c().activation.as_ref().expect("activation").status
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
    }

    fn timer(&self, kind: TimerKind) -> Timer {
        *self
            .c()
            .timers()
            .iter()
            .find(|t| t.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} timer in {:?}", self.c().timers()))
    }

    fn fire(&mut self, kind: TimerKind) -> jitflow_core::lifecycle::Event {
        let t = self.timer(kind);
        if self.now < t.due {
            self.now = t.due;
        }
        self.ok(Command::TimerFired(t))
    }

    fn activate(&mut self, period: Option<u32>) {
        self.ok(Command::Activate {
            activation: A1,
            period: period.map(Minutes),
            client: None,
        });
    }

    /// Activate and provision: ACTIVE.
    fn active(&mut self, period: u32) {
        self.activate(Some(period));
        self.ok(Command::ValidationPassed { activation: A1 });
        self.ok(Command::GrantSucceeded {
            activation: A1,
            attempt: 1,
        });
    }
}

#[test]
fn register_jit_is_available_and_standing_is_held() {
    let w = World::with(ConnectionType::Jit);
    assert_eq!(w.c().state, ConnectionState::Available);
    let w = World::with(ConnectionType::Standing);
    assert_eq!(w.c().state, ConnectionState::Active);
}

#[test]
fn activate_from_available_validates_then_grants() {
    let mut w = World::with(ConnectionType::Jit);
    let e = w.ok(Command::Activate {
        activation: A1,
        period: Some(Minutes(90)),
        client: None,
    });
    assert_eq!(
        e.change,
        Change::ActivationRequested {
            period: Minutes(90)
        }
    );
    assert_eq!(e.effects, vec![Effect::Validate { activation: A1 }]);
    assert_eq!(e.notice(w.config.stuck_after), Some(Notice::Started));
    assert_eq!(w.c().state, ConnectionState::Activating);
    assert_eq!(w.status(), ActivationStatus::Creating);
    let e = w.ok(Command::ValidationPassed { activation: A1 });
    assert_eq!(
        e.effects,
        vec![Effect::Grant {
            activation: A1,
            attempt: 1
        }]
    );
    assert_eq!(w.status(), ActivationStatus::Activating);
}

#[test]
fn activate_without_period_uses_the_policy_default() {
    let mut w = World::with(ConnectionType::Jit);
    w.activate(None);
    assert_eq!(w.c().activation.as_ref().unwrap().period, Minutes(60));
    let mut w = World::with(ConnectionType::Jit);
    w.policy.default_activation_period = None;
    assert_eq!(
        w.refused(Command::Activate {
            activation: A1,
            period: None,
            client: None
        }),
        Rejection::PeriodRequired("activationPeriodMins")
    );
}

#[test]
fn activate_refuses_bad_periods_types_and_states() {
    let mut w = World::with(ConnectionType::Jit);
    for bad in [0, 121] {
        let r = w.refused(Command::Activate {
            activation: A1,
            period: Some(Minutes(bad)),
            client: None,
        });
        assert!(
            matches!(r, Rejection::PeriodOutOfRange { max: 120, .. }),
            "{r:?}"
        );
        assert_eq!(r.kind(), RejectionKind::Invalid);
    }
    let mut s = World::with(ConnectionType::Standing);
    let r = s.refused(Command::Activate {
        activation: A1,
        period: Some(Minutes(5)),
        client: None,
    });
    assert!(matches!(r, Rejection::WrongType { .. }));
    assert_eq!(r.kind(), RejectionKind::Conflict);
    w.activate(Some(10));
    let r = w.refused(Command::Activate {
        activation: A2,
        period: Some(Minutes(5)),
        client: None,
    });
    assert!(matches!(
        r,
        Rejection::WrongState {
            state: "ACTIVATING",
            ..
        }
    ));
    let mut none = World::new();
    let r = none.refused(Command::Activate {
        activation: A1,
        period: Some(Minutes(5)),
        client: None,
    });
    assert_eq!(r, Rejection::NotFound(CONN));
    assert_eq!(r.kind(), RejectionKind::NotFound);
}

#[test]
fn provisioned_arms_expiry_and_warning() {
    let mut w = World::with(ConnectionType::Jit);
    w.activate(Some(60));
    w.ok(Command::ValidationPassed { activation: A1 });
    let start = w.now;
    let e = w.ok(Command::GrantSucceeded {
        activation: A1,
        attempt: 1,
    });
    let expiry = start.plus_minutes(Minutes(60));
    assert_eq!(w.c().state, ConnectionState::Active);
    assert_eq!(w.c().jit.expiration, Some(expiry));
    assert_eq!(w.c().jit.provision, Some(start));
    assert!(e.arm.contains(&Timer {
        due: expiry,
        kind: TimerKind::Expiry
    }));
    assert!(e.arm.contains(&Timer {
        due: expiry.saturating_sub(Duration::from_secs(600)),
        kind: TimerKind::Warning
    }));
    assert_eq!(e.notice(w.config.stuck_after), Some(Notice::Provisioned));
}

#[test]
fn the_policy_warning_lead_replaces_the_engine_setting() {
    let mut w = World::with(ConnectionType::Jit);
    w.policy.expiry_warning = Some(Minutes(25));
    w.activate(Some(60));
    w.ok(Command::ValidationPassed { activation: A1 });
    let expiry = w.now.plus_minutes(Minutes(60));
    let e = w.ok(Command::GrantSucceeded {
        activation: A1,
        attempt: 1,
    });
    let warning = expiry.saturating_sub(Duration::from_secs(25 * 60));
    assert_ne!(
        Duration::from_secs(25 * 60),
        w.config.warning_lead,
        "the policy's lead is not the engine's"
    );
    assert!(
        e.arm.contains(&Timer {
            due: warning,
            kind: TimerKind::Warning
        }),
        "{:?}",
        e.arm
    );
    // An extension recomputes the warning with the lead the policy has then.
    w.policy.expiry_warning = None;
    let e = w.ok(Command::Extend {
        by: Some(Minutes(10)),
        client: None,
    });
    let extended = expiry.plus_minutes(Minutes(10));
    assert!(e.arm.contains(&Timer {
        due: extended.saturating_sub(w.config.warning_lead),
        kind: TimerKind::Warning
    }));
}

#[test]
fn full_expiry_path_ends_completed_and_expired() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(60);
    let e = w.fire(TimerKind::Warning);
    assert_eq!(e.notice(w.config.stuck_after), Some(Notice::ExpiringSoon));
    let e = w.fire(TimerKind::Expiry);
    assert_eq!(e.change, Change::Expired);
    assert_eq!(
        e.effects,
        vec![Effect::Revoke {
            activation: A1,
            attempt: 1
        }]
    );
    assert_eq!(w.c().state, ConnectionState::Deactivating);
    assert!(w.c().timers().is_empty());
    let e = w.ok(Command::RevokeSucceeded {
        activation: A1,
        attempt: 1,
    });
    assert_eq!(e.notice(w.config.stuck_after), Some(Notice::Expired));
    assert_eq!(w.c().state, ConnectionState::Expired);
    assert_eq!(w.status(), ActivationStatus::Completed);
    assert!(w.c().jit.deprovision.is_some());
    // EXPIRED may be activated again, with a new id.
    w.ok(Command::Activate {
        activation: A2,
        period: Some(Minutes(5)),
        client: None,
    });
    assert_eq!(w.c().state, ConnectionState::Activating);
    assert_eq!(
        w.c().jit.deprovision,
        None,
        "jit times belong to the latest activation"
    );
}

#[test]
fn deactivate_active_revokes_and_ends_revoked_available() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(60);
    let e = w.ok(Command::Deactivate { client: None });
    assert_eq!(
        e.cancel.len(),
        2,
        "expiry and warning cancelled: {:?}",
        e.cancel
    );
    assert_eq!(w.c().state, ConnectionState::Deactivating);
    let e = w.ok(Command::RevokeSucceeded {
        activation: A1,
        attempt: 1,
    });
    assert_eq!(e.notice(w.config.stuck_after), Some(Notice::Deactivated));
    assert_eq!(w.c().state, ConnectionState::Available);
    assert_eq!(w.status(), ActivationStatus::Revoked);
    assert_eq!(
        w.c().activation.as_ref().unwrap().end_reason,
        Some(EndReason::Deactivated)
    );
}

#[test]
fn extend_moves_expiry_and_warning_within_the_cap() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(60);
    let old = w.timer(TimerKind::Expiry).due;
    let e = w.ok(Command::Extend {
        by: None,
        client: None,
    });
    let new = old.plus_minutes(Minutes(15));
    assert_eq!(
        e.change,
        Change::Extended {
            by: Minutes(15),
            expires_at: new,
            warn_at: Some(new.saturating_sub(Duration::from_secs(600)))
        }
    );
    assert!(
        e.cancel
            .iter()
            .any(|t| t.kind == TimerKind::Expiry && t.due == old)
    );
    assert!(
        e.arm
            .iter()
            .any(|t| t.kind == TimerKind::Expiry && t.due == new)
    );
    assert_eq!(e.notice(w.config.stuck_after), Some(Notice::Extended));
    w.ok(Command::Extend {
        by: Some(Minutes(15)),
        client: None,
    });
    let r = w.refused(Command::Extend {
        by: Some(Minutes(1)),
        client: None,
    });
    assert_eq!(
        r,
        Rejection::ExtensionOverCap {
            requested: 1,
            used: 30,
            cap: 30
        }
    );
    assert_eq!(w.c().activation.as_ref().unwrap().extensions, 2);
}

#[test]
fn extend_or_deactivate_without_running_activation_is_refused() {
    let mut w = World::with(ConnectionType::Jit);
    assert_eq!(
        w.refused(Command::Extend {
            by: Some(Minutes(5)),
            client: None
        }),
        Rejection::NoRunningActivation(CONN)
    );
    assert_eq!(
        w.refused(Command::Deactivate { client: None }),
        Rejection::NoRunningActivation(CONN)
    );
    assert_eq!(
        Rejection::NoRunningActivation(CONN).kind(),
        RejectionKind::Invalid,
        "the contract answers 400 here"
    );
    // While ACTIVATING there is a running activation but nothing to extend yet.
    w.activate(Some(10));
    assert!(matches!(
        w.refused(Command::Extend {
            by: Some(Minutes(5)),
            client: None
        }),
        Rejection::WrongState { .. }
    ));
}

#[test]
fn extend_after_due_expiry_is_refused_even_before_the_timer_runs() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(10);
    w.advance(Duration::from_secs(600));
    assert!(matches!(
        w.refused(Command::Extend {
            by: Some(Minutes(5)),
            client: None
        }),
        Rejection::WrongState {
            state: "EXPIRING",
            ..
        }
    ));
}

#[test]
fn validation_refused_ends_invalid_and_available() {
    let mut w = World::with(ConnectionType::Jit);
    w.activate(Some(10));
    let e = w.ok(Command::ValidationRefused {
        activation: A1,
        reason: "no ticket".into(),
    });
    assert_eq!(e.notice(w.config.stuck_after), Some(Notice::Refused));
    assert!(
        e.effects.is_empty(),
        "nothing was granted, nothing to revoke"
    );
    assert_eq!(w.status(), ActivationStatus::Invalid);
    assert_eq!(w.c().state, ConnectionState::Available);
    assert_eq!(
        w.c().activation.as_ref().unwrap().last_error.as_deref(),
        Some("no ticket")
    );
}

#[test]
fn grant_failures_retry_with_backoff_then_give_up_and_revoke_fail_closed() {
    let mut w = World::with(ConnectionType::Jit);
    w.activate(Some(10));
    w.ok(Command::ValidationPassed { activation: A1 });
    for attempt in 1..w.config.grant_max_attempts {
        let failed_at = w.now;
        let e = w.ok(Command::GrantFailed {
            activation: A1,
            attempt,
            error: "503".into(),
            retryable: true,
        });
        let retry = w.timer(TimerKind::Retry);
        assert!(retry.due > failed_at, "a retry is always later");
        assert_eq!(e.arm, vec![retry]);
        // The retry timer cannot fire early.
        let early = Command::TimerFired(retry);
        let r = w.refused(early);
        assert!(matches!(r, Rejection::TimerNotDue { .. }), "{r:?}");
        let e = w.fire(TimerKind::Retry);
        assert_eq!(
            e.effects,
            vec![Effect::Grant {
                activation: A1,
                attempt: attempt + 1
            }]
        );
    }
    let last = w.config.grant_max_attempts;
    let e = w.ok(Command::GrantFailed {
        activation: A1,
        attempt: last,
        error: "503".into(),
        retryable: true,
    });
    assert!(matches!(e.change, Change::GrantAbandoned { .. }));
    assert_eq!(e.notice(w.config.stuck_after), Some(Notice::GrantFailed));
    assert_eq!(
        e.effects,
        vec![Effect::Revoke {
            activation: A1,
            attempt: 1
        }],
        "a grant of unknown outcome is revoked"
    );
    assert_eq!(w.c().state, ConnectionState::Deactivating);
    w.ok(Command::RevokeSucceeded {
        activation: A1,
        attempt: 1,
    });
    assert_eq!(w.status(), ActivationStatus::Error);
    assert_eq!(w.c().state, ConnectionState::Available);
}

#[test]
fn a_permanent_grant_refusal_gives_up_at_once() {
    let mut w = World::with(ConnectionType::Jit);
    w.activate(Some(10));
    w.ok(Command::ValidationPassed { activation: A1 });
    let e = w.ok(grant_failed(1, false));
    assert!(matches!(
        e.change,
        Change::GrantAbandoned { attempt: 1, .. }
    ));
}

/// A1's grant try `attempt` failed (for good unless `retryable`).
fn grant_failed(attempt: u32, retryable: bool) -> Command {
    Command::GrantFailed {
        activation: A1,
        attempt,
        error: if retryable { "503" } else { "no such group" }.into(),
        retryable,
    }
}

#[test]
fn deprovision_failures_retry_forever_flag_stuck_once_then_recover() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(10);
    w.ok(Command::Deactivate { client: None });
    let stuck_after = w.config.stuck_after;
    let mut stuck_notices = 0;
    for attempt in 1..=stuck_after + 5 {
        let e = w.ok(Command::RevokeFailed {
            activation: A1,
            attempt,
            error: "timeout".into(),
        });
        if e.notice(w.config.stuck_after) == Some(Notice::Stuck) {
            stuck_notices += 1;
            assert_eq!(attempt, stuck_after);
        }
        assert_eq!(
            w.c().activation.as_ref().unwrap().stuck,
            attempt >= stuck_after
        );
        let d = w.timer(TimerKind::Retry).due.since(w.now);
        assert!(d <= w.config.backoff_cap, "capped: {d:?}");
        w.fire(TimerKind::Retry);
    }
    assert_eq!(stuck_notices, 1, "the alert is raised once");
    let e = w.ok(Command::RevokeSucceeded {
        activation: A1,
        attempt: stuck_after + 6,
    });
    assert_eq!(
        e.notice(stuck_after),
        Some(Notice::Recovered),
        "the end of a stuck revoke is told as its recovery"
    );
    assert_eq!(w.status(), ActivationStatus::Revoked);
    assert!(!w.c().activation.as_ref().unwrap().stuck);
}

#[test]
fn deactivate_while_validating_ends_at_once_without_revoke() {
    let mut w = World::with(ConnectionType::Jit);
    w.activate(Some(10));
    let e = w.ok(Command::Deactivate { client: None });
    assert!(e.effects.is_empty());
    assert_eq!(w.status(), ActivationStatus::Revoked);
    assert_eq!(w.c().state, ConnectionState::Available);
    // The late validation result is stale and dropped.
    assert_eq!(
        w.refused(Command::ValidationPassed { activation: A1 })
            .kind(),
        RejectionKind::Stale
    );
}

#[test]
fn deactivate_during_a_grant_in_flight_waits_for_it_then_revokes() {
    for granted in [true, false] {
        let mut w = World::with(ConnectionType::Jit);
        w.activate(Some(10));
        w.ok(Command::ValidationPassed { activation: A1 });
        let e = w.ok(Command::Deactivate { client: None });
        assert!(
            e.effects.is_empty(),
            "no revoke may race the grant in flight"
        );
        assert_eq!(w.c().state, ConnectionState::Deactivating);
        assert!(matches!(
            w.refused(Command::Deactivate { client: None }),
            Rejection::WrongState { .. }
        ));
        let e = if granted {
            w.ok(Command::GrantSucceeded {
                activation: A1,
                attempt: 1,
            })
        } else {
            w.ok(Command::GrantFailed {
                activation: A1,
                attempt: 1,
                error: "timeout".into(),
                retryable: true,
            })
        };
        assert!(matches!(e.change, Change::CancelledGrantSettled { .. }));
        assert_eq!(
            e.effects,
            vec![Effect::Revoke {
                activation: A1,
                attempt: 1
            }]
        );
        assert!(w.c().timers().is_empty(), "no expiry is ever armed");
        w.ok(Command::RevokeSucceeded {
            activation: A1,
            attempt: 1,
        });
        assert_eq!(w.status(), ActivationStatus::Revoked);
    }
}

#[test]
fn deactivate_while_waiting_to_retry_a_grant_revokes_at_once() {
    let mut w = World::with(ConnectionType::Jit);
    w.activate(Some(10));
    w.ok(Command::ValidationPassed { activation: A1 });
    w.ok(Command::GrantFailed {
        activation: A1,
        attempt: 1,
        error: "503".into(),
        retryable: true,
    });
    let retry = w.timer(TimerKind::Retry);
    let e = w.ok(Command::Deactivate { client: None });
    assert_eq!(e.cancel, vec![retry]);
    assert_eq!(
        e.effects,
        vec![Effect::Revoke {
            activation: A1,
            attempt: 1
        }]
    );
}

#[test]
fn stale_results_and_timers_are_refused_without_change() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(10);
    let expiry = w.timer(TimerKind::Expiry);
    // A repeated grant result (at-least-once delivery) is stale.
    assert_eq!(
        w.refused(Command::GrantSucceeded {
            activation: A1,
            attempt: 1
        })
        .kind(),
        RejectionKind::Stale
    );
    w.ok(Command::Extend {
        by: Some(Minutes(5)),
        client: None,
    });
    // The cancelled expiry timer is stale even once due.
    w.now = expiry.due;
    assert_eq!(
        w.refused(Command::TimerFired(expiry)),
        Rejection::Stale("timer")
    );
    // Results for another activation id are stale.
    assert_eq!(
        w.refused(Command::RevokeSucceeded {
            activation: A2,
            attempt: 1
        })
        .kind(),
        RejectionKind::Stale
    );
}

#[test]
fn overdue_expiry_fires_whenever_it_is_delivered() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(60);
    let expiry = w.timer(TimerKind::Expiry);
    w.advance(Duration::from_secs(3 * 3600));
    let e = w.ok(Command::TimerFired(expiry));
    assert_eq!(e.change, Change::Expired);
    assert!(
        e.cancel.iter().any(|t| t.kind == TimerKind::Warning),
        "the overdue warning is dropped, not sent after the expiry"
    );
}

#[test]
fn a_warning_delivered_after_the_expiry_expires_instead_of_warning() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(60);
    let warning = w.timer(TimerKind::Warning);
    w.advance(Duration::from_secs(2 * 3600));
    let e = w.ok(Command::TimerFired(warning));
    assert_eq!(e.change, Change::Expired);
    assert_eq!(
        e.notice(w.config.stuck_after),
        None,
        "no expiring-soon notice after the fact"
    );
    assert_eq!(e.cancel.len(), 2, "both timers cancelled: {:?}", e.cancel);
}

#[test]
fn wall_clock_jumping_back_never_fires_early() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(10);
    let expiry = w.timer(TimerKind::Expiry);
    w.now = w.now.saturating_sub(Duration::from_secs(3600));
    assert!(matches!(
        w.refused(Command::TimerFired(expiry)),
        Rejection::TimerNotDue { .. }
    ));
}

#[test]
fn policy_change_applies_to_new_requests_not_running_expiries() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(120);
    let expiry = w.timer(TimerKind::Expiry);
    w.policy.max_activation_period = Some(Minutes(30));
    w.policy.max_extension = Some(Minutes(5));
    assert_eq!(w.timer(TimerKind::Expiry), expiry, "running expiry kept");
    let r = w.refused(Command::Extend {
        by: Some(Minutes(10)),
        client: None,
    });
    assert!(
        matches!(r, Rejection::ExtensionOverCap { cap: 5, .. }),
        "{r:?}"
    );
    w.ok(Command::Extend {
        by: Some(Minutes(5)),
        client: None,
    });
}

#[test]
fn jit_to_standing_while_active_keeps_access_and_ends_timers() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(60);
    let e = w.ok(Command::ChangeType(ConnectionType::Standing));
    assert_eq!(e.cancel.len(), 2);
    assert!(e.effects.is_empty(), "access is kept: nothing revoked");
    assert_eq!(w.c().state, ConnectionState::Active);
    assert_eq!(w.status(), ActivationStatus::Completed);
    assert!(w.c().timers().is_empty());
}

#[test]
fn standing_to_jit_revokes_standing_access_with_retries() {
    let mut w = World::with(ConnectionType::Standing);
    let e = w.ok(Command::ChangeType(ConnectionType::Jit));
    assert_eq!(e.effects, vec![Effect::RevokeStanding { attempt: 1 }]);
    assert_eq!(w.c().state, ConnectionState::Deactivating);
    assert!(matches!(
        w.refused(Command::Activate {
            activation: A1,
            period: Some(Minutes(5)),
            client: None
        }),
        Rejection::WrongState { .. }
    ));
    w.ok(Command::StandingRevokeFailed {
        attempt: 1,
        error: "down".into(),
    });
    let e = w.fire(TimerKind::StandingRetry);
    assert_eq!(e.effects, vec![Effect::RevokeStanding { attempt: 2 }]);
    w.ok(Command::StandingRevokeSucceeded { attempt: 2 });
    assert_eq!(w.c().state, ConnectionState::Available);
    assert_eq!(w.c().kind(), ConnectionType::Jit);
}

#[test]
fn type_changes_are_refused_while_access_moves() {
    let mut w = World::with(ConnectionType::Jit);
    w.activate(Some(10));
    for to in [ConnectionType::Standing, ConnectionType::Na] {
        assert!(matches!(
            w.refused(Command::ChangeType(to)),
            Rejection::WrongState {
                state: "ACTIVATING",
                ..
            }
        ));
    }
    w.ok(Command::ValidationPassed { activation: A1 });
    w.ok(Command::GrantSucceeded {
        activation: A1,
        attempt: 1,
    });
    assert!(matches!(
        w.refused(Command::ChangeType(ConnectionType::Na)),
        Rejection::WrongState {
            state: "ACTIVE",
            ..
        }
    ));
    w.ok(Command::Deactivate { client: None });
    assert!(matches!(
        w.refused(Command::ChangeType(ConnectionType::Standing)),
        Rejection::WrongState {
            state: "DEACTIVATING",
            ..
        }
    ));
    // Same type: accepted, no event.
    assert!(
        w.try_send(Command::ChangeType(ConnectionType::Jit))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn register_update_remove() {
    let mut w = World::with(ConnectionType::Jit);
    assert_eq!(
        w.refused(Command::Register(spec(ConnectionType::Jit))),
        Rejection::AlreadyExists(CONN)
    );
    w.ok(Command::Update(
        jitflow_core::connection::ConnectionUpdate {
            identity_name: Some("Alice B.".into()),
            standalone: Some(true),
            ..Default::default()
        },
    ));
    assert_eq!(w.c().spec.identity_name, "Alice B.");
    assert!(w.c().spec.standalone);
    let bad = jitflow_core::connection::ConnectionUpdate {
        account_name: Some("a\u{0}b".into()),
        ..Default::default()
    };
    assert!(matches!(
        w.refused(Command::Update(bad)),
        Rejection::InvalidField {
            field: "accountName",
            ..
        }
    ));
    w.active(10);
    assert!(matches!(
        w.refused(Command::Remove),
        Rejection::WrongState { .. }
    ));
    w.ok(Command::Deactivate { client: None });
    w.ok(Command::RevokeSucceeded {
        activation: A1,
        attempt: 1,
    });
    w.ok(Command::Remove);
    assert!(w.state.is_none());
    assert_eq!(
        w.refused(Command::Deactivate { client: None }),
        Rejection::NotFound(CONN)
    );
    // A late effect result for a removed connection is stale, not "not found".
    assert_eq!(
        w.refused(Command::RevokeSucceeded {
            activation: A1,
            attempt: 1
        })
        .kind(),
        RejectionKind::Stale
    );
}

#[test]
fn apply_to_future_assignments_makes_governed_registrations_jit() {
    let mut w = World::new();
    w.policy.entitlement_ids = vec![EntitlementId::parse("ent-admins").unwrap()];
    w.policy.apply_to_future_assignments = true;
    w.ok(Command::Register(spec(ConnectionType::Standing)));
    assert_eq!(w.c().kind(), ConnectionType::Jit);
    assert_eq!(w.c().state, ConnectionState::Available);
    let mut w = World::new();
    w.policy.entitlement_ids = vec![EntitlementId::parse("ent-admins").unwrap()];
    w.ok(Command::Register(spec(ConnectionType::Standing)));
    assert_eq!(
        w.c().kind(),
        ConnectionType::Standing,
        "flag off: type kept"
    );
}

#[test]
fn replaying_the_events_rebuilds_the_same_state() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(60);
    w.ok(Command::Extend {
        by: Some(Minutes(10)),
        client: None,
    });
    w.fire(TimerKind::Warning);
    w.fire(TimerKind::Expiry);
    w.ok(Command::RevokeFailed {
        activation: A1,
        attempt: 1,
        error: "x".into(),
    });
    let mut replay = None;
    for e in &w.events {
        replay = evolve(replay, e).unwrap();
    }
    assert_eq!(replay, w.state);
}

#[test]
fn idempotency_keys_name_the_activation_and_try() {
    let key = Effect::Grant {
        activation: A1,
        attempt: 3,
    }
    .idempotency_key(CONN);
    assert_eq!(key, "00000000-0000-0000-0000-000000000001:grant:3");
    assert_ne!(
        key,
        Effect::Revoke {
            activation: A1,
            attempt: 3
        }
        .idempotency_key(CONN)
    );
}

mod policy_changes {
    use super::*;
    use jitflow_core::lifecycle::{PolicyCommand, PolicyRejection, decide_policy};
    use jitflow_core::policy::{PatchOp, PatchValue};

    fn ctx_parts() -> (Actor, Config) {
        (
            Actor::Identity(IdentityId::parse("admin").unwrap()),
            Config::default(),
        )
    }

    fn op(path: &str, value: PatchValue) -> PatchOp {
        PatchOp {
            op: None,
            path: path.into(),
            value,
        }
    }

    #[test]
    fn put_creates_then_patch_bumps_the_version_and_records_old_and_new() {
        let (actor, config) = ctx_parts();
        let empty = Policy::empty("x".into());
        let now = Timestamp::from_millis(5).unwrap();
        let ctx = Context {
            now,
            actor: &actor,
            policy: &empty,
            config: &config,
        };
        let created = decide_policy(None, &PolicyCommand::Put(policy()), &ctx).unwrap();
        assert_eq!(created.policy.version, 1);
        assert_eq!(created.previous, None);
        let patch = PolicyCommand::Patch {
            ops: vec![op("/maxActivationPeriodMins", PatchValue::Int(240))],
            expected_version: Some(1),
        };
        let e = decide_policy(Some(&created.policy), &patch, &ctx).unwrap();
        assert_eq!(e.policy.version, 2);
        assert_eq!(e.policy.max_activation_period, Some(Minutes(240)));
        assert_eq!(e.previous.as_ref(), Some(&created.policy));
        assert_eq!(e.actor, actor);
        assert_eq!(e.at, now);
    }

    #[test]
    fn patch_refusals_change_nothing() {
        let (actor, config) = ctx_parts();
        let empty = Policy::empty("x".into());
        let ctx = Context {
            now: Timestamp::EPOCH,
            actor: &actor,
            policy: &empty,
            config: &config,
        };
        let patch = |expected_version| PolicyCommand::Patch {
            ops: vec![op("/applyToFutureAssignments", PatchValue::Bool(true))],
            expected_version,
        };
        assert_eq!(
            decide_policy(None, &patch(None), &ctx),
            Err(PolicyRejection::NotFound)
        );
        let mut stored = policy();
        stored.version = 3;
        assert_eq!(
            decide_policy(Some(&stored), &patch(Some(2)), &ctx),
            Err(PolicyRejection::VersionConflict {
                expected: 2,
                actual: 3
            })
        );
        let bad = PolicyCommand::Patch {
            ops: vec![op("/defaultMaxActivationPeriodMins", PatchValue::Int(500))],
            expected_version: None,
        };
        assert!(matches!(
            decide_policy(Some(&stored), &bad, &ctx),
            Err(PolicyRejection::Invalid(_))
        ));
        let mut invalid = policy();
        invalid.default_activation_period = Some(Minutes(1000));
        assert!(matches!(
            decide_policy(None, &PolicyCommand::Put(invalid), &ctx),
            Err(PolicyRejection::Invalid(_))
        ));
    }
}

/// Sends an inspection made at the current version.
fn inspected(w: &mut World, held: bool) -> Result<Vec<jitflow_core::lifecycle::Event>, Rejection> {
    let version = w.c().version;
    w.try_send(Command::Inspected { held, version })
}

#[test]
fn access_held_at_rest_is_drift_and_is_revoked_like_standing_access() {
    // A revoke that reported success but did not take: the activation is over, the access is
    // still on the target.
    let mut w = World::with(ConnectionType::Jit);
    w.active(10);
    w.ok(Command::Deactivate { client: None });
    w.ok(Command::RevokeSucceeded {
        activation: A1,
        attempt: 1,
    });
    assert_eq!(w.c().state, ConnectionState::Available);
    let e = inspected(&mut w, true).unwrap().remove(0);
    assert_eq!(
        e.change,
        Change::DriftFound {
            drift: Drift::UnexpectedAccess
        }
    );
    assert_eq!(e.notice(w.config.stuck_after), Some(Notice::DriftFound));
    assert_eq!(e.effects, vec![Effect::RevokeStanding { attempt: 1 }]);
    assert_eq!(w.c().state, ConnectionState::Deactivating);
    // The connection cannot be activated while the revoke runs; it ends AVAILABLE.
    assert_eq!(
        w.refused(Command::Activate {
            activation: A2,
            period: Some(Minutes(5)),
            client: None,
        })
        .kind(),
        RejectionKind::Conflict
    );
    w.ok(Command::StandingRevokeSucceeded { attempt: 1 });
    assert_eq!(w.c().state, ConnectionState::Available);
    assert!(inspected(&mut w, false).unwrap().is_empty(), "agrees now");
}

#[test]
fn access_missing_while_active_is_recorded_only() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(10);
    let timers = w.c().timers();
    let e = inspected(&mut w, false).unwrap().remove(0);
    assert_eq!(
        e.change,
        Change::DriftFound {
            drift: Drift::MissingAccess
        }
    );
    assert_eq!(e.activation, Some(A1));
    assert!(e.effects.is_empty() && e.arm.is_empty() && e.cancel.is_empty());
    assert_eq!(w.c().state, ConnectionState::Active);
    assert_eq!(w.c().timers(), timers, "the expiry still comes");
}

#[test]
fn an_inspection_never_touches_moving_or_agreeing_access_and_a_stale_one_is_refused() {
    let mut w = World::with(ConnectionType::Jit);
    assert!(
        inspected(&mut w, false).unwrap().is_empty(),
        "AVAILABLE, not held"
    );
    w.activate(Some(10));
    // While the grant is in flight the target may or may not hold it yet.
    assert!(inspected(&mut w, true).unwrap().is_empty());
    assert!(inspected(&mut w, false).unwrap().is_empty());
    w.ok(Command::ValidationPassed { activation: A1 });
    w.ok(Command::GrantSucceeded {
        activation: A1,
        attempt: 1,
    });
    // A running activation whose access is held is never revoked by an inspection.
    assert!(inspected(&mut w, true).unwrap().is_empty());
    w.ok(Command::Deactivate { client: None });
    assert!(
        inspected(&mut w, true).unwrap().is_empty(),
        "the revoke runs"
    );
    // An inspection made before a change says nothing about the state after it.
    let before = w.c().version - 1;
    let r = w.refused(Command::Inspected {
        held: true,
        version: before,
    });
    assert_eq!(r.kind(), RejectionKind::Stale);
}

/// Inspects `w`'s ACTIVE connection, whose access the target lacks: the events must be the
/// drift and then `answer`, decided together.
fn missing_answered(w: &mut World, answer: Change) -> Vec<jitflow_core::lifecycle::Event> {
    let events = inspected(w, false).unwrap();
    let changes: Vec<_> = events.iter().map(|e| e.change.clone()).collect();
    let drift = Change::DriftFound {
        drift: Drift::MissingAccess,
    };
    assert_eq!(changes, [drift, answer]);
    events
}

/// The policy's missing-access action `GRANT_AGAIN`: the drift is recorded, then in the same
/// decision the activation goes back to provisioning with a new grant try (a new idempotency
/// key) and its expiry kept; the regrant's success makes it ACTIVE with the same expiry.
#[test]
fn access_missing_while_active_is_granted_again_by_the_policy_with_its_expiry_kept() {
    let mut w = World::with(ConnectionType::Jit);
    w.policy.on_missing_access = MissingAccessAction::GrantAgain;
    w.active(30);
    let expires = w.timer(TimerKind::Expiry).due;
    w.advance(Duration::from_secs(60));
    let events = missing_answered(&mut w, Change::RegrantStarted { attempt: 2 });
    assert_eq!(
        events[0].notice(w.config.stuck_after),
        Some(Notice::DriftFound)
    );
    assert_eq!(events[1].notice(w.config.stuck_after), None);
    assert_eq!(
        events[1].effects,
        [Effect::Grant {
            activation: A1,
            attempt: 2
        }]
    );
    assert_eq!(
        events[1].effects[0].idempotency_key(CONN),
        format!("{A1}:grant:2")
    );
    assert!(
        events[1].cancel.iter().any(|t| t.kind == TimerKind::Expiry),
        "no expiry fires while the grant runs"
    );
    assert_eq!(w.c().state, ConnectionState::Activating);
    assert_eq!(w.status(), ActivationStatus::Activating);
    // Nothing more is asked while the grant moves the access.
    assert!(inspected(&mut w, false).unwrap().is_empty());
    w.advance(Duration::from_secs(5));
    let e = w.ok(Command::GrantSucceeded {
        activation: A1,
        attempt: 2,
    });
    assert!(matches!(e.change, Change::Provisioned { expires_at, .. } if expires_at == expires));
    assert_eq!(w.c().state, ConnectionState::Active);
    assert_eq!(
        w.timer(TimerKind::Expiry).due,
        expires,
        "the expiry is kept"
    );
    // The expiry then ends it as usual.
    assert_eq!(w.fire(TimerKind::Expiry).change, Change::Expired);
}

/// A regrant that keeps failing gives up within the activation's grant tries and revokes
/// (fail closed); an expiry that passed while it ran fires at once once it is provisioned.
#[test]
fn a_regrant_counts_its_tries_with_the_first_grants_and_fails_closed() {
    let mut w = World::with(ConnectionType::Jit);
    w.policy.on_missing_access = MissingAccessAction::GrantAgain;
    w.config.grant_max_attempts = 3;
    w.active(10);
    inspected(&mut w, false).unwrap();
    let e = w.ok(grant_failed(2, true));
    assert!(matches!(e.change, Change::GrantFailed { attempt: 2, .. }));
    w.fire(TimerKind::Retry);
    let e = w.ok(grant_failed(3, true));
    assert!(matches!(
        e.change,
        Change::GrantAbandoned { attempt: 3, .. }
    ));
    assert_eq!(w.c().state, ConnectionState::Deactivating);
    assert_eq!(
        e.effects,
        [Effect::Revoke {
            activation: A1,
            attempt: 1
        }]
    );

    // Past the expiry during a regrant: provisioned with the old expiry, which fires at once.
    let mut w = World::with(ConnectionType::Jit);
    w.policy.on_missing_access = MissingAccessAction::GrantAgain;
    w.active(10);
    inspected(&mut w, false).unwrap();
    w.advance(Duration::from_secs(11 * 60));
    let e = w.ok(Command::GrantSucceeded {
        activation: A1,
        attempt: 2,
    });
    assert!(matches!(
        e.change,
        Change::Provisioned { warn_at: None, .. }
    ));
    assert!(w.timer(TimerKind::Expiry).due < w.now);
    assert_eq!(w.fire(TimerKind::Expiry).change, Change::Expired);
}

/// The policy's missing-access action `END_ACTIVATION`: the drift is recorded, then the
/// activation is deactivated in the same decision (its revoke runs, ending it REVOKED).
/// Standing access missing is reported only, whatever the action.
#[test]
fn access_missing_while_active_ends_the_activation_by_the_policy() {
    let mut w = World::with(ConnectionType::Jit);
    w.policy.on_missing_access = MissingAccessAction::EndActivation;
    w.active(30);
    let events = missing_answered(&mut w, Change::DeactivationRequested);
    assert_eq!(
        events[1].effects,
        [Effect::Revoke {
            activation: A1,
            attempt: 1
        }]
    );
    let e = w.ok(Command::RevokeSucceeded {
        activation: A1,
        attempt: 1,
    });
    assert_eq!(
        e.change,
        Change::Revoked {
            attempt: 1,
            reason: EndReason::Deactivated
        }
    );
    assert_eq!(w.c().state, ConnectionState::Available);

    for action in MissingAccessAction::ALL {
        let mut w = World::with(ConnectionType::Standing);
        w.policy.on_missing_access = action;
        let events = inspected(&mut w, false).unwrap();
        assert_eq!(
            events.len(),
            1,
            "{action}: standing access is reported only"
        );
        assert_eq!(w.c().state, ConnectionState::Active);
    }
}

/// `evolve` refuses a regrant that is not the next try of a provisioned activation.
#[test]
fn a_regrant_applies_only_to_a_provisioned_activation_as_its_next_try() {
    let mut w = World::with(ConnectionType::Jit);
    w.active(10);
    let mut event = w.events.last().unwrap().clone();
    event.change = Change::RegrantStarted { attempt: 5 };
    event.arm.clear();
    event.cancel.clear();
    event.effects.clear();
    assert!(evolve(w.state.clone(), &event).is_err());
    event.change = Change::RegrantStarted { attempt: 2 };
    assert!(evolve(w.state.clone(), &event).is_ok());
    w.ok(Command::Deactivate { client: None });
    assert!(evolve(w.state.clone(), &event).is_err());
}

/// What a client says with a signal (`requestOrigin`, `metaData`) is recorded on the event of
/// that signal and on no other; `evolve` refuses it on an event no signal commits, and the
/// state is the same with or without it.
#[test]
fn a_signals_client_info_is_recorded_on_its_event_only() {
    use jitflow_core::client::ClientInfo;
    let said = |origin: &str| {
        let meta = [("ticket".to_owned(), serde_json::json!(origin))]
            .into_iter()
            .collect();
        ClientInfo::new(Some(origin.to_owned()), Some(meta)).unwrap()
    };
    let mut w = World::with(ConnectionType::Jit);
    let mut quiet = World::with(ConnectionType::Jit);
    let requested = w.ok(Command::Activate {
        activation: A1,
        period: Some(Minutes(30)),
        client: said("portal"),
    });
    quiet.activate(Some(30));
    assert_eq!(requested.client, said("portal"));
    for world in [&mut w, &mut quiet] {
        world.ok(Command::ValidationPassed { activation: A1 });
        let provisioned = world.ok(Command::GrantSucceeded {
            activation: A1,
            attempt: 1,
        });
        assert_eq!(provisioned.client, None, "an effect result says nothing");
    }
    let extended = w.ok(Command::Extend {
        by: Some(Minutes(5)),
        client: said("cli"),
    });
    assert!(matches!(extended.change, Change::Extended { .. }));
    assert_eq!(extended.client, said("cli"));
    let deactivated = w.ok(Command::Deactivate {
        client: ClientInfo::new(Some("sdk".into()), None).unwrap(),
    });
    assert_eq!(deactivated.change, Change::DeactivationRequested);
    assert_eq!(
        deactivated
            .client
            .as_ref()
            .and_then(ClientInfo::request_origin),
        Some("sdk")
    );
    quiet.ok(Command::Extend {
        by: Some(Minutes(5)),
        client: None,
    });
    quiet.ok(Command::Deactivate { client: None });
    assert_eq!(w.state, quiet.state, "the state does not hold it");
    // A refused signal records nothing.
    let before = w.events.len();
    w.refused(Command::Deactivate {
        client: said("again"),
    });
    assert_eq!(w.events.len(), before);
    // On an event no client's signal commits, evolve refuses it.
    let mut planted = w.events[2].clone();
    assert_eq!(planted.change, Change::ValidationPassed);
    planted.client = said("forged");
    let mut replay = None;
    for e in &w.events[..2] {
        replay = evolve(replay, e).unwrap();
    }
    assert!(evolve(replay.clone(), &w.events[2]).is_ok());
    let err = evolve(replay, &planted).unwrap_err();
    assert!(err.reason.contains("client"), "{err}");
}
