//! `GET`/`PUT /access-request-config/v1` and `/v2` over HTTP: the defaults, a PUT seen through
//! both views, the v2026 alias, every kind of bad body (400, nothing changed), 401 and 403,
//! tenant isolation, and submissions refused by an enforced rule with a 400 that names it.

mod common;

use common::{Harness, TENANT, error_text};
use jitflow_shim::auth::Level;
use serde_json::{Value, json};

const READ: &str = "idn:access-request-config:read";
const MANAGE: &str = "idn:access-request-config:manage";

fn admin(h: &Harness) -> String {
    h.token(
        TENANT,
        "admin",
        &[READ, MANAGE, "idn:access-request:manage"],
        &[Level::OrgAdmin],
    )
}

fn user(h: &Harness, name: &str) -> String {
    h.token(
        TENANT,
        name,
        &[READ, "idn:access-request:manage"],
        &[Level::User],
    )
}

fn v1_defaults() -> Value {
    json!({
        "approvalsMustBeExternal": false,
        "autoApprovalEnabled": false,
        "reauthorizationEnabled": false,
        "requestOnBehalfOfConfig": {
            "allowRequestOnBehalfOfAnyoneByAnyone": false,
            "allowRequestOnBehalfOfEmployeeByManager": false,
            "allowRequestOnBehalfOfForMachineIdentity": true,
            "allowRequestForMachineByOwner": false
        },
        "approvalReminderAndEscalationConfig": {
            "daysUntilEscalation": null,
            "daysBetweenReminders": null,
            "maxReminders": null,
            "fallbackApproverRef": null
        },
        "entitlementRequestConfig": {
            "accessRequestConfig": {
                "approvalSchemes": [],
                "requestCommentRequired": false,
                "denialCommentRequired": false,
                "reauthorizationRequired": false,
                "requireEndDate": false,
                "maxPermittedAccessDuration": null,
                "formDefinitionId": null
            },
            "revocationRequestConfig": {"approvalSchemes": []}
        }
    })
}

fn v2_defaults() -> Value {
    let mut v = v1_defaults();
    let map = v.as_object_mut().unwrap();
    map.remove("autoApprovalEnabled");
    map.remove("approvalReminderAndEscalationConfig");
    map.insert("govGroupVisibilityEnabled".into(), json!(false));
    map.insert("machineIdentityAccessRequestEnabled".into(), json!(true));
    v
}

#[tokio::test]
async fn defaults_then_a_put_seen_through_both_views_and_the_alias() {
    let h = Harness::new().await;
    let token = admin(&h);
    let path_v1 = "/access-request-config/v1";
    let path_v2 = "/access-request-config/v2";
    assert_eq!(
        h.expect(200, "GET", path_v1, Some(&token), None).await,
        v1_defaults()
    );
    assert_eq!(
        h.expect(200, "GET", path_v2, Some(&token), None).await,
        v2_defaults()
    );
    assert_eq!(
        h.expect(
            200,
            "GET",
            "/v2026/access-request-config",
            Some(&token),
            None
        )
        .await,
        v1_defaults()
    );
    // A v1 PUT: omitted fields take their defaults; the answer is the v1 view.
    let put = json!({
        "autoApprovalEnabled": true,
        "requestOnBehalfOfConfig": {"allowRequestOnBehalfOfAnyoneByAnyone": true},
        "approvalReminderAndEscalationConfig": {
            "maxReminders": 5,
            "fallbackApproverRef": {"type": "IDENTITY", "id": "boss", "name": "ignored"}
        },
        "entitlementRequestConfig": {
            "accessRequestConfig": {
                "approvalSchemes": [
                    {"approverType": "MANAGER"},
                    {"approverType": "GOVERNANCE_GROUP", "approverId": "e3eab852-8315-467f-9de7-70eda97f63c8"}
                ],
                "requireEndDate": true,
                "maxPermittedAccessDuration": {"value": 5, "timeUnit": "DAYS"}
            }
        }
    });
    let answer = h.expect(200, "PUT", path_v1, Some(&token), Some(put)).await;
    let mut expected = v1_defaults();
    expected["autoApprovalEnabled"] = json!(true);
    expected["requestOnBehalfOfConfig"]["allowRequestOnBehalfOfAnyoneByAnyone"] = json!(true);
    expected["approvalReminderAndEscalationConfig"]["maxReminders"] = json!(5);
    expected["approvalReminderAndEscalationConfig"]["fallbackApproverRef"] =
        json!({"type": "IDENTITY", "id": "boss", "name": "boss", "email": null});
    let access = &mut expected["entitlementRequestConfig"]["accessRequestConfig"];
    access["approvalSchemes"] = json!([
        {"approverType": "MANAGER", "approverId": null},
        {"approverType": "GOVERNANCE_GROUP", "approverId": "e3eab852-8315-467f-9de7-70eda97f63c8"}
    ]);
    access["requireEndDate"] = json!(true);
    access["maxPermittedAccessDuration"] = json!({"value": 5, "timeUnit": "DAYS"});
    assert_eq!(answer, expected);
    assert_eq!(
        h.expect(200, "GET", path_v1, Some(&token), None).await,
        expected
    );
    // The v2 view of the same config.
    let v2 = h
        .expect(200, "GET", path_v2, Some(&user(&h, "carol")), None)
        .await;
    assert_eq!(
        v2["requestOnBehalfOfConfig"],
        expected["requestOnBehalfOfConfig"]
    );
    assert_eq!(
        v2["entitlementRequestConfig"],
        expected["entitlementRequestConfig"]
    );
    assert_eq!(v2["machineIdentityAccessRequestEnabled"], json!(true));
    assert!(v2.get("autoApprovalEnabled").is_none());
    // A v2 PUT keeps the v1-only fields.
    let put =
        json!({"govGroupVisibilityEnabled": true, "machineIdentityAccessRequestEnabled": false});
    let answer = h.expect(200, "PUT", path_v2, Some(&token), Some(put)).await;
    let mut expected_v2 = v2_defaults();
    expected_v2["govGroupVisibilityEnabled"] = json!(true);
    expected_v2["machineIdentityAccessRequestEnabled"] = json!(false);
    assert_eq!(answer, expected_v2);
    let v1 = h.expect(200, "GET", path_v1, Some(&token), None).await;
    assert_eq!(v1["autoApprovalEnabled"], json!(true));
    assert_eq!(
        v1["approvalReminderAndEscalationConfig"]["maxReminders"],
        json!(5)
    );
    assert_eq!(
        v1["requestOnBehalfOfConfig"],
        v1_defaults()["requestOnBehalfOfConfig"]
    );
    // Another tenant still reads the defaults.
    let other = h.token("globex", "admin", &[READ, MANAGE], &[Level::OrgAdmin]);
    assert_eq!(
        h.expect(200, "GET", path_v2, Some(&other), None).await,
        v2_defaults()
    );
    let report = h.engine().verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    h.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_400_and_change_nothing() {
    let h = Harness::new().await;
    let token = admin(&h);
    let before = h.engine().last_sequence().unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("v1", json!({"nosuch": true}), "unknown field"),
        ("v2", json!({"autoApprovalEnabled": true}), "unknown field"),
        (
            "v1",
            json!({"govGroupVisibilityEnabled": true}),
            "unknown field",
        ),
        (
            "v2",
            json!({"approvalsMustBeExternal": "yes"}),
            "does not match",
        ),
        (
            "v2",
            json!({"approvalsMustBeExternal": null}),
            "does not match",
        ),
        ("v1", json!([1]), "JSON object"),
        (
            "v2",
            json!({"requestOnBehalfOfConfig": {"allowRequestOnBehalfOfAnyoneByAnyone": true, "x": 1}}),
            "unknown field",
        ),
        (
            "v2",
            json!({"entitlementRequestConfig": {"accessRequestConfig": {"approvalSchemes": [{"approverType": "BOSS"}]}}}),
            "approverType `BOSS` is not one of",
        ),
        (
            "v2",
            json!({"entitlementRequestConfig": {"accessRequestConfig": {"approvalSchemes": [{"approverType": "WORKFLOW"}]}}}),
            "approverId is required when approverType is WORKFLOW",
        ),
        (
            "v2",
            json!({"entitlementRequestConfig": {"revocationRequestConfig": {"approvalSchemes": [{"approverType": "MANAGER", "approverId": "m"}]}}}),
            "approverId is used only when",
        ),
        (
            "v2",
            json!({"entitlementRequestConfig": {"accessRequestConfig": {"approvalSchemes": [
                {"approverType": "WORKFLOW", "approverId": "w"}, {"approverType": "MANAGER"}]}}}),
            "exclusive",
        ),
        (
            "v2",
            json!({"entitlementRequestConfig": {"accessRequestConfig": {"approvalSchemes":
                vec![json!({"approverType": "MANAGER"}); 11]}}}),
            "at most 10",
        ),
        (
            "v2",
            json!({"entitlementRequestConfig": {"accessRequestConfig": {"maxPermittedAccessDuration": {"value": 0, "timeUnit": "DAYS"}}}}),
            "out of range: 1 to 3650 DAYS",
        ),
        (
            "v2",
            json!({"entitlementRequestConfig": {"accessRequestConfig": {"maxPermittedAccessDuration": {"value": -3, "timeUnit": "HOURS"}}}}),
            "out of range",
        ),
        (
            "v2",
            json!({"entitlementRequestConfig": {"accessRequestConfig": {"maxPermittedAccessDuration": {"value": 3, "timeUnit": "YEARS"}}}}),
            "timeUnit `YEARS` is not one of",
        ),
        (
            "v2",
            json!({"entitlementRequestConfig": {"accessRequestConfig": {"formDefinitionId": ""}}}),
            "formDefinitionId: is empty",
        ),
        (
            "v1",
            json!({"approvalReminderAndEscalationConfig": {"maxReminders": 21}}),
            "maxReminders 21 is out of range: 0 to 20",
        ),
        (
            "v1",
            json!({"approvalReminderAndEscalationConfig": {"daysUntilEscalation": -1}}),
            "daysUntilEscalation -1 is out of range",
        ),
        (
            "v1",
            json!({"approvalReminderAndEscalationConfig": {"fallbackApproverRef": {"type": "GROUP", "id": "g"}}}),
            "type must be IDENTITY",
        ),
        (
            "v1",
            json!({"approvalReminderAndEscalationConfig": {"fallbackApproverRef": {"id": "no spaces"}}}),
            "fallbackApproverRef.id",
        ),
    ];
    for (version, body, text) in cases {
        let path = format!("/access-request-config/{version}");
        let answer = h
            .expect(400, "PUT", &path, Some(&token), Some(body.clone()))
            .await;
        let message = error_text(&answer);
        assert!(message.contains(text), "{body} -> {message}");
    }
    let (status, answer, _) = h
        .raw(
            "PUT",
            "/access-request-config/v2",
            Some(&token),
            Some("application/json"),
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(h.engine().last_sequence().unwrap(), before);
    h.stop().await;
}

#[tokio::test]
async fn auth_is_401_without_a_token_and_403_without_scope_or_level() {
    let h = Harness::new().await;
    let before = h.engine().last_sequence().unwrap();
    for path in ["/access-request-config/v1", "/access-request-config/v2"] {
        h.expect(401, "GET", path, None, None).await;
        h.expect(401, "PUT", path, None, Some(json!({}))).await;
        // No read scope.
        let none = h.token(
            TENANT,
            "carol",
            &["idn:access-request:manage"],
            &[Level::User],
        );
        let text = error_text(&h.expect(403, "GET", path, Some(&none), None).await);
        assert!(text.contains(READ), "{text}");
        // A user may read but not write, even with the scope.
        let u = h.token(TENANT, "carol", &[READ, MANAGE], &[Level::User]);
        h.expect(200, "GET", path, Some(&u), None).await;
        let text = error_text(&h.expect(403, "PUT", path, Some(&u), Some(json!({}))).await);
        assert!(text.contains("ORG_ADMIN"), "{text}");
        // An admin without the manage scope may not write; the read scope is not enough.
        let a = h.token(TENANT, "admin", &[READ], &[Level::OrgAdmin]);
        h.expect(403, "PUT", path, Some(&a), Some(json!({}))).await;
        // Rights are checked before the body is read: a bad body from a user is still 403.
        h.expect(403, "PUT", path, Some(&u), Some(json!({"nosuch": 1})))
            .await;
    }
    assert_eq!(h.engine().last_sequence().unwrap(), before);
    h.stop().await;
}

#[tokio::test]
async fn submissions_are_refused_by_the_enforced_rules_with_a_400_naming_them() {
    let h = Harness::new().await;
    let token = admin(&h);
    let submit = |whom: &str, item: Value| json!({"requestedFor": [whom], "requestType": "GRANT_ACCESS", "requestedItems": [item]});
    let entitlement = json!({"type": "ENTITLEMENT", "id": "auditors"});
    // Defaults: a user may not request for someone else; for itself it may.
    let carol = user(&h, "carol");
    let text = error_text(
        &h.expect(
            400,
            "POST",
            "/access-requests/v1",
            Some(&carol),
            Some(submit("dave", entitlement.clone())),
        )
        .await,
    );
    assert!(
        text.contains("allowRequestOnBehalfOfAnyoneByAnyone"),
        "{text}"
    );
    h.expect(
        202,
        "POST",
        "/access-requests/v1",
        Some(&carol),
        Some(submit("carol", entitlement.clone())),
    )
    .await;
    // An admin may request for anyone.
    h.expect(
        202,
        "POST",
        "/access-requests/v1",
        Some(&token),
        Some(submit("erin", entitlement.clone())),
    )
    .await;
    // A comment and an end date required for entitlements.
    let put = json!({"entitlementRequestConfig": {"accessRequestConfig": {
        "requestCommentRequired": true, "requireEndDate": true}}});
    h.expect(
        200,
        "PUT",
        "/access-request-config/v2",
        Some(&token),
        Some(put),
    )
    .await;
    // The accepted submissions' effects settle first: their results commit events of their own.
    let settling = std::time::Instant::now();
    while h
        .engine()
        .snapshot()
        .unwrap()
        .backlog()
        .unwrap()
        .item_intents
        > 0
    {
        assert!(settling.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = h.engine().last_sequence().unwrap();
    let item = json!({"type": "ENTITLEMENT", "id": "readers"});
    let text = error_text(
        &h.expect(
            400,
            "POST",
            "/access-requests/v1",
            Some(&carol),
            Some(submit("carol", item)),
        )
        .await,
    );
    assert!(text.contains("requestCommentRequired"), "{text}");
    let item = json!({"type": "ENTITLEMENT", "id": "readers", "comment": "audit"});
    let text = error_text(
        &h.expect(
            400,
            "POST",
            "/access-requests/v1",
            Some(&carol),
            Some(submit("carol", item)),
        )
        .await,
    );
    assert!(text.contains("requireEndDate"), "{text}");
    assert_eq!(h.engine().last_sequence().unwrap(), before);
    let remove =
        jitflow_core::time::Timestamp::from_millis(h.engine().now().as_millis() + 24 * 3600 * 1000)
            .unwrap()
            .to_rfc3339();
    let item =
        json!({"type": "ENTITLEMENT", "id": "readers", "comment": "audit", "removeDate": remove});
    h.expect(
        202,
        "POST",
        "/access-requests/v1",
        Some(&carol),
        Some(submit("carol", item)),
    )
    .await;
    // Approvals must be external: a user's submission is refused, an admin's passes.
    h.expect(
        200,
        "PUT",
        "/access-request-config/v1",
        Some(&token),
        Some(json!({"approvalsMustBeExternal": true})),
    )
    .await;
    let role = json!({"type": "ROLE", "id": "auditor"});
    let text = error_text(
        &h.expect(
            400,
            "POST",
            "/access-requests/v1",
            Some(&carol),
            Some(submit("carol", role.clone())),
        )
        .await,
    );
    assert!(text.contains("approvalsMustBeExternal"), "{text}");
    h.expect(
        202,
        "POST",
        "/access-requests/v1",
        Some(&token),
        Some(submit("carol", role)),
    )
    .await;
    h.stop().await;
}
