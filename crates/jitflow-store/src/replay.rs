//! The open's tail replay: the log after the checkpoint, through the commit path's own
//! derivation (`append::derive`), into the hot layer.
//!
//! Events are replayed in chunks of [`REPLAY_CHUNK`]; after each chunk, a layer at its bound is
//! checkpointed, so the replay never holds more than the layer's bound in memory, whatever the
//! tail's length. Extras (idempotency results, cursors) follow the events: they derive tables
//! no event touches, so their order against the events does not matter.

use std::cell::RefCell;

use jitflow_core::lifecycle;
use jitflow_core::request;
use std::sync::Arc;

use crate::backend::{Backend, Log};

use crate::append::{self, WriteTables, derive, move_cursor};
use crate::batch::Entry;
use crate::codec::{self, Envelope, Payload};
use crate::hot::Layer;
use crate::open::{Error, Options, storage};
use crate::store::{Published, Store, checkpoint_of};
use crate::{idempotency, projection};

/// The most log records one replay step derives before the layer's bound is checked.
pub const REPLAY_CHUNK: u64 = 1024;

fn replay_failed(sequence: u64, reason: impl std::fmt::Display) -> Error {
    Error::Replay {
        sequence,
        reason: reason.to_string(),
    }
}

fn write_failed(sequence: u64, e: append::Error) -> Error {
    match e {
        append::Error::Storage { source } => Error::Storage(source.into()),
        other => replay_failed(sequence, other),
    }
}

/// Opens `backend` (its format checked and upgraded) as a store: reads the checkpoint's
/// position and replays the log after it.
pub(crate) fn open(backend: Arc<dyn Backend>, options: Options) -> Result<Store, Error> {
    let base = backend.snapshot(options.partition).map_err(storage)?;
    let (checkpoint, checkpoint_extras) = checkpoint_of(&*base).map_err(storage)?;
    let last = base.last(Log::Events).map_err(storage)?;
    let last_extras = base.last(Log::Extras).map_err(storage)?;
    drop(base);
    // Restate's rule: derived state ahead of the log means the log lost what the state saw.
    if checkpoint > last || checkpoint_extras > last_extras {
        return Err(Error::AheadOfLog {
            checkpoint,
            last,
            checkpoint_extras,
            last_extras,
        });
    }
    let store = Store::new(
        backend,
        options,
        Published {
            sequence: checkpoint,
            extras: checkpoint_extras,
            checkpoint,
            layer: Layer::default(),
            dirty_since: None,
        },
    );
    let mut next = checkpoint + 1;
    while next <= last {
        let end = last.min(next + REPLAY_CHUNK - 1);
        replay_events(&store, next, end)?;
        next = end + 1;
        checkpoint_at_bound(&store, next)?;
    }
    let mut next = checkpoint_extras + 1;
    while next <= last_extras {
        let end = last_extras.min(next + REPLAY_CHUNK - 1);
        replay_extras(&store, next, end)?;
        next = end + 1;
        checkpoint_at_bound(&store, next)?;
    }
    let published = store.hot.published();
    if !published.layer.is_empty() {
        // A replayed tail is due for a checkpoint at once (the writer's first chance, not the
        // open's: the first read is not delayed). A process that keeps crashing within its
        // checkpoint interval would otherwise replay an ever longer tail at every open.
        store.hot.publish(Published {
            dirty_since: std::time::Instant::now().checked_sub(store.options.checkpoint_interval),
            ..(*published).clone()
        });
    }
    if last > checkpoint || last_extras > checkpoint_extras {
        tracing::info!(
            events = last - checkpoint,
            extras = last_extras - checkpoint_extras,
            "replayed the log after the checkpoint"
        );
    }
    Ok(store)
}

fn checkpoint_at_bound(store: &Store, next: u64) -> Result<(), Error> {
    if store.hot.over_bound(&store.options) {
        store.checkpoint(None).map_err(|e| write_failed(next, e))?;
    }
    Ok(())
}

/// Derives events `first..=last` into the layer and publishes it.
fn replay_events(store: &Store, first: u64, last: u64) -> Result<(), Error> {
    let published = store.hot.published();
    assert_eq!(published.sequence + 1, first, "replay skips events");
    let base = store.base().map_err(|e| write_failed(first, e))?;
    let layer = RefCell::new(published.layer.clone());
    {
        let mut t = WriteTables::open(&base, &layer).map_err(|e| write_failed(first, e))?;
        let mut expected = first;
        for row in base.records(Log::Events, first, last).map_err(storage)? {
            let (sequence, v) = row.map_err(storage)?;
            if sequence != expected {
                return Err(replay_failed(expected, "the log has a gap here"));
            }
            expected += 1;
            let envelope =
                codec::decode_envelope(sequence, &v).map_err(|e| replay_failed(sequence, e))?;
            let version = envelope.stream_version;
            let entry = entry_of(&t, envelope, sequence)?;
            let derived =
                derive(&mut t, &entry, sequence).map_err(|e| write_failed(sequence, e))?;
            if derived != version {
                return Err(replay_failed(
                    sequence,
                    format!("stream version {version} where the log implies {derived}"),
                ));
            }
        }
        if expected != last + 1 {
            return Err(replay_failed(expected, "the log ends here"));
        }
    }
    store.hot.publish(Published {
        sequence: last,
        layer: layer.into_inner(),
        ..(*published).clone()
    });
    Ok(())
}

/// The entry of a logged event: the event with the state it leads to, evolved from the
/// state before it as the merged view holds it.
fn entry_of(t: &WriteTables<'_>, envelope: Envelope, sequence: u64) -> Result<Entry, Error> {
    let tenant = envelope.tenant;
    Ok(match envelope.payload {
        Payload::Connection(event) => {
            let before = projection::get_connection(&t.connections, &tenant, event.connection)
                .map_err(|e| write_failed(sequence, e))?;
            let after =
                lifecycle::evolve(before, &event).map_err(|e| replay_failed(sequence, e))?;
            Entry::Connection {
                tenant,
                event,
                after,
            }
        }
        Payload::Policy(event) => Entry::Policy { tenant, event },
        Payload::Request(event) => {
            let before = crate::request::get_item(&t.request_items, &tenant, event.item)
                .map_err(|e| write_failed(sequence, e))?;
            let after = request::evolve(before, &event).map_err(|e| replay_failed(sequence, e))?;
            Entry::Request {
                tenant,
                event,
                after: Box::new(after),
            }
        }
        Payload::RequestConfig(event) => Entry::RequestConfig { tenant, event },
    })
}

/// Applies extras records `first..=last` to the layer and publishes it.
fn replay_extras(store: &Store, first: u64, last: u64) -> Result<(), Error> {
    let published = store.hot.published();
    assert_eq!(published.extras + 1, first, "replay skips extras");
    let base = store.base().map_err(|e| write_failed(first, e))?;
    let layer = RefCell::new(published.layer.clone());
    {
        let mut t = WriteTables::open(&base, &layer).map_err(|e| write_failed(first, e))?;
        let records = base.records(Log::Extras, first, last).map_err(storage)?;
        for (expected, row) in (first..).zip(records) {
            let (number, v) = row.map_err(storage)?;
            if number != expected {
                return Err(Error::Replay {
                    sequence: published.sequence,
                    reason: format!("the extras records have a gap at {expected}"),
                });
            }
            let extras = codec::decode_extras(number, &v)
                .map_err(|e| replay_failed(published.sequence, e))?;
            for key in &extras.keys {
                idempotency::put(&mut t.keys, &mut t.key_expiry, key)
                    .map_err(|e| write_failed(published.sequence, e))?;
            }
            for (name, sequence) in &extras.cursors {
                move_cursor(&mut t.meta, name, *sequence)
                    .map_err(|e| write_failed(published.sequence, e))?;
            }
        }
    }
    store.hot.publish(Published {
        extras: last,
        layer: layer.into_inner(),
        ..(*published).clone()
    });
    Ok(())
}
