//! Delayed checks through the whole local pipeline: a fake JSON API on loopback (it counts
//! requests), webhooks into the `custom` source, the worker scheduling and satisfying checks,
//! and the check runner firing them from the embedded checks queue. Time is a `ManualClock`:
//! the checks queue's delays end when the test moves it, nothing sleeps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::Router;
use inlet::checks::{CheckOutcome, CheckScheduler};
use inlet::config::{CheckSpec, PollSpec};
use inlet::ports::{
    check_key, CheckRecord, CheckStatus, CheckStore, CheckStoreError, Clock, OutboundMessage,
    Queue, QueueError, ReceivedMessage, Scheduled, TrailRow, TrailStatus, WorkerRecord,
};
use inlet::targets::Target;
use inlet::worker::Outcome;
use inlet::worker::Worker;

use crate::pipeline::{jsonl_keys, Running};

/// A back office's `/events?after=<id>`: items after the id, oldest first.
#[derive(Default)]
struct Api {
    items: Mutex<Vec<serde_json::Value>>,
    requests: Mutex<u32>,
}

fn event(id: &str, ty: &str, player: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "type": ty, "player": player, "amount": 500, "currency": "EUR"})
}

async fn list_events(
    State(api): State<Arc<Api>>,
    RawQuery(query): RawQuery,
) -> ([(&'static str, &'static str); 1], String) {
    *api.requests.lock().expect("lock") += 1;
    let after = form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "after")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let items: Vec<_> = api
        .items
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e["id"].as_str().unwrap_or("") > after.as_str())
        .cloned()
        .collect();
    (
        [("content-type", "application/json")],
        serde_json::json!({ "data": items }).to_string(),
    )
}

async fn fake_api() -> (Arc<Api>, String) {
    let api = Arc::new(Api::default());
    let app = Router::new()
        .route("/events", get(list_events))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (api, base)
}

/// The `custom` source (generic provider: id `/id`, type `/type`, entity `/player`) polled
/// from the fake API, with one check: a deposit created must settle or fail within `after`.
async fn running(base: &str, after: &str) -> Running {
    let (base, after) = (base.to_owned(), after.to_owned());
    Running::start(move |doc| {
        let custom = doc
            .sources
            .iter_mut()
            .find(|s| s.id == "custom")
            .expect("custom source");
        custom.poll = Some(PollSpec {
            kind: "http_json".into(),
            every: "1h".into(),
            secrets: Vec::new(),
            max_requests_per_run: 20,
            max_requests_per_minute: 6000,
            reconcile: false,
            options: Some(serde_json::json!({
                "url": format!("{base}/events?after={{cursor}}"),
                "auth": {"kind": "none"},
                "items_pointer": "/data",
                "id_pointer": "/id",
                "cursor": {"kind": "item_field", "pointer": "/id"},
            })),
        });
        custom.checks = vec![CheckSpec {
            name: "deposit-settles".into(),
            on: vec!["deposit.created".into()],
            expect: vec!["deposit.settled".into(), "deposit.failed".into()],
            after,
            poll: None,
        }];
    })
    .await
}

impl Running {
    async fn webhook(&self, e: &serde_json::Value) {
        let (status, body) = self.post_signed("custom", e.to_string().as_bytes()).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn check(&self, entity: &str) -> Option<CheckRecord> {
        self.stack
            .store
            .ledger()
            .get_check(&check_key("custom", "deposit-settles", entity))
            .await
            .expect("get check")
    }

    fn check_reasons(trail: &[TrailRow]) -> Vec<String> {
        trail
            .iter()
            .filter_map(|r| match r {
                TrailRow::Entry(e) if e.status == TrailStatus::Check => e.reason.clone(),
                _ => None,
            })
            .collect()
    }

    fn advance_secs(&self, s: i64) {
        self.clock.advance_ms(s * 1000);
    }
}

fn http() -> Arc<inlet::adapters::http_client::ReqwestHttp> {
    Arc::new(inlet::adapters::http_client::ReqwestHttp::new(1 << 20).expect("http"))
}

#[tokio::test]
async fn an_expected_event_in_time_satisfies_the_check_and_no_poll_runs() {
    let (api, base) = fake_api().await;
    let run = running(&base, "2m").await;
    let runner = run.stack.check_runner(http(), "test-checks");

    run.webhook(&event("e001", "deposit.created", "p-7")).await;
    // The provider retries the same delivery, and a second deposit of the same player
    // comes: one check per player, one message.
    run.webhook(&event("e001", "deposit.created", "p-7")).await;
    run.webhook(&event("e002", "deposit.created", "p-7")).await;
    let outcomes = run.drain().await;
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Dispatched { .. }))
            .count(),
        2,
        "{outcomes:?}"
    );
    let scheduled = run.check("p-7").await.expect("check scheduled");
    assert_eq!(
        (scheduled.status, scheduled.on_event.as_str()),
        (CheckStatus::Pending, "custom#e001")
    );
    let counts = run.stack.checks_queue.counts().expect("counts");
    assert_eq!(
        (counts.delayed, counts.visible),
        (1, 0),
        "one delayed message"
    );

    // Not due: nothing to receive yet.
    assert!(run
        .stack
        .fire_checks_once(&runner, std::time::Duration::ZERO)
        .await
        .expect("fire")
        .is_empty());

    run.webhook(&event("e003", "deposit.settled", "p-7")).await;
    run.drain().await;
    let satisfied = run.check("p-7").await.expect("check");
    assert_eq!(
        (satisfied.status, satisfied.satisfied_by.as_deref()),
        (CheckStatus::Satisfied, Some("custom#e003"))
    );

    run.advance_secs(121);
    let fired = run
        .stack
        .fire_checks_once(&runner, std::time::Duration::ZERO)
        .await
        .expect("fire");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].1, CheckOutcome::Satisfied);
    assert_eq!(*api.requests.lock().expect("lock"), 0, "no poll ran");
    let reasons = Running::check_reasons(&run.trail().await);
    assert_eq!(
        reasons,
        vec!["deposit-settles satisfied by custom#e003; no poll".to_owned()]
    );
    assert_eq!(run.stack.checks_queue.counts().expect("counts").visible, 0);
}

#[tokio::test]
async fn a_missing_event_is_recovered_by_the_poll_when_the_check_comes_due() {
    let (api, base) = fake_api().await;
    // Longer than SQS's 15-minute delay ceiling: the message comes back once, deferred.
    let run = running(&base, "20m").await;
    let runner = run.stack.check_runner(http(), "test-checks");

    // The provider has both events; the webhook of the settlement is lost.
    for e in [
        event("e001", "deposit.created", "p-9"),
        event("e002", "deposit.settled", "p-9"),
    ] {
        api.items.lock().expect("lock").push(e);
    }
    run.webhook(&event("e001", "deposit.created", "p-9")).await;
    // A player whose deposit never settles, even at the provider.
    run.webhook(&event("e010", "deposit.created", "p-3")).await;
    // The API knows e010 too (it was created); nothing settles it.
    api.items
        .lock()
        .expect("lock")
        .push(event("e010", "deposit.created", "p-3"));
    assert_eq!(run.drain().await.len(), 2);

    run.advance_secs(900);
    let first = run
        .stack
        .fire_checks_once(&runner, std::time::Duration::ZERO)
        .await
        .expect("fire");
    assert_eq!(
        first.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>(),
        vec![CheckOutcome::Deferred { delay_seconds: 300 }; 2],
        "not due at 15 minutes: sent again for the remaining 5"
    );
    assert_eq!(*api.requests.lock().expect("lock"), 0);

    run.advance_secs(300);
    let mut fired: Vec<CheckOutcome> = Vec::new();
    // Both messages are visible now; the runner takes them in one receive or two.
    while fired.len() < 2 {
        let batch = run
            .stack
            .fire_checks_once(&runner, std::time::Duration::ZERO)
            .await
            .expect("fire");
        assert!(!batch.is_empty(), "both checks are due");
        fired.extend(batch.into_iter().map(|(_, o)| o));
    }
    assert!(
        fired
            .iter()
            .all(|o| matches!(o, CheckOutcome::Fired { .. })),
        "{fired:?}"
    );
    assert!(*api.requests.lock().expect("lock") >= 1, "the poll ran");

    // The poll queued the lost settlement (and copies of what came by webhook).
    let outcomes = run.drain().await;
    let dispatched: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Dispatched { dedupe_key } => Some(dedupe_key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(dispatched, vec!["custom#e002"], "{outcomes:?}");
    let keys = jsonl_keys(&run.jsonl());
    assert_eq!(
        keys.iter().filter(|k| *k == "custom#e002").count(),
        1,
        "the recovered event is dispatched once"
    );

    let p9 = run.check("p-9").await.expect("check");
    let p3 = run.check("p-3").await.expect("check");
    assert_eq!(
        (p9.status, p3.status),
        (CheckStatus::Fired, CheckStatus::Fired)
    );
    let mut reasons = Running::check_reasons(&run.trail().await);
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("deposit-settles fired for entity p-3:")
            && reasons[0].ends_with("the expected event is still missing"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("deposit-settles fired for entity p-9:")
            && reasons[1].ends_with("the expected event came with this poll"),
        "{reasons:?}"
    );

    // A copy of a fired check's message finds it closed and does nothing.
    assert!(run
        .stack
        .fire_checks_once(&runner, std::time::Duration::ZERO)
        .await
        .expect("fire")
        .is_empty());
}

#[tokio::test]
async fn a_due_check_whose_source_is_being_polled_is_deferred_not_failed() {
    let (api, base) = fake_api().await;
    let run = running(&base, "1m").await;
    let runner = run.stack.check_runner(http(), "test-checks");
    run.webhook(&event("e001", "deposit.created", "p-1")).await;
    run.drain().await;
    // The scheduled run holds the source's lease right now.
    let now = run.clock.now_ms();
    let store = run.stack.store.ledger();
    assert!(matches!(
        inlet::ports::PollStore::acquire(&store, "custom", "scheduled-run", now, now + 600_000)
            .await
            .expect("acquire"),
        inlet::ports::Acquire::Acquired(_)
    ));
    run.advance_secs(60);
    let fired = run
        .stack
        .fire_checks_once(&runner, std::time::Duration::ZERO)
        .await
        .expect("fire");
    assert_eq!(
        fired.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
        vec![CheckOutcome::Deferred { delay_seconds: 60 }]
    );
    assert_eq!(*api.requests.lock().expect("lock"), 0);
    assert_eq!(
        run.check("p-1").await.expect("check").status,
        CheckStatus::Pending
    );
    let counts = run.stack.checks_queue.counts().expect("counts");
    assert_eq!(
        (counts.delayed, counts.visible, counts.in_flight),
        (1, 0, 0)
    );
}

/// The checks queue, failing its next send when armed, counting every send.
struct FlakyChecksQueue {
    inner: inlet::adapters::embedded::SqliteQueue,
    fail_next: Mutex<bool>,
    sends: Mutex<u32>,
}

#[async_trait::async_trait]
impl Queue for FlakyChecksQueue {
    async fn send(&self, message: &OutboundMessage) -> Result<String, QueueError> {
        *self.sends.lock().expect("lock") += 1;
        if std::mem::take(&mut *self.fail_next.lock().expect("lock")) {
            return Err(QueueError::Backend("SendMessage timed out".into()));
        }
        self.inner.send(message).await
    }
    async fn send_batch(
        &self,
        messages: &[OutboundMessage],
    ) -> Result<Vec<Result<String, QueueError>>, QueueError> {
        self.inner.send_batch(messages).await
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

/// The check store, counting every call.
struct CountingStore {
    inner: inlet::adapters::embedded::SqliteLedger,
    calls: Mutex<u32>,
}

impl CountingStore {
    fn count(&self) {
        *self.calls.lock().expect("lock") += 1;
    }
}

#[async_trait::async_trait]
impl CheckStore for CountingStore {
    async fn schedule(
        &self,
        check: &CheckRecord,
        now_ms: i64,
    ) -> Result<Scheduled, CheckStoreError> {
        self.count();
        self.inner.schedule(check, now_ms).await
    }
    async fn satisfy(&self, key: &str, by: &str, now_ms: i64) -> Result<bool, CheckStoreError> {
        self.count();
        self.inner.satisfy(key, by, now_ms).await
    }
    async fn get_check(&self, key: &str) -> Result<Option<CheckRecord>, CheckStoreError> {
        self.count();
        self.inner.get_check(key).await
    }
    async fn finish(&self, key: &str, outcome: &str, now_ms: i64) -> Result<bool, CheckStoreError> {
        self.count();
        self.inner.finish(key, outcome, now_ms).await
    }
}

#[tokio::test]
async fn a_check_that_cannot_be_scheduled_retries_its_event_and_sources_without_checks_cost_nothing(
) {
    let (_api, base) = fake_api().await;
    let run = running(&base, "2m").await;
    let queue = Arc::new(FlakyChecksQueue {
        inner: run.stack.checks_queue.clone(),
        fail_next: Mutex::new(true),
        sends: Mutex::new(0),
    });
    let store = Arc::new(CountingStore {
        inner: run.stack.store.ledger(),
        calls: Mutex::new(0),
    });
    let file =
        inlet::targets::jsonl::JsonlTarget::open("file".into(), &run.jsonl()).expect("jsonl");
    let mut targets: BTreeMap<String, Arc<dyn Target>> = BTreeMap::new();
    targets.insert("file".into(), Arc::new(file));
    let worker = Worker::new(
        run.stack.config.clone(),
        Arc::new(run.stack.store.ledger()),
        targets,
        run.clock.clone(),
    )
    .with_checks(CheckScheduler::new(store.clone(), queue.clone()));
    let next_record = || async {
        let mut msgs = run
            .stack
            .queue
            .receive(1, Duration::from_secs(180), Duration::ZERO)
            .await
            .expect("receive");
        let m = msgs.pop().expect("a message");
        WorkerRecord {
            message_id: m.message_id,
            body: m.body,
            receive_count: m.receive_count,
            receipt_handle: Some(m.receipt_handle),
            group_id: m.group_id,
        }
    };

    run.webhook(&event("e001", "deposit.created", "p-5")).await;
    let record = next_record().await;
    let first = worker.process(std::slice::from_ref(&record)).await;
    assert!(
        matches!(&first.outcomes[0].1, Outcome::Failed { error, .. } if error.starts_with("delayed check not scheduled")),
        "{first:?}"
    );
    let counts = run.stack.checks_queue.counts().expect("counts");
    assert_eq!(counts.delayed + counts.visible, 0, "no check message left");
    assert!(
        jsonl_keys(&run.jsonl()).is_empty(),
        "checks are scheduled before delivery: nothing was delivered yet"
    );
    // The retry (the same message, received again) schedules the check and delivers.
    let retry = WorkerRecord {
        receive_count: 2,
        ..record
    };
    let second = worker.process(&[retry]).await;
    assert_eq!(
        second.outcomes[0].1,
        Outcome::Dispatched {
            dedupe_key: "custom#e001".into()
        }
    );
    assert_eq!(run.stack.checks_queue.counts().expect("counts").delayed, 1);
    assert_eq!(
        jsonl_keys(&run.jsonl()),
        vec!["custom#e001"],
        "written once"
    );

    // Another source has no checks: dispatching its event makes no check call at all.
    let (calls, sends) = (
        *store.calls.lock().expect("lock"),
        *queue.sends.lock().expect("lock"),
    );
    let (status, _) = run
        .post_signed("stripe", &crate::pipeline::sample_body("stripe", 777))
        .await;
    assert_eq!(status, 200);
    let out = worker.process(&[next_record().await]).await;
    assert!(
        matches!(out.outcomes[0].1, Outcome::Dispatched { .. }),
        "{out:?}"
    );
    assert_eq!(*store.calls.lock().expect("lock"), calls);
    assert_eq!(*queue.sends.lock().expect("lock"), sends);
}
