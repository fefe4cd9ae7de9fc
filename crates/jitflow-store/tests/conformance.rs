//! The store's conformance suite (`common/conformance.rs`) over the redb file; the PostgreSQL
//! backend runs the same suite in `jitflow-store-pg/tests/conformance.rs`.

mod common;
#[path = "common/conformance.rs"]
mod conformance;

use conformance::{Location, Machine, cases};
use jitflow_store::Store;
use jitflow_store::open::Options;
use proptest::prelude::ProptestConfig;
use proptest_state_machine::prop_state_machine;

/// A store file in a temporary folder.
struct File(tempfile::TempDir);

impl Location for File {
    fn new() -> File {
        File(tempfile::tempdir().unwrap())
    }

    fn open(&self, options: Options) -> Store {
        Store::open(self.0.path().join("c.redb"), options).unwrap()
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: cases(16), ..ProptestConfig::default() })]

    #[test]
    fn the_store_over_a_file_follows_the_model(sequential 1..24 => Machine<File>);
}
