//! Providers: one file each behind the [`Provider`] trait. The registry in [`build`] is the
//! only line a new provider adds outside its own file.

use std::sync::Arc;

use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;

pub mod crypto;
pub mod github;
pub mod hmac_generic;
pub mod standard_webhooks;
pub mod stripe;
pub mod telegram;

/// Why a request failed verification. Each maps to a 401 and a stable trail reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing signature header {0}")]
    MissingSignature(String),
    #[error("malformed signature: {0}")]
    MalformedSignature(String),
    #[error("no signature matched any live key")]
    SignatureMismatch,
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
            VerifyError::MalformedSignature(_) => "malformed_signature",
            VerifyError::SignatureMismatch => "signature_mismatch",
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

/// What the envelope needs from the provider's event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The provider's own event id; the dedupe key is `source#event_id` (body hash if none).
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    /// Unix milliseconds.
    pub occurred_at_ms: Option<i64>,
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

pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Provider name as written in config (`stripe`, `github`, …).
    fn name(&self) -> &'static str;

    /// Verify the exact request bytes against the live keys, in constant time.
    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError>;

    /// Pull the event id, type and time out of a verified request.
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Extracted, ExtractError>;

    /// Headers that make `input.body` verify with the first live key (for `inlet sign`).
    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError>;
}

/// The names `build` accepts, for error messages and `inlet check`.
pub const PROVIDERS: &[&str] = &[
    "stripe",
    "github",
    "standard_webhooks",
    "svix",
    "telegram",
    "hmac",
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
        "hmac" => Ok(Arc::new(hmac_generic::GenericHmac::from_config(
            options, secrets,
        )?)),
        other => Err(ProviderConfigError(format!(
            "unknown provider {other:?}; known: {}",
            PROVIDERS.join(", ")
        ))),
    }
}
