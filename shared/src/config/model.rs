//! The validated config: what the pipeline runs on, and its routing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::schema::Settings;
use crate::ordering::Ordering;
use crate::poll::PollSource;
use crate::providers::Provider;
use crate::retry::RetryPolicy;
use crate::targets::TargetSpec;

/// A check comes due between a minute and a week after the event that scheduled it.
pub const MIN_AFTER: Duration = Duration::from_secs(60);
pub const MAX_AFTER: Duration = Duration::from_secs(7 * 86_400);

/// A validated `[[sources.checks]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub on: Vec<String>,
    pub expect: Vec<String>,
    pub after: Duration,
    /// The poll source to run when due.
    pub poll: String,
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
    /// Verified requests are kept byte-exact in the archive.
    pub archive: bool,
}

impl Source {
    pub(crate) fn ip_allowed(&self, ip: Option<IpAddr>) -> bool {
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

    pub(crate) fn lease_ms(&self) -> i64 {
        self.settings.lease_seconds as i64 * 1000
    }

    /// The dedupe lease of `source`'s events: its own `lease_seconds`, else the settings'.
    pub(crate) fn lease_ms_for(&self, source: &str) -> i64 {
        self.source(source)
            .map(|s| s.lease_ms)
            .unwrap_or_else(|| self.lease_ms())
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
