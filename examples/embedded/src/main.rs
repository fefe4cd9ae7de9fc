//! Embeds the jitflow engine and runs one JIT activation lifecycle on a real redb file:
//! register a connection, activate it for 30 minutes (the first grant fails and is retried),
//! extend it by the policy's default 15 minutes, stop the engine, and reopen it 50 minutes later:
//! the overdue expiry fires at once and the access is revoked. It prints every committed event.
//!
//! Time is a manual clock moved by this program, so the whole run takes well under a second; a
//! real deployment uses the default system clock. The store file goes to the directory given as
//! the first argument, or to a temporary directory.
#![allow(clippy::print_stdout, reason = "a demo whose output is the point")]

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jitflow::clock::{Clock, ManualClock};
use jitflow::hooks::{BoxFuture, EffectRequest, ProvisionError, Provisioner};
use jitflow::{Caller, Engine, Payload, Stream};
use jitflow_core::connection::{ConnectionSpec, ConnectionState, ConnectionType};
use jitflow_core::id::{AccountId, ConnectionId, EntitlementId, IdentityId, SourceId, TenantId};
use jitflow_core::lifecycle::Actor;
use jitflow_core::policy::Policy;
use jitflow_core::time::{Minutes, Timestamp};

/// A target system that logs each call; the first grant fails, to show a retry.
#[derive(Default)]
struct LoggingTarget {
    failed_once: AtomicBool,
}

impl Provisioner for LoggingTarget {
    fn grant(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        let fail = !self.failed_once.swap(true, Ordering::SeqCst);
        println!(
            "    target: grant {} to {} ({}){}",
            request.connection.entitlement_name,
            request.connection.account_name,
            request.idempotency_key,
            if fail { ": 503, will retry" } else { "" }
        );
        Box::pin(async move {
            if fail {
                Err(ProvisionError::transient("503 Service Unavailable"))
            } else {
                Ok(())
            }
        })
    }

    fn revoke(&self, request: EffectRequest) -> BoxFuture<'_, Result<(), ProvisionError>> {
        println!(
            "    target: revoke {} from {} ({})",
            request.connection.entitlement_name,
            request.connection.account_name,
            request.idempotency_key
        );
        Box::pin(async { Ok(()) })
    }
}

async fn open(path: &std::path::Path, clock: &ManualClock) -> Result<Engine, Box<dyn Error>> {
    Ok(Engine::builder(path)
        .clock(clock.clone())
        .provisioner(LoggingTarget::default())
        .open()
        .await?)
}

/// Prints every committed event of the engine after `after`, once, until the engine stops.
fn print_events(engine: &Engine, after: u64) -> tokio::task::JoinHandle<()> {
    let mut events = engine.subscribe(after);
    tokio::spawn(async move {
        while let Ok(e) = events.next().await {
            if let Payload::Connection(event) = &e.payload {
                println!(
                    "#{:<3} {}  {:<22} arm {:?} effects {:?}",
                    e.sequence,
                    event.at,
                    event.change.name(),
                    event
                        .arm
                        .iter()
                        .map(|t| (t.kind, t.due.to_rfc3339()))
                        .collect::<Vec<_>>(),
                    event.effects,
                );
            }
        }
    })
}

/// Waits until the connection is in `state`, moving the clock by `step` while it waits (so that
/// retry timers come due), and then until the printer has caught up.
async fn wait_for(
    engine: &Engine,
    caller: &Caller,
    clock: &ManualClock,
    id: ConnectionId,
    state: ConnectionState,
    step: Duration,
) -> Result<(), Box<dyn Error>> {
    let mut events = engine.subscribe(engine.last_sequence()?);
    while engine.connection(&caller.tenant, id)?.map(|c| c.state) != Some(state) {
        clock.advance(step);
        // Wake on the next commit, or look again shortly if nothing is due yet.
        let _ = tokio::time::timeout(Duration::from_millis(20), events.next()).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("embedded.redb");
    let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-11-23T09:00:00Z")?);
    println!("store: {}", path.display());

    let engine = open(&path, &clock).await?;
    let caller = Caller {
        tenant: TenantId::parse("acme")?,
        actor: Actor::Identity(IdentityId::parse("alice")?),
    };
    let mut policy = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
    policy.max_activation_period = Some(Minutes(120));
    policy.default_activation_period = Some(Minutes(60));
    policy.max_extension = Some(Minutes(30));
    policy.default_extension = Some(Minutes(15));
    engine.put_policy(&caller, policy).await?;

    let id = ConnectionId::parse("757fb803-9024-5861-e510-83a56e4c5bd3")?;
    if engine.connection(&caller.tenant, id)?.is_none() {
        engine
            .register(
                &caller,
                ConnectionSpec {
                    id,
                    identity: IdentityId::parse("alice")?,
                    identity_name: "Alice Example".into(),
                    account: AccountId::parse("alice-adm")?,
                    account_name: "alice.adm".into(),
                    entitlement: EntitlementId::parse("domain-admins")?,
                    entitlement_name: "Domain Admins".into(),
                    attribute_name: "memberOf".into(),
                    attribute_value: "CN=Domain Admins,CN=Users,DC=example,DC=com".into(),
                    privilege_level: Some("HIGH".into()),
                    source: SourceId::parse("corp-ad")?,
                    source_name: "Corporate Active Directory".into(),
                    kind: ConnectionType::Jit,
                    standalone: false,
                },
            )
            .await?;
    }
    let printer = print_events(&engine, engine.last_sequence()?);
    let activation = engine
        .activate(
            &caller,
            id,
            Some(Minutes(30)),
            Some("demo-activate-1"),
            None,
        )
        .await?;
    println!(
        "activate -> {} (durable; answered before provisioning)",
        activation.status.as_str()
    );
    // The first grant fails and arms a retry a second or so out: step the clock until ACTIVE.
    wait_for(
        &engine,
        &caller,
        &clock,
        id,
        ConnectionState::Active,
        Duration::from_millis(250),
    )
    .await?;
    let extended = engine.extend(&caller, id, None, None, None).await?;
    println!(
        "extend -> expires {}",
        extended.expires_at.map_or("-".into(), |t| t.to_rfc3339())
    );
    wait_for(
        &engine,
        &caller,
        &clock,
        id,
        ConnectionState::Active,
        Duration::ZERO,
    )
    .await?;

    println!("-- engine stopped; 50 minutes pass while it is down --");
    engine.shutdown().await;
    // Dropping the last handle closes the event stream; the printer then ends and lets go of
    // the store file, which the reopen below needs.
    drop(engine);
    printer.await?;
    clock.advance(Duration::from_secs(50 * 60));
    let engine = open(&path, &clock).await?;
    let printer = print_events(&engine, engine.last_sequence()?);
    println!(
        "-- engine reopened at {}: the overdue expiry fires at once --",
        clock.now()
    );
    wait_for(
        &engine,
        &caller,
        &clock,
        id,
        ConnectionState::Expired,
        Duration::ZERO,
    )
    .await?;

    let c = engine
        .connection(&caller.tenant, id)?
        .ok_or("connection missing")?;
    let a = c.activation.ok_or("activation missing")?;
    println!(
        "\nconnection {} is {}; activation {} ended {} at {}",
        c.spec.id,
        c.state.as_str(),
        a.id,
        a.status.as_str(),
        a.ended_at.map_or("-".into(), |t| t.to_rfc3339())
    );
    let history = engine.history(&caller.tenant, Stream::Activation(a.id), 0, 100)?;
    println!("activation history: {} events", history.len());
    engine.shutdown().await;
    drop(engine);
    printer.await?;
    Ok(())
}
