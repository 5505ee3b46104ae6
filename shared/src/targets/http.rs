//! The HTTP target: POST each envelope as JSON to a URL, signed with Standard Webhooks
//! headers so the receiver can verify it with any Standard Webhooks library:
//! `webhook-id` (stable across retries: the receiver's dedupe key), `webhook-timestamp`
//! (Unix seconds), `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! keyed with the decoded `whsec_…` secret. Spec: `standard-webhooks/standard-webhooks`
//! `spec/standard-webhooks.md`.
//!
//! Safety: redirects are never followed (a 3xx is a permanent failure naming the status),
//! and the SSRF guard (`guard.rs`) runs on the address actually connected to: a resolver
//! that drops refused addresses, and a check of literal-IP URLs, which skip the resolver.
//! Plain `http://` is only for addresses in `allow_private`.
//!
//! Outcomes: 2xx delivered; 408, 429, 5xx, timeouts and network errors retryable (with the
//! target's `Retry-After` seconds when it sends them); other statuses permanent; a refused
//! address permanent. Neither the secret nor the body is ever logged.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::DispatchError;
use crate::providers::crypto::{self, HmacAlgorithm, SignatureEncoding};
use crate::providers::ProviderConfigError;
use crate::secret::Secret;

pub mod guard;

use guard::AddressGuard;

fn default_timeout_seconds() -> f64 {
    10.0
}

fn default_max_concurrency() -> usize {
    8
}

/// A target's table in the config (`kind = "http"`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTargetSpec {
    /// `https://…`; `http://` only when the address is in `allow_private`.
    pub url: String,
    /// `env:NAME` (or `literal:…` in a local config) holding a `whsec_<base64>` secret.
    pub secret: String,
    /// Connect to last response byte.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: f64,
    /// Requests in flight to this target at once.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// CIDRs (or single addresses) the target may reach although they are private,
    /// loopback, link-local…: `["127.0.0.1/32"]` for a receiver on this machine.
    #[serde(default)]
    pub allow_private: Vec<String>,
    /// Extra static headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The resolved secret, set by config validation (`prepare`); never deserialised.
    #[serde(skip)]
    pub signing_key: Option<Secret>,
}

/// Header values may be credentials (`Authorization`) and the URL may carry a token in its
/// query, and a `literal:` secret is the secret itself: `Debug` shows none of them.
impl std::fmt::Debug for HttpTargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let origin = url::Url::parse(&self.url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| "<unparsed>".into());
        let secret = if self.secret.starts_with("env:") {
            self.secret.as_str()
        } else {
            "<redacted>"
        };
        f.debug_struct("HttpTargetSpec")
            .field("url", &origin)
            .field("secret", &secret)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("max_concurrency", &self.max_concurrency)
            .field("allow_private", &self.allow_private)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("signing_key", &self.signing_key)
            .finish()
    }
}

/// Headers the target sets itself: a configured one would break the signature or the framing.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
];

/// The Standard Webhooks libraries generate 24-byte secrets; shorter keys are guessable
/// sooner.
const MIN_KEY_BYTES: usize = 16;
const MAX_CONCURRENCY: usize = 256;
/// Longer than a Lambda may run is certainly a mistake.
const MAX_TIMEOUT_SECONDS: f64 = 900.0;
/// SQS visibility tops out at 12 hours: a longer `Retry-After` cannot be honoured anyway.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(12 * 3600);

/// A validated spec, ready to build a client from.
pub struct Checked {
    pub url: url::Url,
    pub key: Vec<u8>,
    pub guard: AddressGuard,
    pub timeout: Duration,
    pub max_concurrency: usize,
    pub headers: Vec<(String, String)>,
}

type FieldError = (String, String);

fn field(name: impl Into<String>, message: impl Into<String>) -> FieldError {
    (name.into(), message.into())
}

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl HttpTargetSpec {
    /// Takes the resolved secret and checks every option; the error names the field.
    pub fn prepare(&mut self, key: String) -> Result<(), FieldError> {
        self.signing_key = Some(Secret::new("secret", key, None));
        self.check().map(|_| ())
    }

    pub fn check(&self) -> Result<Checked, FieldError> {
        let raw = self
            .signing_key
            .as_ref()
            .ok_or_else(|| field("secret", "not resolved (the config was not validated)"))?;
        let key = decode_secret(raw.expose()).map_err(|m| field("secret", m.to_string()))?;
        let allow = self.allowed_private_nets()?;
        let (url, guard) = check_url(&self.url, allow)?;
        if !(self.timeout_seconds.is_finite()
            && self.timeout_seconds > 0.0
            && self.timeout_seconds <= MAX_TIMEOUT_SECONDS)
        {
            return Err(field(
                "timeout_seconds",
                format!("must be > 0 and ≤ {MAX_TIMEOUT_SECONDS}"),
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.max_concurrency) {
            return Err(field(
                "max_concurrency",
                format!("must be 1–{MAX_CONCURRENCY}"),
            ));
        }
        Ok(Checked {
            url,
            key,
            guard,
            timeout: Duration::from_secs_f64(self.timeout_seconds),
            max_concurrency: self.max_concurrency,
            headers: self.checked_headers()?,
        })
    }

    /// `allow_private`: CIDRs or single addresses.
    fn allowed_private_nets(&self) -> Result<Vec<IpNet>, FieldError> {
        self.allow_private
            .iter()
            .enumerate()
            .map(|(j, c)| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        field(
                            format!("allow_private[{j}]"),
                            format!("{c:?} is not a CIDR"),
                        )
                    })
            })
            .collect()
    }

    /// `headers`: valid names the target does not set itself, printable values; names
    /// lowercased.
    fn checked_headers(&self) -> Result<Vec<(String, String)>, FieldError> {
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            let f = format!("headers.{name}");
            let lower = name.to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(token_char) {
                return Err(field(f, "is not a valid header name"));
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(field(f, "is set by the target itself"));
            }
            if !value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
            {
                return Err(field(f, "value must be printable ASCII"));
            }
            headers.push((lower, value.clone()));
        }
        Ok(headers)
    }
}

/// The target URL, and the guard its addresses must pass: no credentials in it; https, or
/// plain http only to the addresses in `allow_private`; a literal address checked at once.
fn check_url(text: &str, allow: Vec<IpNet>) -> Result<(url::Url, AddressGuard), FieldError> {
    let url = url::Url::parse(text).map_err(|e| field("url", format!("{e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(field(
            "url",
            "must not carry credentials (they would show in logs); use headers",
        ));
    }
    let only_allowed = match url.scheme() {
        "https" => false,
        "http" if !allow.is_empty() => true,
        "http" => {
            return Err(field(
                "url",
                "plain http:// is only allowed to addresses in allow_private; use https://",
            ))
        }
        other => return Err(field("url", format!("scheme {other:?}: use https://"))),
    };
    let guard = AddressGuard {
        allow,
        only_allowed,
    };
    match url.host() {
        None => return Err(field("url", "has no host")),
        Some(url::Host::Ipv4(ip)) => guard
            .check(IpAddr::V4(ip))
            .map_err(|m| field("url", m.to_string()))?,
        Some(url::Host::Ipv6(ip)) => guard
            .check(IpAddr::V6(ip))
            .map_err(|m| field("url", m.to_string()))?,
        Some(url::Host::Domain(_)) => {}
    }
    Ok((url, guard))
}

/// Why a target's signing secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    #[error("is not whsec_<base64>")]
    NotBase64,
    #[error("the key is {0} bytes; use at least {MIN_KEY_BYTES} (e.g. whsec_ + base64 of 24 random bytes)")]
    TooShort(usize),
}

/// `whsec_<base64>` (or bare base64, as some dashboards show it) → the HMAC key. Keying
/// with the `whsec_…` text itself is the classic mistake this avoids.
fn decode_secret(raw: &[u8]) -> Result<Vec<u8>, SecretFormatError> {
    let text = std::str::from_utf8(raw).map_err(|_| SecretFormatError::NotBase64)?;
    let key = crypto::decode_base64(text.strip_prefix("whsec_").unwrap_or(text))
        .ok_or(SecretFormatError::NotBase64)?;
    if key.len() < MIN_KEY_BYTES {
        return Err(SecretFormatError::TooShort(key.len()));
    }
    Ok(key)
}

/// The `webhook-id` for an envelope: its dedupe key, so every retry of one event carries
/// the same id and the receiver can dedupe on it. The spec forbids `.` in the id (it
/// separates the signed parts), and a header value must be printable: a key that breaks
/// either rule is replaced by a digest of it, which is just as stable.
pub fn webhook_id(dedupe_key: &str) -> String {
    let usable = !dedupe_key.is_empty()
        && dedupe_key.len() <= 256
        && dedupe_key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'.');
    if usable {
        dedupe_key.to_owned()
    } else {
        let digest = crate::envelope::sha256_hex(dedupe_key.as_bytes());
        format!("inlet_{}", &digest[..32])
    }
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn signature(
    key: &[u8],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, ProviderConfigError> {
    let ts = timestamp.to_string();
    let tag =
        HmacAlgorithm::Sha256.compute(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body])?;
    Ok(format!("v1,{}", SignatureEncoding::Base64.encode(&tag)))
}

/// The three Standard Webhooks headers for one delivery attempt.
pub fn signed_headers(
    key: &[u8],
    dedupe_key: &str,
    now_s: i64,
    body: &[u8],
) -> Result<[(&'static str, String); 3], ProviderConfigError> {
    let id = webhook_id(dedupe_key);
    let sig = signature(key, &id, now_s, body)?;
    Ok([
        ("webhook-id", id),
        ("webhook-timestamp", now_s.to_string()),
        ("webhook-signature", sig),
    ])
}

/// `Retry-After` as delay-seconds (the form rate limiters send). An HTTP-date is ignored:
/// the worker's own backoff applies then.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// What a response status means for the envelope.
pub fn outcome(target: &str, status: u16, retry_after: Option<&str>) -> Result<(), DispatchError> {
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => {
            let message = format!("target {target} answered HTTP {status}");
            match retry_after.and_then(parse_retry_after) {
                Some(after) => Err(DispatchError::RetryAfter { message, after }),
                None => Err(DispatchError::Retryable(message)),
            }
        }
        300..=399 => Err(DispatchError::Permanent(format!(
            "target {target} answered HTTP {status}, a redirect, which is never followed: configure the final URL"
        ))),
        _ => Err(DispatchError::Permanent(format!(
            "target {target} answered HTTP {status}"
        ))),
    }
}

#[cfg(feature = "http-fetch")]
pub use client::{HttpTarget, HttpTargetError};

#[cfg(feature = "http-fetch")]
mod client {
    use std::error::Error as _;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use async_trait::async_trait;
    use reqwest_tls as reqwest;
    use tokio::sync::Semaphore;
    use tracing::{info, warn};

    use super::guard::AddressGuard;
    use super::{outcome, signed_headers, HttpTargetSpec};
    use crate::targets::{DispatchError, Outgoing, Target};

    /// Every address a name resolved to was refused by the guard.
    #[derive(Debug, thiserror::Error)]
    #[error("{host} resolves only to refused addresses: {reasons}")]
    struct AddressRefused {
        host: String,
        reasons: String,
    }

    /// Resolves like the system (getaddrinfo), then drops the addresses the guard refuses:
    /// what is left is exactly what the connector may connect to.
    struct GuardedResolver {
        guard: AddressGuard,
    }

    impl reqwest::dns::Resolve for GuardedResolver {
        fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let guard = self.guard.clone();
            let host = name.as_str().to_owned();
            Box::pin(async move {
                let found: Vec<SocketAddr> =
                    tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
                let mut reasons = Vec::new();
                let mut allowed = Vec::new();
                for addr in found {
                    match guard.check(addr.ip()) {
                        Ok(()) => allowed.push(addr),
                        Err(why) => reasons.push(why.to_string()),
                    }
                }
                if allowed.is_empty() {
                    let reasons = if reasons.is_empty() {
                        "no addresses".to_owned()
                    } else {
                        reasons.join("; ")
                    };
                    return Err(Box::new(AddressRefused { host, reasons }) as _);
                }
                Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
            })
        }
    }

    struct Inner {
        id: String,
        url: reqwest::Url,
        key: Vec<u8>,
        headers: Vec<(String, String)>,
        client: reqwest::Client,
        timeout: std::time::Duration,
        permits: Semaphore,
    }

    pub struct HttpTarget {
        inner: Arc<Inner>,
    }

    /// Why an HTTP target cannot be built from its (already validated) spec.
    #[derive(Debug, thiserror::Error)]
    pub enum HttpTargetError {
        #[error("{field}: {message}")]
        Spec { field: String, message: String },
        #[error("HTTP client: {0}")]
        Client(reqwest::Error),
    }

    impl HttpTarget {
        pub fn new(id: String, spec: &HttpTargetSpec) -> Result<Self, HttpTargetError> {
            let checked = spec
                .check()
                .map_err(|(field, message)| HttpTargetError::Spec { field, message })?;
            let https = checked.url.scheme() == "https";
            let client = reqwest::Client::builder()
                .https_only(https)
                .redirect(reqwest::redirect::Policy::none())
                // A proxy would be what the resolver sees, not the target: never use one.
                .no_proxy()
                .dns_resolver(Arc::new(GuardedResolver {
                    guard: checked.guard,
                }))
                .user_agent(concat!("inlet/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(HttpTargetError::Client)?;
            // The same rule for a URL whose host is an address: checked at validation
            // (connecting to a literal address skips the resolver).
            Ok(Self {
                inner: Arc::new(Inner {
                    id,
                    url: checked.url,
                    key: checked.key,
                    headers: checked.headers,
                    client,
                    timeout: checked.timeout,
                    permits: Semaphore::new(checked.max_concurrency),
                }),
            })
        }
    }

    fn refused_in(e: &reqwest::Error) -> Option<&AddressRefused> {
        let mut cause = e.source();
        while let Some(c) = cause {
            if let Some(r) = c.downcast_ref::<AddressRefused>() {
                return Some(r);
            }
            cause = c.source();
        }
        None
    }

    impl Inner {
        async fn post(&self, dedupe_key: &str, body: Vec<u8>) -> Result<(), DispatchError> {
            let Ok(_permit) = self.permits.acquire().await else {
                return Err(DispatchError::Retryable(format!(
                    "target {}: closed",
                    self.id
                )));
            };
            let now_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let signed = signed_headers(&self.key, dedupe_key, now_s, &body)
                .map_err(|e| DispatchError::Permanent(format!("target {}: {e}", self.id)))?;
            let mut req = self
                .client
                .post(self.url.clone())
                .timeout(self.timeout)
                .header("content-type", "application/json");
            for (name, value) in signed.iter() {
                req = req.header(*name, value.as_str());
            }
            for (name, value) in &self.headers {
                req = req.header(name.as_str(), value.as_str());
            }
            let started = std::time::Instant::now();
            match req.body(body).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    // The response body is not read: nothing in it changes the outcome,
                    // and dropping it closes the exchange.
                    drop(resp);
                    let r = outcome(&self.id, status, retry_after.as_deref());
                    info!(
                        target_id = %self.id,
                        dedupe_key = %dedupe_key,
                        status,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        delivered = r.is_ok(),
                        "http target answered"
                    );
                    r
                }
                Err(e) => {
                    // The URL may carry a token in its query: errors name the target instead.
                    let e = e.without_url();
                    if let Some(refused) = refused_in(&e) {
                        warn!(target_id = %self.id, error = %refused, "http target address refused");
                        return Err(DispatchError::Permanent(format!(
                            "target {}: address refused by the SSRF guard: {refused}",
                            self.id
                        )));
                    }
                    let kind = if e.is_timeout() {
                        "timed out"
                    } else {
                        "network error"
                    };
                    let message = format!("target {}: {kind}: {e}", self.id);
                    warn!(target_id = %self.id, dedupe_key = %dedupe_key, error = %message, "http target failed");
                    Err(DispatchError::Retryable(message))
                }
            }
        }
    }

    #[async_trait]
    impl Target for HttpTarget {
        fn id(&self) -> &str {
            &self.inner.id
        }

        /// One request per envelope, up to `max_concurrency` at once (the semaphore also
        /// bounds concurrent batches).
        async fn deliver(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>> {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, o) in events.iter().enumerate() {
                let inner = self.inner.clone();
                let key = o.envelope.dedupe_key.clone();
                let body = o.json.as_bytes().to_vec();
                tasks.spawn(async move { (i, inner.post(&key, body).await) });
            }
            let mut results: Vec<Result<(), DispatchError>> = events
                .iter()
                .map(|_| {
                    Err(DispatchError::Retryable(format!(
                        "target {}: delivery task did not finish",
                        self.inner.id
                    )))
                })
                .collect();
            while let Some(joined) = tasks.join_next().await {
                if let Ok((i, r)) = joined {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = r;
                    }
                }
            }
            results
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::standard_webhooks::StandardWebhooks;
    use crate::providers::Provider;
    use crate::request::{Headers, InboundRequest};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn spec(url: &str) -> HttpTargetSpec {
        HttpTargetSpec {
            url: url.into(),
            secret: "env:X".into(),
            timeout_seconds: default_timeout_seconds(),
            max_concurrency: default_max_concurrency(),
            allow_private: Vec::new(),
            headers: BTreeMap::new(),
            signing_key: None,
        }
    }

    fn prepared(mut s: HttpTargetSpec) -> Result<Checked, FieldError> {
        s.prepare(SECRET.into())?;
        s.check()
    }

    #[test]
    fn the_spec_vector_signs_as_the_standard_says() {
        // standard-webhooks spec example: id, timestamp, body, and the expected signature.
        let key = decode_secret(SECRET.as_bytes()).expect("key");
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        )
        .expect("sign");
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn signed_headers_verify_with_the_standard_webhooks_provider() {
        let key = decode_secret(SECRET.as_bytes()).expect("key");
        let body = br#"{"v":1,"source":"stripe","dedupe_key":"stripe#evt_1"}"#;
        let now_s = 1_767_225_600;
        let verifier = StandardWebhooks::from_config(
            &serde_json::Value::Null,
            vec![Secret::new("k", SECRET, None)],
        )
        .expect("provider");
        for dedupe_key in ["stripe#evt_1", "generic#a.b.c", "", "with space"] {
            let headers =
                Headers::from_iter(signed_headers(&key, dedupe_key, now_s, body).expect("signed"));
            let req = InboundRequest {
                method: "POST",
                headers: &headers,
                query: &[],
                body,
            };
            let verified = verifier.verify(&req, now_s * 1000).expect(dedupe_key);
            assert_eq!(verified.key_id.as_deref(), Some("k"));
            // A changed body or an old timestamp does not verify.
            let tampered = InboundRequest { body: b"{}", ..req };
            assert!(verifier.verify(&tampered, now_s * 1000).is_err());
            assert!(verifier.verify(&req, (now_s + 3600) * 1000).is_err());
        }
    }

    #[test]
    fn the_webhook_id_is_the_dedupe_key_or_a_stable_digest_of_it() {
        assert_eq!(webhook_id("stripe#evt_1"), "stripe#evt_1");
        let dotted = webhook_id("custom#a.b");
        assert!(
            dotted.starts_with("inlet_") && !dotted.contains('.'),
            "{dotted}"
        );
        assert_eq!(dotted, webhook_id("custom#a.b"));
        assert_ne!(dotted, webhook_id("custom#a_b"));
        assert!(webhook_id("").starts_with("inlet_"));
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let cases: &[(u16, Option<&str>, &str)] = &[
            (200, None, "ok"),
            (204, None, "ok"),
            (299, None, "ok"),
            (408, None, "retry"),
            (429, Some("7"), "after 7"),
            (429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), "retry"),
            (500, None, "retry"),
            (503, Some(" 120 "), "after 120"),
            (503, Some("999999999"), "after 43200"),
            (301, None, "permanent"),
            (302, None, "permanent"),
            (400, None, "permanent"),
            (401, None, "permanent"),
            (404, None, "permanent"),
            (410, None, "permanent"),
            (100, None, "permanent"),
        ];
        for (status, retry_after, want) in cases {
            let got = match outcome("t", *status, *retry_after) {
                Ok(()) => "ok".to_string(),
                Err(DispatchError::Retryable(_)) => "retry".to_string(),
                Err(DispatchError::RetryAfter { after, .. }) => {
                    format!("after {}", after.as_secs())
                }
                Err(DispatchError::Permanent(_)) => "permanent".to_string(),
            };
            assert_eq!(got, *want, "HTTP {status}");
        }
        let e = outcome("t", 429, Some("3")).expect_err("429");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(!e.is_permanent());
        assert!(outcome("t", 400, None).expect_err("400").is_permanent());
    }

    #[test]
    fn options_are_checked_and_errors_name_the_field() {
        assert!(prepared(spec("https://hooks.example.com/inlet")).is_ok());
        let name = |s: HttpTargetSpec| prepared(s).err().map(|(f, _)| f);
        assert_eq!(name(spec("http://hooks.example.com/")), Some("url".into()));
        assert_eq!(name(spec("ftp://hooks.example.com/")), Some("url".into()));
        assert_eq!(
            name(spec("https://u:p@hooks.example.com/")),
            Some("url".into())
        );
        assert_eq!(name(spec("https://169.254.169.254/")), Some("url".into()));
        assert_eq!(name(spec("https://[::ffff:10.0.0.1]/")), Some("url".into()));
        // The URL parser normalises the other spellings of an address first.
        assert_eq!(name(spec("https://2130706433/")), Some("url".into()));
        assert_eq!(name(spec("https://0x7f.1/")), Some("url".into()));
        let mut local = spec("http://127.0.0.1:9000/hook");
        local.allow_private = vec!["127.0.0.1/32".into()];
        assert!(prepared(local.clone()).is_ok());
        let mut elsewhere = local.clone();
        elsewhere.url = "http://10.0.0.1/hook".into();
        assert_eq!(name(elsewhere), Some("url".into()));
        let mut bad_cidr = local.clone();
        bad_cidr.allow_private = vec!["10.0.0.0/33".into()];
        assert_eq!(name(bad_cidr), Some("allow_private[0]".into()));
        let mut timeout = local.clone();
        timeout.timeout_seconds = 0.0;
        assert_eq!(name(timeout), Some("timeout_seconds".into()));
        let mut conc = local.clone();
        conc.max_concurrency = 0;
        assert_eq!(name(conc), Some("max_concurrency".into()));
        let mut reserved = local.clone();
        reserved
            .headers
            .insert("Webhook-Signature".into(), "x".into());
        assert_eq!(name(reserved), Some("headers.Webhook-Signature".into()));
        let mut crlf = local.clone();
        crlf.headers.insert("x-team".into(), "a\r\nb".into());
        assert_eq!(name(crlf), Some("headers.x-team".into()));
        let mut short = local;
        assert_eq!(
            short.prepare("whsec_c2hvcnQ=".into()).err().map(|(f, _)| f),
            Some("secret".into())
        );
        assert_eq!(
            spec("https://x.example/").check().err().map(|(f, _)| f),
            Some("secret".into())
        );
    }

    #[test]
    fn the_config_resolves_the_secret_and_names_the_fields_of_an_http_target() {
        use crate::config::{validate, ConfigDoc, ConfigError, TargetKind};
        let text = |target: &str| {
            format!(
                "[[sources]]\nid = \"gh\"\nprovider = \"github\"\nsecrets = [\"env:GH\"]\n\
                 [[targets]]\nid = \"hook\"\nkind = \"http\"\n{target}\n\
                 [[routes]]\nsources = [\"*\"]\ntargets = [\"hook\"]\n"
            )
        };
        let env = |k: &str| match k {
            "GH" => Some("gh-secret".to_owned()),
            "HOOK_SECRET" => Some(SECRET.to_owned()),
            _ => None,
        };
        let check = |target: &str| {
            validate(
                ConfigDoc::parse(&text(target), Some("toml")).expect("parses"),
                ".".into(),
                &env,
            )
        };
        let cfg = check("url = \"https://hooks.example.com/in\"\nsecret = \"env:HOOK_SECRET\"\nheaders = { x-team = \"payments\" }")
            .expect("valid");
        match &cfg.targets[0].kind {
            TargetKind::Http(h) => {
                assert!(h.check().is_ok());
                // Neither the resolved secret nor header values print.
                let debug = format!("{h:?}");
                assert!(
                    !debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                    "{debug}"
                );
                assert!(!debug.contains("payments"), "{debug}");
                assert!(debug.contains("x-team"), "{debug}");
            }
            other => panic!("{other:?}"),
        }
        let field_of = |r: Result<crate::config::Config, ConfigError>| match r {
            Err(ConfigError::Invalid(problems)) if !problems.is_empty() => {
                problems[0].field.clone()
            }
            other => panic!("expected a field error, got {other:?}"),
        };
        assert_eq!(
            field_of(check("url = \"https://x.example/\"\nsecret = \"env:NOPE\"")),
            "targets[0].secret"
        );
        assert_eq!(
            field_of(check(
                "url = \"http://x.example/\"\nsecret = \"env:HOOK_SECRET\""
            )),
            "targets[0].url"
        );
        assert_eq!(
            field_of(check(
                "url = \"https://x.example/\"\nsecret = \"env:HOOK_SECRET\"\ntimeout_seconds = 60"
            )),
            "targets[0].timeout_seconds",
            "the default lease is 60 s"
        );
        // An option this target does not have (say, following redirects) is refused.
        let unknown =
            text("url = \"https://x.example/\"\nsecret = \"env:X\"\nfollow_redirects = true");
        match ConfigDoc::parse(&unknown, Some("toml")) {
            Err(ConfigError::Parse { message, .. }) => {
                assert!(message.contains("follow_redirects"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
