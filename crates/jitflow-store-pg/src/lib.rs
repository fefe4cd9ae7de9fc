//! jitflow's PostgreSQL storage backend: the store's log and checkpointed tables in a shared
//! database, so that several engine nodes can share one store, each writing the partitions it
//! holds a lease on.
//!
//! [`PgBackend`] implements `jitflow_store::backend::Backend`; open a store on it with
//! `Store::open_on`, or an engine with `jitflow::Engine::builder(..).backend(..)`. The store's
//! logic (derivation, hot layer, queries, `verify`) is the same over it as over the redb file.
//! A crate of its own, so embedders who want only the file compile no database client.
//!
//! # Layout
//!
//! See [`schema`]: the log in `jitflow_log`, keyed by (partition, log, number); the
//! checkpointed derived tables in `jitflow_rows`, keyed by (partition, table name, order
//! bytes), which puts tenant data in tenant order since the order bytes start with the tenant;
//! leases in `jitflow_leases`; the schema version and record format in `jitflow_schema`. The
//! engine creates the tables in an empty database and refuses a database of a newer schema
//! ([`Error::NewerSchema`]) or another record format ([`Error::RecordFormat`]).
//!
//! # Writes
//!
//! An append is one transaction: `SET LOCAL synchronous_commit TO on` (durable at commit,
//! whatever the server's default), the lease fence, and one multi-row `INSERT ... SELECT FROM
//! UNNEST(arrays)` of the batch's events and extras record. A failure before `COMMIT` is
//! `WriteError::Failed` (nothing committed); a failure or timeout of the `COMMIT` itself is
//! `WriteError::OutcomeUnknown` (the store reopens and reads the log to learn it). A
//! checkpoint is one transaction too: the fence, then upserts and deletes of at most
//! [`CHECKPOINT_BATCH`] rows per statement.
//!
//! # Leases and fencing
//!
//! Each node holds a lease per partition ([`LeaseOptions`]), taken on open (bumping the
//! partition's epoch) and renewed in the background every third of its duration, by the
//! database's clock. Every write transaction first reads its partition's lease row
//! `FOR SHARE` and goes on only if the owner and epoch are its own and the lease is unexpired;
//! the share lock keeps a takeover (an `UPDATE` of that row) out until the write ends. So a
//! node that lost its lease writes nothing: its append fails with `WriteError::Fenced`, which
//! the store reports as `append::Error::Fenced` and poisons itself until it is reopened, which
//! takes the lease again only once it is free. The writer's session ends when a transaction
//! of it stays idle for a whole lease (`idle_in_transaction_session_timeout`): a node paused in
//! the middle of a write would otherwise hold the share lock, and keep the next node out, for
//! as long as its pause lasts. [`PgBackend::release`] ends the leases of a
//! clean stop at once, so the next node need not wait for them to expire.
//!
//! # Nodes and partitions
//!
//! A database's tenants may be spread over several partitions ([`Config::partition_count`],
//! fixed when the database is created; a tenant's partition is
//! `jitflow_store::backend::Partition::of_tenant`). A node serves a partition with a backend
//! leasing it and a store opened on it (`open::Options::partition`). [`Membership`] is a
//! node's heartbeat and its [`View`] of the others: [`View::plan`] says which live node should
//! serve each partition, the same on every node. The plan only says who should take a lease;
//! the leases decide who writes.
//!
//! # Snapshots
//!
//! A snapshot holds one pooled connection (at most [`Config::snapshots_max`]) in a
//! `REPEATABLE READ READ ONLY` transaction until it is dropped, so every read of it sees one
//! committed state. Ranges are lazy and double ended: keyset pages of [`PAGE`] rows from
//! either end, until the two meet. The checkpointed rows change only by this node's
//! checkpoints, so readers share one snapshot between two checkpoints (for at most
//! [`SHARED_MAX_AGE`]) and its point reads and range pages are kept in memory (at most
//! [`CACHED_MAX`] rows each); log records, immutable once committed, are read outside the
//! transaction.
//!
//! # Threads
//!
//! The `Backend` trait is synchronous, and the store calls it from its writer thread and from
//! readers, some inside the engine's tokio workers, where blocking on a runtime
//! (`Runtime::block_on`, or the blocking `postgres` crate) panics. So the backend owns a small
//! tokio runtime ([`RUNTIME_THREADS`] workers): each call spawns its work there and waits for
//! the answer on a `std::sync::mpsc` channel, which is safe on any thread. Every statement is
//! bounded by [`STATEMENT_TIMEOUT`].
//!
//! # Why each dependency
//!
//! - `tokio-postgres`: the asynchronous PostgreSQL client of the rust-postgres project, the
//!   one the Rust community builds on (sqlx and deadpool-postgres wrap or sit beside it):
//!   pipelined queries, binary parameters (arrays of `bytea` for multi-row statements), no
//!   compile-time database needed, unlike sqlx's checked queries.
//! - `deadpool-postgres`: a small, widely used pool of tokio-postgres connections, with a
//!   bound and a wait timeout, for the snapshots' connections.
//! - `tokio`: the backend's own runtime (see Threads).
//! - `jitflow-store`: the storage interface this implements.
//! - `thiserror`, `tracing`: typed errors; lease and connection events in the logs.
//! - `tempfile` (feature `testing` only): the throwaway cluster's folder.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use jitflow_store::Store;
//! use jitflow_store::open::Options;
//! use jitflow_store_pg::{Config, LeaseOptions, PgBackend};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::new(
//!     "host=127.0.0.1 port=5432 user=jitflow dbname=jitflow",
//!     "node-1",
//!     LeaseOptions::new(Duration::from_secs(15)),
//! );
//! let backend = PgBackend::open(config)?;
//! let store = Store::open_on(Arc::new(backend), Options::default())?;
//! assert_eq!(store.stats().sequence, store.reader()?.last_sequence()?);
//! # Ok(())
//! # }
//! ```
//!
//! The cargo feature `testing` adds [`testing`]: a throwaway PostgreSQL cluster for tests.
#![forbid(unsafe_code)]

mod backend;
mod config;
mod error;
mod lease;
mod membership;
mod rt;
pub mod schema;
mod snapshot;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::{CHECKPOINT_BATCH, PgBackend, SNAPSHOT_WAIT};
pub use config::{
    Config, DEFAULT_SNAPSHOTS_MAX, LeaseOptions, MAX_LEASE, MAX_NODE_ID_LEN, MAX_PARTITIONS,
    MAX_SNAPSHOTS, MIN_LEASE,
};
pub use error::Error;
pub use membership::{Holder, MAX_ADDRESS_LEN, Membership, Node, View};
pub use rt::{CONNECT_TIMEOUT, RUNTIME_THREADS, STATEMENT_TIMEOUT};
pub use snapshot::{CACHED_MAX, FIRST_PAGE, PAGE, SHARED_MAX_AGE};
