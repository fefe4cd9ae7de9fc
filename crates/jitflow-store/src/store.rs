//! The store handle, the published state readers take, and checkpoints.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use jitflow_core::time::Timestamp;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction,
};

use crate::append::Error;
use crate::hot::Layer;
use crate::open::Options;
use crate::read::{self, Reader};
use crate::tables::{self, CHECKPOINT_EXTRAS_KEY, CHECKPOINT_KEY, META};

/// One store file: the log, and the tables derived from it (projections, indexes, timer index,
/// intents, idempotency keys, cursors), checkpointed behind a hot layer.
///
/// `Send + Sync`: the engine's writer thread appends while reader threads read. Reads run on a
/// published layer and a redb MVCC snapshot, and never block the writer, nor does the writer
/// block them. Appends and checkpoints are serialised by the store; jitflow writes from one
/// thread only.
///
/// After a failed write the store is *poisoned*: every later write returns
/// [`Error::Poisoned`] until the store is reopened (reads go on). A commit that fails may or
/// may not have reached the disk, and redb itself may refuse writes after an I/O error;
/// reopening runs redb's recovery and the log's tail replay, and gives a state that is known.
/// [`Store::reopen`] does that in place, so every holder of the store keeps its handle.
pub struct Store {
    /// The open file; `None` only while [`Store::reopen`] has closed it and not yet opened it
    /// again (reads then fail with an I/O error that says so).
    db: RwLock<Option<Arc<Database>>>,
    /// How to open the file again, for [`Store::reopen`]; `None` for a store opened on a
    /// single backend, which cannot be reopened.
    pub(crate) opener: Option<Opener>,
    poisoned: AtomicBool,
    reopens: AtomicU64,
    pub(crate) options: Options,
    pub(crate) hot: Hot,
}

/// Opens the store's redb database again (a path, or a backend factory).
pub(crate) type Opener = Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("poisoned", &self.is_poisoned())
            .field("reopenable", &self.opener.is_some())
            .field("options", &self.options)
            .field("hot", &self.hot)
            .finish()
    }
}

/// What [`Store::reopen`] found in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reopened {
    /// The last event in the log after redb's recovery: a batch whose commit failed is durable
    /// iff its last sequence is at most this.
    pub sequence: u64,
    /// How long closing, reopening and replaying took.
    pub took: Duration,
}

/// How long [`Store::reopen`] waits for readers of the closed file to let go of it.
const REOPEN_WAIT: Duration = Duration::from_secs(2);

/// What readers see: the log up to `sequence` as the hot layer over the checkpointed tables.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    /// The last committed event (0 for an empty log).
    pub(crate) sequence: u64,
    /// The last committed extras record (0 for none).
    pub(crate) extras: u64,
    /// The last event the checkpointed tables cover; the layer covers the rest.
    pub(crate) checkpoint: u64,
    /// Rows derived from events after `checkpoint` and extras after the checkpointed ones.
    pub(crate) layer: Layer,
    /// When the layer took its first row since the checkpoint (for `checkpoint_interval`).
    pub(crate) dirty_since: Option<Instant>,
}

/// Figures of the store's checkpoints, for operators' gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// The last committed event.
    pub sequence: u64,
    /// The last event the checkpointed tables cover (`sequence - checkpoint` is the lag).
    pub checkpoint: u64,
    /// Rows in the hot layer.
    pub layer_entries: u64,
    /// Key and value bytes in the hot layer.
    pub layer_bytes: u64,
    /// Checkpoints written since the store was opened.
    pub checkpoints: u64,
    /// Rows written by those checkpoints.
    pub checkpoint_rows: u64,
    /// Key and value bytes written by those checkpoints.
    pub checkpoint_bytes: u64,
    /// How long the last checkpoint took, in microseconds.
    pub last_checkpoint_micros: u64,
}

/// The published state and the writer's lock.
#[derive(Debug)]
pub(crate) struct Hot {
    published: RwLock<Arc<Published>>,
    /// Held by an append or a checkpoint: one write at a time, whatever the callers do.
    writer: Mutex<()>,
    checkpoints: AtomicU64,
    checkpoint_rows: AtomicU64,
    checkpoint_bytes: AtomicU64,
    last_checkpoint_micros: AtomicU64,
}

impl Hot {
    pub(crate) fn new(published: Published) -> Hot {
        Hot {
            published: RwLock::new(Arc::new(published)),
            writer: Mutex::new(()),
            checkpoints: AtomicU64::new(0),
            checkpoint_rows: AtomicU64::new(0),
            checkpoint_bytes: AtomicU64::new(0),
            last_checkpoint_micros: AtomicU64::new(0),
        }
    }

    /// The state of the last commit.
    pub(crate) fn published(&self) -> Arc<Published> {
        Arc::clone(&self.published.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Makes `next` what readers see. Called after its commit only.
    pub(crate) fn publish(&self, mut next: Published) {
        if next.dirty_since.is_none() && !next.layer.is_empty() {
            next.dirty_since = Some(Instant::now());
        }
        let mut current = self.published.write().unwrap_or_else(|e| e.into_inner());
        assert!(
            next.sequence >= current.sequence && next.checkpoint <= next.sequence,
            "published state moves back: {} after {}",
            next.sequence,
            current.sequence
        );
        let old = std::mem::replace(&mut *current, Arc::new(next));
        drop(current);
        // Dropping the old state frees every layer node the new one no longer shares (a
        // tenth of the writer's time at batch 256): outside the lock, so readers never wait.
        drop(old);
    }

    /// The writer's lock (a poisoned lock only means an earlier write panicked).
    pub(crate) fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the layer is at or over a bound of `options`.
    pub(crate) fn over_bound(&self, options: &Options) -> bool {
        let p = self.published();
        p.layer.len() >= options.layer_entries_max || p.layer.bytes() >= options.layer_bytes_max
    }
}

impl Store {
    pub(crate) fn new(db: Database, options: Options, published: Published) -> Store {
        Store {
            db: RwLock::new(Some(Arc::new(db))),
            opener: None,
            poisoned: AtomicBool::new(false),
            reopens: AtomicU64::new(0),
            options,
            hot: Hot::new(published),
        }
    }

    /// The open database, or an I/O error while [`Store::reopen`] has it closed.
    pub(crate) fn db(&self) -> Result<Arc<Database>, redb::Error> {
        match &*self.db.read().unwrap_or_else(|e| e.into_inner()) {
            Some(db) => Ok(Arc::clone(db)),
            None => Err(redb::Error::Io(std::io::Error::other(
                "the store file is being reopened after a failed write",
            ))),
        }
    }

    /// The database for `&mut` operations (compaction): `None` while closed or shared.
    pub(crate) fn db_mut(&mut self) -> Option<&mut Database> {
        self.db
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(Arc::get_mut)
    }

    /// Whether [`Store::reopen`] can reopen this store: it was opened by path (or with a
    /// backend factory), not on a single backend.
    pub fn is_reopenable(&self) -> bool {
        self.opener.is_some()
    }

    /// How many times [`Store::reopen`] reopened the file since it was opened.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    /// Heals a poisoned store in place: closes the file, opens it again (redb's recovery),
    /// checks its format, replays the log after the checkpoint into a new hot layer, publishes
    /// it and lifts the poison. Every holder of the store keeps its handle; readers that ask
    /// while the file is closed get an I/O error that says so. Returns the log's last
    /// sequence, which tells whether the batch of a failed commit is durable. A store that is
    /// not poisoned is left alone.
    ///
    /// # Errors
    ///
    /// [`open::Error::NotReopenable`](crate::open::Error::NotReopenable) for a store opened on
    /// a single backend; any error of [`Store::open`] otherwise (a full disk can fail redb's
    /// recovery): the store stays poisoned and closed, and the call can be repeated.
    pub fn reopen(&self) -> Result<Reopened, crate::open::Error> {
        let started = Instant::now();
        let Some(opener) = &self.opener else {
            return Err(crate::open::Error::NotReopenable);
        };
        let _writer = self.hot.writer();
        if !self.is_poisoned() {
            return Ok(Reopened {
                sequence: self.hot.published().sequence,
                took: started.elapsed(),
            });
        }
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
        let fresh = Store::init(db, self.options.clone())?;
        let published = (*fresh.hot.published()).clone();
        let db = fresh
            .db
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .expect("a store just opened holds its file");
        let sequence = published.sequence;
        self.hot.publish(published);
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db);
        self.reopens.fetch_add(1, Ordering::Relaxed);
        self.poisoned.store(false, Ordering::Release);
        tracing::info!(
            sequence,
            took = ?started.elapsed(),
            "the store file was reopened after a failed write"
        );
        Ok(Reopened {
            sequence,
            took: started.elapsed(),
        })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Whether a write failed since the store was opened (see [`Error::Poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub(crate) fn poison(&self) {
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            tracing::error!("a store write failed: writes are refused until the store is reopened");
        }
    }

    /// The store's checkpoint figures.
    pub fn stats(&self) -> Stats {
        let p = self.hot.published();
        Stats {
            sequence: p.sequence,
            checkpoint: p.checkpoint,
            layer_entries: p.layer.len() as u64,
            layer_bytes: p.layer.bytes() as u64,
            checkpoints: self.hot.checkpoints.load(Ordering::Relaxed),
            checkpoint_rows: self.hot.checkpoint_rows.load(Ordering::Relaxed),
            checkpoint_bytes: self.hot.checkpoint_bytes.load(Ordering::Relaxed),
            last_checkpoint_micros: self.hot.last_checkpoint_micros.load(Ordering::Relaxed),
        }
    }

    /// A consistent snapshot to read from: the log up to the last commit published, its
    /// derived rows from the hot layer over the checkpointed tables. Cheap; open one per
    /// request or per page.
    pub fn reader(&self) -> Result<Reader, read::Error> {
        Ok(self.snapshot()?)
    }

    /// [`Store::reader`], with redb's error.
    pub(crate) fn snapshot(&self) -> Result<Reader, redb::Error> {
        // The snapshot's checkpoint must not be newer than the layer taken with it (a
        // checkpoint between the two reads would mix states): take both again if it is. The
        // writer publishes right after each checkpoint, so this settles at once.
        for _ in 0..1000 {
            let published = self.hot.published();
            let txn = self.db()?.begin_read()?;
            if checkpoint_of(&txn)?.0 <= published.sequence {
                return Ok(Reader::new(txn, published));
            }
            std::thread::yield_now();
        }
        panic!("the checkpointed tables stay ahead of the published log");
    }

    /// A redb read transaction (for the writer's base snapshot).
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, Error> {
        self.db()
            .and_then(|db| Ok(db.begin_read()?))
            .map_err(|source| Error::Storage { source })
    }

    /// Starts a write transaction that commits with `Durability::Immediate`.
    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, Error> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let mut txn = self
            .db()
            .and_then(|db| Ok(db.begin_write()?))
            .map_err(|source| {
                self.poison();
                Error::Storage { source }
            })?;
        // Nothing is acknowledged before it is on disk: set explicitly, whatever redb's default.
        txn.set_durability(Durability::Immediate)
            .expect("redb refuses only to lower durability, never to set Immediate");
        // Quick repair: see `Options::quick_repair`.
        txn.set_quick_repair(self.options.quick_repair);
        Ok(txn)
    }

    /// Commits `txn` when `result` is `Ok`, else drops it (redb aborts it). Storage errors and
    /// failed commits poison the store.
    pub(crate) fn finish<T>(
        &self,
        txn: WriteTransaction,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        match result {
            Ok(value) => match txn.commit() {
                Ok(()) => Ok(value),
                Err(source) => {
                    self.poison();
                    Err(Error::OutcomeUnknown { source })
                }
            },
            Err(e) => {
                drop(txn);
                if matches!(e, Error::Storage { .. }) {
                    self.poison();
                }
                Err(e)
            }
        }
    }

    /// Whether a checkpoint is due: the layer is at half a bound, or it has held rows for
    /// `Options::checkpoint_interval`.
    pub fn checkpoint_due(&self) -> bool {
        let p = self.hot.published();
        let o = &self.options;
        2 * p.layer.len() >= o.layer_entries_max
            || 2 * p.layer.bytes() >= o.layer_bytes_max
            || p.dirty_since
                .is_some_and(|since| since.elapsed() >= o.checkpoint_interval)
    }

    /// Writes the hot layer into the tables in one transaction (each row once, in key order)
    /// with the log position it covers, then empties the layer. With `now`, it also deletes up
    /// to [`crate::idempotency::MAX_PURGE`] idempotency keys expired at `now`, in the same
    /// transaction. Returns how many rows were written.
    ///
    /// A failed checkpoint changes nothing committed (the log holds everything, and the layer
    /// stays as it was) but poisons the store like any failed write: reopen it.
    pub fn checkpoint(&self, now: Option<Timestamp>) -> Result<u64, Error> {
        let purge = now.map(|now| (now, crate::idempotency::MAX_PURGE));
        Ok(self.checkpoint_and_purge(purge)?.0)
    }

    /// [`Store::checkpoint`], purging up to `purge.1` keys expired at `purge.0`; returns the
    /// rows written and the keys purged.
    pub(crate) fn checkpoint_and_purge(
        &self,
        purge: Option<(Timestamp, usize)>,
    ) -> Result<(u64, usize), Error> {
        let _writer = self.hot.writer();
        let published = self.hot.published();
        if published.layer.is_empty() && purge.is_none() {
            return Ok((0, 0));
        }
        let started = Instant::now();
        let txn = self.begin_write()?;
        let layer = &published.layer;
        let result = (|| -> Result<(u64, usize, usize), Error> {
            let mut rows = 0;
            for table in 0..tables::COUNT as u8 {
                rows += tables::write(&txn, table, layer.table_rows(table))?;
            }
            let mut meta = txn.open_table(META)?;
            let (checkpoint, _) = checkpoint_of_table(&meta)?;
            assert!(
                checkpoint <= published.sequence,
                "the checkpointed tables ({checkpoint}) are ahead of the log ({})",
                published.sequence
            );
            meta.insert(CHECKPOINT_KEY, published.sequence)?;
            meta.insert(CHECKPOINT_EXTRAS_KEY, published.extras)?;
            drop(meta);
            let purged = match purge {
                Some((now, limit)) => {
                    let mut meta = txn.open_table(META)?;
                    let through = meta
                        .get(tables::PURGED_THROUGH_KEY)?
                        .map_or(0, |v| v.value())
                        .max(now.as_millis());
                    meta.insert(tables::PURGED_THROUGH_KEY, through)?;
                    drop(meta);
                    crate::idempotency::purge(&txn, now, limit)?
                }
                None => 0,
            };
            Ok((rows, layer.bytes(), purged))
        })();
        let (rows, bytes, purged) = self.finish(txn, result)?;
        let elapsed = started.elapsed();
        self.hot.publish(Published {
            checkpoint: published.sequence,
            layer: Layer::default(),
            dirty_since: None,
            ..(*published).clone()
        });
        self.hot.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.hot.checkpoint_rows.fetch_add(rows, Ordering::Relaxed);
        self.hot
            .checkpoint_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.hot.last_checkpoint_micros.store(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        tracing::debug!(
            covers = published.sequence,
            rows,
            bytes,
            micros = elapsed.as_micros() as u64,
            "checkpoint written"
        );
        Ok((rows, purged))
    }
}

/// The log position the checkpointed tables of `txn` cover: (event sequence, extras number).
pub(crate) fn checkpoint_of(txn: &ReadTransaction) -> Result<(u64, u64), redb::Error> {
    let meta = txn.open_table(META)?;
    Ok(checkpoint_of_table(&meta)?)
}

fn checkpoint_of_table(
    meta: &impl redb::ReadableTable<&'static str, u64>,
) -> Result<(u64, u64), redb::StorageError> {
    let sequence = meta.get(CHECKPOINT_KEY)?.map_or(0, |v| v.value());
    let extras = meta.get(CHECKPOINT_EXTRAS_KEY)?.map_or(0, |v| v.value());
    Ok((sequence, extras))
}
