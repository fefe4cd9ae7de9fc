//! Table tests of the access-request submission rules: one row per rule and limit, each checked
//! for its typed error and for a message that names the rule, plus the accepted shapes and the
//! duplicate rule.

use std::collections::BTreeSet;

use jitflow_core::id::{AccessRequestId, IdentityId, ObjectId, SourceId};
use jitflow_core::request::AccessRequestConfig;
use jitflow_core::request::submit::{
    AccountRef, Assignment, Bulk, Duplicate, Error, Existing, IdentityItems, MAX_BULK_IDS,
    MAX_CLOSE_IDS, MAX_COMMENT_LEN, MAX_ENTITLEMENTS, MAX_IDENTITIES,
    MAX_IDENTITIES_WITH_ENTITLEMENTS, MAX_METADATA_ENTRIES, MAX_OBJECTS_PER_IDENTITY, ObjectKind,
    ObjectRef, Origin, RequestType, RequestedItem, SourceSelection, Submission, duplicate_of,
    item_id, validate_bulk, validate_submit,
};
use jitflow_core::time::Timestamp;

const REQUEST: AccessRequestId = AccessRequestId::from_u128(0xabc);

fn now() -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000).unwrap()
}

fn later(hours: u64) -> Timestamp {
    now().saturating_add(std::time::Duration::from_secs(hours * 3600))
}

fn who(name: &str) -> IdentityId {
    IdentityId::parse(name).unwrap()
}

fn object(kind: ObjectKind, id: &str) -> ObjectRef {
    ObjectRef {
        kind,
        id: ObjectId::parse(id).unwrap(),
    }
}

fn item(kind: ObjectKind, id: &str) -> RequestedItem {
    RequestedItem {
        object: Some(object(kind, id)),
        comment: Some("please".into()),
        ..Default::default()
    }
}

fn grant(ids: &[&str], items: Vec<RequestedItem>) -> Submission {
    Submission {
        request_type: RequestType::Grant,
        requested_for: Some(ids.iter().map(|i| who(i)).collect()),
        requested_items: Some(items),
        requested_for_with_items: None,
        client_metadata: Default::default(),
    }
}

fn revoke(id: &str, items: Vec<RequestedItem>) -> Submission {
    Submission {
        request_type: RequestType::Revoke,
        ..grant(&[id], items)
    }
}

fn nested(entries: Vec<(&str, Vec<RequestedItem>)>) -> Submission {
    Submission {
        request_type: RequestType::Grant,
        requested_for: None,
        requested_items: None,
        requested_for_with_items: Some(
            entries
                .into_iter()
                .map(|(id, items)| IdentityItems {
                    identity: who(id),
                    items,
                })
                .collect(),
        ),
        client_metadata: Default::default(),
    }
}

fn held(origin: Origin, remove_date: Option<Timestamp>) -> Existing {
    Existing {
        assignment: Some(Assignment {
            origin,
            accounts: Vec::new(),
            start_date: None,
            remove_date,
        }),
        in_progress: None,
    }
}

/// A config that lets anyone request for anyone: the rules of this file are the submission's
/// own (the config's rules are tested in `request_config.rs`).
fn open_config() -> AccessRequestConfig {
    let mut config = AccessRequestConfig::default();
    config.on_behalf_of.anyone_by_anyone = true;
    config
}

fn check(submission: &Submission, existing: Existing) -> Result<usize, Error> {
    validate_submit(
        REQUEST,
        submission,
        &who("requester"),
        false,
        &open_config(),
        now(),
        |_, _| existing.clone(),
    )
    .map(|specs| specs.len())
}

fn selection(source: Option<&str>, accounts: Vec<AccountRef>) -> SourceSelection {
    SourceSelection {
        source: source.map(|s| SourceId::parse(s).unwrap()),
        accounts,
    }
}

fn account(uuid: &str) -> AccountRef {
    AccountRef {
        account_uuid: Some(uuid.into()),
        native_identity: None,
    }
}

fn ents(n: usize) -> Vec<RequestedItem> {
    (0..n)
        .map(|i| item(ObjectKind::Entitlement, &format!("ent-{i}")))
        .collect()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

#[test]
fn every_rule_has_its_error_and_message() {
    let e = ObjectKind::Entitlement;
    let role = ObjectKind::Role;
    let ids11 = names(MAX_IDENTITIES_WITH_ENTITLEMENTS + 1);
    let ids11: Vec<&str> = ids11.iter().map(String::as_str).collect();
    let ids_max = names(MAX_IDENTITIES + 1);
    let ids_max: Vec<&str> = ids_max.iter().map(String::as_str).collect();
    let mut dated = item(e, "ent-1");
    dated.start_date = Some(later(2));
    let mut past_start = item(e, "ent-1");
    past_start.start_date = Some(now());
    let mut past_remove = item(e, "ent-1");
    past_remove.remove_date = Some(now().saturating_sub(std::time::Duration::from_secs(1)));
    let mut backwards = item(e, "ent-1");
    backwards.start_date = Some(later(5));
    backwards.remove_date = Some(later(5));
    let mut uncommented = item(e, "ent-1");
    uncommented.comment = None;
    let mut blank = item(e, "ent-1");
    blank.comment = Some("  ".into());
    let mut late_remove = item(e, "ent-1");
    late_remove.remove_date = Some(later(10));
    let mut long_comment = item(e, "ent-1");
    long_comment.comment = Some("x".repeat(MAX_COMMENT_LEN + 1));
    let mut control = item(e, "ent-1");
    control.comment = Some("bell\u{7}".into());
    let mut meta = item(e, "ent-1");
    meta.client_metadata = (0..=MAX_METADATA_ENTRIES)
        .map(|i| (format!("k{i}"), "v".into()))
        .collect();
    let mut empty_key = item(e, "ent-1");
    empty_key.client_metadata = [(String::new(), "v".into())].into();
    let mut empty_form = item(e, "ent-1");
    empty_form.form_instance_id = Some(String::new());
    let mut form_on_revoke = item(e, "ent-1");
    form_on_revoke.form_instance_id = Some("form-1".into());
    let mut native_on_grant = item(e, "ent-1");
    native_on_grant.native_identity = Some("CN=x".into());
    let mut flat_selection = item(e, "ent-1");
    flat_selection.account_selection = Some(vec![selection(Some("ad"), vec![account("a")])]);
    let mut no_object = item(e, "ent-1");
    no_object.object = None;
    let with_selection = |s: Vec<SourceSelection>| {
        let mut i = item(e, "ent-1");
        i.account_selection = Some(s);
        nested(vec![("alice", vec![i])])
    };

    type Row = (
        &'static str,
        Submission,
        Existing,
        fn(&Error) -> bool,
        &'static str,
    );
    let rows: Vec<Row> = vec![
        (
            "no shape",
            Submission {
                requested_items: None,
                ..grant(&["alice"], ents(1))
            },
            Existing::default(),
            |e| matches!(e, Error::NoRecipients),
            "requestedForWithRequestedItems",
        ),
        (
            "both shapes",
            Submission {
                requested_for_with_items: nested(vec![("bob", ents(1))]).requested_for_with_items,
                ..grant(&["alice"], ents(1))
            },
            Existing::default(),
            |e| matches!(e, Error::BothShapes),
            "must be omitted",
        ),
        (
            "empty requestedFor",
            grant(&[], ents(1)),
            Existing::default(),
            |e| {
                matches!(
                    e,
                    Error::NoIdentities {
                        field: "requestedFor"
                    }
                )
            },
            "at least one identity",
        ),
        (
            "empty nested list",
            nested(vec![]),
            Existing::default(),
            |e| matches!(e, Error::NoIdentities { .. }),
            "at least one identity",
        ),
        (
            "no items",
            grant(&["alice"], vec![]),
            Existing::default(),
            |e| matches!(e, Error::NoItems { .. }),
            "at least one item",
        ),
        (
            "no items for one nested identity",
            nested(vec![("alice", ents(1)), ("bob", vec![])]),
            Existing::default(),
            |e| matches!(e, Error::NoItems { path } if path.contains("[1]")),
            "requestedForWithRequestedItems[1]",
        ),
        (
            "missing type or id",
            grant(&["alice"], vec![no_object]),
            Existing::default(),
            |e| matches!(e, Error::MissingObject { .. }),
            "type and id are required",
        ),
        (
            "11 identities with an entitlement",
            grant(&ids11, ents(1)),
            Existing::default(),
            |e| {
                matches!(
                    e,
                    Error::TooManyIdentities {
                        count: 11,
                        max: 10,
                        ..
                    }
                )
            },
            "when entitlements are requested",
        ),
        (
            "more identities than jitflow's bound, roles only",
            grant(&ids_max, vec![item(role, "r")]),
            Existing::default(),
            |e| {
                matches!(
                    e,
                    Error::TooManyIdentities {
                        max: MAX_IDENTITIES,
                        ..
                    }
                )
            },
            "identities requested for",
        ),
        (
            "26 entitlements",
            grant(&["alice"], ents(MAX_ENTITLEMENTS + 1)),
            Existing::default(),
            |e| matches!(e, Error::TooManyEntitlements { count: 26, max: 25 }),
            "at most 25 entitlements",
        ),
        (
            "26 entitlements over two nested identities",
            nested(vec![
                ("alice", ents(13)),
                ("bob", {
                    let mut more = ents(26);
                    more.drain(..13);
                    more
                }),
            ]),
            Existing::default(),
            |e| matches!(e, Error::TooManyEntitlements { count: 26, .. }),
            "at most 25 entitlements",
        ),
        (
            "too many objects for one identity",
            grant(
                &["alice"],
                (0..=MAX_OBJECTS_PER_IDENTITY)
                    .map(|i| item(role, &format!("role-{i}")))
                    .collect(),
            ),
            Existing::default(),
            |e| matches!(e, Error::TooManyItems { .. }),
            "more than the 100 allowed",
        ),
        (
            "identity twice",
            grant(&["alice", "alice"], ents(1)),
            Existing::default(),
            |e| matches!(e, Error::DuplicateIdentity(_)),
            "named more than once",
        ),
        (
            "object twice for one identity",
            grant(&["alice"], vec![item(e, "x"), item(e, "x")]),
            Existing::default(),
            |e| matches!(e, Error::DuplicateItem { .. }),
            "requested more than once",
        ),
        (
            "revoke for two identities",
            Submission {
                request_type: RequestType::Revoke,
                ..grant(&["alice", "bob"], vec![item(role, "r")])
            },
            held(Origin::Requested, None),
            |e| matches!(e, Error::RevokeIdentities { count: 2 }),
            "exactly one identity",
        ),
        (
            "revoke of two entitlements",
            revoke("alice", ents(2)),
            held(Origin::Requested, None),
            |e| matches!(e, Error::RevokeEntitlements { count: 2 }),
            "at most 1 entitlement",
        ),
        (
            "revoke in the nested shape",
            Submission {
                request_type: RequestType::Revoke,
                ..nested(vec![("alice", ents(1))])
            },
            held(Origin::Requested, None),
            |e| matches!(e, Error::RevokeNested),
            "not requestedForWithRequestedItems",
        ),
        (
            "revoke of one's own access",
            revoke("requester", ents(1)),
            held(Origin::Requested, None),
            |e| matches!(e, Error::RevokeForSelf(_)),
            "does not support self request",
        ),
        (
            "revoke with a startDate",
            revoke("alice", vec![dated.clone()]),
            held(Origin::Requested, None),
            |e| {
                matches!(
                    e,
                    Error::NotAllowed {
                        field: "startDate",
                        request_type: RequestType::Revoke,
                        ..
                    }
                )
            },
            "startDate is not allowed in a REVOKE_ACCESS request",
        ),
        (
            "revoke without a comment",
            revoke("alice", vec![uncommented]),
            held(Origin::Requested, None),
            |e| matches!(e, Error::RevokeCommentRequired { .. }),
            "comment is required",
        ),
        (
            "revoke with a blank comment",
            revoke("alice", vec![blank]),
            held(Origin::Requested, None),
            |e| matches!(e, Error::RevokeCommentRequired { .. }),
            "comment is required",
        ),
        (
            "revoke with a formInstanceId",
            revoke("alice", vec![form_on_revoke]),
            held(Origin::Requested, None),
            |e| {
                matches!(
                    e,
                    Error::NotAllowed {
                        field: "formInstanceId",
                        ..
                    }
                )
            },
            "formInstanceId is not allowed",
        ),
        (
            "revoke of access not held",
            revoke("alice", ents(1)),
            Existing::default(),
            |e| matches!(e, Error::RevokeNotAssigned { .. }),
            "nothing to revoke",
        ),
        (
            "revoke of access from a role",
            revoke("alice", ents(1)),
            held(Origin::Role, None),
            |e| {
                matches!(
                    e,
                    Error::RevokeInherited {
                        origin: Origin::Role,
                        ..
                    }
                )
            },
            "granted by role membership",
        ),
        (
            "revoke of birthright access",
            revoke("alice", ents(1)),
            held(Origin::Birthright, None),
            |e| {
                matches!(
                    e,
                    Error::RevokeInherited {
                        origin: Origin::Birthright,
                        ..
                    }
                )
            },
            "birthright",
        ),
        (
            "revoke removeDate not before the existing sunset",
            revoke("alice", vec![late_remove]),
            held(Origin::Requested, Some(later(10))),
            |e| matches!(e, Error::RemoveNotBeforeSunset { .. }),
            "earlier than the existing sunset",
        ),
        (
            "startDate now",
            grant(&["alice"], vec![past_start]),
            Existing::default(),
            |e| {
                matches!(
                    e,
                    Error::NotFuture {
                        field: "startDate",
                        ..
                    }
                )
            },
            "must be a future date-time",
        ),
        (
            "removeDate in the past",
            grant(&["alice"], vec![past_remove]),
            Existing::default(),
            |e| {
                matches!(
                    e,
                    Error::NotFuture {
                        field: "removeDate",
                        ..
                    }
                )
            },
            "must be a future date-time",
        ),
        (
            "removeDate not after startDate",
            grant(&["alice"], vec![backwards]),
            Existing::default(),
            |e| matches!(e, Error::RemoveBeforeStart { .. }),
            "must be after startDate",
        ),
        (
            "comment too long",
            grant(&["alice"], vec![long_comment]),
            Existing::default(),
            |e| matches!(e, Error::InvalidText { path, .. } if path.ends_with(".comment")),
            "more than the 2000 allowed",
        ),
        (
            "comment with a control character",
            grant(&["alice"], vec![control]),
            Existing::default(),
            |e| matches!(e, Error::InvalidText { .. }),
            "control character",
        ),
        (
            "too much item metadata",
            grant(&["alice"], vec![meta]),
            Existing::default(),
            |e| matches!(e, Error::TooManyMetadata { count: 33, .. }),
            "more than the 32 allowed",
        ),
        (
            "empty metadata key",
            grant(&["alice"], vec![empty_key]),
            Existing::default(),
            |e| matches!(e, Error::InvalidText { .. }),
            "key is empty",
        ),
        (
            "empty formInstanceId on a grant",
            grant(&["alice"], vec![empty_form]),
            Existing::default(),
            |e| matches!(e, Error::InvalidText { path, .. } if path.ends_with("formInstanceId")),
            "is empty",
        ),
        (
            "nativeIdentity on a grant",
            grant(&["alice"], vec![native_on_grant]),
            Existing::default(),
            |e| {
                matches!(
                    e,
                    Error::NotAllowed {
                        field: "nativeIdentity",
                        request_type: RequestType::Grant,
                        ..
                    }
                )
            },
            "not allowed in a GRANT_ACCESS request",
        ),
        (
            "accountSelection in the flat shape",
            grant(&["alice"], vec![flat_selection]),
            Existing::default(),
            |e| {
                matches!(
                    e,
                    Error::NotAllowed {
                        field: "accountSelection",
                        ..
                    }
                )
            },
            "accountSelection is not allowed",
        ),
        (
            "a source with no account",
            with_selection(vec![selection(Some("ad"), vec![])]),
            Existing::default(),
            |e| matches!(e, Error::AccountSelection { .. }),
            "exactly one account per source",
        ),
        (
            "a source with two accounts",
            with_selection(vec![selection(
                Some("ad"),
                vec![account("a"), account("b")],
            )]),
            Existing::default(),
            |e| matches!(e, Error::AccountSelection { .. }),
            "exactly one account per source",
        ),
        (
            "a source twice",
            with_selection(vec![
                selection(Some("ad"), vec![account("a")]),
                selection(Some("ad"), vec![account("b")]),
            ]),
            Existing::default(),
            |e| matches!(e, Error::AccountSelection { .. }),
            "selected twice",
        ),
        (
            "an account with no id",
            with_selection(vec![selection(
                Some("ad"),
                vec![AccountRef {
                    account_uuid: None,
                    native_identity: None,
                }],
            )]),
            Existing::default(),
            |e| matches!(e, Error::AccountSelection { .. }),
            "accountUuid or nativeIdentity",
        ),
        (
            "request metadata too large",
            Submission {
                client_metadata: (0..=MAX_METADATA_ENTRIES)
                    .map(|i| (format!("k{i}"), "v".into()))
                    .collect(),
                ..grant(&["alice"], ents(1))
            },
            Existing::default(),
            |e| matches!(e, Error::TooManyMetadata { path, .. } if path == "clientMetadata"),
            "clientMetadata",
        ),
    ];
    let mut seen = BTreeSet::new();
    for (name, submission, existing, is_expected, phrase) in rows {
        assert!(seen.insert(name), "row {name} twice");
        let err = check(&submission, existing).expect_err(name);
        assert!(is_expected(&err), "{name}: got {err:?}");
        let message = err.to_string();
        assert!(
            message.contains(phrase),
            "{name}: message `{message}` does not name the rule (`{phrase}`)"
        );
    }
}

#[test]
fn the_limits_themselves_are_accepted() {
    let ids = names(MAX_IDENTITIES_WITH_ENTITLEMENTS);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        check(&grant(&ids, ents(MAX_ENTITLEMENTS)), Existing::default()),
        Ok(MAX_IDENTITIES_WITH_ENTITLEMENTS * MAX_ENTITLEMENTS)
    );
    // Without entitlements the contract's 10-identity limit does not apply.
    let many = names(MAX_IDENTITIES);
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        check(
            &grant(&many, vec![item(ObjectKind::Role, "r")]),
            Existing::default()
        ),
        Ok(MAX_IDENTITIES)
    );
    // A revoke may name one entitlement and several roles.
    let revoke_items = vec![
        item(ObjectKind::Entitlement, "e"),
        item(ObjectKind::Role, "r1"),
        item(ObjectKind::AccessProfile, "ap"),
    ];
    assert_eq!(
        check(
            &revoke("alice", revoke_items),
            held(Origin::Requested, None)
        ),
        Ok(3)
    );
}

#[test]
fn specs_expand_in_order_with_distinct_ids() {
    let mut dated = item(ObjectKind::Entitlement, "e1");
    dated.start_date = Some(later(1));
    dated.remove_date = Some(later(2));
    dated.account_selection = Some(vec![selection(Some("ad"), vec![account("{fab7}")])]);
    let submission = nested(vec![
        ("alice", vec![dated, item(ObjectKind::Role, "r1")]),
        ("bob", vec![item(ObjectKind::AccessProfile, "ap")]),
    ]);
    let specs = validate_submit(
        REQUEST,
        &submission,
        &who("carol"),
        false,
        &open_config(),
        now(),
        |_, _| Existing::default(),
    )
    .unwrap();
    let order: Vec<(String, String)> = specs
        .iter()
        .map(|s| (s.requested_for.to_string(), s.object.id.to_string()))
        .collect();
    assert_eq!(
        order,
        [("alice", "e1"), ("alice", "r1"), ("bob", "ap")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    for (i, s) in specs.iter().enumerate() {
        assert_eq!(s.id, item_id(REQUEST, i as u32));
        assert_eq!(s.request, REQUEST);
        assert_eq!(s.requester, who("carol"));
        assert!(s.check().is_ok());
    }
    assert_eq!(specs[0].start_date, Some(later(1)));
    assert_eq!(specs[0].accounts.len(), 1);
    let ids: BTreeSet<_> = (0..1000).map(|i| item_id(REQUEST, i)).collect();
    assert_eq!(ids.len(), 1000);
    assert_ne!(
        item_id(REQUEST, 0),
        item_id(AccessRequestId::from_u128(0xabd), 0)
    );
}

#[test]
fn duplicates_follow_the_contract() {
    let spec = |start, remove, accounts: Vec<SourceSelection>| {
        let mut i = item(ObjectKind::Entitlement, "e1");
        i.start_date = start;
        i.remove_date = remove;
        i.account_selection = Some(accounts).filter(|a| !a.is_empty());
        validate_submit(
            REQUEST,
            &nested(vec![("alice", vec![i])]),
            &who("alice"),
            false,
            &AccessRequestConfig::default(),
            now(),
            |_, _| Existing::default(),
        )
        .unwrap()
        .remove(0)
    };
    let ad_a = vec![selection(Some("ad"), vec![account("a")])];
    let assigned = |remove, accounts: Vec<SourceSelection>| Existing {
        assignment: Some(Assignment {
            origin: Origin::Requested,
            accounts,
            start_date: None,
            remove_date: remove,
        }),
        in_progress: None,
    };
    // The same access, no change: a duplicate.
    assert_eq!(
        duplicate_of(&spec(None, None, vec![]), &assigned(None, ad_a.clone())),
        Some(Duplicate::AlreadyAssigned)
    );
    assert_eq!(
        duplicate_of(
            &spec(None, None, ad_a.clone()),
            &assigned(None, ad_a.clone())
        ),
        Some(Duplicate::AlreadyAssigned)
    );
    // Another account, another removal date, or removing the sunset: not a duplicate.
    let ad_b = vec![selection(Some("ad"), vec![account("b")])];
    assert_eq!(
        duplicate_of(&spec(None, None, ad_b), &assigned(None, ad_a.clone())),
        None
    );
    assert_eq!(
        duplicate_of(&spec(None, Some(later(3)), vec![]), &assigned(None, vec![])),
        None
    );
    assert_eq!(
        duplicate_of(&spec(None, None, vec![]), &assigned(Some(later(3)), vec![])),
        None
    );
    // In progress: a duplicate, whatever the dates.
    let other = item_id(AccessRequestId::from_u128(9), 0);
    let in_progress = Existing {
        assignment: None,
        in_progress: Some(other),
    };
    assert_eq!(
        duplicate_of(&spec(Some(later(1)), None, vec![]), &in_progress),
        Some(Duplicate::InProgress(other))
    );
    // Nothing there: not a duplicate.
    assert_eq!(
        duplicate_of(&spec(None, None, vec![]), &Existing::default()),
        None
    );
}

#[test]
fn bulk_limits() {
    assert!(matches!(
        validate_bulk(Bulk::Approve, 0),
        Err(Error::NoIds {
            field: "approvalIds"
        })
    ));
    assert_eq!(validate_bulk(Bulk::Approve, MAX_BULK_IDS), Ok(()));
    assert_eq!(validate_bulk(Bulk::Cancel, MAX_BULK_IDS), Ok(()));
    let err = validate_bulk(Bulk::Cancel, MAX_BULK_IDS + 1).unwrap_err();
    assert!(err.to_string().contains("at most 50"), "{err}");
    assert_eq!(validate_bulk(Bulk::Close, MAX_CLOSE_IDS), Ok(()));
    assert!(matches!(
        validate_bulk(Bulk::Close, MAX_CLOSE_IDS + 1),
        Err(Error::TooManyIds { max: 500, .. })
    ));
}

#[test]
fn contract_spellings_round_trip() {
    for t in [RequestType::Grant, RequestType::Revoke] {
        assert_eq!(RequestType::parse(t.as_str()), Some(t));
    }
    assert_eq!(RequestType::parse("MODIFY_ACCESS"), None);
    assert_eq!(RequestType::parse("grant_access"), None);
    for k in [
        ObjectKind::AccessProfile,
        ObjectKind::Role,
        ObjectKind::Entitlement,
    ] {
        assert_eq!(ObjectKind::parse(k.as_str()), Some(k));
    }
}
