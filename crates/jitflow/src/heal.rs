//! Healing after a failed write: the writer's outage state machine.
//!
//! A commit or a checkpoint that fails (a full disk, an I/O error) poisons the store. The
//! writer then does not stop: it moves to *down* and heals by itself.
//!
//! - **Up**: writes commit. A failed write moves to *down* with its cause.
//! - **Down** (cause, backoff, retry at): every request is refused at once with
//!   [`Error::Unavailable`](crate::Error::Unavailable) naming the cause, so callers get a
//!   quick 503 instead of a hung call. At the retry time the writer reopens the store in place
//!   (`Store::reopen`: redb's recovery, the tail replay) and proves it can write with a
//!   checkpoint (which always commits a transaction). Success moves to *up* and wakes the
//!   scheduler and the effect runner, so overdue expiries fire and lost effect results run
//!   again at once. Failure doubles the backoff, capped at [`BACKOFF_MAX`].
//!
//! The error is logged once when the state changes (up to down, a new cause, down to up),
//! never once per attempt.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The first wait before a reopen attempt after a failure: short, since a failure is often a
/// moment's full disk that an operator or a log rotation clears.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest wait between two reopen attempts: how late, at most, the engine notices that
/// the disk has space again.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Whether the engine can write, as [`Engine::health`](crate::Engine::health) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// The last write committed.
    Up,
    /// A write failed and the engine is healing by itself: signals are refused with
    /// [`Error::Unavailable`](crate::Error::Unavailable) until a reopen and a probe write
    /// succeed. Reads go on, except for the moments the store file is being reopened.
    Degraded {
        /// What failed: "the disk is full", "an I/O error (...)", or the store's message.
        cause: String,
        /// How long the engine has been unable to write.
        for_: Duration,
        /// Reopen attempts since the engine started.
        reopen_attempts: u64,
    },
}

/// What the writer shares about its health with the engine's handle and the metrics.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The cause and start of the current outage; `None` while up.
    outage: Mutex<Option<(String, Instant)>>,
    /// Reopen attempts since the engine started.
    pub(crate) reopen_attempts: AtomicU64,
    /// Microseconds spent unable to write in outages that ended.
    ended_micros: AtomicU64,
}

impl Shared {
    /// The health as it stands.
    pub(crate) fn health(&self) -> Health {
        match &*self.outage.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Health::Up,
            Some((cause, since)) => Health::Degraded {
                cause: cause.clone(),
                for_: since.elapsed(),
                reopen_attempts: self.reopen_attempts.load(Ordering::Relaxed),
            },
        }
    }

    /// Seconds spent unable to write since the engine started, the current outage included.
    pub(crate) fn unavailable_seconds(&self) -> f64 {
        let ended = Duration::from_micros(self.ended_micros.load(Ordering::Relaxed));
        let current = self
            .outage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(Duration::ZERO, |(_, since)| since.elapsed());
        (ended + current).as_secs_f64()
    }

    fn set(&self, outage: Option<(String, Instant)>) {
        let mut slot = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if outage.is_none()
            && let Some((_, since)) = slot.as_ref()
        {
            let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.ended_micros.fetch_add(micros, Ordering::Relaxed);
        }
        *slot = outage;
    }
}

/// The writer's state while down.
#[derive(Debug)]
pub(crate) struct Outage {
    pub(crate) cause: String,
    since: Instant,
    backoff: Duration,
    retry_at: Instant,
}

impl Outage {
    /// Moves to down after a failed write with `cause`, or, when already down, records one
    /// more failure: the backoff doubles. Logs only when the state or the cause changes.
    pub(crate) fn failed(outage: &mut Option<Outage>, shared: &Shared, cause: String) {
        let now = Instant::now();
        match outage {
            None => {
                tracing::error!(
                    %cause,
                    "a write failed: signals are refused until the store is reopened and \
                     writes again (retrying with backoff)"
                );
                shared.set(Some((cause.clone(), now)));
                *outage = Some(Outage {
                    cause,
                    since: now,
                    backoff: BACKOFF_MIN,
                    retry_at: now + BACKOFF_MIN,
                });
            }
            Some(o) => {
                if o.cause != cause {
                    tracing::error!(%cause, previous = %o.cause, "still unable to write, now because of another fault");
                    shared.set(Some((cause.clone(), o.since)));
                    o.cause = cause;
                }
                o.backoff = (o.backoff * 2).min(BACKOFF_MAX);
                o.retry_at = now + o.backoff;
            }
        }
    }

    /// Whether the next attempt is due.
    pub(crate) fn due(&self) -> bool {
        Instant::now() >= self.retry_at
    }

    /// Moves to up after a write succeeded.
    pub(crate) fn recovered(outage: &mut Option<Outage>, shared: &Shared) {
        if let Some(o) = outage.take() {
            tracing::info!(
                down_for = ?o.since.elapsed(),
                cause = %o.cause,
                "writes recovered: the store was reopened and commits again"
            );
            shared.set(None);
        }
    }
}

/// The cause of a failed write, in words an operator acts on.
pub(crate) fn cause(e: &jitflow_store::append::Error) -> String {
    if e.is_storage_full() {
        return "the disk is full".to_owned();
    }
    match e.io_error_kind() {
        Some(kind) => format!("an I/O error ({kind}): {e}"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_health_follows_the_state() {
        let shared = Shared::default();
        let mut outage = None;
        assert_eq!(shared.health(), Health::Up);
        Outage::failed(&mut outage, &shared, "the disk is full".into());
        assert_eq!(outage.as_ref().unwrap().backoff, BACKOFF_MIN);
        assert!(matches!(
            shared.health(),
            Health::Degraded { ref cause, .. } if cause == "the disk is full"
        ));
        for _ in 0..20 {
            Outage::failed(&mut outage, &shared, "the disk is full".into());
        }
        assert_eq!(outage.as_ref().unwrap().backoff, BACKOFF_MAX);
        assert!(!outage.as_ref().unwrap().due());
        Outage::failed(&mut outage, &shared, "an I/O error".into());
        assert!(matches!(
            shared.health(),
            Health::Degraded { ref cause, .. } if cause == "an I/O error"
        ));
        Outage::recovered(&mut outage, &shared);
        assert!(outage.is_none());
        assert_eq!(shared.health(), Health::Up);
        assert!(shared.unavailable_seconds() > 0.0);
    }
}
