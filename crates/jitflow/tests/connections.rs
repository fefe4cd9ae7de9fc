//! Connection management through the engine: JSON Patch, bulk type updates, bulk import, and
//! the audit export, with a manual clock.

mod common;

use common::{Harness, Storage, caller, conn, spec};
use jitflow::bulk::{ItemError, MAX_IMPORT, MAX_TYPE_UPDATES, TypeUpdate};
use jitflow::export::json_line;
use jitflow::{Caller, Error, Stream};
use jitflow_core::activation::ActivationStatus;
use jitflow_core::connection::{ConnectionState, ConnectionType, PatchError};
use jitflow_core::id::{EntitlementId, IdentityId, TenantId};
use jitflow_core::lifecycle::{Actor, Rejection};
use jitflow_core::policy::{PatchOp, PatchValue};

fn op(path: &str, value: PatchValue) -> PatchOp {
    PatchOp {
        op: Some("replace".into()),
        path: path.into(),
        value,
    }
}

/// The number of events in a connection's stream.
fn stream_len(h: &Harness, id: jitflow_core::id::ConnectionId) -> usize {
    h.engine
        .history(&caller().tenant, Stream::Connection(id), 0, 1000)
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_changes_both_fields_with_one_event_each() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = conn(1);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    let ops = [
        op("/standalone", PatchValue::Bool(true)),
        op("/type", PatchValue::Text("standing".into())),
    ];
    let c = h
        .engine
        .patch_connection(&caller(), id, &ops)
        .await
        .unwrap();
    assert!(c.spec.standalone);
    assert_eq!(c.kind(), ConnectionType::Standing);

    let events = h
        .engine
        .history(&caller().tenant, Stream::Connection(id), 1, 100)
        .unwrap();
    let names: Vec<_> = events
        .iter()
        .map(|e| match &e.envelope.payload {
            jitflow::Payload::Connection(e) => (e.change.name(), e.actor.clone()),
            jitflow::Payload::Policy(_)
            | jitflow::Payload::Request(_)
            | jitflow::Payload::RequestConfig(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        names,
        [
            ("updated", caller().actor),
            ("type_changed", caller().actor)
        ],
        "one event per field, each recording who made it"
    );

    // A patch that changes nothing commits nothing.
    h.engine
        .patch_connection(&caller(), id, &ops)
        .await
        .unwrap();
    assert_eq!(stream_len(&h, id), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_patches_are_refused_and_change_nothing() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = conn(1);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    let cases: Vec<(Vec<PatchOp>, PatchError)> = vec![
        (Vec::new(), PatchError::Empty),
        (
            vec![
                op("/standalone", PatchValue::Bool(true)),
                op("/state", PatchValue::Text("ACTIVE".into())),
            ],
            PatchError::UnknownPath {
                index: 1,
                path: "/state".into(),
            },
        ),
        (
            vec![PatchOp {
                op: Some("remove".into()),
                path: "/standalone".into(),
                value: PatchValue::Null,
            }],
            PatchError::UnsupportedOp {
                index: 0,
                op: "remove".into(),
            },
        ),
        (
            vec![op("/standalone", PatchValue::Text("yes".into()))],
            PatchError::WrongValueType {
                index: 0,
                path: "/standalone",
                expected: "a boolean",
                actual: "string".into(),
            },
        ),
        (
            vec![op("/type", PatchValue::Text("ADMIN".into()))],
            PatchError::InvalidType {
                index: 0,
                value: "ADMIN".into(),
            },
        ),
        (
            vec![op("/standalone", PatchValue::Bool(true)); 17],
            PatchError::TooMany(17),
        ),
    ];
    for (ops, expected) in cases {
        let err = h
            .engine
            .patch_connection(&caller(), id, &ops)
            .await
            .unwrap_err();
        assert_eq!(err, Error::Patch(expected));
    }
    assert_eq!(stream_len(&h, id), 1, "nothing was committed");
    assert!(!h.connection(id).spec.standalone);

    let missing = h
        .engine
        .patch_connection(
            &caller(),
            conn(99),
            &[op("/standalone", PatchValue::Bool(true))],
        )
        .await
        .unwrap_err();
    assert_eq!(missing, Error::Rejected(Rejection::NotFound(conn(99))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_is_all_or_nothing() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = conn(1);
    h.engine.register(&caller(), spec(id)).await.unwrap();
    // Hold the activation in ACTIVATING: the grant hangs at the target.
    h.target.state().hang = true;
    h.engine
        .activate(&caller(), id, None, None, None)
        .await
        .unwrap();
    h.wait_for(id, "the grant in flight", |c| {
        c.activation
            .as_ref()
            .is_some_and(|a| a.status == ActivationStatus::Activating)
    })
    .await;
    let before = stream_len(&h, id);

    // The standalone change alone would be accepted; the type change is not, so neither is.
    let err = h
        .engine
        .patch_connection(
            &caller(),
            id,
            &[
                op("/standalone", PatchValue::Bool(true)),
                op("/type", PatchValue::Text("STANDING".into())),
            ],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Rejected(Rejection::WrongState { .. })),
        "{err:?}"
    );
    assert_eq!(stream_len(&h, id), before);
    assert!(!h.connection(id).spec.standalone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_patches_move_access() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = h.activated(conn(1), None).await;
    let retype = |to: &str| [op("/type", PatchValue::Text(to.into()))];

    // JIT -> STANDING while the activation runs keeps the access and ends its timers.
    let c = h
        .engine
        .patch_connection(&caller(), id, &retype("STANDING"))
        .await
        .unwrap();
    assert_eq!(
        (c.kind(), c.state),
        (ConnectionType::Standing, ConnectionState::Active)
    );
    assert!(c.timers().is_empty(), "no expiry for standing access");
    assert!(h.target.state().held.contains(&id));

    // STANDING -> JIT revokes the standing grant and leaves the connection AVAILABLE.
    h.engine
        .patch_connection(&caller(), id, &retype("JIT"))
        .await
        .unwrap();
    h.wait_for(id, "AVAILABLE", |c| c.state == ConnectionState::Available)
        .await;
    assert!(!h.target.state().held.contains(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_type_update_answers_each_item() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    for n in 1..=3 {
        h.engine.register(&caller(), spec(conn(n))).await.unwrap();
    }
    let item = |id: String, kind: &str| TypeUpdate {
        connection_id: id,
        kind: kind.into(),
    };
    let items = [
        item(conn(1).to_string(), "STANDING"),
        item(conn(2).to_string().replace('-', ""), "JIT"),
        item(conn(3).to_string(), "XYZ"),
        item(conn(1).to_string(), "JIT"),
        item(conn(9).to_string(), "JIT"),
        item("not-a-uuid".into(), "JIT"),
        item(conn(3).to_string(), "NA"),
    ];
    let results = h.engine.bulk_change_type(&caller(), &items).await.unwrap();
    assert_eq!(results.len(), items.len());
    assert_eq!(
        results[0].as_ref().unwrap().kind(),
        ConnectionType::Standing
    );
    assert_eq!(results[1].as_ref().unwrap().kind(), ConnectionType::Jit);
    assert_eq!(results[2], Err(ItemError::InvalidType("XYZ".into())));
    assert_eq!(results[3], Err(ItemError::Duplicate));
    assert_eq!(
        results[4],
        Err(ItemError::Engine(Error::Rejected(Rejection::NotFound(
            conn(9)
        ))))
    );
    assert!(matches!(results[5], Err(ItemError::InvalidId(_))));
    assert_eq!(
        results[6],
        Err(ItemError::InvalidType("NA".into())),
        "the bulk call's enum is JIT and STANDING"
    );
    // One event for the one item that changed something.
    assert_eq!(stream_len(&h, conn(1)), 2);
    assert_eq!(stream_len(&h, conn(2)), 1, "already JIT: nothing to commit");
    assert_eq!(stream_len(&h, conn(3)), 1);

    for len in [0, MAX_TYPE_UPDATES + 1] {
        let items = vec![item(conn(1).to_string(), "JIT"); len];
        let err = h
            .engine
            .bulk_change_type(&caller(), &items)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{len} items: {err:?}");
    }
    assert_eq!(h.connection(conn(1)).kind(), ConnectionType::Standing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_registers_each_spec_on_its_own() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    h.engine.register(&caller(), spec(conn(2))).await.unwrap();
    let mut bad = spec(conn(3));
    bad.identity_name = "x".repeat(10_000);
    let results = h
        .engine
        .import(
            &caller(),
            vec![spec(conn(1)), spec(conn(2)), bad, spec(conn(4))],
        )
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().id(), conn(1));
    assert_eq!(
        results[1],
        Err(Error::Rejected(Rejection::AlreadyExists(conn(2))))
    );
    assert!(matches!(
        results[2],
        Err(Error::Rejected(Rejection::InvalidField {
            field: "identityName",
            ..
        }))
    ));
    assert_eq!(results[3].as_ref().unwrap().id(), conn(4));
    assert!(
        h.engine
            .connection(&caller().tenant, conn(3))
            .unwrap()
            .is_none()
    );

    let too_many = vec![spec(conn(5)); MAX_IMPORT + 1];
    assert!(matches!(
        h.engine.import(&caller(), too_many).await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        h.engine.import(&caller(), Vec::new()).await,
        Err(Error::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_assignments_of_governed_entitlements_become_jit() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let mut policy = common::policy();
    policy.apply_to_future_assignments = true;
    policy.entitlement_ids = vec![EntitlementId::parse("domain-admins").unwrap()];
    h.engine.put_policy(&caller(), policy).await.unwrap();

    let mut governed = spec(conn(1));
    governed.kind = ConnectionType::Standing;
    let mut other = spec(conn(2));
    other.kind = ConnectionType::Standing;
    other.entitlement = EntitlementId::parse("printers").unwrap();
    let results = h
        .engine
        .import(&caller(), vec![governed, other])
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().kind(), ConnectionType::Jit);
    assert_eq!(
        results[1].as_ref().unwrap().kind(),
        ConnectionType::Standing
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_pages_json_lines_per_tenant() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let id = h.activated(conn(1), None).await;
    h.engine
        .deactivate(&caller(), id, None, None)
        .await
        .unwrap();
    h.wait_for(id, "AVAILABLE", |c| c.state == ConnectionState::Available)
        .await;
    let other = Caller {
        tenant: TenantId::parse("globex").unwrap(),
        actor: Actor::Identity(IdentityId::parse("bob").unwrap()),
    };
    h.engine.register(&other, spec(conn(2))).await.unwrap();
    let last = h.engine.last_sequence().unwrap();

    // Walk the whole log in pages of 3, keeping acme's events only.
    let mut after = 0;
    let mut lines = Vec::new();
    while after < last {
        let page = h.engine.export(Some(&caller().tenant), after, 3).unwrap();
        assert!(page.next_after > after, "every page moves on");
        assert!(
            page.next_after - after <= 3,
            "a page scans at most its limit"
        );
        lines.extend(page.events.iter().map(json_line));
        after = page.next_after;
    }
    let all = h.engine.export(None, 0, 1000).unwrap();
    assert_eq!(all.events.len() as u64, last);
    assert_eq!(
        lines.len() as u64,
        last - 1,
        "globex's registration is left out"
    );

    let mut previous = 0;
    let mut kinds = Vec::new();
    for line in &lines {
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let sequence = v["sequence"].as_u64().unwrap();
        assert!(sequence > previous, "in log order");
        previous = sequence;
        assert_eq!(v["tenant"], "acme");
        let at = v["at"].as_str().unwrap();
        assert!(
            jitflow_core::time::Timestamp::parse_rfc3339(at).is_ok(),
            "{at}"
        );
        let kind = v["kind"].as_str().unwrap().to_owned();
        if kind == "connection" {
            assert_eq!(v["streamId"], id.to_string(), "ids as canonical text");
            assert_eq!(v["event"]["connection"], id.to_string());
        }
        kinds.push(kind);
    }
    assert_eq!(kinds[0], "policy", "the harness stores the policy first");
    assert!(kinds[1..].iter().all(|k| k == "connection"));
    let first: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert!(
        first["event"]["change"]["Registered"].is_object(),
        "{first}"
    );

    assert!(matches!(
        h.engine.export(None, 0, 0),
        Err(Error::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_assignment() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    h.engine.register(&caller(), spec(conn(1))).await.unwrap();
    let twin = |n| {
        let mut s = spec(conn(n));
        s.account = spec(conn(1)).account;
        s
    };
    let taken = Error::Rejected(Rejection::AssignmentTaken {
        connection: conn(2),
        existing: conn(1),
    });
    assert_eq!(h.engine.register(&caller(), twin(2)).await, Err(taken));

    // Within one batch: the first of two twins wins.
    let mut a = spec(conn(3));
    a.account = jitflow_core::id::AccountId::parse("shared").unwrap();
    let mut b = spec(conn(4));
    b.account = a.account.clone();
    let results = h.engine.import(&caller(), vec![a, b]).await.unwrap();
    assert!(results[0].is_ok());
    assert_eq!(
        results[1],
        Err(Error::Rejected(Rejection::AssignmentTaken {
            connection: conn(4),
            existing: conn(3),
        }))
    );

    // Once the holder is removed, the assignment is free again.
    h.engine.remove(&caller(), conn(1)).await.unwrap();
    h.engine.register(&caller(), twin(2)).await.unwrap();
    let found = h
        .engine
        .connection_by_assignment(
            &caller(),
            &spec(conn(1)).entitlement,
            &spec(conn(1)).identity,
            &spec(conn(1)).account,
        )
        .unwrap();
    assert_eq!(found.map(|c| c.id()), Some(conn(2)));
}
