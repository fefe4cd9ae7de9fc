//! Partition leases: taken on open, renewed in the background, checked by every write.
//!
//! A lease row is (partition, owner, epoch, expires_at), judged by the database's clock alone
//! (`clock_timestamp()`), so the nodes' clocks never matter. Taking a lease bumps its epoch.
//! Every append and checkpoint transaction first reads its partition's row `FOR SHARE` and goes
//! on only if owner and epoch are its own and the lease is unexpired. The share lock holds
//! until the transaction ends, and a takeover is an `UPDATE` of that row, so a takeover waits
//! for a write in flight and every write after it sees the new epoch and fails: a node that
//! lost its lease writes nothing.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
#[cfg(feature = "testing")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jitflow_store::backend::Partition;
use tokio_postgres::Client;

use crate::Error;
use crate::rt::within;

/// Takes the lease when free, expired, or already this node's (a restart), bumping its epoch.
/// The new expiry is computed in the update, once the row is locked: `EXCLUDED`'s is computed
/// before, and a takeover that waited for a write in flight would get a lease spent by the
/// wait.
const ACQUIRE: &str = "
INSERT INTO jitflow_leases AS l (partition, owner, epoch, expires_at)
VALUES ($1, $2, 1, clock_timestamp() + $3::float8 * interval '1 millisecond')
ON CONFLICT (partition) DO UPDATE
    SET owner = EXCLUDED.owner, epoch = l.epoch + 1,
        expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond'
    WHERE l.expires_at <= clock_timestamp() OR l.owner = EXCLUDED.owner
RETURNING epoch";

/// Who holds a lease, and for how long yet (in ms, negative once expired).
const HOLDER: &str = "
SELECT owner, epoch,
       (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint
FROM jitflow_leases WHERE partition = $1";

/// Extends a lease this node still holds at this epoch (even past its expiry: while nobody
/// took it, the epoch is unchanged and nobody else wrote).
const RENEW: &str = "
UPDATE jitflow_leases SET expires_at = clock_timestamp() + $4::float8 * interval '1 millisecond'
WHERE partition = $1 AND owner = $2 AND epoch = $3";

/// Ends a lease this node holds at this epoch now, so another node may take it at once.
const RELEASE: &str = "
UPDATE jitflow_leases SET expires_at = clock_timestamp()
WHERE partition = $1 AND owner = $2 AND epoch = $3";

/// The fence of every write transaction; the share lock keeps takeovers out until it ends.
pub(crate) const FENCE: &str = "
SELECT owner, epoch, expires_at > clock_timestamp()
FROM jitflow_leases WHERE partition = $1 FOR SHARE";

/// A partition as its key column.
pub(crate) fn column(partition: Partition) -> i32 {
    // `Config::validate` refuses partitions past i32::MAX.
    i32::try_from(partition.0).unwrap_or(i32::MAX)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The leases this node holds, by partition: their epochs.
#[derive(Debug)]
pub(crate) struct Leases {
    pub(crate) node: String,
    pub(crate) duration: Duration,
    held: Mutex<HashMap<Partition, u64>>,
    #[cfg(feature = "testing")]
    paused: AtomicBool,
}

impl Leases {
    pub(crate) fn new(node: String, duration: Duration) -> Leases {
        Leases {
            node,
            duration,
            held: Mutex::new(HashMap::new()),
            #[cfg(feature = "testing")]
            paused: AtomicBool::new(false),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<Partition, u64>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The epoch this node holds `partition` at, if it does.
    pub(crate) fn epoch(&self, partition: Partition) -> Option<u64> {
        self.held().get(&partition).copied()
    }

    pub(crate) fn set(&self, partition: Partition, epoch: u64) {
        self.held().insert(partition, epoch);
    }

    pub(crate) fn clear(&self) {
        self.held().clear();
    }

    /// Forgets a lease lost at `epoch` (unless it was taken again since).
    fn forget(&self, partition: Partition, epoch: u64) {
        let mut held = self.held();
        if held.get(&partition) == Some(&epoch) {
            held.remove(&partition);
        }
    }

    #[cfg(feature = "testing")]
    pub(crate) fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }

    fn paused(&self) -> bool {
        #[cfg(feature = "testing")]
        return self.paused.load(Ordering::Relaxed);
        #[cfg(not(feature = "testing"))]
        false
    }

    /// Takes the lease of `partition`; its epoch.
    pub(crate) async fn acquire(
        &self,
        client: &Client,
        partition: Partition,
    ) -> Result<u64, Error> {
        let p = column(partition);
        let row = within(client.query_opt(ACQUIRE, &[&p, &self.node, &millis(self.duration)]))
            .await
            .map_err(Error::Database)?;
        if let Some(row) = row {
            let epoch = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            tracing::info!(partition = partition.0, epoch, node = %self.node, "took the lease");
            return Ok(epoch);
        }
        let holder = within(client.query_opt(HOLDER, &[&p]))
            .await
            .map_err(Error::Database)?;
        let (owner, left) = holder.map_or((String::new(), 0), |r| (r.get(0), r.get::<_, i64>(2)));
        Err(Error::LeaseHeld {
            partition,
            owner,
            expires_in: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
        })
    }

    /// Ends every lease held (a clean stop): forgotten first, so no write of this node starts
    /// after; then expired in the database.
    pub(crate) async fn release(&self, client: &Client) -> io::Result<()> {
        let held: Vec<(Partition, u64)> = self.held().drain().collect();
        for (partition, epoch) in held {
            let e = i64::try_from(epoch).unwrap_or(i64::MAX);
            within(client.execute(RELEASE, &[&column(partition), &self.node, &e])).await?;
            tracing::info!(partition = partition.0, epoch, "released the lease");
        }
        Ok(())
    }

    /// Renews every lease held; forgets those another node took. A failed statement ends the
    /// round (the caller reconnects).
    async fn renew(&self, client: &Client) -> io::Result<()> {
        let held: Vec<(Partition, u64)> = self.held().iter().map(|(p, e)| (*p, *e)).collect();
        for (partition, epoch) in held {
            let e = i64::try_from(epoch).unwrap_or(i64::MAX);
            let args: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&column(partition), &self.node, &e, &millis(self.duration)];
            if within(client.execute(RENEW, &args)).await? == 0 {
                tracing::error!(
                    partition = partition.0,
                    epoch,
                    "lost the lease: another node took the partition; its writes are fenced"
                );
                self.forget(partition, epoch);
            }
        }
        Ok(())
    }

    /// Renews the leases every third of their duration, on a connection of its own (a long
    /// checkpoint never delays it), until the backend drops the task.
    pub(crate) async fn renew_forever(
        self: std::sync::Arc<Leases>,
        pg: tokio_postgres::Config,
        every: Duration,
    ) {
        let mut client: Option<Client> = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if self.paused() {
                continue;
            }
            if client.as_ref().is_none_or(Client::is_closed) {
                client = match crate::rt::connect(&pg).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reach PostgreSQL to renew the leases");
                        continue;
                    }
                };
            }
            if let Some(c) = &client
                && let Err(e) = self.renew(c).await
            {
                tracing::warn!(error = %e, "renewing the leases failed; retrying");
                client = None;
            }
        }
    }
}
