//! Queries: the entitlement connections list and the activation history, for the tenant and for
//! one identity, served from the store's secondary indexes (see [`jitflow_store::query`] for the
//! parameters, the `searchAfter` encoding, the order, the plans and the bounds).
//!
//! Parse the raw HTTP parameters with [`Query::parse`] (typed errors, one per problem) against
//! [`CONNECTIONS`], [`HISTORY`] or, for the current identity's history,
//! [`HISTORY_OF_IDENTITY`]; run them with the methods below; continue with [`search_after`] of
//! the last record.
//!
//! These reads run on the calling thread on a snapshot and never block the writer. A query
//! examines at most [`MAX_EXAMINED`] records, which can take a second on a large
//! tenant: call them from `tokio::task::spawn_blocking` in an async server.

use jitflow_core::connection::Connection;
use jitflow_core::history::ActivationRecord;
use jitflow_core::id::{AccountId, EntitlementId, IdentityId};
/// The store's query types, re-exported: [`Query`], [`Page`], the collections, the typed
/// parameter [`Error`](jitflow_store::query::Error), [`search_after`].
pub use jitflow_store::query::*;

use crate::engine::{Caller, Engine};

impl From<jitflow_store::query::Error> for crate::Error {
    fn from(e: jitflow_store::query::Error) -> crate::Error {
        match e {
            jitflow_store::query::Error::Read(e) => e.into(),
            other => crate::Error::Query(other.to_string()),
        }
    }
}

impl Engine {
    /// The entitlement connections of the caller's tenant that `query` selects.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Query`] for a query the collection refuses or one that would examine more
    /// than its bound; [`crate::Error::Storage`] when the read fails.
    pub fn connections(
        &self,
        caller: &Caller,
        query: &Query,
    ) -> Result<Page<Connection>, crate::Error> {
        self.read_query(|r| r.query_connections(&caller.tenant, query, None))
    }

    /// The current-identity variant of [`Engine::connections`]: only `identity`'s
    /// connections (pass the authenticated identity), whatever the filter says.
    ///
    /// # Errors
    ///
    /// As [`Engine::connections`].
    pub fn connections_of_identity(
        &self,
        caller: &Caller,
        identity: &IdentityId,
        query: &Query,
    ) -> Result<Page<Connection>, crate::Error> {
        self.read_query(|r| r.query_connections(&caller.tenant, query, Some(identity)))
    }

    /// The connection of the caller's tenant that gives `identity` the `entitlement` through
    /// `account` (the contract's patch by `entitlementId`, `identityId` and `accountId`).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Query`] when several connections hold the assignment (registration does
    /// not refuse a second one, so the three ids name none); [`crate::Error::Storage`] when the
    /// read fails.
    pub fn connection_by_assignment(
        &self,
        caller: &Caller,
        entitlement: &EntitlementId,
        identity: &IdentityId,
        account: &AccountId,
    ) -> Result<Option<Connection>, crate::Error> {
        let reader = self.store().reader()?;
        match reader.connection_by_assignment(&caller.tenant, entitlement, identity, account) {
            Err(e @ jitflow_store::read::Error::Ambiguous { .. }) => {
                Err(crate::Error::Query(e.to_string()))
            }
            other => Ok(other?),
        }
    }

    /// The activation history of the caller's tenant: one record per activation.
    ///
    /// # Errors
    ///
    /// As [`Engine::connections`].
    pub fn activation_history(
        &self,
        caller: &Caller,
        query: &Query,
    ) -> Result<Page<ActivationRecord>, crate::Error> {
        self.read_query(|r| r.query_history(&caller.tenant, query, None))
    }

    /// The current-identity variant of [`Engine::activation_history`]: only `identity`'s
    /// activations. Parse its query against [`HISTORY_OF_IDENTITY`], which has no
    /// `identityId` filter.
    ///
    /// # Errors
    ///
    /// As [`Engine::connections`].
    pub fn activation_history_of_identity(
        &self,
        caller: &Caller,
        identity: &IdentityId,
        query: &Query,
    ) -> Result<Page<ActivationRecord>, crate::Error> {
        self.read_query(|r| r.query_history(&caller.tenant, query, Some(identity)))
    }

    pub(crate) fn read_query<T>(
        &self,
        f: impl FnOnce(&jitflow_store::read::Reader) -> Result<T, jitflow_store::query::Error>,
    ) -> Result<T, crate::Error> {
        let reader = self.store().reader()?;
        Ok(f(&reader)?)
    }
}
