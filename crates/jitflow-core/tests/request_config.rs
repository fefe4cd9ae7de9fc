//! Table tests of the access request config: its defaults, every validation rule, the v1/v2
//! merge, and each rule it adds to a submission and a denial (refused when broken, accepted
//! when met), through `validate_submit`.

use jitflow_core::id::{AccessRequestId, IdentityId, ObjectId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::request::config::{
    self, AccessDuration, ApprovalScheme, ApproverType, Error, MAX_APPROVAL_SCHEMES,
    MAX_CONFIG_ID_LEN, Refusal, Reminders, TimeUnit, View,
};
use jitflow_core::request::submit::{ObjectKind, ObjectRef, RequestType, RequestedItem};
use jitflow_core::request::{self, AccessRequestConfig, Existing, Submission, validate_submit};
use jitflow_core::time::Timestamp;

fn now() -> Timestamp {
    Timestamp::parse_rfc3339("2027-01-10T12:00:00Z").unwrap()
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

fn who(name: &str) -> IdentityId {
    IdentityId::parse(name).unwrap()
}

fn scheme(approver_type: ApproverType, id: Option<&str>) -> ApprovalScheme {
    ApprovalScheme {
        approver_type,
        approver_id: id.map(str::to_owned),
    }
}

struct Ask {
    kind: ObjectKind,
    request_type: RequestType,
    requester: &'static str,
    requested_for: &'static str,
    comment: Option<&'static str>,
    start: Option<Timestamp>,
    remove: Option<Timestamp>,
    admin: bool,
}

fn ask() -> Ask {
    Ask {
        kind: ObjectKind::Entitlement,
        request_type: RequestType::Grant,
        requester: "alice",
        requested_for: "alice",
        comment: None,
        start: None,
        remove: None,
        admin: false,
    }
}

fn submit(config: &AccessRequestConfig, a: &Ask) -> Result<usize, request::Error> {
    let submission = Submission {
        request_type: a.request_type,
        requested_for: Some(vec![who(a.requested_for)]),
        requested_items: Some(vec![RequestedItem {
            object: Some(ObjectRef {
                kind: a.kind,
                id: ObjectId::parse("ent-1").unwrap(),
            }),
            comment: a.comment.map(str::to_owned),
            start_date: a.start,
            remove_date: a.remove,
            ..Default::default()
        }]),
        requested_for_with_items: None,
        client_metadata: Default::default(),
    };
    let held = |_: &IdentityId, _: &ObjectRef| Existing {
        assignment: Some(request::submit::Assignment {
            origin: request::submit::Origin::Requested,
            accounts: Vec::new(),
            start_date: None,
            remove_date: None,
        }),
        in_progress: None,
    };
    validate_submit(
        AccessRequestId::from_u128(7),
        &submission,
        &who(a.requester),
        a.admin,
        config,
        now(),
        held,
    )
    .map(|s| s.len())
}

fn refusal(result: Result<usize, request::Error>) -> Refusal {
    match result {
        Err(request::Error::Config(r)) => r,
        other => panic!("expected a config refusal, got {other:?}"),
    }
}

#[test]
fn defaults_are_the_contracts() {
    let c = AccessRequestConfig::default();
    assert!(!c.approvals_must_be_external);
    assert!(!c.auto_approval_enabled);
    assert!(!c.reauthorization_enabled);
    assert!(!c.on_behalf_of.anyone_by_anyone);
    assert!(!c.on_behalf_of.employee_by_manager);
    assert!(c.on_behalf_of.for_machine_identity);
    assert!(!c.on_behalf_of.machine_by_owner);
    assert_eq!(c.reminders, None);
    assert!(c.entitlement.access.approval_schemes.is_empty());
    assert!(c.entitlement.revocation_schemes.is_empty());
    let a = &c.entitlement.access;
    assert!(!a.request_comment_required && !a.denial_comment_required);
    assert!(!a.reauthorization_required && !a.require_end_date);
    assert_eq!(
        (a.max_duration, a.form_definition_id.as_deref()),
        (None, None)
    );
    assert!(!c.gov_group_visibility_enabled);
    assert!(c.machine_identity_access_request_enabled);
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn every_validation_rule_has_its_error() {
    type Edit = fn(&mut AccessRequestConfig);
    type Row = (&'static str, Edit, fn(&Error) -> bool, &'static str);
    let rows: Vec<Row> = vec![
        (
            "too many schemes",
            |c| {
                c.entitlement.access.approval_schemes =
                    vec![scheme(ApproverType::Manager, None); MAX_APPROVAL_SCHEMES + 1]
            },
            |e| matches!(e, Error::TooManySchemes { .. }),
            "approvalSchemes holds 11",
        ),
        (
            "governance group without id",
            |c| {
                c.entitlement.revocation_schemes = vec![scheme(ApproverType::GovernanceGroup, None)]
            },
            |e| matches!(e, Error::ApproverIdRequired { index: 0, .. }),
            "revocationRequestConfig.approvalSchemes[0]: approverId is required",
        ),
        (
            "manager with id",
            |c| {
                c.entitlement.access.approval_schemes = vec![
                    scheme(ApproverType::SourceOwner, None),
                    scheme(ApproverType::Manager, Some("m")),
                ]
            },
            |e| matches!(e, Error::ApproverIdNotAllowed { index: 1, .. }),
            "used only when approverType is GOVERNANCE_GROUP or WORKFLOW, not MANAGER",
        ),
        (
            "workflow with others",
            |c| {
                c.entitlement.access.approval_schemes = vec![
                    scheme(ApproverType::Workflow, Some("wf")),
                    scheme(ApproverType::Manager, None),
                ]
            },
            |e| matches!(e, Error::WorkflowNotExclusive { .. }),
            "WORKFLOW approval is exclusive",
        ),
        (
            "empty approver id",
            |c| {
                c.entitlement.access.approval_schemes =
                    vec![scheme(ApproverType::GovernanceGroup, Some(""))]
            },
            |e| matches!(e, Error::InvalidText { .. }),
            "approvalSchemes[0].approverId: is empty",
        ),
        (
            "long form id",
            |c| c.entitlement.access.form_definition_id = Some("f".repeat(MAX_CONFIG_ID_LEN + 1)),
            |e| matches!(e, Error::InvalidText { .. }),
            "formDefinitionId",
        ),
        (
            "control character in form id",
            |c| c.entitlement.access.form_definition_id = Some("a\u{7}b".into()),
            |e| matches!(e, Error::InvalidText { .. }),
            "control character",
        ),
        (
            "zero duration",
            |c| {
                c.entitlement.access.max_duration = Some(AccessDuration {
                    value: 0,
                    unit: TimeUnit::Days,
                })
            },
            |e| matches!(e, Error::Duration { value: 0, .. }),
            "1 to 3650 DAYS",
        ),
        (
            "duration over ten years",
            |c| {
                c.entitlement.access.max_duration = Some(AccessDuration {
                    value: 121,
                    unit: TimeUnit::Months,
                })
            },
            |e| matches!(e, Error::Duration { value: 121, .. }),
            "1 to 120 MONTHS",
        ),
        (
            "too many reminders",
            |c| {
                c.reminders = Some(Reminders {
                    max_reminders: Some(21),
                    ..Default::default()
                })
            },
            |e| {
                matches!(
                    e,
                    Error::Reminder {
                        field: "maxReminders",
                        ..
                    }
                )
            },
            "maxReminders 21 is out of range: 0 to 20",
        ),
        (
            "too many reminder days",
            |c| {
                c.reminders = Some(Reminders {
                    days_between_reminders: Some(366),
                    ..Default::default()
                })
            },
            |e| {
                matches!(
                    e,
                    Error::Reminder {
                        field: "daysBetweenReminders",
                        ..
                    }
                )
            },
            "daysBetweenReminders 366",
        ),
    ];
    for (name, edit, is, text) in rows {
        let mut c = AccessRequestConfig::default();
        edit(&mut c);
        let e = c.validate().expect_err(name);
        assert!(is(&e), "{name}: {e:?}");
        assert!(e.to_string().contains(text), "{name}: {e}");
        // decide refuses it too, and makes no event.
        assert_eq!(
            config::decide(None, c, now(), &Actor::System).unwrap_err(),
            e
        );
    }
}

#[test]
fn the_bounds_themselves_are_accepted() {
    let mut c = AccessRequestConfig::default();
    c.entitlement.access.approval_schemes = vec![
        scheme(ApproverType::GovernanceGroup, Some("g")),
        scheme(ApproverType::EntitlementOwner, None),
    ];
    c.entitlement
        .access
        .approval_schemes
        .resize(MAX_APPROVAL_SCHEMES, scheme(ApproverType::Manager, None));
    c.entitlement.revocation_schemes = vec![scheme(ApproverType::Workflow, Some("wf"))];
    c.entitlement.access.form_definition_id = Some("f".repeat(MAX_CONFIG_ID_LEN));
    c.entitlement.access.max_duration = Some(AccessDuration {
        value: 87_600,
        unit: TimeUnit::Hours,
    });
    c.reminders = Some(Reminders {
        days_until_escalation: Some(365),
        days_between_reminders: Some(0),
        max_reminders: Some(20),
        fallback_approver: Some(who("boss")),
    });
    assert_eq!(c.validate(), Ok(()));
    let previous = AccessRequestConfig::default();
    let event = config::decide(Some(&previous), c.clone(), now(), &Actor::System).unwrap();
    assert_eq!(
        (event.previous, event.config, event.at),
        (Some(previous), c, now())
    );
}

#[test]
fn a_put_of_one_version_keeps_the_other_versions_own_fields() {
    let stored = AccessRequestConfig {
        auto_approval_enabled: true,
        reminders: Some(Reminders {
            max_reminders: Some(3),
            ..Default::default()
        }),
        gov_group_visibility_enabled: true,
        machine_identity_access_request_enabled: false,
        ..Default::default()
    };
    let body = AccessRequestConfig {
        approvals_must_be_external: true,
        ..Default::default()
    };
    // A v1 body replaces the v1 fields and keeps the v2-only ones.
    let v1 = stored.with(View::V1, &body);
    assert!(v1.approvals_must_be_external);
    assert!(!v1.auto_approval_enabled && v1.reminders.is_none());
    assert!(v1.gov_group_visibility_enabled && !v1.machine_identity_access_request_enabled);
    // A v2 body replaces the v2 fields and keeps the v1-only ones.
    let v2 = stored.with(View::V2, &body);
    assert!(v2.approvals_must_be_external);
    assert!(v2.auto_approval_enabled && v2.reminders == stored.reminders);
    assert!(!v2.gov_group_visibility_enabled && v2.machine_identity_access_request_enabled);
}

#[test]
fn request_on_behalf_of_needs_the_config_or_an_admin() {
    let mut config = AccessRequestConfig::default();
    let other = Ask {
        requested_for: "bob",
        ..ask()
    };
    let r = refusal(submit(&config, &other));
    assert!(matches!(r, Refusal::OnBehalfOf { .. }));
    assert!(
        r.to_string()
            .contains("alice may not request access for bob: requestOnBehalfOfConfig.allowRequestOnBehalfOfAnyoneByAnyone is false"),
        "{r}"
    );
    // The manager flag allows nothing: jitflow knows no managers (fail closed).
    config.on_behalf_of.employee_by_manager = true;
    assert!(matches!(
        refusal(submit(&config, &other)),
        Refusal::OnBehalfOf { .. }
    ));
    // A self request, an admin, and the anyone-by-anyone flag pass.
    assert_eq!(submit(&config, &ask()), Ok(1));
    assert_eq!(
        submit(
            &config,
            &Ask {
                admin: true,
                ..other
            }
        ),
        Ok(1)
    );
    config.on_behalf_of.anyone_by_anyone = true;
    assert_eq!(
        submit(
            &config,
            &Ask {
                requested_for: "bob",
                ..ask()
            }
        ),
        Ok(1)
    );
    // A revoke is never a self request; the on-behalf-of flags do not apply to it.
    let revoke = Ask {
        request_type: RequestType::Revoke,
        requested_for: "bob",
        comment: Some("no longer needed"),
        ..ask()
    };
    assert_eq!(submit(&AccessRequestConfig::default(), &revoke), Ok(1));
}

#[test]
fn approvals_must_be_external_refuses_everyone_but_admins() {
    let config = AccessRequestConfig {
        approvals_must_be_external: true,
        ..Default::default()
    };
    let r = refusal(submit(&config, &ask()));
    assert_eq!(r, Refusal::ApprovalsExternal);
    assert!(r.to_string().contains("approvalsMustBeExternal"));
    let revoke = Ask {
        request_type: RequestType::Revoke,
        requested_for: "bob",
        comment: Some("c"),
        ..ask()
    };
    assert_eq!(
        refusal(submit(&config, &revoke)),
        Refusal::ApprovalsExternal
    );
    assert_eq!(
        submit(
            &config,
            &Ask {
                admin: true,
                ..ask()
            }
        ),
        Ok(1)
    );
}

#[test]
fn request_comment_required_applies_to_entitlement_grants() {
    let mut config = AccessRequestConfig::default();
    config.entitlement.access.request_comment_required = true;
    for comment in [None, Some("  ")] {
        let r = refusal(submit(&config, &Ask { comment, ..ask() }));
        assert!(matches!(r, Refusal::CommentRequired { .. }), "{r:?}");
        assert!(
            r.to_string()
                .starts_with("requestedItems[0]: a comment is required (entitlementRequestConfig.accessRequestConfig.requestCommentRequired"),
            "{r}"
        );
    }
    assert_eq!(
        submit(
            &config,
            &Ask {
                comment: Some("need it"),
                ..ask()
            }
        ),
        Ok(1)
    );
    // A role is not an entitlement: the entitlement request config does not apply.
    assert_eq!(
        submit(
            &config,
            &Ask {
                kind: ObjectKind::Role,
                ..ask()
            }
        ),
        Ok(1)
    );
}

#[test]
fn require_end_date_asks_for_a_remove_date() {
    let mut config = AccessRequestConfig::default();
    config.entitlement.access.require_end_date = true;
    let r = refusal(submit(&config, &ask()));
    assert_eq!(
        r,
        Refusal::EndDateRequired {
            path: "requestedItems[0]".into(),
            rule: "requireEndDate"
        }
    );
    assert!(r.to_string().contains("removeDate is required"), "{r}");
    let dated = Ask {
        remove: Some(at("2027-03-01T00:00:00Z")),
        ..ask()
    };
    assert_eq!(submit(&config, &dated), Ok(1));
    assert_eq!(
        submit(
            &config,
            &Ask {
                kind: ObjectKind::AccessProfile,
                ..ask()
            }
        ),
        Ok(1)
    );
}

#[test]
fn max_permitted_access_duration_counts_from_the_start() {
    let mut config = AccessRequestConfig::default();
    config.entitlement.access.max_duration = Some(AccessDuration {
        value: 7,
        unit: TimeUnit::Days,
    });
    // Unbounded access would exceed any maximum.
    assert_eq!(
        refusal(submit(&config, &ask())),
        Refusal::EndDateRequired {
            path: "requestedItems[0]".into(),
            rule: "maxPermittedAccessDuration"
        }
    );
    // From now (2027-01-10T12:00Z): the limit itself passes, a millisecond more does not.
    let limit = at("2027-01-17T12:00:00Z");
    assert_eq!(
        submit(
            &config,
            &Ask {
                remove: Some(limit),
                ..ask()
            }
        ),
        Ok(1)
    );
    let over = at("2027-01-17T12:00:00.001Z");
    let r = refusal(submit(
        &config,
        &Ask {
            remove: Some(over),
            ..ask()
        },
    ));
    assert_eq!(
        r,
        Refusal::TooLong {
            path: "requestedItems[0]".into(),
            remove: over,
            latest: limit,
            max: AccessDuration {
                value: 7,
                unit: TimeUnit::Days
            },
        }
    );
    assert!(r.to_string().contains("7 DAYS"), "{r}");
    // From the start date when there is one.
    let start = Ask {
        start: Some(at("2027-02-01T00:00:00Z")),
        remove: Some(at("2027-02-08T00:00:00Z")),
        ..ask()
    };
    assert_eq!(submit(&config, &start), Ok(1));
    let start_over = Ask {
        remove: Some(at("2027-02-08T00:00:01Z")),
        ..start
    };
    assert!(matches!(
        refusal(submit(&config, &start_over)),
        Refusal::TooLong { .. }
    ));
}

#[test]
fn denial_comment_required_applies_to_entitlements() {
    let mut config = AccessRequestConfig::default();
    let specs = |kind| {
        let mut open = AccessRequestConfig::default();
        open.on_behalf_of.anyone_by_anyone = true;
        let submission = Submission {
            request_type: RequestType::Grant,
            requested_for: Some(vec![who("bob")]),
            requested_items: Some(vec![RequestedItem {
                object: Some(ObjectRef {
                    kind,
                    id: ObjectId::parse("x").unwrap(),
                }),
                ..Default::default()
            }]),
            requested_for_with_items: None,
            client_metadata: Default::default(),
        };
        validate_submit(
            AccessRequestId::from_u128(1),
            &submission,
            &who("alice"),
            false,
            &open,
            now(),
            |_, _| Existing::default(),
        )
        .unwrap()
        .remove(0)
    };
    let entitlement = specs(ObjectKind::Entitlement);
    assert_eq!(config.check_denial(&entitlement, None), Ok(()));
    config.entitlement.access.denial_comment_required = true;
    for comment in [None, Some(""), Some(" \n")] {
        let r = config.check_denial(&entitlement, comment).unwrap_err();
        assert_eq!(r, Refusal::DenialCommentRequired);
        assert!(r.to_string().contains("denialCommentRequired"));
    }
    assert_eq!(config.check_denial(&entitlement, Some("no")), Ok(()));
    assert_eq!(config.check_denial(&specs(ObjectKind::Role), None), Ok(()));
}

#[test]
fn enum_spellings_round_trip() {
    for t in [
        ApproverType::EntitlementOwner,
        ApproverType::SourceOwner,
        ApproverType::Manager,
        ApproverType::GovernanceGroup,
        ApproverType::Workflow,
    ] {
        assert_eq!(ApproverType::parse(t.as_str()), Some(t));
    }
    for u in [
        TimeUnit::Hours,
        TimeUnit::Days,
        TimeUnit::Weeks,
        TimeUnit::Months,
    ] {
        assert_eq!(TimeUnit::parse(u.as_str()), Some(u));
    }
    assert_eq!(ApproverType::parse("manager"), None);
    assert_eq!(TimeUnit::parse("YEARS"), None);
}
