use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger backend: {0}")]
    Backend(String),
    #[error("no dedupe record for {0}")]
    NotFound(String),
    #[error("corrupt ledger item: {0}")]
    Corrupt(String),
    /// A write meant for the key's holder found the record no longer in progress.
    #[error("dedupe record {0} is not in progress")]
    NotHeld(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DedupeStatus {
    InProgress,
    Completed,
    Failed,
}

impl DedupeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DedupeStatus::InProgress => "IN_PROGRESS",
            DedupeStatus::Completed => "COMPLETED",
            DedupeStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IN_PROGRESS" => Some(DedupeStatus::InProgress),
            "COMPLETED" => Some(DedupeStatus::Completed),
            "FAILED" => Some(DedupeStatus::Failed),
            _ => None,
        }
    }
}

/// One dedupe record per key. It is also the trail record of an accepted event (who,
/// when, which event, with what result), so an accepted event costs two writes.
/// What the trail shows about an event beyond its id and type: who, which payment, which
/// key verified it. Stored as one JSON attribute so adding a field needs no migration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// The payment, refund or order the event reports on: what support has in hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// Where a webhook came from (a poll has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_ip: Option<String>,
    /// Minor units of `currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Id of the secret that verified the request (never the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Where the request the event came in is archived (`requests/<sha256>`), if its source
    /// archives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_key: Option<String>,
}

impl EventSummary {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The stored form: `None` when there is nothing to store.
    pub fn to_json(&self) -> Option<String> {
        (!self.is_empty()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// Read back the stored form; text that is not a summary reads as an empty one rather
    /// than hiding the record it belongs to.
    pub fn from_json(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeRecord {
    pub key: String,
    pub source: String,
    pub status: DedupeStatus,
    pub body_sha256: String,
    pub provider_event_id: Option<String>,
    pub event_type: Option<String>,
    pub via: String,
    pub received_at_ms: i64,
    pub updated_at_ms: i64,
    pub lease_until_ms: i64,
    /// Set on completion: the record stops deduplicating after this instant. Backends may
    /// delete lazily (DynamoDB TTL), so readers always compare it themselves.
    pub expires_at_ms: Option<i64>,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The last failure happened on the final receive: the message went to the DLQ.
    pub dead: bool,
    pub summary: EventSummary,
    /// The targets that accepted the event in this attempt cycle (since the key was last
    /// taken fresh): a retry sends only to the others. Completion adds the rest.
    pub delivered: BTreeSet<String>,
}

/// Everything `begin` writes when it takes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginRequest {
    pub key: String,
    pub source: String,
    pub body_sha256: String,
    pub provider_event_id: Option<String>,
    pub event_type: Option<String>,
    pub via: String,
    pub received_at_ms: i64,
    pub now_ms: i64,
    pub lease_until_ms: i64,
    pub summary: EventSummary,
}

// The large variant is the common duplicate path's payload; boxing it would only add an
// allocation to every duplicate.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginOutcome {
    /// The conditional write succeeded: the caller holds the key until `lease_until_ms`.
    /// `attempts` counts this one. `delivered`: the targets an earlier attempt on the same
    /// body already delivered to (its key given back failed, or its lease lapsed); empty for
    /// a new key or one re-taken after it expired.
    Acquired {
        attempts: u32,
        delivered: BTreeSet<String>,
    },
    /// The condition failed; this is the record that holds the key (read in the same call).
    Held(DedupeRecord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrailStatus {
    Refused,
    Duplicate,
    Conflict,
    /// One poll run: its outcome and counts are in `reason`.
    PollRun,
    /// An event a reconciling poll delivered before any webhook did.
    MissedWebhook,
    /// A delayed check was satisfied or fired (which, and how, is in `reason`).
    Check,
    /// A message the worker moved to the DLQ that has no dedupe record to say so (its body
    /// is not an envelope); why is in `reason`.
    Dead,
    /// An event dispatched again although it was done: an operator's `inlet replay --force`.
    ForcedReplay,
    /// An update older than (or as old as) the last one applied to its entity: dropped, not
    /// dispatched. Both versions are in `reason`.
    Stale,
    /// An operator reset a poll source's cursor (`inlet cursor --reset`): who, and the
    /// cursor it had, are in `reason`.
    CursorReset,
    /// An archived event sent again to one target (`inlet redeliver`): the target, the run
    /// and who are in `reason`.
    Redelivered,
}

impl TrailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TrailStatus::Refused => "refused",
            TrailStatus::Duplicate => "duplicate",
            TrailStatus::Conflict => "conflict",
            TrailStatus::PollRun => "poll_run",
            TrailStatus::MissedWebhook => "missed_webhook",
            TrailStatus::Check => "check",
            TrailStatus::Dead => "dead",
            TrailStatus::ForcedReplay => "forced_replay",
            TrailStatus::Stale => "stale",
            TrailStatus::CursorReset => "cursor_reset",
            TrailStatus::Redelivered => "redelivered",
        }
    }

    pub const ALL: [TrailStatus; 11] = [
        TrailStatus::Refused,
        TrailStatus::Duplicate,
        TrailStatus::Conflict,
        TrailStatus::PollRun,
        TrailStatus::MissedWebhook,
        TrailStatus::Check,
        TrailStatus::Dead,
        TrailStatus::ForcedReplay,
        TrailStatus::Stale,
        TrailStatus::CursorReset,
        TrailStatus::Redelivered,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// An append-only trail entry for what has no dedupe record of its own: refusals,
/// duplicates, conflicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailEntry {
    pub id: String,
    pub at_ms: i64,
    pub source: String,
    pub status: TrailStatus,
    pub dedupe_key: Option<String>,
    pub provider_event_id: Option<String>,
    pub event_type: Option<String>,
    pub reason: Option<String>,
    pub source_ip: Option<String>,
    /// The entry is kept until this instant (`at_ms` plus the trail's retention): no read
    /// returns it after, and each backend deletes it (DynamoDB's TTL, lazily; the embedded
    /// store on its next writes).
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrailQuery {
    pub source: Option<String>,
    pub limit: usize,
    /// Entries that expired before this instant are left out even while a backend still
    /// stores them (0 leaves none out).
    pub now_ms: i64,
    /// Only rows from this instant on / up to this one (a record's `received_at_ms`, an
    /// entry's `at_ms`). With a source, both backends read only that stretch of its index.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl TrailQuery {
    /// Whether `row` falls in the query's time window.
    pub fn in_window(&self, row: &TrailRow) -> bool {
        let at = row.at_ms();
        self.since_ms.is_none_or(|s| at >= s) && self.until_ms.is_none_or(|u| at <= u)
    }
}

/// What a support person has in hand, found through an index (no listing of a source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The records whose event reports on this object: a payment, refund or order id
    /// ([`EventSummary::object_id`]).
    Object(&'a str),
    /// The trail entries about this dedupe key: duplicates, conflicts, forced replays, the
    /// move to the dead-letter queue.
    Entries(&'a str),
}

/// The most rows one lookup returns: an id names a handful of events, so more is a sign
/// of a shared id, and reading every row would cost what the caller did not ask for.
pub const LOOKUP_LIMIT: usize = 200;

/// A line of `inlet events`: either a dedupe record or a trail entry.
// Rows exist only in an operator's bounded listing, most of them records: boxing the record
// would add an allocation to nearly every row to save a few hundred bytes on the others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrailRow {
    Record(DedupeRecord),
    Entry(TrailEntry),
}

impl TrailRow {
    pub fn at_ms(&self) -> i64 {
        match self {
            TrailRow::Record(r) => r.received_at_ms,
            TrailRow::Entry(e) => e.at_ms,
        }
    }
}

/// Dedupe records and the event trail. The state machine's decisions live in the domain
/// (`dedupe`); adapters only implement the conditional writes.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Conditionally take the key. The write succeeds when no record exists, or it expired
    /// (`expires_at < now`), or — with the same `body_sha256` — it is FAILED or IN_PROGRESS
    /// with a lapsed lease. Otherwise returns the holding record, read in the same call.
    /// A key re-taken after it expired starts a new cycle: `attempts` 1, nothing delivered.
    async fn begin(&self, req: &BeginRequest) -> Result<BeginOutcome, LedgerError>;

    /// IN_PROGRESS → COMPLETED, deduplicating until `expires_at_ms`; `delivered` (the
    /// targets that now have the event) is added to the record's set in the same write.
    async fn complete(
        &self,
        key: &str,
        now_ms: i64,
        expires_at_ms: i64,
        delivered: &BTreeSet<String>,
    ) -> Result<(), LedgerError>;

    /// Add `target_id` to the record's `delivered` set, only while the record is
    /// IN_PROGRESS (`NotHeld` otherwise, `NotFound` when there is none).
    ///
    /// Why "in progress" is condition enough though the record names no holder: a key is
    /// re-taken in progress only for the same `body_sha256`, so whoever holds it now holds
    /// the very event this target accepted, and is right to skip that target. (A key re-taken
    /// after it expired is a new event, but expiry needs the record completed and its whole
    /// dedupe window passed: days, against a dispatch bounded by the worker's timeout.) A
    /// completed or failed record is left alone: completion wrote its set, and a failed one
    /// keeps what its holder marked.
    async fn mark_delivered(
        &self,
        key: &str,
        target_id: &str,
        now_ms: i64,
    ) -> Result<(), LedgerError>;

    /// IN_PROGRESS → FAILED with the error; `dead` when this was the last attempt.
    async fn fail(
        &self,
        key: &str,
        now_ms: i64,
        error: &str,
        dead: bool,
    ) -> Result<(), LedgerError>;

    async fn get(&self, key: &str) -> Result<Option<DedupeRecord>, LedgerError>;

    /// Store the entry, replacing one with the same id.
    async fn append(&self, entry: &TrailEntry) -> Result<(), LedgerError>;

    /// Store the entry only when no entry has its id (one conditional write): `false` when
    /// one had, which is left as it was. With ids drawn from a fixed set of slots, this is
    /// what bounds the trail however many writers there are (see `crate::trail`).
    async fn append_new(&self, entry: &TrailEntry) -> Result<bool, LedgerError>;

    /// Newest first, records and entries merged; entries expired at `query.now_ms` left out.
    async fn list(&self, query: &TrailQuery) -> Result<Vec<TrailRow>, LedgerError>;

    /// The rows `by` names, newest first, entries expired at `now_ms` left out, at most
    /// [`LOOKUP_LIMIT`]. Read through an index on either backend: its cost is the rows found,
    /// not the size of the trail.
    async fn lookup(&self, by: Lookup<'_>, now_ms: i64) -> Result<Vec<TrailRow>, LedgerError>;

    /// The last version applied to `entity` of `source` (the stale-version guard), if any.
    async fn applied_version(&self, source: &str, entity: &str)
        -> Result<Option<i64>, LedgerError>;

    /// Record `version` as applied to the entity, in one conditional write that succeeds only
    /// when no version is recorded or the recorded one is older. `false`: a version as new or
    /// newer was there already, and it stays.
    async fn record_version(
        &self,
        source: &str,
        entity: &str,
        version: i64,
        now_ms: i64,
    ) -> Result<bool, LedgerError>;
}
