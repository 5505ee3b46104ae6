//! The `HttpClient` port on reqwest (rustls with aws-lc-rs, the stack the AWS SDK already
//! links): redirects never followed, a per-request timeout, a cap on the response size read
//! into memory.

use async_trait::async_trait;

use crate::ports::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use crate::request::Headers;

#[derive(Debug, Clone)]
pub struct ReqwestHttp {
    client: reqwest_tls::Client,
    max_bytes: usize,
}

/// The HTTP client could not be built (its TLS set-up failed).
#[derive(Debug, thiserror::Error)]
#[error("HTTP client: {0}")]
pub struct HttpClientError(reqwest_tls::Error);

impl ReqwestHttp {
    /// A client for configured provider APIs (the poller): plain `http://` is allowed because
    /// the operator wrote the URL (local fakes, internal gateways).
    pub fn new(max_bytes: usize) -> Result<Self, HttpClientError> {
        Self::build(false, max_bytes)
    }

    /// A client for URLs that come from requests (PayPal's certificate): TLS only.
    pub(crate) fn https_only(max_bytes: usize) -> Result<Self, HttpClientError> {
        Self::build(true, max_bytes)
    }

    fn build(https_only: bool, max_bytes: usize) -> Result<Self, HttpClientError> {
        reqwest_tls::Client::builder()
            .https_only(https_only)
            .redirect(reqwest_tls::redirect::Policy::none())
            .build()
            .map(|client| Self { client, max_bytes })
            .map_err(HttpClientError)
    }
}

fn classify(url: &str, e: reqwest_tls::Error) -> HttpError {
    if e.is_timeout() {
        HttpError::Timeout(format!("{url}: {e}"))
    } else if e.is_builder() {
        HttpError::Invalid(format!("{url}: {e}"))
    } else {
        HttpError::Network(format!("{url}: {e}"))
    }
}

#[async_trait]
impl HttpClient for ReqwestHttp {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let method = reqwest_tls::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| HttpError::Invalid(format!("method {}", req.method)))?;
        let mut builder = self.client.request(method, &req.url).timeout(req.timeout);
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let mut resp = builder.send().await.map_err(|e| classify(&req.url, e))?;
        let status = resp.status().as_u16();
        let mut headers = Headers::new();
        for (name, value) in resp.headers() {
            headers.insert(name.as_str(), String::from_utf8_lossy(value.as_bytes()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&req.url, e))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(HttpError::TooLarge {
                    limit: self.max_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A loopback server answering every connection with `response` (raw HTTP), after
    /// `delay`; returns its base URL.
    async fn serve(response: &'static str, delay: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = sock.write_all(response.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn statuses_and_headers_reach_the_caller_and_redirects_are_not_followed() {
        let http = ReqwestHttp::new(1024).expect("client");
        let base = serve(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nslow",
            Duration::ZERO,
        )
        .await;
        let resp = http
            .send(HttpRequest::get(&base, Duration::from_secs(5)))
            .await
            .expect("response");
        assert_eq!(resp.status, 429);
        assert_eq!(resp.headers.get("retry-after"), Some("7"));
        assert_eq!(resp.body, b"slow");

        let base = serve(
            "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n",
            Duration::ZERO,
        )
        .await;
        let resp = http
            .send(HttpRequest::get(&base, Duration::from_secs(5)))
            .await
            .expect("response");
        assert_eq!(resp.status, 302, "the redirect is the answer");
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_refused() {
        let http = ReqwestHttp::new(8).expect("client");
        let base = serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n0123456789ab",
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            http.send(HttpRequest::get(&base, Duration::from_secs(5)))
                .await,
            Err(HttpError::TooLarge { limit: 8 })
        );
    }

    #[tokio::test]
    async fn a_slow_server_times_out_and_a_closed_port_is_a_network_error() {
        let http = ReqwestHttp::new(1024).expect("client");
        let base = serve("HTTP/1.1 200 OK\r\n\r\n", Duration::from_secs(30)).await;
        assert!(matches!(
            http.send(HttpRequest::get(&base, Duration::from_millis(200)))
                .await,
            Err(HttpError::Timeout(_))
        ));
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        assert!(matches!(
            http.send(HttpRequest::get(&url, Duration::from_secs(5)))
                .await,
            Err(HttpError::Network(_))
        ));
    }
}
