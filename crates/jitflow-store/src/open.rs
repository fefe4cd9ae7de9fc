//! Opening a store: options, the file format version check, and crash recovery.
//!
//! Recovery: redb commits are atomic, and after a crash the next open rolls back to the last
//! commit and repairs its allocator state. The derived tables hold the state as of their last
//! checkpoint; the open replays the log after it (events and extras) through the same
//! derivation as the commit path into the hot layer, checkpointing on the way whenever the
//! layer reaches its bound, so the replay is bounded by the layer's bound (see
//! [`Store::verify`] to replay the whole log and compare on request).

use std::path::Path;

use redb::{Builder, Database, DatabaseError, Durability, ReadableDatabase, StorageBackend};

use std::sync::Arc;

use crate::backend::file::Opener;
use crate::backend::{Partition, RedbFile};
use crate::store::Store;
use crate::tables::{
    ACTIVATIONS, ASSIGNMENTS, CONNECTION_INDEX, CONNECTIONS, EVENTS, EXTRAS, FORMAT_VERSION_KEY,
    HISTORY, HISTORY_INDEX, IDEMPOTENCY, IDEMPOTENCY_EXPIRY, INTENTS, META, POLICIES,
    REQUEST_CONFIGS, STREAMS, STUCK, TIMERS,
};

/// The version of the file layout (tables and keys) this build writes and reads. A file of an
/// older version is upgraded in place when it is opened (see [`Store::open`]); a file of an
/// unknown version fails to open with [`Error::UnknownVersion`].
///
/// - 1: the event log, projections, timers, intents, idempotency keys and cursors.
/// - 2: adds the connections' secondary indexes, the assignment index, and the activation
///   history records with their indexes.
/// - 3: adds the access request config projections (`request_configs`; no row means the
///   contract's defaults) and the event kind 4 (an access request config change), and item
///   records that carry a forward history section and the `Forwarded` item change. A build of
///   version 2 refuses such a file rather than misreading those records.
/// - 4: log-first. A commit writes the log alone: the events, and the `extras` table (the
///   idempotency results and cursors of each batch that had any). Every other table is derived
///   from the log and written by checkpoints; `meta` holds the log position they cover
///   (`checkpoint`, `checkpoint_extras`), and the open replays the log after it. A build of
///   version 3 would read a version 4 file's tables as if they were whole: it refuses it.
/// - 5: new records a version 4 build cannot decode: the connection change `DriftFound`, and
///   policy records and events with a trailing warning-lead section. The tables are those of
///   version 4 (the upgrade only stamps the version), plus the checkpoint's purge time in
///   `meta` (`idempotency_purged_through`). A build of version 4 refuses such a file rather
///   than failing on its first new record.
/// - 6: adds the derived table `stuck` (the connections and request items whose revoke keeps
///   failing past the bound), counted, so the stuck gauge is exact without a scan. The upgrade
///   fills it from the checkpointed projections. A build of version 5 would not keep it in
///   step: it refuses the file.
/// - 7: connection events with a trailing client section (a signal's `requestOrigin` and
///   `metaData`, on `ActivationRequested`, `Extended` and `DeactivationRequested`), which a
///   version 6 build cannot decode. The tables are those of version 6 (the upgrade only stamps
///   the version); a build of version 6 refuses such a file.
/// - 8: new records a version 7 build cannot decode (issue 16's drift answers): the connection
///   change `RegrantStarted`, and policy records and events with a trailing missing-access
///   section (`Policy::on_missing_access`). The tables are those of version 7: the upgrade
///   only stamps the version.
pub const FILE_FORMAT_VERSION: u64 = 8;

/// The default bound on rows in the hot layer: 262,144.
pub const DEFAULT_LAYER_ENTRIES_MAX: usize = 1 << 18;
/// The default bound on key and value bytes in the hot layer: 64 MiB.
pub const DEFAULT_LAYER_BYTES_MAX: usize = 64 << 20;
/// The default interval between checkpoints while the layer holds rows: 5 s.
pub const DEFAULT_CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The default size of redb's page cache: 128 MiB.
pub const DEFAULT_CACHE_SIZE: usize = 128 << 20;

/// Settings of an open store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Bytes of memory redb may use to cache pages. The cache fills as pages are read, so it
    /// bounds memory rather than reserving it. Default: [`DEFAULT_CACHE_SIZE`] (128 MiB; redb's
    /// own default of 1 GiB is too much for an embedded library).
    pub cache_size: usize,
    /// Whether each commit also saves redb's allocator state ("quick repair", with two-phase
    /// commit). Default: `true`.
    ///
    /// Why: without it, opening after a crash walks every page of the file to rebuild the
    /// allocator, which takes time proportional to the file (seconds for millions of
    /// connections), and the engine cannot serve, nor fire timers, until the open is done. With
    /// it, recovery is near instant; each commit pays a second fsync, which group commit
    /// amortises over a batch. `benches/RESULTS.md` gives the measured cost.
    pub quick_repair: bool,
    /// The most rows the hot layer holds (tombstones included). At half of it a checkpoint is
    /// due ([`Store::checkpoint_due`]); at the bound an append checkpoints first and waits for
    /// it. It also bounds the open's tail replay. Default: [`DEFAULT_LAYER_ENTRIES_MAX`].
    pub layer_entries_max: usize,
    /// The most key and value bytes the hot layer holds, like `layer_entries_max`. Default:
    /// [`DEFAULT_LAYER_BYTES_MAX`].
    pub layer_bytes_max: usize,
    /// How long rows may wait in the hot layer before a checkpoint is due, however few: it
    /// bounds the open's replay in time as well as in rows. Default:
    /// [`DEFAULT_CHECKPOINT_INTERVAL`].
    pub checkpoint_interval: std::time::Duration,
    /// The backend's partition this store holds: its log and checkpointed rows. A redb file
    /// has one, [`Partition::WHOLE`]; a shared database's backend has several, each opened as a
    /// store of its own by the node leasing it. Default: [`Partition::WHOLE`].
    pub partition: Partition,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            cache_size: DEFAULT_CACHE_SIZE,
            quick_repair: true,
            layer_entries_max: DEFAULT_LAYER_ENTRIES_MAX,
            layer_bytes_max: DEFAULT_LAYER_BYTES_MAX,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            partition: Partition::WHOLE,
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// redb could not open or create the file: an I/O error, a file that is not a redb
    /// database, a redb file format this redb cannot read, or a file already opened by another
    /// process.
    #[error("cannot open the store file: {0}")]
    Database(#[source] DatabaseError),
    /// Reading the format version, or creating the tables of a new file, failed.
    #[error("cannot read or initialise the store file: {0}")]
    Storage(#[source] redb::Error),
    /// The file's format version is not one this build reads: written by a newer jitflow, or
    /// damaged. Nothing was changed.
    #[error(
        "the store file has format version {found}; this build reads version {supported} \
         (was it written by a newer jitflow?)"
    )]
    UnknownVersion {
        /// The version stamped in the file.
        found: u64,
        /// The version this build reads and writes.
        supported: u64,
    },
    /// Upgrading a file of an older format version failed: its log or projections could not
    /// be read or replayed. Nothing was changed; the file keeps its old version.
    #[error("cannot upgrade the store file from format version {from}: {reason}")]
    Upgrade {
        /// The version stamped in the file.
        from: u64,
        /// What failed.
        reason: String,
    },
    /// The log after the checkpoint could not be replayed: an event or extras record does not
    /// decode, does not follow from the state before it, or the log has a gap. `sequence` is the
    /// event where it failed (for extras, the last event). Nothing was changed.
    #[error("cannot replay the log after the checkpoint, at event {sequence}: {reason}")]
    Replay {
        /// The event (or, for an extras record, the last event) where the replay failed.
        sequence: u64,
        /// What failed.
        reason: String,
    },
    /// [`Store::reopen`] was called on a store opened on a single backend
    /// ([`Store::open_with_backend`]), which cannot be opened again.
    #[error("the store was opened on a single backend and cannot be reopened")]
    NotReopenable,
    /// The checkpointed tables cover more of the log than the log holds: the log lost
    /// committed records (a damaged or replaced file). Nothing was changed.
    #[error(
        "the checkpoint covers event {checkpoint} and extras {checkpoint_extras}, but the log          ends at event {last} and extras {last_extras}"
    )]
    AheadOfLog {
        /// The last event the checkpoint covers.
        checkpoint: u64,
        /// The last event in the log.
        last: u64,
        /// The last extras record the checkpoint covers.
        checkpoint_extras: u64,
        /// The last extras record in the log.
        last_extras: u64,
    },
    /// A backend other than the redb file could not be opened again (see
    /// [`Backend::recover`](crate::backend::Backend::recover)): its own error, such as a
    /// database that cannot be reached or a lease another node holds.
    #[error("cannot open the storage backend again: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// [`Options::partition`] is not [`Partition::WHOLE`] for a redb file, which has that
    /// partition only. Nothing was changed.
    #[error("a redb store file has partition 0 only, not partition {0}")]
    NoSuchPartition(u32),
    /// The file is a redb database holding other tables or events but no jitflow format
    /// version: not a jitflow store. Nothing was changed.
    #[error("the file is a redb database but not a jitflow store (no format version)")]
    NotAStore,
}

impl From<DatabaseError> for Error {
    fn from(e: DatabaseError) -> Error {
        Error::Database(e)
    }
}

pub(crate) fn storage(e: impl Into<redb::Error>) -> Error {
    Error::Storage(e.into())
}

impl Store {
    /// Opens the store file at `path`, creating it (with the current format version) if it
    /// does not exist. After a crash, redb repairs the file first.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Store, Error> {
        let path = path.as_ref().to_path_buf();
        only_whole(&options)?;
        let db = builder(&options).create(&path)?;
        let reopen = options.clone();
        let opener: Opener = Box::new(move || builder(&reopen).create(&path));
        Store::init(db, Some(opener), options)
    }

    /// Opens a store on the backend `backend()` makes, and keeps the factory so that
    /// [`Store::reopen`] can open it again (tests inject faults into a shared in-memory file
    /// this way).
    pub fn open_with_backends<B: StorageBackend>(
        backend: impl Fn() -> B + Send + Sync + 'static,
        options: Options,
    ) -> Result<Store, Error> {
        only_whole(&options)?;
        let db = builder(&options).create_with_backend(backend())?;
        let reopen = options.clone();
        let opener: Opener = Box::new(move || builder(&reopen).create_with_backend(backend()));
        Store::init(db, Some(opener), options)
    }

    /// Opens a store on a redb storage backend (an in-memory backend, or a wrapper that injects
    /// faults in tests), initialising it if it is empty.
    pub fn open_with_backend(
        backend: impl StorageBackend,
        options: Options,
    ) -> Result<Store, Error> {
        only_whole(&options)?;
        let db = builder(&options).create_with_backend(backend)?;
        Store::init(db, None, options)
    }

    /// Opens a store on a backend that is ready to use (its own schema or format checked by
    /// whoever opened it, such as a PostgreSQL backend): reads the checkpoint position through
    /// a snapshot (no rows: 0) and replays the log after it. No redb format step runs.
    /// [`Store::reopen`] calls [`Backend::recover`](crate::backend::Backend::recover) on it.
    ///
    /// # Errors
    ///
    /// [`Error::AheadOfLog`] and [`Error::Replay`] as for [`Store::open`]; [`Error::Storage`]
    /// when the backend cannot be read.
    pub fn open_on(
        backend: Arc<dyn crate::backend::Backend>,
        options: Options,
    ) -> Result<Store, Error> {
        assert!(
            options.layer_entries_max > 0 && options.layer_bytes_max > 0,
            "the hot layer's bounds must be positive"
        );
        crate::replay::open(backend, options)
    }

    fn init(db: Database, opener: Option<Opener>, options: Options) -> Result<Store, Error> {
        assert!(
            options.layer_entries_max > 0 && options.layer_bytes_max > 0,
            "the hot layer's bounds must be positive"
        );
        match stored_version(&db)? {
            Some(FILE_FORMAT_VERSION) => {}
            Some(from @ (1..=7)) => {
                // Each step commits on its own and leaves a file of the next version.
                if from == 1 {
                    crate::upgrade::from_v1(&db, &options)?;
                }
                if from <= 2 {
                    crate::upgrade::from_v2(&db, &options)?;
                }
                if from <= 3 {
                    crate::upgrade::from_v3(&db, &options)?;
                }
                if from <= 4 {
                    crate::upgrade::from_v4(&db, &options)?;
                }
                if from <= 5 {
                    crate::upgrade::from_v5(&db, &options)?;
                }
                if from <= 6 {
                    crate::upgrade::from_v6(&db, &options)?;
                }
                crate::upgrade::from_v7(&db, &options)?;
                tracing::info!(
                    from,
                    to = FILE_FORMAT_VERSION,
                    "upgraded the store file's format"
                );
            }
            Some(found) => {
                return Err(Error::UnknownVersion {
                    found,
                    supported: FILE_FORMAT_VERSION,
                });
            }
            None => {
                check_fresh(&db)?;
                create_tables(&db, &options)?;
                tracing::info!(
                    version = FILE_FORMAT_VERSION,
                    "initialised a new store file"
                );
            }
        }
        // Files written before access requests lack their tables: add them (empty).
        crate::request::ensure_tables(&db).map_err(storage)?;
        let file = RedbFile::new(db, opener, options.quick_repair);
        crate::replay::open(Arc::new(file), options)
    }
}

/// A redb file has one partition: refuses any other before the file is touched.
fn only_whole(options: &Options) -> Result<(), Error> {
    if options.partition == Partition::WHOLE {
        Ok(())
    } else {
        Err(Error::NoSuchPartition(options.partition.0))
    }
}

fn builder(options: &Options) -> Builder {
    let mut builder = Database::builder();
    builder.set_cache_size(options.cache_size);
    builder.set_repair_callback(|session| {
        tracing::warn!(
            progress = session.progress(),
            "repairing the store file after an unclean shutdown"
        );
    });
    builder
}

/// The format version stamped in the existing store file at `path`, read without creating,
/// repairing, upgrading or otherwise changing the file: what a dry run of the upgrade that
/// [`Store::open`] performs needs to know. `None` for a redb file without a jitflow version yet
/// (a new, empty file, which [`Store::open`] would initialise).
///
/// # Errors
///
/// [`Error::Database`] when the file does not exist, is not a redb database, needs crash
/// recovery (which would change it), or is open in a process that writes to it
/// (`DatabaseError::DatabaseAlreadyOpen`: an engine holds it); [`Error::Storage`] when it
/// cannot be read.
pub fn stored_format_version(path: impl AsRef<Path>) -> Result<Option<u64>, Error> {
    let db = Database::builder().open_read_only(path)?;
    stored_version(&db)
}

/// Checks that `db` is a store of this build's format version (a file opened again after a
/// failed write, which the open before upgraded).
pub(crate) fn check_version(db: &Database) -> Result<(), Error> {
    match stored_version(db)? {
        Some(FILE_FORMAT_VERSION) => Ok(()),
        Some(found) => Err(Error::UnknownVersion {
            found,
            supported: FILE_FORMAT_VERSION,
        }),
        None => Err(Error::NotAStore),
    }
}

fn stored_version(db: &impl ReadableDatabase) -> Result<Option<u64>, Error> {
    let txn = db.begin_read().map_err(storage)?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(storage(e)),
    };
    let version = meta.get(FORMAT_VERSION_KEY).map_err(storage)?;
    Ok(version.map(|v| v.value()))
}

/// Refuses to stamp a file that holds anything but empty jitflow tables: a crash between redb
/// creating the file and our first commit leaves it empty, anything else is not ours.
fn check_fresh(db: &Database) -> Result<(), Error> {
    let ours = [
        META.to_string(),
        EVENTS.to_string(),
        STREAMS.to_string(),
        CONNECTIONS.to_string(),
        ACTIVATIONS.to_string(),
        POLICIES.to_string(),
        TIMERS.to_string(),
        INTENTS.to_string(),
        IDEMPOTENCY.to_string(),
        IDEMPOTENCY_EXPIRY.to_string(),
        CONNECTION_INDEX.to_string(),
        ASSIGNMENTS.to_string(),
        HISTORY.to_string(),
        HISTORY_INDEX.to_string(),
        REQUEST_CONFIGS.to_string(),
        EXTRAS.to_string(),
        STUCK.to_string(),
    ]
    .into_iter()
    .chain(crate::request::table_names())
    .collect::<Vec<_>>();
    let txn = db.begin_read().map_err(storage)?;
    let tables: Vec<String> = txn
        .list_tables()
        .map_err(storage)?
        .map(|t| redb::TableHandle::name(&t).to_owned())
        .collect();
    let multimaps = txn.list_multimap_tables().map_err(storage)?.count();
    if multimaps > 0 || tables.iter().any(|t| !ours.contains(t)) {
        return Err(Error::NotAStore);
    }
    if tables.iter().any(|t| *t == EVENTS.to_string()) {
        use redb::ReadableTableMetadata;
        if !txn
            .open_table(EVENTS)
            .map_err(storage)?
            .is_empty()
            .map_err(storage)?
        {
            return Err(Error::NotAStore);
        }
    }
    Ok(())
}

fn create_tables(db: &Database, options: &Options) -> Result<(), Error> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate)
        .expect("redb refuses only to lower durability, never to set Immediate");
    txn.set_quick_repair(options.quick_repair);
    {
        txn.open_table(EVENTS).map_err(storage)?;
        txn.open_table(STREAMS).map_err(storage)?;
        txn.open_table(CONNECTIONS).map_err(storage)?;
        txn.open_table(ACTIVATIONS).map_err(storage)?;
        txn.open_table(POLICIES).map_err(storage)?;
        txn.open_table(TIMERS).map_err(storage)?;
        txn.open_table(INTENTS).map_err(storage)?;
        txn.open_table(IDEMPOTENCY).map_err(storage)?;
        txn.open_table(IDEMPOTENCY_EXPIRY).map_err(storage)?;
        txn.open_table(CONNECTION_INDEX).map_err(storage)?;
        txn.open_table(ASSIGNMENTS).map_err(storage)?;
        txn.open_table(HISTORY).map_err(storage)?;
        txn.open_table(HISTORY_INDEX).map_err(storage)?;
        txn.open_table(REQUEST_CONFIGS).map_err(storage)?;
        txn.open_table(EXTRAS).map_err(storage)?;
        txn.open_table(STUCK).map_err(storage)?;
        let mut meta = txn.open_table(META).map_err(storage)?;
        meta.insert(FORMAT_VERSION_KEY, FILE_FORMAT_VERSION)
            .map_err(storage)?;
    }
    txn.commit().map_err(storage)
}
