//! The filter and sorter grammar of the contract's collection parameters.
//!
//! List endpoints take SailPoint's "standard collection parameters":
//! `filters=type eq "JIT" and (state.value in ("ACTIVE","EXPIRED") or not standalone eq true)`
//! and `sorters=-type,id`. This module turns that text into a typed, validated [`Expr`] (with
//! [`parse_filter`]) or a list of [`Sort`]s (with [`parse_sorters`]), matches an expression
//! against a record ([`Expr::matches`]) and orders records ([`compare_sort`]).
//!
//! # Filter grammar
//!
//! ```text
//! filter     = or
//! or         = and { "or" and }
//! and        = unary { "and" unary }
//! unary      = { "not" } primary                 -- `not` binds tightest
//! primary    = "(" or ")" | comparison
//! comparison = field "isnull"
//!            | field "in" "(" value { "," value } ")"
//!            | field op value                     -- op: eq ne co sw gt lt ge le
//! field      = [A-Za-z][A-Za-z0-9_]* { "." [A-Za-z][A-Za-z0-9_]* }
//! value      = string | "true" | "false" | "null" | number | date-time
//! string     = '"' { any character but '"' and '\', or the escapes \" and \\ } '"'
//! number     = [ "-" ] digit { digit }
//! date-time  = an unquoted RFC 3339 token such as 2026-04-01T10:00:00Z
//! ```
//!
//! Keywords and operators are lowercase and case-sensitive. Whitespace between tokens is spaces
//! and tabs; inside a string every character is kept as written.
//!
//! Every comparison is checked against a field table (a slice of [`FieldSpec`]s, for example
//! [`ENTITLEMENT_CONNECTION_FIELDS`]): the field must be listed, the operator must be one it
//! allows, and the literal is converted to the field's [`ValueType`]:
//!
//! - `Text` takes a quoted string;
//! - `Bool` takes `true` or `false`;
//! - `Timestamp` takes an RFC 3339 date-time, quoted or not, and stores the UTC instant;
//! - `Enum` takes a quoted string that names one of the listed values, compared ASCII
//!   case-insensitively and stored in the listed spelling, for `eq`, `ne` and `in`; for any
//!   other operator (`co` on `state.value`) the string is free text.
//!
//! There is no null literal: `null` is refused with [`Error::NullLiteral`]; a missing value is
//! matched with `field isnull` where the table allows it. Numbers are part of the grammar but no
//! field of either table is numeric, so a number is always refused with
//! [`Error::WrongValueType`].
//!
//! # Bounds
//!
//! A limit on everything, so hostile input costs a bounded amount of work and stack:
//! [`MAX_INPUT_LEN`] bytes of input (filters and sorters), [`MAX_DEPTH`] levels of nesting
//! (each open parenthesis and each `not` counts one level), [`MAX_IN_VALUES`] values in one
//! `in` list, [`MAX_TERMS`] comparisons in one expression, and [`MAX_SORTERS`] sort keys. The
//! parser is recursive descent, but only [`MAX_DEPTH`] levels deep, and never panics: every
//! problem is an [`Error`] that carries the byte position it applies to and whose message can be
//! returned to an API client as it is.
//!
//! # Matching semantics
//!
//! One rule for text: **every comparison is exact and case-sensitive** (byte for byte). Only
//! the *parsing* of enum literals is case-insensitive, and it stores the canonical spelling, so
//! `type eq "jit"` matches a record whose `type` is `JIT`. `co` on an enum field is text
//! matching and therefore case-sensitive (`state.value co "ACT"`).
//!
//! - `eq` is true when the record's value equals the literal; `ne` is its negation, so `ne` is
//!   true when the record's value is null (or of another type).
//! - `co` (contains) and `sw` (starts with) apply to text only.
//! - `gt`, `lt`, `ge`, `le` compare timestamps by instant, text lexicographically by bytes and
//!   booleans with `false < true`.
//! - `in` is true when the record's value equals any listed value.
//! - `isnull` is true when the record's value is [`FieldValue::Null`].
//! - Every other comparison against a null (or a value of another type) is false.
//!
//! [`compare_sort`] orders by each [`Sort`] in turn with the total order of [`FieldValue`]
//! (null first when ascending, so last when descending).
//!
//! ```
//! use jitflow_core::filter::{
//!     ENTITLEMENT_CONNECTION_FIELDS, FieldValue, Fields, parse_filter,
//! };
//!
//! struct Connection {
//!     kind: &'static str,
//!     state: &'static str,
//!     standalone: bool,
//! }
//!
//! impl Fields for Connection {
//!     fn field(&self, name: &str) -> FieldValue<'_> {
//!         match name {
//!             "type" => FieldValue::Text(self.kind),
//!             "state.value" => FieldValue::Text(self.state),
//!             "standalone" => FieldValue::Bool(self.standalone),
//!             _ => FieldValue::Null,
//!         }
//!     }
//! }
//!
//! let filter = parse_filter(
//!     r#"type eq "jit" and (state.value in ("ACTIVE","EXPIRED") or not standalone eq true)"#,
//!     ENTITLEMENT_CONNECTION_FIELDS,
//! )?;
//! // Enum literals are stored in their canonical spelling; `Display` gives the canonical text.
//! assert_eq!(
//!     filter.to_string(),
//!     r#"type eq "JIT" and (state.value in ("ACTIVE", "EXPIRED") or not standalone eq true)"#,
//! );
//! let active = Connection { kind: "JIT", state: "ACTIVE", standalone: true };
//! let available = Connection { kind: "JIT", state: "AVAILABLE", standalone: true };
//! assert!(filter.matches(&active));
//! assert!(!filter.matches(&available));
//!
//! // Errors say where, in words a client can act on.
//! let err = parse_filter(r#"type eq "JIT" and colour eq "red""#, ENTITLEMENT_CONNECTION_FIELDS)
//!     .unwrap_err();
//! assert_eq!(err.to_string(), "Unknown field `colour` at position 18.");
//! # Ok::<(), jitflow_core::filter::Error>(())
//! ```

use std::cmp::Ordering;
use std::fmt;

use crate::time::Timestamp;

/// The longest filter or sorter input accepted, in bytes.
pub const MAX_INPUT_LEN: usize = 4096;
/// The deepest nesting accepted: open parentheses plus `not` prefixes in effect at any point.
pub const MAX_DEPTH: usize = 16;
/// The most values one `in` list may hold.
pub const MAX_IN_VALUES: usize = 100;
/// The most comparisons (`eq`, `in`, `isnull`, ...) one filter may hold.
pub const MAX_TERMS: usize = 64;
/// The most sort keys one `sorters` parameter may hold.
pub const MAX_SORTERS: usize = 8;

/// Longest field name or token echoed back in an error message, in characters.
const MAX_ECHO: usize = 64;

/// Why a filter or sorter parameter was refused.
///
/// Every variant that concerns one place in the input carries its byte `position` (0-based).
/// The `Display` text is a complete sentence meant to be returned to an API client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input stopped where more was needed, for example after `type eq` or before a `)`.
    #[error("The input ends too soon: expected {expected} at position {position}.")]
    UnexpectedEnd {
        /// The input length, where more was expected.
        position: usize,
        /// What would have been accepted there.
        expected: String,
    },
    /// A token that does not fit the grammar at that point, for example an unquoted word where
    /// a value belongs, an uppercase operator, or a stray `)`.
    #[error("Unexpected {found} at position {position}: expected {expected}.")]
    UnexpectedToken {
        /// Where the token starts.
        position: usize,
        /// The token, described for a reader (cut to 64 characters).
        found: String,
        /// What would have been accepted there.
        expected: String,
    },
    /// A string literal has no closing double quote.
    #[error("The string starting at position {position} has no closing double quote.")]
    UnterminatedString {
        /// Where the opening quote is.
        position: usize,
    },
    /// A backslash inside a string is followed by something other than `"` or `\`.
    #[error(
        "Invalid escape sequence at position {position}: only \\\" and \\\\ may follow a backslash."
    )]
    BadEscape {
        /// Where the backslash is.
        position: usize,
    },
    /// The field is not in the table of filterable fields.
    #[error("Unknown field `{field}` at position {position}.")]
    UnknownField {
        /// Where the field name starts.
        position: usize,
        /// The name as written (cut to 64 characters).
        field: String,
    },
    /// The field is known but does not support this operator.
    #[error(
        "Operator `{op}` is not allowed on field `{field}` at position {position}; allowed: {allowed}."
    )]
    OperatorNotAllowed {
        /// Where the operator is.
        position: usize,
        /// The field's name.
        field: String,
        /// The operator as written.
        op: String,
        /// The field's operators, comma separated.
        allowed: String,
    },
    /// The literal is of the wrong kind for the field, for example a string for a boolean or a
    /// number for a text field.
    #[error("Field `{field}` needs {expected}; the value at position {position} is not one.")]
    WrongValueType {
        /// Where the value starts.
        position: usize,
        /// The field's name.
        field: String,
        /// The kind of value the field takes.
        expected: String,
    },
    /// The literal `null` was used; filters have no null literal.
    #[error(
        "The literal `null` at position {position} cannot be compared with `{field}`; use the `isnull` operator where the field supports it."
    )]
    NullLiteral {
        /// Where `null` is.
        position: usize,
        /// The field's name.
        field: String,
    },
    /// A timestamp field's value is not an RFC 3339 date-time in the supported range.
    #[error(
        "Field `{field}` needs an RFC 3339 date-time such as 2026-04-01T10:00:00Z; the value at position {position} is not one: {reason}"
    )]
    BadTimestamp {
        /// Where the value starts.
        position: usize,
        /// The field's name.
        field: String,
        /// What the date-time parser objected to.
        reason: String,
    },
    /// An enum field's value (with `eq`, `ne` or `in`) is not one of the listed values.
    #[error(
        "`{value}` at position {position} is not a valid value for `{field}`; expected one of {allowed}."
    )]
    NotInEnum {
        /// Where the value starts.
        position: usize,
        /// The field's name.
        field: String,
        /// The value as written (cut to 64 characters).
        value: String,
        /// The listed values, comma separated.
        allowed: String,
    },
    /// The input is longer than [`MAX_INPUT_LEN`] bytes.
    #[error("The input is {len} bytes long; the limit is {max} bytes.")]
    TooLong {
        /// The input's length in bytes.
        len: usize,
        /// The limit, [`MAX_INPUT_LEN`].
        max: usize,
    },
    /// Parentheses and `not` prefixes nest deeper than [`MAX_DEPTH`] levels.
    #[error(
        "The nesting at position {position} is too deep; at most {max} levels of parentheses and `not` are allowed."
    )]
    TooDeep {
        /// Where the `(` or `not` that went one level too deep is.
        position: usize,
        /// The limit, [`MAX_DEPTH`].
        max: usize,
    },
    /// An `in` list holds more than [`MAX_IN_VALUES`] values.
    #[error("The `in` list has too many values at position {position}; the limit is {max}.")]
    TooManyValues {
        /// Where the first value over the limit starts.
        position: usize,
        /// The limit, [`MAX_IN_VALUES`].
        max: usize,
    },
    /// The filter holds more than [`MAX_TERMS`] comparisons.
    #[error("The filter has too many comparisons at position {position}; the limit is {max}.")]
    TooManyTerms {
        /// Where the first comparison over the limit starts.
        position: usize,
        /// The limit, [`MAX_TERMS`].
        max: usize,
    },
    /// The input is empty or only whitespace.
    #[error("The input is empty.")]
    Empty,
    /// A sort key names a field that cannot be sorted on.
    #[error("Cannot sort by unknown field `{field}` at position {position}.")]
    UnknownSortField {
        /// Where the field name starts (after any `-`).
        position: usize,
        /// The name as written (cut to 64 characters).
        field: String,
    },
    /// The same field appears in two sort keys (in either direction).
    #[error("The field `{field}` at position {position} is already a sort key.")]
    DuplicateSortField {
        /// Where the second occurrence's field name starts.
        position: usize,
        /// The field's name.
        field: String,
    },
    /// A sort key is empty: two commas in a row, a leading or trailing comma, or a lone `-`.
    #[error("Empty sort key at position {position}.")]
    EmptySortItem {
        /// Where the empty key is.
        position: usize,
    },
    /// There are more than [`MAX_SORTERS`] sort keys.
    #[error("Too many sort keys at position {position}; the limit is {max}.")]
    TooManySorters {
        /// Where the first key over the limit starts.
        position: usize,
        /// The limit, [`MAX_SORTERS`].
        max: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// Operators, value types and field tables.

/// An operator, as a field table allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `eq`: equal.
    Eq,
    /// `ne`: not equal.
    Ne,
    /// `co`: text contains.
    Co,
    /// `sw`: text starts with.
    Sw,
    /// `gt`: greater than.
    Gt,
    /// `lt`: less than.
    Lt,
    /// `ge`: greater than or equal.
    Ge,
    /// `le`: less than or equal.
    Le,
    /// `in`: equal to any value of a list.
    In,
    /// `isnull`: the value is missing.
    IsNull,
}

impl Op {
    /// Every operator, in the order the grammar lists them.
    pub const ALL: [Op; 10] = [
        Op::Eq,
        Op::Ne,
        Op::Co,
        Op::Sw,
        Op::Gt,
        Op::Lt,
        Op::Ge,
        Op::Le,
        Op::In,
        Op::IsNull,
    ];

    /// The keyword as written in a filter, e.g. `eq`.
    pub const fn keyword(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Co => "co",
            Op::Sw => "sw",
            Op::Gt => "gt",
            Op::Lt => "lt",
            Op::Ge => "ge",
            Op::Le => "le",
            Op::In => "in",
            Op::IsNull => "isnull",
        }
    }

    /// The operator a keyword names; keywords are case-sensitive lowercase.
    pub fn from_keyword(word: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.keyword() == word)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// A binary comparison operator: the operators of [`Expr::Cmp`] (all but `in` and `isnull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `eq`: equal.
    Eq,
    /// `ne`: not equal.
    Ne,
    /// `co`: text contains.
    Co,
    /// `sw`: text starts with.
    Sw,
    /// `gt`: greater than.
    Gt,
    /// `lt`: less than.
    Lt,
    /// `ge`: greater than or equal.
    Ge,
    /// `le`: less than or equal.
    Le,
}

impl CmpOp {
    /// Every comparison operator.
    pub const ALL: [CmpOp; 8] = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Co,
        CmpOp::Sw,
        CmpOp::Gt,
        CmpOp::Lt,
        CmpOp::Ge,
        CmpOp::Le,
    ];

    /// The table-level operator this is.
    pub const fn op(self) -> Op {
        match self {
            CmpOp::Eq => Op::Eq,
            CmpOp::Ne => Op::Ne,
            CmpOp::Co => Op::Co,
            CmpOp::Sw => Op::Sw,
            CmpOp::Gt => Op::Gt,
            CmpOp::Lt => Op::Lt,
            CmpOp::Ge => Op::Ge,
            CmpOp::Le => Op::Le,
        }
    }

    /// The comparison operator for `op`, or `None` for `in` and `isnull`.
    pub const fn from_op(op: Op) -> Option<CmpOp> {
        match op {
            Op::Eq => Some(CmpOp::Eq),
            Op::Ne => Some(CmpOp::Ne),
            Op::Co => Some(CmpOp::Co),
            Op::Sw => Some(CmpOp::Sw),
            Op::Gt => Some(CmpOp::Gt),
            Op::Lt => Some(CmpOp::Lt),
            Op::Ge => Some(CmpOp::Ge),
            Op::Le => Some(CmpOp::Le),
            Op::In | Op::IsNull => None,
        }
    }

    /// The keyword as written in a filter, e.g. `eq`.
    pub const fn keyword(self) -> &'static str {
        self.op().keyword()
    }
}

impl From<CmpOp> for Op {
    fn from(op: CmpOp) -> Op {
        op.op()
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword())
    }
}

/// The type of a filterable field, which decides what literals it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// Free text: a quoted string.
    Text,
    /// `true` or `false`.
    Bool,
    /// An RFC 3339 date-time, quoted or not.
    Timestamp,
    /// One of the listed values (canonical spelling), given as a quoted string and matched
    /// ASCII case-insensitively for `eq`, `ne` and `in`; free text for other operators.
    Enum(&'static [&'static str]),
}

/// One filterable field: its name, the operators it allows and its value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldSpec {
    /// The dotted name, as written in filters and passed to [`Fields::field`].
    pub name: &'static str,
    /// The operators the field allows.
    pub ops: &'static [Op],
    /// What its values are.
    pub ty: ValueType,
}

impl FieldSpec {
    /// Whether the field allows `op`.
    pub fn allows(&self, op: Op) -> bool {
        self.ops.contains(&op)
    }

    /// The allowed operators, comma separated, for messages.
    pub fn allowed_ops(&self) -> String {
        self.ops
            .iter()
            .map(|op| op.keyword())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The spec named `name` in `table` (exact, case-sensitive), if any.
pub fn find_field(table: &'static [FieldSpec], name: &str) -> Option<&'static FieldSpec> {
    table.iter().find(|spec| spec.name == name)
}

const EQ_IN: &[Op] = &[Op::Eq, Op::In];
const EQ_IN_CO: &[Op] = &[Op::Eq, Op::In, Op::Co];
const EQ: &[Op] = &[Op::Eq];
const RANGE: &[Op] = &[Op::Gt, Op::Lt, Op::Ge, Op::Le];

/// The values of an entitlement connection's `type`.
pub const CONNECTION_TYPES: &[&str] = &["JIT", "STANDING", "NA"];
/// The values of an entitlement connection's `state.value`.
pub const CONNECTION_STATES: &[&str] = &[
    "AVAILABLE",
    "ACTIVATING",
    "ACTIVE",
    "DEACTIVATING",
    "EXPIRED",
];
/// The values of an activation history entry's `status`.
pub const ACTIVATION_STATUSES: &[&str] = &[
    "ACTIVATING",
    "AWAITING_FRICTIONS",
    "PROVISIONING",
    "PROVISIONED",
    "DEPROVISIONING",
    "COMPLETE",
    "CANCELLED",
    "ERROR",
    "TIMED_OUT",
    "REVOKED",
];

const fn spec(name: &'static str, ops: &'static [Op], ty: ValueType) -> FieldSpec {
    FieldSpec { name, ops, ty }
}

/// The filterable fields of the entitlement connections list.
pub const ENTITLEMENT_CONNECTION_FIELDS: &[FieldSpec] = &[
    spec("identity.id", EQ_IN, ValueType::Text),
    spec("identity.name", EQ_IN_CO, ValueType::Text),
    spec("source.id", EQ_IN, ValueType::Text),
    spec("source.name", EQ_IN_CO, ValueType::Text),
    spec("account.id", EQ_IN, ValueType::Text),
    spec("account.name", EQ_IN_CO, ValueType::Text),
    spec("entitlement.id", EQ_IN, ValueType::Text),
    spec("entitlement.attribute", EQ_IN_CO, ValueType::Text),
    spec("entitlement.value", EQ_IN_CO, ValueType::Text),
    spec(
        "entitlement.privilegeLevel.effective",
        EQ_IN_CO,
        ValueType::Text,
    ),
    spec("type", EQ_IN, ValueType::Enum(CONNECTION_TYPES)),
    spec("state.value", EQ_IN_CO, ValueType::Enum(CONNECTION_STATES)),
    spec("standalone", EQ_IN, ValueType::Bool),
    spec("jit.activation", RANGE, ValueType::Timestamp),
    spec("jit.provision", RANGE, ValueType::Timestamp),
    spec("jit.deactivation", RANGE, ValueType::Timestamp),
    spec("jit.deprovision", RANGE, ValueType::Timestamp),
    spec("jit.expiration", RANGE, ValueType::Timestamp),
];

/// The sortable fields of the entitlement connections list.
pub const ENTITLEMENT_CONNECTION_SORTERS: &[&str] = &[
    "id",
    "identity.id",
    "identity.name",
    "source.id",
    "source.name",
    "account.id",
    "account.name",
    "entitlement.id",
    "entitlement.displayName",
    "entitlement.attribute",
    "entitlement.privilegeLevel.effective",
    "type",
    "state.value",
    "standalone",
    "jit.activation",
    "jit.provision",
    "jit.deactivation",
    "jit.deprovision",
    "jit.expiration",
];

/// The filterable fields of the activation history list.
pub const ACTIVATION_HISTORY_FIELDS: &[FieldSpec] = &[
    spec("identityId", EQ_IN, ValueType::Text),
    spec("entitlementId", EQ_IN, ValueType::Text),
    spec("sourceId", EQ, ValueType::Text),
    spec("connectionId", EQ, ValueType::Text),
    spec("status", EQ_IN, ValueType::Enum(ACTIVATION_STATUSES)),
    spec("activationInitiated", RANGE, ValueType::Timestamp),
    spec("policyFrictionOutcome", EQ_IN, ValueType::Text),
];

/// The filterable fields of the current identity's activation history list: the contract
/// lists every field of [`ACTIVATION_HISTORY_FIELDS`] but `identityId` (its first), which the
/// service fixes.
pub const ACTIVATION_HISTORY_SELF_FIELDS: &[FieldSpec] = match ACTIVATION_HISTORY_FIELDS {
    [_identity_id, rest @ ..] => rest,
    [] => &[],
};

/// The sortable fields of the activation history list; `id` is the tie-breaker of
/// `searchAfter` paging.
pub const ACTIVATION_HISTORY_SORTERS: &[&str] =
    &["activationInitiated", "provisionCompleted", "status", "id"];

/// The contract's request states (`RequestedItemStatusRequestState`), the values of a status
/// row's `status`.
pub const REQUEST_STATES: &[&str] = &[
    "EXECUTING",
    "REQUEST_COMPLETED",
    "CANCELLED",
    "TERMINATED",
    "PROVISIONING_VERIFICATION_PENDING",
    "REJECTED",
    "PROVISIONING_FAILED",
    "NOT_ALL_ITEMS_PROVISIONED",
    "ERROR",
];

const CMP_IN_NO_LT: &[Op] = &[Op::Eq, Op::In, Op::Ge, Op::Gt, Op::Le, Op::Ne];
const CMP: &[Op] = &[Op::Eq, Op::Ge, Op::Gt, Op::Le, Op::Lt, Op::Ne];
const CMP_IN: &[Op] = &[Op::Eq, Op::In, Op::Ge, Op::Gt, Op::Le, Op::Lt, Op::Ne];
const CMP_IN_NULL: &[Op] = &[
    Op::Eq,
    Op::In,
    Op::Ge,
    Op::Gt,
    Op::Le,
    Op::Lt,
    Op::Ne,
    Op::IsNull,
];
const RANGE_EQ_IN: &[Op] = &[Op::Gt, Op::Lt, Op::Ge, Op::Le, Op::Eq, Op::In];
const RANGE_EQ_IN_NE: &[Op] = &[Op::Gt, Op::Lt, Op::Ge, Op::Le, Op::Eq, Op::In, Op::Ne];
const EQ_IN_NE: &[Op] = &[Op::In, Op::Eq, Op::Ne];

/// The filterable fields of the request status list (`access-request-status`). The ids are
/// UUIDs, compared as UUIDs: the contract's `sw` on them is not offered.
pub const ACCESS_REQUEST_STATUS_FIELDS: &[FieldSpec] = &[
    spec("accessRequestId", CMP, ValueType::Text),
    spec("accountActivityItemId", CMP_IN_NO_LT, ValueType::Text),
    spec("created", CMP, ValueType::Timestamp),
];

/// The filterable fields of the administrators' request list (`access-request-administration`).
/// As for the status list, `sw` on the UUID ids is not offered, nor on `created`.
pub const ACCESS_REQUEST_ADMIN_FIELDS: &[FieldSpec] = &[
    spec("accountActivityItemId", CMP_IN_NULL, ValueType::Text),
    spec("accessRequestId", CMP_IN, ValueType::Text),
    spec("status", EQ_IN_NE, ValueType::Enum(REQUEST_STATES)),
    spec("created", CMP_IN_NULL, ValueType::Timestamp),
];

/// The filterable fields of the pending approvals list (`id` is the approval id).
pub const PENDING_APPROVAL_FIELDS: &[FieldSpec] = &[
    spec("id", EQ_IN, ValueType::Text),
    spec("requestedFor.id", EQ_IN, ValueType::Text),
    spec("modified", RANGE_EQ_IN, ValueType::Timestamp),
    spec("accessRequestId", EQ_IN, ValueType::Text),
    spec("created", RANGE_EQ_IN, ValueType::Timestamp),
];

/// The filterable fields of the completed approvals list (`id` is the approval id). `sw` is
/// not offered on the UUID id, nor on `modified`.
pub const COMPLETED_APPROVAL_FIELDS: &[FieldSpec] = &[
    spec("id", CMP_IN_NULL, ValueType::Text),
    spec(
        "requestedFor.id",
        &[
            Op::Eq,
            Op::In,
            Op::Ge,
            Op::Gt,
            Op::Le,
            Op::Lt,
            Op::Ne,
            Op::IsNull,
            Op::Sw,
        ],
        ValueType::Text,
    ),
    spec("modified", RANGE_EQ_IN_NE, ValueType::Timestamp),
];

// ---------------------------------------------------------------------------------------------
// The AST.

/// A literal converted to its field's type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// Text, or an enum value in its canonical spelling.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// A UTC instant.
    Timestamp(Timestamp),
}

/// A parsed, validated filter expression.
///
/// Field names are the `&'static str` of the table's [`FieldSpec`]. An expression from
/// [`parse_filter`] respects every bound of the module (so the recursive [`Expr::matches`] and
/// `Display` are stack-safe); `And` and `Or` from the parser always hold at least two operands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// True when every operand is.
    And(Vec<Expr>),
    /// True when any operand is.
    Or(Vec<Expr>),
    /// True when the operand is false.
    Not(Box<Expr>),
    /// `field op value`.
    Cmp {
        /// The field's name.
        field: &'static str,
        /// The operator.
        op: CmpOp,
        /// The literal, of the field's type.
        value: Value,
    },
    /// `field in (value, ...)`.
    In {
        /// The field's name.
        field: &'static str,
        /// The listed values (1 to [`MAX_IN_VALUES`]), of the field's type.
        values: Vec<Value>,
    },
    /// `field isnull`.
    IsNull {
        /// The field's name.
        field: &'static str,
    },
}

/// One sort key: a field and a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sort {
    /// The field's name, from the allowed list.
    pub field: &'static str,
    /// Whether the key was written with a `-` prefix.
    pub descending: bool,
}

impl fmt::Display for Sort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.descending {
            f.write_str("-")?;
        }
        f.write_str(self.field)
    }
}

// ---------------------------------------------------------------------------------------------
// Records.

/// One field's value in a record, as [`Expr::matches`] and [`compare_sort`] see it.
///
/// The derived order is the sort order: `Null` first, then text (by bytes), booleans
/// (`false < true`) and timestamps; values of different kinds order by that kind order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldValue<'a> {
    /// The record has no value for the field.
    Null,
    /// Text (ids, names, enum values in their canonical spelling).
    Text(&'a str),
    /// A boolean.
    Bool(bool),
    /// A UTC instant.
    Timestamp(Timestamp),
    /// A UUID id (connection, activation), as its 128 bits: their order is the order of the
    /// canonical lowercase hyphenated text. A text literal matches it when it parses as a UUID
    /// (with or without hyphens, in either case) with the same bits.
    Uuid(u128),
}

/// A record that filters can match and sorters can order: it gives the value of a field by its
/// dotted name (a name it does not know is [`FieldValue::Null`]).
pub trait Fields {
    /// The value of the field `name`.
    fn field(&self, name: &str) -> FieldValue<'_>;
}

/// `record`'s value compared with the literal, or `None` when they are not of the same kind
/// (a null included).
fn compare_value(record: FieldValue<'_>, literal: &Value) -> Option<Ordering> {
    match (record, literal) {
        (FieldValue::Text(a), Value::Text(b)) => Some(a.cmp(b.as_str())),
        (FieldValue::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (FieldValue::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
        (FieldValue::Uuid(a), Value::Text(b)) => {
            uuid::Uuid::try_parse(b).ok().map(|b| a.cmp(&b.as_u128()))
        }
        _ => None,
    }
}

impl Expr {
    /// Whether `record` satisfies the expression (see the module's matching semantics).
    pub fn matches(&self, record: &impl Fields) -> bool {
        match self {
            Expr::And(operands) => operands.iter().all(|e| e.matches(record)),
            Expr::Or(operands) => operands.iter().any(|e| e.matches(record)),
            Expr::Not(operand) => !operand.matches(record),
            Expr::Cmp { field, op, value } => {
                let actual = record.field(field);
                match op {
                    CmpOp::Eq => compare_value(actual, value) == Some(Ordering::Equal),
                    CmpOp::Ne => compare_value(actual, value) != Some(Ordering::Equal),
                    CmpOp::Gt => compare_value(actual, value) == Some(Ordering::Greater),
                    CmpOp::Lt => compare_value(actual, value) == Some(Ordering::Less),
                    CmpOp::Ge => matches!(
                        compare_value(actual, value),
                        Some(Ordering::Greater | Ordering::Equal)
                    ),
                    CmpOp::Le => matches!(
                        compare_value(actual, value),
                        Some(Ordering::Less | Ordering::Equal)
                    ),
                    CmpOp::Co => match (actual, value) {
                        (FieldValue::Text(a), Value::Text(b)) => a.contains(b.as_str()),
                        _ => false,
                    },
                    CmpOp::Sw => match (actual, value) {
                        (FieldValue::Text(a), Value::Text(b)) => a.starts_with(b.as_str()),
                        _ => false,
                    },
                }
            }
            Expr::In { field, values } => {
                let actual = record.field(field);
                values
                    .iter()
                    .any(|v| compare_value(actual, v) == Some(Ordering::Equal))
            }
            Expr::IsNull { field } => record.field(field) == FieldValue::Null,
        }
    }

    /// The number of comparisons (`Cmp`, `In` and `IsNull` nodes) in the expression.
    pub fn term_count(&self) -> usize {
        match self {
            Expr::And(operands) | Expr::Or(operands) => operands.iter().map(Expr::term_count).sum(),
            Expr::Not(operand) => operand.term_count(),
            Expr::Cmp { .. } | Expr::In { .. } | Expr::IsNull { .. } => 1,
        }
    }
}

/// Orders two records by `sorts`, the first key first; `Equal` when every key ties.
///
/// Each key compares the records' [`FieldValue`]s with their derived order (null first), and a
/// descending key reverses that, so nulls come last.
pub fn compare_sort(a: &impl Fields, b: &impl Fields, sorts: &[Sort]) -> Ordering {
    for sort in sorts {
        let ordering = a.field(sort.field).cmp(&b.field(sort.field));
        let ordering = if sort.descending {
            ordering.reverse()
        } else {
            ordering
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

// ---------------------------------------------------------------------------------------------
// Display: the canonical syntax, which parses back to an equal expression.

/// Writes `text` as a double-quoted string literal with `"` and `\` escaped.
fn write_quoted(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in text.chars() {
        if c == '"' || c == '\\' {
            f.write_str("\\")?;
        }
        fmt::Write::write_char(f, c)?;
    }
    f.write_str("\"")
}

impl fmt::Display for Value {
    /// A quoted string, `true`/`false`, or an unquoted RFC 3339 instant in UTC with
    /// milliseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(text) => write_quoted(f, text),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Timestamp(t) => f.write_str(&t.to_rfc3339()),
        }
    }
}

impl Expr {
    /// Writes `self` as an operand of a parent operator, in parentheses when `wrap` says the
    /// parent's precedence or shape would otherwise read it differently.
    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>, wrap: bool) -> fmt::Result {
        if wrap {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

impl fmt::Display for Expr {
    /// The canonical syntax: single spaces, `in` lists as `("a", "b")`, parentheses only where
    /// needed to keep the tree's shape (an `and` or `or` inside an operator of the same kind, an
    /// `or` inside an `and`, anything compound after `not`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::And(operands) => {
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    operand.fmt_operand(f, matches!(operand, Expr::And(_) | Expr::Or(_)))?;
                }
                Ok(())
            }
            Expr::Or(operands) => {
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    operand.fmt_operand(f, matches!(operand, Expr::Or(_)))?;
                }
                Ok(())
            }
            Expr::Not(operand) => {
                f.write_str("not ")?;
                operand.fmt_operand(f, matches!(**operand, Expr::And(_) | Expr::Or(_)))
            }
            Expr::Cmp { field, op, value } => write!(f, "{field} {op} {value}"),
            Expr::In { field, values } => {
                write!(f, "{field} in (")?;
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{value}")?;
                }
                f.write_str(")")
            }
            Expr::IsNull { field } => write!(f, "{field} isnull"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer.

/// One token and the byte position where it starts.
#[derive(Debug, Clone, PartialEq)]
struct Token<'a> {
    position: usize,
    kind: Tok<'a>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    LParen,
    RParen,
    Comma,
    /// A dotted identifier: a field name, an operator or a keyword.
    Word(&'a str),
    /// A string literal with its escapes resolved.
    Str(String),
    /// An unquoted token that starts with a digit (or `-` and a digit): a number or a
    /// date-time.
    Bare(&'a str),
    /// A character that starts no token.
    Unknown(char),
    /// A lexical error; the token stream stops here.
    Error(Error),
    End,
}

/// Cuts `text` to [`MAX_ECHO`] characters for an error message.
fn echo(text: &str) -> String {
    let mut cut: String = text.chars().take(MAX_ECHO).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

impl Tok<'_> {
    /// The token described for an error message.
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "`(`".to_owned(),
            Tok::RParen => "`)`".to_owned(),
            Tok::Comma => "`,`".to_owned(),
            Tok::Word(word) => format!("`{}`", echo(word)),
            Tok::Str(text) => format!("string \"{}\"", echo(text).escape_debug()),
            Tok::Bare(text) => format!("`{}`", echo(text)),
            Tok::Unknown(c) => format!("character `{}`", c.escape_debug()),
            Tok::Error(_) | Tok::End => "end of input".to_owned(),
        }
    }
}

/// Splits the whole input into tokens, ending with `End` or, at the first lexical error, with
/// an `Error` token (which the parser reports only if it gets that far, so the leftmost problem
/// is the one reported). At most one token per input byte, plus the end.
fn tokenize(input: &str) -> Vec<Token<'_>> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    loop {
        while matches!(bytes.get(pos), Some(b' ' | b'\t')) {
            pos += 1;
        }
        let Some(c) = input.get(pos..).and_then(|rest| rest.chars().next()) else {
            tokens.push(Token {
                position: input.len(),
                kind: Tok::End,
            });
            return tokens;
        };
        let start = pos;
        let kind = match c {
            '(' => {
                pos += 1;
                Tok::LParen
            }
            ')' => {
                pos += 1;
                Tok::RParen
            }
            ',' => {
                pos += 1;
                Tok::Comma
            }
            '"' => match lex_string(input, start) {
                Ok((text, end)) => {
                    pos = end;
                    Tok::Str(text)
                }
                Err(error) => {
                    tokens.push(Token {
                        position: start,
                        kind: Tok::Error(error),
                    });
                    return tokens;
                }
            },
            c if c.is_ascii_alphabetic() => {
                pos = lex_word(bytes, start);
                Tok::Word(input.get(start..pos).unwrap_or_default())
            }
            c if c.is_ascii_digit()
                || (c == '-' && bytes.get(start + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                pos += 1;
                while bytes.get(pos).is_some_and(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b':' | b'.' | b'+')
                }) {
                    pos += 1;
                }
                Tok::Bare(input.get(start..pos).unwrap_or_default())
            }
            other => {
                pos += other.len_utf8();
                Tok::Unknown(other)
            }
        };
        tokens.push(Token {
            position: start,
            kind,
        });
    }
}

/// The end of the dotted identifier starting at `start` (an ASCII letter).
fn lex_word(bytes: &[u8], start: usize) -> usize {
    let mut pos = start + 1;
    loop {
        while bytes
            .get(pos)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            pos += 1;
        }
        // A dot continues the name only when a new segment (a letter) follows it.
        if bytes.get(pos) == Some(&b'.') && bytes.get(pos + 1).is_some_and(u8::is_ascii_alphabetic)
        {
            pos += 2;
        } else {
            return pos;
        }
    }
}

/// The string literal whose opening quote is at `start`: its text and the position after the
/// closing quote.
fn lex_string(input: &str, start: usize) -> Result<(String, usize), Error> {
    let mut text = String::new();
    let mut chars = input.get(start + 1..).unwrap_or_default().char_indices();
    while let Some((offset, c)) = chars.next() {
        match c {
            '"' => return Ok((text, start + 1 + offset + 1)),
            '\\' => match chars.next() {
                Some((_, escaped @ ('"' | '\\'))) => text.push(escaped),
                Some(_) => {
                    return Err(Error::BadEscape {
                        position: start + 1 + offset,
                    });
                }
                None => break,
            },
            other => text.push(other),
        }
    }
    Err(Error::UnterminatedString { position: start })
}

// ---------------------------------------------------------------------------------------------
// Parser.

/// A literal before it is converted to its field's type.
enum Literal<'a> {
    Str(String),
    Bool(bool),
    Null,
    Bare(&'a str),
}

const EXPECT_OPERAND: &str = "a field name, `not` or `(`";
const EXPECT_VALUE: &str = "a value (a quoted string, `true`, `false`, a number or a date-time)";

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    next: usize,
    fields: &'static [FieldSpec],
    terms: usize,
    end: usize,
}

impl<'a> Parser<'a> {
    /// The next token, or the lexical error that stands in its place.
    fn peek(&self) -> Result<&Token<'a>, Error> {
        match self.tokens.get(self.next) {
            Some(Token {
                kind: Tok::Error(error),
                ..
            }) => Err(error.clone()),
            Some(token) => Ok(token),
            // Unreachable: the stream always ends with `End` or `Error` and is never consumed
            // past them; answer as the end of input rather than panic.
            None => Err(Error::UnexpectedEnd {
                position: self.end,
                expected: "more input".to_owned(),
            }),
        }
    }

    fn advance(&mut self) {
        if self.next + 1 < self.tokens.len() {
            self.next += 1;
        }
    }

    /// The error for the token `token` where `expected` was wanted.
    fn unexpected(token: &Token<'_>, expected: &str) -> Error {
        match &token.kind {
            Tok::End => Error::UnexpectedEnd {
                position: token.position,
                expected: expected.to_owned(),
            },
            Tok::Error(error) => error.clone(),
            other => Error::UnexpectedToken {
                position: token.position,
                found: other.describe(),
                expected: expected.to_owned(),
            },
        }
    }

    /// Whether the next token is the keyword `word`.
    fn at_keyword(&self, word: &str) -> Result<bool, Error> {
        Ok(matches!(self.peek()?.kind, Tok::Word(w) if w == word))
    }

    /// `or = and { "or" and }`, at nesting `depth`.
    fn parse_or(&mut self, depth: usize) -> Result<Expr, Error> {
        let mut operands = vec![self.parse_and(depth)?];
        while self.at_keyword("or")? {
            self.advance();
            operands.push(self.parse_and(depth)?);
        }
        Ok(collapse(operands, Expr::Or))
    }

    /// `and = unary { "and" unary }`, at nesting `depth`.
    fn parse_and(&mut self, depth: usize) -> Result<Expr, Error> {
        let mut operands = vec![self.parse_unary(depth)?];
        while self.at_keyword("and")? {
            self.advance();
            operands.push(self.parse_unary(depth)?);
        }
        Ok(collapse(operands, Expr::And))
    }

    /// `unary = { "not" } primary`; each `not` is one level of nesting.
    fn parse_unary(&mut self, depth: usize) -> Result<Expr, Error> {
        let mut depth = depth;
        let mut nots = 0;
        while self.at_keyword("not")? {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(Error::TooDeep {
                    position: self.peek()?.position,
                    max: MAX_DEPTH,
                });
            }
            nots += 1;
            self.advance();
        }
        let mut expr = self.parse_primary(depth)?;
        for _ in 0..nots {
            expr = Expr::Not(Box::new(expr));
        }
        Ok(expr)
    }

    /// `primary = "(" or ")" | comparison`.
    fn parse_primary(&mut self, depth: usize) -> Result<Expr, Error> {
        let token = self.peek()?.clone();
        match token.kind {
            Tok::LParen => {
                if depth + 1 > MAX_DEPTH {
                    return Err(Error::TooDeep {
                        position: token.position,
                        max: MAX_DEPTH,
                    });
                }
                self.advance();
                let expr = self.parse_or(depth + 1)?;
                let close = self.peek()?;
                if close.kind != Tok::RParen {
                    return Err(Self::unexpected(close, "`and`, `or` or `)`"));
                }
                self.advance();
                Ok(expr)
            }
            Tok::Word(word) if !matches!(word, "and" | "or" | "not") => {
                self.parse_comparison(token.position, word)
            }
            _ => Err(Self::unexpected(&token, EXPECT_OPERAND)),
        }
    }

    /// A comparison whose field name `name` is the next token, at `position`.
    fn parse_comparison(&mut self, position: usize, name: &str) -> Result<Expr, Error> {
        let spec = find_field(self.fields, name).ok_or_else(|| Error::UnknownField {
            position,
            field: echo(name),
        })?;
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(Error::TooManyTerms {
                position,
                max: MAX_TERMS,
            });
        }
        self.advance();

        let op_token = self.peek()?.clone();
        let expected_op = || format!("an operator for `{}` ({})", spec.name, spec.allowed_ops());
        let op = match op_token.kind {
            Tok::Word(word) => {
                Op::from_keyword(word).ok_or_else(|| Self::unexpected(&op_token, &expected_op()))?
            }
            _ => return Err(Self::unexpected(&op_token, &expected_op())),
        };
        if !spec.allows(op) {
            return Err(Error::OperatorNotAllowed {
                position: op_token.position,
                field: spec.name.to_owned(),
                op: op.keyword().to_owned(),
                allowed: spec.allowed_ops(),
            });
        }
        self.advance();

        match CmpOp::from_op(op) {
            Some(cmp) => {
                let (at, literal) = self.parse_literal()?;
                let value = convert(spec, op, at, literal)?;
                Ok(Expr::Cmp {
                    field: spec.name,
                    op: cmp,
                    value,
                })
            }
            None if op == Op::IsNull => Ok(Expr::IsNull { field: spec.name }),
            None => self.parse_in_list(spec),
        }
    }

    /// `"(" value { "," value } ")"` after `in`.
    fn parse_in_list(&mut self, spec: &'static FieldSpec) -> Result<Expr, Error> {
        let open = self.peek()?;
        if open.kind != Tok::LParen {
            return Err(Self::unexpected(open, "`(` to start the `in` list"));
        }
        self.advance();
        let mut values = Vec::new();
        loop {
            let (at, literal) = self.parse_literal()?;
            if values.len() >= MAX_IN_VALUES {
                return Err(Error::TooManyValues {
                    position: at,
                    max: MAX_IN_VALUES,
                });
            }
            values.push(convert(spec, Op::In, at, literal)?);
            let separator = self.peek()?;
            match separator.kind {
                Tok::Comma => self.advance(),
                Tok::RParen => {
                    self.advance();
                    return Ok(Expr::In {
                        field: spec.name,
                        values,
                    });
                }
                _ => return Err(Self::unexpected(separator, "`,` or `)`")),
            }
        }
    }

    /// A literal value and its position.
    fn parse_literal(&mut self) -> Result<(usize, Literal<'a>), Error> {
        let token = self.peek()?.clone();
        let literal = match token.kind {
            Tok::Str(text) => Literal::Str(text),
            Tok::Word("true") => Literal::Bool(true),
            Tok::Word("false") => Literal::Bool(false),
            Tok::Word("null") => Literal::Null,
            Tok::Bare(text) => Literal::Bare(text),
            _ => return Err(Self::unexpected(&token, EXPECT_VALUE)),
        };
        self.advance();
        Ok((token.position, literal))
    }
}

/// One operand as itself, several as `make(operands)`.
fn collapse(mut operands: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    if operands.len() == 1
        && let Some(only) = operands.pop()
    {
        return only;
    }
    make(operands)
}

/// Converts the literal at `position` to the type of `spec` for operator `op`.
fn convert(
    spec: &FieldSpec,
    op: Op,
    position: usize,
    literal: Literal<'_>,
) -> Result<Value, Error> {
    let field = || spec.name.to_owned();
    let wrong = |expected: &str| Error::WrongValueType {
        position,
        field: field(),
        expected: expected.to_owned(),
    };
    if let Literal::Null = literal {
        return Err(Error::NullLiteral {
            position,
            field: field(),
        });
    }
    match spec.ty {
        ValueType::Text => match literal {
            Literal::Str(text) => Ok(Value::Text(text)),
            _ => Err(wrong("a quoted string")),
        },
        ValueType::Bool => match literal {
            Literal::Bool(b) => Ok(Value::Bool(b)),
            _ => Err(wrong("`true` or `false`")),
        },
        ValueType::Timestamp => {
            let text = match &literal {
                Literal::Str(text) => text.as_str(),
                Literal::Bare(text) if !is_number(text) => text,
                _ => return Err(wrong("an RFC 3339 date-time such as 2026-04-01T10:00:00Z")),
            };
            Timestamp::parse_rfc3339(text)
                .map(Value::Timestamp)
                .map_err(|error| Error::BadTimestamp {
                    position,
                    field: field(),
                    reason: error.to_string(),
                })
        }
        ValueType::Enum(allowed) => {
            let Literal::Str(text) = literal else {
                return Err(wrong("a quoted string"));
            };
            if !matches!(op, Op::Eq | Op::Ne | Op::In) {
                // `co`, `sw` and ordering operators match the text, not a whole value.
                return Ok(Value::Text(text));
            }
            allowed
                .iter()
                .find(|candidate| candidate.eq_ignore_ascii_case(&text))
                .map(|canonical| Value::Text((*canonical).to_owned()))
                .ok_or_else(|| Error::NotInEnum {
                    position,
                    field: field(),
                    value: echo(&text),
                    allowed: allowed.join(", "),
                })
        }
    }
}

/// Whether a bare token is an integer: `-?[0-9]+`.
fn is_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Checks the input length and emptiness shared by filters and sorters.
fn check_input(input: &str) -> Result<(), Error> {
    if input.len() > MAX_INPUT_LEN {
        return Err(Error::TooLong {
            len: input.len(),
            max: MAX_INPUT_LEN,
        });
    }
    if input.trim_matches([' ', '\t']).is_empty() {
        return Err(Error::Empty);
    }
    Ok(())
}

/// Parses a `filters` parameter and validates it against `fields`.
///
/// # Errors
///
/// Any [`Error`] but the sorter ones: a grammar error, a field, operator or value the table
/// refuses, or a bound exceeded. The error is the leftmost problem in the input.
pub fn parse_filter(input: &str, fields: &'static [FieldSpec]) -> Result<Expr, Error> {
    check_input(input)?;
    let mut parser = Parser {
        tokens: tokenize(input),
        next: 0,
        fields,
        terms: 0,
        end: input.len(),
    };
    let expr = parser.parse_or(0)?;
    let last = parser.peek()?;
    if last.kind != Tok::End {
        return Err(Parser::unexpected(
            last,
            "`and`, `or` or the end of the filter",
        ));
    }
    Ok(expr)
}

/// Parses a `sorters` parameter: comma-separated field names, each optionally prefixed with `-`
/// for descending order, each in `allowed` (exact, case-sensitive), none twice, at most
/// [`MAX_SORTERS`]. Spaces and tabs around a key are ignored.
///
/// # Errors
///
/// [`Error::TooLong`], [`Error::Empty`], [`Error::EmptySortItem`], [`Error::UnknownSortField`],
/// [`Error::DuplicateSortField`] or [`Error::TooManySorters`], for the leftmost problem.
pub fn parse_sorters(input: &str, allowed: &[&'static str]) -> Result<Vec<Sort>, Error> {
    check_input(input)?;
    let mut sorts: Vec<Sort> = Vec::new();
    let mut item_start = 0;
    for item in input.split(',') {
        let start = item_start;
        item_start += item.len() + 1;

        let key = item.trim_start_matches([' ', '\t']);
        let key_start = start + (item.len() - key.len());
        let key = key.trim_end_matches([' ', '\t']);
        let (descending, name, name_start) = match key.strip_prefix('-') {
            Some(name) => (true, name, key_start + 1),
            None => (false, key, key_start),
        };
        if name.is_empty() {
            return Err(Error::EmptySortItem {
                position: key_start,
            });
        }
        if sorts.len() >= MAX_SORTERS {
            return Err(Error::TooManySorters {
                position: key_start,
                max: MAX_SORTERS,
            });
        }
        let Some(field) = allowed.iter().copied().find(|field| *field == name) else {
            return Err(Error::UnknownSortField {
                position: name_start,
                field: echo(name),
            });
        };
        if sorts.iter().any(|sort| sort.field == field) {
            return Err(Error::DuplicateSortField {
                position: name_start,
                field: field.to_owned(),
            });
        }
        sorts.push(Sort { field, descending });
    }
    Ok(sorts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &str) -> Vec<Tok<'_>> {
        tokenize(input).into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn lexer_splits_words_strings_and_bare_tokens() {
        assert_eq!(
            kinds(r#"a.b eq "x\"y" (2026-04-01T10:00:00Z,-5)"#),
            vec![
                Tok::Word("a.b"),
                Tok::Word("eq"),
                Tok::Str("x\"y".to_owned()),
                Tok::LParen,
                Tok::Bare("2026-04-01T10:00:00Z"),
                Tok::Comma,
                Tok::Bare("-5"),
                Tok::RParen,
                Tok::End,
            ]
        );
        // A dot not followed by a letter ends the name.
        assert_eq!(
            kinds("a.1"),
            vec![Tok::Word("a"), Tok::Unknown('.'), Tok::Bare("1"), Tok::End]
        );
        // Positions are bytes, including multi-byte characters.
        let tokens = tokenize("é a");
        assert_eq!(tokens.get(1).map(|t| t.position), Some(3));
    }

    #[test]
    fn lexer_stops_at_the_first_error() {
        assert_eq!(
            kinds(r#"a "b\n" c"#),
            vec![Tok::Word("a"), Tok::Error(Error::BadEscape { position: 4 })]
        );
        assert_eq!(
            kinds(r#""abc\"#),
            vec![Tok::Error(Error::UnterminatedString { position: 0 })]
        );
    }

    #[test]
    fn numbers_are_recognised() {
        assert!(is_number("12"));
        assert!(is_number("-0"));
        assert!(!is_number("-"));
        assert!(!is_number("1e3"));
    }
}
