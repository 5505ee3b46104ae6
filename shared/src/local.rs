//! The local stack: the same ingest and worker over the embedded adapters, as `inlet dev`
//! and the end-to-end tests run it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::adapters::embedded::{
    move_messages, EmbeddedStore, FileBlobs, Redrive, SqliteQueue, ThreadStart,
};
use crate::checks::{CheckOutcome, CheckRunner, CheckScheduler};
use crate::config::Config;
use crate::ingest::Ingest;
use crate::poller::Poller;
use crate::ports::http::HttpClient;
use crate::ports::{BlobKind, BlobStore, Clock, EventBus, Queue, ReceivedMessage, WorkerRecord};
use crate::targets::{build_targets, Target, TargetFactoryError, TargetKind};
use crate::worker::{BatchResult, Worker};

pub const MAIN_QUEUE: &str = "events";
pub const DEAD_LETTER_QUEUE: &str = "events-dlq";
/// Delayed check messages, with their own dead-letter queue (a check message replayed onto
/// the events queue would be an undecodable envelope).
pub(crate) const CHECKS_QUEUE: &str = "checks";
pub(crate) const CHECKS_DEAD_LETTER_QUEUE: &str = "checks-dlq";
/// How long a check's poll may run locally before it stops at a page boundary.
const CHECK_RUN_BUDGET: Duration = Duration::from_secs(120);
pub(crate) const BUS: &str = "default";
/// The ledger, the trail, poll state, checks and the bus.
pub const DB_FILE: &str = "inlet.db";
/// The queues, in a file of their own: SQLite lets one writer at a time into a file, and as
/// SQS and DynamoDB are separate services, ingest's sends need not wait for the worker's
/// ledger writes (docs/performance.md, "The queues in a file of their own").
pub const QUEUES_FILE: &str = "queues.db";
/// How often `inlet dev` counts its backlog for back-pressure.
const BACKLOG_SAMPLE: Duration = Duration::from_millis(100);
/// The blob store's folder, beside the database.
pub const BLOBS_DIR: &str = "blobs";

/// A hook for the threads of each store file ([`LocalStack::open_placed`]).
#[derive(Clone, Default)]
pub struct StoreThreads {
    /// The threads of [`DB_FILE`]: the ledger's writes (the worker's), the trail, the rest.
    pub ledger: Option<ThreadStart>,
    /// The threads of [`QUEUES_FILE`]: ingest's sends and the worker's receives and deletes.
    pub queues: Option<ThreadStart>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("store: {0}")]
    Store(String),
    #[error("{0}")]
    Target(#[from] crate::targets::TargetBuildError),
}

pub struct LocalStack {
    pub config: Arc<Config>,
    /// The ledger, the trail, poll state, checks and the bus.
    pub store: EmbeddedStore,
    /// The queues: the same store as `store` in memory, [`QUEUES_FILE`] on disk.
    pub queues: EmbeddedStore,
    pub queue: SqliteQueue,
    pub dlq: SqliteQueue,
    pub checks_queue: SqliteQueue,
    pub ingest: Ingest,
    pub worker: Worker,
    pub clock: Arc<dyn Clock>,
    /// Claimed bodies (and the archive): files under the data folder's `blobs/`.
    pub blobs: Option<Arc<dyn BlobStore>>,
    /// The same files, for their retention sweep.
    files: Option<FileBlobs>,
    /// The main queue's visible messages, as last sampled ([`Self::watch_backlog`]).
    backlog: tokio::sync::watch::Sender<u64>,
}

/// Targets on the embedded stores: the bus beside the ledger, an SQS target's queue beside
/// the others (a queue named by its URL's last segment).
fn local_targets(
    store: &EmbeddedStore,
    queues: &EmbeddedStore,
    config: &Config,
    specs: &[crate::targets::TargetSpec],
) -> Result<std::collections::BTreeMap<String, Arc<dyn Target>>, LocalError> {
    let bus_for = |name: Option<&str>| -> Result<Arc<dyn EventBus>, TargetFactoryError> {
        Ok(Arc::new(store.bus(name.unwrap_or(BUS))))
    };
    let queue_for = |url: &str| -> Result<Arc<dyn Queue>, TargetFactoryError> {
        let name = crate::targets::sqs::local_queue_name(url);
        if name == MAIN_QUEUE || name == DEAD_LETTER_QUEUE {
            return Err(TargetFactoryError::OwnQueue(name.to_owned()));
        }
        Ok(Arc::new(queues.queue(name, None)))
    };
    Ok(build_targets(
        specs,
        &config.base_dir,
        &bus_for,
        &queue_for,
    )?)
}

impl LocalStack {
    pub fn open(
        config: Config,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LocalError> {
        Self::open_placed(config, data_dir, clock, StoreThreads::default())
    }

    /// [`Self::open`], with a hook for the threads of each of the two store files.
    pub fn open_placed(
        config: Config,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
        threads: StoreThreads,
    ) -> Result<Self, LocalError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| LocalError::Store(format!("{}: {e}", data_dir.display())))?;
        let (db, queues_db) = (data_dir.join(DB_FILE), data_dir.join(QUEUES_FILE));
        let open = |path: &Path, on_start: Option<ThreadStart>| {
            EmbeddedStore::open_placed(path, clock.clone(), on_start)
                .map_err(|e| LocalError::Store(format!("{}: {e}", path.display())))
        };
        let (store, queues) = (
            open(&db, threads.ledger)?,
            open(&queues_db, threads.queues)?,
        );
        // A store from before the queues had their own file may hold queued events.
        let moved = move_messages(&db, &queues_db).map_err(|e| {
            LocalError::Store(format!(
                "moving queued messages to {}: {e}",
                queues_db.display()
            ))
        })?;
        if moved > 0 {
            tracing::info!(moved, file = %queues_db.display(), "queued messages moved to the queues' own file");
        }
        let files = FileBlobs::new(data_dir.join(BLOBS_DIR));
        let blobs: Arc<dyn BlobStore> = Arc::new(files.clone());
        let mut stack = Self::build(config, store, queues, clock, Some(blobs))?;
        stack.files = Some(files);
        Ok(stack)
    }

    /// A stack on `store` without a blob store: envelopes travel inline up to a queue
    /// message, and a larger one is refused.
    pub fn with_store(
        config: Config,
        store: EmbeddedStore,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LocalError> {
        Self::build(config, store.clone(), store, clock, None)
    }

    fn build(
        config: Config,
        store: EmbeddedStore,
        queues: EmbeddedStore,
        clock: Arc<dyn Clock>,
        blobs: Option<Arc<dyn BlobStore>>,
    ) -> Result<Self, LocalError> {
        let config = Arc::new(config);
        let queue = queues.queue(
            MAIN_QUEUE,
            Some(Redrive {
                dead_letter_queue: DEAD_LETTER_QUEUE.to_string(),
                max_receive_count: config.settings.max_receive_count,
            }),
        );
        let mut dlq = queues.queue(DEAD_LETTER_QUEUE, None);
        // Per-entity order needs a FIFO queue, and (as on SQS) a FIFO queue's DLQ is FIFO too,
        // so a replay keeps each message's group.
        let queue = if config.needs_fifo() {
            dlq = dlq.into_fifo();
            queue.into_fifo()
        } else {
            queue
        };
        let checks_queue = queues.queue(
            CHECKS_QUEUE,
            Some(Redrive {
                dead_letter_queue: CHECKS_DEAD_LETTER_QUEUE.to_string(),
                max_receive_count: config.settings.max_receive_count,
            }),
        );
        let ledger = Arc::new(store.ledger());
        let targets = local_targets(&store, &queues, &config, &config.targets)?;
        let ingest = Ingest::new(
            config.clone(),
            Arc::new(queue.clone()),
            ledger.clone(),
            clock.clone(),
        )
        .with_rate_limits();
        // Sources without checks make no check call, so the scheduler can always be there.
        // The worker stretches visibility and moves dead letters on the same queues.
        let worker = Worker::new(config.clone(), ledger.clone(), targets, clock.clone())
            .with_checks(CheckScheduler::new(ledger, Arc::new(checks_queue.clone())))
            .with_queues(Arc::new(queue.clone()), Arc::new(dlq.clone()));
        let (ingest, worker) = match &blobs {
            Some(b) => (ingest.with_blobs(b.clone()), worker.with_blobs(b.clone())),
            None => (ingest, worker),
        };
        Ok(Self {
            config,
            store,
            queues,
            queue,
            dlq,
            checks_queue,
            ingest,
            worker,
            clock,
            blobs,
            files: None,
            backlog: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Sample the main queue's backlog (its visible messages) every [`BACKLOG_SAMPLE`] until
    /// `shutdown` turns true: what [`Self::room_for_webhook`] waits on, and what tells
    /// `inlet dev` its worker is falling behind ([`Self::overflow_backlog`]).
    pub async fn watch_backlog(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let cap = self
            .config
            .settings
            .max_backlog
            .max(self.overflow_backlog())
            .saturating_add(1);
        while !*shutdown.borrow() {
            let stack = self.clone();
            let count = move || stack.queues.visible_up_to(MAIN_QUEUE, cap);
            match tokio::task::spawn_blocking(count).await {
                Ok(Ok(visible)) => {
                    self.backlog.send_replace(visible);
                }
                Ok(Err(e)) => warn!(error = %e, "the backlog could not be counted"),
                Err(e) => warn!(error = %e, "the backlog count did not finish"),
            }
            tokio::select! {
                _ = tokio::time::sleep(BACKLOG_SAMPLE) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// The backlog as last sampled: counted up to one more than `settings.max_backlog` (or
    /// than [`Self::overflow_backlog`], if that is more).
    pub fn backlog(&self) -> u64 {
        *self.backlog.borrow()
    }

    /// Each new sample of the backlog ([`Self::watch_backlog`]).
    pub fn backlog_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.backlog.subscribe()
    }

    /// The backlog past which the worker's loops are falling behind: more than two rounds of
    /// their batches (`worker_batch_size` × `worker_concurrency` × 2) wait. `inlet dev` then
    /// runs one more loop, at the webhooks' own CPU priority, until it is back under.
    pub fn overflow_backlog(&self) -> u64 {
        let loops = self.config.settings.worker_concurrency.max(1);
        (self.batch_size().saturating_mul(loops).saturating_mul(2)) as u64
    }

    /// Back-pressure: whether a webhook may go to ingest now, waiting up to `within` while the
    /// backlog is over `settings.max_backlog` for the worker to bring it back under. A webhook
    /// that may not is answered 503 and retried by its provider: nothing is lost, and what the
    /// worker owes stays bounded.
    pub async fn room_for_webhook(&self, within: Duration) -> bool {
        let max = self.config.settings.max_backlog;
        if max == 0 || self.backlog() <= max {
            return true;
        }
        let mut rx = self.backlog.subscribe();
        let seen = tokio::time::timeout(within, rx.wait_for(|&b| b <= max)).await;
        seen.is_ok_and(|under| under.is_ok())
    }

    /// Remove the blobs past their retention (`settings.blob_retention_days` for bodies,
    /// `archive_retention_days` for archived requests): what S3's lifecycle does on AWS.
    /// `inlet dev` runs it at start and every hour. The bodies and requests removed.
    pub fn sweep_blobs(&self) -> Result<(usize, usize), LocalError> {
        let Some(files) = &self.files else {
            return Ok((0, 0));
        };
        let before = |days: u32| {
            std::time::SystemTime::now()
                .checked_sub(Duration::from_secs(u64::from(days) * 86_400))
                .unwrap_or(std::time::UNIX_EPOCH)
        };
        let s = &self.config.settings;
        let sweep = |kind, days| {
            files
                .sweep(kind, before(days))
                .map_err(|e| LocalError::Store(e.to_string()))
        };
        Ok((
            sweep(BlobKind::Body, s.blob_retention_days)?,
            sweep(BlobKind::Request, s.archive_retention_days)?,
        ))
    }

    /// The configured target `id`, built on this stack's store (`inlet redeliver`).
    pub fn target(&self, id: &str) -> Result<Arc<dyn Target>, LocalError> {
        let spec = self.config.targets.iter().filter(|t| t.id == id);
        let specs: Vec<_> = spec.cloned().collect();
        local_targets(&self.store, &self.queues, &self.config, &specs)?
            .remove(id)
            .ok_or_else(|| LocalError::Store(format!("no target {id:?} in the config")))
    }

    /// A poller over this stack's queue, ledger and poll state (`inlet poll`, the schedules
    /// of `inlet dev`). `holder` names the run in leases.
    pub fn poller(&self, http: Arc<dyn HttpClient>, holder: &str) -> Poller {
        let ledger = Arc::new(self.store.ledger());
        let poller = Poller::new(
            self.config.clone(),
            Arc::new(self.queue.clone()),
            ledger.clone(),
            ledger,
            http,
            self.clock.clone(),
            holder,
        );
        match &self.blobs {
            Some(b) => poller.with_blobs(b.clone()),
            None => poller,
        }
    }

    /// What fires due checks on this stack: the poller Lambda's job on AWS.
    pub fn check_runner(&self, http: Arc<dyn HttpClient>, holder: &str) -> CheckRunner {
        let ledger = Arc::new(self.store.ledger());
        CheckRunner::new(
            self.config.clone(),
            ledger.clone(),
            Arc::new(self.checks_queue.clone()),
            ledger,
            Arc::new(self.poller(http, holder)),
            self.clock.clone(),
        )
    }

    /// Receive one batch of check messages (waiting up to `wait`; a delayed message shows
    /// when its delay ends), fire them, delete all but those to retry — the poller's SQS
    /// event source on AWS.
    pub async fn fire_checks_once(
        &self,
        runner: &CheckRunner,
        wait: Duration,
    ) -> Result<Vec<(String, CheckOutcome)>, LocalError> {
        let msgs = self
            .checks_queue
            .receive(10, self.visibility(), wait)
            .await
            .map_err(|e| LocalError::Store(e.to_string()))?;
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<WorkerRecord> = msgs.iter().map(WorkerRecord::from).collect();
        let deadline = self.clock.now_ms() + CHECK_RUN_BUDGET.as_millis() as i64;
        let outcomes = runner.process(&records, deadline).await;
        for (m, (_, o)) in msgs.iter().zip(&outcomes) {
            if !o.retry() {
                if let Err(e) = self.checks_queue.delete(&m.receipt_handle).await {
                    warn!(message_id = %m.message_id, error = %e, "check message delete failed; it will come again and find the check closed");
                }
            }
        }
        Ok(outcomes)
    }

    /// The most messages one batch of the worker takes: `settings.worker_batch_size`, or ten on
    /// a FIFO queue (Lambda's limit for one, which this mirrors). Never more than every HTTP
    /// target can answer, at its concurrency and timeout, within the lease the batch's keys
    /// are taken for (the shortest, as a source may shorten its own), while the other batches
    /// in progress (`settings.worker_concurrency`, and the overflow loop's) share the target's
    /// requests: a hanging target then holds a batch no longer than the lease.
    fn batch_size(&self) -> usize {
        if self.queue.is_fifo() {
            return 10;
        }
        let sources = self.config.sources.values().map(|s| s.lease_ms);
        let lease = sources.fold(self.config.lease_ms(), i64::min) as f64 / 1000.0;
        let http_cap = self
            .config
            .targets
            .iter()
            .filter_map(|t| match &t.kind {
                TargetKind::Http(h) => {
                    let rounds = (lease / h.timeout_seconds).floor().max(1.0) as usize;
                    // The loops, and `inlet dev`'s overflow loop beside them.
                    let batches = self.config.settings.worker_concurrency.max(1) + 1;
                    Some(rounds.saturating_mul(h.max_concurrency) / batches)
                }
                _ => None,
            })
            .min()
            .unwrap_or(usize::MAX);
        self.config.settings.worker_batch_size.min(http_cap).max(1)
    }

    fn visibility(&self) -> Duration {
        Duration::from_secs(self.config.settings.visibility_timeout_seconds)
    }

    /// Receive one batch (waiting up to `wait`), process it, delete what succeeded — the
    /// Lambda event source mapping's job. Failed records stay and reappear after their
    /// backoff (the worker stretches their visibility); the worker moves what can never
    /// succeed to the DLQ itself, and the queue redrives after `max_receive_count`.
    pub async fn work_once(&self, wait: Duration) -> Result<BatchResult, LocalError> {
        // Like Lambda's event source mapping with a batch size above ten: one batch takes what
        // is visible, up to the batch size, in one write of the store (so a quiet queue's events
        // are not held back waiting for company).
        let msgs = self
            .queue
            .receive_up_to(self.batch_size(), self.visibility(), wait)
            .await
            .map_err(|e| LocalError::Store(e.to_string()))?;
        if msgs.is_empty() {
            return Ok(BatchResult::default());
        }
        let records: Vec<WorkerRecord> = msgs.iter().map(WorkerRecord::from).collect();
        let result = self.worker.process(&records).await;
        let failed = result.failed_message_ids();
        // One write for the batch's deletes, as the event source mapping acknowledges a batch.
        let done: Vec<&ReceivedMessage> = msgs
            .iter()
            .filter(|m| !failed.contains(&m.message_id))
            .collect();
        let handles = done.iter().map(|m| m.receipt_handle.clone()).collect();
        match self.queue.delete_all(handles).await {
            Ok(deleted) => {
                for (m, _) in done.iter().zip(deleted).filter(|(_, ok)| !ok) {
                    warn!(message_id = %m.message_id, "delete refused (the receipt is no longer the latest); the message will be redelivered and deduplicated");
                }
            }
            Err(e) => {
                warn!(messages = done.len(), error = %e, "delete failed; the messages will be redelivered and deduplicated");
            }
        }
        Ok(result)
    }
}
