//! The store handle, the published state readers take, and checkpoints.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use jitflow_core::time::Timestamp;
use std::cell::RefCell;

use redb::TableHandle;

use crate::append::Error;
use crate::backend::{Backend, RedbFile, Snapshot, WriteError};
use crate::hot::{Layer, WriteTable};
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
    /// Where the bytes are: the log, the checkpointed tables.
    backend: Arc<dyn Backend>,
    poisoned: AtomicBool,
    reopens: AtomicU64,
    pub(crate) options: Options,
    pub(crate) hot: Hot,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("poisoned", &self.is_poisoned())
            .field("reopenable", &self.is_reopenable())
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
    pub(crate) fn new(backend: Arc<dyn Backend>, options: Options, published: Published) -> Store {
        Store {
            backend,
            poisoned: AtomicBool::new(false),
            reopens: AtomicU64::new(0),
            options,
            hot: Hot::new(published),
        }
    }

    /// The backend, shared (a reopen builds its new state on the same one).
    pub(crate) fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The redb file under the store, for what only a file has (compaction, fault tests).
    pub(crate) fn file(&self) -> Option<&RedbFile> {
        self.backend.as_any().downcast_ref::<RedbFile>()
    }

    /// The open redb database (tests and file-level operations only).
    #[cfg(test)]
    pub(crate) fn db(&self) -> std::io::Result<Arc<redb::Database>> {
        self.file().expect("the store is a redb file").db()
    }

    /// Runs `f` in one write transaction of the redb file, committed with
    /// `Durability::Immediate` (test support: damage no write API allows).
    #[cfg(any(test, feature = "test-support"))]
    pub(crate) fn write_file(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), Error> {
        let file = self.file().expect("the store is a redb file");
        let txn = file.begin_write()?;
        let result = f(&txn);
        self.written(RedbFile::finish(txn, result))
    }

    /// Whether [`Store::reopen`] can reopen this store: it was opened by path (or with a
    /// backend factory), not on a single backend.
    pub fn is_reopenable(&self) -> bool {
        self.file().is_none_or(RedbFile::is_reopenable)
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
        if !self.is_reopenable() {
            return Err(crate::open::Error::NotReopenable);
        }
        let _writer = self.hot.writer();
        if !self.is_poisoned() {
            return Ok(Reopened {
                sequence: self.hot.published().sequence,
                took: started.elapsed(),
            });
        }
        self.backend.recover()?;
        // The state as the log now holds it, replayed on the same backend.
        let fresh = crate::replay::open(Arc::clone(&self.backend), self.options.clone())?;
        let published = (*fresh.hot.published()).clone();
        let sequence = published.sequence;
        self.hot.publish(published);
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
    pub(crate) fn snapshot(&self) -> Result<Reader, std::io::Error> {
        // The snapshot's checkpoint must be the one the layer taken with it was built on. A
        // checkpoint committed between the two reads but not yet published would pair the
        // checkpointed rows with the layer that holds them too (counts doubled, tombstones
        // hiding rows the layer already wrote): take both again. The writer publishes right
        // after each checkpoint's commit, under the writer's lock: waiting for that lock
        // (rather than spinning, which a preempted checkpointer can outlast) settles it.
        // On a shared backend, another node that took this node's lease checkpoints too: then
        // the tables stay ahead, and reads fail (this node's writes are fenced already).
        for _ in 0..1000 {
            let published = self.hot.published();
            let base = self.backend.snapshot(self.options.partition)?;
            let checkpoint = checkpoint_of(&*base)?.0;
            if checkpoint == published.checkpoint {
                return Ok(Reader::new(base, published));
            }
            drop(base);
            if self.is_poisoned() {
                break;
            }
            drop(self.hot.writer());
        }
        Err(std::io::Error::other(
            "the checkpointed tables are ahead of this store's log: another node wrote them \
             (has it taken this node's lease?)",
        ))
    }

    /// A snapshot of the backend (the writer's base under its working layer).
    pub(crate) fn base(&self) -> Result<Arc<dyn Snapshot>, Error> {
        self.backend
            .snapshot(self.options.partition)
            .map_err(|source| Error::Storage { source })
    }

    /// The outcome of a backend write: a failure poisons the store.
    pub(crate) fn written<T>(&self, result: Result<T, WriteError>) -> Result<T, Error> {
        result.map_err(|e| {
            self.poison();
            match e {
                WriteError::Failed(source) => Error::Storage { source },
                WriteError::OutcomeUnknown(source) => Error::OutcomeUnknown { source },
                fenced @ WriteError::Fenced { .. } => Error::Fenced { source: fenced },
            }
        })
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
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let started = Instant::now();
        let base = self.base().inspect_err(|_| self.poison())?;
        let (checkpoint, _) = checkpoint_of(&*base).map_err(|source| {
            self.poison();
            Error::Storage { source }
        })?;
        assert!(
            checkpoint <= published.sequence,
            "the checkpointed tables ({checkpoint}) are ahead of the log ({})",
            published.sequence
        );
        // The rows to write: the layer, the position it covers, and the purge's deletions,
        // all as rows of one copy of the layer (the published one stays as readers see it).
        let layer = RefCell::new(published.layer.clone());
        let purged = {
            let mut meta: WriteTable<'_, &'static str, u64> =
                WriteTable::new(tables::id(META.name()), &layer, Arc::clone(&base));
            meta.insert(CHECKPOINT_KEY, published.sequence)?;
            meta.insert(CHECKPOINT_EXTRAS_KEY, published.extras)?;
            match purge {
                Some((now, limit)) => {
                    let through = meta
                        .get(tables::PURGED_THROUGH_KEY)?
                        .map_or(0, |v| v.value())
                        .max(now.as_millis());
                    meta.insert(tables::PURGED_THROUGH_KEY, through)?;
                    crate::idempotency::purge(&base, &layer, now, limit)?
                }
                None => 0,
            }
        };
        let layer = layer.into_inner();
        let bytes = published.layer.bytes();
        let mut rows = layer.rows();
        let rows = self.written(self.backend.checkpoint(self.options.partition, &mut rows))?;
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

/// The log position the checkpointed tables of `base` cover: (event sequence, extras number).
pub(crate) fn checkpoint_of(base: &dyn Snapshot) -> std::io::Result<(u64, u64)> {
    let meta = tables::id(META.name());
    let read = |key: &str| -> std::io::Result<u64> {
        let key = crate::hot::RowKey::of::<&str>(meta, &key);
        Ok(base
            .get(meta, &key)?
            .map_or(0, |v| <u64 as redb::Value>::from_bytes(&v)))
    };
    Ok((read(CHECKPOINT_KEY)?, read(CHECKPOINT_EXTRAS_KEY)?))
}
