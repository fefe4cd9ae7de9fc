//! The durable store of jitflow: one redb file holding the event log, the projections, the
//! timer index, the intents and the idempotency keys.
//!
//! - **Event log.** Append-only: global sequence -> versioned envelope ([`codec`]), with a
//!   per-stream index to read one connection's, activation's or policy's history in order.
//! - **Projections.** The current connection, activation and policy, written in the same
//!   transaction as the events, so opening a store reads them instead of replaying.
//! - **Timer index.** (due, tenant, connection, kind), changed by each event's `arm`/`cancel`;
//!   the scheduler reads the next due timers with one range read.
//! - **Intents.** The connections whose committed effects have no result yet, for the engine to
//!   run again after a restart.
//! - **Idempotency keys.** Committed results of requests, by client key, with expiry.
//! - **Secondary indexes and history.** Connections indexed by state, type, identity,
//!   entitlement, source and JIT timestamps, and by assignment (entitlement, identity, account);
//!   one activation history record per activation with its own indexes. All written with the
//!   projection they index; [`query`] serves the contract's list parameters from them.
//! - **Access request items** ([`request`]). The second workflow on the same log: the item
//!   projection, the items of each request, the open items of each identity and object, the
//!   items' timers in the same timer index, and their intents.
//! - **Access request configs.** One per tenant (format version 3): its change events on the
//!   tenant's config stream and the current config, read by `Reader::access_request_config`
//!   (no row: the contract's defaults).
//!
//! The API is synchronous. One thread writes ([`Store::append_batch`], one transaction per
//! batch, committed with `Durability::Immediate` before anything is acknowledged); any number of
//! threads read through [`Store::reader`] snapshots, which never block the writer. A failed
//! commit poisons the store until it is reopened, since its outcome is unknown. After a crash,
//! opening runs redb's recovery; [`Store::verify`] replays the log and compares on request.
//!
//! The store's logic (derivation, hot layer, readers, queries, verify) sits on a narrow
//! storage interface, [`backend::Backend`]: append log records, write a checkpoint, take a
//! snapshot, recover after a failed write; every call names a [`backend::Partition`]. The redb
//! file ([`backend::RedbFile`]) is the embedded backend and the default.
//!
//! Every key of tenant data starts with the tenant id. Timers and events are the exceptions
//! (keyed by due time and by global sequence), and name their tenant inside.
//!
//! # Example
//!
//! ```
//! use jitflow_core::connection::{ConnectionSpec, ConnectionType};
//! use jitflow_core::id::{AccountId, ConnectionId, EntitlementId, IdentityId, SourceId, TenantId};
//! use jitflow_core::lifecycle::{Actor, Command, Config, Context, decide, evolve};
//! use jitflow_core::policy::Policy;
//! use jitflow_core::time::Timestamp;
//! use jitflow_store::batch::{Batch, Entry};
//! use jitflow_store::codec::Stream;
//! use jitflow_store::open::Options;
//! use jitflow_store::Store;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path().join("jitflow.redb"), Options::default())?;
//!
//! // The writer decides a command against the stored state...
//! let tenant = TenantId::parse("acme")?;
//! let id = ConnectionId::parse("757fb803-9024-5861-e510-83a56e4c5bd3")?;
//! let spec = ConnectionSpec {
//!     id,
//!     identity: IdentityId::parse("alice")?,
//!     identity_name: "Alice".into(),
//!     account: AccountId::parse("acct-1")?,
//!     account_name: "alice.admin".into(),
//!     entitlement: EntitlementId::parse("ent-admins")?,
//!     entitlement_name: "Domain Admins".into(),
//!     attribute_name: "memberOf".into(),
//!     attribute_value: "CN=Domain Admins,DC=example,DC=com".into(),
//!     privilege_level: None,
//!     source: SourceId::parse("ad")?,
//!     source_name: "Active Directory".into(),
//!     kind: ConnectionType::Jit,
//!     standalone: false,
//! };
//! let policy = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
//! let ctx = Context {
//!     now: Timestamp::from_millis(1_700_000_000_000).unwrap(),
//!     actor: &Actor::System,
//!     policy: &policy,
//!     config: &Config::default(),
//! };
//! let before = store.reader()?.connection(&tenant, id)?;
//! let mut batch = Batch::new();
//! for event in decide(id, before.as_ref(), &Command::Register(spec), &ctx)? {
//!     let after = evolve(before.clone(), &event)?;
//!     batch.push(Entry::Connection { tenant: tenant.clone(), event, after });
//! }
//!
//! // ...appends the batch (durable when this returns), then answers its callers.
//! let appended = store.append_batch(&batch)?;
//! assert_eq!((appended.first, appended.last), (1, 1));
//!
//! // Readers see whole committed batches.
//! let reader = store.reader()?;
//! assert_eq!(reader.connection(&tenant, id)?.map(|c| c.version), Some(1));
//! assert_eq!(reader.stream(&tenant, Stream::Connection(id), 0, 100)?.len(), 1);
//! assert!(store.verify()?.is_clean());
//! # Ok(())
//! # }
//! ```
//!
//! # Why each dependency
//!
//! - `jitflow-core`: the persisted domain types, and `evolve`, which [`Store::verify`] replays.
//! - `redb`: the embedded storage engine: ACID transactions over copy-on-write B-trees, MVCC
//!   readers beside one writer, explicit fsync durability, crash recovery, pluggable storage
//!   backends (used for fault injection).
//! - `bincode` (pinned `=2.0.1`): the compact binary encoding of records, used in [`codec`]
//!   only, so the format has one owner.
//! - `serde`: the derives that bincode encodes the core's types and the envelope through.
//! - `thiserror`: the typed error enums.
//! - `tracing`: warnings on recovery, poisoning and index disagreements.
//!
//! The cargo feature `test-support` adds [`testing`], entry points for other crates' tests
//! only (planting a difference for `verify`).
#![forbid(unsafe_code)]

pub mod append;
pub mod backend;
pub mod batch;
pub mod codec;
pub mod compact;
mod hot;
pub mod idempotency;
mod index;
pub mod intents;
pub mod open;
mod projection;
pub mod query;
pub mod read;
mod replay;
pub mod request;
pub mod request_query;
mod store;
mod tables;
pub mod timers;
mod upgrade;
pub mod verify;

#[cfg(test)]
mod test_support;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

pub use replay::REPLAY_CHUNK;
pub use store::{Reopened, Stats, Store};
