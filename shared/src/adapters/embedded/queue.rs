//! `Queue` on the `messages` table with SQS standard-queue semantics: a receive hides a
//! message for the visibility timeout and counts the receive; an undeleted message shows
//! again when the timeout ends; a message already received `max_receive_count` times is
//! moved to the dead-letter queue by the receive that would have returned it (SQS's
//! redrive policy); `delay_seconds` hides a new message for its delay.
//!
//! Limits and rounding are SQS's, as the AWS adapter applies them
//! (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html>):
//! ≤ 10 entries a batch, a body of 1 character to 1 MiB of XML-legal characters (a batch
//! ≤ 1 MiB in total), visibility rounded up to whole seconds and capped at 12 h, delay capped
//! at 900 s, wait capped at 20 s.
//!
//! Receipt handles: each receive issues a fresh handle and only the latest one is honoured.
//! An older handle (or one whose message was deleted or redriven) is refused with
//! `QueueError::Rejected("ReceiptHandleIsInvalid …")` and changes nothing. SQS never acts on
//! a stale handle either, but is looser in how it says so (`DeleteMessage` with a stale handle
//! may answer success without deleting); failing loudly here lets tests catch a worker that
//! deletes with the wrong handle.
//!
//! FIFO (a queue opened with [`SqliteQueue::into_fifo`]), as SQS FIFO: every message needs a
//! `group_id` and no per-message delay; a receive returns messages of a group in send order
//! and none of a group while one of its messages is hidden (in flight, or delayed by a
//! visibility change); a message redriven to the DLQ unblocks its group. On a standard queue
//! the group is stored and ignored, and receives report none.
//!
//! Not emulated: FIFO deduplication (`deduplication_id` is stored, not honoured: the
//! ledger's dedupe absorbs copies either way) and message retention (messages never expire).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Transaction};

use super::{count_u32, EmbeddedError, EmbeddedStore, Redrive};
use crate::ports::queue::{check_batch_len, MAX_BATCH};
use crate::ports::{OutboundMessage, Queue, QueueError, ReceivedMessage};

/// SQS's message size limit, also the limit on a batch's total payload.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
const MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;
const MAX_DELAY_SECS: u32 = 900;
const MAX_WAIT: Duration = Duration::from_secs(20);

/// How many messages a queue holds, by state (SQS's `ApproximateNumberOfMessages`,
/// `…NotVisible` and `…Delayed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Receivable now.
    pub visible: u64,
    /// Received and hidden for their visibility timeout.
    pub in_flight: u64,
    /// Never received and hidden for their delay.
    pub delayed: u64,
}

/// A handle on one named queue of an [`EmbeddedStore`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    store: EmbeddedStore,
    /// Shared rather than copied: every write hands the writer thread its own handle.
    name: Arc<str>,
    redrive: Option<Arc<Redrive>>,
    fifo: bool,
}

impl SqliteQueue {
    pub(super) fn new(store: EmbeddedStore, name: String, redrive: Option<Redrive>) -> Self {
        Self {
            store,
            name: name.into(),
            redrive: redrive.map(Arc::new),
            fifo: false,
        }
    }

    /// This queue with FIFO semantics (module docs). Like SQS's `FifoQueue`, a property of
    /// the queue: open it FIFO everywhere it is used.
    pub(crate) fn into_fifo(mut self) -> Self {
        self.fifo = true;
        self
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn redrive(&self) -> Option<&Redrive> {
        self.redrive.as_deref()
    }

    pub fn counts(&self) -> Result<QueueCounts, EmbeddedError> {
        counts(&self.store, &self.name)
    }

    /// One receive attempt without waiting: the received messages, and when none could be
    /// received, the instant (clock ms) the next hidden message of this queue shows.
    async fn receive_now(
        &self,
        max: usize,
        visibility_ms: i64,
    ) -> Result<(Vec<ReceivedMessage>, Option<i64>), EmbeddedError> {
        let q = self.clone();
        let (received, next_visible_at, redriven) = self.store.write(move |tx, now| {
            let mut received = Vec::new();
            let mut redriven = false;
            // Walk the visible messages oldest first, by (sent_at_ms, rowid). A cursor rather
            // than re-querying from the start: with visibility 0 a received message stays
            // visible and must not be returned twice by one receive.
            let mut after = (i64::MIN, i64::MIN);
            loop {
                let want = max - received.len();
                let page = visible_page(tx, &q.name, q.fifo, now, after, want)?;
                for c in &page {
                    after = (c.sent_at_ms, c.seq);
                    if let Some(dlq) = q.redrive_of(c.receive_count) {
                        redrive(tx, &q.name, c, dlq, now)?;
                        redriven = true;
                        continue;
                    }
                    let mut m = take(tx, c, now, visibility_ms)?;
                    if q.fifo {
                        m.group_id = c.group_id.clone();
                    }
                    received.push(m);
                }
                if received.len() >= max || page.len() < want {
                    break;
                }
            }
            let next_visible_at = if received.is_empty() {
                tx.query_row(
                    "SELECT MIN(visible_at_ms) FROM messages WHERE queue = ?1 AND visible_at_ms > ?2",
                    params![&*q.name, now],
                    |row| row.get::<_, Option<i64>>(0),
                )?
            } else {
                None
            };
            Ok((received, next_visible_at, redriven))
        })
        .await?;
        if redriven {
            // A receive waiting on the dead-letter queue has something now.
            self.store.notify_changed();
        }
        Ok((received, next_visible_at))
    }

    /// [`Queue::receive`] without SQS's ten-message cap: what a Lambda event source mapping
    /// with a larger `BatchSize` assembles from several receives, taken here in one walk of the
    /// queue and one write. Waits (real time, up to 20 s like SQS) only while nothing is
    /// receivable; it wakes on any write to the store that may make a message visible, and
    /// when the next hidden message of this queue is due by the store's clock.
    pub async fn receive_up_to(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let max = max.max(1);
        let visibility_ms = ceil_secs_ms(visibility, MAX_VISIBILITY_SECS);
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            // Registered before looking, so a send between the look and the wait still wakes us.
            let changed = self.store.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            let (received, next_visible_at) = self.receive_now(max, visibility_ms).await?;
            if !received.is_empty() {
                return Ok(received);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(received);
            }
            let mut nap = deadline - now;
            if let Some(at) = next_visible_at {
                let due = u64::try_from(at.saturating_sub(self.store.now_ms())).unwrap_or(0);
                nap = nap.min(Duration::from_millis(due.max(1)));
            }
            // Either way, look again: a timeout only means the wait (or the nap) is over.
            let _ = tokio::time::timeout(nap, changed).await;
        }
    }

    /// Delete several received messages in one write, as SQS's `DeleteMessageBatch` does
    /// for ten: whether each receipt handle was the latest of a message (and so deleted),
    /// in order. The worker of `inlet dev` acknowledges a whole batch with it, so a batch
    /// costs the writer one operation instead of one per message.
    pub async fn delete_all(&self, receipt_handles: Vec<String>) -> Result<Vec<bool>, QueueError> {
        let name = self.name.clone();
        Ok(self
            .store
            .write(move |tx, _| {
                let mut stmt = tx.prepare_cached(DELETE_BY_RECEIPT)?;
                receipt_handles
                    .iter()
                    .map(|r| Ok(stmt.execute(params![&*name, r])? > 0))
                    .collect()
            })
            .await?)
    }

    /// What SQS refuses on a FIFO queue: a message without a group, or with its own delay.
    fn check_fifo(&self, message: &OutboundMessage) -> Result<(), QueueError> {
        if !self.fifo {
            return Ok(());
        }
        if message.group_id.as_deref().is_none_or(str::is_empty) {
            return Err(QueueError::Rejected(format!(
                "MissingParameter: queue {} is FIFO; a message needs a MessageGroupId",
                self.name
            )));
        }
        if message.delay_seconds > 0 {
            return Err(QueueError::Rejected(format!(
                "InvalidParameterValue: queue {} is FIFO; it takes no per-message DelaySeconds",
                self.name
            )));
        }
        Ok(())
    }

    /// The dead-letter queue a message goes to instead of being received this time, if any:
    /// SQS redrives when the receive count already reached `maxReceiveCount`.
    fn redrive_of(&self, receive_count: u32) -> Option<&str> {
        self.redrive
            .as_ref()
            // SQS's minimum maxReceiveCount is 1; 0 would dead-letter unreceived messages.
            .filter(|r| receive_count >= r.max_receive_count.max(1))
            .map(|r| r.dead_letter_queue.as_str())
    }
}

const DELETE_BY_RECEIPT: &str = "DELETE FROM messages WHERE queue = ?1 AND receipt_handle = ?2";

struct Candidate {
    seq: i64,
    id: String,
    body: String,
    sent_at_ms: i64,
    receive_count: u32,
    group_id: Option<String>,
}

/// The visible messages after a position, oldest first. It walks `messages_by_age` in order and
/// stops at the limit: sorting every visible message instead made each receive cost the whole
/// backlog (a 10,000-message backlog took a minute to drain in a debug build).
/// (`CROSS JOIN` keeps `messages` the outer loop: a body is looked up by its key for each
/// message the walk takes.)
const VISIBLE_PAGE: &str = "SELECT m.seq, m.id, b.body, m.sent_at_ms, m.receive_count, m.group_id \
     FROM messages AS m CROSS JOIN message_bodies AS b ON b.seq = m.seq \
     WHERE m.queue = ?1 AND m.visible_at_ms <= ?2 AND (m.sent_at_ms, m.seq) > (?3, ?4) \
     ORDER BY m.sent_at_ms, m.seq LIMIT ?5";

/// [`VISIBLE_PAGE`] on a FIFO queue: a group with a hidden message is skipped whole, so its
/// later messages wait until the hidden one is deleted (or shows again, first in line).
const VISIBLE_FIFO_PAGE: &str =
    "SELECT m.seq, m.id, b.body, m.sent_at_ms, m.receive_count, m.group_id \
     FROM messages AS m CROSS JOIN message_bodies AS b ON b.seq = m.seq \
     WHERE m.queue = ?1 AND m.visible_at_ms <= ?2 AND (m.sent_at_ms, m.seq) > (?3, ?4) \
     AND NOT EXISTS (SELECT 1 FROM messages AS h WHERE h.queue = m.queue \
                     AND h.group_id = m.group_id AND h.visible_at_ms > ?2) \
     ORDER BY m.sent_at_ms, m.seq LIMIT ?5";

fn visible_page(
    tx: &Transaction<'_>,
    queue: &str,
    fifo: bool,
    now: i64,
    after: (i64, i64),
    limit: usize,
) -> Result<Vec<Candidate>, EmbeddedError> {
    let mut stmt = tx.prepare_cached(if fifo {
        VISIBLE_FIFO_PAGE
    } else {
        VISIBLE_PAGE
    })?;
    let rows = stmt.query_map(params![queue, now, after.0, after.1, limit as i64], |row| {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get::<_, i64>(4)?,
            row.get(5)?,
        ))
    })?;
    rows.map(|row| {
        let (seq, id, body, sent_at_ms, receive_count, group_id) = row?;
        Ok(Candidate {
            seq,
            id,
            body,
            sent_at_ms,
            receive_count: count_u32(receive_count, "receive_count")?,
            group_id,
        })
    })
    .collect()
}

/// Receive one message: count it, hide it, and issue a new receipt handle (which makes any
/// earlier one stale).
fn take(
    tx: &Transaction<'_>,
    c: &Candidate,
    now: i64,
    visibility_ms: i64,
) -> Result<ReceivedMessage, EmbeddedError> {
    let receipt_handle = new_id();
    let receive_count = c.receive_count.saturating_add(1);
    tx.prepare_cached(
        "UPDATE messages SET receive_count = ?2, visible_at_ms = ?3, receipt_handle = ?4 \
         WHERE seq = ?1",
    )?
    .execute(params![
        c.seq,
        i64::from(receive_count),
        now.saturating_add(visibility_ms),
        receipt_handle
    ])?;
    Ok(ReceivedMessage {
        message_id: c.id.clone(),
        receipt_handle,
        body: c.body.clone(),
        receive_count,
        sent_at_ms: c.sent_at_ms,
        group_id: None,
    })
}

/// Move a message to the dead-letter queue as SQS does: same id, body and sent time,
/// visible at once, its receive count starting over, no valid receipt handle.
fn redrive(
    tx: &Transaction<'_>,
    queue: &str,
    c: &Candidate,
    dead_letter_queue: &str,
    now: i64,
) -> Result<(), EmbeddedError> {
    tracing::debug!(
        queue,
        dead_letter_queue,
        message_id = c.id,
        "redriving a message past its max receive count"
    );
    tx.prepare_cached(
        "UPDATE messages SET queue = ?2, receive_count = 0, visible_at_ms = ?3, receipt_handle = NULL \
         WHERE seq = ?1",
    )?
    .execute(params![c.seq, dead_letter_queue, now])?;
    Ok(())
}

fn insert(
    tx: &Transaction<'_>,
    queue: &str,
    message: &OutboundMessage,
    now: i64,
) -> Result<String, EmbeddedError> {
    let id = new_id();
    let delay_ms = i64::from(message.delay_seconds.min(MAX_DELAY_SECS)) * 1000;
    tx.prepare_cached(
        "INSERT INTO messages (queue, id, sent_at_ms, visible_at_ms, receive_count, group_id, deduplication_id) \
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
    )?
    .execute(params![
        queue,
        id,
        now,
        now.saturating_add(delay_ms),
        message.group_id,
        message.deduplication_id
    ])?;
    insert_body(tx, &message.body)?;
    Ok(id)
}

/// The body of the message `tx` inserted last.
fn insert_body(tx: &Transaction<'_>, body: &str) -> Result<(), EmbeddedError> {
    tx.prepare_cached("INSERT INTO message_bodies (seq, body) VALUES (?1, ?2)")?
        .execute(params![tx.last_insert_rowid(), body])?;
    Ok(())
}

/// A message id or receipt handle: a UUID whose leading bits are the time (version 7), so new
/// ones sort after the ones before. The two unique indexes on them then take each new entry on
/// their last page; random (version 4) ones landed on a page of their own each, which a group
/// commit of sixteen sends copied to the WAL sixteen times over.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// How many messages [`move_messages`] carries per step (one transaction in each file).
const MOVE_CHUNK: usize = 500;

/// Move every message of the store file at `from` into the store file at `to` (both opened
/// by [`EmbeddedStore::open`] first, so their schemas are current), keeping ids, bodies,
/// receive counts, visibility and receipt handles: a store written before the queues had a
/// file of their own hands its queued and dead-lettered events over. Each step commits the
/// copy in `to` before it deletes the originals in `from`, and a copy that is already there
/// is skipped (the key is queue and id), so a move cut short by a crash loses nothing and
/// doubles nothing when it runs again. Returns how many messages it moved.
pub fn move_messages(from: &std::path::Path, to: &std::path::Path) -> Result<u64, EmbeddedError> {
    let mut src = rusqlite::Connection::open(from)?;
    src.busy_timeout(super::BUSY_TIMEOUT)?;
    let mut dst = rusqlite::Connection::open(to)?;
    dst.busy_timeout(super::BUSY_TIMEOUT)?;
    let mut moved = 0u64;
    loop {
        type Row = (
            i64,
            (String, String, String, i64, i64, i64),
            (Option<String>, Option<String>, Option<String>),
        );
        let rows: Vec<Row> = src
            .prepare(
                "SELECT m.seq, m.queue, m.id, b.body, m.sent_at_ms, m.visible_at_ms, m.receive_count, \
                 m.receipt_handle, m.group_id, m.deduplication_id \
                 FROM messages AS m CROSS JOIN message_bodies AS b ON b.seq = m.seq \
                 ORDER BY m.seq LIMIT ?1",
            )?
            .query_map([MOVE_CHUNK as i64], |r| {
                Ok((
                    r.get(0)?,
                    (
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ),
                    (r.get(7)?, r.get(8)?, r.get(9)?),
                ))
            })?
            .collect::<Result<_, _>>()?;
        if rows.is_empty() {
            return Ok(moved);
        }
        let tx = dst.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (_, (queue, id, body, sent, visible, count), (receipt, group, dedup)) in &rows {
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO messages (queue, id, sent_at_ms, visible_at_ms, \
                     receive_count, receipt_handle, group_id, deduplication_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    queue, id, sent, visible, count, receipt, group, dedup
                ])?;
            if inserted > 0 {
                insert_body(&tx, body)?;
            }
        }
        tx.commit()?;
        let tx = src.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (rowid, ..) in &rows {
            tx.prepare_cached("DELETE FROM messages WHERE seq = ?1")?
                .execute([rowid])?;
        }
        tx.commit()?;
        moved += rows.len() as u64;
    }
}

pub(super) fn counts(store: &EmbeddedStore, queue: &str) -> Result<QueueCounts, EmbeddedError> {
    let now = store.now_ms();
    let (visible, in_flight, delayed): (i64, i64, i64) = store.with_conn(|conn| {
        Ok(conn.query_row(
            "SELECT COALESCE(SUM(visible_at_ms <= ?2), 0), \
                    COALESCE(SUM(visible_at_ms > ?2 AND receive_count > 0), 0), \
                    COALESCE(SUM(visible_at_ms > ?2 AND receive_count = 0), 0) \
             FROM messages WHERE queue = ?1",
            params![queue, now],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?)
    })?;
    let count = |n: i64| {
        u64::try_from(n).map_err(|_| EmbeddedError::Corrupt(format!("negative message count {n}")))
    };
    Ok(QueueCounts {
        visible: count(visible)?,
        in_flight: count(in_flight)?,
        delayed: count(delayed)?,
    })
}

/// The visible messages of `queue`, counted up to `cap` only: an index range that stops there,
/// so the count costs no more than the cap however large the backlog.
pub(super) fn visible_up_to(
    store: &EmbeddedStore,
    queue: &str,
    cap: u64,
) -> Result<u64, EmbeddedError> {
    let now = store.now_ms();
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    let n: i64 = store.with_conn(|conn| {
        Ok(conn
            .prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM messages INDEXED BY messages_by_visibility \
                 WHERE queue = ?1 AND visible_at_ms <= ?2 LIMIT ?3)",
            )?
            .query_row(params![queue, now, cap], |row| row.get(0))?)
    })?;
    u64::try_from(n).map_err(|_| EmbeddedError::Corrupt(format!("negative message count {n}")))
}

/// Whether SQS would accept this body: 1 character to 1 MiB, of the characters SQS allows
/// (`#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF`; a Rust string holds
/// no surrogates, so only the other control characters and U+FFFE/U+FFFF can be wrong).
fn check_body(body: &str) -> Result<(), QueueError> {
    if body.is_empty() {
        return Err(QueueError::Rejected(
            "InvalidParameterValue: the message body is empty".into(),
        ));
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(QueueError::Rejected(format!(
            "InvalidParameterValue: the message body is {} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
            body.len()
        )));
    }
    if let Some(c) = illegal_char(body) {
        return Err(QueueError::Rejected(format!(
            "InvalidMessageContents: the body contains U+{:04X}, which SQS does not allow",
            u32::from(c)
        )));
    }
    Ok(())
}

/// The first character SQS refuses in `body`. It scans bytes, not decoded characters (a
/// profile of `inlet dev` under load showed the per-character walk at 2 % of its CPU): every
/// candidate starts with a control byte or 0xEF, the lead byte of U+F000..U+FFFF.
fn illegal_char(body: &str) -> Option<char> {
    // Control bytes are ASCII and 0xEF leads a three-byte character: each is a char boundary.
    for at in crate::bytescan::special_bytes(body.as_bytes(), [0xEF]) {
        let c = body.get(at..)?.chars().next()?;
        if (c < '\u{20}' && !matches!(c, '\t' | '\n' | '\r'))
            || matches!(c, '\u{FFFE}' | '\u{FFFF}')
        {
            return Some(c);
        }
    }
    None
}

/// Whole seconds in milliseconds, rounded up (a sub-second visibility must still hide the
/// message) and capped, as the AWS adapter sends them to SQS.
fn ceil_secs_ms(d: Duration, max_secs: u64) -> i64 {
    let secs = d
        .as_secs()
        .saturating_add(u64::from(d.subsec_nanos() > 0))
        .min(max_secs);
    secs as i64 * 1000
}

fn invalid_receipt(queue: &str, receipt_handle: &str) -> QueueError {
    QueueError::Rejected(format!(
        "ReceiptHandleIsInvalid: {receipt_handle:?} is not the latest receipt of a message in queue {queue}"
    ))
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        let c = counts(&self.store, &self.name)?;
        Ok(Some(c.visible + c.in_flight + c.delayed))
    }

    async fn send(&self, message: &OutboundMessage) -> Result<String, QueueError> {
        check_body(&message.body)?;
        self.check_fifo(message)?;
        let (name, message) = (self.name.clone(), message.clone());
        let id = self
            .store
            .write(move |tx, now| insert(tx, &name, &message, now))
            .await?;
        self.store.notify_changed();
        Ok(id)
    }

    /// Entries that SQS would refuse (the body) fail alone; the others are committed
    /// together. A storage error fails the whole call, with nothing sent.
    async fn send_batch(
        &self,
        messages: &[OutboundMessage],
    ) -> Result<Vec<Result<String, QueueError>>, QueueError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        check_batch_len(messages.len())?;
        let total: usize = messages.iter().map(|m| m.body.len()).sum();
        if total > MAX_MESSAGE_BYTES {
            return Err(QueueError::Rejected(format!(
                "BatchRequestTooLong: the batch is {total} bytes, over the {MAX_MESSAGE_BYTES}-byte limit"
            )));
        }
        let (q, messages) = (self.clone(), messages.to_vec());
        let results = self
            .store
            .write(move |tx, now| {
                messages
                    .iter()
                    .map(
                        |m| match check_body(&m.body).and_then(|()| q.check_fifo(m)) {
                            Ok(()) => insert(tx, &q.name, m, now).map(Ok),
                            Err(refused) => Ok(Err(refused)),
                        },
                    )
                    .collect::<Result<Vec<_>, EmbeddedError>>()
            })
            .await?;
        self.store.notify_changed();
        Ok(results)
    }

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let max = max.clamp(1, MAX_BATCH as u32) as usize;
        self.receive_up_to(max, visibility, wait).await
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        let deleted = self.delete_all(vec![receipt_handle.to_owned()]).await?;
        if deleted.first() != Some(&true) {
            return Err(invalid_receipt(&self.name, receipt_handle));
        }
        Ok(())
    }

    /// Hides the message until now + `visibility` (0: visible now), whether or not its
    /// previous timeout had ended.
    async fn change_visibility(
        &self,
        receipt_handle: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        let visibility_ms = ceil_secs_ms(visibility, MAX_VISIBILITY_SECS);
        let (name, receipt) = (self.name.clone(), receipt_handle.to_owned());
        let changed = self
            .store
            .write(move |tx, now| {
                let visible_at = now.saturating_add(visibility_ms);
                Ok(tx
                    .prepare_cached("UPDATE messages SET visible_at_ms = ?3 WHERE queue = ?1 AND receipt_handle = ?2")?
                    .execute(params![&*name, receipt, visible_at])?)
            })
            .await?;
        if changed == 0 {
            return Err(invalid_receipt(&self.name, receipt_handle));
        }
        if visibility_ms == 0 {
            self.store.notify_changed();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::adapters::embedded::tests::TempDb;
    use crate::ports::ManualClock;

    const T0: i64 = 1_700_000_000_000;
    const NOW: Duration = Duration::ZERO;
    const HIDDEN: Duration = Duration::from_secs(30);

    fn store() -> (EmbeddedStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0));
        (
            EmbeddedStore::open_in_memory(clock.clone()).expect("open"),
            clock,
        )
    }

    fn with_dlq(store: &EmbeddedStore, max_receive_count: u32) -> (SqliteQueue, SqliteQueue) {
        let main = store.queue(
            "main",
            Some(Redrive {
                dead_letter_queue: "main-dlq".into(),
                max_receive_count,
            }),
        );
        (main, store.queue("main-dlq", None))
    }

    async fn receive_one(q: &SqliteQueue, visibility: Duration) -> Option<ReceivedMessage> {
        let mut got = q
            .receive(1, visibility, Duration::ZERO)
            .await
            .expect("receive");
        assert!(got.len() <= 1);
        got.pop()
    }

    #[tokio::test]
    async fn a_receive_walks_the_age_index_instead_of_sorting_the_backlog() {
        let (store, _clock) = store();
        let q = store.queue("main", None);
        for n in 0..200 {
            q.send(&OutboundMessage::new(format!("m{n}")))
                .await
                .expect("send");
        }
        let plan = query_plan(&store, VISIBLE_PAGE);
        assert!(
            plan.iter().any(|step| step.contains("messages_by_age")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }

    /// Ids and receipt handles grow in the order they are issued, so each of their unique
    /// indexes takes a new entry on its last page (see [`new_id`]).
    #[tokio::test]
    async fn message_ids_and_receipt_handles_sort_in_the_order_they_were_issued() {
        let (store, _clock) = store();
        let q = store.queue("main", None);
        let mut ids = Vec::new();
        for n in 0..100 {
            ids.push(
                q.send(&OutboundMessage::new(format!("m{n}")))
                    .await
                    .expect("send"),
            );
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let got = q.receive_up_to(100, HIDDEN, NOW).await.expect("receive");
        let handles: Vec<&str> = got.iter().map(|m| m.receipt_handle.as_str()).collect();
        assert_eq!(handles.len(), 100);
        assert!(handles.windows(2).all(|w| w[0] < w[1]), "{handles:?}");
    }

    /// A receive's page size is a bound `LIMIT`, different from one call to the next; SQLite
    /// would parse and plan the statement again for each new value unless told to keep plans.
    #[tokio::test]
    async fn receives_of_any_size_reuse_one_plan() {
        let db = TempDb::new();
        let store = EmbeddedStore::open(&db.0, Arc::new(ManualClock::new(T0))).expect("open");
        let q = store.queue("main", None);
        for n in 0..6 {
            q.send(&OutboundMessage::new(format!("m{n}")))
                .await
                .expect("send");
        }
        for (limit, expected) in [(1, 1), (2, 2), (3, 3)] {
            let got = q.receive(limit, HIDDEN, NOW).await.expect("receive");
            assert_eq!(got.len(), expected);
        }
        let conn = store.write_conn.lock().expect("writer connection");
        let stmt = conn.prepare_cached(VISIBLE_PAGE).expect("cached");
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    fn grouped(body: &str, group: &str) -> OutboundMessage {
        OutboundMessage {
            group_id: Some(group.into()),
            ..OutboundMessage::new(body)
        }
    }

    fn bodies(got: &[ReceivedMessage]) -> Vec<&str> {
        got.iter().map(|m| m.body.as_str()).collect()
    }

    #[tokio::test]
    async fn fifo_holds_a_group_back_while_one_of_its_messages_is_in_flight() {
        let (store, clock) = store();
        let q = store.queue("main", None).into_fifo();
        q.send(&grouped("a1", "a")).await.expect("send");
        let first = q.receive(1, HIDDEN, NOW).await.expect("receive");
        assert_eq!(bodies(&first), ["a1"]);
        assert_eq!(first[0].group_id.as_deref(), Some("a"));
        q.send_batch(&[grouped("a2", "a"), grouped("b1", "b"), grouped("a3", "a")])
            .await
            .expect("send_batch");

        // a1 is in flight: only group b moves.
        let got = q.receive(10, HIDDEN, NOW).await.expect("receive");
        assert_eq!(bodies(&got), ["b1"]);
        assert!(q
            .receive(10, HIDDEN, NOW)
            .await
            .expect("receive")
            .is_empty());

        // a1's visibility ends: it comes first again, and its group follows in send order.
        clock.advance_ms(HIDDEN.as_millis() as i64);
        let got = q.receive(10, HIDDEN, NOW).await.expect("receive");
        assert_eq!(bodies(&got), ["a1", "a2", "b1", "a3"]);
        assert_eq!(got[0].receive_count, 2);

        // Deleting the head frees nothing while its followers are still in flight…
        q.delete(&got[0].receipt_handle).await.expect("delete");
        assert!(q
            .receive(10, HIDDEN, NOW)
            .await
            .expect("receive")
            .is_empty());
        // …and a follower given back (a failed record) is first in line once visible.
        q.change_visibility(&got[3].receipt_handle, NOW)
            .await
            .expect("change visibility");
        q.delete(&got[1].receipt_handle).await.expect("delete");
        let got = q.receive(10, HIDDEN, NOW).await.expect("receive");
        assert_eq!(bodies(&got), ["a3"]);
    }

    #[tokio::test]
    async fn a_standard_queue_ignores_groups() {
        let (store, _clock) = store();
        let q = store.queue("main", None);
        q.send(&grouped("a1", "a")).await.expect("send");
        q.send(&grouped("a2", "a")).await.expect("send");
        let first = q.receive(1, HIDDEN, NOW).await.expect("receive");
        assert_eq!(first[0].group_id, None);
        let got = q.receive(10, HIDDEN, NOW).await.expect("receive");
        assert_eq!(bodies(&got), ["a2"]);
    }

    #[tokio::test]
    async fn fifo_refuses_a_message_without_a_group_or_with_a_delay() {
        let (store, _clock) = store();
        let q = store.queue("main", None).into_fifo();
        assert!(matches!(
            q.send(&OutboundMessage::new("m")).await,
            Err(QueueError::Rejected(e)) if e.starts_with("MissingParameter")
        ));
        let delayed = OutboundMessage {
            delay_seconds: 5,
            ..grouped("m", "g")
        };
        assert!(matches!(
            q.send(&delayed).await,
            Err(QueueError::Rejected(_))
        ));
        let results = q
            .send_batch(&[grouped("ok", "g"), OutboundMessage::new("no group")])
            .await
            .expect("send_batch");
        assert!(results[0].is_ok() && results[1].is_err());
    }

    #[tokio::test]
    async fn fifo_redrive_unblocks_the_group() {
        let (store, clock) = store();
        let main = store
            .queue(
                "main",
                Some(Redrive {
                    dead_letter_queue: "main-dlq".into(),
                    max_receive_count: 1,
                }),
            )
            .into_fifo();
        main.send(&grouped("poison", "g")).await.expect("send");
        assert_eq!(
            bodies(&main.receive(1, HIDDEN, NOW).await.expect("r")),
            ["poison"]
        );
        main.send(&grouped("next", "g")).await.expect("send");
        assert!(main.receive(10, HIDDEN, NOW).await.expect("r").is_empty());
        clock.advance_ms(HIDDEN.as_millis() as i64);
        // The poison message goes to the DLQ on this receive; the group goes on.
        assert_eq!(
            bodies(&main.receive(10, HIDDEN, NOW).await.expect("r")),
            ["next"]
        );
    }

    /// SQLite's plan for a receive query, one step a line.
    fn query_plan(store: &EmbeddedStore, query: &str) -> Vec<String> {
        store
            .with_conn(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {query}"))?;
                let rows = stmt.query_map(params!["main", T0, i64::MIN, i64::MIN, 10], |r| {
                    r.get::<_, String>(3)
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .expect("plan")
    }

    /// The receipt index holds received messages only; a delete by handle still finds its
    /// message through it.
    #[tokio::test]
    async fn a_delete_finds_its_message_by_the_partial_receipt_index() {
        let (store, _clock) = store();
        let plan: Vec<String> = store
            .with_conn(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {DELETE_BY_RECEIPT}"))?;
                let rows = stmt.query_map(params!["main", "r"], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .expect("plan");
        assert!(
            plan.iter().any(|step| step.contains("messages_by_receipt")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn a_fifo_receive_finds_hidden_group_members_by_index() {
        let (store, _clock) = store();
        let plan = query_plan(&store, VISIBLE_FIFO_PAGE);
        assert!(
            plan.iter().any(|step| step.contains("messages_by_group")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn received_message_is_hidden_for_its_visibility_then_reappears() {
        let (store, clock) = store();
        let q = store.queue("q", None);
        let id = q
            .send(&OutboundMessage::new("hide me"))
            .await
            .expect("send");

        let first = receive_one(&q, Duration::from_secs(2))
            .await
            .expect("visible");
        assert_eq!(
            (first.message_id.as_str(), first.body.as_str()),
            (id.as_str(), "hide me")
        );
        assert_eq!(first.sent_at_ms, T0);

        clock.advance_ms(1_999);
        assert_eq!(
            receive_one(&q, HIDDEN).await,
            None,
            "hidden until the timeout ends"
        );
        clock.advance_ms(1);
        let again = receive_one(&q, HIDDEN).await.expect("visible again");
        assert_eq!((again.message_id, again.receive_count), (id, 2));
    }

    #[tokio::test]
    async fn sub_second_visibility_rounds_up_to_a_whole_second_like_sqs() {
        let (store, clock) = store();
        let q = store.queue("q", None);
        q.send(&OutboundMessage::new("m")).await.expect("send");
        receive_one(&q, Duration::from_millis(10))
            .await
            .expect("visible");
        clock.advance_ms(999);
        assert_eq!(receive_one(&q, HIDDEN).await, None);
        clock.advance_ms(1);
        assert!(receive_one(&q, HIDDEN).await.is_some());
    }

    #[tokio::test]
    async fn receive_count_grows_with_each_receive() {
        let (store, _) = store();
        let q = store.queue("q", None);
        q.send(&OutboundMessage::new("count me"))
            .await
            .expect("send");
        for expected in 1..=5 {
            assert_eq!(
                receive_one(&q, NOW).await.expect("visible").receive_count,
                expected
            );
        }
    }

    #[tokio::test]
    async fn receive_returns_the_oldest_messages_first_up_to_max() {
        let (store, clock) = store();
        let q = store.queue("q", None);
        for body in ["1", "2", "3"] {
            q.send(&OutboundMessage::new(body)).await.expect("send");
            clock.advance_ms(1);
        }
        let bodies = |ms: Vec<ReceivedMessage>| ms.into_iter().map(|m| m.body).collect::<Vec<_>>();
        assert_eq!(
            bodies(q.receive(2, HIDDEN, NOW).await.expect("receive")),
            ["1", "2"]
        );
        assert_eq!(
            bodies(q.receive(10, HIDDEN, NOW).await.expect("receive")),
            ["3"]
        );
    }

    #[tokio::test]
    async fn a_receive_takes_ten_and_a_batch_receive_takes_more_in_one_write() {
        let (store, clock) = store();
        let q = store.queue("q", None);
        let batch: Vec<OutboundMessage> = (0..10)
            .map(|n| OutboundMessage::new(n.to_string()))
            .collect();
        for _ in 0..4 {
            q.send_batch(&batch).await.expect("send");
            clock.advance_ms(1);
        }
        assert_eq!(q.receive(25, HIDDEN, NOW).await.expect("receive").len(), 10);
        let writes = store.writes();
        let taken = q.receive_up_to(25, HIDDEN, NOW).await.expect("receive");
        assert_eq!(taken.len(), 25);
        assert_eq!(store.writes(), writes + 1, "one write for the whole batch");
        // What is left, and nothing twice.
        let rest = q.receive_up_to(25, HIDDEN, NOW).await.expect("receive");
        assert_eq!(rest.len(), 5);
        let ids: std::collections::HashSet<_> = taken
            .iter()
            .chain(&rest)
            .map(|m| m.message_id.clone())
            .collect();
        assert_eq!(ids.len(), 30);
    }

    #[tokio::test]
    async fn the_visible_count_stops_at_its_cap_and_leaves_out_messages_in_flight() {
        let (store, _) = store();
        let q = store.queue("q", None);
        for n in 0..5 {
            q.send(&OutboundMessage::new(n.to_string()))
                .await
                .expect("send");
        }
        q.receive(1, HIDDEN, NOW).await.expect("receive");
        assert_eq!(store.visible_up_to("q", 10).expect("count"), 4);
        assert_eq!(store.visible_up_to("q", 3).expect("count"), 3);
        assert_eq!(store.visible_up_to("other", 3).expect("count"), 0);
    }

    #[tokio::test]
    async fn one_receive_never_returns_a_message_twice_even_with_visibility_zero() {
        let (store, _) = store();
        let q = store.queue("q", None);
        q.send(&OutboundMessage::new("once")).await.expect("send");
        assert_eq!(q.receive(10, NOW, NOW).await.expect("receive").len(), 1);
    }

    #[tokio::test]
    async fn message_moves_to_the_dlq_on_the_receive_after_max_receive_count() {
        let (store, clock) = store();
        let (main, dlq) = with_dlq(&store, 3);
        let id = main
            .send(&OutboundMessage::new("poison"))
            .await
            .expect("send");
        clock.advance_ms(5_000);
        for expected in 1..=3 {
            assert_eq!(
                receive_one(&main, NOW)
                    .await
                    .expect("visible")
                    .receive_count,
                expected
            );
        }
        assert_eq!(
            receive_one(&main, NOW).await,
            None,
            "the fourth receive redrives instead"
        );
        assert_eq!(
            store.queue_counts("main").expect("counts"),
            QueueCounts::default()
        );

        let dead = receive_one(&dlq, HIDDEN).await.expect("in the DLQ");
        assert_eq!(dead.message_id, id, "SQS keeps the message id");
        assert_eq!(dead.body, "poison");
        assert_eq!(dead.receive_count, 1, "the count starts over in the DLQ");
        assert_eq!(dead.sent_at_ms, T0, "the original sent time is kept");
    }

    #[tokio::test]
    async fn redriven_messages_do_not_take_the_place_of_receivable_ones() {
        let (store, clock) = store();
        let (main, dlq) = with_dlq(&store, 1);
        main.send(&OutboundMessage::new("poison"))
            .await
            .expect("send");
        receive_one(&main, NOW).await.expect("first receive");
        clock.advance_ms(1);
        main.send(&OutboundMessage::new("fresh"))
            .await
            .expect("send");

        let got = main.receive(1, HIDDEN, NOW).await.expect("receive");
        assert_eq!(
            got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["fresh"]
        );
        assert_eq!(
            receive_one(&dlq, HIDDEN).await.expect("dead").body,
            "poison"
        );
    }

    #[tokio::test]
    async fn delayed_message_is_invisible_until_its_delay_passes() {
        let (store, clock) = store();
        let q = store.queue("q", None);
        let msg = OutboundMessage {
            delay_seconds: 10,
            ..OutboundMessage::new("later")
        };
        q.send(&msg).await.expect("send");
        assert_eq!(
            store.queue_counts("q").expect("counts"),
            QueueCounts {
                delayed: 1,
                ..Default::default()
            }
        );
        clock.advance_ms(9_999);
        assert_eq!(receive_one(&q, HIDDEN).await, None);
        clock.advance_ms(1);
        assert_eq!(receive_one(&q, HIDDEN).await.expect("due").body, "later");
        assert_eq!(
            store.queue_counts("q").expect("counts"),
            QueueCounts {
                in_flight: 1,
                ..Default::default()
            }
        );
    }

    #[tokio::test]
    async fn delay_is_capped_at_the_sqs_maximum_of_900_seconds() {
        let (store, clock) = store();
        let q = store.queue("q", None);
        q.send(&OutboundMessage {
            delay_seconds: 3_600,
            ..OutboundMessage::new("m")
        })
        .await
        .expect("send");
        clock.advance_ms(900_000);
        assert!(receive_one(&q, HIDDEN).await.is_some());
    }

    #[tokio::test]
    async fn delete_with_the_latest_receipt_removes_the_message() {
        let (store, _) = store();
        let q = store.queue("q", None);
        q.send(&OutboundMessage::new("m")).await.expect("send");
        let m = receive_one(&q, NOW).await.expect("visible");
        q.delete(&m.receipt_handle).await.expect("delete");
        assert_eq!(receive_one(&q, NOW).await, None);
        assert!(
            q.delete(&m.receipt_handle).await.is_err(),
            "a second delete finds nothing"
        );
    }

    #[tokio::test]
    async fn a_batch_delete_removes_what_its_latest_receipts_name_and_says_which_were_not() {
        let (store, _clock) = store();
        let q = store.queue("q", None);
        for body in ["a", "b", "c"] {
            q.send(&OutboundMessage::new(body)).await.expect("send");
        }
        let first = q.receive(10, HIDDEN, NOW).await.expect("receive");
        assert_eq!(bodies(&first), ["a", "b", "c"]);
        // "c" shows again and is received again: its first handle is stale now.
        q.change_visibility(&first[2].receipt_handle, Duration::ZERO)
            .await
            .expect("show");
        let again = receive_one(&q, HIDDEN).await.expect("c again");
        assert_eq!(again.body, "c");
        let handles = vec![
            first[0].receipt_handle.clone(),
            first[2].receipt_handle.clone(),
            "no-such-handle".to_owned(),
            again.receipt_handle.clone(),
        ];
        assert_eq!(
            q.delete_all(handles).await.expect("delete"),
            [true, false, false, true]
        );
        assert_eq!(q.counts().expect("counts").in_flight, 1, "b is left");
        let b = vec![first[1].receipt_handle.clone()];
        assert_eq!(q.delete_all(b).await.expect("delete"), [true]);
        assert_eq!(q.counts().expect("counts"), QueueCounts::default());
    }

    #[tokio::test]
    async fn stale_receipt_handle_neither_deletes_nor_changes_the_message() {
        let (store, clock) = store();
        let q = store.queue("q", None);
        q.send(&OutboundMessage::new("m")).await.expect("send");
        let first = receive_one(&q, NOW).await.expect("visible");
        let second = receive_one(&q, Duration::from_secs(10))
            .await
            .expect("visible again");
        assert_ne!(first.receipt_handle, second.receipt_handle);

        let err = q
            .delete(&first.receipt_handle)
            .await
            .expect_err("stale delete");
        assert!(
            matches!(err, QueueError::Rejected(ref m) if m.contains("ReceiptHandleIsInvalid")),
            "{err:?}"
        );
        let err = q
            .change_visibility(&first.receipt_handle, NOW)
            .await
            .expect_err("stale change");
        assert!(matches!(err, QueueError::Rejected(_)), "{err:?}");

        assert_eq!(
            receive_one(&q, NOW).await,
            None,
            "still hidden by the second receive"
        );
        clock.advance_ms(10_000);
        assert_eq!(
            receive_one(&q, NOW)
                .await
                .expect("not deleted")
                .receive_count,
            3
        );
    }

    #[tokio::test]
    async fn a_receipt_handle_of_another_queue_is_rejected() {
        let (store, _) = store();
        let (a, b) = (store.queue("a", None), store.queue("b", None));
        a.send(&OutboundMessage::new("m")).await.expect("send");
        let m = receive_one(&a, HIDDEN).await.expect("visible");
        assert!(b.delete(&m.receipt_handle).await.is_err());
        a.delete(&m.receipt_handle).await.expect("its own queue");
    }

    #[tokio::test]
    async fn change_visibility_to_zero_makes_the_message_visible_now() {
        let (store, clock) = store();
        let q = store.queue("q", None);
        q.send(&OutboundMessage::new("m")).await.expect("send");
        let m = receive_one(&q, HIDDEN).await.expect("visible");
        q.change_visibility(&m.receipt_handle, NOW)
            .await
            .expect("change");
        let again = receive_one(&q, HIDDEN).await.expect("visible now");

        // And a longer one stretches it from now, not from the receive.
        clock.advance_ms(20_000);
        q.change_visibility(&again.receipt_handle, Duration::from_secs(60))
            .await
            .expect("stretch");
        clock.advance_ms(59_999);
        assert_eq!(receive_one(&q, HIDDEN).await, None);
        clock.advance_ms(1);
        assert!(receive_one(&q, HIDDEN).await.is_some());
    }

    #[tokio::test]
    async fn moving_messages_keeps_their_state_and_a_move_cut_short_neither_loses_nor_doubles() {
        let (old, new) = (TempDb::new(), TempDb::new());
        let clock = Arc::new(ManualClock::new(T0));
        let from = EmbeddedStore::open(&old.0, clock.clone()).expect("open");
        let to = EmbeddedStore::open(&new.0, clock.clone()).expect("open");
        let (main, dlq) = with_dlq(&from, 5);
        for body in ["first", "second", "third"] {
            main.send(&OutboundMessage::new(body)).await.expect("send");
        }
        dlq.send(&OutboundMessage::new("dead")).await.expect("send");
        let in_flight = receive_one(&main, HIDDEN).await.expect("received");

        assert_eq!(move_messages(&old.0, &new.0).expect("move"), 4);
        assert_eq!(
            counts(&from, "main").expect("counts"),
            QueueCounts::default()
        );
        let (main, dlq) = with_dlq(&to, 5);
        let got = |visible, in_flight| QueueCounts {
            visible,
            in_flight,
            delayed: 0,
        };
        assert_eq!(main.counts().expect("counts"), got(2, 1));
        assert_eq!(dlq.counts().expect("counts"), got(1, 0));
        // The receipt handle given out before the move still names the latest receive.
        clock.advance_ms(30_000);
        main.delete(&in_flight.receipt_handle)
            .await
            .expect("delete");
        assert_eq!(main.counts().expect("counts"), got(2, 0));

        // A crash after a step's copy, before its delete: the original is still in the old
        // file. The next move skips the copy it already made and deletes the original.
        let second = receive_one(&main, NOW).await.expect("second");
        let conn = rusqlite::Connection::open(&old.0).expect("open");
        conn.execute(
            "INSERT INTO messages (queue, id, sent_at_ms, visible_at_ms) VALUES ('main', ?1, ?2, ?2)",
            params![second.message_id, T0],
        )
        .expect("the original left behind");
        conn.execute(
            "INSERT INTO message_bodies (seq, body) VALUES (last_insert_rowid(), ?1)",
            [&second.body],
        )
        .expect("its body");
        assert_eq!(move_messages(&old.0, &new.0).expect("move again"), 1);
        assert_eq!(
            counts(&from, "main").expect("counts"),
            QueueCounts::default()
        );
        assert_eq!(main.counts().expect("counts"), got(2, 0));
        let mut bodies: Vec<String> = main
            .receive(10, HIDDEN, NOW)
            .await
            .expect("receive")
            .into_iter()
            .map(|m| m.body)
            .collect();
        bodies.sort();
        assert_eq!(bodies, ["second", "third"]);
    }

    #[tokio::test]
    async fn messages_receive_counts_and_hidden_state_survive_reopening_the_store() {
        let db = TempDb::new();
        let clock = Arc::new(ManualClock::new(T0));
        let id = {
            let store = EmbeddedStore::open(&db.0, clock.clone()).expect("open");
            let q = store.queue("q", None);
            let id = q
                .send(&OutboundMessage::new("durable"))
                .await
                .expect("send");
            q.send(&OutboundMessage::new("deleted"))
                .await
                .expect("send");
            let got = q.receive(10, HIDDEN, NOW).await.expect("receive");
            q.delete(&got[1].receipt_handle).await.expect("delete");
            id
        };
        let store = EmbeddedStore::open(&db.0, clock.clone()).expect("reopen");
        let q = store.queue("q", None);
        assert_eq!(
            receive_one(&q, HIDDEN).await,
            None,
            "still hidden after the reopen"
        );
        clock.advance_ms(30_000);
        let m = receive_one(&q, HIDDEN).await.expect("visible");
        assert_eq!(
            (m.message_id, m.body.as_str(), m.receive_count),
            (id, "durable", 2)
        );
        assert_eq!(
            receive_one(&q, NOW).await,
            None,
            "the deleted one stays deleted"
        );
    }

    #[tokio::test]
    async fn send_batch_returns_one_result_per_entry_in_order() {
        let (store, _) = store();
        let q = store.queue("q", None);
        let batch = [
            OutboundMessage::new("a"),
            OutboundMessage::new(""),
            OutboundMessage::new("c"),
        ];
        let results = q.send_batch(&batch).await.expect("send_batch");
        assert_eq!(results.len(), 3);
        assert!(
            matches!(results[1], Err(QueueError::Rejected(_))),
            "{:?}",
            results[1]
        );
        let got = q.receive(10, HIDDEN, NOW).await.expect("receive");
        let ids: Vec<_> = got
            .iter()
            .map(|m| (m.message_id.clone(), m.body.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                (results[0].as_ref().expect("a").clone(), "a"),
                (results[2].as_ref().expect("c").clone(), "c")
            ]
        );
    }

    #[tokio::test]
    async fn send_batch_of_more_than_ten_is_rejected() {
        let (store, _) = store();
        let q = store.queue("q", None);
        let batch: Vec<_> = (0..11)
            .map(|i| OutboundMessage::new(i.to_string()))
            .collect();
        assert!(matches!(
            q.send_batch(&batch).await,
            Err(QueueError::Rejected(_))
        ));
        assert!(q.send_batch(&[]).await.expect("empty").is_empty());
        assert_eq!(
            store.queue_counts("q").expect("counts"),
            QueueCounts::default()
        );
    }

    #[tokio::test]
    async fn bodies_sqs_refuses_are_rejected() {
        let (store, _) = store();
        let q = store.queue("q", None);
        for body in [
            String::new(),
            "nul\u{0}".into(),
            "x".repeat(MAX_MESSAGE_BYTES + 1),
        ] {
            let err = q
                .send(&OutboundMessage::new(body))
                .await
                .expect_err("refused");
            assert!(matches!(err, QueueError::Rejected(_)), "{err:?}");
        }
        q.send(&OutboundMessage::new("tab\tnewline\n\u{1F600}"))
            .await
            .expect("legal characters");
    }

    #[test]
    fn the_byte_scan_finds_exactly_the_characters_sqs_refuses() {
        assert_eq!(
            illegal_char("ok \t\r\n \u{E000}\u{F8FF}\u{FFFD}\u{10FFFF} é"),
            None
        );
        assert_eq!(illegal_char("\u{F8FF}a\u{1F}"), Some('\u{1F}'));
        assert_eq!(illegal_char("\u{FFFD}\u{FFFE}"), Some('\u{FFFE}'));
        assert_eq!(illegal_char("x\u{FFFF}"), Some('\u{FFFF}'));
        assert_eq!(illegal_char("\u{7F}\u{0}"), Some('\u{0}'));
    }

    #[tokio::test]
    async fn receive_with_no_wait_returns_at_once_when_empty() {
        let (store, _) = store();
        let q = store.queue("q", None);
        let got = tokio::time::timeout(Duration::from_secs(5), q.receive(10, HIDDEN, NOW))
            .await
            .expect("no wait");
        assert!(got.expect("receive").is_empty());
    }

    #[tokio::test]
    async fn waiting_receive_wakes_up_when_a_message_is_sent() {
        let (store, _) = store();
        let q = store.queue("q", None);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.receive(10, HIDDEN, Duration::from_secs(20)).await })
        };
        // Let the waiter look, find nothing and start waiting.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        q.send(&OutboundMessage::new("wake")).await.expect("send");
        let got = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by the send, well before its 20 s wait")
            .expect("task")
            .expect("receive");
        assert_eq!(
            got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["wake"]
        );
    }

    #[tokio::test]
    async fn queue_counts_split_visible_in_flight_and_delayed() {
        let (store, _) = store();
        let q = store.queue("q", None);
        q.send(&OutboundMessage::new("taken")).await.expect("send");
        receive_one(&q, HIDDEN).await.expect("visible");
        q.send(&OutboundMessage::new("waiting"))
            .await
            .expect("send");
        q.send(&OutboundMessage {
            delay_seconds: 60,
            ..OutboundMessage::new("delayed")
        })
        .await
        .expect("send");
        store
            .queue("other", None)
            .send(&OutboundMessage::new("x"))
            .await
            .expect("send");
        assert_eq!(
            store.queue_counts("q").expect("counts"),
            QueueCounts {
                visible: 1,
                in_flight: 1,
                delayed: 1
            }
        );
    }
}
