//! The trail's bounds with several instances at once, on both backends: separate `Ingest`
//! and `Worker` objects (each with its own budget, like Lambda containers) share one ledger
//! and are flooded within one second. However many there are, the trail keeps at most
//! `trail::ROWS_PER_SECOND` entries of a kind per source and second (exactly that many once
//! one instance alone tried every slot), and always keeps a key's first conflict. Time is a
//! `ManualClock`: no sleeps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use inlet::adapters::aws::DynamoLedger;
use inlet::config::Config;
use inlet::envelope::Envelope;
use inlet::ingest::{Ingest, WebhookRequest};
use inlet::ports::{
    BeginRequest, EventSummary, Ledger, ManualClock, Queue, TrailEntry, TrailQuery, TrailRow,
    TrailStatus, WorkerRecord,
};
use inlet::trail::ROWS_PER_SECOND;
use inlet::worker::{Outcome, Worker};

use crate::pipeline::{dev_config, sample_body, signed_headers};
use crate::support;

/// Mid-second, so a whole burst falls in one second.
const NOW: i64 = 1_767_225_600_250;
const BUDGET: usize = ROWS_PER_SECOND as usize;

struct Backend {
    ledger: Arc<dyn Ledger>,
    /// The DynamoDB side, to read raw items.
    dynamo: Option<DynamoLedger>,
}

fn embedded(clock: Arc<ManualClock>) -> Backend {
    Backend {
        ledger: Arc::new(support::embedded::store(clock).ledger()),
        dynamo: None,
    }
}

async fn aws() -> Backend {
    let ledger = support::aws::ledger().await;
    Backend {
        ledger: Arc::new(ledger.clone()),
        dynamo: Some(ledger),
    }
}

/// The source's trail entries of `status` shown at the clock's now.
async fn entries(ledger: &dyn Ledger, status: TrailStatus, now_ms: i64) -> Vec<TrailEntry> {
    ledger
        .list(&TrailQuery {
            source: Some("stripe".into()),
            limit: 0,
            now_ms,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_iter()
        .filter_map(|row| match row {
            TrailRow::Entry(e) if e.status == status => Some(e),
            _ => None,
        })
        .collect()
}

/// A Stripe webhook whose body was changed after signing: refused 401 with no secret.
fn forged(cfg: &Config, n: u64) -> WebhookRequest {
    let body = sample_body("stripe", n);
    let headers = signed_headers(cfg, "stripe", &body, NOW, "d");
    let mut forged = body;
    forged.extend_from_slice(b" ");
    WebhookRequest {
        method: "POST".into(),
        path: "/webhooks/stripe".into(),
        headers,
        body: forged,
        source_ip: Some("203.0.113.9".parse().expect("ip")),
        ..Default::default()
    }
}

/// `instances` ingest instances, each refusing `each` forged requests one after another
/// (a Lambda container handles one at a time), all instances at once.
async fn refuse(
    cfg: &Arc<Config>,
    ledger: &Arc<dyn Ledger>,
    clock: &Arc<ManualClock>,
    instances: usize,
    each: usize,
) {
    let queue: Arc<dyn Queue> = Arc::new(support::embedded::store(clock.clone()).queue("q", None));
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..instances {
        let ingest = Ingest::new(cfg.clone(), queue.clone(), ledger.clone(), clock.clone());
        let cfg = cfg.clone();
        running.spawn(async move {
            for n in 0..each {
                let resp = ingest.handle(forged(&cfg, n as u64)).await;
                assert_eq!(resp.status, 401, "{}", resp.body);
            }
        });
    }
    while let Some(done) = running.join_next().await {
        done.expect("an instance panicked");
    }
}

async fn refusals_from_many_instances_store_the_budget_per_second(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Arc::new(dev_config(dir.path(), |_| {}));
    let clock = Arc::new(ManualClock::new(NOW));
    refuse(&cfg, &backend.ledger, &clock, 8, 30).await;
    let first = entries(&*backend.ledger, TrailStatus::Refused, NOW).await;
    assert_eq!(
        first.len(),
        BUDGET,
        "8 instances × 30 refusals in one second"
    );

    clock.advance_ms(1_000);
    refuse(&cfg, &backend.ledger, &clock, 8, 30).await;
    let both = entries(&*backend.ledger, TrailStatus::Refused, NOW + 1_000).await;
    let in_second = |s: i64| both.iter().filter(|e| e.at_ms / 1000 == s).count();
    assert_eq!(
        (in_second(NOW / 1000), in_second(NOW / 1000 + 1)),
        (BUDGET, BUDGET),
        "the next second has its own budget"
    );
    let expires = cfg.settings.trail_expires_at(NOW);
    for e in &first {
        assert_eq!(e.expires_at_ms, expires, "{e:?}");
        assert_eq!(e.source_ip.as_deref(), Some("203.0.113.9"));
    }
    if let Some(dynamo) = &backend.dynamo {
        support::aws::assert_trail_ttl(dynamo, first.iter().map(|e| e.id.as_str()), expires).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_refusals_from_many_instances_store_the_budget_per_second() {
    let clock = Arc::new(ManualClock::new(NOW));
    refusals_from_many_instances_store_the_budget_per_second(embedded(clock)).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_refusals_from_many_instances_store_the_budget_per_second() {
    refusals_from_many_instances_store_the_budget_per_second(aws().await).await;
}

/// Real envelopes of signed Stripe webhooks, as ingest queues them: `(id, amount)` each.
async fn envelopes(
    cfg: &Arc<Config>,
    clock: &Arc<ManualClock>,
    events: &[(u64, i64)],
) -> Vec<WorkerRecord> {
    let store = support::embedded::store(clock.clone());
    let queue = store.queue("q", None);
    let ingest = Ingest::new(
        cfg.clone(),
        Arc::new(queue.clone()),
        Arc::new(store.ledger()),
        clock.clone(),
    );
    for (n, amount) in events {
        let body = serde_json::json!({"id": format!("evt_replayed_{n}"), "object": "event",
            "type": "payment_intent.succeeded", "created": NOW / 1000,
            "data": {"object": {"amount": amount, "currency": "usd"}}})
        .to_string()
        .into_bytes();
        let headers = signed_headers(cfg, "stripe", &body, NOW, "d");
        let resp = ingest
            .handle(WebhookRequest {
                method: "POST".into(),
                path: "/webhooks/stripe".into(),
                headers,
                body,
                ..Default::default()
            })
            .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    let got = queue
        .receive(10, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(got.len(), events.len());
    // In the order asked for, told apart by amount.
    let amount = |m: &inlet::ports::ReceivedMessage| {
        let env = Envelope::from_json(&m.body).expect("an envelope");
        let body: serde_json::Value = serde_json::from_str(&env.body).expect("a JSON body");
        body["data"]["object"]["amount"].as_i64()
    };
    events
        .iter()
        .map(|(_, want)| {
            let m = got
                .iter()
                .find(|m| amount(m) == Some(*want))
                .expect("queued");
            WorkerRecord::from(m)
        })
        .collect()
}

/// The event is done: its key is completed with its body, as the worker leaves it.
async fn completed(ledger: &dyn Ledger, record: &WorkerRecord) -> Envelope {
    let env = Envelope::from_json(&record.body).expect("an envelope");
    ledger
        .begin(&BeginRequest {
            key: env.dedupe_key.clone(),
            source: env.source.clone(),
            body_sha256: env.body_sha256.clone(),
            provider_event_id: env.provider_event_id.clone(),
            event_type: env.event_type.clone(),
            via: env.via.as_str().to_owned(),
            received_at_ms: NOW,
            now_ms: NOW,
            lease_until_ms: NOW + 60_000,
            summary: EventSummary::default(),
        })
        .await
        .expect("begin");
    ledger
        .complete(&env.dedupe_key, NOW, NOW + 86_400_000, &Default::default())
        .await
        .expect("complete");
    env
}

/// `instances` workers, each processing `record` `each` times (a replayed request), all at once.
async fn replay(
    cfg: &Arc<Config>,
    ledger: &Arc<dyn Ledger>,
    clock: &Arc<ManualClock>,
    record: &WorkerRecord,
    instances: usize,
    each: usize,
) -> Vec<Outcome> {
    let mut running = tokio::task::JoinSet::new();
    for w in 0..instances {
        let worker = Worker::new(cfg.clone(), ledger.clone(), BTreeMap::new(), clock.clone());
        let record = record.clone();
        running.spawn(async move {
            let mut outcomes = Vec::new();
            for n in 0..each {
                let copy = WorkerRecord {
                    message_id: format!("copy-{w}-{n}"),
                    ..record.clone()
                };
                outcomes.extend(
                    worker
                        .process(&[copy])
                        .await
                        .outcomes
                        .into_iter()
                        .map(|(_, o)| o),
                );
            }
            outcomes
        });
    }
    let mut all = Vec::new();
    while let Some(done) = running.join_next().await {
        all.extend(done.expect("an instance panicked"));
    }
    all
}

async fn replays_store_bounded_duplicates_and_conflicts_and_every_first_conflict(
    backend: Backend,
    clock: Arc<ManualClock>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Arc::new(dev_config(dir.path(), |_| {}));
    let ledger = &backend.ledger;
    // Events a and b were delivered; a' and b' are other bodies under their ids.
    let recs = envelopes(&cfg, &clock, &[(1, 100), (1, 999), (2, 200), (2, 888)]).await;
    let (a, a_other, b, b_other) = (&recs[0], &recs[1], &recs[2], &recs[3]);
    let env_a = completed(&**ledger, a).await;
    let env_b = completed(&**ledger, b).await;

    let outcomes = replay(&cfg, ledger, &clock, a, 6, 30).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Duplicate { .. })),
        "{outcomes:?}"
    );
    assert_eq!(
        entries(&**ledger, TrailStatus::Duplicate, NOW).await.len(),
        BUDGET,
        "6 workers × 30 copies of one captured request"
    );

    let outcomes = replay(&cfg, ledger, &clock, a_other, 6, 30).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Conflict { .. })),
        "{outcomes:?}"
    );
    let conflicts = entries(&**ledger, TrailStatus::Conflict, NOW).await;
    assert_eq!(
        conflicts.len(),
        BUDGET + 1,
        "the key's first conflict, and the budget's worth of the others"
    );

    // b's first conflict comes in the same second, with every conflict slot taken.
    let outcomes = replay(&cfg, ledger, &clock, b_other, 1, 1).await;
    assert!(
        matches!(outcomes.as_slice(), [Outcome::Conflict { .. }]),
        "{outcomes:?}"
    );
    let conflicts = entries(&**ledger, TrailStatus::Conflict, NOW).await;
    assert_eq!(conflicts.len(), BUDGET + 2);
    let of = |key: &str| {
        conflicts
            .iter()
            .filter(|e| e.dedupe_key.as_deref() == Some(key))
            .count()
    };
    assert_eq!(
        (of(&env_a.dedupe_key), of(&env_b.dedupe_key)),
        (BUDGET + 1, 1)
    );
    assert!(conflicts
        .iter()
        .all(|e| e.expires_at_ms == cfg.settings.trail_expires_at(NOW)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_replays_store_bounded_duplicates_and_conflicts_and_every_first_conflict() {
    let clock = Arc::new(ManualClock::new(NOW));
    replays_store_bounded_duplicates_and_conflicts_and_every_first_conflict(
        embedded(clock.clone()),
        clock,
    )
    .await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_replays_store_bounded_duplicates_and_conflicts_and_every_first_conflict() {
    replays_store_bounded_duplicates_and_conflicts_and_every_first_conflict(
        aws().await,
        Arc::new(ManualClock::new(NOW)),
    )
    .await;
}
