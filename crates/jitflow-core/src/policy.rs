//! The tenant's JIT activation policy (the contract's `JITActivationConfigResponse`).

use serde::{Deserialize, Serialize};

use crate::id::EntitlementId;
use crate::time::Minutes;

/// The JIT activation policy of one tenant.
///
/// The `Option<Minutes>` fields are the contract's nullable `*Mins` fields: `None` means unset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The persisted config id (the contract's `id`, a UUID), canonical lowercase hyphenated text.
    pub id: String,
    /// Entitlements governed by JIT activation (`entitlementIds`).
    pub entitlement_ids: Vec<EntitlementId>,
    /// Longest activation period one grant may ask for (`maxActivationPeriodMins`).
    pub max_activation_period: Option<Minutes>,
    /// Most an activation may be extended in total (`maxActivationPeriodExtensionMins`).
    pub max_extension: Option<Minutes>,
    /// Period used when an activate request names none (`defaultMaxActivationPeriodMins`).
    pub default_activation_period: Option<Minutes>,
    /// Extension used when an extend request names none (`defaultMaxActivationPeriodExtensionMins`).
    pub default_extension: Option<Minutes>,
    /// Email addresses told about activation events (`notificationRecipients`).
    pub notification_recipients: Vec<String>,
    /// Email template name (`notificationTemplate`).
    pub notification_template: Option<String>,
    /// Whether newly registered connections of governed entitlements become JIT
    /// (`applyToFutureAssignments`).
    pub apply_to_future_assignments: bool,
    /// Optimistic-concurrency version: 0 for a policy never stored, +1 on every change.
    pub version: u64,
}

impl Policy {
    /// A policy with every limit unset, governing nothing.
    pub fn empty(id: String) -> Policy {
        Policy {
            id,
            entitlement_ids: Vec::new(),
            max_activation_period: None,
            max_extension: None,
            default_activation_period: None,
            default_extension: None,
            notification_recipients: Vec::new(),
            notification_template: None,
            apply_to_future_assignments: false,
            version: 0,
        }
    }

    /// Whether `entitlement` is governed by this policy.
    pub fn governs(&self, entitlement: &EntitlementId) -> bool {
        self.entitlement_ids.iter().any(|e| e == entitlement)
    }
}
