//! `CheckStore` on the ledger table: one item per check, `pk = check#<source>#<name>#<entity>`
//! (the check key itself), with `key`, `source`, `name`, `entity`, `poll_source`, `on_event`,
//! `created_at_ms` N, `due_at_ms` N, `expires_at_ms` N, `status`
//! (`PENDING`|`SATISFIED`|`FIRED`), `satisfied_by`?, `closed_at_ms`? N, `outcome`?, and the
//! TTL attribute (`expires_at_ms` in seconds). No index attributes: the trail lists the
//! checks' trail entries, not the check items. Every write is one conditional request.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use super::{n, s, DynamoLedger, Fields, Item, KEY_ATTRIBUTE, TTL_ATTRIBUTE};
use crate::ports::{CheckRecord, CheckStatus, CheckStore, CheckStoreError, LedgerError, Scheduled};

fn store_error(e: LedgerError) -> CheckStoreError {
    match e {
        LedgerError::Corrupt(what) => CheckStoreError::Corrupt(what),
        other => CheckStoreError::Backend(other.to_string()),
    }
}

fn backend(operation: &str, err: impl std::error::Error) -> CheckStoreError {
    store_error(super::backend(operation, err))
}

fn decode(item: &Item) -> Result<CheckRecord, CheckStoreError> {
    let pk = match item.get(KEY_ATTRIBUTE) {
        Some(aws_sdk_dynamodb::types::AttributeValue::S(pk)) => pk.as_str(),
        _ => return Err(CheckStoreError::Corrupt("check item without a pk".into())),
    };
    let f = Fields::new(pk, item);
    let status = f.string("status").map_err(store_error)?;
    Ok(CheckRecord {
        key: f.string("key").map_err(store_error)?,
        source: f.string("source").map_err(store_error)?,
        name: f.string("name").map_err(store_error)?,
        entity: f.string("entity").map_err(store_error)?,
        poll_source: f.string("poll_source").map_err(store_error)?,
        on_event: f.string("on_event").map_err(store_error)?,
        created_at_ms: f.i64("created_at_ms").map_err(store_error)?,
        due_at_ms: f.i64("due_at_ms").map_err(store_error)?,
        expires_at_ms: f.i64("expires_at_ms").map_err(store_error)?,
        status: CheckStatus::parse(&status).ok_or_else(|| {
            CheckStoreError::Corrupt(format!("{pk}: status {status:?} is not a check status"))
        })?,
        satisfied_by: f.optional_string("satisfied_by").map_err(store_error)?,
        closed_at_ms: f.optional_i64("closed_at_ms").map_err(store_error)?,
        outcome: f.optional_string("outcome").map_err(store_error)?,
    })
}

impl DynamoLedger {
    /// PENDING → `to`, setting `extra`; false when the item is missing or not pending.
    async fn close_check(
        &self,
        key: &str,
        to: CheckStatus,
        extra: (&str, &str),
        now_ms: i64,
    ) -> Result<bool, CheckStoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(key))
            .update_expression(format!(
                "SET #s = :to, {} = :extra, closed_at_ms = :now",
                extra.0
            ))
            .condition_expression("#s = :pending")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":extra", s(extra.1))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":pending", s(CheckStatus::Pending.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(err) => Err(backend("UpdateItem", err)),
        }
    }
}

#[async_trait]
impl CheckStore for DynamoLedger {
    async fn schedule(
        &self,
        check: &CheckRecord,
        now_ms: i64,
    ) -> Result<Scheduled, CheckStoreError> {
        let item: Item = HashMap::from([
            (KEY_ATTRIBUTE.to_owned(), s(&check.key)),
            ("key".to_owned(), s(&check.key)),
            ("source".to_owned(), s(&check.source)),
            ("name".to_owned(), s(&check.name)),
            ("entity".to_owned(), s(&check.entity)),
            ("poll_source".to_owned(), s(&check.poll_source)),
            ("on_event".to_owned(), s(&check.on_event)),
            ("created_at_ms".to_owned(), n(check.created_at_ms)),
            ("due_at_ms".to_owned(), n(check.due_at_ms)),
            ("expires_at_ms".to_owned(), n(check.expires_at_ms)),
            ("status".to_owned(), s(CheckStatus::Pending.as_str())),
            // TTL is in seconds and lazy: readers compare `expires_at_ms` themselves.
            (
                TTL_ATTRIBUTE.to_owned(),
                n(check.expires_at_ms.div_euclid(1000)),
            ),
        ]);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR expires_at_ms < :now")
            .expression_attribute_values(":now", n(now_ms))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Scheduled::Created),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    match failed.item() {
                        Some(old) => Ok(Scheduled::Exists(decode(old)?)),
                        // An endpoint that ignores ReturnValuesOnConditionCheckFailure: read it.
                        None => match self.get_check(&check.key).await? {
                            Some(held) => Ok(Scheduled::Exists(held)),
                            None => Err(CheckStoreError::Backend(format!(
                                "DynamoDB PutItem: condition failed on {} but no item is there",
                                check.key
                            ))),
                        },
                    }
                }
                _ => Err(backend("PutItem", err)),
            },
        }
    }

    async fn satisfy(
        &self,
        key: &str,
        by_event: &str,
        now_ms: i64,
    ) -> Result<bool, CheckStoreError> {
        self.close_check(
            key,
            CheckStatus::Satisfied,
            ("satisfied_by", by_event),
            now_ms,
        )
        .await
    }

    async fn get_check(&self, key: &str) -> Result<Option<CheckRecord>, CheckStoreError> {
        let item = self
            .read_item(key)
            .await
            .map_err(|e| backend("GetItem", e))?;
        item.map(|item| decode(&item)).transpose()
    }

    async fn finish(&self, key: &str, outcome: &str, now_ms: i64) -> Result<bool, CheckStoreError> {
        self.close_check(key, CheckStatus::Fired, ("outcome", outcome), now_ms)
            .await
    }
}
