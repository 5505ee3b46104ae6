//! Test harness: the adapters of each backend, built fresh for every test.

pub mod accounting;
pub mod aws;
pub mod calls;
pub mod cfn;
pub mod proxy;
pub mod receiver;
pub mod recorder;
pub mod webdriver;

/// The embedded (SQLite) side: one in-memory store per test, on the test's clock.
pub mod embedded {
    use std::sync::Arc;

    use inlet::adapters::embedded::{EmbeddedStore, Redrive};
    use inlet::ports::{Clock, EventBus, Ledger, Queue};

    pub fn store(clock: Arc<dyn Clock>) -> EmbeddedStore {
        EmbeddedStore::open_in_memory(clock).expect("open an in-memory store")
    }

    /// A main queue redriving to its DLQ after `max_receive_count` receives.
    pub fn queues_with_dlq(
        clock: Arc<dyn Clock>,
        max_receive_count: u32,
    ) -> (Box<dyn Queue>, Box<dyn Queue>) {
        let store = store(clock);
        let dlq = store.queue("main-dlq", None);
        let main = store.queue(
            "main",
            Some(Redrive {
                dead_letter_queue: "main-dlq".to_owned(),
                max_receive_count,
            }),
        );
        (Box::new(main), Box::new(dlq))
    }

    pub fn ledger(clock: Arc<dyn Clock>) -> Box<dyn Ledger> {
        Box::new(store(clock).ledger())
    }

    pub fn bus(clock: Arc<dyn Clock>) -> Box<dyn EventBus> {
        Box::new(store(clock).bus("default"))
    }
}
