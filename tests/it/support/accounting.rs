//! The fault suite's accounting check: every acknowledged event (ingest answered 2xx) is in
//! exactly one of {accepted once by the target, in the DLQ}; none lost, none accepted twice.
//!
//! It counts raw target receipts, never the worker's own outcomes. One duplicate is
//! unavoidable with any at-least-once queue: the target accepted the event, then its holder
//! died (or lost the ledger) before `complete`, the lease lapsed, and a second holder
//! dispatched it again. The envelope's stable `dedupe_key` (the HTTP target's `webhook-id`)
//! lets a handler drop that copy. Such a second receipt is classified, never hidden, and
//! only when the evidence shows exactly that window, for that holding:
//! - the earlier receipt's holding was seen *abandoned* after the receipt: IN_PROGRESS in
//!   the ledger, with that receipt's lease, at a moment no worker could still complete it
//!   (its process was SIGKILLed and reaped, or its batch had returned without completing);
//! - and the later holder took the key only after that lease had lapsed.
//!
//! A second receipt without both is a duplicate the design does not allow: the check fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use inlet::ports::{DedupeRecord, DedupeStatus, Ledger, LedgerError, TrailQuery, TrailRow};

use super::receiver::Seen;

/// Holdings seen abandoned at one moment: key → that holding's `lease_until_ms`.
#[derive(Debug, Clone)]
pub struct Abandoned {
    pub at: Instant,
    /// What made them so (shown in the report): "SIGKILL 7", "batch with a failed complete".
    pub cause: String,
    pub holdings: BTreeMap<String, i64>,
}

impl Abandoned {
    /// Every IN_PROGRESS record in `ledger`; call it only when no worker runs on it.
    pub async fn snapshot(ledger: &dyn Ledger, cause: impl Into<String>) -> Self {
        let rows = ledger
            .list(&TrailQuery {
                source: None,
                limit: 0,
                ..Default::default()
            })
            .await
            .expect("list the ledger");
        let holdings = rows
            .into_iter()
            .filter_map(|row| match row {
                TrailRow::Record(r) if r.status == DedupeStatus::InProgress => {
                    Some((r.key, r.lease_until_ms))
                }
                _ => None,
            })
            .collect();
        Self {
            at: Instant::now(),
            cause: cause.into(),
            holdings,
        }
    }

    /// The record of `key` once it reads whole. A call the worker gave up on (its connection cut
    /// mid-request) can still be running inside moto, which creates a new item with its key
    /// first and sets the attributes after: read at that moment, the item has no `status`. Real
    /// DynamoDB applies an update atomically, so this waits for moto to finish the write rather
    /// than failing the account.
    async fn settled_record(ledger: &dyn Ledger, key: &str) -> Option<DedupeRecord> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match ledger.get(key).await {
                Ok(record) => return record,
                Err(LedgerError::Corrupt(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("read the ledger: {e:?}"),
            }
        }
    }

    /// The records of `keys` that are IN_PROGRESS; call it only when no worker runs.
    pub async fn of_keys<'a>(
        ledger: &dyn Ledger,
        keys: impl IntoIterator<Item = &'a str>,
        cause: impl Into<String>,
    ) -> Self {
        let mut holdings = BTreeMap::new();
        for key in keys {
            if let Some(r) = Self::settled_record(ledger, key).await {
                if r.status == DedupeStatus::InProgress {
                    holdings.insert(r.key, r.lease_until_ms);
                }
            }
        }
        Self {
            at: Instant::now(),
            cause: cause.into(),
            holdings,
        }
    }
}

/// What a run produced.
#[derive(Debug, Default)]
pub struct Books {
    /// Dedupe keys ingest answered 2xx for.
    pub acknowledged: BTreeSet<String>,
    /// Every request the target saw, in the order it answered them.
    pub receipts: Vec<Seen>,
    /// Dedupe keys of the DLQ's messages, with the reason `inlet dlq list` gives.
    pub dead: BTreeMap<String, String>,
    pub abandoned: Vec<Abandoned>,
}

/// The check's verdict, key by key.
#[derive(Debug, Default)]
pub struct Accounts {
    /// Accepted by the target (a second time only inside the window: see below).
    pub delivered: BTreeSet<String>,
    pub dead: BTreeSet<String>,
    pub lost: BTreeSet<String>,
    /// Accepted by the target and also in the DLQ.
    pub delivered_and_dead: BTreeSet<String>,
    /// A second (third…) acceptance outside the at-least-once window: key → why.
    pub doubled: BTreeMap<String, String>,
    /// A second acceptance inside the window, with its evidence: key → which abandonment.
    pub redelivered_after_abandonment: BTreeMap<String, String>,
    /// Dispatched although ingest never answered 2xx for it (its answer was lost to a kill).
    pub unacknowledged_dispatched: BTreeSet<String>,
    /// Requests whose Standard Webhooks signature did not verify.
    pub unverified: usize,
}

impl Accounts {
    pub fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.delivered_and_dead.is_empty()
            && self.doubled.is_empty()
            && self.unverified == 0
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "delivered {}, dead {}, lost {}, delivered and dead {}, doubled {}, of the delivered a second \
             time after an abandoned holding {}, dispatched without acknowledgement {}, unverified {}",
            self.delivered.len(),
            self.dead.len(),
            self.lost.len(),
            self.delivered_and_dead.len(),
            self.doubled.len(),
            self.redelivered_after_abandonment.len(),
            self.unacknowledged_dispatched.len(),
            self.unverified,
        );
        let head = |set: &BTreeSet<String>| set.iter().take(5).cloned().collect::<Vec<_>>();
        if !self.lost.is_empty() {
            let _ = write!(s, "\n  lost: {:?}", head(&self.lost));
        }
        if !self.delivered_and_dead.is_empty() {
            let _ = write!(
                s,
                "\n  delivered and dead: {:?}",
                head(&self.delivered_and_dead)
            );
        }
        for (key, why) in self.doubled.iter().take(5) {
            let _ = write!(s, "\n  doubled {key}: {why}");
        }
        for (key, why) in self.redelivered_after_abandonment.iter().take(5) {
            let _ = write!(s, "\n  redelivered {key}: {why}");
        }
        s
    }
}

/// Why the acceptance `b` of a key may follow the acceptance `a`, or `Err(why not)`.
fn window_evidence(a: &Seen, b: &Seen, abandoned: &[Abandoned]) -> Result<String, String> {
    let (Some(ha), Some(hb)) = (a.holding, b.holding) else {
        return Err("no dedupe record read at one of the receipts".into());
    };
    if hb.taken_at_ms <= ha.lease_until_ms {
        return Err(format!(
            "the second holder took the key at {} while the first one's lease ran until {}",
            hb.taken_at_ms, ha.lease_until_ms
        ));
    }
    abandoned
        .iter()
        .find(|f| {
            a.at < f.at && f.at < b.at && f.holdings.get(&a.webhook_id) == Some(&ha.lease_until_ms)
        })
        .map(|f| {
            format!(
                "accepted, then its holding was abandoned ({}), then retaken {} ms after its lease lapsed",
                f.cause,
                hb.taken_at_ms - ha.lease_until_ms
            )
        })
        .ok_or_else(|| {
            format!(
                "accepted twice, but its first holding (lease until {}) was never seen abandoned \
                 in between: it may have completed",
                ha.lease_until_ms
            )
        })
}

pub fn account(books: &Books) -> Accounts {
    let mut acc = Accounts {
        unverified: books.receipts.iter().filter(|s| !s.verified).count(),
        ..Default::default()
    };
    let mut accepted: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for s in books.receipts.iter().filter(|s| s.accepted()) {
        accepted.entry(s.webhook_id.as_str()).or_default().push(s);
    }
    for (key, receipts) in &accepted {
        if !books.acknowledged.contains(*key) {
            acc.unacknowledged_dispatched.insert((*key).to_owned());
        }
        for pair in receipts.windows(2) {
            match window_evidence(pair[0], pair[1], &books.abandoned) {
                Ok(why) => acc
                    .redelivered_after_abandonment
                    .insert((*key).to_owned(), why),
                Err(why) => acc.doubled.insert((*key).to_owned(), why),
            };
        }
    }
    for key in &books.acknowledged {
        match (
            accepted.contains_key(key.as_str()),
            books.dead.contains_key(key),
        ) {
            (true, true) => acc.delivered_and_dead.insert(key.clone()),
            (true, false) => acc.delivered.insert(key.clone()),
            (false, true) => acc.dead.insert(key.clone()),
            (false, false) => acc.lost.insert(key.clone()),
        };
    }
    acc
}

/// The check every fault scenario ends with; returns the accounts for further assertions.
pub fn assert_accounted(scenario: &str, books: &Books) -> Accounts {
    let acc = account(books);
    eprintln!(
        "{scenario}: acknowledged {}, receipts {}, {} abandonment snapshot(s); {}",
        books.acknowledged.len(),
        books.receipts.len(),
        books.abandoned.len(),
        acc.summary()
    );
    assert!(
        acc.clean(),
        "{scenario}: the accounting check failed: {}",
        acc.summary()
    );
    acc
}

/// The DLQ's dedupe keys and reasons, left in the DLQ.
pub async fn dead_letters(
    dlq: &dyn inlet::ports::Queue,
    ledger: &dyn Ledger,
) -> BTreeMap<String, String> {
    inlet::dlq::list(dlq, ledger, 10_000)
        .await
        .expect("list the DLQ")
        .into_iter()
        .map(|d| {
            (
                d.dedupe_key().unwrap_or("<not an envelope>").to_owned(),
                d.reason(),
            )
        })
        .collect()
}
