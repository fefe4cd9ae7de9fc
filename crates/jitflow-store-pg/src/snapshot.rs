//! Snapshots: one pooled connection in a `REPEATABLE READ READ ONLY` transaction, held until
//! the snapshot is dropped. PostgreSQL takes the transaction's snapshot at its first
//! statement, which `open` runs at once, so the view is fixed when `snapshot` returns.
//!
//! *Shared.* The checkpointed rows change only by this node's checkpoints (the lease holder is
//! the only writer), so a snapshot taken since the last checkpoint ended shows the rows every
//! later snapshot would show until the next one: readers share it ([`Shared`], for at most
//! [`SHARED_MAX_AGE`], so that no transaction stays open long), and its point reads and range
//! pages are kept in memory (at most [`CACHED_MAX`] rows each). Without that, each `Store::reader()` and each of
//! the writer's batches cost a transaction and a round trip per row (measured: 15,832 read
//! transactions for 6,000 signals, `benches/RESULTS.md`).
//!
//! *The log.* Log records are immutable once committed, so a snapshot reads them outside its
//! transaction, as committed: a shared snapshot older than the caller's position still reads
//! every record up to it. (The storage interface lets a snapshot hold records after the
//! caller's position; callers read up to their own.)

use std::collections::VecDeque;
use std::io;
use std::ops::Bound;
use std::sync::Arc;

use deadpool_postgres::Object;
use jitflow_store::backend::{Bytes, Key, Log, Partition, Records, Rows, Snapshot, TableId};
use tokio_postgres::types::ToSql;

use crate::backend::{Inner, log_code};
use crate::lease::column;
use crate::rt::within;

/// Rows fetched by one range or log page: a range of a few hundred rows costs one round trip,
/// and a reader that stops early has fetched little more than it used.
pub const PAGE: usize = 512;

/// A range's first page from each end: most ranges the store reads stop after a row or two
/// (a stream's last version, the first due timer), so pages start small and grow eightfold up
/// to [`PAGE`].
pub const FIRST_PAGE: usize = 8;

type Params = Vec<Box<dyn ToSql + Send + Sync>>;

/// How long readers share one snapshot: past it, the next reader takes a new one, so that no
/// transaction holds back the database's cleanup for long.
pub const SHARED_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// The most point reads one snapshot keeps in memory, and the most rows of range pages;
/// past it, reads go to the database.
pub const CACHED_MAX: usize = 65_536;

/// The snapshot readers share, and the generation it was taken in.
pub(crate) struct Shared {
    generation: u64,
    taken: std::time::Instant,
    snapshot: Arc<PgSnapshot>,
}

/// A snapshot of `partition`: the shared one when it is of the current generation and young
/// enough, else a new one (shared from then on if no checkpoint ended while it was taken).
pub(crate) fn open(inner: &Arc<Inner>, partition: Partition) -> io::Result<Arc<dyn Snapshot>> {
    use std::sync::atomic::Ordering;
    let generation = inner.generation.load(Ordering::Acquire);
    if let Some(s) = &*inner.shared.lock().unwrap_or_else(|e| e.into_inner())
        && s.generation == generation
        && s.taken.elapsed() < SHARED_MAX_AGE
        && s.snapshot.partition == column(partition)
    {
        return Ok(Arc::clone(&s.snapshot) as Arc<dyn Snapshot>);
    }
    let taken = std::time::Instant::now();
    let snapshot = begin(inner, partition)?;
    // A checkpoint that ended while it was taken may or may not be in it: not shared. A
    // checkpoint ending after this check bumps the generation, so it is not reused after.
    if inner.generation.load(Ordering::Acquire) == generation {
        *inner.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(Shared {
            generation,
            taken,
            snapshot: Arc::clone(&snapshot),
        });
    }
    Ok(snapshot)
}

/// A connection of `pool`, or why there is none (`what` names its use in the error).
async fn pooled(pool: deadpool_postgres::Pool, what: &str) -> io::Result<Object> {
    pool.get().await.map_err(|e| match e {
        // The database refused or failed the connection: its cause, not the pool's wrapper.
        deadpool_postgres::PoolError::Backend(e) => {
            let e = crate::rt::io(e);
            io::Error::new(e.kind(), format!("no {what}: {e}"))
        }
        e => io::Error::new(io::ErrorKind::TimedOut, format!("no {what}: {e}")),
    })
}

/// Runs `sql` with `params` on `client` (its statement prepared once per connection).
async fn run(client: &Object, sql: &str, params: Params) -> io::Result<Vec<tokio_postgres::Row>> {
    let statement = within(client.prepare_cached(sql)).await?;
    let args: Vec<&(dyn ToSql + Sync)> =
        params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
    within(client.query(&statement, &args)).await
}

/// Begins a new snapshot transaction.
fn begin(inner: &Arc<Inner>, partition: Partition) -> io::Result<Arc<PgSnapshot>> {
    let pool = inner.pool();
    let client = inner.runtime.run(async move {
        let client = pooled(pool, "snapshot connection").await?;
        within(client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1"))
            .await?;
        Ok::<_, io::Error>(client)
    })??;
    Ok(Arc::new(PgSnapshot {
        inner: Arc::clone(inner),
        client: Some(Arc::new(client)),
        partition: column(partition),
        cached: Default::default(),
        pages: Default::default(),
    }))
}

/// A snapshot's point reads: value (or absence) by table and order bytes.
type Cached = std::collections::HashMap<(TableId, Vec<u8>), Option<Bytes>>;

/// A range page asked for: table, bounds, direction, limit.
type PageKey = (&'static str, Bound<Vec<u8>>, Bound<Vec<u8>>, bool, usize);

/// A snapshot's range pages already fetched, and the rows they hold in all.
#[derive(Default)]
struct Pages {
    pages: std::collections::HashMap<PageKey, Arc<[(Key, Bytes)]>>,
    rows: usize,
}

/// A snapshot: its connection, in an open read-only transaction.
pub(crate) struct PgSnapshot {
    /// Keeps the runtime and the pool alive while the snapshot is.
    inner: Arc<Inner>,
    /// `None` only while dropping.
    client: Option<Arc<Object>>,
    partition: i32,
    /// Point reads already answered (the view is fixed, so they hold): table and order bytes.
    cached: std::sync::Mutex<Cached>,
    /// Range pages already fetched, for the same reason (at most [`CACHED_MAX`] rows in all):
    /// the writer reads a stream's last version, a connection's assignments and the like again
    /// at each of its events.
    pages: std::sync::Mutex<Pages>,
}

impl Drop for PgSnapshot {
    fn drop(&mut self) {
        // End the transaction before the connection goes back to the pool; a connection that
        // cannot is taken out of it. Not waited for: a reader never blocks on a drop.
        if let Some(client) = self.client.take() {
            self.inner.runtime.handle().spawn(async move {
                if within(client.batch_execute("ROLLBACK")).await.is_err()
                    && let Ok(object) = Arc::try_unwrap(client)
                {
                    drop(Object::take(object));
                }
            });
        }
    }
}

fn table(table: TableId) -> io::Result<&'static str> {
    jitflow_store::backend::table_name(table).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no table has id {table}"),
        )
    })
}

impl PgSnapshot {
    /// A query outside the snapshot's transaction, on a pooled connection: for the log, whose
    /// committed records never change.
    fn committed(&self, sql: String, params: Params) -> io::Result<Vec<tokio_postgres::Row>> {
        let pool = self.inner.pool();
        self.inner.runtime.run(async move {
            let client = pooled(pool, "connection to read the log").await?;
            run(&client, &sql, params).await
        })?
    }

    fn query(&self, sql: String, params: Params) -> io::Result<Vec<tokio_postgres::Row>> {
        let client = self
            .client
            .as_ref()
            .map(Arc::clone)
            .ok_or_else(|| io::Error::other("the snapshot is closed"))?;
        self.inner
            .runtime
            .run(async move { run(&client, &sql, params).await })?
    }

    fn pages(&self) -> std::sync::MutexGuard<'_, Pages> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One page of `table`'s rows strictly inside the bounds, ascending or descending: from
    /// the pages already fetched, or one query.
    fn page(
        &self,
        table: &'static str,
        lower: &Bound<Vec<u8>>,
        upper: &Bound<Vec<u8>>,
        descending: bool,
        limit: usize,
    ) -> io::Result<Arc<[(Key, Bytes)]>> {
        let key: PageKey = (table, lower.clone(), upper.clone(), descending, limit);
        if let Some(hit) = self.pages().pages.get(&key) {
            return Ok(Arc::clone(hit));
        }
        let mut sql =
            "SELECT key, native, value FROM jitflow_rows WHERE partition = $1 AND tbl = $2"
                .to_owned();
        let mut params: Params = vec![Box::new(self.partition), Box::new(table)];
        for (bound, strict, loose) in [(lower, ">", ">="), (upper, "<", "<=")] {
            let (op, key) = match bound {
                Bound::Excluded(k) => (strict, k),
                Bound::Included(k) => (loose, k),
                Bound::Unbounded => continue,
            };
            params.push(Box::new(key.clone()));
            sql.push_str(&format!(" AND key {op} ${}", params.len()));
        }
        let order = if descending { "DESC" } else { "ASC" };
        sql.push_str(&format!(" ORDER BY key {order} LIMIT {limit}"));
        let rows: Arc<[(Key, Bytes)]> = self
            .query(sql, params)?
            .into_iter()
            .map(|row| {
                let (order, native, value): (Vec<u8>, Vec<u8>, Vec<u8>) =
                    (row.get(0), row.get(1), row.get(2));
                (Key::new(&order, &native), value.into())
            })
            .collect();
        let mut cache = self.pages();
        // An empty page still counts one, so that many empty ranges stay bounded too.
        let cost = rows.len().max(1);
        if cache.rows + cost <= CACHED_MAX {
            cache.rows += cost;
            cache.pages.insert(key, Arc::clone(&rows));
        }
        Ok(rows)
    }
}

impl Snapshot for PgSnapshot {
    fn get(&self, t: TableId, key: &Key) -> io::Result<Option<Bytes>> {
        let cache_key = (t, key.order().to_vec());
        if let Some(hit) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
        {
            return Ok(hit.clone());
        }
        let rows = self.query(
            "SELECT value FROM jitflow_rows WHERE partition = $1 AND tbl = $2 AND key = $3".into(),
            vec![
                Box::new(self.partition),
                Box::new(table(t)?),
                Box::new(key.order().to_vec()),
            ],
        )?;
        let value: Option<Bytes> = rows.first().map(|r| r.get::<_, Vec<u8>>(0).into());
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.len() < CACHED_MAX {
            cached.insert(cache_key, value.clone());
        }
        Ok(value)
    }

    fn range<'a>(
        &'a self,
        t: TableId,
        lower: Bound<&Key>,
        upper: Bound<&Key>,
    ) -> io::Result<Rows<'a>> {
        Ok(Box::new(Range {
            snapshot: self,
            table: table(t)?,
            lower: lower.map(|k| k.order().to_vec()),
            upper: upper.map(|k| k.order().to_vec()),
            front: VecDeque::new(),
            back: VecDeque::new(),
            met: false,
            pages: [FIRST_PAGE; 2],
        }))
    }

    fn len(&self, t: TableId) -> io::Result<u64> {
        let rows = self.query(
            "SELECT count(*) FROM jitflow_rows WHERE partition = $1 AND tbl = $2".into(),
            vec![Box::new(self.partition), Box::new(table(t)?)],
        )?;
        Ok(rows
            .first()
            .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }

    fn record(&self, log: Log, number: u64) -> io::Result<Option<Bytes>> {
        let Ok(number) = i64::try_from(number) else {
            return Ok(None);
        };
        let rows = self.committed(
            "SELECT body FROM jitflow_log WHERE partition = $1 AND log = $2 AND number = $3".into(),
            vec![
                Box::new(self.partition),
                Box::new(log_code(log)),
                Box::new(number),
            ],
        )?;
        Ok(rows.first().map(|r| r.get::<_, Vec<u8>>(0).into()))
    }

    fn records(&self, log: Log, first: u64, last: u64) -> io::Result<Records<'_>> {
        let last = i64::try_from(last).unwrap_or(i64::MAX);
        let Ok(first) = i64::try_from(first) else {
            return Ok(Box::new(std::iter::empty()));
        };
        let mut next = Some(first).filter(|f| *f <= last);
        let mut page = VecDeque::new();
        let code = log_code(log);
        Ok(Box::new(std::iter::from_fn(move || {
            if page.is_empty() {
                let from = next.take()?;
                let rows = self.committed(
                    format!(
                        "SELECT number, body FROM jitflow_log WHERE partition = $1 AND log = $2 \
                         AND number >= $3 AND number <= $4 ORDER BY number LIMIT {PAGE}"
                    ),
                    vec![
                        Box::new(self.partition),
                        Box::new(code),
                        Box::new(from),
                        Box::new(last),
                    ],
                );
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(e) => return Some(Err(e)),
                };
                if rows.len() == PAGE {
                    next = rows
                        .last()
                        .map(|r| r.get::<_, i64>(0))
                        .and_then(|n| n.checked_add(1))
                        .filter(|n| *n <= last);
                }
                page.extend(rows.into_iter().map(|r| {
                    let n: i64 = r.get(0);
                    let body: Vec<u8> = r.get(1);
                    (u64::try_from(n).unwrap_or(0), Bytes::from(body))
                }));
            }
            page.pop_front().map(Ok)
        })))
    }

    fn last(&self, log: Log) -> io::Result<u64> {
        let rows = self.committed(
            "SELECT coalesce(max(number), 0) FROM jitflow_log WHERE partition = $1 AND log = $2"
                .into(),
            vec![Box::new(self.partition), Box::new(log_code(log))],
        )?;
        Ok(rows
            .first()
            .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }
}

/// A lazy double-ended range: pages fetched from the front and from the back, each side's
/// bound moving inward past what it fetched, until a short page says the middle is empty.
/// Then what is left is the two buffers, front then back.
struct Range<'a> {
    snapshot: &'a PgSnapshot,
    table: &'static str,
    /// Keys at or below it (as the bound says) were fetched into `front`.
    lower: Bound<Vec<u8>>,
    /// Keys at or above it were fetched into `back`.
    upper: Bound<Vec<u8>>,
    /// Fetched from the front, ascending.
    front: VecDeque<(Key, Bytes)>,
    /// Fetched from the back, ascending.
    back: VecDeque<(Key, Bytes)>,
    /// No row is left between the bounds (or a fetch failed: the range ends).
    met: bool,
    /// The next page's size from the front and from the back.
    pages: [usize; 2],
}

impl Range<'_> {
    /// Fetches the next page from one end into its buffer.
    fn fetch(&mut self, descending: bool) -> io::Result<()> {
        let limit = self.pages[usize::from(descending)];
        self.pages[usize::from(descending)] = (limit * 8).min(PAGE);
        let rows = self
            .snapshot
            .page(self.table, &self.lower, &self.upper, descending, limit)
            .inspect_err(|_| self.met = true)?;
        if rows.len() < limit {
            self.met = true;
        }
        if let Some((last, _)) = rows.last() {
            let bound = Bound::Excluded(last.order().to_vec());
            if descending {
                self.upper = bound;
            } else {
                self.lower = bound;
            }
        }
        if descending {
            for row in rows.iter() {
                self.back.push_front(row.clone());
            }
        } else {
            self.front.extend(rows.iter().cloned());
        }
        Ok(())
    }
}

impl Range<'_> {
    /// The next row from the front or the back: that end's buffer, refilled from the middle
    /// while rows are left there, else the other end's buffer.
    fn take(&mut self, back: bool) -> Option<io::Result<(Key, Bytes)>> {
        let empty = if back {
            self.back.is_empty()
        } else {
            self.front.is_empty()
        };
        if empty
            && !self.met
            && let Err(e) = self.fetch(back)
        {
            self.front.clear();
            self.back.clear();
            return Some(Err(e));
        }
        let row = if back {
            self.back.pop_back().or_else(|| self.front.pop_back())
        } else {
            self.front.pop_front().or_else(|| self.back.pop_front())
        };
        row.map(Ok)
    }
}

impl Iterator for Range<'_> {
    type Item = io::Result<(Key, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.take(false)
    }
}

impl DoubleEndedIterator for Range<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.take(true)
    }
}
