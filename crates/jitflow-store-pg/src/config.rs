//! What a [`PgBackend`](crate::PgBackend) is opened with: where the database is, who this node
//! is, its leases, and the bound on concurrent snapshots.

use std::time::Duration;

use jitflow_store::backend::Partition;

use crate::Error;

/// The shortest lease: renewed every third of it, it must outlast a few round trips and a
/// scheduling hiccup, or a healthy node loses its lease.
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// The longest lease: after a node dies, its partitions wait this long for another node.
pub const MAX_LEASE: Duration = Duration::from_secs(600);
/// The default bound on snapshots open at once (each holds one database connection in a
/// read-only transaction). A reader past it waits up to [`SNAPSHOT_WAIT`](crate::SNAPSHOT_WAIT).
pub const DEFAULT_SNAPSHOTS_MAX: usize = 16;
/// The most snapshots [`Config::snapshots_max`] may allow: PostgreSQL's own default
/// `max_connections` is 100, and each snapshot is one connection.
pub const MAX_SNAPSHOTS: usize = 256;
/// The most partitions a database may be spread over: each leased partition costs its node a
/// writer thread, a database connection and a lease renewal.
pub const MAX_PARTITIONS: u32 = 1024;
/// The longest node id (it is stored in every lease row and named in errors).
pub const MAX_NODE_ID_LEN: usize = 128;

/// How a node holds its partitions' leases. No default: how long a dead node's partitions
/// wait for another is an operator's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How long a lease lasts without renewal, by the database's clock. A background task
    /// renews it every third of this; a node whose renewals stop can write nothing once it has
    /// passed, and another node may take the partition. Between [`MIN_LEASE`] and
    /// [`MAX_LEASE`].
    pub duration: Duration,
}

impl LeaseOptions {
    /// Leases of `duration`.
    pub fn new(duration: Duration) -> LeaseOptions {
        LeaseOptions { duration }
    }

    /// How often the lease is renewed: a third of its duration, so two renewals can fail
    /// before it expires.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }
}

/// Settings of a [`PgBackend`](crate::PgBackend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The connection string: `key=value` pairs (`host=127.0.0.1 port=5432 user=jitflow
    /// dbname=jitflow`) or a `postgresql://` URL, as libpq reads them. No TLS in this build.
    pub url: String,
    /// This node's id: unique among the nodes sharing the database. A node that opens again
    /// under the same id takes its partitions back at once (a restart), fencing its former
    /// self; two live nodes with one id would fence each other in turn.
    pub node_id: String,
    /// The partitions' leases.
    pub lease: LeaseOptions,
    /// The partitions this backend serves (leases taken on open): one store each, opened
    /// with `open::Options::partition`. [`Partition::WHOLE`] by default.
    pub partitions: Vec<Partition>,
    /// How many partitions the database's tenants are spread over (see
    /// `jitflow_store::backend::Partition::of_tenant`): fixed when the database is created,
    /// and the same on every node ([`Error::PartitionCount`] otherwise). 1 to
    /// [`MAX_PARTITIONS`]; 1 by default.
    pub partition_count: u32,
    /// The most snapshots open at once (see [`DEFAULT_SNAPSHOTS_MAX`]), at most
    /// [`MAX_SNAPSHOTS`].
    pub snapshots_max: usize,
}

impl Config {
    /// Settings for node `node_id` on the database at `url`, owning [`Partition::WHOLE`] of
    /// one partition, with [`DEFAULT_SNAPSHOTS_MAX`] snapshots.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>, lease: LeaseOptions) -> Config {
        Config {
            url: url.into(),
            node_id: node_id.into(),
            lease,
            partitions: vec![Partition::WHOLE],
            partition_count: 1,
            snapshots_max: DEFAULT_SNAPSHOTS_MAX,
        }
    }

    /// Checks every bound; [`Error::InvalidConfig`] names the first one broken.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |what: String| Err(Error::InvalidConfig(what));
        if self.node_id.is_empty() || self.node_id.len() > MAX_NODE_ID_LEN {
            return invalid(format!(
                "the node id must have 1 to {MAX_NODE_ID_LEN} bytes, not {}",
                self.node_id.len()
            ));
        }
        if !(MIN_LEASE..=MAX_LEASE).contains(&self.lease.duration) {
            return invalid(format!(
                "the lease must last {MIN_LEASE:?} to {MAX_LEASE:?}, not {:?}",
                self.lease.duration
            ));
        }
        if self.partitions.is_empty() {
            return invalid("the node must own at least one partition".into());
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partition_count) {
            return invalid(format!(
                "the partition count must be 1 to {MAX_PARTITIONS}, not {}",
                self.partition_count
            ));
        }
        if let Some(p) = self.partitions.iter().find(|p| p.0 >= self.partition_count) {
            return invalid(format!(
                "partition {} is out of range (the database has {} partitions: 0 to {})",
                p.0,
                self.partition_count,
                self.partition_count - 1
            ));
        }
        if !(1..=MAX_SNAPSHOTS).contains(&self.snapshots_max) {
            return invalid(format!(
                "snapshots_max must be 1 to {MAX_SNAPSHOTS}, not {}",
                self.snapshots_max
            ));
        }
        Ok(())
    }
}
