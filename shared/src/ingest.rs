//! The ingest path: route, check, verify, build the envelope, enqueue — and answer 2xx only
//! once the envelope is durably on the queue.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::config::{Config, Source};
use crate::envelope::{self, Envelope, VerifiedBy, Via, BASE_HEADER_ALLOW_LIST, ENVELOPE_VERSION};
use crate::metrics;
use crate::ports::{Clock, Ledger, OutboundMessage, Queue, TrailEntry, TrailStatus};
use crate::request::{Headers, InboundRequest};

/// An HTTP request as the ingest path needs it, whatever carried it (API Gateway, a
/// Function URL, or the `inlet dev` server).
#[derive(Debug, Clone, Default)]
pub struct WebhookRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Headers,
    /// Exact bytes as received (already base64-decoded when the event said so).
    pub body: Vec<u8>,
    /// The transport stopped reading because the body passed the size limit.
    pub body_over_limit: bool,
    pub source_ip: Option<IpAddr>,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Extra response headers (e.g. `Allow` on a 405).
    pub headers: Vec<(&'static str, String)>,
}

impl WebhookResponse {
    fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string(),
            headers: Vec::new(),
        }
    }
}

/// Why a request was refused. The status code and the trail reason come from here only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoRoute,
    UnknownSource,
    MethodNotAllowed,
    IpNotAllowed,
    TooLarge { limit: usize },
    Unverified { reason: &'static str },
    Malformed { message: String },
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NoRoute | Refusal::UnknownSource => 404,
            Refusal::MethodNotAllowed => 405,
            Refusal::IpNotAllowed => 403,
            Refusal::TooLarge { .. } => 413,
            Refusal::Unverified { .. } => 401,
            Refusal::Malformed { .. } => 400,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoRoute => "no_route",
            Refusal::UnknownSource => "unknown_source",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::IpNotAllowed => "ip_not_allowed",
            Refusal::TooLarge { .. } => "body_too_large",
            Refusal::Unverified { reason } => reason,
            Refusal::Malformed { .. } => "malformed",
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::NoRoute => "expected POST /webhooks/{source}".into(),
            Refusal::UnknownSource => "no such source".into(),
            Refusal::MethodNotAllowed => "use POST".into(),
            Refusal::IpNotAllowed => "caller address not allowed".into(),
            Refusal::TooLarge { limit } => format!("body larger than {limit} bytes"),
            // Deliberately vague: which check failed is in our trail, not in the answer.
            Refusal::Unverified { .. } => "signature verification failed".into(),
            Refusal::Malformed { message } => message.clone(),
        }
    }
}

/// Refusals are recorded in the trail, but an attacker must not turn them into unbounded
/// writes: past `per_second` per source the rest are only logged and counted.
#[derive(Debug)]
struct RefusalBudget {
    per_second: u32,
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

impl RefusalBudget {
    fn allow(&self, source: &str, now_ms: i64) -> bool {
        let Ok(mut w) = self.windows.lock() else {
            return false;
        };
        let second = now_ms / 1000;
        let entry = w.entry(source.to_string()).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        entry.1 += 1;
        entry.1 <= self.per_second
    }
}

pub struct Ingest {
    config: Arc<Config>,
    queue: Arc<dyn Queue>,
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    budget: RefusalBudget,
}

/// The `{source}` of `…/webhooks/{source}`. A stage prefix (`/prod/webhooks/x`) is allowed
/// because HTTP API named stages keep it in the raw path.
pub fn source_from_path(path: &str) -> Option<&str> {
    let mut segments = path
        .trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty());
    let mut prev = None;
    for seg in segments.by_ref() {
        if prev == Some("webhooks") {
            return if segments.next().is_none() {
                Some(seg)
            } else {
                None
            };
        }
        prev = Some(seg);
    }
    None
}

impl Ingest {
    pub fn new(
        config: Arc<Config>,
        queue: Arc<dyn Queue>,
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config,
            queue,
            ledger,
            clock,
            budget: RefusalBudget {
                per_second: 20,
                windows: Mutex::new(HashMap::new()),
            },
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn handle(&self, req: WebhookRequest) -> WebhookResponse {
        let now = self.clock.now_ms();
        let source_id = source_from_path(&req.path).unwrap_or("").to_string();
        match self.accept(&req, now).await {
            Ok(Accepted::Enqueued {
                dedupe_key,
                message_id,
            }) => {
                metrics::count(now, "enqueued", &source_id);
                WebhookResponse::json(
                    200,
                    serde_json::json!({"status": "accepted", "dedupe_key": dedupe_key, "message_id": message_id}),
                )
            }
            Ok(Accepted::QueueDown { error }) => {
                // The provider must retry: nothing was stored, so nothing is acknowledged.
                warn!(source = %source_id, error = %error, request_id = ?req.request_id, "enqueue failed; answering 503");
                metrics::count(now, "enqueue_failed", &source_id);
                WebhookResponse::json(
                    503,
                    serde_json::json!({"error": "enqueue_failed", "message": "temporarily unavailable, retry"}),
                )
            }
            Err(refusal) => {
                self.record_refusal(&source_id, &req, &refusal, now).await;
                let mut resp = WebhookResponse::json(
                    refusal.status(),
                    serde_json::json!({"error": refusal.reason(), "message": refusal.message()}),
                );
                if refusal == Refusal::MethodNotAllowed {
                    resp.headers.push(("allow", "POST".to_string()));
                }
                resp
            }
        }
    }

    async fn accept(&self, req: &WebhookRequest, now: i64) -> Result<Accepted, Refusal> {
        let source_id = source_from_path(&req.path).ok_or(Refusal::NoRoute)?;
        let source = self
            .config
            .source(source_id)
            .ok_or(Refusal::UnknownSource)?;
        if !req.method.eq_ignore_ascii_case("POST") {
            return Err(Refusal::MethodNotAllowed);
        }
        if !source.ip_allowed(req.source_ip) {
            return Err(Refusal::IpNotAllowed);
        }
        let limit = self.config.settings.max_body_bytes;
        if req.body_over_limit || req.body.len() > limit {
            return Err(Refusal::TooLarge { limit });
        }
        let inbound = InboundRequest {
            method: &req.method,
            headers: &req.headers,
            query: &req.query,
            body: &req.body,
        };
        let verified = source
            .provider
            .verify(&inbound, now)
            .map_err(|e| Refusal::Unverified { reason: e.reason() })?;
        let extracted = source
            .provider
            .extract(&inbound)
            .map_err(|e| Refusal::Malformed { message: e.0 })?;

        let envelope = build_envelope(source, req, now, verified, extracted);
        let dedupe_key = envelope.dedupe_key.clone();
        info!(
            source = %source.id,
            dedupe_key = %dedupe_key,
            event_type = envelope.event_type.as_deref().unwrap_or(""),
            key_id = envelope.verified.key_id.as_deref().unwrap_or(""),
            request_id = ?req.request_id,
            "verified"
        );
        match self
            .queue
            .send(&OutboundMessage::new(envelope.to_json()))
            .await
        {
            Ok(message_id) => Ok(Accepted::Enqueued {
                dedupe_key,
                message_id,
            }),
            Err(e) => Ok(Accepted::QueueDown {
                error: e.to_string(),
            }),
        }
    }

    async fn record_refusal(
        &self,
        source_id: &str,
        req: &WebhookRequest,
        refusal: &Refusal,
        now: i64,
    ) {
        let ip = req.source_ip.map(|ip| ip.to_string());
        // Reason and caller only: never the body, headers or secrets.
        warn!(
            source = %source_id,
            status = refusal.status(),
            reason = refusal.reason(),
            source_ip = ip.as_deref().unwrap_or(""),
            request_id = ?req.request_id,
            "refused"
        );
        metrics::emit(
            now,
            "refused",
            metrics::Unit::Count,
            1.0,
            source_id,
            Some(refusal.reason()),
        );
        // Unknown sources are not recorded: anyone can invent paths, and the trail is per source.
        if self.config.source(source_id).is_none() || !self.budget.allow(source_id, now) {
            return;
        }
        let entry = TrailEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at_ms: now,
            source: source_id.to_string(),
            status: TrailStatus::Refused,
            dedupe_key: None,
            provider_event_id: None,
            event_type: None,
            reason: Some(refusal.reason().to_string()),
            source_ip: ip,
        };
        if let Err(e) = self.ledger.append(&entry).await {
            warn!(source = %source_id, error = %e, "could not record refusal in the trail");
        }
    }
}

enum Accepted {
    Enqueued {
        dedupe_key: String,
        message_id: String,
    },
    QueueDown {
        error: String,
    },
}

fn build_envelope(
    source: &Source,
    req: &WebhookRequest,
    now: i64,
    verified: crate::providers::Verified,
    extracted: crate::providers::Extracted,
) -> Envelope {
    let body_sha256 = envelope::sha256_hex(&req.body);
    let (body, body_encoding) = envelope::encode_body(&req.body);
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers.iter() {
        if BASE_HEADER_ALLOW_LIST.contains(&k) || source.keep_headers.iter().any(|h| h == k) {
            headers.insert(k.to_string(), v.to_string());
        }
    }
    Envelope {
        v: ENVELOPE_VERSION,
        source: source.id.clone(),
        provider: source.provider.name().to_string(),
        via: Via::Webhook,
        dedupe_key: envelope::dedupe_key(&source.id, extracted.event_id.as_deref(), &body_sha256),
        provider_event_id: extracted.event_id,
        event_type: extracted.event_type,
        canonical_type: None,
        entity: None,
        amount: None,
        currency: None,
        occurred_at: extracted.occurred_at_ms.map(envelope::rfc3339_ms),
        received_at: envelope::rfc3339_ms(now),
        verified: VerifiedBy {
            scheme: verified.scheme.to_string(),
            key_id: verified.key_id,
        },
        headers,
        body,
        body_encoding,
        body_sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::source_from_path;

    #[test]
    fn source_is_the_segment_after_webhooks() {
        assert_eq!(source_from_path("/webhooks/stripe"), Some("stripe"));
        assert_eq!(source_from_path("/webhooks/stripe/"), Some("stripe"));
        assert_eq!(source_from_path("/prod/webhooks/github"), Some("github"));
        assert_eq!(source_from_path("/webhooks/stripe/extra"), None);
        assert_eq!(source_from_path("/webhooks"), None);
        assert_eq!(source_from_path("/hooks/stripe"), None);
        assert_eq!(source_from_path(""), None);
    }
}
