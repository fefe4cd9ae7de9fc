//! The storage interface: what the store needs from the thing that keeps its bytes.
//!
//! Three jobs sit above this line and know nothing of the backend: the derivation (what an
//! event changes), the hot layer (rows changed since the last checkpoint, merged over a
//! snapshot) and the queries. Below it a backend does I/O only: it appends log records durably,
//! writes a checkpoint's rows atomically, and serves a consistent snapshot of the checkpointed
//! rows and the log by key and by ordered range. Bytes at the boundary, types above it.
//!
//! *Keys.* A derived row's key ([`Key`]) carries two encodings in one allocation: its *order*
//! bytes (the table's key fields in an order-preserving encoding, compared with `memcmp`; the
//! order of every range) and its *native* bytes (the compact encoding the typed tables decode).
//! A backend orders rows by the order bytes and hands both back; the redb file keeps typed
//! tables whose own order equals it (a property test pins that), a SQL backend would key a
//! `bytea` column by them.
//!
//! *Sync.* The interface is synchronous: the writer is an OS thread and every read already runs
//! off the async workers (`spawn_blocking`, or a point read short enough to take inline). A
//! backend over an async client drives it from those threads.
//!
//! *Partitions.* Every call names a [`Partition`]. The redb file has one (0); a shared database
//! splits the key space into several, each written by the node that holds its lease, and
//! fences every append and checkpoint by it. Passing it now keeps the trait unchanged when
//! such a backend arrives.
//!
//! *Architecture invariant*: nothing above this module names a redb type on the read or write
//! path; the file-level operations (open, upgrade, compaction, fault tests) are the redb
//! backend's own ([`RedbFile`]).

use std::any::Any;
use std::ops::Bound;
use std::sync::Arc;

pub use crate::hot::RowKey as Key;

pub(crate) mod file;

pub use file::RedbFile;

/// Bytes a backend hands back (a value, a log record).
pub type Bytes = Arc<[u8]>;

/// A part of the key space with its own log and checkpoints. The redb file has one: 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(pub u32);

impl Partition {
    /// The only partition of a single-file store.
    pub const WHOLE: Partition = Partition(0);

    /// The partition holding `tenant`'s data when tenants are spread over `count` partitions
    /// (`count` at least 1): FNV-1a (64 bits) of the tenant id's bytes, modulo `count`.
    ///
    /// A whole tenant goes to one partition: its connections, requests, policy and config, so
    /// that one writer decides every command against its tenant's state, as on one file. The
    /// hash is part of the stored layout: changing it, or `count`, would look for tenants in
    /// partitions that do not hold them.
    pub fn of_tenant(tenant: &str, count: u32) -> Partition {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let hash = tenant
            .bytes()
            .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
        let partition = hash % u64::from(count.max(1));
        // Below `count`, a u32.
        Partition(u32::try_from(partition).unwrap_or(0))
    }
}

/// The id of a derived table (see the store's table list); not persisted.
pub type TableId = u8;

/// The persisted name of derived table `table` (the name a backend keys its rows by: ids are
/// not persisted), `None` for an id no table has.
pub fn table_name(table: TableId) -> Option<&'static str> {
    crate::tables::name(table)
}

/// How many derived tables there are: their ids are `0..TABLES`.
pub const TABLES: usize = crate::tables::COUNT;

/// The two tables of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// Events, by global sequence (from 1, contiguous).
    Events,
    /// Extras records (idempotency results and cursors of a batch), by number (from 1,
    /// contiguous).
    Extras,
}

/// What one group commit appends to the log.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// The sequence of the first event.
    pub first: u64,
    /// Encoded events, with sequences `first..`.
    pub events: &'a [Vec<u8>],
    /// The batch's extras record and its number, when it has one.
    pub extras: Option<(u64, &'a [u8])>,
}

/// One row of a checkpoint: a value, or `None` to delete the row.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// The row's table.
    pub table: TableId,
    /// Its key.
    pub key: &'a Key,
    /// Its value, `None` for a deletion.
    pub value: Option<&'a [u8]>,
}

/// Why a write (an append, a checkpoint) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Nothing of the write was committed (it failed before the commit).
    #[error("storage error, nothing committed: {0}")]
    Failed(#[source] std::io::Error),
    /// The commit itself failed: the write may or may not be durable. Read the log again after
    /// [`Backend::recover`] to learn which.
    #[error("the commit failed; the outcome is unknown: {0}")]
    OutcomeUnknown(#[source] std::io::Error),
    /// This node does not hold the lease of `partition` (it expired, or another node took it,
    /// bumping its epoch): nothing of the write was committed, and no write of this node can
    /// commit until it holds the lease again. Only a shared database's backend answers it.
    #[error("fenced: partition {} is not ours at epoch {epoch}: {reason}", partition.0)]
    Fenced {
        /// The partition written.
        partition: Partition,
        /// The lease epoch this node wrote with.
        epoch: u64,
        /// Why the lease is not ours (who holds it now, or that it expired).
        reason: String,
    },
}

/// The rows of a range read, in order of their keys' order bytes, either way.
pub type Rows<'a> = Box<dyn DoubleEndedIterator<Item = std::io::Result<(Key, Bytes)>> + 'a>;

/// The records of a log range read, in order.
pub type Records<'a> = Box<dyn Iterator<Item = std::io::Result<(u64, Bytes)>> + 'a>;

/// Where the store keeps its bytes. Object safe: the store holds an `Arc<dyn Backend>`, so
/// nothing above it is generic. One writer calls `append` and `checkpoint` (never two at
/// once); any number of threads take snapshots.
pub trait Backend: Send + Sync + 'static {
    /// Appends one group commit's records to the log of `partition`; durable (fsynced) when it
    /// returns `Ok`. Nothing randomly keyed is written.
    fn append(&self, partition: Partition, append: Append<'_>) -> Result<(), WriteError>;

    /// Writes a checkpoint of `partition`: `rows` (each table's rows in key order, each key
    /// once), all or nothing, durable when it returns `Ok`. The rows include the log position
    /// they cover (in the `meta` table), so a snapshot reads it with them.
    fn checkpoint(
        &self,
        partition: Partition,
        rows: &mut dyn Iterator<Item = Row<'_>>,
    ) -> Result<u64, WriteError>;

    /// A consistent snapshot of the checkpointed rows and the log of `partition`. Rows
    /// checkpointed and records appended later are not in it (the log may hold records after
    /// the caller's published position: read only up to it).
    fn snapshot(&self, partition: Partition) -> std::io::Result<Arc<dyn Snapshot>>;

    /// After a failed write: closes and opens the backend again (for a file, the storage
    /// engine's recovery), so that writes can go on. The caller then rebuilds its state from
    /// a new snapshot.
    fn recover(&self) -> Result<(), crate::open::Error>;

    /// The backend as `Any`, for operations only one backend has (compaction of a file).
    fn as_any(&self) -> &dyn Any;
}

/// A consistent view of one partition's checkpointed rows and log.
pub trait Snapshot: Send + Sync {
    /// The value of `key` in `table`.
    fn get(&self, table: TableId, key: &Key) -> std::io::Result<Option<Bytes>>;

    /// The rows of `table` within the bounds, in key order (double ended).
    fn range<'a>(
        &'a self,
        table: TableId,
        lower: Bound<&Key>,
        upper: Bound<&Key>,
    ) -> std::io::Result<Rows<'a>>;

    /// The number of rows of `table`, in constant time (asked for the backlog's tables only).
    fn len(&self, table: TableId) -> std::io::Result<u64>;

    /// Record `number` of `log`.
    fn record(&self, log: Log, number: u64) -> std::io::Result<Option<Bytes>>;

    /// The records of `log` numbered `first..=last`, in order.
    fn records(&self, log: Log, first: u64, last: u64) -> std::io::Result<Records<'_>>;

    /// The number of the last record of `log` (0 for none).
    fn last(&self, log: Log) -> std::io::Result<u64>;
}
