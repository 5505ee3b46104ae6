//! Twitch EventSub (webhook transport): `Twitch-Eventsub-Message-Signature: sha256=<hex>`,
//! HMAC-SHA256 over `message_id + message_timestamp + raw body` with no separators, keyed with
//! the subscription's secret (10–100 ASCII characters; each subscription may have its own, so
//! a source can hold several). The timestamp is RFC3339 with nanoseconds and is signed as the
//! literal header string. Messages older than 10 minutes are refused (Twitch's replay guard)
//! and the message id is the dedupe key.
//!
//! `webhook_callback_verification` is verified, then answered `200 text/plain` with the raw
//! `challenge`. `revocation` is enqueued as an ordinary event (type `revocation`): Twitch only
//! needs a 2xx, and a dead subscription is something the team must see, not a silent 204.
//! Source: dev.twitch.tv/docs/eventsub/handling-webhook-events/; community
//! `@twurple/eventsub-http` `_verifyData`.

use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

use super::crypto::{
    self, HmacAlgorithm, KeyError, Keyring, SignatureEncoding, TimeUnit, Tolerance,
};
use super::{
    canonical, fields, ExtractError, Extracted, HandshakeReply, Provider, ProviderConfigError,
    SignInput, Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

const ID: &str = "twitch-eventsub-message-id";
const TIMESTAMP: &str = "twitch-eventsub-message-timestamp";
const SIGNATURE: &str = "twitch-eventsub-message-signature";
const MESSAGE_TYPE: &str = "twitch-eventsub-message-type";
const SUBSCRIPTION_TYPE: &str = "twitch-eventsub-subscription-type";
const SUBSCRIPTION_VERSION: &str = "twitch-eventsub-subscription-version";
const VERIFICATION: &str = "webhook_callback_verification";
const REVOCATION: &str = "revocation";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TwitchOptions {
    /// Twitch: "make sure the value in the timestamp field isn't older than 10 minutes".
    tolerance_seconds: u32,
    /// Twitch says nothing about future stamps; a skewed clock should not pass forever.
    future_tolerance_seconds: u32,
}

impl Default for TwitchOptions {
    fn default() -> Self {
        Self {
            tolerance_seconds: 600,
            future_tolerance_seconds: 300,
        }
    }
}

#[derive(Debug)]
pub struct Twitch {
    keys: Keyring,
    tolerance: Tolerance,
}

/// Twitch refuses to create a subscription with any other secret, so one can never arrive.
fn check_secret(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    if !(10..=100).contains(&raw.len()) || !raw.iter().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::Format(
            "must be 10-100 printable ASCII characters (Twitch's subscription secret rule)",
        ));
    }
    Ok(raw.to_vec())
}

impl Twitch {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: TwitchOptions = crypto::parse_options("twitch", options)?;
        Ok(Self {
            keys: Keyring::decoded("twitch", secrets, check_secret)?,
            tolerance: Tolerance::both(opts.tolerance_seconds, opts.future_tolerance_seconds),
        })
    }
}

fn canonical_type(subscription: &str) -> Option<&'static str> {
    match subscription {
        "channel.chat.message" => Some(canonical::CHAT_MESSAGE),
        "channel.subscribe" => Some(canonical::SUBSCRIPTION_CREATED),
        "channel.subscription.end" => Some(canonical::SUBSCRIPTION_CANCELED),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Provider for Twitch {
    fn name(&self) -> &'static str {
        "twitch"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let value = crypto::required_header(req.headers, SIGNATURE)?;
        let id = crypto::needed_header(req.headers, ID)?;
        let ts_text = crypto::needed_header(req.headers, TIMESTAMP)?;
        let ts_ms = time::rfc3339_ms_utc_if_unzoned(ts_text).ok_or_else(|| {
            VerifyError::MalformedSignature(format!("{TIMESTAMP} is not an RFC3339 time"))
        })?;
        let sig = value
            .strip_prefix("sha256=")
            .and_then(|hex| SignatureEncoding::Hex.decode(hex))
            .ok_or_else(|| {
                VerifyError::MalformedSignature(format!("{SIGNATURE}: expected sha256=<hex>"))
            })?;
        let parts: [&[u8]; 3] = [id.as_bytes(), ts_text.as_bytes(), req.body];
        let key_id = self.keys.first_match(now_ms, |key| {
            HmacAlgorithm::Sha256.verify(key, &parts, &sig)
        })?;
        self.tolerance
            .check(ts_ms, TimeUnit::Milliseconds, now_ms)?;
        Ok(Verified {
            scheme: "twitch_eventsub_sha256",
            key_id: Some(key_id),
        })
    }

    fn handshake(
        &self,
        req: &InboundRequest<'_>,
        now_ms: i64,
    ) -> Option<Result<HandshakeReply, VerifyError>> {
        if fields::header(req.headers, MESSAGE_TYPE) != Some(VERIFICATION) {
            return None;
        }
        if let Err(refused) = self.verify(req, now_ms) {
            return Some(Err(refused));
        }
        // Without a string challenge there is nothing to echo: `extract` refuses it.
        let body: Value = serde_json::from_slice(req.body).ok()?;
        let challenge = fields::str_at(&body, "/challenge")?;
        Some(Ok(HandshakeReply::text(challenge)))
    }

    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let message_type = fields::header(req.headers, MESSAGE_TYPE).unwrap_or("notification");
        if message_type == VERIFICATION {
            return Err(ExtractError(
                "twitch webhook_callback_verification without a string \"challenge\"".into(),
            ));
        }
        let id = fields::header(req.headers, ID)
            .ok_or_else(|| ExtractError(format!("missing {ID} header")))?;
        let body: Value = fields::json_object_value(req.body)
            .ok_or_else(|| ExtractError("twitch message body is not a JSON object".into()))?;
        let occurred_at_ms =
            fields::header(req.headers, TIMESTAMP).and_then(time::rfc3339_ms_utc_if_unzoned);
        if message_type == REVOCATION {
            return Ok(vec![Extracted {
                event_id: Some(id.to_string()),
                event_type: Some(REVOCATION.into()),
                occurred_at_ms,
                entity: fields::str_at(&body, "/subscription/id").map(str::to_string),
                ..Default::default()
            }]);
        }
        let subscription = fields::header(req.headers, SUBSCRIPTION_TYPE)
            .or_else(|| fields::str_at(&body, "/subscription/type"));
        let entity = [
            "/event/user_id",
            "/event/chatter_user_id",
            "/event/broadcaster_user_id",
        ]
        .iter()
        .find_map(|p| fields::str_at(&body, p))
        .map(str::to_string);
        Ok(vec![Extracted {
            event_id: Some(id.to_string()),
            event_type: subscription.map(str::to_string),
            canonical_type: subscription.and_then(canonical_type),
            occurred_at_ms,
            entity,
            ..Default::default()
        }])
    }

    fn sample_body(&self, id: &str, _now_ms: i64) -> Vec<u8> {
        serde_json::json!({
            "subscription": {"id": "f1c2a387-161a-49f9-a165-0f21d7a4e1c4", "type": "channel.follow", "version": "2",
                             "status": "enabled", "cost": 0,
                             "condition": {"broadcaster_user_id": "12826", "moderator_user_id": "12826"},
                             "transport": {"method": "webhook", "callback": "https://example.com/webhooks/twitch"}},
            "event": {"user_id": "1337", "user_login": "awesome_user", "user_name": id,
                      "broadcaster_user_id": "12826", "broadcaster_user_login": "twitch", "broadcaster_user_name": "Twitch"}
        })
        .to_string()
        .into_bytes()
    }

    /// A `channel.follow` notification, matching [`Self::sample_body`].
    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(input.now_ms).unwrap_or(0));
        let ts = humantime::format_rfc3339_nanos(at).to_string();
        let id = input.delivery_id;
        let sig =
            HmacAlgorithm::Sha256.compute(key, &[id.as_bytes(), ts.as_bytes(), input.body])?;
        Ok(Headers::from_iter([
            (ID, id.to_string()),
            (TIMESTAMP, ts),
            (SIGNATURE, format!("sha256={}", hex::encode(sig))),
            (MESSAGE_TYPE, "notification".to_string()),
            (SUBSCRIPTION_TYPE, "channel.follow".to_string()),
            (SUBSCRIPTION_VERSION, "2".to_string()),
        ]))
    }
}

/// How the provider suite (`suite.rs`) signs for Twitch EventSub:
/// `Twitch-Eventsub-Message-Signature: sha256=<hex>`, HMAC-SHA256 of message id, timestamp
/// (RFC 3339, as sent) and body.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Freshness, Signed, TestKey};
    fn sign(key: Option<&TestKey>, now_ms: i64) -> Signed {
        let body = br#"{"subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","type":"channel.follow","version":"2"},"event":{"user_id":"1337","user_login":"awesome_user"}}"#;
        let id = "e76c6bd4-55c9-4987-8304-da1588d8988b";
        let ts = crate::time::format_rfc3339_ms(now_ms);
        let tag = key
            .expect("twitch is keyed")
            .hmac(HmacAlgorithm::Sha256, &[id.as_bytes(), ts.as_bytes(), body]);
        let headers = Headers::from_iter([
            (ID, id.to_string()),
            (TIMESTAMP, ts),
            (SIGNATURE, format!("sha256={}", hex::encode(tag))),
            (MESSAGE_TYPE, "notification".into()),
            (SUBSCRIPTION_TYPE, "channel.follow".into()),
        ]);
        Signed::post(headers, *body)
    }
    Case {
        freshness: Some(Freshness {
            past_s: 600,
            future_s: 300,
        }),
        garbled: |s| {
            let mut out: Vec<Signed> = ["aaab5467", "sha256=xyz", "sha1=aaab5467"]
                .map(|v| s.with_header(SIGNATURE, v))
                .to_vec();
            out.extend(["1767225600", "yesterday"].map(|ts| s.with_header(TIMESTAMP, ts)));
            out
        },
        ..Case::new(
            "twitch",
            "twitch_eventsub_sha256",
            || {
                TestKey::pair(
                    "twitch-eventsub-secret-0123456789",
                    "second-subscription-secret",
                )
            },
            sign,
            Carrier::Headers {
                signature: SIGNATURE,
                needed: &[ID, TIMESTAMP],
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

    const SECRET: &str = "twitch-eventsub-secret-0123456789";
    const TS: &str = "2026-01-01T00:00:00.123456789Z";
    const TS_MS: i64 = 1_767_225_600_123;
    const MSG: &str = "e76c6bd4-55c9-4987-8304-da1588d8988b";

    fn twitch(secrets: Vec<Secret>) -> Twitch {
        Twitch::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn signed(secret: &str, kind: &str, body: &[u8]) -> Headers {
        let sig = HmacAlgorithm::Sha256
            .compute(secret.as_bytes(), &[MSG.as_bytes(), TS.as_bytes(), body])
            .unwrap();
        Headers::from_iter([
            ("Twitch-Eventsub-Message-Id", MSG.to_string()),
            ("Twitch-Eventsub-Message-Timestamp", TS.to_string()),
            (
                "Twitch-Eventsub-Message-Signature",
                format!("sha256={}", hex::encode(sig)),
            ),
            ("Twitch-Eventsub-Message-Type", kind.to_string()),
            (
                "Twitch-Eventsub-Subscription-Type",
                "channel.follow".to_string(),
            ),
        ])
    }

    const CHALLENGE: &[u8] = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"webhook_callback_verification_pending","type":"channel.follow","version":"2"}}"#;
    const REVOKED: &[u8] = br#"{"subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"authorization_revoked","type":"channel.follow","version":"2"}}"#;

    #[test]
    fn every_twitch_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["twitch"]) {
            let h = v.headers();
            let got = twitch(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn twitch_vector_extracts_message_id_subscription_type_and_user() {
        let v = testkit::vector("twitch-notification");
        let h = v.headers();
        let got = twitch(vec![v.secret()])
            .extract(&request(&h, v.body.as_bytes()))
            .unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some(MSG.into()),
                event_type: Some("channel.follow".into()),
                canonical_type: None,
                occurred_at_ms: Some(TS_MS),
                entity: Some("1337".into()),
                ..Default::default()
            }]
        );
        assert_eq!(
            canonical_type("channel.chat.message"),
            Some(canonical::CHAT_MESSAGE)
        );
        assert_eq!(
            canonical_type("channel.subscribe"),
            Some(canonical::SUBSCRIPTION_CREATED)
        );
    }

    #[test]
    fn signed_callback_verification_echoes_the_challenge_as_text() {
        let h = signed(SECRET, VERIFICATION, CHALLENGE);
        let got = twitch(vec![secret("k", SECRET)])
            .handshake(&request(&h, CHALLENGE), TS_MS)
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            HandshakeReply::text("pogchamp-kappa-360noscope-vohiyo")
        );
    }

    #[test]
    fn forged_or_stale_callback_verification_is_refused() {
        let p = twitch(vec![secret("k", SECRET)]);
        let forged = signed("some-other-secret", VERIFICATION, CHALLENGE);
        assert_eq!(
            p.handshake(&request(&forged, CHALLENGE), TS_MS),
            Some(Err(VerifyError::SignatureMismatch { keys_tried: 1 }))
        );
        let h = signed(SECRET, VERIFICATION, CHALLENGE);
        assert!(matches!(
            p.handshake(&request(&h, CHALLENGE), TS_MS + 601_000),
            Some(Err(VerifyError::TimestampTooOld { .. }))
        ));
        let no_challenge = br#"{"subscription":{}}"#;
        let h = signed(SECRET, VERIFICATION, no_challenge);
        assert_eq!(p.handshake(&request(&h, no_challenge), TS_MS), None);
        assert!(p.extract(&request(&h, no_challenge)).is_err());
    }

    #[test]
    fn notifications_are_not_handshakes() {
        let v = testkit::vector("twitch-notification");
        let h = v.headers();
        assert_eq!(
            twitch(vec![v.secret()]).handshake(&request(&h, v.body.as_bytes()), v.now_ms()),
            None
        );
    }

    #[test]
    fn revocation_is_an_event_naming_the_subscription() {
        let h = signed(SECRET, REVOCATION, REVOKED);
        let p = twitch(vec![secret("k", SECRET)]);
        let req = request(&h, REVOKED);
        assert_eq!(p.handshake(&req, TS_MS), None);
        assert!(p.verify(&req, TS_MS).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some(MSG));
        assert_eq!(got.event_type.as_deref(), Some("revocation"));
        assert_eq!(
            got.entity.as_deref(),
            Some("f1c2a387-161a-49f9-a165-0f21d7a4e1c4")
        );
    }

    #[test]
    fn twitch_bodies_that_are_no_event_are_extract_errors() {
        let p = twitch(vec![secret("k", SECRET)]);
        let h = signed(SECRET, "notification", b"[]");
        assert!(p.extract(&request(&h, b"[]")).is_err());
        let no_id = Headers::from_iter([("Twitch-Eventsub-Message-Type", "notification")]);
        assert!(p.extract(&request(&no_id, b"{}")).is_err());
    }

    #[test]
    fn reformatted_timestamp_does_not_verify() {
        // The literal header string is signed: the same instant written differently fails.
        let v = testkit::vector("twitch-notification");
        let mut h = Headers::new();
        for (k, val) in v.headers().iter() {
            let val = if k == TIMESTAMP {
                "2026-01-01T00:00:00.123456789+00:00"
            } else {
                val
            };
            h.insert(k, val);
        }
        let got = twitch(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
        assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }

    #[test]
    fn twitch_future_tolerance_is_configurable() {
        let h = signed(SECRET, "notification", b"{}");
        let strict = Twitch::from_config(
            &serde_json::json!({"future_tolerance_seconds": 0}),
            vec![secret("k", SECRET)],
        )
        .unwrap();
        assert!(strict.verify(&request(&h, b"{}"), TS_MS - 1000).is_err());
    }

    #[test]
    fn twitch_sign_then_verify_round_trips() {
        let p = twitch(vec![secret("k", SECRET)]);
        let body = p.sample_body("awesome", TS_MS);
        let input = SignInput {
            body: &body,
            now_ms: TS_MS,
            delivery_id: "msg-1",
        };
        let h = p.sign(&input).unwrap();
        assert_eq!(h.get(TIMESTAMP), Some("2026-01-01T00:00:00.123000000Z"));
        let req = request(&h, &body);
        assert!(p.verify(&req, TS_MS).is_ok());
        let got = p.extract(&req).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some("msg-1"));
        assert_eq!(got.event_type.as_deref(), Some("channel.follow"));
    }

    #[test]
    fn twitch_secrets_outside_the_subscription_rule_are_config_errors() {
        for bad in ["short", "has a space in it", &"x".repeat(101)] {
            let err =
                Twitch::from_config(&serde_json::Value::Null, vec![secret("s", bad)]).unwrap_err();
            assert!(err.0.contains("\"s\"") && err.0.contains("10-100"), "{err}");
            assert!(!err.0.contains(bad), "{err}");
        }
        let err = Twitch::from_config(
            &serde_json::json!({"tolerance": 1}),
            vec![secret("k", SECRET)],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `tolerance`"), "{err}");
        assert!(Twitch::from_config(&serde_json::Value::Null, vec![]).is_err());
    }
}
