//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=<hex>]`, HMAC-SHA256 over
//! `"{t}.{body}"`, keyed with the whole `whsec_…` string as UTF-8 (not base64-decoded).
//! Source: stripe-python `stripe/_webhook.py`, stripe-node `src/Webhooks.ts`.

use serde::Deserialize;

use super::crypto::{self, HmacAlgorithm, Keyring, TimeUnit, Tolerance};
use super::{
    ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;

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
    Ok(SignatureHeader { t, v1 })
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
            header
                .v1
                .iter()
                .any(|sig| HmacAlgorithm::Sha256.verify(key, &parts, sig))
        })?;
        // Freshness after authenticity: a stale but genuine request is told apart from a forgery.
        self.tolerance.check(t, TimeUnit::Seconds, now_ms)?;
        Ok(Verified {
            scheme: "stripe_v1",
            key_id: Some(key_id),
        })
    }

    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let event = crypto::json_object(req.body)
            .ok_or_else(|| ExtractError("stripe event body is not a JSON object".into()))?;
        let id = event
            .get("id")
            .and_then(|v| v.as_str())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ExtractError("stripe event has no string \"id\"".into()))?;
        Ok(vec![Extracted {
            event_id: Some(id.to_string()),
            event_type: event
                .get("type")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            occurred_at_ms: event
                .get("created")
                .and_then(serde_json::Value::as_i64)
                .and_then(|s| TimeUnit::Seconds.to_ms(s)),
            ..Default::default()
        }])
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
        let t = TimeUnit::Seconds.from_ms(input.now_ms).to_string();
        let sig = HmacAlgorithm::Sha256.compute(key, &[t.as_bytes(), b".", input.body])?;
        Ok(Headers::from_iter([(
            HEADER,
            format!("t={t},v1={}", hex::encode(sig)),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, expiring_secret, request, secret};

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
        assert_eq!(got.event_id.as_deref(), Some("evt_test_webhook"));
        assert_eq!(got.event_type.as_deref(), Some("payment_intent.succeeded"));
        assert_eq!(got.occurred_at_ms, None);
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
    fn tampered_stripe_body_is_refused() {
        let v = testkit::vector("stripe-valid");
        let h = v.headers();
        let body = v.body.replace("2000", "2001");
        let got = stripe(vec![v.secret()]).verify(&request(&h, body.as_bytes()), v.now_ms());
        assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }

    #[test]
    fn wrong_stripe_secret_is_refused() {
        let v = testkit::vector("stripe-valid");
        let h = v.headers();
        let got = stripe(vec![secret("other", "whsec_other")])
            .verify(&request(&h, v.body.as_bytes()), v.now_ms());
        assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }

    #[test]
    fn missing_stripe_signature_is_refused() {
        let h = Headers::new();
        let got = stripe(vec![secret("k", SECRET)]).verify(&request(&h, b"{}"), T * 1000);
        assert_eq!(
            got,
            Err(VerifyError::MissingSignature("stripe-signature".into()))
        );
    }

    #[test]
    fn malformed_stripe_signatures_are_refused() {
        let p = stripe(vec![secret("k", SECRET)]);
        for value in [
            "garbage",
            "v1=abcd",
            "t=1767225600",
            "t=1767225600,v0=abcd",
            "t=1767225600,v1=zz",
            "t=abc,v1=abcd",
            "t=1767225600,t=1767225601,v1=abcd",
            "t=,v1=",
            "=,=,,,",
        ] {
            let h = headers(value);
            let got = p.verify(&request(&h, b"{}"), T * 1000);
            assert!(
                matches!(got, Err(VerifyError::MalformedSignature(_))),
                "{value}: {got:?}"
            );
        }
    }

    #[test]
    fn stale_stripe_timestamp_is_refused() {
        let h = headers(&signed(SECRET, T, b"{}"));
        let p = stripe(vec![secret("k", SECRET)]);
        assert!(p.verify(&request(&h, b"{}"), (T + 300) * 1000).is_ok());
        assert_eq!(
            p.verify(&request(&h, b"{}"), (T + 301) * 1000),
            Err(VerifyError::TimestampTooOld {
                age_s: 301,
                tolerance_s: 300
            })
        );
    }

    #[test]
    fn far_future_stripe_timestamp_is_refused() {
        let h = headers(&signed(SECRET, T, b"{}"));
        let p = stripe(vec![secret("k", SECRET)]);
        assert!(p.verify(&request(&h, b"{}"), (T - 300) * 1000).is_ok());
        assert_eq!(
            p.verify(&request(&h, b"{}"), (T - 301) * 1000),
            Err(VerifyError::TimestampInFuture {
                ahead_s: 301,
                tolerance_s: 300
            })
        );
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
    fn rotated_stripe_secret_reports_the_key_that_matched() {
        let h = headers(&signed("whsec_new", T, b"{}"));
        let p = stripe(vec![secret("old", SECRET), secret("new", "whsec_new")]);
        let got = p.verify(&request(&h, b"{}"), T * 1000).unwrap();
        assert_eq!(got.key_id.as_deref(), Some("new"));
        assert_eq!(got.scheme, "stripe_v1");
    }

    #[test]
    fn stripe_secret_past_not_after_is_not_accepted() {
        let h = headers(&signed(SECRET, T, b"{}"));
        let p = stripe(vec![
            expiring_secret("old", SECRET, T * 1000 - 1),
            secret("new", "whsec_new"),
        ]);
        assert_eq!(
            p.verify(&request(&h, b"{}"), T * 1000),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
        let only_expired = stripe(vec![expiring_secret("old", SECRET, T * 1000 - 1)]);
        assert_eq!(
            only_expired.verify(&request(&h, b"{}"), T * 1000),
            Err(VerifyError::NoLiveKey)
        );
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

    #[test]
    fn stripe_config_refuses_unknown_options_and_no_secrets() {
        let err = Stripe::from_config(
            &serde_json::json!({"tolerance": 5}),
            vec![secret("k", SECRET)],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `tolerance`"), "{err}");
        assert!(Stripe::from_config(&serde_json::Value::Null, vec![]).is_err());
    }

    #[test]
    fn stripe_debug_output_never_shows_the_secret() {
        let p = stripe(vec![secret("k", SECRET)]);
        assert!(!format!("{p:?}").contains("whsec_"));
    }
}
