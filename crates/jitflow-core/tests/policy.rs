//! Policy validation, the replace-only patch and the audit diff.

use jitflow_core::id::EntitlementId;
use jitflow_core::policy::{
    Error, FieldChange, MAX_ENTITLEMENTS, MAX_PATCH_OPS, MAX_PERIOD_MINS, MAX_RECIPIENTS,
    MAX_TEMPLATE_LEN, MissingAccessAction, PatchOp, PatchPath, PatchValue, Policy,
};
use jitflow_core::time::Minutes;
use proptest::prelude::*;

const ID: &str = "6d38a587-302a-41d1-a3b1-ffae2c25c960";

fn op(path: &str, value: PatchValue) -> PatchOp {
    PatchOp {
        op: None,
        path: path.to_owned(),
        value,
    }
}

fn int(n: i64) -> PatchValue {
    PatchValue::Int(n)
}

fn text(s: &str) -> PatchValue {
    PatchValue::Text(s.to_owned())
}

fn list(items: &[&str]) -> PatchValue {
    PatchValue::TextList(items.iter().map(|s| (*s).to_owned()).collect())
}

fn other(name: &str) -> PatchValue {
    PatchValue::Other(name.to_owned())
}

/// The contract's example policy, stored a few times already.
fn example() -> Policy {
    Policy {
        id: ID.to_owned(),
        entitlement_ids: vec![
            EntitlementId::parse("ae735f40-4de9-4163-801d-4a1444e59d35").unwrap(),
            EntitlementId::parse("38439bbc-264b-447b-acac-a182a466b0e9").unwrap(),
        ],
        max_activation_period: Some(Minutes(120)),
        max_extension: Some(Minutes(30)),
        default_activation_period: Some(Minutes(60)),
        default_extension: Some(Minutes(15)),
        notification_recipients: vec!["owner@example.com".to_owned()],
        notification_template: Some("jit-activation-default".to_owned()),
        apply_to_future_assignments: true,
        version: 7,
        expiry_warning: None,
        on_missing_access: MissingAccessAction::Report,
    }
}

fn empty() -> Policy {
    Policy::empty(ID.to_owned())
}

/// Patches `base` with one op, checking the all-or-nothing contract on the way.
fn patch_one(base: &Policy, path: &str, value: PatchValue) -> Result<Policy, Error> {
    patch(base, &[op(path, value)])
}

fn patch(base: &Policy, ops: &[PatchOp]) -> Result<Policy, Error> {
    let before = base.clone();
    let result = base.patched(ops);
    assert_eq!(*base, before, "patched changed its receiver");
    if let Ok(next) = &result {
        assert_eq!(next.version, base.version + 1);
        assert_eq!(next.id, base.id);
        assert_eq!(next.validate(), Ok(()));
    }
    result
}

#[derive(Debug)]
enum Expect {
    /// Accepted; the field then reads back as the value given.
    Set,
    /// Refused with `WrongValueType` naming this JSON type.
    WrongType(&'static str),
    /// Refused with `InvalidValue`.
    Invalid,
    /// Refused by the whole-policy validation with this error.
    Whole(fn(&Error) -> bool),
}

fn run_table(base: &Policy, path: PatchPath, cases: Vec<(PatchValue, Expect)>) {
    for (value, expect) in cases {
        let label = format!("{path} <- {value:?}");
        let result = patch_one(base, path.as_str(), value.clone());
        match (expect, result) {
            (Expect::Set, Ok(next)) => assert_eq!(next.value_at(path), value, "{label}"),
            (Expect::WrongType(found), Err(e)) => assert_eq!(
                e,
                Error::WrongValueType {
                    index: 0,
                    path,
                    expected: path.expected(),
                    found: found.to_owned(),
                },
                "{label}"
            ),
            (Expect::Invalid, Err(Error::InvalidValue { index, path: p, .. })) => {
                assert_eq!((index, p), (0, path), "{label}");
            }
            (Expect::Whole(check), Err(e)) => assert!(check(&e), "{label}: {e:?}"),
            (expect, result) => panic!("{label}: expected {expect:?}, got {result:?}"),
        }
    }
}

#[test]
fn minute_paths_take_integers_in_range_or_null() {
    for path in [
        PatchPath::MaxActivationPeriodMins,
        PatchPath::MaxActivationPeriodExtensionMins,
        PatchPath::DefaultMaxActivationPeriodMins,
        PatchPath::DefaultMaxActivationPeriodExtensionMins,
    ] {
        run_table(
            &empty(),
            path,
            vec![
                (int(1), Expect::Set),
                (int(60), Expect::Set),
                (int(i64::from(MAX_PERIOD_MINS)), Expect::Set),
                (PatchValue::Null, Expect::Set),
                (int(0), Expect::Invalid),
                (int(-1), Expect::Invalid),
                (int(i64::from(MAX_PERIOD_MINS) + 1), Expect::Invalid),
                (int(i64::from(u32::MAX) + 1), Expect::Invalid),
                (int(i64::MAX), Expect::Invalid),
                (int(i64::MIN), Expect::Invalid),
                (text("60"), Expect::WrongType("string")),
                (PatchValue::Bool(true), Expect::WrongType("boolean")),
                (list(&["60"]), Expect::WrongType("array")),
                (other("number"), Expect::WrongType("number")),
                (other("object"), Expect::WrongType("object")),
            ],
        );
    }
}

#[test]
fn null_clears_a_minute_field() {
    let next = patch_one(
        &example(),
        "/defaultMaxActivationPeriodMins",
        PatchValue::Null,
    )
    .unwrap();
    assert_eq!(next.default_activation_period, None);
    // Clearing a maximum lifts the bound on its default.
    let next = patch(
        &example(),
        &[
            op("/maxActivationPeriodMins", PatchValue::Null),
            op("/defaultMaxActivationPeriodMins", int(1000)),
        ],
    )
    .unwrap();
    assert_eq!(next.max_activation_period, None);
    assert_eq!(next.default_activation_period, Some(Minutes(1000)));
}

#[test]
fn entitlement_ids_take_an_array_of_valid_ids() {
    run_table(
        &example(),
        PatchPath::EntitlementIds,
        vec![
            (
                list(&[
                    "ae735f40-4de9-4163-801d-4a1444e59d35",
                    "2c9180837dfe6949017e208e25967b22",
                ]),
                Expect::Set,
            ),
            (list(&["only-one"]), Expect::Set),
            (list(&[]), Expect::Set),
            (list(&["bad id"]), Expect::Invalid),
            (list(&["fine", ""]), Expect::Invalid),
            (list(&[&"x".repeat(129)]), Expect::Invalid),
            (PatchValue::Null, Expect::WrongType("null")),
            (
                text("ae735f40-4de9-4163-801d-4a1444e59d35"),
                Expect::WrongType("string"),
            ),
            (int(1), Expect::WrongType("integer")),
            (PatchValue::Bool(false), Expect::WrongType("boolean")),
            (other("array"), Expect::WrongType("array")),
            (
                list(&["dup", "other", "dup"]),
                Expect::Whole(|e| {
                    *e == Error::Duplicate {
                        field: PatchPath::EntitlementIds,
                        value: "dup".to_owned(),
                    }
                }),
            ),
        ],
    );
}

#[test]
fn invalid_entitlement_id_is_named() {
    let err = patch_one(&empty(), "/entitlementIds", list(&["ok", "not ok"])).unwrap_err();
    let Error::InvalidValue { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("`not ok`"), "{reason}");
    assert!(err.to_string().starts_with("operation 0: "), "{err}");
}

#[test]
fn entitlement_count_is_bounded() {
    let ids: Vec<String> = (0..=MAX_ENTITLEMENTS).map(|i| format!("ent-{i}")).collect();
    let at_max = PatchValue::TextList(ids[..MAX_ENTITLEMENTS].to_vec());
    let next = patch_one(&empty(), "/entitlementIds", at_max).unwrap();
    assert_eq!(next.entitlement_ids.len(), MAX_ENTITLEMENTS);
    assert!(next.governs(&EntitlementId::parse("ent-999").unwrap()));
    assert_eq!(
        patch_one(&empty(), "/entitlementIds", PatchValue::TextList(ids)),
        Err(Error::TooMany {
            field: PatchPath::EntitlementIds,
            len: MAX_ENTITLEMENTS + 1,
            max: MAX_ENTITLEMENTS,
        })
    );
}

#[test]
fn recipients_take_an_array_of_strings() {
    run_table(
        &example(),
        PatchPath::NotificationRecipients,
        vec![
            (list(&["a@example.com", "b@example.org"]), Expect::Set),
            (list(&[]), Expect::Set),
            (PatchValue::Null, Expect::WrongType("null")),
            (text("a@example.com"), Expect::WrongType("string")),
            (int(3), Expect::WrongType("integer")),
            (PatchValue::Bool(true), Expect::WrongType("boolean")),
            (other("array"), Expect::WrongType("array")),
            (
                list(&["not-an-address"]),
                Expect::Whole(|e| matches!(e, Error::BadEmail { .. })),
            ),
        ],
    );
}

#[test]
fn template_takes_a_string_or_null() {
    let max = "t".repeat(MAX_TEMPLATE_LEN);
    let too_long = "t".repeat(MAX_TEMPLATE_LEN + 1);
    // Counted in bytes: 64 two-byte characters fill the bound exactly, 65 exceed it.
    let wide_max = "é".repeat(MAX_TEMPLATE_LEN / 2);
    let wide_too_long = "é".repeat(MAX_TEMPLATE_LEN / 2 + 1);
    let bad_template = |e: &Error| matches!(e, Error::BadTemplate { .. });
    run_table(
        &example(),
        PatchPath::NotificationTemplate,
        vec![
            (text("jit-activation-default"), Expect::Set),
            (text("Approval needed (JIT) v2"), Expect::Set),
            (text(&max), Expect::Set),
            (text(&wide_max), Expect::Set),
            (PatchValue::Null, Expect::Set),
            (text(""), Expect::Whole(bad_template)),
            (text(&too_long), Expect::Whole(bad_template)),
            (text(&wide_too_long), Expect::Whole(bad_template)),
            (text("line\nbreak"), Expect::Whole(bad_template)),
            (text("tab\there"), Expect::Whole(bad_template)),
            (text("nul\0"), Expect::Whole(bad_template)),
            (text("sep\u{2028}arator"), Expect::Whole(bad_template)),
            (list(&["x"]), Expect::WrongType("array")),
            (PatchValue::Bool(false), Expect::WrongType("boolean")),
            (int(5), Expect::WrongType("integer")),
            (other("object"), Expect::WrongType("object")),
        ],
    );
}

#[test]
fn apply_to_future_assignments_takes_a_boolean_only() {
    run_table(
        &example(),
        PatchPath::ApplyToFutureAssignments,
        vec![
            (PatchValue::Bool(false), Expect::Set),
            (PatchValue::Bool(true), Expect::Set),
            (PatchValue::Null, Expect::WrongType("null")),
            (text("true"), Expect::WrongType("string")),
            (int(1), Expect::WrongType("integer")),
            (list(&[]), Expect::WrongType("array")),
            (other("object"), Expect::WrongType("object")),
        ],
    );
}

/// The missing-access action (a jitflow extension) takes one of its three names, exactly.
#[test]
fn on_missing_access_takes_one_of_its_names() {
    run_table(
        &example(),
        PatchPath::OnMissingAccess,
        vec![
            (text("GRANT_AGAIN"), Expect::Set),
            (text("END_ACTIVATION"), Expect::Set),
            (text("REPORT"), Expect::Set),
            (text("report"), Expect::Invalid),
            (text("REVOKE"), Expect::Invalid),
            (text(""), Expect::Invalid),
            (PatchValue::Null, Expect::WrongType("null")),
            (PatchValue::Bool(true), Expect::WrongType("boolean")),
            (int(1), Expect::WrongType("integer")),
            (list(&["REPORT"]), Expect::WrongType("array")),
        ],
    );
    let granted = patch_one(&example(), "/jitflowOnMissingAccess", text("GRANT_AGAIN")).unwrap();
    assert_eq!(granted.on_missing_access, MissingAccessAction::GrantAgain);
    assert_eq!(
        example().diff(&granted),
        [FieldChange {
            path: PatchPath::OnMissingAccess,
            old: text("REPORT"),
            new: text("GRANT_AGAIN"),
        }]
    );
    for action in MissingAccessAction::ALL {
        assert_eq!(MissingAccessAction::parse(action.as_str()), Some(action));
    }
    assert_eq!(
        Policy::empty(ID.to_owned()).on_missing_access,
        MissingAccessAction::Report
    );
}

#[test]
fn wrong_type_message_names_op_path_and_types() {
    let ops = [
        op("/applyToFutureAssignments", PatchValue::Bool(true)),
        op("/maxActivationPeriodMins", int(10)),
        op("/notificationTemplate", other("object")),
    ];
    let err = patch(&example(), &ops).unwrap_err();
    assert_eq!(
        err.to_string(),
        "operation 2: `/notificationTemplate` takes a string or null, but the value given is of \
         type object"
    );
}

#[test]
fn empty_patch_is_refused() {
    assert_eq!(patch(&example(), &[]), Err(Error::EmptyPatch));
}

#[test]
fn patch_size_is_bounded() {
    let ops = vec![op("/maxActivationPeriodMins", int(100)); MAX_PATCH_OPS];
    assert!(patch(&example(), &ops).is_ok());
    let ops = vec![op("/maxActivationPeriodMins", int(100)); MAX_PATCH_OPS + 1];
    assert_eq!(
        patch(&example(), &ops),
        Err(Error::TooManyOps {
            len: MAX_PATCH_OPS + 1,
            max: MAX_PATCH_OPS,
        })
    );
}

#[test]
fn only_replace_is_supported() {
    for (name, ok) in [
        (None, true),
        (Some("replace"), true),
        (Some("Replace"), false),
        (Some("REPLACE"), false),
        (Some("add"), false),
        (Some("remove"), false),
        (Some(""), false),
        (Some(" replace"), false),
    ] {
        let ops = [
            op("/applyToFutureAssignments", PatchValue::Bool(false)),
            PatchOp {
                op: name.map(str::to_owned),
                path: "/maxActivationPeriodMins".to_owned(),
                value: int(90),
            },
        ];
        let result = patch(&example(), &ops);
        if ok {
            assert_eq!(result.unwrap().max_activation_period, Some(Minutes(90)));
        } else {
            assert_eq!(
                result,
                Err(Error::UnsupportedOp {
                    index: 1,
                    op: name.unwrap_or_default().to_owned(),
                }),
                "{name:?}"
            );
        }
    }
}

#[test]
fn unknown_paths_are_refused() {
    for path in [
        "/foo",
        "",
        "/",
        "maxActivationPeriodMins",
        "/MaxActivationPeriodMins",
        "/maxActivationPeriodMins/",
        "/id",
        "/version",
        "/entitlementIds/0",
        "/entitlementIds/-",
    ] {
        let ops = [
            op("/maxActivationPeriodMins", int(100)),
            op("/notificationTemplate", PatchValue::Null),
            op(path, int(5)),
        ];
        let err = patch(&example(), &ops).unwrap_err();
        assert_eq!(
            err,
            Error::UnknownPath {
                index: 2,
                path: path.to_owned(),
            }
        );
        let message = err.to_string();
        assert!(message.starts_with("operation 2: path `"), "{message}");
        assert!(
            message.contains("is not one of `/entitlementIds`"),
            "{message}"
        );
    }
}

#[test]
fn unknown_path_error_quotes_a_bounded_path() {
    let long = "/x".repeat(10_000);
    let Err(Error::UnknownPath { path, .. }) = patch_one(&example(), &long, int(1)) else {
        panic!("expected UnknownPath");
    };
    assert_eq!(path.chars().count(), 64);
}

#[test]
fn paths_round_trip() {
    for path in PatchPath::ALL {
        assert_eq!(PatchPath::parse(path.as_str()), Some(path));
        assert_eq!(path.to_string(), path.as_str());
    }
    assert_eq!(PatchPath::parse("/notificationtemplate"), None);
}

#[test]
fn the_first_failing_op_is_reported() {
    let ops = [op("/maxActivationPeriodMins", int(0)), op("/bogus", int(1))];
    assert!(matches!(
        patch(&example(), &ops),
        Err(Error::InvalidValue { index: 0, .. })
    ));
}

#[test]
fn default_above_max_after_a_single_field_patch() {
    let base = example(); // max 120 / default 60, max ext 30 / default ext 15
    assert_eq!(
        patch_one(&base, "/defaultMaxActivationPeriodMins", int(121)),
        Err(Error::DefaultExceedsMax {
            field: PatchPath::DefaultMaxActivationPeriodMins,
            default: 121,
            max: 120,
        })
    );
    assert_eq!(
        patch_one(&base, "/maxActivationPeriodMins", int(59)),
        Err(Error::DefaultExceedsMax {
            field: PatchPath::DefaultMaxActivationPeriodMins,
            default: 60,
            max: 59,
        })
    );
    assert_eq!(
        patch_one(&base, "/defaultMaxActivationPeriodExtensionMins", int(31)),
        Err(Error::DefaultExceedsMax {
            field: PatchPath::DefaultMaxActivationPeriodExtensionMins,
            default: 31,
            max: 30,
        })
    );
    let err = patch_one(&base, "/maxActivationPeriodExtensionMins", int(14)).unwrap_err();
    assert_eq!(
        err,
        Error::DefaultExceedsMax {
            field: PatchPath::DefaultMaxActivationPeriodExtensionMins,
            default: 15,
            max: 14,
        }
    );
    assert_eq!(
        err.to_string(),
        "`/defaultMaxActivationPeriodExtensionMins` is 15 minutes, longer than \
         `/maxActivationPeriodExtensionMins` (14 minutes)"
    );
    // Equal is fine.
    assert!(patch_one(&base, "/defaultMaxActivationPeriodMins", int(120)).is_ok());
    assert!(patch_one(&base, "/maxActivationPeriodExtensionMins", int(15)).is_ok());
    // A default with no maximum set is unbounded but for MAX_PERIOD_MINS.
    assert!(patch_one(&empty(), "/defaultMaxActivationPeriodMins", int(500_000)).is_ok());
}

#[test]
fn only_the_result_is_validated_not_intermediate_states() {
    // Raising the default first breaks default <= max until the second op lands.
    let next = patch(
        &example(),
        &[
            op("/defaultMaxActivationPeriodMins", int(300)),
            op("/maxActivationPeriodMins", int(400)),
        ],
    )
    .unwrap();
    assert_eq!(next.default_activation_period, Some(Minutes(300)));
    assert_eq!(next.max_activation_period, Some(Minutes(400)));
}

#[test]
fn later_ops_on_the_same_path_win() {
    let next = patch(
        &example(),
        &[
            op("/maxActivationPeriodMins", int(100)),
            op("/notificationTemplate", text("first")),
            op("/maxActivationPeriodMins", int(200)),
            op("/notificationTemplate", PatchValue::Null),
            op("/entitlementIds", list(&["a"])),
            op("/entitlementIds", list(&["b", "c"])),
        ],
    )
    .unwrap();
    assert_eq!(next.max_activation_period, Some(Minutes(200)));
    assert_eq!(next.notification_template, None);
    assert_eq!(next.value_at(PatchPath::EntitlementIds), list(&["b", "c"]));
    // A later valid value does not excuse an earlier invalid one.
    assert!(matches!(
        patch(
            &example(),
            &[
                op("/maxActivationPeriodMins", int(0)),
                op("/maxActivationPeriodMins", int(200)),
            ],
        ),
        Err(Error::InvalidValue { index: 0, .. })
    ));
}

#[test]
fn failed_patch_leaves_the_original_and_success_bumps_version_by_one() {
    let base = example();
    let copy = base.clone();
    let result = base.patched(&[
        op("/applyToFutureAssignments", PatchValue::Bool(false)),
        op("/notificationRecipients", list(&["new@example.com"])),
        op("/maxActivationPeriodMins", int(10)), // below the default of 60
    ]);
    assert!(matches!(result, Err(Error::DefaultExceedsMax { .. })));
    assert_eq!(base, copy);

    let next = base
        .patched(&[op("/applyToFutureAssignments", PatchValue::Bool(false))])
        .unwrap();
    assert_eq!(next.version, 8);
    assert!(!next.apply_to_future_assignments);
    let again = next
        .patched(&[op("/applyToFutureAssignments", PatchValue::Bool(false))])
        .unwrap();
    // A no-op replace is still a stored change.
    assert_eq!(again.version, 9);
    assert_eq!(base, copy);
}

#[test]
fn version_cannot_wrap() {
    let mut base = example();
    base.version = u64::MAX;
    assert_eq!(
        base.patched(&[op("/applyToFutureAssignments", PatchValue::Bool(false))]),
        Err(Error::VersionExhausted)
    );
}

#[test]
fn email_validation() {
    let local64 = "a".repeat(64);
    let len254 = format!(
        "{local64}@{}.{}.{}.com",
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(57)
    );
    assert_eq!(len254.len(), 254);
    let len255 = format!(
        "{local64}@{}.{}.{}.com",
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(58)
    );
    let valid = [
        "owner@example.com",
        "first.last+tag@sub.example.co.uk",
        "o'brien@example.org",
        "UPPER@EXAMPLE.COM",
        "x@a-b.example",
        "1@2.3",
        "!#$%&'*+/=?^_`{|}~-@example.com",
        &format!("{local64}@example.com"),
        &len254,
    ];
    for address in valid {
        assert!(
            patch_one(&example(), "/notificationRecipients", list(&[address])).is_ok(),
            "{address} should be accepted"
        );
    }
    let invalid = [
        "",
        "plain",
        "a@b",
        "@example.com",
        "a@",
        "a@@example.com",
        "a@b@example.com",
        "a b@example.com",
        " a@example.com",
        "a@example.com ",
        "a@example.com\n",
        "a@exa mple.com",
        "a\t@example.com",
        "a@example..com",
        "a@.example.com",
        "a@example.com.",
        "a@-example.com",
        "a@example-.com",
        "a@exam_ple.com",
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "a,b@example.com",
        "a<b@example.com",
        "\"a b\"@example.com",
        "a@[127.0.0.1]",
        "ä@example.com",
        "a@exämple.com",
        "a\0@example.com",
        &format!("{local64}a@example.com"),
        &format!("a@{}.com", "b".repeat(64)),
        &len255,
    ];
    for address in invalid {
        let err = patch_one(&example(), "/notificationRecipients", list(&[address])).unwrap_err();
        assert!(
            matches!(&err, Error::BadEmail { .. }),
            "{address:?} should be refused, got {err:?}"
        );
    }
    let err = patch_one(
        &example(),
        "/notificationRecipients",
        list(&["ok@example.com", "nope"]),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`nope` in `/notificationRecipients` is not a valid email address: it has no `@`"
    );
}

#[test]
fn duplicate_recipients_ignore_case() {
    assert_eq!(
        patch_one(
            &example(),
            "/notificationRecipients",
            list(&[
                "Owner@Example.com",
                "other@example.com",
                "owner@example.COM"
            ]),
        ),
        Err(Error::Duplicate {
            field: PatchPath::NotificationRecipients,
            value: "owner@example.COM".to_owned(),
        })
    );
}

#[test]
fn recipient_count_is_bounded() {
    let addresses: Vec<String> = (0..=MAX_RECIPIENTS)
        .map(|i| format!("user{i}@example.com"))
        .collect();
    let at_max = PatchValue::TextList(addresses[..MAX_RECIPIENTS].to_vec());
    assert!(patch_one(&example(), "/notificationRecipients", at_max).is_ok());
    assert_eq!(
        patch_one(
            &example(),
            "/notificationRecipients",
            PatchValue::TextList(addresses)
        ),
        Err(Error::TooMany {
            field: PatchPath::NotificationRecipients,
            len: MAX_RECIPIENTS + 1,
            max: MAX_RECIPIENTS,
        })
    );
}

#[test]
fn validate_checks_policies_built_by_hand() {
    assert_eq!(example().validate(), Ok(()));
    assert_eq!(empty().validate(), Ok(()));
    for id in [
        "",
        "not-a-uuid",
        "6D38A587-302A-41D1-A3B1-FFAE2C25C960",
        "6d38a587302a41d1a3b1ffae2c25c960",
        "{6d38a587-302a-41d1-a3b1-ffae2c25c960}",
        "urn:uuid:6d38a587-302a-41d1-a3b1-ffae2c25c960",
        " 6d38a587-302a-41d1-a3b1-ffae2c25c960",
    ] {
        let policy = Policy::empty(id.to_owned());
        assert_eq!(
            policy.validate(),
            Err(Error::BadId {
                value: id.to_owned()
            }),
            "{id}"
        );
        // A patch cannot launder a policy with a bad id.
        assert!(matches!(
            policy.patched(&[op("/applyToFutureAssignments", PatchValue::Bool(true))]),
            Err(Error::BadId { .. })
        ));
    }

    let mut zero = example();
    zero.max_extension = Some(Minutes(0));
    assert_eq!(
        zero.validate(),
        Err(Error::PeriodOutOfRange {
            field: PatchPath::MaxActivationPeriodExtensionMins,
            value: 0,
            max: MAX_PERIOD_MINS,
        })
    );
    let mut huge = example();
    huge.default_extension = Some(Minutes(MAX_PERIOD_MINS + 1));
    huge.max_extension = None;
    assert!(matches!(
        huge.validate(),
        Err(Error::PeriodOutOfRange { .. })
    ));

    let mut over = example();
    over.default_activation_period = Some(Minutes(121));
    assert!(matches!(
        over.validate(),
        Err(Error::DefaultExceedsMax { .. })
    ));

    let mut dup = example();
    dup.entitlement_ids.push(dup.entitlement_ids[0].clone());
    assert!(matches!(dup.validate(), Err(Error::Duplicate { .. })));

    let mut template = example();
    template.notification_template = Some(String::new());
    assert!(matches!(
        template.validate(),
        Err(Error::BadTemplate { .. })
    ));

    let mut email = example();
    email.notification_recipients.push("nobody".to_owned());
    assert!(matches!(email.validate(), Err(Error::BadEmail { .. })));
}

#[test]
fn diff_lists_exactly_the_changed_fields() {
    let base = example();
    assert_eq!(base.diff(&base), vec![]);
    let next = patch(
        &base,
        &[
            op("/maxActivationPeriodMins", int(240)),
            op("/notificationTemplate", PatchValue::Null),
            op("/applyToFutureAssignments", PatchValue::Bool(false)),
            // Replaced by the same value: not a change.
            op("/notificationRecipients", list(&["owner@example.com"])),
            op("/maxActivationPeriodExtensionMins", int(30)),
        ],
    )
    .unwrap();
    assert_eq!(
        base.diff(&next),
        vec![
            FieldChange {
                path: PatchPath::MaxActivationPeriodMins,
                old: int(120),
                new: int(240),
            },
            FieldChange {
                path: PatchPath::NotificationTemplate,
                old: text("jit-activation-default"),
                new: PatchValue::Null,
            },
            FieldChange {
                path: PatchPath::ApplyToFutureAssignments,
                old: PatchValue::Bool(true),
                new: PatchValue::Bool(false),
            },
        ]
    );
    // The version is not a field.
    let mut bumped = base.clone();
    bumped.version += 5;
    assert_eq!(base.diff(&bumped), vec![]);
    // Reordering a list is a change.
    let reordered = patch_one(
        &base,
        "/entitlementIds",
        list(&[
            "38439bbc-264b-447b-acac-a182a466b0e9",
            "ae735f40-4de9-4163-801d-4a1444e59d35",
        ]),
    )
    .unwrap();
    assert_eq!(
        base.diff(&reordered)
            .iter()
            .map(|c| c.path)
            .collect::<Vec<_>>(),
        vec![PatchPath::EntitlementIds]
    );
}

/// Replays a diff as a patch: what the audit log records is enough to redo the change.
fn ops_of(changes: &[FieldChange]) -> Vec<PatchOp> {
    changes
        .iter()
        .map(|c| op(c.path.as_str(), c.new.clone()))
        .collect()
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("owner@example.com".to_owned()),
        Just("Owner@Example.com".to_owned()),
        Just("ops@example.org".to_owned()),
        Just("ae735f40-4de9-4163-801d-4a1444e59d35".to_owned()),
        Just("jit-activation-default".to_owned()),
        Just("not an address".to_owned()),
        "[a-z0-9.@-]{0,20}",
        ".{0,40}",
    ]
}

fn any_value() -> impl Strategy<Value = PatchValue> {
    prop_oneof![
        Just(PatchValue::Null),
        any::<bool>().prop_map(PatchValue::Bool),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(i64::from(MAX_PERIOD_MINS)),
            Just(i64::from(MAX_PERIOD_MINS) + 1),
            Just(i64::MIN),
            Just(i64::MAX),
            1i64..2000,
            any::<i64>(),
        ]
        .prop_map(PatchValue::Int),
        any_text().prop_map(PatchValue::Text),
        prop::collection::vec(any_text(), 0..6).prop_map(PatchValue::TextList),
        prop_oneof![Just("object"), Just("number"), Just("array")]
            .prop_map(|n| PatchValue::Other(n.to_owned())),
    ]
}

fn any_op() -> impl Strategy<Value = PatchOp> {
    let op_name = prop_oneof![
        4 => Just(None),
        4 => Just(Some("replace".to_owned())),
        1 => Just(Some("add".to_owned())),
        1 => ".{0,8}".prop_map(Some),
    ];
    let path = prop_oneof![
        8 => prop::sample::select(PatchPath::ALL.to_vec()).prop_map(|p| p.as_str().to_owned()),
        1 => Just("/id".to_owned()),
        1 => ".{0,24}",
    ];
    (op_name, path, any_value()).prop_map(|(op, path, value)| PatchOp { op, path, value })
}

/// Ops that are usually accepted, so that the success branch is exercised too.
fn plausible_op() -> impl Strategy<Value = PatchOp> {
    prop_oneof![
        prop::sample::select(vec![
            PatchPath::MaxActivationPeriodMins,
            PatchPath::MaxActivationPeriodExtensionMins,
            PatchPath::DefaultMaxActivationPeriodMins,
            PatchPath::DefaultMaxActivationPeriodExtensionMins,
        ])
        .prop_flat_map(|p| (
            Just(p),
            prop_oneof![
                Just(PatchValue::Null),
                (1i64..400).prop_map(PatchValue::Int)
            ]
        ))
        .prop_map(|(p, v)| op(p.as_str(), v)),
        prop::collection::vec("[a-z]{1,3}", 0..5)
            .prop_map(|ids| op("/entitlementIds", PatchValue::TextList(ids))),
        prop::collection::vec("[a-c]{1,2}@example\\.(com|org)", 0..4)
            .prop_map(|r| op("/notificationRecipients", PatchValue::TextList(r))),
        prop_oneof![
            Just(PatchValue::Null),
            "[a-z -]{1,20}".prop_map(PatchValue::Text)
        ]
        .prop_map(|v| op("/notificationTemplate", v)),
        any::<bool>().prop_map(|b| op("/applyToFutureAssignments", PatchValue::Bool(b))),
    ]
}

fn check_outcome(base: &Policy, ops: &[PatchOp]) -> Result<(), TestCaseError> {
    let before = base.clone();
    let result = base.patched(ops);
    prop_assert_eq!(base, &before);
    match result {
        Ok(next) => {
            prop_assert!(!ops.is_empty() && ops.len() <= MAX_PATCH_OPS);
            prop_assert_eq!(next.validate(), Ok(()));
            prop_assert_eq!(next.version, base.version + 1);
            prop_assert_eq!(&next.id, &base.id);
            // The diff, replayed, reproduces the change.
            let changes = base.diff(&next);
            if !changes.is_empty() {
                let mut replayed = base.patched(&ops_of(&changes)).unwrap();
                prop_assert_eq!(replayed.version, next.version);
                replayed.version = next.version;
                prop_assert_eq!(replayed, next);
            }
        }
        Err(e) => {
            // Every error renders to a non-empty message without panicking.
            prop_assert!(!e.to_string().is_empty());
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn random_patches_never_panic(ops in prop::collection::vec(any_op(), 0..20)) {
        check_outcome(&example(), &ops)?;
        check_outcome(&empty(), &ops)?;
    }

    #[test]
    fn plausible_patches_yield_valid_policies(
        ops in prop::collection::vec(plausible_op(), 1..=MAX_PATCH_OPS),
    ) {
        check_outcome(&example(), &ops)?;
        check_outcome(&empty(), &ops)?;
    }
}
