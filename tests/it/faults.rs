//! Fault injection (issue 5, item 7): the pipeline under the faults that lose or double events
//! in lesser designs, each run ending with the one accounting check
//! (`support::accounting`): every acknowledged event accepted once by a real HTTP target on
//! loopback or in the DLQ, none lost, none accepted twice outside the at-least-once window
//! (which the check classifies from evidence, never hides).
//!
//! (a) the real `inlet dev` SIGKILLed two dozen times at random points while it dispatches,
//!     restarted on the same store each time; (b) a target failing N times, then recovering;
//! (c) a target answering 400; (d) the AWS adapters (SQS, DynamoDB) with moto dropping out
//!     mid-run, behind a proxy that is cut and restored; (e) `inlet dev` SIGKILLed while a
//!     concurrent load of signed webhooks is being written to its SQLite store (every request
//!     archived, so kills also fall between a blob and its message).
//!
//! Random choices come from a printed seed (`INLET_TEST_SEED` repeats a run).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use inlet::adapters::aws::{sdk_config_for_endpoint, DynamoLedger, SqsQueue};
use inlet::adapters::embedded::{EmbeddedStore, SqliteQueue};
use inlet::config::{Config, RetrySpec, TargetKind, TargetSpec};
use inlet::ingest::{Ingest, WebhookRequest};
use inlet::ports::{Clock, Ledger, Queue, SystemClock, WorkerRecord};
use inlet::targets::http::{HttpTarget, HttpTargetSpec};
use inlet::targets::Target;
use inlet::worker::{Outcome, Worker};

use crate::cli::Dev;
use crate::pipeline::{sample_body, signed_headers, Running, SOURCES};
use crate::polling_acceptance::{seed, Rng};
use crate::support::accounting::{account, assert_accounted, dead_letters, Abandoned, Books};
use crate::support::aws;
use crate::support::proxy::CutProxy;
use crate::support::receiver::{reply, start_receiver, Holding, Receiver, Reply, Seen, SECRET};

/// One provider delivery: sent again as it is, it is the provider's retry (same dedupe key).
#[derive(Debug, Clone)]
struct Delivery {
    source: &'static str,
    body: Vec<u8>,
    id: String,
}

impl Delivery {
    fn new(n: u64) -> Self {
        let source = SOURCES[(n % SOURCES.len() as u64) as usize];
        Self {
            source,
            body: sample_body(source, 90_000 + n),
            id: format!("delivery-{n}"),
        }
    }
}

/// POST `d` freshly signed to `base`; its dedupe key when ingest answered 200.
async fn deliver(
    client: &reqwest::Client,
    base: &str,
    cfg: &Config,
    d: &Delivery,
) -> Result<String, String> {
    let headers = signed_headers(cfg, d.source, &d.body, SystemClock.now_ms(), &d.id);
    let mut req = client
        .post(format!("{base}/webhooks/{}", d.source))
        .body(d.body.clone());
    for (k, v) in headers.iter() {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    v["dedupe_key"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no dedupe_key in {text}"))
}

/// The dev config for `inlet dev` in `dir`, every route to the receiver at `hook`. The lease
/// (2 s) and visibility (3 s) bring a killed worker's messages back within seconds, and
/// `max_receive_count` is high because every kill costs the batch in hand one receive: kills
/// alone must never walk an event into the DLQ.
fn write_dev_config(dir: &Path, hook: SocketAddr) -> PathBuf {
    let text = crate::pipeline::dev_config_text(dir)
        .replace("lease_seconds = 60", "lease_seconds = 2")
        .replace(
            "visibility_timeout_seconds = 180",
            "visibility_timeout_seconds = 3",
        )
        .replace("max_receive_count = 5", "max_receive_count = 100")
        .replace("targets = [\"file\"]", "targets = [\"hook\"]");
    let path = dir.join("inlet.toml");
    std::fs::write(
        &path,
        format!(
            "{text}\n[[targets]]\nid = \"hook\"\nkind = \"http\"\nurl = \"http://{hook}/hook\"\n\
             secret = \"literal:{SECRET}\"\ntimeout_seconds = 1\nallow_private = [\"127.0.0.1/32\"]\n"
        ),
    )
    .expect("write config");
    path
}

/// The test's own view of `inlet dev`'s store (the same SQLite files, other connections):
/// the receiver's probe, the abandonment snapshots, the queue depth and the DLQ.
struct StoreView {
    ledger: Arc<dyn Ledger>,
    main: SqliteQueue,
    dlq: SqliteQueue,
}

impl StoreView {
    fn open(data: &Path) -> Self {
        std::fs::create_dir_all(data).expect("data dir");
        let open = |file| EmbeddedStore::open(&data.join(file), Arc::new(SystemClock));
        let store = open(inlet::local::DB_FILE).expect("open the store");
        let queues = open(inlet::local::QUEUES_FILE).expect("open the queues");
        Self {
            ledger: Arc::new(store.ledger()),
            main: queues.queue(inlet::local::MAIN_QUEUE, None),
            dlq: queues.queue(inlet::local::DEAD_LETTER_QUEUE, None),
        }
    }
}

/// Wait (bounded) until `queue` holds nothing: every message was processed and deleted or
/// moved to the DLQ.
async fn wait_drained(queue: &dyn Queue, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while queue.depth().await.expect("depth") != Some(0) {
        assert!(
            Instant::now() < deadline,
            "{what}: the queue still holds {:?} message(s) after 90 s",
            queue.depth().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (bounded) until `rx` has seen `n` requests.
async fn wait_for_receipts(rx: &Receiver, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while rx.seen().len() < n {
        assert!(
            Instant::now() < deadline,
            "the target saw {} of {n} requests within 30 s",
            rx.seen().len()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// (a) inlet dev SIGKILLed at random points during dispatch
// ---------------------------------------------------------------------------------------------

/// Where a kill lands.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// The target accepted an event and its answer is held back: the worker dies between
    /// "accepted" and `complete` — the at-least-once window, on purpose.
    Window,
    /// A random instant after the burst was acknowledged: receiving, taking keys,
    /// dispatching, completing, deleting, or idle.
    Timer(u64),
    /// A few ms after the target saw its n-th further request: mid-batch.
    AfterReceipts(usize, u64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inlet_dev_sigkilled_at_random_points_during_dispatch_loses_and_doubles_nothing() {
    const KILLS: usize = 24;
    const BURST: u64 = 8;
    let seed = seed("faults (a): inlet dev SIGKILL during dispatch");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let (hook, rx) = start_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_dev_config(dir.path(), hook);
    let cfg = inlet::config::load_file(&config, &|_: &str| None).expect("config");
    let view = StoreView::open(&dir.path().join("data"));
    rx.probe(view.ledger.clone());
    let client = reqwest::Client::new();

    let mut books = Books::default();
    let mut sent: Vec<Delivery> = Vec::new();
    let mut by_key: BTreeMap<String, Delivery> = BTreeMap::new();
    let mut tripped: BTreeSet<String> = BTreeSet::new();
    // The provider's retry of an event whose holder was killed in the window, sent right
    // after the restart while that holder's lease is still live.
    let mut retry_now: Vec<Delivery> = Vec::new();
    let mut points = Vec::new();
    let mut next = 0u64;

    for kill in 0..KILLS {
        let dev = Dev::start(&config);
        let mut burst: Vec<Delivery> = std::mem::take(&mut retry_now);
        for _ in 0..BURST {
            let d = Delivery::new(next);
            next += 1;
            sent.push(d.clone());
            burst.push(d);
        }
        // Two provider retries of earlier deliveries (done ones are duplicates).
        for _ in 0..2 {
            burst.push(sent[rng.below(sent.len() as u64) as usize].clone());
        }
        let point = match rng.below(3) {
            0 => KillPoint::Window,
            1 => KillPoint::Timer(rng.below(400)),
            _ => KillPoint::AfterReceipts(1 + rng.below(BURST) as usize, rng.below(5)),
        };
        points.push(point);
        let trip = matches!(point, KillPoint::Window).then(|| rx.arm());
        let receipts_before = rx.seen().len();
        for d in &burst {
            let key = deliver(&client, &dev.base, &cfg, d)
                .await
                .unwrap_or_else(|e| panic!("kill {kill}: a live inlet dev refused {d:?}: {e}"));
            books.acknowledged.insert(key.clone());
            by_key.insert(key, d.clone());
        }
        match point {
            KillPoint::Window => {
                let t = tokio::time::timeout(Duration::from_secs(30), trip.expect("armed"))
                    .await
                    .unwrap_or_else(|_| panic!("kill {kill}: no receipt tripped the wire"))
                    .expect("tripped");
                dev.kill();
                retry_now.push(by_key[&t.webhook_id].clone());
                tripped.insert(t.webhook_id);
                // The target's answer now goes to a dead connection.
                drop(t.resume);
            }
            KillPoint::Timer(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                dev.kill();
            }
            KillPoint::AfterReceipts(n, ms) => {
                wait_for_receipts(&rx, receipts_before + n).await;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                dev.kill();
            }
        }
        books
            .abandoned
            .push(Abandoned::snapshot(&*view.ledger, format!("SIGKILL {kill} ({point:?})")).await);
    }

    let dev = Dev::start(&config);
    for d in retry_now.drain(..) {
        let key = deliver(&client, &dev.base, &cfg, &d)
            .await
            .expect("the provider's last retry");
        books.acknowledged.insert(key);
    }
    wait_drained(&view.main, "(a)").await;
    drop(dev);
    books.receipts = rx.seen();
    books.dead = dead_letters(&view.dlq, &*view.ledger).await;
    let acc = assert_accounted("faults (a)", &books);
    eprintln!(
        "faults (a): {KILLS} kills at {points:?}, {} deliveries, {:?}",
        sent.len(),
        started.elapsed()
    );
    assert!(acc.dead.is_empty(), "nothing here should fail: {acc:?}");
    // Each kill in the window left an accepted, uncompleted holding: the event must have
    // been dispatched again after the lease, and the check must have said why.
    for key in &tripped {
        assert!(
            acc.redelivered_after_abandonment.contains_key(key),
            "{key} was accepted and its holder killed before `complete`, yet no second \
             dispatch was classified: {}",
            acc.summary()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (b), (c) targets that fail: in process, on the stack's ManualClock (no waiting out backoffs)
// ---------------------------------------------------------------------------------------------

/// Attempts of the route in (b): an event whose target fails this often or more is dead.
const ATTEMPTS: u32 = 4;

/// The local pipeline (real HTTP ingest, SQLite queue and ledger) with every route to the
/// receiver, retrying `ATTEMPTS` times with backoffs of at most 1 s.
async fn pipeline_to_receiver() -> (Running, Arc<Receiver>) {
    let (hook, rx) = start_receiver().await;
    let run = Running::start(|doc| {
        doc.targets.push(TargetSpec {
            id: "hook".into(),
            kind: TargetKind::Http(HttpTargetSpec {
                url: format!("http://{hook}/hook"),
                secret: format!("literal:{SECRET}"),
                timeout_seconds: 5.0,
                max_concurrency: 8,
                allow_private: vec!["127.0.0.1/32".into()],
                headers: Default::default(),
                signing_key: None,
            }),
        });
        doc.routes[0].targets = vec!["hook".into()];
        doc.routes[0].retry = Some(RetrySpec {
            attempts: Some(ATTEMPTS),
            base: Some("1s".into()),
            cap: Some("1s".into()),
        });
    })
    .await;
    rx.probe(Arc::new(run.stack.store.ledger()));
    (run, rx)
}

/// `n` signed Stripe events through ingest: their dedupe keys, by event number.
async fn accept_stripe(run: &Running, n: u64) -> BTreeMap<u64, String> {
    let mut keys = BTreeMap::new();
    for i in 0..n {
        let (status, answer) = run.post_signed("stripe", &sample_body("stripe", i)).await;
        assert_eq!(status, 200, "{answer}");
        keys.insert(i, answer["dedupe_key"].as_str().expect("key").to_owned());
    }
    keys
}

/// Work the queue, moving the clock past each backoff, until it holds nothing.
async fn drain_with_backoffs(run: &Running) {
    for _ in 0..4 * ATTEMPTS {
        run.drain().await;
        if run.stack.queue.depth().await.expect("depth") == Some(0) {
            return;
        }
        run.clock.advance_ms(1_001);
    }
    panic!(
        "still {:?} message(s) on the queue",
        run.stack.queue.depth().await
    );
}

/// The books of an in-process run: no process dies and no batch is abandoned here, so any
/// second acceptance is a plain duplicate.
async fn books_of(run: &Running, rx: &Receiver, keys: &BTreeMap<u64, String>) -> Books {
    let ledger = run.stack.store.ledger();
    Books {
        acknowledged: keys.values().cloned().collect(),
        receipts: rx.seen(),
        dead: dead_letters(&run.stack.dlq, &ledger).await,
        abandoned: Vec::new(),
    }
}

/// The event number of a `stripe#evt_test_<n>` key.
fn event_number(key: &str) -> u64 {
    key.rsplit('_')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a sample stripe key: {key}"))
}

#[tokio::test]
async fn a_target_failing_n_times_then_recovering_gets_each_event_once_or_dead_lettered() {
    let (run, rx) = pipeline_to_receiver().await;
    // Event n fails n % 6 times (0–5): 503s, or 429s with Retry-After, then is accepted.
    // With 4 attempts, 0–3 failures recover; 4 and 5 use up the attempts first.
    let failures = |n: u64| n % 6;
    rx.rule(move |key, earlier| {
        let n = event_number(key);
        if (earlier as u64) < failures(n) {
            if n.is_multiple_of(2) {
                Reply {
                    headers: vec![("retry-after", "1".into())],
                    ..reply(429)
                }
            } else {
                reply(503)
            }
        } else {
            reply(200)
        }
    });
    let keys = accept_stripe(&run, 30).await;
    drain_with_backoffs(&run).await;

    let books = books_of(&run, &rx, &keys).await;
    let acc = assert_accounted("faults (b)", &books);
    for (n, key) in &keys {
        let tries = books
            .receipts
            .iter()
            .filter(|s| &s.webhook_id == key)
            .count() as u64;
        if failures(*n) < u64::from(ATTEMPTS) {
            assert!(acc.delivered.contains(key), "{key}: {}", acc.summary());
            assert_eq!(tries, failures(*n) + 1, "{key}: each failure retried once");
        } else {
            assert!(acc.dead.contains(key), "{key}: {}", acc.summary());
            assert_eq!(tries, u64::from(ATTEMPTS), "{key}: never past its attempts");
            assert!(
                books.dead[key].contains(&format!("gave up after {ATTEMPTS} attempts")),
                "{key}: {}",
                books.dead[key]
            );
        }
    }
}

#[tokio::test]
async fn a_target_answering_400_sends_those_events_to_the_dlq_at_once_and_takes_the_rest_once() {
    let (run, rx) = pipeline_to_receiver().await;
    let refused = |n: u64| n.is_multiple_of(3);
    rx.rule(move |key, _| {
        if refused(event_number(key)) {
            reply(400)
        } else {
            reply(200)
        }
    });
    let keys = accept_stripe(&run, 30).await;
    drain_with_backoffs(&run).await;

    let books = books_of(&run, &rx, &keys).await;
    let acc = assert_accounted("faults (c)", &books);
    for (n, key) in &keys {
        let tries = books
            .receipts
            .iter()
            .filter(|s| &s.webhook_id == key)
            .count();
        assert_eq!(tries, 1, "{key}: one request, no retry");
        if refused(*n) {
            assert!(acc.dead.contains(key), "{key}: {}", acc.summary());
            assert!(
                books.dead[key].contains("target hook answered HTTP 400"),
                "{key}: {}",
                books.dead[key]
            );
        } else {
            assert!(acc.delivered.contains(key), "{key}: {}", acc.summary());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (e) inlet dev SIGKILLed while a concurrent load is being written to its store
// ---------------------------------------------------------------------------------------------

/// Deliveries waiting to be sent (a provider's outbox); shared by the posting tasks.
type Outbox = Arc<std::sync::Mutex<VecDeque<Delivery>>>;

/// A provider's sender: takes deliveries from `outbox` until it is empty or the server is
/// gone; a delivery without a 200 goes back for a later retry.
async fn provider(
    client: reqwest::Client,
    base: String,
    cfg: Arc<Config>,
    outbox: Outbox,
    acked: tokio::sync::watch::Sender<BTreeSet<String>>,
) {
    loop {
        let Some(d) = outbox.lock().expect("lock").pop_front() else {
            return;
        };
        match deliver(&client, &base, &cfg, &d).await {
            Ok(key) => {
                acked.send_modify(|a| {
                    a.insert(key);
                });
            }
            Err(_) => {
                outbox.lock().expect("lock").push_back(d);
                return;
            }
        }
    }
}

/// Run `senders` providers against `base` until `outbox` is empty or they all stopped.
fn spawn_providers(
    senders: usize,
    base: &str,
    cfg: &Arc<Config>,
    outbox: &Outbox,
    acked: &tokio::sync::watch::Sender<BTreeSet<String>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::new();
    (0..senders)
        .map(|_| {
            tokio::spawn(provider(
                client.clone(),
                base.to_owned(),
                cfg.clone(),
                outbox.clone(),
                acked.clone(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inlet_dev_sigkilled_while_ingesting_a_load_keeps_every_acknowledged_event() {
    const KILLS: usize = 8;
    const EVENTS: u64 = 300;
    let seed = seed("faults (e): inlet dev SIGKILL during ingest");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let (hook, rx) = start_receiver().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_dev_config(dir.path(), hook);
    // Every request archived: its document is written before its message, so kills land
    // between a blob and its message too. (Claim-checked 300 KiB bodies were tried here: one
    // still in flight to the target when its sender was killed reached the receiver after the
    // abandonment snapshot, which the accounting check cannot tell from a double; the claim
    // check's windows are hit deterministically in large.rs.)
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replacen("[settings]\n", "[settings]\narchive = true\n", 1),
    )
    .expect("config");
    let cfg = Arc::new(inlet::config::load_file(&config, &|_: &str| None).expect("config"));
    let view = StoreView::open(&dir.path().join("data"));
    rx.probe(view.ledger.clone());

    // Every tenth delivery is sent twice (a provider retry), anywhere in the load.
    let mut deliveries: Vec<Delivery> = (0..EVENTS).map(|n| Delivery::new(50_000 + n)).collect();
    for n in (0..EVENTS).step_by(10) {
        let at = rng.below(deliveries.len() as u64) as usize;
        deliveries.insert(at, Delivery::new(50_000 + n));
    }
    let outbox: Outbox = Arc::new(std::sync::Mutex::new(deliveries.into()));
    let (acked, watch_acks) = tokio::sync::watch::channel(BTreeSet::new());
    let mut books = Books::default();

    for kill in 0..KILLS {
        let dev = Dev::start(&config);
        let goal = watch_acks.borrow().len() + 5 + rng.below(30) as usize;
        let senders = spawn_providers(4, &dev.base, &cfg, &outbox, &acked);
        let mut watching = watch_acks.clone();
        tokio::time::timeout(
            Duration::from_secs(30),
            watching.wait_for(|a| a.len() >= goal),
        )
        .await
        .unwrap_or_else(|_| panic!("kill {kill}: fewer than {goal} acknowledgements in 30 s"))
        .expect("acks");
        // Four requests in flight, the worker busy with earlier ones: SIGKILL.
        dev.kill();
        for s in senders {
            s.await.expect("provider");
        }
        books
            .abandoned
            .push(Abandoned::snapshot(&*view.ledger, format!("SIGKILL {kill} under load")).await);
    }
    let dev = Dev::start(&config);
    for s in spawn_providers(4, &dev.base, &cfg, &outbox, &acked) {
        s.await.expect("provider");
    }
    assert!(
        outbox.lock().expect("lock").is_empty(),
        "a live inlet dev refused deliveries"
    );
    wait_drained(&view.main, "(e)").await;
    drop(dev);
    books.acknowledged = watch_acks.borrow().clone();
    books.receipts = rx.seen();
    books.dead = dead_letters(&view.dlq, &*view.ledger).await;
    let acc = assert_accounted("faults (e)", &books);
    eprintln!("faults (e): {KILLS} kills, {:?}", started.elapsed());
    assert_eq!(books.acknowledged.len(), EVENTS as usize);
    assert!(acc.dead.is_empty(), "nothing here should fail: {acc:?}");
}

// ---------------------------------------------------------------------------------------------
// (d) the AWS adapters with the emulator dropping out mid-run
// ---------------------------------------------------------------------------------------------

/// Send `d` through ingest until it answers 200, as a provider retries a 503: its dedupe key
/// and how many 503s it took.
async fn ingest_until_accepted(ingest: &Ingest, cfg: &Config, d: &Delivery) -> (String, usize) {
    let mut refused = 0;
    loop {
        let resp = ingest
            .handle(WebhookRequest {
                method: "POST".into(),
                path: format!("/webhooks/{}", d.source),
                headers: signed_headers(cfg, d.source, &d.body, SystemClock.now_ms(), &d.id),
                body: d.body.clone(),
                ..Default::default()
            })
            .await;
        if resp.status == 200 {
            let v: serde_json::Value = serde_json::from_str(&resp.body).expect("json");
            return (v["dedupe_key"].as_str().expect("key").to_owned(), refused);
        }
        assert_eq!(resp.status, 503, "{}", resp.body);
        refused += 1;
        // The provider's backoff before its retry.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the event source mapping loop saw while the emulator came and went.
#[derive(Default)]
struct EsmLog {
    /// Failed SDK calls it made itself (receive, delete) and records the worker failed.
    failures: usize,
    abandoned: Vec<Abandoned>,
}

/// The Lambda event source mapping over `main`: receive, run the worker, delete what did not
/// fail — until `stop`. After a batch with failed records, which of their keys the worker
/// left IN_PROGRESS (read straight from moto, not through the cut proxy) is evidence for the
/// accounting check: between batches no worker holds anything.
async fn event_source_mapping(
    main: Arc<dyn Queue>,
    worker: Worker,
    visibility: Duration,
    evidence: Arc<dyn Ledger>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> EsmLog {
    let mut log = EsmLog::default();
    while !*stop.borrow() {
        let msgs = match main.receive(10, visibility, Duration::from_secs(1)).await {
            Ok(msgs) => msgs,
            Err(_) => {
                log.failures += 1;
                // The mapping's own pause before it polls again.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if msgs.is_empty() {
            continue;
        }
        let records: Vec<WorkerRecord> = msgs.iter().map(WorkerRecord::from).collect();
        let result = worker.process(&records).await;
        let failed = result.failed_message_ids();
        for m in msgs.iter().filter(|m| !failed.contains(&m.message_id)) {
            // A failed delete only brings the message back: dedupe answers it then.
            if main.delete(&m.receipt_handle).await.is_err() {
                log.failures += 1;
            }
        }
        let keys: Vec<String> = result
            .outcomes
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Failed {
                    dedupe_key: Some(k),
                    ..
                } => Some(k.clone()),
                _ => None,
            })
            .collect();
        log.failures += keys.len();
        let a = Abandoned::of_keys(
            &*evidence,
            keys.iter().map(String::as_str),
            "a batch returned without completing",
        )
        .await;
        if !a.holdings.is_empty() {
            log.abandoned.push(a);
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_adapters_with_the_emulator_dropping_out_mid_run_lose_and_double_nothing() {
    const EVENTS: u64 = 60;
    let seed = seed("faults (d): AWS emulator dropping out");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let (hook, rx) = start_receiver().await;
    let proxy = CutProxy::start(&aws::endpoint()).await;
    // One attempt per SDK call: the outage reaches Inlet's code rather than being retried
    // over inside the SDK (its standard mode tries 3 times), and Inlet's code is under test.
    let through_proxy = sdk_config_for_endpoint(&proxy.endpoint(), aws::REGION)
        .await
        .into_builder()
        .retry_config(RetryConfig::disabled())
        .build();
    let queues = aws::queues_with_dlq(100).await;
    let direct_ledger = aws::ledger().await;
    let main: Arc<dyn Queue> =
        Arc::new(SqsQueue::from_conf(&through_proxy, queues.main.queue_url()));
    let dlq: Arc<dyn Queue> = Arc::new(SqsQueue::from_conf(&through_proxy, queues.dlq.queue_url()));
    let ledger: Arc<dyn Ledger> = Arc::new(DynamoLedger::from_conf(
        &through_proxy,
        direct_ledger.table(),
    ));
    let direct_ledger: Arc<dyn Ledger> = Arc::new(direct_ledger);
    rx.probe(direct_ledger.clone());

    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = HttpTargetSpec {
        url: format!("http://{hook}/hook"),
        secret: format!("literal:{SECRET}"),
        timeout_seconds: 1.0,
        max_concurrency: 8,
        allow_private: vec!["127.0.0.1/32".into()],
        headers: Default::default(),
        signing_key: None,
    };
    let cfg = Arc::new(crate::pipeline::dev_config(dir.path(), |doc| {
        doc.settings.lease_seconds = 3;
        doc.settings.visibility_timeout_seconds = 4;
        doc.settings.max_receive_count = 100;
        doc.targets.push(TargetSpec {
            id: "hook".into(),
            kind: TargetKind::Http(spec.clone()),
        });
        doc.routes[0].targets = vec!["hook".into()];
    }));
    spec.prepare(SECRET.into()).expect("valid spec");
    let mut targets: BTreeMap<String, Arc<dyn Target>> = BTreeMap::new();
    targets.insert(
        "hook".into(),
        Arc::new(HttpTarget::new("hook".into(), &spec).expect("target")),
    );
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let worker = Worker::new(cfg.clone(), ledger.clone(), targets, clock.clone())
        .with_queues(main.clone(), dlq.clone());
    let ingest = Ingest::new(cfg.clone(), main.clone(), ledger.clone(), clock);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let esm = tokio::spawn(event_source_mapping(
        main.clone(),
        worker,
        Duration::from_secs(cfg.settings.visibility_timeout_seconds),
        direct_ledger.clone(),
        stopped,
    ));

    // The provider: each delivery until ingest answers 200 (a 503 while SQS is away), at a
    // steady pace, with ten of them sent again later (its retries).
    let mut deliveries: Vec<Delivery> = (0..EVENTS).map(|n| Delivery::new(70_000 + n)).collect();
    for n in (0..EVENTS).step_by(6) {
        let at = n as usize + 1 + rng.below(EVENTS - n) as usize;
        deliveries.insert(at.min(deliveries.len()), Delivery::new(70_000 + n));
    }
    let ingest = Arc::new(ingest);
    let by_key: Arc<std::sync::Mutex<BTreeMap<String, Delivery>>> = Default::default();
    let provider = {
        let (cfg, ingest, by_key) = (cfg.clone(), ingest.clone(), by_key.clone());
        tokio::spawn(async move {
            let (mut acked, mut refused) = (BTreeSet::new(), 0usize);
            for d in deliveries {
                let (key, n) = ingest_until_accepted(&ingest, &cfg, &d).await;
                by_key.lock().expect("lock").insert(key.clone(), d);
                acked.insert(key);
                refused += n;
                // The provider's pace: the load spans the outages.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (acked, refused)
        })
    };

    // The first outage is the at-least-once window, made on purpose: the target accepts an
    // event, and the emulator drops out before the worker's `complete`. The provider resends
    // that event at once, while the abandoned holding's lease is still live: the copy must
    // wait for the lease (a broken lease check dispatches it at once and the check fails).
    let tripped = tokio::time::timeout(Duration::from_secs(30), rx.arm())
        .await
        .expect("no receipt tripped the wire in 30 s")
        .expect("tripped");
    proxy.cut();
    drop(tripped.resume);
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.restore();
    let mut outages = vec![400];
    // Its first send may have been queued under a lost answer and not acknowledged yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    let resend = loop {
        if let Some(d) = by_key.lock().expect("lock").get(&tripped.webhook_id) {
            break d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{} never acknowledged",
            tripped.webhook_id
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (resent_key, _) = ingest_until_accepted(&ingest, &cfg, &resend).await;
    assert_eq!(resent_key, tripped.webhook_id);
    // Then two outages of 0.4–1.2 s at random moments.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(600))).await;
        proxy.cut();
        let ms = 400 + rng.below(800);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        proxy.restore();
        outages.push(ms);
    }
    let (acknowledged, refused) = provider.await.expect("provider");
    wait_drained(&queues.main, "(d)").await;
    stop.send_replace(true);
    let log = esm.await.expect("event source mapping");

    let books = Books {
        acknowledged,
        receipts: rx.seen(),
        dead: dead_letters(&queues.dlq, &*direct_ledger).await,
        abandoned: log.abandoned,
    };
    let acc = assert_accounted("faults (d)", &books);
    eprintln!(
        "faults (d): outages of {outages:?} ms; ingest answered 503 {refused} time(s), the worker side \
         saw {} failure(s); {:?}",
        log.failures,
        started.elapsed()
    );
    assert_eq!(books.acknowledged.len(), EVENTS as usize);
    assert!(acc.dead.is_empty(), "nothing here should fail: {acc:?}");
    assert!(
        acc.redelivered_after_abandonment
            .contains_key(&tripped.webhook_id),
        "{} was accepted and its `complete` cut off, yet no second dispatch was classified: {}",
        tripped.webhook_id,
        acc.summary()
    );
    // Not vacuous: the outages reached both sides.
    assert!(refused > 0, "ingest never saw SQS away");
    assert!(
        log.failures > 0,
        "the worker side never saw the emulator away"
    );
}

// ---------------------------------------------------------------------------------------------
// The check itself: what it calls lost, doubled and redelivered
// ---------------------------------------------------------------------------------------------

fn receipt(key: &str, status: u16, at: Instant, holding: Option<(i64, i64)>) -> Seen {
    Seen {
        path: "/hook".into(),
        webhook_id: key.into(),
        verified: true,
        team: None,
        content_type: None,
        body: Vec::new(),
        status,
        at,
        holding: holding.map(|(taken_at_ms, lease_until_ms)| Holding {
            status: inlet::ports::DedupeStatus::InProgress,
            taken_at_ms,
            lease_until_ms,
        }),
    }
}

#[test]
fn the_accounting_check_allows_a_second_acceptance_only_with_evidence_of_the_window() {
    let t0 = Instant::now();
    let t = |ms: u64| t0 + Duration::from_millis(ms);
    let kill_at = |ms: u64, key: &str, lease_until: i64| Abandoned {
        at: t(ms),
        cause: "SIGKILL".into(),
        holdings: [(key.to_owned(), lease_until)].into(),
    };
    let books = |receipts: Vec<Seen>, abandoned: Vec<Abandoned>| Books {
        acknowledged: ["k".to_owned()].into(),
        receipts,
        dead: BTreeMap::new(),
        abandoned,
    };
    let first = receipt("k", 200, t(10), Some((1_000, 3_000)));
    let after_lease = receipt("k", 200, t(50), Some((3_001, 5_001)));

    // Abandoned after the first acceptance, retaken after its lease: the window.
    let acc = account(&books(
        vec![first.clone(), after_lease.clone()],
        vec![kill_at(20, "k", 3_000)],
    ));
    assert!(acc.clean() && acc.redelivered_after_abandonment.contains_key("k"));
    // No evidence, or evidence from before the acceptance, or of another holding: doubled.
    for abandoned in [
        vec![],
        vec![kill_at(5, "k", 3_000)],
        vec![kill_at(20, "k", 2_999)],
    ] {
        let acc = account(&books(vec![first.clone(), after_lease.clone()], abandoned));
        assert!(acc.doubled.contains_key("k"), "{}", acc.summary());
    }
    // Abandoned, but retaken while its lease was live: doubled.
    let during_lease = receipt("k", 200, t(50), Some((2_500, 4_500)));
    let acc = account(&books(
        vec![first.clone(), during_lease],
        vec![kill_at(20, "k", 3_000)],
    ));
    assert!(acc.doubled.contains_key("k"), "{}", acc.summary());
    // Failed attempts are not deliveries; no acceptance and no dead letter is lost.
    let acc = account(&books(vec![receipt("k", 503, t(10), None)], vec![]));
    assert_eq!(acc.lost, BTreeSet::from(["k".to_owned()]));
    // Accepted and in the DLQ is not "exactly one of".
    let mut both = books(vec![first], vec![]);
    both.dead
        .insert("k".into(), "target hook answered HTTP 400".into());
    assert!(!account(&both).clean());
}
