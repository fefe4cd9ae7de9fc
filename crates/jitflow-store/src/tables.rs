//! The redb tables of a store file and the codes used inside their keys.
//!
//! Every key of tenant data starts with the tenant id, so one file serves many tenants and a
//! range read never crosses into another tenant's keys. The event log and the timer index are the
//! two exceptions: the log is keyed by the global sequence (the envelope names the tenant), and
//! timers are keyed by due time first so that the scheduler reads the next due timers of every
//! tenant with one range read.
//!
//! *Persisted*: table names, key layouts and the numeric codes below are part of the file format
//! (see [`crate::open::FILE_FORMAT_VERSION`]). Never change or reuse a code; add new ones.

use jitflow_core::lifecycle::TimerKind;
use redb::{Key, TableDefinition, Value, WriteTransaction};

/// File metadata: name -> value. Holds [`FORMAT_VERSION_KEY`].
pub(crate) const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
/// The key of the file format version in [`META`].
pub(crate) const FORMAT_VERSION_KEY: &str = "format_version";
/// Keys of the meta table that hold cursors start with this.
pub(crate) const CURSOR_PREFIX: &str = "cursor:";

/// The event log: global sequence (from 1, contiguous) -> envelope (see [`crate::codec`]).
pub(crate) const EVENTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("events");

/// The stream index: (tenant, stream kind code, stream id, version in the stream, from 1) ->
/// global sequence. An event of a connection is indexed under its connection and, when it names
/// one, under its activation too.
pub(crate) const STREAMS: TableDefinition<'static, (&str, u8, u128, u64), u64> =
    TableDefinition::new("streams");

/// Connection projections: (tenant, connection id) -> encoded `Connection`.
pub(crate) const CONNECTIONS: TableDefinition<'static, (&str, u128), &[u8]> =
    TableDefinition::new("connections");

/// Activation projections: (tenant, activation id) -> encoded `Activation`, as it stands after
/// the last event that names it.
pub(crate) const ACTIVATIONS: TableDefinition<'static, (&str, u128), &[u8]> =
    TableDefinition::new("activations");

/// Policy projections: tenant -> encoded `Policy`.
pub(crate) const POLICIES: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("policies");

/// The timer index: (due UTC ms, tenant, connection id, timer kind code) -> ().
pub(crate) const TIMERS: TableDefinition<'static, (u64, &str, u128, u8), ()> =
    TableDefinition::new("timers");

/// Committed intents without a result: (tenant, connection id) -> (), present iff the
/// connection's projection has pending effects.
pub(crate) const INTENTS: TableDefinition<'static, (&str, u128), ()> =
    TableDefinition::new("intents");

/// Idempotency keys: (tenant, key) -> encoded record.
pub(crate) const IDEMPOTENCY: TableDefinition<'static, (&str, &str), &[u8]> =
    TableDefinition::new("idempotency");

/// Expiry index of the idempotency keys: (expires UTC ms, tenant, key) -> (), for bounded purges.
pub(crate) const IDEMPOTENCY_EXPIRY: TableDefinition<'static, (u64, &str, &str), ()> =
    TableDefinition::new("idempotency_expiry");

/// Secondary indexes of the connection projections: (tenant, field code, value key, connection
/// id) -> (). One entry per indexed field whose value is not null (see `crate::index` for the
/// field codes and the order-preserving value keys).
pub(crate) const CONNECTION_INDEX: TableDefinition<'static, (&str, u8, &[u8], u128), ()> =
    TableDefinition::new("connection_index");

/// The assignment index: (tenant, entitlement id, identity id, account id, connection id) ->
/// (), to find a connection by the three ids of the contract's patch. The connection id is part
/// of the key so that two registrations of one assignment cannot overwrite each other's entry.
pub(crate) const ASSIGNMENTS: TableDefinition<'static, (&str, &str, &str, &str, u128), ()> =
    TableDefinition::new("assignments");

/// Activation history records: (tenant, activation id) -> encoded `ActivationRecord`, as it
/// stands after the last event that names the activation.
pub(crate) const HISTORY: TableDefinition<'static, (&str, u128), &[u8]> =
    TableDefinition::new("history");

/// Secondary indexes of the history records: (tenant, field code, value key, activation id) ->
/// (), like [`CONNECTION_INDEX`].
pub(crate) const HISTORY_INDEX: TableDefinition<'static, (&str, u8, &[u8], u128), ()> =
    TableDefinition::new("history_index");

/// Stream kind code of a connection's stream.
pub(crate) const STREAM_CONNECTION: u8 = 1;
/// Stream kind code of an activation's stream.
pub(crate) const STREAM_ACTIVATION: u8 = 2;
/// Stream kind code of a tenant's policy stream (its stream id is always 0).
pub(crate) const STREAM_POLICY: u8 = 3;

/// The code of a timer kind in [`TIMERS`] keys. Written out by hand, never `as u8`: the core
/// enum may be reordered without the file format changing.
pub(crate) const fn timer_kind_code(kind: TimerKind) -> u8 {
    match kind {
        TimerKind::Expiry => 1,
        TimerKind::Warning => 2,
        TimerKind::Retry => 3,
        TimerKind::StandingRetry => 4,
    }
}

/// The timer kind of a code from [`timer_kind_code`], `None` for an unknown code.
pub(crate) const fn timer_kind_from_code(code: u8) -> Option<TimerKind> {
    match code {
        1 => Some(TimerKind::Expiry),
        2 => Some(TimerKind::Warning),
        3 => Some(TimerKind::Retry),
        4 => Some(TimerKind::StandingRetry),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the persisted codes: changing one breaks every stored timer key.
    #[test]
    fn timer_kind_codes_are_pinned() {
        let pinned = [
            (TimerKind::Expiry, 1),
            (TimerKind::Warning, 2),
            (TimerKind::Retry, 3),
            (TimerKind::StandingRetry, 4),
        ];
        for (kind, code) in pinned {
            assert_eq!(timer_kind_code(kind), code, "{kind:?}");
            assert_eq!(timer_kind_from_code(code), Some(kind));
        }
        assert_eq!(timer_kind_from_code(0), None);
        assert_eq!(timer_kind_from_code(5), None);
        assert_eq!(
            (STREAM_CONNECTION, STREAM_ACTIVATION, STREAM_POLICY),
            (1, 2, 3)
        );
    }
}

// Access request items (issue 7). Appended here so the tables above keep their layout.

/// Stream kind code of an access request item's stream.
pub(crate) const STREAM_REQUEST_ITEM: u8 = 4;

/// Access request item projections: (tenant, item id) -> encoded `request::Item`.
pub(crate) const REQUEST_ITEMS: TableDefinition<'static, (&str, u128), &[u8]> =
    TableDefinition::new("request_items");

/// The items of each access request: (tenant, request id, item id) -> (). Written with the
/// item's submission; items are never deleted, so neither are these rows.
pub(crate) const REQUEST_INDEX: TableDefinition<'static, (&str, u128, u128), ()> =
    TableDefinition::new("request_index");

/// The open items of each identity and object (the duplicate rule's input): (tenant, identity,
/// object kind code, object id, item id) -> (), present iff the item has not ended.
pub(crate) const REQUEST_OPEN: TableDefinition<'static, (&str, &str, u8, &str, u128), ()> =
    TableDefinition::new("request_open");

/// Committed request intents without a result: (tenant, item id) -> (), present iff the item's
/// projection has pending effects.
pub(crate) const REQUEST_INTENTS: TableDefinition<'static, (&str, u128), ()> =
    TableDefinition::new("request_intents");

/// The people of each request item: (tenant, role code, identity, item id) -> (), one row for
/// the identity the item is for (role 1), one for its requester (role 2) and one per approver
/// (role 3). Written with the item's submission; items are never deleted, so neither are these
/// rows. The request status and approval lists read it (see `request_query`).
pub(crate) const REQUEST_PEOPLE: TableDefinition<'static, (&str, u8, &str, u128), ()> =
    TableDefinition::new("request_people");

/// The code of a request item's timer kind in [`TIMERS`] keys. Request codes start at 16 so
/// they never meet a connection timer code: a timer key names its stream kind through its code,
/// and a request timer and a connection timer with the same id and due time stay two keys.
pub(crate) const fn request_timer_code(kind: jitflow_core::request::TimerKind) -> u8 {
    use jitflow_core::request::TimerKind as K;
    match kind {
        K::ApprovalExpiry => 16,
        K::Sunrise => 17,
        K::Sunset => 18,
        K::Retry => 19,
    }
}

/// The request timer kind of a code from [`request_timer_code`], `None` for another code.
pub(crate) const fn request_timer_from_code(code: u8) -> Option<jitflow_core::request::TimerKind> {
    use jitflow_core::request::TimerKind as K;
    match code {
        16 => Some(K::ApprovalExpiry),
        17 => Some(K::Sunrise),
        18 => Some(K::Sunset),
        19 => Some(K::Retry),
        _ => None,
    }
}

/// The code of an object kind in [`REQUEST_OPEN`] keys.
pub(crate) const fn object_kind_code(kind: jitflow_core::request::ObjectKind) -> u8 {
    use jitflow_core::request::ObjectKind as K;
    match kind {
        K::AccessProfile => 1,
        K::Role => 2,
        K::Entitlement => 3,
    }
}

#[cfg(test)]
mod request_tests {
    use jitflow_core::request::{ObjectKind, TimerKind};

    use super::*;

    /// Pins the persisted request codes and checks they never meet a connection timer code.
    #[test]
    fn request_codes_are_pinned_and_distinct() {
        let pinned = [
            (TimerKind::ApprovalExpiry, 16),
            (TimerKind::Sunrise, 17),
            (TimerKind::Sunset, 18),
            (TimerKind::Retry, 19),
        ];
        for (kind, code) in pinned {
            assert_eq!(request_timer_code(kind), code, "{kind:?}");
            assert_eq!(request_timer_from_code(code), Some(kind));
            assert_eq!(timer_kind_from_code(code), None, "code {code} is taken");
        }
        for code in 0..=u8::MAX {
            assert!(
                timer_kind_from_code(code).is_none() || request_timer_from_code(code).is_none()
            );
        }
        assert_eq!(STREAM_REQUEST_ITEM, 4);
        assert_eq!(
            [
                ObjectKind::AccessProfile,
                ObjectKind::Role,
                ObjectKind::Entitlement
            ]
            .map(object_kind_code),
            [1, 2, 3]
        );
    }
}

// Access request config (issue 7, format version 3). Appended so the tables above keep their
// layout.

/// Stream kind code of a tenant's access request config stream (its stream id is always 0).
pub(crate) const STREAM_REQUEST_CONFIG: u8 = 5;

/// Access request config projections: tenant -> encoded `request::AccessRequestConfig`. No row
/// means the contract's defaults (no PUT yet). Added by format version 3.
pub(crate) const REQUEST_CONFIGS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("request_configs");

#[cfg(test)]
mod request_config_tests {
    /// Pins the stream kind code and checks it meets no other.
    #[test]
    fn request_config_stream_code_is_pinned_and_distinct() {
        use super::*;
        assert_eq!(STREAM_REQUEST_CONFIG, 5);
        assert!(
            ![
                STREAM_CONNECTION,
                STREAM_ACTIVATION,
                STREAM_POLICY,
                STREAM_REQUEST_ITEM
            ]
            .contains(&STREAM_REQUEST_CONFIG)
        );
    }
}

// Log-first (format version 4).

/// The log's second table: what a batch committed besides events (idempotency results and
/// consumers' cursors), one record per batch that had any: extras number (from 1, contiguous)
/// -> encoded record (see `codec::encode_extras`). With [`EVENTS`] it is the whole log: every
/// derived table can be rebuilt from the two.
pub(crate) const EXTRAS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("extras");

/// The key in [`META`] of the last event sequence the checkpointed tables cover.
pub(crate) const CHECKPOINT_KEY: &str = "checkpoint";
/// The key in [`META`] of the last extras record the checkpointed tables cover.
pub(crate) const CHECKPOINT_EXTRAS_KEY: &str = "checkpoint_extras";
/// The key in [`META`] of the latest time (UTC ms) a checkpoint purged expired idempotency keys
/// at: `verify` accepts a logged key missing from the table iff it expired by then.
pub(crate) const PURGED_THROUGH_KEY: &str = "idempotency_purged_through";

fn write_rows<'r, K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    definition: TableDefinition<'static, K, V>,
    rows: impl Iterator<Item = crate::backend::Row<'r>>,
) -> Result<u64, redb::Error> {
    let mut table = txn.open_table(definition)?;
    let mut written = 0;
    for row in rows {
        let key = K::from_bytes(row.key.native());
        match row.value {
            Some(value) => {
                table.insert(key, V::from_bytes(value))?;
            }
            None => {
                table.remove(key)?;
            }
        }
        written += 1;
    }
    Ok(written)
}

// Stuck revokes (format version 6).

/// The workflows whose revoke keeps failing past the configured bound (`Workflow::is_stuck`):
/// (tenant, workflow code, id) -> (), present iff the stored state is stuck. Counted, so the
/// stuck gauge is exact and read in constant time.
pub(crate) const STUCK: TableDefinition<'static, (&str, u8, u128), ()> =
    TableDefinition::new("stuck");
/// Workflow code of a connection in [`STUCK`] keys.
pub(crate) const STUCK_CONNECTION: u8 = 1;
/// Workflow code of an access request item in [`STUCK`] keys.
pub(crate) const STUCK_ITEM: u8 = 2;

/// Lists every table derived from the log, with its id in the hot layer (the ids are not
/// persisted: only the order of tables within the layer depends on them).
macro_rules! derived_tables {
    ($($id:literal => $def:ident),* $(,)?) => {
        /// How many derived tables there are (ids are `0..COUNT`).
        pub(crate) const COUNT: usize = [$($id),*].len();

        /// The id of the derived table named `name`.
        pub(crate) fn id(name: &str) -> u8 {
            $(if name == redb::TableHandle::name(&$def) { return $id; })*
            panic!("{name} is not a table derived from the log")
        }

        /// The name of derived table `table` (its redb table's name), `None` for an unknown
        /// id. Names are persisted, ids are not: a backend keys stored rows by the name.
        pub(crate) fn name(table: u8) -> Option<&'static str> {
            match table {
                $($id => Some(redb::TableHandle::name(&$def)),)*
                _ => None,
            }
        }

        /// Writes `rows` (all of derived table `table`, in key order) into the transaction's
        /// table; returns how many.
        pub(crate) fn write<'r>(
            txn: &WriteTransaction,
            table: u8,
            rows: impl Iterator<Item = crate::backend::Row<'r>>,
        ) -> Result<u64, redb::Error> {
            match table {
                $($id => write_rows(txn, $def, rows),)*
                _ => unreachable!("no derived table has id {table}"),
            }
        }

        /// Opens derived table `table` of a snapshot, read by bytes.
        pub(crate) fn open_raw(
            txn: &redb::ReadTransaction,
            table: u8,
        ) -> Result<Box<dyn crate::backend::file::RawTable>, redb::TableError> {
            use crate::backend::file::Typed;
            Ok(match table {
                $($id => Box::new(Typed { id: $id, table: txn.open_table($def)? }),)*
                _ => unreachable!("no derived table has id {table}"),
            })
        }

        /// Creates every derived table the file lacks (an upgrade derives into all of them).
        pub(crate) fn create_derived(txn: &WriteTransaction) -> Result<(), redb::TableError> {
            $(txn.open_table($def)?;)*
            Ok(())
        }
    };
}

derived_tables! {
    0 => META,
    1 => STREAMS,
    2 => CONNECTIONS,
    3 => ACTIVATIONS,
    4 => POLICIES,
    5 => TIMERS,
    6 => INTENTS,
    7 => IDEMPOTENCY,
    8 => IDEMPOTENCY_EXPIRY,
    9 => CONNECTION_INDEX,
    10 => ASSIGNMENTS,
    11 => HISTORY,
    12 => HISTORY_INDEX,
    13 => REQUEST_ITEMS,
    14 => REQUEST_INDEX,
    15 => REQUEST_OPEN,
    16 => REQUEST_INTENTS,
    17 => REQUEST_PEOPLE,
    18 => REQUEST_CONFIGS,
    19 => STUCK,
}

/// Whether derived table `table` keeps an exact length through the layer (the backlog gauges
/// read it in constant time).
pub(crate) const fn counted(table: u8) -> bool {
    matches!(table, 5 | 6 | 16 | 19)
}

#[cfg(test)]
mod derived_tests {
    use redb::TableHandle;

    use super::*;

    /// The counted tables are the timers, both intents tables and the stuck table, by name.
    #[test]
    fn counted_tables_are_the_backlog() {
        for t in 0..COUNT as u8 {
            let expected = [
                TIMERS.name(),
                INTENTS.name(),
                REQUEST_INTENTS.name(),
                STUCK.name(),
            ]
            .into_iter()
            .any(|name| id(name) == t);
            assert_eq!(counted(t), expected, "table {t}");
        }
    }
}
