use std::sync::Arc;

use async_trait::async_trait;

use super::{DispatchError, Outgoing, Target};
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

/// EventBridge's limit on one entry: Source, DetailType, Detail and Resources in UTF-8,
/// and 14 bytes for the Time field.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// The entry for one event. Detail is the whole envelope when the entry fits; otherwise its
/// body goes by reference (`body_ref`, the blob bucket's key and SHA-256), with every other
/// field of the envelope as it is.
pub fn bus_event(o: &Outgoing<'_>) -> BusEvent {
    let e = o.envelope;
    let source = format!("inlet.{}", e.source);
    let detail_type = e
        .event_type
        .clone()
        .unwrap_or_else(|| "webhook".to_string());
    let room = MAX_ENTRY_BYTES.saturating_sub(source.len() + detail_type.len() + 14);
    BusEvent {
        source,
        detail_type,
        detail: o.fitting(room).to_owned(),
        time_ms: Some(e.received_at_ms()),
    }
}

#[async_trait]
impl Target for EventBridgeTarget {
    fn id(&self) -> &str {
        &self.id
    }

    async fn deliver(&self, outgoing: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>> {
        let mut results = Vec::with_capacity(outgoing.len());
        for chunk in outgoing.chunks(MAX_ENTRIES) {
            let events: Vec<BusEvent> = chunk.iter().map(bus_event).collect();
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
