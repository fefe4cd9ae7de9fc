//! Intents: the connections with committed effects (grant, revoke, validate) whose results are
//! not committed yet. On start the engine pages through them and runs those effects again (with
//! the same idempotency keys) without scanning every connection.

use std::ops::Bound;

use jitflow_core::id::{ConnectionId, TenantId};

use crate::codec::{self, Problem, RecordName};
use crate::read::{self, Reader, check_limit};
use crate::tables::INTENTS;

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
        check_limit(limit)?;
        let table = self.table(INTENTS)?;
        let start = match after {
            Some(i) => Bound::Excluded((i.tenant.as_str(), i.connection.as_u128())),
            None => Bound::Unbounded,
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in table
            .range::<(&str, u128)>((start, Bound::Unbounded))?
            .take(limit)
        {
            let (key, _) = entry?;
            let (tenant, connection) = key.value();
            let tenant = TenantId::parse(tenant).map_err(|_| {
                codec::Error::new(
                    RecordName::Key {
                        table: "intents",
                        key: format!("({tenant:?}, {connection:#x})"),
                    },
                    Problem::Invalid("not a valid tenant id".into()),
                )
            })?;
            out.push(Intent {
                tenant,
                connection: ConnectionId::from_u128(connection),
            });
        }
        Ok(out)
    }
}
