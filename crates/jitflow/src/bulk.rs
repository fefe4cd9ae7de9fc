//! Bulk calls: many independent items in one call, one result per item.
//!
//! An item's failure never affects another item; the call as a whole is refused when it is
//! empty or longer than its bound, and when the engine could not write one of its items (a
//! failed commit, an outage, a stop: see [`whole`]).
//!
//! Every bulk call is timed from the call to its answer ([`timed`]), in the histogram
//! `jitflow_bulk_ack_duration_seconds{kind}` ([`Kind`]); a call refused as a whole is not
//! counted, as a refused signal is not.

use std::future::Future;
use std::time::Instant;

use jitflow_core::connection::ConnectionType;
use jitflow_core::id::{self, ConnectionId};

use crate::{Engine, Error};

/// The most items one [`crate::Engine::bulk_change_type`] call takes (the contract's bound).
pub const MAX_TYPE_UPDATES: usize = 100;
/// The most connections one [`crate::Engine::import`] call registers.
pub const MAX_IMPORT: usize = 1_000;

/// One item of a bulk type update, as the client sent it; each item is checked on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeUpdate {
    /// The connection's id (a UUID with or without hyphens).
    pub connection_id: String,
    /// The target type: `JIT` or `STANDING` (the contract's enum for this call).
    pub kind: String,
}

impl TypeUpdate {
    /// The item's connection id and target type, or why the item is malformed.
    pub fn parse(&self) -> Result<(ConnectionId, ConnectionType), ItemError> {
        let id = ConnectionId::parse(&self.connection_id).map_err(ItemError::InvalidId)?;
        match ConnectionType::parse(&self.kind) {
            Some(kind @ (ConnectionType::Jit | ConnectionType::Standing)) => Ok((id, kind)),
            _ => Err(ItemError::InvalidType(
                self.kind.chars().take(64).collect::<String>(),
            )),
        }
    }
}

/// Why one item of a bulk call failed; the other items are not affected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// The connection id is not a UUID (the contract's 400 for the item).
    #[error(transparent)]
    InvalidId(id::Error),
    /// The type is not `JIT` or `STANDING` (the contract's 422 for the item).
    #[error("Invalid type `{0}` specified, must be JIT or STANDING.")]
    InvalidType(String),
    /// The same connection appeared earlier in the request (the contract's 409 for the item);
    /// the earlier item is the one applied.
    #[error("Duplicate connectionId in request.")]
    Duplicate,
    /// The engine refused or could not run the item: not found, a conflict with the
    /// connection's state, a full queue.
    #[error(transparent)]
    Engine(#[from] Error),
}

/// The answers of a bulk call, or the whole call's failure when any item failed because the
/// engine could not write ([`Error::is_unavailable`]): such a failure is the server's, not
/// the item's, and the caller retries the call (a retry of an item that did commit meets its
/// own answer: a duplicate registration, a type already set).
pub(crate) fn whole<T, E>(
    answers: Vec<Result<T, E>>,
    engine_error: impl Fn(&E) -> Option<&Error>,
) -> Result<Vec<Result<T, E>>, Error> {
    let unavailable = answers.iter().find_map(|a| match a {
        Err(e) => engine_error(e).filter(|e| e.is_unavailable()).cloned(),
        Ok(_) => None,
    });
    match unavailable {
        Some(e) => Err(e),
        None => Ok(answers),
    }
}

/// Refuses a bulk call with no items or more than `max`.
pub(crate) fn check_len(len: usize, max: usize) -> Result<(), Error> {
    if len == 0 || len > max {
        return Err(Error::Invalid(format!(
            "a bulk request takes 1 to {max} items, not {len}"
        )));
    }
    Ok(())
}

/// A bulk call, the `kind` label of `jitflow_bulk_ack_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// [`Engine::import`]: connections registered (`import`).
    Import,
    /// [`Engine::bulk_change_type`]: connections' types changed (`change_type`).
    ChangeType,
    /// [`Engine::submit_request`]: an access request's items submitted, in one batch
    /// (`submit`).
    Submit,
    /// [`Engine::bulk_approve`]: approvals approved (`approve`).
    Approve,
    /// [`Engine::bulk_cancel`]: access requests cancelled (`cancel`).
    Cancel,
    /// [`Engine::bulk_close`]: access requests closed (`close`).
    Close,
}

impl Kind {
    /// Every kind, in the order of [`Metrics::bulk_ack`](crate::metrics::Metrics::bulk_ack).
    pub const ALL: [Kind; 6] = [
        Kind::Import,
        Kind::ChangeType,
        Kind::Submit,
        Kind::Approve,
        Kind::Cancel,
        Kind::Close,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Import => "import",
            Kind::ChangeType => "change_type",
            Kind::Submit => "submit",
            Kind::Approve => "approve",
            Kind::Cancel => "cancel",
            Kind::Close => "close",
        }
    }
}

/// Runs a bulk call of `kind` and, when it answers (one result per item, whatever each
/// says), counts the time from the call to that answer.
pub(crate) async fn timed<T>(
    engine: &Engine,
    kind: Kind,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let started = Instant::now();
    let answer = call.await;
    if answer.is_ok() {
        engine.metrics().bulk_acked(kind, started.elapsed());
    }
    answer
}
