//! API Gateway HTTP API (payload v2) and Function URL requests ↔ the ingest path.

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

use crate::ingest::{WebhookRequest, WebhookResponse};
use crate::request::Headers;

/// Build the domain request. `lambda_http` has already base64-decoded the body when the
/// event said `isBase64Encoded`, so these are the exact bytes the provider sent.
pub fn to_webhook_request(req: &Request) -> WebhookRequest {
    let (source_ip, request_id) = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => (
            ctx.http.source_ip.as_deref().and_then(|ip| ip.parse().ok()),
            ctx.request_id.clone(),
        ),
        _ => (None, None),
    };
    let mut headers = Headers::new();
    for (name, value) in req.headers() {
        // Non-UTF-8 header values cannot carry a signature we check; keep them lossily.
        headers.insert(
            name.as_str(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
    }
    let mut query = Vec::new();
    let q = req.query_string_parameters();
    for (k, v) in q.iter() {
        query.push((k.to_string(), v.to_string()));
    }
    let path = match req.raw_http_path() {
        "" => req.uri().path().to_string(),
        p => p.to_string(),
    };
    WebhookRequest {
        method: req.method().as_str().to_string(),
        path,
        query,
        headers,
        body: match req.body() {
            Body::Empty => Vec::new(),
            Body::Text(t) => t.as_bytes().to_vec(),
            Body::Binary(b) => b.clone(),
            _ => Vec::new(),
        },
        body_over_limit: false,
        source_ip,
        request_id,
    }
}

pub fn to_lambda_response(resp: WebhookResponse) -> Response<Body> {
    let mut builder = Response::builder()
        .status(resp.status)
        .header("content-type", resp.content_type);
    for (k, v) in &resp.headers {
        builder = builder.header(*k, v.as_str());
    }
    builder
        .body(Body::Text(resp.body))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}
