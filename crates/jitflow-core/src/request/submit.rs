//! What a client submits (`POST /access-requests/v1`), its rules and limits, and how it expands
//! into one [`ItemSpec`] per identity and requested object.
//!
//! [`validate_submit`] checks every rule of the contract and seed page 004 and returns either the
//! item specs or the first rule broken, as an [`Error`] whose message names the rule. Nothing is
//! decided or stored until it passes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::config::AccessRequestConfig;
use crate::backoff::splitmix64;
use crate::connection::{MAX_VALUE_LEN, check_text};
use crate::id::{AccessRequestId, IdentityId, ObjectId, RequestItemId, SourceId};
use crate::time::Timestamp;

/// The most identities one request may name when it requests any entitlement (the contract's
/// limit; more is a 400).
pub const MAX_IDENTITIES_WITH_ENTITLEMENTS: usize = 10;
/// The most entitlements one request may name (distinct entitlement ids over all identities; the
/// contract's limit).
pub const MAX_ENTITLEMENTS: usize = 25;
/// The most identities one request may name when it requests no entitlement. The contract sets
/// no limit there; jitflow bounds every list.
pub const MAX_IDENTITIES: usize = 100;
/// The most objects requested for one identity in one request (jitflow's bound).
pub const MAX_OBJECTS_PER_IDENTITY: usize = 100;
/// The most items (identity x object) one request may expand to (jitflow's bound): every item is
/// a stream with its own events, so one request must not create an unbounded number of them.
pub const MAX_ITEMS: usize = 1000;
/// The most entitlements one REVOKE_ACCESS request may name (the contract's limit).
pub const MAX_REVOKE_ENTITLEMENTS: usize = 1;
/// The longest comment (requester's, approver's, cancel reason, close message), in bytes.
pub const MAX_COMMENT_LEN: usize = 2000;
/// The most `clientMetadata` entries on a request or an item.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// The longest `clientMetadata` key, in bytes (at least 1).
pub const MAX_METADATA_KEY_LEN: usize = 128;
/// The longest `clientMetadata` value, in bytes.
pub const MAX_METADATA_VALUE_LEN: usize = 1024;
/// The most sources in one item's `accountSelection`.
pub const MAX_ACCOUNT_SELECTIONS: usize = 16;
/// The longest `accountUuid`, `nativeIdentity` or `formInstanceId`, in bytes (directory DNs can
/// be long, as for attribute values).
pub const MAX_ACCOUNT_REF_LEN: usize = MAX_VALUE_LEN;
/// The most ids in one bulk approve or bulk cancel (the contract's limit).
pub const MAX_BULK_IDS: usize = 50;
/// The most ids in one close (the contract's limit: 1-500).
pub const MAX_CLOSE_IDS: usize = 500;

/// The contract's `requestType`. `MODIFY_ACCESS` is for machine identities only and is not
/// supported: [`RequestType::parse`] does not know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RequestType {
    /// `GRANT_ACCESS` (the contract's default).
    Grant,
    /// `REVOKE_ACCESS`.
    Revoke,
}

impl RequestType {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestType::Grant => "GRANT_ACCESS",
            RequestType::Revoke => "REVOKE_ACCESS",
        }
    }

    /// Parses the contract's spelling (exact).
    pub fn parse(text: &str) -> Option<RequestType> {
        [RequestType::Grant, RequestType::Revoke]
            .into_iter()
            .find(|t| t.as_str() == text)
    }
}

impl fmt::Display for RequestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The contract's requested item `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObjectKind {
    /// `ACCESS_PROFILE`.
    AccessProfile,
    /// `ROLE`.
    Role,
    /// `ENTITLEMENT`.
    Entitlement,
}

impl ObjectKind {
    /// The contract's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ObjectKind::AccessProfile => "ACCESS_PROFILE",
            ObjectKind::Role => "ROLE",
            ObjectKind::Entitlement => "ENTITLEMENT",
        }
    }

    /// Parses the contract's spelling (exact).
    pub fn parse(text: &str) -> Option<ObjectKind> {
        [
            ObjectKind::AccessProfile,
            ObjectKind::Role,
            ObjectKind::Entitlement,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// A requested object: its type and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Role, access profile or entitlement.
    pub kind: ObjectKind,
    /// Its id.
    pub id: ObjectId,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.id)
    }
}

/// The contract's `clientMetadata`: key-value pairs kept and returned, never interpreted.
pub type Metadata = BTreeMap<String, String>;

/// One account on a source (the contract's `AccountItemRef`): at least one of the two is set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountRef {
    /// `accountUuid`.
    pub account_uuid: Option<String>,
    /// `nativeIdentity` (the account's distinguished name).
    pub native_identity: Option<String>,
}

/// The accounts chosen on one source (the contract's `SourceItemRef`). The contract allows one
/// account per source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceSelection {
    /// `sourceId`.
    pub source: Option<SourceId>,
    /// `accounts`: exactly one.
    pub accounts: Vec<AccountRef>,
}

/// One requested item as submitted (the contract's `AccessRequestItem` and
/// `RequestedItemDtoRef`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestedItem {
    /// What is requested; `None` stands for a missing `type` or `id` only where an API layer
    /// cannot refuse it itself, and is refused here.
    pub object: Option<ObjectRef>,
    /// The requester's comment; required for REVOKE_ACCESS.
    pub comment: Option<String>,
    /// `clientMetadata`.
    pub client_metadata: Metadata,
    /// `startDate` (sunrise): provision at that time. GRANT_ACCESS only; in the future.
    pub start_date: Option<Timestamp>,
    /// `removeDate` (sunset): remove at that time. In the future, after `startDate`.
    pub remove_date: Option<Timestamp>,
    /// `accountSelection` (only in `requestedForWithRequestedItems`).
    pub account_selection: Option<Vec<SourceSelection>>,
    /// `nativeIdentity`: the account to revoke from (REVOKE_ACCESS only).
    pub native_identity: Option<String>,
    /// `formInstanceId` (GRANT_ACCESS only; not empty when present).
    pub form_instance_id: Option<String>,
}

/// One entry of `requestedForWithRequestedItems`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityItems {
    /// `identityId`.
    pub identity: IdentityId,
    /// `requestedItems` for that identity.
    pub items: Vec<RequestedItem>,
}

/// A submitted access request, field for field (the contract's `AccessRequest`). Exactly one of
/// the two shapes is used: `requested_for` with `requested_items`, or
/// `requested_for_with_items`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// `requestType` (`null` means GRANT_ACCESS; the API layer maps it).
    pub request_type: RequestType,
    /// `requestedFor`.
    pub requested_for: Option<Vec<IdentityId>>,
    /// `requestedItems`.
    pub requested_items: Option<Vec<RequestedItem>>,
    /// `requestedForWithRequestedItems`.
    pub requested_for_with_items: Option<Vec<IdentityItems>>,
    /// The request's `clientMetadata`.
    pub client_metadata: Metadata,
}

/// One identity of a submission with its items: (identity, the path of its items in the
/// body, the items).
pub type Group<'a> = (&'a IdentityId, String, &'a [RequestedItem]);

impl Submission {
    /// The submission's (identity, path of its items, items) groups, in order, from whichever
    /// of the two shapes it uses: the one rule of which shapes may be combined, shared by a
    /// submission and an accounts selection. Refused: both shapes at once
    /// ([`Error::BothShapes`]: `requestedFor` and `requestedItems` must then be omitted),
    /// neither, an empty identity list, `accountSelection` in the flat shape, and the nested
    /// shape for REVOKE_ACCESS.
    pub fn groups(&self) -> Result<Vec<Group<'_>>, Error> {
        match (
            &self.requested_for,
            &self.requested_items,
            &self.requested_for_with_items,
        ) {
            (None, None, Some(nested)) => {
                if self.request_type == RequestType::Revoke {
                    return Err(Error::RevokeNested);
                }
                if nested.is_empty() {
                    return Err(Error::NoIdentities {
                        field: "requestedForWithRequestedItems",
                    });
                }
                Ok(nested
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let path = format!("requestedForWithRequestedItems[{i}].requestedItems");
                        (&n.identity, path, n.items.as_slice())
                    })
                    .collect())
            }
            (Some(ids), Some(items), None) => {
                if ids.is_empty() {
                    return Err(Error::NoIdentities {
                        field: "requestedFor",
                    });
                }
                if items.iter().any(|i| i.account_selection.is_some()) {
                    return Err(Error::NotAllowed {
                        path: "requestedItems".into(),
                        field: "accountSelection",
                        request_type: self.request_type,
                    });
                }
                Ok(ids
                    .iter()
                    .map(|id| (id, "requestedItems".to_owned(), items.as_slice()))
                    .collect())
            }
            (_, _, Some(_)) => Err(Error::BothShapes),
            _ => Err(Error::NoRecipients),
        }
    }
}

/// Where an identity's existing access came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Origin {
    /// An access request (or a direct assignment): a revoke request may remove it.
    Requested,
    /// Role membership: a revoke request may not remove it.
    Role,
    /// Birthright provisioning: a revoke request may not remove it.
    Birthright,
}

impl Origin {
    /// A word for messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Origin::Requested => "an access request",
            Origin::Role => "role membership",
            Origin::Birthright => "birthright provisioning",
        }
    }
}

/// An identity's current assignment of an object, as the embedder knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Where it came from.
    pub origin: Origin,
    /// The accounts it is held on.
    pub accounts: Vec<SourceSelection>,
    /// A sunrise not reached yet (the access is assigned but not provisioned).
    pub start_date: Option<Timestamp>,
    /// Its sunset, if any.
    pub remove_date: Option<Timestamp>,
}

/// What exists already for one identity and object: the input of the duplicate rule and of the
/// revoke rules. The engine reads it from its projections; the core only decides with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Existing {
    /// The current assignment, if the identity holds (or is scheduled to hold) the access.
    pub assignment: Option<Assignment>,
    /// An item for the same identity and object that has not finished its approval and
    /// provisioning yet.
    pub in_progress: Option<RequestItemId>,
}

/// One item of an accepted request: one identity and one object. Persisted in
/// [`Change::Submitted`](super::Change::Submitted): never reorder fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemSpec {
    /// The item (the stream), derived from the request id and the item's position.
    pub id: RequestItemId,
    /// The request it belongs to.
    pub request: AccessRequestId,
    /// Grant or revoke.
    pub request_type: RequestType,
    /// The identity the access is for.
    pub requested_for: IdentityId,
    /// Who submitted the request.
    pub requester: IdentityId,
    /// What is requested.
    pub object: ObjectRef,
    /// The requester's comment.
    pub comment: Option<String>,
    /// The item's `clientMetadata`.
    pub client_metadata: Metadata,
    /// The request's `clientMetadata`.
    pub request_metadata: Metadata,
    /// Sunrise (grant only).
    pub start_date: Option<Timestamp>,
    /// Sunset.
    pub remove_date: Option<Timestamp>,
    /// The accounts chosen (grant only; empty means the embedder chooses).
    pub accounts: Vec<SourceSelection>,
    /// The account to revoke from (revoke only).
    pub native_identity: Option<String>,
    /// The completed form (grant only).
    pub form_instance_id: Option<String>,
}

/// The bulk operations with an id-count limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bulk {
    /// `POST /access-request-approvals/v1/bulk-approve` (`approvalIds`, at most 50).
    Approve,
    /// `POST /access-requests/v1/bulk-cancel` (`accessRequestIds`, at most 50).
    Cancel,
    /// `POST /access-requests/v1/close` (`accessRequestIds`, 1 to 500).
    Close,
}

impl Bulk {
    /// The most ids the operation takes.
    pub const fn max(self) -> usize {
        match self {
            Bulk::Approve | Bulk::Cancel => MAX_BULK_IDS,
            Bulk::Close => MAX_CLOSE_IDS,
        }
    }

    /// The operation's field of ids.
    pub const fn field(self) -> &'static str {
        match self {
            Bulk::Approve => "approvalIds",
            Bulk::Cancel | Bulk::Close => "accessRequestIds",
        }
    }
}

/// Why a submission (or a bulk id list) was refused: the rule broken, named in the message.
/// Nothing was stored. All are client errors (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither shape was used, or `requestedFor` came without `requestedItems` (or the reverse).
    #[error("send requestedFor with requestedItems, or requestedForWithRequestedItems")]
    NoRecipients,
    /// Both shapes were used.
    #[error(
        "requestedFor and requestedItems must be omitted when requestedForWithRequestedItems is used"
    )]
    BothShapes,
    /// `requestedFor` (or `requestedForWithRequestedItems`) is empty.
    #[error("{field} is empty: name at least one identity")]
    NoIdentities {
        /// The field.
        field: &'static str,
    },
    /// An identity has no requested item.
    #[error("{path} is empty: request at least one item")]
    NoItems {
        /// Where, e.g. `requestedItems`.
        path: String,
    },
    /// An item has no `type` or no `id`.
    #[error("{path}: type and id are required")]
    MissingObject {
        /// Where.
        path: String,
    },
    /// More identities than allowed.
    #[error("{count} identities requested for; at most {max} are allowed{rule}")]
    TooManyIdentities {
        /// How many.
        count: usize,
        /// The bound.
        max: usize,
        /// Which rule: `" when entitlements are requested"` or empty.
        rule: &'static str,
    },
    /// More entitlements than allowed in one request.
    #[error(
        "{count} entitlements requested; at most {max} entitlements are allowed in one request"
    )]
    TooManyEntitlements {
        /// How many distinct entitlements.
        count: usize,
        /// The bound, [`MAX_ENTITLEMENTS`].
        max: usize,
    },
    /// Too many objects for one identity, or too many items in all.
    #[error("{what}: {count}, more than the {max} allowed")]
    TooManyItems {
        /// What was counted.
        what: &'static str,
        /// How many.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// The same identity is named twice.
    #[error("identity {0} is named more than once")]
    DuplicateIdentity(IdentityId),
    /// The same object is requested twice for one identity.
    #[error("{object} is requested more than once for identity {identity}")]
    DuplicateItem {
        /// The identity.
        identity: IdentityId,
        /// The object.
        object: ObjectRef,
    },
    /// A REVOKE_ACCESS request names more than one identity.
    #[error("a REVOKE_ACCESS request is for exactly one identity, not {count}")]
    RevokeIdentities {
        /// How many identities.
        count: usize,
    },
    /// A REVOKE_ACCESS request names more than one entitlement.
    #[error(
        "a REVOKE_ACCESS request may revoke at most {MAX_REVOKE_ENTITLEMENTS} entitlement, not {count}"
    )]
    RevokeEntitlements {
        /// How many entitlements.
        count: usize,
    },
    /// A REVOKE_ACCESS request uses `requestedForWithRequestedItems`.
    #[error(
        "a REVOKE_ACCESS request uses requestedFor and requestedItems, not requestedForWithRequestedItems"
    )]
    RevokeNested,
    /// A REVOKE_ACCESS request for the requester's own access.
    #[error("REVOKE_ACCESS does not support self request: {0} cannot revoke its own access")]
    RevokeForSelf(IdentityId),
    /// A REVOKE_ACCESS item without a comment.
    #[error("{path}: comment is required in a REVOKE_ACCESS request")]
    RevokeCommentRequired {
        /// Where.
        path: String,
    },
    /// A REVOKE_ACCESS item for access the identity does not hold.
    #[error("{path}: identity {identity} does not hold {object}, so there is nothing to revoke")]
    RevokeNotAssigned {
        /// Where.
        path: String,
        /// The identity.
        identity: IdentityId,
        /// The object.
        object: ObjectRef,
    },
    /// A REVOKE_ACCESS item for access granted by a role or birthright.
    #[error("{path}: {object} was granted by {}, and an access request cannot revoke it", origin.as_str())]
    RevokeInherited {
        /// Where.
        path: String,
        /// The object.
        object: ObjectRef,
        /// Where the access came from.
        origin: Origin,
    },
    /// A REVOKE_ACCESS `removeDate` not earlier than the existing sunset.
    #[error("{path}: removeDate {remove} must be earlier than the existing sunset {sunset}")]
    RemoveNotBeforeSunset {
        /// Where.
        path: String,
        /// The date asked for.
        remove: Timestamp,
        /// The existing sunset.
        sunset: Timestamp,
    },
    /// A field that the request type does not allow (`startDate` on REVOKE_ACCESS, ...).
    #[error("{path}: {field} is not allowed in a {request_type} request")]
    NotAllowed {
        /// Where.
        path: String,
        /// The field.
        field: &'static str,
        /// The request type.
        request_type: RequestType,
    },
    /// A date that is not in the future.
    #[error("{path}: {field} {date} must be a future date-time (now is {now})")]
    NotFuture {
        /// Where.
        path: String,
        /// `startDate` or `removeDate`.
        field: &'static str,
        /// The date.
        date: Timestamp,
        /// The time of the check.
        now: Timestamp,
    },
    /// `removeDate` not after `startDate`.
    #[error("{path}: removeDate {remove} must be after startDate {start}")]
    RemoveBeforeStart {
        /// Where.
        path: String,
        /// Sunrise.
        start: Timestamp,
        /// Sunset.
        remove: Timestamp,
    },
    /// A free-text field is too long, empty where it may not be, or holds a control character.
    #[error("{path}: {reason}")]
    InvalidText {
        /// Where.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A `clientMetadata` with too many entries.
    #[error("{path}: {count} entries, more than the {MAX_METADATA_ENTRIES} allowed")]
    TooManyMetadata {
        /// Where.
        path: String,
        /// How many.
        count: usize,
    },
    /// An `accountSelection` breaks a rule: too many sources, a source twice, not exactly one
    /// account per source, or an account with neither `accountUuid` nor `nativeIdentity`.
    #[error("{path}: {reason}")]
    AccountSelection {
        /// Where.
        path: String,
        /// The rule broken.
        reason: String,
    },
    /// The tenant's access request config refuses the item (see
    /// [`AccessRequestConfig::check_item`]); the message names the config field.
    #[error(transparent)]
    Config(#[from] super::config::Refusal),
    /// A bulk operation without ids.
    #[error("{field} is empty: send at least one id")]
    NoIds {
        /// The field.
        field: &'static str,
    },
    /// A bulk operation with more ids than allowed.
    #[error("{field} holds {count} ids; at most {max} are allowed")]
    TooManyIds {
        /// The field.
        field: &'static str,
        /// How many.
        count: usize,
        /// The bound.
        max: usize,
    },
}

/// Checks the length of a bulk operation's id list (1 to [`Bulk::max`]).
pub fn validate_bulk(operation: Bulk, count: usize) -> Result<(), Error> {
    let field = operation.field();
    if count == 0 {
        return Err(Error::NoIds { field });
    }
    if count > operation.max() {
        return Err(Error::TooManyIds {
            field,
            count,
            max: operation.max(),
        });
    }
    Ok(())
}

/// The id of the item at `index` (in expansion order) of request `request`. Deterministic, so a
/// replayed submission names the same streams; distinct for distinct indexes of one request.
pub fn item_id(request: AccessRequestId, index: u32) -> RequestItemId {
    let bits = request.as_u128();
    let salt = splitmix64(u64::from(index) ^ 0x6974_656d_0000_0000);
    let high = splitmix64((bits >> 64) as u64 ^ salt);
    // The low half keeps the index in its low 32 bits, so two indexes never collide.
    let low = (splitmix64(bits as u64 ^ salt.rotate_left(17)) & !0xffff_ffff) | u64::from(index);
    RequestItemId::from_u128((u128::from(high) << 64) | u128::from(low))
}

/// Checks a comment, message or other free text: bounded and free of control characters (line
/// breaks and tabs are allowed in comments).
pub(crate) fn check_comment(path: &str, text: &str) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidText {
        path: path.to_owned(),
        reason,
    };
    if text.len() > MAX_COMMENT_LEN {
        return Err(invalid(format!(
            "{} bytes long, more than the {MAX_COMMENT_LEN} allowed",
            text.len()
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(invalid("contains a control character".into()));
    }
    Ok(())
}

fn check_ref(path: &str, field: &'static str, value: &str) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidText {
        path: format!("{path}.{field}"),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("is empty".into()));
    }
    check_text(field, value, MAX_ACCOUNT_REF_LEN).map_err(invalid)
}

fn check_metadata(path: &str, metadata: &Metadata) -> Result<(), Error> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::TooManyMetadata {
            path: path.to_owned(),
            count: metadata.len(),
        });
    }
    for (key, value) in metadata {
        let invalid = |reason: String| Error::InvalidText {
            path: format!("{path}.{}", key.chars().take(64).collect::<String>()),
            reason,
        };
        if key.is_empty() {
            return Err(invalid("a key is empty".into()));
        }
        check_text("the key", key, MAX_METADATA_KEY_LEN).map_err(invalid)?;
        check_text("the value", value, MAX_METADATA_VALUE_LEN).map_err(invalid)?;
    }
    Ok(())
}

fn check_accounts(path: &str, selection: &[SourceSelection]) -> Result<(), Error> {
    let path = format!("{path}.accountSelection");
    let broken = |reason: String| Error::AccountSelection {
        path: path.clone(),
        reason,
    };
    if selection.len() > MAX_ACCOUNT_SELECTIONS {
        return Err(broken(format!(
            "{} sources, more than the {MAX_ACCOUNT_SELECTIONS} allowed",
            selection.len()
        )));
    }
    let mut sources = BTreeSet::new();
    for (i, s) in selection.iter().enumerate() {
        if !sources.insert(s.source.as_ref()) {
            return Err(broken(format!("source {i} is selected twice")));
        }
        if s.accounts.len() != 1 {
            return Err(broken(format!(
                "source {i} has {} accounts; select exactly one account per source",
                s.accounts.len()
            )));
        }
        let account = &s.accounts[0];
        if account.account_uuid.is_none() && account.native_identity.is_none() {
            return Err(broken(format!(
                "the account of source {i} needs accountUuid or nativeIdentity"
            )));
        }
        let at = format!("{path}[{i}].accounts[0]");
        if let Some(v) = &account.account_uuid {
            check_ref(&at, "accountUuid", v)?;
        }
        if let Some(v) = &account.native_identity {
            check_ref(&at, "nativeIdentity", v)?;
        }
    }
    Ok(())
}

impl ItemSpec {
    /// Checks the rules that concern one item alone and do not depend on the clock or on what
    /// exists: text bounds, fields the request type forbids, date order, account selection.
    /// `decide` re-checks these on a submitted spec; [`validate_submit`] checks them first.
    pub fn check(&self) -> Result<(), Error> {
        check_item_fields(&self.id.to_string(), self.request_type, &self.fields())
    }

    fn fields(&self) -> ItemFields<'_> {
        ItemFields {
            comment: self.comment.as_deref(),
            client_metadata: &self.client_metadata,
            start_date: self.start_date,
            remove_date: self.remove_date,
            accounts: Some(&self.accounts).filter(|a| !a.is_empty()),
            native_identity: self.native_identity.as_deref(),
            form_instance_id: self.form_instance_id.as_deref(),
        }
    }
}

/// The per-item fields both a submission and a spec carry.
struct ItemFields<'a> {
    comment: Option<&'a str>,
    client_metadata: &'a Metadata,
    start_date: Option<Timestamp>,
    remove_date: Option<Timestamp>,
    accounts: Option<&'a Vec<SourceSelection>>,
    native_identity: Option<&'a str>,
    form_instance_id: Option<&'a str>,
}

impl<'a> ItemFields<'a> {
    fn of(item: &'a RequestedItem) -> ItemFields<'a> {
        ItemFields {
            comment: item.comment.as_deref(),
            client_metadata: &item.client_metadata,
            start_date: item.start_date,
            remove_date: item.remove_date,
            accounts: item.account_selection.as_ref(),
            native_identity: item.native_identity.as_deref(),
            form_instance_id: item.form_instance_id.as_deref(),
        }
    }
}

fn check_item_fields(
    path: &str,
    request_type: RequestType,
    item: &ItemFields<'_>,
) -> Result<(), Error> {
    let not_allowed = |field| Error::NotAllowed {
        path: path.to_owned(),
        field,
        request_type,
    };
    match request_type {
        RequestType::Revoke => {
            if item.start_date.is_some() {
                return Err(not_allowed("startDate"));
            }
            if item.form_instance_id.is_some() {
                return Err(not_allowed("formInstanceId"));
            }
            if item.accounts.is_some() {
                return Err(not_allowed("accountSelection"));
            }
            if item.comment.is_none_or(|c| c.trim().is_empty()) {
                return Err(Error::RevokeCommentRequired {
                    path: path.to_owned(),
                });
            }
        }
        RequestType::Grant => {
            if item.native_identity.is_some() {
                return Err(not_allowed("nativeIdentity"));
            }
            if let Some(form) = item.form_instance_id {
                check_ref(path, "formInstanceId", form)?;
            }
        }
    }
    if let Some(comment) = item.comment {
        check_comment(&format!("{path}.comment"), comment)?;
    }
    check_metadata(&format!("{path}.clientMetadata"), item.client_metadata)?;
    if let Some(native) = item.native_identity {
        check_ref(path, "nativeIdentity", native)?;
    }
    if let Some(accounts) = item.accounts {
        check_accounts(path, accounts)?;
    }
    if let (Some(start), Some(remove)) = (item.start_date, item.remove_date)
        && remove <= start
    {
        return Err(Error::RemoveBeforeStart {
            path: path.to_owned(),
            start,
            remove,
        });
    }
    Ok(())
}

/// Checks a submission against every rule and limit of the contract and expands it into item
/// specs, one per identity and object, in order (identities first, then their items).
///
/// `requester` is the identity submitting; `now` is the time of the check (dates must be later);
/// `existing` tells what an identity holds of an object already (for the revoke rules: the access
/// must be held, not from a role or birthright, and a `removeDate` must come before an existing
/// sunset). Duplicates of existing access are not an error here: `decide` cancels them as the
/// contract describes. `admin` (the requester is an org admin) and `config` (the tenant's access
/// request config) decide the rules [`AccessRequestConfig::check_item`] adds, checked on each
/// item. The first rule broken is returned.
pub fn validate_submit(
    request: AccessRequestId,
    submission: &Submission,
    requester: &IdentityId,
    admin: bool,
    config: &AccessRequestConfig,
    now: Timestamp,
    existing: impl Fn(&IdentityId, &ObjectRef) -> Existing,
) -> Result<Vec<ItemSpec>, Error> {
    let request_type = submission.request_type;
    check_metadata("clientMetadata", &submission.client_metadata)?;
    let groups = submission.groups()?;
    let identities = groups.len();
    let mut seen = BTreeSet::new();
    let mut entitlements = BTreeSet::new();
    let mut items = 0usize;
    for (identity, path, list) in &groups {
        if !seen.insert(*identity) {
            return Err(Error::DuplicateIdentity((*identity).clone()));
        }
        if list.is_empty() {
            return Err(Error::NoItems { path: path.clone() });
        }
        if list.len() > MAX_OBJECTS_PER_IDENTITY {
            return Err(Error::TooManyItems {
                what: "objects requested for one identity",
                count: list.len(),
                max: MAX_OBJECTS_PER_IDENTITY,
            });
        }
        items += list.len();
        for item in list.iter() {
            if let Some(o) = item
                .object
                .as_ref()
                .filter(|o| o.kind == ObjectKind::Entitlement)
            {
                entitlements.insert(&o.id);
            }
        }
    }
    // Limits first, so an oversized request is refused before its items are examined.
    if identities > MAX_IDENTITIES {
        return Err(Error::TooManyIdentities {
            count: identities,
            max: MAX_IDENTITIES,
            rule: "",
        });
    }
    if !entitlements.is_empty() && identities > MAX_IDENTITIES_WITH_ENTITLEMENTS {
        return Err(Error::TooManyIdentities {
            count: identities,
            max: MAX_IDENTITIES_WITH_ENTITLEMENTS,
            rule: " when entitlements are requested",
        });
    }
    if entitlements.len() > MAX_ENTITLEMENTS {
        return Err(Error::TooManyEntitlements {
            count: entitlements.len(),
            max: MAX_ENTITLEMENTS,
        });
    }
    if items > MAX_ITEMS {
        return Err(Error::TooManyItems {
            what: "items (identities x objects) in one request",
            count: items,
            max: MAX_ITEMS,
        });
    }
    if request_type == RequestType::Revoke {
        if identities != 1 {
            return Err(Error::RevokeIdentities { count: identities });
        }
        if entitlements.len() > MAX_REVOKE_ENTITLEMENTS {
            return Err(Error::RevokeEntitlements {
                count: entitlements.len(),
            });
        }
        if groups[0].0 == requester {
            return Err(Error::RevokeForSelf(requester.clone()));
        }
    }
    let mut specs = Vec::with_capacity(items);
    for (identity, prefix, list) in &groups {
        let mut objects = BTreeSet::new();
        for (i, item) in list.iter().enumerate() {
            let path = format!("{prefix}[{i}]");
            let object = item
                .object
                .as_ref()
                .ok_or_else(|| Error::MissingObject { path: path.clone() })?;
            if !objects.insert(object) {
                return Err(Error::DuplicateItem {
                    identity: (*identity).clone(),
                    object: object.clone(),
                });
            }
            check_item_fields(&path, request_type, &ItemFields::of(item))?;
            for (field, date) in [
                ("startDate", item.start_date),
                ("removeDate", item.remove_date),
            ] {
                if let Some(date) = date.filter(|d| *d <= now) {
                    return Err(Error::NotFuture {
                        path,
                        field,
                        date,
                        now,
                    });
                }
            }
            if request_type == RequestType::Revoke {
                let existing = existing(identity, object);
                check_revoke(&path, identity, object, item.remove_date, &existing)?;
            }
            let index = u32::try_from(specs.len()).expect("items are bounded by MAX_ITEMS");
            let spec = ItemSpec {
                id: item_id(request, index),
                request,
                request_type,
                requested_for: (*identity).clone(),
                requester: requester.clone(),
                object: object.clone(),
                comment: item.comment.clone(),
                client_metadata: item.client_metadata.clone(),
                request_metadata: submission.client_metadata.clone(),
                start_date: item.start_date,
                remove_date: item.remove_date,
                accounts: item.account_selection.clone().unwrap_or_default(),
                native_identity: item.native_identity.clone(),
                form_instance_id: item.form_instance_id.clone(),
            };
            config.check_item(&path, &spec, admin, now)?;
            specs.push(spec);
        }
    }
    Ok(specs)
}

/// The revoke rules: the identity holds the object by request (not inherited), and a removal
/// date comes before the assignment's own sunset. Checked against the caller's snapshot when
/// the request is validated, and again by `decide` against the writer's current state, so a
/// removal committed in between refuses the revoke instead of letting it through.
pub(crate) fn check_revoke(
    path: &str,
    identity: &IdentityId,
    object: &ObjectRef,
    remove_date: Option<Timestamp>,
    existing: &Existing,
) -> Result<(), Error> {
    let assignment = existing
        .assignment
        .as_ref()
        .ok_or_else(|| Error::RevokeNotAssigned {
            path: path.to_owned(),
            identity: identity.clone(),
            object: object.clone(),
        })?;
    if assignment.origin != Origin::Requested {
        return Err(Error::RevokeInherited {
            path: path.to_owned(),
            object: object.clone(),
            origin: assignment.origin,
        });
    }
    if let (Some(remove), Some(sunset)) = (remove_date, assignment.remove_date)
        && remove >= sunset
    {
        return Err(Error::RemoveNotBeforeSunset {
            path: path.to_owned(),
            remove,
            sunset,
        });
    }
    Ok(())
}

/// Whether an item would change nothing: the contract cancels such a request as a duplicate.
///
/// A grant is a duplicate of an item in progress for the same identity and object, or of an
/// assignment it would not change: the same dates, and no account selection or the same one. A
/// revoke is a duplicate of an item in progress. Returns what it duplicates.
pub fn duplicate_of(spec: &ItemSpec, existing: &Existing) -> Option<Duplicate> {
    if let Some(item) = existing.in_progress {
        return Some(Duplicate::InProgress(item));
    }
    if spec.request_type == RequestType::Grant
        && let Some(a) = &existing.assignment
        && a.start_date == spec.start_date
        && a.remove_date == spec.remove_date
        && (spec.accounts.is_empty() || spec.accounts == a.accounts)
    {
        return Some(Duplicate::AlreadyAssigned);
    }
    None
}

/// What a duplicate duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Duplicate {
    /// The access is already assigned, with the same account and dates.
    AlreadyAssigned,
    /// This item is already in progress for the same identity and object.
    InProgress(RequestItemId),
}
