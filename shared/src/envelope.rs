//! The envelope: one JSON document per event on the queue, the same for webhooks and polls.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const ENVELOPE_VERSION: u32 = 1;

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
pub const BASE_HEADER_ALLOW_LIST: &[&str] = &[
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

pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

pub fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// An RFC 3339 time → unix ms, applying its UTC offset (`…+02:00`, with or without a
/// fraction); a time without a zone is UTC. See
/// [`crate::providers::fields::rfc3339_ms_utc_if_unzoned`].
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    crate::providers::fields::rfc3339_ms_utc_if_unzoned(s)
}

/// `source#event_id`, or `source#sha256:<body hash>` when the provider gives no id.
pub fn dedupe_key(source: &str, event_id: Option<&str>, body_sha256: &str) -> String {
    match event_id {
        Some(id) => format!("{source}#{id}"),
        None => format!("{source}#sha256:{body_sha256}"),
    }
}

pub fn encode_body(body: &[u8]) -> (String, BodyEncoding) {
    match std::str::from_utf8(body) {
        Ok(s) => (s.to_string(), BodyEncoding::Utf8),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(body),
            BodyEncoding::Base64,
        ),
    }
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
        parse_rfc3339_ms(&self.received_at).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body: &[u8]) -> Envelope {
        let (b, enc) = encode_body(body);
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
            amount: None,
            currency: None,
            occurred_at: None,
            received_at: rfc3339_ms(1_767_225_600_123),
            verified: VerifiedBy {
                scheme: "hmac".into(),
                key_id: None,
            },
            headers: BTreeMap::new(),
            body: b,
            body_encoding: enc,
            body_sha256: sha256_hex(body),
            part: None,
            replay: None,
        }
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
