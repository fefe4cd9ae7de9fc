//! The demo: a provisioner that logs grants and revokes (and can fail a fraction of calls, to
//! show retries, or drop a fraction of revokes silently, to show drift found and revoked), and
//! a small tenant (`acme`) with identities, entitlements, connections and a policy, so that
//! the README's curl examples work at once.
//!
//! A real deployment replaces [`DemoProvisioner`] with its own [`Provisioner`]; see the README.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jitflow::hooks::{BoxFuture, EffectRequest, Holding, ProvisionError, Provisioner};
use jitflow::{Caller, Engine};
use jitflow_core::connection::{ConnectionSpec, ConnectionType};
use jitflow_core::id::{AccountId, ConnectionId, EntitlementId, IdentityId, SourceId, TenantId};
use jitflow_core::lifecycle::{Actor, Rejection};
use jitflow_core::policy::Policy;
use jitflow_core::time::Minutes;

/// The demo tenant.
pub const TENANT: &str = "acme";
/// The demo's policy administrator and org administrator.
pub const ADMIN: &str = "admin";
/// The demo's JIT connection of alice: Domain Admins on Active Directory.
pub const ALICE_DOMAIN_ADMINS: &str = "757fb803-9024-5861-e510-83a56e4c5bd3";
/// The demo's JIT connection of alice: Global Admin on Entra ID.
pub const ALICE_GLOBAL_ADMIN: &str = "667fb802-0025-4865-a519-91a56e4c5b7e";
/// The demo's JIT connection of bob: Domain Admins on Active Directory.
pub const BOB_DOMAIN_ADMINS: &str = "367fb802-1026-1835-a619-11a56e4c5be3";
/// The demo's standing connection of bob: Help Desk on Active Directory.
pub const BOB_HELP_DESK: &str = "8a9b0c1d-2e3f-4a5b-6c7d-8e9f0a1b2c3d";
/// The demo policy's id.
pub const POLICY_ID: &str = "6d38a587-302a-41d1-a3b1-ffae2c25c960";

/// The demo's reconciliation pace: connections a second.
pub const RECONCILE_RATE: u32 = 20;
/// The demo's reconciliation interval, from the end of one pass to the next.
pub const RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// The engine's settings in demo mode: the defaults, with the reconciliation on (the demo
/// target answers inspections), at [`RECONCILE_RATE`] every [`RECONCILE_INTERVAL`].
pub fn config() -> jitflow::Config {
    jitflow::Config {
        reconcile_rate: RECONCILE_RATE,
        reconcile_interval: RECONCILE_INTERVAL,
        ..jitflow::Config::default()
    }
}

/// A rate given on the command line that is not a fraction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{0}` is not a fraction from 0 to 1")]
pub struct RateError(pub String);

/// Reads a fraction of calls (0.0..=1.0), as `--demo-drop-rate` takes it.
pub fn parse_rate(text: &str) -> Result<f64, RateError> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| RateError(text.chars().take(64).collect()))
}

/// A provisioner that logs each call, fails a fraction of them (transiently) to show retries
/// with backoff, and drops a fraction of revokes silently (answers success, keeps the access)
/// to show drift found and revoked. It remembers what it granted and revoked since it started,
/// and answers inspections from that: held, not held, or unknown for a connection it has not
/// touched (after a restart it knows nothing, so the reconciliation compares nothing).
#[derive(Debug, Clone)]
pub struct DemoProvisioner {
    fail_rate: f64,
    drop_rate: f64,
    /// Whether the target holds each connection's access, for those it granted or revoked.
    holdings: Arc<Mutex<HashMap<(TenantId, ConnectionId), bool>>>,
}

/// `rate` clamped to 0.0..=1.0 (NaN: 0).
fn clamp(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

/// Whether a call falls within `rate` of all calls.
fn chance(rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let mut bytes = [0u8; 8];
    // Without randomness, pick nothing rather than everything.
    if getrandom::fill(&mut bytes).is_err() {
        return false;
    }
    (u64::from_le_bytes(bytes) as f64 / u64::MAX as f64) < rate
}

impl DemoProvisioner {
    /// A provisioner that fails `fail_rate` (0.0..=1.0, clamped) of its calls.
    pub fn new(fail_rate: f64) -> DemoProvisioner {
        DemoProvisioner {
            fail_rate: clamp(fail_rate),
            drop_rate: 0.0,
            holdings: Arc::default(),
        }
    }

    /// The same, dropping `drop_rate` (0.0..=1.0, clamped) of the revokes it does not fail:
    /// they answer success and the access stays.
    pub fn with_drop_rate(self, drop_rate: f64) -> DemoProvisioner {
        DemoProvisioner {
            drop_rate: clamp(drop_rate),
            ..self
        }
    }

    fn call(&self, what: &'static str, r: &EffectRequest) -> Result<(), ProvisionError> {
        let fail = chance(self.fail_rate);
        let dropped = !fail && what == "revoke" && chance(self.drop_rate);
        tracing::info!(
            target: "jitflow_shim::demo",
            call = what,
            tenant = %r.tenant,
            entitlement = %r.connection.entitlement_name,
            account = %r.connection.account_name,
            attempt = r.attempt,
            idempotency_key = %r.idempotency_key,
            failed = fail,
            dropped,
            "demo target: {what}{}",
            if dropped { " (dropped: the access stays)" } else { "" }
        );
        if fail {
            return Err(ProvisionError::transient(
                "503 Service Unavailable (demo failure)",
            ));
        }
        if !dropped {
            self.holdings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((r.tenant.clone(), r.connection.id), what == "grant");
        }
        Ok(())
    }
}

impl Provisioner for DemoProvisioner {
    fn grant(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        let result = self.call("grant", &request);
        Box::pin(async move { result })
    }

    fn revoke(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        let result = self.call("revoke", &request);
        Box::pin(async move { result })
    }

    fn inspect(&self, request: EffectRequest) -> BoxFuture<'_, Result<Holding, ProvisionError>> {
        let held = self
            .holdings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(request.tenant.clone(), request.connection.id))
            .copied();
        let holding = match held {
            Some(true) => Holding::Held,
            Some(false) => Holding::NotHeld,
            None => Holding::Unknown,
        };
        tracing::debug!(
            target: "jitflow_shim::demo",
            tenant = %request.tenant,
            entitlement = %request.connection.entitlement_name,
            account = %request.connection.account_name,
            ?holding,
            "demo target: inspect"
        );
        Box::pin(async move { Ok(holding) })
    }
}

/// Why the demo data could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A fixed demo value does not parse (a bug in this file).
    #[error("demo data: {0}")]
    Data(#[from] jitflow_core::id::Error),
    /// The engine refused a demo record.
    #[error("loading demo data: {0}")]
    Engine(#[from] jitflow::Error),
}

/// One demo connection: id, identity, identity name, entitlement, entitlement name, source,
/// source name, type.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    ConnectionType,
);

/// The demo's connections.
#[rustfmt::skip]
const ROWS: [Row; 4] = [
    (ALICE_DOMAIN_ADMINS, "alice", "Alice Liddell", "domain-admins", "Domain Admins", "ad", "Active Directory", ConnectionType::Jit),
    (ALICE_GLOBAL_ADMIN, "alice", "Alice Liddell", "global-admin", "Global Admin", "entra", "Entra ID", ConnectionType::Jit),
    (BOB_DOMAIN_ADMINS, "bob", "Bob Builder", "domain-admins", "Domain Admins", "ad", "Active Directory", ConnectionType::Jit),
    (BOB_HELP_DESK, "bob", "Bob Builder", "help-desk", "Help Desk", "ad", "Active Directory", ConnectionType::Standing),
];

fn spec(row: Row) -> Result<ConnectionSpec, Error> {
    let (id, identity, identity_name, entitlement, entitlement_name, source, source_name, kind) =
        row;
    Ok(ConnectionSpec {
        id: ConnectionId::parse(id)?,
        identity: IdentityId::parse(identity)?,
        identity_name: identity_name.to_owned(),
        account: AccountId::parse(&format!("{identity}-adm"))?,
        account_name: format!("{identity}.adm"),
        entitlement: EntitlementId::parse(entitlement)?,
        entitlement_name: entitlement_name.to_owned(),
        attribute_name: "memberOf".to_owned(),
        attribute_value: format!("CN={entitlement_name},DC=example,DC=com"),
        privilege_level: Some("HIGH".to_owned()),
        source: SourceId::parse(source)?,
        source_name: source_name.to_owned(),
        kind,
        standalone: false,
    })
}

/// Loads the demo tenant: the policy (if none is stored) and four connections (those not yet
/// registered). Safe to run on every start.
pub async fn load(engine: &Engine) -> Result<(), Error> {
    let tenant = TenantId::parse(TENANT)?;
    let caller = Caller {
        tenant: tenant.clone(),
        actor: Actor::Identity(IdentityId::parse(ADMIN)?),
    };
    if engine.policy(&tenant)?.is_none() {
        let mut policy = Policy::empty(POLICY_ID.to_owned());
        policy.entitlement_ids = vec![
            EntitlementId::parse("domain-admins")?,
            EntitlementId::parse("global-admin")?,
        ];
        policy.max_activation_period = Some(Minutes(240));
        policy.default_activation_period = Some(Minutes(60));
        policy.max_extension = Some(Minutes(120));
        policy.default_extension = Some(Minutes(30));
        policy.notification_recipients = vec!["security@example.com".to_owned()];
        policy.notification_template = Some("jit-activation-default".to_owned());
        engine.put_policy(&caller, policy).await?;
    }
    for row in ROWS {
        match engine.register(&caller, spec(row)?).await {
            Ok(_) | Err(jitflow::Error::Rejected(Rejection::AlreadyExists(_))) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
