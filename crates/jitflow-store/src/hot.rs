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
//! *Order*: a row's key is its table's redb key bytes, ordered by that table's own `Key::compare`
//! (`tables::compare`), so the layer's order is the table's order and a merged range needs no
//! re-sorting. A tombstone (`None`) hides the checkpointed row under it.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use imbl::OrdMap;
use redb::{AccessGuard, Key, ReadOnlyTable, ReadableTableMetadata, StorageError, Value};

use crate::tables;

/// Bytes of a key or a value in the layer.
pub(crate) type Bytes = Arc<[u8]>;

/// A row of the layer: a value, or a tombstone that hides the checkpointed row.
pub(crate) type Row = Option<Bytes>;

/// Where a key stands: below every key of its table, a key, or above every key.
#[derive(Clone, Debug)]
enum Pos {
    Start,
    Key(Bytes),
    End,
}

/// A key of the layer: the table, then the key in that table's order.
#[derive(Clone, Debug)]
pub(crate) struct RowKey {
    table: u8,
    pos: Pos,
}

impl RowKey {
    fn key(table: u8, bytes: &[u8]) -> RowKey {
        RowKey {
            table,
            pos: Pos::Key(bytes.into()),
        }
    }

    /// The key bytes (every stored key is a `Pos::Key`).
    pub(crate) fn bytes(&self) -> &Bytes {
        match &self.pos {
            Pos::Key(b) => b,
            Pos::Start | Pos::End => unreachable!("bounds are never stored"),
        }
    }
}

impl Ord for RowKey {
    fn cmp(&self, other: &RowKey) -> Ordering {
        self.table
            .cmp(&other.table)
            .then_with(|| match (&self.pos, &other.pos) {
                (Pos::Start, Pos::Start) | (Pos::End, Pos::End) => Ordering::Equal,
                (Pos::Start, _) | (_, Pos::End) => Ordering::Less,
                (_, Pos::Start) | (Pos::End, _) => Ordering::Greater,
                (Pos::Key(a), Pos::Key(b)) => tables::compare(self.table, a, b),
            })
    }
}

impl PartialOrd for RowKey {
    fn partial_cmp(&self, other: &RowKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for RowKey {
    fn eq(&self, other: &RowKey) -> bool {
        self.cmp(other) == Ordering::Equal
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

    /// The row of `key` in `table`: `None` when the layer does not know it (read the
    /// checkpoint), `Some(None)` for a tombstone.
    pub(crate) fn get(&self, table: u8, key: &[u8]) -> Option<&Row> {
        self.rows.get(&RowKey::key(table, key))
    }

    /// Puts (`Some`) or deletes (`None`) a row. `existed` says whether the merged view held the
    /// key before, which counted tables need to keep their length exact.
    pub(crate) fn put(&mut self, table: u8, key: &[u8], value: Row, existed: Option<bool>) {
        let new_bytes = key.len() + value.as_ref().map_or(0, |v| v.len());
        if let Some(existed) = existed {
            let delta = i64::from(value.is_some()) - i64::from(existed);
            self.counts[usize::from(table)] += delta;
        }
        let old = self.rows.insert(RowKey::key(table, key), value);
        if let Some(old) = old {
            self.bytes -= key.len() + old.as_ref().map_or(0, |v| v.len());
        }
        self.bytes += new_bytes;
    }

    /// Every row of `table`, in key order.
    pub(crate) fn table_rows(&self, table: u8) -> impl Iterator<Item = (&RowKey, &Row)> {
        let lower = RowKey {
            table,
            pos: Pos::Start,
        };
        let upper = RowKey {
            table,
            pos: Pos::End,
        };
        self.rows.range(lower..=upper)
    }

    /// The rows of `table` within `lower..upper` (key bytes), in order.
    fn range(
        &self,
        table: u8,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> impl DoubleEndedIterator<Item = (Bytes, Row)> + '_ {
        let bound = |b: Bound<Vec<u8>>, open: Pos| match b {
            Bound::Included(k) => Bound::Included(RowKey::key(table, &k)),
            Bound::Excluded(k) => Bound::Excluded(RowKey::key(table, &k)),
            Bound::Unbounded => Bound::Included(RowKey { table, pos: open }),
        };
        let lower = bound(lower, Pos::Start);
        let upper = bound(upper, Pos::End);
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
            Some(self.rows.range((lower, upper)))
        };
        rows.into_iter()
            .flatten()
            .map(|(k, v)| (k.bytes().clone(), v.clone()))
    }
}

/// A value read through the merged view: borrowed from the checkpointed table or held by the
/// layer. `value()` decodes it as redb's own guards do.
pub(crate) enum Guard<T: Value + 'static> {
    Base(AccessGuard<'static, T>),
    Layer(Bytes, PhantomData<T>),
}

impl<T: Value + 'static> Guard<T> {
    /// The value, decoded by its redb type.
    pub(crate) fn value(&self) -> T::SelfType<'_> {
        match self {
            Guard::Base(g) => g.value(),
            Guard::Layer(b, _) => T::from_bytes(b),
        }
    }

    fn layer(bytes: Bytes) -> Guard<T> {
        Guard::Layer(bytes, PhantomData)
    }
}

/// One row read through the merged view: its key and value.
pub(crate) type Pair<K, V> = (Guard<K>, Guard<V>);

/// One row of a merged range.
pub(crate) type Item<K, V> = Result<Pair<K, V>, StorageError>;

type LayerRows<'a> = Box<dyn DoubleEndedIterator<Item = (Bytes, Row)> + 'a>;
type BaseRow<K, V> = (AccessGuard<'static, K>, AccessGuard<'static, V>);

/// A range of the layer merged over the same range of the checkpointed table: the layer wins
/// on equal keys, tombstones hide. Double ended, like redb's own ranges.
pub(crate) struct Range<'a, K: Key + 'static, V: Value + 'static> {
    layer: LayerRows<'a>,
    base: redb::Range<'static, K, V>,
    layer_front: Option<(Bytes, Row)>,
    layer_back: Option<(Bytes, Row)>,
    base_front: Option<BaseRow<K, V>>,
    base_back: Option<BaseRow<K, V>>,
}

fn base_key<K: Key + 'static>(g: &AccessGuard<'static, K>) -> Vec<u8> {
    K::as_bytes(&g.value()).as_ref().to_vec()
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
                    let o = K::compare(lk, &base_key(bk));
                    if forward { o } else { o.reverse() }
                }
            };
            // `order` compares the layer's row with the base's in the direction of travel.
            match order {
                Ordering::Greater => {
                    let (k, v) = base_slot.take().expect("compared above");
                    return Some(Ok((Guard::Base(k), Guard::Base(v))));
                }
                Ordering::Equal | Ordering::Less => {
                    if order == Ordering::Equal {
                        // The layer's row replaces (or hides) the checkpointed one.
                        *base_slot = None;
                    }
                    let (k, v) = layer_slot.take().expect("compared above");
                    match v {
                        Some(v) => return Some(Ok((Guard::layer(k), Guard::layer(v)))),
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

/// The key bytes of the bounds of `range`.
fn encode_bounds<'k, K: Key + 'static, KR: Borrow<K::SelfType<'k>>>(
    range: &impl RangeBounds<KR>,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let enc = |b: Bound<&KR>| match b {
        Bound::Included(k) => Bound::Included(K::as_bytes(k.borrow()).as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(K::as_bytes(k.borrow()).as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (enc(range.start_bound()), enc(range.end_bound()))
}

/// A table as a reader sees it: the layer published at one commit over the checkpointed table
/// of a snapshot that the layer covers. Read-only.
pub(crate) struct Table<K: Key + 'static, V: Value + 'static> {
    id: u8,
    layer: Layer,
    base: ReadOnlyTable<K, V>,
}

impl<K: Key + 'static, V: Value + 'static> Table<K, V> {
    pub(crate) fn new(id: u8, layer: Layer, base: ReadOnlyTable<K, V>) -> Table<K, V> {
        Table { id, layer, base }
    }

    /// The value of `key`.
    pub(crate) fn get<'k>(
        &self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<Guard<V>>, StorageError> {
        get(self.id, &self.layer, &self.base, key.borrow())
    }

    /// The rows within `range`, in key order (double ended).
    pub(crate) fn range<'k, KR: Borrow<K::SelfType<'k>>>(
        &self,
        range: impl RangeBounds<KR>,
    ) -> Result<Range<'_, K, V>, StorageError> {
        let (lower, upper) = encode_bounds::<K, KR>(&range);
        let base = self.base.range(range)?;
        Ok(merged(
            Box::new(self.layer.range(self.id, lower, upper)),
            base,
        ))
    }

    /// The number of rows. Exact for the counted tables only (`tables::counted`), which keep
    /// their layer's count; asserted.
    pub(crate) fn len(&self) -> Result<u64, StorageError> {
        assert!(
            tables::counted(self.id),
            "table {} does not keep its length",
            self.id
        );
        let len = self.base.len()? as i64 + self.layer.count_delta(self.id);
        assert!(len >= 0, "table {} counts {len} rows", self.id);
        Ok(len as u64)
    }
}

fn merged<'a, K: Key + 'static, V: Value + 'static>(
    layer: LayerRows<'a>,
    base: redb::Range<'static, K, V>,
) -> Range<'a, K, V> {
    Range {
        layer,
        base,
        layer_front: None,
        layer_back: None,
        base_front: None,
        base_back: None,
    }
}

fn get<K: Key + 'static, V: Value + 'static>(
    id: u8,
    layer: &Layer,
    base: &ReadOnlyTable<K, V>,
    key: &K::SelfType<'_>,
) -> Result<Option<Guard<V>>, StorageError> {
    let bytes = K::as_bytes(key);
    match layer.get(id, bytes.as_ref()) {
        Some(row) => Ok(row.clone().map(Guard::layer)),
        None => Ok(base.get(key)?.map(Guard::Base)),
    }
}

/// A table as the writer changes it: reads see the working layer (the batch's own writes
/// included) over the checkpointed table; writes go to the working layer only.
pub(crate) struct WriteTable<'w, K: Key + 'static, V: Value + 'static> {
    id: u8,
    layer: &'w RefCell<Layer>,
    base: ReadOnlyTable<K, V>,
}

impl<'w, K: Key + 'static, V: Value + 'static> WriteTable<'w, K, V> {
    pub(crate) fn new(
        id: u8,
        layer: &'w RefCell<Layer>,
        base: ReadOnlyTable<K, V>,
    ) -> WriteTable<'w, K, V> {
        WriteTable { id, layer, base }
    }

    /// The value of `key`.
    pub(crate) fn get<'k>(
        &self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<Guard<V>>, StorageError> {
        get(self.id, &self.layer.borrow(), &self.base, key.borrow())
    }

    /// The last row within `range`.
    pub(crate) fn last_in<'k, KR: Borrow<K::SelfType<'k>>>(
        &self,
        range: impl RangeBounds<KR>,
    ) -> Result<Option<Pair<K, V>>, StorageError> {
        let (lower, upper) = encode_bounds::<K, KR>(&range);
        let base = self.base.range(range)?;
        // Copied out so that no borrow of the working layer outlives this call.
        let rows: Vec<(Bytes, Row)> = self.layer.borrow().range(self.id, lower, upper).collect();
        merged(Box::new(rows.into_iter()), base)
            .next_back()
            .transpose()
    }

    /// Puts `value` under `key`.
    pub(crate) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), StorageError> {
        let key = key.borrow();
        let existed = self.existed(key)?;
        let value: Bytes = V::as_bytes(value.borrow()).as_ref().into();
        self.layer
            .borrow_mut()
            .put(self.id, K::as_bytes(key).as_ref(), Some(value), existed);
        Ok(())
    }

    /// Deletes `key`. For counted tables, returns whether it was there (looked up to keep the
    /// count exact); other tables are not read, and return `None`: a tombstone over nothing is
    /// harmless, and the lookup would cost a redb read per removed index entry.
    pub(crate) fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<bool>, StorageError> {
        let key = key.borrow();
        let existed = self.existed(key)?;
        self.layer
            .borrow_mut()
            .put(self.id, K::as_bytes(key).as_ref(), None, existed);
        Ok(existed)
    }

    /// For counted tables, whether `key` is in the merged view (else not asked).
    fn existed(&self, key: &K::SelfType<'_>) -> Result<Option<bool>, StorageError> {
        if !tables::counted(self.id) {
            return Ok(None);
        }
        Ok(Some(self.get(key)?.is_some()))
    }
}
