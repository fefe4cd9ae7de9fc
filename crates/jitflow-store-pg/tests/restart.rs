//! A database restart under load (issue 17): an engine over PostgreSQL serves signals from
//! several callers while the server stops and starts again. While it is down, callers get a
//! clear error within a bound (never a hang); once it is up, the engine recovers by itself
//! (signals succeed again, nobody reopens it); every signal it acknowledged is in the log, and
//! `verify` is clean.

#[path = "../../jitflow/tests/common.rs"]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Harness, START, Target, caller, config, conn};
use jitflow::clock::ManualClock;
use jitflow::{Engine, Error as EngineError, Health, Payload, Stream};
use jitflow_core::lifecycle::Change;
use jitflow_core::time::{Minutes, Timestamp};
use jitflow_store_pg::testing::Cluster;
use jitflow_store_pg::{Config, LeaseOptions, PgBackend};

/// Callers signalling at once, each on connections of its own.
const TASKS: u128 = 4;
const PER_TASK: u128 = 3;
/// A call, or a wait of the test, longer than this is a hang.
const HANG: Duration = Duration::from_secs(60);
/// How long the server stays down: past the lease, so the engine must take it again.
const DOWN: Duration = Duration::from_secs(4);

/// What a caller was told, and when (since the test started).
#[derive(Debug)]
enum Outcome {
    Ack {
        what: &'static str,
        activation: jitflow_core::id::ActivationId,
        expiry: Option<Timestamp>,
    },
    Refused(&'static str, String),
    Hang,
}

type Outcomes = Arc<Mutex<Vec<(Duration, Outcome)>>>;

fn kind(e: &EngineError) -> &'static str {
    match e {
        EngineError::Unavailable(_) => "unavailable",
        EngineError::OutcomeUnknown(_) => "outcome_unknown",
        EngineError::Storage(_) => "storage",
        EngineError::Rejected(_) => "rejected",
        _ => "other",
    }
}

/// Activates, extends and deactivates the task's connections in turn until `stop`.
async fn load(engine: Engine, task: u128, stop: Arc<AtomicBool>, t0: Instant, out: Outcomes) {
    for i in 0u128.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let id = conn(task * PER_TASK + i % PER_TASK);
        let call = async {
            match (i / PER_TASK) % 3 {
                0 => (
                    "activate",
                    engine.activate(&caller(), id, None, None, None).await,
                ),
                1 => (
                    "extend",
                    engine
                        .extend(&caller(), id, Some(Minutes(5)), None, None)
                        .await,
                ),
                _ => ("deact", engine.deactivate(&caller(), id, None, None).await),
            }
        };
        let outcome = match tokio::time::timeout(HANG, call).await {
            Ok((what, Ok(a))) => Outcome::Ack {
                what,
                activation: a.id,
                expiry: a.expires_at,
            },
            Ok((_, Err(e))) => Outcome::Refused(kind(&e), e.to_string()),
            Err(_) => Outcome::Hang,
        };
        let refused = matches!(outcome, Outcome::Refused(..));
        out.lock().unwrap().push((t0.elapsed(), outcome));
        // Refusals come at once while the database is down: no busy loop.
        let pause = if refused { 20 } else { 2 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Waits until `done` holds of the outcomes, at most [`HANG`].
async fn wait(out: &Outcomes, what: &str, done: impl Fn(&[(Duration, Outcome)]) -> bool) {
    let deadline = Instant::now() + HANG;
    while !done(&out.lock().unwrap()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn acks_after(outcomes: &[(Duration, Outcome)], at: Duration) -> usize {
    outcomes
        .iter()
        .filter(|(t, o)| *t > at && matches!(o, Outcome::Ack { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_recovers_by_itself_from_a_database_restart_under_load() {
    // A cluster of its own: the test stops it.
    let Some(cluster) = tokio::task::spawn_blocking(Cluster::start_or_skip)
        .await
        .unwrap()
    else {
        return;
    };
    let cluster = Arc::new(Mutex::new(cluster));
    let url = cluster.lock().unwrap().database().unwrap();
    let config_pg = Config::new(&url, "engine-1", LeaseOptions::new(Duration::from_secs(2)));
    let backend = tokio::task::spawn_blocking(move || PgBackend::open(config_pg))
        .await
        .unwrap()
        .unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(START).unwrap());
    let builder = Engine::builder("postgresql").backend(Arc::new(backend));
    let h = Harness::open_on(
        builder,
        &common::Storage::database_at(&url),
        clock,
        Target::default(),
        config(),
    )
    .await;
    h.engine
        .put_policy(&caller(), common::policy())
        .await
        .unwrap();
    for n in 0..TASKS * PER_TASK {
        h.engine
            .register(&caller(), common::spec(conn(n)))
            .await
            .unwrap();
    }

    let t0 = Instant::now();
    let out: Outcomes = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let load = load(
                h.engine.clone(),
                task,
                Arc::clone(&stop),
                t0,
                Arc::clone(&out),
            );
            tokio::spawn(load)
        })
        .collect();
    wait(&out, "acknowledgements before the stop", |o| {
        acks_after(o, Duration::ZERO) >= 30
    })
    .await;

    let server = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || server.lock().unwrap().stop())
        .await
        .unwrap()
        .unwrap();
    let down = t0.elapsed();
    tokio::time::sleep(DOWN).await;
    let health_down = h.engine.health();
    let server = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || server.lock().unwrap().restart())
        .await
        .unwrap()
        .unwrap();
    let up = t0.elapsed();
    wait(&out, "signals to succeed after the restart", |o| {
        acks_after(o, up) >= 30
    })
    .await;
    let recovered = out
        .lock()
        .unwrap()
        .iter()
        .find(|(t, o)| *t > up && matches!(o, Outcome::Ack { .. }))
        .map(|(t, _)| *t - up)
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        matches!(health_down, Health::Degraded { .. }),
        "the engine tells it cannot write: {health_down:?}"
    );
    assert_eq!(h.engine.health(), Health::Up);

    // While down: refusals of clear kinds, never a hang.
    let outcomes = std::mem::take(&mut *out.lock().unwrap());
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    let mut sample = None;
    for (t, o) in &outcomes {
        match o {
            Outcome::Hang => panic!("a signal never answered"),
            Outcome::Refused(kind, message) => {
                // Rejections are the load's own (deactivating what is not active yet).
                assert!(
                    matches!(*kind, "unavailable" | "outcome_unknown" | "rejected"),
                    "a signal was refused with {kind}: {message}"
                );
                assert!(
                    !message.contains("db error)") && !message.contains("to server)"),
                    "the cause is told: {message}"
                );
                if *t > down && *t < up {
                    *kinds.entry(kind).or_default() += 1;
                    sample.get_or_insert(message);
                }
            }
            Outcome::Ack { .. } => {}
        }
    }
    assert!(
        kinds.contains_key("unavailable") || kinds.contains_key("outcome_unknown"),
        "signals were refused while down: {kinds:?}"
    );
    eprintln!(
        "down {:?} at {down:?}: refusals {kinds:?} (e.g. {sample:?}); first acknowledgement \
         {recovered:?} after the restart; {} acknowledgements in all",
        up - down,
        acks_after(&outcomes, Duration::ZERO)
    );

    // Every acknowledged signal is in its activation's history.
    let tenant = caller().tenant;
    for (_, o) in &outcomes {
        let Outcome::Ack {
            what,
            activation,
            expiry,
        } = o
        else {
            continue;
        };
        let history = h
            .engine
            .history(
                &tenant,
                Stream::Activation(*activation),
                0,
                jitflow::MAX_PAGE,
            )
            .unwrap();
        let found = history.iter().any(|e| match (&e.envelope.payload, *what) {
            (Payload::Connection(e), "activate") => {
                matches!(e.change, Change::ActivationRequested { .. })
            }
            (Payload::Connection(e), "extend") => {
                matches!(e.change, Change::Extended { expires_at, .. } if Some(expires_at) == *expiry)
            }
            (Payload::Connection(e), _) => matches!(e.change, Change::DeactivationRequested),
            _ => false,
        });
        assert!(found, "acknowledged {what} of {activation} lost");
    }
    h.verify_and_shut_down().await;
}
