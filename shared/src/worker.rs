//! The worker: per record decode the envelope, take its dedupe key, dispatch to the routed
//! targets, then complete or fail. Failures are reported per record so only they retry.
//!
//! Each target's outcome is kept apart: a target that accepts the event is marked in its
//! dedupe record at once (`mark_delivered`), so a retry — after a failure elsewhere, a
//! lapsed lease, or a replay from the DLQ — sends only to the targets that do not have it.
//! The last target of an event that succeeds everywhere is not marked: `complete` records it
//! in the write it makes anyway (so a single-target route costs no extra call).
//!
//! With the queues at hand (`with_queues`), a record to retry has its visibility stretched
//! to its backoff (or the target's `Retry-After`, or a busy key's remaining lease), and a
//! record that can never succeed — a permanent dispatch error, an undecodable body, a route
//! to a missing target, its route's attempts used up — is sent to the DLQ by the worker
//! itself and acknowledged, instead of burning the queue's receives.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tracing::{debug, error, info, warn};

use crate::checks::CheckScheduler;
use crate::config::Config;
use crate::envelope::{Envelope, Via};
use crate::metrics;
use crate::ordering::{self, Versioned};
use crate::ports::{
    get_blob, BeginOutcome, BeginRequest, BlobError, BlobStore, Clock, DedupeRecord, DedupeStatus,
    EventSummary, Ledger, LedgerError, OutboundMessage, Queue, TrailEntry, TrailStatus,
    WorkerRecord,
};
use crate::retry::{clamp_delay, Jitter, RetryPolicy, SplitMix};
use crate::targets::{DispatchError, Outgoing, Target};
use crate::trail::{self, TrailBudget};

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

/// An envelope to dispatch: its record's index in the batch, and the targets that already
/// have it (to be skipped).
struct Taken<'r> {
    i: usize,
    env: Envelope,
    /// The envelope's JSON with its body in place: what targets send. As queued, unless the
    /// body was claimed (then rebuilt once it is read back).
    json: Cow<'r, str>,
    /// The envelope as queued with its body by reference, when it was claimed: for a target
    /// whose entry limit the whole event passes.
    claim: Option<&'r str>,
    delivered: BTreeSet<String>,
}

impl<'r> Taken<'r> {
    fn new(i: usize, env: Envelope, rec: &'r WorkerRecord, delivered: BTreeSet<String>) -> Self {
        Self {
            i,
            env,
            json: Cow::Borrowed(&rec.body),
            claim: None,
            delivered,
        }
    }
}

/// What one dispatch did for one envelope.
struct Delivery {
    result: Result<(), DispatchError>,
    /// Every target that has the event now: those of earlier attempts and this one's.
    delivered: BTreeSet<String>,
}

/// The batch as the worker goes through it: each record with what became of it.
struct Batch<'r> {
    slots: Vec<Slot<'r>>,
}

/// One record of the batch and what became of it.
struct Slot<'r> {
    rec: &'r WorkerRecord,
    /// Decided once, in the record's round; `None` until then.
    outcome: Option<Outcome>,
    /// How long the record stays hidden if it is retried; `None`: the default policy's
    /// backoff.
    delay: Option<Duration>,
}

impl<'r> Batch<'r> {
    fn new(records: &'r [WorkerRecord]) -> Self {
        Self {
            slots: records
                .iter()
                .map(|rec| Slot {
                    rec,
                    outcome: None,
                    delay: None,
                })
                .collect(),
        }
    }

    fn rec(&self, i: usize) -> &'r WorkerRecord {
        self.slots[i].rec
    }

    fn outcome(&self, i: usize) -> Option<&Outcome> {
        self.slots[i].outcome.as_ref()
    }

    fn delay(&self, i: usize) -> Option<Duration> {
        self.slots[i].delay
    }

    fn settle(&mut self, i: usize, outcome: Outcome, delay: Option<Duration>) {
        let slot = &mut self.slots[i];
        slot.outcome = Some(outcome);
        slot.delay = delay;
    }

    /// The round's records to run; those of a FIFO group that failed earlier in the batch
    /// are held back instead.
    fn hold_back_failed_groups(
        &mut self,
        round: Vec<usize>,
        failed_groups: &HashSet<&str>,
    ) -> Vec<usize> {
        let mut run = Vec::with_capacity(round.len());
        for i in round {
            match self.rec(i).group_id.as_deref() {
                Some(group) if failed_groups.contains(group) => {
                    debug!(message_id = %self.rec(i).message_id, group, "held back behind a failed record of its group");
                    let held = Outcome::HeldBack {
                        group: group.to_owned(),
                    };
                    // Visible again at once: the queue still delivers it only after the
                    // failed record before it, which is hidden for its backoff.
                    self.settle(i, held, Some(Duration::ZERO));
                }
                _ => run.push(i),
            }
        }
        run
    }
}

/// What taking the keys of one round left to do.
#[derive(Default)]
struct Takes<'r> {
    /// Envelopes whose key we now hold, to be dispatched together.
    taken: Vec<Taken<'r>>,
    /// Done events an operator replayed with --force: dispatched again, outside dedupe.
    forced: Vec<Taken<'r>>,
    /// Later copies of a key already taken in this batch, as (record, index in `taken` of
    /// the first copy).
    followers: Vec<(usize, usize)>,
}

impl Takes<'_> {
    /// The taken envelope `env` is a later copy of (same key, same body), if any.
    fn leader_of(&self, env: &Envelope) -> Option<usize> {
        self.taken.iter().position(|t| {
            t.env.dedupe_key == env.dedupe_key && t.env.body_sha256 == env.body_sha256
        })
    }
}

/// One envelope's dispatch as it goes.
struct Sending {
    /// Its routed targets not answered yet in this dispatch.
    pending: BTreeSet<String>,
    failures: Vec<DispatchError>,
    /// Every target that has the event: those of earlier attempts and this one's.
    delivered: BTreeSet<String>,
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
    /// Bounds the duplicate and conflict entries a replayed request can make (`crate::trail`).
    trail_budget: TrailBudget,
    /// Where claimed bodies are (`None`: a claimed envelope cannot be dispatched).
    blobs: Option<Arc<dyn BlobStore>>,
}

/// The names a route's `types` can match: the provider's type and the canonical type.
fn event_names(env: &Envelope) -> Vec<&str> {
    [env.event_type.as_deref(), env.canonical_type.as_deref()]
        .into_iter()
        .flatten()
        .collect()
}

/// The dedupe decision for a key someone else holds.
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
            trail_budget: TrailBudget::default(),
            blobs: None,
        }
    }

    /// Where claimed bodies are read back from.
    pub fn with_blobs(mut self, blobs: Arc<dyn BlobStore>) -> Self {
        self.blobs = Some(blobs);
        self
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
        let mut batch = Batch::new(records);
        // A FIFO group's records run one per round, in batch order, so a later one is only
        // dispatched once the earlier ones are done; once one fails, the group's later records
        // fail undispatched (SQS FIFO requires it to keep the order). Other groups go on.
        let mut failed_groups: HashSet<&str> = HashSet::new();
        for round in rounds(records) {
            let run = batch.hold_back_failed_groups(round, &failed_groups);
            self.run(&mut batch, &run).await;
            for &i in &run {
                if let (Some(group), Some(o)) = (records[i].group_id.as_deref(), batch.outcome(i)) {
                    if o.retry() {
                        failed_groups.insert(group);
                    }
                }
            }
        }

        let mut result = BatchResult::default();
        for slot in batch.slots {
            let o = slot.outcome.unwrap_or(Outcome::Failed {
                dedupe_key: None,
                error: "not processed".into(),
            });
            if o.retry() {
                let delay = slot.delay.unwrap_or_else(|| {
                    self.config
                        .default_retry
                        .backoff(slot.rec.receive_count, self.jitter.unit())
                });
                self.hold_back(slot.rec, delay).await;
            }
            result.outcomes.push((slot.rec.message_id.clone(), o));
        }
        result
    }

    /// Decode, take the keys of, guard and dispatch the records at `idx` together.
    async fn run(&self, batch: &mut Batch<'_>, idx: &[usize]) {
        let decoded = self.decode(batch, idx).await;
        let mut takes = self.take_keys(batch, decoded).await;
        self.restore_bodies(batch, &mut takes).await;
        let (fresh, versions) = self.guard_all(batch, &takes.taken).await;
        let ready = self.schedule_all(batch, fresh).await;
        self.deliver(batch, &ready, &versions).await;
        self.replay_forced(batch, &takes.forced).await;
        self.follow_leaders(batch, &takes).await;
    }

    /// The records' envelopes; a body that is not one is settled at once.
    async fn decode(&self, batch: &mut Batch<'_>, idx: &[usize]) -> Vec<(usize, Envelope)> {
        let mut decoded = Vec::with_capacity(idx.len());
        for &i in idx {
            let rec = batch.rec(i);
            match Envelope::from_json(&rec.body) {
                Ok(env) => decoded.push((i, env)),
                Err(e) => {
                    error!(message_id = %rec.message_id, error = %e, "undecodable envelope");
                    let o = self
                        .undecodable(rec, format!("undecodable envelope: {e}"))
                        .await;
                    batch.settle(i, o, None);
                }
            }
        }
        decoded
    }

    /// Take the envelopes' dedupe keys. The first record of each key takes it concurrently
    /// with the others (different keys cannot affect one another, and the embedded store
    /// commits the takes together); a later copy of a key waits for its turn, as it depends
    /// on the first's outcome.
    async fn take_keys<'r>(
        &self,
        batch: &mut Batch<'r>,
        decoded: Vec<(usize, Envelope)>,
    ) -> Takes<'r> {
        let mut keys = HashSet::with_capacity(decoded.len());
        let firsts: Vec<bool> = decoded
            .iter()
            .map(|(_, env)| keys.insert(env.dedupe_key.as_str()))
            .collect();
        let mut early = join_all(
            decoded
                .iter()
                .zip(&firsts)
                .filter(|(_, first)| **first)
                .map(|((_, env), _)| self.begin(env)),
        )
        .await
        .into_iter();
        let mut takes = Takes::default();
        for ((i, env), first) in decoded.into_iter().zip(firsts) {
            let begun = if first {
                early.next()
            } else {
                if let Some(leader) = takes.leader_of(&env) {
                    takes.followers.push((i, leader));
                    continue;
                }
                None
            };
            let begun = match begun {
                Some(begun) => begun,
                None => self.begin(&env).await,
            };
            self.on_begun(batch, &mut takes, i, env, begun).await;
        }
        takes
    }

    /// What taking one envelope's key said: ours to dispatch, a forced replay of a done
    /// event, held by someone else, or a ledger failure to retry.
    async fn on_begun<'r>(
        &self,
        batch: &mut Batch<'r>,
        takes: &mut Takes<'r>,
        i: usize,
        env: Envelope,
        begun: Result<BeginOutcome, LedgerError>,
    ) {
        let rec = batch.rec(i);
        match begun {
            Ok(BeginOutcome::Acquired { delivered, .. }) => {
                // An operator's --force sends to every target, whatever had it before.
                let delivered = if env.forced_replay() {
                    BTreeSet::new()
                } else {
                    delivered
                };
                takes.taken.push(Taken::new(i, env, rec, delivered));
            }
            Ok(BeginOutcome::Held(held)) => {
                let o = held_outcome(&env, &held);
                if env.forced_replay() && matches!(o, Outcome::Duplicate { .. }) {
                    takes.forced.push(Taken::new(i, env, rec, BTreeSet::new()));
                    return;
                }
                let delay = matches!(o, Outcome::Busy { .. }).then(|| self.until_lapsed(&held));
                self.note_held(&env, &o, Some(&held)).await;
                batch.settle(i, o, delay);
            }
            Err(e) => {
                warn!(dedupe_key = %env.dedupe_key, error = %e, "dedupe begin failed");
                let delay = self.backoff(&env, rec.receive_count);
                let o = Outcome::Failed {
                    dedupe_key: Some(env.dedupe_key.clone()),
                    error: e.to_string(),
                };
                batch.settle(i, o, Some(delay));
            }
        }
    }

    /// Read back, check and put in place the bodies of the claimed envelopes whose keys we
    /// hold (a duplicate's body is never read). One that cannot be read fails its attempt
    /// like a delivery would: retried while the store may answer, to the DLQ when the blob
    /// is gone or is not what the reference names.
    async fn restore_bodies<'r>(&self, batch: &mut Batch<'r>, takes: &mut Takes<'r>) {
        let held = takes.taken.iter_mut().map(|t| (t, true));
        let forced = takes.forced.iter_mut().map(|t| (t, false));
        let claimed = held.chain(forced).filter(|(t, _)| t.env.is_claimed());
        let reads = claimed.map(|(t, held)| async move {
            let r = t.env.body_ref.clone();
            let read = match (&self.blobs, r) {
                (Some(blobs), Some(r)) => get_blob(&**blobs, &r).await.map_err(|e| match e {
                    BlobError::Backend(_) => DispatchError::Retryable(e.to_string()),
                    _ => DispatchError::Permanent(e.to_string()),
                }),
                _ => Err(DispatchError::Permanent(
                    "the body is in the blob store and this worker has none".into(),
                )),
            };
            (t, held, read)
        });
        for (t, held, read) in join_all(reads).await {
            match read {
                Ok(bytes) => {
                    t.env.restore_body(&bytes);
                    if let Cow::Borrowed(queued) = t.json {
                        t.claim = Some(queued);
                    }
                    t.json = Cow::Owned(t.env.to_json());
                }
                Err(e) => {
                    let rec = batch.rec(t.i);
                    // A forced replay's record is completed and not ours to fail.
                    let (o, d) = if held {
                        self.failed(&t.env, rec, e, self.clock.now_ms()).await
                    } else {
                        self.finish_forced(&t.env, rec, Err(e)).await
                    };
                    batch.settle(t.i, o, d);
                }
            }
        }
    }

    /// Another worker's live lease: try again when it lapses (then the key is ours, or
    /// done), not after a backoff. A lease is live up to and including `lease_until`, hence
    /// the second more.
    fn until_lapsed(&self, held: &DedupeRecord) -> Duration {
        let left = held.lease_until_ms.saturating_sub(self.clock.now_ms()) + 1000;
        clamp_delay(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }

    /// The stale-version guard, before anything is scheduled or delivered: the envelopes to
    /// deliver, and the version each records once delivered.
    async fn guard_all<'t, 'r>(
        &self,
        batch: &mut Batch<'r>,
        taken: &'t [Taken<'r>],
    ) -> (Vec<&'t Taken<'r>>, BTreeMap<usize, Versioned>) {
        let mut versions: BTreeMap<usize, Versioned> = BTreeMap::new();
        let mut fresh: Vec<&Taken> = Vec::with_capacity(taken.len());
        for t in taken {
            if batch.outcome(t.i).is_some() {
                continue;
            }
            match self.guard(&t.env, batch.rec(t.i)).await {
                Guard::Fresh(v) => {
                    if let Some(v) = v {
                        versions.insert(t.i, v);
                    }
                    fresh.push(t);
                }
                Guard::Done(o, d) => batch.settle(t.i, o, d),
            }
        }
        (fresh, versions)
    }

    /// Delayed checks are scheduled before delivery, so a failure to schedule retries the
    /// event before any target saw it: never a second delivery for a check's sake. (A check
    /// scheduled for an event whose delivery then fails only runs a needless poll.)
    async fn schedule_all<'t, 'r>(
        &self,
        batch: &mut Batch<'r>,
        fresh: Vec<&'t Taken<'r>>,
    ) -> Vec<&'t Taken<'r>> {
        let now = self.clock.now_ms();
        let mut ready: Vec<&Taken> = Vec::with_capacity(fresh.len());
        for t in fresh {
            match self.schedule_checks(&t.env, now).await {
                Ok(()) => ready.push(t),
                Err(e) => {
                    let (o, d) = self.checks_failed(&t.env, batch.rec(t.i), e, now).await;
                    batch.settle(t.i, o, d);
                }
            }
        }
        ready
    }

    /// Dispatch the envelopes whose keys we hold, then complete or fail each.
    async fn deliver(
        &self,
        batch: &mut Batch<'_>,
        ready: &[&Taken<'_>],
        versions: &BTreeMap<usize, Versioned>,
    ) {
        let dispatch = self.dispatch(ready, true).await;
        // Each record's completion is its own (one key each), so they run together.
        let finished = join_all(ready.iter().zip(dispatch).map(|(t, delivery)| {
            self.finish(&t.env, batch.rec(t.i), versions.get(&t.i), delivery)
        }))
        .await;
        for (t, (o, d)) in ready.iter().zip(finished) {
            batch.settle(t.i, o, d);
        }
    }

    /// Done events an operator replayed with --force: dispatched again, outside dedupe.
    async fn replay_forced(&self, batch: &mut Batch<'_>, forced: &[Taken<'_>]) {
        if forced.is_empty() {
            return;
        }
        // The record is completed, not ours: nothing to mark in it.
        let sends: Vec<&Taken> = forced
            .iter()
            .filter(|t| batch.outcome(t.i).is_none())
            .collect();
        let dispatch = self.dispatch(&sends, false).await;
        for (t, delivery) in sends.iter().zip(dispatch) {
            let (o, d) = self
                .finish_forced(&t.env, batch.rec(t.i), delivery.result)
                .await;
            batch.settle(t.i, o, d);
        }
    }

    /// Later copies of a key taken in this batch (a provider retry that arrived before the
    /// first copy was processed) follow the first copy's outcome, without a ledger call of
    /// their own.
    async fn follow_leaders(&self, batch: &mut Batch<'_>, takes: &Takes<'_>) {
        for &(i, leader) in &takes.followers {
            let (leader_i, env) = (takes.taken[leader].i, &takes.taken[leader].env);
            let key = || env.dedupe_key.clone();
            let (o, delay) = match batch.outcome(leader_i) {
                Some(Outcome::Dispatched { .. } | Outcome::Stale { .. }) => {
                    (Outcome::Duplicate { dedupe_key: key() }, None)
                }
                // The same bytes are in the DLQ already: a second copy there adds nothing.
                Some(Outcome::DeadLettered { reason, .. }) => (
                    Outcome::DeadLettered {
                        dedupe_key: Some(key()),
                        reason: reason.clone(),
                    },
                    None,
                ),
                // The first copy failed and will be retried; so is this one, and dedupe
                // decides between them next time.
                _ => (Outcome::Busy { dedupe_key: key() }, batch.delay(leader_i)),
            };
            self.note_held(env, &o, None).await;
            batch.settle(i, o, delay);
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
        // Nothing new reached a target: the set of earlier attempts stays as it is.
        if let Err(e) = self
            .ledger
            .complete(&key, now, now + self.window(env), &BTreeSet::new())
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
            expires_at_ms: self.config.settings.trail_expires_at(now),
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
            let now = self.clock.now_ms();
            let entry = TrailEntry {
                id: uuid::Uuid::new_v4().to_string(),
                at_ms: now,
                source,
                status: TrailStatus::Dead,
                dedupe_key: None,
                provider_event_id: None,
                event_type: None,
                reason: Some(reason.clone()),
                source_ip: None,
                expires_at_ms: self.config.settings.trail_expires_at(now),
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
                    object_id: env.object_id.clone(),
                    caller_ip: env.caller_ip.clone(),
                    amount: env.amount,
                    currency: env.currency.clone(),
                    key_id: env.verified.key_id.clone(),
                    request_key: env.request_ref.as_ref().map(|r| r.key.clone()),
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
            expires_at_ms: self.config.settings.trail_expires_at(now),
        };
        if let Err(e) = self.ledger.append(&entry).await {
            warn!(dedupe_key = %env.dedupe_key, error = %e, "could not record trail entry");
        }
    }

    /// Record a duplicate or a conflict in the trail, within the trail's bounds; `holder`: the
    /// record that holds the key, when at hand (a conflict with it is that key's first).
    async fn note_held(&self, env: &Envelope, outcome: &Outcome, holder: Option<&DedupeRecord>) {
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
            // A slot's id replaces it.
            id: String::new(),
            at_ms: now,
            source: env.source.clone(),
            status,
            dedupe_key: Some(env.dedupe_key.clone()),
            provider_event_id: env.provider_event_id.clone(),
            event_type: env.event_type.clone(),
            reason: (status == TrailStatus::Conflict)
                .then(|| format!("body_sha256 {}", env.body_sha256)),
            source_ip: None,
            expires_at_ms: self.config.settings.trail_expires_at(now),
        };
        let ledger = &*self.ledger;
        let stored = match holder {
            Some(h) if status == TrailStatus::Conflict => {
                trail::append_conflict(
                    ledger,
                    &self.trail_budget,
                    entry,
                    &env.dedupe_key,
                    &h.body_sha256,
                )
                .await
            }
            _ => trail::append_bounded(ledger, &self.trail_budget, entry).await,
        };
        if let Err(e) = stored {
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

    /// Group envelopes by target and deliver each to its routed targets that do not have it
    /// yet; an envelope succeeds when all of them do. With `held` (the keys are ours), each
    /// success is marked in the dedupe record as soon as the target answers — except the
    /// last target of an event delivered everywhere, which `complete` records.
    async fn dispatch(&self, envelopes: &[&Taken<'_>], held: bool) -> Vec<Delivery> {
        let mut per_target: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut sends: Vec<Sending> = Vec::with_capacity(envelopes.len());
        for (n, t) in envelopes.iter().enumerate() {
            let send = self.route(t);
            for id in &send.pending {
                per_target.entry(id.clone()).or_default().push(n);
            }
            sends.push(send);
        }
        for (target_id, idx) in per_target {
            let results = self.send_to(&target_id, envelopes, &idx).await;
            for (n, result) in idx.into_iter().zip(results) {
                self.answered(&mut sends[n], &envelopes[n].env, &target_id, result, held)
                    .await;
            }
        }
        sends
            .into_iter()
            .map(|s| Delivery {
                result: DispatchError::merge(s.failures).map_or(Ok(()), Err),
                delivered: s.delivered,
            })
            .collect()
    }

    /// The envelope's routed targets that do not have it yet.
    fn route(&self, t: &Taken<'_>) -> Sending {
        let routed = self.config.targets_for(&t.env.source, &event_names(&t.env));
        let mut failures = Vec::new();
        if routed.is_empty() {
            failures.push(DispatchError::Permanent(format!(
                "no route for source {}",
                t.env.source
            )));
        }
        let pending = routed
            .into_iter()
            .filter(|id| !t.delivered.contains(id))
            .collect();
        if !t.delivered.is_empty() {
            debug!(dedupe_key = %t.env.dedupe_key, skipped = ?t.delivered, "not sent again to the targets that have it");
        }
        Sending {
            pending,
            failures,
            delivered: t.delivered.clone(),
        }
    }

    /// `target_id`'s answer for each envelope at `idx`, in order.
    async fn send_to(
        &self,
        target_id: &str,
        envelopes: &[&Taken<'_>],
        idx: &[usize],
    ) -> Vec<Result<(), DispatchError>> {
        let Some(target) = self.targets.get(target_id) else {
            let missing =
                || DispatchError::Permanent(format!("target {target_id} is not configured"));
            return idx.iter().map(|_| Err(missing())).collect();
        };
        let outgoing: Vec<Outgoing> = idx
            .iter()
            .map(|&n| {
                let t = envelopes[n];
                Outgoing::new(&t.env, &t.json).with_claim(t.claim)
            })
            .collect();
        let mut results = target.deliver(&outgoing).await;
        // A target owes one result per envelope; a short answer is no delivery.
        results.resize_with(idx.len(), || {
            Err(DispatchError::Retryable(format!(
                "target {target_id} returned no result for this event"
            )))
        });
        results
    }

    /// One target's answer for one envelope: a success is marked at once when `held`, unless
    /// it completes the event (see `dispatch`); a failure is counted against the target.
    async fn answered(
        &self,
        send: &mut Sending,
        env: &Envelope,
        target_id: &str,
        result: Result<(), DispatchError>,
        held: bool,
    ) {
        send.pending.remove(target_id);
        match result {
            Ok(()) => {
                send.delivered.insert(target_id.to_owned());
                if held && !(send.pending.is_empty() && send.failures.is_empty()) {
                    self.mark_delivered(env, target_id).await;
                }
            }
            Err(e) => {
                let e = e.naming(target_id);
                warn!(source = %env.source, dedupe_key = %env.dedupe_key, target_id = %target_id, error = %e, "target failed");
                metrics::count_by(
                    self.clock.now_ms(),
                    "target_failures",
                    &env.source,
                    ("target", target_id),
                );
                send.failures.push(e);
            }
        }
    }

    /// Record that `target_id` has the event. A failure here is not the event's: it did
    /// reach the target, and unrecorded, a retry only sends it there again (a target takes a
    /// repeat: the same `webhook-id` / `dedupe_key`).
    async fn mark_delivered(&self, env: &Envelope, target_id: &str) {
        if let Err(e) = self
            .ledger
            .mark_delivered(&env.dedupe_key, target_id, self.clock.now_ms())
            .await
        {
            warn!(dedupe_key = %env.dedupe_key, target_id = %target_id, error = %e, "delivered but not recorded; a retry may send it to this target again");
        }
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
                    expires_at_ms: self.config.settings.trail_expires_at(now),
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
        delivery: Delivery,
    ) -> (Outcome, Option<Duration>) {
        let now = self.clock.now_ms();
        let key = env.dedupe_key.clone();
        match delivery.result {
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
                    .complete(&key, now, now + self.window(env), &delivery.delivered)
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

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tokio::sync::Notify;

    use super::*;
    use crate::adapters::embedded::{EmbeddedStore, SqliteLedger};
    use crate::config::{self, ConfigDoc};
    use crate::envelope::{sha256_hex, BodyEncoding, Replay, VerifiedBy};
    use crate::ports::{LedgerError, ManualClock, TrailQuery, TrailRow};

    const T0: i64 = 1_767_225_600_000;

    /// A target that answers `failures` errors first, then accepts; it counts what it
    /// accepted and every call. With `hang`, its first call never returns (a worker that
    /// dies mid-dispatch) and says so on `entered`.
    struct Scripted {
        id: &'static str,
        failures: AtomicU32,
        error: DispatchError,
        hang: bool,
        entered: Notify,
        calls: AtomicU32,
        accepted: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(id: &'static str, failures: u32, error: DispatchError) -> Arc<Self> {
            Arc::new(Self {
                id,
                failures: AtomicU32::new(failures),
                error,
                hang: false,
                entered: Notify::new(),
                calls: AtomicU32::new(0),
                accepted: Mutex::new(Vec::new()),
            })
        }

        fn healthy(id: &'static str) -> Arc<Self> {
            Self::new(id, 0, DispatchError::Retryable(String::new()))
        }

        fn hanging(id: &'static str) -> Arc<Self> {
            Arc::new(Self {
                hang: true,
                ..Arc::into_inner(Self::healthy(id)).expect("sole owner")
            })
        }

        fn accepted(&self) -> Vec<String> {
            self.accepted.lock().expect("lock").clone()
        }

        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Target for Scripted {
        fn id(&self) -> &str {
            self.id
        }

        async fn deliver(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>> {
            let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
            if self.hang && first {
                self.entered.notify_one();
                std::future::pending::<()>().await;
            }
            events
                .iter()
                .map(|o| o.envelope)
                .map(|e| {
                    let left = self.failures.load(Ordering::SeqCst);
                    if left > 0 {
                        self.failures.store(left - 1, Ordering::SeqCst);
                        return Err(self.error.clone());
                    }
                    self.accepted
                        .lock()
                        .expect("lock")
                        .push(e.dedupe_key.clone());
                    Ok(())
                })
                .collect()
        }
    }

    /// The SQLite ledger, counting `mark_delivered` calls (what each costs on DynamoDB) and
    /// the most `begin`s and `complete`s in flight at once.
    struct Counting {
        inner: SqliteLedger,
        marks: AtomicUsize,
        begins: InFlight,
        completes: InFlight,
    }

    #[derive(Default)]
    struct InFlight {
        now: AtomicUsize,
        most: AtomicUsize,
    }

    impl InFlight {
        /// Run `call`, yielding once first so that calls the worker issues together are all
        /// seen in flight before any of them proceeds.
        async fn track<T>(&self, call: impl std::future::Future<Output = T>) -> T {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            tokio::task::yield_now().await;
            let out = call.await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            out
        }
    }

    #[async_trait]
    impl Ledger for Counting {
        async fn begin(&self, req: &BeginRequest) -> Result<BeginOutcome, LedgerError> {
            self.begins.track(self.inner.begin(req)).await
        }
        async fn complete(
            &self,
            key: &str,
            now_ms: i64,
            expires_at_ms: i64,
            delivered: &BTreeSet<String>,
        ) -> Result<(), LedgerError> {
            self.completes
                .track(self.inner.complete(key, now_ms, expires_at_ms, delivered))
                .await
        }
        async fn mark_delivered(
            &self,
            key: &str,
            target_id: &str,
            now_ms: i64,
        ) -> Result<(), LedgerError> {
            self.marks.fetch_add(1, Ordering::SeqCst);
            self.inner.mark_delivered(key, target_id, now_ms).await
        }
        async fn fail(
            &self,
            key: &str,
            now_ms: i64,
            error: &str,
            dead: bool,
        ) -> Result<(), LedgerError> {
            self.inner.fail(key, now_ms, error, dead).await
        }
        async fn get(&self, key: &str) -> Result<Option<DedupeRecord>, LedgerError> {
            self.inner.get(key).await
        }
        async fn append(&self, entry: &TrailEntry) -> Result<(), LedgerError> {
            self.inner.append(entry).await
        }
        async fn lookup(
            &self,
            by: crate::ports::Lookup<'_>,
            now_ms: i64,
        ) -> Result<Vec<crate::ports::TrailRow>, LedgerError> {
            self.inner.lookup(by, now_ms).await
        }
        async fn append_new(&self, entry: &TrailEntry) -> Result<bool, LedgerError> {
            self.inner.append_new(entry).await
        }
        async fn list(&self, query: &TrailQuery) -> Result<Vec<TrailRow>, LedgerError> {
            self.inner.list(query).await
        }
        async fn applied_version(
            &self,
            source: &str,
            entity: &str,
        ) -> Result<Option<i64>, LedgerError> {
            self.inner.applied_version(source, entity).await
        }
        async fn record_version(
            &self,
            source: &str,
            entity: &str,
            version: i64,
            now_ms: i64,
        ) -> Result<bool, LedgerError> {
            self.inner
                .record_version(source, entity, version, now_ms)
                .await
        }
    }

    struct Harness {
        store: EmbeddedStore,
        clock: Arc<ManualClock>,
        ledger: Arc<Counting>,
        config: Arc<Config>,
    }

    /// Source `games` routed to `targets` (jsonl in the config; the tests supply their own).
    fn harness(targets: &[&str]) -> Harness {
        let mut text = String::from(
            r#"
            [settings]
            environment = "local"
            [[sources]]
            id = "games"
            provider = "generic"
            secrets = ["literal:webhook-secret"]
            options = { signature = { header = "x-sig" }, event_id = { json_pointer = "/id" } }
            "#,
        );
        for t in targets {
            text.push_str(&format!(
                "[[targets]]\nid = \"{t}\"\nkind = \"jsonl\"\npath = \"{t}.jsonl\"\n"
            ));
        }
        text.push_str(&format!(
            "[[routes]]\nsources = [\"*\"]\ntargets = {targets:?}\n"
        ));
        let doc = ConfigDoc::parse(&text, Some("toml")).expect("config parses");
        let config = config::validate(doc, ".".into(), &|_: &str| None).expect("valid config");
        let clock = Arc::new(ManualClock::new(T0));
        let store = EmbeddedStore::open_in_memory(clock.clone()).expect("store");
        Harness {
            ledger: Arc::new(Counting {
                inner: store.ledger(),
                marks: AtomicUsize::new(0),
                begins: InFlight::default(),
                completes: InFlight::default(),
            }),
            store,
            clock,
            config: Arc::new(config),
        }
    }

    impl Harness {
        fn worker(&self, targets: &[Arc<Scripted>]) -> Worker {
            let targets = targets
                .iter()
                .map(|t| (t.id.to_owned(), t.clone() as Arc<dyn Target>))
                .collect();
            Worker::new(
                self.config.clone(),
                self.ledger.clone(),
                targets,
                self.clock.clone(),
            )
        }

        fn with_dlq(&self, worker: Worker) -> Worker {
            worker.with_queues(
                Arc::new(self.store.queue("events", None)),
                Arc::new(self.store.queue("dead", None)),
            )
        }

        async fn record(&self, key: &str) -> DedupeRecord {
            self.ledger
                .get(key)
                .await
                .expect("get")
                .expect("the record exists")
        }
    }

    fn envelope(n: u32) -> Envelope {
        let body = format!(r#"{{"id":"e{n}"}}"#);
        Envelope {
            v: 1,
            source: "games".into(),
            provider: "generic".into(),
            via: Via::Webhook,
            dedupe_key: format!("games#e{n}"),
            provider_event_id: Some(format!("e{n}")),
            event_type: None,
            canonical_type: None,
            entity: None,
            object_id: None,
            amount: None,
            currency: None,
            occurred_at: None,
            received_at: crate::time::format_rfc3339_ms(T0),
            verified: VerifiedBy {
                scheme: "hmac".into(),
                key_id: None,
            },
            caller_ip: None,
            headers: Default::default(),
            body_sha256: sha256_hex(body.as_bytes()),
            body,
            body_encoding: BodyEncoding::Utf8,
            part: None,
            body_ref: None,
            request_ref: None,
            replay: None,
        }
    }

    fn record(env: &Envelope, receive_count: u32) -> WorkerRecord {
        WorkerRecord {
            message_id: format!("m-{}-{receive_count}", env.dedupe_key),
            body: env.to_json(),
            receive_count,
            receipt_handle: None,
            group_id: None,
        }
    }

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|t| t.to_string()).collect()
    }

    async fn outcome(worker: &Worker, rec: WorkerRecord) -> Outcome {
        let mut r = worker.process(&[rec]).await;
        assert_eq!(r.outcomes.len(), 1);
        r.outcomes.remove(0).1
    }

    #[tokio::test]
    async fn a_batch_takes_and_completes_its_keys_together_and_keeps_copies_in_order() {
        let h = harness(&["t"]);
        let t = Scripted::healthy("t");
        let worker = h.worker(std::slice::from_ref(&t));
        let mut batch: Vec<WorkerRecord> = (0..10).map(|n| record(&envelope(n), 1)).collect();
        // A provider's retry of e0 (same bytes) and a different body under e3's key.
        batch.push(WorkerRecord {
            message_id: "copy-of-e0".into(),
            ..record(&envelope(0), 1)
        });
        let mut other = envelope(3);
        other.body = r#"{"id":"e3","changed":true}"#.into();
        other.body_sha256 = sha256_hex(other.body.as_bytes());
        batch.push(WorkerRecord {
            message_id: "other-e3".into(),
            ..record(&other, 1)
        });

        let result = worker.process(&batch).await;

        // One call in flight per distinct key: the takes (and the completions) were issued
        // together, so the embedded store can commit them as one.
        assert_eq!(h.ledger.begins.most.load(Ordering::SeqCst), 10);
        assert_eq!(h.ledger.completes.most.load(Ordering::SeqCst), 10);
        let kinds: Vec<&str> = result
            .outcomes
            .iter()
            .map(|(_, o)| match o {
                Outcome::Dispatched { .. } => "dispatched",
                Outcome::Duplicate { .. } => "duplicate",
                Outcome::Conflict { .. } => "conflict",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            [vec!["dispatched"; 10], vec!["duplicate", "conflict"]].concat()
        );
        // Delivered once each, in batch order.
        assert_eq!(
            t.accepted(),
            (0..10).map(|n| format!("games#e{n}")).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_copy_of_a_failed_event_in_the_same_batch_stays_hidden_as_long_as_the_first() {
        let h = harness(&["slow"]);
        let slow = Scripted::new(
            "slow",
            1,
            DispatchError::RetryAfter {
                message: "HTTP 503".into(),
                after: Duration::from_secs(600),
            },
        );
        let worker = h.with_dlq(h.worker(std::slice::from_ref(&slow)));
        let queue = h.store.queue("events", None);
        let env = envelope(7);
        for _ in 0..2 {
            queue
                .send(&OutboundMessage::new(env.to_json()))
                .await
                .expect("send");
        }
        let receive = || queue.receive(10, Duration::from_secs(30), Duration::ZERO);
        let records: Vec<WorkerRecord> = receive()
            .await
            .expect("receive")
            .iter()
            .map(WorkerRecord::from)
            .collect();
        assert_eq!(records.len(), 2);

        let result = worker.process(&records).await;

        assert!(
            matches!(result.outcomes[0].1, Outcome::Failed { .. }),
            "{result:?}"
        );
        assert!(
            matches!(result.outcomes[1].1, Outcome::Busy { .. }),
            "{result:?}"
        );
        assert_eq!(slow.calls(), 1, "the copy is not dispatched");
        // The copy waits for the target's Retry-After like the first, not the (much shorter)
        // default backoff: neither comes back before it, both after.
        h.clock.advance_ms(599_000);
        assert!(receive().await.expect("receive").is_empty());
        h.clock.advance_ms(2_000);
        assert_eq!(receive().await.expect("receive").len(), 2);
    }

    #[tokio::test]
    async fn a_retry_sends_only_to_the_target_that_failed() {
        let h = harness(&["good", "bad"]);
        let good = Scripted::healthy("good");
        let bad = Scripted::new("bad", 3, DispatchError::Retryable("HTTP 503".into()));
        let worker = h.worker(&[good.clone(), bad.clone()]);
        let env = envelope(1);

        for attempt in 1..=3 {
            match outcome(&worker, record(&env, attempt)).await {
                Outcome::Failed { error, .. } => {
                    assert_eq!(error, "target bad: HTTP 503", "the reason names the target")
                }
                other => panic!("attempt {attempt}: {other:?}"),
            }
            let r = h.record(&env.dedupe_key).await;
            assert_eq!(
                (r.status, r.delivered),
                (DedupeStatus::Failed, set(&["good"]))
            );
            h.clock.advance_ms(1_000);
        }
        assert_eq!(
            outcome(&worker, record(&env, 4)).await,
            Outcome::Dispatched {
                dedupe_key: env.dedupe_key.clone()
            }
        );
        assert_eq!(
            good.accepted(),
            vec![env.dedupe_key.clone()],
            "exactly once"
        );
        assert_eq!(good.calls(), 1, "never called again");
        assert_eq!((bad.calls(), bad.accepted().len()), (4, 1));
        let r = h.record(&env.dedupe_key).await;
        assert_eq!(
            (r.status, r.attempts, r.delivered),
            (DedupeStatus::Completed, 4, set(&["bad", "good"]))
        );
        // `good` was marked the once it succeeded; `bad`'s success came last, recorded by
        // `complete`.
        assert_eq!(h.ledger.marks.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_single_target_route_is_recorded_by_complete_alone() {
        let h = harness(&["only"]);
        let only = Scripted::healthy("only");
        let worker = h.worker(std::slice::from_ref(&only));
        let env = envelope(2);
        assert!(matches!(
            outcome(&worker, record(&env, 1)).await,
            Outcome::Dispatched { .. }
        ));
        assert_eq!(h.ledger.marks.load(Ordering::SeqCst), 0, "no extra write");
        assert_eq!(h.record(&env.dedupe_key).await.delivered, set(&["only"]));
    }

    #[tokio::test]
    async fn a_worker_that_dies_mid_dispatch_leaves_its_delivered_targets_to_be_skipped() {
        let h = harness(&["alpha", "omega"]);
        let alpha = Scripted::healthy("alpha");
        // Targets are called in id order: alpha answers, then the worker dies inside omega.
        let omega = Scripted::hanging("omega");
        let worker = h.worker(&[alpha.clone(), omega.clone()]);
        let env = envelope(3);
        let first = [record(&env, 1)];
        tokio::select! {
            _ = worker.process(&first) => panic!("omega never answers"),
            _ = omega.entered.notified() => {}
        }
        let r = h.record(&env.dedupe_key).await;
        assert_eq!(
            (r.status, r.delivered),
            (DedupeStatus::InProgress, set(&["alpha"]))
        );

        // While the lease is live nobody else dispatches; once it lapsed, the next receive
        // takes the key and sends only to omega.
        assert!(matches!(
            outcome(&worker, record(&env, 2)).await,
            Outcome::Busy { .. }
        ));
        h.clock.advance_ms(h.config.lease_ms_for("games") + 1);
        assert!(matches!(
            outcome(&worker, record(&env, 3)).await,
            Outcome::Dispatched { .. }
        ));
        assert_eq!(alpha.accepted(), vec![env.dedupe_key.clone()]);
        assert_eq!(alpha.calls(), 1);
        assert_eq!(omega.accepted(), vec![env.dedupe_key.clone()]);
        assert_eq!(
            h.record(&env.dedupe_key).await.delivered,
            set(&["alpha", "omega"])
        );
    }

    #[tokio::test]
    async fn a_permanent_failure_dead_letters_naming_the_target_and_a_replay_sends_only_there() {
        let h = harness(&["good", "strict"]);
        let good = Scripted::healthy("good");
        let strict = Scripted::new(
            "strict",
            1,
            DispatchError::Permanent("answered HTTP 400".into()),
        );
        let worker = h.with_dlq(h.worker(&[good.clone(), strict.clone()]));
        let env = envelope(4);
        assert_eq!(
            outcome(&worker, record(&env, 1)).await,
            Outcome::DeadLettered {
                dedupe_key: Some(env.dedupe_key.clone()),
                reason: "target strict: answered HTTP 400".into()
            }
        );
        let r = h.record(&env.dedupe_key).await;
        assert_eq!((r.dead, r.delivered), (true, set(&["good"])));

        // `inlet replay` (without --force) puts the same body back on the queue.
        assert!(matches!(
            outcome(&worker, record(&env, 1)).await,
            Outcome::Dispatched { .. }
        ));
        assert_eq!(good.accepted().len(), 1, "not sent to good again");
        assert_eq!(strict.accepted(), vec![env.dedupe_key.clone()]);

        // `inlet replay --force` sends to every target.
        let mut forced = env.clone();
        forced.replay = Some(Replay {
            at: crate::time::format_rfc3339_ms(T0),
            forced: true,
        });
        assert!(matches!(
            outcome(&worker, record(&forced, 1)).await,
            Outcome::Dispatched { .. }
        ));
        assert_eq!((good.accepted().len(), strict.accepted().len()), (2, 2));
    }

    #[tokio::test]
    async fn a_forced_replay_of_a_dead_event_sends_to_every_target() {
        let h = harness(&["good", "strict"]);
        let good = Scripted::healthy("good");
        let strict = Scripted::new(
            "strict",
            1,
            DispatchError::Permanent("answered HTTP 400".into()),
        );
        let worker = h.with_dlq(h.worker(&[good.clone(), strict.clone()]));
        let mut env = envelope(5);
        assert!(matches!(
            outcome(&worker, record(&env, 1)).await,
            Outcome::DeadLettered { .. }
        ));
        env.replay = Some(Replay {
            at: crate::time::format_rfc3339_ms(T0),
            forced: true,
        });
        assert!(matches!(
            outcome(&worker, record(&env, 1)).await,
            Outcome::Dispatched { .. }
        ));
        assert_eq!((good.accepted().len(), strict.accepted().len()), (2, 1));
    }

    #[tokio::test]
    async fn failures_at_two_targets_merge_permanent_first_and_each_is_counted() {
        crate::metrics::capture();
        let h = harness(&["flaky", "strict"]);
        let flaky = Scripted::new("flaky", 1, DispatchError::Retryable("timeout".into()));
        let strict = Scripted::new(
            "strict",
            1,
            DispatchError::Permanent("answered HTTP 400".into()),
        );
        let worker = h.with_dlq(h.worker(&[flaky, strict]));
        let env = envelope(6);
        assert_eq!(
            outcome(&worker, record(&env, 1)).await,
            Outcome::DeadLettered {
                dedupe_key: Some(env.dedupe_key.clone()),
                reason: "target flaky: timeout; target strict: answered HTTP 400".into()
            }
        );
        assert_eq!(crate::metrics::captured("target_failures"), vec![1.0, 1.0]);
    }
}
