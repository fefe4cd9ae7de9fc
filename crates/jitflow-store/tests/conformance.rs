//! The store's conformance suite (`common/conformance.rs`) over the redb file; the PostgreSQL
//! backend runs the same suite in `jitflow-store-pg/tests/conformance.rs`.

mod common;
#[path = "common/conformance.rs"]
mod conformance;

use conformance::{File, Machine, cases};
use proptest::prelude::ProptestConfig;
use proptest_state_machine::prop_state_machine;

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: cases(16), ..ProptestConfig::default() })]

    #[test]
    fn the_store_over_a_file_follows_the_model(sequential 1..24 => Machine<File>);
}
