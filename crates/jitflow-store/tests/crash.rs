//! Crash consistency: a child process appends batches as fast as it can and reports each
//! acknowledged batch; the test kills it with SIGKILL at random moments, reopens the file and
//! checks that every acknowledged batch is there whole, that no partial batch is visible, and
//! that the projections and indexes equal the replayed log.
//!
//! The child is this test binary run again (`std::env::current_exe()`) with the filter
//! `crash_child --exact` and the environment variable [`CHILD_STORE`] naming the store file:
//! with it set, [`crash_child`] is the child's main loop; without it (a normal test run) it
//! returns at once. One file, no extra target, and the child runs exactly the code under test.
//!
//! The child checkpoints whenever one is due, with a small hot layer in most rounds, so kills
//! land between a log commit and its checkpoint, inside a checkpoint, and inside the open's
//! tail replay; the check after each kill reopens the file (replaying the log after its
//! checkpoint) and runs `verify`.
//!
//! SIGKILL ends the process at an arbitrary instruction (mid-commit, mid-fsync), but the
//! operating system keeps what it already wrote: this tests redb's commit protocol against
//! process crashes, not against lost writes of a power cut (`full_disk.rs` injects failed
//! writes in the middle of commits).

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Op, World};
use jitflow_core::time::Timestamp;
use jitflow_store::Store;
use jitflow_store::batch::Batch;
use jitflow_store::idempotency::{Idempotency, KeyPut};
use jitflow_store::open::Options;

/// Set in the child's environment: the store file to append to.
const CHILD_STORE: &str = "JITFLOW_CRASH_CHILD_STORE";
/// Set in the child's environment: the round number (seeds its ids and choices).
const CHILD_ROUND: &str = "JITFLOW_CRASH_CHILD_ROUND";
/// Most rounds (`JITFLOW_CRASH_ROUNDS`, default 30); the test also stops starting rounds after
/// [`TIME_BUDGET`] unless the variable is set.
fn rounds() -> (u64, bool) {
    match std::env::var("JITFLOW_CRASH_ROUNDS") {
        Ok(v) => (
            v.parse()
                .expect("JITFLOW_CRASH_ROUNDS is a number of rounds"),
            true,
        ),
        Err(_) => (30, false),
    }
}
/// Fewest rounds for the test to count.
const MIN_ROUNDS: u64 = 12;
const TIME_BUDGET: Duration = Duration::from_secs(15);
/// A child whose parent is gone stops by itself after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);
/// Connections per tenant the child cycles through.
const SLOTS: u64 = 24;
const TENANTS: u64 = 3;

fn options(round: u64) -> Options {
    // Half the rounds commit without quick repair, so both recovery paths of redb run. Two
    // rounds in three keep a small hot layer, so checkpoints run every few batches and the kill
    // lands between a commit and its checkpoint, or inside a checkpoint; the third keeps the
    // default layer, so the next round's open has a long tail to replay (and may be killed
    // inside that replay, which checkpoints at the bound as it goes).
    let layer_entries_max = if round.is_multiple_of(3) {
        jitflow_store::open::DEFAULT_LAYER_ENTRIES_MAX
    } else {
        64 + (round as usize * 37) % 256
    };
    Options {
        quick_repair: round.is_multiple_of(2),
        layer_entries_max,
        ..Options::default()
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The child: appends batches of realistic lifecycle events until killed, printing
/// `ack <first> <last> <key>` (flushed) after each commit.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_STORE) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let store = Store::open(&path, options(round)).unwrap();
    let mut world = World::new("crash", TENANTS as usize, round + 1);
    world.load_policies(&store);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (round + 1));
    let mut out = std::io::stdout().lock();
    // On a line of its own: libtest has printed "test crash_child ... " without a newline.
    writeln!(out, "\nready").unwrap();
    out.flush().unwrap();
    let end = Instant::now() + CHILD_LIFETIME;
    let mut n = 0u64;
    while Instant::now() < end {
        let mut batch = Batch::new();
        if n.is_multiple_of(16) {
            let op = Op::PutPolicy {
                tenant: (n / 16 % TENANTS) as usize,
                default_period: 30 + (n % 60) as u32,
            };
            batch.extend_from(world.apply(op));
        }
        for _ in 0..(4 + rng.next() % 12) {
            let tenant = (rng.next() % TENANTS) as usize;
            let slot = (rng.next() % SLOTS) as usize;
            let roll = rng.next();
            batch.extend_from(world.advance(tenant, slot, roll));
        }
        world.apply(Op::Tick {
            minutes: (rng.next() % 3) as u32,
        });
        let key = format!("r{round}-b{n}");
        batch.push_key(KeyPut {
            tenant: world.tenants[0].id.clone(),
            key: key.clone(),
            record: Idempotency {
                fingerprint: n,
                result: key.clone().into_bytes(),
                expires_at: Timestamp::MAX,
            },
        });
        let appended = store.append_batch(&batch).unwrap();
        writeln!(out, "ack {} {} {key}", appended.first, appended.last).unwrap();
        out.flush().unwrap();
        // As the engine's writer does, after answering.
        if store.checkpoint_due() {
            store.checkpoint(None).unwrap();
        }
        n += 1;
    }
}

trait ExtendFrom {
    fn extend_from(&mut self, entry: Option<jitflow_store::batch::Entry>);
}

impl ExtendFrom for Batch {
    fn extend_from(&mut self, entry: Option<jitflow_store::batch::Entry>) {
        if let Some(e) = entry {
            self.push(e);
        }
    }
}

/// An acknowledged batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Ack {
    first: u64,
    last: u64,
    key: String,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    let key = parts.next()?.to_owned();
    Some(Ack { first, last, key })
}

/// Checks the reopened store against every batch acknowledged so far; `before` is where the log
/// ended when the round started. Returns the last sequence and whether the batch in flight at
/// the kill was committed unacknowledged.
fn check(path: &Path, acks: &[Ack], before: u64, round: u64) -> (u64, bool) {
    let store = Store::open(path, Options::default()).unwrap();
    let reader = store.reader().unwrap();
    let last = reader.last_sequence().unwrap();
    let tenant = jitflow_core::id::TenantId::parse("crash-0").unwrap();
    for ack in acks {
        assert!(
            last >= ack.last,
            "round {round}: acknowledged {ack:?} lost (log ends at {last})"
        );
        let event = reader.event(ack.last).unwrap().unwrap();
        assert_eq!(
            (event.batch_first, event.batch_last),
            (ack.first, ack.last),
            "round {round}: {ack:?} is not stored as one batch"
        );
        let record = reader
            .idempotency(&tenant, &ack.key, Timestamp::EPOCH)
            .unwrap();
        assert!(record.is_some(), "round {round}: key of {ack:?} lost");
    }
    // At most the one batch in flight at this round's kill is committed without an
    // acknowledgement. (An earlier round's may be too, so count from where this round began.)
    let acked_end = acks.iter().map(|a| a.last).max().unwrap_or(0).max(before);
    let in_flight_committed = last > acked_end;
    if in_flight_committed {
        let tail = reader.event(last).unwrap().unwrap();
        assert_eq!(
            tail.batch_first,
            acked_end + 1,
            "round {round}: more than one unacknowledged batch after {acked_end}"
        );
    }
    drop(reader);
    // verify: contiguous sequences, whole batches (the log does not end inside one), and
    // projections, stream index, timers and intents equal to the replayed log.
    let report = store.verify().unwrap();
    assert!(
        report.is_clean(),
        "round {round}: {:#?}",
        &report.differences[..report.differences.len().min(20)]
    );
    (last, in_flight_committed)
}

#[test]
fn acknowledged_batches_survive_sigkill_whole() {
    if std::env::var_os(CHILD_STORE).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    drop(Store::open(&path, Options::default()).unwrap());
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut acks: Vec<Ack> = Vec::new();
    let started = Instant::now();
    let mut round = 0;
    let mut killed_mid_open = 0;
    let mut unacknowledged_commits = 0;
    let mut log_end = 0;
    let (rounds, all_rounds) = rounds();
    while round < rounds && (round < MIN_ROUNDS || all_rounds || started.elapsed() < TIME_BUDGET) {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_STORE, &path)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines: Vec<String> = Vec::new();
        if round % 6 == 5 {
            // Now and then, kill it early: during start-up, the open (and its repair) or
            // its first commit.
            std::thread::sleep(Duration::from_millis(rng.next() % 40));
            killed_mid_open += 1;
        } else {
            // Wait until the store is open, then let it append for a random while.
            loop {
                let line = rx
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the child did not open the store");
                let ready = line == "ready";
                lines.push(line);
                if ready {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(5 + rng.next() % 150));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the child ended by itself ({status}), not by SIGKILL"
        );
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let before = acks.len();
        acks.extend(lines.iter().filter_map(|l| parse_ack(l)));
        let (last, in_flight_committed) = check(&path, &acks, log_end, round);
        log_end = last;
        unacknowledged_commits += u64::from(in_flight_committed);
        eprintln!(
            "round {round}: {} batches acknowledged, log at {last}",
            acks.len() - before
        );
        round += 1;
    }
    assert!(round >= MIN_ROUNDS.min(rounds));
    let distinct: HashSet<&Ack> = acks.iter().collect();
    assert_eq!(distinct.len(), acks.len());
    assert!(
        acks.len() as u64 >= round,
        "the children acknowledged only {} batches in {round} rounds",
        acks.len()
    );
    eprintln!(
        "{round} rounds ({killed_mid_open} killed early; {unacknowledged_commits} killed between \
         a commit and its acknowledgement), {} acknowledged batches, {:?}",
        acks.len(),
        started.elapsed()
    );
}
