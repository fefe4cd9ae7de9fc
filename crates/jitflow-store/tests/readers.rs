//! Readers beside the writer: snapshots are consistent, see whole batches only, and never block
//! appends; bounded reads refuse oversized limits; compaction keeps everything.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{World, all_events};
use jitflow_store::Store;
use jitflow_store::batch::Batch;
use jitflow_store::open::Options;
use jitflow_store::read::{Error, MAX_READ_LIMIT, Reader};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn store_and_reader_are_send_and_sync() {
    assert_send_sync::<Store>();
    assert_send_sync::<Reader>();
}

fn batch(world: &mut World, n: u64) -> Batch {
    let mut batch = Batch::new();
    for k in 0..10 {
        if let Some(e) = world.advance(0, ((n * 7 + k) % 16) as usize, n * 31 + k) {
            batch.push(e);
        }
    }
    batch
}

#[test]
fn readers_see_whole_batches_and_do_not_block_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path().join("r.redb"), Options::default()).unwrap());
    let mut world = World::new("readers", 1, 1);
    store.append_batch(&batch(&mut world, 0)).unwrap();

    // A snapshot held open across many appends keeps its view, and does not stop them.
    let old = store.reader().unwrap();
    let seen = old.last_sequence().unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut snapshots = 0;
                while !done.load(Ordering::Acquire) {
                    let reader = store.reader().unwrap();
                    let last = reader.last_sequence().unwrap();
                    if last > 0 {
                        let tail = reader.event(last).unwrap().unwrap();
                        assert_eq!(tail.batch_last, last, "a reader saw part of a batch");
                        let from = tail.batch_first - 1;
                        let page = reader.events_after(from, MAX_READ_LIMIT).unwrap();
                        assert_eq!(page.len() as u64, last - from);
                    }
                    snapshots += 1;
                }
                snapshots
            })
        })
        .collect();

    for n in 1..60 {
        store.append_batch(&batch(&mut world, n)).unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(
        old.last_sequence().unwrap(),
        seen,
        "a snapshot changed under its reader"
    );
    assert!(store.reader().unwrap().last_sequence().unwrap() > seen);
    drop(old);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn oversized_limits_are_refused() {
    let store =
        Store::open_with_backend(redb::backends::InMemoryBackend::new(), Options::default())
            .unwrap();
    let reader = store.reader().unwrap();
    let err = reader.events_after(0, MAX_READ_LIMIT + 1).unwrap_err();
    assert!(
        matches!(err, Error::LimitTooLarge { requested, max } if requested == MAX_READ_LIMIT + 1 && max == MAX_READ_LIMIT)
    );
    assert!(matches!(
        reader.due_timers(None, None, usize::MAX),
        Err(Error::LimitTooLarge { .. })
    ));
    assert!(matches!(
        reader.intents(None, MAX_READ_LIMIT + 1),
        Err(Error::LimitTooLarge { .. })
    ));
}

#[test]
fn compaction_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    let mut store = Store::open(&path, Options::default()).unwrap();
    let mut world = World::new("compact", 1, 1);
    for n in 0..200 {
        store.append_batch(&batch(&mut world, n)).unwrap();
    }
    let before = all_events(&store);
    // Compaction needs every reader gone.
    let reader = store.reader().unwrap();
    assert!(store_compact_refused(&mut store));
    drop(reader);
    store.compact().unwrap();
    assert_eq!(all_events(&store), before);
    assert!(store.verify().unwrap().is_clean());
    drop(store);
    let store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(all_events(&store), before);
}

fn store_compact_refused(store: &mut Store) -> bool {
    matches!(
        store.compact(),
        Err(jitflow_store::compact::Error::Compaction(_))
    )
}

/// A store in `dir` with three tenants (`<name>-0` to `-2`) of four JIT connections each.
fn three_tenants(dir: &tempfile::TempDir, name: &str) -> Store {
    let store = Store::open(dir.path().join("t.redb"), Options::default()).unwrap();
    let mut world = World::new(name, 3, 1);
    let mut batch = Batch::new();
    for tenant in 0..3 {
        for slot in 0..4 {
            if let Some(e) = world.apply(common::Op::Act {
                tenant,
                slot,
                action: common::Action::Register(jitflow_core::connection::ConnectionType::Jit),
            }) {
                batch.push(e);
            }
        }
    }
    store.append_batch(&batch).unwrap();
    store
}

/// `tenants` lists each tenant with connections once, in order, paged by `after` and `limit`.
#[test]
fn tenants_are_listed_once_each_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_tenants(&dir, "tenants");
    let reader = store.reader().unwrap();
    let all: Vec<String> = reader
        .tenants(None, 100)
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(all, ["tenants-0", "tenants-1", "tenants-2"]);
    let first = reader.tenants(None, 1).unwrap();
    assert_eq!(first.len(), 1);
    let rest = reader.tenants(Some(&first[0]), 100).unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].as_str(), "tenants-1");
    assert!(matches!(
        reader.tenants(None, MAX_READ_LIMIT + 1),
        Err(Error::LimitTooLarge { .. })
    ));
}

/// `connection_keys` walks every tenant's connections in key order (tenant, then id), paged
/// by the last key, in the layer and after a checkpoint alike.
#[test]
fn connection_keys_walk_every_tenant_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_tenants(&dir, "keys");
    let walk = |store: &Store, page: usize| {
        let reader = store.reader().unwrap();
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let keys = reader
                .connection_keys(after.as_ref().map(|(t, id)| (t, *id)), page)
                .unwrap();
            let Some(last) = keys.last().cloned() else {
                break;
            };
            out.extend(keys);
            after = Some(last);
        }
        out
    };
    let all = walk(&store, 1000);
    assert_eq!(all.len(), 12);
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
    assert_eq!(all, sorted, "key order");
    assert_eq!(walk(&store, 5), all, "paged by the last key");
    for (tenant, id) in &all {
        let reader = store.reader().unwrap();
        assert!(reader.connection(tenant, *id).unwrap().is_some());
    }
    store.checkpoint(None).unwrap();
    assert_eq!(walk(&store, 3), all, "the same after a checkpoint");
    assert!(matches!(
        store
            .reader()
            .unwrap()
            .connection_keys(None, MAX_READ_LIMIT + 1),
        Err(Error::LimitTooLarge { .. })
    ));
}

/// A reader taken while a checkpoint commits sees the checkpointed tables with the layer they
/// were built on, never the new tables with the old layer: in every snapshot the timer count
/// (checkpointed rows plus the layer's delta) equals the timers the snapshot lists. Found by
/// the shim's refusal test (a count read twice over during a checkpoint).
#[test]
fn readers_never_pair_a_new_checkpoint_with_the_old_layer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path().join("c.redb"), Options::default()).unwrap());
    let mut world = World::new("checkpoint", 1, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |work: fn(&Store) -> bool| {
        let store = Arc::clone(&store);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert!(
                    work(&store),
                    "a snapshot's count is not its rows' (after {n})"
                );
                n += 1;
            }
            n
        })
    };
    let checkpointer = spawn(|store| store.checkpoint(None).is_ok());
    let reader = spawn(|store| {
        let reader = store.reader().unwrap();
        let counted = reader.backlog().unwrap().timers;
        let listed = reader.due_timers(None, None, MAX_READ_LIMIT).unwrap().len() as u64;
        counted == listed
    });
    for n in 0..3000 {
        store.append_batch(&batch(&mut world, n)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let checkpoints = checkpointer.join().unwrap();
    let reads = reader.join().unwrap();
    assert!(
        checkpoints > 100 && reads > 100,
        "{checkpoints} checkpoints and {reads} reads ran beside the appends"
    );
}
