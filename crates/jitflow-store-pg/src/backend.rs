//! `PgBackend`: the store's log and checkpoints in PostgreSQL, every write fenced.

use std::any::Any;
use std::io;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use deadpool_postgres::{ManagerConfig, Pool, RecyclingMethod};
use jitflow_store::backend::{Append, Backend, Partition, Row, Snapshot, WriteError, table_name};
use tokio_postgres::{Client, Statement};

use crate::lease::{FENCE, Leases, column};
use crate::rt::{CONNECT_TIMEOUT, Runtime, within};
use crate::{Config, Error};

/// The most rows one checkpoint statement carries (as arrays): large enough that a checkpoint
/// of the layer's bound takes a few dozen round trips, small enough that a statement's
/// parameters stay a few MiB.
pub const CHECKPOINT_BATCH: usize = 5_000;

/// How long a reader waits for a free snapshot connection before its read fails.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// The log table's code of each log.
pub(crate) fn log_code(log: jitflow_store::backend::Log) -> i16 {
    match log {
        jitflow_store::backend::Log::Events => 1,
        jitflow_store::backend::Log::Extras => 2,
    }
}

const INSERT_LOG: &str = "
INSERT INTO jitflow_log (partition, log, number, body)
SELECT $1, l, n, b FROM UNNEST($2::smallint[], $3::bigint[], $4::bytea[]) AS u(l, n, b)";

const UPSERT: &str = "
INSERT INTO jitflow_rows (partition, tbl, key, native, value)
SELECT $1, t, k, n, v FROM UNNEST($2::text[], $3::bytea[], $4::bytea[], $5::bytea[]) AS u(t, k, n, v)
ON CONFLICT (partition, tbl, key) DO UPDATE SET native = EXCLUDED.native, value = EXCLUDED.value";

const DELETE: &str = "
DELETE FROM jitflow_rows r USING UNNEST($2::text[], $3::bytea[]) AS d(t, k)
WHERE r.partition = $1 AND r.tbl = d.t AND r.key = d.k";

/// Every write transaction starts so: durable on commit whatever the server's default.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit TO on";

/// The writer's connection, its statements prepared once.
pub(crate) struct Writer {
    client: Client,
    fence: Statement,
    log: Statement,
    upsert: Statement,
    delete: Statement,
}

impl Writer {
    async fn prepare(client: Client) -> io::Result<Writer> {
        Ok(Writer {
            fence: within(client.prepare(FENCE)).await?,
            log: within(client.prepare(INSERT_LOG)).await?,
            upsert: within(client.prepare(UPSERT)).await?,
            delete: within(client.prepare(DELETE)).await?,
            client,
        })
    }
}

/// Where a write transaction failed.
enum Failure {
    /// Before the commit: nothing committed.
    Before(io::Error),
    /// The fence refused it.
    Fenced { epoch: u64, reason: String },
    /// At the commit: the outcome is unknown.
    Commit(io::Error),
}

impl Failure {
    fn into_write(self, partition: Partition) -> WriteError {
        match self {
            Failure::Before(e) => WriteError::Failed(e),
            Failure::Fenced { epoch, reason } => WriteError::Fenced {
                partition,
                epoch,
                reason,
            },
            Failure::Commit(e) => WriteError::OutcomeUnknown(e),
        }
    }
}

/// Starts a write transaction of `partition` and checks its lease.
async fn begin_fenced(
    w: &Writer,
    partition: Partition,
    node: &str,
    epoch: u64,
) -> Result<(), Failure> {
    within(w.client.batch_execute(BEGIN))
        .await
        .map_err(Failure::Before)?;
    let row = within(w.client.query_opt(&w.fence, &[&column(partition)]))
        .await
        .map_err(Failure::Before)?;
    let reason = match row {
        None => "no node holds it".to_owned(),
        Some(row) => {
            let (owner, at, live): (String, i64, bool) = (row.get(0), row.get(1), row.get(2));
            let ours = owner == node && u64::try_from(at) == Ok(epoch);
            match (ours, live) {
                (true, true) => return Ok(()),
                (true, false) => "the lease expired (not renewed in time)".to_owned(),
                (false, _) => format!("node {owner:?} holds it at epoch {at}"),
            }
        }
    };
    rollback(w).await;
    Err(Failure::Fenced { epoch, reason })
}

/// Ends a failed transaction (best effort: a broken connection has ended it already).
async fn rollback(w: &Writer) {
    if let Err(e) = within(w.client.batch_execute("ROLLBACK")).await {
        tracing::debug!(error = %e, "rollback after a failed write");
    }
}

/// Commits, or rolls back after `result`'s failure.
async fn finish(w: &Writer, result: Result<(), Failure>) -> Result<(), Failure> {
    match result {
        Ok(()) => within(w.client.batch_execute("COMMIT"))
            .await
            .map_err(Failure::Commit),
        Err(e) => {
            rollback(w).await;
            Err(e)
        }
    }
}

/// Ends the writer's session when a transaction of it stays idle for a lease: a node paused
/// with a write open (a stopped process, a stalled host) would otherwise hold its fence's
/// share lock on the lease row, and keep every other node out, for as long as it is paused.
/// A live writer never idles in a transaction that long (a checkpoint's pauses between its
/// statements are the reading of rows from memory).
fn idle_timeout(lease: Duration) -> String {
    format!(
        "SET idle_in_transaction_session_timeout = {}",
        lease.as_millis().max(1)
    )
}

fn number(n: u64) -> io::Result<i64> {
    i64::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "log number past i64"))
}

/// The backend: a shared PostgreSQL database (see the crate docs).
pub struct PgBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Declared first, dropped first: stops the renewals and closes the connections' tasks.
    pub(crate) runtime: Runtime,
    pg: tokio_postgres::Config,
    config: Config,
    /// The snapshots' connections; replaced by `recover`.
    pool: RwLock<Pool>,
    /// The writer's connection; `None` until connected (and after `recover` dropped it).
    writer: Mutex<Option<Arc<Writer>>>,
    pub(crate) leases: Arc<Leases>,
    renewer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Bumped when a checkpoint ends (committed, failed or unknown) and on `recover`: the
    /// checkpointed rows may have changed, so no snapshot taken before is shared after.
    pub(crate) generation: std::sync::atomic::AtomicU64,
    /// The snapshot readers share while no checkpoint ends (see `snapshot::open`).
    pub(crate) shared: Mutex<Option<crate::snapshot::Shared>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .renewer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("node_id", &self.inner.config.node_id)
            .field("partitions", &self.inner.config.partitions)
            .finish_non_exhaustive()
    }
}

fn pool(pg: &tokio_postgres::Config, size: usize) -> Result<Pool, Error> {
    let manager = deadpool_postgres::Manager::from_config(
        pg.clone(),
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(SNAPSHOT_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| Error::Database(io::Error::other(e)))
}

impl PgBackend {
    /// Connects, creates or checks the schema, and takes the leases of `config.partitions`
    /// (each bumps its epoch); then renews them in the background every third of their
    /// duration. Blocking; callable from any thread, including inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`], [`Error::Url`], [`Error::Runtime`], [`Error::Database`] (the
    /// database cannot be reached), [`Error::NewerSchema`], [`Error::RecordFormat`],
    /// [`Error::DamagedSchema`], [`Error::PartitionCount`], and [`Error::LeaseHeld`] when
    /// another node holds a partition.
    pub fn open(config: Config) -> Result<PgBackend, Error> {
        config.validate()?;
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(Error::Url)?;
        pg.connect_timeout(CONNECT_TIMEOUT);
        pg.application_name("jitflow");
        let runtime = Runtime::new().map_err(Error::Runtime)?;
        let leases = Arc::new(Leases::new(config.node_id.clone(), config.lease.duration));
        let inner = Arc::new(Inner {
            pool: RwLock::new(pool(&pg, config.snapshots_max)?),
            runtime,
            pg: pg.clone(),
            writer: Mutex::new(None),
            leases: Arc::clone(&leases),
            renewer: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            shared: Mutex::new(None),
            config,
        });
        inner.connect()?;
        let every = inner.config.lease.renew_every();
        let task = inner
            .runtime
            .handle()
            .spawn(leases.renew_forever(pg, every));
        *inner.renewer.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(PgBackend { inner })
    }

    /// How many partitions the database's tenants are spread over
    /// ([`Config::partition_count`], checked against the database on open).
    pub fn partition_count(&self) -> u32 {
        self.inner.config.partition_count
    }

    /// The epoch this node holds `partition`'s lease at, if it holds it (as far as this node
    /// knows: a lease that expired unseen still shows until the next renewal or write).
    pub fn epoch(&self, partition: Partition) -> Option<u64> {
        self.inner.leases.epoch(partition)
    }

    /// Hands this node's partitions over at once (a clean stop): its leases end now, and no
    /// write of this backend commits after (they fail as fenced). Without it, another node
    /// waits for the leases to expire. The caller stops the engine or store first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the database cannot be reached; the leases then expire by
    /// themselves.
    pub fn release(&self) -> Result<(), Error> {
        let writer = self
            .inner
            .writer()
            .map_err(|e| Error::Database(io::Error::other(e)))?;
        let leases = Arc::clone(&self.inner.leases);
        self.inner
            .runtime
            .run(async move { leases.release(&writer.client).await })
            .map_err(Error::Runtime)?
            .map_err(Error::Database)
    }

    /// Stops renewing the leases, as a node that stalls would (tests of fencing).
    #[cfg(feature = "testing")]
    pub fn pause_renewals(&self) {
        self.inner.leases.pause();
    }
}

impl Inner {
    /// Opens the writer's connection, checks the schema and takes the leases.
    fn connect(&self) -> Result<(), Error> {
        let pg = self.pg.clone();
        let leases = Arc::clone(&self.leases);
        let partitions = self.config.partitions.clone();
        let count = self.config.partition_count;
        let idle = idle_timeout(self.config.lease.duration);
        let (writer, epochs) = self
            .runtime
            .run(async move {
                let mut client = crate::rt::connect(&pg).await.map_err(Error::Database)?;
                within(client.batch_execute(&idle))
                    .await
                    .map_err(Error::Database)?;
                crate::schema::ensure(&mut client, count).await?;
                let mut epochs = Vec::with_capacity(partitions.len());
                for partition in partitions {
                    epochs.push((partition, leases.acquire(&client, partition).await?));
                }
                let writer = Writer::prepare(client).await.map_err(Error::Database)?;
                Ok::<_, Error>((writer, epochs))
            })
            .map_err(Error::Runtime)??;
        for (partition, epoch) in epochs {
            self.leases.set(partition, epoch);
        }
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(writer));
        Ok(())
    }

    fn writer(&self) -> Result<Arc<Writer>, WriteError> {
        match &*self.writer.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(w) => Ok(Arc::clone(w)),
            None => Err(WriteError::Failed(io::Error::new(
                io::ErrorKind::NotConnected,
                "the PostgreSQL backend is not connected: recover it",
            ))),
        }
    }

    fn epoch(&self, partition: Partition) -> Result<u64, WriteError> {
        self.leases
            .epoch(partition)
            .ok_or_else(|| WriteError::Fenced {
                partition,
                epoch: 0,
                reason: "this node holds no lease of it".into(),
            })
    }

    /// Ends the sharing of the current snapshot: the checkpointed rows may have changed.
    pub(crate) fn rows_changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        drop(self.shared.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    pub(crate) fn pool(&self) -> Pool {
        self.pool.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs one step of a write transaction on the runtime.
    fn step<T: Send + 'static>(
        &self,
        step: impl Future<Output = Result<T, Failure>> + Send + 'static,
    ) -> Result<T, Failure> {
        self.runtime.run(step).map_err(Failure::Before)?
    }
}

/// A checkpoint's rows, gathered for one pair of statements.
#[derive(Default)]
struct Chunk {
    tables: Vec<&'static str>,
    keys: Vec<Vec<u8>>,
    natives: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    gone_tables: Vec<&'static str>,
    gone_keys: Vec<Vec<u8>>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.keys.len() + self.gone_keys.len()
    }

    fn push(&mut self, row: &Row<'_>) -> io::Result<()> {
        let table = table_name(row.table).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no table has id {}", row.table),
            )
        })?;
        match row.value {
            Some(value) => {
                self.tables.push(table);
                self.keys.push(row.key.order().to_vec());
                self.natives.push(row.key.native().to_vec());
                self.values.push(value.to_vec());
            }
            None => {
                self.gone_tables.push(table);
                self.gone_keys.push(row.key.order().to_vec());
            }
        }
        Ok(())
    }

    async fn write(self, w: &Writer, partition: i32) -> io::Result<()> {
        if !self.keys.is_empty() {
            within(w.client.execute(
                &w.upsert,
                &[
                    &partition,
                    &self.tables,
                    &self.keys,
                    &self.natives,
                    &self.values,
                ],
            ))
            .await?;
        }
        if !self.gone_keys.is_empty() {
            within(
                w.client
                    .execute(&w.delete, &[&partition, &self.gone_tables, &self.gone_keys]),
            )
            .await?;
        }
        Ok(())
    }
}

impl Backend for PgBackend {
    fn append(&self, partition: Partition, append: Append<'_>) -> Result<(), WriteError> {
        let inner = &self.inner;
        let writer = inner.writer()?;
        let epoch = inner.epoch(partition)?;
        let node = inner.config.node_id.clone();
        let mut logs = Vec::with_capacity(append.events.len() + 1);
        let mut numbers = Vec::with_capacity(logs.capacity());
        let mut bodies: Vec<Vec<u8>> = Vec::with_capacity(logs.capacity());
        for (sequence, body) in (append.first..).zip(append.events) {
            logs.push(log_code(jitflow_store::backend::Log::Events));
            numbers.push(number(sequence).map_err(WriteError::Failed)?);
            bodies.push(body.clone());
        }
        if let Some((n, body)) = append.extras {
            logs.push(log_code(jitflow_store::backend::Log::Extras));
            numbers.push(number(n).map_err(WriteError::Failed)?);
            bodies.push(body.to_vec());
        }
        let p = column(partition);
        inner
            .step(async move {
                begin_fenced(&writer, partition, &node, epoch).await?;
                let insert = within(
                    writer
                        .client
                        .execute(&writer.log, &[&p, &logs, &numbers, &bodies]),
                )
                .await
                .map(drop)
                .map_err(Failure::Before);
                finish(&writer, insert).await
            })
            .map_err(|f| f.into_write(partition))
    }

    fn checkpoint(
        &self,
        partition: Partition,
        rows: &mut dyn Iterator<Item = Row<'_>>,
    ) -> Result<u64, WriteError> {
        let inner = &self.inner;
        let writer = inner.writer()?;
        let epoch = inner.epoch(partition)?;
        let node = inner.config.node_id.clone();
        let w = Arc::clone(&writer);
        inner
            .step(async move { begin_fenced(&w, partition, &node, epoch).await })
            .map_err(|f| f.into_write(partition))?;
        // The rows are read on this thread (they borrow the caller's layer) and sent a chunk
        // at a time; the transaction stays open on the writer's connection in between.
        let written = (|| -> Result<u64, Failure> {
            let mut written = 0;
            let mut rows = rows.peekable();
            while rows.peek().is_some() {
                let mut chunk = Chunk::default();
                for row in rows.by_ref().take(CHECKPOINT_BATCH) {
                    chunk.push(&row).map_err(Failure::Before)?;
                }
                written += chunk.len() as u64;
                let w = Arc::clone(&writer);
                let p = column(partition);
                inner.step(async move { chunk.write(&w, p).await.map_err(Failure::Before) })?;
            }
            Ok(written)
        })();
        let (result, n) = match written {
            Ok(n) => (Ok(()), n),
            Err(f) => (Err(f), 0),
        };
        let finished = inner.step(async move { finish(&writer, result).await });
        // Whatever the outcome, snapshots taken from now on are new ones.
        inner.rows_changed();
        finished.map_err(|f| f.into_write(partition))?;
        Ok(n)
    }

    fn snapshot(&self, partition: Partition) -> io::Result<Arc<dyn Snapshot>> {
        crate::snapshot::open(&self.inner, partition)
    }

    fn recover(&self) -> Result<(), jitflow_store::open::Error> {
        let inner = &self.inner;
        drop(
            inner
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        inner.leases.clear();
        inner.rows_changed();
        // Fresh snapshot connections too; snapshots still open keep theirs until dropped.
        let fresh = pool(&inner.pg, inner.config.snapshots_max)
            .map_err(|e| jitflow_store::open::Error::Backend(Box::new(e)))?;
        let old = std::mem::replace(
            &mut *inner.pool.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        );
        old.close();
        inner
            .connect()
            .map_err(|e| jitflow_store::open::Error::Backend(Box::new(e)))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
