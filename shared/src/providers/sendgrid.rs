//! SendGrid Event Webhook (signed): `X-Twilio-Email-Event-Webhook-Signature: <base64 DER>`,
//! ECDSA P-256 with SHA-256 over `X-Twilio-Email-Event-Webhook-Timestamp` followed by the raw
//! body, trailing `\r\n` included. The source's secrets are the verification keys from Mail
//! Settings → Signed Event Webhook (base64 DER SubjectPublicKeyInfo); several keys rotate by
//! id like any other secret. The body is a JSON array of events, one envelope each.
//! Source: sendgrid-python `sendgrid/helpers/eventwebhook/__init__.py`,
//! `@sendgrid/eventwebhook` 8.0.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::crypto::{self, KeyError, Keyring, P256Key, SignatureEncoding, TimeUnit, Tolerance};
use super::{
    canonical, fields, ExtractError, ExtractFailure, Extracted, Provider, ProviderConfigError,
    SignInput, Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

const SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
const TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SendGridOptions {
    /// The SDKs check no timestamp at all. Ten minutes of past skew leaves room for batched,
    /// slow deliveries while bounding how long a captured request replays. Whether a retry
    /// is re-signed with a fresh timestamp is *unverified here*: if retries arrive stale,
    /// widen this (SendGrid retries for up to 24 h) or turn `check_timestamp` off.
    tolerance_seconds: u32,
    future_tolerance_seconds: u32,
    /// `false` turns the freshness check off (what the SDKs do); the dedupe on
    /// `sg_event_id` still stops replays of events already seen.
    check_timestamp: bool,
}

impl Default for SendGridOptions {
    fn default() -> Self {
        Self {
            tolerance_seconds: 600,
            future_tolerance_seconds: 300,
            check_timestamp: true,
        }
    }
}

#[derive(Debug)]
pub struct SendGrid {
    keys: Keyring,
    /// Each configured key's normalised text (what the ring holds) and its parsed form, so a
    /// request never re-parses a key.
    parsed: Vec<(Vec<u8>, P256Key)>,
    tolerance: Option<Tolerance>,
}

/// The configured key text, trimmed, if it is a P-256 public key. The error never quotes it.
fn parse_key(raw: &[u8]) -> Result<(Vec<u8>, P256Key), KeyError> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| KeyError::Format("is not text (expected base64 DER SubjectPublicKeyInfo)"))?
        .trim();
    let key = P256Key::parse(text)?;
    Ok((text.as_bytes().to_vec(), key))
}

impl SendGrid {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: SendGridOptions = crypto::parse_options("sendgrid", options)?;
        let parsed = secrets
            .iter()
            .filter_map(|s| parse_key(s.expose()).ok())
            .collect();
        Ok(Self {
            // Refuses (naming the secret id) any key that `parse_key` did not take above.
            keys: Keyring::decoded("sendgrid", secrets, |raw| parse_key(raw).map(|(t, _)| t))?,
            parsed,
            tolerance: opts
                .check_timestamp
                .then(|| Tolerance::both(opts.tolerance_seconds, opts.future_tolerance_seconds)),
        })
    }

    fn key(&self, text: &[u8]) -> Option<&P256Key> {
        self.parsed
            .iter()
            .find(|(t, _)| t.as_slice() == text)
            .map(|(_, k)| k)
    }
}

fn canonical_for(event: &str) -> Option<&'static str> {
    match event {
        "processed" => Some(canonical::MESSAGE_SENT),
        "delivered" => Some(canonical::MESSAGE_DELIVERED),
        "open" => Some(canonical::MESSAGE_OPENED),
        "click" => Some(canonical::MESSAGE_CLICKED),
        "bounce" | "dropped" => Some(canonical::MESSAGE_BOUNCED),
        "spamreport" => Some(canonical::MESSAGE_COMPLAINED),
        "unsubscribe" | "group_unsubscribe" => Some(canonical::MESSAGE_UNSUBSCRIBED),
        // `deferred` is a temporary failure SendGrid keeps retrying; `group_resubscribe`
        // has no catalogue entry.
        _ => None,
    }
}

#[async_trait::async_trait]
impl Provider for SendGrid {
    fn name(&self) -> &'static str {
        "sendgrid"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let presented = crypto::required_header(req.headers, SIGNATURE)?;
        let ts_text = crypto::needed_header(req.headers, TIMESTAMP)?;
        let ts = crypto::parse_unix(ts_text)?;
        let sig = SignatureEncoding::Base64
            .decode(presented)
            .ok_or_else(|| VerifyError::MalformedSignature(format!("{SIGNATURE} is not base64")))?;
        let parts: [&[u8]; 2] = [ts_text.as_bytes(), req.body];
        let key_id = self.keys.first_match(now_ms, |text| {
            self.key(text).is_some_and(|key| key.verify(&parts, &sig))
        })?;
        if let Some(tolerance) = self.tolerance {
            tolerance.check(ts, TimeUnit::Seconds, now_ms)?;
        }
        Ok(Verified {
            scheme: "sendgrid_ecdsa_p256",
            key_id: Some(key_id),
        })
    }

    /// One event per array item, each with its exact bytes as `part` (so the parts together
    /// are no larger than the body); an empty array is no event. `sg_event_id` is the dedupe
    /// key (SendGrid's own id for each event). The items are counted before any is parsed.
    fn extract_at_most(
        &self,
        req: &InboundRequest<'_>,
        limit: usize,
    ) -> Result<Vec<Extracted>, ExtractFailure> {
        let items: Vec<&RawValue> = serde_json::from_slice(req.body)
            .map_err(|_| ExtractError("sendgrid body is not a JSON array of events".into()))?;
        super::at_most(items.len(), limit)?;
        let events: Result<Vec<Extracted>, ExtractError> = items
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                let event: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(raw.get()).map_err(|_| {
                        ExtractError(format!("sendgrid event {i} is not a JSON object"))
                    })?;
                let kind = fields::text(event.get("event"));
                Ok(Extracted {
                    event_id: fields::text(event.get("sg_event_id")).map(str::to_string),
                    event_type: kind.map(str::to_string),
                    canonical_type: kind.and_then(canonical_for),
                    occurred_at_ms: time::unix_seconds_ms(event.get("timestamp")),
                    entity: fields::text(event.get("email")).map(str::to_string),
                    part: Some(raw.get().as_bytes().to_vec()),
                    ..Default::default()
                })
            })
            .collect();
        Ok(events?)
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let now_s = now_ms / 1000;
        let events = serde_json::json!([
            {"email": "alice@example.com", "event": "delivered", "sg_event_id": format!("{id}-0"),
             "sg_message_id": format!("{id}.filter0001"), "smtp-id": format!("<{id}@example.com>"),
             "timestamp": now_s, "response": "250 OK"},
            {"email": "alice@example.com", "event": "open", "sg_event_id": format!("{id}-1"),
             "sg_message_id": format!("{id}.filter0001"), "timestamp": now_s, "useragent": "Mozilla/5.0"}
        ]);
        // SendGrid ends the body with CRLF, and signs it.
        let mut body = events.to_string().into_bytes();
        body.extend_from_slice(b"\r\n");
        body
    }

    fn sign(&self, _input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        Err(ProviderConfigError(
            "sendgrid signs with a private key the receiver does not hold (the source's \
             secrets are SendGrid's public verification keys)"
                .into(),
        ))
    }
}

/// How the provider suite (`suite.rs`) signs for SendGrid: ECDSA P-256 over
/// `"{timestamp}{body}"`, DER then base64 in `X-Twilio-Email-Event-Webhook-Signature`, with
/// the account's private key; the source holds its public key (base64 DER SPKI).
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Freshness, Signed, TestKey};
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::EncodePublicKey;
    fn key(last: u8) -> TestKey {
        let mut scalar = [0x11u8; 32];
        scalar[31] = last;
        let private = SigningKey::from_slice(&scalar).expect("a valid scalar");
        let der = private
            .verifying_key()
            .to_public_key_der()
            .expect("encodes");
        TestKey {
            configured: SignatureEncoding::Base64.encode(der.as_bytes()),
            signing: scalar.to_vec(),
        }
    }
    fn sign(key: Option<&TestKey>, now_ms: i64) -> Signed {
        let body = b"[{\"email\":\"a@example.com\",\"event\":\"delivered\",\"sg_event_id\":\"e1\",\"timestamp\":1767225590},{\"email\":\"a@example.com\",\"event\":\"open\",\"sg_event_id\":\"e2\",\"timestamp\":1767225595}]\r\n";
        let private =
            SigningKey::from_slice(&key.expect("sendgrid is keyed").signing).expect("a scalar");
        let ts = now_ms.div_euclid(1000).to_string();
        let sig: p256::ecdsa::Signature = private.sign(&crypto::concat(&[ts.as_bytes(), body]));
        let headers = Headers::from_iter([
            (
                SIGNATURE,
                SignatureEncoding::Base64.encode(sig.to_der().as_bytes()),
            ),
            (TIMESTAMP, ts),
        ]);
        Signed::post(headers, *body)
    }
    Case {
        freshness: Some(Freshness {
            past_s: 600,
            future_s: 300,
        }),
        garbled: |s| {
            vec![
                s.with_header(SIGNATURE, "***"),
                s.with_header(TIMESTAMP, "soon"),
                s.with_header(TIMESTAMP, "-1"),
            ]
        },
        signs: false,
        ..Case::new(
            "sendgrid",
            "sendgrid_ecdsa_p256",
            || [key(1), key(2)],
            sign,
            Carrier::Headers {
                signature: SIGNATURE,
                needed: &[TIMESTAMP],
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret, Vector};
    use p256::pkcs8::EncodePublicKey;

    fn sendgrid(secrets: Vec<Secret>) -> SendGrid {
        SendGrid::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn vector_key(v: &Vector) -> Secret {
        secret(
            &format!("{}-key", v.id),
            v.public_key
                .as_deref()
                .expect("sendgrid vector has a public key"),
        )
    }

    /// The vectors carry `now: null` (the SDKs check no time); their clock is the signed
    /// timestamp, so the freshness check stays on.
    fn vector_now_ms(v: &Vector) -> i64 {
        v.header("X-Twilio-Email-Event-Webhook-Timestamp")
            .parse::<i64>()
            .unwrap()
            * 1000
    }

    /// A throw-away key pair (fixed scalar) for negatives the quoted vector cannot give.
    struct TestKey {
        signing: p256::ecdsa::SigningKey,
    }

    impl TestKey {
        fn new(seed: u8) -> Self {
            let mut bytes = [0x11u8; 32];
            bytes[31] = seed;
            Self {
                signing: p256::ecdsa::SigningKey::from_slice(&bytes).unwrap(),
            }
        }

        fn public_b64(&self) -> String {
            let der = self.signing.verifying_key().to_public_key_der().unwrap();
            SignatureEncoding::Base64.encode(der.as_bytes())
        }
    }

    const T: i64 = 1_767_225_600;
    const BODY: &[u8] = b"[{\"email\":\"a@example.com\",\"event\":\"delivered\",\"sg_event_id\":\"e1\",\"timestamp\":1767225590}]\r\n";

    #[test]
    fn every_sendgrid_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["sendgrid"]) {
            let h = v.headers();
            let got = sendgrid(vec![vector_key(&v)])
                .verify(&request(&h, v.body.as_bytes()), vector_now_ms(&v));
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            } else {
                assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
            }
        }
    }

    #[test]
    fn sendgrid_vector_splits_into_its_one_event() {
        let v = testkit::vector("sendgrid-sdk-test");
        let h = v.headers();
        let got = sendgrid(vec![vector_key(&v)])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(got.len(), 1);
        let e = &got[0];
        assert_eq!(
            e.event_id.as_deref(),
            Some("ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA")
        );
        assert_eq!(e.event_type.as_deref(), Some("dropped"));
        assert_eq!(e.canonical_type, Some(canonical::MESSAGE_BOUNCED));
        assert_eq!(e.entity.as_deref(), Some("hello@world.com"));
        assert_eq!(e.occurred_at_ms, Some(1_600_112_492_000));
        let part = e.part.as_deref().unwrap();
        assert!(part.starts_with(b"{\"email\"") && part.ends_with(b"1600112492}"));
        assert!(v.body.as_bytes().windows(part.len()).any(|w| w == part));
    }

    #[test]
    fn a_batch_becomes_one_event_per_item_with_byte_exact_parts() {
        let body = b"[ {\"event\":\"open\",\"sg_event_id\":\"a\",\"email\":\"x@y\"},\n{\"event\" : \"click\", \"sg_event_id\":\"b\",\"url\":\"https://e/\\u00e9\"},{\"event\":\"deferred\"} ]\r\n";
        let got = sendgrid(vec![secret("k", &TestKey::new(1).public_b64())])
            .extract(&request(&Headers::new(), body))
            .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0].part.as_deref(),
            Some(&b"{\"event\":\"open\",\"sg_event_id\":\"a\",\"email\":\"x@y\"}"[..])
        );
        assert_eq!(
            got[1].part.as_deref(),
            Some(
                &b"{\"event\" : \"click\", \"sg_event_id\":\"b\",\"url\":\"https://e/\\u00e9\"}"[..]
            )
        );
        assert_eq!(got[0].canonical_type, Some(canonical::MESSAGE_OPENED));
        assert_eq!(got[1].canonical_type, Some(canonical::MESSAGE_CLICKED));
        assert_eq!(got[2].canonical_type, None);
        assert_eq!(got[2].event_id, None);
    }

    #[test]
    fn sendgrid_event_names_map_to_the_catalogue() {
        for (event, expected) in [
            ("processed", Some(canonical::MESSAGE_SENT)),
            ("delivered", Some(canonical::MESSAGE_DELIVERED)),
            ("bounce", Some(canonical::MESSAGE_BOUNCED)),
            ("spamreport", Some(canonical::MESSAGE_COMPLAINED)),
            ("unsubscribe", Some(canonical::MESSAGE_UNSUBSCRIBED)),
            ("group_unsubscribe", Some(canonical::MESSAGE_UNSUBSCRIBED)),
            ("deferred", None),
        ] {
            assert_eq!(canonical_for(event), expected, "{event}");
        }
    }

    #[test]
    fn empty_sendgrid_batch_is_no_event_and_non_arrays_are_refused() {
        let p = sendgrid(vec![secret("k", &TestKey::new(1).public_b64())]);
        let h = Headers::new();
        assert_eq!(p.extract(&request(&h, b"[]\r\n")).unwrap(), vec![]);
        for body in [&b"{}"[..], b"nope", b"[1]", b"[{\"event\":\"open\"}"] {
            assert!(p.extract(&request(&h, body)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn sendgrid_freshness_check_can_be_turned_off_like_the_sdks() {
        let v = testkit::vector("sendgrid-sdk-test");
        let h = v.headers();
        let p = SendGrid::from_config(
            &serde_json::json!({"check_timestamp": false}),
            vec![vector_key(&v)],
        )
        .unwrap();
        assert!(p
            .verify(&request(&h, v.body.as_bytes()), testkit::DEFAULT_NOW_MS)
            .is_ok());
        assert!(matches!(
            sendgrid(vec![vector_key(&v)])
                .verify(&request(&h, v.body.as_bytes()), testkit::DEFAULT_NOW_MS),
            Err(VerifyError::TimestampTooOld { .. })
        ));
    }

    #[test]
    fn base64_that_is_not_a_der_signature_never_matches() {
        let p = sendgrid(vec![secret("k", &TestKey::new(1).public_b64())]);
        let h = Headers::from_iter([(SIGNATURE, "AAAA"), (TIMESTAMP, "1767225600")]);
        assert_eq!(
            p.verify(&request(&h, BODY), T * 1000),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn sendgrid_cannot_sign_and_its_sample_ends_with_crlf() {
        let p = sendgrid(vec![secret("k", &TestKey::new(1).public_b64())]);
        let body = p.sample_body("abc", T * 1000);
        assert!(body.ends_with(b"]\r\n"));
        assert_eq!(
            p.extract(&request(&Headers::new(), &body)).unwrap().len(),
            2
        );
        let err = p
            .sign(&SignInput {
                body: &body,
                now_ms: T * 1000,
                delivery_id: "d",
            })
            .unwrap_err();
        assert!(err.0.contains("private key"), "{err}");
    }

    #[test]
    fn sendgrid_items_are_counted_before_any_is_parsed() {
        let p = sendgrid(vec![secret("k", &TestKey::new(1).public_b64())]);
        let h = Headers::new();
        let body = br#"[{"sg_event_id":"a"},{"sg_event_id":"b"},{"sg_event_id":"c"}]"#;
        let got = p.extract_at_most(&request(&h, body), 3).unwrap();
        // Each part is its own item's bytes: together no larger than the body.
        assert_eq!(got[1].part.as_deref(), Some(&br#"{"sg_event_id":"b"}"#[..]));
        assert_eq!(
            p.extract_at_most(&request(&h, body), 2),
            Err(ExtractFailure::TooManyEvents { count: 3, limit: 2 })
        );
        // Refused by count before the item that is no event would be looked at.
        let worse = br#"[{"sg_event_id":"a"},1,2]"#;
        assert_eq!(
            p.extract_at_most(&request(&h, worse), 2),
            Err(ExtractFailure::TooManyEvents { count: 3, limit: 2 })
        );
        assert!(matches!(
            p.extract_at_most(&request(&h, worse), 3),
            Err(ExtractFailure::Malformed(_))
        ));
    }

    #[test]
    fn sendgrid_keys_that_are_not_p256_public_keys_are_config_errors() {
        let err = SendGrid::from_config(&serde_json::Value::Null, vec![secret("vk", "not-a-key")])
            .unwrap_err();
        assert!(err.0.contains("\"vk\""), "{err}");
        assert!(!err.0.contains("not-a-key"), "{err}");
        let err = SendGrid::from_config(
            &serde_json::json!({"tolerance": 1}),
            vec![secret("k", &TestKey::new(1).public_b64())],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `tolerance`"), "{err}");
        assert!(SendGrid::from_config(&serde_json::Value::Null, vec![]).is_err());
    }
}
