//! Meta (WhatsApp Cloud API, Messenger, Instagram): `X-Hub-Signature-256: sha256=<hex>`,
//! HMAC-SHA256 over the raw body keyed with the App Secret (UTF-8). Meta signs the body in its
//! escaped-unicode form (`\u00e9`): decoding and re-encoding it breaks the signature. The
//! legacy `X-Hub-Signature: sha1=<hex>` is accepted only when an option allows it. No
//! timestamp is signed: replay protection is the dedupe on message ids.
//!
//! The subscription check is a GET `?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`,
//! answered with the raw challenge when the token equals the configured verify token. The
//! verify token is one of the source's secrets, named by the `verify_token_secret` option and
//! kept out of the HMAC keys; every other secret is an App Secret.
//!
//! One notification batches `entry[]`; each yields one event per message or status with an id
//! (WhatsApp `changes[].value.messages[]`/`statuses[]`, Messenger/Instagram `messaging[]`),
//! else one event for the entry. Every event's `part` is its enclosing entry's exact bytes:
//! the entry holds the metadata (phone number id, contacts) its handler needs.
//! Source: developers.facebook.com/docs/graph-api/webhooks/getting-started; WhatsApp Cloud API
//! "Set up webhooks" and webhook payload reference; Messenger Platform webhook events.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::crypto::{self, HmacAlgorithm, Keyring, TimeUnit};
use super::{
    canonical, fields, ExtractError, Extracted, HandshakeReply, Provider, ProviderConfigError,
    SignInput, Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;

const SIGNATURE_256: &str = crypto::X_HUB_SIGNATURE_256;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MetaOptions {
    /// Id of the source secret that holds the GET verify token (`hub.verify_token`). Without
    /// it every subscription check is refused.
    verify_token_secret: Option<String>,
    /// Accept `X-Hub-Signature: sha1=` when no SHA-256 header is present.
    allow_sha1_fallback: bool,
}

#[derive(Debug)]
pub struct Meta {
    keys: Keyring,
    verify_tokens: Option<Keyring>,
    allow_sha1_fallback: bool,
}

impl Meta {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: MetaOptions = crypto::parse_options("meta", options)?;
        let (verify_tokens, app_secrets) = match opts.verify_token_secret.as_deref() {
            Some(id) => {
                let (tokens, app_secrets) = crypto::take_named_secrets(&[id], secrets)
                    .map_err(|id| {
                        ProviderConfigError(format!(
                            "meta options: verify_token_secret names {id:?}, which is not one of the source's secrets"
                        ))
                    })?;
                (
                    Some(Keyring::new("meta verify token", tokens)?),
                    app_secrets,
                )
            }
            None => (None, secrets),
        };
        if app_secrets.is_empty() {
            return Err(ProviderConfigError(
                "meta: at least one App Secret is required besides the verify token".into(),
            ));
        }
        Ok(Self {
            keys: Keyring::new("meta", app_secrets)?,
            verify_tokens,
            allow_sha1_fallback: opts.allow_sha1_fallback,
        })
    }

    /// The GET subscription check. A wrong token is a `VerifyError` (ingest answers 401; Meta
    /// only needs "not 200" to fail the check, its docs say 403).
    fn subscription_check(
        &self,
        query: &[(String, String)],
        mode: &str,
        now_ms: i64,
    ) -> Result<HandshakeReply, VerifyError> {
        let param = |name: &str| fields::pair(query, name);
        if mode != "subscribe" {
            return Err(VerifyError::MalformedSignature(
                "hub.mode is not \"subscribe\"".into(),
            ));
        }
        let presented = param("hub.verify_token")
            .ok_or_else(|| VerifyError::MissingSignature("hub.verify_token".into()))?;
        let tokens = self.verify_tokens.as_ref().ok_or(VerifyError::NoLiveKey)?;
        tokens.first_match(now_ms, |token| {
            crypto::token_eq(presented.as_bytes(), token)
        })?;
        let challenge = param("hub.challenge")
            .ok_or_else(|| VerifyError::MissingHeader("hub.challenge".into()))?;
        Ok(HandshakeReply::text(challenge))
    }
}

#[derive(Deserialize)]
struct Notification<'a> {
    #[serde(borrow)]
    entry: Vec<&'a RawValue>,
}

fn array<'v>(value: &'v Value, key: &str) -> &'v [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Messenger stamps entries and events in milliseconds, other Graph objects in seconds.
fn unix_guess_ms(value: Option<&Value>) -> Option<i64> {
    let n = value?.as_i64()?;
    if n > 100_000_000_000 {
        Some(n)
    } else {
        TimeUnit::Seconds.to_ms(n)
    }
}

fn status_canonical(status: &str) -> Option<&'static str> {
    match status {
        "sent" => Some(canonical::MESSAGE_SENT),
        "delivered" => Some(canonical::MESSAGE_DELIVERED),
        "read" => Some(canonical::MESSAGE_OPENED),
        "failed" => Some(canonical::MESSAGE_FAILED),
        _ => None,
    }
}

/// Messenger/Instagram `messaging[]` kinds, in the order they are looked for.
const MESSAGING_KINDS: &[&str] = &[
    "message",
    "message_edit",
    "postback",
    "reaction",
    "delivery",
    "read",
    "referral",
    "optin",
    "account_linking",
    "pass_thread_control",
    "take_thread_control",
    "request_thread_control",
    "policy_enforcement",
];

fn messaging_canonical(kind: &str) -> Option<&'static str> {
    match kind {
        "message" | "message_edit" => Some(canonical::CHAT_MESSAGE),
        "postback" | "reaction" | "referral" | "optin" => Some(canonical::CHAT_INTERACTION),
        "delivery" => Some(canonical::MESSAGE_DELIVERED),
        "read" => Some(canonical::MESSAGE_OPENED),
        _ => None,
    }
}

/// The events of one `entry[]` item, each carrying the entry's bytes as its part.
fn entry_events(raw: &RawValue) -> Result<Vec<Extracted>, ExtractError> {
    let entry: Value = serde_json::from_str(raw.get())
        .map_err(|_| ExtractError("meta entry does not parse".into()))?;
    if !entry.is_object() {
        return Err(ExtractError("meta entry is not a JSON object".into()));
    }
    let part = || Some(raw.get().as_bytes().to_vec());
    let entry_id = entry.get("id").and_then(fields::id_text);
    let entry_time = entry.get("time");
    let mut events = Vec::new();

    for change in array(&entry, "changes") {
        let value = change.get("value").unwrap_or(&Value::Null);
        // WhatsApp inbound messages: the `wamid…` is the dedupe key.
        for message in array(value, "messages") {
            let Some(id) = fields::str_at(message, "/id") else {
                continue;
            };
            events.push(Extracted {
                event_id: Some(id.to_string()),
                event_type: Some("messages".into()),
                canonical_type: Some(canonical::CHAT_MESSAGE),
                occurred_at_ms: fields::unix_seconds_int_or_text_ms(message.get("timestamp")),
                entity: fields::str_at(message, "/from").map(str::to_string),
                part: part(),
                ..Default::default()
            });
        }
        // WhatsApp delivery receipts: one per message and status, so `id#status`.
        for status in array(value, "statuses") {
            let (Some(id), Some(state)) = (
                fields::str_at(status, "/id"),
                fields::str_at(status, "/status"),
            ) else {
                continue;
            };
            events.push(Extracted {
                event_id: Some(format!("{id}#{state}")),
                event_type: Some(format!("statuses.{state}")),
                canonical_type: status_canonical(state),
                occurred_at_ms: fields::unix_seconds_int_or_text_ms(status.get("timestamp")),
                entity: fields::str_at(status, "/recipient_id").map(str::to_string),
                part: part(),
                ..Default::default()
            });
        }
    }

    for item in array(&entry, "messaging") {
        let kind = MESSAGING_KINDS
            .iter()
            .copied()
            .find(|k| item.get(*k).is_some())
            .unwrap_or("messaging");
        let timestamp = item.get("timestamp").or(entry_time);
        let is_echo = item
            .pointer("/message/is_echo")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        // Echoes are the page's own messages: the person is the recipient.
        let person = if is_echo {
            fields::str_at(item, "/recipient/id")
        } else {
            fields::str_at(item, "/sender/id")
        };
        let event_id = match (kind, fields::str_at(item, "/message/mid")) {
            ("message", Some(mid)) => Some(mid.to_string()),
            _ => timestamp.and_then(fields::id_text).map(|t| {
                format!(
                    "{}#{}#{t}#{kind}",
                    entry_id.as_deref().unwrap_or(""),
                    fields::str_at(item, "/sender/id").unwrap_or("")
                )
            }),
        };
        events.push(Extracted {
            event_id,
            event_type: Some(format!("messaging.{kind}")),
            canonical_type: messaging_canonical(kind),
            occurred_at_ms: unix_guess_ms(timestamp),
            entity: person.map(str::to_string),
            part: part(),
            ..Default::default()
        });
    }

    if events.is_empty() {
        // Template status, account updates, Instagram comments, Page feed…: the entry is the
        // event, named after its first change's field.
        let field = array(&entry, "changes")
            .iter()
            .find_map(|c| fields::str_at(c, "/field"))
            .unwrap_or("entry");
        let event_id = match (&entry_id, entry_time.and_then(fields::id_text)) {
            (Some(id), Some(time)) => Some(format!("{id}#{time}")),
            _ => None,
        };
        events.push(Extracted {
            event_id,
            event_type: Some(field.to_string()),
            occurred_at_ms: unix_guess_ms(entry_time),
            entity: entry_id,
            part: part(),
            ..Default::default()
        });
    }
    Ok(events)
}

#[async_trait::async_trait]
impl Provider for Meta {
    fn name(&self) -> &'static str {
        "meta"
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let (algorithm, sig) = crypto::x_hub_signature(req.headers, self.allow_sha1_fallback)?;
        let key_id = self
            .keys
            .first_match(now_ms, |key| algorithm.verify(key, &[req.body], &sig))?;
        Ok(Verified {
            scheme: match algorithm {
                HmacAlgorithm::Sha1 => "meta_sha1",
                _ => "meta_sha256",
            },
            key_id: Some(key_id),
        })
    }

    fn handshake(
        &self,
        req: &InboundRequest<'_>,
        now_ms: i64,
    ) -> Option<Result<HandshakeReply, VerifyError>> {
        if req.method != "GET" {
            return None;
        }
        // A GET without `hub.mode` is no subscription check (ingest answers 405).
        let mode = req
            .query
            .iter()
            .find(|(k, _)| k == "hub.mode")
            .map(|(_, v)| v.as_str())?;
        Some(self.subscription_check(req.query, mode, now_ms))
    }

    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let notification: Notification<'_> = serde_json::from_slice(req.body).map_err(|_| {
            ExtractError("meta notification is not a JSON object with an \"entry\" array".into())
        })?;
        let mut events = Vec::new();
        for raw in notification.entry {
            events.extend(entry_events(raw)?);
        }
        Ok(events)
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let now_s = now_ms / 1000;
        serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}],
                "messages": [{"from": "16505551234", "id": format!("wamid.{id}"), "timestamp": now_s.to_string(),
                              "type": "text", "text": {"body": "Does it come in another color?"}}]
            }}]}]
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        let key = self.keys.signing_key(input.now_ms)?;
        let sig = HmacAlgorithm::Sha256.compute(key, &[input.body])?;
        Ok(Headers::from_iter([(
            SIGNATURE_256,
            crypto::hub_signature_value(HmacAlgorithm::Sha256, &sig),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, expiring_secret, request, secret};

    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "my-verify-token-123";

    fn meta(secrets: Vec<Secret>) -> Meta {
        Meta::from_config(&serde_json::Value::Null, secrets).unwrap()
    }

    fn with_token() -> Meta {
        Meta::from_config(
            &serde_json::json!({"verify_token_secret": "verify"}),
            vec![secret("app", SECRET), secret("verify", TOKEN)],
        )
        .unwrap()
    }

    fn signed(secret: &str, body: &[u8]) -> Headers {
        let sig = HmacAlgorithm::Sha256
            .compute(secret.as_bytes(), &[body])
            .unwrap();
        Headers::from_iter([(
            "X-Hub-Signature-256",
            format!("sha256={}", hex::encode(sig)),
        )])
    }

    fn get<'a>(headers: &'a Headers, query: &'a [(String, String)]) -> InboundRequest<'a> {
        InboundRequest {
            method: "GET",
            headers,
            query,
            body: b"",
        }
    }

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The exact bytes of `needle` inside `body`, to check parts are slices, not re-serialised.
    fn slice_of(body: &[u8], needle: &str) -> Vec<u8> {
        let at = body
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .expect("needle in body");
        body[at..at + needle.len()].to_vec()
    }

    #[test]
    fn every_meta_vector_gets_its_expected_verdict() {
        for v in testkit::vectors_for(&["meta"]) {
            let h = v.headers();
            let got = meta(vec![v.secret()]).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.key_id, Some(format!("{}-key", v.id)));
            }
        }
    }

    #[test]
    fn reserialized_unicode_body_is_refused() {
        // meta-neg-reserialized-unicode: the same event with `\u00e9` decoded and re-encoded
        // as UTF-8, which is what a parse-then-serialise verifier would hash.
        let v = testkit::vector("meta-whatsapp");
        let h = v.headers();
        let parsed: Value = serde_json::from_str(&v.body).unwrap();
        let reserialized = serde_json::to_string(&parsed).unwrap();
        assert!(reserialized.contains("héllo"));
        assert_ne!(reserialized, v.body);
        let got = meta(vec![v.secret()]).verify(&request(&h, reserialized.as_bytes()), NOW_MS);
        assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }

    #[test]
    fn whatsapp_vector_message_is_a_chat_message_keyed_by_wamid() {
        let v = testkit::vector("meta-whatsapp");
        let h = v.headers();
        let body = v.body.as_bytes();
        let got = meta(vec![v.secret()]).extract(&request(&h, body)).unwrap();
        let entry = &v.body[v.body.find("[{").unwrap() + 1..v.body.len() - 2];
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some("wamid.ABGGFlA5Fpa".into()),
                event_type: Some("messages".into()),
                canonical_type: Some(canonical::CHAT_MESSAGE),
                occurred_at_ms: Some(1_504_902_988_000),
                entity: Some("16315551181".into()),
                part: Some(slice_of(body, entry)),
                ..Default::default()
            }]
        );
        // The part keeps Meta's escapes byte for byte.
        assert!(String::from_utf8(got[0].part.clone().unwrap())
            .unwrap()
            .contains(r"h\u00e9llo \ud83d\ude00"));
    }

    const ENTRY_MESSAGES: &str = concat!(
        r#"{"id":"WABA1","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"P1"},"#,
        r#""messages":[{"from":"111","id":"wamid.A","timestamp":"1767225600","type":"text","text":{"body":"caf\u00e9"}},"#,
        r#"{"from":"222","id":"wamid.B","timestamp":"1767225601","type":"text","text":{"body":"hi"}}]},"field":"messages"}]}"#
    );
    const ENTRY_STATUSES: &str = concat!(
        r#"{"id":"WABA1","changes":[{"value":{"messaging_product":"whatsapp","statuses":["#,
        r#"{"id":"wamid.C","status":"sent","timestamp":"1767225602","recipient_id":"333"},"#,
        r#"{"id":"wamid.C","status":"read","timestamp":"1767225603","recipient_id":"333"},"#,
        r#"{"id":"wamid.D","status":"failed","timestamp":"1767225604","recipient_id":"444","errors":[{"code":131047}]}]},"field":"messages"}]}"#
    );
    const ENTRY_TEMPLATE: &str = r#"{"id":"WABA1","time":1767225605,"changes":[{"value":{"event":"APPROVED","message_template_id":9},"field":"message_template_status_update"}]}"#;

    #[test]
    fn whatsapp_batch_splits_into_one_event_per_message_and_status() {
        let batch = format!(
            r#"{{"object":"whatsapp_business_account","entry":[{ENTRY_MESSAGES}, {ENTRY_STATUSES},{ENTRY_TEMPLATE}]}}"#
        );
        let body = batch.as_bytes();
        let got = meta(vec![secret("k", SECRET)])
            .extract(&request(&Headers::new(), body))
            .unwrap();
        let ids: Vec<_> = got.iter().map(|e| e.event_id.as_deref().unwrap()).collect();
        assert_eq!(
            ids,
            [
                "wamid.A",
                "wamid.B",
                "wamid.C#sent",
                "wamid.C#read",
                "wamid.D#failed",
                "WABA1#1767225605"
            ]
        );
        let canon: Vec<_> = got.iter().map(|e| e.canonical_type).collect();
        assert_eq!(
            canon,
            [
                Some(canonical::CHAT_MESSAGE),
                Some(canonical::CHAT_MESSAGE),
                Some(canonical::MESSAGE_SENT),
                Some(canonical::MESSAGE_OPENED),
                Some(canonical::MESSAGE_FAILED),
                None
            ]
        );
        assert_eq!(got[1].entity.as_deref(), Some("222"));
        assert_eq!(got[3].entity.as_deref(), Some("333"));
        assert_eq!(got[3].event_type.as_deref(), Some("statuses.read"));
        assert_eq!(got[3].occurred_at_ms, Some(1_767_225_603_000));
        assert_eq!(
            got[5].event_type.as_deref(),
            Some("message_template_status_update")
        );
        assert_eq!(got[5].occurred_at_ms, Some(1_767_225_605_000));
        // Two messages of one entry share that entry's exact bytes as their part.
        let entries = [ENTRY_MESSAGES, ENTRY_STATUSES, ENTRY_TEMPLATE];
        for (event, entry) in got.iter().zip([0, 0, 1, 1, 1, 2]) {
            assert_eq!(
                event.part.as_deref(),
                Some(slice_of(body, entries[entry]).as_slice()),
                "{:?}",
                event.event_id
            );
        }
        assert!(ENTRY_MESSAGES.contains(r"caf\u00e9"));
    }

    #[test]
    fn messenger_messaging_items_are_split_with_mid_or_composite_ids() {
        let body = concat!(
            r#"{"object":"page","entry":[{"id":"PAGE1","time":1767225600123,"messaging":["#,
            r#"{"sender":{"id":"PSID1"},"recipient":{"id":"PAGE1"},"timestamp":1767225600100,"message":{"mid":"m_1","text":"hello"}},"#,
            r#"{"sender":{"id":"PAGE1"},"recipient":{"id":"PSID2"},"timestamp":1767225600101,"message":{"mid":"m_2","is_echo":true,"text":"hi"}},"#,
            r#"{"sender":{"id":"PSID1"},"recipient":{"id":"PAGE1"},"timestamp":1767225600102,"postback":{"title":"Start","payload":"GET_STARTED"}},"#,
            r#"{"sender":{"id":"PSID1"},"recipient":{"id":"PAGE1"},"timestamp":1767225600103,"read":{"watermark":1767225600000}}"#,
            r#"]}]}"#
        );
        let got = meta(vec![secret("k", SECRET)])
            .extract(&request(&Headers::new(), body.as_bytes()))
            .unwrap();
        let summary: Vec<_> = got
            .iter()
            .map(|e| {
                (
                    e.event_id.as_deref().unwrap(),
                    e.event_type.as_deref().unwrap(),
                    e.canonical_type,
                    e.entity.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "m_1",
                    "messaging.message",
                    Some(canonical::CHAT_MESSAGE),
                    "PSID1"
                ),
                (
                    "m_2",
                    "messaging.message",
                    Some(canonical::CHAT_MESSAGE),
                    "PSID2"
                ),
                (
                    "PAGE1#PSID1#1767225600102#postback",
                    "messaging.postback",
                    Some(canonical::CHAT_INTERACTION),
                    "PSID1"
                ),
                (
                    "PAGE1#PSID1#1767225600103#read",
                    "messaging.read",
                    Some(canonical::MESSAGE_OPENED),
                    "PSID1"
                ),
            ]
        );
        assert_eq!(got[0].occurred_at_ms, Some(1_767_225_600_100));
        assert!(got.iter().all(|e| e.part == got[0].part));
    }

    #[test]
    fn entry_without_time_or_items_has_no_id_and_empty_batch_has_no_events() {
        let p = meta(vec![secret("k", SECRET)]);
        let h = Headers::new();
        let body = br#"{"object":"instagram","entry":[{"id":"IG1","changes":[{"field":"comments","value":{"id":"c1"}}]}]}"#;
        let got = p.extract(&request(&h, body)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event_id, None);
        assert_eq!(got[0].event_type.as_deref(), Some("comments"));
        assert!(p
            .extract(&request(&h, br#"{"object":"page","entry":[]}"#))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn meta_bodies_that_are_no_notification_are_extract_errors() {
        let p = meta(vec![secret("k", SECRET)]);
        let h = Headers::new();
        for body in [
            &b"nope"[..],
            b"[]",
            br#"{"object":"page"}"#,
            br#"{"entry":{}}"#,
            br#"{"entry":[1]}"#,
        ] {
            assert!(p.extract(&request(&h, body)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn subscription_check_echoes_the_raw_challenge() {
        let q = query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", TOKEN),
            ("hub.challenge", "1158201444"),
        ]);
        let h = Headers::new();
        let got = with_token()
            .handshake(&get(&h, &q), NOW_MS)
            .unwrap()
            .unwrap();
        assert_eq!(got, HandshakeReply::text("1158201444"));
    }

    #[test]
    fn subscription_check_with_a_wrong_token_is_refused() {
        let h = Headers::new();
        let p = with_token();
        for (pairs, expected) in [
            (
                vec![
                    ("hub.mode", "subscribe"),
                    ("hub.verify_token", "guess"),
                    ("hub.challenge", "1"),
                ],
                VerifyError::SignatureMismatch { keys_tried: 1 },
            ),
            (
                // The App Secret is not the verify token.
                vec![
                    ("hub.mode", "subscribe"),
                    ("hub.verify_token", SECRET),
                    ("hub.challenge", "1"),
                ],
                VerifyError::SignatureMismatch { keys_tried: 1 },
            ),
            (
                vec![("hub.mode", "subscribe"), ("hub.challenge", "1")],
                VerifyError::MissingSignature("hub.verify_token".into()),
            ),
            (
                vec![("hub.mode", "subscribe"), ("hub.verify_token", TOKEN)],
                VerifyError::MissingHeader("hub.challenge".into()),
            ),
            (
                vec![
                    ("hub.mode", "unsubscribe"),
                    ("hub.verify_token", TOKEN),
                    ("hub.challenge", "1"),
                ],
                VerifyError::MalformedSignature("hub.mode is not \"subscribe\"".into()),
            ),
        ] {
            let q = query(&pairs);
            assert_eq!(
                p.handshake(&get(&h, &q), NOW_MS),
                Some(Err(expected)),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn subscription_check_without_a_configured_token_is_refused() {
        let q = query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", SECRET),
            ("hub.challenge", "1"),
        ]);
        let h = Headers::new();
        assert_eq!(
            meta(vec![secret("k", SECRET)]).handshake(&get(&h, &q), NOW_MS),
            Some(Err(VerifyError::NoLiveKey))
        );
    }

    #[test]
    fn only_a_get_with_hub_mode_is_a_handshake() {
        let h = Headers::new();
        let p = with_token();
        assert_eq!(p.handshake(&get(&h, &[]), NOW_MS), None);
        let q = query(&[("hub.mode", "subscribe")]);
        let post = InboundRequest {
            method: "POST",
            headers: &h,
            query: &q,
            body: b"{}",
        };
        assert_eq!(p.handshake(&post, NOW_MS), None);
    }

    #[test]
    fn verify_token_is_not_an_hmac_key() {
        let body = b"{}";
        let h = signed(TOKEN, body);
        assert_eq!(
            with_token().verify(&request(&h, body), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
        let h = signed(SECRET, body);
        let got = with_token().verify(&request(&h, body), NOW_MS).unwrap();
        assert_eq!(got.key_id.as_deref(), Some("app"));
    }

    #[test]
    fn verify_token_config_errors_are_clear() {
        let err = Meta::from_config(
            &serde_json::json!({"verify_token_secret": "nope"}),
            vec![secret("app", SECRET)],
        )
        .unwrap_err();
        assert!(
            err.0.contains("\"nope\"") && err.0.contains("not one of"),
            "{err}"
        );
        let err = Meta::from_config(
            &serde_json::json!({"verify_token_secret": "verify"}),
            vec![secret("verify", TOKEN)],
        )
        .unwrap_err();
        assert!(err.0.contains("App Secret"), "{err}");
        assert!(!err.0.contains(TOKEN));
        let err = Meta::from_config(
            &serde_json::json!({"verify_token": TOKEN}),
            vec![secret("app", SECRET)],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `verify_token`"), "{err}");
        assert!(!err.0.contains(TOKEN), "{err}");
    }

    #[test]
    fn tampered_meta_body_is_refused() {
        let v = testkit::vector("meta-whatsapp");
        let h = v.headers();
        let body = v.body.replace("16315551181", "16315551182");
        let got = meta(vec![v.secret()]).verify(&request(&h, body.as_bytes()), NOW_MS);
        assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }

    #[test]
    fn wrong_meta_secret_is_refused() {
        let v = testkit::vector("meta-whatsapp");
        let h = v.headers();
        let got = meta(vec![secret("other", "fedcba9876543210")])
            .verify(&request(&h, v.body.as_bytes()), NOW_MS);
        assert_eq!(got, Err(VerifyError::SignatureMismatch { keys_tried: 1 }));
    }

    #[test]
    fn missing_and_garbled_meta_signatures_are_refused() {
        let p = meta(vec![secret("k", SECRET)]);
        assert_eq!(
            p.verify(&request(&Headers::new(), b"{}"), NOW_MS),
            Err(VerifyError::MissingSignature(SIGNATURE_256.into()))
        );
        for bad in ["3b208c28", "sha1=3b208c28", "sha256=zz", "sha256="] {
            let h = Headers::from_iter([("X-Hub-Signature-256", bad)]);
            assert!(
                matches!(
                    p.verify(&request(&h, b"{}"), NOW_MS),
                    Err(VerifyError::MalformedSignature(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn legacy_sha1_meta_signature_needs_the_option() {
        let body = b"{}";
        let sig = HmacAlgorithm::Sha1
            .compute(SECRET.as_bytes(), &[body])
            .unwrap();
        let h = Headers::from_iter([("X-Hub-Signature", format!("sha1={}", hex::encode(sig)))]);
        assert_eq!(
            meta(vec![secret("k", SECRET)]).verify(&request(&h, body), NOW_MS),
            Err(VerifyError::MissingSignature(SIGNATURE_256.into()))
        );
        let p = Meta::from_config(
            &serde_json::json!({"allow_sha1_fallback": true}),
            vec![secret("k", SECRET)],
        )
        .unwrap();
        let got = p.verify(&request(&h, body), NOW_MS).unwrap();
        assert_eq!(got.scheme, "meta_sha1");
        // A present SHA-256 header decides alone.
        let mut both = h.clone();
        both.insert("X-Hub-Signature-256", format!("sha256={}", "00".repeat(32)));
        assert_eq!(
            p.verify(&request(&both, body), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn rotated_meta_secret_reports_the_key_that_matched() {
        let h = signed("new-app-secret", b"{}");
        let p = meta(vec![secret("old", SECRET), secret("new", "new-app-secret")]);
        let got = p.verify(&request(&h, b"{}"), NOW_MS).unwrap();
        assert_eq!(got.key_id.as_deref(), Some("new"));
        assert_eq!(got.scheme, "meta_sha256");
    }

    #[test]
    fn meta_secret_past_not_after_is_not_accepted() {
        let h = signed(SECRET, b"{}");
        let p = meta(vec![
            expiring_secret("old", SECRET, NOW_MS - 1),
            secret("new", "new-app-secret"),
        ]);
        assert_eq!(
            p.verify(&request(&h, b"{}"), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn meta_sign_then_verify_round_trips_with_the_sample_body() {
        let p = with_token();
        let body = p.sample_body("HBgL", NOW_MS);
        let input = SignInput {
            body: &body,
            now_ms: NOW_MS,
            delivery_id: "unused",
        };
        let h = p.sign(&input).unwrap();
        let req = request(&h, &body);
        assert!(p.verify(&req, NOW_MS).is_ok());
        let got = p.extract(&req).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event_id.as_deref(), Some("wamid.HBgL"));
        assert_eq!(got[0].occurred_at_ms, Some(NOW_MS));
    }
}
