//! The store over PostgreSQL where the backend differs from a file: a fenced write poisons
//! the store with `append::Error::Fenced`, reopening cannot take the lease back while another
//! node holds it, and that node's store opens on everything the first one committed.

#[path = "../../jitflow-store/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Action, Op, World};
use jitflow_core::connection::ConnectionType;
use jitflow_store::Store;
use jitflow_store::batch::Batch;
use jitflow_store::open::Options;
use jitflow_store_pg::testing::Cluster;
use jitflow_store_pg::{Config, Error, LeaseOptions, PgBackend};

fn open(url: &str, node: &str) -> Result<PgBackend, Error> {
    PgBackend::open(Config::new(
        url,
        node,
        LeaseOptions::new(Duration::from_secs(3)),
    ))
}

/// A batch that registers connection `slot` of tenant 0 and activates it.
fn batch(world: &mut World, slot: usize) -> Batch {
    let mut batch = Batch::new();
    for action in [
        Action::Register(ConnectionType::Jit),
        Action::Activate(Some(30)),
    ] {
        let op = Op::Act {
            tenant: 0,
            slot,
            action,
        };
        batch.push(world.apply(op).expect("the core accepts it"));
    }
    batch
}

#[test]
fn a_fenced_store_is_poisoned_and_the_new_holder_opens_on_everything_committed() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    let a = Arc::new(open(&url, "a").unwrap());
    let store_a = Store::open_on(Arc::clone(&a) as _, Options::default()).unwrap();
    let mut world = World::new("f", 1, 1);
    store_a.append_batch(&batch(&mut world, 0)).unwrap();
    store_a.checkpoint(None).unwrap();
    store_a.append_batch(&batch(&mut world, 1)).unwrap();
    let committed = store_a.stats().sequence;

    a.pause_renewals();
    let started = Instant::now();
    let b = loop {
        match open(&url, "b") {
            Ok(b) => break b,
            Err(Error::LeaseHeld { .. }) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("b cannot take the expired lease: {e}"),
        }
    };

    let mut stale = world.clone();
    let err = store_a.append_batch(&batch(&mut stale, 2)).unwrap_err();
    assert!(
        matches!(err, jitflow_store::append::Error::Fenced { .. }),
        "{err}"
    );
    assert!(store_a.is_poisoned());
    assert!(matches!(
        store_a.reopen(),
        Err(jitflow_store::open::Error::Backend(_))
    ));

    let store_b = Store::open_on(Arc::new(b), Options::default()).unwrap();
    assert_eq!(store_b.stats().sequence, committed);
    let reader = store_b.reader().unwrap();
    let tenant = &world.tenants[0].id;
    for slot in [0, 1] {
        let id = world.connection_id(0, slot);
        assert_eq!(
            reader.connection(tenant, id).unwrap().as_ref(),
            world.tenants[0].connections.get(&id),
            "slot {slot}"
        );
    }
    assert!(store_b.verify().unwrap().is_clean());
    // b goes on where a stopped.
    store_b.append_batch(&batch(&mut world, 2)).unwrap();
    assert_eq!(store_b.stats().sequence, committed + 2);
}

/// A backend of `partition` of a database spread over `count`.
fn open_partition(url: &str, node: &str, partition: u32, count: u32) -> PgBackend {
    let mut config = Config::new(url, node, LeaseOptions::new(Duration::from_secs(3)));
    config.partition_count = count;
    config.partitions = vec![jitflow_store::backend::Partition(partition)];
    PgBackend::open(config).unwrap()
}

fn partition_options(partition: u32) -> Options {
    Options {
        partition: jitflow_store::backend::Partition(partition),
        ..Options::default()
    }
}

#[test]
fn partitions_of_one_database_are_stores_of_their_own() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    // Three nodes, one partition each; a and b write their own tenant's data.
    let a = Arc::new(open_partition(&url, "a", 0, 3));
    let b = Arc::new(open_partition(&url, "b", 1, 3));
    let d = Arc::new(open_partition(&url, "d", 2, 3));
    let store_a = Store::open_on(Arc::clone(&a) as _, partition_options(0)).unwrap();
    let store_b = Store::open_on(Arc::clone(&b) as _, partition_options(1)).unwrap();
    let mut world_a = World::new("pa", 1, 4);
    let mut world_b = World::new("pb", 1, 3);
    for slot in 0..3 {
        store_a.append_batch(&batch(&mut world_a, slot)).unwrap();
    }
    store_a.checkpoint(None).unwrap();
    store_b.append_batch(&batch(&mut world_b, 0)).unwrap();
    // Each partition's log numbers its own events from 1.
    assert_eq!(store_a.stats().sequence, 6);
    assert_eq!(store_b.stats().sequence, 2);
    let (tenant_a, tenant_b) = (&world_a.tenants[0].id, &world_b.tenants[0].id);
    let in_b = store_b.reader().unwrap();
    assert_eq!(
        in_b.connection(tenant_a, world_a.connection_id(0, 0))
            .unwrap(),
        None,
        "partition 1 sees partition 0's data"
    );
    drop(in_b);
    // d may read partition 0, but writes nothing there: its lease is partition 2's.
    let stray = Store::open_on(Arc::clone(&d) as _, partition_options(0)).unwrap();
    assert_eq!(stray.stats().sequence, 6);
    let err = stray
        .append_batch(&batch(&mut world_a.clone(), 3))
        .unwrap_err();
    assert!(
        matches!(err, jitflow_store::append::Error::Fenced { .. }),
        "{err}"
    );
    drop((stray, store_a, store_b));
    a.release().unwrap();
    b.release().unwrap();

    // Opened again, by another node, each partition holds what its node wrote.
    let again_a = Store::open_on(
        Arc::new(open_partition(&url, "c", 0, 3)),
        partition_options(0),
    )
    .unwrap();
    assert_eq!(again_a.stats().sequence, 6);
    let reader = again_a.reader().unwrap();
    for slot in 0..3 {
        let id = world_a.connection_id(0, slot);
        assert_eq!(
            reader.connection(tenant_a, id).unwrap().as_ref(),
            world_a.tenants[0].connections.get(&id)
        );
    }
    drop(reader);
    assert!(again_a.verify().unwrap().is_clean());
    let again_b = Store::open_on(
        Arc::new(open_partition(&url, "c", 1, 3)),
        partition_options(1),
    )
    .unwrap();
    assert_eq!(again_b.stats().sequence, 2);
    let id = world_b.connection_id(0, 0);
    assert_eq!(
        again_b
            .reader()
            .unwrap()
            .connection(tenant_b, id)
            .unwrap()
            .as_ref(),
        world_b.tenants[0].connections.get(&id)
    );
    assert!(again_b.verify().unwrap().is_clean());
}
