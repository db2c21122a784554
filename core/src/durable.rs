//! The one way to make sled writes durable.
//!
//! sled 0.34's `Db::flush` writes dirty pages with `pwrite` and then calls
//! `sync_file_range`, which is not a durability barrier (sled issue #1452): the data
//! can sit in the page cache, and the file's metadata is not synced. An acknowledgement
//! in Nexus means fdatasync-durable, so every durable point is `flush` followed by an
//! `fdatasync` of the database file.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// A sled database plus an open handle on its data file, for fdatasync.
#[derive(Debug)]
pub(crate) struct DurableDb {
    db: sled::Db,
    data_file: File,
    syncs: AtomicU64,
}

impl DurableDb {
    /// Opens (or creates) the sled database at `dir`.
    ///
    /// `segment_size` of 8 MiB keeps commit groups of up to 2 MiB inline in the
    /// segment; with sled's default 512 KiB a node over 128 KiB becomes a separate
    /// blob file per commit, each one more file to make durable.
    pub(crate) fn open(dir: &Path, cache_capacity_bytes: u64) -> io::Result<Self> {
        let config = sled::Config::new()
            .path(dir)
            .segment_size(SEGMENT_SIZE_BYTES)
            .cache_capacity(cache_capacity_bytes)
            .flush_every_ms(Some(BACKGROUND_FLUSH_MS));
        // sled releases its file lock from a background thread a moment after the
        // last handle is dropped, so a quick reopen (a restart in the same process)
        // retries for a bounded time before reporting the lock.
        let mut attempts_left = LOCK_RETRY_ATTEMPTS;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) && attempts_left > 0 => {
                    attempts_left -= 1;
                    std::thread::sleep(std::time::Duration::from_millis(LOCK_RETRY_MS));
                }
                Err(e) if is_lock_error(&e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "the database in {} is in use by another process",
                            dir.display()
                        ),
                    ));
                }
                Err(e) => return Err(sled_to_io(e)),
            }
        };
        // sled 0.34 keeps all pages in `<dir>/db`.
        let data_file = File::options()
            .read(true)
            .write(true)
            .open(dir.join("db"))?;
        Ok(Self {
            db,
            data_file,
            syncs: AtomicU64::new(0),
        })
    }

    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes every write that completed before this call durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.db.flush().map_err(sled_to_io)?;
        self.data_file.sync_data()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// sled's flush alone: NOT durable (see the module comment). Only for
    /// measuring what the fdatasync costs.
    pub(crate) fn flush_only(&self) -> io::Result<()> {
        self.db.flush().map_err(sled_to_io)?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many durable syncs were issued since open (for benchmarks).
    pub(crate) fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

const LOCK_RETRY_ATTEMPTS: u32 = 250;
const LOCK_RETRY_MS: u64 = 20;
const SEGMENT_SIZE_BYTES: usize = 8 * 1024 * 1024;
/// sled's own background flush; not relied on for durability.
const BACKGROUND_FLUSH_MS: u64 = 500;

/// sled 0.34 reports a held lock only as an `Other` I/O error with this text.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

pub(crate) fn sled_to_io(e: sled::Error) -> io::Error {
    match e {
        sled::Error::Io(io) => io,
        other => io::Error::other(other.to_string()),
    }
}
