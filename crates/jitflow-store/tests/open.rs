//! Opening: a fresh file gets the current format version; a file of an unknown or newer
//! version, or a redb file that is not a store, fails with a typed error and is not changed.

use jitflow_store::Store;
use jitflow_store::open::{Error, FILE_FORMAT_VERSION, Options};
use redb::{Database, ReadableDatabase, TableDefinition};

/// The store's meta table, as the file format defines it.
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");

fn stamped_version(path: &std::path::Path) -> Option<u64> {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    meta.get("format_version").unwrap().map(|v| v.value())
}

fn stamp(path: &std::path::Path, version: u64) {
    let db = Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("format_version", version)
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_fresh_file_gets_the_current_version_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(Store::open(&path, Options::default()).unwrap());
    assert_eq!(stamped_version(&path), Some(FILE_FORMAT_VERSION));
    let store = Store::open(&path, Options::default()).unwrap();
    assert_eq!(store.reader().unwrap().last_sequence().unwrap(), 0);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_newer_version_fails_with_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(Store::open(&path, Options::default()).unwrap());
    for version in [FILE_FORMAT_VERSION + 1, 0, u64::MAX] {
        stamp(&path, version);
        let err = Store::open(&path, Options::default()).unwrap_err();
        assert!(
            matches!(err, Error::UnknownVersion { found, supported } if found == version && supported == FILE_FORMAT_VERSION),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("format version {version}")),
            "{err}"
        );
        assert_eq!(
            stamped_version(&path),
            Some(version),
            "the open changed the file"
        );
    }
}

#[test]
fn a_redb_file_that_is_not_a_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<u64, u64>::new("something_else"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path, Options::default()).unwrap_err();
    assert!(matches!(err, Error::NotAStore), "{err:?}");
}

#[test]
fn a_file_that_is_not_redb_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.redb");
    std::fs::write(&path, vec![0x5a; 10_000]).unwrap();
    let err = Store::open(&path, Options::default()).unwrap_err();
    assert!(matches!(err, Error::Database(_)), "{err:?}");
}

/// The dry run's read: the stamped version, without upgrading; refused while a store holds the
/// file, and for a missing file.
#[test]
fn the_stored_version_is_read_without_changing_the_file() {
    use jitflow_store::open::stored_format_version;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    assert!(matches!(
        stored_format_version(&path),
        Err(Error::Database(_))
    ));
    drop(Store::open(&path, Options::default()).unwrap());
    stamp(&path, 2);
    assert_eq!(stored_format_version(&path).unwrap(), Some(2));
    assert_eq!(stamped_version(&path), Some(2), "read only: not upgraded");
    let store = Store::open(&path, Options::default()).unwrap();
    assert!(matches!(
        stored_format_version(&path),
        Err(Error::Database(redb::DatabaseError::DatabaseAlreadyOpen))
    ));
    drop(store);
    assert_eq!(
        stored_format_version(&path).unwrap(),
        Some(FILE_FORMAT_VERSION)
    );
}

#[test]
fn a_redb_file_has_partition_zero_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let options = Options {
        partition: jitflow_store::backend::Partition(3),
        ..Options::default()
    };
    let err = Store::open(&path, options).unwrap_err();
    assert!(matches!(err, Error::NoSuchPartition(3)), "{err:?}");
    assert!(!path.exists(), "the refused open created the file");
    // Partition 0 is the file's own.
    let options = Options {
        partition: jitflow_store::backend::Partition::WHOLE,
        ..Options::default()
    };
    drop(Store::open(&path, options).unwrap());
}

/// The tenant hash is part of the stored layout: these values (FNV-1a 64, computed apart from
/// this code) must never change.
#[test]
fn a_tenants_partition_is_stable() {
    use jitflow_store::backend::Partition;
    assert_eq!(Partition::of_tenant("acme", 8), Partition(7));
    assert_eq!(Partition::of_tenant("globex", 8), Partition(6));
    assert_eq!(Partition::of_tenant("initech", 8), Partition(1));
    assert_eq!(Partition::of_tenant("acme", 3), Partition(2));
    assert_eq!(Partition::of_tenant("initech", 3), Partition(0));
    assert_eq!(Partition::of_tenant("acme", 1), Partition::WHOLE);
    // A count of 0 is read as 1 rather than dividing by zero.
    assert_eq!(Partition::of_tenant("acme", 0), Partition::WHOLE);
}
