//! Which engine serves a tenant: the one engine of a redb file, or, on a shared PostgreSQL
//! database, the engine of the tenant's partition when this node leases it.
//!
//! On a shared database tenants are spread over a fixed number of partitions
//! (`Partition::of_tenant`); each node runs one engine per partition it leases, and answers a
//! request whose tenant's partition another node serves with a retryable 503 that names that
//! node (`jitflow-owner`, `jitflow-owner-address` headers, and the message). [`balance`]
//! keeps the leases spread over the live nodes as they join, leave or die.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use jitflow::Engine;
use jitflow_core::id::TenantId;
use jitflow_store::backend::Partition;
use jitflow_store_pg::{Membership, PgBackend, View};

use crate::error::{ApiError, Owner};

/// The engines this node serves, by partition, and the last view of the other nodes.
#[derive(Debug)]
pub struct Partitions {
    count: u32,
    /// This node's id on a shared database.
    node: Option<String>,
    served: RwLock<BTreeMap<Partition, Served>>,
    view: RwLock<View>,
}

/// A partition this node serves: its engine, and on a shared database its backend (whose
/// lease the engine writes under).
#[derive(Debug, Clone)]
struct Served {
    engine: Engine,
    backend: Option<Arc<PgBackend>>,
}

impl Partitions {
    /// The one engine of a store of one partition (a redb file).
    pub fn single(engine: Engine) -> Partitions {
        let served = BTreeMap::from([(
            Partition::WHOLE,
            Served {
                engine,
                backend: None,
            },
        )]);
        Partitions {
            count: 1,
            node: None,
            served: RwLock::new(served),
            view: RwLock::new(View::default()),
        }
    }

    /// Node `node` of a database spread over `count` partitions, serving none yet.
    pub fn shared(node: impl Into<String>, count: u32) -> Partitions {
        Partitions {
            count: count.max(1),
            node: Some(node.into()),
            served: RwLock::new(BTreeMap::new()),
            view: RwLock::new(View::default()),
        }
    }

    fn served(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Partition, Served>> {
        self.served.read().unwrap_or_else(|e| e.into_inner())
    }

    fn served_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Partition, Served>> {
        self.served.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The engine serving `tenant`, or a 503 naming the node that does (or saying that its
    /// partition is moving).
    pub fn engine(&self, tenant: &TenantId) -> Result<Engine, ApiError> {
        let partition = Partition::of_tenant(tenant.as_str(), self.count);
        if let Some(s) = self.served().get(&partition) {
            return Ok(s.engine.clone());
        }
        let view = self.view.read().unwrap_or_else(|e| e.into_inner());
        Err(match view.owner(partition) {
            Some(node) => ApiError::not_owner(
                format!(
                    "tenant {tenant}'s partition {} is served by node {} at {}: send the \
                     request there",
                    partition.0, node.id, node.address
                ),
                Owner {
                    node: node.id.clone(),
                    address: node.address.clone(),
                },
            ),
            None => ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "tenant {tenant}'s partition {} is moving between nodes; retry shortly",
                    partition.0
                ),
            ),
        })
    }

    /// The engines served now, by partition.
    pub fn engines(&self) -> Vec<(Partition, Engine)> {
        self.served()
            .iter()
            .map(|(p, s)| (*p, s.engine.clone()))
            .collect()
    }

    /// The partitions served now.
    pub fn partitions(&self) -> Vec<Partition> {
        self.served().keys().copied().collect()
    }

    /// Whether this node is one of several sharing a database.
    pub fn is_shared(&self) -> bool {
        self.node.is_some()
    }

    fn insert(&self, partition: Partition, engine: Engine, backend: Arc<PgBackend>) {
        self.served_mut().insert(
            partition,
            Served {
                engine,
                backend: Some(backend),
            },
        );
    }

    /// Stops serving `partition`: no new request reaches its engine, which is shut down, and
    /// its lease is handed over at once.
    async fn stop(&self, partition: Partition) {
        let Some(served) = self.served_mut().remove(&partition) else {
            return;
        };
        served.engine.shutdown().await;
        if let Some(backend) = served.backend {
            match tokio::task::spawn_blocking(move || backend.release()).await {
                Ok(Ok(())) => tracing::info!(partition = partition.0, "handed the partition over"),
                Ok(Err(e)) => tracing::warn!(
                    partition = partition.0,
                    error = %e,
                    "could not end the lease; it expires by itself"
                ),
                Err(e) => {
                    tracing::warn!(partition = partition.0, error = %e, "release task failed")
                }
            }
        }
    }

    /// Stops every engine (a clean stop), handing every lease over.
    pub async fn stop_all(&self) {
        for partition in self.partitions() {
            self.stop(partition).await;
        }
    }
}

/// Opens the engine of a partition on its backend (the caller's engine settings, hooks and
/// demo data).
pub type Opener = Box<
    dyn Fn(
            Arc<PgBackend>,
            Partition,
        ) -> Pin<
            Box<
                dyn Future<Output = Result<Engine, Box<dyn std::error::Error + Send + Sync>>>
                    + Send,
            >,
        > + Send
        + Sync,
>;

/// Keeps this node's partitions in step with the live nodes, every third of a lease until
/// `stop` completes: heartbeats, takes the leases of the partitions assigned to it (waiting
/// for a holder's to lapse), hands over those assigned to another live node, and drops
/// those whose lease it lost. Then stops every engine and leaves.
pub async fn balance(
    partitions: Arc<Partitions>,
    membership: Membership,
    backend: jitflow_store_pg::Config,
    open: Opener,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut tick = tokio::time::interval(membership.every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        let view = match membership.heartbeat().await {
            Ok(view) => view,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach PostgreSQL to heartbeat; retrying");
                continue;
            }
        };
        *partitions.view.write().unwrap_or_else(|e| e.into_inner()) = view.clone();
        step(&partitions, &membership, &backend, &open, &view).await;
    }
    partitions.stop_all().await;
    if let Err(e) = membership.leave().await {
        tracing::warn!(error = %e, "could not leave; this node's row ages out");
    }
}

/// One round of [`balance`].
async fn step(
    partitions: &Partitions,
    membership: &Membership,
    settings: &jitflow_store_pg::Config,
    open: &Opener,
    view: &View,
) {
    let me = membership.node();
    // The plan once per round: who should serve each partition.
    let plan = view.plan();
    let current = partitions.served().clone();
    for (partition, served) in current {
        let lost = served
            .backend
            .as_ref()
            .is_some_and(|b| b.epoch(partition).is_none());
        // Handed over only to a live node that is to serve it; kept while none is.
        let elsewhere = plan.get(&partition).is_some_and(|n| n.id != me);
        if lost || elsewhere {
            tracing::info!(partition = partition.0, lost, "stops serving the partition");
            partitions.stop(partition).await;
        }
    }
    let served = partitions.partitions();
    let assigned = plan
        .iter()
        .filter(|(p, n)| n.id == me && !served.contains(p))
        .map(|(p, _)| *p);
    for partition in assigned {
        let mut config = settings.clone();
        config.partitions = vec![partition];
        let opened = tokio::task::spawn_blocking(move || PgBackend::open(config)).await;
        let backend = match opened {
            Ok(Ok(backend)) => Arc::new(backend),
            Ok(Err(jitflow_store_pg::Error::LeaseHeld {
                owner, expires_in, ..
            })) => {
                tracing::debug!(partition = partition.0, %owner, ?expires_in, "waits for the lease");
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(partition = partition.0, error = %e, "cannot take the partition");
                continue;
            }
            Err(e) => {
                tracing::warn!(partition = partition.0, error = %e, "open task failed");
                continue;
            }
        };
        match open(Arc::clone(&backend), partition).await {
            Ok(engine) => {
                tracing::info!(partition = partition.0, "serves the partition");
                partitions.insert(partition, engine, backend);
            }
            Err(e) => {
                tracing::error!(partition = partition.0, error = %e, "cannot open the partition's engine");
                let _ = tokio::task::spawn_blocking(move || backend.release()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;
    use jitflow_store_pg::{Holder, Node};

    use super::*;

    #[test]
    fn a_tenant_of_another_nodes_partition_gets_a_503_naming_it() {
        let partitions = Partitions::shared("a", 2);
        let tenant = TenantId::parse("acme").unwrap();
        let partition = Partition::of_tenant("acme", 2);
        // Nobody serves it yet: moving, retry.
        let moving = partitions.engine(&tenant).unwrap_err();
        assert_eq!(moving.status.as_u16(), 503);
        assert!(moving.owner.is_none());
        assert!(moving.text.contains("moving"), "{}", moving.text);
        // Node b holds its lease.
        *partitions.view.write().unwrap() = View {
            nodes: vec![
                Node {
                    id: "a".into(),
                    address: "http://a:1".into(),
                },
                Node {
                    id: "b".into(),
                    address: "http://b:2".into(),
                },
            ],
            holders: BTreeMap::from([(
                partition,
                Holder {
                    owner: "b".into(),
                    live: true,
                },
            )]),
            count: 2,
        };
        let elsewhere = partitions.engine(&tenant).unwrap_err();
        assert_eq!(elsewhere.status.as_u16(), 503);
        assert!(
            elsewhere.text.contains("node b at http://b:2"),
            "{}",
            elsewhere.text
        );
        let response = elsewhere.into_response();
        let header = |name: &str| response.headers().get(name).unwrap().to_str().unwrap();
        assert_eq!(header(crate::error::OWNER_HEADER), "b");
        assert_eq!(header(crate::error::OWNER_ADDRESS_HEADER), "http://b:2");
        assert_eq!(header("retry-after"), "1");
        assert!(partitions.engines().is_empty());
    }
}
