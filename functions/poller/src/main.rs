//! Poller Lambda, invoked by EventBridge Scheduler with `{"source": "<id>"}` as its input.
//! Polling itself comes in a later issue; this loads the config and logs the run.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

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
    let config = inlet::bootstrap::load_config()?;
    let config = &config;
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        let source = source_of(&event.payload).ok_or("input must carry \"source_id\"")?;
        if config.source(source).is_none() {
            return Err::<Value, Error>(format!("no source {source:?} in the config").into());
        }
        tracing::info!(source, request_id = %event.context.request_id, "poll run: no poll kind configured yet");
        Ok(serde_json::json!({"source_id": source, "items": 0}))
    }))
    .await
}
