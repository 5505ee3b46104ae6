//! `EventBus` on the `bus_events` table: each published event is stored (no rules, no
//! targets) so `inlet dev` and tests can read what was published with [`SqliteBus::events`].
//!
//! EventBridge `PutEvents` semantics
//! (<https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html>): at most
//! 10 entries a call (more fails the whole call); each entry succeeds or fails on its own — a
//! `detail` that is not a JSON object fails with `MalformedDetail`, an empty `source`,
//! `detail_type` or `detail` with `InvalidArgument` — and the good entries of the call are
//! stored. An event without a time gets the time of the call (the store's clock), as in
//! EventBridge. Not emulated: entry size limits and nesting depth.

use async_trait::async_trait;
use rusqlite::params;

use super::{EmbeddedError, EmbeddedStore};
use crate::ports::bus::check_entries_len;
use crate::ports::{BusError, BusEvent, EventBus, PublishResult};

/// A handle on one named bus of an [`EmbeddedStore`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteBus {
    store: EmbeddedStore,
    name: String,
}

impl SqliteBus {
    pub(super) fn new(store: EmbeddedStore, name: String) -> Self {
        Self { store, name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every event published on this bus, oldest first, with the time EventBridge would give
    /// it (its own, or the time of the call when it had none).
    pub fn events(&self) -> Result<Vec<BusEvent>, EmbeddedError> {
        self.store.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT source, detail_type, detail, time_ms FROM bus_events WHERE bus = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map([&self.name], |row| {
                Ok(BusEvent {
                    source: row.get(0)?,
                    detail_type: row.get(1)?,
                    detail: row.get(2)?,
                    time_ms: Some(row.get(3)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

/// Why EventBridge would fail this entry, as its (code, message); `None` if it would not.
fn refusal(event: &BusEvent) -> Option<(&'static str, String)> {
    if event.source.is_empty() || event.detail_type.is_empty() || event.detail.is_empty() {
        return Some((
            "InvalidArgument",
            "Parameter(s) Source, DetailType or Detail could not be empty.".to_owned(),
        ));
    }
    match serde_json::from_str::<serde_json::Value>(&event.detail) {
        Ok(serde_json::Value::Object(_)) => None,
        Ok(_) => Some((
            "MalformedDetail",
            "Detail is malformed: it must be a JSON object.".to_owned(),
        )),
        Err(e) => Some(("MalformedDetail", format!("Detail is malformed: {e}"))),
    }
}

#[async_trait]
impl EventBus for SqliteBus {
    async fn publish(&self, events: &[BusEvent]) -> Result<Vec<PublishResult>, BusError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        check_entries_len(events.len())?;
        let (name, events) = (self.name.clone(), events.to_vec());
        Ok(self
            .store
            .write(move |tx, now| {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO bus_events (bus, event_id, source, detail_type, detail, time_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                events
                    .iter()
                    .map(|e| {
                        if let Some((code, message)) = refusal(e) {
                            return Ok(PublishResult::Failed {
                                code: code.to_owned(),
                                message,
                            });
                        }
                        let event_id = uuid::Uuid::new_v4().to_string();
                        insert.execute(params![
                            name,
                            event_id,
                            e.source,
                            e.detail_type,
                            e.detail,
                            e.time_ms.unwrap_or(now)
                        ])?;
                        Ok(PublishResult::Published { event_id })
                    })
                    .collect::<Result<Vec<_>, EmbeddedError>>()
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::adapters::embedded::tests::TempDb;
    use crate::ports::ManualClock;

    const T0: i64 = 1_700_000_000_000;

    fn event(detail: &str) -> BusEvent {
        BusEvent {
            source: "inlet.stripe".into(),
            detail_type: "payment.succeeded".into(),
            detail: detail.into(),
            time_ms: Some(T0 - 5),
        }
    }

    fn bus() -> SqliteBus {
        EmbeddedStore::open_in_memory(Arc::new(ManualClock::new(T0)))
            .expect("open")
            .bus("default")
    }

    #[tokio::test]
    async fn published_events_get_distinct_ids_and_are_stored_in_order() {
        let bus = bus();
        let results = bus
            .publish(&[event(r#"{"n":1}"#), event(r#"{"n":2}"#)])
            .await
            .expect("publish");
        let ids: Vec<_> = results
            .iter()
            .map(|r| match r {
                PublishResult::Published { event_id } => event_id.clone(),
                other => panic!("expected Published, got {other:?}"),
            })
            .collect();
        assert_ne!(ids[0], ids[1]);
        assert_eq!(
            bus.events().expect("events"),
            [event(r#"{"n":1}"#), event(r#"{"n":2}"#)]
        );
    }

    #[tokio::test]
    async fn malformed_detail_fails_only_that_entry() {
        let bus = bus();
        let results = bus
            .publish(&[event("not json"), event(r#"{"ok":true}"#), event("[1,2]")])
            .await
            .expect("a per-entry failure is not an Err");
        assert!(
            matches!(&results[0], PublishResult::Failed { code, .. } if code == "MalformedDetail"),
            "{results:?}"
        );
        assert!(results[1].is_published(), "{results:?}");
        assert!(
            matches!(&results[2], PublishResult::Failed { code, .. } if code == "MalformedDetail"),
            "{results:?}"
        );
        assert_eq!(bus.events().expect("events"), [event(r#"{"ok":true}"#)]);
    }

    #[tokio::test]
    async fn an_entry_without_a_source_fails_with_invalid_argument() {
        let bus = bus();
        let mut e = event("{}");
        e.source.clear();
        let results = bus.publish(&[e]).await.expect("publish");
        assert!(
            matches!(&results[0], PublishResult::Failed { code, .. } if code == "InvalidArgument")
        );
    }

    #[tokio::test]
    async fn more_than_ten_events_in_one_call_are_refused_whole() {
        let bus = bus();
        let events: Vec<_> = (0..11).map(|i| event(&format!(r#"{{"n":{i}}}"#))).collect();
        let err = bus.publish(&events).await.expect_err("11 entries");
        assert!(err.to_string().contains("at most 10 entries"), "{err}");
        assert!(bus.publish(&[]).await.expect("empty").is_empty());
        assert!(bus.events().expect("events").is_empty());
    }

    #[tokio::test]
    async fn an_event_without_a_time_gets_the_time_of_the_call() {
        let bus = bus();
        let mut e = event("{}");
        e.time_ms = None;
        bus.publish(&[e]).await.expect("publish");
        assert_eq!(bus.events().expect("events")[0].time_ms, Some(T0));
    }

    #[tokio::test]
    async fn buses_are_separate_and_durable() {
        let db = TempDb::new();
        let clock = Arc::new(ManualClock::new(T0));
        {
            let store = EmbeddedStore::open(&db.0, clock.clone()).expect("open");
            store
                .bus("a")
                .publish(&[event(r#"{"bus":"a"}"#)])
                .await
                .expect("publish");
            store
                .bus("b")
                .publish(&[event(r#"{"bus":"b"}"#)])
                .await
                .expect("publish");
        }
        let store = EmbeddedStore::open(&db.0, clock).expect("reopen");
        assert_eq!(
            store.bus("a").events().expect("events"),
            [event(r#"{"bus":"a"}"#)]
        );
    }
}
