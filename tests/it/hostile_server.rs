//! The real `inlet dev` against clients that try to hold its connections: a head sent one
//! byte at a time, a body that stops half-way, idle keep-alive connections, more connections
//! than the caps allow (from 127.0.0.2: Linux routes all of 127/8 to loopback), and bodies
//! whose framing is broken. Raw TCP, so the client does exactly what an attacker would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use inlet::ports::{Clock, SystemClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::cli::Dev;
use crate::pipeline::{jsonl_keys, sample_body, signed_headers, DEV_CONFIG};

const INLET: &str = env!("CARGO_BIN_EXE_inlet");

/// Short timeouts so a test takes seconds; the idle timeout differs from the header timeout
/// so a test can tell which one closed a connection.
const FAST: &str = "header_timeout = \"1s\"\nbody_timeout = \"1s\"\nidle_timeout = \"3s\"";

/// The dev config with its files in `dir`, `max_body_bytes` lowered to 1024 and `settings`
/// added to its `[settings]` table.
fn write_config(dir: &Path, settings: &str) -> PathBuf {
    let text = DEV_CONFIG
        .replace(
            "data_dir = \"../../.inlet\"",
            &format!("data_dir = {:?}", dir.join("data")),
        )
        .replace(
            "path = \"../../.inlet/events.jsonl\"",
            &format!("path = {:?}", dir.join("events.jsonl")),
        )
        .replace("max_body_bytes = 262144", "max_body_bytes = 1024")
        .replace(
            "max_receive_count = 5",
            &format!("max_receive_count = 5\n{settings}"),
        );
    let path = dir.join("inlet.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

struct Server {
    dev: Dev,
    addr: SocketAddr,
    cfg: inlet::config::Config,
    jsonl: PathBuf,
    _dir: tempfile::TempDir,
}

/// `inlet dev` with `settings`, under a descriptor limit when one is given (`ulimit -n`).
fn start(settings: &str, fd_limit: Option<u32>) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), settings);
    let cfg = inlet::config::load_file(&config, &|_: &str| None).expect("config");
    let mut cmd = match fd_limit {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(INLET);
            c
        }
        None => Command::new(INLET),
    };
    let mut child = cmd
        .args(["dev", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn inlet dev");
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut banner,
    )
    .expect("read banner");
    let base = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_string();
    let addr = base
        .trim_start_matches("http://")
        .parse()
        .expect("socket address");
    Server {
        dev: Dev { child, base },
        addr,
        cfg,
        jsonl: dir.path().join("events.jsonl"),
        _dir: dir,
    }
}

async fn connect_from(source: [u8; 4], server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind the client address");
    socket.connect(server).await.expect("connect")
}

/// How long until the server closes `stream` (end of file or reset), reading and dropping
/// whatever it sends; `None` if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Open, with nothing sent to it and no end of file: the server still holds it.
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

struct RawResponse {
    status: u16,
    head: String,
    body: String,
}

/// One response read off the wire (hyper always sends a content-length for these).
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]);
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("no status in {head:?}"));
                    return RawResponse {
                        status,
                        body: body.to_string(),
                        head,
                    };
                }
            }
            let n = stream.read(&mut buf).await.expect("read response");
            assert!(n > 0, "closed before a whole response: {data:?}");
            data.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s")
}

/// A signed Stripe webhook's head (without the blank line) and body.
fn signed_request(server: &Server, n: u64) -> (String, Vec<u8>) {
    let body = sample_body("stripe", n);
    let headers = signed_headers(
        &server.cfg,
        "stripe",
        &body,
        SystemClock.now_ms(),
        &uuid::Uuid::new_v4().to_string(),
    );
    let mut head = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers.iter() {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    (head, body)
}

/// A signed webhook over a fresh connection from 127.0.0.1, as a provider would send it.
async fn post_signed(server: &Server, n: u64) -> RawResponse {
    let (head, body) = signed_request(server, n);
    let mut s = connect_from([127, 0, 0, 1], server.addr).await;
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(b"\r\n").await.expect("write head");
    s.write_all(&body).await.expect("write body");
    read_response(&mut s).await
}

/// The slowloris attack on `stream`: one more header byte every 200 ms, for up to 5 s.
/// Returns how long after `start` the server closed the connection, and the bytes sent.
async fn trickle(stream: TcpStream, start: Instant) -> (Duration, usize) {
    let (mut reader, mut writer) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    });
    writer
        .write_all(b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .expect("write");
    let mut sent = 0;
    while !closed.is_finished() && start.elapsed() < Duration::from_secs(5) {
        if writer.write_all(b"a").await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("closed by the server within 10 s")
        .expect("reader task");
    (after, sent)
}

#[tokio::test]
async fn a_head_sent_one_byte_at_a_time_is_cut_off_at_the_header_timeout() {
    let server = start(FAST, None);
    let start = Instant::now();
    let stream = TcpStream::connect(server.addr).await.expect("connect");
    let (after, sent) = trickle(stream, start).await;
    assert!(
        after >= Duration::from_millis(900),
        "still open until the 1 s header timeout (closed after {after:?})"
    );
    assert!(
        after < Duration::from_secs(3),
        "closed after {after:?}: the header timeout is 1 s"
    );
    assert!(sent >= 4, "the client kept trickling ({sent} bytes)");
}

#[tokio::test]
async fn a_keep_alive_connection_trickling_its_next_head_gets_the_header_timeout_not_the_idle_one()
{
    let server = start(FAST, None);
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let (head, body) = signed_request(&server, 7401);
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(b"\r\n").await.expect("head");
    stream.write_all(&body).await.expect("body");
    assert_eq!(read_response(&mut stream).await.status, 200);
    // The next head starts at once, so its clock is the 1 s header timeout, not the 3 s
    // an idle connection would get.
    let (after, sent) = trickle(stream, Instant::now()).await;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(2500),
        "closed {after:?} after the next head began: the header timeout is 1 s"
    );
    assert!(sent >= 4, "the client kept trickling ({sent} bytes)");
}

#[tokio::test]
async fn a_body_that_stops_half_way_is_answered_408_and_nothing_is_enqueued() {
    let server = start(FAST, None);
    let (head, body) = signed_request(&server, 7001);
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(b"\r\n").await.expect("head");
    s.write_all(&body[..body.len() / 2]).await.expect("half");
    let start = Instant::now();
    let resp = read_response(&mut s).await;
    let after = start.elapsed();
    assert_eq!(resp.status, 408, "{}", resp.body);
    assert!(resp.body.contains("body_timeout"), "{}", resp.body);
    assert!(
        after >= Duration::from_millis(500) && after < Duration::from_secs(3),
        "answered after {after:?}: the body timeout is 1 s"
    );
    assert!(
        closed_within(&mut s, Duration::from_secs(2))
            .await
            .is_some(),
        "the connection is closed after the 408"
    );

    // A complete webhook after it is dispatched; the stalled one never was.
    let marker = post_signed(&server, 7002).await;
    assert_eq!(marker.status, 200, "{}", marker.body);
    let v: serde_json::Value = serde_json::from_str(&marker.body).expect("json");
    let key = v["dedupe_key"].as_str().expect("dedupe_key").to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while jsonl_keys(&server.jsonl).is_empty() {
        assert!(Instant::now() < deadline, "the marker was not dispatched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(jsonl_keys(&server.jsonl), vec![key]);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let server = start(FAST, None);
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let (head, body) = signed_request(&server, 7101);
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(b"\r\n").await.expect("head");
    s.write_all(&body).await.expect("body");
    let resp = read_response(&mut s).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        !resp.head.to_ascii_lowercase().contains("connection: close"),
        "kept alive: {}",
        resp.head
    );
    let after = closed_within(&mut s, Duration::from_secs(10))
        .await
        .expect("closed within 10 s");
    // 3 s idle (its clock started as the response left), not the 1 s header timeout, and not
    // much later.
    assert!(
        after >= Duration::from_millis(2500) && after < Duration::from_secs(9),
        "closed {after:?} after the response: the idle timeout is 3 s"
    );
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_connections_and_a_webhook_still_gets_through() {
    // Attackers' connections stay open as long as they like (60 s), so only the caps bound
    // them; the process has 128 descriptors, fewer than the attacker opens.
    let server = start(
        "header_timeout = \"60s\"\nidle_timeout = \"60s\"\nmax_connections = 64\nmax_connections_per_ip = 8",
        Some(128),
    );
    let mut attack = Vec::new();
    for _ in 0..200 {
        attack.push(connect_from([127, 0, 0, 2], server.addr).await);
    }
    let started = Instant::now();
    let resp = post_signed(&server, 7201).await;
    let took = started.elapsed();
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(took < Duration::from_secs(2), "answered after {took:?}");

    let (kept, over) = attack.split_at_mut(8);
    for (i, s) in over.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(5)).await.is_some(),
            "connection {} over the per-address cap is closed at once",
            i + 8
        );
    }
    // Every accept above came after these eight, so had they been closed it would show.
    for (i, s) in kept.iter().enumerate() {
        assert!(still_open(s), "connection {i} under the cap is held");
    }
}

#[tokio::test]
async fn the_total_cap_closes_new_connections_until_one_ends() {
    let server = start(
        "header_timeout = \"60s\"\nidle_timeout = \"60s\"\nmax_connections = 8\nmax_connections_per_ip = 4",
        None,
    );
    let mut a = Vec::new();
    let mut b = Vec::new();
    for _ in 0..4 {
        a.push(connect_from([127, 0, 0, 2], server.addr).await);
        b.push(connect_from([127, 0, 0, 3], server.addr).await);
    }
    let mut third = connect_from([127, 0, 0, 4], server.addr).await;
    assert!(
        closed_within(&mut third, Duration::from_secs(5))
            .await
            .is_some(),
        "a ninth connection is closed at once"
    );
    assert!(
        a.iter().chain(&b).all(still_open),
        "the first eight are held"
    );
    drop(a);
    // The server sees the four close and gives their places back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (head, body) = signed_request(&server, 7301);
        let mut s = connect_from([127, 0, 0, 1], server.addr).await;
        let sent = async {
            s.write_all(head.as_bytes()).await?;
            s.write_all(b"\r\n").await?;
            s.write_all(&body).await
        }
        .await;
        let mut first = [0u8; 12];
        if sent.is_ok() && s.read_exact(&mut first).await.is_ok() {
            assert_eq!(&first, b"HTTP/1.1 200", "a place came back");
            break;
        }
        assert!(Instant::now() < deadline, "no place came back in 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
}

#[tokio::test]
async fn broken_chunked_framing_is_400_and_an_oversized_body_still_413() {
    let server = start(FAST, None);
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .expect("write");
    let resp = read_response(&mut s).await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    let v: serde_json::Value = serde_json::from_str(&resp.body).expect("json");
    assert_eq!(v["error"], "malformed", "{}", resp.body);

    // Over max_body_bytes (1024), by length and by chunks.
    let big = vec![b'x'; 2048];
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let mut req =
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2048\r\n\r\n"
            .to_vec();
    req.extend_from_slice(&big);
    s.write_all(&req).await.expect("write");
    let resp = read_response(&mut s).await;
    assert_eq!(resp.status, 413, "by length: {}", resp.body);

    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    let mut req =
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n"
            .to_vec();
    req.extend_from_slice(&big);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    s.write_all(&req).await.expect("write");
    let resp = read_response(&mut s).await;
    assert_eq!(resp.status, 413, "by chunks: {}", resp.body);
    drop(server.dev);
}
