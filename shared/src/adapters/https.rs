//! HTTPS fetching of key material a request points at (PayPal's signing certificate). The
//! URL has already passed the provider's allow-list; this adapter adds what makes fetching
//! a caller-chosen URL safe on a hot path: TLS only, no redirects (a redirect could leave
//! the allow-listed host), a short timeout, and a size cap.

use std::time::Duration;

use crate::providers::paypal::CertFetcher;

/// Certificates are a few KiB; anything larger is not one.
const MAX_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct HttpsFetcher {
    client: reqwest_tls::Client,
}

impl HttpsFetcher {
    pub fn new() -> Result<Self, String> {
        reqwest_tls::Client::builder()
            .https_only(true)
            .redirect(reqwest_tls::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(4))
            .build()
            .map(|client| Self { client })
            .map_err(|e| format!("HTTPS client: {e}"))
    }
}

#[async_trait::async_trait]
impl CertFetcher for HttpsFetcher {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(format!("GET {url}: larger than {MAX_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_is_never_fetched() {
        // A listener that would answer anything: the client must not even send.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/cert.pem", listener.local_addr().expect("addr"));
        let fetcher = HttpsFetcher::new().expect("client");
        let err = fetcher.fetch(&url).await.expect_err("http refused");
        assert!(err.contains(&url), "{err}");
        listener.set_nonblocking(true).expect("nonblocking");
        assert!(listener.accept().is_err(), "no connection was made");
    }

    #[tokio::test]
    async fn a_server_that_does_not_speak_tls_fails_the_fetch() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut sock, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\n\r\nnot a certificate")
                    .await;
            }
        });
        let fetcher = HttpsFetcher::new().expect("client");
        assert!(fetcher
            .fetch(&format!("https://{addr}/cert.pem"))
            .await
            .is_err());
    }
}
