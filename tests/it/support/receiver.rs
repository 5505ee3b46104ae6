//! A real HTTP target on loopback: an axum server that checks every request's signature with
//! Inlet's own Standard Webhooks verifier, answers from a script (else from a rule, else
//! 200), and records every request it saw — the raw receipts the fault suite counts.
//!
//! For the fault suite it can also read, at each receipt, the dedupe record of the key being
//! delivered (`probe`): while a worker waits for the answer it holds the key, so that record
//! names the holding (when it took the key, until when its lease runs). And a `tripwire`
//! stops the next accepted receipt before it answers, so a test can kill the worker exactly
//! between "the target accepted" and "the ledger completed".

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use inlet::ports::{Clock, DedupeStatus, Ledger, SystemClock};
use inlet::providers::standard_webhooks::StandardWebhooks;
use inlet::providers::Provider;
use inlet::request::{Headers, InboundRequest};
use inlet::secret::Secret;
use tokio::sync::oneshot;

/// The receiver's Standard Webhooks secret: targets pointed at it must sign with it.
pub const SECRET: &str = "whsec_aW5sZXQtdGFyZ2V0LXRlc3Qta2V5LTAxMjM0NTY3";

/// One scripted answer.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
}

pub fn reply(status: u16) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        delay: Duration::ZERO,
    }
}

/// The dedupe record of the delivered key as the receiver read it on receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub status: DedupeStatus,
    /// When the holder took the key (`begin` writes `updated_at_ms = now`).
    pub taken_at_ms: i64,
    pub lease_until_ms: i64,
}

/// What the receiver saw in one request, and what it answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub webhook_id: String,
    pub verified: bool,
    pub team: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub status: u16,
    pub at: Instant,
    /// With a probe: the holder of the key while this request was in flight.
    pub holding: Option<Holding>,
}

impl Seen {
    /// The target took the event (its side effect happened, whatever became of the answer).
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What a tripped tripwire hands over: the receipt's webhook id, and the sender that lets
/// the receiver answer.
pub struct Tripped {
    pub webhook_id: String,
    pub resume: oneshot::Sender<()>,
}

/// The answer to a request without a scripted one: the webhook id, and how many requests for
/// that id came before.
pub type Rule = Box<dyn Fn(&str, usize) -> Reply + Send + Sync>;

#[derive(Default)]
pub struct Receiver {
    script: Mutex<VecDeque<Reply>>,
    rule: Mutex<Option<Rule>>,
    seen: Mutex<Vec<Seen>>,
    probe: Mutex<Option<Arc<dyn Ledger>>>,
    tripwire: Mutex<Option<oneshot::Sender<Tripped>>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

impl Receiver {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().expect("lock").extend(replies);
    }

    pub fn rule(&self, rule: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) {
        *self.rule.lock().expect("lock") = Some(Box::new(rule));
    }

    /// Read the delivered key's dedupe record from `ledger` at every receipt.
    pub fn probe(&self, ledger: Arc<dyn Ledger>) {
        *self.probe.lock().expect("lock") = Some(ledger);
    }

    /// The next accepted receipt is recorded, then waits before answering: it sends its
    /// webhook id and a `resume` sender through the returned channel, and answers once
    /// `resume` is used or dropped.
    pub fn arm(&self) -> oneshot::Receiver<Tripped> {
        let (tx, rx) = oneshot::channel();
        *self.tripwire.lock().expect("lock") = Some(tx);
        rx
    }

    /// `earlier`: the requests for `webhook_id` before this one.
    fn answer(&self, webhook_id: &str, earlier: usize) -> Reply {
        if let Some(r) = self.script.lock().expect("lock").pop_front() {
            return r;
        }
        match &*self.rule.lock().expect("lock") {
            Some(rule) => rule(webhook_id, earlier),
            None => reply(200),
        }
    }
}

async fn receive(
    State(rx): State<Arc<Receiver>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = rx.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    rx.max_in_flight.fetch_max(n, Ordering::SeqCst);
    let mut h = Headers::new();
    for (k, v) in headers.iter() {
        h.insert(k.as_str(), String::from_utf8_lossy(v.as_bytes()));
    }
    let verifier = StandardWebhooks::from_config(
        &serde_json::Value::Null,
        vec![Secret::new("receiver", SECRET, None)],
    )
    .expect("verifier");
    let verified = verifier
        .verify(
            &InboundRequest {
                method: "POST",
                headers: &h,
                query: &[],
                body: &body,
            },
            SystemClock.now_ms(),
        )
        .is_ok();
    let webhook_id = h.get("webhook-id").unwrap_or_default().to_owned();
    let probe = rx.probe.lock().expect("lock").clone();
    let holding = match probe {
        Some(ledger) => ledger
            .get(&webhook_id)
            .await
            .expect("probe the ledger")
            .map(|r| Holding {
                status: r.status,
                taken_at_ms: r.updated_at_ms,
                lease_until_ms: r.lease_until_ms,
            }),
        None => None,
    };
    // Decided and recorded in one step, so receipts are in the order of their answers.
    let r = {
        let mut seen = rx.seen.lock().expect("lock");
        let earlier = seen.iter().filter(|s| s.webhook_id == webhook_id).count();
        let r = rx.answer(&webhook_id, earlier);
        seen.push(Seen {
            path: uri.path().to_owned(),
            webhook_id: webhook_id.clone(),
            verified,
            team: h.get("x-team").map(str::to_owned),
            content_type: h.get("content-type").map(str::to_owned),
            body: body.to_vec(),
            status: r.status,
            at: Instant::now(),
            holding,
        });
        r
    };
    if (200..300).contains(&r.status) {
        let trip = rx.tripwire.lock().expect("lock").take();
        if let Some(trip) = trip {
            let (resume, resumed) = oneshot::channel();
            if trip
                .send(Tripped {
                    webhook_id: webhook_id.clone(),
                    resume,
                })
                .is_ok()
            {
                let _ = resumed.await;
            }
        }
    }
    tokio::time::sleep(r.delay).await;
    rx.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut resp = Response::builder().status(StatusCode::from_u16(r.status).expect("status"));
    for (k, v) in r.headers {
        resp = resp.header(k, v);
    }
    resp.body(axum::body::Body::from("ignored by the target"))
        .expect("response")
}

pub async fn start_receiver() -> (SocketAddr, Arc<Receiver>) {
    let rx = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/hook", post(receive))
        .route("/elsewhere", post(receive))
        // Claim-checked events arrive whole: bodies up to the transport's 6 MB, as JSON.
        .layer(axum::extract::DefaultBodyLimit::max(32 * 1024 * 1024))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, rx)
}
