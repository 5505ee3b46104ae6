//! A minimal HTTP/1.1 fake provider on loopback, and the kind driven the way the runner
//! drives it; one file per kind of API.

mod after_id;
mod errors;
mod link;
mod options;
mod since;
mod token;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::items::parse_rfc3339_ms;
use super::url::{parse_url, pct, resolve, strip_param};
use super::*;
use crate::adapters::http_client::ReqwestHttp;
use crate::secret::Secret;

/// The query credential of the Link-header API, echoed by the error API: every character that
/// needs encoding in a query.
const QUERY_KEY: &str = "q key+/=&s3cret";

// ---- a minimal HTTP/1.1 fake provider on loopback ----------------------------------------

#[derive(Debug, Clone)]
struct Req {
    target: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl Req {
    fn q(&self, name: &str) -> Option<String> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn h(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }
    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

/// Serves `handler` on a loopback port, one request per connection; returns the base URL.
async fn serve(handler: Handler) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let mut lines = head.split("\r\n");
                let target = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .unwrap_or("/")
                    .to_string();
                let headers = lines
                    .take_while(|l| !l.is_empty())
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect();
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p.to_string(), q.to_string()),
                    None => (target.clone(), String::new()),
                };
                let query = form_urlencoded::parse(query.as_bytes())
                    .into_owned()
                    .collect();
                let resp = handler(&Req {
                    target,
                    path,
                    query,
                    headers,
                });
                let body = if resp.status == 304 {
                    String::new()
                } else {
                    resp.body
                };
                let mut out = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    resp.status,
                    body.len()
                );
                for (k, v) in &resp.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                let _ = sock.write_all(out.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn etag_of(body: &str) -> String {
    let mut h = DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:x}\"", h.finish())
}

// ---- driving the kind the way the runner does ----------------------------------------------

fn http() -> ReqwestHttp {
    ReqwestHttp::new(4 << 20).expect("client")
}

fn secrets(value: &str) -> Vec<Secret> {
    vec![Secret::new("k1", value, None)]
}

fn kind(options: Value) -> HttpJson {
    HttpJson::from_options(&options).expect("valid options")
}

async fn fetch(
    kind: &HttpJson,
    http: &ReqwestHttp,
    creds: &[Secret],
    cursor: Option<&Value>,
) -> Result<Page, FetchError> {
    let ctx = FetchContext {
        http,
        credentials: creds,
        now_ms: 0,
        timeout: Duration::from_secs(10),
    };
    kind.fetch(&ctx, cursor).await
}

#[derive(Debug)]
struct Run {
    items: Vec<Vec<u8>>,
    cursor: Option<Value>,
    pages: usize,
}

/// Fetch → keep the items → next fetch with the returned cursor, until `more == false`;
/// `between(page)` runs between two pages (inserts into the fake).
async fn drain(
    kind: &HttpJson,
    creds: &[Secret],
    cursor: Option<Value>,
    mut between: impl FnMut(usize),
) -> Result<Run, FetchError> {
    let http = http();
    let mut run = Run {
        items: Vec::new(),
        cursor,
        pages: 0,
    };
    loop {
        let page = fetch(kind, &http, creds, run.cursor.as_ref()).await?;
        run.pages += 1;
        run.items.extend(page.items);
        run.cursor = Some(page.cursor);
        if !page.more {
            return Ok(run);
        }
        assert!(run.pages < 5_000, "the poll never reached the end");
        between(run.pages);
    }
}

fn id_of(item: &[u8]) -> String {
    let v: Value = serde_json::from_slice(item).expect("item is JSON");
    match &v["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ids(items: &[Vec<u8>]) -> Vec<String> {
    items.iter().map(|i| id_of(i)).collect()
}

/// What dedupe leaves: the first occurrence of each id, in delivery order.
fn first_occurrences(ids: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|i| seen.insert((*i).clone()))
        .cloned()
        .collect()
}

fn assert_redacted(message: &str, secret: &str) {
    for form in [
        secret.to_string(),
        pct(secret),
        form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
    ] {
        assert!(
            !message.contains(&form),
            "the credential leaked into {message:?}"
        );
    }
}

fn message(e: &FetchError) -> String {
    match e {
        FetchError::Throttled { detail, .. } => detail.clone(),
        FetchError::Transient(m) | FetchError::Fatal(m) => m.clone(),
    }
}
