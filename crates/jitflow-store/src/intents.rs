//! Intents: the connections with committed effects (grant, revoke, validate) whose results are
//! not committed yet. On start the engine pages through them and runs those effects again (with
//! the same idempotency keys) without scanning every connection.

use std::ops::Bound;

use jitflow_core::id::{ConnectionId, TenantId};
use jitflow_core::workflow::{Workflow, WorkflowEvent};

use crate::codec::{self, Problem, RecordName};
use crate::hot::{SortKey, WriteTable};
use crate::read::{self, Reader, check_limit};
use crate::tables::INTENTS;
use redb::TableDefinition;

/// Keeps a workflow's intent row (`INTENTS` for connections, `REQUEST_INTENTS` for request
/// items) equal to "has pending effects". `before`'s row is present iff `before` had pending
/// effects (the same invariant, held by the previous write), so only a change of that answer
/// touches the table.
pub(crate) fn mirror<W: Workflow>(
    intents: &mut WriteTable<'_, (&'static str, u128), ()>,
    key: (&str, u128),
    before: Option<&W>,
    after: Option<&W>,
) -> Result<(), crate::append::Error> {
    let pending = |w: &W| !w.pending_effects().is_empty();
    mirror_row(
        intents,
        key,
        before.is_some_and(pending),
        after.is_some_and(pending),
    )
}

/// Keeps a workflow's row in the stuck table equal to `Workflow::is_stuck` of its state.
/// Like the intent rows, `before`'s row is present iff `before` is stuck.
pub(crate) fn mirror_stuck<W: Workflow>(
    stuck: &mut WriteTable<'_, (&'static str, u8, u128), ()>,
    key: (&str, u8, u128),
    before: Option<&W>,
    after: Option<&W>,
) -> Result<(), crate::append::Error> {
    mirror_row(
        stuck,
        key,
        before.is_some_and(Workflow::is_stuck),
        after.is_some_and(Workflow::is_stuck),
    )
}

/// Moves a presence row with the answer it mirrors: inserted when the answer turns true,
/// removed when it turns false, untouched otherwise (the row is present iff the answer was
/// true before, which the previous write kept).
fn mirror_row<'k, K: SortKey + 'static>(
    table: &mut WriteTable<'_, K, ()>,
    key: K::SelfType<'k>,
    was: bool,
    is: bool,
) -> Result<(), crate::append::Error> {
    match (was, is) {
        (false, true) => {
            table.insert(key, ())?;
        }
        (true, false) => {
            table.remove(key)?;
        }
        _ => {}
    }
    Ok(())
}

/// Paired assertions on an entry's state after its event, before anything is encoded: the
/// state is consistent, and the event arms only timers the state has and cancels only timers
/// it has not (`what` names the workflow in the message).
pub(crate) fn assert_follows<W, E>(what: &str, event: &E, after: &W)
where
    W: Workflow,
    E: WorkflowEvent<Timer = W::Timer>,
{
    let id = event.subject();
    assert_eq!(
        after.key(),
        id,
        "entry for {what} {id:#x} carries {:#x}",
        after.key()
    );
    if let Err(e) = after.check_invariants() {
        panic!("entry for {what} {id:#x} breaks an invariant: {e}");
    }
    let timers = after.timers();
    assert!(
        event.arm().iter().all(|t| timers.contains(t))
            && event.cancel().iter().all(|t| !timers.contains(t)),
        "event of {what} {id:#x} arms {:?} and cancels {:?}; the state has {timers:?}",
        event.arm(),
        event.cancel()
    );
}

/// A connection with pending effects (read them with `Connection::pending_effects`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Intent {
    /// The tenant.
    pub tenant: TenantId,
    /// The connection.
    pub connection: ConnectionId,
}

impl Reader {
    /// Connections with pending effects, in (tenant, connection) order, after `after`
    /// (exclusive), at most `limit` (at most [`read::MAX_READ_LIMIT`]).
    pub fn intents(
        &self,
        after: Option<&Intent>,
        limit: usize,
    ) -> Result<Vec<Intent>, read::Error> {
        let after = after.map(|i| (i.tenant.as_str(), i.connection.as_u128()));
        let keys = self.tenant_keys(INTENTS, "intents", after, limit)?;
        Ok(keys
            .into_iter()
            .map(|(tenant, id)| Intent {
                tenant,
                connection: ConnectionId::from_u128(id),
            })
            .collect())
    }

    /// The keys of a (tenant, id) set such as the intents, in order, after `after` (exclusive),
    /// at most `limit` (at most [`read::MAX_READ_LIMIT`]).
    pub(crate) fn tenant_keys(
        &self,
        definition: TableDefinition<'static, (&'static str, u128), ()>,
        name: &'static str,
        after: Option<(&str, u128)>,
        limit: usize,
    ) -> Result<Vec<(TenantId, u128)>, read::Error> {
        check_limit(limit)?;
        let table = self.table(definition)?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in table
            .range::<(&str, u128)>((start, Bound::Unbounded))?
            .take(limit)
        {
            let (key, _) = entry?;
            let (tenant, id) = key.value();
            let tenant = TenantId::parse(tenant).map_err(|_| {
                codec::Error::new(
                    RecordName::Key {
                        table: name,
                        key: format!("({tenant:?}, {id:#x})"),
                    },
                    Problem::Invalid("not a valid tenant id".into()),
                )
            })?;
            out.push((tenant, id));
        }
        Ok(out)
    }
}
