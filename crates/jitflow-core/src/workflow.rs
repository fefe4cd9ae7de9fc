//! What the two workflows (a connection's JIT lifecycle and an access request item) have in
//! common, so that the machinery around them (the timer index, the intents, the paired
//! assertions) is written once.
//!
//! Both are aggregates whose timers and in-flight effects are functions of the state, and whose
//! events carry the difference (timers armed and cancelled, effects started).

use crate::connection::Connection;
use crate::time::Timestamp;
use crate::{lifecycle, request};

/// A workflow's state: a [`Connection`] or a request [`Item`](request::Item).
pub trait Workflow {
    /// Its timer type.
    type Timer: Copy + Eq + std::fmt::Debug;
    /// Its effect type.
    type Effect;
    /// Its id, as the 128 bits its rows are keyed by.
    fn key(&self) -> u128;
    /// The timers the state implies.
    fn timers(&self) -> Vec<Self::Timer>;
    /// The effects the state has started and not yet settled.
    fn pending_effects(&self) -> Vec<Self::Effect>;
    /// Whether the state is consistent; the message says what is not.
    fn check_invariants(&self) -> Result<(), String>;
    /// Whether a revoke of this state keeps failing past the configured bound (the stuck
    /// flag): access that should be gone is still held, and a person is needed. The flag
    /// clears when the revoke succeeds.
    fn is_stuck(&self) -> bool;
}

/// An event of a workflow, with the timer difference `decide` stamped on it.
pub trait WorkflowEvent {
    /// Its timer type (the workflow's).
    type Timer: Copy + Eq + std::fmt::Debug;
    /// The id of the aggregate the event belongs to, as 128 bits.
    fn subject(&self) -> u128;
    /// The timers it arms.
    fn arm(&self) -> &[Self::Timer];
    /// The timers it cancels.
    fn cancel(&self) -> &[Self::Timer];
}

/// A workflow timer: when it is due.
pub trait WorkflowTimer {
    /// When it is due; it never fires earlier.
    fn due(&self) -> Timestamp;
}

impl Workflow for Connection {
    type Timer = lifecycle::Timer;
    type Effect = lifecycle::Effect;

    fn key(&self) -> u128 {
        self.id().as_u128()
    }

    fn timers(&self) -> Vec<lifecycle::Timer> {
        Connection::timers(self)
    }

    fn pending_effects(&self) -> Vec<lifecycle::Effect> {
        Connection::pending_effects(self)
    }

    fn check_invariants(&self) -> Result<(), String> {
        Connection::check_invariants(self)
    }

    fn is_stuck(&self) -> bool {
        self.activation.as_ref().is_some_and(|a| a.stuck)
            || self.standing_revoke.as_ref().is_some_and(|r| r.stuck)
    }
}

impl Workflow for request::Item {
    type Timer = request::Timer;
    type Effect = request::Effect;

    fn key(&self) -> u128 {
        self.id().as_u128()
    }

    fn timers(&self) -> Vec<request::Timer> {
        request::Item::timers(self)
    }

    fn pending_effects(&self) -> Vec<request::Effect> {
        request::Item::pending_effects(self)
    }

    fn check_invariants(&self) -> Result<(), String> {
        request::Item::check_invariants(self)
    }

    fn is_stuck(&self) -> bool {
        self.removal.as_ref().is_some_and(|r| r.stuck)
    }
}

impl WorkflowEvent for lifecycle::Event {
    type Timer = lifecycle::Timer;

    fn subject(&self) -> u128 {
        self.connection.as_u128()
    }

    fn arm(&self) -> &[lifecycle::Timer] {
        &self.arm
    }

    fn cancel(&self) -> &[lifecycle::Timer] {
        &self.cancel
    }
}

impl WorkflowEvent for request::Event {
    type Timer = request::Timer;

    fn subject(&self) -> u128 {
        self.item.as_u128()
    }

    fn arm(&self) -> &[request::Timer] {
        &self.arm
    }

    fn cancel(&self) -> &[request::Timer] {
        &self.cancel
    }
}

impl WorkflowTimer for lifecycle::Timer {
    fn due(&self) -> Timestamp {
        self.due
    }
}

impl WorkflowTimer for request::Timer {
    fn due(&self) -> Timestamp {
        self.due
    }
}
