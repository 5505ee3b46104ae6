//! A local stand-in for the Lambda Runtime API (`AWS_LAMBDA_RUNTIME_API`), enough for a
//! function binary built with `lambda_runtime` to start, take canned events and answer them:
//! `inlet-footprint` measures the functions' init time and memory against it.
//!
//! It records the instant of the first `GET …/invocation/next` (a function asks for its
//! first event only once its init is done), hands out its events in order, each with a
//! request id and an X-Ray trace header of its own ([`RuntimeStub::invocation`]), and then
//! holds further `next` requests open, as the real API does while no event is waiting.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;

const API: &str = "/2018-06-01/runtime";
/// Each event's deadline: far enough that no handler here stops early for it.
const DEADLINE: Duration = Duration::from_secs(300);
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:inlet-footprint";

/// What the function posted back for one event (or for its init).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Response { request_id: String, body: String },
    Error { request_id: String, body: String },
    InitError { body: String },
}

struct Shared {
    /// (request id, trace header, event) in the order they are handed out.
    events: Mutex<VecDeque<(String, String, String)>>,
    first_next: OnceLock<Instant>,
    outcomes: Mutex<Vec<Outcome>>,
    /// Bumped on every `next` and every outcome, so waiters wake without polling.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// A running stub on a loopback port; the server stops when this is dropped.
pub struct RuntimeStub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeStub {
    /// Serve `events` (JSON documents, each handed out once, in order) on 127.0.0.1.
    pub async fn start(events: Vec<String>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            events: Mutex::new(
                events
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let (id, trace) = Self::invocation(i);
                        (id, trace, e)
                    })
                    .collect(),
            ),
            first_next: OnceLock::new(),
            outcomes: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
        });
        let app = Router::new()
            .route(&format!("{API}/invocation/next"), get(next))
            .route(&format!("{API}/invocation/{{id}}/response"), post(response))
            .route(&format!("{API}/invocation/{{id}}/error"), post(error))
            .route(&format!("{API}/init/error"), post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            // Only ends with an accept error; the stub is then unusable and the waits time out.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    /// The request id and X-Ray trace header (`Lambda-Runtime-Trace-Id`) the stub gives its
    /// `index`-th event (from 0).
    pub fn invocation(index: usize) -> (String, String) {
        let n = index + 1;
        (
            format!("inlet-footprint-{index}"),
            format!("Root=1-6a1b2c3d-{n:024x};Parent={n:016x};Sampled=0"),
        )
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API` (host:port, no scheme).
    pub fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    /// When the first `next` arrived, if it has.
    pub fn first_next(&self) -> Option<Instant> {
        self.shared.first_next.get().copied()
    }

    /// Every outcome so far, in arrival order.
    pub fn outcomes(&self) -> Vec<Outcome> {
        lock(&self.shared.outcomes).clone()
    }

    /// Wait until the first `next` arrives (its instant) or `timeout` passes (`None`).
    pub async fn wait_first_next(&self, timeout: Duration) -> Option<Instant> {
        self.wait_until(timeout, |s| s.first_next.get().is_some())
            .await;
        self.first_next()
    }

    /// Wait until `n` outcomes are in, or an init error, or `timeout` passes; the outcomes.
    pub async fn wait_outcomes(&self, n: usize, timeout: Duration) -> Vec<Outcome> {
        self.wait_until(timeout, |s| {
            let outcomes = lock(&s.outcomes);
            outcomes.len() >= n
                || outcomes
                    .iter()
                    .any(|o| matches!(o, Outcome::InitError { .. }))
        })
        .await;
        self.outcomes()
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Shared) -> bool) {
        let mut changed = self.shared.changed.subscribe();
        let _ = tokio::time::timeout(timeout, async {
            while !done(&self.shared) {
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }
}

impl Drop for RuntimeStub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a handler panicked mid-push; the data is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.first_next.get_or_init(Instant::now);
    shared.bump();
    let Some((id, trace, event)) = lock(&shared.events).pop_front() else {
        // No event waiting: the real API holds the request until one comes; here none will.
        return std::future::pending().await;
    };
    let deadline_ms = SystemTime::now()
        .checked_add(DEADLINE)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis());
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("lambda-runtime-aws-request-id", id),
        ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
        ("lambda-runtime-invoked-function-arn", FUNCTION_ARN.into()),
        ("lambda-runtime-trace-id", trace),
        ("content-type", "application/json".into()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    (StatusCode::OK, headers, event).into_response()
}

fn record(shared: &Shared, outcome: Outcome) -> StatusCode {
    lock(&shared.outcomes).push(outcome);
    shared.bump();
    StatusCode::ACCEPTED
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let body = String::from_utf8_lossy(&body).into_owned();
    record(&shared, Outcome::Response { request_id, body })
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(request_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let body = String::from_utf8_lossy(&body).into_owned();
    record(&shared, Outcome::Error { request_id, body })
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    let body = String::from_utf8_lossy(&body).into_owned();
    record(&shared, Outcome::InitError { body })
}
