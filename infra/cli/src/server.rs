//! `inlet dev`'s HTTP server, with the ingest Lambda's routes and status codes, and the
//! worker loop the Lambda event source mapping would run.
//!
//! On AWS the HTTP API (or Function URL) in front of ingest holds the client connections; here
//! this server does, so it bounds what one client can hold: connections in total and per
//! address (at a cap, the connection waiting longest without a request gives way to the new
//! one), and how long a request head, a body or an idle keep-alive connection may take.

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error as _;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::LengthLimitError;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use inlet::config::ServerLimits;
use inlet::ingest::WebhookRequest;
use inlet::local::LocalStack;
use inlet::request::Headers;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

async fn handle(
    stack: Arc<LocalStack>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let limit = stack.config.settings.max_body_bytes;
    let body_timeout = stack.config.server.body_timeout;
    // Read at most one byte past the limit: enough to know the body is too large without
    // buffering whatever an abusive client sends.
    let (body, over) =
        match tokio::time::timeout(body_timeout, to_bytes(Body::new(body), limit + 1)).await {
            Ok(Ok(b)) => (b.to_vec(), false),
            Ok(Err(e)) if over_limit(&e) => (Vec::new(), true),
            Ok(Err(e)) => {
                // Broken chunked framing, or the client hung up mid-body: nothing to verify.
                info!(client = %peer.ip(), error = %e, "unreadable request body");
                return refusal(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    "the request body is not valid HTTP/1.1 framing (chunk sizes or length)".into(),
                );
            }
            Err(_) => {
                info!(client = %peer.ip(), timeout = ?body_timeout, "request body stalled");
                return refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "the request body did not arrive within {}",
                        humantime::format_duration(body_timeout)
                    ),
                );
            }
        };
    if !stack.room_for_webhook(stack.config.ingest_deadline).await {
        warn!(client = %peer.ip(), backlog = stack.backlog(), max_backlog = stack.config.settings.max_backlog, "the worker is behind: webhook answered 503");
        // The body has been read: the connection can carry the provider's retry.
        let mut out = error_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "backlog",
            "the worker is behind; retry shortly".into(),
        );
        out.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        return out;
    }
    let mut headers = Headers::new();
    for (k, v) in &parts.headers {
        headers.insert(
            k.as_str(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        );
    }
    let query = WebhookRequest::parse_query(parts.uri.query());
    let resp = stack
        .ingest
        .handle(WebhookRequest {
            method: parts.method.as_str().to_string(),
            path: parts.uri.path().to_string(),
            query,
            headers,
            body,
            body_over_limit: over,
            source_ip: Some(peer.ip()),
            request_id: Some(uuid::Uuid::new_v4().to_string()),
        })
        .await;
    let mut out = Response::new(Body::from(resp.body));
    *out.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut()
        .insert("content-type", HeaderValue::from_static(resp.content_type));
    for (k, v) in resp.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            out.headers_mut().insert(k, v);
        }
    }
    out
}

/// The body passed `max_body_bytes` (http-body-util's `Limited`, wrapped by axum), as
/// opposed to a body that could not be read at all.
fn over_limit(e: &axum::Error) -> bool {
    let mut cause = e.source();
    while let Some(e) = cause {
        if e.is::<LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A refusal made before ingest sees the request. The connection is closed after it: the
/// rest of the body is unread or unreadable.
fn refusal(status: StatusCode, code: &str, message: String) -> Response<Body> {
    let mut out = error_answer(status, code, message);
    out.headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    out
}

/// `{"error": code, "message": message}` with `status`.
fn error_answer(status: StatusCode, code: &str, message: String) -> Response<Body> {
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    out.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    out
}

/// Serve until `shutdown` turns true, then let open connections finish their request.
pub async fn serve(
    stack: Arc<LocalStack>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let limits = within_descriptors(stack.config.server, soft_descriptor_limit());
    if limits.max_connections < stack.config.server.max_connections {
        warn!(
            configured = stack.config.server.max_connections,
            effective = limits.max_connections,
            max_connections_per_ip = limits.max_connections_per_ip,
            reserved = RESERVED_DESCRIPTORS,
            "settings.max_connections lowered to what the open-file limit (ulimit -n) leaves for clients"
        );
    }
    tokio::spawn(stack.clone().watch_backlog(shutdown.clone()));
    let mut admissions = Admissions::new(limits);
    let mut failed = Throttled::default();
    let mut connections = JoinSet::new();
    while let Some((stream, peer)) =
        next_client(&listener, &mut shutdown, &mut connections, &mut failed).await
    {
        let client = client_of(peer.ip());
        let clock = Arc::new(ConnClock::new(limits));
        let Some((slot, evicted_clock)) = admissions.admit(client, clock.clone()) else {
            // Closed before a byte is read: a refused client costs no more than the accept.
            drop(stream);
            admissions.note_refused(client);
            continue;
        };
        connections.spawn(connection(
            stack.clone(),
            stream,
            peer,
            slot,
            clock,
            shutdown.clone(),
        ));
        if let Some(victim) = evicted_clock {
            // Accept no more until the evicted socket is closed: under a flood, evicted
            // connections whose tasks have not run yet would otherwise pile up and take the
            // descriptors kept for the store and outbound calls (1,500 connections under
            // ulimit -n 256: 256 open at the peak, accept failing; with this wait, 210).
            // Bounded, in case its task is slow to run.
            let _ = tokio::time::timeout(EVICTION_WAIT, victim.closed.notified()).await;
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// The next client connection, or `None` once `shutdown` turns true. Finished connection
/// tasks are reaped while it waits.
async fn next_client(
    listener: &tokio::net::TcpListener,
    shutdown: &mut watch::Receiver<bool>,
    connections: &mut JoinSet<()>,
    failed: &mut Throttled,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = stopping(shutdown) => return None,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                // The client gave up before we got to it.
                Err(e) if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionRefused
                ) => continue,
                Err(e) => {
                    // Out of descriptors, most likely (the caps keep the server's own use
                    // below the limit, but the rest of the process shares it): retrying at
                    // once would spin, and a closing connection soon frees one.
                    if let Some(n) = failed.note() {
                        error!(error = %e, failures = n, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// The accept loop's view of the open connections under the caps, with its throttled
/// warnings about the connections it evicts or refuses.
struct Admissions {
    open: Arc<Mutex<Open>>,
    limits: ServerLimits,
    refused: Throttled,
    evicted: Throttled,
}

impl Admissions {
    fn new(limits: ServerLimits) -> Self {
        Self {
            open: Arc::new(Mutex::new(Open::default())),
            limits,
            refused: Throttled::default(),
            evicted: Throttled::default(),
        }
    }

    /// A place for a connection from `client`, with the clock of the connection evicted to
    /// make room, if one was; `None` when it is refused.
    fn admit(
        &mut self,
        client: IpAddr,
        clock: Arc<ConnClock>,
    ) -> Option<(Slot, Option<Arc<ConnClock>>)> {
        match Slot::take(&self.open, client, clock, &self.limits) {
            Admission::Free(slot) => Some((slot, None)),
            Admission::Evicted { slot, victim } => {
                if let Some(n) = self.evicted.note() {
                    warn!(
                        client = %client,
                        closed_client = %victim.client,
                        evicted = n,
                        "waiting connections closed to admit new ones: at settings.max_connections or max_connections_per_ip"
                    );
                }
                Some((slot, Some(victim.clock)))
            }
            Admission::Refused => None,
        }
    }

    fn note_refused(&mut self, client: IpAddr) {
        if let Some(n) = self.refused.note() {
            warn!(
                client = %client,
                refused = n,
                "connections refused: over settings.max_connections or max_connections_per_ip, and every connection has a request in progress"
            );
        }
    }
}

/// The longest the accept loop waits for an evicted connection to close.
const EVICTION_WAIT: Duration = Duration::from_millis(100);

/// Descriptors kept out of `max_connections`: the process also holds the SQLite store (a
/// writer and a reader, each with its database, WAL and shared-memory files), the JSONL sink,
/// the listener, the runtime's epoll and wake-up descriptors, and outbound connections to
/// targets, poll sources and PayPal's certificate host. 64 covers those with room to spare.
const RESERVED_DESCRIPTORS: usize = 64;

/// The caps lowered to what the open-file limit leaves for client connections. Above it,
/// `accept` fails for want of a descriptor, no connection is admitted (so none can be
/// evicted for a new one) and a legitimate sender waits in the backlog until a timeout frees
/// one.
fn within_descriptors(mut limits: ServerLimits, soft_limit: Option<u64>) -> ServerLimits {
    if let Some(soft) = soft_limit {
        let room = usize::try_from(soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(RESERVED_DESCRIPTORS)
            .max(1);
        limits.max_connections = limits.max_connections.min(room);
        limits.max_connections_per_ip = limits.max_connections_per_ip.min(limits.max_connections);
    }
    limits
}

/// The soft open-file limit (`ulimit -n`), if the platform tells it (Linux: `/proc`).
fn soft_descriptor_limit() -> Option<u64> {
    parse_soft_open_files(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The soft value of the "Max open files" row of `/proc/self/limits`; `None` when unlimited.
fn parse_soft_open_files(limits: &str) -> Option<u64> {
    let row = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    row.split_whitespace().next()?.parse().ok()
}

/// One connection, closed when the deadline of its current phase passes, or when a new
/// connection needs its place while it waits.
async fn connection(
    stack: Arc<LocalStack>,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: Slot,
    clock: Arc<ConnClock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = stack.config.server;
    let io = TokioIo::new(Watched {
        stream,
        clock: clock.clone(),
    });
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |req| {
            // Evicted between its head arriving and this call: the task is closing the
            // connection, so the request is not started (the sender retries it elsewhere).
            let started = clock.start_request();
            let (stack, clock) = (stack.clone(), clock.clone());
            async move {
                if !started {
                    return Ok(refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "too many open connections; retry".into(),
                    ));
                }
                let resp = handle(stack, peer, req).await;
                clock.finish_request(limits.idle_timeout);
                Ok::<_, Infallible>(resp)
            }
        })
    };
    // hyper's own header timer would start when a keep-alive connection goes idle, so an
    // idle connection could never outlive the header timeout: the clock above keeps both.
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        if clock.evicted() {
            debug!(client = %peer.ip(), "waiting connection closed to admit a new one");
            return;
        }
        let deadline = clock.deadline();
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    debug!(client = %peer.ip(), error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopping(&mut shutdown), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = sleep_until(deadline) => {
                match clock.expired(Instant::now()) {
                    Some(Phase::Head(_)) => {
                        info!(client = %peer.ip(), timeout = ?limits.header_timeout, "request head not received in time; closing");
                        return;
                    }
                    Some(_) => {
                        debug!(client = %peer.ip(), "idle keep-alive connection closed");
                        return;
                    }
                    None => {}
                }
            }
            _ = clock.changed.notified() => {}
        }
    }
}

/// `shutdown` turned true, or its sender is gone.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Where a connection is between requests, and until when it may stay there.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Receiving a request head, which must be complete by then.
    Head(Instant),
    /// After a response, nothing received yet.
    Idle(Instant),
    /// The handler has the request; its body read has `body_timeout`.
    Busy,
    /// Closed to admit a new connection; its task ends at its next wake-up.
    Evicted,
}

struct ConnState {
    phase: Phase,
    /// When the phase began: among waiting connections, the earliest has waited longest.
    since: Instant,
}

struct ConnClock {
    state: Mutex<ConnState>,
    changed: Notify,
    /// The connection's socket is closed (its slot is dropped after it).
    closed: Notify,
    header_timeout: Duration,
}

impl ConnClock {
    /// A new connection owes its first request head at once: it has no idle allowance.
    fn new(limits: ServerLimits) -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(ConnState {
                phase: Phase::Head(now + limits.header_timeout),
                since: now,
            }),
            changed: Notify::new(),
            closed: Notify::new(),
            header_timeout: limits.header_timeout,
        }
    }

    fn state(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves to `phase` unless the connection was evicted, which is final.
    fn enter(&self, phase: Phase) -> bool {
        let mut state = self.state();
        if let Phase::Evicted = state.phase {
            return false;
        }
        *state = ConnState {
            phase,
            since: Instant::now(),
        };
        drop(state);
        self.changed.notify_one();
        true
    }

    /// The handler takes a request: from here until its response the connection cannot be
    /// evicted. False if it already was.
    fn start_request(&self) -> bool {
        self.enter(Phase::Busy)
    }

    fn finish_request(&self, idle_timeout: Duration) {
        self.enter(Phase::Idle(Instant::now() + idle_timeout));
    }

    /// Bytes arrived: an idle connection starts its next request head.
    fn received(&self) {
        let mut state = self.state();
        if let Phase::Idle(_) = state.phase {
            let now = Instant::now();
            *state = ConnState {
                phase: Phase::Head(now + self.header_timeout),
                since: now,
            };
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Since when the connection has waited without a request in progress; `None` if the
    /// handler has one (or it is already evicted).
    fn waiting_since(&self) -> Option<Instant> {
        let state = self.state();
        match state.phase {
            Phase::Head(_) | Phase::Idle(_) => Some(state.since),
            Phase::Busy | Phase::Evicted => None,
        }
    }

    /// Marks a waiting connection evicted and wakes its task; false (and no change) if a
    /// request is in progress. Checked and set under one lock, so a request cannot start in
    /// between and be cut off.
    fn evict(&self) -> bool {
        let mut state = self.state();
        if !matches!(state.phase, Phase::Head(_) | Phase::Idle(_)) {
            return false;
        }
        state.phase = Phase::Evicted;
        drop(state);
        self.changed.notify_one();
        true
    }

    fn evicted(&self) -> bool {
        matches!(self.state().phase, Phase::Evicted)
    }

    fn deadline(&self) -> Option<Instant> {
        match self.state().phase {
            Phase::Head(d) | Phase::Idle(d) => Some(d),
            Phase::Busy | Phase::Evicted => None,
        }
    }

    fn expired(&self, now: Instant) -> Option<Phase> {
        let phase = self.state().phase;
        match phase {
            Phase::Head(d) | Phase::Idle(d) if d <= now => Some(phase),
            _ => None,
        }
    }
}

/// The socket, telling the connection's clock when bytes arrive.
struct Watched {
    stream: TcpStream,
    clock: Arc<ConnClock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.received();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The address a connection counts against: IPv4 (also when it arrives IPv4-mapped on a
/// dual-stack socket), or an IPv6 /64, the smallest block a subscriber is usually given, so
/// one client cannot take a fresh address per connection.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
        },
    }
}

/// Open connections, in total and per client, each with its clock so a waiting one can be
/// closed to make room.
#[derive(Default)]
struct Open {
    next_id: u64,
    conns: HashMap<u64, Registered>,
    per_client: HashMap<IpAddr, usize>,
}

struct Registered {
    client: IpAddr,
    clock: Arc<ConnClock>,
}

impl Open {
    /// Evicts the connection that has waited longest without a request in progress, from
    /// `client` only or from anyone, and gives its place back; the evicted one if there was one.
    fn evict_longest_waiting(&mut self, client: Option<IpAddr>) -> Option<Registered> {
        // A candidate can start a request between the scan and `evict`; then look again
        // (it is no longer a candidate). The bound only guards against a pathological race.
        for _ in 0..4 {
            let (_, id) = self
                .conns
                .iter()
                .filter(|(_, c)| client.is_none_or(|ip| c.client == ip))
                .filter_map(|(id, c)| Some((c.clock.waiting_since()?, *id)))
                .min()?;
            let evicted = self.conns.get(&id).is_some_and(|c| c.clock.evict());
            if evicted {
                let victim = self.conns.remove(&id)?;
                self.release(victim.client);
                return Some(victim);
            }
        }
        None
    }

    fn release(&mut self, client: IpAddr) {
        if let Some(n) = self.per_client.get_mut(&client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }
}

/// How a new connection got its place.
enum Admission {
    Free(Slot),
    /// By closing `victim`, the longest-waiting connection of the client or of all.
    Evicted {
        slot: Slot,
        victim: Registered,
    },
    /// Over a cap, and every connection that counts against it has a request in progress.
    Refused,
}

/// One open connection's place under the caps, given back when it is dropped (unless it was
/// evicted, which gave it back already). The connection task drops it last, after the socket.
struct Slot {
    open: Arc<Mutex<Open>>,
    id: u64,
    clock: Arc<ConnClock>,
}

impl Slot {
    /// A place for a new connection from `client`. At a cap, the connection that has waited
    /// longest without a request in progress makes room: the client's own when its cap is
    /// the one reached, anyone's at the total. So neither idle nor slow-head connections can
    /// keep a sender out, whatever address they come from.
    fn take(
        open: &Arc<Mutex<Open>>,
        client: IpAddr,
        clock: Arc<ConnClock>,
        limits: &ServerLimits,
    ) -> Admission {
        let mut o = open.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = o.per_client.get(&client).copied().unwrap_or(0);
        let victim = if mine >= limits.max_connections_per_ip {
            o.evict_longest_waiting(Some(client))
        } else if o.conns.len() >= limits.max_connections {
            o.evict_longest_waiting(None)
        } else {
            None
        };
        let mine = o.per_client.get(&client).copied().unwrap_or(0);
        if o.conns.len() >= limits.max_connections || mine >= limits.max_connections_per_ip {
            return Admission::Refused;
        }
        let id = o.next_id;
        o.next_id += 1;
        o.conns.insert(
            id,
            Registered {
                client,
                clock: clock.clone(),
            },
        );
        o.per_client.insert(client, mine + 1);
        let slot = Self {
            open: open.clone(),
            id,
            clock,
        };
        match victim {
            Some(victim) => Admission::Evicted { slot, victim },
            None => Admission::Free(slot),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = o.conns.remove(&self.id) {
            o.release(c.client);
        }
        drop(o);
        self.clock.closed.notify_one();
    }
}

/// Counts an event that a flood can repeat, saying when to log it: at most every 10 s, so a
/// flood does not flood the log too.
#[derive(Default)]
struct Throttled {
    count: u64,
    logged: Option<Instant>,
}

impl Throttled {
    /// Counts one; the number to log (those since the last log line), or `None` for now.
    fn note(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self
            .logged
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// The worker thread's CPU priority below the threads that answer webhooks: its nice value
/// above theirs. At 5 it gets about a third of their share of a busy core.
const WORKER_NICE: i32 = 5;

/// Start [`worker_loops`] on a thread of their own, with a single-threaded runtime and a
/// lower CPU priority, and [`overflow_loop`] beside the webhooks; the handle resolves when
/// both have finished after `shutdown`.
///
/// On AWS the worker runs in invocations of its own, apart from ingest's. Here, sharing the
/// runtime threads that answer webhooks, its batches came in one or two events at a time
/// under light load, each batch's receive, takes, completions and deletes a commit of their
/// own, and their bursts of work queued in front of requests. At a lower priority the worker
/// takes the CPU the webhooks leave: its batches fill while a request runs, so an event costs
/// fewer commits, and a request waits less (one connection: +12–23 % webhooks/s, ≈ 60 µs
/// less CPU per event; docs/performance.md, "The worker yields to the webhooks"). When that
/// is not enough to keep pace, the overflow loop takes the rest at full priority.
///
/// `cpus`: the CPUs the worker thread (and so its blocking threads) may run on, when
/// `inlet dev` places its threads (see [`crate::placement`]).
pub fn spawn_worker_thread(
    stack: Arc<LocalStack>,
    shutdown: watch::Receiver<bool>,
    cpus: Option<Vec<usize>>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    // Its blocking threads (the JSONL target's writes) are created by the worker thread and
    // take its priority with them; named apart from the webhooks' runtime's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("inlet-worker-io")
        .enable_all()
        .build()?;
    let overflow = tokio::spawn(overflow_loop(stack.clone(), shutdown.clone()));
    let thread = std::thread::Builder::new()
        .name("inlet-worker".into())
        .spawn(move || {
            if let Some(cpus) = cpus {
                if let Err(e) = crate::placement::pin_current_thread(&cpus) {
                    warn!(error = %e, ?cpus, "the worker thread runs on every CPU");
                }
            }
            if let Err(e) = lower_own_priority(WORKER_NICE) {
                warn!(error = %e, "the worker thread keeps the webhooks' CPU priority");
            }
            runtime.block_on(worker_loops(stack, shutdown));
        })?;
    Ok(tokio::spawn(async move {
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            error!("the worker thread panicked; no more batches are processed");
        }
        let _ = overflow.await;
    }))
}

/// Raise the calling thread's nice value by `by` (Linux sets it per thread).
#[cfg(target_os = "linux")]
fn lower_own_priority(by: i32) -> io::Result<()> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    let now = own_nice(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no nice value in /proc/thread-self/stat",
        )
    })?;
    // SAFETY: setpriority takes plain integers and touches no memory; `who` 0 is the calling
    // thread on Linux.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, now.saturating_add(by).min(19)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_own_priority(_by: i32) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "a thread's own priority is set on Linux only",
    ))
}

/// The nice value in a `/proc/<pid>/task/<tid>/stat` line: the 19th field, the 17th after
/// the command name (which may hold spaces and parentheses, hence from the last `)`).
pub fn own_nice(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(16)?.parse().ok()
}

/// While the backlog is past [`LocalStack::overflow_backlog`], one more worker loop, on the
/// webhooks' runtime and at their priority: the lower-priority loops are falling behind.
pub async fn overflow_loop(stack: Arc<LocalStack>, mut shutdown: watch::Receiver<bool>) {
    let over = stack.overflow_backlog();
    let mut backlog = stack.backlog_changes();
    while !*shutdown.borrow() {
        if *backlog.borrow_and_update() > over {
            if let Err(e) = stack.work_once(Duration::from_millis(100)).await {
                error!(error = %e, "worker batch failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            continue;
        }
        tokio::select! {
            changed = backlog.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => {}
        }
    }
}

/// `settings.worker_concurrency` worker loops, each a task of its own, as Lambda runs several
/// worker invocations at once; returns when every loop has finished its batch in hand after
/// `shutdown`.
pub async fn worker_loops(stack: Arc<LocalStack>, shutdown: watch::Receiver<bool>) {
    let loops: Vec<_> = (0..stack.config.settings.worker_concurrency.max(1))
        .map(|_| tokio::spawn(worker_loop(stack.clone(), shutdown.clone())))
        .collect();
    for l in loops {
        let _ = l.await;
    }
}

/// Process batches until `shutdown` turns true, finishing the batch in hand first. A batch
/// in flight when the process dies is redelivered after the visibility timeout and
/// finished exactly once by dedupe.
async fn worker_loop(stack: Arc<LocalStack>, shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        match stack.work_once(Duration::from_secs(1)).await {
            Ok(result) => {
                for (id, outcome) in &result.outcomes {
                    // The worker has logged what matters of each at info ("dispatched",
                    // "duplicate acknowledged", failures): this is the same again, per message.
                    debug!(message_id = %id, outcome = ?outcome, "processed");
                }
            }
            Err(e) => {
                error!(error = %e, "worker batch failed");
                // Back off a little so a broken store does not spin the CPU.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nice_value_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (inlet (dev) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 5 3 0 77";
        assert_eq!(own_nice(stat), Some(5));
        assert_eq!(
            own_nice("4242 (inlet) S 1 2 3 0 -1 0 0 0 0 0 0 0 0 0 20 -3 1"),
            Some(-3)
        );
        assert_eq!(own_nice("4242 (inlet) S 1 2"), None);
        assert_eq!(own_nice("no parenthesis at all"), None);
    }

    #[test]
    fn clients_are_counted_by_ipv4_address_or_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        assert_eq!(client_of(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(client_of(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            client_of(ip("2001:db8:1:2::9"))
        );
        assert_ne!(client_of(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
    }

    fn limits(total: usize, per_client: usize) -> ServerLimits {
        ServerLimits {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_connections: total,
            max_connections_per_ip: per_client,
        }
    }

    /// A connection from `client` as the accept loop admits it: its slot and its clock.
    fn admit(
        open: &Arc<Mutex<Open>>,
        client: IpAddr,
        limits: &ServerLimits,
    ) -> (Admission, Arc<ConnClock>) {
        let clock = Arc::new(ConnClock::new(*limits));
        (Slot::take(open, client, clock.clone(), limits), clock)
    }

    fn free(a: (Admission, Arc<ConnClock>)) -> (Slot, Arc<ConnClock>) {
        match a {
            (Admission::Free(slot), clock) => (slot, clock),
            (Admission::Evicted { victim, .. }, _) => {
                panic!("evicted a connection of {}", victim.client)
            }
            (Admission::Refused, _) => panic!("refused"),
        }
    }

    fn evicting(a: (Admission, Arc<ConnClock>)) -> (Slot, Arc<ConnClock>, IpAddr) {
        match a {
            (Admission::Evicted { slot, victim }, clock) => (slot, clock, victim.client),
            (Admission::Free(_), _) => panic!("admitted without evicting"),
            (Admission::Refused, _) => panic!("refused"),
        }
    }

    fn counts(open: &Arc<Mutex<Open>>, client: IpAddr) -> (usize, usize) {
        let o = open.lock().expect("lock");
        (
            o.conns.len(),
            o.per_client.get(&client).copied().unwrap_or(0),
        )
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const C: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));

    #[test]
    fn at_a_clients_cap_its_longest_waiting_connection_makes_room() {
        let limits = limits(8, 2);
        let open = Arc::new(Mutex::new(Open::default()));
        // B's connection has waited longest of all, but it is A that is over its cap.
        let (_b1, b1) = free(admit(&open, B, &limits));
        let (_a1, a1) = free(admit(&open, A, &limits));
        let (_a2, a2) = free(admit(&open, A, &limits));
        let (_a3, a3, victim) = evicting(admit(&open, A, &limits));
        assert_eq!(victim, A);
        assert!(a1.evicted(), "the oldest of A's goes");
        assert!(!a2.evicted() && !a3.evicted() && !b1.evicted());
        assert_eq!(counts(&open, A), (3, 2), "A still holds its cap, no more");
        // A finished request makes a connection the newest waiter again.
        assert!(a2.start_request());
        a2.finish_request(Duration::from_secs(1));
        let (_a4, _, _) = evicting(admit(&open, A, &limits));
        assert!(a3.evicted() && !a2.evicted());
    }

    #[test]
    fn a_connection_with_a_request_in_progress_is_never_evicted() {
        let limits = limits(3, 2);
        let open = Arc::new(Mutex::new(Open::default()));
        let (_a1, a1) = free(admit(&open, A, &limits));
        let (_a2, a2) = free(admit(&open, A, &limits));
        assert!(a1.start_request());
        let (_a3, a3, _) = evicting(admit(&open, A, &limits));
        assert!(a2.evicted() && !a1.evicted(), "the busy one is skipped");
        assert!(a3.start_request());
        assert!(
            matches!(admit(&open, A, &limits).0, Admission::Refused),
            "all of A's are busy: the newcomer is refused"
        );
        assert!(!a1.evicted() && !a3.evicted());
        // The total: one place left, then only busy connections.
        let (_b1, b1) = free(admit(&open, B, &limits));
        assert!(b1.start_request());
        assert!(matches!(admit(&open, C, &limits).0, Admission::Refused));
        assert_eq!(counts(&open, A), (3, 2));
    }

    #[test]
    fn at_the_total_cap_anyones_longest_waiting_connection_makes_room() {
        let limits = limits(3, 2);
        let open = Arc::new(Mutex::new(Open::default()));
        let (_a1, a1) = free(admit(&open, A, &limits));
        let (_b1, b1) = free(admit(&open, B, &limits));
        let (_b2, b2) = free(admit(&open, B, &limits));
        let (_c1, c1, victim) = evicting(admit(&open, C, &limits));
        assert_eq!(victim, A);
        assert!(a1.evicted() && !b1.evicted() && !b2.evicted() && !c1.evicted());
        assert_eq!(counts(&open, A), (3, 0));
    }

    #[test]
    fn an_evicted_connection_starts_no_request_and_its_place_is_not_given_back_twice() {
        let limits = limits(2, 2);
        let open = Arc::new(Mutex::new(Open::default()));
        let (a1_slot, a1) = free(admit(&open, A, &limits));
        let (_a2, _) = free(admit(&open, A, &limits));
        let (_a3, _, _) = evicting(admit(&open, A, &limits));
        assert!(
            !a1.start_request(),
            "evicted first: its request never starts"
        );
        assert!(a1.evicted());
        drop(a1_slot);
        assert_eq!(
            counts(&open, A),
            (2, 2),
            "the evicted slot's drop frees nothing more"
        );
        let (_b, _, _) = evicting(admit(&open, B, &limits));
        assert_eq!(counts(&open, A), (2, 1));
    }

    #[test]
    fn places_come_back_when_connections_end() {
        let limits = limits(3, 2);
        let open = Arc::new(Mutex::new(Open::default()));
        let (a1, _) = free(admit(&open, A, &limits));
        let (a2, _) = free(admit(&open, A, &limits));
        assert_eq!(counts(&open, A), (2, 2));
        drop((a1, a2));
        assert_eq!(counts(&open, A), (0, 0));
        assert!(open.lock().expect("lock").per_client.is_empty());
    }

    #[test]
    fn the_total_cap_is_lowered_to_what_the_open_file_limit_leaves() {
        let limits = limits(512, 128);
        let at = |soft| {
            let l = within_descriptors(limits, soft);
            (l.max_connections, l.max_connections_per_ip)
        };
        assert_eq!(at(None), (512, 128), "unknown limit: no clamp");
        assert_eq!(at(Some(1_048_576)), (512, 128));
        assert_eq!(at(Some(256)), (192, 128));
        assert_eq!(at(Some(128)), (64, 64));
        assert_eq!(at(Some(10)), (1, 1), "never below one connection");
    }

    #[test]
    fn the_soft_open_file_limit_is_read_from_proc_self_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             63432                63432                processes \n\
                    Max open files            256                  524288               files     \n";
        assert_eq!(parse_soft_open_files(text), Some(256));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_soft_open_files(unlimited), None);
        assert_eq!(parse_soft_open_files("garbage"), None);
        assert!(
            soft_descriptor_limit().is_some(),
            "this is Linux: /proc tells it"
        );
    }
}
