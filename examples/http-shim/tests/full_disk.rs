//! The reproduction, over HTTP: the shim's data directory on a small tmpfs, two
//! activations granted, the disk filled by another file. Writes answer 503 with `Retry-After`
//! and the cause (a bulk import as a whole, never per-item 500s), `/health` says degraded;
//! once the file is deleted the engine heals by itself, both grants are revoked at their
//! expiry plus a bound, `/health` is up again and nothing acknowledged is lost.
//!
//! Needs root to mount the tmpfs (CI runs as root and fails if it cannot).

mod common;

use std::time::{Duration, Instant};

use common::{ALICE_CONN, BOB_CONN, Harness, error_text, spec};
use jitflow_core::connection::ConnectionState;
use jitflow_store::testing::Tmpfs;
use serde_json::json;

/// From the space returning to both revokes: the writer's longest backoff (2 s), the reopen,
/// the timers' commits and the revoke calls, with room for a loaded machine.
const HEAL_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_heals_by_itself() {
    let Some(disk) = Tmpfs::mount("32m") else {
        return;
    };
    let h = Harness::on_data_dir(disk.path()).await;
    h.seed().await;
    let admin = h.admin();
    let bob = h.token(
        common::TENANT,
        "bob",
        common::ALL_ACTIVATION_SCOPES,
        &[jitflow_shim::auth::Level::User],
    );
    for (conn, token) in [(ALICE_CONN, h.alice()), (BOB_CONN, bob)] {
        h.expect(
            202,
            "POST",
            "/jit-activations/v1/activate",
            Some(&token),
            Some(json!({"connectionId": conn, "activationPeriodMins": 1})),
        )
        .await;
        h.wait_state(conn, ConnectionState::Active).await;
    }

    let filler = disk.fill();
    // Import until a write fails: redb first fills the free pages of its file.
    let mut imported = Vec::new();
    let mut n = 0u32;
    let (status, body, headers) = loop {
        let ids: Vec<String> = (n..n + 100)
            .map(|i| format!("{i:08x}-2222-4222-8222-{i:012x}"))
            .collect();
        n += 100;
        assert!(n < 1_000_000, "the disk never filled up");
        let specs: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let mut s = spec(id, "carol", "JIT");
                s["accountId"] = json!(format!("carol-{}", n as usize + i));
                s
            })
            .collect();
        let (status, body, headers) = h
            .call(
                "POST",
                "/jitflow/v1/connections",
                Some(&admin),
                Some(json!({"connections": specs})),
            )
            .await;
        if status != 200 {
            break (status, body, headers);
        }
        for r in body["results"].as_array().unwrap() {
            assert_eq!(r["status"], 200, "an item answered alone: {r}");
        }
        imported.extend(ids);
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    let text = error_text(&body);
    assert!(text.contains("disk is full"), "{text}");

    let (status, body, _) = h.call("GET", "/health", None, None).await;
    assert_eq!(status, 503, "{body}");
    let text = error_text(&body);
    assert!(
        text.contains("degraded") && text.contains("disk is full"),
        "{text}"
    );

    // Both activations expire while the disk is full.
    h.clock.advance(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(200)).await;

    std::fs::remove_file(filler).unwrap();
    let freed = Instant::now();
    tokio::time::timeout(HEAL_BOUND, async {
        while !h.target.0.held.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not revoked within {HEAL_BOUND:?} of the space returning"));
    eprintln!(
        "both revoked {:?} after the space returned",
        freed.elapsed()
    );
    let (status, body, _) = h.call("GET", "/health", None, None).await;
    assert_eq!(status, 200, "{body}");
    for id in &imported {
        assert!(h.connection(id).is_some(), "acknowledged import {id} lost");
    }
    let report = h.engine().verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    h.stop().await;
}
