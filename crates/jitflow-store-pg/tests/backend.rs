//! The backend through the storage interface, on a real PostgreSQL cluster: rows, ranges both
//! ways and interleaved against a model, snapshot isolation, the log, the schema version check,
//! and lease fencing.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use jitflow_store::backend::{Append, Backend, Key, Log, Partition, Row, Snapshot, WriteError};
use jitflow_store_pg::testing::Cluster;
use jitflow_store_pg::{Config, Error, LeaseOptions, PAGE, PgBackend, schema::SCHEMA_VERSION};

const TABLE: u8 = 2;
const OTHER: u8 = 5;

fn open(url: &str, node: &str, lease: Duration) -> Result<PgBackend, Error> {
    PgBackend::open(Config::new(url, node, LeaseOptions::new(lease)))
}

fn key(order: &[u8]) -> Key {
    // The native bytes differ from the order bytes, so a backend that mixed them up shows.
    let native: Vec<u8> = order.iter().rev().copied().collect();
    Key::new(order, &native)
}

/// A checkpoint row: table, order bytes, value (`None` deletes).
type CheckpointRow = (u8, Vec<u8>, Option<Vec<u8>>);

fn checkpoint(backend: &dyn Backend, rows: &[CheckpointRow]) -> Result<u64, WriteError> {
    let keys: Vec<Key> = rows.iter().map(|(_, k, _)| key(k)).collect();
    let mut it = rows.iter().zip(&keys).map(|((t, _, v), k)| Row {
        table: *t,
        key: k,
        value: v.as_deref(),
    });
    backend.checkpoint(Partition::WHOLE, &mut it)
}

fn append(
    backend: &dyn Backend,
    first: u64,
    count: u64,
    extras: Option<u64>,
) -> Result<(), WriteError> {
    let events: Vec<Vec<u8>> = (first..first + count)
        .map(|n| format!("event {n}").into_bytes())
        .collect();
    let extras_body = extras.map(|n| format!("extras {n}").into_bytes());
    backend.append(
        Partition::WHOLE,
        Append {
            first,
            events: &events,
            extras: extras.zip(extras_body.as_deref()),
        },
    )
}

/// A small deterministic generator (no clock, no global state).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Reads `range` with a pattern of `next` and `next_back` and checks it against the model.
fn check_range(
    snapshot: &dyn Snapshot,
    model: &Model,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    seed: u64,
) {
    let lk = lower.as_ref().map(|k| key(k));
    let uk = upper.as_ref().map(|k| key(k));
    let mut rows = snapshot.range(TABLE, lk.as_ref(), uk.as_ref()).unwrap();
    let mut expected = model
        .range((lower.clone(), upper.clone()))
        .map(|(k, v)| (k.clone(), v.clone()));
    let mut lcg = Lcg(seed);
    // seed 0: forwards only; 1: backwards only; else interleaved.
    loop {
        let back = match seed {
            0 => false,
            1 => true,
            _ => lcg.next().is_multiple_of(3),
        };
        let (got, want) = if back {
            (rows.next_back(), expected.next_back())
        } else {
            (rows.next(), expected.next())
        };
        let got = got.map(|r| {
            let (k, v) = r.unwrap();
            assert_eq!(
                k.native(),
                key(k.order()).native(),
                "native bytes come back"
            );
            (k.order().to_vec(), v.to_vec())
        });
        assert_eq!(got, want, "bounds {lower:?}..{upper:?}, seed {seed}");
        if got.is_none() {
            // Both ends are exhausted.
            assert!(rows.next().is_none() && rows.next_back().is_none());
            break;
        }
    }
}

#[test]
fn rows_ranges_and_the_log_follow_a_model_with_snapshot_isolation() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    let backend = open(&url, "node-1", Duration::from_secs(30)).unwrap();

    // More rows than two pages, with keys that are prefixes of one another.
    let mut model = Model::new();
    let mut rows = Vec::new();
    for i in 0..(2 * PAGE as u32 + 300) {
        let k = (i * 3).to_be_bytes().to_vec();
        let v = format!("v{i}").into_bytes();
        model.insert(k.clone(), v.clone());
        rows.push((TABLE, k, Some(v)));
    }
    for k in [
        vec![0x7f],
        vec![0x7f, 0x00],
        vec![0x7f, 0x00, 0x00],
        vec![0xff; 9],
    ] {
        model.insert(k.clone(), b"prefix".to_vec());
        rows.push((TABLE, k, Some(b"prefix".to_vec())));
    }
    rows.sort_by(|a, b| a.1.cmp(&b.1));
    rows.push((OTHER, vec![1], Some(Vec::new())));
    rows.push((OTHER, vec![2], Some(Vec::new())));
    assert_eq!(checkpoint(&backend, &rows).unwrap(), rows.len() as u64);

    let before = backend.snapshot(Partition::WHOLE).unwrap();
    assert_eq!(before.len(TABLE).unwrap(), model.len() as u64);
    assert_eq!(before.len(OTHER).unwrap(), 2);
    assert_eq!(before.len(7).unwrap(), 0);
    assert_eq!(
        before
            .get(TABLE, &key(&9u32.to_be_bytes()))
            .unwrap()
            .as_deref(),
        Some(&b"v3"[..])
    );
    assert_eq!(before.get(TABLE, &key(&10u32.to_be_bytes())).unwrap(), None);
    assert_eq!(
        before.get(OTHER, &key(&[1])).unwrap().as_deref(),
        Some(&[][..])
    );

    let at = |n: u32| n.to_be_bytes().to_vec();
    let bounds = [
        (Bound::Unbounded, Bound::Unbounded),
        (Bound::Included(at(300)), Bound::Excluded(at(2400))),
        (Bound::Excluded(at(300)), Bound::Included(at(2400))),
        (Bound::Included(at(301)), Bound::Unbounded),
        (Bound::Unbounded, Bound::Included(vec![0x7f, 0x00])),
        (Bound::Excluded(vec![0x7f]), Bound::Unbounded),
        (Bound::Included(at(600)), Bound::Included(at(600))),
        (Bound::Excluded(at(600)), Bound::Excluded(at(603))),
    ];
    for (lower, upper) in bounds {
        for seed in 0..5 {
            check_range(&*before, &model, lower.clone(), upper.clone(), seed);
        }
    }

    // A second checkpoint updates and deletes; the older snapshot keeps its view.
    let mut changes = Vec::new();
    for i in (0..900u32).step_by(7) {
        let k = at(i * 3);
        if i % 2 == 0 {
            changes.push((TABLE, k, None));
        } else {
            changes.push((TABLE, k, Some(b"new".to_vec())));
        }
    }
    let mut after_model = model.clone();
    for (_, k, v) in &changes {
        match v {
            Some(v) => after_model.insert(k.clone(), v.clone()),
            None => after_model.remove(k),
        };
    }
    assert_eq!(
        checkpoint(&backend, &changes).unwrap(),
        changes.len() as u64
    );
    let after = backend.snapshot(Partition::WHOLE).unwrap();
    for seed in 0..3 {
        check_range(&*before, &model, Bound::Unbounded, Bound::Unbounded, seed);
        check_range(
            &*after,
            &after_model,
            Bound::Unbounded,
            Bound::Unbounded,
            seed,
        );
    }
    assert_eq!(before.len(TABLE).unwrap(), model.len() as u64);
    assert_eq!(after.len(TABLE).unwrap(), after_model.len() as u64);

    // The log: batches across a page boundary, extras on some.
    assert_eq!(after.last(Log::Events).unwrap(), 0);
    let mut first = 1;
    let mut extras = 0;
    while first <= 1100 {
        let count = 97.min(1101 - first);
        let x = (first % 2 == 1).then(|| {
            extras += 1;
            extras
        });
        append(&backend, first, count, x).unwrap();
        first += count;
    }
    let log = backend.snapshot(Partition::WHOLE).unwrap();
    // Log records are read as committed, by older snapshots too (their rows keep their view).
    assert_eq!(after.last(Log::Events).unwrap(), 1100);
    check_range(&*before, &model, Bound::Unbounded, Bound::Unbounded, 0);
    assert_eq!(log.last(Log::Events).unwrap(), 1100);
    assert_eq!(log.last(Log::Extras).unwrap(), extras);
    assert_eq!(
        log.record(Log::Events, 777).unwrap().as_deref(),
        Some(&b"event 777"[..])
    );
    assert_eq!(log.record(Log::Events, 0).unwrap(), None);
    assert_eq!(log.record(Log::Events, 1101).unwrap(), None);
    assert_eq!(
        log.record(Log::Extras, 2).unwrap().as_deref(),
        Some(&b"extras 2"[..])
    );
    let all: Vec<(u64, Vec<u8>)> = log
        .records(Log::Events, 3, 1099)
        .unwrap()
        .map(|r| r.map(|(n, b)| (n, b.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(all.len(), 1097);
    assert!(
        all.iter()
            .zip(3..)
            .all(|((n, b), m)| *n == m && *b == format!("event {m}").into_bytes())
    );
    assert_eq!(log.records(Log::Events, 5, 4).unwrap().count(), 0);
    assert_eq!(
        log.records(Log::Extras, 1, u64::MAX).unwrap().count() as u64,
        extras
    );

    // A number already in the log is refused, and nothing of the batch is written.
    assert!(matches!(
        append(&backend, 1100, 2, None),
        Err(WriteError::Failed(_))
    ));
    backend.recover().unwrap();
    assert_eq!(
        backend
            .snapshot(Partition::WHOLE)
            .unwrap()
            .last(Log::Events)
            .unwrap(),
        1100
    );
}

#[test]
fn a_newer_schema_or_another_record_format_is_refused() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    drop(open(&url, "n", Duration::from_secs(5)).unwrap());
    cluster
        .sql(&url, "UPDATE jitflow_schema SET version = 999")
        .unwrap();
    match open(&url, "n", Duration::from_secs(5)) {
        Err(Error::NewerSchema {
            found: 999,
            supported,
        }) => assert_eq!(supported, SCHEMA_VERSION),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    cluster
        .sql(
            &url,
            &format!("UPDATE jitflow_schema SET version = {SCHEMA_VERSION}, format = 99"),
        )
        .unwrap();
    assert!(matches!(
        open(&url, "n", Duration::from_secs(5)),
        Err(Error::RecordFormat { found: 99, .. })
    ));
    cluster
        .sql(&url, "INSERT INTO jitflow_schema VALUES (1, 7)")
        .unwrap();
    assert!(matches!(
        open(&url, "n", Duration::from_secs(5)),
        Err(Error::DamagedSchema { rows: 2 })
    ));
}

#[test]
fn a_node_that_lost_its_lease_writes_nothing() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    // Long enough that a loaded machine does not lose it between renewals by accident.
    let lease = Duration::from_secs(3);
    let a = open(&url, "a", lease).unwrap();
    append(&a, 1, 2, Some(1)).unwrap();
    let a_epoch = a.epoch(Partition::WHOLE).unwrap();

    // While a renews, b cannot take the partition.
    match open(&url, "b", lease) {
        Err(Error::LeaseHeld {
            owner, partition, ..
        }) => {
            assert_eq!((owner.as_str(), partition), ("a", Partition::WHOLE));
        }
        other => panic!("expected LeaseHeld, got {other:?}"),
    }

    // a stalls: its lease expires; first its own writes stop.
    a.pause_renewals();
    let started = Instant::now();
    let b = loop {
        match open(&url, "b", lease) {
            Ok(b) => break b,
            Err(Error::LeaseHeld { .. }) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("b cannot take the expired lease: {e}"),
        }
    };
    assert!(b.epoch(Partition::WHOLE).unwrap() > a_epoch);

    // a's writes fail, fenced; b's go through.
    match append(&a, 3, 2, Some(2)) {
        Err(WriteError::Fenced {
            partition,
            epoch,
            reason,
        }) => {
            assert_eq!((partition, epoch), (Partition::WHOLE, a_epoch));
            assert!(reason.contains("\"b\""), "{reason}");
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert!(matches!(
        checkpoint(&a, &[(TABLE, vec![1], Some(vec![1]))]),
        Err(WriteError::Fenced { .. })
    ));
    // Nor can a take it back while b holds it.
    assert!(matches!(
        a.recover(),
        Err(jitflow_store::open::Error::Backend(_))
    ));
    append(&b, 3, 1, None).unwrap();
    checkpoint(&b, &[(OTHER, vec![9], Some(vec![9]))]).unwrap();

    let s = b.snapshot(Partition::WHOLE).unwrap();
    assert_eq!(s.last(Log::Events).unwrap(), 3);
    assert_eq!(
        s.record(Log::Events, 3).unwrap().as_deref(),
        Some(&b"event 3"[..])
    );
    assert_eq!(
        s.last(Log::Extras).unwrap(),
        1,
        "a's extras record was not written"
    );
    assert_eq!(s.len(TABLE).unwrap(), 0, "a's checkpoint wrote nothing");
    assert_eq!(s.len(OTHER).unwrap(), 1);
}

#[test]
fn an_expired_lease_fences_its_holder_and_a_restart_takes_it_back() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    let a = open(&url, "a", Duration::from_secs(1)).unwrap();
    append(&a, 1, 1, None).unwrap();
    a.pause_renewals();
    std::thread::sleep(Duration::from_millis(1500));
    match append(&a, 2, 1, None) {
        Err(WriteError::Fenced { reason, .. }) => assert!(reason.contains("expired"), "{reason}"),
        other => panic!("expected Fenced, got {other:?}"),
    }

    // The same node opening again (a restart) takes its partition at once, at a new epoch,
    // and fences its former self.
    let first = open(&url, "r", Duration::from_secs(30)).unwrap();
    let again = open(&url, "r", Duration::from_secs(30)).unwrap();
    assert!(again.epoch(Partition::WHOLE) > first.epoch(Partition::WHOLE));
    assert!(matches!(
        append(&first, 2, 1, None),
        Err(WriteError::Fenced { .. })
    ));
    append(&again, 2, 1, None).unwrap();
    let s = again.snapshot(Partition::WHOLE).unwrap();
    assert_eq!(s.last(Log::Events).unwrap(), 2);
    drop(a);
}

#[test]
fn settings_out_of_bounds_are_refused() {
    let lease = LeaseOptions::new(Duration::from_secs(5));
    let mut config = Config::new("host=127.0.0.1", "", lease);
    assert!(matches!(
        PgBackend::open(config.clone()),
        Err(Error::InvalidConfig(_))
    ));
    config.node_id = "n".into();
    config.lease = LeaseOptions::new(Duration::from_millis(10));
    assert!(matches!(
        PgBackend::open(config.clone()),
        Err(Error::InvalidConfig(_))
    ));
    config.lease = lease;
    config.snapshots_max = 0;
    assert!(matches!(
        PgBackend::open(config.clone()),
        Err(Error::InvalidConfig(_))
    ));
    config.snapshots_max = 1;
    config.partitions = vec![Partition(u32::MAX)];
    assert!(matches!(
        PgBackend::open(config.clone()),
        Err(Error::InvalidConfig(_))
    ));
    config.partitions = vec![];
    assert!(matches!(
        PgBackend::open(config.clone()),
        Err(Error::InvalidConfig(_))
    ));
    // A partition past the count, and counts out of bounds.
    config.partition_count = 4;
    config.partitions = vec![Partition(4)];
    assert!(matches!(
        PgBackend::open(config.clone()),
        Err(Error::InvalidConfig(_))
    ));
    config.partitions = vec![Partition(3)];
    for count in [0, jitflow_store_pg::MAX_PARTITIONS + 1] {
        config.partition_count = count;
        assert!(matches!(
            PgBackend::open(config.clone()),
            Err(Error::InvalidConfig(_))
        ));
    }
}

#[test]
fn a_version_1_schema_is_migrated_and_the_partition_count_is_fixed() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    let lease = LeaseOptions::new(Duration::from_secs(5));
    let backend = open(&url, "n", Duration::from_secs(5)).unwrap();
    append(&backend, 1, 3, None).unwrap();
    backend.release().unwrap();
    drop(backend);
    // Back to version 1's layout: no partition count, no nodes' table.
    cluster
        .sql(
            &url,
            "ALTER TABLE jitflow_schema DROP COLUMN partitions; DROP TABLE jitflow_nodes; \
             UPDATE jitflow_schema SET version = 1",
        )
        .unwrap();
    let backend = open(&url, "n", Duration::from_secs(5)).unwrap();
    assert_eq!(
        cluster
            .sql(
                &url,
                "SELECT version || '/' || partitions FROM jitflow_schema"
            )
            .unwrap()
            .trim(),
        format!("{SCHEMA_VERSION}/1")
    );
    // The log written before is still there.
    let snapshot = backend.snapshot(Partition::WHOLE).unwrap();
    assert_eq!(snapshot.last(Log::Events).unwrap(), 3);
    drop(snapshot);
    backend.release().unwrap();
    drop(backend);
    // Its count is 1: a node of another count is refused, before taking any lease.
    let mut config = Config::new(&url, "m", lease);
    config.partition_count = 4;
    match PgBackend::open(config) {
        Err(Error::PartitionCount {
            found: 1,
            configured: 4,
        }) => {}
        other => panic!("expected PartitionCount, got {other:?}"),
    }
    assert_eq!(
        cluster
            .sql(
                &url,
                "SELECT count(*) FROM jitflow_leases WHERE owner = 'm'"
            )
            .unwrap()
            .trim(),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_heartbeat_see_each_other_and_leave() {
    use jitflow_store_pg::Membership;
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    let lease = LeaseOptions::new(Duration::from_secs(2));
    let config = |node: &str| {
        let mut c = Config::new(&url, node, lease);
        c.partition_count = 3;
        c
    };
    let a = Membership::open(&config("a"), "http://a").await.unwrap();
    let b = Membership::open(&config("b"), "http://b").await.unwrap();
    assert!(matches!(
        Membership::open(&config("c"), "").await,
        Err(Error::InvalidConfig(_))
    ));
    a.heartbeat().await.unwrap();
    let view = b.heartbeat().await.unwrap();
    let ids: Vec<&str> = view.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(view.nodes[1].address, "http://b");
    // Nobody holds a lease yet: a gets two partitions, b one.
    assert_eq!(view.assigned("a"), vec![Partition(0), Partition(1)]);
    assert_eq!(view.assigned("b"), vec![Partition(2)]);
    // b takes partition 0's lease: the plan leaves it with b.
    let mut held = config("b");
    held.partitions = vec![Partition(0)];
    let backend = PgBackend::open(held).unwrap();
    let view = b.heartbeat().await.unwrap();
    assert_eq!(view.owner(Partition(0)).map(|n| n.id.as_str()), Some("b"));
    assert_eq!(view.assigned("b"), vec![Partition(0)]);
    assert_eq!(view.assigned("a"), vec![Partition(1), Partition(2)]);
    drop(backend);
    // a leaves: b alone is assigned everything.
    a.leave().await.unwrap();
    let view = b.heartbeat().await.unwrap();
    assert_eq!(view.nodes.len(), 1);
    assert_eq!(view.assigned("b").len(), 3);
    // A node that stops heartbeating ages out after a lease.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let view = a.heartbeat().await.unwrap();
    let ids: Vec<&str> = view.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a"]);
}

#[test]
fn a_released_lease_is_taken_at_once_and_fences_its_former_holder() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    let a = open(&url, "a", Duration::from_secs(600)).unwrap();
    append(&a, 1, 1, None).unwrap();
    a.release().unwrap();
    assert_eq!(a.epoch(Partition::WHOLE), None);
    // No wait for the ten minutes.
    let b = open(&url, "b", Duration::from_secs(600)).unwrap();
    assert!(matches!(
        append(&a, 2, 1, None),
        Err(WriteError::Fenced { .. })
    ));
    append(&b, 2, 1, None).unwrap();
    assert_eq!(
        b.snapshot(Partition::WHOLE)
            .unwrap()
            .last(Log::Events)
            .unwrap(),
        2
    );
}

/// The store calls the backend from inside the engine's async tasks; even on a runtime of one
/// thread, nothing panics or deadlocks: the work runs on the backend's own runtime, and the
/// backend shuts that down without waiting when dropped here.
#[tokio::test(flavor = "current_thread")]
async fn calls_from_inside_a_runtime_neither_panic_nor_block_it() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    let backend = open(&url, "n", Duration::from_secs(30)).unwrap();
    append(&backend, 1, 3, Some(1)).unwrap();
    checkpoint(&backend, &[(TABLE, vec![1], Some(vec![2]))]).unwrap();
    let snapshot = backend.snapshot(Partition::WHOLE).unwrap();
    assert_eq!(snapshot.last(Log::Events).unwrap(), 3);
    assert_eq!(snapshot.len(TABLE).unwrap(), 1);
    // The runtime still runs tasks between the calls.
    tokio::task::yield_now().await;
    drop(snapshot);
    drop(backend);
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Readers share one snapshot until a checkpoint ends or it is `SHARED_MAX_AGE` old; a
/// snapshot taken after a checkpoint sees its rows, and the shared one kept its view.
#[test]
fn snapshots_are_shared_between_checkpoints() {
    let Some(cluster) = Cluster::shared() else {
        return;
    };
    let url = cluster.database().unwrap();
    let backend = open(&url, "node-1", Duration::from_secs(30)).unwrap();
    let same = |a: &std::sync::Arc<dyn Snapshot>, b: &std::sync::Arc<dyn Snapshot>| {
        std::ptr::addr_eq(std::sync::Arc::as_ptr(a), std::sync::Arc::as_ptr(b))
    };
    checkpoint(&backend, &[(TABLE, vec![1], Some(b"one".to_vec()))]).unwrap();
    let first = backend.snapshot(Partition::WHOLE).unwrap();
    let second = backend.snapshot(Partition::WHOLE).unwrap();
    assert!(
        same(&first, &second),
        "no checkpoint between them: one snapshot"
    );
    assert_eq!(
        first.get(TABLE, &key(&[1])).unwrap().as_deref(),
        Some(&b"one"[..])
    );
    checkpoint(&backend, &[(TABLE, vec![1], Some(b"two".to_vec()))]).unwrap();
    let third = backend.snapshot(Partition::WHOLE).unwrap();
    assert!(!same(&first, &third), "a checkpoint ended: a new snapshot");
    assert_eq!(
        third.get(TABLE, &key(&[1])).unwrap().as_deref(),
        Some(&b"two"[..])
    );
    // The shared one keeps its view (its point read is remembered, and its transaction too).
    assert_eq!(
        second.get(TABLE, &key(&[1])).unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(second.len(TABLE).unwrap(), 1);
    std::thread::sleep(jitflow_store_pg::SHARED_MAX_AGE + Duration::from_millis(50));
    let fourth = backend.snapshot(Partition::WHOLE).unwrap();
    assert!(!same(&third, &fourth), "too old to share: a new snapshot");
    assert_eq!(
        fourth.get(TABLE, &key(&[1])).unwrap().as_deref(),
        Some(&b"two"[..])
    );
}
