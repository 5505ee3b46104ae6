//! `inlet cursor`: a poll source's cursor shown and reset through the real binary, on the
//! local store and on a deployed stack's table (moto), the reset asked for, refused while a
//! run holds the lease, and recorded in the trail.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use inlet::adapters::embedded::EmbeddedStore;
use inlet::local::DB_FILE;
use inlet::ports::{Acquire, Clock, PollStore, SystemClock};

use crate::dlq_aws::inlet_aws;
use crate::support::aws;

const INLET: &str = env!("CARGO_BIN_EXE_inlet");
pub(crate) const LEASE_MS: i64 = 60_000;
pub(crate) const CURSOR: &str = r#"{"offset":4242}"#;

pub(crate) const CONFIG: &str = r#"[settings]
environment = "local"

[[sources]]
id = "tg"
provider = "telegram"
webhooks = false
[sources.poll]
kind = "telegram_updates"
every = "1m"
secrets = ["literal:123456:cursor-test-token"]

[[sources]]
id = "stripe"
provider = "stripe"
secrets = ["literal:whsec_cursor_test_0123456789"]

[[targets]]
id = "out"
kind = "jsonl"
path = "events.jsonl"

[[routes]]
sources = ["*"]
targets = ["out"]
"#;

/// A run of `holder` that stored CURSOR and (with `release`) gave its lease back.
pub(crate) async fn polled(store: &dyn PollStore, holder: &str, release: bool) -> u64 {
    let now = SystemClock.now_ms();
    let Acquire::Acquired(s) = store
        .acquire("tg", holder, now, now + LEASE_MS)
        .await
        .expect("acquire")
    else {
        panic!("the lease is free");
    };
    let v = store
        .advance("tg", holder, s.version, CURSOR, now, now + LEASE_MS)
        .await
        .expect("advance");
    if release {
        store.release("tg", holder).await.expect("release");
    }
    v
}

fn local(dir: &Path, args: &[&str]) -> Output {
    Command::new(INLET)
        .arg("cursor")
        .args(args)
        .arg("--config")
        .arg(dir.join("inlet.toml"))
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run inlet")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "inlet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_cursor_is_shown_and_reset_once_confirmed_between_runs_and_the_reset_is_in_the_trail() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("inlet.toml"), CONFIG).expect("config");
    let store =
        EmbeddedStore::open(&dir.path().join(DB_FILE), Arc::new(SystemClock)).expect("store");
    let ledger = store.ledger();

    let never = json(&local(dir.path(), &["tg", "--json"]));
    assert!(never["state"].is_null(), "{never}");
    assert!(refused(&local(dir.path(), &["tg", "--reset", "--yes"])).contains("never been polled"));
    assert!(refused(&local(dir.path(), &["stripe"])).contains("no [sources.stripe.poll] table"));
    assert!(refused(&local(dir.path(), &["tgg"])).contains("did you mean \"tg\""));

    // A run in progress: shown with its lease, and no reset under it.
    let v = polled(&ledger, "run-1", false).await;
    let shown = json(&local(dir.path(), &["tg", "--json"]));
    assert_eq!(shown["state"]["cursor"], CURSOR);
    assert_eq!(shown["state"]["version"], v);
    assert_eq!(shown["state"]["lease_holder"], "run-1");
    let why = refused(&local(dir.path(), &["tg", "--reset", "--yes"]));
    assert!(why.contains("run-1") && why.contains("lease"), "{why}");
    ledger.release("tg", "run-1").await.expect("release");

    // Without a terminal and without --yes, nobody confirmed: nothing changes.
    let why = refused(&local(dir.path(), &["tg", "--reset"]));
    assert!(why.contains("--yes"), "{why}");
    let text = local(dir.path(), &["tg"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("offset") && text.contains("lease:    free"),
        "{text}"
    );

    let reset = json(&local(dir.path(), &["tg", "--reset", "--yes", "--json"]));
    assert_eq!(reset["before"]["cursor"], CURSOR);
    assert!(reset["after"]["cursor"].is_null(), "{reset}");
    assert_eq!(reset["after"]["version"], v + 1);
    let state = ledger.state("tg").await.expect("state").expect("row");
    assert_eq!((state.cursor, state.version), (None, v + 1));

    let trail = Command::new(INLET)
        .args(["events", "--json", "--status", "cursor_reset", "--config"])
        .arg(dir.path().join("inlet.toml"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run inlet");
    let line: serde_json::Value = serde_json::from_slice(&trail.stdout).expect("one trail entry");
    assert_eq!(line["source"], "tg");
    let reason = line["reason"].as_str().expect("reason");
    assert!(
        reason.contains(&format!("from version {v}")) && reason.contains("4242"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_deployed_stacks_cursor_is_reset_the_same_way() {
    let table = aws::ledger().await;
    let queues = aws::queues_with_dlq(5).await;
    let urls = (
        queues.main.queue_url(),
        queues.dlq.queue_url(),
        table.table(),
    );
    let v = polled(&table, "lambda-run", true).await;

    let shown = json(&inlet_aws(
        &aws::endpoint(),
        urls,
        &["cursor", "tg", "--json"],
    ));
    assert_eq!(shown["state"]["cursor"], CURSOR);
    assert!(
        shown["state"]["lease_holder"].is_null(),
        "released: {shown}"
    );

    let reset = json(&inlet_aws(
        &aws::endpoint(),
        urls,
        &["cursor", "tg", "--reset", "--yes", "--json"],
    ));
    assert!(reset["after"]["cursor"].is_null(), "{reset}");
    assert!(reset["trail_entry"].is_string(), "{reset}");
    let state = table.state("tg").await.expect("state").expect("row");
    assert_eq!((state.cursor, state.version), (None, v + 1));
    let trail = inlet_aws(
        &aws::endpoint(),
        urls,
        &["events", "--json", "--status", "cursor_reset"],
    );
    let line: serde_json::Value = serde_json::from_slice(&trail.stdout).expect("one entry");
    assert_eq!(line["status"], "cursor_reset");
}
