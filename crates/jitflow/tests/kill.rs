//! SIGKILL test: a child process runs the engine under load with a target that appends every
//! grant and revoke to a file; the parent kills it at random moments, restarts it, and at the end
//! lets time pass and checks that no acknowledged signal was lost and that every connection whose
//! activations ended holds no access: each one's last target call is a revoke after its last grant.
//! Beside the activations, the load submits access requests for roles with a sunset one simulated
//! minute ahead: every acknowledged item ends, and every role's last target call is a revoke.
//!
//! The child re-executes this test binary (the `child` test, inert without its environment
//! variable). Time runs on a scaled clock shared by every child through the file system: one real
//! millisecond is one simulated second, so one-minute activations expire in 60 ms and a restarted
//! child never sees time go backwards.
//!
//! The load also extends and deactivates, and every acknowledgement (activate, extend,
//! deactivate, access request) is checked after the last round. The target fails one call in
//! five (deterministically, by idempotency key), so revokes retry across the kills.
//!
//! Time is asserted on the simulated clock: the target records when each call reached it, and
//! each activation that expired was revoked no earlier than its expiry and no later than its
//! expiry plus the time no child was serving (between a kill and the next child's ready line)
//! plus [`LAG_BOUND`]. Rounds are `JITFLOW_KILL_ROUNDS` (default 8).

#![allow(
    clippy::print_stdout,
    reason = "the child reports to the parent on stdout"
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jitflow::Engine;
use jitflow::clock::Clock;
use jitflow::hooks::{BoxFuture, EffectRequest, Holding, ItemRequest, ProvisionError, Provisioner};
use jitflow::requests::Rights;
use jitflow::{Payload, Stream};
use jitflow_core::activation::EndReason;
use jitflow_core::connection::ConnectionState;
use jitflow_core::id::{ActivationId, ConnectionId, IdentityId, ObjectId, RequestItemId};
use jitflow_core::lifecycle::Change;
use jitflow_core::request::submit::{ObjectKind, ObjectRef, RequestedItem};
use jitflow_core::request::{RequestType, Submission};
use jitflow_core::time::{Minutes, Timestamp};
use jitflow_store::timers::Due;

const ENV_DIR: &str = "JITFLOW_KILL_CHILD_DIR";
const ENV_MODE: &str = "JITFLOW_KILL_CHILD_MODE";
const CONNECTIONS: u128 = 40;
/// Roles the access requests ask for.
const ROLES: u64 = 6;
/// Simulated milliseconds per real millisecond.
const SPEED: u64 = 1000;
/// The most an expired activation's revoke may trail its expiry, beyond the time no child was
/// serving, in simulated time. One simulated second is one real millisecond, so this is 3 real
/// seconds of timer lag, retries of the target's injected failures and a loaded machine
/// (measured worst over 8 rounds: 83 simulated s).
const LAG_BOUND: Duration = Duration::from_secs(3_000);
/// The target fails one call in this many (by idempotency key).
const FAIL_ONE_IN: u64 = 5;
/// Rounds of load and SIGKILL: `JITFLOW_KILL_ROUNDS`, default 8.
fn rounds() -> usize {
    std::env::var("JITFLOW_KILL_ROUNDS").map_or(8, |v| {
        v.parse()
            .expect("JITFLOW_KILL_ROUNDS is a number of rounds")
    })
}

/// Whether the target fails the call with this idempotency key (a fixed one in
/// [`FAIL_ONE_IN`], so a retry, which has another key, may pass).
fn fails(key: &str) -> bool {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    hash.is_multiple_of(FAIL_ONE_IN)
}

/// `origin + (wall time since origin_wall) * SPEED`: monotonic across child processes.
struct ScaledClock {
    origin_wall: SystemTime,
    origin: Timestamp,
}

impl ScaledClock {
    fn load(dir: &Path) -> ScaledClock {
        let text = std::fs::read_to_string(dir.join("clock")).expect("clock file");
        let wall_ms: u64 = text.trim().parse().expect("clock origin");
        ScaledClock {
            origin_wall: SystemTime::UNIX_EPOCH + Duration::from_millis(wall_ms),
            origin: Timestamp::from_millis(common::START).unwrap(),
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> Timestamp {
        let real = SystemTime::now()
            .duration_since(self.origin_wall)
            .unwrap_or_default();
        self.origin.saturating_add(real * SPEED as u32)
    }

    fn sleep_until(&self, due: Timestamp) -> BoxFuture<'static, ()> {
        let wait = due.since(self.now()) / SPEED as u32;
        Box::pin(tokio::time::sleep(wait + Duration::from_millis(1)))
    }
}

/// Appends `grant <connection> <key> <simulated ms>` / `revoke ...` lines for the calls that
/// succeed, flushed before answering; fails the calls [`fails`] picks.
struct FileTarget {
    file: Mutex<std::fs::File>,
    clock: ScaledClock,
}

impl FileTarget {
    fn answer(&self, op: &'static str, request: &EffectRequest) -> Result<(), ProvisionError> {
        if fails(&request.idempotency_key) {
            return Err(ProvisionError::transient(format!("{op} failed (injected)")));
        }
        self.record(op, request);
        Ok(())
    }

    fn record(&self, op: &str, request: &EffectRequest) {
        // One write(2) of a short line to an O_APPEND file: a kill cannot tear it.
        let line = format!(
            "{op} {} {} {}\n",
            request.connection.id,
            request.idempotency_key,
            self.clock.now().as_millis()
        );
        self.file
            .lock()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }

    fn answer_item(&self, op: &'static str, request: &ItemRequest) -> Result<(), ProvisionError> {
        if fails(&request.idempotency_key) {
            return Err(ProvisionError::transient(format!("{op} failed (injected)")));
        }
        self.record_item(op, request);
        Ok(())
    }

    /// Records a role's grant or revoke, keyed by the role (the access), not the item.
    fn record_item(&self, op: &str, request: &ItemRequest) {
        let line = format!(
            "{op} {} {} {}\n",
            request.item.object.id,
            request.idempotency_key,
            self.clock.now().as_millis()
        );
        self.file
            .lock()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }
}

impl Provisioner for FileTarget {
    fn grant(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        let answer = self.answer("grant", &request);
        Box::pin(async { answer })
    }

    fn revoke(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        let answer = self.answer("revoke", &request);
        Box::pin(async { answer })
    }

    fn grant_item(&self, request: ItemRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        let answer = self.answer_item("grant", &request);
        Box::pin(async { answer })
    }

    fn revoke_item(&self, request: ItemRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        let answer = self.answer_item("revoke", &request);
        Box::pin(async { answer })
    }
}

/// A grant of role `n` for dave, removed one simulated minute after `now`.
fn role_request(n: u64, now: Timestamp) -> Submission {
    Submission {
        request_type: RequestType::Grant,
        requested_for: Some(vec![IdentityId::parse("dave").unwrap()]),
        requested_items: Some(vec![RequestedItem {
            object: Some(ObjectRef {
                kind: ObjectKind::Role,
                id: ObjectId::parse(&format!("role-{n}")).unwrap(),
            }),
            remove_date: Some(now.plus_minutes(Minutes(1))),
            ..Default::default()
        }]),
        requested_for_with_items: None,
        client_metadata: Default::default(),
    }
}

async fn open_child_engine(dir: &Path) -> Engine {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("target.log"))
        .unwrap();
    Engine::builder(dir.join("engine.redb"))
        .config(common::config())
        .clock(ScaledClock::load(dir))
        .provisioner(FileTarget {
            file: Mutex::new(file),
            clock: ScaledClock::load(dir),
        })
        .open()
        .await
        .expect("child engine opens")
}

/// The child's body: register the connections (once), then activate and deactivate at random,
/// printing `ack <connection> <activation>` after each acknowledged activation.
async fn child_load(dir: &Path) {
    let engine = open_child_engine(dir).await;
    let caller = common::caller();
    if engine.policy(&caller.tenant).unwrap().is_none() {
        engine.put_policy(&caller, common::policy()).await.unwrap();
    }
    for n in 0..CONNECTIONS {
        let id = common::conn(n);
        if engine.connection(&caller.tenant, id).unwrap().is_none() {
            engine.register(&caller, common::spec(id)).await.unwrap();
        }
    }
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    {
        let mut out = stdout.lock().unwrap();
        writeln!(out, "ready").unwrap();
        out.flush().unwrap();
    }
    let mut seed = std::process::id() as u64;
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let engine = engine.clone();
        let caller = caller.clone();
        let stdout = Arc::clone(&stdout);
        seed = jitflow_core::backoff::splitmix64(seed ^ worker);
        let mut rng = seed;
        tasks.push(tokio::spawn(async move {
            loop {
                rng = jitflow_core::backoff::splitmix64(rng);
                // Other bits than those that pick the command, so that every command meets
                // every connection (the low bits alone would pair deactivations with
                // connections that are never activated).
                let id = common::conn(u128::from((rng >> 32) % CONNECTIONS as u64));
                if rng % 8 == 1 {
                    let submission = role_request(rng % ROLES, engine.now());
                    if let Ok((_, items)) = engine
                        .submit_request(&caller, Rights::Admin, &submission)
                        .await
                    {
                        let mut out = stdout.lock().unwrap();
                        writeln!(out, "item {}", items[0].id()).unwrap();
                        out.flush().unwrap();
                    }
                } else if rng.is_multiple_of(4) {
                    if let Ok(a) = engine.deactivate(&caller, id, None, None).await {
                        let mut out = stdout.lock().unwrap();
                        writeln!(out, "deact {id} {}", a.id).unwrap();
                        out.flush().unwrap();
                    }
                } else if rng % 8 == 2 {
                    if let Ok(a) = engine
                        .extend(&caller, id, Some(Minutes(1)), None, None)
                        .await
                    {
                        let expires = a.expires_at.expect("an extended activation expires");
                        let mut out = stdout.lock().unwrap();
                        writeln!(out, "ext {id} {} {}", a.id, expires.as_millis()).unwrap();
                        out.flush().unwrap();
                    }
                } else if let Ok(a) = engine
                    .activate(&caller, id, Some(Minutes(1)), None, None)
                    .await
                {
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ack {id} {}", a.id).unwrap();
                    out.flush().unwrap();
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The child's last run: no new signals; wait until every connection is at rest, then report.
async fn child_drain(dir: &Path) {
    let engine = open_child_engine(dir).await;
    println!("ready");
    let caller = common::caller();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let busy = (0..CONNECTIONS)
            .filter_map(|n| engine.connection(&caller.tenant, common::conn(n)).unwrap())
            .filter(|c| !c.state.is_at_rest())
            .count();
        // Items are done when none has a timer (every item has a sunset) or an effect left.
        let reader = engine.snapshot().unwrap();
        let items_busy = reader.request_intents(None, 1).unwrap().len()
            + (reader.due_timers(None, None, 10_000).unwrap().iter())
                .filter(|d| matches!(d, Due::Item(_)))
                .count();
        drop(reader);
        if busy == 0 && items_busy == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{busy} connections never came to rest"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.shutdown().await;
    println!("drained");
}

/// Connections the SIGSTOP test activates.
const STOPPED: u128 = 5;

/// The SIGSTOP test's child: activates [`STOPPED`] connections for ten simulated minutes,
/// reports each acknowledgement, then idles (its engine keeps running) until killed.
async fn child_stop(dir: &Path) {
    let engine = open_child_engine(dir).await;
    let caller = common::caller();
    engine.put_policy(&caller, common::policy()).await.unwrap();
    for n in 0..STOPPED {
        let id = common::conn(n);
        engine.register(&caller, common::spec(id)).await.unwrap();
        let a = engine
            .activate(&caller, id, Some(Minutes(10)), None, None)
            .await
            .unwrap();
        println!("ack {id} {}", a.id);
    }
    std::future::pending::<()>().await;
}

/// Connections the reconciliation child walks.
const WALKED: u128 = 3000;

/// Appends `inspect <connection>` for every inspection (one write(2) each: a kill cannot tear
/// it) and answers that the target does not hold the access (the connections are at rest, so
/// nothing disagrees: the pass only walks).
struct InspectLog(Mutex<std::fs::File>);

impl Provisioner for InspectLog {
    fn grant(&self, _request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async { Ok(()) })
    }

    fn revoke(&self, _request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async { Ok(()) })
    }

    fn inspect(&self, request: EffectRequest) -> BoxFuture<'_, Result<Holding, ProvisionError>> {
        let line = format!("inspect {}\n", request.connection.id);
        self.0.lock().unwrap().write_all(line.as_bytes()).unwrap();
        Box::pin(async { Ok(Holding::NotHeld) })
    }
}

/// The reconciliation child: registers [`WALKED`] connections once (with the pass off), prints
/// `resume <n>`, the connections done its pass's durable cursor says (read before the engine
/// opens, so exactly what the last child saved), then runs the pass (3000 a second) and prints
/// `passed` once it completed; it then idles until killed.
async fn child_reconcile(dir: &Path) {
    let path = dir.join("reconcile.redb");
    let caller = common::caller();
    if !path.exists() {
        let engine = Engine::builder(&path)
            .provisioner(common::Target::default())
            .open()
            .await
            .unwrap();
        engine.put_policy(&caller, common::policy()).await.unwrap();
        let specs: Vec<_> = (0..WALKED).map(|n| common::spec(common::conn(n))).collect();
        for chunk in specs.chunks(1000) {
            for r in engine.import(&caller, chunk.to_vec()).await.unwrap() {
                r.unwrap();
            }
        }
        engine.shutdown().await;
    }
    let cursor = {
        let store = jitflow_store::Store::open(&path, Default::default()).unwrap();
        store.reader().unwrap().cursor("reconcile").unwrap()
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("inspect.log"))
        .unwrap();
    (&file).write_all(b"child\n").unwrap();
    println!("resume {}", cursor & 0xffff_ffff);
    let config = jitflow::Config {
        reconcile_rate: 3000,
        reconcile_in_flight: 4,
        ..common::config()
    };
    let engine = Engine::builder(&path)
        .config(config)
        .provisioner(InspectLog(Mutex::new(file)))
        .open()
        .await
        .unwrap();
    while engine
        .metrics()
        .reconcile_passes
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("passed");
    std::future::pending::<()>().await;
}

/// The background reconciliation under SIGKILL (issue 16): a child walks [`WALKED`]
/// connections and is killed in the middle of its pass, several times. Each new child resumes
/// from the durable cursor the killed one saved: it never inspects a connection before that
/// position again, the positions only grow, and the last child completes the pass with every
/// connection inspected at least once.
#[test]
fn sigkill_during_a_reconciliation_pass_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = || std::fs::read_to_string(dir.path().join("inspect.log")).unwrap_or_default();
    let inspected = |text: &str| text.lines().filter(|l| l.starts_with("inspect ")).count();
    // Waits for the child's line starting with `word`; returns its number (0 if none).
    let expect = |lines: &mut std::io::Lines<BufReader<std::process::ChildStdout>>, word: &str| {
        for line in lines.map_while(Result::ok) {
            let line = line.rsplit_once("... ").map_or(line.as_str(), |(_, l)| l);
            if let Some(rest) = line.strip_prefix(word) {
                return rest.trim().parse::<u64>().unwrap_or(0);
            }
        }
        panic!("the child ended before saying `{word}`");
    };
    let mut resumes = Vec::new();
    for round in 0..5u64 {
        let mut child = spawn_child(dir.path(), "reconcile");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        resumes.push(expect(&mut lines, "resume"));
        // Kill it in the middle of its pass: some hundreds of inspections after it resumed.
        let before = inspected(&log());
        let deadline = Instant::now() + Duration::from_secs(60);
        while inspected(&log()) < before + 250 + 50 * round as usize {
            assert!(Instant::now() < deadline, "round {round}: the pass stalled");
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let mut child = spawn_child(dir.path(), "reconcile");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    resumes.push(expect(&mut lines, "resume"));
    expect(&mut lines, "passed");
    child.kill().unwrap();
    child.wait().unwrap();

    // One segment of inspections per child, in the order the children ran.
    let text = log();
    let segments: Vec<Vec<u128>> = text
        .split("child\n")
        .skip(1)
        .map(|segment| {
            segment
                .lines()
                .filter_map(|l| l.strip_prefix("inspect "))
                .map(|id| ConnectionId::parse(id).unwrap().as_u128() - common::conn(0).as_u128())
                .collect()
        })
        .collect();
    assert_eq!(segments.len(), resumes.len());
    assert!(
        resumes.windows(2).all(|w| w[0] <= w[1]),
        "the saved position never goes back: {resumes:?}"
    );
    assert!(
        resumes[1..].iter().any(|r| *r > 0) && *resumes.last().unwrap() < WALKED as u64,
        "the kills fell in the middle of the pass: {resumes:?}"
    );
    let mut seen = HashSet::new();
    for (child, (segment, resume)) in segments.iter().zip(&resumes).enumerate() {
        for n in segment {
            assert!(
                *n >= u128::from(*resume),
                "child {child} inspected connection {n}, before its saved position {resume}"
            );
            seen.insert(*n);
        }
    }
    assert_eq!(seen.len(), WALKED as usize, "every connection inspected");
    let total: usize = segments.iter().map(Vec::len).sum();
    eprintln!(
        "reconcile under SIGKILL: {} children, resumed at {resumes:?}, {total} inspections for {WALKED} connections",
        resumes.len()
    );
}

#[test]
fn child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return; // Inert unless run by `sigkill_at_random_moments`.
    };
    let dir = PathBuf::from(dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match std::env::var(ENV_MODE).as_deref() {
        Ok("drain") => runtime.block_on(child_drain(&dir)),
        Ok("stop") => runtime.block_on(child_stop(&dir)),
        Ok("reconcile") => runtime.block_on(child_reconcile(&dir)),
        _ => runtime.block_on(child_load(&dir)),
    }
}

fn spawn_child(dir: &Path, mode: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(ENV_DIR, dir)
        .env(ENV_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// One line a child reported, with the wall time (ms since the epoch) the parent read it.
#[derive(Debug)]
enum Report {
    Ready,
    Activated(ConnectionId, ActivationId),
    Extended(ConnectionId, ActivationId, u64),
    Deactivated(ConnectionId, ActivationId),
    Item(RequestItemId),
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn parse_report(line: &str) -> Option<Report> {
    // The test harness prints `test child ... ` without a newline before the child's first
    // line.
    let line = line.rsplit_once("... ").map_or(line, |(_, rest)| rest);
    let mut parts = line.split_whitespace();
    let kind = parts.next()?;
    let mut ids = || {
        Some((
            ConnectionId::parse(parts.next()?).ok()?,
            ActivationId::parse(parts.next()?).ok()?,
            parts.next().and_then(|n| n.parse().ok()),
        ))
    };
    Some(match kind {
        "ready" => Report::Ready,
        "ack" => ids().map(|(c, a, _)| Report::Activated(c, a))?,
        "ext" => ids().and_then(|(c, a, e)| Some(Report::Extended(c, a, e?)))?,
        "deact" => ids().map(|(c, a, _)| Report::Deactivated(c, a))?,
        "item" => Report::Item(RequestItemId::parse(line.split_whitespace().nth(1)?).ok()?),
        _ => return None,
    })
}

/// Reads a child's reports as they come, each with the wall time it arrived.
fn read_reports(child: &mut std::process::Child) -> std::thread::JoinHandle<Vec<(u64, Report)>> {
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| Some((wall_ms(), parse_report(&line)?)))
            .collect()
    })
}

#[test]
fn sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let origin_wall = wall_ms();
    std::fs::write(dir.path().join("clock"), origin_wall.to_string()).unwrap();
    let simulated = |wall: u64| common::START + wall.saturating_sub(origin_wall) * SPEED;
    let mut acked: HashSet<(ConnectionId, ActivationId)> = HashSet::new();
    let mut extended: Vec<(ConnectionId, ActivationId, u64)> = Vec::new();
    let mut deactivated: Vec<(ConnectionId, ActivationId)> = Vec::new();
    let mut acked_items: HashSet<RequestItemId> = HashSet::new();
    // Simulated intervals during which no child served: from a kill (or the start) to the next
    // child's ready line.
    let mut down: Vec<(u64, u64)> = Vec::new();
    let mut down_since = simulated(origin_wall);
    let mut rng = 0x5eed_u64;
    let rounds = rounds();
    for round in 0..rounds {
        let mut child = spawn_child(dir.path(), "load");
        let reader = read_reports(&mut child);
        rng = jitflow_core::backoff::splitmix64(rng);
        std::thread::sleep(Duration::from_millis(150 + rng % 350));
        child.kill().unwrap(); // SIGKILL on Unix.
        let killed = wall_ms();
        child.wait().unwrap();
        let reports = reader.join().unwrap();
        let mut counts = [0usize; 4];
        let mut served = false;
        for (at, report) in reports {
            match report {
                Report::Ready => {
                    down.push((down_since, simulated(at)));
                    served = true;
                }
                Report::Activated(c, a) => {
                    counts[0] += 1;
                    acked.insert((c, a));
                }
                Report::Extended(c, a, e) => {
                    counts[1] += 1;
                    extended.push((c, a, e));
                }
                Report::Deactivated(c, a) => {
                    counts[2] += 1;
                    deactivated.push((c, a));
                }
                Report::Item(id) => {
                    counts[3] += 1;
                    acked_items.insert(id);
                }
            }
        }
        // A child killed before it was ready served nothing: the outage goes on.
        if served {
            down_since = simulated(killed);
        }
        eprintln!(
            "round {round}: acknowledged {} activations, {} extends, {} deactivations, {} \
             access request items",
            counts[0], counts[1], counts[2], counts[3]
        );
    }
    assert!(
        !acked.is_empty(),
        "the load produced no acknowledged activation"
    );

    let mut drain = spawn_child(dir.path(), "drain");
    let reader = read_reports(&mut drain);
    assert!(drain.wait().unwrap().success(), "the drain child failed");
    let ready = reader
        .join()
        .unwrap()
        .into_iter()
        .find_map(|(at, r)| match r {
            Report::Ready => Some(at),
            _ => None,
        });
    down.push((
        down_since,
        simulated(ready.expect("the drain child never opened")),
    ));

    // Nothing acknowledged was lost.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let expired = runtime.block_on(async {
        let engine = open_child_engine(dir.path()).await;
        let tenant = common::caller().tenant;
        let mut expired = Vec::new();
        for (c, a) in &acked {
            let activation = engine.activation(&tenant, *a).unwrap();
            let activation =
                activation.unwrap_or_else(|| panic!("acknowledged activation {a} lost"));
            assert_eq!(activation.connection, *c);
            assert!(
                activation.status.is_terminal(),
                "{a} never ended: {activation:?}"
            );
            if activation.end_reason == Some(EndReason::Expired) {
                let expiry = activation
                    .expires_at
                    .expect("an expired activation had an expiry");
                expired.push((*a, expiry.as_millis()));
            }
        }
        // Every acknowledged extend and deactivate is in its activation's stream.
        let changes = |a: ActivationId| -> Vec<Change> {
            let events = engine
                .history(&tenant, Stream::Activation(a), 0, jitflow::MAX_PAGE)
                .unwrap();
            events
                .into_iter()
                .filter_map(|e| match e.envelope.payload {
                    Payload::Connection(event) => Some(event.change),
                    _ => None,
                })
                .collect()
        };
        for (c, a, expires) in &extended {
            assert!(acked.contains(&(*c, *a)) || engine.activation(&tenant, *a).unwrap().is_some());
            assert!(
                changes(*a).iter().any(|ch| matches!(
                    ch,
                    Change::Extended { expires_at, .. } if expires_at.as_millis() == *expires
                )),
                "acknowledged extend of {a} to {expires} lost"
            );
        }
        for (_, a) in &deactivated {
            assert!(
                changes(*a)
                    .iter()
                    .any(|ch| matches!(ch, Change::DeactivationRequested)),
                "acknowledged deactivation of {a} lost"
            );
        }
        let report = engine.verify().unwrap();
        assert!(report.is_clean(), "{:#?}", report.differences);
        for id in &acked_items {
            let item = engine.request_item(&tenant, *id).unwrap();
            let item = item.unwrap_or_else(|| panic!("acknowledged item {id} lost"));
            assert!(item.status.is_terminal(), "{id} never ended: {item:?}");
        }
        for n in 0..CONNECTIONS {
            let c = engine
                .connection(&tenant, common::conn(n))
                .unwrap()
                .unwrap();
            assert!(matches!(
                c.state,
                ConnectionState::Available | ConnectionState::Expired
            ));
        }
        engine.shutdown().await;
        expired
    });

    // Every grant was followed by a revoke: no access outlived its activation.
    let log = std::fs::read_to_string(dir.path().join("target.log")).unwrap();
    let mut last: HashMap<&str, &str> = HashMap::new();
    // The first successful revoke of each activation, at its simulated time.
    let mut revoked_at: HashMap<&str, u64> = HashMap::new();
    for line in log.lines() {
        let mut parts = line.split_whitespace();
        let (Some(op), Some(conn), Some(key), Some(at)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            panic!("torn target log line {line:?}");
        };
        last.insert(conn, op);
        if op == "revoke"
            && let Some((activation, _)) = key.split_once(":revoke:")
        {
            let at: u64 = at.parse().expect("a simulated time");
            revoked_at.entry(activation).or_insert(at);
        }
    }

    // Time: never early, and late only by the time no child served plus the bound.
    let down_within = |from: u64, to: u64| -> u64 {
        down.iter()
            .map(|(s, e)| e.min(&to).saturating_sub(*s.max(&from)))
            .sum()
    };
    let (mut worst_late, mut checked) = (0u64, 0usize);
    for (a, expiry) in &expired {
        let Some(at) = revoked_at.get(a.to_string().as_str()).copied() else {
            // Expired before its grant reached the target (the grant failed, then the expiry
            // came): nothing was held, so there is nothing to revoke.
            continue;
        };
        checked += 1;
        assert!(
            at >= *expiry,
            "activation {a} revoked {} ms early",
            expiry - at
        );
        let late = (at - expiry).saturating_sub(down_within(*expiry, at));
        worst_late = worst_late.max(late);
        assert!(
            Duration::from_millis(late) <= LAG_BOUND,
            "activation {a} revoked {late} simulated ms after its expiry beyond the downtime"
        );
    }
    assert!(checked > 0, "no expired activation's revoke was checked");
    eprintln!(
        "time: {checked} expired activations revoked, none early; worst lateness beyond \
         downtime {} simulated s (bound {} s); downtime {} simulated s in {} intervals",
        worst_late / 1000,
        LAG_BOUND.as_secs(),
        down.iter().map(|(s, e)| e - s).sum::<u64>() / 1000,
        down.len()
    );
    let grants = log.lines().filter(|l| l.starts_with("grant")).count();
    assert!(grants > 0, "no grant reached the target");
    for (conn, op) in &last {
        assert_eq!(
            *op, "revoke",
            "connection {conn} still holds access after its activations ended"
        );
    }
    assert!(
        !acked_items.is_empty(),
        "the load submitted no access request"
    );
    eprintln!(
        "{rounds} rounds: {} acknowledged activations, {} extends, {} deactivations, {} access \
         request items, {grants} grants, all revoked",
        acked.len(),
        extended.len(),
        deactivated.len(),
        acked_items.len()
    );
}

/// The target's successful calls of `op` so far: (connection, simulated ms).
fn target_calls(dir: &Path, op: &str) -> Vec<(String, u64)> {
    let log = std::fs::read_to_string(dir.join("target.log")).unwrap_or_default();
    log.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            (parts.len() == 4 && parts[0] == op)
                .then(|| (parts[1].to_owned(), parts[3].parse().unwrap()))
        })
        .collect()
}

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {name} failed");
}

/// SIGSTOP the engine's process while its activations are granted, past their expiry, then
/// SIGCONT: every access is revoked no earlier than its expiry and soon after the process runs
/// again (time went on while it was stopped; the scheduler's capped sleeps notice).
#[test]
fn sigstop_past_expiry_then_sigcont_revokes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let origin_wall = wall_ms();
    std::fs::write(dir.path().join("clock"), origin_wall.to_string()).unwrap();
    let simulated = |wall: u64| common::START + wall.saturating_sub(origin_wall) * SPEED;
    let mut child = spawn_child(dir.path(), "stop");
    let deadline = Instant::now() + Duration::from_secs(30);
    while target_calls(dir.path(), "grant").len() < STOPPED as usize {
        assert!(
            Instant::now() < deadline,
            "the grants never reached the target"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let stopped = simulated(wall_ms());
    signal(&child, "-STOP");
    // Stopped for 1500 simulated seconds, past the ten-minute activations.
    std::thread::sleep(Duration::from_millis(1500));
    let resumed = simulated(wall_ms());
    signal(&child, "-CONT");
    while target_calls(dir.path(), "revoke").len() < STOPPED as usize {
        assert!(
            Instant::now() < deadline,
            "the revokes never reached the target"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let expiries: HashMap<String, u64> = runtime.block_on(async {
        let engine = open_child_engine(dir.path()).await;
        let tenant = common::caller().tenant;
        let expiries = (0..STOPPED)
            .map(|n| {
                let c = engine
                    .connection(&tenant, common::conn(n))
                    .unwrap()
                    .unwrap();
                (c.id().to_string(), c.jit.expiration.unwrap().as_millis())
            })
            .collect();
        engine.shutdown().await;
        expiries
    });
    for (connection, at) in target_calls(dir.path(), "revoke") {
        let expiry = expiries[&connection];
        assert!(
            at >= expiry,
            "{connection} revoked {} ms early",
            expiry - at
        );
        assert!(
            at <= stopped || at >= resumed,
            "{connection} revoked while its process was stopped"
        );
        assert!(
            expiry > stopped,
            "{connection} expired before the stop: the test is too slow"
        );
        // Due at the later of its expiry and the resume.
        let late = Duration::from_millis(at.saturating_sub(expiry.max(resumed)));
        assert!(
            late <= LAG_BOUND,
            "{connection} revoked {late:?} (simulated) after it was due and the process ran"
        );
        eprintln!(
            "{connection}: expired {} simulated s before the resume, revoked {late:?} \
             (simulated) after it was due and the process ran",
            resumed.saturating_sub(expiry) / 1000,
        );
    }
}
