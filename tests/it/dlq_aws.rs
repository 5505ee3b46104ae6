//! `inlet dlq` and `inlet replay --aws` as an operator runs them against a deployed stack:
//! the real binary, the real SDK clients, moto's SQS and DynamoDB on loopback. SQS's own
//! message move task (moto does not implement it) is checked against a fake SQS endpoint
//! that records the requests the binary makes.

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use inlet::envelope::{self, Envelope};
use inlet::ports::{BeginRequest, Ledger, OutboundMessage, Queue};

use crate::support::aws;

const INLET: &str = env!("CARGO_BIN_EXE_inlet");

fn envelope(source: &str, n: u32) -> String {
    let mut e: Envelope = serde_json::from_value(serde_json::json!({
        "v": 1, "source": source, "provider": "generic", "via": "webhook",
        "dedupe_key": format!("{source}#e{n}"), "provider_event_id": format!("e{n}"),
        "received_at": inlet::time::format_rfc3339_ms(1_767_225_600_000), "verified": {"scheme": "hmac"},
        "body": format!("{{\"id\":\"e{n}\"}}"), "body_encoding": "utf8", "body_sha256": ""
    }))
    .expect("envelope");
    e.body_sha256 = envelope::sha256_hex(e.body.as_bytes());
    serde_json::to_string(&e).expect("json")
}

/// The binary with an AWS environment that can only reach `endpoint`.
pub(crate) fn inlet_aws(endpoint: &str, urls: (&str, &str, &str), args: &[&str]) -> Output {
    inlet_aws_command(endpoint, urls, args)
        .output()
        .expect("run inlet")
}

/// `inlet ARGS --aws` with the stack's names and moto's endpoint in its environment, not yet
/// started (`inlet console` is spawned, not waited for).
pub(crate) fn inlet_aws_command(
    endpoint: &str,
    urls: (&str, &str, &str),
    args: &[&str],
) -> Command {
    let mut command = Command::new(INLET);
    command
        .args(args)
        .arg("--aws")
        .env_clear()
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", aws::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("INLET_QUEUE_URL", urls.0)
        .env("INLET_DLQ_URL", urls.1)
        .env("INLET_TABLE", urls.2);
    command
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "inlet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn dead_letters_on_sqs_are_listed_with_the_ledger_reason_and_replayed() {
    let q = aws::queues_with_dlq(1).await;
    let ledger = aws::ledger().await;
    for (source, n) in [("games", 1), ("kyc", 2), ("games", 3)] {
        q.dlq
            .send(&OutboundMessage::new(envelope(source, n)))
            .await
            .expect("send");
    }
    // games#e1's dispatch failed for good: the ledger says why.
    let now = 1_767_225_600_000;
    ledger
        .begin(&BeginRequest {
            key: "games#e1".into(),
            source: "games".into(),
            body_sha256: "x".into(),
            provider_event_id: Some("e1".into()),
            event_type: None,
            via: "webhook".into(),
            received_at_ms: now,
            now_ms: now,
            lease_until_ms: now + 60_000,
            summary: Default::default(),
        })
        .await
        .expect("begin");
    ledger
        .fail("games#e1", now + 1, "HTTP 503 from the bus", true)
        .await
        .expect("fail");
    let endpoint = aws::endpoint();
    let urls = (q.main.queue_url(), q.dlq.queue_url(), ledger.table());

    let out = stdout(&inlet_aws(&endpoint, urls, &["dlq", "list", "--json"]));
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    let e1 = rows
        .iter()
        .find(|r| r["dedupe_key"] == "games#e1")
        .expect("games#e1 listed");
    assert_eq!(e1["reason"], "HTTP 503 from the bus");
    assert_eq!(e1["attempts"], 1);

    // Filtered: received, sent to the main queue, deleted — message by message.
    let out = stdout(&inlet_aws(
        &endpoint,
        urls,
        &["replay", "--source", "games"],
    ));
    assert!(out.contains("replayed 2 of 3"), "{out}");
    let mut back = Vec::new();
    for _ in 0..15 {
        for m in q
            .main
            .receive(10, Duration::from_secs(60), Duration::from_secs(1))
            .await
            .expect("receive")
        {
            back.push(Envelope::from_json(&m.body).expect("envelope").dedupe_key);
        }
        if back.len() >= 2 {
            break;
        }
    }
    back.sort();
    assert_eq!(back, vec!["games#e1", "games#e3"]);
    // Unfiltered, one by one (moto has no message move task): the last one goes too.
    let out = stdout(&inlet_aws(&endpoint, urls, &["replay", "--one-by-one"]));
    assert!(out.contains("replayed 1 of 1"), "{out}");
    let out = stdout(&inlet_aws(&endpoint, urls, &["dlq", "list", "--json"]));
    assert_eq!(out.lines().count(), 0, "{out}");
}

/// What the fake SQS endpoint was asked, in order: `(X-Amz-Target, JSON body)`.
#[derive(Default)]
struct FakeSqs {
    calls: Mutex<Vec<(String, serde_json::Value)>>,
}

async fn fake_sqs(
    State(fake): State<Arc<FakeSqs>>,
    headers: HeaderMap,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], String) {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let polls = {
        let mut calls = fake.calls.lock().expect("lock");
        calls.push((target.clone(), request.clone()));
        calls
            .iter()
            .filter(|(t, _)| t.ends_with("ListMessageMoveTasks"))
            .count()
    };
    let answer = match target.as_str() {
        "AmazonSQS.GetQueueAttributes" => {
            let url = request["QueueUrl"].as_str().unwrap_or("");
            let name = url.rsplit('/').next().unwrap_or("");
            serde_json::json!({"Attributes": {"QueueArn": format!("arn:aws:sqs:us-east-1:123456789012:{name}")}})
        }
        "AmazonSQS.StartMessageMoveTask" => serde_json::json!({"TaskHandle": "task-1"}),
        // Running on the first look, done on the second.
        "AmazonSQS.ListMessageMoveTasks" => {
            let (status, moved) = if polls < 2 {
                ("RUNNING", 2)
            } else {
                ("COMPLETED", 5)
            };
            serde_json::json!({"Results": [{
                "TaskHandle": "task-1", "Status": status, "SourceArn": request["SourceArn"],
                "ApproximateNumberOfMessagesMoved": moved, "ApproximateNumberOfMessagesToMove": 5,
                "StartedTimestamp": 1_767_225_600_000i64
            }]})
        }
        other => serde_json::json!({"__type": "InvalidAction", "message": other}),
    };
    (
        [("content-type", "application/x-amz-json-1.0")],
        answer.to_string(),
    )
}

#[tokio::test]
async fn an_unfiltered_replay_on_aws_starts_an_sqs_move_task_and_follows_it() {
    let fake = Arc::new(FakeSqs::default());
    let app = Router::new()
        .route("/", post(fake_sqs))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let main = format!("{endpoint}/123456789012/inlet-events");
    let dlq = format!("{endpoint}/123456789012/inlet-events-dlq");
    let bin_endpoint = endpoint.clone();
    let out = tokio::task::spawn_blocking(move || {
        inlet_aws(&bin_endpoint, (&main, &dlq, "inlet-ledger"), &["replay"])
    })
    .await
    .expect("join");
    let text = stdout(&out);
    assert!(text.contains("replayed 5 dead letter(s)"), "{text}");

    let calls = fake.calls.lock().expect("lock").clone();
    let start = calls
        .iter()
        .find(|(t, _)| t == "AmazonSQS.StartMessageMoveTask")
        .expect("StartMessageMoveTask called");
    assert_eq!(
        start.1,
        serde_json::json!({
            "SourceArn": "arn:aws:sqs:us-east-1:123456789012:inlet-events-dlq",
            "DestinationArn": "arn:aws:sqs:us-east-1:123456789012:inlet-events",
        })
    );
    let lists: Vec<_> = calls
        .iter()
        .filter(|(t, _)| t == "AmazonSQS.ListMessageMoveTasks")
        .collect();
    assert_eq!(lists.len(), 2, "followed until COMPLETED: {calls:?}");
    assert_eq!(
        lists[0].1["SourceArn"],
        "arn:aws:sqs:us-east-1:123456789012:inlet-events-dlq"
    );
    // No message was received or sent by the CLI itself.
    assert!(
        !calls
            .iter()
            .any(|(t, _)| t.ends_with("ReceiveMessage") || t.ends_with("SendMessage")),
        "{calls:?}"
    );
}
