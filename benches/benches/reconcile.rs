//! The background reconciliation (issue 16): how fast a pass walks many connections, and what
//! it costs the signals and the timers while it runs. Custom harness (rates and percentiles,
//! printed as JSON lines, as the engine bench does).
//!
//! ```text
//! cargo bench -p jitflow-benches --bench reconcile
//! JITFLOW_BENCH_ONLY=pass cargo bench -p jitflow-benches --bench reconcile      # one part
//! JITFLOW_BENCH_RECONCILE_CONNECTIONS=200000 JITFLOW_BENCH_LOAD_RATES=0,5000 ...
//! ```
//!
//! - `pass`: N connections (`JITFLOW_BENCH_RECONCILE_CONNECTIONS`, 1,000,000) of one tenant,
//!   one in 1000 granted by hand on the target (a provisioner that answers inspections from
//!   what it holds, at once); the engine is reopened with the pass on at the highest rate
//!   (`config::MAX_RECONCILE_RATE`) and `JITFLOW_BENCH_IN_FLIGHT` (64) inspections in flight.
//!   Measured: the wall time of the first pass and connections per second, the drift found
//!   (every by-hand grant must be found and revoked), VmRSS.
//! - `load`: the loadgen workload (W = `JITFLOW_BENCH_LOAD_W` connections, 100,000; C =
//!   `JITFLOW_BENCH_LOAD_C` clients, 1000; the system clock; P = E = 1 minute) on a store that
//!   also holds N connections of another tenant, once per rate of `JITFLOW_BENCH_LOAD_RATES`
//!   (`0,1000,100000`; 0 is the baseline: the same store and provisioner, no pass). The pass
//!   starts with the first activate and runs throughout (interval 1 s). Measured: each phase's
//!   signals per second and ack latency, the timer lag of the W/2 expiries (wall time the
//!   committed EXPIRED event was seen minus its due time), and the pass's connections per
//!   second during the run.
#![allow(clippy::print_stdout, reason = "a benchmark report")]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jitflow::{Caller, Config, Engine};
use jitflow_benches::loadgen::{self, BY_HAND_ONE_IN, ClockKind, Options, Reconcile, Target};
use jitflow_benches::{HoldingProvisioner, bench_policy, env_usize, register, rss_bytes};
use jitflow_core::id::{ConnectionId, IdentityId, TenantId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::time::Minutes;

fn caller() -> Caller {
    Caller {
        tenant: TenantId::parse(loadgen::DRIFT_TENANT).unwrap(),
        actor: Actor::Identity(IdentityId::parse("bench").unwrap()),
    }
}

async fn open(path: &std::path::Path, target: &HoldingProvisioner, config: Config) -> Engine {
    Engine::builder(path)
        .config(config)
        .provisioner(target.clone())
        .open()
        .await
        .expect("engine opens")
}

async fn pass(n: usize, in_flight: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reconcile.redb");
    let target = HoldingProvisioner::default();
    let ids: Vec<ConnectionId> = (1..=n as u128).map(ConnectionId::from_u128).collect();
    target.by_hand(ids.iter().step_by(BY_HAND_ONE_IN).copied());
    let by_hand = target.holding();
    let setup = Instant::now();
    let engine = open(&path, &target, Config::default()).await;
    engine.put_policy(&caller(), bench_policy()).await.unwrap();
    register(&engine, &caller(), &ids).await.unwrap();
    engine.shutdown().await;
    drop(engine);
    let setup_s = setup.elapsed().as_secs_f64();
    let rss_before = rss_bytes();

    let config = Config {
        reconcile_rate: jitflow::config::MAX_RECONCILE_RATE,
        reconcile_in_flight: in_flight,
        reconcile_interval: Duration::from_secs(3600),
        ..Config::default()
    };
    let started = Instant::now();
    let engine = open(&path, &target, config).await;
    let m = engine.metrics();
    while m.reconcile_passes.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pass_s = started.elapsed().as_secs_f64();
    // The revokes of what was found run after the pass's inspections: wait for them.
    let revoking = Instant::now();
    while target.holding() > 0 && revoking.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let revoked_s = started.elapsed().as_secs_f64();
    let inspected: u64 = m
        .inspections
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .sum();
    let drift = m.drift_found.each_ref().map(|a| a.load(Ordering::Relaxed));
    let line = serde_json::json!({
        "bench": "reconcile_pass",
        "connections": n,
        "setup_s": round(setup_s),
        "rate_cap_per_s": jitflow::config::MAX_RECONCILE_RATE,
        "in_flight": in_flight,
        "pass_s": round(pass_s),
        "connections_per_s": round(n as f64 / pass_s),
        "inspected": inspected,
        "by_hand": by_hand,
        "unexpected_access": drift[0],
        "missing_access": drift[1],
        "by_hand_left": target.holding(),
        "all_revoked_s": round(revoked_s),
        "rss_mb_before": rss_before / (1 << 20),
        "rss_mb_after": rss_bytes() / (1 << 20),
    });
    println!("{line}");
    engine.shutdown().await;
}

async fn load(w: usize, c: usize, extra: usize, rate: u32, in_flight: usize) {
    let options = Options {
        target: Target::Embedded,
        connections: w,
        clients: c,
        period: Minutes(1),
        extend: Minutes(1),
        clock: ClockKind::System,
        data_dir: None,
        store: None,
        node: "loadgen".into(),
        partitions: 1,
        start_at: None,
        token: None,
        tenant: TenantId::parse("loadgen").unwrap(),
        grace: Duration::from_secs(120),
        reconcile: Some(Reconcile {
            extra,
            rate,
            interval: Duration::from_secs(1),
            in_flight,
        }),
    };
    let report = loadgen::run(&options).await.expect("the workload runs");
    let mut line = serde_json::to_value(&report).unwrap();
    line["bench"] = "reconcile_load".into();
    line["passed"] = report.passed().into();
    println!("{line}");
}

fn round(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with nothing: then stop.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let only = std::env::var("JITFLOW_BENCH_ONLY").unwrap_or_default();
    let n = env_usize("JITFLOW_BENCH_RECONCILE_CONNECTIONS", 1_000_000);
    let in_flight = env_usize("JITFLOW_BENCH_IN_FLIGHT", 64);
    let w = env_usize("JITFLOW_BENCH_LOAD_W", 100_000);
    let c = env_usize("JITFLOW_BENCH_LOAD_C", 1000);
    let rates: Vec<u32> = std::env::var("JITFLOW_BENCH_LOAD_RATES")
        .unwrap_or_else(|_| "0,1000,100000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if only.is_empty() || only == "pass" {
            pass(n, in_flight).await;
        }
        if only.is_empty() || only == "load" {
            for rate in rates {
                load(w, c, n, rate, in_flight).await;
            }
        }
    });
}
