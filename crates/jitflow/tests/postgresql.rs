//! The engine's suites over PostgreSQL: each suite below is the very file the redb file runs
//! (`lifecycle.rs` is its own test binary too), included here, where `Storage::new` gives
//! every test a fresh database of this binary's throwaway PostgreSQL cluster instead of a redb
//! file (see `common.rs`). One suite, two backends. A restart in a test opens a new backend on
//! the same database under the same node id, which takes the partition's lease back at once.
//! The cluster is started by the first test and stopped when the last one running lets go:
//! once for the whole binary when tests run in parallel, once per test (about 1.5 s each) with
//! `--test-threads=1`.
//!
//! Where PostgreSQL is not installed the tests skip, except under CI (`CI` set), where they
//! fail, as every PostgreSQL test does.
//!
//! The model-based test runs as many cases here as on the file (`PROPTEST_CASES`, default 64):
//! about 22 s on two idle cores against 2 s on the file, as every commit waits for
//! PostgreSQL's fsync.
//!
//! Two engine suites stay on the redb file only, as they are about the file itself:
//! - `full_disk.rs` puts the redb file on a small tmpfs, fills it, and checks that the engine
//!   degrades and heals by itself once space returns. Under PostgreSQL the disk that fills is
//!   the database server's, not one the engine writes; no test fills it.
//! - `kill.rs` SIGKILLs child processes (re-executions of its own binary, sharing a clock
//!   through a file) while they write the redb file, and checks that the file they leave holds
//!   every acknowledged write: the file's crash consistency. A client killed mid-commit cannot
//!   tear a PostgreSQL commit (the server makes it or not); the backend's own tests of a crash
//!   are `crates/jitflow-store-pg/tests/restart.rs` (the server stopped and started under load)
//!   and `fencing.rs` (child nodes, one SIGSTOPped past its lease while another takes over).
#![allow(
    clippy::duplicate_mod,
    reason = "each suite is a test binary of its own on the redb file, so each declares `mod \
              common;`: here `common.rs` is loaded once per suite"
)]

#[path = "connections.rs"]
mod connections;
#[path = "drift.rs"]
mod drift;
#[path = "lifecycle.rs"]
mod lifecycle;
#[path = "model.rs"]
mod model;
#[path = "query.rs"]
mod query;
#[path = "request_config.rs"]
mod request_config;
#[path = "request_lists.rs"]
mod request_lists;
#[path = "requests.rs"]
mod requests;
