//! A thin layer over SQLite's own `unix` VFS that hands a commit's WAL frames to the kernel in
//! one `pwrite` instead of two per frame.
//!
//! SQLite writes each WAL frame as two writes, its 24-byte header and then its page, and
//! offers no option to batch them. A one-message send commits ≈ 10 frames, so the queues'
//! writer made ≈ 12.5 `pwrite` calls per transaction (`strace -c`), and half its CPU was the
//! kernel's. On this machine (a Firecracker VM, ext4) ten frames of 2 KB cost 23 µs as 20
//! calls and 5–10 µs as one (docs/performance.md, "One write per commit"). That is CPU every
//! event pays twice (queues and ledger), so it is written by hand here; nothing else changes:
//! locking, shared memory, syncs and every other file go straight to `unix`.
//!
//! How: appends to a WAL file collect in a buffer while they follow one another. The buffer
//! goes to the kernel, in one call, when the page of a frame whose header carries the commit
//! mark has been appended — the last frame SQLite appends for a commit, before it publishes the
//! commit in the WAL index where other connections look. It also goes before anything else
//! touches the file (a read, an overwrite of an earlier frame — which then goes straight to
//! the file —, a sync, a truncate, a size, a lock, a file control, a close) and once it holds
//! [`FLUSH_AT`] bytes. So every byte reaches the kernel in the order SQLite wrote it, and
//! before any connection can read it or a commit returns: a process killed at any moment
//! leaves what plain `unix` would have left. The buffer keeps the capacity of the largest
//! commit it held, at most [`FLUSH_AT`] and a frame, per WAL file a connection has open.

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name connections ask for (`sqlite3_open_v2`'s `zVfs`).
pub(super) const NAME: &CStr = c"inlet-unix";

/// What the buffer may hold before it is written regardless: a large transaction (a migration,
/// a big group) then costs a write per 1 MiB rather than memory without bound.
const FLUSH_AT: usize = 1 << 20;

/// The most `unix` writes in one call: it keeps only the low 17 bits of a write's length.
const MAX_WRITE: usize = 0x1ffff & !4095;

/// A WAL frame's header (`WAL_FRAME_HDRSIZE`); bytes 4..8 are the database size after a
/// commit, non-zero only in a commit's last frame.
const FRAME_HEADER: usize = 24;

/// Register the VFS once per process. `None` when the default VFS is not `unix` (the layer
/// forwards to `unix` and relies on its methods ignoring `pAppData`, checked for `unix`
/// only); connections then use the default.
pub(super) fn name() -> Option<&'static CStr> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find and sqlite3_vfs_register are thread-safe (SQLite is built
            // serialized); the struct registered is leaked, so it outlives every connection.
            unsafe {
                let inner = ffi::sqlite3_vfs_find(ptr::null());
                if inner.is_null() || CStr::from_ptr((*inner).zName) != c"unix" {
                    return false;
                }
                let Some(size) = c_int::try_from(INNER_AT)
                    .ok()
                    .and_then(|at| at.checked_add((*inner).szOsFile))
                else {
                    return false;
                };
                let mut vfs = *inner;
                vfs.szOsFile = size;
                vfs.zName = NAME.as_ptr();
                vfs.pAppData = inner.cast();
                vfs.pNext = ptr::null_mut();
                vfs.xOpen = Some(open);
                ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0) == ffi::SQLITE_OK
            }
        })
        .then_some(NAME)
}

/// A WAL file: our state, then `unix`'s file at [`INNER_AT`]. Any other file is `unix`'s own
/// at the start of the allocation, with `unix`'s methods: no layer at all.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    pending: Vec<u8>,
    /// The file offset of `pending[0]`.
    start: i64,
    /// Where the last append ended (`None` until the first write).
    end: Option<i64>,
    /// The last append was a commit frame's header: its page, next, ends the commit.
    commit_next: bool,
}

const INNER_AT: usize = std::mem::size_of::<WalFile>().next_multiple_of(16);

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let inner_vfs: *mut ffi::sqlite3_vfs = (*vfs).pAppData.cast();
    let Some(inner_open) = (*inner_vfs).xOpen else {
        return ffi::SQLITE_ERROR;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        return inner_open(inner_vfs, name, file, flags, out_flags);
    }
    let inner: *mut ffi::sqlite3_file = file.cast::<u8>().add(INNER_AT).cast();
    let rc = inner_open(inner_vfs, name, inner, flags, out_flags);
    if rc != ffi::SQLITE_OK || (*inner).pMethods.is_null() {
        // SQLite closes a file only when its methods are set.
        (*file).pMethods = ptr::null();
        return if rc == ffi::SQLITE_OK {
            ffi::SQLITE_CANTOPEN
        } else {
            rc
        };
    }
    ptr::write(
        file.cast::<WalFile>(),
        WalFile {
            base: ffi::sqlite3_file {
                pMethods: &WAL_METHODS,
            },
            inner,
            pending: Vec::new(),
            start: 0,
            end: None,
            commit_next: false,
        },
    );
    ffi::SQLITE_OK
}

/// The layer's file and `unix`'s methods for the file beneath it.
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (
    &'a mut WalFile,
    *mut ffi::sqlite3_file,
    &'a ffi::sqlite3_io_methods,
) {
    let wal = &mut *file.cast::<WalFile>();
    let inner = wal.inner;
    (wal, inner, &*(*inner).pMethods)
}

/// Hand the buffer to the kernel: one write (one per [`MAX_WRITE`] bytes), at the offset its
/// first byte was written for.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // `commit_next` stays: a flush between a commit frame's header and its page (the bound
    // reached at the header) must not keep the page from being written when it comes.
    let (wal, inner, methods) = parts(file);
    let Some(write) = methods.xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut rc = ffi::SQLITE_OK;
    let mut offset = wal.start;
    for chunk in wal.pending.chunks(MAX_WRITE) {
        // Both fit: a chunk is at most MAX_WRITE bytes.
        let (len, step) = (chunk.len() as c_int, chunk.len() as i64);
        rc = write(inner, chunk.as_ptr().cast(), len, offset);
        count_made();
        if rc != ffi::SQLITE_OK {
            break;
        }
        offset += step;
    }
    // Written or not, these bytes are SQLite's answer now: on an error it rolls the
    // transaction back and writes its frames again.
    wal.pending.clear();
    rc
}

/// An append (the WAL's header, or a frame's header or page after the last one) joins the
/// buffer; any other write goes to the file at once, after the buffer. The others are SQLite
/// overwriting frames its current transaction wrote: a page written again after the cache
/// spilled it, and, after the commit frame, the headers whose checksums it then rewrites —
/// which must be on disk when the commit returns, as the commit frame is (a crash recovery
/// reads the WAL back only as far as the checksums chain).
unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let appends = {
        let (wal, _, _) = parts(file);
        // The WAL starts over from its header. On a file just opened, the first write is
        // an append (SQLite overwrites only frames its transaction wrote through this file).
        offset == 0 || wal.end.is_none_or(|end| end == offset)
    };
    if offset == 0 || !appends {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if !appends {
        let (_, inner, methods) = parts(file);
        count_made();
        // After a rolled-back transaction that had spilled frames, the next one overwrites
        // them: such writes go one by one until the WAL passes where the rolled-back one
        // ended, or starts over.
        return methods
            .xWrite
            .map_or(ffi::SQLITE_IOERR_WRITE, |w| w(inner, data, amount, offset));
    }
    let (wal, _, _) = parts(file);
    if wal.pending.is_empty() {
        wal.start = offset;
    }
    let bytes = std::slice::from_raw_parts(data.cast::<u8>(), len);
    wal.pending.extend_from_slice(bytes);
    wal.end = Some(offset + i64::from(amount));
    count_taken();
    let ends_commit = wal.commit_next;
    wal.commit_next = len == FRAME_HEADER && bytes[4..8] != [0; 4];
    if ends_commit || wal.pending.len() >= flush_at() {
        return flush(file);
    }
    ffi::SQLITE_OK
}

/// A method that needs the file as SQLite wrote it: flush, then `unix`'s method.
macro_rules! after_flush {
    ($name:ident, $method:ident ( $($arg:ident : $ty:ty),* ) -> c_int) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            let (_, inner, methods) = parts(file);
            match methods.$method {
                Some(m) => m(inner $(, $arg)*),
                None => ffi::SQLITE_IOERR,
            }
        }
    };
}

after_flush!(read, xRead(data: *mut c_void, amount: c_int, offset: i64) -> c_int);
after_flush!(truncate, xTruncate(size: i64) -> c_int);
after_flush!(sync, xSync(flags: c_int) -> c_int);
after_flush!(file_size, xFileSize(size: *mut i64) -> c_int);
after_flush!(lock, xLock(level: c_int) -> c_int);
after_flush!(unlock, xUnlock(level: c_int) -> c_int);
after_flush!(check_reserved_lock, xCheckReservedLock(out: *mut c_int) -> c_int);
after_flush!(file_control, xFileControl(op: c_int, arg: *mut c_void) -> c_int);
after_flush!(shm_map, xShmMap(region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int);
after_flush!(shm_lock, xShmLock(offset: c_int, n: c_int, flags: c_int) -> c_int);
after_flush!(shm_unmap, xShmUnmap(delete: c_int) -> c_int);
after_flush!(fetch, xFetch(offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int);
after_flush!(unfetch, xUnfetch(offset: i64, page: *mut c_void) -> c_int);

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let flushed = flush(file);
    let (wal, inner, methods) = parts(file);
    let closed = methods.xClose.map_or(ffi::SQLITE_OK, |close| close(inner));
    ptr::drop_in_place(wal);
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let (_, inner, methods) = parts(file);
    methods.xSectorSize.map_or(4096, |m| m(inner))
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let (_, inner, methods) = parts(file);
    methods.xDeviceCharacteristics.map_or(0, |m| m(inner))
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    if flush(file) != ffi::SQLITE_OK {
        return;
    }
    let (_, inner, methods) = parts(file);
    if let Some(m) = methods.xShmBarrier {
        m(inner);
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

fn flush_at() -> usize {
    #[cfg(test)]
    if let Some(n) = FLUSH_AT_IN_TEST.with(std::cell::Cell::get) {
        return n;
    }
    FLUSH_AT
}

#[cfg(test)]
thread_local! {
    /// A smaller bound for this thread's writes, so a test can put it anywhere in a commit.
    static FLUSH_AT_IN_TEST: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };

    /// Per thread, for the tests: the writes the layer took in (headers and pages) and the
    /// writes it made to the file.
    static COUNTS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

#[cfg(test)]
fn count_taken() {
    COUNTS.with(|c| c.set((c.get().0 + 1, c.get().1)));
}

#[cfg(test)]
fn count_made() {
    COUNTS.with(|c| c.set((c.get().0, c.get().1 + 1)));
}

#[cfg(not(test))]
fn count_taken() {}

#[cfg(not(test))]
fn count_made() {}

#[cfg(test)]
mod tests {
    use rusqlite::{params, Connection};

    use super::super::tests::TempDb;
    use super::*;

    fn counts() -> (u64, u64) {
        COUNTS.with(std::cell::Cell::get)
    }

    /// A connection through the layer, in WAL mode with 2 KB pages and no automatic
    /// checkpoint unless asked for.
    fn layered(db: &TempDb, autocheckpoint: i64) -> Connection {
        let vfs = name().expect("the default VFS here is unix");
        let conn = Connection::open_with_flags_and_vfs(&db.0, rusqlite::OpenFlags::default(), vfs)
            .expect("open through the layer");
        conn.execute_batch(
            "PRAGMA page_size = 2048; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
        )
        .expect("pragmas");
        conn.pragma_update(None, "wal_autocheckpoint", autocheckpoint)
            .expect("autocheckpoint");
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)",
        )
        .expect("table");
        conn
    }

    /// A connection with SQLite's own `unix` VFS, as another process or tool would open it.
    fn plain(path: &std::path::Path) -> Connection {
        Connection::open(path).expect("plain open")
    }

    fn rows(conn: &Connection) -> (i64, i64) {
        conn.query_row(
            "SELECT count(*), coalesce(sum(length(b)), 0) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("count")
    }

    /// The database file and its WAL as a crash would leave them (no shared memory, nothing
    /// checkpointed), copied beside, then opened with plain `unix`: it recovers from the WAL
    /// on disk alone.
    fn recovered(db: &TempDb) -> (i64, i64) {
        let copy = TempDb::new();
        for suffix in ["", "-wal"] {
            let (mut from, mut to) = (
                db.0.clone().into_os_string(),
                copy.0.clone().into_os_string(),
            );
            from.push(suffix);
            to.push(suffix);
            std::fs::copy(&from, &to).expect("copy");
        }
        let conn = plain(&copy.0);
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity check");
        assert_eq!(ok, "ok");
        rows(&conn)
    }

    #[test]
    fn a_commit_reaches_the_wal_in_one_write() {
        let db = TempDb::new();
        let conn = layered(&db, 0);
        let before = counts();
        conn.execute_batch("BEGIN").expect("begin");
        for i in 0..20 {
            conn.execute(
                "INSERT INTO t (id, b) VALUES (?1, zeroblob(1500))",
                params![i],
            )
            .expect("insert");
        }
        conn.execute_batch("COMMIT").expect("commit");
        let (taken, made) = (counts().0 - before.0, counts().1 - before.1);
        assert!(
            taken >= 40,
            "20 pages or more, each a header and a page: {taken}"
        );
        assert_eq!(made, 1, "one write to the file for {taken} from SQLite");
        assert_eq!(rows(&plain(&db.0)), (20, 30_000));
        assert_eq!(recovered(&db), (20, 30_000));
    }

    #[test]
    fn every_commit_is_on_disk_when_it_returns_through_checkpoints_and_restarts() {
        let db = TempDb::new();
        let conn = layered(&db, 40);
        let other = plain(&db.0);
        let mut expected = (0, 0);
        for round in 0..300_i64 {
            // Mostly small commits, now and then one past the buffer's bound.
            let (n, size) = if round % 50 == 49 {
                (800, 1800)
            } else {
                (1 + round % 7, 300)
            };
            let tx = conn.unchecked_transaction().expect("begin");
            for _ in 0..n {
                tx.execute("INSERT INTO t (b) VALUES (zeroblob(?1))", params![size])
                    .expect("insert");
            }
            tx.commit().expect("commit");
            expected = (expected.0 + n, expected.1 + n * size);
            assert_eq!(
                rows(&other),
                expected,
                "another connection, after commit {round}"
            );
            if round % 60 == 59 {
                assert_eq!(recovered(&db), expected, "a crash after commit {round}");
            }
        }
        let wal_frames: i64 = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .expect("checkpoint");
        assert!(
            wal_frames < 4000,
            "the WAL started over along the way: {wal_frames} frames"
        );
    }

    #[test]
    fn a_commit_is_on_disk_wherever_the_buffers_bound_falls_in_it() {
        // 2,072 + 24 bytes is one 2 KB frame and the next frame's header: with that bound a
        // two-frame commit reaches it at its commit frame's header, and the page that ends
        // the commit must still be written when it comes (a first version kept it waiting).
        for bound in [1, 24, 2072 + 24, 3 * 2072] {
            FLUSH_AT_IN_TEST.with(|b| b.set(Some(bound)));
            let db = TempDb::new();
            let conn = layered(&db, 0);
            for n in 1..=5_i64 {
                let tx = conn.unchecked_transaction().expect("begin");
                for _ in 0..n {
                    tx.execute("INSERT INTO t (b) VALUES (zeroblob(700))", [])
                        .expect("insert");
                }
                tx.commit().expect("commit");
                let expected = (n * (n + 1) / 2, n * (n + 1) / 2 * 700);
                assert_eq!(recovered(&db), expected, "bound {bound}, commit {n}");
            }
        }
        FLUSH_AT_IN_TEST.with(|b| b.set(None));
    }

    #[test]
    fn a_transaction_spilled_to_the_wal_then_rolled_back_or_rewritten_leaves_it_sound() {
        let db = TempDb::new();
        let conn = layered(&db, 0);
        // A cache of a few pages: a large transaction writes frames before it commits.
        conn.pragma_update(None, "cache_size", 8)
            .expect("cache size");
        conn.execute("INSERT INTO t (id, b) VALUES (1, zeroblob(100))", [])
            .expect("seed");
        let tx = conn.unchecked_transaction().expect("begin");
        for _ in 0..300 {
            tx.execute("INSERT INTO t (b) VALUES (zeroblob(1000))", [])
                .expect("insert");
        }
        tx.rollback().expect("rollback");
        assert_eq!(rows(&plain(&db.0)), (1, 100));
        assert_eq!(recovered(&db), (1, 100));

        // Pages written, spilled and written again in one transaction: SQLite overwrites
        // their frames in place and then rewrites the checksums.
        let tx = conn.unchecked_transaction().expect("begin");
        for i in 2..200 {
            tx.execute(
                "INSERT INTO t (id, b) VALUES (?1, zeroblob(500))",
                params![i],
            )
            .expect("insert");
        }
        for _ in 0..3 {
            tx.execute("UPDATE t SET b = zeroblob(length(b) + 1)", [])
                .expect("update");
        }
        tx.commit().expect("commit");
        let expected = (199, 100 + 3 + 198 * 503);
        assert_eq!(rows(&plain(&db.0)), expected);
        assert_eq!(recovered(&db), expected);
    }
}
