//! Blobs: bytes too large for a queue message or a bus entry (a claim check), and the raw
//! requests the archive keeps. Keys are content addresses (`<kind>/<sha256 hex>`), so a
//! blob never changes once written: a put of the same key writes the same bytes again, a
//! writer that crashed mid-way is redone by its retry, and a reader checks what it read
//! against the digest its reference carries before anything is dispatched. Writes are whole
//! (a reader never sees half a blob); what no message came to reference is removed by the
//! store's retention (S3 lifecycle; `FileBlobs::sweep`, which `inlet dev` runs hourly),
//! never by the event path.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store backend: {0}")]
    Backend(String),
    #[error("no blob {0} (expired, or never written)")]
    NotFound(String),
    /// What was read is not what the reference names: never dispatched.
    #[error("blob {key} does not match its reference: SHA-256 {found}, {len} bytes; expected {expected}")]
    Mismatch {
        key: String,
        expected: String,
        found: String,
        len: usize,
    },
    #[error("blob key {0:?} is not a blob key (<kind>/<64 hex digits>)")]
    BadKey(String),
}

/// Where a blob is and what it must hash to: what a message carries instead of the bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobRef {
    pub key: String,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
    pub len: u64,
}

impl BlobRef {
    /// The key a blob of `kind` with this digest is stored under.
    pub fn key_for(kind: BlobKind, sha256: &str) -> String {
        format!("{}/{sha256}", kind.prefix())
    }
}

/// The kinds of blob, each a key prefix (and so an S3 lifecycle filter of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// An event's body that did not fit the message that carries the event.
    Body,
    /// A verified request, byte-exact, as the archive keeps it.
    Request,
}

impl BlobKind {
    pub fn prefix(self) -> &'static str {
        match self {
            BlobKind::Body => "bodies",
            BlobKind::Request => "requests",
        }
    }
}

/// Whether `key` is one this port writes: a known kind, `/`, 64 lower-case hex digits. The
/// embedded store turns keys into file names, so nothing else may reach it.
pub fn valid_key(key: &str) -> bool {
    let Some((kind, digest)) = key.split_once('/') else {
        return false;
    };
    [BlobKind::Body, BlobKind::Request]
        .iter()
        .any(|k| k.prefix() == kind)
        && digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Store `bytes` under `key`, whole or not at all. Idempotent: the key is the bytes'
    /// digest, so storing it again changes nothing a reader can see.
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError>;

    /// The bytes under `key` (`NotFound` when there are none).
    async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError>;
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Store `bytes` as a blob of `kind`, keyed by their digest; the reference a message carries.
pub async fn put_blob(
    store: &dyn BlobStore,
    kind: BlobKind,
    bytes: &[u8],
) -> Result<BlobRef, BlobError> {
    let sha256 = sha256_hex(bytes);
    let key = BlobRef::key_for(kind, &sha256);
    store.put(&key, bytes).await?;
    Ok(BlobRef {
        key,
        sha256,
        len: bytes.len() as u64,
    })
}

/// The bytes `r` names, checked against its digest and length.
pub async fn get_blob(store: &dyn BlobStore, r: &BlobRef) -> Result<Vec<u8>, BlobError> {
    let (found, bytes) = get_by_key(store, &r.key).await?;
    if found.sha256 != r.sha256 || found.len != r.len {
        return Err(BlobError::Mismatch {
            key: r.key.clone(),
            expected: r.sha256.clone(),
            found: found.sha256,
            len: bytes.len(),
        });
    }
    Ok(bytes)
}

/// The bytes under `key` and their reference, when only the key is known (a ledger record
/// keeps the key): a key is its bytes' digest, so they are checked against it all the same.
pub async fn get_by_key(store: &dyn BlobStore, key: &str) -> Result<(BlobRef, Vec<u8>), BlobError> {
    let digest = key
        .split_once('/')
        .map(|(_, digest)| digest)
        .filter(|_| valid_key(key))
        .ok_or_else(|| BlobError::BadKey(key.to_owned()))?;
    let bytes = store.get(key).await?;
    let found = sha256_hex(&bytes);
    if found != digest {
        return Err(BlobError::Mismatch {
            key: key.to_owned(),
            expected: digest.to_owned(),
            found,
            len: bytes.len(),
        });
    }
    let r = BlobRef {
        key: key.to_owned(),
        sha256: found,
        len: bytes.len() as u64,
    };
    Ok((r, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_known_kind_and_a_whole_lower_case_digest_is_a_key() {
        let digest = "a".repeat(64);
        assert!(valid_key(&format!("bodies/{digest}")));
        assert!(valid_key(&format!("requests/{digest}")));
        for bad in [
            format!("other/{digest}"),
            format!("bodies/{}", "A".repeat(64)),
            format!("bodies/{}", "a".repeat(63)),
            format!("bodies/../{}", "a".repeat(61)),
            format!("bodies/{digest}/x"),
            "bodies".to_owned(),
            String::new(),
        ] {
            assert!(!valid_key(&bad), "{bad:?}");
        }
    }
}
