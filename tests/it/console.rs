//! `inlet console`, the real binary: a headless Chromium finds a dead-lettered payment by id,
//! reads its story, replays it from the DLQ page through the confirmation page, and sees it
//! dispatched; and over plain HTTP, the guards: the form token, the Host and Origin checks,
//! `--read-only`, a non-loopback `--listen`, and every outside value escaped on the pages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use inlet::adapters::embedded::EmbeddedStore;
use inlet::local::{DB_FILE, DEAD_LETTER_QUEUE, QUEUES_FILE};
use inlet::ports::{
    BeginRequest, Clock, DedupeStatus, EventSummary, Ledger, Queue, SystemClock, TrailEntry,
    TrailStatus,
};

use crate::cli::Dev;
use crate::pipeline::{dev_config_text, signed_headers};
use crate::support::webdriver::Browser;

const INLET: &str = env!("CARGO_BIN_EXE_inlet");
const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// `inlet console ARGS --listen 127.0.0.1:0`, once it printed its URL (`base` ends in `/`).
fn console(config: &Path, extra: &[&str]) -> Dev {
    let child = Command::new(INLET)
        .args(["console", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn inlet console");
    Dev::from_child(child)
}

/// Wait (bounded) until `done` holds, checking every 50 ms.
async fn until<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The hook target: 400 (a permanent failure: straight to the DLQ) for the event whose
/// dedupe key is `dead`, until `fixed`; 200 for everything else.
struct Hook {
    fixed: Arc<AtomicBool>,
    hits: Arc<AtomicU32>,
    addr: std::net::SocketAddr,
}

async fn hook(dead: String) -> Hook {
    let fixed = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicU32::new(0));
    let (f, h) = (fixed.clone(), hits.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let (f, h, dead) = (f.clone(), h.clone(), dead.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
                if id == Some(dead.as_str()) && !f.load(Ordering::SeqCst) {
                    (axum::http::StatusCode::BAD_REQUEST, "no such payment yet")
                } else {
                    (axum::http::StatusCode::OK, "ok")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Hook { fixed, hits, addr }
}

/// The dev config in `dir` with every route to the hook.
fn write_config(dir: &Path, hook: std::net::SocketAddr) -> PathBuf {
    let text = dev_config_text(dir).replace("targets = [\"file\"]", "targets = [\"hook\"]");
    let path = dir.join("inlet.toml");
    std::fs::write(
        &path,
        format!(
            "{text}\n[[targets]]\nid = \"hook\"\nkind = \"http\"\nurl = \"http://{hook}/hook\"\n\
             secret = \"literal:{HOOK_SECRET}\"\ntimeout_seconds = 5\nallow_private = [\"127.0.0.1/32\"]\n"
        ),
    )
    .expect("write config");
    path
}

/// A Stripe payment_intent.succeeded for customer p_42, as Stripe signs it.
fn payment(event_id: &str, payment_id: &str) -> Vec<u8> {
    serde_json::json!({
        "id": event_id, "object": "event", "type": "payment_intent.succeeded",
        "created": 1_767_225_600,
        "data": {"object": {"id": payment_id, "object": "payment_intent", "amount": 4200,
                            "currency": "eur", "customer": "p_42"}},
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn an_operator_finds_a_dead_payment_reads_its_story_and_replays_it_in_the_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let events: Vec<(String, String)> = (0..3)
        .map(|n| {
            (
                format!("evt_console_{run}_{n}"),
                format!("pi_console_{run}_{n}"),
            )
        })
        .collect();
    let (dead_event, dead_payment) = &events[1];
    let dead_key = format!("stripe#{dead_event}");
    let hook = hook(dead_key.clone()).await;
    let config = write_config(dir.path(), hook.addr);
    let cfg = inlet::config::load_file(&config, &|_: &str| None).expect("config");
    let dev = Dev::start(&config);

    for (event_id, payment_id) in &events {
        let body = payment(event_id, payment_id);
        let (status, answer) = crate::cli::post(&dev.base, &cfg, "stripe", &body).await;
        assert_eq!(status, 200, "{answer}");
    }
    // Two dispatched, one dead-lettered at its first 400.
    let open =
        |file| EmbeddedStore::open(&dir.path().join("data").join(file), Arc::new(SystemClock));
    let store = open(DB_FILE).expect("store");
    let queues = open(QUEUES_FILE).expect("queues");
    let (ledger, dlq) = (store.ledger(), queues.queue(DEAD_LETTER_QUEUE, None));
    until(
        "two dispatched, one dead letter",
        Duration::from_secs(30),
        || async {
            let mut done = 0;
            for (event_id, _) in &events {
                let record = ledger
                    .get(&format!("stripe#{event_id}"))
                    .await
                    .expect("get");
                done += usize::from(record.is_some_and(|r| r.status == DedupeStatus::Completed));
            }
            done == 2 && dlq.depth().await.expect("depth") == Some(1)
        },
    )
    .await;

    let console = console(&config, &[]);
    let browser = Browser::start().await;
    browser.goto(&console.base).await;

    // Find it by id from the search box, then open its story from the list.
    let search = browser.find("header input[name=id]").await;
    browser.type_into(&search, dead_payment).await;
    browser.follow(&browser.find("#search").await).await;
    // Its record, and the trail's entries about it (the move to the DLQ): all of that event.
    let links = browser.all("#live a.story").await;
    assert!(!links.is_empty(), "{}", browser.source().await);
    for link in &links {
        assert_eq!(browser.text(link).await, dead_key);
    }
    // The list is live: a later event of the same payment shows up without a reload (the
    // console's script refreshes it, under its Content-Security-Policy).
    let later_event = format!("evt_console_{run}_later");
    let body = payment(&later_event, dead_payment);
    let (status, answer) = crate::cli::post(&dev.base, &cfg, "stripe", &body).await;
    assert_eq!(status, 200, "{answer}");
    let later_key = format!("stripe#{later_event}");
    until(
        "the open list shows the later event",
        Duration::from_secs(20),
        || async { browser.source().await.contains(&later_key) },
    )
    .await;
    let dead_link = format!("#live a.story[href='/event?id=stripe%23{dead_event}']");
    browser.follow(&browser.find(&dead_link).await).await;
    assert_eq!(browser.text_of("#status").await, "dead");
    assert!(
        browser.text_of("#reason").await.contains("HTTP 400"),
        "{}",
        browser.source().await
    );
    assert!(browser
        .text_of("#dead-letter")
        .await
        .starts_with("In the dead-letter queue"));
    let story_url = browser.url().await;

    // The DLQ page: select it, replay, confirm; the target is fixed before the event goes back.
    browser
        .follow(&browser.find("header a[href='/dlq']").await)
        .await;
    let boxes = browser.all("input[type=checkbox][name=id]").await;
    assert_eq!(boxes.len(), 1, "{}", browser.source().await);
    let selected = browser
        .find(&format!("input[type=checkbox][value='{dead_key}']"))
        .await;
    browser.click(&selected).await;
    browser
        .follow(&browser.find("#replay-selected").await)
        .await;
    assert!(browser.url().await.contains("/dlq/confirm"));
    assert_eq!(browser.text_of("ul.ids").await, dead_key);
    hook.fixed.store(true, Ordering::SeqCst);
    browser.follow(&browser.find("#confirm").await).await;
    assert!(
        browser
            .text_of("#replayed")
            .await
            .starts_with("Replayed 1 of 1 dead letter(s)"),
        "{}",
        browser.source().await
    );

    // Its story, reloaded until the worker took it: dispatched to the hook, out of the DLQ.
    browser.goto(&story_url).await;
    until(
        "the story shows dispatched",
        Duration::from_secs(30),
        || async {
            browser.goto(&story_url).await;
            browser.text_of("#status").await == "dispatched"
        },
    )
    .await;
    assert_eq!(browser.text_of("#delivered").await, "hook");
    assert_eq!(
        browser.text_of("#dead-letter").await,
        "Not in the dead-letter queue."
    );
    assert_eq!(dlq.depth().await.expect("depth"), Some(0));
    // Four first deliveries (one refused) and the replayed one.
    assert_eq!(hook.hits.load(Ordering::SeqCst), 5);
    drop(browser);
}

/// A store holding one dead letter (a real Stripe envelope) and a trail whose ids, type,
/// entity and reasons are markup.
struct Hostile {
    dir: tempfile::TempDir,
    config: PathBuf,
    dlq: Box<dyn Queue>,
    dead_key: String,
}

const EVIL_KEY: &str = "stripe#<script>alert('key')</script>";
const EVIL_ID: &str = "<img src=x onerror=alert('id')>";
const EVIL_TYPE: &str = "\"><script>alert('type')</script>";
const EVIL_REASON: &str = "<script>alert('reason')</script>";

async fn hostile_store() -> Hostile {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dev_config_text(dir.path());
    let config = dir.path().join("inlet.toml");
    std::fs::write(&config, text).expect("config");
    let cfg = inlet::config::load_file(&config, &|_: &str| None).expect("config");
    let clock = Arc::new(SystemClock);
    let stack =
        inlet::local::LocalStack::open(cfg.clone(), &dir.path().join("data"), clock.clone())
            .expect("stack");
    let now = clock.now_ms();
    let ledger = stack.store.ledger();
    ledger
        .begin(&BeginRequest {
            key: EVIL_KEY.to_owned(),
            source: "stripe".to_owned(),
            body_sha256: "sha".to_owned(),
            provider_event_id: Some(EVIL_ID.to_owned()),
            event_type: Some(EVIL_TYPE.to_owned()),
            via: "webhook".to_owned(),
            received_at_ms: now - 5_000,
            now_ms: now - 5_000,
            lease_until_ms: now + 60_000,
            summary: EventSummary {
                entity: Some("<b>p_42</b>".to_owned()),
                ..EventSummary::default()
            },
        })
        .await
        .expect("begin");
    ledger
        .fail(EVIL_KEY, now - 4_000, EVIL_REASON, true)
        .await
        .expect("fail");
    ledger
        .append(&TrailEntry {
            id: "r-evil".to_owned(),
            at_ms: now - 3_000,
            source: "stripe".to_owned(),
            status: TrailStatus::Refused,
            dedupe_key: Some(EVIL_KEY.to_owned()),
            provider_event_id: None,
            event_type: None,
            reason: Some(EVIL_REASON.to_owned()),
            source_ip: None,
            expires_at_ms: now + 86_400_000,
        })
        .await
        .expect("append");
    // A real dead letter: a signed Stripe webhook accepted, its message moved to the DLQ.
    let body = crate::pipeline::sample_body("stripe", now as u64);
    let resp = stack
        .ingest
        .handle(inlet::ingest::WebhookRequest {
            method: "POST".into(),
            path: "/webhooks/stripe".into(),
            headers: signed_headers(&cfg, "stripe", &body, now, "d"),
            body,
            ..Default::default()
        })
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let answer: serde_json::Value = serde_json::from_str(&resp.body).expect("json");
    let dead_key = answer["dedupe_key"].as_str().expect("key").to_owned();
    assert_eq!(stack.queue.move_to(&stack.dlq, 10).await.expect("move"), 1);
    let dlq = Box::new(stack.queues.queue(DEAD_LETTER_QUEUE, None));
    Hostile {
        dir,
        config,
        dlq,
        dead_key,
    }
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = reqwest::get(url).await.expect("get");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.expect("text"))
}

/// A query string with `pairs` percent-encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[tokio::test]
async fn every_outside_value_is_escaped_and_no_script_is_inline() {
    let h = hostile_store().await;
    let console = console(&h.config, &[]);
    let base = &console.base;
    let pages = [
        String::new(),
        format!("?{}", query(&[("id", EVIL_ID)])),
        format!(
            "?{}",
            query(&[("entity", "<b>p_42</b>"), ("type", EVIL_TYPE)])
        ),
        format!("event?{}", query(&[("id", EVIL_KEY)])),
        format!(
            "event?{}",
            query(&[("id", "<script>alert('missing')</script>")])
        ),
        format!("dlq/confirm?{}", query(&[("id", EVIL_KEY)])),
    ];
    for page in &pages {
        let (status, headers, body) = get(&format!("{base}{page}")).await;
        assert!(status == 200 || status == 404, "{page}: {status}");
        for raw in ["<script>alert", "<img src=x", "<b>p_42"] {
            assert!(!body.contains(raw), "{page}: {raw} unescaped:\n{body}");
        }
        let csp = headers["content-security-policy"].to_str().expect("csp");
        assert!(
            csp.contains("script-src 'self'")
                && csp.contains("frame-ancestors 'none'")
                && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        // The only script is the console's own file.
        assert_eq!(body.matches("<script").count(), 1, "{page}: {body}");
        assert!(body.contains(r#"<script src="/static/console.js" defer></script>"#));
    }
    // The values are there, as text.
    let (_, _, list) = get(base).await;
    for shown in [
        "&lt;img src=x onerror=alert('id')&gt;",
        "&quot;&gt;&lt;script&gt;alert('type')&lt;/script&gt;",
        "&lt;b&gt;p_42&lt;/b&gt;",
        "&lt;script&gt;alert('reason')&lt;/script&gt;",
    ] {
        assert!(list.contains(shown), "{shown} not in:\n{list}");
    }
    let (_, _, story) = get(&format!("{base}event?{}", query(&[("id", EVIL_KEY)]))).await;
    assert!(
        story.contains("refused (&lt;script&gt;alert('reason')&lt;/script&gt;)"),
        "{story}"
    );
    drop(h.dir);
}

/// The token of a console's confirmation form.
async fn token(base: &str) -> String {
    let (status, _, page) = get(&format!("{base}dlq/confirm?id=x")).await;
    assert_eq!(status, 200, "{page}");
    let after = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .expect("a csrf field");
    after[..after.find('"').expect("end of value")].to_owned()
}

/// POST a replay form to `base` with these headers; the status and text of the answer.
async fn replay(base: &str, form: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}dlq/replay"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("post");
    (r.status().as_u16(), r.text().await.expect("text"))
}

#[tokio::test]
async fn a_replay_needs_the_form_token_the_console_s_own_host_and_origin_and_a_writable_console() {
    let h = hostile_store().await;
    let writable = console(&h.config, &[]);
    let read_only = console(&h.config, &["--read-only"]);
    // Another writable console on the same store: its token is its own.
    let other = console(&h.config, &[]);
    let base = writable.base.clone();
    let own = base.trim_end_matches('/').to_owned();
    let good = token(&base).await;
    let foreign = token(&other.base).await;
    assert_ne!(good, foreign);
    let form = |token: &str| query(&[("csrf", token), ("id", &h.dead_key)]);
    let depth = || async { h.dlq.depth().await.expect("depth") };

    // What is wrong with each request, its form, its extra header.
    let refused = [
        ("no token", query(&[("id", &h.dead_key)]), None),
        ("a wrong token", form(&format!("{good}0")), None),
        ("another console's token", form(&foreign), None),
        (
            "a foreign Host",
            form(&good),
            Some(("host", "rebound.example:80")),
        ),
        (
            "a foreign Origin",
            form(&good),
            Some(("origin", "http://rebound.example")),
        ),
        (
            "a cross-site request without Origin",
            form(&good),
            Some(("sec-fetch-site", "cross-site")),
        ),
    ];
    for (what, body, header) in &refused {
        let headers: Vec<(&str, &str)> = header.iter().copied().collect();
        let (status, text) = replay(&base, body, &headers).await;
        assert_eq!(status, 403, "{what}: {text}");
    }
    assert_eq!(depth().await, Some(1), "a refused replay moved nothing");
    // Reading is guarded too: a rebound name gets no page.
    let r = reqwest::Client::new()
        .get(&base)
        .header("host", "rebound.example")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 403);

    // --read-only: no controls, no confirmation page, and the POST itself refused.
    let (_, _, page) = get(&format!("{}dlq", read_only.base)).await;
    assert!(page.contains(&h.dead_key), "{page}");
    assert!(
        !page.contains("type=\"checkbox\"") && !page.contains("/dlq/confirm"),
        "{page}"
    );
    let (status, _, _) = get(&format!("{}dlq/confirm?id=x", read_only.base)).await;
    assert_eq!(status, 403);
    let (status, text) = replay(&read_only.base, &form(&good), &[]).await;
    assert_eq!(status, 403);
    assert!(text.contains("read-only"), "{text}");
    assert_eq!(depth().await, Some(1));

    // The token, from the console's own origin: replayed.
    let (status, text) = replay(&base, &form(&good), &[("origin", &own)]).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("Replayed 1 of 1"), "{text}");
    assert_eq!(depth().await, Some(0));
}

#[tokio::test]
async fn the_polls_page_shows_each_poll_source_s_cursor_lease_and_last_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("inlet.toml");
    std::fs::write(&config, crate::cursor::CONFIG).expect("config");
    let store =
        EmbeddedStore::open(&dir.path().join(DB_FILE), Arc::new(SystemClock)).expect("store");
    let ledger = store.ledger();
    // A run that stored its cursor and still holds the lease.
    let version = crate::cursor::polled(&ledger, "poller-7", false).await;
    let now = SystemClock.now_ms();
    ledger
        .append(&TrailEntry {
            id: "run-1".to_owned(),
            at_ms: now,
            source: "tg".to_owned(),
            status: TrailStatus::PollRun,
            dedupe_key: None,
            provider_event_id: None,
            event_type: None,
            reason: Some("caught_up: 1 pages, 3 items, 3 new".to_owned()),
            source_ip: None,
            expires_at_ms: now + 86_400_000,
        })
        .await
        .expect("append");
    let data_dir = dir.path().to_str().expect("utf8");
    let console = console(&config, &["--data-dir", data_dir]);
    let (status, _, page) = get(&format!("{}polls", console.base)).await;
    assert_eq!(status, 200, "{page}");
    for shown in [
        "tg · telegram_updates every 1m".to_owned(),
        // The cursor is the poll kind's JSON, shown as text.
        "{&quot;offset&quot;:4242}".to_owned(),
        format!("<dt>version</dt><dd>{version}</dd>"),
        "held by poller-7 until".to_owned(),
        "caught_up: 1 pages, 3 items, 3 new".to_owned(),
    ] {
        assert!(page.contains(&shown), "{shown} not in:\n{page}");
    }
    // The webhook-only source has no poll to show.
    assert!(!page.contains("stripe ·"), "{page}");
    assert_eq!(crate::cursor::CURSOR, r#"{"offset":4242}"#);
}

/// `--aws`: the same pages over a deployed stack's table and queues (moto).
#[tokio::test]
async fn the_console_reads_a_deployed_stack() {
    let ledger = crate::support::aws::ledger().await;
    let t0 = SystemClock.now_ms() - 60_000;
    crate::events::write_trail(&ledger, t0).await;
    let queues = crate::support::aws::queues_with_dlq(5).await;
    let urls = (
        queues.main.queue_url(),
        queues.dlq.queue_url(),
        ledger.table(),
    );
    let mut command = crate::dlq_aws::inlet_aws_command(
        &crate::support::aws::endpoint(),
        urls,
        &["console", "--listen", "127.0.0.1:0"],
    );
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn inlet console --aws");
    let console = Dev::from_child(child);
    let base = &console.base;

    let (status, _, list) = get(&format!("{base}?source=stripe")).await;
    assert_eq!(status, 200, "{list}");
    assert!(list.contains("deployed stack"), "{list}");
    for key in ["stripe#evt_1", "stripe#evt_2", "stripe#evt_3"] {
        assert!(
            list.contains(&format!(">{key}</a>")),
            "{key} not in:\n{list}"
        );
    }
    assert!(!list.contains("backoffice#evt_9"), "{list}");
    let (status, _, story) = get(&format!("{base}event?id=stripe%23evt_3")).await;
    assert_eq!(status, 200, "{story}");
    assert!(
        story.contains(r#"<dd id="status" class="s-1">dead</dd>"#)
            && story.contains("target bus answered 400"),
        "{story}"
    );
    let (status, _, dlq) = get(&format!("{base}dlq")).await;
    assert_eq!(status, 200, "{dlq}");
    assert!(dlq.contains("0 dead letter(s)"), "{dlq}");
    // Without --config there are no poll sources to list, and the page says so.
    let (_, _, polls) = get(&format!("{base}polls")).await;
    assert!(polls.contains("to list the config"), "{polls}");
}

#[tokio::test]
async fn a_listen_address_off_loopback_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("inlet.toml");
    std::fs::write(&config, dev_config_text(dir.path())).expect("config");
    for far in ["0.0.0.0:0", "[::]:0"] {
        let mut child = Command::new(INLET)
            .args(["console", "--listen", far, "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn inlet console");
        // A console that serves instead of refusing never exits: a bounded wait, then kill.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("try_wait").is_none() {
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("inlet console --listen {far} is serving instead of refusing");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = child.wait_with_output().expect("output");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a loopback address"), "{err}");
    }
}

#[tokio::test]
async fn an_archived_request_is_shown_on_its_story_and_downloads_byte_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, cfg, stack) = crate::archive::archiving(dir.path(), "", "");
    // A body with markup a page must never render.
    let body = br#"{"id":"evt_arch_1","object":"event","type":"payment_intent.succeeded","created":1767225600,"data":{"object":{"id":"pi_arch","description":"<script>alert(1)</script>"}}}"#.to_vec();
    let headers = signed_headers(&cfg, "stripe", &body, SystemClock.now_ms(), "d");
    crate::archive::accept(&stack, "stripe", headers, &body).await;
    crate::pipeline::drain(&stack).await;
    drop(stack);

    let console = console(&config, &["--read-only"]);
    let base = &console.base;
    let (status, _, story) = get(&format!("{base}event?{}", query(&[("id", "pi_arch")]))).await;
    assert_eq!(status, 200, "{story}");
    assert!(story.contains("Archived request"), "{story}");
    assert!(story.contains("POST /webhooks/stripe"), "{story}");
    assert!(story.contains("stripe-signature"), "{story}");
    assert!(!story.contains("<script>alert(1)"), "{story}");
    let link = format!(
        "{base}event/request?{}",
        query(&[("id", "stripe#evt_arch_1")])
    );
    assert!(
        story.contains("/event/request?id=stripe%23evt_arch_1"),
        "{story}"
    );
    let r = reqwest::get(&link).await.expect("download");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().expect("type"),
        "application/octet-stream"
    );
    assert!(r.headers()["content-disposition"]
        .to_str()
        .expect("disposition")
        .starts_with("attachment;"));
    assert!(r.bytes().await.expect("bytes").as_ref() == body.as_slice());
    drop(dir);
}
