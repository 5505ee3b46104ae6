//! `inlet dev`'s HTTP server, with the ingest Lambda's routes and status codes, and the
//! worker loop the Lambda event source mapping would run.
//!
//! On AWS the HTTP API (or Function URL) in front of ingest holds the client connections; here
//! this server does, so it bounds what one client can hold: connections in total and per
//! address, and how long a request head, a body or an idle keep-alive connection may take.

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
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    let headers = out.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("connection", HeaderValue::from_static("close"));
    out
}

/// Serve until `shutdown` turns true, then let open connections finish their request.
pub async fn serve(
    stack: Arc<LocalStack>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let limits = stack.config.server;
    let open = Arc::new(Mutex::new(Open::default()));
    let mut refused = Refused::default();
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopping(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // The client gave up before we got to it.
                Err(e) if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionRefused
                ) => continue,
                Err(e) => {
                    // Out of descriptors, most likely: retrying at once would spin.
                    error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let Some(slot) = Slot::take(&open, client_of(peer.ip()), &limits) else {
            // Closed before a byte is read: a refused client costs no more than the accept.
            drop(stream);
            refused.note(peer.ip());
            continue;
        };
        connections.spawn(connection(
            stack.clone(),
            stream,
            peer,
            slot,
            shutdown.clone(),
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One connection, closed when the deadline of its current phase passes.
async fn connection(
    stack: Arc<LocalStack>,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: Slot,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = stack.config.server;
    let clock = Arc::new(ConnClock::new(limits));
    let io = TokioIo::new(Watched {
        stream,
        clock: clock.clone(),
    });
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |req| {
            clock.set(Phase::Busy);
            let (stack, clock) = (stack.clone(), clock.clone());
            async move {
                let resp = handle(stack, peer, req).await;
                clock.set(Phase::Idle(Instant::now() + limits.idle_timeout));
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
}

struct ConnClock {
    phase: Mutex<Phase>,
    changed: Notify,
    header_timeout: Duration,
}

impl ConnClock {
    /// A new connection owes its first request head at once: it has no idle allowance.
    fn new(limits: ServerLimits) -> Self {
        Self {
            phase: Mutex::new(Phase::Head(Instant::now() + limits.header_timeout)),
            changed: Notify::new(),
            header_timeout: limits.header_timeout,
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        *self.phase() = phase;
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts its next request head.
    fn received(&self) {
        let mut phase = self.phase();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now() + self.header_timeout);
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match *self.phase() {
            Phase::Head(d) | Phase::Idle(d) => Some(d),
            Phase::Busy => None,
        }
    }

    fn expired(&self, now: Instant) -> Option<Phase> {
        let phase = *self.phase();
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

/// Open connections, in total and per client.
#[derive(Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// One open connection's place under the caps, given back when it is dropped.
struct Slot {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
}

impl Slot {
    fn take(open: &Arc<Mutex<Open>>, client: IpAddr, limits: &ServerLimits) -> Option<Self> {
        let mut o = open.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = o.per_client.get(&client).copied().unwrap_or(0);
        if o.total >= limits.max_connections || mine >= limits.max_connections_per_ip {
            return None;
        }
        o.total += 1;
        o.per_client.insert(client, mine + 1);
        Some(Self {
            open: open.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        o.total = o.total.saturating_sub(1);
        if let Some(n) = o.per_client.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                o.per_client.remove(&self.client);
            }
        }
    }
}

/// Refused connections, logged at most every 10 s: a flood must not flood the log too.
#[derive(Default)]
struct Refused {
    count: u64,
    logged: Option<Instant>,
}

impl Refused {
    fn note(&mut self, client: IpAddr) {
        self.count += 1;
        let now = Instant::now();
        if self
            .logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            warn!(
                client = %client,
                refused = self.count,
                "connections refused: over settings.max_connections or max_connections_per_ip"
            );
            self.count = 0;
            self.logged = Some(now);
        }
    }
}

/// Process batches until `shutdown` turns true, finishing the batch in hand first. A batch
/// in flight when the process dies is redelivered after the visibility timeout and
/// finished exactly once by dedupe.
pub async fn worker_loop(stack: Arc<LocalStack>, shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        match stack.work_once(Duration::from_secs(1)).await {
            Ok(result) => {
                for (id, outcome) in &result.outcomes {
                    info!(message_id = %id, outcome = ?outcome, "processed");
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

    #[test]
    fn slots_are_capped_in_total_and_per_client_and_given_back() {
        let limits = ServerLimits {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_connections: 3,
            max_connections_per_ip: 2,
        };
        let open = Arc::new(Mutex::new(Open::default()));
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let a1 = Slot::take(&open, a, &limits).expect("first of a");
        let _a2 = Slot::take(&open, a, &limits).expect("second of a");
        assert!(Slot::take(&open, a, &limits).is_none(), "a is at its cap");
        let _b1 = Slot::take(&open, b, &limits).expect("b has room");
        assert!(Slot::take(&open, b, &limits).is_none(), "the total is full");
        drop(a1);
        assert!(Slot::take(&open, b, &limits).is_some(), "a slot came back");
    }
}
