//! Key material a request names and the receiver must fetch: PayPal's signing certificate,
//! whose URL comes in `PAYPAL-CERT-URL`. The provider decides what may be fetched (its
//! allow-list, its budget and cache); the fetcher only fetches, and is supplied by the
//! composition root (`bootstrap::supply_cert_fetcher`), so the domain never links an HTTP
//! client.

use async_trait::async_trait;

/// Why a certificate could not be fetched. The text names the URL and the cause, never
/// anything secret (certificate URLs and certificates are public).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CertFetchError(pub String);

/// Loads a certificate (PEM bytes) from an already allow-listed HTTPS URL. The production
/// implementation (`adapters::https`) verifies TLS, follows no redirect, and bounds time
/// and size.
#[async_trait]
pub trait CertFetcher: Send + Sync + std::fmt::Debug {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, CertFetchError>;
}
