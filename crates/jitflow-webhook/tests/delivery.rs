//! The webhook notifier against real HTTP receivers on ephemeral ports: signatures verified
//! the way a Standard Webhooks receiver does, a receiver that fails on purpose (503s, then
//! answers too late), a second receiver that never fails, and a restart of the engine on the
//! same file while notices are undelivered. Every notice must arrive, once after
//! de-duplication by id, in commit order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use jitflow::clock::ManualClock;
use jitflow::hooks::{BoxFuture, EffectRequest, ProvisionError, Provisioner};
use jitflow::{Caller, Config, Engine};
use jitflow_core::connection::{ConnectionSpec, ConnectionState, ConnectionType};
use jitflow_core::id::{AccountId, ConnectionId, EntitlementId, IdentityId, SourceId, TenantId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::policy::Policy;
use jitflow_core::time::{Minutes, Timestamp};
use jitflow_webhook::{Message, Options, Secret, Webhook};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// 2027-01-15, in ms since the epoch: the engine's manual clock starts here.
const START: u64 = 1_800_000_000_000;

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Verifies, records and answers 204.
    Accept,
    /// Answers 503 without recording.
    Unavailable,
    /// Answers only after the notifier's timeout, without recording.
    Late,
}

/// What a receiver saw.
#[derive(Debug, Default)]
struct Seen {
    /// Messages accepted (signature valid, answered 2xx), in arrival order.
    accepted: Vec<Message>,
    /// Requests whose signature did not verify.
    forged: usize,
    /// Requests answered with a failure on purpose.
    failed: usize,
    /// `webhook-id` headers that disagreed with the body's `id`.
    id_mismatches: usize,
}

struct Receiver {
    secret: Secret,
    mode: Mutex<Mode>,
    seen: Mutex<Seen>,
}

impl Receiver {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let verified = jitflow_webhook::verify_headers(
        &r.secret,
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        &body,
        300,
    );
    if verified.is_err() {
        r.seen.lock().unwrap().forged += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let mode = *r.mode.lock().unwrap();
    match mode {
        Mode::Unavailable => {
            r.seen.lock().unwrap().failed += 1;
            StatusCode::SERVICE_UNAVAILABLE
        }
        Mode::Late => {
            r.seen.lock().unwrap().failed += 1;
            // Well past the notifier's request timeout: the notifier has given up by then.
            tokio::time::sleep(Duration::from_secs(3)).await;
            StatusCode::NO_CONTENT
        }
        Mode::Accept => {
            let message: Message = match serde_json::from_slice(&body) {
                Ok(m) => m,
                Err(_) => return StatusCode::BAD_REQUEST,
            };
            let mut seen = r.seen.lock().unwrap();
            if message.id != id {
                seen.id_mismatches += 1;
            }
            seen.accepted.push(message);
            StatusCode::NO_CONTENT
        }
    }
}

/// A receiver on an ephemeral port of 127.0.0.1, verifying with `secret`; its URL.
async fn receiver(secret: &str, mode: Mode) -> (Arc<Receiver>, String) {
    let state = Arc::new(Receiver {
        secret: Secret::parse(secret).unwrap(),
        mode: Mutex::new(mode),
        seen: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (state, url)
}

/// A target that grants and revokes at once.
struct Target;

impl Provisioner for Target {
    fn grant(&self, _request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async { Ok(()) })
    }
    fn revoke(&self, _request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        Box::pin(async { Ok(()) })
    }
}

fn config() -> Config {
    Config {
        // Short pauses between tries, so the failures on purpose do not make the test slow.
        notify_retry_base: Duration::from_millis(10),
        notify_retry_cap: Duration::from_millis(100),
        notify_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

async fn open(path: &std::path::Path, clock: &ManualClock, urls: Vec<String>) -> Engine {
    let webhook = Webhook::new(Options {
        urls,
        secret: Some(Secret::parse(SECRET).unwrap()),
        timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        ..Options::default()
    })
    .unwrap();
    Engine::builder(path)
        .config(config())
        .clock(clock.clone())
        .provisioner(Target)
        .notifier(webhook)
        .open()
        .await
        .unwrap()
}

fn caller() -> Caller {
    Caller {
        tenant: TenantId::parse("acme").unwrap(),
        actor: Actor::Identity(IdentityId::parse("alice").unwrap()),
    }
}

fn spec(id: ConnectionId) -> ConnectionSpec {
    ConnectionSpec {
        id,
        identity: IdentityId::parse("alice").unwrap(),
        identity_name: "Alice".into(),
        account: AccountId::parse("alice-adm").unwrap(),
        account_name: "alice.adm".into(),
        entitlement: EntitlementId::parse("domain-admins").unwrap(),
        entitlement_name: "Domain Admins".into(),
        attribute_name: "memberOf".into(),
        attribute_value: "CN=Domain Admins".into(),
        privilege_level: None,
        source: SourceId::parse("ad").unwrap(),
        source_name: "Active Directory".into(),
        kind: ConnectionType::Jit,
        standalone: false,
    }
}

/// Waits (polling, up to a minute: a bound on a hang, not a measure of speed) until `done`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the connection is in `state`.
async fn until_state(engine: &Engine, id: ConnectionId, state: ConnectionState) {
    until(&format!("{state:?}"), || {
        engine
            .connection(&caller().tenant, id)
            .ok()
            .flatten()
            .is_some_and(|c| c.state == state)
    })
    .await;
}

/// The accepted messages with the repeats of an id dropped, as a receiver that de-duplicates
/// keeps them.
fn deduplicated(accepted: &[Message]) -> Vec<Message> {
    let mut ids = std::collections::HashSet::new();
    accepted
        .iter()
        .filter(|m| ids.insert(m.id.clone()))
        .cloned()
        .collect()
}

fn kinds(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.kind.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notice_arrives_once_after_dedup_in_order_through_failures_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jitflow.redb");
    let clock = ManualClock::new(Timestamp::from_millis(START).unwrap());
    let (flaky, flaky_url) = receiver(SECRET, Mode::Unavailable).await;
    let (steady, steady_url) = receiver(SECRET, Mode::Accept).await;
    let urls = vec![flaky_url, steady_url];
    let engine = open(&path, &clock, urls.clone()).await;
    let mut policy = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
    policy.notification_recipients = vec!["owners@example.com".into()];
    engine.put_policy(&caller(), policy).await.unwrap();
    let id = ConnectionId::parse("757fb803-9024-5861-e510-83a56e4c5bd3").unwrap();
    engine.register(&caller(), spec(id)).await.unwrap();

    // Phase 1: the flaky receiver answers 503, then too late; the steady one takes each notice
    // once meanwhile, and the engine's lifecycle does not wait for either.
    engine
        .activate(&caller(), id, Some(Minutes(30)), None, None)
        .await
        .unwrap();
    until_state(&engine, id, ConnectionState::Active).await;
    until("503s", || flaky.seen(|s| s.failed >= 3)).await;
    flaky.set(Mode::Late);
    let failed = flaky.seen(|s| s.failed);
    until("late answers", || flaky.seen(|s| s.failed >= failed + 2)).await;
    assert!(
        flaky.seen(|s| s.accepted.is_empty()),
        "nothing is taken while failing"
    );
    until("the steady receiver's first notice", || {
        steady.seen(|s| !s.accepted.is_empty())
    })
    .await;
    flaky.set(Mode::Accept);
    until("both notices at the flaky receiver", || {
        flaky.seen(|s| s.accepted.len() >= 2)
    })
    .await;
    until("both notices at the steady receiver", || {
        steady.seen(|s| s.accepted.len() >= 2)
    })
    .await;
    assert_eq!(
        kinds(&steady.seen(|s| s.accepted.clone())),
        ["activation.requested", "activation.granted"],
        "a retry goes only to the receivers that have not taken the notice"
    );

    // Phase 2: the warning and the expiry, on the engine's clock.
    clock.advance(Duration::from_secs(25 * 60));
    until("the warning", || flaky.seen(|s| s.accepted.len() >= 3)).await;
    clock.advance(Duration::from_secs(5 * 60));
    until("the expiry", || flaky.seen(|s| s.accepted.len() >= 4)).await;

    // Phase 3: the flaky receiver fails again while an activation runs and is deactivated; the
    // engine stops with those notices undelivered.
    flaky.set(Mode::Unavailable);
    engine
        .activate(&caller(), id, Some(Minutes(30)), None, None)
        .await
        .unwrap();
    until_state(&engine, id, ConnectionState::Active).await;
    engine.deactivate(&caller(), id, None, None).await.unwrap();
    until_state(&engine, id, ConnectionState::Available).await;
    let failed = flaky.seen(|s| s.failed);
    until("a failure after the revoke", || {
        flaky.seen(|s| s.failed > failed)
    })
    .await;
    let scrape = engine.scrape().unwrap();
    let backlog = scrape
        .lines()
        .find_map(|l| l.strip_prefix("jitflow_notification_backlog_events "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(backlog > 0, "undelivered notices are a backlog:\n{scrape}");
    assert!(
        scrape.lines().any(|l| l
            .starts_with("jitflow_notification_failures_total{reason=\"refused\"}")
            && !l.ends_with(" 0")),
        "the 503s are counted:\n{scrape}"
    );
    engine.shutdown().await;
    drop(engine);

    // Phase 4: the same file, a new engine and notifier; the receiver is back.
    flaky.set(Mode::Accept);
    let engine = open(&path, &clock, urls).await;
    until("the undelivered notices after the restart", || {
        deduplicated(&flaky.seen(|s| s.accepted.clone())).len() >= 7
    })
    .await;
    engine.shutdown().await;

    let expected = [
        "activation.requested",
        "activation.granted",
        "activation.expiring",
        "activation.expired",
        "activation.requested",
        "activation.granted",
        "activation.revoked",
    ];
    for (name, r) in [("flaky", &flaky), ("steady", &steady)] {
        let accepted = r.seen(|s| s.accepted.clone());
        let unique = deduplicated(&accepted);
        assert_eq!(
            kinds(&unique),
            expected,
            "{name}: every notice, once, in order"
        );
        assert!(
            unique.windows(2).all(|w| w[0].sequence < w[1].sequence),
            "{name}: in commit order"
        );
        // A repeat is the same notice (a redelivery), never a different one under one id.
        for m in &accepted {
            let first = unique.iter().find(|u| u.id == m.id).unwrap();
            assert_eq!(
                (&first.kind, first.sequence),
                (&m.kind, m.sequence),
                "{name}"
            );
        }
        r.seen(|s| {
            assert_eq!(s.forged, 0, "{name}: every signature verified");
            assert_eq!(s.id_mismatches, 0, "{name}: webhook-id is the body's id");
        });
    }
    let unique = deduplicated(&flaky.seen(|s| s.accepted.clone()));
    let warning = &unique[2];
    assert_eq!(warning.recipients, ["owners@example.com"]);
    assert_eq!(warning.tenant, "acme");
    let connection = warning.connection.as_ref().unwrap();
    assert_eq!(connection.id, id.to_string());
    assert_eq!(
        connection.entitlement_name.as_deref(),
        Some("Domain Admins")
    );
    let expires = warning
        .activation
        .as_ref()
        .unwrap()
        .expires_at
        .clone()
        .unwrap();
    assert!(
        warning.message.contains("Domain Admins") && warning.message.contains(&expires),
        "{}",
        warning.message
    );
    assert!(warning.request_item.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_with_another_secret_refuses_every_notice_and_the_engine_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jitflow.redb");
    let clock = ManualClock::new(Timestamp::from_millis(START).unwrap());
    let other = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let (r, url) = receiver(other, Mode::Accept).await;
    let engine = open(&path, &clock, vec![url]).await;
    let id = ConnectionId::parse("757fb803-9024-5861-e510-83a56e4c5bd3").unwrap();
    engine.register(&caller(), spec(id)).await.unwrap();
    engine
        .activate(&caller(), id, Some(Minutes(30)), None, None)
        .await
        .unwrap();
    until("refusals", || r.seen(|s| s.forged >= 3)).await;
    assert!(r.seen(|s| s.accepted.is_empty()));
    let scrape = engine.scrape().unwrap();
    assert!(
        scrape
            .lines()
            .any(|l| l == "jitflow_notifications_delivered_total 0"),
        "{scrape}"
    );
    engine.shutdown().await;
}
