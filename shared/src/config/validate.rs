//! A parsed document checked section by section and built into the runtime model. Every
//! problem is collected with its field named, so one start reports them all; a section
//! with a problem is left out of the model, and later sections check against what the
//! document declares (a route naming a source that failed its own checks is not a second
//! problem).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::model::{Check, Config, Route, ServerLimits, Source, MAX_AFTER, MIN_AFTER};
use super::schema::{
    CheckSpec, ConfigDoc, Environment, PollSpec, RetrySpec, RouteSpec, Settings, SourceSpec,
    MAX_BODY_BYTES, MAX_WORKER_BATCH_SIZE, MAX_WORKER_CONCURRENCY,
};
use super::secrets::{resolve_secret, resolve_secrets, SecretEnv};
use super::{invalid, ConfigError, FieldError};
use crate::envelope;
use crate::ordering::{check_pointer, Ordering};
use crate::poll::PollSource;
use crate::providers::{self, Provider};
use crate::retry::{RetryPolicy, MAX_VISIBILITY};
use crate::secret::Secret;
use crate::targets::TargetKind;

/// Ten years: past that a retention is a mistake, not a policy.
const MAX_TRAIL_RETENTION_DAYS: u32 = 3650;

/// Past this many events one request could not be queued within any ingest deadline (a
/// hundred thousand is ten thousand batch sends).
const MAX_EVENTS_PER_REQUEST: usize = 100_000;

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }

    /// The value, or `None` with its problem noted.
    fn take<T>(&mut self, r: Result<T, FieldError>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    fn count(&self) -> usize {
        self.0.len()
    }
}

/// The settings, parsed.
struct Parsed {
    default_retry: Option<RetryPolicy>,
    retry_after_max: Option<Duration>,
    server: Option<ServerLimits>,
    ingest_deadline: Option<Duration>,
}

/// Validate a parsed document: every problem names its field.
pub fn validate(
    mut doc: ConfigDoc,
    base_dir: PathBuf,
    env: &dyn SecretEnv,
) -> Result<Config, ConfigError> {
    let mut p = Problems::default();
    let parsed = settings(&doc.settings, &mut p);
    let sources = sources(&doc, env, &mut p);
    targets(&mut doc, env, &mut p);
    let routes = routes(&doc, parsed.default_retry, &mut p);
    every_source_routed(&doc, &mut p);
    match parsed {
        Parsed {
            default_retry: Some(default_retry),
            retry_after_max: Some(retry_after_max),
            server: Some(server),
            ingest_deadline: Some(ingest_deadline),
        } if p.count() == 0 => Ok(Config {
            settings: doc.settings,
            sources,
            targets: doc.targets,
            routes,
            base_dir,
            default_retry,
            retry_after_max,
            server,
            ingest_deadline,
        }),
        _ => Err(ConfigError::Invalid(p.0)),
    }
}

fn settings(s: &Settings, p: &mut Problems) -> Parsed {
    if s.max_body_bytes == 0 || s.max_body_bytes > MAX_BODY_BYTES {
        p.push(invalid(
            "settings.max_body_bytes",
            format!(
                "must be between 1 and {MAX_BODY_BYTES}: Lambda takes at most 6 MB in one \
                 synchronous invocation, so no larger body can reach ingest"
            ),
        ));
    }
    let receives_ok = (1..=1000).contains(&s.max_receive_count);
    if !receives_ok {
        p.push(invalid(
            "settings.max_receive_count",
            "must be 1–1000 (SQS limit)",
        ));
    }
    if s.visibility_timeout_seconds == 0 || s.visibility_timeout_seconds > 43_200 {
        p.push(invalid(
            "settings.visibility_timeout_seconds",
            "must be 1–43200 (SQS limit: 12 h)",
        ));
    }
    if !(1..=MAX_TRAIL_RETENTION_DAYS).contains(&s.trail_retention_days) {
        p.push(invalid(
            "settings.trail_retention_days",
            format!("must be 1–{MAX_TRAIL_RETENTION_DAYS} days"),
        ));
    }
    for (field, days) in [
        ("settings.blob_retention_days", s.blob_retention_days),
        ("settings.archive_retention_days", s.archive_retention_days),
    ] {
        if !(1..=MAX_TRAIL_RETENTION_DAYS).contains(&days) {
            p.push(invalid(
                field,
                format!("must be 1–{MAX_TRAIL_RETENTION_DAYS} days"),
            ));
        }
    }
    if !(1..=MAX_WORKER_BATCH_SIZE).contains(&s.worker_batch_size) {
        p.push(invalid(
            "settings.worker_batch_size",
            format!("must be 1–{MAX_WORKER_BATCH_SIZE} (Lambda's limit for an SQS batch)"),
        ));
    }
    if !(1..=MAX_WORKER_CONCURRENCY).contains(&s.worker_concurrency) {
        p.push(invalid(
            "settings.worker_concurrency",
            format!("must be 1–{MAX_WORKER_CONCURRENCY}"),
        ));
    }
    if s.lease_seconds == 0 || s.lease_seconds > s.visibility_timeout_seconds {
        p.push(invalid(
            "settings.lease_seconds",
            "must be ≥ 1 and ≤ settings.visibility_timeout_seconds, so a redelivered message never finds a live lease of a dead worker",
        ));
    }
    // The retry attempts are bounded by the receive count: with no valid count there is
    // nothing to check them against.
    let default_retry = if receives_ok {
        let spec = RetrySpec {
            attempts: s.retry_attempts,
            base: Some(s.retry_base.clone()),
            cap: Some(s.retry_cap.clone()),
        };
        p.take(retry("settings", &spec, None, s.max_receive_count))
    } else {
        None
    };
    let retry_after_max = p.take(parse_retry_duration(
        "settings.retry_after_max",
        &s.retry_after_max,
    ));
    let server = server_limits(s, p);
    if !(1..=MAX_EVENTS_PER_REQUEST).contains(&s.max_events_per_request) {
        p.push(invalid(
            "settings.max_events_per_request",
            format!("must be 1–{MAX_EVENTS_PER_REQUEST}"),
        ));
    }
    let ingest_deadline = p.take(parse_ingest_deadline(&s.ingest_deadline));
    Parsed {
        default_retry,
        retry_after_max,
        server,
        ingest_deadline,
    }
}

fn server_limits(s: &Settings, p: &mut Problems) -> Option<ServerLimits> {
    // An hour is already far past any webhook's patience; the bound also keeps deadline
    // arithmetic (now + timeout) from overflowing.
    const MAX: Duration = Duration::from_secs(3600);
    let timeout = |field: &str, text: &str| {
        let d = duration(field, text)?;
        if d.is_zero() || d > MAX {
            return Err(invalid(
                field,
                format!("{text:?} must be more than 0 and at most 1h"),
            ));
        }
        Ok(d)
    };
    let before = p.count();
    if s.max_connections == 0 {
        p.push(invalid("settings.max_connections", "must be at least 1"));
    }
    // Bounded by max_connections: when that is wrong, this cannot be judged yet.
    if s.max_connections > 0
        && (s.max_connections_per_ip == 0 || s.max_connections_per_ip > s.max_connections)
    {
        p.push(invalid(
            "settings.max_connections_per_ip",
            "must be at least 1 and at most settings.max_connections",
        ));
    }
    let header_timeout = p.take(timeout("settings.header_timeout", &s.header_timeout));
    let body_timeout = p.take(timeout("settings.body_timeout", &s.body_timeout));
    let idle_timeout = p.take(timeout("settings.idle_timeout", &s.idle_timeout));
    if p.count() > before {
        return None;
    }
    Some(ServerLimits {
        header_timeout: header_timeout?,
        body_timeout: body_timeout?,
        idle_timeout: idle_timeout?,
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
    })
}

/// A duration as people write them (`30s`, `5m`, `1h30m`, `2days`); the error shows the
/// form, since humantime's own ("expected number at 10") does not say what was expected.
fn duration(field: &str, text: &str) -> Result<Duration, FieldError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            field,
            format!("{text:?} is not a duration ({e}): write it like 30s, 5m, 1h30m or 2days"),
        )
    })
}

/// `settings.ingest_deadline`: humantime, from 100 ms (one queue round trip) to 29 s (an
/// HTTP API integration gives up at 30 s, and so does the longest ingest Lambda the
/// template allows). Keep it below the ingest Lambda's timeout.
pub fn parse_ingest_deadline(text: &str) -> Result<Duration, FieldError> {
    let field = "settings.ingest_deadline";
    let d = duration(field, text)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(29) {
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
fn parse_retry_duration(field: &str, text: &str) -> Result<Duration, FieldError> {
    let d = duration(field, text)?;
    if d < Duration::from_secs(1) || d > MAX_VISIBILITY {
        return Err(invalid(
            field,
            format!("{text:?} must be between 1s and 12h (SQS visibility)"),
        ));
    }
    Ok(d)
}

/// A retry table; fields it leaves out come from `defaults` (the settings' policy). The
/// settings' own table is `at` = "settings", where the fields are `retry_*`.
fn retry(
    at: &str,
    spec: &RetrySpec,
    defaults: Option<RetryPolicy>,
    max_receive_count: u32,
) -> Result<RetryPolicy, FieldError> {
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
    let duration =
        |name: &str, text: &Option<String>, default: Option<Duration>| match (text, default) {
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

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn id_problem(field: String, id: &str) -> FieldError {
    invalid(field, format!("{id:?} must be 1–64 chars of a-z 0-9 - _"))
}

/// Every source that passed its checks, by id.
fn sources(doc: &ConfigDoc, env: &dyn SecretEnv, p: &mut Problems) -> BTreeMap<String, Source> {
    let mut out = BTreeMap::new();
    let mut seen = HashSet::new();
    for (i, src) in doc.sources.iter().enumerate() {
        let f = format!("sources[{i}]");
        if !valid_id(&src.id) {
            p.push(id_problem(format!("{f}.id"), &src.id));
            continue;
        }
        if !seen.insert(src.id.as_str()) {
            p.push(invalid(
                format!("{f}.id"),
                format!("duplicate source id {:?}", src.id),
            ));
            continue;
        }
        if let Some(source) = source(&f, src, &doc.settings, env, p) {
            out.insert(src.id.clone(), source);
        }
    }
    check_poll_sources(doc, &out, p);
    out
}

/// One source, or `None` with its problems noted.
fn source(
    f: &str,
    src: &SourceSpec,
    s: &Settings,
    env: &dyn SecretEnv,
    p: &mut Problems,
) -> Option<Source> {
    let before = p.count();
    keep_headers(f, &src.keep_headers, p);
    let provider = p.take(provider(f, src, s.environment, env));
    let allow = allow_list(f, &src.allow_cidrs, p);
    let poll = src
        .poll
        .as_ref()
        .and_then(|spec| p.take(poll(&format!("{f}.poll"), spec, s.environment, env)));
    let lease_seconds = src.lease_seconds.unwrap_or(s.lease_seconds);
    // A lease inherited from the settings is the settings' problem, noted there once.
    if src.lease_seconds.is_some()
        && (lease_seconds == 0 || lease_seconds > s.visibility_timeout_seconds)
    {
        p.push(invalid(
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
            p.push(invalid(
                format!("{f}.rate_limit"),
                "per_second and burst must be > 0 (leave rate_limit out for no limit)",
            ));
            None
        }
        Some(r) => Some((r.per_second, r.burst.unwrap_or(r.per_second))),
    };
    let checks = checks(f, src, p);
    let ordering = p.take(ordering(f, src));
    let provider = provider?;
    let window = src
        .dedupe_window_seconds
        .unwrap_or_else(|| provider.default_dedupe_window_seconds());
    if window == 0 {
        p.push(invalid(format!("{f}.dedupe_window_seconds"), "must be > 0"));
    }
    if p.count() > before {
        return None;
    }
    Some(Source {
        id: src.id.clone(),
        provider,
        allow,
        poll,
        webhooks: src.webhooks,
        rate_limit,
        lease_ms: lease_seconds as i64 * 1000,
        checks,
        ordering: ordering?,
        dedupe_window_ms: window as i64 * 1000,
        keep_headers: src
            .keep_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        archive: src.archive.unwrap_or(s.archive),
    })
}

/// Kept headers travel in every envelope: bounded, so every event still fits a message.
fn keep_headers(f: &str, names: &[String], p: &mut Problems) {
    if names.len() > envelope::MAX_KEEP_HEADERS {
        p.push(invalid(
            format!("{f}.keep_headers"),
            format!("at most {} headers", envelope::MAX_KEEP_HEADERS),
        ));
    }
    if let Some(long) = names
        .iter()
        .find(|h| h.is_empty() || h.len() > envelope::MAX_HEADER_NAME_BYTES)
    {
        p.push(invalid(
            format!("{f}.keep_headers"),
            format!(
                "{long:?}: a header name is 1 to {} bytes",
                envelope::MAX_HEADER_NAME_BYTES
            ),
        ));
    }
}

/// The source's provider, built by the provider itself from its options and secrets.
fn provider(
    f: &str,
    src: &SourceSpec,
    environment: Environment,
    env: &dyn SecretEnv,
) -> Result<std::sync::Arc<dyn Provider>, FieldError> {
    let mut secrets = resolve_secrets(&format!("{f}.secrets"), &src.secrets, environment, env)?;
    let mut options = src.options.clone().unwrap_or(serde_json::Value::Null);
    if !src.webhooks {
        poll_only(f, src, &mut secrets, &mut options)?;
    }
    providers::build(&src.provider, &options, secrets).map_err(|e| {
        let field = if providers::is_known(&src.provider) {
            format!("{f} ({})", src.provider)
        } else {
            format!("{f}.provider")
        };
        invalid(field, e.0)
    })
}

/// A poll-only source (`webhooks = false`) takes no webhook secret and no signature options.
fn poll_only(
    f: &str,
    src: &SourceSpec,
    secrets: &mut Vec<Secret>,
    options: &mut serde_json::Value,
) -> Result<(), FieldError> {
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
    // Providers are built ready to verify and most refuse to exist without a key. This one
    // is random, never stored or shown, and ingest refuses the source's requests before any
    // verification, so it can never admit a request.
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
    if matches!(src.provider.as_str(), "generic" | "hmac") {
        // The generic scheme insists on saying where a signature is; a poll-only source
        // verifies none (its webhook URL is closed), so it need not say.
        if options.is_null() {
            *options = serde_json::json!({});
        }
        if let Some(obj) = options.as_object_mut() {
            obj.entry("signature")
                .or_insert_with(|| serde_json::json!({ "header": "x-inlet-poll-only" }));
        }
    }
    Ok(())
}

fn allow_list(f: &str, cidrs: &[String], p: &mut Problems) -> Vec<IpNet> {
    let mut allow = Vec::new();
    for (j, c) in cidrs.iter().enumerate() {
        let net = c
            .parse::<IpNet>()
            .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                invalid(
                    format!("{f}.allow_cidrs[{j}]"),
                    format!("{c:?} is not a CIDR"),
                )
            });
        allow.extend(p.take(net));
    }
    allow
}

pub(super) fn parse_every(f: &str, text: &str) -> Result<Duration, FieldError> {
    let every = duration(&format!("{f}.every"), text)?;
    if every < Duration::from_secs(1) {
        return Err(invalid(format!("{f}.every"), "must be at least 1s"));
    }
    Ok(every)
}

/// A source's `poll` table; the kind checks its own options.
fn poll(
    f: &str,
    spec: &PollSpec,
    environment: Environment,
    env: &dyn SecretEnv,
) -> Result<PollSource, FieldError> {
    let every = parse_every(f, &spec.every)?;
    if spec.max_requests_per_run == 0 {
        return Err(invalid(format!("{f}.max_requests_per_run"), "must be > 0"));
    }
    if spec.max_requests_per_minute == 0 {
        return Err(invalid(
            format!("{f}.max_requests_per_minute"),
            "must be > 0",
        ));
    }
    let options = spec.options.clone().unwrap_or(serde_json::Value::Null);
    let kind = crate::poll::kinds::build(&spec.kind, &options).map_err(|why| {
        let field = if crate::poll::kinds::KINDS.contains(&spec.kind.as_str()) {
            format!("{f}.options")
        } else {
            format!("{f}.kind")
        };
        invalid(field, why.to_string())
    })?;
    Ok(PollSource {
        kind,
        every,
        credentials: resolve_secrets(&format!("{f}.secrets"), &spec.secrets, environment, env)?,
        max_requests_per_run: spec.max_requests_per_run,
        max_requests_per_minute: spec.max_requests_per_minute,
        reconcile: spec.reconcile,
    })
}

/// A source's checks, except their poll source (checked once every source is known).
fn checks(f: &str, src: &SourceSpec, p: &mut Problems) -> Vec<Check> {
    let mut out: Vec<Check> = Vec::new();
    for (j, spec) in src.checks.iter().enumerate() {
        let cf = format!("{f}.checks[{j}]");
        if out.iter().any(|k| k.name == spec.name) {
            p.push(invalid(
                format!("{cf}.name"),
                format!(
                    "duplicate check name {:?} in source {:?}",
                    spec.name, src.id
                ),
            ));
            continue;
        }
        out.extend(p.take(check(&cf, spec, &src.id)));
    }
    out
}

fn check(cf: &str, spec: &CheckSpec, source_id: &str) -> Result<Check, FieldError> {
    if !valid_id(&spec.name) {
        return Err(id_problem(format!("{cf}.name"), &spec.name));
    }
    let types_ok =
        |types: &[String]| !types.is_empty() && types.iter().all(|t| !t.trim().is_empty());
    if !types_ok(&spec.on) {
        return Err(invalid(
            format!("{cf}.on"),
            "must name at least one event type (and no empty one)",
        ));
    }
    if !types_ok(&spec.expect) {
        return Err(invalid(
            format!("{cf}.expect"),
            "must name at least one event type (and no empty one)",
        ));
    }
    let after = duration(&format!("{cf}.after"), &spec.after)?;
    if !(MIN_AFTER..=MAX_AFTER).contains(&after) {
        return Err(invalid(
            format!("{cf}.after"),
            "must be between 1 minute and 7 days",
        ));
    }
    Ok(Check {
        name: spec.name.clone(),
        on: spec.on.clone(),
        expect: spec.expect.clone(),
        after,
        poll: spec.poll.clone().unwrap_or_else(|| source_id.to_owned()),
    })
}

/// A check's poll source must exist and poll; known only once every source is read.
fn check_poll_sources(doc: &ConfigDoc, sources: &BTreeMap<String, Source>, p: &mut Problems) {
    for (i, src) in doc.sources.iter().enumerate() {
        let Some(checks) = sources.get(&src.id).map(|s| s.checks.as_slice()) else {
            continue;
        };
        for (j, check) in checks.iter().enumerate() {
            let field = format!("sources[{i}].checks[{j}].poll");
            match doc.sources.iter().find(|s| s.id == check.poll) {
                None => p.push(invalid(field, format!("no source {:?}", check.poll))),
                Some(polled) if polled.poll.is_none() => p.push(invalid(
                    field,
                    format!(
                        "source {:?} has no poll table, so there is nothing to run when the check is due",
                        check.poll
                    ),
                )),
                Some(_) => {}
            }
        }
    }
}

/// A source's `order_by` and `version`.
fn ordering(f: &str, src: &SourceSpec) -> Result<Option<Ordering>, FieldError> {
    let Some(order_by) = &src.order_by else {
        return match src.version {
            Some(_) => Err(invalid(
                format!("{f}.version"),
                "needs order_by: a version orders the updates of one entity, and order_by says which entity",
            )),
            None => Ok(None),
        };
    };
    check_pointer(order_by).map_err(|e| invalid(format!("{f}.order_by"), e.to_string()))?;
    if let Some(version) = &src.version {
        check_pointer(version).map_err(|e| invalid(format!("{f}.version"), e.to_string()))?;
    }
    Ok(Some(Ordering {
        order_by: order_by.clone(),
        version: src.version.clone(),
    }))
}

/// Target ids, and each HTTP target's signing secret and options (prepared in place).
fn targets(doc: &mut ConfigDoc, env: &dyn SecretEnv, p: &mut Problems) {
    let mut ids = HashSet::new();
    for (i, t) in doc.targets.iter().enumerate() {
        if !valid_id(&t.id) {
            p.push(id_problem(format!("targets[{i}].id"), &t.id));
        } else if !ids.insert(t.id.as_str()) {
            p.push(invalid(
                format!("targets[{i}].id"),
                format!("duplicate target id {:?}", t.id),
            ));
        }
    }
    let s = &doc.settings;
    for (i, t) in doc.targets.iter_mut().enumerate() {
        if let TargetKind::Http(http) = &mut t.kind {
            let f = format!("targets[{i}]");
            let prepared = resolve_secret(&format!("{f}.secret"), &http.secret, s.environment, env)
                .and_then(|key| {
                    http.prepare(key)
                        .map_err(|(field, message)| invalid(format!("{f}.{field}"), message))
                });
            if p.take(prepared).is_none() {
                continue;
            }
            // A delivery still running when the lease lapses could be made twice.
            if http.timeout_seconds >= s.lease_seconds as f64 {
                p.push(invalid(
                    format!("{f}.timeout_seconds"),
                    "must be shorter than settings.lease_seconds",
                ));
            }
        }
    }
}

fn routes(doc: &ConfigDoc, default_retry: Option<RetryPolicy>, p: &mut Problems) -> Vec<Route> {
    let mut out = Vec::new();
    for (i, r) in doc.routes.iter().enumerate() {
        if let Some(route) = route(&format!("routes[{i}]"), r, doc, default_retry, p) {
            out.push(route);
        }
    }
    out
}

fn route(
    f: &str,
    r: &RouteSpec,
    doc: &ConfigDoc,
    default_retry: Option<RetryPolicy>,
    p: &mut Problems,
) -> Option<Route> {
    let before = p.count();
    for (j, sid) in r.sources.iter().enumerate() {
        if sid != "*" && !doc.sources.iter().any(|s| &s.id == sid) {
            p.push(invalid(
                format!("{f}.sources[{j}]"),
                format!("no source {sid:?}"),
            ));
        }
    }
    if r.targets.is_empty() {
        p.push(invalid(
            format!("{f}.targets"),
            "must name at least one target",
        ));
    }
    for (j, tid) in r.targets.iter().enumerate() {
        if !doc.targets.iter().any(|t| &t.id == tid) {
            p.push(invalid(
                format!("{f}.targets[{j}]"),
                format!("no target {tid:?}"),
            ));
        }
    }
    // A route's retry table fills its gaps from the settings' policy: without a valid one
    // (its problem is noted already) there is nothing to check it against.
    let retry = match (&r.retry, default_retry) {
        (Some(spec), Some(defaults)) => p.take(retry(
            &format!("{f}.retry"),
            spec,
            Some(defaults),
            doc.settings.max_receive_count,
        )),
        _ => None,
    };
    (p.count() == before).then(|| Route {
        sources: r.sources.clone(),
        types: r.types.clone(),
        targets: r.targets.clone(),
        retry,
    })
}

/// An event that matches no route would be acknowledged and dropped: refuse the config.
/// Judged from the document's routes, so a route refused for another reason (say, a
/// misspelt target) does not also make its sources "unrouted".
fn every_source_routed(doc: &ConfigDoc, p: &mut Problems) {
    for (i, src) in doc.sources.iter().enumerate() {
        let routed = doc.routes.iter().any(|r| {
            r.sources.iter().any(|s| s == "*" || s == &src.id) && r.types.iter().any(|t| t == "*")
        });
        if !routed {
            p.push(invalid(
                format!("sources[{i}]"),
                format!(
                    "source {:?} has no catch-all route (types = [\"*\"]); some of its events would be dropped",
                    src.id
                ),
            ));
        }
    }
}
