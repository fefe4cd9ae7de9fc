//! Which nodes share the database, and which partitions each should serve.
//!
//! Each node heartbeats a row of `jitflow_nodes` (its id, the address clients reach it at,
//! and `seen_at` by the database's clock) every third of a lease. A node is *live* while its
//! row was seen within one lease. Every node computes the same [`View::assigned`] from the
//! same rows ([`View::plan`]: balanced, and a partition stays where it is while its holder is
//! live and within its share). A node then
//! takes the leases of its assigned partitions (one [`PgBackend`](crate::PgBackend) each) and
//! hands back, by [`PgBackend::release`](crate::PgBackend::release), those assigned to another
//! live node. Leases alone decide who writes: views that differ for a moment (a node joining)
//! only delay a move, they never let two nodes write one partition.

use std::collections::BTreeMap;
use std::time::Duration;

use jitflow_store::backend::Partition;
use tokio_postgres::Client;

use crate::rt::within;
use crate::{Config, Error};

/// The longest address a node may advertise.
pub const MAX_ADDRESS_LEN: usize = 512;

const BEAT: &str = "
INSERT INTO jitflow_nodes (node, address, seen_at) VALUES ($1, $2, clock_timestamp())
ON CONFLICT (node) DO UPDATE SET address = EXCLUDED.address, seen_at = EXCLUDED.seen_at";

const NODES: &str = "
SELECT node, address FROM jitflow_nodes
WHERE seen_at > clock_timestamp() - $1::float8 * interval '1 millisecond'
ORDER BY node";

const HOLDERS: &str = "
SELECT partition, owner, expires_at > clock_timestamp() FROM jitflow_leases";

const LEAVE: &str = "DELETE FROM jitflow_nodes WHERE node = $1";

/// A node sharing the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its id ([`Config::node_id`]).
    pub id: String,
    /// Where clients reach it, as it advertised.
    pub address: String,
}

/// A partition's lease as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The node holding (or last holding) it.
    pub owner: String,
    /// Whether the lease is unexpired.
    pub live: bool,
}

/// The live nodes and the leases, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The live nodes, by id.
    pub nodes: Vec<Node>,
    /// Every partition's lease that was ever taken.
    pub holders: BTreeMap<Partition, Holder>,
    /// The database's partition count.
    pub count: u32,
}

impl View {
    /// Which live node each partition should be served by. Every node computes the same plan
    /// from the same view: each live node's quota is the count divided by the live nodes
    /// (the first ones by id take one more of the remainder); a partition stays with the live
    /// node holding its lease while that node is within its quota; the rest go, in partition
    /// order, to the first nodes by id below their quota. So a node's death moves only its
    /// partitions, and a node joining takes partitions only from those over their quota.
    pub fn plan(&self) -> BTreeMap<Partition, &Node> {
        let n = self.nodes.len();
        let mut plan = BTreeMap::new();
        if n == 0 {
            return plan;
        }
        let count = self.count as usize;
        let quota = |i: usize| count / n + usize::from(i < count % n);
        let mut load = vec![0usize; n];
        let place = |id: &str| self.nodes.iter().position(|node| node.id == id);
        for p in (0..self.count).map(Partition) {
            let holder = self.holders.get(&p).filter(|h| h.live);
            if let Some(i) = holder.and_then(|h| place(&h.owner))
                && load[i] < quota(i)
            {
                load[i] += 1;
                plan.insert(p, &self.nodes[i]);
            }
        }
        for p in (0..self.count).map(Partition) {
            if plan.contains_key(&p) {
                continue;
            }
            if let Some(i) = (0..n).find(|&i| load[i] < quota(i)) {
                load[i] += 1;
                plan.insert(p, &self.nodes[i]);
            }
        }
        plan
    }

    /// The partitions [`View::plan`] gives `node`: empty when it is not live.
    pub fn assigned(&self, node: &str) -> Vec<Partition> {
        self.plan()
            .into_iter()
            .filter(|(_, n)| n.id == node)
            .map(|(p, _)| p)
            .collect()
    }

    /// The live node [`View::plan`] gives `partition`, if any node is live.
    pub fn assignee(&self, partition: Partition) -> Option<&Node> {
        self.plan().get(&partition).copied()
    }

    /// The node serving `partition` now: the holder of its unexpired lease, if that node is
    /// live.
    pub fn owner(&self, partition: Partition) -> Option<&Node> {
        let holder = self.holders.get(&partition).filter(|h| h.live)?;
        self.nodes.iter().find(|n| n.id == holder.owner)
    }
}

/// This node's membership: its heartbeat and its reading of the others.
#[derive(Debug)]
pub struct Membership {
    pg: tokio_postgres::Config,
    node: String,
    address: String,
    lease: Duration,
    count: u32,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Membership {
    /// Checks `config` and `address` (1 to [`MAX_ADDRESS_LEN`] bytes), connects, and creates
    /// or checks the schema, so a node of another partition count is refused before it
    /// heartbeats. Runs on the caller's tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`], [`Error::Url`], [`Error::Database`], and the schema's
    /// errors as [`PgBackend::open`](crate::PgBackend::open) returns them.
    pub async fn open(config: &Config, address: impl Into<String>) -> Result<Membership, Error> {
        config.validate()?;
        let address = address.into();
        if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
            return Err(Error::InvalidConfig(format!(
                "the advertised address must have 1 to {MAX_ADDRESS_LEN} bytes, not {}",
                address.len()
            )));
        }
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(Error::Url)?;
        pg.connect_timeout(crate::CONNECT_TIMEOUT);
        pg.application_name("jitflow-membership");
        let mut client = crate::rt::connect(&pg).await.map_err(Error::Database)?;
        crate::schema::ensure(&mut client, config.partition_count).await?;
        Ok(Membership {
            pg,
            node: config.node_id.clone(),
            address,
            lease: config.lease.duration,
            count: config.partition_count,
            client: tokio::sync::Mutex::new(Some(client)),
        })
    }

    /// Records this node as live now, and reads the live nodes and the leases. A lost
    /// connection is opened again on the next call.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the database cannot be reached or a statement fails.
    pub async fn heartbeat(&self) -> Result<View, Error> {
        let mut slot = self.client.lock().await;
        let mut client = self.connected(&mut slot).await?;
        let millis = self.lease.as_secs_f64() * 1000.0;
        let read = async {
            within(client.execute(BEAT, &[&self.node, &self.address])).await?;
            let txn = within(client.transaction()).await?;
            let nodes = within(txn.query(NODES, &[&millis])).await?;
            let holders = within(txn.query(HOLDERS, &[])).await?;
            within(txn.commit()).await?;
            Ok::<_, std::io::Error>((nodes, holders))
        };
        // A failed read drops the connection: the next call opens a new one.
        let (nodes, holders) = read.await.map_err(Error::Database)?;
        *slot = Some(client);
        Ok(View {
            nodes: nodes
                .iter()
                .map(|r| Node {
                    id: r.get(0),
                    address: r.get(1),
                })
                .collect(),
            holders: holders
                .iter()
                .filter_map(|r| {
                    let p = u32::try_from(r.get::<_, i32>(0)).ok()?;
                    Some((
                        Partition(p),
                        Holder {
                            owner: r.get(1),
                            live: r.get(2),
                        },
                    ))
                })
                .collect(),
            count: self.count,
        })
    }

    /// Removes this node's row (a clean stop), so the others reassign its partitions at once
    /// rather than after a lease.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] when the database cannot be reached; the row then ages out.
    pub async fn leave(&self) -> Result<(), Error> {
        let mut slot = self.client.lock().await;
        let client = self.connected(&mut slot).await?;
        within(client.execute(LEAVE, &[&self.node]))
            .await
            .map_err(Error::Database)?;
        *slot = Some(client);
        Ok(())
    }

    /// The kept connection, or a new one when there is none or it closed.
    async fn connected(&self, slot: &mut Option<Client>) -> Result<Client, Error> {
        match slot.take() {
            Some(client) if !client.is_closed() => Ok(client),
            _ => crate::rt::connect(&self.pg).await.map_err(Error::Database),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How often to heartbeat: a third of a lease, like the leases' renewals.
    pub fn every(&self) -> Duration {
        self.lease / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(nodes: &[&str], count: u32) -> View {
        View {
            nodes: nodes
                .iter()
                .map(|n| Node {
                    id: (*n).to_owned(),
                    address: format!("http://{n}"),
                })
                .collect(),
            holders: BTreeMap::new(),
            count,
        }
    }

    #[test]
    fn every_partition_is_assigned_to_exactly_one_live_node() {
        for n in 1..=5 {
            let ids: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let v = view(&refs, 8);
            let mut all: Vec<Partition> = refs.iter().flat_map(|id| v.assigned(id)).collect();
            all.sort();
            assert_eq!(all, (0..8).map(Partition).collect::<Vec<_>>());
            for id in &refs {
                // Balanced within one partition.
                let mine = v.assigned(id).len();
                assert!(mine == 8 / n || mine == 8 / n + 1, "{id}: {mine}");
            }
            for p in 0..8 {
                let a = v.assignee(Partition(p)).unwrap();
                assert!(v.assigned(&a.id).contains(&Partition(p)));
            }
        }
        assert!(view(&["a"], 4).assigned("b").is_empty());
        assert_eq!(view(&[], 4).assignee(Partition(0)), None);
    }

    fn held(v: &mut View, p: u32, owner: &str) {
        v.holders.insert(
            Partition(p),
            Holder {
                owner: owner.into(),
                live: true,
            },
        );
    }

    #[test]
    fn a_death_moves_only_the_dead_nodes_partitions_and_a_join_takes_from_the_fullest() {
        // a: 0, 3; b: 1; c: 2 (as the first plan of three gives them).
        let mut v = view(&["a", "b", "c"], 4);
        for (p, o) in [(0, "a"), (1, "b"), (2, "c"), (3, "a")] {
            held(&mut v, p, o);
        }
        assert_eq!(v.assigned("a"), vec![Partition(0), Partition(3)]);
        assert_eq!(v.assigned("b"), vec![Partition(1)]);
        // a dies: b and c keep theirs and share a's.
        let mut dead = v.clone();
        dead.nodes.remove(0);
        assert_eq!(dead.assigned("b"), vec![Partition(0), Partition(1)]);
        assert_eq!(dead.assigned("c"), vec![Partition(2), Partition(3)]);
        // d joins four nodes' worth of partitions: it takes one from the node over its quota.
        let mut joined = v.clone();
        joined.nodes.push(Node {
            id: "d".into(),
            address: "http://d".into(),
        });
        assert_eq!(joined.assigned("a"), vec![Partition(0)]);
        assert_eq!(joined.assigned("b"), vec![Partition(1)]);
        assert_eq!(joined.assigned("c"), vec![Partition(2)]);
        assert_eq!(joined.assigned("d"), vec![Partition(3)]);
    }

    #[test]
    fn the_owner_is_a_live_nodes_unexpired_lease() {
        let mut v = view(&["a", "b"], 2);
        assert_eq!(v.owner(Partition(0)), None);
        v.holders.insert(
            Partition(0),
            Holder {
                owner: "b".into(),
                live: true,
            },
        );
        v.holders.insert(
            Partition(1),
            Holder {
                owner: "a".into(),
                live: false,
            },
        );
        assert_eq!(v.owner(Partition(0)).map(|n| n.id.as_str()), Some("b"));
        assert_eq!(v.owner(Partition(1)), None);
        v.holders.insert(
            Partition(1),
            Holder {
                owner: "gone".into(),
                live: true,
            },
        );
        assert_eq!(v.owner(Partition(1)), None);
    }
}
