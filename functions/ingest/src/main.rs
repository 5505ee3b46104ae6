//! Ingest Lambda (API Gateway HTTP API v2 or Function URL): verify, enqueue, answer.

use inlet::lambda::http::{to_lambda_response, to_webhook_request};
use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Built once per cold start; warm invocations reuse the clients and the config, read
    // again after the refresh interval when it names SSM or Secrets Manager secrets.
    let ingest = inlet::bootstrap::ingest().await?;
    let ingest = &ingest;
    run(service_fn(move |req: Request| async move {
        let resp = ingest.get().await.handle(to_webhook_request(&req)).await;
        Ok::<_, Error>(to_lambda_response(resp))
    }))
    .await
}
