//! The store handle.

use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, Durability, ReadableDatabase, WriteTransaction};

use crate::append::Error;
use crate::open::Options;
use crate::read::{self, Reader};

/// One store file: the event log, projections, timer index, intents and idempotency keys.
///
/// `Send + Sync`: the engine's writer thread appends while reader threads read. Reads run on
/// redb MVCC snapshots and never block the writer, nor does the writer block them. Write
/// transactions are serialised by redb; jitflow writes from one thread only.
///
/// After a failed write the store is *poisoned*: every later write returns
/// [`Error::Poisoned`] until the store is dropped and opened again (reads go on). A commit that
/// fails may or may not have reached the disk, and redb itself may refuse writes after an I/O
/// error; reopening runs redb's recovery and gives a state that is known.
#[derive(Debug)]
pub struct Store {
    pub(crate) db: Database,
    poisoned: AtomicBool,
    pub(crate) options: Options,
}

impl Store {
    pub(crate) fn new(db: Database, options: Options) -> Store {
        Store {
            db,
            poisoned: AtomicBool::new(false),
            options,
        }
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

    /// A consistent snapshot to read from. Cheap; open one per request or per page.
    pub fn reader(&self) -> Result<Reader, read::Error> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        Ok(Reader::new(txn))
    }

    /// Starts a write transaction that commits with `Durability::Immediate`.
    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, Error> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let mut txn = self.db.begin_write().map_err(|e| {
            self.poison();
            Error::Storage { source: e.into() }
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
}
