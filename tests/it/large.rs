//! Large events by claim check (issue 19): a 5 MB signed Stripe event, a 3 MB GitHub
//! delivery and a Meta batch whose split events each pass EventBridge's entry limit, through
//! the embedded stack (the real `inlet dev` server, files for blobs) and the AWS adapters
//! (an API Gateway event, SQS, DynamoDB, S3 and EventBridge on moto). Each event reaches an
//! HTTP target whole, an SQS target whole when it fits a message and by reference when not,
//! the bus by reference, and a JSONL file whole; every copy is checked byte for byte against
//! what the provider sent, references read back through the blob store. Then the claim
//! check's crash windows: a blob written and no message (the request is not acknowledged, the
//! retry is taken once), and a message dispatched but not deleted (the redelivery is a
//! duplicate, nothing sent twice).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use inlet::adapters::aws::SqsQueue;
use inlet::config::{Config, ConfigDoc, TargetKind, TargetSpec};
use inlet::envelope::{sha256_hex, Envelope};
use inlet::ingest::Ingest;
use inlet::ports::{
    get_blob, BlobError, BlobRef, BlobStore, Clock, Queue, SystemClock, WorkerRecord,
};
use inlet::request::{Headers, InboundRequest};
use inlet::targets::http::HttpTargetSpec;
use inlet::targets::sqs::SqsTargetSpec;
use inlet::worker::{Outcome, Worker};

use crate::lambda::{http_event, webhook_request, APIGW_V2};
use crate::pipeline::{signed_headers, Running};
use crate::support::aws;
use crate::support::receiver::{start_receiver, Receiver, SECRET};

const MIB: usize = 1024 * 1024;

/// A Stripe invoice event of about `size` bytes: its lines carry the weight, as a large
/// invoice's do.
pub(crate) fn stripe_body(id: &str, size: usize) -> Vec<u8> {
    let line = |n: usize| {
        serde_json::json!({"id": format!("il_{n:07}"), "object": "line_item", "amount": 100,
            "description": "x".repeat(200)})
    };
    let per_line = line(0).to_string().len() + 1;
    let lines: Vec<_> = (0..size / per_line).map(line).collect();
    serde_json::json!({"id": id, "object": "event", "type": "invoice.finalized",
        "created": 1_767_225_600,
        "data": {"object": {"id": format!("in_{id}"), "object": "invoice", "customer": "cus_big",
            "lines": {"object": "list", "data": lines}}}})
    .to_string()
    .into_bytes()
}

/// A GitHub push of about `size` bytes: many commits.
fn github_body(size: usize) -> Vec<u8> {
    let commit = |n: usize| {
        serde_json::json!({"id": format!("{n:040x}"), "message": "m".repeat(300),
            "added": [format!("src/{n}.rs")], "removed": [], "modified": []})
    };
    let per = commit(0).to_string().len() + 1;
    let commits: Vec<_> = (0..size / per).map(commit).collect();
    serde_json::json!({"ref": "refs/heads/main", "before": "0".repeat(40), "after": "1".repeat(40),
        "repository": {"id": 1, "full_name": "acme/big"}, "commits": commits})
    .to_string()
    .into_bytes()
}

/// A WhatsApp notification with `n` messages, each larger than a bus entry.
pub(crate) fn meta_body(n: usize) -> Vec<u8> {
    let messages: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({"from": format!("31600000{i:03}"), "id": format!("wamid.BIG{i}"),
                "timestamp": "1767225600", "type": "text",
                "text": {"body": format!("{i}").repeat(300 * 1024)}})
        })
        .collect();
    serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA1",
        "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"phone_number_id": "P1"}, "messages": messages}}]}]})
    .to_string()
    .into_bytes()
}

/// One signed request, and the bytes each of its events must be delivered with, by key.
struct Sent {
    source: &'static str,
    body: Vec<u8>,
    headers: Headers,
    events: BTreeMap<String, Vec<u8>>,
}

/// The three requests of the acceptance, signed now, and the events the providers split
/// them into (the providers' own `extract`, so a Meta part is what Meta's parser cut).
fn requests(cfg: &Config, now_ms: i64) -> Vec<Sent> {
    let mut out = Vec::new();
    for (source, body) in [
        ("stripe", stripe_body("evt_big_stripe", 5 * MIB)),
        ("github", github_body(3 * MIB)),
        ("meta", meta_body(3)),
    ] {
        let delivery = uuid::Uuid::new_v4().to_string();
        let headers = signed_headers(cfg, source, &body, now_ms, &delivery);
        let provider = &cfg.source(source).expect("source").provider;
        let req = InboundRequest {
            method: "POST",
            headers: &headers,
            query: &[],
            body: &body,
        };
        let events = provider
            .extract(&req)
            .expect("extracts")
            .into_iter()
            .map(|e| {
                let bytes = e.part.unwrap_or_else(|| body.clone());
                let key =
                    inlet::envelope::dedupe_key(source, e.event_id.as_deref(), &sha256_hex(&bytes));
                (key, bytes)
            })
            .collect();
        out.push(Sent {
            source,
            body,
            headers,
            events,
        });
    }
    assert_eq!(out[2].events.len(), 3, "the Meta batch splits in three");
    for sent in &out[2].events {
        assert!(
            sent.1.len() > 256 * 1024,
            "each Meta event passes a bus entry"
        );
    }
    out
}

/// The targets of the acceptance, one of each kind, routed from every source.
fn with_targets(doc: &mut ConfigDoc, hook: std::net::SocketAddr, queue_url: &str) {
    doc.settings.max_body_bytes = inlet::config::MAX_BODY_BYTES;
    doc.settings.archive = true;
    doc.targets.push(TargetSpec {
        id: "hook".into(),
        kind: TargetKind::Http(HttpTargetSpec {
            url: format!("http://{hook}/hook"),
            secret: format!("literal:{SECRET}"),
            timeout_seconds: 30.0,
            max_concurrency: 4,
            allow_private: vec!["127.0.0.1/32".into()],
            headers: BTreeMap::new(),
            signing_key: None,
        }),
    });
    doc.targets.push(TargetSpec {
        id: "fwd".into(),
        kind: TargetKind::Sqs(SqsTargetSpec {
            queue_url: queue_url.into(),
        }),
    });
    doc.targets.push(TargetSpec {
        id: "bus".into(),
        kind: TargetKind::Eventbridge { bus_name: None },
    });
    doc.routes[0]
        .targets
        .extend(["hook".into(), "fwd".into(), "bus".into()]);
}

/// The body an envelope as delivered stands for: in place, or read back through its
/// reference (and checked against it).
async fn body_of(json: &str, blobs: &dyn BlobStore) -> (String, Vec<u8>, bool) {
    let env = Envelope::from_json(json).expect("a delivered envelope decodes");
    if env.is_claimed() {
        let r: &BlobRef = env.body_ref.as_ref().expect("reference");
        let bytes = get_blob(blobs, r).await.expect("the reference reads back");
        return (env.dedupe_key, bytes, true);
    }
    let bytes = env.body_bytes().expect("body");
    assert_eq!(sha256_hex(&bytes), env.body_sha256);
    (env.dedupe_key, bytes, false)
}

/// Every event's record names its request in the archive, which reads back as sent.
async fn assert_archived(sent: &[Sent], ledger: &dyn inlet::ports::Ledger, blobs: &dyn BlobStore) {
    for s in sent {
        let mut keys = Vec::new();
        for key in s.events.keys() {
            let record = ledger.get(key).await.expect("get").expect("record");
            keys.push(record.summary.request_key.expect("archived"));
        }
        keys.dedup();
        assert_eq!(keys.len(), 1, "{}: one archived request", s.source);
        let (_, doc) = inlet::archive::read_key(blobs, &keys[0])
            .await
            .expect("the archive reads back");
        assert!(
            doc.body_bytes().expect("body") == s.body,
            "{}: archived byte-exact",
            s.source
        );
        assert_eq!(doc.events, s.events.len());
    }
}

/// Each target's copies, by key: the bytes and whether they came by reference.
type Copies = BTreeMap<String, (Vec<u8>, bool)>;

async fn copies(jsons: impl IntoIterator<Item = String>, blobs: &dyn BlobStore) -> Copies {
    let mut out = Copies::new();
    for json in jsons {
        let (key, bytes, by_ref) = body_of(&json, blobs).await;
        assert!(
            out.insert(key.clone(), (bytes, by_ref)).is_none(),
            "{key} delivered twice to one target"
        );
    }
    out
}

/// Every event at every target once, byte-exact; by reference exactly where the target's
/// limit needs it (SQS: 1 MiB a message; the bus: 256 KiB an entry; HTTP and files never).
fn assert_delivered(sent: &[Sent], target: &str, got: &Copies, limit: Option<usize>) {
    let want: BTreeMap<&String, &Vec<u8>> = sent.iter().flat_map(|s| &s.events).collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().copied().collect::<Vec<_>>(),
        "{target}: the events delivered"
    );
    for (key, bytes) in want {
        let (body, by_ref) = &got[key];
        assert!(body == bytes, "{target}: {key} is not byte-exact");
        let must_ref = limit.is_some_and(|l| bytes.len() > l);
        assert_eq!(*by_ref, must_ref, "{target}: {key} by reference");
    }
}

fn http_copies(rx: &Receiver) -> Vec<String> {
    rx.seen()
        .into_iter()
        .filter(|s| s.accepted())
        .map(|s| {
            assert!(s.verified, "the HTTP target's signature verifies");
            String::from_utf8(s.body).expect("utf8")
        })
        .collect()
}

async fn queue_copies(queue: &dyn Queue, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..30 {
        let batch = queue
            .receive(10, Duration::from_secs(300), Duration::from_millis(200))
            .await
            .expect("receive");
        out.extend(batch.into_iter().map(|m| m.body));
        if out.len() >= n {
            break;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_reach_every_target_kind_byte_exact_on_the_embedded_store() {
    let (hook, rx) = start_receiver().await;
    let run = Running::start(|doc| with_targets(doc, hook, "forwarded")).await;
    let blobs = run
        .stack
        .blobs
        .clone()
        .expect("the embedded stack has a blob store");
    let sent = requests(&run.stack.config, run.clock.now_ms());
    for s in &sent {
        let (status, answer) = run.post(s.source, &s.headers, &s.body).await;
        assert_eq!(status, 200, "{}: {answer}", s.source);
    }
    let outcomes = run.drain().await;
    assert_eq!(outcomes.len(), 5, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Dispatched { .. })),
        "{outcomes:?}"
    );
    let blobs = &*blobs;
    assert_delivered(&sent, "http", &copies(http_copies(&rx), blobs).await, None);
    let fwd = run.stack.queues.queue("forwarded", None);
    let sqs = copies(queue_copies(&fwd, 5).await, blobs).await;
    assert_delivered(&sent, "sqs", &sqs, Some(900 * 1024));
    let bus = run.stack.store.bus("default").events().expect("bus events");
    assert!(bus.iter().all(|e| e.detail.len() < 256 * 1024));
    let bus = copies(bus.into_iter().map(|e| e.detail), blobs).await;
    assert_delivered(&sent, "eventbridge", &bus, Some(0));
    let lines = std::fs::read_to_string(run.jsonl()).expect("jsonl");
    let file = copies(lines.lines().map(str::to_owned), blobs).await;
    assert_delivered(&sent, "jsonl", &file, None);
    assert_archived(&sent, &run.stack.store.ledger(), blobs).await;
    // The bodies are under the data folder, by digest.
    let stored = std::fs::read_dir(run.dir.path().join("data/blobs/bodies"))
        .expect("blobs folder")
        .count();
    assert_eq!(stored, 5);
}

/// What the AWS side runs: ingest, the worker and the adapters, on moto.
struct AwsSide {
    cfg: Arc<Config>,
    ingest: Ingest,
    worker: Worker,
    queue: SqsQueue,
    blobs: Arc<dyn BlobStore>,
    forwarded: SqsQueue,
    observed: SqsQueue,
    ledger: Arc<inlet::adapters::aws::DynamoLedger>,
}

async fn aws_side(hook: std::net::SocketAddr) -> AwsSide {
    let dir = tempfile::tempdir().expect("tempdir");
    let forwarded = aws::queues_with_dlq(5).await.main;
    let cfg = Arc::new(crate::pipeline::dev_config(dir.path(), |doc| {
        with_targets(doc, hook, forwarded.queue_url())
    }));
    let queues = aws::queues_with_dlq(5).await;
    let ledger = Arc::new(aws::ledger().await);
    let bus = aws::bus().await;
    let observed = crate::lambda::observe_bus(bus.bus_name()).await;
    let blobs: Arc<dyn BlobStore> = Arc::new(aws::blobs().await);
    let conf = aws::sdk_config().await;
    let bus: Arc<dyn inlet::ports::EventBus> = Arc::new(bus);
    let bus_for = |_: Option<&str>| Ok(bus.clone());
    let queue_for = |url: &str| -> Result<Arc<dyn Queue>, inlet::targets::TargetFactoryError> {
        Ok(Arc::new(SqsQueue::from_conf(&conf, url)))
    };
    let targets = inlet::targets::build_targets(&cfg.targets, &cfg.base_dir, &bus_for, &queue_for)
        .expect("targets");
    let clock = Arc::new(SystemClock);
    let ingest = Ingest::new(
        cfg.clone(),
        Arc::new(queues.main.clone()),
        ledger.clone(),
        clock.clone(),
    )
    .with_blobs(blobs.clone());
    let worker = Worker::new(cfg.clone(), ledger.clone(), targets, clock)
        .with_queues(Arc::new(queues.main.clone()), Arc::new(queues.dlq.clone()))
        .with_blobs(blobs.clone());
    AwsSide {
        cfg,
        ingest,
        worker,
        queue: queues.main,
        blobs,
        forwarded,
        observed,
        ledger,
    }
}

impl AwsSide {
    /// A request as API Gateway hands it to the ingest Lambda.
    async fn send(&self, s: &Sent) -> u16 {
        let path = format!("/webhooks/{}", s.source);
        let event = http_event(APIGW_V2, &path, &s.headers, &s.body, false);
        self.ingest.handle(webhook_request(&event)).await.status
    }

    /// The event source mapping's receive: `n` messages (the worker's batch).
    async fn receive(&self, n: usize) -> Vec<inlet::ports::ReceivedMessage> {
        let mut out = Vec::new();
        for _ in 0..30 {
            out.extend(
                self.queue
                    .receive(10, Duration::from_secs(600), Duration::from_millis(500))
                    .await
                    .expect("receive"),
            );
            if out.len() >= n {
                break;
            }
        }
        assert_eq!(out.len(), n);
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_reach_every_target_kind_byte_exact_through_the_aws_adapters() {
    let (hook, rx) = start_receiver().await;
    let side = aws_side(hook).await;
    let sent = requests(&side.cfg, SystemClock.now_ms());
    for s in &sent {
        let event = http_event(
            APIGW_V2,
            &format!("/webhooks/{}", s.source),
            &s.headers,
            &s.body,
            false,
        );
        // What reaches the Lambda must fit its 6 MB invocation payload.
        let payload = event.len();
        assert!(payload < inlet::config::MAX_BODY_BYTES, "{payload}");
        assert_eq!(side.send(s).await, 200, "{}", s.source);
    }
    let messages = side.receive(5).await;
    for m in &messages {
        assert!(m.body.len() < 256 * 1024, "a queued envelope stays small");
    }
    let records: Vec<WorkerRecord> = messages.iter().map(WorkerRecord::from).collect();
    let result = side.worker.process(&records).await;
    assert!(
        result
            .outcomes
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Dispatched { .. })),
        "{result:?}"
    );
    let blobs = &*side.blobs;
    assert_delivered(&sent, "http", &copies(http_copies(&rx), blobs).await, None);
    let sqs = copies(queue_copies(&side.forwarded, 5).await, blobs).await;
    assert_delivered(&sent, "sqs", &sqs, Some(900 * 1024));
    // What EventBridge delivered: each event's envelope as `detail`.
    let bus: Vec<String> = queue_copies(&side.observed, 5)
        .await
        .into_iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m).expect("event");
            v["detail"].to_string()
        })
        .collect();
    assert_delivered(&sent, "eventbridge", &copies(bus, blobs).await, Some(0));
    assert_archived(&sent, &*side.ledger, blobs).await;
}

/// A blob store that writes, then fails the call: the process died after the blob and
/// before the message.
struct DiesAfterPut {
    inner: Arc<dyn BlobStore>,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl BlobStore for DiesAfterPut {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
        self.inner.put(key, bytes).await?;
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(BlobError::Backend(
                "killed after the blob was written".into(),
            ));
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, BlobError> {
        self.inner.get(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_blob_and_message_or_dispatch_and_delete_loses_and_doubles_nothing_on_aws()
{
    let (hook, rx) = start_receiver().await;
    let side = aws_side(hook).await;
    let dying = Arc::new(DiesAfterPut {
        inner: side.blobs.clone(),
        armed: true.into(),
    });
    let ledger = Arc::new(aws::ledger().await);
    let ingest = Ingest::new(
        side.cfg.clone(),
        Arc::new(side.queue.clone()),
        ledger,
        Arc::new(SystemClock),
    )
    .with_blobs(dying.clone());
    let sent = requests(&side.cfg, SystemClock.now_ms());
    let stripe = &sent[0];
    let event = http_event(
        APIGW_V2,
        "/webhooks/stripe",
        &stripe.headers,
        &stripe.body,
        false,
    );

    // After the blob, before the message: no 2xx, so Stripe sends it again.
    let first = ingest.handle(webhook_request(&event)).await;
    assert_eq!(first.status, 503, "{}", first.body);
    let none = side
        .queue
        .receive(10, Duration::from_secs(1), Duration::from_millis(500))
        .await
        .expect("receive");
    assert!(none.is_empty(), "nothing queued for an unanswered request");
    assert_eq!(ingest.handle(webhook_request(&event)).await.status, 200);

    // After the dispatch, before the delete: the worker died with the message undeleted;
    // SQS hands it over again and the ledger makes it a duplicate.
    let messages = side.receive(1).await;
    let records: Vec<WorkerRecord> = messages.iter().map(WorkerRecord::from).collect();
    let done = side.worker.process(&records).await;
    assert!(
        matches!(done.outcomes.as_slice(), [(_, Outcome::Dispatched { .. })]),
        "{done:?}"
    );
    let again = side.worker.process(&records).await;
    assert!(
        matches!(again.outcomes.as_slice(), [(_, Outcome::Duplicate { .. })]),
        "{again:?}"
    );
    let http = copies(http_copies(&rx), &*side.blobs).await;
    assert_eq!(http.len(), 1, "the HTTP target took the event once");
    let (key, bytes) = stripe.events.iter().next().expect("one event");
    assert!(http[key].0 == *bytes, "byte-exact");
    assert_eq!(queue_copies(&side.forwarded, 1).await.len(), 1, "SQS once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_blob_and_message_or_dispatch_and_delete_loses_and_doubles_nothing_locally()
{
    let (hook, rx) = start_receiver().await;
    let run = Running::start(|doc| with_targets(doc, hook, "forwarded")).await;
    let stack = &run.stack;
    let files = stack.blobs.clone().expect("blob store");
    let dying = Arc::new(DiesAfterPut {
        inner: files.clone(),
        armed: true.into(),
    });
    let ingest = Ingest::new(
        stack.config.clone(),
        Arc::new(stack.queue.clone()),
        Arc::new(stack.store.ledger()),
        run.clock.clone(),
    )
    .with_blobs(dying);
    let sent = requests(&stack.config, run.clock.now_ms());
    let github = &sent[1];
    let request = || inlet::ingest::WebhookRequest {
        method: "POST".into(),
        path: "/webhooks/github".into(),
        headers: github.headers.clone(),
        body: github.body.clone(),
        ..Default::default()
    };
    // After the blob, before the message: not acknowledged, nothing queued; the retry is.
    let first = ingest.handle(request()).await;
    assert_eq!(first.status, 503, "{}", first.body);
    assert_eq!(stack.queue.depth().await.expect("depth"), Some(0));
    assert_eq!(ingest.handle(request()).await.status, 200);

    // After the dispatch, before the delete: the message shows again after its visibility
    // timeout and is a duplicate.
    let msgs = stack
        .queue
        .receive(10, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("receive");
    let records: Vec<WorkerRecord> = msgs.iter().map(WorkerRecord::from).collect();
    let done = stack.worker.process(&records).await;
    assert!(
        matches!(done.outcomes.as_slice(), [(_, Outcome::Dispatched { .. })]),
        "{done:?}"
    );
    run.clock.advance_ms(61_000);
    let again = run.drain().await;
    assert!(
        matches!(again.as_slice(), [Outcome::Duplicate { .. }]),
        "{again:?}"
    );
    let http = copies(http_copies(&rx), &*files).await;
    assert_eq!(http.len(), 1, "the HTTP target took the event once");
    let (key, bytes) = github.events.iter().next().expect("one event");
    assert!(http[key].0 == *bytes, "byte-exact");
    let fwd = stack.queues.queue("forwarded", None);
    assert_eq!(queue_copies(&fwd, 1).await.len(), 1, "SQS once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_body_that_is_gone_or_damaged_is_dead_lettered_not_dispatched() {
    let (hook, rx) = start_receiver().await;
    let run = Running::start(|doc| with_targets(doc, hook, "forwarded")).await;
    let sent = requests(&run.stack.config, run.clock.now_ms());
    let stripe = &sent[0];
    let (status, answer) = run.post("stripe", &stripe.headers, &stripe.body).await;
    assert_eq!(status, 200, "{answer}");
    // The blob is overwritten with other bytes (a damaged store): the digest catches it.
    let key = format!("bodies/{}", sha256_hex(&stripe.body));
    let path = run.dir.path().join("data/blobs").join(&key);
    std::fs::write(&path, b"not the body").expect("damage");
    let outcomes = run.drain().await;
    assert!(
        matches!(outcomes.as_slice(), [Outcome::DeadLettered { .. }]),
        "{outcomes:?}"
    );
    assert!(rx.seen().is_empty(), "nothing was sent");
    let dlq = run
        .stack
        .dlq
        .receive(10, Duration::from_secs(1), Duration::ZERO)
        .await
        .expect("dlq");
    assert_eq!(dlq.len(), 1);
}
