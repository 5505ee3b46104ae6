//! Ingest Lambda (API Gateway HTTP API v2 or Function URL): verify, enqueue, answer.

use inlet::lambda::http::{HttpEvent, HttpResponse};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Built once per cold start; warm invocations reuse the clients and the config, read
    // again after the refresh interval when it names SSM or Secrets Manager secrets.
    let ingest = inlet::bootstrap::ingest().await?;
    let ingest = &ingest;
    run(service_fn(
        move |event: LambdaEvent<HttpEvent>| async move {
            let resp = match event.payload.into_webhook_request() {
                Ok(req) => ingest.get().await.handle(req).await.into(),
                Err(bad) => HttpResponse::from(bad),
            };
            Ok::<_, Error>(resp)
        },
    ))
    .await
}
