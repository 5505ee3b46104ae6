//! Shopify: `X-Shopify-Hmac-Sha256: <base64>`, HMAC-SHA256 over the raw body keyed with the
//! app's client secret (UTF-8). The newer "Events" delivery sends the same headers without the
//! `X-` prefix (`shopify-hmac-sha256`, `shopify-topic`, `shopify-event-id`, …); like the
//! official library we take whichever HMAC header is present. No timestamp is signed
//! (`Triggered-At` is informational), so replay protection is the dedupe on the event id.
//! Source: `Shopify/shopify-app-js` `packages/apps/shopify-api/lib/webhooks/validate.ts`,
//! `lib/utils/hmac-validator.ts`; shopify.dev "Ignore duplicate webhooks".

use serde::Deserialize;

use super::crypto::{self, HmacAlgorithm, Keyring, SignatureEncoding};
use super::{
    canonical, fields, money, ExtractError, Extracted, Provider, ProviderConfigError, SignInput,
    Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

/// One family of header names: the classic `X-Shopify-*` webhooks or the unprefixed Events.
struct Names {
    hmac: &'static str,
    topic: &'static str,
    event_id: &'static str,
    webhook_id: &'static str,
    triggered_at: &'static str,
    shop_domain: &'static str,
}

const WEBHOOK_NAMES: Names = Names {
    hmac: "x-shopify-hmac-sha256",
    topic: "x-shopify-topic",
    event_id: "x-shopify-event-id",
    webhook_id: "x-shopify-webhook-id",
    triggered_at: "x-shopify-triggered-at",
    shop_domain: "x-shopify-shop-domain",
};

const EVENTS_NAMES: Names = Names {
    hmac: "shopify-hmac-sha256",
    topic: "shopify-topic",
    event_id: "shopify-event-id",
    webhook_id: "shopify-webhook-id",
    triggered_at: "shopify-triggered-at",
    shop_domain: "shopify-shop-domain",
};

/// The family whose HMAC header is present; the classic one when both or neither are.
fn names_in(headers: &Headers) -> &'static Names {
    fields::header_family(
        headers,
        &[
            (WEBHOOK_NAMES.hmac, &WEBHOOK_NAMES),
            (EVENTS_NAMES.hmac, &EVENTS_NAMES),
        ],
        &WEBHOOK_NAMES,
    )
}

/// Shopify topics with a canonical meaning. Anything else keeps only its own topic.
fn canonical_type(topic: &str) -> Option<&'static str> {
    Some(match topic {
        "orders/create" => canonical::ORDER_CREATED,
        "orders/updated" | "orders/edited" => canonical::ORDER_UPDATED,
        "orders/paid" => canonical::ORDER_PAID,
        "orders/cancelled" => canonical::ORDER_CANCELED,
        "refunds/create" => canonical::PAYMENT_REFUNDED,
        "disputes/create" => canonical::PAYMENT_DISPUTED,
        "customers/create" => canonical::ACCOUNT_REGISTERED,
        "customers/update" => canonical::ACCOUNT_UPDATED,
        "subscription_contracts/create" => canonical::SUBSCRIPTION_CREATED,
        "subscription_contracts/update" => canonical::SUBSCRIPTION_UPDATED,
        "subscription_contracts/cancel" => canonical::SUBSCRIPTION_CANCELED,
        _ => return None,
    })
}

/// Shopify takes no options; the empty table still refuses misspelt ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShopifyOptions {}

#[derive(Debug)]
pub struct Shopify {
    keys: Keyring,
}

impl Shopify {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let ShopifyOptions {} = crypto::parse_options("shopify", options)?;
        Ok(Self {
            keys: Keyring::new("shopify", secrets)?,
        })
    }
}

#[async_trait::async_trait]
impl Provider for Shopify {
    fn name(&self) -> &'static str {
        "shopify"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let names = names_in(req.headers);
        let value = crypto::required_header(req.headers, names.hmac)?;
        let sig = SignatureEncoding::Base64.decode(value).ok_or_else(|| {
            VerifyError::MalformedSignature(format!("{} is not base64", names.hmac))
        })?;
        // When the client secret is rotated Shopify may sign with either for up to an hour.
        let key_id = self.keys.first_match(now_ms, |key| {
            HmacAlgorithm::Sha256.verify(key, &[req.body], &sig)
        })?;
        Ok(Verified {
            scheme: "shopify_hmac_sha256",
            key_id: Some(key_id),
        })
    }

    /// Dedupe key: `X-Shopify-Event-Id` (what Shopify's "Ignore duplicate webhooks" guide
    /// names: the same value across retries and across several subscriptions to one topic),
    /// qualified by the topic so two topics fired by one shop action can never collapse into
    /// one; `X-Shopify-Webhook-Id` (one per delivery, stable across retries) when the event id
    /// is absent (older API versions).
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let names = names_in(req.headers);
        let topic = fields::header(req.headers, names.topic);
        let event_id = match (fields::header(req.headers, names.event_id), topic) {
            (Some(event), Some(topic)) => format!("{event}#{topic}"),
            (Some(event), None) => event.to_string(),
            (None, _) => fields::header(req.headers, names.webhook_id)
                .ok_or_else(|| {
                    ExtractError(format!(
                        "shopify delivery has neither {} nor {}",
                        names.event_id, names.webhook_id
                    ))
                })?
                .to_string(),
        };
        let body = crypto::json_object(req.body)
            .ok_or_else(|| ExtractError("shopify webhook body is not a JSON object".into()))?;
        // The customer when the payload names one (orders, customers/*), else the shop.
        let customer = match topic {
            Some(t) if t.starts_with("customers/") => body.get("id").and_then(fields::id_text),
            _ => body
                .get("customer")
                .and_then(|c| c.get("id"))
                .and_then(fields::id_text),
        };
        let entity =
            customer.or_else(|| fields::header(req.headers, names.shop_domain).map(str::to_string));
        let currency = body
            .get("currency")
            .and_then(|c| c.as_str())
            .and_then(money::currency);
        let amount = match (body.get("total_price").and_then(|p| p.as_str()), &currency) {
            (Some(price), Some(cur)) => money::to_minor(price, cur),
            _ => None,
        };
        // Shopify signs the body only: its id headers name the event but cannot key it.
        Ok(vec![Extracted {
            event_id: None,
            unsigned_id: Some(event_id),
            event_type: topic.map(str::to_string),
            canonical_type: topic.and_then(canonical_type),
            occurred_at_ms: fields::header(req.headers, names.triggered_at)
                .and_then(time::rfc3339_ms_utc_if_unzoned),
            entity,
            object_id: body.get("id").and_then(fields::id_text),
            currency: amount.and(currency),
            amount,
            part: None,
        }])
    }

    fn sample_body(&self, id: &str, _now_ms: i64) -> Vec<u8> {
        let order_id = 820_982_911_946_154_508_u64;
        serde_json::json!({
            "id": order_id, "admin_graphql_api_id": format!("gid://shopify/Order/{order_id}"),
            "name": format!("#{}", id.get(..8).unwrap_or(id)), "email": "jon@example.com",
            "total_price": "403.00", "currency": "USD", "financial_status": "paid",
            "customer": {"id": 115_310_627_314_723_954_u64, "email": "jon@example.com"},
            "note": id
        })
        .to_string()
        .into_bytes()
    }

    /// `X-Shopify-Webhook-Id` is the delivery id; the topic and shop match [`Self::sample_body`].
    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let sig = HmacAlgorithm::Sha256.compute(key, &[input.body])?;
        Ok(Headers::from_iter([
            (WEBHOOK_NAMES.hmac, SignatureEncoding::Base64.encode(&sig)),
            (WEBHOOK_NAMES.topic, "orders/create".to_string()),
            (
                WEBHOOK_NAMES.shop_domain,
                "example.myshopify.com".to_string(),
            ),
            (WEBHOOK_NAMES.webhook_id, input.delivery_id.to_string()),
            (
                WEBHOOK_NAMES.triggered_at,
                crate::time::format_rfc3339_ms(input.now_ms),
            ),
        ]))
    }
}

/// How the provider suite (`suite.rs`) signs for Shopify: `X-Shopify-Hmac-Sha256: <base64>`,
/// HMAC-SHA256 of the body, beside the topic and webhook id headers.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let body = br#"{"id":820982911946154508,"total_price":"403.00","currency":"USD","customer":{"id":115310627314723954}}"#;
        let tag = key
            .expect("shopify is keyed")
            .hmac(HmacAlgorithm::Sha256, &[body]);
        let headers = Headers::from_iter([
            (WEBHOOK_NAMES.hmac, SignatureEncoding::Base64.encode(&tag)),
            (WEBHOOK_NAMES.topic, "orders/create".into()),
            (
                WEBHOOK_NAMES.webhook_id,
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".into(),
            ),
        ]);
        Signed::post(headers, *body)
    }
    Case {
        garbled: |s| {
            ["***", "sha256=abc"]
                .map(|v| s.with_header(WEBHOOK_NAMES.hmac, v))
                .to_vec()
        },
        ..Case::new(
            "shopify",
            "shopify_hmac_sha256",
            || TestKey::pair("shpss_5e2Qv8Lt1Xz", "shpss_9Jc4Wm7Rb3N"),
            sign,
            Carrier::header(WEBHOOK_NAMES.hmac),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;
    const SECRET: &str = "shpss_0123456789abcdef0123456789abcdef";

    fn shopify(secrets: Vec<Secret>) -> Shopify {
        Shopify::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn hmac(secret: &str, body: &[u8]) -> String {
        let sig = HmacAlgorithm::Sha256
            .compute(secret.as_bytes(), &[body])
            .unwrap();
        SignatureEncoding::Base64.encode(&sig)
    }

    #[test]
    fn every_shopify_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["shopify"]) {
            let h = v.headers();
            let got = shopify(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn shopify_vector_extracts_topic_webhook_id_and_trigger_time() {
        let v = testkit::vector("shopify-valid");
        let h = v.headers();
        let got = shopify(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: None,
                unsigned_id: Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".into()),
                event_type: Some("orders/create".into()),
                canonical_type: Some(canonical::ORDER_CREATED),
                occurred_at_ms: Some(1_767_225_600_000),
                entity: Some("example.myshopify.com".into()),
                object_id: Some("820982911946154508".into()),
                // `total_price` without `currency` is not an amount.
                amount: None,
                currency: None,
                part: None,
            }]
        );
    }

    #[test]
    fn event_id_wins_over_webhook_id_and_is_qualified_by_topic() {
        let h = Headers::from_iter([
            ("X-Shopify-Topic", "orders/paid"),
            ("X-Shopify-Event-Id", "98880550-7158-44d4-b7cd-2c97c8a091b5"),
            ("X-Shopify-Webhook-Id", "b54557e4"),
        ]);
        let body =
            br#"{"id":1,"total_price":"10.50","currency":"eur","customer":{"id":207119551}}"#;
        let got = shopify(vec![secret("k", SECRET)])
            .extract(&request(&h, body))
            .unwrap()
            .remove(0);
        assert_eq!(
            got.unsigned_id.as_deref(),
            Some("98880550-7158-44d4-b7cd-2c97c8a091b5#orders/paid")
        );
        assert_eq!(got.event_id, None, "Shopify signs the body only");
        assert_eq!(got.canonical_type, Some(canonical::ORDER_PAID));
        assert_eq!(got.entity.as_deref(), Some("207119551"));
        assert_eq!(got.amount, Some(1050));
        assert_eq!(got.currency.as_deref(), Some("EUR"));
    }

    #[test]
    fn shopify_topics_map_onto_the_catalogue() {
        for (topic, expected) in [
            ("orders/create", Some(canonical::ORDER_CREATED)),
            ("orders/paid", Some(canonical::ORDER_PAID)),
            ("orders/cancelled", Some(canonical::ORDER_CANCELED)),
            ("orders/updated", Some(canonical::ORDER_UPDATED)),
            ("refunds/create", Some(canonical::PAYMENT_REFUNDED)),
            ("customers/create", Some(canonical::ACCOUNT_REGISTERED)),
            ("customers/update", Some(canonical::ACCOUNT_UPDATED)),
            ("products/update", None),
        ] {
            assert_eq!(canonical_type(topic), expected, "{topic}");
        }
    }

    #[test]
    fn customer_topics_take_the_body_id_as_entity() {
        let h = Headers::from_iter([
            ("X-Shopify-Topic", "customers/create"),
            ("X-Shopify-Webhook-Id", "w1"),
            ("X-Shopify-Shop-Domain", "example.myshopify.com"),
        ]);
        let got = shopify(vec![secret("k", SECRET)])
            .extract(&request(
                &h,
                br#"{"id":706405506930370084,"email":"bob@example.com"}"#,
            ))
            .unwrap()
            .remove(0);
        assert_eq!(got.entity.as_deref(), Some("706405506930370084"));
        assert_eq!(got.canonical_type, Some(canonical::ACCOUNT_REGISTERED));
    }

    #[test]
    fn unprefixed_events_headers_verify_and_extract() {
        let body = br#"{"id":1,"total_price":"1500","currency":"JPY"}"#;
        let sig = hmac(SECRET, body);
        let h = Headers::from_iter([
            ("shopify-hmac-sha256", sig.as_str()),
            ("shopify-topic", "orders/create"),
            ("shopify-event-id", "ev-1"),
            ("shopify-webhook-id", "wh-1"),
            ("shopify-triggered-at", "2026-01-01T00:00:00.877041743Z"),
        ]);
        let p = shopify(vec![secret("k", SECRET)]);
        assert!(p.verify(&request(&h, body), NOW_MS).is_ok());
        let got = p.extract(&request(&h, body)).unwrap().remove(0);
        assert_eq!(got.unsigned_id.as_deref(), Some("ev-1#orders/create"));
        assert_eq!(got.occurred_at_ms, Some(1_767_225_600_877));
        assert_eq!(got.amount, Some(1500));
    }

    #[test]
    fn shopify_delivery_without_ids_or_json_is_an_extract_error() {
        let p = shopify(vec![secret("k", SECRET)]);
        let no_ids = Headers::from_iter([("X-Shopify-Topic", "orders/create")]);
        assert!(p.extract(&request(&no_ids, b"{}")).is_err());
        let ids = Headers::from_iter([("X-Shopify-Webhook-Id", "w")]);
        assert!(p.extract(&request(&ids, b"[]")).is_err());
    }

    #[test]
    fn valid_base64_of_the_wrong_length_never_matches() {
        let p = shopify(vec![secret("k", SECRET)]);
        let h = Headers::from_iter([("X-Shopify-Hmac-Sha256", "AAAA")]);
        assert_eq!(
            p.verify(&request(&h, b"{}"), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn shopify_sign_then_verify_round_trips_with_the_sample_body() {
        let p = shopify(vec![secret("k", SECRET)]);
        let body = p.sample_body("abc123", NOW_MS);
        let input = SignInput {
            body: &body,
            now_ms: NOW_MS,
            delivery_id: "delivery-1",
        };
        let h = p.sign(&input).unwrap();
        let req = request(&h, &body);
        assert!(p.verify(&req, NOW_MS).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(got.unsigned_id.as_deref(), Some("delivery-1"));
        assert_eq!(got.canonical_type, Some(canonical::ORDER_CREATED));
        assert_eq!(got.amount, Some(40300));
        assert_eq!(got.entity.as_deref(), Some("115310627314723954"));
        assert_eq!(got.occurred_at_ms, Some(NOW_MS));
        assert_ne!(body, p.sample_body("other", NOW_MS));
    }
}
