//! The engine's error type.

use jitflow_core::connection::PatchError;
use jitflow_core::lifecycle::{PolicyRejection, Rejection};

/// Why an engine call failed. A call that fails changed nothing, except
/// [`Error::OutcomeUnknown`], after which the change may or may not have been committed: retry
/// with the same idempotency key to find out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lifecycle refused the command (not found, conflict, invalid: see
    /// [`Rejection::kind`]).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The access request operation was refused (not found, forbidden, invalid: see
    /// [`jitflow_core::request::Rejection::kind`]). Nothing was changed.
    #[error(transparent)]
    RequestRejected(#[from] jitflow_core::request::Rejection),
    /// The access request config was refused: it breaks a rule (nothing was stored).
    #[error(transparent)]
    RequestConfig(#[from] jitflow_core::request::config::Error),
    /// The policy change was refused.
    #[error(transparent)]
    PolicyRejected(#[from] PolicyRejection),
    /// The connection patch is malformed (nothing was changed).
    #[error(transparent)]
    Patch(#[from] PatchError),
    /// The idempotency key was used before for a different request.
    #[error("idempotency key `{0}` was used for a different request")]
    IdempotencyConflict(String),
    /// The writer's queue is full: retry later (the HTTP shim answers 429).
    #[error("the engine is busy: its queue of {0} commands is full")]
    Busy(usize),
    /// The commit failed and the engine could not yet learn whether the command is durable
    /// (the store did not reopen at once). Retry with the same idempotency key to find out;
    /// the engine heals by itself (see [`Engine::health`](crate::Engine::health)). The HTTP
    /// shim answers 503 with `Retry-After`.
    #[error(
        "the commit failed ({0}) and its outcome is unknown: retry with the same idempotency key"
    )]
    OutcomeUnknown(String),
    /// The engine cannot write now: a commit or checkpoint failed (the cause says why: a full
    /// disk, an I/O error) and it is reopening its store with capped backoff. Nothing was
    /// changed; retry later. The HTTP shim answers 503 with `Retry-After`.
    #[error("the engine cannot write now ({0}); nothing was changed: retry later")]
    Unavailable(String),
    /// A read failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// The engine is shutting down or stopped.
    #[error("the engine is not running")]
    Stopped,
    /// A list query was refused: it does not fit its collection (a field, sorter or
    /// `searchAfter` value the list does not take, a bound exceeded), or it would examine more
    /// records than its bound allows. The message says what to change (the HTTP shim answers
    /// 400). Parameters parsed with `Query::parse` meet the first kind of problem there, as a
    /// typed `jitflow_store::query::Error`.
    #[error("{0}")]
    Query(String),
    /// A request argument is out of bounds (a page size, for example).
    #[error("{0}")]
    Invalid(String),
    /// The caller's rights do not cover the operation (a user listing another identity's
    /// access requests or approvals, for example); nothing was read or changed.
    #[error("{0}")]
    Forbidden(String),
    /// What the call names does not exist for this tenant (an access request id, for example).
    #[error("{0}")]
    NotFound(String),
}

impl Error {
    /// Whether the engine, not the call, is at fault and a retry later may succeed: the
    /// engine cannot write now, a commit's outcome is unknown, or it is stopping. A bulk call
    /// answers such an item's failure as the whole call's failure.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::OutcomeUnknown(_) | Error::Stopped
        )
    }
}

impl From<jitflow_store::read::Error> for Error {
    fn from(e: jitflow_store::read::Error) -> Error {
        Error::Storage(e.to_string())
    }
}

/// Runs `f` on a fresh read snapshot of the store.
pub(crate) fn read<T>(
    store: &jitflow_store::Store,
    f: impl FnOnce(&jitflow_store::read::Reader) -> Result<T, jitflow_store::read::Error>,
) -> Result<T, Error> {
    let reader = store.reader()?;
    Ok(f(&reader)?)
}
