//! The conformance check: every answer a test receives from a vendor operation is checked
//! against the vendor's OpenAPI files in `../shared/api/openapi` (found from the workspace
//! root; `JITFLOW_OPENAPI_DIR` overrides). Its status must be one the operation declares or
//! one `jitflow_shim::deviations::DEVIATIONS` lists, and its JSON body must validate against
//! the schema the operation declares for that status (an undeclared, listed status against the
//! contract's `ErrorResponseDto`). A failure names the operation, the status and the path of
//! each offending field.
//!
//! The files are OpenAPI 3.0, whose schemas are close to JSON Schema but not the same. They
//! are rewritten into JSON Schema 2020-12 here, in [`convert`], the one place the vendor's
//! quirks are handled:
//! - `$ref`s (to other files, with or without a `#/` fragment) are inlined, and a `$ref`'s
//!   sibling keywords are ignored, as OpenAPI 3.0 says; a `$ref` back to a file being inlined
//!   (a recursive schema) becomes `{}` (anything).
//! - `nullable: true` adds `null` to the `type` (and to an `enum`); on a schema without a
//!   `type` it becomes `anyOf: [schema, {type: null}]`.
//! - `allOf: [$ref, {nullable: true}]`, the vendor's way to make a referenced schema nullable,
//!   means exactly that: the `{nullable: true}` member is taken out and the whole `allOf`
//!   accepts `null` (as a member alone it would accept anything and make nothing nullable).
//! - OpenAPI's annotations (`example`, `discriminator`, `xml`, `externalDocs`, `x-*`) are
//!   dropped.
//! - `format` is asserted (`date-time`, `uuid`, `email`, ...), except where jitflow decided
//!   otherwise: the policy's `entitlementIds` are declared `format: uuid`, but entitlement ids
//!   are text ids in jitflow (`[A-Za-z0-9._:@-]`, which UUIDs and the vendor's own 32-hex ids
//!   also are), so that `format` is dropped ([`TEXT_ID_FIELDS`]; README.md says so); the
//!   same holds for an entitlement connection's `tenantId` (tenant ids are text ids too).
#![allow(dead_code, reason = "each test binary uses part of the harness")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// Properties whose declared `format: uuid` jitflow does not follow (see the module's docs):
/// (schema file name, property).
pub const TEXT_ID_FIELDS: &[(&str, &str)] = &[
    ("jitactivationconfigresponse.yaml", "entitlementIds"),
    ("entitlementconnection.yaml", "tenantId"),
];

/// One operation of the vendor's files.
pub struct Operation {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The v1 path template, e.g. `/access-request-approvals/v1/{approvalId}/approve`.
    pub path: String,
    /// Each declared status with its JSON response schema (converted), if it has one.
    pub responses: BTreeMap<u16, Option<Value>>,
    /// The JSON request body schema (converted), if the operation takes one.
    pub request: Option<Value>,
    /// Whether it takes a body, and then whether the body is required.
    pub body: Option<bool>,
    validators: BTreeMap<u16, jsonschema::Validator>,
}

/// The vendor's operations, and the `ErrorResponseDto` validator.
pub struct Contract {
    pub operations: Vec<Operation>,
    error: jsonschema::Validator,
}

/// The folder of the vendor's OpenAPI files.
pub fn openapi_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("JITFLOW_OPENAPI_DIR") {
        return PathBuf::from(dir);
    }
    // examples/http-shim -> the workspace root -> its sibling `shared`.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/api/openapi")
}

/// The contract, loaded once per test binary.
pub fn contract() -> &'static Contract {
    static CONTRACT: OnceLock<Contract> = OnceLock::new();
    CONTRACT.get_or_init(|| Contract::load(&openapi_dir()))
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the vendor's file {}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The node a `$ref` names, from the file `base` it appears in: (node, its file).
fn follow(reference: &str, base: &Path) -> (Value, PathBuf) {
    let (file, fragment) = reference.split_once('#').unwrap_or((reference, ""));
    let path = if file.is_empty() {
        base.to_owned()
    } else {
        normalize(&base.parent().unwrap().join(file))
    };
    let mut node = read_yaml(&path);
    for part in fragment.split('/').filter(|p| !p.is_empty()) {
        node = node
            .get(part)
            .unwrap_or_else(|| panic!("{reference} from {}: no {part}", base.display()))
            .clone();
    }
    (node, path)
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A non-schema node (a path item, a response, a request body) with its `$ref`s followed.
fn deref(node: &Value, base: &Path) -> (Value, PathBuf) {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let (target, file) = follow(reference, base);
            deref(&target, &file)
        }
        None => (node.clone(), base.to_owned()),
    }
}

/// Whether a schema is only the vendor's `{nullable: true}` marker (with annotations).
fn is_nullable_marker(node: &Value) -> bool {
    node.as_object().is_some_and(|o| {
        o.get("nullable") == Some(&Value::Bool(true))
            && o.keys()
                .all(|k| matches!(k.as_str(), "nullable" | "description" | "example"))
    })
}

/// An OpenAPI 3.0 schema as JSON Schema 2020-12, `$ref`s inlined (see the module's docs).
/// `stack` holds the files being inlined, to stop at recursion.
pub fn convert(node: &Value, file: &Path, stack: &mut Vec<PathBuf>) -> Value {
    let Some(object) = node.as_object() else {
        return node.clone();
    };
    if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
        let (target, target_file) = follow(reference, file);
        if stack.contains(&target_file) {
            return json!({});
        }
        stack.push(target_file.clone());
        let out = convert(&target, &target_file, stack);
        stack.pop();
        return out;
    }
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let mut out = Map::new();
    let mut nullable = object.get("nullable") == Some(&Value::Bool(true));
    for (key, value) in object {
        match key.as_str() {
            "nullable" | "example" | "examples" | "discriminator" | "xml" | "externalDocs" => {}
            k if k.starts_with("x-") => {}
            "properties" => {
                let mut props = Map::new();
                for (prop, schema) in value.as_object().into_iter().flatten() {
                    let mut converted = convert(schema, file, stack);
                    if TEXT_ID_FIELDS.contains(&(name, prop.as_str())) {
                        drop_format(&mut converted);
                    }
                    props.insert(prop.clone(), converted);
                }
                out.insert(key.clone(), Value::Object(props));
            }
            "items" | "not" | "additionalProperties" if value.is_object() => {
                out.insert(key.clone(), convert(value, file, stack));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let members = value.as_array().cloned().unwrap_or_default();
                let mut kept = Vec::new();
                for m in &members {
                    if key == "allOf" && is_nullable_marker(m) {
                        nullable = true;
                    } else {
                        kept.push(convert(m, file, stack));
                    }
                }
                out.insert(key.clone(), Value::Array(kept));
            }
            "exclusiveMinimum" | "exclusiveMaximum" if value.is_boolean() => {
                // OpenAPI 3.0's boolean form: the bound is `minimum`/`maximum`.
                let bound = if key == "exclusiveMinimum" {
                    "minimum"
                } else {
                    "maximum"
                };
                if value == &Value::Bool(true)
                    && let Some(b) = object.get(bound)
                {
                    out.insert(key.clone(), b.clone());
                }
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if object.get("exclusiveMinimum") == Some(&Value::Bool(true)) {
        out.remove("minimum");
    }
    if object.get("exclusiveMaximum") == Some(&Value::Bool(true)) {
        out.remove("maximum");
    }
    if !nullable {
        return Value::Object(out);
    }
    match out.get("type").cloned() {
        Some(Value::String(t)) if !out.contains_key("allOf") => {
            out.insert("type".to_owned(), json!([t, "null"]));
            if let Some(Value::Array(values)) = out.get_mut("enum")
                && !values.contains(&Value::Null)
            {
                values.push(Value::Null);
            }
            Value::Object(out)
        }
        _ => json!({"anyOf": [Value::Object(out), {"type": "null"}]}),
    }
}

fn drop_format(schema: &mut Value) {
    if let Some(o) = schema.as_object_mut() {
        o.remove("format");
        if let Some(items) = o.get_mut("items") {
            drop_format(items);
        }
    }
}

/// The validator of a converted schema, with formats asserted.
pub fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("a converted vendor schema does not compile: {e}\n{schema}"))
}

/// The JSON schema of a response or request body node, converted.
fn json_schema(node: &Value, file: &Path) -> Option<Value> {
    let content = node.get("content")?;
    let media = content
        .get("application/json")
        .or_else(|| content.get("application/json-patch+json"))?;
    let schema = media.get("schema")?;
    Some(convert(schema, file, &mut vec![file.to_owned()]))
}

impl Contract {
    fn load(dir: &Path) -> Contract {
        let mut operations = Vec::new();
        let mut apis: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("the vendor's OpenAPI files at {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("openapi.yaml").exists())
            .collect();
        apis.sort();
        for api in apis {
            let root = api.join("openapi.yaml");
            let doc = read_yaml(&root);
            for (path, item) in doc["paths"].as_object().into_iter().flatten() {
                let (item, item_file) = deref(item, &root);
                for (method, op) in item.as_object().into_iter().flatten() {
                    if !matches!(method.as_str(), "get" | "put" | "post" | "patch" | "delete") {
                        continue;
                    }
                    let mut responses = BTreeMap::new();
                    let mut validators = BTreeMap::new();
                    for (status, response) in op["responses"].as_object().into_iter().flatten() {
                        let status: u16 = status.parse().expect("a numeric status");
                        let (response, file) = deref(response, &item_file);
                        let schema = json_schema(&response, &file);
                        if let Some(s) = &schema {
                            validators.insert(status, validator(s));
                        }
                        responses.insert(status, schema);
                    }
                    let body = op.get("requestBody").map(|b| deref(b, &item_file));
                    let request = body.as_ref().and_then(|(b, file)| json_schema(b, file));
                    let body = body.map(|(b, _)| b["required"].as_bool().unwrap_or(false));
                    operations.push(Operation {
                        method: method.to_uppercase(),
                        path: path.clone(),
                        responses,
                        request,
                        body,
                        validators,
                    });
                }
            }
        }
        let error_file = dir.join("shared/schemas/errorresponsedto.yaml");
        let error = validator(&convert(
            &read_yaml(&error_file),
            &error_file,
            &mut vec![error_file.clone()],
        ));
        Contract { operations, error }
    }

    /// The operation `method` `path` (a served path, either form, with or without a query).
    pub fn operation(&self, method: &str, path: &str) -> Option<&Operation> {
        let path = path.split('?').next().unwrap_or(path);
        let v1 = v1_form(path);
        let segments: Vec<&str> = v1.split('/').collect();
        self.operations
            .iter()
            .filter(|op| op.method == method)
            .filter_map(|op| {
                let template: Vec<&str> = op.path.split('/').collect();
                if template.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (t, s) in template.iter().zip(&segments) {
                    if t.starts_with('{') {
                        if s.is_empty() {
                            return None;
                        }
                    } else if t == s {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, op))
            })
            .max_by_key(|(literal, _)| *literal)
            .map(|(_, op)| op)
    }

    /// Checks that `body` is the contract's `ErrorResponseDto` (for the shim's own paths, which
    /// the operation check passes over); panics naming what does not conform.
    pub fn check_error(&self, what: &str, body: &Value) {
        let errors = errors(&self.error, body);
        assert!(
            errors.is_empty(),
            "{what}: not an ErrorResponseDto:\n{}\nbody: {body}",
            errors.join("\n")
        );
    }

    /// Checks one answer (see the module's docs); panics naming what does not conform.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let Some(op) = self.operation(method, path) else {
            // The shim's own paths, `/health` and the like, and paths no operation has.
            return;
        };
        let method_ = axum::http::Method::from_bytes(method.as_bytes()).unwrap();
        let declared = op.responses.contains_key(&status);
        assert!(
            declared || jitflow_shim::deviations::kept(&method_, &op.path, status),
            "{method} {path} answered {status}, which {} {} neither declares nor lists as a deviation: {body}",
            op.method,
            op.path
        );
        let validator = if declared {
            op.validators.get(&status)
        } else {
            Some(&self.error)
        };
        if let Some(validator) = validator {
            let errors = errors(validator, body);
            assert!(
                errors.is_empty(),
                "{method} {path} answered {status} with a body that does not match {} {}'s schema:\n{}\nbody: {body}",
                op.method,
                op.path,
                errors.join("\n")
            );
        }
    }
}

/// The first few errors of `body` against `validator`, each with the path of its field.
fn errors(validator: &jsonschema::Validator, body: &Value) -> Vec<String> {
    validator
        .iter_errors(body)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .take(10)
        .collect()
}

/// The v1 form of a served path: `/v2026/<api>/<rest>` is `/<api>/v1/<rest>`.
fn v1_form(path: &str) -> String {
    match path.strip_prefix("/v2026/") {
        Some(rest) => {
            let (api, tail) = rest.split_once('/').map_or((rest, ""), |(a, t)| (a, t));
            if tail.is_empty() {
                format!("/{api}/v1")
            } else {
                format!("/{api}/v1/{tail}")
            }
        }
        None => path.to_owned(),
    }
}
