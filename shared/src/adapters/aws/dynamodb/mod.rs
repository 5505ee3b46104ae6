//! `Ledger` over one DynamoDB table: dedupe records and trail entries side by side.
//!
//! # Table schema
//! (created by [`create_table`] for tests and `inlet`; the SAM template declares the same)
//!
//! | what | attribute | type | value |
//! |---|---|---|---|
//! | partition key (no sort key) | `pk` | S | `dedupe#<key>` for a dedupe record, `trail#<id>` for a trail entry |
//! | GSI `by_source`, partition | `gsi1pk` | S | `<source>#<shard>`: the source and one of [`SOURCE_INDEX_SHARDS`] shards, from a hash of `pk` |
//! | GSI `by_source`, sort | `gsi1sk` | S | `received_at_ms` / `at_ms` zero-padded to 15 digits, `#`, `pk` |
//! | GSI `by_ref`, partition | `gsi2pk` | S | `obj#<object id>` on a record whose event names one (a payment id), `key#<dedupe key>` on a trail entry about a key |
//! | GSI `by_ref`, sort | `gsi1sk` | S | as for `by_source` |
//! | TTL attribute | `ttl` | N | epoch **seconds** = `expires_at_ms / 1000`, on completed records and every trail entry |
//!
//! `by_source` projects ALL attributes, so `list` by source is one Query per shard.
//! `by_ref` projects the keys only: its key attributes are written once per record (the
//! take sets the same values again), so it costs one index write per event, and a lookup
//! reads the few items it names. Its partitions are one payment or one key each, so no
//! source can make one hot. Billing is on demand.
//!
//! Why shards: a GSI partition takes about 1,000 write units a second, and its sort key here
//! is a time, so DynamoDB cannot split a hot source's partition by key range (every write
//! lands at its end). Keyed by the source alone, one busy source would throttle the index,
//! and with it the table's writes, at a few hundred events a second. Spread over the shards
//! (an index write per write of the record: `begin`, `complete`, and with several targets one
//! mark per target but the last) one source of one target can take `SOURCE_INDEX_SHARDS * 500`
//! events a second before the index binds (docs/scale.md).
//! Items written before the shards (`gsi1pk` = the bare source) are still listed.
//! DynamoDB deletes expired items lazily (up to about two days late), so `begin` compares
//! `expires_at_ms` itself and never trusts that an expired item is gone.
//!
//! A dedupe record has one attribute per [`DedupeRecord`] field: `key`, `source`, `status`
//! (`IN_PROGRESS`|`COMPLETED`|`FAILED`), `body_sha256`, `provider_event_id`?, `event_type`?,
//! `via`, `received_at_ms` N, `updated_at_ms` N, `lease_until_ms` N, `expires_at_ms`? N,
//! `attempts` N, `last_error`?, `dead` BOOL, `summary`? (JSON [`EventSummary`]), `delivered`? SS
//! (the targets that accepted the event this cycle; a string set, so marking one is an `ADD`
//! that `begin`'s update leaves alone). A trail entry has `id`, `at_ms` N, `source`,
//! `status` (a [`TrailStatus`]), `dedupe_key`?, `provider_event_id`?, `event_type`?,
//! `reason`?, `source_ip`?, `expires_at_ms` N and its `ttl`. (`?` = absent when `None`.) An
//! entry written before entries expired has neither and reads as never expiring.
//!
//! The stale-version guard keeps one item per entity: `pk` = `entity#<source>#<entity>`,
//! `v` N (the last applied version), `updated_at_ms` N; it has no index attributes, so no
//! listing reads it.
//!
//! Items with any other `pk` prefix (other components may share the table) are ignored by
//! `list`.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, IndexStatus,
    KeySchemaElement, KeyType, Projection, ProjectionType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

mod checks;
mod poll;

use crate::ports::{
    BeginOutcome, BeginRequest, DedupeRecord, DedupeStatus, EventSummary, Ledger, LedgerError,
    Lookup, TrailEntry, TrailQuery, TrailRow, TrailStatus, LOOKUP_LIMIT,
};

/// The partition key attribute (the table has no sort key).
pub(crate) const KEY_ATTRIBUTE: &str = "pk";
/// The global secondary index that lists a source's rows newest first.
pub(crate) const SOURCE_INDEX: &str = "by_source";
pub(crate) const SOURCE_INDEX_PARTITION_KEY: &str = "gsi1pk";
/// How many index partitions one source's rows are spread over. Reads of a source fan out
/// over all of them (operators' listings only, never the event path).
pub const SOURCE_INDEX_SHARDS: u32 = 64;
pub(crate) const SOURCE_INDEX_SORT_KEY: &str = "gsi1sk";
/// The global secondary index that finds a payment's records and a key's trail entries.
pub(crate) const REF_INDEX: &str = "by_ref";
pub(crate) const REF_INDEX_PARTITION_KEY: &str = "gsi2pk";
/// The TTL attribute, in epoch seconds.
pub const TTL_ATTRIBUTE: &str = "ttl";

const DEDUPE_PREFIX: &str = "dedupe#";
const TRAIL_PREFIX: &str = "trail#";
const ENTITY_PREFIX: &str = "entity#";

/// How long [`create_table`] waits for the table and its index to become ACTIVE.
const CREATE_TIMEOUT: Duration = Duration::from_secs(300);

type Item = HashMap<String, AttributeValue>;

impl DynamoLedger {
    /// One item of the table by its `pk`, read strongly consistent: dedupe records, poll
    /// state and checks all live in this table and are read the same way.
    async fn read_item(
        &self,
        pk: &str,
    ) -> Result<
        Option<Item>,
        aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::get_item::GetItemError>,
    > {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(pk))
            .consistent_read(true)
            .send()
            .await?;
        Ok(out.item)
    }
}

#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn from_conf(config: &SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Create the ledger table (schema in the module docs), wait until it and its index are
/// ACTIVE, then turn on TTL (DynamoDB refuses `UpdateTimeToLive` on a table still CREATING).
pub async fn create_table(client: &Client, name: &str) -> Result<(), LedgerError> {
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute(KEY_ATTRIBUTE)?)
        .attribute_definitions(string_attribute(SOURCE_INDEX_PARTITION_KEY)?)
        .attribute_definitions(string_attribute(SOURCE_INDEX_SORT_KEY)?)
        .attribute_definitions(string_attribute(REF_INDEX_PARTITION_KEY)?)
        .key_schema(key_element(KEY_ATTRIBUTE, KeyType::Hash)?)
        .global_secondary_indexes(by_source_index()?)
        .global_secondary_indexes(by_ref_index()?)
        .send()
        .await
        .map_err(|e| backend("CreateTable", e))?;
    wait_until_active(client, name).await?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(|e| backend("UpdateTimeToLive", e))?,
        )
        .send()
        .await
        .map_err(|e| backend("UpdateTimeToLive", e))?;
    Ok(())
}

fn string_attribute(attribute: &str) -> Result<AttributeDefinition, LedgerError> {
    AttributeDefinition::builder()
        .attribute_name(attribute)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| backend("CreateTable", e))
}

fn key_element(attribute: &str, key_type: KeyType) -> Result<KeySchemaElement, LedgerError> {
    KeySchemaElement::builder()
        .attribute_name(attribute)
        .key_type(key_type)
        .build()
        .map_err(|e| backend("CreateTable", e))
}

/// [`SOURCE_INDEX`]: a source's rows by time, every attribute projected.
fn by_source_index() -> Result<GlobalSecondaryIndex, LedgerError> {
    GlobalSecondaryIndex::builder()
        .index_name(SOURCE_INDEX)
        .key_schema(key_element(SOURCE_INDEX_PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key_element(SOURCE_INDEX_SORT_KEY, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| backend("CreateTable", e))
}

/// [`REF_INDEX`]: the keys of the rows that name an object or a dedupe key.
fn by_ref_index() -> Result<GlobalSecondaryIndex, LedgerError> {
    GlobalSecondaryIndex::builder()
        .index_name(REF_INDEX)
        .key_schema(key_element(REF_INDEX_PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key_element(SOURCE_INDEX_SORT_KEY, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::KeysOnly)
                .build(),
        )
        .build()
        .map_err(|e| backend("CreateTable", e))
}

/// The `by_ref` partition of a lookup.
fn ref_partition(by: Lookup<'_>) -> String {
    match by {
        Lookup::Object(id) => format!("obj#{id}"),
        Lookup::Entries(key) => format!("key#{key}"),
    }
}

/// Awaiting a condition with a bound: moto answers ACTIVE at once, AWS in seconds.
async fn wait_until_active(client: &Client, name: &str) -> Result<(), LedgerError> {
    let deadline = tokio::time::Instant::now() + CREATE_TIMEOUT;
    loop {
        let described = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| backend("DescribeTable", e))?;
        let active = described.table().is_some_and(|t| {
            t.table_status() == Some(&TableStatus::Active)
                && t.global_secondary_indexes()
                    .iter()
                    .all(|i| i.index_status().is_none_or(|s| *s == IndexStatus::Active))
        });
        if active {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(LedgerError::Backend(format!(
                "DynamoDB table {name} not ACTIVE after {} s",
                CREATE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn backend(operation: &str, err: impl std::error::Error) -> LedgerError {
    LedgerError::Backend(format!(
        "DynamoDB {operation}: {}",
        DisplayErrorContext(err)
    ))
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Source ids hold no `#`, so the source and the entity split unambiguously.
fn entity_pk(source: &str, entity: &str) -> String {
    format!("{ENTITY_PREFIX}{source}#{entity}")
}

fn dedupe_pk(key: &str) -> String {
    format!("{DEDUPE_PREFIX}{key}")
}

/// The index partition of the row `pk` of `source`: a stable hash (FNV-1a, the same in every
/// build and version, unlike std's hasher) of the key picks the shard.
fn source_shard(source: &str, pk: &str) -> String {
    let hash = pk.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{source}#{:02}", hash % SOURCE_INDEX_SHARDS)
}

/// Every index partition a source's rows can be in: its shards, and the bare source of rows
/// written before there were shards.
fn source_partitions(source: &str) -> impl Iterator<Item = String> + '_ {
    (0..SOURCE_INDEX_SHARDS)
        .map(move |shard| format!("{source}#{shard:02}"))
        .chain(std::iter::once(source.to_owned()))
}

/// The GSI sort key: time first (fixed width so strings sort as numbers), then `pk` so two
/// rows of the same millisecond never collide and sort the same way on every read.
fn source_sort_key(at_ms: i64, pk: &str) -> String {
    format!("{:015}#{pk}", at_ms.max(0))
}

/// `begin`'s first write: the key is free, or — for the same body — failed or held under a
/// lapsed lease. With the expiry disjunct of the port's contract, see [`BEGIN_EXPIRED`].
const BEGIN_CONDITION: &str = "attribute_not_exists(pk) OR \
     (body_sha256 = :h AND (#s = :failed OR (#s = :inprog AND lease_until_ms < :now)))";

/// `begin`'s second write, only when the first found the record expired: the rest of the
/// port's condition. A separate write because it must also reset what the first keeps
/// (`attempts`, `delivered`: a new event under an old key starts a new cycle), and an update
/// expression cannot branch on which disjunct held. Costs a second call only for an event
/// that comes back after its dedupe window.
const BEGIN_EXPIRED: &str = "expires_at_ms < :now";

#[async_trait]
impl Ledger for DynamoLedger {
    /// One UpdateItem (an UpdateItem rather than a PutItem so `attempts` can count up and
    /// `delivered` survive in the same write). On a failed condition the holding record comes
    /// back inside the ConditionalCheckFailedException (`ReturnValuesOnConditionCheckFailure=
    /// ALL_OLD`): no second read, and a failed conditional write costs one write unit like
    /// any other. An expired holder is taken by a second conditional write ([`BEGIN_EXPIRED`]).
    async fn begin(&self, req: &BeginRequest) -> Result<BeginOutcome, LedgerError> {
        let pk = dedupe_pk(&req.key);
        match self.take(req, &pk, false).await? {
            Taken::Acquired(outcome) => Ok(outcome),
            Taken::Held(holder) if holder.expires_at_ms.is_some_and(|at| at < req.now_ms) => {
                match self.take(req, &pk, true).await? {
                    Taken::Acquired(outcome) => Ok(outcome),
                    // Someone re-took it between the two writes.
                    Taken::Held(holder) => Ok(BeginOutcome::Held(holder)),
                }
            }
            Taken::Held(holder) => Ok(BeginOutcome::Held(holder)),
        }
    }

    async fn complete(
        &self,
        key: &str,
        now_ms: i64,
        expires_at_ms: i64,
        delivered: &BTreeSet<String>,
    ) -> Result<(), LedgerError> {
        let mut values = HashMap::from([
            (":completed".to_owned(), s(DedupeStatus::Completed.as_str())),
            (":now".to_owned(), n(now_ms)),
            (":exp".to_owned(), n(expires_at_ms)),
            // TTL is in seconds; the item may outlive `expires_at_ms` by < 1 s plus
            // DynamoDB's lazy deletion, which is why readers compare `expires_at_ms`.
            (":ttl".to_owned(), n(expires_at_ms.div_euclid(1000))),
        ]);
        let mut expression =
            "SET #s = :completed, updated_at_ms = :now, expires_at_ms = :exp, #ttl = :ttl"
                .to_owned();
        // An empty string set is not a value DynamoDB accepts: nothing to add then.
        if !delivered.is_empty() {
            expression.push_str(" ADD delivered :delivered");
            values.insert(
                ":delivered".to_owned(),
                AttributeValue::Ss(delivered.iter().cloned().collect()),
            );
        }
        self.update_existing(
            key,
            &expression,
            &[("#s", "status"), ("#ttl", TTL_ATTRIBUTE)],
            values,
        )
        .await
    }

    async fn mark_delivered(
        &self,
        key: &str,
        target_id: &str,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let pk = dedupe_pk(key);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(&pk))
            .update_expression("ADD delivered :target SET updated_at_ms = :now")
            // A missing item fails this too (its status is no string to compare).
            .condition_expression("#s = :inprog")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":target", AttributeValue::Ss(vec![target_id.to_owned()]))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":inprog", s(DedupeStatus::InProgress.as_str()))
            // Tells "not held" from "not found" at no extra cost.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Err(match failed.item() {
                        Some(_) => LedgerError::NotHeld(key.to_owned()),
                        None => LedgerError::NotFound(key.to_owned()),
                    })
                }
                _ => Err(backend("UpdateItem", err)),
            },
        }
    }

    async fn fail(
        &self,
        key: &str,
        now_ms: i64,
        error: &str,
        dead: bool,
    ) -> Result<(), LedgerError> {
        let values = HashMap::from([
            (":failed".to_owned(), s(DedupeStatus::Failed.as_str())),
            (":now".to_owned(), n(now_ms)),
            (":err".to_owned(), s(error)),
            (":dead".to_owned(), AttributeValue::Bool(dead)),
        ]);
        self.update_existing(
            key,
            "SET #s = :failed, updated_at_ms = :now, last_error = :err, dead = :dead",
            &[("#s", "status")],
            values,
        )
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<DedupeRecord>, LedgerError> {
        let pk = dedupe_pk(key);
        let item = self
            .read_item(&pk)
            .await
            .map_err(|e| backend("GetItem", e))?;
        item.map(|item| decode_record(&pk, &item)).transpose()
    }

    async fn append(&self, entry: &TrailEntry) -> Result<(), LedgerError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(entry_item(entry)))
            .send()
            .await
            .map_err(|e| backend("PutItem", e))?;
        Ok(())
    }

    /// A PutItem under `attribute_not_exists(pk)`. A refused one stores nothing but is billed
    /// like any write (a write unit per KB of the item).
    async fn append_new(&self, entry: &TrailEntry) -> Result<bool, LedgerError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(entry_item(entry)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) => match err.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => Ok(false),
                _ => Err(backend("PutItem", err)),
            },
        }
    }

    async fn applied_version(
        &self,
        source: &str,
        entity: &str,
    ) -> Result<Option<i64>, LedgerError> {
        let pk = entity_pk(source, entity);
        let item = self
            .read_item(&pk)
            .await
            .map_err(|e| backend("GetItem", e))?;
        item.map(|item| Fields::new(&pk, &item).i64("v"))
            .transpose()
    }

    async fn record_version(
        &self,
        source: &str,
        entity: &str,
        version: i64,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(entity_pk(source, entity)))
            .update_expression("SET v = :new, updated_at_ms = :now")
            .condition_expression("attribute_not_exists(v) OR v < :new")
            .expression_attribute_values(":new", n(version))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) => match err.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => Ok(false),
                _ => Err(backend("UpdateItem", err)),
            },
        }
    }

    /// With a source: one Query per partition of the `by_source` index (its shards, at once),
    /// each newest first and at most `limit` rows, merged. Without one: a full Scan sorted
    /// here — for operators (`inlet events`), never on the event path. A `limit` of 0 means
    /// no limit.
    async fn list(&self, query: &TrailQuery) -> Result<Vec<TrailRow>, LedgerError> {
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let mut rows: Vec<(String, TrailRow)> = Vec::new();
        let mut start: Option<Item> = None;
        match &query.source {
            Some(source) => {
                let partitions = source_partitions(source)
                    .map(|partition| self.list_partition(partition, query, limit));
                for part in futures_util::future::try_join_all(partitions).await? {
                    rows.extend(part);
                }
                sort_newest_first(&mut rows);
            }
            None => {
                loop {
                    let out = self
                        .client
                        .scan()
                        .table_name(&self.table)
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| backend("Scan", e))?;
                    for item in out.items() {
                        if let Some(row) = decode_row(item)?
                            .filter(|r| !expired(r, query.now_ms) && query.in_window(&r.1))
                        {
                            rows.push(row);
                        }
                    }
                    start = out.last_evaluated_key;
                    if start.is_none() {
                        break;
                    }
                }
                sort_newest_first(&mut rows);
            }
        }
        rows.truncate(limit);
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    /// One Query of `by_ref` (keys only, newest first), then each item it names read at once.
    async fn lookup(&self, by: Lookup<'_>, now_ms: i64) -> Result<Vec<TrailRow>, LedgerError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(REF_INDEX)
            .key_condition_expression("gsi2pk = :ref")
            .expression_attribute_values(":ref", s(ref_partition(by)))
            .scan_index_forward(false)
            .limit(LOOKUP_LIMIT as i32)
            .send()
            .await
            .map_err(|e| backend("Query", e))?;
        let pks: Vec<String> = out
            .items()
            .iter()
            .filter_map(|item| match item.get(KEY_ATTRIBUTE) {
                Some(AttributeValue::S(pk)) => Some(pk.clone()),
                _ => None,
            })
            .collect();
        let items = futures_util::future::try_join_all(pks.iter().map(|pk| self.read_item(pk)))
            .await
            .map_err(|e| backend("GetItem", e))?;
        let mut rows = Vec::new();
        // An item gone between the index and the read (TTL) is simply not there.
        for item in items.into_iter().flatten() {
            if let Some(row) = decode_row(&item)?.filter(|r| !expired(r, now_ms)) {
                rows.push(row);
            }
        }
        sort_newest_first(&mut rows);
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }
}

/// The index's order: time, then pk, both descending.
fn sort_newest_first(rows: &mut [(String, TrailRow)]) {
    rows.sort_by(|(pk_a, a), (pk_b, b)| b.at_ms().cmp(&a.at_ms()).then_with(|| pk_b.cmp(pk_a)));
}

impl DynamoLedger {
    /// The newest `limit` unexpired rows of one index partition (paged only past 1 MB).
    async fn list_partition(
        &self,
        partition: String,
        query: &TrailQuery,
        limit: usize,
    ) -> Result<Vec<(String, TrailRow)>, LedgerError> {
        let mut rows = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            // Limit bounds the items read, which with a key condition only are the rows
            // (less the expired entries, which the next page makes up for).
            let page =
                (query.limit > 0).then(|| (limit - rows.len()).min(i32::MAX as usize) as i32);
            // The window as a range of the sort key (time first, zero-padded): only that
            // stretch of the partition is read. `$` sorts after the `#` that follows the time.
            let (lo, hi) = (
                format!("{:015}", query.since_ms.unwrap_or(0).max(0)),
                format!("{:015}$", query.until_ms.unwrap_or(i64::MAX / 1000).max(0)),
            );
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(SOURCE_INDEX)
                .key_condition_expression("gsi1pk = :partition AND gsi1sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":partition", s(&partition))
                .expression_attribute_values(":lo", s(lo))
                .expression_attribute_values(":hi", s(hi))
                .scan_index_forward(false)
                .set_limit(page)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend("Query", e))?;
            for item in out.items() {
                if let Some(row) = decode_row(item)?.filter(|r| !expired(r, query.now_ms)) {
                    rows.push(row);
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() || rows.len() >= limit {
                return Ok(rows);
            }
        }
    }
}

/// A trail entry as its item (the schema in the module docs).
fn entry_item(entry: &TrailEntry) -> Item {
    let pk = format!("{TRAIL_PREFIX}{}", entry.id);
    let shard = source_shard(&entry.source, &pk);
    let mut item: Item = HashMap::from([
        (
            SOURCE_INDEX_SORT_KEY.to_owned(),
            s(source_sort_key(entry.at_ms, &pk)),
        ),
        (KEY_ATTRIBUTE.to_owned(), s(pk)),
        ("id".to_owned(), s(&entry.id)),
        ("at_ms".to_owned(), n(entry.at_ms)),
        ("source".to_owned(), s(&entry.source)),
        ("status".to_owned(), s(entry.status.as_str())),
        (SOURCE_INDEX_PARTITION_KEY.to_owned(), s(shard)),
        ("expires_at_ms".to_owned(), n(entry.expires_at_ms)),
        // Seconds: TTL deletes the item after the second of `expires_at_ms` has passed
        // (lazily, up to days later), so `list` compares `expires_at_ms` itself.
        (
            TTL_ATTRIBUTE.to_owned(),
            n(entry.expires_at_ms.div_euclid(1000)),
        ),
    ]);
    let optional = [
        ("dedupe_key", &entry.dedupe_key),
        ("provider_event_id", &entry.provider_event_id),
        ("event_type", &entry.event_type),
        ("reason", &entry.reason),
        ("source_ip", &entry.source_ip),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            item.insert(name.to_owned(), s(v));
        }
    }
    if let Some(key) = &entry.dedupe_key {
        item.insert(
            REF_INDEX_PARTITION_KEY.to_owned(),
            s(ref_partition(Lookup::Entries(key))),
        );
    }
    item
}

/// What one of `begin`'s conditional writes found.
enum Taken {
    Acquired(BeginOutcome),
    Held(DedupeRecord),
}

/// The attribute names `begin`'s expressions use by placeholder (reserved words, or `ttl`).
const BEGIN_NAMES: [(&str, &str); 5] = [
    ("#key", "key"),
    ("#source", "source"),
    ("#via", "via"),
    ("#s", "status"),
    ("#ttl", TTL_ATTRIBUTE),
];

/// An update expression as it is built: what it sets, what it removes, and its values.
struct Update {
    set: Vec<&'static str>,
    remove: Vec<&'static str>,
    values: Item,
}

impl Update {
    /// `assignment` (`name = placeholder`) with `value`, or remove `name` when there is none.
    fn set_or_remove(
        &mut self,
        name: &'static str,
        assignment: &'static str,
        placeholder: &str,
        value: Option<&str>,
    ) {
        match value {
            Some(v) => {
                self.set.push(assignment);
                self.values.insert(placeholder.to_owned(), s(v));
            }
            None => self.remove.push(name),
        }
    }

    fn expression(&self) -> String {
        format!(
            "SET {} REMOVE {}",
            self.set.join(", "),
            self.remove.join(", ")
        )
    }
}

/// What every take of `pk` writes: the record in progress under a new lease, not dead, on
/// the source index.
fn taken_record(req: &BeginRequest, pk: &str) -> Update {
    Update {
        set: vec![
            "#key = :key",
            "#source = :source",
            "body_sha256 = :h",
            "#via = :via",
            "received_at_ms = :received",
            "updated_at_ms = :now",
            "lease_until_ms = :lease",
            "#s = :inprog",
            "dead = :false",
            "gsi1pk = :shard",
            "gsi1sk = :gsi1sk",
        ],
        remove: vec!["expires_at_ms", "last_error", "#ttl"],
        values: HashMap::from([
            (":key".to_owned(), s(&req.key)),
            (":source".to_owned(), s(&req.source)),
            (":h".to_owned(), s(&req.body_sha256)),
            (":via".to_owned(), s(&req.via)),
            (":received".to_owned(), n(req.received_at_ms)),
            (":now".to_owned(), n(req.now_ms)),
            (":lease".to_owned(), n(req.lease_until_ms)),
            (":inprog".to_owned(), s(DedupeStatus::InProgress.as_str())),
            (":false".to_owned(), AttributeValue::Bool(false)),
            (":one".to_owned(), n(1)),
            (":shard".to_owned(), s(source_shard(&req.source, pk))),
            (
                ":gsi1sk".to_owned(),
                s(source_sort_key(req.received_at_ms, pk)),
            ),
        ]),
    }
}

/// The record a take of `pk` writes, and the condition it is written under (see
/// `DynamoLedger::take`).
fn begin_update(req: &BeginRequest, pk: &str, expired: bool) -> (Update, &'static str) {
    let mut update = taken_record(req, pk);
    // DynamoDB refuses a value the expressions do not use: `:zero` and `:failed` belong to
    // the first write only.
    let condition = if expired {
        update.set.push("attempts = :one");
        update.remove.push("delivered");
        BEGIN_EXPIRED
    } else {
        update
            .set
            .push("attempts = if_not_exists(attempts, :zero) + :one");
        update.values.insert(":zero".to_owned(), n(0));
        update
            .values
            .insert(":failed".to_owned(), s(DedupeStatus::Failed.as_str()));
        BEGIN_CONDITION
    };
    let summary = req.summary.to_json();
    update.set_or_remove(
        "provider_event_id",
        "provider_event_id = :peid",
        ":peid",
        req.provider_event_id.as_deref(),
    );
    update.set_or_remove(
        "event_type",
        "event_type = :etype",
        ":etype",
        req.event_type.as_deref(),
    );
    update.set_or_remove(
        "summary",
        "summary = :summary",
        ":summary",
        summary.as_deref(),
    );
    let reference = req
        .summary
        .object_id
        .as_deref()
        .map(|id| ref_partition(Lookup::Object(id)));
    update.set_or_remove(
        REF_INDEX_PARTITION_KEY,
        "gsi2pk = :ref",
        ":ref",
        reference.as_deref(),
    );
    (update, condition)
}

impl DynamoLedger {
    /// One of `begin`'s writes: take the key under [`BEGIN_CONDITION`], or, with `expired`,
    /// under [`BEGIN_EXPIRED`] starting a new cycle (attempt 1, nothing delivered).
    async fn take(
        &self,
        req: &BeginRequest,
        pk: &str,
        expired: bool,
    ) -> Result<Taken, LedgerError> {
        let (update, condition) = begin_update(req, pk, expired);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(pk))
            .update_expression(update.expression())
            .condition_expression(condition)
            .set_expression_attribute_values(Some(update.values))
            // The whole item as written: `attempts` as counted, `delivered` as kept.
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (placeholder, name) in BEGIN_NAMES {
            request = request.expression_attribute_names(placeholder, name);
        }
        match request.send().await {
            Ok(out) => {
                let attributes = out.attributes.unwrap_or_default();
                let f = Fields::new(pk, &attributes);
                Ok(Taken::Acquired(BeginOutcome::Acquired {
                    attempts: f.u32("attempts")?,
                    delivered: f.string_set("delivered")?,
                }))
            }
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => match failed.item() {
                    Some(item) => Ok(Taken::Held(decode_record(pk, item)?)),
                    None => Err(LedgerError::Backend(format!(
                        "DynamoDB UpdateItem: condition failed on {pk} but the old item was not returned \
                         (the endpoint ignores ReturnValuesOnConditionCheckFailure)"
                    ))),
                },
                _ => Err(backend("UpdateItem", err)),
            },
        }
    }

    /// An UpdateItem on an existing dedupe record; a missing record is `NotFound`.
    async fn update_existing(
        &self,
        key: &str,
        expression: &str,
        names: &[(&str, &str)],
        values: Item,
    ) -> Result<(), LedgerError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY_ATTRIBUTE, s(dedupe_pk(key)))
            .update_expression(expression)
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_values(Some(values));
        for (placeholder, name) in names {
            request = request.expression_attribute_names(*placeholder, *name);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => {
                    Err(LedgerError::NotFound(key.to_owned()))
                }
                _ => Err(backend("UpdateItem", err)),
            },
        }
    }
}

/// Typed, defensive access to an item's attributes: a missing or ill-typed attribute is
/// `Corrupt`, naming the item and the attribute.
struct Fields<'a> {
    pk: &'a str,
    item: &'a Item,
}

impl<'a> Fields<'a> {
    fn new(pk: &'a str, item: &'a Item) -> Self {
        Self { pk, item }
    }

    fn corrupt(&self, attribute: &str, expected: &str) -> LedgerError {
        LedgerError::Corrupt(format!(
            "{}: attribute {attribute} is missing or not {expected}",
            self.pk
        ))
    }

    fn string(&self, attribute: &str) -> Result<String, LedgerError> {
        match self.item.get(attribute) {
            Some(AttributeValue::S(v)) => Ok(v.clone()),
            _ => Err(self.corrupt(attribute, "a string")),
        }
    }

    /// Absent (or NULL) is `None`; present with another type is corrupt.
    fn optional_string(&self, attribute: &str) -> Result<Option<String>, LedgerError> {
        match self.item.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.corrupt(attribute, "a string")),
        }
    }

    fn i64(&self, attribute: &str) -> Result<i64, LedgerError> {
        match self.item.get(attribute) {
            Some(AttributeValue::N(v)) => {
                v.parse().map_err(|_| self.corrupt(attribute, "an integer"))
            }
            _ => Err(self.corrupt(attribute, "a number")),
        }
    }

    fn optional_i64(&self, attribute: &str) -> Result<Option<i64>, LedgerError> {
        match self.item.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(_) => self.i64(attribute).map(Some),
        }
    }

    fn u32(&self, attribute: &str) -> Result<u32, LedgerError> {
        u32::try_from(self.i64(attribute)?).map_err(|_| self.corrupt(attribute, "a count"))
    }

    /// Absent is empty (DynamoDB stores no empty set); present with another type is corrupt.
    fn string_set(&self, attribute: &str) -> Result<BTreeSet<String>, LedgerError> {
        match self.item.get(attribute) {
            None | Some(AttributeValue::Null(_)) => Ok(BTreeSet::new()),
            Some(AttributeValue::Ss(v)) => Ok(v.iter().cloned().collect()),
            Some(_) => Err(self.corrupt(attribute, "a string set")),
        }
    }

    fn bool(&self, attribute: &str) -> Result<bool, LedgerError> {
        match self.item.get(attribute) {
            Some(AttributeValue::Bool(v)) => Ok(*v),
            _ => Err(self.corrupt(attribute, "a boolean")),
        }
    }
}

fn decode_record(pk: &str, item: &Item) -> Result<DedupeRecord, LedgerError> {
    let f = Fields::new(pk, item);
    let status = f.string("status")?;
    Ok(DedupeRecord {
        key: f.string("key")?,
        source: f.string("source")?,
        status: DedupeStatus::parse(&status)
            .ok_or_else(|| f.corrupt("status", "a dedupe status"))?,
        body_sha256: f.string("body_sha256")?,
        provider_event_id: f.optional_string("provider_event_id")?,
        event_type: f.optional_string("event_type")?,
        via: f.string("via")?,
        received_at_ms: f.i64("received_at_ms")?,
        updated_at_ms: f.i64("updated_at_ms")?,
        lease_until_ms: f.i64("lease_until_ms")?,
        expires_at_ms: f.optional_i64("expires_at_ms")?,
        attempts: f.u32("attempts")?,
        last_error: f.optional_string("last_error")?,
        dead: f.bool("dead")?,
        summary: EventSummary::from_json(f.optional_string("summary")?.as_deref()),
        delivered: f.string_set("delivered")?,
    })
}

fn decode_entry(pk: &str, item: &Item) -> Result<TrailEntry, LedgerError> {
    let f = Fields::new(pk, item);
    let status = f.string("status")?;
    Ok(TrailEntry {
        id: f.string("id")?,
        at_ms: f.i64("at_ms")?,
        source: f.string("source")?,
        status: TrailStatus::parse(&status).ok_or_else(|| f.corrupt("status", "a trail status"))?,
        dedupe_key: f.optional_string("dedupe_key")?,
        provider_event_id: f.optional_string("provider_event_id")?,
        event_type: f.optional_string("event_type")?,
        reason: f.optional_string("reason")?,
        source_ip: f.optional_string("source_ip")?,
        expires_at_ms: f.optional_i64("expires_at_ms")?.unwrap_or(i64::MAX),
    })
}

/// A trail entry TTL has not deleted yet although it expired before `now_ms`.
fn expired((_, row): &(String, TrailRow), now_ms: i64) -> bool {
    matches!(row, TrailRow::Entry(e) if e.expires_at_ms < now_ms)
}

/// A listed item as a row with its `pk` (for ordering), or `None` for items of other kinds.
fn decode_row(item: &Item) -> Result<Option<(String, TrailRow)>, LedgerError> {
    let pk = match item.get(KEY_ATTRIBUTE) {
        Some(AttributeValue::S(pk)) => pk.clone(),
        _ => {
            return Err(LedgerError::Corrupt(format!(
                "item without a string {KEY_ATTRIBUTE}"
            )))
        }
    };
    let row = if pk.starts_with(DEDUPE_PREFIX) {
        TrailRow::Record(decode_record(&pk, item)?)
    } else if pk.starts_with(TRAIL_PREFIX) {
        TrailRow::Entry(decode_entry(&pk, item)?)
    } else {
        return Ok(None);
    };
    Ok(Some((pk, row)))
}
