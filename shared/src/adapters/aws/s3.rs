//! `BlobStore` on one S3 bucket: a blob is one object, its key the blob key. PutObject is
//! atomic (a reader sees the old object or the new one, never part), and the object carries
//! its SHA-256 as S3's own checksum, so S3 refuses bytes that were damaged on the way in.
//! The bucket (encryption, public access blocked, TLS only, lifecycle) is the template's.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use aws_sdk_s3::Client;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::ports::blobs::valid_key;
use crate::ports::{BlobError, BlobStore};

#[derive(Debug, Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
}

impl S3Blobs {
    /// The bucket through the SDK configuration. An explicit endpoint (an emulator such as
    /// moto on loopback) is addressed path-style: it has no per-bucket host names.
    pub fn from_conf(sdk: &SdkConfig, bucket: impl Into<String>) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        Self {
            client: Client::from_conf(conf),
            bucket: bucket.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

fn backend(operation: &str, err: impl std::error::Error) -> BlobError {
    BlobError::Backend(format!("S3 {operation}: {}", DisplayErrorContext(err)))
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
        if !valid_key(key) {
            return Err(BlobError::BadKey(key.to_owned()));
        }
        let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes));
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(checksum)
            .body(ByteStream::from(bytes.to_vec()))
            .send()
            .await
            .map_err(|e| backend("PutObject", e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        if !valid_key(key) {
            return Err(BlobError::BadKey(key.to_owned()));
        }
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(BlobError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(backend("GetObject", e)),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| BlobError::Backend(format!("S3 GetObject body: {e}")))?;
        Ok(body.into_bytes().to_vec())
    }
}
