//! Paddle Billing: `Paddle-Signature: ts=<unix>;h1=<hex>[;h1=<hex>…]`, HMAC-SHA256 over
//! `"{ts}:{body}"` (a colon, not Stripe's dot), keyed with the destination's endpoint secret
//! (`pdl_ntfset_…`) as UTF-8. Like the Python SDK, several `h1` and several secrets are
//! accepted (the Node SDK keeps only the last `h1`). Paddle Classic (`p_signature`) is a
//! different scheme and is not handled here.
//! Source: paddle-python-sdk `paddle_billing/Notifications/PaddleSignature.py`, `Verifier.py`.

use serde::Deserialize;

use super::crypto::{self, HmacAlgorithm, Keyring, SignatureEncoding, TimeUnit, Tolerance};
use super::{
    canonical, fields, money, ExtractError, Extracted, Provider, ProviderConfigError, SignInput,
    Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

const HEADER: &str = "paddle-signature";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PaddleOptions {
    /// Both SDKs default to 5 s (`maximum_variance=5`), in both directions (Python). That is
    /// tight for a queued or retried delivery and for clock skew; a deployment that sees
    /// `timestamp_too_old` refusals should raise it (60–300 s is common), which widens only
    /// the replay window the dedupe on `event_id` already covers.
    tolerance_seconds: u32,
    future_tolerance_seconds: u32,
}

impl Default for PaddleOptions {
    fn default() -> Self {
        Self {
            tolerance_seconds: 5,
            future_tolerance_seconds: 5,
        }
    }
}

#[derive(Debug)]
pub struct Paddle {
    keys: Keyring,
    tolerance: Tolerance,
}

impl Paddle {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: PaddleOptions = crypto::parse_options("paddle", options)?;
        Ok(Self {
            keys: Keyring::new("paddle", secrets)?,
            tolerance: Tolerance::both(opts.tolerance_seconds, opts.future_tolerance_seconds),
        })
    }
}

/// The timestamp exactly as sent and every decodable `h1`.
fn parse_header(value: &str) -> Result<(&str, Vec<Vec<u8>>), VerifyError> {
    let malformed = |why: &str| VerifyError::MalformedSignature(format!("paddle-signature: {why}"));
    let mut ts = None;
    let mut h1 = Vec::new();
    let mut h1_seen = false;
    for (key, val) in value.split(';').filter_map(|item| item.split_once('=')) {
        match key.trim() {
            "ts" if ts.is_some() => return Err(malformed("more than one ts=")),
            "ts" => ts = Some(val.trim()),
            "h1" => {
                h1_seen = true;
                if let Some(sig) = SignatureEncoding::Hex.decode(val.trim()) {
                    h1.push(sig);
                }
            }
            _ => {}
        }
    }
    let ts = ts.ok_or_else(|| malformed("no ts= timestamp"))?;
    if !h1_seen {
        return Err(malformed("no h1= signature"));
    }
    if h1.is_empty() {
        return Err(malformed("h1= is not hex"));
    }
    Ok((ts, crypto::bounded_candidates(h1, HEADER)?))
}

type Object = serde_json::Map<String, serde_json::Value>;

fn canonical_for(event_type: &str, data: &serde_json::Value) -> Option<&'static str> {
    match event_type {
        "transaction.completed" | "transaction.paid" => Some(canonical::PAYMENT_SUCCEEDED),
        "transaction.payment_failed" => Some(canonical::PAYMENT_FAILED),
        "subscription.created" => Some(canonical::SUBSCRIPTION_CREATED),
        "subscription.updated" => Some(canonical::SUBSCRIPTION_UPDATED),
        "subscription.canceled" => Some(canonical::SUBSCRIPTION_CANCELED),
        // An adjustment is a refund, credit or chargeback. A refund starts as
        // `pending_approval` and is money back only once `approved` (on `created` for
        // auto-approved ones, else on the `updated` that approves it).
        "adjustment.created" | "adjustment.updated" => {
            match (
                fields::str_at(data, "/action"),
                fields::str_at(data, "/status"),
            ) {
                (Some("refund"), Some("approved")) => Some(canonical::PAYMENT_REFUNDED),
                (Some("chargeback"), _) if event_type == "adjustment.created" => {
                    Some(canonical::PAYMENT_DISPUTED)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

#[async_trait::async_trait]
impl Provider for Paddle {
    fn name(&self) -> &'static str {
        "paddle"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let (ts_text, h1) = parse_header(crypto::required_header(req.headers, HEADER)?)?;
        let ts = crypto::parse_unix(ts_text)?;
        let parts: [&[u8]; 3] = [ts_text.as_bytes(), b":", req.body];
        let key_id = self.keys.first_match(now_ms, |key| {
            HmacAlgorithm::Sha256.matches_any(key, &parts, &h1)
        })?;
        self.tolerance.check(ts, TimeUnit::Seconds, now_ms)?;
        Ok(Verified {
            scheme: "paddle_h1",
            key_id: Some(key_id),
        })
    }

    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let event: Object = crypto::json_object(req.body)
            .ok_or_else(|| ExtractError("paddle notification is not a JSON object".into()))?;
        let event_id = event
            .get("event_id")
            .and_then(|v| v.as_str())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ExtractError("paddle notification has no string \"event_id\"".into()))?;
        let event_type = event.get("event_type").and_then(|v| v.as_str());
        let null = serde_json::Value::Null;
        let data = event.get("data").unwrap_or(&null);
        // Transactions total in `details.totals`, adjustments in `totals`.
        let amount = fields::str_at(data, "/details/totals/total")
            .or_else(|| fields::str_at(data, "/totals/total"))
            .and_then(money::minor_from_text);
        let currency = fields::str_at(data, "/currency_code").and_then(money::currency);
        Ok(vec![Extracted {
            unsigned_id: None,
            event_id: Some(event_id.to_string()),
            event_type: event_type.map(str::to_string),
            canonical_type: event_type.and_then(|t| canonical_for(t, data)),
            occurred_at_ms: event
                .get("occurred_at")
                .and_then(|v| v.as_str())
                .and_then(time::rfc3339_ms_utc_if_unzoned),
            entity: fields::str_at(data, "/customer_id").map(str::to_string),
            object_id: fields::str_at(data, "/id").map(str::to_string),
            amount: amount.filter(|_| currency.is_some()),
            currency: currency.filter(|_| amount.is_some()),
            part: None,
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let short: String = id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(26)
            .collect();
        serde_json::json!({
            "event_id": format!("evt_{short}"), "event_type": "transaction.completed",
            "occurred_at": crate::time::format_rfc3339_ms(now_ms),
            "notification_id": format!("ntf_{short}"),
            "data": {"id": format!("txn_{short}"), "status": "completed", "customer_id": "ctm_01hv6y1jedq4p1n0yqn5ba3ky4",
                     "currency_code": "USD", "details": {"totals": {"subtotal": "1000", "tax": "99", "total": "1099"}}}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let ts = TimeUnit::Seconds.of_ms(input.now_ms).to_string();
        let sig = HmacAlgorithm::Sha256.compute(key, &[ts.as_bytes(), b":", input.body])?;
        Ok(Headers::from_iter([(
            HEADER,
            format!("ts={ts};h1={}", hex::encode(sig)),
        )]))
    }
}

/// How the provider suite (`suite.rs`) signs for Paddle: `Paddle-Signature: ts=<unix
/// s>;h1=<hex>`, HMAC-SHA256 of `"{ts}:{body}"`.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Freshness, Signed, TestKey};
    fn sign(key: Option<&TestKey>, now_ms: i64) -> Signed {
        let body = br#"{"event_id":"evt_01","event_type":"transaction.completed","occurred_at":"2026-01-01T00:00:00Z","data":{"id":"txn_01","currency_code":"USD","details":{"totals":{"total":"1099"}}}}"#;
        let ts = now_ms.div_euclid(1000).to_string();
        let tag = key
            .expect("paddle is keyed")
            .hmac(HmacAlgorithm::Sha256, &[ts.as_bytes(), b":", body]);
        let value = format!("ts={ts};h1={}", hex::encode(tag));
        Signed::post(Headers::from_iter([(HEADER, value)]), *body)
    }
    Case {
        freshness: Some(Freshness {
            past_s: 5,
            future_s: 5,
        }),
        garbled: |s| {
            [
                "garbage",
                "h1=abcd",
                "ts=1767225600",
                "ts=1767225600;h1=zz",
                "ts=soon;h1=abcd",
                "ts=1767225600;ts=1767225601;h1=abcd",
                "ts=1767225600,h1=abcd",
            ]
            .map(|v| s.with_header(HEADER, v))
            .to_vec()
        },
        candidates: Some(|s, n| {
            let (ts, h1) = s.header(HEADER).split_once(';').expect("ts=…;h1=…");
            let wrong = format!(";h1={}", "ab".repeat(32)).repeat(n - 1);
            s.with_header(HEADER, format!("{ts}{wrong};{h1}"))
        }),
        ..Case::new(
            "paddle",
            "paddle_h1",
            || {
                TestKey::pair(
                    "pdl_ntfset_01jkr8fgq2yzd0v1n0p5r9e3kx_Ex4mPl3S3cr3t",
                    "pdl_ntfset_01jkr9zzq7wqa4m2b8c6d0e1fg_0th3rK3y",
                )
            },
            sign,
            Carrier::header(HEADER),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

    const SECRET: &str = "pdl_ntfset_01jkr8fgq2yzd0v1n0p5r9e3kx_Ex4mPl3S3cr3tK3yF0rT3st1ng0nly";
    const T: i64 = 1_767_225_600;

    fn paddle(secrets: Vec<Secret>) -> Paddle {
        Paddle::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn signed(secret: &str, ts: i64, body: &[u8]) -> Headers {
        let sig = HmacAlgorithm::Sha256
            .compute(secret.as_bytes(), &[ts.to_string().as_bytes(), b":", body])
            .unwrap();
        Headers::from_iter([(HEADER, format!("ts={ts};h1={}", hex::encode(sig)))])
    }

    #[test]
    fn every_paddle_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["paddle"]) {
            let h = v.headers();
            let got = paddle(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn paddle_vector_extracts_event_id_type_and_time() {
        let v = testkit::vector("paddle-valid");
        let h = v.headers();
        let got = paddle(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some("evt_01jkr8fgq2yzd0v1n0p5r9e3kx".into()),
                event_type: Some("transaction.completed".into()),
                canonical_type: Some(canonical::PAYMENT_SUCCEEDED),
                occurred_at_ms: Some(T * 1000),
                object_id: Some("txn_01jkr8fgq2yzd0v1n0p5r9e3kz".into()),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn paddle_transaction_carries_amount_currency_and_customer() {
        let p = paddle(vec![secret("k", SECRET)]);
        let body = br#"{"event_id":"evt_1","event_type":"transaction.paid","occurred_at":"2026-01-01T00:00:00Z","data":{"customer_id":"ctm_1","currency_code":"jpy","details":{"totals":{"total":"1500"}}}}"#;
        let got = p
            .extract(&request(&Headers::new(), body))
            .unwrap()
            .remove(0);
        assert_eq!(got.amount, Some(1500));
        assert_eq!(got.currency.as_deref(), Some("JPY"));
        assert_eq!(got.entity.as_deref(), Some("ctm_1"));
        assert_eq!(got.canonical_type, Some(canonical::PAYMENT_SUCCEEDED));
    }

    #[test]
    fn paddle_types_map_to_the_catalogue() {
        let p = paddle(vec![secret("k", SECRET)]);
        for (event_type, data, expected) in [
            (
                "transaction.payment_failed",
                "{}",
                Some(canonical::PAYMENT_FAILED),
            ),
            (
                "subscription.created",
                "{}",
                Some(canonical::SUBSCRIPTION_CREATED),
            ),
            (
                "subscription.updated",
                "{}",
                Some(canonical::SUBSCRIPTION_UPDATED),
            ),
            (
                "subscription.canceled",
                "{}",
                Some(canonical::SUBSCRIPTION_CANCELED),
            ),
            (
                "adjustment.created",
                r#"{"action":"refund","status":"pending_approval"}"#,
                None,
            ),
            (
                "adjustment.updated",
                r#"{"action":"refund","status":"approved"}"#,
                Some(canonical::PAYMENT_REFUNDED),
            ),
            (
                "adjustment.created",
                r#"{"action":"refund","status":"approved"}"#,
                Some(canonical::PAYMENT_REFUNDED),
            ),
            (
                "adjustment.created",
                r#"{"action":"chargeback","status":"approved"}"#,
                Some(canonical::PAYMENT_DISPUTED),
            ),
            (
                "adjustment.created",
                r#"{"action":"credit","status":"approved"}"#,
                None,
            ),
            ("transaction.created", "{}", None),
        ] {
            let body =
                format!(r#"{{"event_id":"evt_1","event_type":"{event_type}","data":{data}}}"#);
            let got = p
                .extract(&request(&Headers::new(), body.as_bytes()))
                .unwrap()
                .remove(0);
            assert_eq!(got.canonical_type, expected, "{event_type} {data}");
        }
        let refund = br#"{"event_id":"evt_2","event_type":"adjustment.updated","data":{"action":"refund","status":"approved","currency_code":"EUR","customer_id":"ctm_2","totals":{"total":"250"}}}"#;
        let got = p
            .extract(&request(&Headers::new(), refund))
            .unwrap()
            .remove(0);
        assert_eq!(
            (got.amount, got.currency.as_deref()),
            (Some(250), Some("EUR"))
        );
    }

    #[test]
    fn paddle_notification_without_event_id_is_an_extract_error() {
        let p = paddle(vec![secret("k", SECRET)]);
        for body in [
            &b"[]"[..],
            b"nope",
            br#"{"event_type":"x"}"#,
            br#"{"event_id":7}"#,
        ] {
            assert!(
                p.extract(&request(&Headers::new(), body)).is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn paddle_tolerance_is_configurable_for_queued_retries() {
        let p = Paddle::from_config(
            &serde_json::json!({"tolerance_seconds": 300, "future_tolerance_seconds": 30}),
            vec![secret("k", SECRET)],
        )
        .unwrap();
        let h = signed(SECRET, T, b"{}");
        assert!(p.verify(&request(&h, b"{}"), (T + 300) * 1000).is_ok());
        assert!(p.verify(&request(&h, b"{}"), (T + 301) * 1000).is_err());
        assert!(p.verify(&request(&h, b"{}"), (T - 31) * 1000).is_err());
    }

    #[test]
    fn paddle_sign_then_verify_round_trips_with_the_sample_body() {
        let p = paddle(vec![secret("k", SECRET)]);
        let now_ms = T * 1000 + 250;
        let body = p.sample_body("3f1c9a", now_ms);
        let h = p
            .sign(&SignInput {
                body: &body,
                now_ms,
                delivery_id: "d",
            })
            .unwrap();
        let req = request(&h, &body);
        assert!(p.verify(&req, now_ms).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some("evt_3f1c9a"));
        assert_eq!(
            (got.amount, got.currency.as_deref()),
            (Some(1099), Some("USD"))
        );
    }
}
