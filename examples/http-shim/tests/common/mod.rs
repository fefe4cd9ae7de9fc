//! A shim on an ephemeral port over an engine with a manual clock and a recording target.
#![allow(dead_code, reason = "each test binary uses part of the harness")]

pub mod bodies;
pub mod conformance;
// `hostile.rs` (the hostile-input generator) is included by the tests that use it, with
// `#[path]`: it needs proptest, and jitflow-cli's tests include this module without it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jitflow::Engine;
use jitflow::clock::ManualClock;
use jitflow::hooks::{BoxFuture, EffectRequest, Holding, ProvisionError, Provisioner};
use jitflow_core::connection::{Connection, ConnectionState};
use jitflow_core::id::{ConnectionId, TenantId};
use jitflow_core::time::Timestamp;
use jitflow_shim::auth::{Keys, Level};
use jitflow_shim::{AppState, Running};
use serde_json::{Value, json};

pub const SECRET: &[u8] = b"a-test-secret-that-is-long-enough-for-hs256";
pub const TENANT: &str = "acme";
pub const ALICE_CONN: &str = "757fb803-9024-5861-e510-83a56e4c5bd3";
pub const BOB_CONN: &str = "367fb802-1026-1835-a619-11a56e4c5be3";
pub const STANDING_CONN: &str = "8a9b0c1d-2e3f-4a5b-6c7d-8e9f0a1b2c3d";

pub const ALL_ACTIVATION_SCOPES: &[&str] = &[
    "idn:jit-activation-workflow:activate",
    "idn:jit-activation-workflow:extend",
    "idn:jit-activation-workflow:deactivate",
];

/// Every scope the list, patch, bulk, history and event endpoints need.
pub const ORG_ADMIN_SCOPES: &[&str] = &[
    "idn:entitlement-connections:list",
    "idn:entitlement-connections:read",
    "idn:entitlement-connections:manage",
    "idn:jit-activation-history:read",
    "idn:jit-activation-history-self:read",
    "idn:jit-activation-workflow:manage",
    "idn:jit-policy:manage",
];

/// A target that records which connections hold access. `hang_grants` makes grants never
/// answer (to stop an engine mid-activation).
#[derive(Default)]
pub struct Target {
    pub held: Mutex<HashSet<ConnectionId>>,
    pub grants: AtomicU32,
    pub revokes: AtomicU32,
    pub hang_grants: bool,
    /// Revokes answer success and keep the access while set (a revoke that did not take).
    pub drop_revokes: std::sync::atomic::AtomicBool,
    /// Engine settings for the harness (default: the engine's).
    pub config: Option<jitflow::Config>,
}

#[derive(Clone, Default)]
pub struct SharedTarget(pub Arc<Target>);

impl Provisioner for SharedTarget {
    fn grant(&self, r: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async move {
            if self.0.hang_grants {
                std::future::pending::<()>().await;
            }
            self.0.grants.fetch_add(1, Ordering::SeqCst);
            self.0.held.lock().unwrap().insert(r.connection.id);
            Ok(())
        })
    }

    fn revoke(&self, r: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async move {
            self.0.revokes.fetch_add(1, Ordering::SeqCst);
            if !self.0.drop_revokes.load(Ordering::SeqCst) {
                self.0.held.lock().unwrap().remove(&r.connection.id);
            }
            Ok(())
        })
    }

    fn inspect(&self, r: EffectRequest) -> BoxFuture<'_, Result<Holding, ProvisionError>> {
        let held = self.0.held.lock().unwrap().contains(&r.connection.id);
        Box::pin(async move {
            Ok(if held {
                Holding::Held
            } else {
                Holding::NotHeld
            })
        })
    }
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    /// Where the engine's files are: `dir`, unless the harness was made with
    /// [`Harness::on_data_dir`].
    pub data: std::path::PathBuf,
    pub clock: ManualClock,
    engine: Option<Engine>,
    pub target: SharedTarget,
    pub running: Option<Running>,
    pub base: String,
    pub client: reqwest::Client,
    pub keys: Keys,
}

pub fn keys() -> Keys {
    Keys::from_secret(SECRET).unwrap()
}

async fn open(dir: &std::path::Path, clock: &ManualClock, target: &SharedTarget) -> Engine {
    Engine::builder(dir.join("jitflow.redb"))
        .config(target.0.config.clone().unwrap_or_default())
        .clock(clock.clone())
        .provisioner(target.clone())
        .open()
        .await
        .unwrap()
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_target(Target::default()).await
    }

    pub async fn with_target(target: Target) -> Harness {
        Harness::with_keys(target, keys()).await
    }

    /// A harness whose engine asks `approver` to approve every access request item (unanswered
    /// approvals expire after a day).
    pub async fn with_approver(approver: &str) -> Harness {
        let config = jitflow::Config {
            approvers: vec![jitflow_core::id::IdentityId::parse(approver).unwrap()],
            approval_timeout: Duration::from_secs(24 * 3600),
            ..jitflow::Config::default()
        };
        Harness::with_target(Target {
            config: Some(config),
            ..Target::default()
        })
        .await
    }

    /// A harness whose server verifies with `keys` (e.g. the test secret plus a JWKS).
    pub async fn with_keys(target: Target, keys: Keys) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        Harness::build(dir, data, target, keys).await
    }

    /// A harness whose engine keeps its files in `data` (a small file system, for example).
    pub async fn on_data_dir(data: &std::path::Path) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Harness::build(dir, data.to_path_buf(), Target::default(), keys()).await
    }

    async fn build(
        dir: tempfile::TempDir,
        data: std::path::PathBuf,
        target: Target,
        keys: Keys,
    ) -> Harness {
        let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-11-23T09:00:00Z").unwrap());
        let target = SharedTarget(Arc::new(target));
        let engine = open(&data, &clock, &target).await;
        let mut h = Harness {
            dir,
            data,
            clock,
            engine: Some(engine),
            target,
            running: None,
            base: String::new(),
            client: reqwest::Client::new(),
            keys,
        };
        h.serve().await;
        h
    }

    async fn serve(&mut self) {
        let state = AppState::new(self.engine().clone(), self.keys.clone());
        let running = jitflow_shim::start("127.0.0.1:0".parse().unwrap(), state)
            .await
            .unwrap();
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    /// Stops the server and the engine, and starts both again on the same data directory with
    /// a new target.
    pub async fn restart(&mut self, target: Target) {
        self.running.take().unwrap().stop().await.unwrap();
        let old = self.engine.take().unwrap();
        old.shutdown().await;
        // The store file stays locked until the last handle is gone.
        drop(old);
        self.target = SharedTarget(Arc::new(target));
        self.engine = Some(open(&self.data, &self.clock, &self.target).await);
        self.client = reqwest::Client::new();
        self.serve().await;
    }

    pub async fn stop(mut self) {
        self.running.take().unwrap().stop().await.unwrap();
        self.engine().shutdown().await;
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    pub fn token(&self, tenant: &str, identity: &str, scopes: &[&str], levels: &[Level]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        self.keys
            .mint(tenant, identity, &scopes, levels, Duration::from_secs(3600))
            .unwrap()
    }

    pub fn alice(&self) -> String {
        self.token(TENANT, "alice", ALL_ACTIVATION_SCOPES, &[Level::User])
    }

    pub fn admin(&self) -> String {
        self.token(
            TENANT,
            "admin",
            &[
                "idn:entitlement-connections:manage",
                "idn:jit-policy:manage",
                "idn:jit-activation-workflow:manage",
            ],
            &[Level::OrgAdmin],
        )
    }

    /// An org admin with every scope of the lists, the patches, the history and the events.
    pub fn org_admin(&self) -> String {
        self.token(TENANT, "admin", ORG_ADMIN_SCOPES, &[Level::OrgAdmin])
    }

    /// Sends a request; `body` is sent as JSON text with `Content-Type: application/json`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let raw = body.map(|b| b.to_string());
        self.raw(
            method,
            path,
            token,
            Some("application/json"),
            raw.map(String::into_bytes),
        )
        .await
    }

    /// Sends a request, asserts its status (and an `ErrorResponseDto` for an error), and returns
    /// the body.
    pub async fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let (actual, answer, _) = self.call(method, path, token, body).await;
        assert_eq!(actual, status, "{method} {path} -> {answer}");
        if status >= 400 {
            error_text(&answer);
        }
        answer
    }

    /// Sends a request with raw parts.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        self.with_headers(method, path, token, &[], content_type, body)
            .await
    }

    /// Sends a request with raw parts and extra headers.
    pub async fn with_headers(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let verb = method;
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            if let Some(ct) = content_type {
                request = request.header("content-type", ct);
            }
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        // Every answer of a vendor operation is checked against the vendor's files.
        conformance::contract().check(verb, path, status, &value);
        (status, value, headers)
    }

    pub fn connection(&self, id: &str) -> Option<Connection> {
        self.engine()
            .connection(
                &TenantId::parse(TENANT).unwrap(),
                ConnectionId::parse(id).unwrap(),
            )
            .unwrap()
    }

    /// Waits (up to 10 s of real time) until the connection is in `state`.
    pub async fn wait_state(&self, id: &str, state: ConnectionState) {
        for _ in 0..1000 {
            if self.connection(id).map(|c| c.state) == Some(state) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "connection {id} never reached {state:?}; it is {:?}",
            self.connection(id).map(|c| c.state)
        );
    }

    /// Alice activates her JIT connection for 30 minutes (202); returns the activation id.
    pub async fn activate_alice(&self) -> String {
        let answer = self
            .expect(
                202,
                "POST",
                "/jit-activations/v1/activate",
                Some(&self.alice()),
                Some(json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30})),
            )
            .await;
        answer["activationId"].as_str().unwrap().to_owned()
    }

    /// Registers alice's and bob's JIT connections and a standing one, and stores a policy.
    pub async fn seed(&self) {
        let admin = self.admin();
        let (status, body, _) = self
            .call(
                "POST",
                "/jitflow/v1/connections",
                Some(&admin),
                Some(json!({"connections": [
                    spec(ALICE_CONN, "alice", "JIT"),
                    spec(BOB_CONN, "bob", "JIT"),
                    standing_spec(),
                ]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        for r in body["results"].as_array().unwrap() {
            assert_eq!(r["status"], 200, "{body}");
        }
        let (status, body, _) = self
            .call(
                "PUT",
                "/jitflow/v1/jit-activation-config/policy",
                Some(&admin),
                Some(policy()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

/// The policy [`Harness::seed`] stores: `domain-admins` is JIT, up to 4 h and 1 h more.
pub fn policy() -> Value {
    json!({
        "entitlementIds": ["domain-admins"],
        "maxActivationPeriodMins": 240,
        "maxActivationPeriodExtensionMins": 60,
        "defaultMaxActivationPeriodMins": 60,
        "defaultMaxActivationPeriodExtensionMins": 30,
        "notificationRecipients": ["security@example.com"],
        "notificationTemplate": null,
        "applyToFutureAssignments": false
    })
}

/// Registers `n` more JIT connections of `identity` with generated ids; returns the ids.
pub async fn register_many(h: &Harness, n: u32, identity: &str) -> Vec<String> {
    let ids: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{:08x}-1111-4111-8111-{i:012x}",
                i.wrapping_mul(2_654_435_761)
            )
        })
        .collect();
    // One account each: the engine keeps one connection per assignment.
    let specs: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut s = spec(id, identity, "JIT");
            s["accountId"] = json!(format!("{identity}-{i}"));
            s
        })
        .collect();
    let body = h
        .expect(
            200,
            "POST",
            "/jitflow/v1/connections",
            Some(&h.admin()),
            Some(json!({"connections": specs})),
        )
        .await;
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == 200),
        "{body}"
    );
    ids
}

/// A connection spec in the import's JSON: the identity's `-adm` account for `domain-admins`
/// (the engine keeps one connection per entitlement, identity and account, so a second
/// connection of the same identity needs another account or entitlement).
pub fn spec(id: &str, identity: &str, kind: &str) -> Value {
    json!({
        "id": id,
        "identityId": identity,
        "identityName": identity,
        "accountId": format!("{identity}-adm"),
        "accountName": format!("{identity}.adm"),
        "entitlementId": "domain-admins",
        "entitlementName": "Domain Admins",
        "attributeName": "memberOf",
        "attributeValue": "CN=Domain Admins,DC=example,DC=com",
        "privilegeLevel": null,
        "sourceId": "ad",
        "sourceName": "Active Directory",
        "type": kind,
        "standalone": false
    })
}

/// Alice's STANDING connection, through her read-only account.
pub fn standing_spec() -> Value {
    let mut s = spec(STANDING_CONN, "alice", "STANDING");
    s["accountId"] = json!("alice-ro");
    s
}

/// Percent-encodes everything but the unreserved characters (for a query value).
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Asserts the body is an `ErrorResponseDto` and returns its message text.
pub fn error_text(body: &Value) -> String {
    let dto: jitflow_shim::error::ErrorResponseDto = serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("not an ErrorResponseDto ({e}): {body}"));
    assert!(!dto.detail_code.is_empty());
    assert_eq!(dto.tracking_id.len(), 32);
    assert_eq!(dto.messages.len(), 1);
    assert_eq!(dto.messages[0].locale, "en-US");
    assert_eq!(dto.messages[0].locale_origin, "DEFAULT");
    dto.messages[0].text.clone()
}

/// The `detailCode` of an `ErrorResponseDto` body.
pub fn detail_code(body: &Value) -> String {
    error_text(body);
    body["detailCode"].as_str().unwrap_or_default().to_owned()
}
