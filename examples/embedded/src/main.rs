//! Runs one JIT activation lifecycle end to end and prints every event: register a connection,
//! activate it for 30 minutes, validate, grant (the first try fails and is retried), extend by 15
//! minutes, warn before expiry, expire, revoke.
//!
//! Time is simulated, so the whole lifecycle runs in milliseconds. This demo drives the pure core
//! (`decide`/`evolve`) directly, with an in-process fake target; the durable engine that wraps
//! the same core with a store, a scheduler and effect runners is the next layer.
#![allow(clippy::print_stdout, reason = "a demo whose output is the point")]

use std::error::Error;

use jitflow_core::connection::{Connection, ConnectionSpec, ConnectionType};
use jitflow_core::id::{
    AccountId, ActivationId, ConnectionId, EntitlementId, IdentityId, SourceId,
};
use jitflow_core::lifecycle::{Actor, Command, Config, Context, Effect, decide, evolve};
use jitflow_core::policy::Policy;
use jitflow_core::time::{Minutes, Timestamp};

/// A connection, its clock and the fake target system the effects reach.
struct Demo {
    id: ConnectionId,
    state: Option<Connection>,
    now: Timestamp,
    policy: Policy,
    config: Config,
    /// Whether the target system holds the access.
    granted: bool,
    /// Fail the next grant, to show a retry.
    fail_next_grant: bool,
}

impl Demo {
    fn send(&mut self, actor: &Actor, command: Command) -> Result<(), Box<dyn Error>> {
        let ctx = Context {
            now: self.now,
            actor,
            policy: &self.policy,
            config: &self.config,
        };
        for event in decide(self.id, self.state.as_ref(), &command, &ctx)? {
            self.state = evolve(self.state.take(), &event)?;
            let state = self.state.as_ref().map_or("REMOVED", |c| c.state.as_str());
            println!(
                "{}  {:<24} -> {:<12} arm {:?} cancel {:?} effects {:?} notice {:?}",
                event.at,
                event.change.name(),
                state,
                event
                    .arm
                    .iter()
                    .map(|t| (t.kind, t.due.to_rfc3339()))
                    .collect::<Vec<_>>(),
                event.cancel.iter().map(|t| t.kind).collect::<Vec<_>>(),
                event.effects,
                event.notice(),
            );
        }
        Ok(())
    }

    fn connection(&self) -> &Connection {
        self.state.as_ref().expect("registered")
    }

    /// Runs every pending effect against the fake target and reports the results.
    fn run_effects(&mut self) -> Result<(), Box<dyn Error>> {
        let system = Actor::System;
        while let Some(effect) = self.connection().pending_effects().first().copied() {
            let key = effect.idempotency_key(self.id);
            let result = match effect {
                Effect::Validate { activation } => Command::ValidationPassed { activation },
                Effect::Grant {
                    activation,
                    attempt,
                } if self.fail_next_grant => {
                    self.fail_next_grant = false;
                    println!("    target: grant {key} failed (503)");
                    Command::GrantFailed {
                        activation,
                        attempt,
                        error: "503 Service Unavailable".into(),
                        retryable: true,
                    }
                }
                Effect::Grant {
                    activation,
                    attempt,
                } => {
                    self.granted = true;
                    println!("    target: granted ({key})");
                    Command::GrantSucceeded {
                        activation,
                        attempt,
                    }
                }
                Effect::Revoke {
                    activation,
                    attempt,
                } => {
                    self.granted = false;
                    println!("    target: revoked ({key})");
                    Command::RevokeSucceeded {
                        activation,
                        attempt,
                    }
                }
                Effect::RevokeStanding { attempt } => {
                    self.granted = false;
                    Command::StandingRevokeSucceeded { attempt }
                }
            };
            self.send(&system, result)?;
        }
        Ok(())
    }

    /// Moves the clock to the nearest timer, fires it, and runs the effects it starts.
    fn next_timer(&mut self) -> Result<bool, Box<dyn Error>> {
        let Some(timer) = self.connection().timers().into_iter().min() else {
            return Ok(false);
        };
        self.now = self.now.max(timer.due);
        self.send(&Actor::System, Command::TimerFired(timer))?;
        self.run_effects()?;
        Ok(true)
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let alice = IdentityId::parse("alice")?;
    let user = Actor::Identity(alice.clone());
    let mut policy = Policy::empty("6d38a587-302a-41d1-a3b1-ffae2c25c960".into());
    policy.max_activation_period = Some(Minutes(120));
    policy.default_activation_period = Some(Minutes(60));
    policy.max_extension = Some(Minutes(30));
    policy.default_extension = Some(Minutes(15));
    policy.validate()?;
    let id = ConnectionId::parse("757fb803-9024-5861-e510-83a56e4c5bd3")?;
    let mut demo = Demo {
        id,
        state: None,
        now: Timestamp::parse_rfc3339("2026-11-23T09:00:00Z")?,
        policy,
        config: Config::default(),
        granted: false,
        fail_next_grant: true,
    };
    let spec = ConnectionSpec {
        id,
        identity: alice,
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
    };
    demo.send(&Actor::System, Command::Register(spec))?;
    demo.send(
        &user,
        Command::Activate {
            activation: ActivationId::from_u128(0x8a9b_0c1d_2e3f_4a5b_6c7d_8e9f_0a1b_2c3d),
            period: Some(Minutes(30)),
        },
    )?;
    demo.run_effects()?;
    // The failed grant armed a retry timer; firing it retries the grant.
    demo.next_timer()?;
    demo.send(&user, Command::Extend { by: None })?;
    // Warning, then expiry and revoke.
    while demo.next_timer()? {}
    let c = demo.connection();
    let activation = c.activation.as_ref().expect("activation");
    println!(
        "\nconnection {} is {}; activation {} ended {} at {}; target holds access: {}",
        c.id(),
        c.state.as_str(),
        activation.id,
        activation.status.as_str(),
        activation.ended_at.map_or("-".into(), |t| t.to_rfc3339()),
        demo.granted,
    );
    if demo.granted {
        return Err("access outlived its activation".into());
    }
    Ok(())
}
