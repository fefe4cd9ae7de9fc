//! Strict bodies, driven by the vendor's request schemas: for every vendor operation that takes
//! a body, a valid body is mutated so that one field is `null` (every property the vendor's
//! schema declares and does not make nullable, at every level the body reaches) or one object
//! is an array of its values; each mutation must be answered 400 with a message naming the
//! field, and change nothing. The valid body itself must match the vendor's schema, and the
//! shim must not refuse it as malformed.

mod common;

use common::conformance::{contract, validator};
use common::*;
use jitflow_shim::auth::Level;
use serde_json::{Value, json};

/// A token allowed to call every operation below.
fn everything(h: &Harness) -> String {
    h.token(
        TENANT,
        "admin",
        &[
            "idn:jit-activation-workflow:activate",
            "idn:jit-activation-workflow:extend",
            "idn:jit-activation-workflow:deactivate",
            "idn:jit-activation-workflow:manage",
            "idn:jit-policy:manage",
            "idn:entitlement-connections:manage",
            "idn:access-request:manage",
            "idn:access-request:create",
            "idn:access-request-administration:manage",
            "idn:access-request-config:manage",
            "idn:access-request-approvals:manage",
        ],
        &[Level::OrgAdmin],
    )
}

const SOME_UUID: &str = "0f8e3c1a-7d2b-4c5e-9a6f-1b2c3d4e5f60";

/// A valid body for each vendor operation that takes one, with every optional object filled
/// in, so that the mutations reach every level.
fn bodies() -> Vec<(&'static str, String, Value)> {
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
enum Step {
    Key(String),
    Index(usize),
}

fn at<'v>(body: &'v mut Value, path: &[Step]) -> &'v mut Value {
    path.iter().fold(body, |v, step| match step {
        Step::Key(k) => &mut v[k.as_str()],
        Step::Index(i) => &mut v[*i],
    })
}

/// The properties a converted schema declares, through `allOf`/`anyOf`/`oneOf`.
fn properties(schema: &Value, out: &mut Vec<(String, Value)>) {
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
fn items(schema: &Value) -> Option<Value> {
    if let Some(items) = schema.get("items") {
        return Some(items.clone());
    }
    ["allOf", "anyOf", "oneOf"]
        .iter()
        .find_map(|key| schema.get(key)?.as_array()?.iter().find_map(items))
}

/// A mutation: where, what the answer must name, and the mutated body.
struct Mutation {
    what: String,
    name: Option<String>,
    body: Value,
}

fn mutations(root: &Value, schema: &Value, body: &Value, path: Vec<Step>, out: &mut Vec<Mutation>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrays_for_objects_and_nulls_for_non_nullable_fields_are_refused_everywhere() {
    let h = Harness::new().await;
    h.seed().await;
    let token = everything(&h);
    let mut tried = 0;
    for (method, path, body) in bodies() {
        let op = contract()
            .operation(method, &path)
            .unwrap_or_else(|| panic!("{method} {path} is no vendor operation"));
        let schema = op
            .request
            .clone()
            .unwrap_or_else(|| panic!("{method} {path} takes no body in the vendor's file"));
        let errors: Vec<String> = validator(&schema)
            .iter_errors(&body)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "the valid {method} {path} body is not: {errors:?}"
        );
        let mut list = Vec::new();
        mutations(&body, &schema, &body, Vec::new(), &mut list);
        assert!(!list.is_empty(), "{method} {path}");
        let before = h.engine().last_sequence().unwrap();
        for m in list {
            let (status, answer, _) = h.call(method, &path, Some(&token), Some(m.body)).await;
            assert_eq!(status, 400, "{method} {path} with {}: {answer}", m.what);
            let text = error_text(&answer);
            if let Some(name) = &m.name {
                assert!(
                    text.contains(name.as_str()),
                    "{method} {path} with {}: the message does not name `{name}`: {text}",
                    m.what
                );
            }
            tried += 1;
        }
        // Effects of earlier operations may still commit (as `system`); nothing the refused
        // bodies' caller did may have.
        let page = h.engine().export(None, before, 10_000).unwrap();
        for event in &page.events {
            let line = jitflow::export::json_line(event);
            assert!(
                !line.contains("\"admin\""),
                "{method} {path}: a refused body changed state: {line}"
            );
        }
        // The body itself is read: whatever the engine says, it is not malformed.
        let (status, answer, _) = h.call(method, &path, Some(&token), Some(body)).await;
        if status == 400 {
            let text = error_text(&answer);
            assert!(
                !text.contains("request schema") && !text.contains("must be a JSON"),
                "{method} {path}: the valid body was refused as malformed: {text}"
            );
        }
    }
    assert!(tried > 100, "only {tried} mutations");
    // The valid bodies did change state, as the caller: the check above can fail.
    let all = h.engine().export(None, 0, 10_000).unwrap();
    assert!(
        all.events
            .iter()
            .any(|e| jitflow::export::json_line(e).contains("\"admin\"")),
        "no event names the caller"
    );
    h.stop().await;
}

#[test]
fn the_readme_lists_the_deviations_the_code_keeps() {
    use jitflow_shim::deviations::{DEVIATIONS, Scope};
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let table = readme
        .split("### Deliberate deviations")
        .nth(1)
        .expect("README.md has a deliberate deviations section");
    let rows: Vec<(u16, String)> = table
        .lines()
        .skip_while(|l| !l.starts_with("| status"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].parse().unwrap(), cells[2].replace('`', ""))
        })
        .collect();
    let expected: Vec<(u16, String)> = DEVIATIONS
        .iter()
        .map(|d| {
            let scope = match d.scope {
                Scope::Every => "every operation".to_owned(),
                Scope::Operation(method, path) => format!("{method} {path}"),
            };
            (d.status, scope)
        })
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn the_route_table_declares_what_the_vendors_files_declare() {
    let served = jitflow_shim::operations();
    assert_eq!(served.len(), contract().operations.len());
    for (method, path, declared) in served {
        let op = contract()
            .operation(method.as_str(), path)
            .unwrap_or_else(|| panic!("{method} {path} is no vendor operation"));
        assert_eq!(op.path, path);
        let files: Vec<u16> = op.responses.keys().copied().collect();
        assert_eq!(declared, files.as_slice(), "{method} {path}");
    }
}
