//! The effect runner: calls the embedder's validator and provisioner for committed intents, and
//! reports each result back through the writer as a command.
//!
//! At most `effects_in_flight` calls run at once. The same effect is never run twice
//! concurrently by one engine; after a crash every intent without a result is found in the
//! store's intents set and run again, with the same idempotency key.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use jitflow_core::connection::Connection;
use jitflow_core::id::{ConnectionId, RequestItemId, TenantId};
use jitflow_core::lifecycle::{Command, Effect};
use jitflow_core::request;
use jitflow_core::time::Timestamp;
use jitflow_store::Store;
use jitflow_store::codec::Payload;
use jitflow_store::intents::Intent;
use jitflow_store::request::ItemIntent;
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{Instrument, debug, info_span, warn};

use crate::engine::Subscription;
use crate::hooks::{
    EffectRequest, Notification, Notifier, NotifyError, NotifyErrorKind, ProvisionError,
    Provisioner, RequestNotification, ValidationRequest, Validator,
};
use crate::metrics::Metrics;
use crate::writer::{Dispatch, Op, Signals, WriterHandle};

/// The most intents read from the store in one rescan page.
const RESCAN_PAGE: usize = 1024;

/// An effect in flight, of either workflow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Running {
    Connection(TenantId, ConnectionId, Effect),
    Item(TenantId, RequestItemId, request::Effect),
}

pub(crate) struct EffectRunner {
    pub store: Arc<Store>,
    pub writer: WriterHandle,
    pub rx: mpsc::Receiver<Dispatch>,
    pub provisioner: Arc<dyn Provisioner>,
    pub validator: Arc<dyn Validator>,
    pub signals: Arc<Signals>,
    pub metrics: Arc<Metrics>,
    pub limit: Arc<Semaphore>,
    pub timeout: std::time::Duration,
    pub shutdown: watch::Receiver<bool>,
}

impl EffectRunner {
    pub async fn run(mut self) {
        let running: Arc<Mutex<HashSet<Running>>> = Default::default();
        // Intents committed before this start (a restart) run first.
        self.rescan(&running).await;
        loop {
            tokio::select! {
                dispatch = self.rx.recv() => match dispatch {
                    Some(d) => self.start(d, &running).await,
                    None => return,
                },
                _ = self.signals.effects_wake.notified() => {
                    if self.signals.effects_overflow.swap(false, Ordering::SeqCst) {
                        self.rescan(&running).await;
                    }
                }
                _ = self.shutdown.changed() => return,
            }
        }
    }

    /// Runs every intent in the store that is not running already.
    async fn rescan(&self, running: &Arc<Mutex<HashSet<Running>>>) {
        self.rescan_connections(running).await;
        self.rescan_items(running).await;
    }

    /// Runs every access request item intent that is not running already.
    async fn rescan_items(&self, running: &Arc<Mutex<HashSet<Running>>>) {
        let mut after: Option<ItemIntent> = None;
        loop {
            let page = match crate::error::read(&self.store, |r| {
                r.request_intents(after.as_ref(), RESCAN_PAGE)
            }) {
                Ok(page) => page,
                Err(e) => {
                    warn!(error = %e, "request intent scan failed");
                    return;
                }
            };
            for ItemIntent { tenant, item: id } in &page {
                let item = match crate::error::read(&self.store, |r| r.request_item(tenant, *id)) {
                    Ok(Some(i)) => i,
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(error = %e, %tenant, %id, "reading an intent's item failed");
                        continue;
                    }
                };
                for effect in item.pending_effects() {
                    let dispatch = Dispatch::Item {
                        tenant: tenant.clone(),
                        item: Box::new(item.clone()),
                        effect,
                    };
                    self.start(dispatch, running).await;
                }
            }
            if page.len() < RESCAN_PAGE {
                return;
            }
            after = page.last().cloned();
        }
    }

    /// Runs every connection intent that is not running already.
    async fn rescan_connections(&self, running: &Arc<Mutex<HashSet<Running>>>) {
        let mut after = None;
        loop {
            let page =
                match crate::error::read(&self.store, |r| r.intents(after.as_ref(), RESCAN_PAGE)) {
                    Ok(page) => page,
                    Err(e) => {
                        warn!(error = %e, "intent scan failed");
                        return;
                    }
                };
            for Intent {
                tenant,
                connection: id,
            } in &page
            {
                let connection = match crate::error::read(&self.store, |r| {
                    r.connection(tenant, *id)
                }) {
                    Ok(Some(c)) => c,
                    Ok(None) => continue,
                    Err(e) => {
                        warn!(error = %e, %tenant, %id, "reading an intent's connection failed");
                        continue;
                    }
                };
                for effect in connection.pending_effects() {
                    let dispatch = Dispatch::Connection {
                        tenant: tenant.clone(),
                        connection: Box::new(connection.clone()),
                        effect,
                    };
                    self.start(dispatch, running).await;
                }
            }
            if page.len() < RESCAN_PAGE {
                return;
            }
            after = page.last().cloned();
        }
    }

    async fn start(&self, dispatch: Dispatch, running: &Arc<Mutex<HashSet<Running>>>) {
        let (tenant, connection, effect) = match dispatch {
            Dispatch::Connection {
                tenant,
                connection,
                effect,
            } => (tenant, connection, effect),
            Dispatch::Item {
                tenant,
                item,
                effect,
            } => return self.start_item(tenant, *item, effect, running).await,
        };
        let key = Running::Connection(tenant.clone(), connection.id(), effect);
        if !running.lock().expect("not poisoned").insert(key.clone()) {
            return;
        }
        let Ok(permit) = Arc::clone(&self.limit).acquire_owned().await else {
            return;
        };
        let provisioner = Arc::clone(&self.provisioner);
        let validator = Arc::clone(&self.validator);
        let writer = self.writer.clone();
        let metrics = Arc::clone(&self.metrics);
        let running = Arc::clone(running);
        let timeout = self.timeout;
        let span = info_span!("effect", ?effect, connection = %connection.id());
        tokio::spawn(
            async move {
                let timing = metrics.effect_call();
                let command = match tokio::time::timeout(
                    timeout,
                    call(&*provisioner, &*validator, &tenant, &connection, effect),
                )
                .await
                {
                    Ok(command) => command,
                    Err(_) => timed_out(&effect, timeout),
                };
                let ok = matches!(
                    command,
                    Command::ValidationPassed { .. }
                        | Command::GrantSucceeded { .. }
                        | Command::RevokeSucceeded { .. }
                        | Command::StandingRevokeSucceeded { .. }
                );
                timing.finish(ok);
                let op = Op::Connection {
                    tenant: tenant.clone(),
                    connection: connection.id(),
                    command,
                };
                match writer.call(op).await {
                    Ok(_) => debug!("result committed"),
                    Err(e) => debug!(error = %e, "result not applied"),
                }
                running.lock().expect("not poisoned").remove(&key);
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// Runs an access request item's effect (see `requests::run_item_effect`) and reports its
    /// result through the writer. A deactivation waits for the connection's own lifecycle, so
    /// it holds no permit while it waits.
    async fn start_item(
        &self,
        tenant: TenantId,
        item: request::Item,
        effect: request::Effect,
        running: &Arc<Mutex<HashSet<Running>>>,
    ) {
        let key = Running::Item(tenant.clone(), item.id(), effect);
        if !running.lock().expect("not poisoned").insert(key.clone()) {
            return;
        }
        let permit = match effect {
            request::Effect::DeactivateJit { .. } => None,
            _ => match Arc::clone(&self.limit).acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => return,
            },
        };
        let runner = crate::requests::ItemEffects {
            store: Arc::clone(&self.store),
            writer: self.writer.clone(),
            provisioner: Arc::clone(&self.provisioner),
            signals: Arc::clone(&self.signals),
            timeout: self.timeout,
            shutdown: self.shutdown.clone(),
        };
        let metrics = Arc::clone(&self.metrics);
        let running = Arc::clone(running);
        let mut shutdown = self.shutdown.clone();
        let span = info_span!("item_effect", ?effect, item = %item.id());
        tokio::spawn(
            async move {
                // A deactivation waits for its connection: no call of its own to time.
                let timing = permit.is_some().then(|| metrics.effect_call());
                let work = async {
                    if let Some(command) = runner.run(&tenant, &item, effect).await {
                        let ok = matches!(
                            command,
                            request::Command::GrantSucceeded { .. }
                                | request::Command::RevokeSucceeded { .. }
                                | request::Command::JitDeactivated { .. }
                        );
                        match timing {
                            Some(timing) => timing.finish(ok),
                            None => metrics.effect(ok),
                        }
                        runner.report(&tenant, item.id(), command).await;
                    }
                };
                // On shutdown the call is abandoned (its intent runs again after a restart),
                // so that nothing keeps the store open.
                tokio::select! {
                    () = work => {}
                    _ = shutdown.changed() => {}
                }
                running.lock().expect("not poisoned").remove(&key);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// The result of a call that did not answer in time: its outcome is unknown.
fn timed_out(effect: &Effect, timeout: std::time::Duration) -> Command {
    let error = format!(
        "no answer within {}",
        jitflow_core::time::format_duration(timeout)
    );
    match *effect {
        Effect::Validate { activation } => Command::ValidationRefused {
            activation,
            reason: format!("validation: {error}"),
        },
        Effect::Grant {
            activation,
            attempt,
        } => Command::GrantFailed {
            activation,
            attempt,
            error,
            retryable: true,
        },
        Effect::Revoke {
            activation,
            attempt,
        } => Command::RevokeFailed {
            activation,
            attempt,
            error,
        },
        Effect::RevokeStanding { attempt } => Command::StandingRevokeFailed { attempt, error },
    }
}

/// Revokes, then ends the account's sessions; a failure of either fails the revoke.
pub(crate) async fn revoke(
    provisioner: &dyn Provisioner,
    request: EffectRequest,
) -> Result<(), ProvisionError> {
    provisioner.revoke(request.clone()).await?;
    provisioner.terminate_sessions(request).await
}

/// Calls the embedder's code for one effect and turns the outcome into a command.
async fn call(
    provisioner: &dyn Provisioner,
    validator: &dyn Validator,
    tenant: &TenantId,
    connection: &Connection,
    effect: Effect,
) -> Command {
    let request = |activation, attempt| EffectRequest {
        tenant: tenant.clone(),
        connection: connection.spec.clone(),
        activation,
        attempt,
        idempotency_key: effect.idempotency_key(connection.id()),
    };
    match effect {
        Effect::Validate { activation } => {
            let Some(a) = connection
                .activation
                .as_ref()
                .filter(|a| a.id == activation)
            else {
                // The activation moved on; the result would be stale anyway.
                return Command::ValidationRefused {
                    activation,
                    reason: "activation no longer current".into(),
                };
            };
            let verdict = validator
                .validate(ValidationRequest {
                    tenant: tenant.clone(),
                    connection: connection.spec.clone(),
                    activation,
                    period: a.period,
                    requested_by: a.requested_by.clone(),
                })
                .await;
            match verdict {
                Ok(()) => Command::ValidationPassed { activation },
                Err(reason) => Command::ValidationRefused { activation, reason },
            }
        }
        Effect::Grant {
            activation,
            attempt,
        } => match provisioner.grant(request(Some(activation), attempt)).await {
            Ok(()) => Command::GrantSucceeded {
                activation,
                attempt,
            },
            Err(e) => Command::GrantFailed {
                activation,
                attempt,
                error: e.message,
                retryable: e.retryable,
            },
        },
        Effect::Revoke {
            activation,
            attempt,
        } => {
            let result = revoke(provisioner, request(Some(activation), attempt)).await;
            match result {
                Ok(()) => Command::RevokeSucceeded {
                    activation,
                    attempt,
                },
                Err(e) => Command::RevokeFailed {
                    activation,
                    attempt,
                    error: e.message,
                },
            }
        }
        Effect::RevokeStanding { attempt } => {
            let result = revoke(provisioner, request(None, attempt)).await;
            match result {
                Ok(()) => Command::StandingRevokeSucceeded { attempt },
                Err(e) => Command::StandingRevokeFailed {
                    attempt,
                    error: e.message,
                },
            }
        }
    }
}

/// A notification of either workflow.
enum Outgoing {
    Connection(Box<Notification>),
    Request(Box<RequestNotification>),
}

impl Outgoing {
    fn deliver<'a>(
        &self,
        notifier: &'a dyn Notifier,
    ) -> crate::hooks::BoxFuture<'a, Result<(), NotifyError>> {
        match self {
            Outgoing::Connection(n) => notifier.notify((**n).clone()),
            Outgoing::Request(n) => notifier.notify_request((**n).clone()),
        }
    }
}

/// What went wrong, for the connection events that report a failure.
fn connection_detail(change: &jitflow_core::lifecycle::Change) -> Option<String> {
    use jitflow_core::lifecycle::Change;
    match change {
        Change::ValidationRefused { reason } => Some(reason.clone()),
        Change::GrantAbandoned { error, .. }
        | Change::RevokeFailed { error, .. }
        | Change::StandingRevokeFailed { error, .. } => Some(error.clone()),
        Change::DriftFound { drift } => Some(
            match drift {
                jitflow_core::lifecycle::Drift::UnexpectedAccess => {
                    "unexpected access: the target holds it with no activation running; it is being revoked"
                }
                jitflow_core::lifecycle::Drift::MissingAccess => {
                    "missing access: jitflow says it is held (ACTIVE), the target does not hold it"
                }
            }
            .to_owned(),
        ),
        _ => None,
    }
}

/// The expiry an event names itself, if it names one.
fn event_expiry(change: &jitflow_core::lifecycle::Change) -> Option<Timestamp> {
    use jitflow_core::lifecycle::Change;
    match change {
        Change::Provisioned { expires_at, .. }
        | Change::Extended { expires_at, .. }
        | Change::ExpiryWarned { expires_at } => Some(*expires_at),
        _ => None,
    }
}

/// The notification a committed event triggers, if any. What the event does not carry (the
/// connection's facts, the activation's expiry, the policy's recipients, an item's approvers)
/// is read as it stands at delivery.
fn outgoing(
    store: &Store,
    envelope: &jitflow_store::codec::Envelope,
    stuck_after: u32,
) -> Option<Outgoing> {
    let tenant = &envelope.tenant;
    match &envelope.payload {
        Payload::Connection(event) => {
            let notice = event.notice(stuck_after)?;
            // A failed read leaves the facts out rather than holding the notice back: the notice
            // itself is what people must hear.
            let (connection, activation, policy) = crate::error::read(store, |r| {
                Ok((
                    r.connection(tenant, event.connection)?,
                    event
                        .activation
                        .map(|a| r.activation(tenant, a))
                        .transpose()?
                        .flatten(),
                    r.policy(tenant)?,
                ))
            })
            .unwrap_or_default();
            Some(Outgoing::Connection(Box::new(Notification {
                tenant: tenant.clone(),
                notice,
                connection: event.connection,
                spec: connection.map(|c| c.spec),
                activation: event.activation,
                expires_at: event_expiry(&event.change).or(activation.and_then(|a| a.expires_at)),
                detail: connection_detail(&event.change),
                recipients: policy
                    .map(|p| p.notification_recipients)
                    .unwrap_or_default(),
                at: event.at,
                sequence: envelope.sequence,
            })))
        }
        Payload::Request(event) => {
            // The item as it stands now: a notice depends on the item only through a removal's
            // reason, which a terminal item keeps.
            let item = crate::error::read(store, |r| r.request_item(tenant, event.item))
                .ok()
                .flatten()?;
            let notice = event.notice(&item, stuck_after)?;
            let detail = match &event.change {
                request::Change::GrantAbandoned { error, .. }
                | request::Change::RevokeFailed { error, .. } => Some(error.clone()),
                _ => None,
            };
            Some(Outgoing::Request(Box::new(RequestNotification {
                tenant: tenant.clone(),
                notice,
                item: event.item,
                approvers: item.approval.approvers,
                spec: item.spec,
                detail,
                at: event.at,
                sequence: envelope.sequence,
            })))
        }
        Payload::Policy(_) | Payload::RequestConfig(_) => None,
    }
}

/// The cursor under which the notifier's position in the log is kept.
pub(crate) const NOTIFIER_CURSOR: &str = "notifier";
/// The most notices delivered before the notifier's position is saved.
const NOTICES_PER_SAVE: u64 = 64;

/// Delivers notifications at least once, in commit order: it follows the committed log from the
/// notifier's durable cursor, hands the notifier one notification at a time, and moves past it
/// only once the notifier answered `Ok`; so after a crash everything past the last saved position
/// is delivered again (each notification carries its event's sequence for de-duplication). The
/// cursor is saved through the writer, never ahead of what was delivered.
pub(crate) struct NoticeDelivery {
    pub events: Subscription,
    pub store: Arc<Store>,
    pub writer: WriterHandle,
    pub notifier: Arc<dyn Notifier>,
    pub metrics: Arc<Metrics>,
    /// The bound on one try (`Config::notify_timeout`).
    pub timeout: std::time::Duration,
    /// The backoff between tries: base and cap.
    pub retry: (std::time::Duration, std::time::Duration),
    /// The stuck bound, to tell a recovered revoke (`Config::stuck_after`).
    pub stuck_after: u32,
    pub shutdown: watch::Receiver<bool>,
}

/// How one delivery ended.
enum Delivered {
    Yes,
    /// The engine is stopping: the position stays before this notice.
    Stopped,
}

impl NoticeDelivery {
    pub(crate) async fn run(mut self) {
        let mut unsaved = 0u64;
        // On shutdown, deliver what is committed, then stop.
        let mut draining = false;
        loop {
            let envelope = if draining {
                match self.events.try_next() {
                    Ok(Some(e)) => e,
                    Ok(None) | Err(_) => return,
                }
            } else {
                tokio::select! {
                    e = self.events.next() => match e {
                        Ok(e) => e,
                        Err(_) => return,
                    },
                    _ = self.shutdown.changed() => {
                        draining = true;
                        continue;
                    }
                }
            };
            if let Some(outgoing) = outgoing(&self.store, &envelope, self.stuck_after) {
                match self.deliver(&outgoing, &envelope, draining).await {
                    Delivered::Yes => unsaved += 1,
                    Delivered::Stopped => return,
                }
            }
            self.metrics.notifier_passed(envelope.sequence);
            // Save the position every so often, and whenever the log is read to its end.
            if unsaved >= NOTICES_PER_SAVE || (unsaved > 0 && self.events.caught_up()) {
                let save = Op::Cursor {
                    name: NOTIFIER_CURSOR,
                    sequence: envelope.sequence,
                };
                // A full queue skips this save: a later one, or a re-delivery after a crash,
                // covers it.
                if self.writer.offer(save) {
                    unsaved = 0;
                }
            }
        }
    }

    /// Tries one notification until the notifier takes it: retried in order, so a notifier
    /// that fails or hangs holds back only notifications, never the lifecycle.
    async fn deliver(
        &mut self,
        outgoing: &Outgoing,
        envelope: &jitflow_store::codec::Envelope,
        draining: bool,
    ) -> Delivered {
        self.metrics.notice_pending(envelope.at());
        let mut attempt = 0u32;
        loop {
            let error =
                match tokio::time::timeout(self.timeout, outgoing.deliver(&*self.notifier)).await {
                    Ok(Ok(())) => {
                        self.metrics.notice_delivered();
                        return Delivered::Yes;
                    }
                    Ok(Err(e)) => e,
                    Err(_) => NotifyError::new(
                        NotifyErrorKind::Timeout,
                        format!("no answer within {:?}", self.timeout),
                    ),
                };
            attempt = attempt.saturating_add(1);
            self.metrics.notice_failed(error.kind);
            warn!(
                sequence = envelope.sequence,
                attempt,
                reason = error.kind.as_str(),
                error = %error.message,
                "notification not delivered; it will be tried again"
            );
            // A stop while draining gives up at once: the position stays before this notice,
            // and the next start delivers it.
            if draining {
                return Delivered::Stopped;
            }
            let pause = jitflow_core::backoff::delay(
                attempt,
                self.retry.0,
                self.retry.1,
                envelope.sequence,
            );
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.shutdown.changed() => return Delivered::Stopped,
            }
        }
    }
}
