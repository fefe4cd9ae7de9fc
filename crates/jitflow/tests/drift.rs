//! Drift (issue 16): `Engine::reconcile` asks the provisioner what the target holds and acts
//! through the writer, for one connection or for each in the background pass. A revoke that
//! reported success but did not take, and a grant made by hand, are found and revoked with a
//! durable `DriftFound` event and a notice; access missing while ACTIVE is recorded, then
//! reported only, granted again or ended by the tenant policy; a running activation is never
//! revoked; the pass resumes from its durable cursor after a stop in its middle.

mod common;

use common::*;
use jitflow::{DriftResponse, Inspection, Reconciled};
use jitflow_core::connection::ConnectionState;
use jitflow_core::lifecycle::{Actor, Change, Drift, Notice};
use jitflow_core::policy::MissingAccessAction;
use jitflow_core::time::Minutes;
use jitflow_store::codec::{Payload, Stream};

/// Stops the engine (delivering what is committed) and checks the store against its log: a
/// drift's events replay to the same state.
async fn finish(h: Harness) -> Harness {
    h.engine.shutdown().await;
    let report = h.engine.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    h
}

/// The drifts committed to the connection's stream, in order.
fn drifts(h: &Harness, id: jitflow_core::id::ConnectionId) -> Vec<Drift> {
    h.engine
        .snapshot()
        .unwrap()
        .stream(&caller().tenant, Stream::Connection(id), 0, 1000)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.envelope.payload {
            Payload::Connection(event) => match event.change {
                Change::DriftFound { drift } => Some(drift),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_that_did_not_take_is_found_and_revoked_again() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = h.activated(conn(1), Some(Minutes(30))).await;
    h.target.state().drop_revokes = true;
    h.engine
        .deactivate(&caller(), id, None, None)
        .await
        .unwrap();
    h.wait_for(id, "AVAILABLE", |c| c.state == ConnectionState::Available)
        .await;
    assert!(
        h.target.state().held.contains(&id),
        "the revoke did not take"
    );
    h.target.state().drop_revokes = false;
    let found = h.engine.reconcile(&caller(), id).await.unwrap();
    assert_eq!(
        found,
        Reconciled {
            inspection: Inspection::Held,
            drift: Some(Drift::UnexpectedAccess)
        }
    );
    h.wait_for(id, "revoked again", |c| {
        c.state == ConnectionState::Available && c.standing_revoke.is_none()
    })
    .await;
    assert!(!h.target.state().held.contains(&id));
    assert_eq!(drifts(&h, id), [Drift::UnexpectedAccess]);
    // The target agrees now: nothing more is recorded.
    assert_eq!(
        h.engine.reconcile(&caller(), id).await.unwrap(),
        Reconciled {
            inspection: Inspection::NotHeld,
            drift: None
        }
    );
    assert_eq!(drifts(&h, id).len(), 1);
    let h = finish(h).await;
    assert!(h.inbox.notices().contains(&Notice::DriftFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_made_by_hand_is_revoked_and_missing_access_is_reported_only() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let by_hand = conn(2);
    h.engine.register(&caller(), spec(by_hand)).await.unwrap();
    h.target.state().held.insert(by_hand);
    assert_eq!(
        h.engine.reconcile(&caller(), by_hand).await.unwrap().drift,
        Some(Drift::UnexpectedAccess)
    );
    h.wait_for(by_hand, "revoked", |c| {
        c.state == ConnectionState::Available
    })
    .await;
    assert!(!h.target.state().held.contains(&by_hand));

    // Active in the engine, gone on the target: recorded, the activation left to its expiry.
    let lost = h.activated(conn(3), Some(Minutes(30))).await;
    h.target.state().held.remove(&lost);
    assert_eq!(
        h.engine.reconcile(&caller(), lost).await.unwrap().drift,
        Some(Drift::MissingAccess)
    );
    let c = h.connection(lost);
    assert_eq!(c.state, ConnectionState::Active);
    assert_eq!(drifts(&h, lost), [Drift::MissingAccess]);
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_activation_is_never_revoked_and_nothing_is_asked_while_access_moves() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = h.activated(conn(4), Some(Minutes(30))).await;
    assert_eq!(
        h.engine.reconcile(&caller(), id).await.unwrap(),
        Reconciled {
            inspection: Inspection::Held,
            drift: None
        }
    );
    assert_eq!(h.connection(id).state, ConnectionState::Active);
    assert!(h.target.state().held.contains(&id));
    // While the revoke hangs the access is moving: the target is not even asked.
    h.target.state().hang = true;
    h.engine
        .deactivate(&caller(), id, None, None)
        .await
        .unwrap();
    let asked = h.target.keys("inspect").len();
    assert_eq!(
        h.engine.reconcile(&caller(), id).await.unwrap(),
        Reconciled {
            inspection: Inspection::NotAsked,
            drift: None
        }
    );
    assert_eq!(h.target.keys("inspect").len(), asked);
    assert!(drifts(&h, id).is_empty());
    h.engine.shutdown().await;
}

/// Waits until `done` holds, polling: the pass's progress is in its metrics and cursors, not
/// in events. The timeout only guards against a hang.
async fn until(what: &str, done: impl Fn() -> bool) {
    let wait = async {
        while !done() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(60), wait)
        .await
        .is_err()
    {
        panic!("timed out waiting for {what}");
    }
}

/// The passes this engine completed.
fn passes(h: &Harness) -> u64 {
    h.engine
        .metrics()
        .reconcile_passes
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// The pass's saved position: (pass number, connections done).
fn cursor(h: &Harness) -> (u64, u64) {
    let c = h.engine.snapshot().unwrap().cursor("reconcile").unwrap();
    (c >> 32, c & 0xffff_ffff)
}

/// How many times each connection was inspected (by the inspection keys the target saw).
fn inspections(h: &Harness) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for key in h.target.keys("inspect") {
        let connection = key.split(':').next().unwrap().to_owned();
        *counts.entry(connection).or_insert(0) += 1;
    }
    counts
}

/// The background pass (issue 16): with `reconcile_rate` set it walks every connection and
/// finds a revoke that did not take and a grant made by hand, revokes both through the writer
/// with a durable `DriftFound` event each (actor: the system), leaves a running activation
/// and an agreeing connection untouched, then waits `reconcile_interval` for the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pass_revokes_what_no_activation_explains_and_never_a_running_activation() {
    let Some(store) = Storage::new() else {
        return;
    };
    let mut h = Harness::new(&store).await;
    // A revoke that reported success but did not take.
    let kept = h.activated(conn(10), Some(Minutes(30))).await;
    h.target.state().drop_revokes = true;
    h.engine
        .deactivate(&caller(), kept, None, None)
        .await
        .unwrap();
    h.wait_for(kept, "AVAILABLE", |c| c.state == ConnectionState::Available)
        .await;
    h.target.state().drop_revokes = false;
    // A grant made by hand on the target.
    let by_hand = conn(11);
    h.engine.register(&caller(), spec(by_hand)).await.unwrap();
    h.target.state().held.insert(by_hand);
    // A running activation, held (for two hours: it is still running at the second pass, an
    // hour on, rather than expiring with its revoke in flight at that pass); a connection at
    // rest the target agrees with.
    let running = h.activated(conn(12), Some(Minutes(120))).await;
    let quiet = conn(13);
    h.engine.register(&caller(), spec(quiet)).await.unwrap();
    let before = |h: &Harness, id| h.connection(id).version;
    let versions = [kept, by_hand, running, quiet].map(|id| before(&h, id));
    assert!(h.target.keys("inspect").is_empty(), "the pass is off");

    h.config.reconcile_rate = 1000;
    h.config.reconcile_interval = std::time::Duration::from_secs(3600);
    let h = h.restart().await;
    until("the first pass", || passes(&h) == 1).await;
    for (id, version) in [(kept, versions[0]), (by_hand, versions[1])] {
        // DriftFound, then StandingRevoked.
        h.wait_for(id, "revoked", |c| {
            c.state == ConnectionState::Available && c.version == version + 2
        })
        .await;
    }
    {
        let target = h.target.state();
        assert!(!target.held.contains(&kept) && !target.held.contains(&by_hand));
        assert!(
            target.held.contains(&running),
            "a running activation keeps its access"
        );
    }
    assert_eq!(h.connection(running).state, ConnectionState::Active);
    assert_eq!(h.connection(running).version, versions[2]);
    assert_eq!(h.connection(quiet).version, versions[3]);
    assert_eq!(inspections(&h).len(), 4, "every connection once");
    assert!(inspections(&h).values().all(|n| *n == 1));
    let page = h
        .engine
        .drift_findings(&caller().tenant, 0, 10_000)
        .unwrap();
    let mut found: Vec<_> = page
        .findings
        .iter()
        .map(|f| (f.connection, f.drift, f.response, f.actor.clone()))
        .collect();
    found.sort_by_key(|f| f.0);
    assert_eq!(
        found,
        [
            (
                kept,
                Drift::UnexpectedAccess,
                DriftResponse::Revoke,
                Actor::System
            ),
            (
                by_hand,
                Drift::UnexpectedAccess,
                DriftResponse::Revoke,
                Actor::System
            ),
        ]
    );
    let scrape = h.engine.scrape().unwrap();
    for line in [
        "jitflow_drift_found_total{kind=\"unexpected_access\"} 2",
        "jitflow_drift_found_total{kind=\"missing_access\"} 0",
        "jitflow_inspections_total{answer=\"held\"} 3",
        "jitflow_inspections_total{answer=\"not_held\"} 1",
        "jitflow_reconcile_passes_total 1",
        "jitflow_reconcile_last_pass_connections 4",
        "jitflow_reconcile_pass_running 0",
    ] {
        assert!(scrape.lines().any(|l| l == line), "{line} in\n{scrape}");
    }
    assert_eq!(
        cursor(&h),
        (1, 0),
        "the next pass starts from the beginning"
    );

    // The next pass waits for the interval on the engine's clock.
    h.clock.advance(std::time::Duration::from_secs(3600));
    until("the second pass", || passes(&h) == 2).await;
    assert!(inspections(&h).values().all(|n| *n == 2));
    assert_eq!(
        h.engine
            .drift_findings(&caller().tenant, 0, 10_000)
            .unwrap()
            .findings
            .len(),
        2,
        "the target agrees now"
    );
    let h = finish(h).await;
    let notices = h.inbox.notices();
    assert_eq!(
        notices.iter().filter(|n| **n == Notice::DriftFound).count(),
        2
    );
}

/// Access missing while ACTIVE, answered by the tenant policy's `on_missing_access`:
/// `GRANT_AGAIN` grants it again with the expiry kept; `END_ACTIVATION` revokes and ends the
/// activation. The findings say what followed each drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_access_is_granted_again_or_the_activation_ended_as_the_policy_says() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let mut p = h.engine.policy(&caller().tenant).unwrap().unwrap();
    p.on_missing_access = MissingAccessAction::GrantAgain;
    h.engine.put_policy(&caller(), p.clone()).await.unwrap();
    let id = h.activated(conn(20), Some(Minutes(30))).await;
    let first = h.connection(id);
    let activation = first.activation.as_ref().unwrap().id;
    h.target.state().held.remove(&id);
    h.clock.advance(std::time::Duration::from_secs(60));
    assert_eq!(
        h.engine.reconcile(&caller(), id).await.unwrap(),
        Reconciled {
            inspection: Inspection::NotHeld,
            drift: Some(Drift::MissingAccess)
        }
    );
    let again = h
        .wait_for(id, "granted again", |c| {
            c.state == ConnectionState::Active && c.version > first.version + 1
        })
        .await;
    assert_eq!(
        again.jit.expiration, first.jit.expiration,
        "the expiry is kept"
    );
    assert_eq!(again.activation.as_ref().unwrap().id, activation);
    assert!(h.target.state().held.contains(&id));
    assert!(
        h.target
            .keys("grant")
            .contains(&format!("{activation}:grant:2")),
        "a new idempotency key: {:?}",
        h.target.keys("grant")
    );

    p.on_missing_access = MissingAccessAction::EndActivation;
    h.engine.put_policy(&caller(), p).await.unwrap();
    h.target.state().held.remove(&id);
    assert_eq!(
        h.engine.reconcile(&caller(), id).await.unwrap().drift,
        Some(Drift::MissingAccess)
    );
    let ended = h
        .wait_for(id, "ended", |c| c.state == ConnectionState::Available)
        .await;
    assert_eq!(
        ended.activation.as_ref().unwrap().status,
        jitflow_core::activation::ActivationStatus::Revoked
    );
    let responses: Vec<_> = h
        .engine
        .drift_findings(&caller().tenant, 0, 10_000)
        .unwrap()
        .findings
        .into_iter()
        .map(|f| (f.drift, f.response, f.activation, f.actor))
        .collect();
    assert_eq!(
        responses,
        [
            (
                Drift::MissingAccess,
                DriftResponse::GrantAgain,
                Some(activation),
                caller().actor
            ),
            (
                Drift::MissingAccess,
                DriftResponse::EndActivation,
                Some(activation),
                caller().actor
            ),
        ]
    );
    // The audit export shows the action's changes, which the policy's serde form leaves out.
    let lines = h.policy_lines();
    assert!(!lines[0].contains("policyOnMissingAccess"), "{lines:?}");
    assert!(
        lines[1].contains(r#""policyOnMissingAccess":["REPORT","GRANT_AGAIN"]"#),
        "{lines:?}"
    );
    assert!(
        lines[2].contains(r#""policyOnMissingAccess":["GRANT_AGAIN","END_ACTIVATION"]"#),
        "{lines:?}"
    );
    // The policy's action survives a restart (the store's policy section).
    let h = h.restart().await;
    assert_eq!(
        h.engine
            .policy(&caller().tenant)
            .unwrap()
            .unwrap()
            .on_missing_access,
        MissingAccessAction::EndActivation
    );
    finish(h).await;
}

/// A pass stopped in its middle (the stop aborts it as a crash would: it saves nothing on its
/// way out) resumes from its durable cursor: the connections before the saved position are not
/// inspected again, every connection is inspected, and the resumed pass completes as pass 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_stopped_in_its_middle_resumes_from_its_cursor() {
    const N: u128 = 450;
    let Some(store) = Storage::new() else {
        return;
    };
    let mut h = Harness::new(&store).await;
    let specs: Vec<_> = (0..N).map(|n| spec(conn(100 + n))).collect();
    for result in h.engine.import(&caller(), specs).await.unwrap() {
        result.unwrap();
    }
    h.config.reconcile_rate = 150;
    h.config.reconcile_in_flight = 4;
    let h = h.restart().await;
    until("a saved position", || cursor(&h).1 >= 100).await;
    let (engine, parts) = h.stop().await;
    let (pass, saved) = {
        let c = engine.snapshot().unwrap().cursor("reconcile").unwrap();
        (c >> 32, c & 0xffff_ffff)
    };
    drop(engine);
    let asked = parts.target.keys("inspect").len() as u64;
    assert_eq!(pass, 0);
    assert!(saved >= 100 && saved < N as u64, "saved {saved}");
    assert!(
        asked >= saved && asked < N as u64,
        "stopped in the middle: {asked} asked"
    );

    let h = parts.open().await;
    until("the resumed pass", || passes(&h) == 1).await;
    assert_eq!(cursor(&h), (1, 0));
    let counts = inspections(&h);
    for n in 0..N {
        let id = conn(100 + n).to_string();
        let times = counts.get(&id).copied().unwrap_or(0);
        if (n as u64) < saved {
            assert_eq!(times, 1, "connection {n} before the saved position");
        } else {
            assert!(times >= 1, "connection {n} never inspected");
        }
    }
    let total: usize = counts.values().sum();
    assert!(
        total as u64 <= N as u64 + (asked - saved),
        "only what followed the save is inspected again: {total}"
    );
    assert_eq!(
        h.engine
            .metrics()
            .reconcile_last_connections
            .load(std::sync::atomic::Ordering::Relaxed),
        N as u64,
        "the resumed pass counts the whole pass"
    );
    finish(h).await;
}
