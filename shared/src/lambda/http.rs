//! API Gateway HTTP API (payload v2) and Function URL requests ↔ the ingest path.
//!
//! The event is read straight into the few fields ingest uses. `lambda_http` would first
//! scan the whole event into a raw value to pick among its event shapes, then build an
//! `http::Request` (URL parsing, a header map) that ingest turns into its own request
//! again: measured, that was 44 % of ingest's CPU for a 1 KB webhook (docs/performance.md).
//! The integration tests check this decoding against `lambda_http`'s on the same events.

use std::fmt;

use base64::Engine;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::ingest::{WebhookRequest, WebhookResponse};
use crate::request::Headers;

/// The payload v2 event, as far as ingest reads it; every other field is skipped unread.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpEvent {
    raw_path: Option<String>,
    raw_query_string: Option<String>,
    #[serde(deserialize_with = "headers")]
    headers: Headers,
    request_context: RequestContext,
    body: Option<String>,
    is_base64_encoded: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RequestContext {
    request_id: Option<String>,
    http: HttpContext,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct HttpContext {
    method: Option<String>,
    path: Option<String>,
    source_ip: Option<String>,
}

/// The event carried a body that its own `isBase64Encoded` flag says it cannot have.
#[derive(Debug, thiserror::Error)]
#[error("the event's body is marked base64 but is not valid base64")]
pub struct BadEvent;

impl HttpEvent {
    /// Parse an event as the Lambda runtime hands it over (tests, benches, tools).
    pub fn from_slice(event: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(event)
    }

    /// The domain request: the body's exact bytes (base64-decoded when the event says so),
    /// the query decoded from the raw query string like the `inlet dev` server does.
    pub fn into_webhook_request(self) -> Result<WebhookRequest, BadEvent> {
        let body = match self.body {
            None => Vec::new(),
            Some(b) if self.is_base64_encoded => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|_| BadEvent)?,
            Some(b) => b.into_bytes(),
        };
        let query = WebhookRequest::parse_query(self.raw_query_string.as_deref());
        let ctx = self.request_context;
        Ok(WebhookRequest {
            method: ctx.http.method.unwrap_or_else(|| "GET".into()),
            path: self.raw_path.or(ctx.http.path).unwrap_or_default(),
            query,
            headers: self.headers,
            body,
            body_over_limit: false,
            source_ip: ctx.http.source_ip.and_then(|ip| ip.parse().ok()),
            request_id: ctx.request_id,
        })
    }
}

/// v2 headers are a JSON object of strings (names lowercased, repeats comma-joined by API
/// Gateway); read into the list ingest looks them up in, without an intermediate map. A
/// non-string value (never sent by API Gateway) is skipped rather than failing the request.
fn headers<'de, D: Deserializer<'de>>(d: D) -> Result<Headers, D::Error> {
    struct HeadersVisitor;

    impl<'de> Visitor<'de> for HeadersVisitor {
        type Value = Headers;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of header names to values")
        }

        fn visit_unit<E>(self) -> Result<Headers, E> {
            Ok(Headers::new())
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
            let mut headers = Headers::new();
            while let Some(name) = map.next_key::<String>()? {
                match map.next_value::<HeaderValue>()? {
                    HeaderValue::Text(v) => headers.insert(&name, v),
                    HeaderValue::Other(_) => {}
                }
            }
            Ok(headers)
        }
    }

    d.deserialize_any(HeadersVisitor)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HeaderValue {
    Text(String),
    Other(IgnoredAny),
}

/// The payload v2 response. The body is always text: ingest answers JSON or plain text.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpResponse {
    pub status_code: u16,
    #[serde(serialize_with = "header_object")]
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub is_base64_encoded: bool,
}

fn header_object<S: Serializer>(h: &[(&'static str, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(h.iter().map(|(k, v)| (k, v)))
}

impl From<WebhookResponse> for HttpResponse {
    fn from(resp: WebhookResponse) -> Self {
        let mut headers = Vec::with_capacity(resp.headers.len() + 1);
        headers.push(("content-type", resp.content_type.to_string()));
        headers.extend(resp.headers);
        Self {
            status_code: resp.status,
            headers,
            body: resp.body,
            is_base64_encoded: false,
        }
    }
}

impl From<BadEvent> for HttpResponse {
    fn from(e: BadEvent) -> Self {
        WebhookResponse::json(
            400,
            serde_json::json!({"error": "bad_event", "message": e.to_string()}),
        )
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_event_gives_the_request_and_unknown_fields_are_skipped() {
        let ev = HttpEvent::from_slice(
            br#"{"version":"2.0","rawPath":"/webhooks/x","rawQueryString":"a=1&b=%20c&a=2",
                "cookies":["k=v"],"headers":{"Content-Type":"text/plain","x-n":5},
                "requestContext":{"http":{"method":"POST","sourceIp":"10.0.0.1"},"requestId":"r1",
                "authorizer":{"jwt":{"claims":{}}}},"body":"hi\r\n","isBase64Encoded":false}"#,
        )
        .expect("parses");
        let req = ev.into_webhook_request().expect("request");
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
        assert_eq!(req.headers.get("x-n"), None);
        assert_eq!(req.body, b"hi\r\n");
        assert_eq!(req.source_ip, Some("10.0.0.1".parse().expect("ip")));
        assert_eq!(req.request_id.as_deref(), Some("r1"));
    }

    #[test]
    fn a_base64_body_is_decoded_and_a_bad_one_refused() {
        let ok = HttpEvent::from_slice(br#"{"body":"/wB7fQ==","isBase64Encoded":true}"#)
            .expect("parses")
            .into_webhook_request()
            .expect("request");
        assert_eq!(ok.body, [0xff, 0x00, b'{', b'}']);
        let bad = HttpEvent::from_slice(br#"{"body":"*not*","isBase64Encoded":true}"#)
            .expect("parses")
            .into_webhook_request();
        assert!(bad.is_err());
        let resp = HttpResponse::from(BadEvent);
        assert_eq!(resp.status_code, 400);
    }

    #[test]
    fn null_headers_and_no_body_are_an_empty_request() {
        let req = HttpEvent::from_slice(br#"{"headers":null,"body":null}"#)
            .expect("parses")
            .into_webhook_request()
            .expect("request");
        assert!(req.headers.is_empty());
        assert!(req.body.is_empty());
    }

    #[test]
    fn the_response_is_payload_v2_json() {
        let mut resp = WebhookResponse::json(405, serde_json::json!({"error": "no"}));
        resp.headers.push(("allow", "POST".into()));
        let json = serde_json::to_value(HttpResponse::from(resp)).expect("serialises");
        assert_eq!(json["statusCode"], 405);
        assert_eq!(json["headers"]["allow"], "POST");
        assert_eq!(json["headers"]["content-type"], "application/json");
        assert_eq!(json["body"], r#"{"error":"no"}"#);
        assert_eq!(json["isBase64Encoded"], false);
    }
}
