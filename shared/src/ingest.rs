//! The ingest path: route, check, verify, build the envelope, enqueue — and answer 2xx only
//! once the envelope is durably on the queue.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::config::{Config, Source};
use crate::envelope::{
    self, Envelope, PartOf, VerifiedBy, Via, BASE_HEADER_ALLOW_LIST, ENVELOPE_VERSION,
};
use crate::metrics;
use crate::ordering;
use crate::ports::{
    queue::MAX_BATCH, Clock, Ledger, OutboundMessage, Queue, QueueError, TrailEntry, TrailStatus,
};
use crate::providers::{Extracted, HandshakeReply, Verified, VerifyError};
use crate::request::{Headers, InboundRequest};
use crate::trail::{self, TrailBudget};

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

impl WebhookRequest {
    /// A raw query string decoded into pairs, the way API Gateway decodes
    /// `queryStringParameters`: every transport hands providers the same values (Meta's
    /// `hub.verify_token` may carry any character).
    pub fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
        raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default()
    }
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
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_string(),
            headers: Vec::new(),
        }
    }
}

impl From<HandshakeReply> for WebhookResponse {
    fn from(reply: HandshakeReply) -> Self {
        Self {
            status: reply.status,
            content_type: reply.content_type,
            body: reply.body,
            headers: Vec::new(),
        }
    }
}

/// Why a request was refused. The status code and the trail reason come from here only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoRoute,
    UnknownSource,
    /// The source is poll-only (`webhooks = false`).
    PollOnly,
    /// Over the source's `rate_limit` (enforced locally): retry after this many seconds.
    RateLimited {
        retry_after: u64,
    },
    MethodNotAllowed,
    IpNotAllowed,
    TooLarge {
        limit: usize,
    },
    Unverified {
        reason: &'static str,
    },
    /// Verification could not run on our side (certificate fetch): the sender must retry.
    VerifierUnavailable,
    Malformed {
        message: String,
    },
}

impl From<VerifyError> for Refusal {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Unavailable(_) => Refusal::VerifierUnavailable,
            other => Refusal::Unverified {
                reason: other.reason(),
            },
        }
    }
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NoRoute | Refusal::UnknownSource | Refusal::PollOnly => 404,
            Refusal::RateLimited { .. } => 429,
            Refusal::MethodNotAllowed => 405,
            Refusal::IpNotAllowed => 403,
            Refusal::TooLarge { .. } => 413,
            Refusal::Unverified { .. } => 401,
            Refusal::VerifierUnavailable => 503,
            Refusal::Malformed { .. } => 400,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoRoute => "no_route",
            Refusal::UnknownSource => "unknown_source",
            Refusal::PollOnly => "poll_only",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::IpNotAllowed => "ip_not_allowed",
            Refusal::TooLarge { .. } => "body_too_large",
            Refusal::Unverified { reason } => reason,
            Refusal::VerifierUnavailable => "verifier_unavailable",
            Refusal::Malformed { .. } => "malformed",
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::NoRoute => "expected POST /webhooks/{source}".into(),
            Refusal::UnknownSource => "no such source".into(),
            Refusal::PollOnly => "this source takes no webhooks (it is polled)".into(),
            Refusal::RateLimited { .. } => "too many requests, retry later".into(),
            Refusal::MethodNotAllowed => "use POST".into(),
            Refusal::IpNotAllowed => "caller address not allowed".into(),
            Refusal::TooLarge { limit } => format!("body larger than {limit} bytes"),
            // Deliberately vague: which check failed is in our trail, not in the answer.
            Refusal::Unverified { .. } => "signature verification failed".into(),
            Refusal::VerifierUnavailable => "temporarily unavailable, retry".into(),
            Refusal::Malformed { message } => message.clone(),
        }
    }
}

/// Token buckets per source, `(tokens, last refill ms)`. Only a single process can keep
/// them (`inlet dev`); a Lambda would keep one per container, which limits nothing.
#[derive(Default)]
struct RateLimits {
    buckets: Mutex<HashMap<String, (f64, i64)>>,
}

impl RateLimits {
    /// `Err(seconds to wait)` when the source's bucket is empty.
    fn take(&self, source: &str, (per_second, burst): (u32, u32), now_ms: i64) -> Result<(), u64> {
        let Ok(mut b) = self.buckets.lock() else {
            return Ok(());
        };
        let (tokens, last) = b
            .entry(source.to_string())
            .or_insert((f64::from(burst), now_ms));
        let refill = (now_ms - *last).max(0) as f64 / 1000.0 * f64::from(per_second);
        *tokens = (*tokens + refill).min(f64::from(burst));
        *last = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / f64::from(per_second)).ceil().max(1.0) as u64)
        }
    }
}

pub struct Ingest {
    config: Arc<Config>,
    queue: Arc<dyn Queue>,
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    /// Refusals are recorded in the trail, but an attacker must not turn them into
    /// unbounded writes: past the bound of `crate::trail` (per source and second, over every
    /// instance) the rest are only logged and counted.
    budget: TrailBudget,
    /// `Some` where sources' `rate_limit`s are enforced (`inlet dev`).
    limits: Option<RateLimits>,
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
            budget: TrailBudget::default(),
            limits: None,
        }
    }

    /// Enforce each source's `rate_limit` in this process (`inlet dev`).
    pub fn with_rate_limits(mut self) -> Self {
        self.limits = Some(RateLimits::default());
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn handle(&self, req: WebhookRequest) -> WebhookResponse {
        let now = self.clock.now_ms();
        let source_id = source_from_path(&req.path).unwrap_or("").to_string();
        match self.accept(&req, now).await {
            Ok(Accepted::Enqueued { sent, ack }) => {
                let n = sent.len();
                // One metric line per request, counting every event it carried.
                metrics::emit(
                    now,
                    "enqueued",
                    metrics::Unit::Count,
                    n as f64,
                    &source_id,
                    None,
                );
                if let Some(reply) = ack {
                    return WebhookResponse::from(reply);
                }
                let body = match sent.as_slice() {
                    [(dedupe_key, message_id)] => serde_json::json!({
                        "status": "accepted", "events": 1,
                        "dedupe_key": dedupe_key, "message_id": message_id,
                    }),
                    many => serde_json::json!({
                        "status": "accepted", "events": n,
                        "dedupe_keys": many.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                    }),
                };
                WebhookResponse::json(200, body)
            }
            Ok(Accepted::Handshake(reply)) => {
                info!(source = %source_id, request_id = ?req.request_id, "handshake answered");
                metrics::count(now, "handshake", &source_id);
                WebhookResponse::from(reply)
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
                if let Refusal::RateLimited { retry_after } = refusal {
                    resp.headers.push(("retry-after", retry_after.to_string()));
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
        if !source.webhooks {
            return Err(Refusal::PollOnly);
        }
        if let (Some(limits), Some(limit)) = (&self.limits, source.rate_limit) {
            limits
                .take(source_id, limit, now)
                .map_err(|retry_after| Refusal::RateLimited { retry_after })?;
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
        // Endpoint checks come first and for any method (Meta's is a GET); they are answered
        // here and never enqueued.
        if let Some(answer) = source.provider.handshake(&inbound, now) {
            return Ok(Accepted::Handshake(answer?));
        }
        if !req.method.eq_ignore_ascii_case("POST") {
            return Err(Refusal::MethodNotAllowed);
        }
        source.provider.prepare(&inbound).await?;
        let verified = source.provider.verify(&inbound, now)?;
        let events = source
            .provider
            .extract(&inbound)
            .map_err(|e| Refusal::Malformed { message: e.0 })?;

        let count = events.len();
        let request_sha256 = envelope::sha256_hex(&req.body);
        let envelopes: Vec<Envelope> = events
            .into_iter()
            .enumerate()
            .map(|(index, event)| {
                let part = (count > 1 || event.part.is_some()).then(|| PartOf {
                    index,
                    count,
                    request_sha256: request_sha256.clone(),
                });
                build_envelope(source, req, &request_sha256, now, &verified, event, part)
            })
            .collect();
        for env in &envelopes {
            info!(
                source = %source.id,
                dedupe_key = %env.dedupe_key,
                event_type = env.event_type.as_deref().unwrap_or(""),
                canonical_type = env.canonical_type.as_deref().unwrap_or(""),
                key_id = env.verified.key_id.as_deref().unwrap_or(""),
                request_id = ?req.request_id,
                "verified"
            );
        }
        match enqueue_envelopes(&*self.queue, &self.config, &envelopes).await {
            Ok(sent) => Ok(Accepted::Enqueued {
                sent,
                ack: source.provider.acknowledgement(&inbound),
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
        if self.config.source(source_id).is_none() {
            return;
        }
        let entry = TrailEntry {
            // The slot's id replaces it.
            id: String::new(),
            at_ms: now,
            source: source_id.to_string(),
            status: TrailStatus::Refused,
            dedupe_key: None,
            provider_event_id: None,
            event_type: None,
            reason: Some(refusal.reason().to_string()),
            source_ip: ip,
            expires_at_ms: self.config.settings.trail_expires_at(now),
        };
        if let Err(e) = trail::append_bounded(&*self.ledger, &self.budget, entry).await {
            warn!(source = %source_id, error = %e, "could not record refusal in the trail");
        }
    }
}

/// Put every envelope of one request on the queue, or report that not all of them got
/// there — in which case the request is answered 503 and the provider's retry re-sends
/// all of them; the ones already queued are then absorbed by dedupe.
pub(crate) async fn enqueue_envelopes(
    queue: &dyn Queue,
    config: &Config,
    envelopes: &[Envelope],
) -> Result<Vec<(String, String)>, QueueError> {
    if let [only] = envelopes {
        let id = queue.send(&outbound(config, only)).await?;
        return Ok(vec![(only.dedupe_key.clone(), id)]);
    }
    let mut sent = Vec::with_capacity(envelopes.len());
    for chunk in batches(envelopes) {
        let messages: Vec<OutboundMessage> = chunk.iter().map(|e| outbound(config, e)).collect();
        let results = queue.send_batch(&messages).await?;
        for (env, result) in chunk.iter().zip(results) {
            sent.push((env.dedupe_key.clone(), result?));
        }
    }
    Ok(sent)
}

/// An envelope as a queue message, with the FIFO group of its entity (a FIFO queue delivers
/// a group in send order; a standard queue ignores it) and its dedupe key as the FIFO
/// deduplication id.
fn outbound(config: &Config, env: &Envelope) -> OutboundMessage {
    OutboundMessage {
        group_id: Some(ordering::message_group(config.ordering(&env.source), env)),
        deduplication_id: Some(ordering::deduplication_id(&env.dedupe_key)),
        ..OutboundMessage::new(env.to_json())
    }
}

/// SQS caps one `SendMessageBatch` at 1 MiB in total; stay under it with room for the
/// request framing.
const MAX_BATCH_BYTES: usize = 900 * 1024;

/// Consecutive runs of at most [`MAX_BATCH`] envelopes and [`MAX_BATCH_BYTES`] of JSON (an
/// envelope larger than that on its own goes alone, and the queue says whether it fits).
fn batches(envelopes: &[Envelope]) -> Vec<&[Envelope]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, env) in envelopes.iter().enumerate() {
        let size = env.body.len() + 1024;
        if i > start && (i - start == MAX_BATCH || bytes + size > MAX_BATCH_BYTES) {
            out.push(&envelopes[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < envelopes.len() {
        out.push(&envelopes[start..]);
    }
    out
}

enum Accepted {
    Enqueued {
        /// `(dedupe_key, message_id)` per event, in body order; empty for an empty batch.
        sent: Vec<(String, String)>,
        /// The provider's own 2xx answer, if it expects one.
        ack: Option<HandshakeReply>,
    },
    Handshake(HandshakeReply),
    QueueDown {
        error: String,
    },
}

fn build_envelope(
    source: &Source,
    req: &WebhookRequest,
    request_sha256: &str,
    now: i64,
    verified: &Verified,
    extracted: Extracted,
    part: Option<PartOf>,
) -> Envelope {
    // A whole-body event reuses the request's digest: hashing is the costliest pass over a
    // large body after the signature itself.
    let (bytes, body_sha256) = match extracted.part.as_deref() {
        Some(part) => (part, envelope::sha256_hex(part)),
        None => (req.body.as_slice(), request_sha256.to_string()),
    };
    let (body, body_encoding) = envelope::encode_body(bytes);
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
        canonical_type: extracted.canonical_type.map(str::to_string),
        entity: extracted.entity,
        amount: extracted.amount,
        currency: extracted.currency,
        occurred_at: extracted.occurred_at_ms.map(envelope::rfc3339_ms),
        received_at: envelope::rfc3339_ms(now),
        verified: VerifiedBy {
            scheme: verified.scheme.to_string(),
            key_id: verified.key_id.clone(),
        },
        headers,
        body,
        body_encoding,
        body_sha256,
        part,
        replay: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{source_from_path, RateLimits};

    #[test]
    fn a_bucket_takes_its_burst_then_its_rate() {
        let limits = RateLimits::default();
        let t = 1_000_000;
        for _ in 0..5 {
            assert_eq!(limits.take("s", (2, 5), t), Ok(()));
        }
        assert_eq!(limits.take("s", (2, 5), t), Err(1));
        // Half a second refills one token at 2/s.
        assert_eq!(limits.take("s", (2, 5), t + 500), Ok(()));
        assert_eq!(limits.take("s", (2, 5), t + 500), Err(1));
        // Sources have their own buckets; a long quiet spell refills only up to the burst.
        assert_eq!(limits.take("other", (2, 5), t + 500), Ok(()));
        for _ in 0..5 {
            assert_eq!(limits.take("s", (2, 5), t + 60_000), Ok(()));
        }
        assert!(limits.take("s", (2, 5), t + 60_000).is_err());
        // Below one per second, the wait is whole seconds.
        let slow = RateLimits::default();
        assert_eq!(slow.take("s", (1, 1), t), Ok(()));
        assert_eq!(slow.take("s", (1, 1), t + 100), Err(1));
    }

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
