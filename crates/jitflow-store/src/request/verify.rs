//! Verification of the access request items: replay their events with `request::evolve` and
//! compare the result with the item projections, the request, open-items and people indexes,
//! the item timers in the shared timer index, and the item intents. Called by `Store::verify`.

use std::collections::{HashMap, HashSet};
use std::fmt;

use jitflow_core::id::{RequestItemId, TenantId};
use jitflow_core::request::{self, EvolveError, Item, evolve};
use jitflow_core::time::Timestamp;

use super::ItemIntent;
use crate::codec;
use crate::read::Reader;
use crate::tables::{
    REQUEST_INDEX, REQUEST_INTENTS, REQUEST_ITEMS, REQUEST_OPEN, REQUEST_PEOPLE, object_kind_code,
    request_timer_code, request_timer_from_code,
};
use crate::timers::DueItemTimer;
use crate::verify::{self, Error, ProjectionTable, Report, Tenants, compare_projection};

/// One way the stored access request data disagrees with the replayed log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Difference {
    /// An item event does not apply to the item replayed before it.
    DoesNotApply {
        /// The event.
        sequence: u64,
        /// Why.
        error: EvolveError,
    },
    /// An item projection differs from the replayed item.
    Item {
        /// The tenant.
        tenant: TenantId,
        /// The item.
        id: RequestItemId,
        /// The replayed item (`None`: never submitted).
        replayed: Option<Box<Item>>,
        /// The stored projection (`None`: absent).
        stored: Option<Box<Item>>,
    },
    /// A row of the request index or the open-items index is missing or unexpected.
    Index {
        /// The index table.
        table: &'static str,
        /// The tenant.
        tenant: String,
        /// The item the row names.
        item: RequestItemId,
        /// Whether the replay expects the row.
        expected: bool,
    },
    /// A timer of a replayed item is not in the timer index.
    TimerMissing(DueItemTimer),
    /// The timer index holds an item timer no replayed item has.
    TimerUnexpected(DueItemTimer),
    /// A replayed item with pending effects has no intent row.
    IntentMissing(ItemIntent),
    /// An intent row for an item without pending effects.
    IntentUnexpected(ItemIntent),
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |present: bool| if present { "present" } else { "absent" };
        match self {
            Difference::DoesNotApply { sequence, error } => {
                write!(f, "event {sequence} does not apply: {error}")
            }
            Difference::Item {
                tenant,
                id,
                replayed,
                stored,
            } => write!(
                f,
                "access request item {tenant}/{id} differs (replayed {}, stored {})",
                side(replayed.is_some()),
                side(stored.is_some())
            ),
            Difference::Index {
                table,
                tenant,
                item,
                expected,
            } => write!(
                f,
                "{table} row of item {tenant}/{item} is {} but the replay expects it {}",
                side(!expected),
                side(*expected)
            ),
            Difference::TimerMissing(t) => write!(
                f,
                "timer {:?} due {} of access request item {}/{} is not indexed",
                t.timer.kind, t.due, t.tenant, t.item
            ),
            Difference::TimerUnexpected(t) => write!(
                f,
                "indexed timer {:?} due {} of access request item {}/{} is not armed",
                t.timer.kind, t.due, t.tenant, t.item
            ),
            Difference::IntentMissing(i) => write!(
                f,
                "access request item {}/{} has pending effects but no intent row",
                i.tenant, i.item
            ),
            Difference::IntentUnexpected(i) => write!(
                f,
                "intent row for access request item {}/{} without pending effects",
                i.tenant, i.item
            ),
        }
    }
}

fn push(report: &mut Report, difference: Difference) {
    report.push(verify::Difference::Request(difference));
}

/// Applies one logged item event to the replayed items.
pub(crate) fn replay(
    items: &mut HashMap<(u32, u128), Item>,
    tenant: u32,
    sequence: u64,
    event: &request::Event,
    report: &mut Report,
) {
    let key = (tenant, event.item.as_u128());
    let before = items.remove(&key);
    match evolve(before.clone(), event) {
        Ok(after) => {
            items.insert(key, after);
        }
        Err(error) => {
            push(report, Difference::DoesNotApply { sequence, error });
            if let Some(i) = before {
                items.insert(key, i);
            }
        }
    }
}

/// Adds the timers of the replayed items to the expected keys of the timer index.
pub(crate) fn add_timers(
    items: &HashMap<(u32, u128), Item>,
    timers: &mut HashSet<(u32, u128, u64, u8)>,
) {
    for (&(tenant, id), item) in items {
        for t in item.timers() {
            timers.insert((tenant, id, t.due.as_millis(), request_timer_code(t.kind)));
        }
    }
}

/// The item timer of an expected timer key whose code is not a connection timer's.
pub(crate) fn due_timer(tenant: TenantId, id: u128, due: Timestamp, code: u8) -> DueItemTimer {
    DueItemTimer {
        due,
        tenant,
        item: RequestItemId::from_u128(id),
        timer: request::Timer {
            due,
            kind: request_timer_from_code(code).expect("replayed timer"),
        },
    }
}

/// Compares the item projections, the two indexes and the intents with the replay.
pub(crate) fn compare(
    reader: &Reader,
    tenants: &Tenants,
    mut items: HashMap<(u32, u128), Item>,
    report: &mut Report,
) -> Result<(), Error> {
    // The indexes and intents the replayed items imply, keyed by tenant text.
    let mut requests: HashSet<(String, u128, u128)> = HashSet::new();
    let mut open: HashSet<(String, String, u8, String, u128)> = HashSet::new();
    let mut intents: HashSet<(String, u128)> = HashSet::new();
    let mut people: HashSet<(String, u8, String, u128)> = HashSet::new();
    for (&(tenant, id), item) in &items {
        let t = tenants.id(tenant).as_str().to_owned();
        let spec = &item.spec;
        requests.insert((t.clone(), spec.request.as_u128(), id));
        for (role, identity) in super::people(item) {
            people.insert((t.clone(), role as u8, identity.to_owned(), id));
        }
        if !item.status.is_terminal() {
            open.insert((
                t.clone(),
                spec.requested_for.as_str().to_owned(),
                object_kind_code(spec.object.kind),
                spec.object.id.as_str().to_owned(),
                id,
            ));
        }
        if !item.pending_effects().is_empty() {
            intents.insert((t, id));
        }
    }
    report.item_intents = intents.len() as u64;

    let table = reader.open(REQUEST_INDEX)?;
    for entry in table.range::<(&str, u128, u128)>(..)? {
        let (k, _) = entry?;
        let (t, r, i) = k.value();
        if !requests.remove(&(t.to_owned(), r, i)) {
            push(report, index_difference("request_index", t, i, false));
        }
    }
    let mut left: Vec<_> = requests.into_iter().collect();
    left.sort_unstable();
    for (t, _, i) in left {
        push(report, index_difference("request_index", &t, i, true));
    }

    let table = reader.open(REQUEST_OPEN)?;
    for entry in table.range::<(&str, &str, u8, &str, u128)>(..)? {
        let (k, _) = entry?;
        let (t, who, kind, what, i) = k.value();
        if !open.remove(&(t.to_owned(), who.to_owned(), kind, what.to_owned(), i)) {
            push(report, index_difference("request_open", t, i, false));
        }
    }
    let mut left: Vec<_> = open.into_iter().collect();
    left.sort_unstable();
    for (t, _, _, _, i) in left {
        push(report, index_difference("request_open", &t, i, true));
    }

    let table = reader.open(REQUEST_PEOPLE)?;
    for entry in table.range::<(&str, u8, &str, u128)>(..)? {
        let (k, _) = entry?;
        let (t, role, who, i) = k.value();
        if !people.remove(&(t.to_owned(), role, who.to_owned(), i)) {
            push(report, index_difference("request_people", t, i, false));
        }
    }
    let mut left: Vec<_> = people.into_iter().collect();
    left.sort_unstable();
    for (t, _, _, i) in left {
        push(report, index_difference("request_people", &t, i, true));
    }

    let table = reader.open(REQUEST_INTENTS)?;
    for entry in table.range::<(&str, u128)>(..)? {
        let (k, _) = entry?;
        let (t, i) = k.value();
        if !intents.remove(&(t.to_owned(), i)) {
            match TenantId::parse(t) {
                Ok(tenant) => push(
                    report,
                    Difference::IntentUnexpected(ItemIntent {
                        tenant,
                        item: RequestItemId::from_u128(i),
                    }),
                ),
                Err(_) => push(report, index_difference("request_intents", t, i, false)),
            }
        }
    }
    let mut left: Vec<ItemIntent> = intents
        .into_iter()
        .filter_map(|(t, i)| {
            Some(ItemIntent {
                tenant: TenantId::parse(&t).ok()?,
                item: RequestItemId::from_u128(i),
            })
        })
        .collect();
    left.sort_unstable();
    for intent in left {
        push(report, Difference::IntentMissing(intent));
    }

    let projection = ProjectionTable {
        table: REQUEST_ITEMS,
        name: "request_items",
        decode: |tenant, id, bytes| codec::decode_item(tenant, RequestItemId::from_u128(id), bytes),
        difference: |tenant, id, replayed, stored| {
            verify::Difference::Request(Difference::Item {
                tenant,
                id: RequestItemId::from_u128(id),
                replayed,
                stored,
            })
        },
    };
    compare_projection(reader, &projection, tenants, &mut items, report)
}

fn index_difference(table: &'static str, tenant: &str, item: u128, expected: bool) -> Difference {
    Difference::Index {
        table,
        tenant: tenant.to_owned(),
        item: RequestItemId::from_u128(item),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jitflow_core::id::{AccessRequestId, IdentityId, ObjectId};
    use jitflow_core::lifecycle::{Actor, Config};
    use jitflow_core::request::submit::{ObjectKind, ObjectRef, item_id};
    use jitflow_core::request::{
        ApprovalScheme, ApprovalStep, Command, Context, Existing, ItemSpec, RequestType, TimerKind,
        decide,
    };
    use redb::backends::InMemoryBackend;

    use super::*;
    use crate::batch::{Batch, Entry};
    use crate::open::Options;
    use crate::store::Store;
    use crate::tables::TIMERS;
    use crate::test_support::{now, policy};
    use crate::timers::Due;

    const REQUEST: AccessRequestId = AccessRequestId::from_u128(0x5eed);

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn spec() -> ItemSpec {
        ItemSpec {
            id: item_id(REQUEST, 0),
            request: REQUEST,
            request_type: RequestType::Grant,
            requested_for: IdentityId::parse("dave").unwrap(),
            requester: IdentityId::parse("alice").unwrap(),
            object: ObjectRef {
                kind: ObjectKind::Role,
                id: ObjectId::parse("auditors").unwrap(),
            },
            comment: None,
            client_metadata: Default::default(),
            request_metadata: Default::default(),
            start_date: None,
            remove_date: None,
            accounts: Vec::new(),
            native_identity: None,
            form_instance_id: None,
        }
    }

    /// Decides `command` for the item as stored, and appends its events in one batch.
    fn apply(store: &Store, command: Command) -> Item {
        let id = item_id(REQUEST, 0);
        let before = store.reader().unwrap().request_item(&tenant(), id).unwrap();
        let (policy, config) = (policy(), Config::default());
        let bob = Actor::Identity(IdentityId::parse("bob").unwrap());
        let ctx = Context {
            now: now(),
            actor: &bob,
            admin: false,
            policy: &policy,
            config: &config,
            running_activation: None,
        };
        let mut batch = Batch::new();
        let mut state = before.clone();
        for event in decide(id, before.as_ref(), &command, &ctx).unwrap() {
            let after = request::evolve(state, &event).unwrap();
            state = Some(after.clone());
            batch.push(Entry::Request {
                tenant: tenant(),
                event,
                after: Box::new(after),
            });
        }
        store.append_batch(&batch).unwrap();
        state.unwrap()
    }

    fn submit() -> Command {
        Command::Submit {
            spec: Box::new(spec()),
            approval: ApprovalStep::Approvers {
                approvers: vec![IdentityId::parse("bob").unwrap()],
                scheme: ApprovalScheme::GovernanceGroup,
                expires_after: Duration::from_secs(3600),
            },
            existing: Existing::default(),
        }
    }

    #[test]
    fn items_are_indexed_while_open_and_verify_clean() {
        let store = Store::open_with_backend(InMemoryBackend::new(), Options::default()).unwrap();
        let id = item_id(REQUEST, 0);
        let object = spec().object;
        let dave = IdentityId::parse("dave").unwrap();

        let pending = apply(&store, submit());
        let reader = store.reader().unwrap();
        assert_eq!(
            reader.request_item(&tenant(), id).unwrap(),
            Some(pending.clone())
        );
        assert_eq!(
            reader.request_items(&tenant(), REQUEST).unwrap(),
            vec![pending]
        );
        assert_eq!(
            reader.open_items(&tenant(), &dave, &object).unwrap().len(),
            1
        );
        let timers = reader.due_timers(None, None, 10).unwrap();
        assert!(matches!(
            &timers[..],
            [Due::Item(t)] if t.item == id && t.timer.kind == TimerKind::ApprovalExpiry
        ));
        assert!(reader.request_intents(None, 10).unwrap().is_empty());
        drop(reader);

        // Approved: the grant's intent is recorded until its result comes.
        apply(&store, Command::Approve { comment: None });
        let reader = store.reader().unwrap();
        assert_eq!(reader.request_intents(None, 10).unwrap().len(), 1);
        assert!(reader.due_timers(None, None, 10).unwrap().is_empty());
        drop(reader);
        assert!(store.verify().unwrap().is_clean());

        apply(&store, Command::GrantSucceeded { attempt: 1 });
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "{:#?}", report.differences);
        assert_eq!((report.items, report.item_intents), (1, 0));
        let reader = store.reader().unwrap();
        assert!(reader.request_intents(None, 10).unwrap().is_empty());
        assert_eq!(
            reader.open_items(&tenant(), &dave, &object).unwrap().len(),
            1,
            "granted is still open (it can be removed)"
        );
    }

    #[test]
    fn verify_reports_a_lost_item_timer_and_index_row() {
        let store = Store::open_with_backend(InMemoryBackend::new(), Options::default()).unwrap();
        let item = apply(&store, submit());
        store.checkpoint(None).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        {
            let due = item.approval.expires_at.unwrap().as_millis();
            let mut timers = txn.open_table(TIMERS).unwrap();
            let code = request_timer_code(TimerKind::ApprovalExpiry);
            timers
                .remove((due, "acme", item.id().as_u128(), code))
                .unwrap()
                .expect("indexed");
            let mut open = txn.open_table(REQUEST_OPEN).unwrap();
            let key = (
                "acme",
                "dave",
                object_kind_code(ObjectKind::Role),
                "auditors",
            );
            open.remove((key.0, key.1, key.2, key.3, item.id().as_u128()))
                .unwrap()
                .expect("indexed");
        }
        txn.commit().unwrap();
        let report = store.verify().unwrap();
        let found = |f: &dyn Fn(&Difference) -> bool| {
            report.differences.iter().any(|d| match d {
                verify::Difference::Request(d) => f(d),
                _ => false,
            })
        };
        assert!(found(
            &|d| matches!(d, Difference::TimerMissing(t) if t.item == item.id())
        ));
        assert!(found(&|d| matches!(
            d,
            Difference::Index {
                table: "request_open",
                expected: true,
                ..
            }
        )));
        assert_eq!(report.differences.len(), 2, "{:#?}", report.differences);
    }

    #[test]
    fn a_file_without_the_people_index_gets_it_rebuilt_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        let store = Store::open(&path, Options::default()).unwrap();
        let item = apply(&store, submit());
        store.checkpoint(None).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        assert!(txn.delete_table(REQUEST_PEOPLE).unwrap());
        txn.commit().unwrap();
        drop(store);
        let store = Store::open(&path, Options::default()).unwrap();
        assert!(store.verify().unwrap().is_clean());
        let reader = store.reader().unwrap();
        let scope = crate::request_query::Scope {
            requested_for: Some(item.spec.requested_for.clone()),
            ..Default::default()
        };
        let page = reader
            .query_items(
                &tenant(),
                crate::query::REQUEST_STATUS,
                &crate::query::Query::default(),
                &scope,
                |_| true,
                |i| i,
            )
            .unwrap();
        assert_eq!(page.items, vec![item]);
    }

    #[test]
    fn verify_reports_a_lost_people_row() {
        let store = Store::open_with_backend(InMemoryBackend::new(), Options::default()).unwrap();
        let item = apply(&store, submit());
        store.checkpoint(None).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        {
            let mut people = txn.open_table(REQUEST_PEOPLE).unwrap();
            let key = (
                "acme",
                2u8,
                item.spec.requester.as_str(),
                item.id().as_u128(),
            );
            people.remove(key).unwrap().expect("indexed");
        }
        txn.commit().unwrap();
        let report = store.verify().unwrap();
        assert_eq!(report.differences.len(), 1, "{:#?}", report.differences);
        assert!(matches!(
            &report.differences[0],
            verify::Difference::Request(Difference::Index {
                table: "request_people",
                expected: true,
                ..
            })
        ));
    }

    #[test]
    fn a_file_without_request_tables_gets_them_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        let store = Store::open(&path, Options::default()).unwrap();
        // A file written before access requests: the tables do not exist.
        store.checkpoint(None).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        assert!(txn.delete_table(REQUEST_ITEMS).unwrap());
        assert!(txn.delete_table(REQUEST_INTENTS).unwrap());
        assert!(txn.delete_table(REQUEST_INDEX).unwrap());
        assert!(txn.delete_table(REQUEST_OPEN).unwrap());
        assert!(txn.delete_table(REQUEST_PEOPLE).unwrap());
        txn.commit().unwrap();
        drop(store);
        let store = Store::open(&path, Options::default()).unwrap();
        let reader = store.reader().unwrap();
        assert!(reader.request_items(&tenant(), REQUEST).unwrap().is_empty());
        assert!(reader.request_intents(None, 10).unwrap().is_empty());
        drop(reader);
        assert!(store.verify().unwrap().is_clean());
    }
}
