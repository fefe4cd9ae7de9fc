//! Engine benchmarks (custom harness: the targets are rates and percentiles, so it prints them
//! as JSON lines rather than criterion's time per iteration).
//!
//! ```text
//! cargo bench -p jitflow-benches --bench engine            # default sizes
//! JITFLOW_BENCH_ONLY=timers cargo bench -p jitflow-benches --bench engine   # one of them
//! JITFLOW_BENCH_TIMERS=1000000 cargo bench -p jitflow-benches --bench engine
//! ```
//!
//! - `signals`: W connections; C concurrent callers send activate, extend, deactivate as fast as
//!   acks come back (each ack after its commit with fsync); signals/s and ack latency.
//! - `latency_at_rate`: the same mix offered open-loop at a fixed rate; ack latency p50/p99.
//! - `timers`: N activations pending on a manual clock, the clock jumps past all their expiries
//!   at once; firing lag (time at commit of each EXPIRED transition minus its due time, on the
//!   engine clock, which stands still, so this is the scheduling backlog) and the wall time until
//!   all are DEACTIVATING. Never early: the core refuses early timers and the bench checks it.
//! - `timers_spread` (only with `JITFLOW_BENCH_ONLY=timers_spread`): N activations (default
//!   1,000,000) whose expiries are spread evenly over `JITFLOW_BENCH_SPREAD_MINUTES` (default
//!   10; activated in chunks of 256 as the manual clock moves); the clock then steps one second
//!   at a time, and the lag of each expiry is the wall time from the step that made it due to
//!   its commit, with the other timers still pending.
//! - memory (in `timers`): per running activation, with redb's page cache capped at 16 MiB:
//!   the live heap (a counting global allocator, `cap`) and VmRSS added by the second half of
//!   the N activations, divided by N/2 (the cache is full by then, so it does not count), and
//!   the older figure, the VmRSS delta over all N divided by N.
#![allow(clippy::print_stdout, reason = "a benchmark report")]

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jitflow::clock::{Clock, ManualClock};
use jitflow::{Caller, Config, Engine};
use jitflow_benches::{InstantProvisioner, bench_policy, env_usize, percentiles, rss_bytes};
use jitflow_core::connection::ConnectionState;
use jitflow_core::id::{ConnectionId, IdentityId, TenantId};
use jitflow_core::lifecycle::{Actor, Change, TimerKind};
use jitflow_core::time::{Minutes, Timestamp};
use jitflow_store::codec::Payload;

/// Counts live heap bytes, so the memory figure can be the heap the engine keeps per running
/// activation rather than RSS, which also holds freed pages the allocator has not returned.
#[global_allocator]
static ALLOCATOR: cap::Cap<System> = cap::Cap::new(System, usize::MAX);

fn caller() -> Caller {
    Caller {
        tenant: TenantId::parse("bench").unwrap(),
        actor: Actor::Identity(IdentityId::parse("bench-user").unwrap()),
    }
}

async fn open(dir: &std::path::Path, clock: ManualClock) -> Engine {
    open_with_cache(
        dir,
        clock,
        jitflow_store::open::Options::default().cache_size,
    )
    .await
}

async fn open_with_cache(dir: &std::path::Path, clock: ManualClock, cache_size: usize) -> Engine {
    let config = Config {
        batch_max: 4096,
        queue_capacity: 1 << 20,
        effects_in_flight: 4096,
        ..Config::default()
    };
    let engine = Engine::builder(dir.join("bench.redb"))
        .config(config)
        .clock(clock)
        .provisioner(InstantProvisioner)
        .store_options(jitflow_store::open::Options {
            cache_size,
            ..Default::default()
        })
        .open()
        .await
        .expect("engine opens");
    engine.put_policy(&caller(), bench_policy()).await.unwrap();
    engine
}

/// Registers `n` connections.
async fn register(engine: &Engine, n: usize) -> Vec<ConnectionId> {
    let ids: Vec<ConnectionId> = (0..n as u128)
        .map(|i| ConnectionId::from_u128(i + 1))
        .collect();
    jitflow_benches::register(engine, &caller(), &ids)
        .await
        .unwrap();
    ids
}

async fn join_all<F: std::future::Future + Send + 'static>(futures: impl IntoIterator<Item = F>)
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for h in handles {
        h.await.unwrap();
    }
}

/// Waits, yielding, until connection `id` is in `state`.
async fn until_state(engine: &Engine, id: ConnectionId, state: ConnectionState) {
    let tenant = caller().tenant;
    while engine.connection(&tenant, id).unwrap().unwrap().state != state {
        tokio::task::yield_now().await;
    }
}

async fn signals(callers: usize, per_caller: usize) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000).unwrap());
    let engine = open(dir.path(), clock).await;
    let ids = register(&engine, callers).await;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
        callers * per_caller,
    )));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks = ids.iter().map(|id| {
        let engine = engine.clone();
        let latencies = Arc::clone(&latencies);
        let count = Arc::clone(&count);
        let id = *id;
        async move {
            let mut local = Vec::with_capacity(per_caller);
            let caller = caller();
            let mut i = 0;
            while i < per_caller {
                // One cycle: activate, wait for ACTIVE, extend, deactivate, wait for AVAILABLE.
                let t = Instant::now();
                if engine
                    .activate(&caller, id, Some(Minutes(60)), None, None)
                    .await
                    .is_err()
                {
                    tokio::task::yield_now().await;
                    continue;
                }
                local.push(t.elapsed());
                i += 1;
                until_state(&engine, id, ConnectionState::Active).await;
                let t = Instant::now();
                engine
                    .extend(&caller, id, Some(Minutes(5)), None, None)
                    .await
                    .unwrap();
                local.push(t.elapsed());
                let t = Instant::now();
                engine.deactivate(&caller, id, None, None).await.unwrap();
                local.push(t.elapsed());
                i += 2;
                until_state(&engine, id, ConnectionState::Available).await;
            }
            count.fetch_add(local.len() as u64, Ordering::Relaxed);
            latencies.lock().unwrap().extend(local);
        }
    });
    join_all(tasks).await;
    let elapsed = started.elapsed();
    let n = count.load(Ordering::Relaxed);
    let mut lat = latencies.lock().unwrap().clone();
    let (p50, p99, max) = percentiles(&mut lat);
    let m = engine.metrics();
    let commits = m.commits.load(Ordering::Relaxed).max(1);
    println!(
        "{{\"bench\":\"signals\",\"callers\":{callers},\"signals\":{n},\"seconds\":{:.3},\"signals_per_s\":{:.0},\"ack_p50_ms\":{:.3},\"ack_p99_ms\":{:.3},\"ack_max_ms\":{:.3},\"commits\":{},\"events_per_commit\":{:.1},\"commit_avg_ms\":{:.3}}}",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        commits,
        m.events.load(Ordering::Relaxed) as f64 / commits as f64,
        m.commit_micros.load(Ordering::Relaxed) as f64 / commits as f64 / 1e3,
    );
    engine.shutdown().await;
}

async fn latency_at_rate(rate: u64, seconds: u64, connections: usize) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp::from_millis(1_800_000_000_000).unwrap());
    let engine = open(dir.path(), clock).await;
    let ids = Arc::new(register(&engine, connections).await);
    let total = rate * seconds;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + interval * i as u32;
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let engine = engine.clone();
        let ids = Arc::clone(&ids);
        let latencies = Arc::clone(&latencies);
        let errors = Arc::clone(&errors);
        handles.push(tokio::spawn(async move {
            let caller = caller();
            // Activate on a connection at rest, deactivate on one that runs: the mix the
            // contract sees. Refusals (wrong state) are acked after the same queue wait.
            let id = ids[(i as usize) % ids.len()];
            let t = Instant::now();
            let r = if (i / ids.len() as u64).is_multiple_of(2) {
                engine
                    .activate(&caller, id, Some(Minutes(60)), None, None)
                    .await
                    .map(|_| ())
            } else {
                engine.deactivate(&caller, id, None, None).await.map(|_| ())
            };
            if r.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            latencies.lock().unwrap().push(t.elapsed());
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let elapsed = started.elapsed();
    let mut lat = latencies.lock().unwrap().clone();
    let (p50, p99, max) = percentiles(&mut lat);
    println!(
        "{{\"bench\":\"latency_at_rate\",\"offered_per_s\":{rate},\"signals\":{total},\"achieved_per_s\":{:.0},\"refused\":{},\"ack_p50_ms\":{:.3},\"ack_p99_ms\":{:.3},\"ack_max_ms\":{:.3}}}",
        total as f64 / elapsed.as_secs_f64(),
        errors.load(Ordering::Relaxed),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    engine.shutdown().await;
}

/// Activates `ids` in waves of 2048, as callers would (a burst of every request at once would
/// measure the queues), and waits until all are ACTIVE.
async fn activate_all(engine: &Engine, ids: &[ConnectionId]) {
    for chunk in ids.chunks(2048) {
        let activate = chunk.iter().map(|id| {
            let engine = engine.clone();
            let id = *id;
            async move {
                engine
                    .activate(&caller(), id, Some(Minutes(60)), None, None)
                    .await
                    .unwrap()
            }
        });
        join_all(activate).await;
    }
    jitflow_benches::wait_all(engine, &caller().tenant, ids, |s| {
        s == ConnectionState::Active
    })
    .await
    .unwrap();
}

/// For an EXPIRED transition, whether it committed before its expiry was due; `None` for any
/// other event.
fn expiry(e: &jitflow_store::codec::Envelope) -> Option<bool> {
    let Payload::Connection(event) = &e.payload else {
        return None;
    };
    if event.change != Change::Expired {
        return None;
    }
    let due = event
        .cancel
        .iter()
        .find(|t| t.kind == TimerKind::Expiry)?
        .due;
    Some(event.at < due)
}

async fn timers(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let start = Timestamp::from_millis(1_800_000_000_000).unwrap();
    let clock = ManualClock::new(start);
    // A small page cache, so that the memory figure is the engine's, not redb's cache filling up.
    let engine = open_with_cache(dir.path(), clock.clone(), 16 << 20).await;
    let rss_before = rss_bytes();
    let ids = register(&engine, n).await;
    let t = Instant::now();
    // Memory is measured as a marginal: live heap and RSS once the first half runs, then once
    // all run. The 16 MiB page cache is full at both points, so the difference is what the other
    // half of the activations cost, not the cache or start-up.
    let (first, second) = ids.split_at(n / 2);
    activate_all(&engine, first).await;
    let (heap_half, rss_half) = (ALLOCATOR.allocated(), rss_bytes());
    activate_all(&engine, second).await;
    let (heap_all, rss_all) = (ALLOCATOR.allocated(), rss_bytes());
    // Signed: transient allocations freed between the two points can make the heap shrink.
    let marginal = |all: u64, half: u64| (all as f64 - half as f64) / second.len() as f64;
    let setup = t.elapsed();
    let rss_after = rss_all;
    // Every expiry is due at start + 60 min (all activated at the same engine instant).
    let mut events = engine.subscribe(engine.last_sequence().unwrap());
    clock.advance(Duration::from_secs(3600));
    let t = Instant::now();
    let mut lags = Vec::with_capacity(n);
    let mut early = 0u64;
    while lags.len() < n {
        let Some(was_early) = expiry(&events.next().await.unwrap()) else {
            continue;
        };
        early += u64::from(was_early);
        // Wall-clock time from the jump to the commit of this transition.
        lags.push(t.elapsed());
    }
    let all_deactivating = t.elapsed();
    let (p50, p99, max) = percentiles(&mut lags);
    println!(
        "{{\"bench\":\"timers\",\"pending\":{n},\"setup_s\":{:.1},\"all_expired_committed_s\":{:.3},\"lag_p50_ms\":{:.1},\"lag_p99_ms\":{:.1},\"lag_max_ms\":{:.1},\"expired_early\":{early},\"rss_per_activation_bytes\":{:.0},\"heap_marginal_per_activation_bytes\":{:.0},\"rss_marginal_per_activation_bytes\":{:.0}}}",
        setup.as_secs_f64(),
        all_deactivating.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        rss_after.saturating_sub(rss_before) as f64 / n as f64,
        marginal(heap_all as u64, heap_half as u64),
        marginal(rss_all, rss_half),
    );
    engine.shutdown().await;
}

/// `timers_spread`: N activations of `minutes` minutes whose expiries are spread evenly over
/// the following `minutes` minutes of engine time: they are activated in chunks of
/// [`SPREAD_CHUNK`], the manual clock moving between chunks (each chunk is active before it
/// moves, so every expiry is known). The clock then moves in steps of one second, and after
/// each step the bench waits for every expiry the step made due. Lag: wall time from the step
/// to the commit of each EXPIRED transition, so it is the engine's reaction time with the
/// rest of the N timers pending. Never early, checked.
async fn timers_spread(n: usize, minutes: u32) {
    let dir = tempfile::tempdir().unwrap();
    let start = Timestamp::from_millis(1_800_000_000_000).unwrap();
    let clock = ManualClock::new(start);
    let engine = open(dir.path(), clock.clone()).await;
    let ids = register(&engine, n).await;
    let t = Instant::now();
    let span_ms = u64::from(minutes) * 60_000;
    let chunks = n.div_ceil(SPREAD_CHUNK) as u64;
    let mut expiries: Vec<u64> = Vec::with_capacity(n);
    for (c, chunk) in ids.chunks(SPREAD_CHUNK).enumerate() {
        // Chunk c starts at start + c * span / chunks.
        let at = start.as_millis() + c as u64 * span_ms / chunks;
        clock.advance(Duration::from_millis(at - clock.now().as_millis()));
        let activate = chunk.iter().map(|id| {
            let engine = engine.clone();
            let id = *id;
            async move {
                engine
                    .activate(&caller(), id, Some(Minutes(minutes)), None, None)
                    .await
                    .unwrap()
            }
        });
        join_all(activate).await;
        jitflow_benches::wait_all(&engine, &caller().tenant, chunk, |s| {
            s == ConnectionState::Active
        })
        .await
        .unwrap();
        expiries.extend(std::iter::repeat_n(at + span_ms, chunk.len()));
    }
    let setup = t.elapsed();
    let mut events = engine.subscribe(engine.last_sequence().unwrap());
    let mut lags = Vec::with_capacity(n);
    let mut early = 0u64;
    let mut expired = 0usize;
    let run = Instant::now();
    while expired < n {
        clock.advance(Duration::from_secs(1));
        let now = clock.now().as_millis();
        let stepped = Instant::now();
        // Every expiry due by `now` commits before the next step.
        let due = expiries.partition_point(|&e| e <= now);
        while expired < due {
            let Some(was_early) = expiry(&events.next().await.unwrap()) else {
                continue;
            };
            early += u64::from(was_early);
            expired += 1;
            lags.push(stepped.elapsed());
        }
    }
    let (p50, p99, max) = percentiles(&mut lags);
    println!(
        "{{\"bench\":\"timers_spread\",\"pending\":{n},\"spread_minutes\":{minutes},\"setup_s\":{:.1},\"run_s\":{:.1},\"expired\":{expired},\"lag_p50_ms\":{:.2},\"lag_p99_ms\":{:.2},\"lag_max_ms\":{:.2},\"expired_early\":{early}}}",
        setup.as_secs_f64(),
        run.elapsed().as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    engine.shutdown().await;
}

/// Activations per chunk of `timers_spread` (one clock position each).
const SPREAD_CHUNK: usize = 256;

fn main() {
    // `cargo test --benches` runs bench targets with `--bench`-less args; do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::var("JITFLOW_BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only == name;
    runtime.block_on(async {
        if run("signals") {
            signals(
                env_usize("JITFLOW_BENCH_CALLERS", 256),
                env_usize("JITFLOW_BENCH_PER_CALLER", 60),
            )
            .await;
        }
        if run("latency") {
            latency_at_rate(
                env_usize("JITFLOW_BENCH_RATE", 20_000) as u64,
                env_usize("JITFLOW_BENCH_SECONDS", 5) as u64,
                env_usize("JITFLOW_BENCH_CONNECTIONS", 50_000),
            )
            .await;
        }
        if run("timers") {
            timers(env_usize("JITFLOW_BENCH_TIMERS", 100_000)).await;
        }
        // Long (N activations set up first): only when asked for by name.
        if only == "timers_spread" {
            timers_spread(
                env_usize("JITFLOW_BENCH_TIMERS", 1_000_000),
                env_usize("JITFLOW_BENCH_SPREAD_MINUTES", 10) as u32,
            )
            .await;
        }
    });
}
