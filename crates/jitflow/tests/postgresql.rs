//! The engine's suites over PostgreSQL: each suite below is the very file the redb file runs
//! (`lifecycle.rs` is its own test binary too), included here, where `Storage::new` gives
//! every test a fresh database of this binary's throwaway PostgreSQL cluster instead of a redb
//! file (see `common.rs`). One suite, two backends. A restart in a test opens a new backend on
//! the same database under the same node id, which takes the partition's lease back at once.
//!
//! Where PostgreSQL is not installed the tests skip, except under CI (`CI` set), where they
//! fail, as every PostgreSQL test does.
//!
//! The model-based test runs as many cases here as on the file (`PROPTEST_CASES`, default 64):
//! about 22 s on two idle cores against 2 s on the file, as every commit waits for
//! PostgreSQL's fsync.
//!
//! Stay on the redb file only, as they are about the file itself:
//! - `full_disk.rs`: fills the tmpfs the redb file lives on and checks that the engine heals
//!   when space returns; a full disk under PostgreSQL is the database server's, outside the
//!   engine's process (the backend's own tests cover its errors).
//! - `kill.rs`: SIGKILLs child processes running the engine on a redb file and checks every
//!   acknowledged write in the file they left; the crash under test is the file's (the
//!   PostgreSQL backend's restart and fencing tests in `crates/jitflow-store-pg/tests` cover
//!   a node dying and the database going away).
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
