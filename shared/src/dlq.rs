//! Dead letters: what sits in the dead-letter queue and why, and moving it back to the main
//! queue. Queues have no "peek": a scan receives messages, which hides them for a while, and
//! makes the ones it leaves visible again at the end. An interrupted scan only leaves
//! messages hidden until their visibility lapses; an interrupted replay has sent at most the
//! batch in hand to the main queue without deleting it from the DLQ, so a rerun sends it
//! again and dedupe absorbs the copy.

use std::time::Duration;

use crate::envelope::{Envelope, EnvelopeError, Replay};
use crate::ports::{DedupeRecord, Ledger, OutboundMessage, Queue, QueueError, ReceivedMessage};

/// How long a scan keeps what it received hidden (it gives them back sooner when done).
const HOLD: Duration = Duration::from_secs(120);
/// Long-poll each receive this long: an SQS short poll samples a few servers and can answer
/// "empty" while messages wait elsewhere.
const RECEIVE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("dead-letter queue: {0}")]
    Dlq(QueueError),
    #[error("main queue: {0}")]
    Main(QueueError),
}

/// One dead letter, with what the ledger knows about its event.
#[derive(Debug)]
pub struct DeadLetter {
    pub message_id: String,
    /// When the message was first sent (to the main queue: SQS keeps the time on redrive).
    pub sent_at_ms: i64,
    /// The envelope, or why the body is not one (such a message can never be dispatched).
    pub envelope: Result<Envelope, EnvelopeError>,
    /// The dedupe record of its key: attempts, last error, whether it was dispatched since.
    pub record: Option<DedupeRecord>,
}

impl DeadLetter {
    pub fn dedupe_key(&self) -> Option<&str> {
        self.envelope.as_ref().ok().map(|e| e.dedupe_key.as_str())
    }

    /// The reason to show: the last dispatch error, or why the body could not be read.
    pub fn reason(&self) -> String {
        match (&self.envelope, &self.record) {
            (Err(why), _) => format!("not an envelope: {why}"),
            (Ok(_), Some(r)) => match &r.last_error {
                Some(e) => e.clone(),
                None if r.status == crate::ports::DedupeStatus::Completed => {
                    "dispatched since (a later copy succeeded)".into()
                }
                None => "no error recorded".into(),
            },
            (Ok(_), None) => "no ledger record (it never reached a worker's dedupe)".into(),
        }
    }
}

/// Which dead letters a replay moves. Empty = all of them.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub source: Option<String>,
    /// Only events received at or after this instant (ms).
    pub since_ms: Option<i64>,
    /// Message ids, dedupe keys or provider event ids.
    pub ids: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.source.is_none() && self.since_ms.is_none() && self.ids.is_empty()
    }

    fn matches(&self, message_id: &str, env: Option<&Envelope>) -> bool {
        if !self.ids.is_empty() {
            let named = self.ids.iter().any(|id| {
                id == message_id
                    || env.is_some_and(|e| {
                        *id == e.dedupe_key || e.provider_event_id.as_deref() == Some(id.as_str())
                    })
            });
            if !named {
                return false;
            }
        }
        match env {
            Some(e) => {
                self.source.as_ref().is_none_or(|s| *s == e.source)
                    && self.since_ms.is_none_or(|t| e.received_at_ms() >= t)
            }
            // A body that is not an envelope has no source or time: only an unfiltered
            // replay, or one naming its message id, takes it.
            None => self.source.is_none() && self.since_ms.is_none(),
        }
    }
}

/// How a replay moves what it takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// Count only; move nothing.
    pub dry_run: bool,
    /// Dispatch again even events the ledger says were dispatched.
    pub force: bool,
    /// When the replay is sent (recorded in forced envelopes).
    pub now_ms: i64,
}

/// Progress of a replay, after each batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Dead letters looked at.
    pub scanned: usize,
    /// Of those, the ones the filter took.
    pub matched: usize,
    /// Sent to the main queue and deleted from the DLQ (0 on a dry run).
    pub moved: usize,
    /// The DLQ's depth before the replay, when the queue can tell.
    pub total: Option<u64>,
}

/// Up to `limit` dead letters, oldest first as the queue hands them out, left in the DLQ.
pub async fn list(
    dlq: &dyn Queue,
    ledger: &dyn Ledger,
    limit: usize,
) -> Result<Vec<DeadLetter>, DlqError> {
    let mut held = Vec::new();
    let result = async {
        let mut out = Vec::new();
        while out.len() < limit {
            let want = (limit - out.len()).min(10) as u32;
            let batch = dlq
                .receive(want, HOLD, RECEIVE_WAIT)
                .await
                .map_err(DlqError::Dlq)?;
            if batch.is_empty() {
                break;
            }
            for m in batch {
                out.push(describe(&m, ledger).await);
                held.push(m.receipt_handle);
            }
        }
        Ok(out)
    }
    .await;
    release(dlq, &held).await;
    result
}

async fn describe(m: &ReceivedMessage, ledger: &dyn Ledger) -> DeadLetter {
    let envelope = Envelope::from_json(&m.body);
    let record = match &envelope {
        // A ledger that cannot answer leaves the reason blank rather than hiding the letter.
        Ok(env) => ledger.get(&env.dedupe_key).await.ok().flatten(),
        Err(_) => None,
    };
    DeadLetter {
        message_id: m.message_id.clone(),
        sent_at_ms: m.sent_at_ms,
        envelope,
        record,
    }
}

/// Move the dead letters `filter` takes back to `main` (send, then delete from the DLQ); the
/// others stay. `dry_run` only counts. `force` marks each envelope so the worker dispatches it
/// even if the ledger says it was done (and records that it did). `progress` is called
/// after every batch.
pub async fn replay(
    dlq: &dyn Queue,
    main: &dyn Queue,
    filter: &Filter,
    options: ReplayOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Progress, DlqError> {
    let ReplayOptions {
        dry_run,
        force,
        now_ms,
    } = options;
    let mut p = Progress {
        total: dlq.depth().await.ok().flatten(),
        ..Progress::default()
    };
    // Received but not taken (or not taken yet: a dry run): given back at the end.
    let mut held = Vec::new();
    let result = async {
        loop {
            let batch = dlq
                .receive(10, HOLD, RECEIVE_WAIT)
                .await
                .map_err(DlqError::Dlq)?;
            if batch.is_empty() {
                return Ok(());
            }
            for m in batch {
                p.scanned += 1;
                let env = Envelope::from_json(&m.body).ok();
                if !filter.matches(&m.message_id, env.as_ref()) {
                    held.push(m.receipt_handle);
                    continue;
                }
                p.matched += 1;
                if dry_run {
                    held.push(m.receipt_handle);
                    continue;
                }
                // The body goes back unchanged (same envelope, same dedupe key), or marked
                // as a forced replay.
                let body = match env {
                    Some(mut e) if force => {
                        e.replay = Some(Replay {
                            at: crate::time::format_rfc3339_ms(now_ms),
                            forced: true,
                        });
                        serde_json::to_string(&e).unwrap_or_else(|_| m.body.clone())
                    }
                    _ => m.body.clone(),
                };
                // Its group goes with it (a FIFO main queue requires one); the queue gives
                // it a fresh deduplication id, so SQS does not take it for its first send.
                let message = OutboundMessage {
                    group_id: m.group_id.clone(),
                    ..OutboundMessage::new(body)
                };
                main.send(&message).await.map_err(DlqError::Main)?;
                dlq.delete(&m.receipt_handle).await.map_err(DlqError::Dlq)?;
                p.moved += 1;
            }
            progress(p);
        }
    }
    .await;
    release(dlq, &held).await;
    result.map(|()| p)
}

/// Make received messages visible again at once (best effort: they reappear on their own
/// when the hold lapses).
async fn release(dlq: &dyn Queue, receipts: &[String]) {
    for r in receipts {
        if let Err(e) = dlq.change_visibility(r, Duration::ZERO).await {
            tracing::warn!(error = %e, "could not release a dead letter; it reappears when its hold lapses");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither an RFC 3339 time nor a duration like 2h")]
pub struct BadSince(String);

/// `--since` as an RFC 3339 time or a duration back from `now_ms` (`2h`, `3days`).
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, BadSince> {
    if let Some(ms) = crate::time::rfc3339_ms_utc_if_unzoned(text.trim()) {
        return Ok(ms);
    }
    humantime::parse_duration(text.trim())
        .map(|d| now_ms - d.as_millis() as i64)
        .map_err(|_| BadSince(text.to_owned()))
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::adapters::embedded::{EmbeddedStore, Redrive};
    use crate::ports::ManualClock;

    const T0: i64 = 1_767_225_600_000;

    fn envelope(source: &str, n: u32, received_ms: i64) -> String {
        let mut e: Envelope = serde_json::from_value(serde_json::json!({
            "v": 1, "source": source, "provider": "generic", "via": "webhook",
            "dedupe_key": format!("{source}#e{n}"), "provider_event_id": format!("e{n}"),
            "received_at": "", "verified": {"scheme": "hmac"},
            "body": "{}", "body_encoding": "utf8", "body_sha256": "x"
        }))
        .unwrap();
        e.received_at = crate::time::format_rfc3339_ms(received_ms);
        e.body_sha256 = crate::envelope::sha256_hex(e.body.as_bytes());
        serde_json::to_string(&e).unwrap()
    }

    fn dry() -> ReplayOptions {
        ReplayOptions {
            dry_run: true,
            ..ReplayOptions::default()
        }
    }

    fn moving() -> ReplayOptions {
        ReplayOptions::default()
    }

    struct Fixture {
        store: EmbeddedStore,
        clock: Arc<ManualClock>,
    }

    impl Fixture {
        /// A DLQ holding `bodies` (put there by redrive after one failed receive each).
        async fn with_dead(bodies: &[String]) -> Self {
            let clock = Arc::new(ManualClock::new(T0));
            let store = EmbeddedStore::open_in_memory(clock.clone()).unwrap();
            let f = Self { store, clock };
            let main = f.main();
            for b in bodies {
                main.send(&OutboundMessage::new(b.clone())).await.unwrap();
            }
            // One receive, then the next redrives to the DLQ (max_receive_count 1).
            while !main
                .receive(10, Duration::from_secs(1), Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
            {
                f.clock.advance_ms(2_000);
            }
            assert_eq!(f.dlq().depth().await.unwrap(), Some(bodies.len() as u64));
            f
        }

        fn main(&self) -> impl Queue {
            self.store.queue(
                "events",
                Some(Redrive {
                    dead_letter_queue: "events-dlq".into(),
                    max_receive_count: 1,
                }),
            )
        }

        fn dlq(&self) -> impl Queue {
            self.store.queue("events-dlq", None)
        }
    }

    #[tokio::test]
    async fn list_shows_every_dead_letter_and_leaves_them_in_place() {
        let mut bodies: Vec<String> = (1..=13).map(|n| envelope("games", n, T0)).collect();
        bodies.push("not json".into());
        let f = Fixture::with_dead(&bodies).await;
        let letters = list(&f.dlq(), &f.store.ledger(), 100).await.unwrap();
        assert_eq!(letters.len(), 14);
        let bad = letters.iter().find(|l| l.envelope.is_err()).unwrap();
        assert!(
            bad.reason().starts_with("not an envelope"),
            "{}",
            bad.reason()
        );
        let good = letters.iter().find(|l| l.envelope.is_ok()).unwrap();
        assert!(
            good.reason().contains("no ledger record"),
            "{}",
            good.reason()
        );
        // Released at once: a second listing (no time passing) sees them all again.
        assert_eq!(
            list(&f.dlq(), &f.store.ledger(), 100).await.unwrap().len(),
            14
        );
        assert_eq!(list(&f.dlq(), &f.store.ledger(), 5).await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn a_filtered_replay_moves_only_what_it_names() {
        let bodies = vec![
            envelope("games", 1, T0 - 7_200_000),
            envelope("games", 2, T0 - 60_000),
            envelope("kyc", 3, T0 - 60_000),
            envelope("games", 4, T0 - 30_000),
            "not json".to_string(),
        ];
        let f = Fixture::with_dead(&bodies).await;
        let (dlq, main) = (f.dlq(), f.store.queue("events", None));
        let filter = Filter {
            source: Some("games".into()),
            since_ms: Some(parse_since("1h", T0).unwrap()),
            ids: vec![],
        };
        let mut seen = Vec::new();
        let dry = replay(&dlq, &main, &filter, dry(), &mut |p| seen.push(p))
            .await
            .unwrap();
        assert_eq!((dry.scanned, dry.matched, dry.moved), (5, 2, 0));
        assert_eq!(dry.total, Some(5));
        assert!(!seen.is_empty(), "progress is reported");
        assert_eq!(
            dlq.depth().await.unwrap(),
            Some(5),
            "a dry run moves nothing"
        );

        let done = replay(&dlq, &main, &filter, moving(), &mut |_| {})
            .await
            .unwrap();
        assert_eq!((done.matched, done.moved), (2, 2));
        let moved: Vec<String> = main
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|m| Envelope::from_json(&m.body).unwrap().dedupe_key)
            .collect();
        assert_eq!(moved, vec!["games#e2", "games#e4"]);
        // Rerun: nothing left that matches; the rest stays dead.
        let again = replay(&dlq, &main, &filter, moving(), &mut |_| {})
            .await
            .unwrap();
        assert_eq!((again.scanned, again.moved), (3, 0));

        // By id: a provider event id, and the message id of the body that is not an envelope.
        let bad_id = list(&dlq, &f.store.ledger(), 10)
            .await
            .unwrap()
            .into_iter()
            .find(|l| l.envelope.is_err())
            .unwrap()
            .message_id;
        let by_id = Filter {
            ids: vec!["e3".into(), bad_id],
            ..Filter::default()
        };
        let done = replay(&dlq, &main, &by_id, moving(), &mut |_| {})
            .await
            .unwrap();
        assert_eq!(done.moved, 2);
        assert_eq!(
            dlq.depth().await.unwrap(),
            Some(1),
            "games#e1 is older than 1h"
        );
    }

    #[tokio::test]
    async fn a_forced_replay_marks_each_envelope_and_leaves_other_bodies_alone() {
        let f = Fixture::with_dead(&[envelope("games", 1, T0), "not json".to_string()]).await;
        let (dlq, main) = (f.dlq(), f.store.queue("events", None));
        let options = ReplayOptions {
            force: true,
            now_ms: T0 + 5,
            ..ReplayOptions::default()
        };
        let done = replay(&dlq, &main, &Filter::default(), options, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(done.moved, 2);
        let mut bodies: Vec<String> = main
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body)
            .collect();
        bodies.sort();
        assert_eq!(bodies[0], "not json");
        let env = Envelope::from_json(&bodies[1]).unwrap();
        assert!(env.forced_replay());
        assert_eq!(
            env.replay.unwrap().at,
            crate::time::format_rfc3339_ms(T0 + 5)
        );
        assert_eq!(env.dedupe_key, "games#e1");
    }

    #[test]
    fn since_takes_a_time_or_a_duration() {
        assert_eq!(parse_since("2h", T0), Ok(T0 - 7_200_000));
        assert_eq!(
            parse_since("2026-01-01T00:00:00Z", T0),
            Ok(1_767_225_600_000)
        );
        assert!(parse_since("yesterday-ish", T0).is_err());
    }
}
