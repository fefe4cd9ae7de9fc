//! The load generator's JSON report.

use std::time::Duration;

use serde::Serialize;

use crate::percentiles;

/// One phase's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Phase {
    /// Signals acknowledged (each after its commit).
    pub ops: u64,
    /// Signals that failed (refused, transport errors, or still "not yet" after every try).
    pub errors: u64,
    /// Tries refused as "not yet" and sent again (not errors unless the tries ran out).
    pub retried: u64,
    /// Acknowledged signals per second of the phase's wall time.
    pub ops_per_s: f64,
    /// Latency of acknowledged signals (the last try's), median, in milliseconds.
    pub p50_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The slowest.
    pub max_ms: f64,
    /// The phase's wall time in seconds.
    pub seconds: f64,
    /// When it started and ended on the wall clock (Unix ms), so that the phases of
    /// generators running at once (several nodes) can be joined over their common span.
    pub started_unix_ms: u64,
    /// When it ended.
    pub ended_unix_ms: u64,
    /// The first error's text, so errors are never silent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// The three measured phases.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Phases {
    /// Activate every connection.
    pub activate: Phase,
    /// Extend each once.
    pub extend: Phase,
    /// Deactivate half.
    pub deactivate: Phase,
}

/// Timer lag percentiles, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Lag {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// How many expiries were measured.
    pub samples: u64,
}

impl Lag {
    /// The percentiles of `samples` (the lags of expiries that were not early).
    pub fn of(mut samples: Vec<Duration>) -> Lag {
        let (p50, p99, max) = percentiles(&mut samples);
        Lag {
            p50: ms(p50),
            p99: ms(p99),
            max: ms(max),
            samples: samples.len() as u64,
        }
    }
}

/// How the activations ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// Ended by the expiry timer (activation COMPLETED, connection EXPIRED).
    pub expired: u64,
    /// Ended by deactivate (activation REVOKED, connection AVAILABLE).
    pub deactivated: u64,
    /// Anything else: not activated, failed, or not ended within the grace period.
    pub other: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// `embedded` or the shim's base URL.
    pub target: String,
    /// W.
    pub w: usize,
    /// C.
    pub c: usize,
    /// P in minutes.
    pub period_mins: u32,
    /// E in minutes.
    pub extend_mins: u32,
    /// `system` or `manual` (embedded); `server` over HTTP.
    pub clock: String,
    /// Opening and registering the W connections, in seconds (not in `end_to_end_s`).
    pub setup_s: f64,
    /// The phases.
    pub phases: Phases,
    /// Embedded: the wait between activate and extend until every connection was ACTIVE.
    pub settle_active_s: Option<f64>,
    /// The timer lag of the expiries (see the module docs); absent when none was observed.
    pub timer_lag_ms: Option<Lag>,
    /// How the lag was measured.
    pub timer_lag_basis: String,
    /// Expiry transitions decided or seen before their due time. Must be 0.
    pub expired_early: u64,
    /// How the activations ended.
    pub outcomes: Outcomes,
    /// The outcomes the plan expects (`other` 0).
    pub expected: Outcomes,
    /// From the first activate to the last ended activation, in seconds.
    pub end_to_end_s: f64,
    /// Embedded, with `--reconcile-connections`: the background reconciliation during the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<ReconcileReport>,
    /// What stopped the run after the phases started, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// A report of `options` before anything ran: the plan, the clock, how the lag is measured
    /// and how long the setup took.
    pub(crate) fn planned(
        options: &super::Options,
        clock: &str,
        timer_lag_basis: &str,
        setup: Duration,
    ) -> Report {
        Report {
            target: options.target.to_string(),
            w: options.connections,
            c: options.clients,
            period_mins: options.period.get(),
            extend_mins: options.extend.get(),
            clock: clock.into(),
            setup_s: round3(setup.as_secs_f64()),
            timer_lag_basis: timer_lag_basis.into(),
            expected: Report::expected_for(options.connections),
            ..Report::default()
        }
    }

    /// Whether the run upholds the invariants: no early expiry, the outcomes as planned, and no
    /// error that stopped it.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.expired_early == 0 && self.outcomes == self.expected
    }

    /// The outcomes the plan expects for `w` connections: every second one deactivated.
    pub fn expected_for(w: usize) -> Outcomes {
        Outcomes {
            expired: (w - w / 2) as u64,
            deactivated: (w / 2) as u64,
            other: 0,
        }
    }
}

/// The background reconciliation during a run (issue 16), from the engine's metrics: from the
/// first activate to the end of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReconcileReport {
    /// Connections besides the workload's (tenant `drift`).
    pub extra: usize,
    /// Connections by hand on the target among them.
    pub by_hand: usize,
    /// `reconcile_rate` (0: off, the baseline).
    pub rate: u32,
    /// `reconcile_interval`, in seconds.
    pub interval_s: f64,
    /// `reconcile_in_flight`.
    pub in_flight: usize,
    /// Connections the pass looked at during the run.
    pub inspected: u64,
    /// The same per second of the run.
    pub inspected_per_s: f64,
    /// Passes completed during the run.
    pub passes: u64,
    /// The last completed pass: its connections and seconds (0 when none completed).
    pub last_pass_connections: u64,
    /// See `last_pass_connections`.
    pub last_pass_s: f64,
    /// Drift committed during the run: access no activation explains (the by-hand grants,
    /// found and revoked).
    pub unexpected_access: u64,
    /// Access missing while ACTIVE: must be 0 (the workload's grants are all held).
    pub missing_access: u64,
    /// By-hand grants the target still holds at the end (not reached yet).
    pub by_hand_left: usize,
}

/// What one client counted in one phase.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) errors: u64,
    pub(crate) retried: u64,
    pub(crate) first_error: Option<String>,
}

impl Tally {
    pub(crate) fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.retried += other.retried;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub(crate) fn finish(mut self, started: std::time::SystemTime, elapsed: Duration) -> Phase {
        let unix_ms = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        let (p50, p99, max) = percentiles(&mut self.latencies);
        let ops = self.latencies.len() as u64;
        Phase {
            ops,
            errors: self.errors,
            retried: self.retried,
            ops_per_s: round3(ops as f64 / elapsed.as_secs_f64().max(1e-9)),
            p50_ms: ms(p50),
            p99_ms: ms(p99),
            max_ms: ms(max),
            seconds: round3(elapsed.as_secs_f64()),
            started_unix_ms: unix_ms(started),
            ended_unix_ms: unix_ms(started + elapsed),
            first_error: self.first_error,
        }
    }
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1e3)
}

/// Rounds to three decimals, so the report shows no float noise.
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}
