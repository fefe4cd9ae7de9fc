//! The load generator: the JIT workload against the embedded engine or the HTTP shim.
//!
//! W connections are registered; then C concurrent clients run the phases, each over its own
//! share of the connections (clients take the next connection from a shared counter):
//!
//! 1. **activate** every connection for P minutes;
//! 2. (embedded only) wait until no connection is ACTIVATING any more (ACTIVE, or AVAILABLE if
//!    its activate failed), since extend needs a provisioned activation (`settle_active_s` in
//!    the report); over HTTP an extend refused because the
//!    activation is not provisioned yet is retried instead (see [`NOT_READY_TRIES`]);
//! 3. **extend** each once by E minutes;
//! 4. **deactivate** every second connection (`W / 2`, rounded down);
//! 5. let the other `W - W / 2` expire by their durable timers, and wait until every activation
//!    has ended (or the grace period after the last due time passed).
//!
//! The [`Report`] gives per phase the acknowledged operations, the errors, ops/s and the
//! latency of acknowledged operations; the timer lag of every expiry; how many expiries were
//! early (must be 0); the outcomes (W/2 deactivated, the rest expired); and the end-to-end time
//! from the first activate to the last ended activation. [`Report::passed`] is false if any
//! expiry was early, an error stopped the run, or the outcomes do not add up.
//!
//! **Timer lag.** With the system clock: the wall-clock time at which the load generator saw the
//! committed EXPIRED transition (through [`jitflow::Engine::subscribe`], so after it was durable)
//! minus the activation's `expires_at`. With the manual clock (`--clock manual`), the engine's
//! clock stands still during the phases, so every expiry is due at the same engine instant
//! (start + P + E); after the deactivate phase the generator sets the clock to the latest due
//! time at once, and the lag is the wall-clock time from that jump to the observed commit: the
//! scheduling and commit backlog of W/2 timers falling due together, not a clock error. Over HTTP
//! the lag is `jit.deactivation - jit.expiration` of each EXPIRED connection from
//! `GET /entitlement-connections/v1` (the engine's decision time, shortly before the commit).
//! Early means the EXPIRED transition was decided (its event's `at`) or seen before its due time.

mod embedded;
mod http;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use jitflow_core::id::TenantId;
use jitflow_core::policy::MAX_PERIOD_MINS;
use jitflow_core::time::Minutes;

pub use report::{Lag, Outcomes, Phase, Phases, ReconcileReport, Report};

/// The most connections one run may use.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// The most concurrent clients.
pub const MAX_CLIENTS: usize = 10_000;
/// How often a signal refused as "not yet" (the engine's queue is full, HTTP 429, or an extend
/// before the activation is provisioned) is tried before it counts as an error.
pub const NOT_READY_TRIES: u32 = 400;
/// The pause between such tries.
pub const NOT_READY_PAUSE: Duration = Duration::from_millis(5);
/// The lease of the embedded engine's PostgreSQL backend (`Options::store`): the generator is
/// the only node, so the length only bounds how long a killed run keeps the database.
pub const PG_LEASE: Duration = Duration::from_secs(10);

/// Where the workload goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The engine, opened in this process.
    Embedded,
    /// The HTTP shim at this base URL (`http://host:port`, no trailing slash).
    Http(String),
}

impl std::str::FromStr for Target {
    type Err = Error;

    /// `embedded` or `http://host:port` (plain HTTP: the client has no TLS).
    fn from_str(s: &str) -> Result<Target, Error> {
        if s == "embedded" {
            return Ok(Target::Embedded);
        }
        match s.strip_prefix("http://") {
            Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
                Ok(Target::Http(s.trim_end_matches('/').to_owned()))
            }
            _ => Err(Error::Option {
                option: "target",
                reason: format!("`{s}` is neither `embedded` nor `http://host:port`"),
            }),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Embedded => f.write_str("embedded"),
            Target::Http(url) => f.write_str(url),
        }
    }
}

/// The embedded engine's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockKind {
    /// The wall clock: the expiry phase waits P + E in real time.
    #[default]
    System,
    /// A manual clock the generator moves past the expiries at once (see the module docs for
    /// what the timer lag means then).
    Manual,
}

impl std::str::FromStr for ClockKind {
    type Err = Error;

    /// `system` or `manual`.
    fn from_str(s: &str) -> Result<ClockKind, Error> {
        match s {
            "system" => Ok(ClockKind::System),
            "manual" => Ok(ClockKind::Manual),
            _ => Err(Error::Option {
                option: "clock",
                reason: format!("`{s}` is neither `system` nor `manual`"),
            }),
        }
    }
}

impl ClockKind {
    /// `system` or `manual`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClockKind::System => "system",
            ClockKind::Manual => "manual",
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the workload goes.
    pub target: Target,
    /// W: the connections (1..=[`MAX_CONNECTIONS`]).
    pub connections: usize,
    /// C: the concurrent clients (1..=[`MAX_CLIENTS`]).
    pub clients: usize,
    /// P: the activation period.
    pub period: Minutes,
    /// E: the extension.
    pub extend: Minutes,
    /// The embedded engine's clock (ignored over HTTP).
    pub clock: ClockKind,
    /// Where the embedded engine keeps `loadgen.redb` (a temporary directory when `None`).
    pub data_dir: Option<PathBuf>,
    /// Embedded: a PostgreSQL connection string; the engine stores in that database instead
    /// of `loadgen.redb`, as node [`Options::node`] with a [`PG_LEASE`] lease, in its tenant's
    /// partition (which must hold no jitflow store yet).
    pub store: Option<String>,
    /// With `store`: this generator's node id. Several generators on one database, each its
    /// own node with its own tenant (in distinct partitions), measure several writing nodes.
    pub node: String,
    /// With `store`: the partitions the database's tenants are spread over (its
    /// `partition_count`); the generator leases its tenant's.
    pub partitions: u32,
    /// When to begin the first phase (after the setup): generators given the same time run
    /// their phases together. `None`: at once.
    pub start_at: Option<SystemTime>,
    /// The bearer token for HTTP (see the binary's help for the scopes it needs).
    pub token: Option<String>,
    /// The embedded engine's tenant (over HTTP the token names the tenant).
    pub tenant: TenantId,
    /// How long after the last due time to wait for expiries and revokes before the rest count
    /// as `other`; embedded, also the longest wait for the activations to be provisioned
    /// before the extend phase.
    pub grace: Duration,
    /// Embedded: the background reconciliation beside the workload (issue 16); `None`: none,
    /// and the provisioner answers no inspection (as before it existed).
    pub reconcile: Option<Reconcile>,
}

/// The background reconciliation beside the workload (embedded only). The store also holds
/// `extra` connections of the tenant [`DRIFT_TENANT`], one in [`BY_HAND_ONE_IN`] of them
/// granted by hand on the target (drift for the pass to find and revoke), and the provisioner
/// remembers what it holds so that it answers inspections. With `rate` 0 nothing is inspected:
/// the baseline on the same store and provisioner. Otherwise the engine is reopened with the
/// pass on just before the first activate, so the pass runs during the phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconcile {
    /// Connections registered besides the W of the workload.
    pub extra: usize,
    /// `Config::reconcile_rate` (0: off).
    pub rate: u32,
    /// `Config::reconcile_interval`.
    pub interval: Duration,
    /// `Config::reconcile_in_flight`.
    pub in_flight: usize,
}

/// The tenant of the reconciliation's extra connections.
pub const DRIFT_TENANT: &str = "drift";
/// One extra connection in this many is granted by hand on the target.
pub const BY_HAND_ONE_IN: usize = 1000;

impl Options {
    /// Checks the bounds; [`run`] calls it first.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |option, reason: String| Err(Error::Option { option, reason });
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return bad("connections", format!("must be 1..={MAX_CONNECTIONS}"));
        }
        if !(1..=MAX_CLIENTS).contains(&self.clients) {
            return bad("clients", format!("must be 1..={MAX_CLIENTS}"));
        }
        for (option, m) in [("period", self.period), ("extend", self.extend)] {
            if !(1..=MAX_PERIOD_MINS).contains(&m.get()) {
                return bad(option, format!("must be 1..={MAX_PERIOD_MINS} minutes"));
            }
        }
        if matches!(self.target, Target::Http(_)) && self.token.is_none() {
            return bad("token", "HTTP needs --token or --token-file".into());
        }
        if self.partitions == 0 || self.partitions > jitflow_store_pg::MAX_PARTITIONS {
            return bad(
                "partitions",
                format!("must be 1..={}", jitflow_store_pg::MAX_PARTITIONS),
            );
        }
        if let Some(r) = &self.reconcile {
            if self.partitions > 1 {
                // Its tenant's data would land in the workload's partition, not its own.
                return bad(
                    "reconcile-connections",
                    "runs with one partition only".into(),
                );
            }
            if matches!(self.target, Target::Http(_)) {
                return bad(
                    "reconcile-rate",
                    "only the embedded engine runs the reconciliation here".into(),
                );
            }
            if r.extra > MAX_CONNECTIONS {
                return bad(
                    "reconcile-connections",
                    format!("at most {MAX_CONNECTIONS} besides the workload's"),
                );
            }
            let config = jitflow::Config {
                reconcile_rate: r.rate,
                reconcile_interval: r.interval,
                reconcile_in_flight: r.in_flight,
                ..jitflow::Config::default()
            };
            if let Err(e) = config.validate() {
                return bad("reconcile-rate", e.to_string());
            }
        }
        Ok(())
    }
}

/// Parses a whole number of minutes written as a human duration (`1m`, `2h`), as the contract's
/// `*Mins` fields are whole minutes.
pub fn parse_minutes(option: &'static str, text: &str) -> Result<Minutes, Error> {
    let d = jitflow_core::time::parse_duration(text).map_err(|e| Error::Option {
        option,
        reason: e.to_string(),
    })?;
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs % 60 != 0 || secs == 0 {
        return Err(Error::Option {
            option,
            reason: format!("`{text}` is not a positive whole number of minutes"),
        });
    }
    u32::try_from(secs / 60)
        .ok()
        .filter(|m| *m <= MAX_PERIOD_MINS)
        .map(Minutes)
        .ok_or_else(|| Error::Option {
            option,
            reason: format!("at most {MAX_PERIOD_MINS} minutes"),
        })
}

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option is malformed or out of bounds; nothing ran.
    #[error("--{option}: {reason}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The embedded engine did not open, or its data directory is not usable.
    #[error("opening the engine: {0}")]
    Open(String),
    /// Setting up the run failed: the policy or a registration was refused, or the shim could not
    /// be reached. No phase ran.
    #[error("setting up: {0}")]
    Setup(String),
}

/// A signal of the workload.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Signal {
    Activate(Minutes),
    Extend(Minutes),
    Deactivate,
}

/// Why one signal was not acknowledged.
#[derive(Debug)]
pub(crate) enum SignalError {
    /// Refused for now; the same signal may succeed a little later.
    NotReady(String),
    /// Failed; counted as an error.
    Failed(String),
}

/// What runs the signals: the embedded engine or the HTTP client.
pub(crate) enum Driver {
    Embedded(embedded::Driver),
    Http(http::Driver),
}

impl Driver {
    async fn signal(&self, index: usize, signal: Signal) -> Result<(), SignalError> {
        match self {
            Driver::Embedded(d) => d.signal(index, signal).await,
            Driver::Http(d) => d.signal(index, signal).await,
        }
    }
}

/// Runs the workload and reports. An `Err` means nothing was measured (bad options, setup
/// failed); a failure after the phases started is in [`Report::error`].
pub async fn run(options: &Options) -> Result<Report, Error> {
    options.validate()?;
    match &options.target {
        Target::Embedded => embedded::run(options).await,
        Target::Http(base) => http::run(options, base).await,
    }
}

/// Runs one phase: `clients` tasks send `signal` for every index of `indexes`.
async fn phase(driver: &Arc<Driver>, indexes: Vec<usize>, clients: usize, signal: Signal) -> Phase {
    let indexes = Arc::new(indexes);
    let next = Arc::new(AtomicUsize::new(0));
    let wall = SystemTime::now();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients.min(indexes.len()))
        .map(|_| {
            let (driver, indexes, next) =
                (Arc::clone(driver), Arc::clone(&indexes), Arc::clone(&next));
            tokio::spawn(async move {
                let mut tally = report::Tally::default();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = indexes.get(n) else {
                        break tally;
                    };
                    let mut tries = 1;
                    loop {
                        let t = Instant::now();
                        match driver.signal(index, signal).await {
                            Ok(()) => tally.latencies.push(t.elapsed()),
                            Err(SignalError::NotReady(_)) if tries < NOT_READY_TRIES => {
                                tries += 1;
                                tally.retried += 1;
                                tokio::time::sleep(NOT_READY_PAUSE).await;
                                continue;
                            }
                            Err(SignalError::NotReady(e) | SignalError::Failed(e)) => {
                                tally.error(e)
                            }
                        }
                        break;
                    }
                }
            })
        })
        .collect();
    let mut total = report::Tally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(e) => total.error(format!("client task failed: {e}")),
        }
    }
    total.finish(wall, started.elapsed())
}

/// When and over what the phases ran.
pub(crate) struct Ran {
    /// Just before the first activate.
    pub(crate) started: Instant,
    /// The same moment on the wall clock.
    pub(crate) first_activate: SystemTime,
    /// After the last extend was answered.
    pub(crate) last_extend: SystemTime,
    /// The connections deactivated.
    pub(crate) deactivated: Vec<usize>,
    /// The connections left to expire.
    pub(crate) expiring: Vec<usize>,
}

/// Runs the activate, extend and deactivate phases into `report`. `settle`, if given, runs
/// between activate and extend (its time is `settle_active_s`); its error stops the run.
pub(crate) async fn run_phases<E>(
    report: &mut Report,
    driver: &Arc<Driver>,
    options: &Options,
    settle: Option<impl Future<Output = Result<(), E>>>,
) -> Result<Ran, E> {
    let (w, c) = (options.connections, options.clients);
    if let Some(at) = options.start_at {
        // Generators given one start time begin their phases together.
        match at.duration_since(SystemTime::now()) {
            Ok(wait) => tokio::time::sleep(wait).await,
            Err(_) => tracing::warn!("the setup ended after --start-at; starting at once"),
        }
    }
    tracing::info!(w, c, setup_s = report.setup_s, "registered; activating");
    let started = Instant::now();
    let first_activate = SystemTime::now();
    let all = || (0..w).collect::<Vec<_>>();
    report.phases.activate = phase(driver, all(), c, Signal::Activate(options.period)).await;
    tracing::info!(phase = ?report.phases.activate, "activated");
    if let Some(settle) = settle {
        let t = Instant::now();
        let settled = settle.await;
        report.settle_active_s = Some(report::round3(t.elapsed().as_secs_f64()));
        settled?;
    }
    report.phases.extend = phase(driver, all(), c, Signal::Extend(options.extend)).await;
    tracing::info!(phase = ?report.phases.extend, "extended");
    let last_extend = SystemTime::now();
    let (deactivated, expiring) = split(w);
    report.phases.deactivate = phase(driver, deactivated.clone(), c, Signal::Deactivate).await;
    tracing::info!(phase = ?report.phases.deactivate, "deactivated; waiting for the expiries");
    Ok(Ran {
        started,
        first_activate,
        last_extend,
        deactivated,
        expiring,
    })
}

/// The indexes of the connections deactivated (every second one: `W / 2`) and of those left to
/// expire (the other `W - W / 2`).
fn split(w: usize) -> (Vec<usize>, Vec<usize>) {
    (0..w).partition(|i| i % 2 == 1)
}
