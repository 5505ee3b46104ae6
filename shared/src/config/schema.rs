//! The config document as written: serde types only, every table refusing unknown fields
//! so a misspelt key is named instead of ignored. Defaults live beside their fields.

use std::path::PathBuf;

use serde::Deserialize;

use crate::targets::TargetSpec;

/// production config can only point at secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Local,
    #[default]
    Deployed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub environment: Environment,
    /// Larger bodies are refused with 413 before verification.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long an IN_PROGRESS dedupe record holds its key; must be ≥ the worker's run time
    /// and ≤ the queue visibility timeout, or a live worker's record could be taken over.
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
    #[serde(default = "default_visibility")]
    pub visibility_timeout_seconds: u64,
    /// Receives before the queue moves a message to the DLQ (SQS allows 1–1000).
    #[serde(default = "default_max_receive")]
    pub max_receive_count: u32,
    /// Where `inlet dev` keeps its SQLite store, relative to the config file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The retry policy of routes without a `retry` table: the first backoff ceiling…
    #[serde(default = "default_retry_base")]
    pub retry_base: String,
    /// …the largest one…
    #[serde(default = "default_retry_cap")]
    pub retry_cap: String,
    /// …and the receives before the worker moves an event to the DLQ itself (default
    /// `max_receive_count`).
    #[serde(default)]
    pub retry_attempts: Option<u32>,
    /// The longest a target's `Retry-After` may hold an event back.
    #[serde(default = "default_retry_after_max")]
    pub retry_after_max: String,
    /// `inlet dev`'s HTTP server: a request's head must arrive complete within this time
    /// (from the connection's start, or from its first byte after an idle spell).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: String,
    /// …its body within this time of the head: a stalled body is answered 408.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: String,
    /// …and a keep-alive connection with no new request is closed after this time.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// Open connections `inlet dev` holds at once; more are closed on accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// …of them from one client address (an IPv6 client: its /64).
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// More events in one request are refused (413 `too_many_events`) before any envelope
    /// is built.
    #[serde(default = "default_max_events_per_request")]
    pub max_events_per_request: usize,
    /// How long ingest may spend putting one request's events on the queue; past it the
    /// request is answered 503 and the provider retries (dedupe absorbs what was queued).
    #[serde(default = "default_ingest_deadline")]
    pub ingest_deadline: String,
    /// Days the trail keeps an entry (refusals, duplicates, conflicts, poll runs, checks,
    /// dead letters…) before it expires. Dedupe records keep their own expiry, the source's
    /// dedupe window.
    #[serde(default = "default_trail_retention_days")]
    pub trail_retention_days: u32,
    /// Keep every verified request byte-exact in the blob store (`requests/`), for sources
    /// that do not say otherwise.
    #[serde(default)]
    pub archive: bool,
    /// `inlet dev`: days a claim-checked body is kept in the data folder (on AWS the
    /// template's `BlobRetentionDays` sets the bucket's lifecycle).
    #[serde(default = "default_blob_retention_days")]
    pub blob_retention_days: u32,
    /// `inlet dev`: days an archived request is kept (on AWS: `ArchiveRetentionDays`).
    #[serde(default = "default_archive_retention_days")]
    pub archive_retention_days: u32,
    /// `inlet dev`: the most messages its worker takes in one batch, as a Lambda event source
    /// mapping's `BatchSize` (a FIFO queue's batches stay at ten). A batch takes only what is
    /// visible, so a quiet queue's events do not wait for a full one.
    #[serde(default = "default_worker_batch_size")]
    pub worker_batch_size: usize,
    /// `inlet dev`: how many batches its worker processes at once, as Lambda runs several
    /// invocations of the worker function side by side.
    #[serde(default = "default_worker_concurrency")]
    pub worker_concurrency: usize,
    /// `inlet dev`: the most events its queue may hold waiting for the worker. Past it a
    /// webhook waits (up to `ingest_deadline`) for the worker to catch up, then is answered
    /// 503 with `Retry-After`, so the backlog stays bounded. 0: no bound.
    #[serde(default = "default_max_backlog")]
    pub max_backlog: u64,
}

/// The largest `max_body_bytes`, and its default: Lambda's 6 MB limit on a synchronous
/// invocation's payload, which is what carries a webhook from API Gateway or a Function URL
/// to ingest (the event around the body counts too, so the largest body that arrives is
/// somewhat smaller). A body whose envelope would not fit a queue message or a bus entry
/// travels by claim check (`crate::ports::blobs`).
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

fn default_max_body() -> usize {
    MAX_BODY_BYTES
}
fn default_lease() -> u64 {
    60
}
fn default_visibility() -> u64 {
    180
}
fn default_max_receive() -> u32 {
    5
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".inlet")
}
fn default_retry_base() -> String {
    "1s".into()
}
fn default_retry_cap() -> String {
    "5m".into()
}
fn default_retry_after_max() -> String {
    "1h".into()
}
// A webhook's head is one packet and its body a few more: these leave a slow network ample
// time while a client that trickles bytes loses its connection within seconds. At the
// default `max_body_bytes` (256 KiB), 30 s still admits a sender of 9 KB/s.
fn default_header_timeout() -> String {
    "10s".into()
}
fn default_body_timeout() -> String {
    "30s".into()
}
fn default_idle_timeout() -> String {
    "60s".into()
}
// Each connection holds a file descriptor. 512 stays below the usual soft limit of 1024
// on Linux with room for the store, targets and polls; 128 per address lets `make load`'s
// 64 connections through while one address can take at most a quarter of the total. Where
// the limit is lower (`ulimit -n`), lower these with it.
fn default_max_connections() -> usize {
    512
}
fn default_max_connections_per_ip() -> usize {
    128
}
/// Above the largest batches real providers send: Meta aggregates at most 1,000 updates per
/// notification, and SendGrid posts every ~30 s or at 768 KB, which at its smallest events
/// (~150 bytes) is about 5,000; Adyen, Mailgun, Postmark and the rest send one or a few.
fn default_max_events_per_request() -> usize {
    5_000
}
/// Well inside the ingest Lambda's default 10 s timeout (template.yaml
/// `IngestTimeoutSeconds`), leaving time to verify and answer: a Lambda that times out
/// answers the provider with a gateway error and nothing it did is acknowledged.
fn default_ingest_deadline() -> String {
    "6s".into()
}
/// 30 days: longer than anything the trail explains can still be acted on — a dead letter
/// waits at most 14 days in the DLQ (the SQS maximum) and each has a `dead` entry — with room
/// for a monthly review, while bounding what a flood can store (see `crate::trail`).
fn default_trail_retention_days() -> u32 {
    30
}

/// As the template's `BlobRetentionDays`: longer than a dead letter waits on AWS (14 days),
/// so a replay still finds its body.
fn default_blob_retention_days() -> u32 {
    15
}
fn default_archive_retention_days() -> u32 {
    90
}

/// Large enough that the worker's few store rounds per batch are shared by many events, which
/// lets it keep pace with ingest on the one writer; small enough that a webhook's send, queued
/// on that writer behind a batch's receive or delete, does not wait long: at 250 those two
/// were most of the one-connection p99.9, at 64 the worker fell behind at 64 connections
/// (docs/performance.md, "Batches a webhook can wait behind").
fn default_worker_batch_size() -> usize {
    128
}

/// Two: while one batch waits for the store or a target, the other works (docs/performance.md,
/// "Two batches at once").
fn default_worker_concurrency() -> usize {
    2
}

/// The most batches `inlet dev`'s worker processes at once: more only share the same two
/// SQLite writers and the same CPUs.
pub const MAX_WORKER_CONCURRENCY: usize = 64;

/// About two seconds of the worker's work on the machine `docs/performance.md` measures.
fn default_max_backlog() -> u64 {
    10_000
}

/// Lambda's largest `BatchSize` for a standard SQS queue.
pub const MAX_WORKER_BATCH_SIZE: usize = 10_000;

impl Default for Settings {
    fn default() -> Self {
        Self {
            environment: Environment::default(),
            max_body_bytes: default_max_body(),
            lease_seconds: default_lease(),
            visibility_timeout_seconds: default_visibility(),
            max_receive_count: default_max_receive(),
            data_dir: default_data_dir(),
            retry_base: default_retry_base(),
            retry_cap: default_retry_cap(),
            retry_attempts: None,
            retry_after_max: default_retry_after_max(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            max_events_per_request: default_max_events_per_request(),
            ingest_deadline: default_ingest_deadline(),
            trail_retention_days: default_trail_retention_days(),
            archive: false,
            blob_retention_days: default_blob_retention_days(),
            archive_retention_days: default_archive_retention_days(),
            worker_batch_size: default_worker_batch_size(),
            worker_concurrency: default_worker_concurrency(),
            max_backlog: default_max_backlog(),
        }
    }
}

impl Settings {
    /// When a trail entry recorded at `at_ms` expires.
    pub fn trail_expires_at(&self, at_ms: i64) -> i64 {
        at_ms.saturating_add(i64::from(self.trail_retention_days) * 86_400_000)
    }
}

/// A secret reference: `env:NAME`, or `literal:VALUE` (local configs only); or a table
/// with an id (recorded in the trail when it matches) and an optional `not_after`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretSpec {
    Ref(String),
    Full {
        id: String,
        value: String,
        #[serde(default)]
        not_after: Option<String>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub id: String,
    pub provider: String,
    #[serde(default)]
    pub secrets: Vec<SecretSpec>,
    /// CIDR allow-list of caller addresses; empty allows every address.
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
    /// How long a completed event keeps deduplicating; defaults per provider (its retry horizon).
    #[serde(default)]
    pub dedupe_window_seconds: Option<u64>,
    /// Extra request headers kept in the envelope besides the built-in allow-list.
    #[serde(default)]
    pub keep_headers: Vec<String>,
    /// Provider-specific options, checked by the provider.
    #[serde(default)]
    pub options: Option<serde_json::Value>,
    /// Also pull this source's events from the provider's API on a schedule (reconciliation
    /// with its webhooks, or the only way in for providers that do not push).
    #[serde(default)]
    pub poll: Option<PollSpec>,
    /// `false` makes a poll-only source: it needs no webhook secret, and a request to its
    /// webhook URL is refused (`poll_only`).
    #[serde(default = "yes")]
    pub webhooks: bool,
    /// Requests per second this source's webhook URL takes in `inlet dev` (a token bucket;
    /// more is answered 429). On AWS the HTTP API's throttling applies instead.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// How long a worker holds this source's event while dispatching it (default
    /// `settings.lease_seconds`): longer for slow targets. At most the queue visibility, so a
    /// redelivery never meets a dead worker's lease; at least the worker's timeout (checked
    /// where the timeout is known, at the worker's start).
    #[serde(default)]
    pub lease_seconds: Option<u64>,
    /// Delayed checks: an `on` event schedules a one-off poll, unless an `expect` event for
    /// the same entity comes first.
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// JSON pointer to the entity an event updates (`"/data/object/customer"`): events of one
    /// entity are delivered in order (one FIFO message group per entity).
    #[serde(default)]
    pub order_by: Option<String>,
    /// JSON pointer to the event's version (an integer or an RFC 3339 time): an update older
    /// than, or as old as, the last one applied to its entity is dropped. Needs `order_by`.
    #[serde(default)]
    pub version: Option<String>,
    /// Keep this source's verified requests byte-exact (default: `settings.archive`).
    #[serde(default)]
    pub archive: Option<bool>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub per_second: u32,
    /// Requests allowed at once after a quiet spell (default: `per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
}

fn yes() -> bool {
    true
}

/// One `[[sources.checks]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Unique in the source; appears in the trail and the metrics.
    pub name: String,
    /// Event types that schedule the check (provider or canonical; exact, `prefix.*` or `*`).
    pub on: Vec<String>,
    /// Event types for the same entity that satisfy it.
    pub expect: Vec<String>,
    /// How long after the `on` event the check comes due (`15m`; 1 minute to 7 days).
    pub after: String,
    /// The poll source to run when due (default: this source).
    #[serde(default)]
    pub poll: Option<String>,
}

fn default_requests_per_run() -> u32 {
    20
}

fn default_requests_per_minute() -> u32 {
    60
}

/// A source's `poll` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollSpec {
    /// `stripe_events`, `telegram_updates`, `http_json`.
    pub kind: String,
    /// How often a run starts: `30s`, `10m`, `1h` (AWS Scheduler's floor is one minute).
    pub every: String,
    /// API credentials for the poll (a Stripe restricted key, the bot token), resolved like
    /// the source's secrets; several = rotation (the first live one is used).
    #[serde(default)]
    pub secrets: Vec<SecretSpec>,
    /// Requests one run may make; a run with more to fetch goes on at the next schedule.
    #[serde(default = "default_requests_per_run")]
    pub max_requests_per_run: u32,
    /// The provider's rate limit: requests inside a run are spaced to stay under it.
    #[serde(default = "default_requests_per_minute")]
    pub max_requests_per_minute: u32,
    /// The source also receives webhooks and this poll reconciles them: an event the poll
    /// delivers first is counted and recorded as a missed webhook.
    #[serde(default)]
    pub reconcile: bool,
    /// Kind-specific options, checked by the kind.
    #[serde(default)]
    pub options: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Source ids, or `*` for all.
    pub sources: Vec<String>,
    /// Event type patterns: exact, `prefix.*`, or `*` (the default).
    #[serde(default = "all_types")]
    pub types: Vec<String>,
    pub targets: Vec<String>,
    /// How often and how far apart its events are retried (default: the settings').
    #[serde(default)]
    pub retry: Option<RetrySpec>,
}

/// A route's `retry = { attempts = 8, base = "2s", cap = "10m" }`; a field left out takes
/// the `[settings]` default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub cap: Option<String>,
}

fn all_types() -> Vec<String> {
    vec!["*".to_string()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigDoc {
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub sources: Vec<SourceSpec>,
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}
