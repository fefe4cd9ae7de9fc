//! The tables, created and checked by the engine itself.
//!
//! - `jitflow_schema(version, format)`: one row. `version` is the SQL layout below
//!   ([`SCHEMA_VERSION`]); `format` the store's record format
//!   (`jitflow_store::open::FILE_FORMAT_VERSION`), since the rows hold its encoded records.
//! - `jitflow_log(partition, log, number, body)`: the log, keyed by (partition, log, number);
//!   `log` is 1 for events, 2 for extras records.
//! - `jitflow_rows(partition, tbl, key, native, value)`: the checkpointed derived tables,
//!   keyed by (partition, table name, order bytes). Order bytes start with the tenant for
//!   tenant data, and `bytea` compares bytewise (`memcmp`, then length), which is the order
//!   the store's ranges need.
//! - `jitflow_leases(partition, owner, epoch, expires_at)`: one lease per partition.

use jitflow_store::open::FILE_FORMAT_VERSION;

use crate::Error;
use crate::rt::within;

/// The SQL layout this build creates and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// Serialises schema creation between nodes starting at once (a transaction-scoped advisory
/// lock; the number is arbitrary but fixed).
const SCHEMA_LOCK: i64 = 0x006a_6974_666c_6f77;

const CREATE: &str = "
CREATE TABLE jitflow_log (
    partition integer NOT NULL,
    log smallint NOT NULL,
    number bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (partition, log, number)
);
CREATE TABLE jitflow_rows (
    partition integer NOT NULL,
    tbl text COLLATE \"C\" NOT NULL,
    key bytea NOT NULL,
    native bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (partition, tbl, key)
);
CREATE TABLE jitflow_leases (
    partition integer PRIMARY KEY,
    owner text NOT NULL,
    epoch bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
";

/// Creates the tables of an empty database, or checks the version of existing ones.
pub(crate) async fn ensure(client: &mut tokio_postgres::Client) -> Result<(), Error> {
    let txn = within(client.transaction())
        .await
        .map_err(Error::Database)?;
    within(txn.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]))
        .await
        .map_err(Error::Database)?;
    within(txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS jitflow_schema (version integer NOT NULL, format bigint NOT NULL)",
    ))
    .await
    .map_err(Error::Database)?;
    let rows = within(txn.query("SELECT version, format FROM jitflow_schema", &[]))
        .await
        .map_err(Error::Database)?;
    match rows.as_slice() {
        [] => {
            within(txn.batch_execute(CREATE))
                .await
                .map_err(Error::Database)?;
            let format = i64::try_from(FILE_FORMAT_VERSION).unwrap_or(i64::MAX);
            within(txn.execute(
                "INSERT INTO jitflow_schema (version, format) VALUES ($1, $2)",
                &[&SCHEMA_VERSION, &format],
            ))
            .await
            .map_err(Error::Database)?;
            tracing::info!(version = SCHEMA_VERSION, "created the jitflow schema");
        }
        [row] => {
            let (version, format): (i32, i64) = (row.get(0), row.get(1));
            if version > SCHEMA_VERSION {
                return Err(Error::NewerSchema {
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            // Version 1 is the first: an older one would be migrated here, step by step.
            if u64::try_from(format) != Ok(FILE_FORMAT_VERSION) {
                return Err(Error::RecordFormat {
                    found: format,
                    supported: FILE_FORMAT_VERSION,
                });
            }
        }
        rows => return Err(Error::DamagedSchema { rows: rows.len() }),
    }
    within(txn.commit()).await.map_err(Error::Database)
}
