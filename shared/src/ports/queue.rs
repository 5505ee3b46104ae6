use std::time::Duration;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue backend: {0}")]
    Backend(String),
    #[error("message rejected: {0}")]
    Rejected(String),
}

/// SQS `SendMessageBatch` and `ReceiveMessage` take at most 10 messages.
pub(crate) const MAX_BATCH: usize = 10;

/// The batch-size rule both adapters enforce, so an oversized batch fails the same way
/// locally and on AWS.
pub fn check_batch_len(len: usize) -> Result<(), QueueError> {
    if len > MAX_BATCH {
        return Err(QueueError::Rejected(format!(
            "SendMessageBatch takes at most {MAX_BATCH} messages, got {len}"
        )));
    }
    Ok(())
}

/// A message to enqueue. `group_id` and `deduplication_id` only matter on FIFO queues: there
/// messages of one group are delivered in send order, one group member in flight at a time,
/// and a standard queue ignores both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundMessage {
    pub body: String,
    /// SQS caps this at 900 seconds.
    pub delay_seconds: u32,
    pub group_id: Option<String>,
    pub deduplication_id: Option<String>,
}

impl OutboundMessage {
    pub fn new(body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    /// Opaque handle for `delete` and `change_visibility`, valid for this receive only.
    pub receipt_handle: String,
    pub body: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    pub sent_at_ms: i64,
    /// The message group, on a FIFO queue (`None` on a standard one).
    pub group_id: Option<String>,
}

/// A queue message as the worker sees it (from an SQS event or the embedded queue).
#[derive(Debug, Clone)]
pub struct WorkerRecord {
    pub message_id: String,
    pub body: String,
    pub receive_count: u32,
    /// For `ChangeMessageVisibility` (the backoff); `None` when the event did not carry it.
    pub receipt_handle: Option<String>,
    /// The FIFO message group (`None` on a standard queue): when a record of a group fails,
    /// the group's later records in the batch fail with it, undispatched.
    pub group_id: Option<String>,
}

/// A message as the embedded event-source loop receives it.
impl From<&ReceivedMessage> for WorkerRecord {
    fn from(m: &ReceivedMessage) -> Self {
        Self {
            message_id: m.message_id.clone(),
            body: m.body.clone(),
            receive_count: m.receive_count,
            receipt_handle: Some(m.receipt_handle.clone()),
            group_id: m.group_id.clone(),
        }
    }
}

/// An at-least-once queue with SQS semantics: a received message is hidden for the
/// visibility timeout, reappears unless deleted, and after `max_receive_count` receives
/// is moved to the dead-letter queue by the queue itself (redrive policy).
#[async_trait]
pub trait Queue: Send + Sync {
    /// Returns the message id once the message is durably stored.
    async fn send(&self, message: &OutboundMessage) -> Result<String, QueueError>;

    /// Up to 10 messages; one result per entry, in order.
    async fn send_batch(
        &self,
        messages: &[OutboundMessage],
    ) -> Result<Vec<Result<String, QueueError>>, QueueError>;

    /// Up to `max` (≤ 10) messages, waiting up to `wait` for the first one.
    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError>;

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        visibility: Duration,
    ) -> Result<(), QueueError>;

    /// How many messages the queue holds (visible, in flight and delayed), when the backend
    /// can tell (SQS's figures are approximate). For progress reports only.
    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        Ok(None)
    }

    /// Move up to `max` messages from this queue (a DLQ) to `target`: receive, send, then
    /// delete — so an interrupted move re-sends at most the in-flight batch, which dedupe
    /// absorbs. Returns how many moved.
    async fn move_to(&self, target: &dyn Queue, max: usize) -> Result<usize, QueueError> {
        let mut moved = 0;
        while moved < max {
            let want = (max - moved).min(MAX_BATCH) as u32;
            let batch = self
                .receive(want, Duration::from_secs(30), Duration::ZERO)
                .await?;
            if batch.is_empty() {
                break;
            }
            for m in batch {
                // The group travels with the message (a FIFO target requires one). No
                // deduplication id: a FIFO queue then takes a fresh one, and does not drop a
                // message moved back within five minutes of its first send as a copy.
                let message = OutboundMessage {
                    group_id: m.group_id.clone(),
                    ..OutboundMessage::new(m.body.clone())
                };
                target.send(&message).await?;
                self.delete(&m.receipt_handle).await?;
                moved += 1;
            }
        }
        Ok(moved)
    }
}
