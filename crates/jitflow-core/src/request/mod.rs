//! Access requests (the contract's `access-requests` and `access-request-approvals` APIs) as a
//! second durable workflow: submit GRANT_ACCESS or REVOKE_ACCESS, approve or reject, cancel,
//! close, provision at a sunrise, remove at a sunset or on revoke.
//!
//! - [`submit`]: what a client sends, its rules and limits ([`validate_submit`]), and the
//!   duplicate rule ([`duplicate_of`]).
//! - [`config`]: the tenant's [`AccessRequestConfig`] (v1 and v2 of the contract), which adds
//!   rules to a submission and a denial.
//! - [`item`]: the [`Item`] aggregate, its [`ItemStatus`], its [`Approval`], and the contract's
//!   status vocabularies with the mapping to them ([`Item::request_state`]).
//! - [`flow`]: commands, changes, events, timers, effects, [`decide`] and [`evolve`].
//!
//! ```
//! use jitflow_core::id::{AccessRequestId, IdentityId, ObjectId};
//! use jitflow_core::lifecycle::{Actor, Config};
//! use jitflow_core::policy::Policy;
//! use jitflow_core::request::submit::{ObjectKind, ObjectRef, RequestedItem};
//! use jitflow_core::request::{
//!     AccessRequestConfig, validate_submit, decide, evolve, ApprovalStep, Command, Context, Effect, Existing,
//!     ItemStatus, RequestType, Submission,
//! };
//! use jitflow_core::time::Timestamp;
//!
//! let now = Timestamp::from_millis(1_800_000_000_000).unwrap();
//! let carol = IdentityId::parse("carol")?;
//! let submission = Submission {
//!     request_type: RequestType::Grant,
//!     requested_for: Some(vec![IdentityId::parse("alice")?]),
//!     requested_items: Some(vec![RequestedItem {
//!         object: Some(ObjectRef { kind: ObjectKind::Role, id: ObjectId::parse("auditors")? }),
//!         ..Default::default()
//!     }]),
//!     requested_for_with_items: None,
//!     client_metadata: Default::default(),
//! };
//! // An admin may request for someone else under the default config.
//! let rules = AccessRequestConfig::default();
//! let specs = validate_submit(AccessRequestId::from_u128(1), &submission, &carol, true, &rules, now, |_, _| {
//!     Existing::default()
//! })?;
//! let (policy, config) = (Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into()), Config::default());
//! let actor = Actor::Identity(carol);
//! let ctx = Context { now, actor: &actor, admin: false, policy: &policy, config: &config, running_activation: None };
//! let spec = specs.into_iter().next().unwrap();
//! let id = spec.id;
//! let submit = Command::Submit { spec: Box::new(spec), approval: ApprovalStep::Auto, existing: Existing::default() };
//! let mut item = None;
//! for event in decide(id, None, &submit, &ctx)? {
//!     item = Some(evolve(item, &event)?);
//! }
//! // Approved automatically; the grant of the role is the next effect to run.
//! let item = item.unwrap();
//! assert_eq!(item.status, ItemStatus::Granting);
//! assert_eq!(item.pending_effects(), vec![Effect::Grant { attempt: 1, kind: None }]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The aggregate is the item, not the request
//!
//! A request expands to one item per identity and requested object (at most
//! [`MAX_ITEMS`](submit::MAX_ITEMS)). Each item is approved (the contract's approvals and
//! `approvalId`s are per item), provisioned, given its own sunrise and sunset, and reported with
//! its own status (`RequestedItemStatus` is per item), independently of its siblings: one item
//! can be rejected while another is granted. So the item is the consistency boundary and the
//! stream the store keys ([`RequestItemId`](crate::id::RequestItemId)); the request id
//! ([`AccessRequestId`](crate::id::AccessRequestId)) only groups items, and operations on a
//! request (cancel, close) are sent to each of its items. Per-item streams also keep one stream's
//! events few and let the writer decide items in parallel batches without cross-item locks.
//! Item ids are derived from the request id and the item's position ([`submit::item_id`]), and
//! approval ids from item ids ([`approval_id`]), so a replayed submission names the same streams.
//!
//! # The workflow of one item
//!
//! ```text
//! Submit ─► PENDING_APPROVAL ──approve──► SCHEDULED ──(sunrise, or at once)──► GRANTING ─► GRANTED
//!   │            │ reject / expire / cancel        │ (revoke: removal date, or at once)     │ sunset
//!   │            ▼                                 ▼                                        ▼
//!   │     REJECTED / APPROVAL_EXPIRED / CANCELLED   REMOVING ◄── (grant gave up: fail closed) ─┘
//!   └─ duplicate ─► CANCELLED                       │ deactivate a running JIT activation first,
//!                                                   ▼ then revoke, retried forever (stuck flag)
//!                                       REMOVED / FAILED / CLOSED
//! ```
//!
//! While PENDING_APPROVAL an approver (or an admin) may *forward* the approval to a new owner
//! ([`Command::Forward`]): the forwarding approver's place goes to the new owner (an admin who is
//! not an approver hands over the whole approval), and the forward is kept in
//! [`Item::forwards`]. The new owner may not already be an approver, nor the identity the access
//! is for, nor the requester (no self-review), and an approval is forwarded at most
//! [`MAX_FORWARDS`](item::MAX_FORWARDS) times. The expiry does not move.
//!
//! An automatic approval step approves in the same decision as the submission. Close ends an
//! item that has granted nothing at once; during a grant it stops provisioning and removes
//! whatever a try may have left (fail closed, after a try in flight settles); once granted or
//! while removing it is recorded and the access keeps its course (sunset, removal), because a
//! close ends the request's bookkeeping, not an assignment that was approved and provisioned.
//! A grant whose removal date has passed before it could start ends LAPSED without granting.
//!
//! # Status vocabularies
//!
//! The internal [`ItemStatus`] is stored. The contract's request `state` comes from
//! [`Item::request_state`] (its table is there), the approval `status` (`ManualWorkItemState`)
//! from [`Approval::state`], `CompletedApprovalState` from [`WorkItemState::completed_str`],
//! `accessRequestPhases` from [`Item::phases`], `cancelable` from [`Item::cancelable`].
//!
//! # Limits
//!
//! Every bound is a constant: [`MAX_IDENTITIES_WITH_ENTITLEMENTS`](submit::MAX_IDENTITIES_WITH_ENTITLEMENTS)
//! (10) and [`MAX_ENTITLEMENTS`](submit::MAX_ENTITLEMENTS) (25) from the contract,
//! [`MAX_REVOKE_ENTITLEMENTS`](submit::MAX_REVOKE_ENTITLEMENTS) (1), the bulk limits
//! [`MAX_BULK_IDS`](submit::MAX_BULK_IDS) (50) and [`MAX_CLOSE_IDS`](submit::MAX_CLOSE_IDS)
//! (500); jitflow's own [`MAX_IDENTITIES`](submit::MAX_IDENTITIES),
//! [`MAX_OBJECTS_PER_IDENTITY`](submit::MAX_OBJECTS_PER_IDENTITY),
//! [`MAX_ITEMS`](submit::MAX_ITEMS), [`MAX_COMMENT_LEN`](submit::MAX_COMMENT_LEN), the
//! `clientMetadata` bounds, [`MAX_ACCOUNT_SELECTIONS`](submit::MAX_ACCOUNT_SELECTIONS),
//! [`MAX_APPROVERS`](item::MAX_APPROVERS), [`MAX_FORWARDS`](item::MAX_FORWARDS) and the approval wait
//! ([`MIN_APPROVAL_WAIT`](item::MIN_APPROVAL_WAIT) to [`MAX_APPROVAL_WAIT`](item::MAX_APPROVAL_WAIT)).
//! Retries use the connection lifecycle's [`Config`](crate::lifecycle::Config).

pub mod config;
pub mod fields;
pub mod flow;
pub mod item;
pub mod submit;

pub use config::AccessRequestConfig;
pub use fields::ApprovalRow;
pub use flow::{
    Change, Command, Context, Effect, Event, EvolveError, Notice, Rejection, Timer, TimerKind,
    approval_id, approval_item, decide, decide_states, evolve,
};
pub use item::{
    Approval, ApprovalScheme, ApprovalStep, Closure, CompletionStatus, ExecutionStatus, Forward,
    Item, ItemStatus, ReassignmentType, RemovalReason, RequestState, WorkItemState,
};
pub use submit::{
    Bulk, Duplicate, Error, Existing, ItemSpec, ObjectKind, ObjectRef, RequestType, Submission,
    duplicate_of, validate_bulk, validate_submit,
};
