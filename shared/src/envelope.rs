//! The envelope: one JSON document per event on the queue, the same for webhooks and polls.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::ports::blobs::{BlobKind, BlobRef};

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
    /// The raw body, byte-exact: UTF-8 text when it is valid UTF-8, else base64. Empty when
    /// the body went to the blob store instead ([`Self::body_ref`]).
    pub body: String,
    pub body_encoding: BodyEncoding,
    pub body_sha256: String,
    /// Where the body is when it was too large to travel inline (a claim check): `body` is
    /// then empty until the worker reads the blob back, checks it and puts it in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_ref: Option<BlobRef>,
    /// The whole request as received, when its source archives (`crate::archive`): the same
    /// for every event split from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ref: Option<BlobRef>,
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
    #[error(
        "envelope body_ref does not name the body's digest (or request_ref is not a request's key)"
    )]
    BodyRef,
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

/// The most an envelope weighs inline when a blob store is at hand; a larger one travels
/// with its body in the store (a claim check). An EventBridge entry takes 256 KiB in all,
/// its Source, DetailType and time included: this leaves them 1 KiB, so every inline
/// envelope fits every target kind.
pub const INLINE_ENVELOPE_BYTES: usize = 256 * 1024 - 1024;

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
    for i in crate::bytescan::special_bytes(text, [b'"', b'\\', 0xEF]) {
        extra += match text[i] {
            b'"' | b'\\' | b'\x08' | b'\x0c' | b'\n' | b'\r' | b'\t' => 1,
            // U+FFFE and U+FFFF are EF BF BE / EF BF BF.
            0xEF if text.get(i + 1) == Some(&0xBF)
                && matches!(text.get(i + 2), Some(0xBE | 0xBF)) =>
            {
                return None;
            }
            0xEF => 0,
            _ => 5,
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
        if let Some(r) = &env.request_ref {
            if r.key != BlobRef::key_for(BlobKind::Request, &r.sha256) {
                return Err(EnvelopeError::BodyRef);
            }
        }
        if let Some(r) = &env.body_ref {
            if r.sha256 != env.body_sha256 || r.key != BlobRef::key_for(BlobKind::Body, &r.sha256) {
                return Err(EnvelopeError::BodyRef);
            }
            if env.body.is_empty() {
                // Claimed: the body is checked against the digest when it is read back.
                return Ok(env);
            }
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

    /// Whether the envelope weighs at most `inline_max` bytes as JSON. The body's escaped
    /// length (a byte scan) plus the most every other field can weigh decides without
    /// serialising; only an envelope near the bound is serialised to be weighed (it is
    /// serialised again when queued).
    fn fits_inline(&self, inline_max: usize) -> bool {
        let body = match self.body_encoding {
            BodyEncoding::Utf8 => {
                escaped_len_if_queueable(self.body.as_bytes()).unwrap_or(usize::MAX)
            }
            BodyEncoding::Base64 => self.body.len(),
        };
        body.saturating_add(max_envelope_bytes(0)) <= inline_max
            || self.to_json().len() <= inline_max
    }

    /// Whether the body is in the blob store and not (yet) in the envelope.
    pub fn is_claimed(&self) -> bool {
        self.body_ref.is_some() && self.body.is_empty()
    }

    /// Move the body out to the blob store when the envelope would weigh more than
    /// `inline_max` bytes: the reference it will be found under (put the body there before
    /// the envelope is queued), or `None` when it stays inline. `len` is the body's length
    /// in bytes.
    pub(crate) fn claim_if_over(&mut self, len: usize, inline_max: usize) -> Option<BlobRef> {
        if self.fits_inline(inline_max) {
            return None;
        }
        let r = BlobRef {
            key: BlobRef::key_for(BlobKind::Body, &self.body_sha256),
            sha256: self.body_sha256.clone(),
            len: len as u64,
        };
        self.body = String::new();
        self.body_encoding = BodyEncoding::Utf8;
        self.body_ref = Some(r.clone());
        Some(r)
    }

    /// [`Self::claim_if_over`] for an envelope built with its body in place: the reference
    /// and the body's bytes to put in the blob store, when it is claimed.
    pub(crate) fn claim_body_if_over(&mut self, inline_max: usize) -> Option<(BlobRef, Vec<u8>)> {
        if self.fits_inline(inline_max) {
            return None;
        }
        let bytes = self.body_bytes().ok()?;
        let r = self.claim_if_over(bytes.len(), inline_max)?;
        Some((r, bytes))
    }

    /// Put a claimed body back in place, as read from the blob store (already checked
    /// against the reference). The reference stays, so a handler can tell it came that way.
    pub(crate) fn restore_body(&mut self, bytes: &[u8]) {
        let (body, encoding) = encode_body(bytes, body_field_budget(bytes.len()));
        self.body = body;
        self.body_encoding = encoding;
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
            body_ref: None,
            request_ref: None,
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

    /// An envelope with every field at its longest, every byte escaped, around `body`.
    fn longest_around(body: &[u8], text_budget: usize) -> Envelope {
        let (b, enc) = encode_body(body, text_budget);
        let long = |c: char| c.to_string().repeat(MAX_FIELD_BYTES);
        let mut env = sample(b"");
        (env.body, env.body_encoding, env.body_sha256) = (b, enc, sha256_hex(body));
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
        env
    }

    #[test]
    fn every_body_the_config_allows_travels_inline_within_the_bound_or_by_reference() {
        let budget = body_field_budget(crate::config::MAX_BODY_BYTES);
        // Around the bound and past a queue message, for the bodies that grow most (a
        // claimed envelope weighs the same whatever the body's size).
        for len in [10_000, 40_000, 200_000, 260_000, 1_100_000] {
            for body in worst_bodies(len) {
                let mut env = longest_around(&body, budget);
                let claimed = env.claim_if_over(body.len(), INLINE_ENVELOPE_BYTES);
                let json = env.to_json();
                assert!(
                    json.len() <= INLINE_ENVELOPE_BYTES,
                    "{len}: {} bytes",
                    json.len()
                );
                let back = Envelope::from_json(&json).expect("decodes");
                match claimed {
                    None => assert_eq!(back.body_bytes().expect("bytes"), body),
                    Some(r) => {
                        assert!(back.is_claimed());
                        assert_eq!(back.body_ref.as_ref(), Some(&r));
                        assert_eq!(
                            (r.sha256.as_str(), r.len),
                            (sha256_hex(&body).as_str(), len as u64)
                        );
                        let mut restored = back;
                        restored.restore_body(&body);
                        let again = Envelope::from_json(&restored.to_json()).expect("decodes");
                        assert_eq!(again.body_bytes().expect("bytes"), body);
                    }
                }
            }
        }
        // A claimed envelope weighs its fields alone, far below what it replaces.
        assert!(max_envelope_bytes(0) < INLINE_ENVELOPE_BYTES / 2);
    }

    #[test]
    fn a_reference_that_does_not_name_the_body_is_refused() {
        let body = vec![b'x'; 300_000];
        let mut env = longest_around(&body, body_field_budget(body.len()));
        assert!(env
            .claim_if_over(body.len(), INLINE_ENVELOPE_BYTES)
            .is_some());
        let mut other = env.clone();
        other.body_sha256 = sha256_hex(b"other");
        assert!(matches!(
            Envelope::from_json(&other.to_json()),
            Err(EnvelopeError::BodyRef)
        ));
        if let Some(r) = env.body_ref.as_mut() {
            r.key = format!("requests/{}", r.sha256);
        }
        assert!(matches!(
            Envelope::from_json(&env.to_json()),
            Err(EnvelopeError::BodyRef)
        ));
        // A small body stays where it is.
        let mut small = sample(b"{}");
        assert!(small.claim_if_over(2, INLINE_ENVELOPE_BYTES).is_none());
        assert!(!small.is_claimed());
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
