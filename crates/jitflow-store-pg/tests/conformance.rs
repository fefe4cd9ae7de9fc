//! The store's conformance suite (`jitflow-store/tests/common/conformance.rs`, the one the
//! redb file runs) over PostgreSQL: a fresh database per case, the store dropped and opened
//! again on it for crashes and reopens.

#[path = "../../jitflow-store/tests/common/mod.rs"]
mod common;
#[path = "../../jitflow-store/tests/common/conformance.rs"]
mod conformance;

use std::sync::Arc;
use std::time::Duration;

use conformance::{Location, Machine, cases};
use jitflow_store::Store;
use jitflow_store::open::Options;
use jitflow_store_pg::testing::Cluster;
use jitflow_store_pg::{Config, LeaseOptions, PgBackend};
use proptest::prelude::ProptestConfig;
use proptest_state_machine::prop_state_machine;

/// A database of the shared cluster.
struct Database {
    /// Keeps the cluster up.
    _cluster: Arc<Cluster>,
    url: String,
}

impl Location for Database {
    fn new() -> Database {
        let cluster = Cluster::shared().expect("PostgreSQL is installed");
        let url = cluster.database().unwrap();
        Database {
            _cluster: cluster,
            url,
        }
    }

    fn open(&self, options: Options) -> Store {
        let config = Config::new(
            self.url.clone(),
            "node-1",
            LeaseOptions::new(Duration::from_secs(30)),
        );
        let backend = PgBackend::open(config).unwrap();
        Store::open_on(Arc::new(backend), options).unwrap()
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: cases(8), ..ProptestConfig::default() })]

    fn machine(sequential 1..24 => Machine<Database>);
}

/// Runs the suite, or skips it (outside CI) where PostgreSQL is missing.
#[test]
fn the_store_over_postgresql_follows_the_model() {
    let Some(_cluster) = Cluster::shared() else {
        return;
    };
    machine();
}
