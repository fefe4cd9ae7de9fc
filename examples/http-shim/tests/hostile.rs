//! Malformed and hostile requests at every endpoint that changes state, and at the list, history
//! and event endpoints' query strings: broken and mutated bodies, wrong content types, garbage
//! tokens and headers, junk and out-of-range query parameters and path segments. Every answer
//! must be a 4xx `ErrorResponseDto`, and nothing may change.

mod common;

use common::*;
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

/// A query string a read endpoint must refuse: one bad parameter (a filter on a field no
/// collection has, a sorter none has, a limit or offset out of range, a count that is not a
/// boolean, a `searchAfter` that is no id, an unknown parameter), followed by junk. A limit
/// over 10,000 is out of range for every one of them.
fn bad_query() -> impl Strategy<Value = String> {
    let junk = "[ -~]{0,40}";
    prop_oneof![
        junk.prop_map(|j| format!("filters=nosuchfield eq {j}")),
        junk.prop_map(|j| format!("sorters=nosuchfield,{j}")),
        (10_001u64..u64::MAX).prop_map(|n| format!("limit={n}")),
        (10_001u64..u64::MAX).prop_map(|n| format!("offset={n}")),
        "[a-z]{0,8}"
            .prop_filter("not a boolean", |c| c != "true" && c != "false")
            .prop_map(|c| format!("count={c}&after=1")),
        "[g-z][ -~]{0,30}".prop_map(|j| format!("searchAfter={j}&limit=0")),
        "[a-z]{1,12}".prop_map(|n| format!("x{n}=1")),
        "-[0-9]{1,5}".prop_map(|n| format!("after={n}&limit=1")),
    ]
}

/// What is wrong with the request.
#[derive(Debug, Clone)]
enum Body {
    /// Bytes that are not a JSON object or array.
    Raw(Vec<u8>),
    /// A required field removed (only for endpoints whose fields are all required).
    Remove(usize),
    /// A field given a value of the wrong type.
    WrongType(usize, usize),
    /// A field the contract does not have.
    Unknown(String),
    /// The connection id (or the first field) replaced by a non-UUID.
    BadId(String),
    /// The period replaced by an out-of-range or non-integer number.
    BadPeriod(f64),
    /// The body nested deeper than any parser allows.
    Nest(usize),
    /// A body larger than the limit of every endpoint but the import.
    Huge,
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..96)
            .prop_filter("not a JSON object or array", |b| {
                !matches!(
                    serde_json::from_slice::<Value>(b),
                    Ok(Value::Object(_) | Value::Array(_))
                )
            })
            .prop_map(Body::Raw),
        (0usize..4).prop_map(Body::Remove),
        (0usize..4, 0usize..6).prop_map(|(f, t)| Body::WrongType(f, t)),
        "[a-zA-Z_$][a-zA-Z0-9_]{0,20}".prop_map(Body::Unknown),
        "[g-z!~ ][g-z0-9-]{0,40}".prop_map(Body::BadId),
        prop_oneof![
            (-1.0e12f64..=0.0).prop_map(f64::floor),
            Just(2_147_483_648.0),
            Just(1.0e300),
            (1.0f64..1000.0).prop_map(|f| f.floor() + 0.5),
        ]
        .prop_map(Body::BadPeriod),
        (200usize..3000).prop_map(Body::Nest),
        Just(Body::Huge),
    ]
}

fn wrong_value(t: usize, is_number: bool) -> Value {
    match t {
        0 if is_number => json!("30"),
        0 => json!(42),
        1 => json!(true),
        2 => json!([1, 2]),
        3 => json!({"a": 1}),
        4 if is_number => json!(1.25),
        4 => json!(-1),
        _ => json!({}),
    }
}

/// The first object of a body: the body itself, the first operation, or the first connection.
fn target(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if v.is_array() {
        return v[0].as_object_mut().unwrap();
    }
    if v.get("connections").is_some() {
        // The import's top level: mutations apply there, where they fail the whole request.
        return v.as_object_mut().unwrap();
    }
    v.as_object_mut().unwrap()
}

/// The invalid bytes for an endpoint, or `None` where a mutation could leave it valid.
fn render(method: &str, path: &str, valid: &Value, body: &Body) -> Option<Vec<u8>> {
    let mut v = valid.clone();
    let put = method == "PUT";
    let import = path.ends_with("/connections");
    match body {
        Body::Raw(bytes) => return Some(bytes.clone()),
        Body::Remove(i) => {
            // The PUT's fields are optional; a PATCH op without `op` is valid.
            if put {
                return None;
            }
            let map = target(&mut v);
            let key = map
                .keys()
                .filter(|k| *k != "op")
                .nth(i % map.len().max(1))?
                .clone();
            map.remove(&key);
        }
        Body::WrongType(i, t) => {
            let map = target(&mut v);
            let key = map.keys().nth(i % map.len())?.clone();
            let is_number = map[&key].is_number();
            // `value` takes any type on some paths; give it one no path takes.
            let wrong = if key == "value" {
                json!({"x": 1})
            } else if map[&key].is_boolean() {
                // `true` is no wrong type for a boolean field (it made a valid PUT of the policy).
                json!("yes")
            } else {
                wrong_value(*t, is_number)
            };
            // The import's list of one object stays a list of objects with `[1, 2]`? No: any
            // wrong top-level type is invalid, and [1, 2] is a list of non-objects, per item 400.
            if import && wrong.is_array() {
                map.insert(key, json!("connections"));
            } else {
                map.insert(key, wrong);
            }
        }
        Body::Unknown(name) => {
            let map = target(&mut v);
            let name = format!("x{name}");
            map.insert(name, json!(1));
        }
        Body::BadId(id) => {
            if import || put || v.is_array() {
                let map = target(&mut v);
                let key = map.keys().next()?.clone();
                map.insert(key, json!({"id": id}));
            } else {
                target(&mut v).insert("connectionId".into(), json!(id));
            }
        }
        Body::BadPeriod(p) => {
            let map = target(&mut v);
            let key = map
                .iter()
                .find(|(_, v)| v.is_number())
                .map(|(k, _)| k.clone())?;
            map.insert(key, json!(p));
        }
        Body::Nest(depth) => {
            let text = format!("{}{}", "[".repeat(*depth), "]".repeat(*depth));
            return Some(text.into_bytes());
        }
        Body::Huge => {
            let text = format!("{{\"x\":\"{}\"}}", "a".repeat(600 * 1024));
            return Some(text.into_bytes());
        }
    }
    Some(v.to_string().into_bytes())
}

#[derive(Debug, Clone)]
enum Auth {
    None,
    Garbage(String),
    Valid,
    OtherTenant,
}

fn auth() -> impl Strategy<Value = Auth> {
    prop_oneof![
        Just(Auth::None),
        "[ -~]{0,80}".prop_map(Auth::Garbage),
        Just(Auth::Valid),
        Just(Auth::Valid),
        Just(Auth::OtherTenant),
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(Some("application/json".to_owned())),
        1 => Just(None),
        1 => "[a-z]{1,10}/[a-z+.-]{1,16}".prop_map(Some),
    ]
}

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

/// The events committed after `before`, as export lines, to name what changed the state.
fn committed_since(h: &Harness, before: u64) -> String {
    match h.engine().export(None, before, 16) {
        Ok(page) => page
            .events
            .iter()
            .map(jitflow::export::json_line)
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(export failed: {e})"),
    }
}

/// Percent-escapes what a URL's query may not hold, keeping `&`, `=` and the like.
fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'#' | b' ' | b'"' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'\\' | b'^' | b'%' => {
                format!("%{b:02X}")
            }
            _ => (b as char).to_string(),
        })
        .collect()
}
