//! What one busy source costs the ledger's `by_source` index, against moto: its rows are
//! spread over the index's shards (so no single index partition takes a source's whole
//! write rate), and listing a source still returns its newest rows in order, rows written
//! before the shards included.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use inlet::adapters::aws::dynamodb::SOURCE_INDEX_SHARDS;
use inlet::ports::{Ledger, TrailEntry, TrailQuery, TrailRow, TrailStatus};

use crate::support;

const T0: i64 = 1_767_225_600_000;
const DAY_MS: i64 = 86_400_000;

fn entry(id: String, source: &str, at_ms: i64) -> TrailEntry {
    TrailEntry {
        id,
        at_ms,
        source: source.to_owned(),
        status: TrailStatus::Refused,
        dedupe_key: None,
        provider_event_id: None,
        event_type: None,
        reason: Some("bad_signature".to_owned()),
        source_ip: None,
        expires_at_ms: at_ms + DAY_MS,
    }
}

fn id_of(row: &TrailRow) -> String {
    match row {
        TrailRow::Entry(e) => e.id.clone(),
        TrailRow::Record(r) => r.key.clone(),
    }
}

#[tokio::test]
async fn one_source_is_spread_over_the_index_shards_and_still_listed_newest_first() {
    const ROWS: i64 = 320;
    let ledger = support::aws::ledger().await;
    for i in 0..ROWS {
        ledger
            .append(&entry(format!("hot-{i}"), "hot", T0 + i * 10))
            .await
            .expect("append");
    }
    for i in 0..3 {
        ledger
            .append(&entry(format!("cold-{i}"), "cold", T0 + i))
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
    let newest = ledger
        .list(&TrailQuery {
            source: Some("hot".into()),
            limit: 25,
            now_ms: T0,
        })
        .await
        .expect("list");
    let want: Vec<String> = std::iter::once("hot-legacy".to_string())
        .chain((ROWS - 24..ROWS).rev().map(|i| format!("hot-{i}")))
        .collect();
    assert_eq!(newest.iter().map(id_of).collect::<Vec<_>>(), want);

    let all = ledger
        .list(&TrailQuery {
            source: Some("hot".into()),
            limit: 0,
            now_ms: T0,
        })
        .await
        .expect("list");
    assert_eq!(all.len() as i64, ROWS + 1);
    assert!(all.windows(2).all(|w| w[0].at_ms() >= w[1].at_ms()));
    let cold = ledger
        .list(&TrailQuery {
            source: Some("cold".into()),
            limit: 0,
            now_ms: T0,
        })
        .await
        .expect("list");
    assert_eq!(
        cold.iter().map(id_of).collect::<Vec<_>>(),
        ["cold-2", "cold-1", "cold-0"]
    );
}
