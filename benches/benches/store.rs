//! Benchmarks of `jitflow-store`.
//!
//! Run: `cargo bench -p jitflow-benches --bench store`. Three parts, in this order:
//!
//! 1. **Rates** (custom measurement, JSON on stdout): appends per second with group commit at
//!    batch sizes 1, 16, 256 and 1024 events per transaction (each commit with
//!    `Durability::Immediate`), p50/p99 commit latency, next to a raw baseline measured in the
//!    same run: the same encoded envelope bytes appended to a plain file with `fdatasync`
//!    (`File::sync_data`) per batch. Both with and without redb's quick repair.
//! 2. **Open** (custom measurement, JSON): a store of 1,000,000 connections with 500,000 running
//!    activations is built once in a temp dir (not timed; progress on stderr), then opened in
//!    fresh child processes: time to open and serve a first read, and VmRSS before and after.
//!    Also after a crash (a child appends a batch and aborts), with and without quick repair.
//! 3. **Criterion**: time per append of one batch at the same sizes, and the raw baseline.
//! 4. **Floor** (custom measurement, JSON; only when asked for): what redb alone does on this
//!    machine, without jitflow: per batch, one write transaction with `Durability::Immediate`
//!    and quick repair that appends one 120-byte row per event to a sequentially keyed log
//!    table and overwrites `rows` randomly chosen 200-byte rows per event in a table of 50,000
//!    16-byte keys, for `rows` = 0, 1, 2. It bounds any layout that keeps that many randomly
//!    keyed projection rows per event in the same transaction as the event.
//!
//! 5. **Sustained** (custom measurement, JSON; only when asked for): appends at batch 256 for
//!    five minutes over 1,000,000 connections, checkpointing as the writer does: rate, layer
//!    size against its bound, checkpoint rate and durations, bytes written per event.
//!
//! The open part also measures an open after a crash that left the hot layer 90% full (the
//! longest tail replay the layer's bound allows).
//!
//! Environment: `JITFLOW_BENCH_PARTS` (comma list of `rates`, `open`, `criterion`, `floor`,
//! `sustained`; default the first three),
//! `JITFLOW_BENCH_SIZES` (batch sizes, default 1,16,256,1024), `JITFLOW_BENCH_QUICK_REPAIR`
//! (`true` or `false`; default both), `JITFLOW_BENCH_LAYER` (the hot layer's bound in rows for the
//! rates part; default the store's), `JITFLOW_BENCH_CONNECTIONS` (default 1000000) for the open
//! and sustained parts, `JITFLOW_BENCH_SECONDS` (default 300) for the sustained part,
//! `JITFLOW_BENCH_DIR` (where the files go; default the system temp dir).
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use jitflow_core::connection::{Connection, ConnectionSpec, ConnectionState, ConnectionType};
use jitflow_core::id::{
    AccountId, ActivationId, ConnectionId, EntitlementId, IdentityId, SourceId, TenantId,
};
use jitflow_core::lifecycle::{Actor, Command, Config, Context, Effect, Event, decide, evolve};
use jitflow_core::policy::Policy;
use jitflow_core::time::{Minutes, Timestamp};
use jitflow_store::Store;
use jitflow_store::batch::{Batch, Entry};
use jitflow_store::codec::{self, Envelope, Payload, Stream};
use jitflow_store::open::Options;

const BATCH_SIZES: [usize; 4] = [1, 16, 256, 1024];
/// Environment variable that makes this binary a child of the open part.
const CHILD: &str = "JITFLOW_BENCH_STORE_CHILD";

/// SplitMix64: spreads ids over the key space as UUIDs would be.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn uuid(n: u64, salt: u64) -> u128 {
    (u128::from(mix(n ^ salt)) << 64) | u128::from(mix(n.wrapping_add(salt)))
}

fn spec(id: ConnectionId, n: u64) -> ConnectionSpec {
    ConnectionSpec {
        id,
        identity: IdentityId::parse(&format!("{:032x}", uuid(n / 4, 1))).unwrap(),
        identity_name: format!("Identity {}", n / 4),
        account: AccountId::parse(&format!("acct-{n}")).unwrap(),
        account_name: format!("user{}.admin", n / 4),
        entitlement: EntitlementId::parse(&format!("ent-{}", n % 200)).unwrap(),
        entitlement_name: format!("Privileged Group {}", n % 200),
        attribute_name: "memberOf".into(),
        attribute_value: format!(
            "CN=Privileged Group {},OU=Groups,DC=example,DC=com",
            n % 200
        ),
        privilege_level: Some("HIGH".into()),
        source: SourceId::parse("ad-prod").unwrap(),
        source_name: "Active Directory".into(),
        kind: ConnectionType::Jit,
        standalone: false,
    }
}

fn policy() -> Policy {
    let mut p = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
    p.max_activation_period = Some(Minutes(480));
    p.default_activation_period = Some(Minutes(60));
    p.max_extension = Some(Minutes(240));
    p.default_extension = Some(Minutes(15));
    p
}

/// Produces valid lifecycle events round-robin over a pool of connections: register, activate,
/// validation passed, provisioned (arms expiry and warning), deactivate (cancels them, starts a
/// revoke), revoked, activate again... Generation is never timed.
struct Workload {
    tenants: Vec<TenantId>,
    pool: Vec<(ConnectionId, Option<Connection>)>,
    next: usize,
    now: Timestamp,
    policy: Policy,
    config: Config,
    activations: u64,
    salt: u64,
}

impl Workload {
    fn new(connections: usize, salt: u64) -> Workload {
        Workload {
            tenants: (0..4)
                .map(|n| TenantId::parse(&format!("tenant-{n}")).unwrap())
                .collect(),
            pool: (0..connections as u64)
                .map(|n| (ConnectionId::from_u128(uuid(n, salt)), None))
                .collect(),
            next: 0,
            now: Timestamp::from_millis(1_767_225_600_000).unwrap(),
            policy: policy(),
            config: Config::default(),
            activations: 0,
            salt,
        }
    }

    /// The next event of connection `i`, with `stop_at_running`: leave a provisioned
    /// activation running instead of deactivating it (`None` then).
    fn step(&mut self, i: usize, stop_at_running: bool) -> Option<Entry> {
        let tenant = self.tenants[i % self.tenants.len()].clone();
        let (id, state) = &self.pool[i];
        let id = *id;
        let command = match state {
            None => Command::Register(spec(id, i as u64)),
            Some(c) => match (c.state, c.pending_effects().first()) {
                (_, Some(Effect::Validate { activation })) => Command::ValidationPassed {
                    activation: *activation,
                },
                (
                    _,
                    Some(Effect::Grant {
                        activation,
                        attempt,
                    }),
                ) => Command::GrantSucceeded {
                    activation: *activation,
                    attempt: *attempt,
                },
                (
                    _,
                    Some(Effect::Revoke {
                        activation,
                        attempt,
                    }),
                ) => Command::RevokeSucceeded {
                    activation: *activation,
                    attempt: *attempt,
                },
                (ConnectionState::Active, None) if stop_at_running => return None,
                (ConnectionState::Active, None) => Command::Deactivate { client: None },
                (_, None) => {
                    self.activations += 1;
                    Command::Activate {
                        activation: ActivationId::from_u128(uuid(self.activations, !self.salt)),
                        period: None,
                        client: None,
                    }
                }
                (_, Some(Effect::RevokeStanding { .. })) => unreachable!("no standing access"),
            },
        };
        self.now = self.now.saturating_add(Duration::from_millis(1));
        let ctx = Context {
            now: self.now,
            actor: &Actor::System,
            policy: &self.policy,
            config: &self.config,
        };
        let state = &mut self.pool[i].1;
        let mut events = decide(id, state.as_ref(), &command, &ctx).expect("valid command");
        let event: Event = events.pop().expect("one event");
        let after = evolve(state.take(), &event).expect("applies");
        state.clone_from(&after);
        Some(Entry::Connection {
            tenant,
            event,
            after,
        })
    }

    fn batch(&mut self, size: usize) -> Batch {
        let mut batch = Batch::new();
        while batch.len() < size {
            let i = self.next;
            self.next = (self.next + 1) % self.pool.len();
            if let Some(entry) = self.step(i, false) {
                batch.push(entry);
            }
        }
        batch
    }
}

/// The envelope bytes the store writes for `batch` if appended at `first`: the raw baseline
/// writes exactly these.
fn encoded(batch: &Batch, first: u64) -> Vec<u8> {
    let last = first + batch.len() as u64 - 1;
    let mut out = Vec::new();
    for (sequence, entry) in (first..).zip(batch.entries()) {
        let Entry::Connection { tenant, event, .. } = entry else {
            unreachable!("the workload writes connection events")
        };
        let bytes = codec::encode_envelope(&Envelope {
            sequence,
            tenant: tenant.clone(),
            stream_version: 1,
            batch_first: first,
            batch_last: last,
            payload: Payload::Connection(event.clone()),
        });
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Measured {
    events: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn json(&self) -> String {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        format!(
            "{{\"commits\":{},\"events\":{},\"seconds\":{:.3},\"events_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
            l.len(),
            self.events,
            self.elapsed.as_secs_f64(),
            self.rate(),
            percentile(&l, 0.50).as_micros(),
            percentile(&l, 0.99).as_micros(),
            l.last().unwrap().as_micros()
        )
    }
}

/// How many commits to measure at a batch size: enough for a stable p99 without making the
/// run long.
fn commits_for(size: usize) -> usize {
    match size {
        1 => 2000,
        16 => 1000,
        256 => 300,
        _ => 120,
    }
}

/// The batch sizes to measure: `JITFLOW_BENCH_SIZES` (comma list), default [`BATCH_SIZES`].
fn batch_sizes() -> Vec<usize> {
    std::env::var("JITFLOW_BENCH_SIZES").map_or_else(
        |_| BATCH_SIZES.to_vec(),
        |v| v.split(',').map(|s| s.trim().parse().unwrap()).collect(),
    )
}

/// Quick-repair settings to measure: `JITFLOW_BENCH_QUICK_REPAIR` (`true`, `false`; default
/// both).
fn quick_repair_settings() -> Vec<bool> {
    match std::env::var("JITFLOW_BENCH_QUICK_REPAIR").as_deref() {
        Ok("true") => vec![true],
        Ok("false") => vec![false],
        _ => vec![true, false],
    }
}

/// Bytes this process has written through system calls so far (`wchar` of /proc/self/io).
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One configuration of the rates part.
#[derive(Clone, Copy)]
struct RateCase {
    /// Connections the workload cycles through (all registered before the timed part).
    pool: usize,
    quick_repair: bool,
    size: usize,
}

fn rate_cases() -> Vec<RateCase> {
    let mut cases = Vec::new();
    for quick_repair in quick_repair_settings() {
        for size in batch_sizes() {
            cases.push(RateCase {
                pool: 50_000,
                quick_repair,
                size,
            });
        }
    }
    // A hot working set: many events per connection per batch at the larger sizes.
    if std::env::var_os("JITFLOW_BENCH_SIZES").is_none() {
        for size in [256, 1024] {
            cases.push(RateCase {
                pool: 1_000,
                quick_repair: true,
                size,
            });
        }
    }
    cases
}

fn rates() {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    println!("{{\"part\":\"rates\",\"results\":[");
    for (n, case) in rate_cases().into_iter().enumerate() {
        let RateCase {
            pool,
            quick_repair,
            size,
        } = case;
        let path = dir.path().join(format!("rates-{n}.redb"));
        let store = Store::open(
            &path,
            Options {
                quick_repair,
                layer_entries_max: layer_entries_max(),
                ..Options::default()
            },
        )
        .unwrap();
        // Untimed: register every connection of the pool, so the timed batches update
        // existing connections (steady state) rather than fill an empty file.
        let mut workload = Workload::new(pool, 1000 + n as u64);
        let mut first = 1;
        for _ in 0..pool.div_ceil(4096) {
            let batch = workload.batch(4096.min(pool));
            first += store.append_batch(&batch).unwrap().len();
        }
        let commits = commits_for(size);
        let batches: Vec<Batch> = (0..commits).map(|_| workload.batch(size)).collect();
        let raw_bytes: Vec<Vec<u8>> = batches
            .iter()
            .map(|b| {
                let bytes = encoded(b, first);
                first += b.len() as u64;
                bytes
            })
            .collect();

        // The setup's rows are checkpointed before the clock starts.
        store.checkpoint(None).unwrap();
        let checkpoints_before = store.stats().checkpoints;
        let mut latencies = Vec::with_capacity(commits);
        let written = written_bytes();
        let start = Instant::now();
        let mut checkpoint_time = Duration::ZERO;
        // The commits right after a checkpoint, apart: their base is a new snapshot of a file
        // just rewritten, so they show what a checkpoint costs the commits that follow it.
        let mut after_checkpoint = Vec::new();
        let mut checkpointed = false;
        for batch in &batches {
            let t = Instant::now();
            store.append_batch(batch).unwrap();
            let took = t.elapsed();
            latencies.push(took);
            if std::mem::take(&mut checkpointed) {
                after_checkpoint.push(took);
            }
            // As the engine's writer does: a due checkpoint runs between commits, on the
            // writer's time, so the rate counts the derived rows' writes too.
            if store.checkpoint_due() {
                let t = Instant::now();
                store.checkpoint(None).unwrap();
                checkpoint_time += t.elapsed();
                checkpointed = true;
            }
        }
        after_checkpoint.sort_unstable();
        // What the layer still holds is written too, inside the timed run.
        let t = Instant::now();
        store.checkpoint(None).unwrap();
        checkpoint_time += t.elapsed();
        let checkpoints = store.stats().checkpoints - checkpoints_before;
        let store_run = Measured {
            events: (commits * size) as u64,
            elapsed: start.elapsed(),
            latencies,
        };
        let store_written = written_bytes() - written;
        drop(store);

        let mut file = File::create(dir.path().join(format!("raw-{n}.log"))).unwrap();
        let mut latencies = Vec::with_capacity(commits);
        let written = written_bytes();
        let start = Instant::now();
        for bytes in &raw_bytes {
            let t = Instant::now();
            file.write_all(bytes).unwrap();
            file.sync_data().unwrap();
            latencies.push(t.elapsed());
        }
        let raw_run = Measured {
            events: (commits * size) as u64,
            elapsed: start.elapsed(),
            latencies,
        };
        let raw_written = written_bytes() - written;
        let events = (commits * size) as f64;
        println!(
            "{}{{\"batch\":{size},\"pool\":{pool},\"quick_repair\":{quick_repair},\"checkpoints\":{checkpoints},\"checkpoint_ms\":{},\"after_checkpoint_us\":{:?},\"store\":{},\"store_written_bytes_per_event\":{:.0},\"raw_fdatasync\":{},\"raw_written_bytes_per_event\":{:.0},\"store_vs_raw\":{:.3}}}",
            if n == 0 { "" } else { "," },
            checkpoint_time.as_millis(),
            after_checkpoint
                .iter()
                .map(Duration::as_micros)
                .collect::<Vec<_>>(),
            store_run.json(),
            store_written as f64 / events,
            raw_run.json(),
            raw_written as f64 / events,
            store_run.rate() / raw_run.rate()
        );
        std::io::stdout().flush().unwrap();
    }
    println!("]}}");
}

/// The hot layer's bound for the rates part: `JITFLOW_BENCH_LAYER`, else the store's default.
fn layer_entries_max() -> usize {
    std::env::var("JITFLOW_BENCH_LAYER")
        .map_or(jitflow_store::open::DEFAULT_LAYER_ENTRIES_MAX, |v| {
            v.parse().expect("JITFLOW_BENCH_LAYER is a number of rows")
        })
}

/// Where benchmark files go: `JITFLOW_BENCH_DIR`, else the system temp dir.
fn bench_dir() -> PathBuf {
    std::env::var_os("JITFLOW_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Builds the open part's store: `n` connections, every other one with a running (provisioned)
/// activation. Returns a connection id with a running activation, for the first read.
fn build(path: &Path, n: usize) -> (TenantId, ConnectionId) {
    let store = Store::open(path, Options::default()).unwrap();
    let mut workload = Workload::new(n, 7);
    let started = Instant::now();
    let mut batch = Batch::new();
    let mut events = 0u64;
    let flush = |batch: &mut Batch, events: &mut u64| {
        store.append_batch(batch).unwrap();
        *events += batch.len() as u64;
        batch.clear();
    };
    // Registrations, then activate + validate + provision every other connection.
    for i in 0..n {
        batch.push(workload.step(i, true).unwrap());
        if batch.is_full() {
            flush(&mut batch, &mut events);
        }
        if i % 100_000 == 99_999 {
            eprintln!(
                "build: {} connections registered, {:?}",
                i + 1,
                started.elapsed()
            );
        }
    }
    for round in 0..3 {
        for i in (0..n).step_by(2) {
            batch.push(workload.step(i, true).unwrap());
            if batch.is_full() {
                flush(&mut batch, &mut events);
            }
        }
        eprintln!(
            "build: activation step {} of 3 done, {:?}",
            round + 1,
            started.elapsed()
        );
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut events);
    }
    eprintln!(
        "build: {events} events, {} bytes on disk, {:?}",
        std::fs::metadata(path).unwrap().len(),
        started.elapsed()
    );
    let tenant = workload.tenants[0].clone();
    (tenant, workload.pool[0].0)
}

/// Child: open the store, serve a first read, print JSON with times and VmRSS.
fn child_open(path: &Path, tenant: &TenantId, id: ConnectionId) {
    let rss_before = vm_rss_kib();
    let start = Instant::now();
    let store = Store::open(path, Options::default()).unwrap();
    let opened = start.elapsed();
    let rss_open = vm_rss_kib();
    let reader = store.reader().unwrap();
    let c = reader.connection(tenant, id).unwrap().expect("stored");
    assert!(c.running_activation().is_some());
    let timers = reader.due_timers(None, None, 100).unwrap();
    assert_eq!(timers.len(), 100);
    let history = reader
        .stream(tenant, Stream::Connection(id), 0, 100)
        .unwrap();
    assert_eq!(history.len(), 4);
    let served = start.elapsed();
    let rss_read = vm_rss_kib();
    println!(
        "{{\"open_ms\":{:.1},\"open_and_first_read_ms\":{:.1},\"rss_kib_before\":{rss_before},\"rss_kib_after_open\":{rss_open},\"rss_kib_after_first_read\":{rss_read}}}",
        opened.as_secs_f64() * 1e3,
        served.as_secs_f64() * 1e3,
    );
}

/// Child: append one batch with the given quick-repair setting, then abort without closing.
fn child_crash(path: &Path, quick_repair: bool) {
    let store = Store::open(
        path,
        Options {
            quick_repair,
            ..Options::default()
        },
    )
    .unwrap();
    let mut workload = Workload::new(64, 0xc0ffee + u64::from(quick_repair));
    store.append_batch(&workload.batch(64)).unwrap();
    std::process::abort();
}

/// Child: append registrations of new connections until the hot layer holds 90% of its
/// bound (no checkpoint is due to an append before the bound), then abort: the next open
/// replays a tail as long as the layer allows.
fn child_crash_full_layer(path: &Path) {
    let options = Options::default();
    let store = Store::open(path, options.clone()).unwrap();
    let mut workload = Workload::new(1_000_000, 0x1a7e5);
    let target = options.layer_entries_max as u64 * 9 / 10;
    let mut events = 0u64;
    while store.stats().layer_entries < target {
        let batch = workload.batch(1024);
        events += batch.len() as u64;
        store.append_batch(&batch).unwrap();
    }
    eprintln!(
        "crash-layer: {events} events, {} rows in the layer, aborting",
        store.stats().layer_entries
    );
    std::process::abort();
}

fn run_child(args: &[&str]) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Process::new(exe)
        .env(CHILD, args.join("\u{1f}"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn open_part() {
    let n: usize = std::env::var("JITFLOW_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let path = dir.path().join("open.redb");
    let (tenant, id) = build(&path, n);
    let args = |mode: &str| {
        vec![
            mode.to_owned(),
            path.to_string_lossy().into_owned(),
            tenant.to_string(),
            id.to_string(),
        ]
    };
    let run = |mode: &str| {
        let a = args(mode);
        run_child(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let clean: Vec<String> = (0..3).map(|_| run("open")).collect();
    run("crash-quick");
    let after_crash_quick = run("open");
    run("crash-full");
    let after_crash_full = run("open");
    run("crash-layer");
    let after_crash_full_layer = run("open");
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "{{\"part\":\"open\",\"connections\":{n},\"running_activations\":{},\"file_bytes\":{size},\"clean\":[{}],\"after_crash_quick_repair\":{after_crash_quick},\"after_crash_full_repair\":{after_crash_full},\"after_crash_with_full_layer\":{after_crash_full_layer}}}",
        n.div_ceil(2),
        clean.join(","),
    );
}

fn criterion_part() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let mut group = c.benchmark_group("append");
    for size in batch_sizes() {
        group.throughput(Throughput::Elements(size as u64));
        let store = Store::open(
            dir.path().join(format!("c-{size}.redb")),
            Options::default(),
        )
        .unwrap();
        let mut workload = Workload::new(50_000, 100 + size as u64);
        for _ in 0..50_000usize.div_ceil(4096) {
            store.append_batch(&workload.batch(4096)).unwrap();
        }
        group.bench_with_input(BenchmarkId::new("store", size), &size, |b, &size| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = workload.batch(size);
                    let t = Instant::now();
                    store.append_batch(&batch).unwrap();
                    total += t.elapsed();
                }
                total
            });
        });
        let mut file = File::create(dir.path().join(format!("c-{size}.log"))).unwrap();
        let mut workload = Workload::new(50_000, 200 + size as u64);
        group.bench_with_input(
            BenchmarkId::new("raw_fdatasync", size),
            &size,
            |b, &size| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let bytes = encoded(&workload.batch(size), 1);
                        let t = Instant::now();
                        file.write_all(&bytes).unwrap();
                        file.sync_data().unwrap();
                        total += t.elapsed();
                    }
                    total
                });
            },
        );
    }
    group.finish();
    c.final_summary();
}

fn main() {
    if let Ok(args) = std::env::var(CHILD) {
        let args: Vec<&str> = args.split('\u{1f}').collect();
        let path = Path::new(args[1]);
        let tenant = TenantId::parse(args[2]).unwrap();
        let id = ConnectionId::parse(args[3]).unwrap();
        match args[0] {
            "open" => child_open(path, &tenant, id),
            "crash-quick" => child_crash(path, true),
            "crash-full" => child_crash(path, false),
            "crash-layer" => child_crash_full_layer(path),
            other => panic!("unknown child mode {other}"),
        }
        return;
    }
    let parts =
        std::env::var("JITFLOW_BENCH_PARTS").unwrap_or_else(|_| "rates,open,criterion".into());
    let parts: Vec<&str> = parts.split(',').collect();
    if parts.contains(&"rates") {
        rates();
    }
    if parts.contains(&"open") {
        open_part();
    }
    if parts.contains(&"criterion") {
        criterion_part();
    }
    if parts.contains(&"floor") {
        floor();
    }
    if parts.contains(&"sustained") {
        sustained();
    }
}

/// Part 5 (only when asked for): appends at batch 256 for `JITFLOW_BENCH_SECONDS` (default
/// 300) over `JITFLOW_BENCH_CONNECTIONS` registered connections (default 1,000,000), each
/// event the next lifecycle step of the next connection round robin, checkpointing whenever
/// one is due as the engine's writer does. Every 10 s a JSON line: events/s, the layer's size
/// against its bound, checkpoints; at the end the totals, checkpoint rate and durations, and
/// bytes written per event.
fn sustained() {
    let n: usize = std::env::var("JITFLOW_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seconds: u64 = std::env::var("JITFLOW_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let options = Options::default();
    let bound = options.layer_entries_max as u64;
    let store = Store::open(dir.path().join("sustained.redb"), options).unwrap();
    let mut workload = Workload::new(n, 0x5055);
    let started = Instant::now();
    for i in 0..n.div_ceil(4096) {
        store.append_batch(&workload.batch(4096)).unwrap();
        if store.checkpoint_due() {
            store.checkpoint(None).unwrap();
        }
        if i % 50 == 49 {
            eprintln!(
                "sustained: {} registered, {:?}",
                (i + 1) * 4096,
                started.elapsed()
            );
        }
    }
    store.checkpoint(None).unwrap();
    eprintln!("sustained: setup done in {:?}", started.elapsed());

    let checkpoints_before = store.stats().checkpoints;
    let rows_before = store.stats().checkpoint_rows;
    let written = written_bytes();
    let start = Instant::now();
    let mut events = 0u64;
    let mut latencies = Vec::new();
    let mut durations: Vec<Duration> = Vec::new();
    let mut layer_max = 0u64;
    let mut next_report = Duration::from_secs(10);
    let mut window = (0u64, Duration::ZERO);
    while start.elapsed() < Duration::from_secs(seconds) {
        let batch = workload.batch(256);
        let t = Instant::now();
        store.append_batch(&batch).unwrap();
        latencies.push(t.elapsed());
        events += batch.len() as u64;
        layer_max = layer_max.max(store.stats().layer_entries);
        if store.checkpoint_due() {
            let t = Instant::now();
            store.checkpoint(None).unwrap();
            durations.push(t.elapsed());
        }
        let elapsed = start.elapsed();
        if elapsed >= next_report {
            let stats = store.stats();
            println!(
                "{{\"part\":\"sustained\",\"at_s\":{},\"events_per_s\":{:.0},\"layer_entries\":{},\"layer_bound\":{bound},\"checkpoints\":{}}}",
                elapsed.as_secs(),
                (events - window.0) as f64 / (elapsed - window.1).as_secs_f64(),
                stats.layer_entries,
                stats.checkpoints - checkpoints_before,
            );
            std::io::stdout().flush().unwrap();
            window = (events, elapsed);
            next_report += Duration::from_secs(10);
        }
    }
    let elapsed = start.elapsed();
    let stats = store.stats();
    let written = written_bytes() - written;
    let mut sorted = durations.clone();
    sorted.sort_unstable();
    let run = Measured {
        events,
        elapsed,
        latencies,
    };
    println!(
        "{{\"part\":\"sustained\",\"connections\":{n},\"seconds\":{:.1},\"store\":{},\"layer_max_entries\":{layer_max},\"layer_bound\":{bound},\"checkpoints\":{},\"checkpoints_per_min\":{:.1},\"checkpoint_ms_p50\":{},\"checkpoint_ms_max\":{},\"checkpoint_share\":{:.3},\"checkpoint_rows\":{},\"written_bytes_per_event\":{:.0}}}",
        elapsed.as_secs_f64(),
        run.json(),
        stats.checkpoints - checkpoints_before,
        durations.len() as f64 / elapsed.as_secs_f64() * 60.0,
        sorted.get(sorted.len() / 2).map_or(0, Duration::as_millis),
        sorted.last().map_or(0, Duration::as_millis),
        durations.iter().sum::<Duration>().as_secs_f64() / elapsed.as_secs_f64(),
        stats.checkpoint_rows - rows_before,
        written as f64 / events as f64,
    );
}

/// What one floor transaction writes: rows into the log table and the random-row table.
type Fill<'a> = dyn FnMut(&mut redb::Table<'_, u64, &[u8]>, &mut redb::Table<'_, u128, &[u8]>) + 'a;

/// Part 4: redb's own rate for a log append plus `rows` random row overwrites per event.
fn floor() {
    const LOG: redb::TableDefinition<'static, u64, &[u8]> = redb::TableDefinition::new("log");
    const ROWS: redb::TableDefinition<'static, u128, &[u8]> = redb::TableDefinition::new("rows");
    const POOL: u64 = 50_000;
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let event = [7u8; 120];
    let row = [9u8; 200];
    println!("{{\"part\":\"floor\",\"results\":[");
    let mut first = true;
    for rows in [0usize, 1, 2] {
        for size in batch_sizes() {
            let path = dir.path().join(format!("floor-{rows}-{size}.redb"));
            let db = redb::Database::create(&path).unwrap();
            let write = |fill: &mut Fill<'_>| {
                let mut tx = db.begin_write().unwrap();
                tx.set_durability(redb::Durability::Immediate).unwrap();
                tx.set_quick_repair(true);
                {
                    let mut log = tx.open_table(LOG).unwrap();
                    let mut table = tx.open_table(ROWS).unwrap();
                    fill(&mut log, &mut table);
                }
                tx.commit().unwrap();
            };
            write(&mut |_, table| {
                for k in 0..POOL {
                    table.insert(uuid(k, 3), row.as_slice()).unwrap();
                }
            });
            let (mut seq, mut pick) = (0u64, 0u64);
            let mut latencies = Vec::new();
            let written = written_bytes();
            let start = Instant::now();
            for _ in 0..commits_for(size) {
                let t = Instant::now();
                write(&mut |log, table| {
                    for _ in 0..size {
                        seq += 1;
                        log.insert(seq, event.as_slice()).unwrap();
                        for _ in 0..rows {
                            pick += 1;
                            table
                                .insert(uuid(mix(pick) % POOL, 3), row.as_slice())
                                .unwrap();
                        }
                    }
                });
                latencies.push(t.elapsed());
            }
            let measured = Measured {
                events: seq,
                elapsed: start.elapsed(),
                latencies,
            };
            println!(
                "{}{{\"rows_per_event\":{rows},\"batch\":{size},\"pool\":{POOL},\"redb\":{},\"written_bytes_per_event\":{}}}",
                if first { "" } else { "," },
                measured.json(),
                (written_bytes() - written) / seq
            );
            first = false;
            drop(db);
            std::fs::remove_file(&path).unwrap();
        }
    }
    println!("]}}");
}
