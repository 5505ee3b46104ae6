//! Providers: one file each behind the [`Provider`] trait. The registry in [`build`] is the
//! only line a new provider adds outside its own file.

use std::sync::Arc;

use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;

pub mod adyen;
pub mod canonical;
pub mod checkout;
pub mod crypto;
pub mod discord;
pub mod fields;
pub mod generic;
pub mod github;
pub mod gitlab;
pub mod intercom;
pub mod linear;
pub mod mailgun;
pub mod meta;
pub mod money;
pub mod paddle;
pub mod paypal;
pub mod postmark;
pub mod razorpay;
pub mod sendgrid;
pub mod shopify;
pub mod slack;
pub mod square;
pub mod standard_webhooks;
pub mod stripe;
pub mod telegram;
pub mod twilio;
pub mod twitch;
pub mod zoom;

/// Why a request failed verification. Each maps to a 401 (503 for `Unavailable`) and a
/// stable trail reason; the message is for `inlet verify` and logs, never for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header (or body field, or query parameter) that carries the signature is absent.
    #[error("missing signature: no {0}")]
    MissingSignature(String),
    /// Another value the scheme needs (timestamp, message id, certificate URL…) is absent.
    #[error("missing {0}, which the scheme signs or checks")]
    MissingHeader(String),
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    #[error("the signature matched none of {keys_tried} live key(s)")]
    SignatureMismatch { keys_tried: usize },
    /// A digest the sender put beside the signature disagrees with the body (Twilio `bodySHA256`).
    #[error("body digest mismatch: {0}")]
    BodyDigestMismatch(String),
    /// The key material the request points at is refused (PayPal certificate URL off the
    /// allow-list, expired certificate).
    #[error("certificate refused: {0}")]
    CertificateRefused(String),
    /// Verification could not run for a reason on our side (certificate fetch failed): the
    /// sender should retry, so this answers 503, not 401.
    #[error("verification unavailable: {0}")]
    Unavailable(String),
    #[error("timestamp too old: {age_s}s past, tolerance {tolerance_s}s")]
    TimestampTooOld { age_s: i64, tolerance_s: i64 },
    #[error("timestamp in the future: {ahead_s}s ahead, tolerance {tolerance_s}s")]
    TimestampInFuture { ahead_s: i64, tolerance_s: i64 },
    #[error("no live key configured")]
    NoLiveKey,
}

impl VerifyError {
    /// Stable machine reason recorded in the trail and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingSignature(_) => "missing_signature",
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::MalformedSignature(_) => "malformed_signature",
            VerifyError::SignatureMismatch { .. } => "signature_mismatch",
            VerifyError::BodyDigestMismatch(_) => "body_digest_mismatch",
            VerifyError::CertificateRefused(_) => "certificate_refused",
            VerifyError::Unavailable(_) => "verifier_unavailable",
            VerifyError::TimestampTooOld { .. } => "timestamp_too_old",
            VerifyError::TimestampInFuture { .. } => "timestamp_in_future",
            VerifyError::NoLiveKey => "no_live_key",
        }
    }
}

/// A verified request: which scheme and which key (id only, never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub scheme: &'static str,
    pub key_id: Option<String>,
}

/// The body verified but is not an event this provider can take (→ 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExtractError(pub String);

/// Why a verified request yields no events to queue: not an event the provider can take, or
/// more events than one request may carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractFailure {
    #[error(transparent)]
    Malformed(#[from] ExtractError),
    #[error("the request carries {count} events, over the limit of {limit}")]
    TooManyEvents { count: usize, limit: usize },
}

impl From<ExtractFailure> for ExtractError {
    fn from(failure: ExtractFailure) -> Self {
        match failure {
            ExtractFailure::Malformed(e) => e,
            too_many => ExtractError(too_many.to_string()),
        }
    }
}

/// `Err` when `count` events are more than `limit`.
pub fn at_most(count: usize, limit: usize) -> Result<(), ExtractFailure> {
    if count > limit {
        return Err(ExtractFailure::TooManyEvents { count, limit });
    }
    Ok(())
}

/// What the envelope needs from one of the provider's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The event's id, taken from what the signature covers; the dedupe key is
    /// `source#event_id` (the body digest if none).
    pub event_id: Option<String>,
    /// The provider's own id where its signature does not cover it (GitHub's
    /// `X-GitHub-Delivery`, Shopify's and Razorpay's id headers): shown and searchable as the
    /// provider event id, never the dedupe key — whoever holds one captured request could
    /// send its signed body again under new ids, and each would be a new event.
    pub unsigned_id: Option<String>,
    /// The provider's type, as it names it (`payment_intent.succeeded`, `orders/create`).
    pub event_type: Option<String>,
    /// The provider-neutral type from [`canonical`] (`payment.succeeded`), where one fits.
    pub canonical_type: Option<&'static str>,
    /// Unix milliseconds.
    pub occurred_at_ms: Option<i64>,
    /// Who or what the event is about: customer, player, wallet, chat, message…
    pub entity: Option<String>,
    /// Money the event carries, in minor units of `currency` (see [`money::to_minor`]).
    pub amount: Option<i64>,
    /// ISO 4217, upper case.
    pub currency: Option<String>,
    /// When one request carries several events (SendGrid arrays, Meta `entry[]`, Adyen
    /// `notificationItems[]`): this event's own bytes, sliced from the body, never
    /// re-serialised (Meta sets the item beside raw slices of what identifies its entry).
    /// Never the whole batch again per event: the parts of one request together stay within
    /// the request's size plus a small bounded amount per event. `None` means the event is
    /// the whole body.
    pub part: Option<Vec<u8>>,
}

/// A synchronous answer to a provider's endpoint check (Meta GET, Slack `url_verification`,
/// Zoom `endpoint.url_validation`, Twitch `webhook_callback_verification`, Discord PING).
/// Handshakes are answered by the ingest path and never enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl HandshakeReply {
    pub fn json(body: serde_json::Value) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    pub fn text(body: impl Into<String>) -> Self {
        Self {
            status: 200,
            content_type: "text/plain",
            body: body.into(),
        }
    }
}

/// Inputs for producing a correctly signed request (the `inlet sign` loop and tests).
#[derive(Debug, Clone)]
pub struct SignInput<'a> {
    pub body: &'a [u8],
    pub now_ms: i64,
    /// Delivery id for providers that carry one in a header (GitHub, Standard Webhooks).
    pub delivery_id: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProviderConfigError(pub String);

#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Provider name as written in config (`stripe`, `github`, …).
    fn name(&self) -> &'static str;

    /// Verify the exact request bytes against the live keys, in constant time.
    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError>;

    /// Load what `verify` needs from the network (PayPal's certificate), into the
    /// provider's own cache. Called before `verify` on every request; most providers need
    /// nothing.
    async fn prepare(&self, _req: &InboundRequest<'_>) -> Result<(), VerifyError> {
        Ok(())
    }

    /// If this request is an endpoint check, its answer (after whatever verification the
    /// check implies); `None` for an ordinary event. Runs before `verify`, for every method.
    fn handshake(
        &self,
        _req: &InboundRequest<'_>,
        _now_ms: i64,
    ) -> Option<Result<HandshakeReply, VerifyError>> {
        None
    }

    /// The 2xx answer once this request's events are durably queued, for providers that
    /// expect a particular one (Discord needs an interaction callback within 3 s; Adyen's
    /// classic integrations `[accepted]`). `None`: Inlet's JSON receipt.
    fn acknowledgement(&self, _req: &InboundRequest<'_>) -> Option<HandshakeReply> {
        None
    }

    /// The events in a verified request: usually one; several when the provider batches
    /// them (each gets its own envelope and dedupe key); none for an empty batch.
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError>;

    /// [`Provider::extract`], refusing a request that carries more than `limit` events.
    /// Providers that batch count their items before the per-event work; the default
    /// extracts first, which is as cheap for a provider with one event per request.
    fn extract_at_most(
        &self,
        req: &InboundRequest<'_>,
        limit: usize,
    ) -> Result<Vec<Extracted>, ExtractFailure> {
        let events = self.extract(req)?;
        at_most(events.len(), limit)?;
        Ok(events)
    }

    /// Headers that make `input.body` verify with the first live key (for `inlet sign`).
    /// Public-key schemes cannot sign with what the receiver holds and say so.
    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError>;

    /// How long a delivered event id is remembered: the provider's retry horizon with margin
    /// (README, *Exactly once*). A source's `dedupe_window_seconds` overrides it.
    fn default_dedupe_window_seconds(&self) -> u64 {
        7 * 86_400
    }

    /// A plausible event body for `inlet sign` with no file: `id` is fresh for each call, so
    /// each sample is a new event to dedupe.
    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        serde_json::json!({"id": id, "type": "test.event", "created": now_ms / 1000})
            .to_string()
            .into_bytes()
    }
}

/// The names `build` accepts, for error messages and `inlet check`.
pub const PROVIDERS: &[&str] = &[
    "stripe",
    "github",
    "standard_webhooks",
    "svix",
    "telegram",
    "generic",
    "hmac",
    "adyen",
    "checkout",
    "razorpay",
    "paypal",
    "twilio",
    "sendgrid",
    "mailgun",
    "postmark",
    "paddle",
    "square",
    "intercom",
    "linear",
    "gitlab",
    "shopify",
    "slack",
    "meta",
    "zoom",
    "twitch",
    "discord",
];

/// Build a provider from its name, its `options` table (provider-specific, unknown fields
/// refused) and its resolved secrets.
pub fn build(
    name: &str,
    options: &serde_json::Value,
    secrets: Vec<Secret>,
) -> Result<Arc<dyn Provider>, ProviderConfigError> {
    match name {
        "stripe" => Ok(Arc::new(stripe::Stripe::from_config(options, secrets)?)),
        "github" => Ok(Arc::new(github::GitHub::from_config(options, secrets)?)),
        "standard_webhooks" | "svix" => Ok(Arc::new(
            standard_webhooks::StandardWebhooks::from_config_as(name, options, secrets)?,
        )),
        "telegram" => Ok(Arc::new(telegram::Telegram::from_config(options, secrets)?)),
        // `hmac` is the generic scheme's former name: existing configs keep working.
        "generic" | "hmac" => Ok(Arc::new(generic::Generic::from_config_as(
            name, options, secrets,
        )?)),
        "adyen" => Ok(Arc::new(adyen::Adyen::from_config(options, secrets)?)),
        // Both spellings, with and without punctuation, are accepted.
        "checkout" | "checkout.com" => {
            Ok(Arc::new(checkout::Checkout::from_config(options, secrets)?))
        }
        "standard-webhooks" => Ok(Arc::new(
            standard_webhooks::StandardWebhooks::from_config_as(
                "standard_webhooks",
                options,
                secrets,
            )?,
        )),
        "razorpay" => Ok(Arc::new(razorpay::Razorpay::from_config(options, secrets)?)),
        "paypal" => Ok(Arc::new(paypal::PayPal::from_config(options, secrets)?)),
        "twilio" => Ok(Arc::new(twilio::Twilio::from_config(options, secrets)?)),
        "sendgrid" => Ok(Arc::new(sendgrid::SendGrid::from_config(options, secrets)?)),
        "mailgun" => Ok(Arc::new(mailgun::Mailgun::from_config(options, secrets)?)),
        "postmark" => Ok(Arc::new(postmark::Postmark::from_config(options, secrets)?)),
        "paddle" => Ok(Arc::new(paddle::Paddle::from_config(options, secrets)?)),
        "square" => Ok(Arc::new(square::Square::from_config(options, secrets)?)),
        "intercom" => Ok(Arc::new(intercom::Intercom::from_config(options, secrets)?)),
        "linear" => Ok(Arc::new(linear::Linear::from_config(options, secrets)?)),
        "gitlab" => Ok(Arc::new(gitlab::GitLab::from_config(options, secrets)?)),
        "shopify" => Ok(Arc::new(shopify::Shopify::from_config(options, secrets)?)),
        "slack" => Ok(Arc::new(slack::Slack::from_config(options, secrets)?)),
        "meta" => Ok(Arc::new(meta::Meta::from_config(options, secrets)?)),
        "zoom" => Ok(Arc::new(zoom::Zoom::from_config(options, secrets)?)),
        "twitch" => Ok(Arc::new(twitch::Twitch::from_config(options, secrets)?)),
        "discord" => Ok(Arc::new(discord::Discord::from_config(options, secrets)?)),
        other => Err(ProviderConfigError(format!(
            "unknown provider {other:?}; known: {}",
            PROVIDERS.join(", ")
        ))),
    }
}
