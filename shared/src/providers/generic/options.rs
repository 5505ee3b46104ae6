//! The `options` table of a `generic` source, as written in TOML, and its checks. Every
//! field is documented with examples in `docs/generic-scheme.md`; presets for the named
//! providers are in `shared/testdata/presets.toml`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::providers::crypto::{HmacAlgorithm, SignatureEncoding};

/// A problem with a generic source's options, found once at config time. The text is what the
/// user sees after `<source> options: `, so it names the option and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(super) struct OptionsError(pub(super) String);

impl From<&str> for OptionsError {
    fn from(why: &str) -> Self {
        Self(why.to_string())
    }
}

impl From<String> for OptionsError {
    fn from(why: String) -> Self {
        Self(why)
    }
}

/// Where a value is in the request. In TOML: `{ header = "X-Sig" }`, `{ query = "sig" }`,
/// `{ form_field = "signature" }` or `{ json_pointer = "/signature/signature" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Location {
    Header(String),
    Query(String),
    FormField(String),
    JsonPointer(String),
}

impl Location {
    /// How errors name it (`x-signature`, `query parameter sig`, `body field /sig`).
    pub(super) fn describe(&self) -> String {
        match self {
            Location::Header(name) => name.to_ascii_lowercase(),
            Location::Query(name) => format!("query parameter {name}"),
            Location::FormField(name) => format!("form field {name}"),
            Location::JsonPointer(pointer) => format!("body field {pointer}"),
        }
    }

    pub(super) fn check(&self, field: &str) -> Result<(), OptionsError> {
        match self {
            Location::Header(n) | Location::Query(n) | Location::FormField(n)
                if n.trim().is_empty() =>
            {
                Err(OptionsError(format!(
                    "{field} must name a header, parameter or field"
                )))
            }
            Location::JsonPointer(p) if !p.starts_with('/') => Err(OptionsError(format!(
                "{field} json_pointer must start with '/' (RFC 6901), got {p:?}"
            ))),
            _ => Ok(()),
        }
    }

    pub(super) fn trimmed(self) -> Self {
        match self {
            Location::Header(n) => Location::Header(n.trim().to_string()),
            other => other,
        }
    }
}

/// One value or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub(super) fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum SchemeKind {
    #[default]
    Hmac,
    /// A static token compared for equality (Telegram, GitLab, Checkout.com `Authorization`).
    TokenEquals,
    /// `Authorization: Basic base64(user:pass)`; each secret is `user:pass` (Postmark).
    BasicAuth,
    /// Ed25519 public keys (Discord, Standard Webhooks `v1a`).
    Ed25519,
    /// ECDSA P-256 with SHA-256 public keys (SendGrid).
    EcdsaP256,
}

/// How configured secrets turn into key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum KeyEncoding {
    Utf8,
    /// Adyen-style keys (64 hex characters → 32 bytes); Discord public keys.
    Hex,
    /// Standard alphabet, padding optional.
    Base64,
    /// Standard Webhooks: strip `whsec_` (secrets) or `whpk_` (public keys), then base64.
    Whsec,
}

/// The shape of the signature carrier's value.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum FormatSpec {
    /// The whole value (after `prefix`) is one signature.
    Plain,
    /// `t=…,v1=…,v1=…` (Stripe) or `ts=…;h1=…` (Paddle): any signature entry may match.
    KvList {
        #[serde(default = "comma")]
        item_separator: String,
        #[serde(default = "equals")]
        kv_separator: String,
        #[serde(default)]
        timestamp_key: Option<String>,
        signature_key: String,
    },
    /// `v1,<sig> v1,<sig>` (Standard Webhooks): space-separated, unknown versions skipped.
    VersionedList {
        versions: Vec<String>,
        #[serde(default = "comma")]
        version_separator: String,
    },
}

fn comma() -> String {
    ",".into()
}

fn equals() -> String {
    "=".into()
}

/// The message, as a template string or a list of part names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum MessageSpec {
    Template(String),
    Parts(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum TsUnit {
    #[default]
    Seconds,
    Milliseconds,
    /// `2026-01-01T00:00:00.123456789Z` (Twitch, PayPal).
    Rfc3339,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum AmountUnit {
    /// Integer minor units (cents): Stripe, Adyen, Checkout.com, Razorpay.
    #[default]
    Minor,
    /// A decimal in major units (`"10.00"`), converted with the event's currency.
    Major,
}

/// A clock-skew limit in seconds, or `"unlimited"` (Stripe's SDKs accept any future `t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window(pub Option<i64>);

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Window;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds (0 or more) or \"unlimited\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Window, E> {
                i64::try_from(v)
                    .map(|s| Window(Some(s)))
                    .map_err(|_| E::custom("tolerance too large"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Window, E> {
                if v < 0 {
                    return Err(E::custom(
                        "a tolerance cannot be negative; use \"unlimited\" for no limit",
                    ));
                }
                Ok(Window(Some(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Window, E> {
                match v {
                    "unlimited" => Ok(Window(None)),
                    other => Err(E::custom(format!(
                        "expected a number of seconds or \"unlimited\", got {other:?}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A condition on the request that marks a handshake: a JSON field or a header equal to a
/// value (`{ json_pointer = "/type", equals = "url_verification" }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct When {
    #[serde(default)]
    pub json_pointer: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    pub equals: serde_json::Value,
}

fn hub_mode() -> String {
    "hub.mode".into()
}
fn subscribe() -> String {
    "subscribe".into()
}
fn hub_verify_token() -> String {
    "hub.verify_token".into()
}
fn hub_challenge() -> String {
    "hub.challenge".into()
}
fn verify_token() -> String {
    "verify_token".into()
}
fn plain_token() -> String {
    "plainToken".into()
}
fn encrypted_token() -> String {
    "encryptedToken".into()
}

/// Endpoint checks answered synchronously (never enqueued). Defaults follow the provider each
/// responder was modelled on.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum HandshakeSpec {
    /// Meta: `GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` → the challenge as
    /// text when the token equals the secret whose id is `verify_token_secret`.
    EchoQueryParam {
        #[serde(default = "hub_mode")]
        mode_param: String,
        #[serde(default = "subscribe")]
        mode: String,
        #[serde(default = "hub_verify_token")]
        token_param: String,
        #[serde(default = "hub_challenge")]
        challenge_param: String,
        #[serde(default = "verify_token")]
        verify_token_secret: String,
    },
    /// Slack `url_verification`: after the signature verifies, `{"challenge": …}` as JSON.
    EchoJsonField { when: When, field: String },
    /// Twitch `webhook_callback_verification`: after verification, the field as text/plain.
    EchoText { when: When, field: String },
    /// Zoom `endpoint.url_validation`: `{"plainToken": p, "encryptedToken": hex(HMAC(key, p))}`
    /// with the key that verified the request.
    HmacJsonResponse {
        when: When,
        field: String,
        #[serde(default = "plain_token")]
        plain_key: String,
        #[serde(default = "encrypted_token")]
        encrypted_key: String,
    },
    /// Discord PING: after verification, a fixed JSON body (`body = { type = 1 }`).
    StaticJson { when: When, body: serde_json::Value },
}

/// The whole options table. Legacy fields of the former `hmac` provider (`header`,
/// `timestamp_header`, `id_header`, `id_pointer`, `type_header`, `type_pointer`,
/// `occurred_at_pointer`) are shorthands of the structured ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GenericOptions {
    #[serde(default)]
    pub scheme: SchemeKind,
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    #[serde(default)]
    pub allow_weak: bool,
    #[serde(default)]
    pub key_encoding: Option<KeyEncoding>,

    #[serde(default)]
    pub signature: Option<Location>,
    /// Shorthand for `signature = { header = … }`.
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub format: Option<FormatSpec>,
    #[serde(default)]
    pub encoding: Option<SignatureEncoding>,

    #[serde(default)]
    pub message: Option<MessageSpec>,
    #[serde(default)]
    pub message_separator: String,
    /// The public URL the sender signs (one, or several variants any of which may match).
    #[serde(default)]
    pub url: Option<OneOrMany<String>>,

    #[serde(default)]
    pub timestamp: Option<Location>,
    /// Shorthand for `timestamp = { header = … }`.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(default)]
    pub timestamp_unit: TsUnit,
    #[serde(default)]
    pub tolerance_seconds: Option<Window>,
    #[serde(default)]
    pub future_tolerance_seconds: Option<Window>,

    #[serde(default)]
    pub event_id: Option<OneOrMany<Location>>,
    #[serde(default)]
    pub id_header: Option<String>,
    #[serde(default)]
    pub id_pointer: Option<String>,
    #[serde(default)]
    pub event_type: Option<Location>,
    #[serde(default)]
    pub type_header: Option<String>,
    #[serde(default)]
    pub type_pointer: Option<String>,
    #[serde(default)]
    pub occurred_at: Option<Location>,
    #[serde(default)]
    pub occurred_at_pointer: Option<String>,
    #[serde(default)]
    pub occurred_at_unit: TsUnit,
    #[serde(default)]
    pub entity: Option<Location>,
    #[serde(default)]
    pub object_id: Option<Location>,
    #[serde(default)]
    pub amount: Option<Location>,
    #[serde(default)]
    pub amount_unit: AmountUnit,
    #[serde(default)]
    pub currency: Option<Location>,
    #[serde(default)]
    pub canonical: BTreeMap<String, String>,
    #[serde(default)]
    pub items_pointer: Option<String>,

    #[serde(default)]
    pub handshake: Option<HandshakeSpec>,
}

/// `structured` or its legacy shorthand, not both.
pub(super) fn either<T>(
    structured: (&str, Option<T>),
    shorthand: (&str, Option<T>),
) -> Result<Option<T>, OptionsError> {
    match (structured.1, shorthand.1) {
        (Some(_), Some(_)) => Err(OptionsError(format!(
            "give {} or its shorthand {}, not both",
            structured.0, shorthand.0
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::rfc3339_ms_any_year as parse_rfc3339_ms;

    #[test]
    fn rfc3339_with_nanoseconds_and_offsets_becomes_unix_milliseconds() {
        assert_eq!(
            parse_rfc3339_ms("2026-01-01T00:00:00.123456789Z"),
            Some(1_767_225_600_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-01-01T02:00:00+02:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2019-05-06T17:15:34.1+02:00"),
            Some(1_557_155_734_100)
        );
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0200",
            "2026-01-01T00:00:00Zjunk",
            "yesterday at noon, roughly",
            "２026-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tolerance_window_is_seconds_or_unlimited() {
        let w: Window = serde_json::from_value(serde_json::json!(5)).unwrap();
        assert_eq!(w, Window(Some(5)));
        let w: Window = serde_json::from_value(serde_json::json!("unlimited")).unwrap();
        assert_eq!(w, Window(None));
        assert!(serde_json::from_value::<Window>(serde_json::json!(-1)).is_err());
        assert!(serde_json::from_value::<Window>(serde_json::json!("forever")).is_err());
    }
}
