//! Entry points for other crates' tests (cargo feature `test-support`, which no release build
//! enables): damage that no write API allows, so that tools built on [`Store::verify`] and on
//! the upgrade on open (the `jitflow verify` and `jitflow upgrade` commands) can be tested on a
//! store that disagrees with its log, or of an older format version.

use jitflow_core::connection::Connection;
use jitflow_core::id::TenantId;

use crate::append::Error;
use crate::codec;
use crate::store::Store;
use crate::tables::{
    CHECKPOINT_EXTRAS_KEY, CHECKPOINT_KEY, CONNECTIONS, EXTRAS, FORMAT_VERSION_KEY, META,
    REQUEST_CONFIGS,
};

/// Overwrites the stored projection of `connection` (of `tenant`) with `connection` as given,
/// without appending an event: the projection now disagrees with the log, and
/// [`Store::verify`] reports a `Difference::Connection` for it. Committed like any write
/// (`Durability::Immediate`).
pub fn overwrite_connection(
    store: &Store,
    tenant: &TenantId,
    connection: &Connection,
) -> Result<(), Error> {
    // Into the checkpointed table, under an empty layer, so that the merged view shows it.
    store.checkpoint(None)?;
    let txn = store.begin_write()?;
    let result = (|| {
        let mut table = txn.open_table(CONNECTIONS)?;
        table.insert(
            (tenant.as_str(), connection.spec.id.as_u128()),
            codec::encode_connection(connection).as_slice(),
        )?;
        Ok(())
    })();
    store.finish(txn, result)
}

/// Turns the file back into format version 2, as a build of that version left it: drops the
/// access request config table and stamps version 2, so that the upgrade [`Store::open`]
/// performs (and `jitflow upgrade --dry-run`) can be tested. Meant for a store without access
/// request configs (version 2 had none); drop the store after it, as a version 2 file is
/// opened anew.
pub fn downgrade_to_version_2(store: &Store) -> Result<(), Error> {
    // Version 2 wrote every derived row with its events: checkpoint all of them first, then
    // drop what version 4 added (the extras table, the checkpoint position).
    store.checkpoint(None)?;
    let txn = store.begin_write()?;
    let result = (|| {
        txn.delete_table(REQUEST_CONFIGS)?;
        txn.delete_table(EXTRAS)?;
        let mut meta = txn.open_table(META)?;
        meta.remove(CHECKPOINT_KEY)?;
        meta.remove(CHECKPOINT_EXTRAS_KEY)?;
        meta.insert(FORMAT_VERSION_KEY, 2)?;
        Ok(())
    })();
    store.finish(txn, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Batch, Entry};
    use crate::test_support::{CONN, spec, step};
    use crate::verify::Difference;
    use jitflow_core::lifecycle::Command;

    /// The planted projection is what verify reports, and only that.
    #[test]
    fn an_overwritten_connection_is_a_verify_difference() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("f.redb"), Default::default()).unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let (event, after) = step(None, Command::Register(spec(CONN)));
        let mut batch = Batch::new();
        batch.push(Entry::Connection {
            tenant: tenant.clone(),
            event,
            after,
        });
        store.append_batch(&batch).unwrap();
        assert!(store.verify().unwrap().is_clean());
        let mut c = store
            .reader()
            .unwrap()
            .connection(&tenant, CONN)
            .unwrap()
            .unwrap();
        c.spec.identity_name = "Mallory".into();
        overwrite_connection(&store, &tenant, &c).unwrap();
        let report = store.verify().unwrap();
        assert!(
            matches!(report.differences.as_slice(), [Difference::Connection { id, .. }] if *id == CONN),
            "{:#?}",
            report.differences
        );
    }

    /// A downgraded file reads as version 2 without being changed, and opens upgraded.
    #[test]
    fn a_downgraded_file_is_version_2_until_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.redb");
        let store = Store::open(&path, Default::default()).unwrap();
        downgrade_to_version_2(&store).unwrap();
        drop(store);
        assert_eq!(crate::open::stored_format_version(&path).unwrap(), Some(2));
        let store = Store::open(&path, Default::default()).unwrap();
        drop(store);
        assert_eq!(
            crate::open::stored_format_version(&path).unwrap(),
            Some(crate::open::FILE_FORMAT_VERSION)
        );
    }
}
