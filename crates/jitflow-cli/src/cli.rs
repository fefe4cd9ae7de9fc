//! The command line's shape (clap derive): global flags, commands, and their arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `jitflow`: operators' tools for a jitflow engine.
///
/// Online commands talk to a running `jitflow-shim` (`--url`, a bearer token from `--token` or
/// `JITFLOW_TOKEN`); offline commands read the data directory of a stopped engine
/// (`--data-dir`) and refuse while an engine holds its file.
///
/// Exit codes: 0 success, 1 error, 2 usage error, 3 `verify` found differences, 130
/// interrupted by Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "jitflow", version, about, long_about = None)]
pub struct Cli {
    /// Print JSON instead of tables (one document, or one array streamed as it is read).
    #[arg(long, global = true)]
    pub json: bool,
    /// The shim's base URL (online commands).
    #[arg(
        long,
        global = true,
        env = "JITFLOW_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// The bearer token (online commands; prefer the environment variable, which `ps` does not
    /// show).
    #[arg(long, global = true, env = "JITFLOW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The stopped engine's data directory, holding `jitflow.redb` (offline commands).
    #[arg(
        long,
        global = true,
        env = "JITFLOW_DATA_DIR",
        default_value = "./jitflow-data"
    )]
    pub data_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Entitlement connections (online).
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// One connection (online).
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// One activation (online).
    #[command(subcommand)]
    Activation(ActivationCommand),
    /// Activate a JIT connection (online).
    Activate(Activate),
    /// Extend a connection's running activation (online).
    Extend(Extend),
    /// End a connection's running activation early (online).
    Deactivate(ConnectionArg),
    /// The tenant's audit stream (online).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Access request approvals (online).
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Replay the log and compare it with everything derived from it (offline). Exit code 3
    /// when differences are found.
    Verify,
    /// Write the audit log as JSON lines, every tenant, from a global sequence (offline).
    Export(Export),
    /// Give the file's free space back to the file system (offline).
    Compact,
    /// Upgrade the file to this build's format version (offline).
    Upgrade(Upgrade),
    /// Counts by tenant and state, pending timers and effects, file size (offline).
    Stats,
    /// Print a shell completion script for `jitflow`.
    Completions(Completions),
}

/// `jitflow connections ...`
#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// List connections, paged to the end or to `--limit`.
    List(List),
}

/// `jitflow connections list`
#[derive(Debug, Args)]
pub struct List {
    /// A filter in the contract's grammar, e.g. `state.value eq "ACTIVE" and type eq "JIT"`.
    #[arg(long)]
    pub filter: Option<String>,
    /// Sorters in the contract's grammar, e.g. `-jit.expiration` (`id` is added last to page).
    #[arg(long, allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// Stop after this many connections (default: all).
    #[arg(long)]
    pub limit: Option<u64>,
}

/// `jitflow connection ...`
#[derive(Debug, Subcommand)]
pub enum ConnectionCommand {
    /// The record, its running activation, its pending effects and timers.
    Show(ConnectionArg),
}

/// `jitflow activation ...`
#[derive(Debug, Subcommand)]
pub enum ActivationCommand {
    /// Every event of the activation, in order.
    Show(ActivationArg),
}

/// A connection id.
#[derive(Debug, Args)]
pub struct ConnectionArg {
    /// The connection id (a UUID).
    pub id: String,
}

/// An activation id.
#[derive(Debug, Args)]
pub struct ActivationArg {
    /// The activation id (a UUID).
    pub id: String,
}

/// `jitflow activate`
#[derive(Debug, Args)]
pub struct Activate {
    /// The connection id.
    pub id: String,
    /// Minutes of access (1 and up, within the policy's maximum).
    #[arg(long)]
    pub minutes: u32,
}

/// `jitflow extend`
#[derive(Debug, Args)]
pub struct Extend {
    /// The connection id.
    pub id: String,
    /// Minutes to add (1 and up, within the policy's extension cap).
    #[arg(long)]
    pub minutes: u32,
}

/// `jitflow events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Follow the tenant's audit stream as events commit, from a cursor.
    Tail(Tail),
}

/// `jitflow events tail`
#[derive(Debug, Args)]
pub struct Tail {
    /// Start after this global sequence (default 0, or the cursor file's).
    #[arg(long)]
    pub after: Option<u64>,
    /// Read the start from this file if it exists, and save the position there after each page,
    /// so that the next run resumes where this one stopped.
    #[arg(long)]
    pub cursor_file: Option<PathBuf>,
    /// Stop at the end of the stream instead of waiting for new events.
    #[arg(long)]
    pub no_follow: bool,
    /// How long to wait between polls at the end of the stream.
    #[arg(long, default_value = "1s", value_parser = humantime_duration)]
    pub interval: std::time::Duration,
}

fn humantime_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d.is_zero() || d > std::time::Duration::from_secs(3600) {
        return Err("the interval must be from 1ms to 1h".to_owned());
    }
    Ok(d)
}

/// `jitflow approvals ...`
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending approvals (yours, or `--owner`'s with ORG_ADMIN).
    List(ApprovalsList),
    /// Approve an approval.
    Approve(Decide),
    /// Reject an approval.
    Reject(Decide),
}

/// `jitflow approvals list`
#[derive(Debug, Args)]
pub struct ApprovalsList {
    /// The approver whose pending approvals to list (default: the token's identity).
    #[arg(long)]
    pub owner: Option<String>,
}

/// `jitflow approvals approve|reject`
#[derive(Debug, Args)]
pub struct Decide {
    /// The approval id.
    pub id: String,
    /// A comment (a rejection needs one).
    #[arg(long)]
    pub comment: Option<String>,
}

/// `jitflow export`
#[derive(Debug, Args)]
pub struct Export {
    /// The first global sequence to write (default 1: everything).
    #[arg(long, default_value_t = 1)]
    pub from: u64,
}

/// `jitflow upgrade`
#[derive(Debug, Args)]
pub struct Upgrade {
    /// Say what the upgrade would do, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `jitflow completions`
#[derive(Debug, Args)]
pub struct Completions {
    /// The shell.
    pub shell: clap_complete::Shell,
}
