//! `Ledger` on two tables: `dedupe_records` (one row per key) and `trail_entries`
//! (append-only). `begin` is DynamoDB's conditional write, done as a read and a write inside
//! one `BEGIN IMMEDIATE` transaction, so two workers (threads or processes on the same file)
//! can never both take a key. Time is the caller's (`now_ms` in every request), as with the
//! AWS adapter.
//!
//! `delivered` is a JSON array of target ids (sorted; NULL when empty), read and extended
//! inside the same transaction as the status check, as DynamoDB's conditional `ADD` does.
//!
//! Where this differs from the DynamoDB adapter, deliberately:
//! - Rows are listed in the same order as the DynamoDB index (time, then `dedupe#key` /
//!   `trail#id`, both descending), and `limit: 0` means no limit, as there.
//! - What DynamoDB's TTL deletes (expired trail entries, completed dedupe records past their
//!   window) is deleted here by the writes that add to the tables: each trail write and each
//!   completion also deletes up to [`PRUNE_BATCH`] expired rows of each table, all of a
//!   group's at once after its operations (`EmbeddedStore::write_pruning`). Work per write
//!   stays bounded (an index range, a few rows), so the single writer is never held up by a
//!   backlog, and since rows only come in through writes, every table drains faster than it
//!   fills. A store that receives nothing keeps its expired rows, which no read returns.

use std::collections::BTreeSet;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::{count_u32, EmbeddedError, EmbeddedStore, OBJECT_ID_OF_SUMMARY};
use crate::ports::{
    BeginOutcome, BeginRequest, DedupeRecord, DedupeStatus, EventSummary, Ledger, LedgerError,
    Lookup, TrailEntry, TrailQuery, TrailRow, TrailStatus, LOOKUP_LIMIT,
};

const RECORD_COLUMNS: &str =
    "key, source, status, body_sha256, provider_event_id, event_type, via, received_at_ms, \
     updated_at_ms, lease_until_ms, expires_at_ms, attempts, last_error, dead, summary, delivered";

const ENTRY_COLUMNS: &str =
    "id, at_ms, source, status, dedupe_key, provider_event_id, event_type, reason, \
     source_ip, expires_at_ms";

/// Expired rows of each table one write deletes at most: several per row written, so the
/// tables shrink back after a flood, and few enough to cost microseconds.
pub(super) const PRUNE_BATCH: i64 = 8;

/// A handle on the store's ledger; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    store: EmbeddedStore,
}

impl SqliteLedger {
    pub(super) fn new(store: EmbeddedStore) -> Self {
        Self { store }
    }

    pub(super) fn store(&self) -> &EmbeddedStore {
        &self.store
    }
}

/// What `begin` does with a key held by `old`: take it (`Acquired`, with the attempt number
/// to record) or leave it to its holder (`Held`). The port's condition, word for word: the
/// key is free, or expired, or — for the same body — failed or held under a lapsed lease.
fn decide(old: Option<DedupeRecord>, req: &BeginRequest) -> BeginOutcome {
    let now = req.now_ms;
    let fresh = || BeginOutcome::Acquired {
        attempts: 1,
        delivered: BTreeSet::new(),
    };
    match old {
        None => fresh(),
        // A new event under an old key: a new cycle, nothing delivered yet.
        Some(r) if r.expires_at_ms.is_some_and(|at| at < now) => fresh(),
        Some(r)
            if r.body_sha256 == req.body_sha256
                && (r.status == DedupeStatus::Failed
                    || (r.status == DedupeStatus::InProgress && r.lease_until_ms < now)) =>
        {
            BeginOutcome::Acquired {
                attempts: r.attempts.saturating_add(1),
                delivered: r.delivered,
            }
        }
        Some(holder) => BeginOutcome::Held(holder),
    }
}

/// The stored form of a `delivered` set: `None` (NULL) when empty.
fn delivered_json(set: &BTreeSet<String>) -> Option<String> {
    (!set.is_empty()).then(|| serde_json::to_string(set).unwrap_or_default())
}

fn delivered_from(key: &str, text: Option<&str>) -> Result<BTreeSet<String>, EmbeddedError> {
    // Unlike the summary, a set that cannot be read is not shown as empty: the worker would
    // take it for "no target has it yet" and deliver again.
    text.map(|t| {
        serde_json::from_str(t).map_err(|e| {
            EmbeddedError::Corrupt(format!("dedupe record {key}: delivered {t:?}: {e}"))
        })
    })
    .transpose()
    .map(Option::unwrap_or_default)
}

fn read_record(tx: &Transaction<'_>, key: &str) -> Result<Option<DedupeRecord>, EmbeddedError> {
    tx.prepare_cached(&format!(
        "SELECT {RECORD_COLUMNS} FROM dedupe_records WHERE key = ?1"
    ))?
    .query_row([key], raw_record)
    .optional()?
    .map(RawRecord::decode)
    .transpose()
}

fn write_taken(
    tx: &Transaction<'_>,
    req: &BeginRequest,
    attempts: u32,
    delivered: &BTreeSet<String>,
) -> Result<(), EmbeddedError> {
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO dedupe_records ({RECORD_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, ?11, NULL, 0, ?12, ?13)"
    ))?
    .execute(params![
        req.key,
        req.source,
        DedupeStatus::InProgress.as_str(),
        req.body_sha256,
        req.provider_event_id,
        req.event_type,
        req.via,
        req.received_at_ms,
        req.now_ms,
        req.lease_until_ms,
        i64::from(attempts),
        req.summary.to_json(),
        delivered_json(delivered),
    ])?;
    Ok(())
}

/// A record as stored, before its text and counts are checked.
struct RawRecord {
    key: String,
    source: String,
    status: String,
    body_sha256: String,
    provider_event_id: Option<String>,
    event_type: Option<String>,
    via: String,
    received_at_ms: i64,
    updated_at_ms: i64,
    lease_until_ms: i64,
    expires_at_ms: Option<i64>,
    attempts: i64,
    last_error: Option<String>,
    dead: bool,
    summary: Option<String>,
    delivered: Option<String>,
}

fn raw_record(row: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        key: row.get(0)?,
        source: row.get(1)?,
        status: row.get(2)?,
        body_sha256: row.get(3)?,
        provider_event_id: row.get(4)?,
        event_type: row.get(5)?,
        via: row.get(6)?,
        received_at_ms: row.get(7)?,
        updated_at_ms: row.get(8)?,
        lease_until_ms: row.get(9)?,
        expires_at_ms: row.get(10)?,
        attempts: row.get(11)?,
        last_error: row.get(12)?,
        dead: row.get(13)?,
        summary: row.get(14)?,
        delivered: row.get(15)?,
    })
}

impl RawRecord {
    fn decode(self) -> Result<DedupeRecord, EmbeddedError> {
        let status = DedupeStatus::parse(&self.status).ok_or_else(|| {
            EmbeddedError::Corrupt(format!(
                "dedupe record {}: status {:?} is not a dedupe status",
                self.key, self.status
            ))
        })?;
        let attempts = count_u32(
            self.attempts,
            &format!("dedupe record {}: attempts", self.key),
        )?;
        let delivered = delivered_from(&self.key, self.delivered.as_deref())?;
        Ok(DedupeRecord {
            key: self.key,
            source: self.source,
            status,
            body_sha256: self.body_sha256,
            provider_event_id: self.provider_event_id,
            event_type: self.event_type,
            via: self.via,
            received_at_ms: self.received_at_ms,
            updated_at_ms: self.updated_at_ms,
            lease_until_ms: self.lease_until_ms,
            expires_at_ms: self.expires_at_ms,
            attempts,
            last_error: self.last_error,
            dead: self.dead,
            summary: EventSummary::from_json(self.summary.as_deref()),
            delivered,
        })
    }
}

struct RawEntry {
    entry: TrailEntry,
    status: String,
}

fn raw_entry(row: &Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok(RawEntry {
        status: row.get(3)?,
        entry: TrailEntry {
            id: row.get(0)?,
            at_ms: row.get(1)?,
            source: row.get(2)?,
            // Replaced by the decoded `status` column.
            status: TrailStatus::Refused,
            dedupe_key: row.get(4)?,
            provider_event_id: row.get(5)?,
            event_type: row.get(6)?,
            reason: row.get(7)?,
            source_ip: row.get(8)?,
            expires_at_ms: row.get(9)?,
        },
    })
}

/// Delete up to `limit` expired trail entries and as many completed dedupe records
/// past their window (`expires_at_ms < now`: the port's own test of expiry, and the rows
/// DynamoDB's TTL deletes). A record deleted here is one `begin` would take afresh anyway.
pub(super) fn prune(tx: &Transaction<'_>, now_ms: i64, limit: i64) -> Result<(), EmbeddedError> {
    tx.prepare_cached(
        "DELETE FROM trail_entries WHERE id IN \
         (SELECT id FROM trail_entries WHERE expires_at_ms < ?1 ORDER BY expires_at_ms LIMIT ?2)",
    )?
    .execute(params![now_ms, limit])?;
    tx.prepare_cached(
        "DELETE FROM dedupe_records WHERE key IN \
         (SELECT key FROM dedupe_records WHERE expires_at_ms < ?1 ORDER BY expires_at_ms LIMIT ?2)",
    )?
    .execute(params![now_ms, limit])?;
    Ok(())
}

/// Insert `entry`; `replace`: over an entry with the same id, else only when there is none.
/// Whether a row was written.
fn insert_entry(
    tx: &Transaction<'_>,
    entry: &TrailEntry,
    replace: bool,
) -> Result<bool, EmbeddedError> {
    let sql = if replace {
        format!("INSERT OR REPLACE INTO trail_entries ({ENTRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
    } else {
        format!(
            "INSERT INTO trail_entries ({ENTRY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (id) DO NOTHING"
        )
    };
    let written = tx.prepare_cached(&sql)?.execute(params![
        entry.id,
        entry.at_ms,
        entry.source,
        entry.status.as_str(),
        entry.dedupe_key,
        entry.provider_event_id,
        entry.event_type,
        entry.reason,
        entry.source_ip,
        entry.expires_at_ms,
    ])?;
    Ok(written > 0)
}

impl RawEntry {
    fn decode(self) -> Result<TrailEntry, EmbeddedError> {
        let status = TrailStatus::parse(&self.status).ok_or_else(|| {
            EmbeddedError::Corrupt(format!(
                "trail entry {}: status {:?} is not a trail status",
                self.entry.id, self.status
            ))
        })?;
        Ok(TrailEntry {
            status,
            ..self.entry
        })
    }
}

/// The newest `limit` rows of one table (optionally of one source), decoded, with the sort
/// key the DynamoDB index uses.
fn newest<R>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    read: fn(&Row<'_>) -> rusqlite::Result<R>,
    decode: fn(R) -> Result<(String, TrailRow), EmbeddedError>,
) -> Result<Vec<(String, TrailRow)>, EmbeddedError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, read)?;
    rows.map(|raw| decode(raw?)).collect()
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn begin(&self, req: &BeginRequest) -> Result<BeginOutcome, LedgerError> {
        let req = req.clone();
        Ok(self
            .store
            .write(move |tx, _| {
                let outcome = decide(read_record(tx, &req.key)?, &req);
                if let BeginOutcome::Acquired {
                    attempts,
                    delivered,
                } = &outcome
                {
                    write_taken(tx, &req, *attempts, delivered)?;
                }
                Ok(outcome)
            })
            .await?)
    }

    /// Like the DynamoDB adapter, any existing record is completed (the domain only
    /// completes what it holds); a missing one is `NotFound`.
    async fn complete(
        &self,
        key: &str,
        now_ms: i64,
        expires_at_ms: i64,
        delivered: &BTreeSet<String>,
    ) -> Result<(), LedgerError> {
        let (owned_key, delivered) = (key.to_owned(), delivered.clone());
        let updated = self
            .store
            .write_pruning(move |tx, _| {
                let key = owned_key.as_str();
                let Some(mut record) = read_record(tx, key)? else {
                    return Ok(0);
                };
                record.delivered.extend(delivered.iter().cloned());
                Ok(tx
                    .prepare_cached(
                        "UPDATE dedupe_records SET status = ?2, updated_at_ms = ?3, expires_at_ms = ?4, \
                         delivered = ?5 WHERE key = ?1",
                    )?
                    .execute(params![
                        key,
                        DedupeStatus::Completed.as_str(),
                        now_ms,
                        expires_at_ms,
                        delivered_json(&record.delivered),
                    ])?)
            })
            .await?;
        if updated == 0 {
            return Err(LedgerError::NotFound(key.to_owned()));
        }
        Ok(())
    }

    async fn mark_delivered(
        &self,
        key: &str,
        target_id: &str,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let (owned_key, target_id) = (key.to_owned(), target_id.to_owned());
        let status = self
            .store
            .write(move |tx, _| {
                let key = owned_key.as_str();
                let Some(mut record) = read_record(tx, key)? else {
                    return Ok(None);
                };
                if record.status == DedupeStatus::InProgress {
                    record.delivered.insert(target_id.clone());
                    tx.prepare_cached(
                        "UPDATE dedupe_records SET delivered = ?2, updated_at_ms = ?3 WHERE key = ?1",
                    )?
                    .execute(params![key, delivered_json(&record.delivered), now_ms])?;
                }
                Ok(Some(record.status))
            })
            .await?;
        match status {
            Some(DedupeStatus::InProgress) => Ok(()),
            Some(_) => Err(LedgerError::NotHeld(key.to_owned())),
            None => Err(LedgerError::NotFound(key.to_owned())),
        }
    }

    async fn fail(
        &self,
        key: &str,
        now_ms: i64,
        error: &str,
        dead: bool,
    ) -> Result<(), LedgerError> {
        let (owned_key, error) = (key.to_owned(), error.to_owned());
        let updated = self
            .store
            .write(move |tx, _| {
                Ok(tx
                    .prepare_cached(
                        "UPDATE dedupe_records SET status = ?2, updated_at_ms = ?3, last_error = ?4, dead = ?5 \
                         WHERE key = ?1",
                    )?
                    .execute(params![
                        owned_key,
                        DedupeStatus::Failed.as_str(),
                        now_ms,
                        error,
                        dead
                    ])?)
            })
            .await?;
        if updated == 0 {
            return Err(LedgerError::NotFound(key.to_owned()));
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<DedupeRecord>, LedgerError> {
        Ok(self.store.with_conn(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM dedupe_records WHERE key = ?1"
            ))?
            .query_row([key], raw_record)
            .optional()?
            .map(RawRecord::decode)
            .transpose()
        })?)
    }

    async fn applied_version(
        &self,
        source: &str,
        entity: &str,
    ) -> Result<Option<i64>, LedgerError> {
        Ok(self.store.with_conn(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT version FROM entity_versions WHERE source = ?1 AND entity = ?2",
                )?
                .query_row(params![source, entity], |row| row.get(0))
                .optional()?)
        })?)
    }

    /// One upsert whose update only applies to an older version: DynamoDB's
    /// `attribute_not_exists(v) OR v < :new`.
    async fn record_version(
        &self,
        source: &str,
        entity: &str,
        version: i64,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        let (source, entity) = (source.to_owned(), entity.to_owned());
        let changed = self
            .store
            .write(move |tx, _| {
                Ok(tx
                    .prepare_cached(
                        "INSERT INTO entity_versions (source, entity, version, updated_at_ms) \
                         VALUES (?1, ?2, ?3, ?4) \
                         ON CONFLICT (source, entity) DO UPDATE \
                         SET version = excluded.version, updated_at_ms = excluded.updated_at_ms \
                         WHERE entity_versions.version < excluded.version",
                    )?
                    .execute(params![source, entity, version, now_ms])?)
            })
            .await?;
        Ok(changed == 1)
    }

    /// An entry with an id already present replaces it (DynamoDB `PutItem`).
    async fn append(&self, entry: &TrailEntry) -> Result<(), LedgerError> {
        let entry = entry.clone();
        self.store
            .write_pruning(move |tx, _| insert_entry(tx, &entry, true))
            .await?;
        Ok(())
    }

    /// DynamoDB's `PutItem` with `attribute_not_exists(pk)`: one insert that does nothing
    /// when the id is taken.
    async fn append_new(&self, entry: &TrailEntry) -> Result<bool, LedgerError> {
        let entry = entry.clone();
        Ok(self
            .store
            .write_pruning(move |tx, _| insert_entry(tx, &entry, false))
            .await?)
    }

    /// The newest `limit` of each table, merged and cut to `limit` (0: every row).
    async fn list(&self, query: &TrailQuery) -> Result<Vec<TrailRow>, LedgerError> {
        // SQLite reads a negative LIMIT as "no limit".
        let limit = if query.limit == 0 {
            -1
        } else {
            i64::try_from(query.limit).unwrap_or(i64::MAX)
        };
        let source = query.source.as_deref();
        // `?1 IS NULL OR source = ?1`: one statement for both cases; with a source, SQLite
        // still uses the (source, time) index.
        let records_sql = format!(
            "SELECT {RECORD_COLUMNS} FROM dedupe_records WHERE (?1 IS NULL OR source = ?1) \
             AND received_at_ms BETWEEN ?3 AND ?4 \
             ORDER BY received_at_ms DESC, key DESC LIMIT ?2"
        );
        // Expired entries the writes have not pruned yet are not shown.
        let entries_sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM trail_entries WHERE (?1 IS NULL OR source = ?1) \
             AND expires_at_ms >= ?5 AND at_ms BETWEEN ?3 AND ?4 \
             ORDER BY at_ms DESC, id DESC LIMIT ?2"
        );
        let (since, until) = (
            query.since_ms.unwrap_or(i64::MIN),
            query.until_ms.unwrap_or(i64::MAX),
        );
        let mut rows = self.store.with_conn(|conn| {
            let mut rows = newest(
                conn,
                &records_sql,
                params![source, limit, since, until],
                raw_record,
                |raw| {
                    let r = raw.decode()?;
                    Ok((format!("dedupe#{}", r.key), TrailRow::Record(r)))
                },
            )?;
            rows.extend(newest(
                conn,
                &entries_sql,
                params![source, limit, since, until, query.now_ms],
                raw_entry,
                |raw| {
                    let e = raw.decode()?;
                    Ok((format!("trail#{}", e.id), TrailRow::Entry(e)))
                },
            )?);
            Ok(rows)
        })?;
        rows.sort_by(|(pk_a, a), (pk_b, b)| b.at_ms().cmp(&a.at_ms()).then_with(|| pk_b.cmp(pk_a)));
        if query.limit > 0 {
            rows.truncate(query.limit);
        }
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    /// Through `dedupe_records_by_object` or `trail_entries_by_key` (schema v6).
    async fn lookup(&self, by: Lookup<'_>, now_ms: i64) -> Result<Vec<TrailRow>, LedgerError> {
        let limit = i64::try_from(LOOKUP_LIMIT).unwrap_or(i64::MAX);
        let rows = self.store.with_conn(|conn| match by {
            Lookup::Object(id) => newest(
                conn,
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM dedupe_records \
                     WHERE {OBJECT_ID_OF_SUMMARY} = ?1 \
                     ORDER BY received_at_ms DESC, key DESC LIMIT ?2"
                ),
                params![id, limit],
                raw_record,
                |raw| Ok((String::new(), TrailRow::Record(raw.decode()?))),
            ),
            Lookup::Entries(key) => newest(
                conn,
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM trail_entries \
                     WHERE dedupe_key = ?1 AND expires_at_ms >= ?3 \
                     ORDER BY at_ms DESC, id DESC LIMIT ?2"
                ),
                params![key, limit, now_ms],
                raw_entry,
                |raw| Ok((String::new(), TrailRow::Entry(raw.decode()?))),
            ),
        })?;
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::adapters::embedded::tests::TempDb;
    use crate::ports::ManualClock;

    const T0: i64 = 1_700_000_000_000;
    const LEASE: i64 = 30_000;

    fn ledger() -> SqliteLedger {
        EmbeddedStore::open_in_memory(Arc::new(ManualClock::new(T0)))
            .expect("open")
            .ledger()
    }

    fn req(key: &str, hash: &str, now_ms: i64) -> BeginRequest {
        BeginRequest {
            key: key.into(),
            source: "stripe".into(),
            body_sha256: hash.into(),
            provider_event_id: Some("evt_1".into()),
            event_type: Some("charge.succeeded".into()),
            via: "webhook".into(),
            received_at_ms: now_ms,
            now_ms,
            lease_until_ms: now_ms + LEASE,
            summary: EventSummary::default(),
        }
    }

    fn acquired(attempts: u32, delivered: &[&str]) -> BeginOutcome {
        BeginOutcome::Acquired {
            attempts,
            delivered: delivered.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn held(outcome: BeginOutcome) -> DedupeRecord {
        match outcome {
            BeginOutcome::Held(r) => r,
            other => panic!("expected Held, got {other:?}"),
        }
    }

    async fn record(l: &SqliteLedger, key: &str) -> DedupeRecord {
        l.get(key).await.expect("get").expect("record exists")
    }

    #[tokio::test]
    async fn begin_on_a_new_key_acquires_the_first_attempt_and_writes_every_field() {
        let l = ledger();
        let r = req("k", "h1", T0);
        assert_eq!(l.begin(&r).await.expect("begin"), acquired(1, &[]));
        assert_eq!(
            record(&l, "k").await,
            DedupeRecord {
                key: "k".into(),
                source: "stripe".into(),
                status: DedupeStatus::InProgress,
                body_sha256: "h1".into(),
                provider_event_id: Some("evt_1".into()),
                event_type: Some("charge.succeeded".into()),
                via: "webhook".into(),
                received_at_ms: T0,
                updated_at_ms: T0,
                lease_until_ms: T0 + LEASE,
                expires_at_ms: None,
                attempts: 1,
                last_error: None,
                dead: false,
                summary: EventSummary::default(),
                delivered: BTreeSet::new(),
            }
        );
        assert_eq!(l.get("other").await.expect("get"), None);
    }

    #[tokio::test]
    async fn begin_on_a_completed_key_is_held_until_it_expires() {
        let l = ledger();
        l.begin(&req("k", "h1", T0)).await.expect("begin");
        l.complete("k", T0 + 1_000, T0 + 100_000, &BTreeSet::new())
            .await
            .expect("complete");

        // Its lease has long lapsed: only the expiry frees a completed key.
        let r = held(
            l.begin(&req("k", "h1", T0 + 2 * LEASE))
                .await
                .expect("begin"),
        );
        assert_eq!(
            (r.status, r.expires_at_ms, r.updated_at_ms),
            (DedupeStatus::Completed, Some(T0 + 100_000), T0 + 1_000)
        );
        held(
            l.begin(&req("k", "h1", T0 + 100_000))
                .await
                .expect("at the instant of expiry"),
        );
    }

    #[tokio::test]
    async fn begin_on_an_expired_key_acquires_whatever_the_body_and_starts_counting_again() {
        let l = ledger();
        l.begin(&req("k", "h1", T0)).await.expect("begin");
        l.fail("k", T0 + 500, "503", false).await.expect("fail");
        l.begin(&req("k", "h1", T0 + 600)).await.expect("retry");
        l.complete("k", T0 + 1_000, T0 + 5_000, &BTreeSet::new())
            .await
            .expect("complete");
        assert_eq!(record(&l, "k").await.attempts, 2);

        let outcome = l
            .begin(&req("k", "h2", T0 + 5_001))
            .await
            .expect("after expiry");
        assert_eq!(outcome, acquired(1, &[]));
        let r = record(&l, "k").await;
        assert_eq!(
            (r.status, r.body_sha256.as_str(), r.expires_at_ms),
            (DedupeStatus::InProgress, "h2", None)
        );
    }

    #[tokio::test]
    async fn begin_on_a_failed_key_with_the_same_body_acquires_the_next_attempt() {
        let l = ledger();
        l.begin(&req("k", "h1", T0)).await.expect("begin");
        l.fail("k", T0 + 1_000, "target answered 503", true)
            .await
            .expect("fail");
        let r = record(&l, "k").await;
        assert_eq!(
            (r.status, r.last_error.as_deref(), r.dead),
            (DedupeStatus::Failed, Some("target answered 503"), true)
        );
        assert_eq!(r.updated_at_ms, T0 + 1_000);

        assert_eq!(
            l.begin(&req("k", "h1", T0 + 2_000)).await.expect("retry"),
            acquired(2, &[])
        );
        let r = record(&l, "k").await;
        assert_eq!(
            (r.status, r.last_error, r.dead),
            (DedupeStatus::InProgress, None, false)
        );
        assert_eq!(r.lease_until_ms, T0 + 2_000 + LEASE);
    }

    #[tokio::test]
    async fn begin_after_the_lease_lapsed_acquires_the_next_attempt() {
        let l = ledger();
        l.begin(&req("k", "h1", T0)).await.expect("begin");
        held(
            l.begin(&req("k", "h1", T0 + LEASE))
                .await
                .expect("at the lease's end"),
        );
        assert_eq!(
            l.begin(&req("k", "h1", T0 + LEASE + 1))
                .await
                .expect("after it"),
            acquired(2, &[])
        );
    }

    #[tokio::test]
    async fn begin_while_the_lease_is_live_is_held_unchanged() {
        let l = ledger();
        l.begin(&req("k", "h1", T0)).await.expect("begin");
        let before = record(&l, "k").await;
        let r = held(
            l.begin(&req("k", "h1", T0 + 1_000))
                .await
                .expect("begin again"),
        );
        assert_eq!(r, before);
        assert_eq!(record(&l, "k").await, before, "a held begin writes nothing");
    }

    #[tokio::test]
    async fn begin_with_a_different_body_is_held_even_when_failed_or_lapsed() {
        let l = ledger();
        l.begin(&req("k", "h1", T0)).await.expect("begin");
        assert_eq!(
            held(l.begin(&req("k", "h2", T0 + 1)).await.expect("live")).body_sha256,
            "h1"
        );
        let r = held(
            l.begin(&req("k", "h2", T0 + 2 * LEASE))
                .await
                .expect("lapsed"),
        );
        assert_eq!(
            (r.body_sha256.as_str(), r.status),
            ("h1", DedupeStatus::InProgress)
        );
        l.fail("k", T0 + 1_000, "boom", false).await.expect("fail");
        let r = held(l.begin(&req("k", "h2", T0 + 2_000)).await.expect("failed"));
        assert_eq!(
            (r.body_sha256.as_str(), r.status),
            ("h1", DedupeStatus::Failed)
        );
    }

    #[tokio::test]
    async fn complete_or_fail_on_a_missing_key_is_not_found_and_creates_nothing() {
        let l = ledger();
        assert!(
            matches!(l.complete("nope", T0, T0, &BTreeSet::new()).await, Err(LedgerError::NotFound(k)) if k == "nope")
        );
        assert!(
            matches!(l.fail("nope", T0, "x", false).await, Err(LedgerError::NotFound(k)) if k == "nope")
        );
        assert_eq!(l.get("nope").await.expect("get"), None);
    }

    #[tokio::test]
    async fn a_corrupt_status_reads_as_corrupt_not_a_panic() {
        let store = EmbeddedStore::open_in_memory(Arc::new(ManualClock::new(T0))).expect("open");
        let l = store.ledger();
        l.begin(&req("k", "h1", T0)).await.expect("begin");
        store
            .with_conn(|c| Ok(c.execute("UPDATE dedupe_records SET status = 'WEIRD'", [])?))
            .expect("corrupt it");
        assert!(matches!(l.get("k").await, Err(LedgerError::Corrupt(_))));
        assert!(matches!(
            l.begin(&req("k", "h1", T0)).await,
            Err(LedgerError::Corrupt(_))
        ));
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|t| t.to_string()).collect()
    }

    #[tokio::test]
    async fn marked_targets_come_back_after_a_failure_and_a_lapsed_lease_not_after_expiry() {
        let l = ledger();
        l.begin(&req("k", "h1", T0)).await.expect("begin");
        l.mark_delivered("k", "bus", T0 + 10).await.expect("mark");
        l.mark_delivered("k", "bus", T0 + 11)
            .await
            .expect("marking twice is marking once");
        let r = record(&l, "k").await;
        assert_eq!((r.delivered, r.updated_at_ms), (set(&["bus"]), T0 + 11));

        l.fail("k", T0 + 20, "target hook: 503", false)
            .await
            .expect("fail");
        assert_eq!(
            l.begin(&req("k", "h1", T0 + 30)).await.expect("retry"),
            acquired(2, &["bus"])
        );
        l.mark_delivered("k", "queue", T0 + 40).await.expect("mark");
        // This holder dies; the next one, after the lease, skips both.
        assert_eq!(
            l.begin(&req("k", "h1", T0 + 30 + LEASE + 1))
                .await
                .expect("after the lease"),
            acquired(3, &["bus", "queue"])
        );
        l.complete(
            "k",
            T0 + 50_000,
            T0 + 60_000,
            &set(&["bus", "hook", "queue"]),
        )
        .await
        .expect("complete");
        let r = record(&l, "k").await;
        assert_eq!(
            (r.status, r.delivered),
            (DedupeStatus::Completed, set(&["bus", "hook", "queue"]))
        );

        // A new event under the old key: a new cycle.
        assert_eq!(
            l.begin(&req("k", "h2", T0 + 60_001))
                .await
                .expect("expired"),
            acquired(1, &[])
        );
        assert_eq!(record(&l, "k").await.delivered, set(&[]));
    }

    #[tokio::test]
    async fn complete_adds_its_targets_to_the_marked_ones() {
        let l = ledger();
        l.begin(&req("k", "h1", T0)).await.expect("begin");
        l.mark_delivered("k", "a", T0 + 1).await.expect("mark");
        l.complete("k", T0 + 2, T0 + 100, &set(&["b"]))
            .await
            .expect("complete");
        assert_eq!(record(&l, "k").await.delivered, set(&["a", "b"]));
    }

    #[tokio::test]
    async fn mark_delivered_needs_the_record_in_progress_and_changes_nothing_else() {
        let l = ledger();
        assert!(
            matches!(l.mark_delivered("nope", "a", T0).await, Err(LedgerError::NotFound(k)) if k == "nope")
        );
        assert_eq!(l.get("nope").await.expect("get"), None, "nothing created");

        l.begin(&req("failed", "h1", T0)).await.expect("begin");
        l.fail("failed", T0 + 1, "boom", false).await.expect("fail");
        l.begin(&req("done", "h1", T0)).await.expect("begin");
        l.complete("done", T0 + 1, T0 + 100, &set(&["a"]))
            .await
            .expect("complete");
        for key in ["failed", "done"] {
            let before = record(&l, key).await;
            assert!(
                matches!(l.mark_delivered(key, "b", T0 + 2).await, Err(LedgerError::NotHeld(k)) if k == key),
                "{key}"
            );
            assert_eq!(record(&l, key).await, before, "{key} unchanged");
        }
    }

    #[tokio::test]
    async fn an_unreadable_delivered_set_is_corrupt_not_empty() {
        let store = EmbeddedStore::open_in_memory(Arc::new(ManualClock::new(T0))).expect("open");
        let l = store.ledger();
        l.begin(&req("k", "h1", T0)).await.expect("begin");
        store
            .with_conn(|c| Ok(c.execute("UPDATE dedupe_records SET delivered = 'bus'", [])?))
            .expect("corrupt it");
        assert!(matches!(l.get("k").await, Err(LedgerError::Corrupt(_))));
    }

    fn entry(id: &str, source: &str, at_ms: i64) -> TrailEntry {
        TrailEntry {
            id: id.into(),
            at_ms,
            source: source.into(),
            status: TrailStatus::Conflict,
            dedupe_key: Some(format!("{source}#{id}")),
            provider_event_id: Some(id.into()),
            event_type: None,
            reason: Some("different body".into()),
            source_ip: Some("203.0.113.7".into()),
            expires_at_ms: at_ms + DAY,
        }
    }

    const DAY: i64 = 86_400_000;

    #[tokio::test]
    async fn list_merges_records_and_entries_newest_first_filtered_and_limited() {
        let l = ledger();
        l.append(&entry("e1", "shop", T0 + 1_000))
            .await
            .expect("append");
        l.append(&entry("e3", "shop", T0 + 3_000))
            .await
            .expect("append");
        l.append(&entry("e4", "other", T0 + 4_000))
            .await
            .expect("append");
        let mut r = req("shop#2", "h", T0 + 2_000);
        r.source = "shop".into();
        l.begin(&r).await.expect("begin");

        let shop = |limit| TrailQuery {
            source: Some("shop".into()),
            limit,
            now_ms: T0,
            ..Default::default()
        };
        let rows = l.list(&shop(2)).await.expect("list");
        assert_eq!(
            rows.iter().map(TrailRow::at_ms).collect::<Vec<_>>(),
            [T0 + 3_000, T0 + 2_000]
        );
        assert_eq!(
            rows[0],
            TrailRow::Entry(entry("e3", "shop", T0 + 3_000)),
            "an entry reads back as written"
        );
        assert!(matches!(&rows[1], TrailRow::Record(rec) if rec.key == "shop#2"));

        assert_eq!(
            l.list(&shop(0)).await.expect("list").len(),
            3,
            "0 is no limit, and only the source's rows"
        );
        let all = l
            .list(&TrailQuery {
                source: None,
                limit: 10,
                now_ms: T0,
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(
            all.iter().map(TrailRow::at_ms).collect::<Vec<_>>(),
            [T0 + 4_000, T0 + 3_000, T0 + 2_000, T0 + 1_000]
        );
    }

    /// Every entry id still stored, expired or not (`now_ms` 0 leaves none out).
    async fn stored_ids(l: &SqliteLedger) -> Vec<String> {
        let rows = l.list(&TrailQuery::default()).await.expect("list");
        let mut ids: Vec<String> = rows
            .into_iter()
            .filter_map(|row| match row {
                TrailRow::Entry(e) => Some(e.id),
                TrailRow::Record(_) => None,
            })
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn append_new_stores_an_id_once_and_keeps_the_first() {
        let l = ledger();
        let first = entry("slot", "shop", T0);
        assert!(l.append_new(&first).await.expect("append_new"));
        let second = TrailEntry {
            reason: Some("a later one".into()),
            at_ms: T0 + 5,
            ..first.clone()
        };
        assert!(!l.append_new(&second).await.expect("append_new"), "taken");
        let rows = l.list(&TrailQuery::default()).await.expect("list");
        assert_eq!(
            rows,
            vec![TrailRow::Entry(first)],
            "the first is kept as it was"
        );
        // `append` still replaces.
        l.append(&second).await.expect("append");
        let rows = l.list(&TrailQuery::default()).await.expect("list");
        assert_eq!(rows, vec![TrailRow::Entry(second)]);
    }

    #[tokio::test]
    async fn expired_entries_are_not_listed_and_writes_delete_them_a_bounded_batch_at_a_time() {
        let clock = Arc::new(ManualClock::new(T0));
        let l = EmbeddedStore::open_in_memory(clock.clone())
            .expect("open")
            .ledger();
        let expiring = |id: String| TrailEntry {
            expires_at_ms: T0 + 1_000,
            ..entry(&id, "shop", T0)
        };
        for n in 0..20 {
            l.append(&expiring(format!("old{n:02}")))
                .await
                .expect("append");
        }
        l.append(&entry("live", "shop", T0)).await.expect("append");
        let listed = |now_ms| {
            let l = l.clone();
            async move {
                l.list(&TrailQuery {
                    source: Some("shop".into()),
                    limit: 0,
                    now_ms,
                    ..Default::default()
                })
                .await
                .expect("list")
                .len()
            }
        };
        assert_eq!(
            listed(T0 + 1_000).await,
            21,
            "listed up to the instant of expiry"
        );
        assert_eq!(listed(T0 + 1_001).await, 1, "then only the live one");

        // Nothing is deleted before the store's clock passes the expiry.
        l.append(&entry("w0", "shop", T0)).await.expect("append");
        assert_eq!(stored_ids(&l).await.len(), 22);

        clock.advance_ms(1_001);
        let mut left = Vec::new();
        for n in 1..=4 {
            l.append_new(&entry(&format!("w{n}"), "shop", T0 + 1_001))
                .await
                .expect("append_new");
            let ids = stored_ids(&l).await;
            left.push(ids.iter().filter(|id| id.starts_with("old")).count());
        }
        assert_eq!(left, [12, 4, 0, 0], "{PRUNE_BATCH} per write");
        assert_eq!(
            stored_ids(&l).await,
            ["live", "w0", "w1", "w2", "w3", "w4"],
            "live entries stay"
        );
    }

    #[tokio::test]
    async fn completed_records_past_their_window_are_deleted_by_later_writes_and_no_other() {
        let clock = Arc::new(ManualClock::new(T0));
        let l = EmbeddedStore::open_in_memory(clock.clone())
            .expect("open")
            .ledger();
        for (key, expires) in [("done-expired", T0 + 1_000), ("done-live", T0 + DAY)] {
            l.begin(&req(key, "h1", T0)).await.expect("begin");
            l.complete(key, T0, expires, &BTreeSet::new())
                .await
                .expect("complete");
        }
        l.begin(&req("in-progress", "h1", T0)).await.expect("begin");
        l.begin(&req("failed", "h1", T0)).await.expect("begin");
        l.fail("failed", T0, "503", true).await.expect("fail");

        clock.advance_ms(DAY / 2);
        l.append(&entry("e", "stripe", T0 + DAY / 2))
            .await
            .expect("append");
        assert_eq!(l.get("done-expired").await.expect("get"), None);
        for key in ["done-live", "in-progress", "failed"] {
            assert!(l.get(key).await.expect("get").is_some(), "{key} kept");
        }
        // Gone or expired, the key is free alike.
        assert_eq!(
            l.begin(&req("done-expired", "h2", T0 + DAY / 2))
                .await
                .expect("begin"),
            acquired(1, &[])
        );
    }

    #[tokio::test]
    async fn records_and_entries_survive_reopening_the_store() {
        let db = TempDb::new();
        let clock = Arc::new(ManualClock::new(T0));
        {
            let l = EmbeddedStore::open(&db.0, clock.clone())
                .expect("open")
                .ledger();
            l.begin(&req("k", "h1", T0)).await.expect("begin");
            l.complete("k", T0 + 1, T0 + 100, &BTreeSet::new())
                .await
                .expect("complete");
            l.append(&entry("e1", "shop", T0)).await.expect("append");
        }
        let l = EmbeddedStore::open(&db.0, clock).expect("reopen").ledger();
        assert_eq!(record(&l, "k").await.status, DedupeStatus::Completed);
        assert_eq!(l.list(&TrailQuery::default()).await.expect("list").len(), 2);
    }
}
