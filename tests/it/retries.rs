//! Retries through the embedded pipeline: a failing record's visibility is stretched to its
//! backoff (time driven by the stack's ManualClock, no sleeps), and what can never succeed —
//! a 400 from a target, an undecodable body, a route's attempts used up — is moved to the
//! DLQ by the worker at once, with its reason where `inlet dlq list` shows it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use inlet::envelope::Envelope;
use inlet::local::LocalStack;
use inlet::ports::{Clock, DedupeStatus, Ledger, ManualClock, OutboundMessage, Queue, SystemClock};
use inlet::retry::FixedJitter;
use inlet::targets::{DispatchError, Outgoing, Target};
use inlet::worker::{Outcome, Worker};

use crate::pipeline::{jsonl_keys, sample_body, signed_headers};

const INLET: &str = env!("CARGO_BIN_EXE_inlet");

/// The dev config in `dir`, with `route` added under the catch-all route's targets (a
/// `retry` table, say) and `extra` TOML appended (more targets and routes).
fn write_config(dir: &Path, route: &str, extra: &str) -> PathBuf {
    let text = crate::pipeline::dev_config_text(dir).replacen(
        "targets = [\"file\"]",
        &format!("targets = [\"file\"]\n{route}"),
        1,
    );
    let path = dir.join("inlet.toml");
    std::fs::write(&path, format!("{text}\n{extra}\n")).expect("write config");
    path
}

struct Stack {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    clock: Arc<ManualClock>,
    stack: LocalStack,
}

impl Stack {
    fn open(route: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = write_config(dir.path(), route, extra);
        let cfg = inlet::config::load_file(&config_path, &|_: &str| None).expect("config");
        let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
        let stack =
            LocalStack::open(cfg, &dir.path().join("data"), clock.clone()).expect("stack opens");
        Self {
            dir,
            config_path,
            clock,
            stack,
        }
    }

    /// The stack's worker with `target` in place of the JSONL file, and the jitter fixed at
    /// the top of the window, so each backoff is exactly its ceiling.
    fn with_target(mut self, target: Arc<dyn Target>) -> Self {
        let mut targets: std::collections::BTreeMap<String, Arc<dyn Target>> = Default::default();
        targets.insert("file".into(), target);
        self.stack.worker = Worker::new(
            self.stack.config.clone(),
            Arc::new(self.stack.store.ledger()),
            targets,
            self.clock.clone(),
        )
        .with_queues(
            Arc::new(self.stack.queue.clone()),
            Arc::new(self.stack.dlq.clone()),
        )
        .with_jitter(Arc::new(FixedJitter(1.0)));
        self
    }

    /// A signed Stripe webhook through ingest; returns its dedupe key.
    async fn accept(&self, n: u64) -> String {
        let cfg = &self.stack.config;
        let body = sample_body("stripe", n);
        let resp = self
            .stack
            .ingest
            .handle(inlet::ingest::WebhookRequest {
                method: "POST".into(),
                path: "/webhooks/stripe".into(),
                headers: signed_headers(cfg, "stripe", &body, self.clock.now_ms(), "d"),
                body,
                ..Default::default()
            })
            .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        let v: serde_json::Value = serde_json::from_str(&resp.body).expect("json");
        v["dedupe_key"].as_str().expect("key").to_owned()
    }

    /// One receive-and-process round; the outcomes of what was received.
    async fn work(&self) -> Vec<Outcome> {
        self.stack
            .work_once(Duration::ZERO)
            .await
            .expect("work")
            .outcomes
            .into_iter()
            .map(|(_, o)| o)
            .collect()
    }

    /// `inlet dlq list --json` on this stack's store: one JSON row per dead letter.
    fn dlq_list(&self) -> Vec<serde_json::Value> {
        let out = std::process::Command::new(INLET)
            .args(["dlq", "list", "--json", "--config"])
            .arg(&self.config_path)
            .output()
            .expect("run inlet");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    /// The `delivered` field of the key's record in `inlet events --json`.
    fn events_delivered(&self, key: &str) -> serde_json::Value {
        let out = std::process::Command::new(INLET)
            .args(["events", "--json", "--config"])
            .arg(&self.config_path)
            .output()
            .expect("run inlet");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
            // A record's row has its attempts (a trail entry's are null).
            .find(|v| v["dedupe_key"] == key && v["attempts"].is_u64())
            .map(|v| v["delivered"].clone())
            .unwrap_or_else(|| panic!("no record of {key} in inlet events"))
    }

    async fn record(&self, key: &str) -> inlet::ports::DedupeRecord {
        self.stack
            .store
            .ledger()
            .get(key)
            .await
            .expect("get")
            .expect("record")
    }
}

/// Fails (retryably) its first `failures` deliveries, then takes every envelope.
struct Flaky {
    failures: u32,
    calls: AtomicU32,
    delivered: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Target for Flaky {
    fn id(&self) -> &str {
        "file"
    }
    async fn deliver(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        events
            .iter()
            .map(|o| o.envelope)
            .map(|e| {
                if call < self.failures {
                    Err(DispatchError::Retryable("test target down".into()))
                } else {
                    self.delivered
                        .lock()
                        .expect("lock")
                        .push(e.dedupe_key.clone());
                    Ok(())
                }
            })
            .collect()
    }
}

#[tokio::test]
async fn a_target_failing_three_times_is_delivered_once_on_the_fourth_receive_after_each_backoff() {
    // Backoff ceilings 200 s, 400 s, 800 s: longer than the queue's 180 s visibility, so a
    // message seen again before them would prove the stretch missing.
    let s = Stack::open("retry = { base = \"200s\", cap = \"1h\" }", "");
    let flaky = Arc::new(Flaky {
        failures: 3,
        calls: AtomicU32::new(0),
        delivered: Default::default(),
    });
    let s = s.with_target(flaky.clone());
    let key = s.accept(1).await;

    for (receive, backoff_s) in [(1, 200), (2, 400), (3, 800)] {
        let outcomes = s.work().await;
        assert!(
            matches!(outcomes.as_slice(), [Outcome::Failed { error, .. }] if error == "target file: test target down"),
            "receive {receive}: {outcomes:?}"
        );
        // Invisible for the whole backoff (past the queue's own 180 s)…
        s.clock.advance_ms((backoff_s - 1) * 1000);
        assert!(s.work().await.is_empty(), "hidden before {backoff_s} s");
        // …and back when it ends.
        s.clock.advance_ms(1000);
    }
    assert_eq!(
        s.work().await,
        vec![Outcome::Dispatched {
            dedupe_key: key.clone()
        }]
    );
    assert_eq!(*flaky.delivered.lock().expect("lock"), vec![key.clone()]);
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
    let rec = s.record(&key).await;
    assert_eq!(
        (rec.status, rec.attempts, rec.dead),
        (DedupeStatus::Completed, 4, false)
    );
    let counts = s.stack.queue.counts().expect("counts");
    assert_eq!(
        counts.visible + counts.in_flight,
        0,
        "deleted once delivered"
    );
    assert_eq!(s.stack.dlq.depth().await.expect("depth"), Some(0));
}

#[tokio::test]
async fn a_retry_after_from_the_target_sets_the_next_receive() {
    struct Throttled;
    #[async_trait]
    impl Target for Throttled {
        fn id(&self) -> &str {
            "file"
        }
        async fn deliver(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>> {
            events
                .iter()
                .map(|o| o.envelope)
                .map(|_| {
                    Err(DispatchError::RetryAfter {
                        message: "target answered HTTP 429".into(),
                        after: Duration::from_secs(42),
                    })
                })
                .collect()
        }
    }
    let s = Stack::open("", "").with_target(Arc::new(Throttled));
    s.accept(2).await;
    assert_eq!(s.work().await.len(), 1);
    s.clock.advance_ms(41_000);
    assert!(s.work().await.is_empty(), "hidden for the Retry-After");
    s.clock.advance_ms(1_000);
    assert_eq!(s.work().await.len(), 1, "back after exactly 42 s");
}

/// Refuses every envelope for good, like a receiver answering 400.
struct Refusing;

#[async_trait]
impl Target for Refusing {
    fn id(&self) -> &str {
        "file"
    }
    async fn deliver(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>> {
        events
            .iter()
            .map(|o| o.envelope)
            .map(|_| {
                Err(DispatchError::Permanent(
                    "target file answered HTTP 400".into(),
                ))
            })
            .collect()
    }
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_after_one_receive_with_its_reason() {
    let s = Stack::open("", "").with_target(Arc::new(Refusing));
    let key = s.accept(3).await;
    assert_eq!(
        s.work().await,
        vec![Outcome::DeadLettered {
            dedupe_key: Some(key.clone()),
            reason: "target file answered HTTP 400".into()
        }]
    );
    // Gone from the main queue (acknowledged), in the DLQ, dead in the ledger.
    let counts = s.stack.queue.counts().expect("counts");
    assert_eq!(counts.visible + counts.in_flight + counts.delayed, 0);
    assert_eq!(s.stack.dlq.depth().await.expect("depth"), Some(1));
    let rec = s.record(&key).await;
    assert_eq!(
        (rec.status, rec.attempts, rec.dead),
        (DedupeStatus::Failed, 1, true)
    );
    let rows = s.dlq_list();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["dedupe_key"], key.as_str(), "{}", rows[0]);
    assert_eq!(rows[0]["attempts"], 1, "{}", rows[0]);
    assert_eq!(
        rows[0]["reason"], "target file answered HTTP 400",
        "{}",
        rows[0]
    );
}

#[tokio::test]
async fn an_http_target_answering_400_sends_the_event_to_the_dlq_at_once() {
    use axum::routing::post;
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    // 400 the first time; fixed by the time the operator replays.
    let app = axum::Router::new().route(
        "/hook",
        post(move || {
            let counter = counter.clone();
            async move {
                match counter.fetch_add(1, Ordering::SeqCst) {
                    0 => (axum::http::StatusCode::BAD_REQUEST, "no such customer"),
                    _ => (axum::http::StatusCode::OK, "ok"),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let s = Stack::open(
        "",
        &format!(
            "[[targets]]\nid = \"hook\"\nkind = \"http\"\nurl = \"http://{addr}/hook\"\n\
             secret = \"literal:whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\ntimeout_seconds = 5\n\
             allow_private = [\"127.0.0.1/32\"]\n\
             [[routes]]\nsources = [\"stripe\"]\ntargets = [\"hook\"]\n"
        ),
    );
    let key = s.accept(4).await;
    let outcomes = s.work().await;
    assert!(
        matches!(outcomes.as_slice(), [Outcome::DeadLettered { reason, .. }] if reason.contains("HTTP 400")),
        "{outcomes:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one request, no retries");
    // Nothing comes back, however long we wait: the main queue no longer has it.
    s.clock.advance_ms(3_600_000);
    assert!(s.work().await.is_empty());
    let rows = s.dlq_list();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["dedupe_key"], key.as_str());
    assert!(
        rows[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("target hook answered HTTP 400")),
        "{}",
        rows[0]
    );
    // The file target took it (a route fans out); the ledger keeps it failed until replayed,
    // with the targets that have it, and `inlet dlq list` / `inlet events` show them.
    assert_eq!(
        rows[0]["delivered"],
        serde_json::json!(["file"]),
        "{}",
        rows[0]
    );
    assert_eq!(s.events_delivered(&key), serde_json::json!(["file"]));
    let jsonl = s.dir.path().join("events.jsonl");
    assert_eq!(jsonl_keys(&jsonl), vec![key.clone()]);

    // A replay (no --force) sends it only to the target that did not have it.
    let out = std::process::Command::new(INLET)
        .args(["replay", "--ids", &key, "--config"])
        .arg(&s.config_path)
        .output()
        .expect("run inlet");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        matches!(s.work().await.as_slice(), [Outcome::Dispatched { .. }]),
        "the replayed event is dispatched"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2, "the hook got it on replay");
    assert_eq!(
        jsonl_keys(&jsonl),
        vec![key.clone()],
        "the file target did not get it again"
    );
    let rec = s.record(&key).await;
    assert_eq!(
        (rec.status, rec.delivered.into_iter().collect::<Vec<_>>()),
        (
            DedupeStatus::Completed,
            vec!["file".to_owned(), "hook".to_owned()]
        )
    );
    assert_eq!(
        s.events_delivered(&key),
        serde_json::json!(["file", "hook"])
    );
}

#[tokio::test]
async fn an_undecodable_message_goes_to_the_dlq_at_once() {
    let s = Stack::open("", "");
    s.stack
        .queue
        .send(&OutboundMessage::new("{\"not\": \"an envelope\"}"))
        .await
        .expect("send");
    let outcomes = s.work().await;
    assert!(
        matches!(outcomes.as_slice(), [Outcome::DeadLettered { dedupe_key: None, reason }] if reason.starts_with("undecodable envelope")),
        "{outcomes:?}"
    );
    assert_eq!(s.stack.queue.depth().await.expect("depth"), Some(0));
    // The trail says so too (there is no dedupe record to carry it).
    let trail = s
        .stack
        .store
        .ledger()
        .list(&inlet::ports::TrailQuery {
            source: None,
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("trail");
    assert!(
        trail
            .iter()
            .any(|row| matches!(row, inlet::ports::TrailRow::Entry(e)
            if e.status == inlet::ports::TrailStatus::Dead
                && e.source == "unknown"
                && e.reason.as_deref().is_some_and(|r| r.starts_with("undecodable envelope")))),
        "{trail:?}"
    );
    let rows = s.dlq_list();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("not an envelope")),
        "{}",
        rows[0]
    );
}

#[tokio::test]
async fn a_route_out_of_attempts_moves_the_event_to_the_dlq_before_max_receive_count() {
    // max_receive_count is 5; this route gives up after 2.
    let s = Stack::open("retry = { attempts = 2, base = \"1s\", cap = \"1s\" }", "");
    let flaky = Arc::new(Flaky {
        failures: u32::MAX,
        calls: AtomicU32::new(0),
        delivered: Default::default(),
    });
    let s = s.with_target(flaky.clone());
    let key = s.accept(5).await;
    assert!(matches!(
        s.work().await.as_slice(),
        [Outcome::Failed { .. }]
    ));
    s.clock.advance_ms(1_000);
    let outcomes = s.work().await;
    assert_eq!(
        outcomes,
        vec![Outcome::DeadLettered {
            dedupe_key: Some(key.clone()),
            reason: "target file: test target down (gave up after 2 attempts)".into()
        }]
    );
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
    s.clock.advance_ms(3_600_000);
    assert!(s.work().await.is_empty(), "no third receive");
    let rec = s.record(&key).await;
    assert_eq!((rec.attempts, rec.dead), (2, true));
    let rows = s.dlq_list();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["attempts"], 2);
    assert_eq!(
        rows[0]["reason"],
        "target file: test target down (gave up after 2 attempts)"
    );
}

#[tokio::test]
async fn a_busy_key_is_retried_when_the_other_workers_lease_lapses() {
    let s = Stack::open("", "").with_target(Arc::new(Refusing));
    let key = s.accept(6).await;
    // Another worker took the key 20 s ago and is still at it (lease 60 s).
    let msgs = s
        .stack
        .queue
        .receive(1, Duration::ZERO, Duration::ZERO)
        .await
        .expect("receive");
    let env = Envelope::from_json(&msgs[0].body).expect("envelope");
    let begin = inlet::ports::BeginRequest {
        key: key.clone(),
        source: env.source.clone(),
        body_sha256: env.body_sha256.clone(),
        provider_event_id: env.provider_event_id.clone(),
        event_type: env.event_type.clone(),
        via: "webhook".into(),
        received_at_ms: env.received_at_ms(),
        now_ms: s.clock.now_ms(),
        lease_until_ms: s.clock.now_ms() + 60_000,
        summary: Default::default(),
    };
    s.stack.store.ledger().begin(&begin).await.expect("begin");
    s.clock.advance_ms(20_000);
    assert_eq!(
        s.work().await,
        vec![Outcome::Busy {
            dedupe_key: key.clone()
        }]
    );
    // Back once the lease has lapsed (40 s, and a second to be past it), not after a
    // backoff or the 180 s visibility.
    s.clock.advance_ms(40_000);
    assert!(s.work().await.is_empty());
    s.clock.advance_ms(1_000);
    assert!(matches!(
        s.work().await.as_slice(),
        [Outcome::DeadLettered { .. }]
    ));
}

/// An envelope of source `stripe` with key `stripe#<id>`, as ingest would queue it.
fn envelope(id: &str) -> String {
    let mut e: Envelope = serde_json::from_value(serde_json::json!({
        "v": 1, "source": "stripe", "provider": "stripe", "via": "webhook",
        "dedupe_key": format!("stripe#{id}"), "provider_event_id": id,
        "received_at": inlet::time::format_rfc3339_ms(1_767_225_600_000), "verified": {"scheme": "hmac"},
        "body": format!("{{\"id\":\"{id}\"}}"), "body_encoding": "utf8", "body_sha256": ""
    }))
    .expect("envelope");
    e.body_sha256 = inlet::envelope::sha256_hex(e.body.as_bytes());
    serde_json::to_string(&e).expect("json")
}

/// `stripe#down` fails retryably, `stripe#bad` for good.
struct ByKey;

#[async_trait]
impl Target for ByKey {
    fn id(&self) -> &str {
        "file"
    }
    async fn deliver(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>> {
        events
            .iter()
            .map(|o| o.envelope)
            .map(|e| match e.dedupe_key.as_str() {
                "stripe#bad" => Err(DispatchError::Permanent(
                    "target file answered HTTP 422".into(),
                )),
                _ => Err(DispatchError::Retryable("target file timed out".into())),
            })
            .collect()
    }
}

#[tokio::test]
async fn on_sqs_the_worker_stretches_visibility_and_sends_permanent_failures_to_the_dlq() {
    use crate::support::aws;

    let q = aws::queues_with_dlq(5).await;
    let ledger = Arc::new(aws::ledger().await);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = crate::pipeline::dev_config(dir.path(), |doc| {
        doc.routes[0].retry = Some(inlet::config::RetrySpec {
            base: Some("30s".into()),
            cap: Some("30s".into()),
            ..Default::default()
        });
    });
    let mut targets: std::collections::BTreeMap<String, Arc<dyn Target>> = Default::default();
    targets.insert("file".into(), Arc::new(ByKey));
    let worker = Worker::new(
        Arc::new(cfg),
        ledger.clone(),
        targets,
        Arc::new(SystemClock),
    )
    .with_queues(Arc::new(q.main.clone()), Arc::new(q.dlq.clone()))
    .with_jitter(Arc::new(FixedJitter(1.0)));
    let (down, bad) = (envelope("down"), envelope("bad"));
    for body in [&down, &bad] {
        q.main
            .send(&OutboundMessage::new(body.as_str()))
            .await
            .expect("send");
    }
    // Received for 1 s only: without the worker's stretch both would be back in a second.
    let mut msgs = Vec::new();
    while msgs.len() < 2 {
        msgs.extend(
            q.main
                .receive(10, Duration::from_secs(1), Duration::from_secs(1))
                .await
                .expect("receive"),
        );
    }
    let records: Vec<inlet::ports::WorkerRecord> = msgs
        .iter()
        .map(|m| inlet::ports::WorkerRecord {
            message_id: m.message_id.clone(),
            body: m.body.clone(),
            receive_count: m.receive_count,
            receipt_handle: Some(m.receipt_handle.clone()),
            group_id: m.group_id.clone(),
        })
        .collect();
    let result = worker.process(&records).await;
    let by_key = |key: &str| {
        let i = msgs
            .iter()
            .position(|m| m.body.contains(&format!("\"stripe#{key}\"")))
            .expect("message");
        result.outcomes[i].1.clone()
    };
    assert!(
        matches!(by_key("down"), Outcome::Failed { .. }),
        "{result:?}"
    );
    assert_eq!(
        by_key("bad"),
        Outcome::DeadLettered {
            dedupe_key: Some("stripe#bad".into()),
            reason: "target file answered HTTP 422".into()
        }
    );
    assert_eq!(
        result.failed_message_ids().len(),
        1,
        "only `down` is a batch item failure"
    );

    // The DLQ holds bad's body, byte for byte; the ledger says why.
    let dead = q
        .dlq
        .receive(10, Duration::from_secs(30), Duration::from_secs(2))
        .await
        .expect("receive dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, bad);
    let rec = ledger
        .get("stripe#bad")
        .await
        .expect("get")
        .expect("record");
    assert_eq!(
        (rec.dead, rec.last_error.as_deref()),
        (true, Some("target file answered HTTP 422"))
    );

    // Acknowledge bad as the event source mapping would; `down` stays hidden for its
    // 30 s backoff, well past its 1 s receive.
    let bad_handle = &msgs
        .iter()
        .find(|m| m.body == bad)
        .expect("bad")
        .receipt_handle;
    q.main.delete(bad_handle).await.expect("delete");
    let again = q
        .main
        .receive(10, Duration::from_secs(1), Duration::from_secs(3))
        .await
        .expect("receive");
    assert!(again.is_empty(), "still backing off: {again:?}");
    assert_eq!(
        q.main.depth().await.expect("depth"),
        Some(1),
        "…but still on the queue"
    );
}

/// A DLQ that refuses every send.
struct DownDlq;

#[async_trait]
impl Queue for DownDlq {
    async fn send(&self, _: &OutboundMessage) -> Result<String, inlet::ports::QueueError> {
        Err(inlet::ports::QueueError::Backend(
            "connection refused".into(),
        ))
    }
    async fn send_batch(
        &self,
        _: &[OutboundMessage],
    ) -> Result<Vec<Result<String, inlet::ports::QueueError>>, inlet::ports::QueueError> {
        Err(inlet::ports::QueueError::Backend(
            "connection refused".into(),
        ))
    }
    async fn receive(
        &self,
        _: u32,
        _: Duration,
        _: Duration,
    ) -> Result<Vec<inlet::ports::ReceivedMessage>, inlet::ports::QueueError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &str) -> Result<(), inlet::ports::QueueError> {
        Ok(())
    }
    async fn change_visibility(
        &self,
        _: &str,
        _: Duration,
    ) -> Result<(), inlet::ports::QueueError> {
        Ok(())
    }
}

#[tokio::test]
async fn when_the_dlq_send_fails_the_record_is_retried_instead_of_lost() {
    let mut s = Stack::open("", "");
    let mut targets: std::collections::BTreeMap<String, Arc<dyn Target>> = Default::default();
    targets.insert("file".into(), Arc::new(Refusing));
    s.stack.worker = Worker::new(
        s.stack.config.clone(),
        Arc::new(s.stack.store.ledger()),
        targets,
        s.clock.clone(),
    )
    .with_queues(Arc::new(s.stack.queue.clone()), Arc::new(DownDlq))
    .with_jitter(Arc::new(FixedJitter(1.0)));
    let key = s.accept(7).await;
    assert!(
        matches!(s.work().await.as_slice(), [Outcome::Failed { error, .. }] if error == "target file answered HTTP 400"),
        "a batch item failure, so the queue keeps it"
    );
    assert!(!s.record(&key).await.dead);
    // Still on the main queue, back after its 1 s backoff (default base), and the queue's
    // redrive remains the last resort.
    s.clock.advance_ms(1_000);
    assert_eq!(s.work().await.len(), 1);
    assert_eq!(s.stack.dlq.depth().await.expect("depth"), Some(0));
}
