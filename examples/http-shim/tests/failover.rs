//! Three shims on one PostgreSQL database (`--store`): one holds the store's lease and serves,
//! two wait as standbys. Under a load of activations, the serving one is SIGKILLed at random
//! moments for `JITFLOW_FAILOVER_ROUNDS` rounds (default 3); a standby must take over within
//! the lease (plus the time to open), and the killed one comes back as a standby. At the end,
//! with every shim stopped, the store is opened on the database: every activation any shim
//! acknowledged is in it, and `verify` is clean.
//!
//! Needs PostgreSQL (`initdb`, `postgres`): skipped where it is missing, failed under `CI`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jitflow_core::id::{ActivationId, TenantId};
use jitflow_shim::auth::{Keys, Level};
use jitflow_store_pg::testing::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_jitflow-shim");
/// The lease the shims take: short, so a round is short.
const LEASE: Duration = Duration::from_secs(2);
/// How long a takeover may take before the test fails: the lease, a shim's start and open, and
/// a generous margin for a loaded machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);
const TENANT: &str = "ha";
const CONNECTIONS: usize = 400;

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

/// One shim process: its node id, port and data directory (which holds nothing of the store).
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
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--secret-file")
            .arg(secret)
            .arg("--data-dir")
            .arg(&data)
            .args(["--log", "warn"])
            .env_remove("JITFLOW_SECRET")
            .env_remove("JITFLOW_LISTEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The node that answers HTTP now (standbys do not listen), if any.
async fn serving(client: &reqwest::Client, nodes: &[Node]) -> Option<usize> {
    for (i, node) in nodes.iter().enumerate() {
        if node.child.is_none() {
            continue;
        }
        let probe = client
            .get(format!("{}/metrics", node.base()))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if probe.is_ok_and(|r| r.status().is_success()) {
            return Some(i);
        }
    }
    None
}

async fn wait_serving(client: &reqwest::Client, nodes: &[Node]) -> (usize, Duration) {
    let started = Instant::now();
    loop {
        if let Some(i) = serving(client, nodes).await {
            return (i, started.elapsed());
        }
        assert!(
            started.elapsed() < TAKEOVER_BOUND,
            "no shim serves {TAKEOVER_BOUND:?} after the last one stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The activation id of the contract's answer (`jit-activation-<uuid>`).
fn activation_id(answer: &str) -> ActivationId {
    let uuid = answer.strip_prefix("jit-activation-").unwrap_or(answer);
    ActivationId::parse(uuid).unwrap_or_else(|e| panic!("{answer}: {e}"))
}

fn connection(n: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", 0xfa11_0000u32, n)
}

fn spec(n: usize) -> serde_json::Value {
    serde_json::json!({
        "id": connection(n),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_with_everything_acknowledged() {
    let Some(cluster) = Cluster::start_or_skip() else {
        return;
    };
    let url = cluster.database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{:064x}\n", 0x5eed_u128 << 64 | 0xfa11)).unwrap();
    let keys = Keys::from_file(&secret).unwrap();
    let token = keys
        .mint(
            TENANT,
            "loader",
            &[
                "idn:jit-activation-workflow:manage".to_owned(),
                "idn:entitlement-connections:manage".to_owned(),
            ],
            &[Level::OrgAdmin],
            Duration::from_secs(3600),
        )
        .unwrap();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|n| Node {
            id: format!("node-{n}"),
            port: free_port(),
            child: None,
        })
        .collect();
    // The first starts alone, so it is the one that serves; then the standbys.
    nodes[0].start(&url, &secret, dir.path());
    let client = reqwest::Client::new();
    wait_serving(&client, &nodes).await;
    for node in &mut nodes[1..] {
        node.start(&url, &secret, dir.path());
    }
    let specs: Vec<_> = (0..CONNECTIONS).map(spec).collect();
    let (active, _) = wait_serving(&client, &nodes).await;
    for chunk in specs.chunks(100) {
        let response = client
            .post(format!("{}/jitflow/v1/connections", nodes[active].base()))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "connections": chunk }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status().as_u16(),
            200,
            "{:?}",
            response.text().await
        );
    }

    // The load: activations of the connections in turn against whichever node serves (each
    // acknowledged activation id is kept), and deactivations of those found active. Refusals
    // and failures (a node going down mid-request) are expected: the next turn goes on.
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let bases: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(nodes.iter().map(Node::base).collect()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acked, bases, stop, client, token) = (
            Arc::clone(&acked),
            Arc::clone(&bases),
            Arc::clone(&stop),
            client.clone(),
            token.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = connection(n % CONNECTIONS);
                n += 1;
                let all = bases.lock().unwrap().clone();
                for base in all {
                    let answer = client
                        .post(format!("{base}/v2026/jit-activations/activate"))
                        .bearer_auth(&token)
                        .timeout(Duration::from_secs(5))
                        .json(&serde_json::json!({"connectionId": id, "activationPeriodMins": 600}))
                        .send()
                        .await;
                    let Ok(response) = answer else { continue };
                    if response.status().as_u16() == 202 {
                        let body: serde_json::Value = response.json().await.unwrap();
                        let activation = body["id"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().insert(activation, id.clone());
                    } else if response.status().is_client_error() {
                        // Active from an earlier turn: end it, so the next turn activates
                        // it again and the load goes on through every round.
                        let _ = client
                            .post(format!("{base}/v2026/jit-activations/deactivate"))
                            .bearer_auth(&token)
                            .timeout(Duration::from_secs(5))
                            .json(&serde_json::json!({"connectionId": id}))
                            .send()
                            .await;
                    }
                    break;
                }
            }
        })
    };

    let mut takeovers = Vec::new();
    for round in 0..rounds() {
        let (active, _) = wait_serving(&client, &nodes).await;
        // The load goes through the node that serves now before it is killed.
        let before = acked.lock().unwrap().len();
        let waiting = Instant::now();
        while acked.lock().unwrap().len() == before {
            assert!(
                waiting.elapsed() < TAKEOVER_BOUND,
                "round {round}: the serving node acknowledges nothing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Kill it at a moment that depends on the round, while the load runs.
        tokio::time::sleep(Duration::from_millis(300 + 370 * (round as u64 % 4))).await;
        let mut child = nodes[active].child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let (next, took) = wait_serving(&client, &nodes).await;
        assert_ne!(next, active, "round {round}: the killed node serves");
        takeovers.push(took);
        // The killed one comes back as a standby.
        nodes[active].start(&url, &secret, dir.path());
    }
    // Some load on the last node, then stop everything cleanly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    for node in &mut nodes {
        if let Some(child) = node.child.take() {
            let pid = child.id().to_string();
            Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            let mut child = child;
            child.wait().unwrap();
        }
    }
    eprintln!(
        "takeovers after SIGKILL: {takeovers:?}; activations acknowledged: {}",
        acked.lock().unwrap().len()
    );

    // Every acknowledged activation is in the store, on the connection it was asked for.
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the load acknowledged nothing");
    let backend = jitflow_store_pg::PgBackend::open(jitflow_store_pg::Config::new(
        url.clone(),
        "checker",
        jitflow_store_pg::LeaseOptions::new(LEASE),
    ))
    .unwrap();
    let store =
        jitflow_store::Store::open_on(Arc::new(backend), jitflow_store::open::Options::default())
            .unwrap();
    let reader = store.reader().unwrap();
    let tenant = TenantId::parse(TENANT).unwrap();
    for (activation, connection) in &acked {
        let stored = reader
            .activation(&tenant, activation_id(activation))
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged activation {activation} is lost"));
        assert_eq!(stored.connection.to_string(), *connection);
    }
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
}
