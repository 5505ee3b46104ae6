//! Polling through the whole local pipeline: a fake Telegram Bot API on loopback, the
//! poller over the embedded queue, lease and cursor, the worker's dedupe shared with the
//! webhook path.

use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::Router;
use inlet::config::{PollSpec, SecretSpec};
use inlet::poller::RunOutcome;
use inlet::ports::Clock;
use inlet::worker::Outcome;

use crate::pipeline::{signed_headers, Running};

const TOKEN: &str = "123456:inlet-test-bot-token";

fn update(update_id: u64) -> serde_json::Value {
    serde_json::json!({
        "update_id": update_id,
        "message": {"message_id": update_id, "date": 1_767_225_600, "chat": {"id": 42, "type": "private"}, "text": format!("bet {update_id}")}
    })
}

/// The Bot API's `getUpdates`: updates after `offset` (which confirms the earlier ones),
/// oldest first, at most `limit`.
#[derive(Default)]
struct Bot {
    updates: Mutex<Vec<serde_json::Value>>,
    requests: Mutex<u32>,
}

impl Bot {
    fn push(&self, update_id: u64) {
        self.updates.lock().expect("lock").push(update(update_id));
    }
}

async fn get_updates(
    State(bot): State<Arc<Bot>>,
    RawQuery(query): RawQuery,
) -> ([(&'static str, &'static str); 1], String) {
    *bot.requests.lock().expect("lock") += 1;
    let param = |name: &str| {
        form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let mut updates = bot.updates.lock().expect("lock");
    if let Some(offset) = param("offset") {
        updates.retain(|u| u["update_id"].as_u64().unwrap_or(0) >= offset);
    }
    let limit = param("limit").unwrap_or(100) as usize;
    let page: Vec<_> = updates.iter().take(limit).cloned().collect();
    (
        [("content-type", "application/json")],
        serde_json::json!({"ok": true, "result": page}).to_string(),
    )
}

async fn fake_bot() -> (Arc<Bot>, String) {
    let bot = Arc::new(Bot::default());
    let app = Router::new()
        .route(&format!("/bot{TOKEN}/getUpdates"), get(get_updates))
        .with_state(bot.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (bot, base)
}

async fn running_with_poll(api_base: &str) -> Running {
    running_with(api_base, false).await
}

async fn running_with(api_base: &str, reconcile: bool) -> Running {
    let api_base = api_base.to_owned();
    Running::start(move |doc| {
        let telegram = doc
            .sources
            .iter_mut()
            .find(|s| s.id == "telegram")
            .expect("telegram source");
        telegram.poll = Some(PollSpec {
            kind: "telegram_updates".into(),
            every: "1m".into(),
            secrets: vec![SecretSpec::Ref(format!("literal:{TOKEN}"))],
            max_requests_per_run: 50,
            max_requests_per_minute: 6000,
            reconcile,
            options: Some(serde_json::json!({"api_base": api_base, "limit": 7})),
        });
    })
    .await
}

#[tokio::test]
async fn polled_updates_are_dispatched_once_and_shared_with_the_webhook_path() {
    let (bot, base) = fake_bot().await;
    let run = running_with_poll(&base).await;
    let http = Arc::new(inlet::adapters::http_client::ReqwestHttp::new(1 << 20).expect("http"));
    let poller = run.stack.poller(http, "test-run");
    let deadline = run.clock.now_ms() + 60_000;

    // An update that already arrived by webhook.
    let webhook_body = serde_json::json!({
        "update_id": 3,
        "message": {"message_id": 3, "date": 1_767_225_600, "chat": {"id": 42, "type": "private"}, "text": "bet 3"}
    })
    .to_string()
    .into_bytes();
    let h = signed_headers(
        &run.stack.config,
        "telegram",
        &webhook_body,
        run.clock.now_ms(),
        "d",
    );
    let (status, _) = run.post("telegram", &h, &webhook_body).await;
    assert_eq!(status, 200);
    assert_eq!(
        run.drain().await,
        vec![Outcome::Dispatched {
            dedupe_key: "telegram#3".into()
        }]
    );

    for id in 1..=20 {
        bot.push(id);
    }
    let report = poller.run("telegram", deadline).await.expect("run");
    assert_eq!(report.outcome, RunOutcome::CaughtUp, "{report:?}");
    assert_eq!(report.items, 20);
    let outcomes = run.drain().await;
    let dispatched = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Dispatched { .. }))
        .count();
    let duplicates: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Duplicate { dedupe_key } => Some(dedupe_key.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(dispatched, 19, "{outcomes:?}");
    assert_eq!(
        duplicates,
        vec!["telegram#3"],
        "the webhook copy wins; the poll's is absorbed"
    );

    // New updates arrive; the next run takes only them, from the stored offset.
    for id in 21..=25 {
        bot.push(id);
    }
    let next = poller.run("telegram", deadline).await.expect("run");
    assert_eq!((next.outcome, next.items), (RunOutcome::CaughtUp, 5));
    assert_eq!(run.drain().await.len(), 5);
    let jsonl = std::fs::read_to_string(run.jsonl()).expect("jsonl");
    assert_eq!(
        jsonl.lines().count(),
        25,
        "every update written exactly once"
    );
    assert!(jsonl.contains("\"via\":\"poll\""));
}

#[tokio::test]
async fn a_second_concurrent_run_does_not_poll() {
    let (bot, base) = fake_bot().await;
    let run = running_with_poll(&base).await;
    let store = run.stack.store.ledger();
    let now = run.clock.now_ms();
    assert!(matches!(
        inlet::ports::PollStore::acquire(&store, "telegram", "other-run", now, now + 60_000)
            .await
            .expect("acquire"),
        inlet::ports::Acquire::Acquired(_)
    ));
    let http = Arc::new(inlet::adapters::http_client::ReqwestHttp::new(1 << 20).expect("http"));
    let report = run
        .stack
        .poller(http, "test-run")
        .run("telegram", now + 30_000)
        .await
        .expect("run");
    assert!(matches!(report.outcome, RunOutcome::Busy { ref holder, .. } if holder == "other-run"));
    assert_eq!(*bot.requests.lock().expect("lock"), 0);
}

#[tokio::test]
async fn a_reconciling_poll_recovers_every_dropped_webhook_and_counts_exactly_those() {
    let (bot, base) = fake_bot().await;
    let run = running_with(&base, true).await;
    let dropped: Vec<u64> = (1..=60).filter(|id| id % 6 == 0).collect();
    for id in 1..=60 {
        bot.push(id);
        if dropped.contains(&id) {
            continue;
        }
        // The webhook carries the same update serialised its own way (here: pretty-printed):
        // a copy of the polled one, not a conflict.
        let body = serde_json::to_string_pretty(&update(id))
            .expect("json")
            .into_bytes();
        let h = signed_headers(
            &run.stack.config,
            "telegram",
            &body,
            run.clock.now_ms(),
            "d",
        );
        let (status, _) = run.post("telegram", &h, &body).await;
        assert_eq!(status, 200);
    }
    assert_eq!(run.drain().await.len(), 50);

    let http = Arc::new(inlet::adapters::http_client::ReqwestHttp::new(1 << 20).expect("http"));
    let report = run
        .stack
        .poller(http, "reconcile")
        .run("telegram", run.clock.now_ms() + 60_000)
        .await
        .expect("run");
    assert_eq!((report.outcome, report.items), (RunOutcome::CaughtUp, 60));
    let outcomes = run.drain().await;
    let dispatched: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Dispatched { dedupe_key } => Some(dedupe_key.clone()),
            _ => None,
        })
        .collect();
    let want: Vec<String> = dropped.iter().map(|id| format!("telegram#{id}")).collect();
    let mut got = dispatched.clone();
    got.sort_by_key(|k| {
        k.trim_start_matches("telegram#")
            .parse::<u64>()
            .unwrap_or(0)
    });
    assert_eq!(got, want, "exactly the dropped ones are recovered");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Duplicate { .. }))
            .count(),
        50
    );
    let trail = run.trail().await;
    let count = |status: inlet::ports::TrailStatus| {
        trail
            .iter()
            .filter(|r| matches!(r, inlet::ports::TrailRow::Entry(e) if e.status == status))
            .count()
    };
    assert_eq!(
        count(inlet::ports::TrailStatus::MissedWebhook),
        dropped.len()
    );
    assert_eq!(count(inlet::ports::TrailStatus::Conflict), 0);
    let lines = std::fs::read_to_string(run.jsonl())
        .expect("jsonl")
        .lines()
        .count();
    assert_eq!(lines, 60, "every update written exactly once");
}
