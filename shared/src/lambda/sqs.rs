//! SQS event ↔ the worker, with partial batch responses.

use aws_lambda_events::event::sqs::SqsBatchResponse;
use serde::Deserialize;

use crate::ports::WorkerRecord;
use crate::worker::BatchResult;

/// The SQS event, as far as the worker reads it. `aws_lambda_events::SqsEvent` decodes every
/// field of every record (message attributes and their base64 values, md5s, ARNs) into maps
/// and options the worker never reads: measured, 37 % of the worker's CPU for a batch of ten
/// 1 KB events (docs/performance.md). Unread fields are skipped; the integration tests read
/// the same events through both types.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SqsEvent {
    records: Vec<SqsRecord>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SqsRecord {
    message_id: Option<String>,
    receipt_handle: Option<String>,
    body: Option<String>,
    attributes: SqsAttributes,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SqsAttributes {
    #[serde(rename = "ApproximateReceiveCount")]
    approximate_receive_count: Option<String>,
    #[serde(rename = "MessageGroupId")]
    message_group_id: Option<String>,
}

impl SqsEvent {
    /// Parse an event as the Lambda runtime hands it over (tests, benches, tools).
    pub fn from_slice(event: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(event)
    }
}

/// Records the worker can process. A record without a message id cannot be named in
/// `batchItemFailures`, so it is left out and counted: the caller fails the whole
/// invocation when `missing_ids` is non-zero, and SQS redelivers the batch.
pub struct Records {
    pub records: Vec<WorkerRecord>,
    pub missing_ids: usize,
}

pub fn to_records(event: SqsEvent) -> Records {
    let mut records = Vec::with_capacity(event.records.len());
    let mut missing_ids = 0;
    for r in event.records {
        let Some(message_id) = r.message_id else {
            missing_ids += 1;
            continue;
        };
        let receive_count = r
            .attributes
            .approximate_receive_count
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        records.push(WorkerRecord {
            message_id,
            body: r.body.unwrap_or_default(),
            receive_count,
            receipt_handle: r.receipt_handle,
            // Set on FIFO queues only: the worker keeps a group's order by it.
            group_id: r.attributes.message_group_id,
        });
    }
    Records {
        records,
        missing_ids,
    }
}

pub fn to_batch_response(result: &BatchResult) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    for id in result.failed_message_ids() {
        resp.add_failure(id);
    }
    resp
}

/// A partial batch response naming `failed` message ids (the poller's check messages).
pub fn failures_response(failed: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    for id in failed {
        resp.add_failure(id);
    }
    resp
}
