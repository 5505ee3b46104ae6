//! The SQS target: forward envelopes to another queue through the `Queue` port, in
//! `SendMessageBatch` chunks of at most 10, checking every entry's result. On AWS the queue
//! is an SQS client on `queue_url`; in the embedded stack it is a queue of the same SQLite
//! file, named by the URL's last path segment (so one config works in both).

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;

use super::{DispatchError, Outgoing, Target};
use crate::ports::queue::MAX_BATCH;
use crate::ports::{OutboundMessage, Queue, QueueError};

/// A target's table in the config (`kind = "sqs"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsTargetSpec {
    /// The queue's URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`); locally a
    /// plain name works too.
    pub queue_url: String,
}

/// The embedded queue's name for a `queue_url`: its last path segment, or the text itself.
pub fn local_queue_name(queue_url: &str) -> &str {
    queue_url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or(queue_url)
}

pub struct SqsTarget {
    id: String,
    queue: Arc<dyn Queue>,
    /// FIFO queues need a group id (and dedupe on the deduplication id for 5 minutes).
    fifo: bool,
}

impl SqsTarget {
    pub fn new(id: String, queue: Arc<dyn Queue>, queue_url: &str) -> Self {
        Self {
            id,
            queue,
            fifo: queue_url.ends_with(".fifo"),
        }
    }

    fn message(&self, o: &Outgoing<'_>) -> OutboundMessage {
        let e = o.envelope;
        // SQS takes 1 MiB a message: a larger event goes with its body by reference.
        let mut m = OutboundMessage::new(o.fitting(crate::envelope::MAX_MESSAGE_BYTES).to_owned());
        if self.fifo {
            // Per-entity order when the event names one, else per source. The
            // deduplication id makes a retry within SQS's 5-minute window a no-op.
            m.group_id = Some(crate::ordering::fifo_id(
                e.entity.clone().unwrap_or_else(|| e.source.clone()),
            ));
            m.deduplication_id = Some(crate::ordering::deduplication_id(&e.dedupe_key));
        }
        m
    }
}

#[async_trait]
impl Target for SqsTarget {
    fn id(&self) -> &str {
        &self.id
    }

    async fn deliver(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>> {
        let mut results = Vec::with_capacity(events.len());
        for chunk in events.chunks(MAX_BATCH) {
            let messages: Vec<OutboundMessage> = chunk.iter().map(|e| self.message(e)).collect();
            match self.queue.send_batch(&messages).await {
                Ok(per_entry) if per_entry.len() == messages.len() => {
                    results.extend(per_entry.into_iter().map(|r| match r {
                        Ok(_) => Ok(()),
                        // The queue will never take this entry as it is (too large, bad
                        // attributes): retrying only delays the DLQ.
                        Err(QueueError::Rejected(m)) => Err(DispatchError::Permanent(format!(
                            "target {}: entry rejected: {m}",
                            self.id
                        ))),
                        Err(QueueError::Backend(m)) => Err(DispatchError::Retryable(format!(
                            "target {}: entry failed: {m}",
                            self.id
                        ))),
                    }))
                }
                Ok(per_entry) => {
                    let msg = format!(
                        "target {}: SendMessageBatch returned {} results for {} entries",
                        self.id,
                        per_entry.len(),
                        messages.len()
                    );
                    results.extend(
                        chunk
                            .iter()
                            .map(|_| Err(DispatchError::Retryable(msg.clone()))),
                    );
                }
                Err(e) => {
                    let msg = format!("target {}: {e}", self.id);
                    results.extend(
                        chunk
                            .iter()
                            .map(|_| Err(DispatchError::Retryable(msg.clone()))),
                    );
                }
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "embedded")]
    use crate::envelope::sha256_hex;

    #[test]
    fn the_local_queue_is_named_by_the_url() {
        assert_eq!(
            local_queue_name("https://sqs.us-east-1.amazonaws.com/123456789012/orders"),
            "orders"
        );
        assert_eq!(
            local_queue_name("https://sqs.example/1/orders.fifo/"),
            "orders.fifo"
        );
        assert_eq!(local_queue_name("orders"), "orders");
    }

    #[cfg(feature = "embedded")]
    #[tokio::test]
    async fn envelopes_are_forwarded_in_batches_of_ten_to_the_embedded_queue() {
        use std::time::Duration;

        use crate::adapters::embedded::EmbeddedStore;
        use crate::envelope::{BodyEncoding, Envelope, VerifiedBy, Via};
        use crate::ports::ManualClock;

        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let store = EmbeddedStore::open_in_memory(clock).expect("store");
        let queue = store.queue("forward", None);
        let target = SqsTarget::new("fwd".into(), Arc::new(queue.clone()), "forward");
        let envelopes: Vec<Envelope> = (0..23)
            .map(|n| Envelope {
                v: 1,
                source: "stripe".into(),
                provider: "stripe".into(),
                via: Via::Webhook,
                dedupe_key: format!("stripe#evt_{n}"),
                provider_event_id: Some(format!("evt_{n}")),
                event_type: None,
                canonical_type: None,
                entity: None,
                object_id: None,
                amount: None,
                currency: None,
                occurred_at: None,
                received_at: "2026-01-01T00:00:00.000Z".into(),
                verified: VerifiedBy {
                    scheme: "test".into(),
                    key_id: None,
                },
                caller_ip: None,
                headers: Default::default(),
                body: "{}".into(),
                body_encoding: BodyEncoding::Utf8,
                body_sha256: sha256_hex(b"{}"),
                part: None,
                body_ref: None,
                request_ref: None,
                replay: None,
            })
            .collect();
        let json: Vec<String> = envelopes.iter().map(Envelope::to_json).collect();
        let outgoing: Vec<Outgoing> = envelopes
            .iter()
            .zip(&json)
            .map(|(e, j)| Outgoing::new(e, j))
            .collect();
        let results = target.deliver(&outgoing).await;
        assert_eq!(results.len(), 23);
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        let mut got = Vec::new();
        loop {
            let batch = queue
                .receive(10, Duration::from_secs(30), Duration::ZERO)
                .await
                .expect("receive");
            if batch.is_empty() {
                break;
            }
            for m in batch {
                got.push(
                    Envelope::from_json(&m.body)
                        .expect("an envelope")
                        .dedupe_key,
                );
            }
        }
        got.sort();
        let mut want: Vec<String> = envelopes.iter().map(|e| e.dedupe_key.clone()).collect();
        want.sort();
        assert_eq!(got, want);
    }
}
