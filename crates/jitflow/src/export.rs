//! Audit export: committed events as JSON lines.
//!
//! One line per event, in global sequence order, for audit pipelines and SIEMs:
//!
//! ```text
//! {"sequence":7,"tenant":"acme","stream":"connection","streamId":"757fb803-...","streamVersion":3,
//!  "batchFirst":5,"batchLast":9,"at":"2026-04-01T10:00:00.000Z","kind":"connection",
//!  "event":{"connection":"757fb803-...","activation":"...","at":"...","actor":{...},
//!           "change":{"Provisioned":{...}},"arm":[...],"cancel":[...],"effects":[...]}}
//! ```
//!
//! `event` is the core's `Event` (or `PolicyEvent` when `kind` is `policy`, or the access
//! request module's `Event` when `kind` is `request`) as serde writes it
//! in a human-readable format: ids as canonical UUID text, instants as RFC 3339 in UTC, enum
//! variants by name. Lines never contain a newline, so a consumer can split on `\n`. A policy
//! event whose previous or new policy sets the jitflow extension `jitflowExpiryWarningMins`
//! also carries `"policyExpiryWarningMins": [previous, new]` (`null` for unset), and one whose
//! previous or new policy's `jitflowOnMissingAccess` is not `REPORT` carries
//! `"policyOnMissingAccess": [previous, new]` (`null` for no previous policy). The event of a
//! signal whose client sent SailPoint's `requestOrigin` or `metaData` (activate, extend,
//! deactivate: `Event::client`, outside the event's serde form) carries them as
//! `"requestOrigin": "..."` and `"metaData": {...}`, each only when sent.

use jitflow_store::codec::{Envelope, Payload, Stream};
use serde::Serialize;

/// The JSON shape of one exported event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    sequence: u64,
    tenant: &'a str,
    stream: &'static str,
    stream_id: Option<String>,
    stream_version: u64,
    batch_first: u64,
    batch_last: u64,
    at: jitflow_core::time::Timestamp,
    kind: &'static str,
    event: Event<'a>,
    /// A policy event's `[previous, new]` `jitflowExpiryWarningMins` (a jitflow extension that
    /// the policy's serde form leaves out), when either is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_expiry_warning_mins: Option<[Option<u32>; 2]>,
    /// A policy event's `[previous, new]` `jitflowOnMissingAccess` (a jitflow extension left
    /// out of the policy's serde form too), when either is not `REPORT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_on_missing_access: Option<[Option<&'static str>; 2]>,
    /// The `requestOrigin` the client sent with the signal this event records.
    #[serde(skip_serializing_if = "Option::is_none")]
    request_origin: Option<&'a str>,
    /// The `metaData` the client sent with the signal this event records.
    #[serde(skip_serializing_if = "Option::is_none")]
    meta_data: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Event<'a> {
    Connection(&'a jitflow_core::lifecycle::Event),
    Policy(&'a jitflow_core::lifecycle::PolicyEvent),
    Request(&'a jitflow_core::request::Event),
    RequestConfig(&'a jitflow_core::request::config::Event),
}

/// `envelope` as one line of JSON, without the trailing newline.
pub fn json_line(envelope: &Envelope) -> String {
    let (stream, stream_id) = match envelope.stream() {
        Stream::Connection(id) => ("connection", Some(id.to_string())),
        Stream::Activation(id) => ("activation", Some(id.to_string())),
        Stream::Policy => ("policy", None),
        Stream::RequestItem(id) => ("requestItem", Some(id.to_string())),
        Stream::RequestConfig => ("requestConfig", None),
    };
    let (kind, event) = match &envelope.payload {
        Payload::Connection(e) => ("connection", Event::Connection(e)),
        Payload::Policy(e) => ("policy", Event::Policy(e)),
        Payload::Request(e) => ("request", Event::Request(e)),
        Payload::RequestConfig(e) => ("requestConfig", Event::RequestConfig(e)),
    };
    let client = match &envelope.payload {
        Payload::Connection(e) => e.client.as_ref(),
        _ => None,
    };
    let line = Line {
        sequence: envelope.sequence,
        tenant: envelope.tenant.as_str(),
        stream,
        stream_id,
        stream_version: envelope.stream_version,
        batch_first: envelope.batch_first,
        batch_last: envelope.batch_last,
        at: envelope.at(),
        kind,
        event,
        policy_expiry_warning_mins: match &envelope.payload {
            Payload::Policy(e) => {
                let lead = |p: &jitflow_core::policy::Policy| p.expiry_warning.map(|m| m.get());
                let pair = [e.previous.as_ref().and_then(lead), lead(&e.policy)];
                (pair != [None, None]).then_some(pair)
            }
            _ => None,
        },
        policy_on_missing_access: match &envelope.payload {
            Payload::Policy(e) => {
                let action = |p: &jitflow_core::policy::Policy| p.on_missing_access;
                let report = jitflow_core::policy::MissingAccessAction::Report;
                let previous = e.previous.as_ref().map(action);
                (previous.is_some_and(|a| a != report) || action(&e.policy) != report).then(|| {
                    [
                        previous.map(|a| a.as_str()),
                        Some(action(&e.policy).as_str()),
                    ]
                })
            }
            _ => None,
        },
        request_origin: client.and_then(|c| c.request_origin()),
        meta_data: client.and_then(|c| c.meta_data()),
    };
    // Every field serialises infallibly: strings, integers, and derived serde of plain data
    // whose maps (if any) have string keys.
    serde_json::to_string(&line).expect("an event always serialises to JSON")
}
