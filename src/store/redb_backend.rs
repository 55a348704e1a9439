//! The redb backend: one file in the data directory (`protocol-spec/store.md`,
//! "File").
//!
//! * The file is created with mode 0600 (it holds key material); an existing
//!   file with wider permissions is narrowed on open.
//! * redb's page cache defaults to 1 GiB; we use [`DEFAULT_CACHE_BYTES`]
//!   (4 MiB), which keeps a 100,000-event store scan under the 32 MiB RSS
//!   goal on small boards (`reports/store.md`).
//! * One write transaction is open while writes are staged; reads go through
//!   it, so they see staged writes. [`Kv::commit`] commits it with redb's
//!   default `Durability::Immediate` (fsync), which is the group commit.
//! * Tables are opened once per transaction, not per operation: a write
//!   transaction opens them all when it begins (`OpenWrite`), and reads
//!   between commits share one read transaction (`ReadSnapshot`), dropped
//!   when a write begins. Opening a table per operation was a sixth of a
//!   receiving daemon's time (`reports/daemon-throughput.md`).
//! * Opening a corrupted or truncated file returns
//!   [`StoreError::Corrupt`] naming the file. redb documents that a plain
//!   open of an externally altered file may panic, so the open runs inside
//!   `catch_unwind` and a panic is reported the same way.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, WriteTransaction,
};

use super::kv::{Kv, Pair, Table, be_u64};
use super::memory::bounds_empty;
use super::{CheckReport, Engine, SCHEMA_VERSION, StoreConfig, StoreError};

/// Page cache size for the redb file: 2 MiB. Small boards have 64–512 MiB
/// of RAM; redb's 1 GiB default would let the cache grow with the file.
/// On a store of 100,000 events, storing with group commit and reading by
/// ID ran as fast with 1, 2 or 4 MiB (`examples/store_rss.rs --cache`,
/// `reports/field.md`): the kernel's page cache serves the file, and the
/// cache was the largest item of a relay's heap.
pub const DEFAULT_CACHE_BYTES: usize = 2 * 1024 * 1024;

/// File mode of the store file (it holds key material).
pub const STORE_FILE_MODE: u32 = 0o600;

/// File name of the store inside the data directory.
pub const STORE_FILE_NAME: &str = "store.redb";

fn def(t: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(t.name())
}

/// One open table of a write transaction.
type WriteTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// Every table of a write transaction, open, in [`Table::ALL`] order.
type WriteTables<'txn> = Vec<WriteTable<'txn>>;

self_cell::self_cell!(
    /// A write transaction with its tables open.
    struct OpenWrite {
        owner: WriteTransaction,
        #[not_covariant]
        dependent: WriteTables,
    }
);

impl OpenWrite {
    fn begin(txn: WriteTransaction) -> Result<Self, redb::Error> {
        OpenWrite::try_new(txn, |txn| {
            Table::ALL
                .iter()
                .map(|t| txn.open_table(def(*t)).map_err(redb::Error::from))
                .collect()
        })
    }

    /// Runs `f` on table `t`.
    fn read<V>(
        &self,
        t: Table,
        f: impl FnOnce(&WriteTable<'_>) -> Result<V, StoreError>,
    ) -> Result<V, StoreError> {
        self.with_dependent(|_, tables| match slot(t).and_then(|i| tables.get(i)) {
            Some(table) => f(table),
            None => Err(StoreError::Backend(format!("no table {}", t.name()))),
        })
    }

    /// Runs `f` on table `t`, to change it.
    fn write<V>(
        &mut self,
        t: Table,
        f: impl FnOnce(&mut WriteTable<'_>) -> Result<V, redb::StorageError>,
    ) -> Result<V, redb::Error> {
        self.with_dependent_mut(|_, tables| match slot(t).and_then(|i| tables.get_mut(i)) {
            Some(table) => f(table).map_err(redb::Error::from),
            None => Err(redb::Error::TableDoesNotExist(t.name().to_owned())),
        })
    }
}

/// A read transaction shared by the reads between two writes, with the
/// tables opened so far.
struct ReadSnapshot {
    txn: ReadTransaction,
    tables: Vec<Option<ReadOnlyTable<&'static [u8], &'static [u8]>>>,
}

/// The position of `t` in [`Table::ALL`].
fn slot(t: Table) -> Option<usize> {
    Table::ALL.iter().position(|x| *x == t)
}

/// redb as an ordered, transactional key-value backend.
pub struct RedbKv {
    /// The open write (fields drop in order: transactions before the
    /// database).
    txn: Option<OpenWrite>,
    /// Reads while no write is staged; dropped when one begins, at commit
    /// and before maintenance that needs no reader.
    read: RefCell<Option<ReadSnapshot>>,
    /// `None` only while [`RedbKv::reopen`] swaps it.
    db: Option<Database>,
    cache_bytes: usize,
    dirty: bool,
    path: PathBuf,
}

impl std::fmt::Debug for RedbKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbKv")
            .field("path", &self.path)
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

impl RedbKv {
    /// Opens (or creates) the store file at `path` with a page cache of
    /// `cache_bytes`, and creates missing tables.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        if !path.exists() {
            create_atomically(path)?;
        }
        secure_file(path)?;
        let opened = catch_unwind(AssertUnwindSafe(|| {
            Database::builder().set_cache_size(cache_bytes).create(path)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(open_error(path, e)),
            Err(_) => {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    detail: "the database engine failed while reading the file header".into(),
                });
            }
        };
        let kv = RedbKv {
            txn: None,
            read: RefCell::new(None),
            db: Some(db),
            cache_bytes,
            dirty: false,
            path: path.to_path_buf(),
        };
        // Create missing tables; a store that has them all is opened
        // without a write (it may sit on a full disk).
        let missing = {
            let r = kv.db()?.begin_read().map_err(|e| kv.err(e))?;
            Table::ALL.iter().any(|t| r.open_table(def(*t)).is_err())
        };
        if missing {
            let txn = kv.db()?.begin_write().map_err(|e| kv.err(e))?;
            for t in Table::ALL {
                txn.open_table(def(t)).map_err(|e| kv.err(e))?;
            }
            txn.commit().map_err(|e| kv.err(e))?;
        }
        Ok(kv)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db
            .as_ref()
            .ok_or_else(|| StoreError::Backend(format!("{}: not open", self.path.display())))
    }

    /// Closes and opens the file again, discarding staged writes. After a
    /// failed write (a full disk) redb refuses every further operation
    /// until it is reopened; reopening recovers the last committed state
    /// (`protocol-spec/daemon.md`, "Disk full").
    pub fn reopen(&mut self) -> Result<(), StoreError> {
        if let Some(t) = self.txn.take() {
            // The transaction may be unusable after the failure: dropping
            // it is the abort.
            let _ = t.into_owner().abort();
        }
        self.read.get_mut().take();
        self.dirty = false;
        drop(self.db.take());
        let fresh = RedbKv::open(&self.path, self.cache_bytes)?;
        *self = fresh;
        Ok(())
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        map_err(&self.path, e.into())
    }

    fn write_txn(&mut self) -> Result<&mut OpenWrite, StoreError> {
        if self.txn.is_none() {
            // The write's reads go through it; a snapshot kept open would
            // pin the pages this write frees.
            self.read.get_mut().take();
            let t = self
                .db()?
                .begin_write()
                .map_err(|e| map_err(&self.path, e.into()))?;
            self.txn = Some(OpenWrite::begin(t).map_err(|e| map_err(&self.path, e))?);
        }
        self.txn
            .as_mut()
            .ok_or_else(|| StoreError::Backend("write transaction vanished".into()))
    }

    /// Ends the write transaction without committing it.
    fn abort_write(&mut self) -> Result<(), StoreError> {
        self.dirty = false;
        if let Some(t) = self.txn.take() {
            t.into_owner().abort().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Runs `f` on table `t` of the shared read snapshot, beginning it (or
    /// opening the table) if needed.
    fn with_read<V>(
        &self,
        t: Table,
        f: impl FnOnce(&ReadOnlyTable<&'static [u8], &'static [u8]>) -> Result<V, StoreError>,
    ) -> Result<V, StoreError> {
        let mut read = self.read.borrow_mut();
        if read.is_none() {
            let txn = self.db()?.begin_read().map_err(|e| self.err(e))?;
            *read = Some(ReadSnapshot {
                txn,
                tables: (0..Table::ALL.len()).map(|_| None).collect(),
            });
        }
        let snap = read
            .as_mut()
            .ok_or_else(|| StoreError::Backend("read snapshot vanished".into()))?;
        let cell = slot(t)
            .and_then(|i| snap.tables.get_mut(i))
            .ok_or_else(|| StoreError::Backend(format!("no table {}", t.name())))?;
        let table = match cell {
            Some(table) => table,
            None => cell.insert(snap.txn.open_table(def(t)).map_err(|e| self.err(e))?),
        };
        f(table)
    }

    /// Compacts the file, returning freed pages to the file system (no
    /// transaction may be open; staged writes are discarded).
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        self.abort_write()?;
        self.read.get_mut().take();
        self.db
            .as_mut()
            .ok_or_else(|| StoreError::Backend(format!("{}: not open", self.path.display())))?
            .compact()
            .map_err(|e| StoreError::Backend(format!("{}: compaction: {e}", self.path.display())))
    }

    /// Runs redb's own page-checksum and allocator check (no transaction may
    /// be open). Returns false if the file needed repair.
    pub fn check_integrity(&mut self) -> Result<bool, StoreError> {
        self.abort_write()?;
        self.read.get_mut().take();
        self.db
            .as_mut()
            .ok_or_else(|| StoreError::Backend(format!("{}: not open", self.path.display())))?
            .check_integrity()
            .map_err(|e| open_error(&self.path, e))
    }
}

/// Creates a new, empty store file at `path` so that a crash at any point
/// leaves either no file or a complete one (`protocol-spec/store.md`,
/// §5 "File"): the database is created under a temporary name beside it,
/// its tables made and synced, then linked into place, which fails rather
/// than replaces if another process created the store meanwhile. Without
/// this, a kill while redb writes the first header leaves a file that every
/// later open refuses as corrupt.
fn create_atomically(path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".new-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    secure_file(&tmp)?;
    {
        let db = Database::builder()
            .create(&tmp)
            .map_err(|e| open_error(&tmp, e))?;
        let txn = db.begin_write().map_err(|e| map_err(&tmp, e.into()))?;
        for t in Table::ALL {
            txn.open_table(def(t))
                .map_err(|e| map_err(&tmp, e.into()))?;
        }
        txn.commit().map_err(|e| map_err(&tmp, e.into()))?;
    }
    OpenOptions::new()
        .read(true)
        .open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        // Another process created the store first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

fn secure_file(path: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(STORE_FILE_MODE);
        let f = o.open(path).map_err(io)?;
        let meta = f.metadata().map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(STORE_FILE_MODE))
                .map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    {
        o.open(path).map_err(io)?;
    }
    Ok(())
}

fn open_error(path: &Path, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        }
        DatabaseError::UpgradeRequired(v) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "written in redb file format {v}, which this build cannot read; open it with the meshrelay version that wrote it and export the rooms"
            ),
        },
        DatabaseError::Storage(redb::StorageError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        }
        other => map_err(path, other.into()),
    }
}

fn map_err(path: &Path, e: redb::Error) -> StoreError {
    match e {
        redb::Error::Corrupted(detail) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        },
        redb::Error::Io(source) => StoreError::Io {
            path: path.to_path_buf(),
            source,
        },
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_path_buf(),
        },
        other => StoreError::Backend(format!("{}: {other}", path.display())),
    }
}

fn collect<'a, I>(iter: I, limit: usize, path: &Path) -> Result<Vec<Pair>, StoreError>
where
    I: Iterator<
        Item = Result<
            (
                redb::AccessGuard<'a, &'static [u8]>,
                redb::AccessGuard<'a, &'static [u8]>,
            ),
            redb::StorageError,
        >,
    >,
{
    let mut out = Vec::new();
    for item in iter.take(limit) {
        let (k, v) = item.map_err(|e| map_err(path, e.into()))?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

fn read_range<T: ReadableTable<&'static [u8], &'static [u8]>>(
    table: &T,
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
    limit: usize,
    rev: bool,
    path: &Path,
) -> Result<Vec<Pair>, StoreError> {
    let r = table
        .range::<&[u8]>((lo, hi))
        .map_err(|e| map_err(path, e.into()))?;
    if rev {
        collect(r.rev(), limit, path)
    } else {
        collect(r, limit, path)
    }
}

impl RedbKv {
    /// `key`'s value as `f` reads it in place (seeing staged writes).
    fn get_with<V>(
        &self,
        t: Table,
        key: &[u8],
        f: impl Fn(&[u8]) -> V,
    ) -> Result<Option<V>, StoreError> {
        if let Some(txn) = &self.txn {
            txn.read(t, |table| {
                let v = table.get(key).map_err(|e| self.err(e))?;
                Ok(v.map(|g| f(g.value())))
            })
        } else {
            self.with_read(t, |table| {
                let v = table.get(key).map_err(|e| self.err(e))?;
                Ok(v.map(|g| f(g.value())))
            })
        }
    }
}

impl Kv for RedbKv {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_with(t, key, <[u8]>::to_vec)
    }

    fn get_u64(&self, t: Table, key: &[u8]) -> Result<Option<u64>, StoreError> {
        Ok(self.get_with(t, key, be_u64)?.flatten())
    }

    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.dirty = true;
        let r = self
            .write_txn()?
            .write(t, |table| table.insert(key, value).map(|_| ()));
        r.map_err(|e| self.err(e))
    }

    fn remove(&mut self, t: Table, key: &[u8]) -> Result<bool, StoreError> {
        let existed = self
            .write_txn()?
            .write(t, |table| table.remove(key).map(|old| old.is_some()));
        let existed = existed.map_err(|e| self.err(e))?;
        if existed {
            self.dirty = true;
        }
        Ok(existed)
    }

    fn range(
        &self,
        t: Table,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        limit: usize,
        rev: bool,
    ) -> Result<Vec<Pair>, StoreError> {
        if bounds_empty(lo, hi) || limit == 0 {
            return Ok(Vec::new());
        }
        if let Some(txn) = &self.txn {
            txn.read(t, |table| read_range(table, lo, hi, limit, rev, &self.path))
        } else {
            self.with_read(t, |table| read_range(table, lo, hi, limit, rev, &self.path))
        }
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let dirty = std::mem::take(&mut self.dirty);
        self.read.get_mut().take();
        if let Some(t) = self.txn.take() {
            let t = t.into_owner();
            if dirty {
                t.commit().map_err(|e| self.err(e))?;
            } else {
                t.abort().map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        self.abort_write()
    }

    fn has_pending(&self) -> bool {
        self.dirty
    }
}

/// The durable store.
pub type RedbStore = Engine<RedbKv>;

impl Engine<RedbKv> {
    /// Opens (or creates) the store file at `path` with the default page
    /// cache, checking the schema version.
    pub fn open(path: &Path, config: StoreConfig) -> Result<RedbStore, StoreError> {
        Self::open_with_cache(path, config, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store with an explicit page-cache size.
    pub fn open_with_cache(
        path: &Path,
        config: StoreConfig,
        cache_bytes: usize,
    ) -> Result<RedbStore, StoreError> {
        config.validate()?;
        // A downgrade must not touch the file: the version is read without
        // a write transaction first (`protocol-spec/store.md`, "Upgrades").
        if let Some(found) = probe_schema(path, cache_bytes)
            && found > SCHEMA_VERSION
        {
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let kv = RedbKv::open(path, cache_bytes)?;
        Engine::open_kv_at(kv, config, Some(path))
    }

    /// Closes and reopens the store file after a failed write (see
    /// [`RedbKv::reopen`]); staged writes are discarded.
    pub fn reopen(&mut self) -> Result<(), StoreError> {
        self.kv_mut().reopen()
    }

    /// Compacts the store file (call on an idle store; staged writes are
    /// discarded). Returns whether anything was compacted.
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        self.kv_mut().compact()
    }

    /// Full check for `meshrelay store check`: redb's page checksums, then
    /// every event re-verified and every counter recounted. Discards staged
    /// writes (call it on an idle store).
    pub fn check(&mut self) -> Result<CheckReport, StoreError> {
        let clean = self.kv_mut().check_integrity()?;
        let mut report = self.check_report()?;
        if !clean {
            report.ok = false;
            report
                .problems
                .insert(0, "redb found damaged pages and repaired the file".into());
        }
        Ok(report)
    }
}

/// The schema version recorded in an existing store file, read through
/// redb's read-only mode, which never modifies the file. `None` when the
/// file is missing or empty, or cannot be opened read-only (for example it
/// needs recovery after a crash, or a daemon holds it): then the normal
/// open decides, and still refuses a newer version before any migration.
pub fn probe_schema(path: &Path, cache_bytes: usize) -> Option<u64> {
    if std::fs::metadata(path).ok()?.len() == 0 {
        return None;
    }
    let opened = catch_unwind(AssertUnwindSafe(|| {
        Database::builder()
            .set_cache_size(cache_bytes)
            .open_read_only(path)
    }));
    let db = opened.ok()?.ok()?;
    let txn = db.begin_read().ok()?;
    let table = txn.open_table(def(Table::System)).ok()?;
    let v = table.get(super::engine::SCHEMA_KEY).ok()??;
    let b: [u8; 8] = v.value().get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Opens the store file at `path`, checks it, and returns the report
/// (`meshrelay store check [--json]`; serialise it with `serde_json`).
pub fn check_file(path: &Path, config: StoreConfig) -> Result<CheckReport, StoreError> {
    let mut s = Engine::open(path, config)?;
    s.check()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::store::conformance::{T0, ev, ident, meta, room};
    use crate::store::{EventStore, Priority, Source};

    fn fresh() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE_NAME);
        (dir, path)
    }

    #[test]
    fn counters_read_in_place_as_copied() {
        let (_dir, path) = fresh();
        crate::store::kv::check_get_u64(&mut RedbKv::open(&path, 1 << 20).unwrap());
    }

    #[test]
    fn store_is_send() {
        fn send<T: Send>() {}
        send::<RedbStore>();
        send::<crate::store::MemoryStore>();
    }

    #[cfg(unix)]
    #[test]
    fn file_mode_is_0600_even_if_widened() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, path) = fresh();
        drop(RedbStore::open(&path, StoreConfig::default()).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(RedbStore::open(&path, StoreConfig::default()).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn newer_schema_is_refused_with_clear_message() {
        let (_d, path) = fresh();
        {
            let mut s = RedbStore::open(&path, StoreConfig::default()).unwrap();
            s.kv_mut()
                .put(
                    Table::System,
                    b"schema_version",
                    &(SCHEMA_VERSION + 1).to_be_bytes(),
                )
                .unwrap();
            s.commit().unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = RedbStore::open(&path, StoreConfig::default()).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 1)
        );
        assert!(
            std::fs::read(&path).unwrap() == before,
            "a refused open must not write to the file"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(path.to_str().unwrap()) && msg.contains("upgrade"),
            "{msg}"
        );
    }

    #[test]
    fn older_schema_is_refused_not_misread() {
        let (_d, path) = fresh();
        {
            let mut s = RedbStore::open(&path, StoreConfig::default()).unwrap();
            s.kv_mut()
                .put(Table::System, b"schema_version", &0u64.to_be_bytes())
                .unwrap();
            s.commit().unwrap();
        }
        let err = RedbStore::open(&path, StoreConfig::default()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("schema version 0"), "{err}");
    }

    #[test]
    fn second_open_reports_lock() {
        let (_d, path) = fresh();
        let _s = RedbStore::open(&path, StoreConfig::default()).unwrap();
        let err = RedbStore::open(&path, StoreConfig::default()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    fn populated(path: &Path) {
        let mut s = RedbStore::open(path, StoreConfig::default()).unwrap();
        let a = ident(1);
        for seq in 1..=200 {
            let e = ev(&a, room(1), seq, vec![], T0, &[7u8; 512]);
            s.insert_event(&e, &meta(Priority::OwnRoom, Source::Local))
                .unwrap();
        }
        s.commit().unwrap();
    }

    /// Truncations and garbage: every one is a clear error naming the file
    /// (or, if redb recovers, a store that passes its check), never a panic.
    #[test]
    fn damaged_files_give_clear_errors() {
        let (_d, path) = fresh();
        populated(&path);
        let good = std::fs::read(&path).unwrap();
        let mut cases: Vec<(String, Vec<u8>)> = vec![
            ("garbage".into(), vec![0xa5; 8192]),
            ("short header".into(), good[..100].to_vec()),
        ];
        for cut in [512, 4096, good.len() / 2, good.len() - 4096] {
            cases.push((format!("truncated at {cut}"), good[..cut].to_vec()));
        }
        let mut flipped = good.clone();
        for i in (4096..flipped.len()).step_by(997) {
            flipped[i] ^= 0xff;
        }
        cases.push(("bit flips".into(), flipped));
        let prev_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        for (name, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            let res = catch_unwind(AssertUnwindSafe(|| {
                RedbStore::open(&path, StoreConfig::default()).and_then(|mut s| s.check())
            }));
            match res {
                Err(_) => {
                    std::panic::set_hook(prev_hook);
                    panic!("{name}: open or check panicked");
                }
                Ok(Err(e)) => {
                    let msg = e.to_string();
                    assert!(msg.contains(path.to_str().unwrap()), "{name}: {msg}");
                    assert!(matches!(e, StoreError::Corrupt { .. }), "{name}: {e:?}");
                    eprintln!("{name}: {msg}");
                }
                Ok(Ok(report)) => {
                    // Recovered: then it must say whether it is intact.
                    eprintln!("{name}: recovered, ok={}", report.ok);
                }
            }
        }
        std::panic::set_hook(prev_hook);
    }

    #[test]
    fn check_report_serialises() {
        let (_d, path) = fresh();
        populated(&path);
        let report = check_file(&path, StoreConfig::default()).unwrap();
        assert!(report.ok, "{:?}", report.problems);
        assert_eq!(report.events_verified, 200);
        assert_eq!(report.stats.events, 200);
        assert_eq!(report.schema_version, SCHEMA_VERSION);
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["stats"]["events"], 200);
        assert_eq!(json["stats"]["evictions"]["expired"], 0);
        assert_eq!(json["stats"]["forks"], 0);
        assert!(json["stats"]["bytes"].as_u64().unwrap() > 200 * 512);
    }
}
