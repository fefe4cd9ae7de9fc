//! The engine, unchanged, over PostgreSQL: activate, extend, the expiry by timer on a manual
//! clock, deactivate, a restart on a new backend (the same node, taking its lease back), the
//! activation's history, and a clean `verify`.

#[path = "../../jitflow/tests/common.rs"]
mod common;

use std::time::Duration;

use common::{Harness, START, Storage, Target, caller, conn, policy};
use jitflow::clock::ManualClock;
use jitflow_core::activation::ActivationStatus;
use jitflow_core::connection::ConnectionState;
use jitflow_core::time::{Minutes, Timestamp};
use jitflow_store::codec::{Payload, Stream};
use jitflow_store_pg::testing::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_runs_its_lifecycles_over_postgresql() {
    let Some(store) = tokio::task::spawn_blocking(|| Cluster::shared().map(Storage::database))
        .await
        .unwrap()
    else {
        return;
    };
    let clock = ManualClock::new(Timestamp::from_millis(START).unwrap());
    let h = Harness::open(&store, clock, Target::default()).await;
    h.engine.put_policy(&caller(), policy()).await.unwrap();

    // Activate for 30 minutes and extend by the default 15.
    let expiring = conn(1);
    h.engine
        .register(&caller(), common::spec(expiring))
        .await
        .unwrap();
    let a = h
        .engine
        .activate(&caller(), expiring, Some(Minutes(30)), None, None)
        .await
        .unwrap();
    let c = h
        .wait_for(expiring, "ACTIVE", |c| c.state == ConnectionState::Active)
        .await;
    let expiry = c.jit.expiration.unwrap();
    let extended = h
        .engine
        .extend(&caller(), expiring, None, None, None)
        .await
        .unwrap();
    assert_eq!(extended.expires_at, Some(expiry.plus_minutes(Minutes(15))));
    assert!(h.target.state().held.contains(&expiring));

    // Another one deactivated by its user.
    let deactivated = h.activated(conn(2), None).await;
    h.engine
        .deactivate(&caller(), deactivated, None, None)
        .await
        .unwrap();
    let c = h
        .wait_for(deactivated, "AVAILABLE", |c| {
            c.state == ConnectionState::Available
        })
        .await;
    assert_eq!(c.activation.unwrap().status, ActivationStatus::Revoked);
    assert!(!h.target.state().held.contains(&deactivated));

    // A restart on a new backend (same node: it takes its lease back) keeps everything, and
    // the expiry fires by the timer it reads back from PostgreSQL.
    let h = h.restart().await;
    assert!(h.target.state().held.contains(&expiring));
    h.clock.advance(Duration::from_secs(45 * 60));
    let c = h
        .wait_for(expiring, "EXPIRED", |c| c.state == ConnectionState::Expired)
        .await;
    let done = c.activation.unwrap();
    assert_eq!(done.status, ActivationStatus::Completed);
    assert!(
        c.jit.deprovision.unwrap() >= done.expires_at.unwrap(),
        "never revoked early"
    );
    assert!(!h.target.state().held.contains(&expiring));
    assert_eq!(h.target.keys("revoke").len(), 2);

    // The activation's history, as committed.
    let history = h
        .engine
        .history(&caller().tenant, Stream::Activation(a.id), 0, 100)
        .unwrap();
    let changes: Vec<&str> = history
        .iter()
        .map(|e| match &e.envelope.payload {
            Payload::Connection(event) => event.change.name(),
            other => panic!("an activation's stream holds connection events: {other:?}"),
        })
        .collect();
    // The clock jumped past the warning and the expiry at once: the late warning expires it.
    assert_eq!(
        changes,
        [
            "activation_requested",
            "validation_passed",
            "provisioned",
            "extended",
            "expired",
            "revoked"
        ]
    );
    h.verify_and_shut_down().await;
}
