//! `EventBus` over an EventBridge bus (`PutEvents`).

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::{PutEventsRequestEntry, PutEventsResultEntry};
use aws_sdk_eventbridge::Client;

use crate::ports::bus::check_entries_len;
use crate::ports::{BusError, BusEvent, EventBus, PublishResult};

#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: Client,
    bus_name: String,
}

impl EventBridgeBus {
    /// `bus_name` is a bus name or ARN; `default` is the account's default bus.
    pub fn new(client: Client, bus_name: impl Into<String>) -> Self {
        Self {
            client,
            bus_name: bus_name.into(),
        }
    }

    pub fn from_conf(config: &SdkConfig, bus_name: impl Into<String>) -> Self {
        Self::new(Client::new(config), bus_name)
    }

    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait]
impl EventBus for EventBridgeBus {
    /// Results map to entries by position (EventBridge answers one result per entry, in
    /// order). `FailedEntryCount` is not read separately: every entry's own result is, so a
    /// partial failure can never pass unnoticed.
    async fn publish(&self, events: &[BusEvent]) -> Result<Vec<PublishResult>, BusError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        check_entries_len(events.len())?;
        let entries = events
            .iter()
            .map(|e| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus_name)
                    .source(&e.source)
                    .detail_type(&e.detail_type)
                    .detail(&e.detail)
                    .set_time(e.time_ms.map(DateTime::from_millis))
                    .build()
            })
            .collect();
        let out = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                BusError::Backend(format!("EventBridge PutEvents: {}", DisplayErrorContext(e)))
            })?;
        let results = out.entries.unwrap_or_default();
        if results.len() != events.len() {
            return Err(BusError::Backend(format!(
                "EventBridge PutEvents: {} results for {} entries",
                results.len(),
                events.len()
            )));
        }
        Ok(results.iter().map(publish_result).collect())
    }
}

fn publish_result(entry: &PutEventsResultEntry) -> PublishResult {
    match (entry.event_id(), entry.error_code()) {
        (Some(event_id), None) => PublishResult::Published {
            event_id: event_id.to_owned(),
        },
        (_, code) => PublishResult::Failed {
            code: code.unwrap_or("Unknown").to_owned(),
            message: entry
                .error_message()
                .unwrap_or("no event id and no error code")
                .to_owned(),
        },
    }
}
