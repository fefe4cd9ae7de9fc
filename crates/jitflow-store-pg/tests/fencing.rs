//! Fencing with real processes (issue 17): two engine nodes, `a` and `b`, children of this test
//! binary, on one PostgreSQL database with a short lease. Node `a` runs signals in a loop and
//! reports each acknowledgement; the parent SIGSTOPs it past its lease and starts node `b`,
//! whose open waits for the held lease, takes it, and runs signals of its own; then the parent
//! SIGCONTs `a`. Checked on the log afterwards: every signal either node acknowledged is in it,
//! nothing `a` signalled was committed after `b` took over, no effect ran twice under two
//! idempotency keys, and `verify` is clean. Node `a`, fenced, refuses its callers with a clear
//! error (never a panic or a hang).
//!
//! The child re-executes this test binary (the `child` test, inert without its environment
//! variables), as `jitflow/tests/kill.rs` does; it reports on stdout.

#![allow(
    clippy::print_stdout,
    reason = "the child reports to the parent on stdout"
)]

#[path = "../../jitflow/tests/common.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use jitflow::hooks::{BoxFuture, EffectRequest, ProvisionError, Provisioner};
use jitflow::{Caller, Engine, Error as EngineError, Payload};
use jitflow_core::id::ConnectionId;
use jitflow_core::id::IdentityId;
use jitflow_core::lifecycle::{Actor, Change};
use jitflow_core::time::Minutes;
use jitflow_store_pg::testing::Cluster;
use jitflow_store_pg::{Config, Error, LeaseOptions, PgBackend};

const ENV_NODE: &str = "JITFLOW_FENCING_NODE";
const ENV_URL: &str = "JITFLOW_FENCING_URL";
/// Short, so the test waits little for it; long enough that a loaded machine renews in time.
const LEASE: Duration = Duration::from_secs(2);
/// Each node's own connections: `a` from 0, `b` from 100.
const CONNECTIONS: u128 = 9;
/// Callers signalling at once in each node, each on its share of the connections.
const TASKS: u128 = 3;
/// A child call or a step of the parent that takes longer than this is a hang.
const HANG: Duration = Duration::from_secs(60);

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Each node signals as a person of its own, so the log tells whose signal an event is.
fn caller_of(node: &str) -> Caller {
    let person = if node == "a" { "alice" } else { "bob" };
    Caller {
        actor: Actor::Identity(IdentityId::parse(person).unwrap()),
        ..common::caller()
    }
}

fn first_connection(node: &str) -> u128 {
    if node == "a" { 0 } else { 100 }
}

/// A target that always succeeds and reports every call: `call <op> <idempotency key>`.
struct Printer;

impl Printer {
    fn answer(op: &str, request: &EffectRequest) -> BoxFuture<'static, Result<(), ProvisionError>> {
        println!("call {op} {}", request.idempotency_key);
        Box::pin(async { Ok(()) })
    }
}

impl Provisioner for Printer {
    fn grant(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Printer::answer("grant", &request)
    }

    fn revoke(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Printer::answer("revoke", &request)
    }
}

/// Opens this node's backend, waiting (bounded) while another node holds the lease; prints
/// `opened <refusals>`.
fn open_backend(url: &str, node: &str) -> PgBackend {
    let started = Instant::now();
    let mut refusals = 0;
    loop {
        match PgBackend::open(Config::new(url, node, LeaseOptions::new(LEASE))) {
            Ok(backend) => {
                println!("opened {refusals}");
                return backend;
            }
            Err(e @ (Error::LeaseHeld { .. } | Error::Database(_))) if started.elapsed() < HANG => {
                refusals += 1;
                eprintln!("node {node} waits for the lease: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("node {node} cannot open: {e}"),
        }
    }
}

/// The error's kind, as the child reports it.
fn kind(e: &EngineError) -> &'static str {
    match e {
        EngineError::Unavailable(_) => "unavailable",
        EngineError::OutcomeUnknown(_) => "outcome_unknown",
        EngineError::Rejected(_) => "rejected",
        EngineError::Busy(_) => "busy",
        EngineError::Stopped => "stopped",
        EngineError::Storage(_) => "storage",
        _ => "other",
    }
}

/// The child: opens the engine as node `node`, registers its connections, prints `ready <last
/// sequence>` (the log as it found it once it held the lease), then signals in a loop:
/// activate, extend, deactivate over its connections. It prints `ack <kind> <connection>
/// <activation> <expiry ms or 0> <wall ms>` per acknowledgement and `err <kind> <wall ms>
/// <message>` per refusal, and `hang <wall ms>` for a call that never answers.
async fn child_run(url: String, node: String) {
    let backend = tokio::task::spawn_blocking({
        let (url, node) = (url.clone(), node.clone());
        move || open_backend(&url, &node)
    })
    .await
    .unwrap();
    let engine = Engine::builder("postgresql")
        .backend(Arc::new(backend))
        .config(common::config())
        .provisioner(Printer)
        .open()
        .await
        .expect("the engine opens");
    let found = engine.snapshot().unwrap().last_sequence().unwrap();
    let caller = caller_of(&node);
    if engine.policy(&caller.tenant).unwrap().is_none() {
        engine.put_policy(&caller, common::policy()).await.unwrap();
    }
    let first = first_connection(&node);
    for n in first..first + CONNECTIONS {
        engine
            .register(&caller, common::spec(common::conn(n)))
            .await
            .unwrap();
    }
    println!("ready {found}");
    // Several callers at once keep the writer busy, so a stop often catches a write in flight.
    let engine = Arc::new(engine);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (engine, caller) = (Arc::clone(&engine), caller.clone());
        tasks.push(tokio::spawn(async move {
            let mine = first + task * CONNECTIONS / TASKS;
            for i in 0u128.. {
                let id = common::conn(mine + i % (CONNECTIONS / TASKS));
                signal(&engine, &caller, id, (i / (CONNECTIONS / TASKS)) % 3).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// One signal (`step` 0: activate, 1: extend, 2: deactivate), reported.
async fn signal(engine: &Engine, caller: &Caller, id: ConnectionId, step: u128) {
    let call = async {
        match step {
            0 => (
                "activate",
                engine.activate(caller, id, None, None, None).await,
            ),
            1 => (
                "extend",
                engine
                    .extend(caller, id, Some(Minutes(5)), None, None)
                    .await,
            ),
            _ => ("deact", engine.deactivate(caller, id, None, None).await),
        }
    };
    match tokio::time::timeout(HANG, call).await {
        Ok((what, Ok(a))) => {
            let expiry = a.expires_at.map_or(0, |e| e.as_millis());
            println!("ack {what} {id} {} {expiry} {}", a.id, wall_ms());
        }
        Ok((_, Err(e))) => {
            println!("err {} {} {e}", kind(&e), wall_ms());
            // Refusals come at once while fenced: no busy loop.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(_) => println!("hang {}", wall_ms()),
    }
}

#[test]
fn child() {
    let (Ok(node), Ok(url)) = (std::env::var(ENV_NODE), std::env::var(ENV_URL)) else {
        return; // Inert unless run by the fencing test.
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(child_run(url, node));
}

/// One line a child reported.
#[derive(Debug, Clone)]
enum Report {
    Opened(u64),
    Ready(u64),
    Ack {
        what: String,
        connection: ConnectionId,
        activation: String,
        expiry: u64,
    },
    Err {
        kind: String,
        message: String,
    },
    Hang,
    Call {
        op: String,
        key: String,
    },
}

fn parse(line: &str) -> Option<Report> {
    // The test harness prints `test child ... ` without a newline before the child's first line.
    let line = line.rsplit_once("... ").map_or(line, |(_, rest)| rest);
    let parts: Vec<&str> = line.split_whitespace().collect();
    Some(match *parts.first()? {
        "opened" => Report::Opened(parts.get(1)?.parse().ok()?),
        "ready" => Report::Ready(parts.get(1)?.parse().ok()?),
        "ack" => Report::Ack {
            what: parts.get(1)?.to_string(),
            connection: ConnectionId::parse(parts.get(2)?).ok()?,
            activation: parts.get(3)?.to_string(),
            expiry: parts.get(4)?.parse().ok()?,
        },
        "err" => Report::Err {
            kind: parts.get(1)?.to_string(),
            message: parts.get(3..)?.join(" "),
        },
        "hang" => Report::Hang,
        "call" => Report::Call {
            op: parts.get(1)?.to_string(),
            key: parts.get(2)?.to_string(),
        },
        _ => return None,
    })
}

/// A child node and its reports as they arrive, each with the wall time it was read.
struct Node {
    child: Child,
    lines: Receiver<(u64, Report)>,
    reports: Vec<(u64, Report)>,
}

impl Node {
    fn spawn(url: &str, node: &str) -> Node {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
            .env(ENV_NODE, node)
            .env(ENV_URL, url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(report) = parse(&line)
                    && tx.send((wall_ms(), report)).is_err()
                {
                    break;
                }
            }
        });
        Node {
            child,
            lines,
            reports: Vec::new(),
        }
    }

    /// Reads reports until `done` holds of those read so far; panics after [`HANG`].
    fn wait(&mut self, what: &str, done: impl Fn(&[(u64, Report)]) -> bool) {
        let deadline = Instant::now() + HANG;
        while !done(&self.reports) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(report) => self.reports.push(report),
                Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the child exited while the test waited for {what}")
                }
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} failed");
    }

    /// Kills the child and returns every report it made.
    fn kill(mut self) -> Vec<(u64, Report)> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.reports.extend(self.lines.iter());
        self.reports
    }
}

fn acks(reports: &[(u64, Report)]) -> usize {
    reports
        .iter()
        .filter(|(_, r)| matches!(r, Report::Ack { .. }))
        .count()
}

#[test]
fn a_node_paused_between_writes_writes_nothing_after_its_lease_passed() {
    paused_past_the_lease(false);
}

/// Paused with a write transaction open: its fence's share lock on the lease row must not keep
/// the next node out for as long as the pause lasts.
#[test]
fn a_node_paused_in_the_middle_of_a_write_writes_nothing_after_its_lease_passed() {
    paused_past_the_lease(true);
}

/// Statement by statement, on a connection of the test's own.
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Stops node a (between writes, or with a write transaction open), starts node b, resumes
/// a, and checks the log (see the module docs).
fn paused_past_the_lease(mid_write: bool) {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut a = Node::spawn(&url, "a");
    a.wait("node a's acknowledgements", |r| acks(r) >= 20);
    let locker = mid_write.then(|| {
        runtime.block_on(async {
            // A table lock that holds a's next append at its insert, after its fence, until
            // a is stopped.
            let locker = sql(&url).await;
            locker
                .batch_execute("BEGIN; LOCK TABLE jitflow_log IN SHARE MODE")
                .await
                .unwrap();
            let deadline = Instant::now() + HANG;
            while locker
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 0
            {
                assert!(Instant::now() < deadline, "node a's append never came");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            locker
        })
    });
    a.signal("-STOP");
    let stopped = Instant::now();
    let stopped_wall = wall_ms();
    if let Some(locker) = locker {
        runtime.block_on(locker.batch_execute("COMMIT")).unwrap();
    }
    // Whether a stopped with a write transaction open (it holds a transaction id).
    let in_flight = cluster
        .sql(
            &url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()",
        )
        .unwrap();
    eprintln!("node a stopped with {in_flight} write transactions open");
    if mid_write {
        assert_eq!(in_flight, "1", "node a stopped in the middle of its write");
    }

    // Node b starts at once: its open waits until a's lease expired.
    let mut b = Node::spawn(&url, "b");
    b.wait("node b to take the lease", |r| {
        r.iter().any(|(_, r)| matches!(r, Report::Ready(_)))
    });
    let took_over = wall_ms();
    b.wait("node b's acknowledgements", |r| acks(r) >= 20);
    // a stays stopped past its lease whatever b's pace.
    std::thread::sleep((LEASE + Duration::from_secs(1)).saturating_sub(stopped.elapsed()));
    let resumed = wall_ms();
    a.signal("-CONT");
    // Fenced, a's writer retries in the background; its callers are refused meanwhile.
    a.wait("node a's refusals after the resume", |r| {
        r.iter()
            .filter(|(at, r)| *at > resumed && matches!(r, Report::Err { .. }))
            .count()
            >= 20
    });
    // Long enough for a few of a's lease renewals and reopen attempts.
    std::thread::sleep(LEASE * 2);
    let a_reports = a.kill();
    let b_reports = b.kill();

    let (mut refusals, mut found) = (None, None);
    for (_, r) in &b_reports {
        match r {
            Report::Opened(n) => refusals = Some(*n),
            Report::Ready(n) => found = Some(*n),
            _ => {}
        }
    }
    let (refusals, takeover) = (refusals.unwrap(), found.unwrap());
    // Between writes, b's open is refused until a's lease expires; in the middle of one, it
    // waits in the database for a's transaction to end. A stop meant to fall between writes
    // can still catch a busy writer with its transaction open (counted above): then b waits
    // in the database too.
    let write_open = in_flight != "0";
    assert!(
        refusals > 0 || mid_write || write_open,
        "node b started while a's lease was held, so its open waited"
    );
    eprintln!(
        "node b took the lease {} ms after a stopped (refused {refusals} times) at sequence \
         {takeover}",
        took_over - stopped_wall
    );

    // What a told its callers after the resume: refusals, never a hang.
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    let mut late_acks = 0;
    for (at, r) in &a_reports {
        match r {
            Report::Hang => panic!("a call of node a never answered"),
            Report::Err { kind, message } if *at > resumed => {
                *kinds.entry(kind).or_default() += 1;
                assert!(
                    matches!(
                        kind.as_str(),
                        "unavailable" | "outcome_unknown" | "rejected"
                    ),
                    "node a answered {kind}: {message}"
                );
            }
            Report::Ack { .. } if *at > resumed => late_acks += 1,
            _ => {}
        }
    }
    let sample: Vec<&String> = a_reports
        .iter()
        .filter_map(|(at, r)| match r {
            Report::Err { message, .. } if *at > resumed => Some(message),
            _ => None,
        })
        .collect();
    eprintln!(
        "node a after the resume: {kinds:?}, {late_acks} acknowledgements; first refusal: {:?}; \
         last: {:?}",
        sample.first(),
        sample.last()
    );
    assert!(
        sample
            .iter()
            .any(|m| m.contains("lease") || m.contains("fenced")),
        "node a's callers are told why: {sample:?}"
    );

    // The log, read by a third store (node b again: a restart takes its lease at once).
    runtime.block_on(async {
        let backend = tokio::task::spawn_blocking({
            let url = url.clone();
            move || PgBackend::open(Config::new(url, "b", LeaseOptions::new(LEASE)))
        })
        .await
        .unwrap()
        .unwrap();
        let engine = Engine::builder("postgresql")
            .backend(Arc::new(backend))
            .config(common::config())
            .provisioner(common::Target::default())
            .open()
            .await
            .unwrap();
        let mut log = Vec::new();
        let mut after = 0;
        loop {
            let page = engine.export(None, after, jitflow::MAX_PAGE).unwrap();
            if page.events.is_empty() {
                break;
            }
            after = page.next_after;
            log.extend(page.events);
        }
        // Nothing a signalled was committed after b took over.
        let alice = caller_of("a").actor;
        let mut events = HashMap::new();
        for e in &log {
            let Payload::Connection(event) = &e.payload else {
                continue;
            };
            assert!(
                e.sequence <= takeover || event.actor != alice,
                "node a committed event {} ({}) after node b took over at {takeover}",
                e.sequence,
                event.change.name()
            );
            if let Some(activation) = event.activation {
                events
                    .entry(activation.to_string())
                    .or_insert_with(Vec::new)
                    .push((e.sequence, event.clone()));
            }
        }
        // Every acknowledgement is in the log: a's before the takeover, b's after.
        for (node, reports) in [("a", &a_reports), ("b", &b_reports)] {
            for (_, r) in reports {
                let Report::Ack {
                    what,
                    connection,
                    activation,
                    expiry,
                } = r
                else {
                    continue;
                };
                let stream = events
                    .get(activation)
                    .unwrap_or_else(|| panic!("node {node}'s activation {activation} lost"));
                let committed = stream
                    .iter()
                    .find(|(_, e)| match (what.as_str(), &e.change) {
                        ("activate", Change::ActivationRequested { .. }) => true,
                        ("extend", Change::Extended { expires_at, .. }) => {
                            expires_at.as_millis() == *expiry
                        }
                        ("deact", Change::DeactivationRequested) => true,
                        _ => false,
                    });
                let (sequence, event) = committed.unwrap_or_else(|| {
                    panic!("node {node}'s acknowledged {what} of {activation} lost")
                });
                assert_eq!(event.connection, *connection);
                assert_eq!(
                    *sequence <= takeover,
                    node == "a",
                    "node {node}'s {what} of {activation} at {sequence}, takeover at {takeover}"
                );
            }
        }
        let report = engine.verify().unwrap();
        assert!(report.is_clean(), "{:#?}", report.differences);
        engine.shutdown().await;
        eprintln!(
            "the log: {} events, {} acknowledgements by a, {} by b",
            log.len(),
            acks(&a_reports),
            acks(&b_reports)
        );
    });

    // An effect both nodes ran, they ran under one idempotency key (the target never fails,
    // so each effect has one try).
    let mut keys: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for (_, r) in a_reports.iter().chain(&b_reports) {
        if let Report::Call { op, key } = r {
            let activation = key.split(':').next().unwrap().to_owned();
            keys.entry((activation, op.clone()))
                .or_default()
                .insert(key.clone());
        }
    }
    assert!(!keys.is_empty(), "the target was called");
    for ((activation, op), keys) in &keys {
        assert_eq!(
            keys.len(),
            1,
            "{op} of {activation} ran under keys {keys:?}"
        );
    }
}
