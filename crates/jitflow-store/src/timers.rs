//! The timer index: every armed timer of every connection and access request item, ordered by
//! due time. A key's kind code says which of the two it belongs to (connection codes 1 to 4,
//! request item codes from 16), so the two never collide.
//!
//! Timers are derived from the connections (`Connection::timers`); each event carries the
//! timers it arms and cancels, and the index applies exactly those, in the event's transaction.
//! `Store::verify` checks the index equals the union of the timers of all connections.

use std::ops::Bound;

use crate::hot::WriteTable;
use jitflow_core::id::{ConnectionId, RequestItemId, TenantId};
use jitflow_core::lifecycle::Timer;
use jitflow_core::request;
use jitflow_core::time::Timestamp;
use jitflow_core::workflow::{WorkflowEvent, WorkflowTimer};

use crate::append::Error;
use crate::codec::{self, Problem, RecordName};
use crate::read::{self, Reader, check_limit};
use crate::tables::{
    TIMERS, request_timer_code, request_timer_from_code, timer_kind_code, timer_kind_from_code,
};

/// A timer in the index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DueTimer {
    /// When it is due (first in the order).
    pub due: Timestamp,
    /// The tenant.
    pub tenant: TenantId,
    /// The connection.
    pub connection: ConnectionId,
    /// The timer (its `due` equals [`DueTimer::due`]).
    pub timer: Timer,
}

/// A timer of an access request item in the index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DueItemTimer {
    /// When it is due (first in the order).
    pub due: Timestamp,
    /// The tenant.
    pub tenant: TenantId,
    /// The item.
    pub item: RequestItemId,
    /// The timer (its `due` equals [`DueItemTimer::due`]).
    pub timer: request::Timer,
}

/// A timer in the index, of either workflow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Due {
    /// A connection's timer.
    Connection(DueTimer),
    /// An access request item's timer.
    Item(DueItemTimer),
}

impl Due {
    /// When it is due.
    pub fn due(&self) -> Timestamp {
        match self {
            Due::Connection(t) => t.due,
            Due::Item(t) => t.due,
        }
    }

    /// Its key in the index (the scan order).
    fn key(&self) -> (u64, &str, u128, u8) {
        match self {
            Due::Connection(t) => (
                t.due.as_millis(),
                t.tenant.as_str(),
                t.connection.as_u128(),
                timer_kind_code(t.timer.kind),
            ),
            Due::Item(t) => (
                t.due.as_millis(),
                t.tenant.as_str(),
                t.item.as_u128(),
                request_timer_code(t.timer.kind),
            ),
        }
    }
}

/// A workflow timer's code in the timer index: the code names the workflow and the kind
/// ([`timer_kind_code`] for connections, [`request_timer_code`] for request items, which never
/// meet).
pub(crate) trait IndexedTimer: WorkflowTimer {
    fn code(&self) -> u8;
}

impl IndexedTimer for Timer {
    fn code(&self) -> u8 {
        timer_kind_code(self.kind)
    }
}

impl IndexedTimer for request::Timer {
    fn code(&self) -> u8 {
        request_timer_code(self.kind)
    }
}

/// Applies an event's cancelled, then armed, timers to the shared timer index (either
/// workflow's).
pub(crate) fn apply<E>(
    timers: &mut WriteTable<'_, (u64, &'static str, u128, u8), ()>,
    tenant: &TenantId,
    event: &E,
) -> Result<(), Error>
where
    E: WorkflowEvent,
    E::Timer: IndexedTimer,
{
    let (t, id) = (tenant.as_str(), event.subject());
    for timer in event.cancel() {
        let removed = timers.remove((timer.due().as_millis(), t, id, timer.code()))?;
        if removed == Some(false) {
            // The index disagrees with the stored state; `verify` reports it in detail.
            tracing::warn!(%tenant, id = %format_args!("{id:#x}"), ?timer, "cancelled timer was not indexed");
        }
    }
    for timer in event.arm() {
        timers.insert((timer.due().as_millis(), t, id, timer.code()), ())?;
    }
    Ok(())
}

/// Decodes a key of the timer index.
pub(crate) fn decode_key(
    (due, tenant, id, kind): (u64, &str, u128, u8),
) -> Result<Due, codec::Error> {
    let bad = || {
        codec::Error::new(
            RecordName::Key {
                table: "timers",
                key: format!("({due}, {tenant:?}, {id:#x}, {kind})"),
            },
            Problem::Invalid("not a valid timer key".into()),
        )
    };
    let tenant = TenantId::parse(tenant).map_err(|_| bad())?;
    let due = Timestamp::from_millis(due).ok_or_else(bad)?;
    if let Some(kind) = timer_kind_from_code(kind) {
        return Ok(Due::Connection(DueTimer {
            due,
            tenant,
            connection: ConnectionId::from_u128(id),
            timer: Timer { due, kind },
        }));
    }
    let kind = request_timer_from_code(kind).ok_or_else(bad)?;
    Ok(Due::Item(DueItemTimer {
        due,
        tenant,
        item: RequestItemId::from_u128(id),
        timer: request::Timer { due, kind },
    }))
}

impl Reader {
    /// The next timers of both workflows in due order: after `after` (exclusive; `None` from the first), due at or
    /// before `up_to` (`None`: any time), at most `limit` (at most
    /// [`read::MAX_READ_LIMIT`]). The scheduler reads a window of the nearest timers with this.
    pub fn due_timers(
        &self,
        after: Option<&Due>,
        up_to: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<Due>, read::Error> {
        check_limit(limit)?;
        let table = self.table(TIMERS)?;
        let start = match after {
            Some(d) => Bound::Excluded(d.key()),
            None => Bound::Unbounded,
        };
        // The smallest key due after `up_to` ("" is the smallest tenant).
        let end = match up_to {
            Some(t) => Bound::Excluded((t.as_millis() + 1, "", 0, 0)),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for entry in table
            .range::<(u64, &str, u128, u8)>((start, end))?
            .take(limit)
        {
            let (key, _) = entry?;
            out.push(decode_key(key.value())?);
        }
        Ok(out)
    }
}
