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
    REQUEST_CONFIGS, STUCK,
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
    store.write_file(|txn| {
        let mut table = txn.open_table(CONNECTIONS)?;
        table.insert(
            (tenant.as_str(), connection.spec.id.as_u128()),
            codec::encode_connection(connection).as_slice(),
        )?;
        Ok(())
    })
}

/// Turns the file back into format version 2, as a build of that version left it: drops the
/// access request config table and stamps version 2, so that the upgrade [`Store::open`]
/// performs (and `jitflow upgrade --dry-run`) can be tested. Meant for a store without access
/// request configs (version 2 had none); drop the store after it, as a version 2 file is
/// opened anew.
pub fn downgrade_to_version_2(store: &Store) -> Result<(), Error> {
    // Version 2 wrote every derived row with its events: checkpoint all of them first, then
    // drop what versions 4 and 6 added (the extras table, the checkpoint position, the stuck
    // table).
    store.checkpoint(None)?;
    store.write_file(|txn| {
        txn.delete_table(REQUEST_CONFIGS)?;
        txn.delete_table(EXTRAS)?;
        txn.delete_table(STUCK)?;
        let mut meta = txn.open_table(META)?;
        meta.remove(CHECKPOINT_KEY)?;
        meta.remove(CHECKPOINT_EXTRAS_KEY)?;
        meta.insert(FORMAT_VERSION_KEY, 2)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{CONN, append, spec, step};
    use crate::verify::Difference;
    use jitflow_core::lifecycle::Command;

    /// The planted projection is what verify reports, and only that.
    #[test]
    fn an_overwritten_connection_is_a_verify_difference() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("f.redb"), Default::default()).unwrap();
        let tenant = TenantId::parse("acme").unwrap();
        let (event, after) = step(None, Command::Register(spec(CONN)));
        append(&store, &tenant, event, after);
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

/// A tmpfs mounted on a directory, for tests of a real full disk; unmounted (and the
/// directory removed) on drop. Mounting needs root.
#[derive(Debug)]
pub struct Tmpfs {
    path: std::path::PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. `32m`) on a new directory
    /// under the system's temporary directory. `None` when it cannot (not root, no `mount`):
    /// the caller skips and says so, except under CI (`CI=true`), where this panics so that a
    /// suite never passes without its full-disk tests.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let path = tempfile_dir();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs { path }),
            other => {
                let _ = std::fs::remove_dir(&path);
                let why = format!("cannot mount a tmpfs ({other:?}): full-disk tests need root");
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{why}; CI must run them"
                );
                eprintln!("SKIPPED: {why}");
                None
            }
        }
    }

    /// The mount point.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Writes zeros into a file on the tmpfs until it refuses (ENOSPC); returns the file, whose
    /// removal gives the space back.
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("create the filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A new, empty directory under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let path = std::env::temp_dir().join(format!(
            "jitflow-tmpfs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        if std::fs::create_dir(&path).is_ok() {
            return path;
        }
    }
}
