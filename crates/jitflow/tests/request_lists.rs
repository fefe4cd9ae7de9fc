//! The access request lists (request status, administration, pending and completed approvals,
//! approval summary, approvers) against a naive model: every answer served from the people
//! index equals a filter of all items written out in the test, and paging through a list with
//! small pages yields each row exactly once.

mod common;

use std::cmp::Ordering;
use std::time::Duration;

use common::{Harness, Storage, Target, caller, config};
use jitflow::Caller;
use jitflow::Error;
use jitflow::clock::ManualClock;
use jitflow::query::{
    COMPLETED_APPROVALS, Collection, PENDING_APPROVALS, Query, REQUEST_ADMINISTRATION,
    REQUEST_STATUS,
};
use jitflow::request_lists::{Approvals, Scope};
use jitflow::requests::Rights;
use jitflow_core::filter::{Fields, parse_filter, parse_sorters};
use jitflow_core::id::{AccessRequestId, IdentityId, ObjectId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::request::submit::{ObjectKind, ObjectRef, RequestedItem};
use jitflow_core::request::{
    ApprovalRow, Item, ItemStatus, RequestState, RequestType, Submission, WorkItemState,
    approval_id,
};
use jitflow_core::time::Timestamp;

const PEOPLE: &[&str] = &["alice", "dave", "erin", "frank"];

/// A list scope written out as a predicate on items.
type Model = Box<dyn Fn(&Item) -> bool>;

fn who(name: &str) -> Caller {
    Caller {
        tenant: caller().tenant,
        actor: Actor::Identity(IdentityId::parse(name).unwrap()),
    }
}

fn id(name: &str) -> IdentityId {
    IdentityId::parse(name).unwrap()
}

/// An engine whose approval step is bob and carol, with a varied history: 16 requests by
/// three requesters for four identities, a minute apart, then some approved, some rejected and
/// some cancelled. Returns the harness and every request id.
async fn populated(store: &Storage) -> (Harness, Vec<AccessRequestId>) {
    let clock = ManualClock::new(Timestamp::from_millis(common::START).unwrap());
    let mut config = config();
    config.approvers = vec![id("bob"), id("carol")];
    config.approval_timeout = Duration::from_secs(24 * 3600);
    let h = Harness::open_with(store, clock.clone(), Target::default(), config).await;
    let mut requests = Vec::new();
    for n in 0..16usize {
        let requester = ["alice", "dave", "erin"][n % 3];
        let target = PEOPLE[(n / 3 + n) % 4];
        let submission = Submission {
            request_type: RequestType::Grant,
            requested_for: Some(vec![id(target)]),
            requested_items: Some(vec![RequestedItem {
                object: Some(ObjectRef {
                    kind: ObjectKind::Entitlement,
                    id: ObjectId::parse(&format!("ent-{:02}", (n * 7) % 16)).unwrap(),
                }),
                ..Default::default()
            }]),
            requested_for_with_items: None,
            client_metadata: Default::default(),
        };
        let (request, _) = h
            .engine
            .submit_request(&who(requester), Rights::Admin, &submission)
            .await
            .unwrap();
        requests.push(request);
        clock.advance(Duration::from_secs(60));
    }
    for (n, request) in requests.iter().enumerate() {
        let item = h.engine.request_items(&caller().tenant, *request).unwrap()[0].clone();
        let approval = approval_id(item.id());
        match n % 4 {
            0 => {
                h.engine
                    .approve(&who("bob"), Rights::User, approval, None)
                    .await
                    .unwrap();
            }
            1 => {
                h.engine
                    .reject(&who("carol"), Rights::User, approval, Some("no".into()))
                    .await
                    .unwrap();
            }
            2 if n % 3 == 0 => {
                h.engine
                    .cancel_request(&who("alice"), Rights::Admin, *request, "gone".into())
                    .await
                    .unwrap();
            }
            _ => {}
        }
        clock.advance(Duration::from_secs(7));
    }
    // Let the approved grants finish, so that the lists and the model read one state.
    for _ in 0..3000 {
        let granting = all_items(&h, &requests)
            .iter()
            .any(|i| i.status == ItemStatus::Granting);
        if !granting {
            return (h, requests);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the approved grants never finished");
}

/// Stops the engine and checks the store against its log.
async fn finish(h: Harness) {
    h.engine.shutdown().await;
    let report = h.engine.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
}

fn all_items(h: &Harness, requests: &[AccessRequestId]) -> Vec<Item> {
    requests
        .iter()
        .flat_map(|r| h.engine.request_items(&caller().tenant, *r).unwrap())
        .collect()
}

/// The order of a list written out: each sorter, then `id` in the direction of the last.
fn naive_order<R: Fields>(rows: &mut [R], sorters: &str, default: &str) {
    let text = if sorters.is_empty() { default } else { sorters };
    let mut keys: Vec<(String, bool)> = text
        .split(',')
        .map(|s| match s.strip_prefix('-') {
            Some(f) => (f.to_owned(), true),
            None => (s.to_owned(), false),
        })
        .collect();
    if !keys.iter().any(|(f, _)| f == "id") {
        let descending = keys.last().unwrap().1;
        keys.push(("id".to_owned(), descending));
    }
    rows.sort_by(|a, b| {
        for (field, descending) in &keys {
            let o = a.field(field).cmp(&b.field(field));
            let o = if *descending { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
}

/// Every row of a list, read a page of 3 at a time through `offset`, with the count of the
/// first page.
fn paged<R>(
    mut page: impl FnMut(&Query) -> Result<jitflow::query::Page<R>, Error>,
    base: &Query,
) -> (Vec<R>, u64) {
    let mut rows = Vec::new();
    let mut total = None;
    loop {
        let query = Query {
            offset: rows.len(),
            limit: 3,
            count: true,
            ..base.clone()
        };
        let p = page(&query).unwrap();
        total.get_or_insert(p.total.unwrap());
        assert_eq!(p.total, total, "the count does not depend on the page");
        let n = p.items.len();
        rows.extend(p.items);
        if n < 3 {
            return (rows, total.unwrap());
        }
    }
}

fn query(collection: &Collection, filters: &str, sorters: &str) -> Query {
    let mut q = Query::default();
    if !filters.is_empty() {
        q.filter = Some(parse_filter(filters, collection.fields).unwrap());
    }
    if !sorters.is_empty() {
        let names: Vec<&'static str> = collection.sorters.iter().map(|s| s.name).collect();
        q.sorters = parse_sorters(sorters, &names).unwrap();
    }
    q
}

fn ids(items: &[Item]) -> Vec<String> {
    items.iter().map(|i| i.id().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_equal_a_naive_filter_and_page_each_row_once() {
    let Some(store) = Storage::new() else {
        return;
    };
    let (h, requests) = populated(&store).await;
    let all = all_items(&h, &requests);
    assert_eq!(all.len(), 16);
    let mid = all[8].created.to_rfc3339();
    let request = requests[5].to_string();
    let scopes: Vec<(Scope, Model)> = vec![
        (Scope::default(), Box::new(|_| true)),
        (
            Scope {
                requested_for: Some(id("alice")),
                ..Scope::default()
            },
            Box::new(|i| i.spec.requested_for == id("alice")),
        ),
        (
            Scope {
                requested_by: Some(id("dave")),
                ..Scope::default()
            },
            Box::new(|i| i.spec.requester == id("dave")),
        ),
        (
            Scope {
                regarding: Some(id("erin")),
                ..Scope::default()
            },
            Box::new(|i| i.spec.requester == id("erin") || i.spec.requested_for == id("erin")),
        ),
        (
            Scope {
                assigned_to: Some(id("bob")),
                executing_only: true,
                ..Scope::default()
            },
            Box::new(|i| i.request_state() == RequestState::Executing),
        ),
        (
            Scope {
                requested_for: Some(id("frank")),
                requested_by: Some(id("alice")),
                ..Scope::default()
            },
            Box::new(|i| i.spec.requested_for == id("frank") && i.spec.requester == id("alice")),
        ),
    ];
    let filters = [
        String::new(),
        format!("created gt \"{mid}\""),
        format!("accessRequestId eq \"{request}\""),
    ];
    let sorters = ["", "created", "-modified", "name,-created"];
    let mut non_empty = 0;
    for (scope, admits) in &scopes {
        for filter in &filters {
            for sorter in sorters {
                let q = query(REQUEST_STATUS, filter, sorter);
                let (rows, total) = paged(
                    |q| h.engine.request_status(&caller(), Rights::Admin, scope, q),
                    &q,
                );
                let mut expected: Vec<Item> = all
                    .iter()
                    .filter(|i| admits(i) && q.filter.as_ref().is_none_or(|f| f.matches(*i)))
                    .cloned()
                    .collect();
                naive_order(&mut expected, sorter, "-created");
                let what = format!("{scope:?} {filter} {sorter}");
                assert_eq!(ids(&rows), ids(&expected), "{what}");
                assert_eq!(total, expected.len() as u64, "{what}");
                non_empty += usize::from(!expected.is_empty());
            }
        }
    }
    assert!(non_empty > 30, "the cases must select something");

    // The administrators' list filters on the request state too.
    let q = query(
        REQUEST_ADMINISTRATION,
        "status in (\"REJECTED\", \"CANCELLED\")",
        "accessRequestId",
    );
    let page = h
        .engine
        .request_administration(&caller(), Rights::Admin, &Scope::default(), &q)
        .unwrap();
    let mut expected: Vec<Item> = all
        .iter()
        .filter(|i| {
            matches!(
                i.request_state(),
                RequestState::Rejected | RequestState::Cancelled
            )
        })
        .cloned()
        .collect();
    naive_order(&mut expected, "accessRequestId", "");
    assert_eq!(ids(&page.items), ids(&expected));
    assert!(expected.len() >= 4);
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_lists_and_summary_equal_a_naive_filter() {
    let Some(store) = Storage::new() else {
        return;
    };
    let (h, requests) = populated(&store).await;
    let all = all_items(&h, &requests);
    for (which, collection) in [
        (Approvals::Pending, PENDING_APPROVALS),
        (Approvals::Completed, COMPLETED_APPROVALS),
    ] {
        for (filter, sorter) in [
            ("", ""),
            ("requestedFor.id in (\"alice\", \"dave\")", "created"),
            ("", "-modified"),
        ] {
            let q = query(collection, filter, sorter);
            let (rows, total) = paged(
                |q| {
                    h.engine
                        .approvals(&who("carol"), Rights::User, which, None, q)
                },
                &q,
            );
            let mut expected: Vec<ApprovalRow> = all
                .iter()
                .filter(|i| {
                    (i.approval.state == WorkItemState::Pending) == (which == Approvals::Pending)
                })
                .cloned()
                .map(ApprovalRow)
                .filter(|r| q.filter.as_ref().is_none_or(|f| f.matches(r)))
                .collect();
            let default = if which == Approvals::Pending {
                "-created"
            } else {
                "-modified"
            };
            naive_order(&mut expected, sorter, default);
            let got: Vec<_> = rows.iter().map(|r| r.0.id()).collect();
            let want: Vec<_> = expected.iter().map(|r| r.0.id()).collect();
            assert_eq!(got, want, "{which:?} {filter} {sorter}");
            assert_eq!(total, want.len() as u64);
            assert!(!want.is_empty(), "{which:?} {filter} {sorter}");
        }
    }
    // An approval's `id` filter names the approval, not the item.
    let target = approval_id(all[3].id());
    let q = query(PENDING_APPROVALS, &format!("id eq \"{target}\""), "");
    let page = h
        .engine
        .approvals(&who("bob"), Rights::User, Approvals::Pending, None, &q)
        .unwrap();
    let pending = all[3].approval.state == WorkItemState::Pending;
    assert_eq!(page.items.len(), usize::from(pending));

    let summary = h
        .engine
        .approval_summary(&who("bob"), Rights::User, None, None)
        .unwrap();
    let count = |s: WorkItemState| all.iter().filter(|i| i.approval.state == s).count() as u64;
    assert_eq!(summary.pending, count(WorkItemState::Pending));
    assert_eq!(summary.approved, count(WorkItemState::Approved));
    assert_eq!(summary.rejected, count(WorkItemState::Rejected));
    assert!(summary.pending > 0 && summary.approved > 0 && summary.rejected > 0);
    // Only decisions from `from` on count; pending approvals count by creation.
    let from = all[10].created;
    let later = h
        .engine
        .approval_summary(&who("bob"), Rights::User, None, Some(from))
        .unwrap();
    let since = |s: WorkItemState| {
        all.iter()
            .filter(|i| i.approval.state == s && i.approval.decided_at.unwrap_or(i.created) >= from)
            .count() as u64
    };
    assert_eq!(later.pending, since(WorkItemState::Pending));
    assert_eq!(later.approved, since(WorkItemState::Approved));
    assert!(later.pending < summary.pending);

    // Someone who approves nothing has empty lists.
    let none = h
        .engine
        .approvals(
            &who("zed"),
            Rights::User,
            Approvals::Pending,
            None,
            &Query::default(),
        )
        .unwrap();
    assert!(none.items.is_empty());
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_only_their_own_and_admins_anyone() {
    let Some(store) = Storage::new() else {
        return;
    };
    let (h, requests) = populated(&store).await;
    let all = all_items(&h, &requests);
    let q = Query::default();
    // A user's list without an identity is what it asked for or what was asked for it.
    let page = h
        .engine
        .request_status(&who("erin"), Rights::User, &Scope::default(), &q)
        .unwrap();
    let erin = id("erin");
    let expected = all
        .iter()
        .filter(|i| i.spec.requester == erin || i.spec.requested_for == erin)
        .count();
    assert_eq!(page.items.len(), expected);
    assert!(expected > 0 && expected < all.len());
    let other = Scope {
        requested_for: Some(id("alice")),
        ..Scope::default()
    };
    assert!(matches!(
        h.engine
            .request_status(&who("erin"), Rights::User, &other, &q),
        Err(Error::Forbidden(_))
    ));
    assert!(
        h.engine
            .request_status(&who("erin"), Rights::Admin, &other, &q)
            .is_ok()
    );
    assert!(matches!(
        h.engine
            .request_administration(&who("erin"), Rights::User, &Scope::default(), &q),
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        h.engine.approvals(
            &who("erin"),
            Rights::User,
            Approvals::Pending,
            Some(&id("bob")),
            &q
        ),
        Err(Error::Forbidden(_))
    ));

    // The approvers of a request: bob and carol while pending, nobody once decided.
    let pending = all
        .iter()
        .find(|i| i.approval.state == WorkItemState::Pending)
        .unwrap();
    let approvers = h
        .engine
        .request_approvers(&caller(), Rights::Admin, pending.spec.request)
        .unwrap();
    assert_eq!(
        approvers,
        vec![
            (id("bob"), pending.approval.id),
            (id("carol"), pending.approval.id)
        ]
    );
    let decided = all
        .iter()
        .find(|i| i.approval.state == WorkItemState::Approved)
        .unwrap();
    assert!(
        h.engine
            .request_approvers(&caller(), Rights::Admin, decided.spec.request)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        h.engine
            .request_approvers(&caller(), Rights::Admin, AccessRequestId::from_u128(7)),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        h.engine
            .request_approvers(&caller(), Rights::User, pending.spec.request),
        Err(Error::Forbidden(_))
    ));
    finish(h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_people_index_survives_a_restart() {
    let Some(store) = Storage::new() else {
        return;
    };
    let (h, requests) = populated(&store).await;
    let before = h
        .engine
        .request_status(
            &caller(),
            Rights::Admin,
            &Scope {
                assigned_to: Some(id("carol")),
                ..Scope::default()
            },
            &Query::default(),
        )
        .unwrap();
    assert_eq!(before.items.len(), requests.len());
    let h = h.restart().await;
    let after = h
        .engine
        .request_status(
            &caller(),
            Rights::Admin,
            &Scope {
                assigned_to: Some(id("carol")),
                ..Scope::default()
            },
            &Query::default(),
        )
        .unwrap();
    assert_eq!(ids(&after.items), ids(&before.items));
    finish(h).await;
}
