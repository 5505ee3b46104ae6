use std::sync::Arc;

use async_trait::async_trait;

use super::{DispatchError, Target};
use crate::envelope::Envelope;
use crate::ports::bus::MAX_ENTRIES;
use crate::ports::{BusEvent, EventBus, PublishResult};

/// `PutEvents` in chunks of `MAX_ENTRIES` (the API limit): Source `inlet.<source>`, DetailType the
/// event type, Detail the envelope. Every entry's result is checked, so one failed entry
/// fails only its own envelope.
pub struct EventBridgeTarget {
    id: String,
    bus: Arc<dyn EventBus>,
}

impl EventBridgeTarget {
    pub fn new(id: String, bus: Arc<dyn EventBus>) -> Self {
        Self { id, bus }
    }
}

pub fn bus_event(e: &Envelope) -> BusEvent {
    BusEvent {
        source: format!("inlet.{}", e.source),
        detail_type: e
            .event_type
            .clone()
            .unwrap_or_else(|| "webhook".to_string()),
        detail: e.to_json(),
        time_ms: Some(e.received_at_ms()),
    }
}

#[async_trait]
impl Target for EventBridgeTarget {
    fn id(&self) -> &str {
        &self.id
    }

    async fn deliver(&self, envelopes: &[&Envelope]) -> Vec<Result<(), DispatchError>> {
        let mut results = Vec::with_capacity(envelopes.len());
        for chunk in envelopes.chunks(MAX_ENTRIES) {
            let events: Vec<BusEvent> = chunk.iter().map(|e| bus_event(e)).collect();
            match self.bus.publish(&events).await {
                Ok(per_entry) if per_entry.len() == events.len() => {
                    results.extend(per_entry.into_iter().map(|r| match r {
                        PublishResult::Published { .. } => Ok(()),
                        PublishResult::Failed { code, message } => Err(DispatchError::Retryable(
                            format!("PutEvents entry failed: {code}: {message}"),
                        )),
                    }))
                }
                Ok(per_entry) => {
                    let msg = format!(
                        "PutEvents returned {} results for {} entries",
                        per_entry.len(),
                        events.len()
                    );
                    results.extend(
                        chunk
                            .iter()
                            .map(|_| Err(DispatchError::Retryable(msg.clone()))),
                    );
                }
                Err(e) => {
                    let msg = e.to_string();
                    results.extend(
                        chunk
                            .iter()
                            .map(|_| Err(DispatchError::Retryable(msg.clone()))),
                    );
                }
            }
        }
        results
    }
}
