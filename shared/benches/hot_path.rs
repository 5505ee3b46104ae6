//! The per-event CPU work of the two hot Lambdas, each beside a bare HMAC-SHA256 of the same
//! body measured in the same run (`make bench` prints the ratio; issue 7's target is ≤ 3×).
//!
//! - `ingest/<source>/<size>`: an API Gateway v2 event (the committed fixture) parsed as the
//!   ingest Lambda parses it (`aws_lambda_events`' `ApiGatewayV2httpRequest`), turned into the domain request, then `Ingest::handle` — route,
//!   verify, extract, build and serialise the envelope — and the Lambda response, serialised. `handle` is the
//!   only public entry, so the queue and ledger are in-memory no-ops: no I/O is measured.
//! - `worker_batch10/<size>`: an SQS event of 10 envelopes (as ingest built them) parsed,
//!   turned into records, and `Worker::process`: decode, routing, dedupe bookkeeping and the
//!   EventBridge entries, against a no-op ledger and bus (the SDK's own request encoding is
//!   not included).
//!
//! Logs and EMF metrics are off (no subscriber; `metrics::enable` not called), as in tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::sqs::SqsEvent;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmac::{KeyInit, Mac};
use inlet::config::{self, ConfigDoc, TargetKind, TargetSpec};
use inlet::ingest::Ingest;
use inlet::lambda::http::{into_webhook_request, response};
use inlet::lambda::sqs::to_records;
use inlet::ports::{
    BeginOutcome, BeginRequest, BusError, BusEvent, DedupeRecord, EventBus, Ledger, LedgerError,
    ManualClock, OutboundMessage, PublishResult, Queue, QueueError, ReceivedMessage, TrailEntry,
    TrailQuery, TrailRow,
};
use inlet::providers::SignInput;
use inlet::targets::eventbridge::EventBridgeTarget;
use inlet::targets::Target;
use inlet::worker::{Outcome, Worker};

const DEV_CONFIG: &str = include_str!("../../infra/dev/inlet.toml");
const APIGW_V2: &str =
    include_str!("../../tests/fixtures/example-apigw-v2-request-no-authorizer.json");
const SQS_EVENT: &str = include_str!("../../tests/fixtures/example-sqs-event.json");

/// The main schemes: Stripe, GitHub, Standard Webhooks (Svix), Shopify, and the declarative
/// generic scheme, with the dev config's test secrets.
const SOURCES: &[&str] = &["stripe", "github", "svix", "shopify", "custom"];
const SIZES: &[(usize, &str)] = &[(1024, "1KB"), (8 * 1024, "8KB"), (64 * 1024, "64KB")];
/// 2026-01-01T00:00:00Z: signatures are made and checked on this fixed clock.
const NOW_MS: i64 = 1_767_225_600_000;
const BATCH: usize = 10;

/// The dev config with every source routed to one EventBridge target.
fn config() -> Arc<config::Config> {
    let mut doc = ConfigDoc::parse(DEV_CONFIG, Some("toml")).expect("dev config parses");
    doc.targets = vec![TargetSpec {
        id: "bus".into(),
        kind: TargetKind::Eventbridge { bus_name: None },
    }];
    doc.routes[0].targets = vec!["bus".into()];
    Arc::new(
        config::validate(doc, std::env::temp_dir(), &|_: &str| None).expect("dev config valid"),
    )
}

/// A JSON event of exactly `size` bytes that every bench source can extract (id, type).
fn body(n: usize, size: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"id":"evt_bench_{n:06}","object":"event","type":"payment_intent.succeeded","action":"opened","created":1767225600,"amount":150,"data":{{"pad":""#
    );
    let tail = r#""}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut out = head.into_bytes();
    out.extend(std::iter::repeat_n(b'x', pad));
    out.extend_from_slice(tail.as_bytes());
    out
}

/// The body as a signed API Gateway v2 POST to `source`, as the Lambda runtime hands it over.
fn http_event(cfg: &config::Config, source: &str, body: &[u8], n: usize) -> String {
    let headers = cfg
        .source(source)
        .expect("bench source configured")
        .provider
        .sign(&SignInput {
            body,
            now_ms: NOW_MS,
            delivery_id: &format!("delivery-{n}"),
        })
        .expect("sign");
    let mut ev: serde_json::Value = serde_json::from_str(APIGW_V2).expect("fixture");
    let path = format!("/webhooks/{source}");
    ev["rawPath"] = path.as_str().into();
    ev["rawQueryString"] = "".into();
    ev["requestContext"]["http"]["method"] = "POST".into();
    ev["requestContext"]["http"]["path"] = path.as_str().into();
    ev["headers"]["content-type"] = "application/json".into();
    for (k, v) in headers.iter() {
        ev["headers"][k] = v.into();
    }
    ev["body"] = String::from_utf8(body.to_vec()).expect("utf8").into();
    ev["isBase64Encoded"] = false.into();
    ev.to_string()
}

/// A queue that accepts everything; with `kept`, it keeps the bodies (to build the worker's
/// batch from what ingest really queues).
#[derive(Default)]
struct NoopQueue {
    kept: Option<Mutex<Vec<String>>>,
}

#[async_trait]
impl Queue for NoopQueue {
    async fn send(&self, message: &OutboundMessage) -> Result<String, QueueError> {
        if let Some(kept) = &self.kept {
            kept.lock().expect("lock").push(message.body.clone());
        }
        Ok("message-id".into())
    }

    async fn send_batch(
        &self,
        messages: &[OutboundMessage],
    ) -> Result<Vec<Result<String, QueueError>>, QueueError> {
        let mut ids = Vec::with_capacity(messages.len());
        for m in messages {
            ids.push(Ok(self.send(m).await?));
        }
        Ok(ids)
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

/// Every key is free and every write succeeds: the first delivery of each event.
struct NoopLedger;

#[async_trait]
impl Ledger for NoopLedger {
    async fn begin(&self, _: &BeginRequest) -> Result<BeginOutcome, LedgerError> {
        Ok(BeginOutcome::Acquired {
            attempts: 1,
            delivered: BTreeSet::new(),
        })
    }

    async fn complete(
        &self,
        _: &str,
        _: i64,
        _: i64,
        _: &BTreeSet<String>,
    ) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn mark_delivered(&self, _: &str, _: &str, _: i64) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn fail(&self, _: &str, _: i64, _: &str, _: bool) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn get(&self, _: &str) -> Result<Option<DedupeRecord>, LedgerError> {
        Ok(None)
    }

    async fn append(&self, _: &TrailEntry) -> Result<(), LedgerError> {
        Ok(())
    }

    async fn append_new(&self, _: &TrailEntry) -> Result<bool, LedgerError> {
        Ok(true)
    }

    async fn list(&self, _: &TrailQuery) -> Result<Vec<TrailRow>, LedgerError> {
        Ok(Vec::new())
    }

    async fn lookup(
        &self,
        _: inlet::ports::Lookup<'_>,
        _: i64,
    ) -> Result<Vec<TrailRow>, LedgerError> {
        Ok(Vec::new())
    }

    async fn applied_version(&self, _: &str, _: &str) -> Result<Option<i64>, LedgerError> {
        Ok(None)
    }

    async fn record_version(&self, _: &str, _: &str, _: i64, _: i64) -> Result<bool, LedgerError> {
        Ok(true)
    }
}

struct NoopBus;

#[async_trait]
impl EventBus for NoopBus {
    async fn publish(&self, events: &[BusEvent]) -> Result<Vec<PublishResult>, BusError> {
        Ok(events
            .iter()
            .map(|_| PublishResult::Published {
                event_id: "event-id".into(),
            })
            .collect())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // Timers: ingest bounds its enqueueing by `settings.ingest_deadline`.
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn hmac_sha256(key: &[u8], body: &[u8]) -> [u8; 32] {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn bare_hmac(c: &mut Criterion) {
    let mut group = c.benchmark_group("hmac_sha256");
    for &(size, label) in SIZES {
        let body = body(0, size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| hmac_sha256(std::hint::black_box(b"whsec_bench"), &body))
        });
    }
    group.finish();
}

fn ingest(c: &mut Criterion) {
    let cfg = config();
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let ingest = Ingest::new(
        cfg.clone(),
        Arc::new(NoopQueue::default()),
        Arc::new(NoopLedger),
        clock,
    );
    let rt = runtime();
    let mut group = c.benchmark_group("ingest");
    for &(size, label) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        for source in SOURCES {
            let event = http_event(&cfg, source, &body(0, size), 0);
            let handle = || async {
                let req = serde_json::from_slice::<ApiGatewayV2httpRequest>(event.as_bytes())
                    .expect("event parses");
                let req = into_webhook_request(req).expect("request");
                let resp = response(ingest.handle(req).await);
                serde_json::to_vec(&resp).expect("response serialises")
            };
            // A bench of a refusal would measure the wrong path: it must be accepted.
            let resp: serde_json::Value =
                serde_json::from_slice(&rt.block_on(handle())).expect("response");
            assert_eq!(resp["statusCode"], 200, "{source} {label} was not accepted");
            group.bench_function(BenchmarkId::new(*source, label), |b| {
                b.to_async(&rt).iter(handle)
            });
        }
    }
    group.finish();
}

fn worker(c: &mut Criterion) {
    let cfg = config();
    let clock = Arc::new(ManualClock::new(NOW_MS));
    let queue = Arc::new(NoopQueue {
        kept: Some(Mutex::new(Vec::new())),
    });
    let ingest = Ingest::new(
        cfg.clone(),
        queue.clone(),
        Arc::new(NoopLedger),
        clock.clone(),
    );
    let mut targets: BTreeMap<String, Arc<dyn Target>> = BTreeMap::new();
    targets.insert(
        "bus".into(),
        Arc::new(EventBridgeTarget::new("bus".into(), Arc::new(NoopBus))),
    );
    let worker = Worker::new(cfg.clone(), Arc::new(NoopLedger), targets, clock);
    let rt = runtime();
    let mut group = c.benchmark_group("worker_batch10");
    for &(size, label) in SIZES {
        // Ten distinct Stripe events, enqueued by the real ingest path.
        let envelopes: Vec<String> = (0..BATCH)
            .map(|n| {
                let event = http_event(&cfg, "stripe", &body(n, size), n);
                let req = serde_json::from_slice::<ApiGatewayV2httpRequest>(event.as_bytes())
                    .expect("event parses");
                let req = into_webhook_request(req).expect("request");
                let status = rt.block_on(ingest.handle(req)).status;
                assert_eq!(status, 200);
                queue
                    .kept
                    .as_ref()
                    .expect("kept")
                    .lock()
                    .expect("lock")
                    .pop()
                    .expect("queued")
            })
            .collect();
        let mut ev: serde_json::Value = serde_json::from_str(SQS_EVENT).expect("fixture");
        let template = ev["Records"][0].clone();
        ev["Records"] = envelopes
            .iter()
            .enumerate()
            .map(|(n, body)| {
                let mut r = template.clone();
                r["messageId"] = format!("message-{n}").into();
                r["body"] = body.as_str().into();
                r
            })
            .collect::<Vec<_>>()
            .into();
        let event = ev.to_string();
        let process = || async {
            let sqs =
                serde_json::from_slice::<SqsEvent>(event.as_bytes()).expect("SQS event parses");
            worker.process(&to_records(sqs).records).await
        };
        let result = rt.block_on(process());
        let dispatched = result
            .outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Dispatched { .. }))
            .count();
        assert_eq!(dispatched, BATCH, "{result:?}");
        group.throughput(Throughput::Bytes((size * BATCH) as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.to_async(&rt).iter(process)
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short windows keep `make bench` within minutes on 2 cores; criterion still reports its
    // confidence interval, printed beside the median.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bare_hmac, ingest, worker
}
criterion_main!(benches);
