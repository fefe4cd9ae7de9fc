//! Strict bodies, driven by the vendor's request schemas: for every vendor operation that takes
//! a body, a valid body is mutated so that one field is `null` (every property the vendor's
//! schema declares and does not make nullable, at every level the body reaches) or one object
//! is an array of its values; each mutation must be answered 400 with a message naming the
//! field, and change nothing. The valid body itself must match the vendor's schema, and the
//! shim must not refuse it as malformed.

mod common;

use common::bodies::{bodies, mutations};
use common::conformance::{contract, validator};
use common::*;
use jitflow_shim::auth::Level;

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
