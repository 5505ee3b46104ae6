//! Linear: `Linear-Signature: <hex>`, HMAC-SHA256 over the raw body, keyed with the webhook
//! signing secret as UTF-8. Freshness comes from the **body** field `webhookTimestamp` (unix
//! milliseconds), which the signature covers; the SDK allows ±60 s and fails when the field
//! is missing or not a number. `Linear-Timestamp` is legacy and ignored, as in the SDK.
//! Source: `@linear/sdk` 98 `LinearWebhookClient.verify`, linear.app/developers/webhooks.

use serde::Deserialize;

use super::crypto::{self, HmacAlgorithm, Keyring, SignatureEncoding, TimeUnit, Tolerance};
use super::{
    canonical, fields, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

const SIGNATURE: &str = "linear-signature";
const DELIVERY: &str = "linear-delivery";
const EVENT: &str = "linear-event";
const TIMESTAMP_FIELD: &str = "webhookTimestamp";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LinearOptions {
    /// The SDK's window: `|now - webhookTimestamp| <= 60 s`.
    tolerance_seconds: u32,
    future_tolerance_seconds: u32,
}

impl Default for LinearOptions {
    fn default() -> Self {
        Self {
            tolerance_seconds: 60,
            future_tolerance_seconds: 60,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Linear {
    keys: Keyring,
    tolerance: Tolerance,
}

impl Linear {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: LinearOptions = crypto::parse_options("linear", options)?;
        Ok(Self {
            keys: Keyring::new("linear", secrets)?,
            tolerance: Tolerance::both(opts.tolerance_seconds, opts.future_tolerance_seconds),
        })
    }
}

/// `webhookTimestamp` in ms: absent is `MissingHeader` (the value the scheme checks is not
/// there); present but not an integer (JSON number or digit string) is `MalformedSignature`.
fn webhook_timestamp(body: &[u8]) -> Result<i64, VerifyError> {
    let missing = || VerifyError::MissingHeader(format!("{TIMESTAMP_FIELD} (body field)"));
    let malformed = || {
        VerifyError::MalformedSignature(format!("{TIMESTAMP_FIELD} is not integer milliseconds"))
    };
    let event = crypto::json_object(body).ok_or_else(missing)?;
    match event.get(TIMESTAMP_FIELD) {
        None | Some(serde_json::Value::Null) => Err(missing()),
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(malformed),
        Some(serde_json::Value::String(s)) => crypto::parse_unix(s).map_err(|_| malformed()),
        Some(_) => Err(malformed()),
    }
}

#[async_trait::async_trait]
impl Provider for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let sig = SignatureEncoding::Hex
            .decode(crypto::required_header(req.headers, SIGNATURE)?)
            .ok_or_else(|| VerifyError::MalformedSignature(format!("{SIGNATURE} is not hex")))?;
        let key_id = self.keys.first_match(now_ms, |key| {
            HmacAlgorithm::Sha256.verify(key, &[req.body], &sig)
        })?;
        // The timestamp is read from the body only once the body is authentic.
        let ts = webhook_timestamp(req.body)?;
        self.tolerance.check(ts, TimeUnit::Milliseconds, now_ms)?;
        Ok(Verified {
            scheme: "linear_hmac_sha256",
            key_id: Some(key_id),
        })
    }

    /// Dedupe key `Linear-Delivery` (one per delivery, kept across retries). Without it,
    /// `webhookId#webhookTimestamp`: `webhookId` names the subscription, not the event, so
    /// the timestamp makes it per delivery.
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let event: serde_json::Value = fields::json_object_value(req.body)
            .ok_or_else(|| ExtractError("linear webhook body is not a JSON object".into()))?;
        let timestamp = event
            .get(TIMESTAMP_FIELD)
            .and_then(serde_json::Value::as_i64);
        // `Linear-Delivery` is not signed, and `webhookTimestamp` is restamped on every retry
        // (the SDK refuses anything older than 60 s): what keys the event is the signed change
        // itself — what changed, how, and when it happened — else the body digest.
        let unsigned_id = crypto::required_header(req.headers, DELIVERY)
            .ok()
            .map(str::to_string);
        let event_id = (|| {
            Some(format!(
                "{}#{}#{}#{}",
                fields::str_at(&event, "/type")?,
                fields::str_at(&event, "/data/id")?,
                fields::str_at(&event, "/action")?,
                fields::str_at(&event, "/createdAt")?,
            ))
        })();
        let kind = fields::str_at(&event, "/type");
        let event_type = match (kind, fields::str_at(&event, "/action")) {
            (Some(kind), Some(action)) => Some(format!("{kind}.{action}")),
            (Some(kind), None) => Some(kind.to_string()),
            _ => None,
        };
        Ok(vec![Extracted {
            event_id,
            unsigned_id,
            event_type,
            canonical_type: (kind == Some("Issue")).then_some(canonical::ISSUE_CHANGED),
            occurred_at_ms: fields::str_at(&event, "/createdAt")
                .and_then(time::rfc3339_ms_utc_if_unzoned)
                .or(timestamp),
            entity: fields::str_at(&event, "/data/id").map(str::to_string),
            ..Default::default()
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        serde_json::json!({
            "action": "create", "type": "Issue",
            "data": {"id": id, "title": "Sample issue", "teamId": "72b2a2dc-6f4f-4423-9d34-24b5bd10634a"},
            "url": "https://linear.app/example/issue/ENG-1",
            "createdAt": crate::time::format_rfc3339_ms(now_ms),
            "webhookTimestamp": now_ms,
            "webhookId": "000042e3-d123-4980-b49f-8e140eef9329"
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let sig = HmacAlgorithm::Sha256.compute(key, &[input.body])?;
        let event = crypto::json_object(input.body)
            .and_then(|b| b.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_else(|| "Issue".to_string());
        Ok(Headers::from_iter([
            (SIGNATURE, hex::encode(sig)),
            (DELIVERY, input.delivery_id.to_string()),
            (EVENT, event),
        ]))
    }
}

/// How the provider suite (`suite.rs`) signs for Linear: `Linear-Signature: <hex>`,
/// HMAC-SHA256 of the body, whose `webhookTimestamp` (unix ms) is the signed time.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Freshness, Signed, TestKey};
    fn sign(key: Option<&TestKey>, now_ms: i64) -> Signed {
        let body = format!(
            r#"{{"action":"update","type":"Issue","createdAt":"2026-01-01T00:00:00.000Z","data":{{"id":"i1","title":"Bug"}},"webhookTimestamp":{now_ms},"webhookId":"w1"}}"#
        );
        let tag = key
            .expect("linear is keyed")
            .hmac(HmacAlgorithm::Sha256, &[body.as_bytes()]);
        let headers = Headers::from_iter([
            (SIGNATURE, hex::encode(tag)),
            (DELIVERY, "234d1a4e-b617-4388-90fe-adc3633d6b72".into()),
        ]);
        Signed::post(headers, body)
    }
    Case {
        freshness: Some(Freshness {
            past_s: 60,
            future_s: 60,
        }),
        garbled: |s| {
            ["zz", "sha256=abcd"]
                .map(|v| s.with_header(SIGNATURE, v))
                .to_vec()
        },
        ..Case::new(
            "linear",
            "linear_hmac_sha256",
            || {
                TestKey::pair(
                    "lin_wh_0123456789abcdef0123456789abcdef",
                    "lin_wh_fedcba9876543210fedcba9876543210",
                )
            },
            sign,
            Carrier::header(SIGNATURE),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

    const SECRET: &str = "lin_wh_0123456789abcdef0123456789abcdef";
    const T_MS: i64 = 1_767_225_600_000;

    fn linear(secrets: Vec<Secret>) -> Linear {
        Linear::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn signed(key: &str, body: &[u8]) -> Headers {
        let sig = HmacAlgorithm::Sha256
            .compute(key.as_bytes(), &[body])
            .unwrap();
        Headers::from_iter([(SIGNATURE, hex::encode(sig))])
    }

    fn body_at(ts: &str) -> Vec<u8> {
        format!(r#"{{"action":"update","type":"Issue","data":{{"id":"i1"}},"webhookTimestamp":{ts},"webhookId":"w1"}}"#)
            .into_bytes()
    }

    #[test]
    fn every_linear_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["linear"]) {
            let h = v.headers();
            let got = linear(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn linear_vector_extracts_delivery_type_and_issue() {
        let v = testkit::vector("linear-valid");
        let h = v.headers();
        let got = linear(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some(
                    "Issue#2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9#create#2026-01-01T00:00:00.000Z"
                        .into()
                ),
                unsigned_id: Some("234d1a4e-b617-4388-90fe-adc3633d6b72".into()),
                event_type: Some("Issue.create".into()),
                canonical_type: Some(canonical::ISSUE_CHANGED),
                occurred_at_ms: Some(T_MS),
                entity: Some("2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9".into()),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn linear_keys_on_the_signed_change_never_on_the_delivery_header() {
        let p = linear(vec![secret("k", SECRET)]);
        let change = |ts: &str| {
            format!(
                r#"{{"action":"update","type":"Issue","data":{{"id":"i1"}},"createdAt":"2026-01-01T00:00:00.000Z","webhookTimestamp":{ts},"webhookId":"w1"}}"#
            )
            .into_bytes()
        };
        let first = p
            .extract(&request(
                &Headers::from_iter([(DELIVERY, "d1")]),
                &change("1767225600000"),
            ))
            .unwrap()
            .remove(0);
        assert_eq!(
            first.event_id.as_deref(),
            Some("Issue#i1#update#2026-01-01T00:00:00.000Z")
        );
        assert_eq!(first.unsigned_id.as_deref(), Some("d1"));
        // A retry is restamped; a replay carries another delivery id: the key holds for both.
        let retry = p
            .extract(&request(
                &Headers::from_iter([(DELIVERY, "d2")]),
                &change("1767225660000"),
            ))
            .unwrap()
            .remove(0);
        assert_eq!(retry.event_id, first.event_id);
        // Without `createdAt` the body digest keys it (no event id).
        let got = p
            .extract(&request(&Headers::new(), &body_at("1767225600000")))
            .unwrap()
            .remove(0);
        assert_eq!(got.event_id, None);
        let comment = br#"{"action":"create","type":"Comment","data":{"id":"c1"}}"#;
        let h = Headers::from_iter([(DELIVERY, "d1")]);
        let got = p.extract(&request(&h, comment)).unwrap().remove(0);
        assert_eq!(got.event_type.as_deref(), Some("Comment.create"));
        assert_eq!(got.canonical_type, None);
        assert!(p.extract(&request(&h, b"[]")).is_err());
    }

    #[test]
    fn linear_tolerance_is_configurable() {
        let body = body_at("1767225600000");
        let h = signed(SECRET, &body);
        let wide = Linear::from_config(
            &serde_json::json!({"tolerance_seconds": 600}),
            vec![secret("k", SECRET)],
        )
        .unwrap();
        assert!(wide.verify(&request(&h, &body), T_MS + 600_000).is_ok());
    }

    #[test]
    fn missing_or_non_numeric_webhook_timestamp_is_refused_after_the_signature() {
        let p = linear(vec![secret("k", SECRET)]);
        for (body, expected_missing) in [
            (br#"{"type":"Issue"}"#.to_vec(), true),
            (
                br#"{"type":"Issue","webhookTimestamp":null}"#.to_vec(),
                true,
            ),
            (b"not json".to_vec(), true),
            (body_at("\"soon\""), false),
            (body_at("1767225600000.5"), false),
            (body_at("true"), false),
        ] {
            let h = signed(SECRET, &body);
            let got = p.verify(&request(&h, &body), T_MS);
            if expected_missing {
                assert_eq!(
                    got,
                    Err(VerifyError::MissingHeader(
                        "webhookTimestamp (body field)".into()
                    ))
                );
            } else {
                assert!(
                    matches!(got, Err(VerifyError::MalformedSignature(_))),
                    "{got:?}"
                );
            }
        }
        // A digit string is a number, as in the SDK (`Number(...)`).
        let body = body_at("\"1767225600000\"");
        assert!(p
            .verify(&request(&signed(SECRET, &body), &body), T_MS)
            .is_ok());
    }

    #[test]
    fn linear_sign_then_verify_round_trips_with_the_sample_body() {
        let p = linear(vec![secret("k", SECRET)]);
        let body = p.sample_body("9a8b", T_MS);
        let h = p
            .sign(&SignInput {
                body: &body,
                now_ms: T_MS,
                delivery_id: "dlv-1",
            })
            .unwrap();
        assert_eq!(h.get("linear-event"), Some("Issue"));
        let req = request(&h, &body);
        assert!(p.verify(&req, T_MS).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(got.unsigned_id.as_deref(), Some("dlv-1"));
        assert!(got
            .event_id
            .is_some_and(|id| id.starts_with("Issue#9a8b#create#")));
        assert_eq!(got.entity.as_deref(), Some("9a8b"));
    }
}
