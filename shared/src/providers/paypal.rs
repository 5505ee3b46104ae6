//! PayPal REST webhooks: `PAYPAL-TRANSMISSION-SIG` is base64 RSA PKCS#1 v1.5 SHA-256 over
//! `"{transmission_id}|{transmission_time}|{webhook_id}|{crc32(body) unsigned decimal}"`,
//! checked with the public key of the X.509 certificate at `PAYPAL-CERT-URL`. `webhook_id` is
//! this endpoint's id from the developer dashboard (the simulator signs with the literal
//! `WEBHOOK_ID`). Source: the legacy official `paypal/rest-api-sdk-nodejs`
//! `lib/resources/Notification.js`; <https://developer.paypal.com/api/rest/webhooks/rest/>.
//!
//! The certificate URL comes from the request, so it is only ever fetched from an allow-listed
//! PayPal API host over HTTPS, in [`Provider::prepare`] (async), into a small cache keyed by
//! URL; [`Provider::verify`] (sync) reads only pinned certificates and that cache. The
//! certificate chain is not validated here: trust comes from fetching over TLS from PayPal's
//! own API host (the fetcher must verify TLS) or from pinning.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::Deserialize;
use serde_json::Value;

use super::crypto::{self, RsaCertificate, SignatureEncoding, TimeUnit, Tolerance};
use super::{
    canonical, money, ExtractError, Extracted, Provider, ProviderConfigError, SignInput, Verified,
    VerifyError,
};
use crate::ports::certs::CertFetcher;
use crate::request::{Headers, InboundRequest};
use crate::secret::Secret;
use crate::time::rfc3339_ms;

const TRANSMISSION_ID: &str = "paypal-transmission-id";
const TRANSMISSION_TIME: &str = "paypal-transmission-time";
const TRANSMISSION_SIG: &str = "paypal-transmission-sig";
const CERT_URL: &str = "paypal-cert-url";
const AUTH_ALGO: &str = "paypal-auth-algo";

/// PayPal's API hosts, live and sandbox. Exact matches only: no subdomains, no lookalikes.
const CERT_HOSTS: &[&str] = &[
    "api.paypal.com",
    "api-m.paypal.com",
    "api.sandbox.paypal.com",
    "api-m.sandbox.paypal.com",
];

/// Fetched certificates kept at once; PayPal signs with one or two at a time.
const CACHE_ENTRIES: usize = 16;

/// Where PayPal serves its signing certificates. The URL comes from the request, so anything
/// else on PayPal's hosts is refused rather than fetched on a stranger's say-so.
const CERT_PATH: &str = "/v1/notifications/certs/";

/// Fetches of certificates not in the cache, per process and minute. PayPal signs with a
/// handful of certificates, each cached for a day; without a bound, every request naming a
/// new URL (no secret needed) would make this process call out and wait for the answer.
const FETCHES_PER_MINUTE: u32 = 8;

/// A URL whose fetch failed is not fetched again for this long (the request answers 503 and
/// the provider retries).
const FAILED_FETCH_BACKOFF_MS: i64 = 60_000;

fn default_tolerance() -> u32 {
    // PayPal retries a failed delivery up to 25 times over 3 days. Whether each retry carries
    // a fresh PAYPAL-TRANSMISSION-TIME is not established (PayPal's docs do not say), and a
    // tight window would turn every retry after the first failure into a permanent 401. The
    // dedupe window (≥ 7 days) already catches a replay inside these 3 days + 1 hour.
    3 * 24 * 3600 + 3600
}

fn default_future_tolerance() -> u32 {
    300
}

fn default_cache_max_age() -> u32 {
    24 * 3600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayPalOptions {
    /// This endpoint's webhook id (developer dashboard), part of the signed message.
    webhook_id: String,
    #[serde(default = "default_tolerance")]
    tolerance_seconds: u32,
    #[serde(default = "default_future_tolerance")]
    future_tolerance_seconds: u32,
    /// How long a fetched certificate is used before `prepare` fetches it again.
    #[serde(default = "default_cache_max_age")]
    cache_max_age_seconds: u32,
    /// Pinned certificates, `"<cert url>" = "<PEM>"`: used without fetching (air-gapped set-ups,
    /// tests). The URL must still be an allow-listed PayPal one.
    #[serde(default)]
    certificates: BTreeMap<String, String>,
    /// Fetch certificates that are not pinned, with the fetcher the composition root supplies
    /// (builds with the `http-fetch` feature, as the ingest Lambda and the `inlet` CLI are).
    /// `false`: pinned certificates only, whatever fetcher is supplied.
    #[serde(default = "default_fetch")]
    fetch_certificates: bool,
}

fn default_fetch() -> bool {
    true
}

#[derive(Debug)]
struct CachedCert {
    cert: Arc<RsaCertificate>,
    fetched_at_ms: i64,
}

#[derive(Debug)]
pub struct PayPal {
    webhook_id: String,
    tolerance: Tolerance,
    cache_max_age_ms: i64,
    pinned: HashMap<String, Arc<RsaCertificate>>,
    cache: Mutex<HashMap<String, CachedCert>>,
    fetch_certificates: bool,
    /// Set once by [`Provider::use_cert_fetcher`]; unset, only pinned certificates verify.
    fetcher: OnceLock<Arc<dyn CertFetcher>>,
    fetches: Mutex<FetchBudget>,
}

/// What bounds the fetches a stranger can cause: [`FETCHES_PER_MINUTE`], and no second try
/// of a failed URL within [`FAILED_FETCH_BACKOFF_MS`].
#[derive(Debug, Default)]
struct FetchBudget {
    minute: i64,
    spent: u32,
    /// URL → when its fetch failed (at most [`CACHE_ENTRIES`]).
    failed: HashMap<String, i64>,
}

impl FetchBudget {
    /// Why `url` may not be fetched now, if it may not.
    fn refuse(&mut self, url: &str, now_ms: i64) -> Option<&'static str> {
        if self
            .failed
            .get(url)
            .is_some_and(|at| now_ms.saturating_sub(*at) < FAILED_FETCH_BACKOFF_MS)
        {
            return Some("its last fetch failed less than a minute ago");
        }
        let minute = now_ms.div_euclid(60_000);
        if self.minute != minute {
            (self.minute, self.spent) = (minute, 0);
        }
        if self.spent >= FETCHES_PER_MINUTE {
            return Some("this minute's certificate fetches are spent");
        }
        self.spent += 1;
        None
    }

    fn failed(&mut self, url: &str, now_ms: i64) {
        if self.failed.len() >= CACHE_ENTRIES {
            self.failed
                .retain(|_, at| now_ms.saturating_sub(*at) < FAILED_FETCH_BACKOFF_MS);
        }
        if self.failed.len() < CACHE_ENTRIES {
            self.failed.insert(url.to_string(), now_ms);
        }
    }
}

/// Why a certificate URL is not one PayPal signs with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum CertUrlError {
    #[error("certificate URL has characters outside plain printable ASCII")]
    Characters,
    #[error("certificate URL is not https")]
    NotHttps,
    #[error("certificate URL carries user info")]
    UserInfo,
    #[error("certificate URL port {0:?} is not 443")]
    Port(String),
    #[error("certificate host {0:?} is not a PayPal API host")]
    Host(String),
    #[error("certificate URL path is not under {CERT_PATH} (PayPal's certificates)")]
    Path,
}

/// `Ok` when `url` is `https://<allow-listed host>[:443]/…` with nothing a URL parser could
/// read differently (user info, backslashes, spaces, control or non-ASCII characters).
fn check_cert_url(url: &str) -> Result<(), CertUrlError> {
    if url
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b == b'\\' || b == b'%')
    {
        return Err(CertUrlError::Characters);
    }
    let rest = url
        .get(..8)
        .filter(|scheme| scheme.eq_ignore_ascii_case("https://"))
        .and_then(|_| url.get(8..))
        .ok_or(CertUrlError::NotHttps)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = (rest.get(..end).unwrap_or(""), rest.get(end..).unwrap_or(""));
    if authority.contains('@') {
        return Err(CertUrlError::UserInfo);
    }
    let host = match authority.rsplit_once(':') {
        Some((host, "443")) => host,
        Some((_, port)) => return Err(CertUrlError::Port(port.to_string())),
        None => authority,
    };
    if !CERT_HOSTS.iter().any(|h| host.eq_ignore_ascii_case(h)) {
        return Err(CertUrlError::Host(host.to_string()));
    }
    if !path.starts_with(CERT_PATH) {
        return Err(CertUrlError::Path);
    }
    Ok(())
}

/// A header value that is joined with `|` into the signed message must not contain `|`:
/// otherwise a transmission time could be shifted into the id and still verify.
fn no_pipe<'a>(value: &'a str, header: &str) -> Result<&'a str, VerifyError> {
    if value.contains('|') {
        return Err(VerifyError::MalformedSignature(format!(
            "{header} contains '|'"
        )));
    }
    Ok(value)
}

fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl PayPal {
    pub fn from_config(
        options: &serde_json::Value,
        secrets: Vec<Secret>,
    ) -> Result<Self, ProviderConfigError> {
        let opts: PayPalOptions = crypto::parse_options("paypal", options)?;
        if !secrets.is_empty() {
            return Err(ProviderConfigError(
                "paypal takes no secrets: requests are checked with PayPal's certificate and \
                 options.webhook_id"
                    .into(),
            ));
        }
        let webhook_id = opts.webhook_id.trim();
        if webhook_id.is_empty() || webhook_id.contains('|') {
            return Err(ProviderConfigError(
                "paypal options: webhook_id must be the dashboard's webhook id (non-empty, no '|')"
                    .into(),
            ));
        }
        let mut pinned = HashMap::new();
        for (url, pem) in &opts.certificates {
            check_cert_url(url).map_err(|why| {
                ProviderConfigError(format!("paypal options: certificates[{url:?}]: {why}"))
            })?;
            let cert = RsaCertificate::from_pem(pem.as_bytes()).map_err(|why| {
                ProviderConfigError(format!("paypal options: certificates[{url:?}]: {why}"))
            })?;
            pinned.insert(url.clone(), Arc::new(cert));
        }
        Ok(Self {
            webhook_id: webhook_id.to_string(),
            tolerance: Tolerance::both(opts.tolerance_seconds, opts.future_tolerance_seconds),
            cache_max_age_ms: i64::from(opts.cache_max_age_seconds) * 1000,
            pinned,
            cache: Mutex::new(HashMap::new()),
            fetches: Mutex::new(FetchBudget::default()),
            fetch_certificates: opts.fetch_certificates,
            fetcher: OnceLock::new(),
        })
    }

    /// A poisoned lock only means another request panicked mid-insert; the map is still whole.
    fn cache(&self) -> MutexGuard<'_, HashMap<String, CachedCert>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Provider::prepare`] with an explicit clock (tests).
    pub(crate) async fn prepare_at(
        &self,
        req: &InboundRequest<'_>,
        now_ms: i64,
    ) -> Result<(), VerifyError> {
        // Anything `verify` will refuse anyway is not fetched: it reports the precise reason.
        let Some(url) = req.headers.get(CERT_URL).map(str::trim) else {
            return Ok(());
        };
        if check_cert_url(url).is_err() || self.pinned.contains_key(url) {
            return Ok(());
        }
        let Some(fetcher) = self.fetcher.get() else {
            return Ok(());
        };
        let cached = self.cache().get(url).map(|c| {
            now_ms.saturating_sub(c.fetched_at_ms) <= self.cache_max_age_ms
                && c.cert.is_valid_at(now_ms)
        });
        if cached == Some(true) {
            return Ok(());
        }
        let refused = self
            .fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refuse(url, now_ms);
        // The lock is not held across the fetch; two concurrent first requests may both fetch.
        let fetched = match refused {
            Some(why) => Err(format!("not fetched: {why}")),
            None => {
                let fetched = fetcher
                    .fetch(url)
                    .await
                    .map_err(|e| e.0)
                    .and_then(|pem| RsaCertificate::from_pem(&pem).map_err(|e| e.to_string()));
                if fetched.is_err() {
                    self.fetches
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .failed(url, now_ms);
                }
                fetched
            }
        };
        match fetched {
            Ok(cert) => {
                let mut cache = self.cache();
                if cache.len() >= CACHE_ENTRIES && !cache.contains_key(url) {
                    let oldest = cache
                        .iter()
                        .min_by_key(|(_, c)| c.fetched_at_ms)
                        .map(|(u, _)| u.clone());
                    if let Some(oldest) = oldest {
                        cache.remove(&oldest);
                    }
                }
                cache.insert(
                    url.to_string(),
                    CachedCert {
                        cert: Arc::new(cert),
                        fetched_at_ms: now_ms,
                    },
                );
                Ok(())
            }
            // A stale entry is still PayPal's certificate: keep using it until it expires
            // rather than refusing deliveries while the refresh fails.
            Err(why) if cached.is_some() => {
                tracing::warn!(cert_url = url, error = %why, "paypal certificate refresh failed; using the cached one");
                Ok(())
            }
            Err(why) => Err(VerifyError::Unavailable(format!(
                "paypal certificate could not be loaded: {why}"
            ))),
        }
    }

    fn certificate(&self, url: &str) -> Result<Arc<RsaCertificate>, VerifyError> {
        if let Some(cert) = self.pinned.get(url) {
            return Ok(Arc::clone(cert));
        }
        if let Some(cached) = self.cache().get(url) {
            return Ok(Arc::clone(&cached.cert));
        }
        Err(VerifyError::Unavailable(if self.fetcher.get().is_none() {
            "paypal certificate fetching is off (fetch_certificates = false, or a build without \
             the http-fetch feature); pin the certificate with options.certificates"
                .into()
        } else {
            "paypal certificate is not loaded".into()
        }))
    }
}

fn canonical_type(event_type: &str) -> Option<&'static str> {
    use canonical::*;
    match event_type {
        "PAYMENT.CAPTURE.COMPLETED" | "PAYMENT.SALE.COMPLETED" => Some(PAYMENT_SUCCEEDED),
        "PAYMENT.CAPTURE.DENIED"
        | "PAYMENT.SALE.DENIED"
        | "BILLING.SUBSCRIPTION.PAYMENT.FAILED" => Some(PAYMENT_FAILED),
        "PAYMENT.CAPTURE.PENDING" | "PAYMENT.SALE.PENDING" => Some(PAYMENT_PENDING),
        "PAYMENT.CAPTURE.REFUNDED" | "PAYMENT.SALE.REFUNDED" => Some(PAYMENT_REFUNDED),
        "CUSTOMER.DISPUTE.CREATED" => Some(PAYMENT_DISPUTED),
        "BILLING.SUBSCRIPTION.CREATED" => Some(SUBSCRIPTION_CREATED),
        "BILLING.SUBSCRIPTION.ACTIVATED"
        | "BILLING.SUBSCRIPTION.UPDATED"
        | "BILLING.SUBSCRIPTION.SUSPENDED"
        | "BILLING.SUBSCRIPTION.RE-ACTIVATED" => Some(SUBSCRIPTION_UPDATED),
        "BILLING.SUBSCRIPTION.CANCELLED" | "BILLING.SUBSCRIPTION.EXPIRED" => {
            Some(SUBSCRIPTION_CANCELED)
        }
        _ => None,
    }
}

/// `{value, currency_code}` (v2: captures, refunds, disputes) or `{total, currency}` (v1 sales).
fn money_of(amount: Option<&Value>) -> Option<(i64, String)> {
    let amount = amount?;
    let (value, currency) = match (amount.get("value"), amount.get("total")) {
        (Some(v), _) => (v.as_str()?, amount.get("currency_code")?.as_str()?),
        (None, Some(t)) => (t.as_str()?, amount.get("currency")?.as_str()?),
        (None, None) => return None,
    };
    let currency = money::currency(currency)?;
    Some((money::to_minor(value, &currency)?, currency))
}

#[async_trait::async_trait]
impl Provider for PayPal {
    fn name(&self) -> &'static str {
        "paypal"
    }

    async fn prepare(&self, req: &InboundRequest<'_>) -> Result<(), VerifyError> {
        self.prepare_at(req, system_now_ms()).await
    }

    /// Kept only with `fetch_certificates` (the default); the first fetcher supplied stays.
    fn use_cert_fetcher(&self, fetcher: &Arc<dyn CertFetcher>) {
        if self.fetch_certificates {
            let _ = self.fetcher.set(Arc::clone(fetcher));
        }
    }

    fn verify(&self, req: &InboundRequest<'_>, now_ms: i64) -> Result<Verified, VerifyError> {
        let h = req.headers;
        let sig_text = crypto::required_header(h, TRANSMISSION_SIG)?;
        let id = no_pipe(crypto::needed_header(h, TRANSMISSION_ID)?, TRANSMISSION_ID)?;
        let time = no_pipe(
            crypto::needed_header(h, TRANSMISSION_TIME)?,
            TRANSMISSION_TIME,
        )?;
        let url = crypto::needed_header(h, CERT_URL)?;
        if let Some(algo) = h.get(AUTH_ALGO).map(str::trim) {
            if !algo.eq_ignore_ascii_case("SHA256withRSA") {
                return Err(VerifyError::MalformedSignature(format!(
                    "{AUTH_ALGO} {algo:?} is not SHA256withRSA"
                )));
            }
        }
        let sent_ms = rfc3339_ms(time).ok_or_else(|| {
            VerifyError::MalformedSignature(format!("{TRANSMISSION_TIME} is not an RFC 3339 time"))
        })?;
        check_cert_url(url).map_err(|why| VerifyError::CertificateRefused(why.to_string()))?;
        let cert = self.certificate(url)?;
        if !cert.is_valid_at(now_ms) {
            return Err(VerifyError::CertificateRefused(format!(
                "certificate {:?} is outside its validity period",
                cert.subject
            )));
        }
        let sig = SignatureEncoding::Base64.decode(sig_text).ok_or_else(|| {
            VerifyError::MalformedSignature(format!("{TRANSMISSION_SIG} is not base64"))
        })?;
        let message = format!(
            "{id}|{time}|{}|{}",
            self.webhook_id,
            crypto::crc32(req.body)
        );
        if !cert.verify(message.as_bytes(), &sig) {
            return Err(VerifyError::SignatureMismatch { keys_tried: 1 });
        }
        self.tolerance
            .check(sent_ms, TimeUnit::Milliseconds, now_ms)?;
        Ok(Verified {
            scheme: "paypal_rsa_sha256",
            key_id: Some(url.to_string()),
        })
    }

    /// Entity: the payer (`payer.payer_id`, a subscription's `subscriber.payer_id`, or their
    /// email), else the resource's own id (a capture carries no payer).
    fn extract(&self, req: &InboundRequest<'_>) -> Result<Vec<Extracted>, ExtractError> {
        let event = crypto::json_object(req.body)
            .ok_or_else(|| ExtractError("paypal event body is not a JSON object".into()))?;
        let id = event
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ExtractError("paypal event has no string \"id\"".into()))?;
        let event_type = event.get("event_type").and_then(Value::as_str);
        let resource = event.get("resource");
        let at = |pointer: &str| {
            resource
                .and_then(|r| r.pointer(pointer))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let entity = at("/payer/payer_id")
            .or_else(|| at("/subscriber/payer_id"))
            .or_else(|| at("/payer/email_address"))
            .or_else(|| at("/subscriber/email_address"))
            .or_else(|| at("/id"))
            .or_else(|| at("/dispute_id"));
        let money = money_of(resource.and_then(|r| r.get("amount")))
            .or_else(|| money_of(resource.and_then(|r| r.get("dispute_amount"))));
        let (amount, currency) = money.map_or((None, None), |(a, c)| (Some(a), Some(c)));
        Ok(vec![Extracted {
            unsigned_id: None,
            event_id: Some(id.to_string()),
            event_type: event_type.map(str::to_string),
            canonical_type: event_type.and_then(canonical_type),
            occurred_at_ms: event
                .get("create_time")
                .and_then(Value::as_str)
                .and_then(rfc3339_ms),
            entity: entity.map(str::to_string),
            object_id: at("/id").map(str::to_string),
            amount,
            currency,
            part: None,
        }])
    }

    fn sample_body(&self, id: &str, now_ms: i64) -> Vec<u8> {
        let tag: String = id
            .bytes()
            .filter(u8::is_ascii_alphanumeric)
            .map(|b| char::from(b.to_ascii_uppercase()))
            .take(17)
            .collect();
        serde_json::json!({
            "id": format!("WH-{tag}"), "event_version": "1.0",
            "create_time": crate::time::format_rfc3339_ms(now_ms), "resource_type": "capture",
            "resource_version": "2.0", "event_type": "PAYMENT.CAPTURE.COMPLETED",
            "summary": "Payment completed for $ 20.0 USD",
            "resource": {"id": "42311647XV020574X", "status": "COMPLETED",
                         "amount": {"currency_code": "USD", "value": "20.00"}, "final_capture": true}
        })
        .to_string()
        .into_bytes()
    }

    fn sign(&self, _input: &SignInput<'_>) -> Result<Headers, ProviderConfigError> {
        Err(ProviderConfigError(
            "paypal signs with a private key the receiver does not hold (PayPal's certificate); \
             use the PayPal webhooks simulator"
                .into(),
        ))
    }
}

/// How the provider suite (`suite.rs`) takes PayPal: its key is the sender's certificate,
/// not a secret, and only PayPal holds the private key, so the case is the official
/// self-signed vector with its certificate pinned (no rotation or expiry of secrets apply).
#[cfg(test)]
pub(crate) fn suite_case() -> super::suite::Case {
    use super::crypto::testkit;
    use super::suite::{Carrier, Case, Freshness, Signed, T};
    fn sign(key: Option<&super::suite::TestKey>, now_ms: i64) -> Signed {
        assert!(
            key.is_none() && now_ms == T,
            "the vector is signed once, at T"
        );
        let v = testkit::vector("paypal-selfsigned");
        Signed::post(v.headers(), v.body.into_bytes())
    }
    Case {
        name: "paypal",
        scheme: "paypal_rsa_sha256",
        options: || {
            let v = testkit::vector("paypal-selfsigned");
            serde_json::json!({
                "webhook_id": v.webhook_id,
                "certificates": {v.header("PAYPAL-CERT-URL"): v.cert_pem},
                "fetch_certificates": false,
            })
        },
        keys: None,
        sign,
        tamper: super::suite::change_a_digit,
        tampered: Some(VerifyError::SignatureMismatch { keys_tried: 1 }),
        freshness: Some(Freshness {
            past_s: i64::from(default_tolerance()),
            future_s: i64::from(default_future_tolerance()),
        }),
        carrier: Carrier::Headers {
            signature: TRANSMISSION_SIG,
            needed: &[TRANSMISSION_ID, TRANSMISSION_TIME, CERT_URL],
        },
        garbled: |s| {
            vec![
                s.with_header(TRANSMISSION_SIG, "***"),
                s.with_header(TRANSMISSION_TIME, "yesterday"),
                s.with_header(TRANSMISSION_TIME, "2026-01-01T00:00:00Z|x"),
                s.with_header(TRANSMISSION_ID, "a|b"),
                s.with_header(AUTH_ALGO, "SHA1withRSA"),
            ]
        },
        candidates: None,
        signs: false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::ports::certs::CertFetchError;
    use crate::providers::crypto::testkit::{self, request, secret, Vector};

    const NOW_MS: i64 = testkit::DEFAULT_NOW_MS;

    fn vector() -> Vector {
        testkit::vector("paypal-selfsigned")
    }

    fn pinned(v: &Vector) -> PayPal {
        let url = v.header("PAYPAL-CERT-URL").to_string();
        PayPal::from_config(
            &serde_json::json!({
                "webhook_id": v.webhook_id.as_deref().unwrap(),
                "certificates": {url: v.cert_pem.as_deref().unwrap()},
                "fetch_certificates": false
            }),
            vec![],
        )
        .unwrap()
    }

    /// Fetching on (the default), but nothing fetches until a fetcher is supplied: tests
    /// never reach the network; they supply a fake one.
    fn unpinned(webhook_id: &str) -> PayPal {
        PayPal::from_config(&serde_json::json!({"webhook_id": webhook_id}), vec![]).unwrap()
    }

    /// [`unpinned`] with `fetcher` supplied, as the composition root supplies its own.
    fn fetching(webhook_id: &str, fetcher: Arc<FakeFetcher>) -> PayPal {
        let p = unpinned(webhook_id);
        p.use_cert_fetcher(&(fetcher as Arc<dyn CertFetcher>));
        p
    }

    #[derive(Debug)]
    struct FakeFetcher {
        pem: Option<String>,
        calls: AtomicUsize,
    }

    impl FakeFetcher {
        fn serving(pem: Option<&str>) -> Arc<Self> {
            Arc::new(Self {
                pem: pem.map(str::to_string),
                calls: AtomicUsize::new(0),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl CertFetcher for FakeFetcher {
        async fn fetch(&self, _url: &str) -> Result<Vec<u8>, CertFetchError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.pem
                .clone()
                .map(String::into_bytes)
                .ok_or_else(|| CertFetchError("connection refused".into()))
        }
    }

    fn with_header(v: &Vector, name: &str, value: &str) -> Headers {
        let mut h: Headers = v
            .headers()
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
            .collect();
        h.insert(name, value);
        h
    }

    #[test]
    fn every_paypal_vector_verifies_with_its_pinned_certificate() {
        for v in testkit::vectors_for(&["paypal"]) {
            let h = v.headers();
            let got = pinned(&v).verify(&request(&h, v.body.as_bytes()), v.now_ms());
            assert_eq!(got.is_ok(), v.expected.valid, "{}: {got:?}", v.id);
            if let Ok(verified) = got {
                assert_eq!(verified.scheme, "paypal_rsa_sha256");
                assert_eq!(
                    verified.key_id.as_deref(),
                    Some(v.header("PAYPAL-CERT-URL"))
                );
            }
        }
    }

    #[tokio::test]
    async fn fetched_certificate_verifies_and_the_second_request_hits_the_cache() {
        let v = vector();
        let fetcher = FakeFetcher::serving(v.cert_pem.as_deref());
        let p = fetching(v.webhook_id.as_deref().unwrap(), fetcher.clone());
        let h = v.headers();
        let req = request(&h, v.body.as_bytes());
        p.prepare_at(&req, NOW_MS).await.unwrap();
        assert!(p.verify(&req, NOW_MS).is_ok());
        p.prepare_at(&req, NOW_MS + 1000).await.unwrap();
        assert!(p.verify(&req, NOW_MS + 1000).is_ok());
        assert_eq!(fetcher.calls(), 1);
        // Past the cache's max age the certificate is fetched again.
        p.prepare_at(&req, NOW_MS + 24 * 3600 * 1000 + 1)
            .await
            .unwrap();
        assert_eq!(fetcher.calls(), 2);
        // The real prepare (system clock) works too.
        p.prepare(&req).await.unwrap();
    }

    #[tokio::test]
    async fn failed_fetch_is_unavailable_not_unauthorized() {
        let v = vector();
        let fetcher = FakeFetcher::serving(None);
        let p = fetching(v.webhook_id.as_deref().unwrap(), fetcher.clone());
        let h = v.headers();
        let req = request(&h, v.body.as_bytes());
        let got = p.prepare_at(&req, NOW_MS).await;
        assert!(
            matches!(got, Err(VerifyError::Unavailable(ref m)) if m.contains("connection refused")),
            "{got:?}"
        );
        assert!(matches!(
            p.verify(&req, NOW_MS),
            Err(VerifyError::Unavailable(_))
        ));
        let garbage = FakeFetcher::serving(Some("<html>busy</html>"));
        let p = fetching("1JE4291016473214C", garbage);
        assert!(matches!(
            p.prepare_at(&req, NOW_MS).await,
            Err(VerifyError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn stale_cached_certificate_is_kept_when_the_refresh_fails() {
        let v = vector();
        let good = FakeFetcher::serving(v.cert_pem.as_deref());
        let p = fetching(v.webhook_id.as_deref().unwrap(), good);
        let h = v.headers();
        let req = request(&h, v.body.as_bytes());
        p.prepare_at(&req, NOW_MS).await.unwrap();
        let failing: Arc<dyn CertFetcher> = FakeFetcher::serving(None);
        let p = PayPal {
            fetcher: OnceLock::from(failing),
            ..p
        };
        let later = NOW_MS + 2 * 24 * 3600 * 1000;
        p.prepare_at(&req, later).await.unwrap();
        assert!(p.verify(&req, NOW_MS).is_ok());
    }

    #[tokio::test]
    async fn with_fetching_off_only_pinned_certificates_work() {
        let v = vector();
        let h = v.headers();
        let req = request(&h, v.body.as_bytes());
        // Off by option: a supplied fetcher is not used.
        let off = PayPal::from_config(
            &serde_json::json!({"webhook_id": v.webhook_id.as_deref().unwrap(), "fetch_certificates": false}),
            vec![],
        )
        .unwrap();
        let fetcher = FakeFetcher::serving(v.cert_pem.as_deref());
        off.use_cert_fetcher(&(fetcher.clone() as Arc<dyn CertFetcher>));
        // Off because none was supplied (a build without `http-fetch`).
        let unsupplied = unpinned(v.webhook_id.as_deref().unwrap());
        for p in [off, unsupplied] {
            p.prepare(&req).await.unwrap();
            let got = p.verify(&req, NOW_MS);
            assert!(
                matches!(got, Err(VerifyError::Unavailable(ref m)) if m.contains("fetching is off")),
                "{got:?}"
            );
        }
        assert_eq!(fetcher.calls(), 0);
    }

    #[tokio::test]
    async fn cache_holds_at_most_sixteen_certificates() {
        let v = vector();
        let fetcher = FakeFetcher::serving(v.cert_pem.as_deref());
        let p = fetching("1JE4291016473214C", fetcher.clone());
        for i in 0..20 {
            let url = format!("https://api.paypal.com/v1/notifications/certs/CERT-{i}");
            let h = Headers::from_iter([("PAYPAL-CERT-URL", url)]);
            // A minute apart: within one, the fetch budget would refuse most of them.
            let at = NOW_MS + i * 60_000;
            p.prepare_at(&request(&h, b"{}"), at).await.unwrap();
        }
        assert_eq!(p.cache().len(), CACHE_ENTRIES);
        assert!(!p
            .cache()
            .contains_key("https://api.paypal.com/v1/notifications/certs/CERT-0"));
        assert_eq!(fetcher.calls(), 20);
    }

    #[tokio::test]
    async fn strangers_naming_new_certificate_urls_cause_a_bounded_number_of_fetches() {
        let v = vector();
        let failing = FakeFetcher::serving(None);
        let p = fetching("1JE4291016473214C", failing.clone());
        let at = |i: usize| {
            let url = format!("https://api.paypal.com/v1/notifications/certs/CERT-{i}");
            Headers::from_iter([("PAYPAL-CERT-URL", url)])
        };
        // Late in one minute, so the next one starts while the failures are fresh.
        let t0 = NOW_MS - NOW_MS.rem_euclid(60_000) + 50_000;
        for i in 0..100 {
            let got = p.prepare_at(&request(&at(i), b"{}"), t0).await;
            assert!(matches!(got, Err(VerifyError::Unavailable(_))), "{got:?}");
        }
        assert_eq!(failing.calls(), FETCHES_PER_MINUTE as usize);
        // A URL that just failed is not tried again within the minute, even with budget left…
        let later = t0 + 10_000;
        assert!(p.prepare_at(&request(&at(0), b"{}"), later).await.is_err());
        assert_eq!(failing.calls(), FETCHES_PER_MINUTE as usize);
        // …and a new minute brings a new budget for new URLs.
        assert!(p
            .prepare_at(&request(&at(500), b"{}"), later)
            .await
            .is_err());
        assert_eq!(failing.calls(), FETCHES_PER_MINUTE as usize + 1);
        // A certificate outside PayPal's certificate path is never fetched.
        let other = Headers::from_iter([(
            "PAYPAL-CERT-URL",
            "https://api.paypal.com/v1/oauth2/token".to_string(),
        )]);
        let serving = FakeFetcher::serving(v.cert_pem.as_deref());
        let p = fetching("1JE4291016473214C", serving.clone());
        p.prepare_at(&request(&other, b"{}"), NOW_MS).await.unwrap();
        assert_eq!(serving.calls(), 0);
    }

    #[tokio::test]
    async fn refused_cert_urls_are_never_fetched() {
        let v = vector();
        let fetcher = FakeFetcher::serving(v.cert_pem.as_deref());
        let p = fetching(v.webhook_id.as_deref().unwrap(), fetcher.clone());
        for url in [
            "https://evil.com/v1/notifications/certs/CERT-1",
            "http://api.paypal.com/v1/notifications/certs/CERT-1",
            "https://api.paypal.com.evil.com/v1/notifications/certs/CERT-1",
            "https://api.paypal.com@evil.com/v1/notifications/certs/CERT-1",
            "https://evil.com\\@api.paypal.com/v1/notifications/certs/CERT-1",
            "https://api.paypal.com:8443/v1/notifications/certs/CERT-1",
            "https://paypal.com/v1/notifications/certs/CERT-1",
            "https://api%2epaypal.com/v1/notifications/certs/CERT-1",
            "https://api.paypal.com./v1/notifications/certs/CERT-1",
            "https://api.paypal.com",
            "ftp://api.paypal.com/x",
        ] {
            let h = with_header(&v, "PAYPAL-CERT-URL", url);
            let req = request(&h, v.body.as_bytes());
            p.prepare_at(&req, NOW_MS).await.unwrap();
            let got = p.verify(&req, NOW_MS);
            assert!(
                matches!(got, Err(VerifyError::CertificateRefused(_))),
                "{url}: {got:?}"
            );
        }
        assert_eq!(fetcher.calls(), 0);
    }

    #[test]
    fn allow_listed_cert_urls_pass() {
        for url in [
            "https://api.paypal.com/v1/notifications/certs/CERT-1",
            "https://API-M.PAYPAL.COM:443/v1/notifications/certs/CERT-1",
            "HTTPS://api.sandbox.paypal.com/v1/notifications/certs/CERT-1",
            "https://api-m.sandbox.paypal.com/v1/notifications/certs/CERT-1",
        ] {
            assert_eq!(check_cert_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn refused_cert_urls_say_why() {
        for (url, why) in [
            (
                "https://api.paypal.com/v1/notifications/certs/a b",
                "certificate URL has characters outside plain printable ASCII",
            ),
            (
                "http://api.paypal.com/v1/notifications/certs/C",
                "certificate URL is not https",
            ),
            (
                "https://u@api.paypal.com/v1/notifications/certs/C",
                "certificate URL carries user info",
            ),
            (
                "https://api.paypal.com:8443/v1/notifications/certs/C",
                "certificate URL port \"8443\" is not 443",
            ),
            (
                "https://evil.com/v1/notifications/certs/C",
                "certificate host \"evil.com\" is not a PayPal API host",
            ),
            (
                "https://api.paypal.com/v1/other/C",
                "certificate URL path is not under /v1/notifications/certs/ (PayPal's certificates)",
            ),
        ] {
            let err = check_cert_url(url).unwrap_err();
            assert_eq!(err.to_string(), why, "{url}");
        }
    }

    #[test]
    fn wrong_webhook_id_is_refused() {
        let v = vector();
        let url = v.header("PAYPAL-CERT-URL");
        let p = PayPal::from_config(
            &serde_json::json!({"webhook_id": "WEBHOOK_ID", "certificates": {url: v.cert_pem.as_deref().unwrap()}}),
            vec![],
        )
        .unwrap();
        let h = v.headers();
        assert_eq!(
            p.verify(&request(&h, v.body.as_bytes()), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn changed_transmission_headers_are_refused() {
        let v = vector();
        let p = pinned(&v);
        let h = with_header(
            &v,
            "PAYPAL-TRANSMISSION-ID",
            "69cd13f0-d67a-11e5-baa3-778b53f4ae56",
        );
        assert_eq!(
            p.verify(&request(&h, v.body.as_bytes()), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
        let h = with_header(&v, "PAYPAL-TRANSMISSION-TIME", "2026-01-01T00:00:01Z");
        assert_eq!(
            p.verify(&request(&h, v.body.as_bytes()), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn expired_or_not_yet_valid_certificate_is_refused() {
        let v = vector();
        let p = pinned(&v);
        let h = v.headers();
        let req = request(&h, v.body.as_bytes());
        let cert = RsaCertificate::from_pem(v.cert_pem.as_deref().unwrap().as_bytes()).unwrap();
        for now in [cert.not_after_ms + 1, cert.not_before_ms - 1] {
            assert!(
                matches!(p.verify(&req, now), Err(VerifyError::CertificateRefused(_))),
                "{now}"
            );
        }
    }

    #[test]
    fn paypal_tolerance_is_configurable() {
        let v = vector();
        let h = v.headers();
        let req = request(&h, v.body.as_bytes());
        let url = v.header("PAYPAL-CERT-URL");
        let tight = PayPal::from_config(
            &serde_json::json!({"webhook_id": v.webhook_id.as_deref().unwrap(), "tolerance_seconds": 300,
                                "certificates": {url: v.cert_pem.as_deref().unwrap()}}),
            vec![],
        )
        .unwrap();
        assert_eq!(
            tight.verify(&req, NOW_MS + 301_000),
            Err(VerifyError::TimestampTooOld {
                age_s: 301,
                tolerance_s: 300
            })
        );
    }

    #[test]
    fn a_base64_signature_of_the_wrong_length_never_matches() {
        let v = vector();
        let short_sig = with_header(&v, "PAYPAL-TRANSMISSION-SIG", "AAAA");
        assert_eq!(
            pinned(&v).verify(&request(&short_sig, v.body.as_bytes()), NOW_MS),
            Err(VerifyError::SignatureMismatch { keys_tried: 1 })
        );
    }

    #[test]
    fn paypal_vector_extracts_id_type_money_and_entity() {
        let v = vector();
        let h = v.headers();
        let got = pinned(&v).extract(&request(&h, v.body.as_bytes())).unwrap();
        assert_eq!(
            got,
            vec![Extracted {
                event_id: Some("WH-2WR32451HC0233532-67976317FL4543714".into()),
                unsigned_id: None,
                event_type: Some("PAYMENT.CAPTURE.COMPLETED".into()),
                canonical_type: Some(canonical::PAYMENT_SUCCEEDED),
                occurred_at_ms: Some(NOW_MS),
                entity: Some("42311647XV020574X".into()),
                object_id: Some("42311647XV020574X".into()),
                amount: Some(1000),
                currency: Some("USD".into()),
                part: None,
            }]
        );
    }

    #[test]
    fn paypal_payer_is_the_entity_and_v1_and_dispute_amounts_are_read() {
        let p = unpinned("W");
        let h = Headers::new();
        let sub = br#"{"id":"WH-1","event_type":"BILLING.SUBSCRIPTION.CANCELLED","resource":{"id":"I-BW452GLLEP1G","subscriber":{"payer_id":"2J6QB8YJQSJRJ","email_address":"a@example.com"}}}"#;
        let e = p.extract(&request(&h, sub)).unwrap().remove(0);
        assert_eq!(e.entity.as_deref(), Some("2J6QB8YJQSJRJ"));
        assert_eq!(e.canonical_type, Some(canonical::SUBSCRIPTION_CANCELED));
        let sale = br#"{"id":"WH-2","event_type":"PAYMENT.SALE.COMPLETED","resource":{"id":"80F","amount":{"total":"21.00","currency":"USD"}}}"#;
        let e = p.extract(&request(&h, sale)).unwrap().remove(0);
        assert_eq!((e.amount, e.currency.as_deref()), (Some(2100), Some("USD")));
        let dispute = br#"{"id":"WH-3","event_type":"CUSTOMER.DISPUTE.CREATED","resource":{"dispute_id":"PP-D-1","dispute_amount":{"currency_code":"JPY","value":"1500"}}}"#;
        let e = p.extract(&request(&h, dispute)).unwrap().remove(0);
        assert_eq!((e.amount, e.currency.as_deref()), (Some(1500), Some("JPY")));
        assert_eq!(e.entity.as_deref(), Some("PP-D-1"));
        assert_eq!(e.canonical_type, Some(canonical::PAYMENT_DISPUTED));
        let bad_amount = br#"{"id":"WH-4","event_type":"X","resource":{"amount":{"value":"1.234","currency_code":"USD"}}}"#;
        let e = p.extract(&request(&h, bad_amount)).unwrap().remove(0);
        assert_eq!((e.amount, e.currency), (None, None));
        for body in [&b"x"[..], b"[]", br#"{"event_type":"X"}"#, br#"{"id":7}"#] {
            assert!(p.extract(&request(&h, body)).is_err(), "{body:?}");
        }
    }

    #[test]
    fn paypal_event_types_map_to_canonical_ones() {
        use canonical::*;
        for (t, expected) in [
            ("PAYMENT.CAPTURE.COMPLETED", Some(PAYMENT_SUCCEEDED)),
            ("PAYMENT.CAPTURE.DENIED", Some(PAYMENT_FAILED)),
            ("PAYMENT.CAPTURE.PENDING", Some(PAYMENT_PENDING)),
            ("PAYMENT.CAPTURE.REFUNDED", Some(PAYMENT_REFUNDED)),
            ("CUSTOMER.DISPUTE.CREATED", Some(PAYMENT_DISPUTED)),
            ("BILLING.SUBSCRIPTION.CREATED", Some(SUBSCRIPTION_CREATED)),
            ("BILLING.SUBSCRIPTION.ACTIVATED", Some(SUBSCRIPTION_UPDATED)),
            ("BILLING.SUBSCRIPTION.EXPIRED", Some(SUBSCRIPTION_CANCELED)),
            ("CHECKOUT.ORDER.APPROVED", None),
        ] {
            assert_eq!(canonical_type(t), expected, "{t}");
        }
    }

    #[test]
    fn paypal_cannot_sign_and_its_sample_extracts() {
        let p = unpinned("W");
        let input = SignInput {
            body: b"{}",
            now_ms: NOW_MS,
            delivery_id: "d",
        };
        let err = p.sign(&input).unwrap_err();
        assert!(
            err.0.contains("private key the receiver does not hold"),
            "{err}"
        );
        let body = p.sample_body("0d5c2f8e-1b7a-4a8c-9e31-6f0b2a4c7d9e", NOW_MS);
        let e = p
            .extract(&request(&Headers::new(), &body))
            .unwrap()
            .remove(0);
        assert_eq!(e.event_id.as_deref(), Some("WH-0D5C2F8E1B7A4A8C9"));
        assert_eq!((e.amount, e.occurred_at_ms), (Some(2000), Some(NOW_MS)));
    }

    #[test]
    fn paypal_config_errors_are_clear() {
        let err = PayPal::from_config(&serde_json::Value::Null, vec![]).unwrap_err();
        assert!(err.0.contains("missing field `webhook_id`"), "{err}");
        let err = PayPal::from_config(&serde_json::json!({"webhook_id": " "}), vec![]).unwrap_err();
        assert!(err.0.contains("webhook_id"), "{err}");
        let err = PayPal::from_config(
            &serde_json::json!({"webhook_id": "W"}),
            vec![secret("k", "s")],
        )
        .unwrap_err();
        assert!(err.0.contains("takes no secrets"), "{err}");
        let err = PayPal::from_config(
            &serde_json::json!({"webhook_id": "W", "certificates": {"https://evil.com/c": "x"}}),
            vec![],
        )
        .unwrap_err();
        assert!(
            err.0.contains("evil.com") && err.0.contains("not a PayPal API host"),
            "{err}"
        );
        let err = PayPal::from_config(
            &serde_json::json!({"webhook_id": "W", "certificates": {"https://api.paypal.com/v1/notifications/certs/C": "not pem"}}),
            vec![],
        )
        .unwrap_err();
        assert!(
            err.0
                .contains("certificates[\"https://api.paypal.com/v1/notifications/certs/C\"]"),
            "{err}"
        );
        let err = PayPal::from_config(
            &serde_json::json!({"webhook_id": "W", "cert_url": "x"}),
            vec![],
        )
        .unwrap_err();
        assert!(err.0.contains("unknown field `cert_url`"), "{err}");
    }
}
