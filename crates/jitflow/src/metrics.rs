//! Counters the engine keeps for operators (the HTTP shim renders them as Prometheus text).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Engine counters. All monotonic except the gauges noted.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Events committed.
    pub events: AtomicU64,
    /// Sum of commit latencies, in microseconds.
    pub commit_micros: AtomicU64,
    /// Commits that failed (outcome unknown).
    pub commit_failures: AtomicU64,
    /// Commands accepted.
    pub accepted: AtomicU64,
    /// Commands refused.
    pub refused: AtomicU64,
    /// Activate / extend / deactivate signals accepted.
    pub signals: [AtomicU64; 3],
    /// Timers fired.
    pub timers_fired: AtomicU64,
    /// Effects that succeeded.
    pub effects_ok: AtomicU64,
    /// Effects that failed.
    pub effects_failed: AtomicU64,
}

impl Metrics {
    pub(crate) fn command(&self, kind: &str, accepted: bool) {
        if accepted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            let index = match kind {
                "activate" => Some(0),
                "extend" => Some(1),
                "deactivate" => Some(2),
                _ => None,
            };
            if let Some(i) = index {
                self.signals[i].fetch_add(1, Ordering::Relaxed);
            }
            if kind == "timer_fired" {
                self.timers_fired.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn commit(&self, events: usize, latency: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.commit_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn commit_failed(&self) {
        self.commit_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn effect(&self, ok: bool) {
        if ok {
            self.effects_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.effects_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
