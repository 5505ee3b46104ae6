//! What bounds the trail. Every entry expires (`settings.trail_retention_days`), and the
//! entries a flood can make — refusals (anyone can send a request), duplicates (anyone
//! holding one captured request can replay it) and conflicts — go into a fixed set of slots
//! per kind, source and second, each written at most once (`Ledger::append_new`, a
//! conditional put). However many ingest or worker instances write, the trail stores at most
//! [`ROWS_PER_SECOND`] entries of each kind per source and second; the rest are only logged
//! and counted in the metrics.
//!
//! Each entry tries one slot: the next of its instance's [`ROWS_PER_SECOND`] for that kind,
//! source and second, from a random first one. So an entry costs at most one write whatever
//! happens, and an instance at most [`ROWS_PER_SECOND`] per kind, source and second. A slot
//! another instance took first is a refused conditional write that stores nothing: that
//! entry is only logged and counted, like those past the bound. (Retrying the next slot would
//! keep it, but a flood would then cost up to the whole budget in writes per request.)

use std::collections::HashMap;
use std::sync::Mutex;

use crate::ports::{Ledger, LedgerError, TrailEntry, TrailStatus};

/// The most entries of one kind the trail stores per source and second, together over every
/// instance (the documented "20 refusals per second per source").
pub const ROWS_PER_SECOND: u32 = 20;

/// One instance's slots: which it tried in the current second, per kind and source.
#[derive(Debug)]
pub(crate) struct TrailBudget {
    per_second: u32,
    /// Picks a window's first slot below `per_second`.
    first_slot: fn(u32) -> u32,
    windows: Mutex<HashMap<(TrailStatus, String), Window>>,
}

/// A random first slot, so instances starting in the same second rarely try the same ones.
fn random_slot(per_second: u32) -> u32 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(per_second.max(1))) as u32
}

#[derive(Debug, Clone, Copy)]
struct Window {
    second: i64,
    first: u32,
    tried: u32,
}

impl Default for TrailBudget {
    fn default() -> Self {
        Self::new(ROWS_PER_SECOND)
    }
}

impl TrailBudget {
    pub fn new(per_second: u32) -> Self {
        Self::with_first_slot(per_second, random_slot)
    }

    /// A budget whose windows start at the slot `first_slot` picks (tests fix it).
    pub(crate) fn with_first_slot(per_second: u32, first_slot: fn(u32) -> u32) -> Self {
        Self {
            per_second,
            first_slot,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// The id of the next slot this instance may try for an entry of `status` for `source`
    /// at `at_ms`, or `None` once it tried every slot of that second. The map holds one
    /// window per kind and source (callers pass configured sources only).
    pub(crate) fn next_slot(
        &self,
        status: TrailStatus,
        source: &str,
        at_ms: i64,
    ) -> Option<String> {
        let Ok(mut windows) = self.windows.lock() else {
            // Another thread panicked mid-update: record nothing rather than guess.
            return None;
        };
        let second = at_ms.div_euclid(1000);
        let per_second = self.per_second;
        let fresh = || Window {
            second,
            first: (self.first_slot)(per_second),
            tried: 0,
        };
        let window = windows
            .entry((status, source.to_owned()))
            .or_insert_with(fresh);
        if window.second != second {
            *window = fresh();
        }
        if window.tried >= per_second {
            return None;
        }
        let slot = window.first.wrapping_add(window.tried) % per_second;
        window.tried += 1;
        Some(slot_id(status, source, second, slot))
    }
}

/// A slot's entry id: kind, source (which holds no `#`), second and slot number, so the ids
/// of one second are a fixed set of [`ROWS_PER_SECOND`].
pub(crate) fn slot_id(status: TrailStatus, source: &str, second: i64, slot: u32) -> String {
    format!("{}#{source}#{second}#{slot}", status.as_str())
}

/// The id of a key's first conflict with the body that holds it: one per key and holder,
/// whatever the budget, because a conflict alarms and the trail must show the first one.
/// The holder changes only when an accepted event takes the key, so these ids are as many
/// as accepted events at most.
pub(crate) fn first_conflict_id(dedupe_key: &str, holder_sha256: &str) -> String {
    format!("first_conflict#{dedupe_key}#{holder_sha256}")
}

/// Store `entry` (its `id` replaced) in this instance's next slot. `Ok(false)`: not stored —
/// another instance took that slot first, or this one has none left this second.
pub(crate) async fn append_bounded(
    ledger: &dyn Ledger,
    budget: &TrailBudget,
    mut entry: TrailEntry,
) -> Result<bool, LedgerError> {
    let Some(id) = budget.next_slot(entry.status, &entry.source, entry.at_ms) else {
        return Ok(false);
    };
    entry.id = id;
    ledger.append_new(&entry).await
}

/// A conflict: as its key's first against `holder_sha256` when it is, else in a slot like
/// any other entry.
pub(crate) async fn append_conflict(
    ledger: &dyn Ledger,
    budget: &TrailBudget,
    entry: TrailEntry,
    dedupe_key: &str,
    holder_sha256: &str,
) -> Result<bool, LedgerError> {
    let first = TrailEntry {
        id: first_conflict_id(dedupe_key, holder_sha256),
        ..entry.clone()
    };
    if ledger.append_new(&first).await? {
        return Ok(true);
    }
    append_bounded(ledger, budget, entry).await
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const T: i64 = 1_700_000_000_000;

    fn slots(b: &TrailBudget, status: TrailStatus, source: &str, at_ms: i64) -> Vec<String> {
        std::iter::from_fn(|| b.next_slot(status, source, at_ms)).collect()
    }

    #[test]
    fn an_instance_tries_each_slot_of_a_second_once_then_none() {
        let b = TrailBudget::new(5);
        let got = slots(&b, TrailStatus::Refused, "s", T + 10);
        let expected: HashSet<String> = (0..5)
            .map(|n| format!("refused#s#{}#{n}", T / 1000))
            .collect();
        assert_eq!(got.len(), 5);
        assert_eq!(got.into_iter().collect::<HashSet<_>>(), expected);
        assert_eq!(b.next_slot(TrailStatus::Refused, "s", T + 999), None);
    }

    #[test]
    fn each_second_kind_and_source_has_its_own_slots() {
        let b = TrailBudget::new(3);
        assert_eq!(slots(&b, TrailStatus::Refused, "s", T).len(), 3);
        assert_eq!(slots(&b, TrailStatus::Refused, "other", T).len(), 3);
        assert_eq!(slots(&b, TrailStatus::Duplicate, "s", T).len(), 3);
        let next = slots(&b, TrailStatus::Refused, "s", T + 1_000);
        assert_eq!(next.len(), 3);
        assert!(next
            .iter()
            .all(|id| id.starts_with(&format!("refused#s#{}#", T / 1000 + 1))));
    }

    #[test]
    fn a_budget_of_zero_gives_no_slot() {
        assert_eq!(
            TrailBudget::new(0).next_slot(TrailStatus::Refused, "s", T),
            None
        );
    }

    #[cfg(feature = "embedded")]
    #[tokio::test]
    async fn an_entry_tries_one_slot_and_a_taken_one_drops_it() {
        use std::sync::Arc;

        use crate::adapters::embedded::EmbeddedStore;
        use crate::ports::{ManualClock, TrailQuery, TrailRow};

        let ledger = EmbeddedStore::open_in_memory(Arc::new(ManualClock::new(T)))
            .expect("open")
            .ledger();
        let entry = |id: String, reason: &str| TrailEntry {
            id,
            at_ms: T,
            source: "s".into(),
            status: TrailStatus::Refused,
            dedupe_key: None,
            provider_event_id: None,
            event_type: None,
            reason: Some(reason.into()),
            source_ip: None,
            expires_at_ms: T + 1_000,
        };
        // Another instance took slot 0 of this second.
        let taken = slot_id(TrailStatus::Refused, "s", T / 1000, 0);
        assert!(ledger
            .append_new(&entry(taken.clone(), "other instance"))
            .await
            .expect("fill"));
        let budget = TrailBudget::with_first_slot(3, |_| 0);
        let mut stored = Vec::new();
        for n in 0..4 {
            stored.push(
                append_bounded(&ledger, &budget, entry(String::new(), &format!("mine {n}")))
                    .await
                    .expect("append"),
            );
        }
        assert_eq!(
            stored,
            [false, true, true, false],
            "one try each, three a second"
        );
        let mut rows: Vec<(String, String)> = ledger
            .list(&TrailQuery::default())
            .await
            .expect("list")
            .into_iter()
            .filter_map(|row| match row {
                TrailRow::Entry(e) => Some((e.id, e.reason.unwrap_or_default())),
                TrailRow::Record(_) => None,
            })
            .collect();
        rows.sort();
        let second = T / 1000;
        assert_eq!(
            rows,
            [
                (taken, "other instance".to_owned()),
                (format!("refused#s#{second}#1"), "mine 1".to_owned()),
                (format!("refused#s#{second}#2"), "mine 2".to_owned()),
            ],
            "the first writer of a slot keeps it"
        );
    }

    #[test]
    fn first_conflict_ids_never_look_like_slots() {
        let id = first_conflict_id("s#evt_1", "ab");
        assert!(!id.starts_with("conflict#"), "{id}");
    }
}
