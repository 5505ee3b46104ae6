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
//! else one event for the entry. An event's `part` is a small JSON object of raw slices of
//! the body (never re-serialised, so Meta's escapes stay byte for byte): the item itself
//! beside what identifies its entry, members absent from the request left out:
//! - WhatsApp message: `{"object","entry_id","field","messaging_product","metadata",
//!   "contact","message"}` (`contact` = the `contacts[]` item whose `wa_id` is the sender);
//! - WhatsApp status: `{"object","entry_id","field","messaging_product","metadata","status"}`;
//! - Messenger/Instagram: `{"object","entry_id","messaging"}`;
//! - an entry without such items: `{"object","entry"}` (the whole entry is the event).
//!
//! Sibling items and the entry's `time` stay out, so the same message inside a differently
//! composed batch has the same bytes (a duplicate, not a conflict). The context is copied per
//! event, so it is capped ([`MAX_CONTEXT_BYTES`]): the parts of a request together take at
//! most its size plus [`MAX_PART_OVERHEAD`] per event.
//! Source: developers.facebook.com/docs/graph-api/webhooks/getting-started; WhatsApp Cloud API
//! "Set up webhooks" and webhook payload reference; Messenger Platform webhook events.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::crypto::{self, HmacAlgorithm, Keyring, TimeUnit};
use super::{
    canonical, fields, ExtractError, ExtractFailure, Extracted, HandshakeReply, Provider,
    ProviderConfigError, SignInput, Verified, VerifyError,
};
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time;

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
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow)]
    entry: Vec<&'a RawValue>,
}

/// The most bytes of context (`object`, entry id, `field`, `messaging_product`, `metadata`,
/// the sender's contact) copied beside one event. Meta's are a few hundred bytes; the cap
/// keeps an entry with large context and many items from multiplying it per event.
pub(crate) const MAX_CONTEXT_BYTES: usize = 2048;

/// The most a part adds to its item's own bytes: the context and the member names and
/// punctuation around it (under 100 bytes). The parts of a request with `n` events take at
/// most its size plus `n` times this.
pub const MAX_PART_OVERHEAD: usize = MAX_CONTEXT_BYTES + 128;

/// A JSON object's members as raw slices of the body (the last of a repeated name wins, as
/// when parsing into a `Value`); `None` when `raw` is no object.
fn members(raw: &RawValue) -> Option<HashMap<String, &RawValue>> {
    serde_json::from_str(raw.get()).ok()
}

/// A JSON array's items as raw slices; empty when `raw` is absent or no array (Meta's
/// optional lists).
fn items<'a>(raw: Option<&&'a RawValue>) -> Vec<&'a RawValue> {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or_default()
}

fn value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
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

/// One `changes[]` item, sliced.
struct Change<'a> {
    field: Option<&'a RawValue>,
    messaging_product: Option<&'a RawValue>,
    metadata: Option<&'a RawValue>,
    contacts: Vec<&'a RawValue>,
    messages: Vec<&'a RawValue>,
    statuses: Vec<&'a RawValue>,
}

impl<'a> Change<'a> {
    fn slice(raw: &'a RawValue) -> Self {
        let change = members(raw).unwrap_or_default();
        let value = change
            .get("value")
            .and_then(|v| members(v))
            .unwrap_or_default();
        Self {
            field: change.get("field").copied(),
            messaging_product: value.get("messaging_product").copied(),
            metadata: value.get("metadata").copied(),
            contacts: items(value.get("contacts")),
            messages: items(value.get("messages")),
            statuses: items(value.get("statuses")),
        }
    }

    /// `contacts[]` by `wa_id`, to set each message's sender beside it.
    fn contacts_by_wa_id(&self) -> HashMap<String, &'a RawValue> {
        self.contacts
            .iter()
            .filter_map(|raw| Some((fields::str_at(&value(raw), "/wa_id")?.to_string(), *raw)))
            .collect()
    }
}

/// One `entry[]` item, sliced: everything an event needs is a slice of the body, so nothing
/// is re-serialised and nothing is copied per event but the bounded context.
struct Entry<'a> {
    raw: &'a RawValue,
    id: Option<&'a RawValue>,
    time: Option<&'a RawValue>,
    changes: Vec<Change<'a>>,
    messaging: Vec<&'a RawValue>,
}

impl<'a> Entry<'a> {
    fn slice(raw: &'a RawValue) -> Result<Self, ExtractError> {
        let entry =
            members(raw).ok_or_else(|| ExtractError("meta entry is not a JSON object".into()))?;
        Ok(Self {
            raw,
            id: entry.get("id").copied(),
            time: entry.get("time").copied(),
            changes: items(entry.get("changes"))
                .into_iter()
                .map(Change::slice)
                .collect(),
            messaging: items(entry.get("messaging")),
        })
    }

    /// The events it yields at most: one per listed item, or the entry itself.
    fn event_count(&self) -> usize {
        let listed: usize = self.messaging.len()
            + self
                .changes
                .iter()
                .map(|c| c.messages.len() + c.statuses.len())
                .sum::<usize>();
        listed.max(1)
    }
}

/// An event's part: a JSON object of raw slices, `{"object":…,"entry_id":…,<context>…,
/// "<kind>":<item>}`, members whose slice is absent left out. The same item with the same
/// context is the same bytes whatever else its request carried, so a redelivery in another
/// batch is a duplicate, not a conflict.
fn part(
    context: &[(&str, Option<&RawValue>)],
    kind: &str,
    item: &RawValue,
) -> Result<Vec<u8>, ExtractError> {
    let present = || context.iter().filter_map(|(n, v)| Some((*n, (*v)?.get())));
    let context_bytes: usize = present().map(|(_, v)| v.len()).sum();
    if context_bytes > MAX_CONTEXT_BYTES {
        return Err(ExtractError(format!(
            "meta: the entry context copied beside each event is {context_bytes} bytes, over {MAX_CONTEXT_BYTES}"
        )));
    }
    let mut out = Vec::with_capacity(item.get().len() + context_bytes + 16 * (context.len() + 1));
    out.push(b'{');
    for (name, raw) in present().chain([(kind, item.get())]) {
        if out.len() > 1 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(raw.as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

/// The events of one entry: one per message or status with an id, one per `messaging[]`
/// item, else the entry itself.
fn entry_events(
    object: Option<&RawValue>,
    entry: &Entry<'_>,
    events: &mut Vec<Extracted>,
) -> Result<(), ExtractError> {
    let first = events.len();
    let entry_id = entry.id.map(value).as_ref().and_then(fields::id_text);
    let entry_time = entry.time.map(value);
    for change in &entry.changes {
        change_events(object, entry.id, change, events)?;
    }
    let context = [("object", object), ("entry_id", entry.id)];
    for raw in &entry.messaging {
        let event = messaging_event(&context, entry_id.as_deref(), entry_time.as_ref(), raw)?;
        events.push(event);
    }
    if events.len() == first {
        events.push(whole_entry_event(
            object,
            entry,
            entry_id,
            entry_time.as_ref(),
        )?);
    }
    Ok(())
}

/// The WhatsApp messages and statuses of one change, each beside the change's context.
fn change_events(
    object: Option<&RawValue>,
    entry_id: Option<&RawValue>,
    change: &Change<'_>,
    events: &mut Vec<Extracted>,
) -> Result<(), ExtractError> {
    let context = [
        ("object", object),
        ("entry_id", entry_id),
        ("field", change.field),
        ("messaging_product", change.messaging_product),
        ("metadata", change.metadata),
    ];
    let contacts = change.contacts_by_wa_id();
    // WhatsApp inbound messages: the `wamid…` is the dedupe key.
    for raw in &change.messages {
        let message = value(raw);
        let Some(id) = fields::str_at(&message, "/id") else {
            continue;
        };
        let from = fields::str_at(&message, "/from");
        let contact = from.and_then(|f| contacts.get(f).copied());
        let mut with_contact = context.to_vec();
        with_contact.push(("contact", contact));
        events.push(Extracted {
            event_id: Some(id.to_string()),
            event_type: Some("messages".into()),
            canonical_type: Some(canonical::CHAT_MESSAGE),
            occurred_at_ms: time::unix_seconds_int_or_text_ms(message.get("timestamp")),
            entity: from.map(str::to_string),
            part: Some(part(&with_contact, "message", raw)?),
            ..Default::default()
        });
    }
    // WhatsApp delivery receipts: one per message and status, so `id#status`.
    for raw in &change.statuses {
        let status = value(raw);
        let (Some(id), Some(state)) = (
            fields::str_at(&status, "/id"),
            fields::str_at(&status, "/status"),
        ) else {
            continue;
        };
        events.push(Extracted {
            event_id: Some(format!("{id}#{state}")),
            event_type: Some(format!("statuses.{state}")),
            canonical_type: status_canonical(state),
            occurred_at_ms: time::unix_seconds_int_or_text_ms(status.get("timestamp")),
            entity: fields::str_at(&status, "/recipient_id").map(str::to_string),
            part: Some(part(&context, "status", raw)?),
            ..Default::default()
        });
    }
    Ok(())
}

/// One Messenger/Instagram `messaging[]` item: keyed by its `mid`, else by entry, sender,
/// time and kind.
fn messaging_event(
    context: &[(&str, Option<&RawValue>)],
    entry_id: Option<&str>,
    entry_time: Option<&Value>,
    raw: &RawValue,
) -> Result<Extracted, ExtractError> {
    let item = value(raw);
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
        fields::str_at(&item, "/recipient/id")
    } else {
        fields::str_at(&item, "/sender/id")
    };
    let event_id = match (kind, fields::str_at(&item, "/message/mid")) {
        ("message", Some(mid)) => Some(mid.to_string()),
        _ => timestamp.and_then(fields::id_text).map(|t| {
            format!(
                "{}#{}#{t}#{kind}",
                entry_id.unwrap_or(""),
                fields::str_at(&item, "/sender/id").unwrap_or("")
            )
        }),
    };
    Ok(Extracted {
        event_id,
        event_type: Some(format!("messaging.{kind}")),
        canonical_type: messaging_canonical(kind),
        occurred_at_ms: unix_guess_ms(timestamp),
        entity: person.map(str::to_string),
        part: Some(part(context, "messaging", raw)?),
        ..Default::default()
    })
}

/// An entry with no message, status or messaging item (template status, account updates,
/// Instagram comments, Page feed…): the entry is the event, named after its first change's
/// field.
fn whole_entry_event(
    object: Option<&RawValue>,
    entry: &Entry<'_>,
    entry_id: Option<String>,
    entry_time: Option<&Value>,
) -> Result<Extracted, ExtractError> {
    let field = entry
        .changes
        .iter()
        .find_map(|c| c.field.map(value))
        .and_then(|f| f.as_str().map(str::to_string))
        .unwrap_or_else(|| "entry".into());
    let event_id = match (&entry_id, entry_time.and_then(fields::id_text)) {
        (Some(id), Some(time)) => Some(format!("{id}#{time}")),
        _ => None,
    };
    Ok(Extracted {
        event_id,
        event_type: Some(field),
        occurred_at_ms: unix_guess_ms(entry_time),
        entity: entry_id,
        part: Some(part(&[("object", object)], "entry", entry.raw)?),
        ..Default::default()
    })
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

    /// The entries are sliced and their items counted before any item is parsed.
    fn extract_at_most(
        &self,
        req: &InboundRequest<'_>,
        limit: usize,
    ) -> Result<Vec<Extracted>, ExtractFailure> {
        let notification: Notification<'_> = serde_json::from_slice(req.body).map_err(|_| {
            ExtractError("meta notification is not a JSON object with an \"entry\" array".into())
        })?;
        let entries = notification
            .entry
            .iter()
            .map(|raw| Entry::slice(raw))
            .collect::<Result<Vec<_>, _>>()?;
        super::at_most(entries.iter().map(Entry::event_count).sum(), limit)?;
        let mut events = Vec::new();
        for entry in &entries {
            entry_events(notification.object, entry, &mut events)?;
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

/// How the provider suite (`suite.rs`) signs for Meta: `X-Hub-Signature-256: sha256=<hex>`,
/// HMAC-SHA256 of the body keyed with the App Secret.
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::suite::{Carrier, Case, Signed, TestKey};
    fn sign(key: Option<&TestKey>, _now_ms: i64) -> Signed {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","messages":[{"from":"16315551181","id":"wamid.ABGG","timestamp":"1767225600","type":"text","text":{"body":"hi"}}],"statuses":[{"id":"wamid.ABGF","status":"read","timestamp":"1767225600","recipient_id":"16315551181"}]}}]}]}"#;
        let tag = key
            .expect("meta is keyed")
            .hmac(HmacAlgorithm::Sha256, &[body]);
        let value = format!("sha256={}", hex::encode(tag));
        Signed::post(Headers::from_iter([(SIGNATURE_256, value)]), *body)
    }
    Case {
        garbled: |s| {
            ["3b208c28", "sha1=3b208c28", "sha256=zz", "sha256="]
                .map(|v| s.with_header(SIGNATURE_256, v))
                .to_vec()
        },
        ..Case::new(
            "meta",
            "meta_sha256",
            || {
                TestKey::pair(
                    "0123456789abcdef0123456789abcdef",
                    "fedcba9876543210fedcba9876543210",
                )
            },
            sign,
            Carrier::header(SIGNATURE_256),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::crypto::testkit::{self, request, secret};

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
        let message = &v.body[v.body.find(r#"{"from""#).unwrap()..v.body.find("]},").unwrap()];
        let part = format!(
            r#"{{"object":"whatsapp_business_account","entry_id":"102290129340398","field":"messages","messaging_product":"whatsapp","message":{message}}}"#
        );
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some("wamid.ABGGFlA5Fpa".into()),
                event_type: Some("messages".into()),
                canonical_type: Some(canonical::CHAT_MESSAGE),
                occurred_at_ms: Some(1_504_902_988_000),
                entity: Some("16315551181".into()),
                part: Some(part.into_bytes()),
                ..Default::default()
            }]
        );
        assert!(message.ends_with(r#""type":"text"}"#), "{message}");
        // The part keeps Meta's escapes byte for byte.
        assert!(String::from_utf8(got[0].part.clone().unwrap())
            .unwrap()
            .contains(r"h\u00e9llo \ud83d\ude00"));
    }

    const ENTRY_MESSAGES: &str = concat!(
        r#"{"id":"WABA1","changes":[{"value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"P1"},"#,
        r#""contacts":[{"profile":{"name":"Ann"},"wa_id":"111"},{"profile":{"name":"Zed"},"wa_id":"999"}],"#,
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
        // Each part is its own item beside its entry's context, every slice byte-exact.
        let head = r#"{"object":"whatsapp_business_account","entry_id":"WABA1","field":"messages","messaging_product":"whatsapp""#;
        let parts = [
            format!(
                r#"{head},"metadata":{{"phone_number_id":"P1"}},"contact":{},"message":{}}}"#,
                slice(
                    ENTRY_MESSAGES,
                    r#"{"profile":{"name":"Ann"}"#,
                    r#""wa_id":"111"}"#
                ),
                slice(ENTRY_MESSAGES, r#"{"from":"111""#, r#""caf\u00e9"}}"#)
            ),
            format!(
                r#"{head},"metadata":{{"phone_number_id":"P1"}},"message":{}}}"#,
                slice(ENTRY_MESSAGES, r#"{"from":"222""#, r#""hi"}}"#)
            ),
            format!(
                r#"{head},"status":{}}}"#,
                slice(ENTRY_STATUSES, r#"{"id":"wamid.C","status":"sent""#, "}")
            ),
            format!(
                r#"{head},"status":{}}}"#,
                slice(ENTRY_STATUSES, r#"{"id":"wamid.C","status":"read""#, "}")
            ),
            format!(
                r#"{head},"status":{}}}"#,
                slice(ENTRY_STATUSES, r#"{"id":"wamid.D""#, "}]}")
            ),
            format!(r#"{{"object":"whatsapp_business_account","entry":{ENTRY_TEMPLATE}}}"#),
        ];
        for (event, want) in got.iter().zip(&parts) {
            let text = std::str::from_utf8(event.part.as_deref().unwrap()).unwrap();
            assert_eq!(text, want, "{:?}", event.event_id);
            serde_json::from_str::<Value>(text).expect("a part is JSON");
        }
        assert!(parts[0].contains(r"caf\u00e9"));
        // The parts together: the items once each, plus bounded context per event.
        let total: usize = got.iter().map(|e| e.part.as_ref().unwrap().len()).sum();
        assert!(total <= body.len() + got.len() * MAX_PART_OVERHEAD);
    }

    /// `text` from the first `start` to the first `end` after it, both included.
    fn slice<'t>(text: &'t str, start: &str, end: &str) -> &'t str {
        let at = text.find(start).expect("start in text");
        let to = at + text[at..].find(end).expect("end after start") + end.len();
        &text[at..to]
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
        let item = slice(body, r#"{"sender":{"id":"PSID1"}"#, r#""hello"}}"#);
        assert_eq!(
            std::str::from_utf8(got[0].part.as_deref().unwrap()).unwrap(),
            format!(r#"{{"object":"page","entry_id":"PAGE1","messaging":{item}}}"#)
        );
        let parts: std::collections::HashSet<_> = got.iter().map(|e| &e.part).collect();
        assert_eq!(parts.len(), got.len(), "each item is its own part");
    }

    /// A WhatsApp notification of one entry whose messages are `ids`, from sender `111`
    /// (`contacts` holds it) or `222` (it does not), in `entry_time`.
    fn whatsapp_entry(ids: &[&str], entry_time: u64) -> String {
        let messages: Vec<String> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let from = if i % 2 == 0 { "111" } else { "222" };
                format!(
                    r#"{{"from":"{from}","id":"{id}","timestamp":"1767225600","type":"text","text":{{"body":"m\u00e9ssage {id}"}}}}"#
                )
            })
            .collect();
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"WABA1","time":{entry_time},"changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550001111","phone_number_id":"P1"}},"contacts":[{{"profile":{{"name":"Ann"}},"wa_id":"111"}}],"messages":[{}]}},"field":"messages"}}]}}]}}"#,
            messages.join(",")
        )
    }

    fn parts_by_id(body: &str) -> std::collections::HashMap<String, Vec<u8>> {
        meta(vec![secret("k", SECRET)])
            .extract(&request(&Headers::new(), body.as_bytes()))
            .unwrap()
            .into_iter()
            .map(|e| (e.event_id.unwrap(), e.part.unwrap()))
            .collect()
    }

    #[test]
    fn one_message_in_differently_composed_batches_has_the_same_part() {
        let alone = parts_by_id(&whatsapp_entry(&["wamid.X"], 1_767_225_600));
        // Other siblings before and after it, another entry time: the same bytes.
        let crowded = parts_by_id(&whatsapp_entry(
            &["wamid.A", "wamid.B", "wamid.X", "wamid.C"],
            1_767_225_700,
        ));
        assert_eq!(alone["wamid.X"], crowded["wamid.X"]);
        let part: Value = serde_json::from_slice(&alone["wamid.X"]).unwrap();
        assert_eq!(part["metadata"]["phone_number_id"], "P1");
        assert_eq!(part["contact"]["profile"]["name"], "Ann");
        assert_eq!(part["message"]["id"], "wamid.X");
        assert!(part.get("entry").is_none() && part.get("time").is_none());
        // A sender without a contacts item gets no contact.
        let second: Value = serde_json::from_slice(&crowded["wamid.B"]).unwrap();
        assert!(second.get("contact").is_none(), "{second}");
    }

    #[test]
    fn a_large_entry_splits_in_linear_bytes_and_time() {
        let ids: Vec<String> = (0..2_000).map(|i| format!("wamid.{i:05}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let body = whatsapp_entry(&ids, 1_767_225_600);
        let started = std::time::Instant::now();
        let got = meta(vec![secret("k", SECRET)])
            .extract(&request(&Headers::new(), body.as_bytes()))
            .unwrap();
        let took = started.elapsed();
        assert_eq!(got.len(), 2_000);
        let total: usize = got.iter().map(|e| e.part.as_ref().unwrap().len()).sum();
        // Each message once, plus its bounded context: here under 3× the body. Each event
        // carrying its whole entry (the quadratic split) would be 2,000×.
        assert!(
            total <= body.len() + got.len() * MAX_PART_OVERHEAD,
            "{total} bytes of parts for a {}-byte body",
            body.len()
        );
        assert!(total <= 4 * body.len(), "{total} vs {}", body.len());
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn the_event_count_is_checked_before_the_items_are_extracted() {
        let p = meta(vec![secret("k", SECRET)]);
        let h = Headers::new();
        let body = whatsapp_entry(&["wamid.A", "wamid.B", "wamid.C"], 1);
        assert_eq!(
            p.extract_at_most(&request(&h, body.as_bytes()), 3)
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            p.extract_at_most(&request(&h, body.as_bytes()), 2),
            Err(ExtractFailure::TooManyEvents { count: 3, limit: 2 })
        );
        // Statuses, messaging items and item-less entries count too.
        let mixed = format!(
            r#"{{"object":"page","entry":[{ENTRY_STATUSES},{ENTRY_TEMPLATE},{{"id":"PAGE1","messaging":[{{"sender":{{"id":"1"}},"timestamp":1,"read":{{}}}}]}}]}}"#
        );
        assert_eq!(
            p.extract_at_most(&request(&h, mixed.as_bytes()), 5)
                .unwrap()
                .len(),
            5
        );
        assert_eq!(
            p.extract_at_most(&request(&h, mixed.as_bytes()), 4),
            Err(ExtractFailure::TooManyEvents { count: 5, limit: 4 })
        );
    }

    #[test]
    fn context_too_large_to_copy_per_event_is_refused() {
        let big = "9".repeat(MAX_CONTEXT_BYTES);
        let body =
            whatsapp_entry(&["wamid.A", "wamid.B"], 1).replace("\"P1\"", &format!("\"{big}\""));
        let err = meta(vec![secret("k", SECRET)])
            .extract(&request(&Headers::new(), body.as_bytes()))
            .unwrap_err();
        assert!(err.0.contains(&MAX_CONTEXT_BYTES.to_string()), "{err}");
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
