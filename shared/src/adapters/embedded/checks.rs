//! `CheckStore` on the `checks` table, implemented by the ledger handle (the DynamoDB adapter
//! keeps check items in the ledger table too). Each operation is one `BEGIN IMMEDIATE`
//! transaction: read, check the condition the DynamoDB adapter writes as a condition
//! expression, write.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Transaction};

use super::ledger::SqliteLedger;
use super::EmbeddedError;
use crate::ports::{CheckRecord, CheckStatus, CheckStore, CheckStoreError, Scheduled};

const COLUMNS: &str = "key, source, name, entity, poll_source, on_event, created_at_ms, \
     due_at_ms, expires_at_ms, status, satisfied_by, closed_at_ms, outcome";

fn read(tx: &Transaction<'_>, key: &str) -> Result<Option<CheckRecord>, EmbeddedError> {
    let row = tx
        .prepare_cached(&format!("SELECT {COLUMNS} FROM checks WHERE key = ?1"))?
        .query_row([key], |row| {
            Ok((
                CheckRecord {
                    key: row.get(0)?,
                    source: row.get(1)?,
                    name: row.get(2)?,
                    entity: row.get(3)?,
                    poll_source: row.get(4)?,
                    on_event: row.get(5)?,
                    created_at_ms: row.get(6)?,
                    due_at_ms: row.get(7)?,
                    expires_at_ms: row.get(8)?,
                    // Replaced by the decoded `status` column.
                    status: CheckStatus::Pending,
                    satisfied_by: row.get(10)?,
                    closed_at_ms: row.get(11)?,
                    outcome: row.get(12)?,
                },
                row.get::<_, String>(9)?,
            ))
        })
        .optional()?;
    row.map(|(mut record, status)| {
        record.status = CheckStatus::parse(&status).ok_or_else(|| {
            EmbeddedError::Corrupt(format!(
                "check {key}: status {status:?} is not a check status"
            ))
        })?;
        Ok(record)
    })
    .transpose()
}

#[async_trait]
impl CheckStore for SqliteLedger {
    async fn schedule(
        &self,
        check: &CheckRecord,
        now_ms: i64,
    ) -> Result<Scheduled, CheckStoreError> {
        let check = check.clone();
        Ok(self
            .store()
            .write(move |tx, _| {
                if let Some(held) = read(tx, &check.key)? {
                    if held.expires_at_ms >= now_ms {
                        return Ok(Scheduled::Exists(held));
                    }
                }
                tx.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO checks ({COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL, NULL)"
                ))?
                .execute(params![
                    check.key,
                    check.source,
                    check.name,
                    check.entity,
                    check.poll_source,
                    check.on_event,
                    check.created_at_ms,
                    check.due_at_ms,
                    check.expires_at_ms,
                    CheckStatus::Pending.as_str(),
                ])?;
                Ok(Scheduled::Created)
            })
            .await?)
    }

    async fn satisfy(
        &self,
        key: &str,
        by_event: &str,
        now_ms: i64,
    ) -> Result<bool, CheckStoreError> {
        let (key, by_event) = (key.to_owned(), by_event.to_owned());
        Ok(self
            .store()
            .write(move |tx, _| {
                let n = tx
                    .prepare_cached(
                        "UPDATE checks SET status = ?2, satisfied_by = ?3, closed_at_ms = ?4 \
                     WHERE key = ?1 AND status = ?5",
                    )?
                    .execute(params![
                        key,
                        CheckStatus::Satisfied.as_str(),
                        by_event,
                        now_ms,
                        CheckStatus::Pending.as_str()
                    ])?;
                Ok(n == 1)
            })
            .await?)
    }

    async fn get_check(&self, key: &str) -> Result<Option<CheckRecord>, CheckStoreError> {
        let key = key.to_owned();
        Ok(self.store().write(move |tx, _| read(tx, &key)).await?)
    }

    async fn finish(&self, key: &str, outcome: &str, now_ms: i64) -> Result<bool, CheckStoreError> {
        let (key, outcome) = (key.to_owned(), outcome.to_owned());
        Ok(self
            .store()
            .write(move |tx, _| {
                let n = tx
                    .prepare_cached(
                        "UPDATE checks SET status = ?2, outcome = ?3, closed_at_ms = ?4 \
                     WHERE key = ?1 AND status = ?5",
                    )?
                    .execute(params![
                        key,
                        CheckStatus::Fired.as_str(),
                        outcome,
                        now_ms,
                        CheckStatus::Pending.as_str()
                    ])?;
                Ok(n == 1)
            })
            .await?)
    }
}
