//! The embeddable jitflow engine: a durable workflow engine for just-in-time privileged access.
//!
//! Open an [`Engine`] on a redb file with your [`Provisioner`](hooks::Provisioner); register
//! connections; `activate`, `extend` and `deactivate` return once the signal is durable. The
//! engine validates, grants, arms the expiry timer, and revokes when the time is up, through
//! crashes and restarts: nothing is acknowledged before it is committed with fsync, and every
//! committed intent whose result is missing runs again (with the same idempotency key) when the
//! engine opens.
//!
//! ```
//! use jitflow::hooks::{BoxFuture, EffectRequest, ProvisionError, Provisioner};
//! use jitflow::{Caller, Engine};
//! use jitflow_core::connection::{ConnectionSpec, ConnectionType};
//! use jitflow_core::id::{AccountId, ConnectionId, EntitlementId, IdentityId, SourceId, TenantId};
//! use jitflow_core::lifecycle::Actor;
//! use jitflow_core::time::Minutes;
//!
//! /// Your target system: here, one that always succeeds.
//! struct Directory;
//! impl Provisioner for Directory {
//!     fn grant(&self, _request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
//!         Box::pin(async { Ok(()) })
//!     }
//!     fn revoke(&self, _request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
//!         Box::pin(async { Ok(()) })
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("jitflow.redb");
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let engine = Engine::builder(&path).provisioner(Directory).open().await?;
//!     let caller = Caller {
//!         tenant: TenantId::parse("acme")?,
//!         actor: Actor::Identity(IdentityId::parse("alice")?),
//!     };
//!     let id = ConnectionId::parse("757fb803-9024-5861-e510-83a56e4c5bd3")?;
//!     engine
//!         .register(&caller, ConnectionSpec {
//!             id,
//!             identity: IdentityId::parse("alice")?,
//!             identity_name: "Alice".into(),
//!             account: AccountId::parse("alice-adm")?,
//!             account_name: "alice.adm".into(),
//!             entitlement: EntitlementId::parse("domain-admins")?,
//!             entitlement_name: "Domain Admins".into(),
//!             attribute_name: "memberOf".into(),
//!             attribute_value: "CN=Domain Admins,DC=example,DC=com".into(),
//!             privilege_level: None,
//!             source: SourceId::parse("ad")?,
//!             source_name: "Active Directory".into(),
//!             kind: ConnectionType::Jit,
//!             standalone: false,
//!         })
//!         .await?;
//!     // Durable when it returns: the contract's 202.
//!     let activation = engine.activate(&caller, id, Some(Minutes(30)), None, None).await?;
//!     assert_eq!(activation.period, Minutes(30));
//!     engine.shutdown().await;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```
//!
//! Dependencies, and why: `jitflow-core` (the lifecycle), `jitflow-store` (the durable log),
//! `tokio` (the scheduler's sleeps and the effect runners' concurrency), `tracing` (spans on
//! commands, commits and effects), `thiserror` (error enums), `uuid` (random activation ids),
//! `serde` (shared derive support), `serde_json` (the JSON lines of the audit [`export`]).
#![forbid(unsafe_code)]

pub mod bulk;
pub mod clock;
pub mod config;
mod effects;
mod engine;
mod error;
pub mod export;
pub mod heal;
pub mod hooks;
pub mod metrics;
pub mod query;
pub mod reconcile;
pub mod request_lists;
pub mod requests;
mod scheduler;
mod writer;

pub use config::Config;
pub use engine::{
    Builder, Caller, Engine, ExportPage, MAX_IDEMPOTENCY_KEY, MAX_PAGE, OpenError, Subscription,
};
pub use error::Error;
pub use heal::Health;
pub use jitflow_core::client::ClientInfo;
pub use jitflow_store::codec::{Envelope, Payload, Stream};
pub use jitflow_store::read::StreamEvent;
pub use reconcile::{DriftFinding, DriftPage, DriftResponse, Inspection, Reconciled};
