//! Access request lifecycles through the engine, with a manual clock: submit, approve or reject,
//! sunrise and sunset, cancel, close, duplicates, revoke of a JIT connection with a running
//! activation, approval expiry, and a restart in every stage. Every test ends with the store
//! verified against its log.

mod common;

use std::time::Duration;

use common::{Harness, Storage, Target, caller, config};
use jitflow::Error;
use jitflow::clock::ManualClock;
use jitflow::requests::{Rights, item_connection};
use jitflow::{Caller, Config};
use jitflow_core::connection::{ConnectionState, ConnectionType};
use jitflow_core::id::{EntitlementId, IdentityId, ObjectId, RequestItemId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::request::submit::{ObjectKind, ObjectRef, RequestedItem};
use jitflow_core::request::{
    CompletionStatus, Duplicate, ExecutionStatus, Item, ItemStatus, Notice, Rejection, RequestType,
    Submission, WorkItemState,
};
use jitflow_core::time::{Minutes, Timestamp};

/// The entitlement the test policy governs (a grant of it makes a JIT connection).
const JIT_ENTITLEMENT: &str = "domain-admins";
/// An entitlement the policy does not govern (a grant of it is STANDING access).
const STANDING_ENTITLEMENT: &str = "auditors";

fn who(name: &str) -> Caller {
    Caller {
        tenant: caller().tenant,
        actor: Actor::Identity(IdentityId::parse(name).unwrap()),
    }
}

/// An engine whose approval step is `approvers` (none: automatic), expiring after an hour, with
/// the test policy governing [`JIT_ENTITLEMENT`] for future assignments.
async fn harness(store: &Storage, approvers: &[&str]) -> Harness {
    let clock = ManualClock::new(Timestamp::from_millis(common::START).unwrap());
    let mut config: Config = config();
    config.approvers = approvers
        .iter()
        .map(|a| IdentityId::parse(a).unwrap())
        .collect();
    config.approval_timeout = Duration::from_secs(3600);
    let h = Harness::open_with(store, clock, Target::default(), config).await;
    let mut policy = common::policy();
    policy.entitlement_ids = vec![EntitlementId::parse(JIT_ENTITLEMENT).unwrap()];
    policy.apply_to_future_assignments = true;
    h.engine.put_policy(&caller(), policy).await.unwrap();
    h
}

fn entitlement(id: &str) -> ObjectRef {
    ObjectRef {
        kind: ObjectKind::Entitlement,
        id: ObjectId::parse(id).unwrap(),
    }
}

/// A GRANT_ACCESS (or REVOKE_ACCESS) submission of one object for `identity`.
fn submission(
    request_type: RequestType,
    identity: &str,
    object: ObjectRef,
    start: Option<Timestamp>,
    remove: Option<Timestamp>,
) -> Submission {
    // The contract requires a comment on a revoke.
    let comment = (request_type == RequestType::Revoke).then(|| "no longer needed".to_owned());
    Submission {
        request_type,
        requested_for: Some(vec![IdentityId::parse(identity).unwrap()]),
        requested_items: Some(vec![RequestedItem {
            object: Some(object),
            start_date: start,
            remove_date: remove,
            comment,
            ..Default::default()
        }]),
        requested_for_with_items: None,
        client_metadata: Default::default(),
    }
}

/// A grant of `object` for dave whose start date has passed: it breaks a rule.
fn starting_in_the_past(object: ObjectRef) -> Submission {
    let past = Timestamp::from_millis(common::START - 1000).unwrap();
    submission(RequestType::Grant, "dave", object, Some(past), None)
}

/// Submits a grant of `object` for dave, as alice; returns its one item.
async fn submit_grant(
    h: &Harness,
    object: ObjectRef,
    start: Option<Timestamp>,
    remove: Option<Timestamp>,
) -> Item {
    let s = submission(RequestType::Grant, "dave", object, start, remove);
    let (request, items) = h
        .engine
        .submit_request(&caller(), Rights::Admin, &s)
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].spec.request, request);
    items.into_iter().next().unwrap()
}

fn later(h: &Harness, minutes: u32) -> Timestamp {
    h.engine.now().plus_minutes(Minutes(minutes))
}

/// Waits until the item satisfies `done`, driven by committed events.
async fn wait_item(
    h: &Harness,
    id: RequestItemId,
    what: &str,
    done: impl Fn(&Item) -> bool,
) -> Item {
    let mut events = h.engine.subscribe(0);
    let guard = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(i) = h.engine.request_item(&caller().tenant, id).unwrap()
                && done(&i)
            {
                return i;
            }
            events.next().await.expect("engine running");
        }
    });
    match guard.await {
        Ok(i) => i,
        Err(_) => panic!(
            "timed out waiting for {what}: {:?}",
            h.engine.request_item(&caller().tenant, id)
        ),
    }
}

async fn wait_status(h: &Harness, id: RequestItemId, status: ItemStatus) -> Item {
    wait_item(h, id, status.as_str(), |i| i.status == status).await
}

/// Stops the engine (delivering what is committed) and checks the store against its log.
async fn finish(h: Harness) -> Harness {
    h.engine.shutdown().await;
    let report = h.engine.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    assert!(report.items > 0, "the log holds request items");
    h
}

/// Bob, the approver, approves `item`.
async fn bob_approves(h: &Harness, item: &Item) -> Result<Item, Error> {
    h.engine
        .approve(&who("bob"), Rights::User, item.approval.id, None)
        .await
}

/// Stops the engine, verifies the store, and checks the access request notices delivered.
async fn finish_with_notices(h: Harness, expected: &[Notice]) {
    let h = finish(h).await;
    assert_eq!(h.inbox.request_notices(), expected);
}

fn rejection(e: Error) -> Rejection {
    match e {
        Error::RequestRejected(r) => r,
        other => panic!("expected a request rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_with_approval_then_sunset() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob"]).await;
    let sunset = later(&h, 120);
    let item = submit_grant(&h, entitlement(STANDING_ENTITLEMENT), None, Some(sunset)).await;
    assert_eq!(item.status, ItemStatus::PendingApproval);
    assert_eq!(item.approval.state, WorkItemState::Pending);
    assert!(h.target.keys("grant").is_empty(), "nothing before approval");

    let approved = h
        .engine
        .approve(
            &who("bob"),
            Rights::User,
            item.approval.id,
            Some("ok".into()),
        )
        .await
        .unwrap();
    assert_eq!(approved.status, ItemStatus::Granting);
    let granted = wait_status(&h, item.id(), ItemStatus::Granted).await;
    assert_eq!(granted.approval.comment.as_deref(), Some("ok"));
    let connection = item_connection(&item.spec).unwrap();
    assert!(h.target.state().held.contains(&connection));
    let c = h.connection(connection);
    assert_eq!(c.kind(), ConnectionType::Standing);
    assert_eq!(
        h.target.keys("grant"),
        vec![format!("{}:grant:1", item.id())]
    );

    // One second before the sunset the access is held; at the sunset it is removed.
    h.clock.advance(Duration::from_secs(120 * 60 - 1));
    assert_eq!(
        h.engine
            .request_item(&caller().tenant, item.id())
            .unwrap()
            .unwrap()
            .status,
        ItemStatus::Granted
    );
    h.clock.advance(Duration::from_secs(1));
    let removed = wait_status(&h, item.id(), ItemStatus::Removed).await;
    assert!(removed.ended_at.unwrap() >= sunset, "never removed early");
    assert!(!h.target.state().held.contains(&connection));
    assert_eq!(
        h.engine.connection(&caller().tenant, connection).unwrap(),
        None
    );
    finish_with_notices(
        h,
        &[
            Notice::ApprovalRequested,
            Notice::Approved,
            Notice::Granted,
            Notice::SunsetRemoved,
        ],
    )
    .await;
}

/// A request item whose revoke keeps failing turns stuck, is counted by the stuck gauge (with a
/// stuck connection beside it: the gauge counts both workflows), survives a restart counted,
/// and leaves the gauge when its revoke finally succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_removal_is_counted_exactly_until_it_succeeds() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob"]).await;
    let item = submit_grant(
        &h,
        entitlement(STANDING_ENTITLEMENT),
        None,
        Some(later(&h, 10)),
    )
    .await;
    bob_approves(&h, &item).await.unwrap();
    wait_status(&h, item.id(), ItemStatus::Granted).await;
    assert_eq!(common::stuck_gauge(&h.engine), 0);
    h.target.state().fail_revokes = 4;
    h.clock.advance(Duration::from_secs(10 * 60));
    for attempt in 1..=4u32 {
        let removing = wait_item(&h, item.id(), "a revoke retry wait", |i| {
            i.removal
                .as_ref()
                .is_some_and(|r| r.attempt == attempt && r.retry_at.is_some())
        })
        .await;
        let stuck = removing.removal.unwrap().stuck;
        assert_eq!(stuck, attempt >= 3, "stuck after 3 tries");
        assert_eq!(common::stuck_gauge(&h.engine), u64::from(stuck));
        if attempt < 4 {
            h.clock.advance(Duration::from_secs(30));
        }
    }
    // A stuck connection beside it: both count. Every revoke fails meanwhile (the item's
    // retries too: it stays stuck).
    let id = h.activated(common::conn(77), Some(Minutes(1))).await;
    h.target.state().fail_revokes = 1_000;
    h.clock.advance(Duration::from_secs(60));
    for attempt in 1..=3u32 {
        h.wait_for(id, "revoke retry armed", |c| {
            c.activation
                .as_ref()
                .is_some_and(|a| a.attempt == attempt && a.retry_at.is_some())
        })
        .await;
        if attempt < 3 {
            h.clock.advance(Duration::from_secs(30));
        }
    }
    assert!(h.connection(id).activation.unwrap().stuck);
    assert_eq!(common::stuck_gauge(&h.engine), 2);
    let h = h.restart().await;
    assert_eq!(common::stuck_gauge(&h.engine), 2, "counted after a restart");
    h.target.state().fail_revokes = 0;
    for _ in 0..4 {
        h.clock.advance(Duration::from_secs(30));
    }
    wait_status(&h, item.id(), ItemStatus::Removed).await;
    h.wait_for(id, "EXPIRED", |c| c.state == ConnectionState::Expired)
        .await;
    assert_eq!(common::stuck_gauge(&h.engine), 0, "both recovered");
    let report = h.engine.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_with_sunrise_waits_for_its_start_date() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &[]).await;
    let role = ObjectRef {
        kind: ObjectKind::Role,
        id: ObjectId::parse("auditors-role").unwrap(),
    };
    let item = submit_grant(&h, role, Some(later(&h, 60)), None).await;
    assert_eq!(
        item.status,
        ItemStatus::Scheduled,
        "approved at once, waiting"
    );
    assert_eq!(item.approval.state, WorkItemState::Approved);
    h.clock.advance(Duration::from_secs(60 * 60 - 1));
    tokio::task::yield_now().await;
    assert!(
        h.target.keys("grant_item").is_empty(),
        "nothing before the sunrise"
    );
    h.clock.advance(Duration::from_secs(1));
    let granted = wait_status(&h, item.id(), ItemStatus::Granted).await;
    assert!(granted.granted_at.unwrap() >= item.spec.start_date.unwrap());
    assert!(h.target.state().held_items.contains(&item.id()));
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_ends_the_item_and_only_approvers_decide() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob"]).await;
    let item = submit_grant(&h, entitlement(STANDING_ENTITLEMENT), None, None).await;
    let e = h
        .engine
        .approve(&who("carol"), Rights::User, item.approval.id, None)
        .await
        .unwrap_err();
    assert!(matches!(rejection(e), Rejection::NotApprover { .. }));
    let unchanged = h
        .engine
        .request_item(&caller().tenant, item.id())
        .unwrap()
        .unwrap();
    assert_eq!(unchanged, item, "a refusal changes nothing");

    let rejected = h
        .engine
        .reject(
            &who("bob"),
            Rights::User,
            item.approval.id,
            Some("no".into()),
        )
        .await
        .unwrap();
    assert_eq!(rejected.status, ItemStatus::Rejected);
    assert_eq!(rejected.approval.state, WorkItemState::Rejected);
    let e = bob_approves(&h, &item).await.unwrap_err();
    assert!(matches!(rejection(e), Rejection::AlreadyDecided { .. }));
    assert!(h.target.state().calls.is_empty());
    finish_with_notices(h, &[Notice::ApprovalRequested, Notice::Rejected]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_approval_and_refused_after() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob"]).await;
    let first = submit_grant(&h, entitlement(STANDING_ENTITLEMENT), None, None).await;
    let e = h
        .engine
        .cancel_request(
            &who("carol"),
            Rights::User,
            first.spec.request,
            "mine".into(),
        )
        .await
        .unwrap_err();
    assert!(matches!(rejection(e), Rejection::NotRequester(_)));
    let items = h
        .engine
        .cancel_request(
            &caller(),
            Rights::User,
            first.spec.request,
            "not needed".into(),
        )
        .await
        .unwrap();
    assert_eq!(items[0].status, ItemStatus::Cancelled);

    let second = submit_grant(&h, entitlement(STANDING_ENTITLEMENT), None, None).await;
    bob_approves(&h, &second).await.unwrap();
    let e = h
        .engine
        .cancel_request(&caller(), Rights::Admin, second.spec.request, "late".into())
        .await
        .unwrap_err();
    assert!(matches!(rejection(e), Rejection::ApprovalPassed { .. }));
    wait_status(&h, second.id(), ItemStatus::Granted).await;

    // Bulk cancel: one result per request, and more than 50 ids is refused whole.
    let third = submit_grant(&h, entitlement("readers"), None, None).await;
    let results = h
        .engine
        .bulk_cancel(
            &caller(),
            Rights::User,
            &[third.spec.request, second.spec.request],
            "bulk".into(),
        )
        .await
        .unwrap();
    assert_eq!(
        results[0].as_ref().unwrap()[0].status,
        ItemStatus::Cancelled
    );
    assert!(results[1].is_err());
    let many = vec![third.spec.request; 51];
    assert!(
        h.engine
            .bulk_cancel(&caller(), Rights::User, &many, "x".into())
            .await
            .is_err()
    );
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_in_each_stage() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob"]).await;
    let admin = Rights::Admin;
    let close = |item: &Item| {
        let engine = h.engine.clone();
        let request = item.spec.request;
        async move {
            engine
                .close_request(
                    &caller(),
                    admin,
                    request,
                    ExecutionStatus::Completed,
                    CompletionStatus::Incomplete,
                    Some("closed by ops".into()),
                )
                .await
        }
    };

    // Pending approval: ends at once; only an admin may close.
    let pending = submit_grant(&h, entitlement("e-pending"), None, None).await;
    let e = h
        .engine
        .close_request(
            &caller(),
            Rights::User,
            pending.spec.request,
            ExecutionStatus::Terminated,
            CompletionStatus::Failure,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(rejection(e), Rejection::NotAdmin(_)));
    let closed = close(&pending).await.unwrap();
    assert_eq!(closed[0].status, ItemStatus::Closed);
    assert_eq!(closed[0].closure.as_ref().unwrap().message, "closed by ops");
    assert!(close(&pending).await.is_err(), "closed twice");

    // Scheduled (approved, sunrise ahead): ends at once, nothing granted.
    let scheduled = submit_grant(&h, entitlement("e-scheduled"), Some(later(&h, 60)), None).await;
    bob_approves(&h, &scheduled).await.unwrap();
    assert_eq!(
        close(&scheduled).await.unwrap()[0].status,
        ItemStatus::Closed
    );

    // Granting, waiting to retry a failed try: the grant stops and the cleanup removes what the
    // failed try may have left.
    h.target.state().fail_grants = 1;
    let granting = submit_grant(&h, entitlement("e-granting"), None, None).await;
    bob_approves(&h, &granting).await.unwrap();
    wait_item(&h, granting.id(), "a retry wait", |i| {
        i.grant.as_ref().is_some_and(|g| g.retry_at.is_some())
    })
    .await;
    assert_eq!(
        close(&granting).await.unwrap()[0].status,
        ItemStatus::Removing
    );
    wait_status(&h, granting.id(), ItemStatus::Closed).await;
    let connection = item_connection(&granting.spec).unwrap();
    assert!(!h.target.state().held.contains(&connection));
    assert_eq!(
        h.target.keys("revoke").last(),
        Some(&format!("{}:revoke:1", granting.id()))
    );

    // Granted: the close is recorded, the access keeps its course.
    let granted = submit_grant(&h, entitlement("e-granted"), None, None).await;
    bob_approves(&h, &granted).await.unwrap();
    wait_status(&h, granted.id(), ItemStatus::Granted).await;
    let after = close(&granted).await.unwrap();
    assert_eq!(after[0].status, ItemStatus::Granted);
    assert!(after[0].closure.is_some());
    assert!(
        h.target
            .state()
            .held
            .contains(&item_connection(&granted.spec).unwrap())
    );
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_cancelled() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob"]).await;
    let first = submit_grant(&h, entitlement(STANDING_ENTITLEMENT), None, None).await;
    let again = submit_grant(&h, entitlement(STANDING_ENTITLEMENT), None, None).await;
    assert_eq!(again.status, ItemStatus::Cancelled);
    assert_eq!(
        again.cancellation.as_ref().unwrap().duplicate,
        Some(Duplicate::InProgress(first.id()))
    );

    bob_approves(&h, &first).await.unwrap();
    wait_status(&h, first.id(), ItemStatus::Granted).await;
    let assigned = submit_grant(&h, entitlement(STANDING_ENTITLEMENT), None, None).await;
    assert_eq!(
        assigned.cancellation.as_ref().unwrap().duplicate,
        Some(Duplicate::AlreadyAssigned)
    );
    // Another sunset is a change, not a duplicate.
    let changed = submit_grant(
        &h,
        entitlement(STANDING_ENTITLEMENT),
        None,
        Some(later(&h, 60)),
    )
    .await;
    assert_eq!(changed.status, ItemStatus::PendingApproval);
    assert_eq!(h.target.keys("grant").len(), 1, "granted once");
    // Once granted, it takes the access over: the earlier item ends without removing it.
    bob_approves(&h, &changed).await.unwrap();
    wait_status(&h, changed.id(), ItemStatus::Granted).await;
    let first = wait_status(&h, first.id(), ItemStatus::Superseded).await;
    assert!(first.removal.is_none(), "superseded, not removed");
    assert!(
        h.target
            .state()
            .held
            .contains(&item_connection(&first.spec).unwrap())
    );
    h.clock.advance(Duration::from_secs(3600));
    wait_status(&h, changed.id(), ItemStatus::Removed).await;
    assert!(
        !h.target
            .state()
            .held
            .contains(&item_connection(&first.spec).unwrap())
    );
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_of_a_jit_connection_deactivates_its_running_activation_first() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &[]).await;
    let grant = submit_grant(&h, entitlement(JIT_ENTITLEMENT), None, None).await;
    wait_status(&h, grant.id(), ItemStatus::Granted).await;
    let connection = item_connection(&grant.spec).unwrap();
    assert_eq!(h.connection(connection).kind(), ConnectionType::Jit);
    assert!(
        h.target.keys("grant").is_empty(),
        "a JIT grant provisions nothing"
    );

    let activation = h
        .engine
        .activate(&who("dave"), connection, Some(Minutes(60)), None, None)
        .await
        .unwrap();
    h.wait_for(connection, "ACTIVE", |c| c.state == ConnectionState::Active)
        .await;
    assert!(h.target.state().held.contains(&connection));

    let s = submission(
        RequestType::Revoke,
        "dave",
        entitlement(JIT_ENTITLEMENT),
        None,
        None,
    );
    let (_, items) = h
        .engine
        .submit_request(&caller(), Rights::Admin, &s)
        .await
        .unwrap();
    let revoke = &items[0];
    assert_eq!(revoke.status, ItemStatus::Removing);
    assert_eq!(
        revoke.removal.as_ref().unwrap().deactivate,
        Some(activation.id),
        "the running activation is deactivated first"
    );
    wait_status(&h, revoke.id(), ItemStatus::Removed).await;
    assert!(!h.target.state().held.contains(&connection));
    let grant = wait_status(&h, grant.id(), ItemStatus::Superseded).await;
    assert!(
        grant.ended_at.is_some(),
        "the revoked grant no longer counts as assigned"
    );
    assert_eq!(
        h.engine.connection(&caller().tenant, connection).unwrap(),
        None
    );
    let a = h
        .engine
        .activation(&caller().tenant, activation.id)
        .unwrap()
        .unwrap();
    assert!(a.ended_at.is_some());
    // The activation's own revoke ran before the item's.
    let revokes = h.target.keys("revoke");
    assert_eq!(
        revokes,
        vec![
            format!("{}:revoke:1", activation.id),
            format!("{}:revoke:1", revoke.id())
        ]
    );
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_approval_expires() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob"]).await;
    let item = submit_grant(&h, entitlement(STANDING_ENTITLEMENT), None, None).await;
    assert_eq!(item.approval.expires_at, Some(later(&h, 60)));
    h.clock.advance(Duration::from_secs(3600));
    let expired = wait_status(&h, item.id(), ItemStatus::ApprovalExpired).await;
    assert_eq!(expired.approval.state, WorkItemState::Expired);
    let e = bob_approves(&h, &item).await.unwrap_err();
    assert!(matches!(rejection(e), Rejection::AlreadyDecided { .. }));
    finish_with_notices(h, &[Notice::ApprovalRequested, Notice::ApprovalExpired]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_approve_answers_per_item_and_is_bounded() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob"]).await;
    let a = submit_grant(&h, entitlement("e-a"), None, None).await;
    let b = submit_grant(&h, entitlement("e-b"), None, None).await;
    h.engine
        .reject(&who("bob"), Rights::User, b.approval.id, None)
        .await
        .unwrap();
    let results = h
        .engine
        .bulk_approve(&who("bob"), Rights::User, &[a.approval.id, b.approval.id])
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().status, ItemStatus::Granting);
    assert!(matches!(
        rejection(results[1].clone().unwrap_err()),
        Rejection::AlreadyDecided { .. }
    ));
    let many = vec![a.approval.id; 51];
    let e = h
        .engine
        .bulk_approve(&who("bob"), Rights::User, &many)
        .await
        .unwrap_err();
    assert!(matches!(rejection(e), Rejection::Invalid(_)));
    wait_status(&h, a.id(), ItemStatus::Granted).await;
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rule_is_refused_and_stores_nothing() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &[]).await;
    let s = starting_in_the_past(entitlement(STANDING_ENTITLEMENT));
    let before = h.engine.last_sequence().unwrap();
    let e = h
        .engine
        .submit_request(&caller(), Rights::Admin, &s)
        .await
        .unwrap_err();
    assert!(matches!(rejection(e), Rejection::Invalid(_)));
    // A revoke of access nobody holds breaks the revoke rules.
    let s = submission(
        RequestType::Revoke,
        "dave",
        entitlement("nothing"),
        None,
        None,
    );
    assert!(
        h.engine
            .submit_request(&caller(), Rights::Admin, &s)
            .await
            .is_err()
    );
    assert_eq!(h.engine.last_sequence().unwrap(), before);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_every_stage_resumes() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob"]).await;

    // Pending approval, then approved after a restart.
    let pending = submit_grant(&h, entitlement("e-pending"), None, None).await;
    // Scheduled: approved, its sunrise ahead.
    let scheduled = submit_grant(&h, entitlement("e-scheduled"), Some(later(&h, 30)), None).await;
    bob_approves(&h, &scheduled).await.unwrap();
    // Granted with a sunset ahead.
    let granted = submit_grant(&h, entitlement("e-granted"), None, Some(later(&h, 40))).await;
    bob_approves(&h, &granted).await.unwrap();
    wait_status(&h, granted.id(), ItemStatus::Granted).await;
    // Removing, waiting to retry a failed revoke.
    let removing = submit_grant(&h, entitlement("e-removing"), None, Some(later(&h, 10))).await;
    bob_approves(&h, &removing).await.unwrap();
    wait_status(&h, removing.id(), ItemStatus::Granted).await;
    h.target.state().fail_revokes = 1;
    h.clock.advance(Duration::from_secs(10 * 60));
    wait_item(&h, removing.id(), "a revoke retry wait", |i| {
        i.removal.as_ref().is_some_and(|r| r.retry_at.is_some())
    })
    .await;
    // Granting: the grant call hangs (a crash mid-call).
    let granting = submit_grant(&h, entitlement("e-granting"), None, None).await;
    h.target.state().hang = true;
    bob_approves(&h, &granting).await.unwrap();
    let key = format!("{}:grant:1", granting.id());
    tokio::time::timeout(Duration::from_secs(30), async {
        while !h.target.keys("grant").contains(&key) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();

    // The hung call never answers; the restarted engine's calls do.
    h.target.state().hang = false;
    let h = h.restart().await;
    let report = h.engine.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);

    // The grant in flight runs again with the same key.
    wait_status(&h, granting.id(), ItemStatus::Granted).await;
    assert_eq!(
        h.target.keys("grant").iter().filter(|k| **k == key).count(),
        2,
        "re-run with the same idempotency key"
    );
    // The pending approval is still there to decide.
    bob_approves(&h, &pending).await.unwrap();
    wait_status(&h, pending.id(), ItemStatus::Granted).await;
    // Timers survive: the retry, the sunrise and the sunset fire after the restart.
    h.clock.advance(Duration::from_secs(60));
    wait_status(&h, removing.id(), ItemStatus::Removed).await;
    h.clock.advance(Duration::from_secs(20 * 60));
    wait_status(&h, scheduled.id(), ItemStatus::Granted).await;
    h.clock.advance(Duration::from_secs(10 * 60));
    wait_status(&h, granted.id(), ItemStatus::Removed).await;
    finish(h).await;
}

/// The pending approvals of `owner`, by approval id.
fn pending_of(h: &Harness, owner: &str) -> Vec<String> {
    let query = jitflow::query::Query::default();
    let page = h
        .engine
        .approvals(
            &who(owner),
            Rights::User,
            jitflow::request_lists::Approvals::Pending,
            None,
            &query,
        )
        .unwrap();
    page.items
        .iter()
        .map(|r| r.0.approval.id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_approval_moves_to_its_new_owner() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob", "carol"]).await;
    let item = submit_grant(&h, entitlement(STANDING_ENTITLEMENT), None, None).await;
    let approval = item.approval.id;
    let erin = IdentityId::parse("erin").unwrap();
    let forward = |by: &str, to: &str, rights: Rights| {
        let (by, to) = (who(by), IdentityId::parse(to).unwrap());
        let engine = h.engine.clone();
        async move {
            engine
                .forward_approval(&by, rights, approval, to, "over to you".into())
                .await
        }
    };
    // Refusals change nothing.
    for (by, to, rights, expected) in [
        ("dave", "erin", Rights::User, "NotApprover"),
        ("bob", "bob", Rights::User, "ForwardToApprover"),
        ("bob", "carol", Rights::User, "ForwardToApprover"),
        ("bob", "dave", Rights::User, "SelfReview"),
        ("bob", "alice", Rights::User, "SelfReview"),
    ] {
        let e = rejection(forward(by, to, rights).await.unwrap_err());
        let name = format!("{e:?}");
        assert!(name.starts_with(expected), "{by} -> {to}: {name}");
    }
    let e = h
        .engine
        .forward_approval(&who("bob"), Rights::User, approval, erin.clone(), "".into())
        .await
        .unwrap_err();
    assert!(matches!(rejection(e), Rejection::Invalid(_)));
    let unchanged = h.engine.request_item(&caller().tenant, item.id()).unwrap();
    assert_eq!(unchanged.as_ref(), Some(&item), "a refusal changes nothing");
    assert_eq!(pending_of(&h, "bob"), vec![approval.to_string()]);

    let forwarded = forward("bob", "erin", Rights::User).await.unwrap();
    assert_eq!(forwarded.status, ItemStatus::PendingApproval);
    assert_eq!(
        forwarded.approval.approvers,
        vec![IdentityId::parse("carol").unwrap(), erin.clone()]
    );
    let entry = &forwarded.forwards[0];
    assert_eq!(entry.from, vec![IdentityId::parse("bob").unwrap()]);
    assert_eq!((&entry.to, entry.comment.as_str()), (&erin, "over to you"));
    assert_eq!(entry.by, Actor::Identity(IdentityId::parse("bob").unwrap()));
    assert_eq!(
        forwarded.approval.expires_at, item.approval.expires_at,
        "the expiry does not move"
    );
    assert!(pending_of(&h, "bob").is_empty());
    assert_eq!(pending_of(&h, "erin"), vec![approval.to_string()]);

    // The old owner may no longer decide; the new one may.
    let e = bob_approves(&h, &item).await.unwrap_err();
    assert!(matches!(rejection(e), Rejection::NotApprover { .. }));
    let e = forward("bob", "frank", Rights::User).await.unwrap_err();
    assert!(matches!(rejection(e), Rejection::NotApprover { .. }));
    let approved = h
        .engine
        .approve(&who("erin"), Rights::User, approval, None)
        .await
        .unwrap();
    assert_eq!(approved.approval.decided_by, Some(Actor::Identity(erin)));
    assert_eq!(approved.forwards, forwarded.forwards, "the history stays");
    let e = forward("carol", "frank", Rights::User).await.unwrap_err();
    assert!(matches!(rejection(e), Rejection::AlreadyDecided { .. }));
    wait_status(&h, item.id(), ItemStatus::Granted).await;
    let h = finish(h).await;
    // The new owner is told of the forward, with the approvers as they stand after it.
    assert_eq!(
        h.inbox.request_notices(),
        [
            Notice::ApprovalRequested,
            Notice::Forwarded,
            Notice::Approved,
            Notice::Granted,
        ]
    );
    assert_eq!(
        h.inbox.1.lock().unwrap()[1].approvers,
        [
            IdentityId::parse("carol").unwrap(),
            IdentityId::parse("erin").unwrap()
        ],
        "the forward's notice names the approvers as they stand after it (bob's place is erin's)"
    );
    // The history survives a restart (it is in the item record).
    let h = h.restart().await;
    let stored = h.engine.request_item(&caller().tenant, item.id()).unwrap();
    assert_eq!(stored.unwrap().forwards, forwarded.forwards);
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_forwards_the_whole_approval_and_forwards_are_bounded() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob", "carol"]).await;
    let item = submit_grant(&h, entitlement(STANDING_ENTITLEMENT), None, None).await;
    let approval = item.approval.id;
    let root = who("root");
    let forward = |to: String| {
        h.engine.forward_approval(
            &root,
            Rights::Admin,
            approval,
            IdentityId::parse(&to).unwrap(),
            format!("to {to}"),
        )
    };
    let first = forward("owner0".into()).await.unwrap();
    assert_eq!(
        first.approval.approvers,
        vec![IdentityId::parse("owner0").unwrap()]
    );
    assert_eq!(
        first.forwards[0].from,
        vec![
            IdentityId::parse("bob").unwrap(),
            IdentityId::parse("carol").unwrap()
        ]
    );
    for n in 1..jitflow_core::request::item::MAX_FORWARDS {
        forward(format!("owner{n}")).await.unwrap();
    }
    let e = forward("one-more".into()).await.unwrap_err();
    assert!(matches!(
        rejection(e),
        Rejection::TooManyForwards { limit, .. } if limit == jitflow_core::request::item::MAX_FORWARDS
    ));
    finish(h).await;
}

/// An entitlement granted by request for an identity whose assignment (entitlement, identity,
/// account) an embedder's own connection already holds: the item's connection cannot be
/// registered (one connection per assignment). The grant fails at once with a message naming
/// the holder, and the item ends failed, instead of retrying a registration that can never
/// succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_whose_assignment_another_connection_holds_fails_clearly() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &[]).await;
    let holder = common::conn(900);
    let mut own = common::spec(holder);
    own.identity = IdentityId::parse("dave").unwrap();
    // The account the request's connection gets when none is selected: the identity's id.
    own.account = jitflow_core::id::AccountId::parse("dave").unwrap();
    own.entitlement = EntitlementId::parse(STANDING_ENTITLEMENT).unwrap();
    own.kind = ConnectionType::Standing;
    h.engine.register(&caller(), own).await.unwrap();

    let item = submit_grant(&h, entitlement(STANDING_ENTITLEMENT), None, None).await;
    let ended = wait_item(&h, item.id(), "the grant to end", |i| {
        i.status.is_terminal()
    })
    .await;
    assert_eq!(ended.status, ItemStatus::Failed, "{ended:?}");
    let error = ended
        .grant
        .as_ref()
        .and_then(|g| g.last_error.clone())
        .unwrap_or_default();
    assert!(error.contains(&holder.to_string()), "{error}");
    assert_eq!(
        h.target.keys("grant"),
        Vec::<String>::new(),
        "nothing was granted twice"
    );
    finish(h).await;
}

/// Every bulk call is timed by its kind once it answers per item (whatever each item's
/// result); a call refused as a whole (empty, over its bound, a broken rule) is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_calls_are_timed_by_kind_unless_refused_whole() {
    use jitflow::bulk::{Kind, TypeUpdate};
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob"]).await;
    let counted = |h: &Harness| -> Vec<(&str, u64)> {
        let m = h.engine.metrics();
        Kind::ALL
            .iter()
            .zip(&m.bulk_ack)
            .map(|(k, histogram)| (k.as_str(), histogram.count()))
            .collect()
    };
    let counts = |import, change_type, submit, approve, cancel, close| {
        vec![
            ("import", import),
            ("change_type", change_type),
            ("submit", submit),
            ("approve", approve),
            ("cancel", cancel),
            ("close", close),
        ]
    };
    assert_eq!(counted(&h), counts(0, 0, 0, 0, 0, 0));

    let imported = h
        .engine
        .import(&caller(), vec![common::spec(common::conn(1))])
        .await
        .unwrap();
    assert!(imported[0].is_ok());
    assert!(h.engine.import(&caller(), Vec::new()).await.is_err());
    let update = |kind: &str| TypeUpdate {
        connection_id: common::conn(1).to_string(),
        kind: kind.into(),
    };
    let changed = h
        .engine
        .bulk_change_type(&caller(), &[update("STANDING"), update("XYZ")])
        .await
        .unwrap();
    assert!(changed[0].is_ok() && changed[1].is_err());
    assert!(h.engine.bulk_change_type(&caller(), &[]).await.is_err());
    assert_eq!(counted(&h), counts(1, 1, 0, 0, 0, 0));

    let [a, b, c] = [
        submit_grant(&h, entitlement("e-a"), None, None).await,
        submit_grant(&h, entitlement("e-b"), None, None).await,
        submit_grant(&h, entitlement("e-c"), None, None).await,
    ];
    let broken = starting_in_the_past(entitlement("e-d"));
    assert!(
        h.engine
            .submit_request(&caller(), Rights::Admin, &broken)
            .await
            .is_err()
    );
    assert_eq!(counted(&h), counts(1, 1, 3, 0, 0, 0));

    let approved = h
        .engine
        .bulk_approve(&who("bob"), Rights::User, &[a.approval.id])
        .await
        .unwrap();
    assert!(approved[0].is_ok());
    let many = vec![a.approval.id; 51];
    assert!(
        h.engine
            .bulk_approve(&who("bob"), Rights::User, &many)
            .await
            .is_err()
    );
    let cancelled = h
        .engine
        .bulk_cancel(&caller(), Rights::User, &[b.spec.request], "bulk".into())
        .await
        .unwrap();
    assert!(cancelled[0].is_ok());
    assert!(
        h.engine
            .bulk_cancel(&caller(), Rights::User, &[], "none".into())
            .await
            .is_err()
    );
    // Close: one result per request, an item refused on its own (closed twice) included.
    let closed = h
        .engine
        .bulk_close(
            &caller(),
            Rights::Admin,
            &[c.spec.request, c.spec.request],
            ExecutionStatus::Completed,
            CompletionStatus::Success,
            None,
        )
        .await
        .unwrap();
    assert_eq!(closed[0].as_ref().unwrap()[0].status, ItemStatus::Closed);
    assert!(closed[1].is_err(), "closed twice");
    let too_many = vec![c.spec.request; 501];
    assert!(
        h.engine
            .bulk_close(
                &caller(),
                Rights::Admin,
                &too_many,
                ExecutionStatus::Completed,
                CompletionStatus::Success,
                None,
            )
            .await
            .is_err()
    );
    assert_eq!(counted(&h), counts(1, 1, 3, 1, 1, 1));
    // The scrape shows the same, under `jitflow_bulk_ack_duration_seconds{kind}`.
    let text = h.engine.scrape().unwrap();
    for (kind, n) in counted(&h) {
        let line = format!("jitflow_bulk_ack_duration_seconds_count{{kind=\"{kind}\"}} {n}");
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    wait_status(&h, a.id(), ItemStatus::Granted).await;
    finish(h).await;
}
