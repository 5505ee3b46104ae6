//! Polling: pulling a source's events from its provider's API, into the same envelopes,
//! queue and dedupe as webhooks. One file per poll kind under [`kinds`], behind [`PollKind`];
//! the [`poller`](crate::poller) owns everything a kind must not get wrong on its own: the lease, the
//! request budget, retries, enqueue-before-cursor, and the run record.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::ports::http::{HttpClient, HttpError, HttpResponse};
use crate::secret::Secret;

pub mod kinds;

/// Provider API answers larger than this are refused (a page of 100 Stripe events is far
/// below): the cap every poller's HTTP client is built with.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// One page of a poll: the items after the cursor, oldest first, and the cursor that
/// follows them. The runner enqueues the items, then stores `cursor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Each item's exact bytes as the API returned them (an event object, an update).
    pub items: Vec<Vec<u8>>,
    /// Where the next page starts; stored only once `items` are durably queued.
    pub cursor: Value,
    /// The API has more items after this page right now.
    pub more: bool,
}

/// Why a fetch failed, decided from the response by [`classify`] so every kind treats a
/// status the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// 429 or 503: wait (at least `retry_after` when the server said), then retry.
    #[error("throttled: {detail}")]
    Throttled {
        retry_after: Option<Duration>,
        detail: String,
    },
    /// Other 5xx, timeouts, network errors: retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// Other 4xx, a body that is not what the API documents, a refused request: stop the
    /// run and record why (a retry would fail the same way).
    #[error("{0}")]
    Fatal(String),
}

/// What a kind gets for one request.
pub struct FetchContext<'a> {
    pub http: &'a dyn HttpClient,
    /// The poll's API credentials (`poll.secrets`): Stripe's restricted key, the bot token.
    pub credentials: &'a [Secret],
    pub now_ms: i64,
    /// Per request; the runner keeps the whole run inside the invocation's deadline.
    pub timeout: Duration,
}

impl FetchContext<'_> {
    /// The first credential live now, as text.
    pub fn credential(&self) -> Result<&str, FetchError> {
        self.credentials
            .iter()
            .find(|s| s.is_live(self.now_ms))
            .and_then(|s| std::str::from_utf8(s.expose()).ok())
            .ok_or_else(|| FetchError::Fatal("no live poll credential (poll.secrets)".into()))
    }
}

#[async_trait]
pub trait PollKind: Send + Sync + Debug {
    /// The kind as written in config (`stripe_events`, `telegram_updates`, `http_json`).
    fn name(&self) -> &'static str;

    /// One request: the page after `cursor` (`None` on a source's first run).
    async fn fetch(
        &self,
        ctx: &FetchContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<Page, FetchError>;
}

/// A response as a kind should see it: 2xx and 304 pass; everything else becomes the
/// [`FetchError`] the runner knows how to handle.
pub(crate) fn classify(resp: Result<HttpResponse, HttpError>) -> Result<HttpResponse, FetchError> {
    let resp = match resp {
        Ok(r) => r,
        Err(e @ (HttpError::Timeout(_) | HttpError::Network(_))) => {
            return Err(FetchError::Transient(e.to_string()))
        }
        Err(e) => return Err(FetchError::Fatal(e.to_string())),
    };
    let excerpt = || {
        let text = String::from_utf8_lossy(&resp.body);
        let cut: String = text.chars().take(200).collect();
        format!("HTTP {}: {cut}", resp.status)
    };
    match resp.status {
        200..=299 | 304 => Ok(resp),
        429 | 503 => Err(FetchError::Throttled {
            retry_after: resp.headers.get("retry-after").and_then(retry_after),
            detail: excerpt(),
        }),
        500..=599 => Err(FetchError::Transient(excerpt())),
        _ => Err(FetchError::Fatal(excerpt())),
    }
}

/// `Retry-After` in seconds (HTTP dates are rare on APIs and treated as absent).
fn retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The EventBridge Scheduler expression for a poll every `every`: whole days, hours or
/// minutes, rounded up (Scheduler counts in minutes at best). Below a minute it is one
/// minute, and the poller Lambda repeats runs inside the invocation to keep `every`.
pub(crate) fn schedule_expression(every: Duration) -> String {
    let minutes = every.as_secs().div_ceil(60).max(1);
    let (n, unit) = if minutes.is_multiple_of(1440) {
        (minutes / 1440, "day")
    } else if minutes.is_multiple_of(60) {
        (minutes / 60, "hour")
    } else {
        (minutes, "minute")
    };
    // Scheduler wants the singular for 1, like EventBridge rules.
    let plural = if n == 1 { "" } else { "s" };
    format!("rate({n} {unit}{plural})")
}

/// A validated `poll` table of a source.
#[derive(Debug, Clone)]
pub struct PollSource {
    pub kind: Arc<dyn PollKind>,
    /// The schedule: how often a run starts.
    pub every: Duration,
    pub credentials: Vec<Secret>,
    /// Requests one run may make (a run with more to fetch continues on the next schedule).
    pub max_requests_per_run: u32,
    /// The provider's rate limit, kept by spacing requests inside a run.
    pub max_requests_per_minute: u32,
    /// The source also receives webhooks: an event the poll delivers first is a missed
    /// webhook (counted and recorded).
    pub reconcile: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Headers;

    fn resp(status: u16, headers: &[(&str, &str)]) -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse {
            status,
            headers: headers.iter().copied().collect::<Headers>(),
            body: b"{\"error\":\"x\"}".to_vec(),
        })
    }

    #[test]
    fn schedules_round_up_to_what_scheduler_can_express() {
        let e = |secs| schedule_expression(Duration::from_secs(secs));
        assert_eq!(e(1), "rate(1 minute)");
        assert_eq!(e(60), "rate(1 minute)");
        assert_eq!(e(61), "rate(2 minutes)");
        assert_eq!(e(600), "rate(10 minutes)");
        assert_eq!(e(3600), "rate(1 hour)");
        assert_eq!(e(7200), "rate(2 hours)");
        assert_eq!(e(5400), "rate(90 minutes)");
        assert_eq!(e(86_400), "rate(1 day)");
        assert_eq!(e(3 * 86_400), "rate(3 days)");
    }

    #[test]
    fn statuses_are_classified_once_for_every_kind() {
        assert!(classify(resp(200, &[])).is_ok());
        assert!(classify(resp(304, &[])).is_ok());
        assert_eq!(
            classify(resp(429, &[("Retry-After", "7")])).map(|_| ()),
            Err(FetchError::Throttled {
                retry_after: Some(Duration::from_secs(7)),
                detail: "HTTP 429: {\"error\":\"x\"}".into()
            })
        );
        assert!(matches!(
            classify(resp(503, &[])),
            Err(FetchError::Throttled {
                retry_after: None,
                ..
            })
        ));
        assert!(matches!(
            classify(resp(502, &[])),
            Err(FetchError::Transient(_))
        ));
        assert!(
            matches!(classify(resp(401, &[])), Err(FetchError::Fatal(m)) if m.starts_with("HTTP 401"))
        );
        assert!(matches!(
            classify(resp(409, &[])),
            Err(FetchError::Fatal(_))
        ));
        assert!(matches!(
            classify(Err(HttpError::Timeout("t".into()))),
            Err(FetchError::Transient(_))
        ));
        assert!(matches!(
            classify(Err(HttpError::TooLarge { limit: 1 })),
            Err(FetchError::Fatal(_))
        ));
    }
}
