//! Lifecycle tests of one access-request item, with the clock as an argument: one test per path
//! of the issue (grant with approval then sunset, sunrise, reject, cancel, close in each stage,
//! duplicates, revoke of a JIT connection with a running activation, approval expiry, restart in
//! every stage) and the retry and fail-closed edges.

use std::time::Duration;

use jitflow_core::connection::ConnectionType;
use jitflow_core::id::{AccessRequestId, ActivationId, EntitlementId, IdentityId, ObjectId};
use jitflow_core::lifecycle::{Actor, Config, RejectionKind};
use jitflow_core::policy::Policy;
use jitflow_core::request::item::{ApprovalScheme, PhaseState};
use jitflow_core::request::submit::{Assignment, ObjectKind, ObjectRef, Origin, item_id};
use jitflow_core::request::{
    ApprovalStep, Change, Closure, Command, CompletionStatus, Context, Duplicate, Effect, Event,
    ExecutionStatus, Existing, Item, ItemSpec, ItemStatus, Notice, Rejection, RemovalReason,
    RequestState, RequestType, Timer, TimerKind, WorkItemState, approval_id, approval_item, decide,
    evolve,
};
use jitflow_core::time::Timestamp;

const HOUR: Duration = Duration::from_secs(3600);

fn who(name: &str) -> IdentityId {
    IdentityId::parse(name).unwrap()
}

fn t0() -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000).unwrap()
}

struct Harness {
    item: Option<Item>,
    events: Vec<Event>,
    now: Timestamp,
    policy: Policy,
    config: Config,
    running: Option<ActivationId>,
}

fn spec(
    kind: RequestType,
    object: ObjectKind,
    start: Option<u32>,
    remove: Option<u32>,
) -> ItemSpec {
    ItemSpec {
        id: item_id(AccessRequestId::from_u128(7), 0),
        request: AccessRequestId::from_u128(7),
        request_type: kind,
        requested_for: who("alice"),
        requester: who("carol"),
        object: ObjectRef {
            kind: object,
            id: ObjectId::parse("db-admins").unwrap(),
        },
        comment: Some("for the migration".into()),
        client_metadata: Default::default(),
        request_metadata: Default::default(),
        start_date: start.map(|h| t0().saturating_add(HOUR * h)),
        remove_date: remove.map(|h| t0().saturating_add(HOUR * h)),
        accounts: Vec::new(),
        native_identity: None,
        form_instance_id: None,
    }
}

fn approvers() -> ApprovalStep {
    ApprovalStep::Approvers {
        approvers: vec![who("bob")],
        scheme: ApprovalScheme::Manager,
        expires_after: HOUR * 24,
    }
}

impl Harness {
    fn new() -> Harness {
        Harness {
            item: None,
            events: Vec::new(),
            now: t0(),
            policy: Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into()),
            config: Config {
                grant_max_attempts: 3,
                stuck_after: 3,
                ..Config::default()
            },
            running: None,
        }
    }

    fn submitted(spec: ItemSpec, step: ApprovalStep) -> Harness {
        let mut h = Harness::new();
        // A revoke needs the access assigned (the revoke rules, checked again by decide).
        let existing = match spec.request_type {
            RequestType::Revoke => assigned(),
            RequestType::Grant => Existing::default(),
        };
        h.submit(spec, step, existing).unwrap();
        h
    }

    fn id(&self) -> jitflow_core::id::RequestItemId {
        item_id(AccessRequestId::from_u128(7), 0)
    }

    fn i(&self) -> &Item {
        self.item.as_ref().expect("submitted")
    }

    fn submit(
        &mut self,
        spec: ItemSpec,
        step: ApprovalStep,
        existing: Existing,
    ) -> Result<Vec<Event>, Rejection> {
        let command = Command::Submit {
            spec: Box::new(spec),
            approval: step,
            existing,
        };
        self.send_as(&Actor::Identity(who("carol")), false, command)
    }

    /// Sends as the admin.
    fn send(&mut self, command: Command) -> Result<Vec<Event>, Rejection> {
        self.send_as(&Actor::Identity(who("root")), true, command)
    }

    fn system(&mut self, command: Command) -> Result<Vec<Event>, Rejection> {
        self.send_as(&Actor::System, false, command)
    }

    fn send_as(
        &mut self,
        actor: &Actor,
        admin: bool,
        command: Command,
    ) -> Result<Vec<Event>, Rejection> {
        let ctx = Context {
            now: self.now,
            actor,
            admin,
            policy: &self.policy,
            config: &self.config,
            running_activation: self.running,
        };
        let before = self.item.clone();
        let result = decide(self.id(), self.item.as_ref(), &command, &ctx);
        match &result {
            Ok(events) => {
                for e in events {
                    self.item = Some(evolve(self.item.take(), e).expect("applies"));
                }
                self.events.extend(events.iter().cloned());
            }
            Err(_) => assert_eq!(self.item, before, "a refusal changes nothing"),
        }
        result
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now.saturating_add(by);
    }

    fn timer(&self, kind: TimerKind) -> Timer {
        *self
            .i()
            .timers()
            .iter()
            .find(|t| t.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} timer in {:?}", self.i().timers()))
    }

    fn fire(&mut self, kind: TimerKind) -> Vec<Event> {
        let t = self.timer(kind);
        self.now = self.now.max(t.due);
        self.system(Command::TimerFired(t)).unwrap()
    }

    fn changes(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.change.name()).collect()
    }

    fn approve_as(&mut self, name: &str) -> Result<Vec<Event>, Rejection> {
        self.send_as(
            &Actor::Identity(who(name)),
            false,
            Command::Approve {
                comment: Some("ok".into()),
            },
        )
    }
}

#[test]
fn grant_with_approval_then_sunset() {
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, Some(4)),
        approvers(),
    );
    let first = &h.events[0];
    assert_eq!(
        first.arm,
        vec![Timer {
            due: t0().saturating_add(HOUR * 24),
            kind: TimerKind::ApprovalExpiry
        }]
    );
    assert!(
        first.effects.is_empty(),
        "nothing provisioned before approval"
    );
    assert_eq!(
        first.notice(h.i(), h.config.stuck_after),
        Some(Notice::ApprovalRequested)
    );
    assert_eq!(h.i().request_state(), RequestState::Executing);
    assert_eq!(h.i().approval.id, approval_id(h.id()));
    assert_eq!(approval_item(h.i().approval.id), h.id());

    // Someone who is not an approver is refused (403) and nothing changes.
    let r = h.approve_as("mallory").unwrap_err();
    assert!(matches!(r, Rejection::NotApprover { .. }), "{r:?}");
    assert_eq!(r.kind(), RejectionKind::Forbidden);

    h.advance(HOUR);
    let events = h.approve_as("bob").unwrap();
    assert_eq!(Harness::changes(&events), ["approved", "grant_started"]);
    assert_eq!(events[0].cancel[0].kind, TimerKind::ApprovalExpiry);
    assert_eq!(
        events[1].effects,
        vec![Effect::Grant {
            attempt: 1,
            kind: Some(ConnectionType::Standing)
        }]
    );
    assert_eq!(events[1].arm[0].kind, TimerKind::Sunset);
    assert_eq!(h.i().approval.state, WorkItemState::Approved);
    assert_eq!(h.i().approval.decided_by, Some(Actor::Identity(who("bob"))));

    // Approving twice is refused (400).
    let r = h.approve_as("bob").unwrap_err();
    assert!(
        matches!(
            r,
            Rejection::AlreadyDecided {
                state: "APPROVED",
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(r.kind(), RejectionKind::Invalid);

    let events = h.system(Command::GrantSucceeded { attempt: 1 }).unwrap();
    assert_eq!(
        events[0].notice(h.i(), h.config.stuck_after),
        Some(Notice::Granted)
    );
    assert_eq!(h.i().status, ItemStatus::Granted);
    assert_eq!(h.i().request_state(), RequestState::RequestCompleted);
    // A repeated result is stale.
    assert_eq!(
        h.system(Command::GrantSucceeded { attempt: 1 })
            .unwrap_err()
            .kind(),
        RejectionKind::Stale
    );

    // The sunset never fires early.
    let sunset = h.timer(TimerKind::Sunset);
    assert_eq!(sunset.due, t0().saturating_add(HOUR * 4));
    assert!(matches!(
        h.system(Command::TimerFired(sunset)),
        Err(Rejection::TimerNotDue { .. })
    ));
    let events = h.fire(TimerKind::Sunset);
    assert_eq!(Harness::changes(&events), ["removal_started"]);
    assert_eq!(events[0].effects, vec![Effect::Revoke { attempt: 1 }]);

    // A failed revoke is retried after a backoff.
    let events = h
        .system(Command::RevokeFailed {
            attempt: 1,
            error: "target down".into(),
        })
        .unwrap();
    assert_eq!(events[0].arm[0].kind, TimerKind::Retry);
    assert!(h.i().pending_effects().is_empty());
    let events = h.fire(TimerKind::Retry);
    assert_eq!(events[0].effects, vec![Effect::Revoke { attempt: 2 }]);
    let events = h.system(Command::RevokeSucceeded { attempt: 2 }).unwrap();
    assert_eq!(
        events[0].notice(h.i(), h.config.stuck_after),
        Some(Notice::SunsetRemoved)
    );
    assert_eq!(h.i().status, ItemStatus::Removed);
    assert!(h.i().timers().is_empty() && h.i().pending_effects().is_empty());
    assert_eq!(h.i().request_state(), RequestState::RequestCompleted);
    let phases = h.i().phases();
    assert_eq!(phases.len(), 2);
    assert!(phases.iter().all(|p| p.state == PhaseState::Completed));
}

#[test]
fn grant_with_sunrise_waits_for_it() {
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Role, Some(3), None),
        approvers(),
    );
    let events = h.approve_as("bob").unwrap();
    assert_eq!(Harness::changes(&events), ["approved"]);
    assert!(
        events[0].effects.is_empty(),
        "nothing provisioned before the sunrise"
    );
    let sunrise = h.timer(TimerKind::Sunrise);
    assert_eq!(sunrise.due, t0().saturating_add(HOUR * 3));
    assert_eq!(h.i().status, ItemStatus::Scheduled);
    // Cancel is refused once the approval step has passed.
    let r = h
        .send(Command::Cancel {
            comment: "changed my mind".into(),
        })
        .unwrap_err();
    assert!(matches!(r, Rejection::ApprovalPassed { .. }), "{r:?}");
    h.advance(HOUR);
    assert!(matches!(
        h.system(Command::TimerFired(sunrise)),
        Err(Rejection::TimerNotDue { .. })
    ));
    let events = h.fire(TimerKind::Sunrise);
    assert_eq!(Harness::changes(&events), ["grant_started"]);
    // A role makes no connection.
    assert_eq!(
        events[0].effects,
        vec![Effect::Grant {
            attempt: 1,
            kind: None
        }]
    );
    h.system(Command::GrantSucceeded { attempt: 1 }).unwrap();
    assert_eq!(h.i().status, ItemStatus::Granted);
    assert!(h.i().timers().is_empty(), "no sunset without a removeDate");
}

#[test]
fn reject_ends_the_item() {
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
        approvers(),
    );
    let events = h
        .send_as(
            &Actor::Identity(who("bob")),
            false,
            Command::Reject {
                comment: Some("no".into()),
            },
        )
        .unwrap();
    assert_eq!(events[0].cancel[0].kind, TimerKind::ApprovalExpiry);
    assert_eq!(
        events[0].notice(h.i(), h.config.stuck_after),
        Some(Notice::Rejected)
    );
    assert_eq!(h.i().status, ItemStatus::Rejected);
    assert_eq!(h.i().request_state(), RequestState::Rejected);
    assert_eq!(h.i().approval.state.completed_str(), Some("REJECTED"));
    let r = h.approve_as("bob").unwrap_err();
    assert!(matches!(
        r,
        Rejection::AlreadyDecided {
            state: "REJECTED",
            ..
        }
    ));
    // Nothing happens after a terminal state.
    assert!(h.send(Command::Close(Closure::default())).is_err());
    assert!(h.system(Command::GrantSucceeded { attempt: 1 }).is_err());
}

#[test]
fn cancel_before_approval_by_the_requester_or_an_admin_only() {
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
        approvers(),
    );
    let cancel = || Command::Cancel {
        comment: "by mistake".into(),
    };
    let r = h
        .send_as(&Actor::Identity(who("mallory")), false, cancel())
        .unwrap_err();
    assert!(matches!(r, Rejection::NotRequester(_)));
    assert_eq!(r.kind(), RejectionKind::Forbidden);
    let r = h
        .send_as(
            &Actor::Identity(who("carol")),
            false,
            Command::Cancel {
                comment: "x".repeat(5000),
            },
        )
        .unwrap_err();
    assert_eq!(r.kind(), RejectionKind::Invalid);
    assert!(h.i().cancelable());
    let events = h
        .send_as(&Actor::Identity(who("carol")), false, cancel())
        .unwrap();
    assert_eq!(events[0].cancel[0].kind, TimerKind::ApprovalExpiry);
    assert_eq!(h.i().status, ItemStatus::Cancelled);
    assert_eq!(h.i().approval.state, WorkItemState::Cancelled);
    assert_eq!(h.i().request_state(), RequestState::Cancelled);
    assert!(!h.i().cancelable());

    // After approval, cancel is refused even for an admin; close is the way.
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
        approvers(),
    );
    h.approve_as("bob").unwrap();
    let r = h.send(cancel()).unwrap_err();
    assert!(
        matches!(
            r,
            Rejection::ApprovalPassed {
                status: "GRANTING",
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(r.kind(), RejectionKind::Invalid);
}

fn closure() -> Closure {
    Closure {
        execution: ExecutionStatus::Completed,
        completion: CompletionStatus::Incomplete,
        message: "closed by the test".into(),
    }
}

#[test]
fn close_in_each_stage() {
    let grant = || spec(RequestType::Grant, ObjectKind::Entitlement, None, Some(10));
    // Pending approval: ends at once, the approval is cancelled.
    let mut h = Harness::submitted(grant(), approvers());
    let r = h
        .send_as(
            &Actor::Identity(who("carol")),
            false,
            Command::Close(closure()),
        )
        .unwrap_err();
    assert!(matches!(r, Rejection::NotAdmin(_)));
    let events = h.send(Command::Close(closure())).unwrap();
    assert_eq!(
        events[0].notice(h.i(), h.config.stuck_after),
        Some(Notice::Closed)
    );
    assert_eq!(h.i().status, ItemStatus::Closed);
    assert_eq!(h.i().approval.state, WorkItemState::Cancelled);
    assert_eq!(h.i().request_state(), RequestState::NotAllItemsProvisioned);
    assert!(matches!(
        h.send(Command::Close(closure())),
        Err(Rejection::AlreadyClosed(_))
    ));

    // Scheduled (waiting for sunrise): ends at once; the sunrise is cancelled.
    let mut h = Harness::submitted(
        spec(
            RequestType::Grant,
            ObjectKind::Entitlement,
            Some(2),
            Some(10),
        ),
        approvers(),
    );
    h.approve_as("bob").unwrap();
    let events = h.send(Command::Close(Closure::default())).unwrap();
    assert_eq!(events[0].cancel[0].kind, TimerKind::Sunrise);
    assert_eq!(h.i().status, ItemStatus::Closed);
    assert_eq!(h.i().request_state(), RequestState::Terminated);

    // Granting, try in flight: the try settles, then what it may have left is removed.
    let mut h = Harness::submitted(grant(), ApprovalStep::Auto);
    let events = h.send(Command::Close(closure())).unwrap();
    assert_eq!(Harness::changes(&events), ["closed", "stop_requested"]);
    assert_eq!(events[1].cancel[0].kind, TimerKind::Sunset);
    let events = h.system(Command::GrantSucceeded { attempt: 1 }).unwrap();
    assert_eq!(Harness::changes(&events), ["grant_settled"]);
    assert_eq!(events[0].effects, vec![Effect::Revoke { attempt: 1 }]);
    h.system(Command::RevokeSucceeded { attempt: 1 }).unwrap();
    assert_eq!(h.i().status, ItemStatus::Closed);

    // Granting, waiting to retry: removal starts at once (a failed try may have landed).
    let mut h = Harness::submitted(grant(), ApprovalStep::Auto);
    h.system(Command::GrantFailed {
        attempt: 1,
        error: "timeout".into(),
        retryable: true,
    })
    .unwrap();
    let events = h.send(Command::Close(closure())).unwrap();
    assert_eq!(Harness::changes(&events), ["closed", "removal_started"]);
    assert_eq!(events[1].effects, vec![Effect::Revoke { attempt: 1 }]);
    h.system(Command::RevokeSucceeded { attempt: 1 }).unwrap();
    assert_eq!(h.i().status, ItemStatus::Closed);
    assert_eq!(
        h.i().removal.as_ref().unwrap().reason,
        RemovalReason::Closed
    );

    // Granted: the close is recorded; the access keeps its sunset.
    let mut h = Harness::submitted(grant(), ApprovalStep::Auto);
    h.system(Command::GrantSucceeded { attempt: 1 }).unwrap();
    let events = h.send(Command::Close(closure())).unwrap();
    assert!(events[0].arm.is_empty() && events[0].cancel.is_empty());
    assert_eq!(h.i().status, ItemStatus::Granted);
    assert_eq!(h.i().request_state(), RequestState::NotAllItemsProvisioned);
    h.fire(TimerKind::Sunset);
    h.system(Command::RevokeSucceeded { attempt: 1 }).unwrap();
    assert_eq!(h.i().status, ItemStatus::Removed);

    // Removing: recorded; the removal goes on.
    let mut h = Harness::submitted(grant(), ApprovalStep::Auto);
    h.system(Command::GrantSucceeded { attempt: 1 }).unwrap();
    h.fire(TimerKind::Sunset);
    h.send(Command::Close(closure())).unwrap();
    assert_eq!(h.i().pending_effects(), vec![Effect::Revoke { attempt: 1 }]);
    h.system(Command::RevokeSucceeded { attempt: 1 }).unwrap();
    assert_eq!(h.i().status, ItemStatus::Removed);
    // Ended: close is refused.
    let r = h.send(Command::Close(Closure::default())).unwrap_err();
    assert!(matches!(r, Rejection::AlreadyClosed(_)), "{r:?}");
    let mut h = Harness::submitted(grant(), approvers());
    h.approve_as("bob").unwrap();
    h.system(Command::GrantSucceeded { attempt: 1 }).unwrap();
    h.fire(TimerKind::Sunset);
    h.system(Command::RevokeSucceeded { attempt: 1 }).unwrap();
    let r = h.send(Command::Close(Closure::default())).unwrap_err();
    assert!(
        matches!(
            r,
            Rejection::WrongStatus {
                status: "REMOVED",
                ..
            }
        ),
        "{r:?}"
    );
}

#[test]
fn duplicates_are_cancelled_at_submission() {
    let mut h = Harness::new();
    let existing = assigned();
    let events = h
        .submit(
            spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
            ApprovalStep::Auto,
            existing,
        )
        .unwrap();
    assert_eq!(Harness::changes(&events), ["submitted", "cancelled"]);
    assert!(events.iter().all(|e| e.effects.is_empty()));
    assert_eq!(h.i().status, ItemStatus::Cancelled);
    assert_eq!(
        h.i().cancellation.as_ref().unwrap().duplicate,
        Some(Duplicate::AlreadyAssigned)
    );
    assert_eq!(h.i().request_state(), RequestState::Cancelled);

    let other = item_id(AccessRequestId::from_u128(1), 0);
    let mut h = Harness::new();
    let events = h
        .submit(
            spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
            approvers(),
            Existing {
                assignment: None,
                in_progress: Some(other),
            },
        )
        .unwrap();
    // Submitted arms the expiry and the cancellation disarms it.
    assert_eq!(events[0].arm.len(), 1);
    assert_eq!(events[1].cancel, events[0].arm);
    assert!(events[1].change.eq(&Change::Cancelled {
        comment: format!("cancelled as a duplicate of access request item {other}, in progress"),
        duplicate: Some(Duplicate::InProgress(other)),
    }));
    // A second submit of the same item is a conflict.
    let r = h
        .submit(
            spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
            approvers(),
            Existing::default(),
        )
        .unwrap_err();
    assert_eq!(r.kind(), RejectionKind::Conflict);
}

#[test]
fn revoke_of_a_jit_connection_deactivates_the_running_activation_first() {
    let mut h = Harness::new();
    let activation = ActivationId::from_u128(77);
    h.running = Some(activation);
    let events = h
        .submit(
            spec(RequestType::Revoke, ObjectKind::Entitlement, None, None),
            ApprovalStep::Auto,
            assigned(),
        )
        .unwrap();
    assert_eq!(
        Harness::changes(&events),
        ["submitted", "approved", "removal_started"]
    );
    assert_eq!(
        events[2].effects,
        vec![Effect::DeactivateJit { activation }]
    );
    assert_eq!(h.i().request_state(), RequestState::Executing);
    // The revoke does not run before the deactivation is reported.
    assert_eq!(
        h.system(Command::RevokeSucceeded { attempt: 1 })
            .unwrap_err(),
        Rejection::Stale("effect result")
    );
    assert!(
        h.system(Command::JitDeactivated {
            activation: ActivationId::from_u128(78)
        })
        .is_err()
    );
    let events = h.system(Command::JitDeactivated { activation }).unwrap();
    assert_eq!(events[0].effects, vec![Effect::Revoke { attempt: 1 }]);
    let events = h.system(Command::RevokeSucceeded { attempt: 1 }).unwrap();
    assert_eq!(
        events[0].notice(h.i(), h.config.stuck_after),
        Some(Notice::Revoked)
    );
    assert_eq!(h.i().status, ItemStatus::Removed);
    assert_eq!(h.i().request_state(), RequestState::RequestCompleted);
}

#[test]
fn revoke_with_a_removal_date_waits_for_it() {
    let mut h = Harness::submitted(
        spec(RequestType::Revoke, ObjectKind::Entitlement, None, Some(5)),
        approvers(),
    );
    let events = h.approve_as("bob").unwrap();
    assert_eq!(Harness::changes(&events), ["approved"]);
    assert_eq!(events[0].arm[0].kind, TimerKind::Sunset);
    let events = h.fire(TimerKind::Sunset);
    assert_eq!(events[0].effects, vec![Effect::Revoke { attempt: 1 }]);
}

#[test]
fn entitlement_grants_follow_the_jit_policy() {
    let mut h = Harness::new();
    h.policy.entitlement_ids = vec![EntitlementId::parse("db-admins").unwrap()];
    h.policy.apply_to_future_assignments = true;
    let events = h
        .submit(
            spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
            ApprovalStep::Auto,
            Existing::default(),
        )
        .unwrap();
    assert_eq!(
        events.last().unwrap().effects,
        vec![Effect::Grant {
            attempt: 1,
            kind: Some(ConnectionType::Jit)
        }]
    );
    // Governed but not applied to future assignments: STANDING.
    let mut h = Harness::new();
    h.policy.entitlement_ids = vec![EntitlementId::parse("db-admins").unwrap()];
    h.submit(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
        ApprovalStep::Auto,
        Existing::default(),
    )
    .unwrap();
    assert_eq!(
        h.i().pending_effects(),
        vec![Effect::Grant {
            attempt: 1,
            kind: Some(ConnectionType::Standing)
        }]
    );
}

#[test]
fn approval_expiry() {
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
        approvers(),
    );
    let expiry = h.timer(TimerKind::ApprovalExpiry);
    h.advance(HOUR);
    assert!(matches!(
        h.system(Command::TimerFired(expiry)),
        Err(Rejection::TimerNotDue { .. })
    ));
    let events = h.fire(TimerKind::ApprovalExpiry);
    assert_eq!(
        events[0].notice(h.i(), h.config.stuck_after),
        Some(Notice::ApprovalExpired)
    );
    assert_eq!(h.i().status, ItemStatus::ApprovalExpired);
    assert_eq!(h.i().approval.state, WorkItemState::Expired);
    assert_eq!(h.i().request_state(), RequestState::Cancelled);
    assert!(h.approve_as("bob").is_err());
    // The timer, delivered again, is stale.
    assert_eq!(
        h.system(Command::TimerFired(expiry)).unwrap_err(),
        Rejection::Stale("timer")
    );
}

#[test]
fn a_grant_that_keeps_failing_is_removed_fail_closed_and_a_stuck_removal_alerts_once() {
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
        ApprovalStep::Auto,
    );
    for attempt in 1..3 {
        h.system(Command::GrantFailed {
            attempt,
            error: "timeout".into(),
            retryable: true,
        })
        .unwrap();
        h.fire(TimerKind::Retry);
    }
    let events = h
        .system(Command::GrantFailed {
            attempt: 3,
            error: "timeout".into(),
            retryable: true,
        })
        .unwrap();
    assert_eq!(Harness::changes(&events), ["grant_abandoned"]);
    assert_eq!(events[0].effects, vec![Effect::Revoke { attempt: 1 }]);
    assert_eq!(h.i().request_state(), RequestState::Executing);
    let mut stuck = 0;
    for attempt in 1..6 {
        let events = h
            .system(Command::RevokeFailed {
                attempt,
                error: "down".into(),
            })
            .unwrap();
        stuck += events
            .iter()
            .filter(|e| e.notice(h.i(), h.config.stuck_after) == Some(Notice::Stuck))
            .count();
        let retry = h.timer(TimerKind::Retry);
        assert!(retry.due.since(h.now) <= h.config.backoff_cap);
        h.fire(TimerKind::Retry);
    }
    assert_eq!(stuck, 1, "the stuck alert is raised once");
    assert!(h.i().removal.as_ref().unwrap().stuck);
    let events = h.system(Command::RevokeSucceeded { attempt: 6 }).unwrap();
    assert_eq!(
        events[0].notice(h.i(), h.config.stuck_after),
        Some(Notice::Recovered),
        "the end of a stuck removal is told as its recovery"
    );
    assert_eq!(h.i().status, ItemStatus::Failed);
    assert!(!h.i().removal.as_ref().unwrap().stuck);
    assert_eq!(h.i().request_state(), RequestState::ProvisioningFailed);

    // A permanent refusal gives up at once.
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
        ApprovalStep::Auto,
    );
    let events = h
        .system(Command::GrantFailed {
            attempt: 1,
            error: "no such group".into(),
            retryable: false,
        })
        .unwrap();
    assert_eq!(Harness::changes(&events), ["grant_abandoned"]);
}

#[test]
fn a_sunset_during_a_grant_in_flight_waits_for_it_to_settle() {
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, Some(1)),
        ApprovalStep::Auto,
    );
    let events = h.fire(TimerKind::Sunset);
    assert_eq!(Harness::changes(&events), ["stop_requested"]);
    assert!(events[0].effects.is_empty());
    let events = h
        .system(Command::GrantFailed {
            attempt: 1,
            error: "timeout".into(),
            retryable: true,
        })
        .unwrap();
    // Failed or not, the try may have landed: remove.
    assert_eq!(Harness::changes(&events), ["grant_settled"]);
    assert_eq!(events[0].effects, vec![Effect::Revoke { attempt: 1 }]);
    h.system(Command::RevokeSucceeded { attempt: 1 }).unwrap();
    assert_eq!(h.i().status, ItemStatus::Removed);
}

#[test]
fn a_grant_retry_due_after_the_sunset_removes_instead() {
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, Some(1)),
        ApprovalStep::Auto,
    );
    h.system(Command::GrantFailed {
        attempt: 1,
        error: "timeout".into(),
        retryable: true,
    })
    .unwrap();
    // After downtime both are due; the retry is delivered first.
    h.advance(HOUR * 2);
    let events = h.fire(TimerKind::Retry);
    assert_eq!(Harness::changes(&events), ["removal_started"]);
    assert_eq!(events[0].effects, vec![Effect::Revoke { attempt: 1 }]);
    assert!(events[0].cancel.iter().any(|t| t.kind == TimerKind::Sunset));
    assert_eq!(
        h.i().removal.as_ref().unwrap().reason,
        RemovalReason::Sunset
    );
}

#[test]
fn an_approval_after_the_removal_date_lapses() {
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, Some(2)),
        approvers(),
    );
    h.advance(HOUR * 3);
    let events = h.approve_as("bob").unwrap();
    assert_eq!(Harness::changes(&events), ["approved", "lapsed"]);
    assert!(events.iter().all(|e| e.effects.is_empty()));
    assert_eq!(h.i().status, ItemStatus::Lapsed);
    assert_eq!(h.i().request_state(), RequestState::Terminated);
}

#[test]
fn supersede_ends_a_granted_item_without_removal() {
    let mut h = Harness::submitted(
        spec(RequestType::Grant, ObjectKind::Entitlement, None, Some(9)),
        ApprovalStep::Auto,
    );
    let later = item_id(AccessRequestId::from_u128(8), 0);
    assert!(matches!(
        h.system(Command::Supersede { by: later }),
        Err(Rejection::WrongStatus { .. })
    ));
    h.system(Command::GrantSucceeded { attempt: 1 }).unwrap();
    let events = h.system(Command::Supersede { by: later }).unwrap();
    assert_eq!(events[0].cancel[0].kind, TimerKind::Sunset);
    assert!(events[0].effects.is_empty());
    assert_eq!(h.i().status, ItemStatus::Superseded);
}

#[test]
fn bad_approval_steps_and_unknown_items_are_refused() {
    for step in [
        ApprovalStep::Approvers {
            approvers: vec![],
            scheme: ApprovalScheme::Manager,
            expires_after: HOUR,
        },
        ApprovalStep::Approvers {
            approvers: (0..101).map(|i| who(&format!("a{i}"))).collect(),
            scheme: ApprovalScheme::Manager,
            expires_after: HOUR,
        },
        ApprovalStep::Approvers {
            approvers: vec![who("bob")],
            scheme: ApprovalScheme::Manager,
            expires_after: Duration::from_secs(1),
        },
    ] {
        let mut h = Harness::new();
        let r = h
            .submit(
                spec(RequestType::Grant, ObjectKind::Entitlement, None, None),
                step,
                Existing::default(),
            )
            .unwrap_err();
        assert!(matches!(r, Rejection::InvalidApproval(_)), "{r:?}");
        assert!(h.item.is_none());
    }
    let mut h = Harness::new();
    let mut bad = spec(RequestType::Revoke, ObjectKind::Entitlement, Some(1), None);
    let r = h
        .submit(bad.clone(), ApprovalStep::Auto, Existing::default())
        .unwrap_err();
    assert_eq!(r.kind(), RejectionKind::Invalid);
    bad.id = item_id(AccessRequestId::from_u128(7), 1);
    assert!(matches!(
        h.submit(bad, ApprovalStep::Auto, Existing::default()),
        Err(Rejection::WrongItem { .. })
    ));
    assert_eq!(
        h.approve_as("bob").unwrap_err().kind(),
        RejectionKind::NotFound
    );
    assert_eq!(
        h.system(Command::GrantSucceeded { attempt: 1 })
            .unwrap_err()
            .kind(),
        RejectionKind::Stale
    );
}

/// Approves a pending item, then runs pending effects (succeeding) and due timers until nothing
/// is left.
fn drive(h: &mut Harness) {
    for _ in 0..32 {
        let effects = h.i().pending_effects();
        if h.i().status == ItemStatus::PendingApproval {
            h.send(Command::Approve { comment: None }).unwrap();
        } else if let Some(effect) = effects.first() {
            let command = match *effect {
                Effect::Grant { attempt, .. } => Command::GrantSucceeded { attempt },
                Effect::DeactivateJit { activation } => Command::JitDeactivated { activation },
                Effect::Revoke { attempt } => Command::RevokeSucceeded { attempt },
            };
            h.system(command).unwrap();
        } else if let Some(t) = h.i().timers().into_iter().min() {
            h.now = h.now.max(t.due);
            h.system(Command::TimerFired(t)).unwrap();
        } else {
            return;
        }
    }
    panic!("did not settle: {:?}", h.i());
}

#[test]
fn restart_in_every_stage_resumes_from_the_log() {
    // One script through every stage: approval, sunrise, a failed grant, retry, grant, sunset,
    // deactivation of a running activation, a failed revoke, retry, removal.
    let mut h = Harness::submitted(
        spec(
            RequestType::Grant,
            ObjectKind::Entitlement,
            Some(1),
            Some(5),
        ),
        approvers(),
    );
    h.approve_as("bob").unwrap();
    h.fire(TimerKind::Sunrise);
    h.system(Command::GrantFailed {
        attempt: 1,
        error: "x".into(),
        retryable: true,
    })
    .unwrap();
    h.fire(TimerKind::Retry);
    h.system(Command::GrantSucceeded { attempt: 2 }).unwrap();
    h.running = Some(ActivationId::from_u128(5));
    h.fire(TimerKind::Sunset);
    h.system(Command::JitDeactivated {
        activation: ActivationId::from_u128(5),
    })
    .unwrap();
    h.system(Command::RevokeFailed {
        attempt: 1,
        error: "x".into(),
    })
    .unwrap();
    h.fire(TimerKind::Retry);
    h.system(Command::RevokeSucceeded { attempt: 2 }).unwrap();
    assert_eq!(h.i().status, ItemStatus::Removed);
    let last = h.i().clone();

    // After every prefix of the log (a crash after that commit), the replayed state has exactly
    // the timers the events armed and not cancelled, and driving it on ends where the live run
    // ended.
    for cut in 1..=h.events.len() {
        let mut state = None;
        let mut armed: Vec<Timer> = Vec::new();
        for e in &h.events[..cut] {
            state = Some(evolve(state, e).unwrap());
            armed.retain(|t| !e.cancel.contains(t));
            armed.extend(e.arm.iter().copied());
        }
        let state = state.unwrap();
        let mut timers = state.timers();
        timers.sort();
        armed.sort();
        assert_eq!(timers, armed, "after {cut} events");
        let mut resumed = Harness::new();
        resumed.item = Some(state);
        resumed.now = h.events[cut - 1].at;
        resumed.running = Some(ActivationId::from_u128(5));
        drive(&mut resumed);
        let end = resumed.i();
        assert!(end.status.is_terminal(), "after {cut} events: {end:?}");
        assert_eq!(end.status, last.status, "after {cut} events");
    }
}

/// The access as an approved grant left it: assigned by request, no dates.
fn assigned() -> Existing {
    Existing {
        assignment: Some(Assignment {
            origin: Origin::Requested,
            accounts: Vec::new(),
            start_date: None,
            remove_date: None,
        }),
        in_progress: None,
    }
}

/// A revoke checked by the caller while the access was assigned, decided by the writer after a
/// sunset removed it: refused, with nothing recorded (before, it went through and started a
/// removal of access nobody held).
#[test]
fn a_revoke_decided_after_the_access_was_removed_is_refused() {
    let mut h = Harness::new();
    let r = h
        .submit(
            spec(RequestType::Revoke, ObjectKind::Entitlement, None, None),
            ApprovalStep::Auto,
            Existing::default(),
        )
        .unwrap_err();
    assert!(
        matches!(
            r,
            Rejection::Invalid(jitflow_core::request::submit::Error::RevokeNotAssigned { .. })
        ),
        "{r:?}"
    );
    assert!(h.item.is_none() && h.events.is_empty());
    // Inherited access is refused the same way.
    let mut inherited = assigned();
    inherited.assignment.as_mut().unwrap().origin = Origin::Role;
    let r = h
        .submit(
            spec(RequestType::Revoke, ObjectKind::Entitlement, None, None),
            ApprovalStep::Auto,
            inherited,
        )
        .unwrap_err();
    assert_eq!(r.kind(), RejectionKind::Invalid);
}
