//! RS256 and ES256 tokens verified against a JWKS file, next to the HS256 secret: the right key
//! serves, and every wrong kid, key, signature or algorithm is a 401 `ErrorResponseDto`.
//!
//! The keys under `tests/fixtures/` are test-only (see its README).

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{ALICE_CONN, BOB_CONN, Harness, TENANT, Target, error_text, keys};
use jitflow_core::connection::ConnectionState;
use jitflow_shim::auth::{Claims, Jwks, Level};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const RSA_PRIVATE: &[u8] = include_bytes!("fixtures/rsa-private.der");
const RSA_OTHER_PRIVATE: &[u8] = include_bytes!("fixtures/rsa-other-private.der");
const EC_PRIVATE: &[u8] = include_bytes!("fixtures/ec-private.der");
const RSA_PUBLIC_PEM: &[u8] = include_bytes!("fixtures/rsa-public.pem");
const ACTIVATE: &str = "/v2026/jit-activations/activate";
const LIST_SELF: &str = "/v2026/entitlement-connections/current-identity";

fn jwks() -> Jwks {
    Jwks::from_file(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwks.json"
    )))
    .unwrap()
}

async fn harness() -> Harness {
    let h = Harness::with_keys(Target::default(), keys().with_jwks(jwks())).await;
    h.seed().await;
    h
}

fn claims(tenant: &str, identity: &str, scopes: &[&str], level: Level) -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Claims {
        tenant: tenant.to_owned(),
        sub: identity.to_owned(),
        scope: scopes.iter().map(|s| (*s).to_owned()).collect(),
        levels: vec![level],
        exp: now + 600,
        iat: now,
    }
}

/// Alice's claims with the scopes to activate and to list her connections.
fn alice() -> Claims {
    claims(
        TENANT,
        "alice",
        &[
            "idn:jit-activation-workflow:activate",
            "idn:entitlement-connections:read",
        ],
        Level::User,
    )
}

/// A token signed with `algorithm`, naming `kid`, with `key`.
fn sign(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Claims) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn rsa(kid: Option<&str>, claims: &Claims) -> String {
    sign(
        Algorithm::RS256,
        kid,
        &EncodingKey::from_rsa_der(RSA_PRIVATE),
        claims,
    )
}

fn ec(kid: Option<&str>, claims: &Claims) -> String {
    sign(
        Algorithm::ES256,
        kid,
        &EncodingKey::from_ec_der(EC_PRIVATE),
        claims,
    )
}

/// Asserts `token` is refused with 401 and a message containing `reason`.
async fn refused(h: &Harness, token: &str, reason: &str) {
    let body = h.expect(401, "GET", LIST_SELF, Some(token), None).await;
    let text = error_text(&body);
    assert!(text.contains(reason), "{text:?} lacks {reason:?}");
}

#[tokio::test]
async fn rs256_and_es256_tokens_are_served_with_their_tenant_and_scopes() {
    let h = harness().await;
    for token in [
        rsa(Some("test-rsa"), &alice()),
        ec(Some("test-ec"), &alice()),
    ] {
        let list = h.expect(200, "GET", LIST_SELF, Some(&token), None).await;
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
    let token = rsa(Some("test-rsa"), &alice());
    let body = h
        .expect(
            202,
            "POST",
            ACTIVATE,
            Some(&token),
            Some(json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30})),
        )
        .await;
    assert_eq!(body["connectionId"], ALICE_CONN);
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    // The scopes come from the token: without the activate scope, 403.
    let reader = rsa(
        Some("test-rsa"),
        &claims(
            TENANT,
            "alice",
            &["idn:entitlement-connections:read"],
            Level::User,
        ),
    );
    h.expect(
        403,
        "POST",
        ACTIVATE,
        Some(&reader),
        Some(json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30})),
    )
    .await;
    // The tenant comes from the token: another tenant sees none of acme's connections.
    let stranger = rsa(
        Some("test-rsa"),
        &claims(
            "globex",
            "alice",
            &["idn:entitlement-connections:read"],
            Level::User,
        ),
    );
    let list = h.expect(200, "GET", LIST_SELF, Some(&stranger), None).await;
    assert_eq!(list, json!([]));
    // HS256 tokens of the secret keep working alongside.
    let hs = h.token(
        TENANT,
        "alice",
        &["idn:entitlement-connections:read"],
        &[Level::User],
    );
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
    admin.levels = vec![Level::OrgAdmin];
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
async fn jwks_tokens_pass_the_same_claim_checks() {
    let h = harness().await;
    let mut expired = alice();
    expired.exp = expired.iat - 3600;
    refused(&h, &rsa(Some("test-rsa"), &expired), "ExpiredSignature").await;
    let mut bad_tenant = alice();
    bad_tenant.tenant = "no spaces allowed".to_owned();
    refused(&h, &rsa(Some("test-rsa"), &bad_tenant), "tenant").await;
    let mut many = alice();
    many.scope = vec!["a:b".to_owned(); 65];
    refused(&h, &ec(Some("test-ec"), &many), "more than 64 scopes").await;
    h.stop().await;
}

#[tokio::test]
async fn without_a_jwks_only_hs256_verifies() {
    let h = Harness::new().await;
    refused(
        &h,
        &rsa(Some("test-rsa"), &alice()),
        "no JWKS key has the kid",
    )
    .await;
    let hs = h.token(
        TENANT,
        "alice",
        &["idn:entitlement-connections:read"],
        &[Level::User],
    );
    h.expect(200, "GET", LIST_SELF, Some(&hs), None).await;
    h.stop().await;
}
