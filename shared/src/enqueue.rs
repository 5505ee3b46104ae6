//! Putting envelopes on the queue: batches cut by what each message really weighs, the FIFO
//! group and deduplication id of each event, and the pace — in order for the poller, several
//! batches at a time within a deadline for ingest. Ingest and the poller both enqueue through
//! here.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use futures_util::{stream, StreamExt, TryStreamExt};

use crate::config::Config;
use crate::envelope::Envelope;
use crate::ordering;
use crate::ports::{queue::MAX_BATCH, OutboundMessage, Queue, QueueError};

/// Batch sends in flight at once for one request: a 5,000-event batch is 500 sends, which
/// one after the other at SQS's tens of milliseconds each would outlast the ingest Lambda.
const SEND_CONCURRENCY: usize = 8;

/// How [`enqueue_envelopes`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// One batch after the other in body order, for as long as the queue takes (the poller:
    /// its run has its own budget, and its cursor moves only after the page is queued).
    Sequential,
    /// [`SEND_CONCURRENCY`] batches at a time, and past the deadline the sends still in
    /// flight are dropped and the whole is a failure (ingest: it answers 503 within its time
    /// budget however slow the queue is).
    Within(Duration),
}

/// Put every envelope of one request on the queue, or report that not all of them got
/// there — in which case the request is answered 503 and the provider's retry re-sends
/// all of them; the ones already queued are then absorbed by dedupe.
pub(crate) async fn enqueue_envelopes(
    queue: &dyn Queue,
    config: &Config,
    envelopes: &[Envelope],
    pace: Pace,
) -> Result<Vec<(String, String)>, QueueError> {
    let work = send_all(queue, config, envelopes, pace);
    let Pace::Within(budget) = pace else {
        return work.await;
    };
    tokio::time::timeout(budget, work).await.map_err(|_| {
        QueueError::Backend(format!(
            "the queue did not take all {} events within {budget:?}",
            envelopes.len()
        ))
    })?
}

async fn send_all(
    queue: &dyn Queue,
    config: &Config,
    envelopes: &[Envelope],
    pace: Pace,
) -> Result<Vec<(String, String)>, QueueError> {
    if let [only] = envelopes {
        let id = queue.send(&outbound(config, only)).await?;
        return Ok(vec![(only.dedupe_key.clone(), id)]);
    }
    // Serialised up front, so batches are cut by what each message really weighs (kept
    // headers and base64 make an envelope larger than its body).
    let messages: Vec<OutboundMessage> = envelopes.iter().map(|e| outbound(config, e)).collect();
    let (lanes, concurrency) = match pace {
        Pace::Sequential => {
            let all: Vec<usize> = (0..messages.len()).collect();
            let in_order = batches(&messages, &all)
                .into_iter()
                .map(<[usize]>::to_vec)
                .collect();
            (vec![in_order], 1)
        }
        Pace::Within(_) => (lanes(config, envelopes, &messages), SEND_CONCURRENCY),
    };
    let sends = lanes
        .into_iter()
        .map(|lane| send_lane(queue, &messages, lane));
    let sent: Vec<Vec<(usize, String)>> = stream::iter(sends)
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let mut ids: Vec<Option<String>> = vec![None; envelopes.len()];
    for (i, id) in sent.into_iter().flatten() {
        ids[i] = Some(id);
    }
    envelopes
        .iter()
        .zip(ids)
        .map(|(env, id)| {
            let id = id.ok_or_else(|| {
                QueueError::Backend(format!("no message id for {}", env.dedupe_key))
            })?;
            Ok((env.dedupe_key.clone(), id))
        })
        .collect()
}

/// Runs of batches (indices into `messages`) that may be sent concurrently with each other;
/// the batches of one run go in order. Events of a source without `order_by` are each their
/// own FIFO group, so every batch is its own run. With `order_by`, a group's events must
/// reach a FIFO queue in body order: each group stays in one of [`SEND_CONCURRENCY`] runs.
fn lanes(
    config: &Config,
    envelopes: &[Envelope],
    messages: &[OutboundMessage],
) -> Vec<Vec<Vec<usize>>> {
    let all: Vec<usize> = (0..messages.len()).collect();
    if envelopes
        .iter()
        .all(|e| config.ordering(&e.source).is_none())
    {
        return batches(messages, &all)
            .into_iter()
            .map(|b| vec![b.to_vec()])
            .collect();
    }
    let mut by_lane: Vec<Vec<usize>> = vec![Vec::new(); SEND_CONCURRENCY];
    for (i, m) in messages.iter().enumerate() {
        let mut h = DefaultHasher::new();
        m.group_id.hash(&mut h);
        by_lane[(h.finish() % SEND_CONCURRENCY as u64) as usize].push(i);
    }
    by_lane
        .iter()
        .filter(|lane| !lane.is_empty())
        .map(|lane| {
            batches(messages, lane)
                .into_iter()
                .map(<[usize]>::to_vec)
                .collect()
        })
        .collect()
}

/// Send one run's batches in order; `(index, message id)` per event.
async fn send_lane(
    queue: &dyn Queue,
    messages: &[OutboundMessage],
    lane: Vec<Vec<usize>>,
) -> Result<Vec<(usize, String)>, QueueError> {
    let mut sent = Vec::new();
    for batch in lane {
        let chunk: Vec<OutboundMessage> = batch.iter().map(|&i| messages[i].clone()).collect();
        let results = queue.send_batch(&chunk).await?;
        if results.len() != batch.len() {
            return Err(QueueError::Backend(format!(
                "the queue answered {} results for a batch of {}",
                results.len(),
                batch.len()
            )));
        }
        for (i, result) in batch.into_iter().zip(results) {
            sent.push((i, result?));
        }
    }
    Ok(sent)
}

/// An envelope as a queue message, with the FIFO group of its entity (a FIFO queue delivers
/// a group in send order; a standard queue ignores it) and its dedupe key as the FIFO
/// deduplication id.
fn outbound(config: &Config, env: &Envelope) -> OutboundMessage {
    OutboundMessage {
        group_id: Some(ordering::message_group(config.ordering(&env.source), env)),
        deduplication_id: Some(ordering::deduplication_id(&env.dedupe_key)),
        ..OutboundMessage::new(env.to_json())
    }
}

/// SQS caps one `SendMessageBatch` at 1 MiB in total; stay under it with room for the
/// request framing.
const MAX_BATCH_BYTES: usize = 900 * 1024;

/// `indices` (into `messages`, in order) cut into consecutive runs of at most
/// [`MAX_BATCH`] messages and [`MAX_BATCH_BYTES`] (a message larger than that on its own goes
/// alone, and the queue says whether it fits).
fn batches<'i>(messages: &[OutboundMessage], indices: &'i [usize]) -> Vec<&'i [usize]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (n, &i) in indices.iter().enumerate() {
        // The body and room for the ids and the entry's framing.
        let size = messages[i].body.len() + 1024;
        if n > start && (n - start == MAX_BATCH || bytes + size > MAX_BATCH_BYTES) {
            out.push(&indices[start..n]);
            (start, bytes) = (n, 0);
        }
        bytes += size;
    }
    if start < indices.len() {
        out.push(&indices[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{batches, OutboundMessage, MAX_BATCH_BYTES};

    #[test]
    fn batches_hold_at_most_ten_messages_and_fit_by_their_real_size() {
        let mut sizes = vec![1, 400_000, 400_000, 400_000, 10, 10, 1_000_000];
        sizes.extend([5; 12]);
        let messages: Vec<OutboundMessage> = sizes
            .iter()
            .map(|&n| OutboundMessage::new("x".repeat(n)))
            .collect();
        let all: Vec<usize> = (0..messages.len()).collect();
        let got = batches(&messages, &all);
        assert_eq!(got.concat(), all, "every message once, in order");
        for batch in &got {
            let bytes: usize = batch.iter().map(|&i| messages[i].body.len() + 1024).sum();
            assert!(batch.len() <= 10, "{batch:?}");
            assert!(batch.len() == 1 || bytes <= MAX_BATCH_BYTES, "{batch:?}");
        }
        // Two 400 KB messages share a batch, three do not; the 1 MB one goes alone; the
        // small ones ten at a time.
        let want: Vec<Vec<usize>> = vec![
            vec![0, 1, 2],
            vec![3, 4, 5],
            vec![6],
            (7..17).collect(),
            (17..19).collect(),
        ];
        assert_eq!(got, want.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // A subset (one run of an order_by source) is cut the same way.
        let odd: Vec<usize> = all.iter().copied().filter(|i| i % 2 == 1).collect();
        assert_eq!(batches(&messages, &odd).concat(), odd);
    }
}
