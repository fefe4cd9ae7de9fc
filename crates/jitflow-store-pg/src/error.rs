//! The backend's open errors.

use std::time::Duration;

use jitflow_store::backend::Partition;

/// Why a [`PgBackend`](crate::PgBackend) could not be opened (or opened again by
/// `Backend::recover`, which wraps this in `open::Error::Backend`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is out of its bounds (see [`Config::validate`](crate::Config::validate)).
    #[error("invalid PostgreSQL backend settings: {0}")]
    InvalidConfig(String),
    /// The connection string does not parse.
    #[error("cannot read the PostgreSQL connection string: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// The backend's runtime (its own threads) could not start.
    #[error("cannot start the PostgreSQL backend's threads: {0}")]
    Runtime(#[source] std::io::Error),
    /// The database could not be reached, or a statement failed or timed out.
    #[error("PostgreSQL: {0}")]
    Database(#[source] std::io::Error),
    /// The database's schema was written by a newer jitflow: this build does not know its
    /// layout. Nothing was changed.
    #[error(
        "the database has jitflow schema version {found}; this build knows version {supported} \
         (was it written by a newer jitflow?)"
    )]
    NewerSchema {
        /// The version in `jitflow_schema`.
        found: i32,
        /// The version this build reads and writes.
        supported: i32,
    },
    /// The database holds records of another format than this build's (a newer jitflow's, or
    /// an older one, for which no upgrade exists yet). Nothing was changed.
    #[error(
        "the database holds records of format {found}; this build reads format {supported} \
         only"
    )]
    RecordFormat {
        /// The record format in `jitflow_schema`.
        found: i64,
        /// The format this build writes (`jitflow_store::open::FILE_FORMAT_VERSION`).
        supported: u64,
    },
    /// The database spreads tenants over another number of partitions than this node's
    /// [`Config::partition_count`](crate::Config::partition_count). The count is fixed when the
    /// database is created: every node must be started with it. Nothing was changed.
    #[error(
        "the database spreads tenants over {found} partitions; this node was configured with \
         {configured} (the count is fixed when the database is created)"
    )]
    PartitionCount {
        /// The count in `jitflow_schema`.
        found: i32,
        /// This node's setting.
        configured: u32,
    },
    /// `jitflow_schema` does not hold exactly one row: not a database jitflow set up, or one
    /// damaged by hand. Nothing was changed.
    #[error("the jitflow_schema table holds {rows} rows, not 1")]
    DamagedSchema {
        /// How many rows it holds.
        rows: usize,
    },
    /// Another node holds the lease of a partition this node is to own.
    #[error(
        "partition {} is leased by node {owner:?} for {expires_in:?} more",
        partition.0
    )]
    LeaseHeld {
        /// The partition.
        partition: Partition,
        /// The node holding it.
        owner: String,
        /// How long its lease lasts unless renewed, by the database's clock.
        expires_in: Duration,
    },
}
