//! Delayed checks: "if no `payment.succeeded` for this payment within 15 minutes, poll".
//!
//! - **Scheduling** ([`CheckScheduler`], in the worker): when an event is dispatched and
//!   matches a check's `on` types and has an entity, a conditional put creates the check
//!   (`check#<source>#<name>#<entity>`: a repeated `on` event does not schedule twice) and a
//!   check message goes to the checks queue with `DelaySeconds = min(after, 900)`. An event
//!   matching a check's `expect` types for the same entity satisfies it (only while pending).
//!   A source without checks makes no call at all.
//! - **Firing** ([`CheckRunner`], in the poller Lambda and `inlet dev`): a check message
//!   whose check is satisfied is done (trail: satisfied); one not yet due (SQS delays top out
//!   at 15 minutes) is sent again with the remaining delay; a due, pending check runs one
//!   poll of its poll source now, then is finished with the outcome (trail, `checks_fired`,
//!   and `checks_unsatisfied` when the poll did not bring the expected event either).
//!
//! A poll that finds the lease held (`Busy`: the scheduled run is polling right now), or that
//! had no time left for a single request, defers
//! the check by [`BUSY_RETRY`] with a fresh message rather than failing it: SQS would count
//! the failure as a receive and a busy source is no reason to end in the DLQ.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::config::{type_matches, Check, Config, Source};
use crate::envelope::Envelope;
use crate::metrics;
use crate::poller::{Poller, RunOutcome, RunReport};
use crate::ports::{
    check_key, CheckRecord, CheckStatus, CheckStore, CheckStoreError, Clock, Ledger,
    OutboundMessage, Queue, QueueError, Scheduled, TrailEntry, TrailStatus, WorkerRecord,
};

/// SQS's ceiling on `DelaySeconds`: a longer wait is a chain of messages.
pub(crate) const MAX_DELAY_SECONDS: u32 = 900;
/// How long a finished check keeps blocking a new one for the same entity (and how long it
/// stays readable in the store) after it was due.
pub(crate) const RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// A check whose poll source is being polled right now tries again this much later.
pub(crate) const BUSY_RETRY: Duration = Duration::from_secs(60);

/// Type patterns as routes read them: exact, `prefix.*` or `*`, against the provider's type
/// or the canonical type.
pub(crate) fn matches_any(patterns: &[String], names: &[&str]) -> bool {
    patterns
        .iter()
        .any(|p| p == "*" || names.iter().any(|n| type_matches(p, n)))
}

/// What an event means for one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Schedule(&'a Check),
    Satisfy(&'a Check),
}

/// The decisions for one dispatched event: pure, so they are unit-tested on their own. An
/// event without an entity can neither schedule nor satisfy (the check is per entity).
pub fn plan<'a>(checks: &'a [Check], names: &[&str], entity: Option<&str>) -> Vec<Action<'a>> {
    if entity.is_none_or(str::is_empty) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for c in checks {
        if matches_any(&c.on, names) {
            out.push(Action::Schedule(c));
        }
        if matches_any(&c.expect, names) {
            out.push(Action::Satisfy(c));
        }
    }
    out
}

/// The body of a check message (the checks queue carries nothing else).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckMessage {
    /// Always `"check"`: tells a check message from anything else on sight.
    pub kind: String,
    pub key: String,
    pub source: String,
    pub name: String,
    pub due_at_ms: i64,
}

impl CheckMessage {
    pub fn new(record: &CheckRecord) -> Self {
        Self {
            kind: "check".into(),
            key: record.key.clone(),
            source: record.source.clone(),
            name: record.name.clone(),
            due_at_ms: record.due_at_ms,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(body: &str) -> Result<Self, NotACheck> {
        let m: Self = serde_json::from_str(body).map_err(|e| NotACheck::Json(e.to_string()))?;
        if m.kind != "check" {
            return Err(NotACheck::Kind(m.kind));
        }
        Ok(m)
    }
}

/// A message on the checks queue that is not a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotACheck {
    #[error("{0}")]
    Json(String),
    #[error("kind is {0:?}, not \"check\"")]
    Kind(String),
}

/// Seconds to wait before `due_at_ms`, rounded up, within SQS's delay ceiling.
pub fn delay_seconds(due_at_ms: i64, now_ms: i64) -> u32 {
    let ms = (due_at_ms - now_ms).max(0);
    let secs = ms / 1000 + i64::from(ms % 1000 > 0);
    u32::try_from(secs)
        .unwrap_or(u32::MAX)
        .min(MAX_DELAY_SECONDS)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    #[error(transparent)]
    Store(#[from] CheckStoreError),
    #[error("checks queue: {0}")]
    Queue(#[from] QueueError),
}

/// The worker's half: schedule and satisfy checks for dispatched events.
pub struct CheckScheduler {
    store: Arc<dyn CheckStore>,
    queue: Arc<dyn Queue>,
}

impl CheckScheduler {
    pub fn new(store: Arc<dyn CheckStore>, queue: Arc<dyn Queue>) -> Self {
        Self { store, queue }
    }

    /// Schedule and satisfy `source`'s checks for a dispatched `env`. An error means a check
    /// may not have been scheduled: the caller retries the event (a retry of the event that
    /// created a check sends its message again; a second message is absorbed at firing).
    /// Satisfying is best effort: a check left pending costs one needless poll, never an
    /// event, so a failed satisfy is only logged.
    pub(crate) async fn after_dispatch(
        &self,
        source: &Source,
        env: &Envelope,
        names: &[&str],
        now_ms: i64,
    ) -> Result<(), CheckError> {
        let Some(entity) = env.entity.as_deref() else {
            return Ok(());
        };
        for action in plan(&source.checks, names, Some(entity)) {
            match action {
                Action::Schedule(check) => {
                    self.schedule(source, check, env, entity, now_ms).await?
                }
                Action::Satisfy(check) => {
                    let key = check_key(&source.id, &check.name, entity);
                    match self.store.satisfy(&key, &env.dedupe_key, now_ms).await {
                        Ok(true) => {
                            info!(source = %source.id, check = %check.name, dedupe_key = %env.dedupe_key, "check satisfied")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            warn!(source = %source.id, check = %check.name, error = %e, "could not satisfy check; it will poll when due")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn schedule(
        &self,
        source: &Source,
        check: &Check,
        env: &Envelope,
        entity: &str,
        now_ms: i64,
    ) -> Result<(), CheckError> {
        let after_ms = i64::try_from(check.after.as_millis()).unwrap_or(i64::MAX);
        let due = now_ms.saturating_add(after_ms);
        let record = CheckRecord {
            key: check_key(&source.id, &check.name, entity),
            source: source.id.clone(),
            name: check.name.clone(),
            entity: entity.to_owned(),
            poll_source: check.poll.clone(),
            on_event: env.dedupe_key.clone(),
            created_at_ms: now_ms,
            due_at_ms: due,
            expires_at_ms: due.saturating_add(RETENTION.as_millis() as i64),
            status: CheckStatus::Pending,
            satisfied_by: None,
            closed_at_ms: None,
            outcome: None,
        };
        let to_send = match self.store.schedule(&record, now_ms).await? {
            Scheduled::Created => Some(record),
            // A retry of the event that created the check: its message may never have left.
            Scheduled::Exists(held)
                if held.status == CheckStatus::Pending && held.on_event == env.dedupe_key =>
            {
                Some(held)
            }
            Scheduled::Exists(_) => {
                debug!(source = %source.id, check = %check.name, "check already scheduled for this entity");
                None
            }
        };
        if let Some(r) = to_send {
            self.queue
                .send(&OutboundMessage {
                    body: CheckMessage::new(&r).to_json(),
                    delay_seconds: delay_seconds(r.due_at_ms, now_ms),
                    ..Default::default()
                })
                .await?;
            metrics::count(now_ms, "checks_scheduled", &source.id);
            info!(source = %source.id, check = %check.name, due_at_ms = r.due_at_ms, "check scheduled");
        }
        Ok(())
    }
}

/// What became of one check message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The expected event came first: no poll.
    Satisfied,
    /// Fired already (another copy of the message), or the check is gone: nothing to do.
    Done,
    /// Not due yet (or its source is being polled right now): sent again with this delay.
    Deferred { delay_seconds: u32 },
    /// Ran its poll; `recovered` when that poll brought an expected event for the entity.
    Fired {
        outcome: String,
        recovered: Option<bool>,
    },
    /// Leave the message on the queue: SQS delivers it again (then to the DLQ).
    Retry(String),
}

impl CheckOutcome {
    pub fn retry(&self) -> bool {
        matches!(self, CheckOutcome::Retry(_))
    }
}

/// The poller's half: fire due checks.
pub struct CheckRunner {
    config: Arc<Config>,
    store: Arc<dyn CheckStore>,
    queue: Arc<dyn Queue>,
    ledger: Arc<dyn Ledger>,
    poller: Arc<Poller>,
    clock: Arc<dyn Clock>,
}

impl CheckRunner {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn CheckStore>,
        queue: Arc<dyn Queue>,
        ledger: Arc<dyn Ledger>,
        poller: Arc<Poller>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config,
            store,
            queue,
            ledger,
            poller,
            clock,
        }
    }

    /// One batch of check messages (an SQS event or an embedded receive); the message ids
    /// to report as batch item failures are those whose outcome is `Retry`.
    pub async fn process(
        &self,
        records: &[WorkerRecord],
        deadline_ms: i64,
    ) -> Vec<(String, CheckOutcome)> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let o = self.fire(&r.body, deadline_ms).await;
            out.push((r.message_id.clone(), o));
        }
        out
    }

    pub async fn fire(&self, body: &str, deadline_ms: i64) -> CheckOutcome {
        let msg = match CheckMessage::parse(body) {
            Ok(m) => m,
            Err(e) => {
                // Never readable: retrying only delays its way to the DLQ, where it is seen.
                warn!(error = %e, "undecodable check message");
                return CheckOutcome::Retry(format!("undecodable check message: {e}"));
            }
        };
        let record = match self.store.get_check(&msg.key).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                warn!(source = %msg.source, check = %msg.name, "check message for a check that is gone");
                return CheckOutcome::Done;
            }
            Err(e) => return CheckOutcome::Retry(e.to_string()),
        };
        let now = self.clock.now_ms();
        match record.status {
            CheckStatus::Fired => CheckOutcome::Done,
            CheckStatus::Satisfied => {
                let by = record
                    .satisfied_by
                    .as_deref()
                    .unwrap_or("an expected event");
                self.trail(
                    &record,
                    "satisfied",
                    format!("{} satisfied by {by}; no poll", record.name),
                )
                .await;
                CheckOutcome::Satisfied
            }
            CheckStatus::Pending if record.due_at_ms > now => {
                self.defer(&record, delay_seconds(record.due_at_ms, now))
                    .await
            }
            CheckStatus::Pending => self.run_poll(&record, deadline_ms).await,
        }
    }

    async fn defer(&self, record: &CheckRecord, delay_seconds: u32) -> CheckOutcome {
        let sent = self
            .queue
            .send(&OutboundMessage {
                body: CheckMessage::new(record).to_json(),
                delay_seconds,
                ..Default::default()
            })
            .await;
        match sent {
            Ok(_) => CheckOutcome::Deferred { delay_seconds },
            Err(e) => CheckOutcome::Retry(format!("could not defer the check: {e}")),
        }
    }

    async fn run_poll(&self, record: &CheckRecord, deadline_ms: i64) -> CheckOutcome {
        let report = match self.poller.run(&record.poll_source, deadline_ms).await {
            Ok(r) => r,
            Err(e) => {
                // The poll source was removed or lost its poll table since the check was
                // scheduled: nothing will ever run it, so close the check and say why.
                let outcome = format!("not polled: {e}");
                return self.close(record, outcome, None).await;
            }
        };
        // Busy: the scheduled run holds the lease and is polling right now. No request at
        // all before the deadline: this invocation had no time left for the poll. Either
        // way the check did not poll, so it tries again a little later.
        let polled_nothing =
            report.requests == 0 && matches!(report.outcome, RunOutcome::DeadlineNear);
        if matches!(report.outcome, RunOutcome::Busy { .. }) || polled_nothing {
            return self.defer(record, BUSY_RETRY.as_secs() as u32).await;
        }
        let recovered = expected_in(&self.config, record, &report);
        let outcome = match &report.outcome {
            RunOutcome::Failed(why) => format!("poll failed: {why}"),
            other => format!("poll {}; queued={}", other.as_str(), report.enqueued.len()),
        };
        // A failed poll says nothing about whether the event exists.
        let recovered = (!matches!(report.outcome, RunOutcome::Failed(_))).then_some(recovered);
        self.close(record, outcome, recovered).await
    }

    async fn close(
        &self,
        record: &CheckRecord,
        outcome: String,
        recovered: Option<bool>,
    ) -> CheckOutcome {
        let now = self.clock.now_ms();
        match self.store.finish(&record.key, &outcome, now).await {
            Ok(true) => {}
            // Satisfied or fired meanwhile: the other path wrote the trail.
            Ok(false) => return CheckOutcome::Done,
            Err(e) => return CheckOutcome::Retry(e.to_string()),
        }
        metrics::count(now, "checks_fired", &record.source);
        let verdict = match recovered {
            Some(true) => "the expected event came with this poll",
            Some(false) => {
                // `finish` succeeded, so no expected event was dispatched before it: as far
                // as this check can tell, the event is still missing (one queued by another
                // run and not yet dispatched would show here too).
                metrics::count(now, "checks_unsatisfied", &record.source);
                warn!(source = %record.source, check = %record.name, "check fired and the expected event is still missing");
                "the expected event is still missing"
            }
            None => "unknown whether the expected event exists",
        };
        self.trail(
            record,
            "fired",
            format!(
                "{} fired for entity {}: {outcome}; {verdict}",
                record.name, record.entity
            ),
        )
        .await;
        CheckOutcome::Fired { outcome, recovered }
    }

    /// One trail entry per check and ending, with an id derived from both, so a second copy
    /// of the message rewrites the same entry instead of adding one.
    async fn trail(&self, record: &CheckRecord, ending: &str, reason: String) {
        let now = self.clock.now_ms();
        let entry = TrailEntry {
            id: format!("{}#{ending}", record.key),
            at_ms: now,
            source: record.source.clone(),
            status: TrailStatus::Check,
            dedupe_key: Some(record.on_event.clone()),
            provider_event_id: None,
            event_type: None,
            reason: Some(reason),
            source_ip: None,
            expires_at_ms: self.config.settings.trail_expires_at(now),
        };
        if let Err(e) = self.ledger.append(&entry).await {
            warn!(source = %record.source, check = %record.name, error = %e, "could not record the check in the trail");
        }
    }
}

/// Whether `report`'s poll queued an event of the check's `expect` types for its entity.
fn expected_in(config: &Config, record: &CheckRecord, report: &RunReport) -> bool {
    let Some(check) = config
        .source(&record.source)
        .and_then(|s| s.checks.iter().find(|c| c.name == record.name))
    else {
        return false;
    };
    report.events.iter().any(|e| {
        e.entity.as_deref() == Some(record.entity.as_str()) && {
            let names: Vec<&str> = e.names.iter().map(String::as_str).collect();
            matches_any(&check.expect, &names)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, on: &[&str], expect: &[&str]) -> Check {
        Check {
            name: name.into(),
            on: on.iter().map(|s| s.to_string()).collect(),
            expect: expect.iter().map(|s| s.to_string()).collect(),
            after: Duration::from_secs(900),
            poll: "stripe".into(),
        }
    }

    #[test]
    fn an_on_event_with_an_entity_schedules_and_an_expect_event_satisfies() {
        let checks = vec![check(
            "payment-settles",
            &["payment_intent.created"],
            &["payment.succeeded", "payment.failed"],
        )];
        let on = plan(&checks, &["payment_intent.created"], Some("pi_1"));
        assert_eq!(on, vec![Action::Schedule(&checks[0])]);
        // The canonical type satisfies, whichever provider type carried it.
        let expect = plan(
            &checks,
            &["payment_intent.succeeded", "payment.succeeded"],
            Some("pi_1"),
        );
        assert_eq!(expect, vec![Action::Satisfy(&checks[0])]);
        assert!(plan(
            &checks,
            &["charge.refunded", "payment.refunded"],
            Some("pi_1")
        )
        .is_empty());
    }

    #[test]
    fn an_event_without_an_entity_does_nothing() {
        let checks = vec![check("c", &["*"], &["*"])];
        assert!(plan(&checks, &["anything"], None).is_empty());
        assert!(plan(&checks, &["anything"], Some("")).is_empty());
    }

    #[test]
    fn patterns_match_like_routes() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches_any(&p(&["payment.*"]), &["payment.failed"]));
        assert!(matches_any(&p(&["*"]), &[]));
        assert!(!matches_any(&p(&["payment.*"]), &["subscription.created"]));
        assert!(!matches_any(
            &p(&["payment.succeeded"]),
            &["payment.succeeded.x"]
        ));
    }

    #[test]
    fn delays_round_up_and_stop_at_the_sqs_ceiling() {
        assert_eq!(delay_seconds(10_000, 0), 10);
        assert_eq!(delay_seconds(10_001, 0), 11);
        assert_eq!(delay_seconds(5, 10), 0);
        assert_eq!(delay_seconds(3_600_000, 0), MAX_DELAY_SECONDS);
    }

    #[test]
    fn a_check_message_round_trips_and_nothing_else_passes_for_one() {
        let m = CheckMessage {
            kind: "check".into(),
            key: "check#stripe#c#pi_1".into(),
            source: "stripe".into(),
            name: "c".into(),
            due_at_ms: 5,
        };
        assert_eq!(CheckMessage::parse(&m.to_json()), Ok(m));
        assert!(CheckMessage::parse(r#"{"v":1,"source":"s"}"#).is_err());
        assert!(CheckMessage::parse(
            r#"{"kind":"envelope","key":"k","source":"s","name":"n","due_at_ms":1}"#
        )
        .is_err());
    }
}
