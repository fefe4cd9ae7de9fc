//! The pieces without a server: error mapping, levels, path aliases, keys, the secret file and
//! query strings, body mismatches.

use std::time::Duration;

use axum::response::IntoResponse;
use jitflow_shim::auth::{self, Keys, Level};
use jitflow_shim::error::{ApiError, ErrorResponseDto};
use serde_json::json;

async fn answer(e: ApiError) -> (u16, axum::http::HeaderMap, ErrorResponseDto) {
    let response = e.into_response();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_full_queue_is_429_with_retry_after() {
    let (status, headers, dto) = answer(ApiError::from(jitflow::Error::Busy(64))).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(dto.detail_code, "429 Too Many Requests");
    assert_eq!(dto.message.as_deref(), Some(dto.messages[0].text.as_str()));
    assert!(dto.messages[0].text.contains("busy"));
}

#[tokio::test]
async fn engine_errors_map_to_statuses_and_hide_server_faults() {
    let cases = [
        (jitflow::Error::Stopped, 503),
        (jitflow::Error::Invalid("limit".into()), 400),
        (jitflow::Error::IdempotencyConflict("k".into()), 409),
        (
            jitflow::Error::Storage("disk on fire at /secret/path".into()),
            500,
        ),
    ];
    for (error, expected) in cases {
        let (status, _, dto) = answer(ApiError::from(error)).await;
        assert_eq!(status, expected);
        assert!(!dto.messages[0].text.contains("/secret/path"));
    }
    let (_, _, dto) = answer(ApiError::bad_request("x".repeat(10_000))).await;
    assert!(dto.messages[0].text.chars().count() <= jitflow_shim::error::MAX_ERROR_TEXT + 1);
    let (_, _, a) = answer(ApiError::not_found("a")).await;
    let (_, _, b) = answer(ApiError::not_found("a")).await;
    assert_ne!(a.tracking_id, b.tracking_id);
    assert_eq!(a.detail_code, "404 Not found");
}

#[test]
fn levels() {
    use Level::*;
    let holds = |l: Level, needed: Level| l.satisfies(needed);
    assert!(holds(User, User) && !holds(User, PolicyAdmin) && !holds(User, OrgAdmin));
    assert!(
        holds(PolicyAdmin, User)
            && holds(PolicyAdmin, PolicyAdmin)
            && !holds(PolicyAdmin, OrgAdmin)
    );
    assert!(holds(OrgAdmin, User) && holds(OrgAdmin, PolicyAdmin) && holds(OrgAdmin, OrgAdmin));
}

#[test]
fn v2026_aliases() {
    let alias = jitflow_shim::v2026_alias;
    assert_eq!(
        alias("/jit-activations/v1/activate").as_deref(),
        Some("/v2026/jit-activations/activate")
    );
    assert_eq!(
        alias("/jit-activation-config/v1/{configType}").as_deref(),
        Some("/v2026/jit-activation-config/{configType}")
    );
    assert_eq!(
        alias("/entitlement-connections/v1").as_deref(),
        Some("/v2026/entitlement-connections")
    );
    assert_eq!(alias("/jitflow/v1/connections"), None);
    assert_eq!(alias("/health"), None);
    assert_eq!(alias("/jit-activations/v10/x"), None);
}

#[tokio::test]
async fn keys_mint_verify_and_refuse() {
    assert!(matches!(
        Keys::from_secret(b"short"),
        Err(auth::Error::SecretLength(5))
    ));
    let keys = Keys::from_secret(&[7u8; 32]).unwrap();
    let token = keys
        .mint(
            "acme",
            "alice",
            &["idn:jit-policy:read".to_owned()],
            &[Level::PolicyAdmin],
            Duration::from_secs(60),
        )
        .unwrap();
    let principal = keys.verify(&token).await.unwrap();
    assert_eq!(principal.caller.tenant.as_str(), "acme");
    assert_eq!(principal.identity.as_str(), "alice");
    assert!(principal.has_scope("idn:jit-policy:read"));
    assert!(principal.require(auth::POLICY_READ).is_ok());
    assert_eq!(
        principal.require(auth::POLICY_UPDATE).unwrap_err().status,
        403
    );
    assert_eq!(
        principal
            .require(auth::CONNECTIONS_MANAGE)
            .unwrap_err()
            .status,
        403
    );
    // Another secret does not verify it; bad claims are refused at minting.
    let other = Keys::from_secret(&[8u8; 32]).unwrap();
    assert_eq!(other.verify(&token).await.unwrap_err().status, 401);
    assert!(
        keys.mint("ac me", "alice", &[], &[], Duration::from_secs(60))
            .is_err()
    );
    assert!(
        keys.mint("acme", "", &[], &[], Duration::from_secs(60))
            .is_err()
    );
    let many: Vec<String> = (0..=auth::MAX_SCOPES).map(|i| format!("s{i}")).collect();
    assert!(
        keys.mint("acme", "alice", &many, &[], Duration::from_secs(60))
            .is_err()
    );
}

#[tokio::test]
async fn the_secret_file_is_generated_once_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (first, created) = Keys::load_or_create(&data).unwrap();
    assert!(created);
    let path = data.join(auth::SECRET_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 64);
    let (second, created) = Keys::load_or_create(&data).unwrap();
    assert!(!created);
    let token = first
        .mint(
            "acme",
            "alice",
            &[],
            &[Level::User],
            Duration::from_secs(60),
        )
        .unwrap();
    assert!(
        second.verify(&token).await.is_ok(),
        "the same secret is read back"
    );
    assert!(Keys::from_file(&path).unwrap().verify(&token).await.is_ok());
}

#[tokio::test]
async fn demo_target_fails_the_fraction_it_is_told_and_demo_data_loads_twice() {
    use jitflow::hooks::{EffectRequest, Provisioner};
    use jitflow_shim::demo::{self, DemoProvisioner};

    let dir = tempfile::tempdir().unwrap();
    let engine = jitflow::Engine::builder(dir.path().join("j.redb"))
        .provisioner(DemoProvisioner::new(0.0))
        .open()
        .await
        .unwrap();
    demo::load(&engine).await.unwrap();
    let after_first = engine.last_sequence().unwrap();
    demo::load(&engine).await.unwrap();
    assert_eq!(
        engine.last_sequence().unwrap(),
        after_first,
        "a second load changes nothing"
    );
    let tenant = jitflow_core::id::TenantId::parse(demo::TENANT).unwrap();
    let id = jitflow_core::id::ConnectionId::parse(demo::ALICE_DOMAIN_ADMINS).unwrap();
    let spec = engine.connection(&tenant, id).unwrap().unwrap().spec;
    assert!(engine.policy(&tenant).unwrap().is_some());
    engine.shutdown().await;

    let request = EffectRequest {
        tenant,
        connection: spec,
        activation: None,
        attempt: 1,
        idempotency_key: "k".into(),
    };
    for _ in 0..20 {
        assert!(
            DemoProvisioner::new(1.0)
                .grant(request.clone())
                .await
                .is_err()
        );
        assert!(
            DemoProvisioner::new(0.0)
                .revoke(request.clone())
                .await
                .is_ok()
        );
        assert!(
            DemoProvisioner::new(f64::NAN)
                .grant(request.clone())
                .await
                .is_ok()
        );
    }
    let failures = {
        let half = DemoProvisioner::new(0.5);
        let mut n = 0;
        for _ in 0..400 {
            n += usize::from(half.grant(request.clone()).await.is_err());
        }
        n
    };
    // 400 draws at one half: outside 100..=300 has a probability far below 1e-20.
    assert!((100..=300).contains(&failures), "{failures} of 400 failed");
}

/// Query strings are decoded in order, bounded in length and count, and checked against the
/// endpoint's names.
#[test]
fn query_strings_are_decoded_and_bounded() {
    use jitflow_shim::body::{MAX_PARAMS, MAX_QUERY_LEN, Params};
    let uri = |q: &str| -> axum::http::Uri { format!("/x?{q}").parse().unwrap() };
    let p = Params::from_uri(&uri(
        "filters=state.value%20eq%20%22EXPIRED%22&limit=5&sorters=-id+x",
    ))
    .unwrap();
    assert_eq!(p.get("filters"), Some(r#"state.value eq "EXPIRED""#));
    assert_eq!(p.get("sorters"), Some("-id x"), "`+` is a space");
    assert_eq!(p.get("count"), None);
    assert!(p.only(&["filters", "limit", "sorters"]).is_ok());
    let e = p.only(&["filters", "limit"]).unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.text.contains("`sorters`")),
        (400, true),
        "{}",
        e.text
    );
    let e = Params::from_uri(&uri("limit=1&limit=2"))
        .unwrap()
        .only(&["limit"])
        .unwrap_err();
    assert!(e.text.contains("more than once"), "{}", e.text);
    assert!(
        Params::from_uri(&uri("limit=1"))
            .unwrap()
            .required("after")
            .is_err()
    );
    assert!(
        Params::from_uri(&"/x".parse().unwrap())
            .unwrap()
            .0
            .is_empty()
    );
    let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=1")).collect();
    let e = Params::from_uri(&uri(&many.join("&"))).unwrap_err();
    assert_eq!(e.status.as_u16(), 400);
    let fits: Vec<String> = (0..MAX_PARAMS).map(|i| format!("p{i}=1")).collect();
    assert_eq!(
        Params::from_uri(&uri(&fits.join("&"))).unwrap().0.len(),
        MAX_PARAMS
    );
    let long = format!("filters={}", "a".repeat(MAX_QUERY_LEN));
    let e = Params::from_uri(&uri(&long)).unwrap_err();
    assert!(e.text.contains("bytes"), "{}", e.text);
}

#[tokio::test]
async fn a_body_that_does_not_match_names_the_field() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[expect(dead_code, reason = "only the refusal is looked at")]
    struct Body {
        new_owner_id: String,
        items: Vec<Item>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[expect(dead_code, reason = "only the refusal is looked at")]
    struct Item {
        comment: String,
    }
    let cases = [
        (json!({"newOwnerId": 5, "items": []}), "at newOwnerId:"),
        (
            json!({"newOwnerId": "bob", "items": [{"comment": "a"}, {"comment": true}]}),
            "at items[1].comment:",
        ),
        (
            json!({"newOwnerId": "bob", "items": [], "extra": 1}),
            "at extra:",
        ),
    ];
    for (value, needle) in cases {
        let e = jitflow_shim::body::object::<Body>(value.clone()).unwrap_err();
        let (status, _, dto) = answer(e).await;
        assert_eq!(status, 400);
        let text = &dto.messages[0].text;
        assert!(text.contains(needle), "{value}: {text}");
    }
}
