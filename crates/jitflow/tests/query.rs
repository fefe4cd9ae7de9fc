//! Queries through the engine: the current-identity variants are always constrained to the
//! identity, the tenant always comes from the caller, and the history follows activations.

mod common;

use common::{Harness, Storage, caller, conn, spec};
use jitflow::query::{self, Query};
use jitflow::{Caller, Error};
use jitflow_core::connection::ConnectionState;
use jitflow_core::id::{IdentityId, TenantId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::time::Minutes;

fn bob() -> IdentityId {
    IdentityId::parse("bob").unwrap()
}

fn q(collection: &query::Collection, filters: Option<&str>, sorters: Option<&str>) -> Query {
    Query::parse(collection, filters, sorters, None, None, Some("true"), None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_tenant_scopes_hold_whatever_the_filter_says() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let alice = caller();
    // Alice's connections 1 and 2 (2 activated), Bob's 3 and 4 (4 activated), each through an
    // account of its own.
    h.activated(conn(2), Some(Minutes(30))).await;
    h.engine.register(&alice, spec(conn(1))).await.unwrap();
    for n in [3, 4] {
        let mut s = spec(conn(n));
        s.identity = bob();
        s.account = jitflow_core::id::AccountId::parse(&format!("bob-adm-{n}")).unwrap();
        h.engine.register(&alice, s).await.unwrap();
    }
    h.engine
        .activate(&alice, conn(4), None, None, None)
        .await
        .unwrap();
    h.wait_for(conn(4), "ACTIVE", |c| c.state == ConnectionState::Active)
        .await;

    let all = h
        .engine
        .connections(&alice, &q(query::CONNECTIONS, None, None))
        .unwrap();
    assert_eq!(all.total, Some(4));
    let ids = |page: &query::Page<jitflow_core::connection::Connection>| {
        page.items.iter().map(|c| c.id()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&all), vec![conn(1), conn(2), conn(3), conn(4)]);

    for filters in [
        None,
        Some(r#"identity.id eq "alice""#),
        Some(r#"identity.id in ("alice", "bob")"#),
        Some(r#"not identity.id eq "bob" or state.value eq "ACTIVE""#),
    ] {
        let page = h
            .engine
            .connections_of_identity(&alice, &bob(), &q(query::CONNECTIONS, filters, None))
            .unwrap();
        assert!(
            page.items.iter().all(|c| c.spec.identity == bob()),
            "{filters:?}"
        );
        let unscoped = h
            .engine
            .connections(&alice, &q(query::CONNECTIONS, filters, None))
            .unwrap();
        let expected: Vec<_> = unscoped
            .items
            .iter()
            .filter(|c| c.spec.identity == bob())
            .map(|c| c.id())
            .collect();
        assert_eq!(ids(&page), expected, "{filters:?}");
        assert_eq!(page.total, Some(expected.len() as u64));
    }
    let active = h
        .engine
        .connections(
            &alice,
            &q(
                query::CONNECTIONS,
                Some(r#"state.value eq "active""#),
                Some("-id"),
            ),
        )
        .unwrap();
    assert_eq!(ids(&active), vec![conn(4), conn(2)]);

    // History: one record per activation, scoped the same way.
    let history = h
        .engine
        .activation_history(&alice, &q(query::HISTORY, None, None))
        .unwrap();
    assert_eq!(history.total, Some(2));
    assert!(
        history
            .items
            .iter()
            .all(|r| r.status().history_str() == "PROVISIONED")
    );
    let mine = h
        .engine
        .activation_history_of_identity(&alice, &bob(), &q(query::HISTORY_OF_IDENTITY, None, None))
        .unwrap();
    assert_eq!(mine.items.len(), 1);
    assert_eq!(
        (mine.items[0].activation.connection, &mine.items[0].identity),
        (conn(4), &bob())
    );
    // A history query the current-identity list does not take is refused, typed.
    let refused = h.engine.activation_history_of_identity(
        &alice,
        &bob(),
        &q(query::HISTORY, Some(r#"identityId eq "alice""#), None),
    );
    assert!(matches!(refused, Err(Error::Query(_))), "{refused:?}");

    // The three ids of an assignment find its connection.
    let mut s = spec(conn(5));
    s.account = jitflow_core::id::AccountId::parse("alice-ro").unwrap();
    h.engine.register(&alice, s.clone()).await.unwrap();
    let found = h
        .engine
        .connection_by_assignment(&alice, &s.entitlement, &s.identity, &s.account)
        .unwrap();
    assert_eq!(found.map(|c| c.id()), Some(conn(5)));
    // Bob's assignment through account bob-adm-4 is connection 4's.
    let bob_account = jitflow_core::id::AccountId::parse("bob-adm-4").unwrap();
    let found = h
        .engine
        .connection_by_assignment(&alice, &s.entitlement, &bob(), &bob_account)
        .unwrap();
    assert_eq!(found.map(|c| c.id()), Some(conn(4)));

    // Another tenant sees nothing of acme's.
    let other = Caller {
        tenant: TenantId::parse("globex").unwrap(),
        actor: Actor::Identity(bob()),
    };
    let page = h
        .engine
        .connections(&other, &q(query::CONNECTIONS, None, None))
        .unwrap();
    assert_eq!((page.items.len(), page.total), (0, Some(0)));
    let page = h
        .engine
        .activation_history(&other, &q(query::HISTORY, None, None))
        .unwrap();
    assert_eq!((page.items.len(), page.total), (0, Some(0)));
    let page = h
        .engine
        .connections_of_identity(&other, &bob(), &q(query::CONNECTIONS, None, None))
        .unwrap();
    assert!(page.items.is_empty());
    assert_eq!(
        h.engine
            .connection_by_assignment(&other, &s.entitlement, &s.identity, &s.account)
            .unwrap(),
        None
    );
    h.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_records_follow_the_activation_to_its_end() {
    let Some(store) = Storage::new() else {
        return;
    };
    let h = Harness::new(&store).await;
    let alice = caller();
    h.activated(conn(1), Some(Minutes(30))).await;
    h.engine
        .deactivate(&alice, conn(1), None, None)
        .await
        .unwrap();
    h.wait_for(conn(1), "AVAILABLE", |c| {
        c.state == ConnectionState::Available
    })
    .await;
    let page = h
        .engine
        .activation_history(
            &alice,
            &q(query::HISTORY, Some(r#"status eq "REVOKED""#), None),
        )
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let r = &page.items[0];
    assert!(r.provision_completed().is_some() && r.deprovision_complete().is_some());
    assert!(r.deprovision_start() <= r.deprovision_complete());
    assert_eq!(
        r.activation.requested_by,
        Actor::Identity(IdentityId::parse("alice").unwrap())
    );
    // The record stays after the connection is removed.
    h.engine.remove(&alice, conn(1)).await.unwrap();
    let page = h
        .engine
        .activation_history(&alice, &q(query::HISTORY, None, None))
        .unwrap();
    assert_eq!(page.total, Some(1));
    h.engine.shutdown().await;
}
