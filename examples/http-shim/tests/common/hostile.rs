//! The hostile-input generator the refusal tests share: invalid bodies made from valid ones,
//! query strings a read must refuse, garbage tokens and content types (proptest strategies),
//! and what helps report a refusal that changed state. Included with
//! `#[path = "common/hostile.rs"] mod hostile;` by the tests that use it (see `common/mod.rs`).
#![allow(dead_code, reason = "each test binary uses part of the harness")]

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::Harness;

/// A query string a read endpoint must refuse: one bad parameter (a filter on a field no
/// collection has, a sorter none has, a limit or offset out of range, a count that is not a
/// boolean, a `searchAfter` that is no id, an unknown parameter), followed by junk. A limit
/// over 10,000 is out of range for every one of them.
pub fn bad_query() -> impl Strategy<Value = String> {
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
pub enum Body {
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

pub fn body() -> impl Strategy<Value = Body> {
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

pub fn wrong_value(t: usize, is_number: bool) -> Value {
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
pub fn target(v: &mut Value) -> &mut serde_json::Map<String, Value> {
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
pub fn render(method: &str, path: &str, valid: &Value, body: &Body) -> Option<Vec<u8>> {
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
pub enum Auth {
    None,
    Garbage(String),
    Valid,
    OtherTenant,
}

pub fn auth() -> impl Strategy<Value = Auth> {
    prop_oneof![
        Just(Auth::None),
        "[ -~]{0,80}".prop_map(Auth::Garbage),
        Just(Auth::Valid),
        Just(Auth::Valid),
        Just(Auth::OtherTenant),
    ]
}

pub fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(Some("application/json".to_owned())),
        1 => Just(None),
        1 => "[a-z]{1,10}/[a-z+.-]{1,16}".prop_map(Some),
    ]
}

/// The events committed after `before`, as export lines, to name what changed the state.
pub fn committed_since(h: &Harness, before: u64) -> String {
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
pub fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'#' | b' ' | b'"' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'\\' | b'^' | b'%' => {
                format!("%{b:02X}")
            }
            _ => (b as char).to_string(),
        })
        .collect()
}
