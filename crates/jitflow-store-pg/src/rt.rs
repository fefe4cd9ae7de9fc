//! The backend's own tokio runtime, and how the synchronous `Backend` calls wait for it.
//!
//! The store calls the backend from its writer (an OS thread) and from readers, some of them
//! inside the engine's tokio workers. `Runtime::block_on` (and the blocking `postgres` crate,
//! which uses it) panics there. So every call spawns its work onto this runtime and waits on a
//! `std::sync::mpsc` channel, which blocks the calling thread without touching its runtime.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::runtime::Handle;

/// Worker threads of the backend's runtime: the client's I/O is light (the database does the
/// work), and the host shares its cores with the engine.
pub const RUNTIME_THREADS: usize = 2;

/// How long one statement (or a commit) may take before it fails. It bounds how long the
/// writer or a reader waits on a database that stopped answering; a commit past it has an
/// unknown outcome.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to the database may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime; shut down without waiting when dropped (the last holder may be an async task
/// of another runtime, where waiting would panic).
pub(crate) struct Runtime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle,
}

impl Runtime {
    pub(crate) fn new() -> io::Result<Runtime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("jitflow-pg")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Runtime {
            runtime: Some(runtime),
            handle,
        })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `future` on the runtime and waits for its output on the calling thread. Never
    /// call it from the runtime's own threads.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            // The caller waits for it; it is gone only if it panicked.
            let _ = tx.send(future.await);
        });
        rx.recv()
            .map_err(|_| io::Error::other("the PostgreSQL backend's runtime stopped"))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A client error as the storage interface's I/O error: a full disk keeps its kind, a lost
/// connection reads as one.
pub(crate) fn io(e: tokio_postgres::Error) -> io::Error {
    use tokio_postgres::error::SqlState;
    let kind = if e.code() == Some(&SqlState::DISK_FULL) {
        io::ErrorKind::StorageFull
    } else if e.is_closed() {
        io::ErrorKind::ConnectionAborted
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, Pg(e))
}

/// A client error that shows its cause: the client's own display is a bare "db error" or
/// "error connecting to server", which told a caller nothing while the database restarted.
#[derive(Debug)]
struct Pg(tokio_postgres::Error);

impl std::fmt::Display for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(
                f,
                "{}: {} {}: {}",
                self.0,
                db.severity(),
                db.code().code(),
                db.message()
            ),
            None => match std::error::Error::source(&self.0) {
                Some(cause) => write!(f, "{}: {cause}", self.0),
                None => self.0.fmt(f),
            },
        }
    }
}

impl std::error::Error for Pg {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Awaits one statement, at most [`STATEMENT_TIMEOUT`].
pub(crate) async fn within<T>(
    statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> io::Result<T> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, statement).await {
        Ok(result) => result.map_err(io),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("PostgreSQL did not answer within {STATEMENT_TIMEOUT:?}"),
        )),
    }
}

/// Opens one connection, its I/O driven by a task of the current (the backend's) runtime.
pub(crate) async fn connect(pg: &tokio_postgres::Config) -> io::Result<tokio_postgres::Client> {
    let (client, connection) = within(pg.connect(tokio_postgres::NoTls)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}
