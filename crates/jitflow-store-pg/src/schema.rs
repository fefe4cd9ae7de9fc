//! The tables, created and checked by the engine itself.
//!
//! - `jitflow_schema(version, format, partitions)`: one row. `version` is the SQL layout below
//!   ([`SCHEMA_VERSION`]); `format` the store's record format
//!   (`jitflow_store::open::FILE_FORMAT_VERSION`), since the rows hold its encoded records;
//!   `partitions` the number of partitions tenants are spread over, fixed when the database
//!   is created (a tenant's partition is its hash modulo it, so another count would look for
//!   every tenant in the wrong place).
//! - `jitflow_log(partition, log, number, body)`: the log, keyed by (partition, log, number);
//!   `log` is 1 for events, 2 for extras records.
//! - `jitflow_rows(partition, tbl, key, native, value)`: the checkpointed derived tables,
//!   keyed by (partition, table name, order bytes). Order bytes start with the tenant for
//!   tenant data, and `bytea` compares bytewise (`memcmp`, then length), which is the order
//!   the store's ranges need.
//! - `jitflow_leases(partition, owner, epoch, expires_at)`: one lease per partition.
//! - `jitflow_nodes(node, address, seen_at)`: the nodes sharing the database, each seen at its
//!   last heartbeat (see [`Membership`](crate::Membership)).
//!
//! Version 1 had no `partitions` column (one partition) and no `jitflow_nodes`; a version 1
//! database is migrated in place on open.

use jitflow_store::open::FILE_FORMAT_VERSION;

use crate::Error;
use crate::rt::within;

/// The SQL layout this build creates and reads.
pub const SCHEMA_VERSION: i32 = 2;

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

/// Version 1 to 2: the partition count (version 1 had one partition) and the nodes' table.
const FROM_V1: &str = "
ALTER TABLE jitflow_schema ADD COLUMN partitions integer NOT NULL DEFAULT 1;
CREATE TABLE jitflow_nodes (
    node text PRIMARY KEY,
    address text NOT NULL,
    seen_at timestamptz NOT NULL
);
UPDATE jitflow_schema SET version = 2;
";

/// Creates the tables of an empty database (spread over `partitions`), or checks the version,
/// record format and partition count of existing ones, migrating an older layout in place.
pub(crate) async fn ensure(
    client: &mut tokio_postgres::Client,
    partitions: u32,
) -> Result<(), Error> {
    let count = i32::try_from(partitions).unwrap_or(i32::MAX);
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
            // Version 1's tables, then the steps to the current version: one way to each.
            within(txn.batch_execute(CREATE))
                .await
                .map_err(Error::Database)?;
            let format = i64::try_from(FILE_FORMAT_VERSION).unwrap_or(i64::MAX);
            within(txn.execute(
                "INSERT INTO jitflow_schema (version, format) VALUES (1, $1)",
                &[&format],
            ))
            .await
            .map_err(Error::Database)?;
            within(txn.batch_execute(FROM_V1))
                .await
                .map_err(Error::Database)?;
            within(txn.execute("UPDATE jitflow_schema SET partitions = $1", &[&count]))
                .await
                .map_err(Error::Database)?;
            tracing::info!(
                version = SCHEMA_VERSION,
                partitions,
                "created the jitflow schema"
            );
        }
        [row] => {
            let (version, format): (i32, i64) = (row.get(0), row.get(1));
            if version > SCHEMA_VERSION {
                return Err(Error::NewerSchema {
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            if u64::try_from(format) != Ok(FILE_FORMAT_VERSION) {
                return Err(Error::RecordFormat {
                    found: format,
                    supported: FILE_FORMAT_VERSION,
                });
            }
            if version == 1 {
                within(txn.batch_execute(FROM_V1))
                    .await
                    .map_err(Error::Database)?;
                tracing::info!(from = 1, to = 2, "migrated the jitflow schema");
            }
            let found: i32 = within(txn.query_one("SELECT partitions FROM jitflow_schema", &[]))
                .await
                .map_err(Error::Database)?
                .get(0);
            if found != count {
                // Checked before any lease is taken: a node with another count would route
                // tenants to partitions that do not hold them.
                return Err(Error::PartitionCount {
                    found,
                    configured: partitions,
                });
            }
        }
        rows => return Err(Error::DamagedSchema { rows: rows.len() }),
    }
    within(txn.commit()).await.map_err(Error::Database)
}
