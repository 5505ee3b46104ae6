//! `Queue` over an SQS queue (standard or FIFO). Redrive to the dead-letter queue is the
//! queue's own `RedrivePolicy`; this adapter only sends, receives, deletes and changes
//! visibility.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    Message, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

use crate::ports::queue::{check_batch_len, MAX_BATCH};
use crate::ports::{OutboundMessage, Queue, QueueError, ReceivedMessage};

/// SQS limits (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html>).
const MAX_VISIBILITY_SECS: u64 = 12 * 60 * 60;
const MAX_WAIT_SECS: u64 = 20;
const MAX_DELAY_SECS: u32 = 900;

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    /// SQS names every FIFO queue `….fifo` (and only those).
    fifo: bool,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        let queue_url = queue_url.into();
        Self {
            client,
            fifo: queue_url.ends_with(".fifo"),
            queue_url,
        }
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo
    }

    /// The group and deduplication id SQS gets for `message`: none on a standard queue (the
    /// group is a FIFO notion); on a FIFO queue the message's, with a fresh deduplication id
    /// when it has none (a FIFO queue without content-based deduplication requires one).
    fn fifo_ids(&self, message: &OutboundMessage) -> (Option<String>, Option<String>) {
        if !self.fifo {
            return (None, None);
        }
        let dedup = message
            .deduplication_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        (message.group_id.clone(), Some(dedup))
    }

    pub fn from_conf(config: &SdkConfig, queue_url: impl Into<String>) -> Self {
        Self::new(Client::new(config), queue_url)
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Where an SQS message move task stands (`ListMessageMoveTasks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveTask {
    /// `RUNNING`, `COMPLETED`, `CANCELLING`, `CANCELLED` or `FAILED`.
    pub status: String,
    pub moved: u64,
    /// The DLQ's depth when the task started.
    pub to_move: Option<u64>,
    pub failure_reason: Option<String>,
}

impl MoveTask {
    pub fn finished(&self) -> bool {
        !matches!(self.status.as_str(), "RUNNING" | "CANCELLING")
    }
}

impl SqsQueue {
    pub async fn arn(&self) -> Result<String, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| backend("GetQueueAttributes", e))?;
        out.attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| QueueError::Backend(format!("{}: no QueueArn", self.queue_url)))
    }

    /// Move every message of this queue (a DLQ) to `destination` server-side, at SQS's own
    /// pace (`StartMessageMoveTask`); returns the task handle. Only an unfiltered move: a
    /// filtered replay receives, sends and deletes itself.
    pub async fn start_move_to(&self, destination: &SqsQueue) -> Result<String, QueueError> {
        let source_arn = self.arn().await?;
        let destination_arn = destination.arn().await?;
        let out = self
            .client
            .start_message_move_task()
            .source_arn(source_arn)
            .destination_arn(destination_arn)
            .send()
            .await
            .map_err(|e| backend("StartMessageMoveTask", e))?;
        out.task_handle
            .ok_or_else(|| QueueError::Backend("StartMessageMoveTask: no TaskHandle".into()))
    }

    /// The most recent move task out of this queue, if any.
    pub async fn move_task(&self) -> Result<Option<MoveTask>, QueueError> {
        let out = self
            .client
            .list_message_move_tasks()
            .source_arn(self.arn().await?)
            .max_results(1)
            .send()
            .await
            .map_err(|e| backend("ListMessageMoveTasks", e))?;
        Ok(out
            .results
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(|t| MoveTask {
                status: t.status.unwrap_or_default(),
                moved: u64::try_from(t.approximate_number_of_messages_moved).unwrap_or(0),
                to_move: t
                    .approximate_number_of_messages_to_move
                    .and_then(|n| u64::try_from(n).ok()),
                failure_reason: t.failure_reason,
            }))
    }
}

fn backend(operation: &str, err: impl std::error::Error) -> QueueError {
    QueueError::Backend(format!("SQS {operation}: {}", DisplayErrorContext(err)))
}

/// Whole seconds, rounded up (a sub-second visibility must still hide the message) and
/// capped at the SQS maximum.
fn ceil_secs(d: Duration, max: u64) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.min(max) as i32
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, message: &OutboundMessage) -> Result<String, QueueError> {
        let (group, dedup) = self.fifo_ids(message);
        let out = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&message.body)
            .set_delay_seconds(delay(message))
            .set_message_group_id(group)
            .set_message_deduplication_id(dedup)
            .send()
            .await
            .map_err(|err| {
                // A body SQS refuses (size, characters) will never be accepted: say so.
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_invalid_message_contents())
                {
                    QueueError::Rejected(format!("SQS SendMessage: {}", DisplayErrorContext(&err)))
                } else {
                    backend("SendMessage", err)
                }
            })?;
        out.message_id
            .ok_or_else(|| QueueError::Backend("SQS SendMessage: response has no MessageId".into()))
    }

    async fn send_batch(
        &self,
        messages: &[OutboundMessage],
    ) -> Result<Vec<Result<String, QueueError>>, QueueError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        check_batch_len(messages.len())?;
        // Entry ids are the positions, so results map back by id whatever order SQS uses.
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (group, dedup) = self.fifo_ids(m);
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_delay_seconds(delay(m))
                    .set_message_group_id(group)
                    .set_message_deduplication_id(dedup)
                    .build()
                    .map_err(|e| backend("SendMessageBatch", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| backend("SendMessageBatch", e))?;

        let mut results: Vec<Option<Result<String, QueueError>>> =
            (0..messages.len()).map(|_| None).collect();
        for ok in out.successful() {
            if let Some(r) = ok
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                *r = Some(Ok(ok.message_id().to_owned()));
            }
        }
        for failed in out.failed() {
            if let Some(r) = failed
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                let text = format!("{}: {}", failed.code(), failed.message().unwrap_or(""));
                // SenderFault: this entry will never be accepted as is; otherwise retry it.
                *r = Some(Err(if failed.sender_fault() {
                    QueueError::Rejected(text)
                } else {
                    QueueError::Backend(text)
                }));
            }
        }
        Ok(results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| {
                    Err(QueueError::Backend(format!(
                        "SQS SendMessageBatch: no result for entry {i}"
                    )))
                })
            })
            .collect())
    }

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH as u32) as i32)
            .visibility_timeout(ceil_secs(visibility, MAX_VISIBILITY_SECS))
            .wait_time_seconds(ceil_secs(wait, MAX_WAIT_SECS))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .map_err(|e| backend("ReceiveMessage", e))?;
        out.messages
            .unwrap_or_default()
            .into_iter()
            .map(received)
            .collect()
    }

    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| backend("GetQueueAttributes", e))?;
        let attrs = out.attributes.unwrap_or_default();
        Ok(Some(
            attrs.values().filter_map(|v| v.parse::<u64>().ok()).sum(),
        ))
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| backend("DeleteMessage", e))?;
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(ceil_secs(visibility, MAX_VISIBILITY_SECS))
            .send()
            .await
            .map_err(|e| backend("ChangeMessageVisibility", e))?;
        Ok(())
    }
}

fn delay(message: &OutboundMessage) -> Option<i32> {
    (message.delay_seconds > 0).then(|| message.delay_seconds.min(MAX_DELAY_SECS) as i32)
}

fn received(message: Message) -> Result<ReceivedMessage, QueueError> {
    let empty = HashMap::new();
    let attributes = message.attributes.as_ref().unwrap_or(&empty);
    let number = |name: MessageSystemAttributeName| -> Result<i64, QueueError> {
        attributes
            .get(&name)
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| {
                QueueError::Backend(format!(
                    "SQS ReceiveMessage: message has no numeric {}",
                    name.as_str()
                ))
            })
    };
    let receive_count = number(MessageSystemAttributeName::ApproximateReceiveCount)?;
    let sent_at_ms = number(MessageSystemAttributeName::SentTimestamp)?;
    let missing =
        |field: &str| QueueError::Backend(format!("SQS ReceiveMessage: message has no {field}"));
    let group_id = attributes
        .get(&MessageSystemAttributeName::MessageGroupId)
        .cloned();
    Ok(ReceivedMessage {
        message_id: message.message_id.ok_or_else(|| missing("MessageId"))?,
        receipt_handle: message
            .receipt_handle
            .ok_or_else(|| missing("ReceiptHandle"))?,
        body: message.body.unwrap_or_default(),
        receive_count: u32::try_from(receive_count).unwrap_or(u32::MAX),
        sent_at_ms,
        group_id,
    })
}
