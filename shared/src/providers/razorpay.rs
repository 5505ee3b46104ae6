//! Razorpay: `X-Razorpay-Signature: <hex>`, HMAC-SHA256 over the raw body keyed with the
//! **webhook secret** set in the dashboard (not the API key secret: payment-callback
//! signatures over `order_id|payment_id` are a different scheme). No timestamp is signed:
//! replay protection is the dedupe on `x-razorpay-event-id`.
//! Source: <https://razorpay.com/docs/webhooks/validate-test/>; razorpay-python
//! `Utility.verify_webhook_signature`, razorpay-node `validateWebhookSignature`.

use serde::Deserialize;
use serde_json::Value;

use super::crypto::{self, HmacAlgorithm, Keyring, SignatureEncoding};
use super::{
    canonical, fields, money, ExtractError, Extracted, Provider, ProviderConfigError, SignInput,
    Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

const HEADER: &str = "x-razorpay-signature";
const EVENT_ID: &str = "x-razorpay-event-id";

/// Razorpay takes no options; the empty table still refuses misspelt ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RazorpayOptions {}

#[derive(Debug)]
pub struct Razorpay {
    keys: Keyring,
}

impl Razorpay {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let RazorpayOptions {} = crypto::parse_options("razorpay", options)?;
        Ok(Self {
            keys: Keyring::new("razorpay", secrets)?,
        })
    }
}

fn canonical_type(event: &str) -> Option<&'static str> {
    use canonical::*;
    match event {
        // `payment.authorized` precedes capture and is auto-refunded if never captured, so
        // capture is Razorpay's "paid" signal (its docs recommend `payment.captured`).
        "payment.captured" => Some(PAYMENT_SUCCEEDED),
        "payment.failed" => Some(PAYMENT_FAILED),
        "refund.processed" => Some(PAYMENT_REFUNDED),
        "payment.dispute.created" => Some(PAYMENT_DISPUTED),
        "order.paid" => Some(ORDER_PAID),
        "subscription.updated" => Some(SUBSCRIPTION_UPDATED),
        "subscription.cancelled" => Some(SUBSCRIPTION_CANCELED),
        "payout.processed" => Some(PAYOUT_PAID),
        "payout.failed" | "payout.reversed" => Some(PAYOUT_FAILED),
        _ => None,
    }
}

/// `payload.<name>.entity`.
fn entity<'a>(payload: Option<&'a Value>, name: &str) -> Option<&'a Value> {
    payload?.get(name)?.get("entity")
}

#[async_trait::async_trait]
impl Provider for Razorpay {
    fn name(&self) -> &'static str {
        "razorpay"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let value = crypto::required_header(req.headers, HEADER)?;
        let sig = SignatureEncoding::Hex
            .decode(value)
            .ok_or_else(|| VerifyError::MalformedSignature(format!("{HEADER} is not hex")))?;
        let key_id = self.keys.first_match(now_ms, |key| {
            HmacAlgorithm::Sha256.verify(key, &[req.body], &sig)
        })?;
        Ok(Verified {
            scheme: "razorpay_hmac_sha256",
            key_id: Some(key_id),
        })
    }

    /// The id is `x-razorpay-event-id`. Without it (an old proxy that drops headers), the main
    /// entity's id and the event (`pay_…#payment.captured`) — stable across retries and
    /// unique per fact, unlike a body hash if Razorpay ever re-renders the body — else none.
    /// Money and the customer come from the event's main entity (`contains[0]`: the refund
    /// for `refund.*`, the dispute for `payment.dispute.*`), falling back to the payment.
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let body = crypto::json_object(req.body)
            .ok_or_else(|| ExtractError("razorpay event body is not a JSON object".into()))?;
        let event = body
            .get("event")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| ExtractError("razorpay event has no string \"event\"".into()))?;
        let payload = body.get("payload");
        let payment = entity(payload, "payment");
        let main = body
            .get("contains")
            .and_then(|c| c.get(0))
            .and_then(Value::as_str)
            .and_then(|name| entity(payload, name))
            .or(payment);
        // The `x-razorpay-event-id` header is not signed: it names the event, and the signed
        // body keys it.
        let (event_id, unsigned_id) = match crypto::required_header(req.headers, EVENT_ID) {
            Ok(id) => (None, Some(id.to_string())),
            Err(_) => (
                fields::text(main.and_then(|v| v.get("id"))).map(|id| format!("{id}#{event}")),
                None,
            ),
        };
        let money_from = [main, payment]
            .into_iter()
            .flatten()
            .find(|e| e.get("amount").and_then(Value::as_i64).is_some());
        let currency =
            fields::text(money_from.and_then(|v| v.get("currency"))).and_then(money::currency);
        let who = [payment, main]
            .into_iter()
            .find_map(|e| fields::text(e.and_then(|v| v.get("customer_id"))))
            .or_else(|| {
                [payment, main]
                    .into_iter()
                    .find_map(|e| fields::text(e.and_then(|v| v.get("email"))))
            });
        Ok(vec![Extracted {
            event_id,
            unsigned_id,
            event_type: Some(event.to_string()),
            canonical_type: canonical_type(event),
            occurred_at_ms: time::unix_seconds_ms(body.get("created_at")),
            entity: who.map(str::to_string),
            object_id: fields::text(main.and_then(|v| v.get("id"))).map(str::to_string),
            amount: currency
                .as_ref()
                .and(money_from.and_then(|e| e.get("amount")))
                .and_then(money::minor_from_json),
            currency,
            part: None,
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let tag: String = id
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(char::from)
            .take(14)
            .collect();
        serde_json::json!({
            "entity": "event", "account_id": "acc_BFQ7uQEaa7j2z7", "event": "payment.captured",
            "contains": ["payment"], "created_at": now_ms / 1000,
            "payload": {"payment": {"entity": {
                "id": format!("pay_{tag}"), "entity": "payment", "amount": 50000, "currency": "INR",
                "status": "captured", "method": "upi", "email": "gaurav.kumar@example.com",
                "contact": "+919876543210", "customer_id": "cust_HZ4EdVc3R3uxxx"
            }}}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let sig = HmacAlgorithm::Sha256.compute(key, &[input.body])?;
        Ok(Headers::from_iter([
            (HEADER, hex::encode(sig)),
            (EVENT_ID, input.delivery_id.to_string()),
        ]))
    }
}

/// How the provider suite (`suite.rs`) signs for Razorpay: `X-Razorpay-Signature: <hex>`,
/// HMAC-SHA256 of the body keyed with the webhook secret.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let body = br#"{"entity":"event","event":"payment.captured","contains":["payment"],"created_at":1767225600,"payload":{"payment":{"entity":{"id":"pay_1","amount":100,"currency":"INR"}}}}"#;
        let tag = key
            .expect("razorpay is keyed")
            .hmac(HmacAlgorithm::Sha256, &[body]);
        let headers = Headers::from_iter([
            (HEADER, hex::encode(tag)),
            (EVENT_ID, "evt_Example000001".into()),
        ]);
        Signed::post(headers, *body)
    }
    Case {
        garbled: |s| {
            ["not-hex", "sha256=00", "0"]
                .map(|v| s.with_header(HEADER, v))
                .to_vec()
        },
        ..Case::new(
            "razorpay",
            "razorpay_hmac_sha256",
            || TestKey::pair("rzp_webhook_s3cr3t", "rzp_test_apikeysecret"),
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
    const SECRET: &str = "rzp_webhook_s3cr3t";

    fn razorpay(secrets: Vec<Secret>) -> Razorpay {
        Razorpay::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    #[test]
    fn every_razorpay_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["razorpay"]) {
            let h = v.headers();
            let got =
                razorpay(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn razorpay_vector_extracts_header_id_type_money_and_time() {
        let v = testkit::vector("razorpay-valid");
        let h = v.headers();
        let got = razorpay(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: None,
                unsigned_id: Some("evt_Example000001".into()),
                event_type: Some("payment.captured".into()),
                canonical_type: Some(canonical::PAYMENT_SUCCEEDED),
                occurred_at_ms: Some(NOW_MS),
                entity: None,
                object_id: Some("pay_DESlfW9H8K9uqM".into()),
                amount: Some(100),
                currency: Some("INR".into()),
                part: None,
            }]
        );
    }

    #[test]
    fn without_the_event_id_header_the_entity_id_and_event_are_the_key() {
        let v = testkit::vector("razorpay-valid");
        let got = razorpay(vec![v.secret()])
            .extract(&request(&Headers::new(), v.body.as_bytes()))
            .unwrap()
            .remove(0);
        assert_eq!(
            got.event_id.as_deref(),
            Some("pay_DESlfW9H8K9uqM#payment.captured")
        );
        let bare = br#"{"event":"payment.captured","payload":{}}"#;
        let got = razorpay(vec![v.secret()])
            .extract(&request(&Headers::new(), bare))
            .unwrap();
        assert_eq!(got[0].event_id, None);
    }

    #[test]
    fn refund_money_is_the_refund_and_the_customer_comes_from_the_payment() {
        let body = br#"{"entity":"event","event":"refund.processed","contains":["refund","payment"],"payload":{"refund":{"entity":{"id":"rfnd_1","amount":2500,"currency":"INR","payment_id":"pay_1"}},"payment":{"entity":{"id":"pay_1","amount":10000,"currency":"INR","email":"a@example.com"}}},"created_at":1767225600}"#;
        let got = razorpay(vec![secret("k", SECRET)])
            .extract(&request(&Headers::new(), body))
            .unwrap()
            .remove(0);
        assert_eq!(got.event_id.as_deref(), Some("rfnd_1#refund.processed"));
        assert_eq!(got.canonical_type, Some(canonical::PAYMENT_REFUNDED));
        assert_eq!(
            (got.amount, got.currency.as_deref()),
            (Some(2500), Some("INR"))
        );
        assert_eq!(got.entity.as_deref(), Some("a@example.com"));
        let with_customer = String::from_utf8_lossy(body).replace(
            r#""email":"a@example.com""#,
            r#""email":"a@example.com","customer_id":"cust_1""#,
        );
        let got = razorpay(vec![secret("k", SECRET)])
            .extract(&request(&Headers::new(), with_customer.as_bytes()))
            .unwrap()
            .remove(0);
        assert_eq!(got.entity.as_deref(), Some("cust_1"));
    }

    #[test]
    fn razorpay_events_map_to_canonical_types() {
        use canonical::*;
        for (event, expected) in [
            ("payment.captured", Some(PAYMENT_SUCCEEDED)),
            ("payment.authorized", None),
            ("payment.failed", Some(PAYMENT_FAILED)),
            ("refund.processed", Some(PAYMENT_REFUNDED)),
            ("payment.dispute.created", Some(PAYMENT_DISPUTED)),
            ("order.paid", Some(ORDER_PAID)),
            ("subscription.cancelled", Some(SUBSCRIPTION_CANCELED)),
            ("payout.processed", Some(PAYOUT_PAID)),
            ("invoice.paid", None),
        ] {
            assert_eq!(canonical_type(event), expected, "{event}");
        }
    }

    #[test]
    fn razorpay_body_without_event_is_an_extract_error() {
        let p = razorpay(vec![secret("k", SECRET)]);
        for body in [&b"x"[..], b"[]", br#"{"event":1}"#, br#"{"payload":{}}"#] {
            assert!(
                p.extract(&request(&Headers::new(), body)).is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn razorpay_sample_sign_then_verify_round_trips() {
        let p = razorpay(vec![secret("k", SECRET)]);
        let body = p.sample_body("0d5c2f8e-1b7a-4a8c", NOW_MS);
        let input = SignInput {
            body: &body,
            now_ms: NOW_MS,
            delivery_id: "evt_sample1",
        };
        let h = p.sign(&input).unwrap();
        let req = request(&h, &body);
        assert!(p.verify(&req, NOW_MS).is_ok());
        let e = p.extract(&req).unwrap().remove(0);
        assert_eq!(e.unsigned_id.as_deref(), Some("evt_sample1"));
        assert_eq!(e.entity.as_deref(), Some("cust_HZ4EdVc3R3uxxx"));
        assert_eq!((e.amount, e.occurred_at_ms), (Some(50000), Some(NOW_MS)));
    }
}
