//! Ingest Lambda (API Gateway HTTP API v2 or Function URL): verify, enqueue, answer.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use inlet::lambda::http::{bad_event_response, into_webhook_request, response};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use tracing::Instrument;

#[tokio::main]
async fn main() -> Result<(), Error> {
    inlet::telemetry::init_lambda_logs("inlet-ingest");
    // Built once per cold start; warm invocations reuse the clients and the config, read
    // again after the refresh interval when it names SSM or Secrets Manager secrets.
    let ingest = inlet::bootstrap::ingest().await?;
    let ingest = &ingest;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| {
            let span = inlet::telemetry::invocation_span(
                &event.context.request_id,
                event.context.xray_trace_id.as_deref(),
            );
            async move {
                let resp = match into_webhook_request(event.payload) {
                    Ok(req) => response(ingest.get().await.handle(req).await),
                    Err(bad) => bad_event_response(&bad),
                };
                Ok::<_, Error>(resp)
            }
            .instrument(span)
        },
    ))
    .await
}
