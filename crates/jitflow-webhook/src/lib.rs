//! A jitflow [`Notifier`] that POSTs every notice as signed JSON to one or more HTTP receivers:
//! the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`, `webhook-signature` =
//! `v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>` with a `whsec_` secret), one JSON
//! schema for every notice ([`Message`]).
//!
//! ```no_run
//! # async fn open() -> Result<(), Box<dyn std::error::Error>> {
//! # struct Directory;
//! # impl jitflow::hooks::Provisioner for Directory {
//! #     fn grant(&self, _: jitflow::hooks::EffectRequest) -> jitflow::hooks::BoxFuture<'_, Result<(), jitflow::hooks::ProvisionError>> { Box::pin(async { Ok(()) }) }
//! #     fn revoke(&self, _: jitflow::hooks::EffectRequest) -> jitflow::hooks::BoxFuture<'_, Result<(), jitflow::hooks::ProvisionError>> { Box::pin(async { Ok(()) }) }
//! # }
//! use jitflow_webhook::{Options, Secret, Webhook};
//!
//! let webhook = Webhook::new(Options {
//!     urls: vec!["http://127.0.0.1:9000/jitflow".into()],
//!     secret: Some(Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?),
//!     ..Options::default()
//! })?;
//! let engine = jitflow::Engine::builder("jitflow.redb")
//!     .provisioner(Directory)
//!     .notifier(webhook)
//!     .open()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Delivery
//!
//! The engine hands its notifier one notice at a time, in commit order, from a durable cursor in
//! its log, and moves past a notice only when the notifier says it was delivered; it retries a
//! failure (or a try that outlives `Config::notify_timeout`) after a capped exponential backoff
//! (`notify_retry_base`, `notify_retry_cap`), for ever. This crate's part: a notice counts as
//! delivered when *every* receiver answered 2xx. A retry goes only to the receivers that have
//! not answered 2xx yet, so a receiver that is up gets each notice once while another is down
//! (until a restart of the engine, after which the notices past the saved cursor come again to
//! all; receivers de-duplicate by `webhook-id`). The receivers share the engine's one cursor:
//! a receiver that stays down holds back the others too, and the backlog waits in the log (not
//! in memory), visible as `jitflow_notification_backlog_events` and
//! `jitflow_notification_lag_seconds` in the engine's metrics; failed tries are
//! `jitflow_notification_failures_total{reason}`.
//!
//! Bounds ([`Options`]): the request timeout, the body size, the POSTs in flight at once (one
//! notice's fan-out to the receivers; notices themselves go one at a time, for order), the
//! number of receivers. Redirects are not followed (a 3xx is a failure): a receiver that moved
//! is a configuration error to see, and following one would resend the signed body elsewhere.
//!
//! # Why a crate of its own
//!
//! The engine crate has no HTTP client and no wire format of its own (JSON field names belong to
//! the HTTP layers, as the shim's DTOs do): an embedder that tells people by mail or chat does not
//! build an HTTP client into its engine. This crate adds reqwest (already the workspace's HTTP
//! client, for the shim's key set fetch and the CLI; no new dependency tree), RustCrypto's
//! `hmac` and `sha2` (already in the tree through jsonwebtoken), and `base64`.
//!
//! This build has no TLS (the workspace builds reqwest without it, as for the shim's JWKS
//! fetch): receiver URLs are `http://`. Reach an `https://` receiver through a local
//! TLS-terminating proxy; an `https://` URL is refused when the notifier is built, not at the
//! first delivery.

#![forbid(unsafe_code)]

pub mod message;
pub mod sign;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jitflow::hooks::{
    BoxFuture, Notification, Notifier, NotifyError, NotifyErrorKind, RequestNotification,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use message::Message;
pub use sign::{Secret, SecretError, VerifyError, verify, verify_headers};

/// The most receivers one notifier POSTs to.
pub const MAX_RECEIVERS: usize = 16;
/// The smallest body bound allowed: the minimal form of any notice fits in it.
pub const MIN_BODY_BYTES: usize = 4096;
/// The largest body bound allowed.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// The longest `id_prefix`, in bytes.
pub const MAX_ID_PREFIX: usize = 64;

/// The notifier's settings. Every bound is explicit, with the default stated.
#[derive(Debug, Clone)]
pub struct Options {
    /// The receivers (`http://` URLs, at most [`MAX_RECEIVERS`]); each gets every notice. None:
    /// nothing is sent, and every notice counts as delivered (with `log_delivered`, a log of
    /// notices).
    pub urls: Vec<String>,
    /// The signing secret; required when there is a receiver.
    pub secret: Option<Secret>,
    /// The bound on one POST, from connecting to the answer's status (default 10 s; 10 ms to
    /// 5 min). Keep it below the engine's `notify_timeout` (default 30 s), which bounds the
    /// whole fan-out.
    pub timeout: Duration,
    /// The bound on connecting (default 5 s; at most `timeout`).
    pub connect_timeout: Duration,
    /// The largest body sent, in bytes (default 64 KiB; [`MIN_BODY_BYTES`] to
    /// [`MAX_BODY_BYTES`]). A notice past it is sent without its lists and detail, then in its
    /// minimal form, with `truncated: true`.
    pub max_body: usize,
    /// The most POSTs in flight at once (default 4; 1 to [`MAX_RECEIVERS`]).
    pub max_in_flight: usize,
    /// The start of every message id, `<prefix>_<sequence>` (default `jitflow`; at most
    /// [`MAX_ID_PREFIX`] bytes of `[A-Za-z0-9_-]`). Engines that share a receiver need
    /// different prefixes, since their log sequences overlap.
    pub id_prefix: String,
    /// Log each delivered notice at `info` (the shim's demo mode).
    pub log_delivered: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            urls: Vec::new(),
            secret: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_body: 64 * 1024,
            max_in_flight: 4,
            id_prefix: "jitflow".to_owned(),
            log_delivered: false,
        }
    }
}

/// Why the notifier could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A receiver URL does not parse, is not `http://`, or is too long.
    #[error("notify URL {url}: {reason}")]
    Url {
        /// The URL (cut to 128 characters).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// More than [`MAX_RECEIVERS`] URLs.
    #[error("at most {MAX_RECEIVERS} notify URLs, not {0}")]
    TooManyReceivers(usize),
    /// Receivers without a secret: unsigned notices could be forged by anyone who can reach a
    /// receiver, so the notifier does not send them.
    #[error("a signing secret (whsec_...) is required to send notices")]
    NoSecret,
    /// An option out of its bounds.
    #[error("webhook option {field}: {reason}")]
    Option {
        /// The option.
        field: &'static str,
        /// Its bounds.
        reason: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// One receiver.
#[derive(Debug, Clone)]
struct Receiver {
    url: reqwest::Url,
    /// The URL without its query and credentials, for logs: a token in the query stays out.
    label: String,
}

fn receiver(url: &str) -> Result<Receiver, Error> {
    let refuse = |reason: &str| Error::Url {
        url: url.chars().take(128).collect(),
        reason: reason.to_owned(),
    };
    if url.len() > MAX_URL_LEN {
        return Err(refuse("longer than 2048 bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| refuse(&e.to_string()))?;
    match parsed.scheme() {
        "http" => {}
        "https" => {
            return Err(refuse(
                "this build has no TLS: reach an https receiver through a local TLS-terminating proxy",
            ));
        }
        _ => return Err(refuse("not an http URL")),
    }
    let host = parsed.host_str().ok_or_else(|| refuse("no host"))?;
    let label = match parsed.port() {
        Some(port) => format!("http://{host}:{port}{}", parsed.path()),
        None => format!("http://{host}{}", parsed.path()),
    };
    Ok(Receiver { url: parsed, label })
}

impl Options {
    fn check(&self) -> Result<(), Error> {
        let bad = |field, reason| Err(Error::Option { field, reason });
        if self.urls.len() > MAX_RECEIVERS {
            return Err(Error::TooManyReceivers(self.urls.len()));
        }
        if !self.urls.is_empty() && self.secret.is_none() {
            return Err(Error::NoSecret);
        }
        if self.timeout < Duration::from_millis(10) || self.timeout > Duration::from_secs(300) {
            return bad("timeout", "must be 10ms..=5m");
        }
        if self.connect_timeout.is_zero() || self.connect_timeout > self.timeout {
            return bad(
                "connect_timeout",
                "must be more than zero and at most timeout",
            );
        }
        if !(MIN_BODY_BYTES..=MAX_BODY_BYTES).contains(&self.max_body) {
            return bad("max_body", "must be 4096..=1048576 bytes");
        }
        if !(1..=MAX_RECEIVERS).contains(&self.max_in_flight) {
            return bad("max_in_flight", "must be 1..=16");
        }
        let prefix_ok = !self.id_prefix.is_empty()
            && self.id_prefix.len() <= MAX_ID_PREFIX
            && self
                .id_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !prefix_ok {
            return bad("id_prefix", "must be 1 to 64 of [A-Za-z0-9_-]");
        }
        Ok(())
    }
}

/// Which receivers took the notice being delivered.
#[derive(Debug, Default)]
struct Progress {
    sequence: u64,
    delivered: Vec<bool>,
}

struct Shared {
    client: reqwest::Client,
    receivers: Vec<Receiver>,
    secret: Option<Secret>,
    options: Options,
    limit: Arc<Semaphore>,
    progress: Mutex<Progress>,
}

/// The webhook notifier. Give it to `jitflow::Builder::notifier`.
#[derive(Clone)]
pub struct Webhook {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self
            .shared
            .receivers
            .iter()
            .map(|r| r.label.as_str())
            .collect();
        f.debug_struct("Webhook")
            .field("receivers", &labels)
            .finish_non_exhaustive()
    }
}

/// A failed POST to one receiver.
struct Failure {
    receiver: usize,
    error: NotifyError,
}

impl Webhook {
    /// Checks the options and builds the HTTP client (connections are made at the first
    /// delivery, so a receiver that is down now does not stop the engine from starting).
    pub fn new(options: Options) -> Result<Webhook, Error> {
        options.check()?;
        let receivers = options
            .urls
            .iter()
            .map(|u| receiver(u))
            .collect::<Result<Vec<_>, _>>()?;
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("jitflow-webhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Webhook {
            shared: Arc::new(Shared {
                client,
                limit: Arc::new(Semaphore::new(options.max_in_flight)),
                progress: Mutex::new(Progress {
                    sequence: 0,
                    delivered: vec![false; receivers.len()],
                }),
                receivers,
                secret: options.secret.clone(),
                options,
            }),
        })
    }

    /// The receivers' URLs without query or credentials, in the order given.
    pub fn receivers(&self) -> Vec<String> {
        self.shared
            .receivers
            .iter()
            .map(|r| r.label.clone())
            .collect()
    }

    /// Sends one message to every receiver that has not taken it yet.
    async fn send(&self, message: Message) -> Result<(), NotifyError> {
        let shared = &self.shared;
        let body = message.body(shared.options.max_body).ok_or_else(|| {
            // Unreachable with the checked bounds (the minimal form is well under 4 KiB); a
            // failure here is retried and shows in the metrics rather than losing the notice.
            NotifyError::new(
                NotifyErrorKind::Other,
                format!("notice {} does not fit in max_body", message.id),
            )
        })?;
        let pending: Vec<usize> = {
            let mut progress = lock(&shared.progress);
            if progress.sequence != message.sequence {
                progress.sequence = message.sequence;
                progress.delivered.iter_mut().for_each(|d| *d = false);
            }
            (0..shared.receivers.len())
                .filter(|i| !progress.delivered[*i])
                .collect()
        };
        let failures = if pending.is_empty() {
            Vec::new()
        } else {
            self.post_all(&message, body, pending).await
        };
        if let Some(first) = failures.first() {
            let summary: Vec<String> = failures
                .iter()
                .map(|f| {
                    format!(
                        "{} ({}): {}",
                        shared.receivers[f.receiver].label, f.error.kind, f.error.message
                    )
                })
                .collect();
            return Err(NotifyError::new(
                first.error.kind,
                format!(
                    "notice {} not taken by {} of {} receivers: {}",
                    message.id,
                    failures.len(),
                    shared.receivers.len(),
                    summary.join("; ")
                ),
            ));
        }
        if shared.options.log_delivered {
            info!(
                id = %message.id,
                r#type = %message.kind,
                tenant = %message.tenant,
                receivers = shared.receivers.len(),
                "notice delivered: {}",
                message.message
            );
        }
        Ok(())
    }

    /// POSTs one body to the pending receivers, at most `max_in_flight` at once; marks each
    /// receiver that answered 2xx and returns the failures, in receiver order.
    async fn post_all(
        &self,
        message: &Message,
        body: Vec<u8>,
        pending: Vec<usize>,
    ) -> Vec<Failure> {
        let shared = &self.shared;
        // Whole seconds, as the scheme says; the receivers compare it with their own clock to
        // refuse replays, so it is the wall clock, not the engine's.
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Some(secret) = &shared.secret else {
            // `Options::check` refuses receivers without a secret.
            return Vec::new();
        };
        let signature = secret.sign(&message.id, timestamp, &body);
        let body = Arc::new(body);
        let mut tries = JoinSet::new();
        let mut receivers_of = Vec::with_capacity(pending.len());
        for i in pending {
            let request = shared
                .client
                .post(shared.receivers[i].url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(sign::headers::ID, &message.id)
                .header(sign::headers::TIMESTAMP, timestamp.to_string())
                .header(sign::headers::SIGNATURE, &signature)
                .body(body.as_ref().clone());
            let limit = Arc::clone(&shared.limit);
            let task = tries.spawn(async move {
                // Closed only if the notifier is dropped mid-delivery; then nothing is sent.
                let Ok(_permit) = limit.acquire_owned().await else {
                    return (i, Err(NotifyError::new(NotifyErrorKind::Other, "stopping")));
                };
                (i, post(request).await)
            });
            receivers_of.push((task.id(), i));
        }
        let mut failures = Vec::new();
        while let Some(joined) = tries.join_next().await {
            let (receiver, result) = match joined {
                Ok(done) => done,
                Err(e) => {
                    // A panic in the client: that receiver has not taken the notice.
                    warn!(error = %e, "webhook POST task ended abnormally");
                    let receiver = receivers_of
                        .iter()
                        .find(|(id, _)| *id == e.id())
                        .map_or(0, |(_, i)| *i);
                    failures.push(Failure {
                        receiver,
                        error: NotifyError::new(NotifyErrorKind::Other, e.to_string()),
                    });
                    continue;
                }
            };
            match result {
                Ok(()) => {
                    let mut progress = lock(&shared.progress);
                    if progress.sequence == message.sequence {
                        progress.delivered[receiver] = true;
                    }
                }
                Err(error) => failures.push(Failure { receiver, error }),
            }
        }
        failures.sort_by_key(|f| f.receiver);
        failures
    }
}

/// A poisoned lock only means a panic elsewhere while it was held; the flags stay meaningful.
fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One POST: `Ok` on a 2xx answer.
async fn post(request: reqwest::RequestBuilder) -> Result<(), NotifyError> {
    match request.send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(NotifyError::new(
            NotifyErrorKind::Refused,
            format!("answered {}", response.status()),
        )),
        Err(e) => {
            let kind = if e.is_timeout() {
                NotifyErrorKind::Timeout
            } else if e.is_connect() || e.is_request() {
                NotifyErrorKind::Unreachable
            } else {
                NotifyErrorKind::Other
            };
            Err(NotifyError::new(kind, e.to_string()))
        }
    }
}

impl Notifier for Webhook {
    fn notify(&self, notification: Notification) -> BoxFuture<'_, Result<(), NotifyError>> {
        let message = Message::activation(&notification, &self.shared.options.id_prefix);
        Box::pin(self.send(message))
    }

    fn notify_request(
        &self,
        notification: RequestNotification,
    ) -> BoxFuture<'_, Result<(), NotifyError>> {
        let message = Message::request(&notification, &self.shared.options.id_prefix);
        Box::pin(self.send(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Option<Secret> {
        Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").ok()
    }

    #[test]
    fn options_out_of_bounds_are_refused_by_name() {
        let with = |f: fn(&mut Options)| {
            let mut o = Options {
                urls: vec!["http://127.0.0.1:9/hook".into()],
                secret: secret(),
                ..Options::default()
            };
            f(&mut o);
            Webhook::new(o)
        };
        assert!(with(|_| {}).is_ok());
        assert!(matches!(with(|o| o.secret = None), Err(Error::NoSecret)));
        assert!(matches!(
            with(|o| o.urls = vec!["https://example.invalid/".into()]),
            Err(Error::Url { reason, .. }) if reason.contains("no TLS")
        ));
        assert!(matches!(
            with(|o| o.urls = vec!["ftp://example.invalid/".into()]),
            Err(Error::Url { .. })
        ));
        assert!(matches!(
            with(|o| o.urls = vec!["http://127.0.0.1/".into(); 17]),
            Err(Error::TooManyReceivers(17))
        ));
        for (field, f) in [
            (
                "timeout",
                (|o: &mut Options| o.timeout = Duration::ZERO) as fn(&mut Options),
            ),
            ("connect_timeout", |o| {
                o.connect_timeout = Duration::from_secs(60)
            }),
            ("max_body", |o| o.max_body = 100),
            ("max_in_flight", |o| o.max_in_flight = 0),
            ("id_prefix", |o| o.id_prefix = "no spaces".into()),
        ] {
            assert!(
                matches!(with(f), Err(Error::Option { field: got, .. }) if got == field),
                "{field}"
            );
        }
    }

    #[test]
    fn logs_show_receivers_without_query_or_credentials() {
        let webhook = Webhook::new(Options {
            urls: vec!["http://user:pw@127.0.0.1:9000/hook?token=abc".into()],
            secret: secret(),
            ..Options::default()
        })
        .unwrap();
        assert_eq!(webhook.receivers(), ["http://127.0.0.1:9000/hook"]);
        assert!(!format!("{webhook:?}").contains("abc"));
    }
}
