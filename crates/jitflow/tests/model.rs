//! Model-based property test of the engine: random signals, time advances, target outages and
//! restarts against a few connections, then a drain (the target recovers and time passes).
//!
//! Checked against jitflow-core's model of the lifecycle:
//! - every answer is what the core allows: a refusal is a typed rejection, never a storage or
//!   unknown-outcome error;
//! - after the drain, every acknowledged activation exists and has ended, every connection is at
//!   rest, and the target holds no access;
//! - replaying the committed log with the core's `evolve` reproduces every stored projection,
//!   the timer index and the intents (`Store::verify` is clean), across every restart.

mod common;

use std::time::Duration;

use common::{Harness, caller, conn, spec};
use jitflow::Error;
use jitflow_core::id::ActivationId;
use jitflow_core::time::Minutes;
use proptest::prelude::*;

const CONNECTIONS: u128 = 3;

#[derive(Debug, Clone)]
enum Op {
    Activate(u128, Option<u32>),
    Extend(u128, Option<u32>),
    Deactivate(u128),
    /// Moves the clock by this many seconds.
    Advance(u32),
    /// The target fails the next `grants` grants and `revokes` revokes.
    Outage {
        grants: u32,
        revokes: u32,
    },
    /// Lets the engine run until its queues are quiet.
    Settle,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let c = || 0..CONNECTIONS;
    prop_oneof![
        4 => (c(), proptest::option::of(1u32..300)).prop_map(|(c, p)| Op::Activate(c, p)),
        2 => (c(), proptest::option::of(1u32..30)).prop_map(|(c, p)| Op::Extend(c, p)),
        2 => c().prop_map(Op::Deactivate),
        3 => prop_oneof![1u32..60, 60u32..20_000].prop_map(Op::Advance),
        1 => (0u32..4, 0u32..6).prop_map(|(grants, revokes)| Op::Outage { grants, revokes }),
        2 => Just(Op::Settle),
        1 => Just(Op::Restart),
    ]
}

/// Waits until nothing changes for a moment: every effect in flight has reported.
async fn settle(h: &Harness) {
    let mut events = h.engine.subscribe(h.engine.last_sequence().unwrap());
    while tokio::time::timeout(Duration::from_millis(50), events.next())
        .await
        .is_ok()
    {}
}

fn acceptable(e: &Error) -> bool {
    matches!(e, Error::Rejected(_))
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::new(&dir).await;
    for n in 0..CONNECTIONS {
        h.engine.register(&caller(), spec(conn(n))).await.unwrap();
    }
    let mut acked: Vec<ActivationId> = Vec::new();
    for op in ops {
        match op {
            Op::Activate(c, p) => match h
                .engine
                .activate(&caller(), conn(c), p.map(Minutes), None, None)
                .await
            {
                Ok(a) => acked.push(a.id),
                Err(e) => assert!(acceptable(&e), "{e:?}"),
            },
            Op::Extend(c, p) => {
                if let Err(e) = h
                    .engine
                    .extend(&caller(), conn(c), p.map(Minutes), None, None)
                    .await
                {
                    assert!(acceptable(&e), "{e:?}");
                }
            }
            Op::Deactivate(c) => {
                if let Err(e) = h.engine.deactivate(&caller(), conn(c), None, None).await {
                    assert!(acceptable(&e), "{e:?}");
                }
            }
            Op::Advance(secs) => h.clock.advance(Duration::from_secs(secs.into())),
            Op::Outage { grants, revokes } => {
                let mut s = h.target.state();
                s.fail_grants = grants;
                s.fail_revokes = revokes;
            }
            Op::Settle => settle(&h).await,
            Op::Restart => {
                h = h.restart().await;
                let report = h.engine.verify().unwrap();
                assert!(report.is_clean(), "after restart: {report:?}");
            }
        }
    }
    // Drain: the target recovers; time passes in steps until every connection is at rest.
    {
        let mut s = h.target.state();
        s.fail_grants = 0;
        s.fail_revokes = 0;
    }
    for _ in 0..200 {
        settle(&h).await;
        let busy = (0..CONNECTIONS).any(|n| !h.connection(conn(n)).state.is_at_rest());
        if !busy {
            break;
        }
        h.clock.advance(Duration::from_secs(600));
    }
    let tenant = caller().tenant;
    for n in 0..CONNECTIONS {
        let c = h.connection(conn(n));
        assert!(
            c.state.is_at_rest(),
            "connection {n} never came to rest: {c:?}"
        );
        assert!(
            c.timers().is_empty() && c.pending_effects().is_empty(),
            "{c:?}"
        );
    }
    for id in &acked {
        let a = h.engine.activation(&tenant, *id).unwrap();
        let a = a.unwrap_or_else(|| panic!("acknowledged activation {id} lost"));
        assert!(a.status.is_terminal(), "{a:?}");
    }
    assert!(
        h.target.state().held.is_empty(),
        "access left on the target"
    );
    let report = h.engine.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    h.engine.shutdown().await;
}

proptest! {
    // Each case opens real store files and commits with fsync: a few dozen cases keep the
    // suite within seconds on two cores.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_engine_follows_the_core(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops));
    }
}
