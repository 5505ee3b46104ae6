//! Per-entity ordering: a source with `order_by` travels in one FIFO group per entity, the
//! worker never delivers a group's later update before an earlier one that failed, and with
//! `version` an update older than the last one applied is dropped and trailed. Through the
//! embedded pipeline (time on the stack's ManualClock, no sleeps), the ledger's version guard
//! on both backends, and FIFO sends to SQS (moto).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;
use inlet::adapters::aws::SqsQueue;
use inlet::envelope::Envelope;
use inlet::local::LocalStack;
use inlet::ports::{
    Clock, Ledger, ManualClock, OutboundMessage, Queue, SystemClock, TrailQuery, TrailRow,
    TrailStatus,
};
use inlet::retry::FixedJitter;
use inlet::targets::{DispatchError, Outgoing, Target};
use inlet::worker::{Outcome, Worker};

use crate::pipeline::{dev_config, signed_headers};
use crate::support::{aws, embedded};

const T0: i64 = 1_700_000_000_000;

/// Records what it delivers, in order; fails the first delivery of the events it is told to.
#[derive(Default)]
struct Recorder {
    fail_once: Mutex<Vec<String>>,
    delivered: Mutex<Vec<(String, i64)>>,
}

fn wallet_and_version(e: &Envelope) -> (String, i64) {
    let body: serde_json::Value = serde_json::from_str(&e.body).expect("json body");
    let o = &body["data"]["object"];
    (
        o["wallet"].as_str().expect("wallet").to_owned(),
        o["version"].as_i64().expect("version"),
    )
}

#[async_trait]
impl Target for Recorder {
    fn id(&self) -> &str {
        "file"
    }
    async fn deliver(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>> {
        events
            .iter()
            .map(|o| o.envelope)
            .map(|e| {
                let mut fail = self.fail_once.lock().expect("lock");
                if let Some(at) = fail.iter().position(|k| *k == e.dedupe_key) {
                    fail.remove(at);
                    return Err(DispatchError::Retryable("wallet service down".into()));
                }
                self.delivered
                    .lock()
                    .expect("lock")
                    .push(wallet_and_version(e));
                Ok(())
            })
            .collect()
    }
}

struct Stack {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    stack: LocalStack,
    target: Arc<Recorder>,
}

impl Stack {
    /// The dev stack with the `stripe` source ordered by wallet and versioned, and the
    /// recorder in place of the JSONL target.
    fn open() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dev_config(dir.path(), |doc| {
            let stripe = doc
                .sources
                .iter_mut()
                .find(|s| s.id == "stripe")
                .expect("stripe source");
            stripe.order_by = Some("/data/object/wallet".into());
            stripe.version = Some("/data/object/version".into());
        });
        let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
        let mut stack =
            LocalStack::open(cfg, &dir.path().join("data"), clock.clone()).expect("stack opens");
        let target = Arc::new(Recorder::default());
        let mut targets: BTreeMap<String, Arc<dyn Target>> = BTreeMap::new();
        targets.insert("file".into(), target.clone());
        stack.worker = Worker::new(
            stack.config.clone(),
            Arc::new(stack.store.ledger()),
            targets,
            clock.clone(),
        )
        .with_queues(Arc::new(stack.queue.clone()), Arc::new(stack.dlq.clone()))
        .with_jitter(Arc::new(FixedJitter(1.0)));
        Self {
            _dir: dir,
            clock,
            stack,
            target,
        }
    }

    /// A signed Stripe webhook updating `wallet` to `version`; returns its dedupe key.
    async fn update(&self, event: &str, wallet: &str, version: i64) -> String {
        let body = serde_json::json!({
            "id": event, "object": "event", "type": "customer.balance.updated",
            "created": 1_767_225_600,
            "data": {"object": {"wallet": wallet, "version": version}},
        })
        .to_string()
        .into_bytes();
        let cfg = &self.stack.config;
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
        format!("stripe#{event}")
    }

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

    fn delivered(&self) -> Vec<(String, i64)> {
        self.target.delivered.lock().expect("lock").clone()
    }
}

#[tokio::test]
async fn a_wallets_updates_arrive_in_order_when_the_middle_one_fails_once_and_an_old_one_is_dropped(
) {
    let s = Stack::open();
    assert!(
        s.stack.queue.is_fifo(),
        "order_by makes inlet dev's queue FIFO"
    );
    s.update("evt_w1_v1", "w1", 1).await;
    let middle = s.update("evt_w1_v2", "w1", 2).await;
    s.update("evt_w1_v3", "w1", 3).await;
    s.update("evt_w2_v1", "w2", 1).await;
    s.target
        .fail_once
        .lock()
        .expect("lock")
        .push(middle.clone());

    // One batch of four. The failed v2 holds v3 back undispatched; wallet w2 goes on.
    let outcomes = s.work().await;
    assert!(
        matches!(
            outcomes.as_slice(),
            [
                Outcome::Dispatched { .. },
                Outcome::Failed { .. },
                Outcome::HeldBack { group },
                Outcome::Dispatched { .. },
            ] if group == "stripe#w1"
        ),
        "{outcomes:?}"
    );
    assert_eq!(s.delivered(), [("w1".into(), 1), ("w2".into(), 1)]);

    // v3 is visible but behind v2, which is hidden for its backoff: nothing moves.
    assert!(s.work().await.is_empty(), "the group waits for v2");
    s.clock.advance_ms(600_000);
    let outcomes = s.work().await;
    assert!(
        matches!(
            outcomes.as_slice(),
            [Outcome::Dispatched { dedupe_key }, Outcome::Dispatched { .. }] if *dedupe_key == middle
        ),
        "{outcomes:?}"
    );
    let w1: Vec<i64> = s
        .delivered()
        .into_iter()
        .filter(|(w, _)| w == "w1")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(w1, [1, 2, 3]);

    // An update older than the applied v3 arrives late: acknowledged, never delivered.
    let late = s.update("evt_w1_v2_late", "w1", 2).await;
    let outcomes = s.work().await;
    assert!(
        matches!(outcomes.as_slice(), [Outcome::Stale { dedupe_key }] if *dedupe_key == late),
        "{outcomes:?}"
    );
    assert_eq!(s.delivered().len(), 4);
    let rows = s
        .stack
        .store
        .ledger()
        .list(&TrailQuery {
            source: Some("stripe".into()),
            limit: 0,
            ..Default::default()
        })
        .await
        .expect("list");
    let stale: Vec<_> = rows
        .iter()
        .filter_map(|r| match r {
            TrailRow::Entry(e) if e.status == TrailStatus::Stale => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(stale.len(), 1, "{rows:?}");
    assert_eq!(stale[0].dedupe_key.as_deref(), Some(late.as_str()));
    assert!(
        stale[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("version 2") && r.contains("applied 3")),
        "{:?}",
        stale[0].reason
    );
    // Its copy is a duplicate, not a second stale drop.
    let again = s.stack.store.ledger().get(&late).await.expect("get");
    assert!(again.is_some_and(|r| r.status == inlet::ports::DedupeStatus::Completed));
    // Nothing left anywhere.
    assert!(s.work().await.is_empty());
    assert_eq!(s.stack.dlq.depth().await.expect("depth"), Some(0));
}

#[tokio::test]
async fn ingest_puts_an_event_in_its_entitys_group_and_one_without_the_field_in_its_sources() {
    let s = Stack::open();
    s.update("evt_g1", "w9", 1).await;
    let body = br#"{"id":"evt_nowallet","object":"event","type":"x","created":1767225600,"data":{"object":{}}}"#.to_vec();
    let resp = s
        .stack
        .ingest
        .handle(inlet::ingest::WebhookRequest {
            method: "POST".into(),
            path: "/webhooks/stripe".into(),
            headers: signed_headers(&s.stack.config, "stripe", &body, s.clock.now_ms(), "d"),
            body,
            ..Default::default()
        })
        .await;
    assert_eq!(resp.status, 200);
    let got = s
        .stack
        .queue
        .receive(10, Duration::from_secs(30), Duration::ZERO)
        .await
        .expect("receive");
    let groups: Vec<Option<&str>> = got.iter().map(|m| m.group_id.as_deref()).collect();
    assert_eq!(groups, [Some("stripe#w9"), Some("stripe")]);
}

// ---------------------------------------------------------------------------------------
// The ledger's version guard, one case on both backends.

async fn versions_only_move_forward(ledger: &dyn Ledger) {
    assert_eq!(
        ledger.applied_version("shop", "w1").await.expect("read"),
        None
    );
    assert!(ledger
        .record_version("shop", "w1", 5, T0)
        .await
        .expect("record"));
    assert_eq!(
        ledger.applied_version("shop", "w1").await.expect("read"),
        Some(5)
    );
    // As old, or older: refused, and the applied version stays.
    assert!(!ledger
        .record_version("shop", "w1", 5, T0)
        .await
        .expect("same"));
    assert!(!ledger
        .record_version("shop", "w1", 4, T0)
        .await
        .expect("older"));
    assert_eq!(
        ledger.applied_version("shop", "w1").await.expect("read"),
        Some(5)
    );
    assert!(ledger
        .record_version("shop", "w1", 6, T0)
        .await
        .expect("newer"));
    assert_eq!(
        ledger.applied_version("shop", "w1").await.expect("read"),
        Some(6)
    );
    // Entities and sources are apart.
    assert_eq!(
        ledger.applied_version("shop", "w2").await.expect("read"),
        None
    );
    assert_eq!(
        ledger.applied_version("other", "w1").await.expect("read"),
        None
    );
    assert!(ledger
        .record_version("other", "w1", 1, T0)
        .await
        .expect("record"));
    assert_eq!(
        ledger.applied_version("shop", "w1").await.expect("read"),
        Some(6)
    );
    // Microsecond timestamps fit.
    let t = 1_767_225_600_123_456;
    assert!(ledger
        .record_version("shop", "w3", t, T0)
        .await
        .expect("record"));
    assert!(!ledger
        .record_version("shop", "w3", t - 1, T0)
        .await
        .expect("older"));
    assert_eq!(
        ledger.applied_version("shop", "w3").await.expect("read"),
        Some(t)
    );
}

#[tokio::test]
async fn embedded_versions_only_move_forward() {
    versions_only_move_forward(&*embedded::ledger(Arc::new(ManualClock::new(T0)))).await;
}

#[tokio::test]
async fn aws_versions_only_move_forward() {
    versions_only_move_forward(&aws::ledger().await).await;
}

// ---------------------------------------------------------------------------------------
// SQS FIFO (moto).

async fn fifo_queue() -> SqsQueue {
    let client = aws_sdk_sqs::Client::new(&aws::sdk_config().await);
    let url = client
        .create_queue()
        .queue_name(format!("{}.fifo", aws::unique_name("inlet-fifo")))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("create a FIFO queue")
        .queue_url
        .expect("url");
    SqsQueue::new(client, url)
}

fn grouped(body: &str, group: &str, dedup: &str) -> OutboundMessage {
    OutboundMessage {
        group_id: Some(group.into()),
        deduplication_id: Some(dedup.into()),
        ..OutboundMessage::new(body)
    }
}

#[tokio::test]
async fn aws_fifo_sends_carry_the_group_and_deduplication_id() {
    let q = fifo_queue().await;
    assert!(q.is_fifo());
    let dedup = inlet::ordering::deduplication_id("shop#evt_1");
    q.send(&grouped("a1", "shop#w1", &dedup))
        .await
        .expect("send");
    // The same deduplication id within five minutes: SQS keeps one.
    q.send(&grouped("a1 again", "shop#w1", &dedup))
        .await
        .expect("send the copy");
    let results = q
        .send_batch(&[
            grouped("a2", "shop#w1", "d2"),
            grouped("b1", "shop#w2", "d3"),
        ])
        .await
        .expect("send_batch");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // Without a deduplication id the adapter makes one (the queue has no content-based one).
    q.send(&OutboundMessage {
        group_id: Some("shop#w1".into()),
        ..OutboundMessage::new("a3")
    })
    .await
    .expect("send without a deduplication id");

    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(
            q.receive(10, Duration::from_secs(30), Duration::from_secs(1))
                .await
                .expect("receive"),
        );
        if got.len() >= 4 {
            break;
        }
    }
    let seen: Vec<(&str, Option<&str>)> = got
        .iter()
        .map(|m| (m.body.as_str(), m.group_id.as_deref()))
        .collect();
    let w1: Vec<&str> = seen
        .iter()
        .filter(|(_, g)| *g == Some("shop#w1"))
        .map(|(b, _)| *b)
        .collect();
    assert_eq!(w1, ["a1", "a2", "a3"], "{seen:?}");
    assert!(seen.contains(&("b1", Some("shop#w2"))), "{seen:?}");
    assert_eq!(got.len(), 4, "the copy was deduplicated: {seen:?}");
}

#[tokio::test]
async fn aws_a_standard_queue_ignores_the_group() {
    let q = aws::queues_with_dlq(3).await.main;
    assert!(!q.is_fifo());
    q.send(&grouped("m", "shop#w1", "d1")).await.expect("send");
    let got = q
        .receive(1, Duration::from_secs(30), Duration::from_secs(1))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].group_id, None);
}
