//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=<hex>]`, HMAC-SHA256 over
//! `"{t}.{body}"`, keyed with the whole `whsec_…` string as UTF-8 (not base64-decoded).
//! Source: stripe-python `stripe/_webhook.py`, stripe-node `src/Webhooks.ts`.

use serde::Deserialize;

use super::crypto::{self, HmacAlgorithm, Keyring, TimeUnit, Tolerance};
use super::{
    canonical, money, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

const HEADER: &str = "stripe-signature";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StripeOptions {
    /// Stripe's SDK default (`DEFAULT_TOLERANCE = 300`).
    tolerance_seconds: u32,
    /// Both Stripe SDKs accept any future `t`. We refuse far-future ones: a signed request
    /// stamped hours ahead (sender clock bug, or a signature minted ahead of time by someone
    /// holding the key) would otherwise stay replayable for that long past its real send time.
    future_tolerance_seconds: u32,
}

impl Default for StripeOptions {
    fn default() -> Self {
        Self {
            tolerance_seconds: 300,
            future_tolerance_seconds: 300,
        }
    }
}

#[derive(Debug)]
pub struct Stripe {
    keys: Keyring,
    tolerance: Tolerance,
}

impl Stripe {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: StripeOptions = crypto::parse_options("stripe", options)?;
        Ok(Self {
            keys: Keyring::new("stripe", secrets)?,
            tolerance: Tolerance::both(opts.tolerance_seconds, opts.future_tolerance_seconds),
        })
    }
}

/// The parts of `Stripe-Signature` that count: the timestamp exactly as sent, and every
/// `v1` signature, hex-decoded. `v0` (test-mode, fake secret) and unknown schemes are ignored.
struct SignatureHeader<'a> {
    t: &'a str,
    v1: Vec<Vec<u8>>,
}

fn parse_header(value: &str) -> Result<SignatureHeader<'_>, VerifyError> {
    let malformed = |why: &str| VerifyError::MalformedSignature(format!("stripe-signature: {why}"));
    let mut t = None;
    let mut v1 = Vec::new();
    let mut v1_seen = false;
    for (key, val) in value.split(',').filter_map(|item| item.split_once('=')) {
        match key.trim() {
            "t" if t.is_some() => return Err(malformed("more than one t=")),
            "t" => t = Some(val.trim()),
            "v1" => {
                v1_seen = true;
                // An entry that is not hex can never match; keep the others.
                if let Some(sig) = crypto::SignatureEncoding::Hex.decode(val.trim()) {
                    v1.push(sig);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or_else(|| malformed("no t= timestamp"))?;
    if !v1_seen {
        return Err(malformed("no v1= signature"));
    }
    if v1.is_empty() {
        return Err(malformed("v1= is not hex"));
    }
    let v1 = crypto::bounded_candidates(v1, HEADER)?;
    Ok(SignatureHeader { t, v1 })
}

/// Stripe's types on the canonical catalogue. One Stripe payment can raise
/// `payment_intent.succeeded`, `charge.succeeded` and `checkout.session.completed`: each maps to
/// `payment.succeeded`, so an endpoint subscribed to several sees it once per type (the
/// envelope's entity and amount let a handler correlate them).
fn canonical_type(event_type: &str, object: Option<&serde_json::Value>) -> Option<&'static str> {
    use canonical::*;
    let paid = || {
        object
            .and_then(|o| o.get("payment_status"))
            .and_then(|s| s.as_str())
            == Some("paid")
    };
    match event_type {
        "payment_intent.succeeded"
        | "charge.succeeded"
        | "checkout.session.async_payment_succeeded" => Some(PAYMENT_SUCCEEDED),
        // Delayed payment methods complete the session unpaid and report later.
        "checkout.session.completed" => paid().then_some(PAYMENT_SUCCEEDED),
        "payment_intent.payment_failed"
        | "charge.failed"
        | "checkout.session.async_payment_failed" => Some(PAYMENT_FAILED),
        "payment_intent.processing" => Some(PAYMENT_PENDING),
        "charge.refunded" => Some(PAYMENT_REFUNDED),
        "charge.dispute.created" => Some(PAYMENT_DISPUTED),
        "payment_intent.canceled" => Some(PAYMENT_CANCELED),
        "customer.subscription.created" => Some(SUBSCRIPTION_CREATED),
        "customer.subscription.updated" => Some(SUBSCRIPTION_UPDATED),
        "customer.subscription.deleted" => Some(SUBSCRIPTION_CANCELED),
        "payout.paid" => Some(PAYOUT_PAID),
        "payout.failed" => Some(PAYOUT_FAILED),
        "identity.verification_session.verified" => Some(KYC_VERIFIED),
        // `requires_input`: a verification check failed (document unreadable, selfie mismatch…);
        // the user may try again, which starts a new cycle with its own events.
        "identity.verification_session.requires_input" => Some(KYC_REJECTED),
        "identity.verification_session.processing" => Some(KYC_PENDING),
        "customer.created" => Some(ACCOUNT_REGISTERED),
        "customer.updated" => Some(ACCOUNT_UPDATED),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Provider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let header = parse_header(crypto::required_header(req.headers, HEADER)?)?;
        let t = crypto::parse_unix(header.t)?;
        let parts: [&[u8]; 3] = [header.t.as_bytes(), b".", req.body];
        // During a secret roll the header carries one v1 per active secret; any match passes.
        let key_id = self.keys.first_match(now_ms, |key| {
            HmacAlgorithm::Sha256.matches_any(key, &parts, &header.v1)
        })?;
        // Freshness after authenticity: a stale but genuine request is told apart from a forgery.
        self.tolerance.check(t, TimeUnit::Seconds, now_ms)?;
        Ok(Verified {
            scheme: "stripe_v1",
            key_id: Some(key_id),
        })
    }

    /// Money and the customer come from `data.object`: `amount` (already minor units), or
    /// `amount_total` (Checkout Session), `amount_refunded` (`charge.refunded`), `amount_paid`
    /// (invoice); the entity is its `customer` (id, or expanded object's id), else the
    /// object's own id (a Customer is its own entity).
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let event = crypto::json_object(req.body)
            .ok_or_else(|| ExtractError("stripe event body is not a JSON object".into()))?;
        let id = event
            .get("id")
            .and_then(|v| v.as_str())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ExtractError("stripe event has no string \"id\"".into()))?;
        let event_type = event.get("type").and_then(|v| v.as_str());
        let object = event.get("data").and_then(|d| d.get("object"));
        let field = |name: &str| object.and_then(|o| o.get(name));
        let text = |name: &str| {
            field(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        let amount_field = match (text("object"), event_type) {
            (Some("checkout.session"), _) => "amount_total",
            (_, Some("charge.refunded")) => "amount_refunded",
            (Some("invoice"), _) => "amount_paid",
            _ => "amount",
        };
        let currency = text("currency").and_then(money::currency);
        let entity = text("customer")
            .or_else(|| {
                field("customer")
                    .and_then(|c| c.get("id"))
                    .and_then(|v| v.as_str())
            })
            .or_else(|| text("id"));
        Ok(vec![Extracted {
            unsigned_id: None,
            event_id: Some(id.to_string()),
            event_type: event_type.map(str::to_string),
            canonical_type: event_type.and_then(|t| canonical_type(t, object)),
            occurred_at_ms: time::unix_seconds_ms(event.get("created")),
            entity: entity.map(str::to_string),
            object_id: text("id").map(str::to_string),
            amount: currency
                .as_ref()
                .and(field(amount_field))
                .and_then(money::minor_from_json),
            currency,
            part: None,
        }])
    }

    /// Stripe lists events for 30 days (a reconciliation poll can still find one) and retries for 3.
    fn default_dedupe_window_seconds(&self) -> u64 {
        35 * 86_400
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let now_s = now_ms / 1000;
        serde_json::json!({
            "id": format!("evt_{}", id.get(..24).unwrap_or(id)), "object": "event", "api_version": "2024-06-20",
            "created": now_s, "type": "payment_intent.succeeded",
            "data": {"object": {"id": format!("pi_{}", id.get(..24).unwrap_or(id)), "object": "payment_intent", "amount": 2000, "currency": "usd"}}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let t = TimeUnit::Seconds.of_ms(input.now_ms).to_string();
        let sig = HmacAlgorithm::Sha256.compute(key, &[t.as_bytes(), b".", input.body])?;
        Ok(Headers::from_iter([(
            HEADER,
            format!("t={t},v1={}", hex::encode(sig)),
        )]))
    }
}

/// How the provider suite (`suite.rs`) signs for Stripe: `t=<unix s>,v1=<hex>`, HMAC-SHA256
/// of `"{t}.{body}"` keyed with the whole `whsec_` string.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Freshness, Signed, TestKey};
    fn sign(key: Option<&TestKey>, now_ms: i64) -> Signed {
        let key = key.expect("stripe is keyed");
        let body = br#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1","amount":2000,"currency":"usd"}}}"#;
        let t = now_ms.div_euclid(1000).to_string();
        let sig = key.hmac(HmacAlgorithm::Sha256, &[t.as_bytes(), b".", body]);
        let value = format!("t={t},v1={}", hex::encode(sig));
        Signed::post(Headers::from_iter([("Stripe-Signature", value)]), *body)
    }
    Case {
        freshness: Some(Freshness {
            past_s: 300,
            future_s: 300,
        }),
        garbled: |s| {
            [
                "garbage",
                "v1=abcd",
                "t=1767225600",
                "t=1767225600,v0=abcd",
                "t=1767225600,v1=zz",
                "t=abc,v1=abcd",
                "t=1767225600,t=1767225601,v1=abcd",
                "t=,v1=",
                "=,=,,,",
            ]
            .map(|v| s.with_header(HEADER, v))
            .to_vec()
        },
        candidates: Some(|s, n| {
            let (t, v1) = s.header(HEADER).split_once(',').expect("t=…,v1=…");
            let wrong = format!(",v1={}", "ab".repeat(32)).repeat(n - 1);
            s.with_header(HEADER, format!("{t}{wrong},{v1}"))
        }),
        ..Case::new(
            "stripe",
            "stripe_v1",
            || {
                TestKey::pair(
                    "whsec_test_5WbX3cQ9nK2pLr8TzA7vYmE4",
                    "whsec_other_Lk2Qx7Vb9Rt4Nm8Cz1Wd",
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

    fn stripe(secrets: Vec<Secret>) -> Stripe {
        Stripe::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn headers(value: &str) -> Headers {
        Headers::from_iter([("Stripe-Signature", value)])
    }

    /// A header signed by `secret` for `body` at unix second `t`.
    fn signed(secret: &str, t: i64, body: &[u8]) -> String {
        let sig = HmacAlgorithm::Sha256
            .compute(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body])
            .unwrap();
        format!("t={t},v1={}", hex::encode(sig))
    }

    const SECRET: &str = "whsec_test_5WbX3cQ9nK2pLr8TzA7vYmE4";
    const T: i64 = 1_767_225_600;

    #[test]
    fn every_stripe_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["stripe"]) {
            let h = v.headers();
            let got = stripe(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn stripe_vector_extracts_event_id_and_type() {
        let v = testkit::vector("stripe-valid");
        let h = v.headers();
        let got = stripe(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap()
            .remove(0);
        assert_eq!(
            got,
            Extracted {
                event_id: Some("evt_test_webhook".into()),
                unsigned_id: None,
                event_type: Some("payment_intent.succeeded".into()),
                canonical_type: Some(canonical::PAYMENT_SUCCEEDED),
                occurred_at_ms: None,
                entity: Some("pi_123".into()),
                object_id: Some("pi_123".into()),
                amount: Some(2000),
                currency: Some("USD".into()),
                part: None,
            }
        );
    }

    fn extract_one(body: serde_json::Value) -> Extracted {
        let body = body.to_string();
        stripe(vec![secret("k", SECRET)])
            .extract(&request(&Headers::new(), body.as_bytes()))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn stripe_customer_is_the_entity_whether_an_id_or_expanded() {
        let e = extract_one(
            serde_json::json!({"id": "evt_1", "type": "charge.succeeded",
            "data": {"object": {"id": "ch_1", "object": "charge", "amount": 500, "currency": "eur", "customer": "cus_1"}}}),
        );
        assert_eq!(e.entity.as_deref(), Some("cus_1"));
        assert_eq!((e.amount, e.currency.as_deref()), (Some(500), Some("EUR")));
        let e = extract_one(
            serde_json::json!({"id": "evt_2", "type": "charge.succeeded",
            "data": {"object": {"id": "ch_1", "customer": {"id": "cus_2", "object": "customer"}}}}),
        );
        assert_eq!(e.entity.as_deref(), Some("cus_2"));
        assert_eq!((e.amount, e.currency), (None, None));
        let e = extract_one(
            serde_json::json!({"id": "evt_3", "type": "customer.created",
            "data": {"object": {"id": "cus_3", "object": "customer", "customer": null}}}),
        );
        assert_eq!(e.entity.as_deref(), Some("cus_3"));
        assert_eq!(e.canonical_type, Some(canonical::ACCOUNT_REGISTERED));
    }

    #[test]
    fn stripe_amount_field_follows_the_object() {
        let e = extract_one(
            serde_json::json!({"id": "evt_1", "type": "checkout.session.completed",
            "data": {"object": {"id": "cs_1", "object": "checkout.session", "amount_total": 1999,
                                "currency": "jpy", "payment_status": "paid", "customer": "cus_1"}}}),
        );
        assert_eq!((e.amount, e.currency.as_deref()), (Some(1999), Some("JPY")));
        assert_eq!(e.canonical_type, Some(canonical::PAYMENT_SUCCEEDED));
        let e = extract_one(serde_json::json!({"id": "evt_2", "type": "charge.refunded",
            "data": {"object": {"id": "ch_1", "object": "charge", "amount": 1000, "amount_refunded": 400, "currency": "usd"}}}));
        assert_eq!(e.amount, Some(400));
        assert_eq!(e.canonical_type, Some(canonical::PAYMENT_REFUNDED));
    }

    #[test]
    fn unpaid_checkout_session_is_not_payment_succeeded() {
        let e = extract_one(
            serde_json::json!({"id": "evt_1", "type": "checkout.session.completed",
            "data": {"object": {"object": "checkout.session", "payment_status": "unpaid"}}}),
        );
        assert_eq!(e.canonical_type, None);
    }

    #[test]
    fn stripe_types_map_to_canonical_ones() {
        use canonical::*;
        for (t, expected) in [
            ("payment_intent.succeeded", Some(PAYMENT_SUCCEEDED)),
            ("charge.succeeded", Some(PAYMENT_SUCCEEDED)),
            ("payment_intent.payment_failed", Some(PAYMENT_FAILED)),
            ("charge.failed", Some(PAYMENT_FAILED)),
            ("charge.refunded", Some(PAYMENT_REFUNDED)),
            ("charge.dispute.created", Some(PAYMENT_DISPUTED)),
            ("payment_intent.canceled", Some(PAYMENT_CANCELED)),
            ("customer.subscription.created", Some(SUBSCRIPTION_CREATED)),
            ("customer.subscription.updated", Some(SUBSCRIPTION_UPDATED)),
            ("customer.subscription.deleted", Some(SUBSCRIPTION_CANCELED)),
            ("payout.paid", Some(PAYOUT_PAID)),
            ("payout.failed", Some(PAYOUT_FAILED)),
            ("identity.verification_session.verified", Some(KYC_VERIFIED)),
            (
                "identity.verification_session.requires_input",
                Some(KYC_REJECTED),
            ),
            ("customer.created", Some(ACCOUNT_REGISTERED)),
            ("invoice.created", None),
        ] {
            assert_eq!(canonical_type(t, None), expected, "{t}");
        }
    }

    #[test]
    fn created_seconds_become_occurred_at_ms() {
        let body = br#"{"id":"evt_1","type":"charge.succeeded","created":1767225600}"#;
        let h = Headers::new();
        let got = stripe(vec![secret("k", SECRET)])
            .extract(&request(&h, body))
            .unwrap()
            .remove(0);
        assert_eq!(got.occurred_at_ms, Some(1_767_225_600_000));
    }

    #[test]
    fn stripe_body_without_string_id_is_an_extract_error() {
        let p = stripe(vec![secret("k", SECRET)]);
        let h = Headers::new();
        for body in [&b"not json"[..], b"[]", br#"{"id":42}"#, br#"{"type":"x"}"#] {
            assert!(p.extract(&request(&h, body)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn stripe_tolerances_are_configurable() {
        let p = Stripe::from_config(
            &serde_json::json!({"tolerance_seconds": 10, "future_tolerance_seconds": 0}),
            vec![secret("k", SECRET)],
        )
        .unwrap();
        let h = headers(&signed(SECRET, T, b"{}"));
        assert!(p.verify(&request(&h, b"{}"), (T + 10) * 1000).is_ok());
        assert!(p.verify(&request(&h, b"{}"), (T + 11) * 1000).is_err());
        assert!(p.verify(&request(&h, b"{}"), (T - 1) * 1000).is_err());
    }

    #[test]
    fn any_of_several_v1_signatures_may_match_during_a_roll() {
        let v = testkit::vector("stripe-valid");
        let real = v.header("Stripe-Signature").replace("t=1767225600,", "");
        let value = format!("t=1767225600,v1={},{real},v0=00", "ab".repeat(32));
        let h = headers(&value);
        let got = stripe(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
        assert!(got.is_ok(), "{got:?}");
    }

    #[test]
    fn stripe_sign_then_verify_round_trips() {
        let p = stripe(vec![secret("k", SECRET)]);
        let now_ms = T * 1000 + 999;
        let input = SignInput {
            body: b"{\"id\":\"evt_1\"}",
            now_ms,
            delivery_id: "ignored",
        };
        let h = p.sign(&input).unwrap();
        assert!(h
            .get("stripe-signature")
            .unwrap()
            .starts_with("t=1767225600,v1="));
        assert!(p.verify(&request(&h, input.body), now_ms).is_ok());
    }
}
