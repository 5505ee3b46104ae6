//! The one typed config document: sources, targets, routes and settings. TOML (JSON
//! accepted), validated at start with errors that name the field.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;

use crate::checks::Check;
use crate::envelope;
use crate::ordering::{check_pointer, Ordering};
use crate::poll::PollSource;
use crate::providers::{self, Provider};
use crate::retry::{RetryPolicy, MAX_VISIBILITY};
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config is not valid {format}: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("no config: set INLET_CONFIG (inline TOML or JSON) or INLET_CONFIG_FILE")]
    Missing,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// `local` allows literal secrets in the file; `deployed` (the default) refuses them so a
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
}

/// The largest `max_body_bytes`: its envelope at worst (see
/// [`envelope::max_envelope_bytes`]) still fits one queue message.
pub const MAX_BODY_BYTES: usize = 700 * 1024;

fn default_max_body() -> usize {
    256 * 1024
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
/// Ten years: past that a retention is a mistake, not a policy.
const MAX_TRAIL_RETENTION_DAYS: u32 = 3650;

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
        }
    }
}

/// What one client may cost `inlet dev`'s HTTP server (on AWS, the HTTP API or Function
/// URL in front of the ingest Lambda bounds this instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    pub header_timeout: std::time::Duration,
    pub body_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
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
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetKind {
    /// EventBridge `PutEvents`. Without `bus_name` the deployed bus from `INLET_BUS_NAME` is used.
    Eventbridge {
        #[serde(default)]
        bus_name: Option<String>,
    },
    /// One JSON envelope per line, for local use. Relative paths are relative to the config file.
    Jsonl { path: PathBuf },
    /// POST to a URL, signed with Standard Webhooks headers (`targets/http.rs`).
    Http(crate::targets::http::HttpTargetSpec),
    /// Forward to another SQS queue (`targets/sqs.rs`).
    Sqs(crate::targets::sqs::SqsTargetSpec),
}

// No deny_unknown_fields here: serde does not support it beside `flatten`; the flattened
// `TargetKind` refuses unknown fields instead.
#[derive(Debug, Clone, Deserialize)]
pub struct TargetSpec {
    pub id: String,
    #[serde(flatten)]
    pub kind: TargetKind,
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

/// A source ready to take requests.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    pub provider: Arc<dyn Provider>,
    pub allow: Vec<IpNet>,
    pub dedupe_window_ms: i64,
    pub keep_headers: Vec<String>,
    pub poll: Option<PollSource>,
    /// Takes webhooks at `/webhooks/<id>`; `false` for a poll-only source.
    pub webhooks: bool,
    /// `(per_second, burst)`, enforced by `inlet dev`.
    pub rate_limit: Option<(u32, u32)>,
    /// The dedupe lease of this source's events.
    pub lease_ms: i64,
    /// Delayed checks; empty for most sources, which then cost nothing extra.
    pub checks: Vec<Check>,
    /// Per-entity order (and the stale-version guard), when the source asks for it.
    pub ordering: Option<Ordering>,
}

impl Source {
    pub fn ip_allowed(&self, ip: Option<IpAddr>) -> bool {
        if self.allow.is_empty() {
            return true;
        }
        // An allow-list with no known caller address fails closed. A server listening on `[::]`
        // sees IPv4 callers as `::ffff:a.b.c.d`: match them as the IPv4 address they are.
        ip.map(|ip| ip.to_canonical())
            .is_some_and(|ip| self.allow.iter().any(|net| net.contains(&ip)))
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub sources: Vec<String>,
    pub types: Vec<String>,
    pub targets: Vec<String>,
    /// Set when the route has a `retry` table (its gaps filled from the settings).
    pub retry: Option<RetryPolicy>,
}

impl Route {
    /// `types` are the event's names: its provider type and its canonical type, so a route
    /// can say `payment.*` whichever PSP the payment came from.
    pub fn matches(&self, source: &str, types: &[&str]) -> bool {
        let source_ok = self.sources.iter().any(|s| s == "*" || s == source);
        let type_ok = self
            .types
            .iter()
            .any(|p| p == "*" || types.iter().any(|t| type_matches(p, t)));
        source_ok && type_ok
    }
}

pub(crate) fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => event_type == pattern,
    }
}

/// The validated config. Built once at start (cold start in a Lambda).
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub sources: BTreeMap<String, Source>,
    pub targets: Vec<TargetSpec>,
    pub routes: Vec<Route>,
    /// Directory relative paths in the config resolve against.
    pub base_dir: PathBuf,
    /// The policy of events no route with a `retry` table matches.
    pub default_retry: RetryPolicy,
    /// The longest a target's `Retry-After` may hold an event back.
    pub retry_after_max: std::time::Duration,
    pub server: ServerLimits,
    /// `settings.ingest_deadline`, parsed.
    pub ingest_deadline: std::time::Duration,
}

impl Config {
    pub fn source(&self, id: &str) -> Option<&Source> {
        self.sources.get(id)
    }

    /// Target ids for an event, deduplicated, in route order.
    pub fn targets_for(&self, source: &str, types: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.routes.iter().filter(|r| r.matches(source, types)) {
            for t in &r.targets {
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
        }
        out
    }

    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// An event's retry policy. Only routes with a `retry` table count (every source has a
    /// catch-all route, which would otherwise always bring the defaults back); of those
    /// that match, the largest attempts, base and cap win — one event is retried at all
    /// its targets together, so the route that needs the most patience sets the pace. No
    /// such route: the settings' defaults.
    pub fn retry_policy(&self, source: &str, types: &[&str]) -> RetryPolicy {
        self.routes
            .iter()
            .filter(|r| r.matches(source, types))
            .filter_map(|r| r.retry)
            .reduce(RetryPolicy::most_patient)
            .unwrap_or(self.default_retry)
    }

    /// Some source wants per-entity order: the main queue must be FIFO.
    pub fn needs_fifo(&self) -> bool {
        self.sources.values().any(|s| s.ordering.is_some())
    }

    /// The source's per-entity order, if it has one.
    pub fn ordering(&self, source: &str) -> Option<&Ordering> {
        self.source(source).and_then(|s| s.ordering.as_ref())
    }

    pub fn lease_ms(&self) -> i64 {
        self.settings.lease_seconds as i64 * 1000
    }

    /// The dedupe lease of `source`'s events: its own `lease_seconds`, else the settings'.
    pub fn lease_ms_for(&self, source: &str) -> i64 {
        self.source(source)
            .map(|s| s.lease_ms)
            .unwrap_or_else(|| self.lease_ms())
    }
}

/// Where secret references are looked up: the process environment, then the JSON object
/// in `INLET_SECRETS_JSON` (how the SAM template passes its NoEcho secrets parameter).
pub trait SecretEnv {
    fn var(&self, name: &str) -> Option<String>;

    /// The value of a remote reference (`ssm:`, `secretsmanager:`) read before validation;
    /// `None` where no secret store was consulted.
    fn remote(&self, _reference: &str) -> Option<String> {
        None
    }
}

/// An environment plus the values read from a secret store.
pub struct WithRemote<'a> {
    pub env: &'a dyn SecretEnv,
    pub values: &'a crate::remote_secrets::RemoteValues,
}

impl SecretEnv for WithRemote<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.env.var(name)
    }

    fn remote(&self, reference: &str) -> Option<String> {
        self.values.get(reference).map(str::to_string)
    }
}

#[derive(Debug, Default)]
pub struct ProcessEnv {
    json: BTreeMap<String, String>,
}

impl ProcessEnv {
    pub fn load() -> Result<Self, ConfigError> {
        let json = match std::env::var("INLET_SECRETS_JSON") {
            Ok(s) if !s.trim().is_empty() => serde_json::from_str(&s).map_err(|e| {
                invalid(
                    "INLET_SECRETS_JSON",
                    format!("must be a JSON object of strings: {e}"),
                )
            })?,
            _ => BTreeMap::new(),
        };
        Ok(Self { json })
    }
}

impl SecretEnv for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.json.get(name).cloned())
    }
}

impl<F: Fn(&str) -> Option<String>> SecretEnv for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl ConfigDoc {
    /// `(source id, EventBridge Scheduler expression)` of every poll source, in config order:
    /// what the template's `PollSchedules` parameter takes. Needs no secrets, so a deploy step
    /// can run it without them.
    pub fn poll_schedules(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out = Vec::new();
        for (i, src) in self.sources.iter().enumerate() {
            if let Some(p) = &src.poll {
                let every = parse_every(&format!("sources[{i}].poll"), &p.every)?;
                out.push((src.id.clone(), crate::poll::schedule_expression(every)));
            }
        }
        Ok(out)
    }

    /// Every secret reference in the document, as written, in document order.
    pub fn secret_references(&self) -> Vec<&str> {
        fn refs(specs: &[SecretSpec]) -> impl Iterator<Item = &str> {
            specs.iter().map(|s| match s {
                SecretSpec::Ref(r) => r.as_str(),
                SecretSpec::Full { value, .. } => value.as_str(),
            })
        }
        let mut out = Vec::new();
        for src in &self.sources {
            out.extend(refs(&src.secrets));
            if let Some(p) = &src.poll {
                out.extend(refs(&p.secrets));
            }
        }
        for t in &self.targets {
            if let TargetKind::Http(http) = &t.kind {
                out.push(http.secret.as_str());
            }
        }
        out
    }

    pub fn parse(text: &str, hint: Option<&str>) -> Result<Self, ConfigError> {
        let json_first = match hint {
            Some("json") => true,
            Some(_) => false,
            None => text.trim_start().starts_with('{'),
        };
        if json_first {
            serde_json::from_str(text).map_err(|e| ConfigError::Parse {
                format: "JSON",
                message: e.to_string(),
            })
        } else {
            toml::from_str(text).map_err(|e| ConfigError::Parse {
                format: "TOML",
                message: e.to_string(),
            })
        }
    }
}

/// Read a config file; relative paths in it resolve against its folder.
fn read_file(path: &Path) -> Result<(ConfigDoc, PathBuf), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let hint = path.extension().and_then(|e| e.to_str());
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((ConfigDoc::parse(&text, hint)?, base))
}

/// Load and validate a config file.
pub fn load_file(path: &Path, env: &dyn SecretEnv) -> Result<Config, ConfigError> {
    let (doc, base) = read_file(path)?;
    validate(doc, base, env)
}

/// Where a Lambda's config document is: read already (inline or a file), or an SSM
/// parameter to read (`INLET_CONFIG=ssm:/name`, for configs beyond a template parameter's
/// 4 KB, changed without a redeploy). Made once per cold start: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum DocSource {
    Ready(ConfigDoc, PathBuf),
    Parameter(String),
}

/// `INLET_CONFIG` (inline TOML or JSON, or `ssm:/name`) or `INLET_CONFIG_FILE`.
pub fn doc_source_from_env(env: &dyn SecretEnv) -> Result<DocSource, ConfigError> {
    if let Some(inline) = env.var("INLET_CONFIG").filter(|s| !s.trim().is_empty()) {
        if let Some(name) = inline.trim().strip_prefix("ssm:") {
            return Ok(DocSource::Parameter(name.to_string()));
        }
        Ok(DocSource::Ready(
            ConfigDoc::parse(&inline, None)?,
            PathBuf::from("."),
        ))
    } else if let Some(file) = env.var("INLET_CONFIG_FILE") {
        let (doc, base) = read_file(Path::new(&file))?;
        Ok(DocSource::Ready(doc, base))
    } else {
        Err(ConfigError::Missing)
    }
}

/// Load from `INLET_CONFIG` (inline) or `INLET_CONFIG_FILE`, with no secret store: remote
/// references fail validation with their field named.
pub fn load_from_env(env: &dyn SecretEnv) -> Result<Config, ConfigError> {
    match doc_source_from_env(env)? {
        DocSource::Ready(doc, base) => finish_from_env(doc, base, env),
        DocSource::Parameter(name) => Err(invalid(
            "INLET_CONFIG",
            format!("ssm:{name} is read only where a secret store is configured (the Lambdas)"),
        )),
    }
}

/// Apply the deployment's settings and validate. The deployment owns the queue and lease
/// settings, so `INLET_MAX_RECEIVE_COUNT`, `INLET_LEASE_SECONDS` and
/// `INLET_VISIBILITY_TIMEOUT_SECONDS` (set by the template from the same parameters that
/// configure the queue) override the document's `settings`.
pub fn finish_from_env(
    mut doc: ConfigDoc,
    base: PathBuf,
    env: &dyn SecretEnv,
) -> Result<Config, ConfigError> {
    let number = |name: &str| -> Result<Option<u64>, ConfigError> {
        env.var(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| invalid(name, format!("{v:?} is not a whole number")))
            })
            .transpose()
    };
    if let Some(n) = number("INLET_MAX_RECEIVE_COUNT")? {
        doc.settings.max_receive_count = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = number("INLET_LEASE_SECONDS")? {
        doc.settings.lease_seconds = n;
    }
    if let Some(n) = number("INLET_VISIBILITY_TIMEOUT_SECONDS")? {
        doc.settings.visibility_timeout_seconds = n;
    }
    validate(doc, base, env)
}

fn resolve_secret(
    field: &str,
    reference: &str,
    environment: Environment,
    env: &dyn SecretEnv,
) -> Result<String, ConfigError> {
    if let Some(name) = reference.strip_prefix("env:") {
        return env.var(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            invalid(
                field,
                format!("environment variable {name} is not set (nor a key in INLET_SECRETS_JSON)"),
            )
        });
    }
    if crate::remote_secrets::is_remote(reference) {
        return env.remote(reference).ok_or_else(|| {
            invalid(
                field,
                format!(
                    "{reference} is read from AWS only where a secret store is configured (the Lambdas); locally use env:NAME"
                ),
            )
        });
    }
    if let Some(value) = reference.strip_prefix("literal:") {
        if environment != Environment::Local {
            return Err(invalid(
                field,
                "literal secrets are only allowed with settings.environment = \"local\"; use env:NAME",
            ));
        }
        return Ok(value.to_string());
    }
    Err(invalid(
        field,
        "a secret must be a reference: env:NAME, ssm:/parameter, secretsmanager:NAME[#field] (or literal:VALUE in a local config)",
    ))
}

fn parse_not_after(field: &str, s: &str) -> Result<i64, ConfigError> {
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| invalid(field, format!("not an RFC 3339 time: {e}")))
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .map_err(|_| invalid(field, "before 1970"))
        })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A list of secret references, resolved; each keeps its configured id (or its index).
fn resolve_secrets(
    field: &str,
    specs: &[SecretSpec],
    environment: Environment,
    env: &dyn SecretEnv,
) -> Result<Vec<Secret>, ConfigError> {
    let mut secrets = Vec::new();
    for (j, spec) in specs.iter().enumerate() {
        let sf = format!("{field}[{j}]");
        let secret = match spec {
            SecretSpec::Ref(r) => Secret::new(
                j.to_string(),
                resolve_secret(&sf, r, environment, env)?,
                None,
            ),
            SecretSpec::Full {
                id,
                value,
                not_after,
            } => {
                let na = not_after
                    .as_deref()
                    .map(|t| parse_not_after(&format!("{sf}.not_after"), t))
                    .transpose()?;
                Secret::new(
                    id.clone(),
                    resolve_secret(&format!("{sf}.value"), value, environment, env)?,
                    na,
                )
            }
        };
        secrets.push(secret);
    }
    Ok(secrets)
}

fn parse_every(f: &str, text: &str) -> Result<std::time::Duration, ConfigError> {
    let every = humantime::parse_duration(text.trim())
        .map_err(|e| invalid(format!("{f}.every"), format!("{text:?}: {e}")))?;
    if every < std::time::Duration::from_secs(1) {
        return Err(invalid(format!("{f}.every"), "must be at least 1s"));
    }
    Ok(every)
}

fn validate_poll(
    f: &str,
    p: &PollSpec,
    environment: Environment,
    env: &dyn SecretEnv,
) -> Result<PollSource, ConfigError> {
    let every = parse_every(f, &p.every)?;
    if p.max_requests_per_run == 0 {
        return Err(invalid(format!("{f}.max_requests_per_run"), "must be > 0"));
    }
    if p.max_requests_per_minute == 0 {
        return Err(invalid(
            format!("{f}.max_requests_per_minute"),
            "must be > 0",
        ));
    }
    let options = p.options.clone().unwrap_or(serde_json::Value::Null);
    let kind = crate::poll::kinds::build(&p.kind, &options).map_err(|why| {
        let field = if crate::poll::kinds::KINDS.contains(&p.kind.as_str()) {
            format!("{f}.options")
        } else {
            format!("{f}.kind")
        };
        invalid(field, why)
    })?;
    Ok(PollSource {
        kind,
        every,
        credentials: resolve_secrets(&format!("{f}.secrets"), &p.secrets, environment, env)?,
        max_requests_per_run: p.max_requests_per_run,
        max_requests_per_minute: p.max_requests_per_minute,
        reconcile: p.reconcile,
    })
}

/// A check's fields, except its poll source (checked once every source is known).
fn validate_checks(f: &str, src: &SourceSpec) -> Result<Vec<Check>, ConfigError> {
    let mut checks: Vec<Check> = Vec::new();
    for (j, c) in src.checks.iter().enumerate() {
        let cf = format!("{f}.checks[{j}]");
        if !valid_id(&c.name) {
            return Err(invalid(
                format!("{cf}.name"),
                format!("{:?} must be 1–64 chars of a-z 0-9 - _", c.name),
            ));
        }
        if checks.iter().any(|k| k.name == c.name) {
            return Err(invalid(
                format!("{cf}.name"),
                format!("duplicate check name {:?} in source {:?}", c.name, src.id),
            ));
        }
        if c.on.is_empty() || c.on.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                format!("{cf}.on"),
                "must name at least one event type (and no empty one)",
            ));
        }
        if c.expect.is_empty() || c.expect.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                format!("{cf}.expect"),
                "must name at least one event type (and no empty one)",
            ));
        }
        let after = humantime::parse_duration(c.after.trim())
            .map_err(|e| invalid(format!("{cf}.after"), format!("{:?}: {e}", c.after)))?;
        if after < crate::checks::MIN_AFTER || after > crate::checks::MAX_AFTER {
            return Err(invalid(
                format!("{cf}.after"),
                "must be between 1 minute and 7 days",
            ));
        }
        checks.push(Check {
            name: c.name.clone(),
            on: c.on.clone(),
            expect: c.expect.clone(),
            after,
            poll: c.poll.clone().unwrap_or_else(|| src.id.clone()),
        });
    }
    Ok(checks)
}

/// A source's `order_by` and `version`.
fn validate_ordering(f: &str, src: &SourceSpec) -> Result<Option<Ordering>, ConfigError> {
    let Some(order_by) = &src.order_by else {
        return match src.version {
            Some(_) => Err(invalid(
                format!("{f}.version"),
                "needs order_by: a version orders the updates of one entity, and order_by says which entity",
            )),
            None => Ok(None),
        };
    };
    check_pointer(order_by).map_err(|m| invalid(format!("{f}.order_by"), m))?;
    if let Some(version) = &src.version {
        check_pointer(version).map_err(|m| invalid(format!("{f}.version"), m))?;
    }
    Ok(Some(Ordering {
        order_by: order_by.clone(),
        version: src.version.clone(),
    }))
}

/// Validate a parsed document: every error names its field.
pub fn validate(
    mut doc: ConfigDoc,
    base_dir: PathBuf,
    env: &dyn SecretEnv,
) -> Result<Config, ConfigError> {
    let s = &doc.settings;
    if s.max_body_bytes == 0 || s.max_body_bytes > MAX_BODY_BYTES {
        return Err(invalid(
            "settings.max_body_bytes",
            format!(
                "must be between 1 and {MAX_BODY_BYTES}: every event must fit one {}-byte queue \
                 message, and at that size a body can take {} bytes as base64 and its envelope \
                 up to {}",
                envelope::MAX_MESSAGE_BYTES,
                envelope::body_field_budget(MAX_BODY_BYTES),
                envelope::max_envelope_bytes(MAX_BODY_BYTES),
            ),
        ));
    }
    if !(1..=1000).contains(&s.max_receive_count) {
        return Err(invalid(
            "settings.max_receive_count",
            "must be 1–1000 (SQS limit)",
        ));
    }
    if s.visibility_timeout_seconds == 0 || s.visibility_timeout_seconds > 43_200 {
        return Err(invalid(
            "settings.visibility_timeout_seconds",
            "must be 1–43200 (SQS limit: 12 h)",
        ));
    }
    if !(1..=MAX_TRAIL_RETENTION_DAYS).contains(&s.trail_retention_days) {
        return Err(invalid(
            "settings.trail_retention_days",
            format!("must be 1–{MAX_TRAIL_RETENTION_DAYS} days"),
        ));
    }
    if s.lease_seconds == 0 || s.lease_seconds > s.visibility_timeout_seconds {
        return Err(invalid(
            "settings.lease_seconds",
            "must be ≥ 1 and ≤ settings.visibility_timeout_seconds, so a redelivered message never finds a live lease of a dead worker",
        ));
    }

    let default_retry = validate_retry(
        "settings",
        &RetrySpec {
            attempts: s.retry_attempts,
            base: Some(s.retry_base.clone()),
            cap: Some(s.retry_cap.clone()),
        },
        None,
        s.max_receive_count,
    )?;
    let retry_after_max = parse_retry_duration("settings.retry_after_max", &s.retry_after_max)?;
    let server = validate_server_limits(s)?;
    if !(1..=MAX_EVENTS_PER_REQUEST).contains(&s.max_events_per_request) {
        return Err(invalid(
            "settings.max_events_per_request",
            format!("must be 1–{MAX_EVENTS_PER_REQUEST}"),
        ));
    }
    let ingest_deadline = parse_ingest_deadline(&s.ingest_deadline)?;

    let mut sources = BTreeMap::new();
    for (i, src) in doc.sources.iter().enumerate() {
        let f = format!("sources[{i}]");
        if !valid_id(&src.id) {
            return Err(invalid(
                format!("{f}.id"),
                format!("{:?} must be 1–64 chars of a-z 0-9 - _", src.id),
            ));
        }
        if sources.contains_key(&src.id) {
            return Err(invalid(
                format!("{f}.id"),
                format!("duplicate source id {:?}", src.id),
            ));
        }
        // Kept headers travel in every envelope: bounded, so every event still fits a message.
        if src.keep_headers.len() > envelope::MAX_KEEP_HEADERS {
            return Err(invalid(
                format!("{f}.keep_headers"),
                format!("at most {} headers", envelope::MAX_KEEP_HEADERS),
            ));
        }
        if let Some(long) = src
            .keep_headers
            .iter()
            .find(|h| h.is_empty() || h.len() > envelope::MAX_HEADER_NAME_BYTES)
        {
            return Err(invalid(
                format!("{f}.keep_headers"),
                format!(
                    "{long:?}: a header name is 1 to {} bytes",
                    envelope::MAX_HEADER_NAME_BYTES
                ),
            ));
        }
        let mut secrets =
            resolve_secrets(&format!("{f}.secrets"), &src.secrets, s.environment, env)?;
        if !src.webhooks {
            if src.poll.is_none() {
                return Err(invalid(
                    format!("{f}.webhooks"),
                    "false needs a poll table: the source would take no events at all",
                ));
            }
            if !secrets.is_empty() {
                return Err(invalid(
                    format!("{f}.secrets"),
                    "a poll-only source (webhooks = false) verifies no webhooks; put API \
                     credentials in poll.secrets",
                ));
            }
            // Providers are built ready to verify and most refuse to exist without a key.
            // This one is random, never stored or shown, and ingest refuses the source's
            // requests before any verification, so it can never admit a request.
            let unguessable = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            secrets.push(Secret::new(
                "poll-only".to_owned(),
                unguessable.into_bytes(),
                None,
            ));
        }
        let mut options = src.options.clone().unwrap_or(serde_json::Value::Null);
        if !src.webhooks && matches!(src.provider.as_str(), "generic" | "hmac") {
            // The generic scheme insists on saying where a signature is; a poll-only source
            // verifies none (its webhook URL is closed), so it need not say.
            if options.is_null() {
                options = serde_json::json!({});
            }
            if let Some(obj) = options.as_object_mut() {
                obj.entry("signature")
                    .or_insert_with(|| serde_json::json!({ "header": "x-inlet-poll-only" }));
            }
        }
        let provider = providers::build(&src.provider, &options, secrets).map_err(|e| {
            let field = if providers::is_known(&src.provider) {
                format!("{f} ({})", src.provider)
            } else {
                format!("{f}.provider")
            };
            invalid(field, e.0)
        })?;
        let mut allow = Vec::new();
        for (j, c) in src.allow_cidrs.iter().enumerate() {
            let net = c
                .parse::<IpNet>()
                .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(
                        format!("{f}.allow_cidrs[{j}]"),
                        format!("{c:?} is not a CIDR"),
                    )
                })?;
            allow.push(net);
        }
        let window = src
            .dedupe_window_seconds
            .unwrap_or_else(|| provider.default_dedupe_window_seconds());
        if window == 0 {
            return Err(invalid(format!("{f}.dedupe_window_seconds"), "must be > 0"));
        }
        let poll = src
            .poll
            .as_ref()
            .map(|p| validate_poll(&format!("{f}.poll"), p, s.environment, env))
            .transpose()?;
        let lease_seconds = src.lease_seconds.unwrap_or(s.lease_seconds);
        if lease_seconds == 0 || lease_seconds > s.visibility_timeout_seconds {
            return Err(invalid(
                format!("{f}.lease_seconds"),
                format!(
                    "{lease_seconds} must be between 1 and settings.visibility_timeout_seconds ({}): \
                     a redelivered event must never meet a dead worker's lease",
                    s.visibility_timeout_seconds
                ),
            ));
        }
        let rate_limit = match src.rate_limit {
            None => None,
            Some(r) if r.per_second == 0 || r.burst == Some(0) => {
                return Err(invalid(
                    format!("{f}.rate_limit"),
                    "per_second and burst must be > 0 (leave rate_limit out for no limit)",
                ))
            }
            Some(r) => Some((r.per_second, r.burst.unwrap_or(r.per_second))),
        };
        let checks = validate_checks(&f, src)?;
        let ordering = validate_ordering(&f, src)?;
        sources.insert(
            src.id.clone(),
            Source {
                id: src.id.clone(),
                provider,
                allow,
                poll,
                webhooks: src.webhooks,
                rate_limit,
                lease_ms: lease_seconds as i64 * 1000,
                checks,
                ordering,
                dedupe_window_ms: window as i64 * 1000,
                keep_headers: src
                    .keep_headers
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
            },
        );
    }

    // A check's poll source is known only once every source is read.
    for (i, src) in doc.sources.iter().enumerate() {
        for (j, check) in sources
            .get(&src.id)
            .map(|s| s.checks.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let field = format!("sources[{i}].checks[{j}].poll");
            match sources.get(&check.poll) {
                None => return Err(invalid(field, format!("no source {:?}", check.poll))),
                Some(p) if p.poll.is_none() => {
                    return Err(invalid(
                        field,
                        format!(
                            "source {:?} has no poll table, so there is nothing to run when the check is due",
                            check.poll
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
    }

    let mut target_ids = HashSet::new();
    for (i, t) in doc.targets.iter().enumerate() {
        if !valid_id(&t.id) {
            return Err(invalid(
                format!("targets[{i}].id"),
                format!("{:?} must be 1–64 chars of a-z 0-9 - _", t.id),
            ));
        }
        if !target_ids.insert(t.id.clone()) {
            return Err(invalid(
                format!("targets[{i}].id"),
                format!("duplicate target id {:?}", t.id),
            ));
        }
    }

    // An HTTP target's signing secret resolves like a source's, and its options are checked
    // here, so a bad one stops the start with its field named.
    for (i, t) in doc.targets.iter_mut().enumerate() {
        if let TargetKind::Http(http) = &mut t.kind {
            let f = format!("targets[{i}]");
            let key = resolve_secret(&format!("{f}.secret"), &http.secret, s.environment, env)?;
            http.prepare(key)
                .map_err(|(field, message)| invalid(format!("{f}.{field}"), message))?;
            // A delivery still running when the lease lapses could be made twice.
            if http.timeout_seconds >= s.lease_seconds as f64 {
                return Err(invalid(
                    format!("{f}.timeout_seconds"),
                    "must be shorter than settings.lease_seconds",
                ));
            }
        }
    }

    let mut routes = Vec::new();
    for (i, r) in doc.routes.iter().enumerate() {
        for (j, sid) in r.sources.iter().enumerate() {
            if sid != "*" && !sources.contains_key(sid) {
                return Err(invalid(
                    format!("routes[{i}].sources[{j}]"),
                    format!("no source {sid:?}"),
                ));
            }
        }
        if r.targets.is_empty() {
            return Err(invalid(
                format!("routes[{i}].targets"),
                "must name at least one target",
            ));
        }
        for (j, tid) in r.targets.iter().enumerate() {
            if !target_ids.contains(tid) {
                return Err(invalid(
                    format!("routes[{i}].targets[{j}]"),
                    format!("no target {tid:?}"),
                ));
            }
        }
        let retry = r
            .retry
            .as_ref()
            .map(|spec| {
                validate_retry(
                    &format!("routes[{i}].retry"),
                    spec,
                    Some(default_retry),
                    s.max_receive_count,
                )
            })
            .transpose()?;
        routes.push(Route {
            sources: r.sources.clone(),
            types: r.types.clone(),
            targets: r.targets.clone(),
            retry,
        });
    }

    // An event that matches no route would be acknowledged and dropped: refuse the config.
    for (i, src) in doc.sources.iter().enumerate() {
        let routed = routes.iter().any(|r| {
            r.sources.iter().any(|s| s == "*" || s == &src.id) && r.types.iter().any(|t| t == "*")
        });
        if !routed {
            return Err(invalid(
                format!("sources[{i}]"),
                format!(
                    "source {:?} has no catch-all route (types = [\"*\"]); some of its events would be dropped",
                    src.id
                ),
            ));
        }
    }

    Ok(Config {
        settings: doc.settings,
        sources,
        targets: doc.targets,
        routes,
        base_dir,
        default_retry,
        retry_after_max,
        server,
        ingest_deadline,
    })
}

fn validate_server_limits(s: &Settings) -> Result<ServerLimits, ConfigError> {
    // An hour is already far past any webhook's patience; the bound also keeps deadline
    // arithmetic (now + timeout) from overflowing.
    const MAX: std::time::Duration = std::time::Duration::from_secs(3600);
    let timeout = |field: &str, text: &str| {
        let d = humantime::parse_duration(text.trim())
            .map_err(|e| invalid(field, format!("{text:?}: {e}")))?;
        if d.is_zero() || d > MAX {
            return Err(invalid(
                field,
                format!("{text:?} must be more than 0 and at most 1h"),
            ));
        }
        Ok(d)
    };
    if s.max_connections == 0 {
        return Err(invalid("settings.max_connections", "must be at least 1"));
    }
    if s.max_connections_per_ip == 0 || s.max_connections_per_ip > s.max_connections {
        return Err(invalid(
            "settings.max_connections_per_ip",
            "must be at least 1 and at most settings.max_connections",
        ));
    }
    Ok(ServerLimits {
        header_timeout: timeout("settings.header_timeout", &s.header_timeout)?,
        body_timeout: timeout("settings.body_timeout", &s.body_timeout)?,
        idle_timeout: timeout("settings.idle_timeout", &s.idle_timeout)?,
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
    })
}

/// Past this many events one request could not be queued within any ingest deadline (a
/// hundred thousand is ten thousand batch sends).
const MAX_EVENTS_PER_REQUEST: usize = 100_000;

/// `settings.ingest_deadline`: humantime, from 100 ms (one queue round trip) to 29 s (an
/// HTTP API integration gives up at 30 s, and so does the longest ingest Lambda the
/// template allows). Keep it below the ingest Lambda's timeout.
pub fn parse_ingest_deadline(text: &str) -> Result<std::time::Duration, ConfigError> {
    let field = "settings.ingest_deadline";
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| invalid(field, format!("{text:?}: {e}")))?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(29) {
        return Err(invalid(
            field,
            format!(
                "{text:?} must be between 100ms and 29s (below the ingest Lambda's timeout, at most 30 s)"
            ),
        ));
    }
    Ok(d)
}

/// A retry duration: humantime (`2s`, `10m`), at least a second (SQS visibility is whole
/// seconds) and at most SQS's 12 hours.
fn parse_retry_duration(field: &str, text: &str) -> Result<std::time::Duration, ConfigError> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| invalid(field, format!("{text:?}: {e}")))?;
    if d < std::time::Duration::from_secs(1) || d > MAX_VISIBILITY {
        return Err(invalid(
            field,
            format!("{text:?} must be between 1s and 12h (SQS visibility)"),
        ));
    }
    Ok(d)
}

/// A retry table; fields it leaves out come from `defaults` (the settings' policy). The
/// settings' own table is `at` = "settings", where the fields are `retry_*`.
fn validate_retry(
    at: &str,
    spec: &RetrySpec,
    defaults: Option<RetryPolicy>,
    max_receive_count: u32,
) -> Result<RetryPolicy, ConfigError> {
    let field = |name: &str| {
        if defaults.is_none() {
            format!("{at}.retry_{name}")
        } else {
            format!("{at}.{name}")
        }
    };
    let attempts = spec
        .attempts
        .or(defaults.map(|d| d.attempts))
        .unwrap_or(max_receive_count);
    if !(1..=max_receive_count).contains(&attempts) {
        return Err(invalid(
            field("attempts"),
            format!(
                "{attempts} must be 1..={max_receive_count} (settings.max_receive_count: after that the queue moves the event to the DLQ anyway)"
            ),
        ));
    }
    let duration = |name: &str, text: &Option<String>, default: Option<std::time::Duration>| match (
        text, default,
    ) {
        (Some(t), _) => parse_retry_duration(&field(name), t),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(invalid(field(name), "missing")),
    };
    let base = duration("base", &spec.base, defaults.map(|d| d.base))?;
    let cap = duration("cap", &spec.cap, defaults.map(|d| d.cap))?;
    if base > cap {
        return Err(invalid(field("base"), "must not be longer than the cap"));
    }
    Ok(RetryPolicy {
        attempts,
        base,
        cap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const BASE: &str = r#"
        [[sources]]
        id = "gh"
        provider = "github"
        secrets = ["env:GH_SECRET"]
        [[targets]]
        id = "bus"
        kind = "eventbridge"
        [[routes]]
        sources = ["*"]
        targets = ["bus"]
    "#;

    fn check(text: &str, env: &dyn SecretEnv) -> Result<Config, ConfigError> {
        validate(
            ConfigDoc::parse(text, Some("toml"))?,
            PathBuf::from("."),
            env,
        )
    }

    fn field_of(r: Result<Config, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn env_secret_resolves_and_defaults_apply() {
        let cfg = check(BASE, &env_of(&[("GH_SECRET", "s3cret")])).expect("valid");
        let src = cfg.source("gh").expect("source");
        assert_eq!(src.provider.name(), "github");
        assert_eq!(src.dedupe_window_ms, 7 * 86_400_000);
        assert_eq!(cfg.targets_for("gh", &["push"]), vec!["bus".to_string()]);
    }

    fn with_ordering(lines: &str) -> String {
        BASE.replacen(
            "secrets = [\"env:GH_SECRET\"]",
            &format!("secrets = [\"env:GH_SECRET\"]\n{lines}"),
            1,
        )
    }

    #[test]
    fn order_by_and_version_are_json_pointers_and_make_the_queue_fifo() {
        let env = env_of(&[("GH_SECRET", "s")]);
        let plain = check(BASE, &env).expect("valid");
        assert!(!plain.needs_fifo());
        let cfg = check(
            &with_ordering("order_by = \"/data/wallet\"\nversion = \"/data/version\""),
            &env,
        )
        .expect("valid");
        assert!(cfg.needs_fifo());
        assert_eq!(
            cfg.ordering("gh"),
            Some(&Ordering {
                order_by: "/data/wallet".into(),
                version: Some("/data/version".into()),
            })
        );
        assert_eq!(
            field_of(check(&with_ordering("order_by = \"data.wallet\""), &env)),
            "sources[0].order_by"
        );
        assert_eq!(
            field_of(check(
                &with_ordering("order_by = \"/w\"\nversion = \"/v~2\""),
                &env
            )),
            "sources[0].version"
        );
        // A version alone cannot say whose version it is.
        assert_eq!(
            field_of(check(&with_ordering("version = \"/v\""), &env)),
            "sources[0].version"
        );
    }

    #[test]
    fn routes_match_the_provider_type_or_the_canonical_type() {
        let text = format!(
            "{BASE}\n[[targets]]\nid = \"payments\"\nkind = \"jsonl\"\npath = \"p.jsonl\"\n\
             [[routes]]\nsources = [\"*\"]\ntypes = [\"payment.*\"]\ntargets = [\"payments\"]\n"
        );
        let cfg = check(&text, &env_of(&[("GH_SECRET", "s")])).expect("valid");
        let both = vec!["bus".to_string(), "payments".to_string()];
        assert_eq!(
            cfg.targets_for("gh", &["payment_intent.succeeded", "payment.succeeded"]),
            both
        );
        assert_eq!(
            cfg.targets_for("gh", &["payment_intent.succeeded"]),
            vec!["bus".to_string()]
        );
        assert_eq!(cfg.targets_for("gh", &[]), vec!["bus".to_string()]);
    }

    #[test]
    fn a_poll_only_source_needs_no_webhook_secret_and_takes_no_webhooks() {
        let text = r#"
            [[sources]]
            id = "stripe-poll"
            provider = "stripe"
            webhooks = false
            [sources.poll]
            kind = "stripe_events"
            every = "10m"
            secrets = ["env:STRIPE_KEY"]
            [[targets]]
            id = "bus"
            kind = "eventbridge"
            [[routes]]
            sources = ["*"]
            targets = ["bus"]
        "#;
        let cfg = check(text, &env_of(&[("STRIPE_KEY", "rk_test_x")])).expect("valid");
        let src = cfg.source("stripe-poll").expect("source");
        assert!(!src.webhooks);
        assert!(src.poll.is_some());
        // Without a poll table it would take nothing at all.
        let no_poll = text.replace("[sources.poll]", "[sources.pollx]");
        assert!(check(&no_poll, &env_of(&[])).is_err());
        let cut = text.split("[sources.poll]").collect::<Vec<_>>();
        let without = format!(
            "{}[[targets]]{}",
            cut[0],
            cut[1].split("[[targets]]").nth(1).unwrap_or_default()
        );
        assert_eq!(
            field_of(check(&without, &env_of(&[]))),
            "sources[0].webhooks"
        );
        // A webhook secret on a poll-only source is a mistake worth naming.
        let with_secret = text.replace(
            "webhooks = false",
            "webhooks = false\nsecrets = [\"env:X\"]",
        );
        assert_eq!(
            field_of(check(
                &with_secret,
                &env_of(&[("STRIPE_KEY", "k"), ("X", "y")])
            )),
            "sources[0].secrets"
        );
    }

    #[test]
    fn a_poll_only_generic_source_needs_no_signature_options() {
        let text = r#"
            [[sources]]
            id = "kyc"
            provider = "generic"
            webhooks = false
            options = { event_id = { json_pointer = "/id" } }
            [sources.poll]
            kind = "http_json"
            every = "2m"
            secrets = ["env:KEY"]
            options = { url = "https://kyc.example.com/v1/checks?after={cursor}", auth = { kind = "bearer" }, items_pointer = "/checks", id_pointer = "/id", cursor = { kind = "item_field" } }
            [[targets]]
            id = "bus"
            kind = "eventbridge"
            [[routes]]
            sources = ["*"]
            targets = ["bus"]
        "#;
        assert!(check(text, &env_of(&[("KEY", "k")])).is_ok());
        // Nor any options at all (the dedupe key then falls back to the body hash).
        let bare = text.replace("options = { event_id = { json_pointer = \"/id\" } }\n", "");
        assert_ne!(bare, text);
        assert!(check(&bare, &env_of(&[("KEY", "k")])).is_ok());
        // Taking webhooks, the same source must say where its signature is.
        let webhooks = text.replace("webhooks = false", "secrets = [\"env:KEY\"]");
        assert_eq!(
            field_of(check(&webhooks, &env_of(&[("KEY", "k")]))),
            "sources[0] (generic)"
        );
    }

    #[test]
    fn a_source_may_hold_its_events_longer_but_never_past_the_visibility() {
        let text = BASE.replace(
            "secrets = [\"env:GH_SECRET\"]",
            "secrets = [\"env:GH_SECRET\"]\nlease_seconds = 170",
        );
        let cfg = check(&text, &env_of(&[("GH_SECRET", "s")])).expect("valid");
        assert_eq!(cfg.lease_ms_for("gh"), 170_000);
        assert_eq!(cfg.lease_ms_for("other"), cfg.lease_ms());
        let plain = check(BASE, &env_of(&[("GH_SECRET", "s")])).expect("valid");
        assert_eq!(plain.lease_ms_for("gh"), plain.lease_ms());
        for bad in ["0", "181"] {
            let text = BASE.replace(
                "secrets = [\"env:GH_SECRET\"]",
                &format!("secrets = [\"env:GH_SECRET\"]\nlease_seconds = {bad}"),
            );
            assert_eq!(
                field_of(check(&text, &env_of(&[("GH_SECRET", "s")]))),
                "sources[0].lease_seconds"
            );
        }
    }

    /// Every place a secret is resolved must be listed by `secret_references`, else a Lambda
    /// would not read that reference from the store and its start would fail.
    #[tokio::test]
    async fn remote_references_are_all_listed_and_resolve_from_the_store() {
        use crate::remote_secrets::{fetch_all, tests::MemoryStore};
        let text = r#"
            [[sources]]
            id = "gh"
            provider = "github"
            secrets = [{ id = "2026", value = "secretsmanager:inlet/keys#github" }, "ssm:/inlet/gh-old"]
            [[sources]]
            id = "stripe"
            provider = "stripe"
            secrets = ["secretsmanager:inlet/keys#stripe"]
            [sources.poll]
            kind = "stripe_events"
            every = "10m"
            secrets = ["ssm:/inlet/stripe-api"]
            [[targets]]
            id = "hook"
            kind = "http"
            url = "https://hooks.example.com/in"
            secret = "ssm:/inlet/target"
            [[routes]]
            sources = ["*"]
            targets = ["hook"]
        "#;
        let doc = ConfigDoc::parse(text, Some("toml")).unwrap();
        assert_eq!(
            doc.secret_references(),
            [
                "secretsmanager:inlet/keys#github",
                "ssm:/inlet/gh-old",
                "secretsmanager:inlet/keys#stripe",
                "ssm:/inlet/stripe-api",
                "ssm:/inlet/target",
            ]
        );
        let store = MemoryStore::default();
        store.set_secret(
            "inlet/keys",
            r#"{"github":"gh-new","stripe":"whsec_dGVzdHNlY3JldA=="}"#,
        );
        store.set_parameter("/inlet/gh-old", "gh-old");
        store.set_parameter("/inlet/stripe-api", "rk_test_1");
        store.set_parameter(
            "/inlet/target",
            "whsec_dGFyZ2V0LXNpZ25pbmcta2V5LTI0Ynl0ZXM=",
        );
        let values = fetch_all(&store, doc.secret_references()).await.unwrap();
        let no_env = |_: &str| None;
        let env = WithRemote {
            env: &no_env,
            values: &values,
        };
        let config = validate(doc.clone(), PathBuf::from("."), &env).unwrap();
        assert_eq!(config.sources.len(), 2);

        // Without the store the field is named and the way out given.
        let err = validate(doc, PathBuf::from("."), &no_env).unwrap_err();
        assert_eq!(field_of(Err(err)), "sources[0].secrets[0].value");
    }

    #[test]
    fn an_ssm_config_needs_the_store() {
        let env = env_of(&[("INLET_CONFIG", "ssm:/inlet/config")]);
        assert!(matches!(
            doc_source_from_env(&env),
            Ok(DocSource::Parameter(name)) if name == "/inlet/config"
        ));
        let err = load_from_env(&env).unwrap_err();
        assert!(err.to_string().contains("ssm:/inlet/config"), "{err}");
    }

    #[test]
    fn poll_schedules_are_rates_scheduler_accepts() {
        let text = r#"
            [[sources]]
            id = "tg"
            provider = "telegram"
            webhooks = false
            [sources.poll]
            kind = "telegram_updates"
            every = "20s"
            secrets = ["env:TG"]
            [[sources]]
            id = "stripe"
            provider = "stripe"
            secrets = ["env:WH"]
            [sources.poll]
            kind = "stripe_events"
            every = "10m"
            [[sources]]
            id = "daily"
            provider = "stripe"
            webhooks = false
            [sources.poll]
            kind = "stripe_events"
            every = "1day"
            [[sources]]
            id = "odd"
            provider = "stripe"
            webhooks = false
            [sources.poll]
            kind = "stripe_events"
            every = "90s"
            [[sources]]
            id = "gh"
            provider = "github"
            secrets = ["env:WH"]
        "#;
        let doc = ConfigDoc::parse(text, Some("toml")).expect("parses");
        assert_eq!(
            doc.poll_schedules().expect("schedules"),
            vec![
                ("tg".to_owned(), "rate(1 minute)".to_owned()),
                ("stripe".to_owned(), "rate(10 minutes)".to_owned()),
                ("daily".to_owned(), "rate(1 day)".to_owned()),
                ("odd".to_owned(), "rate(2 minutes)".to_owned()),
            ]
        );
        let bad = text.replace("every = \"10m\"", "every = \"soon\"");
        assert!(ConfigDoc::parse(&bad, Some("toml"))
            .expect("parses")
            .poll_schedules()
            .is_err());
    }

    #[test]
    fn missing_env_secret_names_the_field() {
        assert_eq!(field_of(check(BASE, &env_of(&[]))), "sources[0].secrets[0]");
    }

    #[test]
    fn literal_secret_is_refused_outside_local_configs() {
        let text = BASE.replace("env:GH_SECRET", "literal:abc");
        assert_eq!(
            field_of(check(&text, &env_of(&[]))),
            "sources[0].secrets[0]"
        );
        let local = format!("[settings]\nenvironment = \"local\"\n{text}");
        assert!(check(&local, &env_of(&[])).is_ok());
    }

    #[test]
    fn unknown_field_is_a_parse_error_naming_it() {
        let text = BASE.replace(
            "provider = \"github\"",
            "provider = \"github\"\nsecretz = []",
        );
        match check(&text, &env_of(&[("GH_SECRET", "x")])) {
            Err(ConfigError::Parse { message, .. }) => {
                assert!(message.contains("secretz"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn misspelt_target_field_is_refused() {
        let text = BASE.replace(
            "kind = \"eventbridge\"",
            "kind = \"eventbridge\"\nbus_nam = \"x\"",
        );
        assert!(matches!(
            check(&text, &env_of(&[("GH_SECRET", "x")])),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn route_to_a_missing_target_names_the_field() {
        let text = BASE.replace("targets = [\"bus\"]", "targets = [\"nope\"]");
        assert_eq!(
            field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
            "routes[0].targets[0]"
        );
    }

    #[test]
    fn a_source_without_a_catch_all_route_is_refused() {
        let text = BASE.replace(
            "targets = [\"bus\"]",
            "types = [\"push\"]\ntargets = [\"bus\"]",
        );
        assert_eq!(
            field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
            "sources[0]"
        );
    }

    const RETRYING: &str = r#"
        [settings]
        max_receive_count = 10
        retry_base = "2s"
        retry_cap = "1m"
        [[sources]]
        id = "gh"
        provider = "github"
        secrets = ["env:GH_SECRET"]
        [[targets]]
        id = "bus"
        kind = "eventbridge"
        [[targets]]
        id = "hook"
        kind = "eventbridge"
        [[routes]]
        sources = ["*"]
        targets = ["bus"]
        [[routes]]
        sources = ["gh"]
        types = ["push"]
        targets = ["hook"]
        retry = { attempts = 8, base = "5s" }
        [[routes]]
        sources = ["*"]
        types = ["pu*"]
        targets = ["bus"]
        retry = { attempts = 3, cap = "10m" }
    "#;

    #[test]
    fn retry_policy_defaults_come_from_the_settings() {
        let cfg = check(BASE, &env_of(&[("GH_SECRET", "x")])).expect("valid");
        let defaults = RetryPolicy {
            attempts: 5,
            base: std::time::Duration::from_secs(1),
            cap: std::time::Duration::from_secs(300),
        };
        assert_eq!(cfg.default_retry, defaults, "attempts = max_receive_count");
        assert_eq!(cfg.retry_policy("gh", &["push"]), defaults);
        assert_eq!(cfg.retry_after_max, std::time::Duration::from_secs(3600));
    }

    #[test]
    fn matching_routes_with_retry_tables_merge_to_the_most_patient() {
        let cfg = check(RETRYING, &env_of(&[("GH_SECRET", "x")])).expect("valid");
        let s = std::time::Duration::from_secs;
        // Only the catch-all matches (it has no retry table): the settings' policy.
        assert_eq!(
            cfg.retry_policy("gh", &["issues"]),
            RetryPolicy {
                attempts: 10,
                base: s(2),
                cap: s(60)
            }
        );
        // Both retry routes match: the largest attempts, base and cap, each filled from the
        // settings where the route left it out (8/5s/1m and 3/2s/10m).
        assert_eq!(
            cfg.retry_policy("gh", &["push"]),
            RetryPolicy {
                attempts: 8,
                base: s(5),
                cap: s(600)
            }
        );
        // Only the second one.
        assert_eq!(
            cfg.retry_policy("gh", &["pull_request"]),
            RetryPolicy {
                attempts: 3,
                base: s(2),
                cap: s(600)
            }
        );
    }

    #[test]
    fn the_request_bounds_have_defaults_and_name_their_fields() {
        let env = env_of(&[("GH_SECRET", "x")]);
        let cfg = check(BASE, &env).expect("valid");
        assert_eq!(cfg.settings.max_events_per_request, 5_000);
        assert_eq!(cfg.ingest_deadline, std::time::Duration::from_secs(6));
        let with = |settings: &str| check(&format!("[settings]\n{settings}\n{BASE}"), &env);
        let cfg = with("max_events_per_request = 20\ningest_deadline = \"1500ms\"").expect("valid");
        assert_eq!(cfg.settings.max_events_per_request, 20);
        assert_eq!(cfg.ingest_deadline, std::time::Duration::from_millis(1500));
        for (settings, field) in [
            (
                "max_events_per_request = 0",
                "settings.max_events_per_request",
            ),
            (
                "max_events_per_request = 100001",
                "settings.max_events_per_request",
            ),
            ("ingest_deadline = \"50ms\"", "settings.ingest_deadline"),
            ("ingest_deadline = \"30s\"", "settings.ingest_deadline"),
            ("ingest_deadline = \"soon\"", "settings.ingest_deadline"),
        ] {
            assert_eq!(field_of(with(settings)), field, "{settings}");
        }
    }

    #[test]
    fn bad_retry_policies_name_their_fields() {
        let env = env_of(&[("GH_SECRET", "x")]);
        let with = |from: &str, to: &str| field_of(check(&RETRYING.replacen(from, to, 1), &env));
        assert_eq!(
            with("attempts = 8", "attempts = 11"),
            "routes[1].retry.attempts",
            "more than max_receive_count"
        );
        assert_eq!(
            with("attempts = 8", "attempts = 0"),
            "routes[1].retry.attempts"
        );
        assert_eq!(
            with("base = \"5s\"", "base = \"2m\""),
            "routes[1].retry.base",
            "base > cap"
        );
        assert_eq!(
            with("cap = \"10m\"", "cap = \"13h\""),
            "routes[2].retry.cap"
        );
        assert_eq!(
            with("cap = \"10m\"", "cap = \"soon\""),
            "routes[2].retry.cap"
        );
        assert_eq!(
            with("base = \"5s\"", "base = \"500ms\""),
            "routes[1].retry.base"
        );
        assert_eq!(
            with("retry_cap = \"1m\"", "retry_cap = \"1s\""),
            "settings.retry_base"
        );
        assert_eq!(
            with(
                "retry_base = \"2s\"",
                "retry_base = \"2s\"\nretry_attempts = 11"
            ),
            "settings.retry_attempts"
        );
        assert_eq!(
            with(
                "retry_base = \"2s\"",
                "retry_base = \"2s\"\nretry_after_max = \"1d\""
            ),
            "settings.retry_after_max"
        );
        assert!(matches!(
            check(
                &RETRYING.replacen("attempts = 8", "attempts = 8, tries = 2", 1),
                &env
            ),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn lease_longer_than_visibility_is_refused() {
        let text =
            format!("[settings]\nlease_seconds = 300\nvisibility_timeout_seconds = 100\n{BASE}");
        assert_eq!(
            field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
            "settings.lease_seconds"
        );
    }

    #[test]
    fn server_limits_have_defaults_and_bad_ones_name_their_fields() {
        let env = env_of(&[("GH_SECRET", "x")]);
        let s = std::time::Duration::from_secs;
        let cfg = check(BASE, &env).expect("valid");
        assert_eq!(
            cfg.server,
            ServerLimits {
                header_timeout: s(10),
                body_timeout: s(30),
                idle_timeout: s(60),
                max_connections: 512,
                max_connections_per_ip: 128,
            }
        );
        let with = |settings: &str| check(&format!("[settings]\n{settings}\n{BASE}"), &env);
        let cfg = with("header_timeout = \"1s\"\nbody_timeout = \"1500ms\"\nidle_timeout = \"2s\"\nmax_connections = 8\nmax_connections_per_ip = 8")
            .expect("valid");
        assert_eq!(
            cfg.server.body_timeout,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(cfg.server.max_connections_per_ip, 8);
        for (settings, field) in [
            ("header_timeout = \"0s\"", "settings.header_timeout"),
            ("header_timeout = \"soon\"", "settings.header_timeout"),
            ("body_timeout = \"2h\"", "settings.body_timeout"),
            ("idle_timeout = \"0ms\"", "settings.idle_timeout"),
            ("max_connections = 0", "settings.max_connections"),
            (
                "max_connections_per_ip = 0",
                "settings.max_connections_per_ip",
            ),
            (
                "max_connections = 10\nmax_connections_per_ip = 11",
                "settings.max_connections_per_ip",
            ),
        ] {
            assert_eq!(field_of(with(settings)), field, "{settings}");
        }
    }

    #[test]
    fn trail_retention_defaults_to_30_days_and_must_be_1_to_3650() {
        let env = env_of(&[("GH_SECRET", "x")]);
        let cfg = check(BASE, &env).expect("valid");
        assert_eq!(cfg.settings.trail_retention_days, 30);
        assert_eq!(
            cfg.settings.trail_expires_at(1_000),
            1_000 + 30 * 86_400_000
        );
        for days in [1, 3650] {
            let text = format!("[settings]\ntrail_retention_days = {days}\n{BASE}");
            let cfg = check(&text, &env).expect("in range");
            assert_eq!(
                cfg.settings.trail_expires_at(0),
                i64::from(days) * 86_400_000
            );
        }
        for days in [0, 3651] {
            let text = format!("[settings]\ntrail_retention_days = {days}\n{BASE}");
            assert_eq!(
                field_of(check(&text, &env)),
                "settings.trail_retention_days",
                "{days}"
            );
        }
    }

    #[test]
    fn bad_cidr_and_unknown_provider_name_their_fields() {
        let text = BASE.replace("secrets =", "allow_cidrs = [\"10.0.0.0/33\"]\nsecrets =");
        assert_eq!(
            field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
            "sources[0].allow_cidrs[0]"
        );
        let text = BASE.replace("\"github\"", "\"gitbub\"");
        assert_eq!(
            field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
            "sources[0].provider"
        );
    }

    #[test]
    fn deployment_env_overrides_queue_settings() {
        let env = env_of(&[
            ("INLET_CONFIG", BASE),
            ("GH_SECRET", "x"),
            ("INLET_MAX_RECEIVE_COUNT", "9"),
            ("INLET_LEASE_SECONDS", "40"),
            ("INLET_VISIBILITY_TIMEOUT_SECONDS", "200"),
        ]);
        let cfg = load_from_env(&env).expect("valid");
        assert_eq!(
            (
                cfg.settings.max_receive_count,
                cfg.settings.lease_seconds,
                cfg.settings.visibility_timeout_seconds
            ),
            (9, 40, 200)
        );
        let bad = env_of(&[
            ("INLET_CONFIG", BASE),
            ("GH_SECRET", "x"),
            ("INLET_LEASE_SECONDS", "soon"),
        ]);
        assert_eq!(field_of(load_from_env(&bad)), "INLET_LEASE_SECONDS");
    }

    const CHECKED: &str = r#"
        [settings]
        environment = "local"
        [[sources]]
        id = "stripe"
        provider = "stripe"
        secrets = ["literal:whsec_x"]
        [sources.poll]
        kind = "stripe_events"
        every = "10m"
        secrets = ["literal:rk_x"]
        [[sources.checks]]
        name = "payment-settles"
        on = ["payment_intent.created"]
        expect = ["payment.succeeded", "payment.failed"]
        after = "15m"
        [[sources]]
        id = "gh"
        provider = "github"
        secrets = ["literal:s"]
        [[targets]]
        id = "bus"
        kind = "eventbridge"
        [[routes]]
        sources = ["*"]
        targets = ["bus"]
    "#;

    #[test]
    fn a_check_defaults_to_polling_its_own_source() {
        let cfg = check(CHECKED, &env_of(&[])).expect("valid");
        let checks = &cfg.source("stripe").expect("source").checks;
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].poll, "stripe");
        assert_eq!(checks[0].after, std::time::Duration::from_secs(900));
        assert!(cfg.source("gh").expect("source").checks.is_empty());
    }

    #[test]
    fn bad_checks_name_their_fields() {
        let with = |from: &str, to: &str| {
            let text = CHECKED.replacen(from, to, 1);
            field_of(check(&text, &env_of(&[])))
        };
        assert_eq!(
            with("after = \"15m\"", "after = \"15m\"\npoll = \"nope\""),
            "sources[0].checks[0].poll"
        );
        // A source that is not polled has nothing to run when the check is due.
        assert_eq!(
            with("after = \"15m\"", "after = \"15m\"\npoll = \"gh\""),
            "sources[0].checks[0].poll"
        );
        assert_eq!(
            with("on = [\"payment_intent.created\"]", "on = []"),
            "sources[0].checks[0].on"
        );
        assert_eq!(
            with(
                "expect = [\"payment.succeeded\", \"payment.failed\"]",
                "expect = []"
            ),
            "sources[0].checks[0].expect"
        );
        assert_eq!(
            with("after = \"15m\"", "after = \"30s\""),
            "sources[0].checks[0].after"
        );
        assert_eq!(
            with("after = \"15m\"", "after = \"8days\""),
            "sources[0].checks[0].after"
        );
        assert_eq!(
            with("after = \"15m\"", "after = \"soon\""),
            "sources[0].checks[0].after"
        );
        assert_eq!(
            with("name = \"payment-settles\"", "name = \"Bad Name\""),
            "sources[0].checks[0].name"
        );
        let twice = CHECKED.replace(
            "[[sources]]\n        id = \"gh\"",
            "[[sources.checks]]\n        name = \"payment-settles\"\n        on = [\"a\"]\n        expect = [\"b\"]\n        after = \"1m\"\n        [[sources]]\n        id = \"gh\"",
        );
        assert_eq!(
            field_of(check(&twice, &env_of(&[]))),
            "sources[0].checks[1].name"
        );
    }

    #[test]
    fn ip_allow_list_fails_closed_without_an_address() {
        let text = BASE.replace(
            "secrets =",
            "allow_cidrs = [\"10.0.0.0/8\", \"192.0.2.7\"]\nsecrets =",
        );
        let cfg = check(&text, &env_of(&[("GH_SECRET", "x")])).expect("valid");
        let src = cfg.source("gh").expect("source");
        assert!(src.ip_allowed(Some("10.1.2.3".parse().expect("ip"))));
        assert!(src.ip_allowed(Some("192.0.2.7".parse().expect("ip"))));
        assert!(!src.ip_allowed(Some("127.0.0.1".parse().expect("ip"))));
        assert!(!src.ip_allowed(None));
        // A dual-stack listener's view of an IPv4 caller.
        assert!(src.ip_allowed(Some("::ffff:10.1.2.3".parse().expect("ip"))));
        assert!(!src.ip_allowed(Some("::ffff:127.0.0.1".parse().expect("ip"))));
    }

    #[test]
    fn kept_headers_are_bounded_so_every_envelope_fits() {
        let many: Vec<String> = (0..=envelope::MAX_KEEP_HEADERS)
            .map(|n| format!("\"x-h{n}\""))
            .collect();
        let text = BASE.replace(
            "secrets =",
            &format!("keep_headers = [{}]\nsecrets =", many.join(", ")),
        );
        assert_eq!(
            field_of(check(&text, &env_of(&[("GH_SECRET", "x")]))),
            "sources[0].keep_headers"
        );
        let long = BASE.replace(
            "secrets =",
            &format!("keep_headers = [\"{}\"]\nsecrets =", "x".repeat(65)),
        );
        assert_eq!(
            field_of(check(&long, &env_of(&[("GH_SECRET", "x")]))),
            "sources[0].keep_headers"
        );
    }
}
