use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus backend: {0}")]
    Backend(String),
}

/// EventBridge `PutEvents` takes at most 10 entries per call.
pub(crate) const MAX_ENTRIES: usize = 10;

/// The entry-count rule both adapters enforce.
pub fn check_entries_len(len: usize) -> Result<(), BusError> {
    if len > MAX_ENTRIES {
        return Err(BusError::Backend(format!(
            "PutEvents takes at most {MAX_ENTRIES} entries per call, got {len}"
        )));
    }
    Ok(())
}

/// One event for the bus (EventBridge `PutEventsRequestEntry` without AWS types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusEvent {
    pub source: String,
    pub detail_type: String,
    /// JSON text.
    pub detail: String,
    pub time_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishResult {
    Published { event_id: String },
    Failed { code: String, message: String },
}

impl PublishResult {
    pub fn is_published(&self) -> bool {
        matches!(self, PublishResult::Published { .. })
    }
}

#[async_trait]
pub trait EventBus: Send + Sync {
    /// Up to 10 events per call (the PutEvents limit); one result per event, in order.
    /// A per-entry failure is a `PublishResult::Failed`, not an `Err`.
    async fn publish(&self, events: &[BusEvent]) -> Result<Vec<PublishResult>, BusError>;
}
