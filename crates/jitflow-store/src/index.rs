//! Secondary indexes of the connection projections and the activation history, and the history
//! records themselves: what they hold and how one write keeps them in step.
//!
//! An index entry is (tenant, field code, value key, record id) -> (). The value key preserves
//! the order of [`FieldValue`]: text is its UTF-8 bytes, a timestamp its UTC milliseconds and a
//! UUID its 128 bits, both big-endian. So a range of an index is the records of one field value
//! (or of a range of values) in (value, id) order, which is the order of a sort by that field
//! with `id` as the tie-breaker. A null value has no entry.
//!
//! *Persisted*: the field codes below are part of the file format. Never change or reuse one.

use crate::hot::WriteTable;
use jitflow_core::connection::Connection;
use jitflow_core::filter::{FieldValue, Fields, Value};
use jitflow_core::history::ActivationRecord;
use jitflow_core::id::TenantId;

use crate::append::{Error, WriteTables};
use crate::codec;

/// How a field's values become index keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// Text: its bytes.
    Text,
    /// A timestamp: its milliseconds, big-endian.
    Timestamp,
    /// A UUID: its bits, big-endian.
    Uuid,
}

/// One indexed field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexedField {
    /// The field's name, as [`Fields::field`] knows it.
    pub(crate) field: &'static str,
    /// Its code in index keys (persisted).
    pub(crate) code: u8,
    /// How its values become keys.
    pub(crate) kind: KeyKind,
    /// Whether every record has a value, so that the whole index of the field lists every
    /// record (and can be read in order instead of sorting).
    pub(crate) dense: bool,
    /// How selective a condition on the field usually is: lower is more selective. The planner
    /// prefers the lowest.
    pub(crate) rank: u8,
}

const fn field(
    field: &'static str,
    code: u8,
    kind: KeyKind,
    dense: bool,
    rank: u8,
) -> IndexedField {
    IndexedField {
        field,
        code,
        kind,
        dense,
        rank,
    }
}

/// The indexed fields of connections.
pub(crate) const CONNECTION_FIELDS: &[IndexedField] = &[
    field("state.value", 1, KeyKind::Text, true, 5),
    field("type", 2, KeyKind::Text, true, 6),
    field("identity.id", 3, KeyKind::Text, true, 0),
    field("entitlement.id", 4, KeyKind::Text, true, 1),
    field("source.id", 5, KeyKind::Text, true, 2),
    field("jit.activation", 10, KeyKind::Timestamp, false, 3),
    field("jit.provision", 11, KeyKind::Timestamp, false, 3),
    field("jit.deactivation", 12, KeyKind::Timestamp, false, 3),
    field("jit.deprovision", 13, KeyKind::Timestamp, false, 3),
    field("jit.expiration", 14, KeyKind::Timestamp, false, 3),
];

/// The indexed fields of activation history records.
pub(crate) const HISTORY_FIELDS: &[IndexedField] = &[
    field("identityId", 1, KeyKind::Text, true, 1),
    field("entitlementId", 2, KeyKind::Text, true, 1),
    field("sourceId", 3, KeyKind::Text, true, 2),
    field("connectionId", 4, KeyKind::Uuid, true, 0),
    field("status", 5, KeyKind::Text, true, 5),
    field("activationInitiated", 6, KeyKind::Timestamp, true, 3),
];

/// The indexed field named `name` in `fields`.
pub(crate) fn find(fields: &'static [IndexedField], name: &str) -> Option<&'static IndexedField> {
    fields.iter().find(|f| f.field == name)
}

/// The index key of a record's value; `None` for null (not indexed).
pub(crate) fn value_key(value: FieldValue<'_>) -> Option<Vec<u8>> {
    match value {
        FieldValue::Null => None,
        FieldValue::Text(text) => Some(text.as_bytes().to_vec()),
        FieldValue::Bool(b) => Some(vec![u8::from(b)]),
        FieldValue::Timestamp(t) => Some(t.as_millis().to_be_bytes().to_vec()),
        FieldValue::Uuid(bits) => Some(bits.to_be_bytes().to_vec()),
    }
}

/// The index key a filter literal matches on a field of `kind`; `None` when no record value can
/// equal it (a text that is not a UUID, for a UUID field).
pub(crate) fn literal_key(kind: KeyKind, literal: &Value) -> Option<Vec<u8>> {
    match (kind, literal) {
        (KeyKind::Uuid, Value::Text(text)) => uuid_bits(text).map(|b| b.to_be_bytes().to_vec()),
        (KeyKind::Text, Value::Text(text)) => Some(text.as_bytes().to_vec()),
        (KeyKind::Timestamp, Value::Timestamp(t)) => Some(t.as_millis().to_be_bytes().to_vec()),
        _ => None,
    }
}

/// The bits of a UUID written with or without hyphens, in either case.
fn uuid_bits(text: &str) -> Option<u128> {
    jitflow_core::id::ConnectionId::parse(text)
        .ok()
        .map(|id| id.as_u128())
}

/// The (field code, value key) entries `record` has in an index of `fields`.
pub(crate) fn entries(fields: &[IndexedField], record: &impl Fields) -> Vec<(u8, Vec<u8>)> {
    fields
        .iter()
        .filter_map(|f| value_key(record.field(f.field)).map(|key| (f.code, key)))
        .collect()
}

type IndexTable<'w> = WriteTable<'w, (&'static str, u8, &'static [u8], u128), ()>;

/// Moves the index entries of record `id` from what `before` has to what `after` has.
fn update_entries<R: Fields>(
    table: &mut IndexTable<'_>,
    tenant: &str,
    fields: &[IndexedField],
    id: u128,
    before: Option<&R>,
    after: Option<&R>,
) -> Result<(), Error> {
    let old = before.map(|r| entries(fields, r)).unwrap_or_default();
    let new = after.map(|r| entries(fields, r)).unwrap_or_default();
    for (code, key) in &old {
        if !new.contains(&(*code, key.clone())) {
            table.remove((tenant, *code, key.as_slice(), id))?;
        }
    }
    for (code, key) in &new {
        if !old.contains(&(*code, key.clone())) {
            table.insert((tenant, *code, key.as_slice(), id), ())?;
        }
    }
    Ok(())
}

/// Updates the secondary indexes and the assignment index of one connection from `before` to
/// `after` (either may be absent: registration, removal).
pub(crate) fn put_connection(
    t: &mut WriteTables<'_>,
    tenant: &TenantId,
    before: Option<&Connection>,
    after: Option<&Connection>,
) -> Result<(), Error> {
    let Some(id) = after.or(before).map(|c| c.id().as_u128()) else {
        return Ok(());
    };
    let tn = tenant.as_str();
    update_entries(
        &mut t.connection_index,
        tn,
        CONNECTION_FIELDS,
        id,
        before,
        after,
    )?;
    let assignment = |c: &Connection| {
        (
            c.spec.entitlement.as_str().to_owned(),
            c.spec.identity.as_str().to_owned(),
            c.spec.account.as_str().to_owned(),
        )
    };
    let old = before.map(assignment);
    let new = after.map(assignment);
    if old != new {
        if let Some((e, i, a)) = &old {
            t.assignments
                .remove((tn, e.as_str(), i.as_str(), a.as_str(), id))?;
        }
        if let Some((e, i, a)) = &new {
            t.assignments
                .insert((tn, e.as_str(), i.as_str(), a.as_str(), id), ())?;
        }
    }
    Ok(())
}

/// Writes the history record of `record`'s activation and moves its index entries.
pub(crate) fn put_history(
    t: &mut WriteTables<'_>,
    tenant: &TenantId,
    record: &ActivationRecord,
) -> Result<(), Error> {
    let tn = tenant.as_str();
    let id = record.activation.id;
    let key = (tn, id.as_u128());
    let before = match t.history.get(key)? {
        Some(bytes) => Some(codec::decode_history(tn, id, bytes.value())?),
        None => None,
    };
    update_entries(
        &mut t.history_index,
        tn,
        HISTORY_FIELDS,
        id.as_u128(),
        before.as_ref(),
        Some(record),
    )?;
    t.history
        .insert(key, codec::encode_history(record).as_slice())?;
    Ok(())
}
