//! Zoom: `x-zm-signature: v0=<hex>` and `x-zm-request-timestamp: <unix>`, HMAC-SHA256 over
//! `"v0:{timestamp}:{raw body}"` keyed with the app's Webhook Secret Token (UTF-8).
//! The official `@zoom/rivet` SDK hashes `JSON.stringify(JSON.parse(body))`, compares with
//! `===` and checks no timestamp: we hash the raw bytes, in constant time, within 300 s.
//! `endpoint.url_validation` (signed like any event) is answered with
//! `{"plainToken": p, "encryptedToken": hex(HMAC-SHA256(secret, p))}` using the key that
//! verified the request.
//! Source: developers.zoom.us/docs/api/webhooks/#verify-webhook-events.

use serde::Deserialize;
use serde_json::Value;

use super::crypto::{self, HmacAlgorithm, Keyring, SignatureEncoding, TimeUnit, Tolerance};
use super::{
    canonical, fields, ExtractError, Extracted, HandshakeReply, Provider, ProviderConfigError,
    SignInput, Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;

const SIGNATURE: &str = "x-zm-signature";
const TIMESTAMP: &str = "x-zm-request-timestamp";
const URL_VALIDATION: &str = "endpoint.url_validation";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ZoomOptions {
    /// Zoom recommends checking the timestamp without a number; 300 s like Slack's scheme.
    tolerance_seconds: u32,
    future_tolerance_seconds: u32,
}

impl Default for ZoomOptions {
    fn default() -> Self {
        Self {
            tolerance_seconds: 300,
            future_tolerance_seconds: 300,
        }
    }
}

#[derive(Debug)]
pub struct Zoom {
    keys: Keyring,
    tolerance: Tolerance,
}

impl Zoom {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: ZoomOptions = crypto::parse_options("zoom", options)?;
        Ok(Self {
            keys: Keyring::new("zoom", secrets)?,
            tolerance: Tolerance::both(opts.tolerance_seconds, opts.future_tolerance_seconds),
        })
    }

    /// Verify, calling `on_match` with the key that matched (the handshake answers with it).
    fn verify_with(
        &self,
        req: &InboundRequest<'_>,
        now_ms: i64,
        mut on_match: impl FnMut(&[u8]),
    ) -> Result<Verified, VerifyError> {
        let value = crypto::required_header(req.headers, SIGNATURE)?;
        let ts_text = crypto::needed_header(req.headers, TIMESTAMP)?;
        let ts = crypto::parse_unix(ts_text)?;
        let sig = value
            .strip_prefix("v0=")
            .and_then(|hex| SignatureEncoding::Hex.decode(hex))
            .ok_or_else(|| {
                VerifyError::MalformedSignature(format!("{SIGNATURE}: expected v0=<hex>"))
            })?;
        let parts: [&[u8]; 4] = [b"v0:", ts_text.as_bytes(), b":", req.body];
        let key_id = self.keys.first_match(now_ms, |key| {
            let ok = HmacAlgorithm::Sha256.verify(key, &parts, &sig);
            if ok {
                on_match(key);
            }
            ok
        })?;
        self.tolerance.check(ts, TimeUnit::Seconds, now_ms)?;
        Ok(Verified {
            scheme: "zoom_v0",
            key_id: Some(key_id),
        })
    }
}

fn canonical_type(event: &str) -> Option<&'static str> {
    match event {
        "meeting.started" | "webinar.started" => Some(canonical::MEETING_STARTED),
        "meeting.ended" | "webinar.ended" => Some(canonical::MEETING_ENDED),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Provider for Zoom {
    fn name(&self) -> &'static str {
        "zoom"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        self.verify_with(req, now_ms, |_| {})
    }

    fn handshake(
        &self,
        req: &InboundRequest<'_>,
        now_ms: i64,
    ) -> Option<Result<HandshakeReply, VerifyError>> {
        if !fields::contains(req.body, URL_VALIDATION.as_bytes()) {
            return None;
        }
        let body: Value = serde_json::from_slice(req.body).ok()?;
        if fields::str_at(&body, "/event") != Some(URL_VALIDATION) {
            return None;
        }
        // Without a plainToken there is nothing to answer: `extract` refuses it.
        let plain = fields::str_at(&body, "/payload/plainToken")?;
        let mut encrypted = None;
        let verified = self.verify_with(req, now_ms, |key| {
            encrypted = HmacAlgorithm::Sha256
                .compute(key, &[plain.as_bytes()])
                .ok()
                .map(hex::encode);
        });
        Some(verified.and_then(|_| {
            // HMAC takes any key, so the tag always exists once a key matched.
            let encrypted = encrypted.ok_or(VerifyError::NoLiveKey)?;
            Ok(HandshakeReply::json(serde_json::json!({
                "plainToken": plain,
                "encryptedToken": encrypted,
            })))
        }))
    }

    /// Zoom sends no event id. The key is `{event}#{event_ts}#{object uuid or id}` (plus the
    /// participant for participant events, several of which can share one millisecond); a
    /// body without those parts is deduped by its hash, which a retry (same body) repeats.
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let body: Value = fields::json_object_value(req.body)
            .ok_or_else(|| ExtractError("zoom event body is not a JSON object".into()))?;
        let event = fields::str_at(&body, "/event")
            .ok_or_else(|| ExtractError("zoom event has no string \"event\"".into()))?;
        if event == URL_VALIDATION {
            return Err(ExtractError(
                "zoom endpoint.url_validation without payload.plainToken".into(),
            ));
        }
        let event_ts = body.get("event_ts").and_then(Value::as_i64);
        let object = fields::id_at(&body, "/payload/object/uuid")
            .or_else(|| fields::id_at(&body, "/payload/object/id"));
        let participant = fields::id_at(&body, "/payload/object/participant/participant_uuid")
            .or_else(|| fields::id_at(&body, "/payload/object/participant/user_id"))
            .or_else(|| fields::id_at(&body, "/payload/object/participant/id"));
        let event_id = match (event_ts, object) {
            (Some(ts), Some(object)) => Some(match participant {
                Some(p) => format!("{event}#{ts}#{object}#{p}"),
                None => format!("{event}#{ts}#{object}"),
            }),
            _ => None,
        };
        Ok(vec![Extracted {
            event_id,
            event_type: Some(event.to_string()),
            canonical_type: canonical_type(event),
            occurred_at_ms: event_ts,
            entity: fields::id_at(&body, "/payload/object/host_id")
                .or_else(|| fields::id_at(&body, "/payload/account_id")),
            ..Default::default()
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        serde_json::json!({
            "event": "meeting.started", "event_ts": now_ms,
            "payload": {"account_id": "AAAAAABBBB", "object": {
                "id": "1234567890", "uuid": id, "host_id": "z8yAAAAA8bbbQ", "topic": "My Meeting",
                "type": 2, "start_time": crate::time::format_rfc3339_ms(now_ms), "timezone": "UTC"
            }}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let ts = TimeUnit::Seconds.of_ms(input.now_ms).to_string();
        let sig = HmacAlgorithm::Sha256.compute(key, &[b"v0:", ts.as_bytes(), b":", input.body])?;
        Ok(Headers::from_iter([
            (TIMESTAMP, ts),
            (SIGNATURE, format!("v0={}", hex::encode(sig))),
        ]))
    }
}

/// How the provider suite (`suite.rs`) signs for Zoom: `x-zm-signature: v0=<hex>`,
/// HMAC-SHA256 of `"v0:{timestamp}:{body}"`, and `x-zm-request-timestamp` in unix seconds.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Freshness, Signed, TestKey};
    fn sign(key: Option<&TestKey>, now_ms: i64) -> Signed {
        let body = br#"{"event":"meeting.started","event_ts":1767225600000,"payload":{"account_id":"AAAAAABBBB","object":{"uuid":"uuid-1==","id":"1234567890","host_id":"z8yAAAAA8bbbQ","topic":"My Meeting"}}}"#;
        let ts = now_ms.div_euclid(1000).to_string();
        let tag = key
            .expect("zoom is keyed")
            .hmac(HmacAlgorithm::Sha256, &[b"v0:", ts.as_bytes(), b":", body]);
        let headers = Headers::from_iter([
            (TIMESTAMP, ts),
            (SIGNATURE, format!("v0={}", hex::encode(tag))),
        ]);
        Signed::post(headers, *body)
    }
    Case {
        freshness: Some(Freshness {
            past_s: 300,
            future_s: 300,
        }),
        garbled: |s| {
            let mut out: Vec<Signed> = ["981f1dae", "v0=xyz"]
                .map(|v| s.with_header(SIGNATURE, v))
                .to_vec();
            out.extend(["1767225600000.0", "-1"].map(|ts| s.with_header(TIMESTAMP, ts)));
            out
        },
        ..Case::new(
            "zoom",
            "zoom_v0",
            || TestKey::pair("zoom_secret_token_abc123", "zoom_secret_token_Xy7Qm2"),
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
    use crate::providers::crypto::testkit::{self, request, secret};

    const SECRET: &str = "zoom_secret_token_abc123";
    const T: i64 = 1_767_225_600;

    fn zoom(secrets: Vec<Secret>) -> Zoom {
        Zoom::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn signed(secret: &str, t: i64, body: &[u8]) -> Headers {
        let ts = t.to_string();
        let sig = HmacAlgorithm::Sha256
            .compute(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body])
            .unwrap();
        Headers::from_iter([
            ("x-zm-request-timestamp", ts),
            ("x-zm-signature", format!("v0={}", hex::encode(sig))),
        ])
    }

    const VALIDATION: &[u8] = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;

    #[test]
    fn every_zoom_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["zoom"]) {
            let h = v.headers();
            let got = zoom(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn zoom_vector_is_a_meeting_start_keyed_by_event_time_and_uuid() {
        let v = testkit::vector("zoom-event");
        let h = v.headers();
        let got = zoom(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some("meeting.started#1767225600000#4444AAAiAAAAAiAiAiiAii==".into()),
                event_type: Some("meeting.started".into()),
                canonical_type: Some(canonical::MEETING_STARTED),
                occurred_at_ms: Some(1_767_225_600_000),
                entity: Some("AAAAAABBBB".into()),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn participant_events_include_the_participant_and_bodies_without_parts_have_no_id() {
        let p = zoom(vec![secret("k", SECRET)]);
        let h = Headers::new();
        let joined = br#"{"event":"meeting.participant_joined","event_ts":5,"payload":{"object":{"uuid":"M==","host_id":"H1","participant":{"user_id":"16778240","participant_uuid":"P-UUID"}}}}"#;
        let got = p.extract(&request(&h, joined)).unwrap().remove(0);
        assert_eq!(
            got.event_id.as_deref(),
            Some("meeting.participant_joined#5#M==#P-UUID")
        );
        assert_eq!(got.entity.as_deref(), Some("H1"));
        assert_eq!(got.canonical_type, None);
        let ended = br#"{"event":"meeting.ended","payload":{"object":{"id":1}}}"#;
        let got = p.extract(&request(&h, ended)).unwrap().remove(0);
        assert_eq!(got.event_id, None);
        assert_eq!(got.canonical_type, Some(canonical::MEETING_ENDED));
    }

    #[test]
    fn zoom_bodies_that_are_no_event_are_extract_errors() {
        let p = zoom(vec![secret("k", SECRET)]);
        let h = Headers::new();
        for body in [
            &b"nope"[..],
            b"[]",
            br#"{"payload":{}}"#,
            br#"{"event":"endpoint.url_validation","payload":{}}"#,
        ] {
            assert!(p.extract(&request(&h, body)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn signed_url_validation_is_answered_with_the_encrypted_token() {
        let h = signed(SECRET, T, VALIDATION);
        let got = zoom(vec![secret("k", SECRET)])
            .handshake(&request(&h, VALIDATION), T * 1000)
            .unwrap()
            .unwrap();
        let expected = HmacAlgorithm::Sha256
            .compute(SECRET.as_bytes(), &[b"qgg8vlvZRS6UYooatFL8Aw"])
            .unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.content_type, "application/json");
        let answer: Value = serde_json::from_str(&got.body).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": hex::encode(expected)})
        );
    }

    #[test]
    fn url_validation_answers_with_the_key_that_verified_it() {
        let h = signed("new-token", T, VALIDATION);
        let got = zoom(vec![secret("old", SECRET), secret("new", "new-token")])
            .handshake(&request(&h, VALIDATION), T * 1000)
            .unwrap()
            .unwrap();
        let expected = HmacAlgorithm::Sha256
            .compute(b"new-token", &[b"qgg8vlvZRS6UYooatFL8Aw"])
            .unwrap();
        assert!(got.body.contains(&hex::encode(expected)), "{}", got.body);
    }

    #[test]
    fn forged_or_stale_url_validation_is_refused() {
        let p = zoom(vec![secret("k", SECRET)]);
        let forged = signed("guess", T, VALIDATION);
        assert_eq!(
            p.handshake(&request(&forged, VALIDATION), T * 1000),
            Some(Err(VerifyError::SignatureMismatch { keys_tried: 1 }))
        );
        assert_eq!(
            p.handshake(&request(&Headers::new(), VALIDATION), T * 1000),
            Some(Err(VerifyError::MissingSignature(SIGNATURE.into())))
        );
        let h = signed(SECRET, T, VALIDATION);
        assert!(matches!(
            p.handshake(&request(&h, VALIDATION), (T + 301) * 1000),
            Some(Err(VerifyError::TimestampTooOld { .. }))
        ));
    }

    #[test]
    fn ordinary_zoom_events_are_not_handshakes() {
        let p = zoom(vec![secret("k", SECRET)]);
        let v = testkit::vector("zoom-event");
        let h = v.headers();
        assert_eq!(
            p.handshake(&request(&h, v.body.as_bytes()), v.now_ms()),
            None
        );
        let mention = br#"{"event":"chat_message.sent","payload":{"object":{"message":"endpoint.url_validation"}}}"#;
        assert_eq!(p.handshake(&request(&h, mention), v.now_ms()), None);
    }

    #[test]
    fn zoom_tolerance_is_configurable() {
        let h = signed(SECRET, T, b"{}");
        let lenient = Zoom::from_config(
            &serde_json::json!({"tolerance_seconds": 600}),
            vec![secret("k", SECRET)],
        )
        .unwrap();
        assert!(lenient
            .verify(&request(&h, b"{}"), (T + 600) * 1000)
            .is_ok());
    }

    #[test]
    fn zoom_sign_then_verify_round_trips() {
        let p = zoom(vec![secret("k", SECRET)]);
        let body = p.sample_body("uuid-1==", T * 1000);
        let input = SignInput {
            body: &body,
            now_ms: T * 1000,
            delivery_id: "unused",
        };
        let h = p.sign(&input).unwrap();
        let req = request(&h, &body);
        assert!(p.verify(&req, T * 1000).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(
            got.event_id.as_deref(),
            Some("meeting.started#1767225600000#uuid-1==")
        );
        assert_eq!(got.entity.as_deref(), Some("z8yAAAAA8bbbQ"));
    }
}
