//! Engine settings, in one struct. Durations are written for people with
//! [`jitflow_core::time::parse_duration`] (`"5m"`, `"1h 30m"`).

use std::time::Duration;

use jitflow_core::id::IdentityId;
use jitflow_core::lifecycle;
use jitflow_core::request::item::{MAX_APPROVAL_WAIT, MAX_APPROVERS, MIN_APPROVAL_WAIT};
use jitflow_core::request::{ApprovalScheme, ApprovalStep};

/// The most commands one group commit takes.
pub const MAX_BATCH: usize = 4096;
/// The most commands that may wait in the writer's queue.
pub const MAX_QUEUE: usize = 1 << 20;

/// Engine settings. Every field has a bound, checked by [`Config::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Grant tries before provisioning gives up (fail closed).
    pub grant_max_attempts: u32,
    /// Revoke tries after which the activation is flagged stuck and a notification sent.
    pub stuck_after: u32,
    /// Delay before the second try of a failed grant or revoke.
    pub retry_base: Duration,
    /// Longest delay between tries.
    pub retry_cap: Duration,
    /// How long before expiry the expiring-soon notification is sent.
    pub warning_lead: Duration,
    /// The most commands committed in one transaction (1..=[`MAX_BATCH`]).
    pub batch_max: usize,
    /// The writer queue's capacity (1..=[`MAX_QUEUE`]); a full queue pushes back on callers.
    pub queue_capacity: usize,
    /// The most grant/revoke/validate calls in flight at once.
    pub effects_in_flight: usize,
    /// How long one grant, revoke or validate call may take. A grant or revoke that times out
    /// counts as a failure of unknown outcome and is retried; a validation that times out refuses
    /// (fail closed).
    pub effect_timeout: Duration,
    /// The most timers the scheduler keeps in memory.
    pub timer_window: usize,
    /// The longest the scheduler sleeps before looking at the clock again, so that a suspended
    /// host or a clock jump is noticed.
    pub max_sleep: Duration,
    /// How long idempotency keys are remembered.
    pub idempotency_ttl: Duration,
    /// Who approves access request items: empty approves every item at once (`approval =
    /// auto`); else any one of these identities (or an admin) approves or rejects each item
    /// (`approval = approvers`, `approvers = bob, carol`), at most
    /// [`MAX_APPROVERS`]. The contract calls such a
    /// list a governance group.
    pub approvers: Vec<IdentityId>,
    /// How long an access request item's approval waits before it expires unanswered
    /// (`approval_timeout = 7d`): one minute to one year.
    pub approval_timeout: Duration,
    /// How long the notifier may take to deliver one notification (10ms..=10m) before the try
    /// counts as failed (a notifier with timeouts of its own, such as the webhook's request
    /// timeout, should keep them below this).
    pub notify_timeout: Duration,
    /// Delay before the second try of a notification that failed.
    pub notify_retry_base: Duration,
    /// Longest delay between two tries of a notification (at most one day). Notifications are
    /// tried for ever, in order: a receiver that stays down holds back the later ones, which
    /// wait in the log, not in memory.
    pub notify_retry_cap: Duration,
    /// Connections the background reconciliation inspects per second, across all tenants
    /// (issue 16's drift; 0..=[`MAX_RECONCILE_RATE`]). 0, the default, turns the pass off: an
    /// embedder whose provisioner cannot inspect (`Provisioner::inspect` answers `Unknown`)
    /// would only walk its connections for nothing, and a target's API limits are the
    /// embedder's to know. `Engine::reconcile` works either way.
    pub reconcile_rate: u32,
    /// From the end of one reconciliation pass to the start of the next (1s..=30d; 1 h by
    /// default). The end is durable, so a restart keeps the pace.
    pub reconcile_interval: Duration,
    /// The most inspections the pass has in flight at once (1..=1024; 8 by default). Each is
    /// bounded by `effect_timeout`.
    pub reconcile_in_flight: usize,
}

/// The most connections per second the background reconciliation may inspect.
pub const MAX_RECONCILE_RATE: u32 = 100_000;

impl Default for Config {
    fn default() -> Config {
        Config {
            grant_max_attempts: 5,
            stuck_after: 8,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
            warning_lead: Duration::from_secs(300),
            batch_max: 1024,
            queue_capacity: 65_536,
            effects_in_flight: 256,
            effect_timeout: Duration::from_secs(30),
            timer_window: 4096,
            max_sleep: Duration::from_secs(1),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            approvers: Vec::new(),
            approval_timeout: Duration::from_secs(7 * 24 * 3600),
            notify_timeout: Duration::from_secs(30),
            notify_retry_base: Duration::from_secs(1),
            notify_retry_cap: Duration::from_secs(300),
            reconcile_rate: 0,
            reconcile_interval: Duration::from_secs(3600),
            reconcile_in_flight: 8,
        }
    }
}

/// A setting out of its bounds, or text that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {field}: {reason}")]
pub struct ConfigError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl Config {
    /// Checks every bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, field: &'static str, reason: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError {
                    field,
                    reason: reason.into(),
                })
            }
        };
        check(
            (1..=100).contains(&self.grant_max_attempts),
            "grant_max_attempts",
            "must be 1..=100",
        )?;
        check(self.stuck_after >= 1, "stuck_after", "must be at least 1")?;
        check(
            !self.retry_base.is_zero(),
            "retry_base",
            "must be more than zero",
        )?;
        check(
            self.retry_cap >= self.retry_base,
            "retry_cap",
            "must be at least retry_base",
        )?;
        check(
            (1..=MAX_BATCH).contains(&self.batch_max),
            "batch_max",
            "must be 1..=4096",
        )?;
        check(
            (1..=MAX_QUEUE).contains(&self.queue_capacity),
            "queue_capacity",
            "must be 1..=1048576",
        )?;
        check(
            (1..=65_536).contains(&self.effects_in_flight),
            "effects_in_flight",
            "must be 1..=65536",
        )?;
        check(
            (16..=1 << 20).contains(&self.timer_window),
            "timer_window",
            "must be 16..=1048576",
        )?;
        check(
            self.max_sleep >= Duration::from_millis(10)
                && self.max_sleep <= Duration::from_secs(60),
            "max_sleep",
            "must be 10ms..=60s",
        )?;
        check(
            self.approvers.len() <= MAX_APPROVERS,
            "approvers",
            "at most 100 approvers",
        )?;
        check(
            (MIN_APPROVAL_WAIT..=MAX_APPROVAL_WAIT).contains(&self.approval_timeout),
            "approval_timeout",
            "must be 1m..=365d",
        )?;
        check(
            self.notify_timeout >= Duration::from_millis(10)
                && self.notify_timeout <= Duration::from_secs(600),
            "notify_timeout",
            "must be 10ms..=10m",
        )?;
        check(
            !self.notify_retry_base.is_zero(),
            "notify_retry_base",
            "must be more than zero",
        )?;
        check(
            self.notify_retry_cap >= self.notify_retry_base
                && self.notify_retry_cap <= Duration::from_secs(24 * 3600),
            "notify_retry_cap",
            "must be notify_retry_base..=1d",
        )?;
        check(
            self.reconcile_rate <= MAX_RECONCILE_RATE,
            "reconcile_rate",
            "must be 0..=100000 (0: off)",
        )?;
        check(
            self.reconcile_interval >= Duration::from_secs(1)
                && self.reconcile_interval <= Duration::from_secs(30 * 24 * 3600),
            "reconcile_interval",
            "must be 1s..=30d",
        )?;
        check(
            (1..=1024).contains(&self.reconcile_in_flight),
            "reconcile_in_flight",
            "must be 1..=1024",
        )?;
        Ok(())
    }

    /// Sets one setting from text, as read from a file or an environment variable: durations
    /// in human form (`"5m"`, `"1h 30m"`, `"250ms"`), counts as whole numbers. Checks the name and
    /// the syntax; [`Config::validate`] checks the bounds of the whole.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: String| ConfigError { field, reason };
        let duration = |field: &'static str| {
            jitflow_core::time::parse_duration(value).map_err(|e| bad(field, e.to_string()))
        };
        fn count<T: std::str::FromStr>(field: &'static str, value: &str) -> Result<T, ConfigError> {
            value.trim().parse().map_err(|_| ConfigError {
                field,
                reason: format!("`{value}` is not a whole number"),
            })
        }
        match name {
            "grant_max_attempts" => self.grant_max_attempts = count("grant_max_attempts", value)?,
            "stuck_after" => self.stuck_after = count("stuck_after", value)?,
            "retry_base" => self.retry_base = duration("retry_base")?,
            "retry_cap" => self.retry_cap = duration("retry_cap")?,
            "warning_lead" => self.warning_lead = duration("warning_lead")?,
            "batch_max" => self.batch_max = count("batch_max", value)?,
            "queue_capacity" => self.queue_capacity = count("queue_capacity", value)?,
            "effects_in_flight" => self.effects_in_flight = count("effects_in_flight", value)?,
            "effect_timeout" => self.effect_timeout = duration("effect_timeout")?,
            "timer_window" => self.timer_window = count("timer_window", value)?,
            "max_sleep" => self.max_sleep = duration("max_sleep")?,
            "idempotency_ttl" => self.idempotency_ttl = duration("idempotency_ttl")?,
            "approval" => match value.trim() {
                "auto" => self.approvers.clear(),
                // The approvers themselves come with the `approvers` setting.
                "approvers" => {}
                other => {
                    return Err(bad(
                        "approval",
                        format!(
                            "`{}` is neither `auto` nor `approvers`",
                            other.chars().take(64).collect::<String>()
                        ),
                    ));
                }
            },
            "approvers" => {
                let mut approvers = Vec::new();
                for id in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if approvers.len() == MAX_APPROVERS {
                        return Err(bad(
                            "approvers",
                            format!("at most {MAX_APPROVERS} approvers"),
                        ));
                    }
                    approvers
                        .push(IdentityId::parse(id).map_err(|e| bad("approvers", e.to_string()))?);
                }
                self.approvers = approvers;
            }
            "approval_timeout" => self.approval_timeout = duration("approval_timeout")?,
            "notify_timeout" => self.notify_timeout = duration("notify_timeout")?,
            "notify_retry_base" => self.notify_retry_base = duration("notify_retry_base")?,
            "notify_retry_cap" => self.notify_retry_cap = duration("notify_retry_cap")?,
            "reconcile_rate" => self.reconcile_rate = count("reconcile_rate", value)?,
            "reconcile_interval" => self.reconcile_interval = duration("reconcile_interval")?,
            "reconcile_in_flight" => {
                self.reconcile_in_flight = count("reconcile_in_flight", value)?;
            }
            _ => {
                return Err(bad(
                    "name",
                    format!(
                        "`{}` is not a setting",
                        name.chars().take(64).collect::<String>()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The approval step each access request item goes through.
    pub(crate) fn approval_step(&self) -> ApprovalStep {
        if self.approvers.is_empty() {
            ApprovalStep::Auto
        } else {
            ApprovalStep::Approvers {
                approvers: self.approvers.clone(),
                scheme: ApprovalScheme::GovernanceGroup,
                expires_after: self.approval_timeout,
            }
        }
    }

    /// The core's lifecycle settings derived from these.
    pub(crate) fn lifecycle(&self, jitter_seed: u64) -> lifecycle::Config {
        lifecycle::Config {
            grant_max_attempts: self.grant_max_attempts,
            stuck_after: self.stuck_after,
            backoff_base: self.retry_base,
            backoff_cap: self.retry_cap,
            warning_lead: self.warning_lead,
            jitter_seed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_from_text_with_human_durations() {
        let mut c = Config::default();
        c.set("retry_cap", "2m 30s").unwrap();
        c.set("warning_lead", "10m").unwrap();
        c.set("batch_max", "512").unwrap();
        assert_eq!(c.retry_cap, Duration::from_secs(150));
        assert_eq!(c.warning_lead, Duration::from_secs(600));
        assert_eq!(c.batch_max, 512);
        assert!(c.validate().is_ok());
        let e = c.set("retry_cap", "soon").unwrap_err();
        assert_eq!(e.field, "retry_cap");
        let e = c.set("batch_max", "-3").unwrap_err();
        assert_eq!(e.field, "batch_max");
        assert_eq!(c.set("nonsense", "1").unwrap_err().field, "name");
        c.set("approval_timeout", "3d").unwrap();
        c.set("approvers", "bob, carol").unwrap();
        assert_eq!(c.approval_timeout, Duration::from_secs(3 * 24 * 3600));
        assert!(matches!(
            c.approval_step(),
            ApprovalStep::Approvers { ref approvers, .. } if approvers.len() == 2
        ));
        assert_eq!(
            c.set("approvers", "bob, not valid!").unwrap_err().field,
            "approvers"
        );
        assert_eq!(c.set("approval", "maybe").unwrap_err().field, "approval");
        c.set("approval", "auto").unwrap();
        assert_eq!(c.approval_step(), ApprovalStep::Auto);
        c.set("approval_timeout", "10s").unwrap();
        assert_eq!(c.validate().unwrap_err().field, "approval_timeout");
        c.set("approval_timeout", "7d").unwrap();
        c.set("notify_retry_cap", "2d").unwrap();
        assert_eq!(c.validate().unwrap_err().field, "notify_retry_cap");
        c.set("notify_retry_cap", "10m").unwrap();
        c.set("batch_max", "100000").unwrap();
        assert_eq!(
            c.validate().unwrap_err().field,
            "batch_max",
            "bounds are checked as a whole"
        );
    }

    /// The reconciliation is off by default; its settings parse and are bounded.
    #[test]
    fn reconciliation_settings_are_off_by_default_and_bounded() {
        let mut c = Config::default();
        assert_eq!(c.reconcile_rate, 0, "off by default");
        c.set("reconcile_rate", "250").unwrap();
        c.set("reconcile_interval", "15m").unwrap();
        c.set("reconcile_in_flight", "32").unwrap();
        assert_eq!(
            (
                c.reconcile_rate,
                c.reconcile_interval,
                c.reconcile_in_flight
            ),
            (250, Duration::from_secs(900), 32)
        );
        assert!(c.validate().is_ok());
        for (name, value) in [
            ("reconcile_rate", "100001"),
            ("reconcile_interval", "500ms"),
            ("reconcile_interval", "31d"),
            ("reconcile_in_flight", "0"),
            ("reconcile_in_flight", "1025"),
        ] {
            let mut bad = c.clone();
            bad.set(name, value).unwrap();
            assert_eq!(bad.validate().unwrap_err().field, name, "{name}={value}");
        }
        assert_eq!(
            c.set("reconcile_rate", "-1").unwrap_err().field,
            "reconcile_rate"
        );
        assert_eq!(
            c.set("reconcile_rate", "99999999999").unwrap_err().field,
            "reconcile_rate"
        );
        assert_eq!(
            c.set("reconcile_interval", "often").unwrap_err().field,
            "reconcile_interval"
        );
    }
}
