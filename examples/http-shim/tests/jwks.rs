//! Tokens of identity providers (RS256 and ES256, verified against a JWKS file or URL) next to
//! the HS256 secret: tokens shaped like Okta's, Entra ID's, Keycloak's and Auth0's are served
//! with their claim layouts; every wrong kid, key, signature, algorithm, issuer or audience is a
//! 401 `ErrorResponseDto`; a JWKS URL served on 127.0.0.1 is fetched, cached, fetched again for
//! an unknown kid at most once per cooldown, and refused when too large, too slow or not a set.
//!
//! The keys under `tests/fixtures/` are test-only (see its README).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use common::{ALICE_CONN, BOB_CONN, Harness, ORG_ADMIN_SCOPES, TENANT, Target, error_text, keys};
use jitflow_shim::auth::claims::{Layout, Name};
use jitflow_shim::auth::jwks::{self, Jwks, Remote};
use jitflow_shim::auth::{Keys, Level, Provider};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RSA_PRIVATE: &[u8] = include_bytes!("fixtures/rsa-private.der");
const RSA_OTHER_PRIVATE: &[u8] = include_bytes!("fixtures/rsa-other-private.der");
const EC_PRIVATE: &[u8] = include_bytes!("fixtures/ec-private.der");
const RSA_PUBLIC_PEM: &[u8] = include_bytes!("fixtures/rsa-public.pem");
const JWKS_JSON: &str = include_str!("fixtures/jwks.json");
const ACTIVATE: &str = "/v2026/jit-activations/activate";
const LIST_SELF: &str = "/v2026/entitlement-connections/current-identity";
const READ: &str = "idn:entitlement-connections:read";
const ACTIVATE_SCOPE: &str = "idn:jit-activation-workflow:activate";
/// The issuer and audience of the plain provider of the file tests.
const ISSUER: &str = "https://idp.example/";
const AUDIENCE: &str = "jitflow";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwks() -> Jwks {
    Jwks::from_json(JWKS_JSON.as_bytes()).unwrap()
}

/// The fixture's key set with only the keys at `indexes`, the kid of each replaced when given.
fn set(keys: &[(usize, Option<&str>)]) -> String {
    let all: Value = serde_json::from_str(JWKS_JSON).unwrap();
    let keys: Vec<Value> = keys
        .iter()
        .map(|(i, kid)| {
            let mut key = all["keys"][*i].clone();
            if let Some(kid) = kid {
                key["kid"] = json!(kid);
            }
            key
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn name(text: &str) -> Name {
    Name::parse(text).unwrap()
}

/// The test secret's keys with a provider of `keys`, [`ISSUER`] and [`AUDIENCE`], and `layout`.
fn with_provider(keys_source: impl Into<jwks::Source>, layout: Layout) -> Keys {
    let provider = Provider::new(
        keys_source,
        vec![ISSUER.to_owned()],
        vec![AUDIENCE.to_owned()],
        layout,
    )
    .unwrap();
    keys().with_provider(provider)
}

async fn harness() -> Harness {
    let h = Harness::with_keys(Target::default(), with_provider(jwks(), Layout::default())).await;
    h.seed().await;
    h
}

/// Claims in the shim's own layout, from [`ISSUER`] for [`AUDIENCE`].
fn claims(tenant: &str, identity: &str, scopes: &[&str], level: Level) -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "tenant": tenant,
        "sub": identity,
        "scope": scopes,
        "levels": [level.as_str()],
        "exp": now + 600,
        "iat": now,
    })
}

/// Alice's claims with the scopes to activate and to list her connections.
fn alice() -> Value {
    claims(TENANT, "alice", &[ACTIVATE_SCOPE, READ], Level::User)
}

/// A token signed with `algorithm`, naming `kid`, with `key`.
fn sign(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn rsa(kid: Option<&str>, claims: &Value) -> String {
    sign(
        Algorithm::RS256,
        kid,
        &EncodingKey::from_rsa_der(RSA_PRIVATE),
        claims,
    )
}

fn ec(kid: Option<&str>, claims: &Value) -> String {
    sign(
        Algorithm::ES256,
        kid,
        &EncodingKey::from_ec_der(EC_PRIVATE),
        claims,
    )
}

/// Signs claims naming a kid.
type Signer = fn(Option<&str>, &Value) -> String;

/// The fixture's two signing keys as (kid, signer).
fn signers() -> [(&'static str, Signer); 2] {
    [("test-rsa", rsa), ("test-ec", ec)]
}

/// Asserts `token` is refused with 401 and a message containing `reason`.
async fn refused(h: &Harness, token: &str, reason: &str) {
    let body = h.expect(401, "GET", LIST_SELF, Some(token), None).await;
    let text = error_text(&body);
    assert!(text.contains(reason), "{text:?} lacks {reason:?}");
}

/// Asserts `keys` refuse `token` with a message containing `reason`.
async fn refuses(keys: &Keys, token: &str, reason: &str) {
    let error = keys.verify(token).await.unwrap_err();
    assert_eq!(error.status, 401);
    assert!(
        error.text.contains(reason),
        "{:?} lacks {reason:?}",
        error.text
    );
}

// ---------------------------------------------------------------------------------------------
// The four providers' token shapes.

/// A provider's token shape: its settings and the claims it issues for a caller.
struct Shape {
    name: &'static str,
    issuer: &'static str,
    audience: &'static str,
    layout: Layout,
    tenant: &'static str,
    identity: &'static str,
    /// The claims for `scopes` and the given level names, valid now.
    claims: fn(&Shape, &[&str], &[&str]) -> Value,
}

/// Okta (custom authorization server): `scp` is a list, `sub` the login, `groups` a custom
/// claim, and the tenant a custom claim.
fn okta() -> Shape {
    Shape {
        name: "Okta",
        issuer: "https://dev-123456.okta.com/oauth2/default",
        audience: "api://jitflow",
        layout: Layout {
            tenant: name("jitflow_tenant"),
            identity: name("sub"),
            scopes: vec![name("scp")],
            levels: vec![name("groups")],
        },
        tenant: "acme",
        identity: "alice@acme.example",
        claims: |s, scopes, levels| {
            let now = now();
            let mut groups = vec!["Everyone"];
            groups.extend(levels);
            json!({
                "ver": 1,
                "jti": "AT.jrKxjM3wdq5lDZDw1BUu0a3Fq8wn",
                "iss": s.issuer,
                "aud": s.audience,
                "iat": now,
                "exp": now + 3600,
                "cid": "0oa1b2c3d4e5f6g7h8i9",
                "uid": "00u1a2b3c4d5e6f7g8h9",
                "scp": scopes,
                "auth_time": now - 10,
                "sub": s.identity,
                "groups": groups,
                "jitflow_tenant": s.tenant,
            })
        },
    }
}

/// Entra ID, v2 access token: `scp` is a space-separated string, the tenant `tid`, the identity
/// `oid`, app roles in `roles`, and the issuer the tenant's.
fn entra() -> Shape {
    Shape {
        name: "Entra ID",
        issuer: "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
        audience: "6e74172b-be56-4843-9ff4-e66a39bb12e3",
        layout: Layout {
            tenant: name("tid"),
            identity: name("oid"),
            scopes: vec![name("scp")],
            levels: vec![name("roles")],
        },
        tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47",
        identity: "690222be-ff1a-4d56-abd1-7e4f7d38e474",
        claims: |s, scopes, levels| {
            let now = now();
            json!({
                "aud": s.audience,
                "iss": s.issuer,
                "iat": now,
                "nbf": now,
                "exp": now + 3600,
                "aio": "AXQAi/8UAAAAqxsuB+R4D2rFQqOETO4YdXbLD9kZ8xfXadeAM0Q2NkNT5izfg3uwbWSXhuSSj6UT5hy2D6WqAp",
                "azp": "2cd0f6b0-5d10-4b86-a3a1-4c1b4ad1b1b8",
                "azpacr": "0",
                "name": "Alice",
                "oid": s.identity,
                "preferred_username": "alice@contoso.onmicrosoft.com",
                "rh": "0.AXQAv4j5cvGGr0GRqy180BHbR.",
                "roles": levels,
                "scp": scopes.join(" "),
                "sub": "Yz1Qn2uOWTfOKmI1bXPyGeAoRgPULxVdSDfZOjC2Tlo",
                "tid": s.tenant,
                "uti": "fqiBqXLPj0eQa82S-IYFAA",
                "ver": "2.0",
            })
        },
    }
}

/// Keycloak: realm roles under `realm_access.roles`, `scope` a string, `azp` the client, the
/// audience a list, and the tenant a user attribute mapped into the token.
fn keycloak() -> Shape {
    Shape {
        name: "Keycloak",
        issuer: "https://sso.acme.example/realms/acme",
        audience: "jitflow",
        layout: Layout {
            tenant: name("tenant"),
            identity: name("sub"),
            scopes: vec![name("scope")],
            levels: vec![name("/realm_access/roles")],
        },
        tenant: "acme",
        identity: "f47ac10b-58cc-4372-a567-0e02b2c3d479",
        claims: |s, scopes, levels| {
            let now = now();
            let mut roles = vec!["default-roles-acme", "offline_access", "uma_authorization"];
            roles.extend(levels);
            let mut scope = vec!["openid", "profile", "email"];
            scope.extend(scopes);
            json!({
                "exp": now + 300,
                "iat": now,
                "auth_time": now - 5,
                "jti": "onrtac:3c0b3a7e-9d9e-4f61-9a3c-2a1e5c2f0e11",
                "iss": s.issuer,
                "aud": [s.audience, "account"],
                "sub": s.identity,
                "typ": "Bearer",
                "azp": "jitflow-cli",
                "sid": "8f3d1c2b-4a5e-4f6a-9b7c-1d2e3f4a5b6c",
                "acr": "1",
                "allowed-origins": ["https://jitflow.acme.example"],
                "realm_access": {"roles": roles},
                "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
                "scope": scope.join(" "),
                "email_verified": true,
                "preferred_username": "alice",
                "tenant": s.tenant,
            })
        },
    }
}

/// Auth0: `scope` a string, RBAC `permissions` a list (both read, joined), the tenant, identity
/// and levels namespaced custom claims (Auth0's `sub`, `auth0|...`, is not an identity id).
fn auth0() -> Shape {
    Shape {
        name: "Auth0",
        issuer: "https://acme.us.auth0.com/",
        audience: "https://jitflow.acme.example/api",
        layout: Layout {
            tenant: name("https://jitflow.acme.example/tenant"),
            identity: name("https://jitflow.acme.example/identity"),
            scopes: vec![name("scope"), name("permissions")],
            levels: vec![name("https://jitflow.acme.example/levels")],
        },
        tenant: "acme",
        identity: "alice",
        claims: |s, scopes, levels| {
            let now = now();
            // The first scope rides in `scope`, the others in `permissions`.
            let (first, rest) = scopes
                .split_first()
                .map_or((&[][..], scopes), |(f, r)| (std::slice::from_ref(f), r));
            let mut scope = vec!["openid", "profile"];
            scope.extend(first);
            json!({
                "https://jitflow.acme.example/tenant": s.tenant,
                "https://jitflow.acme.example/identity": s.identity,
                "https://jitflow.acme.example/levels": levels,
                "iss": s.issuer,
                "sub": "auth0|64f1c2d3e4b5a6978a1b2c3d",
                "aud": [s.audience, "https://acme.us.auth0.com/userinfo"],
                "iat": now,
                "exp": now + 86400,
                "scope": scope.join(" "),
                "azp": "Zt8xXw5bV1tq3KvN0sYhU2mJcR7pLaE4",
                "permissions": rest,
            })
        },
    }
}

/// A key set served over HTTP on 127.0.0.1 (an ephemeral port): the body and status can be
/// changed between requests, and requests are counted.
struct JwksServer {
    url: String,
    body: Arc<Mutex<(StatusCode, String)>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        let state = Arc::new(Mutex::new((StatusCode::OK, body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (Arc::clone(&state), Arc::clone(&hits));
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (s, h) = (Arc::clone(&s), Arc::clone(&h));
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    s.lock().unwrap().clone()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        JwksServer {
            url,
            body: state,
            hits,
            task,
        }
    }

    fn serve(&self, status: StatusCode, body: String) {
        *self.body.lock().unwrap() = (status, body);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings whose cooldown outlasts any test, so that a second fetch after the first refresh
/// can only be the rate limit failing.
fn settings() -> jwks::Settings {
    jwks::Settings {
        max_age: Duration::from_secs(3600),
        cooldown: Duration::from_secs(3600),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn okta_entra_keycloak_and_auth0_tokens_are_served_with_their_claims() {
    let server = JwksServer::start(JWKS_JSON.to_owned()).await;
    for (n, shape) in [okta(), entra(), keycloak(), auth0()].iter().enumerate() {
        let remote = Remote::fetch(&server.url, settings()).await.unwrap();
        let provider = Provider::new(
            remote,
            vec![shape.issuer.to_owned()],
            vec![shape.audience.to_owned()],
            shape.layout.clone(),
        )
        .unwrap();
        let h = Harness::with_keys(Target::default(), keys().with_provider(provider)).await;
        // The provider's caller has one JIT connection in the provider's tenant.
        let conn = format!("00000000-0000-4000-8000-00000000000{n}");
        let admin = h.token(shape.tenant, "admin", ORG_ADMIN_SCOPES, &[Level::OrgAdmin]);
        let imported = h
            .expect(
                200,
                "POST",
                "/jitflow/v1/connections",
                Some(&admin),
                Some(json!({"connections": [common::spec(&conn, shape.identity, "JIT")]})),
            )
            .await;
        assert_eq!(imported["results"][0]["status"], 200, "{imported}");
        let claims = (shape.claims)(shape, &[READ, ACTIVATE_SCOPE], &["USER"]);
        for (kid, signer) in signers() {
            let token = signer(Some(kid), &claims);
            let list = h.expect(200, "GET", LIST_SELF, Some(&token), None).await;
            let ids: Vec<&str> = list
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, [conn.as_str()], "{}: {list}", shape.name);
        }
        let token = ec(Some("test-ec"), &claims);
        let body = h
            .expect(
                202,
                "POST",
                ACTIVATE,
                Some(&token),
                Some(json!({"connectionId": conn, "activationPeriodMins": 30})),
            )
            .await;
        assert_eq!(body["connectionId"], conn.as_str(), "{}", shape.name);
        // The scopes come from the provider's scope claims: without activate, 403.
        let reader = rsa(Some("test-rsa"), &(shape.claims)(shape, &[READ], &["USER"]));
        h.expect(
            403,
            "POST",
            ACTIVATE,
            Some(&reader),
            Some(json!({"connectionId": conn, "activationPeriodMins": 30})),
        )
        .await;
        // The levels come from the provider's level claims: roles that are no level grant none.
        let no_level = rsa(
            Some("test-rsa"),
            &(shape.claims)(shape, &[READ], &["Admins"]),
        );
        let body = h.expect(403, "GET", LIST_SELF, Some(&no_level), None).await;
        assert!(error_text(&body).contains("user level USER"), "{body}");
        // Another provider's issuer or audience is refused.
        let mut stranger = claims.clone();
        stranger["iss"] = json!("https://login.microsoftonline.com/common/v2.0");
        refused(&h, &rsa(Some("test-rsa"), &stranger), "InvalidIssuer").await;
        let mut other_app = claims.clone();
        other_app["aud"] = json!("api://another-app");
        refused(&h, &ec(Some("test-ec"), &other_app), "InvalidAudience").await;
        h.stop().await;
    }
    // One fetch per provider, at start: known kids never fetch again.
    assert_eq!(server.hits(), 4);
}

#[tokio::test]
async fn an_unknown_kid_fetches_the_set_again_at_most_once_per_cooldown() {
    let server = JwksServer::start(set(&[(0, None)])).await;
    let remote = Remote::fetch(&server.url, settings()).await.unwrap();
    assert_eq!(server.hits(), 1);
    let keys = with_provider(remote, Layout::default());
    keys.verify(&rsa(Some("test-rsa"), &alice())).await.unwrap();
    assert_eq!(server.hits(), 1, "a known kid is served from the cache");
    // The provider rotates in the EC key: its first token fetches the set again.
    server.serve(StatusCode::OK, set(&[(0, None), (1, None)]));
    let principal = keys.verify(&ec(Some("test-ec"), &alice())).await.unwrap();
    assert!(principal.has_scope(READ));
    assert_eq!(server.hits(), 2);
    // Within the cooldown another unknown kid is refused without a fetch, however many come.
    server.serve(StatusCode::OK, set(&[(0, None), (1, Some("test-ec-2"))]));
    for _ in 0..3 {
        refuses(
            &keys,
            &ec(Some("test-ec-2"), &alice()),
            "no JWKS key has the kid \"test-ec-2\"",
        )
        .await;
    }
    assert_eq!(server.hits(), 2);
    keys.verify(&ec(Some("test-ec"), &alice())).await.unwrap();
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_cached_set() {
    for (status, body) in [
        (StatusCode::INTERNAL_SERVER_ERROR, String::new()),
        (StatusCode::OK, "{\"keys\": 5}".to_owned()),
    ] {
        // A fresh remote per answer, since the first refresh starts the cooldown.
        let server = JwksServer::start(set(&[(0, None)])).await;
        let keys = with_provider(
            Remote::fetch(&server.url, settings()).await.unwrap(),
            Layout::default(),
        );
        server.serve(status, body);
        refuses(
            &keys,
            &ec(Some("test-ec"), &alice()),
            "no JWKS key has the kid",
        )
        .await;
        assert_eq!(server.hits(), 2, "the unknown kid fetched");
        keys.verify(&rsa(Some("test-rsa"), &alice())).await.unwrap();
    }
}

/// A server on 127.0.0.1 that reads each request's head and answers `answer`, or never answers.
async fn raw_server(answer: Option<Vec<u8>>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            match &answer {
                Some(bytes) => {
                    let _ = socket.write_all(bytes).await;
                    let _ = socket.shutdown().await;
                }
                None => held.push(socket),
            }
        }
    });
    (url, task)
}

#[tokio::test]
async fn bad_urls_and_answers_are_refused_with_the_reason() {
    let fetch = |url: String, settings: jwks::Settings| async move {
        Remote::fetch(&url, settings).await.unwrap_err().to_string()
    };
    let cases = [
        ("https://idp.example/keys".to_owned(), "no TLS"),
        ("ftp://idp.example/keys".to_owned(), "\"ftp\" is not http"),
        ("not a url".to_owned(), "JWKS URL not a url"),
    ];
    for (url, reason) in cases {
        let text = fetch(url, settings()).await;
        assert!(text.contains(reason), "{text:?} lacks {reason:?}");
    }
    let mut bad = settings();
    bad.cooldown = Duration::ZERO;
    let text = fetch("http://127.0.0.1:9/".to_owned(), bad).await;
    assert!(text.contains("cooldown"), "{text}");

    let server = JwksServer::start(String::new()).await;
    let big = format!(
        "{{\"keys\": [], \"pad\": \"{}\"}}",
        " ".repeat(usize::try_from(jwks::MAX_DOCUMENT_BYTES).unwrap())
    );
    for (status, body, reason) in [
        (StatusCode::NOT_FOUND, String::new(), "status 404"),
        (StatusCode::OK, "<html>".to_owned(), "not a JWKS"),
        (
            StatusCode::OK,
            "{\"keys\": []}".to_owned(),
            "no signing key",
        ),
        (StatusCode::OK, big, "more than 65536 bytes"),
    ] {
        server.serve(status, body);
        let text = fetch(server.url.clone(), settings()).await;
        assert!(text.contains(reason), "{text:?} lacks {reason:?}");
    }

    // A chunked body (no length given) is cut at the bound while it is read.
    let chunk = vec![b' '; 16 * 1024];
    let mut chunked =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (url, task) = raw_server(Some(chunked)).await;
    let text = fetch(url, settings()).await;
    assert!(text.contains("more than 65536 bytes"), "{text}");
    task.abort();

    // A redirect is not followed.
    let (url, task) = raw_server(Some(
        b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:9/\r\ncontent-length: 0\r\n\r\n"
            .to_vec(),
    ))
    .await;
    let text = fetch(url, settings()).await;
    assert!(text.contains("status 302"), "{text}");
    task.abort();

    // A server that never answers is given up on after the timeout.
    let (url, task) = raw_server(None).await;
    let mut quick = settings();
    quick.timeout = Duration::from_millis(200);
    let text = fetch(url, quick).await;
    assert!(text.contains("no answer within 200ms"), "{text}");
    task.abort();
}

#[tokio::test]
async fn a_provider_needs_an_issuer_and_an_audience() {
    for (issuers, audiences, reason) in [
        (vec![], vec!["a".to_owned()], "issuers, not 0"),
        (vec!["i".to_owned()], vec![], "audiences, not 0"),
        (vec![String::new()], vec!["a".to_owned()], "1..=1024 bytes"),
    ] {
        let error = Provider::new(jwks(), issuers, audiences, Layout::default()).unwrap_err();
        assert!(error.to_string().contains(reason), "{error}");
    }
    let mut layout = Layout::default();
    layout.levels.clear();
    let error =
        Provider::new(jwks(), vec!["i".to_owned()], vec!["a".to_owned()], layout).unwrap_err();
    assert!(error.to_string().contains("levels"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// A key set from a file: keys, kids, signatures and algorithms.

#[tokio::test]
async fn rs256_and_es256_tokens_are_served_with_their_tenant_and_scopes() {
    let h = harness().await;
    for (kid, signer) in signers() {
        let list = h
            .expect(
                200,
                "GET",
                LIST_SELF,
                Some(&signer(Some(kid), &alice())),
                None,
            )
            .await;
        let ids: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert!(
            ids.contains(&ALICE_CONN) && !ids.contains(&BOB_CONN),
            "{list}"
        );
    }
    // The tenant comes from the token: another tenant sees none of acme's connections.
    let stranger = rsa(
        Some("test-rsa"),
        &claims("globex", "alice", &[READ], Level::User),
    );
    let list = h.expect(200, "GET", LIST_SELF, Some(&stranger), None).await;
    assert_eq!(list, json!([]));
    // A scope string is read like a list.
    let mut spaced = alice();
    spaced["scope"] = json!(format!("openid {READ}"));
    h.expect(
        200,
        "GET",
        LIST_SELF,
        Some(&rsa(Some("test-rsa"), &spaced)),
        None,
    )
    .await;
    // HS256 tokens of the secret keep working alongside.
    let hs = h.token(TENANT, "alice", &[READ], &[Level::User]);
    let list = h.expect(200, "GET", LIST_SELF, Some(&hs), None).await;
    assert!(!list.as_array().unwrap().is_empty(), "{list}");
    h.stop().await;
}

#[tokio::test]
async fn wrong_kids_keys_signatures_and_algorithms_are_401() {
    let h = harness().await;
    let claims = alice();
    refused(&h, &rsa(Some("nobody"), &claims), "no JWKS key has the kid").await;
    refused(&h, &rsa(None, &claims), "needs a kid").await;
    refused(&h, &ec(None, &claims), "needs a kid").await;
    // The encryption key of the set is not a signing key.
    refused(
        &h,
        &rsa(Some("test-enc"), &claims),
        "no JWKS key has the kid",
    )
    .await;
    // Another RSA key under the set's kid.
    let other = sign(
        Algorithm::RS256,
        Some("test-rsa"),
        &EncodingKey::from_rsa_der(RSA_OTHER_PRIVATE),
        &claims,
    );
    refused(&h, &other, "InvalidSignature").await;
    // One character of the signature changed.
    let good = rsa(Some("test-rsa"), &claims);
    let (head, signature) = good.rsplit_once('.').unwrap();
    let mut bytes = signature.as_bytes().to_vec();
    bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{head}.{}", String::from_utf8(bytes).unwrap());
    refused(&h, &tampered, "InvalidSignature").await;
    // The claims changed under a good signature.
    let mut admin = claims.clone();
    admin["levels"] = json!(["ORG_ADMIN"]);
    let elevated = rsa(Some("test-rsa"), &admin);
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = elevated.split('.').nth(1).unwrap();
    refused(&h, &parts.join("."), "InvalidSignature").await;
    // Algorithm confusion: HS256 keyed with the public key is checked against the secret.
    let confused = sign(
        Algorithm::HS256,
        Some("test-rsa"),
        &EncodingKey::from_secret(RSA_PUBLIC_PEM),
        &claims,
    );
    refused(&h, &confused, "InvalidSignature").await;
    // Each key is pinned to its algorithm.
    refused(&h, &ec(Some("test-rsa"), &claims), "verifies RS256").await;
    refused(&h, &rsa(Some("test-ec"), &claims), "verifies ES256").await;
    let rs384 = sign(
        Algorithm::RS384,
        Some("test-rsa"),
        &EncodingKey::from_rsa_der(RSA_PRIVATE),
        &claims,
    );
    refused(&h, &rs384, "verifies RS256").await;
    // `alg: none` does not even parse.
    let none = format!(
        "eyJhbGciOiJub25lIiwia2lkIjoidGVzdC1yc2EifQ.{}.",
        good.split('.').nth(1).unwrap()
    );
    refused(&h, &none, "JWT validation failed").await;
    h.stop().await;
}

#[tokio::test]
async fn provider_tokens_pass_the_claim_checks() {
    let h = harness().await;
    let with = |name: &str, value: Value| {
        let mut claims = alice();
        claims[name] = value;
        claims
    };
    let without = |name: &str| {
        let mut claims = alice();
        claims.as_object_mut().unwrap().remove(name);
        claims
    };
    let now = now();
    let cases = [
        (with("exp", json!(now - 3600)), "ExpiredSignature"),
        (with("nbf", json!(now + 3600)), "ImmatureSignature"),
        (with("iss", json!("https://evil.example/")), "InvalidIssuer"),
        (with("aud", json!(["other", "another"])), "InvalidAudience"),
        (without("iss"), "Missing required claim: iss"),
        (without("aud"), "Missing required claim: aud"),
        (without("exp"), "Missing required claim: exp"),
        (with("tenant", json!("no spaces allowed")), "tenant: "),
        (without("sub"), "no claim sub"),
        (with("scope", json!(7)), "scope must be a string or a list"),
        (
            with(
                "scope",
                json!((0..65).map(|i| format!("s{i}")).collect::<Vec<_>>()),
            ),
            "more than 64 scopes",
        ),
    ];
    for (claims, reason) in cases {
        refused(&h, &rsa(Some("test-rsa"), &claims), reason).await;
    }
    // The audience may be one of a list; an unknown level is ignored, not fatal.
    let listed = with("aud", json!(["other", AUDIENCE]));
    h.expect(
        200,
        "GET",
        LIST_SELF,
        Some(&rsa(Some("test-rsa"), &listed)),
        None,
    )
    .await;
    let extra = with("levels", json!(["USER", "SOURCE_ADMIN"]));
    h.expect(
        200,
        "GET",
        LIST_SELF,
        Some(&ec(Some("test-ec"), &extra)),
        None,
    )
    .await;
    h.stop().await;
}

#[tokio::test]
async fn without_a_provider_only_hs256_verifies() {
    let h = Harness::new().await;
    refused(
        &h,
        &rsa(Some("test-rsa"), &alice()),
        "needs an identity provider's keys",
    )
    .await;
    let hs = h.token(TENANT, "alice", &[READ], &[Level::User]);
    h.expect(200, "GET", LIST_SELF, Some(&hs), None).await;
    h.stop().await;
}
