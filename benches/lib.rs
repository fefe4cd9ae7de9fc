//! Shared helpers of jitflow's benchmarks and load generator.
//!
//! Dependencies, and why: the jitflow crates under test, `tempfile` for scratch stores, `tokio`
//! for the engine's runtime, `criterion` (dev) for the micro-benchmarks.

use std::time::Duration;

use jitflow_core::connection::{ConnectionSpec, ConnectionType};
use jitflow_core::id::{AccountId, ConnectionId, EntitlementId, IdentityId, SourceId};

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
