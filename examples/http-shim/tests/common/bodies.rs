//! Valid request bodies of the vendor's operations, each with every optional object filled in,
//! and the schema-driven mutations of a valid body (`null` for each field the vendor's schema
//! does not make nullable, an array for each object) that must be refused: shared by the strict
//! body test (`contract.rs`) and the refusal test (`refusals.rs`).
#![allow(dead_code, reason = "each test binary uses part of the harness")]

use serde_json::{Value, json};

use super::conformance::validator;
use super::{ALICE_CONN, BOB_CONN};

pub const SOME_UUID: &str = "0f8e3c1a-7d2b-4c5e-9a6f-1b2c3d4e5f60";

/// A valid body for each vendor operation that takes one, with every optional object filled
/// in, so that the mutations reach every level.
pub fn bodies() -> Vec<(&'static str, String, Value)> {
    let item = json!({
        "type": "ENTITLEMENT", "id": "finance-read", "comment": "for the audit",
        "clientMetadata": {"app": "jitflow"}, "removeDate": "2027-01-01T00:00:00Z"
    });
    let nested = json!({
        "requestType": "GRANT_ACCESS",
        "requestedForWithRequestedItems": [{
            "identityId": "alice", "identityType": "HUMAN",
            "requestedItems": [{
                "type": "ENTITLEMENT", "id": "finance-read", "comment": "for the audit",
                "accountSelection": [{"sourceId": "ad", "accounts": [
                    {"accountUuid": "u-1", "nativeIdentity": "alice-adm"}
                ]}]
            }]
        }],
        "clientMetadata": {"app": "jitflow"}
    });
    let flat = json!({
        "requestedFor": ["alice"], "requestType": "GRANT_ACCESS",
        "requestedItems": [item], "clientMetadata": {"app": "jitflow"}
    });
    let config_v1 = json!({
        "approvalsMustBeExternal": false, "autoApprovalEnabled": false,
        "reauthorizationEnabled": false,
        "requestOnBehalfOfConfig": {
            "allowRequestOnBehalfOfAnyoneByAnyone": false,
            "allowRequestOnBehalfOfEmployeeByManager": false
        },
        "approvalReminderAndEscalationConfig": {
            "daysUntilEscalation": 2, "daysBetweenReminders": 1, "maxReminders": 3,
            "fallbackApproverRef": {"type": "IDENTITY", "id": "bob", "name": "bob", "email": "bob@example.com"}
        },
        "entitlementRequestConfig": {
            "accessRequestConfig": {
                "approvalSchemes": [{"approverType": "MANAGER", "approverId": null}],
                "requestCommentRequired": false, "denialCommentRequired": false,
                "reauthorizationRequired": false, "requireEndDate": false,
                "maxPermittedAccessDuration": {"value": 2, "timeUnit": "DAYS"}
            },
            "revocationRequestConfig": {"approvalSchemes": [{"approverType": "SOURCE_OWNER"}]}
        }
    });
    let mut config_v2 = config_v1.clone();
    let v2 = config_v2.as_object_mut().unwrap();
    v2.remove("autoApprovalEnabled");
    v2.remove("approvalReminderAndEscalationConfig");
    v2.insert("govGroupVisibilityEnabled".into(), json!(false));
    v2.insert("machineIdentityAccessRequestEnabled".into(), json!(false));
    vec![
        (
            "POST",
            "/jit-activations/v1/activate".into(),
            json!({"connectionId": ALICE_CONN, "activationPeriodMins": 30}),
        ),
        (
            "POST",
            "/v2026/jit-activations/extend".into(),
            json!({"connectionId": ALICE_CONN, "activationPeriodExtensionMins": 5}),
        ),
        (
            "POST",
            "/jit-activations/v1/deactivate".into(),
            json!({"connectionId": ALICE_CONN}),
        ),
        (
            "PATCH",
            "/jit-activation-config/v1/policy".into(),
            json!([{"op": "replace", "path": "/maxActivationPeriodMins", "value": 60}]),
        ),
        (
            "PATCH",
            format!("/entitlement-connections/v1/{ALICE_CONN}"),
            json!([{"op": "replace", "path": "/standalone", "value": true}]),
        ),
        (
            "PATCH",
            "/entitlement-connections/v1?entitlementId=domain-admins&identityId=alice&accountId=alice-adm".into(),
            json!([{"op": "replace", "path": "/standalone", "value": false}]),
        ),
        (
            "POST",
            "/entitlement-connections/v1".into(),
            json!([{"connectionId": BOB_CONN, "type": "JIT"}]),
        ),
        ("POST", "/access-requests/v1".into(), flat.clone()),
        ("POST", "/access-requests/v1".into(), nested.clone()),
        ("POST", "/access-requests/v1/accounts-selection".into(), flat),
        ("POST", "/access-requests/v1/accounts-selection".into(), nested),
        (
            "POST",
            "/access-requests/v1/cancel".into(),
            json!({"accountActivityId": SOME_UUID, "comment": "no longer needed"}),
        ),
        (
            "POST",
            "/access-requests/v1/bulk-cancel".into(),
            json!({"accessRequestIds": [SOME_UUID], "comment": "no longer needed"}),
        ),
        (
            "POST",
            "/access-requests/v1/close".into(),
            json!({"accessRequestIds": [SOME_UUID], "message": "closed",
                   "executionStatus": "Terminated", "completionStatus": "Failure"}),
        ),
        ("PUT", "/access-request-config/v1".into(), config_v1),
        ("PUT", "/access-request-config/v2".into(), config_v2),
        (
            "POST",
            "/access-request-approvals/v1/bulk-approve".into(),
            json!({"approvalIds": [SOME_UUID], "comment": "ok"}),
        ),
        (
            "POST",
            format!("/access-request-approvals/v1/{SOME_UUID}/approve"),
            json!({"comment": "ok"}),
        ),
        (
            "POST",
            format!("/access-request-approvals/v1/{SOME_UUID}/reject"),
            json!({"comment": "no"}),
        ),
        (
            "POST",
            format!("/access-request-approvals/v1/{SOME_UUID}/forward"),
            json!({"newOwnerId": "bob", "comment": "yours"}),
        ),
    ]
}

/// One step into a body.
#[derive(Debug, Clone)]
pub enum Step {
    Key(String),
    Index(usize),
}

pub fn at<'v>(body: &'v mut Value, path: &[Step]) -> &'v mut Value {
    path.iter().fold(body, |v, step| match step {
        Step::Key(k) => &mut v[k.as_str()],
        Step::Index(i) => &mut v[*i],
    })
}

/// The properties a converted schema declares, through `allOf`/`anyOf`/`oneOf`.
pub fn properties(schema: &Value, out: &mut Vec<(String, Value)>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, s) in props {
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.clone(), s.clone()));
            }
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for member in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            properties(member, out);
        }
    }
}

/// The item schema of an array schema, through `allOf`/`anyOf`/`oneOf`.
pub fn items(schema: &Value) -> Option<Value> {
    if let Some(items) = schema.get("items") {
        return Some(items.clone());
    }
    ["allOf", "anyOf", "oneOf"]
        .iter()
        .find_map(|key| schema.get(key)?.as_array()?.iter().find_map(items))
}

/// A mutation: where, what the answer must name, and the mutated body.
pub struct Mutation {
    /// Where, and what was done.
    pub what: String,
    /// The field the refusal's message must name, if any.
    pub name: Option<String>,
    /// The mutated body.
    pub body: Value,
}

pub fn mutations(
    root: &Value,
    schema: &Value,
    body: &Value,
    path: Vec<Step>,
    out: &mut Vec<Mutation>,
) {
    let name = path.iter().rev().find_map(|s| match s {
        Step::Key(k) => Some(k.clone()),
        Step::Index(_) => None,
    });
    match body {
        Value::Object(fields) => {
            let mut arrayed = root.clone();
            *at(&mut arrayed, &path) = Value::Array(fields.values().cloned().collect());
            out.push(Mutation {
                what: format!("{path:?} as an array"),
                name: name.clone(),
                body: arrayed,
            });
            let mut props = Vec::new();
            properties(schema, &mut props);
            for (prop, prop_schema) in props {
                if !validator(&prop_schema).is_valid(&Value::Null) {
                    let mut nulled = root.clone();
                    at(&mut nulled, &path)[prop.as_str()] = Value::Null;
                    out.push(Mutation {
                        what: format!("{path:?}.{prop} null"),
                        name: Some(prop.clone()),
                        body: nulled,
                    });
                }
                if let Some(inner) = fields.get(&prop) {
                    let mut deeper = path.clone();
                    deeper.push(Step::Key(prop.clone()));
                    mutations(root, &prop_schema, inner, deeper, out);
                }
            }
        }
        Value::Array(elements) => {
            if let (Some(first), Some(item_schema)) = (elements.first(), items(schema)) {
                let mut deeper = path;
                deeper.push(Step::Index(0));
                mutations(root, &item_schema, first, deeper, out);
            }
        }
        _ => {}
    }
}
