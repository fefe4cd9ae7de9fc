//! A batch: what the writer commits in one transaction (group commit).

use jitflow_core::connection::Connection;
use jitflow_core::id::TenantId;
use jitflow_core::lifecycle::{Event, PolicyEvent};
use jitflow_core::request;

use crate::idempotency::KeyPut;

/// The most events one batch holds.
pub const MAX_BATCH_ENTRIES: usize = 4096;
/// The most idempotency keys one batch stores.
pub const MAX_BATCH_KEYS: usize = 4096;
/// The most cursors one batch moves.
pub const MAX_BATCH_CURSORS: usize = 16;
/// The longest cursor name, in bytes.
pub const MAX_CURSOR_NAME: usize = 64;

/// One event to append, with the state it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "connection entries are nearly all entries: boxing them costs an allocation each"
)]
pub enum Entry {
    /// An event of a connection, decided by `jitflow_core::lifecycle::decide`.
    Connection {
        /// The tenant.
        tenant: TenantId,
        /// The event, with the timers it arms and cancels and the effects it starts.
        event: Event,
        /// The connection after the event (`evolve` of the state before): `None` after
        /// `Change::Removed`.
        after: Option<Connection>,
    },
    /// A change of a tenant's policy, decided by `jitflow_core::lifecycle::decide_policy`.
    Policy {
        /// The tenant.
        tenant: TenantId,
        /// The event; its `previous` must be the stored policy.
        event: PolicyEvent,
    },
    /// An event of an access request item, decided by `jitflow_core::request::decide`.
    Request {
        /// The tenant.
        tenant: TenantId,
        /// The event, with the timers it arms and cancels and the effects it starts.
        event: request::Event,
        /// The item after the event (`request::evolve` of the state before). Boxed: items are
        /// large and rare next to connection entries.
        after: Box<request::Item>,
    },
    /// A change of a tenant's access request config, decided by
    /// `jitflow_core::request::config::decide`.
    RequestConfig {
        /// The tenant.
        tenant: TenantId,
        /// The event; its `previous` must be the stored config.
        event: request::config::Event,
    },
}

impl Entry {
    /// The tenant.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Entry::Connection { tenant, .. }
            | Entry::Policy { tenant, .. }
            | Entry::Request { tenant, .. }
            | Entry::RequestConfig { tenant, .. } => tenant,
        }
    }
}

/// Events and idempotency keys committed together, all or nothing. Events get consecutive
/// global sequences in the order they were pushed.
///
/// Bounded: at most [`MAX_BATCH_ENTRIES`] events and [`MAX_BATCH_KEYS`] keys. Pushing more is a
/// bug of the caller (the writer drains a bounded queue) and panics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    entries: Vec<Entry>,
    keys: Vec<KeyPut>,
    cursors: Vec<(String, u64)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds an event. Panics if the batch already holds [`MAX_BATCH_ENTRIES`].
    pub fn push(&mut self, entry: Entry) {
        assert!(
            self.entries.len() < MAX_BATCH_ENTRIES,
            "a batch holds at most {MAX_BATCH_ENTRIES} events"
        );
        self.entries.push(entry);
    }

    /// Adds an idempotency key. Panics if the batch already holds [`MAX_BATCH_KEYS`].
    pub fn push_key(&mut self, key: KeyPut) {
        assert!(
            self.keys.len() < MAX_BATCH_KEYS,
            "a batch holds at most {MAX_BATCH_KEYS} idempotency keys"
        );
        self.keys.push(key);
    }

    /// Moves the named cursor (a consumer's position in the log, such as the notifier's) to
    /// `sequence`. Cursors only move forward: a lower value than the stored one is ignored.
    /// Panics on a name over [`MAX_CURSOR_NAME`] bytes or more than [`MAX_BATCH_CURSORS`] names.
    pub fn set_cursor(&mut self, name: &str, sequence: u64) {
        assert!(
            !name.is_empty() && name.len() <= MAX_CURSOR_NAME,
            "cursor name of {} bytes outside 1..={MAX_CURSOR_NAME}",
            name.len()
        );
        if let Some(c) = self.cursors.iter_mut().find(|(n, _)| n == name) {
            c.1 = c.1.max(sequence);
            return;
        }
        assert!(
            self.cursors.len() < MAX_BATCH_CURSORS,
            "a batch moves at most {MAX_BATCH_CURSORS} cursors"
        );
        self.cursors.push((name.to_owned(), sequence));
    }

    /// The cursors to move.
    pub fn cursors(&self) -> &[(String, u64)] {
        &self.cursors
    }

    /// The events, in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The idempotency keys.
    pub fn keys(&self) -> &[KeyPut] {
        &self.keys
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the batch holds no events, keys or cursors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.keys.is_empty() && self.cursors.is_empty()
    }

    /// Whether no further event fits.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= MAX_BATCH_ENTRIES
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.keys.clear();
        self.cursors.clear();
    }
}

/// What a committed batch was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The global sequence of the batch's first event.
    pub first: u64,
    /// The global sequence of its last event; `first - 1` for a batch without events.
    pub last: u64,
}

impl Appended {
    /// The number of events appended.
    pub fn len(&self) -> u64 {
        self.last + 1 - self.first
    }

    /// Whether the batch held no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
