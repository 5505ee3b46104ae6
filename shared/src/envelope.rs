//! The envelope: one JSON document per event on the queue, the same for webhooks and polls.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub(crate) const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Webhook,
    Poll,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Webhook => "webhook",
            Via::Poll => "poll",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedBy {
    pub scheme: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    Utf8,
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub source: String,
    pub provider: String,
    pub via: Via,
    pub dedupe_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_event_id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// The payment, refund or order the event reports on (Stripe's `data.object.id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// RFC 3339, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// RFC 3339, UTC, milliseconds.
    pub received_at: String,
    pub verified: VerifiedBy,
    /// The address a webhook came from, as API Gateway (or `inlet dev`) saw the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_ip: Option<String>,
    /// Allow-listed request headers only: never signatures or authorization.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The raw body, byte-exact: UTF-8 text when it is valid UTF-8, else base64.
    pub body: String,
    pub body_encoding: BodyEncoding,
    pub body_sha256: String,
    /// Set when the request carried several events: `body` is then this event's slice and
    /// `request_sha256` ties it back to the whole request as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PartOf>,
    /// Set by `inlet replay --force`: dispatch this event again even though it was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
}

/// A replay an operator asked for (`inlet replay --force`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// RFC 3339, UTC: when the replay was sent.
    pub at: String,
    /// Dispatch again even when the ledger says the event was dispatched.
    pub forced: bool,
}

impl Envelope {
    pub fn forced_replay(&self) -> bool {
        self.replay.as_ref().is_some_and(|r| r.forced)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartOf {
    pub index: usize,
    pub count: usize,
    pub request_sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported envelope version {0}")]
    Version(u32),
    #[error("envelope body is not valid base64")]
    Body,
    #[error("envelope body does not match body_sha256")]
    Digest,
}

/// Headers every envelope keeps when present: content metadata and providers' delivery ids.
pub(crate) const BASE_HEADER_ALLOW_LIST: &[&str] = &[
    "content-type",
    "user-agent",
    "x-github-event",
    "x-github-delivery",
    "x-github-hook-id",
    "webhook-id",
    "webhook-timestamp",
    "svix-id",
    "svix-timestamp",
];

/// One queue message: SQS's limit, which the embedded queue enforces too.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Ids, types and entities come from the sender's body. Longer than this, one is carried as
/// its digest, so an envelope and a ledger key (DynamoDB: 2,048 bytes) stay bounded.
pub(crate) const MAX_FIELD_BYTES: usize = 256;

/// A header value longer than this is not kept in the envelope (it is never needed to
/// dispatch; the signature was checked on the request itself).
pub(crate) const MAX_KEPT_HEADER_BYTES: usize = 1024;

/// At most this many `keep_headers` per source, each name at most [`MAX_HEADER_NAME_BYTES`].
pub(crate) const MAX_KEEP_HEADERS: usize = 16;
pub(crate) const MAX_HEADER_NAME_BYTES: usize = 64;

/// The largest envelope a body of `max_body_bytes` can make, at worst: the body as base64,
/// every kept header at its longest with every byte escaped, every field at its longest
/// (a control character escapes to six bytes), and the fixed fields.
pub(crate) fn max_envelope_bytes(max_body_bytes: usize) -> usize {
    let headers = (BASE_HEADER_ALLOW_LIST.len() + MAX_KEEP_HEADERS)
        * (MAX_HEADER_NAME_BYTES + 2 * MAX_KEPT_HEADER_BYTES + 8);
    // provider_event_id, type, entity, and the id inside dedupe_key.
    let fields = 4 * 6 * MAX_FIELD_BYTES;
    // Source, provider, times, scheme, key id, digests, part and the field names.
    let fixed = 4096;
    body_field_budget(max_body_bytes) + headers + fields + fixed
}

/// `text`, or its digest when it is longer than [`MAX_FIELD_BYTES`].
pub(crate) fn bounded_field(text: String) -> String {
    if text.len() <= MAX_FIELD_BYTES {
        text
    } else {
        format!("sha256:{}", sha256_hex(text.as_bytes()))
    }
}

pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// `source#event_id`, or `source#sha256:<body hash>` when the provider gives no id.
pub fn dedupe_key(source: &str, event_id: Option<&str>, body_sha256: &str) -> String {
    match event_id {
        Some(id) if id.len() > MAX_FIELD_BYTES => {
            format!("{source}#{}", bounded_field(id.to_string()))
        }
        Some(id) => format!("{source}#{id}"),
        None => format!("{source}#sha256:{body_sha256}"),
    }
}

/// The most a body of `max_body_bytes` can take in an envelope: its base64 form. A text
/// body is kept as text only when its JSON-escaped form is no longer than this, so every
/// body the config allows has a form that fits.
pub(crate) fn body_field_budget(max_body_bytes: usize) -> usize {
    max_body_bytes.div_ceil(3) * 4
}

/// The body as the envelope carries it: UTF-8 text where that is readable and fits
/// `text_budget` once JSON-escaped, else base64. Escaping can multiply a body (a backslash
/// becomes two bytes, a control byte six), and SQS refuses U+FFFE and U+FFFF, which JSON
/// does not escape: such bodies go as base64, which is 4/3 of the bytes at worst.
pub(crate) fn encode_body(body: &[u8], text_budget: usize) -> (String, BodyEncoding) {
    match std::str::from_utf8(body) {
        Ok(text) if escaped_len_if_queueable(body).is_some_and(|n| n <= text_budget) => {
            (text.to_string(), BodyEncoding::Utf8)
        }
        _ => (
            base64::engine::general_purpose::STANDARD.encode(body),
            BodyEncoding::Base64,
        ),
    }
}

/// The length of valid UTF-8 `text` once serde_json escapes it (without the quotes), or
/// `None` if it holds a character SQS refuses that escaping leaves as it is.
fn escaped_len_if_queueable(text: &[u8]) -> Option<usize> {
    let mut extra = 0;
    for (i, &b) in text.iter().enumerate() {
        extra += match b {
            b'"' | b'\\' | b'\x08' | b'\x0c' | b'\n' | b'\r' | b'\t' => 1,
            0..=0x1f => 5,
            // U+FFFE and U+FFFF are EF BF BE / EF BF BF.
            0xEF if text.get(i + 1) == Some(&0xBF)
                && matches!(text.get(i + 2), Some(0xBE | 0xBF)) =>
            {
                return None;
            }
            _ => 0,
        };
    }
    Some(text.len() + extra)
}

impl Envelope {
    pub fn to_json(&self) -> String {
        // Serialising plain strings and maps cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decode and check an envelope from the queue: version, body encoding and digest, so a
    /// corrupted message is refused rather than dispatched.
    pub fn from_json(s: &str) -> Result<Self, EnvelopeError> {
        let env: Envelope = serde_json::from_str(s)?;
        if env.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(env.v));
        }
        // A text body is hashed in place: copying a large body only to hash it cost as much
        // as the hash.
        let digest = match env.body_encoding {
            BodyEncoding::Utf8 => sha256_hex(env.body.as_bytes()),
            BodyEncoding::Base64 => sha256_hex(&env.body_bytes()?),
        };
        if digest != env.body_sha256 {
            return Err(EnvelopeError::Digest);
        }
        Ok(env)
    }

    pub fn body_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        match self.body_encoding {
            BodyEncoding::Utf8 => Ok(self.body.as_bytes().to_vec()),
            BodyEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&self.body)
                .map_err(|_| EnvelopeError::Body),
        }
    }

    pub fn received_at_ms(&self) -> i64 {
        crate::time::rfc3339_ms_utc_if_unzoned(&self.received_at).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body: &[u8]) -> Envelope {
        let (b, enc) = encode_body(body, body_field_budget(body.len()));
        Envelope {
            v: ENVELOPE_VERSION,
            source: "s".into(),
            provider: "hmac".into(),
            via: Via::Webhook,
            dedupe_key: dedupe_key("s", None, &sha256_hex(body)),
            provider_event_id: None,
            event_type: None,
            canonical_type: None,
            entity: None,
            object_id: None,
            amount: None,
            currency: None,
            occurred_at: None,
            received_at: crate::time::format_rfc3339_ms(1_767_225_600_123),
            verified: VerifiedBy {
                scheme: "hmac".into(),
                key_id: None,
            },
            caller_ip: None,
            headers: BTreeMap::new(),
            body: b,
            body_encoding: enc,
            body_sha256: sha256_hex(body),
            part: None,
            replay: None,
        }
    }

    /// The bodies that grow most: escaped backslashes and quotes double, other control bytes
    /// take six, U+FFFF must not reach SQS unescaped, and non-UTF-8 goes as base64.
    fn worst_bodies(len: usize) -> Vec<Vec<u8>> {
        let fill = |unit: &[u8]| {
            let mut b = unit.repeat(len / unit.len() + 1);
            b.truncate(len);
            b
        };
        vec![
            fill(b"\\"),
            fill(b"\""),
            fill(b"\x01"),
            fill(b"\n"),
            fill(b"\xff"),
            fill("\u{FFFF}".as_bytes()),
            fill(b"{\"a\":\"b\"}"),
        ]
    }

    #[test]
    fn every_body_the_config_allows_fits_one_queue_message_with_every_field_at_its_longest() {
        let max = crate::config::MAX_BODY_BYTES;
        assert!(max_envelope_bytes(max) <= MAX_MESSAGE_BYTES);
        for body in worst_bodies(max) {
            let (b, enc) = encode_body(&body, body_field_budget(max));
            let long = |c: char| c.to_string().repeat(MAX_FIELD_BYTES);
            let mut env = sample(b"");
            (env.body, env.body_encoding, env.body_sha256) = (b, enc, sha256_hex(&body));
            env.dedupe_key = dedupe_key(&"s".repeat(64), Some(&long('\u{1}')), "");
            env.provider_event_id = Some(long('\u{1}'));
            env.event_type = Some(long('\u{1}'));
            env.entity = Some(long('\u{1}'));
            for n in 0..BASE_HEADER_ALLOW_LIST.len() + MAX_KEEP_HEADERS {
                env.headers.insert(
                    format!("{n:0>width$}", width = MAX_HEADER_NAME_BYTES),
                    "\"".repeat(MAX_KEPT_HEADER_BYTES),
                );
            }
            let json = env.to_json();
            assert!(
                json.len() <= max_envelope_bytes(max),
                "{} bytes, bound {}",
                json.len(),
                max_envelope_bytes(max)
            );
            let back = Envelope::from_json(&json).expect("decodes");
            assert_eq!(back.body_bytes().expect("bytes"), body);
        }
    }

    #[test]
    fn text_bodies_stay_text_unless_escaping_passes_the_budget() {
        let json = br#"{"id":"evt_1","note":"line
break"}"#;
        assert_eq!(encode_body(json, 1000).1, BodyEncoding::Utf8);
        assert_eq!(encode_body(json, json.len() - 1).1, BodyEncoding::Base64);
        // U+FFFE/U+FFFF are valid UTF-8 but SQS refuses them and JSON leaves them as they are.
        assert_eq!(
            encode_body("a\u{FFFE}".as_bytes(), 1000).1,
            BodyEncoding::Base64
        );
        assert_eq!(
            encode_body("a\u{FFFD}".as_bytes(), 1000).1,
            BodyEncoding::Utf8
        );
    }

    #[test]
    fn the_escaped_length_is_what_serde_json_writes() {
        let mut every_byte: Vec<u8> = (0u8..0x80).collect();
        every_byte.extend_from_slice("é€😀\u{FFFD}".as_bytes());
        for body in worst_bodies(300).into_iter().chain([every_byte]) {
            let Ok(text) = std::str::from_utf8(&body) else {
                continue;
            };
            let written = serde_json::to_string(text).expect("string").len() - 2;
            match escaped_len_if_queueable(&body) {
                Some(n) => assert_eq!(n, written, "{text:?}"),
                None => assert!(text.contains('\u{FFFF}')),
            }
        }
    }

    #[test]
    fn long_ids_are_carried_as_their_digest() {
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        let key = dedupe_key("s", Some(&long), "");
        assert_eq!(key, format!("s#sha256:{}", sha256_hex(long.as_bytes())));
        assert_eq!(bounded_field("short".into()), "short");
        assert_eq!(dedupe_key("s", Some("evt_1"), ""), "s#evt_1");
    }

    #[test]
    fn binary_body_round_trips_byte_exact() {
        let body = [0u8, 159, 146, 150, b'\r', b'\n'];
        let e = sample(&body);
        assert_eq!(e.body_encoding, BodyEncoding::Base64);
        let back = Envelope::from_json(&e.to_json()).expect("decodes");
        assert_eq!(back.body_bytes().expect("bytes"), body);
        assert_eq!(back.received_at_ms(), 1_767_225_600_123);
    }

    #[test]
    fn text_body_with_crlf_and_escapes_is_kept_verbatim() {
        let body = br#"{"t":"h\u00e9llo"}"#.to_vec();
        let mut with_crlf = body.clone();
        with_crlf.extend_from_slice(b"\r\n");
        let e = sample(&with_crlf);
        assert_eq!(e.body_encoding, BodyEncoding::Utf8);
        let back = Envelope::from_json(&e.to_json()).expect("decodes");
        assert_eq!(back.body_bytes().expect("bytes"), with_crlf);
    }

    #[test]
    fn tampered_envelope_body_is_refused() {
        let mut e = sample(b"{\"a\":1}");
        e.body = "{\"a\":2}".into();
        assert!(matches!(
            Envelope::from_json(&e.to_json()),
            Err(EnvelopeError::Digest)
        ));
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut e = sample(b"x");
        e.v = 9;
        assert!(matches!(
            Envelope::from_json(&e.to_json()),
            Err(EnvelopeError::Version(9))
        ));
    }
}
