//! The load generator behind `inlet-load` (and `make load`): distinct, correctly signed
//! webhooks for one source, driven closed-loop over N keep-alive connections from a process
//! of its own, then an accounting check that every acknowledged event was dispatched exactly
//! once. Throughput figures are printed, never asserted (they belong in
//! `docs/performance.md`, not in tests).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inlet::config::{Config, Source, TargetKind};
use inlet::ports::{Clock, SystemClock};

use crate::sign::{sign_request, SignError, SignedRequest};

/// When a run stops sending.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    After(Duration),
    Requests(u64),
}

/// One run: `connections` closed loops against `base` until `stop`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server's base URL, e.g. `http://127.0.0.1:8787`.
    pub base: String,
    pub connections: usize,
    pub stop: Stop,
    /// Bodies are padded to this many bytes (a JSON field), so runs compare like for like.
    pub body_size: usize,
    /// How long to wait, after the last request, for the worker to dispatch every
    /// acknowledged event; what is still missing then is reported lost.
    pub drain_timeout: Duration,
    /// `inlet dev`'s process id, to report its CPU time beside the generator's.
    pub server_pid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("--body-size needs a JSON object body, and {0}'s sample body is not one")]
    NotJsonObject(String),
    #[error("no jsonl target receives {0}'s events, so nothing shows what was dispatched: name the file with --events-file")]
    NoJsonlTarget(String),
    #[error("{path}: {error}")]
    EventsFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("a connection task ended abnormally: {0}")]
    Task(tokio::task::JoinError),
    #[error("--connections must be at least 1")]
    NoConnections,
    #[error("the thread counting the events file's lines panicked")]
    Watcher,
}

/// Pad a JSON object body with a `"padding"` field up to `size` bytes, keeping every other
/// byte as the provider wrote it. A body already that large is returned as is; `None` when
/// padding is needed and the body is not a JSON object.
pub fn pad_json(mut body: Vec<u8>, size: usize) -> Option<Vec<u8>> {
    if body.len() >= size {
        return Some(body);
    }
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let object = value.as_object()?;
    let close = body.iter().rposition(|b| *b == b'}')?;
    let field: &[u8] = if object.is_empty() {
        b"\"padding\":\""
    } else {
        b",\"padding\":\""
    };
    // The field's own bytes: its name and quotes, plus the closing quote.
    let overhead = field.len() + 1;
    let fill = size.saturating_sub(body.len() + overhead);
    let mut insert = Vec::with_capacity(overhead + fill);
    insert.extend_from_slice(field);
    insert.resize(insert.len() + fill, b'x');
    insert.push(b'"');
    body.splice(close..close, insert);
    Some(body)
}

/// A new event for `source`: a fresh event id (so no request is a duplicate of another),
/// padded to `body_size`, signed at `now_ms` with a delivery id of its own.
pub fn distinct_request(
    source: &Source,
    body_size: usize,
    now_ms: i64,
) -> Result<SignedRequest, LoadError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let body = pad_json(source.provider.sample_body(&id, now_ms), body_size)
        .ok_or_else(|| LoadError::NotJsonObject(source.id.clone()))?;
    Ok(sign_request(source, body, now_ms, &id)?)
}

/// The JSONL file the worker writes `source`'s events to: the first jsonl target its routes
/// name.
pub fn events_file(cfg: &Config, source: &str) -> Result<PathBuf, LoadError> {
    let routed = cfg.targets_for(source, &[]);
    routed
        .iter()
        .find_map(|id| {
            cfg.targets.iter().find_map(|t| match &t.kind {
                TargetKind::Jsonl { path } if &t.id == id => Some(cfg.resolve_path(path)),
                _ => None,
            })
        })
        .ok_or_else(|| LoadError::NoJsonlTarget(source.to_string()))
}

/// Follows a JSONL target file as the worker appends to it, counting each `dedupe_key`.
#[derive(Debug)]
pub struct DispatchLog {
    path: PathBuf,
    offset: u64,
    /// The start of a line the worker has not finished writing yet.
    partial: Vec<u8>,
    pub counts: HashMap<String, u32>,
    /// Lines that are not an envelope with a `dedupe_key` (reported, never counted).
    pub unreadable: u64,
}

impl DispatchLog {
    /// Start at the file's current end: events of earlier runs are not this run's.
    pub fn at_end(path: &Path) -> Result<Self, LoadError> {
        let offset = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => {
                return Err(LoadError::EventsFile {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            offset,
            partial: Vec::new(),
            counts: HashMap::new(),
            unreadable: 0,
        })
    }

    /// Count the lines appended since the last call.
    pub fn read_new(&mut self) -> Result<(), LoadError> {
        let io = |error| LoadError::EventsFile {
            path: self.path.clone(),
            error,
        };
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            // The worker creates the file with its first event.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let read = file.read_to_end(&mut self.partial).map_err(io)?;
        self.offset += read as u64;
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let key = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("dedupe_key")?.as_str().map(str::to_string));
            match key {
                Some(k) => *self.counts.entry(k).or_default() += 1,
                None => self.unreadable += 1,
            }
        }
        Ok(())
    }

    fn count(&self, key: &str) -> u32 {
        self.counts.get(key).copied().unwrap_or(0)
    }
}

/// Every acknowledged key dispatched once: how many were, were not, or were more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Accounting {
    pub acknowledged: u64,
    pub dispatched: u64,
    pub lost: u64,
    pub doubled: u64,
}

pub fn account<'a>(
    acknowledged: impl IntoIterator<Item = &'a String>,
    log: &DispatchLog,
) -> Accounting {
    let mut a = Accounting::default();
    for key in acknowledged {
        a.acknowledged += 1;
        match log.count(key) {
            0 => a.lost += 1,
            1 => a.dispatched += 1,
            _ => {
                a.dispatched += 1;
                a.doubled += 1;
            }
        }
    }
    a
}

/// What one connection saw.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    statuses: BTreeMap<String, u64>,
    keys: Vec<String>,
    /// 200 answers without a dedupe key: acknowledged, but not checkable.
    unkeyed: u64,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, t: Tally) {
        self.latencies.extend(t.latencies);
        for (s, n) in t.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.keys.extend(t.keys);
        self.unkeyed += t.unkeyed;
        if self.first_error.is_none() {
            self.first_error = t.first_error;
        }
    }
}

async fn connection(
    client: reqwest::Client,
    base: String,
    source: Arc<Source>,
    body_size: usize,
    stop: Stop,
    deadline: Instant,
    counts: Arc<Counts>,
) -> Result<Tally, LoadError> {
    let mut tally = Tally::default();
    loop {
        let more = match stop {
            Stop::After(_) => Instant::now() < deadline,
            Stop::Requests(n) => counts.issued.fetch_add(1, Ordering::Relaxed) < n,
        };
        if !more {
            return Ok(tally);
        }
        let signed = distinct_request(&source, body_size, SystemClock.now_ms())?;
        let mut req = client.post(format!("{base}{}", signed.path));
        for (k, v) in signed.headers.iter() {
            req = req.header(k, v);
        }
        let started = Instant::now();
        let answer = match req.body(signed.body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                resp.bytes().await.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        tally.latencies.push(started.elapsed());
        match answer {
            Ok((status, body)) => {
                *tally.statuses.entry(status.to_string()).or_default() += 1;
                if status == 200 {
                    let keys = accepted_keys(&body);
                    if keys.is_empty() {
                        tally.unkeyed += 1;
                    }
                    counts
                        .acknowledged
                        .fetch_add(keys.len() as u64, Ordering::Relaxed);
                    tally.keys.extend(keys);
                }
            }
            Err(e) => {
                *tally.statuses.entry("error".to_string()).or_default() += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// The dedupe keys an accepted answer names: `dedupe_key`, or `dedupe_keys` for a batch.
fn accepted_keys(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    if let Some(k) = v.get("dedupe_key").and_then(|k| k.as_str()) {
        return vec![k.to_string()];
    }
    v.get("dedupe_keys")
        .and_then(|k| k.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The result of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub connections: usize,
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub statuses: BTreeMap<String, u64>,
    /// Events the worker had dispatched by the last answer, per second of load: the pace it
    /// kept while ingest ran (sustained only if the backlog stayed flat).
    pub dispatched_per_second_under_load: Option<f64>,
    /// Acknowledged and dispatched events, sampled every second of the load.
    pub backlog: Vec<Sample>,
    #[serde(flatten)]
    pub accounting: Accounting,
    /// 200 answers that named no dedupe key, and keys acknowledged more than once (each
    /// request is a new event, so both mean the check cannot vouch for the run).
    pub unkeyed: u64,
    pub repeated_keys: u64,
    /// Seconds from the last answer until the worker had dispatched every acknowledged
    /// event; `None` when it had not within the drain timeout.
    pub drain_seconds: Option<f64>,
    /// Acknowledged events over the time from the first request to the last dispatch: the
    /// worker's pace (a lower bound on its capacity when it kept up with ingest).
    pub dispatched_per_second: Option<f64>,
    /// CPU seconds per wall second while requests ran (1.0 = one core busy).
    pub generator_cores: Option<f64>,
    pub server_cores: Option<f64>,
    /// The server's CPU per request by thread name, largest first: which thread a change
    /// must relieve (a figure that moves far less with the machine than the latencies).
    pub server_threads: Vec<ThreadCpu>,
    /// Each CPU's busy fraction while requests ran, the generator and the kernel included:
    /// whether one CPU saturates while another idles.
    pub cpu_busy: Vec<f64>,
    pub first_error: Option<String>,
}

impl Report {
    /// Every acknowledged event dispatched exactly once, and the run could check that.
    pub fn holds(&self) -> bool {
        self.accounting.acknowledged > 0
            && self.accounting.lost == 0
            && self.accounting.doubled == 0
            && self.unkeyed == 0
            && self.repeated_keys == 0
    }
}

/// What the connections count together: requests issued (for `--requests N`) and events
/// acknowledged (for the backlog samples).
#[derive(Debug, Default)]
struct Counts {
    issued: AtomicU64,
    acknowledged: AtomicU64,
}

/// How often the load samples acknowledged against dispatched events.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Acknowledged and dispatched events at one moment of a run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    pub at_seconds: f64,
    pub acknowledged: u64,
    pub dispatched: u64,
}

impl Sample {
    /// Acknowledged events the worker had not dispatched yet.
    pub fn backlog(&self) -> u64 {
        self.acknowledged.saturating_sub(self.dispatched)
    }
}

/// Lines appended to the events file: the worker's progress while the load runs. It only
/// counts newlines (the accounting reads the keys after the load), so sampling takes next
/// to nothing from the generator's CPU.
struct LineCounter {
    path: PathBuf,
    offset: u64,
    lines: u64,
}

impl LineCounter {
    fn at_end(path: &Path) -> Result<Self, LoadError> {
        let log = DispatchLog::at_end(path)?;
        Ok(Self {
            path: log.path,
            offset: log.offset,
            lines: 0,
        })
    }

    /// The lines appended since `at_end`.
    fn poll(&mut self) -> Result<u64, LoadError> {
        let io = |error| LoadError::EventsFile {
            path: self.path.clone(),
            error,
        };
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self.lines),
            Err(e) => return Err(io(e)),
        };
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut chunk).map_err(io)?;
            if n == 0 {
                return Ok(self.lines);
            }
            self.offset += n as u64;
            self.lines += chunk[..n].iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
}

/// A [`LineCounter`] polled on a thread of its own, every [`WATCH_EVERY`]. Reading what the
/// worker appended in a second (≈ 10 MB at one connection) takes the reading thread a few
/// milliseconds; done on the runtime, it held up the answer of whichever connection's task
/// waited behind it, once a second, and showed up in the generator's own p99.9. Each poll
/// publishes the lines with the acknowledged count read just before it, so a sample's backlog
/// compares the two at one instant however stale the pair is when the sample takes it.
struct LineWatcher {
    latest: Arc<Mutex<(u64, u64)>>,
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Result<LineCounter, LoadError>>,
}

const WATCH_EVERY: Duration = Duration::from_millis(100);

impl LineCounter {
    fn watch(mut self, acknowledged: impl Fn() -> u64 + Send + 'static) -> LineWatcher {
        let latest = Arc::new(Mutex::new((acknowledged(), self.lines)));
        let (stop, stopped) = std::sync::mpsc::channel();
        let published = latest.clone();
        let thread = std::thread::spawn(move || loop {
            let acked = acknowledged();
            let lines = self.poll()?;
            *published.lock().unwrap_or_else(|p| p.into_inner()) = (acked, lines);
            match stopped.recv_timeout(WATCH_EVERY) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                _ => return Ok(self),
            }
        });
        LineWatcher {
            latest,
            stop,
            thread,
        }
    }
}

impl LineWatcher {
    /// The acknowledged count and the lines, as of the last poll.
    fn latest(&self) -> (u64, u64) {
        *self.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the thread and counts the lines appended up to now.
    fn finish(self) -> Result<u64, LoadError> {
        // A send error only means the thread already returned (with an error, or done).
        let _ = self.stop.send(());
        let mut counter = self.thread.join().map_err(|_| LoadError::Watcher)??;
        counter.poll()
    }
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// CPU time (user + system) of a process so far, from `/proc/PID/stat`; `None` where there
/// is no procfs.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    stat_cpu_seconds(&std::fs::read_to_string(path).ok()?)
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: count fields after the
    // last ')'. utime and stime are fields 14 and 15, so the 12th and 13th after it.
    let after = stat.rsplit_once(')')?.1;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // In clock ticks of USER_HZ, which the procfs ABI fixes at 100 on Linux.
    Some((utime + stime) as f64 / 100.0)
}

/// The command name of a `/proc/.../stat` line: for a thread, its name (at most 15 bytes).
fn stat_name(stat: &str) -> Option<&str> {
    let (_, rest) = stat.split_once('(')?;
    Some(rest.rsplit_once(')')?.0)
}

/// CPU time so far of each thread of process `pid`, summed by thread name (threads of one
/// pool share a name): where a run's CPU went, read from `/proc/PID/task/*/stat`.
pub fn thread_cpu_seconds(pid: u32) -> Option<BTreeMap<String, f64>> {
    let mut by_name = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread may end between the listing and the read: it is left out.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let (Some(name), Some(cpu)) = (stat_name(&stat), stat_cpu_seconds(&stat)) {
            *by_name.entry(name.to_string()).or_insert(0.0) += cpu;
        }
    }
    Some(by_name)
}

/// Busy and total time of each CPU so far, from `/proc/stat` (in USER_HZ ticks).
pub fn cpu_ticks() -> Option<Vec<(u64, u64)>> {
    parse_cpu_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_cpu_ticks(stat: &str) -> Option<Vec<(u64, u64)>> {
    let mut cpus = Vec::new();
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        // `cpu` is the sum of all; `cpu0`, `cpu1`, … one each.
        match fields.next() {
            Some(name) if name.starts_with("cpu") && name.len() > 3 => {}
            _ => continue,
        }
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let t: Vec<u64> = fields
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        let total: u64 = t.iter().sum();
        let idle = t.get(3)? + t.get(4)?;
        // Time the hypervisor gave to others is not this machine's work.
        let steal = *t.get(7)?;
        cpus.push((total - idle - steal, total));
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// One thread name's share of the server's CPU during a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThreadCpu {
    pub name: String,
    /// CPU microseconds per answered request.
    pub micros_per_request: f64,
}

/// Where the server's CPU went per request, largest first, threads under 1 µs left out.
fn thread_shares(
    before: Option<BTreeMap<String, f64>>,
    after: Option<BTreeMap<String, f64>>,
    requests: u64,
) -> Vec<ThreadCpu> {
    let (Some(before), Some(after)) = (before, after) else {
        return Vec::new();
    };
    if requests == 0 {
        return Vec::new();
    }
    let mut shares: Vec<ThreadCpu> = after
        .into_iter()
        .map(|(name, cpu)| {
            let spent = cpu - before.get(&name).copied().unwrap_or(0.0);
            ThreadCpu {
                name,
                micros_per_request: spent * 1e6 / requests as f64,
            }
        })
        .filter(|t| t.micros_per_request >= 1.0)
        .collect();
    shares.sort_by(|a, b| b.micros_per_request.total_cmp(&a.micros_per_request));
    shares
}

/// Each CPU's busy fraction between two [`cpu_ticks`] readings.
fn busy_fractions(before: Option<Vec<(u64, u64)>>, after: Option<Vec<(u64, u64)>>) -> Vec<f64> {
    let (Some(before), Some(after)) = (before, after) else {
        return Vec::new();
    };
    before
        .iter()
        .zip(&after)
        .map(|((b0, t0), (b1, t1))| {
            let total = t1.saturating_sub(*t0);
            if total == 0 {
                0.0
            } else {
                b1.saturating_sub(*b0) as f64 / total as f64
            }
        })
        .collect()
}

/// One run of `plan` for `source`, then the wait for the worker and the accounting check.
pub async fn run(plan: &Plan, source: Arc<Source>, events: &Path) -> Result<Report, LoadError> {
    if plan.connections == 0 {
        return Err(LoadError::NoConnections);
    }
    // Sign one request up front so a source that cannot be signed fails before any load.
    distinct_request(&source, plan.body_size, SystemClock.now_ms())?;
    let mut log = DispatchLog::at_end(events)?;
    let counts = Arc::new(Counts::default());
    let acked = counts.clone();
    let lines =
        LineCounter::at_end(events)?.watch(move || acked.acknowledged.load(Ordering::Relaxed));
    let cpu_before = (cpu_seconds(None), cpu_seconds(plan.server_pid));
    let threads_before = plan.server_pid.and_then(thread_cpu_seconds);
    let ticks_before = cpu_ticks();
    let started = Instant::now();
    let mut backlog = Vec::new();
    let load = drive(plan, source, started, counts.clone());
    tokio::pin!(load);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let tally = loop {
        tokio::select! {
            done = &mut load => break done?,
            _ = tick.tick() => {
                let (acknowledged, dispatched) = lines.latest();
                backlog.push(Sample {
                    at_seconds: started.elapsed().as_secs_f64(),
                    acknowledged,
                    dispatched,
                });
            }
        }
    };
    let elapsed = started.elapsed();
    // The state at the last answer, so a run shorter than one sample still has one.
    backlog.push(Sample {
        at_seconds: elapsed.as_secs_f64(),
        acknowledged: counts.acknowledged.load(Ordering::Relaxed),
        dispatched: lines.finish()?,
    });
    let cpu_after = (cpu_seconds(None), cpu_seconds(plan.server_pid));
    let threads_after = plan.server_pid.and_then(thread_cpu_seconds);
    let cpu_busy = busy_fractions(ticks_before, cpu_ticks());
    let cores =
        |before: Option<f64>, after: Option<f64>| Some((after? - before?) / elapsed.as_secs_f64());

    let mut acknowledged = tally.keys.clone();
    acknowledged.sort();
    acknowledged.dedup();
    let repeated_keys = (tally.keys.len() - acknowledged.len()) as u64;
    let drained = drain(&mut log, &acknowledged, plan.drain_timeout).await?;

    let mut latencies = tally.latencies;
    latencies.sort();
    let requests = latencies.len() as u64;
    let seconds = elapsed.as_secs_f64();
    let accounting = account(&acknowledged, &log);
    Ok(Report {
        connections: plan.connections,
        requests,
        seconds,
        requests_per_second: requests as f64 / seconds.max(f64::EPSILON),
        p50_ms: percentile_ms(&latencies, 50.0),
        p90_ms: percentile_ms(&latencies, 90.0),
        p99_ms: percentile_ms(&latencies, 99.0),
        p999_ms: percentile_ms(&latencies, 99.9),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        dispatched_per_second_under_load: backlog
            .last()
            .map(|s| s.dispatched as f64 / seconds.max(f64::EPSILON)),
        backlog,
        statuses: tally.statuses,
        accounting,
        unkeyed: tally.unkeyed,
        repeated_keys,
        drain_seconds: drained.map(|d| d.as_secs_f64()),
        dispatched_per_second: drained
            .map(|d| accounting.acknowledged as f64 / (seconds + d.as_secs_f64())),
        generator_cores: cores(cpu_before.0, cpu_after.0),
        server_cores: cores(cpu_before.1, cpu_after.1),
        server_threads: thread_shares(threads_before, threads_after, requests),
        cpu_busy,
        first_error: tally.first_error,
    })
}

/// `plan.connections` closed loops from `started` until `plan.stop`, their tallies merged.
async fn drive(
    plan: &Plan,
    source: Arc<Source>,
    started: Instant,
    counts: Arc<Counts>,
) -> Result<Tally, LoadError> {
    let deadline = match plan.stop {
        Stop::After(d) => started + d,
        Stop::Requests(_) => started,
    };
    let mut tasks = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        // A client per connection with one idle connection kept: exactly N keep-alive
        // connections, each carrying one request at a time (closed loop).
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(LoadError::Client)?;
        tasks.push(tokio::spawn(connection(
            client,
            plan.base.trim_end_matches('/').to_string(),
            source.clone(),
            plan.body_size,
            plan.stop,
            deadline,
            counts.clone(),
        )));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.map_err(LoadError::Task)??);
    }
    Ok(tally)
}

/// How long after the load the worker took to dispatch every acknowledged event, read from
/// the file as the worker appends to it; `None` if it had not within `timeout` (the timeout
/// only bounds a broken run).
async fn drain(
    log: &mut DispatchLog,
    acknowledged: &[String],
    timeout: Duration,
) -> Result<Option<Duration>, LoadError> {
    let load_ended = Instant::now();
    let deadline = load_ended + timeout;
    loop {
        log.read_new()?;
        if acknowledged.iter().all(|k| log.count(k) > 0) {
            return Ok(Some(load_ended.elapsed()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn statuses_text(statuses: &BTreeMap<String, u64>) -> String {
    statuses
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{v:.digits$}"))
}

/// A run in a few lines for a person.
pub fn describe(r: &Report) -> String {
    let a = &r.accounting;
    let mut out = format!(
        "{} connection(s), {:.1} s: {} requests, {:.0} requests/s; statuses {}\n",
        r.connections,
        r.seconds,
        r.requests,
        r.requests_per_second,
        statuses_text(&r.statuses)
    );
    out += &format!(
        "  latency ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}\n",
        r.p50_ms, r.p90_ms, r.p99_ms, r.p999_ms, r.max_ms
    );
    if let Some(rate) = r.dispatched_per_second_under_load {
        let peak = r.backlog.iter().map(Sample::backlog).max().unwrap_or(0);
        let end = r.backlog.last().map_or(0, Sample::backlog);
        out += &format!(
            "  dispatched while loading: {rate:.0}/s; backlog (acknowledged, not yet dispatched) peak {peak}, {end} at the last answer\n  backlog each second: {}\n",
            r.backlog
                .iter()
                .map(|s| s.backlog().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    out += &format!(
        "  acknowledged {}, dispatched {}, lost {}, doubled {}",
        a.acknowledged, a.dispatched, a.lost, a.doubled
    );
    match (r.drain_seconds, r.dispatched_per_second) {
        (Some(d), Some(rate)) => {
            out += &format!(
                " (all dispatched {d:.2} s after the last answer; {rate:.0} dispatched/s)\n"
            )
        }
        _ => out += " (the worker had not dispatched them all within the drain timeout)\n",
    }
    if r.unkeyed > 0 || r.repeated_keys > 0 {
        out += &format!(
            "  unverifiable: {} accepted answers without a dedupe key, {} keys acknowledged twice\n",
            r.unkeyed, r.repeated_keys
        );
    }
    if r.generator_cores.is_some() || r.server_cores.is_some() {
        out += &format!(
            "  CPU while sending (cores): inlet-load {}, inlet dev {}\n",
            opt(r.generator_cores, 2),
            opt(r.server_cores, 2)
        );
    }
    if !r.server_threads.is_empty() {
        let threads: Vec<String> = r
            .server_threads
            .iter()
            .map(|t| format!("{} {:.1}", t.name, t.micros_per_request))
            .collect();
        out += &format!(
            "  inlet dev CPU per request by thread (µs): {}\n",
            threads.join(", ")
        );
    }
    if !r.cpu_busy.is_empty() {
        let busy: Vec<String> = r
            .cpu_busy
            .iter()
            .enumerate()
            .map(|(i, f)| format!("CPU {i} {:.0} %", f * 100.0))
            .collect();
        out += &format!("  busy while sending: {}\n", busy.join(", "));
    }
    if let Some(e) = &r.first_error {
        out += &format!("  first transport error: {e}\n");
    }
    out
}

/// Several runs as a Markdown table (what `docs/performance.md` records).
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| connections | requests | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | statuses | lost | doubled | dispatched/s under load | peak backlog | drain s | dispatched/s | CPU inlet-load | CPU inlet dev |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        out += &format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.connections,
            r.requests,
            r.requests_per_second,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            statuses_text(&r.statuses),
            r.accounting.lost,
            r.accounting.doubled,
            opt(r.dispatched_per_second_under_load, 0),
            r.backlog.iter().map(Sample::backlog).max().unwrap_or(0),
            opt(r.drain_seconds, 2),
            opt(r.dispatched_per_second, 0),
            opt(r.generator_cores, 2),
            opt(r.server_cores, 2),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_thread_name_and_cpu_even_with_parentheses_in_the_name() {
        // Field layout of proc_pid_stat(5): utime 1234 and stime 56 ticks.
        let line = "4242 (q) (writer)) S 1 4242 4242 0 -1 4194368 100 0 0 0 1234 56 0 0 20 0 9 0 \
                    5000 0 0";
        assert_eq!(stat_name(line), Some("q) (writer)"));
        assert_eq!(stat_cpu_seconds(line), Some(12.90));
        assert_eq!(stat_cpu_seconds("4242 (x) S 1"), None, "too few fields");
    }

    #[test]
    fn proc_stat_gives_each_cpu_busy_and_total_without_idle_or_stolen_time() {
        let stat = "cpu  300 0 100 500 20 0 10 70 0 0\n\
                    cpu0 200 0 50 200 10 0 5 35 0 0\n\
                    cpu1 100 0 50 300 10 0 5 35 0 0\n\
                    intr 12345\nctxt 999\n";
        // busy = user + nice + system + irq + softirq; total adds idle, iowait and steal.
        assert_eq!(parse_cpu_ticks(stat), Some(vec![(255, 500), (155, 500)]));
        assert_eq!(parse_cpu_ticks("intr 1\n"), None);
        let later = vec![(255 + 90, 500 + 100), (155 + 25, 500 + 100)];
        assert_eq!(
            busy_fractions(parse_cpu_ticks(stat), Some(later)),
            vec![0.9, 0.25]
        );
    }

    #[test]
    fn thread_shares_are_per_request_largest_first_and_leave_out_idle_threads() {
        let before = BTreeMap::from([("writer".to_string(), 1.0), ("idle".to_string(), 2.0)]);
        let after = BTreeMap::from([
            ("writer".to_string(), 1.5),
            ("idle".to_string(), 2.0),
            // Born during the run: all of its time is the run's.
            ("runtime".to_string(), 0.8),
        ]);
        let shares = thread_shares(Some(before), Some(after), 10_000);
        let got: Vec<(&str, f64)> = shares
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    (t.micros_per_request * 10.0).round() / 10.0,
                )
            })
            .collect();
        assert_eq!(got, vec![("runtime", 80.0), ("writer", 50.0)]);
        assert!(thread_shares(None, Some(BTreeMap::new()), 10).is_empty());
    }

    /// Against the real procfs: a named thread that burns CPU shows under its name.
    #[test]
    fn a_busy_thread_of_this_process_shows_under_its_name() {
        let pid = std::process::id();
        let burner = std::thread::Builder::new()
            .name("load-cpu-probe".into())
            .spawn(move || {
                // Spin until this thread's own stat file shows 30 ms (3 ticks) of CPU, then
                // ask the lookup by process and name what it sees: a lookup that cannot
                // find the thread fails the test rather than spinning for ever.
                let mut x = 0u64;
                loop {
                    for i in 0..100_000u64 {
                        x = x.wrapping_mul(31).wrapping_add(i);
                    }
                    std::hint::black_box(x);
                    let own = std::fs::read_to_string("/proc/thread-self/stat")
                        .ok()
                        .and_then(|s| stat_cpu_seconds(&s));
                    if own.is_some_and(|s| s >= 0.03) {
                        return thread_cpu_seconds(pid)
                            .and_then(|m| m.get("load-cpu-probe").copied());
                    }
                }
            })
            .expect("spawn");
        let seen = burner.join().expect("join");
        assert!(seen.is_some_and(|s| s >= 0.03), "{seen:?}");
        let cpus = cpu_ticks().expect("/proc/stat");
        assert!(!cpus.is_empty());
        assert!(cpus.iter().all(|(busy, total)| busy <= total));
    }

    fn log_with(lines: &str) -> DispatchLog {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let mut log = DispatchLog::at_end(&path).expect("absent file starts at 0");
        std::fs::write(&path, lines).expect("write");
        log.read_new().expect("read");
        log
    }

    #[test]
    fn the_line_counter_counts_whole_lines_appended_since_it_started() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "earlier run\n").expect("write");
        let mut lines = LineCounter::at_end(&path).expect("counter");
        assert_eq!(lines.poll().expect("poll"), 0);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"{\"a\":1}\n{\"b\":2}\n{\"c\"")
            .expect("append");
        assert_eq!(
            lines.poll().expect("poll"),
            2,
            "a half-written line is not one"
        );
        f.write_all(b":3}\n").expect("append");
        assert_eq!(lines.poll().expect("poll"), 3);
        let sample = Sample {
            at_seconds: 1.0,
            acknowledged: 5,
            dispatched: 3,
        };
        assert_eq!(sample.backlog(), 2);
    }

    #[test]
    fn the_line_watcher_counts_on_its_thread_and_finish_counts_the_rest() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let acked = Arc::new(AtomicU64::new(7));
        let read = acked.clone();
        let watcher = LineCounter::at_end(&path)
            .expect("counter")
            .watch(move || read.load(Ordering::Relaxed));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        assert_eq!(watcher.latest(), (7, 0));
        acked.store(9, Ordering::Relaxed);
        f.write_all(b"1\n2\n").expect("append");
        let waited = Instant::now();
        // Both halves of the pair move, on the watcher's thread alone.
        while watcher.latest() != (9, 2) {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the thread never published the two lines with the new count: {:?}",
                watcher.latest()
            );
            std::thread::yield_now();
        }
        f.write_all(b"3\n").expect("append");
        assert_eq!(watcher.finish().expect("finish"), 3);
    }

    #[test]
    fn padded_body_has_the_asked_size_and_keeps_its_fields() {
        let body = br#"{"id":"evt_1","type":"x"}"#.to_vec();
        let padded = pad_json(body, 1024).expect("object");
        assert_eq!(padded.len(), 1024);
        let v: serde_json::Value = serde_json::from_slice(&padded).expect("still JSON");
        assert_eq!(v["id"], "evt_1");
        assert_eq!(v["type"], "x");
        assert_eq!(pad_json(b"{}".to_vec(), 40).map(|b| b.len()), Some(40));
    }

    #[test]
    fn a_body_already_large_enough_or_not_an_object_is_not_padded() {
        assert_eq!(pad_json(b"a=1&b=2".to_vec(), 4), Some(b"a=1&b=2".to_vec()));
        assert_eq!(pad_json(b"a=1&b=2".to_vec(), 100), None);
        assert_eq!(pad_json(b"[1,2]".to_vec(), 100), None);
    }

    #[test]
    fn a_lost_and_a_doubled_event_are_counted() {
        let log = log_with(
            "{\"dedupe_key\":\"s#a\"}\n{\"dedupe_key\":\"s#b\"}\n{\"dedupe_key\":\"s#b\"}\nnot json\n{\"dedupe_key\":\"s#c\"",
        );
        assert_eq!(log.unreadable, 1);
        let acknowledged = ["s#a", "s#b", "s#c"].map(String::from);
        assert_eq!(
            account(&acknowledged, &log),
            Accounting {
                acknowledged: 3,
                dispatched: 2,
                lost: 1,
                doubled: 1
            },
            "s#c's line is not finished yet, so it is not dispatched"
        );
    }

    #[test]
    fn the_log_follows_appends_across_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"dedupe_key\":\"old\"}\n").expect("write");
        let mut log = DispatchLog::at_end(&path).expect("open");
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("append");
        f.write_all(b"{\"dedupe_key\":\"ne").expect("write");
        log.read_new().expect("read");
        f.write_all(b"w\"}\n").expect("write");
        log.read_new().expect("read");
        assert_eq!(log.count("old"), 0, "lines before the run are not counted");
        assert_eq!(log.count("new"), 1);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&ms, 50.0), 50.0);
        assert_eq!(percentile_ms(&ms, 99.0), 99.0);
        assert_eq!(percentile_ms(&ms, 100.0), 100.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }

    #[test]
    fn an_accepted_batch_names_all_its_keys() {
        assert_eq!(accepted_keys(br#"{"dedupe_key":"s#1"}"#), vec!["s#1"]);
        assert_eq!(
            accepted_keys(br#"{"events":2,"dedupe_keys":["s#1","s#2"]}"#),
            vec!["s#1", "s#2"]
        );
        assert!(accepted_keys(b"[accepted]").is_empty());
    }
}
