//! A throwaway PostgreSQL cluster for tests (cargo feature `testing`): `initdb` in a temporary
//! folder, the server on 127.0.0.1 at a free port, a fresh database per test, and the server
//! stopped by its pid and the folder deleted on drop. Nothing is mocked. [`Cluster::stop`] and
//! [`Cluster::restart`] take the server down and up again on the same data and port (tests of a
//! database outage).
//!
//! The binaries come from `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
//! PostgreSQL refuses to run as root: as root, `initdb` and `postgres` run as the `postgres`
//! user (the folder is handed to it). `fsync` stays on (durability is what is under test);
//! `shared_buffers` is small.
//!
//! Where PostgreSQL is missing, [`Cluster::start_or_skip`] prints why and returns `None`, so a
//! test can skip; under CI (the `CI` environment variable set) it panics instead, so a CI run
//! never passes without the backend's tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections after it starts.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the server is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No PostgreSQL binaries were found.
    #[error("PostgreSQL is not installed (no pg_config, no /usr/lib/postgresql/*/bin/initdb)")]
    Missing,
    /// A command failed or could not run.
    #[error("{0}")]
    Failed(String),
}

fn failed(what: impl std::fmt::Display) -> ClusterError {
    ClusterError::Failed(what.to_string())
}

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    server: Child,
    /// Runs commands as this uid and gid (the `postgres` user when we are root).
    user: Option<(u32, u32)>,
    databases: AtomicU32,
}

/// The folder of the PostgreSQL binaries, if any.
fn bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn id(flag: &str) -> Result<u32, ClusterError> {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .map_err(failed)?;
    if !out.status.success() {
        return Err(failed(
            "running as root needs a `postgres` user to run PostgreSQL",
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(failed)
}

fn root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(failed)?;
    Ok(listener.local_addr().map_err(failed)?.port())
}

impl Cluster {
    /// Starts a cluster.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Missing`] without PostgreSQL; [`ClusterError::Failed`] when a step
    /// fails (its output is in the message).
    pub fn start() -> Result<Cluster, ClusterError> {
        let bindir = bindir().ok_or(ClusterError::Missing)?;
        let user = if root() {
            Some((id("-u")?, id("-g")?))
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("jitflow-pg-")
            .tempdir()
            .map_err(failed)?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(failed)?;
        }
        let data = dir.path().join("data");
        let out = Self::command(&bindir, user, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .map_err(failed)?;
        if !out.status.success() {
            return Err(failed(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let port = free_port()?;
        let server = Self::server(&bindir, user, dir.path(), port)?;
        let mut cluster = Cluster {
            dir,
            bindir,
            port,
            server,
            user,
            databases: AtomicU32::new(0),
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// Starts the server on the cluster's folder and port; its output goes to `server.log`.
    fn server(
        bindir: &Path,
        user: Option<(u32, u32)>,
        dir: &Path,
        port: u16,
    ) -> Result<Child, ClusterError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .map_err(failed)?;
        Self::command(bindir, user, "postgres")
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
                "-c",
                "shared_buffers=16MB",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(failed)?)
            .stderr(log)
            .spawn()
            .map_err(failed)
    }

    /// Stops the server (a fast shutdown: clients are disconnected, committed data is kept)
    /// and waits until it has exited; [`Cluster::restart`] starts it again. Tests of a
    /// database outage.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Failed`] when the server had to be killed after [`STOP_TIMEOUT`].
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        if self.shut_down() {
            Ok(())
        } else {
            Err(failed("postgres did not stop in time and was killed"))
        }
    }

    /// Starts the server again after [`Cluster::stop`], on the same folder and port, and
    /// waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Failed`] when it does not start or accept connections in time.
    pub fn restart(&mut self) -> Result<(), ClusterError> {
        self.server = Self::server(&self.bindir, self.user, self.dir.path(), self.port)?;
        self.wait_ready()
    }

    /// SIGINT, PostgreSQL's fast shutdown, then a kill after [`STOP_TIMEOUT`]; whether it
    /// stopped by itself (or had already).
    fn shut_down(&mut self) -> bool {
        if let Ok(Some(_)) = self.server.try_wait() {
            return true;
        }
        let pid = self.server.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = self.server.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        false
    }

    /// [`Cluster::start`] for a test: `None` (with a printed reason) when PostgreSQL is
    /// missing and `CI` is unset.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is missing under CI, or the cluster fails to start.
    pub fn start_or_skip() -> Option<Cluster> {
        match Cluster::start() {
            Ok(c) => Some(c),
            Err(ClusterError::Missing) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: PostgreSQL is not installed (CI would fail here)");
                None
            }
            Err(e) => panic!("cannot start a PostgreSQL cluster: {e}"),
        }
    }

    /// One cluster shared by the tests of a process that run at once (each takes its own
    /// database): started by the first, stopped when the last lets go. `None` as in
    /// [`Cluster::start_or_skip`].
    pub fn shared() -> Option<Arc<Cluster>> {
        static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = shared.upgrade() {
            return Some(c);
        }
        let c = Arc::new(Cluster::start_or_skip()?);
        *shared = Arc::downgrade(&c);
        Some(c)
    }

    fn command(bindir: &Path, user: Option<(u32, u32)>, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(bindir.join(program));
        if let Some((uid, gid)) = user {
            command.uid(uid).gid(gid);
        }
        command.env("LC_ALL", "C");
        command
    }

    fn psql(&self, database: &str, sql: &str) -> Result<String, ClusterError> {
        let out = Self::command(&self.bindir, self.user, "psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-c", sql])
            .output()
            .map_err(failed)?;
        if !out.status.success() {
            return Err(failed(format!(
                "psql failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn wait_ready(&mut self) -> Result<(), ClusterError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.server.try_wait().map_err(failed)? {
                let log =
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                return Err(failed(format!("postgres exited ({status}): {log}")));
            }
            if self.psql("postgres", "SELECT 1").is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(failed("postgres did not accept connections in time"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection string of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={name}",
            self.port
        )
    }

    /// Creates a fresh database (`t_<n>`) and returns its connection string.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Failed`] when `CREATE DATABASE` fails.
    pub fn database(&self) -> Result<String, ClusterError> {
        let name = format!("t_{}", self.databases.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs `sql` in database `name` through `psql` and returns its unaligned output (tests
    /// that damage or inspect a database behind the backend's back).
    ///
    /// # Errors
    ///
    /// [`ClusterError::Failed`] when the statement fails.
    pub fn sql(&self, url: &str, sql: &str) -> Result<String, ClusterError> {
        let name = url
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("dbname="))
            .unwrap_or("postgres");
        self.psql(name, sql)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shut_down();
    }
}
