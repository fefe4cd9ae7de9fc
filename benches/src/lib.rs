//! Shared helpers of jitflow's benchmarks, and the load generator ([`loadgen`], binary
//! `loadgen`).
//!
//! Dependencies, and why: the jitflow crates under test, `tempfile` for scratch stores, `tokio`
//! for the engine's runtime, `criterion` (dev) for the micro-benchmarks, `cap` (dev) a counting
//! global allocator for the engine bench's heap-per-activation figure, `redb` (dev) for the store
//! bench's floor part (redb alone, without jitflow). The load generator adds
//! `clap` (its flags), `serde`/`serde_json` (its JSON report and the REST bodies), `reqwest` (its
//! HTTP client against the shim), `uuid` (random connection ids over HTTP, so runs against one
//! server do not collide), `thiserror` (its error enum) and `tracing`/`tracing-subscriber` (its
//! progress log on stderr).

use std::time::Duration;

use jitflow::hooks::{BoxFuture, EffectRequest, Holding, ProvisionError, Provisioner};
use jitflow::{Caller, Engine};
use jitflow_core::connection::{ConnectionSpec, ConnectionState, ConnectionType};
use jitflow_core::id::{AccountId, ConnectionId, EntitlementId, IdentityId, SourceId, TenantId};
use jitflow_core::policy::{MAX_PERIOD_MINS, Policy};
use jitflow_core::time::Minutes;

pub mod loadgen;

/// A target system that grants and revokes at once, so the figures are the engine's.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstantProvisioner;

impl Provisioner for InstantProvisioner {
    fn grant(&self, _r: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async { Ok(()) })
    }
    fn revoke(&self, _r: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A target system that grants and revokes at once and remembers what it holds, so that it
/// answers inspections (issue 16's drift): held after a grant (or [`HoldingProvisioner::by_hand`]),
/// not held after a revoke or before any grant.
#[derive(Debug, Clone, Default)]
pub struct HoldingProvisioner {
    held: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<ConnectionId>>>,
}

impl HoldingProvisioner {
    /// Grants `ids` out of band, as a person would by hand on the target.
    pub fn by_hand(&self, ids: impl IntoIterator<Item = ConnectionId>) {
        self.set().extend(ids);
    }

    /// How many connections' access the target holds.
    pub fn holding(&self) -> usize {
        self.set().len()
    }

    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<ConnectionId>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Provisioner for HoldingProvisioner {
    fn grant(&self, r: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        self.set().insert(r.connection.id);
        Box::pin(async { Ok(()) })
    }
    fn revoke(&self, r: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        self.set().remove(&r.connection.id);
        Box::pin(async { Ok(()) })
    }
    fn inspect(&self, r: EffectRequest) -> BoxFuture<'_, Result<Holding, ProvisionError>> {
        let held = self.set().contains(&r.connection.id);
        Box::pin(async move {
            Ok(if held {
                Holding::Held
            } else {
                Holding::NotHeld
            })
        })
    }
}

/// A policy that allows any period and extension up to the contract's bound.
pub fn bench_policy() -> Policy {
    let mut p = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
    p.max_activation_period = Some(Minutes(MAX_PERIOD_MINS));
    p.max_extension = Some(Minutes(MAX_PERIOD_MINS));
    p
}

/// How many registrations [`register`] keeps in flight.
pub const REGISTER_IN_FLIGHT: usize = 2048;

/// Registers [`spec`] of every id, [`REGISTER_IN_FLIGHT`] at a time; the first failure stops it.
pub async fn register(
    engine: &Engine,
    caller: &Caller,
    ids: &[ConnectionId],
) -> Result<(), jitflow::Error> {
    for chunk in ids.chunks(REGISTER_IN_FLIGHT) {
        let calls: Vec<_> = chunk
            .iter()
            .map(|id| {
                let (engine, caller, id) = (engine.clone(), caller.clone(), *id);
                tokio::spawn(async move { engine.register(&caller, spec(id)).await.map(|_| ()) })
            })
            .collect();
        for call in calls {
            call.await
                .map_err(|e| jitflow::Error::Invalid(e.to_string()))??;
        }
    }
    Ok(())
}

/// Waits until every connection in `ids` is in a state `done` accepts, polling every 2 ms; a
/// connection that does not exist counts as not done. Reads failing end the wait with the error.
pub async fn wait_all(
    engine: &Engine,
    tenant: &TenantId,
    ids: &[ConnectionId],
    done: impl Fn(ConnectionState) -> bool,
) -> Result<(), jitflow::Error> {
    for id in ids {
        while !engine
            .connection(tenant, *id)?
            .is_some_and(|c| done(c.state))
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(())
}

/// A JIT connection spec for benchmarks, distinct per id.
pub fn spec(id: ConnectionId) -> ConnectionSpec {
    let n = id.as_u128();
    ConnectionSpec {
        id,
        identity: IdentityId::parse(&format!("identity-{}", n % 100_000)).expect("valid"),
        identity_name: format!("Identity {}", n % 100_000),
        account: AccountId::parse(&format!("account-{n}")).expect("valid"),
        account_name: format!("account.{n}"),
        entitlement: EntitlementId::parse(&format!("entitlement-{}", n % 1000)).expect("valid"),
        entitlement_name: format!("Entitlement {}", n % 1000),
        attribute_name: "memberOf".into(),
        attribute_value: format!("CN=Group {},OU=Groups,DC=example,DC=com", n % 1000),
        privilege_level: Some("HIGH".into()),
        source: SourceId::parse(&format!("source-{}", n % 10)).expect("valid"),
        source_name: format!("Source {}", n % 10),
        kind: ConnectionType::Jit,
        standalone: false,
    }
}

/// Sorts `samples` and returns p50, p99 and max (zeros when empty).
pub fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    if samples.is_empty() {
        return Default::default();
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99), samples[samples.len() - 1])
}

/// The process's resident memory in bytes (`VmRSS` of `/proc/self/status`; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// An environment variable as a number, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
