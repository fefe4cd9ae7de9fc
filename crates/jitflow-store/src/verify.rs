//! Verification: replay the whole log with `evolve` and compare the result with everything the
//! store derived from it (projections, activation history, stream index, timer index, intents,
//! secondary and assignment indexes).
//!
//! Reads one snapshot, so it runs beside the writer. It holds the replayed state in memory
//! (hundreds of bytes per connection): an operator's check and a test oracle, not a hot path.

use std::collections::{HashMap, HashSet};
use std::fmt;

use jitflow_core::activation::Activation;
use jitflow_core::connection::Connection;
use jitflow_core::history::ActivationRecord;
use jitflow_core::id::{ActivationId, ConnectionId, TenantId};
use jitflow_core::lifecycle::{EvolveError, Timer, evolve};
use jitflow_core::policy::Policy;
use jitflow_core::request::AccessRequestConfig;
use redb::TableDefinition;

use crate::codec::{self, Payload, Problem, RecordName, Stream};
use crate::index;
use crate::intents::Intent;
use crate::read::Reader;
use crate::store::Store;
use crate::tables::{
    ACTIVATIONS, ASSIGNMENTS, CONNECTION_INDEX, CONNECTIONS, HISTORY, HISTORY_INDEX, INTENTS,
    POLICIES, REQUEST_CONFIGS, STREAMS, STUCK, STUCK_CONNECTION, STUCK_ITEM, TIMERS,
    timer_kind_code,
};
use crate::timers::{self, Due, DueTimer};

/// The most differences a report lists; further ones are only counted in
/// [`Report::omitted`].
pub const MAX_DIFFERENCES: usize = 10_000;

/// Why verification could not run to the end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend failed to read (an I/O error, or damage beyond its checksums). Undecodable
    /// records are not errors: they are reported as differences.
    #[error("storage error while verifying: {0}")]
    Storage(#[source] std::io::Error),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Storage(e)
    }
}

/// One way the stored data disagrees with the replayed log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Difference {
    /// A stored record or key could not be decoded (an event is then left out of the replay).
    Undecodable(codec::Error),
    /// The log skips global sequences.
    SequenceGap {
        /// The sequence expected next.
        expected: u64,
        /// The sequence found.
        found: u64,
    },
    /// An event's batch bounds disagree with the events around it: part of a batch is missing.
    PartialBatch {
        /// The event.
        sequence: u64,
        /// Its recorded batch bounds.
        batch: (u64, u64),
    },
    /// An event's version in its stream is not the previous version + 1.
    StreamVersion {
        /// The event.
        sequence: u64,
        /// The version replay expects.
        expected: u64,
        /// The version stored.
        found: u64,
    },
    /// An event does not apply to the state replayed before it.
    DoesNotApply {
        /// The event.
        sequence: u64,
        /// Why.
        error: EvolveError,
    },
    /// A policy event is not based on the policy replayed before it.
    PolicyOutOfOrder {
        /// The event.
        sequence: u64,
        /// The tenant.
        tenant: TenantId,
    },
    /// A stream index entry is missing, unexpected, or points at another event.
    StreamIndex {
        /// The tenant.
        tenant: TenantId,
        /// The stream.
        stream: Stream,
        /// The version in the stream.
        version: u64,
        /// The sequence the log implies (`None`: there should be no entry).
        expected: Option<u64>,
        /// The sequence indexed (`None`: no entry).
        indexed: Option<u64>,
    },
    /// A connection projection differs from the replayed connection.
    Connection {
        /// The tenant.
        tenant: TenantId,
        /// The connection.
        id: ConnectionId,
        /// The replayed state (`None`: not registered, or removed).
        replayed: Option<Box<Connection>>,
        /// The stored projection (`None`: absent).
        stored: Option<Box<Connection>>,
    },
    /// An activation projection differs from the replayed activation.
    Activation {
        /// The tenant.
        tenant: TenantId,
        /// The activation.
        id: ActivationId,
        /// The replayed activation.
        replayed: Option<Box<Activation>>,
        /// The stored projection.
        stored: Option<Box<Activation>>,
    },
    /// An activation history record differs from the record the replay builds.
    History {
        /// The tenant.
        tenant: TenantId,
        /// The activation.
        id: ActivationId,
        /// The replayed record.
        replayed: Option<Box<ActivationRecord>>,
        /// The stored record.
        stored: Option<Box<ActivationRecord>>,
    },
    /// An entry of a secondary index (`connection_index`, `assignments`, `history_index`) is
    /// missing, or present without a record that has it.
    IndexEntry {
        /// The index.
        table: &'static str,
        /// The entry's key, as debug text.
        key: String,
        /// `true`: the replayed records need it and it is absent; `false`: it is present and
        /// no replayed record has it.
        missing: bool,
    },
    /// A policy projection differs from the last policy event's policy.
    Policy {
        /// The tenant.
        tenant: TenantId,
        /// The replayed policy.
        replayed: Option<Box<Policy>>,
        /// The stored projection.
        stored: Option<Box<Policy>>,
    },
    /// A timer of a replayed connection is not in the timer index.
    TimerMissing(DueTimer),
    /// The timer index holds a timer no replayed connection has.
    TimerUnexpected(DueTimer),
    /// A replayed connection with pending effects has no intent row.
    IntentMissing(Intent),
    /// An intent row for a connection without pending effects.
    IntentUnexpected(Intent),
    /// The stuck table disagrees with the replay: a stuck connection or item without its row
    /// (`expected`), or a row for one that is not stuck.
    Stuck {
        /// The tenant, as stored.
        tenant: String,
        /// `connection` or `item`.
        workflow: &'static str,
        /// The connection's or item's id.
        id: u128,
        /// Whether the replay expects the row.
        expected: bool,
    },
    /// An access request item's record, index row, timer or intent differs from the replay.
    Request(crate::request::verify::Difference),
    /// An access request config event is not based on the config replayed before it.
    RequestConfigOutOfOrder {
        /// The event's global sequence.
        sequence: u64,
        /// The tenant.
        tenant: TenantId,
    },
    /// An access request config projection differs from the last config event's config.
    RequestConfig {
        /// The tenant.
        tenant: TenantId,
        /// The replayed config.
        replayed: Option<Box<AccessRequestConfig>>,
        /// The stored projection.
        stored: Option<Box<AccessRequestConfig>>,
    },
    /// An extras record (idempotency keys and cursors of one batch) is missing from its
    /// contiguous numbering, or does not decode.
    Extras {
        /// The record's number.
        number: u64,
        /// What is wrong.
        problem: String,
    },
    /// An idempotency record differs from the last one the log's extras stored for its key:
    /// stored without being logged, logged and missing though not expired, a different
    /// record, or out of step with its expiry index.
    IdempotencyKey {
        /// The tenant.
        tenant: String,
        /// The key.
        key: String,
        /// What differs.
        problem: &'static str,
    },
    /// A consumer's cursor differs from the furthest position the log's extras moved it to.
    Cursor {
        /// The cursor's name.
        name: String,
        /// Where the log moved it (0: never).
        replayed: u64,
        /// Where the stored cursor is (0: absent).
        stored: u64,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |present: bool| if present { "present" } else { "absent" };
        match self {
            Difference::Undecodable(e) => write!(f, "{e}"),
            Difference::SequenceGap { expected, found } => {
                write!(f, "the log skips from sequence {expected} to {found}")
            }
            Difference::PartialBatch { sequence, batch } => write!(
                f,
                "event {sequence} belongs to batch {}..={}, which is not whole",
                batch.0, batch.1
            ),
            Difference::StreamVersion {
                sequence,
                expected,
                found,
            } => write!(
                f,
                "event {sequence} has stream version {found}, replay expects {expected}"
            ),
            Difference::DoesNotApply { sequence, error } => {
                write!(f, "event {sequence} does not apply: {error}")
            }
            Difference::PolicyOutOfOrder { sequence, tenant } => write!(
                f,
                "policy event {sequence} of tenant {tenant} is not based on the policy before it"
            ),
            Difference::StreamIndex {
                tenant,
                stream,
                version,
                expected,
                indexed,
            } => write!(
                f,
                "stream index of {stream} of tenant {tenant}, version {version}: log says {expected:?}, index says {indexed:?}"
            ),
            Difference::Connection {
                tenant,
                id,
                replayed,
                stored,
            } => write!(
                f,
                "connection {tenant}/{id} differs (replayed {}, stored {})",
                side(replayed.is_some()),
                side(stored.is_some())
            ),
            Difference::Activation {
                tenant,
                id,
                replayed,
                stored,
            } => write!(
                f,
                "activation {tenant}/{id} differs (replayed {}, stored {})",
                side(replayed.is_some()),
                side(stored.is_some())
            ),
            Difference::History {
                tenant,
                id,
                replayed,
                stored,
            } => write!(
                f,
                "activation history record {tenant}/{id} differs (replayed {}, stored {})",
                side(replayed.is_some()),
                side(stored.is_some())
            ),
            Difference::IndexEntry {
                table,
                key,
                missing,
            } => write!(
                f,
                "index {table}: entry {key} is {}",
                if *missing { "missing" } else { "unexpected" }
            ),
            Difference::Policy {
                tenant,
                replayed,
                stored,
            } => write!(
                f,
                "policy of tenant {tenant} differs (replayed {}, stored {})",
                side(replayed.is_some()),
                side(stored.is_some())
            ),
            Difference::TimerMissing(t) => write!(
                f,
                "timer {:?} due {} of connection {}/{} is not indexed",
                t.timer.kind, t.due, t.tenant, t.connection
            ),
            Difference::TimerUnexpected(t) => write!(
                f,
                "indexed timer {:?} due {} of connection {}/{} is not armed",
                t.timer.kind, t.due, t.tenant, t.connection
            ),
            Difference::Stuck {
                tenant,
                workflow,
                id,
                expected,
            } => write!(
                f,
                "{workflow} {id:#x} of tenant {tenant:?} {} in the stuck table",
                if *expected {
                    "is stuck but has no row"
                } else {
                    "has a row but is not stuck"
                }
            ),
            Difference::IntentMissing(i) => write!(
                f,
                "connection {}/{} has pending effects but no intent row",
                i.tenant, i.connection
            ),
            Difference::IntentUnexpected(i) => write!(
                f,
                "intent row for connection {}/{} without pending effects",
                i.tenant, i.connection
            ),
            Difference::Request(d) => write!(f, "{d}"),
            Difference::RequestConfigOutOfOrder { sequence, tenant } => write!(
                f,
                "access request config event {sequence} of tenant {tenant} is not based on the config before it"
            ),
            Difference::RequestConfig {
                tenant,
                replayed,
                stored,
            } => write!(
                f,
                "access request config of tenant {tenant} differs (replayed {}, stored {})",
                side(replayed.is_some()),
                side(stored.is_some())
            ),
            Difference::Extras { number, problem } => {
                write!(f, "extras record {number}: {problem}")
            }
            Difference::IdempotencyKey {
                tenant,
                key,
                problem,
            } => write!(f, "idempotency key {key:?} of tenant {tenant}: {problem}"),
            Difference::Cursor {
                name,
                replayed,
                stored,
            } => write!(
                f,
                "cursor {name:?} is at {stored}; the log moved it to {replayed}"
            ),
        }
    }
}

/// What [`Store::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events replayed.
    pub events: u64,
    /// Connections alive after the replay.
    pub connections: u64,
    /// Activations replayed.
    pub activations: u64,
    /// Tenants with a policy.
    pub policies: u64,
    /// Tenants with an access request config (the others have the defaults).
    pub request_configs: u64,
    /// Timers armed after the replay.
    pub timers: u64,
    /// Connections with pending effects after the replay.
    pub intents: u64,
    /// Access request items after the replay.
    pub items: u64,
    /// Access request items with pending effects after the replay.
    pub item_intents: u64,
    /// Extras records replayed (idempotency keys and cursors of batches).
    pub extras: u64,
    /// Idempotency keys stored (compared with the log's extras).
    pub idempotency_keys: u64,
    /// Cursors the log moved.
    pub cursors: u64,
    /// Every difference found, in the order found, up to [`MAX_DIFFERENCES`].
    pub differences: Vec<Difference>,
    /// Differences found beyond [`MAX_DIFFERENCES`].
    pub omitted: u64,
}

impl Report {
    /// Whether the store agrees with its log.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty() && self.omitted == 0
    }

    pub(crate) fn push(&mut self, difference: Difference) {
        if self.differences.len() < MAX_DIFFERENCES {
            self.differences.push(difference);
        } else {
            self.omitted += 1;
        }
    }
}

/// Tenants seen in the log, numbered to keep the replay's keys small.
#[derive(Default)]
pub(crate) struct Tenants {
    numbers: HashMap<String, u32>,
    ids: Vec<TenantId>,
}

impl Tenants {
    fn intern(&mut self, tenant: &TenantId) -> u32 {
        if let Some(&n) = self.numbers.get(tenant.as_str()) {
            return n;
        }
        let n = u32::try_from(self.ids.len()).expect("fewer than 2^32 tenants");
        self.numbers.insert(tenant.as_str().to_owned(), n);
        self.ids.push(tenant.clone());
        n
    }

    pub(crate) fn number(&self, tenant: &str) -> Option<u32> {
        self.numbers.get(tenant).copied()
    }

    pub(crate) fn id(&self, n: u32) -> &TenantId {
        &self.ids[n as usize]
    }
}

/// The state replay builds.
#[derive(Default)]
struct Replay {
    tenants: Tenants,
    connections: HashMap<(u32, u128), Connection>,
    activations: HashMap<(u32, u128), Activation>,
    history: HashMap<(u32, u128), ActivationRecord>,
    policies: HashMap<u32, Policy>,
    request_configs: HashMap<u32, AccessRequestConfig>,
    /// Last version of each (tenant, stream kind, stream id).
    versions: HashMap<(u32, u8, u128), u64>,
    /// The stream index the log implies.
    index: HashMap<(u32, u8, u128, u64), u64>,
    /// Access request items.
    items: HashMap<(u32, u128), jitflow_core::request::Item>,
}

impl Replay {
    fn next_version(&mut self, tenant: u32, stream: Stream, sequence: u64) -> u64 {
        let (kind, id) = stream.key_parts();
        let version = self.versions.entry((tenant, kind, id)).or_insert(0);
        *version += 1;
        self.index.insert((tenant, kind, id, *version), sequence);
        *version
    }
}

fn bad_key(table: &'static str, key: String, why: &str) -> Difference {
    Difference::Undecodable(codec::Error::new(
        RecordName::Key { table, key },
        Problem::Invalid(why.to_owned()),
    ))
}

impl Store {
    /// Replays the whole log with `evolve` (per connection stream; a tenant's policy is its
    /// last policy event's) and compares the result with the stored connection, activation and
    /// policy projections, the stream index, the timer index (which must equal the union of
    /// `Connection::timers` of all connections) and the intents. Reports every difference.
    pub fn verify(&self) -> Result<Report, Error> {
        let reader = self.snapshot().map_err(Error::Storage)?;
        let mut report = Report::default();
        let mut replay = Replay::default();
        replay_log(&reader, &mut replay, &mut report)?;
        compare_streams(&reader, &mut replay, &mut report)?;

        report.connections = replay.connections.len() as u64;
        report.activations = replay.activations.len() as u64;
        report.policies = replay.policies.len() as u64;
        report.request_configs = replay.request_configs.len() as u64;
        let mut timers: HashSet<(u32, u128, u64, u8)> = HashSet::new();
        let mut intents: HashSet<(u32, u128)> = HashSet::new();
        for (&(tenant, id), c) in &replay.connections {
            for t in c.timers() {
                timers.insert((tenant, id, t.due.as_millis(), timer_kind_code(t.kind)));
            }
            if !c.pending_effects().is_empty() {
                intents.insert((tenant, id));
            }
        }
        crate::request::verify::add_timers(&replay.items, &mut timers);
        report.timers = timers.len() as u64;
        report.intents = intents.len() as u64;
        report.items = replay.items.len() as u64;

        compare_timers(&reader, &replay.tenants, timers, &mut report)?;
        compare_intents(&reader, &replay.tenants, intents, &mut report)?;
        compare_stuck(&reader, &replay, &mut report)?;
        compare_indexes(&reader, &replay, &mut report)?;
        compare_connections(&reader, &mut replay, &mut report)?;
        compare_history(&reader, &mut replay, &mut report)?;
        compare_activations(&reader, &mut replay, &mut report)?;
        compare_policies(&reader, &mut replay, &mut report)?;
        compare_request_configs(&reader, &mut replay, &mut report)?;
        crate::request::verify::compare(&reader, &replay.tenants, replay.items, &mut report)?;
        let (keys, cursors) = replay_extras(&reader, &mut report)?;
        compare_idempotency(&reader, keys, &mut report)?;
        compare_cursors(&reader, cursors, &mut report)?;
        if !report.is_clean() {
            tracing::warn!(
                differences = report.differences.len() as u64 + report.omitted,
                "verify found differences"
            );
        }
        Ok(report)
    }
}

/// The idempotency records the log's extras stored last for each key, and the furthest
/// position they moved each cursor to.
type ReplayedKeys = HashMap<(String, String), crate::idempotency::Idempotency>;

fn replay_extras(
    reader: &Reader,
    report: &mut Report,
) -> Result<(ReplayedKeys, HashMap<String, u64>), Error> {
    let mut keys = ReplayedKeys::new();
    let mut cursors: HashMap<String, u64> = HashMap::new();
    let mut expected = 1;
    for entry in reader
        .base()
        .records(crate::backend::Log::Extras, 1, reader.extras)?
    {
        let (number, v) = entry?;
        if number != expected {
            report.push(Difference::Extras {
                number: expected,
                problem: format!("missing (the next record is {number})"),
            });
        }
        expected = number + 1;
        report.extras += 1;
        match codec::decode_extras(number, &v) {
            Ok(extras) => {
                for put in extras.keys {
                    keys.insert((put.tenant.as_str().to_owned(), put.key), put.record);
                }
                for (name, sequence) in extras.cursors {
                    let at = cursors.entry(name).or_default();
                    *at = (*at).max(sequence);
                }
            }
            Err(e) => report.push(Difference::Extras {
                number,
                problem: e.to_string(),
            }),
        }
    }
    if expected <= reader.extras {
        report.push(Difference::Extras {
            number: expected,
            problem: format!("missing (the log's extras end at {})", expected - 1),
        });
    }
    Ok((keys, cursors))
}

/// Compares the stored idempotency records and their expiry index with the log's extras. A
/// logged key may be missing once a checkpoint purged it (it expired by the latest purge's
/// time, `PURGED_THROUGH_KEY`); every other difference is reported.
fn compare_idempotency(
    reader: &Reader,
    mut replayed: ReplayedKeys,
    report: &mut Report,
) -> Result<(), Error> {
    // Checkpoints purge keys expired at their clock's time, and record the latest.
    let purged_through = reader
        .open(crate::tables::META)?
        .get(crate::tables::PURGED_THROUGH_KEY)?
        .map_or(0, |v| v.value());
    let mut expiries: HashSet<(u64, String, String)> = HashSet::new();
    for entry in reader
        .open(crate::tables::IDEMPOTENCY_EXPIRY)?
        .range::<(u64, &str, &str)>(..)?
    {
        let (k, _) = entry?;
        let (at, tenant, key) = k.value();
        expiries.insert((at, tenant.to_owned(), key.to_owned()));
    }
    let mut problem = |tenant: &str, key: &str, problem: &'static str| {
        report.push(Difference::IdempotencyKey {
            tenant: tenant.to_owned(),
            key: key.to_owned(),
            problem,
        });
    };
    let mut stored_count = 0;
    for entry in reader
        .open(crate::tables::IDEMPOTENCY)?
        .range::<(&str, &str)>(..)?
    {
        let (k, v) = entry?;
        let (tenant, key) = k.value();
        stored_count += 1;
        let stored = match codec::decode_idempotency(tenant, key, v.value()) {
            Ok(r) => r,
            Err(_) => {
                problem(tenant, key, "the stored record does not decode");
                continue;
            }
        };
        match replayed.remove(&(tenant.to_owned(), key.to_owned())) {
            None => problem(
                tenant,
                key,
                "stored, but no extras record of the log holds it",
            ),
            Some(logged) if logged != stored => {
                problem(tenant, key, "the stored record differs from the logged one")
            }
            Some(_) => {}
        }
        let indexed = (
            stored.expires_at.as_millis(),
            tenant.to_owned(),
            key.to_owned(),
        );
        if !expiries.remove(&indexed) {
            problem(tenant, key, "stored, but missing from the expiry index");
        }
    }
    for ((tenant, key), logged) in replayed {
        if logged.expires_at.as_millis() > purged_through {
            problem(&tenant, &key, "logged and not purged, but not stored");
        }
    }
    for (_, tenant, key) in expiries {
        problem(&tenant, &key, "in the expiry index, but not stored");
    }
    report.idempotency_keys = stored_count;
    Ok(())
}

/// Compares the stored cursors with the furthest positions the log's extras moved them to.
fn compare_cursors(
    reader: &Reader,
    mut replayed: HashMap<String, u64>,
    report: &mut Report,
) -> Result<(), Error> {
    report.cursors = replayed.len() as u64;
    let prefix = crate::tables::CURSOR_PREFIX;
    let meta = reader.open(crate::tables::META)?;
    for entry in meta.range::<&str>(prefix..)? {
        let (k, v) = entry?;
        let Some(name) = k.value().strip_prefix(prefix) else {
            break;
        };
        let stored = v.value();
        let logged = replayed.remove(name).unwrap_or(0);
        if logged != stored {
            report.push(Difference::Cursor {
                name: name.to_owned(),
                replayed: logged,
                stored,
            });
        }
    }
    for (name, logged) in replayed {
        report.push(Difference::Cursor {
            name,
            replayed: logged,
            stored: 0,
        });
    }
    Ok(())
}

fn replay_log(reader: &Reader, replay: &mut Replay, report: &mut Report) -> Result<(), Error> {
    let mut expected = 1;
    // The batch of the previous decoded event, and that event's sequence.
    let mut batch: Option<(u64, u64)> = None;
    let mut previous = 0;
    for entry in reader
        .base()
        .records(crate::backend::Log::Events, 1, u64::MAX)?
    {
        let (sequence, v) = entry?;
        if sequence != expected {
            report.push(Difference::SequenceGap {
                expected,
                found: sequence,
            });
        }
        expected = sequence + 1;
        report.events += 1;
        let envelope = match codec::decode_envelope(sequence, &v) {
            Ok(e) => e,
            Err(e) => {
                report.push(Difference::Undecodable(e));
                continue;
            }
        };
        let bounds = (envelope.batch_first, envelope.batch_last);
        match batch {
            Some(current) if sequence <= current.1 => {
                if bounds != current {
                    report.push(Difference::PartialBatch {
                        sequence,
                        batch: bounds,
                    });
                }
            }
            _ => {
                // A batch starts here: the previous one must have ended with the previous event.
                if let Some(ended) = batch
                    && ended.1 != previous
                {
                    report.push(Difference::PartialBatch {
                        sequence: previous,
                        batch: ended,
                    });
                }
                if bounds.0 != sequence {
                    report.push(Difference::PartialBatch {
                        sequence,
                        batch: bounds,
                    });
                }
                batch = Some(bounds);
            }
        }
        previous = sequence;

        let tenant = replay.tenants.intern(&envelope.tenant);
        let stream = envelope.stream();
        let version = replay.next_version(tenant, stream, sequence);
        if version != envelope.stream_version {
            report.push(Difference::StreamVersion {
                sequence,
                expected: version,
                found: envelope.stream_version,
            });
        }
        match envelope.payload {
            Payload::Connection(event) => {
                if let Some(activation) = event.activation {
                    replay.next_version(tenant, Stream::Activation(activation), sequence);
                }
                let key = (tenant, event.connection.as_u128());
                let before = replay.connections.remove(&key);
                match evolve(before.clone(), &event) {
                    Ok(after) => {
                        if let (Some(id), Some(c)) = (event.activation, after.as_ref())
                            && let Some(a) = c.activation.as_ref().filter(|a| a.id == id)
                        {
                            replay.activations.insert((tenant, id.as_u128()), a.clone());
                            replay
                                .history
                                .insert((tenant, id.as_u128()), ActivationRecord::new(a, c));
                        }
                        if let Some(c) = after {
                            replay.connections.insert(key, c);
                        }
                    }
                    Err(error) => {
                        report.push(Difference::DoesNotApply { sequence, error });
                        if let Some(c) = before {
                            replay.connections.insert(key, c);
                        }
                    }
                }
            }
            Payload::Policy(event) => {
                if event.previous.as_ref() != replay.policies.get(&tenant) {
                    report.push(Difference::PolicyOutOfOrder {
                        sequence,
                        tenant: envelope.tenant.clone(),
                    });
                }
                replay.policies.insert(tenant, event.policy);
            }
            Payload::Request(event) => {
                crate::request::verify::replay(&mut replay.items, tenant, sequence, &event, report);
            }
            Payload::RequestConfig(event) => {
                if event.previous.as_ref() != replay.request_configs.get(&tenant) {
                    report.push(Difference::RequestConfigOutOfOrder {
                        sequence,
                        tenant: envelope.tenant.clone(),
                    });
                }
                replay.request_configs.insert(tenant, event.config);
            }
        }
    }
    if let Some(bounds) = batch
        && bounds.1 != previous
    {
        report.push(Difference::PartialBatch {
            sequence: previous,
            batch: bounds,
        });
    }
    Ok(())
}

fn compare_streams(reader: &Reader, replay: &mut Replay, report: &mut Report) -> Result<(), Error> {
    let index = reader.open(STREAMS)?;
    for entry in index.range::<(&str, u8, u128, u64)>(..)? {
        let (k, v) = entry?;
        let (tenant, kind, id, version) = k.value();
        let indexed = v.value();
        let Some(stream) = Stream::from_key_parts(kind, id) else {
            report.push(bad_key(
                "streams",
                format!("({tenant:?}, {kind}, {id:#x}, {version})"),
                "unknown stream kind",
            ));
            continue;
        };
        let expected = replay
            .tenants
            .number(tenant)
            .and_then(|n| replay.index.remove(&(n, kind, id, version)));
        if expected != Some(indexed) {
            match TenantId::parse(tenant) {
                Ok(tenant) => report.push(Difference::StreamIndex {
                    tenant,
                    stream,
                    version,
                    expected,
                    indexed: Some(indexed),
                }),
                Err(_) => report.push(bad_key(
                    "streams",
                    format!("({tenant:?}, {kind}, {id:#x}, {version})"),
                    "not a valid tenant id",
                )),
            }
        }
    }
    let mut missing: Vec<_> = replay.index.drain().collect();
    missing.sort_unstable_by_key(|&(_, sequence)| sequence);
    for ((tenant, kind, id, version), sequence) in missing {
        let stream = Stream::from_key_parts(kind, id).expect("replay builds known streams");
        report.push(Difference::StreamIndex {
            tenant: replay.tenants.id(tenant).clone(),
            stream,
            version,
            expected: Some(sequence),
            indexed: None,
        });
    }
    Ok(())
}

fn compare_timers(
    reader: &Reader,
    tenants: &Tenants,
    mut expected: HashSet<(u32, u128, u64, u8)>,
    report: &mut Report,
) -> Result<(), Error> {
    let table = reader.open(TIMERS)?;
    for entry in table.range::<(u64, &str, u128, u8)>(..)? {
        let (k, _) = entry?;
        let (due, tenant, connection, kind) = k.value();
        let found = tenants
            .number(tenant)
            .is_some_and(|n| expected.remove(&(n, connection, due, kind)));
        if !found {
            match timers::decode_key(k.value()) {
                Ok(Due::Connection(timer)) => report.push(Difference::TimerUnexpected(timer)),
                Ok(Due::Item(timer)) => report.push(Difference::Request(
                    crate::request::verify::Difference::TimerUnexpected(timer),
                )),
                Err(e) => report.push(Difference::Undecodable(e)),
            }
        }
    }
    let mut missing: Vec<DueTimer> = Vec::new();
    let mut missing_items = Vec::new();
    for (tenant, id, due, kind) in expected {
        let due = jitflow_core::time::Timestamp::from_millis(due).expect("replayed timer");
        let tenant = tenants.id(tenant).clone();
        match crate::tables::timer_kind_from_code(kind) {
            Some(kind) => missing.push(DueTimer {
                due,
                tenant,
                connection: ConnectionId::from_u128(id),
                timer: Timer { due, kind },
            }),
            None => missing_items.push(crate::request::verify::due_timer(tenant, id, due, kind)),
        }
    }
    missing.sort_unstable();
    for timer in missing {
        report.push(Difference::TimerMissing(timer));
    }
    missing_items.sort_unstable();
    for timer in missing_items {
        report.push(Difference::Request(
            crate::request::verify::Difference::TimerMissing(timer),
        ));
    }
    Ok(())
}

/// The stuck table against the replayed connections and items (`Workflow::is_stuck`).
fn compare_stuck(reader: &Reader, replay: &Replay, report: &mut Report) -> Result<(), Error> {
    use jitflow_core::workflow::Workflow;
    let name = |code| {
        if code == STUCK_CONNECTION {
            "connection"
        } else {
            "item"
        }
    };
    let mut expected: HashSet<(String, u8, u128)> = HashSet::new();
    for (&(tenant, id), c) in &replay.connections {
        if c.is_stuck() {
            let t = replay.tenants.id(tenant).as_str().to_owned();
            expected.insert((t, STUCK_CONNECTION, id));
        }
    }
    for (&(tenant, id), item) in &replay.items {
        if item.is_stuck() {
            let t = replay.tenants.id(tenant).as_str().to_owned();
            expected.insert((t, STUCK_ITEM, id));
        }
    }
    let table = reader.open(STUCK)?;
    for entry in table.range::<(&str, u8, u128)>(..)? {
        let (k, _) = entry?;
        let (tenant, code, id) = k.value();
        if !expected.remove(&(tenant.to_owned(), code, id)) {
            report.push(Difference::Stuck {
                tenant: tenant.to_owned(),
                workflow: name(code),
                id,
                expected: false,
            });
        }
    }
    let mut missing: Vec<_> = expected.into_iter().collect();
    missing.sort_unstable();
    for (tenant, code, id) in missing {
        report.push(Difference::Stuck {
            tenant,
            workflow: name(code),
            id,
            expected: true,
        });
    }
    Ok(())
}

fn compare_intents(
    reader: &Reader,
    tenants: &Tenants,
    mut expected: HashSet<(u32, u128)>,
    report: &mut Report,
) -> Result<(), Error> {
    let table = reader.open(INTENTS)?;
    for entry in table.range::<(&str, u128)>(..)? {
        let (k, _) = entry?;
        let (tenant, connection) = k.value();
        let found = tenants
            .number(tenant)
            .is_some_and(|n| expected.remove(&(n, connection)));
        if !found {
            match TenantId::parse(tenant) {
                Ok(tenant) => report.push(Difference::IntentUnexpected(Intent {
                    tenant,
                    connection: ConnectionId::from_u128(connection),
                })),
                Err(_) => report.push(bad_key(
                    "intents",
                    format!("({tenant:?}, {connection:#x})"),
                    "not a valid tenant id",
                )),
            }
        }
    }
    let mut missing: Vec<Intent> = expected
        .into_iter()
        .map(|(tenant, connection)| Intent {
            tenant: tenants.id(tenant).clone(),
            connection: ConnectionId::from_u128(connection),
        })
        .collect();
    missing.sort_unstable();
    for intent in missing {
        report.push(Difference::IntentMissing(intent));
    }
    Ok(())
}

/// Builds the difference for one record: (tenant, id, replayed, stored).
pub(crate) type MakeDifference<T> =
    fn(TenantId, u128, Option<Box<T>>, Option<Box<T>>) -> Difference;

/// One projection table keyed by (tenant, id) and how to compare it with the replay.
pub(crate) struct ProjectionTable<T> {
    pub(crate) table: TableDefinition<'static, (&'static str, u128), &'static [u8]>,
    pub(crate) name: &'static str,
    pub(crate) decode: fn(&str, u128, &[u8]) -> Result<T, codec::Error>,
    pub(crate) difference: MakeDifference<T>,
}

/// Compares every stored record of `projection` with the replayed one, consuming `replayed`;
/// what is left there afterwards was replayed but not stored.
pub(crate) fn compare_projection<T: PartialEq>(
    reader: &Reader,
    projection: &ProjectionTable<T>,
    tenants: &Tenants,
    replayed: &mut HashMap<(u32, u128), T>,
    report: &mut Report,
) -> Result<(), Error> {
    let table = reader.open(projection.table)?;
    for entry in table.range::<(&str, u128)>(..)? {
        let (k, v) = entry?;
        let (tenant, id) = k.value();
        let expected = tenants
            .number(tenant)
            .and_then(|n| replayed.remove(&(n, id)));
        let stored = match (projection.decode)(tenant, id, v.value()) {
            Ok(record) => record,
            Err(e) => {
                report.push(Difference::Undecodable(e));
                continue;
            }
        };
        if expected.as_ref() != Some(&stored) {
            let Ok(tenant) = TenantId::parse(tenant) else {
                report.push(bad_key(
                    projection.name,
                    // Both id kinds print as the same canonical UUID.
                    format!("({tenant:?}, {})", ConnectionId::from_u128(id)),
                    "not a valid tenant id",
                ));
                continue;
            };
            report.push((projection.difference)(
                tenant,
                id,
                expected.map(Box::new),
                Some(Box::new(stored)),
            ));
        }
    }
    let mut missing: Vec<_> = replayed.drain().collect();
    missing.sort_unstable_by_key(|&(key, _)| key);
    for ((tenant, id), record) in missing {
        report.push((projection.difference)(
            tenants.id(tenant).clone(),
            id,
            Some(Box::new(record)),
            None,
        ));
    }
    Ok(())
}

fn compare_connections(
    reader: &Reader,
    replay: &mut Replay,
    report: &mut Report,
) -> Result<(), Error> {
    let projection = ProjectionTable {
        table: CONNECTIONS,
        name: "connections",
        decode: |tenant, id, bytes| {
            codec::decode_connection(tenant, ConnectionId::from_u128(id), bytes)
        },
        difference: |tenant, id, replayed, stored| Difference::Connection {
            tenant,
            id: ConnectionId::from_u128(id),
            replayed,
            stored,
        },
    };
    compare_projection(
        reader,
        &projection,
        &replay.tenants,
        &mut replay.connections,
        report,
    )
}

fn compare_activations(
    reader: &Reader,
    replay: &mut Replay,
    report: &mut Report,
) -> Result<(), Error> {
    let projection = ProjectionTable {
        table: ACTIVATIONS,
        name: "activations",
        decode: |tenant, id, bytes| {
            codec::decode_activation(tenant, ActivationId::from_u128(id), bytes)
        },
        difference: |tenant, id, replayed, stored| Difference::Activation {
            tenant,
            id: ActivationId::from_u128(id),
            replayed,
            stored,
        },
    };
    compare_projection(
        reader,
        &projection,
        &replay.tenants,
        &mut replay.activations,
        report,
    )
}

fn compare_history(reader: &Reader, replay: &mut Replay, report: &mut Report) -> Result<(), Error> {
    let projection = ProjectionTable {
        table: HISTORY,
        name: "history",
        decode: |tenant, id, bytes| {
            codec::decode_history(tenant, ActivationId::from_u128(id), bytes)
        },
        difference: |tenant, id, replayed, stored| Difference::History {
            tenant,
            id: ActivationId::from_u128(id),
            replayed,
            stored,
        },
    };
    compare_projection(
        reader,
        &projection,
        &replay.tenants,
        &mut replay.history,
        report,
    )
}

/// Compares one index keyed (tenant, code, value key, id) with the entries `expected`.
fn compare_index(
    reader: &Reader,
    table: TableDefinition<'static, (&'static str, u8, &'static [u8], u128), ()>,
    name: &'static str,
    tenants: &Tenants,
    mut expected: HashSet<(u32, u8, Vec<u8>, u128)>,
    report: &mut Report,
) -> Result<(), Error> {
    let index = reader.open(table)?;
    for entry in index.range::<(&str, u8, &[u8], u128)>(..)? {
        let (k, _) = entry?;
        let (tenant, code, value, id) = k.value();
        let found = tenants
            .number(tenant)
            .is_some_and(|n| expected.remove(&(n, code, value.to_vec(), id)));
        if !found {
            report.push(Difference::IndexEntry {
                table: name,
                key: format!("({tenant:?}, {code}, {value:?}, {id:#x})"),
                missing: false,
            });
        }
    }
    let mut missing: Vec<_> = expected.into_iter().collect();
    missing.sort_unstable();
    for (tenant, code, value, id) in missing {
        report.push(Difference::IndexEntry {
            table: name,
            key: format!(
                "({:?}, {code}, {value:?}, {id:#x})",
                tenants.id(tenant).as_str()
            ),
            missing: true,
        });
    }
    Ok(())
}

/// Compares the secondary indexes and the assignment index with the replayed records'.
fn compare_indexes(reader: &Reader, replay: &Replay, report: &mut Report) -> Result<(), Error> {
    let mut connection_entries = HashSet::new();
    let mut assignments = HashSet::new();
    for (&(tenant, id), c) in &replay.connections {
        for (code, value) in index::entries(index::CONNECTION_FIELDS, c) {
            connection_entries.insert((tenant, code, value, id));
        }
        assignments.insert((
            tenant,
            c.spec.entitlement.as_str().to_owned(),
            c.spec.identity.as_str().to_owned(),
            c.spec.account.as_str().to_owned(),
            id,
        ));
    }
    let mut history_entries = HashSet::new();
    for (&(tenant, id), r) in &replay.history {
        for (code, value) in index::entries(index::HISTORY_FIELDS, r) {
            history_entries.insert((tenant, code, value, id));
        }
    }
    let tenants = &replay.tenants;
    compare_index(
        reader,
        CONNECTION_INDEX,
        "connection_index",
        tenants,
        connection_entries,
        report,
    )?;
    compare_index(
        reader,
        HISTORY_INDEX,
        "history_index",
        tenants,
        history_entries,
        report,
    )?;
    let table = reader.open(ASSIGNMENTS)?;
    for entry in table.range::<(&str, &str, &str, &str, u128)>(..)? {
        let (k, _) = entry?;
        let (tenant, e, i, a, id) = k.value();
        let found = tenants.number(tenant).is_some_and(|n| {
            assignments.remove(&(n, e.to_owned(), i.to_owned(), a.to_owned(), id))
        });
        if !found {
            report.push(Difference::IndexEntry {
                table: "assignments",
                key: format!("({tenant:?}, {e:?}, {i:?}, {a:?}, {id:#x})"),
                missing: false,
            });
        }
    }
    let mut missing: Vec<_> = assignments.into_iter().collect();
    missing.sort_unstable();
    for (tenant, e, i, a, id) in missing {
        report.push(Difference::IndexEntry {
            table: "assignments",
            key: format!(
                "({:?}, {e:?}, {i:?}, {a:?}, {id:#x})",
                tenants.id(tenant).as_str()
            ),
            missing: true,
        });
    }
    Ok(())
}

fn compare_policies(
    reader: &Reader,
    replay: &mut Replay,
    report: &mut Report,
) -> Result<(), Error> {
    let table = reader.open(POLICIES)?;
    let replayed = std::mem::take(&mut replay.policies);
    let difference =
        |tenant, replayed: Option<Policy>, stored: Option<Policy>| Difference::Policy {
            tenant,
            replayed: replayed.map(Box::new),
            stored: stored.map(Box::new),
        };
    let records = TenantRecords {
        table: &table,
        name: "policies",
        decode: codec::decode_policy,
        difference,
    };
    records.compare(&replay.tenants, replayed, report)
}

fn compare_request_configs(
    reader: &Reader,
    replay: &mut Replay,
    report: &mut Report,
) -> Result<(), Error> {
    let table = reader.open(REQUEST_CONFIGS)?;
    let replayed = std::mem::take(&mut replay.request_configs);
    let difference =
        |tenant, replayed: Option<AccessRequestConfig>, stored: Option<AccessRequestConfig>| {
            Difference::RequestConfig {
                tenant,
                replayed: replayed.map(Box::new),
                stored: stored.map(Box::new),
            }
        };
    let records = TenantRecords {
        table: &table,
        name: "request_configs",
        decode: codec::decode_request_config,
        difference,
    };
    records.compare(&replay.tenants, replayed, report)
}

/// A projection with one record per tenant (the policy, the access request config), compared
/// with the last record of each tenant's replayed stream.
struct TenantRecords<'a, T, D> {
    table: &'a crate::hot::Table<&'static str, &'static [u8]>,
    name: &'static str,
    decode: fn(&str, &[u8]) -> Result<T, codec::Error>,
    difference: D,
}

impl<T: PartialEq, D: Fn(TenantId, Option<T>, Option<T>) -> Difference> TenantRecords<'_, T, D> {
    fn compare(
        self,
        tenants: &Tenants,
        mut replayed: HashMap<u32, T>,
        report: &mut Report,
    ) -> Result<(), Error> {
        for entry in self.table.range::<&str>(..)? {
            let (k, v) = entry?;
            let tenant = k.value();
            let expected = tenants.number(tenant).and_then(|n| replayed.remove(&n));
            let stored = match (self.decode)(tenant, v.value()) {
                Ok(p) => p,
                Err(e) => {
                    report.push(Difference::Undecodable(e));
                    continue;
                }
            };
            if expected.as_ref() != Some(&stored) {
                let Ok(tenant) = TenantId::parse(tenant) else {
                    report.push(bad_key(
                        self.name,
                        format!("{tenant:?}"),
                        "not a valid tenant id",
                    ));
                    continue;
                };
                report.push((self.difference)(tenant, expected, Some(stored)));
            }
        }
        let mut missing: Vec<_> = replayed.into_iter().collect();
        missing.sort_unstable_by_key(|&(tenant, _)| tenant);
        for (tenant, p) in missing {
            report.push((self.difference)(tenants.id(tenant).clone(), Some(p), None));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::tables::EVENTS;
    use jitflow_core::lifecycle::{Command, TimerKind};
    use redb::ReadableTable;
    use redb::backends::InMemoryBackend;

    use super::*;
    use crate::batch::{Batch, Entry};
    use crate::open::Options;
    use crate::test_support::{ACT, CONN, policy_event, spec, step};

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    /// A store holding a policy and one connection provisioned (two timers armed), then one
    /// with a grant in flight (an intent).
    fn store() -> Store {
        let store = Store::open_with_backend(InMemoryBackend::new(), Options::default()).unwrap();
        let mut batch = Batch::new();
        batch.push(Entry::Policy {
            tenant: tenant(),
            event: policy_event(),
        });
        let mut state = None;
        let commands = [
            Command::Register(spec(CONN)),
            Command::Activate {
                activation: ACT,
                period: None,
                client: None,
            },
            Command::ValidationPassed { activation: ACT },
        ];
        for command in commands {
            let (event, after) = step(state, command);
            state = after.clone();
            batch.push(Entry::Connection {
                tenant: tenant(),
                event,
                after,
            });
        }
        store.append_batch(&batch).unwrap();
        let (event, after) = step(
            state,
            Command::GrantSucceeded {
                activation: ACT,
                attempt: 1,
            },
        );
        let mut batch = Batch::new();
        batch.push(Entry::Connection {
            tenant: tenant(),
            event,
            after,
        });
        store.append_batch(&batch).unwrap();
        store
    }

    #[test]
    fn a_consistent_store_verifies_clean() {
        let report = store().verify().unwrap();
        assert!(report.is_clean(), "{:#?}", report.differences);
        assert_eq!(
            (
                report.events,
                report.connections,
                report.activations,
                report.policies
            ),
            (5, 1, 1, 1)
        );
        assert_eq!((report.timers, report.intents), (2, 0));
    }

    /// Tampering with every derived table at once: each difference is reported, not the first.
    #[test]
    fn every_difference_is_reported() {
        let store = store();
        let reader = store.reader().unwrap();
        let timers: Vec<DueTimer> = (reader.due_timers(None, None, 10).unwrap().into_iter())
            .filter_map(|d| match d {
                Due::Connection(t) => Some(t),
                Due::Item(_) => None,
            })
            .collect();
        assert_eq!(timers.len(), 2);
        let mut connection = reader.connection(&tenant(), CONN).unwrap().unwrap();
        drop(reader);
        let t = "acme";
        let c = CONN.as_u128();
        store.checkpoint(None).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        {
            // A timer lost, a timer never armed.
            let mut index = txn.open_table(TIMERS).unwrap();
            let lost = &timers[0];
            index
                .remove((lost.due.as_millis(), t, c, timer_kind_code(lost.timer.kind)))
                .unwrap();
            index
                .insert((5, t, c, timer_kind_code(TimerKind::Retry)), ())
                .unwrap();
            // An intent without pending effects.
            txn.open_table(INTENTS).unwrap().insert((t, c), ()).unwrap();
            // A connection projection changed behind the log's back.
            connection.spec.identity_name = "Mallory".into();
            txn.open_table(CONNECTIONS)
                .unwrap()
                .insert((t, c), codec::encode_connection(&connection).as_slice())
                .unwrap();
            // An activation projection lost.
            txn.open_table(ACTIVATIONS)
                .unwrap()
                .remove((t, ACT.as_u128()))
                .unwrap();
            // A policy projection lost, another tenant's appearing.
            let mut policies = txn.open_table(POLICIES).unwrap();
            let bytes = policies.remove(t).unwrap().unwrap().value().to_vec();
            policies.insert("other", bytes.as_slice()).unwrap();
            drop(policies);
            // A stream index entry lost.
            txn.open_table(STREAMS)
                .unwrap()
                .remove((t, crate::tables::STREAM_CONNECTION, c, 2))
                .unwrap();
            // An event that does not decode, after the last batch.
            txn.open_table(EVENTS)
                .unwrap()
                .insert(6, [1u8, 0, 1, 0xff].as_slice())
                .unwrap();
        }
        txn.commit().unwrap();

        let report = store.verify().unwrap();
        let d = &report.differences;
        let has = |f: &dyn Fn(&Difference) -> bool| d.iter().any(f);
        assert!(
            has(&|x| matches!(x, Difference::TimerMissing(m) if *m == timers[0])),
            "{d:#?}"
        );
        assert!(has(
            &|x| matches!(x, Difference::TimerUnexpected(u) if u.due.as_millis() == 5)
        ));
        assert!(has(
            &|x| matches!(x, Difference::IntentUnexpected(i) if i.connection == CONN)
        ));
        assert!(has(
            &|x| matches!(x, Difference::Connection { stored: Some(s), replayed: Some(_), .. } if s.spec.identity_name == "Mallory")
        ));
        assert!(has(&|x| matches!(
            x,
            Difference::Activation {
                stored: None,
                replayed: Some(_),
                ..
            }
        )));
        assert!(has(&|x| matches!(
            x,
            Difference::Policy {
                stored: None,
                replayed: Some(_),
                ..
            }
        )));
        assert!(has(
            &|x| matches!(x, Difference::Policy { tenant, stored: Some(_), replayed: None } if tenant.as_str() == "other")
        ));
        assert!(has(&|x| matches!(
            x,
            Difference::StreamIndex {
                version: 2,
                expected: Some(3),
                indexed: None,
                ..
            }
        )));
        assert!(has(
            &|x| matches!(x, Difference::Undecodable(e) if e.record == RecordName::Event(6))
        ));
        assert_eq!(d.len(), 9, "{d:#?}");
        for difference in d {
            assert!(!difference.to_string().is_empty());
        }
    }

    /// Every index entry missing or extra, and a history record lost, is a difference.
    #[test]
    fn idempotency_keys_and_cursors_are_verified_against_the_log() {
        let store = store();
        let record = |result: &[u8], expires: u64| crate::idempotency::Idempotency {
            fingerprint: 7,
            result: result.to_vec(),
            expires_at: jitflow_core::time::Timestamp::from_millis(expires).unwrap(),
        };
        // Far in the future, and long expired.
        let later = 4_000_000_000_000;
        let mut batch = Batch::new();
        for (key, expires) in [("k-live", later), ("k-old", 1_000)] {
            batch.push_key(crate::idempotency::KeyPut {
                tenant: tenant(),
                key: key.into(),
                record: record(b"ok", expires),
            });
        }
        batch.set_cursor("notifier", 2);
        store.append_batch(&batch).unwrap();
        let clean = store.verify().unwrap();
        assert!(clean.is_clean(), "{:#?}", clean.differences);
        assert_eq!(
            (clean.extras, clean.idempotency_keys, clean.cursors),
            (1, 2, 1)
        );
        // A checkpoint that purges the expired key keeps the store clean.
        let now = jitflow_core::time::Timestamp::from_millis(2_000).unwrap();
        store.checkpoint(Some(now)).unwrap();
        assert!(store.verify().unwrap().is_clean());

        // Damage no write API allows: a record and a cursor the log never held, a changed
        // record, a live key gone.
        let txn = store.db().unwrap().begin_write().unwrap();
        {
            let mut keys = txn.open_table(crate::tables::IDEMPOTENCY).unwrap();
            let forged = codec::encode_idempotency(&record(b"forged", later));
            keys.insert(("acme", "k-forged"), forged.as_slice())
                .unwrap();
            keys.remove(("acme", "k-live")).unwrap();
            let mut meta = txn.open_table(crate::tables::META).unwrap();
            meta.insert("cursor:notifier", 1).unwrap();
            meta.insert("cursor:stranger", 5).unwrap();
        }
        txn.commit().unwrap();
        let report = store.verify().unwrap();
        let d = &report.differences;
        let key = |name: &str, needle: &str| {
            d.iter().any(|x| {
                matches!(x, Difference::IdempotencyKey { key, problem, .. }
                if key == name && problem.contains(needle))
            })
        };
        assert!(key("k-forged", "no extras record"), "{d:#?}");
        assert!(key("k-forged", "expiry index"), "{d:#?}");
        assert!(key("k-live", "not purged, but not stored"), "{d:#?}");
        assert!(key("k-live", "in the expiry index"), "{d:#?}");
        assert!(
            !d.iter()
                .any(|x| matches!(x, Difference::IdempotencyKey { key, .. } if key == "k-old"))
        );
        let cursor = |n: &str, replayed: u64, stored: u64| {
            d.iter().any(|x| {
                matches!(x, Difference::Cursor { name, replayed: r, stored: s }
                if name == n && *r == replayed && *s == stored)
            })
        };
        assert!(cursor("notifier", 2, 1), "{d:#?}");
        assert!(cursor("stranger", 0, 5), "{d:#?}");
    }

    #[test]
    fn index_disagreements_are_reported() {
        let store = store();
        let t = "acme";
        let c = CONN.as_u128();
        store.checkpoint(None).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        {
            let mut index = txn.open_table(CONNECTION_INDEX).unwrap();
            // The state entry lost, an entry for a state the connection is not in.
            assert!(
                index
                    .remove((t, 1, b"ACTIVE".as_slice(), c))
                    .unwrap()
                    .is_some()
            );
            index.insert((t, 1, b"EXPIRED".as_slice(), c), ()).unwrap();
            let mut assignments = txn.open_table(ASSIGNMENTS).unwrap();
            assert!(
                assignments
                    .remove((t, "ent-admins", "alice", "acct-1", c))
                    .unwrap()
                    .is_some()
            );
            let mut history_index = txn.open_table(HISTORY_INDEX).unwrap();
            history_index
                .insert((t, 5, b"ERROR".as_slice(), ACT.as_u128()), ())
                .unwrap();
            txn.open_table(HISTORY)
                .unwrap()
                .remove((t, ACT.as_u128()))
                .unwrap();
        }
        txn.commit().unwrap();

        let report = store.verify().unwrap();
        let d = &report.differences;
        let index_entry = |table: &str, missing: bool, needle: &str| {
            d.iter().any(|x| {
                matches!(x, Difference::IndexEntry { table: t, key, missing: m }
                    if *t == table && *m == missing && key.contains(needle))
            })
        };
        // Keys print their value bytes as a list of numbers.
        let bytes = |text: &str| format!("{:?}", text.as_bytes());
        assert!(
            index_entry("connection_index", true, &bytes("ACTIVE")),
            "{d:#?}"
        );
        assert!(
            index_entry("connection_index", false, &bytes("EXPIRED")),
            "{d:#?}"
        );
        assert!(index_entry("assignments", true, "ent-admins"), "{d:#?}");
        assert!(
            index_entry("history_index", false, &bytes("ERROR")),
            "{d:#?}"
        );
        assert!(d.iter().any(|x| matches!(
            x,
            Difference::History {
                stored: None,
                replayed: Some(_),
                ..
            }
        )));
        assert_eq!(d.len(), 5, "{d:#?}");
    }

    #[test]
    fn gaps_and_partial_batches_are_reported() {
        let store = store();
        store.checkpoint(None).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        // Drop the last event of the first batch (sequences 1..=4): the batch is partial, the
        // log has a gap, and the state and index no longer follow from the log.
        txn.open_table(EVENTS).unwrap().remove(4).unwrap();
        txn.commit().unwrap();
        let report = store.verify().unwrap();
        let d = &report.differences;
        assert!(d.contains(&Difference::SequenceGap {
            expected: 4,
            found: 5
        }));
        assert!(d.contains(&Difference::PartialBatch {
            sequence: 3,
            batch: (1, 4)
        }));
        assert!(
            d.iter()
                .any(|x| matches!(x, Difference::DoesNotApply { sequence: 5, .. }))
        );
        assert!(d.iter().any(|x| matches!(
            x,
            Difference::StreamVersion {
                sequence: 5,
                expected: 3,
                found: 4
            }
        )));
    }

    /// An access request config changed twice, then its projection tampered with: a stored
    /// config that is not the last event's, a tenant's row missing, another tenant's row
    /// appearing, and an event not based on the config before it are each reported.
    #[test]
    fn request_config_disagreements_are_reported() {
        use jitflow_core::lifecycle::Actor;
        use jitflow_core::request::config;

        let store = Store::open_with_backend(InMemoryBackend::new(), Options::default()).unwrap();
        let at = jitflow_core::time::Timestamp::from_millis(1_800_000_000_000).unwrap();
        let first = AccessRequestConfig::default();
        let mut second = first.clone();
        second.entitlement.access.require_end_date = true;
        let beta = TenantId::parse("beta").unwrap();
        let mut batch = Batch::new();
        for (tenant, previous, config) in [
            (tenant(), None, first.clone()),
            (tenant(), Some(first.clone()), second.clone()),
            (beta.clone(), None, first.clone()),
        ] {
            let event = config::decide(previous.as_ref(), config, at, &Actor::System).unwrap();
            batch.push(Entry::RequestConfig { tenant, event });
        }
        store.append_batch(&batch).unwrap();
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "{:#?}", report.differences);
        assert_eq!(report.request_configs, 2);

        store.checkpoint(None).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        {
            let mut table = txn.open_table(REQUEST_CONFIGS).unwrap();
            let stale = codec::encode_request_config(&first);
            table.insert("acme", stale.as_slice()).unwrap();
            table.remove("beta").unwrap();
            table.insert("other", stale.as_slice()).unwrap();
            // An event whose previous config is not the one before it.
            let mut events = txn.open_table(EVENTS).unwrap();
            let bytes = events.get(2).unwrap().unwrap().value().to_vec();
            let mut envelope = codec::decode_envelope(2, &bytes).unwrap();
            let codec::Payload::RequestConfig(event) = &mut envelope.payload else {
                panic!("event 2 is a config change");
            };
            event.previous = None;
            events
                .insert(2, codec::encode_envelope(&envelope).as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        let report = store.verify().unwrap();
        let found = |f: &dyn Fn(&Difference) -> bool| report.differences.iter().any(f);
        assert!(found(&|d| matches!(d,
            Difference::RequestConfig { tenant, replayed: Some(r), stored: Some(s) }
                if tenant.as_str() == "acme" && **r == second && **s == first)));
        assert!(found(&|d| matches!(d,
            Difference::RequestConfig { tenant, replayed: Some(_), stored: None }
                if tenant.as_str() == "beta")));
        assert!(found(&|d| matches!(d,
            Difference::Undecodable(_) | Difference::RequestConfig { .. }
                if d.to_string().contains("other"))));
        assert!(found(&|d| matches!(
            d,
            Difference::RequestConfigOutOfOrder { sequence: 2, .. }
        )));
        assert_eq!(report.differences.len(), 4, "{:#?}", report.differences);
    }
}
