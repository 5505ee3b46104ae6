//! PayPal's certificate fetcher on the `HttpClient` adapter. The URL has already passed the
//! provider's allow-list; fetching a caller-chosen URL on the hot path is made safe here: TLS
//! only, no redirects (a redirect could leave the allow-listed host), a short timeout, a
//! size cap.

use std::time::Duration;

use super::http_client::ReqwestHttp;
use crate::ports::certs::{CertFetchError, CertFetcher};
use crate::ports::http::{HttpClient, HttpRequest};

/// Certificates are a few KiB; anything larger is not one.
const MAX_BYTES: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, Clone)]
pub(crate) struct HttpsFetcher {
    http: ReqwestHttp,
}

impl HttpsFetcher {
    pub fn new() -> Result<Self, super::http_client::HttpClientError> {
        Ok(Self {
            http: ReqwestHttp::https_only(MAX_BYTES)?,
        })
    }
}

#[async_trait::async_trait]
impl CertFetcher for HttpsFetcher {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, CertFetchError> {
        let resp = self
            .http
            .send(HttpRequest::get(url, TIMEOUT))
            .await
            .map_err(|e| CertFetchError(format!("GET {url}: {e}")))?;
        if !(200..300).contains(&resp.status) {
            return Err(CertFetchError(format!("GET {url}: HTTP {}", resp.status)));
        }
        Ok(resp.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_http_is_never_fetched() {
        // A listener that would answer anything: the client must not even connect.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/cert.pem", listener.local_addr().expect("addr"));
        let fetcher = HttpsFetcher::new().expect("client");
        let err = fetcher.fetch(&url).await.expect_err("http refused");
        assert!(err.0.contains(&url), "{err}");
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
