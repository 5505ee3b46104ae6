//! Poller Lambda, invoked by EventBridge Scheduler with `{"source_id": "<id>"}` as its input:
//! one poll run of that source (several for a poll more often than once a minute), stopping
//! well before the invocation's deadline.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

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

#[tokio::main]
async fn main() -> Result<(), Error> {
    let poller = inlet::bootstrap::poller().await?;
    let poller = &poller;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let source = source_of(&event.payload).ok_or("input must carry \"source_id\"")?;
        let deadline =
            i64::try_from(event.context.deadline).unwrap_or(i64::MAX) - DEADLINE_MARGIN_MS;
        // An unknown or unpolled source is a deployment error: fail so Scheduler's DLQ shows
        // it. A run that failed on the provider's side is recorded (trail, poll_errors
        // metric) and answered normally, so Scheduler does not retry into the same error.
        // A sub-minute poll runs several times in one invocation (Scheduler's floor is a
        // minute); the answer sums them and gives the last outcome.
        let reports = poller.run_invocation(source, deadline).await?;
        let sum =
            |f: fn(&inlet::poll::runner::RunReport) -> usize| reports.iter().map(f).sum::<usize>();
        Ok::<Value, Error>(serde_json::json!({
            "source_id": source,
            "runs": reports.len(),
            "outcome": reports.last().map(|r| r.outcome.as_str()),
            "requests": sum(|r| r.requests as usize),
            "pages": sum(|r| r.pages as usize),
            "items": sum(|r| r.items),
            "queued": sum(|r| r.enqueued.len()),
        }))
    }))
    .await
}
