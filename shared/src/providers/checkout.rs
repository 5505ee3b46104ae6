//! Checkout.com (provider name `checkout`: registry names are identifiers, so not
//! `checkout.com`): `Cko-Signature: <hex>`, HMAC-SHA256 over the raw body keyed with the
//! webhook's signature key as UTF-8. The webhook may also send a static `Authorization` value
//! of your choosing, checked here by constant-time equality when configured. No timestamp is
//! signed: replay protection is the dedupe on the event `id`.
//! Source: <https://www.checkout.com/docs/workflows/set-up-your-webhook-receiver> (no SDK helper).

use serde::Deserialize;

use super::adyen::PaidSignal;
use super::crypto::{
    self, split_named_secrets, HmacAlgorithm, Keyring, SecretIds, SignatureEncoding,
};
use super::{
    canonical, money, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time::rfc3339_ms;

const HEADER: &str = "cko-signature";
const AUTHORIZATION: &str = "authorization";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CheckoutOptions {
    /// Id(s) of the source's secrets holding the `Authorization` header value configured on the
    /// webhook (same design as Adyen's `basic_auth_secret`). They are taken out of the HMAC
    /// key ring; when set, every request must carry a matching `Authorization`.
    authorization_secret: Option<SecretIds>,
    /// `authorisation` (default): `payment_approved` is `payment.succeeded` and
    /// `payment_captured` has no canonical type (automatic capture sends both for one
    /// payment). `capture`: `payment_approved` is `payment.pending`, `payment_captured` is
    /// `payment.succeeded`, `payment_capture_declined` is `payment.failed`.
    payment_succeeded_on: PaidSignal,
}

#[derive(Debug)]
pub(crate) struct Checkout {
    keys: Keyring,
    authorization: Option<Keyring>,
    paid_signal: PaidSignal,
}

impl Checkout {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: CheckoutOptions = crypto::parse_options("checkout", options)?;
        let (authorization, hmac) = split_named_secrets(
            "checkout",
            "authorization_secret",
            opts.authorization_secret.as_ref(),
            secrets,
        )?;
        let authorization = if authorization.is_empty() {
            None
        } else {
            Some(Keyring::new(
                "checkout authorization_secret",
                authorization,
            )?)
        };
        Ok(Self {
            keys: Keyring::new("checkout", hmac)?,
            authorization,
            paid_signal: opts.payment_succeeded_on,
        })
    }

    fn canonical(&self, event_type: &str) -> Option<&'static str> {
        use canonical::*;
        let capture = self.paid_signal == PaidSignal::Capture;
        match event_type {
            "payment_approved" if capture => Some(PAYMENT_PENDING),
            "payment_approved" => Some(PAYMENT_SUCCEEDED),
            "payment_captured" if capture => Some(PAYMENT_SUCCEEDED),
            "payment_capture_declined" if capture => Some(PAYMENT_FAILED),
            "payment_declined" => Some(PAYMENT_FAILED),
            "payment_refunded" => Some(PAYMENT_REFUNDED),
            "payment_canceled" | "payment_voided" => Some(PAYMENT_CANCELED),
            "payment_pending" => Some(PAYMENT_PENDING),
            // The events that open a dispute; its later steps (won, lost, expired, evidence
            // submitted…) keep their own type so one dispute is one `payment.disputed`.
            "dispute_received" | "dispute_evidence_required" => Some(PAYMENT_DISPUTED),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl Provider for Checkout {
    fn name(&self) -> &'static str {
        "checkout"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let value = crypto::required_header(req.headers, HEADER)?;
        let sig = SignatureEncoding::Hex
            .decode(value)
            .ok_or_else(|| VerifyError::MalformedSignature(format!("{HEADER} is not hex")))?;
        let key_id = self.keys.first_match(now_ms, |key| {
            HmacAlgorithm::Sha256.verify(key, &[req.body], &sig)
        })?;
        if let Some(ring) = &self.authorization {
            let presented = crypto::needed_header(req.headers, AUTHORIZATION)?;
            ring.first_match(now_ms, |expected| {
                crypto::token_eq(presented.as_bytes(), expected)
            })?;
        }
        Ok(Verified {
            scheme: "checkout_hmac_sha256",
            key_id: Some(key_id),
        })
    }

    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let event = crypto::json_object(req.body)
            .ok_or_else(|| ExtractError("checkout event body is not a JSON object".into()))?;
        let id = event
            .get("id")
            .and_then(|v| v.as_str())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ExtractError("checkout event has no string \"id\"".into()))?;
        let event_type = event.get("type").and_then(|v| v.as_str());
        let data = event.get("data");
        let field = |name: &str| data.and_then(|d| d.get(name));
        let currency = field("currency")
            .and_then(|c| c.as_str())
            .and_then(money::currency);
        let entity = data
            .and_then(|d| d.pointer("/customer/id"))
            .or_else(|| field("reference"))
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        Ok(vec![Extracted {
            unsigned_id: None,
            event_id: Some(id.to_string()),
            event_type: event_type.map(str::to_string),
            canonical_type: event_type.and_then(|t| self.canonical(t)),
            occurred_at_ms: event
                .get("created_on")
                .and_then(|v| v.as_str())
                .and_then(rfc3339_ms),
            entity,
            object_id: field("id")
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            amount: currency
                .as_ref()
                .and(field("amount"))
                .and_then(money::minor_from_json),
            currency,
            part: None,
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let tag: String = id
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(|b| char::from(b.to_ascii_lowercase()))
            .take(26)
            .collect();
        serde_json::json!({
            "id": format!("evt_{tag}"), "type": "payment_approved", "version": "1.0.33",
            "created_on": crate::time::format_rfc3339_ms(now_ms),
            "data": {"id": format!("pay_{tag}"), "amount": 2000, "currency": "GBP",
                     "reference": format!("ORD-{}", tag.get(..8).unwrap_or(&tag)),
                     "customer": {"id": "cus_udst2tfldj6upmye2reztkmm4i", "email": "jo@example.com"}}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let sig = HmacAlgorithm::Sha256.compute(key, &[input.body])?;
        let mut headers = Headers::from_iter([(HEADER, hex::encode(sig))]);
        if let Some(ring) = &self.authorization {
            let value = ring.signing_key(input.now_ms)?;
            headers.insert(AUTHORIZATION, String::from_utf8_lossy(value).into_owned());
        }
        Ok(headers)
    }
}

/// How the provider suite (`suite.rs`) signs for Checkout.com: `Cko-Signature: <hex>`,
/// HMAC-SHA256 of the body (no `Authorization` configured: see this file's tests for it).
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let body = br#"{"id":"evt_1","type":"payment_approved","created_on":"2026-01-01T00:00:00Z","data":{"amount":10000,"currency":"GBP","reference":"ORD-1"}}"#;
        let tag = key
            .expect("checkout is keyed")
            .hmac(HmacAlgorithm::Sha256, &[body]);
        Signed::post(Headers::from_iter([(HEADER, hex::encode(tag))]), *body)
    }
    Case {
        garbled: |s| {
            ["zz", "sha256=abcd", "abc"]
                .map(|v| s.with_header(HEADER, v))
                .to_vec()
        },
        ..Case::new(
            "checkout",
            "checkout_hmac_sha256",
            || TestKey::pair("ckSigKey-0f5e6d7c8b9a", "ckSigKey-7a1b2c3d4e5f"),
            sign,
            Carrier::header(HEADER),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;
    const KEY: &str = "ckSigKey-0f5e6d7c8b9a";
    const AUTH: &str = "my-configured-auth-header-value";

    fn checkout(secrets: Vec<Secret>) -> Checkout {
        Checkout::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn with_auth(secrets: Vec<Secret>) -> Checkout {
        Checkout::from_config(
            &serde_json::json!({"authorization_secret": "auth"}),
            secrets,
        )
        .unwrap()
    }

    fn signed(key: &str, body: &[u8]) -> String {
        hex::encode(
            HmacAlgorithm::Sha256
                .compute(key.as_bytes(), &[body])
                .unwrap(),
        )
    }

    #[test]
    fn every_checkout_vector_gets_its_expected_verdict_with_and_without_authorization() {
        for v in testkit::vectors_for(&["checkout.com"]) {
            let h = v.headers();
            let req = request(&h, v.body.as_bytes());
            let got = checkout(vec![v.secret()]).verify(&req, v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            let auth = with_auth(vec![v.secret(), secret("auth", AUTH)]).verify(&req, v.now_ms());
            assert_eq!(auth.is_ok(), v.expected.valid, "{}: {auth:?}", v.id);
            if let Ok(verified) = auth {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn checkout_vector_extracts_id_type_money_and_time() {
        let v = testkit::vector("checkoutcom-valid");
        let h = v.headers();
        let got = checkout(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some("evt_az5sblvku4ge3dwpztvyizgcau".into()),
                unsigned_id: None,
                event_type: Some("payment_approved".into()),
                canonical_type: Some(canonical::PAYMENT_SUCCEEDED),
                occurred_at_ms: Some(NOW_MS),
                entity: None,
                object_id: Some("pay_mbabizu24mvu3mela5njyhpit4".into()),
                amount: Some(10000),
                currency: Some("GBP".into()),
                part: None,
            }]
        );
    }

    #[test]
    fn checkout_entity_is_the_customer_else_the_reference() {
        let p = checkout(vec![secret("k", KEY)]);
        let h = Headers::new();
        let body = br#"{"id":"evt_1","type":"payment_captured","data":{"customer":{"id":"cus_1"},"reference":"ORD-1"}}"#;
        let got = p.extract(&request(&h, body)).unwrap().remove(0);
        assert_eq!(got.entity.as_deref(), Some("cus_1"));
        assert_eq!((got.amount, got.currency), (None, None));
        let body = br#"{"id":"evt_2","type":"payment_captured","data":{"reference":"ORD-1"}}"#;
        let got = p.extract(&request(&h, body)).unwrap().remove(0);
        assert_eq!(got.entity.as_deref(), Some("ORD-1"));
    }

    #[test]
    fn checkout_types_map_to_canonical_ones() {
        let p = checkout(vec![secret("k", KEY)]);
        let capture = Checkout::from_config(
            &serde_json::json!({"payment_succeeded_on": "capture"}),
            vec![secret("k", KEY)],
        )
        .unwrap();
        use canonical::*;
        for (t, default, on_capture) in [
            (
                "payment_approved",
                Some(PAYMENT_SUCCEEDED),
                Some(PAYMENT_PENDING),
            ),
            ("payment_captured", None, Some(PAYMENT_SUCCEEDED)),
            ("payment_capture_declined", None, Some(PAYMENT_FAILED)),
            (
                "payment_declined",
                Some(PAYMENT_FAILED),
                Some(PAYMENT_FAILED),
            ),
            (
                "payment_refunded",
                Some(PAYMENT_REFUNDED),
                Some(PAYMENT_REFUNDED),
            ),
            (
                "payment_voided",
                Some(PAYMENT_CANCELED),
                Some(PAYMENT_CANCELED),
            ),
            (
                "payment_canceled",
                Some(PAYMENT_CANCELED),
                Some(PAYMENT_CANCELED),
            ),
            (
                "payment_pending",
                Some(PAYMENT_PENDING),
                Some(PAYMENT_PENDING),
            ),
            (
                "dispute_evidence_required",
                Some(PAYMENT_DISPUTED),
                Some(PAYMENT_DISPUTED),
            ),
            (
                "dispute_received",
                Some(PAYMENT_DISPUTED),
                Some(PAYMENT_DISPUTED),
            ),
            ("dispute_won", None, None),
            ("card_verified", None, None),
        ] {
            assert_eq!(p.canonical(t), default, "{t}");
            assert_eq!(capture.canonical(t), on_capture, "{t}");
        }
    }

    #[test]
    fn checkout_body_without_string_id_is_an_extract_error() {
        let p = checkout(vec![secret("k", KEY)]);
        let h = Headers::new();
        for body in [&b"nope"[..], b"[]", br#"{"id":1}"#, br#"{"id":""}"#] {
            assert!(p.extract(&request(&h, body)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn uppercase_hex_cko_signature_is_accepted() {
        let h = Headers::from_iter([("Cko-Signature", signed(KEY, b"{}").to_uppercase())]);
        assert!(checkout(vec![secret("k", KEY)])
            .verify(&request(&h, b"{}"), NOW_MS)
            .is_ok());
    }

    #[test]
    fn configured_authorization_header_must_match() {
        let p = with_auth(vec![secret("k", KEY), secret("auth", AUTH)]);
        let sig = signed(KEY, b"{}");
        let missing = Headers::from_iter([("Cko-Signature", sig.as_str())]);
        assert_eq!(
            p.verify(&request(&missing, b"{}"), NOW_MS),
            Err(VerifyError::MissingHeader("authorization".into()))
        );
        let wrong =
            Headers::from_iter([("Cko-Signature", sig.as_str()), ("Authorization", "nope")]);
        assert_eq!(
            p.verify(&request(&wrong, b"{}"), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
        // The authorization value is not an HMAC key: signing with it does not verify.
        let by_auth = Headers::from_iter([
            ("Cko-Signature", signed(AUTH, b"{}")),
            ("Authorization", AUTH.into()),
        ]);
        assert_eq!(
            p.verify(&request(&by_auth, b"{}"), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn checkout_sample_sign_then_verify_round_trips() {
        let p = with_auth(vec![secret("k", KEY), secret("auth", AUTH)]);
        let body = p.sample_body("0d5c2f8e-1b7a-4a8c-9e31-6f0b2a4c7d9e", NOW_MS);
        let input = SignInput {
            body: &body,
            now_ms: NOW_MS,
            delivery_id: "d",
        };
        let h = p.sign(&input).unwrap();
        assert_eq!(h.get("authorization"), Some(AUTH));
        let req = request(&h, &body);
        assert_eq!(p.verify(&req, NOW_MS).unwrap().key_id.as_deref(), Some("k"));
        let e = p.extract(&req).unwrap().remove(0);
        assert_eq!(
            e.event_id.as_deref(),
            Some("evt_0d5c2f8e1b7a4a8c9e316f0b2a")
        );
        assert_eq!(e.entity.as_deref(), Some("cus_udst2tfldj6upmye2reztkmm4i"));
        assert_eq!((e.amount, e.occurred_at_ms), (Some(2000), Some(NOW_MS)));
    }

    #[test]
    fn checkout_config_errors_are_clear() {
        let err = Checkout::from_config(
            &serde_json::json!({"authorization_secret": "x"}),
            vec![secret("k", KEY)],
        )
        .unwrap_err();
        assert!(
            err.0.contains("authorization_secret") && err.0.contains("\"x\""),
            "{err}"
        );
        let err = Checkout::from_config(
            &serde_json::json!({"authorization": "x"}),
            vec![secret("k", KEY)],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `authorization`"), "{err}");
        assert!(Checkout::from_config(&serde_json::Value::Null, vec![]).is_err());
        assert!(!format!(
            "{:?}",
            with_auth(vec![secret("k", KEY), secret("auth", AUTH)])
        )
        .contains(AUTH));
    }
}
