//! A real full disk under the engine: its store on a small tmpfs that a test file fills up.
//!
//! The engine must not stop. Writes fail with a typed, retryable error that names the cause,
//! `health` says degraded, and once the space is back the engine reopens its store by itself:
//! every acknowledged write is there, the activations that expired during the outage are
//! revoked within [`HEAL_BOUND`] of the space returning, and `verify` is clean.
//!
//! Mounting needs root (CI runs as root). Elsewhere the test says it skipped; under CI
//! (`CI` set) it fails instead, so that the suite never passes without running it.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, caller, conn, spec};
use jitflow::{Error, Health};
use jitflow_core::time::{Minutes, Timestamp};
use jitflow_store::testing::Tmpfs;

/// From the moment the space is back to the revoke reaching the target: the writer's longest
/// backoff (`heal::BACKOFF_MAX`, 2 s), the reopen with its tail replay, the probe write, the
/// timer's commit and the revoke call, with room for a loaded CI machine.
const HEAL_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_heals_by_itself_and_revokes_on_time() {
    let Some(disk) = Tmpfs::mount("32m") else {
        return;
    };
    let clock = jitflow::clock::ManualClock::new(Timestamp::from_millis(common::START).unwrap());
    let h = Harness::open(
        &common::Storage::file_at(&disk.path().join("engine.redb")),
        clock,
        common::Target::default(),
    )
    .await;
    h.engine
        .put_policy(&caller(), common::policy())
        .await
        .unwrap();
    let (a, b) = (conn(1), conn(2));
    h.activated(a, Some(Minutes(30))).await;
    h.activated(b, Some(Minutes(30))).await;
    assert!(h.target.state().held.contains(&a) && h.target.state().held.contains(&b));

    // Fill the disk, then import until a write fails: redb first fills the file's free pages.
    let filler = disk.fill();
    let mut acked = Vec::new();
    let mut next = 1000u128;
    let failure = loop {
        let specs: Vec<_> = (next..next + 200).map(|n| spec(conn(n))).collect();
        next += 200;
        match h.engine.import(&caller(), specs).await {
            Ok(results) => {
                for r in results {
                    acked.push(r.expect("a fresh registration is accepted").id());
                }
            }
            Err(e) => break e,
        }
        assert!(next < 1_000_000, "the disk never filled up");
    };
    // A bulk call answers a failed write as a whole, retryable, never per item.
    assert!(failure.is_unavailable(), "{failure:?}");
    let Health::Degraded { cause, .. } = h.engine.health() else {
        panic!("the engine is not degraded after a failed write");
    };
    assert!(
        cause.contains("disk is full") || cause.contains("space"),
        "the cause does not name the full disk: {cause}"
    );
    // While full, a signal is refused quickly, with the cause, and changes nothing.
    let started = Instant::now();
    let refused = h
        .engine
        .deactivate(&caller(), a, None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::Unavailable(_) | Error::OutcomeUnknown(_)),
        "{refused:?}"
    );
    assert!(
        started.elapsed() < HEAL_BOUND,
        "a refusal waited for the outage"
    );

    // Both activations expire while the disk is full.
    h.clock.advance(Duration::from_secs(31 * 60));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(h.engine.health(), Health::Degraded { .. }));

    // The space comes back: the engine heals by itself and revokes both, in time.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    tokio::time::timeout(HEAL_BOUND, async {
        loop {
            let held = h.target.state().held.clone();
            if !held.contains(&a) && !held.contains(&b) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not revoked within {HEAL_BOUND:?} of the space returning"));
    eprintln!("revoked {:?} after the space returned", freed.elapsed());
    assert_eq!(h.engine.health(), Health::Up);

    // Nothing acknowledged was lost, and the store agrees with its log.
    for id in &acked {
        assert!(
            h.engine
                .connection(&caller().tenant, *id)
                .unwrap()
                .is_some(),
            "acknowledged registration {id} lost"
        );
    }
    h.engine.register(&caller(), spec(conn(7))).await.unwrap();
    let report = h.engine.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    let scrape = h.engine.scrape().unwrap();
    assert!(scrape.contains("jitflow_writer_degraded 0"), "{scrape}");
    let attempts = scrape
        .lines()
        .find_map(|l| l.strip_prefix("jitflow_store_reopen_attempts_total "))
        .unwrap();
    assert!(attempts.parse::<u64>().unwrap() >= 1, "{attempts}");
    h.engine.shutdown().await;
}
