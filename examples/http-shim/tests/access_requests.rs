//! The access-requests and access-request-approvals contracts over HTTP: every endpoint, its
//! documented errors and limits, USER against ORG_ADMIN rights, and a grant with approval from
//! submission to sunset.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Harness, TENANT, Target, error_text};
use jitflow_core::id::IdentityId;
use jitflow_shim::auth::Level;
use serde_json::{Value, json};

/// Every scope a user needs for its own access requests and approvals.
const USER_SCOPES: &[&str] = &[
    "idn:access-request-self:manage",
    "idn:requestable-objects:read",
    "idn:access-request-status:read",
    "idn:access-request-approvals:read",
    "idn:access-request-approvals:manage",
];

/// Every access request scope.
const ADMIN_SCOPES: &[&str] = &[
    "idn:access-request:manage",
    "idn:requestable-objects:read",
    "idn:access-request-status:read",
    "idn:access-request-administration:read",
    "idn:access-request-administration:manage",
    "idn:access-request-approvals:read",
    "idn:access-request-approvals:manage",
];

/// A shim whose approval step is bob, expiring after a day.
async fn harness() -> Harness {
    Harness::with_approver("bob").await
}

fn user(h: &Harness, name: &str) -> String {
    h.token(TENANT, name, USER_SCOPES, &[Level::User])
}

fn admin(h: &Harness) -> String {
    h.token(TENANT, "admin", ADMIN_SCOPES, &[Level::OrgAdmin])
}

/// A grant of entitlement `what` for `whom`, with optional extra fields on the item.
fn grant(whom: &str, what: &str, extra: Value) -> Value {
    let mut item = json!({"type": "ENTITLEMENT", "id": what, "comment": "for the audit"});
    if let (Value::Object(item), Value::Object(extra)) = (&mut item, extra) {
        item.extend(extra);
    }
    json!({"requestedFor": [whom], "requestType": "GRANT_ACCESS", "requestedItems": [item]})
}

fn instant(h: &Harness, plus: Duration) -> String {
    let now = h.engine().now();
    jitflow_core::time::Timestamp::from_millis(now.as_millis() + plus.as_millis() as u64)
        .unwrap()
        .to_rfc3339()
}

/// Submits as `token` and returns the access request id.
async fn submit(h: &Harness, token: &str, body: Value) -> String {
    let answer = h
        .expect(202, "POST", "/access-requests/v1", Some(token), Some(body))
        .await;
    answer["newRequests"][0]["accessRequestIds"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The status rows `token` sees with `query`.
async fn status(h: &Harness, token: &str, query: &str) -> Vec<Value> {
    let path = format!("/access-request-status/v1{query}");
    let body = h.expect(200, "GET", &path, Some(token), None).await;
    body.as_array().unwrap().clone()
}

/// The one status row of request `id`, as an admin sees it.
async fn row(h: &Harness, id: &str) -> Value {
    let filter = format!("?filters=accessRequestId%20eq%20%22{id}%22");
    let rows = status(h, &admin(h), &filter).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows[0].clone()
}

/// The approval id of request `id`'s one item.
async fn approval_of(h: &Harness, id: &str) -> String {
    row(h, id).await["approvalIds"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits (a bounded number of short sleeps) until request `id`'s row satisfies `done`.
async fn wait_row(h: &Harness, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..1000 {
        let r = row(h, id).await;
        if done(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("request {id} never reached {what}: {}", row(h, id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_with_approval_walkthrough_from_submit_to_sunset() {
    let h = harness().await;
    let (alice, bob) = (user(&h, "alice"), user(&h, "bob"));
    let remove = instant(&h, Duration::from_secs(2 * 3600));
    let answer = h
        .expect(
            202,
            "POST",
            "/access-requests/v1",
            Some(&alice),
            Some(grant(
                "alice",
                "finance-read",
                json!({"removeDate": remove}),
            )),
        )
        .await;
    let tracking = &answer["newRequests"][0];
    assert_eq!(tracking["requestedFor"], "alice");
    assert_eq!(
        tracking["requestedItemsDetails"],
        json!([{"type": "ENTITLEMENT", "id": "finance-read"}])
    );
    assert!(tracking["attributesHash"].is_i64());
    assert_eq!(answer["existingRequests"], json!([]));
    let id = tracking["accessRequestIds"][0].as_str().unwrap().to_owned();

    // Alice sees her request waiting for approval; bob sees the approval.
    let mine = status(&h, &alice, "").await;
    assert_eq!(mine.len(), 1);
    let r = &mine[0];
    assert_eq!(r["state"], "EXECUTING");
    assert_eq!(r["cancelable"], true);
    assert_eq!(r["accessRequestId"], id.as_str());
    // The row's `id` is the access request's (the contract's), `name` the object's.
    assert_eq!(r["id"], id.as_str());
    assert_eq!(r["name"], "finance-read");
    assert_eq!(r["requestType"], "GRANT_ACCESS");
    assert_eq!(r["requestedFor"]["id"], "alice");
    assert_eq!(r["removeDate"], remove.as_str());
    assert_eq!(r["requesterComment"]["comment"], "for the audit");
    assert_eq!(r["approvalDetails"][0]["status"], "PENDING");
    assert_eq!(r["approvalDetails"][0]["currentOwner"]["id"], "bob");
    assert_eq!(r["accessRequestPhases"][0]["name"], "APPROVAL_PHASE");
    let approval = r["approvalIds"][0].as_str().unwrap().to_owned();
    let pending = h
        .expect(
            200,
            "GET",
            "/access-request-approvals/v1/pending",
            Some(&bob),
            None,
        )
        .await;
    let pending = pending.as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["id"], approval.as_str());
    assert_eq!(pending[0]["accessRequestId"], id.as_str());
    assert_eq!(pending[0]["requestedFor"]["id"], "alice");
    assert_eq!(pending[0]["requestedObject"]["id"], "finance-read");
    assert_eq!(pending[0]["owner"]["id"], "bob");
    let summary = h
        .expect(
            200,
            "GET",
            "/access-request-approvals/v1/approval-summary",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(summary, json!({"pending": 1, "approved": 0, "rejected": 0}));

    // Bob approves; the access is provisioned.
    h.expect(
        202,
        "POST",
        &format!("/access-request-approvals/v1/{approval}/approve"),
        Some(&bob),
        Some(json!({"comment": "ok for a quarter"})),
    )
    .await;
    let r = wait_row(&h, &id, "provisioned", |r| {
        r["accessRequestPhases"][1]["state"] == "COMPLETED"
    })
    .await;
    assert_eq!(r["state"], "REQUEST_COMPLETED");
    assert_eq!(r["cancelable"], false);
    assert_eq!(r["approvalDetails"][0]["status"], "APPROVED");
    assert_eq!(h.target.0.grants.load(Ordering::SeqCst), 1);
    assert_eq!(h.target.0.held.lock().unwrap().len(), 1);
    let completed = h
        .expect(
            200,
            "GET",
            "/access-request-approvals/v1/completed",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(completed[0]["id"], approval.as_str());
    assert_eq!(completed[0]["state"], "APPROVED");
    assert_eq!(completed[0]["reviewedBy"]["id"], "bob");
    assert_eq!(
        completed[0]["reviewerComment"]["comment"],
        "ok for a quarter"
    );
    let pending = h
        .expect(
            200,
            "GET",
            "/access-request-approvals/v1/pending",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(pending, json!([]));

    // The identity's entitlement details show the account and the sunset.
    let details_path = "/revocable-objects/v1?identityId=me&entitlementId=finance-read";
    let details = h.expect(200, "GET", details_path, Some(&alice), None).await;
    assert_eq!(details["identityId"], "alice");
    assert_eq!(details["entitlement"]["id"], "finance-read");
    assert_eq!(details["accountTargets"][0]["removeDate"], remove.as_str());
    assert_eq!(details["accountTargets"][0]["revocable"], true);
    let admin = admin(&h);
    h.expect(
        200,
        "GET",
        "/revocable-objects/v1?identityId=alice&entitlementId=finance-read",
        Some(&admin),
        None,
    )
    .await;
    h.expect(
        403,
        "GET",
        "/revocable-objects/v1?identityId=alice&entitlementId=finance-read",
        Some(&bob),
        None,
    )
    .await;
    h.expect(
        400,
        "GET",
        "/revocable-objects/v1?identityId=me",
        Some(&alice),
        None,
    )
    .await;

    // The sunset removes it.
    h.clock.advance(Duration::from_secs(2 * 3600 + 60));
    for _ in 0..1000 {
        if h.target.0.revokes.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.target.0.revokes.load(Ordering::SeqCst), 1);
    assert!(h.target.0.held.lock().unwrap().is_empty());
    wait_row(&h, &id, "removed", |r| {
        r["accessRequestPhases"][1]["finished"].is_string()
            && r["accessRequestPhases"][1]["state"] == "COMPLETED"
    })
    .await;
    for _ in 0..1000 {
        let (status, _, _) = h.call("GET", details_path, Some(&alice), None).await;
        if status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.expect(404, "GET", details_path, Some(&alice), None).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_checks_auth_body_rules_and_limits() {
    let h = harness().await;
    let alice = user(&h, "alice");
    let path = "/access-requests/v1";
    let body = grant("alice", "finance-read", json!({}));
    // Auth: no token, no scope, the self scope for someone else.
    h.expect(401, "POST", path, None, Some(body.clone())).await;
    let no_scope = h.token(
        TENANT,
        "alice",
        &["idn:access-request-status:read"],
        &[Level::User],
    );
    h.expect(403, "POST", path, Some(&no_scope), Some(body.clone()))
        .await;
    let answer = h
        .expect(
            403,
            "POST",
            path,
            Some(&alice),
            Some(grant("bob", "x", json!({}))),
        )
        .await;
    assert!(error_text(&answer).contains("oneself"));
    // The v2026 form is served too.
    h.expect(
        202,
        "POST",
        "/v2026/access-requests",
        Some(&alice),
        Some(body),
    )
    .await;

    let admin = admin(&h);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"requestedFor": ["alice"], "bogus": 1}), "bogus"),
        (
            json!({"requestedFor": ["alice"], "requestType": "GRANT", "requestedItems": []}),
            "requestType",
        ),
        (
            json!({"requestedFor": ["alice"], "requestedItems": [{"type": "GROUP", "id": "x"}]}),
            "requestedItems[0].type",
        ),
        (
            grant("alice", "x", json!({"removeDate": "tomorrow"})),
            "requestedItems[0].removeDate",
        ),
        (
            grant("alice", "x", json!({"assignmentId": "a1"})),
            "assignmentId",
        ),
        (
            grant("alice", "x", json!({"accountSelection": []})),
            "accountSelection",
        ),
        (json!({"requestType": "GRANT_ACCESS"}), "requestedFor"),
        (
            json!({"requestedFor": ["alice"], "requestType": "REVOKE_ACCESS",
                   "requestedItems": [{"type": "ENTITLEMENT", "id": "x", "comment": "c",
                                       "startDate": instant(&h, Duration::from_secs(3600))}]}),
            "startDate",
        ),
        (
            grant("alice", "x", json!({"removeDate": "2020-01-01T00:00:00Z"})),
            "removeDate",
        ),
    ];
    for (body, names) in cases {
        let answer = h
            .expect(400, "POST", path, Some(&admin), Some(body.clone()))
            .await;
        let text = error_text(&answer);
        assert!(text.contains(names), "{body} -> {text}");
    }
    // The contract's limits: 10 identities with entitlements, 25 entitlements.
    let eleven: Vec<String> = (0..11).map(|i| format!("user{i}")).collect();
    let body =
        json!({"requestedFor": eleven, "requestedItems": [{"type": "ENTITLEMENT", "id": "x"}]});
    let text = error_text(&h.expect(400, "POST", path, Some(&admin), Some(body)).await);
    assert!(text.contains("10"), "{text}");
    let items: Vec<Value> = (0..26)
        .map(|i| json!({"type": "ENTITLEMENT", "id": format!("e{i}")}))
        .collect();
    let body = json!({"requestedFor": ["alice"], "requestedItems": items});
    let text = error_text(&h.expect(400, "POST", path, Some(&admin), Some(body)).await);
    assert!(text.contains("25"), "{text}");
    // Nothing was stored by the refused ones: the admin list holds the one accepted request.
    let all = h
        .expect(
            200,
            "GET",
            "/access-request-administration/v1?count=true",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(all.as_array().unwrap().len(), 1);

    // A duplicate of a request in progress is answered under existingRequests.
    let answer = h
        .expect(
            202,
            "POST",
            path,
            Some(&admin),
            Some(grant("alice", "finance-read", json!({}))),
        )
        .await;
    assert_eq!(answer["newRequests"], json!([]));
    assert_eq!(answer["existingRequests"][0]["requestedFor"], "alice");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_bulk_cancel_and_close() {
    let h = harness().await;
    let (alice, bob, admin) = (user(&h, "alice"), user(&h, "bob"), admin(&h));
    let a = submit(&h, &alice, grant("alice", "e1", json!({}))).await;
    let b = submit(&h, &alice, grant("alice", "e2", json!({}))).await;
    let c = submit(&h, &alice, grant("alice", "e3", json!({}))).await;

    // Cancel: ORG_ADMIN only; the contract's body; an unknown id is 404.
    let cancel = |id: &str| json!({"accountActivityId": id, "comment": "not needed"});
    h.expect(
        403,
        "POST",
        "/access-requests/v1/cancel",
        Some(&alice),
        Some(cancel(&a)),
    )
    .await;
    h.expect(
        400,
        "POST",
        "/access-requests/v1/cancel",
        Some(&admin),
        Some(json!({"accountActivityId": a})),
    )
    .await;
    h.expect(
        404,
        "POST",
        "/access-requests/v1/cancel",
        Some(&admin),
        Some(cancel("00000000-0000-0000-0000-000000000007")),
    )
    .await;
    h.expect(
        202,
        "POST",
        "/access-requests/v1/cancel",
        Some(&admin),
        Some(cancel(&a)),
    )
    .await;
    let r = row(&h, &a).await;
    assert_eq!(r["state"], "CANCELLED");
    assert_eq!(r["cancelledRequestDetails"]["comment"], "not needed");
    assert_eq!(r["cancelledRequestDetails"]["owner"]["id"], "admin");
    // Cancel after the approval step passed is refused; close is the way then.
    let approval = approval_of(&h, &b).await;
    h.expect(
        202,
        "POST",
        &format!("/access-request-approvals/v1/{approval}/approve"),
        Some(&bob),
        None,
    )
    .await;
    let text = error_text(
        &h.expect(
            400,
            "POST",
            "/access-requests/v1/cancel",
            Some(&admin),
            Some(cancel(&b)),
        )
        .await,
    );
    assert!(text.contains("approval step"), "{text}");

    // Bulk cancel: ORG_ADMIN and its scope; 1..=50 ids; one result per id.
    let path = "/access-requests/v1/bulk-cancel";
    let body = |ids: Vec<String>| json!({"accessRequestIds": ids, "comment": "cleanup"});
    h.expect(403, "POST", path, Some(&alice), Some(body(vec![c.clone()])))
        .await;
    let fifty_one = (0..51)
        .map(|i| format!("00000000-0000-0000-0000-{i:012}"))
        .collect();
    let text = error_text(
        &h.expect(400, "POST", path, Some(&admin), Some(body(fifty_one)))
            .await,
    );
    assert!(text.contains("50"), "{text}");
    h.expect(400, "POST", path, Some(&admin), Some(body(vec![])))
        .await;
    h.expect(
        400,
        "POST",
        path,
        Some(&admin),
        Some(body(vec!["nope".into()])),
    )
    .await;
    let unknown = "00000000-0000-0000-0000-000000000009".to_owned();
    let answer = h
        .expect(
            202,
            "POST",
            path,
            Some(&admin),
            Some(body(vec![c.clone(), unknown])),
        )
        .await;
    assert_eq!(answer["results"][0]["status"], 202);
    assert_eq!(answer["results"][1]["status"], 404);
    error_text(&answer["results"][1]["error"]);
    assert_eq!(row(&h, &c).await["state"], "CANCELLED");

    // Close: ORG_ADMIN, no scope needed; 1..=500 ids; the statuses recorded.
    let path = "/access-requests/v1/close";
    let no_scope = h.token(TENANT, "admin", &[], &[Level::OrgAdmin]);
    h.expect(
        403,
        "POST",
        path,
        Some(&alice),
        Some(json!({"accessRequestIds": [b]})),
    )
    .await;
    h.expect(
        400,
        "POST",
        path,
        Some(&no_scope),
        Some(json!({"accessRequestIds": [b], "executionStatus": "Done"})),
    )
    .await;
    let many: Vec<String> = (0..501)
        .map(|i| format!("00000000-0000-0000-0000-{i:012}"))
        .collect();
    let text = error_text(
        &h.expect(
            400,
            "POST",
            path,
            Some(&no_scope),
            Some(json!({"accessRequestIds": many})),
        )
        .await,
    );
    assert!(text.contains("500"), "{text}");
    let d = submit(&h, &alice, grant("alice", "e4", json!({}))).await;
    let answer = h
        .expect(
            202,
            "POST",
            path,
            Some(&no_scope),
            Some(
                json!({"accessRequestIds": [d], "executionStatus": "Completed",
                        "completionStatus": "Success", "message": "handled offline"}),
            ),
        )
        .await;
    assert_eq!(answer["results"][0]["status"], 202);
    assert_eq!(row(&h, &d).await["state"], "REQUEST_COMPLETED");
    // Closing it again is refused per id.
    let answer = h
        .expect(
            202,
            "POST",
            path,
            Some(&no_scope),
            Some(json!({"accessRequestIds": [d]})),
        )
        .await;
    assert_eq!(answer["results"][0]["status"], 400);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_reject_forward_and_bulk_approve() {
    let h = harness().await;
    let (alice, bob, admin) = (user(&h, "alice"), user(&h, "bob"), admin(&h));
    let a = submit(&h, &alice, grant("alice", "e1", json!({}))).await;
    let b = submit(&h, &alice, grant("alice", "e2", json!({}))).await;
    let (pa, pb) = (approval_of(&h, &a).await, approval_of(&h, &b).await);
    let url = |id: &str, action: &str| format!("/access-request-approvals/v1/{id}/{action}");

    // Only an approver (or an admin) decides; the scope is needed; ids are checked.
    let text = error_text(
        &h.expect(403, "POST", &url(&pa, "approve"), Some(&alice), None)
            .await,
    );
    assert!(text.contains("not an approver"), "{text}");
    let no_scope = h.token(
        TENANT,
        "bob",
        &["idn:access-request-approvals:read"],
        &[Level::User],
    );
    h.expect(403, "POST", &url(&pa, "approve"), Some(&no_scope), None)
        .await;
    h.expect(400, "POST", &url("nope", "approve"), Some(&bob), None)
        .await;
    let unknown = "00000000-0000-0000-0000-000000000005";
    h.expect(404, "POST", &url(unknown, "approve"), Some(&bob), None)
        .await;

    // Reject needs its body; a decided approval is not decided again.
    h.expect(400, "POST", &url(&pa, "reject"), Some(&bob), None)
        .await;
    h.expect(
        202,
        "POST",
        &url(&pa, "reject"),
        Some(&bob),
        Some(json!({"comment": "not this quarter"})),
    )
    .await;
    assert_eq!(row(&h, &a).await["state"], "REJECTED");
    let text = error_text(
        &h.expect(400, "POST", &url(&pa, "approve"), Some(&bob), None)
            .await,
    );
    assert!(text.contains("already REJECTED"), "{text}");
    let completed = h
        .expect(
            200,
            "GET",
            "/access-request-approvals/v1/completed",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(completed[0]["state"], "REJECTED");
    assert_eq!(
        completed[0]["reviewerComment"]["comment"],
        "not this quarter"
    );

    // Forward checks the approval, the caller and the body (the full walk is in
    // `forward_then_the_new_owner_approves`).
    let forward = json!({"newOwnerId": "bob", "comment": "on leave"});
    h.expect(
        404,
        "POST",
        &url(unknown, "forward"),
        Some(&bob),
        Some(forward.clone()),
    )
    .await;
    h.expect(
        403,
        "POST",
        &url(&pb, "forward"),
        Some(&alice),
        Some(forward.clone()),
    )
    .await;
    h.expect(
        400,
        "POST",
        &url(&pb, "forward"),
        Some(&bob),
        Some(json!({"newOwnerId": "", "comment": "x"})),
    )
    .await;
    let text = error_text(
        &h.expect(400, "POST", &url(&pb, "forward"), Some(&bob), Some(forward))
            .await,
    );
    assert!(text.contains("already an approver"), "{text}");

    // Bulk approve: ORG_ADMIN and its scope; 1..=50 ids; one result per id.
    let path = "/access-request-approvals/v1/bulk-approve";
    let body = |ids: Vec<String>| json!({"approvalIds": ids, "comment": "ok"});
    h.expect(403, "POST", path, Some(&bob), Some(body(vec![pb.clone()])))
        .await;
    let many = (0..51)
        .map(|i| format!("00000000-0000-0000-0000-{i:012}"))
        .collect();
    let text = error_text(
        &h.expect(400, "POST", path, Some(&admin), Some(body(many)))
            .await,
    );
    assert!(text.contains("50"), "{text}");
    let answer = h
        .expect(
            202,
            "POST",
            path,
            Some(&admin),
            Some(body(vec![pb.clone(), pa.clone()])),
        )
        .await;
    assert_eq!(answer["results"][0]["status"], 202);
    assert_eq!(answer["results"][1]["status"], 400);
    assert_eq!(
        row(&h, &b).await["approvalDetails"][0]["status"],
        "APPROVED"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_take_the_collection_parameters_and_rights() {
    let h = harness().await;
    let (alice, dave, admin) = (user(&h, "alice"), user(&h, "dave"), admin(&h));
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(submit(&h, &alice, grant("alice", &format!("e{n}"), json!({}))).await);
        h.clock.advance(Duration::from_secs(60));
    }
    ids.push(submit(&h, &dave, grant("dave", "e9", json!({}))).await);

    // Paging and counting: oldest first, two at a time.
    let path = "/access-request-status/v1?requested-for=me&sorters=created&count=true&limit=2";
    let (status, first, headers) = h.call("GET", path, Some(&alice), None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-total-count"], "3");
    let first = first.as_array().unwrap().clone();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["accessRequestId"], ids[0].as_str());
    assert_eq!(first[1]["accessRequestId"], ids[1].as_str());
    let rest = status_rows(&h, &alice, &format!("{path}&offset=2")).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["accessRequestId"], ids[2].as_str());
    // The default order is newest first; a user sees only its own.
    let mine = status_rows(&h, &alice, "/access-request-status/v1").await;
    let order: Vec<&str> = mine
        .iter()
        .map(|r| r["accessRequestId"].as_str().unwrap())
        .collect();
    assert_eq!(order, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    // request-state=EXECUTING drops the cancelled.
    h.expect(
        202,
        "POST",
        "/access-requests/v1/cancel",
        Some(&admin),
        Some(json!({"accountActivityId": ids[1], "comment": "x"})),
    )
    .await;
    let executing = status_rows(
        &h,
        &alice,
        "/access-request-status/v1?request-state=EXECUTING",
    )
    .await;
    assert_eq!(executing.len(), 2);
    // assigned-to: bob approves all four.
    let assigned = status_rows(&h, &admin, "/access-request-status/v1?assigned-to=bob").await;
    assert_eq!(assigned.len(), 4);

    // Errors: unknown, repeated and malformed parameters, exclusive identities, other users.
    for (query, needle) in [
        ("?bogus=1", "bogus"),
        ("?limit=1&limit=2", "more than once"),
        ("?limit=251", "limit"),
        ("?offset=-1", "offset"),
        ("?count=maybe", "count"),
        ("?filters=name%20eq%20%22x%22", "name"),
        ("?sorters=requester", "requester"),
        ("?request-state=DONE", "EXECUTING"),
        (
            "?regarding-identity=me&requested-for=me",
            "mutually exclusive",
        ),
        ("?requested-for=not%20an%20id", "requested-for"),
    ] {
        let path = format!("/access-request-status/v1{query}");
        let text = error_text(&h.expect(400, "GET", &path, Some(&alice), None).await);
        assert!(text.contains(needle), "{query} -> {text}");
    }
    h.expect(
        403,
        "GET",
        "/access-request-status/v1?requested-for=dave",
        Some(&alice),
        None,
    )
    .await;
    let daves = status_rows(&h, &admin, "/access-request-status/v1?requested-for=dave").await;
    assert_eq!(daves.len(), 1);
    h.expect(401, "GET", "/access-request-status/v1", None, None)
        .await;
    let no_scope = h.token(
        TENANT,
        "alice",
        &["idn:access-request-self:manage"],
        &[Level::User],
    );
    h.expect(
        403,
        "GET",
        "/access-request-status/v1",
        Some(&no_scope),
        None,
    )
    .await;

    // The administrators' list: ORG_ADMIN and its scope; filters on status.
    let path = "/access-request-administration/v1?filters=status%20eq%20%22CANCELLED%22";
    h.expect(403, "GET", path, Some(&alice), None).await;
    let cancelled = status_rows(&h, &admin, path).await;
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["accessRequestId"], ids[1].as_str());
    assert_eq!(cancelled[0]["reauthorizationRequired"], false);
    assert!(cancelled[0].get("approvalIds").is_none());
    let all = status_rows(&h, &admin, "/v2026/access-request-administration").await;
    assert_eq!(all.len(), 4);
    h.stop().await;
}

async fn status_rows(h: &Harness, token: &str, path: &str) -> Vec<Value> {
    h.expect(200, "GET", path, Some(token), None)
        .await
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_lists_summary_and_approvers() {
    let h = harness().await;
    let (alice, bob, admin) = (user(&h, "alice"), user(&h, "bob"), admin(&h));
    let a = submit(&h, &alice, grant("alice", "e1", json!({}))).await;
    // A minute apart, so that `created` orders them.
    h.clock.advance(Duration::from_secs(60));
    let b = submit(&h, &alice, grant("alice", "e2", json!({}))).await;
    let pb = approval_of(&h, &b).await;

    // Pending: the owner is the caller unless an admin names another; filters and counts.
    let path = "/access-request-approvals/v1/pending?count=true&sorters=created";
    let (status, rows, headers) = h.call("GET", path, Some(&bob), None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-total-count"], "2");
    assert_eq!(rows[0]["accessRequestId"], a.as_str());
    let one = status_rows(
        &h,
        &bob,
        &format!("/access-request-approvals/v1/pending?filters=id%20eq%20%22{pb}%22"),
    )
    .await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["accessRequestId"], b.as_str());
    assert_eq!(
        status_rows(&h, &alice, "/access-request-approvals/v1/pending").await,
        Vec::<Value>::new()
    );
    h.expect(
        403,
        "GET",
        "/access-request-approvals/v1/pending?owner-id=bob",
        Some(&alice),
        None,
    )
    .await;
    let for_bob = status_rows(
        &h,
        &admin,
        "/access-request-approvals/v1/pending?owner-id=bob",
    )
    .await;
    assert_eq!(for_bob.len(), 2);
    h.expect(
        400,
        "GET",
        "/access-request-approvals/v1/pending?filters=name%20eq%20%22x%22",
        Some(&bob),
        None,
    )
    .await;
    h.expect(
        400,
        "GET",
        "/access-request-approvals/v1/completed?sorters=name",
        Some(&bob),
        None,
    )
    .await;

    // Summary: from-date bounds it; another owner needs ORG_ADMIN.
    h.expect(
        202,
        "POST",
        &format!("/access-request-approvals/v1/{pb}/approve"),
        Some(&bob),
        None,
    )
    .await;
    let s = h
        .expect(
            200,
            "GET",
            "/access-request-approvals/v1/approval-summary",
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(s, json!({"pending": 1, "approved": 1, "rejected": 0}));
    let later = instant(&h, Duration::from_secs(60));
    let s = h
        .expect(
            200,
            "GET",
            &format!("/access-request-approvals/v1/approval-summary?from-date={later}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(s, json!({"pending": 0, "approved": 0, "rejected": 0}));
    h.expect(
        400,
        "GET",
        "/access-request-approvals/v1/approval-summary?from-date=yesterday",
        Some(&bob),
        None,
    )
    .await;
    h.expect(
        403,
        "GET",
        "/access-request-approvals/v1/approval-summary?owner-id=bob",
        Some(&alice),
        None,
    )
    .await;

    // Approvers: ORG_ADMIN; the pending approvals' approvers; paged; unknown is 404.
    let path = format!("/access-request-approvals/v1/{a}/approvers?count=true");
    let (status, rows, headers) = h.call("GET", &path, Some(&admin), None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-total-count"], "1");
    assert_eq!(rows[0]["id"], "bob");
    assert_eq!(rows[0]["type"], "IDENTITY");
    assert_eq!(rows[0]["approvalId"], approval_of(&h, &a).await.as_str());
    let rows = status_rows(
        &h,
        &admin,
        &format!("/access-request-approvals/v1/{a}/approvers?offset=1"),
    )
    .await;
    assert!(rows.is_empty());
    h.expect(403, "GET", &path, Some(&alice), None).await;
    h.expect(
        404,
        "GET",
        "/access-request-approvals/v1/00000000-0000-0000-0000-000000000003/approvers",
        Some(&admin),
        None,
    )
    .await;
    h.expect(
        400,
        "GET",
        "/access-request-approvals/v1/nope/approvers",
        Some(&admin),
        None,
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_selection_lists_the_accounts_of_each_identity() {
    let h = harness().await;
    // Alice holds domain-admins through two accounts, bob through one.
    h.seed().await;
    let path = "/access-requests/v1/accounts-selection";
    let alice = h.token(
        TENANT,
        "alice",
        &["idn:access-request:create"],
        &[Level::User],
    );
    let items =
        json!([{"type": "ENTITLEMENT", "id": "domain-admins"}, {"type": "ROLE", "id": "auditors"}]);
    let answer = h
        .expect(
            200,
            "POST",
            path,
            Some(&alice),
            Some(json!({"requestedFor": ["alice"], "requestedItems": items})),
        )
        .await;
    let me = &answer["identities"][0];
    assert_eq!(me["id"], "alice");
    assert_eq!(me["accountsSelectionRequired"], true);
    let entitlement = &me["requestedItems"][0];
    assert_eq!(entitlement["type"], "ENTITLEMENT");
    // jitflow knows no description, and the contract's is a string: omitted, never null.
    assert!(entitlement.get("description").is_none(), "{entitlement}");
    assert_eq!(entitlement["sources"][0]["id"], "ad");
    assert_eq!(
        entitlement["sources"][0]["accounts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(me["requestedItems"][1]["sources"], json!([]));

    // A user asks only about itself; the scope is needed; 1..=250 pairs.
    h.expect(
        403,
        "POST",
        path,
        Some(&alice),
        Some(json!({"requestedFor": ["bob"], "requestedItems": items})),
    )
    .await;
    let no_scope = user(&h, "alice");
    h.expect(
        403,
        "POST",
        path,
        Some(&no_scope),
        Some(json!({"requestedFor": ["alice"], "requestedItems": items})),
    )
    .await;
    h.expect(
        400,
        "POST",
        path,
        Some(&alice),
        Some(json!({"requestedFor": ["alice"], "requestedItems": []})),
    )
    .await;
    let admin = h.token(
        TENANT,
        "admin",
        &["idn:access-request:create"],
        &[Level::OrgAdmin],
    );
    let answer = h
        .expect(
            200,
            "POST",
            path,
            Some(&admin),
            Some(json!({"requestedForWithRequestedItems": [
                {"identityId": "bob", "requestedItems": [{"type": "ENTITLEMENT", "id": "domain-admins"}]}
            ]})),
        )
        .await;
    assert_eq!(answer["identities"][0]["accountsSelectionRequired"], false);
    assert_eq!(
        answer["identities"][0]["requestedItems"][0]["sources"][0]["accounts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Both shapes at once: the schema says `requestedFor`/`requestedItems` must then be
    // omitted; the selection refuses it exactly as a submission does, with the same rule.
    let both = json!({
        "requestedFor": ["bob"],
        "requestedItems": [{"type": "ENTITLEMENT", "id": "domain-admins"}],
        "requestedForWithRequestedItems": [
            {"identityId": "bob", "requestedItems": [{"type": "ENTITLEMENT", "id": "domain-admins"}]}
        ]
    });
    let submitter = h.token(
        TENANT,
        "admin",
        &["idn:access-request:manage"],
        &[Level::OrgAdmin],
    );
    let selection = h
        .expect(400, "POST", path, Some(&admin), Some(both.clone()))
        .await;
    let submission = h
        .expect(
            400,
            "POST",
            "/access-requests/v1",
            Some(&submitter),
            Some(both),
        )
        .await;
    assert_eq!(error_text(&selection), error_text(&submission));
    assert!(error_text(&selection).contains("must be omitted"));
    h.stop().await;
}

/// The pending (or completed) approvals `token` sees.
async fn approvals(h: &Harness, token: &str, which: &str) -> Vec<Value> {
    let path = format!("/access-request-approvals/v1/{which}");
    let body = h.expect(200, "GET", &path, Some(token), None).await;
    body.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_then_the_new_owner_approves() {
    let h = harness().await;
    let (alice, bob, carol) = (user(&h, "alice"), user(&h, "bob"), user(&h, "carol"));
    let id = submit(&h, &alice, grant("alice", "finance-read", json!({}))).await;
    let approval = approval_of(&h, &id).await;
    let url = |action: &str| format!("/access-request-approvals/v1/{approval}/{action}");
    let forward = json!({"newOwnerId": "carol", "comment": "Bob is on leave"});
    let last = h.engine().last_sequence().unwrap();

    // Every documented refusal, each leaving the engine untouched.
    h.expect(401, "POST", &url("forward"), None, Some(forward.clone()))
        .await;
    let read_only = h.token(
        TENANT,
        "bob",
        &["idn:access-request-approvals:read"],
        &[Level::User],
    );
    h.expect(
        403,
        "POST",
        &url("forward"),
        Some(&read_only),
        Some(forward.clone()),
    )
    .await;
    let text = error_text(
        &h.expect(
            403,
            "POST",
            &url("forward"),
            Some(&carol),
            Some(forward.clone()),
        )
        .await,
    );
    assert!(text.contains("not an approver"), "{text}");
    let unknown = "/access-request-approvals/v1/00000000-0000-0000-0000-000000000005/forward";
    h.expect(404, "POST", unknown, Some(&bob), Some(forward.clone()))
        .await;
    h.expect(
        400,
        "POST",
        "/access-request-approvals/v1/nope/forward",
        Some(&bob),
        Some(forward.clone()),
    )
    .await;
    let long = "x".repeat(256);
    for (body, says) in [
        (json!({"newOwnerId": "carol"}), "comment"),
        (json!({"comment": "x"}), "newOwnerId"),
        (json!({"newOwnerId": "carol", "comment": ""}), "comment"),
        (json!({"newOwnerId": "carol", "comment": long}), "comment"),
        (json!({"newOwnerId": "", "comment": "x"}), "newOwnerId"),
        (
            json!({"newOwnerId": "car ol", "comment": "x"}),
            "newOwnerId",
        ),
        (
            json!({"newOwnerId": "carol", "comment": "x", "extra": 1}),
            "extra",
        ),
        (
            json!({"newOwnerId": 7, "comment": "x"}),
            "expected a string",
        ),
        (
            json!({"newOwnerId": "bob", "comment": "x"}),
            "already an approver",
        ),
        (
            json!({"newOwnerId": "alice", "comment": "x"}),
            "for or from them",
        ),
    ] {
        let text = error_text(
            &h.expect(400, "POST", &url("forward"), Some(&bob), Some(body.clone()))
                .await,
        );
        assert!(text.contains(says), "{body}: {text}");
    }
    h.expect(400, "POST", &url("forward"), Some(&bob), None)
        .await;
    assert_eq!(h.engine().last_sequence().unwrap(), last);

    // Bob forwards to carol: the approval leaves bob's list and joins carol's.
    let answer = h
        .expect(202, "POST", &url("forward"), Some(&bob), Some(forward))
        .await;
    assert_eq!(answer, json!({}));
    assert!(approvals(&h, &bob, "pending").await.is_empty());
    let pending = approvals(&h, &carol, "pending").await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["id"], approval.as_str());
    assert_eq!(pending[0]["owner"]["id"], "carol");
    let history = &pending[0]["forwardHistory"];
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["oldApproverName"], "bob");
    assert_eq!(history[0]["newApproverName"], "carol");
    assert_eq!(history[0]["comment"], "Bob is on leave");
    assert_eq!(history[0]["forwarderName"], "bob");
    assert_eq!(history[0]["reassignmentType"], "MANUAL_REASSIGNMENT");
    assert_eq!(history[0]["modified"], "2026-11-23T09:00:00.000Z");
    let details = &row(&h, &id).await["approvalDetails"][0];
    assert_eq!(details["currentOwner"]["id"], "carol");
    assert_eq!(details["originalOwner"]["id"], "bob");
    assert_eq!(details["forwarded"], true);

    // The old owner can no longer decide (403); the new owner approves.
    let text = error_text(
        &h.expect(403, "POST", &url("approve"), Some(&bob), None)
            .await,
    );
    assert!(text.contains("not an approver"), "{text}");
    h.expect(202, "POST", &url("approve"), Some(&carol), None)
        .await;
    let r = wait_row(&h, &id, "provisioned", |r| {
        r["accessRequestPhases"][1]["state"] == "COMPLETED"
    })
    .await;
    assert_eq!(r["state"], "REQUEST_COMPLETED");
    assert_eq!(r["approvalDetails"][0]["status"], "APPROVED");
    let completed = approvals(&h, &carol, "completed").await;
    assert_eq!(completed[0]["state"], "APPROVED");
    assert_eq!(completed[0]["reviewedBy"]["id"], "carol");
    assert_eq!(completed[0]["forwardHistory"], *history);
    // A decided approval is not forwarded.
    let text = error_text(
        &h.expect(
            400,
            "POST",
            &url("forward"),
            Some(&carol),
            Some(json!({"newOwnerId": "dave", "comment": "late"})),
        )
        .await,
    );
    assert!(text.contains("already APPROVED"), "{text}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_forwards_an_approval_it_does_not_own() {
    let h = harness().await;
    let alice = user(&h, "alice");
    let id = submit(&h, &alice, grant("alice", "finance-read", json!({}))).await;
    let approval = approval_of(&h, &id).await;
    let path = format!("/access-request-approvals/v1/{approval}/forward");
    for n in 0..10 {
        let body = json!({"newOwnerId": format!("owner{n}"), "comment": "rotation"});
        h.expect(202, "POST", &path, Some(&admin(&h)), Some(body))
            .await;
    }
    let owner = user(&h, "owner9");
    let pending = approvals(&h, &owner, "pending").await;
    let history = pending[0]["forwardHistory"].as_array().unwrap();
    assert_eq!(history.len(), 10);
    assert_eq!(history[0]["oldApproverName"], "bob");
    assert_eq!(history[0]["forwarderName"], "admin");
    let details = &row(&h, &id).await["approvalDetails"][0];
    assert_eq!(details["originalOwner"]["id"], "bob");
    // The bound on forwards of one approval.
    let body = json!({"newOwnerId": "owner10", "comment": "rotation"});
    let text = error_text(
        &h.expect(400, "POST", &path, Some(&admin(&h)), Some(body))
            .await,
    );
    assert!(text.contains("forwarded 10 times"), "{text}");
    h.stop().await;
}

/// The engine settings of [`harness`], for a restart.
fn restart_target() -> Target {
    Target {
        config: Some(jitflow::Config {
            approvers: vec![IdentityId::parse("bob").unwrap()],
            approval_timeout: Duration::from_secs(24 * 3600),
            ..jitflow::Config::default()
        }),
        ..Target::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_pending_approval_then_approve_grants() {
    let mut h = harness().await;
    let alice = user(&h, "alice");
    let id = submit(&h, &alice, grant("alice", "finance-read", json!({}))).await;
    let approval = approval_of(&h, &id).await;
    assert_eq!(
        row(&h, &id).await["approvalDetails"][0]["status"],
        "PENDING"
    );

    h.restart(restart_target()).await;
    // Tokens are checked with the same keys after the restart.
    let bob = user(&h, "bob");
    let pending = approvals(&h, &bob, "pending").await;
    assert_eq!(pending[0]["id"], approval.as_str());
    h.expect(
        202,
        "POST",
        &format!("/access-request-approvals/v1/{approval}/approve"),
        Some(&bob),
        None,
    )
    .await;
    let r = wait_row(&h, &id, "granted", |r| {
        r["accessRequestPhases"][1]["state"] == "COMPLETED"
    })
    .await;
    assert_eq!(r["state"], "REQUEST_COMPLETED");
    assert_eq!(
        h.target.0.grants.load(Ordering::SeqCst),
        1,
        "granted once, after the restart"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_sunrise_pending_grants_at_the_sunrise() {
    let mut h = harness().await;
    let (alice, bob) = (user(&h, "alice"), user(&h, "bob"));
    let sunrise = instant(&h, Duration::from_secs(3600));
    let id = submit(
        &h,
        &alice,
        grant("alice", "finance-read", json!({"startDate": sunrise})),
    )
    .await;
    let approval = approval_of(&h, &id).await;
    h.expect(
        202,
        "POST",
        &format!("/access-request-approvals/v1/{approval}/approve"),
        Some(&bob),
        None,
    )
    .await;
    let r = row(&h, &id).await;
    assert_eq!(r["approvalDetails"][0]["status"], "APPROVED");
    assert_eq!(r["accessRequestPhases"].as_array().unwrap().len(), 1, "{r}");

    h.restart(restart_target()).await;
    // Not before the sunrise.
    h.clock.advance(Duration::from_secs(3599));
    let r = row(&h, &id).await;
    assert_eq!(r["accessRequestPhases"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(h.target.0.grants.load(Ordering::SeqCst), 0);
    h.clock.advance(Duration::from_secs(1));
    let r = wait_row(&h, &id, "granted at the sunrise", |r| {
        r["accessRequestPhases"][1]["state"] == "COMPLETED"
    })
    .await;
    assert_eq!(r["state"], "REQUEST_COMPLETED");
    assert_eq!(r["accessRequestPhases"][1]["started"], sunrise.as_str());
    assert_eq!(h.target.0.grants.load(Ordering::SeqCst), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_approval_expires() {
    let config = jitflow::Config {
        approvers: vec![IdentityId::parse("bob").unwrap()],
        approval_timeout: Duration::from_secs(60),
        ..jitflow::Config::default()
    };
    let h = Harness::with_target(Target {
        config: Some(config),
        ..Target::default()
    })
    .await;
    let (alice, bob) = (user(&h, "alice"), user(&h, "bob"));
    let id = submit(&h, &alice, grant("alice", "finance-read", json!({}))).await;
    let approval = approval_of(&h, &id).await;
    h.clock.advance(Duration::from_secs(59));
    assert_eq!(
        row(&h, &id).await["approvalDetails"][0]["status"],
        "PENDING"
    );
    h.clock.advance(Duration::from_secs(1));
    let r = wait_row(&h, &id, "expired", |r| {
        r["approvalDetails"][0]["status"] == "EXPIRED"
    })
    .await;
    assert_eq!(r["state"], "CANCELLED");
    assert_eq!(r["cancelable"], false);
    assert_eq!(r["accessRequestPhases"][0]["result"], "FAILED");
    assert!(approvals(&h, &bob, "pending").await.is_empty());
    let text = error_text(
        &h.expect(
            400,
            "POST",
            &format!("/access-request-approvals/v1/{approval}/approve"),
            Some(&bob),
            None,
        )
        .await,
    );
    assert!(text.contains("already EXPIRED"), "{text}");
    assert_eq!(h.target.0.grants.load(Ordering::SeqCst), 0);
    h.stop().await;
}
