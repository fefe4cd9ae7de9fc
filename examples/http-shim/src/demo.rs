//! The demo: a provisioner that logs grants and revokes (and can fail a fraction of calls, to
//! show retries), and a small tenant (`acme`) with identities, entitlements, connections and a
//! policy, so that the README's curl examples work at once.
//!
//! A real deployment replaces [`DemoProvisioner`] with its own [`Provisioner`]; see the README.

use jitflow::hooks::{BoxFuture, EffectRequest, ProvisionError, Provisioner};
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

/// A provisioner that logs each call and fails a fraction of them (transiently), to show
/// retries with backoff.
#[derive(Debug, Clone)]
pub struct DemoProvisioner {
    fail_rate: f64,
}

impl DemoProvisioner {
    /// A provisioner that fails `fail_rate` (0.0..=1.0, clamped) of its calls.
    pub fn new(fail_rate: f64) -> DemoProvisioner {
        let fail_rate = if fail_rate.is_nan() {
            0.0
        } else {
            fail_rate.clamp(0.0, 1.0)
        };
        DemoProvisioner { fail_rate }
    }

    fn fails(&self) -> bool {
        if self.fail_rate <= 0.0 {
            return false;
        }
        let mut bytes = [0u8; 8];
        // Without randomness, fail nothing rather than everything.
        if getrandom::fill(&mut bytes).is_err() {
            return false;
        }
        (u64::from_le_bytes(bytes) as f64 / u64::MAX as f64) < self.fail_rate
    }

    fn call(&self, what: &'static str, r: &EffectRequest) -> Result<(), ProvisionError> {
        let fail = self.fails();
        tracing::info!(
            target: "jitflow_shim::demo",
            call = what,
            tenant = %r.tenant,
            entitlement = %r.connection.entitlement_name,
            account = %r.connection.account_name,
            attempt = r.attempt,
            idempotency_key = %r.idempotency_key,
            failed = fail,
            "demo target: {what}"
        );
        if fail {
            Err(ProvisionError::transient(
                "503 Service Unavailable (demo failure)",
            ))
        } else {
            Ok(())
        }
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
