//! Clocks. The engine reads time and sleeps only through a [`Clock`], so tests can drive time by
//! hand and deterministically: with a [`ManualClock`] nothing in the engine moves until the test
//! moves the clock.

use std::sync::{Arc, Mutex};
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

/// The system clock: UTC from the wall clock, never going back and never slower than real
/// time. Sleeps on tokio's timer.
///
/// *What an expiry means when the clock misbehaves.* An expiry is an instant on this clock.
/// Each reading is the later of the wall clock and the last reading plus the real time elapsed
/// since it, measured on a clock that keeps counting while the host is suspended (Linux's
/// `CLOCK_BOOTTIME`; elsewhere `Instant`, which may not). So:
/// - a **backward step** of the wall clock is ignored: the clock goes on at the real rate, and
///   access never lasts longer in real time than granted;
/// - a **forward jump** of J is followed: expiries due within J fire at once, so access ends
///   early by at most J; a later correction backward is then a backward step (ignored), and
///   the clock stays up to J ahead of the wall until the engine restarts;
/// - a **suspended host** (or a process stopped with SIGSTOP) finds on waking that the clock
///   has moved by the time it slept; the scheduler's sleeps are capped by `max_sleep`, so
///   overdue expiries fire within `max_sleep` of waking;
/// - across a **restart** the clock starts again from the wall clock: a backward step while
///   the engine was down lengthens the access due in that time by the step.
#[derive(Debug, Clone, Default)]
pub struct SystemClock {
    last: Arc<Mutex<Option<Reading>>>,
}

/// One reading of the system clock: the time given, and the real time elapsed then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    at: Timestamp,
    elapsed: Duration,
}

impl Reading {
    /// The reading after `last` when the wall clock says `wall` and `elapsed` real time has
    /// passed (on the same origin as `last.elapsed`).
    fn next(last: Option<Reading>, wall: Timestamp, elapsed: Duration) -> Reading {
        let floor = last.map(|l| l.at.saturating_add(elapsed.saturating_sub(l.elapsed)));
        Reading {
            at: floor.map_or(wall, |f| f.max(wall)),
            elapsed,
        }
    }
}

/// Real time elapsed since an arbitrary origin, counting while the host is suspended.
fn elapsed() -> Duration {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // A wall clock before 1970 or after 9999 is a broken host; clamp rather than fail. Timers
        // still never fire early: the core compares due times with this same clock.
        let wall = Timestamp::from_system_time(SystemTime::now()).unwrap_or(Timestamp::EPOCH);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let reading = Reading::next(*last, wall, elapsed());
        *last = Some(reading);
        reading.at
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    const T0: u64 = 1_800_000_000_000;

    /// Follows the wall clock while it behaves, ignores a backward step (real time goes on),
    /// follows a forward jump and never goes back after it.
    #[test]
    fn the_system_clock_never_goes_back_nor_slower_than_real_time() {
        let s = Duration::from_secs;
        let mut r = Reading::next(None, at(T0), s(100));
        assert_eq!(r.at, at(T0));
        r = Reading::next(Some(r), at(T0 + 10_000), s(110));
        assert_eq!(
            r.at,
            at(T0 + 10_000),
            "a well-behaved wall clock is followed"
        );
        // The wall clock steps back an hour; 5 s of real time pass.
        r = Reading::next(Some(r), at(T0 + 15_000 - 3_600_000), s(115));
        assert_eq!(
            r.at,
            at(T0 + 15_000),
            "a backward step is ignored: real time goes on"
        );
        // The wall clock jumps an hour ahead.
        r = Reading::next(Some(r), at(T0 + 20_000 + 3_600_000), s(120));
        assert_eq!(
            r.at,
            at(T0 + 20_000 + 3_600_000),
            "a forward jump is followed"
        );
        // It is corrected back; 1 s passes: the clock stays ahead, moving at the real rate.
        r = Reading::next(Some(r), at(T0 + 21_000), s(121));
        assert_eq!(r.at, at(T0 + 21_000 + 3_600_000));
        // The host sleeps 10 minutes (the suspend-aware elapsed time counts them).
        r = Reading::next(Some(r), at(T0 + 21_000), s(721));
        assert_eq!(
            r.at,
            at(T0 + 621_000 + 3_600_000),
            "a suspended host's sleep counts"
        );
    }

    #[test]
    fn the_system_clock_reads_monotonic_times() {
        let clock = SystemClock::default();
        let mut last = clock.now();
        for _ in 0..1000 {
            let now = clock.now();
            assert!(now >= last);
            last = now;
        }
        let wall = Timestamp::from_system_time(SystemTime::now()).unwrap();
        assert!(
            last.since(wall) < Duration::from_secs(1) && wall.since(last) < Duration::from_secs(1)
        );
    }
}
