//! A full disk: a storage backend that fails writes with `ErrorKind::StorageFull` once a byte
//! budget is spent. Appends then fail with a typed error that says the outcome is unknown (or
//! that nothing was committed), the store refuses further writes until reopened, and reopening
//! the same bytes with a healthy backend loses nothing that was acknowledged: a third of the
//! runs reopen in place (`Store::reopen`, first while the disk is still full), the rest drop
//! the store and open the bytes again.
//!
//! The budget is swept so that the failure lands at many points of a commit: page writes, the
//! header, the growth of the file; then fsyncs fail at each point of a commit, including after
//! the commit slot was written (the commit fails, yet is durable: the outcome is unknown).

mod common;

use common::{Memory, World, all_events};
use jitflow_store::Store;
use jitflow_store::append::Error;
use jitflow_store::batch::{Appended, Batch};
use jitflow_store::open::Options;

const TENANTS: usize = 2;

/// Where the disk fills up.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// After this many more bytes written (or grown).
    Bytes(u64),
    /// At the sync after this many more successful ones.
    Syncs(u64),
}
const SLOTS: u64 = 40;

fn batch(world: &mut World, roll: &mut u64) -> Batch {
    let mut batch = Batch::new();
    for _ in 0..12 {
        *roll = roll
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = *roll >> 11;
        if let Some(e) = world.advance((r % TENANTS as u64) as usize, (r / 7 % SLOTS) as usize, r) {
            batch.push(e);
        }
    }
    batch
}

/// What one run saw.
struct Seen {
    /// The commit failed (rather than a write before it).
    at_commit: bool,
    /// The failed batch turned out to be committed.
    committed_anyway: bool,
    /// The failure came from a checkpoint.
    in_checkpoint: bool,
}

/// How the run heals after the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heal {
    /// Drop the store and open the same bytes on a healthy backend.
    OpenAgain,
    /// `Store::reopen` in place: first while the disk is still full (it may fail, or succeed
    /// and leave a store whose next write fails again), then after the space is back.
    InPlace,
}

/// One run: appends until the fault, checkpointing whenever one is due. With `layer`, the hot
/// layer is that small, so checkpoints run every few batches and the fault lands in them too.
fn run(fault: Fault, quick_repair: bool, layer: Option<usize>, heal: Heal) -> Seen {
    let options = Options {
        quick_repair,
        layer_entries_max: layer.unwrap_or(jitflow_store::open::DEFAULT_LAYER_ENTRIES_MAX),
        ..Options::default()
    };
    let memory = Memory::new();
    let store = match heal {
        Heal::OpenAgain => Store::open_with_backend(memory.clone(), options.clone()).unwrap(),
        Heal::InPlace => {
            let m = memory.clone();
            Store::open_with_backends(move || m.clone(), options.clone()).unwrap()
        }
    };
    assert_eq!(store.is_reopenable(), heal == Heal::InPlace);
    let mut world = World::new("disk", TENANTS, 1);
    let mut roll = match fault {
        Fault::Bytes(n) => n,
        Fault::Syncs(n) => n << 32,
    };
    let mut acked: Vec<Appended> = Vec::new();
    for _ in 0..5 {
        acked.push(store.append_batch(&batch(&mut world, &mut roll)).unwrap());
    }

    match fault {
        Fault::Bytes(bytes) => memory.set_budget(bytes),
        Fault::Syncs(syncs) => memory.set_syncs(syncs),
    }
    let budget = format!("{fault:?}");
    let mut failure = None;
    let mut in_checkpoint = false;
    for _ in 0..10_000 {
        match store.append_batch(&batch(&mut world, &mut roll)) {
            Ok(a) => acked.push(a),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if store.checkpoint_due()
            && let Err(e) = store.checkpoint(None)
        {
            // A failed checkpoint changes nothing committed: every batch before it stays
            // acknowledged, and the reopen below must find them all.
            failure = Some(e);
            in_checkpoint = true;
            break;
        }
    }
    let failure = failure.expect("the disk never filled up");
    assert!(
        matches!(
            failure,
            Error::OutcomeUnknown { .. } | Error::Storage { .. }
        ),
        "{budget}: {failure:?}"
    );
    assert!(
        failure.is_storage_full(),
        "{budget}: the cause is not reported as a full disk: {failure}"
    );
    if matches!(failure, Error::OutcomeUnknown { .. }) {
        assert!(
            failure.to_string().contains("outcome is unknown"),
            "{failure}"
        );
    }
    assert!(store.is_poisoned());
    let again = store
        .append_batch(&batch(&mut world, &mut roll))
        .unwrap_err();
    assert!(matches!(again, Error::Poisoned), "{budget}: {again:?}");
    let store = match heal {
        Heal::OpenAgain => {
            assert!(matches!(
                store.reopen(),
                Err(jitflow_store::open::Error::NotReopenable)
            ));
            drop(store);
            // The same bytes, on a disk with space again.
            Store::open_with_backend(memory.share(u64::MAX), options).unwrap()
        }
        Heal::InPlace => {
            // Still full: the reopen may fail (redb's recovery writes), and the store then
            // stays poisoned; if it succeeds, the store is healthy until its next write.
            match store.reopen() {
                Ok(r) => assert!(!store.is_poisoned() && r.sequence >= acked.last().unwrap().last),
                Err(e) => {
                    assert!(store.is_poisoned(), "{budget}: {e}");
                    assert!(store.reader().is_err(), "{budget}: a closed store reads");
                }
            }
            memory.set_budget(u64::MAX);
            memory.set_syncs(u64::MAX);
            if store.is_poisoned() {
                let reopened = store.reopen().unwrap_or_else(|e| panic!("{budget}: {e}"));
                assert_eq!(reopened.sequence, store.stats().sequence);
            }
            assert!(!store.is_poisoned());
            store
        }
    };
    let events = all_events(&store);
    let last = events.last().map_or(0, |e| e.sequence);
    for a in &acked {
        assert!(
            last >= a.last,
            "{budget}: acknowledged {a:?} lost (log ends at {last})"
        );
        let e = &events[(a.last - 1) as usize];
        assert_eq!((e.batch_first, e.batch_last), (a.first, a.last));
    }
    let acked_end = acked.last().unwrap().last;
    assert!(
        last == acked_end || events[acked_end as usize].batch_last == last,
        "{budget}: more than the failed batch after the last acknowledged one"
    );
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{budget}: {:#?}", report.differences);

    // And the reopened store writes again. The world may be ahead of the store when the failed
    // batch was not committed, so continue from a fresh world on other connections.
    let mut fresh = World::new("after", TENANTS, 2);
    let more = batch(&mut fresh, &mut roll);
    let appended = store.append_batch(&more).unwrap();
    assert_eq!(appended.first, last + 1);
    assert!(store.verify().unwrap().is_clean());
    Seen {
        at_commit: matches!(failure, Error::OutcomeUnknown { .. }),
        committed_anyway: last > acked_end,
        in_checkpoint,
    }
}

#[test]
fn a_full_disk_fails_typed_poisons_and_loses_nothing_acknowledged() {
    // Budgets from nothing at all to several commits' worth, at uneven steps.
    let mut budgets: Vec<u64> = (0..12).collect();
    budgets.extend((1..40).map(|n| n * 2_111));
    budgets.extend((1..12).map(|n| n * 40_009));
    let mut faults: Vec<Fault> = budgets.into_iter().map(Fault::Bytes).collect();
    // A failing fsync: before the data is durable, or after the commit slot was written.
    faults.extend((0..12).map(Fault::Syncs));
    let (mut at_commit, mut committed_anyway) = (0, 0);
    let runs = faults.len();
    for (n, fault) in faults.into_iter().enumerate() {
        let heal = if n % 3 == 0 {
            Heal::InPlace
        } else {
            Heal::OpenAgain
        };
        let seen = run(fault, n % 2 == 0, None, heal);
        at_commit += u32::from(seen.at_commit);
        committed_anyway += u32::from(seen.committed_anyway && !seen.in_checkpoint);
    }
    eprintln!(
        "{runs} faults: {at_commit} failed in the commit (outcome unknown), \
         {committed_anyway} of those turned out committed"
    );
    // The sweep must reach the commit itself, and a commit that failed yet is durable (the
    // outcome really is unknown to the caller).
    assert!(at_commit > 0);
    assert!(committed_anyway > 0);
}

/// The same sweep with a small hot layer: checkpoints run every few batches, so the disk fills
/// inside checkpoints too (and inside appends that checkpoint first at the layer's bound). A
/// failed checkpoint is typed, poisons the store, and loses nothing: the reopen replays the log
/// after the last checkpoint that committed, and `verify` is clean.
#[test]
fn a_full_disk_during_checkpoints_loses_nothing_acknowledged() {
    let mut faults: Vec<Fault> = (1..60).map(|n| Fault::Bytes(n * 3_001)).collect();
    faults.extend((0..16).map(Fault::Syncs));
    let runs = faults.len();
    let mut in_checkpoint = 0;
    for (n, fault) in faults.into_iter().enumerate() {
        let heal = if n % 3 == 1 {
            Heal::InPlace
        } else {
            Heal::OpenAgain
        };
        let seen = run(fault, n % 2 == 1, Some(48 + n % 5 * 16), heal);
        in_checkpoint += u32::from(seen.in_checkpoint);
    }
    eprintln!("{runs} faults with a small layer: {in_checkpoint} failed in a checkpoint");
    assert!(in_checkpoint > 0, "no fault landed in a checkpoint");
}
