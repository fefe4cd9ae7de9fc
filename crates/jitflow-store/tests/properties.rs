//! Property tests: random valid event sequences (random commands driven through the core's
//! `decide`), appended in random batches, read back whole; replay equals the projections; the
//! timer index equals the timers the connections imply; the intents equal the connections with
//! pending effects.

mod common;

use std::collections::BTreeMap;

use common::{Action, Op, World, all_events, stored_intents, stored_timers};
use jitflow_core::activation::Activation;
use jitflow_core::connection::ConnectionType;
use jitflow_core::id::{ActivationId, ConnectionId, TenantId};
use jitflow_core::lifecycle::Event;
use jitflow_core::policy::Policy;
use jitflow_store::Store;
use jitflow_store::batch::{Appended, Batch, Entry};
use jitflow_store::codec::{Payload, Stream};
use jitflow_store::open::Options;
use jitflow_store::read::StreamEvent;
use jitflow_store::timers::Due;
use proptest::prelude::*;

const TENANTS: usize = 2;
const SLOTS: usize = 4;

fn kind() -> impl Strategy<Value = ConnectionType> {
    prop_oneof![
        6 => Just(ConnectionType::Jit),
        2 => Just(ConnectionType::Standing),
        1 => Just(ConnectionType::Na),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => kind().prop_map(Action::Register),
        1 => Just(Action::Update),
        1 => Just(Action::Remove),
        2 => kind().prop_map(Action::ChangeType),
        4 => proptest::option::of(1u32..300).prop_map(Action::Activate),
        2 => proptest::option::of(1u32..60).prop_map(Action::Extend),
        2 => Just(Action::Deactivate),
        3 => any::<bool>().prop_map(|pass| Action::Validate { pass }),
        4 => (any::<bool>(), any::<bool>()).prop_map(|(ok, retryable)| Action::Grant { ok, retryable }),
        4 => any::<bool>().prop_map(|ok| Action::Revoke { ok }),
        2 => any::<bool>().prop_map(|ok| Action::StandingRevoke { ok }),
        4 => Just(Action::FireTimer),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        16 => (0..TENANTS, 0..SLOTS, any::<u64>())
            .prop_map(|(tenant, slot, roll)| Op::Advance { tenant, slot, roll }),
        4 => (0..TENANTS, 0..SLOTS, action())
            .prop_map(|(tenant, slot, action)| Op::Act { tenant, slot, action }),
        1 => (1u32..120).prop_map(|minutes| Op::Tick { minutes }),
        1 => (0..TENANTS, 1u32..240)
            .prop_map(|(tenant, default_period)| Op::PutPolicy { tenant, default_period }),
    ]
}

/// A store after appending the entries the ops produce, cut into batches of the given sizes.
struct Run {
    world: World,
    store: Store,
    batches: Vec<(Appended, Vec<Entry>)>,
}

/// How a run checkpoints: the hot layer's bound (an append at the bound checkpoints first) and,
/// cycled over the batches, whether to checkpoint after each.
#[derive(Debug, Clone)]
struct Checkpoints {
    layer_entries_max: usize,
    after: Vec<bool>,
}

fn checkpoints() -> impl Strategy<Value = Checkpoints> {
    (
        prop_oneof![Just(usize::MAX), 1usize..64],
        proptest::collection::vec(any::<bool>(), 1..8),
    )
        .prop_map(|(layer_entries_max, after)| Checkpoints {
            layer_entries_max,
            after,
        })
}

fn run(ops: &[Op], sizes: &[usize], checkpoints: &Checkpoints) -> Run {
    let mut world = World::new("prop", TENANTS, 1);
    let options = Options {
        layer_entries_max: checkpoints.layer_entries_max,
        ..Options::default()
    };
    let store = Store::open_with_backend(redb::backends::InMemoryBackend::new(), options).unwrap();
    let mut after = checkpoints.after.iter().cycle();
    let entries: Vec<Entry> = ops.iter().filter_map(|&op| world.apply(op)).collect();
    let mut batches = Vec::new();
    let mut rest = entries.as_slice();
    let mut size = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*size.next().unwrap()).min(rest.len());
        let (now, later) = rest.split_at(n);
        rest = later;
        let mut batch = Batch::new();
        for e in now {
            batch.push(e.clone());
        }
        let appended = store.append_batch(&batch).unwrap();
        batches.push((appended, now.to_vec()));
        if *after.next().unwrap() {
            store.checkpoint(None).unwrap();
        }
    }
    Run {
        world,
        store,
        batches,
    }
}

fn all_stream(store: &Store, tenant: &TenantId, stream: Stream) -> Vec<StreamEvent> {
    let reader = store.reader().unwrap();
    let mut out: Vec<StreamEvent> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.version);
        let page = reader.stream(tenant, stream, after, 3).unwrap();
        if page.is_empty() {
            break;
        }
        out.extend(page);
    }
    out
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 0..160)
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..16, 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every appended event reads back, in order, whole batch by whole batch, through the log,
    /// each connection's, activation's and policy's stream, and the projections.
    #[test]
    fn appended_batches_read_back(ops in ops(), sizes in sizes(), checkpoints in checkpoints()) {
        let Run { world, store, batches } = run(&ops, &sizes, &checkpoints);
        let reader = store.reader().unwrap();

        // The log: sequences contiguous from 1, batch bounds as appended, payloads as given.
        let log = all_events(&store);
        let mut expected_next = 1;
        let mut i = 0;
        for (appended, entries) in &batches {
            prop_assert_eq!(appended.first, expected_next);
            prop_assert_eq!(appended.len(), entries.len() as u64);
            expected_next = appended.last + 1;
            for entry in entries {
                let e = &log[i];
                prop_assert_eq!(e.sequence, i as u64 + 1);
                prop_assert_eq!((e.batch_first, e.batch_last), (appended.first, appended.last));
                prop_assert_eq!(&e.tenant, entry.tenant());
                match (entry, &e.payload) {
                    (Entry::Connection { event, .. }, Payload::Connection(stored)) => prop_assert_eq!(event, stored),
                    (Entry::Policy { event, .. }, Payload::Policy(stored)) => prop_assert_eq!(event, stored),
                    (entry, payload) => prop_assert!(false, "{entry:?} stored as {payload:?}"),
                }
                i += 1;
            }
        }
        prop_assert_eq!(log.len(), i);
        prop_assert_eq!(reader.last_sequence().unwrap(), i as u64);

        // The streams, from the entries.
        let mut connections: BTreeMap<(TenantId, ConnectionId), Vec<Event>> = BTreeMap::new();
        let mut activations: BTreeMap<(TenantId, ActivationId), Vec<Event>> = BTreeMap::new();
        let mut last_activation: BTreeMap<(TenantId, ActivationId), Activation> = BTreeMap::new();
        let mut policies: BTreeMap<TenantId, Vec<Policy>> = BTreeMap::new();
        for entry in batches.iter().flat_map(|(_, e)| e) {
            match entry {
                Entry::Connection { tenant, event, after } => {
                    connections.entry((tenant.clone(), event.connection)).or_default().push(event.clone());
                    if let Some(a) = event.activation {
                        activations.entry((tenant.clone(), a)).or_default().push(event.clone());
                        let state = after.as_ref().and_then(|c| c.activation.clone()).unwrap();
                        last_activation.insert((tenant.clone(), a), state);
                    }
                }
                Entry::Policy { tenant, event } => {
                    policies.entry(tenant.clone()).or_default().push(event.policy.clone());
                }
                Entry::Request { .. } | Entry::RequestConfig { .. } => {
                    panic!("this model makes no access request entries")
                }
            }
        }
        let payload_events = |events: Vec<StreamEvent>| -> Vec<Event> {
            events.into_iter().map(|e| match e.envelope.payload {
                Payload::Connection(event) => event,
                Payload::Policy(_) | Payload::Request(_) | Payload::RequestConfig(_) => panic!("other event in a connection stream"),
            }).collect()
        };
        for ((tenant, id), events) in &connections {
            let stream = all_stream(&store, tenant, Stream::Connection(*id));
            prop_assert!(stream.iter().enumerate().all(|(n, e)| e.version == n as u64 + 1 && e.envelope.stream_version == e.version));
            prop_assert_eq!(&payload_events(stream), events);
            prop_assert_eq!(reader.stream_version(tenant, Stream::Connection(*id)).unwrap(), events.len() as u64);
        }
        for ((tenant, id), events) in &activations {
            let stream = all_stream(&store, tenant, Stream::Activation(*id));
            prop_assert!(stream.iter().enumerate().all(|(n, e)| e.version == n as u64 + 1));
            prop_assert_eq!(&payload_events(stream), events);
            prop_assert_eq!(reader.activation(tenant, *id).unwrap(), last_activation.get(&(tenant.clone(), *id)).cloned());
        }
        for (tenant, history) in &policies {
            let stream = all_stream(&store, tenant, Stream::Policy);
            let stored: Vec<Policy> = stream.into_iter().map(|e| match e.envelope.payload {
                Payload::Policy(p) => p.policy,
                Payload::Connection(_) | Payload::Request(_) | Payload::RequestConfig(_) => panic!("other event in a policy stream"),
            }).collect();
            prop_assert_eq!(&stored, history);
        }

        // The projections equal the model.
        for t in &world.tenants {
            prop_assert_eq!(reader.policy(&t.id).unwrap(), t.policy.clone());
            for slot in 0..SLOTS {
                let id = world.connection_id(world.tenants.iter().position(|x| x.id == t.id).unwrap(), slot);
                prop_assert_eq!(reader.connection(&t.id, id).unwrap(), t.connections.get(&id).cloned());
            }
            let mut listed = Vec::new();
            loop {
                let page = reader.connections(&t.id, listed.last().map(|c: &jitflow_core::connection::Connection| c.id()), 2).unwrap();
                if page.is_empty() { break; }
                listed.extend(page);
            }
            prop_assert_eq!(listed, t.connections.values().cloned().collect::<Vec<_>>());
        }
    }

    /// Replaying the log gives exactly the stored projections and indexes.
    #[test]
    fn replay_equals_projections(ops in ops(), sizes in sizes(), checkpoints in checkpoints()) {
        let Run { world, store, .. } = run(&ops, &sizes, &checkpoints);
        let report = store.verify().unwrap();
        prop_assert!(report.is_clean(), "{:#?}", report.differences);
        let live: usize = world.tenants.iter().map(|t| t.connections.len()).sum();
        prop_assert_eq!(report.connections, live as u64);
        prop_assert_eq!(report.policies, world.tenants.iter().filter(|t| t.policy.is_some()).count() as u64);
        prop_assert_eq!(report.timers, world.timers().len() as u64);
        prop_assert_eq!(report.intents, world.intents().len() as u64);
    }

    /// The timer index holds exactly the timers of the connections, in due order.
    #[test]
    fn timer_index_equals_derived_timers(ops in ops(), sizes in sizes(), checkpoints in checkpoints()) {
        let Run { world, store, .. } = run(&ops, &sizes, &checkpoints);
        let stored = stored_timers(&store);
        prop_assert_eq!(&stored, &world.timers());
        // Bounded reads up to a time see a prefix of the index.
        if let Some(middle) = stored.get(stored.len() / 2) {
            let upto = store.reader().unwrap().due_timers(None, Some(middle.due), 10_000).unwrap();
            let expected: Vec<_> = stored.iter().filter(|t| t.due <= middle.due).cloned().map(Due::Connection).collect();
            prop_assert_eq!(upto, expected);
        }
    }

    /// The intents are exactly the connections with pending effects.
    #[test]
    fn intents_equal_pending_effects(ops in ops(), sizes in sizes(), checkpoints in checkpoints()) {
        let Run { world, store, .. } = run(&ops, &sizes, &checkpoints);
        prop_assert_eq!(stored_intents(&store), world.intents());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Reopening a file (without a checkpoint first, as after a crash) replays the log after
    /// its checkpoint: at every reopen, and at the end, the merged view equals a replay of the
    /// whole log (`verify`), and the connections, timers and intents equal the model's.
    #[test]
    fn reopen_replays_the_tail(
        ops in ops(),
        sizes in sizes(),
        checkpoints in checkpoints(),
        reopen_every in 1usize..6,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reopen.redb");
        let options = Options {
            layer_entries_max: checkpoints.layer_entries_max,
            ..Options::default()
        };
        let mut world = World::new("reopen", TENANTS, 1);
        let mut store = Store::open(&path, options.clone()).unwrap();
        let entries: Vec<Entry> = ops.iter().filter_map(|&op| world.apply(op)).collect();
        let mut rest = entries.as_slice();
        let mut size = sizes.iter().cycle();
        let mut after = checkpoints.after.iter().cycle();
        let mut n = 0;
        while !rest.is_empty() {
            let k = (*size.next().unwrap()).min(rest.len());
            let (now, later) = rest.split_at(k);
            rest = later;
            let mut batch = Batch::new();
            for e in now {
                batch.push(e.clone());
            }
            store.append_batch(&batch).unwrap();
            if *after.next().unwrap() {
                store.checkpoint(None).unwrap();
            }
            n += 1;
            if n % reopen_every == 0 {
                drop(store);
                store = Store::open(&path, options.clone()).unwrap();
                let report = store.verify().unwrap();
                prop_assert!(report.is_clean(), "{:#?}", report.differences);
                // A replayed tail is due for a checkpoint at once, so that a process that
                // keeps crashing does not replay an ever longer tail.
                let stats = store.stats();
                prop_assert_eq!(store.checkpoint_due(), stats.layer_entries > 0, "{:?}", stats);
            }
        }
        drop(store);
        let store = Store::open(&path, options).unwrap();
        let report = store.verify().unwrap();
        prop_assert!(report.is_clean(), "{:#?}", report.differences);
        prop_assert_eq!(stored_timers(&store), world.timers());
        prop_assert_eq!(stored_intents(&store), world.intents());
        let reader = store.reader().unwrap();
        for t in &world.tenants {
            let listed = reader.connections(&t.id, None, 10_000).unwrap();
            prop_assert_eq!(listed, t.connections.values().cloned().collect::<Vec<_>>());
        }
    }
}
