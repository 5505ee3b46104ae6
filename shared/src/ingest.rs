//! The ingest path: route, check, verify, build the envelope, enqueue — and answer 2xx only
//! once the envelope is durably on the queue.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::config::{Config, Source};
use crate::enqueue::{enqueue_envelopes, Pace};
use crate::envelope::{
    self, Envelope, PartOf, VerifiedBy, Via, BASE_HEADER_ALLOW_LIST, ENVELOPE_VERSION,
};
use crate::metrics;
use crate::ports::{BlobRef, BlobStore, Clock, Ledger, Queue, TrailEntry, TrailStatus};
use crate::providers::{ExtractFailure, Extracted, HandshakeReply, Verified, VerifyError};
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
pub(crate) enum Refusal {
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
    /// More events in one request than `settings.max_events_per_request`.
    TooManyEvents {
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
            Refusal::TooLarge { .. } | Refusal::TooManyEvents { .. } => 413,
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
            Refusal::TooManyEvents { .. } => "too_many_events",
            Refusal::Unverified { reason } => reason,
            Refusal::VerifierUnavailable => "verifier_unavailable",
            Refusal::Malformed { .. } => "malformed",
        }
    }

    /// The code the caller sees. Every verification failure shares one, so a sender without
    /// the secret cannot tell which check it failed (the precise [`Self::reason`] is in the
    /// log, the trail and `inlet verify`).
    pub(crate) fn public_code(&self) -> &'static str {
        match self {
            Refusal::Unverified { .. } => "unverified",
            other => other.reason(),
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
            Refusal::TooManyEvents { limit } => {
                format!("more than {limit} events in one request; send smaller batches")
            }
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
    /// Where bodies too large for a queue message or a bus entry go (claim checks). Without
    /// one, an envelope travels inline up to the queue's limit and a larger one is refused.
    blobs: Option<Arc<dyn BlobStore>>,
}

/// The `{source}` of `…/webhooks/{source}`. A stage prefix (`/prod/webhooks/x`) is allowed
/// because HTTP API named stages keep it in the raw path.
pub(crate) fn source_from_path(path: &str) -> Option<&str> {
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
            blobs: None,
        }
    }

    /// Claim-check large bodies into `blobs`.
    pub fn with_blobs(mut self, blobs: Arc<dyn BlobStore>) -> Self {
        self.blobs = Some(blobs);
        self
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
                info!(source = %source_id, request_id = req.request_id.as_deref(), "handshake answered");
                metrics::count(now, "handshake", &source_id);
                WebhookResponse::from(reply)
            }
            Ok(Accepted::QueueDown { error }) => {
                // The provider must retry: nothing was stored, so nothing is acknowledged.
                warn!(source = %source_id, error = %error, request_id = req.request_id.as_deref(), "enqueue failed; answering 503");
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
                    serde_json::json!({"error": refusal.public_code(), "message": refusal.message()}),
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
        let source = self.admit(req, now)?;
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
        // Methods are case-sensitive (RFC 9110 §9.1): `post` is not POST.
        if req.method != "POST" {
            return Err(Refusal::MethodNotAllowed);
        }
        source.provider.prepare(&inbound).await?;
        let verified = source.provider.verify(&inbound, now)?;
        let (envelopes, claimed) = self.envelopes(source, req, &inbound, verified, now)?;
        // Blob first, message second: a crash between them leaves only an orphan blob (the
        // store's retention removes it) and no acknowledgement, so the provider sends again.
        let started = tokio::time::Instant::now();
        let deadline = self.config.ingest_deadline;
        if let Err(error) = self.store_claimed(claimed, deadline).await {
            return Ok(Accepted::QueueDown { error });
        }
        let pace = Pace::Within(deadline.saturating_sub(started.elapsed()));
        match enqueue_envelopes(&*self.queue, &self.config, &envelopes, pace).await {
            Ok(sent) => Ok(Accepted::Enqueued {
                sent,
                ack: source.provider.acknowledgement(&inbound),
            }),
            Err(e) => Ok(Accepted::QueueDown {
                error: e.to_string(),
            }),
        }
    }

    /// Put the claimed bodies (and the archived request) in the blob store, several at a
    /// time, within `deadline`.
    async fn store_claimed(
        &self,
        claimed: FirstBlobs<'_>,
        deadline: std::time::Duration,
    ) -> Result<(), String> {
        if claimed.is_empty() {
            return Ok(());
        }
        let Some(blobs) = &self.blobs else {
            return Err("no blob store for a claimed body".into());
        };
        let puts = async {
            for chunk in claimed.chunks(CLAIM_PUT_CONCURRENCY) {
                futures_util::future::try_join_all(
                    chunk.iter().map(|(r, bytes)| blobs.put(&r.key, bytes)),
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        match tokio::time::timeout(deadline, puts).await {
            Ok(done) => done,
            Err(_) => Err(format!(
                "the blob store did not take {} blobs within {deadline:?}",
                claimed.len()
            )),
        }
    }

    /// The source the request is for, if it takes this request at all: webhooks on, within
    /// its rate, from an allowed address, not too large. Nothing of the body is read yet.
    fn admit(&self, req: &WebhookRequest, now: i64) -> Result<&Source, Refusal> {
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
        Ok(source)
    }

    /// The verified request's events as envelopes, and the blobs to put first: the bodies
    /// too large to travel inline, and the request itself when its source archives. Counted before the envelopes are built,
    /// and by batching providers before their per-event work: what one request may cost
    /// stays bounded.
    fn envelopes<'r>(
        &self,
        source: &'r Source,
        req: &'r WebhookRequest,
        inbound: &InboundRequest<'_>,
        verified: Verified,
        now: i64,
    ) -> Result<(Vec<Envelope>, FirstBlobs<'r>), Refusal> {
        let max_events = self.config.settings.max_events_per_request;
        let events = source
            .provider
            .extract_at_most(inbound, max_events)
            .map_err(|e| match e {
                ExtractFailure::Malformed(e) => Refusal::Malformed { message: e.0 },
                ExtractFailure::TooManyEvents { .. } => {
                    Refusal::TooManyEvents { limit: max_events }
                }
            })?;
        let received = Received {
            source,
            req,
            sha256: envelope::sha256_hex(&req.body),
            now,
            verified,
            text_budget: envelope::body_field_budget(self.config.settings.max_body_bytes),
            count: events.len(),
            headers: kept_headers(source, &req.headers),
        };
        // With a blob store, anything larger than every target takes inline is claimed;
        // without one, an envelope may fill a queue message and nothing more.
        let inline_max = match self.blobs {
            Some(_) => envelope::INLINE_ENVELOPE_BYTES,
            None => envelope::MAX_MESSAGE_BYTES,
        };
        let mut envelopes = Vec::with_capacity(events.len());
        let mut claimed = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            let (mut env, bytes) = received.envelope(index, event);
            if let Some(r) = env.claim_if_over(bytes.len(), inline_max) {
                if self.blobs.is_none() {
                    return Err(Refusal::TooLarge {
                        limit: self.config.settings.max_body_bytes,
                    });
                }
                claimed.push((r, bytes));
            }
            envelopes.push(env);
        }
        if source.archive {
            match &self.blobs {
                Some(_) => {
                    let doc = crate::archive::ArchivedRequest::new(&crate::archive::Request {
                        source: &source.id,
                        provider: source.provider.name(),
                        method: &req.method,
                        path: &req.path,
                        query: &req.query,
                        headers: &req.headers,
                        verified: VerifiedBy {
                            scheme: received.verified.scheme.to_string(),
                            key_id: received.verified.key_id.clone(),
                        },
                        events: envelopes.len(),
                        body: &req.body,
                        body_sha256: &received.sha256,
                    });
                    let (r, bytes) = crate::archive::prepare(&doc);
                    for env in &mut envelopes {
                        env.request_ref = Some(r.clone());
                    }
                    claimed.push((r, Cow::Owned(bytes)));
                }
                None => {
                    warn!(source = %source.id, "archive is on but there is no blob store; the request is not archived")
                }
            }
        }
        for env in &envelopes {
            info!(
                source = %source.id,
                dedupe_key = %env.dedupe_key,
                event_type = env.event_type.as_deref().unwrap_or(""),
                canonical_type = env.canonical_type.as_deref().unwrap_or(""),
                key_id = env.verified.key_id.as_deref().unwrap_or(""),
                request_id = req.request_id.as_deref(),
                claimed = env.body_ref.is_some(),
                "verified"
            );
        }
        Ok((envelopes, claimed))
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
            request_id = req.request_id.as_deref(),
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

/// The events of an archived request as ingest built them when it came (`inlet
/// redeliver`), received at `received_at_ms` from `caller_ip` (the event's record keeps
/// both): each envelope with its body in place and `request_ref` set, in body order.
pub fn envelopes_from_archive(
    source: &Source,
    doc: &crate::archive::ArchivedRequest,
    request_ref: BlobRef,
    received_at_ms: i64,
    caller_ip: Option<&str>,
) -> Result<Vec<Envelope>, String> {
    let req = WebhookRequest {
        method: doc.method.clone(),
        path: doc.path.clone(),
        query: doc.query.clone(),
        headers: doc.request_headers(),
        body: doc.body_bytes()?,
        body_over_limit: false,
        source_ip: caller_ip.and_then(|ip| ip.parse().ok()),
        request_id: None,
    };
    let inbound = InboundRequest {
        method: &req.method,
        headers: &req.headers,
        query: &req.query,
        body: &req.body,
    };
    let events = source
        .provider
        .extract(&inbound)
        .map_err(|e| format!("the archived request no longer extracts: {e}"))?;
    let received = Received {
        source,
        req: &req,
        sha256: doc.body_sha256.clone(),
        now: received_at_ms,
        // Replaced below by what the archive recorded (the scheme's name is not static there).
        verified: Verified {
            scheme: "",
            key_id: None,
        },
        text_budget: envelope::body_field_budget(req.body.len()),
        count: events.len(),
        headers: kept_headers(source, &req.headers),
    };
    Ok(events
        .into_iter()
        .enumerate()
        .map(|(index, event)| {
            let (mut env, _) = received.envelope(index, event);
            env.verified = doc.verified.clone();
            env.request_ref = Some(request_ref.clone());
            env
        })
        .collect())
}

/// What goes to the blob store before a request's envelopes are queued: each blob's
/// reference and bytes (claimed bodies, and the archived request).
type FirstBlobs<'r> = Vec<(BlobRef, Cow<'r, [u8]>)>;

/// Bodies put in the blob store at once for one request.
const CLAIM_PUT_CONCURRENCY: usize = 8;

/// What every envelope split from one verified request shares.
struct Received<'a> {
    source: &'a Source,
    req: &'a WebhookRequest,
    /// The request body's digest.
    sha256: String,
    now: i64,
    verified: Verified,
    /// The longest a text body may be once escaped (see [`envelope::encode_body`]).
    text_budget: usize,
    /// Events in the request.
    count: usize,
    headers: BTreeMap<String, String>,
}

impl<'a> Received<'a> {
    /// The event's envelope, and its body's bytes (for the blob store, if it is claimed).
    fn envelope(&self, index: usize, extracted: Extracted) -> (Envelope, Cow<'a, [u8]>) {
        let part = (self.count > 1 || extracted.part.is_some()).then(|| PartOf {
            index,
            count: self.count,
            request_sha256: self.sha256.clone(),
        });
        // A whole-body event reuses the request's digest: hashing is the costliest pass over a
        // large body after the signature itself.
        let (bytes, body_sha256): (Cow<'a, [u8]>, String) = match extracted.part {
            Some(part) => {
                let sha = envelope::sha256_hex(&part);
                (Cow::Owned(part), sha)
            }
            None => (Cow::Borrowed(self.req.body.as_slice()), self.sha256.clone()),
        };
        let (body, body_encoding) = envelope::encode_body(&bytes, self.text_budget);
        let source = &self.source.id;
        let env = Envelope {
            v: ENVELOPE_VERSION,
            source: source.clone(),
            provider: self.source.provider.name().to_string(),
            via: Via::Webhook,
            dedupe_key: envelope::dedupe_key(source, extracted.event_id.as_deref(), &body_sha256),
            provider_event_id: extracted
                .unsigned_id
                .or(extracted.event_id)
                .map(envelope::bounded_field),
            event_type: extracted.event_type.map(envelope::bounded_field),
            canonical_type: extracted.canonical_type.map(str::to_string),
            entity: extracted.entity.map(envelope::bounded_field),
            object_id: extracted.object_id.map(envelope::bounded_field),
            amount: extracted.amount,
            currency: extracted.currency,
            occurred_at: extracted.occurred_at_ms.map(crate::time::format_rfc3339_ms),
            received_at: crate::time::format_rfc3339_ms(self.now),
            verified: VerifiedBy {
                scheme: self.verified.scheme.to_string(),
                key_id: self.verified.key_id.clone(),
            },
            caller_ip: self.req.source_ip.map(|ip| ip.to_string()),
            headers: self.headers.clone(),
            body,
            body_encoding,
            body_sha256,
            part,
            body_ref: None,
            request_ref: None,
            replay: None,
        };
        (env, bytes)
    }
}

/// The request headers an envelope keeps: the allow-list and the source's `keep_headers`,
/// each value at most [`envelope::MAX_KEPT_HEADER_BYTES`] so every envelope fits a message.
fn kept_headers(source: &Source, headers: &Headers) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(k, v)| {
            (BASE_HEADER_ALLOW_LIST.contains(k) || source.keep_headers.iter().any(|h| h == k))
                && v.len() <= envelope::MAX_KEPT_HEADER_BYTES
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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
