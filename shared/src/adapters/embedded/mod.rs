//! Embedded adapters for the ports, on SQLite: the queue (SQS semantics), the ledger
//! (DynamoDB conditional writes) and the event bus (EventBridge `PutEvents`). One store holds
//! all of them; `inlet dev` opens two, one for its queues and one for the rest, so that each
//! file has a writer of its own (`crate::local`). `inlet dev` and the tests run the pipeline
//! on these; they are not mocks — state is durable and the semantics are the AWS services'
//! (see each module), so the conformance suite in `tests/it/conformance.rs` runs unchanged
//! against both backends.
//!
//! Writes go through **group commit**: one writer thread owns the write connection; each
//! write is an operation sent to it, and it runs every operation queued at that moment (up to
//! [`MAX_GROUP`]) in one transaction (an operation that fails rolls back only itself and gets
//! its own error: see [`commit_group`]), commits once, and only then answers each
//! caller. A caller awaits its answer, so no tokio thread blocks on the store, and many
//! concurrent writers share one commit (one WAL append and one round of file locks instead of
//! one per write). Reads run on a second connection (a WAL reader, never blocked by the
//! writer); an in-memory store has a single connection, which reads and the writer share.
//! The handles the store gives out ([`SqliteQueue`], [`SqliteLedger`], [`SqliteBus`]) are
//! cheap clones of it.
//!
//! Time comes only from the injected [`Clock`] (queue visibility, delays, sent times, bus
//! event times) or from the caller (`now_ms` in ledger requests), never from `SystemTime`, so
//! tests move a `ManualClock` instead of sleeping. The one exception is a receive's `wait`,
//! which is real time by the port's definition.
//!
//! Durability: a file store runs in WAL mode with `synchronous=NORMAL`; a write is answered
//! only after the commit that holds it, and a committed transaction survives the process
//! being killed (it may be lost only on an OS crash or power loss before the next checkpoint,
//! <https://www.sqlite.org/pragma.html#pragma_synchronous>).

mod blobs;
mod bus;
mod checks;
mod ledger;
mod poll;
mod queue;
mod vfs;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::{oneshot, Notify};

use crate::ports::{BusError, CheckStoreError, Clock, LedgerError, PollStoreError, QueueError};

pub use blobs::FileBlobs;
pub use bus::SqliteBus;
pub use ledger::SqliteLedger;
pub use queue::{move_messages, QueueCounts, SqliteQueue};

/// The schema version this code writes (`PRAGMA user_version`). A store written by a newer
/// version is refused rather than misread.
const SCHEMA_VERSION: i64 = 7;

/// The most operations one group commit holds: enough to absorb a burst of concurrent
/// writers, few enough that the first caller of a group is not kept waiting long.
const MAX_GROUP: usize = 256;

/// The page size of a new store's files. A commit appends every page it changed to the WAL
/// whole, and an event's writes change a few bytes of several index pages: at 2 KB rather than
/// SQLite's 4 KB the WAL takes about half the bytes per event, so it starts over half as often
/// (the first commit after that waits for a sync of the WAL header) and the checkpoints' syncs
/// have less to write. In four alternating rounds of `make load` the longest request fell in
/// every run (one connection 29–30 ms against 47–56, sixteen 22–34 against 40–63, sixty-four
/// 45–64 against 55–89) at the same throughput, for a p99 at 64 connections 5–13 % higher;
/// 1 KB pages cost throughput (docs/performance.md). A store keeps the page size it was
/// created with.
const PAGE_SIZE: i64 = 2048;

/// The writer's own automatic checkpoint, in WAL pages (SQLite's default is 1,000): a safety
/// net only. Checkpoints run on a thread of their own ([`run_checkpointer`]), so a commit does
/// not copy the WAL back while every other writer waits for it; the writer checkpoints itself
/// only if the WAL grows this far all the same.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 40_000;

/// Past this many frames in the WAL (≈ 34 MB at 2 KB pages) the checkpointer has the WAL start
/// over. A WAL starts over only at a commit that finds all of it copied back, which a
/// checkpointer running beside a busy writer never sees: without this, the writer's own
/// checkpoint at [`WAL_AUTOCHECKPOINT_PAGES`] did it, inside a commit, copying what the last
/// background pass had not and syncing both files: 60–75 ms with every caller waiting, every
/// 1–2 s under load. Now the checkpointer copies nearly everything back first and the writer,
/// between two groups, only the rest: its syncs took 1–5 ms instead of 6–14 and the copy 10–20
/// ms instead of ≈ 50. In five pairs of 16 s runs at 64 connections the p99.9 fell from 23–34
/// to 20–26 ms; at one connection it rose by ≈ 0.5 ms (more restarts, each shorter); 32,768 was
/// worse at 64 connections than 16,384 (docs/performance.md).
const RESTART_FRAMES: i64 = 16_384;

/// How often the checkpointer looks, and how many commits it lets pass before it copies the
/// WAL back (a page rewritten by many commits is copied once per checkpoint, so checkpoints
/// are spaced rather than run after every commit); after a quiet spell it catches up anyway.
const CHECKPOINT_TICK: Duration = Duration::from_millis(100);
const CHECKPOINT_EVERY_COMMITS: u64 = 200;
const CHECKPOINT_QUIET: Duration = Duration::from_secs(1);

/// How long a statement waits for another connection (another `inlet` process on the same
/// file) to release its lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq              INTEGER PRIMARY KEY,
    queue            TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    sent_at_ms       INTEGER NOT NULL,
    visible_at_ms    INTEGER NOT NULL,
    receive_count    INTEGER NOT NULL DEFAULT 0,
    -- The handle of the latest receive; NULL until the first one (and after a redrive).
    receipt_handle   TEXT,
    group_id         TEXT,
    deduplication_id TEXT,
    UNIQUE (queue, id)
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at_ms);
CREATE INDEX IF NOT EXISTS messages_by_age ON messages (queue, sent_at_ms);
-- Partial (schema v7): a message not yet received has no entry, so a send leaves the index
-- alone; a lookup by handle implies IS NOT NULL and still uses it.
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt_handle)
    WHERE receipt_handle IS NOT NULL;
-- Schema v7: a message's body in a row of its own, written once. A receive rewrites the
-- message's row (count, visibility, receipt); with the body in it, that was a page per
-- message, copied to the WAL at every commit.
CREATE TABLE IF NOT EXISTS message_bodies (
    seq  INTEGER PRIMARY KEY,   -- messages.seq
    body TEXT    NOT NULL
);
CREATE TRIGGER IF NOT EXISTS message_bodies_go_with_their_message AFTER DELETE ON messages
BEGIN
    DELETE FROM message_bodies WHERE seq = old.seq;
END;

CREATE TABLE IF NOT EXISTS dedupe_records (
    key               TEXT    PRIMARY KEY NOT NULL,
    source            TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    body_sha256       TEXT    NOT NULL,
    provider_event_id TEXT,
    event_type        TEXT,
    via               TEXT    NOT NULL,
    received_at_ms    INTEGER NOT NULL,
    updated_at_ms     INTEGER NOT NULL,
    lease_until_ms    INTEGER NOT NULL,
    expires_at_ms     INTEGER,
    attempts          INTEGER NOT NULL,
    last_error        TEXT,
    dead              INTEGER NOT NULL,
    summary           TEXT,
    -- Schema v4: the targets that accepted the event this cycle (a JSON array).
    delivered         TEXT
);
CREATE INDEX IF NOT EXISTS dedupe_records_by_source ON dedupe_records (source, received_at_ms);
CREATE INDEX IF NOT EXISTS dedupe_records_by_time ON dedupe_records (received_at_ms);

CREATE TABLE IF NOT EXISTS trail_entries (
    id                TEXT    PRIMARY KEY NOT NULL,
    at_ms             INTEGER NOT NULL,
    source            TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    dedupe_key        TEXT,
    provider_event_id TEXT,
    event_type        TEXT,
    reason            TEXT,
    source_ip         TEXT,
    -- Schema v5: when the entry expires (the trail's retention); pruned after.
    expires_at_ms     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS trail_entries_by_source ON trail_entries (source, at_ms);
CREATE INDEX IF NOT EXISTS trail_entries_by_time ON trail_entries (at_ms);

CREATE TABLE IF NOT EXISTS poll_state (
    source         TEXT    PRIMARY KEY NOT NULL,
    cursor         TEXT,
    version        INTEGER NOT NULL,
    lease_holder   TEXT,
    lease_until_ms INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL
);

-- Delayed checks (schema v3): one row per source, check and entity.
CREATE TABLE IF NOT EXISTS checks (
    key            TEXT    PRIMARY KEY NOT NULL,
    source         TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    entity         TEXT    NOT NULL,
    poll_source    TEXT    NOT NULL,
    on_event       TEXT    NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    due_at_ms      INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    status         TEXT    NOT NULL,
    satisfied_by   TEXT,
    closed_at_ms   INTEGER,
    outcome        TEXT
);

CREATE TABLE IF NOT EXISTS bus_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    bus         TEXT    NOT NULL,
    event_id    TEXT    NOT NULL UNIQUE,
    source      TEXT    NOT NULL,
    detail_type TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    time_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bus_events_by_bus ON bus_events (bus, seq);
";

/// Schema v4 (with the `delivered` column above), per-entity order: the last applied version of each entity (the stale-version
/// guard), and the index a FIFO receive uses to find a group's hidden messages. A step of
/// its own, idempotent like [`SCHEMA`], so it applies to a store of any earlier version.
const ENTITY_ORDER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entity_versions (
    source        TEXT    NOT NULL,
    entity        TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (source, entity)
);
-- Partial (schema v7): only FIFO messages have a group, so a standard queue's writes leave
-- the index alone.
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (queue, group_id, visible_at_ms)
    WHERE group_id IS NOT NULL;
";

/// Schema v5, retention: the indexes that find expired trail entries and dedupe records.
/// After the column migrations, which the trail's index needs on a store of any earlier
/// version; idempotent like [`SCHEMA`].
const RETENTION_SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS trail_entries_by_expiry ON trail_entries (expires_at_ms);
CREATE INDEX IF NOT EXISTS dedupe_records_by_expiry ON dedupe_records (expires_at_ms);
";

/// Schema v6, lookups: a record by the object its event reports on (read out of the summary,
/// so no column migration), and a key's trail entries. Idempotent like [`SCHEMA`]. The
/// expression reads only a summary that is JSON: `json_extract` fails on anything else, and an
/// index over it would then refuse to be built (the store would not open) or a row to be
/// written; a summary that is not one reads as empty instead (`EventSummary::from_json`).
/// (A query uses the index only with the very same expression: one text for both.)
macro_rules! object_id_of_summary {
    () => {
        "CASE WHEN json_valid(summary) THEN json_extract(summary, '$.object_id') END"
    };
}
pub(crate) const OBJECT_ID_OF_SUMMARY: &str = object_id_of_summary!();
const LOOKUP_SCHEMA: &str = concat!(
    "
CREATE INDEX IF NOT EXISTS dedupe_records_by_object
    ON dedupe_records (",
    object_id_of_summary!(),
    ", received_at_ms);
CREATE INDEX IF NOT EXISTS trail_entries_by_key ON trail_entries (dedupe_key, at_ms);
"
);

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A thread panicked while holding the connection; its transaction was rolled back by
    /// SQLite, but this process stops trusting the connection.
    #[error("the embedded store's lock is poisoned (a thread panicked while using it)")]
    Poisoned,
    /// The commit of a group failed: every operation in it is rolled back, including this
    /// caller's (which had succeeded on its own).
    #[error("sqlite commit: {0}")]
    Commit(Arc<rusqlite::Error>),
    #[error("cannot start the embedded store's writer thread: {0}")]
    Spawn(std::io::Error),
    /// The writer thread is gone (it panicked, or could not take the connection).
    #[error("the embedded store's writer has stopped")]
    WriterStopped,
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("the store at {path} has schema version {found}; this inlet understands up to {SCHEMA_VERSION}")]
    NewerSchema { path: String, found: i64 },
}

impl From<EmbeddedError> for QueueError {
    fn from(e: EmbeddedError) -> Self {
        QueueError::Backend(format!("embedded queue: {e}"))
    }
}

impl From<EmbeddedError> for LedgerError {
    fn from(e: EmbeddedError) -> Self {
        match e {
            EmbeddedError::Corrupt(what) => LedgerError::Corrupt(what),
            other => LedgerError::Backend(format!("embedded ledger: {other}")),
        }
    }
}

impl From<EmbeddedError> for PollStoreError {
    fn from(e: EmbeddedError) -> Self {
        match e {
            EmbeddedError::Corrupt(what) => PollStoreError::Corrupt(what),
            other => PollStoreError::Backend(format!("embedded poll store: {other}")),
        }
    }
}

impl From<EmbeddedError> for CheckStoreError {
    fn from(e: EmbeddedError) -> Self {
        match e {
            EmbeddedError::Corrupt(what) => CheckStoreError::Corrupt(what),
            other => CheckStoreError::Backend(format!("embedded check store: {other}")),
        }
    }
}

impl From<EmbeddedError> for BusError {
    fn from(e: EmbeddedError) -> Self {
        BusError::Backend(format!("embedded bus: {e}"))
    }
}

/// A queue's redrive policy: after `max_receive_count` receives, the next receive moves the
/// message to `dead_letter_queue` (a queue name in the same store) instead of returning it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
}

/// A thread a file store starts, as [`ThreadStart`] is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreThread {
    /// Runs every write of the store, a group commit at a time: the callers wait for it.
    Writer,
    /// Copies the WAL back into the database file in the background.
    Checkpointer,
}

/// Called first on each thread a file store starts ([`EmbeddedStore::open_placed`]), before
/// it does any work: `inlet dev` places the threads on CPUs with it.
pub type ThreadStart = Arc<dyn Fn(StoreThread) + Send + Sync>;

/// One SQLite database holding every queue, the ledger and every bus.
#[derive(Clone)]
pub struct EmbeddedStore {
    /// Where writes go: the writer thread's queue of operations.
    writer: mpsc::Sender<Box<dyn Job>>,
    /// The connection reads use: a second one on a file store, the writer's own in memory.
    read: Arc<Mutex<Connection>>,
    /// The writer's connection, locked by the writer for each group (tests hold it to make
    /// writes queue up).
    #[cfg(test)]
    write_conn: Arc<Mutex<Connection>>,
    commits: Arc<AtomicU64>,
    /// Operations the writer has run (committed or not), to tell the average group.
    writes: Arc<AtomicU64>,
    /// Set by the checkpointer when the writer should copy back the rest of the WAL.
    restart_due: Arc<AtomicBool>,
    clock: Arc<dyn Clock>,
    /// Woken after any write that may make a message visible, so a waiting receive
    /// returns as soon as there is something to return (SQS long polling).
    changed: Arc<Notify>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Open (creating if needed) the store at `path`. Reopening a path sees everything a
    /// previous store committed there.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, EmbeddedError> {
        Self::open_placed(path, clock, None)
    }

    /// [`Self::open`], with `on_start` called first on each thread the store starts (see
    /// [`ThreadStart`]).
    pub fn open_placed(
        path: &Path,
        clock: Arc<dyn Clock>,
        on_start: Option<ThreadStart>,
    ) -> Result<Self, EmbeddedError> {
        Self::open_tuned(path, clock, on_start, RESTART_FRAMES)
    }

    /// [`Self::open_placed`] with the WAL restarted past `restart_frames` (tests use a small one).
    fn open_tuned(
        path: &Path,
        clock: Arc<dyn Clock>,
        on_start: Option<ThreadStart>,
        restart_frames: i64,
    ) -> Result<Self, EmbeddedError> {
        let conn = connect(path)?;
        // Before WAL mode, which fixes the page size of a new file (an existing one keeps its own).
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        // WAL: readers never block the writer, and a commit is one append. journal_mode
        // answers with the mode in force, hence the query rather than an update.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "SQLite refused WAL mode; using its journal mode instead");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // A checkpoint copies each page once however many commits rewrote it in the WAL:
        // with group commit the same few index pages are in almost every commit, so a longer
        // WAL between checkpoints (40,000 pages rather than SQLite's 1,000) copies far fewer.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        let conn = migrate(conn, &path.display().to_string())?;
        let read = connect(path)?;
        let checkpoints = connect(path)?;
        // Named after the file, so `top -H` and /proc tell the two files' threads apart
        // (the kernel keeps the first 15 bytes).
        let file = path
            .file_name()
            .map_or_else(|| "sqlite".to_owned(), |f| f.to_string_lossy().into_owned());
        let store = Self::start(conn, Some(read), clock, &file, on_start.clone())?;
        let commits = Arc::downgrade(&store.commits);
        let restart_due = store.restart_due.clone();
        std::thread::Builder::new()
            .name(format!("{file}-checkpoint"))
            .spawn(move || {
                if let Some(on_start) = on_start {
                    on_start(StoreThread::Checkpointer);
                }
                run_checkpointer(&checkpoints, &commits, &restart_due, restart_frames);
            })
            .map_err(EmbeddedError::Spawn)?;
        Ok(store)
    }

    /// A store that lives as long as this value and its clones (tests, throwaway runs).
    pub fn open_in_memory(clock: Arc<dyn Clock>) -> Result<Self, EmbeddedError> {
        let conn = Connection::open_in_memory()?;
        keep_plans(&conn)?;
        let conn = migrate(conn, ":memory:")?;
        Self::start(conn, None, clock, "sqlite", None)
    }

    /// Start the writer thread on `conn`; reads go to `read`, or to `conn` when there is
    /// no second connection (an in-memory database is private to its connection).
    fn start(
        conn: Connection,
        read: Option<Connection>,
        clock: Arc<dyn Clock>,
        file: &str,
        on_start: Option<ThreadStart>,
    ) -> Result<Self, EmbeddedError> {
        let write_conn = Arc::new(Mutex::new(conn));
        let read = match read {
            Some(read) => Arc::new(Mutex::new(read)),
            None => write_conn.clone(),
        };
        let (commits, writes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let restart_due = Arc::new(AtomicBool::new(false));
        let (writer, jobs) = mpsc::channel();
        let thread_conn = write_conn.clone();
        let counters = (commits.clone(), writes.clone());
        let thread_restart = restart_due.clone();
        let thread_clock = clock.clone();
        std::thread::Builder::new()
            .name(format!("{file}-writer"))
            .spawn(move || {
                if let Some(on_start) = on_start {
                    on_start(StoreThread::Writer);
                }
                run_writer(
                    &thread_conn,
                    &jobs,
                    &counters,
                    &thread_restart,
                    &*thread_clock,
                );
            })
            .map_err(EmbeddedError::Spawn)?;
        Ok(Self {
            writer,
            read,
            #[cfg(test)]
            write_conn,
            commits,
            writes,
            restart_due,
            clock,
            changed: Arc::new(Notify::new()),
        })
    }

    /// A handle on the queue `name` (queues need no creation: a name is a queue). The
    /// redrive policy belongs to the handle, as SQS's belongs to the queue: open a queue
    /// with the same policy everywhere it is received from.
    pub fn queue(&self, name: &str, redrive: Option<Redrive>) -> SqliteQueue {
        SqliteQueue::new(self.clone(), name.to_owned(), redrive)
    }

    pub fn ledger(&self) -> SqliteLedger {
        SqliteLedger::new(self.clone())
    }

    pub fn bus(&self, name: &str) -> SqliteBus {
        SqliteBus::new(self.clone(), name.to_owned())
    }

    /// How many messages the queue `name` holds, by state, at the clock's now.
    pub fn queue_counts(&self, name: &str) -> Result<QueueCounts, EmbeddedError> {
        queue::counts(self, name)
    }

    /// How many messages of the queue `name` are visible at the clock's now, counting no
    /// further than `cap` (back-pressure only needs to know whether there are more).
    pub fn visible_up_to(&self, name: &str, cap: u64) -> Result<u64, EmbeddedError> {
        queue::visible_up_to(self, name, cap)
    }

    /// How many transactions this store's writer has committed: a group of concurrent
    /// writes counts once (what tests and the load profile read to see the grouping).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// How many write operations this store's writer has run, committed or not.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Run `f` on the read connection under its mutex. Keep `f` short: other reads (and,
    /// in memory, the writer) wait on it.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, EmbeddedError>,
    ) -> Result<T, EmbeddedError> {
        let mut guard: MutexGuard<'_, Connection> =
            self.read.lock().map_err(|_| EmbeddedError::Poisoned)?;
        f(&mut guard)
    }

    /// Run `f` in the writer's next group commit and answer once that commit is on disk.
    /// `f` gets the transaction (its error rolls back only what it wrote; it may run twice,
    /// see [`commit_group`]) and the clock's now when it runs. The write lock is held from the
    /// group's `BEGIN IMMEDIATE`, so a read-then-write inside `f` cannot be raced by another
    /// connection on the same file.
    async fn write<T, F>(&self, f: F) -> Result<T, EmbeddedError>
    where
        T: Send + 'static,
        F: FnMut(&Transaction<'_>, i64) -> Result<T, EmbeddedError> + Send + 'static,
    {
        self.submit(f, false).await
    }

    /// [`Self::write`] for a write that adds rows DynamoDB's TTL would expire: its group also
    /// deletes up to [`ledger::PRUNE_BATCH`] expired rows of each ledger table per such write
    /// (see `ledger.rs`), once, after the group's operations. One prune per group rather than
    /// per write: the pruning statements are planned afresh on every run (their bound time
    /// meets an index), which cost the writer a tenth of its time when every completion ran
    /// them.
    async fn write_pruning<T, F>(&self, f: F) -> Result<T, EmbeddedError>
    where
        T: Send + 'static,
        F: FnMut(&Transaction<'_>, i64) -> Result<T, EmbeddedError> + Send + 'static,
    {
        self.submit(f, true).await
    }

    async fn submit<T, F>(&self, f: F, prunes: bool) -> Result<T, EmbeddedError>
    where
        T: Send + 'static,
        F: FnMut(&Transaction<'_>, i64) -> Result<T, EmbeddedError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job = Box::new(Pending {
            op: f,
            out: None,
            prunes,
            answer,
        });
        self.writer
            .send(job)
            .map_err(|_| EmbeddedError::WriterStopped)?;
        answered.await.map_err(|_| EmbeddedError::WriterStopped)?
    }

    fn notify_changed(&self) {
        self.changed.notify_waiters();
    }
}

/// A connection to the file at `path`, configured as every connection of a store is: through
/// the layer that writes a commit's WAL frames in one call (see `vfs.rs`).
fn connect(path: &Path) -> Result<Connection, EmbeddedError> {
    let conn = match vfs::name() {
        Some(vfs) => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs)?,
        None => Connection::open(path)?,
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    keep_plans(&conn)?;
    Ok(conn)
}

/// Plan each statement once, when it is first prepared. By default SQLite prepares a statement
/// again whenever a value bound to its `LIMIT` changes (and for a few other bindings that may
/// change the best plan): a receive's page size and a group's prune count change from one call
/// to the next, so the writer parsed and planned them anew almost every time (6 % of its
/// samples in the store bench). The query planner stability guarantee turns that off; the
/// plans our statements need do not depend on the values (tests check them).
fn keep_plans(conn: &Connection) -> Result<(), EmbeddedError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Create or upgrade the schema on `conn` (one transaction).
fn migrate(mut conn: Connection, path: &str) -> Result<Connection, EmbeddedError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(EmbeddedError::NewerSchema {
            path: path.to_owned(),
            found,
        });
    }
    // Versions 1 to 6 keep a message's body in its row: the table is rebuilt below, its
    // indexes with it (their names are taken until the old table is gone).
    let bodies_in_rows = found >= 1
        && tx.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('messages') WHERE name = 'body'",
            [],
            |row| row.get::<_, i64>(0),
        )? > 0;
    if bodies_in_rows {
        tx.execute_batch(
            "ALTER TABLE messages RENAME TO messages_v6;
             DROP INDEX IF EXISTS messages_by_visibility;
             DROP INDEX IF EXISTS messages_by_age;
             DROP INDEX IF EXISTS messages_by_receipt;
             DROP INDEX IF EXISTS messages_by_group;",
        )?;
    }
    tx.execute_batch(SCHEMA)?;
    if bodies_in_rows {
        tx.execute_batch(
            "INSERT INTO messages (seq, queue, id, sent_at_ms, visible_at_ms, receive_count, \
                                   receipt_handle, group_id, deduplication_id) \
             SELECT rowid, queue, id, sent_at_ms, visible_at_ms, receive_count, \
                    receipt_handle, group_id, deduplication_id FROM messages_v6;
             INSERT INTO message_bodies (seq, body) SELECT rowid, body FROM messages_v6;
             DROP TABLE messages_v6;",
        )?;
    }
    tx.execute_batch(ENTITY_ORDER_SCHEMA)?;
    // Version 1 stores (from before the trail summary) gain the column; new ones have it.
    // Version 2 stores gain the `checks` table from SCHEMA's CREATE IF NOT EXISTS.
    // Versions 1 to 3 gain the per-target `delivered` column (a NULL reads as none).
    if found == 1 {
        tx.execute_batch("ALTER TABLE dedupe_records ADD COLUMN summary TEXT;")?;
    }
    if (1..=3).contains(&found) {
        tx.execute_batch("ALTER TABLE dedupe_records ADD COLUMN delivered TEXT;")?;
    }
    // Versions 1 to 4 gain the trail's expiry; their entries get the default retention (the
    // configured one is not known here).
    if (1..=4).contains(&found) {
        tx.execute_batch(
            "ALTER TABLE trail_entries ADD COLUMN expires_at_ms INTEGER NOT NULL DEFAULT 0;",
        )?;
        tx.execute(
            "UPDATE trail_entries SET expires_at_ms = at_ms + ?1",
            [crate::config::Settings::default().trail_expires_at(0)],
        )?;
    }
    tx.execute_batch(RETENTION_SCHEMA)?;
    tx.execute_batch(LOOKUP_SCHEMA)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(conn)
}

/// One caller's operation, waiting in the writer's queue.
trait Job: Send {
    /// Run the operation in the group's transaction; whether it succeeded. It may run twice:
    /// again, on a fresh transaction, when another operation of its group failed (see
    /// [`commit_group`]), so an operation writes only through `tx`.
    fn run(&mut self, tx: &Transaction<'_>, now_ms: i64) -> bool;
    /// Whether the group should prune expired ledger rows on this operation's account.
    fn prunes(&self) -> bool;
    /// Answer the caller once the group's fate is known: its own error if it failed, the
    /// commit's error if the group did not commit, its result otherwise.
    fn answer(self: Box<Self>, commit: Result<(), &Arc<rusqlite::Error>>);
}

struct Pending<T, F> {
    op: F,
    out: Option<Result<T, EmbeddedError>>,
    prunes: bool,
    answer: oneshot::Sender<Result<T, EmbeddedError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnMut(&Transaction<'_>, i64) -> Result<T, EmbeddedError> + Send,
{
    fn run(&mut self, tx: &Transaction<'_>, now_ms: i64) -> bool {
        let out = (self.op)(tx, now_ms);
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn prunes(&self) -> bool {
        self.prunes
    }

    fn answer(self: Box<Self>, commit: Result<(), &Arc<rusqlite::Error>>) {
        let out = match (self.out, commit) {
            (Some(Err(own)), _) => Err(own),
            (_, Err(e)) => Err(EmbeddedError::Commit(e.clone())),
            (Some(Ok(v)), Ok(())) => Ok(v),
            // Never run although the group committed: only if the transaction never began,
            // which answers with its error above.
            (None, Ok(())) => Err(EmbeddedError::WriterStopped),
        };
        // A caller that stopped waiting (its future dropped) needs no answer.
        let _ = self.answer.send(out);
    }
}

/// The writer thread: take the next operation, then everything queued behind it, commit them
/// as one transaction, answer them; until every handle of the store is dropped.
fn run_writer(
    conn: &Mutex<Connection>,
    jobs: &mpsc::Receiver<Box<dyn Job>>,
    (commits, writes): &(Arc<AtomicU64>, Arc<AtomicU64>),
    restart_due: &AtomicBool,
    clock: &dyn Clock,
) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = jobs.recv() {
        group.push(first);
        // Poisoned only if a test panicked while holding it; the callers then get
        // `WriterStopped` as their jobs are dropped.
        let Ok(mut guard) = conn.lock() else {
            return;
        };
        // Drained after the lock is taken, so whatever queued while it was held (by reads on
        // an in-memory store, or a test) joins this group.
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let outcome = commit_group(&mut guard, &mut group, clock).map_err(Arc::new);
        drop(guard);
        writes.fetch_add(group.len() as u64, Ordering::Relaxed);
        if outcome.is_ok() {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        for job in group.drain(..) {
            job.answer(outcome.as_ref().map(|_| ()));
        }
        if restart_due.swap(false, Ordering::AcqRel) {
            copy_back_the_rest(conn);
        }
    }
}

/// The writer's part of a WAL restart, after the checkpointer has copied nearly all of the
/// WAL back ([`run_checkpointer`]): copy the rest, with no commit in between, so the next
/// commit starts the WAL over from its beginning. Runs after the group's callers are answered.
fn copy_back_the_rest(conn: &Mutex<Connection>) {
    let Ok(guard) = conn.lock() else {
        return;
    };
    if let Err(e) = guard.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "the writer's WAL checkpoint failed");
    }
}

/// Copy the WAL back into the database off the commit path: a `PASSIVE` checkpoint (it
/// never blocks the writer, which goes on appending) once enough commits have passed, or
/// after a quiet spell; past `restart_frames` in the WAL, a second pass and then the writer's
/// turn to copy the rest ([`RESTART_FRAMES`]). Ends when the store's last handle is gone
/// (`commits` no longer upgrades); closing this connection last then checkpoints what remains.
fn run_checkpointer(
    conn: &Connection,
    commits: &std::sync::Weak<AtomicU64>,
    restart_due: &AtomicBool,
    restart_frames: i64,
) {
    let mut done = 0;
    let mut last = std::time::Instant::now();
    loop {
        std::thread::sleep(CHECKPOINT_TICK);
        let Some(counter) = commits.upgrade() else {
            return;
        };
        let now = counter.load(Ordering::Relaxed);
        drop(counter);
        let due = now >= done + CHECKPOINT_EVERY_COMMITS
            || (now > done && last.elapsed() >= CHECKPOINT_QUIET);
        if !due || restart_due.load(Ordering::Acquire) {
            continue;
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(1)
        }) {
            Ok(frames) => {
                done = now;
                last = std::time::Instant::now();
                if frames >= restart_frames {
                    // Once more at once: it copies only what piled up while the first pass
                    // synced, so what is left for the writer is smaller still.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "background WAL checkpoint failed");
                    }
                    restart_due.store(true, Ordering::Release);
                }
            }
            // Not fatal: the writer's own automatic checkpoint is the safety net.
            Err(e) => tracing::warn!(error = %e, "background WAL checkpoint failed"),
        }
    }
}

/// Run `group` in one transaction and commit it, so that each operation's own error undoes
/// only its own writes.
///
/// Operations almost never fail, so the group first runs without a savepoint per operation: a
/// savepoint copies every page an operation touches into SQLite's sub-journal, ≈ 7 % of the
/// store bench's samples at sixteen concurrent events. If one does fail, that
/// transaction is rolled back and the whole group runs again, each operation inside a
/// savepoint of its own.
fn commit_group(
    conn: &mut Connection,
    group: &mut [Box<dyn Job>],
    clock: &dyn Clock,
) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if group.iter_mut().all(|job| job.run(&tx, clock.now_ms())) {
        prune_for(&tx, group, clock)?;
        return tx.commit();
    }
    // An error may already have ended the transaction (SQLite rolls back on some, such as a
    // full disk): then there is nothing left to undo.
    if let Err(e) = tx.rollback() {
        tracing::debug!(error = %e, "rolling back a group with a failed operation");
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for job in group.iter_mut() {
        tx.prepare_cached("SAVEPOINT op")?.execute([])?;
        if job.run(&tx, clock.now_ms()) {
            tx.prepare_cached("RELEASE op")?.execute([])?;
        } else {
            tx.prepare_cached("ROLLBACK TO op")?.execute([])?;
            tx.prepare_cached("RELEASE op")?.execute([])?;
        }
    }
    prune_for(&tx, group, clock)?;
    tx.commit()
}

/// Prune expired ledger rows on the account of the group's pruning operations, if any.
fn prune_for(
    tx: &Transaction<'_>,
    group: &[Box<dyn Job>],
    clock: &dyn Clock,
) -> Result<(), rusqlite::Error> {
    let prunes: i64 = group.iter().map(|job| i64::from(job.prunes())).sum();
    if prunes == 0 {
        return Ok(());
    }
    // Housekeeping: a failure here must not undo the group's writes.
    tx.prepare_cached("SAVEPOINT op")?.execute([])?;
    if let Err(e) = ledger::prune(tx, clock.now_ms(), prunes * ledger::PRUNE_BATCH) {
        tracing::warn!(error = %e, "pruning expired ledger rows failed; the next group tries again");
        tx.prepare_cached("ROLLBACK TO op")?.execute([])?;
    }
    tx.prepare_cached("RELEASE op")?.execute([])?;
    Ok(())
}

/// A column read as an unsigned count; a negative or oversized value is corruption.
fn count_u32(value: i64, what: &str) -> Result<u32, EmbeddedError> {
    u32::try_from(value)
        .map_err(|_| EmbeddedError::Corrupt(format!("{what} is {value}, not a count")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ManualClock;

    /// A pragma's value, read on the store's read connection.
    fn pragma<T: rusqlite::types::FromSql>(store: &EmbeddedStore, name: &str) -> T {
        store
            .with_conn(|c| Ok(c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?))
            .unwrap_or_else(|e| panic!("PRAGMA {name}: {e}"))
    }

    /// A file path no other test uses, removed (with its WAL files) on drop.
    pub(super) struct TempDb(pub std::path::PathBuf);

    impl TempDb {
        pub fn new() -> Self {
            Self(std::env::temp_dir().join(format!(
                "inlet-embedded-{}.db",
                uuid::Uuid::new_v4().simple()
            )))
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = self.0.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }

    /// The schema as versions 1 to 6 wrote the queues' table: each message's body in its row.
    const MESSAGES_V6: &str = "
CREATE TABLE IF NOT EXISTS messages (
    queue            TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    sent_at_ms       INTEGER NOT NULL,
    visible_at_ms    INTEGER NOT NULL,
    receive_count    INTEGER NOT NULL DEFAULT 0,
    receipt_handle   TEXT,
    group_id         TEXT,
    deduplication_id TEXT,
    PRIMARY KEY (queue, id)
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at_ms);
CREATE INDEX IF NOT EXISTS messages_by_age ON messages (queue, sent_at_ms);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt_handle);
CREATE INDEX IF NOT EXISTS messages_by_group ON messages (queue, group_id, visible_at_ms);
";

    /// The schema as version 6 wrote it (with [`ENTITY_ORDER_SCHEMA`], [`RETENTION_SCHEMA`] and
    /// [`LOOKUP_SCHEMA`] after it): bodies in the messages' rows.
    fn schema_v6() -> String {
        let start = SCHEMA
            .find("CREATE TABLE IF NOT EXISTS messages")
            .expect("messages");
        let end = SCHEMA.find("END;\n").expect("the v7 trigger") + "END;\n".len();
        let v6 = format!("{}{MESSAGES_V6}{}", &SCHEMA[..start], &SCHEMA[end..]);
        assert!(!v6.contains("message_bodies"), "{v6}");
        v6
    }

    /// A new file at `path` with the tables and indexes of a version 5 store.
    fn schema_v5_file(path: &Path) -> Connection {
        let conn = Connection::open(path).expect("sqlite");
        conn.execute_batch(&schema_v6()).expect("schema");
        conn.execute_batch(ENTITY_ORDER_SCHEMA).expect("v4");
        conn.execute_batch(RETENTION_SCHEMA).expect("v5");
        conn
    }

    /// The schema as version 4 wrote it: without the trail's expiry.
    fn schema_v4() -> String {
        let v4 = schema_v6().replace(
            ",\n    -- Schema v5: when the entry expires (the trail's retention); pruned after.\n    \
             expires_at_ms     INTEGER NOT NULL DEFAULT 0",
            "",
        );
        assert_ne!(
            v4,
            schema_v6(),
            "the v5 column is where the test expects it"
        );
        v4
    }

    /// The schema as version 3 wrote it: without `delivered` either.
    fn schema_v3() -> String {
        let v4 = schema_v4();
        let v3 = v4.replace(
            ",\n    -- Schema v4: the targets that accepted the event this cycle (a JSON array).\n    \
             delivered         TEXT",
            "",
        );
        assert_ne!(v3, v4, "the v4 column is where the test expects it");
        v3
    }

    #[tokio::test]
    async fn a_version_4_store_gains_the_trail_expiry_with_the_default_retention() {
        use crate::ports::{Ledger, TrailQuery, TrailRow};
        let db = TempDb::new();
        let at = 1_700_000_000_000_i64;
        {
            let conn = Connection::open(&db.0).expect("sqlite");
            conn.execute_batch(&schema_v4()).expect("v4 schema");
            conn.execute(
                "INSERT INTO trail_entries (id, at_ms, source, status) VALUES ('old', ?1, 's', 'refused')",
                [at],
            )
            .expect("v4 row");
            conn.pragma_update(None, "user_version", 4)
                .expect("version");
        }
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(at))).expect("migrates");
        let version: i64 = pragma(&store, "user_version");
        assert_eq!(version, SCHEMA_VERSION);
        let rows = store
            .ledger()
            .list(&TrailQuery::default())
            .await
            .expect("list");
        match rows.as_slice() {
            [TrailRow::Entry(e)] => {
                assert_eq!(
                    (e.id.as_str(), e.expires_at_ms),
                    ("old", at + 30 * 86_400_000)
                );
            }
            other => panic!("expected the old entry, got {other:?}"),
        }
        let indexes: i64 = store
            .with_conn(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name LIKE '%_by_expiry'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .expect("indexes");
        assert_eq!(indexes, 2);
        drop(store);
        EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(at))).expect("reopening a v5 store");
    }

    /// A version 6 store's messages keep their ids, bodies, counts, visibility and receipts
    /// when their bodies move to a table of their own; a delete takes the body with it.
    #[tokio::test]
    async fn a_version_6_store_moves_its_bodies_out_of_the_messages_and_keeps_them() {
        use crate::ports::Queue;
        let db = TempDb::new();
        let at = 1_700_000_000_000_i64;
        {
            let conn = schema_v5_file(&db.0);
            conn.execute_batch(LOOKUP_SCHEMA).expect("v6");
            conn.execute_batch(&format!(
                "INSERT INTO messages (queue, id, body, sent_at_ms, visible_at_ms) \
                     VALUES ('q', 'waiting', 'hello', {at}, {at});
                 INSERT INTO messages (queue, id, body, sent_at_ms, visible_at_ms, receive_count, receipt_handle) \
                     VALUES ('q', 'in-flight', 'world', {at}, {}, 1, 'r-old');",
                at + 60_000
            ))
            .expect("v6 rows");
            conn.pragma_update(None, "user_version", 6)
                .expect("version");
        }
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(at))).expect("migrates");
        assert_eq!(pragma::<i64>(&store, "user_version"), SCHEMA_VERSION);
        let q = store.queue("q", None);
        let got = q
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .expect("receive");
        let got: Vec<_> = got
            .iter()
            .map(|m| (m.message_id.as_str(), m.body.as_str(), m.receive_count))
            .collect();
        assert_eq!(got, [("waiting", "hello", 1)]);
        // The receipt issued before the upgrade is still the message's latest.
        q.delete("r-old").await.expect("delete by the old receipt");
        let (messages, bodies, indexes) = store
            .with_conn(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM message_bodies), \
                            (SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' \
                             AND tbl_name = 'messages' AND name LIKE 'messages_by_%')",
                    [],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
                )?)
            })
            .expect("counts");
        assert_eq!((messages, bodies, indexes), (1, 1, 4));
        drop(store);
        EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(at))).expect("reopening a v7 store");
    }

    /// A version 5 store gains the lookup indexes even with a summary that is not JSON in it
    /// (the index reads only JSON), that row still reads, and a payment's lookup goes through
    /// the index rather than a scan.
    #[tokio::test]
    async fn a_version_5_store_gains_the_lookup_indexes_whatever_its_summaries_hold() {
        use crate::ports::{Ledger, Lookup, TrailRow};
        let db = TempDb::new();
        let at = 1_700_000_000_000_i64;
        {
            let conn = schema_v5_file(&db.0);
            for (key, summary) in [
                ("s#bad", "not json {"),
                ("s#good", r#"{"object_id":"pi_7","entity":"p_42"}"#),
            ] {
                conn.execute(
                    "INSERT INTO dedupe_records (key, source, status, body_sha256, via, \
                     received_at_ms, updated_at_ms, lease_until_ms, attempts, dead, summary) \
                     VALUES (?1, 's', 'COMPLETED', 'h', 'webhook', ?2, ?2, ?2, 1, 0, ?3)",
                    rusqlite::params![key, at, summary],
                )
                .expect("v5 row");
            }
            conn.pragma_update(None, "user_version", 5)
                .expect("version");
        }
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(at))).expect("migrates");
        let ledger = store.ledger();
        let bad = ledger
            .get("s#bad")
            .await
            .expect("get")
            .expect("still there");
        assert!(bad.summary.is_empty(), "{:?}", bad.summary);
        match ledger
            .lookup(Lookup::Object("pi_7"), at)
            .await
            .expect("lookup")
            .as_slice()
        {
            [TrailRow::Record(r)] => assert_eq!(r.key, "s#good"),
            other => panic!("expected the one record, got {other:?}"),
        }
        let plan: String = store
            .with_conn(|c| {
                let sql = format!(
                    "EXPLAIN QUERY PLAN SELECT key FROM dedupe_records WHERE {OBJECT_ID_OF_SUMMARY} = 'pi_7' \
                     ORDER BY received_at_ms DESC"
                );
                let mut stmt = c.prepare(&sql)?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?.join("; "))
            })
            .expect("plan");
        assert!(plan.contains("dedupe_records_by_object"), "{plan}");
    }

    #[test]
    fn open_creates_the_file_in_wal_mode() {
        let db = TempDb::new();
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("open");
        assert!(db.0.exists());
        let mode: String = pragma(&store, "journal_mode");
        assert_eq!(mode, "wal");
        let pages: i64 = store
            .write_conn
            .lock()
            .expect("writer connection")
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .expect("autocheckpoint");
        assert_eq!(pages, WAL_AUTOCHECKPOINT_PAGES);
        let page_size: i64 = pragma(&store, "page_size");
        assert_eq!(page_size, PAGE_SIZE);
    }

    #[tokio::test]
    async fn a_store_created_with_another_page_size_keeps_it_and_works() {
        use crate::ports::{OutboundMessage, Queue};
        let db = TempDb::new();
        {
            let old = Connection::open(&db.0).expect("create");
            old.execute_batch(
                "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE before_us (x);",
            )
            .expect("a 4 KB store");
        }
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("open");
        let page_size: i64 = pragma(&store, "page_size");
        assert_eq!(page_size, 4096);
        let q = store.queue("q", None);
        q.send(&OutboundMessage::new("m")).await.expect("send");
        let got = q
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(got.len(), 1);
    }

    #[tokio::test]
    async fn the_wal_is_copied_back_off_the_commit_path() {
        use crate::ports::{OutboundMessage, Queue};
        let db = TempDb::new();
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("open");
        let size = || std::fs::metadata(&db.0).expect("db file").len();
        let before = size();
        let queue = store.queue("q", None);
        // Far fewer pages than the writer's own automatic checkpoint: only the background
        // checkpointer copies them into the database file, which in WAL mode nothing else
        // writes.
        for n in 0..CHECKPOINT_EVERY_COMMITS + 10 {
            queue
                .send(&OutboundMessage::new(format!("{n:0>2000}")))
                .await
                .expect("send");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while size() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file did not grow: no checkpoint ran"
            );
            tokio::time::sleep(CHECKPOINT_TICK).await;
        }
    }

    /// Under writes that never pause the WAL starts over once the checkpointer has copied it
    /// back and the writer the rest, long before the writer's own checkpoint would: a
    /// checkpoint beside a busy writer never finds the whole WAL copied back by itself.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_writes_that_never_pause_the_wal_starts_over_long_before_the_writers_own_checkpoint(
    ) {
        use crate::ports::{OutboundMessage, Queue};
        let db = TempDb::new();
        let store = EmbeddedStore::open_tuned(&db.0, Arc::new(ManualClock::new(1)), None, 64)
            .expect("open");
        let mut wal = db.0.clone().into_os_string();
        wal.push("-wal");
        // The WAL header's first salt, which SQLite increments each time the WAL starts over,
        // and the WAL file's length.
        let look = || -> (u32, u64) {
            let bytes = std::fs::read(&wal).expect("wal");
            let salt = bytes.get(16..20).expect("a WAL header");
            let salt = u32::from_be_bytes(salt.try_into().expect("four bytes"));
            (salt, bytes.len() as u64)
        };
        let queue = store.queue("q", None);
        queue
            .send(&OutboundMessage::new("first"))
            .await
            .expect("send");
        let (first, _) = look();
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..8)
            .map(|_| {
                let (queue, stop) = (queue.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        queue
                            .send(&OutboundMessage::new("x".repeat(1500)))
                            .await
                            .expect("send");
                    }
                })
            })
            .collect();
        let frame = 24 + PAGE_SIZE as u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let outcome = loop {
            let (salt, len) = look();
            if salt != first {
                break Ok(());
            }
            if len >= frame * (WAL_AUTOCHECKPOINT_PAGES as u64 / 2) {
                break Err(format!("the WAL grew to {} frames", len / frame));
            }
            if std::time::Instant::now() >= deadline {
                break Err("no restart in 30 s".to_owned());
            }
            tokio::time::sleep(CHECKPOINT_TICK).await;
        };
        stop.store(true, Ordering::Relaxed);
        for sender in senders {
            sender.await.expect("sender");
        }
        outcome.expect("the WAL started over");
    }

    #[test]
    fn reopening_an_existing_store_keeps_its_schema() {
        let db = TempDb::new();
        drop(EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("open"));
        EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("reopen");
    }

    #[tokio::test]
    async fn a_version_1_store_gains_the_trail_summary_and_keeps_its_records() {
        use crate::ports::{BeginRequest, EventSummary, Ledger};
        let db = TempDb::new();
        {
            let conn = Connection::open(&db.0).expect("sqlite");
            conn.execute_batch(&schema_v3().replace(",\n    summary           TEXT", ""))
                .expect("v1 schema");
            conn.execute(
                "INSERT INTO dedupe_records VALUES ('old', 's', 'COMPLETED', 'h', NULL, NULL, \
                 'webhook', 1, 1, 1, NULL, 1, NULL, 0)",
                [],
            )
            .expect("v1 row");
            conn.pragma_update(None, "user_version", 1)
                .expect("version");
        }
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("migrates");
        let ledger = store.ledger();
        let old = ledger.get("old").await.expect("get").expect("kept");
        assert_eq!(old.summary, EventSummary::default());
        let summary = EventSummary {
            entity: Some("player-7".into()),
            ..Default::default()
        };
        ledger
            .begin(&BeginRequest {
                key: "new".into(),
                source: "s".into(),
                body_sha256: "h".into(),
                provider_event_id: None,
                event_type: None,
                via: "webhook".into(),
                received_at_ms: 2,
                now_ms: 2,
                lease_until_ms: 100,
                summary: summary.clone(),
            })
            .await
            .expect("begin");
        let new = ledger.get("new").await.expect("get").expect("stored");
        assert_eq!(new.summary, summary);
    }

    #[tokio::test]
    async fn a_version_2_store_gains_the_checks_table() {
        use crate::ports::{CheckStore, Ledger};
        let db = TempDb::new();
        {
            let conn = Connection::open(&db.0).expect("sqlite");
            let v3 = schema_v3();
            let start = v3.find("-- Delayed checks").expect("checks table");
            let end = v3
                .find("CREATE TABLE IF NOT EXISTS bus_events")
                .expect("bus table");
            let v2 = format!("{}{}", &v3[..start], &v3[end..]);
            conn.execute_batch(&v2).expect("v2 schema");
            conn.execute(
                "INSERT INTO dedupe_records VALUES ('old', 's', 'COMPLETED', 'h', NULL, NULL, \
                 'webhook', 1, 1, 1, NULL, 1, NULL, 0, NULL)",
                [],
            )
            .expect("v2 row");
            conn.pragma_update(None, "user_version", 2)
                .expect("version");
        }
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("migrates");
        let ledger = store.ledger();
        assert!(
            Ledger::get(&ledger, "old").await.expect("get").is_some(),
            "records kept"
        );
        assert_eq!(
            CheckStore::get_check(&ledger, "nope")
                .await
                .expect("checks table"),
            None
        );
        let version: i64 = pragma(&store, "user_version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn a_version_3_store_gains_the_delivered_targets_and_keeps_its_records() {
        use std::collections::BTreeSet;

        use crate::ports::{BeginOutcome, BeginRequest, DedupeStatus, Ledger};
        let db = TempDb::new();
        {
            let conn = Connection::open(&db.0).expect("sqlite");
            conn.execute_batch(&schema_v3()).expect("v3 schema");
            // A dispatch that failed under v3: the upgraded worker retries it.
            conn.execute(
                "INSERT INTO dedupe_records VALUES ('old', 's', 'FAILED', 'h', NULL, NULL, \
                 'webhook', 1, 1, 1, NULL, 1, '503', 0, NULL)",
                [],
            )
            .expect("v3 row");
            conn.pragma_update(None, "user_version", 3)
                .expect("version");
        }
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("migrates");
        let version: i64 = pragma(&store, "user_version");
        assert_eq!(version, SCHEMA_VERSION);
        let ledger = store.ledger();
        let old = ledger.get("old").await.expect("get").expect("kept");
        assert_eq!(
            (old.status, old.attempts, old.delivered.len()),
            (DedupeStatus::Failed, 1, 0)
        );
        let outcome = ledger
            .begin(&BeginRequest {
                key: "old".into(),
                source: "s".into(),
                body_sha256: "h".into(),
                provider_event_id: None,
                event_type: None,
                via: "webhook".into(),
                received_at_ms: 1,
                now_ms: 2,
                lease_until_ms: 100,
                summary: Default::default(),
            })
            .await
            .expect("begin");
        assert_eq!(
            outcome,
            BeginOutcome::Acquired {
                attempts: 2,
                delivered: BTreeSet::new()
            }
        );
        ledger.mark_delivered("old", "bus", 3).await.expect("mark");
        assert_eq!(
            ledger
                .get("old")
                .await
                .expect("get")
                .expect("kept")
                .delivered,
            BTreeSet::from(["bus".to_owned()])
        );
        drop(store);
        // Reopening an upgraded store changes nothing.
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("reopen");
        assert_eq!(
            store
                .ledger()
                .get("old")
                .await
                .expect("get")
                .expect("kept")
                .delivered,
            BTreeSet::from(["bus".to_owned()])
        );
    }

    /// Poll `fut` once, so its operation is queued for the writer; it cannot be answered
    /// yet while the test holds the writer's connection.
    fn queue_up<F: std::future::Future + Unpin>(fut: &mut F) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            std::pin::Pin::new(fut).poll(&mut cx).is_pending(),
            "answered while the writer was held"
        );
    }

    #[tokio::test]
    async fn a_group_prunes_once_as_many_expired_rows_as_its_pruning_writes_are_owed() {
        use crate::ports::{Ledger, TrailEntry, TrailStatus};
        let t0 = 1_700_000_000_000_i64;
        let clock = Arc::new(ManualClock::new(t0));
        let store = EmbeddedStore::open_in_memory(clock.clone()).expect("open");
        let ledger = store.ledger();
        let entry = |id: String, expires_at_ms| TrailEntry {
            id,
            at_ms: t0,
            source: "shop".into(),
            status: TrailStatus::Conflict,
            dedupe_key: None,
            provider_event_id: None,
            event_type: None,
            reason: None,
            source_ip: None,
            expires_at_ms,
        };
        for n in 0..40 {
            let e = entry(format!("old{n:02}"), t0 + 1_000);
            ledger.append(&e).await.expect("append");
        }
        let old = || {
            store
                .with_conn(|c| {
                    Ok(c.query_row(
                        "SELECT COUNT(*) FROM trail_entries WHERE id LIKE 'old%'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )?)
                })
                .expect("count")
        };
        assert_eq!(old(), 40, "nothing expired yet");
        clock.advance_ms(1_001);

        let commits = store.commits();
        let held = store.write_conn.lock().expect("writer connection");
        let mut writes: Vec<_> = (0..3)
            .map(|n| {
                let (ledger, e) = (ledger.clone(), entry(format!("new{n}"), t0 + 86_400_000));
                Box::pin(async move { ledger.append_new(&e).await })
            })
            .collect();
        // A write that adds no ledger row is owed no pruning.
        let mut plain = Box::pin(store.write(|_, _| Ok(())));
        for w in &mut writes {
            queue_up(w);
        }
        queue_up(&mut plain);
        drop(held);
        for w in writes {
            assert!(w.await.expect("append_new"));
        }
        plain.await.expect("plain write");
        assert_eq!(store.commits(), commits + 1, "one group");
        assert_eq!(old(), 40 - 3 * ledger::PRUNE_BATCH);
    }

    #[tokio::test]
    async fn concurrent_writes_share_one_commit_and_a_failing_one_rolls_back_only_itself() {
        use crate::ports::{BeginOutcome, BeginRequest, Ledger, OutboundMessage, Queue};
        let db = TempDb::new();
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("open");
        let (queue, ledger) = (store.queue("q", None), store.ledger());
        let begin = BeginRequest {
            key: "k".into(),
            source: "s".into(),
            body_sha256: "h".into(),
            provider_event_id: None,
            event_type: None,
            via: "webhook".into(),
            received_at_ms: 1,
            now_ms: 1,
            lease_until_ms: 100,
            summary: Default::default(),
        };
        let before = store.commits();

        // While the writer cannot take its connection, every write queues up behind it.
        let held = store.write_conn.lock().expect("writer connection");
        let mut sends: Vec<_> = (0..20)
            .map(|n| {
                let (queue, message) = (queue.clone(), OutboundMessage::new(format!("m{n}")));
                Box::pin(async move { queue.send(&message).await })
            })
            .collect();
        let mut doomed = Box::pin(store.write(|tx, now| {
            insert_message(tx, "doomed", now)?;
            Err::<(), _>(EmbeddedError::Corrupt("refused on purpose".into()))
        }));
        // The same key twice in one group: the second sees what the first wrote.
        let mut first = Box::pin(ledger.begin(&begin));
        let mut second = Box::pin(ledger.begin(&begin));
        for (n, send) in sends.iter_mut().enumerate() {
            queue_up(send);
            if n == 9 {
                queue_up(&mut doomed);
                queue_up(&mut first);
                queue_up(&mut second);
            }
        }
        drop(held);

        for send in sends {
            send.await.expect("send committed");
        }
        let refused = doomed.await.expect_err("its own error");
        assert!(
            matches!(&refused, EmbeddedError::Corrupt(why) if why == "refused on purpose"),
            "{refused:?}"
        );
        assert!(matches!(
            first.await.expect("begin"),
            BeginOutcome::Acquired { attempts: 1, .. }
        ));
        assert!(matches!(
            second.await.expect("begin"),
            BeginOutcome::Held(_)
        ));
        assert_eq!(store.commits() - before, 1, "23 writes, one commit");
        assert_eq!(store.queue_counts("q").expect("counts").visible, 20);
        let doomed_rows: i64 = store
            .with_conn(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM messages WHERE queue = 'doomed'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .expect("count");
        assert_eq!(
            doomed_rows, 0,
            "the failed operation's insert was rolled back"
        );
    }

    /// A group runs without savepoints first; a failure stops that run and the group runs again
    /// with one per operation, so an operation before the failure runs twice, and each is
    /// committed once and answered with its own result.
    #[tokio::test]
    async fn a_failure_runs_its_group_again_with_savepoints_and_a_clean_group_runs_once() {
        use std::sync::atomic::AtomicUsize;
        let db = TempDb::new();
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("open");
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = |n: usize| {
            let runs = runs.clone();
            store.write(move |tx, now| {
                runs.fetch_add(1, Ordering::Relaxed);
                insert_message(tx, &format!("q{n}"), now)?;
                Ok(n)
            })
        };

        let held = store.write_conn.lock().expect("writer connection");
        let (mut a, mut b) = (Box::pin(counted(1)), Box::pin(counted(2)));
        let mut doomed = Box::pin(store.write(|tx, now| {
            insert_message(tx, "doomed", now)?;
            Err::<(), _>(EmbeddedError::Corrupt("refused on purpose".into()))
        }));
        queue_up(&mut a);
        queue_up(&mut doomed);
        queue_up(&mut b);
        drop(held);
        assert_eq!(a.await.expect("first"), 1);
        assert_eq!(b.await.expect("second"), 2);
        assert!(doomed.await.is_err());
        assert_eq!(
            runs.load(Ordering::Relaxed),
            3,
            "the first ran again, the last once"
        );

        let held = store.write_conn.lock().expect("writer connection");
        let (mut c, mut d) = (Box::pin(counted(3)), Box::pin(counted(4)));
        queue_up(&mut c);
        queue_up(&mut d);
        drop(held);
        assert_eq!(c.await.expect("third"), 3);
        assert_eq!(d.await.expect("fourth"), 4);
        assert_eq!(runs.load(Ordering::Relaxed), 5, "a clean group runs once");
        let rows: i64 = store
            .with_conn(|c| Ok(c.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))?))
            .expect("count");
        assert_eq!(rows, 4, "each committed once, the failed one not at all");
    }

    #[tokio::test]
    async fn writes_one_after_another_commit_one_by_one_and_are_answered_once_durable() {
        use crate::ports::{OutboundMessage, Queue};
        let db = TempDb::new();
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("open");
        let queue = store.queue("q", None);
        let before = store.commits();
        for n in 0..3 {
            queue
                .send(&OutboundMessage::new(format!("m{n}")))
                .await
                .expect("send");
            // Answered, so committed: a connection of its own (another process) sees it.
            let other = Connection::open(&db.0).expect("second connection");
            let seen: i64 = other
                .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
                .expect("count");
            assert_eq!(seen, n + 1);
        }
        assert_eq!(store.commits() - before, 3);
    }

    #[tokio::test]
    async fn when_the_group_commit_fails_every_caller_in_it_gets_the_error_and_nothing_is_kept() {
        use crate::ports::{OutboundMessage, Queue};
        let db = TempDb::new();
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect("open");
        let queue = store.queue("q", None);
        let before = store.commits();
        let message = OutboundMessage::new("m");
        let mut send = Box::pin(queue.send(&message));
        let mut orphan = Box::pin(store.write(|tx, _| {
            tx.execute("INSERT INTO children (parent) VALUES ('nobody')", [])?;
            Ok(())
        }));
        {
            let held = store.write_conn.lock().expect("writer connection");
            // A deferred foreign key is checked only at COMMIT: a row breaking it makes the
            // group's commit itself fail, after every operation in it succeeded.
            held.execute_batch(
                "PRAGMA foreign_keys = ON;
                 CREATE TABLE parents (id TEXT PRIMARY KEY);
                 CREATE TABLE children (parent TEXT REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED);",
            )
            .expect("schema");
            queue_up(&mut send);
            queue_up(&mut orphan);
        }

        // Not acknowledged: the send succeeded on its own, but its commit never happened.
        let err = send.await.expect_err("the commit failed");
        assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
        assert!(matches!(orphan.await, Err(EmbeddedError::Commit(_))));
        assert_eq!(store.commits(), before);
        assert_eq!(store.queue_counts("q").expect("counts").visible, 0);
        // The writer goes on after a failed group.
        queue.send(&message).await.expect("next send");
        assert_eq!(store.queue_counts("q").expect("counts").visible, 1);
    }

    fn insert_message(tx: &Transaction<'_>, queue: &str, now: i64) -> Result<(), EmbeddedError> {
        tx.execute(
            "INSERT INTO messages (queue, id, sent_at_ms, visible_at_ms) VALUES (?1, 'x', ?2, ?2)",
            rusqlite::params![queue, now],
        )?;
        Ok(())
    }

    #[test]
    fn a_store_from_a_newer_schema_is_refused() {
        let db = TempDb::new();
        {
            let conn = Connection::open(&db.0).expect("sqlite");
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .expect("version");
        }
        let err =
            EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(1))).expect_err("newer schema");
        assert!(matches!(err, EmbeddedError::NewerSchema { .. }), "{err:?}");
    }
}
