//! Malformed and hostile requests at every endpoint that changes state, and at the list, history
//! and event endpoints' query strings: broken and mutated bodies, wrong content types, garbage
//! tokens and headers, junk and out-of-range query parameters and path segments. Every answer
//! must be a 4xx `ErrorResponseDto`, and nothing may change.

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use common::*;
use hostile::*;
use jitflow_shim::auth::Level;
use proptest::prelude::*;
use serde_json::{Value, json};

/// An endpoint and a valid body for it (mutated below into an invalid one).
fn endpoints() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "POST",
            "/jit-activations/v1/activate",
            json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30}),
        ),
        (
            "POST",
            "/v2026/jit-activations/activate",
            json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30}),
        ),
        (
            "POST",
            "/jit-activations/v1/extend",
            json!({"connectionId": ALICE_CONN, "activationPeriodExtensionMins": 5}),
        ),
        (
            "POST",
            "/v2026/jit-activations/deactivate",
            json!({"connectionId": ALICE_CONN}),
        ),
        (
            "PATCH",
            "/jit-activation-config/v1/policy",
            json!([{"op": "replace", "path": "/maxActivationPeriodMins", "value": 60}]),
        ),
        (
            "PATCH",
            "/v2026/jit-activation-config/policy",
            json!([{"path": "/applyToFutureAssignments", "value": true}]),
        ),
        (
            "PUT",
            "/jitflow/v1/jit-activation-config/policy",
            json!({"maxActivationPeriodMins": 60, "applyToFutureAssignments": false}),
        ),
        (
            "POST",
            "/jitflow/v1/connections",
            json!({"connections": [spec("22222222-2222-4222-8222-222222222222", "erin", "JIT")]}),
        ),
        (
            "PATCH",
            "/entitlement-connections/v1/757fb803-9024-5861-e510-83a56e4c5bd3",
            json!([{"op": "replace", "path": "/standalone", "value": true}]),
        ),
        (
            "PATCH",
            "/v2026/entitlement-connections?entitlementId=domain-admins&identityId=alice&accountId=alice-adm",
            json!([{"op": "replace", "path": "/type", "value": "STANDING"}]),
        ),
        (
            "POST",
            "/entitlement-connections/v1",
            json!([{"connectionId": ALICE_CONN, "type": "STANDING"}]),
        ),
        // Booleans only: a wrong type for a nested object could be `{}`, a valid default.
        (
            "PUT",
            "/access-request-config/v1",
            json!({"approvalsMustBeExternal": false, "autoApprovalEnabled": false}),
        ),
        (
            "PUT",
            "/access-request-config/v2",
            json!({"approvalsMustBeExternal": false, "govGroupVisibilityEnabled": false}),
        ),
        (
            "PUT",
            "/v2026/access-request-config",
            json!({"reauthorizationEnabled": false}),
        ),
    ]
}

/// The read endpoints whose query strings are attacked (each gets a query it must refuse).
const READS: [&str; 9] = [
    "/entitlement-connections/v1",
    "/v2026/entitlement-connections/current-identity",
    "/jit-activation-history/v1",
    "/v2026/jit-activation-history/current-identity",
    "/jitflow/v1/connections/757fb803-9024-5861-e510-83a56e4c5bd3/events",
    "/jitflow/v1/events",
    "/jitflow/v1/activations/00000000-0000-4000-8000-000000000001/events",
    "/entitlement-connections/v1/current-identity",
    "/jit-activation-history/v1/current-identity",
];

#[derive(Debug, Clone)]
struct Case {
    endpoint: usize,
    body: Body,
    auth: Auth,
    content_type: Option<String>,
    query: String,
    experimental: Option<String>,
    idempotency_key: Option<String>,
    segment: String,
    read: usize,
    bad_query: String,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0usize..19,
        body(),
        auth(),
        content_type(),
        "[ -~]{0,60}",
        proptest::option::of("[ -~]{0,20}"),
        proptest::option::of("[ -~]{0,300}"),
        "[g-z%.][a-zA-Z0-9%._~-]{0,40}",
        (0..READS.len(), bad_query()),
    )
        .prop_map(
            |(
                endpoint,
                body,
                auth,
                content_type,
                query,
                experimental,
                idempotency_key,
                segment,
                (read, bad_query),
            )| Case {
                endpoint,
                body,
                auth,
                content_type,
                query,
                experimental,
                idempotency_key,
                segment,
                read,
                bad_query,
            },
        )
}

#[test]
fn hostile_requests_get_4xx_error_dtos_and_change_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let h = runtime.block_on(async {
        let h = Harness::new().await;
        h.seed().await;
        h
    });
    let valid = h.token(
        TENANT,
        "alice",
        &[
            "idn:jit-activation-workflow:manage",
            "idn:jit-policy:manage",
            "idn:entitlement-connections:manage",
            "idn:entitlement-connections:list",
            "idn:entitlement-connections:read",
            "idn:jit-activation-history:read",
            "idn:jit-activation-history-self:read",
            "idn:access-request-config:manage",
        ],
        &[Level::OrgAdmin],
    );
    let other = h.token(
        "globex",
        "alice",
        &[
            "idn:jit-activation-workflow:manage",
            "idn:jit-policy:manage",
            "idn:entitlement-connections:manage",
            "idn:access-request-config:manage",
        ],
        &[Level::OrgAdmin],
    );
    let before = h.engine().last_sequence().unwrap();
    let endpoints = endpoints();
    let config = ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let checked = std::sync::atomic::AtomicUsize::new(0);
    let answered = std::sync::atomic::AtomicUsize::new(0);
    proptest!(config, |(c in case())| {
        // Endpoints 0..14 take bodies; then DELETE with a junk id, GET with a junk config type,
        // and a read endpoint with a query it must refuse.
        let n = endpoints.len();
        let (method, path, bytes) = match c.endpoint {
            i if i < n => {
                let (method, path, valid_body) = &endpoints[i];
                let Some(bytes) = render(method, path, valid_body, &c.body) else {
                    return Ok(());
                };
                (method.to_string(), path.to_string(), Some(bytes))
            }
            i if i == n => ("DELETE".to_owned(), format!("/jitflow/v1/connections/{}", c.segment), None),
            i if i == n + 1 => ("GET".to_owned(), format!("/jit-activation-config/v1/{}", c.segment), None),
            _ => ("GET".to_owned(), READS[c.read].to_owned(), None),
        };
        checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let query = if bytes.is_none() && method == "GET" && c.endpoint > n + 1 {
            format!("{}&{}", url_escape(&c.bad_query), url_escape(&c.query))
        } else {
            url_escape(&c.query)
        };
        let separator = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}{path}{separator}{query}", h.base);
        let (status, answer, headers) = runtime.block_on(async {
            let mut request = h.client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), &url);
            match &c.auth {
                Auth::None => {}
                Auth::Garbage(g) => request = request.header("authorization", g.as_str()),
                Auth::Valid => request = request.bearer_auth(&valid),
                Auth::OtherTenant => request = request.bearer_auth(&other),
            }
            if let Some(e) = &c.experimental {
                request = request.header("x-sailpoint-experimental", e.as_str());
            }
            if let Some(k) = &c.idempotency_key {
                request = request.header("idempotency-key", k.as_str());
            }
            if let Some(bytes) = bytes {
                if let Some(ct) = &c.content_type {
                    request = request.header("content-type", ct.as_str());
                }
                request = request.body(bytes);
            }
            // A server that refuses before reading the body (401, 413) may close the connection
            // while the client still writes it; the client then sees no answer. That the state
            // did not change is still checked below.
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) if e.is_request() => return None,
                Err(e) => panic!("{e}"),
            };
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.unwrap();
            Some((status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null), headers))
        })
        .unwrap_or_else(|| (413, Value::Null, reqwest::header::HeaderMap::new()));
        if answer.is_null() && headers.is_empty() {
            let after = h.engine().last_sequence().unwrap();
            prop_assert_eq!(after, before, "{:?} changed state: {}", c, committed_since(&h, before));
            return Ok(());
        }
        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A refusal is an answer like any other: declared by the operation, of its schema.
        common::conformance::contract().check(&method, &path, status, &answer);
        prop_assert!((400..500).contains(&status), "{method} {url} {:?} -> {status} {answer}", c);
        prop_assert_eq!(headers["content-type"].to_str().unwrap(), "application/json");
        error_text(&answer);
        let after = h.engine().last_sequence().unwrap();
        prop_assert_eq!(after, before, "{:?} changed state: {}", c, committed_since(&h, before));
    });
    let (checked, answered) = (checked.into_inner(), answered.into_inner());
    assert!(checked >= 80, "only {checked} of 128 cases sent a request");
    assert!(
        answered * 10 >= checked * 8,
        "only {answered} of {checked} requests were answered"
    );
    runtime.block_on(h.stop());
}
