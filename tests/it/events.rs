//! `inlet events` answers the same rows from the local store and from a deployed stack's
//! DynamoDB table (moto): the same trail written into both, the same queries run through the
//! real CLI binary, the same JSON lines back.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use inlet::adapters::embedded::EmbeddedStore;
use inlet::local::DB_FILE;
use inlet::ports::{BeginRequest, EventSummary, Ledger, SystemClock, TrailEntry, TrailStatus};

use crate::dlq_aws::inlet_aws;
use crate::support::aws;

const INLET: &str = env!("CARGO_BIN_EXE_inlet");
/// Recent enough that no entry has expired: `list` leaves expired ones out.
const DAY_MS: i64 = 86_400_000;

const CONFIG: &str = r#"[settings]
environment = "local"

[[sources]]
id = "stripe"
provider = "stripe"
secrets = ["literal:whsec_events_conformance_0123456789"]

[[sources]]
id = "backoffice"
provider = "stripe"
secrets = ["literal:whsec_events_conformance_9876543210"]

[[targets]]
id = "bus"
kind = "jsonl"
path = "events.jsonl"

[[routes]]
sources = ["*"]
targets = ["bus"]
"#;

fn begin(
    key: &str,
    source: &str,
    event_id: &str,
    kind: &str,
    entity: &str,
    at_ms: i64,
) -> BeginRequest {
    BeginRequest {
        key: key.to_owned(),
        source: source.to_owned(),
        body_sha256: format!("sha-{key}"),
        provider_event_id: Some(event_id.to_owned()),
        event_type: Some(kind.to_owned()),
        via: "webhook".to_owned(),
        received_at_ms: at_ms,
        now_ms: at_ms,
        lease_until_ms: at_ms + 60_000,
        summary: EventSummary {
            canonical_type: Some(
                if kind.ends_with("succeeded") {
                    "payment.succeeded"
                } else {
                    "payment.refunded"
                }
                .to_owned(),
            ),
            entity: Some(entity.to_owned()),
            object_id: Some(format!("pi_{event_id}")),
            caller_ip: None,
            amount: Some(2_000),
            currency: Some("USD".to_owned()),
            key_id: Some("0".to_owned()),
            request_key: None,
        },
    }
}

fn entry(id: &str, source: &str, status: TrailStatus, reason: &str, at_ms: i64) -> TrailEntry {
    TrailEntry {
        id: id.to_owned(),
        at_ms,
        source: source.to_owned(),
        status,
        dedupe_key: None,
        provider_event_id: None,
        event_type: None,
        reason: Some(reason.to_owned()),
        source_ip: None,
        expires_at_ms: at_ms + DAY_MS,
    }
}

/// The same trail in any ledger: dispatched, failed and dead records, a refusal, a poll run.
pub(crate) async fn write_trail(ledger: &dyn Ledger, t0: i64) {
    let delivered = BTreeSet::from(["bus".to_string()]);
    for (n, (key, source, id, kind, entity)) in [
        (
            "stripe#evt_1",
            "stripe",
            "evt_1",
            "payment_intent.succeeded",
            "cus_1",
        ),
        (
            "stripe#evt_2",
            "stripe",
            "evt_2",
            "charge.refunded",
            "cus_2",
        ),
        (
            "stripe#evt_3",
            "stripe",
            "evt_3",
            "payment_intent.succeeded",
            "cus_1",
        ),
        (
            "backoffice#evt_9",
            "backoffice",
            "evt_9",
            "payment_intent.succeeded",
            "cus_9",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let at = t0 + n as i64 * 1_000;
        ledger
            .begin(&begin(key, source, id, kind, entity, at))
            .await
            .expect("begin");
        match n {
            1 => ledger
                .fail(key, at, "target bus answered 503", false)
                .await
                .expect("fail"),
            2 => ledger
                .fail(key, at, "target bus answered 400", true)
                .await
                .expect("fail"),
            _ => ledger
                .complete(key, at, at + DAY_MS, &delivered)
                .await
                .expect("complete"),
        }
    }
    ledger
        .append(&entry(
            "r-1",
            "stripe",
            TrailStatus::Refused,
            "bad_signature",
            t0 + 4_000,
        ))
        .await
        .expect("append");
    ledger
        .append(&entry(
            "p-1",
            "stripe",
            TrailStatus::PollRun,
            "caught_up: 2 pages, 10 items, 3 new",
            t0 + 5_000,
        ))
        .await
        .expect("append");
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn local(dir: &Path, args: &[&str]) -> Output {
    Command::new(INLET)
        .args(["events", "--json", "--config"])
        .arg(dir.join("inlet.toml"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run inlet")
}

/// `inlet events --json ARGS --aws` against moto, with the stack's names in the environment.
fn deployed(table: &str, queues: (&str, &str), args: &[&str]) -> Output {
    let mut all = vec!["events", "--json"];
    all.extend(args);
    inlet_aws(&aws::endpoint(), (queues.0, queues.1, table), &all)
}

#[tokio::test]
async fn the_same_queries_answer_the_same_rows_from_the_local_store_and_dynamodb() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("inlet.toml"), CONFIG).expect("config");
    let t0 = inlet::ports::Clock::now_ms(&SystemClock) - 60_000;
    {
        let store =
            EmbeddedStore::open(&dir.path().join(DB_FILE), Arc::new(SystemClock)).expect("store");
        write_trail(&store.ledger(), t0).await;
    }
    let table = aws::ledger().await;
    write_trail(&table, t0).await;
    let queues = aws::queues_with_dlq(5).await;
    let urls = (queues.main.queue_url(), queues.dlq.queue_url());

    let since = inlet::time::format_rfc3339_ms(t0 + 2_000);
    let queries: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--source", "stripe"],
        vec!["--status", "dispatched"],
        vec!["--status", "dead"],
        vec!["--type", "payment.succeeded"],
        vec!["--type", "charge.refunded"],
        vec!["--entity", "cus_1"],
        vec!["--id", "evt_2"],
        vec!["--id", "backoffice#evt_9"],
        vec!["--source", "stripe", "--since", &since],
        vec!["--status", "poll_run"],
        vec!["--limit", "2"],
        // A payment id, through the lookup index on both stores.
        vec!["--id", "pi_evt_3"],
        vec!["--id", "pi_evt_1", "--status", "dispatched"],
        vec!["--id", "pi_evt_1", "--status", "dead"],
    ];
    let mut seen = Vec::new();
    for q in &queries {
        let here = lines(&local(dir.path(), q));
        let there = lines(&deployed(table.table(), urls, q));
        assert_eq!(here, there, "inlet events {q:?}");
        seen.push((q.clone(), here));
    }

    // And the answers are the right ones, not merely equal.
    let ids = |rows: &[serde_json::Value]| -> Vec<String> {
        rows.iter()
            .map(|r| {
                let key = r["dedupe_key"].as_str().unwrap_or_default();
                if key.is_empty() {
                    r["status"].as_str().unwrap_or_default().to_string()
                } else {
                    key.to_string()
                }
            })
            .collect()
    };
    let answer = |i: usize| ids(&seen[i].1);
    assert_eq!(
        answer(0),
        [
            "poll_run",
            "refused",
            "backoffice#evt_9",
            "stripe#evt_3",
            "stripe#evt_2",
            "stripe#evt_1"
        ]
    );
    assert_eq!(answer(1).len(), 5);
    assert_eq!(answer(2), ["backoffice#evt_9", "stripe#evt_1"]);
    assert_eq!(answer(3), ["stripe#evt_3"]);
    assert_eq!(
        answer(4),
        ["backoffice#evt_9", "stripe#evt_3", "stripe#evt_1"]
    );
    assert_eq!(answer(5), ["stripe#evt_2"]);
    assert_eq!(answer(6), ["stripe#evt_3", "stripe#evt_1"]);
    assert_eq!(answer(7), ["stripe#evt_2"]);
    assert_eq!(answer(8), ["backoffice#evt_9"]);
    assert_eq!(answer(9), ["poll_run", "refused", "stripe#evt_3"]);
    assert_eq!(answer(11).len(), 2);
    assert_eq!(answer(12), ["stripe#evt_3"]);
    assert_eq!(answer(13), ["stripe#evt_1"]);
    assert!(answer(14).is_empty());
    assert_eq!(seen[12].1[0]["object_id"], "pi_evt_3");
    let all = &seen[0].1;
    assert_eq!(all[0]["reason"], "caught_up: 2 pages, 10 items, 3 new");
    assert_eq!(all[1]["reason"], "bad_signature");
    assert_eq!(all[3]["status"], "dead");
    assert_eq!(all[3]["reason"], "target bus answered 400");
    assert_eq!(all[5]["attempts"], 1, "a number: {}", all[5]);
    assert!(all[0]["attempts"].is_null());

    // One event's story, found by its provider event id, with what arrived for it later.
    let mut duplicate = entry("d-1", "stripe", TrailStatus::Duplicate, "", t0 + 6_000);
    duplicate.dedupe_key = Some("stripe#evt_1".into());
    duplicate.reason = None;
    let store =
        EmbeddedStore::open(&dir.path().join(DB_FILE), Arc::new(SystemClock)).expect("store");
    store.ledger().append(&duplicate).await.expect("append");
    table.append(&duplicate).await.expect("append");
    let show = ["show", "evt_1", "--json"];
    let here = Command::new(INLET)
        .args(["events"])
        .args(show)
        .arg("--config")
        .arg(dir.path().join("inlet.toml"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run inlet");
    let here = lines(&here);
    let mut aws_args = vec!["events"];
    aws_args.extend(show);
    let there = lines(&inlet_aws(
        &aws::endpoint(),
        (urls.0, urls.1, table.table()),
        &aws_args,
    ));
    assert_eq!(here, there);
    let story = &here[0];
    assert_eq!(story["event"]["dedupe_key"], "stripe#evt_1");
    assert_eq!(story["event"]["entity"], "cus_1");
    assert_eq!(story["trail"][0]["status"], "duplicate");
    assert!(story["dead_letter"].is_null());

    // The same story from the payment id a support ticket quotes, on both stores.
    let by_payment = ["events", "show", "pi_evt_1", "--json"];
    let there = lines(&inlet_aws(
        &aws::endpoint(),
        (urls.0, urls.1, table.table()),
        &by_payment,
    ));
    assert_eq!(&there[0], story);
}

#[test]
fn an_unknown_source_is_an_error_with_the_closest_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("inlet.toml"), CONFIG).expect("config");
    let out = local(dir.path(), &["--source", "strpe"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("did you mean \"stripe\""), "{stderr}");
}

/// `--follow` prints what is there, then each new row and each change of an event's status
/// once, as the store changes under it.
#[tokio::test]
async fn follow_prints_each_new_row_and_each_status_change_once() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("inlet.toml"), CONFIG).expect("config");
    let store =
        EmbeddedStore::open(&dir.path().join(DB_FILE), Arc::new(SystemClock)).expect("store");
    let ledger = store.ledger();
    let now = || inlet::ports::Clock::now_ms(&SystemClock);
    let t0 = now();
    ledger
        .begin(&begin(
            "stripe#evt_old",
            "stripe",
            "evt_old",
            "payment_intent.succeeded",
            "cus_1",
            t0,
        ))
        .await
        .expect("begin");

    let mut child = Command::new(INLET)
        .args([
            "events", "--follow", "--json", "--every", "100ms", "--config",
        ])
        .arg(dir.path().join("inlet.toml"))
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn inlet");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx
                .send(serde_json::from_str(&line).expect("a JSON line"))
                .is_err()
            {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("a line within 10 s")
    };
    let what = |v: &serde_json::Value| {
        (
            v["dedupe_key"].as_str().unwrap_or_default().to_owned(),
            v["status"].as_str().unwrap_or_default().to_owned(),
        )
    };
    assert_eq!(
        what(&next()),
        ("stripe#evt_old".into(), "in_progress".into())
    );

    ledger
        .begin(&begin(
            "stripe#evt_new",
            "stripe",
            "evt_new",
            "charge.refunded",
            "cus_2",
            now(),
        ))
        .await
        .expect("begin");
    assert_eq!(
        what(&next()),
        ("stripe#evt_new".into(), "in_progress".into())
    );
    ledger
        .complete(
            "stripe#evt_new",
            now(),
            now() + DAY_MS,
            &BTreeSet::from(["bus".to_string()]),
        )
        .await
        .expect("complete");
    let done = next();
    assert_eq!(what(&done), ("stripe#evt_new".into(), "dispatched".into()));
    assert_eq!(done["delivered"], serde_json::json!(["bus"]));
    ledger
        .append(&entry(
            "f-1",
            "stripe",
            TrailStatus::Refused,
            "bad_signature",
            now(),
        ))
        .await
        .expect("append");
    let refused = next();
    assert_eq!(refused["status"], "refused");
    assert_eq!(refused["reason"], "bad_signature");
    // Nothing was printed twice: the next line is the next change, not a repeat.
    ledger
        .append(&entry(
            "f-2",
            "backoffice",
            TrailStatus::Refused,
            "unknown_key",
            now(),
        ))
        .await
        .expect("append");
    assert_eq!(next()["reason"], "unknown_key");
    child.kill().expect("kill");
    let _ = child.wait();
}
