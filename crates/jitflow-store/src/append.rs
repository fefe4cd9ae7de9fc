//! Appending a batch: events, projections, timer index, intents and idempotency keys in one
//! write transaction, committed with `Durability::Immediate`.

use jitflow_core::connection::Connection;
use jitflow_core::id::TenantId;
use jitflow_core::lifecycle::{Change, Event, PolicyEvent};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::batch::{Appended, Batch, Entry, MAX_BATCH_ENTRIES, MAX_BATCH_KEYS};
use crate::codec::{self, PayloadRef, Stream};
use crate::store::Store;
use crate::tables::{
    ACTIVATIONS, ASSIGNMENTS, CONNECTION_INDEX, CONNECTIONS, EVENTS, HISTORY, HISTORY_INDEX,
    IDEMPOTENCY, IDEMPOTENCY_EXPIRY, INTENTS, POLICIES, REQUEST_CONFIGS, REQUEST_INDEX,
    REQUEST_INTENTS, REQUEST_ITEMS, REQUEST_OPEN, REQUEST_PEOPLE, STREAMS, TIMERS,
};
use crate::{idempotency, projection, request};

/// Why a write (an append, a purge) did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An earlier write of this store failed; no write is attempted until the store is dropped
    /// and opened again (which runs redb's recovery). Nothing was written.
    #[error("the store is poisoned by an earlier failed write: reopen it")]
    Poisoned,
    /// The commit failed: the batch may or may not be durable. The store is now poisoned.
    /// Reopen it and read `last_sequence` (or the batch's events) to learn the outcome; tell
    /// callers their outcome is unknown meanwhile.
    #[error("the commit failed; the outcome is unknown (reopen the store to learn it): {source}")]
    OutcomeUnknown {
        /// redb's error (often an I/O error such as a full disk).
        #[source]
        source: redb::CommitError,
    },
    /// A storage error before the commit: nothing of this write was committed. The store is now
    /// poisoned, as redb may refuse every write after an I/O error.
    #[error("storage error, nothing committed: {source}")]
    Storage {
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// A stored record the write had to read (the connection before the event, a policy, an
    /// idempotency record) could not be decoded. Nothing was committed; the store stays usable.
    #[error("nothing committed: {0}")]
    Corrupt(#[from] codec::Error),
}

impl Error {
    /// The kind of the I/O error behind a storage or commit failure, if one is.
    pub fn io_error_kind(&self) -> Option<std::io::ErrorKind> {
        // redb's errors do not expose their cause through `Error::source`: match them.
        match self {
            Error::OutcomeUnknown {
                source: redb::CommitError::Storage(redb::StorageError::Io(e)),
            } => Some(e.kind()),
            Error::Storage {
                source: redb::Error::Io(e),
            } => Some(e.kind()),
            _ => None,
        }
    }

    /// Whether the cause is a full disk (`ErrorKind::StorageFull`).
    pub fn is_storage_full(&self) -> bool {
        self.io_error_kind() == Some(std::io::ErrorKind::StorageFull)
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Storage { source: e.into() }
            }
        }
    )*};
}
storage_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::Error
);

/// The tables a write transaction updates.
pub(crate) struct WriteTables<'txn> {
    pub(crate) events: Table<'txn, u64, &'static [u8]>,
    pub(crate) streams: Table<'txn, (&'static str, u8, u128, u64), u64>,
    pub(crate) connections: Table<'txn, (&'static str, u128), &'static [u8]>,
    pub(crate) activations: Table<'txn, (&'static str, u128), &'static [u8]>,
    pub(crate) policies: Table<'txn, &'static str, &'static [u8]>,
    pub(crate) timers: Table<'txn, (u64, &'static str, u128, u8), ()>,
    pub(crate) intents: Table<'txn, (&'static str, u128), ()>,
    pub(crate) keys: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    pub(crate) key_expiry: Table<'txn, (u64, &'static str, &'static str), ()>,
    pub(crate) connection_index: Table<'txn, (&'static str, u8, &'static [u8], u128), ()>,
    pub(crate) assignments:
        Table<'txn, (&'static str, &'static str, &'static str, &'static str, u128), ()>,
    pub(crate) history: Table<'txn, (&'static str, u128), &'static [u8]>,
    pub(crate) history_index: Table<'txn, (&'static str, u8, &'static [u8], u128), ()>,
    pub(crate) request_items: Table<'txn, (&'static str, u128), &'static [u8]>,
    pub(crate) request_index: Table<'txn, (&'static str, u128, u128), ()>,
    pub(crate) request_open: Table<'txn, (&'static str, &'static str, u8, &'static str, u128), ()>,
    pub(crate) request_intents: Table<'txn, (&'static str, u128), ()>,
    pub(crate) request_people: Table<'txn, (&'static str, u8, &'static str, u128), ()>,
    pub(crate) request_configs: Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn> WriteTables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<WriteTables<'txn>, Error> {
        Ok(WriteTables {
            events: txn.open_table(EVENTS)?,
            streams: txn.open_table(STREAMS)?,
            connections: txn.open_table(CONNECTIONS)?,
            activations: txn.open_table(ACTIVATIONS)?,
            policies: txn.open_table(POLICIES)?,
            timers: txn.open_table(TIMERS)?,
            intents: txn.open_table(INTENTS)?,
            keys: txn.open_table(IDEMPOTENCY)?,
            key_expiry: txn.open_table(IDEMPOTENCY_EXPIRY)?,
            connection_index: txn.open_table(CONNECTION_INDEX)?,
            assignments: txn.open_table(ASSIGNMENTS)?,
            history: txn.open_table(HISTORY)?,
            history_index: txn.open_table(HISTORY_INDEX)?,
            request_items: txn.open_table(REQUEST_ITEMS)?,
            request_index: txn.open_table(REQUEST_INDEX)?,
            request_open: txn.open_table(REQUEST_OPEN)?,
            request_intents: txn.open_table(REQUEST_INTENTS)?,
            request_people: txn.open_table(REQUEST_PEOPLE)?,
            request_configs: txn.open_table(REQUEST_CONFIGS)?,
        })
    }
}

impl Store {
    /// Appends a batch in one write transaction committed with `Durability::Immediate`: each
    /// event gets the next global sequence and the next version of its streams, and the
    /// projections, timer index, intents and idempotency keys change with it. All or nothing.
    ///
    /// The batch must come from `decide` and `evolve` against the stored state: an entry whose
    /// `after` breaks an invariant or does not follow from the stored connection (ids, version,
    /// timers) is a bug and panics before anything is written.
    ///
    /// A write: call it from one thread (the engine's writer).
    pub fn append_batch(&self, batch: &Batch) -> Result<Appended, Error> {
        assert!(batch.entries().len() <= MAX_BATCH_ENTRIES);
        assert!(batch.keys().len() <= MAX_BATCH_KEYS);
        // The checks that need no stored state run before a transaction is opened.
        for entry in batch.entries() {
            match entry {
                Entry::Connection { event, after, .. } => assert_after(event, after.as_ref()),
                Entry::Request { event, after, .. } => request::assert_after(event, after),
                Entry::Policy { .. } | Entry::RequestConfig { .. } => {}
            }
        }
        let txn = self.begin_write()?;
        let result = write_batch(&txn, batch);
        let appended = self.finish(txn, result)?;
        tracing::trace!(
            first = appended.first,
            last = appended.last,
            "batch committed"
        );
        Ok(appended)
    }
}

fn write_batch(txn: &WriteTransaction, batch: &Batch) -> Result<Appended, Error> {
    let mut t = WriteTables::open(txn)?;
    let first = t.events.last()?.map_or(0, |(k, _)| k.value()) + 1;
    let last = first + batch.len() as u64 - 1;
    for (sequence, entry) in (first..).zip(batch.entries()) {
        match entry {
            Entry::Connection {
                tenant,
                event,
                after,
            } => {
                let before = projection::get_connection(&t.connections, tenant, event.connection)?;
                assert_transition(event, before.as_ref(), after.as_ref());
                let stream = Stream::Connection(event.connection);
                let version = append_stream(&mut t.streams, tenant, stream, sequence)?;
                if let Some(activation) = event.activation {
                    append_stream(
                        &mut t.streams,
                        tenant,
                        Stream::Activation(activation),
                        sequence,
                    )?;
                }
                let bytes = codec::encode_envelope_parts(
                    tenant,
                    version,
                    (first, last),
                    PayloadRef::Connection(event),
                );
                t.events.insert(sequence, bytes.as_slice())?;
                projection::put_connection(&mut t, tenant, event, before.as_ref(), after.as_ref())?;
            }
            Entry::Policy { tenant, event } => {
                let before = projection::get_policy(&t.policies, tenant)?;
                assert_policy(tenant, event, before.as_ref());
                let version = append_stream(&mut t.streams, tenant, Stream::Policy, sequence)?;
                let bytes = codec::encode_envelope_parts(
                    tenant,
                    version,
                    (first, last),
                    PayloadRef::Policy(event),
                );
                t.events.insert(sequence, bytes.as_slice())?;
                projection::put_policy(&mut t, tenant, &event.policy)?;
            }
            Entry::Request {
                tenant,
                event,
                after,
            } => {
                let before = request::get_item(&t.request_items, tenant, event.item)?;
                request::assert_transition(event, before.as_ref(), after);
                let stream = Stream::RequestItem(event.item);
                let version = append_stream(&mut t.streams, tenant, stream, sequence)?;
                let bytes = codec::encode_envelope_parts(
                    tenant,
                    version,
                    (first, last),
                    PayloadRef::Request(event),
                );
                t.events.insert(sequence, bytes.as_slice())?;
                request::put_item(&mut t, tenant, event, before.as_ref(), after)?;
            }
            Entry::RequestConfig { tenant, event } => {
                let before = projection::get_request_config(&t.request_configs, tenant)?;
                assert_eq!(
                    event.previous, before,
                    "access request config event of tenant {tenant} is not based on the stored config"
                );
                let stream = Stream::RequestConfig;
                let version = append_stream(&mut t.streams, tenant, stream, sequence)?;
                let bytes = codec::encode_envelope_parts(
                    tenant,
                    version,
                    (first, last),
                    PayloadRef::RequestConfig(event),
                );
                t.events.insert(sequence, bytes.as_slice())?;
                t.request_configs.insert(
                    tenant.as_str(),
                    codec::encode_request_config(&event.config).as_slice(),
                )?;
            }
        }
    }
    for key in batch.keys() {
        idempotency::put(&mut t.keys, &mut t.key_expiry, key)?;
    }
    if !batch.cursors().is_empty() {
        let mut meta = txn.open_table(crate::tables::META)?;
        for (name, sequence) in batch.cursors() {
            let key = format!("{}{name}", crate::tables::CURSOR_PREFIX);
            let stored = meta.get(key.as_str())?.map_or(0, |v| v.value());
            // Cursors never move back: a consumer restarted from an older position re-reads.
            meta.insert(key.as_str(), stored.max(*sequence))?;
        }
    }
    Ok(Appended { first, last })
}

/// Indexes `sequence` as the next version of `stream`; returns that version.
fn append_stream(
    streams: &mut Table<'_, (&'static str, u8, u128, u64), u64>,
    tenant: &TenantId,
    stream: Stream,
    sequence: u64,
) -> Result<u64, Error> {
    let (kind, id) = stream.key_parts();
    let t = tenant.as_str();
    let previous = streams
        .range((t, kind, id, 0)..=(t, kind, id, u64::MAX))?
        .next_back()
        .transpose()?
        .map_or(0, |(k, _)| k.value().3);
    let version = previous + 1;
    streams.insert((t, kind, id, version), sequence)?;
    Ok(version)
}

/// Paired assertions on an entry's `after`, before anything is encoded.
fn assert_after(event: &Event, after: Option<&Connection>) {
    let id = event.connection;
    match after {
        Some(c) => {
            assert_eq!(c.id(), id, "entry for connection {id} carries {}", c.id());
            if let Err(e) = c.check_invariants() {
                panic!("entry for connection {id} breaks an invariant: {e}");
            }
            if let Some(activation) = event.activation {
                assert_eq!(
                    c.activation.as_ref().map(|a| a.id),
                    Some(activation),
                    "event of connection {id} names activation {activation}, the state another"
                );
            }
            let timers = c.timers();
            assert!(
                event.arm.iter().all(|t| timers.contains(t))
                    && event.cancel.iter().all(|t| !timers.contains(t)),
                "event of connection {id} arms {:?} and cancels {:?}; the state has {timers:?}",
                event.arm,
                event.cancel
            );
        }
        None => assert!(
            matches!(event.change, Change::Removed) && event.arm.is_empty(),
            "only a removal of connection {id} leaves no state"
        ),
    }
}

/// Paired assertions tying an entry to the stored state before it.
fn assert_transition(event: &Event, before: Option<&Connection>, after: Option<&Connection>) {
    let id = event.connection;
    match (&event.change, before, after) {
        (Change::Registered(_), None, Some(a)) => {
            assert_eq!(
                a.version, 1,
                "registration of {id} at version {}",
                a.version
            )
        }
        (Change::Registered(_), Some(_), _) => panic!("registration of {id}, which is stored"),
        (Change::Removed, Some(_), None) => {}
        (change, None, _) => panic!("{} of connection {id}, which is not stored", change.name()),
        (change, Some(b), Some(a)) => assert_eq!(
            a.version,
            b.version + 1,
            "{} of connection {id}: version {} after {}",
            change.name(),
            a.version,
            b.version
        ),
        (change, Some(_), None) => panic!("{} of connection {id} leaves no state", change.name()),
    }
    let before_timers = before.map(Connection::timers).unwrap_or_default();
    assert!(
        event.cancel.iter().all(|t| before_timers.contains(t))
            && event.arm.iter().all(|t| !before_timers.contains(t)),
        "event of connection {id} arms {:?} and cancels {:?}; the stored state has {before_timers:?}",
        event.arm,
        event.cancel
    );
}

fn assert_policy(
    tenant: &TenantId,
    event: &PolicyEvent,
    before: Option<&jitflow_core::policy::Policy>,
) {
    assert_eq!(
        event.previous.as_ref(),
        before,
        "policy event of tenant {tenant} is not based on the stored policy"
    );
    assert_eq!(
        event.policy.version,
        before.map_or(1, |p| p.version + 1),
        "policy event of tenant {tenant} skips a version"
    );
}
