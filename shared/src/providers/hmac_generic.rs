//! `hmac`: a declarative HMAC scheme for senders without a dedicated provider (Razorpay,
//! Shopify, Slack, Zoom, Linear, Checkout.com, Intercom, Square, custom payment providers…).
//! One header carries the signature; the signed message is a template over the raw body,
//! an optional timestamp header and other headers, parsed once at config time.
//!
//! ```toml
//! [sources.slack.provider.options]
//! header = "X-Slack-Signature"
//! prefix = "v0="
//! timestamp_header = "X-Slack-Request-Timestamp"
//! message = "v0:{timestamp}:{body}"
//! ```

use serde::Deserialize;

use super::crypto::{self, HmacAlgorithm, Keyring, SignatureEncoding, TimeUnit, Tolerance};
use super::{
    ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;

const NAME: &str = "hmac";

/// How configured secrets turn into key bytes.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KeyEncoding {
    #[default]
    Utf8,
    /// Adyen-style keys (64 hex characters → 32 bytes).
    Hex,
    /// Standard alphabet, padding optional.
    Base64,
}

impl KeyEncoding {
    fn decode(self, raw: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            KeyEncoding::Utf8 => Ok(raw.to_vec()),
            KeyEncoding::Hex => {
                hex::decode(raw).map_err(|_| "is not hex (key_encoding = \"hex\")".into())
            }
            KeyEncoding::Base64 => std::str::from_utf8(raw)
                .ok()
                .and_then(crypto::decode_base64)
                .ok_or_else(|| "is not base64 (key_encoding = \"base64\")".into()),
        }
    }
}

fn default_message() -> String {
    "{body}".into()
}

fn default_tolerance() -> u32 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HmacOptions {
    /// Header carrying the signature.
    header: String,
    #[serde(default)]
    algorithm: HmacAlgorithm,
    /// MD5 is accepted only with this set: a few legacy iGaming senders still use it.
    #[serde(default)]
    allow_weak: bool,
    #[serde(default)]
    encoding: SignatureEncoding,
    /// Literal in front of the signature (`sha256=`, `v0=`), matched case-insensitively.
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    key_encoding: KeyEncoding,
    /// Header carrying a unix timestamp; enables the freshness check and `{timestamp}`.
    #[serde(default)]
    timestamp_header: Option<String>,
    #[serde(default)]
    timestamp_unit: TimeUnit,
    /// Signed bytes: `{body}`, `{timestamp}`, `{header:NAME}` and literal text (`{{`/`}}`
    /// for literal braces).
    #[serde(default = "default_message")]
    message: String,
    #[serde(default = "default_tolerance")]
    tolerance_seconds: u32,
    #[serde(default = "default_tolerance")]
    future_tolerance_seconds: u32,
    /// Where the event id (dedupe key) comes from: a header, else an RFC 6901 pointer into
    /// the JSON body, else none (the pipeline then dedupes on the body hash).
    #[serde(default)]
    id_header: Option<String>,
    #[serde(default)]
    id_pointer: Option<String>,
    #[serde(default)]
    type_header: Option<String>,
    #[serde(default)]
    type_pointer: Option<String>,
    /// Pointer to a unix-seconds number (or digit string) in the body.
    #[serde(default)]
    occurred_at_pointer: Option<String>,
}

/// One piece of the signed message, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Body,
    /// The timestamp header value exactly as received.
    Timestamp,
    Header(String),
}

const PLACEHOLDERS: &str =
    "known placeholders: {body}, {timestamp}, {header:NAME}; write {{ or }} for a literal brace";

/// Parse a message template. `{timestamp}` needs a `timestamp_header`, and the body must be
/// signed: a template without `{body}` would let anyone replay a captured signature with a
/// body of their choosing.
fn parse_template(template: &str, has_timestamp: bool) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        let (text, tail) = rest.split_at(at);
        literal.push_str(text);
        if let Some(after) = tail.strip_prefix("{{") {
            literal.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            literal.push('}');
            rest = after;
        } else if let Some(open) = tail.strip_prefix('{') {
            let (name, after) = open
                .split_once('}')
                .ok_or_else(|| format!("unclosed '{{' in message {template:?}"))?;
            let part = match (name, name.strip_prefix("header:").map(str::trim)) {
                ("body", _) => Part::Body,
                ("timestamp", _) if has_timestamp => Part::Timestamp,
                ("timestamp", _) => {
                    return Err("{timestamp} in message needs timestamp_header".into())
                }
                (_, Some(header)) if !header.is_empty() => Part::Header(header.to_string()),
                _ => {
                    return Err(format!(
                        "unknown placeholder {{{name}}} in message; {PLACEHOLDERS}"
                    ))
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = after;
        } else {
            return Err(format!(
                "unmatched '}}' in message {template:?}; {PLACEHOLDERS}"
            ));
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    if !parts.contains(&Part::Body) {
        return Err("message must include {body}".into());
    }
    Ok(parts)
}

fn check_pointer(field: &str, pointer: Option<String>) -> Result<Option<String>, String> {
    match pointer {
        Some(p) if !p.starts_with('/') => Err(format!(
            "{field} must be a JSON pointer starting with '/' (RFC 6901), got {p:?}"
        )),
        other => Ok(other),
    }
}

fn check_header(field: &str, header: Option<String>) -> Result<Option<String>, String> {
    match header {
        Some(h) if h.trim().is_empty() => Err(format!("{field} must not be empty")),
        other => Ok(other.map(|h| h.trim().to_string())),
    }
}

#[derive(Debug)]
pub struct GenericHmac {
    keys: Keyring,
    header: String,
    algorithm: HmacAlgorithm,
    encoding: SignatureEncoding,
    prefix: String,
    timestamp_header: Option<String>,
    timestamp_unit: TimeUnit,
    message: Vec<Part>,
    tolerance: Tolerance,
    id_header: Option<String>,
    id_pointer: Option<String>,
    type_header: Option<String>,
    type_pointer: Option<String>,
    occurred_at_pointer: Option<String>,
}

impl GenericHmac {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let o: HmacOptions = crypto::parse_options(NAME, options)?;
        let invalid = |why: String| ProviderConfigError(format!("{NAME} options: {why}"));
        if o.algorithm == HmacAlgorithm::Md5 && !o.allow_weak {
            return Err(invalid(
                "algorithm \"md5\" is weak; set allow_weak = true if the sender offers nothing else"
                    .into(),
            ));
        }
        let header = check_header("header", Some(o.header))
            .map_err(invalid)?
            .unwrap_or_default();
        let timestamp_header =
            check_header("timestamp_header", o.timestamp_header).map_err(invalid)?;
        let message = parse_template(&o.message, timestamp_header.is_some()).map_err(invalid)?;
        Ok(Self {
            keys: Keyring::decoded(NAME, secrets, |raw| o.key_encoding.decode(raw))?,
            header,
            algorithm: o.algorithm,
            encoding: o.encoding,
            prefix: o.prefix.unwrap_or_default(),
            timestamp_header,
            timestamp_unit: o.timestamp_unit,
            message,
            tolerance: Tolerance::both(o.tolerance_seconds, o.future_tolerance_seconds),
            id_header: check_header("id_header", o.id_header).map_err(invalid)?,
            id_pointer: check_pointer("id_pointer", o.id_pointer).map_err(invalid)?,
            type_header: check_header("type_header", o.type_header).map_err(invalid)?,
            type_pointer: check_pointer("type_pointer", o.type_pointer).map_err(invalid)?,
            occurred_at_pointer: check_pointer("occurred_at_pointer", o.occurred_at_pointer)
                .map_err(invalid)?,
        })
    }

    /// The presented signature, prefix stripped and decoded.
    fn presented(&self, headers: &Headers) -> Result<Vec<u8>, VerifyError> {
        let value = crypto::required_header(headers, &self.header)?;
        let malformed = || {
            VerifyError::MalformedSignature(format!(
                "{} is not {}{:?}",
                self.header.to_ascii_lowercase(),
                self.prefix,
                self.encoding
            ))
        };
        let encoded = match value.get(..self.prefix.len()) {
            Some(p) if p.eq_ignore_ascii_case(&self.prefix) => value.get(self.prefix.len()..),
            _ => None,
        }
        .ok_or_else(malformed)?;
        self.encoding.decode(encoded).ok_or_else(malformed)
    }
}

/// An id or type value: a non-empty string, or an integer written as decimal.
fn scalar(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Unix seconds as an integer, a float, or a digit string → milliseconds.
fn unix_seconds_to_ms(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => n
            .as_i64()
            .and_then(|s| TimeUnit::Seconds.to_ms(s))
            .or_else(|| {
                n.as_f64()
                    .map(|s| s * 1000.0)
                    .filter(|ms| ms.is_finite() && ms.abs() < 9.0e15)
                    .map(|ms| ms.round() as i64)
            }),
        serde_json::Value::String(s) => crypto::parse_unix(s)
            .ok()
            .and_then(|s| TimeUnit::Seconds.to_ms(s)),
        _ => None,
    }
}

fn header_value(headers: &Headers, name: Option<&str>) -> Option<String> {
    name.and_then(|n| headers.get(n))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

#[async_trait::async_trait]
impl Provider for GenericHmac {
    fn name(&self) -> &'static str {
        NAME
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let sig = self.presented(req.headers)?;
        let timestamp = match &self.timestamp_header {
            Some(name) => {
                let text = crypto::required_header(req.headers, name)?;
                Some((text, crypto::parse_unix(text)?))
            }
            None => None,
        };
        let mut message: Vec<&[u8]> = Vec::with_capacity(self.message.len());
        for part in &self.message {
            message.push(match part {
                Part::Literal(text) => text.as_bytes(),
                Part::Body => req.body,
                // `parse_template` only admits `{timestamp}` with a timestamp header.
                Part::Timestamp => timestamp
                    .map(|(text, _)| text)
                    .unwrap_or_default()
                    .as_bytes(),
                Part::Header(name) => crypto::required_header(req.headers, name)?.as_bytes(),
            });
        }
        let key_id = self
            .keys
            .first_match(now_ms, |key| self.algorithm.verify(key, &message, &sig))?;
        if let Some((_, ts)) = timestamp {
            self.tolerance.check(ts, self.timestamp_unit, now_ms)?;
        }
        Ok(Verified {
            scheme: self.algorithm.scheme(),
            key_id: Some(key_id),
        })
    }

    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let wants_body = self.id_pointer.is_some()
            || self.type_pointer.is_some()
            || self.occurred_at_pointer.is_some();
        let body: Option<serde_json::Value> = if wants_body {
            serde_json::from_slice(req.body).ok()
        } else {
            None
        };
        let at = |pointer: Option<&str>| pointer.and_then(|p| body.as_ref()?.pointer(p));
        let event_id = match (
            header_value(req.headers, self.id_header.as_deref()),
            self.id_pointer.as_deref(),
            self.id_header.as_deref(),
        ) {
            (Some(id), _, _) => Some(id),
            (None, Some(pointer), _) => {
                Some(at(Some(pointer)).and_then(scalar).ok_or_else(|| {
                    ExtractError(format!("body has no string or integer id at {pointer}"))
                })?)
            }
            (None, None, Some(name)) => {
                return Err(ExtractError(format!("missing id header {name}")))
            }
            (None, None, None) => None,
        };
        Ok(vec![Extracted {
            event_id,
            event_type: header_value(req.headers, self.type_header.as_deref())
                .or_else(|| at(self.type_pointer.as_deref()).and_then(scalar)),
            occurred_at_ms: at(self.occurred_at_pointer.as_deref()).and_then(unix_seconds_to_ms),
            ..Default::default()
        }])
    }

    /// `{header:NAME}` can only be signed when NAME is the `id_header` (given the delivery id)
    /// or the `timestamp_header`; other header values are unknown to `inlet sign`.
    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let timestamp = self.timestamp_unit.from_ms(input.now_ms).to_string();
        let is = |configured: &Option<String>, name: &str| {
            configured
                .as_deref()
                .is_some_and(|c| c.eq_ignore_ascii_case(name))
        };
        let header = |name: &str| {
            if is(&self.id_header, name) {
                Ok(input.delivery_id.as_bytes())
            } else if is(&self.timestamp_header, name) {
                Ok(timestamp.as_bytes())
            } else {
                Err(ProviderConfigError(format!(
                    "cannot sign: message uses header {name}, whose value only the sender knows"
                )))
            }
        };
        let mut message: Vec<&[u8]> = Vec::with_capacity(self.message.len());
        for part in &self.message {
            message.push(match part {
                Part::Literal(text) => text.as_bytes(),
                Part::Body => input.body,
                Part::Timestamp => timestamp.as_bytes(),
                Part::Header(name) => header(name)?,
            });
        }
        let sig = self.algorithm.compute(key, &message)?;
        let mut headers = Headers::new();
        headers.insert(
            &self.header,
            format!("{}{}", self.prefix, self.encoding.encode(&sig)),
        );
        if let Some(name) = &self.timestamp_header {
            headers.insert(name, timestamp.clone());
        }
        if let Some(name) = &self.id_header {
            headers.insert(name, input.delivery_id.to_string());
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    use serde_json::json;

    use super::*;
    use crate::providers::crypto::testkit::{self, expiring_secret, request, secret};

    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;
    const NOW_S: i64 = NOW_MS / 1000;

    fn generic(options: serde_json::Value, secrets: Vec<Secret>) -> GenericHmac {
        GenericHmac::from_config(&options, secrets).unwrap()
    }

    fn config_error(options: serde_json::Value) -> String {
        GenericHmac::from_config(&options, vec![secret("k", "s")])
            .unwrap_err()
            .0
    }

    fn hex_sha256(key: &str, message: &str) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(message.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A timestamped config used by the negative tests.
    fn timestamped() -> serde_json::Value {
        json!({
            "header": "X-Signature",
            "timestamp_header": "X-Timestamp",
            "message": "{timestamp}.{body}",
        })
    }

    fn timestamped_headers(key: &str, ts: i64, body: &str) -> Headers {
        Headers::from_iter([
            ("X-Timestamp", ts.to_string()),
            ("X-Signature", hex_sha256(key, &format!("{ts}.{body}"))),
        ])
    }

    #[test]
    fn generic_config_expresses_the_github_vector() {
        let v = testkit::vector("github-docs");
        let p = generic(
            json!({"header": "X-Hub-Signature-256", "prefix": "sha256="}),
            vec![v.secret()],
        );
        let h = v.headers();
        let got = p
            .verify(&request(&h, v.body.as_bytes()), v.now_ms())
            .unwrap();
        assert_eq!(got.scheme, "hmac_sha256");
        assert_eq!(
            p.verify(&request(&h, b"Hello, World?"), v.now_ms()),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn generic_config_expresses_the_stripe_vector_with_a_separate_timestamp_header() {
        let v = testkit::vector("stripe-valid");
        let (t, v1) = v
            .header("Stripe-Signature")
            .split_once(',')
            .map(|(t, v1)| (t.trim_start_matches("t="), v1.trim_start_matches("v1=")))
            .unwrap();
        let h = Headers::from_iter([("X-Stripe-T", t), ("X-Stripe-V1", v1)]);
        let p = generic(
            json!({
                "header": "X-Stripe-V1",
                "timestamp_header": "X-Stripe-T",
                "message": "{timestamp}.{body}",
                "id_pointer": "/id",
                "type_pointer": "/type",
            }),
            vec![v.secret()],
        );
        let req = request(&h, v.body.as_bytes());
        assert!(p.verify(&req, v.now_ms()).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some("evt_test_webhook"));
        assert_eq!(got.event_type.as_deref(), Some("payment_intent.succeeded"));
        assert!(matches!(
            p.verify(&req, v.now_ms() + 300_000),
            Err(VerifyError::TimestampTooOld { .. })
        ));
    }

    #[test]
    fn generic_sha512_base64_signature_with_hex_key_and_ms_timestamp_verifies() {
        let key = [0x0bu8; 32];
        let body = br#"{"round":"r-1","amount":"10.00"}"#;
        let ts = (NOW_MS - 1234).to_string();
        // Computed independently of the provider, with the hmac crate directly.
        let mut mac = Hmac::<sha2::Sha512>::new_from_slice(&key).unwrap();
        mac.update(b"req-7|");
        mac.update(ts.as_bytes());
        mac.update(b"|");
        mac.update(body);
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let p = generic(
            json!({
                "header": "X-Request-Signature",
                "algorithm": "sha512",
                "encoding": "base64",
                "key_encoding": "hex",
                "timestamp_header": "X-Request-Time",
                "timestamp_unit": "milliseconds",
                "message": "{header:X-Request-Id}|{timestamp}|{body}",
                "id_header": "X-Request-Id",
            }),
            vec![secret("k", &hex::encode(key))],
        );
        let h = Headers::from_iter([
            ("x-request-id", "req-7"),
            ("x-request-time", ts.as_str()),
            ("x-request-signature", sig.as_str()),
        ]);
        let req = request(&h, body);
        assert_eq!(p.verify(&req, NOW_MS).unwrap().scheme, "hmac_sha512");
        // Unpadded base64 of the same bytes is the same signature.
        let unpadded = Headers::from_iter([
            ("x-request-id", "req-7"),
            ("x-request-time", ts.as_str()),
            ("x-request-signature", sig.trim_end_matches('=')),
        ]);
        assert!(p.verify(&request(&unpadded, body), NOW_MS).is_ok());
        assert_eq!(
            p.extract(&req).unwrap().remove(0).event_id.as_deref(),
            Some("req-7")
        );
        let other_id = Headers::from_iter([
            ("x-request-id", "req-8"),
            ("x-request-time", ts.as_str()),
            ("x-request-signature", sig.as_str()),
        ]);
        assert_eq!(
            p.verify(&request(&other_id, body), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
        assert!(matches!(
            p.verify(&req, NOW_MS + 300_000 + 1234 + 1),
            Err(VerifyError::TimestampTooOld { .. })
        ));
    }

    #[test]
    fn generic_config_expresses_other_hmac_providers_vectors() {
        let cases = [
            (
                "slack-docs",
                json!({
                    "header": "X-Slack-Signature",
                    "prefix": "v0=",
                    "timestamp_header": "X-Slack-Request-Timestamp",
                    "message": "v0:{timestamp}:{body}",
                }),
            ),
            (
                "zoom-event",
                json!({
                    "header": "x-zm-signature",
                    "prefix": "v0=",
                    "timestamp_header": "x-zm-request-timestamp",
                    "message": "v0:{timestamp}:{body}",
                }),
            ),
            (
                "intercom-ping",
                json!({"header": "X-Hub-Signature", "prefix": "sha1=", "algorithm": "sha1"}),
            ),
            (
                "meta-whatsapp",
                json!({"header": "X-Hub-Signature-256", "prefix": "sha256="}),
            ),
            (
                "razorpay-valid",
                json!({"header": "X-Razorpay-Signature", "id_header": "x-razorpay-event-id"}),
            ),
            (
                "checkoutcom-valid",
                json!({"header": "Cko-Signature", "id_pointer": "/id", "type_pointer": "/type"}),
            ),
            (
                "shopify-valid",
                json!({
                    "header": "X-Shopify-Hmac-Sha256",
                    "encoding": "base64",
                    "id_header": "X-Shopify-Webhook-Id",
                    "type_header": "X-Shopify-Topic",
                }),
            ),
            (
                "linear-valid",
                json!({
                    "header": "Linear-Signature",
                    "id_header": "Linear-Delivery",
                    "type_header": "Linear-Event",
                }),
            ),
            (
                "twitch-notification",
                json!({
                    "header": "Twitch-Eventsub-Message-Signature",
                    "prefix": "sha256=",
                    "message": concat!(
                        "{header:Twitch-Eventsub-Message-Id}",
                        "{header:Twitch-Eventsub-Message-Timestamp}",
                        "{body}"
                    ),
                    "id_header": "Twitch-Eventsub-Message-Id",
                }),
            ),
        ];
        for (id, options) in cases {
            let v = testkit::vector(id);
            let h = v.headers();
            let got = generic(options, vec![v.secret()])
                .verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{id}: {got:?}");
        }
        // Square signs `notification_url + body`: the URL is a literal in the template.
        for v in testkit::vectors_for(&["square"]) {
            let url = v.url.clone().unwrap();
            let options = json!({
                "header": "x-square-hmacsha256-signature",
                "encoding": "base64",
                "message": format!("{url}{{body}}"),
            });
            let h = v.headers();
            let got = generic(options, vec![v.secret()])
                .verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
        }
    }

    #[test]
    fn generic_extract_reads_ids_and_types_from_headers_and_pointers() {
        let v = testkit::vector("shopify-valid");
        let p = generic(
            json!({
                "header": "X-Shopify-Hmac-Sha256",
                "encoding": "base64",
                "id_header": "X-Shopify-Webhook-Id",
                "type_header": "X-Shopify-Topic",
            }),
            vec![v.secret()],
        );
        let h = v.headers();
        let got = p
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap()
            .remove(0);
        assert_eq!(
            got.event_id.as_deref(),
            Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
        );
        assert_eq!(got.event_type.as_deref(), Some("orders/create"));

        let p = generic(
            json!({
                "header": "X-Sig",
                "id_pointer": "/data/id",
                "type_pointer": "/kind",
                "occurred_at_pointer": "/at",
            }),
            vec![secret("k", "s")],
        );
        let none = Headers::new();
        let got = p
            .extract(&request(
                &none,
                br#"{"data":{"id":820982911946154508},"kind":"order","at":1767225600}"#,
            ))
            .unwrap()
            .remove(0);
        assert_eq!(
            got,
            Extracted {
                event_id: Some("820982911946154508".into()),
                event_type: Some("order".into()),
                occurred_at_ms: Some(1_767_225_600_000),
                ..Default::default()
            }
        );
        let got = p
            .extract(&request(&none, br#"{"data":{"id":"a"},"at":1767225600.5}"#))
            .unwrap()
            .remove(0);
        assert_eq!(got.occurred_at_ms, Some(1_767_225_600_500));
        assert_eq!(got.event_type, None);
    }

    #[test]
    fn generic_id_pointer_missing_from_body_is_an_extract_error() {
        let p = generic(
            json!({"header": "X-Sig", "id_pointer": "/id"}),
            vec![secret("k", "s")],
        );
        let none = Headers::new();
        for body in [
            &b"not json"[..],
            br#"{"other":1}"#,
            br#"{"id":1.5}"#,
            br#"{"id":""}"#,
            br#"{"id":null}"#,
        ] {
            assert!(p.extract(&request(&none, body)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn generic_without_id_source_leaves_dedupe_to_the_body_hash() {
        let p = generic(json!({"header": "X-Sig"}), vec![secret("k", "s")]);
        let got = p
            .extract(&request(&Headers::new(), b"anything"))
            .unwrap()
            .remove(0);
        assert_eq!(got, Extracted::default());
    }

    #[test]
    fn generic_configured_id_header_that_is_missing_is_an_extract_error() {
        let p = generic(
            json!({"header": "X-Sig", "id_header": "X-Id"}),
            vec![secret("k", "s")],
        );
        assert!(p.extract(&request(&Headers::new(), b"{}")).is_err());
    }

    #[test]
    fn tampered_generic_body_is_refused() {
        let h = timestamped_headers("s", NOW_S, "{}");
        let got =
            generic(timestamped(), vec![secret("k", "s")]).verify(&request(&h, b"{ }"), NOW_MS);
        assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }

    #[test]
    fn wrong_generic_secret_is_refused() {
        let h = timestamped_headers("other", NOW_S, "{}");
        let got =
            generic(timestamped(), vec![secret("k", "s")]).verify(&request(&h, b"{}"), NOW_MS);
        assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }

    #[test]
    fn missing_generic_signature_or_timestamp_header_is_refused() {
        let p = generic(timestamped(), vec![secret("k", "s")]);
        let no_sig = Headers::from_iter([("X-Timestamp", NOW_S.to_string())]);
        assert_eq!(
            p.verify(&request(&no_sig, b"{}"), NOW_MS),
            Err(VerifyError::MissingSignature("x-signature".into()))
        );
        let no_ts = Headers::from_iter([("X-Signature", hex_sha256("s", "{}"))]);
        assert_eq!(
            p.verify(&request(&no_ts, b"{}"), NOW_MS),
            Err(VerifyError::MissingSignature("x-timestamp".into()))
        );
    }

    #[test]
    fn missing_signed_header_is_refused() {
        let p = generic(
            json!({"header": "X-Sig", "message": "{header:X-Id}.{body}"}),
            vec![secret("k", "s")],
        );
        let h = Headers::from_iter([("X-Sig", hex_sha256("s", ".{}"))]);
        assert_eq!(
            p.verify(&request(&h, b"{}"), NOW_MS),
            Err(VerifyError::MissingSignature("x-id".into()))
        );
    }

    #[test]
    fn malformed_generic_signatures_are_refused() {
        let p = generic(
            json!({"header": "X-Sig", "prefix": "sha256="}),
            vec![secret("k", "s")],
        );
        let good = hex_sha256("s", "{}");
        for value in [
            good.clone(),
            format!("sha256={good}x"),
            "sha256=".into(),
            "sha2".into(),
            "sha256=é".into(),
        ] {
            let h = Headers::from_iter([("X-Sig", value.as_str())]);
            let got = p.verify(&request(&h, b"{}"), NOW_MS);
            assert!(
                matches!(got, Err(VerifyError::MalformedSignature(_))),
                "{value}: {got:?}"
            );
        }
        let h = Headers::from_iter([("X-Sig", format!("SHA256={}", good.to_uppercase()))]);
        assert!(
            p.verify(&request(&h, b"{}"), NOW_MS).is_ok(),
            "prefix and hex case do not matter"
        );
        let p = generic(timestamped(), vec![secret("k", "s")]);
        let h = Headers::from_iter([("X-Timestamp", "yesterday"), ("X-Signature", good.as_str())]);
        assert!(matches!(
            p.verify(&request(&h, b"{}"), NOW_MS),
            Err(VerifyError::MalformedSignature(_))
        ));
    }

    #[test]
    fn stale_generic_timestamp_is_refused() {
        let h = timestamped_headers("s", NOW_S - 301, "{}");
        let got =
            generic(timestamped(), vec![secret("k", "s")]).verify(&request(&h, b"{}"), NOW_MS);
        assert!(
            matches!(got, Err(VerifyError::TimestampTooOld { age_s: 301, .. })),
            "{got:?}"
        );
    }

    #[test]
    fn future_generic_timestamp_is_refused_with_its_own_tolerance() {
        let mut options = timestamped();
        options["future_tolerance_seconds"] = json!(5);
        let p = generic(options, vec![secret("k", "s")]);
        let h = timestamped_headers("s", NOW_S + 5, "{}");
        assert!(p.verify(&request(&h, b"{}"), NOW_MS).is_ok());
        let h = timestamped_headers("s", NOW_S + 6, "{}");
        assert!(matches!(
            p.verify(&request(&h, b"{}"), NOW_MS),
            Err(VerifyError::TimestampInFuture {
                ahead_s: 6,
                tolerance_s: 5
            })
        ));
    }

    #[test]
    fn rotated_generic_secret_reports_the_key_that_matched() {
        let h = timestamped_headers("new", NOW_S, "{}");
        let got = generic(
            timestamped(),
            vec![secret("old", "old"), secret("new", "new")],
        )
        .verify(&request(&h, b"{}"), NOW_MS)
        .unwrap();
        assert_eq!(got.key_id.as_deref(), Some("new"));
    }

    #[test]
    fn generic_secret_past_not_after_is_not_accepted() {
        let h = timestamped_headers("old", NOW_S, "{}");
        let p = generic(
            timestamped(),
            vec![
                expiring_secret("old", "old", NOW_MS - 1),
                secret("new", "new"),
            ],
        );
        assert_eq!(
            p.verify(&request(&h, b"{}"), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn generic_sign_then_verify_round_trips_for_every_encoding() {
        for (encoding, algorithm) in [
            ("hex", "sha1"),
            ("base64", "sha256"),
            ("base64url", "sha512"),
        ] {
            let p = generic(
                json!({
                    "header": "X-Sig",
                    "prefix": "v1=",
                    "algorithm": algorithm,
                    "encoding": encoding,
                    "key_encoding": "base64",
                    "timestamp_header": "X-Ts",
                    "timestamp_unit": "milliseconds",
                    "message": "{{v1}}:{header:X-Id}:{timestamp}:{body}",
                    "id_header": "X-Id",
                }),
                vec![secret("k", "c2VjcmV0LWtleQ")],
            );
            let input = SignInput {
                body: b"{\"a\":1}",
                now_ms: NOW_MS,
                delivery_id: "d-9",
            };
            let h = p.sign(&input).unwrap();
            assert_eq!(h.get("x-ts"), Some(NOW_MS.to_string().as_str()));
            let req = request(&h, input.body);
            assert!(p.verify(&req, NOW_MS).is_ok(), "{encoding}: {h:?}");
            assert_eq!(
                p.extract(&req).unwrap().remove(0).event_id.as_deref(),
                Some("d-9")
            );
        }
    }

    #[test]
    fn generic_sign_refuses_templates_with_headers_it_cannot_know() {
        let p = generic(
            json!({"header": "X-Sig", "message": "{header:X-Shop}{body}"}),
            vec![secret("k", "s")],
        );
        let input = SignInput {
            body: b"{}",
            now_ms: NOW_MS,
            delivery_id: "d",
        };
        assert!(p.sign(&input).unwrap_err().0.contains("X-Shop"));
    }

    #[test]
    fn generic_template_literal_braces_are_escaped_by_doubling() {
        assert_eq!(
            parse_template("{{{body}}}", false),
            Ok(vec![
                Part::Literal("{".into()),
                Part::Body,
                Part::Literal("}".into())
            ])
        );
    }

    #[test]
    fn generic_config_errors_name_the_problem() {
        let cases = [
            (
                json!({"header": "X-Sig", "tolerance": 5}),
                "unknown field `tolerance`",
            ),
            (
                json!({"header": "X-Sig", "message": "{payload}"}),
                "unknown placeholder {payload}",
            ),
            (
                json!({"header": "X-Sig", "message": "{header:}{body}"}),
                "unknown placeholder {header:}",
            ),
            (
                json!({"header": "X-Sig", "message": "{timestamp}.{body}"}),
                "{timestamp} in message needs timestamp_header",
            ),
            (
                json!({"header": "X-Sig", "message": "{body"}),
                "unclosed '{'",
            ),
            (
                json!({"header": "X-Sig", "message": "}{body}"}),
                "unmatched '}'",
            ),
            (
                json!({"header": "X-Sig", "message": "v0:static"}),
                "message must include {body}",
            ),
            (
                json!({"header": "X-Sig", "algorithm": "md5"}),
                "algorithm \"md5\" is weak; set allow_weak = true",
            ),
            (
                json!({"header": "X-Sig", "encoding": "base32"}),
                "unknown variant `base32`",
            ),
            (
                json!({"header": "X-Sig", "id_pointer": "id"}),
                "id_pointer must be a JSON pointer",
            ),
            (json!({"header": " "}), "header must not be empty"),
            (json!({"prefix": "sha256="}), "missing field `header`"),
            (serde_json::Value::Null, "missing field `header`"),
        ];
        for (options, expected) in cases {
            let err = config_error(options.clone());
            assert!(err.starts_with("hmac options: "), "{options}: {err}");
            assert!(err.contains(expected), "{options}: {err}");
        }
    }

    #[test]
    fn generic_config_refuses_no_secrets_and_undecodable_keys_without_echoing_them() {
        assert!(GenericHmac::from_config(&json!({"header": "X-Sig"}), vec![]).is_err());
        let err = GenericHmac::from_config(
            &json!({"header": "X-Sig", "key_encoding": "hex"}),
            vec![secret("adyen", "zz-not-hex")],
        )
        .unwrap_err();
        assert!(err.0.contains("\"adyen\" is not hex"), "{err}");
        assert!(!err.0.contains("zz-not-hex"));
    }
}
