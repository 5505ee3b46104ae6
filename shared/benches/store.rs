//! What `inlet dev`'s embedded store costs an event, without HTTP, the generator or the
//! scheduler's noise: `make load` moves by ±10 % from run to run on a shared 2-core machine,
//! this usually by a few per cent (up to 10 % on a busy day: alternate the builds), so a change
//! to the store is judged here first.
//!
//! Two file stores, as `inlet dev` opens them (queues and ledger apart, WAL, group commit, a
//! checkpointer each), on the real clock. Each iteration is one event's whole life in the
//! store, or `n` events' at once:
//!
//! - `store/lifecycle/1`: send, receive, take the key, complete, delete, one after the other:
//!   one connection's pattern, every operation a commit of its own.
//! - `store/lifecycle/16`: sixteen concurrent sends, one receive of the sixteen, sixteen takes at
//!   once, sixteen completions at once, one delete of the batch: sixteen connections' pattern,
//!   where operations share commits. Divide by 16 for the cost per event.
//!
//! Bodies are 1,300-byte envelopes and keys are fresh each event, as under `make load`.
//!
//! Each is timed twice: `store/lifecycle` by the wall clock (what a caller waits), and
//! `store/cpu` by the CPU time of the whole process (the writer threads, the checkpointers,
//! the runtime), which is what bounds `inlet dev` once its two cores are busy. (On a shared
//! 2-core VM it moved between rounds as much as the wall clock did: alternate the builds.)

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::future::join_all;
use inlet::adapters::embedded::{EmbeddedStore, SqliteLedger, SqliteQueue};
use inlet::ports::{
    BeginRequest, Clock, EventSummary, Ledger, OutboundMessage, Queue, SystemClock,
};

const VISIBILITY: Duration = Duration::from_secs(60);
const DAY_MS: i64 = 86_400_000;

struct Stores {
    queue: SqliteQueue,
    ledger: SqliteLedger,
    clock: Arc<dyn Clock>,
    next: AtomicU64,
    body: String,
    dir: std::path::PathBuf,
}

impl Drop for Stores {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Stores {
    fn open(tag: usize) -> Self {
        let dir =
            std::env::temp_dir().join(format!("inlet-store-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench folder");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let queues =
            EmbeddedStore::open(&dir.join("queues.db"), clock.clone()).expect("queues open");
        let ledger =
            EmbeddedStore::open(&dir.join("inlet.db"), clock.clone()).expect("ledger opens");
        Self {
            queue: queues.queue("events", None),
            ledger: ledger.ledger(),
            clock,
            next: AtomicU64::new(0),
            body: format!("{{\"envelope\":\"{}\"}}", "x".repeat(1_280)),
            dir,
        }
    }

    fn begin_request(&self, n: u64) -> BeginRequest {
        let now = self.clock.now_ms();
        BeginRequest {
            key: format!("stripe#evt_{n:024x}{:08x}", n.wrapping_mul(2_654_435_761)),
            source: "stripe".into(),
            body_sha256: format!("{:064x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15),
            provider_event_id: Some(format!("evt_{n}")),
            event_type: Some("payment_intent.succeeded".into()),
            via: "webhook".into(),
            received_at_ms: now,
            now_ms: now,
            lease_until_ms: now + 60_000,
            summary: EventSummary {
                object_id: Some(format!("pi_{:020x}", n.wrapping_mul(0x2545_f491_4f6c_dd1d))),
                amount: Some(1_000),
                ..EventSummary::default()
            },
        }
    }

    /// `n` events sent at once, received in one batch, taken, completed and deleted together.
    async fn lifecycle(&self, n: usize) {
        let first = self.next.fetch_add(n as u64, Ordering::Relaxed);
        let message = OutboundMessage::new(self.body.clone());
        for sent in join_all((0..n).map(|_| self.queue.send(&message))).await {
            sent.expect("send");
        }
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            let got = self
                .queue
                .receive_up_to(n - batch.len(), VISIBILITY, Duration::from_secs(1))
                .await
                .expect("receive");
            batch.extend(got);
        }
        let requests: Vec<BeginRequest> = (0..n as u64)
            .map(|i| self.begin_request(first + i))
            .collect();
        let now = self.clock.now_ms();
        let delivered: BTreeSet<String> = ["jsonl".to_owned()].into();
        for taken in join_all(requests.iter().map(|r| self.ledger.begin(r))).await {
            taken.expect("begin");
        }
        let completes = requests
            .iter()
            .map(|r| self.ledger.complete(&r.key, now, now + DAY_MS, &delivered));
        for completed in join_all(completes).await {
            completed.expect("complete");
        }
        let handles = batch.into_iter().map(|m| m.receipt_handle).collect();
        let deleted = self.queue.delete_all(handles).await.expect("delete");
        assert!(deleted.iter().all(|&d| d), "every message deleted");
    }
}

/// The CPU time every thread of this process has used so far.
fn process_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "CLOCK_PROCESS_CPUTIME_ID");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Criterion measuring the process's CPU time instead of the wall clock.
struct ProcessCpu;

static WALL: WallTime = WallTime;

impl Measurement for ProcessCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        process_cpu()
    }
    fn end(&self, started: Duration) -> Duration {
        process_cpu().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Two stores with some history, as stores that have run a while have: the ledger's indexes
/// are not all on one page.
fn stores_with_history(rt: &tokio::runtime::Runtime, tag: usize) -> Stores {
    let stores = Stores::open(tag);
    rt.block_on(async {
        for _ in 0..200 {
            stores.lifecycle(50).await;
        }
    });
    stores
}

/// Each event count on stores of its own (`tag` keeps the groups' folders apart), timed by `c`'s
/// measurement.
fn each_count<M: Measurement>(c: &mut Criterion<M>, name: &str, tag: usize) {
    let rt = runtime();
    let mut group = c.benchmark_group(name);
    for n in [1usize, 16] {
        let stores = stores_with_history(&rt, tag + n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.to_async(&rt).iter(|| stores.lifecycle(n))
        });
    }
    group.finish();
}

fn lifecycle(c: &mut Criterion) {
    each_count(c, "store/lifecycle", 0);
}

fn cpu(c: &mut Criterion<ProcessCpu>) {
    each_count(c, "store/cpu", 100);
}

fn config<M: Measurement>(measurement: M) -> Criterion<M> {
    Criterion::default()
        .with_measurement(measurement)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = wall;
    config = config(WallTime);
    targets = lifecycle
}
criterion_group! {
    name = cpu_time;
    config = config(ProcessCpu);
    targets = cpu
}
criterion_main!(wall, cpu_time);
