//! The worker: per record decode the envelope, take its dedupe key, dispatch to the routed
//! targets, then complete or fail. Failures are reported per record so only they retry.
//!
//! With the queues at hand (`with_queues`), a record to retry has its visibility stretched
//! to its backoff (or the target's `Retry-After`, or a busy key's remaining lease), and a
//! record that can never succeed — a permanent dispatch error, an undecodable body, a route
//! to a missing target, its route's attempts used up — is sent to the DLQ by the worker
//! itself and acknowledged, instead of burning the queue's receives.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::checks::CheckScheduler;
use crate::config::Config;
use crate::envelope::{Envelope, Via};
use crate::metrics;
use crate::ordering::{self, Versioned};
use crate::ports::{
    BeginOutcome, BeginRequest, Clock, DedupeRecord, DedupeStatus, EventSummary, Ledger,
    OutboundMessage, Queue, TrailEntry, TrailStatus,
};
use crate::retry::{clamp_delay, Jitter, RetryPolicy, SplitMix};
use crate::targets::{DispatchError, Target};

/// A queue message as the worker sees it (from an SQS event or the embedded queue).
#[derive(Debug, Clone)]
pub struct WorkerRecord {
    pub message_id: String,
    pub body: String,
    pub receive_count: u32,
    /// For `ChangeMessageVisibility` (the backoff); `None` when the event did not carry it.
    pub receipt_handle: Option<String>,
    /// The FIFO message group (`None` on a standard queue): when a record of a group fails,
    /// the group's later records in the batch fail with it, undispatched.
    pub group_id: Option<String>,
}

/// A message as the embedded event-source loop receives it.
impl From<&crate::ports::ReceivedMessage> for WorkerRecord {
    fn from(m: &crate::ports::ReceivedMessage) -> Self {
        Self {
            message_id: m.message_id.clone(),
            body: m.body.clone(),
            receive_count: m.receive_count,
            receipt_handle: Some(m.receipt_handle.clone()),
            group_id: m.group_id.clone(),
        }
    }
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Dispatched {
        dedupe_key: String,
    },
    /// Already completed under the same key and body: acknowledged, not dispatched.
    Duplicate {
        dedupe_key: String,
    },
    /// Same key, different body: recorded and alarmed, never dispatched.
    Conflict {
        dedupe_key: String,
    },
    /// Another worker holds a live lease: retry later.
    Busy {
        dedupe_key: String,
    },
    /// Dispatch or ledger failure: retry (or DLQ after the last receive).
    Failed {
        dedupe_key: Option<String>,
        error: String,
    },
    /// Not processed: an earlier record of its FIFO group failed in this batch, and a group
    /// is delivered in order or not at all (SQS FIFO).
    HeldBack {
        group: String,
    },
    /// An update older than (or as old as) the last one applied to its entity: acknowledged,
    /// not dispatched, recorded in the trail.
    Stale {
        dedupe_key: String,
    },
    /// Retrying could never help (or its attempts are used up): the worker sent the message
    /// to the DLQ, so it is acknowledged here. `dedupe_key` is `None` for a body that is not
    /// an envelope.
    DeadLettered {
        dedupe_key: Option<String>,
        reason: String,
    },
}

impl Outcome {
    /// Whether the message must stay on the queue (a batch item failure).
    pub fn retry(&self) -> bool {
        matches!(
            self,
            Outcome::Busy { .. } | Outcome::Failed { .. } | Outcome::HeldBack { .. }
        )
    }
}

/// Why the worker moved a record to the DLQ: the `reason` dimension of `dlq_moves`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadReason {
    /// A permanent dispatch error (a 4xx, a refused address, no route, a missing target).
    Permanent,
    /// The route's `retry.attempts` receives all failed.
    AttemptsExhausted,
    /// The body is not an envelope.
    Undecodable,
}

impl DeadReason {
    fn as_str(self) -> &'static str {
        match self {
            DeadReason::Permanent => "permanent",
            DeadReason::AttemptsExhausted => "attempts_exhausted",
            DeadReason::Undecodable => "undecodable",
        }
    }
}

/// What the stale-version guard decided for an event whose key the worker holds.
enum Guard {
    /// Deliver it; record this version once delivered.
    Fresh(Option<Versioned>),
    /// Not to deliver: stale, or the guard could not tell (its outcome and retry delay).
    Done(Outcome, Option<Duration>),
}

/// The batch in rounds: round `r` holds the `r`-th record of each FIFO group, and every
/// record without a group runs in the first round. Batch order within a round.
fn rounds(records: &[WorkerRecord]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, rec) in records.iter().enumerate() {
        let r = match rec.group_id.as_deref() {
            Some(group) => {
                let n = seen.entry(group).or_insert(0);
                *n += 1;
                *n - 1
            }
            None => 0,
        };
        if rounds.len() <= r {
            rounds.resize_with(r + 1, Vec::new);
        }
        rounds[r].push(i);
    }
    rounds
}

/// The main queue (for visibility changes) and its DLQ (for the worker's own moves).
#[derive(Clone)]
struct Queues {
    main: Arc<dyn Queue>,
    dlq: Arc<dyn Queue>,
}

#[derive(Debug, Clone, Default)]
pub struct BatchResult {
    pub outcomes: Vec<(String, Outcome)>,
}

impl BatchResult {
    /// Message ids to report as `batchItemFailures`.
    pub fn failed_message_ids(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|(_, o)| o.retry())
            .map(|(id, _)| id.clone())
            .collect()
    }
}

pub struct Worker {
    config: Arc<Config>,
    ledger: Arc<dyn Ledger>,
    targets: BTreeMap<String, Arc<dyn Target>>,
    clock: Arc<dyn Clock>,
    /// Present when some source has delayed checks.
    checks: Option<CheckScheduler>,
    /// Without them, failures only go back to the queue as they are (no backoff, no DLQ).
    queues: Option<Queues>,
    jitter: Arc<dyn Jitter>,
}

/// The dedupe decision for a key someone else holds.
/// The names a route's `types` can match: the provider's type and the canonical type.
fn event_names(env: &Envelope) -> Vec<&str> {
    [env.event_type.as_deref(), env.canonical_type.as_deref()]
        .into_iter()
        .flatten()
        .collect()
}

fn held_outcome(env: &Envelope, rec: &DedupeRecord) -> Outcome {
    let key = env.dedupe_key.as_str();
    // The same event brought by the other path (a webhook delivery and the API's list) is the
    // provider's JSON serialised twice, not necessarily byte for byte alike: a copy, not a
    // conflict. Within one path, different bytes under one key are a forged or buggy resend.
    if rec.body_sha256 != env.body_sha256 && rec.via == env.via.as_str() {
        return Outcome::Conflict {
            dedupe_key: key.into(),
        };
    }
    match rec.status {
        DedupeStatus::Completed => Outcome::Duplicate {
            dedupe_key: key.into(),
        },
        // A live lease (or, by the begin condition, nothing else can hold the key).
        DedupeStatus::InProgress | DedupeStatus::Failed => Outcome::Busy {
            dedupe_key: key.into(),
        },
    }
}

impl Worker {
    pub fn new(
        config: Arc<Config>,
        ledger: Arc<dyn Ledger>,
        targets: BTreeMap<String, Arc<dyn Target>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config,
            ledger,
            targets,
            clock,
            checks: None,
            queues: None,
            jitter: Arc::new(SplitMix::from_entropy()),
        }
    }

    /// Schedule and satisfy delayed checks for dispatched events.
    pub fn with_checks(mut self, checks: CheckScheduler) -> Self {
        self.checks = Some(checks);
        self
    }

    /// The queue the records come from (their visibility is stretched to the backoff) and
    /// its dead-letter queue (where the worker moves what can never succeed).
    pub fn with_queues(mut self, main: Arc<dyn Queue>, dlq: Arc<dyn Queue>) -> Self {
        self.queues = Some(Queues { main, dlq });
        self
    }

    /// The randomness of the backoff's jitter (tests fix it).
    pub fn with_jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.jitter = jitter;
        self
    }

    pub async fn process(&self, records: &[WorkerRecord]) -> BatchResult {
        let mut result = BatchResult::default();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; records.len()];
        // How long a record to retry stays hidden; `None` = the default policy's backoff.
        let mut delays: Vec<Option<Duration>> = vec![None; records.len()];

        // A FIFO group's records run one per round, in batch order, so a later one is only
        // dispatched once the earlier ones are done; once one fails, the group's later records
        // fail undispatched (SQS FIFO requires it to keep the order). Other groups go on.
        let mut failed_groups: HashSet<&str> = HashSet::new();
        for round in rounds(records) {
            let mut run = Vec::with_capacity(round.len());
            for i in round {
                match records[i].group_id.as_deref() {
                    Some(group) if failed_groups.contains(group) => {
                        debug!(message_id = %records[i].message_id, group, "held back behind a failed record of its group");
                        outcomes[i] = Some(Outcome::HeldBack {
                            group: group.to_owned(),
                        });
                        // Visible again at once: the queue still delivers it only after the
                        // failed record before it, which is hidden for its backoff.
                        delays[i] = Some(Duration::ZERO);
                    }
                    _ => run.push(i),
                }
            }
            self.run(records, &run, &mut outcomes, &mut delays).await;
            for &i in &run {
                if let (Some(group), Some(o)) = (records[i].group_id.as_deref(), &outcomes[i]) {
                    if o.retry() {
                        failed_groups.insert(group);
                    }
                }
            }
        }

        for (i, (rec, o)) in records.iter().zip(outcomes).enumerate() {
            let o = o.unwrap_or(Outcome::Failed {
                dedupe_key: None,
                error: "not processed".into(),
            });
            if o.retry() {
                let delay = delays[i].unwrap_or_else(|| {
                    self.config
                        .default_retry
                        .backoff(rec.receive_count, self.jitter.unit())
                });
                self.hold_back(rec, delay).await;
            }
            result.outcomes.push((rec.message_id.clone(), o));
        }
        result
    }

    /// Decode, take the keys of, guard and dispatch the records at `idx` together.
    async fn run(
        &self,
        records: &[WorkerRecord],
        idx: &[usize],
        outcomes: &mut [Option<Outcome>],
        delays: &mut [Option<Duration>],
    ) {
        // Envelopes whose key we now hold, to be dispatched together.
        let mut taken: Vec<(usize, Envelope)> = Vec::new();
        // Done events an operator replayed with --force: dispatched again, outside dedupe.
        let mut forced: Vec<(usize, Envelope)> = Vec::new();
        // Later copies of a key already taken in this batch (a provider retry that arrived
        // before the first copy was processed): they follow the first copy's outcome without
        // a ledger call of their own.
        let mut followers: Vec<(usize, usize)> = Vec::new();

        for &i in idx {
            let rec = &records[i];
            let env = match Envelope::from_json(&rec.body) {
                Ok(e) => e,
                Err(e) => {
                    error!(message_id = %rec.message_id, error = %e, "undecodable envelope");
                    outcomes[i] = Some(
                        self.undecodable(rec, format!("undecodable envelope: {e}"))
                            .await,
                    );
                    continue;
                }
            };
            if let Some(leader) = taken.iter().position(|(_, t)| {
                t.dedupe_key == env.dedupe_key && t.body_sha256 == env.body_sha256
            }) {
                followers.push((i, leader));
                continue;
            }
            match self.begin(&env).await {
                Ok(BeginOutcome::Acquired { .. }) => taken.push((i, env)),
                Ok(BeginOutcome::Held(held)) => {
                    let o = held_outcome(&env, &held);
                    if env.forced_replay() && matches!(o, Outcome::Duplicate { .. }) {
                        forced.push((i, env));
                        continue;
                    }
                    if matches!(o, Outcome::Busy { .. }) {
                        // Another worker's live lease: try again when it lapses (then the
                        // key is ours, or done), not after a backoff. A lease is live up to
                        // and including `lease_until`, hence the second more.
                        let left = held.lease_until_ms.saturating_sub(self.clock.now_ms()) + 1000;
                        delays[i] = Some(clamp_delay(Duration::from_millis(
                            u64::try_from(left).unwrap_or(0),
                        )));
                    }
                    self.note_held(&env, &o).await;
                    outcomes[i] = Some(o);
                }
                Err(e) => {
                    warn!(dedupe_key = %env.dedupe_key, error = %e, "dedupe begin failed");
                    delays[i] = Some(self.backoff(&env, rec.receive_count));
                    outcomes[i] = Some(Outcome::Failed {
                        dedupe_key: Some(env.dedupe_key.clone()),
                        error: e.to_string(),
                    });
                }
            }
        }

        // The stale-version guard, before anything is scheduled or delivered.
        let mut versions: BTreeMap<usize, Versioned> = BTreeMap::new();
        let mut fresh: Vec<(usize, Envelope)> = Vec::with_capacity(taken.len());
        for (i, env) in &taken {
            match self.guard(env, &records[*i]).await {
                Guard::Fresh(v) => {
                    if let Some(v) = v {
                        versions.insert(*i, v);
                    }
                    fresh.push((*i, env.clone()));
                }
                Guard::Done(o, d) => {
                    outcomes[*i] = Some(o);
                    delays[*i] = d;
                }
            }
        }

        // Delayed checks are scheduled before delivery, so a failure to schedule retries the
        // event before any target saw it: never a second delivery for a check's sake. (A
        // check scheduled for an event whose delivery then fails only runs a needless poll.)
        let now = self.clock.now_ms();
        let mut ready: Vec<(usize, Envelope)> = Vec::with_capacity(fresh.len());
        for (i, env) in &fresh {
            match self.schedule_checks(env, now).await {
                Ok(()) => ready.push((*i, env.clone())),
                Err(e) => {
                    let (o, d) = self.checks_failed(env, &records[*i], e, now).await;
                    outcomes[*i] = Some(o);
                    delays[*i] = d;
                }
            }
        }
        let dispatch = self.dispatch(&ready).await;
        for ((i, env), res) in ready.iter().zip(dispatch) {
            let (o, d) = self.finish(env, &records[*i], versions.get(i), res).await;
            outcomes[*i] = Some(o);
            delays[*i] = d;
        }
        if !forced.is_empty() {
            let dispatch = self.dispatch(&forced).await;
            for ((i, env), res) in forced.iter().zip(dispatch) {
                let (o, d) = self.finish_forced(env, &records[*i], res).await;
                outcomes[*i] = Some(o);
                delays[*i] = d;
            }
        }
        for (i, leader) in followers {
            let (leader_i, env) = (taken[leader].0, &taken[leader].1);
            let o = match &outcomes[leader_i] {
                Some(Outcome::Dispatched { .. } | Outcome::Stale { .. }) => Outcome::Duplicate {
                    dedupe_key: env.dedupe_key.clone(),
                },
                // The same bytes are in the DLQ already: a second copy there adds nothing.
                Some(Outcome::DeadLettered { reason, .. }) => Outcome::DeadLettered {
                    dedupe_key: Some(env.dedupe_key.clone()),
                    reason: reason.clone(),
                },
                // The first copy failed and will be retried; so is this one, and dedupe
                // decides between them next time.
                _ => {
                    delays[i] = delays[leader_i];
                    Outcome::Busy {
                        dedupe_key: env.dedupe_key.clone(),
                    }
                }
            };
            self.note_held(env, &o).await;
            outcomes[i] = Some(o);
        }
    }

    /// The stale-version guard of an event whose key we hold: `Fresh` with its version to
    /// record after delivery (`None`: the source keeps no versions, or the event carries
    /// none), or `Done` when it is stale (completed, trailed, acknowledged) or the ledger
    /// could not tell (retried).
    async fn guard(&self, env: &Envelope, rec: &WorkerRecord) -> Guard {
        let Some(ordering) = self.config.ordering(&env.source) else {
            return Guard::Fresh(None);
        };
        let v = match ordering::versioned(ordering, env) {
            Ok(Some(v)) => v,
            Ok(None) => return Guard::Fresh(None),
            Err(why) => {
                // Dropping an update for want of a readable version could lose money;
                // delivering it unguarded cannot lose anything.
                warn!(source = %env.source, dedupe_key = %env.dedupe_key, error = %why, "unreadable version; dispatched without the stale-version guard");
                return Guard::Fresh(None);
            }
        };
        let now = self.clock.now_ms();
        let applied = match self.ledger.applied_version(&env.source, &v.entity).await {
            Ok(applied) => applied,
            Err(e) => {
                let msg = format!("stale-version guard: {e}");
                let (o, d) = self
                    .failed(env, rec, DispatchError::Retryable(msg), now)
                    .await;
                return Guard::Done(o, d);
            }
        };
        match applied {
            Some(last) if v.version <= last => {
                Guard::Done(self.drop_stale(env, &v, last, now).await, None)
            }
            _ => Guard::Fresh(Some(v)),
        }
    }

    /// Acknowledge a stale update without dispatching it: its dedupe record completes (a
    /// copy of it is a duplicate), the trail and `stale_dropped` say why.
    async fn drop_stale(&self, env: &Envelope, v: &Versioned, last: i64, now: i64) -> Outcome {
        let key = env.dedupe_key.clone();
        warn!(source = %env.source, dedupe_key = %key, entity = %v.entity, version = v.version, applied = last, "stale update dropped");
        metrics::count(now, "stale_dropped", &env.source);
        if let Err(e) = self
            .ledger
            .complete(&key, now, now + self.window(env))
            .await
        {
            warn!(dedupe_key = %key, error = %e, "stale update dropped but not completed");
        }
        let entry = TrailEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at_ms: now,
            source: env.source.clone(),
            status: TrailStatus::Stale,
            dedupe_key: Some(key.clone()),
            provider_event_id: env.provider_event_id.clone(),
            event_type: env.event_type.clone(),
            reason: Some(format!(
                "entity {}: version {} is not newer than the applied {last}",
                v.entity, v.version
            )),
            source_ip: None,
        };
        if let Err(e) = self.ledger.append(&entry).await {
            warn!(dedupe_key = %key, error = %e, "could not record trail entry");
        }
        Outcome::Stale { dedupe_key: key }
    }

    /// How long a completed event of this source keeps deduplicating.
    fn window(&self, env: &Envelope) -> i64 {
        self.config
            .source(&env.source)
            .map(|s| s.dedupe_window_ms)
            .unwrap_or(7 * 86_400_000)
    }

    /// The event's retry policy (its matching routes').
    fn policy(&self, env: &Envelope) -> RetryPolicy {
        self.config.retry_policy(&env.source, &event_names(env))
    }

    fn backoff(&self, env: &Envelope, attempt: u32) -> Duration {
        self.policy(env).backoff(attempt, self.jitter.unit())
    }

    /// Hide a record to retry for `delay` (its receive's visibility otherwise). Best effort:
    /// when the call fails the queue's own visibility timeout still brings it back.
    async fn hold_back(&self, rec: &WorkerRecord, delay: Duration) {
        let (Some(queues), Some(handle)) = (&self.queues, &rec.receipt_handle) else {
            return;
        };
        match queues.main.change_visibility(handle, delay).await {
            Ok(()) => {
                debug!(message_id = %rec.message_id, delay_s = delay.as_secs(), attempt = rec.receive_count, "retry backed off")
            }
            Err(e) => {
                warn!(message_id = %rec.message_id, error = %e, "could not stretch the visibility; the queue's timeout applies")
            }
        }
    }

    /// Send the record's body, unchanged, to the DLQ. `false` when there is no DLQ or the
    /// send failed: the caller then retries it as usual (nothing is lost).
    async fn to_dlq(&self, rec: &WorkerRecord, source: &str, why: DeadReason) -> bool {
        let Some(queues) = &self.queues else {
            return false;
        };
        // A FIFO main queue has a FIFO DLQ, which needs the group; a standard one ignores it.
        let message = OutboundMessage {
            group_id: rec.group_id.clone(),
            ..OutboundMessage::new(rec.body.clone())
        };
        match queues.dlq.send(&message).await {
            Ok(_) => {
                metrics::emit(
                    self.clock.now_ms(),
                    "dlq_moves",
                    metrics::Unit::Count,
                    1.0,
                    source,
                    Some(why.as_str()),
                );
                true
            }
            Err(e) => {
                warn!(message_id = %rec.message_id, error = %e, reason = why.as_str(), "could not move the record to the DLQ; retrying it instead");
                false
            }
        }
    }

    /// A body that is not an envelope can never be dispatched: straight to the DLQ (where
    /// `inlet dlq list` shows why), or retried as before when there is no DLQ at hand.
    async fn undecodable(&self, rec: &WorkerRecord, reason: String) -> Outcome {
        // No envelope: its source if the JSON names a configured one, else "unknown".
        let source = serde_json::from_str::<serde_json::Value>(&rec.body)
            .ok()
            .and_then(|v| v.get("source")?.as_str().map(str::to_owned))
            .filter(|s| self.config.source(s).is_some())
            .unwrap_or_else(|| "unknown".to_owned());
        if self.to_dlq(rec, &source, DeadReason::Undecodable).await {
            // No dedupe record carries this one into the trail: an entry of its own does.
            let entry = TrailEntry {
                id: uuid::Uuid::new_v4().to_string(),
                at_ms: self.clock.now_ms(),
                source,
                status: TrailStatus::Dead,
                dedupe_key: None,
                provider_event_id: None,
                event_type: None,
                reason: Some(reason.clone()),
                source_ip: None,
            };
            if let Err(e) = self.ledger.append(&entry).await {
                warn!(message_id = %rec.message_id, error = %e, "could not record trail entry");
            }
            return Outcome::DeadLettered {
                dedupe_key: None,
                reason,
            };
        }
        Outcome::Failed {
            dedupe_key: None,
            error: reason,
        }
    }

    /// A failed attempt at a held key: to the DLQ when retrying cannot help (permanent, or
    /// the route's attempts are used up), else failed with the delay before the next try
    /// (the target's `Retry-After`, else the backoff).
    async fn failed(
        &self,
        env: &Envelope,
        rec: &WorkerRecord,
        e: DispatchError,
        now: i64,
    ) -> (Outcome, Option<Duration>) {
        let key = env.dedupe_key.clone();
        let policy = self.policy(env);
        let attempt = rec.receive_count;
        let msg = e.to_string();
        let give_up = if e.is_permanent() {
            Some(DeadReason::Permanent)
        } else if attempt >= policy.attempts {
            Some(DeadReason::AttemptsExhausted)
        } else {
            None
        };
        if let Some(why) = give_up {
            let reason = match why {
                DeadReason::AttemptsExhausted => {
                    format!("{msg} (gave up after {attempt} attempts)")
                }
                _ => msg.clone(),
            };
            if self.to_dlq(rec, &env.source, why).await {
                warn!(source = %env.source, dedupe_key = %key, error = %reason, why = why.as_str(), "moved to the DLQ");
                if let Err(le) = self.ledger.fail(&key, now, &reason, true).await {
                    warn!(dedupe_key = %key, error = %le, "could not record the DLQ move");
                }
                return (
                    Outcome::DeadLettered {
                        dedupe_key: Some(key),
                        reason,
                    },
                    None,
                );
            }
        }
        // On the queue's last receive its redrive takes it to the DLQ.
        let dead = attempt >= self.config.settings.max_receive_count;
        warn!(source = %env.source, dedupe_key = %key, error = %msg, dead, "dispatch failed");
        if let Err(le) = self.ledger.fail(&key, now, &msg, dead).await {
            warn!(dedupe_key = %key, error = %le, "could not record failure");
        }
        let delay = policy.delay(
            attempt,
            e.retry_after(),
            self.config.retry_after_max,
            self.jitter.unit(),
        );
        (
            Outcome::Failed {
                dedupe_key: Some(key),
                error: msg,
            },
            Some(delay),
        )
    }

    async fn begin(&self, env: &Envelope) -> Result<BeginOutcome, crate::ports::LedgerError> {
        let now = self.clock.now_ms();
        self.ledger
            .begin(&BeginRequest {
                key: env.dedupe_key.clone(),
                source: env.source.clone(),
                body_sha256: env.body_sha256.clone(),
                provider_event_id: env.provider_event_id.clone(),
                event_type: env.event_type.clone(),
                via: env.via.as_str().to_string(),
                received_at_ms: env.received_at_ms(),
                now_ms: now,
                lease_until_ms: now + self.config.lease_ms_for(&env.source),
                summary: EventSummary {
                    canonical_type: env.canonical_type.clone(),
                    entity: env.entity.clone(),
                    amount: env.amount,
                    currency: env.currency.clone(),
                    key_id: env.verified.key_id.clone(),
                },
            })
            .await
    }

    /// The source also receives webhooks and this poll reconciles them.
    fn reconciles(&self, source: &str) -> bool {
        self.config
            .source(source)
            .and_then(|s| s.poll.as_ref())
            .is_some_and(|p| p.reconcile)
    }

    /// An event the poll delivered first: its webhook never came (or has not yet).
    async fn note_missed_webhook(&self, env: &Envelope, now: i64) {
        warn!(source = %env.source, dedupe_key = %env.dedupe_key, "missed webhook: first seen by the poll");
        metrics::count(now, "missed_webhooks", &env.source);
        let entry = TrailEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at_ms: now,
            source: env.source.clone(),
            status: TrailStatus::MissedWebhook,
            dedupe_key: Some(env.dedupe_key.clone()),
            provider_event_id: env.provider_event_id.clone(),
            event_type: env.event_type.clone(),
            reason: None,
            source_ip: None,
        };
        if let Err(e) = self.ledger.append(&entry).await {
            warn!(dedupe_key = %env.dedupe_key, error = %e, "could not record trail entry");
        }
    }

    async fn note_held(&self, env: &Envelope, outcome: &Outcome) {
        let now = self.clock.now_ms();
        let status = match outcome {
            Outcome::Duplicate { .. } => {
                info!(source = %env.source, dedupe_key = %env.dedupe_key, "duplicate acknowledged");
                metrics::count(now, "duplicates", &env.source);
                if env.via == Via::Poll {
                    metrics::count(now, "poll_duplicates", &env.source);
                }
                TrailStatus::Duplicate
            }
            Outcome::Conflict { .. } => {
                error!(source = %env.source, dedupe_key = %env.dedupe_key, "payload conflict: same key, different body");
                metrics::count(now, "conflicts", &env.source);
                TrailStatus::Conflict
            }
            _ => return,
        };
        let entry = TrailEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at_ms: now,
            source: env.source.clone(),
            status,
            dedupe_key: Some(env.dedupe_key.clone()),
            provider_event_id: env.provider_event_id.clone(),
            event_type: env.event_type.clone(),
            reason: (status == TrailStatus::Conflict)
                .then(|| format!("body_sha256 {}", env.body_sha256)),
            source_ip: None,
        };
        if let Err(e) = self.ledger.append(&entry).await {
            warn!(dedupe_key = %env.dedupe_key, error = %e, "could not record trail entry");
        }
    }

    /// The event's checks could not be scheduled: give its key back as failed so the retry
    /// schedules and delivers it.
    async fn checks_failed(
        &self,
        env: &Envelope,
        rec: &WorkerRecord,
        e: crate::checks::CheckError,
        now: i64,
    ) -> (Outcome, Option<Duration>) {
        let msg = format!("delayed check not scheduled: {e}");
        warn!(source = %env.source, dedupe_key = %env.dedupe_key, error = %msg, "check scheduling failed; the event will be retried");
        // Like a retryable dispatch failure: backoff, and the DLQ once the attempts are used.
        self.failed(env, rec, DispatchError::Retryable(msg), now)
            .await
    }

    /// A source without checks returns at once: no store or queue call.
    async fn schedule_checks(
        &self,
        env: &Envelope,
        now: i64,
    ) -> Result<(), crate::checks::CheckError> {
        let Some(source) = self
            .config
            .source(&env.source)
            .filter(|s| !s.checks.is_empty())
        else {
            return Ok(());
        };
        let Some(checks) = &self.checks else {
            warn!(source = %env.source, "source has checks but this worker has no checks queue; none scheduled");
            return Ok(());
        };
        checks
            .after_dispatch(source, env, &event_names(env), now)
            .await
    }

    /// Group envelopes by target and deliver; an envelope succeeds when all its targets do.
    async fn dispatch(&self, taken: &[(usize, Envelope)]) -> Vec<Result<(), DispatchError>> {
        let mut results: Vec<Result<(), DispatchError>> = vec![Ok(()); taken.len()];
        let mut per_target: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (n, (_, env)) in taken.iter().enumerate() {
            let ids = self.config.targets_for(&env.source, &event_names(env));
            if ids.is_empty() {
                results[n] = Err(DispatchError::Permanent(format!(
                    "no route for source {}",
                    env.source
                )));
            }
            for id in ids {
                per_target.entry(id).or_default().push(n);
            }
        }
        for (target_id, idx) in per_target {
            let Some(target) = self.targets.get(&target_id) else {
                for n in idx {
                    results[n] = Err(DispatchError::Permanent(format!(
                        "target {target_id} is not configured"
                    )));
                }
                continue;
            };
            let batch: Vec<&Envelope> = idx.iter().map(|&n| &taken[n].1).collect();
            let delivered = target.deliver(&batch).await;
            for (n, r) in idx.into_iter().zip(delivered) {
                if let Err(e) = r {
                    if results[n].is_ok() {
                        results[n] = Err(e);
                    }
                }
            }
        }
        results
    }

    /// A forced replay of a done event: its dedupe record stays as it is (completed); the
    /// trail says who dispatched it again. A failure retries like any other (the queue's
    /// redrive ends it in the DLQ), without touching the record.
    async fn finish_forced(
        &self,
        env: &Envelope,
        rec: &WorkerRecord,
        res: Result<(), DispatchError>,
    ) -> (Outcome, Option<Duration>) {
        let now = self.clock.now_ms();
        let key = env.dedupe_key.clone();
        match res {
            Ok(()) => {
                metrics::count(now, "dispatched", &env.source);
                metrics::count(now, "forced_replays", &env.source);
                warn!(source = %env.source, dedupe_key = %key, "dispatched again: forced replay");
                let entry = TrailEntry {
                    id: uuid::Uuid::new_v4().to_string(),
                    at_ms: now,
                    source: env.source.clone(),
                    status: TrailStatus::ForcedReplay,
                    dedupe_key: Some(key.clone()),
                    provider_event_id: env.provider_event_id.clone(),
                    event_type: env.event_type.clone(),
                    reason: env
                        .replay
                        .as_ref()
                        .map(|r| format!("inlet replay --force at {}", r.at)),
                    source_ip: None,
                };
                if let Err(e) = self.ledger.append(&entry).await {
                    warn!(dedupe_key = %key, error = %e, "could not record the forced replay in the trail");
                }
                (Outcome::Dispatched { dedupe_key: key }, None)
            }
            Err(e) => {
                metrics::count(now, "dispatch_failures", &env.source);
                warn!(source = %env.source, dedupe_key = %key, error = %e, "forced replay failed; retrying");
                let delay = self.policy(env).delay(
                    rec.receive_count,
                    e.retry_after(),
                    self.config.retry_after_max,
                    self.jitter.unit(),
                );
                (
                    Outcome::Failed {
                        dedupe_key: Some(key),
                        error: e.to_string(),
                    },
                    Some(delay),
                )
            }
        }
    }

    async fn finish(
        &self,
        env: &Envelope,
        rec: &WorkerRecord,
        version: Option<&Versioned>,
        res: Result<(), DispatchError>,
    ) -> (Outcome, Option<Duration>) {
        let now = self.clock.now_ms();
        let key = env.dedupe_key.clone();
        match res {
            Ok(()) => {
                // Recorded before the completion: should completing fail, the retry finds this
                // version applied and drops the event instead of delivering it twice.
                if let Some(v) = version {
                    match self
                        .ledger
                        .record_version(&env.source, &v.entity, v.version, now)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            debug!(dedupe_key = %key, entity = %v.entity, version = v.version, "a newer version was applied meanwhile")
                        }
                        Err(e) => {
                            warn!(dedupe_key = %key, entity = %v.entity, error = %e, "dispatched but its version not recorded; an older update could still follow")
                        }
                    }
                }
                if let Err(e) = self
                    .ledger
                    .complete(&key, now, now + self.window(env))
                    .await
                {
                    // Dispatched but not recorded: the retry finds the lease and waits for
                    // it to lapse, then dispatches again. Targets absorb that (JSONL keeps keys;
                    // EventBridge consumers see the same dedupe_key).
                    warn!(dedupe_key = %key, error = %e, "dispatched but could not complete");
                    return (
                        Outcome::Failed {
                            dedupe_key: Some(key),
                            error: e.to_string(),
                        },
                        Some(self.backoff(env, rec.receive_count)),
                    );
                }
                metrics::count(now, "dispatched", &env.source);
                if env.via == Via::Poll {
                    // Polled items the pipeline had not seen: with poll_duplicates, what a
                    // poll's overlap and re-sent pages cost.
                    metrics::count(now, "poll_new", &env.source);
                    if self.reconciles(&env.source) {
                        self.note_missed_webhook(env, now).await;
                    }
                }
                let latency = (now - env.received_at_ms()).max(0) as f64;
                metrics::emit(
                    now,
                    "end_to_end_latency",
                    metrics::Unit::Milliseconds,
                    latency,
                    &env.source,
                    None,
                );
                info!(source = %env.source, dedupe_key = %key, "dispatched");
                (Outcome::Dispatched { dedupe_key: key }, None)
            }
            Err(e) => {
                metrics::count(now, "dispatch_failures", &env.source);
                self.failed(env, rec, e, now).await
            }
        }
    }
}
