//! `PollStore` on the ledger table: one item per poll source, `pk = poll#<source>`, with
//! `source`, `cursor`?, `version` N, `lease_holder`?, `lease_until_ms` N, `updated_at_ms` N.
//! Every operation is a single conditional `UpdateItem` (the lease and the cursor version
//! are the conditions), so two pollers can never both hold a source or both move its cursor.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::{n, s, DynamoLedger, Fields, Item, KEY_ATTRIBUTE};
use crate::ports::poll::{advance_refusal, reset_refusal};
use crate::ports::{Acquire, LedgerError, PollState, PollStore, PollStoreError};

const POLL_PREFIX: &str = "poll#";

fn poll_pk(source: &str) -> String {
    format!("{POLL_PREFIX}{source}")
}

fn store_error(e: LedgerError) -> PollStoreError {
    match e {
        LedgerError::Corrupt(what) => PollStoreError::Corrupt(what),
        other => PollStoreError::Backend(other.to_string()),
    }
}

fn backend(operation: &str, err: impl std::error::Error) -> PollStoreError {
    store_error(super::backend(operation, err))
}

fn decode(pk: &str, item: &Item) -> Result<PollState, PollStoreError> {
    let f = Fields::new(pk, item);
    let version = f.i64("version").map_err(store_error)?;
    Ok(PollState {
        source: f.string("source").map_err(store_error)?,
        cursor: f.optional_string("cursor").map_err(store_error)?,
        version: u64::try_from(version)
            .map_err(|_| PollStoreError::Corrupt(format!("{pk}: version {version}")))?,
        lease_holder: f.optional_string("lease_holder").map_err(store_error)?,
        lease_until_ms: f.i64("lease_until_ms").map_err(store_error)?,
        updated_at_ms: f.i64("updated_at_ms").map_err(store_error)?,
    })
}

#[async_trait]
impl PollStore for DynamoLedger {
    async fn acquire(
        &self,
        source: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Acquire, PollStoreError> {
        let pk = poll_pk(source);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(&pk))
            .update_expression(
                "SET #source = :source, lease_holder = :holder, lease_until_ms = :until, \
                 version = if_not_exists(version, :zero), \
                 updated_at_ms = if_not_exists(updated_at_ms, :now)",
            )
            .condition_expression(
                "attribute_not_exists(pk) OR attribute_not_exists(lease_holder) \
                 OR lease_until_ms < :now OR lease_holder = :holder",
            )
            .expression_attribute_names("#source", "source")
            .expression_attribute_values(":source", s(source))
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => Ok(Acquire::Acquired(decode(
                &pk,
                &out.attributes.unwrap_or_default(),
            )?)),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let old = failed.item().ok_or_else(|| {
                        PollStoreError::Backend(format!(
                            "DynamoDB UpdateItem: condition failed on {pk} but the old item was not returned"
                        ))
                    })?;
                    let held = decode(&pk, old)?;
                    Ok(Acquire::Held {
                        holder: held.lease_holder.unwrap_or_default(),
                        until_ms: held.lease_until_ms,
                    })
                }
                _ => Err(backend("UpdateItem", err)),
            },
        }
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
        let pk = poll_pk(source);
        let next = expected_version + 1;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(&pk))
            .update_expression(
                "SET #cursor = :cursor, version = :next, lease_until_ms = :until, updated_at_ms = :now",
            )
            .condition_expression(
                "lease_holder = :holder AND lease_until_ms >= :now AND version = :expected",
            )
            .expression_attribute_names("#cursor", "cursor")
            .expression_attribute_values(":cursor", s(cursor))
            .expression_attribute_values(":next", n(next))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":expected", n(expected_version))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(next),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let stored = failed.item().map(|old| decode(&pk, old)).transpose()?;
                    let why = advance_refusal(stored.as_ref(), holder, expected_version, now_ms)
                        .unwrap_or_else(|| "the stored state changed while advancing".to_owned());
                    Err(PollStoreError::LeaseLost {
                        source_id: source.to_owned(),
                        why,
                    })
                }
                _ => Err(backend("UpdateItem", err)),
            },
        }
    }

    async fn release(&self, source: &str, holder: &str) -> Result<(), PollStoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(poll_pk(source)))
            .update_expression("SET lease_until_ms = :zero REMOVE lease_holder")
            .condition_expression("lease_holder = :holder")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Not ours (taken over, or already released): nothing to give up.
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(backend("UpdateItem", err)),
        }
    }

    async fn state(&self, source: &str) -> Result<Option<PollState>, PollStoreError> {
        let pk = poll_pk(source);
        let item = self
            .read_item(&pk)
            .await
            .map_err(|e| backend("GetItem", e))?;
        item.map(|item| decode(&pk, &item)).transpose()
    }

    /// One conditional `UpdateItem`; a refusal returns the item as stored, to say why.
    async fn reset(
        &self,
        source: &str,
        expected_version: u64,
        now_ms: i64,
    ) -> Result<u64, PollStoreError> {
        let pk = poll_pk(source);
        let next = expected_version + 1;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(&pk))
            .update_expression("SET version = :next, updated_at_ms = :now REMOVE #cursor")
            .condition_expression(
                "attribute_exists(pk) AND version = :expected AND lease_until_ms < :now",
            )
            .expression_attribute_names("#cursor", "cursor")
            .expression_attribute_values(":next", n(next))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":expected", n(expected_version))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(next),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let stored = failed.item().map(|old| decode(&pk, old)).transpose()?;
                    let why = reset_refusal(stored.as_ref(), expected_version, now_ms)
                        .unwrap_or_else(|| "the stored state changed while resetting".to_owned());
                    Err(PollStoreError::NotReset {
                        source_id: source.to_owned(),
                        why,
                    })
                }
                _ => Err(backend("UpdateItem", err)),
            },
        }
    }
}
