//! The scheduler: fires durable timers through the writer.
//!
//! It is a loop over three states: *scan* (read due timers from the store's timer index, in key
//! order, a bounded page at a time), *fire* (send `TimerFired` for each due timer not already in
//! flight), and *sleep* (until the next due time, at most `max_sleep`, or until the writer wakes
//! it because a timer was armed earlier). The store is the truth; the scheduler keeps in memory
//! only the timers it has fired and not yet seen committed, bounded by `timer_window`.
//!
//! When the timers fired and not yet answered reach their bound (`timer_window * 16`, commits
//! lagging), it waits for an answer instead of scanning the same due timers again, so a slow
//! writer costs the scheduler no CPU.
//!
//! A timer never fires early: the scheduler only sends timers whose due time has passed on its
//! clock, and the core refuses a delivery before the due time whatever the clock says. Sleeps are
//! capped so that a suspended host or a wall-clock jump is noticed within `max_sleep`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jitflow_core::lifecycle::Command;
use jitflow_core::request;
use jitflow_core::time::Timestamp;
use jitflow_store::Store;
use jitflow_store::timers::Due;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::error::{Error, read};
use crate::metrics::Metrics;
use crate::writer::{Op, Signals, WriterHandle};

/// A timer fired and not yet seen committed (of a connection or of an access request item).
type InFlight = Due;

/// What a scan leaves the scheduler to wait for.
enum Next {
    /// The next due time after the timers fired (`None`: no timer is armed).
    Due(Option<Timestamp>),
    /// Fired timers not yet answered reached their bound (`window * 16`): wait until one is
    /// answered, rather than scan the same due timers again while commits lag.
    Full,
}

pub(crate) struct Scheduler {
    pub store: Arc<Store>,
    pub writer: WriterHandle,
    pub clock: Arc<dyn Clock>,
    pub signals: Arc<Signals>,
    pub metrics: Arc<Metrics>,
    pub window: usize,
    pub max_sleep: Duration,
    pub shutdown: watch::Receiver<bool>,
}

impl Scheduler {
    pub async fn run(mut self) {
        let in_flight: Arc<std::sync::Mutex<HashSet<InFlight>>> = Default::default();
        let answered = Arc::new(Notify::new());
        let mut failing = false;
        loop {
            if *self.shutdown.borrow() {
                return;
            }
            let now = self.clock.now();
            let next_due = match self.fire_due(now, &in_flight, &answered).await {
                Ok(Next::Due(next)) => {
                    if std::mem::take(&mut failing) {
                        info!("timer scans work again");
                    }
                    next
                }
                Ok(Next::Full) => {
                    tokio::select! {
                        _ = answered.notified() => {}
                        _ = self.shutdown.changed() => return,
                    }
                    continue;
                }
                Err(e) => {
                    // Once per outage, not once per retry (the writer logs its cause).
                    if !std::mem::replace(&mut failing, true) {
                        warn!(error = %e, "timer scan failed; retrying every max_sleep");
                    }
                    Some(now.saturating_add(self.max_sleep))
                }
            };
            let cap = now.saturating_add(self.max_sleep);
            let wake_at = next_due.map_or(cap, |due| due.min(cap));
            self.signals.scheduler_next.store(
                next_due.map_or(u64::MAX, Timestamp::as_millis),
                Ordering::SeqCst,
            );
            tokio::select! {
                _ = self.clock.sleep_until(wake_at) => {}
                _ = self.signals.scheduler_wake.notified() => {}
                _ = self.shutdown.changed() => return,
            }
        }
    }

    /// Fires every due timer not already in flight; returns the next due time after them.
    async fn fire_due(
        &self,
        now: Timestamp,
        in_flight: &Arc<std::sync::Mutex<HashSet<InFlight>>>,
        answered: &Arc<Notify>,
    ) -> Result<Next, Error> {
        let mut after: Option<Due> = None;
        loop {
            let page = read(&self.store, |r| {
                r.due_timers(after.as_ref(), None, self.window)
            })?;
            let full = page.len() == self.window;
            for due in &page {
                if due.due() > now {
                    return Ok(Next::Due(Some(due.due())));
                }
                let key = due.clone();
                {
                    let mut fired = in_flight.lock().expect("not poisoned");
                    // Bound the memory of fired-but-uncommitted timers; the rest fire next round.
                    if fired.len() >= self.window * 16 {
                        return Ok(Next::Full);
                    }
                    if !fired.insert(key.clone()) {
                        continue;
                    }
                }
                let op = match due {
                    Due::Connection(t) => Op::Connection {
                        tenant: t.tenant.clone(),
                        connection: t.connection,
                        command: Command::TimerFired(t.timer),
                    },
                    Due::Item(t) => Op::Request {
                        tenant: t.tenant.clone(),
                        admin: false,
                        commands: vec![(t.item, request::Command::TimerFired(t.timer))],
                    },
                };
                let answer = self.writer.submit(op).await?;
                self.metrics.timer_fired(due.due(), now);
                let in_flight = Arc::clone(in_flight);
                let answered = Arc::clone(answered);
                tokio::spawn(async move {
                    let result = answer.await;
                    debug!(?key, ok = matches!(result, Ok(Ok(_))), "timer delivered");
                    in_flight.lock().expect("not poisoned").remove(&key);
                    // `notify_one` keeps a permit, so a scheduler that starts waiting after
                    // this still wakes.
                    answered.notify_one();
                });
            }
            if !full {
                return Ok(Next::Due(None));
            }
            after = page.last().cloned();
        }
    }
}
