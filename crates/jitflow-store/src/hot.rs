//! The hot layer: every derived row (projections, indexes, timers, intents, idempotency
//! records, cursors) changed since the last checkpoint, in memory, in front of the redb tables.
//!
//! A commit appends the log alone; the rows its events derive go into the layer. Readers see the
//! layer merged over the checkpointed tables, so a read that starts after an ack sees the write.
//! A checkpoint writes the layer into the tables in one transaction, in key order, each row
//! once however often it changed, with the log sequence it covers; then the layer is empty.
//!
//! The layer is a persistent ordered map (`imbl::OrdMap`): publishing it after a commit is a
//! clone of its root (constant time), so each reader holds the layer exactly as it was at one
//! commit while the writer goes on changing its own copy.
//!
//! *Order*: a row's key is the table id followed by an order-preserving encoding of the key
//! ([`SortKey`]), compared with `memcmp`; it sorts exactly as the table's own redb
//! `Key::compare` does, so the layer's order is the table's order and a merged range needs no
//! re-sorting. The redb key bytes ride along in the same allocation for checkpoints and reads.
//! A tombstone (`None`) hides the checkpointed row under it.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use imbl::OrdMap;
use redb::{Key, Value};

use crate::backend::{Rows, Snapshot};
use crate::tables;

/// Bytes of a key or a value in the layer.
pub(crate) type Bytes = Arc<[u8]>;

/// A row of the layer: a value, or a tombstone that hides the checkpointed row.
pub(crate) type Row = Option<Bytes>;

/// Key types whose values encode to bytes that sort, byte by byte, as redb's `Key::compare`
/// orders the type. The layer orders its rows by these bytes, so a lookup or an insert compares
/// with `memcmp` instead of decoding redb's tuple encoding (varint lengths) at every step.
///
/// *Invariant*: for any two values `a` and `b` of the type, `encode(a).cmp(encode(b))` equals
/// `K::compare(as_bytes(a), as_bytes(b))` (tested for every key type of the derived tables).
pub(crate) trait SortKey: Key {
    /// Appends the order-preserving encoding of `value` to `out`.
    fn encode(value: &Self::SelfType<'_>, out: &mut Vec<u8>);
}

impl SortKey for u8 {
    fn encode(value: &u8, out: &mut Vec<u8>) {
        out.push(*value);
    }
}

impl SortKey for u64 {
    fn encode(value: &u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&value.to_be_bytes());
    }
}

impl SortKey for u128 {
    fn encode(value: &u128, out: &mut Vec<u8>) {
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// A byte string that keeps its order when followed by more fields: each 0x00 becomes
/// 0x00 0xFF and the string ends with 0x00 0x00, which sorts below any continuation.
fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

impl SortKey for &str {
    fn encode(value: &&str, out: &mut Vec<u8>) {
        encode_bytes(value.as_bytes(), out);
    }
}

impl SortKey for &[u8] {
    fn encode(value: &&[u8], out: &mut Vec<u8>) {
        encode_bytes(value, out);
    }
}

macro_rules! sort_key_tuple {
    ($($t:ident $i:tt),+) => {
        impl<$($t: SortKey),+> SortKey for ($($t,)+) {
            fn encode(value: &Self::SelfType<'_>, out: &mut Vec<u8>) {
                $($t::encode(&value.$i, out);)+
            }
        }
    };
}
sort_key_tuple!(T0 0, T1 1);
sort_key_tuple!(T0 0, T1 1, T2 2);
sort_key_tuple!(T0 0, T1 1, T2 2, T3 3);
sort_key_tuple!(T0 0, T1 1, T2 2, T3 3, T4 4);

/// The layer's order key of `key` in `table`: the table id, then the key's [`SortKey`] bytes.
fn order_key<K: SortKey>(table: u8, key: &K::SelfType<'_>) -> Vec<u8> {
    // Most keys are a tenant id and one or two ids: one allocation of this size holds them.
    let mut out = Vec::with_capacity(64);
    out.push(table);
    K::encode(key, &mut out);
    out
}

/// The key of a derived row: its order bytes (table id, then the key's order-preserving
/// encoding, compared with `memcmp`) and its native bytes (the typed table's own encoding,
/// which readers decode), in one allocation. Ordered, compared and borrowed by the order
/// bytes alone.
#[derive(Clone, Debug)]
pub struct RowKey {
    bytes: Bytes,
    split: usize,
}

impl RowKey {
    /// The key from its two encodings.
    pub fn new(order: &[u8], native: &[u8]) -> RowKey {
        let mut bytes = Vec::with_capacity(order.len() + native.len());
        bytes.extend_from_slice(order);
        bytes.extend_from_slice(native);
        RowKey {
            bytes: bytes.into(),
            split: order.len(),
        }
    }

    /// The key of `key` in `table`.
    pub(crate) fn of<K: SortKey>(table: u8, key: &K::SelfType<'_>) -> RowKey {
        let order = order_key::<K>(table, key);
        RowKey::new(&order, K::as_bytes(key).as_ref())
    }

    /// The order bytes: the table id, then the key's order-preserving encoding.
    pub fn order(&self) -> &[u8] {
        &self.bytes[..self.split]
    }

    /// The native bytes: the key as its typed table encodes it.
    pub fn native(&self) -> &[u8] {
        &self.bytes[self.split..]
    }
}

impl Borrow<[u8]> for RowKey {
    fn borrow(&self) -> &[u8] {
        self.order()
    }
}

impl Ord for RowKey {
    fn cmp(&self, other: &RowKey) -> Ordering {
        self.order().cmp(other.order())
    }
}

impl PartialOrd for RowKey {
    fn partial_cmp(&self, other: &RowKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for RowKey {
    fn eq(&self, other: &RowKey) -> bool {
        self.order() == other.order()
    }
}

impl Eq for RowKey {}

/// The layer: rows changed since the last checkpoint, with their size and, for the tables whose
/// length is read ([`tables::counted`]), how many rows the layer adds to the checkpointed ones.
#[derive(Clone, Default)]
pub(crate) struct Layer {
    rows: OrdMap<RowKey, Row>,
    /// Key and value bytes of every row (tombstones count their key).
    bytes: usize,
    /// Rows added minus rows removed, per counted table, against the checkpointed tables.
    counts: [i64; tables::COUNT],
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("rows", &self.rows.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Layer {
    /// Rows in the layer (tombstones included).
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row changed since the checkpoint.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Key and value bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// What the layer adds to the length of counted table `table`.
    pub(crate) fn count_delta(&self, table: u8) -> i64 {
        self.counts[usize::from(table)]
    }

    /// The row of order key `order` (see [`order_key`]): `None` when the layer does not know
    /// it (read the checkpoint), `Some(None)` for a tombstone.
    fn get(&self, order: &[u8]) -> Option<&Row> {
        self.rows.get(order)
    }

    /// Puts (`Some`) or deletes (`None`) the row of order key `order` and redb key `key` in
    /// `table`. `existed` says whether the merged view held the key before, which counted
    /// tables need to keep their length exact.
    fn put(&mut self, table: u8, key: RowKey, value: Row, existed: Option<bool>) {
        debug_assert_eq!(key.order().first(), Some(&table));
        let key_len = key.native().len();
        let new_bytes = key_len + value.as_ref().map_or(0, |v| v.len());
        if let Some(existed) = existed {
            let delta = i64::from(value.is_some()) - i64::from(existed);
            self.counts[usize::from(table)] += delta;
        }
        let old = self.rows.insert(key, value);
        if let Some(old) = old {
            self.bytes -= key_len + old.as_ref().map_or(0, |v| v.len());
        }
        self.bytes += new_bytes;
    }

    /// Every row, table by table, each table's in key order, as a checkpoint writes it.
    pub(crate) fn rows(&self) -> impl Iterator<Item = crate::backend::Row<'_>> {
        self.rows.iter().map(|(key, value)| crate::backend::Row {
            table: key.order()[0],
            key,
            value: value.as_deref(),
        })
    }

    /// Every row of `table`, in key order, as a checkpoint writes it.
    pub(crate) fn table_rows(&self, table: u8) -> impl Iterator<Item = crate::backend::Row<'_>> {
        let lower = [table];
        let upper = [table + 1];
        self.rows
            .range::<_, [u8]>((Bound::Included(&lower[..]), Bound::Excluded(&upper[..])))
            .map(move |(key, value)| crate::backend::Row {
                table,
                key,
                value: value.as_deref(),
            })
    }

    /// The rows of `table` within `lower..upper` (order keys; unbounded means the table's
    /// first or last row), in order.
    fn range(
        &self,
        table: u8,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> impl DoubleEndedIterator<Item = (RowKey, Row)> + '_ {
        let lower = match lower {
            Bound::Unbounded => Bound::Included(vec![table]),
            b => b,
        };
        let upper = match upper {
            Bound::Unbounded => Bound::Excluded(vec![table + 1]),
            b => b,
        };
        // imbl panics on a range whose start is after its end; such a range is empty.
        let empty = match (&lower, &upper) {
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a > b
                    || (a == b
                        && !(matches!(lower, Bound::Included(_))
                            && matches!(upper, Bound::Included(_))))
            }
            _ => false,
        };
        let rows = if empty {
            None
        } else {
            Some(
                self.rows
                    .range::<_, [u8]>((as_slice(&lower), as_slice(&upper))),
            )
        };
        rows.into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
    }
}

fn as_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A value read through the merged view: bytes held by the layer or handed back by the
/// backend. `value()` decodes it as redb's own guards do.
pub(crate) struct Guard<T: Value + 'static> {
    bytes: Bytes,
    /// Where the value starts (a key's native bytes follow its order bytes in one allocation).
    start: usize,
    _type: PhantomData<T>,
}

impl<T: Value + 'static> Guard<T> {
    /// The value, decoded by its redb type.
    pub(crate) fn value(&self) -> T::SelfType<'_> {
        T::from_bytes(&self.bytes[self.start..])
    }

    fn value_bytes(bytes: Bytes) -> Guard<T> {
        Guard {
            bytes,
            start: 0,
            _type: PhantomData,
        }
    }

    fn key(key: RowKey) -> Guard<T> {
        Guard {
            bytes: key.bytes,
            start: key.split,
            _type: PhantomData,
        }
    }
}

/// One row read through the merged view: its key and value.
pub(crate) type Pair<K, V> = (Guard<K>, Guard<V>);

/// One row of a merged range.
pub(crate) type Item<K, V> = Result<Pair<K, V>, std::io::Error>;

type LayerRows<'a> = Box<dyn DoubleEndedIterator<Item = (RowKey, Row)> + 'a>;

/// A range of the layer merged over the same range of the checkpointed table: the layer wins
/// on equal keys, tombstones hide. Double ended, like redb's own ranges.
pub(crate) struct Range<'a, K: Key + 'static, V: Value + 'static> {
    layer: LayerRows<'a>,
    base: Rows<'a>,
    layer_front: Option<(RowKey, Row)>,
    layer_back: Option<(RowKey, Row)>,
    base_front: Option<(RowKey, Bytes)>,
    base_back: Option<(RowKey, Bytes)>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Key + 'static, V: Value + 'static> Range<'_, K, V> {
    /// Takes the next row from the front (`forward`) or the back.
    fn step(&mut self, forward: bool) -> Option<Item<K, V>> {
        loop {
            let (layer_slot, layer_other) = if forward {
                (&mut self.layer_front, &mut self.layer_back)
            } else {
                (&mut self.layer_back, &mut self.layer_front)
            };
            if layer_slot.is_none() {
                let next = if forward {
                    self.layer.next()
                } else {
                    self.layer.next_back()
                };
                // An exhausted side may still have a row peeked by the other end.
                *layer_slot = next.or_else(|| layer_other.take());
            }
            let (base_slot, base_other) = if forward {
                (&mut self.base_front, &mut self.base_back)
            } else {
                (&mut self.base_back, &mut self.base_front)
            };
            if base_slot.is_none() {
                let next = if forward {
                    self.base.next()
                } else {
                    self.base.next_back()
                };
                *base_slot = match next {
                    Some(Ok(row)) => Some(row),
                    Some(Err(e)) => return Some(Err(e)),
                    None => base_other.take(),
                };
            }
            let order = match (&*layer_slot, &*base_slot) {
                (None, None) => return None,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some((lk, _)), Some((bk, _))) => {
                    let o = lk.order().cmp(bk.order());
                    if forward { o } else { o.reverse() }
                }
            };
            // `order` compares the layer's row with the base's in the direction of travel.
            match order {
                Ordering::Greater => {
                    let (k, v) = base_slot.take().expect("compared above");
                    return Some(Ok((Guard::key(k), Guard::value_bytes(v))));
                }
                Ordering::Equal | Ordering::Less => {
                    if order == Ordering::Equal {
                        // The layer's row replaces (or hides) the checkpointed one.
                        *base_slot = None;
                    }
                    let (k, v) = layer_slot.take().expect("compared above");
                    match v {
                        Some(v) => return Some(Ok((Guard::key(k), Guard::value_bytes(v)))),
                        None => continue,
                    }
                }
            }
        }
    }
}

impl<K: Key + 'static, V: Value + 'static> Iterator for Range<'_, K, V> {
    type Item = Item<K, V>;

    fn next(&mut self) -> Option<Item<K, V>> {
        self.step(true)
    }
}

impl<K: Key + 'static, V: Value + 'static> DoubleEndedIterator for Range<'_, K, V> {
    fn next_back(&mut self) -> Option<Item<K, V>> {
        self.step(false)
    }
}

/// The keys of the bounds of `range` in `table`.
fn encode_bounds<'k, K: SortKey + 'static, KR: Borrow<K::SelfType<'k>>>(
    table: u8,
    range: &impl RangeBounds<KR>,
) -> (Bound<RowKey>, Bound<RowKey>) {
    let enc = |b: Bound<&KR>| b.map(|k| RowKey::of::<K>(table, k.borrow()));
    (enc(range.start_bound()), enc(range.end_bound()))
}

/// The rows of `table` within the bounds: the layer's over the snapshot's.
fn merged_range<'a, K: SortKey + 'static, V: Value + 'static>(
    table: u8,
    layer: LayerRows<'a>,
    base: &'a dyn Snapshot,
    (lower, upper): &(Bound<RowKey>, Bound<RowKey>),
) -> std::io::Result<Range<'a, K, V>> {
    let base = base.range(table, lower.as_ref(), upper.as_ref())?;
    Ok(Range {
        layer,
        base,
        layer_front: None,
        layer_back: None,
        base_front: None,
        base_back: None,
        _types: PhantomData,
    })
}

fn order_bound(b: &Bound<RowKey>) -> Bound<Vec<u8>> {
    b.as_ref().map(|k| k.order().to_vec())
}

/// A table as a reader sees it: the layer published at one commit over the checkpointed table
/// of a snapshot that the layer covers. Read-only.
pub(crate) struct Table<K: Key + 'static, V: Value + 'static> {
    id: u8,
    layer: Layer,
    base: Arc<dyn Snapshot>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: SortKey + 'static, V: Value + 'static> Table<K, V> {
    pub(crate) fn new(id: u8, layer: Layer, base: Arc<dyn Snapshot>) -> Table<K, V> {
        Table {
            id,
            layer,
            base,
            _types: PhantomData,
        }
    }

    /// The value of `key`.
    pub(crate) fn get<'k>(
        &self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<Guard<V>>, std::io::Error> {
        get::<K, V>(self.id, &self.layer, &*self.base, key.borrow())
    }

    /// The rows within `range`, in key order (double ended).
    pub(crate) fn range<'k, KR: Borrow<K::SelfType<'k>>>(
        &self,
        range: impl RangeBounds<KR>,
    ) -> Result<Range<'_, K, V>, std::io::Error> {
        let bounds = encode_bounds::<K, KR>(self.id, &range);
        let layer = self
            .layer
            .range(self.id, order_bound(&bounds.0), order_bound(&bounds.1));
        merged_range(self.id, Box::new(layer), &*self.base, &bounds)
    }

    /// The number of rows. Exact for the counted tables only (`tables::counted`), which keep
    /// their layer's count; asserted.
    pub(crate) fn len(&self) -> Result<u64, std::io::Error> {
        assert!(
            tables::counted(self.id),
            "table {} does not keep its length",
            self.id
        );
        let len = self.base.len(self.id)? as i64 + self.layer.count_delta(self.id);
        assert!(len >= 0, "table {} counts {len} rows", self.id);
        Ok(len as u64)
    }
}

fn get<K: SortKey + 'static, V: Value + 'static>(
    id: u8,
    layer: &Layer,
    base: &dyn Snapshot,
    key: &K::SelfType<'_>,
) -> Result<Option<Guard<V>>, std::io::Error> {
    let key = RowKey::of::<K>(id, key);
    match layer.get(key.order()) {
        Some(row) => Ok(row.clone().map(Guard::value_bytes)),
        None => Ok(base.get(id, &key)?.map(Guard::value_bytes)),
    }
}

/// A table as the writer changes it: reads see the working layer (the batch's own writes
/// included) over the checkpointed table; writes go to the working layer only.
pub(crate) struct WriteTable<'w, K: Key + 'static, V: Value + 'static> {
    id: u8,
    layer: &'w RefCell<Layer>,
    base: Arc<dyn Snapshot>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<'w, K: SortKey + 'static, V: Value + 'static> WriteTable<'w, K, V> {
    pub(crate) fn new(
        id: u8,
        layer: &'w RefCell<Layer>,
        base: Arc<dyn Snapshot>,
    ) -> WriteTable<'w, K, V> {
        WriteTable {
            id,
            layer,
            base,
            _types: PhantomData,
        }
    }

    /// The value of `key`.
    pub(crate) fn get<'k>(
        &self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<Guard<V>>, std::io::Error> {
        get::<K, V>(self.id, &self.layer.borrow(), &*self.base, key.borrow())
    }

    /// The last row within `range`.
    pub(crate) fn last_in<'k, KR: Borrow<K::SelfType<'k>>>(
        &self,
        range: impl RangeBounds<KR>,
    ) -> Result<Option<Pair<K, V>>, std::io::Error> {
        self.rows_in(range, |rows| rows.next_back().transpose())
    }

    /// The first `limit` rows within `range`, in key order.
    pub(crate) fn first_in<'k, KR: Borrow<K::SelfType<'k>>>(
        &self,
        range: impl RangeBounds<KR>,
        limit: usize,
    ) -> Result<Vec<Pair<K, V>>, std::io::Error> {
        self.rows_in(range, |rows| rows.take(limit).collect())
    }

    /// [`WriteTable::last_in`] for a range whose rows are only ever inserted, each above every
    /// earlier one (a stream's versions): the working layer's last row when it holds one, as
    /// the layer holds only rows written after every checkpointed one; else the merged last.
    /// Saves the checkpointed table's read (a round trip on a database) for every stream the
    /// layer already holds.
    pub(crate) fn last_in_growing<'k, KR: Borrow<K::SelfType<'k>>>(
        &self,
        range: impl RangeBounds<KR>,
    ) -> Result<Option<Pair<K, V>>, std::io::Error> {
        let bounds = encode_bounds::<K, KR>(self.id, &range);
        let newest = self
            .layer
            .borrow()
            .range(self.id, order_bound(&bounds.0), order_bound(&bounds.1))
            .rev()
            .find_map(|(k, v)| v.map(|v| (k, v)));
        let Some((key, value)) = newest else {
            return self.last_in(range);
        };
        let found: Pair<K, V> = (Guard::key(key), Guard::value_bytes(value));
        // Paired with the merged read in debug builds: the range must grow as promised.
        #[cfg(debug_assertions)]
        {
            let native = |g: &Guard<K>| g.bytes[g.start..].to_vec();
            let merged = self.last_in(range)?.map(|(k, _)| native(&k));
            assert_eq!(
                merged,
                Some(native(&found.0)),
                "table {}: a row of a growing range sorts above the layer's last",
                self.id
            );
        }
        Ok(Some(found))
    }

    /// Runs `read` over the merged rows within `range`.
    fn rows_in<'k, KR: Borrow<K::SelfType<'k>>, T>(
        &self,
        range: impl RangeBounds<KR>,
        read: impl FnOnce(&mut Range<'_, K, V>) -> Result<T, std::io::Error>,
    ) -> Result<T, std::io::Error> {
        let bounds = encode_bounds::<K, KR>(self.id, &range);
        // Copied out so that no borrow of the working layer outlives this call; all of the
        // range's rows, as tombstones among them hide rows rather than count.
        let rows: Vec<(RowKey, Row)> = self
            .layer
            .borrow()
            .range(self.id, order_bound(&bounds.0), order_bound(&bounds.1))
            .collect();
        read(&mut merged_range::<K, V>(
            self.id,
            Box::new(rows.into_iter()),
            &*self.base,
            &bounds,
        )?)
    }

    /// Puts `value` under `key`.
    pub(crate) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), std::io::Error> {
        let key = key.borrow();
        let existed = self.existed(key)?;
        let value: Bytes = V::as_bytes(value.borrow()).as_ref().into();
        self.put(key, Some(value), existed);
        Ok(())
    }

    /// Deletes `key`. For counted tables, returns whether it was there (looked up to keep the
    /// count exact); other tables are not read, and return `None`: a tombstone over nothing is
    /// harmless, and the lookup would cost a read per removed index entry.
    pub(crate) fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<bool>, std::io::Error> {
        let key = key.borrow();
        let existed = self.existed(key)?;
        self.put(key, None, existed);
        Ok(existed)
    }

    fn put(&mut self, key: &K::SelfType<'_>, value: Row, existed: Option<bool>) {
        self.layer
            .borrow_mut()
            .put(self.id, RowKey::of::<K>(self.id, key), value, existed);
    }

    /// For counted tables, whether `key` is in the merged view (else not asked).
    fn existed(&self, key: &K::SelfType<'_>) -> Result<Option<bool>, std::io::Error> {
        if !tables::counted(self.id) {
            return Ok(None);
        }
        Ok(Some(self.get(key)?.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `SortKey`'s invariant for one key type: the order of encodings is redb's order.
    fn same_order<K: SortKey + 'static>(a: &K::SelfType<'_>, b: &K::SelfType<'_>) {
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        K::encode(a, &mut ea);
        K::encode(b, &mut eb);
        let redb = K::compare(K::as_bytes(a).as_ref(), K::as_bytes(b).as_ref());
        assert_eq!(ea.cmp(&eb), redb, "{ea:?} vs {eb:?}");
    }

    /// Strings dense in the bytes that matter to the escape (0x00, 0x01, 0xFF).
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![Just('\0'), Just('\u{1}'), Just('a'), Just('ÿ')],
            0..6,
        )
        .prop_map(|c| c.into_iter().collect())
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![Just(0u8), Just(1), Just(0xFF), any::<u8>()],
            0..6,
        )
    }

    fn id() -> impl Strategy<Value = u128> {
        prop_oneof![
            Just(0u128),
            Just(1),
            Just(256),
            Just(u128::MAX),
            any::<u128>()
        ]
    }

    proptest! {
        /// Every key shape of the derived tables orders its encodings as redb orders its keys.
        #[test]
        fn sort_keys_follow_redb_order(
            (s1, s2, s3, s4) in (text(), text(), text(), text()),
            (b1, b2) in (bytes(), bytes()),
            (i1, i2) in (id(), id()),
            (n1, n2) in (any::<u64>(), prop_oneof![Just(0u64), any::<u64>()]),
            (c1, c2) in (0u8..4, 0u8..4),
        ) {
            same_order::<&str>(&s1.as_str(), &s2.as_str());
            same_order::<u64>(&n1, &n2);
            same_order::<(&str, u128)>(&(s1.as_str(), i1), &(s2.as_str(), i2));
            same_order::<(&str, u8, u128, u64)>(&(s1.as_str(), c1, i1, n1), &(s2.as_str(), c2, i2, n2));
            same_order::<(u64, &str, u128, u8)>(&(n1, s1.as_str(), i1, c1), &(n2, s2.as_str(), i2, c2));
            same_order::<(&str, &str)>(&(s1.as_str(), s3.as_str()), &(s2.as_str(), s4.as_str()));
            same_order::<(u64, &str, &str)>(&(n1, s1.as_str(), s3.as_str()), &(n2, s2.as_str(), s4.as_str()));
            same_order::<(&str, u8, &[u8], u128)>(
                &(s1.as_str(), c1, b1.as_slice(), i1),
                &(s2.as_str(), c2, b2.as_slice(), i2),
            );
            same_order::<(&str, &str, &str, &str, u128)>(
                &(s1.as_str(), s2.as_str(), s3.as_str(), s4.as_str(), i1),
                &(s2.as_str(), s1.as_str(), s4.as_str(), s3.as_str(), i2),
            );
            same_order::<(&str, u128, u128)>(&(s1.as_str(), i1, i2), &(s1.as_str(), i2, i1));
            same_order::<(&str, &str, u8, &str, u128)>(
                &(s1.as_str(), s3.as_str(), c1, s4.as_str(), i1),
                &(s1.as_str(), s4.as_str(), c2, s3.as_str(), i2),
            );
            same_order::<(&str, u8, &str, u128)>(&(s3.as_str(), c1, s1.as_str(), i1), &(s3.as_str(), c2, s2.as_str(), i2));
        }
    }
}
