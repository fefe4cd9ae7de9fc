//! Upgrades of files written with an older format version, each in one write transaction
//! (all or nothing: a failed upgrade leaves the file as it was).

use std::collections::HashMap;

use jitflow_core::connection::Connection;
use jitflow_core::history::ActivationRecord;
use jitflow_core::id::{ConnectionId, TenantId};
use jitflow_core::lifecycle::evolve;
use std::cell::RefCell;

use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use crate::append::WriteTables;
use crate::codec::{self, Payload};
use crate::hot::Layer;
use crate::open::{Error, Options, storage};
use crate::tables::{
    self, CHECKPOINT_EXTRAS_KEY, CHECKPOINT_KEY, CONNECTIONS, CURSOR_PREFIX, EVENTS, EXTRAS,
    FORMAT_VERSION_KEY, IDEMPOTENCY, META, REQUEST_CONFIGS, REQUEST_ITEMS, STUCK, STUCK_CONNECTION,
    STUCK_ITEM,
};
use crate::{append, index};

/// A write transaction of an upgrade step: durable when it commits, with the store's quick
/// repair setting, like every write of the store.
fn begin(db: &Database, options: &Options) -> Result<redb::WriteTransaction, Error> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate)
        .expect("redb refuses only to lower durability, never to set Immediate");
    txn.set_quick_repair(options.quick_repair);
    Ok(txn)
}

fn failed(reason: impl std::fmt::Display) -> Error {
    Error::Upgrade {
        from: 1,
        reason: reason.to_string(),
    }
}

fn write_failed(e: append::Error) -> Error {
    match e {
        append::Error::Storage { source } => Error::Storage(source.into()),
        other => failed(other),
    }
}

/// Version 1 to 2 (version 2 to 3 follows on open): builds the connections' secondary and assignment indexes from the connection
/// projections, and the activation history (records and indexes) by replaying the log, since a
/// record holds the connection's facts as of the activation's last event. Holds the replayed
/// connections in memory, once.
pub(crate) fn from_v1(db: &Database, options: &Options) -> Result<(), Error> {
    let read = db.begin_read().map_err(storage)?;
    let events = read.open_table(EVENTS).map_err(storage)?;
    let mut states: HashMap<(TenantId, u128), Connection> = HashMap::new();
    let mut records: HashMap<(TenantId, u128), ActivationRecord> = HashMap::new();
    for entry in events.range::<u64>(..).map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        let envelope = codec::decode_envelope(k.value(), v.value()).map_err(failed)?;
        let Payload::Connection(event) = envelope.payload else {
            continue;
        };
        let key = (envelope.tenant.clone(), event.connection.as_u128());
        let before = states.remove(&key);
        let after =
            evolve(before, &event).map_err(|e| failed(format!("event {}: {e}", k.value())))?;
        if let (Some(id), Some(c)) = (event.activation, after.as_ref())
            && let Some(a) = c.activation.as_ref().filter(|a| a.id == id)
        {
            records.insert(
                (envelope.tenant.clone(), id.as_u128()),
                ActivationRecord::new(a, c),
            );
        }
        if let Some(c) = after {
            states.insert(key, c);
        }
    }
    drop(states);
    let mut connections = Vec::new();
    let table = read.open_table(CONNECTIONS).map_err(storage)?;
    for entry in table.range::<(&str, u128)>(..).map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        let (tenant, id) = k.value();
        let c = codec::decode_connection(tenant, ConnectionId::from_u128(id), v.value())
            .map_err(failed)?;
        connections.push((TenantId::parse(tenant).map_err(failed)?, c));
    }
    drop((table, events, read));

    // The indexes are derived by the commit path's own functions into a layer, then written
    // like a checkpoint, in one transaction with the new version. The derivation reads every
    // derived table: the ones a version 1 file lacks are created (empty) first.
    let txn = begin(db, options)?;
    tables::create_derived(&txn).map_err(storage)?;
    txn.commit().map_err(storage)?;
    let base = crate::backend::file::snapshot_of(db.begin_read().map_err(storage)?);
    let layer = RefCell::new(Layer::default());
    {
        let mut t = WriteTables::open(&base, &layer).map_err(write_failed)?;
        for (tenant, c) in &connections {
            index::put_connection(&mut t, tenant, None, Some(c)).map_err(write_failed)?;
        }
        for ((tenant, _), record) in &records {
            index::put_history(&mut t, tenant, record).map_err(write_failed)?;
        }
    }
    drop(base);
    let layer = layer.into_inner();
    let txn = begin(db, options)?;
    {
        for table in 0..tables::COUNT as u8 {
            tables::write(&txn, table, layer.table_rows(table)).map_err(storage)?;
        }
        let mut meta = txn.open_table(META).map_err(storage)?;
        meta.insert(FORMAT_VERSION_KEY, 2).map_err(storage)?;
    }
    txn.commit().map_err(storage)
}

/// Version 2 to 3: adds the access request config table, empty (every tenant has the
/// contract's defaults until its first PUT). Nothing to rebuild: no older event sets a config.
pub(crate) fn from_v2(db: &Database, options: &Options) -> Result<(), Error> {
    let txn = begin(db, options)?;
    {
        txn.open_table(REQUEST_CONFIGS).map_err(storage)?;
        let mut meta = txn.open_table(META).map_err(storage)?;
        meta.insert(FORMAT_VERSION_KEY, 3).map_err(storage)?;
    }
    txn.commit().map_err(storage)
}

/// Version 3 to 4: the log gains its extras table (empty: a version 3 file kept idempotency
/// results and cursors in the tables only, and they stay there), and the checkpoint position
/// is the last event, since a version 3 file wrote every derived row with its events.
pub(crate) fn from_v3(db: &Database, options: &Options) -> Result<(), Error> {
    let txn = begin(db, options)?;
    {
        // Version 3 kept idempotency records and cursors in tables only. Log them as extras
        // records (chunked at the per-record bounds), so that the log alone rebuilds every
        // derived table and `verify` can check them, as for everything written since.
        let mut puts = Vec::new();
        for entry in txn
            .open_table(IDEMPOTENCY)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, v) = entry.map_err(storage)?;
            let (tenant, key) = k.value();
            let record =
                codec::decode_idempotency(tenant, key, v.value()).map_err(|e| Error::Upgrade {
                    from: 3,
                    reason: e.to_string(),
                })?;
            let tenant = TenantId::parse(tenant).map_err(|e| Error::Upgrade {
                from: 3,
                reason: format!("idempotency key of tenant {tenant:?}: {e}"),
            })?;
            puts.push(crate::idempotency::KeyPut {
                tenant,
                key: key.to_owned(),
                record,
            });
        }
        let mut cursors = Vec::new();
        for entry in txn
            .open_table(META)
            .map_err(storage)?
            .range::<&str>(CURSOR_PREFIX..)
            .map_err(storage)?
        {
            let (k, v) = entry.map_err(storage)?;
            let Some(name) = k.value().strip_prefix(CURSOR_PREFIX) else {
                break;
            };
            cursors.push((name.to_owned(), v.value()));
        }
        assert!(cursors.len() <= crate::batch::MAX_BATCH_CURSORS);
        let mut records = Vec::new();
        let mut chunks = puts.chunks(crate::batch::MAX_BATCH_KEYS).peekable();
        if chunks.peek().is_none() && !cursors.is_empty() {
            records.push(codec::Extras {
                keys: Vec::new(),
                cursors: cursors.clone(),
            });
        }
        for (n, chunk) in chunks.enumerate() {
            records.push(codec::Extras {
                keys: chunk.to_vec(),
                cursors: if n == 0 { cursors.clone() } else { Vec::new() },
            });
        }
        let mut extras = txn.open_table(EXTRAS).map_err(storage)?;
        for (number, record) in (1u64..).zip(&records) {
            extras
                .insert(number, codec::encode_extras(record).as_slice())
                .map_err(storage)?;
        }
        drop(extras);
        let last = txn
            .open_table(EVENTS)
            .map_err(storage)?
            .last()
            .map_err(storage)?
            .map_or(0, |(k, _)| k.value());
        let mut meta = txn.open_table(META).map_err(storage)?;
        meta.insert(CHECKPOINT_KEY, last).map_err(storage)?;
        // The tables already hold what the new records log.
        meta.insert(CHECKPOINT_EXTRAS_KEY, records.len() as u64)
            .map_err(storage)?;
        meta.insert(FORMAT_VERSION_KEY, 4).map_err(storage)?;
    }
    txn.commit().map_err(storage)
}

/// 4 -> 5: the same tables; stamps the version, so that a version 4 build refuses the file
/// once it may hold records that build cannot decode.
pub(crate) fn from_v4(db: &Database, options: &Options) -> Result<(), Error> {
    stamp(db, options, 5)
}

/// 6 -> 7: the same tables; stamps the version, so that a version 6 build refuses the file
/// once it may hold connection events with a client section.
pub(crate) fn from_v6(db: &Database, options: &Options) -> Result<(), Error> {
    stamp(db, options, 7)
}

/// 7 -> 8: the same tables; stamps the version, so that a version 7 build refuses a file that
/// may hold the records it cannot decode (issue 16's drift answers): the connection change
/// `RegrantStarted`, and policy records and events with the missing-access section
/// (`Policy::on_missing_access`).
pub(crate) fn from_v7(db: &Database, options: &Options) -> Result<(), Error> {
    stamp(db, options, 8)
}

/// An upgrade step that changes no table: stamps `version` in one transaction.
fn stamp(db: &Database, options: &Options, version: u64) -> Result<(), Error> {
    let txn = begin(db, options)?;
    txn.open_table(META)
        .map_err(storage)?
        .insert(FORMAT_VERSION_KEY, version)
        .map_err(storage)?;
    txn.commit().map_err(storage)
}

/// Version 5 to 6: adds the stuck table, filled from the checkpointed connections and request
/// items (the open's tail replay then keeps it in step, as every derived table).
pub(crate) fn from_v5(db: &Database, options: &Options) -> Result<(), Error> {
    use jitflow_core::id::RequestItemId;
    let txn = begin(db, options)?;
    {
        let mut stuck = txn.open_table(STUCK).map_err(storage)?;
        fill_stuck(
            &txn,
            &mut stuck,
            CONNECTIONS,
            STUCK_CONNECTION,
            |t, id, bytes| codec::decode_connection(t, ConnectionId::from_u128(id), bytes),
        )?;
        fill_stuck(
            &txn,
            &mut stuck,
            REQUEST_ITEMS,
            STUCK_ITEM,
            |t, id, bytes| codec::decode_item(t, RequestItemId::from_u128(id), bytes),
        )?;
        txn.open_table(META)
            .map_err(storage)?
            .insert(FORMAT_VERSION_KEY, 6)
            .map_err(storage)?;
    }
    txn.commit().map_err(storage)
}

/// Adds a stuck row (workflow code `code`) for every stuck state of one projection table.
fn fill_stuck<W: jitflow_core::workflow::Workflow>(
    txn: &redb::WriteTransaction,
    stuck: &mut redb::Table<'_, (&'static str, u8, u128), ()>,
    projections: redb::TableDefinition<'static, (&'static str, u128), &'static [u8]>,
    code: u8,
    decode: impl Fn(&str, u128, &[u8]) -> Result<W, codec::Error>,
) -> Result<(), Error> {
    for entry in txn
        .open_table(projections)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (k, v) = entry.map_err(storage)?;
        let (tenant, id) = k.value();
        let state = decode(tenant, id, v.value()).map_err(|e| Error::Upgrade {
            from: 5,
            reason: e.to_string(),
        })?;
        if state.is_stuck() {
            stuck.insert((tenant, code, id), ()).map_err(storage)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use jitflow_core::lifecycle::Command;

    use crate::Store;
    use crate::batch::{Batch, Entry};
    use crate::open::{FILE_FORMAT_VERSION, Options};
    use crate::query::Query;
    use crate::tables::{
        ASSIGNMENTS, CONNECTION_INDEX, FORMAT_VERSION_KEY, HISTORY, HISTORY_INDEX, META,
        REQUEST_CONFIGS,
    };
    use jitflow_core::lifecycle::Actor;
    use jitflow_core::request::{AccessRequestConfig, config};
    use jitflow_core::time::Timestamp;

    fn stored_version(store: &Store) -> Option<u64> {
        let reader = store.reader().unwrap();
        let meta = reader.table(META).unwrap();
        meta.get(FORMAT_VERSION_KEY).unwrap().map(|v| v.value())
    }

    /// A version 2 file (no access request config table) opens as version 3: the table exists
    /// and is empty (every tenant reads the defaults), verify is clean, and a config change
    /// can be appended and read back, also after reopening.
    #[test]
    fn a_version_2_file_is_upgraded_to_3_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.redb");
        let tenant = TenantId::parse("acme").unwrap();
        {
            let store = Store::open(&path, Options::default()).unwrap();
            let mut batch = Batch::new();
            let (event, after) = step(None, Command::Register(spec(CONN)));
            batch.push(Entry::Connection {
                tenant: tenant.clone(),
                event,
                after,
            });
            store.append_batch(&batch).unwrap();
            store.checkpoint(None).unwrap();
            let txn = store.db().unwrap().begin_write().unwrap();
            assert!(txn.delete_table(REQUEST_CONFIGS).unwrap());
            txn.open_table(META)
                .unwrap()
                .insert(FORMAT_VERSION_KEY, 2)
                .unwrap();
            txn.commit().unwrap();
        }
        let config = AccessRequestConfig {
            approvals_must_be_external: true,
            ..Default::default()
        };
        {
            let store = Store::open(&path, Options::default()).unwrap();
            assert_eq!(stored_version(&store), Some(FILE_FORMAT_VERSION));
            let reader = store.reader().unwrap();
            assert_eq!(reader.access_request_config(&tenant).unwrap(), None);
            assert!(reader.connection(&tenant, CONN).unwrap().is_some());
            drop(reader);
            let report = store.verify().unwrap();
            assert!(report.is_clean(), "{:#?}", report.differences);
            let event = config::decide(
                None,
                config.clone(),
                Timestamp::from_millis(1_800_000_000_000).unwrap(),
                &Actor::System,
            )
            .unwrap();
            let mut batch = Batch::new();
            batch.push(Entry::RequestConfig {
                tenant: tenant.clone(),
                event,
            });
            store.append_batch(&batch).unwrap();
        }
        let store = Store::open(&path, Options::default()).unwrap();
        let reader = store.reader().unwrap();
        assert_eq!(reader.access_request_config(&tenant).unwrap(), Some(config));
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "{:#?}", report.differences);
        assert_eq!(report.request_configs, 1);
    }
    use crate::test_support::{ACT, CONN, spec, step};
    use jitflow_core::id::TenantId;

    /// A version 3 file (every derived row written with its events, no extras table, no
    /// checkpoint position) opens upgraded (through 4 to the current version): the checkpoint
    /// covers its whole log, nothing is replayed, idempotency keys written by version 3 still
    /// read and are logged as an extras record (verify is clean), and new batches append.
    #[test]
    fn a_version_3_file_is_upgraded_on_open() {
        use crate::idempotency::{Idempotency, KeyPut};
        use crate::tables::{CHECKPOINT_EXTRAS_KEY, CHECKPOINT_KEY, EXTRAS};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.redb");
        let tenant = TenantId::parse("acme").unwrap();
        let key = KeyPut {
            tenant: tenant.clone(),
            key: "k-1".into(),
            record: Idempotency {
                fingerprint: 9,
                result: b"done".to_vec(),
                expires_at: Timestamp::MAX,
            },
        };
        {
            let store = Store::open(&path, Options::default()).unwrap();
            let mut batch = Batch::new();
            let (event, after) = step(None, Command::Register(spec(CONN)));
            batch.push(Entry::Connection {
                tenant: tenant.clone(),
                event,
                after,
            });
            batch.push_key(key.clone());
            store.append_batch(&batch).unwrap();
            // As version 3 left a file: the rows in the tables, no extras, no position.
            store.checkpoint(None).unwrap();
            let txn = store.db().unwrap().begin_write().unwrap();
            assert!(txn.delete_table(EXTRAS).unwrap());
            let mut meta = txn.open_table(META).unwrap();
            meta.remove(CHECKPOINT_KEY).unwrap();
            meta.remove(CHECKPOINT_EXTRAS_KEY).unwrap();
            meta.insert(FORMAT_VERSION_KEY, 3).unwrap();
            drop(meta);
            txn.commit().unwrap();
        }
        let store = Store::open(&path, Options::default()).unwrap();
        assert_eq!(stored_version(&store), Some(FILE_FORMAT_VERSION));
        let stats = store.stats();
        assert_eq!(
            (stats.sequence, stats.checkpoint, stats.layer_entries),
            (1, 1, 0)
        );
        let reader = store.reader().unwrap();
        assert!(reader.connection(&tenant, CONN).unwrap().is_some());
        let record = reader
            .idempotency(&tenant, "k-1", Timestamp::EPOCH)
            .unwrap();
        assert_eq!(record, Some(key.record));
        drop(reader);
        assert!(store.verify().unwrap().is_clean());
        let mut batch = Batch::new();
        let state = store.reader().unwrap().connection(&tenant, CONN).unwrap();
        let (event, after) = step(
            state,
            Command::Activate {
                activation: ACT,
                period: None,
                client: None,
            },
        );
        batch.push(Entry::Connection {
            tenant: tenant.clone(),
            event,
            after,
        });
        assert_eq!(store.append_batch(&batch).unwrap().first, 2);
        assert!(store.verify().unwrap().is_clean());
    }

    /// A version 1 file (the same data without the version 2 tables) opens upgraded: the
    /// indexes and history are rebuilt, verify is clean and queries answer.
    #[test]
    fn a_version_1_file_is_upgraded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.redb");
        let tenant = TenantId::parse("acme").unwrap();
        {
            let store = Store::open(&path, Options::default()).unwrap();
            let mut batch = Batch::new();
            let mut state = None;
            for command in [
                Command::Register(spec(CONN)),
                Command::Activate {
                    activation: ACT,
                    period: None,
                    client: None,
                },
                Command::ValidationPassed { activation: ACT },
                Command::GrantSucceeded {
                    activation: ACT,
                    attempt: 1,
                },
            ] {
                let (event, after) = step(state, command);
                state = after.clone();
                batch.push(Entry::Connection {
                    tenant: tenant.clone(),
                    event,
                    after,
                });
            }
            store.append_batch(&batch).unwrap();
            store.checkpoint(None).unwrap();
            let txn = store.db().unwrap().begin_write().unwrap();
            assert!(txn.delete_table(CONNECTION_INDEX).unwrap());
            assert!(txn.delete_table(HISTORY_INDEX).unwrap());
            assert!(txn.delete_table(HISTORY).unwrap());
            assert!(txn.delete_table(ASSIGNMENTS).unwrap());
            assert!(txn.delete_table(REQUEST_CONFIGS).unwrap());
            txn.open_table(META)
                .unwrap()
                .insert(FORMAT_VERSION_KEY, 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(&path, Options::default()).unwrap();
        let reader = store.reader().unwrap();
        let version = reader
            .table(META)
            .unwrap()
            .get(FORMAT_VERSION_KEY)
            .unwrap()
            .map(|v| v.value());
        assert_eq!(version, Some(FILE_FORMAT_VERSION));
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "{:#?}", report.differences);
        let query = Query::parse(
            crate::query::CONNECTIONS,
            Some(r#"state.value eq "ACTIVE""#),
            None,
            None,
            None,
            None,
            None,
        )
        .unwrap();
        let page = reader.query_connections(&tenant, &query, None).unwrap();
        assert_eq!(page.items.len(), 1);
        let history = reader
            .query_history(&tenant, &Query::default(), None)
            .unwrap();
        assert_eq!(history.items.len(), 1);
        assert_eq!(history.items[0].activation.id, ACT);
    }
}

#[cfg(test)]
mod v4_tests {
    use crate::Store;
    use crate::open::{FILE_FORMAT_VERSION, Options, stored_format_version};
    use crate::tables::{FORMAT_VERSION_KEY, META};

    /// A version 4 or 7 file (steps that only stamp) opens as the current version with its data
    /// as it was.
    #[test]
    fn version_4_and_7_files_are_stamped_on_open() {
        for from in [4, 7] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.redb");
            {
                let store = Store::open(&path, Options::default()).unwrap();
                let txn = store.db().unwrap().begin_write().unwrap();
                txn.open_table(META)
                    .unwrap()
                    .insert(FORMAT_VERSION_KEY, from)
                    .unwrap();
                txn.commit().unwrap();
            }
            assert_eq!(stored_format_version(&path).unwrap(), Some(from));
            let store = Store::open(&path, Options::default()).unwrap();
            drop(store);
            assert_eq!(
                stored_format_version(&path).unwrap(),
                Some(FILE_FORMAT_VERSION)
            );
        }
    }

    /// A version 5 file (no stuck table) opens as version 6 with the table filled from its
    /// stored connections: the stuck one counts, the others do not.
    #[test]
    fn a_version_5_file_gets_its_stuck_table_on_open() {
        use crate::batch::{Batch, Entry};
        use crate::tables::STUCK;
        use crate::test_support::{CONN, spec, step};
        use jitflow_core::connection::ConnectionType;
        use jitflow_core::id::TenantId;
        use jitflow_core::lifecycle::Command;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.redb");
        let tenant = TenantId::parse("acme").unwrap();
        {
            let store = Store::open(&path, Options::default()).unwrap();
            // A STANDING connection turned JIT: its standing access is being revoked.
            let mut standing = spec(CONN);
            standing.kind = ConnectionType::Standing;
            let mut batch = Batch::new();
            let (event, after) = step(None, Command::Register(standing));
            let (change, revoking) = step(after.clone(), Command::ChangeType(ConnectionType::Jit));
            for (event, after) in [(event, after), (change, revoking)] {
                batch.push(Entry::Connection {
                    tenant: tenant.clone(),
                    event,
                    after,
                });
            }
            store.append_batch(&batch).unwrap();
            // Its revoke stuck, as a version 5 build left it: planted in the checkpointed
            // projection (the upgrade reads projections, not the log).
            let mut stuck = store
                .reader()
                .unwrap()
                .connection(&tenant, CONN)
                .unwrap()
                .unwrap();
            stuck.standing_revoke.as_mut().expect("revoking").stuck = true;
            crate::testing::overwrite_connection(&store, &tenant, &stuck).unwrap();
            store
                .write_file(|txn| {
                    assert!(txn.delete_table(STUCK)?);
                    txn.open_table(META)?.insert(FORMAT_VERSION_KEY, 5)?;
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(stored_format_version(&path).unwrap(), Some(5));
        let store = Store::open(&path, Options::default()).unwrap();
        assert_eq!(store.reader().unwrap().backlog().unwrap().stuck, 1);
        drop(store);
        assert_eq!(
            stored_format_version(&path).unwrap(),
            Some(FILE_FORMAT_VERSION)
        );
    }
}

#[cfg(test)]
mod v5_tests {
    use jitflow_core::client::ClientInfo;
    use jitflow_core::id::TenantId;
    use jitflow_core::lifecycle::{Change, Command, Event};
    use jitflow_core::time::Minutes;

    use crate::Store;
    use crate::codec::{Payload, Stream};
    use crate::open::{Error, FILE_FORMAT_VERSION, Options, stored_format_version};
    use crate::tables::{FORMAT_VERSION_KEY, META};
    use crate::test_support::{ACT, CONN, append, spec, step};

    fn stamp(store: &Store, version: u64) {
        let txn = store.db().unwrap().begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(FORMAT_VERSION_KEY, version)
            .unwrap();
        txn.commit().unwrap();
    }

    fn connection_events(store: &Store, tenant: &TenantId, stream: Stream) -> Vec<Event> {
        let reader = store.reader().unwrap();
        reader
            .stream(tenant, stream, 0, 100)
            .unwrap()
            .into_iter()
            .map(|e| match e.envelope.payload {
                Payload::Connection(event) => event,
                other => panic!("not a connection event: {other:?}"),
            })
            .collect()
    }

    /// A version 5 file, whose events have no client section, opens as the current version with its
    /// events and projections as they were (part of its log checkpointed, part replayed); a
    /// signal with a client's `requestOrigin` and `metaData` then appends, reads back from the
    /// activation's stream after a reopen, and `verify` is clean. A file stamped with a version
    /// newer than this build's is refused, as a version 6 build refuses a version 7 file.
    #[test]
    fn a_version_5_file_is_upgraded_and_takes_client_sections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.redb");
        let tenant = TenantId::parse("acme").unwrap();
        let push = |store: &Store, event: Event, after| append(store, &tenant, event, after);
        let (registered, activated) = {
            let store = Store::open(&path, Options::default()).unwrap();
            let (registered, c) = step(None, Command::Register(spec(CONN)));
            push(&store, registered.clone(), c.clone());
            store.checkpoint(None).unwrap();
            let (activated, c) = step(
                c,
                Command::Activate {
                    activation: ACT,
                    period: Some(Minutes(30)),
                    client: None,
                },
            );
            push(&store, activated.clone(), c);
            stamp(&store, 5);
            (registered, activated)
        };
        assert_eq!(stored_format_version(&path).unwrap(), Some(5));
        let store = Store::open(&path, Options::default()).unwrap();
        assert_eq!(
            connection_events(&store, &tenant, Stream::Connection(CONN)),
            [registered, activated.clone()]
        );
        let before = store
            .reader()
            .unwrap()
            .connection(&tenant, CONN)
            .unwrap()
            .unwrap();
        let client = ClientInfo::new(
            Some("sdk-go".into()),
            Some(
                [("ticket".to_owned(), serde_json::json!("CHG-1"))]
                    .into_iter()
                    .collect(),
            ),
        )
        .unwrap();
        let (deactivated, after) = step(
            Some(before),
            Command::Deactivate {
                client: client.clone(),
            },
        );
        assert_eq!(deactivated.change, Change::DeactivationRequested);
        assert_eq!(deactivated.client, client);
        push(&store, deactivated.clone(), after);
        drop(store);
        assert_eq!(
            stored_format_version(&path).unwrap(),
            Some(FILE_FORMAT_VERSION)
        );

        let store = Store::open(&path, Options::default()).unwrap();
        let history = connection_events(&store, &tenant, Stream::Activation(ACT));
        assert_eq!(history, [activated, deactivated]);
        assert_eq!(history[0].client, None, "the version 5 event has none");
        assert_eq!(
            history[1]
                .client
                .as_ref()
                .and_then(ClientInfo::request_origin),
            Some("sdk-go")
        );
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "{:#?}", report.differences);
        stamp(&store, FILE_FORMAT_VERSION + 1);
        drop(store);
        let Err(refused) = Store::open(&path, Options::default()) else {
            panic!("a newer file opened");
        };
        assert!(
            matches!(
                refused,
                Error::UnknownVersion {
                    found,
                    supported: FILE_FORMAT_VERSION
                } if found == FILE_FORMAT_VERSION + 1
            ),
            "{refused}"
        );
    }
}
