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
//! No assertion is about timing: the parent waits for the child to report, with a generous
//! timeout as a guard against hangs.

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
use jitflow::hooks::{BoxFuture, EffectRequest, ItemRequest, ProvisionError, Provisioner};
use jitflow::requests::Rights;
use jitflow_core::connection::ConnectionState;
use jitflow_core::id::{ActivationId, ConnectionId, IdentityId, ObjectId, RequestItemId};
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

/// Appends `grant <connection>` / `revoke <connection>` lines, flushed before answering.
struct FileTarget {
    file: Mutex<std::fs::File>,
}

impl FileTarget {
    fn record(&self, op: &str, request: &EffectRequest) {
        // One write(2) of a short line to an O_APPEND file: a kill cannot tear it.
        let line = format!(
            "{op} {} {}\n",
            request.connection.id, request.idempotency_key
        );
        self.file
            .lock()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
    }

    /// Records a role's grant or revoke, keyed by the role (the access), not the item.
    fn record_item(&self, op: &str, request: &ItemRequest) {
        let line = format!(
            "{op} {} {}\n",
            request.item.object.id, request.idempotency_key
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
        self.record("grant", &request);
        Box::pin(async { Ok(()) })
    }

    fn revoke(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        self.record("revoke", &request);
        Box::pin(async { Ok(()) })
    }

    fn grant_item(&self, request: ItemRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        self.record_item("grant", &request);
        Box::pin(async { Ok(()) })
    }

    fn revoke_item(&self, request: ItemRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        self.record_item("revoke", &request);
        Box::pin(async { Ok(()) })
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
                let id = common::conn(u128::from(rng % CONNECTIONS as u64));
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
                    let _ = engine.deactivate(&caller, id, None).await;
                } else if let Ok(a) = engine.activate(&caller, id, Some(Minutes(1)), None).await {
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
    let caller = common::caller();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let busy = (0..CONNECTIONS)
            .filter_map(|n| engine.connection(&caller.tenant, common::conn(n)).unwrap())
            .filter(|c| !c.state.is_at_rest())
            .count();
        // Items are done when none has a timer (every item has a sunset) or an effect left.
        let reader = engine.store().reader().unwrap();
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

#[test]
fn sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::fs::write(dir.path().join("clock"), wall.to_string()).unwrap();
    let mut acked: HashSet<(ConnectionId, ActivationId)> = HashSet::new();
    let mut acked_items: HashSet<RequestItemId> = HashSet::new();
    let mut rng = 0x5eed_u64;
    const ROUNDS: usize = 8;
    for round in 0..ROUNDS {
        let mut child = spawn_child(dir.path(), "load");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| {
                    let mut parts = line.split_whitespace();
                    match parts.next()? {
                        "ack" => {
                            let c = ConnectionId::parse(parts.next()?).ok()?;
                            let a = ActivationId::parse(parts.next()?).ok()?;
                            Some(Ok((c, a)))
                        }
                        "item" => Some(Err(RequestItemId::parse(parts.next()?).ok()?)),
                        _ => None,
                    }
                })
                .collect::<Vec<_>>()
        });
        rng = jitflow_core::backoff::splitmix64(rng);
        std::thread::sleep(Duration::from_millis(150 + rng % 350));
        child.kill().unwrap(); // SIGKILL on Unix.
        child.wait().unwrap();
        let (round_acks, round_items): (Vec<_>, Vec<_>) =
            reader.join().unwrap().into_iter().partition(Result::is_ok);
        eprintln!(
            "round {round}: {} acknowledged activations, {} access request items",
            round_acks.len(),
            round_items.len()
        );
        acked.extend(round_acks.into_iter().filter_map(Result::ok));
        acked_items.extend(round_items.into_iter().filter_map(Result::err));
    }
    assert!(
        !acked.is_empty(),
        "the load produced no acknowledged activation"
    );

    let mut drain = spawn_child(dir.path(), "drain");
    let mut out = String::new();
    std::io::Read::read_to_string(drain.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(drain.wait().unwrap().success(), "drain child failed: {out}");
    assert!(out.contains("drained"), "{out}");

    // Nothing acknowledged was lost.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let engine = open_child_engine(dir.path()).await;
        let tenant = common::caller().tenant;
        for (c, a) in &acked {
            let activation = engine.activation(&tenant, *a).unwrap();
            let activation =
                activation.unwrap_or_else(|| panic!("acknowledged activation {a} lost"));
            assert_eq!(activation.connection, *c);
            assert!(
                activation.status.is_terminal(),
                "{a} never ended: {activation:?}"
            );
        }
        let report = engine.store().verify().unwrap();
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
    });

    // Every grant was followed by a revoke: no access outlived its activation.
    let log = std::fs::read_to_string(dir.path().join("target.log")).unwrap();
    let mut last: HashMap<&str, &str> = HashMap::new();
    for line in log.lines() {
        let mut parts = line.split_whitespace();
        let (Some(op), Some(conn)) = (parts.next(), parts.next()) else {
            panic!("torn target log line {line:?}");
        };
        last.insert(conn, op);
    }
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
        "{} acknowledged activations, {} access request items, {grants} grants, all revoked",
        acked.len(),
        acked_items.len()
    );
}
