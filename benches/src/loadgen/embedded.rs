//! The workload against the engine embedded in this process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jitflow::clock::ManualClock;
use jitflow::{Caller, Config, Engine};
use jitflow_core::activation::{ActivationStatus, EndReason};
use jitflow_core::connection::ConnectionState;
use jitflow_core::id::{ConnectionId, IdentityId, TenantId};
use jitflow_core::lifecycle::{Actor, Change, Rejection};
use jitflow_core::time::Timestamp;
use jitflow_store::codec::Payload;

use super::report::round3;
use super::{
    BY_HAND_ONE_IN, ClockKind, DRIFT_TENANT, Driver as AnyDriver, Error, Lag, Options, Outcomes,
    Ran, Reconcile, ReconcileReport, Report, Signal, SignalError, run_phases,
};
use crate::{HoldingProvisioner, InstantProvisioner, bench_policy, register, wait_all};

/// The engine's queue: large enough that C clients never see `Busy` (each has one signal in
/// flight), with room for the scheduler's and effect runner's reports.
const QUEUE: usize = 1 << 20;
/// Effects in flight: the provisioner answers at once, so this only bounds memory.
const EFFECTS: usize = 4096;

/// Sends the signals to the engine.
pub(crate) struct Driver {
    engine: Engine,
    caller: Caller,
    ids: Arc<Vec<ConnectionId>>,
}

impl Driver {
    pub(crate) async fn signal(&self, index: usize, signal: Signal) -> Result<(), SignalError> {
        let id = self.ids[index];
        let (engine, caller) = (&self.engine, &self.caller);
        let result = match signal {
            Signal::Activate(period) => engine.activate(caller, id, Some(period), None, None).await,
            Signal::Extend(by) => engine.extend(caller, id, Some(by), None, None).await,
            Signal::Deactivate => engine.deactivate(caller, id, None, None).await,
        };
        result.map(|_| ()).map_err(|e| match e {
            jitflow::Error::Busy(_)
            | jitflow::Error::Rejected(Rejection::WrongState {
                state: "ACTIVATING",
                ..
            }) => SignalError::NotReady(e.to_string()),
            e => SignalError::Failed(e.to_string()),
        })
    }
}

/// Opens the engine, registers W connections and runs the workload.
pub(crate) async fn run(options: &Options) -> Result<Report, Error> {
    let setup = Instant::now();
    let temp;
    let dir = match &options.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Open(format!("{}: {e}", dir.display())))?;
            dir.clone()
        }
        None => {
            temp = tempfile::tempdir().map_err(|e| Error::Open(e.to_string()))?;
            temp.path().to_owned()
        }
    };
    let path = dir.join("loadgen.redb");
    if options.store.is_none() && path.exists() {
        // A store from an earlier run holds the same connection ids: every register would fail.
        return Err(Error::Open(format!(
            "{} exists; give a fresh --data-dir",
            path.display()
        )));
    }
    let manual = (options.clock == ClockKind::Manual).then(|| {
        ManualClock::new(Timestamp::from_system_time(SystemTime::now()).unwrap_or(Timestamp::EPOCH))
    });
    // With the reconciliation the target remembers what it holds (and answers inspections).
    let holding = options.reconcile.map(|_| HoldingProvisioner::default());
    let open = |reconcile: Option<&Reconcile>| {
        let config = Config {
            batch_max: jitflow::config::MAX_BATCH,
            queue_capacity: QUEUE,
            effects_in_flight: EFFECTS,
            reconcile_rate: reconcile.map_or(0, |r| r.rate),
            reconcile_interval: reconcile
                .map_or(Config::default().reconcile_interval, |r| r.interval),
            reconcile_in_flight: reconcile
                .map_or(Config::default().reconcile_in_flight, |r| r.in_flight),
            ..Config::default()
        };
        let mut builder = Engine::builder(&path).config(config);
        // Opened on each open: a node opening again under its id takes its lease back at once.
        let partition = jitflow_store::backend::Partition::of_tenant(
            options.tenant.as_str(),
            options.partitions,
        );
        let backend = options.store.as_ref().map(|url| {
            let mut settings = jitflow_store_pg::Config::new(
                url.clone(),
                options.node.clone(),
                jitflow_store_pg::LeaseOptions::new(super::PG_LEASE),
            );
            settings.partition_count = options.partitions;
            settings.partitions = vec![partition];
            jitflow_store_pg::PgBackend::open(settings)
                .map_err(|e| Error::Open(format!("the PostgreSQL store: {e}")))
        });
        builder = match &holding {
            Some(target) => builder.provisioner(target.clone()),
            None => builder.provisioner(InstantProvisioner),
        };
        if let Some(clock) = &manual {
            builder = builder.clock(clock.clone());
        }
        async move {
            if let Some(backend) = backend {
                builder = builder.backend(Arc::new(backend?)).store_options(
                    jitflow_store::open::Options {
                        partition,
                        ..jitflow_store::open::Options::default()
                    },
                );
            }
            builder.open().await.map_err(|e| Error::Open(e.to_string()))
        }
    };
    let mut engine = open(None).await?;
    let caller = Caller {
        tenant: options.tenant.clone(),
        actor: Actor::Identity(IdentityId::parse("loadgen").expect("a valid id")),
    };
    let ids: Arc<Vec<ConnectionId>> = Arc::new(
        (1..=options.connections as u128)
            .map(ConnectionId::from_u128)
            .collect(),
    );
    let prepared = async {
        engine.put_policy(&caller, bench_policy()).await?;
        register(&engine, &caller, &ids).await?;
        if let (Some(r), Some(target)) = (&options.reconcile, &holding) {
            let drift = Caller {
                tenant: TenantId::parse(DRIFT_TENANT).expect("a valid id"),
                ..caller.clone()
            };
            let first = options.connections as u128 + 1;
            let extra: Vec<ConnectionId> = (first..first + r.extra as u128)
                .map(ConnectionId::from_u128)
                .collect();
            target.by_hand(extra.iter().step_by(BY_HAND_ONE_IN).copied());
            register(&engine, &drift, &extra).await?;
        }
        Ok::<(), jitflow::Error>(())
    }
    .await;
    if let Err(e) = prepared {
        engine.shutdown().await;
        return Err(Error::Setup(e.to_string()));
    }
    // The pass starts with the engine: reopened with it on, just before the phases.
    if let Some(r) = options.reconcile.filter(|r| r.rate > 0) {
        engine.shutdown().await;
        drop(engine);
        engine = open(Some(&r)).await?;
    }
    let basis = match options.clock {
        ClockKind::System => "wall time the committed EXPIRED event was seen - expires_at",
        ClockKind::Manual => "wall time the committed EXPIRED event was seen - clock jump",
    };
    let mut report = Report::planned(options, options.clock.as_str(), basis, setup.elapsed());
    let driver = Driver {
        engine: engine.clone(),
        caller,
        ids,
    };
    let before = Reconciliation::read(&engine);
    let started = Instant::now();
    if let Err(e) = measure(&mut report, options, driver, manual).await {
        report.error = Some(e.to_string());
    }
    if let (Some(r), Some(target)) = (&options.reconcile, &holding) {
        report.reconcile =
            Some(Reconciliation::read(&engine).since(&before, r, target, started.elapsed()));
    }
    engine.shutdown().await;
    Ok(report)
}

/// The reconciliation's counters at one moment.
struct Reconciliation {
    inspected: u64,
    passes: u64,
    drift: [u64; 2],
    last_pass: (u64, u64),
}

impl Reconciliation {
    fn read(engine: &Engine) -> Reconciliation {
        let m = engine.metrics();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Reconciliation {
            inspected: m.inspections.iter().map(load).sum(),
            passes: load(&m.reconcile_passes),
            drift: m.drift_found.each_ref().map(load),
            last_pass: (
                load(&m.reconcile_last_connections),
                load(&m.reconcile_last_millis),
            ),
        }
    }

    /// What happened from `before` to this reading, over `took`.
    fn since(
        &self,
        before: &Reconciliation,
        r: &Reconcile,
        target: &HoldingProvisioner,
        took: Duration,
    ) -> ReconcileReport {
        let inspected = self.inspected - before.inspected;
        ReconcileReport {
            extra: r.extra,
            by_hand: r.extra.div_ceil(BY_HAND_ONE_IN),
            rate: r.rate,
            interval_s: round3(r.interval.as_secs_f64()),
            in_flight: r.in_flight,
            inspected,
            inspected_per_s: round3(inspected as f64 / took.as_secs_f64().max(1e-9)),
            passes: self.passes - before.passes,
            last_pass_connections: self.last_pass.0,
            last_pass_s: round3(self.last_pass.1 as f64 / 1e3),
            unexpected_access: self.drift[0] - before.drift[0],
            missing_access: self.drift[1] - before.drift[1],
            by_hand_left: target.holding(),
        }
    }
}

async fn measure(
    report: &mut Report,
    options: &Options,
    driver: Driver,
    manual: Option<ManualClock>,
) -> Result<(), jitflow::Error> {
    let engine = driver.engine.clone();
    let tenant = driver.caller.tenant.clone();
    let ids = Arc::clone(&driver.ids);
    let driver = Arc::new(AnyDriver::Embedded(driver));
    let observer = Observer::start(&engine)?;
    // Extend needs a provisioned activation; a connection whose activate failed is AVAILABLE.
    let settle = async {
        tokio::time::timeout(
            options.grace,
            wait_all(&engine, &tenant, &ids, |s| s != ConnectionState::Activating),
        )
        .await
        .map_err(|_| {
            jitflow::Error::Invalid(format!(
                "activations still ACTIVATING {:?} after the activate phase",
                options.grace
            ))
        })?
    };
    let Ran {
        started, expiring, ..
    } = run_phases(report, &driver, options, Some(settle)).await?;

    // The expiry phase: every expiring activation's due time, then wait for all to end.
    let mut last_due = engine.now();
    for &i in &expiring {
        let due = engine
            .connection(&tenant, ids[i])?
            .and_then(|c| c.activation)
            .and_then(|a| a.expires_at);
        last_due = last_due.max(due.unwrap_or(last_due));
    }
    let jump = manual.map(|clock| {
        clock.set(last_due);
        Instant::now()
    });
    let deadline = tokio::time::Instant::now()
        + match jump {
            Some(_) => options.grace,
            None => last_due.since(engine.now()) + options.grace,
        };
    let ended = tokio::time::timeout_at(
        deadline,
        wait_all(&engine, &tenant, &ids, |s| {
            matches!(s, ConnectionState::Available | ConnectionState::Expired)
        }),
    )
    .await;
    report.end_to_end_s = round3(started.elapsed().as_secs_f64());
    if let Ok(read) = ended {
        read?;
    }

    // How each activation ended, and when each was due.
    let mut dues = Vec::with_capacity(ids.len());
    let mut outcomes = Outcomes::default();
    for id in ids.iter() {
        let a = engine.connection(&tenant, *id)?.and_then(|c| c.activation);
        dues.push(a.as_ref().and_then(|a| a.expires_at));
        match a.map(|a| (a.status, a.end_reason)) {
            Some((ActivationStatus::Completed, Some(EndReason::Expired))) => outcomes.expired += 1,
            Some((ActivationStatus::Revoked, Some(EndReason::Deactivated))) => {
                outcomes.deactivated += 1
            }
            _ => outcomes.other += 1,
        }
    }
    report.outcomes = outcomes;

    let mut lags = Vec::with_capacity(expiring.len());
    for seen in observer.finish(&engine).await? {
        let due = seen
            .connection
            .as_u128()
            .checked_sub(1)
            .and_then(|i| dues.get(i as usize).copied().flatten());
        let Some(due) = due else {
            // An expiry of an activation without a due time cannot happen; count it as early.
            report.expired_early += 1;
            continue;
        };
        let lag = match jump {
            Some(jump) => seen.instant.checked_duration_since(jump),
            None => seen.wall.duration_since(due.to_system_time()).ok(),
        };
        match lag {
            Some(lag) if seen.at >= due => lags.push(lag),
            _ => report.expired_early += 1,
        }
    }
    report.timer_lag_ms = (!lags.is_empty()).then(|| Lag::of(lags));
    Ok(())
}

/// One committed EXPIRED transition, as the observer saw it.
struct Seen {
    connection: ConnectionId,
    /// The event's time (the engine's clock when the writer decided it).
    at: Timestamp,
    /// The wall clock when the observer read it, after its commit.
    wall: SystemTime,
    /// The same moment on the monotonic clock.
    instant: Instant,
}

/// Follows the committed log from before the first activate and notes every EXPIRED transition,
/// so an early one cannot be missed.
struct Observer {
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Vec<Seen>>>,
    read_up_to: Arc<AtomicU64>,
}

/// How long [`Observer::finish`] waits for the observer to read the log's end.
const OBSERVER_DRAIN: Duration = Duration::from_secs(60);

impl Observer {
    fn start(engine: &Engine) -> Result<Observer, jitflow::Error> {
        let from = engine.last_sequence()?;
        let mut events = engine.subscribe(from);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let read_up_to = Arc::new(AtomicU64::new(from));
        let task = tokio::spawn({
            let (seen, read_up_to) = (Arc::clone(&seen), Arc::clone(&read_up_to));
            async move {
                while let Ok(e) = events.next().await {
                    if let Payload::Connection(event) = &e.payload
                        && event.change == Change::Expired
                    {
                        seen.lock().expect("not poisoned").push(Seen {
                            connection: event.connection,
                            at: event.at,
                            wall: SystemTime::now(),
                            instant: Instant::now(),
                        });
                    }
                    read_up_to.store(e.sequence, Ordering::Release);
                }
            }
        });
        Ok(Observer {
            task,
            seen,
            read_up_to,
        })
    }

    /// Waits until the observer has read every event committed so far, then stops it.
    async fn finish(self, engine: &Engine) -> Result<Vec<Seen>, jitflow::Error> {
        let end = engine.last_sequence()?;
        let waited = tokio::time::timeout(OBSERVER_DRAIN, async {
            while self.read_up_to.load(Ordering::Acquire) < end {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        self.task.abort();
        waited.map_err(|_| {
            jitflow::Error::Invalid(format!(
                "the event observer did not reach sequence {end} within {OBSERVER_DRAIN:?}"
            ))
        })?;
        Ok(std::mem::take(
            &mut *self.seen.lock().expect("not poisoned"),
        ))
    }
}
