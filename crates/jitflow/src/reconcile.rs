//! Drift (issue 16): what the target holds, compared with the state, for one connection
//! ([`Engine::reconcile`]) and for every connection in a paced background pass
//! ([`Engine::drift_findings`] lists what was found).
//!
//! **One connection.** `Engine::reconcile` reads the connection, asks
//! `Provisioner::inspect` (bounded by `effect_timeout`), and sends the answer through the
//! writer as `Command::Inspected` with the version it read: the core decides against the state
//! as it is then and refuses a stale inspection, so an inspection never races a grant, a
//! revoke or an activation. What it does on drift (revoke unexpected access; answer missing
//! access by the tenant policy's `on_missing_access`) is the core's.
//!
//! **The pass.** With `Config::reconcile_rate` above 0 the engine walks every tenant's
//! connections in key order (tenant, then id), calling `Engine::reconcile` for each as the
//! system, at most `reconcile_rate` a second and `reconcile_in_flight` at once, then waits
//! `reconcile_interval` and starts again. It is durable work: its position is a named cursor
//! of the log ([`PASS_CURSOR`]: the pass number in the high 32 bits, the connections done in
//! key order in the low 32), saved through the writer every [`SAVE_EVERY`] connections, so a
//! crash resumes the pass near where it was (the connections after the last save are
//! inspected again: an inspection changes nothing unless it disagrees). The position is a
//! count, not a key, because cursors hold a number: connections registered or removed before
//! the position while the engine was down shift it by as many, so that many connections are
//! inspected twice, or wait for the next pass. The end of the last pass is a second cursor
//! ([`FINISHED_CURSOR`], UTC ms), so the interval holds across restarts. Inspections complete
//! in order (the oldest in flight is awaited first), so the saved count never passes a
//! connection whose inspection has not answered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jitflow_core::id::{ActivationId, ConnectionId, TenantId};
use jitflow_core::lifecycle::{Actor, Change, Command, Drift, Rejection, RejectionKind};
use jitflow_core::time::Timestamp;
use jitflow_store::Store;
use jitflow_store::codec::Payload;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::engine::{Caller, Engine, WeakEngine};
use crate::error::{Error, read};
use crate::hooks::{EffectRequest, Holding};
use crate::metrics::Metrics;
use crate::writer::{Op, WriterHandle};

/// The cursor holding the pass's position: pass number << 32 | connections done.
pub(crate) const PASS_CURSOR: &str = "reconcile";
/// The cursor holding when the last pass ended (UTC ms; 0 before the first).
pub(crate) const FINISHED_CURSOR: &str = "reconcile.finished";
/// The pass saves its position after this many connections.
pub const SAVE_EVERY: u64 = 100;
/// Connection keys read at once.
const KEY_PAGE: usize = 1000;
/// How long the pass waits before asking again when the writer is busy or cannot write.
const BACKOFF: Duration = Duration::from_millis(200);

/// What the target said about one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Inspection {
    /// It holds the access.
    Held,
    /// It does not.
    NotHeld,
    /// It cannot tell (or the provisioner cannot ask it).
    Unknown,
    /// The inspection failed or did not answer within `effect_timeout`.
    Failed,
    /// Nothing was asked: the access is moving (ACTIVATING, DEACTIVATING: a grant or revoke in
    /// flight explains any difference) or the engine does not govern it (NA).
    NotAsked,
}

impl Inspection {
    /// The `answer` label of `jitflow_inspections_total`, and the JSON spelling in lower case.
    pub const fn as_str(self) -> &'static str {
        match self {
            Inspection::Held => "held",
            Inspection::NotHeld => "not_held",
            Inspection::Unknown => "unknown",
            Inspection::Failed => "failed",
            Inspection::NotAsked => "not_asked",
        }
    }
}

/// What [`Engine::reconcile`] found and did for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// What the target said.
    pub inspection: Inspection,
    /// The drift committed (a `DriftFound` event), if the target disagreed with the state as
    /// the writer found it.
    pub drift: Option<Drift>,
}

impl Reconciled {
    const fn nothing(inspection: Inspection) -> Reconciled {
        Reconciled {
            inspection,
            drift: None,
        }
    }
}

/// What jitflow did about one drift, as the committed events say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriftResponse {
    /// Unexpected access: revoked like standing access.
    Revoke,
    /// Missing access: recorded and reported only.
    Report,
    /// Missing access: granted again (the policy's `GRANT_AGAIN`).
    GrantAgain,
    /// Missing access: the activation was ended (the policy's `END_ACTIVATION`).
    EndActivation,
}

impl DriftResponse {
    /// The JSON spelling: `REVOKE`, `REPORT`, `GRANT_AGAIN`, `END_ACTIVATION`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DriftResponse::Revoke => "REVOKE",
            DriftResponse::Report => "REPORT",
            DriftResponse::GrantAgain => "GRANT_AGAIN",
            DriftResponse::EndActivation => "END_ACTIVATION",
        }
    }
}

/// One committed `DriftFound` event of a tenant, with what followed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftFinding {
    /// The event's global sequence.
    pub sequence: u64,
    /// When it was found.
    pub at: Timestamp,
    /// Who asked: `System` for the background pass.
    pub actor: Actor,
    /// The connection.
    pub connection: ConnectionId,
    /// The running activation, for missing access.
    pub activation: Option<ActivationId>,
    /// How the target disagreed.
    pub drift: Drift,
    /// What jitflow did about it.
    pub response: DriftResponse,
}

/// A page of [`Engine::drift_findings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftPage {
    /// The tenant's findings among the events scanned, in order.
    pub findings: Vec<DriftFinding>,
    /// The last global sequence scanned: where the next page starts.
    pub next_after: u64,
}

impl Engine {
    /// Compares what the target holds with the state, for one connection (issue 16's drift):
    /// asks [`Provisioner::inspect`](crate::hooks::Provisioner::inspect) and sends its answer
    /// through the writer, which decides against the state as it is then (an inspection that
    /// predates a change of the connection is dropped). Access held where no activation runs is
    /// revoked like standing access, with a durable `DriftFound` event and a notice; access
    /// missing where the state says ACTIVE is recorded and reported, and answered by the
    /// tenant policy's `on_missing_access` (report only, grant again, or end the activation).
    /// A running activation is never revoked by this. The background pass calls this for
    /// every connection.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] with `NotFound` for an unknown connection; the writer's errors.
    pub async fn reconcile(
        &self,
        caller: &Caller,
        connection: ConnectionId,
    ) -> Result<Reconciled, Error> {
        let reconciled = self.inspect_and_decide(caller, connection).await?;
        let metrics = self.metrics();
        metrics.inspected(reconciled.inspection.as_str());
        if let Some(drift) = reconciled.drift {
            metrics.drift(drift);
        }
        Ok(reconciled)
    }

    async fn inspect_and_decide(
        &self,
        caller: &Caller,
        connection: ConnectionId,
    ) -> Result<Reconciled, Error> {
        let c = self
            .connection(&caller.tenant, connection)?
            .ok_or(Rejection::NotFound(connection))?;
        if c.expects_access().is_none() {
            return Ok(Reconciled::nothing(Inspection::NotAsked));
        }
        let request = EffectRequest {
            tenant: caller.tenant.clone(),
            connection: c.spec.clone(),
            activation: c.running_activation().map(|a| a.id),
            attempt: 0,
            idempotency_key: format!("{connection}:inspect:{}", c.version),
        };
        let (provisioner, timeout) = self.inspector();
        let held = match tokio::time::timeout(timeout, provisioner.inspect(request)).await {
            Ok(Ok(Holding::Held)) => true,
            Ok(Ok(Holding::NotHeld)) => false,
            Ok(Ok(Holding::Unknown)) => return Ok(Reconciled::nothing(Inspection::Unknown)),
            Ok(Err(e)) => {
                warn!(%connection, error = %e, "inspection failed");
                return Ok(Reconciled::nothing(Inspection::Failed));
            }
            Err(_) => {
                warn!(%connection, "inspection timed out");
                return Ok(Reconciled::nothing(Inspection::Failed));
            }
        };
        let inspection = if held {
            Inspection::Held
        } else {
            Inspection::NotHeld
        };
        let Some(drift) = c.drift(held) else {
            return Ok(Reconciled::nothing(inspection));
        };
        let command = Command::Inspected {
            held,
            version: c.version,
        };
        match self.connection_command(caller, connection, command).await {
            // The writer decided against this same version, so it found this same drift.
            Ok(_) => {
                warn!(%connection, drift = drift.as_str(), "drift found");
                Ok(Reconciled {
                    inspection,
                    drift: Some(drift),
                })
            }
            Err(Error::Rejected(Rejection::Stale(_))) => Ok(Reconciled::nothing(inspection)),
            Err(e) => Err(e),
        }
    }

    /// The tenant's drift findings (its `DriftFound` events) among the `limit`
    /// (1..=[`MAX_PAGE`](crate::MAX_PAGE)) events after global sequence `after`, with what
    /// followed each. The scan is bounded by `limit` whatever the tenant, as
    /// [`Engine::export`]'s: continue from [`DriftPage::next_after`] until it reaches
    /// [`Engine::last_sequence`].
    pub fn drift_findings(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<DriftPage, Error> {
        let page = self.export(Some(tenant), after, limit)?;
        let mut findings = Vec::new();
        for envelope in &page.events {
            let Payload::Connection(event) = &envelope.payload else {
                continue;
            };
            let Change::DriftFound { drift } = event.change else {
                continue;
            };
            let response = match drift {
                Drift::UnexpectedAccess => DriftResponse::Revoke,
                // The core answers missing access in the same decision: the next event of the
                // same batch, when it is this connection's regrant or deactivation.
                Drift::MissingAccess if envelope.batch_last > envelope.sequence => {
                    let next = read(self.store(), |r| r.event(envelope.sequence + 1))?;
                    match next.map(|n| n.payload) {
                        Some(Payload::Connection(n)) if n.connection == event.connection => {
                            match n.change {
                                Change::RegrantStarted { .. } => DriftResponse::GrantAgain,
                                Change::DeactivationRequested => DriftResponse::EndActivation,
                                _ => DriftResponse::Report,
                            }
                        }
                        _ => DriftResponse::Report,
                    }
                }
                Drift::MissingAccess => DriftResponse::Report,
            };
            findings.push(DriftFinding {
                sequence: envelope.sequence,
                at: event.at,
                actor: event.actor.clone(),
                connection: event.connection,
                activation: event.activation,
                drift,
                response,
            });
        }
        Ok(DriftPage {
            findings,
            next_after: page.next_after,
        })
    }
}

/// Splits the pass cursor into (pass number, connections done).
const fn split(cursor: u64) -> (u64, u64) {
    (cursor >> 32, cursor & 0xffff_ffff)
}

/// The pass cursor of pass `pass` with `done` connections done, both saturating at
/// 4,294,967,295 (a pass of more connections stops saving its progress past that; after that
/// many passes the number stays, which only makes the interval restart from the last end).
fn join(pass: u64, done: u64) -> u64 {
    (pass.min(0xffff_ffff) << 32) | done.min(0xffff_ffff)
}

/// How one connection's reconciliation ended.
enum Step {
    /// Inspected (or gone since the key was read).
    Done,
    /// The engine stopped.
    Stopped,
}

/// The background reconciliation: see the [module documentation](self).
pub(crate) struct Pass {
    /// The engine; the pass stops once every handle is gone.
    pub engine: WeakEngine,
    pub store: Arc<Store>,
    pub writer: WriterHandle,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// Connections per second (above 0).
    pub rate: u32,
    pub interval: Duration,
    pub in_flight: usize,
}

impl Pass {
    /// Runs passes for ever (until the engine stops: the task is then aborted, as a crash
    /// would stop it; the position saved last is where the next start resumes).
    pub(crate) async fn run(self) {
        let (cursor, mut finished) = loop {
            match read(&self.store, |r| {
                Ok((r.cursor(PASS_CURSOR)?, r.cursor(FINISHED_CURSOR)?))
            }) {
                Ok(c) => break c,
                Err(e) => {
                    warn!(error = %e, "reconciliation cannot read its position; it tries again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let (mut pass, mut done) = split(cursor);
        loop {
            // A pass in its middle resumes at once; the next one waits for the interval.
            if done == 0
                && let Some(last) = Timestamp::from_millis(finished).filter(|_| finished > 0)
            {
                self.metrics.reconcile_running.store(0, Ordering::Relaxed);
                self.clock
                    .sleep_until(last.saturating_add(self.interval))
                    .await;
            }
            let Some(ended) = self.walk(pass, done).await else {
                return;
            };
            (pass, done, finished) = (pass + 1, 0, ended);
        }
    }

    /// One pass from `done` connections in; returns when it ended (UTC ms), or `None` when
    /// the engine stopped.
    async fn walk(&self, pass: u64, done: u64) -> Option<u64> {
        let m = &self.metrics;
        m.reconcile_running.store(1, Ordering::Relaxed);
        m.reconcile_progress.store(done, Ordering::Relaxed);
        info!(pass, resumed_at = done, "reconciliation pass starts");
        let started = tokio::time::Instant::now();
        let mut position = self.skip(done).await?;
        let paced_from = tokio::time::Instant::now();
        let mut completed = done;
        let mut saved = done;
        let mut issued = 0u64;
        let mut queue: VecDeque<tokio::task::JoinHandle<Step>> = VecDeque::new();
        loop {
            let page = match read(&self.store, |r| {
                r.connection_keys(position.as_ref().map(|(t, id)| (t, *id)), KEY_PAGE)
            }) {
                Ok(page) => page,
                Err(e) => {
                    warn!(error = %e, "reconciliation cannot read the connections; it tries again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(last) = page.last().cloned() else {
                break;
            };
            for (tenant, id) in page {
                // Paced on the wall clock from the pass's start: a slow stretch is caught up
                // at the rate's pace, never in a burst beyond `in_flight`.
                issued += 1;
                let due =
                    paced_from + Duration::from_secs_f64(issued as f64 / f64::from(self.rate));
                tokio::time::sleep_until(due).await;
                if queue.len() >= self.in_flight {
                    if !self.finish(&mut queue, &mut completed).await {
                        return None;
                    }
                    self.save_every(pass, completed, &mut saved).await;
                }
                let engine = self.engine.clone();
                m.reconcile_in_flight.fetch_add(1, Ordering::Relaxed);
                let metrics = Arc::clone(m);
                queue.push_back(tokio::spawn(async move {
                    let step = one(engine, tenant, id).await;
                    metrics.reconcile_in_flight.fetch_sub(1, Ordering::Relaxed);
                    step
                }));
            }
            position = Some(last);
        }
        while !queue.is_empty() {
            if !self.finish(&mut queue, &mut completed).await {
                return None;
            }
            self.save_every(pass, completed, &mut saved).await;
        }
        // The next pass starts at 0 after the interval; the end time first, so that a crash in
        // between at worst runs the finished pass's tail again.
        let ended = self.clock.now().as_millis();
        self.save(FINISHED_CURSOR, ended).await;
        self.save(PASS_CURSOR, join(pass + 1, 0)).await;
        let took = started.elapsed();
        m.pass_finished(completed, took);
        m.reconcile_progress.store(0, Ordering::Relaxed);
        m.reconcile_running.store(0, Ordering::Relaxed);
        info!(
            pass,
            connections = completed,
            ?took,
            "reconciliation pass done"
        );
        Some(ended)
    }

    /// Awaits the oldest inspection in flight; `false` when the engine stopped.
    async fn finish(
        &self,
        queue: &mut VecDeque<tokio::task::JoinHandle<Step>>,
        completed: &mut u64,
    ) -> bool {
        let Some(oldest) = queue.pop_front() else {
            return true;
        };
        match oldest.await {
            Ok(Step::Done) => {}
            Ok(Step::Stopped) => return false,
            // A panic in the embedder's `inspect`: that connection is skipped.
            Err(e) => warn!(error = %e, "a reconciliation step did not finish"),
        }
        *completed += 1;
        self.metrics
            .reconcile_progress
            .store(*completed, Ordering::Relaxed);
        true
    }

    /// Saves the position once [`SAVE_EVERY`] connections are done since the last save.
    async fn save_every(&self, pass: u64, completed: u64, saved: &mut u64) {
        if completed >= *saved + SAVE_EVERY {
            self.save(PASS_CURSOR, join(pass, completed)).await;
            *saved = completed;
        }
    }

    /// Moves a cursor through the writer and waits until the move is durable. A move that
    /// fails (the writer is down) is not retried: the next save covers it, and a crash before
    /// one only makes the pass inspect some connections again.
    async fn save(&self, name: &'static str, value: u64) {
        let _ = self
            .writer
            .call(Op::Cursor {
                name,
                sequence: value,
            })
            .await;
    }

    /// The key after which the pass resumes having done `done` connections; `None` when the
    /// engine stopped. Reads keys only.
    async fn skip(&self, done: u64) -> Option<Option<(TenantId, ConnectionId)>> {
        let mut position = None;
        let mut left = done;
        while left > 0 {
            let limit = usize::try_from(left).map_or(KEY_PAGE, |l| l.min(KEY_PAGE));
            match read(&self.store, |r| {
                r.connection_keys(position.as_ref().map(|(t, id)| (t, *id)), limit)
            }) {
                Ok(page) => {
                    let Some(last) = page.last().cloned() else {
                        // Fewer connections than the position: the pass's tail is gone.
                        break;
                    };
                    left -= page.len() as u64;
                    position = Some(last);
                }
                Err(e) => {
                    warn!(error = %e, "reconciliation cannot read the connections; it tries again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            // Stop once the engine is gone.
            self.engine.upgrade()?;
        }
        debug!(done, "reconciliation resumes");
        Some(position)
    }
}

/// Reconciles one connection as the system, waiting while the writer is busy or cannot write.
async fn one(engine: WeakEngine, tenant: TenantId, id: ConnectionId) -> Step {
    let caller = Caller {
        tenant,
        actor: Actor::System,
    };
    loop {
        let Some(engine) = engine.upgrade() else {
            return Step::Stopped;
        };
        match engine.reconcile(&caller, id).await {
            Ok(_) => return Step::Done,
            // Removed since its key was read.
            Err(Error::Rejected(r)) if r.kind() == RejectionKind::NotFound => return Step::Done,
            Err(Error::Stopped) => return Step::Stopped,
            Err(Error::Busy(_)) | Err(Error::Unavailable(_)) | Err(Error::OutcomeUnknown(_)) => {}
            Err(e) => {
                warn!(connection = %id, error = %e, "reconciliation skips a connection");
                return Step::Done;
            }
        }
        drop(engine);
        tokio::time::sleep(BACKOFF).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_holds_the_pass_and_the_count_and_only_grows() {
        assert_eq!(split(join(3, 1234)), (3, 1234));
        assert_eq!(split(join(0, 0)), (0, 0));
        assert!(
            join(4, 0) > join(3, u64::MAX),
            "the next pass is past any count"
        );
        assert_eq!(split(join(1, u64::MAX)), (1, 0xffff_ffff));
        assert_eq!(split(join(1 << 40, 7)), (0xffff_ffff, 7));
    }
}
