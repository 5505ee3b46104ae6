//! What one busy source costs the ledger's `by_source` index, against moto: its rows are
//! spread over the index's shards (so no single index partition takes a source's whole
//! write rate), and listing a source still returns its newest rows in order, rows written
//! before the shards included.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use inlet::adapters::aws::dynamodb::SOURCE_INDEX_SHARDS;
use inlet::ports::{Ledger, TrailQuery};

use crate::conformance::{listed, trail_entry};
use crate::support;

const T0: i64 = 1_767_225_600_000;

#[tokio::test]
async fn one_source_is_spread_over_the_index_shards_and_still_listed_newest_first() {
    const ROWS: i64 = 320;
    let ledger = support::aws::ledger().await;
    for i in 0..ROWS {
        ledger
            .append(&trail_entry(&format!("hot-{i}"), "hot", T0 + i * 10))
            .await
            .expect("append");
    }
    for i in 0..3 {
        ledger
            .append(&trail_entry(&format!("cold-{i}"), "cold", T0 + i))
            .await
            .expect("append");
    }
    // A row written before the shards: its index partition is the bare source.
    let mut legacy: std::collections::HashMap<String, AttributeValue> = ledger
        .client()
        .get_item()
        .table_name(ledger.table())
        .key("pk", AttributeValue::S("trail#hot-0".into()))
        .send()
        .await
        .expect("get")
        .item
        .expect("stored");
    let legacy_at = T0 + ROWS * 10 + 5;
    legacy.insert("pk".into(), AttributeValue::S("trail#hot-legacy".into()));
    legacy.insert("id".into(), AttributeValue::S("hot-legacy".into()));
    legacy.insert("at_ms".into(), AttributeValue::N(legacy_at.to_string()));
    legacy.insert("gsi1pk".into(), AttributeValue::S("hot".into()));
    legacy.insert(
        "gsi1sk".into(),
        AttributeValue::S(format!("{legacy_at:015}#trail#hot-legacy")),
    );
    ledger
        .client()
        .put_item()
        .table_name(ledger.table())
        .set_item(Some(legacy))
        .send()
        .await
        .expect("put the legacy row");

    // Where the rows went: every shard of the source, and only its shards.
    let items = ledger
        .client()
        .scan()
        .table_name(ledger.table())
        .send()
        .await
        .expect("scan")
        .items
        .unwrap_or_default();
    let partitions: BTreeSet<String> = items
        .iter()
        .filter_map(|i| match (i.get("source"), i.get("gsi1pk")) {
            (Some(AttributeValue::S(s)), Some(AttributeValue::S(p))) if s == "hot" => {
                Some(p.clone())
            }
            _ => None,
        })
        .collect();
    let shards: BTreeSet<&String> = partitions
        .iter()
        .filter(|p| p.starts_with("hot#"))
        .collect();
    assert_eq!(shards.len(), SOURCE_INDEX_SHARDS as usize, "{partitions:?}");
    assert_eq!(partitions.len(), shards.len() + 1, "{partitions:?}");

    // Newest first across the shards, limited, the legacy row first (it is the newest).
    let entries = |ids: Vec<String>| ids.into_iter().map(|id| ("entry", id)).collect::<Vec<_>>();
    let want: Vec<String> = std::iter::once("hot-legacy".to_string())
        .chain((ROWS - 24..ROWS).rev().map(|i| format!("hot-{i}")))
        .collect();
    assert_eq!(listed(&ledger, Some("hot"), 25, T0).await, entries(want));

    let all = ledger
        .list(&TrailQuery {
            source: Some("hot".into()),
            limit: 0,
            now_ms: T0,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len() as i64, ROWS + 1);
    assert!(all.windows(2).all(|w| w[0].at_ms() >= w[1].at_ms()));
    assert_eq!(
        listed(&ledger, Some("cold"), 0, T0).await,
        entries(vec!["cold-2".into(), "cold-1".into(), "cold-0".into()])
    );
}

/// An attribute value's size by DynamoDB's published rules ("DynamoDB item sizes and
/// formats"): strings and binaries by their bytes, numbers one byte per two significant
/// digits plus one, booleans and nulls one byte, lists and maps 3 bytes plus one per element.
fn attribute_size(v: &AttributeValue) -> usize {
    fn number(n: &str) -> usize {
        let digits = n
            .trim_start_matches('-')
            .replace('.', "")
            .trim_start_matches('0')
            .trim_end_matches('0')
            .len();
        digits.div_ceil(2) + 1
    }
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(items) => items.iter().map(String::len).sum(),
        AttributeValue::Ns(items) => items.iter().map(|n| number(n)).sum(),
        AttributeValue::L(items) => 3 + items.iter().map(|i| 1 + attribute_size(i)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + attribute_size(v))
                .sum::<usize>()
        }
        other => panic!("attribute type not modelled: {other:?}"),
    }
}

fn item_size(item: &std::collections::HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + attribute_size(v)).sum()
}

/// Write units of one write of an item (1 KB each, rounded up).
fn write_units(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

/// A PutEvents entry's size by EventBridge's rules: 14 bytes for `Time` when set, then the
/// UTF-8 bytes of `Source`, `DetailType`, `Detail` and each of `Resources`.
fn put_events_entry_size(entry: &serde_json::Value) -> usize {
    let text = |k: &str| entry[k].as_str().map_or(0, str::len);
    let time = if entry.get("Time").is_some() { 14 } else { 0 };
    let resources: usize = entry["Resources"].as_array().map_or(0, |r| {
        r.iter().filter_map(|x| x.as_str()).map(str::len).sum()
    });
    time + text("Source") + text("DetailType") + text("Detail") + resources
}

/// An SQS message's size: its body and its message attributes (name, type and value).
fn sqs_message_size(send: &serde_json::Value) -> usize {
    let body = send["MessageBody"].as_str().map_or(0, str::len);
    let attributes: usize = send["MessageAttributes"].as_object().map_or(0, |a| {
        a.iter()
            .map(|(name, v)| {
                name.len()
                    + v["DataType"].as_str().map_or(0, str::len)
                    + v["StringValue"].as_str().map_or(0, str::len)
            })
            .sum()
    });
    body + attributes
}

/// Quotas the table reads (AWS defaults; the adjustable ones say so in docs/scale.md).
const PARTITION_WRITE_UNITS: usize = 1_000;
const TABLE_WRITE_UNITS: usize = 40_000;
const PUT_EVENTS_PER_SECOND_US_EAST_1: usize = 10_000;
const HTTP_API_REQUESTS_PER_SECOND: usize = 10_000;
const SQS_MAX_MESSAGE: usize = 262_144;
/// The goal: no ceiling of Inlet's own design below this, for one source.
const ONE_SOURCE_GOAL: usize = 10_000;

/// The capacity table of docs/scale.md, from sizes measured on the wiring the template
/// deploys (`make capacity` prints it). Fails when a ceiling of Inlet's own design falls below
/// 10,000 events a second for one source.
#[tokio::test]
async fn capacity_table_from_measured_sizes() {
    let seen = crate::rehearsal::rehearse().await;
    let table = &seen.stack.resources["LedgerTable"].reference;

    let sends: Vec<&serde_json::Value> = seen
        .ingest
        .iter()
        .filter(|c| c.operation == "AmazonSQS.SendMessage")
        .map(|c| &c.body)
        .collect();
    assert_eq!(sends.len(), 1, "one send per webhook: {:?}", seen.ingest);
    let message = sqs_message_size(sends[0]);

    let table_writes = |calls: &[crate::support::recorder::Call]| {
        calls
            .iter()
            .filter(|c| c.operation.starts_with("DynamoDB_") && !c.operation.ends_with("GetItem"))
            .count()
    };
    // The writes of the event's own record, each of which rewrites its index entry.
    let record_writes = |calls: &[crate::support::recorder::Call]| {
        calls
            .iter()
            .filter(|c| {
                c.operation.starts_with("DynamoDB_")
                    && c.body["Key"]["pk"]["S"]
                        .as_str()
                        .is_some_and(|pk| pk.starts_with("dedupe#"))
            })
            .count()
    };
    // The rehearsal routes the event to two targets (the bus and an SQS queue).
    const TARGETS: usize = 2;
    let writes_per_event = table_writes(&seen.worker);
    let index_writes = record_writes(&seen.worker);
    assert_eq!(
        index_writes,
        TARGETS + 1,
        "begin, a mark per target but the last, complete: {:?}",
        seen.worker
    );
    let duplicate_writes = table_writes(&seen.duplicate);
    let entries: Vec<usize> = seen
        .worker
        .iter()
        .filter(|c| c.operation == "AWSEvents.PutEvents")
        .flat_map(|c| c.body["Entries"].as_array().cloned().unwrap_or_default())
        .map(|e| put_events_entry_size(&e))
        .collect();
    assert_eq!(entries.len(), 1, "{:?}", seen.worker);

    let items = aws_sdk_dynamodb::Client::new(&support::aws::sdk_config().await)
        .scan()
        .table_name(table)
        .send()
        .await
        .expect("scan")
        .items
        .unwrap_or_default();
    let size_of = |prefix: &str| {
        items
            .iter()
            .filter(
                |i| matches!(i.get("pk"), Some(AttributeValue::S(pk)) if pk.starts_with(prefix)),
            )
            .map(item_size)
            .max()
            .unwrap_or_else(|| panic!("no {prefix} item in {items:?}"))
    };
    let record = size_of("dedupe#");
    let trail = size_of("trail#");
    let record_units = write_units(record);

    // Every write of the record rewrites its index entry (the index projects all attributes).
    // With n targets the record is written n + 1 times.
    let index_for = |targets: usize| {
        SOURCE_INDEX_SHARDS as usize * PARTITION_WRITE_UNITS / ((targets + 1) * record_units)
    };
    let index_one_source = index_for(TARGETS);
    let index_unsharded = PARTITION_WRITE_UNITS / (2 * record_units);
    let table_all = TABLE_WRITE_UNITS / (writes_per_event * record_units);
    let put_events_all = PUT_EVENTS_PER_SECOND_US_EAST_1 * 10;

    let rows = [
        format!("| measured | envelope on the queue (one Stripe payment event) | {message} B | of {SQS_MAX_MESSAGE} B; 1 request per 64 KB chunk |"),
        format!("| measured | dedupe record, completed | {record} B | {record_units} write unit(s) per write |"),
        format!("| measured | trail entry (a duplicate) | {trail} B | {} write unit(s) |", write_units(trail)),
        format!("| measured | PutEvents entry | {} B | of 256 KB per request; 10 entries per request |", entries[0]),
        format!("| measured | ledger writes per event (2 targets) / per duplicate | {writes_per_event} / {duplicate_writes} | the record's own: {index_writes}, each an index write |"),
        format!("| design | `by_source` index, one source ({SOURCE_INDEX_SHARDS} shards × {PARTITION_WRITE_UNITS} WU/s) | **{} events/s** with 1 target, **{index_one_source}** with 2, {} with 5 | was {index_unsharded} events/s with 1 target on one partition |", index_for(1), index_for(5)),
        "| design | ledger table partitions, one source | none | the key is per event, so a source's writes spread over the whole table |".to_string(),
        format!("| quota | on-demand table throughput ({TABLE_WRITE_UNITS} WU/s, adjustable), all sources | {table_all} events/s | the index has its own {TABLE_WRITE_UNITS} |"),
        format!("| quota | PutEvents us-east-1 ({PUT_EVENTS_PER_SECOND_US_EAST_1} requests/s, adjustable), all sources | {put_events_all} events/s | one request per batch of 10 |"),
        format!("| quota | HTTP API ({HTTP_API_REQUESTS_PER_SECOND} requests/s per account and region, adjustable) | {HTTP_API_REQUESTS_PER_SECOND} webhooks/s | Function URLs have no request quota of their own |"),
    ];
    // Guards a deployment configures (parameters with a default): each must reach the goal.
    let params = seen.stack.template.get("Parameters").expect("Parameters");
    let bound = |name: &str, key: &str| -> Option<usize> {
        params
            .get(name)
            .and_then(|p| p.get(key))
            .and_then(|v| v.str())
            .and_then(|v| v.parse().ok())
    };
    // A batch of 10 takes about three DynamoDB round trips in the worker (begin, the target,
    // complete, each for the 10 records at once): 30 ms is a generous figure in one region.
    const BATCH_SECONDS: f64 = 0.030;
    let workers_needed = (ONE_SOURCE_GOAL as f64 * BATCH_SECONDS / 10.0).ceil() as usize;
    let worker_default = bound("WorkerMaxConcurrency", "Default").expect("a default");
    let worker_max = bound("WorkerMaxConcurrency", "MaxValue").expect("a maximum");
    let api_default = bound("ApiThrottlingRateLimit", "Default").expect("a default");
    let api_max = bound("ApiThrottlingRateLimit", "MaxValue");
    let rows = rows.into_iter().chain([
        format!(
            "| guard | `WorkerMaxConcurrency` (default {worker_default}, at most {worker_max}) | {} events/s by default | {workers_needed} for {ONE_SOURCE_GOAL}/s at {:.0} ms a batch of 10 |",
            (worker_default as f64 * 10.0 / BATCH_SECONDS) as usize,
            BATCH_SECONDS * 1000.0
        ),
        format!(
            "| guard | `ApiThrottlingRateLimit` (default {api_default}, {}) | {api_default} webhooks/s by default | {ONE_SOURCE_GOAL} for {ONE_SOURCE_GOAL}/s |",
            api_max.map_or("no maximum".to_string(), |m| format!("at most {m}"))
        ),
    ]);
    assert!(
        worker_max >= workers_needed,
        "WorkerMaxConcurrency cannot reach {workers_needed}"
    );
    assert!(api_max.is_none_or(|m| m >= ONE_SOURCE_GOAL));
    println!("| kind | what | figure | note |\n|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }

    assert!(message < SQS_MAX_MESSAGE);
    assert!(
        index_one_source >= ONE_SOURCE_GOAL,
        "the index takes {index_one_source} events/s of one source ({record} B records, {writes_per_event} writes each)"
    );
    assert!(
        index_for(5) >= ONE_SOURCE_GOAL,
        "five targets: {}",
        index_for(5)
    );
}
