//! The drift endpoints over HTTP (issue 16): `POST /jitflow/v1/connections/{id}/reconcile`
//! inspects one connection and acts on a drift, `GET /jitflow/v1/drift` lists the findings,
//! paged by `X-Next-After`, and the policy's `jitflowOnMissingAccess` decides what missing
//! access leads to. Bad input is refused with an `ErrorResponseDto` and changes nothing.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use jitflow_core::connection::ConnectionState;
use jitflow_core::id::ConnectionId;
use serde_json::{Value, json};

fn reconcile_path(id: &str) -> String {
    format!("/jitflow/v1/connections/{id}/reconcile")
}

fn held(h: &Harness, id: &str) -> bool {
    h.target
        .0
        .held
        .lock()
        .unwrap()
        .contains(&ConnectionId::parse(id).unwrap())
}

/// Every finding of the tenant, following `X-Next-After` a page of `limit` events at a time.
async fn all_findings(h: &Harness, token: &str, limit: usize) -> Vec<Value> {
    let mut after = 0u64;
    let mut out = Vec::new();
    loop {
        let path = format!("/jitflow/v1/drift?after={after}&limit={limit}");
        let (status, body, headers) = h.call("GET", &path, Some(token), None).await;
        assert_eq!(status, 200, "{body}");
        out.extend(body.as_array().unwrap().iter().cloned());
        let next: u64 = headers["x-next-after"].to_str().unwrap().parse().unwrap();
        if next == after {
            return out;
        }
        after = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_found_acted_on_and_listed_over_http() {
    let h = Harness::new().await;
    h.seed().await;
    let admin = h.org_admin();
    let reconcile = reconcile_path(ALICE_CONN);

    // A running activation whose access is held: nothing to do.
    h.activate_alice().await;
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    let answer = h.expect(200, "POST", &reconcile, Some(&admin), None).await;
    assert_eq!(
        answer,
        json!({"connectionId": ALICE_CONN, "inspection": "HELD", "drift": null})
    );

    // A revoke that did not take: found and revoked again.
    h.target.0.drop_revokes.store(true, Ordering::SeqCst);
    h.expect(
        202,
        "POST",
        "/jit-activations/v1/deactivate",
        Some(&h.alice()),
        Some(json!({"connectionId": ALICE_CONN})),
    )
    .await;
    h.wait_state(ALICE_CONN, ConnectionState::Available).await;
    assert!(held(&h, ALICE_CONN), "the revoke was dropped");
    h.target.0.drop_revokes.store(false, Ordering::SeqCst);
    let answer = h.expect(200, "POST", &reconcile, Some(&admin), None).await;
    assert_eq!(
        answer,
        json!({"connectionId": ALICE_CONN, "inspection": "HELD", "drift": "UNEXPECTED_ACCESS"})
    );
    for _ in 0..1000 {
        if !held(&h, ALICE_CONN)
            && h.connection(ALICE_CONN).map(|c| c.state) == Some(ConnectionState::Available)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!held(&h, ALICE_CONN), "revoked again");

    // Missing access, granted again by the policy.
    let patched = h
        .expect(
            200,
            "PATCH",
            "/jit-activation-config/v1/policy",
            Some(&admin),
            Some(json!([{"op": "replace", "path": "/jitflowOnMissingAccess", "value": "GRANT_AGAIN"}])),
        )
        .await;
    assert_eq!(patched["jitflowOnMissingAccess"], "GRANT_AGAIN");
    let read = h
        .expect(
            200,
            "GET",
            "/jit-activation-config/v1/policy",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(read["jitflowOnMissingAccess"], "GRANT_AGAIN");
    let activation = h.activate_alice().await;
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    let version = h.connection(ALICE_CONN).unwrap().version;
    h.target
        .0
        .held
        .lock()
        .unwrap()
        .remove(&ConnectionId::parse(ALICE_CONN).unwrap());
    let answer = h.expect(200, "POST", &reconcile, Some(&admin), None).await;
    assert_eq!(
        answer,
        json!({"connectionId": ALICE_CONN, "inspection": "NOT_HELD", "drift": "MISSING_ACCESS"})
    );
    for _ in 0..1000 {
        let c = h.connection(ALICE_CONN).unwrap();
        if c.state == ConnectionState::Active && c.version > version + 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(held(&h, ALICE_CONN), "granted again");

    // The findings, in order, whatever the page size.
    let findings = all_findings(&h, &admin, 1000).await;
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert_eq!(
        (
            &findings[0]["kind"],
            &findings[0]["response"],
            &findings[0]["actor"],
            &findings[0]["activationId"]
        ),
        (
            &json!("UNEXPECTED_ACCESS"),
            &json!("REVOKE"),
            &json!("admin"),
            &Value::Null
        )
    );
    assert_eq!(
        (
            &findings[1]["kind"],
            &findings[1]["response"],
            &findings[1]["activationId"]
        ),
        (
            &json!("MISSING_ACCESS"),
            &json!("GRANT_AGAIN"),
            &json!(activation)
        )
    );
    for finding in &findings {
        assert_eq!(finding["connectionId"], ALICE_CONN);
        assert!(finding["sequence"].as_u64().unwrap() > 0);
        assert!(finding["at"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(all_findings(&h, &admin, 3).await, findings);
    // Another tenant sees none of them.
    let other = h.token(
        "globex",
        "admin",
        ORG_ADMIN_SCOPES,
        &[jitflow_shim::auth::Level::OrgAdmin],
    );
    assert!(all_findings(&h, &other, 1000).await.is_empty());
    h.expect(404, "POST", &reconcile, Some(&other), None).await;
    h.stop().await;
}

/// Bad input is refused (400, 404 for a connection the tenant does not have), the scopes are
/// those documented, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drift_endpoints_refuse_bad_input_and_the_wrong_rights() {
    let h = Harness::new().await;
    h.seed().await;
    let admin = h.org_admin();
    let before = h.engine().last_sequence().unwrap();
    let ghost = "9e1f0c6a-7b2d-4e3f-8a5b-6c7d8e9f0a11";
    for (status, path, body) in [
        (404, reconcile_path(ghost), None),
        (400, reconcile_path("not-an-id"), None),
        (400, format!("{}?now=1", reconcile_path(ALICE_CONN)), None),
        (
            400,
            reconcile_path(ALICE_CONN),
            Some(json!({"force": true})),
        ),
    ] {
        h.expect(status, "POST", &path, Some(&admin), body).await;
    }
    for query in [
        "limit=0",
        "limit=10001",
        "after=-1",
        "after=x",
        "limit=1&limit=2",
        "cursor=1",
    ] {
        h.expect(
            400,
            "GET",
            &format!("/jitflow/v1/drift?{query}"),
            Some(&admin),
            None,
        )
        .await;
    }
    // The reads need the history scope; an inspection needs the connections' manage scope.
    let reader = h.token(
        TENANT,
        "admin",
        &["idn:jit-activation-history:read"],
        &[jitflow_shim::auth::Level::OrgAdmin],
    );
    h.expect(200, "GET", "/jitflow/v1/drift", Some(&reader), None)
        .await;
    h.expect(
        403,
        "POST",
        &reconcile_path(ALICE_CONN),
        Some(&reader),
        None,
    )
    .await;
    h.expect(403, "GET", "/jitflow/v1/drift", Some(&h.admin()), None)
        .await;
    h.expect(401, "GET", "/jitflow/v1/drift", None, None).await;
    // The policy's action takes one of its names only.
    for value in [json!("REVOKE"), json!(null), json!(1), json!("grant_again")] {
        h.expect(
            400,
            "PATCH",
            "/jit-activation-config/v1/policy",
            Some(&admin),
            Some(json!([{"op": "replace", "path": "/jitflowOnMissingAccess", "value": value}])),
        )
        .await;
    }
    let mut policy = policy();
    for value in [json!("NOPE"), json!(null), json!(["REPORT"])] {
        policy["jitflowOnMissingAccess"] = value;
        h.expect(
            400,
            "PUT",
            "/jitflow/v1/jit-activation-config/policy",
            Some(&admin),
            Some(policy.clone()),
        )
        .await;
    }
    assert_eq!(
        h.engine().last_sequence().unwrap(),
        before,
        "nothing changed"
    );
    policy["jitflowOnMissingAccess"] = json!("END_ACTIVATION");
    let stored = h
        .expect(
            200,
            "PUT",
            "/jitflow/v1/jit-activation-config/policy",
            Some(&admin),
            Some(policy),
        )
        .await;
    assert_eq!(stored["jitflowOnMissingAccess"], "END_ACTIVATION");
    h.stop().await;
}
