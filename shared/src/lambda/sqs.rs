//! SQS events (`aws_lambda_events::sqs::SqsEvent`) ↔ the worker, with partial batch responses.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};

use crate::ports::WorkerRecord;
use crate::worker::BatchResult;

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
    for mut r in event.records {
        let Some(message_id) = r.message_id else {
            missing_ids += 1;
            continue;
        };
        let receive_count = r
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        records.push(WorkerRecord {
            message_id,
            body: r.body.unwrap_or_default(),
            receive_count,
            receipt_handle: r.receipt_handle,
            // Set on FIFO queues only: the worker keeps a group's order by it.
            group_id: r.attributes.remove("MessageGroupId"),
        });
    }
    Records {
        records,
        missing_ids,
    }
}

pub fn to_batch_response(result: &BatchResult) -> SqsBatchResponse {
    failures_response(result.failed_message_ids())
}

/// A partial batch response naming `failed` message ids (the poller's check messages).
pub fn failures_response(failed: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    for id in failed {
        resp.add_failure(id);
    }
    resp
}
