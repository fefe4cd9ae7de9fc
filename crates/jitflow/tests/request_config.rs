//! The access request config through the engine: defaults before any change, put and read
//! back, durable across a restart, per tenant, a bad config refused with nothing changed, each
//! enforced rule refusing a submission (or a denial) that breaks it and accepting one that
//! meets it, and the store's replay `verify` clean afterwards.

mod common;

use std::time::Duration;

use common::{Harness, START, Storage, Target, caller, config};
use jitflow::clock::ManualClock;
use jitflow::requests::Rights;
use jitflow::{Caller, Config, Error};
use jitflow_core::id::{IdentityId, ObjectId, TenantId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::request::config::{AccessDuration, Refusal, TimeUnit, View};
use jitflow_core::request::submit::{ObjectKind, ObjectRef, RequestedItem};
use jitflow_core::request::{
    self, AccessRequestConfig, ItemStatus, Rejection, RequestType, Submission,
};
use jitflow_core::time::{Minutes, Timestamp};

fn who(name: &str) -> Caller {
    Caller {
        tenant: caller().tenant,
        actor: Actor::Identity(IdentityId::parse(name).unwrap()),
    }
}

async fn harness(store: &Storage, approvers: &[&str]) -> Harness {
    let clock = ManualClock::new(Timestamp::from_millis(START).unwrap());
    let config = Config {
        approvers: approvers
            .iter()
            .map(|a| IdentityId::parse(a).unwrap())
            .collect(),
        approval_timeout: Duration::from_secs(3600),
        ..config()
    };
    Harness::open_with(store, clock, Target::default(), config).await
}

/// A grant of one entitlement for `identity`.
fn grant(identity: &str, comment: Option<&str>, remove: Option<Timestamp>) -> Submission {
    Submission {
        request_type: RequestType::Grant,
        requested_for: Some(vec![IdentityId::parse(identity).unwrap()]),
        requested_items: Some(vec![RequestedItem {
            object: Some(ObjectRef {
                kind: ObjectKind::Entitlement,
                id: ObjectId::parse("auditors").unwrap(),
            }),
            comment: comment.map(str::to_owned),
            remove_date: remove,
            ..Default::default()
        }]),
        requested_for_with_items: None,
        client_metadata: Default::default(),
    }
}

/// The config refusal behind an engine error.
fn refusal(e: Error) -> Refusal {
    match e {
        Error::RequestRejected(Rejection::Invalid(request::Error::Config(r))) => r,
        other => panic!("expected a config refusal, got {other:?}"),
    }
}

fn later(h: &Harness, minutes: u32) -> Timestamp {
    h.engine.now().plus_minutes(Minutes(minutes))
}

#[tokio::test]
async fn put_and_get_round_trip_per_tenant_and_survive_a_restart() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &[]).await;
    let tenant = caller().tenant;
    assert_eq!(
        h.engine.access_request_config(&tenant).unwrap(),
        AccessRequestConfig::default()
    );
    let mut config = AccessRequestConfig::default();
    config.on_behalf_of.anyone_by_anyone = true;
    config.entitlement.access.require_end_date = true;
    config.gov_group_visibility_enabled = true;
    let stored = h
        .engine
        .put_access_request_config(&caller(), View::All, config.clone())
        .await
        .unwrap();
    assert_eq!(stored, config);
    assert_eq!(h.engine.access_request_config(&tenant).unwrap(), config);
    // Another tenant still has the defaults.
    let other = TenantId::parse("globex").unwrap();
    assert_eq!(
        h.engine.access_request_config(&other).unwrap(),
        AccessRequestConfig::default()
    );
    let h = h.restart().await;
    assert_eq!(h.engine.access_request_config(&tenant).unwrap(), config);
    // A second change records the first as its previous value; the log replays clean.
    config.approvals_must_be_external = true;
    h.engine
        .put_access_request_config(&caller(), View::All, config.clone())
        .await
        .unwrap();
    assert_eq!(h.engine.access_request_config(&tenant).unwrap(), config);
    let report = h.engine.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    assert_eq!(report.request_configs, 1);
    h.engine.shutdown().await;
}

#[tokio::test]
async fn racing_puts_of_the_two_versions_keep_each_others_fields() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &[]).await;
    let tenant = caller().tenant;
    // A v1 PUT (setting the v1-only autoApprovalEnabled) and a v2 PUT (setting the v2-only
    // govGroupVisibilityEnabled) in flight together: the writer merges each with the config as
    // it stands when it is decided, so neither drops the other's field, in either order.
    let mut v1 = AccessRequestConfig {
        auto_approval_enabled: true,
        ..Default::default()
    };
    v1.entitlement.access.require_end_date = true;
    let mut v2 = AccessRequestConfig {
        gov_group_visibility_enabled: true,
        ..Default::default()
    };
    v2.entitlement.access.require_end_date = true;
    let who = caller();
    let (a, b) = tokio::join!(
        h.engine.put_access_request_config(&who, View::V1, v1),
        h.engine.put_access_request_config(&who, View::V2, v2),
    );
    a.unwrap();
    b.unwrap();
    let stored = h.engine.access_request_config(&tenant).unwrap();
    assert!(stored.auto_approval_enabled, "{stored:?}");
    assert!(stored.gov_group_visibility_enabled, "{stored:?}");
    assert!(stored.entitlement.access.require_end_date, "{stored:?}");
    // A v2 PUT that leaves a shared field at its default resets it, and keeps the v1 field.
    let stored = h
        .engine
        .put_access_request_config(&caller(), View::V2, AccessRequestConfig::default())
        .await
        .unwrap();
    assert!(stored.auto_approval_enabled);
    assert!(!stored.gov_group_visibility_enabled);
    assert!(!stored.entitlement.access.require_end_date);
    let report = h.engine.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    h.engine.shutdown().await;
}

#[tokio::test]
async fn a_bad_config_is_refused_typed_and_changes_nothing() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &[]).await;
    let before = h.engine.last_sequence().unwrap();
    let mut bad = AccessRequestConfig::default();
    bad.entitlement.access.max_duration = Some(AccessDuration {
        value: 0,
        unit: TimeUnit::Weeks,
    });
    let e = h
        .engine
        .put_access_request_config(&caller(), View::All, bad)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::RequestConfig(request::config::Error::Duration { value: 0, .. })
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("maxPermittedAccessDuration"), "{e}");
    assert_eq!(h.engine.last_sequence().unwrap(), before);
    assert_eq!(
        h.engine.access_request_config(&caller().tenant).unwrap(),
        AccessRequestConfig::default()
    );
    h.engine.shutdown().await;
}

#[tokio::test]
async fn on_behalf_of_follows_the_config_and_admins_pass() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &[]).await;
    let before = h.engine.last_sequence().unwrap();
    // Defaults: a user may request only for itself.
    let e = h
        .engine
        .submit_request(&who("carol"), Rights::User, &grant("dave", None, None))
        .await
        .unwrap_err();
    assert!(matches!(refusal(e), Refusal::OnBehalfOf { .. }));
    assert_eq!(h.engine.last_sequence().unwrap(), before);
    let (_, items) = h
        .engine
        .submit_request(&who("carol"), Rights::User, &grant("carol", None, None))
        .await
        .unwrap();
    assert_eq!(items[0].status, ItemStatus::Granting);
    h.engine
        .submit_request(&who("carol"), Rights::Admin, &grant("erin", None, None))
        .await
        .unwrap();
    let mut config = AccessRequestConfig::default();
    config.on_behalf_of.anyone_by_anyone = true;
    h.engine
        .put_access_request_config(&caller(), View::All, config)
        .await
        .unwrap();
    h.engine
        .submit_request(&who("carol"), Rights::User, &grant("dave", None, None))
        .await
        .unwrap();
    h.engine.shutdown().await;
}

#[tokio::test]
async fn entitlement_rules_refuse_what_breaks_them_and_accept_what_meets_them() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &[]).await;
    let mut config = AccessRequestConfig::default();
    config.entitlement.access.request_comment_required = true;
    config.entitlement.access.require_end_date = true;
    config.entitlement.access.max_duration = Some(AccessDuration {
        value: 2,
        unit: TimeUnit::Hours,
    });
    h.engine
        .put_access_request_config(&caller(), View::All, config)
        .await
        .unwrap();
    let before = h.engine.last_sequence().unwrap();
    let alice = who("alice");
    let submit = |s: Submission| {
        let h = &h;
        let alice = alice.clone();
        async move { h.engine.submit_request(&alice, Rights::User, &s).await }
    };
    let comment = refusal(
        submit(grant("alice", None, Some(later(&h, 60))))
            .await
            .unwrap_err(),
    );
    assert!(matches!(comment, Refusal::CommentRequired { .. }));
    assert!(comment.to_string().contains("requestCommentRequired"));
    let end = refusal(
        submit(grant("alice", Some("audit"), None))
            .await
            .unwrap_err(),
    );
    assert!(matches!(
        end,
        Refusal::EndDateRequired {
            rule: "requireEndDate",
            ..
        }
    ));
    let long = refusal(
        submit(grant("alice", Some("audit"), Some(later(&h, 121))))
            .await
            .unwrap_err(),
    );
    assert!(matches!(long, Refusal::TooLong { .. }));
    assert!(long.to_string().contains("2 HOURS"), "{long}");
    assert_eq!(h.engine.last_sequence().unwrap(), before);
    let (_, items) = submit(grant("alice", Some("audit"), Some(later(&h, 120))))
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    let report = h.engine.verify().unwrap();
    assert!(report.is_clean(), "{:#?}", report.differences);
    h.engine.shutdown().await;
}

#[tokio::test]
async fn approvals_must_be_external_refuses_users_and_passes_admins() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &[]).await;
    let config = AccessRequestConfig {
        approvals_must_be_external: true,
        ..Default::default()
    };
    h.engine
        .put_access_request_config(&caller(), View::All, config)
        .await
        .unwrap();
    let e = h
        .engine
        .submit_request(&caller(), Rights::User, &grant("alice", None, None))
        .await
        .unwrap_err();
    assert_eq!(refusal(e), Refusal::ApprovalsExternal);
    h.engine
        .submit_request(&caller(), Rights::Admin, &grant("alice", None, None))
        .await
        .unwrap();
    h.engine.shutdown().await;
}

#[tokio::test]
async fn denial_comment_required_applies_to_rejections() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &["bob"]).await;
    let (_, items) = h
        .engine
        .submit_request(&caller(), Rights::User, &grant("alice", None, None))
        .await
        .unwrap();
    let approval = items[0].approval.id;
    let mut config = AccessRequestConfig::default();
    config.entitlement.access.denial_comment_required = true;
    h.engine
        .put_access_request_config(&caller(), View::All, config)
        .await
        .unwrap();
    let before = h.engine.last_sequence().unwrap();
    let e = h
        .engine
        .reject(&who("bob"), Rights::User, approval, None)
        .await
        .unwrap_err();
    assert_eq!(refusal(e), Refusal::DenialCommentRequired);
    assert_eq!(h.engine.last_sequence().unwrap(), before);
    let item = h
        .engine
        .reject(&who("bob"), Rights::User, approval, Some("not now".into()))
        .await
        .unwrap();
    assert_eq!(item.status, ItemStatus::Rejected);
    h.engine.shutdown().await;
}

/// A config change queued before a submission applies to it, whether the change committed
/// before the submission read the config or is still in the writer's queue: the writer checks
/// the config again at decide time.
#[tokio::test]
async fn a_change_queued_before_a_submission_applies_to_it() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = harness(&store, &[]).await;
    let config = AccessRequestConfig {
        approvals_must_be_external: true,
        ..Default::default()
    };
    let (admin, user) = (caller(), caller());
    let submission = grant("alice", None, None);
    // `join!` polls the put first, and queuing is synchronous: the put is in the writer's queue
    // before the submission reads anything.
    let put = h
        .engine
        .put_access_request_config(&admin, View::All, config);
    let submit = h.engine.submit_request(&user, Rights::User, &submission);
    let (put, submit) = tokio::join!(put, submit);
    put.unwrap();
    assert_eq!(refusal(submit.unwrap_err()), Refusal::ApprovalsExternal);
    h.engine.shutdown().await;
}
