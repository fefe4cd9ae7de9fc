//! Intents: the connections with committed effects (grant, revoke, validate) whose results are
//! not committed yet. On start the engine pages through them and runs those effects again (with
//! the same idempotency keys) without scanning every connection.

use std::ops::Bound;

use jitflow_core::id::{ConnectionId, TenantId};

use crate::codec::{self, Problem, RecordName};
use crate::read::{self, Reader, check_limit};
use crate::tables::INTENTS;
use redb::TableDefinition;

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
