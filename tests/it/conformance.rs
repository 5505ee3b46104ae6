//! One suite, two backends: every case is a plain async fn over the ports (`Queue`,
//! `Ledger`, `EventBus`), run once on the embedded SQLite adapters (`embedded_*`) and once on
//! the AWS adapters against moto (`aws_*`). A case that passes on one and fails on the other
//! is a parity bug in an adapter, not a flaky test.
//!
//! Time: the embedded backend runs on a `ManualClock` the case advances; moto runs on the
//! wall clock, so there a case long-polls until the condition holds, within a bound. No case
//! sleeps a fixed time. Ledger cases pass time explicitly (`now_ms`), like the domain does.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use inlet::ports::{
    check_key, get_blob, put_blob, Acquire, BeginOutcome, BeginRequest, BlobError, BlobKind,
    BlobRef, BlobStore, BusEvent, CheckRecord, CheckStatus, CheckStore, DedupeStatus, EventBus,
    EventSummary, Ledger, LedgerError, Lookup, ManualClock, OutboundMessage, PollStore,
    PollStoreError, PublishResult, Queue, ReceivedMessage, Scheduled, TrailEntry, TrailQuery,
    TrailRow, TrailStatus,
};

use crate::support::{aws, embedded};

// ---------------------------------------------------------------------------------------
// Fixtures

/// How time passes for a backend.
#[derive(Clone)]
pub enum Time {
    /// moto: the wall clock. Waiting is a bounded series of 1 s long polls.
    Wall,
    /// embedded: a clock that moves only when the case says so.
    Manual(Arc<ManualClock>),
}

impl Time {
    /// The `wait` for a receive that waits on a condition.
    fn poll_wait(&self) -> Duration {
        match self {
            Time::Wall => Duration::from_secs(1),
            Time::Manual(_) => Duration::ZERO,
        }
    }

    /// How many polls before a condition counts as never reached (≈ 15 s on the wall).
    fn polls(&self) -> usize {
        match self {
            Time::Wall => 15,
            Time::Manual(_) => 10,
        }
    }

    /// Let `d` pass: advance the manual clock; the wall clock moves on its own.
    fn pass(&self, d: Duration) {
        if let Time::Manual(clock) = self {
            clock.advance_ms(d.as_millis() as i64);
        }
    }
}

/// A main queue that redrives to `dlq` after `MAX_RECEIVES` receives.
pub struct Queues {
    pub main: Box<dyn Queue>,
    pub dlq: Box<dyn Queue>,
    pub time: Time,
}

const MAX_RECEIVES: u32 = 3;

async fn aws_queues() -> Queues {
    let q = aws::queues_with_dlq(MAX_RECEIVES).await;
    Queues {
        main: Box::new(q.main),
        dlq: Box::new(q.dlq),
        time: Time::Wall,
    }
}

fn embedded_queues() -> Queues {
    let clock = Arc::new(ManualClock::new(T0));
    let (main, dlq) = embedded::queues_with_dlq(clock.clone(), MAX_RECEIVES);
    Queues {
        main,
        dlq,
        time: Time::Manual(clock),
    }
}

async fn aws_ledger() -> Box<dyn Ledger> {
    Box::new(aws::ledger().await)
}

fn embedded_ledger() -> Box<dyn Ledger> {
    embedded::ledger(Arc::new(ManualClock::new(T0)))
}

async fn aws_poll_store() -> Box<dyn PollStore> {
    Box::new(aws::ledger().await)
}

fn embedded_poll_store() -> Box<dyn PollStore> {
    Box::new(embedded::store(Arc::new(ManualClock::new(T0))).ledger())
}

async fn aws_bus() -> Box<dyn EventBus> {
    Box::new(aws::bus().await)
}

fn embedded_bus() -> Box<dyn EventBus> {
    embedded::bus(Arc::new(ManualClock::new(T0)))
}

/// Any fixed instant: ledger cases pass time explicitly.
const T0: i64 = 1_700_000_000_000;
const LEASE_MS: i64 = 30_000;
const VISIBLE_NOW: Duration = Duration::ZERO;
const HIDDEN: Duration = Duration::from_secs(30);

/// Receive until a message comes, letting `step` pass between empty polls.
async fn receive_eventually(
    queue: &dyn Queue,
    time: &Time,
    visibility: Duration,
    step: Duration,
) -> ReceivedMessage {
    for _ in 0..time.polls() {
        let mut got = queue
            .receive(1, visibility, time.poll_wait())
            .await
            .expect("receive");
        if let Some(m) = got.pop() {
            assert!(got.is_empty(), "receive(1) returned more than one message");
            return m;
        }
        time.pass(step);
    }
    panic!("no message became visible within {} polls", time.polls());
}

/// Receive until `n` messages have come (hidden for `HIDDEN` once received).
async fn receive_all(queue: &dyn Queue, time: &Time, n: usize) -> Vec<ReceivedMessage> {
    let mut all = Vec::new();
    for _ in 0..time.polls() {
        all.extend(
            queue
                .receive(10, HIDDEN, time.poll_wait())
                .await
                .expect("receive"),
        );
        if all.len() >= n {
            assert_eq!(all.len(), n, "more messages than were sent");
            return all;
        }
    }
    panic!("only {} of {n} messages arrived", all.len());
}

async fn assert_empty(queue: &dyn Queue, time: &Time, visibility: Duration) {
    let got = queue
        .receive(10, visibility, time.poll_wait())
        .await
        .expect("receive");
    assert!(got.is_empty(), "expected no visible message, got {got:?}");
}

fn ok_ids(results: Vec<Result<String, inlet::ports::QueueError>>) -> Vec<String> {
    results
        .into_iter()
        .map(|r| r.expect("entry accepted"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Queue

async fn send_receive_delete(q: &Queues) {
    let id = q
        .main
        .send(&OutboundMessage::new(r#"{"n":1}"#))
        .await
        .expect("send");

    // Visibility 0: were the delete to fail, the message would be visible again at once.
    let m = receive_eventually(&*q.main, &q.time, VISIBLE_NOW, Duration::ZERO).await;
    assert_eq!(m.message_id, id);
    assert_eq!(m.body, r#"{"n":1}"#);
    assert_eq!(m.receive_count, 1);
    assert!(
        m.sent_at_ms > 0,
        "sent_at_ms is a unix time: {}",
        m.sent_at_ms
    );
    assert!(!m.receipt_handle.is_empty());

    q.main.delete(&m.receipt_handle).await.expect("delete");
    assert_empty(&*q.main, &q.time, VISIBLE_NOW).await;
}

async fn send_batch_returns_one_id_per_entry(q: &Queues) {
    let bodies = ["a", "b", "c"];
    let messages: Vec<_> = bodies.iter().map(|b| OutboundMessage::new(*b)).collect();
    let ids = ok_ids(q.main.send_batch(&messages).await.expect("send_batch"));
    assert_eq!(ids.len(), 3);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        3,
        "ids are distinct: {ids:?}"
    );

    let received: HashMap<String, String> = receive_all(&*q.main, &q.time, 3)
        .await
        .into_iter()
        .map(|m| (m.message_id, m.body))
        .collect();
    for (id, body) in ids.iter().zip(bodies) {
        assert_eq!(
            received.get(id).map(String::as_str),
            Some(body),
            "entry {body} maps to id {id}"
        );
    }
}

async fn send_batch_of_more_than_ten_is_refused(q: &Queues) {
    let messages: Vec<_> = (0..11)
        .map(|i| OutboundMessage::new(i.to_string()))
        .collect();
    assert!(q.main.send_batch(&messages).await.is_err());
    assert!(q
        .main
        .send_batch(&[])
        .await
        .expect("an empty batch")
        .is_empty());
}

async fn received_message_is_hidden_then_reappears(q: &Queues) {
    let id = q
        .main
        .send(&OutboundMessage::new("hide me"))
        .await
        .expect("send");
    let visibility = Duration::from_secs(2);

    let first = receive_eventually(&*q.main, &q.time, visibility, Duration::ZERO).await;
    assert_eq!(first.message_id, id);
    let hidden = q
        .main
        .receive(10, visibility, Duration::ZERO)
        .await
        .expect("receive");
    assert!(
        hidden.is_empty(),
        "hidden during its visibility timeout: {hidden:?}"
    );

    let again = receive_eventually(&*q.main, &q.time, visibility, Duration::from_secs(1)).await;
    assert_eq!(again.message_id, id);
    assert_eq!(again.receive_count, 2);
}

async fn receive_count_increments(q: &Queues) {
    q.main
        .send(&OutboundMessage::new("count me"))
        .await
        .expect("send");
    for expected in 1..=MAX_RECEIVES {
        let m = receive_eventually(&*q.main, &q.time, VISIBLE_NOW, Duration::ZERO).await;
        assert_eq!(m.receive_count, expected);
    }
}

async fn message_moves_to_dlq_after_max_receives(q: &Queues) {
    let id = q
        .main
        .send(&OutboundMessage::new("poison"))
        .await
        .expect("send");
    for expected in 1..=MAX_RECEIVES {
        let m = receive_eventually(&*q.main, &q.time, VISIBLE_NOW, Duration::ZERO).await;
        assert_eq!(
            (m.message_id.as_str(), m.receive_count),
            (id.as_str(), expected)
        );
    }
    // The receive after the last allowed one finds it over the limit and redrives it.
    assert_empty(&*q.main, &q.time, VISIBLE_NOW).await;

    let dead = receive_eventually(&*q.dlq, &q.time, HIDDEN, Duration::ZERO).await;
    assert_eq!(dead.body, "poison");
    assert_empty(&*q.main, &q.time, VISIBLE_NOW).await;
}

async fn change_visibility_to_zero_makes_it_visible(q: &Queues) {
    let id = q
        .main
        .send(&OutboundMessage::new("retry now"))
        .await
        .expect("send");
    let m = receive_eventually(&*q.main, &q.time, HIDDEN, Duration::ZERO).await;
    let hidden = q
        .main
        .receive(10, HIDDEN, Duration::ZERO)
        .await
        .expect("receive");
    assert!(hidden.is_empty(), "hidden for 30 s: {hidden:?}");

    q.main
        .change_visibility(&m.receipt_handle, Duration::ZERO)
        .await
        .expect("change_visibility");
    let again = receive_eventually(&*q.main, &q.time, HIDDEN, Duration::ZERO).await;
    assert_eq!(again.message_id, id);
}

async fn move_to_moves_dead_letters_back(q: &Queues) {
    for body in ["d1", "d2", "d3"] {
        q.dlq
            .send(&OutboundMessage::new(body))
            .await
            .expect("send to the DLQ");
    }
    let moved = q.dlq.move_to(&*q.main, 10).await.expect("move_to");
    assert_eq!(moved, 3);

    let mut bodies: Vec<_> = receive_all(&*q.main, &q.time, 3)
        .await
        .into_iter()
        .map(|m| m.body)
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["d1", "d2", "d3"]);
    // Deleted from the DLQ, not merely hidden: with visibility 0 they would show at once.
    assert_empty(&*q.dlq, &q.time, VISIBLE_NOW).await;
}

// ---------------------------------------------------------------------------------------
// Ledger

fn begin_request(key: &str, body_sha256: &str, now_ms: i64) -> BeginRequest {
    BeginRequest {
        key: key.to_owned(),
        source: "stripe-live".to_owned(),
        body_sha256: body_sha256.to_owned(),
        provider_event_id: Some("evt_1".to_owned()),
        event_type: Some("payment_intent.succeeded".to_owned()),
        via: "webhook".to_owned(),
        received_at_ms: now_ms,
        now_ms,
        lease_until_ms: now_ms + LEASE_MS,
        summary: summary(),
    }
}

fn summary() -> EventSummary {
    EventSummary {
        canonical_type: Some("payment.succeeded".to_owned()),
        entity: Some("cus_42".to_owned()),
        object_id: Some("pi_42".to_owned()),
        caller_ip: Some("203.0.113.9".to_owned()),
        amount: Some(2000),
        currency: Some("USD".to_owned()),
        key_id: Some("current".to_owned()),
        request_key: Some(format!("requests/{}", "ab".repeat(32))),
    }
}

fn held(outcome: BeginOutcome) -> inlet::ports::DedupeRecord {
    match outcome {
        BeginOutcome::Held(record) => record,
        other => panic!("expected Held, got {other:?}"),
    }
}

async fn begin_new_key_acquires_first_attempt(ledger: &dyn Ledger) {
    let req = begin_request("stripe-live#evt_1", "h1", T0);
    assert_eq!(ledger.begin(&req).await.expect("begin"), taken(1, &[]));

    let r = ledger
        .get(&req.key)
        .await
        .expect("get")
        .expect("the record exists");
    assert_eq!(r.key, req.key);
    assert_eq!(r.source, req.source);
    assert_eq!(r.status, DedupeStatus::InProgress);
    assert_eq!(r.body_sha256, "h1");
    assert_eq!(r.summary, summary(), "the trail summary round-trips");
    assert_eq!(r.provider_event_id, req.provider_event_id);
    assert_eq!(r.event_type, req.event_type);
    assert_eq!(r.via, "webhook");
    assert_eq!(r.received_at_ms, T0);
    assert_eq!(r.updated_at_ms, T0);
    assert_eq!(r.lease_until_ms, T0 + LEASE_MS);
    assert_eq!(r.expires_at_ms, None);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.last_error, None);
    assert!(!r.dead);

    assert_eq!(
        ledger.get("stripe-live#evt_unknown").await.expect("get"),
        None
    );
}

async fn begin_while_lease_is_live_is_held_in_progress(ledger: &dyn Ledger) {
    let key = "k-live-lease";
    ledger
        .begin(&begin_request(key, "h1", T0))
        .await
        .expect("begin");
    let r = held(
        ledger
            .begin(&begin_request(key, "h1", T0 + 1_000))
            .await
            .expect("begin again"),
    );
    assert_eq!(r.status, DedupeStatus::InProgress);
    assert_eq!(r.body_sha256, "h1");
    assert_eq!(r.lease_until_ms, T0 + LEASE_MS);
    assert_eq!(r.attempts, 1);
}

async fn begin_after_complete_is_held_completed(ledger: &dyn Ledger) {
    let key = "k-completed";
    ledger
        .begin(&begin_request(key, "h1", T0))
        .await
        .expect("begin");
    ledger
        .complete(key, T0 + 1_000, T0 + 86_400_000, &targets(&[]))
        .await
        .expect("complete");

    // Even once the lease has lapsed: a completed record deduplicates until it expires.
    let r = held(
        ledger
            .begin(&begin_request(key, "h1", T0 + 2 * LEASE_MS))
            .await
            .expect("begin again"),
    );
    assert_eq!(r.status, DedupeStatus::Completed);
    assert_eq!(r.expires_at_ms, Some(T0 + 86_400_000));
    assert_eq!(r.updated_at_ms, T0 + 1_000);
}

async fn begin_with_other_body_is_held_with_the_holders_hash(ledger: &dyn Ledger) {
    let key = "k-conflict";
    ledger
        .begin(&begin_request(key, "h1", T0))
        .await
        .expect("begin");
    let r = held(
        ledger
            .begin(&begin_request(key, "h2", T0 + 1_000))
            .await
            .expect("live lease"),
    );
    assert_eq!(r.body_sha256, "h1");

    // A lapsed lease or a failure frees the key only for the same body.
    let r = held(
        ledger
            .begin(&begin_request(key, "h2", T0 + 2 * LEASE_MS))
            .await
            .expect("lapsed lease"),
    );
    assert_eq!(
        (r.body_sha256.as_str(), r.status),
        ("h1", DedupeStatus::InProgress)
    );
    ledger
        .fail(key, T0 + 1_000, "boom", false)
        .await
        .expect("fail");
    let r = held(
        ledger
            .begin(&begin_request(key, "h2", T0 + 2_000))
            .await
            .expect("failed"),
    );
    assert_eq!(
        (r.body_sha256.as_str(), r.status),
        ("h1", DedupeStatus::Failed)
    );
}

async fn begin_after_expiry_acquires(ledger: &dyn Ledger) {
    let key = "k-expired";
    ledger
        .begin(&begin_request(key, "h1", T0))
        .await
        .expect("begin");
    ledger
        .complete(key, T0 + 1_000, T0 + 5_000, &targets(&["bus"]))
        .await
        .expect("complete");

    // Not yet expired at the instant itself (expires_at < now is the rule).
    held(
        ledger
            .begin(&begin_request(key, "h1", T0 + 5_000))
            .await
            .expect("at expiry"),
    );
    // Past it the key is free, whatever the body, for a new cycle: counting from 1 again,
    // no target delivered yet.
    let outcome = ledger
        .begin(&begin_request(key, "h2", T0 + 5_001))
        .await
        .expect("after expiry");
    assert_eq!(outcome, taken(1, &[]));

    let r = ledger.get(key).await.expect("get").expect("exists");
    assert_eq!(r.status, DedupeStatus::InProgress);
    assert_eq!(r.body_sha256, "h2");
    assert_eq!(r.expires_at_ms, None, "a re-taken key no longer expires");
    assert_eq!((r.attempts, r.delivered), (1, targets(&[])));
}

fn targets(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|t| t.to_string()).collect()
}

fn taken(attempts: u32, delivered: &[&str]) -> BeginOutcome {
    BeginOutcome::Acquired {
        attempts,
        delivered: targets(delivered),
    }
}

/// What a holder marks comes back to the next holder of the same event — after a failure and
/// after a lapsed lease — and completion adds its own targets to them.
async fn delivered_targets_come_back_to_the_next_holder(ledger: &dyn Ledger) {
    let key = "k-delivered";
    ledger
        .begin(&begin_request(key, "h1", T0))
        .await
        .expect("begin");
    ledger
        .mark_delivered(key, "bus", T0 + 10)
        .await
        .expect("mark");
    ledger
        .mark_delivered(key, "bus", T0 + 11)
        .await
        .expect("marking twice is marking once");
    let r = ledger.get(key).await.expect("get").expect("exists");
    assert_eq!(
        (r.status, r.delivered, r.updated_at_ms),
        (DedupeStatus::InProgress, targets(&["bus"]), T0 + 11)
    );
    ledger
        .fail(key, T0 + 20, "target hook answered HTTP 503", false)
        .await
        .expect("fail");
    assert_eq!(
        ledger
            .begin(&begin_request(key, "h1", T0 + 30))
            .await
            .expect("retry"),
        taken(2, &["bus"])
    );
    ledger
        .mark_delivered(key, "queue", T0 + 40)
        .await
        .expect("mark");
    // That holder dies; the next one, once the lease lapsed, skips both.
    assert_eq!(
        ledger
            .begin(&begin_request(key, "h1", T0 + 30 + LEASE_MS + 1))
            .await
            .expect("after the lease"),
        taken(3, &["bus", "queue"])
    );
    ledger
        .complete(key, T0 + 50_000, T0 + 86_400_000, &targets(&["hook"]))
        .await
        .expect("complete");
    let r = ledger.get(key).await.expect("get").expect("exists");
    assert_eq!(
        (r.status, r.delivered),
        (DedupeStatus::Completed, targets(&["bus", "hook", "queue"]))
    );
}

/// Only the holder marks: a missing, failed or completed record is refused and left as it is.
async fn mark_delivered_needs_the_record_in_progress(ledger: &dyn Ledger) {
    let err = ledger
        .mark_delivered("k-unmarked", "bus", T0)
        .await
        .expect_err("missing");
    assert!(
        matches!(err, LedgerError::NotFound(ref k) if k == "k-unmarked"),
        "{err:?}"
    );
    assert_eq!(ledger.get("k-unmarked").await.expect("get"), None);

    ledger
        .begin(&begin_request("k-mark-failed", "h1", T0))
        .await
        .expect("begin");
    ledger
        .fail("k-mark-failed", T0 + 1, "boom", false)
        .await
        .expect("fail");
    ledger
        .begin(&begin_request("k-mark-done", "h1", T0))
        .await
        .expect("begin");
    ledger
        .complete("k-mark-done", T0 + 1, T0 + 86_400_000, &targets(&["bus"]))
        .await
        .expect("complete");
    for key in ["k-mark-failed", "k-mark-done"] {
        let before = ledger.get(key).await.expect("get").expect("exists");
        let err = ledger
            .mark_delivered(key, "queue", T0 + 2)
            .await
            .expect_err("not held");
        assert!(
            matches!(err, LedgerError::NotHeld(ref k) if k == key),
            "{key}: {err:?}"
        );
        assert_eq!(
            ledger.get(key).await.expect("get").expect("exists"),
            before,
            "{key} unchanged"
        );
    }
}

async fn begin_after_failure_with_same_body_acquires_second_attempt(ledger: &dyn Ledger) {
    let key = "k-failed";
    ledger
        .begin(&begin_request(key, "h1", T0))
        .await
        .expect("begin");
    ledger
        .fail(key, T0 + 1_000, "target answered 503", false)
        .await
        .expect("fail");

    let r = ledger.get(key).await.expect("get").expect("exists");
    assert_eq!(r.status, DedupeStatus::Failed);
    assert_eq!(r.last_error.as_deref(), Some("target answered 503"));
    assert_eq!(r.updated_at_ms, T0 + 1_000);
    assert!(!r.dead);

    let outcome = ledger
        .begin(&begin_request(key, "h1", T0 + 2_000))
        .await
        .expect("retry");
    assert_eq!(outcome, taken(2, &[]));
    let r = ledger.get(key).await.expect("get").expect("exists");
    assert_eq!(r.status, DedupeStatus::InProgress);
    assert_eq!(r.last_error, None);
    assert_eq!(r.lease_until_ms, T0 + 2_000 + LEASE_MS);
}

async fn begin_after_lapsed_lease_acquires(ledger: &dyn Ledger) {
    let key = "k-lapsed";
    ledger
        .begin(&begin_request(key, "h1", T0))
        .await
        .expect("begin");
    let outcome = ledger
        .begin(&begin_request(key, "h1", T0 + LEASE_MS + 1))
        .await
        .expect("after the lease");
    assert_eq!(outcome, taken(2, &[]));
}

async fn fail_on_last_attempt_marks_dead(ledger: &dyn Ledger) {
    let key = "k-dead";
    ledger
        .begin(&begin_request(key, "h1", T0))
        .await
        .expect("begin");
    ledger
        .fail(key, T0 + 1_000, "gave up", true)
        .await
        .expect("fail");
    let r = ledger.get(key).await.expect("get").expect("exists");
    assert!(r.dead);
    assert_eq!(r.status, DedupeStatus::Failed);
}

async fn complete_or_fail_on_missing_key_is_not_found(ledger: &dyn Ledger) {
    let err = ledger
        .complete("k-missing", T0, T0 + 1, &targets(&["bus"]))
        .await
        .expect_err("complete");
    assert!(
        matches!(err, LedgerError::NotFound(ref k) if k == "k-missing"),
        "{err:?}"
    );
    let err = ledger
        .fail("k-missing", T0, "x", false)
        .await
        .expect_err("fail");
    assert!(
        matches!(err, LedgerError::NotFound(ref k) if k == "k-missing"),
        "{err:?}"
    );
    assert_eq!(
        ledger.get("k-missing").await.expect("get"),
        None,
        "neither creates a record"
    );
}

pub(crate) fn trail_entry(id: &str, source: &str, at_ms: i64) -> TrailEntry {
    TrailEntry {
        id: id.to_owned(),
        at_ms,
        source: source.to_owned(),
        status: TrailStatus::Refused,
        dedupe_key: None,
        provider_event_id: None,
        event_type: None,
        reason: Some("bad_signature".to_owned()),
        source_ip: Some("203.0.113.7".to_owned()),
        expires_at_ms: at_ms + DAY_MS,
    }
}

const DAY_MS: i64 = 86_400_000;

fn row_at(row: &TrailRow) -> (i64, &'static str) {
    match row {
        TrailRow::Record(_) => (row.at_ms(), "record"),
        TrailRow::Entry(_) => (row.at_ms(), "entry"),
    }
}

/// A payment's records and a key's trail entries are found by their id alone, newest first,
/// with nothing else and nothing expired; and the rows read back whole.
async fn lookups_find_a_payment_and_a_keys_entries_and_nothing_else(ledger: &dyn Ledger) {
    let with_object = |key: &str, object: Option<&str>, at: i64| {
        let mut req = begin_request(key, &format!("h-{key}"), at);
        req.summary.object_id = object.map(str::to_owned);
        req
    };
    for req in [
        with_object("stripe-live#evt_a", Some("pi_7"), T0 + 1_000),
        with_object("stripe-live#evt_b", Some("pi_7"), T0 + 3_000),
        with_object("stripe-live#evt_c", Some("pi_8"), T0 + 2_000),
        with_object("stripe-live#evt_d", None, T0 + 4_000),
    ] {
        ledger.begin(&req).await.expect("begin");
    }
    let about = |id: &str, key: Option<&str>, at: i64, expires: i64| TrailEntry {
        status: TrailStatus::Duplicate,
        dedupe_key: key.map(str::to_owned),
        expires_at_ms: expires,
        ..trail_entry(id, "stripe-live", at)
    };
    let dup_old = about("d-old", Some("stripe-live#evt_a"), T0 + 5_000, T0 + DAY_MS);
    let dup_new = about("d-new", Some("stripe-live#evt_a"), T0 + 6_000, T0 + DAY_MS);
    for entry in [
        &dup_old,
        &dup_new,
        &about("d-gone", Some("stripe-live#evt_a"), T0 + 7_000, T0 - 1),
        &about(
            "d-other",
            Some("stripe-live#evt_b"),
            T0 + 8_000,
            T0 + DAY_MS,
        ),
        &about("d-none", None, T0 + 9_000, T0 + DAY_MS),
    ] {
        ledger.append(entry).await.expect("append");
    }

    let keys = |rows: Vec<TrailRow>| -> Vec<String> {
        rows.into_iter()
            .map(|r| match r {
                TrailRow::Record(r) => r.key,
                TrailRow::Entry(e) => e.id,
            })
            .collect()
    };
    let payment = ledger
        .lookup(Lookup::Object("pi_7"), T0)
        .await
        .expect("lookup");
    match &payment[0] {
        TrailRow::Record(r) => assert_eq!(
            (r.summary.object_id.as_deref(), r.source.as_str()),
            (Some("pi_7"), "stripe-live"),
            "the record reads back whole"
        ),
        other => panic!("expected a record, got {other:?}"),
    }
    assert_eq!(
        keys(payment),
        ["stripe-live#evt_b", "stripe-live#evt_a"],
        "the payment's two events, newest first, and no other payment's"
    );
    assert!(ledger
        .lookup(Lookup::Object("pi_9"), T0)
        .await
        .expect("lookup")
        .is_empty());
    let entries = ledger
        .lookup(Lookup::Entries("stripe-live#evt_a"), T0)
        .await
        .expect("lookup");
    assert_eq!(
        entries,
        [TrailRow::Entry(dup_new), TrailRow::Entry(dup_old)],
        "the key's live entries, newest first, read back as written"
    );
}

async fn list_by_source_is_newest_first_and_limited(ledger: &dyn Ledger) {
    let full = TrailEntry {
        id: "t-full".to_owned(),
        at_ms: T0 + 2_000,
        source: "shop".to_owned(),
        status: TrailStatus::Duplicate,
        dedupe_key: Some("shop#1".to_owned()),
        provider_event_id: Some("1".to_owned()),
        event_type: Some("orders/create".to_owned()),
        reason: None,
        source_ip: None,
        expires_at_ms: T0 + DAY_MS,
    };
    ledger
        .append(&trail_entry("t-old", "shop", T0 + 1_000))
        .await
        .expect("append");
    ledger
        .append(&trail_entry("t-new", "shop", T0 + 3_000))
        .await
        .expect("append");
    ledger.append(&full).await.expect("append");
    ledger
        .append(&trail_entry("t-other", "other", T0 + 4_000))
        .await
        .expect("append");
    let mut req = begin_request("shop#2", "h", T0 + 2_500);
    req.source = "shop".to_owned();
    ledger.begin(&req).await.expect("begin");

    let shop = |limit| TrailQuery {
        source: Some("shop".to_owned()),
        limit,
        now_ms: T0,
        ..Default::default()
    };
    let rows = ledger.list(&shop(3)).await.expect("list");
    assert_eq!(
        rows.iter().map(row_at).collect::<Vec<_>>(),
        [
            (T0 + 3_000, "entry"),
            (T0 + 2_500, "record"),
            (T0 + 2_000, "entry")
        ]
    );
    assert_eq!(
        rows[2],
        TrailRow::Entry(full),
        "an entry reads back as written"
    );
    match &rows[1] {
        TrailRow::Record(r) => assert_eq!((r.key.as_str(), r.source.as_str()), ("shop#2", "shop")),
        other => panic!("expected the dedupe record, got {other:?}"),
    }

    let rows = ledger.list(&shop(10)).await.expect("list");
    assert_eq!(rows.len(), 4, "only the source's rows: {rows:?}");
    assert_eq!(
        rows[3],
        TrailRow::Entry(trail_entry("t-old", "shop", T0 + 1_000))
    );
    // A time window, bounds included, with a source (read as a range of the index) and
    // without one.
    for source in [Some("shop".to_owned()), None] {
        let rows = ledger
            .list(&TrailQuery {
                source: source.clone(),
                limit: 0,
                now_ms: T0,
                since_ms: Some(T0 + 2_000),
                until_ms: Some(T0 + 2_500),
            })
            .await
            .expect("list");
        assert_eq!(
            rows.iter().map(row_at).collect::<Vec<_>>(),
            [(T0 + 2_500, "record"), (T0 + 2_000, "entry")],
            "{source:?}"
        );
    }

    let all = ledger
        .list(&TrailQuery {
            source: None,
            limit: 2,
            now_ms: T0,
            ..Default::default()
        })
        .await
        .expect("list all");
    assert_eq!(
        all.iter().map(row_at).collect::<Vec<_>>(),
        [(T0 + 4_000, "entry"), (T0 + 3_000, "entry")]
    );
}

/// What `list` shows at `now_ms`: each row's kind and id (or key), newest first.
pub(crate) async fn listed(
    ledger: &dyn Ledger,
    source: Option<&str>,
    limit: usize,
    now_ms: i64,
) -> Vec<(&'static str, String)> {
    ledger
        .list(&TrailQuery {
            source: source.map(str::to_owned),
            limit,
            now_ms,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_iter()
        .map(|row| match row {
            TrailRow::Record(r) => ("record", r.key),
            TrailRow::Entry(e) => ("entry", e.id),
        })
        .collect()
}

fn ids(rows: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    rows.iter().map(|(k, id)| (*k, (*id).to_owned())).collect()
}

async fn expired_entries_are_not_listed(ledger: &dyn Ledger) {
    // The newest entry expires first, so a limited listing must look past it.
    ledger
        .append(&TrailEntry {
            expires_at_ms: T0 + 1_000,
            ..trail_entry("t-short", "shop", T0 + 30)
        })
        .await
        .expect("append");
    ledger
        .append(&trail_entry("t-long", "shop", T0 + 10))
        .await
        .expect("append");
    let mut req = begin_request("shop#1", "h", T0 + 20);
    req.source = "shop".to_owned();
    ledger.begin(&req).await.expect("begin");
    // A dedupe record keeps its own expiry: the trail's does not apply to it.
    ledger
        .complete("shop#1", T0 + 20, T0 + 500, &BTreeSet::new())
        .await
        .expect("complete");

    let all = ids(&[
        ("entry", "t-short"),
        ("record", "shop#1"),
        ("entry", "t-long"),
    ]);
    assert_eq!(
        listed(ledger, Some("shop"), 0, T0 + 1_000).await,
        all,
        "up to the instant of expiry"
    );
    let after = ids(&[("record", "shop#1"), ("entry", "t-long")]);
    assert_eq!(listed(ledger, Some("shop"), 0, T0 + 1_001).await, after);
    assert_eq!(
        listed(ledger, None, 0, T0 + 1_001).await,
        after,
        "every source"
    );
    assert_eq!(
        listed(ledger, Some("shop"), 1, T0 + 1_001).await,
        ids(&[("record", "shop#1")]),
        "a limit counts only what is shown"
    );
    assert_eq!(
        listed(ledger, Some("shop"), 0, T0 + 10 + DAY_MS + 1).await,
        ids(&[("record", "shop#1")])
    );
    assert_eq!(
        listed(ledger, Some("shop"), 0, 0).await,
        all,
        "0 leaves none out"
    );
}

async fn append_new_stores_an_id_once_and_keeps_the_first(ledger: &dyn Ledger) {
    let first = trail_entry("slot-1", "shop", T0);
    assert!(ledger.append_new(&first).await.expect("append_new"));
    let later = TrailEntry {
        at_ms: T0 + 5,
        reason: Some("another".to_owned()),
        source_ip: None,
        ..first.clone()
    };
    assert!(
        !ledger.append_new(&later).await.expect("append_new"),
        "the id is taken"
    );
    let shown = ledger
        .list(&TrailQuery {
            source: Some("shop".to_owned()),
            limit: 0,
            now_ms: T0,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(shown, vec![TrailRow::Entry(first)], "kept as it was");
    ledger.append(&later).await.expect("append replaces");
    let shown = ledger
        .list(&TrailQuery {
            source: Some("shop".to_owned()),
            limit: 0,
            now_ms: T0,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(shown, vec![TrailRow::Entry(later)]);
}

// ---------------------------------------------------------------------------------------
// Event bus

fn bus_event(detail: &str) -> BusEvent {
    BusEvent {
        source: "inlet.stripe-live".to_owned(),
        detail_type: "payment.succeeded".to_owned(),
        detail: detail.to_owned(),
        time_ms: Some(T0),
    }
}

async fn publish_two_events_publishes_both(bus: &dyn EventBus) {
    let results = bus
        .publish(&[bus_event(r#"{"n":1}"#), bus_event(r#"{"n":2}"#)])
        .await
        .expect("publish");
    assert_eq!(results.len(), 2);
    let ids: Vec<_> = results
        .iter()
        .map(|r| match r {
            PublishResult::Published { event_id } => event_id.clone(),
            other => panic!("expected Published, got {other:?}"),
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
    assert!(ids.iter().all(|id| !id.is_empty()));
}

async fn non_json_detail_fails_only_that_entry(bus: &dyn EventBus) {
    let results = bus
        .publish(&[bus_event("not json"), bus_event(r#"{"ok":true}"#)])
        .await
        .expect("a per-entry failure is not an Err");
    assert_eq!(results.len(), 2);
    match &results[0] {
        PublishResult::Failed { code, .. } => assert_eq!(code, "MalformedDetail"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(results[1].is_published(), "{:?}", results[1]);
}

async fn publish_more_than_ten_is_refused(bus: &dyn EventBus) {
    let events: Vec<_> = (0..11)
        .map(|i| bus_event(&format!(r#"{{"n":{i}}}"#)))
        .collect();
    assert!(bus.publish(&events).await.is_err());
    assert!(bus.publish(&[]).await.expect("an empty publish").is_empty());
}

// ---------------------------------------------------------------------------------------
// The cases on each backend

#[tokio::test]
async fn embedded_send_receive_delete() {
    send_receive_delete(&embedded_queues()).await;
}
#[tokio::test]
async fn aws_send_receive_delete() {
    send_receive_delete(&aws_queues().await).await;
}

#[tokio::test]
async fn embedded_send_batch_returns_one_id_per_entry() {
    send_batch_returns_one_id_per_entry(&embedded_queues()).await;
}
#[tokio::test]
async fn aws_send_batch_returns_one_id_per_entry() {
    send_batch_returns_one_id_per_entry(&aws_queues().await).await;
}

#[tokio::test]
async fn embedded_send_batch_of_more_than_ten_is_refused() {
    send_batch_of_more_than_ten_is_refused(&embedded_queues()).await;
}
#[tokio::test]
async fn aws_send_batch_of_more_than_ten_is_refused() {
    send_batch_of_more_than_ten_is_refused(&aws_queues().await).await;
}

#[tokio::test]
async fn embedded_received_message_is_hidden_then_reappears() {
    received_message_is_hidden_then_reappears(&embedded_queues()).await;
}
#[tokio::test]
async fn aws_received_message_is_hidden_then_reappears() {
    received_message_is_hidden_then_reappears(&aws_queues().await).await;
}

#[tokio::test]
async fn embedded_receive_count_increments() {
    receive_count_increments(&embedded_queues()).await;
}
#[tokio::test]
async fn aws_receive_count_increments() {
    receive_count_increments(&aws_queues().await).await;
}

#[tokio::test]
async fn embedded_message_moves_to_dlq_after_max_receives() {
    message_moves_to_dlq_after_max_receives(&embedded_queues()).await;
}
#[tokio::test]
async fn aws_message_moves_to_dlq_after_max_receives() {
    message_moves_to_dlq_after_max_receives(&aws_queues().await).await;
}

#[tokio::test]
async fn embedded_change_visibility_to_zero_makes_it_visible() {
    change_visibility_to_zero_makes_it_visible(&embedded_queues()).await;
}
#[tokio::test]
async fn aws_change_visibility_to_zero_makes_it_visible() {
    change_visibility_to_zero_makes_it_visible(&aws_queues().await).await;
}

#[tokio::test]
async fn embedded_move_to_moves_dead_letters_back() {
    move_to_moves_dead_letters_back(&embedded_queues()).await;
}
#[tokio::test]
async fn aws_move_to_moves_dead_letters_back() {
    move_to_moves_dead_letters_back(&aws_queues().await).await;
}

#[tokio::test]
async fn embedded_begin_new_key_acquires_first_attempt() {
    begin_new_key_acquires_first_attempt(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_begin_new_key_acquires_first_attempt() {
    begin_new_key_acquires_first_attempt(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_begin_while_lease_is_live_is_held_in_progress() {
    begin_while_lease_is_live_is_held_in_progress(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_begin_while_lease_is_live_is_held_in_progress() {
    begin_while_lease_is_live_is_held_in_progress(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_begin_after_complete_is_held_completed() {
    begin_after_complete_is_held_completed(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_begin_after_complete_is_held_completed() {
    begin_after_complete_is_held_completed(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_begin_with_other_body_is_held_with_the_holders_hash() {
    begin_with_other_body_is_held_with_the_holders_hash(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_begin_with_other_body_is_held_with_the_holders_hash() {
    begin_with_other_body_is_held_with_the_holders_hash(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_begin_after_expiry_acquires() {
    begin_after_expiry_acquires(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_begin_after_expiry_acquires() {
    begin_after_expiry_acquires(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_begin_after_failure_with_same_body_acquires_second_attempt() {
    begin_after_failure_with_same_body_acquires_second_attempt(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_begin_after_failure_with_same_body_acquires_second_attempt() {
    begin_after_failure_with_same_body_acquires_second_attempt(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_begin_after_lapsed_lease_acquires() {
    begin_after_lapsed_lease_acquires(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_begin_after_lapsed_lease_acquires() {
    begin_after_lapsed_lease_acquires(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_fail_on_last_attempt_marks_dead() {
    fail_on_last_attempt_marks_dead(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_fail_on_last_attempt_marks_dead() {
    fail_on_last_attempt_marks_dead(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_delivered_targets_come_back_to_the_next_holder() {
    delivered_targets_come_back_to_the_next_holder(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_delivered_targets_come_back_to_the_next_holder() {
    delivered_targets_come_back_to_the_next_holder(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_mark_delivered_needs_the_record_in_progress() {
    mark_delivered_needs_the_record_in_progress(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_mark_delivered_needs_the_record_in_progress() {
    mark_delivered_needs_the_record_in_progress(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_complete_or_fail_on_missing_key_is_not_found() {
    complete_or_fail_on_missing_key_is_not_found(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_complete_or_fail_on_missing_key_is_not_found() {
    complete_or_fail_on_missing_key_is_not_found(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_lookups_find_a_payment_and_a_keys_entries_and_nothing_else() {
    lookups_find_a_payment_and_a_keys_entries_and_nothing_else(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_lookups_find_a_payment_and_a_keys_entries_and_nothing_else() {
    lookups_find_a_payment_and_a_keys_entries_and_nothing_else(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_list_by_source_is_newest_first_and_limited() {
    list_by_source_is_newest_first_and_limited(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_list_by_source_is_newest_first_and_limited() {
    list_by_source_is_newest_first_and_limited(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_expired_entries_are_not_listed() {
    expired_entries_are_not_listed(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_expired_entries_are_not_listed() {
    expired_entries_are_not_listed(&*aws_ledger().await).await;
}

#[tokio::test]
async fn embedded_append_new_stores_an_id_once_and_keeps_the_first() {
    append_new_stores_an_id_once_and_keeps_the_first(&*embedded_ledger()).await;
}
#[tokio::test]
async fn aws_append_new_stores_an_id_once_and_keeps_the_first() {
    append_new_stores_an_id_once_and_keeps_the_first(&*aws_ledger().await).await;
}

/// The embedded store deletes what DynamoDB's TTL would: expired entries, on later writes.
#[tokio::test]
async fn embedded_expired_entries_are_deleted_by_later_writes() {
    let clock = Arc::new(ManualClock::new(T0));
    let ledger = embedded::ledger(clock.clone());
    ledger
        .append(&TrailEntry {
            expires_at_ms: T0 + 1_000,
            ..trail_entry("t-short", "shop", T0)
        })
        .await
        .expect("append");
    ledger
        .append(&trail_entry("t-long", "shop", T0))
        .await
        .expect("append");
    clock.advance_ms(1_001);
    ledger
        .append_new(&trail_entry("t-next", "shop", T0 + 1_001))
        .await
        .expect("append_new");
    assert_eq!(
        listed(&*ledger, Some("shop"), 0, 0).await,
        ids(&[("entry", "t-next"), ("entry", "t-long")]),
        "gone from the store, not only from the listing"
    );
}

/// DynamoDB deletes expired items itself, given the TTL attribute: every trail item carries
/// it, in epoch seconds, on the attribute the table's TTL is enabled on.
#[tokio::test]
async fn aws_every_trail_item_carries_its_ttl_on_the_tables_ttl_attribute() {
    use aws_sdk_dynamodb::types::TimeToLiveStatus;
    use inlet::adapters::aws::dynamodb::TTL_ATTRIBUTE;

    let ledger = aws::ledger().await;
    let expires = T0 + 1_234_567;
    let entry = |id: &str| TrailEntry {
        expires_at_ms: expires,
        ..trail_entry(id, "shop", T0)
    };
    ledger.append(&entry("put")).await.expect("append");
    assert!(ledger.append_new(&entry("new")).await.expect("append_new"));
    let ttl = ledger
        .client()
        .describe_time_to_live()
        .table_name(ledger.table())
        .send()
        .await
        .expect("describe TTL");
    let spec = ttl.time_to_live_description().expect("a TTL description");
    assert_eq!(spec.attribute_name(), Some(TTL_ATTRIBUTE));
    assert_eq!(spec.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    aws::assert_trail_ttl(&ledger, ["put", "new"], expires).await;
}

#[tokio::test]
async fn embedded_publish_two_events_publishes_both() {
    publish_two_events_publishes_both(&*embedded_bus()).await;
}
#[tokio::test]
async fn aws_publish_two_events_publishes_both() {
    publish_two_events_publishes_both(&*aws_bus().await).await;
}

#[tokio::test]
async fn embedded_non_json_detail_fails_only_that_entry() {
    non_json_detail_fails_only_that_entry(&*embedded_bus()).await;
}
#[tokio::test]
async fn aws_non_json_detail_fails_only_that_entry() {
    non_json_detail_fails_only_that_entry(&*aws_bus().await).await;
}

#[tokio::test]
async fn embedded_publish_more_than_ten_is_refused() {
    publish_more_than_ten_is_refused(&*embedded_bus()).await;
}
#[tokio::test]
async fn aws_publish_more_than_ten_is_refused() {
    publish_more_than_ten_is_refused(&*aws_bus().await).await;
}

// ---------------------------------------------------------------------------------------
// Poll cursors and leases

const POLL_LEASE_MS: i64 = 30_000;

fn acquired(outcome: Acquire) -> inlet::ports::PollState {
    match outcome {
        Acquire::Acquired(state) => state,
        held => panic!("expected the lease, got {held:?}"),
    }
}

fn lost(result: Result<u64, PollStoreError>) -> String {
    match result {
        Err(PollStoreError::LeaseLost { why, .. }) => why,
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}

async fn a_second_poller_is_refused_while_the_first_holds_the_lease(p: &dyn PollStore) {
    let first = acquired(
        p.acquire("src", "run-a", T0, T0 + POLL_LEASE_MS)
            .await
            .expect("a"),
    );
    assert_eq!((first.cursor.as_deref(), first.version), (None, 0));
    assert_eq!(
        p.acquire("src", "run-b", T0 + 1, T0 + 1 + POLL_LEASE_MS)
            .await
            .expect("b"),
        Acquire::Held {
            holder: "run-a".into(),
            until_ms: T0 + POLL_LEASE_MS
        }
    );
    // Another source is independent.
    acquired(
        p.acquire("other", "run-b", T0, T0 + POLL_LEASE_MS)
            .await
            .expect("other"),
    );
    // The holder renews its own lease.
    let renewed = acquired(
        p.acquire("src", "run-a", T0 + 2, T0 + 2 + POLL_LEASE_MS)
            .await
            .expect("renew"),
    );
    assert_eq!(renewed.lease_until_ms, T0 + 2 + POLL_LEASE_MS);
}

async fn a_lapsed_or_released_lease_can_be_taken(p: &dyn PollStore) {
    acquired(
        p.acquire("src", "run-a", T0, T0 + POLL_LEASE_MS)
            .await
            .expect("a"),
    );
    let later = T0 + POLL_LEASE_MS + 1;
    let b = acquired(
        p.acquire("src", "run-b", later, later + POLL_LEASE_MS)
            .await
            .expect("b"),
    );
    assert_eq!(b.lease_holder.as_deref(), Some("run-b"));
    // The old holder's release does not free the new holder's lease.
    p.release("src", "run-a").await.expect("stale release");
    assert!(matches!(
        p.acquire("src", "run-c", later + 1, later + 1 + POLL_LEASE_MS)
            .await
            .expect("c"),
        Acquire::Held { .. }
    ));
    p.release("src", "run-b").await.expect("release");
    acquired(
        p.acquire("src", "run-c", later + 2, later + 2 + POLL_LEASE_MS)
            .await
            .expect("after release"),
    );
}

async fn the_cursor_moves_only_under_a_live_lease_from_the_version_read(p: &dyn PollStore) {
    let s = acquired(
        p.acquire("src", "run-a", T0, T0 + POLL_LEASE_MS)
            .await
            .expect("a"),
    );
    let v1 = p
        .advance(
            "src",
            "run-a",
            s.version,
            r#"{"after":"evt_1"}"#,
            T0 + 10,
            T0 + POLL_LEASE_MS,
        )
        .await
        .expect("advance");
    assert_eq!(v1, s.version + 1);
    // A stale version (a second writer that read before us) is refused.
    let why = lost(
        p.advance(
            "src",
            "run-a",
            s.version,
            r#"{"after":"evt_x"}"#,
            T0 + 11,
            T0 + POLL_LEASE_MS,
        )
        .await,
    );
    assert!(why.contains("version"), "{why}");
    // Someone who does not hold the lease cannot write.
    assert!(lost(
        p.advance(
            "src",
            "run-b",
            v1,
            r#"{"after":"evt_y"}"#,
            T0 + 12,
            T0 + POLL_LEASE_MS
        )
        .await
    )
    .contains("held by run-a"));
    // Nor can the holder once its lease lapsed (the next run may already be polling).
    let why = lost(
        p.advance(
            "src",
            "run-a",
            v1,
            r#"{"after":"evt_z"}"#,
            T0 + POLL_LEASE_MS + 1,
            T0 + 2 * POLL_LEASE_MS,
        )
        .await,
    );
    assert!(why.contains("lapsed"), "{why}");
    let state = p.state("src").await.expect("state").expect("row");
    assert_eq!(
        (state.cursor.as_deref(), state.version),
        (Some(r#"{"after":"evt_1"}"#), v1)
    );
    // The next run starts from the stored cursor.
    let next = acquired(
        p.acquire(
            "src",
            "run-b",
            T0 + POLL_LEASE_MS + 5,
            T0 + 3 * POLL_LEASE_MS,
        )
        .await
        .expect("b"),
    );
    assert_eq!(next.cursor.as_deref(), Some(r#"{"after":"evt_1"}"#));
    assert_eq!(next.version, v1);
    assert!(p.state("never").await.expect("state").is_none());
    assert!(lost(p.advance("never", "run-a", 0, "{}", T0, T0 + 1).await).contains("never acquired"));
}

#[tokio::test]
async fn embedded_a_second_poller_is_refused_while_the_first_holds_the_lease() {
    a_second_poller_is_refused_while_the_first_holds_the_lease(&*embedded_poll_store()).await;
}
#[tokio::test]
async fn aws_a_second_poller_is_refused_while_the_first_holds_the_lease() {
    a_second_poller_is_refused_while_the_first_holds_the_lease(&*aws_poll_store().await).await;
}

#[tokio::test]
async fn embedded_a_lapsed_or_released_lease_can_be_taken() {
    a_lapsed_or_released_lease_can_be_taken(&*embedded_poll_store()).await;
}
#[tokio::test]
async fn aws_a_lapsed_or_released_lease_can_be_taken() {
    a_lapsed_or_released_lease_can_be_taken(&*aws_poll_store().await).await;
}

#[tokio::test]
async fn embedded_the_cursor_moves_only_under_a_live_lease_from_the_version_read() {
    the_cursor_moves_only_under_a_live_lease_from_the_version_read(&*embedded_poll_store()).await;
}
#[tokio::test]
async fn aws_the_cursor_moves_only_under_a_live_lease_from_the_version_read() {
    the_cursor_moves_only_under_a_live_lease_from_the_version_read(&*aws_poll_store().await).await;
}

fn not_reset(result: Result<u64, PollStoreError>) -> String {
    match result {
        Err(PollStoreError::NotReset { why, .. }) => why,
        other => panic!("expected NotReset, got {other:?}"),
    }
}

/// An operator's reset: refused for a source never polled, while a run holds the lease, and
/// from a version the cursor has since left; otherwise the cursor is gone, the version moves
/// on (so a run that read the old one cannot write over the reset), and a run starts afresh.
async fn a_reset_forgets_the_cursor_only_between_runs_from_the_version_shown(p: &dyn PollStore) {
    assert!(not_reset(p.reset("src", 0, T0).await).contains("never been polled"));
    let s = acquired(
        p.acquire("src", "run-a", T0, T0 + POLL_LEASE_MS)
            .await
            .expect("a"),
    );
    let v1 = p
        .advance(
            "src",
            "run-a",
            s.version,
            r#"{"after":"evt_1"}"#,
            T0 + 1,
            T0 + POLL_LEASE_MS,
        )
        .await
        .expect("advance");
    let why = not_reset(p.reset("src", v1, T0 + 2).await);
    assert!(why.contains("run-a") && why.contains("lease"), "{why}");
    p.release("src", "run-a").await.expect("release");
    let why = not_reset(p.reset("src", v1 - 1, T0 + 3).await);
    assert!(why.contains(&format!("version {v1}")), "{why}");

    let v2 = p.reset("src", v1, T0 + 4).await.expect("reset");
    assert_eq!(v2, v1 + 1);
    let after = p.state("src").await.expect("state").expect("row kept");
    assert_eq!(
        (after.cursor, after.version, after.updated_at_ms),
        (None, v2, T0 + 4)
    );
    // The run that read v1 before the reset cannot store its cursor over it.
    let run = acquired(
        p.acquire("src", "run-b", T0 + 5, T0 + 5 + POLL_LEASE_MS)
            .await
            .expect("b"),
    );
    assert_eq!((run.cursor, run.version), (None, v2));
    assert!(matches!(
        p.advance("src", "run-b", v1, "{}", T0 + 6, T0 + POLL_LEASE_MS)
            .await,
        Err(PollStoreError::LeaseLost { .. })
    ));
}

#[tokio::test]
async fn embedded_a_reset_forgets_the_cursor_only_between_runs_from_the_version_shown() {
    a_reset_forgets_the_cursor_only_between_runs_from_the_version_shown(&*embedded_poll_store())
        .await;
}
#[tokio::test]
async fn aws_a_reset_forgets_the_cursor_only_between_runs_from_the_version_shown() {
    a_reset_forgets_the_cursor_only_between_runs_from_the_version_shown(&*aws_poll_store().await)
        .await;
}

// ---------------------------------------------------------------------------------------
// Delayed checks

async fn aws_check_store() -> Box<dyn CheckStore> {
    Box::new(aws::ledger().await)
}

fn embedded_check_store() -> Box<dyn CheckStore> {
    Box::new(embedded::store(Arc::new(ManualClock::new(T0))).ledger())
}

const CHECK_DUE_MS: i64 = 15 * 60_000;
const CHECK_KEEP_MS: i64 = 86_400_000;

fn pending_check(entity: &str, on_event: &str, now_ms: i64) -> CheckRecord {
    CheckRecord {
        key: check_key("stripe", "payment-settles", entity),
        source: "stripe".into(),
        name: "payment-settles".into(),
        entity: entity.into(),
        poll_source: "stripe".into(),
        on_event: on_event.into(),
        created_at_ms: now_ms,
        due_at_ms: now_ms + CHECK_DUE_MS,
        expires_at_ms: now_ms + CHECK_DUE_MS + CHECK_KEEP_MS,
        status: CheckStatus::Pending,
        satisfied_by: None,
        closed_at_ms: None,
        outcome: None,
    }
}

async fn a_check_is_scheduled_once_per_entity(c: &dyn CheckStore) {
    let first = pending_check("pi_1", "stripe#evt_1", T0);
    assert_eq!(
        c.schedule(&first, T0).await.expect("schedule"),
        Scheduled::Created
    );
    assert_eq!(
        c.get_check(&first.key).await.expect("get"),
        Some(first.clone()),
        "stored as given"
    );
    // A second `on` event for the same entity finds the first check, unchanged.
    let again = pending_check("pi_1", "stripe#evt_2", T0 + 1_000);
    match c.schedule(&again, T0 + 1_000).await.expect("schedule") {
        Scheduled::Exists(held) => assert_eq!(held, first),
        other => panic!("expected the held check, got {other:?}"),
    }
    // Another entity is another check.
    let other = pending_check("pi_2", "stripe#evt_3", T0);
    assert_eq!(
        c.schedule(&other, T0).await.expect("schedule"),
        Scheduled::Created
    );
    // Once expired, the key can be scheduled anew.
    let later = T0 + CHECK_DUE_MS + CHECK_KEEP_MS + 1;
    let renewed = pending_check("pi_1", "stripe#evt_9", later);
    assert_eq!(
        c.schedule(&renewed, later).await.expect("schedule"),
        Scheduled::Created
    );
    assert_eq!(
        c.get_check(&renewed.key)
            .await
            .expect("get")
            .map(|r| r.on_event),
        Some("stripe#evt_9".to_owned())
    );
    assert_eq!(c.get_check("check#stripe#nope#x").await.expect("get"), None);
}

async fn a_pending_check_is_satisfied_or_fired_once(c: &dyn CheckStore) {
    let a = pending_check("pi_a", "stripe#evt_a", T0);
    let b = pending_check("pi_b", "stripe#evt_b", T0);
    for r in [&a, &b] {
        assert_eq!(
            c.schedule(r, T0).await.expect("schedule"),
            Scheduled::Created
        );
    }
    // Satisfied: only the first satisfy and no finish after it.
    assert!(c
        .satisfy(&a.key, "stripe#evt_ok", T0 + 5)
        .await
        .expect("satisfy"));
    assert!(!c
        .satisfy(&a.key, "stripe#evt_ok2", T0 + 6)
        .await
        .expect("satisfy"));
    assert!(!c
        .finish(&a.key, "poll caught_up", T0 + 7)
        .await
        .expect("finish"));
    let got = c.get_check(&a.key).await.expect("get").expect("stored");
    assert_eq!(
        (
            got.status,
            got.satisfied_by.as_deref(),
            got.closed_at_ms,
            got.outcome
        ),
        (
            CheckStatus::Satisfied,
            Some("stripe#evt_ok"),
            Some(T0 + 5),
            None
        )
    );
    // Fired: only the first finish and no satisfy after it.
    assert!(c
        .finish(&b.key, "poll caught_up; queued=1", T0 + 8)
        .await
        .expect("finish"));
    assert!(!c.finish(&b.key, "again", T0 + 9).await.expect("finish"));
    assert!(!c
        .satisfy(&b.key, "stripe#late", T0 + 10)
        .await
        .expect("satisfy"));
    let got = c.get_check(&b.key).await.expect("get").expect("stored");
    assert_eq!(
        (got.status, got.satisfied_by, got.outcome.as_deref()),
        (CheckStatus::Fired, None, Some("poll caught_up; queued=1"))
    );
    // Nothing to satisfy or finish: false, no item created.
    assert!(!c
        .satisfy("check#stripe#x#none", "e", T0)
        .await
        .expect("satisfy"));
    assert!(!c
        .finish("check#stripe#x#none", "o", T0)
        .await
        .expect("finish"));
    assert_eq!(c.get_check("check#stripe#x#none").await.expect("get"), None);
}

#[tokio::test]
async fn embedded_a_check_is_scheduled_once_per_entity() {
    a_check_is_scheduled_once_per_entity(&*embedded_check_store()).await;
}
#[tokio::test]
async fn aws_a_check_is_scheduled_once_per_entity() {
    a_check_is_scheduled_once_per_entity(&*aws_check_store().await).await;
}

#[tokio::test]
async fn embedded_a_pending_check_is_satisfied_or_fired_once() {
    a_pending_check_is_satisfied_or_fired_once(&*embedded_check_store()).await;
}
#[tokio::test]
async fn aws_a_pending_check_is_satisfied_or_fired_once() {
    a_pending_check_is_satisfied_or_fired_once(&*aws_check_store().await).await;
}

// ---------------------------------------------------------------------------------------
// Blobs

fn embedded_blobs() -> (tempfile::TempDir, inlet::adapters::embedded::FileBlobs) {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = inlet::adapters::embedded::FileBlobs::new(dir.path().join("blobs"));
    (dir, blobs)
}

/// Bytes of `len` that are not all alike (a truncation or a swapped chunk changes the digest).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A blob reads back byte-exact through its reference, whatever its size (empty, one byte,
/// several megabytes); writing it again changes nothing; a missing one is `NotFound`.
async fn a_blob_reads_back_byte_exact_through_its_reference(store: &dyn BlobStore) {
    for len in [0, 1, 3 * 1024 * 1024 + 7] {
        let bytes = pattern(len);
        let r = put_blob(store, BlobKind::Body, &bytes).await.expect("put");
        assert_eq!(r.len, len as u64);
        assert!(
            r.key.starts_with("bodies/") && r.key.ends_with(&r.sha256),
            "{r:?}"
        );
        assert_eq!(
            get_blob(store, &r).await.expect("get"),
            bytes,
            "{len} bytes"
        );
        let again = put_blob(store, BlobKind::Body, &bytes)
            .await
            .expect("put again");
        assert_eq!(again, r);
        assert_eq!(get_blob(store, &r).await.expect("get again"), bytes);
    }
    let archived = put_blob(store, BlobKind::Request, b"{\"id\":\"evt_1\"}")
        .await
        .expect("put");
    assert!(archived.key.starts_with("requests/"), "{archived:?}");
    let missing = BlobRef {
        key: format!("bodies/{}", "0".repeat(64)),
        sha256: "0".repeat(64),
        len: 0,
    };
    assert!(matches!(
        get_blob(store, &missing).await,
        Err(BlobError::NotFound(_))
    ));
}

/// What a reader gets that is not what the reference names (damaged, or another blob's
/// bytes) is refused, never returned; keys outside the scheme never reach the store.
async fn a_blob_that_does_not_match_its_reference_is_refused(store: &dyn BlobStore) {
    let wanted = put_blob(store, BlobKind::Body, b"the real body")
        .await
        .expect("put");
    // The stored object under that key replaced by other bytes, as damage would.
    store
        .put(&wanted.key, b"something else")
        .await
        .expect("overwrite");
    match get_blob(store, &wanted).await {
        Err(BlobError::Mismatch { expected, len, .. }) => {
            assert_eq!((expected, len), (wanted.sha256.clone(), 14));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    let short = BlobRef {
        len: wanted.len + 1,
        ..put_blob(store, BlobKind::Body, b"the real body")
            .await
            .expect("put")
    };
    assert!(matches!(
        get_blob(store, &short).await,
        Err(BlobError::Mismatch { .. })
    ));
    for key in ["../../etc/passwd", "bodies/../x", "requests/ABC", ""] {
        assert!(
            matches!(store.put(key, b"x").await, Err(BlobError::BadKey(_))),
            "{key}"
        );
        assert!(
            matches!(store.get(key).await, Err(BlobError::BadKey(_))),
            "{key}"
        );
    }
}

#[tokio::test]
async fn embedded_a_blob_reads_back_byte_exact_through_its_reference() {
    let (_dir, blobs) = embedded_blobs();
    a_blob_reads_back_byte_exact_through_its_reference(&blobs).await;
}
#[tokio::test]
async fn aws_a_blob_reads_back_byte_exact_through_its_reference() {
    a_blob_reads_back_byte_exact_through_its_reference(&aws::blobs().await).await;
}

#[tokio::test]
async fn embedded_a_blob_that_does_not_match_its_reference_is_refused() {
    let (_dir, blobs) = embedded_blobs();
    a_blob_that_does_not_match_its_reference_is_refused(&blobs).await;
}
#[tokio::test]
async fn aws_a_blob_that_does_not_match_its_reference_is_refused() {
    a_blob_that_does_not_match_its_reference_is_refused(&aws::blobs().await).await;
}
