//! The pipeline end to end in one process: a real HTTP server (the `inlet dev` router), the
//! embedded queue and ledger on a SQLite file, the worker, and the JSONL target.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use inlet::config::{self, ConfigDoc, TargetKind};
use inlet::envelope::Envelope;
use inlet::ingest::{Ingest, WebhookRequest};
use inlet::local::LocalStack;
use inlet::ports::{
    Clock, DedupeStatus, Ledger, ManualClock, OutboundMessage, Queue, QueueError, ReceivedMessage,
    SystemClock, TrailQuery, TrailRow, TrailStatus,
};
use inlet::providers::SignInput;
use inlet::request::Headers;
use inlet::targets::http::HttpTargetSpec;
use inlet::targets::{DispatchError, Outgoing, Target, TargetSpec};
use inlet::worker::{Outcome, Worker};
use tokio::sync::watch;

pub const DEV_CONFIG: &str = include_str!("../../infra/dev/inlet.toml");
pub const SOURCES: &[&str] = &["stripe", "github", "svix", "telegram", "custom"];

/// The committed dev config, with its store and JSONL file moved into `dir`.
pub fn dev_config(dir: &Path, edit: impl FnOnce(&mut ConfigDoc)) -> config::Config {
    let mut doc = ConfigDoc::parse(DEV_CONFIG, Some("toml")).expect("dev config parses");
    doc.settings.data_dir = dir.join("data");
    for t in &mut doc.targets {
        if let TargetKind::Jsonl { path } = &mut t.kind {
            *path = dir.join("events.jsonl");
        }
    }
    edit(&mut doc);
    config::validate(doc, dir.to_path_buf(), &|_: &str| None).expect("dev config is valid")
}

/// The committed dev config as text, its store and JSONL file moved into `dir`: what tests
/// that start the real `inlet dev` edit further and write out.
pub fn dev_config_text(dir: &Path) -> String {
    DEV_CONFIG
        .replace(
            "data_dir = \"../../.inlet\"",
            &format!("data_dir = {:?}", dir.join("data")),
        )
        .replace(
            "path = \"../../.inlet/events.jsonl\"",
            &format!("path = {:?}", dir.join("events.jsonl")),
        )
}

/// A sample body per source with a fresh event id, so tests never collide.
pub fn sample_body(source: &str, n: u64) -> Vec<u8> {
    let body = match source {
        "stripe" => {
            serde_json::json!({"id": format!("evt_test_{n}"), "object": "event", "type": "payment_intent.succeeded", "created": 1_767_225_600, "data": {"object": {"amount": 2000, "currency": "usd"}}})
        }
        "telegram" => {
            serde_json::json!({"update_id": n, "message": {"message_id": 1, "date": 1_767_225_600, "chat": {"id": 1, "type": "private"}, "text": "hi"}})
        }
        "svix" => serde_json::json!({"type": "invoice.paid", "data": {"n": n}}),
        "github" => serde_json::json!({"action": "opened", "number": n}),
        _ => serde_json::json!({"id": format!("cus_evt_{n}"), "type": "bet.placed", "amount": 150}),
    };
    body.to_string().into_bytes()
}

pub fn signed_headers(
    cfg: &config::Config,
    source: &str,
    body: &[u8],
    now_ms: i64,
    delivery: &str,
) -> Headers {
    cfg.source(source)
        .expect("source configured")
        .provider
        .sign(&SignInput {
            body,
            now_ms,
            delivery_id: delivery,
        })
        .expect("sign")
}

pub struct Running {
    pub stack: Arc<LocalStack>,
    pub addr: SocketAddr,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Running {
    pub async fn start(edit: impl FnOnce(&mut ConfigDoc)) -> Self {
        Self::start_at("127.0.0.1:0", edit).await
    }

    /// The same stack, its server listening on `listen` (`[::]:0` for a dual-stack socket).
    pub async fn start_at(listen: &str, edit: impl FnOnce(&mut ConfigDoc)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dev_config(dir.path(), edit);
        let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
        let data = cfg.resolve_path(&cfg.settings.data_dir);
        let stack = Arc::new(LocalStack::open(cfg, &data, clock.clone()).expect("stack opens"));
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, rx) = watch::channel(false);
        tokio::spawn(inlet_cli::server::serve(stack.clone(), listener, rx));
        Self {
            stack,
            addr,
            clock,
            dir,
            stop,
        }
    }

    pub fn jsonl(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    pub async fn post(
        &self,
        source: &str,
        headers: &Headers,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new()
            .post(format!("http://{}/webhooks/{source}", self.addr))
            .body(body.to_vec());
        // A provider that signs a form (Twilio, Slack commands) brings its own content type.
        if headers.get("content-type").is_none() {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers.iter() {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn post_signed(&self, source: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let h = signed_headers(
            &self.stack.config,
            source,
            body,
            self.clock.now_ms(),
            &uuid::Uuid::new_v4().to_string(),
        );
        self.post(source, &h, body).await
    }

    pub async fn drain(&self) -> Vec<Outcome> {
        drain(&self.stack).await
    }

    /// The stack's data folder.
    pub fn data_dir(&self) -> PathBuf {
        let cfg = dev_config(self.dir.path(), |_| {});
        cfg.resolve_path(&cfg.settings.data_dir)
    }

    /// A new stack on the same files, as after a restart of the process.
    pub fn reopen(&self) -> LocalStack {
        let cfg = dev_config(self.dir.path(), |_| {});
        LocalStack::open(cfg, &self.data_dir(), self.clock.clone()).expect("reopen")
    }

    /// Post a signed Stripe sample event for each of `ids`, each answered 200: their dedupe
    /// keys, in order.
    pub async fn post_stripe_events(&self, ids: std::ops::Range<u64>) -> Vec<String> {
        let mut keys = Vec::new();
        for n in ids {
            let (status, answer) = self.post_signed("stripe", &sample_body("stripe", n)).await;
            assert_eq!(status, 200, "{answer}");
            keys.push(answer["dedupe_key"].as_str().expect("key").to_string());
        }
        keys
    }

    /// The reasons of the refusals the trail recorded, oldest first.
    pub async fn refusal_reasons(&self) -> Vec<String> {
        self.trail()
            .await
            .into_iter()
            .filter_map(|r| match r {
                TrailRow::Entry(e) if e.status == TrailStatus::Refused => e.reason,
                _ => None,
            })
            .collect()
    }

    pub async fn trail(&self) -> Vec<TrailRow> {
        self.stack
            .store
            .ledger()
            .list(&TrailQuery {
                source: None,
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("list")
    }
}

/// Run the worker until the queue has nothing visible; returns all outcomes.
pub async fn drain(stack: &LocalStack) -> Vec<Outcome> {
    let mut all = Vec::new();
    loop {
        let r = stack.work_once(Duration::ZERO).await.expect("work");
        if r.outcomes.is_empty() {
            return all;
        }
        all.extend(r.outcomes.into_iter().map(|(_, o)| o));
    }
}

pub fn jsonl_keys(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            v["dedupe_key"].as_str().expect("dedupe_key").to_string()
        })
        .collect()
}

#[tokio::test]
async fn signed_webhook_from_each_source_is_dispatched_once_and_its_redelivery_is_a_duplicate() {
    let run = Running::start(|_| {}).await;
    for (n, source) in SOURCES.iter().enumerate() {
        let body = sample_body(source, 1000 + n as u64);
        let h = signed_headers(
            &run.stack.config,
            source,
            &body,
            run.clock.now_ms(),
            &format!("delivery-{n}"),
        );
        let (status, answer) = run.post(source, &h, &body).await;
        assert_eq!(status, 200, "{source}: {answer}");
        let key = answer["dedupe_key"]
            .as_str()
            .expect("dedupe_key")
            .to_string();
        assert!(key.starts_with(&format!("{source}#")), "{key}");

        let outcomes = run.drain().await;
        assert_eq!(
            outcomes,
            vec![Outcome::Dispatched {
                dedupe_key: key.clone()
            }],
            "{source}"
        );

        // The provider retries the very same delivery.
        let (status, _) = run.post(source, &h, &body).await;
        assert_eq!(status, 200);
        assert_eq!(
            run.drain().await,
            vec![Outcome::Duplicate {
                dedupe_key: key.clone()
            }],
            "{source}"
        );

        let keys = jsonl_keys(&run.jsonl());
        assert_eq!(
            keys.iter().filter(|k| **k == key).count(),
            1,
            "{source} written once"
        );
        let line = std::fs::read_to_string(run.jsonl()).expect("jsonl");
        let env: Envelope =
            serde_json::from_str(line.lines().last().expect("a line")).expect("envelope");
        assert_eq!(
            env.body_bytes().expect("body"),
            body,
            "{source}: body kept byte-exact"
        );
    }
    let trail = run.trail().await;
    let dispatched = trail
        .iter()
        .filter(|r| matches!(r, TrailRow::Record(rec) if rec.status == DedupeStatus::Completed))
        .count();
    let duplicates = trail
        .iter()
        .filter(|r| matches!(r, TrailRow::Entry(e) if e.status == TrailStatus::Duplicate))
        .count();
    assert_eq!((dispatched, duplicates), (SOURCES.len(), SOURCES.len()));
}

#[tokio::test]
async fn tampered_body_is_refused_401_and_nothing_is_queued() {
    let run = Running::start(|_| {}).await;
    for source in SOURCES {
        let body = sample_body(source, 7);
        let h = signed_headers(&run.stack.config, source, &body, run.clock.now_ms(), "d-1");
        // Change one letter inside a string value, so the body is still valid JSON.
        let mut tampered = body.clone();
        let pos = if *source == "telegram" {
            let text = String::from_utf8(body.clone()).expect("utf8");
            text.find("\"hi\"").expect("telegram sample text") + 2
        } else {
            tampered
                .iter()
                .rposition(|b| b.is_ascii_alphabetic())
                .expect("a letter")
        };
        tampered[pos] = if tampered[pos] == b'x' { b'y' } else { b'x' };
        let (status, answer) = run.post(source, &h, &tampered).await;
        if *source == "telegram" {
            // Telegram's secret token does not cover the body: the change is accepted as-is.
            assert_eq!(status, 200, "{answer}");
            continue;
        }
        assert_eq!(status, 401, "{source}: {answer}");
        // The caller learns only that verification failed; the trail has the reason.
        assert_eq!(answer["error"], "unverified");
    }
    // Only the telegram request was queued.
    assert_eq!(run.drain().await.len(), 1);
    let refused = run
        .trail()
        .await
        .into_iter()
        .filter(|r| matches!(r, TrailRow::Entry(e) if e.status == TrailStatus::Refused && e.reason.as_deref() == Some("signature_mismatch")))
        .count();
    assert_eq!(refused, SOURCES.len() - 1);
}

#[tokio::test]
async fn refusals_answer_the_documented_status_codes() {
    let run = Running::start(|doc| {
        doc.settings.max_body_bytes = 1024;
        // Only 10.0.0.0/8 may call the github source; the test client is 127.0.0.1.
        doc.sources
            .iter_mut()
            .find(|s| s.id == "github")
            .expect("github")
            .allow_cidrs = vec!["10.0.0.0/8".into()];
        // A poll-only copy of the stripe source: no webhook secret, no webhooks.
        let mut polled = doc
            .sources
            .iter()
            .find(|s| s.id == "stripe")
            .expect("stripe")
            .clone();
        polled.id = "stripe-polled".into();
        polled.secrets.clear();
        polled.webhooks = false;
        polled.poll = Some(inlet::config::PollSpec {
            kind: "stripe_events".into(),
            every: "10m".into(),
            secrets: vec![inlet::config::SecretSpec::Ref("literal:rk_test_x".into())],
            max_requests_per_run: 1,
            max_requests_per_minute: 1,
            reconcile: false,
            options: None,
        });
        doc.sources.push(polled);
        doc.sources
            .iter_mut()
            .find(|s| s.id == "svix")
            .expect("svix")
            .rate_limit = Some(inlet::config::RateLimitSpec {
            per_second: 1,
            burst: Some(2),
        });
    })
    .await;
    let body = sample_body("stripe", 1);
    let good = signed_headers(&run.stack.config, "stripe", &body, run.clock.now_ms(), "d");
    // Even correctly signed for the webhook source, a poll-only source takes no webhooks.
    let (status, answer) = run.post("stripe-polled", &good, &body).await;
    assert_eq!((status, answer["error"].as_str()), (404, Some("poll_only")));

    assert_eq!(run.post("nope", &good, &body).await.0, 404);
    let client = reqwest::Client::new();
    let get = client
        .get(format!("http://{}/webhooks/stripe", run.addr))
        .send()
        .await
        .expect("get");
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(
        get.headers().get("allow").map(|v| v.to_str().unwrap_or("")),
        Some("POST")
    );
    assert_eq!(
        run.post("stripe", &Headers::new(), &body).await.0,
        401,
        "missing signature"
    );
    let gh = sample_body("github", 1);
    assert_eq!(run.post_signed("github", &gh).await.0, 403);
    let big = vec![b'x'; 4096];
    assert_eq!(run.post_signed("stripe", &big).await.0, 413);
    let not_json = b"this is not an event".to_vec();
    assert_eq!(
        run.post_signed("stripe", &not_json).await.0,
        400,
        "signed but malformed"
    );
    // A stale Stripe signature (10 minutes old) is refused.
    let stale = signed_headers(
        &run.stack.config,
        "stripe",
        &body,
        run.clock.now_ms() - 600_000,
        "d",
    );
    let (status, answer) = run.post("stripe", &stale, &body).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("unverified"))
    );

    // svix takes a burst of 2, then 1/s (the harness clock stands still): the third is 429.
    for n in 0..2 {
        assert_eq!(
            run.post_signed("svix", &sample_body("svix", 40 + n))
                .await
                .0,
            200
        );
    }
    let body3 = sample_body("svix", 42);
    let h3 = signed_headers(&run.stack.config, "svix", &body3, run.clock.now_ms(), "d");
    let mut req = client
        .post(format!("http://{}/webhooks/svix", run.addr))
        .body(body3);
    for (k, v) in h3.iter() {
        req = req.header(k, v);
    }
    let limited = req.send().await.expect("post");
    assert_eq!(limited.status().as_u16(), 429);
    assert_eq!(
        limited
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or("")),
        Some("1")
    );
    assert_eq!(run.drain().await.len(), 2, "the two within the limit");

    assert!(run.drain().await.is_empty(), "nothing refused was queued");
    let reasons = run.refusal_reasons().await;
    for reason in [
        "poll_only",
        "rate_limited",
        "method_not_allowed",
        "missing_signature",
        "ip_not_allowed",
        "body_too_large",
        "malformed",
        "timestamp_too_old",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} recorded in {reasons:?}"
        );
    }
}

/// A queue that is down: ingest must not acknowledge.
struct DownQueue;

#[async_trait]
impl Queue for DownQueue {
    async fn send(&self, _: &OutboundMessage) -> Result<String, QueueError> {
        Err(QueueError::Backend("connection refused".into()))
    }
    async fn send_batch(
        &self,
        _: &[OutboundMessage],
    ) -> Result<Vec<Result<String, QueueError>>, QueueError> {
        Err(QueueError::Backend("connection refused".into()))
    }
    async fn receive(
        &self,
        _: u32,
        _: Duration,
        _: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
    async fn change_visibility(&self, _: &str, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_enqueue_answers_503_so_the_provider_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Arc::new(dev_config(dir.path(), |_| {}));
    let clock = Arc::new(SystemClock);
    let store =
        inlet::adapters::embedded::EmbeddedStore::open_in_memory(clock.clone()).expect("store");
    let ingest = Ingest::new(
        cfg.clone(),
        Arc::new(DownQueue),
        Arc::new(store.ledger()),
        clock.clone(),
    );
    let body = sample_body("stripe", 3);
    let resp = ingest
        .handle(WebhookRequest {
            method: "POST".into(),
            path: "/webhooks/stripe".into(),
            headers: signed_headers(&cfg, "stripe", &body, clock.now_ms(), "d"),
            body,
            ..Default::default()
        })
        .await;
    assert_eq!(resp.status, 503, "{}", resp.body);
}

/// A target that writes to the real JSONL target and then hangs: the worker "dies" (its
/// task is aborted) after the event reached the file but before the ledger completed it.
struct WriteThenHang(Arc<dyn Target>);

#[async_trait]
impl Target for WriteThenHang {
    fn id(&self) -> &str {
        "file"
    }
    async fn deliver(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>> {
        let _ = self.0.deliver(events).await;
        std::future::pending().await
    }
}

#[tokio::test]
async fn worker_killed_mid_dispatch_is_finished_exactly_once_after_the_lease_expires() {
    // Stripe's events are held longer than the settings' 60 s lease.
    let run = Running::start(|doc| {
        doc.sources
            .iter_mut()
            .find(|s| s.id == "stripe")
            .expect("stripe")
            .lease_seconds = Some(170);
    })
    .await;
    let body = sample_body("stripe", 42);
    let (status, answer) = run.post_signed("stripe", &body).await;
    assert_eq!(status, 200, "{answer}");
    let key = answer["dedupe_key"].as_str().expect("key").to_string();

    // Worker A takes the message and the dedupe key, writes the event, then dies.
    let file_target =
        inlet::targets::jsonl::JsonlTarget::open("file".into(), &run.jsonl()).expect("jsonl");
    let mut targets: std::collections::BTreeMap<String, Arc<dyn Target>> = Default::default();
    targets.insert(
        "file".into(),
        Arc::new(WriteThenHang(Arc::new(file_target))),
    );
    let worker_a = Worker::new(
        run.stack.config.clone(),
        Arc::new(run.stack.store.ledger()),
        targets,
        run.clock.clone(),
    );
    let msgs = run
        .stack
        .queue
        .receive(10, Duration::from_secs(180), Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(msgs.len(), 1);
    let record = inlet::ports::WorkerRecord {
        message_id: msgs[0].message_id.clone(),
        body: msgs[0].body.clone(),
        receive_count: msgs[0].receive_count,
        receipt_handle: Some(msgs[0].receipt_handle.clone()),
        group_id: msgs[0].group_id.clone(),
    };
    let (ledger, key2) = (run.stack.store.ledger(), key.clone());
    let in_flight = tokio::spawn(async move { worker_a.process(&[record]).await });
    // Wait for worker A to hold the key (a condition, not a sleep).
    wait_until(|| {
        let ledger = ledger.clone();
        let key = key2.clone();
        async move {
            matches!(ledger.get(&key).await, Ok(Some(r)) if r.status == DedupeStatus::InProgress)
        }
    })
    .await;
    wait_until(|| {
        let p = run.jsonl();
        async move { jsonl_keys(&p).len() == 1 }
    })
    .await;
    in_flight.abort();
    let held = run
        .stack
        .store
        .ledger()
        .get(&key)
        .await
        .expect("get")
        .expect("record");
    assert_eq!(
        held.lease_until_ms,
        run.clock.now_ms() + 170_000,
        "the source's own lease"
    );

    // The process restarts (the JSONL target re-reads what it wrote before dying).
    let restarted = run.reopen();

    // While the message is invisible and the lease live, nothing is dispatched again.
    run.clock.advance_ms(30_000);
    assert!(drain(&restarted).await.is_empty());

    // After the visibility timeout (≥ lease) the message returns and is finished once.
    run.clock.advance_ms(180_000);
    assert_eq!(
        drain(&restarted).await,
        vec![Outcome::Dispatched {
            dedupe_key: key.clone()
        }]
    );
    assert_eq!(
        jsonl_keys(&run.jsonl()),
        vec![key.clone()],
        "in the file exactly once"
    );
    let rec = restarted
        .store
        .ledger()
        .get(&key)
        .await
        .expect("get")
        .expect("record");
    assert_eq!((rec.status, rec.attempts), (DedupeStatus::Completed, 2));
}

#[tokio::test]
async fn acknowledged_events_survive_a_restart_of_the_local_stack() {
    let run = Running::start(|_| {}).await;
    let keys = run.post_stripe_events(500..505).await;
    // "Crash": reopen the same files in a new stack without ever running the worker.
    let reopened = run.reopen();
    let r = reopened.work_once(Duration::ZERO).await.expect("work");
    let dispatched: Vec<String> = r
        .outcomes
        .into_iter()
        .filter_map(|(_, o)| match o {
            Outcome::Dispatched { dedupe_key } => Some(dedupe_key),
            _ => None,
        })
        .collect();
    assert_eq!(dispatched, keys);
    assert_eq!(jsonl_keys(&run.jsonl()), keys);
}

#[tokio::test]
async fn events_a_store_queued_before_the_queues_had_their_own_file_are_delivered_once() {
    let run = Running::start(|_| {}).await;
    let keys = run.post_stripe_events(600..603).await;
    // The layout of a store from before: the queued events in the one file with the ledger.
    let data = run.data_dir();
    let (db, queues) = (
        data.join(inlet::local::DB_FILE),
        data.join(inlet::local::QUEUES_FILE),
    );
    assert_eq!(
        inlet::adapters::embedded::move_messages(&queues, &db).expect("back"),
        3
    );

    let reopened = run.reopen();
    assert_eq!(
        inlet::adapters::embedded::move_messages(&db, &queues).expect("nothing left"),
        0,
        "opening moved them"
    );
    assert_eq!(
        reopened.queue.counts().expect("counts").visible,
        3,
        "in the queues' file"
    );
    let r = reopened.work_once(Duration::ZERO).await.expect("work");
    assert_eq!(r.outcomes.len(), 3);
    assert_eq!(jsonl_keys(&run.jsonl()), keys, "each once");
}

pub async fn wait_until<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 20 s"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_local_worker_takes_batches_of_its_configured_size_without_waiting_to_fill_one() {
    let run = Running::start(|doc| doc.settings.worker_batch_size = 25).await;
    let mut keys = run.post_stripe_events(900..937).await;
    let first = run.stack.work_once(Duration::ZERO).await.expect("work");
    assert_eq!(
        first.outcomes.len(),
        25,
        "one batch, more receives than one"
    );
    // 12 left: the first receive's 10 come at once, and the rest of the batch takes only what
    // is visible; with a long wait on every receive this batch would sit out the minute.
    let second = tokio::time::timeout(
        Duration::from_secs(20),
        run.stack.work_once(Duration::from_secs(60)),
    )
    .await
    .expect("a part batch is not held back")
    .expect("work");
    assert_eq!(second.outcomes.len(), 12);
    let all = first.outcomes.iter().chain(&second.outcomes);
    assert!(all
        .clone()
        .all(|(_, o)| matches!(o, Outcome::Dispatched { .. })));
    let mut written = jsonl_keys(&run.jsonl());
    written.sort();
    keys.sort();
    assert_eq!(written, keys, "each event once");
}

/// The first batch of six queued Stripe events, with an HTTP target of 30 s timeout and two
/// requests at once, `lease` for Stripe's own (the settings keep 60 s) and `batches` at once.
async fn first_batch_beside_a_slow_http_target(stripe_lease: Option<u64>, batches: usize) -> usize {
    let run = Running::start(|doc| {
        doc.settings.worker_batch_size = 25;
        doc.settings.worker_concurrency = batches;
        doc.targets.push(TargetSpec {
            id: "slow".into(),
            kind: TargetKind::Http(HttpTargetSpec {
                url: "https://hooks.example.com/in".into(),
                secret: "literal:whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                timeout_seconds: 30.0,
                max_concurrency: 2,
                allow_private: Vec::new(),
                headers: Default::default(),
                signing_key: None,
            }),
        });
        let stripe = doc.sources.iter_mut().find(|s| s.id == "stripe");
        stripe.expect("stripe").lease_seconds = stripe_lease;
    })
    .await;
    assert_eq!(run.stack.config.settings.lease_seconds, 60);
    run.post_stripe_events(960..966).await;
    let first = run.stack.work_once(Duration::ZERO).await.expect("work");
    assert_eq!(first.outcomes.len() + run.drain().await.len(), 6);
    first.outcomes.len()
}

#[tokio::test]
async fn a_batch_is_no_larger_than_an_http_target_can_answer_within_the_lease() {
    // 60 s of lease, 30 s of timeout and two requests at once: four events at worst, shared
    // by the one loop and `inlet dev`'s overflow loop: two each.
    assert_eq!(first_batch_beside_a_slow_http_target(None, 1).await, 2);
    // A source's own shorter lease binds: 30 s, one round of two, one each.
    assert_eq!(first_batch_beside_a_slow_http_target(Some(30), 1).await, 1);
    // Two loops and the overflow loop share the four: one each (never none).
    assert_eq!(first_batch_beside_a_slow_http_target(None, 2).await, 1);
    assert_eq!(first_batch_beside_a_slow_http_target(None, 4).await, 1);
}

#[tokio::test]
async fn past_max_backlog_a_webhook_waits_for_the_worker_then_is_answered_503_and_nothing_is_lost()
{
    let run = Running::start(|doc| {
        doc.settings.max_backlog = 3;
        doc.settings.ingest_deadline = "2s".into();
    })
    .await;
    let keys = run.post_stripe_events(980..984).await;
    // No worker runs: the backlog is 4, over the bound, once sampled.
    wait_until(|| async { run.stack.backlog() == 4 }).await;
    let (status, answer) = run.post_signed("stripe", &sample_body("stripe", 990)).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "backlog");
    assert_eq!(
        run.stack.queue.counts().expect("counts").visible,
        4,
        "not queued"
    );

    // A webhook that arrives while the worker catches up waits for it instead.
    let late = sample_body("stripe", 991);
    let ((status, answer), drained) = tokio::join!(run.post_signed("stripe", &late), run.drain());
    assert_eq!(status, 200, "{answer}");
    // The late event is queued once the worker has brought the backlog under the bound: the
    // same drain may reach it, or the next one does.
    assert_eq!(drained.len() + run.drain().await.len(), 5);
    let written = jsonl_keys(&run.jsonl());
    assert_eq!(written.len(), 5, "every acknowledged event once");
    assert!(keys.iter().all(|k| written.contains(k)));
}

#[tokio::test]
async fn past_two_rounds_of_batches_the_overflow_loop_helps_the_worker_and_at_the_mark_it_waits() {
    let run = Running::start(|doc| {
        doc.settings.worker_batch_size = 1;
        doc.settings.worker_concurrency = 1;
    })
    .await;
    assert_eq!(
        run.stack.overflow_backlog(),
        2,
        "two rounds of one batch of one"
    );
    let (stop, rx) = watch::channel(false);
    let overflow = tokio::spawn(inlet_cli::server::overflow_loop(run.stack.clone(), rx));

    // No worker loop runs here. At the mark the overflow loop leaves the events to them: it
    // sees two samples of 2 after the one that first said 2, and dispatches nothing.
    let mut keys = run.post_stripe_events(1000..1002).await;
    let mut samples = run.stack.backlog_changes();
    samples.wait_for(|&b| b == 2).await.expect("sampled");
    for _ in 0..2 {
        samples.changed().await.expect("sampled again");
    }
    assert!(
        jsonl_keys(&run.jsonl()).is_empty(),
        "nothing dispatched at the mark"
    );

    // Past it, the overflow loop dispatches until the backlog is back at the mark or under.
    keys.extend(run.post_stripe_events(1002..1010).await);
    wait_until(|| async { run.stack.backlog() <= 2 && jsonl_keys(&run.jsonl()).len() >= 8 }).await;
    stop.send(true).expect("stop");
    overflow.await.expect("the overflow loop ends on shutdown");
    let mut written = jsonl_keys(&run.jsonl());
    written.sort();
    written.dedup();
    assert_eq!(
        written.len(),
        jsonl_keys(&run.jsonl()).len(),
        "each event once"
    );
    assert!(written.iter().all(|k| keys.contains(k)));
}
