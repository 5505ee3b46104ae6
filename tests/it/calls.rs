//! AWS calls per event, counted against moto: every request the real adapters' SDK clients
//! send, by operation (see `support::calls`). Lambda bills each call as surely as each
//! millisecond, so these are exact: a change that adds a call to a path fails here, and the
//! figures are the ones in docs/performance.md.
//!
//! Not counted: what the SQS event source mapping does on the worker's behalf (ReceiveMessage,
//! DeleteMessageBatch), which AWS runs and bills outside the function.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use inlet::adapters::aws::{DynamoLedger, EventBridgeBus, SqsQueue};
use inlet::ingest::Ingest;
use inlet::lambda::sqs::to_records;
use inlet::poller::{Poller, RunOutcome};
use inlet::ports::{Clock, EventBus, ManualClock, Queue, ReceivedMessage, SystemClock};
use inlet::targets::eventbridge::EventBridgeTarget;
use inlet::targets::Target;
use inlet::worker::{Outcome, Worker};

use crate::lambda::{eventbridge_config, http_event, sqs_event, webhook_request, APIGW_V2};
use crate::pipeline::{sample_body, signed_headers, SOURCES};
use crate::polling_acceptance::{
    config_text, http_client, parse_config, serve_events, stripe_poll, EventLog, Fake, Inserts,
    NOW_S,
};
use crate::support;
use crate::support::calls::{calls, total, CallCounter};

const SEND_MESSAGE: &str = "AmazonSQS.SendMessage";
const SEND_MESSAGE_BATCH: &str = "AmazonSQS.SendMessageBatch";
const UPDATE_ITEM: &str = "DynamoDB_20120810.UpdateItem";
const PUT_ITEM: &str = "DynamoDB_20120810.PutItem";
const PUT_EVENTS: &str = "AWSEvents.PutEvents";

/// The worker's batch size (the template's event source mapping `BatchSize`).
const BATCH: usize = 10;

/// Receive `n` messages from `queue` (the event source mapping's part, not counted).
async fn receive_all(queue: &SqsQueue, n: usize) -> Vec<ReceivedMessage> {
    let mut received = Vec::new();
    while received.len() < n {
        received.extend(
            queue
                .receive(10, Duration::from_secs(60), Duration::from_secs(1))
                .await
                .expect("receive"),
        );
    }
    received
}

#[tokio::test]
async fn ingest_makes_one_call_per_webhook_and_the_worker_at_most_two_point_two_per_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Arc::new(eventbridge_config(dir.path()));
    let counter = CallCounter::default();
    let queues = support::aws::queues_with_dlq(5).await;
    let table = support::aws::ledger().await;
    let bus_name = support::aws::bus().await.bus_name().to_owned();
    // The adapters under count, on the resources made above.
    let main = Arc::new(SqsQueue::new(counter.sqs().await, queues.main.queue_url()));
    let dlq = Arc::new(SqsQueue::new(counter.sqs().await, queues.dlq.queue_url()));
    let ledger = Arc::new(DynamoLedger::new(counter.dynamodb().await, table.table()));
    let bus: Arc<dyn EventBus> =
        Arc::new(EventBridgeBus::new(counter.eventbridge().await, bus_name));
    let clock = Arc::new(SystemClock);

    // Ingest: a batch's worth of webhooks from every scheme of the dev config, each the
    // Lambda's own way (API Gateway event → the ingest Lambda's decoding → the handler).
    let ingest = Ingest::new(cfg.clone(), main.clone(), ledger.clone(), clock.clone());
    for n in 0..BATCH {
        let source = SOURCES[n % SOURCES.len()];
        let body = sample_body(source, 9_000 + n as u64);
        let headers = signed_headers(&cfg, source, &body, clock.now_ms(), &format!("d{n}"));
        let event = http_event(
            APIGW_V2,
            &format!("/webhooks/{source}"),
            &headers,
            &body,
            false,
        );
        let resp = ingest.handle(webhook_request(&event)).await;
        assert_eq!(resp.status, 200, "{source}: {}", resp.body);
    }
    let ingest_calls = counter.take();
    eprintln!("ingest, {BATCH} webhooks: {ingest_calls:?}");
    support::calls::report(
        "ingest, per accepted webhook",
        &ingest_calls,
        BATCH,
        "webhook",
    );
    assert_eq!(ingest_calls, calls(&[(SEND_MESSAGE, BATCH)]));

    // Worker: the batch as the event source mapping hands it over, to one EventBridge target.
    let received = receive_all(&queues.main, BATCH).await;
    let records = to_records(sqs_event(
        &received
            .iter()
            .map(|m| (m.message_id.clone(), m.body.clone(), m.receive_count))
            .collect::<Vec<_>>(),
    ))
    .records;
    let mut targets: BTreeMap<String, Arc<dyn Target>> = BTreeMap::new();
    targets.insert(
        "bus".into(),
        Arc::new(EventBridgeTarget::new("bus".into(), bus)),
    );
    let worker = Worker::new(cfg.clone(), ledger.clone(), targets, clock.clone())
        .with_queues(main.clone(), dlq);
    counter.take();
    let result = worker.process(&records).await;
    let worker_calls = counter.take();
    let dispatched = result
        .outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Dispatched { .. }))
        .count();
    assert_eq!(dispatched, BATCH, "{result:?}");
    let per_event = total(&worker_calls) as f64 / BATCH as f64;
    eprintln!("worker, batch of {BATCH}: {worker_calls:?} = {per_event} calls per event");
    support::calls::report(
        "worker, batch of 10, per event",
        &worker_calls,
        BATCH,
        "event",
    );
    // Dedupe begin and complete per event, one PutEvents for the batch.
    assert_eq!(
        worker_calls,
        calls(&[(UPDATE_ITEM, 2 * BATCH), (PUT_EVENTS, 1)])
    );
    assert!(per_event <= 2.2, "{per_event} calls per event");

    // The same batch delivered again (SQS is at-least-once): a duplicate costs the failed
    // conditional begin and its line in the trail, and reaches no target.
    let again = worker.process(&records).await;
    let duplicate_calls = counter.take();
    assert!(
        again
            .outcomes
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Duplicate { .. })),
        "{again:?}"
    );
    eprintln!("worker, {BATCH} duplicates: {duplicate_calls:?}");
    support::calls::report("worker, per duplicate", &duplicate_calls, BATCH, "event");
    assert_eq!(
        duplicate_calls,
        calls(&[(UPDATE_ITEM, BATCH), (PUT_ITEM, BATCH)])
    );
}

#[tokio::test]
async fn a_refused_webhook_costs_one_trail_write_and_nothing_is_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Arc::new(eventbridge_config(dir.path()));
    let counter = CallCounter::default();
    let queues = support::aws::queues_with_dlq(5).await;
    let table = support::aws::ledger().await;
    let main = Arc::new(SqsQueue::new(counter.sqs().await, queues.main.queue_url()));
    let ledger = Arc::new(DynamoLedger::new(counter.dynamodb().await, table.table()));
    let clock = Arc::new(SystemClock);
    let ingest = Ingest::new(cfg.clone(), main, ledger, clock.clone());
    let body = sample_body("stripe", 1);
    let headers = signed_headers(&cfg, "stripe", &body, clock.now_ms(), "d");
    let mut tampered = body.clone();
    tampered.push(b' ');
    let event = http_event(APIGW_V2, "/webhooks/stripe", &headers, &tampered, false);
    assert_eq!(ingest.handle(webhook_request(&event)).await.status, 401);
    let refused = counter.take();
    support::calls::report("ingest, per refused webhook", &refused, 1, "webhook");
    assert_eq!(refused, calls(&[(PUT_ITEM, 1)]));
}

#[tokio::test]
async fn the_poller_makes_three_calls_per_run_one_per_page_and_one_per_ten_items() {
    // 300 Stripe events, pages of 100: walked down to the oldest page, then up, each page
    // that hands items over holding a multiple of ten (so one SendMessageBatch per ten).
    const EVENTS: usize = 300;
    let fake = Fake::new(
        EventLog::generate(EVENTS, 7, Inserts::none()),
        Duration::ZERO,
    );
    let base = serve_events(fake.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Arc::new(parse_config(
        &config_text(
            &dir.path().join("data"),
            "",
            &stripe_poll(&base, 100, 7_200, 30),
        ),
        dir.path(),
    ));
    let counter = CallCounter::default();
    let queues = support::aws::queues_with_dlq(5).await;
    let table = support::aws::ledger().await;
    let ledger = Arc::new(DynamoLedger::new(counter.dynamodb().await, table.table()));
    let clock = Arc::new(ManualClock::new(NOW_S * 1000));
    let poller = Poller::new(
        cfg,
        Arc::new(SqsQueue::new(counter.sqs().await, queues.main.queue_url())),
        ledger.clone(),
        ledger,
        http_client(),
        clock.clone(),
        "poller-calls",
    );
    let deadline = clock.now_ms() + 600_000;

    let report = poller.run("stripe", deadline).await.expect("run");
    assert_eq!(report.outcome, RunOutcome::CaughtUp, "{report:?}");
    assert_eq!(report.enqueued.len(), EVENTS);
    let backfill = counter.take();
    let pages = report.pages as usize;
    let per_item = total(&backfill) as f64 / EVENTS as f64;
    eprintln!(
        "poller, {EVENTS} items in {pages} pages: {backfill:?} = {per_item:.3} calls per item"
    );
    support::calls::report("poller, per item (backfill)", &backfill, EVENTS, "item");
    // Lease taken and given back, the cursor moved once per page; the run's trail line.
    assert_eq!(
        backfill,
        calls(&[
            (UPDATE_ITEM, 2 + pages),
            (SEND_MESSAGE_BATCH, EVENTS / 10),
            (PUT_ITEM, 1),
        ])
    );

    // A run that finds nothing new: what every scheduled poll of a quiet source costs.
    let idle = poller.run("stripe", deadline).await.expect("run");
    assert_eq!(idle.outcome, RunOutcome::CaughtUp, "{idle:?}");
    assert!(idle.enqueued.is_empty(), "{idle:?}");
    let idle_calls = counter.take();
    eprintln!("poller, a run with nothing new: {idle_calls:?}");
    support::calls::report("poller, per run with nothing new", &idle_calls, 1, "run");
    assert_eq!(
        idle_calls,
        calls(&[(UPDATE_ITEM, 2 + idle.pages as usize), (PUT_ITEM, 1)])
    );
}
