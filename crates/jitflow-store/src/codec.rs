//! The persisted binary format: the only place in the workspace that uses bincode.
//!
//! Every stored value starts with its record format version, a little-endian `u16`, so a reader
//! knows how to decode it before reading anything else. Decoding an older version upgrades it to
//! today's types; a newer or unknown version is a typed error. Only version 1 exists.
//!
//! # Event envelope, version 1
//!
//! ```text
//! [0..2]  record format version, u16 little-endian (1)
//! [2]     event kind: 1 = connection event, 2 = policy event, 3 = access request item event,
//!         4 = access request config event
//! [3..]   bincode (standard: little-endian, varint) of, in this order:
//!         tenant (string), stream id (u128), stream version (u64), time (UTC ms, u64),
//!         first and last global sequence of the batch it was committed in (u64, u64),
//!         payload (`jitflow_core::lifecycle::Event`, `PolicyEvent`,
//!         `jitflow_core::request::Event` or `jitflow_core::request::config::Event`)
//! [then] for a policy event whose previous or new policy sets `expiry_warning` (not in the
//!         policy's bincode), or that has the missing-access section: bincode of (previous
//!         lead, new lead), two `Option<Minutes>`; absent otherwise, so such events keep the
//!         bytes they had before it existed
//! [then] for a connection event that carries a client's `requestOrigin` and `metaData`
//!         (`Event::client`, not in the event's bincode; file format 7): bincode of the
//!         `ClientInfo` in its binary form, two `Option<String>` (the origin, and the metadata
//!         as compact JSON text), not both `None`; only on `ActivationRequested`, `Extended`
//!         and `DeactivationRequested`; absent otherwise, so events without one keep their bytes
//! [then] for a policy event whose previous or new policy's `on_missing_access` is not the
//!         default `Report` (file format 8): bincode of (previous action, new action), two
//!         `MissingAccessAction`; absent otherwise
//! ```
//!
//! The stream id and the time are also inside the payload; the header repeats them so that a
//! tool can read the log without knowing the payload types, and decoding checks they agree.
//!
//! # Projection records, version 1
//!
//! `[u16 version][bincode of the value]` for `Connection`, `Activation`, `Policy`, the
//! access request `Item` (whose `forwards` are not in its bincode: when there are any, the
//! item's bincode is followed by the bincode of `Vec<request::Forward>`, so an item never
//! forwarded has the bytes it had before forwarding existed) and the `AccessRequestConfig`;
//! a `Policy` whose `expiry_warning` (a jitflow extension, not in its bincode) is set is
//! followed by the bincode of that `Minutes`, so a policy without one keeps its bytes; a
//! `Policy` whose `on_missing_access` (a jitflow extension, format version 8) is not the
//! default `Report` is followed by the lead section (`Minutes(0)` when no lead is set: a lead
//! is never 0) and then the bincode of that `MissingAccessAction`;
//! `[u16 version][u64 fingerprint LE][u64 expires UTC ms LE][result bytes]` for idempotency
//! records (written by hand: the result is opaque bytes).
//!
//! # Compatibility rules
//!
//! bincode-serde encodes structs by field order and enums by *variant index*: the core's
//! persisted types (`Event`, `Change`, `Connection`, `Activation`, `Policy`, `PolicyEvent`, the
//! request module's `Event`, `Change` and `Item`, the access request config and its event, and
//! every type inside them) must never reorder, remove or reuse fields or variants. New variants go
//! last. Any other change needs a new record format version here, with an upgrade from the old
//! one. The golden fixtures in `tests/golden/` (every `Change` variant, the policy event and each
//! projection record) fail on any change to the bytes.

use std::fmt;

use bincode::config::{Config, standard};
use jitflow_core::activation::Activation;
use jitflow_core::connection::Connection;
use jitflow_core::history::ActivationRecord;
use jitflow_core::id::{ActivationId, ConnectionId, RequestItemId, TenantId};
use jitflow_core::lifecycle::{Event, PolicyEvent};
use jitflow_core::policy::{MissingAccessAction, Policy};
use jitflow_core::request;
use jitflow_core::time::{Minutes, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::idempotency::Idempotency;

/// The record format version this build writes. Decoding accepts `1..=RECORD_VERSION`.
pub const RECORD_VERSION: u16 = 1;

/// The longest encoded record written, in bytes. Core bounds every field; the largest record
/// is a policy event carrying two whole policies (a few hundred KiB at the policy limits).
pub const MAX_RECORD_LEN: usize = 1 << 20;

/// The most memory bincode may claim while decoding one record: corrupt length prefixes fail
/// with a typed error instead of allocating gigabytes.
const DECODE_LIMIT: usize = 8 << 20;

/// Event kind tag of an envelope holding a connection `Event`.
const KIND_CONNECTION: u8 = 1;
/// Event kind tag of an envelope holding a `PolicyEvent`.
const KIND_POLICY: u8 = 2;
/// Event kind tag of an envelope holding an access request item's `request::Event`.
const KIND_REQUEST: u8 = 3;
/// Event kind tag of an envelope holding a `request::config::Event`.
const KIND_REQUEST_CONFIG: u8 = 4;

fn config() -> impl Config {
    standard().with_limit::<DECODE_LIMIT>()
}

/// A stream of events: one connection's, one activation's, or a tenant's policy history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// Every event of one connection, from its registration (and across removal and
    /// re-registration of the same id).
    Connection(ConnectionId),
    /// Every event that names one activation.
    Activation(ActivationId),
    /// Every change of the tenant's policy.
    Policy,
    /// Every event of one access request item.
    RequestItem(RequestItemId),
    /// Every change of the tenant's access request config.
    RequestConfig,
}

impl Stream {
    /// The stream's kind code and id in index keys.
    pub(crate) const fn key_parts(self) -> (u8, u128) {
        match self {
            Stream::Connection(id) => (crate::tables::STREAM_CONNECTION, id.as_u128()),
            Stream::Activation(id) => (crate::tables::STREAM_ACTIVATION, id.as_u128()),
            Stream::Policy => (crate::tables::STREAM_POLICY, 0),
            Stream::RequestItem(id) => (crate::tables::STREAM_REQUEST_ITEM, id.as_u128()),
            Stream::RequestConfig => (crate::tables::STREAM_REQUEST_CONFIG, 0),
        }
    }

    /// The stream of index key parts, `None` for an unknown kind code.
    pub(crate) const fn from_key_parts(kind: u8, id: u128) -> Option<Stream> {
        match kind {
            crate::tables::STREAM_CONNECTION => {
                Some(Stream::Connection(ConnectionId::from_u128(id)))
            }
            crate::tables::STREAM_ACTIVATION => {
                Some(Stream::Activation(ActivationId::from_u128(id)))
            }
            crate::tables::STREAM_POLICY if id == 0 => Some(Stream::Policy),
            crate::tables::STREAM_REQUEST_ITEM => {
                Some(Stream::RequestItem(RequestItemId::from_u128(id)))
            }
            crate::tables::STREAM_REQUEST_CONFIG if id == 0 => Some(Stream::RequestConfig),
            _ => None,
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Connection(id) => write!(f, "connection {id}"),
            Stream::Activation(id) => write!(f, "activation {id}"),
            Stream::Policy => f.write_str("policy"),
            Stream::RequestItem(id) => write!(f, "access request item {id}"),
            Stream::RequestConfig => f.write_str("access request config"),
        }
    }
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// An event of one connection.
    Connection(Event),
    /// A change of the tenant's policy.
    Policy(PolicyEvent),
    /// An event of one access request item.
    Request(request::Event),
    /// A change of the tenant's access request config.
    RequestConfig(request::config::Event),
}

/// One event of the log, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Its global sequence (the log key; not repeated in the bytes).
    pub sequence: u64,
    /// The tenant.
    pub tenant: TenantId,
    /// Its version in its primary stream ([`Envelope::stream`]), from 1.
    pub stream_version: u64,
    /// The first global sequence of the batch it was committed in.
    pub batch_first: u64,
    /// The last global sequence of that batch: every event from `batch_first` to `batch_last`
    /// was committed together, or none was.
    pub batch_last: u64,
    /// The event.
    pub payload: Payload,
}

impl Envelope {
    /// The primary stream: the connection of a connection event, or the policy stream.
    pub fn stream(&self) -> Stream {
        match &self.payload {
            Payload::Connection(e) => Stream::Connection(e.connection),
            Payload::Policy(_) => Stream::Policy,
            Payload::Request(e) => Stream::RequestItem(e.item),
            Payload::RequestConfig(_) => Stream::RequestConfig,
        }
    }

    /// When the event happened.
    pub fn at(&self) -> Timestamp {
        match &self.payload {
            Payload::Connection(e) => e.at,
            Payload::Policy(e) => e.at,
            Payload::Request(e) => e.at,
            Payload::RequestConfig(e) => e.at,
        }
    }
}

/// A borrowed payload, so appending encodes without cloning events.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PayloadRef<'a> {
    Connection(&'a Event),
    Policy(&'a PolicyEvent),
    Request(&'a request::Event),
    RequestConfig(&'a request::config::Event),
}

/// Which stored record a decoding error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordName {
    /// The event with this global sequence.
    Event(u64),
    /// A connection projection.
    Connection {
        /// The tenant, as stored in the key.
        tenant: String,
        /// The connection.
        id: ConnectionId,
    },
    /// An activation projection.
    Activation {
        /// The tenant, as stored in the key.
        tenant: String,
        /// The activation.
        id: ActivationId,
    },
    /// An activation history record.
    History {
        /// The tenant, as stored in the key.
        tenant: String,
        /// The activation.
        id: ActivationId,
    },
    /// A tenant's policy projection.
    Policy {
        /// The tenant, as stored in the key.
        tenant: String,
    },
    /// An access request item projection.
    Item {
        /// The tenant, as stored in the key.
        tenant: String,
        /// The item.
        id: RequestItemId,
    },
    /// A tenant's access request config projection.
    RequestConfig {
        /// The tenant, as stored in the key.
        tenant: String,
    },
    /// An idempotency record.
    Idempotency {
        /// The tenant, as stored in the key.
        tenant: String,
        /// The key.
        key: String,
    },
    /// A record of the log's extras table (idempotency results and cursors of one batch).
    Extras(u64),
    /// A key of a table (index or projection) that does not parse.
    Key {
        /// The table.
        table: &'static str,
        /// The key, as debug text.
        key: String,
    },
}

impl fmt::Display for RecordName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordName::Event(sequence) => write!(f, "event {sequence}"),
            RecordName::Connection { tenant, id } => write!(f, "connection {tenant}/{id}"),
            RecordName::Activation { tenant, id } => write!(f, "activation {tenant}/{id}"),
            RecordName::History { tenant, id } => {
                write!(f, "activation history record {tenant}/{id}")
            }
            RecordName::Policy { tenant } => write!(f, "policy {tenant}"),
            RecordName::Item { tenant, id } => write!(f, "access request item {tenant}/{id}"),
            RecordName::RequestConfig { tenant } => write!(f, "access request config {tenant}"),
            RecordName::Idempotency { tenant, key } => {
                write!(f, "idempotency key {tenant}/{key:?}")
            }
            RecordName::Extras(number) => write!(f, "extras record {number}"),
            RecordName::Key { table, key } => write!(f, "key {key} of table {table}"),
        }
    }
}

/// What is wrong with a stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The bytes end before the record does.
    Truncated,
    /// The record format version is newer than this build or unknown.
    UnknownVersion {
        /// The version found.
        found: u16,
        /// The newest version this build reads.
        newest: u16,
    },
    /// The envelope's event kind tag is unknown.
    UnknownKind(u8),
    /// bincode refused the bytes (bad tag, bad UTF-8, length over the limit...).
    Malformed(String),
    /// Bytes follow the end of the record.
    TrailingBytes(usize),
    /// The record decoded, but breaks an invariant or disagrees with its key or header.
    Invalid(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Truncated => f.write_str("truncated"),
            Problem::UnknownVersion { found, newest } => write!(
                f,
                "record format version {found} is unknown (this build reads 1 to {newest})"
            ),
            Problem::UnknownKind(kind) => write!(f, "unknown event kind tag {kind}"),
            Problem::Malformed(reason) => write!(f, "malformed: {reason}"),
            Problem::TrailingBytes(n) => write!(f, "{n} bytes after the end of the record"),
            Problem::Invalid(reason) => write!(f, "invalid: {reason}"),
        }
    }
}

/// A stored record could not be decoded. Never a panic: corrupt bytes come back as this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {record}: {problem}")]
pub struct Error {
    /// The record.
    pub record: RecordName,
    /// What is wrong with it.
    pub problem: Problem,
}

impl Error {
    pub(crate) fn new(record: RecordName, problem: Problem) -> Error {
        Error { record, problem }
    }
}

/// Encodes with the format's bincode configuration. Encoding the core's types cannot fail
/// (every sequence has a known length), so a failure is a bug.
fn encode_body<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let body = bincode::serde::encode_to_vec(value, config())
        .unwrap_or_else(|e| panic!("bincode cannot encode a core type: {e}"));
    out.extend_from_slice(&body);
    assert!(
        out.len() <= MAX_RECORD_LEN,
        "record of {} bytes exceeds MAX_RECORD_LEN: a core bound is missing",
        out.len()
    );
}

/// Decodes one `T` from the start of `bytes`; returns it and the bytes after it.
fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), Problem> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| match e {
            bincode::error::DecodeError::UnexpectedEnd { .. } => Problem::Truncated,
            other => Problem::Malformed(other.to_string()),
        })?;
    Ok((value, &bytes[used..]))
}

/// Decodes exactly `bytes` as one `T`.
fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let (value, rest) = decode_prefix(bytes)?;
    if !rest.is_empty() {
        return Err(Problem::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Splits off the version prefix, checking it is one this build reads.
fn split_version(bytes: &[u8]) -> Result<(u16, &[u8]), Problem> {
    let Some((version, rest)) = bytes.split_first_chunk::<2>() else {
        return Err(Problem::Truncated);
    };
    let version = u16::from_le_bytes(*version);
    if version == 0 || version > RECORD_VERSION {
        return Err(Problem::UnknownVersion {
            found: version,
            newest: RECORD_VERSION,
        });
    }
    Ok((version, rest))
}

/// The version 1 envelope body. Field order is the format: never reorder.
#[derive(Serialize)]
struct EnvelopeV1Out<'a, P> {
    tenant: &'a str,
    stream_id: u128,
    stream_version: u64,
    at: u64,
    batch_first: u64,
    batch_last: u64,
    payload: &'a P,
}

/// [`EnvelopeV1Out`] when decoding.
#[derive(Deserialize)]
struct EnvelopeV1In<P> {
    tenant: TenantId,
    stream_id: u128,
    stream_version: u64,
    at: u64,
    batch_first: u64,
    batch_last: u64,
    payload: P,
}

/// Encodes an envelope in the current format.
pub fn encode_envelope(envelope: &Envelope) -> Vec<u8> {
    let payload = match &envelope.payload {
        Payload::Connection(e) => PayloadRef::Connection(e),
        Payload::Policy(e) => PayloadRef::Policy(e),
        Payload::Request(e) => PayloadRef::Request(e),
        Payload::RequestConfig(e) => PayloadRef::RequestConfig(e),
    };
    encode_envelope_parts(
        &envelope.tenant,
        envelope.stream_version,
        (envelope.batch_first, envelope.batch_last),
        payload,
    )
}

/// Encodes an envelope from its parts (the append path, which borrows the batch's events).
pub(crate) fn encode_envelope_parts(
    tenant: &TenantId,
    stream_version: u64,
    batch: (u64, u64),
    payload: PayloadRef<'_>,
) -> Vec<u8> {
    // Every kind has the same layout; only the kind byte, the stream id and the payload's type
    // differ.
    match payload {
        PayloadRef::Connection(e) => {
            let stream = (e.connection.as_u128(), stream_version);
            let mut out = encode_kind(KIND_CONNECTION, tenant, stream, e.at, batch, e);
            if let Some(client) = &e.client {
                encode_body(&mut out, client);
            }
            out
        }
        PayloadRef::Policy(e) => {
            let mut out = encode_kind(KIND_POLICY, tenant, (0, stream_version), e.at, batch, e);
            let (leads, actions) = policy_event_sections(e);
            let acts = actions != (MissingAccessAction::Report, MissingAccessAction::Report);
            if leads != (None, None) || acts {
                encode_body(&mut out, &leads);
            }
            if acts {
                encode_body(&mut out, &actions);
            }
            out
        }
        PayloadRef::Request(e) => {
            let stream = (e.item.as_u128(), stream_version);
            encode_kind(KIND_REQUEST, tenant, stream, e.at, batch, e)
        }
        PayloadRef::RequestConfig(e) => encode_kind(
            KIND_REQUEST_CONFIG,
            tenant,
            (0, stream_version),
            e.at,
            batch,
            e,
        ),
    }
}

/// `[u16 record version][u8 kind][bincode of the envelope]`, `stream` being (id, version) and
/// `batch` (first, last) sequence.
fn encode_kind<P: Serialize>(
    kind: u8,
    tenant: &TenantId,
    (stream_id, stream_version): (u128, u64),
    at: Timestamp,
    (batch_first, batch_last): (u64, u64),
    payload: &P,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    out.push(kind);
    encode_body(
        &mut out,
        &EnvelopeV1Out {
            tenant: tenant.as_str(),
            stream_id,
            stream_version,
            at: at.as_millis(),
            batch_first,
            batch_last,
            payload,
        },
    );
    out
}

/// Decodes the envelope stored under `sequence`; errors name "event `sequence`".
pub fn decode_envelope(sequence: u64, bytes: &[u8]) -> Result<Envelope, Error> {
    let fail = |problem| Error::new(RecordName::Event(sequence), problem);
    let (version, rest) = split_version(bytes).map_err(fail)?;
    match version {
        1 => decode_envelope_v1(sequence, rest).map_err(fail),
        // A version 2 decodes its own layout here and upgrades to today's types.
        _ => unreachable!("split_version admits only known versions"),
    }
}

fn decode_envelope_v1(sequence: u64, bytes: &[u8]) -> Result<Envelope, Problem> {
    let (&kind, body) = bytes.split_first().ok_or(Problem::Truncated)?;
    let (header, payload, stream_id, at) = match kind {
        KIND_CONNECTION => {
            let (mut e, rest): (EnvelopeV1In<Event>, _) = decode_prefix(body)?;
            if !rest.is_empty() {
                if !e.payload.change.records_client() {
                    return Err(Problem::Invalid(format!(
                        "a client section on a {} event",
                        e.payload.change.name()
                    )));
                }
                // `ClientInfo`'s deserializer refuses an empty section and broken bounds.
                e.payload.client = Some(decode_body(rest)?);
            }
            let (id, at) = (e.payload.connection.as_u128(), e.payload.at);
            (header_of(&e), Payload::Connection(e.payload), id, at)
        }
        KIND_POLICY => {
            let (mut e, rest): (EnvelopeV1In<PolicyEvent>, _) = decode_prefix(body)?;
            if !rest.is_empty() {
                let (leads, rest): ((Option<Minutes>, Option<Minutes>), _) = decode_prefix(rest)?;
                let report = (MissingAccessAction::Report, MissingAccessAction::Report);
                let actions = if rest.is_empty() {
                    if leads == (None, None) {
                        // The encoder writes no section rather than an empty one.
                        return Err(Problem::Invalid("an empty expiry warning section".into()));
                    }
                    report
                } else {
                    let actions = decode_body(rest)?;
                    if actions == report {
                        return Err(Problem::Invalid(
                            "a missing-access section holding the defaults".into(),
                        ));
                    }
                    actions
                };
                match e.payload.previous.as_mut() {
                    Some(p) => {
                        p.expiry_warning = leads.0;
                        p.on_missing_access = actions.0;
                    }
                    None if leads.0.is_some() || actions.0 != MissingAccessAction::Report => {
                        return Err(Problem::Invalid(
                            "a jitflow extension for a previous policy that is absent".into(),
                        ));
                    }
                    None => {}
                }
                e.payload.policy.expiry_warning = leads.1;
                e.payload.policy.on_missing_access = actions.1;
            }
            let at = e.payload.at;
            (header_of(&e), Payload::Policy(e.payload), 0, at)
        }
        KIND_REQUEST => {
            let e: EnvelopeV1In<request::Event> = decode_body(body)?;
            let (id, at) = (e.payload.item.as_u128(), e.payload.at);
            (header_of(&e), Payload::Request(e.payload), id, at)
        }
        KIND_REQUEST_CONFIG => {
            let e: EnvelopeV1In<request::config::Event> = decode_body(body)?;
            let at = e.payload.at;
            (header_of(&e), Payload::RequestConfig(e.payload), 0, at)
        }
        other => return Err(Problem::UnknownKind(other)),
    };
    let Header {
        tenant,
        stream_id: header_stream,
        stream_version,
        at: header_at,
        batch_first,
        batch_last,
    } = header;
    if !tenant.is_valid() {
        return Err(Problem::Invalid(format!(
            "tenant {tenant:?} is not a valid id"
        )));
    }
    if header_stream != stream_id {
        return Err(Problem::Invalid(format!(
            "header stream {header_stream:#x} differs from the payload's {stream_id:#x}"
        )));
    }
    if header_at != at.as_millis() || Timestamp::from_millis(header_at).is_none() {
        return Err(Problem::Invalid(format!(
            "header time {header_at} differs from the payload's {} or is out of range",
            at.as_millis()
        )));
    }
    if stream_version == 0 || !(batch_first <= sequence && sequence <= batch_last) {
        return Err(Problem::Invalid(format!(
            "stream version {stream_version}, batch {batch_first}..={batch_last}"
        )));
    }
    Ok(Envelope {
        sequence,
        tenant,
        stream_version,
        batch_first,
        batch_last,
        payload,
    })
}

struct Header {
    tenant: TenantId,
    stream_id: u128,
    stream_version: u64,
    at: u64,
    batch_first: u64,
    batch_last: u64,
}

fn header_of<P>(e: &EnvelopeV1In<P>) -> Header {
    Header {
        tenant: e.tenant.clone(),
        stream_id: e.stream_id,
        stream_version: e.stream_version,
        at: e.at,
        batch_first: e.batch_first,
        batch_last: e.batch_last,
    }
}

/// Encodes a value record: version prefix, then bincode.
fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    encode_body(&mut out, value);
    out
}

/// Decodes a value record of any known version.
fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let (version, rest) = split_version(bytes)?;
    match version {
        1 => decode_body(rest),
        // A version 2 record decodes its old type here and converts it.
        _ => unreachable!("split_version admits only known versions"),
    }
}

/// Encodes a connection projection.
pub fn encode_connection(connection: &Connection) -> Vec<u8> {
    encode_record(connection)
}

/// Decodes the connection projection stored under (`tenant`, `id`), checking its invariants and
/// that it is the connection its key names.
pub fn decode_connection(
    tenant: &str,
    id: ConnectionId,
    bytes: &[u8],
) -> Result<Connection, Error> {
    let name = || RecordName::Connection {
        tenant: tenant.to_owned(),
        id,
    };
    let c: Connection = decode_record(bytes).map_err(|p| Error::new(name(), p))?;
    let check = || {
        if c.id() != id {
            return Err(format!("holds connection {}", c.id()));
        }
        if c.version == 0 {
            return Err("version 0".to_owned());
        }
        c.check_invariants()
    };
    check().map_err(|reason| Error::new(name(), Problem::Invalid(reason)))?;
    Ok(c)
}

/// Encodes an activation projection.
pub fn encode_activation(activation: &Activation) -> Vec<u8> {
    encode_record(activation)
}

/// Decodes the activation projection stored under (`tenant`, `id`).
pub fn decode_activation(
    tenant: &str,
    id: ActivationId,
    bytes: &[u8],
) -> Result<Activation, Error> {
    let name = || RecordName::Activation {
        tenant: tenant.to_owned(),
        id,
    };
    let a: Activation = decode_record(bytes).map_err(|p| Error::new(name(), p))?;
    if a.id != id {
        return Err(Error::new(
            name(),
            Problem::Invalid(format!("holds activation {}", a.id)),
        ));
    }
    Ok(a)
}

/// Encodes an activation history record.
pub fn encode_history(record: &ActivationRecord) -> Vec<u8> {
    encode_record(record)
}

/// Decodes the activation history record stored under (`tenant`, `id`).
pub fn decode_history(
    tenant: &str,
    id: ActivationId,
    bytes: &[u8],
) -> Result<ActivationRecord, Error> {
    let name = || RecordName::History {
        tenant: tenant.to_owned(),
        id,
    };
    let r: ActivationRecord = decode_record(bytes).map_err(|p| Error::new(name(), p))?;
    if r.activation.id != id {
        return Err(Error::new(
            name(),
            Problem::Invalid(format!("holds activation {}", r.activation.id)),
        ));
    }
    Ok(r)
}

/// Encodes an access request item projection: the item, then its forward section
/// (`Item::forwards`, a bincode sequence of `request::Forward`) only when it is not empty, so
/// an item never forwarded keeps the bytes it had before forwarding existed.
pub fn encode_item(item: &request::Item) -> Vec<u8> {
    let mut out = encode_record(item);
    if !item.forwards.is_empty() {
        encode_body(&mut out, &item.forwards);
    }
    out
}

/// Decodes an item record of any known version with its optional forward section.
fn decode_item_record(bytes: &[u8]) -> Result<request::Item, Problem> {
    let (version, rest) = split_version(bytes)?;
    match version {
        1 => {
            let (mut item, rest): (request::Item, _) = decode_prefix(rest)?;
            if !rest.is_empty() {
                item.forwards = decode_body(rest)?;
                if item.forwards.is_empty() {
                    // The encoder writes no section rather than an empty one.
                    return Err(Problem::Invalid("an empty forward section".into()));
                }
            }
            Ok(item)
        }
        _ => unreachable!("split_version admits only known versions"),
    }
}

/// Decodes the access request item projection stored under (`tenant`, `id`), checking its
/// invariants and that it is the item its key names.
pub fn decode_item(tenant: &str, id: RequestItemId, bytes: &[u8]) -> Result<request::Item, Error> {
    let name = || RecordName::Item {
        tenant: tenant.to_owned(),
        id,
    };
    let i = decode_item_record(bytes).map_err(|p| Error::new(name(), p))?;
    let check = || {
        if i.id() != id {
            return Err(format!("holds access request item {}", i.id()));
        }
        if i.version == 0 {
            return Err("version 0".to_owned());
        }
        i.check_invariants()
    };
    check().map_err(|reason| Error::new(name(), Problem::Invalid(reason)))?;
    Ok(i)
}

/// Encodes a policy projection: the policy, then its trailing sections (see the module
/// documentation), each written only when needed.
pub fn encode_policy(policy: &Policy) -> Vec<u8> {
    let mut out = encode_record(policy);
    let acts = policy.on_missing_access != MissingAccessAction::Report;
    if policy.expiry_warning.is_some() || acts {
        // A lead is never 0 (1..=MAX_PERIOD_MINS): 0 stands for "no lead" before an action.
        encode_body(&mut out, &policy.expiry_warning.unwrap_or(Minutes(0)));
    }
    if acts {
        encode_body(&mut out, &policy.on_missing_access);
    }
    out
}

/// A policy event's trailing sections: the previous and the new policy's `expiry_warning`,
/// and their `on_missing_access` (see the module documentation).
type PolicyEventSections = (
    (Option<Minutes>, Option<Minutes>),
    (MissingAccessAction, MissingAccessAction),
);

fn policy_event_sections(e: &PolicyEvent) -> PolicyEventSections {
    (
        (
            e.previous.as_ref().and_then(|p| p.expiry_warning),
            e.policy.expiry_warning,
        ),
        (
            e.previous
                .as_ref()
                .map_or(MissingAccessAction::Report, |p| p.on_missing_access),
            e.policy.on_missing_access,
        ),
    )
}

/// Decodes a policy record of any known version with its optional trailing sections.
fn decode_policy_record(bytes: &[u8]) -> Result<Policy, Problem> {
    let (version, rest) = split_version(bytes)?;
    match version {
        1 => {
            let (mut policy, rest): (Policy, _) = decode_prefix(rest)?;
            if rest.is_empty() {
                return Ok(policy);
            }
            let (lead, rest): (Minutes, _) = decode_prefix(rest)?;
            if rest.is_empty() {
                if lead.get() == 0 {
                    return Err(Problem::Invalid("an expiry warning of 0 minutes".into()));
                }
                policy.expiry_warning = Some(lead);
                return Ok(policy);
            }
            policy.expiry_warning = (lead.get() != 0).then_some(lead);
            policy.on_missing_access = decode_body(rest)?;
            if policy.on_missing_access == MissingAccessAction::Report {
                // The encoder writes no section rather than one holding the default.
                return Err(Problem::Invalid(
                    "a missing-access section holding the default".into(),
                ));
            }
            Ok(policy)
        }
        _ => unreachable!("split_version admits only known versions"),
    }
}

/// Decodes the policy projection of `tenant`. The policy's own rules are not re-checked: they
/// may tighten in later versions, and a stored policy must stay readable.
pub fn decode_policy(tenant: &str, bytes: &[u8]) -> Result<Policy, Error> {
    let name = || RecordName::Policy {
        tenant: tenant.to_owned(),
    };
    let p = decode_policy_record(bytes).map_err(|p| Error::new(name(), p))?;
    if p.version == 0 {
        return Err(Error::new(
            name(),
            Problem::Invalid("a stored policy has version 0".into()),
        ));
    }
    Ok(p)
}

/// Encodes an access request config projection.
pub fn encode_request_config(config: &request::AccessRequestConfig) -> Vec<u8> {
    encode_record(config)
}

/// Decodes the access request config projection of `tenant`. Its rules are not re-checked, as
/// for a policy: they may tighten in later versions, and a stored config must stay readable.
pub fn decode_request_config(
    tenant: &str,
    bytes: &[u8],
) -> Result<request::AccessRequestConfig, Error> {
    decode_record(bytes).map_err(|p| {
        Error::new(
            RecordName::RequestConfig {
                tenant: tenant.to_owned(),
            },
            p,
        )
    })
}

/// Encodes an idempotency record.
pub fn encode_idempotency(record: &Idempotency) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + record.result.len());
    out.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    out.extend_from_slice(&record.fingerprint.to_le_bytes());
    out.extend_from_slice(&record.expires_at.as_millis().to_le_bytes());
    out.extend_from_slice(&record.result);
    out
}

/// Decodes the idempotency record stored under (`tenant`, `key`).
pub fn decode_idempotency(tenant: &str, key: &str, bytes: &[u8]) -> Result<Idempotency, Error> {
    let fail = |problem| {
        Error::new(
            RecordName::Idempotency {
                tenant: tenant.to_owned(),
                key: key.to_owned(),
            },
            problem,
        )
    };
    let (version, rest) = split_version(bytes).map_err(fail)?;
    match version {
        1 => {
            let Some((fingerprint, rest)) = rest.split_first_chunk::<8>() else {
                return Err(fail(Problem::Truncated));
            };
            let Some((expires, result)) = rest.split_first_chunk::<8>() else {
                return Err(fail(Problem::Truncated));
            };
            let expires_at =
                Timestamp::from_millis(u64::from_le_bytes(*expires)).ok_or_else(|| {
                    fail(Problem::Invalid(
                        "expiry past the last storable instant".into(),
                    ))
                })?;
            if result.len() > crate::idempotency::MAX_RESULT_LEN {
                return Err(fail(Problem::Invalid(format!(
                    "result of {} bytes",
                    result.len()
                ))));
            }
            Ok(Idempotency {
                fingerprint: u64::from_le_bytes(*fingerprint),
                result: result.to_vec(),
                expires_at,
            })
        }
        _ => unreachable!("split_version admits only known versions"),
    }
}

/// What a batch committed besides its events: its idempotency results and the cursors it
/// moved. One record of the log's extras table (format version 4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// The idempotency keys the batch stored.
    pub keys: Vec<crate::idempotency::KeyPut>,
    /// The cursors the batch moved: name and sequence.
    pub cursors: Vec<(String, u64)>,
}

/// Encodes an extras record: version, key count (u32), each key as tenant (u16 length + bytes),
/// key (u16 length + bytes) and idempotency record (u32 length + [`encode_idempotency`]), then
/// the cursor count (u16) and each cursor as name (u16 length + bytes) and sequence (u64). All
/// little endian.
pub fn encode_extras(extras: &Extras) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        let len = u16::try_from(s.len()).expect("names and keys are bounded far below 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    let keys = u32::try_from(extras.keys.len()).expect("a batch's keys are bounded");
    out.extend_from_slice(&keys.to_le_bytes());
    for put in &extras.keys {
        put.assert_bounds();
        text(&mut out, put.tenant.as_str());
        text(&mut out, &put.key);
        let record = encode_idempotency(&put.record);
        let len = u32::try_from(record.len()).expect("results are bounded");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&record);
    }
    let cursors = u16::try_from(extras.cursors.len()).expect("a batch's cursors are bounded");
    out.extend_from_slice(&cursors.to_le_bytes());
    for (name, sequence) in &extras.cursors {
        text(&mut out, name);
        out.extend_from_slice(&sequence.to_le_bytes());
    }
    out
}

/// Decodes the extras record `number`.
pub fn decode_extras(number: u64, bytes: &[u8]) -> Result<Extras, Error> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], Problem> {
            if self.0.len() < n {
                return Err(Problem::Truncated);
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn u16(&mut self) -> Result<u16, Problem> {
            Ok(u16::from_le_bytes(
                self.take(2)?.try_into().expect("2 bytes"),
            ))
        }
        fn u32(&mut self) -> Result<u32, Problem> {
            Ok(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            ))
        }
        fn u64(&mut self) -> Result<u64, Problem> {
            Ok(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            ))
        }
        fn text(&mut self) -> Result<&'a str, Problem> {
            let len = usize::from(self.u16()?);
            std::str::from_utf8(self.take(len)?)
                .map_err(|_| Problem::Malformed("text is not UTF-8".into()))
        }
    }
    let fail = |problem| Error::new(RecordName::Extras(number), problem);
    let (version, rest) = split_version(bytes).map_err(fail)?;
    debug_assert_eq!(version, 1);
    let mut c = Cursor(rest);
    let mut extras = Extras::default();
    let keys = c.u32().map_err(fail)? as usize;
    if keys > crate::batch::MAX_BATCH_KEYS {
        return Err(fail(Problem::Invalid(format!("{keys} keys in one batch"))));
    }
    for _ in 0..keys {
        let tenant = c.text().map_err(fail)?;
        let tenant = TenantId::parse(tenant)
            .map_err(|e| fail(Problem::Invalid(format!("tenant {tenant:?}: {e}"))))?;
        let key = c.text().map_err(fail)?.to_owned();
        if key.is_empty() || key.len() > crate::idempotency::MAX_KEY_LEN {
            return Err(fail(Problem::Invalid(format!(
                "idempotency key of {} bytes",
                key.len()
            ))));
        }
        let len = c.u32().map_err(fail)? as usize;
        let record = decode_idempotency(tenant.as_str(), &key, c.take(len).map_err(fail)?)?;
        extras.keys.push(crate::idempotency::KeyPut {
            tenant,
            key,
            record,
        });
    }
    let cursors = usize::from(c.u16().map_err(fail)?);
    if cursors > crate::batch::MAX_BATCH_CURSORS {
        return Err(fail(Problem::Invalid(format!(
            "{cursors} cursors in one batch"
        ))));
    }
    for _ in 0..cursors {
        let name = c.text().map_err(fail)?.to_owned();
        if name.is_empty() || name.len() > crate::batch::MAX_CURSOR_NAME {
            return Err(fail(Problem::Invalid(format!(
                "cursor name of {} bytes",
                name.len()
            ))));
        }
        extras.cursors.push((name, c.u64().map_err(fail)?));
    }
    if !c.0.is_empty() {
        return Err(fail(Problem::TrailingBytes(c.0.len())));
    }
    Ok(extras)
}

/// Encodes any core value with the format's configuration, without a version prefix. For tests
/// that pin the core's enum variant indexes.
#[doc(hidden)]
pub fn encode_raw<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_body(&mut out, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jitflow_core::activation::{ActivationStatus, EndReason};
    use jitflow_core::connection::{ConnectionState, ConnectionType};
    use jitflow_core::lifecycle::{Actor, Change, Effect, Timer, TimerKind};

    use crate::test_support::{connection, event, policy_event};

    fn sample_envelope() -> Envelope {
        Envelope {
            sequence: 42,
            tenant: TenantId::parse("acme").unwrap(),
            stream_version: 3,
            batch_first: 40,
            batch_last: 44,
            payload: Payload::Connection(event()),
        }
    }

    #[test]
    fn envelope_round_trips() {
        let e = sample_envelope();
        let bytes = encode_envelope(&e);
        assert_eq!(&bytes[..3], &[1, 0, KIND_CONNECTION]);
        assert_eq!(decode_envelope(42, &bytes), Ok(e));
        let p = Envelope {
            payload: Payload::Policy(policy_event()),
            ..sample_envelope()
        };
        assert_eq!(decode_envelope(42, &encode_envelope(&p)), Ok(p));
    }

    #[test]
    fn a_policy_expiry_warning_is_a_trailing_section_only_when_set() {
        let plain = policy_event();
        let envelope = |payload| Envelope {
            payload: Payload::Policy(payload),
            ..sample_envelope()
        };
        let plain_bytes = encode_envelope(&envelope(plain.clone()));
        let plain_record = encode_policy(&plain.policy);
        // Unset: the bytes are the policy's and the event's bincode alone, as before the field.
        assert_eq!(plain_record, encode_record(&plain.policy));
        let mut set = plain.clone();
        set.policy.expiry_warning = Some(Minutes(25));
        let set_bytes = encode_envelope(&envelope(set.clone()));
        assert_eq!(&set_bytes[..plain_bytes.len()], plain_bytes.as_slice());
        assert!(set_bytes.len() > plain_bytes.len());
        assert_eq!(decode_envelope(42, &set_bytes), Ok(envelope(set.clone())));
        let record = encode_policy(&set.policy);
        assert_eq!(decode_policy("acme", &record), Ok(set.policy.clone()));
        assert_eq!(
            decode_policy("acme", &plain_record),
            Ok(plain.policy.clone())
        );
        // A previous policy's lead travels too; a lead for an absent previous policy is refused.
        let mut changed = set.clone();
        changed.previous = Some(set.policy.clone());
        changed.policy.expiry_warning = None;
        let bytes = encode_envelope(&envelope(changed.clone()));
        assert_eq!(decode_envelope(42, &bytes), Ok(envelope(changed)));
        let mut orphan = plain_bytes.clone();
        encode_body(&mut orphan, &(Some(Minutes(3)), None::<Minutes>));
        assert!(plain.previous.is_none(), "the sample is a first store");
        assert!(matches!(
            decode_envelope(42, &orphan).unwrap_err().problem,
            Problem::Invalid(_)
        ));
        let mut empty = plain_bytes;
        encode_body(&mut empty, &(None::<Minutes>, None::<Minutes>));
        assert!(matches!(
            decode_envelope(42, &empty).unwrap_err().problem,
            Problem::Invalid(_)
        ));
    }

    /// The missing-access action (format version 6) is a section after the lead's, written
    /// only when an action is not the default: with no lead set, the lead section holds 0.
    #[test]
    fn a_policy_missing_access_action_is_a_trailing_section_only_when_not_the_default() {
        let plain = policy_event();
        let envelope = |payload| Envelope {
            payload: Payload::Policy(payload),
            ..sample_envelope()
        };
        let plain_bytes = encode_envelope(&envelope(plain.clone()));
        for lead in [None, Some(Minutes(25))] {
            for action in [
                MissingAccessAction::GrantAgain,
                MissingAccessAction::EndActivation,
            ] {
                let mut set = plain.clone();
                set.policy.expiry_warning = lead;
                set.policy.on_missing_access = action;
                let bytes = encode_envelope(&envelope(set.clone()));
                assert_eq!(&bytes[..plain_bytes.len()], plain_bytes.as_slice());
                assert_eq!(decode_envelope(42, &bytes), Ok(envelope(set.clone())));
                let record = encode_policy(&set.policy);
                assert_eq!(decode_policy("acme", &record), Ok(set.policy.clone()));
                // The change back to the defaults keeps the previous policy's action.
                let mut back = plain.clone();
                back.previous = Some(set.policy.clone());
                let bytes = encode_envelope(&envelope(back.clone()));
                assert_eq!(decode_envelope(42, &bytes), Ok(envelope(back)));
            }
        }
        let invalid = |bytes: &[u8]| {
            matches!(
                decode_envelope(42, bytes).unwrap_err().problem,
                Problem::Invalid(_)
            )
        };
        // A section holding the defaults, or an action for an absent previous policy.
        let mut defaults = plain_bytes.clone();
        encode_body(&mut defaults, &(None::<Minutes>, None::<Minutes>));
        encode_body(
            &mut defaults,
            &(MissingAccessAction::Report, MissingAccessAction::Report),
        );
        assert!(invalid(&defaults));
        let mut orphan = plain_bytes.clone();
        encode_body(&mut orphan, &(None::<Minutes>, None::<Minutes>));
        encode_body(
            &mut orphan,
            &(
                MissingAccessAction::EndActivation,
                MissingAccessAction::Report,
            ),
        );
        assert!(invalid(&orphan));
        // An unknown action is a typed error, never a panic.
        let mut unknown = plain_bytes;
        encode_body(&mut unknown, &(None::<Minutes>, None::<Minutes>));
        unknown.extend_from_slice(&[0, 9]);
        assert!(decode_envelope(42, &unknown).is_err());
        // In the record: a zero lead alone, a section holding the default, an unknown action.
        let record = encode_policy(&plain.policy);
        let mut zero = record.clone();
        encode_body(&mut zero, &Minutes(0));
        let mut default = zero.clone();
        encode_body(&mut default, &MissingAccessAction::Report);
        let mut unknown = zero.clone();
        unknown.push(7);
        for bad in [zero, default, unknown] {
            let err = decode_policy("acme", &bad).unwrap_err();
            assert_eq!(
                err.record,
                RecordName::Policy {
                    tenant: "acme".into()
                }
            );
        }
    }

    #[test]
    fn every_truncation_is_a_typed_error_naming_the_record() {
        let bytes = encode_envelope(&sample_envelope());
        for len in 0..bytes.len() {
            let err = decode_envelope(42, &bytes[..len]).expect_err("truncated");
            assert_eq!(err.record, RecordName::Event(42), "at {len}");
            assert!(
                err.to_string().starts_with("cannot decode event 42"),
                "{err}"
            );
        }
        let err = decode_envelope(42, &bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(err.problem, Problem::Truncated);
    }

    /// Flipping any bit never panics: it is a typed error or, where the bit is part of free
    /// data, another valid envelope.
    #[test]
    fn every_bit_flip_is_an_error_or_a_valid_value() {
        let original = sample_envelope();
        let bytes = encode_envelope(&original);
        let mut errors = 0;
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            match decode_envelope(42, &bad) {
                Err(e) => {
                    assert_eq!(e.record, RecordName::Event(42));
                    errors += 1;
                }
                Ok(decoded) => assert_ne!(decoded, original, "flip {i} went unnoticed"),
            }
        }
        assert!(errors > 0);
    }

    #[test]
    fn version_kind_and_trailing_bytes_are_typed() {
        let mut bytes = encode_envelope(&sample_envelope());
        // After a signal's event, a byte starts a client section: here one cut short.
        bytes.push(0);
        assert_eq!(
            decode_envelope(42, &bytes).unwrap_err().problem,
            Problem::Truncated
        );
        bytes.pop();
        // After a whole client section, a byte is one too many.
        let mut event = event();
        event.client = jitflow_core::client::ClientInfo::new(Some("portal".into()), None).unwrap();
        let with_client = Envelope {
            payload: Payload::Connection(event),
            ..sample_envelope()
        };
        let mut longer = encode_envelope(&with_client);
        assert_eq!(decode_envelope(42, &longer), Ok(with_client));
        longer.push(0);
        assert_eq!(
            decode_envelope(42, &longer).unwrap_err().problem,
            Problem::TrailingBytes(1)
        );
        let mut newer = bytes.clone();
        newer[0] = 2;
        assert_eq!(
            decode_envelope(42, &newer).unwrap_err().problem,
            Problem::UnknownVersion {
                found: 2,
                newest: 1
            }
        );
        let mut zero = bytes.clone();
        zero[0] = 0;
        assert!(matches!(
            decode_envelope(42, &zero).unwrap_err().problem,
            Problem::UnknownVersion { found: 0, .. }
        ));
        let mut kind = bytes.clone();
        kind[2] = 9;
        assert_eq!(
            decode_envelope(42, &kind).unwrap_err().problem,
            Problem::UnknownKind(9)
        );
        // A sequence outside the batch bounds the header records.
        assert!(matches!(
            decode_envelope(7, &bytes).unwrap_err().problem,
            Problem::Invalid(_)
        ));
    }

    #[test]
    fn huge_length_prefix_is_refused_without_allocating() {
        // Tenant length prefix (varint 0xfd + u64) claiming 2^62 bytes.
        let mut bytes = vec![1, 0, KIND_CONNECTION, 0xfd];
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        bytes.extend_from_slice(&[0; 32]);
        let err = decode_envelope(1, &bytes).unwrap_err();
        assert!(matches!(err.problem, Problem::Malformed(_)), "{err}");
    }

    #[test]
    fn connection_records_are_checked_after_decoding() {
        let c = connection();
        let tenant = "acme";
        let bytes = encode_connection(&c);
        assert_eq!(decode_connection(tenant, c.id(), &bytes), Ok(c.clone()));
        // Stored under another id.
        let other = ConnectionId::from_u128(7);
        let err = decode_connection(tenant, other, &bytes).unwrap_err();
        assert!(matches!(err.problem, Problem::Invalid(_)));
        assert_eq!(
            err.to_string().split(':').next().unwrap(),
            format!("cannot decode connection acme/{other}")
        );
        // A state its activation does not allow: decodes, but breaks an invariant.
        let mut broken = c.clone();
        broken.state = ConnectionState::Activating;
        broken.activation = None;
        let err = decode_connection(tenant, c.id(), &encode_connection(&broken)).unwrap_err();
        assert!(matches!(err.problem, Problem::Invalid(_)), "{err}");
        for len in 0..bytes.len() {
            assert!(decode_connection(tenant, c.id(), &bytes[..len]).is_err());
        }
    }

    #[test]
    fn idempotency_records_round_trip_and_fail_typed() {
        let r = Idempotency {
            fingerprint: 0xdead_beef,
            result: b"{\"ok\":true}".to_vec(),
            expires_at: Timestamp::from_millis(1_800_000_000_000).unwrap(),
        };
        let bytes = encode_idempotency(&r);
        assert_eq!(decode_idempotency("acme", "k", &bytes), Ok(r));
        for len in 0..18 {
            let err = decode_idempotency("acme", "k", &bytes[..len]).unwrap_err();
            assert_eq!(err.problem, Problem::Truncated, "{len}");
            assert!(err.to_string().contains("idempotency key acme/\"k\""));
        }
    }

    /// bincode-serde writes enum variants by index: pins the index of every variant of the
    /// core's small persisted enums (the golden fixtures pin `Change`, `Effect` and the rest).
    #[test]
    fn core_enum_variant_indexes_are_pinned() {
        let first = |bytes: Vec<u8>| bytes[0];
        /// Asserts that `values`, in declaration order, encode with variant index 0, 1, 2, ...
        fn pinned<T: Serialize + fmt::Debug>(values: &[T]) {
            for (i, v) in values.iter().enumerate() {
                assert_eq!(usize::from(encode_raw(v)[0]), i, "{v:?}");
            }
        }
        pinned(&[
            ActivationStatus::Creating,
            ActivationStatus::Activating,
            ActivationStatus::Provisioned,
            ActivationStatus::Deprovisioning,
            ActivationStatus::Completed,
            ActivationStatus::Revoked,
            ActivationStatus::Invalid,
            ActivationStatus::Error,
        ]);
        pinned(&[
            ConnectionState::Available,
            ConnectionState::Activating,
            ConnectionState::Active,
            ConnectionState::Deactivating,
            ConnectionState::Expired,
        ]);
        pinned(&[
            ConnectionType::Jit,
            ConnectionType::Standing,
            ConnectionType::Na,
        ]);
        pinned(&[
            EndReason::Expired,
            EndReason::Deactivated,
            EndReason::ProvisionFailed,
        ]);
        pinned(&[
            TimerKind::Expiry,
            TimerKind::Warning,
            TimerKind::Retry,
            TimerKind::StandingRetry,
        ]);
        assert_eq!(first(encode_raw(&Actor::System)), 0);
        let a = ActivationId::from_u128(1);
        pinned(&[
            Effect::Validate { activation: a },
            Effect::Grant {
                activation: a,
                attempt: 1,
            },
            Effect::Revoke {
                activation: a,
                attempt: 1,
            },
            Effect::RevokeStanding { attempt: 1 },
        ]);
        {
            use jitflow_core::request::config::{ApproverType, TimeUnit};
            pinned(&[
                ApproverType::EntitlementOwner,
                ApproverType::SourceOwner,
                ApproverType::Manager,
                ApproverType::GovernanceGroup,
                ApproverType::Workflow,
            ]);
            pinned(&[
                TimeUnit::Hours,
                TimeUnit::Days,
                TimeUnit::Weeks,
                TimeUnit::Months,
            ]);
        }
        assert_eq!(first(encode_raw(&Change::Removed)), 2);
        assert_eq!(
            first(encode_raw(&Change::StandingRevoked { attempt: 1 })),
            21
        );
        let t = Timer {
            due: Timestamp::EPOCH,
            kind: TimerKind::Retry,
        };
        assert_eq!(encode_raw(&t), vec![0, 2]);
    }
}
