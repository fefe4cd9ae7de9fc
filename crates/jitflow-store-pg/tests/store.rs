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
