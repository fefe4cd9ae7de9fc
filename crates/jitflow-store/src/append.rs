//! Appending a batch: the log alone in one write transaction, committed with
//! `Durability::Immediate`; what the batch derives goes into the hot layer (`crate::hot`).

use jitflow_core::connection::Connection;
use jitflow_core::id::TenantId;
use jitflow_core::lifecycle::{Change, Event, PolicyEvent};
use std::cell::RefCell;

use std::sync::Arc;

use crate::backend::{Append, Snapshot};

use crate::batch::{Appended, Batch, Entry, MAX_BATCH_ENTRIES, MAX_BATCH_KEYS};
use crate::codec::{self, PayloadRef, Stream};
use crate::hot::{Layer, WriteTable};
use crate::store::{Published, Store};
use crate::tables::{
    self, ACTIVATIONS, ASSIGNMENTS, CONNECTION_INDEX, CONNECTIONS, HISTORY, HISTORY_INDEX,
    IDEMPOTENCY, IDEMPOTENCY_EXPIRY, INTENTS, META, POLICIES, REQUEST_CONFIGS, REQUEST_INDEX,
    REQUEST_INTENTS, REQUEST_ITEMS, REQUEST_OPEN, REQUEST_PEOPLE, STREAMS, STUCK, TIMERS,
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
        /// The backend's error (often an I/O error such as a full disk).
        #[source]
        source: std::io::Error,
    },
    /// A storage error before the commit: nothing of this write was committed. The store is now
    /// poisoned, as the backend may refuse every write after an I/O error.
    #[error("storage error, nothing committed: {source}")]
    Storage {
        /// The backend's error.
        #[source]
        source: std::io::Error,
    },
    /// The backend refused the write because this node no longer holds the lease of the
    /// partition (a shared database's backend: another node took it over, or it expired).
    /// Nothing was committed. The store is now poisoned; reopening it succeeds only once the
    /// lease is this node's again.
    #[error("nothing committed: {source}")]
    Fenced {
        /// The backend's refusal, naming the partition, the epoch and the holder.
        #[source]
        source: crate::backend::WriteError,
    },
    /// A stored record the write had to read (the connection before the event, a policy, an
    /// idempotency record) could not be decoded. Nothing was committed; the store stays usable.
    #[error("nothing committed: {0}")]
    Corrupt(#[from] codec::Error),
}

impl Error {
    /// The kind of the I/O error behind a storage or commit failure, if one is.
    pub fn io_error_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            Error::OutcomeUnknown { source } | Error::Storage { source } => Some(source.kind()),
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
                Error::Storage { source: crate::backend::file::io(e) }
            }
        }
    )*};
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Error {
        Error::Storage { source }
    }
}
storage_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::Error
);

/// The derived tables as one batch changes them: reads see the working layer over the
/// checkpointed tables of one snapshot, writes go to the working layer (see `crate::hot`).
pub(crate) struct WriteTables<'w> {
    pub(crate) meta: WriteTable<'w, &'static str, u64>,
    pub(crate) streams: WriteTable<'w, (&'static str, u8, u128, u64), u64>,
    pub(crate) connections: WriteTable<'w, (&'static str, u128), &'static [u8]>,
    pub(crate) activations: WriteTable<'w, (&'static str, u128), &'static [u8]>,
    pub(crate) policies: WriteTable<'w, &'static str, &'static [u8]>,
    pub(crate) timers: WriteTable<'w, (u64, &'static str, u128, u8), ()>,
    pub(crate) intents: WriteTable<'w, (&'static str, u128), ()>,
    pub(crate) keys: WriteTable<'w, (&'static str, &'static str), &'static [u8]>,
    pub(crate) key_expiry: WriteTable<'w, (u64, &'static str, &'static str), ()>,
    pub(crate) connection_index: WriteTable<'w, (&'static str, u8, &'static [u8], u128), ()>,
    pub(crate) assignments:
        WriteTable<'w, (&'static str, &'static str, &'static str, &'static str, u128), ()>,
    pub(crate) history: WriteTable<'w, (&'static str, u128), &'static [u8]>,
    pub(crate) history_index: WriteTable<'w, (&'static str, u8, &'static [u8], u128), ()>,
    pub(crate) request_items: WriteTable<'w, (&'static str, u128), &'static [u8]>,
    pub(crate) request_index: WriteTable<'w, (&'static str, u128, u128), ()>,
    pub(crate) request_open:
        WriteTable<'w, (&'static str, &'static str, u8, &'static str, u128), ()>,
    pub(crate) request_intents: WriteTable<'w, (&'static str, u128), ()>,
    pub(crate) request_people: WriteTable<'w, (&'static str, u8, &'static str, u128), ()>,
    pub(crate) request_configs: WriteTable<'w, &'static str, &'static [u8]>,
    pub(crate) stuck: WriteTable<'w, (&'static str, u8, u128), ()>,
}

impl<'w> WriteTables<'w> {
    pub(crate) fn open(
        base: &Arc<dyn Snapshot>,
        layer: &'w RefCell<Layer>,
    ) -> Result<WriteTables<'w>, Error> {
        fn table<'w, K: crate::hot::SortKey + 'static, V: redb::Value + 'static>(
            base: &Arc<dyn Snapshot>,
            layer: &'w RefCell<Layer>,
            definition: redb::TableDefinition<'static, K, V>,
        ) -> Result<WriteTable<'w, K, V>, Error> {
            let id = tables::id(redb::TableHandle::name(&definition));
            Ok(WriteTable::new(id, layer, Arc::clone(base)))
        }
        Ok(WriteTables {
            meta: table(base, layer, META)?,
            streams: table(base, layer, STREAMS)?,
            connections: table(base, layer, CONNECTIONS)?,
            activations: table(base, layer, ACTIVATIONS)?,
            policies: table(base, layer, POLICIES)?,
            timers: table(base, layer, TIMERS)?,
            intents: table(base, layer, INTENTS)?,
            keys: table(base, layer, IDEMPOTENCY)?,
            key_expiry: table(base, layer, IDEMPOTENCY_EXPIRY)?,
            connection_index: table(base, layer, CONNECTION_INDEX)?,
            assignments: table(base, layer, ASSIGNMENTS)?,
            history: table(base, layer, HISTORY)?,
            history_index: table(base, layer, HISTORY_INDEX)?,
            request_items: table(base, layer, REQUEST_ITEMS)?,
            request_index: table(base, layer, REQUEST_INDEX)?,
            request_open: table(base, layer, REQUEST_OPEN)?,
            request_intents: table(base, layer, REQUEST_INTENTS)?,
            request_people: table(base, layer, REQUEST_PEOPLE)?,
            request_configs: table(base, layer, REQUEST_CONFIGS)?,
            stuck: table(base, layer, STUCK)?,
        })
    }
}

impl Store {
    /// Appends a batch: one write transaction that holds the batch's events (and, when it has
    /// any, one extras record with its idempotency keys and cursors) and nothing randomly
    /// keyed, committed with `Durability::Immediate`. Each event gets the next global sequence
    /// and the next version of its streams. The projections, indexes, timers, intents and
    /// idempotency keys the batch derives go into the hot layer, published to readers only
    /// after the commit. All or nothing.
    ///
    /// The batch must come from `decide` and `evolve` against the current state: an entry whose
    /// `after` breaks an invariant or does not follow from the stored connection (ids, version,
    /// timers) is a bug and panics before anything is written.
    ///
    /// When the layer is over its bound (`Options::layer_entries_max` or `layer_bytes_max`) a
    /// checkpoint runs first: the writer waits rather than growing the layer.
    ///
    /// A write: call it from one thread (the engine's writer).
    pub fn append_batch(&self, batch: &Batch) -> Result<Appended, Error> {
        assert!(batch.entries().len() <= MAX_BATCH_ENTRIES);
        assert!(batch.keys().len() <= MAX_BATCH_KEYS);
        // The checks that need no stored state run before anything is read.
        for entry in batch.entries() {
            match entry {
                Entry::Connection { event, after, .. } => assert_after(event, after.as_ref()),
                Entry::Request { event, after, .. } => request::assert_after(event, after),
                Entry::Policy { .. } | Entry::RequestConfig { .. } => {}
            }
        }
        if self.hot.over_bound(&self.options) {
            self.checkpoint(None)?;
        }
        let _writer = self.hot.writer();
        let published = self.hot.published();
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let base = self.base().inspect_err(|_| self.poison())?;
        let layer = RefCell::new(published.layer.clone());
        let first = published.sequence + 1;
        let last = first + batch.len() as u64 - 1;
        let mut records = Vec::with_capacity(batch.len());
        {
            let mut t = WriteTables::open(&base, &layer)?;
            for (sequence, entry) in (first..).zip(batch.entries()) {
                let version = derive(&mut t, entry, sequence)?;
                records.push(encode(entry, version, (first, last)));
            }
            for key in batch.keys() {
                idempotency::put(&mut t.keys, &mut t.key_expiry, key)?;
            }
            for (name, sequence) in batch.cursors() {
                move_cursor(&mut t.meta, name, *sequence)?;
            }
        }
        let extras = (!batch.keys().is_empty() || !batch.cursors().is_empty()).then(|| {
            codec::encode_extras(&codec::Extras {
                keys: batch.keys().to_vec(),
                cursors: batch.cursors().to_vec(),
            })
        });
        let extras_number = published.extras + u64::from(extras.is_some());

        let append = Append {
            first,
            events: &records,
            extras: extras.as_deref().map(|bytes| (extras_number, bytes)),
        };
        self.written(self.backend().append(self.options.partition, append))?;
        self.hot.publish(Published {
            sequence: last,
            extras: extras_number,
            layer: layer.into_inner(),
            ..*published
        });
        tracing::trace!(first, last, "batch committed");
        Ok(Appended { first, last })
    }
}

/// Moves cursor `name` to `sequence` unless it is already further.
pub(crate) fn move_cursor(
    meta: &mut WriteTable<'_, &'static str, u64>,
    name: &str,
    sequence: u64,
) -> Result<(), Error> {
    let key = format!("{}{name}", crate::tables::CURSOR_PREFIX);
    let stored = meta.get(key.as_str())?.map_or(0, |v| v.value());
    // Cursors never move back: a consumer restarted from an older position re-reads.
    meta.insert(key.as_str(), stored.max(sequence))?;
    Ok(())
}

/// Writes everything `entry` (event `sequence`) derives into the working layer, after the
/// paired assertions against the state before it; returns the event's version in its stream.
/// The one derivation: the commit path and the tail replay on open both call it.
pub(crate) fn derive(t: &mut WriteTables<'_>, entry: &Entry, sequence: u64) -> Result<u64, Error> {
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
            projection::put_connection(t, tenant, event, before.as_ref(), after.as_ref())?;
            Ok(version)
        }
        Entry::Policy { tenant, event } => {
            let before = projection::get_policy(&t.policies, tenant)?;
            assert_policy(tenant, event, before.as_ref());
            let version = append_stream(&mut t.streams, tenant, Stream::Policy, sequence)?;
            projection::put_policy(t, tenant, &event.policy)?;
            Ok(version)
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
            request::put_item(t, tenant, event, before.as_ref(), after)?;
            Ok(version)
        }
        Entry::RequestConfig { tenant, event } => {
            let before = projection::get_request_config(&t.request_configs, tenant)?;
            assert_eq!(
                event.previous, before,
                "access request config event of tenant {tenant} is not based on the stored config"
            );
            let version = append_stream(&mut t.streams, tenant, Stream::RequestConfig, sequence)?;
            t.request_configs.insert(
                tenant.as_str(),
                codec::encode_request_config(&event.config).as_slice(),
            )?;
            Ok(version)
        }
    }
}

/// The envelope of `entry` as the log stores it.
fn encode(entry: &Entry, version: u64, batch: (u64, u64)) -> Vec<u8> {
    let payload = match entry {
        Entry::Connection { event, .. } => PayloadRef::Connection(event),
        Entry::Policy { event, .. } => PayloadRef::Policy(event),
        Entry::Request { event, .. } => PayloadRef::Request(event),
        Entry::RequestConfig { event, .. } => PayloadRef::RequestConfig(event),
    };
    codec::encode_envelope_parts(entry.tenant(), version, batch, payload)
}

/// Indexes `sequence` as the next version of `stream`; returns that version.
fn append_stream(
    streams: &mut WriteTable<'_, (&'static str, u8, u128, u64), u64>,
    tenant: &TenantId,
    stream: Stream,
    sequence: u64,
) -> Result<u64, Error> {
    let (kind, id) = stream.key_parts();
    let t = tenant.as_str();
    let previous = streams
        .last_in_growing((t, kind, id, 0)..=(t, kind, id, u64::MAX))?
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
            crate::intents::assert_follows("connection", event, c);
            if let Some(activation) = event.activation {
                assert_eq!(
                    c.activation.as_ref().map(|a| a.id),
                    Some(activation),
                    "event of connection {id} names activation {activation}, the state another"
                );
            }
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
