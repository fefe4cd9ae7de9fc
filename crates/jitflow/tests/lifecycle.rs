//! End-to-end lifecycles through the engine, with a manual clock: nothing moves until the test
//! moves the clock, and the test waits for committed events, never for wall-clock time.

mod common;

use std::time::Duration;

use common::{Harness, Storage, caller, conn, spec};
use jitflow::Error;
use jitflow_core::activation::ActivationStatus;
use jitflow_core::connection::ConnectionState;
use jitflow_core::lifecycle::{Notice, Rejection};
use jitflow_core::time::Minutes;

/// Waits until the target has seen `n` calls of `kind` (the effect runs after its intent commits).
async fn wait_calls(h: &Harness, kind: &str, n: usize) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while h.target.keys(kind).len() < n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the target never saw {n} {kind} calls"));
}

fn active(c: &jitflow_core::connection::Connection) -> bool {
    c.state == ConnectionState::Active
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activate_extend_warn_expire_revoke() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = conn(1);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    let a = h
        .engine
        .activate(&caller(), id, Some(Minutes(30)), None, None)
        .await
        .unwrap();
    assert_eq!(
        a.status,
        ActivationStatus::Creating,
        "answered once durable, before provisioning"
    );
    let c = h.wait_for(id, "ACTIVE", active).await;
    let expiry = c.jit.expiration.unwrap();
    assert_eq!(expiry, c.jit.provision.unwrap().plus_minutes(Minutes(30)));
    assert!(h.target.state().held.contains(&id));

    let a = h
        .engine
        .extend(&caller(), id, None, None, None)
        .await
        .unwrap();
    assert_eq!(a.expires_at, Some(expiry.plus_minutes(Minutes(15))));

    // Just before the warning nothing happens; at it, the warning is sent.
    h.clock.advance(Duration::from_secs(40 * 60 - 1));
    h.clock.advance(Duration::from_secs(1));
    h.wait_for(id, "warning sent", |c| {
        c.activation.as_ref().unwrap().warn_at.is_none()
    })
    .await;
    assert!(h.target.state().held.contains(&id));

    h.clock.advance(Duration::from_secs(5 * 60));
    let c = h
        .wait_for(id, "EXPIRED", |c| c.state == ConnectionState::Expired)
        .await;
    let a = c.activation.unwrap();
    assert_eq!(a.status, ActivationStatus::Completed);
    assert!(
        c.jit.deprovision.unwrap() >= a.expires_at.unwrap(),
        "never revoked early"
    );
    assert!(!h.target.state().held.contains(&id));
    let grants = h.target.keys("grant");
    let revokes = h.target.keys("revoke");
    assert_eq!(grants, vec![format!("{}:grant:1", a.id)]);
    assert_eq!(revokes, vec![format!("{}:revoke:1", a.id)]);
    h.engine.shutdown().await;
    let notices = h.inbox.notices();
    for expected in [
        Notice::Started,
        Notice::Provisioned,
        Notice::Extended,
        Notice::ExpiringSoon,
        Notice::Expired,
    ] {
        assert!(
            notices.contains(&expected),
            "{expected:?} missing from {notices:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivate_revokes_and_returns_to_available() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = h.activated(conn(2), None).await;
    let a = h
        .engine
        .deactivate(&caller(), id, None, None)
        .await
        .unwrap();
    assert_eq!(a.status, ActivationStatus::Deprovisioning);
    let c = h
        .wait_for(id, "AVAILABLE", |c| c.state == ConnectionState::Available)
        .await;
    assert_eq!(c.activation.unwrap().status, ActivationStatus::Revoked);
    assert!(!h.target.state().held.contains(&id));
    // No running activation any more: the contract's 400.
    let e = h
        .engine
        .deactivate(&caller(), id, None, None)
        .await
        .unwrap_err();
    assert_eq!(e, Error::Rejected(Rejection::NoRunningActivation(id)));
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_refusal_ends_invalid() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    *h.gate.0.lock().unwrap() = Some("no change ticket".into());
    let id = conn(3);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    h.engine
        .activate(&caller(), id, None, None, None)
        .await
        .unwrap();
    let c = h
        .wait_for(id, "INVALID", |c| {
            c.activation
                .as_ref()
                .is_some_and(|a| a.status == ActivationStatus::Invalid)
        })
        .await;
    assert_eq!(c.state, ConnectionState::Available);
    assert!(h.target.keys("grant").is_empty(), "nothing granted");
    h.engine.shutdown().await;
    assert!(h.inbox.notices().contains(&Notice::Refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_failures_retry_then_give_up_and_fail_closed() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    h.target.state().fail_grants = 10;
    let id = conn(4);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    h.engine
        .activate(&caller(), id, None, None, None)
        .await
        .unwrap();
    for attempt in 1..3u32 {
        h.wait_for(id, "retry armed", |c| {
            c.activation
                .as_ref()
                .is_some_and(|a| a.attempt == attempt && a.retry_at.is_some())
        })
        .await;
        // The retry does not run before its time.
        assert_eq!(h.target.keys("grant").len(), attempt as usize);
        h.clock.advance(Duration::from_secs(30));
    }
    let c = h
        .wait_for(id, "ERROR", |c| {
            c.activation
                .as_ref()
                .is_some_and(|a| a.status == ActivationStatus::Error)
        })
        .await;
    assert_eq!(c.state, ConnectionState::Available);
    assert_eq!(h.target.keys("grant").len(), 3);
    assert_eq!(
        h.target.keys("revoke").len(),
        1,
        "a grant of unknown outcome is revoked"
    );
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprovision_outage_retries_flags_stuck_then_recovers() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = h.activated(conn(5), Some(Minutes(10))).await;
    h.target.state().fail_revokes = 5;
    h.clock.advance(Duration::from_secs(600));
    for attempt in 1..=5u32 {
        h.wait_for(id, "revoke retry armed", |c| {
            c.activation
                .as_ref()
                .is_some_and(|a| a.attempt == attempt && a.retry_at.is_some())
        })
        .await;
        let stuck = h.connection(id).activation.unwrap().stuck;
        assert_eq!(stuck, attempt >= 3, "stuck after 3 tries");
        // The gauge is exact, read from the store's counted stuck table.
        assert_eq!(common::stuck_gauge(&h.engine), u64::from(stuck));
        h.clock.advance(Duration::from_secs(30));
    }
    let c = h
        .wait_for(id, "EXPIRED", |c| c.state == ConnectionState::Expired)
        .await;
    assert!(!c.activation.unwrap().stuck);
    assert_eq!(common::stuck_gauge(&h.engine), 0, "recovered");
    assert_eq!(h.target.keys("revoke").len(), 6);
    assert!(!h.target.state().held.contains(&id));
    h.engine.shutdown().await;
    let stuck = h
        .inbox
        .notices()
        .iter()
        .filter(|n| **n == Notice::Stuck)
        .count();
    assert_eq!(stuck, 1, "one alert per outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_return_the_first_answer() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = conn(6);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    let first = h
        .engine
        .activate(&caller(), id, Some(Minutes(20)), Some("req-1"), None)
        .await
        .unwrap();
    let again = h
        .engine
        .activate(&caller(), id, Some(Minutes(20)), Some("req-1"), None)
        .await
        .unwrap();
    assert_eq!(
        first.id, again.id,
        "a retry after an unknown outcome gets the same activation"
    );
    let other = h
        .engine
        .activate(&caller(), id, Some(Minutes(25)), Some("req-1"), None)
        .await;
    assert_eq!(
        other.unwrap_err(),
        Error::IdempotencyConflict("req-1".into())
    );
    h.wait_for(id, "ACTIVE", active).await;
    assert_eq!(h.target.keys("grant").len(), 1, "no second effect");
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_back_typed_and_change_nothing() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = conn(7);
    let e = h
        .engine
        .activate(&caller(), id, None, None, None)
        .await
        .unwrap_err();
    assert_eq!(e, Error::Rejected(Rejection::NotFound(id)));
    h.engine.register(&caller(), spec(id)).await.unwrap();
    let e = h
        .engine
        .activate(&caller(), id, Some(Minutes(241)), None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Rejected(Rejection::PeriodOutOfRange { max: 240, .. })
        ),
        "{e:?}"
    );
    // Another tenant cannot see or touch the connection.
    let mut other = caller();
    other.tenant = jitflow_core::id::TenantId::parse("globex").unwrap();
    let e = h
        .engine
        .activate(&other, id, Some(Minutes(5)), None, None)
        .await
        .unwrap_err();
    assert_eq!(e, Error::Rejected(Rejection::NotFound(id)));
    assert!(h.engine.connection(&other.tenant, id).unwrap().is_none());
    assert_eq!(h.connection(id).state, ConnectionState::Available);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_every_committed_event_in_order() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = conn(8);
    let mut sub = h.engine.subscribe(0);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    h.engine
        .activate(&caller(), id, None, None, None)
        .await
        .unwrap();
    h.wait_for(id, "ACTIVE", active).await;
    let mut last = 0;
    let mut seen = 0;
    // The policy, the registration, request, validation, grant.
    while seen < 5 {
        let e = sub.next().await.unwrap();
        assert!(e.sequence > last, "in order, no repeats");
        last = e.sequence;
        seen += 1;
    }
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_activating_reruns_the_grant_with_the_same_key() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = conn(10);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    h.target.state().hang = true;
    let a = h
        .engine
        .activate(&caller(), id, None, None, None)
        .await
        .unwrap();
    h.wait_for(id, "grant intent committed", |c| {
        c.activation
            .as_ref()
            .is_some_and(|a| a.status == ActivationStatus::Activating)
    })
    .await;
    // The grant call is in flight (hanging) when the engine stops: the intent has no result.
    // The target comes back before the engine does, so the rerun call completes.
    wait_calls(&h, "grant", 1).await;
    h.target.state().hang = false;
    let h = h.restart().await;
    h.wait_for(id, "ACTIVE after restart", active).await;
    let key = format!("{}:grant:1", a.id);
    let grants = h.target.keys("grant");
    assert!(
        grants.len() >= 2 && grants.iter().all(|k| *k == key),
        "{grants:?}"
    );
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_active_fires_the_overdue_expiry_at_once() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = h.activated(conn(11), Some(Minutes(15))).await;
    // Down for two hours, far past the expiry.
    h.clock.advance(Duration::from_secs(7200));
    let h = h.restart().await;
    let c = h
        .wait_for(id, "EXPIRED", |c| c.state == ConnectionState::Expired)
        .await;
    assert!(!h.target.state().held.contains(&id));
    assert_eq!(c.activation.unwrap().status, ActivationStatus::Completed);
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_deactivating_reruns_the_revoke() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = h.activated(conn(12), None).await;
    h.target.state().hang = true;
    let a = h
        .engine
        .deactivate(&caller(), id, None, None)
        .await
        .unwrap();
    wait_calls(&h, "revoke", 1).await;
    h.target.state().hang = false;
    let h = h.restart().await;
    h.wait_for(id, "AVAILABLE after restart", |c| {
        c.state == ConnectionState::Available
    })
    .await;
    let key = format!("{}:revoke:1", a.id);
    assert!(h.target.keys("revoke").iter().all(|k| *k == key));
    assert!(!h.target.state().held.contains(&id));
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_while_waiting_to_retry_keeps_the_retry_timer() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = h.activated(conn(13), Some(Minutes(10))).await;
    h.target.state().fail_revokes = 1;
    h.engine
        .deactivate(&caller(), id, None, None)
        .await
        .unwrap();
    h.wait_for(id, "retry armed", |c| {
        c.activation.as_ref().is_some_and(|a| a.retry_at.is_some())
    })
    .await;
    let h = h.restart().await;
    // The retry is durable: it runs once its time comes, after the restart.
    h.clock.advance(Duration::from_secs(60));
    h.wait_for(id, "AVAILABLE", |c| c.state == ConnectionState::Available)
        .await;
    assert_eq!(h.target.keys("revoke").len(), 2);
    h.engine.shutdown().await;
}

/// A notifier that never finishes a delivery: the process dies before people hear anything.
struct Stalled;

impl jitflow::hooks::Notifier for Stalled {
    fn notify(
        &self,
        _notification: jitflow::hooks::Notification,
    ) -> jitflow::hooks::BoxFuture<'_, Result<(), jitflow::hooks::NotifyError>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_missed_by_a_stop_are_delivered_after_the_restart() {
    let Some(store) = Storage::new() else {
        return;
    };
    let clock = jitflow::clock::ManualClock::new(
        jitflow_core::time::Timestamp::from_millis(common::START).unwrap(),
    );
    let target = common::Target::default();
    let engine = store
        .builder()
        .await
        .config(jitflow::Config {
            // Bounds how long the stalled notifier holds up each notice and the shutdown.
            notify_timeout: Duration::from_millis(100),
            ..common::config()
        })
        .clock(clock.clone())
        .provisioner(target.clone())
        .notifier(Stalled)
        .open()
        .await
        .unwrap();
    let h = Harness {
        engine,
        clock,
        target,
        inbox: common::Inbox::default(),
        gate: common::Gate::default(),
        storage: store.clone(),
        config: common::config(),
    };
    h.engine
        .put_policy(&caller(), common::policy())
        .await
        .unwrap();
    let id = h.activated(conn(20), None).await;
    let h = h.restart().await;
    let delivered = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let notices = h.inbox.notices();
            if notices.contains(&Notice::Started) && notices.contains(&Notice::Provisioned) {
                return notices;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the missed notifications arrive after the restart");
    assert_eq!(
        delivered.iter().filter(|n| **n == Notice::Started).count(),
        1
    );
    let first = h.inbox.0.lock().unwrap()[0].clone();
    assert_eq!(first.connection, id);
    assert_eq!(first.spec.as_ref().map(|s| s.id), Some(id));
    h.engine.shutdown().await;
}

/// A notifier that refuses each notice the first `refusals` times it is offered.
#[derive(Clone, Default)]
struct Refusing {
    refusals: u32,
    /// The sequence of every offer, and the notices taken, in order.
    offers: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    taken: std::sync::Arc<std::sync::Mutex<Vec<(u64, Notice)>>>,
}

impl jitflow::hooks::Notifier for Refusing {
    fn notify(
        &self,
        n: jitflow::hooks::Notification,
    ) -> jitflow::hooks::BoxFuture<'_, Result<(), jitflow::hooks::NotifyError>> {
        let mut offers = self.offers.lock().unwrap();
        offers.push(n.sequence);
        let tries = offers.iter().filter(|s| **s == n.sequence).count() as u32;
        let answer = if tries <= self.refusals {
            Err(jitflow::hooks::NotifyError::new(
                jitflow::hooks::NotifyErrorKind::Refused,
                "503 on purpose",
            ))
        } else {
            self.taken.lock().unwrap().push((n.sequence, n.notice));
            Ok(())
        };
        Box::pin(async move { answer })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_notice_is_tried_again_and_later_notices_wait_for_it() {
    let Some(store) = Storage::new() else {
        return;
    };
    let clock = jitflow::clock::ManualClock::new(
        jitflow_core::time::Timestamp::from_millis(common::START).unwrap(),
    );
    let notifier = Refusing {
        refusals: 3,
        ..Refusing::default()
    };
    let engine = store
        .builder()
        .await
        .config(jitflow::Config {
            notify_retry_base: Duration::from_millis(1),
            notify_retry_cap: Duration::from_millis(5),
            ..common::config()
        })
        .clock(clock)
        .provisioner(common::Target::default())
        .notifier(notifier.clone())
        .open()
        .await
        .unwrap();
    engine
        .put_policy(&caller(), common::policy())
        .await
        .unwrap();
    let id = conn(22);
    engine.register(&caller(), spec(id)).await.unwrap();
    engine
        .activate(&caller(), id, Some(Minutes(30)), None, None)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while notifier.taken.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both notices are taken in the end");
    let taken = notifier.taken.lock().unwrap().clone();
    assert_eq!(
        taken.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [Notice::Started, Notice::Provisioned]
    );
    let offers = notifier.offers.lock().unwrap().clone();
    // Each notice is offered until taken, and the next is offered only after: in order.
    let first = taken[0].0;
    let second = taken[1].0;
    assert_eq!(
        offers,
        [first, first, first, first, second, second, second, second]
    );
    let m = engine.metrics();
    assert_eq!(
        m.notices_delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let refused = jitflow::hooks::NotifyErrorKind::ALL
        .iter()
        .position(|k| *k == jitflow::hooks::NotifyErrorKind::Refused)
        .unwrap();
    assert_eq!(
        m.notice_failures[refused].load(std::sync::atomic::Ordering::Relaxed),
        6
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_never_answers_times_out_and_is_retried() {
    let Some(store) = Storage::new() else {
        return;
    };
    let clock = jitflow::clock::ManualClock::new(
        jitflow_core::time::Timestamp::from_millis(common::START).unwrap(),
    );
    let config = jitflow::Config {
        effect_timeout: Duration::from_millis(50),
        ..common::config()
    };
    let h = Harness::open_with(&store, clock, common::Target::default(), config).await;
    h.engine
        .put_policy(&caller(), common::policy())
        .await
        .unwrap();
    let id = conn(21);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    h.target.state().hang = true;
    h.engine
        .activate(&caller(), id, None, None, None)
        .await
        .unwrap();
    let c = h
        .wait_for(id, "grant timed out", |c| {
            c.activation.as_ref().is_some_and(|a| a.retry_at.is_some())
        })
        .await;
    let error = c.activation.unwrap().last_error.unwrap();
    assert!(error.contains("no answer within 50ms"), "{error}");
    h.target.state().hang = false;
    h.clock.advance(Duration::from_secs(30));
    h.wait_for(id, "ACTIVE", active).await;
    assert_eq!(h.target.keys("grant").len(), 2);
    h.engine.shutdown().await;
}

/// The value of one series (its name and labels as printed) in a scrape; it must be there once.
fn sample(text: &str, series: &str) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .collect();
    assert_eq!(values.len(), 1, "{series} in\n{text}");
    values[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_times_effect_calls_and_counts_them_in_flight() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    h.activated(conn(1), Some(Minutes(30))).await;
    // Without HTTP: the embedder's scrape. Every answered call is timed under its outcome.
    let text = h.engine.scrape().unwrap();
    let ok = sample(&text, "jitflow_effects_total{outcome=\"ok\"}");
    assert!(ok >= 1.0, "the grant succeeded");
    let timed = "jitflow_effect_duration_seconds_count{outcome=\"ok\"}";
    assert_eq!(sample(&text, timed), ok);
    assert_eq!(sample(&text, "jitflow_effects_in_flight"), 0.0);
    let acks = "jitflow_signal_ack_duration_seconds_count{kind=\"activate\"}";
    assert_eq!(sample(&text, acks), 1.0);

    // A grant that hangs is in flight, and not timed, until it answers.
    h.target.state().hang = true;
    let id = conn(2);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    h.engine
        .activate(&caller(), id, None, None, None)
        .await
        .unwrap();
    wait_calls(&h, "grant", 2).await;
    let text = h.engine.scrape().unwrap();
    assert_eq!(sample(&text, "jitflow_effects_in_flight"), 1.0);
    let ok = sample(&text, "jitflow_effects_total{outcome=\"ok\"}");
    assert_eq!(sample(&text, timed), ok);
    assert_eq!(sample(&text, acks), 2.0);
}

/// The tenant's policy sets its own warning lead (`jitflowExpiryWarningMins`): it survives a
/// restart (the store keeps it beside the policy) and the warning is armed that long before the
/// expiry instead of the engine's `warning_lead`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_warning_lead_survives_a_restart_and_arms_the_warning() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let mut policy = common::policy();
    policy.expiry_warning = Some(Minutes(20));
    let stored = h.engine.put_policy(&caller(), policy).await.unwrap();
    assert_eq!(stored.expiry_warning, Some(Minutes(20)));
    let h = h.restart().await;
    let kept = h.engine.policy(&caller().tenant).unwrap().unwrap();
    assert_eq!(kept.expiry_warning, Some(Minutes(20)));
    let id = h.activated(conn(1), Some(Minutes(30))).await;
    let a = h.connection(id).activation.unwrap();
    let expiry = a.expires_at.unwrap();
    assert_ne!(h.config.warning_lead, Duration::from_secs(20 * 60));
    assert_eq!(
        a.warn_at,
        Some(expiry.saturating_sub(Duration::from_secs(20 * 60)))
    );
    // A patch that clears it returns to the engine's setting for the next activation.
    let cleared = h
        .engine
        .patch_policy(
            &caller(),
            vec![jitflow_core::policy::PatchOp {
                op: None,
                path: "/jitflowExpiryWarningMins".into(),
                value: jitflow_core::policy::PatchValue::Null,
            }],
            None,
        )
        .await
        .unwrap();
    assert_eq!(cleared.expiry_warning, None);
    // The audit export shows both changes, which the policy's serde form leaves out.
    let lines = h.policy_lines();
    assert!(
        lines[1].contains(r#""policyExpiryWarningMins":[null,20]"#),
        "{lines:?}"
    );
    assert!(
        lines[2].contains(r#""policyExpiryWarningMins":[20,null]"#),
        "{lines:?}"
    );
    assert!(!lines[0].contains("policyExpiryWarningMins"), "{lines:?}");
    h.engine.shutdown().await;
}

/// What a client sends with its signals (SailPoint's `requestOrigin` and `metaData`) is in the
/// activation's history after a restart: on the event of each signal, in the history read and
/// in the audit export's lines, and on no other event. An idempotent retry must send the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_origin_and_metadata_are_in_the_history_after_a_restart() {
    use jitflow::{ClientInfo, Payload, Stream};
    use jitflow_core::lifecycle::Change;
    let said = |origin: &str, meta: serde_json::Value| {
        let serde_json::Value::Object(meta) = meta else {
            panic!("an object")
        };
        ClientInfo::new(Some(origin.to_owned()), Some(meta)).unwrap()
    };
    let on_activate = said(
        "sailpoint-sdk-go/1.4",
        serde_json::json!({"ticket": "CHG-42", "nested": {"n": [1, 2.5, null]}}),
    );
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = conn(1);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    let on_extend = said("portal", serde_json::json!({}));
    let on_deactivate = ClientInfo::new(None, Some(serde_json::Map::new())).unwrap();
    let a = h
        .engine
        .activate(&caller(), id, None, Some("k-1"), on_activate.clone())
        .await
        .unwrap();
    // The same key with other client info is another request.
    let other = h
        .engine
        .activate(&caller(), id, None, Some("k-1"), on_extend.clone())
        .await;
    assert_eq!(other.unwrap_err(), Error::IdempotencyConflict("k-1".into()));
    let again = h
        .engine
        .activate(&caller(), id, None, Some("k-1"), on_activate.clone())
        .await
        .unwrap();
    assert_eq!(again.id, a.id);
    h.wait_for(id, "ACTIVE", active).await;
    h.engine
        .extend(&caller(), id, Some(Minutes(5)), None, on_extend.clone())
        .await
        .unwrap();
    h.engine
        .deactivate(&caller(), id, None, on_deactivate.clone())
        .await
        .unwrap();
    h.wait_for(id, "AVAILABLE", |c| c.state == ConnectionState::Available)
        .await;

    let h = h.restart().await;
    let history = h
        .engine
        .history(&caller().tenant, Stream::Activation(a.id), 0, 100)
        .unwrap();
    let mut said_on = Vec::new();
    for e in &history {
        let Payload::Connection(event) = &e.envelope.payload else {
            panic!("an activation's stream holds connection events");
        };
        let line: serde_json::Value =
            serde_json::from_str(&jitflow::export::json_line(&e.envelope)).unwrap();
        match &event.client {
            Some(client) => {
                said_on.push((event.change.name(), client.clone()));
                assert_eq!(
                    line.get("requestOrigin").and_then(|v| v.as_str()),
                    client.request_origin()
                );
                assert_eq!(
                    line.get("metaData").and_then(|v| v.as_object()),
                    client.meta_data()
                );
            }
            None => {
                assert!(line.get("requestOrigin").is_none() && line.get("metaData").is_none());
            }
        }
    }
    assert_eq!(
        said_on,
        [
            ("activation_requested", on_activate.unwrap()),
            ("extended", on_extend.unwrap()),
            ("deactivation_requested", on_deactivate.unwrap()),
        ]
    );
    assert!(
        history.iter().any(|e| matches!(
            &e.envelope.payload,
            Payload::Connection(ev) if matches!(ev.change, Change::Revoked { .. })
        )),
        "the whole activation is there"
    );
    let report = h.engine.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    h.engine.shutdown().await;
}
