//! Outbound HTTP, for the poller (provider APIs) and for key material a request names
//! (PayPal's certificate). The domain builds requests and reads responses; the adapter owns
//! the connection pool, TLS, timeouts and the size cap.

use std::time::Duration;

use async_trait::async_trait;

use crate::request::Headers;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// The whole exchange, connect to last body byte.
    pub timeout: Duration,
}

impl HttpRequest {
    pub fn get(url: impl Into<String>, timeout: Duration) -> Self {
        Self {
            method: "GET",
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// No answer in time (connect or body): worth a retry with backoff.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Could not connect or the connection broke: worth a retry with backoff.
    #[error("network: {0}")]
    Network(String),
    /// The answer was larger than the client accepts.
    #[error("response larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The request itself cannot be sent (bad URL, refused scheme): retrying will not help.
    #[error("invalid request: {0}")]
    Invalid(String),
}

#[async_trait]
pub trait HttpClient: Send + Sync + std::fmt::Debug {
    /// Any status is a response (the caller decides what a 429 or a 500 means); redirects
    /// are never followed.
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse, HttpError>;
}
