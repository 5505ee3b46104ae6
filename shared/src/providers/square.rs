//! Square: `x-square-hmacsha256-signature: <base64>`, HMAC-SHA256 over
//! `notification_url + body`, keyed with the subscription's signature key as UTF-8. The URL
//! is the one in the subscription, exactly (option `url`). The legacy
//! `x-square-signature` (HMAC-SHA1, same bytes) is accepted only with `allow_legacy_sha1`.
//! No timestamp is signed: replay protection is the dedupe on `event_id`.
//! Source: square-python-sdk `square/utils/webhooks_helper.py`, docs "Validate notifications".

use serde::Deserialize;

use super::crypto::{self, HmacAlgorithm, Keyring, SignatureEncoding};
use super::{
    canonical, fields, money, ExtractError, Extracted, Provider, ProviderConfigError, SignInput,
    Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

const SIGNATURE_256: &str = "x-square-hmacsha256-signature";
const SIGNATURE_SHA1: &str = "x-square-signature";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SquareOptions {
    /// The notification URL exactly as in the webhook subscription.
    url: String,
    /// Accept the deprecated `x-square-signature` (HMAC-SHA1) when no SHA-256 header is
    /// present.
    #[serde(default)]
    allow_legacy_sha1: bool,
}

#[derive(Debug)]
pub struct Square {
    keys: Keyring,
    url: String,
    allow_legacy_sha1: bool,
}

impl Square {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: SquareOptions = crypto::parse_options("square", options)?;
        if !(opts.url.starts_with("https://") || opts.url.starts_with("http://")) {
            return Err(ProviderConfigError(
                "square options: `url` must be the absolute notification URL of the subscription"
                    .into(),
            ));
        }
        Ok(Self {
            keys: Keyring::new("square", secrets)?,
            url: opts.url,
            allow_legacy_sha1: opts.allow_legacy_sha1,
        })
    }

    /// The SHA-256 header decides alone when present: falling back to SHA-1 after a SHA-256
    /// mismatch would let a forger pick the weaker scheme.
    fn scheme<'h>(&self, headers: &'h Headers) -> Result<(HmacAlgorithm, &'h str), VerifyError> {
        match crypto::required_header(headers, SIGNATURE_256) {
            Ok(value) => Ok((HmacAlgorithm::Sha256, value)),
            Err(missing) if self.allow_legacy_sha1 => {
                crypto::required_header(headers, SIGNATURE_SHA1)
                    .map(|value| (HmacAlgorithm::Sha1, value))
                    .map_err(|_| missing)
            }
            Err(missing) => Err(missing),
        }
    }
}

/// `payment.updated` by the payment's status; refunds once completed; new disputes.
fn canonical_for(event_type: &str, object: &serde_json::Value) -> Option<&'static str> {
    match event_type {
        "payment.updated" => match fields::str_at(object, "/payment/status") {
            Some("COMPLETED") => Some(canonical::PAYMENT_SUCCEEDED),
            Some("FAILED") => Some(canonical::PAYMENT_FAILED),
            Some("CANCELED") => Some(canonical::PAYMENT_CANCELED),
            _ => None,
        },
        // A refund is created PENDING and updated to COMPLETED (or FAILED/REJECTED): only a
        // completed one is money back.
        "refund.created" | "refund.updated" => (fields::str_at(object, "/refund/status")
            == Some("COMPLETED"))
        .then_some(canonical::PAYMENT_REFUNDED),
        "dispute.created" => Some(canonical::PAYMENT_DISPUTED),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Provider for Square {
    fn name(&self) -> &'static str {
        "square"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let (algorithm, value) = self.scheme(req.headers)?;
        let sig = SignatureEncoding::Base64.decode(value).ok_or_else(|| {
            VerifyError::MalformedSignature("square signature is not base64".into())
        })?;
        let parts: [&[u8]; 2] = [self.url.as_bytes(), req.body];
        let key_id = self
            .keys
            .first_match(now_ms, |key| algorithm.verify(key, &parts, &sig))?;
        Ok(Verified {
            scheme: match algorithm {
                HmacAlgorithm::Sha1 => "square_hmac_sha1",
                _ => "square_hmac_sha256",
            },
            key_id: Some(key_id),
        })
    }

    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let event: serde_json::Value = fields::json_object_value(req.body)
            .ok_or_else(|| ExtractError("square notification is not a JSON object".into()))?;
        let event_id = fields::str_at(&event, "/event_id")
            .ok_or_else(|| ExtractError("square notification has no string \"event_id\"".into()))?;
        let event_type = fields::str_at(&event, "/type");
        let null = serde_json::Value::Null;
        let object = event
            .get("data")
            .and_then(|d| d.get("object"))
            .unwrap_or(&null);
        // The money object sits under the object's own kind: payment, refund, dispute.
        let money_of = |kind: &str| object.get(kind).and_then(|o| o.get("amount_money"));
        let amount_money = ["payment", "refund", "dispute"]
            .iter()
            .find_map(|kind| money_of(kind));
        let amount = amount_money
            .and_then(|m| m.get("amount"))
            .and_then(money::minor_from_json);
        let currency = amount_money
            .and_then(|m| fields::str_at(m, "/currency"))
            .and_then(money::currency);
        let entity = ["payment", "refund", "dispute", "customer"]
            .iter()
            .find_map(|kind| {
                object
                    .get(kind)
                    .and_then(|o| fields::str_at(o, "/customer_id"))
            })
            .or_else(|| fields::str_at(object, "/customer/id"));
        Ok(vec![Extracted {
            unsigned_id: None,
            event_id: Some(event_id.to_string()),
            event_type: event_type.map(str::to_string),
            canonical_type: event_type.and_then(|t| canonical_for(t, object)),
            occurred_at_ms: fields::str_at(&event, "/created_at")
                .and_then(time::rfc3339_ms_utc_if_unzoned),
            entity: entity.map(str::to_string),
            object_id: fields::str_at(&event, "/data/id").map(str::to_string),
            amount: amount.filter(|_| currency.is_some()),
            currency: currency.filter(|_| amount.is_some()),
            part: None,
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        serde_json::json!({
            "merchant_id": "6SSW7HV8K2ST5", "type": "payment.updated", "event_id": id,
            "created_at": crate::time::format_rfc3339_ms(now_ms),
            "data": {"type": "payment", "id": format!("pay-{id}"), "object": {"payment": {
                "id": format!("pay-{id}"), "status": "COMPLETED", "customer_id": "JDKYHBWT1D4F8MFH63DBMEN8Y4",
                "amount_money": {"amount": 1000, "currency": "USD"}}}}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let sig = HmacAlgorithm::Sha256.compute(key, &[self.url.as_bytes(), input.body])?;
        Ok(Headers::from_iter([(
            SIGNATURE_256,
            SignatureEncoding::Base64.encode(&sig),
        )]))
    }
}

/// How the provider suite (`suite.rs`) signs for Square:
/// `X-Square-HmacSha256-Signature: <base64>`, HMAC-SHA256 of the subscription's notification
/// URL followed by the body.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    const URL: &str = "https://webhook.site/webhooks";
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let body = br#"{"merchant_id":"6SSW7HV8K2ST5","type":"payment.updated","event_id":"6f0e","created_at":"2026-01-01T00:00:00Z","data":{"type":"payment","id":"p1","object":{"payment":{"id":"p1","status":"COMPLETED","amount_money":{"amount":2000,"currency":"USD"}}}}}"#;
        let tag = key
            .expect("square is keyed")
            .hmac(HmacAlgorithm::Sha256, &[URL.as_bytes(), body]);
        let value = SignatureEncoding::Base64.encode(&tag);
        Signed::post(Headers::from_iter([(SIGNATURE_256, value)]), *body)
    }
    Case {
        options: || serde_json::json!({ "url": URL }),
        garbled: |s| vec![s.with_header(SIGNATURE_256, "***")],
        ..Case::new(
            "square",
            "square_hmac_sha256",
            || TestKey::pair("sq-sig-key-Rb8Nq3Tw", "sq-sig-key-Fz2Lc6Vm"),
            sign,
            Carrier::header(SIGNATURE_256),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret, Vector};

    const URL: &str = "https://webhook.site/webhooks";
    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;

    fn square(url: &str, secrets: Vec<Secret>) -> Square {
        Square::from_config(&serde_json::json!({ "url": url }), secrets).unwrap()
    }

    fn for_vector(v: &Vector) -> Square {
        square(
            v.url.as_deref().expect("square vector has a url"),
            vec![v.secret()],
        )
    }

    fn signed(alg: HmacAlgorithm, header: &str, key: &str, body: &[u8]) -> Headers {
        let sig = alg
            .compute(key.as_bytes(), &[URL.as_bytes(), body])
            .unwrap();
        Headers::from_iter([(header, SignatureEncoding::Base64.encode(&sig))])
    }

    #[test]
    fn every_square_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["square"]) {
            let h = v.headers();
            let got = for_vector(&v).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn square_vector_extracts_event_id_type_and_time() {
        let v = testkit::vector("square-sdk-test");
        let h = v.headers();
        let got = for_vector(&v)
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some("ac3ac95b-f97d-458c-a6e6-18981597e05f".into()),
                event_type: Some("webhooks.test_notification".into()),
                occurred_at_ms: Some(1_657_744_259_037),
                object_id: Some("bc368e64-01aa-407e-b46e-3231809b1129".into()),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn square_payment_statuses_map_to_the_catalogue_with_money() {
        let p = square(URL, vec![secret("k", "key")]);
        for (status, expected) in [
            ("COMPLETED", Some(canonical::PAYMENT_SUCCEEDED)),
            ("FAILED", Some(canonical::PAYMENT_FAILED)),
            ("CANCELED", Some(canonical::PAYMENT_CANCELED)),
            ("APPROVED", None),
        ] {
            let body = format!(
                r#"{{"event_id":"e1","type":"payment.updated","data":{{"object":{{"payment":{{"status":"{status}","customer_id":"C1","amount_money":{{"amount":1234,"currency":"usd"}}}}}}}}}}"#
            );
            let got = p
                .extract(&request(&Headers::new(), body.as_bytes()))
                .unwrap()
                .remove(0);
            assert_eq!(got.canonical_type, expected, "{status}");
            assert_eq!(
                (got.amount, got.currency.as_deref()),
                (Some(1234), Some("USD"))
            );
            assert_eq!(got.entity.as_deref(), Some("C1"));
        }
    }

    #[test]
    fn square_refunds_and_disputes_map_to_the_catalogue() {
        let p = square(URL, vec![secret("k", "key")]);
        for (event_type, object, expected) in [
            (
                "refund.created",
                r#"{"refund":{"status":"PENDING","amount_money":{"amount":500,"currency":"EUR"}}}"#,
                None,
            ),
            (
                "refund.updated",
                r#"{"refund":{"status":"COMPLETED","amount_money":{"amount":500,"currency":"EUR"}}}"#,
                Some(canonical::PAYMENT_REFUNDED),
            ),
            (
                "dispute.created",
                r#"{"dispute":{"state":"EVIDENCE_REQUIRED","amount_money":{"amount":500,"currency":"EUR"}}}"#,
                Some(canonical::PAYMENT_DISPUTED),
            ),
        ] {
            let body =
                format!(r#"{{"event_id":"e","type":"{event_type}","data":{{"object":{object}}}}}"#);
            let got = p
                .extract(&request(&Headers::new(), body.as_bytes()))
                .unwrap()
                .remove(0);
            assert_eq!(got.canonical_type, expected, "{event_type}");
            assert_eq!(
                (got.amount, got.currency.as_deref()),
                (Some(500), Some("EUR"))
            );
        }
    }

    #[test]
    fn square_notification_without_event_id_is_an_extract_error() {
        let p = square(URL, vec![secret("k", "key")]);
        for body in [&b"[]"[..], b"x", br#"{"type":"payment.updated"}"#] {
            assert!(
                p.extract(&request(&Headers::new(), body)).is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn legacy_sha1_square_signature_needs_the_option() {
        let h = signed(HmacAlgorithm::Sha1, SIGNATURE_SHA1, "key", b"{}");
        assert_eq!(
            square(URL, vec![secret("k", "key")]).verify(&request(&h, b"{}"), NOW_MS),
            Err(VerifyError::MissingSignature(SIGNATURE_256.into()))
        );
        let legacy = Square::from_config(
            &serde_json::json!({"url": URL, "allow_legacy_sha1": true}),
            vec![secret("k", "key")],
        )
        .unwrap();
        let got = legacy.verify(&request(&h, b"{}"), NOW_MS).unwrap();
        assert_eq!(got.scheme, "square_hmac_sha1");
        // A wrong SHA-256 header is not rescued by a right SHA-1 one.
        let mut both = signed(HmacAlgorithm::Sha1, SIGNATURE_SHA1, "key", b"{}");
        both.insert(SIGNATURE_256, SignatureEncoding::Base64.encode(&[0u8; 32]));
        assert_eq!(
            legacy.verify(&request(&both, b"{}"), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn square_sign_then_verify_round_trips_with_the_sample_body() {
        let p = square(URL, vec![secret("k", "key")]);
        let body = p.sample_body("6f0e", NOW_MS);
        let h = p
            .sign(&SignInput {
                body: &body,
                now_ms: NOW_MS,
                delivery_id: "d",
            })
            .unwrap();
        let req = request(&h, &body);
        assert!(p.verify(&req, NOW_MS).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some("6f0e"));
        assert_eq!(got.canonical_type, Some(canonical::PAYMENT_SUCCEEDED));
        assert_eq!(got.occurred_at_ms, Some(NOW_MS));
    }

    #[test]
    fn square_config_requires_the_notification_url() {
        let err =
            Square::from_config(&serde_json::Value::Null, vec![secret("k", "key")]).unwrap_err();
        assert!(err.0.contains("missing field `url`"), "{err}");
        assert!(Square::from_config(
            &serde_json::json!({"url": "/hook"}),
            vec![secret("k", "key")]
        )
        .is_err());
        let err = Square::from_config(
            &serde_json::json!({"url": URL, "sha1": true}),
            vec![secret("k", "key")],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `sha1`"), "{err}");
        assert!(Square::from_config(&serde_json::json!({"url": URL}), vec![]).is_err());
    }
}
