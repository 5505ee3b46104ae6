//! Issue 4's acceptance for polling, through the real local pipeline: fake provider APIs on
//! loopback (axum), the real `Poller` over the embedded SQLite queue, poll store and ledger, and
//! the real worker dispatching to the embedded bus. Every test counts what reached the bus per
//! item id: each item the fakes ever held is dispatched exactly once.
//!
//! Randomness comes from a seed printed at the start of each test (`INLET_TEST_SEED=<n>`
//! repeats a run).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use inlet::adapters::embedded::EmbeddedStore;
use inlet::adapters::http_client::ReqwestHttp;
use inlet::config::{self, ConfigDoc};
use inlet::local::LocalStack;
use inlet::poller::{Poller, RunOutcome, RunReport};
use inlet::ports::{
    Acquire, Clock, ManualClock, OutboundMessage, PollState, PollStore, PollStoreError, Queue,
    QueueError, ReceivedMessage,
};
use inlet::worker::Outcome;
use tokio::sync::watch;

pub const BETS_KEY: &str = "bo-test-api-key";
pub const STRIPE_KEY: &str = "rk_test_inlet_acceptance";
pub const BUS_NAME: &str = "acceptance";
/// 2026-01-01T00:00:00Z in unix seconds: the fakes' "now".
pub const NOW_S: i64 = 1_767_225_600;

// ---------------------------------------------------------------------------------------------
// Seeded randomness (the workspace has no `rand`)
// ---------------------------------------------------------------------------------------------

/// SplitMix64: small, fast, and good enough to place bursts and inserts.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// `INLET_TEST_SEED`, or the clock; printed so a failing run can be repeated.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("INLET_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
    eprintln!("{test}: seed {seed} (INLET_TEST_SEED={seed} repeats this run)");
    seed
}

// ---------------------------------------------------------------------------------------------
// A generic JSON API read with `since`: GET /v1/bets?since=<unix s>&limit=N, items with
// `at > since` (exclusive, the harder case for equal timestamps), oldest first.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Bet {
    id: String,
    at: i64,
    body: String,
}

/// How the fake inserts new items while it is being paged.
#[derive(Debug, Clone, Copy)]
pub struct Inserts {
    /// Items it may insert in all.
    pub budget: usize,
    /// Chance (percent) that a request inserts 1–3 items before it is answered.
    pub percent: u64,
    /// A late item is at most this many seconds older than the newest (keep it well inside
    /// the poll's lookback).
    pub late_max: i64,
    /// At most this many inserts open a new newest second (the newest time grows by at most
    /// this much, so a late item stays inside the lookback of the newest time the poller sees).
    pub new_seconds: usize,
    /// Besides `budget`: this many late items put where the poller has just been (at or
    /// before its `since`), one per request made near the head. Only the next walk's lookback
    /// can bring them.
    pub behind: usize,
}

impl Inserts {
    pub fn none() -> Self {
        Inserts {
            budget: 0,
            percent: 0,
            late_max: 1,
            new_seconds: 0,
            behind: 0,
        }
    }
}

#[derive(Debug)]
pub struct BetsBook {
    /// Ordered by time, then by insertion: the order the API lists them.
    bets: Vec<Bet>,
    per_second: HashMap<i64, usize>,
    next: u64,
    rng: Rng,
    inserts: Inserts,
    /// A second may hold at most this many items (below the page size: the documented limit
    /// of the `since` mode).
    group_cap: usize,
    pub inserted: usize,
    /// Items inserted at or before the `since` of the request that inserted them.
    pub inserted_behind: usize,
    new_seconds_used: usize,
    pub requests: u32,
    /// Pages whose last item shares its second with the next item listed: an equal-timestamp
    /// group straddling a page boundary.
    pub straddles: u32,
    /// Every id ever put in a page.
    pub served: HashSet<String>,
}

impl BetsBook {
    /// `count` items from `NOW_S - 100_000` on, in one-second groups: mostly quiet seconds and
    /// a few bursts of up to `group_cap` items.
    pub fn generate(count: usize, group_cap: usize, seed: u64, inserts: Inserts) -> Self {
        let mut book = BetsBook {
            bets: Vec::with_capacity(count + inserts.budget),
            per_second: HashMap::new(),
            next: 0,
            rng: Rng::new(seed),
            inserts,
            group_cap,
            inserted: 0,
            inserted_behind: 0,
            new_seconds_used: 0,
            requests: 0,
            straddles: 0,
            served: HashSet::new(),
        };
        let mut at = NOW_S - 100_000;
        while book.bets.len() < count {
            let n = match book.rng.below(100) {
                0..=5 => {
                    group_cap / 4 + book.rng.below((group_cap - group_cap / 4) as u64) as usize
                }
                6..=55 => 1 + book.rng.below(3) as usize,
                _ => 0,
            };
            for _ in 0..n.min(count - book.bets.len()) {
                book.push(at);
            }
            at += 1;
        }
        book
    }

    fn push(&mut self, at: i64) {
        self.next += 1;
        let id = format!("bet-{:06}", self.next);
        let body = format!(
            r#"{{"id":"{id}","type":"bet.placed","at":{at},"player":"p{}","amount":{}}}"#,
            self.next % 97,
            100 + self.next % 1000
        );
        let pos = self.bets.partition_point(|b| b.at <= at);
        self.bets.insert(pos, Bet { id, at, body });
        *self.per_second.entry(at).or_default() += 1;
    }

    fn newest(&self) -> i64 {
        self.bets.last().map_or(NOW_S, |b| b.at)
    }

    /// Maybe insert a few items before answering a request for `since`: at the newest second,
    /// a little older (behind the poller when it is near the head), or in a new second.
    fn maybe_insert(&mut self, since: i64) {
        let newest = self.newest();
        if since > newest - self.inserts.late_max && self.inserted_behind < self.inserts.behind {
            let at = since - self.rng.below(self.inserts.late_max as u64) as i64;
            if self.per_second.get(&at).copied().unwrap_or(0) < self.group_cap {
                self.push(at);
                self.inserted += 1;
                self.inserted_behind += 1;
            }
        }
        if self.inserted >= self.inserts.budget + self.inserted_behind
            || !self.rng.chance(self.inserts.percent)
        {
            return;
        }
        for _ in 0..1 + self.rng.below(3) {
            if self.inserted >= self.inserts.budget + self.inserted_behind {
                return;
            }
            let newest = self.newest();
            let mut at = match self.rng.below(3) {
                0 => newest,
                1 => newest - 1 - self.rng.below(self.inserts.late_max as u64) as i64,
                _ => newest + 1,
            };
            if at > newest && self.new_seconds_used >= self.inserts.new_seconds {
                at = newest;
            }
            if self.per_second.get(&at).copied().unwrap_or(0) >= self.group_cap {
                continue;
            }
            if at > newest {
                self.new_seconds_used += 1;
            }
            self.push(at);
            self.inserted += 1;
        }
    }

    /// The page for `since` and `limit`, as the API's JSON.
    fn page(&mut self, since: i64, limit: usize) -> String {
        self.requests += 1;
        self.maybe_insert(since);
        let start = self.bets.partition_point(|b| b.at <= since);
        let end = (start + limit).min(self.bets.len());
        if let (Some(last), Some(next)) = (self.bets.get(end.wrapping_sub(1)), self.bets.get(end)) {
            if end > start && last.at == next.at {
                self.straddles += 1;
            }
        }
        let page = &self.bets[start..end];
        for b in page {
            self.served.insert(b.id.clone());
        }
        let data: Vec<&str> = page.iter().map(|b| b.body.as_str()).collect();
        format!(r#"{{"data":[{}],"limit":{limit}}}"#, data.join(","))
    }

    pub fn ids(&self) -> Vec<String> {
        self.bets.iter().map(|b| b.id.clone()).collect()
    }
}

/// A fake API's shared state: the book, and what the tests watch (requests in flight, pages
/// served) and steer (a gate that holds answers, a per-answer delay).
pub struct Fake<B> {
    pub book: Mutex<B>,
    pub in_flight: AtomicU32,
    pub max_in_flight: AtomicU32,
    /// Pages answered so far (awaitable).
    pub pages: watch::Sender<u32>,
    /// While `false`, answers wait; a second request in flight opens it (and is recorded).
    pub gate: watch::Sender<bool>,
    /// A slow-ish API: each answer takes this long.
    pub delay: Duration,
}

impl<B> Fake<B> {
    pub fn new(book: B, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            book: Mutex::new(book),
            in_flight: AtomicU32::new(0),
            max_in_flight: AtomicU32::new(0),
            pages: watch::channel(0).0,
            gate: watch::channel(true).0,
            delay,
        })
    }

    pub fn book(&self) -> std::sync::MutexGuard<'_, B> {
        self.book.lock().expect("fake book lock")
    }

    /// Count the request in flight, then wait for the gate and the delay.
    async fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if now > 1 {
            // Two polls at once: let both through so the test ends and says so.
            self.gate.send_replace(true);
        }
        let mut gate = self.gate.subscribe();
        let _ = gate.wait_for(|open| *open).await;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }

    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.pages.send_modify(|n| *n += 1);
    }
}

fn query_param(query: &Option<String>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn list_bets(
    State(fake): State<Arc<Fake<BetsBook>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> (StatusCode, String) {
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(BETS_KEY) {
        return (StatusCode::UNAUTHORIZED, r#"{"error":"bad key"}"#.into());
    }
    let since = query_param(&query, "since").and_then(|s| s.parse::<i64>().ok());
    let limit = query_param(&query, "limit").and_then(|s| s.parse::<usize>().ok());
    let (Some(since), Some(limit)) = (since, limit) else {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":"since and limit required"}"#.into(),
        );
    };
    fake.enter().await;
    let body = fake.book().page(since, limit);
    fake.leave();
    (StatusCode::OK, body)
}

/// Serve `fake` on loopback; returns its base URL.
pub async fn serve_bets(fake: Arc<Fake<BetsBook>>) -> String {
    let app = Router::new()
        .route("/v1/bets", get(list_bets))
        .with_state(fake);
    serve(app).await
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

// ---------------------------------------------------------------------------------------------
// Stripe's List Events: newest first; `ending_before` the adjacent newer page (still newest
// first), `starting_after` the adjacent older one, `created[gte]`, `limit`, `has_more`.
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Event {
    id: String,
    created: i64,
    body: String,
}

#[derive(Debug)]
pub struct EventLog {
    /// Oldest first, as created; listed newest first.
    events: Vec<Event>,
    next: u64,
    rng: Rng,
    inserts: Inserts,
    pub inserted: usize,
    pub requests: u32,
    pub served: HashSet<String>,
}

/// Stripe ids are random, not ordered.
fn scramble(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl EventLog {
    /// `count` events created over the last hour or so, many sharing a second.
    pub fn generate(count: usize, seed: u64, inserts: Inserts) -> Self {
        let mut log = EventLog {
            events: Vec::new(),
            next: 0,
            rng: Rng::new(seed),
            inserts,
            inserted: 0,
            requests: 0,
            served: HashSet::new(),
        };
        let mut created = NOW_S - 3_600;
        while log.events.len() < count {
            for _ in 0..log.rng.below(6) {
                if log.events.len() < count {
                    log.push(created);
                }
            }
            created += 1;
        }
        log
    }

    fn push(&mut self, created: i64) {
        self.next += 1;
        let n = self.next;
        let id = format!("evt_1{:016x}", scramble(n ^ self.rng.0));
        let body = format!(
            r#"{{"id":"{id}","object":"event","api_version":"2024-06-20","created":{created},"data":{{"object":{{"id":"ch_{n}","object":"charge","amount":{},"currency":"eur","customer":"cus_{}"}}}},"livemode":false,"pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"type":"charge.succeeded"}}"#,
            100 + n,
            n % 50
        );
        self.events.push(Event { id, created, body });
    }

    /// New events are created above every other: in the newest second or the next.
    fn maybe_insert(&mut self) {
        if self.inserted >= self.inserts.budget || !self.rng.chance(self.inserts.percent) {
            return;
        }
        for _ in 0..1 + self.rng.below(3) {
            if self.inserted >= self.inserts.budget {
                return;
            }
            let newest = self.events.last().map_or(NOW_S, |e| e.created);
            let created = newest + self.rng.below(2) as i64;
            self.push(created);
            self.inserted += 1;
        }
    }

    fn missing(id: &str, param: &str) -> (StatusCode, String) {
        (
            StatusCode::NOT_FOUND,
            format!(
                r#"{{"error":{{"code":"resource_missing","message":"No such event: '{id}'","param":"{param}","type":"invalid_request_error"}}}}"#
            ),
        )
    }

    fn list(&mut self, query: &Option<String>) -> (StatusCode, String) {
        self.requests += 1;
        self.maybe_insert();
        let bad = |msg: &str| {
            (
                StatusCode::BAD_REQUEST,
                format!(r#"{{"error":{{"message":"{msg}","type":"invalid_request_error"}}}}"#),
            )
        };
        let limit = query_param(query, "limit")
            .map_or(Ok(10), |l| l.parse::<usize>())
            .unwrap_or(0);
        if !(1..=100).contains(&limit) {
            return bad("limit must be between 1 and 100");
        }
        let gte = query_param(query, "created[gte]").and_then(|t| t.parse::<i64>().ok());
        let ending_before = query_param(query, "ending_before");
        let starting_after = query_param(query, "starting_after");
        let position = |id: &str| self.events.iter().position(|e| e.id == id);
        let wanted = |e: &&Event| gte.is_none_or(|g| e.created >= g);
        let candidates: Vec<&Event> = match (&ending_before, &starting_after) {
            (Some(_), Some(_)) => return bad("only one of ending_before, starting_after"),
            (Some(id), None) => match position(id) {
                None => return Self::missing(id, "ending_before"),
                Some(p) => self.events[p + 1..].iter().filter(wanted).collect(),
            },
            (None, Some(id)) => match position(id) {
                None => return Self::missing(id, "starting_after"),
                Some(p) => self.events[..p].iter().rev().filter(wanted).collect(),
            },
            (None, None) => self.events.iter().rev().filter(wanted).collect(),
        };
        let has_more = candidates.len() > limit;
        let mut page: Vec<&Event> = candidates.into_iter().take(limit).collect();
        if ending_before.is_some() {
            page.reverse(); // still newest first
        }
        let ids: Vec<String> = page.iter().map(|e| e.id.clone()).collect();
        let data: Vec<&str> = page.iter().map(|e| e.body.as_str()).collect();
        let body = format!(
            r#"{{"object":"list","data":[{}],"has_more":{has_more},"url":"/v1/events"}}"#,
            data.join(",")
        );
        self.served.extend(ids);
        (StatusCode::OK, body)
    }

    pub fn ids(&self) -> Vec<String> {
        self.events.iter().map(|e| e.id.clone()).collect()
    }
}

async fn list_events(
    State(fake): State<Arc<Fake<EventLog>>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> (StatusCode, String) {
    let bearer = format!("Bearer {STRIPE_KEY}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"message":"Invalid API Key provided","type":"invalid_request_error"}}"#
                .into(),
        );
    }
    fake.enter().await;
    let answer = fake.book().list(&query);
    fake.leave();
    answer
}

pub async fn serve_events(fake: Arc<Fake<EventLog>>) -> String {
    let app = Router::new()
        .route("/v1/events", get(list_events))
        .with_state(fake);
    serve(app).await
}

// ---------------------------------------------------------------------------------------------
// The local pipeline
// ---------------------------------------------------------------------------------------------

/// A `[sources.poll]` table for the bets API, read with `since` and a lookback.
pub fn bets_poll(base: &str, page: usize, lookback: i64, budget: u32) -> String {
    format!(
        r#"[sources.poll]
kind = "http_json"
every = "1m"
secrets = ["literal:{BETS_KEY}"]
max_requests_per_run = {budget}
max_requests_per_minute = 60000
options = {{ url = "{base}/v1/bets?since={{since}}&limit={page}", auth = {{ kind = "header", name = "x-api-key" }}, items_pointer = "/data", id_pointer = "/id", time_pointer = "/at", time_unit = "seconds", cursor = {{ kind = "since", lookback_seconds = {lookback} }} }}
"#
    )
}

/// A `[sources.poll]` table for the Stripe fake, backfilling from `lookback` seconds ago.
pub fn stripe_poll(base: &str, page: u32, lookback: i64, budget: u32) -> String {
    format!(
        r#"[sources.poll]
kind = "stripe_events"
every = "1m"
secrets = ["literal:{STRIPE_KEY}"]
max_requests_per_run = {budget}
max_requests_per_minute = 60000
options = {{ api_base = "{base}", page_size = {page}, start = {{ lookback_seconds = {lookback} }} }}
"#
    )
}

/// The config text: a generic `backoffice` source and a `stripe` source (each with the poll
/// table given, if any), every event routed to the embedded bus `acceptance`.
pub fn config_text(data_dir: &Path, backoffice_poll: &str, stripe_poll: &str) -> String {
    format!(
        r#"[settings]
environment = "local"
data_dir = {data_dir:?}

[[sources]]
id = "backoffice"
provider = "generic"
secrets = ["literal:inlet-acceptance-webhook-secret"]
options = {{ signature = {{ header = "x-signature" }}, event_id = {{ json_pointer = "/id" }}, event_type = {{ json_pointer = "/type" }}, occurred_at = {{ json_pointer = "/at" }}, entity = {{ json_pointer = "/player" }} }}
{backoffice_poll}
[[sources]]
id = "stripe"
provider = "stripe"
secrets = ["literal:whsec_inlet_acceptance_0123456789"]
{stripe_poll}
[[targets]]
id = "bus"
kind = "eventbridge"
bus_name = "{BUS_NAME}"

[[routes]]
sources = ["*"]
targets = ["bus"]
"#
    )
}

pub fn parse_config(text: &str, dir: &Path) -> config::Config {
    let doc = ConfigDoc::parse(text, Some("toml")).expect("config parses");
    config::validate(doc, dir.to_path_buf(), &|_: &str| None).expect("config is valid")
}

pub fn http_client() -> Arc<ReqwestHttp> {
    Arc::new(ReqwestHttp::new(inlet::poll::MAX_RESPONSE_BYTES).expect("http"))
}

pub struct Pipeline {
    pub stack: LocalStack,
    pub clock: Arc<ManualClock>,
    pub http: Arc<ReqwestHttp>,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    /// The local stack on a SQLite file in a fresh folder, on a manual clock.
    pub fn open(backoffice_poll: &str, stripe_poll: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let cfg = parse_config(
            &config_text(&data, backoffice_poll, stripe_poll),
            dir.path(),
        );
        let clock = Arc::new(ManualClock::new(NOW_S * 1000));
        let stack = LocalStack::open(cfg, &data, clock.clone()).expect("stack opens");
        Self::new(stack, clock, dir)
    }

    /// The same on an in-memory SQLite store (the crash loops build hundreds of these).
    pub fn in_memory(backoffice_poll: &str, stripe_poll: &str, http: &Arc<ReqwestHttp>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = parse_config(
            &config_text(&dir.path().join("data"), backoffice_poll, stripe_poll),
            dir.path(),
        );
        let clock = Arc::new(ManualClock::new(NOW_S * 1000));
        let store = EmbeddedStore::open_in_memory(clock.clone()).expect("store");
        let stack = LocalStack::with_store(cfg, store, clock.clone()).expect("stack");
        Self {
            stack,
            clock,
            http: http.clone(),
            _dir: dir,
        }
    }

    fn new(stack: LocalStack, clock: Arc<ManualClock>, dir: tempfile::TempDir) -> Self {
        Self {
            stack,
            clock,
            http: Arc::new(ReqwestHttp::new(inlet::poll::MAX_RESPONSE_BYTES).expect("http")),
            _dir: dir,
        }
    }

    pub fn deadline(&self) -> i64 {
        self.clock.now_ms() + 600_000
    }

    pub async fn run(&self, source: &str, holder: &str) -> RunReport {
        self.stack
            .poller(self.http.clone(), holder)
            .run(source, self.deadline())
            .await
            .expect("poll run")
    }

    /// Run the worker (`LocalStack::work_once`, batches of 10 as SQS gives them) until
    /// nothing is visible on the queue.
    pub async fn drain(&self) -> Vec<Outcome> {
        crate::pipeline::drain(&self.stack).await
    }

    /// How many times each provider event id reached the bus.
    pub fn bus_counts(&self) -> BTreeMap<String, usize> {
        bus_counts(&self.stack.store)
    }
}

pub fn bus_counts(store: &EmbeddedStore) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in store.bus(BUS_NAME).events().expect("bus events") {
        let envelope: serde_json::Value =
            serde_json::from_str(&event.detail).expect("detail is an envelope");
        let id = envelope["provider_event_id"]
            .as_str()
            .expect("provider_event_id")
            .to_owned();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

/// Every id in `want` reached the bus exactly once, and nothing else did.
pub fn assert_exactly_once(counts: &BTreeMap<String, usize>, want: &[String]) {
    let want_set: HashSet<&String> = want.iter().collect();
    assert_eq!(want_set.len(), want.len(), "the fake's ids are unique");
    let missing: Vec<&String> = want.iter().filter(|id| !counts.contains_key(*id)).collect();
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let stray: Vec<&String> = counts.keys().filter(|id| !want_set.contains(id)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && stray.is_empty(),
        "of {} items: {} missing (first: {:?}), {} dispatched more than once (first: {:?}), {} \
         not from the fake (first: {:?})",
        want.len(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>(),
        stray.len(),
        stray.iter().take(5).collect::<Vec<_>>(),
    );
}

/// The worker's outcomes: `(dispatched, duplicates)`; anything else fails the test.
pub fn tally(outcomes: &[Outcome]) -> (usize, usize) {
    let (mut dispatched, mut duplicates) = (0, 0);
    for o in outcomes {
        match o {
            Outcome::Dispatched { .. } => dispatched += 1,
            Outcome::Duplicate { .. } => duplicates += 1,
            other => panic!("unexpected worker outcome {other:?}"),
        }
    }
    (dispatched, duplicates)
}

// ---------------------------------------------------------------------------------------------
// 1. Many items, exactly once
// ---------------------------------------------------------------------------------------------

/// Runs (each within its request budget) until a run that started a fresh walk — the run
/// before it caught up — catches up without the fake inserting anything meanwhile.
async fn poll_until_quiet<B>(
    p: &Pipeline,
    source: &str,
    fake: &Fake<B>,
    inserted: impl Fn(&B) -> usize,
) -> Vec<RunReport> {
    let mut reports: Vec<RunReport> = Vec::new();
    for n in 0..500 {
        let before = inserted(&fake.book());
        let report = p.run(source, &format!("run-{n}")).await;
        let quiet = inserted(&fake.book()) == before;
        let after_caught_up = reports
            .last()
            .is_some_and(|r| r.outcome == RunOutcome::CaughtUp);
        assert!(
            matches!(
                report.outcome,
                RunOutcome::CaughtUp | RunOutcome::BudgetSpent
            ),
            "run {n}: {report:?}"
        );
        let done = report.outcome == RunOutcome::CaughtUp && quiet && after_caught_up;
        reports.push(report);
        if done {
            return reports;
        }
    }
    panic!("not caught up after 500 runs");
}

#[tokio::test]
async fn ten_thousand_items_with_equal_timestamps_and_inserts_during_paging_arrive_exactly_once() {
    let seed = seed("http_json since");
    let started = Instant::now();
    // A late item is at most 15 s older than the newest, and the newest grows by at most 30 s
    // through inserts: well inside a 120 s lookback.
    let inserts = Inserts {
        budget: 120,
        percent: 40,
        late_max: 15,
        new_seconds: 30,
        behind: 5,
    };
    // Page 100, bursts of up to 40 in one second: groups straddle page boundaries.
    let fake = Fake::new(
        BetsBook::generate(10_000, 40, seed, inserts),
        Duration::ZERO,
    );
    let base = serve_bets(fake.clone()).await;
    let p = Pipeline::open(&bets_poll(&base, 100, 120, 40), "");

    let reports = poll_until_quiet(&p, "backoffice", &fake, |b: &BetsBook| b.inserted).await;
    let polled = started.elapsed();
    let outcomes = p.drain().await;
    let drained = started.elapsed() - polled;

    let book = fake.book();
    let all = book.ids();
    let queued: usize = reports.iter().map(|r| r.enqueued.len()).sum();
    eprintln!(
        "{} items ({} inserted, {} behind the poller), {} runs, {} requests, {} straddling \
         pages, {queued} queued; polled in {polled:?}, drained in {drained:?}",
        all.len(),
        book.inserted,
        book.inserted_behind,
        reports.len(),
        book.requests,
        book.straddles
    );
    assert!(
        all.len() > 10_000 && book.inserted >= 50,
        "inserts happened"
    );
    assert_eq!(book.inserted_behind, 5, "items appeared behind the poller");
    assert!(
        book.straddles >= 20,
        "equal-timestamp groups straddle pages"
    );
    assert_eq!(book.served.len(), all.len(), "the fake served every item");
    assert_exactly_once(&p.bus_counts(), &all);
    let (dispatched, duplicates) = tally(&outcomes);
    assert_eq!(dispatched, all.len());
    assert_eq!(
        duplicates,
        queued - all.len(),
        "every re-read item is a duplicate"
    );
}

#[tokio::test]
async fn stripe_events_with_inserts_during_paging_arrive_exactly_once_oldest_first() {
    let seed = seed("stripe_events");
    let started = Instant::now();
    let inserts = Inserts {
        budget: 200,
        percent: 30,
        late_max: 1,
        new_seconds: 0,
        behind: 0,
    };
    let fake = Fake::new(EventLog::generate(2_000, seed, inserts), Duration::ZERO);
    let base = serve_events(fake.clone()).await;
    let p = Pipeline::open("", &stripe_poll(&base, 50, 7_200, 30));

    let mut reports: Vec<RunReport> = Vec::new();
    for n in 0.. {
        assert!(n < 500, "not caught up after 500 runs");
        let before = fake.book().inserted;
        let report = p.run("stripe", &format!("run-{n}")).await;
        let quiet = fake.book().inserted == before;
        assert!(
            matches!(
                report.outcome,
                RunOutcome::CaughtUp | RunOutcome::BudgetSpent
            ),
            "run {n}: {report:?}"
        );
        let done = report.outcome == RunOutcome::CaughtUp && quiet;
        reports.push(report);
        if done {
            break;
        }
    }
    let polled = started.elapsed();
    let outcomes = p.drain().await;

    let log = fake.book();
    let all = log.ids();
    let queued: usize = reports.iter().map(|r| r.enqueued.len()).sum();
    eprintln!(
        "{} events ({} inserted), {} runs, {} requests, {queued} queued; polled in {polled:?}, \
         total {:?}",
        all.len(),
        log.inserted,
        reports.len(),
        log.requests,
        started.elapsed()
    );
    assert!(log.inserted >= 20, "inserts happened");
    assert_eq!(log.served.len(), all.len());
    assert_exactly_once(&p.bus_counts(), &all);
    // Oldest first: the order the poll queued them is the order Stripe created them.
    let order: Vec<String> = reports
        .iter()
        .flat_map(|r| r.enqueued.iter())
        .map(|(key, _)| key.trim_start_matches("stripe#").to_owned())
        .collect();
    assert_eq!(order, all, "queued once each, in creation order");
    assert_eq!(tally(&outcomes), (all.len(), 0));
}

// ---------------------------------------------------------------------------------------------
// 2. Two pollers started together
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pollers_started_together_never_both_run() {
    let seed = seed("two pollers");
    let fake = Fake::new(
        BetsBook::generate(200, 20, seed, Inserts::none()),
        Duration::ZERO,
    );
    let base = serve_bets(fake.clone()).await;
    let p = Arc::new(Pipeline::open(&bets_poll(&base, 50, 60, 100), ""));
    for round in 0..20 {
        // New items each round, so every round has pages to fetch.
        {
            let mut book = fake.book();
            let newest = book.newest();
            for n in 0..5 {
                book.push(newest + 1 + n);
            }
        }
        // Answers are held until one run has finished: a run can finish only by not polling.
        // Two requests in flight open the gate (and fail the test below).
        fake.gate.send_replace(false);
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        for name in ["a", "b"] {
            let (p, start, tx) = (p.clone(), start.clone(), tx.clone());
            let holder = format!("{name}-{round}");
            tokio::spawn(async move {
                start.wait().await;
                let report = p.run("backoffice", &holder).await;
                let _ = tx.send((holder, report)).await;
            });
        }
        let (first_holder, first) = rx.recv().await.expect("a run ends");
        fake.gate.send_replace(true);
        let (second_holder, second) = rx.recv().await.expect("the other run ends");
        assert_eq!(
            fake.max_in_flight.load(Ordering::SeqCst),
            1,
            "round {round}: two polls were in flight at once"
        );
        assert!(
            matches!(&first.outcome, RunOutcome::Busy { holder, .. } if *holder == second_holder),
            "round {round}: the run that ended first was turned away by the other: {first:?}"
        );
        assert_eq!(
            first.requests, 0,
            "round {round}: the busy run made no request"
        );
        assert_eq!(
            second.outcome,
            RunOutcome::CaughtUp,
            "round {round} ({first_holder} vs {second_holder})"
        );
    }
    p.drain().await;
    assert_exactly_once(&p.bus_counts(), &fake.book().ids());
}

// ---------------------------------------------------------------------------------------------
// 3a. Crash injection: the run stops dead before or after any write
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Before,
    After,
}

/// Where a run dies: the `n`th write of the run (each queue send or send batch, and each lease
/// or cursor write), before it reaches the store or after it is stored and before the run
/// hears back. Dying is never returning: the run's future is dropped, nothing is released.
struct Crash {
    at: Option<(usize, When)>,
    ops: Mutex<Vec<&'static str>>,
    /// Messages durably queued since the last cursor write.
    unconfirmed: AtomicU32,
    fired: tokio::sync::Notify,
}

impl Crash {
    fn new(at: Option<(usize, When)>) -> Arc<Self> {
        Arc::new(Self {
            at,
            ops: Mutex::new(Vec::new()),
            unconfirmed: AtomicU32::new(0),
            fired: tokio::sync::Notify::new(),
        })
    }

    fn ops(&self) -> Vec<&'static str> {
        self.ops.lock().expect("ops lock").clone()
    }

    /// Counts the write; dies here if this is the point.
    async fn enter(&self, name: &'static str) -> usize {
        let n = {
            let mut ops = self.ops.lock().expect("ops lock");
            ops.push(name);
            ops.len() - 1
        };
        if self.at == Some((n, When::Before)) {
            self.die().await
        }
        n
    }

    async fn leave(&self, n: usize) {
        if self.at == Some((n, When::After)) {
            self.die().await
        }
    }

    async fn die<T>(&self) -> T {
        self.fired.notify_one();
        std::future::pending::<T>().await
    }
}

struct CrashingQueue {
    inner: inlet::adapters::embedded::SqliteQueue,
    crash: Arc<Crash>,
}

#[async_trait::async_trait]
impl Queue for CrashingQueue {
    async fn send(&self, message: &OutboundMessage) -> Result<String, QueueError> {
        let n = self.crash.enter("send").await;
        let sent = self.inner.send(message).await;
        if sent.is_ok() {
            self.crash.unconfirmed.fetch_add(1, Ordering::SeqCst);
        }
        self.crash.leave(n).await;
        sent
    }

    async fn send_batch(
        &self,
        messages: &[OutboundMessage],
    ) -> Result<Vec<Result<String, QueueError>>, QueueError> {
        let n = self.crash.enter("send_batch").await;
        let sent = self.inner.send_batch(messages).await;
        if let Ok(results) = &sent {
            let ok = results.iter().filter(|r| r.is_ok()).count() as u32;
            self.crash.unconfirmed.fetch_add(ok, Ordering::SeqCst);
        }
        self.crash.leave(n).await;
        sent
    }

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.inner.receive(max, visibility, wait).await
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.inner.delete(receipt_handle).await
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.inner
            .change_visibility(receipt_handle, visibility)
            .await
    }
}

struct CrashingStore {
    inner: inlet::adapters::embedded::SqliteLedger,
    crash: Arc<Crash>,
}

#[async_trait::async_trait]
impl PollStore for CrashingStore {
    async fn acquire(
        &self,
        source: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Acquire, PollStoreError> {
        let n = self.crash.enter("acquire").await;
        let r = self.inner.acquire(source, holder, now_ms, until_ms).await;
        self.crash.leave(n).await;
        r
    }

    async fn advance(
        &self,
        source: &str,
        holder: &str,
        expected_version: u64,
        cursor: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<u64, PollStoreError> {
        let n = self.crash.enter("advance").await;
        let r = self
            .inner
            .advance(source, holder, expected_version, cursor, now_ms, until_ms)
            .await;
        if r.is_ok() {
            self.crash.unconfirmed.store(0, Ordering::SeqCst);
        }
        self.crash.leave(n).await;
        r
    }

    async fn release(&self, source: &str, holder: &str) -> Result<(), PollStoreError> {
        let n = self.crash.enter("release").await;
        let r = self.inner.release(source, holder).await;
        self.crash.leave(n).await;
        r
    }

    async fn state(&self, source: &str) -> Result<Option<PollState>, PollStoreError> {
        self.inner.state(source).await
    }
    async fn reset(&self, source: &str, v: u64, now_ms: i64) -> Result<u64, PollStoreError> {
        self.inner.reset(source, v, now_ms).await
    }
}

/// A poller whose queue and poll store die at `crash`.
fn crashing_poller(p: &Pipeline, crash: &Arc<Crash>) -> Poller {
    Poller::new(
        p.stack.config.clone(),
        Arc::new(CrashingQueue {
            inner: p.stack.queue.clone(),
            crash: crash.clone(),
        }),
        Arc::new(CrashingStore {
            inner: p.stack.store.ledger(),
            crash: crash.clone(),
        }),
        Arc::new(p.stack.store.ledger()),
        p.http.clone(),
        p.clock.clone(),
        "victim",
    )
}

/// Crash a run at every write, before and after it, each time on a fresh store; a new poller
/// takes over once the dead run's lease lapses. Nothing is lost, nothing reaches the bus twice,
/// and the only extra copies are the messages queued after the last cursor write (the worker
/// counts them as duplicates).
async fn every_crash_point_loses_nothing(
    source: &str,
    open: impl Fn() -> Pipeline,
    all: &[String],
) -> usize {
    // Without a crash: the writes of a whole run, and the copies its page overlaps make.
    let p = open();
    let clean = Crash::new(None);
    let report = crashing_poller(&p, &clean)
        .run(source, p.deadline())
        .await
        .expect("run");
    assert_eq!(report.outcome, RunOutcome::CaughtUp, "{report:?}");
    let ops = clean.ops();
    let (dispatched, overlap) = tally(&p.drain().await);
    assert_eq!(dispatched, all.len());
    assert_exactly_once(&p.bus_counts(), all);
    // The run after a caught-up one: what it queues again by design (a `since` walk re-reads
    // its lookback; Stripe's `ending_before` nothing).
    let again = p.run(source, "again").await;
    assert_eq!(again.outcome, RunOutcome::CaughtUp);
    assert_eq!(tally(&p.drain().await), (0, again.enqueued.len()));
    let last_advance = ops
        .iter()
        .rposition(|op| *op == "advance")
        .expect("an advance");

    let mut points = 0;
    for n in 0..ops.len() {
        for when in [When::Before, When::After] {
            let at = format!("{when:?} write {n} ({}) of {ops:?}", ops[n]);
            let p = open();
            let crash = Crash::new(Some((n, when)));
            let deadline = p.deadline();
            let poller = crashing_poller(&p, &crash);
            tokio::select! {
                r = poller.run(source, deadline) => panic!("{at}: the run did not crash: {r:?}"),
                _ = crash.fired.notified() => {}
            }
            let resent = crash.unconfirmed.load(Ordering::SeqCst) as usize;
            // Died after the last cursor write: the next run is an ordinary next run.
            let caught_up = n > last_advance || (n == last_advance && when == When::After);
            let rereads = if caught_up { again.enqueued.len() } else { 0 };

            // The dead run's lease is honoured until it lapses, then a new poller goes on from
            // the stored cursor.
            let state = p.stack.store.ledger().state(source).await.expect("state");
            if state.is_some_and(|s| s.lease_holder.as_deref() == Some("victim")) {
                let turned_away = p.run(source, "too-early").await;
                assert!(
                    matches!(turned_away.outcome, RunOutcome::Busy { ref holder, .. } if holder == "victim"),
                    "{at}: {turned_away:?}"
                );
                p.clock.advance_ms(deadline - p.clock.now_ms() + 20_001);
            }
            let resumed = p.run(source, "survivor").await;
            assert_eq!(resumed.outcome, RunOutcome::CaughtUp, "{at}: {resumed:?}");

            let (dispatched, duplicates) = tally(&p.drain().await);
            assert_exactly_once(&p.bus_counts(), all);
            assert_eq!(dispatched, all.len(), "{at}");
            assert_eq!(
                duplicates,
                overlap + resent + rereads,
                "{at}: the extra copies are the {resent} messages queued after the last cursor \
                 write (and the {rereads} a next run reads again)"
            );
            points += 1;
        }
    }
    points
}

#[tokio::test]
async fn an_http_json_run_killed_before_or_after_any_write_loses_nothing_and_doubles_nothing() {
    let seed = seed("crash http_json");
    let started = Instant::now();
    let fake = Fake::new(
        BetsBook::generate(150, 15, seed, Inserts::none()),
        Duration::ZERO,
    );
    let all = fake.book().ids();
    let base = serve_bets(fake.clone()).await;
    let poll = bets_poll(&base, 25, 60, 100);
    let http = http_client();
    let points = every_crash_point_loses_nothing(
        "backoffice",
        || Pipeline::in_memory(&poll, "", &http),
        &all,
    )
    .await;
    eprintln!(
        "{points} crash points over {} items in {:?}",
        all.len(),
        started.elapsed()
    );
    assert!(points >= 30, "{points}");
}

#[tokio::test]
async fn a_stripe_events_run_killed_before_or_after_any_write_loses_nothing_and_doubles_nothing() {
    let seed = seed("crash stripe_events");
    let started = Instant::now();
    let fake = Fake::new(
        EventLog::generate(60, seed, Inserts::none()),
        Duration::ZERO,
    );
    let all = fake.book().ids();
    let base = serve_events(fake.clone()).await;
    let poll = stripe_poll(&base, 10, 7_200, 100);
    let http = http_client();
    let points =
        every_crash_point_loses_nothing("stripe", || Pipeline::in_memory("", &poll, &http), &all)
            .await;
    eprintln!(
        "{points} crash points over {} events in {:?}",
        all.len(),
        started.elapsed()
    );
    assert!(points >= 30, "{points}");
}

// ---------------------------------------------------------------------------------------------
// 3b. The real `inlet poll`, SIGKILLed at random points and restarted
// ---------------------------------------------------------------------------------------------

const INLET: &str = env!("CARGO_BIN_EXE_inlet");

fn inlet_poll(config: &Path, data: &Path) -> std::process::Child {
    std::process::Command::new(INLET)
        .args(["poll", "--source", "backoffice", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn inlet poll")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inlet_poll_killed_at_random_points_and_restarted_loses_nothing_and_doubles_nothing() {
    let seed = seed("inlet poll SIGKILL");
    let started = Instant::now();
    let mut rng = Rng::new(seed ^ 0x6b69_6c6c);
    // A slow-ish API (each answer takes 10 ms) with about 70 pages, inserting while paged.
    let inserts = Inserts {
        budget: 60,
        percent: 30,
        late_max: 10,
        new_seconds: 10,
        behind: 3,
    };
    let fake = Fake::new(
        BetsBook::generate(3_000, 20, seed, inserts),
        Duration::from_millis(10),
    );
    let base = serve_bets(fake.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("inlet.toml");
    std::fs::write(
        &config,
        config_text(&data, &bets_poll(&base, 50, 60, 1_000), ""),
    )
    .expect("write config");

    // Kill `inlet poll` after the fake answered a random number (1–8) of further pages:
    // mid-fetch, mid-enqueue, between enqueue and cursor write, wherever the signal lands.
    let kills = 5;
    for kill in 0..kills {
        let mut pages = fake.pages.subscribe();
        let target = *pages.borrow() + 1 + rng.below(8) as u32;
        let mut child = inlet_poll(&config, &data);
        let reached =
            tokio::time::timeout(Duration::from_secs(30), pages.wait_for(|n| *n >= target)).await;
        child.kill().expect("SIGKILL");
        let out = child.wait_with_output().expect("reap");
        let stderr = text(&out.stderr);
        assert!(
            reached.is_ok(),
            "kill {kill}: the fake never answered {target} pages: {}{stderr}",
            text(&out.stdout)
        );
        if kill > 0 {
            // The dead process's lease would hold for minutes: this one took it back.
            assert!(
                stderr.contains("reclaimed the poll lease of a dead inlet process"),
                "kill {kill}: {stderr}"
            );
        }
    }
    let killed_at = fake.book().requests;

    // Then to the end: runs until one that started after a caught-up run catches up without
    // the fake inserting anything meanwhile.
    let mut caught_up_before = false;
    let mut reclaims = 0;
    for n in 0.. {
        assert!(n < 50, "not caught up after 50 runs");
        let before = fake.book().inserted;
        let out = inlet_poll(&config, &data)
            .wait_with_output()
            .expect("inlet poll");
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "run {n}: {stderr}");
        reclaims += usize::from(stderr.contains("reclaimed the poll lease"));
        let summary: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("the run's summary");
        let caught_up = summary["outcome"] == "caught_up";
        if caught_up && caught_up_before && fake.book().inserted == before {
            break;
        }
        caught_up_before = caught_up;
    }
    assert_eq!(reclaims, 1, "the first run after the last kill reclaims");

    // The worker, on the same data folder.
    let cfg = parse_config(
        &std::fs::read_to_string(&config).expect("config"),
        dir.path(),
    );
    let stack =
        LocalStack::open(cfg, &data, Arc::new(inlet::ports::SystemClock)).expect("stack opens");
    let (dispatched, duplicates) = tally(&crate::pipeline::drain(&stack).await);
    let book = fake.book();
    let all = book.ids();
    eprintln!(
        "{} items ({} inserted), {kills} kills within the first {killed_at} requests, {} \
         requests in all, {duplicates} duplicates; {:?}",
        all.len(),
        book.inserted,
        book.requests,
        started.elapsed()
    );
    assert_eq!(book.served.len(), all.len());
    assert_exactly_once(&bus_counts(&stack.store), &all);
    assert_eq!(dispatched, all.len());
}
