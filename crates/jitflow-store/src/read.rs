//! Reading: a [`Reader`] is a consistent snapshot (a redb read transaction). Readers never block
//! the writer and see only committed batches, whole.
//!
//! Every read that can return many items takes a `limit` of at most [`MAX_READ_LIMIT`] and a
//! cursor to continue from.

use std::ops::Bound;

use jitflow_core::activation::Activation;
use jitflow_core::connection::Connection;
use jitflow_core::history::ActivationRecord;
use jitflow_core::id::{
    AccountId, ActivationId, ConnectionId, EntitlementId, IdentityId, TenantId,
};
use jitflow_core::policy::Policy;
use jitflow_core::time::Timestamp;
use std::sync::Arc;

use redb::TableDefinition;

use crate::backend::{Log, Snapshot};

use crate::hot::{self, Layer};
use crate::store::Published;
use crate::tables;

use crate::codec::{self, Envelope, Stream};
use crate::idempotency::Idempotency;
use crate::tables::{
    ACTIVATIONS, ASSIGNMENTS, CONNECTIONS, HISTORY, IDEMPOTENCY, INTENTS, POLICIES,
    REQUEST_INTENTS, STREAMS, TIMERS,
};

/// The largest `limit` a read accepts.
pub const MAX_READ_LIMIT: usize = 10_000;

/// The most connection ids an [`Error::Ambiguous`] lists.
pub const MAX_AMBIGUOUS: usize = 8;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend failed to read (an I/O error, or a file damaged beyond its checksums).
    #[error("storage error while reading: {0}")]
    Storage(#[source] std::io::Error),
    /// A stored record or key could not be decoded; the error names it.
    #[error(transparent)]
    Corrupt(#[from] codec::Error),
    /// More than one connection holds the assignment asked for by
    /// [`Reader::connection_by_assignment`] (registration does not enforce that an assignment
    /// is unique). `ids` lists them (at most [`MAX_AMBIGUOUS`]).
    #[error("{} connections hold this assignment, so it names none: {ids:?}", ids.len())]
    Ambiguous {
        /// The connections holding the assignment.
        ids: Vec<ConnectionId>,
    },
    /// The `limit` asked for is over [`MAX_READ_LIMIT`]. Nothing was read.
    #[error("a read returns at most {max} items; {requested} were asked for")]
    LimitTooLarge {
        /// The limit asked for.
        requested: usize,
        /// [`MAX_READ_LIMIT`].
        max: usize,
    },
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Storage(crate::backend::file::io(e))
            }
        }
    )*};
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Storage(e)
    }
}
storage_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::Error
);

/// The tenant of a key of the connections table, checked.
fn connection_key_tenant(text: &str) -> Result<TenantId, Error> {
    TenantId::parse(text).map_err(|e| {
        codec::Error::new(
            codec::RecordName::Key {
                table: "connections",
                key: text.to_owned(),
            },
            codec::Problem::Invalid(format!("not a tenant id: {e}")),
        )
        .into()
    })
}

pub(crate) fn check_limit(limit: usize) -> Result<(), Error> {
    if limit > MAX_READ_LIMIT {
        return Err(Error::LimitTooLarge {
            requested: limit,
            max: MAX_READ_LIMIT,
        });
    }
    Ok(())
}

/// An event read from a stream, with its version in that stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    /// The event's version in the stream read (for an activation stream, this differs from the
    /// envelope's `stream_version`, which counts in the connection's stream).
    pub version: u64,
    /// The event.
    pub envelope: Envelope,
}

/// A consistent snapshot of the store: the log up to one commit, and what it derives as the
/// hot layer published with that commit over the checkpointed tables. `Send + Sync`; keep it
/// short-lived, as the pages it sees cannot be reused by the writer while it is open.
pub struct Reader {
    base: Arc<dyn Snapshot>,
    layer: Layer,
    /// The last event of the snapshot: the log may hold later ones, not yet published.
    sequence: u64,
    /// The last extras record of the snapshot (0 for none), likewise.
    pub(crate) extras: u64,
}

/// The store's pending work, all tenants together (operators' gauges). Exact, and read in
/// constant time: redb keeps each table's length in its header, and the hot layer its delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Armed timers (activations' and access request items').
    pub timers: u64,
    /// Connections with effects committed and not yet settled.
    pub connection_intents: u64,
    /// Access request items with effects committed and not yet settled.
    pub item_intents: u64,
    /// Connections (a JIT activation's or a standing revoke) and access request items whose
    /// revoke keeps failing past the configured bound (`Workflow::is_stuck`).
    pub stuck: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(base: Arc<dyn Snapshot>, published: Arc<Published>) -> Reader {
        Reader {
            base,
            layer: published.layer.clone(),
            sequence: published.sequence,
            extras: published.extras,
        }
    }

    /// The pending work of the snapshot: armed timers and unsettled intents.
    pub fn backlog(&self) -> Result<Backlog, Error> {
        Ok(Backlog {
            timers: self.table(TIMERS)?.len()?,
            connection_intents: self.table(INTENTS)?.len()?,
            item_intents: self.table(REQUEST_INTENTS)?.len()?,
            stuck: self.table(crate::tables::STUCK)?.len()?,
        })
    }

    /// A derived table of the snapshot, merged: the hot layer over the checkpointed table.
    pub(crate) fn table<K: hot::SortKey + 'static, V: redb::Value + 'static>(
        &self,
        definition: TableDefinition<'static, K, V>,
    ) -> Result<hot::Table<K, V>, Error> {
        Ok(self.open(definition)?)
    }

    /// [`Reader::table`], with the backend's error (opening never fails today; the signature
    /// leaves a backend room to).
    pub(crate) fn open<K: hot::SortKey + 'static, V: redb::Value + 'static>(
        &self,
        definition: TableDefinition<'static, K, V>,
    ) -> Result<hot::Table<K, V>, std::io::Error> {
        let id = tables::id(redb::TableHandle::name(&definition));
        Ok(hot::Table::new(
            id,
            self.layer.clone(),
            Arc::clone(&self.base),
        ))
    }

    /// The snapshot of the backend under the layer, for the log. Records after the snapshot's
    /// last event may be there: read only up to [`Reader::last_sequence`].
    pub(crate) fn base(&self) -> &dyn Snapshot {
        &*self.base
    }

    /// The named cursor's position (0 when it was never set). See `Batch::set_cursor`.
    pub fn cursor(&self, name: &str) -> Result<u64, Error> {
        let meta = self.table(crate::tables::META)?;
        let key = format!("{}{name}", crate::tables::CURSOR_PREFIX);
        Ok(meta.get(key.as_str())?.map_or(0, |v| v.value()))
    }

    /// The global sequence of the last committed event; 0 when the log is empty (sequences
    /// start at 1).
    pub fn last_sequence(&self) -> Result<u64, Error> {
        Ok(self.sequence)
    }

    /// The event with global sequence `sequence`.
    pub fn event(&self, sequence: u64) -> Result<Option<Envelope>, Error> {
        if sequence > self.sequence {
            return Ok(None);
        }
        let Some(bytes) = self.base.record(Log::Events, sequence)? else {
            return Ok(None);
        };
        Ok(Some(codec::decode_envelope(sequence, &bytes)?))
    }

    /// Events of every tenant with a global sequence after `after`, in order, at most `limit`
    /// (for subscribers and export; pass the last sequence returned to continue).
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, Error> {
        check_limit(limit)?;
        if after >= self.sequence {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in self
            .base
            .records(Log::Events, after + 1, self.sequence)?
            .take(limit)
        {
            let (sequence, bytes) = entry?;
            out.push(codec::decode_envelope(sequence, &bytes)?);
        }
        Ok(out)
    }

    /// The events of one stream of `tenant` with a version after `after_version`, in order, at
    /// most `limit`. A connection's stream holds every event of the connection; an activation's
    /// stream every event that names the activation; the policy stream every policy change.
    pub fn stream(
        &self,
        tenant: &TenantId,
        stream: Stream,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<StreamEvent>, Error> {
        check_limit(limit)?;
        let Some(from) = after_version.checked_add(1) else {
            return Ok(Vec::new());
        };
        let (kind, id) = stream.key_parts();
        let t = tenant.as_str();
        let index = self.table(STREAMS)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in index
            .range((t, kind, id, from)..=(t, kind, id, u64::MAX))?
            .take(limit)
        {
            let (k, v) = entry?;
            let (version, sequence) = (k.value().3, v.value());
            let bytes = self.base.record(Log::Events, sequence)?.ok_or_else(|| {
                codec::Error::new(
                    codec::RecordName::Event(sequence),
                    codec::Problem::Invalid(format!(
                        "indexed as version {version} of {stream} of tenant {tenant}, but missing"
                    )),
                )
            })?;
            out.push(StreamEvent {
                version,
                envelope: codec::decode_envelope(sequence, &bytes)?,
            });
        }
        Ok(out)
    }

    /// The last version of a stream of `tenant`; 0 for a stream without events.
    pub fn stream_version(&self, tenant: &TenantId, stream: Stream) -> Result<u64, Error> {
        let (kind, id) = stream.key_parts();
        let t = tenant.as_str();
        let index = self.table(STREAMS)?;
        let last = index
            .range((t, kind, id, 0)..=(t, kind, id, u64::MAX))?
            .next_back()
            .transpose()?;
        Ok(last.map_or(0, |(k, _)| k.value().3))
    }

    /// The current connection `id` of `tenant`.
    pub fn connection(
        &self,
        tenant: &TenantId,
        id: ConnectionId,
    ) -> Result<Option<Connection>, Error> {
        let table = self.table(CONNECTIONS)?;
        let t = tenant.as_str();
        let Some(bytes) = table.get((t, id.as_u128()))? else {
            return Ok(None);
        };
        Ok(Some(codec::decode_connection(t, id, bytes.value())?))
    }

    /// The connections of `tenant` in id order, after `after` (exclusive), at most `limit`.
    pub fn connections(
        &self,
        tenant: &TenantId,
        after: Option<ConnectionId>,
        limit: usize,
    ) -> Result<Vec<Connection>, Error> {
        check_limit(limit)?;
        let table = self.table(CONNECTIONS)?;
        let t = tenant.as_str();
        let start = match after {
            Some(id) => Bound::Excluded((t, id.as_u128())),
            None => Bound::Included((t, 0)),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in table
            .range::<(&str, u128)>((start, Bound::Included((t, u128::MAX))))?
            .take(limit)
        {
            let (k, v) = entry?;
            let id = ConnectionId::from_u128(k.value().1);
            out.push(codec::decode_connection(t, id, v.value())?);
        }
        Ok(out)
    }

    /// The tenants that have at least one connection, in order, after `after` (exclusive), at
    /// most `limit`: one seek per tenant, whatever its number of connections (for operators'
    /// counts; a tenant's connections are then read with [`Reader::connections`]).
    pub fn tenants(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<TenantId>, Error> {
        check_limit(limit)?;
        let table = self.table(CONNECTIONS)?;
        let mut out: Vec<TenantId> = Vec::with_capacity(limit.min(1024));
        let mut last = after.cloned();
        while out.len() < limit {
            let next = match &last {
                Some(t) => table
                    .range::<(&str, u128)>((
                        Bound::Excluded((t.as_str(), u128::MAX)),
                        Bound::Unbounded,
                    ))?
                    .next(),
                None => table.range::<(&str, u128)>(..)?.next(),
            };
            let Some(entry) = next else { break };
            let (k, _) = entry?;
            let tenant = connection_key_tenant(k.value().0)?;
            out.push(tenant.clone());
            last = Some(tenant);
        }
        Ok(out)
    }

    /// The keys of every tenant's connections in key order (tenant, then id), after `after`
    /// (exclusive), at most `limit`, without reading the records: what the engine's background
    /// reconciliation walks, a page at a time.
    pub fn connection_keys(
        &self,
        after: Option<(&TenantId, ConnectionId)>,
        limit: usize,
    ) -> Result<Vec<(TenantId, ConnectionId)>, Error> {
        check_limit(limit)?;
        let table = self.table(CONNECTIONS)?;
        let start = match after {
            Some((t, id)) => Bound::Excluded((t.as_str(), id.as_u128())),
            None => Bound::Unbounded,
        };
        let mut out: Vec<(TenantId, ConnectionId)> = Vec::with_capacity(limit.min(1024));
        for entry in table
            .range::<(&str, u128)>((start, Bound::Unbounded))?
            .take(limit)
        {
            let (k, _) = entry?;
            let (text, id) = k.value();
            // Consecutive keys mostly share their tenant: parse it once per tenant.
            let tenant = match out.last() {
                Some((last, _)) if last.as_str() == text => last.clone(),
                _ => connection_key_tenant(text)?,
            };
            out.push((tenant, ConnectionId::from_u128(id)));
        }
        Ok(out)
    }

    /// The activation `id` of `tenant`, as it stands after the last event that named it.
    pub fn activation(
        &self,
        tenant: &TenantId,
        id: ActivationId,
    ) -> Result<Option<Activation>, Error> {
        let table = self.table(ACTIVATIONS)?;
        let t = tenant.as_str();
        let Some(bytes) = table.get((t, id.as_u128()))? else {
            return Ok(None);
        };
        Ok(Some(codec::decode_activation(t, id, bytes.value())?))
    }

    /// The connection of `tenant` that gives `identity` the `entitlement` through `account`
    /// (the contract's patch by `entitlementId`, `identityId` and `accountId`), read from the
    /// assignment index.
    ///
    /// # Errors
    ///
    /// [`Error::Ambiguous`] when several connections hold the assignment; storage and decoding
    /// errors.
    pub fn connection_by_assignment(
        &self,
        tenant: &TenantId,
        entitlement: &EntitlementId,
        identity: &IdentityId,
        account: &AccountId,
    ) -> Result<Option<Connection>, Error> {
        let ids = self.assignment_holders(tenant, entitlement, identity, account)?;
        match ids.as_slice() {
            [] => Ok(None),
            [id] => self.connection(tenant, *id),
            _ => Err(Error::Ambiguous { ids }),
        }
    }

    /// The ids of the connections of `tenant` that hold the assignment (entitlement, identity,
    /// account), at most [`MAX_AMBIGUOUS`]. The engine registers at most one per assignment;
    /// files written before it enforced that may hold more.
    pub fn assignment_holders(
        &self,
        tenant: &TenantId,
        entitlement: &EntitlementId,
        identity: &IdentityId,
        account: &AccountId,
    ) -> Result<Vec<ConnectionId>, Error> {
        let table = self.table(ASSIGNMENTS)?;
        let (t, e, i, a) = (
            tenant.as_str(),
            entitlement.as_str(),
            identity.as_str(),
            account.as_str(),
        );
        let mut ids = Vec::new();
        for entry in table
            .range((t, e, i, a, 0)..=(t, e, i, a, u128::MAX))?
            .take(MAX_AMBIGUOUS)
        {
            ids.push(ConnectionId::from_u128(entry?.0.value().4));
        }
        Ok(ids)
    }

    /// The activation history record of activation `id` of `tenant`.
    pub fn history_record(
        &self,
        tenant: &TenantId,
        id: ActivationId,
    ) -> Result<Option<ActivationRecord>, Error> {
        let table = self.table(HISTORY)?;
        let t = tenant.as_str();
        let Some(bytes) = table.get((t, id.as_u128()))? else {
            return Ok(None);
        };
        Ok(Some(codec::decode_history(t, id, bytes.value())?))
    }

    /// The stored policy of `tenant` (`None` before its first policy event).
    pub fn policy(&self, tenant: &TenantId) -> Result<Option<Policy>, Error> {
        let table = self.table(POLICIES)?;
        let t = tenant.as_str();
        let Some(bytes) = table.get(t)? else {
            return Ok(None);
        };
        Ok(Some(codec::decode_policy(t, bytes.value())?))
    }

    /// The stored access request config of `tenant`; `None` before its first change, when the
    /// contract's defaults (`AccessRequestConfig::default`) apply.
    pub fn access_request_config(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<jitflow_core::request::AccessRequestConfig>, Error> {
        let table = self.table(crate::tables::REQUEST_CONFIGS)?;
        let t = tenant.as_str();
        let Some(bytes) = table.get(t)? else {
            return Ok(None);
        };
        Ok(Some(codec::decode_request_config(t, bytes.value())?))
    }

    /// The idempotency record of `key` for `tenant`, `None` when absent or expired at `now`.
    pub fn idempotency(
        &self,
        tenant: &TenantId,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<Idempotency>, Error> {
        let table = self.table(IDEMPOTENCY)?;
        let t = tenant.as_str();
        let Some(bytes) = table.get((t, key))? else {
            return Ok(None);
        };
        let record = codec::decode_idempotency(t, key, bytes.value())?;
        Ok((!record.is_expired(now)).then_some(record))
    }
}
