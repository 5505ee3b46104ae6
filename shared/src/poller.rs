//! One poll run of one source: take the lease (or exit at once if another run holds it),
//! fetch pages from the stored cursor within the request budget and the deadline, turn each
//! item into an envelope with the source's provider, put them durably on the queue, and
//! only then store the cursor (a conditional write on its version, under the live lease).
//! A crash anywhere re-sends at most the last unconfirmed page; dedupe absorbs it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::{info, warn};

use crate::config::{Config, Source};
use crate::enqueue::{enqueue_envelopes, Pace};
use crate::envelope::{self, Envelope, PartOf, VerifiedBy, Via, ENVELOPE_VERSION};
use crate::metrics;
use crate::poll::{FetchContext, FetchError, Page, PollSource};
use crate::ports::http::HttpClient;
use crate::ports::{
    Acquire, BlobStore, Clock, Ledger, PollState, PollStore, PollStoreError, Queue, QueueError,
    TrailEntry, TrailStatus,
};
use crate::request::{Headers, InboundRequest};

/// A request is given this long at most, and a run starts no request it could not finish
/// before the deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Transient failures of one request are retried this many times (each retry counts in the
/// request budget).
const RETRIES: u32 = 3;
const BACKOFF_BASE_MS: u64 = 500;
const BACKOFF_CAP_MS: u64 = 8_000;

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("no source {0:?}")]
    UnknownSource(String),
    #[error("source {0:?} has no poll table: add a [sources.poll] table to it (docs/polling.md)")]
    NotPolled(String),
    #[error(transparent)]
    Store(#[from] PollStoreError),
}

/// Why a run stopped early; recorded as [`RunOutcome::Failed`] with its message.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("stored cursor is not JSON: {0}")]
    StoredCursor(serde_json::Error),
    /// The kind's own words: a retry would not fix it.
    #[error("{0}")]
    Fatal(String),
    #[error("gave up after {tries} tries: {last}")]
    GaveUp { tries: u32, last: FetchError },
    #[error("item {index} of the page: {source}")]
    Item {
        index: usize,
        source: crate::providers::ExtractError,
    },
    #[error("enqueue failed; the page is fetched again next run: {0}")]
    Enqueue(QueueError),
    #[error("the blob store failed; the page is fetched again next run: {0}")]
    Blob(String),
    #[error(transparent)]
    Cursor(#[from] PollStoreError),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The API had nothing more after the last page.
    CaughtUp,
    /// The run used its requests; the next scheduled run goes on from the stored cursor.
    BudgetSpent,
    /// Too close to the invocation's deadline to start another request.
    DeadlineNear,
    /// Another run holds the source's lease: this one did nothing.
    Busy { holder: String, until_ms: i64 },
    /// Stopped on an error that a retry would not fix (recorded; the cursor stays where the
    /// last enqueued page left it).
    Failed(String),
}

impl RunOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunOutcome::CaughtUp => "caught_up",
            RunOutcome::BudgetSpent => "budget_spent",
            RunOutcome::DeadlineNear => "deadline_near",
            RunOutcome::Busy { .. } => "busy",
            RunOutcome::Failed(_) => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub source: String,
    pub outcome: RunOutcome,
    pub requests: u32,
    pub pages: u32,
    pub items: usize,
    /// `(dedupe_key, message_id)` of every envelope this run queued.
    pub enqueued: Vec<(String, String)>,
    /// What each queued envelope was, in the same order: a delayed check reads this to
    /// tell whether the event it waits for came with this run.
    pub events: Vec<PolledEvent>,
    /// The cursor as stored at the end (JSON text).
    pub cursor: Option<String>,
    /// When the newest item this run saw happened (from the provider's own time), for the
    /// poll-lag metric: how far behind the source the poll is.
    pub newest_item_ms: Option<i64>,
    pub started_ms: i64,
    pub ended_ms: i64,
}

/// The parts of a queued envelope a delayed check matches on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolledEvent {
    pub dedupe_key: String,
    pub entity: Option<String>,
    /// The provider's type and the canonical type, where known.
    pub names: Vec<String>,
}

impl PolledEvent {
    fn of(e: &Envelope) -> Self {
        Self {
            dedupe_key: e.dedupe_key.clone(),
            entity: e.entity.clone(),
            names: [e.event_type.clone(), e.canonical_type.clone()]
                .into_iter()
                .flatten()
                .collect(),
        }
    }
}

pub struct Poller {
    config: Arc<Config>,
    queue: Arc<dyn Queue>,
    store: Arc<dyn PollStore>,
    ledger: Arc<dyn Ledger>,
    http: Arc<dyn HttpClient>,
    clock: Arc<dyn Clock>,
    /// Names this process in leases (a Lambda request id, `inlet-<hostname>-<pid>`).
    holder: String,
    /// Where an item too large for a queue message or a bus entry goes (claim checks).
    blobs: Option<Arc<dyn BlobStore>>,
}

impl Poller {
    pub fn new(
        config: Arc<Config>,
        queue: Arc<dyn Queue>,
        store: Arc<dyn PollStore>,
        ledger: Arc<dyn Ledger>,
        http: Arc<dyn HttpClient>,
        clock: Arc<dyn Clock>,
        holder: impl Into<String>,
    ) -> Self {
        Self {
            config,
            queue,
            store,
            ledger,
            http,
            clock,
            holder: holder.into(),
            blobs: None,
        }
    }

    /// Claim-check large items into `blobs`, as ingest does.
    pub fn with_blobs(mut self, blobs: Arc<dyn BlobStore>) -> Self {
        self.blobs = Some(blobs);
        self
    }

    /// What one scheduled invocation does: one run when the source's `every` is a minute or
    /// more (the schedule starts the next); below that, since Scheduler fires at most once a
    /// minute, a run every `every` until no run could finish a request before `deadline_ms`.
    pub async fn run_invocation(
        &self,
        source_id: &str,
        deadline_ms: i64,
    ) -> Result<Vec<RunReport>, PollError> {
        let every = self
            .config
            .source(source_id)
            .and_then(|s| s.poll.as_ref())
            .map(|p| p.every);
        let mut reports = Vec::new();
        loop {
            let started = self.clock.now_ms();
            reports.push(self.run(source_id, deadline_ms).await?);
            let Some(every) = every.filter(|e| *e < Duration::from_secs(60)) else {
                return Ok(reports);
            };
            let next = started + every.as_millis() as i64;
            if next + REQUEST_TIMEOUT.as_millis() as i64 > deadline_ms {
                return Ok(reports);
            }
            let wait = next - self.clock.now_ms();
            if wait > 0 {
                self.clock.sleep(Duration::from_millis(wait as u64)).await;
            }
        }
    }

    /// Poll `source_id` until it is caught up, its budget is spent, or `deadline_ms` is near.
    pub async fn run(&self, source_id: &str, deadline_ms: i64) -> Result<RunReport, PollError> {
        let source = self
            .config
            .source(source_id)
            .ok_or_else(|| PollError::UnknownSource(source_id.to_owned()))?;
        let poll = source
            .poll
            .as_ref()
            .ok_or_else(|| PollError::NotPolled(source_id.to_owned()))?;
        let started_ms = self.clock.now_ms();
        // The lease covers the whole run and a margin; it is given back at the end.
        let lease_until = |now: i64| deadline_ms.max(now) + REQUEST_TIMEOUT.as_millis() as i64;
        let mut report = RunReport {
            source: source_id.to_owned(),
            outcome: RunOutcome::CaughtUp,
            requests: 0,
            pages: 0,
            items: 0,
            enqueued: Vec::new(),
            events: Vec::new(),
            cursor: None,
            newest_item_ms: None,
            started_ms,
            ended_ms: started_ms,
        };
        let state = match self
            .store
            .acquire(source_id, &self.holder, started_ms, lease_until(started_ms))
            .await?
        {
            Acquire::Acquired(state) => state,
            Acquire::Held { holder, until_ms } => {
                info!(source = %source_id, holder = %holder, "poll skipped: another run holds the lease");
                report.outcome = RunOutcome::Busy { holder, until_ms };
                self.record(&report).await;
                return Ok(report);
            }
        };
        let result = self
            .pages(source, poll, state, deadline_ms, &lease_until, &mut report)
            .await;
        if let Err(e) = self.store.release(source_id, &self.holder).await {
            warn!(source = %source_id, error = %e, "could not release the poll lease; it lapses on its own");
        }
        report.outcome = match result {
            Ok(outcome) => outcome,
            Err(why) => RunOutcome::Failed(why.to_string()),
        };
        report.ended_ms = self.clock.now_ms();
        self.record(&report).await;
        Ok(report)
    }

    async fn pages(
        &self,
        source: &Source,
        poll: &PollSource,
        mut state: PollState,
        deadline_ms: i64,
        lease_until: &(dyn Fn(i64) -> i64 + Sync),
        report: &mut RunReport,
    ) -> Result<RunOutcome, RunError> {
        report.cursor = state.cursor.clone();
        let gap_ms = 60_000 / i64::from(poll.max_requests_per_minute.max(1));
        // The rate limit spans runs: the previous run's last stored page was a request too
        // (runs can follow each other closely: sub-minute polls, a manual `inlet poll`).
        let mut last_request_ms: Option<i64> = state.cursor.as_ref().map(|_| state.updated_at_ms);
        loop {
            let cursor: Option<Value> = match &state.cursor {
                Some(text) => Some(serde_json::from_str(text).map_err(RunError::StoredCursor)?),
                None => None,
            };
            let fetched = self
                .fetch(
                    poll,
                    cursor.as_ref(),
                    deadline_ms,
                    gap_ms,
                    &mut last_request_ms,
                    report,
                )
                .await?;
            let Some(page) = fetched else {
                return Ok(if report.requests >= poll.max_requests_per_run {
                    RunOutcome::BudgetSpent
                } else {
                    RunOutcome::DeadlineNear
                });
            };
            self.queue_page(source, poll, &page, report).await?;
            // Only now, with the page durably queued, does the cursor move.
            self.store_cursor(&source.id, &mut state, &page, lease_until, report)
                .await?;
            if !page.more {
                return Ok(RunOutcome::CaughtUp);
            }
        }
    }

    /// The page's items as envelopes, durably on the queue; the report counts them.
    async fn queue_page(
        &self,
        source: &Source,
        poll: &PollSource,
        page: &Page,
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        report.pages += 1;
        report.items += page.items.len();
        let mut envelopes = self.envelopes(source, poll, &page.items)?;
        self.claim_large(&mut envelopes).await?;
        let newest = envelopes
            .iter()
            .filter_map(|e| {
                e.occurred_at
                    .as_deref()
                    .and_then(crate::time::rfc3339_ms_utc_if_unzoned)
            })
            .max();
        report.newest_item_ms = report.newest_item_ms.max(newest);
        if envelopes.is_empty() {
            return Ok(());
        }
        let sent = enqueue_envelopes(&*self.queue, &self.config, &envelopes, Pace::Sequential)
            .await
            .map_err(RunError::Enqueue)?;
        report.enqueued.extend(sent);
        report.events.extend(envelopes.iter().map(PolledEvent::of));
        Ok(())
    }

    /// Put the bodies of envelopes too large to travel inline in the blob store, before the
    /// page is queued (without a store they travel inline, up to a queue message).
    async fn claim_large(&self, envelopes: &mut [Envelope]) -> Result<(), RunError> {
        let Some(blobs) = &self.blobs else {
            return Ok(());
        };
        for env in envelopes {
            if let Some((r, bytes)) = env.claim_body_if_over(envelope::INLINE_ENVELOPE_BYTES) {
                blobs
                    .put(&r.key, &bytes)
                    .await
                    .map_err(|e| RunError::Blob(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Store the page's cursor: a conditional write on its version, under our live lease.
    async fn store_cursor(
        &self,
        source_id: &str,
        state: &mut PollState,
        page: &Page,
        lease_until: &(dyn Fn(i64) -> i64 + Sync),
        report: &mut RunReport,
    ) -> Result<(), RunError> {
        let text = page.cursor.to_string();
        let now = self.clock.now_ms();
        let version = self
            .store
            .advance(
                source_id,
                &self.holder,
                state.version,
                &text,
                now,
                lease_until(now),
            )
            .await?;
        state.version = version;
        state.cursor = Some(text);
        report.cursor = state.cursor.clone();
        Ok(())
    }

    /// One page, with the retries the error calls for; `None` when the budget or the
    /// deadline leaves no room for the request.
    async fn fetch(
        &self,
        poll: &PollSource,
        cursor: Option<&Value>,
        deadline_ms: i64,
        gap_ms: i64,
        last_request_ms: &mut Option<i64>,
        report: &mut RunReport,
    ) -> Result<Option<Page>, RunError> {
        let mut failures = 0u32;
        loop {
            if report.requests >= poll.max_requests_per_run {
                return Ok(None);
            }
            // Pace requests to the provider's rate limit.
            if let Some(last) = *last_request_ms {
                let wait = last + gap_ms - self.clock.now_ms();
                if wait > 0 {
                    self.clock.sleep(Duration::from_millis(wait as u64)).await;
                }
            }
            let now = self.clock.now_ms();
            if now + REQUEST_TIMEOUT.as_millis() as i64 > deadline_ms {
                return Ok(None);
            }
            report.requests += 1;
            *last_request_ms = Some(now);
            let ctx = FetchContext {
                http: &*self.http,
                credentials: &poll.credentials,
                now_ms: now,
                timeout: REQUEST_TIMEOUT,
            };
            let wait = match poll.kind.fetch(&ctx, cursor).await {
                Ok(page) => return Ok(Some(page)),
                Err(FetchError::Fatal(why)) => return Err(RunError::Fatal(why)),
                Err(last) if failures >= RETRIES => {
                    return Err(RunError::GaveUp {
                        tries: failures + 1,
                        last,
                    })
                }
                Err(FetchError::Throttled {
                    retry_after,
                    detail,
                }) => {
                    warn!(kind = poll.kind.name(), detail = %detail, "poll throttled");
                    retry_after.unwrap_or_else(|| backoff(failures, now))
                }
                Err(FetchError::Transient(detail)) => {
                    warn!(kind = poll.kind.name(), detail = %detail, "poll request failed; retrying");
                    backoff(failures, now)
                }
            };
            failures += 1;
            // A wait that runs past the deadline ends the run; the next one resumes.
            if self.clock.now_ms() + wait.as_millis() as i64 + REQUEST_TIMEOUT.as_millis() as i64
                > deadline_ms
            {
                return Ok(None);
            }
            self.clock.sleep(wait).await;
        }
    }

    fn envelopes(
        &self,
        source: &Source,
        poll: &PollSource,
        items: &[Vec<u8>],
    ) -> Result<Vec<Envelope>, RunError> {
        let now = self.clock.now_ms();
        let headers = Headers::new();
        let text_budget = envelope::body_field_budget(self.config.settings.max_body_bytes);
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let req = InboundRequest {
                method: "POST",
                headers: &headers,
                query: &[],
                body: item,
            };
            // An item the provider cannot read is not skipped: the run stops before the
            // cursor passes it, so it is neither lost nor silently dropped.
            let events = source
                .provider
                .extract(&req)
                .map_err(|source| RunError::Item { index: i, source })?;
            let count = events.len();
            let request_sha256 = envelope::sha256_hex(item);
            for (index, event) in events.into_iter().enumerate() {
                let bytes = event.part.as_deref().unwrap_or(item);
                let body_sha256 = envelope::sha256_hex(bytes);
                let (body, body_encoding) = envelope::encode_body(bytes, text_budget);
                out.push(Envelope {
                    v: ENVELOPE_VERSION,
                    source: source.id.clone(),
                    provider: source.provider.name().to_owned(),
                    via: Via::Poll,
                    dedupe_key: envelope::dedupe_key(
                        &source.id,
                        event.event_id.as_deref(),
                        &body_sha256,
                    ),
                    provider_event_id: event
                        .unsigned_id
                        .or(event.event_id)
                        .map(envelope::bounded_field),
                    event_type: event.event_type.map(envelope::bounded_field),
                    canonical_type: event.canonical_type.map(str::to_owned),
                    entity: event.entity.map(envelope::bounded_field),
                    object_id: event.object_id.map(envelope::bounded_field),
                    amount: event.amount,
                    currency: event.currency,
                    occurred_at: event.occurred_at_ms.map(crate::time::format_rfc3339_ms),
                    received_at: crate::time::format_rfc3339_ms(now),
                    verified: VerifiedBy {
                        scheme: format!("poll:{}", poll.kind.name()),
                        key_id: poll
                            .credentials
                            .iter()
                            .find(|s| s.is_live(now))
                            .map(|s| s.id.clone()),
                    },
                    caller_ip: None,
                    headers: Default::default(),
                    body,
                    body_encoding,
                    body_sha256,
                    part: (count > 1).then(|| PartOf {
                        index,
                        count,
                        request_sha256: request_sha256.clone(),
                    }),
                    body_ref: None,
                    request_ref: None,
                    replay: None,
                });
            }
        }
        Ok(out)
    }

    /// The run in the trail, the log and the metrics: who, when, how much, how it ended.
    async fn record(&self, report: &RunReport) {
        let source = report.source.as_str();
        info!(
            source = %source,
            outcome = report.outcome.as_str(),
            requests = report.requests,
            pages = report.pages,
            items = report.items,
            queued = report.enqueued.len(),
            "poll run"
        );
        run_metrics(report, self.clock.now_ms());
        let entry = TrailEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at_ms: report.started_ms,
            source: source.to_owned(),
            status: TrailStatus::PollRun,
            dedupe_key: None,
            provider_event_id: None,
            event_type: None,
            reason: Some(trail_reason(report)),
            source_ip: None,
            expires_at_ms: self.config.settings.trail_expires_at(report.started_ms),
        };
        if let Err(e) = self.ledger.append(&entry).await {
            warn!(source = %source, error = %e, "could not record the poll run in the trail");
        }
    }
}

/// How the run ended and what it did, where the next run starts, and how long this one took:
/// enough to tell a stalled cursor from a slow API. A cursor holds ids and times, never a
/// credential.
fn trail_reason(report: &RunReport) -> String {
    let reason = match &report.outcome {
        RunOutcome::Failed(why) => format!(
            "failed: {why}; requests={} pages={} items={}",
            report.requests, report.pages, report.items
        ),
        RunOutcome::Busy { holder, .. } => format!("busy: lease held by {holder}"),
        other => format!(
            "{}; requests={} pages={} items={} queued={}",
            other.as_str(),
            report.requests,
            report.pages,
            report.items,
            report.enqueued.len()
        ),
    };
    let cursor: String = report
        .cursor
        .as_deref()
        .unwrap_or("none")
        .chars()
        .take(200)
        .collect();
    format!(
        "{reason} ms={} cursor={cursor}",
        report.ended_ms - report.started_ms
    )
}

/// `poll_items`, `poll_errors` and `poll_lag` for one run.
fn run_metrics(report: &RunReport, now: i64) {
    let source = report.source.as_str();
    metrics::emit(
        now,
        "poll_items",
        metrics::Unit::Count,
        report.items as f64,
        source,
        None,
    );
    if let RunOutcome::Failed(_) = report.outcome {
        metrics::count(now, "poll_errors", source);
    }
    // How far behind the provider the poll is: now minus the newest item's own time; a run
    // that caught up without new items is not behind at all. A run that learnt nothing (busy,
    // failed before a page) says nothing, and poll_errors speaks instead.
    let lag = match (report.newest_item_ms, &report.outcome) {
        (Some(newest), _) => Some((now - newest).max(0)),
        (None, RunOutcome::CaughtUp) => Some(0),
        (None, _) => None,
    };
    if let Some(lag) = lag {
        metrics::emit(
            now,
            "poll_lag",
            metrics::Unit::Milliseconds,
            lag as f64,
            source,
            None,
        );
    }
}

/// Exponential backoff with full jitter: uniform in `[0, min(cap, base·2^n)]`. The jitter
/// comes from the clock's low bits, which is enough to spread pollers that failed together.
fn backoff(failures: u32, now_ms: i64) -> Duration {
    let ceiling = BACKOFF_BASE_MS
        .saturating_mul(1u64 << failures.min(16))
        .min(BACKOFF_CAP_MS);
    let jitter = (now_ms
        .unsigned_abs()
        .wrapping_mul(6_364_136_223_846_793_005)
        >> 33)
        % (ceiling + 1);
    Duration::from_millis(jitter)
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::adapters::embedded::EmbeddedStore;
    use crate::config::{self, ConfigDoc};
    use crate::poll::PollKind;
    use crate::ports::http::{HttpError, HttpRequest, HttpResponse};
    use crate::ports::{ManualClock, TrailQuery, TrailRow};

    const T0: i64 = 1_767_225_600_000;
    const DEADLINE: i64 = T0 + 600_000;

    /// An API as a list of items `{"id":"e<n>"}`, served `page` at a time after a numeric
    /// cursor, with scripted failures for the next requests.
    #[derive(Debug, Default)]
    struct FakeApi {
        items: Mutex<Vec<u32>>,
        page: usize,
        script: Mutex<Vec<FetchError>>,
        requests: Mutex<u32>,
        /// When each request was made.
        at: Mutex<Vec<i64>>,
    }

    #[async_trait]
    impl PollKind for FakeApi {
        fn name(&self) -> &'static str {
            "fake"
        }

        async fn fetch(
            &self,
            ctx: &FetchContext<'_>,
            cursor: Option<&Value>,
        ) -> Result<Page, FetchError> {
            *self.requests.lock().unwrap() += 1;
            self.at.lock().unwrap().push(ctx.now_ms);
            if let Some(e) = self.script.lock().unwrap().pop() {
                return Err(e);
            }
            let after = cursor.and_then(|c| c["after"].as_u64()).unwrap_or(0) as u32;
            let items = self.items.lock().unwrap();
            let newer: Vec<u32> = items.iter().copied().filter(|n| *n > after).collect();
            let page: Vec<u32> = newer.iter().copied().take(self.page).collect();
            let last = page.last().copied().unwrap_or(after);
            Ok(Page {
                items: page
                    .iter()
                    .map(|n| {
                        format!(
                            r#"{{"id":"e{n}","type":"bet.placed","at":{}}}"#,
                            1_767_225_000 + n
                        )
                        .into_bytes()
                    })
                    .collect(),
                cursor: serde_json::json!({ "after": last }),
                more: newer.len() > page.len(),
            })
        }
    }

    #[derive(Debug)]
    struct NoHttp;

    #[async_trait]
    impl HttpClient for NoHttp {
        async fn send(&self, _req: HttpRequest) -> Result<HttpResponse, HttpError> {
            Err(HttpError::Invalid(
                "the fake kind makes no HTTP calls".into(),
            ))
        }
    }

    struct Harness {
        store: EmbeddedStore,
        clock: Arc<ManualClock>,
        api: Arc<FakeApi>,
        config: Arc<Config>,
    }

    fn harness(items: u32, page: usize, budget: u32) -> Harness {
        let doc = ConfigDoc::parse(
            r#"
            [settings]
            environment = "local"
            [[sources]]
            id = "games"
            provider = "generic"
            secrets = ["literal:webhook-secret"]
            options = { signature = { header = "x-sig" }, event_id = { json_pointer = "/id" }, event_type = { json_pointer = "/type" }, occurred_at = { json_pointer = "/at" } }
            [[targets]]
            id = "file"
            kind = "jsonl"
            path = "e.jsonl"
            [[routes]]
            sources = ["*"]
            targets = ["file"]
            "#,
            Some("toml"),
        )
        .unwrap();
        let mut config = config::validate(doc, ".".into(), &|_: &str| None).unwrap();
        let api = Arc::new(FakeApi {
            items: Mutex::new((1..=items).collect()),
            page,
            ..Default::default()
        });
        config.sources.get_mut("games").unwrap().poll = Some(PollSource {
            kind: api.clone(),
            every: Duration::from_secs(60),
            credentials: vec![crate::secret::Secret::new("api", b"key".to_vec(), None)],
            max_requests_per_run: budget,
            max_requests_per_minute: 600,
            reconcile: false,
        });
        let clock = Arc::new(ManualClock::new(T0));
        Harness {
            store: EmbeddedStore::open_in_memory(clock.clone()).unwrap(),
            clock,
            api,
            config: Arc::new(config),
        }
    }

    impl Harness {
        fn poller(&self, holder: &str) -> Poller {
            self.poller_with(holder, Arc::new(self.store.ledger()))
        }

        fn poller_with(&self, holder: &str, store: Arc<dyn PollStore>) -> Poller {
            Poller::new(
                self.config.clone(),
                Arc::new(self.store.queue("events", None)),
                store,
                Arc::new(self.store.ledger()),
                Arc::new(NoHttp),
                self.clock.clone(),
                holder,
            )
        }

        fn keys(reports: &[&RunReport]) -> Vec<String> {
            reports
                .iter()
                .flat_map(|r| r.enqueued.iter().map(|(k, _)| k.clone()))
                .collect()
        }
    }

    fn all_keys(n: u32) -> Vec<String> {
        (1..=n).map(|i| format!("games#e{i}")).collect()
    }

    #[tokio::test]
    async fn a_run_pages_to_the_end_and_queues_every_item_once_in_order() {
        let h = harness(10, 3, 20);
        let report = h.poller("run-1").run("games", DEADLINE).await.unwrap();
        assert_eq!(report.outcome, RunOutcome::CaughtUp);
        assert_eq!((report.pages, report.items), (4, 10));
        // The newest item's own time, for the poll-lag metric.
        assert_eq!(report.newest_item_ms, Some((1_767_225_000 + 10) * 1000));
        assert_eq!(Harness::keys(&[&report]), all_keys(10));
        let state = h.store.ledger().state("games").await.unwrap().unwrap();
        assert_eq!(state.cursor.as_deref(), Some(r#"{"after":10}"#));
        assert_eq!(state.lease_holder, None, "the lease is given back");
        // Nothing new: the next run makes one request and queues nothing.
        let again = h.poller("run-2").run("games", DEADLINE).await.unwrap();
        assert_eq!((again.outcome, again.items), (RunOutcome::CaughtUp, 0));
        let trail = h
            .store
            .ledger()
            .list(&TrailQuery {
                source: None,
                limit: 0,
                ..Default::default()
            })
            .await
            .unwrap();
        let runs: Vec<String> = trail
            .iter()
            .filter_map(|r| match r {
                TrailRow::Entry(e) if e.status == TrailStatus::PollRun => e.reason.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(runs.len(), 2);
        assert!(
            runs.iter()
                .any(|r| r.starts_with("caught_up; requests=4 pages=4 items=10 queued=10")),
            "{runs:?}"
        );
    }

    #[tokio::test]
    async fn a_second_run_exits_at_once_while_the_first_holds_the_lease() {
        let h = harness(5, 10, 20);
        let store = h.store.ledger();
        assert!(matches!(
            store.acquire("games", "run-1", T0, DEADLINE).await.unwrap(),
            Acquire::Acquired(_)
        ));
        let report = h.poller("run-2").run("games", DEADLINE).await.unwrap();
        assert!(matches!(report.outcome, RunOutcome::Busy { ref holder, .. } if holder == "run-1"));
        assert_eq!(*h.api.requests.lock().unwrap(), 0, "no request was made");
    }

    #[tokio::test]
    async fn a_spent_budget_stops_the_run_and_the_next_one_carries_on() {
        let h = harness(10, 3, 2);
        let first = h.poller("run-1").run("games", DEADLINE).await.unwrap();
        assert_eq!(
            (first.outcome.clone(), first.items),
            (RunOutcome::BudgetSpent, 6)
        );
        let second = h.poller("run-2").run("games", DEADLINE).await.unwrap();
        assert_eq!(second.outcome, RunOutcome::CaughtUp);
        assert_eq!(Harness::keys(&[&first, &second]), all_keys(10));
    }

    /// A poll store whose next `advance` fails, as if the process died after the page was
    /// queued and before the cursor write.
    struct LosesOneAdvance {
        inner: Arc<dyn PollStore>,
        armed: Mutex<bool>,
    }

    #[async_trait]
    impl PollStore for LosesOneAdvance {
        async fn acquire(
            &self,
            s: &str,
            h: &str,
            now: i64,
            until: i64,
        ) -> Result<Acquire, PollStoreError> {
            self.inner.acquire(s, h, now, until).await
        }
        async fn advance(
            &self,
            s: &str,
            h: &str,
            v: u64,
            c: &str,
            now: i64,
            until: i64,
        ) -> Result<u64, PollStoreError> {
            if std::mem::take(&mut *self.armed.lock().unwrap()) {
                return Err(PollStoreError::Backend(
                    "crash before the cursor write".into(),
                ));
            }
            self.inner.advance(s, h, v, c, now, until).await
        }
        async fn release(&self, s: &str, h: &str) -> Result<(), PollStoreError> {
            self.inner.release(s, h).await
        }
        async fn state(&self, s: &str) -> Result<Option<PollState>, PollStoreError> {
            self.inner.state(s).await
        }
        async fn reset(&self, s: &str, v: u64, now: i64) -> Result<u64, PollStoreError> {
            self.inner.reset(s, v, now).await
        }
    }

    #[tokio::test]
    async fn a_crash_between_enqueue_and_cursor_write_resends_only_that_page() {
        let h = harness(7, 3, 20);
        let flaky = Arc::new(LosesOneAdvance {
            inner: Arc::new(h.store.ledger()),
            armed: Mutex::new(true),
        });
        let first = h
            .poller_with("run-1", flaky)
            .run("games", DEADLINE)
            .await
            .unwrap();
        assert!(matches!(first.outcome, RunOutcome::Failed(ref why) if why.contains("crash")));
        assert_eq!(
            Harness::keys(&[&first]),
            all_keys(3),
            "the first page was queued"
        );
        let second = h.poller("run-2").run("games", DEADLINE).await.unwrap();
        assert_eq!(second.outcome, RunOutcome::CaughtUp);
        let keys = Harness::keys(&[&first, &second]);
        // The unconfirmed page comes again (dedupe absorbs it); nothing is missing.
        assert_eq!(keys.len(), 10);
        assert_eq!(keys.iter().collect::<HashSet<_>>().len(), 7);
        assert_eq!(&keys[3..6], &all_keys(3)[..]);
    }

    #[tokio::test]
    async fn throttling_waits_for_retry_after_and_transient_errors_back_off() {
        let h = harness(4, 10, 20);
        h.api.script.lock().unwrap().extend([
            FetchError::Transient("HTTP 502".into()),
            FetchError::Throttled {
                retry_after: Some(Duration::from_secs(7)),
                detail: "HTTP 429".into(),
            },
        ]);
        let report = h.poller("run-1").run("games", DEADLINE).await.unwrap();
        assert_eq!(report.outcome, RunOutcome::CaughtUp);
        assert_eq!((report.requests, report.items), (3, 4));
        assert!(
            h.clock.now_ms() >= T0 + 7_000,
            "waited at least Retry-After"
        );
    }

    #[tokio::test]
    async fn a_fatal_error_stops_the_run_and_records_why_without_moving_the_cursor() {
        let h = harness(4, 2, 20);
        let first = h.poller("run-1").run("games", DEADLINE).await.unwrap();
        assert_eq!(first.outcome, RunOutcome::CaughtUp);
        h.api.items.lock().unwrap().extend([5, 6]);
        h.api
            .script
            .lock()
            .unwrap()
            .push(FetchError::Fatal("HTTP 401: invalid api key".into()));
        let report = h.poller("run-2").run("games", DEADLINE).await.unwrap();
        assert_eq!(
            report.outcome,
            RunOutcome::Failed("HTTP 401: invalid api key".into())
        );
        let state = h.store.ledger().state("games").await.unwrap().unwrap();
        assert_eq!(state.cursor.as_deref(), Some(r#"{"after":4}"#));
        let next = h.poller("run-3").run("games", DEADLINE).await.unwrap();
        assert_eq!(Harness::keys(&[&next]), vec!["games#e5", "games#e6"]);
    }

    #[tokio::test]
    async fn an_item_the_provider_cannot_read_stops_the_run_before_the_cursor_passes_it() {
        let h = harness(0, 10, 20);
        // Not JSON: the generic provider's id pointer cannot be read.
        #[derive(Debug)]
        struct Garbage;
        #[async_trait]
        impl PollKind for Garbage {
            fn name(&self) -> &'static str {
                "garbage"
            }
            async fn fetch(
                &self,
                _: &FetchContext<'_>,
                _: Option<&Value>,
            ) -> Result<Page, FetchError> {
                Ok(Page {
                    items: vec![b"not json".to_vec()],
                    cursor: serde_json::json!({"after": 1}),
                    more: false,
                })
            }
        }
        let mut config = (*h.config).clone();
        config
            .sources
            .get_mut("games")
            .unwrap()
            .poll
            .as_mut()
            .unwrap()
            .kind = Arc::new(Garbage);
        let poller = Poller::new(
            Arc::new(config),
            Arc::new(h.store.queue("events", None)),
            Arc::new(h.store.ledger()),
            Arc::new(h.store.ledger()),
            Arc::new(NoHttp),
            h.clock.clone(),
            "run-1",
        );
        let report = poller.run("games", DEADLINE).await.unwrap();
        assert!(
            matches!(report.outcome, RunOutcome::Failed(ref why) if why.starts_with("item 0")),
            "{report:?}"
        );
        assert_eq!(
            h.store
                .ledger()
                .state("games")
                .await
                .unwrap()
                .unwrap()
                .cursor,
            None
        );
    }

    /// The harness's config with the poll table changed.
    fn with_poll(h: &mut Harness, change: impl FnOnce(&mut PollSource)) {
        let mut config = (*h.config).clone();
        let poll = config
            .sources
            .get_mut("games")
            .and_then(|s| s.poll.as_mut())
            .unwrap();
        change(poll);
        h.config = Arc::new(config);
    }

    #[tokio::test]
    async fn a_run_reports_its_items_errors_and_lag_as_metrics() {
        let h = harness(10, 3, 20);
        crate::metrics::capture();
        h.clock.advance_ms(60_000);
        h.poller("a").run("games", DEADLINE).await.unwrap();
        assert_eq!(crate::metrics::captured("poll_items"), vec![10.0]);
        // The newest item happened at 1_767_225_010 s; the run ended at the clock's now.
        let lag = (h.clock.now_ms() - (1_767_225_000 + 10) * 1000) as f64;
        assert_eq!(crate::metrics::captured("poll_lag"), vec![lag]);
        // Caught up with nothing new: not behind.
        h.poller("b").run("games", DEADLINE).await.unwrap();
        assert_eq!(crate::metrics::captured("poll_lag"), vec![lag, 0.0]);
        assert!(crate::metrics::captured("poll_errors").is_empty());
        // A fatal error is a poll error and says nothing about lag.
        h.api
            .script
            .lock()
            .unwrap()
            .push(FetchError::Fatal("HTTP 401".into()));
        h.poller("c").run("games", DEADLINE).await.unwrap();
        assert_eq!(crate::metrics::captured("poll_errors"), vec![1.0]);
        assert_eq!(crate::metrics::captured("poll_lag").len(), 2);
    }

    #[tokio::test]
    async fn the_request_rate_holds_across_runs() {
        let mut h = harness(12, 3, 2);
        with_poll(&mut h, |p| p.max_requests_per_minute = 6); // one request per 10 s
        h.poller("a").run("games", DEADLINE).await.unwrap();
        h.poller("b").run("games", DEADLINE).await.unwrap();
        let at = h.api.at.lock().unwrap().clone();
        assert_eq!(at.len(), 4);
        for pair in at.windows(2) {
            assert!(pair[1] - pair[0] >= 10_000, "requests at {at:?}");
        }
    }

    #[tokio::test]
    async fn a_sub_minute_poll_repeats_inside_one_invocation() {
        let mut h = harness(3, 10, 5);
        with_poll(&mut h, |p| p.every = Duration::from_secs(15));
        let deadline = T0 + 57_000;
        let reports = h
            .poller("lambda")
            .run_invocation("games", deadline)
            .await
            .unwrap();
        // Runs start at 0, 15 and 30 s; one at 45 s could not finish a request by 57 s.
        let starts: Vec<i64> = reports.iter().map(|r| r.started_ms - T0).collect();
        assert_eq!(starts, vec![0, 15_000, 30_000]);
        assert_eq!(
            Harness::keys(&reports.iter().collect::<Vec<_>>()),
            all_keys(3)
        );
        // A poll of a minute or more runs once: the schedule starts the next.
        with_poll(&mut h, |p| p.every = Duration::from_secs(60));
        let once = h
            .poller("lambda")
            .run_invocation("games", h.clock.now_ms() + 57_000)
            .await
            .unwrap();
        assert_eq!(once.len(), 1);
    }

    #[test]
    fn backoff_is_full_jitter_under_a_cap() {
        for failures in 0..10 {
            for now in [0, 1, 12_345, T0] {
                let ceiling = (BACKOFF_BASE_MS << failures).min(BACKOFF_CAP_MS);
                assert!(backoff(failures, now) <= Duration::from_millis(ceiling));
            }
        }
        let spread: HashSet<Duration> = (0..50).map(|i| backoff(3, T0 + i * 7)).collect();
        assert!(spread.len() > 10, "jitter spreads retries");
    }
}
