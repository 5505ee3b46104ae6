//! A real HTTP server with the ingest Lambda's routes and status codes, and the worker
//! loop the Lambda event source mapping would run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use inlet::ingest::WebhookRequest;
use inlet::local::LocalStack;
use inlet::request::Headers;
use tokio::sync::watch;
use tracing::{error, info};

pub fn router(stack: Arc<LocalStack>) -> Router {
    Router::new().fallback(handle).with_state(stack)
}

async fn handle(
    State(stack): State<Arc<LocalStack>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let limit = stack.config.settings.max_body_bytes;
    // Read at most one byte past the limit: enough to know the body is too large without
    // buffering whatever an abusive client sends.
    let (body, over) = match to_bytes(body, limit + 1).await {
        Ok(b) => (b.to_vec(), false),
        Err(_) => (Vec::new(), true),
    };
    let mut headers = Headers::new();
    for (k, v) in &parts.headers {
        headers.insert(
            k.as_str(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        );
    }
    let query = WebhookRequest::parse_query(parts.uri.query());
    let resp = stack
        .ingest
        .handle(WebhookRequest {
            method: parts.method.as_str().to_string(),
            path: parts.uri.path().to_string(),
            query,
            headers,
            body,
            body_over_limit: over,
            source_ip: Some(peer.ip()),
            request_id: Some(uuid::Uuid::new_v4().to_string()),
        })
        .await;
    let mut out = Response::new(Body::from(resp.body));
    *out.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut()
        .insert("content-type", HeaderValue::from_static(resp.content_type));
    for (k, v) in resp.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            out.headers_mut().insert(k, v);
        }
    }
    out.into_response()
}

/// Serve until `shutdown` turns true.
pub async fn serve(
    stack: Arc<LocalStack>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = router(stack).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

/// Process batches until `shutdown` turns true, finishing the batch in hand first. A batch
/// in flight when the process dies is redelivered after the visibility timeout and
/// finished exactly once by dedupe.
pub async fn worker_loop(stack: Arc<LocalStack>, shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        match stack.work_once(Duration::from_secs(1)).await {
            Ok(result) => {
                for (id, outcome) in &result.outcomes {
                    info!(message_id = %id, outcome = ?outcome, "processed");
                }
            }
            Err(e) => {
                error!(error = %e, "worker batch failed");
                // Back off a little so a broken store does not spin the CPU.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
