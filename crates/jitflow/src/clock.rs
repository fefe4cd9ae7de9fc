//! Clocks. The engine reads time and sleeps only through a [`Clock`], so tests can drive time by
//! hand and deterministically: with a [`ManualClock`] nothing in the engine moves until the test
//! moves the clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jitflow_core::time::Timestamp;
use tokio::sync::watch;

use crate::hooks::BoxFuture;

/// A source of the current UTC time, and of sleeps measured on it.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Completes once `now() >= due` (or a little later). It may complete early only if the
    /// clock jumped; the scheduler checks the time again after every sleep.
    fn sleep_until(&self, due: Timestamp) -> BoxFuture<'static, ()>;
}

/// The system's wall clock; sleeps on tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // A wall clock before 1970 or after 9999 is a broken host; clamp rather than fail. Timers
        // still never fire early: the core compares due times with this same clock.
        Timestamp::from_system_time(SystemTime::now()).unwrap_or(Timestamp::EPOCH)
    }

    fn sleep_until(&self, due: Timestamp) -> BoxFuture<'static, ()> {
        let wait = due.since(self.now());
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told to: for tests and simulations. Cheap to clone; clones share
/// the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    time: Arc<watch::Sender<Timestamp>>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            time: Arc::new(watch::Sender::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.time.send_modify(|t| *t = t.saturating_add(by));
    }

    /// Sets the clock, forward or back (a clock jump).
    pub fn set(&self, to: Timestamp) {
        self.time.send_replace(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.time.borrow()
    }

    fn sleep_until(&self, due: Timestamp) -> BoxFuture<'static, ()> {
        let mut rx = self.time.subscribe();
        Box::pin(async move {
            // Ends when the clock reaches `due`, or never if nobody moves it.
            let _ = rx.wait_for(|now| *now >= due).await;
        })
    }
}
