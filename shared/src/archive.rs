//! The raw archive: every verified request of an archiving source, byte-exact, with its
//! headers (credentials left out) and the verification result, stored once in the blob store
//! under `requests/<sha256 of the document>` and linked from every event split from it
//! (`Envelope::request_ref`). The document holds only what the request is, not when or from
//! where it came (those are on each event's record): a captured request replayed a thousand
//! times is the same document, stored once, so a sender cannot turn replays into storage. An auditor's "show us exactly what the provider sent"
//! is answered from here, `inlet verify --archived` re-checks a signature offline, and
//! `inlet redeliver` rebuilds events from it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::envelope::{self, BodyEncoding, VerifiedBy};
use crate::ports::blobs::{get_by_key, BlobError, BlobKind, BlobRef, BlobStore};
use crate::request::Headers;

pub const ARCHIVE_VERSION: u32 = 1;

/// A header value longer than this is not archived (API Gateway takes 10 KiB of headers in
/// all; a longer value is noise an attacker chose).
const MAX_ARCHIVED_HEADER_BYTES: usize = 8 * 1024;

/// Header names that carry a credential rather than a signature over the request: never
/// archived, so the bucket holds nothing that could authenticate as a provider. (A token
/// scheme's request cannot be re-verified from the archive for that reason.)
pub fn is_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || ["token", "secret", "password", "api-key", "apikey"]
        .iter()
        .any(|part| name.contains(part))
}

/// One verified request as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRequest {
    pub v: u32,
    pub source: String,
    pub provider: String,
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
    /// Every header but credentials ([`is_credential`]) and overlong values.
    pub headers: BTreeMap<String, String>,
    pub verified: VerifiedBy,
    /// Events the request carried.
    pub events: usize,
    /// The body byte-exact: UTF-8 text when it is, else base64.
    pub body: String,
    pub body_encoding: BodyEncoding,
    pub body_sha256: String,
}

/// What a request to archive is made of (ingest's view of it).
pub struct Request<'a> {
    pub source: &'a str,
    pub provider: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub headers: &'a Headers,
    pub verified: VerifiedBy,
    pub events: usize,
    pub body: &'a [u8],
    pub body_sha256: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Blob(#[from] BlobError),
    #[error("archived request {key} is not an archive document: {error}")]
    Format { key: String, error: String },
}

impl ArchivedRequest {
    pub fn new(r: &Request<'_>) -> Self {
        let headers = r
            .headers
            .iter()
            .filter(|(k, v)| !is_credential(k) && v.len() <= MAX_ARCHIVED_HEADER_BYTES)
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let (body, body_encoding) =
            envelope::encode_body(r.body, envelope::body_field_budget(r.body.len()));
        Self {
            v: ARCHIVE_VERSION,
            source: r.source.to_owned(),
            provider: r.provider.to_owned(),
            method: r.method.to_owned(),
            path: r.path.to_owned(),
            query: r.query.to_vec(),
            headers,
            verified: r.verified.clone(),
            events: r.events,
            body,
            body_encoding,
            body_sha256: r.body_sha256.to_owned(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain strings and maps: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The request's body, checked against its digest.
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        let bytes = match self.body_encoding {
            BodyEncoding::Utf8 => self.body.as_bytes().to_vec(),
            BodyEncoding::Base64 => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(&self.body)
                    .map_err(|_| "the archived body is not valid base64".to_owned())?
            }
        };
        if envelope::sha256_hex(&bytes) != self.body_sha256 {
            return Err("the archived body does not match its digest".into());
        }
        Ok(bytes)
    }

    /// The headers as a request carries them.
    pub fn request_headers(&self) -> Headers {
        Headers::from_iter(self.headers.iter().map(|(k, v)| (k.as_str(), v.clone())))
    }
}

/// The document's bytes and the reference every event of the request will carry. The key
/// is the document's digest, so what a reader gets back is checked against it.
pub fn prepare(doc: &ArchivedRequest) -> (BlobRef, Vec<u8>) {
    let bytes = doc.to_bytes();
    let sha256 = envelope::sha256_hex(&bytes);
    let r = BlobRef {
        key: BlobRef::key_for(BlobKind::Request, &sha256),
        sha256,
        len: bytes.len() as u64,
    };
    (r, bytes)
}

/// The request archived under `key` when only the key is known (a ledger record keeps the
/// key), with its full reference; checked against the digest the key is.
pub async fn read_key(
    store: &dyn BlobStore,
    key: &str,
) -> Result<(BlobRef, ArchivedRequest), ArchiveError> {
    if !key.starts_with(BlobKind::Request.prefix()) {
        return Err(BlobError::BadKey(key.to_owned()).into());
    }
    let (r, bytes) = get_by_key(store, key).await?;
    let doc = serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Format {
        key: key.to_owned(),
        error: e.to_string(),
    })?;
    Ok((r, doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_never_archived_and_signatures_are() {
        for name in [
            "Authorization",
            "cookie",
            "x-telegram-bot-api-secret-token",
            "x-gitlab-token",
            "x-api-key",
        ] {
            assert!(is_credential(name), "{name}");
        }
        for name in [
            "stripe-signature",
            "x-hub-signature-256",
            "x-twilio-signature",
            "webhook-signature",
            "content-type",
        ] {
            assert!(!is_credential(name), "{name}");
        }
    }

    #[test]
    fn a_document_round_trips_byte_exact_and_drops_credentials() {
        let headers = Headers::from_iter([
            ("stripe-signature", "t=1,v1=ab".to_owned()),
            ("authorization", "Bearer s3cr3t".to_owned()),
            ("x-long", "x".repeat(MAX_ARCHIVED_HEADER_BYTES + 1)),
        ]);
        let body = [0u8, 159, 146, 150, b'{'];
        let sha = envelope::sha256_hex(&body);
        let doc = ArchivedRequest::new(&Request {
            source: "s",
            provider: "stripe",
            method: "POST",
            path: "/webhooks/s",
            query: &[],
            headers: &headers,
            verified: VerifiedBy {
                scheme: "stripe_v1".into(),
                key_id: Some("0".into()),
            },
            events: 1,
            body: &body,
            body_sha256: &sha,
        });
        let (r, bytes) = prepare(&doc);
        assert_eq!(r.key, format!("requests/{}", envelope::sha256_hex(&bytes)));
        let back: ArchivedRequest = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(back.body_bytes().expect("body"), body);
        assert_eq!(
            back.headers.keys().collect::<Vec<_>>(),
            vec!["stripe-signature"]
        );
        assert!(!String::from_utf8_lossy(&bytes).contains("s3cr3t"));
    }
}
