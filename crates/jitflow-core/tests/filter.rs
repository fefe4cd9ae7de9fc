//! The filter and sorter grammar: every field and operator of both tables, every error and its
//! position, precedence, escapes, bounds, sorters, and property tests for robustness, the
//! `Display` round trip and the matching semantics.

use std::cmp::Ordering;
use std::collections::HashMap;

use jitflow_core::filter::{
    ACTIVATION_HISTORY_FIELDS, ACTIVATION_HISTORY_SORTERS, CmpOp, ENTITLEMENT_CONNECTION_FIELDS,
    ENTITLEMENT_CONNECTION_SORTERS, Error, Expr, FieldSpec, FieldValue, Fields, MAX_DEPTH,
    MAX_IN_VALUES, MAX_INPUT_LEN, MAX_SORTERS, MAX_TERMS, Op, Sort, Value, ValueType, compare_sort,
    find_field, parse_filter, parse_sorters,
};
use jitflow_core::time::Timestamp;
use proptest::prelude::*;

/// A table that allows every operator on every type, to test the semantics of each operator.
const TEST_FIELDS: &[FieldSpec] = &[
    FieldSpec {
        name: "text",
        ops: &Op::ALL,
        ty: ValueType::Text,
    },
    FieldSpec {
        name: "flag",
        ops: &Op::ALL,
        ty: ValueType::Bool,
    },
    FieldSpec {
        name: "at",
        ops: &Op::ALL,
        ty: ValueType::Timestamp,
    },
    FieldSpec {
        name: "colour",
        ops: &Op::ALL,
        ty: ValueType::Enum(&["Red", "GREEN", "blue"]),
    },
];

fn conn(input: &str) -> Result<Expr, Error> {
    parse_filter(input, ENTITLEMENT_CONNECTION_FIELDS)
}

fn hist(input: &str) -> Result<Expr, Error> {
    parse_filter(input, ACTIVATION_HISTORY_FIELDS)
}

fn all_ops(input: &str) -> Result<Expr, Error> {
    parse_filter(input, TEST_FIELDS)
}

fn ts(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).expect("test timestamp")
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn cmp(field: &'static str, op: CmpOp, value: Value) -> Expr {
    Expr::Cmp { field, op, value }
}

fn eq(field: &'static str, s: &str) -> Expr {
    cmp(field, CmpOp::Eq, text(s))
}

/// The byte position an error carries, if any.
fn position(error: &Error) -> Option<usize> {
    match error {
        Error::UnexpectedEnd { position, .. }
        | Error::UnexpectedToken { position, .. }
        | Error::UnterminatedString { position }
        | Error::BadEscape { position }
        | Error::UnknownField { position, .. }
        | Error::OperatorNotAllowed { position, .. }
        | Error::WrongValueType { position, .. }
        | Error::NullLiteral { position, .. }
        | Error::BadTimestamp { position, .. }
        | Error::NotInEnum { position, .. }
        | Error::TooDeep { position, .. }
        | Error::TooManyValues { position, .. }
        | Error::TooManyTerms { position, .. }
        | Error::UnknownSortField { position, .. }
        | Error::DuplicateSortField { position, .. }
        | Error::EmptySortItem { position }
        | Error::TooManySorters { position, .. } => Some(*position),
        Error::TooLong { .. } | Error::Empty => None,
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Records.

#[derive(Debug, Clone, PartialEq)]
enum Owned {
    Text(String),
    Bool(bool),
    Timestamp(Timestamp),
}

#[derive(Debug, Clone, Default)]
struct Record(HashMap<&'static str, Owned>);

impl Record {
    fn with(mut self, name: &'static str, value: Owned) -> Record {
        self.0.insert(name, value);
        self
    }

    fn text(self, name: &'static str, value: &str) -> Record {
        self.with(name, Owned::Text(value.to_owned()))
    }
}

impl Fields for Record {
    fn field(&self, name: &str) -> FieldValue<'_> {
        match self.0.get(name) {
            None => FieldValue::Null,
            Some(Owned::Text(s)) => FieldValue::Text(s),
            Some(Owned::Bool(b)) => FieldValue::Bool(*b),
            Some(Owned::Timestamp(t)) => FieldValue::Timestamp(*t),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every field and operator of both tables.

/// A literal of the field's type that is valid for `op`, and the value it parses to.
fn sample(spec: &FieldSpec, op: Op) -> (String, Value) {
    match spec.ty {
        ValueType::Text => ("\"abc\"".to_owned(), text("abc")),
        ValueType::Bool => ("true".to_owned(), Value::Bool(true)),
        ValueType::Timestamp => (
            "2026-04-01T10:00:00Z".to_owned(),
            Value::Timestamp(ts("2026-04-01T10:00:00Z")),
        ),
        ValueType::Enum(values) => {
            let first = values.first().copied().unwrap_or_default();
            if matches!(op, Op::Eq | Op::Ne | Op::In) {
                // Written in lowercase, stored in the canonical spelling.
                (format!("\"{}\"", first.to_lowercase()), text(first))
            } else {
                ("\"AC\"".to_owned(), text("AC"))
            }
        }
    }
}

fn check_every_field_and_operator(table: &'static [FieldSpec]) {
    for spec in table {
        for op in Op::ALL {
            let (literal, value) = sample(spec, op);
            let input = match op {
                Op::IsNull => format!("{} isnull", spec.name),
                Op::In => format!("{} in ({literal}, {literal})", spec.name),
                _ => format!("{} {} {literal}", spec.name, op.keyword()),
            };
            let parsed = parse_filter(&input, table);
            if spec.allows(op) {
                let expected = match CmpOp::from_op(op) {
                    Some(cmp_op) => cmp(spec.name, cmp_op, value),
                    None if op == Op::In => Expr::In {
                        field: spec.name,
                        values: vec![value.clone(), value],
                    },
                    None => Expr::IsNull { field: spec.name },
                };
                assert_eq!(parsed, Ok(expected), "{input}");
            } else {
                assert_eq!(
                    parsed,
                    Err(Error::OperatorNotAllowed {
                        position: spec.name.len() + 1,
                        field: spec.name.to_owned(),
                        op: op.keyword().to_owned(),
                        allowed: spec.allowed_ops(),
                    }),
                    "{input}"
                );
            }
        }
    }
}

#[test]
fn every_entitlement_connection_field_and_operator() {
    check_every_field_and_operator(ENTITLEMENT_CONNECTION_FIELDS);
}

#[test]
fn every_activation_history_field_and_operator() {
    check_every_field_and_operator(ACTIVATION_HISTORY_FIELDS);
}

#[test]
fn every_operator_on_every_type() {
    check_every_field_and_operator(TEST_FIELDS);
}

#[test]
fn the_tables_say_what_the_contract_says() {
    let ops = |table: &'static [FieldSpec], name: &str| {
        find_field(table, name)
            .map(|spec| spec.allowed_ops())
            .unwrap_or_default()
    };
    let c = ENTITLEMENT_CONNECTION_FIELDS;
    assert_eq!(c.len(), 18);
    for name in [
        "identity.id",
        "source.id",
        "account.id",
        "entitlement.id",
        "type",
    ] {
        assert_eq!(ops(c, name), "eq, in", "{name}");
    }
    for name in [
        "identity.name",
        "source.name",
        "account.name",
        "entitlement.attribute",
        "entitlement.value",
        "entitlement.privilegeLevel.effective",
        "state.value",
    ] {
        assert_eq!(ops(c, name), "eq, in, co", "{name}");
    }
    assert_eq!(ops(c, "standalone"), "eq, in");
    for name in [
        "jit.activation",
        "jit.provision",
        "jit.deactivation",
        "jit.deprovision",
        "jit.expiration",
    ] {
        assert_eq!(ops(c, name), "gt, lt, ge, le", "{name}");
        assert_eq!(
            find_field(c, name).map(|s| s.ty),
            Some(ValueType::Timestamp)
        );
    }
    assert_eq!(
        find_field(c, "standalone").map(|s| s.ty),
        Some(ValueType::Bool)
    );

    let h = ACTIVATION_HISTORY_FIELDS;
    assert_eq!(h.len(), 7);
    assert_eq!(ops(h, "identityId"), "eq, in");
    assert_eq!(ops(h, "entitlementId"), "eq, in");
    assert_eq!(ops(h, "sourceId"), "eq");
    assert_eq!(ops(h, "connectionId"), "eq");
    assert_eq!(ops(h, "status"), "eq, in");
    assert_eq!(ops(h, "activationInitiated"), "gt, lt, ge, le");
    assert_eq!(ops(h, "policyFrictionOutcome"), "eq, in");

    assert_eq!(ENTITLEMENT_CONNECTION_SORTERS.len(), 19);
    assert_eq!(
        ACTIVATION_HISTORY_SORTERS,
        &["activationInitiated", "provisionCompleted", "status", "id"]
    );
}

#[test]
fn contract_examples_parse() {
    let expr = conn(
        r#"type eq "JIT" and (state.value in ("ACTIVE","EXPIRED") or not standalone eq true)"#,
    )
    .expect("contract example");
    assert_eq!(
        expr,
        Expr::And(vec![
            eq("type", "JIT"),
            Expr::Or(vec![
                Expr::In {
                    field: "state.value",
                    values: vec![text("ACTIVE"), text("EXPIRED")],
                },
                Expr::Not(Box::new(cmp("standalone", CmpOp::Eq, Value::Bool(true)))),
            ]),
        ])
    );
    assert_eq!(
        conn(r#"identity.id in ("a","b")"#),
        Ok(Expr::In {
            field: "identity.id",
            values: vec![text("a"), text("b")],
        })
    );
    assert_eq!(
        conn("jit.expiration gt 2026-04-01T10:00:00Z"),
        Ok(cmp(
            "jit.expiration",
            CmpOp::Gt,
            Value::Timestamp(ts("2026-04-01T10:00:00Z"))
        ))
    );
    assert_eq!(
        hist(
            r#"status in ("timed_out", "Revoked") and activationInitiated ge "2025-10-30T15:02:12.345-05:00""#
        ),
        Ok(Expr::And(vec![
            Expr::In {
                field: "status",
                values: vec![text("TIMED_OUT"), text("REVOKED")],
            },
            cmp(
                "activationInitiated",
                CmpOp::Ge,
                Value::Timestamp(ts("2025-10-30T20:02:12.345Z"))
            ),
        ]))
    );
}

#[test]
fn timestamps_quoted_unquoted_and_with_offsets() {
    let want = Ok(cmp(
        "jit.activation",
        CmpOp::Le,
        Value::Timestamp(ts("2025-12-03T09:15:30Z")),
    ));
    for input in [
        "jit.activation le 2025-12-03T09:15:30Z",
        "jit.activation le \"2025-12-03T09:15:30Z\"",
        "jit.activation le 2025-12-03T10:15:30+01:00",
        "jit.activation le 2025-12-03T09:15:30.000Z",
        "jit.activation le \"2025-12-03T04:15:30-05:00\"",
    ] {
        assert_eq!(conn(input), want, "{input}");
    }
}

#[test]
fn whitespace_is_spaces_and_tabs() {
    assert_eq!(conn("\t type\teq   \"JIT\"  "), Ok(eq("type", "JIT")));
    assert_eq!(
        conn("identity.id in(\"a\" ,\"b\")and(type eq\"JIT\")"),
        Ok(Expr::And(vec![
            Expr::In {
                field: "identity.id",
                values: vec![text("a"), text("b")],
            },
            eq("type", "JIT"),
        ]))
    );
    assert!(matches!(
        conn("type eq \"JIT\"\nand standalone eq true"),
        Err(Error::UnexpectedToken { position: 13, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Precedence and escapes.

#[test]
fn and_binds_tighter_than_or() {
    let a = eq("identity.id", "a");
    let b = eq("source.id", "b");
    let c = eq("account.id", "c");
    assert_eq!(
        conn(r#"identity.id eq "a" or source.id eq "b" and account.id eq "c""#),
        Ok(Expr::Or(vec![
            a.clone(),
            Expr::And(vec![b.clone(), c.clone()])
        ]))
    );
    assert_eq!(
        conn(r#"identity.id eq "a" and source.id eq "b" or account.id eq "c""#),
        Ok(Expr::Or(vec![
            Expr::And(vec![a.clone(), b.clone()]),
            c.clone()
        ]))
    );
    assert_eq!(
        conn(r#"(identity.id eq "a" or source.id eq "b") and account.id eq "c""#),
        Ok(Expr::And(vec![
            Expr::Or(vec![a.clone(), b.clone()]),
            c.clone()
        ]))
    );
    // A chain of one operator is one node; parentheses keep their own node.
    assert_eq!(
        conn(r#"identity.id eq "a" or source.id eq "b" or account.id eq "c""#),
        Ok(Expr::Or(vec![a.clone(), b.clone(), c.clone()]))
    );
    assert_eq!(
        conn(r#"(identity.id eq "a" and source.id eq "b") and account.id eq "c""#),
        Ok(Expr::And(vec![
            Expr::And(vec![a.clone(), b.clone()]),
            c.clone()
        ]))
    );
    assert_eq!(conn(r#"((identity.id eq "a"))"#), Ok(a));
}

#[test]
fn not_binds_tightest() {
    let a = eq("identity.id", "a");
    let b = eq("source.id", "b");
    let not = |e: Expr| Expr::Not(Box::new(e));
    assert_eq!(
        conn(r#"not identity.id eq "a" and source.id eq "b""#),
        Ok(Expr::And(vec![not(a.clone()), b.clone()]))
    );
    assert_eq!(
        conn(r#"not (identity.id eq "a" and source.id eq "b")"#),
        Ok(not(Expr::And(vec![a.clone(), b.clone()])))
    );
    assert_eq!(
        conn(r#"source.id eq "b" or not not identity.id eq "a""#),
        Ok(Expr::Or(vec![b, not(not(a))]))
    );
}

#[test]
fn string_escapes() {
    assert_eq!(
        conn(r#"identity.name eq "a\"b\\c""#),
        Ok(eq("identity.name", "a\"b\\c"))
    );
    assert_eq!(
        conn(r#"identity.name co "\\""#),
        Ok(cmp("identity.name", CmpOp::Co, text("\\")))
    );
    // Everything else inside quotes is kept as written, operators and unicode included.
    assert_eq!(
        conn("identity.name eq \"Zoë and ( not )\t✓\""),
        Ok(eq("identity.name", "Zoë and ( not )\t✓"))
    );
    assert_eq!(conn(r#"identity.name eq """#), Ok(eq("identity.name", "")));
    for (input, at) in [
        (r#"identity.name eq "a\nb""#, 19),
        (r#"identity.name eq "\'""#, 18),
        (r#"identity.name eq "\u0041""#, 18),
    ] {
        assert_eq!(
            conn(input),
            Err(Error::BadEscape { position: at }),
            "{input}"
        );
    }
}

#[test]
fn enums_are_matched_case_insensitively_and_stored_canonically() {
    assert_eq!(conn(r#"type eq "standing""#), Ok(eq("type", "STANDING")));
    assert_eq!(conn(r#"type eq "Na""#), Ok(eq("type", "NA")));
    assert_eq!(
        all_ops(r#"colour ne "RED""#),
        Ok(cmp("colour", CmpOp::Ne, text("Red")))
    );
    // `co` on an enum field is free text, kept as written.
    assert_eq!(
        conn(r#"state.value co "act""#),
        Ok(cmp("state.value", CmpOp::Co, text("act")))
    );
}

// ---------------------------------------------------------------------------------------------
// Every error and its position.

#[test]
fn unexpected_end() {
    for (input, expected) in [
        ("type", "an operator for `type` (eq, in)"),
        ("type eq", "a value"),
        ("type in", "`(` to start"),
        ("type in (", "a value"),
        ("type in (\"JIT\"", "`,` or `)`"),
        ("type in (\"JIT\",", "a value"),
        ("(type eq \"JIT\"", "`and`, `or` or `)`"),
        ("type eq \"JIT\" and", "a field name"),
        ("not", "a field name"),
        ("(", "a field name"),
    ] {
        match conn(input) {
            Err(Error::UnexpectedEnd {
                position,
                expected: got,
            }) => {
                assert_eq!(position, input.len(), "{input}");
                assert!(got.starts_with(expected), "{input}: {got}");
            }
            other => panic!("{input}: {other:?}"),
        }
    }
}

#[test]
fn unexpected_token() {
    for (input, at, found) in [
        (r#"type EQ "JIT""#, 5, "`EQ`"),
        (r#"type eq JIT"#, 8, "`JIT`"),
        (r#"type eq "JIT")"#, 13, "`)`"),
        (r#"type eq "JIT" "x""#, 14, "string \"x\""),
        (r#"and type eq "JIT""#, 0, "`and`"),
        (r#"type eq "JIT" or or"#, 17, "`or`"),
        (r#"()"#, 1, "`)`"),
        (r#"type in ()"#, 9, "`)`"),
        (r#"type in ("JIT",)"#, 15, "`)`"),
        (r#"type in "JIT""#, 8, "string \"JIT\""),
        (r#"type in ("JIT" "NA")"#, 15, "string \"NA\""),
        (r#"type eq = "JIT""#, 8, "character `=`"),
        (r#"type == "JIT""#, 5, "character `=`"),
        (
            r#"type eq "JIT" && standalone eq true"#,
            14,
            "character `&`",
        ),
        (r#"type eq "JIT"; drop"#, 13, "character `;`"),
        (r#"identity.id. eq "a""#, 11, "character `.`"),
        (r#"identity.id eq "a" ( "#, 19, "`(`"),
        (r#"type eq ,"#, 8, "`,`"),
        (r#"type eq eq"#, 8, "`eq`"),
        (r#"é"#, 0, "character `é`"),
        (r#"type eq "JIT" andtype eq "NA""#, 14, "`andtype`"),
    ] {
        match conn(input) {
            Err(Error::UnexpectedToken {
                position,
                found: got,
                ..
            }) => {
                assert_eq!(position, at, "{input}");
                assert_eq!(got, found, "{input}");
            }
            other => panic!("{input}: {other:?}"),
        }
    }
}

#[test]
fn unterminated_string() {
    assert_eq!(
        conn(r#"type eq "JIT"#),
        Err(Error::UnterminatedString { position: 8 })
    );
    assert_eq!(
        conn(r#"type eq "JIT\""#),
        Err(Error::UnterminatedString { position: 8 })
    );
    assert_eq!(
        conn(r#"type eq "JIT\"#),
        Err(Error::UnterminatedString { position: 8 })
    );
    // The leftmost problem wins: the stray token comes before the bad string.
    assert!(matches!(
        conn(r#"type eq eq "JIT"#),
        Err(Error::UnexpectedToken { position: 8, .. })
    ));
}

#[test]
fn bad_escape() {
    assert_eq!(
        conn(r#"identity.id eq "a\tb""#),
        Err(Error::BadEscape { position: 17 })
    );
}

#[test]
fn unknown_field() {
    assert_eq!(
        conn(r#"type eq "JIT" and colour eq "red""#),
        Err(Error::UnknownField {
            position: 18,
            field: "colour".to_owned(),
        })
    );
    // Field names are case-sensitive, and each table has its own fields.
    assert!(matches!(
        conn(r#"Type eq "JIT""#),
        Err(Error::UnknownField { position: 0, .. })
    ));
    assert!(matches!(
        hist(r#"type eq "JIT""#),
        Err(Error::UnknownField { position: 0, .. })
    ));
    assert!(matches!(
        conn(r#"identityId eq "a""#),
        Err(Error::UnknownField { position: 0, .. })
    ));
    // A sortable field is not necessarily filterable.
    assert!(matches!(
        conn(r#"id eq "a""#),
        Err(Error::UnknownField { position: 0, .. })
    ));
    // Long names are cut in the message.
    let long = "a".repeat(200);
    match conn(&format!("{long} eq \"x\"")) {
        Err(Error::UnknownField { field, .. }) => assert_eq!(field.chars().count(), 65),
        other => panic!("{other:?}"),
    }
}

#[test]
fn operator_not_allowed() {
    assert_eq!(
        conn(r#"type co "J""#),
        Err(Error::OperatorNotAllowed {
            position: 5,
            field: "type".to_owned(),
            op: "co".to_owned(),
            allowed: "eq, in".to_owned(),
        })
    );
    assert!(matches!(
        conn("jit.expiration eq 2026-04-01T10:00:00Z"),
        Err(Error::OperatorNotAllowed { position: 15, .. })
    ));
    assert!(matches!(
        hist(r#"sourceId in ("a")"#),
        Err(Error::OperatorNotAllowed { position: 9, .. })
    ));
    assert!(matches!(
        conn("identity.id isnull"),
        Err(Error::OperatorNotAllowed { position: 12, .. })
    ));
}

#[test]
fn wrong_value_type() {
    for (input, at, expected) in [
        (r#"standalone eq "true""#, 14, "`true` or `false`"),
        (r#"standalone in (true, 1)"#, 21, "`true` or `false`"),
        ("identity.id eq 5", 15, "a quoted string"),
        ("identity.id eq -12", 15, "a quoted string"),
        ("identity.id eq true", 15, "a quoted string"),
        ("identity.id eq 2026-04-01T10:00:00Z", 15, "a quoted string"),
        ("type eq 1", 8, "a quoted string"),
        ("jit.expiration gt 5", 18, "an RFC 3339 date-time"),
        ("jit.expiration gt true", 18, "an RFC 3339 date-time"),
    ] {
        match conn(input) {
            Err(Error::WrongValueType {
                position,
                expected: got,
                ..
            }) => {
                assert_eq!(position, at, "{input}");
                assert!(got.starts_with(expected), "{input}: {got}");
            }
            other => panic!("{input}: {other:?}"),
        }
    }
}

#[test]
fn null_literal() {
    assert_eq!(
        conn("identity.id eq null"),
        Err(Error::NullLiteral {
            position: 15,
            field: "identity.id".to_owned(),
        })
    );
    assert!(matches!(
        conn(r#"identity.id in ("a", null)"#),
        Err(Error::NullLiteral { position: 21, .. })
    ));
    // `isnull` is the way, where a table allows it.
    assert_eq!(all_ops("text isnull"), Ok(Expr::IsNull { field: "text" }));
}

#[test]
fn bad_timestamp() {
    for (input, at) in [
        (r#"jit.expiration gt "yesterday""#, 18),
        ("jit.expiration gt 2026-04-01", 18),
        ("jit.expiration gt 2026-04-01T10:00:00", 18),
        ("jit.expiration gt 2026-13-01T10:00:00Z", 18),
        ("jit.expiration gt 1970-01-01T00:30:00+01:00", 18),
        (r#"jit.expiration gt """#, 18),
        ("activationInitiated lt 2026-04-01T10:00:00+1:00", 23),
    ] {
        let parsed = if input.starts_with("jit") {
            conn(input)
        } else {
            hist(input)
        };
        match parsed {
            Err(Error::BadTimestamp {
                position, reason, ..
            }) => {
                assert_eq!(position, at, "{input}");
                assert!(!reason.is_empty());
            }
            other => panic!("{input}: {other:?}"),
        }
    }
}

#[test]
fn not_in_enum() {
    assert_eq!(
        conn(r#"type eq "TEMP""#),
        Err(Error::NotInEnum {
            position: 8,
            field: "type".to_owned(),
            value: "TEMP".to_owned(),
            allowed: "JIT, STANDING, NA".to_owned(),
        })
    );
    assert!(matches!(
        conn(r#"state.value in ("ACTIVE", "ACTIV")"#),
        Err(Error::NotInEnum { position: 26, .. })
    ));
    assert!(matches!(
        hist(r#"status eq "COMPLETED""#),
        Err(Error::NotInEnum { position: 10, .. })
    ));
}

#[test]
fn too_long() {
    let padded = |len: usize| {
        let frame = "identity.id eq \"\"".len();
        format!("identity.id eq \"{}\"", "a".repeat(len - frame))
    };
    let ok = padded(MAX_INPUT_LEN);
    assert_eq!(ok.len(), 4096);
    assert!(conn(&ok).is_ok());
    let long = padded(MAX_INPUT_LEN + 1);
    assert_eq!(
        conn(&long),
        Err(Error::TooLong {
            len: 4097,
            max: 4096
        })
    );
    // Checked before anything else, and for sorters too.
    assert_eq!(
        conn(&"(".repeat(5000)),
        Err(Error::TooLong {
            len: 5000,
            max: 4096
        })
    );
    assert_eq!(
        parse_sorters(&"id,".repeat(2000), ENTITLEMENT_CONNECTION_SORTERS),
        Err(Error::TooLong {
            len: 6000,
            max: 4096
        })
    );
}

#[test]
fn too_deep() {
    let nested = |n: usize| format!("{}type eq \"JIT\"{}", "(".repeat(n), ")".repeat(n));
    assert_eq!(MAX_DEPTH, 16);
    assert_eq!(conn(&nested(16)), Ok(eq("type", "JIT")));
    assert_eq!(
        conn(&nested(17)),
        Err(Error::TooDeep {
            position: 16,
            max: 16
        })
    );
    let nots = |n: usize| format!("{}type eq \"JIT\"", "not ".repeat(n));
    assert!(conn(&nots(16)).is_ok());
    assert_eq!(
        conn(&nots(17)),
        Err(Error::TooDeep {
            position: 64,
            max: 16
        })
    );
    // Parentheses and `not` count together.
    let mixed = format!(
        "{}{}type eq \"JIT\"{}",
        "not (".repeat(8),
        "(",
        ")".repeat(9)
    );
    assert_eq!(
        conn(&mixed),
        Err(Error::TooDeep {
            position: 40,
            max: 16
        })
    );
    // Hostile nesting fails fast instead of overflowing the stack.
    assert!(matches!(
        conn(&"(".repeat(4096)),
        Err(Error::TooDeep { position: 16, .. })
    ));
    assert!(matches!(
        conn(&"not ".repeat(1024)),
        Err(Error::TooDeep { position: 64, .. })
    ));
}

#[test]
fn too_many_values() {
    let list = |n: usize| {
        let values = vec!["\"a\""; n].join(",");
        format!("identity.id in ({values})")
    };
    let ok = conn(&list(MAX_IN_VALUES));
    assert!(matches!(&ok, Ok(Expr::In { values, .. }) if values.len() == 100));
    assert_eq!(
        conn(&list(101)),
        Err(Error::TooManyValues {
            position: 16 + 100 * 4,
            max: 100
        })
    );
}

#[test]
fn too_many_terms() {
    let terms = |n: usize| vec!["type eq \"JIT\""; n].join(" or ");
    let ok = conn(&terms(MAX_TERMS)).expect("64 terms");
    assert_eq!(ok.term_count(), 64);
    assert_eq!(
        conn(&terms(65)),
        Err(Error::TooManyTerms {
            position: 64 * 17,
            max: 64
        })
    );
}

#[test]
fn empty() {
    for input in ["", " ", "\t \t"] {
        assert_eq!(conn(input), Err(Error::Empty), "{input:?}");
        assert_eq!(
            parse_sorters(input, ENTITLEMENT_CONNECTION_SORTERS),
            Err(Error::Empty),
            "{input:?}"
        );
    }
}

#[test]
fn messages_are_sentences() {
    let cases: Vec<(Result<Expr, Error>, &str)> = vec![
        (
            conn("type eq"),
            "The input ends too soon: expected a value (a quoted string, `true`, `false`, a number or a date-time) at position 7.",
        ),
        (
            conn("type EQ \"JIT\""),
            "Unexpected `EQ` at position 5: expected an operator for `type` (eq, in).",
        ),
        (
            conn("type co \"J\""),
            "Operator `co` is not allowed on field `type` at position 5; allowed: eq, in.",
        ),
        (
            conn("type eq \"x"),
            "The string starting at position 8 has no closing double quote.",
        ),
        (
            conn(r#"type eq "\x""#),
            r#"Invalid escape sequence at position 9: only \" and \\ may follow a backslash."#,
        ),
        (
            conn("standalone eq 1"),
            "Field `standalone` needs `true` or `false`; the value at position 14 is not one.",
        ),
        (
            conn("type eq \"x\""),
            "`x` at position 8 is not a valid value for `type`; expected one of JIT, STANDING, NA.",
        ),
        (
            conn("standalone eq null"),
            "The literal `null` at position 14 cannot be compared with `standalone`; use the `isnull` operator where the field supports it.",
        ),
        (conn(""), "The input is empty."),
    ];
    for (result, message) in cases {
        assert_eq!(result.map_err(|e| e.to_string()), Err(message.to_owned()));
    }
    let error = conn("jit.expiration gt 2026-04-01")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("Field `jit.expiration` needs an RFC 3339 date-time such as 2026-04-01T10:00:00Z; the value at position 18 is not one: "),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Sorters.

#[test]
fn sorters_valid() {
    let c = ENTITLEMENT_CONNECTION_SORTERS;
    assert_eq!(
        parse_sorters("-type,id", c),
        Ok(vec![
            Sort {
                field: "type",
                descending: true,
            },
            Sort {
                field: "id",
                descending: false,
            },
        ])
    );
    assert_eq!(
        parse_sorters(" jit.expiration ,\t-entitlement.displayName ", c),
        Ok(vec![
            Sort {
                field: "jit.expiration",
                descending: false,
            },
            Sort {
                field: "entitlement.displayName",
                descending: true,
            },
        ])
    );
    for field in c {
        assert_eq!(
            parse_sorters(&format!("-{field}"), c),
            Ok(vec![Sort {
                field,
                descending: true
            }])
        );
    }
    for field in ACTIVATION_HISTORY_SORTERS {
        assert_eq!(
            parse_sorters(field, ACTIVATION_HISTORY_SORTERS),
            Ok(vec![Sort {
                field,
                descending: false
            }])
        );
    }
    let eight = c.get(..MAX_SORTERS).unwrap_or_default().join(",");
    assert_eq!(parse_sorters(&eight, c).map(|s| s.len()), Ok(8));
    let sorts = parse_sorters("-type,id", c).unwrap_or_default();
    let shown: Vec<String> = sorts.iter().map(Sort::to_string).collect();
    assert_eq!(shown, ["-type", "id"]);
}

#[test]
fn sorters_invalid() {
    let c = ENTITLEMENT_CONNECTION_SORTERS;
    assert_eq!(
        parse_sorters("id,-colour", c),
        Err(Error::UnknownSortField {
            position: 4,
            field: "colour".to_owned(),
        })
    );
    assert!(matches!(
        parse_sorters("Type", c),
        Err(Error::UnknownSortField { position: 0, .. })
    ));
    assert!(matches!(
        parse_sorters("+type", c),
        Err(Error::UnknownSortField { position: 0, .. })
    ));
    assert!(matches!(
        parse_sorters("- type", c),
        Err(Error::UnknownSortField { position: 1, .. })
    ));
    assert!(matches!(
        parse_sorters("--type", c),
        Err(Error::UnknownSortField { position: 1, .. })
    ));
    assert!(matches!(
        parse_sorters("status", c),
        Err(Error::UnknownSortField { position: 0, .. })
    ));
    assert!(matches!(
        parse_sorters("type", ACTIVATION_HISTORY_SORTERS),
        Err(Error::UnknownSortField { position: 0, .. })
    ));
    assert_eq!(
        parse_sorters("id,type,-id", c),
        Err(Error::DuplicateSortField {
            position: 9,
            field: "id".to_owned(),
        })
    );
    for (input, at) in [
        ("id,,type", 3),
        (",id", 0),
        ("id,", 3),
        ("-", 0),
        ("id, - ,type", 4),
    ] {
        assert_eq!(
            parse_sorters(input, c),
            Err(Error::EmptySortItem { position: at }),
            "{input}"
        );
    }
    let nine = c.get(..MAX_SORTERS + 1).unwrap_or_default().join(",");
    let ninth = nine.rfind(',').map_or(0, |i| i + 1);
    assert_eq!(
        parse_sorters(&nine, c),
        Err(Error::TooManySorters {
            position: ninth,
            max: 8
        })
    );
    assert_eq!(
        parse_sorters("id,-colour", c).map_err(|e| e.to_string()),
        Err("Cannot sort by unknown field `colour` at position 4.".to_owned())
    );
}

#[test]
fn compare_sort_orders_by_each_key_with_nulls_first() {
    let t1 = ts("2026-04-01T10:00:00Z");
    let t2 = ts("2026-04-02T10:00:00Z");
    let a = Record::default()
        .text("type", "JIT")
        .text("id", "a")
        .with("jit.expiration", Owned::Timestamp(t1));
    let b = Record::default()
        .text("type", "JIT")
        .text("id", "b")
        .with("jit.expiration", Owned::Timestamp(t2));
    let none = Record::default().text("type", "NA").text("id", "c");
    let sorts = |s: &str| parse_sorters(s, ENTITLEMENT_CONNECTION_SORTERS).unwrap_or_default();

    assert_eq!(compare_sort(&a, &b, &sorts("id")), Ordering::Less);
    assert_eq!(compare_sort(&a, &b, &sorts("-id")), Ordering::Greater);
    assert_eq!(compare_sort(&a, &b, &sorts("type,-id")), Ordering::Greater);
    assert_eq!(compare_sort(&a, &b, &sorts("type")), Ordering::Equal);
    assert_eq!(compare_sort(&a, &b, &[]), Ordering::Equal);
    assert_eq!(
        compare_sort(&a, &b, &sorts("jit.expiration")),
        Ordering::Less
    );
    // Null first ascending, last descending.
    assert_eq!(
        compare_sort(&none, &a, &sorts("jit.expiration")),
        Ordering::Less
    );
    assert_eq!(
        compare_sort(&none, &a, &sorts("-jit.expiration")),
        Ordering::Greater
    );

    let mut records = [b.clone(), none.clone(), a.clone()];
    records.sort_by(|x, y| compare_sort(x, y, &sorts("-type,jit.expiration")));
    let ids: Vec<FieldValue<'_>> = records.iter().map(|r| r.field("id")).collect();
    assert_eq!(
        ids,
        [
            FieldValue::Text("c"),
            FieldValue::Text("a"),
            FieldValue::Text("b")
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Matching, operator by operator.

#[test]
fn matching_semantics_of_each_operator() {
    let t0 = Owned::Timestamp(ts("2026-04-01T10:00:00Z"));
    let rec = Record::default()
        .text("text", "Alice Smith")
        .with("flag", Owned::Bool(true))
        .with("at", t0)
        .text("colour", "GREEN");
    let empty = Record::default();
    let wrong_type = Record::default()
        .with("text", Owned::Bool(true))
        .text("flag", "true")
        .text("at", "2026-04-01T10:00:00Z");

    // (filter, on `rec`, on `empty` (all null), on `wrong_type`)
    let cases = [
        (r#"text eq "Alice Smith""#, true, false, false),
        (r#"text eq "alice smith""#, false, false, false),
        (r#"text ne "Alice Smith""#, false, true, true),
        (r#"text ne "Bob""#, true, true, true),
        (r#"text co "ce Sm""#, true, false, false),
        (r#"text co "CE""#, false, false, false),
        (r#"text co """#, true, false, false),
        (r#"text sw "Ali""#, true, false, false),
        (r#"text sw "Smith""#, false, false, false),
        (r#"text gt "Alice""#, true, false, false),
        (r#"text lt "Alice""#, false, false, false),
        (r#"text ge "Alice Smith""#, true, false, false),
        (r#"text le "Alice Smith""#, true, false, false),
        (r#"text in ("Bob", "Alice Smith")"#, true, false, false),
        (r#"text in ("Bob")"#, false, false, false),
        ("text isnull", false, true, false),
        ("flag eq true", true, false, false),
        ("flag eq false", false, false, false),
        ("flag ne false", true, true, true),
        ("flag in (false, true)", true, false, false),
        ("flag gt false", true, false, false),
        ("flag isnull", false, true, false),
        ("at eq 2026-04-01T12:00:00+02:00", true, false, false),
        ("at gt 2026-04-01T09:59:59.999Z", true, false, false),
        ("at gt 2026-04-01T10:00:00Z", false, false, false),
        ("at ge 2026-04-01T10:00:00Z", true, false, false),
        ("at lt 2026-04-01T10:00:00.001Z", true, false, false),
        ("at le 2026-04-01T09:00:00Z", false, false, false),
        ("at ne 2026-04-01T09:00:00Z", true, true, true),
        ("at isnull", false, true, false),
        (r#"colour eq "green""#, true, false, false),
        (r#"colour in ("red", "GREEN")"#, true, false, false),
        (r#"colour co "RE""#, true, false, false),
        (r#"colour co "re""#, false, false, false),
        (r#"colour sw "G""#, true, false, false),
        ("not text isnull", true, false, true),
        (r#"not text eq "Alice Smith""#, false, true, true),
        (r#"text isnull or flag eq true"#, true, true, false),
        (r#"text isnull and flag eq true"#, false, false, false),
    ];
    for (input, on_rec, on_empty, on_wrong) in cases {
        let expr = all_ops(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(expr.matches(&rec), on_rec, "{input} on rec");
        assert_eq!(expr.matches(&empty), on_empty, "{input} on empty");
        assert_eq!(
            expr.matches(&wrong_type),
            on_wrong,
            "{input} on wrong types"
        );
    }
}

#[test]
fn display_is_canonical() {
    for (input, canonical) in [
        (
            r#"type eq "jit" and (state.value in ("ACTIVE","EXPIRED") or not standalone eq true)"#,
            r#"type eq "JIT" and (state.value in ("ACTIVE", "EXPIRED") or not standalone eq true)"#,
        ),
        (
            "jit.expiration gt \"2026-04-01T12:00:00+02:00\"",
            "jit.expiration gt 2026-04-01T10:00:00.000Z",
        ),
        (
            r#"not (identity.id eq "a\"\\" or ((source.id eq "b")))"#,
            r#"not (identity.id eq "a\"\\" or source.id eq "b")"#,
        ),
        (
            r#"(identity.id eq "a" or source.id eq "b") or account.id eq "c""#,
            r#"(identity.id eq "a" or source.id eq "b") or account.id eq "c""#,
        ),
        (
            r#"identity.id eq "a" or (source.id eq "b" and account.id eq "c")"#,
            r#"identity.id eq "a" or source.id eq "b" and account.id eq "c""#,
        ),
        (r#"not not  type eq "NA""#, r#"not not type eq "NA""#),
    ] {
        let expr = conn(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(expr.to_string(), canonical);
        assert_eq!(conn(canonical), Ok(expr));
    }
    assert_eq!(
        all_ops("text isnull").map(|e| e.to_string()),
        Ok("text isnull".to_owned())
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// All the tables the properties draw fields from.
const TABLES: [&[FieldSpec]; 3] = [
    ENTITLEMENT_CONNECTION_FIELDS,
    ACTIVATION_HISTORY_FIELDS,
    TEST_FIELDS,
];

fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        (0..=Timestamp::MAX.as_millis()).prop_map(Timestamp::from_millis),
        // A few instants close together, so comparisons often tie.
        (0u64..4).prop_map(|i| Timestamp::from_millis(1_775_037_600_000 + i * 1000)),
    ]
    .prop_map(|t| t.unwrap_or(Timestamp::EPOCH))
}

/// A value for `spec` with operator `op`; text from `texts`.
fn value_for(
    spec: &'static FieldSpec,
    op: Op,
    texts: BoxedStrategy<String>,
) -> BoxedStrategy<Value> {
    match spec.ty {
        ValueType::Text => texts.prop_map(Value::Text).boxed(),
        ValueType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        ValueType::Timestamp => timestamp().prop_map(Value::Timestamp).boxed(),
        ValueType::Enum(values) if matches!(op, Op::Eq | Op::Ne | Op::In) => {
            proptest::sample::select(values)
                .prop_map(|v| Value::Text(v.to_owned()))
                .boxed()
        }
        ValueType::Enum(_) => texts.prop_map(Value::Text).boxed(),
    }
}

/// A valid comparison on a field of `table`.
fn leaf(table: &'static [FieldSpec], texts: BoxedStrategy<String>) -> BoxedStrategy<Expr> {
    proptest::sample::select(table)
        .prop_flat_map(|spec| (Just(spec), proptest::sample::select(spec.ops)))
        .prop_flat_map(move |(spec, op)| {
            let spec: &'static FieldSpec = find_field(table, spec.name).unwrap_or(&TEST_FIELDS[0]);
            match CmpOp::from_op(op) {
                Some(cmp_op) => value_for(spec, op, texts.clone())
                    .prop_map(move |value| Expr::Cmp {
                        field: spec.name,
                        op: cmp_op,
                        value,
                    })
                    .boxed(),
                None if op == Op::In => {
                    proptest::collection::vec(value_for(spec, op, texts.clone()), 1..5)
                        .prop_map(move |values| Expr::In {
                            field: spec.name,
                            values,
                        })
                        .boxed()
                }
                None => Just(Expr::IsNull { field: spec.name }).boxed(),
            }
        })
        .boxed()
}

/// A valid expression in the shape the parser produces (`And`/`Or` with two or more operands).
fn expr(table: &'static [FieldSpec], texts: BoxedStrategy<String>) -> impl Strategy<Value = Expr> {
    leaf(table, texts)
        .prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
                inner.prop_map(|e| Expr::Not(Box::new(e))),
            ]
        })
        .prop_filter("within the term bound", |e| e.term_count() <= MAX_TERMS)
}

fn any_table() -> impl Strategy<Value = &'static [FieldSpec]> {
    proptest::sample::select(&TABLES[..])
}

/// Checks what every parse result must satisfy: errors point inside the input and say
/// something; successes re-parse from their `Display` to the same tree.
fn check_result(input: &str, table: &'static [FieldSpec], result: Result<Expr, Error>) {
    match result {
        Ok(expr) => {
            assert!(expr.term_count() <= MAX_TERMS);
            let shown = expr.to_string();
            assert_eq!(
                parse_filter(&shown, table),
                Ok(expr),
                "{input:?} -> {shown:?}"
            );
        }
        Err(error) => {
            if let Some(at) = position(&error) {
                assert!(at <= input.len(), "{input:?}: {error:?}");
            }
            let message = error.to_string();
            assert!(message.len() > 10, "{message}");
        }
    }
}

/// Pieces that make mutations likely to reach deep into the grammar.
const PIECES: &[&str] = &[
    "(",
    ")",
    "\"",
    "\\",
    ",",
    " ",
    "\t",
    "\n",
    "not ",
    " and ",
    " or ",
    "eq",
    "in",
    "co",
    "isnull",
    "null",
    "true",
    "-",
    "1",
    "2026-04-01T10:00:00Z",
    "é",
    "✓",
    ".",
    "type",
    "ZZ",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..8).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<usize>(), proptest::sample::select(PIECES))
            .prop_map(|(at, piece)| Mutation::Insert(at, piece)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..30).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
    ]
}

/// The char boundary nearest below `at % (len + 1)`.
fn boundary(s: &str, at: usize) -> usize {
    let mut at = at % (s.len() + 1);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn mutate(mut s: String, mutations: &[Mutation]) -> String {
    for m in mutations {
        match *m {
            Mutation::Delete(at, n) => {
                let start = boundary(&s, at);
                let end = boundary(&s, start.saturating_add(n).min(s.len()));
                s.replace_range(start..end.max(start), "");
            }
            Mutation::Insert(at, piece) => {
                let at = boundary(&s, at);
                s.insert_str(at, piece);
            }
            Mutation::Truncate(at) => {
                let at = boundary(&s, at);
                s.truncate(at);
            }
            Mutation::Duplicate(at, n) => {
                let start = boundary(&s, at);
                let end = boundary(&s, start.saturating_add(n).min(s.len()));
                let copy = s.get(start..end).unwrap_or_default().to_owned();
                s.insert_str(end, &copy);
            }
        }
    }
    s
}

/// Small text, so that generated comparisons and records often agree.
fn small_text() -> BoxedStrategy<String> {
    prop_oneof![
        "[ab]{0,3}",
        proptest::sample::select(&["ACTIVE", "JIT", "Red", "GREEN", "ACT"][..])
            .prop_map(str::to_owned),
    ]
    .boxed()
}

/// Any text at all, to stress quoting.
fn any_text() -> BoxedStrategy<String> {
    prop_oneof![any::<String>(), "[\"\\\\ a(),]{0,8}"].boxed()
}

/// A random record over the fields of `table`: each field null, of its type, or of another
/// type.
fn record(table: &'static [FieldSpec]) -> impl Strategy<Value = Record> {
    let field = |spec: &'static FieldSpec| {
        let typed = match spec.ty {
            ValueType::Text | ValueType::Enum(_) => small_text().prop_map(Owned::Text).boxed(),
            ValueType::Bool => any::<bool>().prop_map(Owned::Bool).boxed(),
            ValueType::Timestamp => timestamp().prop_map(Owned::Timestamp).boxed(),
        };
        prop_oneof![
            1 => Just(None),
            4 => typed.prop_map(Some),
            1 => prop_oneof![
                small_text().prop_map(Owned::Text),
                any::<bool>().prop_map(Owned::Bool),
                timestamp().prop_map(Owned::Timestamp),
            ]
            .prop_map(Some),
        ]
        .prop_map(move |value| (spec.name, value))
    };
    table
        .iter()
        .map(field)
        .collect::<Vec<_>>()
        .prop_map(|pairs| {
            Record(
                pairs
                    .into_iter()
                    .filter_map(|(name, value)| value.map(|v| (name, v)))
                    .collect(),
            )
        })
}

/// The reference semantics, written from the module documentation without sharing code.
fn reference(expr: &Expr, record: &Record) -> bool {
    fn same(actual: Option<&Owned>, value: &Value) -> bool {
        match (actual, value) {
            (Some(Owned::Text(a)), Value::Text(b)) => a == b,
            (Some(Owned::Bool(a)), Value::Bool(b)) => a == b,
            (Some(Owned::Timestamp(a)), Value::Timestamp(b)) => a == b,
            _ => false,
        }
    }
    fn order(actual: Option<&Owned>, value: &Value) -> Option<Ordering> {
        match (actual, value) {
            (Some(Owned::Text(a)), Value::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Some(Owned::Bool(a)), Value::Bool(b)) => Some((*a as u8).cmp(&(*b as u8))),
            (Some(Owned::Timestamp(a)), Value::Timestamp(b)) => {
                Some(a.as_millis().cmp(&b.as_millis()))
            }
            _ => None,
        }
    }
    match expr {
        Expr::And(operands) => {
            let mut all = true;
            for operand in operands {
                all &= reference(operand, record);
            }
            all
        }
        Expr::Or(operands) => {
            let mut any = false;
            for operand in operands {
                any |= reference(operand, record);
            }
            any
        }
        Expr::Not(operand) => !reference(operand, record),
        Expr::IsNull { field } => !record.0.contains_key(field),
        Expr::In { field, values } => {
            let actual = record.0.get(field);
            values.iter().filter(|v| same(actual, v)).count() > 0
        }
        Expr::Cmp { field, op, value } => {
            let actual = record.0.get(field);
            let text = match (actual, value) {
                (Some(Owned::Text(a)), Value::Text(b)) => Some((a.as_str(), b.as_str())),
                _ => None,
            };
            match op {
                CmpOp::Eq => same(actual, value),
                CmpOp::Ne => !same(actual, value),
                CmpOp::Co => text.is_some_and(|(a, b)| a.contains(b)),
                CmpOp::Sw => text.is_some_and(|(a, b)| a.get(..b.len()) == Some(b)),
                CmpOp::Gt => order(actual, value) == Some(Ordering::Greater),
                CmpOp::Lt => order(actual, value) == Some(Ordering::Less),
                CmpOp::Ge => order(actual, value).is_some_and(|o| o != Ordering::Less),
                CmpOp::Le => order(actual, value).is_some_and(|o| o != Ordering::Greater),
            }
        }
    }
}

fn table_and_expr(
    texts: fn() -> BoxedStrategy<String>,
) -> impl Strategy<Value = (&'static [FieldSpec], Expr)> {
    any_table().prop_flat_map(move |table| (Just(table), expr(table, texts())))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_unicode_never_panics(input in any::<String>(), table in any_table()) {
        let result = parse_filter(&input, table);
        check_result(&input, table, result);
        let _ = parse_sorters(&input, ENTITLEMENT_CONNECTION_SORTERS);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), table in any_table()) {
        let input = String::from_utf8_lossy(&bytes);
        let result = parse_filter(&input, table);
        check_result(&input, table, result);
        let _ = parse_sorters(&input, ACTIVATION_HISTORY_SORTERS);
    }

    #[test]
    fn grammar_soup_never_panics(
        input in "[a-zA-Z.()\",\\\\ \t0-9:+-]{0,120}",
        table in any_table(),
    ) {
        let result = parse_filter(&input, table);
        check_result(&input, table, result);
    }

    #[test]
    fn any_timestamp_literal_is_parsed_or_refused(
        quoted in any::<String>(),
        bare in "-?[0-9][0-9A-Za-z:.+-]{0,40}",
    ) {
        let quoted = quoted.replace(['"', '\\'], "");
        for input in [format!("jit.expiration gt \"{quoted}\""), format!("jit.expiration lt {bare}")] {
            match conn(&input) {
                Ok(Expr::Cmp { value: Value::Timestamp(t), .. }) => {
                    prop_assert!(t <= Timestamp::MAX);
                }
                Ok(other) => prop_assert!(false, "{input}: {other:?}"),
                Err(error) => prop_assert!(
                    matches!(error, Error::BadTimestamp { position: 18, .. } | Error::WrongValueType { position: 18, .. }),
                    "{input}: {error:?}"
                ),
            }
        }
    }

    #[test]
    fn mutated_valid_filters_never_panic(
        (table, expr) in table_and_expr(any_text),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let input = mutate(expr.to_string(), &mutations);
        let result = parse_filter(&input, table);
        check_result(&input, table, result);
    }

    #[test]
    fn mutated_sorters_never_panic(
        keys in proptest::sample::subsequence(ENTITLEMENT_CONNECTION_SORTERS, 0..10),
        descending in proptest::collection::vec(any::<bool>(), 10),
        mutations in proptest::collection::vec(mutation(), 0..4),
    ) {
        let text = keys
            .iter()
            .zip(&descending)
            .map(|(k, d)| if *d { format!("-{k}") } else { (*k).to_owned() })
            .collect::<Vec<_>>()
            .join(",");
        let input = mutate(text, &mutations);
        match parse_sorters(&input, ENTITLEMENT_CONNECTION_SORTERS) {
            Ok(sorts) => {
                prop_assert!(!sorts.is_empty() && sorts.len() <= MAX_SORTERS);
                let shown = sorts.iter().map(Sort::to_string).collect::<Vec<_>>().join(",");
                prop_assert_eq!(parse_sorters(&shown, ENTITLEMENT_CONNECTION_SORTERS), Ok(sorts));
            }
            Err(error) => {
                if let Some(at) = position(&error) {
                    prop_assert!(at <= input.len());
                }
            }
        }
    }

    #[test]
    fn display_round_trips((table, expr) in table_and_expr(any_text)) {
        let shown = expr.to_string();
        prop_assert_eq!(parse_filter(&shown, table), Ok(expr), "{}", shown);
    }

    #[test]
    fn matches_agrees_with_the_reference(
        (_table, expr, records) in table_and_expr(small_text).prop_flat_map(|(table, expr)| {
            (Just(table), Just(expr), proptest::collection::vec(record(table), 8))
        }),
    ) {
        for record in &records {
            prop_assert_eq!(expr.matches(record), reference(&expr, record), "{} on {:?}", expr, record);
        }
    }

    #[test]
    fn compare_sort_is_a_total_order(
        records in proptest::collection::vec(record(ENTITLEMENT_CONNECTION_FIELDS), 2..8),
        keys in proptest::sample::subsequence(&["type", "standalone", "jit.expiration", "identity.id"][..], 1..4),
        descending in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let sorts: Vec<Sort> = keys
            .iter()
            .zip(&descending)
            .map(|(field, d)| Sort { field, descending: *d })
            .collect();
        for a in &records {
            prop_assert_eq!(compare_sort(a, a, &sorts), Ordering::Equal);
            for b in &records {
                prop_assert_eq!(compare_sort(a, b, &sorts), compare_sort(b, a, &sorts).reverse());
            }
        }
        let mut sorted = records.clone();
        sorted.sort_by(|a, b| compare_sort(a, b, &sorts));
        for pair in sorted.windows(2) {
            if let [a, b] = pair {
                prop_assert_ne!(compare_sort(a, b, &sorts), Ordering::Greater);
            }
        }
    }
}
