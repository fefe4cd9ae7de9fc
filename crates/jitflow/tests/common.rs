//! Test fakes: a target system that records calls and fails or hangs on demand, a recording
//! notifier, a validator that refuses on demand, and event-driven waiting (no wall-clock sleeps:
//! tests wait for committed events; the timeout only guards against a hang).
//!
//! Where the engines keep their store is [`Storage`]: a redb file, or, in the `postgresql`
//! test binary, a database of the binary's throwaway PostgreSQL cluster. Each suite is written
//! once and runs on both: `lifecycle.rs` is a test binary on the redb file, and
//! `postgresql.rs` includes it (and the other suites) to run it over PostgreSQL.
#![allow(dead_code, reason = "each test file uses part of the fakes")]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jitflow::clock::ManualClock;
use jitflow::hooks::{
    BoxFuture, EffectRequest, Holding, ItemRequest, Notification, Notifier, NotifyError,
    ProvisionError, Provisioner, RequestNotification, ValidationRequest, Validator,
};
use jitflow::{Caller, Config, Engine};
use jitflow_core::connection::{Connection, ConnectionSpec, ConnectionType};
use jitflow_core::id::{
    AccountId, ConnectionId, EntitlementId, IdentityId, RequestItemId, SourceId, TenantId,
};
use jitflow_core::lifecycle::{Actor, Notice};
use jitflow_core::policy::Policy;
use jitflow_core::time::{Minutes, Timestamp};
use jitflow_store_pg::testing::Cluster;
use jitflow_store_pg::{LeaseOptions, PgBackend};

/// Whether this test binary runs its suites over PostgreSQL: `postgresql.rs` does (it
/// includes the suites, each of which alone runs on the redb file).
pub fn on_postgresql() -> bool {
    env!("CARGO_CRATE_NAME") == "postgresql"
}

/// The node id of every engine a test opens on a PostgreSQL database: an engine opened again
/// under it (a restart) takes the partition's lease back at once, fencing its former self.
pub const NODE: &str = "engine-1";

/// Where a test's engines keep their store; every engine opened on it (a restart) finds what
/// the last one left. Cloning it shares the same store.
#[derive(Clone)]
pub struct Storage(Arc<Place>);

enum Place {
    /// A redb file; the folder, when held, is deleted with the last clone.
    File {
        path: PathBuf,
        _dir: Option<tempfile::TempDir>,
    },
    /// A PostgreSQL database; the cluster, when held, is kept up until the last clone goes.
    Database {
        url: String,
        _cluster: Option<Arc<Cluster>>,
    },
}

impl Storage {
    /// A fresh store for one test on this binary's backend: a redb file in a temporary folder,
    /// or a new database (`CREATE DATABASE`) of the binary's PostgreSQL cluster, which is
    /// started by the first test that needs it and stopped when the last one running lets go
    /// ([`Cluster::shared`]). `None` where PostgreSQL is not installed and `CI` is unset: the
    /// test then skips (under CI it panics instead, as every PostgreSQL test does).
    pub fn new() -> Option<Storage> {
        if on_postgresql() {
            Cluster::shared().map(Storage::database)
        } else {
            Some(Storage::file())
        }
    }

    /// A redb file in a new temporary folder.
    pub fn file() -> Storage {
        let dir = tempfile::tempdir().expect("a temporary folder");
        Storage(Arc::new(Place::File {
            path: dir.path().join("engine.redb"),
            _dir: Some(dir),
        }))
    }

    /// The redb file at `path`, in a folder the test keeps.
    pub fn file_at(path: &Path) -> Storage {
        Storage(Arc::new(Place::File {
            path: path.to_path_buf(),
            _dir: None,
        }))
    }

    /// A new database of `cluster`, which it keeps up.
    pub fn database(cluster: Arc<Cluster>) -> Storage {
        let url = cluster.database().expect("CREATE DATABASE");
        Storage(Arc::new(Place::Database {
            url,
            _cluster: Some(cluster),
        }))
    }

    /// The database at `url`, on a cluster the test keeps up.
    pub fn database_at(url: &str) -> Storage {
        Storage(Arc::new(Place::Database {
            url: url.to_owned(),
            _cluster: None,
        }))
    }

    /// The name of the store in the engine's errors: the file's path, or `postgresql`.
    pub fn name(&self) -> &Path {
        match &*self.0 {
            Place::File { path, .. } => path,
            Place::Database { .. } => Path::new("postgresql"),
        }
    }

    /// An engine builder on the store: the redb file, or a new backend on the database as node
    /// [`NODE`] with 10 s leases.
    pub async fn builder(&self) -> jitflow::Builder {
        match &*self.0 {
            Place::File { path, .. } => Engine::builder(path),
            Place::Database { url, .. } => {
                let config = jitflow_store_pg::Config::new(
                    url.as_str(),
                    NODE,
                    LeaseOptions::new(Duration::from_secs(10)),
                );
                let backend = tokio::task::spawn_blocking(move || PgBackend::open(config))
                    .await
                    .expect("the backend opens")
                    .expect("the backend opens");
                Engine::builder(self.name()).backend(Arc::new(backend))
            }
        }
    }
}

/// What the fake target saw and holds.
#[derive(Debug, Default)]
pub struct TargetState {
    /// Every call: (`grant`/`revoke`, idempotency key).
    pub calls: Vec<(&'static str, String)>,
    /// Accounts' entitlements currently granted, by connection.
    pub held: HashSet<ConnectionId>,
    /// Roles and access profiles currently granted, by access request item.
    pub held_items: HashSet<RequestItemId>,
    /// Grants to fail before succeeding.
    pub fail_grants: u32,
    /// Whether grant failures are permanent.
    pub permanent: bool,
    /// Revokes to fail before succeeding.
    pub fail_revokes: u32,
    /// Calls hang forever while set (a crash mid-call).
    pub hang: bool,
    /// Revokes answer success but keep the access while set (a revoke that did not take).
    pub drop_revokes: bool,
}

/// A fake target system.
#[derive(Debug, Clone, Default)]
pub struct Target(pub Arc<Mutex<TargetState>>);

impl Target {
    /// The target's state, locked.
    pub fn state(&self) -> std::sync::MutexGuard<'_, TargetState> {
        self.0.lock().unwrap()
    }

    /// The idempotency keys of the calls of `kind` (`grant` or `revoke`), in order.
    pub fn keys(&self, kind: &str) -> Vec<String> {
        self.state()
            .calls
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, key)| key.clone())
            .collect()
    }
}

async fn hang_if(target: &Target) {
    let hang = target.state().hang;
    if hang {
        std::future::pending::<()>().await;
    }
}

impl Provisioner for Target {
    fn grant(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async move {
            self.state()
                .calls
                .push(("grant", request.idempotency_key.clone()));
            hang_if(self).await;
            let mut s = self.state();
            if s.fail_grants > 0 {
                s.fail_grants -= 1;
                return Err(if s.permanent {
                    ProvisionError::permanent("no such group")
                } else {
                    ProvisionError::transient("503")
                });
            }
            s.held.insert(request.connection.id);
            Ok(())
        })
    }

    fn revoke(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async move {
            self.state()
                .calls
                .push(("revoke", request.idempotency_key.clone()));
            hang_if(self).await;
            let mut s = self.state();
            if s.fail_revokes > 0 {
                s.fail_revokes -= 1;
                return Err(ProvisionError::transient("connection refused"));
            }
            if !s.drop_revokes {
                s.held.remove(&request.connection.id);
            }
            Ok(())
        })
    }

    fn inspect(&self, request: EffectRequest) -> BoxFuture<'_, Result<Holding, ProvisionError>> {
        Box::pin(async move {
            self.state()
                .calls
                .push(("inspect", request.idempotency_key.clone()));
            Ok(if self.state().held.contains(&request.connection.id) {
                Holding::Held
            } else {
                Holding::NotHeld
            })
        })
    }

    fn grant_item(&self, request: ItemRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async move {
            self.state()
                .calls
                .push(("grant_item", request.idempotency_key.clone()));
            hang_if(self).await;
            let mut s = self.state();
            if s.fail_grants > 0 {
                s.fail_grants -= 1;
                return Err(ProvisionError::transient("503"));
            }
            s.held_items.insert(request.item.id);
            Ok(())
        })
    }

    fn revoke_item(&self, request: ItemRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async move {
            self.state()
                .calls
                .push(("revoke_item", request.idempotency_key.clone()));
            hang_if(self).await;
            let mut s = self.state();
            if s.fail_revokes > 0 {
                s.fail_revokes -= 1;
                return Err(ProvisionError::transient("connection refused"));
            }
            s.held_items.remove(&request.item.id);
            Ok(())
        })
    }
}

/// Records notifications.
#[derive(Debug, Clone, Default)]
pub struct Inbox(
    pub Arc<Mutex<Vec<Notification>>>,
    pub Arc<Mutex<Vec<RequestNotification>>>,
);

impl Inbox {
    /// The notices received, in order.
    pub fn notices(&self) -> Vec<Notice> {
        self.0.lock().unwrap().iter().map(|n| n.notice).collect()
    }

    /// The access request notices received, in order.
    pub fn request_notices(&self) -> Vec<jitflow_core::request::Notice> {
        self.1.lock().unwrap().iter().map(|n| n.notice).collect()
    }
}

impl Notifier for Inbox {
    fn notify(&self, notification: Notification) -> BoxFuture<'_, Result<(), NotifyError>> {
        self.0.lock().unwrap().push(notification);
        Box::pin(async { Ok(()) })
    }

    fn notify_request(
        &self,
        notification: RequestNotification,
    ) -> BoxFuture<'_, Result<(), NotifyError>> {
        self.1.lock().unwrap().push(notification);
        Box::pin(async { Ok(()) })
    }
}

/// Refuses requests while `refuse` is set.
#[derive(Debug, Clone, Default)]
pub struct Gate(pub Arc<Mutex<Option<String>>>);

impl Validator for Gate {
    fn validate(&self, _request: ValidationRequest) -> BoxFuture<'_, Result<(), String>> {
        let verdict = self.0.lock().unwrap().clone();
        Box::pin(async move { verdict.map_or(Ok(()), Err) })
    }
}

/// The manual clock's start, in ms since the epoch (2027-01-15).
pub const START: u64 = 1_800_000_000_000;

/// Alice of tenant acme.
pub fn caller() -> Caller {
    Caller {
        tenant: TenantId::parse("acme").unwrap(),
        actor: Actor::Identity(IdentityId::parse("alice").unwrap()),
    }
}

/// The `n`th test connection id.
pub fn conn(n: u128) -> ConnectionId {
    ConnectionId::from_u128(0x1000 + n)
}

/// A JIT connection of Alice's with this id, through an account of its own (one connection per
/// assignment of entitlement, identity and account).
pub fn spec(id: ConnectionId) -> ConnectionSpec {
    ConnectionSpec {
        id,
        identity: IdentityId::parse("alice").unwrap(),
        identity_name: "Alice".into(),
        account: AccountId::parse(&format!("alice-adm-{:x}", id.as_u128())).unwrap(),
        account_name: "alice.adm".into(),
        entitlement: EntitlementId::parse("domain-admins").unwrap(),
        entitlement_name: "Domain Admins".into(),
        attribute_name: "memberOf".into(),
        attribute_value: "CN=Domain Admins".into(),
        privilege_level: None,
        source: SourceId::parse("ad").unwrap(),
        source_name: "AD".into(),
        kind: ConnectionType::Jit,
        standalone: false,
    }
}

/// A policy: max 240 min (default 60), extensions up to 60 min in total (default 15).
pub fn policy() -> Policy {
    let mut p = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
    p.max_activation_period = Some(Minutes(240));
    p.default_activation_period = Some(Minutes(60));
    p.max_extension = Some(Minutes(60));
    p.default_extension = Some(Minutes(15));
    p
}

/// Engine settings for tests: 3 grant tries, stuck after 3 revoke tries, retries 1 s to 30 s.
pub fn config() -> Config {
    Config {
        grant_max_attempts: 3,
        stuck_after: 3,
        retry_base: Duration::from_secs(1),
        retry_cap: Duration::from_secs(30),
        warning_lead: Duration::from_secs(300),
        ..Config::default()
    }
}

/// What a stopped [`Harness`] leaves for the next engine: its store, clock, target and
/// settings.
pub struct Parts {
    /// The clock.
    pub clock: ManualClock,
    /// The fake target.
    pub target: Target,
    /// The store.
    pub storage: Storage,
    /// The engine's settings.
    pub config: Config,
}

impl Parts {
    /// Opens an engine on them (with a fresh inbox and validator).
    pub async fn open(self) -> Harness {
        Harness::open_with(&self.storage, self.clock, self.target, self.config).await
    }
}

/// An engine with its manual clock and fakes.
pub struct Harness {
    /// The engine.
    pub engine: Engine,
    /// Its clock.
    pub clock: ManualClock,
    /// The fake target.
    pub target: Target,
    /// The notifications received.
    pub inbox: Inbox,
    /// The validator.
    pub gate: Gate,
    /// The store.
    pub storage: Storage,
    /// The engine's settings, kept across restarts.
    pub config: Config,
}

impl Harness {
    /// Opens an engine on `storage` with fresh fakes but this clock and target.
    pub async fn open(storage: &Storage, clock: ManualClock, target: Target) -> Harness {
        Harness::open_with(storage, clock, target, config()).await
    }

    /// [`Harness::open`] with other settings.
    pub async fn open_with(
        storage: &Storage,
        clock: ManualClock,
        target: Target,
        config: Config,
    ) -> Harness {
        Harness::open_on(storage.builder().await, storage, clock, target, config).await
    }

    /// Asserts that `verify` finds the store clean (run off the async workers: it reads the
    /// whole log), then shuts the engine down.
    pub async fn verify_and_shut_down(&self) {
        let engine = self.engine.clone();
        let report = tokio::task::spawn_blocking(move || engine.verify())
            .await
            .unwrap()
            .unwrap();
        assert!(report.is_clean(), "{:#?}", report.differences);
        self.engine.shutdown().await;
    }

    /// Opens the engine `builder` describes with fresh fakes but this clock, target and
    /// settings; its store is `storage` (where [`Harness::restart`] opens the next engine).
    pub async fn open_on(
        builder: jitflow::Builder,
        storage: &Storage,
        clock: ManualClock,
        target: Target,
        config: Config,
    ) -> Harness {
        let inbox = Inbox::default();
        let gate = Gate::default();
        let engine = builder
            .config(config.clone())
            .clock(clock.clone())
            .provisioner(target.clone())
            .notifier(inbox.clone())
            .validator(gate.clone())
            .open()
            .await
            .expect("engine opens");
        Harness {
            engine,
            clock,
            target,
            inbox,
            gate,
            storage: storage.clone(),
            config,
        }
    }

    /// A new engine on `storage`, with the test policy stored.
    pub async fn new(storage: &Storage) -> Harness {
        let clock = ManualClock::new(Timestamp::from_millis(START).unwrap());
        let h = Harness::open(storage, clock, Target::default()).await;
        h.engine.put_policy(&caller(), policy()).await.unwrap();
        h
    }

    /// Stops the engine and opens a new one on the same store, clock and target.
    pub async fn restart(self) -> Harness {
        let (engine, parts) = self.stop().await;
        // A redb file is free once the last handle is gone.
        drop(engine);
        parts.open().await
    }

    /// Stops the engine; returns it (to read what it left) and what opening it again needs.
    pub async fn stop(self) -> (Engine, Parts) {
        let Harness {
            engine,
            clock,
            target,
            storage,
            config,
            ..
        } = self;
        engine.shutdown().await;
        (
            engine,
            Parts {
                clock,
                target,
                storage,
                config,
            },
        )
    }

    /// The tenant's policy events as lines of the audit export, in order.
    pub fn policy_lines(&self) -> Vec<String> {
        self.engine
            .export(Some(&caller().tenant), 0, 1000)
            .unwrap()
            .events
            .iter()
            .filter(|e| matches!(e.payload, jitflow::Payload::Policy(_)))
            .map(jitflow::export::json_line)
            .collect()
    }

    /// Registers connection `id`, activates it for `period` and waits until it is ACTIVE.
    pub async fn activated(&self, id: ConnectionId, period: Option<Minutes>) -> ConnectionId {
        self.engine.register(&caller(), spec(id)).await.unwrap();
        self.engine
            .activate(&caller(), id, period, None, None)
            .await
            .unwrap();
        self.wait_for(id, "ACTIVE", |c| {
            c.state == jitflow_core::connection::ConnectionState::Active
        })
        .await;
        id
    }

    /// The connection, which must exist.
    pub fn connection(&self, id: ConnectionId) -> Connection {
        self.engine
            .connection(&caller().tenant, id)
            .unwrap()
            .expect("connection exists")
    }

    /// Waits until the connection satisfies `done`, driven by committed events.
    pub async fn wait_for(
        &self,
        id: ConnectionId,
        what: &str,
        done: impl Fn(&Connection) -> bool,
    ) -> Connection {
        let mut events = self.engine.subscribe(0);
        let guard = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(c) = self.engine.connection(&caller().tenant, id).unwrap()
                    && done(&c)
                {
                    return c;
                }
                events.next().await.expect("engine running");
            }
        });
        match guard.await {
            Ok(c) => c,
            Err(_) => panic!(
                "timed out waiting for {what}: {:?}",
                self.engine.connection(&caller().tenant, id)
            ),
        }
    }
}

/// The stuck gauge of a scrape (`jitflow_stuck_activations`): connections and request items
/// whose revoke keeps failing past the bound.
pub fn stuck_gauge(engine: &jitflow::Engine) -> u64 {
    let text = engine.scrape().unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("jitflow_stuck_activations "))
        .expect("the stuck gauge is scraped");
    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
}
