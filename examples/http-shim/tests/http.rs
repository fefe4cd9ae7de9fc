//! The shim over real HTTP on an ephemeral port: every endpoint's success path and documented
//! errors, authorization, a lifecycle that expires, and a restart mid-activation.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use jitflow_core::connection::ConnectionState;
use jitflow_shim::auth::Level;
use serde_json::{Value, json};

const ACTIVATE_FORMS: [&str; 2] = [
    "/jit-activations/v1/activate",
    "/v2026/jit-activations/activate",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activate_extend_deactivate_in_both_path_forms() {
    let h = Harness::new().await;
    h.seed().await;
    let alice = h.alice();
    for (round, activate) in ACTIVATE_FORMS.iter().enumerate() {
        let prefix = if round == 0 {
            "/jit-activations/v1"
        } else {
            "/v2026/jit-activations"
        };
        let body = h.expect(202, "POST", activate, Some(&alice), Some(json!({"connectionId": ALICE_CONN.replace('-', ""), "activationPeriodMins": 30}))).await;
        assert_eq!(body["connectionId"], ALICE_CONN);
        assert_eq!(body["activationPeriodMins"], 30);
        assert_eq!(body["status"], "CREATING");
        let activation_id = body["activationId"].as_str().unwrap().to_owned();
        assert_eq!(body["id"], format!("jit-activation-{activation_id}"));
        assert_eq!(body["startTime"], h.engine().now().to_rfc3339());
        h.wait_state(ALICE_CONN, ConnectionState::Active).await;
        assert!(
            h.target
                .0
                .held
                .lock()
                .unwrap()
                .iter()
                .any(|c| c.to_string() == ALICE_CONN)
        );

        let body = h
            .expect(
                202,
                "POST",
                &format!("{prefix}/extend"),
                Some(&alice),
                Some(json!({"connectionId": ALICE_CONN, "activationPeriodExtensionMins": 15})),
            )
            .await;
        assert_eq!(body["activationId"], activation_id.as_str());
        assert_eq!(body["activationPeriodExtensionMins"], 15);
        assert_eq!(body["status"], "PROVISIONED");
        let activation = h.connection(ALICE_CONN).unwrap().activation.unwrap();
        assert_eq!(activation.extended_by.get(), 15);

        let body = h
            .expect(
                202,
                "POST",
                &format!("{prefix}/deactivate"),
                Some(&alice),
                Some(json!({"connectionId": ALICE_CONN})),
            )
            .await;
        assert_eq!(body["activationId"], activation_id.as_str());
        assert_eq!(body["status"], "DEPROVISIONING");
        h.wait_state(ALICE_CONN, ConnectionState::Available).await;
        assert!(h.target.0.held.lock().unwrap().is_empty());
    }
    assert_eq!(h.target.0.grants.load(Ordering::SeqCst), 2);
    assert_eq!(h.target.0.revokes.load(Ordering::SeqCst), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_errors() {
    let h = Harness::new().await;
    h.seed().await;
    let alice = h.alice();
    let before = h.engine().last_sequence().unwrap();
    let bad_bodies = [
        json!({"connectionId": ALICE_CONN, "activationPeriodMins": 0}),
        json!({"connectionId": ALICE_CONN, "activationPeriodMins": -5}),
        json!({"connectionId": ALICE_CONN, "activationPeriodMins": 1.5}),
        json!({"connectionId": ALICE_CONN, "activationPeriodMins": "30"}),
        json!({"connectionId": ALICE_CONN, "activationPeriodMins": 2_147_483_648_i64}),
        json!({"connectionId": ALICE_CONN, "activationPeriodMins": 241}),
        json!({"connectionId": ALICE_CONN}),
        json!({"activationPeriodMins": 30}),
        json!({"connectionId": "not-a-uuid", "activationPeriodMins": 30}),
        json!({"connectionId": 7, "activationPeriodMins": 30}),
        json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30, "extra": true}),
        json!([ALICE_CONN, 30]),
        json!(null),
    ];
    for body in bad_bodies {
        h.expect(
            400,
            "POST",
            ACTIVATE_FORMS[0],
            Some(&alice),
            Some(body.clone()),
        )
        .await;
    }
    // Malformed JSON, a wrong content type, an oversized body.
    let (status, answer, _) = h
        .raw(
            "POST",
            ACTIVATE_FORMS[0],
            Some(&alice),
            Some("application/json"),
            Some(b"{\"connectionId\":".to_vec()),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_text(&answer).contains("not valid JSON"));
    let (status, answer, _) = h
        .raw(
            "POST",
            ACTIVATE_FORMS[0],
            Some(&alice),
            Some("text/plain"),
            Some(b"{}".to_vec()),
        )
        .await;
    // The operation declares no 415: a 400 whose detail code says what happened.
    assert_eq!(status, 400);
    assert_eq!(detail_code(&answer), "400.1.415 Unsupported Media Type");
    let huge = format!(
        "{{\"connectionId\":\"{}\"}}",
        "a".repeat(jitflow_shim::MAX_BODY + 1)
    );
    let (status, answer, _) = h
        .raw(
            "POST",
            ACTIVATE_FORMS[0],
            Some(&alice),
            Some("application/json"),
            Some(huge.into_bytes()),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(detail_code(&answer), "400.1.413 Payload Too Large");
    // Unknown connection; another identity's connection; a standing connection. Activate
    // declares neither 404 nor 409: 400s whose detail codes say which.
    let unknown = "00000000-0000-4000-8000-000000000000";
    for id in [unknown, BOB_CONN] {
        let answer = h
            .expect(
                400,
                "POST",
                ACTIVATE_FORMS[1],
                Some(&alice),
                Some(json!({"connectionId": id, "activationPeriodMins": 30})),
            )
            .await;
        assert_eq!(detail_code(&answer), "400.1.404 Not Found");
        assert!(error_text(&answer).contains("not found"));
    }
    let answer = h
        .expect(
            400,
            "POST",
            ACTIVATE_FORMS[0],
            Some(&alice),
            Some(json!({"connectionId": STANDING_CONN, "activationPeriodMins": 30})),
        )
        .await;
    assert_eq!(detail_code(&answer), "400.1.409 Conflict");
    // Extend and deactivate without a running activation: 400, as the contract says.
    let answer = h
        .expect(
            400,
            "POST",
            "/jit-activations/v1/extend",
            Some(&alice),
            Some(json!({"connectionId": ALICE_CONN, "activationPeriodExtensionMins": 10})),
        )
        .await;
    assert!(error_text(&answer).contains("no running activation"));
    h.expect(
        400,
        "POST",
        "/jit-activations/v1/deactivate",
        Some(&alice),
        Some(json!({"connectionId": ALICE_CONN})),
    )
    .await;
    let _ = h
        .expect(
            400,
            "POST",
            "/jit-activations/v1/extend",
            Some(&alice),
            Some(json!({"connectionId": ALICE_CONN, "activationPeriodExtensionMins": 0})),
        )
        .await;
    let _ = h
        .expect(
            404,
            "POST",
            "/jit-activations/v1/deactivate",
            Some(&alice),
            Some(json!({"connectionId": unknown})),
        )
        .await;
    assert_eq!(
        h.engine().last_sequence().unwrap(),
        before,
        "refusals changed nothing"
    );

    // Activating twice is a conflict; extending past the policy's cap is a bad request.
    let _ = h
        .expect(
            202,
            "POST",
            ACTIVATE_FORMS[0],
            Some(&alice),
            Some(json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30})),
        )
        .await;
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    let answer = h
        .expect(
            400,
            "POST",
            ACTIVATE_FORMS[0],
            Some(&alice),
            Some(json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30})),
        )
        .await;
    assert_eq!(detail_code(&answer), "400.1.409 Conflict");
    h.expect(
        400,
        "POST",
        "/jit-activations/v1/extend",
        Some(&alice),
        Some(json!({"connectionId": ALICE_CONN, "activationPeriodExtensionMins": 61})),
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_first_answer() {
    let h = Harness::new().await;
    h.seed().await;
    let alice = h.alice();
    let send = || async {
        let response = h
            .client
            .post(format!("{}/jit-activations/v1/activate", h.base))
            .bearer_auth(&alice)
            .header("Idempotency-Key", "request-42")
            .header("X-SailPoint-Experimental", "true")
            .json(&json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30}))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (first_status, first) = send().await;
    let (second_status, second) = send().await;
    assert_eq!((first_status, second_status), (202, 202));
    assert_eq!(first["activationId"], second["activationId"]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization() {
    let h = Harness::new().await;
    h.seed().await;
    let body = json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30});
    // No token, a malformed header, a bad signature, an expired token: 401.
    let (status, answer, headers) = h
        .call("POST", ACTIVATE_FORMS[0], None, Some(body.clone()))
        .await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], error_text(&answer));
    assert_eq!(headers["www-authenticate"], "Bearer");
    let forged = jitflow_shim::auth::Keys::from_secret(b"another-secret-another-secret-another")
        .unwrap()
        .mint(
            TENANT,
            "alice",
            &["idn:jit-activation-workflow:activate".to_owned()],
            &[Level::User],
            Duration::from_secs(60),
        )
        .unwrap();
    let expired = h
        .keys
        .mint(
            TENANT,
            "alice",
            &["idn:jit-activation-workflow:activate".to_owned()],
            &[Level::User],
            Duration::ZERO,
        )
        .unwrap();
    // An expired token is still within the leeway; make one far in the past by hand.
    let _ = expired;
    let old = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &jitflow_shim::auth::Claims {
            tenant: TENANT.into(),
            sub: "alice".into(),
            scope: vec!["idn:jit-activation-workflow:activate".into()],
            levels: vec![Level::User],
            exp: 1_000_000,
            iat: 999_000,
        },
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    for token in [forged.as_str(), old.as_str(), "not.a.jwt", ""] {
        h.expect(
            401,
            "POST",
            ACTIVATE_FORMS[0],
            Some(token),
            Some(body.clone()),
        )
        .await;
    }
    // Wrong scope, wrong level: 403, checked before the body.
    let wrong_scope = h.token(
        TENANT,
        "alice",
        &["idn:jit-activation-workflow:extend"],
        &[Level::User],
    );
    let (status, answer, _) = h
        .raw(
            "POST",
            ACTIVATE_FORMS[0],
            Some(&wrong_scope),
            Some("application/json"),
            Some(b"{oops".to_vec()),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    error_text(&answer);
    let no_level = h.token(
        TENANT,
        "alice",
        &["idn:jit-activation-workflow:activate"],
        &[],
    );
    let _ = h
        .expect(
            403,
            "POST",
            ACTIVATE_FORMS[0],
            Some(&no_level),
            Some(body.clone()),
        )
        .await;
    let user_on_policy = h.token(TENANT, "alice", &["idn:jit-policy:read"], &[Level::User]);
    let _ = h
        .expect(
            403,
            "GET",
            "/jit-activation-config/v1/policy",
            Some(&user_on_policy),
            None,
        )
        .await;
    let _ = h
        .expect(
            403,
            "POST",
            "/jitflow/v1/connections",
            Some(&h.alice()),
            Some(json!({"connections": [spec(ALICE_CONN, "alice", "JIT")]})),
        )
        .await;
    // The manage scope acts on another identity's connection.
    let manager = h.token(
        TENANT,
        "ops",
        &["idn:jit-activation-workflow:manage"],
        &[Level::User],
    );
    h.expect(
        202,
        "POST",
        ACTIVATE_FORMS[0],
        Some(&manager),
        Some(json!({"connectionId": BOB_CONN, "activationPeriodMins": 30})),
    )
    .await;
    h.wait_state(BOB_CONN, ConnectionState::Active).await;
    // Another tenant sees nothing of acme: not its connections, not its policy.
    let mallory = h.token(
        "globex",
        "alice",
        &[
            "idn:jit-activation-workflow:manage",
            "idn:jit-policy:manage",
        ],
        &[Level::OrgAdmin],
    );
    let before = h.engine().last_sequence().unwrap();
    let probes = [
        (
            "/jit-activations/v1/activate",
            json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30}),
        ),
        (
            "/jit-activations/v1/extend",
            json!({"connectionId": ALICE_CONN, "activationPeriodExtensionMins": 5}),
        ),
        (
            "/jit-activations/v1/deactivate",
            json!({"connectionId": ALICE_CONN}),
        ),
    ];
    for (path, body) in probes {
        // Activate declares no 404: a 400 whose detail code says it.
        let status = if path.ends_with("/activate") {
            400
        } else {
            404
        };
        let answer = h
            .expect(status, "POST", path, Some(&mallory), Some(body))
            .await;
        assert!(detail_code(&answer).contains("404"), "{answer}");
    }
    let _ = h
        .expect(
            404,
            "GET",
            "/jit-activation-config/v1/policy",
            Some(&mallory),
            None,
        )
        .await;
    let _ = h
        .expect(
            404,
            "PATCH",
            "/jit-activation-config/v1/policy",
            Some(&mallory),
            Some(json!([{"path": "/maxActivationPeriodMins", "value": 5}])),
        )
        .await;
    let _ = h
        .expect(
            403,
            "DELETE",
            &format!("/jitflow/v1/connections/{ALICE_CONN}"),
            Some(&mallory),
            None,
        )
        .await;
    let globex_admin = h.token(
        "globex",
        "root",
        &["idn:entitlement-connections:manage"],
        &[Level::OrgAdmin],
    );
    let _ = h
        .expect(
            404,
            "DELETE",
            &format!("/jitflow/v1/connections/{ALICE_CONN}"),
            Some(&globex_admin),
            None,
        )
        .await;
    assert_eq!(h.engine().last_sequence().unwrap(), before);
    assert!(h.connection(ALICE_CONN).is_some());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_config() {
    let h = Harness::new().await;
    let admin = h.admin();
    let reader = h.token(
        TENANT,
        "pat",
        &["idn:jit-policy:read"],
        &[Level::PolicyAdmin],
    );
    for path in [
        "/jit-activation-config/v1/policy",
        "/v2026/jit-activation-config/policy",
    ] {
        h.expect(404, "GET", path, Some(&reader), None).await;
    }
    let _ = h
        .expect(
            404,
            "PATCH",
            "/jit-activation-config/v1/policy",
            Some(&admin),
            Some(json!([{"path": "/maxActivationPeriodMins", "value": 60}])),
        )
        .await;
    h.seed().await;
    let stored = h
        .expect(
            200,
            "GET",
            "/v2026/jit-activation-config/policy",
            Some(&reader),
            None,
        )
        .await;
    let keys: BTreeSet<&str> = stored
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "entitlementIds",
            "maxActivationPeriodMins",
            "maxActivationPeriodExtensionMins",
            "defaultMaxActivationPeriodMins",
            "defaultMaxActivationPeriodExtensionMins",
            "notificationRecipients",
            "notificationTemplate",
            "applyToFutureAssignments",
            "jitflowExpiryWarningMins",
            "jitflowOnMissingAccess",
        ])
    );
    assert_eq!(
        stored["jitflowOnMissingAccess"], "REPORT",
        "the default: missing access is reported only"
    );
    assert_eq!(stored["maxActivationPeriodMins"], 240);
    assert_eq!(
        stored["jitflowExpiryWarningMins"],
        serde_json::Value::Null,
        "unset: the engine's warning lead"
    );
    assert_eq!(stored["notificationTemplate"], serde_json::Value::Null);
    assert_eq!(stored["entitlementIds"], json!(["domain-admins"]));

    let updater = h.token(
        TENANT,
        "pat",
        &["idn:jit-policy:update"],
        &[Level::PolicyAdmin],
    );
    let patched = h
        .expect(
            200,
            "PATCH",
            "/jit-activation-config/v1/policy",
            Some(&updater),
            Some(json!([
                {"op": "replace", "path": "/maxActivationPeriodMins", "value": 120},
                {"path": "/notificationTemplate", "value": "jit-activation-default"},
                {"path": "/applyToFutureAssignments", "value": true},
                {"path": "/jitflowExpiryWarningMins", "value": 15},
            ])),
        )
        .await;
    assert_eq!(patched["jitflowExpiryWarningMins"], 15);
    assert_eq!(patched["maxActivationPeriodMins"], 120);
    assert_eq!(patched["notificationTemplate"], "jit-activation-default");
    assert_eq!(patched["applyToFutureAssignments"], true);
    assert_eq!(patched["id"], stored["id"]);
    // With the patch/json-patch content type too.
    let (status, answer, _) = h
        .raw(
            "PATCH",
            "/v2026/jit-activation-config/policy",
            Some(&updater),
            Some("application/json-patch+json"),
            Some(br#"[{"path":"/maxActivationPeriodExtensionMins","value":null}]"#.to_vec()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["maxActivationPeriodExtensionMins"],
        serde_json::Value::Null
    );

    let before = h.engine().last_sequence().unwrap();
    let refused = [
        ("/jit-activation-config/v1/policy", json!([])),
        (
            "/jit-activation-config/v1/policy",
            json!([{"op": "add", "path": "/maxActivationPeriodMins", "value": 5}]),
        ),
        (
            "/jit-activation-config/v1/policy",
            json!([{"path": "/id", "value": "x"}]),
        ),
        (
            "/jit-activation-config/v1/policy",
            json!([{"path": "/maxActivationPeriodMins", "value": "sixty"}]),
        ),
        (
            "/jit-activation-config/v1/policy",
            json!([{"path": "/maxActivationPeriodMins", "value": 0}]),
        ),
        (
            "/jit-activation-config/v1/policy",
            json!([{"path": "/maxActivationPeriodMins"}]),
        ),
        (
            "/jit-activation-config/v1/policy",
            json!([{"path": "/defaultMaxActivationPeriodMins", "value": 500}]),
        ),
        (
            "/jit-activation-config/v1/policy",
            json!([{"path": "/jitflowExpiryWarningMins", "value": 0}]),
        ),
        (
            "/jit-activation-config/v1/policy",
            json!([{"path": "/notificationRecipients", "value": ["not-an-email"]}]),
        ),
        (
            "/jit-activation-config/v1/policy",
            json!([{"path": "/maxActivationPeriodMins", "value": 5, "from": "/x"}]),
        ),
        (
            "/jit-activation-config/v1/policy",
            json!({"path": "/maxActivationPeriodMins", "value": 5}),
        ),
        (
            "/jit-activation-config/v1/settings",
            json!([{"path": "/maxActivationPeriodMins", "value": 5}]),
        ),
    ];
    for (path, body) in refused {
        h.expect(400, "PATCH", path, Some(&updater), Some(body.clone()))
            .await;
    }
    let _ = h
        .expect(
            400,
            "GET",
            "/jit-activation-config/v1/settings",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(
        h.engine().last_sequence().unwrap(),
        before,
        "refusals changed nothing"
    );
    let (_, after, _) = h
        .call(
            "GET",
            "/jit-activation-config/v1/policy",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(after["maxActivationPeriodMins"], 120);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_import_and_removal() {
    let h = Harness::new().await;
    let admin = h.admin();
    let mut bad_type = spec("11111111-1111-4111-8111-111111111111", "carol", "JIT");
    bad_type["type"] = json!("SOMETIMES");
    let mut no_id = spec(ALICE_CONN, "dave", "NA");
    no_id.as_object_mut().unwrap().remove("id");
    let body = h
        .expect(
            200,
            "POST",
            "/jitflow/v1/connections",
            Some(&admin),
            Some(json!({"connections": [
                spec(ALICE_CONN, "alice", "JIT"),
                spec(ALICE_CONN, "alice", "JIT"),
                bad_type,
                json!("not an object"),
                no_id,
            ]})),
        )
        .await;
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    // The two registrations of one id race; exactly one wins.
    let mut first_two = statuses[..2].to_vec();
    first_two.sort_unstable();
    assert_eq!(first_two, [200, 409]);
    assert_eq!(&statuses[2..], &[400, 400, 200]);
    assert!(results[0..2].iter().all(|r| r["id"] == ALICE_CONN));
    assert!(
        results[2]["error"]["messages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("type")
    );
    assert!(
        results
            .iter()
            .filter(|r| r["status"] == 200)
            .all(|r| r.get("error").is_none())
    );
    let generated = results[4]["id"].as_str().unwrap();
    assert!(h.connection(generated).is_some());

    for body in [
        json!({"connections": []}),
        json!({"connections": vec![spec(ALICE_CONN, "a", "JIT"); 1001]}),
        json!({"items": []}),
    ] {
        h.expect(
            400,
            "POST",
            "/jitflow/v1/connections",
            Some(&admin),
            Some(body),
        )
        .await;
    }

    let _ = h
        .expect(
            204,
            "DELETE",
            &format!("/jitflow/v1/connections/{generated}"),
            Some(&admin),
            None,
        )
        .await;
    assert!(h.connection(generated).is_none());
    let _ = h
        .expect(
            404,
            "DELETE",
            &format!("/jitflow/v1/connections/{generated}"),
            Some(&admin),
            None,
        )
        .await;
    let _ = h
        .expect(
            400,
            "DELETE",
            "/jitflow/v1/connections/nope",
            Some(&admin),
            None,
        )
        .await;
    // Removal is refused while access is held.
    let _ = h
        .expect(
            202,
            "POST",
            ACTIVATE_FORMS[0],
            Some(&h.alice()),
            Some(json!({"connectionId": ALICE_CONN, "activationPeriodMins": 5})),
        )
        .await;
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    h.expect(
        409,
        "DELETE",
        &format!("/jitflow/v1/connections/{ALICE_CONN}"),
        Some(&admin),
        None,
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_activation_expires() {
    let h = Harness::new().await;
    h.seed().await;
    let alice = h.alice();
    let _ = h
        .expect(
            202,
            "POST",
            ACTIVATE_FORMS[1],
            Some(&alice),
            Some(json!({"connectionId": ALICE_CONN, "activationPeriodMins": 1})),
        )
        .await;
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    // While it runs, its expiry is armed: the gauge counts it, exactly (and no effect waits).
    let metrics = scrape(&h).await;
    let armed = h
        .engine()
        .snapshot()
        .unwrap()
        .due_timers(None, None, 100)
        .unwrap()
        .len();
    assert!(armed >= 1);
    assert_eq!(metrics.value("jitflow_timers_pending", None), armed as f64);
    assert_eq!(
        metrics.value("jitflow_effects_pending", Some(("of", "connection"))),
        0.0
    );
    // No timer is past its due time yet: no lag, and none has fired.
    assert_eq!(metrics.value("jitflow_timer_lag_seconds", None), 0.0);
    assert_eq!(
        metrics
            .histogram("jitflow_timer_fire_lag_seconds", None)
            .count,
        0.0
    );
    h.clock.advance(Duration::from_secs(61));
    h.wait_state(ALICE_CONN, ConnectionState::Expired).await;
    let connection = h.connection(ALICE_CONN).unwrap();
    assert_eq!(connection.activation.unwrap().status.as_str(), "COMPLETED");
    assert!(
        h.target.0.held.lock().unwrap().is_empty(),
        "the expiry revoked the access"
    );
    // Through the list endpoint: the connection is EXPIRED, with the expiry and the revoke.
    let lister = h.token(
        TENANT,
        "admin",
        &["idn:entitlement-connections:list"],
        &[Level::OrgAdmin],
    );
    let (status, hits, headers) = h
        .call(
            "GET",
            "/entitlement-connections/v1?count=true&filters=state.value%20eq%20%22EXPIRED%22",
            Some(&lister),
            None,
        )
        .await;
    assert_eq!(status, 200, "{hits}");
    assert_eq!(headers["x-total-count"], "1");
    let hit = &hits[0];
    assert_eq!(hit["id"], ALICE_CONN);
    assert_eq!(hit["state"]["value"], "EXPIRED");
    assert_eq!(hit["jit"]["expiration"], "2026-11-23T09:01:00.000Z");
    // The timer fired when the clock passed the expiry: removal began then.
    assert_eq!(hit["jit"]["deactivation"], "2026-11-23T09:01:01.000Z");
    assert!(hit["jit"]["deprovisioned"].is_string(), "{hit}");
    // Through the API: nothing runs any more.
    h.expect(
        400,
        "POST",
        "/jit-activations/v1/extend",
        Some(&alice),
        Some(json!({"connectionId": ALICE_CONN, "activationPeriodExtensionMins": 5})),
    )
    .await;
    let metrics = scrape(&h).await;
    let fired = metrics.value("jitflow_timers_fired_total", None);
    assert!(fired == 1.0 || fired == 2.0, "{fired}");
    let activate = Some(("kind", "activate"));
    assert_eq!(metrics.value("jitflow_signals_total", activate), 1.0);
    assert_eq!(metrics.value("jitflow_timers_pending", None), 0.0);
    // The histograms count what the counters count: one durable answer per accepted signal
    // (the refused extend has none), one observation per commit, every event in a batch.
    let acks = metrics.histogram("jitflow_signal_ack_duration_seconds", activate);
    assert_eq!(acks.count, 1.0);
    assert!(acks.sum > 0.0);
    let extends = Some(("kind", "extend"));
    assert_eq!(metrics.value("jitflow_signals_total", extends), 0.0);
    assert_eq!(
        metrics
            .histogram("jitflow_signal_ack_duration_seconds", extends)
            .count,
        0.0
    );
    let commits = metrics.value("jitflow_commits_total", None);
    assert!(commits >= 1.0);
    assert_eq!(
        metrics
            .histogram("jitflow_commit_duration_seconds", None)
            .count,
        commits
    );
    let batches = metrics.histogram("jitflow_commit_batch_events", None);
    assert_eq!(batches.count, commits);
    assert_eq!(batches.sum, metrics.value("jitflow_events_total", None));
    // The expiry was due at 09:01:00 and fired when the clock reached 09:01:01: one second late.
    let lag = metrics.histogram("jitflow_timer_fire_lag_seconds", None);
    assert!(lag.count >= 1.0);
    assert!(lag.sum >= 1.0, "{}", lag.sum);
    assert_eq!(lag.at(0.5), 0.0, "no timer fired early or on time");
    // The grant and the revoke: each call timed by its outcome, none still in flight.
    let ok = Some(("outcome", "ok"));
    let calls = metrics.histogram("jitflow_effect_duration_seconds", ok);
    assert_eq!(calls.count, metrics.value("jitflow_effects_total", ok));
    assert!(calls.count >= 2.0, "{}", calls.count);
    assert_eq!(metrics.value("jitflow_effects_in_flight", None), 0.0);
    assert_eq!(metrics.value("jitflow_writer_queue_depth", None), 0.0);
    h.stop().await;
}

/// The bulk endpoints' answers are timed by kind in `jitflow_bulk_ack_duration_seconds`: the
/// import (the seed), the bulk type update, access request submissions, bulk approve, bulk
/// cancel and close, each once it answers per item (an unknown id's 404 included); a call
/// refused as a whole (no items) is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_calls_are_timed_by_kind() {
    let h = Harness::with_approver("bob").await;
    h.seed().await;
    let admin = h.token(
        TENANT,
        "admin",
        &[
            "idn:entitlement-connections:manage",
            "idn:access-request:manage",
            "idn:access-request-administration:manage",
        ],
        &[Level::OrgAdmin],
    );
    let alice = h.token(
        TENANT,
        "alice",
        &["idn:access-request-self:manage"],
        &[Level::User],
    );
    let path = "/entitlement-connections/v1";
    let update = json!([{"connectionId": BOB_CONN, "type": "STANDING"}]);
    h.expect(207, "POST", path, Some(&admin), Some(update))
        .await;
    h.expect(400, "POST", path, Some(&admin), Some(json!([])))
        .await;
    for what in ["finance-read", "finance-write"] {
        let item = json!({"type": "ENTITLEMENT", "id": what, "comment": "for the audit"});
        let body = json!({"requestedFor": ["alice"], "requestType": "GRANT_ACCESS",
                          "requestedItems": [item]});
        h.expect(202, "POST", "/access-requests/v1", Some(&alice), Some(body))
            .await;
    }
    let unknown = "00000000-0000-0000-0000-000000000009";
    for (path, body) in [
        (
            "/access-request-approvals/v1/bulk-approve",
            json!({"approvalIds": [unknown], "comment": "ok"}),
        ),
        (
            "/access-requests/v1/bulk-cancel",
            json!({"accessRequestIds": [unknown], "comment": "cleanup"}),
        ),
        (
            "/access-requests/v1/close",
            json!({"accessRequestIds": [unknown]}),
        ),
    ] {
        let answer = h.expect(202, "POST", path, Some(&admin), Some(body)).await;
        assert_eq!(answer["results"][0]["status"], 404, "{path}: {answer}");
    }
    let metrics = scrape(&h).await;
    for (kind, calls) in BULK_KINDS.iter().zip([1.0, 1.0, 2.0, 1.0, 1.0, 1.0]) {
        let timed = metrics.histogram("jitflow_bulk_ack_duration_seconds", Some(("kind", kind)));
        assert_eq!(timed.count, calls, "{kind}");
        assert!(timed.sum > 0.0, "{kind}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_activation_resumes() {
    let mut h = Harness::with_target(Target {
        hang_grants: true,
        ..Target::default()
    })
    .await;
    h.seed().await;
    let body = h
        .expect(
            202,
            "POST",
            ACTIVATE_FORMS[0],
            Some(&h.alice()),
            Some(json!({"connectionId": ALICE_CONN, "activationPeriodMins": 10})),
        )
        .await;
    let activation_id = body["activationId"].as_str().unwrap().to_owned();
    h.wait_state(ALICE_CONN, ConnectionState::Activating).await;
    assert_eq!(
        h.target.0.grants.load(Ordering::SeqCst),
        0,
        "the grant hangs"
    );

    h.restart(Target::default()).await;
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    assert_eq!(
        h.target.0.grants.load(Ordering::SeqCst),
        1,
        "the grant ran again after the restart"
    );
    let body = h
        .expect(
            202,
            "POST",
            "/v2026/jit-activations/extend",
            Some(&h.alice()),
            Some(json!({"connectionId": ALICE_CONN, "activationPeriodExtensionMins": 5})),
        )
        .await;
    assert_eq!(body["activationId"], activation_id.as_str());
    h.clock.advance(Duration::from_secs(15 * 60 + 1));
    h.wait_state(ALICE_CONN, ConnectionState::Expired).await;
    assert!(h.target.0.held.lock().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_and_fallbacks() {
    let h = Harness::new().await;
    let (status, body, _) = h.raw("GET", "/health", None, None, None).await;
    assert_eq!((status, body), (200, json!({"status": "UP"})));
    // Every series, each of its type and labels (the scrape checks the format line by line).
    let metrics = scrape(&h).await;
    assert_eq!(metrics.value("jitflow_stuck_activations", None), 0.0);
    assert_eq!(metrics.value("jitflow_effects_in_flight", None), 0.0);
    let (status, answer, _) = h.raw("GET", "/nope", None, None, None).await;
    assert_eq!(status, 404);
    error_text(&answer);
    let (status, answer, _) = h
        .raw("DELETE", "/jit-activations/v1/activate", None, None, None)
        .await;
    assert_eq!(status, 405);
    error_text(&answer);
    h.stop().await;
}

/// The OpenAPI document and the router list the same operations, and each documented one is
/// routed (in both path forms for vendor paths).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_matches_routes() {
    let h = Harness::new().await;
    let (status, doc, _) = h.raw("GET", "/openapi.json", None, None, None).await;
    assert_eq!(status, 200);
    let params = &doc["paths"]["/jit-activations/v1/activate"]["post"]["parameters"];
    let names: Vec<&str> = params
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["X-SailPoint-Experimental", "Idempotency-Key"]);
    assert!(
        params
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["in"] == "header" && p["required"] == false)
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
            if let Some(alias) = jitflow_shim::v2026_alias(path) {
                documented.insert((method.to_uppercase(), alias));
            }
        }
    }
    let routed: BTreeSet<(String, String)> = jitflow_shim::routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect();
    assert_eq!(documented, routed);
    // A vendor operation documents only what it answers: its declared statuses and the
    // deviations it keeps.
    for (method, path, declared) in jitflow_shim::operations() {
        let responses = doc["paths"][path][method.as_str().to_lowercase()]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is not documented"));
        for status in responses.keys() {
            let status: u16 = status.parse().unwrap();
            assert!(
                declared.contains(&status) || jitflow_shim::deviations::kept(&method, path, status),
                "{method} {path} documents {status}"
            );
        }
    }
    assert!(
        doc["paths"]["/jit-activation-config/v1/{configType}"]["patch"]["responses"]
            .get("412")
            .is_some()
    );
    assert!(routed.contains(&(
        "POST".to_owned(),
        "/v2026/jit-activations/activate".to_owned()
    )));
    for (method, path) in &routed {
        let path = path
            .replace("{configType}", "policy")
            .replace("{id}", ALICE_CONN)
            .replace("{connectionId}", ALICE_CONN);
        let (status, body, _) = h.raw(method, &path, None, None, None).await;
        assert_ne!(status, 405, "{method} {path}");
        if status == 404 {
            assert!(
                !error_text(&body).starts_with("no route"),
                "{method} {path} is not routed"
            );
        }
    }
    h.stop().await;
}

/// With a writer queue of one, a burst of registrations overflows it: the overflow is answered
/// 429 per item with an `ErrorResponseDto`, and only the accepted items are registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_answered_429_and_registers_nothing() {
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
    let items: Vec<_> = (0..1000u32)
        .map(|i| {
            let mut s = spec(
                &format!("{i:08x}-0000-4000-8000-000000000000"),
                "alice",
                "JIT",
            );
            // One account each: the engine keeps one connection per assignment.
            s["accountId"] = json!(format!("alice-{i}"));
            s
        })
        .collect();
    let body = h
        .expect(
            200,
            "POST",
            "/jitflow/v1/connections",
            Some(&h.admin()),
            Some(json!({"connections": items})),
        )
        .await;
    let results = body["results"].as_array().unwrap();
    let busy: Vec<_> = results.iter().filter(|r| r["status"] == 429).collect();
    let ok = results.iter().filter(|r| r["status"] == 200).count();
    assert_eq!(busy.len() + ok, 1000, "{body}");
    assert!(!busy.is_empty(), "a burst of 1000 overflows a queue of one");
    for r in &busy {
        assert_eq!(r["error"]["detailCode"], "429 Too Many Requests");
        assert!(h.connection(r["id"].as_str().unwrap()).is_none());
    }
    let registered = results
        .iter()
        .filter(|r| h.connection(r["id"].as_str().unwrap()).is_some())
        .count();
    assert_eq!(registered, ok);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_registers_in_request_order() {
    let h = Harness::new().await;
    // Two items for the same assignment: the first in the request is the one registered,
    // whatever the timing, and the second is refused on its own.
    let first = "00000000-0000-4000-8000-0000000000c1";
    let second = "00000000-0000-4000-8000-0000000000c2";
    let body = h
        .expect(
            200,
            "POST",
            "/jitflow/v1/connections",
            Some(&h.admin()),
            Some(
                json!({"connections": [spec(first, "carol", "JIT"), spec(second, "carol", "JIT")]}),
            ),
        )
        .await;
    assert_eq!(body["results"][0]["status"], 200, "{body}");
    assert_eq!(body["results"][1]["status"], 409, "{body}");
    assert!(h.connection(first).is_some());
    assert!(h.connection(second).is_none());
    h.stop().await;
}

/// PATCHes the policy's maximum period with `If-Match: tag` (none when `None`).
async fn patch_max(h: &Harness, token: &str, tag: Option<&str>, mins: u32) -> (u16, Value, String) {
    let headers: Vec<(&str, &str)> = tag.map(|t| ("if-match", t)).into_iter().collect();
    let body = json!([{"op": "replace", "path": "/maxActivationPeriodMins", "value": mins}]);
    let (status, answer, headers) = h
        .with_headers(
            "PATCH",
            "/jit-activation-config/v1/policy",
            Some(token),
            &headers,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
        .await;
    let etag = headers
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, answer, etag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_etag_and_if_match() {
    let h = Harness::new().await;
    h.seed().await;
    let admin = h.admin();
    let (status, policy, headers) = h
        .raw(
            "GET",
            "/jit-activation-config/v1/policy",
            Some(&admin),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let read = headers["etag"].to_str().unwrap().to_owned();
    assert!(read.starts_with("\"v") && read.ends_with('"'), "{read}");

    // A patch based on the current version applies and answers the next version's tag.
    let (status, body, next) = patch_max(&h, &admin, Some(&read), 100).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["maxActivationPeriodMins"], 100);
    assert_ne!(next, read);
    assert!(next.starts_with("\"v"), "{next}");
    let (_, _, get_headers) = h
        .raw(
            "GET",
            "/v2026/jit-activation-config/policy",
            Some(&admin),
            None,
            None,
        )
        .await;
    assert_eq!(get_headers["etag"].to_str().unwrap(), next);

    // A patch based on the stale read is refused with 412 and changes nothing.
    let before = h.engine().last_sequence().unwrap();
    for stale in [
        read.as_str(),
        &format!("\"v999\", {read}"),
        &format!("W/{next}"),
    ] {
        let (status, body, _) = patch_max(&h, &admin, Some(stale), 200).await;
        assert_eq!(status, 412, "If-Match {stale}: {body}");
        assert!(error_text(&body).contains("If-Match"), "{body}");
    }
    let (status, body, _) = patch_max(&h, &admin, Some("v3"), 200).await;
    assert_eq!(status, 400, "an unquoted tag is malformed: {body}");
    assert_eq!(h.engine().last_sequence().unwrap(), before);
    let (_, now, _) = h
        .raw(
            "GET",
            "/jit-activation-config/v1/policy",
            Some(&admin),
            None,
            None,
        )
        .await;
    assert_eq!(now["maxActivationPeriodMins"], 100);

    // A list naming the current tag, `*`, and no `If-Match` at all apply (today's behaviour).
    let listed = format!("\"v999\", {next}");
    let (status, _, latest) = patch_max(&h, &admin, Some(&listed), 110).await;
    assert_eq!(status, 200);
    assert_eq!(patch_max(&h, &admin, Some("*"), 120).await.0, 200);
    assert_eq!(patch_max(&h, &admin, None, 130).await.0, 200);

    // Two administrators patch from the same read at once: exactly one wins.
    let (_, _, current) = h
        .raw(
            "GET",
            "/jit-activation-config/v1/policy",
            Some(&admin),
            None,
            None,
        )
        .await;
    let current = current["etag"].to_str().unwrap().to_owned();
    assert_ne!(current, latest);
    let other = h.org_admin();
    let (a, b) = tokio::join!(
        patch_max(&h, &admin, Some(&current), 140),
        patch_max(&h, &other, Some(&current), 150)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412], "{} / {}", a.1, b.1);
    let winner = if a.0 == 200 { 140 } else { 150 };
    let (_, now, _) = h
        .raw(
            "GET",
            "/jit-activation-config/v1/policy",
            Some(&admin),
            None,
            None,
        )
        .await;
    assert_eq!(now["maxActivationPeriodMins"], winner);
    assert_eq!(policy["id"], now["id"]);
    h.stop().await;
}

/// SailPoint's newer `requestOrigin` and `metaData` are accepted on the three signals and
/// recorded in the activation's history: after a restart, the activation's event stream shows
/// each signal's own on its event (and the audit export's line too), and no other event has any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_clients_fields_are_accepted_recorded_and_others_refused() {
    let mut h = Harness::new().await;
    h.seed().await;
    let alice = h.alice();
    let sent = [
        json!({"requestOrigin": "sdk-go", "metaData": {"ticket": "CHG-42", "attempt": 1}}),
        json!({"requestOrigin": "portal"}),
        json!({"metaData": {"reason": "done early", "tags": ["a", {"b": null}]}}),
    ];
    let with = |mut body: Value, context: &Value| {
        body.as_object_mut()
            .unwrap()
            .extend(context.as_object().unwrap().clone());
        body
    };
    let activated = h
        .expect(
            202,
            "POST",
            ACTIVATE_FORMS[0],
            Some(&alice),
            Some(with(
                json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30}),
                &sent[0],
            )),
        )
        .await;
    h.wait_state(ALICE_CONN, ConnectionState::Active).await;
    let extended = h
        .expect(
            202,
            "POST",
            "/jit-activations/v1/extend",
            Some(&alice),
            Some(with(
                json!({"connectionId": ALICE_CONN, "activationPeriodExtensionMins": 5}),
                &sent[1],
            )),
        )
        .await;
    assert_eq!(extended["activationId"], activated["activationId"]);
    let _ = h
        .expect(
            202,
            "POST",
            "/v2026/jit-activations/deactivate",
            Some(&alice),
            Some(with(json!({"connectionId": ALICE_CONN}), &sent[2])),
        )
        .await;
    h.wait_state(ALICE_CONN, ConnectionState::Available).await;

    h.restart(Target::default()).await;
    let admin = h.org_admin();
    let activation = activated["activationId"].as_str().unwrap();
    let path = format!("/jitflow/v1/activations/{activation}/events");
    let events = h.expect(200, "GET", &path, Some(&admin), None).await;
    let mut recorded = Vec::new();
    for e in events.as_array().unwrap() {
        let said: serde_json::Map<String, Value> = ["requestOrigin", "metaData"]
            .into_iter()
            .filter_map(|k| Some((k.to_owned(), e.get(k)?.clone())))
            .collect();
        // The export line (`event`) carries the same.
        for (k, v) in &said {
            assert_eq!(&e["event"][k], v, "{e}");
        }
        if said.is_empty() {
            assert!(e["event"].get("requestOrigin").is_none(), "{e}");
            assert!(e["event"].get("metaData").is_none(), "{e}");
        } else {
            recorded.push((
                e["change"].as_str().unwrap().to_owned(),
                Value::Object(said),
            ));
        }
    }
    assert_eq!(
        recorded,
        [
            ("ActivationRequested".to_owned(), sent[0].clone()),
            ("Extended".to_owned(), sent[1].clone()),
            ("DeactivationRequested".to_owned(), sent[2].clone()),
        ],
        "{events}"
    );
    let path = format!("/jitflow/v1/connections/{ALICE_CONN}/events");
    let connection_events = h.expect(200, "GET", &path, Some(&admin), None).await;
    let requested = connection_events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["change"] == "ActivationRequested")
        .unwrap();
    assert_eq!(requested["requestOrigin"], "sdk-go");
    assert_eq!(requested["metaData"], sent[0]["metaData"]);
    // The vendor's history document carries the activate's as its `activationDetails`.
    let history = h
        .expect(200, "GET", "/jit-activation-history/v1", Some(&admin), None)
        .await;
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    assert_eq!(history[0]["id"], activation);
    assert_eq!(history[0]["activationDetails"], sent[0], "{history}");

    // Fields no version of the contract has, and the new ones out of bounds, are refused.
    let before = h.engine().last_sequence().unwrap();
    let too_many: serde_json::Map<String, Value> = (0..=jitflow_core::client::MAX_META_ENTRIES)
        .map(|i| (format!("k{i}"), json!(i)))
        .collect();
    for (extra, field) in [
        (json!({"requestedBy": "bob"}), "requestedBy"),
        (json!({"requestOrigin": ""}), "requestOrigin"),
        (json!({"requestOrigin": 7}), "requestOrigin"),
        (json!({"metaData": ["a"]}), "metaData"),
        (json!({"metaData": too_many}), "metaData"),
        (json!({"requestOrigin": null}), "requestOrigin"),
    ] {
        let mut body = json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let answer = h
            .expect(400, "POST", ACTIVATE_FORMS[1], Some(&alice), Some(body))
            .await;
        assert!(error_text(&answer).contains(field), "{field}: {answer}");
    }
    assert_eq!(h.engine().last_sequence().unwrap(), before);
    h.stop().await;
}

/// The console's files are served without a token, with their types and a policy that allows
/// only this origin; an unknown file is the API's 404; `/console` leads to `/console/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_files_are_served_with_their_types_and_policy() {
    let h = Harness::new().await;
    for (path, kind, needle) in [
        ("/console/", "text/html", "id=\"signin\""),
        ("/console/index.html", "text/html", "app.js"),
        ("/console/app.js", "text/javascript", "sessionStorage"),
        ("/console/style.css", "text/css", ".badge"),
    ] {
        let (status, body, headers) = h.raw("GET", path, None, None, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
        assert!(body.as_str().unwrap().contains(needle), "{path}");
    }
    let (status, body, _) = h.raw("GET", "/console/secret", None, None, None).await;
    assert_eq!(status, 404);
    error_text(&body);
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/console", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/console/");
    h.stop().await;
}

/// Every series `/metrics` serves: name, type, and its label with the label's values (`""`: no
/// label). A scrape must have exactly these families.
const SERIES: &[(&str, &str, &str, &[&str])] = &[
    ("jitflow_commits_total", "counter", "", &[]),
    ("jitflow_commit_failures_total", "counter", "", &[]),
    ("jitflow_events_total", "counter", "", &[]),
    ("jitflow_commit_seconds_total", "counter", "", &[]),
    ("jitflow_commit_duration_seconds", "histogram", "", &[]),
    ("jitflow_commit_batch_events", "histogram", "", &[]),
    ("jitflow_commands_total", "counter", "outcome", COMMANDS),
    ("jitflow_signals_total", "counter", "kind", KINDS),
    (
        "jitflow_signal_ack_duration_seconds",
        "histogram",
        "kind",
        KINDS,
    ),
    (
        "jitflow_bulk_ack_duration_seconds",
        "histogram",
        "kind",
        BULK_KINDS,
    ),
    ("jitflow_timers_fired_total", "counter", "", &[]),
    ("jitflow_timer_fire_lag_seconds", "histogram", "", &[]),
    ("jitflow_effects_total", "counter", "outcome", OUTCOMES),
    (
        "jitflow_effect_duration_seconds",
        "histogram",
        "outcome",
        OUTCOMES,
    ),
    ("jitflow_effects_in_flight", "gauge", "", &[]),
    ("jitflow_notifications_delivered_total", "counter", "", &[]),
    (
        "jitflow_notification_failures_total",
        "counter",
        "reason",
        NOTIFY_FAILURES,
    ),
    ("jitflow_notification_backlog_events", "gauge", "", &[]),
    ("jitflow_notification_lag_seconds", "gauge", "", &[]),
    ("jitflow_writer_queue_depth", "gauge", "", &[]),
    ("jitflow_timers_pending", "gauge", "", &[]),
    ("jitflow_effects_pending", "gauge", "of", PENDING),
    ("jitflow_timer_lag_seconds", "gauge", "", &[]),
    ("jitflow_stuck_activations", "gauge", "", &[]),
    ("jitflow_store_layer_entries", "gauge", "", &[]),
    ("jitflow_store_layer_bytes", "gauge", "", &[]),
    ("jitflow_store_checkpoint_lag_events", "gauge", "", &[]),
    ("jitflow_store_checkpoints_total", "counter", "", &[]),
    ("jitflow_store_checkpoint_rows_total", "counter", "", &[]),
    ("jitflow_store_checkpoint_bytes_total", "counter", "", &[]),
    ("jitflow_store_last_checkpoint_seconds", "gauge", "", &[]),
    ("jitflow_writer_degraded", "gauge", "", &[]),
    ("jitflow_store_reopen_attempts_total", "counter", "", &[]),
    (
        "jitflow_writes_unavailable_seconds_total",
        "counter",
        "",
        &[],
    ),
    ("jitflow_inspections_total", "counter", "answer", ANSWERS),
    ("jitflow_drift_found_total", "counter", "kind", DRIFTS),
    ("jitflow_reconcile_passes_total", "counter", "", &[]),
    (
        "jitflow_reconcile_pass_progress_connections",
        "gauge",
        "",
        &[],
    ),
    ("jitflow_reconcile_pass_running", "gauge", "", &[]),
    ("jitflow_reconcile_inspections_in_flight", "gauge", "", &[]),
    ("jitflow_reconcile_last_pass_connections", "gauge", "", &[]),
    (
        "jitflow_reconcile_last_pass_duration_seconds",
        "gauge",
        "",
        &[],
    ),
];
/// Label values of [`SERIES`].
const COMMANDS: &[&str] = &["accepted", "refused"];
const KINDS: &[&str] = &["activate", "extend", "deactivate"];
const BULK_KINDS: &[&str] = &[
    "import",
    "change_type",
    "submit",
    "approve",
    "cancel",
    "close",
];
const OUTCOMES: &[&str] = &["ok", "failed"];
const PENDING: &[&str] = &["connection", "request_item"];
const NOTIFY_FAILURES: &[&str] = &["unreachable", "timeout", "refused", "other"];
const ANSWERS: &[&str] = &["held", "not_held", "unknown", "failed", "not_asked"];
const DRIFTS: &[&str] = &["unexpected_access", "missing_access"];

/// A `/metrics` scrape, parsed with a Prometheus text-format parser.
struct Metrics(prometheus_parse::Scrape);

/// A histogram series: its cumulative buckets, sum and count.
struct Histogram {
    buckets: Vec<prometheus_parse::HistogramCount>,
    sum: f64,
    count: f64,
}

impl Histogram {
    /// The cumulative count at the bucket bounded by `le`.
    fn at(&self, le: f64) -> f64 {
        self.buckets
            .iter()
            .find(|b| b.less_than == le)
            .unwrap_or_else(|| panic!("no bucket le={le}"))
            .count
    }
}

/// Scrapes `/metrics` and checks it throughout: the content type, every line a HELP, TYPE or
/// sample line the parser reads (it skips what it cannot), exactly the families of [`SERIES`]
/// with their types and label values, and every histogram's buckets cumulative up to `+Inf`,
/// which equals its `_count`.
async fn scrape(h: &Harness) -> Metrics {
    use prometheus_parse::{LineInfo, SampleType};
    let (status, body, headers) = h.raw("GET", "/metrics", None, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = body.as_str().expect("text").to_owned();
    let mut types = std::collections::BTreeMap::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Type {
                metric_name,
                metric_alias,
                sample_type,
            } => {
                let name = metric_alias.unwrap_or(metric_name);
                let kind = match sample_type {
                    SampleType::Counter => "counter",
                    SampleType::Gauge => "gauge",
                    SampleType::Histogram => "histogram",
                    other => panic!("{name}: type {other:?}"),
                };
                assert!(types.insert(name.clone(), kind).is_none(), "{name} twice");
            }
            LineInfo::Doc { .. } => {}
            LineInfo::Sample { value, .. } => {
                assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
            }
            LineInfo::Empty | LineInfo::Ignored => panic!("not the text format: {line:?}"),
        }
    }
    let expected: std::collections::BTreeMap<String, &str> = SERIES
        .iter()
        .map(|(name, kind, _, _)| ((*name).to_owned(), *kind))
        .collect();
    assert_eq!(types, expected, "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let metrics = Metrics(scrape);
    for (name, kind, label, values) in SERIES {
        let labels: Vec<Option<(&str, &str)>> = if values.is_empty() {
            vec![None]
        } else {
            values.iter().map(|v| Some((*label, *v))).collect()
        };
        for labels in labels {
            if *kind == "histogram" {
                let histogram = metrics.histogram(name, labels);
                let counts: Vec<f64> = histogram.buckets.iter().map(|b| b.count).collect();
                assert!(
                    counts.windows(2).all(|w| w[0] <= w[1]),
                    "{name}: {counts:?}"
                );
                let last = histogram.buckets.last().expect("buckets");
                assert_eq!(last.less_than, f64::INFINITY, "{name}");
                assert_eq!(last.count, histogram.count, "{name}");
            } else {
                metrics.value(name, labels);
            }
        }
    }
    metrics
}

impl Metrics {
    fn sample(&self, name: &str, label: Option<(&str, &str)>) -> &prometheus_parse::Sample {
        let found: Vec<_> = self
            .0
            .samples
            .iter()
            .filter(|s| {
                s.metric == name
                    && match label {
                        None => s.labels.is_empty(),
                        Some((k, v)) => s.labels.len() == 1 && s.labels.get(k) == Some(v),
                    }
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {label:?}: {found:?}");
        found[0]
    }

    /// A counter's or a gauge's value.
    fn value(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        match self.sample(name, label).value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    }

    fn histogram(&self, name: &str, label: Option<(&str, &str)>) -> Histogram {
        let buckets = match &self.sample(name, label).value {
            prometheus_parse::Value::Histogram(b) => b.clone(),
            other => panic!("{name}: {other:?}"),
        };
        // `_sum` and `_count` are untyped samples to this parser.
        let untyped = |suffix: &str| match self.sample(&format!("{name}{suffix}"), label).value {
            prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}{suffix}: {other:?}"),
        };
        Histogram {
            buckets,
            sum: untyped("_sum"),
            count: untyped("_count"),
        }
    }
}

/// The document carries the notice webhook (OpenAPI 3.1 `webhooks`), and a message of every
/// notice type `jitflow-webhook` sends fits its schema; a message with a field the schema does
/// not know, or without one it requires, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_the_notice_webhook_and_every_notice_fits_it() {
    let h = Harness::new().await;
    let (status, doc, _) = h.raw("GET", "/openapi.json", None, None, None).await;
    assert_eq!(status, 200);
    let post = &doc["webhooks"]["jitflowNotice"]["post"];
    let headers: Vec<&str> = post["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        headers,
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
    );
    let schema = &post["requestBody"]["content"]["application/json"]["schema"];
    let validator = common::conformance::validator(schema);
    let samples = jitflow_webhook::message::samples();
    assert_eq!(
        samples.len(),
        jitflow_webhook::message::ACTIVATION_TYPES.len()
            + jitflow_webhook::message::REQUEST_TYPES.len()
    );
    for message in samples {
        let value = serde_json::to_value(&message).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", message.kind);
        let mut extra = value.clone();
        extra["surprise"] = json!(1);
        assert!(!validator.is_valid(&extra));
        let mut missing = value;
        missing.as_object_mut().unwrap().remove("recipients");
        assert!(!validator.is_valid(&missing));
    }
    h.stop().await;
}
