//! The entitlement-connections API (list, patch, bulk type update), the activation history and
//! the event extensions, over real HTTP: success paths, documented errors, authorization and
//! paging.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use jitflow_core::connection::ConnectionState;
use jitflow_shim::auth::Level;
use serde_json::{Value, json};

const LIST: &str = "/entitlement-connections/v1";
const LIST_SELF: &str = "/entitlement-connections/v1/current-identity";
const HISTORY: &str = "/jit-activation-history/v1";
const HISTORY_SELF: &str = "/jit-activation-history/v1/current-identity";

/// The `id`s of a list answer, in order.
fn ids(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"))
        .iter()
        .map(|hit| hit["id"].as_str().unwrap().to_owned())
        .collect()
}

fn total(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get("x-total-count")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

/// A user token with these scopes.
fn user(h: &Harness, identity: &str, scopes: &[&str]) -> String {
    h.token(TENANT, identity, scopes, &[Level::User])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_list_shapes_filters_and_counts() {
    let h = Harness::new().await;
    h.seed().await;
    let admin = h.org_admin();
    for path in [LIST, "/v2026/entitlement-connections"] {
        let (status, body, headers) = h.call("GET", path, Some(&admin), None).await;
        assert_eq!(status, 200, "{body}");
        let mut expected = vec![ALICE_CONN, BOB_CONN, STANDING_CONN];
        expected.sort();
        assert_eq!(ids(&body), expected, "ordered by id by default");
        assert_eq!(total(&headers), None, "no count unless asked");
    }
    let body = h
        .expect(
            200,
            "GET",
            &format!(
                "{LIST}?filters={}",
                percent_encode(r#"identity.id eq "alice""#)
            ),
            Some(&admin),
            None,
        )
        .await;
    let hit = body
        .as_array()
        .unwrap()
        .iter()
        .find(|hit| hit["id"] == ALICE_CONN)
        .unwrap();
    assert_eq!(
        hit["identity"],
        json!({"id": "alice", "type": "IDENTITY", "name": "alice"})
    );
    assert_eq!(
        hit["account"],
        json!({"id": "alice-adm", "name": "alice.adm"})
    );
    assert_eq!(
        hit["source"],
        json!({"id": "ad", "name": "Active Directory"})
    );
    assert_eq!(
        hit["entitlement"],
        json!({
            "id": "domain-admins",
            "name": "Domain Admins",
            "displayName": "Domain Admins",
            "attribute": "memberOf",
            "value": "CN=Domain Admins,DC=example,DC=com",
            // No level registered: `effective` is absent (the contract's string is not
            // nullable).
            "privilegeLevel": {}
        })
    );
    assert_eq!(hit["state"]["value"], "AVAILABLE");
    assert_eq!(hit["state"]["changed"], "2026-11-23T09:00:00.000Z");
    assert_eq!(
        hit["jit"],
        json!({"activation": null, "provisioned": null, "deactivation": null,
               "deprovisioned": null, "expiration": null})
    );
    assert_eq!(hit["type"], "JIT");
    assert_eq!(hit["standalone"], false);

    // Filters, sorters and the count.
    let (_, body, headers) = h
        .call(
            "GET",
            &format!(
                "{LIST}?count=true&limit=1&filters={}",
                percent_encode(r#"type eq "JIT""#)
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    assert_eq!(total(&headers), Some(2), "the count ignores the limit");
    let body = h
        .expect(
            200,
            "GET",
            &format!("{LIST}?sorters=-type,id"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        ids(&body)[0],
        STANDING_CONN,
        "STANDING sorts after JIT, descending first"
    );
    let (_, body, headers) = h
        .call(
            "GET",
            &format!("{LIST}?count=true&offset=2"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((ids(&body).len(), total(&headers)), (1, Some(3)));
    let body = h
        .expect(200, "GET", &format!("{LIST}?limit=0"), Some(&admin), None)
        .await;
    assert_eq!(body, json!([]));

    // Each query problem is a 400 naming it.
    for (query, needle) in [
        (
            format!("filters={}", percent_encode(r#"colour eq "red""#)),
            "colour",
        ),
        (format!("filters={}", percent_encode(r#"type eq "JIT"#)), ""),
        (
            format!("filters={}", percent_encode(r#"jit.activation eq "x""#)),
            "jit.activation",
        ),
        ("sorters=colour".to_owned(), "colour"),
        ("limit=251".to_owned(), "251"),
        ("limit=ten".to_owned(), "limit"),
        ("offset=10001".to_owned(), "10001"),
        ("count=maybe".to_owned(), "maybe"),
        ("searchAfter=a,b".to_owned(), "searchAfter"),
        ("searchAfter=not-a-uuid".to_owned(), ""),
        ("limit=1&limit=2".to_owned(), "more than once"),
        ("filter=x".to_owned(), "unknown query parameter `filter`"),
    ] {
        let text = error_text(
            &h.expect(400, "GET", &format!("{LIST}?{query}"), Some(&admin), None)
                .await,
        );
        assert!(text.contains(needle), "{query}: {text}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_lists_are_authorized_and_scoped() {
    let h = Harness::new().await;
    h.seed().await;
    let reader = "idn:entitlement-connections:read";
    let alice = user(&h, "alice", &[reader]);
    for path in [LIST_SELF, "/v2026/entitlement-connections/current-identity"] {
        let body = h.expect(200, "GET", path, Some(&alice), None).await;
        let mut mine = vec![ALICE_CONN, STANDING_CONN];
        mine.sort();
        assert_eq!(ids(&body), mine);
    }
    // A filter cannot widen the current-identity list.
    for filter in [
        r#"identity.id eq "bob""#,
        r#"identity.id in ("alice", "bob") or type eq "JIT""#,
        r#"not identity.id eq "alice""#,
    ] {
        let (status, body, headers) = h
            .call(
                "GET",
                &format!("{LIST_SELF}?count=true&filters={}", percent_encode(filter)),
                Some(&alice),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            !ids(&body).contains(&BOB_CONN.to_owned()),
            "{filter}: {body}"
        );
        assert_eq!(total(&headers), Some(ids(&body).len() as u64), "{filter}");
    }
    // 401 without a token; 403 without the scope or the level.
    h.expect(401, "GET", LIST, None, None).await;
    h.expect(401, "GET", LIST_SELF, Some("not-a-token"), None)
        .await;
    let text = error_text(&h.expect(403, "GET", LIST, Some(&alice), None).await);
    assert!(text.contains("idn:entitlement-connections:list"), "{text}");
    let user_lister = user(&h, "alice", &["idn:entitlement-connections:list"]);
    let text = error_text(&h.expect(403, "GET", LIST, Some(&user_lister), None).await);
    assert!(text.contains("ORG_ADMIN"), "{text}");
    h.expect(403, "GET", LIST_SELF, Some(&h.alice()), None)
        .await;
    // Another tenant sees none of acme's connections.
    let globex = h.token("globex", "alice", ORG_ADMIN_SCOPES, &[Level::OrgAdmin]);
    for path in [LIST, LIST_SELF] {
        let (status, body, headers) = h
            .call("GET", &format!("{path}?count=true"), Some(&globex), None)
            .await;
        assert_eq!((status, body, total(&headers)), (200, json!([]), Some(0)));
    }
    h.stop().await;
}

/// Pages through `path` with `limit` and `searchAfter` built from each page's last hit by
/// `cursor`, checking `X-Total-Count` on every page; returns the ids in order.
async fn page_all(
    h: &Harness,
    token: &str,
    path: &str,
    extra: &str,
    limit: usize,
    cursor: impl Fn(&Value) -> String,
) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    let mut first_total = None;
    loop {
        let mut url = format!("{path}?limit={limit}&count=true{extra}");
        if let Some(a) = &after {
            url.push_str(&format!("&searchAfter={}", percent_encode(a)));
        }
        let (status, body, headers) = h.call("GET", &url, Some(token), None).await;
        assert_eq!(status, 200, "{url}: {body}");
        let total = total(&headers).unwrap();
        assert_eq!(
            *first_total.get_or_insert(total),
            total,
            "the count is stable"
        );
        let page = body.as_array().unwrap();
        assert!(page.len() <= limit);
        pages += 1;
        seen.extend(ids(&body));
        match page.last() {
            Some(last) if page.len() == limit => after = Some(cursor(last)),
            _ => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(
        first_total,
        Some(seen.len() as u64),
        "every counted row was listed"
    );
    (seen, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_after_pages_without_repeats_or_gaps() {
    let h = Harness::new().await;
    h.seed().await;
    let mut all = register_many(&h, 20, "carol").await;
    all.extend([ALICE_CONN, BOB_CONN, STANDING_CONN].map(str::to_owned));
    let admin = h.org_admin();
    // By id: the cursor is the id.
    let (listed, pages) = page_all(&h, &admin, LIST, "&sorters=id", 4, |hit| {
        hit["id"].as_str().unwrap().to_owned()
    })
    .await;
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(listed, expected);
    assert!(pages >= 6, "{pages} pages");
    // By a non-unique field, then id: the cursor holds both values.
    let (listed, _) = page_all(&h, &admin, LIST, "&sorters=-identity.id,id", 5, |hit| {
        format!(
            "{},{}",
            hit["identity"]["id"].as_str().unwrap(),
            hit["id"].as_str().unwrap()
        )
    })
    .await;
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no row repeated");
    assert_eq!(unique.len(), all.len(), "no row skipped");
    // A filtered listing pages the same way.
    let filter = format!(
        "&sorters=id&filters={}",
        percent_encode(r#"identity.id eq "carol""#)
    );
    let (listed, _) = page_all(&h, &admin, LIST, &filter, 3, |hit| {
        hit["id"].as_str().unwrap().to_owned()
    })
    .await;
    assert_eq!(listed.len(), 20);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_a_connection_by_id_and_by_assignment() {
    let h = Harness::new().await;
    h.seed().await;
    let admin = h.org_admin();
    let ops = json!([{"op": "replace", "path": "/standalone", "value": true}]);
    for (i, path) in [
        format!("{LIST}/{ALICE_CONN}"),
        format!(
            "/v2026/entitlement-connections/{}",
            ALICE_CONN.replace('-', "")
        ),
    ]
    .iter()
    .enumerate()
    {
        let (status, body, _) = h
            .raw(
                "PATCH",
                path,
                Some(&admin),
                Some(if i == 0 {
                    "application/json-patch+json"
                } else {
                    "application/json"
                }),
                Some(ops.to_string().into_bytes()),
            )
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["connectionId"], ALICE_CONN);
        assert_eq!(body["tenantId"], TENANT);
        assert_eq!(body["identityId"], "alice");
        assert_eq!(body["accountId"], "alice-adm");
        assert_eq!(body["entitlementId"], "domain-admins");
        assert_eq!(body["sourceId"], "ad");
        assert_eq!(body["attributeName"], "memberOf");
        assert_eq!(body["type"], "JIT");
        assert_eq!(body["state"], "AVAILABLE");
        assert_eq!(body["standalone"], true);
        assert_eq!(body["jitActivation"], Value::Null);
        assert_eq!(body["created"], "2026-11-23T09:00:00.000Z");
    }
    assert!(h.connection(ALICE_CONN).unwrap().spec.standalone);
    // By the assignment's ids; the type change is committed.
    let by_query = format!("{LIST}?entitlementId=domain-admins&identityId=bob&accountId=bob-adm");
    let body = h
        .expect(
            200,
            "PATCH",
            &by_query,
            Some(&admin),
            Some(json!([{"op": "replace", "path": "/type", "value": "STANDING"}])),
        )
        .await;
    assert_eq!(
        (body["connectionId"].as_str(), body["type"].as_str()),
        (Some(BOB_CONN), Some("STANDING"))
    );
    assert_eq!(
        h.connection(BOB_CONN).unwrap().spec.kind.as_str(),
        "STANDING"
    );

    // Errors: unknown, malformed id, malformed patches, missing and unknown assignment.
    let before = h.engine().last_sequence().unwrap();
    let unknown = "00000000-0000-4000-8000-0000000000ff";
    h.expect(
        404,
        "PATCH",
        &format!("{LIST}/{unknown}"),
        Some(&admin),
        Some(ops.clone()),
    )
    .await;
    h.expect(
        400,
        "PATCH",
        &format!("{LIST}/not-a-uuid"),
        Some(&admin),
        Some(ops.clone()),
    )
    .await;
    for (patch, needle) in [
        (json!([]), "empty"),
        (
            json!([{"op": "remove", "path": "/type", "value": "JIT"}]),
            "remove",
        ),
        (
            json!([{"op": "replace", "path": "/state", "value": "ACTIVE"}]),
            "/state",
        ),
        (
            json!([{"op": "replace", "path": "/type", "value": "SOMETIMES"}]),
            "SOMETIMES",
        ),
        (
            json!([{"op": "replace", "path": "/standalone", "value": "yes"}]),
            "boolean",
        ),
        (json!({"op": "replace"}), "array"),
        (
            json!([{"op": "replace", "path": "/type", "value": "JIT", "from": "/x"}]),
            "from",
        ),
    ] {
        let text = error_text(
            &h.expect(
                400,
                "PATCH",
                &format!("{LIST}/{ALICE_CONN}"),
                Some(&admin),
                Some(patch.clone()),
            )
            .await,
        );
        assert!(text.contains(needle), "{patch}: {text}");
    }
    for query in [
        "entitlementId=domain-admins&identityId=bob",
        "identityId=bob&accountId=bob-adm",
        "entitlementId=domain-admins&identityId=bob&accountId=bob-adm&colour=red",
        "entitlementId=domain%20admins&identityId=bob&accountId=bob-adm",
    ] {
        h.expect(
            400,
            "PATCH",
            &format!("{LIST}?{query}"),
            Some(&admin),
            Some(ops.clone()),
        )
        .await;
    }
    h.expect(
        404,
        "PATCH",
        &format!("{LIST}?entitlementId=domain-admins&identityId=bob&accountId=alice-adm"),
        Some(&admin),
        Some(ops.clone()),
    )
    .await;
    // Rights: the manage scope and ORG_ADMIN.
    let lister = h.token(
        TENANT,
        "admin",
        &["idn:entitlement-connections:list"],
        &[Level::OrgAdmin],
    );
    h.expect(
        403,
        "PATCH",
        &format!("{LIST}/{ALICE_CONN}"),
        Some(&lister),
        Some(ops.clone()),
    )
    .await;
    let manager = user(&h, "alice", &["idn:entitlement-connections:manage"]);
    h.expect(403, "PATCH", &by_query, Some(&manager), Some(ops.clone()))
        .await;
    h.expect(
        401,
        "PATCH",
        &format!("{LIST}/{ALICE_CONN}"),
        None,
        Some(ops.clone()),
    )
    .await;
    let globex = h.token("globex", "admin", ORG_ADMIN_SCOPES, &[Level::OrgAdmin]);
    h.expect(
        404,
        "PATCH",
        &format!("{LIST}/{ALICE_CONN}"),
        Some(&globex),
        Some(ops.clone()),
    )
    .await;
    h.expect(404, "PATCH", &by_query, Some(&globex), Some(ops.clone()))
        .await;
    assert_eq!(
        h.engine().last_sequence().unwrap(),
        before,
        "no refusal changed anything"
    );

    // A second connection for the same assignment is refused, so the query names one.
    let twin = "00000000-0000-4000-8000-0000000000aa";
    let body = h
        .expect(
            200,
            "POST",
            "/jitflow/v1/connections",
            Some(&admin),
            Some(json!({"connections": [spec(twin, "bob", "JIT")]})),
        )
        .await;
    assert_eq!(body["results"][0]["status"], 409, "{body}");
    assert!(
        error_text(&body["results"][0]["error"]).contains("already connects"),
        "{body}"
    );
    h.expect(200, "PATCH", &by_query, Some(&admin), Some(ops.clone()))
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_conflicts_are_refused_for_patch_and_bulk() {
    let h = Harness::with_target(Target {
        hang_grants: true,
        ..Target::default()
    })
    .await;
    h.seed().await;
    h.activate_alice().await;
    // Wait until the grant is in flight (validation passed); it never answers, so nothing else
    // commits.
    for _ in 0..1000 {
        let status = h.connection(ALICE_CONN).unwrap().activation.unwrap().status;
        if status.as_str() == "ACTIVATING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.connection(ALICE_CONN).unwrap().state,
        ConnectionState::Activating
    );
    let admin = h.org_admin();
    let before = h.engine().last_sequence().unwrap();
    // The patch operations declare no 409: a 400 whose detail code says it.
    let text = error_text(
        &h.expect(
            400,
            "PATCH",
            &format!("{LIST}/{ALICE_CONN}"),
            Some(&admin),
            Some(json!([{"op": "replace", "path": "/type", "value": "STANDING"}])),
        )
        .await,
    );
    assert!(!text.is_empty());
    let body = h
        .expect(
            207,
            "POST",
            LIST,
            Some(&admin),
            Some(json!([{"connectionId": ALICE_CONN, "type": "STANDING"}])),
        )
        .await;
    assert_eq!(body[0]["status"], 409, "{body}");
    assert_eq!(h.engine().last_sequence().unwrap(), before);
    assert_eq!(h.connection(ALICE_CONN).unwrap().spec.kind.as_str(), "JIT");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_type_update_answers_per_item() {
    let h = Harness::new().await;
    h.seed().await;
    let admin = h.org_admin();
    let unknown = "00000000-0000-4000-8000-0000000000ff";
    let body = h
        .expect(
            207,
            "POST",
            "/v2026/entitlement-connections",
            Some(&admin),
            Some(json!([
                {"connectionId": ALICE_CONN, "type": "STANDING"},
                {"connectionId": BOB_CONN.replace('-', ""), "type": "JIT"},
                {"connectionId": BOB_CONN, "type": "XYZ"},
                {"connectionId": ALICE_CONN, "type": "JIT"},
                {"connectionId": unknown, "type": "JIT"},
                {"connectionId": "not-a-uuid", "type": "JIT"},
                {"connectionId": STANDING_CONN, "type": "NA"},
            ])),
        )
        .await;
    let rows = body.as_array().unwrap();
    let statuses: Vec<u64> = rows.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 201, 422, 409, 404, 400, 422], "{body}");
    assert_eq!(
        rows[0],
        json!({"connectionId": ALICE_CONN, "type": "STANDING", "status": 201, "description": "success"})
    );
    assert_eq!(
        rows[1]["connectionId"],
        BOB_CONN.replace('-', ""),
        "the id as sent"
    );
    assert_eq!(rows[2]["type"], "XYZ");
    assert!(
        rows[2]["description"]
            .as_str()
            .unwrap()
            .contains("must be JIT or STANDING")
    );
    assert!(
        rows[3]["description"]
            .as_str()
            .unwrap()
            .contains("Duplicate")
    );
    for row in rows {
        assert!(!row["description"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        h.connection(ALICE_CONN).unwrap().spec.kind.as_str(),
        "STANDING"
    );
    assert_eq!(h.connection(BOB_CONN).unwrap().spec.kind.as_str(), "JIT");
    assert_eq!(
        h.connection(STANDING_CONN).unwrap().spec.kind.as_str(),
        "STANDING"
    );

    // The request as a whole: 0 or more than 100 items, not an array, an item without a field.
    let before = h.engine().last_sequence().unwrap();
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"connectionId": ALICE_CONN, "type": "JIT"}))
        .collect();
    for bad in [
        json!([]),
        json!(many),
        json!({"connectionId": ALICE_CONN, "type": "JIT"}),
        json!([{"connectionId": ALICE_CONN}]),
        json!([{"connectionId": ALICE_CONN, "type": "JIT", "extra": 1}]),
        json!([{"connectionId": 7, "type": "JIT"}]),
    ] {
        h.expect(400, "POST", LIST, Some(&admin), Some(bad)).await;
    }
    h.expect(401, "POST", LIST, None, Some(json!([]))).await;
    h.expect(403, "POST", LIST, Some(&h.alice()), Some(json!([])))
        .await;
    let (status, answer, _) = h
        .raw(
            "POST",
            LIST,
            Some(&admin),
            Some("text/plain"),
            Some(b"[]".to_vec()),
        )
        .await;
    // The operation declares no 415.
    assert_eq!(status, 400);
    assert_eq!(detail_code(&answer), "400.1.415 Unsupported Media Type");
    assert_eq!(h.engine().last_sequence().unwrap(), before);
    h.stop().await;
}

/// With a writer queue of one, a bulk update of 100 items overflows it: the overflow is 429 per
/// item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_items_that_find_the_queue_full_are_429() {
    let config = jitflow::Config {
        queue_capacity: 1,
        batch_max: 1,
        ..jitflow::Config::default()
    };
    let h = Harness::with_target(Target {
        config: Some(config),
        ..Target::default()
    })
    .await;
    let items: Vec<Value> = (0..100u32)
        .map(|i| json!({"connectionId": format!("{i:08x}-0000-4000-8000-000000000000"), "type": "JIT"}))
        .collect();
    let body = h
        .expect(207, "POST", LIST, Some(&h.org_admin()), Some(json!(items)))
        .await;
    let statuses: Vec<u64> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 404 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "a burst of 100 overflows a queue of one"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_history_lists_and_scopes() {
    let h = Harness::new().await;
    h.seed().await;
    let alice = h.alice();
    let activate =
        |connection: &str| json!({"connectionId": connection, "activationPeriodMins": 30});
    h.expect(
        202,
        "POST",
        "/jit-activations/v1/activate",
        Some(&alice),
        Some(activate(ALICE_CONN)),
    )
    .await;
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    h.clock.advance(Duration::from_secs(60));
    h.expect(
        202,
        "POST",
        "/jit-activations/v1/deactivate",
        Some(&alice),
        Some(json!({"connectionId": ALICE_CONN})),
    )
    .await;
    h.wait_state(ALICE_CONN, ConnectionState::Available).await;
    h.clock.advance(Duration::from_secs(60));
    let bob = h.token(TENANT, "bob", ALL_ACTIVATION_SCOPES, &[Level::User]);
    h.expect(
        202,
        "POST",
        "/jit-activations/v1/activate",
        Some(&bob),
        Some(activate(BOB_CONN)),
    )
    .await;
    h.wait_state(BOB_CONN, ConnectionState::Active).await;

    let admin = h.org_admin();
    for path in [HISTORY, "/v2026/jit-activation-history"] {
        let (status, body, headers) = h
            .call("GET", &format!("{path}?count=true"), Some(&admin), None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(total(&headers), Some(2));
        let docs = body.as_array().unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["connectionId"], BOB_CONN, "newest first");
        assert_eq!(docs[0]["status"], "PROVISIONED");
        assert_eq!(docs[0]["deprovisionStart"], Value::Null);
        let a = &docs[1];
        assert_eq!(a["connectionId"], ALICE_CONN);
        assert_eq!(a["status"], "REVOKED");
        assert_eq!(a["tenantId"], TENANT);
        assert_eq!(a["identityId"], "alice");
        assert_eq!(a["identityName"], "alice");
        assert_eq!(a["accountId"], "alice-adm");
        assert_eq!(a["entitlementId"], "domain-admins");
        assert_eq!(a["entitlementName"], "Domain Admins");
        assert_eq!(a["sourceId"], "ad");
        assert_eq!(a["sourceDisplayName"], "Active Directory");
        assert_eq!(a["activationInitiated"], "2026-11-23T09:00:00.000Z");
        assert_eq!(a["deprovisionStart"], "2026-11-23T09:01:00.000Z");
        assert_eq!(a["deprovisionComplete"], "2026-11-23T09:01:00.000Z");
        assert_eq!(a["provisionDurationMins"], 0.0);
        assert_eq!(a["deprovisionDurationMins"], 0.0);
        assert_eq!(a["policyDisplayNames"], json!([]));
        for field in [
            "error",
            "policyFrictionOutcome",
            "policyMatchDetails",
            "summary",
            "frictions",
            // The activate sent no requestOrigin or metaData.
            "activationDetails",
        ] {
            assert_eq!(a[field], Value::Null, "{field}");
        }
    }
    // Filters and paging by searchAfter.
    let body = h
        .expect(
            200,
            "GET",
            &format!(
                "{HISTORY}?filters={}",
                percent_encode(r#"status eq "REVOKED""#)
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(body.as_array().unwrap().len(), 1);
    let first = h
        .expect(
            200,
            "GET",
            &format!("{HISTORY}?limit=1&sorters=activationInitiated,id"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(first[0]["connectionId"], ALICE_CONN);
    let cursor = format!(
        "{},{}",
        first[0]["activationInitiated"].as_str().unwrap(),
        first[0]["id"].as_str().unwrap()
    );
    let second = h
        .expect(
            200,
            "GET",
            &format!(
                "{HISTORY}?limit=1&sorters=activationInitiated,id&searchAfter={}",
                percent_encode(&cursor)
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(second[0]["connectionId"], BOB_CONN);

    // The current identity sees its own only, whatever it asks; `identityId` is not a filter there.
    let own = user(&h, "alice", &["idn:jit-activation-history-self:read"]);
    let body = h.expect(200, "GET", HISTORY_SELF, Some(&own), None).await;
    let docs = body.as_array().unwrap();
    assert_eq!(
        (docs.len(), docs[0]["identityId"].as_str()),
        (1, Some("alice"))
    );
    let text = error_text(
        &h.expect(
            400,
            "GET",
            &format!(
                "{HISTORY_SELF}?filters={}",
                percent_encode(r#"identityId eq "bob""#)
            ),
            Some(&own),
            None,
        )
        .await,
    );
    assert!(text.contains("identityId"), "{text}");
    let body = h
        .expect(
            200,
            "GET",
            &format!(
                "{HISTORY_SELF}?filters={}",
                percent_encode(&format!(r#"connectionId eq "{BOB_CONN}""#))
            ),
            Some(&own),
            None,
        )
        .await;
    assert_eq!(body, json!([]));
    // Rights and tenants.
    h.expect(403, "GET", HISTORY, Some(&own), None).await;
    h.expect(403, "GET", HISTORY_SELF, Some(&alice), None).await;
    h.expect(401, "GET", HISTORY, None, None).await;
    let globex = h.token("globex", "alice", ORG_ADMIN_SCOPES, &[Level::OrgAdmin]);
    assert_eq!(
        h.expect(200, "GET", HISTORY, Some(&globex), None).await,
        json!([])
    );
    assert_eq!(
        h.expect(200, "GET", HISTORY_SELF, Some(&globex), None)
            .await,
        json!([])
    );
    h.expect(
        400,
        "GET",
        &format!("{HISTORY}?sorters=colour"),
        Some(&admin),
        None,
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_history_and_audit_export() {
    let h = Harness::new().await;
    h.seed().await;
    let alice = h.alice();
    let answer = h
        .expect(
            202,
            "POST",
            "/jit-activations/v1/activate",
            Some(&alice),
            Some(json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30})),
        )
        .await;
    let activation = answer["activationId"].as_str().unwrap().to_owned();
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    let admin = h.org_admin();

    let path = format!("/jitflow/v1/connections/{ALICE_CONN}/events");
    let (status, body, headers) = h.call("GET", &path, Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    let events = body.as_array().unwrap();
    let changes: Vec<&str> = events
        .iter()
        .map(|e| e["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes[0], "Registered", "{changes:?}");
    assert!(
        changes.contains(&"ActivationRequested") && changes.contains(&"Provisioned"),
        "{changes:?}"
    );
    assert_eq!(events[0]["actor"], "admin");
    let requested = events
        .iter()
        .find(|e| e["change"] == "ActivationRequested")
        .unwrap();
    assert_eq!(requested["actor"], "alice");
    assert_eq!(requested["at"], "2026-11-23T09:00:00.000Z");
    assert_eq!(requested["event"]["tenant"], TENANT);
    let versions: Vec<u64> = events
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        headers["x-next-after"].to_str().unwrap(),
        events.len().to_string()
    );
    // Paged: two at a time, the same events.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let (_, page, headers) = h
            .call(
                "GET",
                &format!("{path}?after={after}&limit=2"),
                Some(&admin),
                None,
            )
            .await;
        let page = page.as_array().unwrap().clone();
        after = headers["x-next-after"].to_str().unwrap().parse().unwrap();
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(&paged, events);

    let body = h
        .expect(
            200,
            "GET",
            &format!("/jitflow/v1/activations/{activation}/events"),
            Some(&admin),
            None,
        )
        .await;
    let changes: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes.first(), Some(&"ActivationRequested"), "{changes:?}");
    assert!(!changes.contains(&"Registered"));

    // The audit export: this tenant's events only, as JSON lines.
    let globex = h.token("globex", "admin", ORG_ADMIN_SCOPES, &[Level::OrgAdmin]);
    h.expect(
        200,
        "POST",
        "/jitflow/v1/connections",
        Some(&globex),
        Some(json!({"connections": [spec("00000000-0000-4000-8000-0000000000cc", "zed", "JIT")]})),
    )
    .await;
    let last = h.engine().last_sequence().unwrap();
    let mut lines = Vec::new();
    let mut after = 0u64;
    loop {
        let response = h
            .client
            .get(format!(
                "{}/jitflow/v1/events?after={after}&limit=3",
                h.base
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        let next: u64 = response.headers()["x-next-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let text = response.text().await.unwrap();
        lines.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
        if next == after {
            break;
        }
        after = next;
    }
    assert_eq!(after, last, "the export reads to the end of the log");
    assert!(
        lines.iter().all(|l| l["tenant"] == TENANT),
        "no other tenant's event"
    );
    let sequences: Vec<u64> = lines
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        lines.len() as u64,
        last - 1,
        "every event but globex's registration"
    );

    // Errors.
    let unknown = "00000000-0000-4000-8000-0000000000ff";
    h.expect(
        404,
        "GET",
        &format!("/jitflow/v1/connections/{unknown}/events"),
        Some(&admin),
        None,
    )
    .await;
    h.expect(
        404,
        "GET",
        &format!("/jitflow/v1/activations/{unknown}/events"),
        Some(&admin),
        None,
    )
    .await;
    h.expect(404, "GET", &path, Some(&globex), None).await;
    h.expect(
        400,
        "GET",
        "/jitflow/v1/connections/nope/events",
        Some(&admin),
        None,
    )
    .await;
    for query in ["limit=0", "limit=1001", "after=-1", "after=x", "page=2"] {
        h.expect(400, "GET", &format!("{path}?{query}"), Some(&admin), None)
            .await;
    }
    for query in ["limit=0", "limit=10001", "after=1e3"] {
        h.expect(
            400,
            "GET",
            &format!("/jitflow/v1/events?{query}"),
            Some(&admin),
            None,
        )
        .await;
    }
    h.expect(403, "GET", &path, Some(&alice), None).await;
    let self_reader = user(&h, "alice", &["idn:jit-activation-history:read"]);
    h.expect(403, "GET", "/jitflow/v1/events", Some(&self_reader), None)
        .await;
    h.expect(401, "GET", "/jitflow/v1/events", None, None).await;
    h.stop().await;
}

/// The connection detail extension: the hit, the latest activation, the armed timers and the
/// pending effects, as the engine holds them; 404 for an unknown id or another tenant's, 403
/// without the list scope or below ORG_ADMIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_detail_shows_activation_timers_and_effects() {
    let h = Harness::with_target(Target {
        hang_grants: true,
        ..Target::default()
    })
    .await;
    h.seed().await;
    let admin = h.org_admin();
    let path = format!("/jitflow/v1/connections/{ALICE_CONN}");
    let idle = h.expect(200, "GET", &path, Some(&admin), None).await;
    assert_eq!(idle["connection"]["id"], ALICE_CONN);
    assert_eq!(idle["connection"]["state"]["value"], "AVAILABLE");
    assert_eq!(idle["activation"], Value::Null);
    assert_eq!(idle["running"], false);
    assert_eq!(idle["timers"], json!([]));
    assert_eq!(idle["pendingEffects"], json!([]));

    // A grant that never answers: the activation waits in ACTIVATING with its grant pending.
    let activation = h.activate_alice().await;
    h.wait_state(ALICE_CONN, ConnectionState::Activating).await;
    let mut busy = Value::Null;
    for _ in 0..1000 {
        busy = h.expect(200, "GET", &path, Some(&admin), None).await;
        if busy["pendingEffects"][0]["kind"] == "GRANT" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(busy["running"], true, "{busy}");
    assert_eq!(busy["activation"]["id"], activation.as_str());
    assert_eq!(busy["activation"]["status"], "ACTIVATING");
    assert_eq!(busy["activation"]["periodMins"], 30);
    assert_eq!(busy["activation"]["requestedBy"], "alice");
    assert_eq!(
        busy["pendingEffects"],
        json!([{"kind": "GRANT", "attempt": 1, "idempotencyKey": format!("{activation}:grant:1")}])
    );
    assert_eq!(busy["timers"], json!([]));

    let unknown = "00000000-0000-4000-8000-000000000001";
    h.expect(
        404,
        "GET",
        &format!("/jitflow/v1/connections/{unknown}"),
        Some(&admin),
        None,
    )
    .await;
    let other = h.token("other", "admin", ORG_ADMIN_SCOPES, &[Level::OrgAdmin]);
    h.expect(404, "GET", &path, Some(&other), None).await;
    h.expect(
        400,
        "GET",
        "/jitflow/v1/connections/nope",
        Some(&admin),
        None,
    )
    .await;
    let user = user(&h, "alice", &["idn:entitlement-connections:list"]);
    h.expect(403, "GET", &path, Some(&user), None).await;
    h.expect(401, "GET", &path, None, None).await;
}

/// With grants answering, the detail of an active connection shows the expiry and warning
/// timers and no pending effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_detail_of_an_active_connection_lists_its_timers() {
    let h = Harness::new().await;
    h.seed().await;
    h.activate_alice().await;
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    let path = format!("/jitflow/v1/connections/{ALICE_CONN}");
    let body = h
        .expect(200, "GET", &path, Some(&h.org_admin()), None)
        .await;
    assert_eq!(body["activation"]["status"], "PROVISIONED");
    assert_eq!(body["pendingEffects"], json!([]));
    let expires = body["activation"]["expiresAt"].as_str().unwrap();
    let kinds: Vec<(&str, &str)> = body["timers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["kind"].as_str().unwrap(), t["due"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("EXPIRY", expires)), "{body}");
    assert!(kinds.iter().any(|(k, _)| *k == "WARNING"), "{body}");
    assert_eq!(body["stuck"], false);
}
