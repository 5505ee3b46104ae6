//! Hostile batches: a request that splits into many events costs bytes and time linear in
//! its size, carries a bounded number of events, and is answered within the ingest deadline
//! however slow the queue — through the real ingest path over the embedded store.

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use inlet::adapters::embedded::EmbeddedStore;
use inlet::config::{Config, ConfigDoc, SecretSpec};
use inlet::envelope::Envelope;
use inlet::ingest::{Ingest, WebhookRequest, WebhookResponse};
use inlet::ports::{
    Clock, OutboundMessage, Queue, QueueError, ReceivedMessage, SystemClock, TrailRow, TrailStatus,
};
use inlet::providers::meta::MAX_PART_OVERHEAD;
use inlet::request::Headers;
use inlet::worker::Outcome;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;

use crate::pipeline::{dev_config, Running};

/// A WhatsApp notification: one entry whose messages have `ids`, all from one sender whose
/// `contacts[]` item is beside them, the entry stamped `entry_time`.
fn whatsapp(ids: &[String], entry_time: u64) -> Vec<u8> {
    let messages: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"from":"16505551234","id":"{id}","timestamp":"1767225600","type":"text","text":{{"body":"h\u00e9"}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","time":{entry_time},"changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Sheena Nelson"}},"wa_id":"16505551234"}}],"messages":[{}]}},"field":"messages"}}]}}]}}"#,
        messages.join(",")
    )
    .into_bytes()
}

fn wamids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("wamid.{prefix}{i:05}")).collect()
}

/// Every message on `queue`, received once (hidden for the rest of the test).
async fn queued(queue: &dyn Queue) -> Vec<Envelope> {
    let mut out = Vec::new();
    loop {
        let batch = queue
            .receive(10, Duration::from_secs(3600), Duration::ZERO)
            .await
            .expect("receive");
        if batch.is_empty() {
            return out;
        }
        out.extend(
            batch
                .iter()
                .map(|m| serde_json::from_str::<Envelope>(&m.body).expect("an envelope")),
        );
    }
}

#[tokio::test]
async fn a_2000_message_meta_entry_queues_each_message_once_in_linear_bytes_and_time() {
    let run = Running::start(|_| {}).await;
    let body = whatsapp(&wamids("big", 2_000), 1_767_225_600);
    let started = Instant::now();
    let (status, answer) = run.post_signed("meta", &body).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["events"], 2_000);
    // About a second in the debug build beside the other tests; the quadratic split took
    // tens of seconds.
    assert!(took < Duration::from_secs(5), "{took:?}");

    let envelopes = queued(&run.stack.queue).await;
    assert_eq!(envelopes.len(), 2_000);
    let total: usize = envelopes
        .iter()
        .map(|e| e.body_bytes().expect("body").len())
        .sum();
    // The stated bound: the request once, plus a bounded overhead per event. Every event
    // carrying its whole entry was 2,000 times the request.
    let bound = body.len() + envelopes.len() * MAX_PART_OVERHEAD;
    assert!(
        total <= bound,
        "{total} bytes of bodies for a {}-byte request (bound {bound})",
        body.len()
    );
    assert!(total < 4 * body.len(), "{total} vs {}", body.len());
    for env in &envelopes {
        let part: serde_json::Value =
            serde_json::from_slice(&env.body_bytes().expect("body")).expect("JSON");
        assert_eq!(
            part["message"]["id"].as_str(),
            env.provider_event_id.as_deref()
        );
        assert_eq!(part["metadata"]["phone_number_id"], "106540352242922");
        assert_eq!(part["contact"]["wa_id"], "16505551234");
    }
}

#[tokio::test]
async fn the_same_whatsapp_message_in_another_batch_is_a_duplicate_not_a_conflict() {
    let run = Running::start(|_| {}).await;
    let x = "wamid.SAME".to_string();
    let first = whatsapp(&["wamid.A1".into(), x.clone()], 1_767_225_600);
    let (status, answer) = run.post_signed("meta", &first).await;
    assert_eq!(status, 200, "{answer}");
    let outcomes = run.drain().await;
    assert_eq!(outcomes.len(), 2);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Dispatched { .. })),
        "{outcomes:?}"
    );

    // Meta redelivers the message inside a batch of other siblings, at another entry time.
    let second = whatsapp(
        &[x.clone(), "wamid.B1".into(), "wamid.C1".into()],
        1_767_225_660,
    );
    let (status, answer) = run.post_signed("meta", &second).await;
    assert_eq!(status, 200, "{answer}");
    let mut outcomes = run.drain().await;
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        vec![
            Outcome::Dispatched {
                dedupe_key: "meta#wamid.B1".into()
            },
            Outcome::Dispatched {
                dedupe_key: "meta#wamid.C1".into()
            },
            Outcome::Duplicate {
                dedupe_key: format!("meta#{x}")
            },
        ]
    );
    let conflicts = run
        .trail()
        .await
        .into_iter()
        .filter(|r| matches!(r, TrailRow::Entry(e) if e.status == TrailStatus::Conflict))
        .count();
    assert_eq!(conflicts, 0);
}

#[tokio::test]
async fn more_events_than_the_limit_are_refused_413_and_nothing_is_queued() {
    let run = Running::start(|doc| doc.settings.max_events_per_request = 10).await;
    let (status, answer) = run
        .post_signed("meta", &whatsapp(&wamids("over", 11), 1))
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (413, Some("too_many_events")),
        "{answer}"
    );
    let message = answer["message"].as_str().expect("message");
    assert!(message.contains("10 events"), "{message}");
    assert!(run.drain().await.is_empty(), "nothing of it was queued");
    assert!(
        run.refusal_reasons()
            .await
            .contains(&"too_many_events".to_string()),
        "the refusal is recorded"
    );

    // Exactly the limit is accepted.
    let (status, answer) = run
        .post_signed("meta", &whatsapp(&wamids("at", 10), 1))
        .await;
    assert_eq!((status, answer["events"].as_u64()), (200, Some(10)));
}

/// A fixed throw-away SendGrid signing key: the source holds its public half.
fn sendgrid_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x2a; 32]).expect("a valid scalar")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sendgrid_headers(body: &[u8], now_ms: i64) -> Headers {
    let ts = (now_ms / 1000).to_string();
    let mut message = ts.as_bytes().to_vec();
    message.extend_from_slice(body);
    let sig: p256::ecdsa::Signature = sendgrid_key().sign(&message);
    Headers::from_iter([
        (
            "x-twilio-email-event-webhook-signature",
            b64(sig.to_der().as_bytes()),
        ),
        ("x-twilio-email-event-webhook-timestamp", ts),
    ])
}

/// `n` SendGrid events for four recipients in turn, ids `sg-<prefix>-00000`….
fn sendgrid_body(prefix: &str, n: usize) -> Vec<u8> {
    let events: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"email":"user{}@example.com","event":"delivered","sg_event_id":"sg-{prefix}-{i:05}","timestamp":1767225600}}"#,
                i % 4
            )
        })
        .collect();
    format!("[{}]\r\n", events.join(",")).into_bytes()
}

/// The dev config with the SendGrid source holding [`sendgrid_key`]'s public key and room
/// for a large array.
fn sendgrid_config(dir: &std::path::Path, edit: impl FnOnce(&mut ConfigDoc)) -> Arc<Config> {
    let public = sendgrid_key()
        .verifying_key()
        .to_public_key_der()
        .expect("DER");
    Arc::new(dev_config(dir, |doc| {
        doc.settings.max_body_bytes = 700 * 1024;
        doc.sources
            .iter_mut()
            .find(|s| s.id == "sendgrid")
            .expect("sendgrid source")
            .secrets = vec![SecretSpec::Ref(format!(
            "literal:{}",
            b64(public.as_bytes())
        ))];
        edit(doc);
    }))
}

/// The embedded queue behind a delay on every send, as a remote queue far away or slowed
/// down would be. Records how many batch sends were in flight at once, and the order in
/// which the queue took each message (its FIFO group and dedupe key).
struct SlowQueue {
    inner: Arc<dyn Queue>,
    /// Delay of the n-th batch send: `delays[n % len]`.
    delays: Vec<Duration>,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    taken: Mutex<Vec<(String, String)>>,
}

impl SlowQueue {
    fn new(inner: Arc<dyn Queue>, delays: Vec<Duration>) -> Self {
        Self {
            inner,
            delays,
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            taken: Mutex::new(Vec::new()),
        }
    }

    fn delay(&self) -> Duration {
        let n = self.calls.fetch_add(1, AtomicOrdering::SeqCst);
        self.delays[n % self.delays.len()]
    }

    fn record(&self, messages: &[OutboundMessage]) {
        let mut taken = self.taken.lock().expect("lock");
        for m in messages {
            let env: Envelope = serde_json::from_str(&m.body).expect("an envelope");
            taken.push((m.group_id.clone().unwrap_or_default(), env.dedupe_key));
        }
    }
}

#[async_trait]
impl Queue for SlowQueue {
    async fn send(&self, message: &OutboundMessage) -> Result<String, QueueError> {
        tokio::time::sleep(self.delay()).await;
        let id = self.inner.send(message).await?;
        self.record(std::slice::from_ref(message));
        Ok(id)
    }
    async fn send_batch(
        &self,
        messages: &[OutboundMessage],
    ) -> Result<Vec<Result<String, QueueError>>, QueueError> {
        let now = self.in_flight.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, AtomicOrdering::SeqCst);
        tokio::time::sleep(self.delay()).await;
        let results = self.inner.send_batch(messages).await;
        self.in_flight.fetch_sub(1, AtomicOrdering::SeqCst);
        self.record(messages);
        results
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

struct Harness {
    ingest: Ingest,
    queue: Arc<SlowQueue>,
    store: EmbeddedStore,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// The real ingest over the embedded store, its queue behind `delays`.
    fn new(delays: Vec<Duration>, edit: impl FnOnce(&mut ConfigDoc)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = sendgrid_config(dir.path(), edit);
        let clock = Arc::new(SystemClock);
        let store = EmbeddedStore::open_in_memory(clock.clone()).expect("store");
        let queue = Arc::new(SlowQueue::new(
            Arc::new(store.queue("events", None)),
            delays,
        ));
        let ingest = Ingest::new(cfg, queue.clone(), Arc::new(store.ledger()), clock);
        Self {
            ingest,
            queue,
            store,
            _dir: dir,
        }
    }

    async fn post_sendgrid(&self, body: Vec<u8>) -> (WebhookResponse, Duration) {
        let headers = sendgrid_headers(&body, SystemClock.now_ms());
        let started = Instant::now();
        // However the ingest path behaves, the test itself never hangs.
        let resp = tokio::time::timeout(
            Duration::from_secs(60),
            self.ingest.handle(WebhookRequest {
                method: "POST".into(),
                path: "/webhooks/sendgrid".into(),
                headers,
                body,
                ..Default::default()
            }),
        )
        .await
        .expect("ingest answered within a minute");
        (resp, started.elapsed())
    }

    fn visible(&self) -> u64 {
        self.store.queue_counts("events").expect("counts").visible
    }
}

#[tokio::test]
async fn a_large_sendgrid_array_is_queued_within_the_deadline_by_concurrent_sends() {
    // 20 ms a batch send, a round trip to SQS: 500 batches one after the other take 10 s,
    // past the 6 s deadline; eight at a time take about 1.3 s.
    let h = Harness::new(vec![Duration::from_millis(20)], |_| {});
    let n = 5_000;
    let (resp, took) = h.post_sendgrid(sendgrid_body("big", n)).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let answer: serde_json::Value = serde_json::from_str(&resp.body).expect("JSON");
    assert_eq!(answer["events"], n);
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert_eq!(h.visible(), n as u64, "every event is on the queue");
    let most = h.queue.most_in_flight.load(AtomicOrdering::SeqCst);
    assert!(
        (2..=8).contains(&most),
        "{most} batch sends in flight at once"
    );
}

#[tokio::test]
async fn a_queue_slower_than_the_deadline_is_answered_503_within_it() {
    // A queue that takes a minute per send: ingest gives up at its 1 s deadline and answers
    // 503, so the provider retries, rather than hanging until the Lambda is killed.
    let h = Harness::new(vec![Duration::from_secs(60)], |doc| {
        doc.settings.ingest_deadline = "1s".into();
    });
    for n in [30, 1] {
        let (resp, took) = h.post_sendgrid(sendgrid_body(&format!("slow{n}"), n)).await;
        assert_eq!(resp.status, 503, "{n} events: {}", resp.body);
        let answer: serde_json::Value = serde_json::from_str(&resp.body).expect("JSON");
        assert_eq!(answer["error"], "enqueue_failed");
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(4),
            "{n} events: answered after {took:?}"
        );
    }
    assert_eq!(h.visible(), 0);
}

#[tokio::test]
async fn batches_are_cut_by_what_the_messages_weigh_not_by_their_bodies() {
    // Ten items of escaped backslashes: 68 KB each in the body, twice that once the envelope
    // escapes them. Cut by body size they made one 1.4 MB batch, which a queue refuses
    // (SQS: 1 MiB per SendMessageBatch) on every retry.
    let h = Harness::new(vec![Duration::ZERO], |_| {});
    let items: Vec<String> = (0..10)
        .map(|i| {
            format!(
                r#"{{"email":"a@example.com","event":"delivered","sg_event_id":"sg-wide-{i:02}","timestamp":1767225600,"note":"{}"}}"#,
                r"\\".repeat(34_000)
            )
        })
        .collect();
    let body = format!("[{}]\r\n", items.join(",")).into_bytes();
    assert!(body.len() <= 700 * 1024);
    let (resp, _) = h.post_sendgrid(body).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(h.visible(), 10);
}

#[tokio::test]
async fn concurrent_sends_keep_each_fifo_group_in_body_order() {
    // Sends finish out of order (uneven delays); a source with `order_by` must still reach
    // the queue in body order within each entity's group.
    let delays = [25, 5, 15, 0, 20, 10, 30, 5]
        .into_iter()
        .map(Duration::from_millis)
        .collect();
    let h = Harness::new(delays, |doc| {
        doc.sources
            .iter_mut()
            .find(|s| s.id == "sendgrid")
            .expect("sendgrid source")
            .order_by = Some("/email".into());
    });
    let n = 400;
    let (resp, _) = h.post_sendgrid(sendgrid_body("fifo", n)).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let taken = h.queue.taken.lock().expect("lock").clone();
    assert_eq!(taken.len(), n);
    let groups: std::collections::BTreeSet<&String> = taken.iter().map(|(g, _)| g).collect();
    assert_eq!(groups.len(), 4, "one group per recipient");
    for group in groups {
        let keys: Vec<&String> = taken
            .iter()
            .filter(|(g, _)| g == group)
            .map(|(_, k)| k)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "group {group} out of body order");
    }
    let most = h.queue.most_in_flight.load(AtomicOrdering::SeqCst);
    assert!(most >= 2, "{most}: the groups were sent concurrently");
}
