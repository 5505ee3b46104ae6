//! `PollStore` on the `poll_state` table, implemented by the ledger handle (the DynamoDB
//! adapter keeps poll rows in the ledger table too). Each operation is one `BEGIN IMMEDIATE`
//! transaction: read, check the condition the DynamoDB adapter writes as a condition
//! expression, write.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Transaction};

use super::ledger::SqliteLedger;
use super::EmbeddedError;
use crate::ports::poll::{advance_refusal, reset_refusal};
use crate::ports::{Acquire, PollState, PollStore, PollStoreError};

fn read(tx: &Transaction<'_>, source: &str) -> Result<Option<PollState>, EmbeddedError> {
    let row = tx
        .prepare_cached(
            "SELECT cursor, version, lease_holder, lease_until_ms, updated_at_ms \
             FROM poll_state WHERE source = ?1",
        )?
        .query_row([source], |row| {
            Ok((
                row.get::<_, Option<String>>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })
        .optional()?;
    row.map(
        |(cursor, version, lease_holder, lease_until_ms, updated_at_ms)| {
            let version = u64::try_from(version).map_err(|_| {
                EmbeddedError::Corrupt(format!("poll state {source}: version {version}"))
            })?;
            Ok(PollState {
                source: source.to_owned(),
                cursor,
                version,
                lease_holder,
                lease_until_ms,
                updated_at_ms,
            })
        },
    )
    .transpose()
}

fn version_i64(v: u64) -> Result<i64, EmbeddedError> {
    i64::try_from(v).map_err(|_| EmbeddedError::Corrupt(format!("poll version {v} too large")))
}

#[async_trait]
impl PollStore for SqliteLedger {
    async fn acquire(
        &self,
        source: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Acquire, PollStoreError> {
        let (source, holder) = (source.to_owned(), holder.to_owned());
        Ok(self.store().write(move |tx, _| {
            let (source, holder) = (source.as_str(), holder.as_str());
            let current = read(tx, source)?;
            if let Some(s) = &current {
                let held_by_other = s.lease_holder.as_deref().is_some_and(|h| h != holder);
                if held_by_other && s.lease_until_ms >= now_ms {
                    return Ok(Acquire::Held {
                        holder: s.lease_holder.clone().unwrap_or_default(),
                        until_ms: s.lease_until_ms,
                    });
                }
            }
            let mut state = current.unwrap_or(PollState {
                source: source.to_owned(),
                cursor: None,
                version: 0,
                lease_holder: None,
                lease_until_ms: 0,
                updated_at_ms: now_ms,
            });
            state.lease_holder = Some(holder.to_owned());
            state.lease_until_ms = until_ms;
            tx.prepare_cached(
                "INSERT INTO poll_state (source, cursor, version, lease_holder, lease_until_ms, updated_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (source) DO UPDATE SET lease_holder = ?4, lease_until_ms = ?5",
            )?
            .execute(params![
                source,
                state.cursor,
                version_i64(state.version)?,
                holder,
                until_ms,
                state.updated_at_ms
            ])?;
            Ok(Acquire::Acquired(state))
        }).await?)
    }

    async fn advance(
        &self,
        source: &str,
        holder: &str,
        expected_version: u64,
        cursor: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<u64, PollStoreError> {
        let lost = |why: String| PollStoreError::LeaseLost {
            source_id: source.to_owned(),
            why,
        };
        let (owned_source, holder, cursor) =
            (source.to_owned(), holder.to_owned(), cursor.to_owned());
        let outcome = self
            .store()
            .write(move |tx, _| {
                let (source, holder) = (owned_source.as_str(), holder.as_str());
                let state = read(tx, source)?;
                if let Some(why) = advance_refusal(state.as_ref(), holder, expected_version, now_ms)
                {
                    return Ok(Err(why));
                }
                let next = expected_version + 1;
                tx.prepare_cached(
                    "UPDATE poll_state SET cursor = ?2, version = ?3, lease_until_ms = ?4, \
                 updated_at_ms = ?5 WHERE source = ?1",
                )?
                .execute(params![
                    source,
                    cursor,
                    version_i64(next)?,
                    until_ms,
                    now_ms
                ])?;
                Ok(Ok(next))
            })
            .await?;
        outcome.map_err(lost)
    }

    async fn release(&self, source: &str, holder: &str) -> Result<(), PollStoreError> {
        let (source, holder) = (source.to_owned(), holder.to_owned());
        Ok(self
            .store()
            .write(move |tx, _| {
                tx.prepare_cached(
                    "UPDATE poll_state SET lease_holder = NULL, lease_until_ms = 0 \
                 WHERE source = ?1 AND lease_holder = ?2",
                )?
                .execute(params![source, holder])?;
                Ok(())
            })
            .await?)
    }

    async fn state(&self, source: &str) -> Result<Option<PollState>, PollStoreError> {
        let source = source.to_owned();
        Ok(self.store().write(move |tx, _| read(tx, &source)).await?)
    }

    async fn reset(
        &self,
        source: &str,
        expected_version: u64,
        now_ms: i64,
    ) -> Result<u64, PollStoreError> {
        let owned = source.to_owned();
        let outcome = self
            .store()
            .write(move |tx, _| {
                let state = read(tx, &owned)?;
                if let Some(why) = reset_refusal(state.as_ref(), expected_version, now_ms) {
                    return Ok(Err(why));
                }
                let next = expected_version + 1;
                tx.prepare_cached(
                    "UPDATE poll_state SET cursor = NULL, version = ?2, updated_at_ms = ?3 \
                     WHERE source = ?1",
                )?
                .execute(params![owned, version_i64(next)?, now_ms])?;
                Ok(Ok(next))
            })
            .await?;
        outcome.map_err(|why| PollStoreError::NotReset {
            source_id: source.to_owned(),
            why,
        })
    }
}
