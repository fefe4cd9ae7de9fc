//! The pure lifecycle core of jitflow: identifiers, time, the JIT activation policy, the
//! connection and activation state machines, the access-request workflow, and the filter grammar
//! of the REST contract's collection parameters.
//!
//! Nothing here does I/O, reads a clock or spawns a task: every function is deterministic given
//! its arguments, and "now" is one of them. The store persists what this crate decides; the
//! engine feeds it commands, timers and effect results.
//!
//! The lifecycle is `decide(state, command, context) -> events` and `evolve(state, event) ->
//! state`. Timers and effects are derived from the state, and each event records the timers it
//! arms and cancels and the effects it starts, so nothing downstream needs lifecycle knowledge.
//!
//! ```
//! use jitflow_core::connection::{ConnectionSpec, ConnectionState, ConnectionType};
//! use jitflow_core::id::{AccountId, ActivationId, ConnectionId, EntitlementId, IdentityId, SourceId};
//! use jitflow_core::lifecycle::{decide, evolve, Actor, Command, Config, Context, Effect};
//! use jitflow_core::policy::Policy;
//! use jitflow_core::time::{Minutes, Timestamp};
//!
//! let id = ConnectionId::parse("757fb80390245861e51083a56e4c5bd3")?;
//! let mut policy = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
//! policy.max_activation_period = Some(Minutes(120));
//! let actor = Actor::Identity(IdentityId::parse("alice")?);
//! let config = Config::default();
//! let ctx = Context { now: Timestamp::from_millis(1_700_000_000_000).unwrap(), actor: &actor, policy: &policy, config: &config };
//!
//! let spec = ConnectionSpec {
//!     id,
//!     identity: IdentityId::parse("alice")?,
//!     identity_name: "Alice".into(),
//!     account: AccountId::parse("alice-adm")?,
//!     account_name: "alice.adm".into(),
//!     entitlement: EntitlementId::parse("domain-admins")?,
//!     entitlement_name: "Domain Admins".into(),
//!     attribute_name: "memberOf".into(),
//!     attribute_value: "CN=Domain Admins,DC=example,DC=com".into(),
//!     privilege_level: None,
//!     source: SourceId::parse("ad")?,
//!     source_name: "Active Directory".into(),
//!     kind: ConnectionType::Jit,
//!     standalone: false,
//! };
//! let mut state = None;
//! for command in [
//!     Command::Register(spec),
//!     Command::Activate { activation: ActivationId::from_u128(1), period: Some(Minutes(30)), client: None },
//! ] {
//!     for event in decide(id, state.as_ref(), &command, &ctx)? {
//!         state = evolve(state, &event)?;
//!     }
//! }
//! let connection = state.expect("registered");
//! assert_eq!(connection.state, ConnectionState::Activating);
//! // The workflow's own validation is the next effect to run.
//! assert_eq!(connection.pending_effects(), vec![Effect::Validate { activation: ActivationId::from_u128(1) }]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Dependencies, and why: `serde` (the store persists these types through its codec),
//! `thiserror` (typed error enums), `humantime` (RFC 3339 and human durations), `uuid` (parsing
//! and formatting connection and activation ids), `serde_json` (a signal's `metaData`, a JSON
//! object the core keeps as the client sent it: [`client`]).
#![forbid(unsafe_code)]

pub mod activation;
pub mod backoff;
pub mod client;
pub mod connection;
pub mod filter;
pub mod history;
pub mod id;
pub mod lifecycle;
pub mod policy;
pub mod request;
pub mod time;
pub mod workflow;
