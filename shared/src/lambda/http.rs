//! API Gateway HTTP API (payload v2) and Function URL events ↔ the ingest path, over the
//! ecosystem's event types (`aws_lambda_events::apigw`, the types `lambda_http` itself reads).
//!
//! `lambda_http`'s `Request` is not used: building its `http::Uri` from the raw query string
//! panics on characters a sender controls (a raw space, `"`, `<`, `>`; a URI over 64 KiB) and
//! on a body its `isBase64Encoded` flag misdescribes, and under the release profile's
//! `panic = "abort"` one such request would kill the warm process. Ingest reads the raw query
//! itself and answers those requests as the `inlet dev` server does (docs/performance.md,
//! "Event parsing").

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderName, HeaderValue};
use base64::Engine;

use crate::ingest::{WebhookRequest, WebhookResponse};
use crate::request::Headers;

/// The event carried a body that its own `isBase64Encoded` flag says it cannot have.
#[derive(Debug, thiserror::Error)]
#[error("the event's body is marked base64 but is not valid base64")]
pub struct BadEvent;

/// The domain request: the body's exact bytes (base64-decoded when the event says so), the
/// query decoded from the raw query string like the `inlet dev` server does.
pub fn into_webhook_request(event: ApiGatewayV2httpRequest) -> Result<WebhookRequest, BadEvent> {
    let body = match event.body {
        None => Vec::new(),
        Some(b) if event.is_base64_encoded => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|_| BadEvent)?,
        Some(b) => b.into_bytes(),
    };
    // Names arrive lowercased, repeats comma-joined by API Gateway. Values were JSON
    // strings, so their bytes are UTF-8: the lossy conversion never replaces anything.
    let mut headers = Headers::new();
    for (name, value) in &event.headers {
        headers.insert(
            name.as_str(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
    }
    let ctx = event.request_context;
    Ok(WebhookRequest {
        method: ctx.http.method.as_str().to_string(),
        path: event.raw_path.or(ctx.http.path).unwrap_or_default(),
        query: WebhookRequest::parse_query(event.raw_query_string.as_deref()),
        headers,
        body,
        body_over_limit: false,
        source_ip: ctx.http.source_ip.and_then(|ip| ip.parse().ok()),
        request_id: ctx.request_id,
    })
}

/// The payload v2 response. The body is always text: ingest answers JSON or plain text.
pub fn response(resp: WebhookResponse) -> ApiGatewayV2httpResponse {
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(resp.status);
    out.headers.insert(
        aws_lambda_events::http::header::CONTENT_TYPE,
        HeaderValue::from_static(resp.content_type),
    );
    for (name, value) in resp.headers {
        // Ingest's own names and values (`allow`, `retry-after`): always valid.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.headers.insert(n, v);
        }
    }
    out.body = Some(Body::Text(resp.body));
    out
}

/// The answer to an event whose body cannot be decoded.
pub fn bad_event_response(e: &BadEvent) -> ApiGatewayV2httpResponse {
    response(WebhookResponse::json(
        400,
        serde_json::json!({"error": "bad_event", "message": e.to_string()}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> ApiGatewayV2httpRequest {
        serde_json::from_str(json).expect("parses")
    }

    #[test]
    fn a_minimal_event_gives_the_request_and_unknown_fields_are_skipped() {
        let ev = event(
            r#"{"version":"2.0","rawPath":"/webhooks/x","rawQueryString":"a=1&b=%20c&a=2",
                "cookies":["k=v"],"headers":{"Content-Type":"text/plain","x-b":"1, 2"},
                "requestContext":{"http":{"method":"POST","sourceIp":"10.0.0.1"},"requestId":"r1",
                "authorizer":{"jwt":{"claims":{}}}},"body":"hi\r\n","isBase64Encoded":false}"#,
        );
        let req = into_webhook_request(ev).expect("request");
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/webhooks/x");
        assert_eq!(
            req.query,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), " c".to_string()),
                ("a".to_string(), "2".to_string())
            ]
        );
        assert_eq!(req.headers.get("content-type"), Some("text/plain"));
        // A comma-joined value stays one value, as API Gateway sent it.
        assert_eq!(req.headers.get("x-b"), Some("1, 2"));
        assert_eq!(req.headers.get("cookie"), None);
        assert_eq!(req.body, b"hi\r\n");
        assert_eq!(req.source_ip, Some("10.0.0.1".parse().expect("ip")));
        assert_eq!(req.request_id.as_deref(), Some("r1"));
    }

    #[test]
    fn a_base64_body_is_decoded_and_a_bad_one_refused() {
        let ctx = r#""requestContext":{"http":{"method":"POST"}}"#;
        let ok = into_webhook_request(event(&format!(
            r#"{{{ctx},"body":"/wB7fQ==","isBase64Encoded":true}}"#
        )))
        .expect("request");
        assert_eq!(ok.body, [0xff, 0x00, b'{', b'}']);
        let bad = into_webhook_request(event(&format!(
            r#"{{{ctx},"body":"*not*","isBase64Encoded":true}}"#
        )));
        let Err(bad) = bad else {
            panic!("a bad base64 body was accepted")
        };
        let resp = bad_event_response(&bad);
        assert_eq!(resp.status_code, 400);
    }

    #[test]
    fn null_headers_and_no_body_are_an_empty_request() {
        let req = into_webhook_request(event(
            r#"{"requestContext":{"http":{"method":"POST","path":"/p"}},"headers":null,"body":null}"#,
        ))
        .expect("request");
        assert!(req.headers.is_empty());
        assert!(req.body.is_empty());
        // No rawPath: the context's path.
        assert_eq!(req.path, "/p");
    }

    #[test]
    fn a_query_no_uri_may_hold_is_read_not_refused() {
        // A raw space, quotes, angle brackets and a '#': http::Uri refuses each.
        let req = into_webhook_request(event(
            r#"{"rawPath":"/webhooks/x","rawQueryString":"q=a b&r=\"<x>\"&s=1#2",
                "requestContext":{"http":{"method":"POST"}}}"#,
        ))
        .expect("request");
        assert_eq!(
            req.query,
            vec![
                ("q".to_string(), "a b".to_string()),
                ("r".to_string(), "\"<x>\"".to_string()),
                ("s".to_string(), "1#2".to_string())
            ]
        );
    }

    #[test]
    fn the_response_is_payload_v2_json() {
        let mut resp = WebhookResponse::json(405, serde_json::json!({"error": "no"}));
        resp.headers.push(("allow", "POST".into()));
        let json = serde_json::to_value(response(resp)).expect("serialises");
        assert_eq!(json["statusCode"], 405);
        assert_eq!(json["headers"]["allow"], "POST");
        assert_eq!(json["headers"]["content-type"], "application/json");
        assert_eq!(json["body"], r#"{"error":"no"}"#);
        assert_eq!(json["isBase64Encoded"], false);
    }
}
