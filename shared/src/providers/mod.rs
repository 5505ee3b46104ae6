//! Providers: one file each behind the [`Provider`] trait. The registry in [`build`] is the
//! only line a new provider adds outside its own file.

use std::sync::Arc;

use crate::ports::certs::CertFetcher;
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;

pub mod adyen;
pub mod canonical;
pub(crate) mod checkout;
pub(crate) mod crypto;
pub mod discord;
pub mod fields;
pub mod generic;
pub mod github;
pub(crate) mod gitlab;
pub(crate) mod intercom;
pub mod linear;
pub(crate) mod mailgun;
pub mod meta;
pub(crate) mod money;
pub mod paddle;
pub mod paypal;
pub mod postmark;
pub mod razorpay;
pub mod sample;
pub mod sendgrid;
pub mod shopify;
pub mod slack;
pub(crate) mod square;
pub mod standard_webhooks;
pub mod stripe;
#[cfg(test)]
mod suite;
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
    /// The id of the thing the event reports on, as the provider's dashboard shows it: the
    /// payment, refund, order or transaction (Stripe's `data.object.id`, `pi_…`). What a
    /// support person has in hand; searchable in the trail.
    pub object_id: Option<String>,
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

    /// The certificate fetcher of this build, supplied by the composition root once the
    /// provider is built (`bootstrap::supply_cert_fetcher`). Only providers whose key a
    /// request names over the network (PayPal) keep it; without one they verify only what
    /// is pinned.
    fn use_cert_fetcher(&self, _fetcher: &Arc<dyn CertFetcher>) {}

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
    ///
    /// A provider implements this or [`Provider::extract_at_most`], each defined by the
    /// other: one event per request implements `extract`, a batch `extract_at_most`. One that
    /// implemented neither would recurse forever; the provider suite (`suite.rs`) extracts
    /// with both for every registered provider, so it cannot pass unnoticed.
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        self.extract_at_most(req, usize::MAX)
            .map_err(ExtractError::from)
    }

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
    /// (docs/guarantees.md, *Exactly once*). A source's `dedupe_window_seconds` overrides it.
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

type Constructor =
    fn(&str, &serde_json::Value, Vec<Secret>) -> Result<Arc<dyn Provider>, ProviderConfigError>;

/// Every provider: the names a config may give it (aliases after the first) and how it is
/// built from that name, its `options` and its secrets. The one list a new provider joins.
const REGISTRY: &[(&[&str], Constructor)] = &[
    (&["stripe"], |_, o, s| {
        Ok(Arc::new(stripe::Stripe::from_config(o, s)?))
    }),
    (&["github"], |_, o, s| {
        Ok(Arc::new(github::GitHub::from_config(o, s)?))
    }),
    // `standard-webhooks` is the spelling of the spec's own name.
    (
        &["standard_webhooks", "standard-webhooks", "svix"],
        |name, o, s| {
            let name = if name == "svix" {
                name
            } else {
                "standard_webhooks"
            };
            Ok(Arc::new(
                standard_webhooks::StandardWebhooks::from_config_as(name, o, s)?,
            ))
        },
    ),
    (&["telegram"], |_, o, s| {
        Ok(Arc::new(telegram::Telegram::from_config(o, s)?))
    }),
    // `hmac` is the generic scheme's former name: existing configs keep working.
    (&["generic", "hmac"], |name, o, s| {
        Ok(Arc::new(generic::Generic::from_config_as(name, o, s)?))
    }),
    (&["adyen"], |_, o, s| {
        Ok(Arc::new(adyen::Adyen::from_config(o, s)?))
    }),
    (&["checkout", "checkout.com"], |_, o, s| {
        Ok(Arc::new(checkout::Checkout::from_config(o, s)?))
    }),
    (&["razorpay"], |_, o, s| {
        Ok(Arc::new(razorpay::Razorpay::from_config(o, s)?))
    }),
    (&["paypal"], |_, o, s| {
        Ok(Arc::new(paypal::PayPal::from_config(o, s)?))
    }),
    (&["twilio"], |_, o, s| {
        Ok(Arc::new(twilio::Twilio::from_config(o, s)?))
    }),
    (&["sendgrid"], |_, o, s| {
        Ok(Arc::new(sendgrid::SendGrid::from_config(o, s)?))
    }),
    (&["mailgun"], |_, o, s| {
        Ok(Arc::new(mailgun::Mailgun::from_config(o, s)?))
    }),
    (&["postmark"], |_, o, s| {
        Ok(Arc::new(postmark::Postmark::from_config(o, s)?))
    }),
    (&["paddle"], |_, o, s| {
        Ok(Arc::new(paddle::Paddle::from_config(o, s)?))
    }),
    (&["square"], |_, o, s| {
        Ok(Arc::new(square::Square::from_config(o, s)?))
    }),
    (&["intercom"], |_, o, s| {
        Ok(Arc::new(intercom::Intercom::from_config(o, s)?))
    }),
    (&["linear"], |_, o, s| {
        Ok(Arc::new(linear::Linear::from_config(o, s)?))
    }),
    (&["gitlab"], |_, o, s| {
        Ok(Arc::new(gitlab::GitLab::from_config(o, s)?))
    }),
    (&["shopify"], |_, o, s| {
        Ok(Arc::new(shopify::Shopify::from_config(o, s)?))
    }),
    (&["slack"], |_, o, s| {
        Ok(Arc::new(slack::Slack::from_config(o, s)?))
    }),
    (&["meta"], |_, o, s| {
        Ok(Arc::new(meta::Meta::from_config(o, s)?))
    }),
    (&["zoom"], |_, o, s| {
        Ok(Arc::new(zoom::Zoom::from_config(o, s)?))
    }),
    (&["twitch"], |_, o, s| {
        Ok(Arc::new(twitch::Twitch::from_config(o, s)?))
    }),
    (&["discord"], |_, o, s| {
        Ok(Arc::new(discord::Discord::from_config(o, s)?))
    }),
];

/// Every name `build` accepts, aliases included, for error messages and `inlet check`.
pub fn names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().flat_map(|(names, _)| names.iter().copied())
}

/// Whether `name` is a provider `build` knows.
pub(crate) fn is_known(name: &str) -> bool {
    names().any(|n| n == name)
}

/// The closest of `known` to `name` when it is near enough to be a typo (an edit distance of
/// at most 2, or a third of the name): what a "did you mean" offers.
pub fn closest_name<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| k)
}

/// Build a provider from its name, its `options` table (provider-specific, unknown fields
/// refused) and its resolved secrets.
pub fn build(
    name: &str,
    options: &serde_json::Value,
    secrets: Vec<Secret>,
) -> Result<Arc<dyn Provider>, ProviderConfigError> {
    let Some((_, construct)) = REGISTRY.iter().find(|(names, _)| names.contains(&name)) else {
        let hint = closest_name(name, names())
            .map(|k| format!(" (did you mean {k:?}?)"))
            .unwrap_or_default();
        return Err(ProviderConfigError(format!(
            "unknown provider {name:?}{hint}; known: {}",
            names().collect::<Vec<_>>().join(", ")
        )));
    };
    construct(name, options, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_provider_is_refused_with_the_closest_name_and_a_stranger_without() {
        let err = build("strpe", &serde_json::json!({}), Vec::new()).expect_err("refused");
        assert!(err.0.contains("did you mean \"stripe\"?"), "{}", err.0);
        let err = build("paypall", &serde_json::json!({}), Vec::new()).expect_err("refused");
        assert!(err.0.contains("did you mean \"paypal\"?"), "{}", err.0);
        let err = build("mychain", &serde_json::json!({}), Vec::new()).expect_err("refused");
        assert!(!err.0.contains("did you mean"), "{}", err.0);
        assert_eq!(closest_name("githb", ["stripe", "github"]), Some("github"));
    }

    /// Every name and alias builds (with a config its provider refuses, so the error comes
    /// from the provider and not from an unknown name), and no name is listed twice.
    #[test]
    fn every_registered_name_reaches_its_provider_and_names_are_unique() {
        let all: Vec<&str> = names().collect();
        let unique: std::collections::HashSet<&str> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "{all:?}");
        for name in all {
            let got = build(name, &serde_json::json!({"no_such_option": 1}), vec![]);
            let Err(ProviderConfigError(why)) = got else {
                panic!("{name}: built with an unknown option and no secrets");
            };
            assert!(!why.starts_with("unknown provider"), "{name}: {why}");
            assert!(is_known(name));
        }
        assert!(!is_known("stripe2"));
        let Err(ProviderConfigError(why)) = build("stripe2", &serde_json::Value::Null, vec![])
        else {
            panic!("an unknown name built");
        };
        assert!(
            why.contains("checkout.com") && why.contains("standard-webhooks"),
            "{why}"
        );
    }

    #[test]
    fn aliases_build_the_provider_under_its_own_name() {
        let secret = || vec![Secret::new("k", b"whsec_aW5sZXQ=".to_vec(), None)];
        let null = serde_json::Value::Null;
        for (alias, name) in [
            ("standard-webhooks", "standard_webhooks"),
            ("svix", "svix"),
            ("checkout.com", "checkout"),
        ] {
            let p = build(alias, &null, secret()).expect(alias);
            assert_eq!(p.name(), name, "{alias}");
        }
    }
}
