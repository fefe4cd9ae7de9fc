//! Queries: the contract's collection parameters (`filters`, `sorters`, `offset`, `limit`,
//! `count`, `searchAfter`) over the connections and the activation history, served from the
//! secondary indexes.
//!
//! # Parameters
//!
//! [`Query::parse`] takes the raw HTTP parameter strings and checks them against a
//! [`Collection`] ([`CONNECTIONS`], [`HISTORY`] or [`HISTORY_OF_IDENTITY`]):
//!
//! - `filters`: the grammar of [`jitflow_core::filter`], with the collection's field table.
//! - `sorters`: comma-separated fields, `-` for descending. Absent: the collection's default
//!   (`id` for connections, `-activationInitiated` for the history).
//! - `offset`: 0..=[`MAX_OFFSET`] (the contract's 10,000 offset window; `searchAfter` pages
//!   past it). `limit`: 0..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`] (the contract's 250).
//! - `count`: `true` or `false`; with `true` the page carries the number of records matching the
//!   filter, whatever `offset`, `limit` and `searchAfter` say.
//! - `searchAfter`: the values of the sort fields of the last record of the previous page, one
//!   per sorter (the default sorters when none are given), comma separated, in sorter order.
//!   **Encoding**: text as is, with `\,` for a comma and `\\` for a backslash; timestamps in
//!   RFC 3339; ids as UUIDs; booleans as `true`/`false`; enum values in any case; an empty value
//!   is null for a field that can be null (the JIT timestamps, `provisionCompleted`, the
//!   privilege level) and the empty text otherwise. [`search_after`] writes it for a record.
//!   The page starts strictly after that position in the sort order. Include `id` as the last
//!   sorter to page exactly: without it, records that tie with the last one on every sorter are
//!   skipped (as in the contract).
//!
//! # Order
//!
//! Records are ordered by the sorters, then by `id` in the direction of the last sorter (so
//! `-activationInitiated` orders newest first, and among equal instants by descending id). Null
//! sorts first ascending and last descending (see [`jitflow_core::filter::compare_sort`]).
//!
//! # Plans
//!
//! The planner picks one index from the top-level `and` of the filter (and the identity scope of
//! the current-identity variants): `eq` or `in` on an indexed field (connections: `identity.id`,
//! `entitlement.id`, `source.id`, `state.value`, `type`; history: `identityId`,
//! `entitlementId`, `sourceId`, `connectionId`, `status`), or ranges on an indexed timestamp
//! (`jit.*`; `activationInitiated`). It prefers the most selective field. When the index yields
//! records in the requested order (one value ordered by `id`, a range of the sort field, or the
//! whole index of a sort field every record has), it *streams*: reads from the `searchAfter`
//! position and stops once the page is full. Otherwise it collects the candidates, keeps the
//! best `offset + limit` in memory and sorts them. A filter no index serves reads the whole
//! tenant (a *scan*). The `query` tracing span names the plan ([`Plan`]'s `Display`), and a
//! scan under a filter logs a debug event.
//!
//! Every query decodes at most [`Query::max_examined`] records or index keys (default and
//! maximum [`MAX_EXAMINED`]) and fails with [`Error::ScanBound`] past it, so no request costs
//! more than a bounded amount of work.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Bound;

use jitflow_core::connection::Connection;
use jitflow_core::filter::{
    self, ACTIVATION_HISTORY_FIELDS, ACTIVATION_HISTORY_SELF_FIELDS, ACTIVATION_STATUSES,
    CONNECTION_STATES, CONNECTION_TYPES, CmpOp, ENTITLEMENT_CONNECTION_FIELDS, Expr, FieldSpec,
    FieldValue, Fields, Op, Sort, Value,
};
use jitflow_core::history::ActivationRecord;
use jitflow_core::id::{ActivationId, ConnectionId, IdentityId, TenantId};
use jitflow_core::time::Timestamp;
use redb::TableDefinition;

use crate::codec::{self, Problem, RecordName};
use crate::index::{self, IndexedField};
use crate::read::{self, Reader};
use crate::tables;

/// The page size when `limit` is absent: the contract's default.
pub const DEFAULT_LIMIT: usize = 250;
/// The largest `limit`: the contract's maximum.
pub const MAX_LIMIT: usize = 250;
/// The largest `offset`: the contract's 10,000 offset window (`searchAfter` pages past it).
pub const MAX_OFFSET: usize = 10_000;
/// The most records or index keys one query decodes, by default and at most.
pub const MAX_EXAMINED: usize = 1_000_000;

/// Why a query was refused or failed. Every variant but [`Error::Read`] is a problem with the
/// request (the HTTP shim answers 400); nothing is changed either way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `filters` parameter does not parse or names a field or operator the collection does
    /// not allow; the inner error says where.
    #[error("filters: {0}")]
    Filter(#[source] filter::Error),
    /// The `sorters` parameter does not parse or names a field the collection cannot sort by.
    #[error("sorters: {0}")]
    Sorters(#[source] filter::Error),
    /// `offset` or `limit` is not an integer.
    #[error("{parameter} must be an integer; `{value}` is not one")]
    NotANumber {
        /// `offset` or `limit`.
        parameter: &'static str,
        /// The value as given (cut to 64 characters).
        value: String,
    },
    /// `limit` is outside 0..=[`MAX_LIMIT`].
    #[error("limit must be between 0 and {max}; {limit} is not")]
    LimitOutOfRange {
        /// The limit asked for.
        limit: i128,
        /// [`MAX_LIMIT`].
        max: usize,
    },
    /// `offset` is outside 0..=[`MAX_OFFSET`]; page further with `searchAfter`.
    #[error(
        "offset must be between 0 and {max} (use searchAfter to page further); {offset} is not"
    )]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i128,
        /// [`MAX_OFFSET`].
        max: usize,
    },
    /// `count` is neither `true` nor `false`.
    #[error("count must be true or false; `{value}` is neither")]
    BadCount {
        /// The value as given (cut to 64 characters).
        value: String,
    },
    /// `searchAfter` holds another number of values than there are sorters.
    #[error(
        "searchAfter has {found} values but there are {expected} sorters; give one value per sorter"
    )]
    SearchAfterLength {
        /// The number of sorters (the default sorters when none are given).
        expected: usize,
        /// The number of values given.
        found: usize,
    },
    /// A `searchAfter` value is not a value of its sorter's field.
    #[error(
        "searchAfter value {position} (`{value}`) is not a value of `{field}`: expected {expected}"
    )]
    SearchAfterValue {
        /// The value's place in the list, from 0.
        position: usize,
        /// The sorter's field.
        field: &'static str,
        /// The value as given (cut to 64 characters).
        value: String,
        /// What the field takes.
        expected: String,
    },
    /// `searchAfter` is too long or has a backslash followed by something other than `,` or
    /// `\`.
    #[error("searchAfter is malformed: {reason}")]
    SearchAfterSyntax {
        /// What is wrong.
        reason: String,
    },
    /// A query built by hand filters on a field, or with an operator, that the collection does
    /// not allow (for example `identityId` in the current identity's history).
    #[error("the filter's `{field} {op}` is not allowed here")]
    FieldNotAllowed {
        /// The field.
        field: String,
        /// The operator.
        op: Op,
    },
    /// A query built by hand sorts by a field the collection cannot sort by, twice by the same
    /// field, or by more than [`filter::MAX_SORTERS`] fields.
    #[error("cannot sort by `{field}` here")]
    SortNotAllowed {
        /// The field.
        field: String,
    },
    /// [`Query::max_examined`] is 0 or over [`MAX_EXAMINED`].
    #[error("max_examined must be between 1 and {max}; {requested} is not")]
    ExaminedOutOfRange {
        /// The bound asked for.
        requested: usize,
        /// [`MAX_EXAMINED`].
        max: usize,
    },
    /// Answering would decode more than [`Query::max_examined`] records or index keys: no index
    /// serves the filter and sort well enough. Narrow the filter with an indexed field.
    #[error(
        "the query would examine more than {max} records; add a condition on an indexed field \
         (identity, entitlement, source, state, type or a JIT timestamp range)"
    )]
    ScanBound {
        /// The bound that was reached.
        max: usize,
    },
    /// Reading the store failed (storage error, corrupt record).
    #[error(transparent)]
    Read(#[from] read::Error),
}

macro_rules! read_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::Read(read::Error::from(e))
            }
        }
    )*};
}
read_from!(std::io::Error, codec::Error);

/// Cuts user input to 64 characters for an error message.
fn echo(text: &str) -> String {
    text.chars().take(64).collect()
}

// ---------------------------------------------------------------------------------------------
// Collections.

/// What a sort field's values are, for `searchAfter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortType {
    /// Free text.
    Text,
    /// One of the listed values (matched in any case, kept in the listed spelling).
    Enum(&'static [&'static str]),
    /// `true` or `false`.
    Bool,
    /// An RFC 3339 date-time.
    Timestamp,
    /// A UUID.
    Uuid,
}

/// One sortable field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortField {
    /// The field's name.
    pub name: &'static str,
    /// Its values.
    pub ty: SortType,
    /// Whether a record may have no value (an empty `searchAfter` value is then null).
    pub nullable: bool,
}

const fn sort_field(name: &'static str, ty: SortType, nullable: bool) -> SortField {
    SortField { name, ty, nullable }
}

/// A list endpoint: its field tables, sort fields and indexes.
#[derive(Debug)]
pub struct Collection {
    /// Its name, for traces.
    pub name: &'static str,
    /// The filterable fields.
    pub fields: &'static [FieldSpec],
    /// The sortable fields.
    pub sorters: &'static [SortField],
    /// The order when `sorters` is absent.
    pub default_sorters: &'static [Sort],
    /// The field the current-identity variant constrains.
    pub identity_field: &'static str,
    indexed: &'static [IndexedField],
}

impl Collection {
    fn sort_field(&self, name: &str) -> Option<&'static SortField> {
        self.sorters.iter().find(|f| f.name == name)
    }

    fn sorter_names(&self) -> Vec<&'static str> {
        self.sorters.iter().map(|f| f.name).collect()
    }
}

const fn asc(field: &'static str) -> Sort {
    Sort {
        field,
        descending: false,
    }
}

const fn desc(field: &'static str) -> Sort {
    Sort {
        field,
        descending: true,
    }
}

const CONNECTION_SORT_FIELDS: &[SortField] = &[
    sort_field("id", SortType::Uuid, false),
    sort_field("identity.id", SortType::Text, false),
    sort_field("identity.name", SortType::Text, false),
    sort_field("source.id", SortType::Text, false),
    sort_field("source.name", SortType::Text, false),
    sort_field("account.id", SortType::Text, false),
    sort_field("account.name", SortType::Text, false),
    sort_field("entitlement.id", SortType::Text, false),
    sort_field("entitlement.displayName", SortType::Text, false),
    sort_field("entitlement.attribute", SortType::Text, false),
    sort_field("entitlement.privilegeLevel.effective", SortType::Text, true),
    sort_field("type", SortType::Enum(CONNECTION_TYPES), false),
    sort_field("state.value", SortType::Enum(CONNECTION_STATES), false),
    sort_field("standalone", SortType::Bool, false),
    sort_field("jit.activation", SortType::Timestamp, true),
    sort_field("jit.provision", SortType::Timestamp, true),
    sort_field("jit.deactivation", SortType::Timestamp, true),
    sort_field("jit.deprovision", SortType::Timestamp, true),
    sort_field("jit.expiration", SortType::Timestamp, true),
];

const HISTORY_SORT_FIELDS: &[SortField] = &[
    sort_field("activationInitiated", SortType::Timestamp, false),
    sort_field("provisionCompleted", SortType::Timestamp, true),
    sort_field("status", SortType::Enum(ACTIVATION_STATUSES), false),
    sort_field("id", SortType::Uuid, false),
];

/// The entitlement connections list (and its current-identity variant, which
/// [`Reader::query_connections`] scopes with `identity.id`).
pub const CONNECTIONS_COLLECTION: Collection = Collection {
    name: "entitlement-connections",
    fields: ENTITLEMENT_CONNECTION_FIELDS,
    sorters: CONNECTION_SORT_FIELDS,
    default_sorters: &[asc("id")],
    identity_field: "identity.id",
    indexed: index::CONNECTION_FIELDS,
};

/// The tenant's activation history.
pub const HISTORY_COLLECTION: Collection = Collection {
    name: "jit-activation-history",
    fields: ACTIVATION_HISTORY_FIELDS,
    sorters: HISTORY_SORT_FIELDS,
    default_sorters: &[desc("activationInitiated")],
    identity_field: "identityId",
    indexed: index::HISTORY_FIELDS,
};

/// The current identity's activation history: the contract lists no `identityId` filter.
pub const HISTORY_OF_IDENTITY_COLLECTION: Collection = Collection {
    name: "jit-activation-history/current-identity",
    fields: ACTIVATION_HISTORY_SELF_FIELDS,
    ..HISTORY_COLLECTION
};

/// The entitlement connections list.
pub const CONNECTIONS: &Collection = &CONNECTIONS_COLLECTION;
/// The tenant's activation history.
pub const HISTORY: &Collection = &HISTORY_COLLECTION;
/// The current identity's activation history.
pub const HISTORY_OF_IDENTITY: &Collection = &HISTORY_OF_IDENTITY_COLLECTION;

const REQUEST_SORT_FIELDS: &[SortField] = &[
    sort_field("created", SortType::Timestamp, false),
    sort_field("modified", SortType::Timestamp, false),
    sort_field("accountActivityItemId", SortType::Uuid, false),
    sort_field("name", SortType::Text, false),
    sort_field("accessRequestId", SortType::Uuid, false),
    sort_field("id", SortType::Uuid, false),
];

const APPROVAL_SORT_FIELDS: &[SortField] = &[
    sort_field("created", SortType::Timestamp, false),
    sort_field("modified", SortType::Timestamp, false),
    sort_field("id", SortType::Uuid, false),
];

/// The request status list (`access-request-status`): one row per request item. Served by
/// [`Reader::query_items`](crate::request_query) from the people index.
pub const REQUEST_STATUS: &Collection = &Collection {
    name: "access-request-status",
    fields: filter::ACCESS_REQUEST_STATUS_FIELDS,
    sorters: REQUEST_SORT_FIELDS.split_at(4).0,
    default_sorters: &[desc("created")],
    identity_field: "requestedFor.id",
    indexed: &[],
};

/// The administrators' request list (`access-request-administration`).
pub const REQUEST_ADMINISTRATION: &Collection = &Collection {
    name: "access-request-administration",
    fields: filter::ACCESS_REQUEST_ADMIN_FIELDS,
    sorters: REQUEST_SORT_FIELDS,
    default_sorters: &[desc("created")],
    identity_field: "requestedFor.id",
    indexed: &[],
};

/// The pending approvals list (`access-request-approvals/pending`): `id` is the approval id.
pub const PENDING_APPROVALS: &Collection = &Collection {
    name: "access-request-approvals/pending",
    fields: filter::PENDING_APPROVAL_FIELDS,
    sorters: APPROVAL_SORT_FIELDS,
    default_sorters: &[desc("created")],
    identity_field: "requestedFor.id",
    indexed: &[],
};

/// The completed approvals list (`access-request-approvals/completed`).
pub const COMPLETED_APPROVALS: &Collection = &Collection {
    name: "access-request-approvals/completed",
    fields: filter::COMPLETED_APPROVAL_FIELDS,
    sorters: APPROVAL_SORT_FIELDS,
    default_sorters: &[desc("modified")],
    identity_field: "requestedFor.id",
    indexed: &[],
};

// ---------------------------------------------------------------------------------------------
// Values.

/// An owned field value: a `searchAfter` value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SortValue {
    /// No value.
    Null,
    /// Text or an enum value.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// An instant.
    Timestamp(Timestamp),
    /// A UUID's bits.
    Uuid(u128),
}

impl SortValue {
    /// The value as a record's field value.
    pub fn as_field(&self) -> FieldValue<'_> {
        match self {
            SortValue::Null => FieldValue::Null,
            SortValue::Text(t) => FieldValue::Text(t),
            SortValue::Bool(b) => FieldValue::Bool(*b),
            SortValue::Timestamp(t) => FieldValue::Timestamp(*t),
            SortValue::Uuid(u) => FieldValue::Uuid(*u),
        }
    }

    /// The owned copy of a record's field value.
    pub fn of(value: FieldValue<'_>) -> SortValue {
        match value {
            FieldValue::Null => SortValue::Null,
            FieldValue::Text(t) => SortValue::Text(t.to_owned()),
            FieldValue::Bool(b) => SortValue::Bool(b),
            FieldValue::Timestamp(t) => SortValue::Timestamp(t),
            FieldValue::Uuid(u) => SortValue::Uuid(u),
        }
    }

    /// Whether the value is of the field's type (or null where the field allows it).
    fn fits(&self, field: &SortField) -> bool {
        match (self, field.ty) {
            (SortValue::Null, _) => field.nullable,
            (SortValue::Text(_), SortType::Text) => true,
            (SortValue::Text(t), SortType::Enum(allowed)) => allowed.contains(&t.as_str()),
            (SortValue::Bool(_), SortType::Bool) => true,
            (SortValue::Timestamp(_), SortType::Timestamp) => true,
            (SortValue::Uuid(_), SortType::Uuid) => true,
            _ => false,
        }
    }

    /// Writes the value in the `searchAfter` encoding (see the module documentation).
    fn write_encoded(&self, out: &mut String) {
        match self {
            SortValue::Null => {}
            SortValue::Text(text) => {
                for c in text.chars() {
                    if c == ',' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            SortValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            SortValue::Timestamp(t) => out.push_str(&t.to_rfc3339()),
            SortValue::Uuid(u) => out.push_str(&ConnectionId::from_u128(*u).to_string()),
        }
    }
}

/// Splits a `searchAfter` parameter on its unescaped commas, resolving `\,` and `\\`.
fn split_search_after(input: &str) -> Result<Vec<String>, Error> {
    if input.len() > filter::MAX_INPUT_LEN {
        return Err(Error::SearchAfterSyntax {
            reason: format!(
                "it is {} bytes long; the limit is {}",
                input.len(),
                filter::MAX_INPUT_LEN
            ),
        });
    }
    let (mut values, mut current) = (Vec::new(), String::new());
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ (',' | '\\')) => current.push(escaped),
                _ => {
                    return Err(Error::SearchAfterSyntax {
                        reason: "a backslash must be followed by `,` or `\\`".to_owned(),
                    });
                }
            },
            ',' => values.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    values.push(current);
    Ok(values)
}

/// The typed value of the `searchAfter` text `text` for `field`, at `position`.
fn parse_sort_value(position: usize, field: &SortField, text: &str) -> Result<SortValue, Error> {
    let wrong = |expected: &str| Error::SearchAfterValue {
        position,
        field: field.name,
        value: echo(text),
        expected: expected.to_owned(),
    };
    if text.is_empty() && field.nullable {
        return Ok(SortValue::Null);
    }
    match field.ty {
        SortType::Text => Ok(SortValue::Text(text.to_owned())),
        SortType::Enum(allowed) => allowed
            .iter()
            .find(|v| v.eq_ignore_ascii_case(text))
            .map(|v| SortValue::Text((*v).to_owned()))
            .ok_or_else(|| wrong(&format!("one of {}", allowed.join(", ")))),
        SortType::Bool => match text {
            "true" => Ok(SortValue::Bool(true)),
            "false" => Ok(SortValue::Bool(false)),
            _ => Err(wrong("true or false")),
        },
        SortType::Timestamp => Timestamp::parse_rfc3339(text)
            .map(SortValue::Timestamp)
            .map_err(|_| wrong("an RFC 3339 date-time such as 2026-04-01T10:00:00Z")),
        SortType::Uuid => ConnectionId::parse(text)
            .map(|id| SortValue::Uuid(id.as_u128()))
            .map_err(|_| wrong("a UUID")),
    }
}

// ---------------------------------------------------------------------------------------------
// The query.

/// One list request: the contract's collection parameters, parsed and typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `filters`, if any.
    pub filter: Option<Expr>,
    /// `sorters`; empty means the collection's default.
    pub sorters: Vec<Sort>,
    /// Records to skip after the `searchAfter` position: 0..=[`MAX_OFFSET`].
    pub offset: usize,
    /// The page size: 0..=[`MAX_LIMIT`].
    pub limit: usize,
    /// Whether to count every record the filter matches.
    pub count: bool,
    /// The sort values of the last record of the previous page, one per sorter.
    pub search_after: Option<Vec<SortValue>>,
    /// The most records or index keys the query may decode: 1..=[`MAX_EXAMINED`].
    pub max_examined: usize,
}

impl Default for Query {
    /// No filter, the default order, the first [`DEFAULT_LIMIT`] records, no count.
    fn default() -> Query {
        Query {
            filter: None,
            sorters: Vec::new(),
            offset: 0,
            limit: DEFAULT_LIMIT,
            count: false,
            search_after: None,
            max_examined: MAX_EXAMINED,
        }
    }
}

/// Parses an `offset` or `limit` value and checks it against `max`.
fn parse_bounded(
    parameter: &'static str,
    text: &str,
    max: usize,
    out_of_range: fn(i128, usize) -> Error,
) -> Result<usize, Error> {
    let n: i128 = text.trim().parse().map_err(|_| Error::NotANumber {
        parameter,
        value: echo(text),
    })?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| out_of_range(n, max))
}

impl Query {
    /// Parses the raw HTTP parameters of a list request on `collection` (`None` for an absent
    /// parameter) and validates the result (see [`Query::validate`]).
    ///
    /// # Errors
    ///
    /// The first problem found, checking `filters`, `sorters`, `offset`, `limit`, `count` and
    /// `searchAfter` in that order.
    pub fn parse(
        collection: &Collection,
        filters: Option<&str>,
        sorters: Option<&str>,
        offset: Option<&str>,
        limit: Option<&str>,
        count: Option<&str>,
        search_after: Option<&str>,
    ) -> Result<Query, Error> {
        let mut query = Query::default();
        if let Some(text) = filters {
            query.filter =
                Some(filter::parse_filter(text, collection.fields).map_err(Error::Filter)?);
        }
        if let Some(text) = sorters {
            query.sorters =
                filter::parse_sorters(text, &collection.sorter_names()).map_err(Error::Sorters)?;
        }
        if let Some(text) = offset {
            query.offset = parse_bounded("offset", text, MAX_OFFSET, |offset, max| {
                Error::OffsetOutOfRange { offset, max }
            })?;
        }
        if let Some(text) = limit {
            query.limit = parse_bounded("limit", text, MAX_LIMIT, |limit, max| {
                Error::LimitOutOfRange { limit, max }
            })?;
        }
        if let Some(text) = count {
            query.count = match text.trim() {
                t if t.eq_ignore_ascii_case("true") => true,
                t if t.eq_ignore_ascii_case("false") => false,
                _ => return Err(Error::BadCount { value: echo(text) }),
            };
        }
        if let Some(text) = search_after {
            let sorts = query.effective_sorters(collection);
            let texts = split_search_after(text)?;
            if texts.len() != sorts.len() {
                return Err(Error::SearchAfterLength {
                    expected: sorts.len(),
                    found: texts.len(),
                });
            }
            let mut values = Vec::with_capacity(texts.len());
            for (position, (sort, text)) in sorts.iter().zip(&texts).enumerate() {
                let field =
                    collection
                        .sort_field(sort.field)
                        .ok_or_else(|| Error::SortNotAllowed {
                            field: sort.field.to_owned(),
                        })?;
                values.push(parse_sort_value(position, field, text)?);
            }
            query.search_after = Some(values);
        }
        query.validate(collection)?;
        Ok(query)
    }

    /// The sorters in effect: the given ones, or the collection's default.
    pub fn effective_sorters<'a>(&'a self, collection: &'a Collection) -> &'a [Sort] {
        if self.sorters.is_empty() {
            collection.default_sorters
        } else {
            &self.sorters
        }
    }

    /// The full order: the sorters in effect, then `id` in the direction of the last one (unless
    /// `id` is a sorter already).
    pub fn order(&self, collection: &Collection) -> Vec<Sort> {
        let mut keys = self.effective_sorters(collection).to_vec();
        if !keys.iter().any(|k| k.field == "id") {
            let descending = keys.last().is_some_and(|k| k.descending);
            keys.push(Sort {
                field: "id",
                descending,
            });
        }
        keys
    }

    /// Checks a query (parsed, or built by hand) against `collection`: the filter's fields and
    /// operators, the sorters, the bounds, and the `searchAfter` values' number and types.
    ///
    /// # Errors
    ///
    /// [`Error::FieldNotAllowed`], [`Error::SortNotAllowed`], [`Error::LimitOutOfRange`],
    /// [`Error::OffsetOutOfRange`], [`Error::ExaminedOutOfRange`],
    /// [`Error::SearchAfterLength`] or [`Error::SearchAfterValue`].
    pub fn validate(&self, collection: &Collection) -> Result<(), Error> {
        if let Some(expr) = &self.filter {
            check_fields(expr, collection.fields)?;
        }
        if self.sorters.len() > filter::MAX_SORTERS {
            return Err(Error::SortNotAllowed {
                field: self.sorters[filter::MAX_SORTERS].field.to_owned(),
            });
        }
        for (i, sort) in self.sorters.iter().enumerate() {
            if collection.sort_field(sort.field).is_none()
                || self.sorters[..i].iter().any(|s| s.field == sort.field)
            {
                return Err(Error::SortNotAllowed {
                    field: sort.field.to_owned(),
                });
            }
        }
        if self.limit > MAX_LIMIT {
            return Err(Error::LimitOutOfRange {
                limit: self.limit as i128,
                max: MAX_LIMIT,
            });
        }
        if self.offset > MAX_OFFSET {
            return Err(Error::OffsetOutOfRange {
                offset: self.offset as i128,
                max: MAX_OFFSET,
            });
        }
        if self.max_examined == 0 || self.max_examined > MAX_EXAMINED {
            return Err(Error::ExaminedOutOfRange {
                requested: self.max_examined,
                max: MAX_EXAMINED,
            });
        }
        if let Some(values) = &self.search_after {
            let sorts = self.effective_sorters(collection);
            if values.len() != sorts.len() {
                return Err(Error::SearchAfterLength {
                    expected: sorts.len(),
                    found: values.len(),
                });
            }
            for (position, (sort, value)) in sorts.iter().zip(values).enumerate() {
                let field =
                    collection
                        .sort_field(sort.field)
                        .ok_or_else(|| Error::SortNotAllowed {
                            field: sort.field.to_owned(),
                        })?;
                if !value.fits(field) {
                    return Err(Error::SearchAfterValue {
                        position,
                        field: field.name,
                        value: format!("{value:?}"),
                        expected: format!("{:?}", field.ty),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Checks that every comparison of `expr` names a field of `fields` with an operator it allows.
fn check_fields(expr: &Expr, fields: &'static [FieldSpec]) -> Result<(), Error> {
    let check = |field: &str, op: Op| match filter::find_field(fields, field) {
        Some(spec) if spec.allows(op) => Ok(()),
        _ => Err(Error::FieldNotAllowed {
            field: field.to_owned(),
            op,
        }),
    };
    match expr {
        Expr::And(operands) | Expr::Or(operands) => {
            operands.iter().try_for_each(|e| check_fields(e, fields))
        }
        Expr::Not(operand) => check_fields(operand, fields),
        Expr::Cmp { field, op, .. } => check(field, op.op()),
        Expr::In { field, .. } => check(field, Op::In),
        Expr::IsNull { field } => check(field, Op::IsNull),
    }
}

/// The `searchAfter` parameter that continues after `record` (the last record of a page) with
/// `query`'s sorters on `collection`.
pub fn search_after(collection: &Collection, query: &Query, record: &impl Fields) -> String {
    let mut out = String::new();
    for (i, sort) in query.effective_sorters(collection).iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        SortValue::of(record.field(sort.field)).write_encoded(&mut out);
    }
    out
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The records, in order, at most the query's `limit`.
    pub items: Vec<T>,
    /// The number of records the filter matches (whatever `offset`, `limit` and
    /// `searchAfter` say), when the query asked for `count`.
    pub total: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Plans.

/// Where a plan reads its candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Every record of the tenant (by id, or by a sort field's whole index).
    Scan,
    /// The entries of one indexed field for some values or a range of values.
    Index {
        /// The field.
        field: &'static str,
        /// How many key ranges (one per `in` value; one for a range).
        ranges: usize,
    },
}

/// How a plan orders its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Read in the requested order from the `searchAfter` position, stopping once the page is
    /// full.
    Streamed,
    /// Every candidate is read; the best `offset + limit` are kept and sorted in memory.
    Sorted,
}

/// The plan the planner chose for a query (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Where the candidates come from.
    pub access: Access,
    /// How they are ordered.
    pub order: Order,
    /// Whether the index answers the whole filter, so a count needs only its keys.
    pub covered: bool,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.access {
            Access::Scan => f.write_str("scan")?,
            Access::Index { field, ranges } => write!(f, "index {field} ({ranges} ranges)")?,
        }
        match self.order {
            Order::Streamed => f.write_str(", streamed")?,
            Order::Sorted => f.write_str(", sorted in memory")?,
        }
        if self.covered {
            f.write_str(", covered")?;
        }
        Ok(())
    }
}

/// A range of (value key, id) in one field's index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyRange {
    lo: Bound<(Vec<u8>, u128)>,
    hi: Bound<(Vec<u8>, u128)>,
}

impl KeyRange {
    fn point(key: Vec<u8>) -> KeyRange {
        KeyRange {
            lo: Bound::Included((key.clone(), 0)),
            hi: Bound::Included((key, u128::MAX)),
        }
    }

    fn all() -> KeyRange {
        KeyRange {
            lo: Bound::Unbounded,
            hi: Bound::Unbounded,
        }
    }

    /// Narrows the lower end to `lo` if that is tighter.
    fn raise(&mut self, lo: Bound<(Vec<u8>, u128)>) {
        if tighter(&lo, &self.lo, Ordering::Greater) {
            self.lo = lo;
        }
    }

    /// Narrows the upper end to `hi` if that is tighter.
    fn lower(&mut self, hi: Bound<(Vec<u8>, u128)>) {
        if tighter(&hi, &self.hi, Ordering::Less) {
            self.hi = hi;
        }
    }

    fn is_empty(&self) -> bool {
        match (&self.lo, &self.hi) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(a), Bound::Included(b)) => a > b,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a >= b
            }
        }
    }
}

/// Whether bound `a` is tighter than `b` in the direction `towards` (Greater for a lower end).
fn tighter<K: Ord>(a: &Bound<K>, b: &Bound<K>, towards: Ordering) -> bool {
    match (a, b) {
        (Bound::Unbounded, _) => false,
        (_, Bound::Unbounded) => true,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            match x.cmp(y) {
                Ordering::Equal => {
                    matches!(a, Bound::Excluded(_)) && matches!(b, Bound::Included(_))
                }
                o => o == towards,
            }
        }
    }
}

/// Where the records come from, in which order.
#[derive(Debug, Clone)]
enum Source {
    /// The records table by id.
    Primary {
        reverse: bool,
        lo: Bound<u128>,
        hi: Bound<u128>,
    },
    /// Ranges of one index, in key order (reversed when `reverse`).
    Index {
        code: u8,
        ranges: Vec<KeyRange>,
        reverse: bool,
    },
}

/// A plan with what is needed to run it.
#[derive(Debug, Clone)]
struct Chosen {
    plan: Plan,
    /// Where to read the page (narrowed by `searchAfter` when streamed).
    source: Source,
    /// Where every match is, for counting.
    full: Source,
}

/// An index a conjunct (or several range conjuncts on one field) can be answered from.
struct Candidate {
    field: &'static IndexedField,
    ranges: Vec<KeyRange>,
    /// Whether each range is one value (`eq`, `in`) rather than an interval.
    points: bool,
    /// How many conjuncts it answers.
    answers: usize,
}

/// The conjuncts of the top-level `and` of `filter`.
fn conjuncts(filter: Option<&Expr>) -> Vec<&Expr> {
    match filter {
        None => Vec::new(),
        Some(Expr::And(operands)) => operands.iter().collect(),
        Some(other) => vec![other],
    }
}

fn candidates(collection: &Collection, filter: Option<&Expr>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let mut ranges: Vec<Candidate> = Vec::new();
    for conjunct in conjuncts(filter) {
        match conjunct {
            Expr::Cmp {
                field,
                op: CmpOp::Eq,
                value,
            } => {
                if let Some(f) = index::find(collection.indexed, field) {
                    let ranges = index::literal_key(f.kind, value)
                        .map(KeyRange::point)
                        .into_iter()
                        .collect();
                    out.push(Candidate {
                        field: f,
                        ranges,
                        points: true,
                        answers: 1,
                    });
                }
            }
            Expr::In { field, values } => {
                if let Some(f) = index::find(collection.indexed, field) {
                    let mut keys: Vec<Vec<u8>> = values
                        .iter()
                        .filter_map(|v| index::literal_key(f.kind, v))
                        .collect();
                    keys.sort_unstable();
                    keys.dedup();
                    out.push(Candidate {
                        field: f,
                        ranges: keys.into_iter().map(KeyRange::point).collect(),
                        points: true,
                        answers: 1,
                    });
                }
            }
            Expr::Cmp {
                field,
                op: op @ (CmpOp::Gt | CmpOp::Ge | CmpOp::Lt | CmpOp::Le),
                value: value @ Value::Timestamp(_),
            } => {
                let Some(f) = index::find(collection.indexed, field) else {
                    continue;
                };
                let Some(key) = index::literal_key(f.kind, value) else {
                    continue;
                };
                let position = match ranges.iter().position(|c| c.field.code == f.code) {
                    Some(p) => p,
                    None => {
                        ranges.push(Candidate {
                            field: f,
                            ranges: vec![KeyRange::all()],
                            points: false,
                            answers: 0,
                        });
                        ranges.len() - 1
                    }
                };
                let candidate = &mut ranges[position];
                candidate.answers += 1;
                let range = &mut candidate.ranges[0];
                match op {
                    CmpOp::Gt => range.raise(Bound::Excluded((key, u128::MAX))),
                    CmpOp::Ge => range.raise(Bound::Included((key, 0))),
                    CmpOp::Lt => range.lower(Bound::Excluded((key, 0))),
                    _ => range.lower(Bound::Included((key, u128::MAX))),
                }
            }
            _ => {}
        }
    }
    for mut candidate in ranges {
        candidate.ranges.retain(|r| !r.is_empty());
        out.push(candidate);
    }
    out
}

/// The direction to stream `candidate` in for `keys`, if its key order is that order.
fn stream_direction(candidate: &Candidate, keys: &[Sort]) -> Option<bool> {
    if candidate.ranges.len() != 1 {
        return None;
    }
    match keys {
        [id] if candidate.points => Some(id.descending),
        [first, id]
            if first.field == candidate.field.field && first.descending == id.descending =>
        {
            Some(first.descending)
        }
        _ => None,
    }
}

/// Narrows an index range to the records after `search_after` in the order `keys`, streamed
/// over `field`'s index (`keys` is `[id]` within one point, or `[field, id]`). `None` when
/// nothing can follow.
fn narrow_index(
    mut range: KeyRange,
    keys: &[Sort],
    field: &IndexedField,
    search_after: Option<&[SortValue]>,
) -> Option<KeyRange> {
    let Some(values) = search_after else {
        return Some(range);
    };
    let reverse = keys[0].descending;
    let bound = match (keys, values) {
        // `[id]` within one value: the point's value key with the id.
        ([_], [SortValue::Uuid(after)]) => {
            let Bound::Included((point, _)) = &range.lo else {
                return Some(range);
            };
            (point.clone(), *after)
        }
        ([first, _], [value, rest @ ..]) if first.field == field.field => {
            let Some(key) = index::value_key(value.as_field()) else {
                // After null: every value follows ascending; nothing follows descending.
                return (!reverse).then_some(range);
            };
            match rest {
                [SortValue::Uuid(after)] => (key, *after),
                _ if reverse => (key, 0),
                _ => (key, u128::MAX),
            }
        }
        _ => return Some(range),
    };
    if reverse {
        range.lower(Bound::Excluded(bound));
    } else {
        range.raise(Bound::Excluded(bound));
    }
    (!range.is_empty()).then_some(range)
}

/// Chooses the plan for `filter` (the scope included) in the order `keys`.
fn plan(
    collection: &Collection,
    filter: Option<&Expr>,
    keys: &[Sort],
    search_after: Option<&[SortValue]>,
) -> Chosen {
    let all_conjuncts = conjuncts(filter).len();
    let mut candidates = candidates(collection, filter);
    // An impossible condition first (no ranges: nothing to read), then by selectivity.
    candidates.sort_by_key(|c| (!c.ranges.is_empty(), c.field.rank, c.ranges.len()));

    let index_plan = |c: &Candidate, stream: Option<bool>| {
        let covered = c.answers == all_conjuncts;
        let plan = |order| Plan {
            access: Access::Index {
                field: c.field.field,
                ranges: c.ranges.len(),
            },
            order,
            covered,
        };
        let full = Source::Index {
            code: c.field.code,
            ranges: c.ranges.clone(),
            reverse: stream.unwrap_or(false),
        };
        match stream {
            Some(reverse) => {
                let narrowed = c
                    .ranges
                    .first()
                    .cloned()
                    .and_then(|r| narrow_index(r, keys, c.field, search_after));
                Chosen {
                    plan: plan(Order::Streamed),
                    source: Source::Index {
                        code: c.field.code,
                        ranges: narrowed.into_iter().collect(),
                        reverse,
                    },
                    full,
                }
            }
            None => Chosen {
                plan: plan(Order::Sorted),
                source: full.clone(),
                full,
            },
        }
    };

    if let Some(best) = candidates.first()
        && (best.ranges.is_empty() || best.field.rank <= 2)
    {
        return index_plan(best, stream_direction(best, keys));
    }
    if let Some((c, reverse)) = candidates
        .iter()
        .find_map(|c| stream_direction(c, keys).map(|r| (c, r)))
    {
        return index_plan(c, Some(reverse));
    }
    if let Some(best) = candidates.first() {
        return index_plan(best, None);
    }
    let covered = filter.is_none();
    // No index serves the filter: read the whole tenant, in order if some source has it.
    match keys {
        [id] => {
            let reverse = id.descending;
            let (mut lo, mut hi) = (Bound::Unbounded, Bound::Unbounded);
            if let Some([SortValue::Uuid(after)]) = search_after {
                if reverse {
                    hi = Bound::Excluded(*after);
                } else {
                    lo = Bound::Excluded(*after);
                }
            }
            Chosen {
                plan: Plan {
                    access: Access::Scan,
                    order: Order::Streamed,
                    covered,
                },
                source: Source::Primary { reverse, lo, hi },
                full: Source::Primary {
                    reverse,
                    lo: Bound::Unbounded,
                    hi: Bound::Unbounded,
                },
            }
        }
        [first, id]
            if first.descending == id.descending
                && index::find(collection.indexed, first.field).is_some_and(|f| f.dense) =>
        {
            let Some(f) = index::find(collection.indexed, first.field) else {
                unreachable!("checked by the guard");
            };
            let reverse = first.descending;
            let narrowed = narrow_index(KeyRange::all(), keys, f, search_after);
            Chosen {
                plan: Plan {
                    access: Access::Scan,
                    order: Order::Streamed,
                    covered,
                },
                source: Source::Index {
                    code: f.code,
                    ranges: narrowed.into_iter().collect(),
                    reverse,
                },
                full: Source::Index {
                    code: f.code,
                    ranges: vec![KeyRange::all()],
                    reverse,
                },
            }
        }
        _ => {
            let full = Source::Primary {
                reverse: false,
                lo: Bound::Unbounded,
                hi: Bound::Unbounded,
            };
            Chosen {
                plan: Plan {
                    access: Access::Scan,
                    order: Order::Sorted,
                    covered,
                },
                source: full.clone(),
                full,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running.

/// The tables and decoder of one kind of record.
struct Tables<R> {
    primary: TableDefinition<'static, (&'static str, u128), &'static [u8]>,
    index: TableDefinition<'static, (&'static str, u8, &'static [u8], u128), ()>,
    index_name: &'static str,
    decode: fn(&str, u128, &[u8]) -> Result<R, codec::Error>,
}

const CONNECTION_TABLES: Tables<Connection> = Tables {
    primary: tables::CONNECTIONS,
    index: tables::CONNECTION_INDEX,
    index_name: "connection_index",
    decode: |tenant, id, bytes| {
        codec::decode_connection(tenant, ConnectionId::from_u128(id), bytes)
    },
};

const HISTORY_TABLES: Tables<ActivationRecord> = Tables {
    primary: tables::HISTORY,
    index: tables::HISTORY_INDEX,
    index_name: "history_index",
    decode: |tenant, id, bytes| codec::decode_history(tenant, ActivationId::from_u128(id), bytes),
};

/// Counts the records and keys a query decodes against its bound.
pub(crate) struct Budget {
    pub(crate) used: usize,
    pub(crate) max: usize,
}

impl Budget {
    pub(crate) fn take(&mut self) -> Result<(), Error> {
        self.used += 1;
        if self.used > self.max {
            return Err(Error::ScanBound { max: self.max });
        }
        Ok(())
    }
}

/// Whether `record` comes strictly after the position `values` in the order `keys` (compared
/// on as many keys as there are values).
fn is_after(record: &impl Fields, keys: &[Sort], values: Option<&[SortValue]>) -> bool {
    let Some(values) = values else {
        return true;
    };
    for (key, value) in keys.iter().zip(values) {
        let ordering = record.field(key.field).cmp(&value.as_field());
        let ordering = if key.descending {
            ordering.reverse()
        } else {
            ordering
        };
        if ordering != Ordering::Equal {
            return ordering == Ordering::Greater;
        }
    }
    false
}

type IndexKey<'a> = (&'a str, u8, &'a [u8], u128);

fn index_bound<'a>(
    tenant: &'a str,
    code: u8,
    bound: &'a Bound<(Vec<u8>, u128)>,
    low: bool,
) -> Bound<IndexKey<'a>> {
    match bound {
        Bound::Included((key, id)) => Bound::Included((tenant, code, key.as_slice(), *id)),
        Bound::Excluded((key, id)) => Bound::Excluded((tenant, code, key.as_slice(), *id)),
        // The ends of the field's part of the index: its first key, and the first key of the
        // next field code (codes stay below 255).
        Bound::Unbounded if low => Bound::Included((tenant, code, &[], 0)),
        Bound::Unbounded => Bound::Excluded((tenant, code.saturating_add(1), &[], 0)),
    }
}

/// Whether the id range `lo..hi` holds no id.
fn empty_ids(lo: &Bound<u128>, hi: &Bound<u128>) -> bool {
    match (lo, hi) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a >= b
        }
    }
}

/// The page of a plan sorted in memory: every match is pushed, the best `offset + limit` after
/// the `searchAfter` position are kept (memory stays within twice that, or 512 records), and
/// every match is counted.
pub(crate) struct SortedPage<'q, R> {
    query: &'q Query,
    keys: &'q [Sort],
    rows: Vec<R>,
    total: u64,
}

impl<'q, R: Fields> SortedPage<'q, R> {
    /// An empty page for `query` in the full order `keys` ([`Query::order`]).
    pub(crate) fn new(query: &'q Query, keys: &'q [Sort]) -> SortedPage<'q, R> {
        SortedPage {
            query,
            keys,
            rows: Vec::new(),
            total: 0,
        }
    }

    fn keep(&self) -> usize {
        self.query.offset + self.query.limit
    }

    /// Counts a record that matches the filter and keeps it if it can be on the page.
    pub(crate) fn push(&mut self, record: R) {
        self.total += 1;
        if is_after(&record, self.keys, self.query.search_after.as_deref()) {
            self.rows.push(record);
            if self.rows.len() >= 2 * self.keep().max(256) {
                self.trim();
            }
        }
    }

    fn trim(&mut self) {
        let keys = self.keys;
        self.rows.sort_by(|a, b| filter::compare_sort(a, b, keys));
        self.rows.truncate(self.keep());
    }

    /// The page: `limit` records after `offset`, and the count if the query asked for it.
    pub(crate) fn finish(mut self) -> Page<R> {
        self.trim();
        let items = self.rows.split_off(self.query.offset.min(self.rows.len()));
        Page {
            items,
            total: self.query.count.then_some(self.total),
        }
    }
}

impl Reader {
    /// Calls `visit` with each record of `source` in order, until it says stop.
    fn visit<R>(
        &self,
        tables: &Tables<R>,
        tenant: &str,
        source: &Source,
        budget: &mut Budget,
        mut visit: impl FnMut(R) -> bool,
    ) -> Result<(), Error> {
        let primary = self.open(tables.primary)?;
        match source {
            Source::Primary { reverse, lo, hi } => {
                if empty_ids(lo, hi) {
                    return Ok(());
                }
                let lo = match lo {
                    Bound::Included(id) => Bound::Included((tenant, *id)),
                    Bound::Excluded(id) => Bound::Excluded((tenant, *id)),
                    Bound::Unbounded => Bound::Included((tenant, 0)),
                };
                let hi = match hi {
                    Bound::Included(id) => Bound::Included((tenant, *id)),
                    Bound::Excluded(id) => Bound::Excluded((tenant, *id)),
                    Bound::Unbounded => Bound::Included((tenant, u128::MAX)),
                };
                let range = primary.range::<(&str, u128)>((lo, hi))?;
                let iter: Box<dyn Iterator<Item = _>> = if *reverse {
                    Box::new(range.rev())
                } else {
                    Box::new(range)
                };
                for entry in iter {
                    budget.take()?;
                    let (k, v) = entry?;
                    if !visit((tables.decode)(tenant, k.value().1, v.value())?) {
                        break;
                    }
                }
            }
            Source::Index {
                code,
                ranges,
                reverse,
            } => {
                let index = self.open(tables.index)?;
                let ordered: Box<dyn Iterator<Item = &KeyRange>> = if *reverse {
                    Box::new(ranges.iter().rev())
                } else {
                    Box::new(ranges.iter())
                };
                for range in ordered {
                    if range.is_empty() {
                        continue;
                    }
                    let lo = index_bound(tenant, *code, &range.lo, true);
                    let hi = index_bound(tenant, *code, &range.hi, false);
                    let entries = index.range::<IndexKey<'_>>((lo, hi))?;
                    let iter: Box<dyn Iterator<Item = _>> = if *reverse {
                        Box::new(entries.rev())
                    } else {
                        Box::new(entries)
                    };
                    for entry in iter {
                        budget.take()?;
                        let (k, _) = entry?;
                        let id = k.value().3;
                        let Some(bytes) = primary.get((tenant, id))? else {
                            return Err(codec::Error::new(
                                RecordName::Key {
                                    table: tables.index_name,
                                    key: format!(
                                        "({tenant:?}, {code}, {:?}, {})",
                                        k.value().2,
                                        ConnectionId::from_u128(id)
                                    ),
                                },
                                Problem::Invalid("indexes a record that is not stored".to_owned()),
                            )
                            .into());
                        };
                        if !visit((tables.decode)(tenant, id, bytes.value())?) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The number of keys of `source` (a covered count: every key is a match).
    fn count_keys<R>(
        &self,
        tables: &Tables<R>,
        tenant: &str,
        source: &Source,
        budget: &mut Budget,
    ) -> Result<u64, Error> {
        let mut n = 0u64;
        match source {
            Source::Primary { .. } => {
                let primary = self.open(tables.primary)?;
                for entry in primary.range((tenant, 0)..=(tenant, u128::MAX))? {
                    entry?;
                    budget.take()?;
                    n += 1;
                }
            }
            Source::Index { code, ranges, .. } => {
                let index = self.open(tables.index)?;
                for range in ranges.iter().filter(|r| !r.is_empty()) {
                    let lo = index_bound(tenant, *code, &range.lo, true);
                    let hi = index_bound(tenant, *code, &range.hi, false);
                    for entry in index.range::<IndexKey<'_>>((lo, hi))? {
                        entry?;
                        budget.take()?;
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }

    /// Runs `query` on `collection`'s records of `tenant`, constrained to `identity` when given.
    fn run<R: Fields>(
        &self,
        tables: &Tables<R>,
        collection: &Collection,
        tenant: &TenantId,
        query: &Query,
        identity: Option<&IdentityId>,
    ) -> Result<Page<R>, Error> {
        query.validate(collection)?;
        let keys = query.order(collection);
        let filter = scoped(query.filter.as_ref(), collection.identity_field, identity);
        let search_after = query.search_after.as_deref();
        let chosen = plan(collection, filter.as_ref(), &keys, search_after);
        let span = tracing::debug_span!(
            "query",
            collection = collection.name,
            plan = %chosen.plan,
            examined = tracing::field::Empty,
        );
        let _entered = span.enter();
        if chosen.plan.access == Access::Scan && filter.is_some() {
            tracing::debug!(
                max_examined = query.max_examined,
                "no index serves the filter: bounded scan of the tenant"
            );
        }
        let t = tenant.as_str();
        let mut budget = Budget {
            used: 0,
            max: query.max_examined,
        };
        let matches = |r: &R| filter.as_ref().is_none_or(|f| f.matches(r));
        let page = match chosen.plan.order {
            Order::Streamed => {
                // Counting without the keys alone means reading every match: read the whole
                // source once, counting all and keeping the page.
                let counting = query.count && !chosen.plan.covered;
                let source = if counting {
                    &chosen.full
                } else {
                    &chosen.source
                };
                let (mut items, mut skipped, mut total) = (Vec::new(), 0, 0u64);
                self.visit(tables, t, source, &mut budget, |r| {
                    if !matches(&r) {
                        return true;
                    }
                    total += 1;
                    if !is_after(&r, &keys, search_after) {
                        return true;
                    }
                    if skipped < query.offset {
                        skipped += 1;
                    } else if items.len() < query.limit {
                        items.push(r);
                    } else {
                        return counting;
                    }
                    counting || items.len() < query.limit
                })?;
                let total = match (query.count, counting) {
                    (false, _) => None,
                    (true, true) => Some(total),
                    (true, false) => Some(self.count_keys(tables, t, &chosen.full, &mut budget)?),
                };
                Page { items, total }
            }
            Order::Sorted => {
                let mut page = SortedPage::new(query, &keys);
                self.visit(tables, t, &chosen.source, &mut budget, |r| {
                    if matches(&r) {
                        page.push(r);
                    }
                    true
                })?;
                page.finish()
            }
        };
        span.record("examined", budget.used);
        Ok(page)
    }

    /// Lists the connections of `tenant` that `query` selects; with `identity`, only that
    /// identity's (the current-identity variant: the constraint is added to the filter,
    /// whatever it says).
    ///
    /// # Errors
    ///
    /// A [`Query::validate`] error, [`Error::ScanBound`], or [`Error::Read`].
    pub fn query_connections(
        &self,
        tenant: &TenantId,
        query: &Query,
        identity: Option<&IdentityId>,
    ) -> Result<Page<Connection>, Error> {
        self.run(&CONNECTION_TABLES, CONNECTIONS, tenant, query, identity)
    }

    /// Lists the activation history records of `tenant` that `query` selects; with `identity`,
    /// only that identity's, with the filter fields of [`HISTORY_OF_IDENTITY`].
    ///
    /// # Errors
    ///
    /// A [`Query::validate`] error, [`Error::ScanBound`], or [`Error::Read`].
    pub fn query_history(
        &self,
        tenant: &TenantId,
        query: &Query,
        identity: Option<&IdentityId>,
    ) -> Result<Page<ActivationRecord>, Error> {
        let collection = if identity.is_some() {
            HISTORY_OF_IDENTITY
        } else {
            HISTORY
        };
        self.run(&HISTORY_TABLES, collection, tenant, query, identity)
    }
}

/// The plan [`Reader::query_connections`] runs for `query` (for tests and diagnostics).
///
/// # Errors
///
/// A [`Query::validate`] error.
pub fn plan_connections(query: &Query, identity: Option<&IdentityId>) -> Result<Plan, Error> {
    explain(CONNECTIONS, query, identity)
}

/// The plan [`Reader::query_history`] runs for `query`.
///
/// # Errors
///
/// A [`Query::validate`] error.
pub fn plan_history(query: &Query, identity: Option<&IdentityId>) -> Result<Plan, Error> {
    let collection = if identity.is_some() {
        HISTORY_OF_IDENTITY
    } else {
        HISTORY
    };
    explain(collection, query, identity)
}

fn explain(
    collection: &Collection,
    query: &Query,
    identity: Option<&IdentityId>,
) -> Result<Plan, Error> {
    query.validate(collection)?;
    let filter = scoped(query.filter.as_ref(), collection.identity_field, identity);
    let keys = query.order(collection);
    Ok(plan(
        collection,
        filter.as_ref(),
        &keys,
        query.search_after.as_deref(),
    )
    .plan)
}

/// `filter`, constrained to `identity` (as the first conjunct of a flat `and`) when given.
fn scoped(
    filter: Option<&Expr>,
    field: &'static str,
    identity: Option<&IdentityId>,
) -> Option<Expr> {
    let Some(identity) = identity else {
        return filter.cloned();
    };
    let scope = Expr::Cmp {
        field,
        op: CmpOp::Eq,
        value: Value::Text(identity.as_str().to_owned()),
    };
    Some(match filter {
        None => scope,
        Some(Expr::And(operands)) => {
            let mut all = Vec::with_capacity(operands.len() + 1);
            all.push(scope);
            all.extend(operands.iter().cloned());
            Expr::And(all)
        }
        Some(other) => Expr::And(vec![scope, other.clone()]),
    })
}
