//! Compaction: give the file's free space back to the file system, on request.

use crate::store::Store;

/// Why a compaction did not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A write failed earlier; reopen the store first.
    #[error("the store is poisoned by an earlier failed write: reopen it")]
    Poisoned,
    /// redb refused or failed: a `Reader` is still open (drop every reader first), or an I/O
    /// error (the store is then poisoned).
    #[error("compaction failed: {0}")]
    Compaction(#[source] redb::CompactionError),
    /// The store's backend is not a file: there is nothing to compact.
    #[error("the store's backend is not a file")]
    NotAFile,
}

impl Store {
    /// Compacts the file: moves pages to its front and truncates the free space at its end.
    /// Returns whether anything was moved. Needs exclusive access (`&mut`) and no open
    /// [`Reader`](crate::read::Reader); it can take long on a large file.
    pub fn compact(&mut self) -> Result<bool, Error> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let Some(file) = self.file() else {
            return Err(Error::NotAFile);
        };
        let Some(result) = file.with_db_mut(|db| db.compact()) else {
            return Err(Error::Poisoned);
        };
        match result {
            Ok(moved) => Ok(moved),
            Err(e) => {
                if matches!(e, redb::CompactionError::Storage(_)) {
                    self.poison();
                }
                Err(Error::Compaction(e))
            }
        }
    }
}
