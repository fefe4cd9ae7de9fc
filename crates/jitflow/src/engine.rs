//! The engine and its cheap cloneable handle.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::thread::JoinHandle;

use jitflow_core::activation::Activation;
use jitflow_core::client::ClientInfo;
use jitflow_core::connection::{
    Connection, ConnectionSpec, ConnectionType, ConnectionUpdate, Patch,
};
use jitflow_core::id::{ActivationId, ConnectionId, TenantId};
use jitflow_core::lifecycle::{Actor, Command, PolicyCommand, Rejection};
use jitflow_core::policy::{PatchOp, Policy};
use jitflow_core::request::AccessRequestConfig;
use jitflow_core::request::config::View;
use jitflow_core::time::Minutes;
use jitflow_store::Store;
use jitflow_store::codec::{Envelope, Stream};
use jitflow_store::read::StreamEvent;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};

use crate::bulk;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::effects::{EffectRunner, NoticeDelivery};
use crate::error::{Error, read};
use crate::hooks::{AcceptAll, NoNotifier, Notifier, Provisioner, Validator};
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::writer::{Idempotency, Op, Reply, Signals, Writer, WriterHandle};

/// The most events one history or subscription read returns.
pub const MAX_PAGE: usize = 10_000;
/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Who makes a call: the tenant whose data it touches and the actor recorded on the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant. No call reads or changes another tenant's data.
    pub tenant: TenantId,
    /// Who acts; recorded on every event the call causes.
    pub actor: Actor,
}

/// Why the engine could not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A setting is out of bounds.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("opening the store at {path}: {message}")]
    Store {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No provisioner was given.
    #[error("a provisioner is required")]
    NoProvisioner,
    /// The writer thread could not be started.
    #[error("starting the writer thread: {0}")]
    Thread(std::io::Error),
}

/// Builds an [`Engine`].
pub struct Builder {
    path: PathBuf,
    config: Config,
    clock: Arc<dyn Clock>,
    provisioner: Option<Arc<dyn Provisioner>>,
    validator: Arc<dyn Validator>,
    notifier: Arc<dyn Notifier>,
    jitter_seed: u64,
    store: jitflow_store::open::Options,
    backend: Option<Arc<dyn jitflow_store::backend::Backend>>,
}

impl Builder {
    /// Settings (default: [`Config::default`]).
    pub fn config(mut self, config: Config) -> Builder {
        self.config = config;
        self
    }

    /// The clock (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Builder {
        self.clock = Arc::new(clock);
        self
    }

    /// The provisioner that grants and revokes access. Required.
    pub fn provisioner(mut self, provisioner: impl Provisioner) -> Builder {
        self.provisioner = Some(Arc::new(provisioner));
        self
    }

    /// The workflow's validation (default: [`AcceptAll`]).
    pub fn validator(mut self, validator: impl Validator) -> Builder {
        self.validator = Arc::new(validator);
        self
    }

    /// The notifier (default: [`NoNotifier`]).
    pub fn notifier(mut self, notifier: impl Notifier) -> Builder {
        self.notifier = Arc::new(notifier);
        self
    }

    /// The store's options (default: [`jitflow_store::open::Options::default`]: a 128 MiB page
    /// cache, quick repair on).
    pub fn store_options(mut self, options: jitflow_store::open::Options) -> Builder {
        self.store = options;
        self
    }

    /// Runs the engine over `backend` (a PostgreSQL backend, say) instead of the redb file at
    /// the builder's path, which then only names the store in errors. The engine is the same
    /// over either.
    pub fn backend(mut self, backend: Arc<dyn jitflow_store::backend::Backend>) -> Builder {
        self.backend = Some(backend);
        self
    }

    /// Mixed into retry jitter (default 0). Engines sharing a target should differ.
    pub fn jitter_seed(mut self, seed: u64) -> Builder {
        self.jitter_seed = seed;
        self
    }

    /// Opens the store and starts the writer thread, the scheduler and the effect runner on the
    /// current tokio runtime. Intents committed before a crash run again at once; overdue timers
    /// fire at once.
    pub async fn open(self) -> Result<Engine, OpenError> {
        self.config.validate()?;
        let provisioner = self.provisioner.ok_or(OpenError::NoProvisioner)?;
        let path = self.path.clone();
        let options = self.store.clone();
        let backend = self.backend.clone();
        let store = tokio::task::spawn_blocking(move || match backend {
            Some(backend) => Store::open_on(backend, options),
            None => Store::open(&path, options),
        })
        .await
        .map_err(|e| OpenError::Store {
            path: self.path.clone(),
            message: e.to_string(),
        })?
        .map_err(|e| OpenError::Store {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let store = Arc::new(store);
        let config = self.config;
        let (writer_tx, writer_rx) = WriterHandle::channel(config.queue_capacity);
        let (effects_tx, effects_rx) = mpsc::channel(config.queue_capacity);
        let (committed, _) = broadcast::channel(16);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let signals = Arc::new(Signals {
            scheduler_next: AtomicU64::new(0),
            scheduler_wake: Default::default(),
            effects_overflow: AtomicBool::new(false),
            effects_wake: Default::default(),
            committed,
            health: Default::default(),
        });
        let metrics = Arc::new(Metrics::default());
        let writer = Writer {
            store: Arc::clone(&store),
            rx: writer_rx,
            clock: Arc::clone(&self.clock),
            lifecycle: config.lifecycle(self.jitter_seed),
            batch_max: config.batch_max,
            idempotency_ttl: config.idempotency_ttl,
            effects: effects_tx,
            signals: Arc::clone(&signals),
            metrics: Arc::clone(&metrics),
            policies: Default::default(),
            carry: Vec::new(),
            outage: None,
        };
        let writer_thread = std::thread::Builder::new()
            .name("jitflow-writer".into())
            .spawn(move || writer.run())
            .map_err(OpenError::Thread)?;
        let scheduler = Scheduler {
            store: Arc::clone(&store),
            writer: writer_tx.clone(),
            clock: Arc::clone(&self.clock),
            signals: Arc::clone(&signals),
            metrics: Arc::clone(&metrics),
            window: config.timer_window,
            max_sleep: config.max_sleep,
            shutdown: shutdown_rx.clone(),
        };
        let runner = EffectRunner {
            store: Arc::clone(&store),
            writer: writer_tx.clone(),
            rx: effects_rx,
            provisioner: Arc::clone(&provisioner),
            validator: self.validator,
            signals: Arc::clone(&signals),
            metrics: Arc::clone(&metrics),
            limit: Arc::new(Semaphore::new(config.effects_in_flight)),
            timeout: config.effect_timeout,
            shutdown: shutdown_rx.clone(),
        };
        let notifier_from =
            read(&store, |r| r.cursor(crate::effects::NOTIFIER_CURSOR)).map_err(|e| {
                OpenError::Store {
                    path: self.path.clone(),
                    message: e.to_string(),
                }
            })?;
        let notices = Subscription::new(Arc::clone(&store), &signals, notifier_from);
        let tasks = vec![tokio::spawn(scheduler.run()), tokio::spawn(runner.run())];
        metrics.notifier_passed(notifier_from);
        let notifier = tokio::spawn(
            NoticeDelivery {
                events: notices,
                store: Arc::clone(&store),
                writer: writer_tx.clone(),
                notifier: self.notifier,
                metrics: Arc::clone(&metrics),
                timeout: config.notify_timeout,
                retry: (config.notify_retry_base, config.notify_retry_cap),
                stuck_after: config.stuck_after,
                shutdown: shutdown_rx,
            }
            .run(),
        );
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                provisioner,
                inspect_timeout: config.effect_timeout,
                writer: writer_tx,
                clock: self.clock,
                signals,
                metrics,
                approval: config.approval_step(),
                stop: std::sync::Mutex::new(Some(Stop {
                    shutdown: shutdown_tx,
                    writer_thread,
                    tasks,
                    notifier,
                    notifier_drain: config.notify_timeout,
                })),
                last_gauges: Default::default(),
            }),
        };
        if config.reconcile_rate > 0 {
            let pass = crate::reconcile::Pass {
                engine: engine.downgrade(),
                store: Arc::clone(&engine.inner.store),
                writer: engine.inner.writer.clone(),
                clock: Arc::clone(&engine.inner.clock),
                metrics: Arc::clone(&engine.inner.metrics),
                rate: config.reconcile_rate,
                interval: config.reconcile_interval,
                in_flight: config.reconcile_in_flight,
            };
            let task = tokio::spawn(pass.run());
            if let Some(stop) = engine
                .inner
                .stop
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                stop.tasks.push(task);
            }
        }
        Ok(engine)
    }
}

struct Stop {
    shutdown: watch::Sender<bool>,
    writer_thread: JoinHandle<()>,
    /// The scheduler, the effect runner and the reconciliation pass: stopped at once.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The notifier: drains what is committed before the writer stops.
    notifier: tokio::task::JoinHandle<()>,
    notifier_drain: std::time::Duration,
}

struct Inner {
    store: Arc<Store>,
    /// For inspections (`Engine::reconcile`); grants and revokes go through the effect runner.
    provisioner: Arc<dyn Provisioner>,
    /// The bound on one inspection (`Config::effect_timeout`).
    inspect_timeout: std::time::Duration,
    writer: WriterHandle,
    clock: Arc<dyn Clock>,
    signals: Arc<Signals>,
    metrics: Arc<Metrics>,
    /// The approval step of access request items (from `Config::approvers`).
    approval: jitflow_core::request::ApprovalStep,
    stop: std::sync::Mutex<Option<Stop>>,
    /// The store's gauges of the last scrape that read them (see [`Engine::scrape`]).
    last_gauges: std::sync::Mutex<Option<crate::metrics::Gauges>>,
}

/// The embedded engine. Cheap to clone: clones share one writer, scheduler and effect runner.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// A handle that does not keep the engine alive (the reconciliation pass holds one).
#[derive(Clone)]
pub(crate) struct WeakEngine(std::sync::Weak<Inner>);

impl WeakEngine {
    /// The engine, while a handle to it exists.
    pub(crate) fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(|inner| Engine { inner })
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// A stable 64-bit FNV-1a hash, for idempotency fingerprints: the same request gives the same
/// fingerprint in every process, unlike std's randomly keyed hasher.
pub(crate) fn fingerprint(parts: &[&str]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

impl Engine {
    /// Starts building an engine on the redb file at `path` (created if missing).
    pub fn builder(path: impl AsRef<Path>) -> Builder {
        Builder {
            path: path.as_ref().to_path_buf(),
            config: Config::default(),
            clock: Arc::new(SystemClock::default()),
            provisioner: None,
            validator: Arc::new(AcceptAll),
            notifier: Arc::new(NoNotifier),
            jitter_seed: 0,
            store: jitflow_store::open::Options::default(),
            backend: None,
        }
    }

    /// What the engine records (counters and histograms), as it stands.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Every metric series, named `jitflow_*`, in the Prometheus text format (served with
    /// [`metrics::CONTENT_TYPE`](crate::metrics::CONTENT_TYPE)): what [`Engine::metrics`]
    /// recorded, with gauges read now from the store and the writer's queue. It reads the store,
    /// so it blocks: call it from `spawn_blocking` in async code.
    pub fn scrape(&self) -> Result<String, Error> {
        let queued = self.inner.writer.queued() as u64;
        let health = crate::metrics::HealthGauges::read(&self.inner.signals.health);
        let mut last = self
            .inner
            .last_gauges
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let gauges = match crate::metrics::Gauges::read(
            &self.inner.store,
            &self.inner.metrics,
            self.now(),
            queued,
        ) {
            Ok(g) => {
                *last = Some(g);
                g
            }
            // While the store is being reopened after a failed write, the last figures read
            // stand in, so that the outage itself stays visible.
            Err(e) => match *last {
                Some(g) if !matches!(self.health(), crate::Health::Up) => g,
                _ => return Err(e.into()),
            },
        };
        drop(last);
        Ok(crate::metrics::encode(
            Arc::clone(&self.inner.metrics),
            gauges.with_writer(queued, health),
        ))
    }

    /// A handle that does not keep the engine alive.
    pub(crate) fn downgrade(&self) -> WeakEngine {
        WeakEngine(Arc::downgrade(&self.inner))
    }

    /// What inspections ask, and the bound on one (`Config::effect_timeout`).
    pub(crate) fn inspector(&self) -> (Arc<dyn Provisioner>, std::time::Duration) {
        (
            Arc::clone(&self.inner.provisioner),
            self.inner.inspect_timeout,
        )
    }

    /// The engine's clock.
    pub fn now(&self) -> jitflow_core::time::Timestamp {
        self.inner.clock.now()
    }

    /// The approval step each access request item goes through.
    pub(crate) fn approval_step(&self) -> &jitflow_core::request::ApprovalStep {
        &self.inner.approval
    }

    /// Whether the engine can write now. After a failed commit or checkpoint it is
    /// [`Health::Degraded`](crate::Health::Degraded) with the cause until it has reopened its
    /// store and written again, by itself (see [`heal`](crate::heal)).
    pub fn health(&self) -> crate::Health {
        self.inner.signals.health.health()
    }

    /// The store's hot layer and checkpoint figures (operators' gauges).
    pub fn store_stats(&self) -> jitflow_store::Stats {
        self.inner.store.stats()
    }

    /// The store, inside the engine. Not public: every write goes through the writer, and
    /// embedders read through the engine's methods, [`Engine::snapshot`] and
    /// [`Engine::verify`].
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// A consistent read-only snapshot of the store at the last commit, for queries the engine
    /// does not wrap (operators' tools, tests). Keep it short-lived.
    pub fn snapshot(&self) -> Result<jitflow_store::read::Reader, Error> {
        Ok(self.inner.store.reader()?)
    }

    /// Replays the whole log and compares it with the derived state (see
    /// `jitflow_store::Store::verify`). Reads everything, so it blocks: call it from
    /// `spawn_blocking` in async code.
    pub fn verify(&self) -> Result<jitflow_store::verify::Report, Error> {
        self.inner
            .store
            .verify()
            .map_err(|e| Error::Storage(e.to_string()))
    }

    /// Queues a request for the writer and returns where its answer will arrive, so that a bulk
    /// call can queue all its items before waiting (they then share group commits).
    pub(crate) fn submit(
        &self,
        caller: &Caller,
        op: Op,
        key: Option<Idempotency>,
    ) -> Result<oneshot::Receiver<Result<Reply, Error>>, Error> {
        if let Some(k) = &key
            && (k.key.is_empty() || k.key.len() > MAX_IDEMPOTENCY_KEY)
        {
            return Err(Error::Invalid(format!(
                "idempotency key must be 1..={MAX_IDEMPOTENCY_KEY} bytes"
            )));
        }
        self.inner.writer.try_submit(op, caller.actor.clone(), key)
    }

    async fn send(
        &self,
        caller: &Caller,
        op: Op,
        key: Option<Idempotency>,
    ) -> Result<Reply, Error> {
        let answer = self.submit(caller, op, key)?;
        answer.await.map_err(|_| Error::Stopped)?
    }

    /// Queues a command for a connection that the writer answers with the connection.
    fn submit_connection(
        &self,
        caller: &Caller,
        connection: ConnectionId,
        command: Command,
    ) -> Result<oneshot::Receiver<Result<Reply, Error>>, Error> {
        let op = Op::Connection {
            tenant: caller.tenant.clone(),
            connection,
            command,
        };
        self.submit(caller, op, None)
    }

    /// The connection a queued connection command answered with.
    async fn connection_reply(
        answer: oneshot::Receiver<Result<Reply, Error>>,
    ) -> Result<Option<Connection>, Error> {
        match answer.await.map_err(|_| Error::Stopped)?? {
            Reply::Connection(c) => Ok(c.map(|c| *c)),
            other => unreachable!("connection command answered {other:?}"),
        }
    }

    /// The answers of queued connection commands, in order; an item that could not be queued
    /// keeps its error.
    async fn connection_replies<E: From<Error>>(
        queued: Vec<Result<oneshot::Receiver<Result<Reply, Error>>, E>>,
    ) -> Vec<Result<Option<Connection>, E>> {
        let mut answers = Vec::with_capacity(queued.len());
        for answer in queued {
            answers.push(match answer {
                Ok(answer) => Self::connection_reply(answer).await.map_err(E::from),
                Err(e) => Err(e),
            });
        }
        answers
    }

    pub(crate) async fn connection_command(
        &self,
        caller: &Caller,
        connection: ConnectionId,
        command: Command,
    ) -> Result<Option<Connection>, Error> {
        let answer = self.submit_connection(caller, connection, command)?;
        Self::connection_reply(answer).await
    }

    async fn activation_command(
        &self,
        caller: &Caller,
        connection: ConnectionId,
        command: Command,
        key: Option<Idempotency>,
    ) -> Result<Activation, Error> {
        let kind = command.name();
        let op = Op::Connection {
            tenant: caller.tenant.clone(),
            connection,
            command,
        };
        let started = std::time::Instant::now();
        let reply = self.send(caller, op, key).await?;
        self.inner.metrics.signal_acked(kind, started.elapsed());
        match reply {
            Reply::Activation(a) => Ok(a),
            Reply::Connection(c) => current_activation(connection, c.map(|c| *c)),
            other => unreachable!("activation command answered {other:?}"),
        }
    }

    fn key(idempotency_key: Option<&str>, parts: &[&str]) -> Option<Idempotency> {
        idempotency_key.map(|key| Idempotency {
            key: key.to_owned(),
            fingerprint: fingerprint(parts),
        })
    }

    /// A signal's key: its `parts`, and what the client said when it said something (so a
    /// signal without it keeps the fingerprint it had before clients could say anything).
    fn signal_key(
        idempotency_key: Option<&str>,
        parts: &[&str],
        client: Option<&ClientInfo>,
    ) -> Option<Idempotency> {
        let summary = client.map(ClientInfo::summary);
        let mut parts = parts.to_vec();
        parts.extend(summary.as_deref());
        Self::key(idempotency_key, &parts)
    }

    /// Registers a connection. With the policy's `applyToFutureAssignments` on, a connection of a
    /// governed entitlement becomes JIT.
    pub async fn register(
        &self,
        caller: &Caller,
        spec: ConnectionSpec,
    ) -> Result<Connection, Error> {
        let id = spec.id;
        self.connection_command(caller, id, Command::Register(spec))
            .await
            .map(|c| c.expect("registered"))
    }

    /// Changes a connection's descriptive fields.
    pub async fn update(
        &self,
        caller: &Caller,
        connection: ConnectionId,
        update: ConnectionUpdate,
    ) -> Result<Connection, Error> {
        self.connection_command(caller, connection, Command::Update(update))
            .await
            .map(|c| c.expect("updated"))
    }

    /// Removes a connection (refused while access is moving or held by JIT).
    pub async fn remove(&self, caller: &Caller, connection: ConnectionId) -> Result<(), Error> {
        self.connection_command(caller, connection, Command::Remove)
            .await
            .map(|_| ())
    }

    /// Changes a connection's type, with its lifecycle effects (see ARCHITECTURE.md).
    pub async fn change_type(
        &self,
        caller: &Caller,
        connection: ConnectionId,
        kind: ConnectionType,
    ) -> Result<Connection, Error> {
        self.connection_command(caller, connection, Command::ChangeType(kind))
            .await
            .map(|c| c.expect("retyped"))
    }

    /// Applies a JSON Patch to a connection (`/type` and `/standalone`, see
    /// [`Patch`]): validated as a whole, then committed all or nothing, one event per field that
    /// changes, each recording the caller. A patch that changes nothing commits nothing.
    pub async fn patch_connection(
        &self,
        caller: &Caller,
        connection: ConnectionId,
        ops: &[PatchOp],
    ) -> Result<Connection, Error> {
        let patch = Patch::from_ops(ops)?;
        self.connection_command(caller, connection, Command::Patch(patch))
            .await
            .map(|c| c.expect("a patch never removes the connection"))
    }

    /// Changes the type of up to [`bulk::MAX_TYPE_UPDATES`] connections, each independently of
    /// the others: one result per item, in order (see [`bulk::ItemError`]). The items are queued
    /// together, so they share group commits. Refused as a whole only when the request is empty
    /// or too long.
    pub async fn bulk_change_type(
        &self,
        caller: &Caller,
        items: &[bulk::TypeUpdate],
    ) -> Result<Vec<Result<Connection, bulk::ItemError>>, Error> {
        let call = self.change_types(caller, items);
        bulk::timed(self, bulk::Kind::ChangeType, call).await
    }

    /// [`Engine::bulk_change_type`], untimed.
    async fn change_types(
        &self,
        caller: &Caller,
        items: &[bulk::TypeUpdate],
    ) -> Result<Vec<Result<Connection, bulk::ItemError>>, Error> {
        bulk::check_len(items.len(), bulk::MAX_TYPE_UPDATES)?;
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        let mut queued = Vec::with_capacity(items.len());
        for item in items {
            let answer = item.parse().and_then(|(id, kind)| {
                if !seen.insert(id) {
                    return Err(bulk::ItemError::Duplicate);
                }
                Ok(self.submit_connection(caller, id, Command::ChangeType(kind))?)
            });
            queued.push(answer);
        }
        let answers = Self::connection_replies(queued).await;
        bulk::whole(
            answers
                .into_iter()
                .map(|a| a.map(|c| c.expect("a type change never removes the connection")))
                .collect(),
            |e| match e {
                bulk::ItemError::Engine(e) => Some(e),
                _ => None,
            },
        )
    }

    /// Registers up to [`bulk::MAX_IMPORT`] connections, each independently of the others: one
    /// result per spec, in order. The specs are queued together, so they share group commits.
    /// Refused as a whole when the request is empty or too long, and when the engine could not
    /// write an item ([`Error::is_unavailable`]).
    pub async fn import(
        &self,
        caller: &Caller,
        specs: Vec<ConnectionSpec>,
    ) -> Result<Vec<Result<Connection, Error>>, Error> {
        bulk::timed(self, bulk::Kind::Import, self.register_all(caller, specs)).await
    }

    /// [`Engine::import`], untimed.
    async fn register_all(
        &self,
        caller: &Caller,
        specs: Vec<ConnectionSpec>,
    ) -> Result<Vec<Result<Connection, Error>>, Error> {
        bulk::check_len(specs.len(), bulk::MAX_IMPORT)?;
        let queued: Vec<_> = specs
            .into_iter()
            .map(|spec| self.submit_connection(caller, spec.id, Command::Register(spec)))
            .collect();
        let answers = Self::connection_replies(queued).await;
        bulk::whole(
            answers
                .into_iter()
                .map(|a| a.map(|c| c.expect("a registration answers the connection")))
                .collect(),
            |e| Some(e),
        )
    }

    /// Activates a JIT connection for `period` minutes (`None`: the policy default). Returns once
    /// the request is durable (the contract's 202), with the activation as committed (status
    /// CREATING). A retry with the same `idempotency_key` returns the same activation.
    ///
    /// `client` is what the client said about the request (SailPoint's `requestOrigin` and
    /// `metaData`, see [`ClientInfo`]): recorded on the `ActivationRequested` event, so the
    /// activation's history ([`Engine::history`], the audit [`export`](crate::export)) shows
    /// it. It is part of the request an idempotency key stands for: a retry must send the same.
    pub async fn activate(
        &self,
        caller: &Caller,
        connection: ConnectionId,
        period: Option<Minutes>,
        idempotency_key: Option<&str>,
        client: Option<ClientInfo>,
    ) -> Result<Activation, Error> {
        let period_text = period.map_or(String::new(), |p| p.get().to_string());
        let key = Self::signal_key(
            idempotency_key,
            &["activate", &connection.to_string(), &period_text],
            client.as_ref(),
        );
        let activation = ActivationId::from_u128(uuid_v4());
        let command = Command::Activate {
            activation,
            period,
            client,
        };
        self.activation_command(caller, connection, command, key)
            .await
    }

    /// Extends the running activation by `by` minutes (`None`: the policy default extension).
    /// `client` is recorded on the `Extended` event, as for [`Engine::activate`].
    pub async fn extend(
        &self,
        caller: &Caller,
        connection: ConnectionId,
        by: Option<Minutes>,
        idempotency_key: Option<&str>,
        client: Option<ClientInfo>,
    ) -> Result<Activation, Error> {
        let by_text = by.map_or(String::new(), |p| p.get().to_string());
        let key = Self::signal_key(
            idempotency_key,
            &["extend", &connection.to_string(), &by_text],
            client.as_ref(),
        );
        self.activation_command(caller, connection, Command::Extend { by, client }, key)
            .await
    }

    /// Ends the running activation early; the revoke runs after this returns. `client` is
    /// recorded on the `DeactivationRequested` event, as for [`Engine::activate`].
    pub async fn deactivate(
        &self,
        caller: &Caller,
        connection: ConnectionId,
        idempotency_key: Option<&str>,
        client: Option<ClientInfo>,
    ) -> Result<Activation, Error> {
        let key = Self::signal_key(
            idempotency_key,
            &["deactivate", &connection.to_string()],
            client.as_ref(),
        );
        self.activation_command(caller, connection, Command::Deactivate { client }, key)
            .await
    }

    /// Stores a whole policy for the caller's tenant.
    pub async fn put_policy(&self, caller: &Caller, policy: Policy) -> Result<Policy, Error> {
        let op = Op::Policy {
            tenant: caller.tenant.clone(),
            command: PolicyCommand::Put(policy),
        };
        match self.send(caller, op, None).await? {
            Reply::Policy(p) => Ok(p),
            other => unreachable!("policy command answered {other:?}"),
        }
    }

    /// Applies the contract's replace operations to the caller's tenant's policy, all or nothing;
    /// `expected_version` makes it conditional on the version the caller read.
    pub async fn patch_policy(
        &self,
        caller: &Caller,
        ops: Vec<PatchOp>,
        expected_version: Option<u64>,
    ) -> Result<Policy, Error> {
        let op = Op::Policy {
            tenant: caller.tenant.clone(),
            command: PolicyCommand::Patch {
                ops,
                expected_version,
            },
        };
        match self.send(caller, op, None).await? {
            Reply::Policy(p) => Ok(p),
            other => unreachable!("policy command answered {other:?}"),
        }
    }

    /// Replaces the `view` fields of the caller's tenant's access request config with those of
    /// `config` and keeps the others (the contract's PUT of `/access-request-config/v1` is
    /// `View::V1`, of `/v2` `View::V2`; `View::All` replaces the whole config). The merge is
    /// made by the writer with the config as committed, so racing PUTs of different versions
    /// keep each other's fields. Durable before it answers; submissions decided after it are
    /// checked against it. Returns the config stored.
    ///
    /// Errors: [`Error::RequestConfig`] when the merged config breaks a rule (nothing stored).
    pub async fn put_access_request_config(
        &self,
        caller: &Caller,
        view: View,
        config: AccessRequestConfig,
    ) -> Result<AccessRequestConfig, Error> {
        let op = Op::RequestConfig {
            tenant: caller.tenant.clone(),
            config: Box::new(config),
            view,
        };
        match self.send(caller, op, None).await? {
            Reply::RequestConfig(c) => Ok(*c),
            other => unreachable!("access request config change answered {other:?}"),
        }
    }

    /// The tenant's access request config as committed: the contract's defaults
    /// (`AccessRequestConfig::default`) until the first change.
    pub fn access_request_config(&self, tenant: &TenantId) -> Result<AccessRequestConfig, Error> {
        read(&self.inner.store, |r| r.access_request_config(tenant)).map(Option::unwrap_or_default)
    }

    /// The caller's tenant's policy, if stored.
    pub fn policy(&self, tenant: &TenantId) -> Result<Option<Policy>, Error> {
        read(&self.inner.store, |r| r.policy(tenant))
    }

    /// A connection as committed.
    pub fn connection(
        &self,
        tenant: &TenantId,
        id: ConnectionId,
    ) -> Result<Option<Connection>, Error> {
        read(&self.inner.store, |r| r.connection(tenant, id))
    }

    /// An activation as committed (running or ended).
    pub fn activation(
        &self,
        tenant: &TenantId,
        id: ActivationId,
    ) -> Result<Option<Activation>, Error> {
        read(&self.inner.store, |r| r.activation(tenant, id))
    }

    /// The events of one connection's or activation's stream, in order, after stream version
    /// `after` (0 = from the start), at most `limit` (1..=[`MAX_PAGE`]). Each event says who
    /// caused it and when.
    pub fn history(
        &self,
        tenant: &TenantId,
        stream: Stream,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StreamEvent>, Error> {
        check_limit(limit)?;
        read(&self.inner.store, |r| {
            r.stream(tenant, stream, after, limit)
        })
    }

    /// One page of the audit export: the committed events among the `limit` (1..=[`MAX_PAGE`])
    /// that follow global sequence `after`, keeping only `tenant`'s when it is given. The work is
    /// bounded by `limit` whatever the tenant, so a page may hold fewer events than it scanned
    /// (or none); continue from [`ExportPage::next_after`] until it reaches
    /// [`Engine::last_sequence`]. [`crate::export::json_line`] writes each event as JSON.
    pub fn export(
        &self,
        tenant: Option<&TenantId>,
        after: u64,
        limit: usize,
    ) -> Result<ExportPage, Error> {
        check_limit(limit)?;
        let scanned = read(&self.inner.store, |r| r.events_after(after, limit))?;
        let next_after = scanned.last().map_or(after, |e| e.sequence);
        let events = scanned
            .into_iter()
            .filter(|e| tenant.is_none_or(|t| e.tenant == *t))
            .collect();
        Ok(ExportPage { events, next_after })
    }

    /// The global sequence of the last committed event (0 when none).
    pub fn last_sequence(&self) -> Result<u64, Error> {
        read(&self.inner.store, |r| r.last_sequence())
    }

    /// Follows the committed event stream from global sequence `after` (exclusive; 0 = from the
    /// start), across all tenants, for audit export and live views. Never skips an event: it
    /// reads the store and uses live notifications only as a wake-up.
    pub fn subscribe(&self, after: u64) -> Subscription {
        Subscription::new(Arc::clone(&self.inner.store), &self.inner.signals, after)
    }

    /// Stops the engine. The scheduler and the effect runner stop at once: effects in flight are
    /// abandoned, and their intents, which are durable, run again when the store is next opened.
    /// The notifier delivers what is committed (for at most `effect_timeout`) and saves its
    /// position; then the writer finishes the batch in flight, answers it, and stops. Later calls
    /// on any clone fail with [`Error::Stopped`]. Calling it twice is harmless.
    pub async fn shutdown(&self) {
        let Some(stop) = self.inner.stop.lock().expect("not poisoned").take() else {
            return;
        };
        let _ = stop.shutdown.send(true);
        for task in stop.tasks {
            task.abort();
            let _ = task.await;
        }
        let mut notifier = stop.notifier;
        if tokio::time::timeout(stop.notifier_drain, &mut notifier)
            .await
            .is_err()
        {
            notifier.abort();
            let _ = notifier.await;
        }
        let _ = self.inner.writer.call(Op::Shutdown).await;
        let _ = tokio::task::spawn_blocking(move || stop.writer_thread.join()).await;
    }
}

fn check_limit(limit: usize) -> Result<(), Error> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::Invalid(format!("limit must be 1..={MAX_PAGE}")));
    }
    Ok(())
}

fn current_activation(id: ConnectionId, c: Option<Connection>) -> Result<Activation, Error> {
    c.and_then(|c| c.activation)
        .ok_or(Error::Rejected(Rejection::NotFound(id)))
}

/// A random version-4 UUID for a new activation.
pub(crate) fn uuid_v4() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

/// A page of [`Engine::export`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPage {
    /// The events kept, in global sequence order.
    pub events: Vec<Envelope>,
    /// The last sequence scanned: where the next page starts.
    pub next_after: u64,
}

/// A follower of the committed event stream. See [`Engine::subscribe`]. It keeps the store file
/// open until it is dropped (or its engine stops and it has read every committed event).
pub struct Subscription {
    store: Arc<Store>,
    next_after: u64,
    buffer: std::collections::VecDeque<Envelope>,
    live: broadcast::Receiver<u64>,
}

impl Subscription {
    /// Follows the log after `after`. The live receiver is taken before the first read, so no
    /// commit between the read and the wait can be missed.
    fn new(store: Arc<Store>, signals: &Signals, after: u64) -> Subscription {
        Subscription {
            store,
            next_after: after,
            buffer: std::collections::VecDeque::new(),
            live: signals.committed.subscribe(),
        }
    }

    /// Whether every event read from the store so far has been returned.
    pub(crate) fn caught_up(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The next committed event if there is one now, without waiting.
    pub(crate) fn try_next(&mut self) -> Result<Option<Envelope>, Error> {
        if self.buffer.is_empty() {
            let page = read(&self.store, |r| r.events_after(self.next_after, 256))?;
            self.buffer.extend(page);
        }
        Ok(self
            .buffer
            .pop_front()
            .inspect(|e| self.next_after = e.sequence))
    }

    /// The next committed event, waiting for one if none is there yet. `Err(Error::Stopped)`
    /// once the engine stopped and every committed event was read.
    pub async fn next(&mut self) -> Result<Envelope, Error> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.next_after = event.sequence;
                return Ok(event);
            }
            let page = read(&self.store, |r| r.events_after(self.next_after, 256))?;
            if !page.is_empty() {
                self.buffer.extend(page);
                continue;
            }
            match self.live.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Err(Error::Stopped),
            }
        }
    }
}
