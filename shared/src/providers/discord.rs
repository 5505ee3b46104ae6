//! Discord (interactions endpoint and application Webhook Events): `X-Signature-Ed25519` (hex)
//! over `X-Signature-Timestamp || raw body`, checked against the application's Public Key
//! (32 bytes, hex, from the developer portal) — one per source secret, so a key change can be
//! rolled through the key ring. Discord deliberately sends invalid signatures to check the
//! endpoint: they fail here like any forgery (401), or Discord removes the URL.
//!
//! Handshakes, after verification: an interaction PING (`type: 1`) is answered `{"type":1}`;
//! a Webhook Events PING (`type: 0`, told apart from interactions by its `event` envelope) is
//! answered 204 — that reply is *unverified* in the team's provider reference.
//! The official `discord-interactions` lib checks no timestamp; we refuse ones more than
//! 300 s off in either direction (configurable), which Discord's own clock easily meets.
//! Source: discord.com/developers/docs/interactions/overview (security headers);
//! `discord/discord-interactions-js` `verifyKey`; Webhook Events docs.

use serde::Deserialize;
use serde_json::Value;

use super::crypto::{self, Ed25519Key, KeyError, Keyring, SignatureEncoding, TimeUnit, Tolerance};
use super::{
    canonical, fields, ExtractError, Extracted, HandshakeReply, Provider, ProviderConfigError,
    SignInput, Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

const SIGNATURE: &str = "x-signature-ed25519";
const TIMESTAMP: &str = "x-signature-timestamp";
/// Snowflake ids count milliseconds from the first second of 2015.
const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DiscordOptions {
    tolerance_seconds: u32,
    future_tolerance_seconds: u32,
}

impl Default for DiscordOptions {
    fn default() -> Self {
        Self {
            tolerance_seconds: 300,
            future_tolerance_seconds: 300,
        }
    }
}

#[derive(Debug)]
pub struct Discord {
    keys: Keyring,
    tolerance: Tolerance,
}

/// The portal shows the public key as 64 hex characters; anything else is a config mistake.
fn decode_public_key(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    let key = std::str::from_utf8(raw)
        .ok()
        .and_then(|text| hex::decode(text.trim()).ok())
        .ok_or(KeyError::Format(
            "is not a hex public key (64 hex characters from the developer portal)",
        ))?;
    Ed25519Key::from_bytes(&key)?;
    Ok(key)
}

impl Discord {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: DiscordOptions = crypto::parse_options("discord", options)?;
        Ok(Self {
            keys: Keyring::decoded("discord", secrets, decode_public_key)?,
            tolerance: Tolerance::both(opts.tolerance_seconds, opts.future_tolerance_seconds),
        })
    }
}

/// What the body is, read once for the handshake and extraction.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<i64>,
    /// Present on Webhook Events (`type` 0 PING / 1 event), absent on interactions.
    event: Option<serde::de::IgnoredAny>,
}

fn interaction_type(kind: i64) -> String {
    match kind {
        2 => "application_command".into(),
        3 => "message_component".into(),
        4 => "application_command_autocomplete".into(),
        5 => "modal_submit".into(),
        other => format!("interaction_type_{other}"),
    }
}

/// The creation time carried in a snowflake id.
fn snowflake_ms(id: &str) -> Option<i64> {
    let n: u64 = id.parse().ok()?;
    i64::try_from(n >> 22).ok()?.checked_add(DISCORD_EPOCH_MS)
}

#[async_trait::async_trait]
impl Provider for Discord {
    fn name(&self) -> &'static str {
        "discord"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let value = crypto::required_header(req.headers, SIGNATURE)?;
        let ts_text = crypto::needed_header(req.headers, TIMESTAMP)?;
        let ts = crypto::parse_unix(ts_text)?;
        let sig = SignatureEncoding::Hex
            .decode(value)
            .filter(|sig| sig.len() == 64)
            .ok_or_else(|| {
                VerifyError::MalformedSignature(format!("{SIGNATURE} is not 64 bytes of hex"))
            })?;
        let parts: [&[u8]; 2] = [ts_text.as_bytes(), req.body];
        let key_id = self.keys.first_match(now_ms, |key| {
            Ed25519Key::from_bytes(key).is_ok_and(|k| k.verify(&parts, &sig))
        })?;
        self.tolerance.check(ts, TimeUnit::Seconds, now_ms)?;
        Ok(Verified {
            scheme: "discord_ed25519",
            key_id: Some(key_id),
        })
    }

    fn handshake(
        &self,
        req: &InboundRequest<'_>,
        now_ms: i64,
    ) -> Option<Result<HandshakeReply, VerifyError>> {
        let envelope: Envelope = serde_json::from_slice(req.body).ok()?;
        let reply = match (envelope.event.is_some(), envelope.kind) {
            (false, Some(1)) => HandshakeReply::json(serde_json::json!({"type": 1})),
            (true, Some(0)) => HandshakeReply {
                status: 204,
                content_type: "text/plain",
                body: String::new(),
            },
            _ => return None,
        };
        Some(self.verify(req, now_ms).map(|_| reply))
    }

    /// Discord wants an interaction callback within 3 s, before any handler has run: a
    /// deferred one, so the handler answers later through the interaction's webhook.
    /// Commands and modal submits get "thinking…" (type 5), components a silent deferred
    /// update (type 6), autocomplete an empty choice list (it cannot be deferred); Webhook
    /// Events only need a 204.
    fn acknowledgement(&self, req: &InboundRequest<'_>) -> Option<HandshakeReply> {
        let envelope: Envelope = serde_json::from_slice(req.body).ok()?;
        if envelope.event.is_some() {
            return Some(HandshakeReply {
                status: 204,
                content_type: "text/plain",
                body: String::new(),
            });
        }
        let reply = match envelope.kind? {
            3 => serde_json::json!({"type": 6}),
            4 => serde_json::json!({"type": 8, "data": {"choices": []}}),
            _ => serde_json::json!({"type": 5}),
        };
        Some(HandshakeReply::json(reply))
    }

    /// Interactions: the interaction `id` (a snowflake, which also dates it). Webhook Events
    /// carry no id: `{event type}#{data.id}` when the data has one (entitlements), else the
    /// body hash (a retry resends the same body).
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let body: Value = fields::json_object_value(req.body)
            .ok_or_else(|| ExtractError("discord body is not a JSON object".into()))?;
        let kind = body
            .get("type")
            .and_then(Value::as_i64)
            .ok_or_else(|| ExtractError("discord body has no integer \"type\"".into()))?;
        if let Some(event) = body.get("event") {
            if kind == 0 {
                return Err(ExtractError(
                    "discord webhook event PING is answered by the handshake".into(),
                ));
            }
            let event_type = fields::str_at(event, "/type");
            let data_id = fields::str_at(event, "/data/id");
            return Ok(vec![Extracted {
                event_id: event_type.zip(data_id).map(|(t, id)| format!("{t}#{id}")),
                event_type: event_type.map(str::to_string),
                occurred_at_ms: fields::str_at(event, "/timestamp")
                    .and_then(time::rfc3339_ms_utc_if_unzoned),
                entity: fields::str_at(event, "/data/user/id")
                    .or_else(|| fields::str_at(event, "/data/user_id"))
                    .map(str::to_string),
                ..Default::default()
            }]);
        }
        if kind == 1 {
            return Err(ExtractError(
                "discord interaction PING is answered by the handshake".into(),
            ));
        }
        let id = fields::str_at(&body, "/id")
            .ok_or_else(|| ExtractError("discord interaction has no string \"id\"".into()))?;
        Ok(vec![Extracted {
            event_id: Some(id.to_string()),
            event_type: Some(interaction_type(kind)),
            canonical_type: Some(canonical::CHAT_INTERACTION),
            occurred_at_ms: snowflake_ms(id),
            // In a guild the user is under `member`, in a DM at the top level.
            entity: fields::str_at(&body, "/member/user/id")
                .or_else(|| fields::str_at(&body, "/user/id"))
                .map(str::to_string),
            ..Default::default()
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        // A snowflake of `now_ms` whose low bits come from `id`, so each sample is unique.
        let since_epoch = u64::try_from(now_ms.saturating_sub(DISCORD_EPOCH_MS)).unwrap_or(0);
        let snowflake = (since_epoch << 22) | u64::from(crypto::crc32(id.as_bytes()) & 0x3F_FFFF);
        serde_json::json!({
            "application_id": "123456789012345678", "id": snowflake.to_string(), "token": format!("aW50ZXJhY3Rpb24{id}"),
            "type": 2, "version": 1, "guild_id": "290926798626357999", "channel_id": "645027906669510667",
            "data": {"id": "771825006014889984", "name": "blep", "type": 1,
                     "options": [{"name": "animal", "type": 3, "value": "animal_dog"}]},
            "member": {"user": {"id": "53908232506183680", "username": "Mason"}, "roles": []}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, _input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        Err(ProviderConfigError(
            "discord signs with a private key the receiver does not hold (Ed25519 application key)"
                .into(),
        ))
    }
}

/// How the provider suite (`suite.rs`) signs for Discord: `X-Signature-Ed25519: <hex>`,
/// Ed25519 over `"{timestamp}{body}"` with the application's private key; the source holds
/// its public key (hex).
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Freshness, Signed, TestKey};
    use ed25519_dalek::{Signer, SigningKey};
    fn key(seed: u8) -> TestKey {
        let private = SigningKey::from_bytes(&[seed; 32]);
        TestKey {
            configured: hex::encode(private.verifying_key().to_bytes()),
            signing: private.to_bytes().to_vec(),
        }
    }
    fn sign(key: Option<&TestKey>, now_ms: i64) -> Signed {
        let body = br#"{"application_id":"123456789012345678","id":"1455999425728512000","token":"tok","type":2,"data":{"name":"blep"},"member":{"user":{"id":"53908232506183680"}}}"#;
        let seed: [u8; 32] = key
            .expect("discord is keyed")
            .signing
            .as_slice()
            .try_into()
            .expect("a 32-byte seed");
        let ts = now_ms.div_euclid(1000).to_string();
        let sig = SigningKey::from_bytes(&seed).sign(&crypto::concat(&[ts.as_bytes(), body]));
        let headers =
            Headers::from_iter([(SIGNATURE, hex::encode(sig.to_bytes())), (TIMESTAMP, ts)]);
        Signed::post(headers, *body)
    }
    Case {
        freshness: Some(Freshness {
            past_s: 300,
            future_s: 300,
        }),
        garbled: |s| {
            let short = s.header(SIGNATURE)[..64].to_string();
            vec![
                s.with_header(SIGNATURE, "zz"),
                s.with_header(SIGNATURE, short),
                s.with_header(TIMESTAMP, "soon"),
            ]
        },
        signs: false,
        ..Case::new(
            "discord",
            "discord_ed25519",
            || [key(3), key(7)],
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
    use ed25519_dalek::{Signer, SigningKey};
    use sha2::Digest;

    use super::*;
    use crate::providers::crypto::testkit::{self, request};

    const T: i64 = 1_767_225_600;

    /// The vectors' key: seed = sha256("discord-test-key-seed").
    fn test_key() -> SigningKey {
        let seed: [u8; 32] = sha2::Sha256::digest(b"discord-test-key-seed").into();
        SigningKey::from_bytes(&seed)
    }

    fn other_key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn public_hex(key: &SigningKey) -> String {
        hex::encode(key.verifying_key().to_bytes())
    }

    fn key_secret(id: &str, key: &SigningKey) -> Secret {
        Secret::new(id, public_hex(key).into_bytes(), None)
    }

    fn discord(secrets: Vec<Secret>) -> Discord {
        Discord::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn signed(key: &SigningKey, t: i64, body: &[u8]) -> Headers {
        let ts = t.to_string();
        let sig = key.sign(&crypto::concat(&[ts.as_bytes(), body]));
        Headers::from_iter([
            ("X-Signature-Ed25519", hex::encode(sig.to_bytes())),
            ("X-Signature-Timestamp", ts),
        ])
    }

    const COMMAND: &[u8] = br#"{"application_id":"123456789012345678","id":"1455999425728512000","token":"tok","type":2,"data":{"name":"blep"},"member":{"user":{"id":"53908232506183680"}}}"#;

    #[test]
    fn discord_interactions_are_acknowledged_with_a_deferred_callback() {
        let p = discord(vec![key_secret("app", &test_key())]);
        let h = Headers::new();
        let ack = |body: &[u8]| p.acknowledgement(&request(&h, body)).expect("an ack");
        assert_eq!(
            ack(COMMAND),
            HandshakeReply::json(serde_json::json!({"type": 5}))
        );
        assert_eq!(
            ack(br#"{"id":"1","type":3,"data":{"custom_id":"b"}}"#),
            HandshakeReply::json(serde_json::json!({"type": 6}))
        );
        assert_eq!(
            ack(br#"{"id":"1","type":4}"#),
            HandshakeReply::json(serde_json::json!({"type": 8, "data": {"choices": []}}))
        );
        assert_eq!(ack(br#"{"type":1,"event":{"type":"X"}}"#).status, 204);
        assert_eq!(p.acknowledgement(&request(&h, b"not json")), None);
    }

    #[test]
    fn every_discord_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["discord"]) {
            let key = v
                .public_key
                .as_deref()
                .expect("discord vector has a public key");
            let p = discord(vec![Secret::new("app", key.as_bytes(), None)]);
            let h = v.headers();
            let got = p.verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
        }
    }

    #[test]
    fn test_seed_reproduces_the_vector_public_key() {
        let v = testkit::vector("discord-ping");
        assert_eq!(Some(public_hex(&test_key())), v.public_key);
    }

    #[test]
    fn discord_vector_ping_is_answered_with_type_1() {
        let v = testkit::vector("discord-ping");
        let p = discord(vec![key_secret("app", &test_key())]);
        let h = v.headers();
        let got = p
            .handshake(&request(&h, v.body.as_bytes()), v.now_ms())
            .unwrap()
            .unwrap();
        assert_eq!(got, HandshakeReply::json(serde_json::json!({"type": 1})));
        assert!(p.extract(&request(&h, v.body.as_bytes())).is_err());
    }

    #[test]
    fn ping_with_a_deliberately_invalid_signature_is_refused() {
        let v = testkit::vector("discord-ping");
        let p = discord(vec![key_secret("app", &test_key())]);
        // What Discord's endpoint check sends: a well-formed but wrong signature.
        let forged = signed(&other_key(), T, v.body.as_bytes());
        assert_eq!(
            p.handshake(&request(&forged, v.body.as_bytes()), v.now_ms()),
            Some(Err(VerifyError::SignatureMismatch { keys_tried: 1 }))
        );
        let mut flipped = v.headers();
        let sig = v.header("X-Signature-Ed25519").replace('a', "b");
        flipped = flipped
            .iter()
            .map(|(k, val)| (k, if k == SIGNATURE { sig.as_str() } else { val }))
            .collect();
        assert_eq!(
            p.handshake(&request(&flipped, v.body.as_bytes()), v.now_ms()),
            Some(Err(VerifyError::SignatureMismatch { keys_tried: 1 }))
        );
    }

    #[test]
    fn swapped_timestamp_is_refused() {
        let v = testkit::vector("discord-ping");
        let p = discord(vec![key_secret("app", &test_key())]);
        let h: Headers = v
            .headers()
            .iter()
            .map(|(k, val)| (k, if k == TIMESTAMP { "1767225601" } else { val }))
            .collect();
        assert_eq!(
            p.verify(&request(&h, v.body.as_bytes()), v.now_ms()),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn webhook_events_ping_is_answered_204_after_verification() {
        let body = br#"{"version":1,"application_id":"1234560123453231555","type":0,"event":{}}"#;
        let p = discord(vec![key_secret("app", &test_key())]);
        let h = signed(&test_key(), T, body);
        let got = p.handshake(&request(&h, body), T * 1000).unwrap().unwrap();
        assert_eq!(got.status, 204);
        assert_eq!(got.body, "");
        let forged = signed(&other_key(), T, body);
        assert_eq!(
            p.handshake(&request(&forged, body), T * 1000),
            Some(Err(VerifyError::SignatureMismatch { keys_tried: 1 }))
        );
        assert!(p.extract(&request(&h, body)).is_err());
    }

    #[test]
    fn application_command_is_a_chat_interaction_keyed_by_its_id() {
        let p = discord(vec![key_secret("app", &test_key())]);
        let h = signed(&test_key(), T, COMMAND);
        let req = request(&h, COMMAND);
        assert_eq!(p.handshake(&req, T * 1000), None);
        let verified = p.verify(&req, T * 1000).unwrap();
        assert_eq!(verified.key_id.as_deref(), Some("app"));
        assert_eq!(verified.scheme, "discord_ed25519");
        assert_eq!(
            p.extract(&req).unwrap(),
            vec![Extracted {
                event_id: Some("1455999425728512000".into()),
                event_type: Some("application_command".into()),
                canonical_type: Some(canonical::CHAT_INTERACTION),
                occurred_at_ms: Some((1_455_999_425_728_512_000_i64 >> 22) + DISCORD_EPOCH_MS),
                entity: Some("53908232506183680".into()),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn dm_interactions_take_the_top_level_user_and_webhook_events_their_data() {
        let p = discord(vec![key_secret("app", &test_key())]);
        let h = Headers::new();
        let dm = br#"{"id":"1","type":3,"user":{"id":"U9"}}"#;
        let got = p.extract(&request(&h, dm)).unwrap().remove(0);
        assert_eq!(got.entity.as_deref(), Some("U9"));
        assert_eq!(got.event_type.as_deref(), Some("message_component"));
        let event = br#"{"version":1,"application_id":"1","type":1,"event":{"type":"ENTITLEMENT_CREATE","timestamp":"2024-10-18T14:42:53.064834","data":{"id":"E1","user_id":"U7"}}}"#;
        let got = p.extract(&request(&h, event)).unwrap().remove(0);
        assert_eq!(got.event_id.as_deref(), Some("ENTITLEMENT_CREATE#E1"));
        assert_eq!(got.event_type.as_deref(), Some("ENTITLEMENT_CREATE"));
        assert_eq!(got.entity.as_deref(), Some("U7"));
        assert_eq!(got.occurred_at_ms, Some(1_729_262_573_064));
        assert_eq!(got.canonical_type, None);
        let authorized = br#"{"version":1,"application_id":"1","type":1,"event":{"type":"APPLICATION_AUTHORIZED","data":{"user":{"id":"U8"}}}}"#;
        let got = p.extract(&request(&h, authorized)).unwrap().remove(0);
        assert_eq!(got.event_id, None);
        assert_eq!(got.entity.as_deref(), Some("U8"));
    }

    #[test]
    fn discord_bodies_that_are_no_event_are_extract_errors() {
        let p = discord(vec![key_secret("app", &test_key())]);
        let h = Headers::new();
        for body in [&b"nope"[..], b"[]", br#"{"id":"1"}"#, br#"{"type":2}"#] {
            assert!(p.extract(&request(&h, body)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn discord_tolerance_is_configurable() {
        let h = signed(&test_key(), T, COMMAND);
        let lenient = Discord::from_config(
            &serde_json::json!({"tolerance_seconds": 3600}),
            vec![key_secret("app", &test_key())],
        )
        .unwrap();
        assert!(lenient
            .verify(&request(&h, COMMAND), (T + 3600) * 1000)
            .is_ok());
    }

    #[test]
    fn discord_cannot_sign_and_sample_bodies_are_unique_interactions() {
        let p = discord(vec![key_secret("app", &test_key())]);
        let body = p.sample_body("a1", T * 1000);
        let err = p
            .sign(&SignInput {
                body: &body,
                now_ms: T * 1000,
                delivery_id: "x",
            })
            .unwrap_err();
        assert!(err.0.contains("private key"), "{err}");
        assert_ne!(body, p.sample_body("a2", T * 1000));
        let h = signed(&test_key(), T, &body);
        let got = p.extract(&request(&h, &body)).unwrap().remove(0);
        assert_eq!(got.canonical_type, Some(canonical::CHAT_INTERACTION));
        let at = got.occurred_at_ms.unwrap();
        assert_eq!(at, T * 1000);
    }

    #[test]
    fn discord_public_keys_that_are_not_ed25519_hex_are_config_errors() {
        for bad in ["not hex", "abcd", &"00".repeat(33)] {
            let err = Discord::from_config(
                &serde_json::Value::Null,
                vec![Secret::new("pk", bad.as_bytes(), None)],
            )
            .unwrap_err();
            assert!(err.0.contains("\"pk\""), "{err}");
        }
        let err = Discord::from_config(
            &serde_json::json!({"tolerance": 1}),
            vec![key_secret("app", &test_key())],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `tolerance`"), "{err}");
        assert!(Discord::from_config(&serde_json::Value::Null, vec![]).is_err());
    }
}
