//! Benchmark of the store's queries over a large tenant.
//!
//! Run: `cargo bench -p jitflow-benches --bench query`. Builds (once; cached) a store of
//! `JITFLOW_BENCH_QUERY_CONNECTIONS` connections (default 1,000,000) in one tenant, through the
//! store API in batches of 4,096 events: 10 connections per identity, 1,000 entitlements, 10
//! sources; 1,000 connections left ACTIVATING (the selective state) and 10,000 ACTIVE, the rest
//! AVAILABLE. The file is cached under `target/` with the file format version and the count in
//! its name, so later runs skip the build. Then, one JSON line per measurement on stdout:
//!
//! - `state.value eq "ACTIVATING"`, a page of 250 (default order, by id), with and without
//!   `count`: p50/p99/max latency over `JITFLOW_BENCH_QUERY_RUNS` runs (default 200), each on a
//!   fresh reader (a request's snapshot);
//! - `identity.id eq "..."`, a page of 250 (10 rows), rotating over identities: p50/p99/max;
//! - a full walk of the tenant by `searchAfter` (default order, pages of 250, a fresh reader per
//!   page, the continuation through the text encoding): rows per second;
//! - a full walk sorted by `state.value,id` (streamed from the state index): rows per second.
//!
//! Progress goes to stderr.
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jitflow_benches::{env_usize, percentiles, spec};
use jitflow_core::connection::Connection;
use jitflow_core::id::{ActivationId, ConnectionId, TenantId};
use jitflow_core::lifecycle::{Actor, Command, Config, Context, decide, evolve};
use jitflow_core::policy::Policy;
use jitflow_core::time::{Minutes, Timestamp};
use jitflow_store::Store;
use jitflow_store::batch::{Batch, Entry};
use jitflow_store::open::{FILE_FORMAT_VERSION, Options};
use jitflow_store::query::{self, CONNECTIONS, Query};

const ACTIVATING: u64 = 1_000;
const ACTIVE: u64 = 10_000;

/// SplitMix64: spreads ids over the key space as UUIDs would be.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn tenant() -> TenantId {
    TenantId::parse("tenant-0").expect("valid")
}

/// Connection `n`: a random-looking id whose low bits keep `n` (so `spec` spreads it over
/// identities, entitlements and sources by `n`).
fn connection_id(n: u64) -> ConnectionId {
    ConnectionId::from_u128((u128::from(mix(n)) << 64) | u128::from(n))
}

fn build(path: &PathBuf, count: u64) {
    let tmp = path.with_extension("building");
    let _ = std::fs::remove_file(&tmp);
    let store = Store::open(&tmp, Options::default()).expect("store opens");
    let mut policy = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
    policy.max_activation_period = Some(Minutes(480));
    policy.default_activation_period = Some(Minutes(60));
    let config = Config::default();
    let now = Timestamp::from_millis(1_767_225_600_000).expect("valid");
    let ctx = Context {
        now,
        actor: &Actor::System,
        policy: &policy,
        config: &config,
    };
    let tenant = tenant();
    let started = Instant::now();
    let mut batch = Batch::new();
    let (mut activating, mut active) = (0u64, 0u64);
    for n in 0..count {
        let id = connection_id(n);
        let mut state: Option<Connection> = None;
        let mut cmds = vec![Command::Register(spec(id))];
        // Every 1,000th connection in a pattern: the first ACTIVATING, then ACTIVE ones.
        let wants_activating = activating < ACTIVATING && n % (count / ACTIVATING).max(1) == 0;
        let wants_active = !wants_activating && active < ACTIVE && n % (count / ACTIVE).max(1) == 1;
        let activation = ActivationId::from_u128(u128::from(mix(n ^ 0xa5a5)) << 64 | u128::from(n));
        if wants_activating || wants_active {
            cmds.push(Command::Activate {
                activation,
                period: Some(Minutes(60)),
                client: None,
            });
        }
        if wants_active {
            cmds.push(Command::ValidationPassed { activation });
            cmds.push(Command::GrantSucceeded {
                activation,
                attempt: 1,
            });
        }
        activating += u64::from(wants_activating);
        active += u64::from(wants_active);
        for command in cmds {
            for event in decide(id, state.as_ref(), &command, &ctx).expect("valid command") {
                state = evolve(state, &event).expect("applies");
                if batch.is_full() {
                    store.append_batch(&batch).expect("append");
                    batch.clear();
                }
                batch.push(Entry::Connection {
                    tenant: tenant.clone(),
                    event,
                    after: state.clone(),
                });
            }
        }
        if n % 100_000 == 99_999 {
            eprintln!("built {} connections in {:.0?}", n + 1, started.elapsed());
        }
    }
    if !batch.is_empty() {
        store.append_batch(&batch).expect("append");
    }
    drop(store);
    std::fs::rename(&tmp, path).expect("rename");
    eprintln!(
        "built {count} connections ({activating} ACTIVATING, {active} ACTIVE) in {:.1?}",
        started.elapsed()
    );
}

fn report(name: &str, samples: &mut [Duration], rows: usize) {
    let (p50, p99, max) = percentiles(samples);
    println!(
        "{{\"bench\":\"{name}\",\"runs\":{},\"rows_per_page\":{rows},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        samples.len(),
        p50.as_micros(),
        p99.as_micros(),
        max.as_micros()
    );
}

/// Latencies of `runs` requests, run `i` asking `query(i)` on a fresh reader; and the rows
/// of the largest page.
fn timed(store: &Store, query: impl Fn(usize) -> Query, runs: usize) -> (Vec<Duration>, usize) {
    let tenant = tenant();
    let mut samples = Vec::with_capacity(runs);
    let mut rows = 0;
    for i in 0..runs {
        let q = query(i);
        let start = Instant::now();
        let reader = store.reader().expect("reader");
        let page = reader.query_connections(&tenant, &q, None).expect("query");
        samples.push(start.elapsed());
        rows = rows.max(page.items.len());
    }
    (samples, rows)
}

fn walk(store: &Store, name: &str, sorters: Option<&str>) {
    let tenant = tenant();
    let mut query =
        Query::parse(CONNECTIONS, None, sorters, None, None, None, None).expect("valid");
    let start = Instant::now();
    let (mut rows, mut pages) = (0usize, 0usize);
    let mut latencies = Vec::new();
    loop {
        let page_start = Instant::now();
        let reader = store.reader().expect("reader");
        let page = reader
            .query_connections(&tenant, &query, None)
            .expect("query");
        latencies.push(page_start.elapsed());
        let Some(last) = page.items.last() else {
            break;
        };
        rows += page.items.len();
        pages += 1;
        let after = query::search_after(CONNECTIONS, &query, last);
        query.search_after =
            Query::parse(CONNECTIONS, None, sorters, None, None, None, Some(&after))
                .expect("continuation parses")
                .search_after;
    }
    let elapsed = start.elapsed();
    let (p50, p99, max) = percentiles(&mut latencies);
    println!(
        "{{\"bench\":\"{name}\",\"rows\":{rows},\"pages\":{pages},\"seconds\":{:.3},\"rows_per_s\":{:.0},\"page_p50_us\":{},\"page_p99_us\":{},\"page_max_us\":{}}}",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        p50.as_micros(),
        p99.as_micros(),
        max.as_micros()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let count = env_usize("JITFLOW_BENCH_QUERY_CONNECTIONS", 1_000_000) as u64;
    let runs = env_usize("JITFLOW_BENCH_QUERY_RUNS", 200);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&dir).expect("target dir");
    let path = dir.join(format!(
        "jitflow-bench-query-f{FILE_FORMAT_VERSION}-{count}.redb"
    ));
    if !path.exists() {
        eprintln!("building {} (cached for later runs)", path.display());
        build(&path, count);
    }
    let store = Store::open(&path, Options::default()).expect("store opens");
    // Warm the page cache the way a running server would be: one pass over the ids.
    walk(&store, "warm-up walk by id (not a result)", None);

    let mut q = Query::parse(
        CONNECTIONS,
        Some(r#"state.value eq "ACTIVATING""#),
        None,
        None,
        None,
        None,
        None,
    )
    .expect("valid");
    eprintln!(
        "plan: {}",
        query::plan_connections(&q, None).expect("valid")
    );
    let (mut samples, rows) = timed(&store, |_| q.clone(), runs);
    report("state.value eq ACTIVATING, limit 250", &mut samples, rows);
    q.count = true;
    let (mut samples, rows) = timed(&store, |_| q.clone(), runs);
    report(
        "state.value eq ACTIVATING, limit 250, count",
        &mut samples,
        rows,
    );

    let by_identity = |i: usize| {
        let filters = format!("identity.id eq \"identity-{}\"", mix(i as u64) % 100_000);
        Query::parse(CONNECTIONS, Some(&filters), None, None, None, None, None).expect("valid")
    };
    let (mut samples, rows) = timed(&store, by_identity, runs);
    report("identity.id eq, limit 250", &mut samples, rows);

    walk(&store, "walk by searchAfter, order id", None);
    walk(
        &store,
        "walk by searchAfter, order state.value,id",
        Some("state.value,id"),
    );
}
