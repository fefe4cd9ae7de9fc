//! The engine's metrics, for operators: counters and histograms recorded on the hot path, and
//! [`Engine::scrape`](crate::Engine::scrape), which encodes them with gauges read at that moment
//! in the Prometheus text format (0.0.4), through the Prometheus project's Rust client
//! (`prometheus-client`). An embedder without HTTP serves or logs the same text; the HTTP shim's
//! `/metrics` is exactly that.
//!
//! Recording is a few relaxed atomic adds: no lock is taken, so nothing the writer does between
//! two commits waits on a scrape. Every histogram has fixed buckets (the constants below), so its
//! memory is fixed whatever is observed; a value above the last bound counts in `+Inf` only.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jitflow_core::time::Timestamp;
use jitflow_store::Store;

use crate::hooks::NotifyErrorKind;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Engine::scrape`](crate::Engine::scrape)'s text.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds, in seconds, of the commit and signal acknowledgement histograms: an fsync takes
/// from tens of microseconds (a fast NVMe) to tens of milliseconds (a network disk).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Upper bounds, in seconds, of the effect call histogram: target systems answer in milliseconds
/// to the effect timeout (30 s by default).
pub const EFFECT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Upper bounds, in seconds, of the timer lag histogram: timers fire within milliseconds of their
/// due time, and hours late after the engine was down.
pub const TIMER_LAG_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];
/// Upper bounds, in seconds, of the bulk acknowledgement histogram: a few items share one group
/// commit; a thousand-item import takes many, up to the shim's 30 s request timeout.
pub const BULK_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the batch size histogram, in events per commit (powers of two up to 1024).
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The signal kinds, the `kind` label of the signal series, in the order of [`Metrics::signals`]
/// and [`Metrics::signal_ack`].
pub const SIGNAL_KINDS: [&str; 3] = ["activate", "extend", "deactivate"];
/// The effect outcomes, the `outcome` label of the effect series, in the order of
/// [`Metrics::effect_duration`].
pub const EFFECT_OUTCOMES: [&str; 2] = ["ok", "failed"];

/// What the target answered an inspection (the `answer` label of the inspection series), in
/// the order of [`Metrics::inspections`]; `not_asked`: the connection's access was moving
/// (ACTIVATING, DEACTIVATING) or it is not governed (NA), so nothing was asked.
pub const INSPECTION_ANSWERS: [&str; 5] = ["held", "not_held", "unknown", "failed", "not_asked"];
/// The drift kinds (the `kind` label of the drift series), in the order of
/// [`Metrics::drift_found`]: `jitflow_core::lifecycle::Drift::as_str`.
pub const DRIFT_KINDS: [&str; 2] = ["unexpected_access", "missing_access"];

/// A histogram with fixed buckets, recorded with atomics only.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound and a last one for `+Inf`; not cumulative, so an observation is one
    /// add (the encoder sums them).
    buckets: Box<[AtomicU64]>,
    /// The sum of the observations, as an `f64`'s bits.
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Counts one value.
    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        // A compare-and-swap loop, not a lock: a writer is never parked by a scrape.
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    /// Counts one duration, in seconds.
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(duration.as_secs_f64());
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the values counted.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> fmt::Result {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total as read, so `_count` always equals the `+Inf` bucket.
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// What the engine records. Counters are monotonic; `effects_in_flight` is a gauge.
#[derive(Debug)]
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
    /// Signals accepted, by [`SIGNAL_KINDS`].
    pub signals: [AtomicU64; 3],
    /// Timers fired.
    pub timers_fired: AtomicU64,
    /// Effects that succeeded.
    pub effects_ok: AtomicU64,
    /// Effects that failed.
    pub effects_failed: AtomicU64,
    /// Commit latency, in seconds ([`LATENCY_BUCKETS`]).
    pub commit_duration: Histogram,
    /// Events per commit ([`BATCH_BUCKETS`]).
    pub commit_batch: Histogram,
    /// From an accepted signal's call to its durable answer, in seconds, by [`SIGNAL_KINDS`]
    /// ([`LATENCY_BUCKETS`]).
    pub signal_ack: [Histogram; 3],
    /// From a bulk call to its answer (every item durable or refused on its own), in seconds,
    /// by [`bulk::Kind::ALL`](crate::bulk::Kind::ALL) ([`BULK_BUCKETS`]); calls refused as a
    /// whole are not counted.
    pub bulk_ack: [Histogram; 6],
    /// How late each timer was sent to the writer: fire time minus due time on the engine's
    /// clock, in seconds ([`TIMER_LAG_BUCKETS`]).
    pub timer_fire_lag: Histogram,
    /// Grant, revoke and validate calls to the target systems, in seconds, by
    /// [`EFFECT_OUTCOMES`] ([`EFFECT_BUCKETS`]).
    pub effect_duration: [Histogram; 2],
    /// Calls to the target systems under way.
    pub effects_in_flight: AtomicU64,
    /// Notifications the notifier delivered (answered `Ok`).
    pub notices_delivered: AtomicU64,
    /// Failed tries to deliver a notification, by [`NotifyErrorKind::ALL`].
    pub notice_failures: [AtomicU64; 4],
    /// The last log sequence the notifier has passed (delivered, or carrying no notice).
    pub notifier_position: AtomicU64,
    /// The commit time (UTC ms) of the notification being delivered; 0 when none is waiting.
    pub notice_pending_since: AtomicU64,
    /// Connections looked at by reconciliation (the background pass and `Engine::reconcile`),
    /// by [`INSPECTION_ANSWERS`].
    pub inspections: [AtomicU64; 5],
    /// Drift committed, by [`DRIFT_KINDS`].
    pub drift_found: [AtomicU64; 2],
    /// Background reconciliation passes completed.
    pub reconcile_passes: AtomicU64,
    /// Connections done in the current pass (counted from its saved position after a restart).
    pub reconcile_progress: AtomicU64,
    /// 1 while a pass walks the connections, 0 while it waits for its interval (or is off).
    pub reconcile_running: AtomicU64,
    /// The pass's inspections in flight.
    pub reconcile_in_flight: AtomicU64,
    /// Connections of the last completed pass.
    pub reconcile_last_connections: AtomicU64,
    /// How long the last completed pass took, in ms, from its start (or its resumption after a
    /// restart) to its end.
    pub reconcile_last_millis: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            commits: AtomicU64::new(0),
            events: AtomicU64::new(0),
            commit_micros: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            signals: Default::default(),
            timers_fired: AtomicU64::new(0),
            effects_ok: AtomicU64::new(0),
            effects_failed: AtomicU64::new(0),
            commit_duration: Histogram::new(LATENCY_BUCKETS),
            commit_batch: Histogram::new(BATCH_BUCKETS),
            signal_ack: SIGNAL_KINDS.map(|_| Histogram::new(LATENCY_BUCKETS)),
            bulk_ack: crate::bulk::Kind::ALL.map(|_| Histogram::new(BULK_BUCKETS)),
            timer_fire_lag: Histogram::new(TIMER_LAG_BUCKETS),
            effect_duration: EFFECT_OUTCOMES.map(|_| Histogram::new(EFFECT_BUCKETS)),
            effects_in_flight: AtomicU64::new(0),
            notices_delivered: AtomicU64::new(0),
            notice_failures: Default::default(),
            notifier_position: AtomicU64::new(0),
            notice_pending_since: AtomicU64::new(0),
            inspections: Default::default(),
            drift_found: Default::default(),
            reconcile_passes: AtomicU64::new(0),
            reconcile_progress: AtomicU64::new(0),
            reconcile_running: AtomicU64::new(0),
            reconcile_in_flight: AtomicU64::new(0),
            reconcile_last_connections: AtomicU64::new(0),
            reconcile_last_millis: AtomicU64::new(0),
        }
    }
}

/// A call to a target system under way: counted in flight until dropped.
pub(crate) struct EffectCall {
    metrics: Arc<Metrics>,
    started: Instant,
}

impl EffectCall {
    /// The call answered: counts its outcome and its latency.
    pub(crate) fn finish(self, ok: bool) {
        self.metrics.effect(ok);
        self.metrics.effect_duration[usize::from(!ok)].observe_duration(self.started.elapsed());
    }
}

impl Drop for EffectCall {
    /// Also when the call was abandoned (shutdown): it is no longer in flight.
    fn drop(&mut self) {
        self.metrics
            .effects_in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub(crate) fn command(&self, kind: &str, accepted: bool) {
        if accepted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            if let Some(i) = SIGNAL_KINDS.iter().position(|k| *k == kind) {
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
        self.commit_duration.observe_duration(latency);
        self.commit_batch.observe(events as f64);
    }

    pub(crate) fn commit_failed(&self) {
        self.commit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An accepted signal of this kind was answered `latency` after the call.
    pub(crate) fn signal_acked(&self, kind: &str, latency: Duration) {
        if let Some(i) = SIGNAL_KINDS.iter().position(|k| *k == kind) {
            self.signal_ack[i].observe_duration(latency);
        }
    }

    /// A bulk call of this kind answered `latency` after the call.
    pub(crate) fn bulk_acked(&self, kind: crate::bulk::Kind, latency: Duration) {
        if let Some(i) = crate::bulk::Kind::ALL.iter().position(|k| *k == kind) {
            self.bulk_ack[i].observe_duration(latency);
        }
    }

    /// A timer due at `due` was fired at `now`.
    pub(crate) fn timer_fired(&self, due: Timestamp, now: Timestamp) {
        let late_ms = now.as_millis().saturating_sub(due.as_millis());
        self.timer_fire_lag.observe(late_ms as f64 / 1e3);
    }

    /// An effect that is not a call (an access request item's deactivation, which waits for its
    /// connection): its outcome only.
    pub(crate) fn effect(&self, ok: bool) {
        if ok {
            self.effects_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.effects_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A call to a target system starts.
    pub(crate) fn effect_call(self: &Arc<Self>) -> EffectCall {
        self.effects_in_flight.fetch_add(1, Ordering::Relaxed);
        EffectCall {
            metrics: Arc::clone(self),
            started: Instant::now(),
        }
    }
}

impl Metrics {
    /// A notification committed at `at` waits for delivery (it is the oldest that does: they
    /// are delivered in order).
    pub(crate) fn notice_pending(&self, at: Timestamp) {
        // 0 means "none"; an event at the epoch itself is 1 ms late at worst.
        self.notice_pending_since
            .store(at.as_millis().max(1), Ordering::Relaxed);
    }

    /// A try to deliver the pending notification failed.
    pub(crate) fn notice_failed(&self, kind: NotifyErrorKind) {
        if let Some(i) = NotifyErrorKind::ALL.iter().position(|k| *k == kind) {
            self.notice_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The pending notification was delivered.
    pub(crate) fn notice_delivered(&self) {
        self.notices_delivered.fetch_add(1, Ordering::Relaxed);
        self.notice_pending_since.store(0, Ordering::Relaxed);
    }

    /// The notifier has passed the log event `sequence`.
    pub(crate) fn notifier_passed(&self, sequence: u64) {
        self.notifier_position.store(sequence, Ordering::Relaxed);
    }
}

impl Metrics {
    /// An inspection answered `answer` (one of [`INSPECTION_ANSWERS`]).
    pub(crate) fn inspected(&self, answer: &str) {
        if let Some(i) = INSPECTION_ANSWERS.iter().position(|a| *a == answer) {
            self.inspections[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drift of this kind was committed.
    pub(crate) fn drift(&self, drift: jitflow_core::lifecycle::Drift) {
        if let Some(i) = DRIFT_KINDS.iter().position(|k| *k == drift.as_str()) {
            self.drift_found[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A pass ended after `connections` connections and `took` (in this process).
    pub(crate) fn pass_finished(&self, connections: u64, took: Duration) {
        self.reconcile_passes.fetch_add(1, Ordering::Relaxed);
        self.reconcile_last_connections
            .store(connections, Ordering::Relaxed);
        let millis = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.reconcile_last_millis.store(millis, Ordering::Relaxed);
    }
}

/// The gauges a scrape reads from the store and the writer's queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gauges {
    /// Exact and constant time, the stuck gauge included: the store counts those tables.
    backlog: jitflow_store::read::Backlog,
    /// How far the earliest armed timer is past its due time, in milliseconds (0 when none is
    /// overdue).
    timer_lag_ms: u64,
    store: jitflow_store::Stats,
    writer_queue: u64,
    /// How long the oldest undelivered notification has waited since its commit, in ms.
    notice_lag_ms: u64,
    health: HealthGauges,
}

/// The writer's health figures (see `crate::heal`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HealthGauges {
    degraded: bool,
    reopen_attempts: u64,
    unavailable_seconds: f64,
}

impl HealthGauges {
    pub(crate) fn read(health: &crate::heal::Shared) -> HealthGauges {
        HealthGauges {
            degraded: matches!(health.health(), crate::Health::Degraded { .. }),
            reopen_attempts: health
                .reopen_attempts
                .load(std::sync::atomic::Ordering::Relaxed),
            unavailable_seconds: health.unavailable_seconds(),
        }
    }
}

impl Gauges {
    /// These gauges with the writer's queue depth and health as they are now (the store's
    /// figures stay those of the read: a scrape while the store is being reopened serves the
    /// last ones read).
    pub(crate) fn with_writer(self, writer_queue: u64, health: HealthGauges) -> Gauges {
        Gauges {
            writer_queue,
            health,
            ..self
        }
    }

    /// Reads the gauges; `writer_queue` is the writer's queue depth.
    pub(crate) fn read(
        store: &Store,
        metrics: &Metrics,
        now: Timestamp,
        writer_queue: u64,
    ) -> Result<Gauges, jitflow_store::read::Error> {
        let reader = store.reader()?;
        // Exact and constant time: redb keeps each table's length.
        let backlog = reader.backlog()?;
        let timer_lag_ms = reader
            .due_timers(None, None, 1)?
            .first()
            .map_or(0, |t| now.as_millis().saturating_sub(t.due().as_millis()));
        let pending_since = metrics.notice_pending_since.load(Ordering::Relaxed);
        let notice_lag_ms = if pending_since == 0 {
            0
        } else {
            now.as_millis().saturating_sub(pending_since)
        };
        Ok(Gauges {
            backlog,
            timer_lag_ms,
            store: store.stats(),
            writer_queue,
            notice_lag_ms,
            health: HealthGauges::default(),
        })
    }
}

/// One scrape: the recorded metrics and the gauges read for it, as a `prometheus-client`
/// collector.
#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    gauges: Gauges,
}

/// Encodes one metric without labels.
fn one(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?)
}

/// Encodes a metric with one label, one series per value.
fn by<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    label: &str,
    series: &[(&str, &M)],
) -> fmt::Result {
    let Some((_, first)) = series.first() else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), first.metric_type())?;
    for (value, metric) in series {
        metric.encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

fn counter(c: &AtomicU64) -> ConstCounter {
    ConstCounter::new(c.load(Ordering::Relaxed))
}

fn gauge(value: u64) -> ConstGauge<u64> {
    ConstGauge::new(value)
}

fn events() -> Option<Unit> {
    Some(Unit::Other("events".to_owned()))
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        let m = &*self.metrics;
        let g = &self.gauges;
        let seconds = || Some(Unit::Seconds);
        one(
            &mut e,
            "commits",
            "Transactions committed.",
            None,
            &counter(&m.commits),
        )?;
        one(
            &mut e,
            "commit_failures",
            "Commits that failed (outcome unknown).",
            None,
            &counter(&m.commit_failures),
        )?;
        one(
            &mut e,
            "events",
            "Events committed.",
            None,
            &counter(&m.events),
        )?;
        one(
            &mut e,
            "commit",
            "Time spent committing.",
            seconds(),
            &ConstCounter::new(m.commit_micros.load(Ordering::Relaxed) as f64 / 1e6),
        )?;
        one(
            &mut e,
            "commit_duration",
            "Latency of each commit (the append and its fsync).",
            seconds(),
            &m.commit_duration,
        )?;
        one(
            &mut e,
            "commit_batch",
            "Events per commit (group commit's batch size).",
            events(),
            &m.commit_batch,
        )?;
        by(
            &mut e,
            "commands",
            "Commands by outcome.",
            None,
            "outcome",
            &[
                ("accepted", &counter(&m.accepted)),
                ("refused", &counter(&m.refused)),
            ],
        )?;
        let signals = m.signals.each_ref().map(counter);
        let signals: Vec<_> = SIGNAL_KINDS.iter().copied().zip(&signals).collect();
        by(
            &mut e,
            "signals",
            "Activation signals accepted, by kind.",
            None,
            "kind",
            &signals,
        )?;
        let acks: Vec<_> = SIGNAL_KINDS.iter().copied().zip(&m.signal_ack).collect();
        by(
            &mut e,
            "signal_ack_duration",
            "From an accepted signal's call to its durable answer, by kind.",
            seconds(),
            "kind",
            &acks,
        )?;
        let bulk: Vec<_> = crate::bulk::Kind::ALL
            .iter()
            .map(|k| k.as_str())
            .zip(&m.bulk_ack)
            .collect();
        by(
            &mut e,
            "bulk_ack_duration",
            "From a bulk call (import, type changes, access request submission, bulk approve, cancel and close) to its answer, by kind.",
            seconds(),
            "kind",
            &bulk,
        )?;
        one(
            &mut e,
            "timers_fired",
            "Timers fired.",
            None,
            &counter(&m.timers_fired),
        )?;
        one(
            &mut e,
            "timer_fire_lag",
            "How late each timer fired: fire time minus due time.",
            seconds(),
            &m.timer_fire_lag,
        )?;
        by(
            &mut e,
            "effects",
            "Grant, revoke and validate calls, by outcome.",
            None,
            "outcome",
            &[
                (EFFECT_OUTCOMES[0], &counter(&m.effects_ok)),
                (EFFECT_OUTCOMES[1], &counter(&m.effects_failed)),
            ],
        )?;
        let calls: Vec<_> = EFFECT_OUTCOMES
            .iter()
            .copied()
            .zip(&m.effect_duration)
            .collect();
        by(
            &mut e,
            "effect_duration",
            "Latency of grant, revoke and validate calls, by outcome.",
            seconds(),
            "outcome",
            &calls,
        )?;
        one(
            &mut e,
            "effects_in_flight",
            "Grant, revoke and validate calls under way.",
            None,
            &gauge(m.effects_in_flight.load(Ordering::Relaxed)),
        )?;
        one(
            &mut e,
            "notifications_delivered",
            "Notifications the notifier delivered.",
            None,
            &counter(&m.notices_delivered),
        )?;
        let failures = m.notice_failures.each_ref().map(counter);
        let failures: Vec<_> = NotifyErrorKind::ALL
            .iter()
            .map(|k| k.as_str())
            .zip(&failures)
            .collect();
        by(
            &mut e,
            "notification_failures",
            "Failed tries to deliver a notification (each is tried again), by reason.",
            None,
            "reason",
            &failures,
        )?;
        one(
            &mut e,
            "notification_backlog",
            "Log events committed after the notifier's position: the notifications committed but not yet delivered are among them.",
            events(),
            &gauge(
                g.store
                    .sequence
                    .saturating_sub(m.notifier_position.load(Ordering::Relaxed)),
            ),
        )?;
        one(
            &mut e,
            "notification_lag",
            "How long the oldest undelivered notification has waited since its commit (0 when none waits).",
            seconds(),
            &ConstGauge::new(g.notice_lag_ms as f64 / 1e3),
        )?;
        one(
            &mut e,
            "writer_queue_depth",
            "Requests queued for the writer.",
            None,
            &gauge(g.writer_queue),
        )?;
        one(
            &mut e,
            "timers_pending",
            "Armed timers (activations' and access request items').",
            None,
            &gauge(g.backlog.timers),
        )?;
        by(
            &mut e,
            "effects_pending",
            "Connections and access request items with effects in flight or waiting to retry.",
            None,
            "of",
            &[
                ("connection", &gauge(g.backlog.connection_intents)),
                ("request_item", &gauge(g.backlog.item_intents)),
            ],
        )?;
        one(
            &mut e,
            "timer_lag",
            "How far the earliest armed timer is past its due time (0 when none is overdue).",
            seconds(),
            &ConstGauge::new(g.timer_lag_ms as f64 / 1e3),
        )?;
        one(
            &mut e,
            "stuck_activations",
            "Connections (a JIT activation or a standing revoke) and access request items whose revoke keeps failing past the bound (exact).",
            None,
            &gauge(g.backlog.stuck),
        )?;
        let s = &g.store;
        one(
            &mut e,
            "store_layer_entries",
            "Rows in the store's hot layer (changed since the last checkpoint).",
            None,
            &gauge(s.layer_entries),
        )?;
        one(
            &mut e,
            "store_layer",
            "Key and value bytes in the store's hot layer.",
            Some(Unit::Bytes),
            &gauge(s.layer_bytes),
        )?;
        one(
            &mut e,
            "store_checkpoint_lag",
            "Events committed since the last checkpoint (the open replays them after a crash).",
            events(),
            &gauge(s.sequence.saturating_sub(s.checkpoint)),
        )?;
        one(
            &mut e,
            "store_checkpoints",
            "Checkpoints written since the engine started.",
            None,
            &ConstCounter::new(s.checkpoints),
        )?;
        one(
            &mut e,
            "store_checkpoint_rows",
            "Rows written by checkpoints since the engine started.",
            None,
            &ConstCounter::new(s.checkpoint_rows),
        )?;
        one(
            &mut e,
            "store_checkpoint",
            "Key and value bytes written by checkpoints since the engine started.",
            Some(Unit::Bytes),
            &ConstCounter::new(s.checkpoint_bytes),
        )?;
        one(
            &mut e,
            "store_last_checkpoint",
            "How long the last checkpoint took (the writer waits for it).",
            seconds(),
            &ConstGauge::new(s.last_checkpoint_micros as f64 / 1e6),
        )?;
        let inspections = m.inspections.each_ref().map(counter);
        let inspections: Vec<_> = INSPECTION_ANSWERS
            .iter()
            .copied()
            .zip(&inspections)
            .collect();
        by(
            &mut e,
            "inspections",
            "Connections looked at by reconciliation (the background pass and Engine::reconcile), by the target's answer (not_asked: access moving, or not governed).",
            None,
            "answer",
            &inspections,
        )?;
        let drift = m.drift_found.each_ref().map(counter);
        let drift: Vec<_> = DRIFT_KINDS.iter().copied().zip(&drift).collect();
        by(
            &mut e,
            "drift_found",
            "Drift committed (a DriftFound event), by kind.",
            None,
            "kind",
            &drift,
        )?;
        one(
            &mut e,
            "reconcile_passes",
            "Background reconciliation passes completed.",
            None,
            &counter(&m.reconcile_passes),
        )?;
        let connections = || Some(Unit::Other("connections".to_owned()));
        one(
            &mut e,
            "reconcile_pass_progress",
            "Connections done in the current reconciliation pass.",
            connections(),
            &gauge(m.reconcile_progress.load(Ordering::Relaxed)),
        )?;
        one(
            &mut e,
            "reconcile_pass_running",
            "1 while a reconciliation pass walks the connections, 0 while it waits (or is off).",
            None,
            &gauge(m.reconcile_running.load(Ordering::Relaxed)),
        )?;
        one(
            &mut e,
            "reconcile_inspections_in_flight",
            "The reconciliation pass's inspections under way.",
            None,
            &gauge(m.reconcile_in_flight.load(Ordering::Relaxed)),
        )?;
        one(
            &mut e,
            "reconcile_last_pass",
            "Connections of the last completed reconciliation pass.",
            connections(),
            &gauge(m.reconcile_last_connections.load(Ordering::Relaxed)),
        )?;
        one(
            &mut e,
            "reconcile_last_pass_duration",
            "How long the last completed reconciliation pass took (since its start or its resumption after a restart).",
            seconds(),
            &ConstGauge::new(m.reconcile_last_millis.load(Ordering::Relaxed) as f64 / 1e3),
        )?;
        let h = &g.health;
        one(
            &mut e,
            "writer_degraded",
            "1 while a write failed and the engine has not written again (signals get 503).",
            None,
            &gauge(u64::from(h.degraded)),
        )?;
        one(
            &mut e,
            "store_reopen_attempts",
            "Attempts to reopen the store in place after a failed write.",
            None,
            &ConstCounter::new(h.reopen_attempts),
        )?;
        one(
            &mut e,
            "writes_unavailable",
            "Time spent unable to write since the engine started (the current outage included).",
            seconds(),
            &ConstCounter::new(h.unavailable_seconds),
        )
    }
}

/// Every series, named `jitflow_*`, in the Prometheus text format.
pub(crate) fn encode(metrics: Arc<Metrics>, gauges: Gauges) -> String {
    let mut registry = Registry::with_prefix("jitflow");
    registry.register_collector(Box::new(Scrape { metrics, gauges }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_counts_in_the_first_bucket_that_bounds_it_and_the_text_is_cumulative() {
        let histogram = Histogram::new(&[1.0, 2.0]);
        for value in [0.5, 1.0, 1.5, 7.0] {
            histogram.observe(value);
        }
        assert_eq!(histogram.count(), 4);
        assert_eq!(histogram.sum(), 10.0);
        let mut registry = Registry::default();
        registry.register_with_unit("wait", "Waits.", Unit::Seconds, histogram);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "wait_seconds_bucket{le=\"1\"} 2",
                "wait_seconds_bucket{le=\"2\"} 3",
                "wait_seconds_bucket{le=\"+Inf\"} 4",
                "wait_seconds_sum 10.0",
                "wait_seconds_count 4",
            ]
        );
    }

    #[test]
    fn every_series_is_named_with_the_prefix_and_its_unit() {
        let metrics = Arc::new(Metrics::default());
        metrics.commit(3, Duration::from_millis(2));
        metrics.bulk_acked(crate::bulk::Kind::Import, Duration::from_millis(3));
        metrics.bulk_acked(crate::bulk::Kind::Import, Duration::from_secs(40));
        metrics.notifier_passed(4);
        metrics.notice_failed(NotifyErrorKind::Timeout);
        metrics.notice_failed(NotifyErrorKind::Timeout);
        metrics.notice_delivered();
        metrics.inspected("not_held");
        metrics.drift(jitflow_core::lifecycle::Drift::UnexpectedAccess);
        metrics.pass_finished(12, Duration::from_millis(1500));
        let gauges = Gauges {
            backlog: jitflow_store::read::Backlog::default(),
            timer_lag_ms: 1500,
            store: jitflow_store::Stats {
                last_checkpoint_micros: 250_000,
                sequence: 10,
                ..Default::default()
            },
            writer_queue: 2,
            notice_lag_ms: 2500,
            health: HealthGauges {
                degraded: true,
                reopen_attempts: 3,
                unavailable_seconds: 1.5,
            },
        };
        let text = encode(metrics, gauges);
        for line in [
            "jitflow_commits_total 1",
            "jitflow_events_total 3",
            "jitflow_commit_seconds_total 0.002",
            "jitflow_commit_duration_seconds_bucket{le=\"0.0025\"} 1",
            "jitflow_commit_batch_events_bucket{le=\"2\"} 0",
            "jitflow_commit_batch_events_bucket{le=\"4\"} 1",
            "jitflow_bulk_ack_duration_seconds_bucket{kind=\"import\",le=\"0.0025\"} 0",
            "jitflow_bulk_ack_duration_seconds_bucket{kind=\"import\",le=\"0.005\"} 1",
            "jitflow_bulk_ack_duration_seconds_bucket{kind=\"import\",le=\"30\"} 1",
            "jitflow_bulk_ack_duration_seconds_bucket{kind=\"import\",le=\"+Inf\"} 2",
            "jitflow_bulk_ack_duration_seconds_count{kind=\"close\"} 0",
            "jitflow_timer_lag_seconds 1.5",
            "jitflow_writer_queue_depth 2",
            "jitflow_store_last_checkpoint_seconds 0.25",
            "jitflow_notifications_delivered_total 1",
            "jitflow_notification_failures_total{reason=\"timeout\"} 2",
            "jitflow_notification_failures_total{reason=\"refused\"} 0",
            "jitflow_notification_backlog_events 6",
            "jitflow_notification_lag_seconds 2.5",
            "# TYPE jitflow_store_checkpoint_bytes_total counter",
            "# TYPE jitflow_store_checkpoint_lag_events gauge",
            "jitflow_writer_degraded 1",
            "jitflow_store_reopen_attempts_total 3",
            "jitflow_writes_unavailable_seconds_total 1.5",
            "jitflow_inspections_total{answer=\"not_held\"} 1",
            "jitflow_inspections_total{answer=\"held\"} 0",
            "jitflow_drift_found_total{kind=\"unexpected_access\"} 1",
            "jitflow_drift_found_total{kind=\"missing_access\"} 0",
            "jitflow_reconcile_passes_total 1",
            "jitflow_reconcile_pass_progress_connections 0",
            "jitflow_reconcile_last_pass_connections 12",
            "jitflow_reconcile_last_pass_duration_seconds 1.5",
            "jitflow_reconcile_pass_running 0",
            "jitflow_reconcile_inspections_in_flight 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
