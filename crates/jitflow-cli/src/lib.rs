//! The `jitflow` command line: operators' tools for a jitflow engine.
//!
//! - **Online**, against a running `jitflow-shim` through its REST endpoints (every scope and
//!   tenant rule of the API applies to the token): `connections list`, `connection show`,
//!   `activation show`, `activate`, `extend`, `deactivate`, `events tail`, `approvals
//!   list|approve|reject`.
//! - **Offline**, on the data directory of a stopped engine, through the store's public API
//!   (refused while an engine holds the file): `verify`, `export`, `compact`, `upgrade
//!   [--dry-run]`, `stats`.
//! - `completions SHELL` prints a completion script.
//!
//! Human output by default (aligned tables, times in RFC 3339 and relative), `--json`
//! everywhere. Exit codes: [`exit`]. Long offline work shows a progress bar on a terminal and
//! plain lines otherwise; Ctrl-C stops it cleanly (see [`progress`]).
//!
//! # Example
//!
//! ```
//! use clap::Parser;
//! use jitflow_cli::cli::{Cli, Command};
//!
//! let cli = Cli::try_parse_from(["jitflow", "--data-dir", "/var/lib/jitflow", "verify"]).unwrap();
//! assert!(matches!(cli.command, Command::Verify));
//! // `jitflow_cli::run(cli)` would verify the store and answer `Outcome::Differences` (exit
//! // code 3) if it disagrees with its log.
//! let usage = Cli::try_parse_from(["jitflow", "activate"]).unwrap_err();
//! assert_eq!(usage.exit_code(), i32::from(jitflow_cli::exit::USAGE));
//! ```
//!
//! # Why each dependency
//!
//! - `clap`: the command line (derive, and `env` for `JITFLOW_URL`, `JITFLOW_TOKEN`,
//!   `JITFLOW_DATA_DIR`); `clap_complete`: shell completions from the same definition.
//! - `reqwest` and `tokio` (with `signal` for Ctrl-C): the online commands' plain HTTP client.
//! - `indicatif`: the progress bar with rate and ETA.
//! - `jitflow-store` (and `redb`, whose `DatabaseAlreadyOpen` says an engine holds the file):
//!   the offline commands; `jitflow`: its audit export line format; `jitflow-core`: RFC 3339
//!   times.
//! - `serde`/`serde_json`: the API's JSON and `--json`; `thiserror`: [`Error`]; `humantime`:
//!   `--interval 2s`.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod offline;
pub mod online;
pub mod output;
pub mod progress;

use std::io::Write;
use std::path::PathBuf;

use clap::CommandFactory;
use serde_json::json;

use crate::cli::{
    ActivationCommand, ApprovalsCommand, Cli, Command, ConnectionCommand, ConnectionsCommand,
    EventsCommand,
};
use crate::client::Client;
use crate::progress::Interrupt;

/// The exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// An error (the message is on stderr).
    pub const ERROR: u8 = 1;
    /// A usage error: an unknown command or flag, a missing or malformed argument.
    pub const USAGE: u8 = 2;
    /// `verify` found differences between the store and its log.
    pub const DIFFERENCES: u8 = 3;
    /// Stopped by Ctrl-C, cleanly: nothing was left half done.
    pub const INTERRUPTED: u8 = 130;
}

/// How a command that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// `verify` found differences.
    Differences,
    /// Ctrl-C stopped it cleanly.
    Interrupted,
}

impl Outcome {
    /// The exit code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Ok => exit::OK,
            Outcome::Differences => exit::DIFFERENCES,
            Outcome::Interrupted => exit::INTERRUPTED,
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument the parser let through is not valid (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// An online command without a token.
    #[error("no token: pass --token or set JITFLOW_TOKEN (mint one with `jitflow-shim token`)")]
    NoToken,
    /// The shim could not be reached, or the answer could not be read.
    #[error("{0}")]
    Http(String),
    /// The shim refused: its status and the `ErrorResponseDto`'s text.
    #[error("the shim answered {status}: {text}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error text.
        text: String,
    },
    /// The shim's answer is not what the API documents.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// No store file in the data directory.
    #[error("no store at {}: is --data-dir (JITFLOW_DATA_DIR) the engine's data directory?", path.display())]
    NoStore {
        /// The missing file.
        path: PathBuf,
    },
    /// An engine (or another offline command) holds the store file.
    #[error(
        "{} is in use by a running engine (or another jitflow command): stop the engine first; \
         offline commands need the file to themselves, and online commands (--url) read a running one",
        path.display()
    )]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The file has an older format version; only `upgrade` opens it.
    #[error(
        "{} has format version {found}; this build reads {supported}: run `jitflow upgrade --dry-run`, then `jitflow upgrade`",
        path.display()
    )]
    Outdated {
        /// The store file.
        path: PathBuf,
        /// Its version.
        found: u64,
        /// This build's.
        supported: u64,
    },
    /// The store refused or failed.
    #[error("{0}")]
    Store(String),
    /// A file other than the store (a cursor file) could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing the output failed (a closed pipe, a full disk).
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

impl Error {
    /// The exit code.
    pub fn code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            _ => exit::ERROR,
        }
    }
}

/// Runs a parsed command line to its end, writing to `out`; Ctrl-C sets `interrupt`.
pub async fn run(cli: Cli, interrupt: Interrupt, out: &mut impl Write) -> Result<Outcome, Error> {
    let json_out = cli.json;
    let client = || Client::new(&cli.url, cli.token.as_deref());
    match &cli.command {
        Command::Connections(ConnectionsCommand::List(list)) => {
            online::connections_list(&client()?, list, json_out, out).await
        }
        Command::Connection(ConnectionCommand::Show(c)) => {
            online::connection_show(&client()?, &c.id, json_out, out).await
        }
        Command::Activation(ActivationCommand::Show(a)) => {
            online::activation_show(&client()?, &a.id, json_out, out).await
        }
        Command::Activate(a) => {
            let body = json!({"connectionId": a.id.trim(), "activationPeriodMins": a.minutes});
            online::signal(
                &client()?,
                "/jit-activations/v1/activate",
                body,
                json_out,
                out,
            )
            .await
        }
        Command::Extend(e) => {
            let body =
                json!({"connectionId": e.id.trim(), "activationPeriodExtensionMins": e.minutes});
            online::signal(
                &client()?,
                "/jit-activations/v1/extend",
                body,
                json_out,
                out,
            )
            .await
        }
        Command::Deactivate(c) => {
            let body = json!({"connectionId": c.id.trim()});
            online::signal(
                &client()?,
                "/jit-activations/v1/deactivate",
                body,
                json_out,
                out,
            )
            .await
        }
        Command::Events(EventsCommand::Tail(tail)) => {
            online::events_tail(&client()?, tail, json_out, &interrupt, out).await
        }
        Command::Approvals(ApprovalsCommand::List(args)) => {
            online::approvals_list(&client()?, args, json_out, out).await
        }
        Command::Approvals(ApprovalsCommand::Approve(args)) => {
            online::decide(&client()?, args, "approve", json_out, out).await
        }
        Command::Approvals(ApprovalsCommand::Reject(args)) => {
            online::decide(&client()?, args, "reject", json_out, out).await
        }
        Command::Verify => offline::verify(&cli.data_dir, json_out, out),
        Command::Export(e) => offline::export(&cli.data_dir, e.from, &interrupt, out),
        Command::Compact => offline::compact(&cli.data_dir, json_out, out),
        Command::Upgrade(u) => offline::upgrade(&cli.data_dir, u.dry_run, json_out, out),
        Command::Stats => offline::stats(&cli.data_dir, json_out, &interrupt, out),
        Command::Completions(c) => {
            clap_complete::generate(c.shell, &mut Cli::command(), "jitflow", out);
            Ok(Outcome::Ok)
        }
    }
}
