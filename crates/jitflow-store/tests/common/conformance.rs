//! The store's conformance suite, one suite for every backend: a model-based test
//! (proptest-state-machine) that appends the model world's batches, checkpoints, crashes
//! (drops the store with rows in its hot layer) and reopens, and after every step checks the
//! store against the model: every connection, both ways of the connection list's order, the
//! timer index, the intents, the log, and a clean `verify`. A backend's test crate names how
//! to make an empty store location and open a store there ([`Location`]); the redb file runs
//! it in `tests/conformance.rs`, PostgreSQL in `jitflow-store-pg/tests/conformance.rs`.
#![allow(dead_code)] // Each test crate uses a different part.

use std::marker::PhantomData;

use jitflow_core::connection::{Connection, ConnectionType};
use jitflow_store::Store;
use jitflow_store::batch::{Batch, Entry};
use jitflow_store::open::Options;
use jitflow_store::query::{CONNECTIONS, MAX_LIMIT, Query};
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};

use crate::common::{Action, Op, World, all_events, stored_intents, stored_timers};

/// Where a store lives, for one test case.
pub trait Location: Sized + 'static {
    /// A new, empty location.
    fn new() -> Self;
    /// Opens the store there (again).
    fn open(&self, options: Options) -> Store;
}

/// Tenants of the model world.
pub const TENANTS: usize = 2;
/// Connections per tenant in this suite.
pub const SLOTS: usize = 8;

/// One action on a connection.
pub fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => Just(Action::Register(ConnectionType::Jit)),
        1 => Just(Action::Update),
        1 => Just(Action::Remove),
        1 => Just(Action::ChangeType(ConnectionType::Standing)),
        1 => Just(Action::ChangeType(ConnectionType::Jit)),
        3 => proptest::option::of(1u32..300).prop_map(Action::Activate),
        1 => Just(Action::Deactivate),
        2 => Just(Action::FireTimer),
    ]
}

/// One step of the world over `slots` connections per tenant: mostly the natural next steps.
pub fn op(slots: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..TENANTS, 0..slots, any::<u64>())
            .prop_map(|(tenant, slot, roll)| Op::Advance { tenant, slot, roll }),
        3 => (0..TENANTS, 0..slots, action())
            .prop_map(|(tenant, slot, action)| Op::Act { tenant, slot, action }),
        2 => (1u32..120).prop_map(|minutes| Op::Tick { minutes }),
    ]
}

/// [`op`], and now and then a new policy.
fn op_or_policy() -> impl Strategy<Value = Op> {
    prop_oneof![
        17 => op(SLOTS),
        1 => (0..TENANTS, 5u32..200)
            .prop_map(|(tenant, default_period)| Op::PutPolicy { tenant, default_period }),
    ]
}

/// A step of the suite.
pub fn step() -> BoxedStrategy<Step> {
    prop_oneof![
        6 => proptest::collection::vec(op_or_policy(), 1..40).prop_map(Step::Ops),
        2 => Just(Step::Checkpoint),
        2 => Just(Step::Crash),
        1 => prop_oneof![Just(8usize), Just(64), Just(4096)].prop_map(Step::ReopenBounded),
    ]
    .boxed()
}

/// A store file in a temporary folder.
pub struct File(tempfile::TempDir);

impl Location for File {
    fn new() -> File {
        File(tempfile::tempdir().unwrap())
    }

    fn open(&self, options: Options) -> Store {
        Store::open(self.0.path().join("c.redb"), options).unwrap()
    }
}

#[derive(Debug, Clone)]
pub enum Step {
    /// Appended in batches of up to 7.
    Ops(Vec<Op>),
    Checkpoint,
    /// Dropped without a checkpoint, then opened again: the open replays the log tail.
    Crash,
    /// Opened again with a layer bound of `bound` rows, so the replay checkpoints on the way.
    ReopenBounded(usize),
}

pub struct Reference;

impl ReferenceStateMachine for Reference {
    type State = World;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<World> {
        Just(World::new("c", TENANTS, 1)).boxed()
    }

    fn transitions(_: &World) -> BoxedStrategy<Step> {
        step()
    }

    fn apply(world: World, step: &Step) -> World {
        model(world, step)
    }
}

/// The model after `step`.
pub fn model(mut world: World, step: &Step) -> World {
    if let Step::Ops(ops) = step {
        for &op in ops {
            world.apply(op);
        }
    }
    world
}

pub struct Sut<L> {
    location: L,
    store: Option<Store>,
    /// The entries' source: a copy of the model, stepped with the same operations.
    world: World,
    options: Options,
    /// How many events the world appended.
    events: u64,
}

impl<L: Location> Sut<L> {
    /// A store on a new location, for the model's `world`.
    pub fn new(world: &World) -> Sut<L> {
        let location = L::new();
        let options = Options::default();
        let store = location.open(options.clone());
        Sut {
            location,
            store: Some(store),
            world: world.clone(),
            options,
            events: 0,
        }
    }

    /// The open store.
    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    fn reopen(&mut self) {
        drop(self.store.take());
        self.store = Some(self.location.open(self.options.clone()));
    }
}

/// The suite over the backend of `L`.
pub struct Machine<L>(PhantomData<L>);

impl<L: Location> StateMachineTest for Machine<L> {
    type SystemUnderTest = Sut<L>;
    type Reference = Reference;

    fn init_test(world: &World) -> Sut<L> {
        Sut::new(world)
    }

    fn apply(sut: Sut<L>, _: &World, step: Step) -> Sut<L> {
        run(sut, step)
    }

    fn check_invariants(sut: &Sut<L>, world: &World) {
        check(sut, world);
    }
}

/// Runs `step` on the store.
pub fn run<L: Location>(mut sut: Sut<L>, step: Step) -> Sut<L> {
    match step {
        Step::Ops(ops) => {
            let entries: Vec<Entry> = ops.iter().filter_map(|&op| sut.world.apply(op)).collect();
            for chunk in entries.chunks(7) {
                let mut batch = Batch::new();
                for entry in chunk {
                    batch.push(entry.clone());
                }
                let appended = sut.store().append_batch(&batch).unwrap();
                sut.events = appended.last;
            }
        }
        Step::Checkpoint => {
            sut.store().checkpoint(None).unwrap();
            assert_eq!(sut.store().stats().layer_entries, 0);
        }
        Step::Crash => {
            let before = sut.store().stats();
            sut.reopen();
            let after = sut.store().stats();
            // Nothing acknowledged is lost; the tail is replayed from the checkpoint.
            assert_eq!(after.sequence, before.sequence);
            assert!(after.checkpoint >= before.checkpoint);
        }
        Step::ReopenBounded(bound) => {
            sut.options.layer_entries_max = bound;
            let before = sut.store().stats();
            sut.reopen();
            assert_eq!(sut.store().stats().sequence, before.sequence);
            assert!(sut.store().stats().layer_entries <= bound as u64);
        }
    }
    sut
}

/// Checks the store against the model.
pub fn check<L: Location>(sut: &Sut<L>, world: &World) {
    let store = sut.store();
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    assert_eq!(store.stats().sequence, sut.events);
    assert_eq!(all_events(store).len() as u64, sut.events);
    let reader = store.reader().unwrap();
    for (t, tenant) in world.tenants.iter().enumerate() {
        let expected: Vec<Connection> = tenant.connections.values().cloned().collect();
        let stored = reader
            .connections(&tenant.id, None, jitflow_store::read::MAX_READ_LIMIT)
            .unwrap();
        assert_eq!(stored, expected, "tenant {t}");
        // The list in both orders: ranges read forwards and backwards.
        for (sorters, reversed) in [("id", false), ("-id", true)] {
            let limit = MAX_LIMIT.to_string();
            let query = Query::parse(
                CONNECTIONS,
                None,
                Some(sorters),
                None,
                Some(&limit),
                None,
                None,
            )
            .unwrap();
            let page = reader.query_connections(&tenant.id, &query, None).unwrap();
            let mut ids: Vec<_> = expected.iter().map(|c| c.id()).collect();
            ids.sort_by_key(|id| id.to_string());
            if reversed {
                ids.reverse();
            }
            let got: Vec<_> = page.items.iter().map(|c| c.id()).collect();
            assert_eq!(got, ids, "tenant {t}, sorters {sorters}");
        }
    }
    assert_eq!(stored_timers(store), world.timers());
    assert_eq!(stored_intents(store), world.intents());
}

/// Cases to run: `PROPTEST_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
