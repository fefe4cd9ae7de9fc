//! Projections: the current connection, activation and policy, written in the same transaction
//! as the events that change them, so opening a store reads them instead of replaying the log.
//!
//! Every connection write goes through [`put_connection`]: the secondary indexes (state, type,
//! identity, entitlement, source, JIT timestamps), the assignment index and the activation
//! history record and its indexes are maintained there (through `crate::index`), from `before`
//! and `after`, and nowhere else.

use jitflow_core::connection::Connection;
use jitflow_core::history::ActivationRecord;
use jitflow_core::id::{ConnectionId, TenantId};
use jitflow_core::lifecycle::Event;
use jitflow_core::policy::Policy;

use crate::append::{Error, WriteTables};
use crate::hot::WriteTable;
use crate::{codec, index, intents, timers};

/// The stored connection, read inside a write transaction (so it sees the batch's own writes).
pub(crate) fn get_connection(
    connections: &WriteTable<'_, (&'static str, u128), &'static [u8]>,
    tenant: &TenantId,
    id: ConnectionId,
) -> Result<Option<Connection>, Error> {
    let t = tenant.as_str();
    let Some(bytes) = connections.get((t, id.as_u128()))? else {
        return Ok(None);
    };
    Ok(Some(codec::decode_connection(t, id, bytes.value())?))
}

/// The stored policy of `tenant`.
pub(crate) fn get_policy(
    policies: &WriteTable<'_, &'static str, &'static [u8]>,
    tenant: &TenantId,
) -> Result<Option<Policy>, Error> {
    let t = tenant.as_str();
    let Some(bytes) = policies.get(t)? else {
        return Ok(None);
    };
    Ok(Some(codec::decode_policy(t, bytes.value())?))
}

/// The stored access request config of `tenant` (`None`: never set, the defaults apply).
pub(crate) fn get_request_config(
    configs: &WriteTable<'_, &'static str, &'static [u8]>,
    tenant: &TenantId,
) -> Result<Option<jitflow_core::request::AccessRequestConfig>, Error> {
    let t = tenant.as_str();
    let Some(bytes) = configs.get(t)? else {
        return Ok(None);
    };
    Ok(Some(codec::decode_request_config(t, bytes.value())?))
}

/// Writes everything a connection event changes besides the log: the connection projection,
/// the activation it names, its timers and its intent. `before` is the stored state, `after` the
/// state after `event` (checked by the caller to follow from `before`).
pub(crate) fn put_connection(
    t: &mut WriteTables<'_>,
    tenant: &TenantId,
    event: &Event,
    before: Option<&Connection>,
    after: Option<&Connection>,
) -> Result<(), Error> {
    let key = (tenant.as_str(), event.connection.as_u128());
    match after {
        Some(c) => {
            t.connections
                .insert(key, codec::encode_connection(c).as_slice())?;
        }
        None => {
            t.connections.remove(key)?;
        }
    }

    // The activation as it stands after each event that names it (the last one that ended
    // stays readable by id after the connection moves on or is removed).
    if let Some(id) = event.activation {
        let activation = after
            .and_then(|c| c.activation.as_ref())
            .filter(|a| a.id == id);
        if let (Some(a), Some(c)) = (activation, after) {
            t.activations.insert(
                (tenant.as_str(), id.as_u128()),
                codec::encode_activation(a).as_slice(),
            )?;
            index::put_history(t, tenant, &ActivationRecord::new(a, c))?;
        }
    }
    index::put_connection(t, tenant, before, after)?;

    timers::apply(&mut t.timers, tenant, event)?;
    let stuck_key = (key.0, crate::tables::STUCK_CONNECTION, key.1);
    intents::mirror_stuck(&mut t.stuck, stuck_key, before, after)?;
    intents::mirror(&mut t.intents, key, before, after)
}

/// Writes a tenant's policy projection.
pub(crate) fn put_policy(
    t: &mut WriteTables<'_>,
    tenant: &TenantId,
    policy: &Policy,
) -> Result<(), Error> {
    t.policies
        .insert(tenant.as_str(), codec::encode_policy(policy).as_slice())?;
    Ok(())
}
