//! Idempotency keys: a client's retry of a request gets the committed result of the first try.
//!
//! A key maps to the fingerprint of the request that used it (so a different request reusing
//! the key can be refused), the committed result bytes (opaque to the store) and an expiry. An
//! expired key reads as absent; [`Store::purge_expired_keys`] deletes expired keys in bounded
//! steps, through an expiry index, without scanning live keys.

use jitflow_core::id::TenantId;
use jitflow_core::time::Timestamp;
use std::cell::RefCell;
use std::sync::Arc;

use redb::TableHandle;

use crate::backend::Snapshot;
use crate::hot::{Layer, WriteTable};
use crate::tables;

use crate::append::Error;
use crate::codec;
use crate::store::Store;
use crate::tables::{IDEMPOTENCY, IDEMPOTENCY_EXPIRY};

/// The longest idempotency key, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// The largest committed result kept with a key, in bytes.
pub const MAX_RESULT_LEN: usize = 64 * 1024;
/// The most keys one [`Store::purge_expired_keys`] call deletes.
pub const MAX_PURGE: usize = 10_000;

/// What is kept for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// A fingerprint of the request that used the key (computed by the engine).
    pub fingerprint: u64,
    /// The committed result, opaque to the store (at most [`MAX_RESULT_LEN`] bytes).
    pub result: Vec<u8>,
    /// From this instant on the key is expired: it reads as absent and may be purged.
    pub expires_at: Timestamp,
}

impl Idempotency {
    /// Whether the key is expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// An idempotency key to store with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPut {
    /// The tenant.
    pub tenant: TenantId,
    /// The key (1 to [`MAX_KEY_LEN`] bytes).
    pub key: String,
    /// What to keep under it; replaces what was there.
    pub record: Idempotency,
}

impl KeyPut {
    /// Asserts the bounds: the engine checks keys and results before they reach a batch.
    pub(crate) fn assert_bounds(&self) {
        assert!(
            !self.key.is_empty() && self.key.len() <= MAX_KEY_LEN,
            "idempotency key of {} bytes outside 1..={MAX_KEY_LEN}",
            self.key.len()
        );
        assert!(
            self.record.result.len() <= MAX_RESULT_LEN,
            "idempotency result of {} bytes over {MAX_RESULT_LEN}",
            self.record.result.len()
        );
    }
}

/// Stores `put` in the write transaction's tables, keeping the expiry index in step.
pub(crate) fn put(
    keys: &mut WriteTable<'_, (&'static str, &'static str), &'static [u8]>,
    expiry: &mut WriteTable<'_, (u64, &'static str, &'static str), ()>,
    put: &KeyPut,
) -> Result<(), Error> {
    put.assert_bounds();
    let tenant = put.tenant.as_str();
    let key = put.key.as_str();
    let old = keys.get((tenant, key))?.map(|v| v.value().to_vec());
    if let Some(old) = old {
        match codec::decode_idempotency(tenant, key, &old) {
            Ok(old) => {
                expiry.remove((old.expires_at.as_millis(), tenant, key))?;
            }
            // Replace it anyway: refusing would fail every batch that reuses the key. Its
            // expiry entry stays behind; the purge skips entries that do not match the record.
            Err(e) => tracing::warn!("replacing an undecodable idempotency record: {e}"),
        }
    }
    keys.insert(
        (tenant, key),
        codec::encode_idempotency(&put.record).as_slice(),
    )?;
    expiry.insert((put.record.expires_at.as_millis(), tenant, key), ())?;
    Ok(())
}

/// Deletes up to `limit` keys expired at `now` (with their expiry entries) from the merged
/// view of `base` under `layer`, as tombstones in `layer`; returns how many expiry entries it
/// removed. The checkpoint calls it on the copy of the layer it writes, so the deletions are
/// written with the layer.
pub(crate) fn purge(
    base: &Arc<dyn Snapshot>,
    layer: &RefCell<Layer>,
    now: Timestamp,
    limit: usize,
) -> Result<usize, Error> {
    assert!(limit <= MAX_PURGE, "purge limit {limit} over {MAX_PURGE}");
    let mut keys: WriteTable<'_, (&'static str, &'static str), &'static [u8]> =
        WriteTable::new(tables::id(IDEMPOTENCY.name()), layer, Arc::clone(base));
    let mut expiry: WriteTable<'_, (u64, &'static str, &'static str), ()> = WriteTable::new(
        tables::id(IDEMPOTENCY_EXPIRY.name()),
        layer,
        Arc::clone(base),
    );
    // Expired means expires_at <= now: every key below (now + 1, "", "").
    let end = (now.as_millis() + 1, "", "");
    let doomed: Vec<(u64, String, String)> = expiry
        .first_in::<(u64, &str, &str)>(..end, limit)?
        .into_iter()
        .map(|(k, _)| {
            let (at, tenant, key) = k.value();
            (at, tenant.to_owned(), key.to_owned())
        })
        .collect();
    for (at, tenant, key) in &doomed {
        expiry.remove((*at, tenant.as_str(), key.as_str()))?;
        // Delete the record only if this entry is its expiry (or it is undecodable): an entry
        // left behind by a replaced record must not delete its successor.
        let current = keys
            .get((tenant.as_str(), key.as_str()))?
            .map(|v| codec::decode_idempotency(tenant, key, v.value()));
        let stale = matches!(current, Some(Ok(ref r)) if r.expires_at.as_millis() != *at);
        if current.is_some() && !stale {
            keys.remove((tenant.as_str(), key.as_str()))?;
        }
    }
    Ok(doomed.len())
}

impl Store {
    /// Deletes up to `limit` (at most [`MAX_PURGE`]) keys expired at `now`, oldest expiry first,
    /// in the transaction of a checkpoint (the hot layer is written first, so the purge sees
    /// every key), committed with `Durability::Immediate`. Returns how many expiry entries it
    /// processed: fewer than `limit` means no expired key is left. The engine's writer purges
    /// with every checkpoint; this is for callers without one.
    pub fn purge_expired_keys(&self, now: Timestamp, limit: usize) -> Result<usize, Error> {
        assert!(limit <= MAX_PURGE, "purge limit {limit} over {MAX_PURGE}");
        Ok(self.checkpoint_and_purge(Some((now, limit)))?.1)
    }
}
