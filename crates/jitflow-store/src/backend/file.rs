//! The embedded backend: one redb file. The log is two tables keyed by number; each derived
//! table is a typed redb table whose key order is the order bytes' order (pinned by
//! `hot::SortKey`'s property test), so ranges need no re-sorting. One partition.

use std::any::Any;
use std::ops::Bound;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, WriteTransaction,
};

use super::{
    Append, Backend, Bytes, Key, Log, Partition, Records, Row, Rows, Snapshot, TableId, WriteError,
};
use crate::hot::SortKey;
use crate::tables::{self, EVENTS, EXTRAS};

/// Opens the file again, for [`Backend::recover`] (a path, or a storage backend factory).
pub(crate) type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// How long [`RedbFile::recover`] waits for readers of the closed file to let go of it.
const REOPEN_WAIT: Duration = Duration::from_secs(2);

/// The redb file backend.
pub struct RedbFile {
    /// The open file; `None` only while `recover` has closed it and not yet opened it again
    /// (snapshots then fail with an I/O error that says so).
    db: RwLock<Option<Arc<Database>>>,
    /// How to open the file again; `None` for a file opened on a single redb storage backend,
    /// which cannot be reopened.
    opener: Option<Opener>,
    /// See `open::Options::quick_repair`.
    quick_repair: bool,
}

impl std::fmt::Debug for RedbFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbFile")
            .field("reopenable", &self.opener.is_some())
            .field("quick_repair", &self.quick_repair)
            .finish()
    }
}

/// A redb error as the storage interface's I/O error (redb's own I/O errors pass through, so
/// their kind, such as a full disk, stays visible).
pub(crate) fn io(e: impl Into<redb::Error>) -> std::io::Error {
    match e.into() {
        redb::Error::Io(e) => e,
        other => std::io::Error::other(other),
    }
}

impl RedbFile {
    pub(crate) fn new(db: Database, opener: Option<Opener>, quick_repair: bool) -> RedbFile {
        RedbFile {
            db: RwLock::new(Some(Arc::new(db))),
            opener,
            quick_repair,
        }
    }

    /// Whether [`Backend::recover`] can open the file again.
    pub fn is_reopenable(&self) -> bool {
        self.opener.is_some()
    }

    /// The open database, or an I/O error while `recover` has it closed.
    pub(crate) fn db(&self) -> std::io::Result<Arc<Database>> {
        match &*self.db.read().unwrap_or_else(|e| e.into_inner()) {
            Some(db) => Ok(Arc::clone(db)),
            None => Err(std::io::Error::other(
                "the store file is being reopened after a failed write",
            )),
        }
    }

    /// Runs `f` on the database with exclusive access (compaction): `None` while closed, or
    /// while a call holds it.
    pub(crate) fn with_db_mut<T>(&self, f: impl FnOnce(&mut Database) -> T) -> Option<T> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        db.as_mut().and_then(Arc::get_mut).map(f)
    }

    /// Starts a write transaction that commits with `Durability::Immediate`.
    pub(crate) fn begin_write(&self) -> std::io::Result<WriteTransaction> {
        let mut txn = self.db()?.begin_write().map_err(io)?;
        // Nothing is acknowledged before it is on disk: set explicitly, whatever redb's default.
        txn.set_durability(Durability::Immediate)
            .expect("redb refuses only to lower durability, never to set Immediate");
        // Quick repair: see `open::Options::quick_repair`.
        txn.set_quick_repair(self.quick_repair);
        Ok(txn)
    }

    /// Commits `txn` when `result` is `Ok`, else drops it (redb aborts it).
    pub(crate) fn finish<T>(
        txn: WriteTransaction,
        result: Result<T, redb::Error>,
    ) -> Result<T, WriteError> {
        match result {
            Ok(value) => match txn.commit() {
                Ok(()) => Ok(value),
                Err(e) => Err(WriteError::OutcomeUnknown(io(e))),
            },
            Err(e) => Err(WriteError::Failed(io(e))),
        }
    }
}

impl Backend for RedbFile {
    fn append(&self, partition: Partition, append: Append<'_>) -> Result<(), WriteError> {
        assert_eq!(partition, Partition::WHOLE, "a redb file has one partition");
        let txn = self.begin_write().map_err(WriteError::Failed)?;
        let result = (|| -> Result<(), redb::Error> {
            let mut events = txn.open_table(EVENTS)?;
            for (sequence, bytes) in (append.first..).zip(append.events) {
                events.insert(sequence, bytes.as_slice())?;
            }
            if let Some((number, bytes)) = append.extras {
                txn.open_table(EXTRAS)?.insert(number, bytes)?;
            }
            Ok(())
        })();
        RedbFile::finish(txn, result)
    }

    fn checkpoint(
        &self,
        partition: Partition,
        rows: &mut dyn Iterator<Item = Row<'_>>,
    ) -> Result<u64, WriteError> {
        assert_eq!(partition, Partition::WHOLE, "a redb file has one partition");
        let txn = self.begin_write().map_err(WriteError::Failed)?;
        let result = (|| -> Result<u64, redb::Error> {
            let mut written = 0;
            let mut rows = rows.peekable();
            while let Some(first) = rows.peek() {
                let table = first.table;
                // One table open per run of rows of a table (the rows come table by table).
                let run = std::iter::from_fn(|| rows.next_if(|r| r.table == table));
                written += tables::write(&txn, table, run)?;
            }
            Ok(written)
        })();
        RedbFile::finish(txn, result)
    }

    fn snapshot(&self, partition: Partition) -> std::io::Result<Arc<dyn Snapshot>> {
        assert_eq!(partition, Partition::WHOLE, "a redb file has one partition");
        Ok(snapshot_of(self.db()?.begin_read().map_err(io)?))
    }

    fn recover(&self) -> Result<(), crate::open::Error> {
        let started = Instant::now();
        let Some(opener) = &self.opener else {
            return Err(crate::open::Error::NotReopenable);
        };
        // Close: the file lock goes with the last handle, once readers' transactions end.
        drop(self.db.write().unwrap_or_else(|e| e.into_inner()).take());
        let db = loop {
            match opener() {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if started.elapsed() < REOPEN_WAIT =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        };
        crate::open::check_version(&db)?;
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(db));
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The snapshot of a read transaction (the upgrade derives over one).
pub(crate) fn snapshot_of(txn: ReadTransaction) -> Arc<dyn Snapshot> {
    Arc::new(FileSnapshot {
        txn,
        tables: std::array::from_fn(|_| OnceLock::new()),
        events: OnceLock::new(),
        extras: OnceLock::new(),
    })
}

/// A derived table of a snapshot, read by bytes.
pub(crate) trait RawTable: Send + Sync {
    fn get(&self, key: &Key) -> Result<Option<Bytes>, redb::StorageError>;
    fn range(&self, lower: Bound<&Key>, upper: Bound<&Key>)
    -> Result<Rows<'_>, redb::StorageError>;
    fn len(&self) -> Result<u64, redb::StorageError>;
}

/// A typed table of a snapshot and its id.
pub(crate) struct Typed<K: redb::Key + 'static, V: redb::Value + 'static> {
    pub(crate) id: TableId,
    pub(crate) table: ReadOnlyTable<K, V>,
}

impl<K, V> RawTable for Typed<K, V>
where
    K: SortKey + Send + Sync + 'static,
    V: redb::Value + Send + Sync + 'static,
{
    fn get(&self, key: &Key) -> Result<Option<Bytes>, redb::StorageError> {
        Ok(self
            .table
            .get(K::from_bytes(key.native()))?
            .map(|v| V::as_bytes(&v.value()).as_ref().into()))
    }

    fn range(
        &self,
        lower: Bound<&Key>,
        upper: Bound<&Key>,
    ) -> Result<Rows<'_>, redb::StorageError> {
        let id = self.id;
        let lower = lower.map(|k| K::from_bytes(k.native()));
        let upper = upper.map(|k| K::from_bytes(k.native()));
        let rows = self.table.range::<K::SelfType<'_>>((lower, upper))?;
        Ok(Box::new(rows.map(move |row| {
            let (k, v) = row.map_err(io)?;
            let key = Key::of::<K>(id, &k.value());
            Ok((key, V::as_bytes(&v.value()).as_ref().into()))
        })))
    }

    fn len(&self) -> Result<u64, redb::StorageError> {
        self.table.len()
    }
}

/// A snapshot of the file: one read transaction; tables opened on first use.
struct FileSnapshot {
    txn: ReadTransaction,
    tables: [OnceLock<Box<dyn RawTable>>; tables::COUNT],
    events: OnceLock<ReadOnlyTable<u64, &'static [u8]>>,
    extras: OnceLock<ReadOnlyTable<u64, &'static [u8]>>,
}

impl FileSnapshot {
    fn table(&self, table: TableId) -> std::io::Result<&dyn RawTable> {
        let slot = &self.tables[usize::from(table)];
        if let Some(t) = slot.get() {
            return Ok(t.as_ref());
        }
        let opened = tables::open_raw(&self.txn, table).map_err(io)?;
        Ok(slot.get_or_init(|| opened).as_ref())
    }

    fn log(&self, log: Log) -> std::io::Result<&ReadOnlyTable<u64, &'static [u8]>> {
        let (slot, definition): (_, TableDefinition<'static, u64, &[u8]>) = match log {
            Log::Events => (&self.events, EVENTS),
            Log::Extras => (&self.extras, EXTRAS),
        };
        if let Some(t) = slot.get() {
            return Ok(t);
        }
        let opened = self.txn.open_table(definition).map_err(io)?;
        Ok(slot.get_or_init(|| opened))
    }
}

impl Snapshot for FileSnapshot {
    fn get(&self, table: TableId, key: &Key) -> std::io::Result<Option<Bytes>> {
        self.table(table)?.get(key).map_err(io)
    }

    fn range<'a>(
        &'a self,
        table: TableId,
        lower: Bound<&Key>,
        upper: Bound<&Key>,
    ) -> std::io::Result<Rows<'a>> {
        self.table(table)?.range(lower, upper).map_err(io)
    }

    fn len(&self, table: TableId) -> std::io::Result<u64> {
        self.table(table)?.len().map_err(io)
    }

    fn record(&self, log: Log, number: u64) -> std::io::Result<Option<Bytes>> {
        Ok(self
            .log(log)?
            .get(number)
            .map_err(io)?
            .map(|v| v.value().into()))
    }

    fn records(&self, log: Log, first: u64, last: u64) -> std::io::Result<Records<'_>> {
        if first > last {
            return Ok(Box::new(std::iter::empty()));
        }
        let rows = self.log(log)?.range(first..=last).map_err(io)?;
        Ok(Box::new(rows.map(|row| {
            let (k, v) = row.map_err(io)?;
            Ok((k.value(), v.value().into()))
        })))
    }

    fn last(&self, log: Log) -> std::io::Result<u64> {
        Ok(self
            .log(log)?
            .last()
            .map_err(io)?
            .map_or(0, |(k, _)| k.value()))
    }
}
