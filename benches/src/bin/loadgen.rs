//! `loadgen`: runs the JIT workload (activate all, extend each, deactivate half, let the rest
//! expire) against the embedded engine or the HTTP shim and writes a JSON report. See
//! `jitflow_benches::loadgen` for the phases and what each figure means.
//!
//! ```text
//! cargo run --release -p jitflow-benches --bin loadgen -- -w 10000 -c 100 --clock manual
//! cargo run --release -p jitflow-benches --bin loadgen -- -w 10000 -c 100 --period 1m --extend 1m
//! cargo run --release -p jitflow-benches --bin loadgen -- --target http://127.0.0.1:8080 \
//!     --token-file token.txt -w 10000 -c 100
//! # three writing nodes on one PostgreSQL database of three partitions, one process each:
//! for i in 0 1 2; do
//!   cargo run --release -p jitflow-benches --bin loadgen -- -w 2000 -c 100 \
//!     --store "host=127.0.0.1 user=postgres dbname=bench" --partitions 3 \
//!     --node-id node-$i --tenant lg$i &   # lg0, lg1, lg2 hash to partitions 0, 1, 2
//! done; wait
//! # beside the background reconciliation over 1,000,000 more connections (issue 16):
//! cargo run --release -p jitflow-benches --bin loadgen -- -w 10000 -c 100 \
//!     --reconcile-connections 1000000 --reconcile-rate 5000
//! ```
//!
//! Progress goes to stderr (`RUST_LOG`, default `info`). Exit status: 0 when the run upholds its invariants, 1 when it ran but an expiry was early, an
//! error stopped it, or the outcomes do not add up (the report says which), 2 when it could not
//! run (bad flags, setup failed).
#![allow(
    clippy::print_stdout,
    reason = "the report goes to stdout without --out"
)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use jitflow_benches::loadgen::{self, ClockKind, Options, Target, parse_minutes};
use jitflow_core::id::TenantId;

/// Runs the JIT workload and reports per-phase rates and latencies, timer lag and outcomes.
///
/// Over HTTP the token needs the scopes idn:jit-activation-workflow:manage (acting on other
/// identities' connections), idn:entitlement-connections:manage (registering) and
/// idn:entitlement-connections:list (the expiry phase), and the level ORG_ADMIN, e.g.
/// `jitflow-shim token --tenant loadgen --identity loadgen --scope
/// idn:jit-activation-workflow:manage --scope idn:entitlement-connections:manage --scope
/// idn:entitlement-connections:list --level ORG_ADMIN`.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Args {
    /// `embedded` (the engine in this process) or the shim's `http://host:port`.
    #[arg(long, default_value = "embedded")]
    target: Target,
    /// W: how many connections.
    #[arg(short = 'w', long, default_value_t = 10_000)]
    connections: usize,
    /// C: how many concurrent clients.
    #[arg(short = 'c', long, default_value_t = 100)]
    clients: usize,
    /// P: the activation period, whole minutes (`1m`, `2h`).
    #[arg(long, default_value = "1m", value_parser = |s: &str| parse_minutes("period", s))]
    period: jitflow_core::time::Minutes,
    /// E: the extension, whole minutes.
    #[arg(long, default_value = "1m", value_parser = |s: &str| parse_minutes("extend", s))]
    extend: jitflow_core::time::Minutes,
    /// The embedded engine's clock: `system` (the expiry phase takes P + E of real time) or
    /// `manual` (the generator moves it past the expiries at once).
    #[arg(long, default_value = "system")]
    clock: ClockKind,
    /// Embedded: the directory for `loadgen.redb` (must not hold one); a temporary directory
    /// when absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Embedded: store in this PostgreSQL database (a connection string, `host=127.0.0.1
    /// port=5432 user=postgres dbname=bench` or a `postgresql://` URL) instead of a redb file
    /// in --data-dir. The tenant's partition must hold no jitflow store yet.
    #[arg(long, conflicts_with = "data_dir")]
    store: Option<String>,
    /// With --store: this generator's node id (several generators on one database, each with
    /// its own --tenant in its own partition, are several writing nodes).
    #[arg(long, default_value = "loadgen", requires = "store")]
    node_id: String,
    /// With --store: how many partitions the database spreads tenants over (fixed when it is
    /// created); the generator leases its tenant's.
    #[arg(long, default_value_t = 1, requires = "store")]
    partitions: u32,
    /// Begin the first phase at this wall-clock time (Unix milliseconds) once the setup is
    /// done: generators given the same time run their phases together (each phase's start and
    /// end are in the report, to join them).
    #[arg(long)]
    start_at: Option<u64>,
    /// HTTP: the bearer token.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// HTTP: a file holding the bearer token (surrounding whitespace ignored).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Embedded: the tenant (over HTTP the token names it).
    #[arg(long, default_value = "loadgen")]
    tenant: String,
    /// How long after the last due time to wait for expiries and revokes (`60s`).
    #[arg(long, default_value = "60s", value_parser = |s: &str| jitflow_core::time::parse_duration(s))]
    grace: Duration,
    /// Write the JSON report here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Embedded: register this many more connections (tenant `drift`, one in 1000 granted by
    /// hand on the target) and report the background reconciliation during the run.
    #[arg(long)]
    reconcile_connections: Option<usize>,
    /// With --reconcile-connections: the pass's connections per second (0: off, the baseline).
    #[arg(long, default_value_t = 0, requires = "reconcile_connections")]
    reconcile_rate: u32,
    /// With --reconcile-connections: from one pass's end to the next's start.
    #[arg(long, default_value = "1s", value_parser = |s: &str| jitflow_core::time::parse_duration(s))]
    reconcile_interval: Duration,
    /// With --reconcile-connections: inspections in flight.
    #[arg(long, default_value_t = 8)]
    reconcile_in_flight: usize,
}

fn options(args: Args) -> Result<Options, String> {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("--token-file {}: {e}", f.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    Ok(Options {
        target: args.target,
        connections: args.connections,
        clients: args.clients,
        period: args.period,
        extend: args.extend,
        clock: args.clock,
        data_dir: args.data_dir,
        store: args.store,
        node: args.node_id,
        partitions: args.partitions,
        start_at: args
            .start_at
            .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms)),
        token,
        tenant: TenantId::parse(&args.tenant).map_err(|e| format!("--tenant: {e}"))?,
        grace: args.grace,
        reconcile: args
            .reconcile_connections
            .map(|extra| jitflow_benches::loadgen::Reconcile {
                extra,
                rate: args.reconcile_rate,
                interval: args.reconcile_interval,
                in_flight: args.reconcile_in_flight,
            }),
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let out = args.out.clone();
    let options = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(loadgen::run(&options)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let json = serde_json::to_string_pretty(&report).expect("a report serialises");
    match out {
        Some(path) => {
            if let Err(e) = std::fs::write(&path, json + "\n") {
                eprintln!("loadgen: writing {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
        None => println!("{json}"),
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "loadgen: invariants failed: expired_early {}, outcomes {:?} (expected {:?}){}",
            report.expired_early,
            report.outcomes,
            report.expected,
            report
                .error
                .as_deref()
                .map(|e| format!(", error: {e}"))
                .unwrap_or_default()
        );
        ExitCode::from(1)
    }
}
