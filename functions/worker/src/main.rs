//! Worker Lambda (SQS event source with ReportBatchItemFailures): dedupe and dispatch.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use inlet::lambda::sqs::{to_batch_response, to_records};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    inlet::telemetry::init_lambda_logs("inlet-worker");
    let worker = inlet::bootstrap::worker().await?;
    let worker = &worker;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let span = inlet::telemetry::invocation_span(
            &event.context.request_id,
            event.context.xray_trace_id.as_deref(),
        );
        async move {
            let records = to_records(event.payload);
            if records.missing_ids > 0 {
                // Such a record cannot be named in batchItemFailures; failing the invocation
                // makes SQS redeliver the whole batch rather than lose it.
                return Err::<SqsBatchResponse, Error>("SQS record without a messageId".into());
            }
            let result = worker.get().await.process(&records.records).await;
            Ok(to_batch_response(&result))
        }
        .instrument(span)
    }))
    .await
}
