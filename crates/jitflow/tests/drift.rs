//! Drift (issue 16, its first part): `Engine::reconcile` asks the provisioner what the target
//! holds and acts through the writer. A revoke that reported success but did not take, and a
//! grant made by hand, are found and revoked with a durable `DriftFound` event and a notice;
//! access missing while ACTIVE is recorded only; a running activation is never revoked.

mod common;

use common::*;
use jitflow_core::connection::ConnectionState;
use jitflow_core::lifecycle::{Change, Drift, Notice};
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
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(&dir).await;
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
    assert_eq!(found, Some(Drift::UnexpectedAccess));
    h.wait_for(id, "revoked again", |c| {
        c.state == ConnectionState::Available && c.standing_revoke.is_none()
    })
    .await;
    assert!(!h.target.state().held.contains(&id));
    assert_eq!(drifts(&h, id), [Drift::UnexpectedAccess]);
    // The target agrees now: nothing more is recorded.
    assert_eq!(h.engine.reconcile(&caller(), id).await.unwrap(), None);
    assert_eq!(drifts(&h, id).len(), 1);
    let h = finish(h).await;
    assert!(h.inbox.notices().contains(&Notice::DriftFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_made_by_hand_is_revoked_and_missing_access_is_reported_only() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(&dir).await;
    let by_hand = conn(2);
    h.engine.register(&caller(), spec(by_hand)).await.unwrap();
    h.target.state().held.insert(by_hand);
    assert_eq!(
        h.engine.reconcile(&caller(), by_hand).await.unwrap(),
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
        h.engine.reconcile(&caller(), lost).await.unwrap(),
        Some(Drift::MissingAccess)
    );
    let c = h.connection(lost);
    assert_eq!(c.state, ConnectionState::Active);
    assert_eq!(drifts(&h, lost), [Drift::MissingAccess]);
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_activation_is_never_revoked_and_nothing_is_asked_while_access_moves() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(&dir).await;
    let id = h.activated(conn(4), Some(Minutes(30))).await;
    assert_eq!(h.engine.reconcile(&caller(), id).await.unwrap(), None);
    assert_eq!(h.connection(id).state, ConnectionState::Active);
    assert!(h.target.state().held.contains(&id));
    // While the revoke hangs the access is moving: the target is not even asked.
    h.target.state().hang = true;
    h.engine
        .deactivate(&caller(), id, None, None)
        .await
        .unwrap();
    let asked = h.target.keys("inspect").len();
    assert_eq!(h.engine.reconcile(&caller(), id).await.unwrap(), None);
    assert_eq!(h.target.keys("inspect").len(), asked);
    assert!(drifts(&h, id).is_empty());
    h.engine.shutdown().await;
}
