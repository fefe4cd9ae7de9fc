//! Three shims on one PostgreSQL database (`--store`), tenants spread over [`PARTITIONS`]
//! partitions: each shim serves the partitions it leases and answers the others' tenants with
//! a 503 naming the owner, which the test's client follows. Under a load of activations, a
//! shim is SIGKILLed at varying moments, round after round (at least `JITFLOW_FAILOVER_ROUNDS`,
//! default 3, and for as long as the short activations take to expire): its partitions must
//! move to the others within the lease (plus the time to open), and it comes back and takes
//! its share again. Last, one shim is stopped cleanly (SIGTERM) under load, and the others
//! serve its partitions (it hands them over; the time is printed).
//!
//! At the end, with every shim stopped, each partition's store is opened on the database:
//! every activation any shim acknowledged is in it; every expired activation's revoke started
//! no earlier than its expiry; every one-minute activation has ended, no later than its
//! expiry plus [`LATE_BOUND`] (the lease, the takeover and the timer's lag, whatever shim was
//! down then), by the store and by the demo target's own log of its calls; the target ran each
//! activation's grant and revoke under one idempotency key; and `verify` is clean.
//!
//! Needs PostgreSQL (`initdb`, `postgres`): skipped where it is missing, failed under `CI`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jitflow_core::activation::EndReason;
use jitflow_core::id::{ActivationId, TenantId};
use jitflow_core::time::Timestamp;
use jitflow_shim::auth::{Keys, Level};
use jitflow_store::backend::Partition;
use jitflow_store_pg::testing::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_jitflow-shim");
/// The lease the shims take: short, so a round is short.
const LEASE: Duration = Duration::from_secs(2);
/// The partitions tenants are spread over: more than the shims, so each serves some.
const PARTITIONS: u32 = 4;
/// Tenants per partition.
const TENANTS_PER_PARTITION: usize = 2;
/// Connections per tenant: the first [`SHORT`] get one one-minute activation each (they must
/// expire during the test, across the kills); the others carry the load of 10-hour ones.
const CONNECTIONS: usize = 30;
const SHORT: usize = 4;
/// How long a takeover may take before the test fails: the lease, a shim's open, and a
/// generous margin for a loaded machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);
/// The most an expired activation's end may trail its expiry: the lease (its partition's shim
/// may have just died), a heartbeat round, the open and replay, and the timer's lag, with a
/// margin for a loaded machine.
const LATE_BOUND: Duration = Duration::from_secs(15);

fn rounds() -> usize {
    std::env::var("JITFLOW_FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Tenants covering every partition, [`TENANTS_PER_PARTITION`] each.
fn tenants() -> Vec<String> {
    let mut per: HashMap<u32, usize> = HashMap::new();
    let mut tenants = Vec::new();
    for i in 0.. {
        let t = format!("ha{i}");
        let n = per
            .entry(Partition::of_tenant(&t, PARTITIONS).0)
            .or_default();
        if *n < TENANTS_PER_PARTITION {
            *n += 1;
            tenants.push(t);
        }
        if tenants.len() == TENANTS_PER_PARTITION * PARTITIONS as usize {
            return tenants;
        }
    }
    unreachable!()
}

/// One shim process: its node id and port.
struct Node {
    id: String,
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, url: &str, secret: &Path, dir: &Path) {
        let data = dir.join(&self.id);
        let child = Command::new(BIN)
            .args(["serve", "--store", url, "--node-id", &self.id, "--lease"])
            .arg(format!("{}s", LEASE.as_secs()))
            .args(["--partitions", &PARTITIONS.to_string()])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--secret-file")
            .arg(secret)
            .arg("--data-dir")
            .arg(&data)
            // The demo target's calls, one JSON line each, appended across restarts: the
            // target's own account of every grant and revoke.
            .args([
                "--log",
                "warn,jitflow_shim::demo=info",
                "--log-format",
                "json",
            ])
            .env_remove("JITFLOW_SECRET")
            .env_remove("JITFLOW_LOG")
            .env_remove("JITFLOW_LOG_FORMAT")
            .env_remove("JITFLOW_LISTEN")
            .env_remove("JITFLOW_PARTITIONS")
            .env_remove("JITFLOW_ADVERTISE")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{}.log", self.id)))
                    .unwrap(),
            ))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A client that finds each tenant's shim: it asks the last one that served the tenant (or
/// any), and follows a 503's `jitflow-owner-address`.
#[derive(Clone)]
struct Routed {
    http: reqwest::Client,
    bases: Vec<String>,
    owners: Arc<Mutex<HashMap<String, String>>>,
    tokens: Arc<HashMap<String, String>>,
}

impl Routed {
    /// Sends `body` (or a GET without one) to `path` for `tenant`; the final answer's status
    /// and body, or `None` when no shim answered with anything but a moving partition.
    async fn call(
        &self,
        tenant: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Option<(u16, serde_json::Value)> {
        let cached = self.owners.lock().unwrap().get(tenant).cloned();
        let mut tries: Vec<String> = cached.into_iter().collect();
        tries.extend(self.bases.iter().cloned());
        let mut at = 0;
        while at < tries.len() && at < 8 {
            let base = tries[at].clone();
            at += 1;
            let request = match &body {
                Some(b) => self.http.post(format!("{base}{path}")).json(b),
                None => self.http.get(format!("{base}{path}")),
            };
            let Ok(response) = request
                .bearer_auth(&self.tokens[tenant])
                .timeout(Duration::from_secs(5))
                .send()
                .await
            else {
                continue;
            };
            let status = response.status().as_u16();
            if status == 503 {
                if let Some(owner) = response
                    .headers()
                    .get(jitflow_shim::error::OWNER_ADDRESS_HEADER)
                    .and_then(|v| v.to_str().ok())
                {
                    tries.insert(at, owner.to_owned());
                }
                continue;
            }
            self.owners
                .lock()
                .unwrap()
                .insert(tenant.to_owned(), base.clone());
            let value = response.json().await.unwrap_or(serde_json::Value::Null);
            return Some((status, value));
        }
        None
    }

    /// Whether every tenant's partition is served: a read of its engine answers (the
    /// connection, or before the import its absence).
    async fn all_served(&self, tenants: &[String]) -> bool {
        for t in tenants {
            let path = format!("/jitflow/v1/connections/{}", connection(t, 0));
            match self.call(t, &path, None).await {
                Some((200 | 404, _)) => {}
                Some((status, body)) => panic!("{t}: the probe answered {status}: {body}"),
                _ => return false,
            }
        }
        true
    }

    async fn wait_served(&self, tenants: &[String]) -> Duration {
        let started = Instant::now();
        while !self.all_served(tenants).await {
            assert!(
                started.elapsed() < TAKEOVER_BOUND,
                "some partition is not served {TAKEOVER_BOUND:?} on"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    }
}

/// A call the demo target received: grant or revoke, its idempotency key, and when.
#[derive(Debug, Clone)]
struct Call {
    kind: String,
    key: String,
    at: Timestamp,
}

/// Every call any shim's demo target logged (`dir/<node>.log`), by activation id (the key's
/// first part: `<activation>:<kind>:<try>`).
fn calls(dir: &Path, nodes: &[Node]) -> HashMap<String, Vec<Call>> {
    let mut calls: HashMap<String, Vec<Call>> = HashMap::new();
    for node in nodes {
        let text = std::fs::read_to_string(dir.join(format!("{}.log", node.id))).unwrap();
        for line in text.lines() {
            // A line cut by a SIGKILL is the only one that may not parse.
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["target"] != "jitflow_shim::demo" {
                continue;
            }
            let fields = &v["fields"];
            let key = fields["idempotency_key"].as_str().unwrap().to_owned();
            let call = Call {
                kind: fields["call"].as_str().unwrap().to_owned(),
                at: Timestamp::parse_rfc3339(v["timestamp"].as_str().unwrap()).unwrap(),
                key: key.clone(),
            };
            let activation = key.split(':').next().unwrap().to_owned();
            calls.entry(activation).or_default().push(call);
        }
    }
    calls
}

/// The activation id of the contract's answer (`jit-activation-<uuid>`).
fn activation_id(answer: &str) -> ActivationId {
    let uuid = answer.strip_prefix("jit-activation-").unwrap_or(answer);
    ActivationId::parse(uuid).unwrap_or_else(|e| panic!("{answer}: {e}"))
}

/// Connection `n` of `tenant` (ids are per tenant, so the tenant's number is in them).
fn connection(tenant: &str, n: usize) -> String {
    let t: u32 = tenant.trim_start_matches("ha").parse().unwrap();
    format!("{:08x}-0000-4000-8000-{:012x}", 0xfa11_0000u32 + t, n)
}

fn spec(tenant: &str, n: usize) -> serde_json::Value {
    serde_json::json!({
        "id": connection(tenant, n),
        "identityId": "loader",
        "identityName": "Loader",
        "accountId": format!("acct-{n}"),
        "accountName": format!("account {n}"),
        "entitlementId": format!("ent-{n}"),
        "entitlementName": "Admins",
        "attributeName": "memberOf",
        "attributeValue": format!("CN=Admins-{n}"),
        "privilegeLevel": "HIGH",
        "sourceId": "src-1",
        "sourceName": "Directory",
        "type": "JIT",
        "standalone": false,
    })
}

/// An acknowledged activation: its tenant, connection, and whether it lasts a minute.
#[derive(Debug, Clone)]
struct Acked {
    tenant: String,
    connection: String,
    short: bool,
}

/// Keeps the activation an accepted activate's `body` names.
fn keep(
    acked: &Mutex<HashMap<String, Acked>>,
    body: &serde_json::Value,
    tenant: &str,
    connection: String,
    short: bool,
) {
    let id = body["id"].as_str().unwrap().to_owned();
    let record = Acked {
        tenant: tenant.to_owned(),
        connection,
        short,
    };
    acked.lock().unwrap().insert(id, record);
}

fn activate(connection: &str, minutes: u32) -> serde_json::Value {
    serde_json::json!({"connectionId": connection, "activationPeriodMins": minutes})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_off_a_killed_shim_with_everything_acknowledged_and_timers_kept() {
    let Some(cluster) = Cluster::start_or_skip() else {
        return;
    };
    let url = cluster.database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{:064x}\n", 0x5eed_u128 << 64 | 0xfa11)).unwrap();
    let keys = Keys::from_file(&secret).unwrap();
    let tenants = tenants();
    let tokens: HashMap<String, String> = tenants
        .iter()
        .map(|t| {
            let token = keys
                .mint(
                    t,
                    "loader",
                    &[
                        "idn:jit-activation-workflow:manage".to_owned(),
                        "idn:entitlement-connections:manage".to_owned(),
                        "idn:entitlement-connections:list".to_owned(),
                    ],
                    &[Level::OrgAdmin],
                    Duration::from_secs(3600),
                )
                .unwrap();
            (t.clone(), token)
        })
        .collect();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|n| Node {
            id: format!("node-{n}"),
            port: free_port(),
            child: None,
        })
        .collect();
    for node in &mut nodes {
        node.start(&url, &secret, dir.path());
    }
    let client = Routed {
        http: reqwest::Client::new(),
        bases: nodes.iter().map(Node::base).collect(),
        owners: Arc::default(),
        tokens: Arc::new(tokens),
    };
    client.wait_served(&tenants).await;
    for t in &tenants {
        let specs: Vec<_> = (0..CONNECTIONS).map(|n| spec(t, n)).collect();
        let (status, body) = client
            .call(
                t,
                "/jitflow/v1/connections",
                Some(serde_json::json!({ "connections": specs })),
            )
            .await
            .expect("a shim serves the import");
        assert_eq!(status, 200, "{body}");
    }

    let acked: Arc<Mutex<HashMap<String, Acked>>> = Arc::default();
    // The one-minute activations, first: they expire while the rounds go on.
    for t in &tenants {
        for n in 0..SHORT {
            let c = connection(t, n);
            let answer = client
                .call(t, "/v2026/jit-activations/activate", Some(activate(&c, 1)))
                .await;
            let Some((202, body)) = answer else {
                panic!("{t}: activating {c} failed: {answer:?}");
            };
            keep(&acked, &body, t, c, true);
        }
    }
    let shorts_done = Instant::now();

    // The load: 10-hour activations of the other connections in turn (each acknowledged one
    // is kept), and deactivations of those found active. Refusals and failures (a shim going
    // down mid-request, a partition moving) are expected: the next turn goes on.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acked, stop, client, tenants) = (
            Arc::clone(&acked),
            Arc::clone(&stop),
            client.clone(),
            tenants.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = &tenants[n % tenants.len()];
                let c = connection(t, SHORT + (n / tenants.len()) % (CONNECTIONS - SHORT));
                n += 1;
                let answer = client
                    .call(
                        t,
                        "/v2026/jit-activations/activate",
                        Some(activate(&c, 600)),
                    )
                    .await;
                match answer {
                    Some((202, body)) => keep(&acked, &body, t, c, false),
                    Some((status, _)) if (400..500).contains(&status) => {
                        // Active from an earlier turn: end it, so the next turn activates it
                        // again and the load goes on through every round.
                        let end = serde_json::json!({"connectionId": c});
                        let _ = client
                            .call(t, "/v2026/jit-activations/deactivate", Some(end))
                            .await;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };

    // Rounds until the one-minute activations are past their expiry and its bound.
    let until = shorts_done + Duration::from_secs(60) + LATE_BOUND;
    let mut takeovers = Vec::new();
    let mut round = 0;
    while round < rounds() || Instant::now() < until {
        let victim = round % nodes.len();
        // The load goes on before the kill.
        let before = acked.lock().unwrap().len();
        let waiting = Instant::now();
        while acked.lock().unwrap().len() == before {
            assert!(
                waiting.elapsed() < TAKEOVER_BOUND,
                "round {round}: nothing is acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Kill it at a moment that depends on the round, while the load runs.
        tokio::time::sleep(Duration::from_millis(300 + 370 * (round as u64 % 4))).await;
        let mut child = nodes[victim].child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        takeovers.push(client.wait_served(&tenants).await);
        // It comes back, and takes its share again.
        nodes[victim].start(&url, &secret, dir.path());
        tokio::time::sleep(LEASE).await;
        round += 1;
    }
    // A clean stop (SIGTERM) under load hands the shim's partitions over at once: the others
    // serve them without waiting for its leases to lapse.
    client.wait_served(&tenants).await;
    let leaving = nodes[0].child.take().unwrap();
    Command::new("kill")
        .args(["-TERM", &leaving.id().to_string()])
        .status()
        .unwrap();
    let mut leaving = leaving;
    leaving.wait().unwrap();
    let handover = client.wait_served(&tenants).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    let ended = Timestamp::from_system_time(SystemTime::now()).unwrap();
    for node in &mut nodes {
        if let Some(child) = node.child.take() {
            let pid = child.id().to_string();
            Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            let mut child = child;
            child.wait().unwrap();
        }
    }
    let mut sorted = takeovers.clone();
    sorted.sort();
    eprintln!(
        "{} rounds; partitions served again after SIGKILL: p50 {:?}, max {:?} ({takeovers:?}); \
         after a SIGTERM: {handover:?}; activations acknowledged: {}",
        takeovers.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        acked.lock().unwrap().len()
    );

    // Every acknowledged activation is in its tenant's partition, on its connection; no
    // expiry fired early; every one-minute activation ended within its bound.
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.values().any(|a| !a.short),
        "the load acknowledged nothing"
    );
    let mut stores = HashMap::new();
    for p in 0..PARTITIONS {
        let mut config = jitflow_store_pg::Config::new(
            url.clone(),
            "checker",
            jitflow_store_pg::LeaseOptions::new(LEASE),
        );
        config.partition_count = PARTITIONS;
        config.partitions = vec![Partition(p)];
        let backend = jitflow_store_pg::PgBackend::open(config).unwrap();
        let options = jitflow_store::open::Options {
            partition: Partition(p),
            ..jitflow_store::open::Options::default()
        };
        let store = jitflow_store::Store::open_on(Arc::new(backend), options).unwrap();
        let report = store.verify().unwrap();
        assert!(
            report.is_clean(),
            "partition {p}: {:#?}",
            report.differences
        );
        stores.insert(p, store);
    }
    let calls = calls(dir.path(), &nodes);
    let mut worst = Duration::ZERO;
    let mut worst_target = Duration::ZERO;
    let mut expired = 0;
    for (activation, a) in &acked {
        let store = &stores[&Partition::of_tenant(&a.tenant, PARTITIONS).0];
        let tenant = TenantId::parse(&a.tenant).unwrap();
        let stored = store
            .reader()
            .unwrap()
            .activation(&tenant, activation_id(activation))
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged activation {activation} is lost"));
        assert_eq!(stored.connection.to_string(), a.connection);
        // The target ran each effect under one key: a try repeated after a takeover reuses
        // its key (the demo target never fails, so there is one try of each).
        let own = calls
            .get(&stored.id.to_string())
            .map(Vec::as_slice)
            .unwrap_or_default();
        for kind in ["grant", "revoke"] {
            let mut keys: Vec<&str> = own
                .iter()
                .filter(|c| c.kind == kind)
                .map(|c| c.key.as_str())
                .collect();
            keys.sort_unstable();
            keys.dedup();
            assert!(
                keys.len() <= 1,
                "activation {activation}: {kind}s under {keys:?}"
            );
        }
        if stored.end_reason == Some(EndReason::Expired) {
            let expiry = stored
                .expires_at
                .expect("an expired activation had an expiry");
            let started = stored.deprovision_started_at.expect("revoke started");
            assert!(
                started >= expiry,
                "activation {activation}'s revoke started {:?} before its expiry",
                expiry.since(started)
            );
            expired += 1;
        }
        if a.short {
            let expiry = stored
                .expires_at
                .expect("a granted activation has an expiry");
            assert!(
                expiry.saturating_add(LATE_BOUND) <= ended,
                "the test ended before activation {activation}'s bound"
            );
            assert_eq!(
                stored.end_reason,
                Some(EndReason::Expired),
                "{activation}: {stored:?}"
            );
            let end = stored.ended_at.expect("an expired activation ended");
            let late = end.since(expiry);
            worst = worst.max(late);
            assert!(
                late <= LATE_BOUND,
                "activation {activation} ended {late:?} after its expiry"
            );
            // The target's own account: granted once, revoked no earlier than the expiry and
            // within the bound.
            let revokes: Vec<&Call> = own.iter().filter(|c| c.kind == "revoke").collect();
            assert!(
                own.iter().any(|c| c.kind == "grant"),
                "{activation}: no grant reached the target"
            );
            let first = revokes
                .iter()
                .map(|c| c.at)
                .min()
                .unwrap_or_else(|| panic!("{activation}: no revoke reached the target"));
            assert!(
                first >= expiry,
                "{activation}: revoked {:?} before its expiry",
                expiry.since(first)
            );
            let late = first.since(expiry);
            worst_target = worst_target.max(late);
            assert!(
                late <= LATE_BOUND,
                "{activation}: the target revoked it {late:?} after its expiry"
            );
        }
    }
    eprintln!(
        "{expired} activations expired, none early; the one-minute ones ended at most {worst:?} \
         after their expiry (the target's revoke at most {worst_target:?} after)"
    );
}
