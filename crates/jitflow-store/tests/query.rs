//! Queries over the connections and the activation history: random stores and random valid
//! requests, the indexed answer against a naive filter-and-sort of every record; `searchAfter`
//! walks (also while rows change between pages); and tables of plans and errors.

mod common;
#[path = "common/conformance.rs"]
mod conformance;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::{Op, World, all_events};
use jitflow_core::connection::Connection;
use jitflow_core::filter::{Fields, Sort, compare_sort};
use jitflow_core::history::ActivationRecord;
use jitflow_core::id::{ActivationId, IdentityId, TenantId};
use jitflow_core::time::Timestamp;
use jitflow_store::Store;
use jitflow_store::batch::{Batch, Entry};
use jitflow_store::codec::Payload;
use jitflow_store::open::Options;
use jitflow_store::query::{
    self, Access, CONNECTIONS, Collection, Error, HISTORY, HISTORY_OF_IDENTITY, Order, Page, Query,
};
use proptest::prelude::*;

use conformance::TENANTS;
const SLOTS: usize = 12;

fn op() -> impl Strategy<Value = Op> {
    conformance::op(SLOTS)
}

fn store() -> Store {
    Store::open_with_backend(redb::backends::InMemoryBackend::new(), Options::default()).unwrap()
}

/// Appends the entries of `ops` in batches of up to 7; returns the connection ids touched.
fn apply(world: &mut World, store: &Store, ops: &[Op]) -> BTreeSet<u128> {
    let entries: Vec<Entry> = ops.iter().filter_map(|&op| world.apply(op)).collect();
    let mut touched = BTreeSet::new();
    for chunk in entries.chunks(7) {
        let mut batch = Batch::new();
        for entry in chunk {
            if let Entry::Connection { event, .. } = entry {
                touched.insert(event.connection.as_u128());
            }
            batch.push(entry.clone());
        }
        store.append_batch(&batch).unwrap();
    }
    touched
}

/// Filter terms covering every field and operator of the connections table; `{t}` stands for a
/// timestamp near the world's clock.
const CONNECTION_TERMS: &[&str] = &[
    r#"identity.id eq "alice""#,
    r#"identity.id in ("bob", "carol")"#,
    r#"identity.name eq "Bob, Jr.""#,
    r#"identity.name in ("Alice Example", "nobody")"#,
    r#"identity.name co "C""#,
    r#"source.id eq "sql""#,
    r#"source.id in ("ad-prod", "x")"#,
    r#"source.name eq "Active Directory""#,
    r#"source.name in ("SQL, main")"#,
    r#"source.name co "main""#,
    r#"account.id eq "acct-2""#,
    r#"account.id in ("acct-1")"#,
    r#"account.name eq "ops""#,
    r#"account.name in ("ops", "alice.admin")"#,
    r#"account.name co "admin""#,
    r#"entitlement.id eq "ent-dba""#,
    r#"entitlement.id in ("ent-admins", "ent-ro")"#,
    r#"entitlement.attribute eq "role""#,
    r#"entitlement.attribute in ("memberOf")"#,
    r#"entitlement.attribute co "Of""#,
    r#"entitlement.value eq "db_owner""#,
    r#"entitlement.value in ("db_owner", "x")"#,
    r#"entitlement.value co "Groups""#,
    r#"entitlement.privilegeLevel.effective eq "HIGH""#,
    r#"entitlement.privilegeLevel.effective in ("LOW", "HIGH")"#,
    r#"entitlement.privilegeLevel.effective co "O""#,
    r#"type eq "JIT""#,
    r#"type in ("standing", "NA")"#,
    r#"state.value eq "ACTIVE""#,
    r#"state.value in ("AVAILABLE", "EXPIRED")"#,
    r#"state.value in ("ACTIVATING", "DEACTIVATING", "ACTIVE")"#,
    r#"state.value co "ACTIV""#,
    "standalone eq true",
    "standalone in (false)",
    "jit.activation gt {t}",
    "jit.activation le {t}",
    "jit.provision ge {t}",
    "jit.provision lt {t}",
    "jit.deactivation gt {t}",
    "jit.deactivation le {t}",
    "jit.deprovision ge {t}",
    "jit.deprovision lt {t}",
    "jit.expiration gt {t}",
    "jit.expiration lt {t}",
];

const HISTORY_TERMS: &[&str] = &[
    r#"identityId eq "alice""#,
    r#"identityId in ("bob", "carol")"#,
    r#"entitlementId eq "ent-dba""#,
    r#"entitlementId in ("ent-admins", "ent-ro")"#,
    r#"sourceId eq "sql""#,
    r#"connectionId eq "{c}""#,
    r#"status eq "PROVISIONED""#,
    r#"status in ("COMPLETE", "REVOKED", "cancelled", "ERROR")"#,
    r#"status in ("AWAITING_FRICTIONS", "PROVISIONING", "DEPROVISIONING")"#,
    "activationInitiated gt {t}",
    "activationInitiated le {t}",
    r#"policyFrictionOutcome eq "SUCCESS_ENFORCED""#,
];

/// A filter shape over up to three terms.
#[derive(Debug, Clone, Copy)]
enum Shape {
    None,
    One,
    And2,
    And3,
    Or2,
    Not1,
    AndOr,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        1 => Just(Shape::None),
        3 => Just(Shape::One),
        3 => Just(Shape::And2),
        1 => Just(Shape::And3),
        1 => Just(Shape::Or2),
        1 => Just(Shape::Not1),
        1 => Just(Shape::AndOr),
    ]
}

/// A request: the filter's shape and term picks, a timestamp offset, sorters, page.
#[derive(Debug, Clone)]
struct Request {
    shape: Shape,
    terms: [usize; 3],
    minutes: u32,
    sorters: Vec<(usize, bool)>,
    offset: usize,
    limit: usize,
}

fn request() -> impl Strategy<Value = Request> {
    (
        shape(),
        [any::<usize>(), any::<usize>(), any::<usize>()],
        0u32..600,
        proptest::collection::vec((any::<usize>(), any::<bool>()), 0..3),
        prop_oneof![3 => Just(0usize), 1 => 0usize..12],
        1usize..8,
    )
        .prop_map(|(shape, terms, minutes, sorters, offset, limit)| Request {
            shape,
            terms,
            minutes,
            sorters,
            offset,
            limit,
        })
}

impl Request {
    /// The filter as text; a timestamp term compares with one of `times` (values the records
    /// hold, to exercise the bounds' edges) or with an instant near the world's clock.
    fn filter(&self, terms: &[&str], times: &[Timestamp], connection: &str) -> Option<String> {
        let start = Timestamp::from_millis(1_700_000_000_000).unwrap();
        let t = match times.len() {
            n if n > 0 && self.minutes.is_multiple_of(2) => times[(self.minutes as usize / 2) % n],
            _ => start.plus_minutes(jitflow_core::time::Minutes(self.minutes)),
        }
        .to_rfc3339();
        let term = |i: usize| {
            terms[self.terms[i] % terms.len()]
                .replace("{t}", &t)
                .replace("{c}", connection)
        };
        Some(match self.shape {
            Shape::None => return None,
            Shape::One => term(0),
            Shape::And2 => format!("{} and {}", term(0), term(1)),
            Shape::And3 => format!("{} and {} and {}", term(0), term(1), term(2)),
            Shape::Or2 => format!("{} or {}", term(0), term(1)),
            Shape::Not1 => format!("not {}", term(0)),
            Shape::AndOr => format!("{} and ({} or {})", term(0), term(1), term(2)),
        })
    }

    /// The sorters as text (distinct fields), optionally ending with `id` for exact paging.
    fn sorters(&self, collection: &Collection, with_id: bool) -> Option<String> {
        let mut fields: Vec<String> = Vec::new();
        for &(i, descending) in &self.sorters {
            let name = collection.sorters[i % collection.sorters.len()].name;
            if !fields.iter().any(|f| f.trim_start_matches('-') == name) {
                fields.push(format!("{}{name}", if descending { "-" } else { "" }));
            }
        }
        if with_id && fields.is_empty() {
            fields.extend(
                collection
                    .default_sorters
                    .iter()
                    .map(|s| format!("{}{}", if s.descending { "-" } else { "" }, s.field)),
            );
        }
        if with_id && !fields.iter().any(|f| f.trim_start_matches('-') == "id") {
            let descending = fields.last().is_some_and(|f| f.starts_with('-'));
            fields.push(if descending { "-id" } else { "id" }.to_owned());
        }
        (!fields.is_empty()).then(|| fields.join(","))
    }
}

/// The naive answer: every record matching, sorted.
fn naive<R: Fields + Clone>(collection: &Collection, query: &Query, records: &[R]) -> Vec<R> {
    let mut out: Vec<R> = records
        .iter()
        .filter(|r| query.filter.as_ref().is_none_or(|f| f.matches(*r)))
        .cloned()
        .collect();
    let order = query.order(collection);
    out.sort_by(|a, b| compare_sort(a, b, &order));
    out
}

fn connections_of(world: &World, tenant: usize) -> Vec<Connection> {
    world.tenants[tenant]
        .connections
        .values()
        .cloned()
        .collect()
}

/// Every history record of `tenant`, read by id for every activation the log names.
fn history_of(store: &Store, tenant: &TenantId) -> Vec<ActivationRecord> {
    let reader = store.reader().unwrap();
    let mut ids = BTreeSet::new();
    for envelope in all_events(store) {
        if envelope.tenant == *tenant
            && let Payload::Connection(event) = &envelope.payload
            && let Some(id) = event.activation
        {
            ids.insert(id);
        }
    }
    ids.into_iter()
        .filter_map(|id: ActivationId| reader.history_record(tenant, id).unwrap())
        .collect()
}

/// Every timestamp the records' filterable timestamp fields hold.
fn timestamps(connections: &[Connection], history: &[ActivationRecord]) -> Vec<Timestamp> {
    let mut out: Vec<Timestamp> = connections
        .iter()
        .flat_map(|c| {
            [
                c.jit.activation,
                c.jit.provision,
                c.jit.deactivation,
                c.jit.deprovision,
                c.jit.expiration,
            ]
        })
        .flatten()
        .chain(history.iter().map(ActivationRecord::activation_initiated))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn id_of(record: &impl Fields) -> u128 {
    match record.field("id") {
        jitflow_core::filter::FieldValue::Uuid(id) => id,
        other => panic!("id is {other:?}"),
    }
}

fn ids<R: Fields>(records: &[R]) -> Vec<u128> {
    records.iter().map(id_of).collect()
}

/// One list request against the store, checked against a naive filter-and-sort of the model's
/// records: the page, the total, and (when the sorters end in `id`) a `searchAfter` walk.
fn check_request(
    world: &World,
    store: &Store,
    request: &Request,
    tenant: usize,
    history: bool,
    scoped: bool,
) -> Result<(), TestCaseError> {
    let tenant_id = world.tenants[tenant].id.clone();
    let identity =
        scoped.then(|| IdentityId::parse(["alice", "bob"][request.minutes as usize % 2]).unwrap());
    let (collection, records_conn, records_hist): (
        &Collection,
        Vec<Connection>,
        Vec<ActivationRecord>,
    ) = if history {
        let c = if scoped { HISTORY_OF_IDENTITY } else { HISTORY };
        (c, Vec::new(), history_of(store, &tenant_id))
    } else {
        (CONNECTIONS, connections_of(world, tenant), Vec::new())
    };
    let some_connection = world
        .connection_id(tenant, request.terms[1] % SLOTS)
        .to_string();
    let terms: Vec<&str> = if history {
        HISTORY_TERMS
            .iter()
            .copied()
            .filter(|t| !(scoped && t.starts_with("identityId")))
            .collect()
    } else {
        CONNECTION_TERMS.to_vec()
    };
    let times = timestamps(&records_conn, &records_hist);
    let filters = request.filter(&terms, &times, &some_connection);
    for with_id in [false, true] {
        let sorters = request.sorters(collection, with_id);
        let offset = request.offset.to_string();
        let limit = request.limit.to_string();
        let query = Query::parse(
            collection,
            filters.as_deref(),
            sorters.as_deref(),
            Some(&offset),
            Some(&limit),
            Some("true"),
            None,
        )
        .unwrap_or_else(|e| panic!("{filters:?} {sorters:?}: {e}"));
        // The naive query adds the identity constraint itself.
        let mut naive_query = query.clone();
        if let Some(identity) = &identity {
            let field = collection.identity_field;
            let scope = jitflow_core::filter::parse_filter(
                &format!("{field} eq \"{identity}\""),
                if history {
                    HISTORY.fields
                } else {
                    CONNECTIONS.fields
                },
            )
            .unwrap();
            naive_query.filter = Some(match naive_query.filter.take() {
                Some(f) => jitflow_core::filter::Expr::And(vec![scope, f]),
                None => scope,
            });
        }
        let expected: Vec<u128> = if history {
            ids(&naive(collection, &naive_query, &records_hist))
        } else {
            ids(&naive(collection, &naive_query, &records_conn))
        };
        let reader = store.reader().unwrap();
        let (got, total) = if history {
            let page = reader
                .query_history(&tenant_id, &query, identity.as_ref())
                .unwrap();
            (ids(&page.items), page.total)
        } else {
            let page = reader
                .query_connections(&tenant_id, &query, identity.as_ref())
                .unwrap();
            (ids(&page.items), page.total)
        };
        let window: Vec<u128> = expected
            .iter()
            .copied()
            .skip(request.offset)
            .take(request.limit)
            .collect();
        prop_assert_eq!(&got, &window, "filters {:?} sorters {:?}", filters, sorters);
        prop_assert_eq!(total, Some(expected.len() as u64));

        if with_id {
            let walked = if history {
                walk(
                    collection,
                    &query,
                    request.limit,
                    |q| {
                        reader
                            .query_history(&tenant_id, q, identity.as_ref())
                            .unwrap()
                    },
                    || {},
                )
            } else {
                walk(
                    collection,
                    &query,
                    request.limit,
                    |q| {
                        reader
                            .query_connections(&tenant_id, q, identity.as_ref())
                            .unwrap()
                    },
                    || {},
                )
            };
            prop_assert_eq!(
                &walked,
                &expected,
                "walk of filters {:?} sorters {:?}",
                filters,
                sorters
            );
        }
    }
    Ok(())
}

/// Walks every page of `query` (sorters ending in `id`) with `searchAfter`, calling `between`
/// after each page; returns the ids in the order seen.
fn walk<R: Fields>(
    collection: &Collection,
    query: &Query,
    limit: usize,
    mut page: impl FnMut(&Query) -> Page<R>,
    mut between: impl FnMut(),
) -> Vec<u128> {
    let mut seen = Vec::new();
    let mut q = query.clone();
    q.limit = limit;
    q.offset = 0;
    loop {
        let result = page(&q);
        let Some(last) = result.items.last() else {
            break;
        };
        seen.extend(ids(&result.items));
        // The continuation goes through the text encoding, as an HTTP client's would.
        let after = query::search_after(collection, &q, last);
        let sorters = q
            .sorters
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let parsed = Query::parse(
            collection,
            None,
            (!sorters.is_empty()).then_some(sorters.as_str()),
            None,
            None,
            None,
            Some(&after),
        )
        .unwrap_or_else(|e| panic!("searchAfter {after:?} does not parse back: {e}"));
        q.search_after = parsed.search_after;
        assert!(seen.len() <= 10_000, "the walk does not end");
        between();
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Indexed answers equal naive ones for random stores and requests, for both collections and
    /// the current-identity variants; a `searchAfter` walk yields every match once, in order.
    #[test]
    fn indexed_queries_equal_naive_ones(
        ops in proptest::collection::vec(op(), 1..300),
        requests in proptest::collection::vec((request(), 0..TENANTS, any::<bool>(), any::<bool>()), 1..6),
    ) {
        let mut world = World::new("q", TENANTS, 1);
        let store = store();
        apply(&mut world, &store, &ops);
        let report = store.verify().unwrap();
        prop_assert!(report.is_clean(), "{:#?}", report.differences);

        for (request, tenant, history, scoped) in requests {
            check_request(&world, &store, &request, tenant, history, scoped)?;
        }
    }

    /// While rows change between pages, a `searchAfter` walk (sorted by a field, then `id`)
    /// yields every matching row that no change touched exactly once, and no row twice.
    #[test]
    fn walks_stay_exact_while_other_rows_change(
        ops in proptest::collection::vec(op(), 40..160),
        changes in proptest::collection::vec(op(), 1..40),
        request in request(),
    ) {
        let mut world = World::new("w", TENANTS, 1);
        let store = store();
        apply(&mut world, &store, &ops);
        let tenant = world.tenants[0].id.clone();
        let times = timestamps(&connections_of(&world, 0), &[]);
        let filters = request.filter(CONNECTION_TERMS, &times, "00000000-0000-0000-0000-000000000000");
        let sorters = request.sorters(CONNECTIONS, true);
        let query = Query::parse(CONNECTIONS, filters.as_deref(), sorters.as_deref(), None, None, None, None).unwrap();
        let before: BTreeSet<u128> = ids(&naive(CONNECTIONS, &query, &connections_of(&world, 0))).into_iter().collect();

        let mut touched = BTreeSet::new();
        let mut pending = changes.chunks(3);
        let walked = {
            let store_ref = &store;
            let world_ref = std::cell::RefCell::new(&mut world);
            walk(
                CONNECTIONS,
                &query,
                request.limit,
                |q| store_ref.reader().unwrap().query_connections(&tenant, q, None).unwrap(),
                || {
                    if let Some(chunk) = pending.next() {
                        touched.extend(apply(&mut world_ref.borrow_mut(), store_ref, chunk));
                    }
                },
            )
        };
        let after: BTreeSet<u128> = ids(&naive(CONNECTIONS, &query, &connections_of(&world, 0))).into_iter().collect();
        let mut counts: HashMap<u128, usize> = HashMap::new();
        for id in &walked {
            *counts.entry(*id).or_default() += 1;
        }
        for id in before.intersection(&after) {
            if !touched.contains(id) {
                prop_assert_eq!(counts.get(id).copied(), Some(1), "untouched {:#x}", id);
            }
        }
        for (id, n) in &counts {
            if !touched.contains(id) {
                prop_assert_eq!(*n, 1);
                prop_assert!(before.contains(id), "{:#x} never matched", id);
            }
        }
        prop_assert!(store.verify().unwrap().is_clean());
    }
}

/// A store with every tenant's connections registered and some activations run.
fn sample() -> (World, Store) {
    let mut world = World::new("t", TENANTS, 1);
    let store = store();
    let mut ops = Vec::new();
    for round in 0..6u64 {
        for tenant in 0..TENANTS {
            for slot in 0..SLOTS {
                ops.push(Op::Advance {
                    tenant,
                    slot,
                    roll: round * 31 + slot as u64,
                });
            }
        }
        ops.push(Op::Tick { minutes: 7 });
    }
    apply(&mut world, &store, &ops);
    (world, store)
}

fn parse(collection: &Collection, filters: Option<&str>, sorters: Option<&str>) -> Query {
    Query::parse(collection, filters, sorters, None, None, None, None)
        .unwrap_or_else(|e| panic!("{filters:?} {sorters:?}: {e}"))
}

/// Every term of both tables (every field and operator), each timestamp term at every instant
/// the records hold and one millisecond either side, in both directions of its own order:
/// the indexed answer equals the naive one.
#[test]
fn every_field_and_operator_answers_like_the_naive_filter() {
    let (world, store) = sample();
    let reader = store.reader().unwrap();
    for (n, t) in world.tenants.iter().enumerate() {
        let connections = connections_of(&world, n);
        let history = history_of(&store, &t.id);
        assert!(history.len() > 5, "the sample runs activations");
        let mut times = timestamps(&connections, &history);
        let edges: Vec<Timestamp> = times
            .iter()
            .flat_map(|t| [t.as_millis() - 1, t.as_millis() + 1])
            .filter_map(Timestamp::from_millis)
            .collect();
        times.extend(edges);
        let some_connection = world.connection_id(n, 4).to_string();
        for (collection, terms) in [(CONNECTIONS, CONNECTION_TERMS), (HISTORY, HISTORY_TERMS)] {
            let mut nonempty = 0;
            for term in terms {
                let instants: Vec<String> = if term.contains("{t}") {
                    times.iter().map(|t| t.to_rfc3339()).collect()
                } else {
                    vec![String::new()]
                };
                for instant in &instants {
                    let filters = term
                        .replace("{t}", instant)
                        .replace("{c}", &some_connection);
                    let field = filters.split(' ').next().unwrap();
                    let sortable = collection.sorters.iter().any(|s| s.name == field);
                    let orders: Vec<Option<String>> = if sortable {
                        vec![None, Some(field.to_owned()), Some(format!("-{field}"))]
                    } else {
                        vec![None]
                    };
                    for sorters in orders {
                        let mut query = parse(collection, Some(&filters), sorters.as_deref());
                        query.count = true;
                        let (got, total, expected) = if std::ptr::eq(collection, CONNECTIONS) {
                            let page = reader.query_connections(&t.id, &query, None).unwrap();
                            (
                                ids(&page.items),
                                page.total,
                                ids(&naive(collection, &query, &connections)),
                            )
                        } else {
                            let page = reader.query_history(&t.id, &query, None).unwrap();
                            (
                                ids(&page.items),
                                page.total,
                                ids(&naive(collection, &query, &history)),
                            )
                        };
                        assert_eq!(got, expected, "{filters} sorted {sorters:?}");
                        assert_eq!(total, Some(expected.len() as u64), "{filters}");
                        nonempty += usize::from(!expected.is_empty());
                    }
                }
            }
            assert!(
                nonempty > terms.len() / 2,
                "{}: most terms match something",
                collection.name
            );
        }
    }
}

/// (collection, filters, sorters, scoped to an identity, access, order, covered).
type PlanCase<'a> = (
    &'a Collection,
    Option<&'a str>,
    Option<&'a str>,
    bool,
    Access,
    Order,
    bool,
);

#[test]
fn plans_use_the_most_selective_index_and_stream_when_the_order_allows() {
    let identity = IdentityId::parse("alice").unwrap();
    let index = |field: &'static str, ranges: usize| Access::Index { field, ranges };
    let cases: Vec<PlanCase<'_>> = vec![
        // No filter: the records table by id, or a sort field's whole index.
        (
            CONNECTIONS,
            None,
            None,
            false,
            Access::Scan,
            Order::Streamed,
            true,
        ),
        (
            CONNECTIONS,
            None,
            Some("-id"),
            false,
            Access::Scan,
            Order::Streamed,
            true,
        ),
        (
            CONNECTIONS,
            None,
            Some("identity.id"),
            false,
            Access::Scan,
            Order::Streamed,
            true,
        ),
        (
            CONNECTIONS,
            None,
            Some("-state.value,-id"),
            false,
            Access::Scan,
            Order::Streamed,
            true,
        ),
        (
            CONNECTIONS,
            None,
            Some("identity.name"),
            false,
            Access::Scan,
            Order::Sorted,
            true,
        ),
        (
            CONNECTIONS,
            None,
            Some("state.value,-id"),
            false,
            Access::Scan,
            Order::Sorted,
            true,
        ),
        // A filter no index serves: a scan that says so.
        (
            CONNECTIONS,
            Some(r#"identity.name co "A""#),
            None,
            false,
            Access::Scan,
            Order::Streamed,
            false,
        ),
        (
            CONNECTIONS,
            Some(r#"not state.value eq "ACTIVE""#),
            None,
            false,
            Access::Scan,
            Order::Streamed,
            false,
        ),
        (
            CONNECTIONS,
            Some(r#"state.value eq "ACTIVE" or type eq "JIT""#),
            Some("type"),
            false,
            Access::Scan,
            Order::Streamed,
            false,
        ),
        // Selective equalities.
        (
            CONNECTIONS,
            Some(r#"state.value eq "ACTIVATING""#),
            None,
            false,
            index("state.value", 1),
            Order::Streamed,
            true,
        ),
        (
            CONNECTIONS,
            Some(r#"identity.id eq "bob""#),
            Some("-id"),
            false,
            index("identity.id", 1),
            Order::Streamed,
            true,
        ),
        (
            CONNECTIONS,
            Some(r#"identity.id eq "bob""#),
            Some("jit.expiration"),
            false,
            index("identity.id", 1),
            Order::Sorted,
            true,
        ),
        (
            CONNECTIONS,
            Some(
                r#"state.value eq "ACTIVE" and entitlement.id in ("ent-dba", "ent-ro", "ent-dba")"#,
            ),
            None,
            false,
            index("entitlement.id", 2),
            Order::Sorted,
            false,
        ),
        (
            CONNECTIONS,
            Some(r#"state.value eq "ACTIVE" and source.id eq "sql""#),
            None,
            false,
            index("source.id", 1),
            Order::Streamed,
            false,
        ),
        // Ranges of a JIT timestamp, streamed when sorted by that field.
        (
            CONNECTIONS,
            Some(
                "jit.expiration gt 2026-01-01T00:00:00Z and jit.expiration le 2027-01-01T00:00:00Z",
            ),
            Some("-jit.expiration"),
            false,
            index("jit.expiration", 1),
            Order::Streamed,
            true,
        ),
        (
            CONNECTIONS,
            Some(r#"jit.activation ge 2026-01-01T00:00:00Z and type eq "JIT""#),
            Some("identity.name"),
            false,
            index("jit.activation", 1),
            Order::Sorted,
            false,
        ),
        // A weak index gives way to a stream in the requested order.
        (
            CONNECTIONS,
            Some(r#"type eq "JIT" and jit.activation ge 2026-01-01T00:00:00Z"#),
            Some("jit.activation"),
            false,
            index("jit.activation", 1),
            Order::Streamed,
            false,
        ),
        // The current-identity variant always reads the identity's entries.
        (
            CONNECTIONS,
            None,
            None,
            true,
            index("identity.id", 1),
            Order::Streamed,
            true,
        ),
        (
            CONNECTIONS,
            Some(r#"identity.id eq "bob""#),
            None,
            true,
            index("identity.id", 1),
            Order::Streamed,
            false,
        ),
        (
            CONNECTIONS,
            Some(r#"state.value eq "ACTIVE""#),
            Some("type"),
            true,
            index("identity.id", 1),
            Order::Sorted,
            false,
        ),
        // History.
        (
            HISTORY,
            None,
            None,
            false,
            Access::Scan,
            Order::Streamed,
            true,
        ),
        (
            HISTORY,
            None,
            Some("status,id"),
            false,
            Access::Scan,
            Order::Streamed,
            true,
        ),
        (
            HISTORY,
            None,
            Some("provisionCompleted"),
            false,
            Access::Scan,
            Order::Sorted,
            true,
        ),
        (
            HISTORY,
            Some(r#"status eq "PROVISIONED""#),
            Some("id"),
            false,
            index("status", 1),
            Order::Streamed,
            true,
        ),
        (
            HISTORY,
            Some(r#"connectionId eq "757fb80390245861e51083a56e4c5bd3""#),
            None,
            false,
            index("connectionId", 1),
            Order::Sorted,
            true,
        ),
        (
            HISTORY,
            Some(r#"connectionId eq "not-a-uuid""#),
            None,
            false,
            index("connectionId", 0),
            Order::Sorted,
            true,
        ),
        (
            HISTORY,
            Some(r#"policyFrictionOutcome eq "BYPASSED""#),
            None,
            false,
            Access::Scan,
            Order::Streamed,
            false,
        ),
        (
            HISTORY_OF_IDENTITY,
            None,
            None,
            true,
            index("identityId", 1),
            Order::Sorted,
            true,
        ),
        (
            HISTORY_OF_IDENTITY,
            None,
            Some("id"),
            true,
            index("identityId", 1),
            Order::Streamed,
            true,
        ),
    ];
    for (collection, filters, sorters, scoped, access, order, covered) in cases {
        let query = parse(collection, filters, sorters);
        let identity = scoped.then_some(&identity);
        let plan = if std::ptr::eq(collection, CONNECTIONS) {
            query::plan_connections(&query, identity)
        } else {
            query::plan_history(&query, identity)
        }
        .unwrap();
        assert_eq!(
            (&plan.access, plan.order, plan.covered),
            (&access, order, covered),
            "{filters:?} {sorters:?} scoped {scoped}: {plan}"
        );
    }
}

#[test]
fn parameter_errors_are_typed_and_name_the_problem() {
    let p = |filters: Option<&str>,
             sorters: Option<&str>,
             offset: Option<&str>,
             limit: Option<&str>,
             count: Option<&str>,
             search_after: Option<&str>| {
        Query::parse(
            CONNECTIONS,
            filters,
            sorters,
            offset,
            limit,
            count,
            search_after,
        )
        .err()
        .map(|e| e.to_string())
    };
    use jitflow_core::filter::Error as F;
    let cases: Vec<(Option<String>, &str)> = vec![
        (
            p(Some(r#"colour eq "red""#), None, None, None, None, None),
            "Unknown field `colour`",
        ),
        (
            p(Some(r#"type co "J""#), None, None, None, None, None),
            "Operator `co` is not allowed on field `type`",
        ),
        (
            p(
                Some("jit.expiration eq 2026-01-01T00:00:00Z"),
                None,
                None,
                None,
                None,
                None,
            ),
            "Operator `eq` is not allowed",
        ),
        (
            p(
                Some(r#"state.value eq "ACTIVE" and"#),
                None,
                None,
                None,
                None,
                None,
            ),
            "ends too soon",
        ),
        (
            p(None, Some("colour"), None, None, None, None),
            "unknown field `colour`",
        ),
        (
            p(None, Some("id,id"), None, None, None, None),
            "already a sort key",
        ),
        (
            p(None, None, Some("ten"), None, None, None),
            "offset must be an integer",
        ),
        (
            p(None, None, Some("10001"), None, None, None),
            "offset must be between 0 and 10000",
        ),
        (
            p(None, None, Some("-1"), None, None, None),
            "offset must be between 0 and 10000",
        ),
        (
            p(None, None, None, Some("251"), None, None),
            "limit must be between 0 and 250",
        ),
        (
            p(None, None, None, Some("-5"), None, None),
            "limit must be between 0 and 250",
        ),
        (
            p(None, None, None, Some("1.5"), None, None),
            "limit must be an integer",
        ),
        (
            p(None, None, None, None, Some("yes"), None),
            "count must be true or false",
        ),
        (
            p(None, Some("type,id"), None, None, None, Some("JIT")),
            "searchAfter has 1 values but there are 2 sorters",
        ),
        (
            p(None, None, None, None, None, Some("a,b")),
            "searchAfter has 2 values but there are 1 sorters",
        ),
        (
            p(None, None, None, None, None, Some("not-a-uuid")),
            "is not a value of `id`: expected a UUID",
        ),
        (
            p(None, Some("type"), None, None, None, Some("MAYBE")),
            "expected one of JIT, STANDING, NA",
        ),
        (
            p(None, Some("standalone"), None, None, None, Some("yes")),
            "expected true or false",
        ),
        (
            p(
                None,
                Some("jit.expiration"),
                None,
                None,
                None,
                Some("tomorrow"),
            ),
            "expected an RFC 3339 date-time",
        ),
        (
            p(None, Some("type"), None, None, None, Some("")),
            "is not a value of `type`",
        ),
        (
            p(None, Some("identity.name"), None, None, None, Some("a\\b")),
            "a backslash must be followed",
        ),
        (
            p(None, None, None, None, None, Some(&"x".repeat(5000))),
            "searchAfter is malformed",
        ),
    ];
    for (result, needle) in cases {
        let message = result.expect(needle);
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    // The typed variants behind a few of them.
    let typed = |filters: Option<&str>,
                 sorters: Option<&str>,
                 limit: Option<&str>,
                 search_after: Option<&str>| {
        Query::parse(
            CONNECTIONS,
            filters,
            sorters,
            None,
            limit,
            None,
            search_after,
        )
        .unwrap_err()
    };
    assert!(matches!(
        typed(Some(r#"colour eq "red""#), None, None, None),
        Error::Filter(F::UnknownField { .. })
    ));
    assert!(matches!(
        typed(None, None, Some("251"), None),
        Error::LimitOutOfRange {
            limit: 251,
            max: 250
        }
    ));
    assert!(matches!(
        typed(None, Some("type,id"), None, Some("JIT")),
        Error::SearchAfterLength {
            expected: 2,
            found: 1
        }
    ));
    // The current identity's history has no identityId filter.
    assert!(matches!(
        Query::parse(
            HISTORY_OF_IDENTITY,
            Some(r#"identityId eq "bob""#),
            None,
            None,
            None,
            None,
            None
        ),
        Err(Error::Filter(F::UnknownField { .. }))
    ));
    // Valid edge values.
    let q = Query::parse(
        CONNECTIONS,
        None,
        None,
        Some("10000"),
        Some("0"),
        Some("TRUE"),
        None,
    )
    .unwrap();
    assert_eq!((q.offset, q.limit, q.count), (10_000, 0, true));
    let q = Query::parse(CONNECTIONS, None, None, None, None, None, None).unwrap();
    assert_eq!((q.offset, q.limit, q.count), (0, 250, false));
    let q = Query::parse(
        CONNECTIONS,
        None,
        Some("jit.expiration,identity.name"),
        None,
        None,
        None,
        Some(",Bob\\, Jr."),
    )
    .unwrap();
    assert_eq!(
        q.search_after,
        Some(vec![
            query::SortValue::Null,
            query::SortValue::Text("Bob, Jr.".into())
        ])
    );
}

#[test]
fn hand_built_queries_are_checked_when_run() {
    let (world, store) = sample();
    let tenant = &world.tenants[0].id;
    let reader = store.reader().unwrap();
    let history_filter =
        jitflow_core::filter::parse_filter(r#"identityId eq "bob""#, HISTORY.fields).unwrap();
    let cases: Vec<(Query, bool)> = vec![
        (
            Query {
                limit: 251,
                ..Query::default()
            },
            false,
        ),
        (
            Query {
                offset: 10_001,
                ..Query::default()
            },
            false,
        ),
        (
            Query {
                max_examined: 0,
                ..Query::default()
            },
            false,
        ),
        (
            Query {
                sorters: vec![Sort {
                    field: "status",
                    descending: false,
                }],
                ..Query::default()
            },
            false,
        ),
        (
            Query {
                search_after: Some(vec![query::SortValue::Text("x".into())]),
                ..Query::default()
            },
            false,
        ),
        (
            Query {
                search_after: Some(vec![]),
                ..Query::default()
            },
            false,
        ),
        (
            Query {
                filter: Some(history_filter.clone()),
                ..Query::default()
            },
            false,
        ),
        (
            Query {
                filter: Some(history_filter),
                ..Query::default()
            },
            true,
        ),
    ];
    for (query, history) in cases {
        let result = if history {
            reader
                .query_history(tenant, &query, Some(&IdentityId::parse("bob").unwrap()))
                .map(|_| ())
        } else {
            reader.query_connections(tenant, &query, None).map(|_| ())
        };
        let error = result.expect_err("refused");
        assert!(
            !matches!(error, Error::Read(_) | Error::ScanBound { .. }),
            "{error}"
        );
    }
}

#[test]
fn the_scan_bound_refuses_work_past_it_and_counts_keys_only_when_covered() {
    let (world, store) = sample();
    let tenant = &world.tenants[0].id;
    let reader = store.reader().unwrap();
    let all = world.tenants[0].connections.len();
    assert!(all > 4);
    // An unindexed filter matching nothing scans every record: refused under a small bound.
    let mut query = parse(CONNECTIONS, Some(r#"identity.name eq "nobody""#), None);
    query.max_examined = all - 1;
    assert!(matches!(
        reader.query_connections(tenant, &query, None),
        Err(Error::ScanBound { max }) if max == all - 1
    ));
    query.max_examined = all;
    assert_eq!(
        reader
            .query_connections(tenant, &query, None)
            .unwrap()
            .items,
        vec![]
    );
    // An indexed query reads only its entries.
    let alice = world.tenants[0]
        .connections
        .values()
        .filter(|c| c.spec.identity.as_str() == "alice")
        .count();
    let mut query = parse(CONNECTIONS, Some(r#"identity.id eq "alice""#), None);
    query.count = true;
    // The page (alice's entries) and the count (alice's keys).
    query.max_examined = 2 * alice;
    let page = reader.query_connections(tenant, &query, None).unwrap();
    assert_eq!((page.items.len(), page.total), (alice, Some(alice as u64)));
}

#[test]
fn tenants_are_isolated_and_the_identity_scope_always_applies() {
    let (world, store) = sample();
    let reader = store.reader().unwrap();
    for (n, t) in world.tenants.iter().enumerate() {
        let page = reader
            .query_connections(
                &t.id,
                &Query {
                    count: true,
                    ..Query::default()
                },
                None,
            )
            .unwrap();
        let mine: BTreeMap<u128, ()> = world.tenants[n]
            .connections
            .keys()
            .map(|id| (id.as_u128(), ()))
            .collect();
        assert_eq!(page.total, Some(mine.len() as u64));
        assert!(ids(&page.items).iter().all(|id| mine.contains_key(id)));
        let history = reader
            .query_history(&t.id, &Query::default(), None)
            .unwrap();
        assert!(history.items.iter().all(|r| {
            mine.contains_key(&r.activation.connection.as_u128())
                || !world.tenants[1 - n]
                    .connections
                    .contains_key(&r.activation.connection)
        }));
    }
    let tenant = &world.tenants[0].id;
    let bob = IdentityId::parse("bob").unwrap();
    // Whatever the filter says, only bob's connections come back.
    for filters in [
        None,
        Some(r#"identity.id eq "alice""#),
        Some(r#"identity.id eq "alice" or identity.id eq "bob""#),
        Some(r#"not identity.id eq "bob""#),
    ] {
        let query = parse(CONNECTIONS, filters, None);
        let page = reader
            .query_connections(tenant, &query, Some(&bob))
            .unwrap();
        assert!(
            page.items.iter().all(|c| c.spec.identity == bob),
            "{filters:?}"
        );
        let unscoped = reader.query_connections(tenant, &query, None).unwrap();
        let expected: Vec<u128> = unscoped
            .items
            .iter()
            .filter(|c| c.spec.identity == bob)
            .map(|c| c.id().as_u128())
            .collect();
        assert_eq!(ids(&page.items), expected, "{filters:?}");
    }
    let page = reader
        .query_history(tenant, &Query::default(), Some(&bob))
        .unwrap();
    assert!(!page.items.is_empty());
    assert!(page.items.iter().all(|r| r.identity == bob));
}

#[test]
fn connections_are_found_by_assignment() {
    let (world, store) = sample();
    let reader = store.reader().unwrap();
    for t in &world.tenants {
        for c in t.connections.values() {
            let found = reader
                .connection_by_assignment(
                    &t.id,
                    &c.spec.entitlement,
                    &c.spec.identity,
                    &c.spec.account,
                )
                .unwrap_or_else(|e| panic!("{e}"));
            // Slots that share the three ids make an assignment ambiguous; the sample has none.
            assert_eq!(found.as_ref(), Some(c));
        }
    }
    let t = &world.tenants[0];
    let c = t.connections.values().next().unwrap();
    let other = TenantId::parse("nobody").unwrap();
    assert_eq!(
        reader
            .connection_by_assignment(
                &other,
                &c.spec.entitlement,
                &c.spec.identity,
                &c.spec.account
            )
            .unwrap(),
        None
    );
    let unknown = jitflow_core::id::AccountId::parse("acct-9").unwrap();
    assert_eq!(
        reader
            .connection_by_assignment(&t.id, &c.spec.entitlement, &c.spec.identity, &unknown)
            .unwrap(),
        None
    );
}

/// The store as a state machine (proptest-state-machine): random operations appended in
/// batches, interleaved with checkpoints, crashes (the store dropped with rows in its layer,
/// as a SIGKILL between a log commit and its checkpoint leaves it) and reopens whose tail
/// replay checkpoints on the way (a layer bound of a few rows), and list queries. After every
/// step the merged view equals a replay of the log (`verify` is clean) and holds exactly the
/// model's connections; every query equals the naive filter-and-sort of the model's records.
/// `PROPTEST_CASES` raises the case count. The steps other than queries, and the checks after
/// each, are the store's conformance suite (`common/conformance.rs`), which every backend runs.
mod machine {
    use super::*;
    use conformance::{File, Sut};
    use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

    #[derive(Debug, Clone)]
    pub enum Step {
        /// A step of the conformance suite: appends, checkpoints, crashes and reopens.
        Store(conformance::Step),
        Query(Request, usize, bool, bool),
    }

    pub struct Reference;

    impl ReferenceStateMachine for Reference {
        type State = World;
        type Transition = Step;

        fn init_state() -> BoxedStrategy<World> {
            Just(World::new("m", TENANTS, 1)).boxed()
        }

        fn transitions(_: &World) -> BoxedStrategy<Step> {
            prop_oneof![
                11 => conformance::step().prop_map(Step::Store),
                3 => (request(), 0..TENANTS, any::<bool>(), any::<bool>())
                    .prop_map(|(r, t, h, s)| Step::Query(r, t, h, s)),
            ]
            .boxed()
        }

        fn apply(world: World, step: &Step) -> World {
            match step {
                Step::Store(step) => conformance::model(world, step),
                Step::Query(..) => world,
            }
        }
    }

    pub struct Machine;

    impl StateMachineTest for Machine {
        type SystemUnderTest = Sut<File>;
        type Reference = Reference;

        fn init_test(world: &World) -> Sut<File> {
            Sut::new(world)
        }

        fn apply(sut: Sut<File>, world: &World, step: Step) -> Sut<File> {
            match step {
                Step::Store(step) => conformance::run(sut, step),
                Step::Query(request, tenant, history, scoped) => {
                    check_request(world, sut.store(), &request, tenant, history, scoped)
                        .unwrap_or_else(|e| panic!("{e}"));
                    sut
                }
            }
        }

        fn check_invariants(sut: &Sut<File>, world: &World) {
            conformance::check(sut, world);
        }
    }

    prop_state_machine! {
        #![proptest_config(ProptestConfig {
            cases: conformance::cases(24),
            ..ProptestConfig::default()
        })]

        #[test]
        fn the_merged_view_follows_the_log_through_checkpoints_crashes_and_reopens(
            sequential 1..30 => Machine
        );
    }
}
