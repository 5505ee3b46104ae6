//! Poller Lambda, with two inputs told apart by shape:
//! - EventBridge Scheduler with `{"source_id": "<id>"}`: one poll run of that source
//!   (several for a poll more often than once a minute), stopping well before the invocation's deadline;
//! - an SQS event from the checks queue (`Records` from `aws:sqs`): fire the delayed checks
//!   it carries, answering with partial batch failures.

use aws_lambda_events::sqs::SqsEvent;
use inlet::bootstrap::{PollerParts, Refreshing};
use inlet::lambda::sqs::{failures_response, to_records};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;
use tracing::Instrument;

/// Stop starting requests this long before the Lambda deadline.
const DEADLINE_MARGIN_MS: i64 = 3_000;

/// Scheduler delivers its Input as-is; a classic scheduled rule wraps it in an EventBridge
/// envelope with the input under `detail`. Accept both.
fn source_of(payload: &Value) -> Option<&str> {
    payload
        .get("source_id")
        .or_else(|| payload.get("detail").and_then(|d| d.get("source_id")))
        .and_then(Value::as_str)
}

/// An SQS event source delivers `{"Records": [{"eventSource": "aws:sqs", …}]}`.
fn is_sqs_event(payload: &Value) -> bool {
    payload
        .get("Records")
        .and_then(Value::as_array)
        .is_some_and(|records| {
            !records.is_empty()
                && records
                    .iter()
                    .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
        })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    inlet::telemetry::init_lambda_logs("inlet-poller");
    let parts = inlet::bootstrap::poller().await?;
    let parts = &parts;
    run(service_fn(move |event: LambdaEvent<Value>| {
        let span = inlet::telemetry::invocation_span(
            &event.context.request_id,
            event.context.xray_trace_id.as_deref(),
        );
        handle(parts, event).instrument(span)
    }))
    .await
}

/// One invocation: a scheduled poll run or a batch from the checks queue.
async fn handle(
    parts: &Refreshing<PollerParts>,
    event: LambdaEvent<Value>,
) -> Result<Value, Error> {
    let parts = parts.get().await;
    let deadline = i64::try_from(event.context.deadline).unwrap_or(i64::MAX) - DEADLINE_MARGIN_MS;
    if is_sqs_event(&event.payload) {
        let Some(checks) = &parts.checks else {
            // Messages on the checks queue with no check configured: fail the batch so
            // they stay (and reach the DLQ) rather than vanish.
            return Err::<Value, Error>("check messages received but no source has checks".into());
        };
        let sqs: SqsEvent = serde_json::from_value(event.payload)?;
        let records = to_records(sqs);
        if records.missing_ids > 0 {
            return Err("SQS record without a messageId".into());
        }
        let outcomes = checks.process(&records.records, deadline).await;
        let failed = outcomes
            .into_iter()
            .filter(|(_, o)| o.retry())
            .map(|(id, _)| id);
        return Ok(serde_json::to_value(failures_response(failed))?);
    }
    let source = source_of(&event.payload).ok_or("input must carry \"source_id\"")?;
    // An unknown or unpolled source is a deployment error: fail so Scheduler's DLQ shows
    // it. A run that failed on the provider's side is recorded (trail, poll_errors
    // metric) and answered normally, so Scheduler does not retry into the same error.
    // A sub-minute poll runs several times in one invocation (Scheduler's floor is a
    // minute); the answer sums them and gives the last outcome.
    let reports = parts.poller.run_invocation(source, deadline).await?;
    let sum = |f: fn(&inlet::poller::RunReport) -> usize| reports.iter().map(f).sum::<usize>();
    Ok(serde_json::json!({
        "source_id": source,
        "runs": reports.len(),
        "outcome": reports.last().map(|r| r.outcome.as_str()),
        "requests": sum(|r| r.requests as usize),
        "pages": sum(|r| r.pages as usize),
        "items": sum(|r| r.items),
        "queued": sum(|r| r.enqueued.len()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_inputs_are_told_apart() {
        let scheduler = serde_json::json!({"source_id": "stripe"});
        let sqs = serde_json::json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m", "body": "{}"}]});
        assert!(!is_sqs_event(&scheduler));
        assert_eq!(source_of(&scheduler), Some("stripe"));
        assert!(is_sqs_event(&sqs));
        assert_eq!(source_of(&sqs), None);
        assert!(!is_sqs_event(&serde_json::json!({"Records": []})));
    }
}
