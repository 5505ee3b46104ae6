//! The raw archive (issue 19): an archiving source keeps every verified request byte-exact
//! in the blob store, once per request, linked from each event split from it, without its
//! credentials; `inlet events show --request-out` writes it back out and `inlet verify
//! --archived` re-checks its signature offline.

use std::sync::Arc;

use inlet::config::Config;
use inlet::ingest::WebhookRequest;
use inlet::local::LocalStack;
use inlet::ports::{Clock, Ledger, SystemClock};
use inlet::request::Headers;

use crate::cli::{inlet, key_of, write_config};
use crate::pipeline::{sample_body, signed_headers};

/// A dev stack in `dir` whose `[settings]` gain `settings` (after `archive = true`) and whose
/// config ends with `tail`: the config's path, the config and the stack on it.
pub(crate) fn archiving(
    dir: &std::path::Path,
    settings: &str,
    tail: &str,
) -> (std::path::PathBuf, Config, LocalStack) {
    let config_path = write_config(dir);
    let text = std::fs::read_to_string(&config_path)
        .expect("read config")
        .replacen(
            "[settings]\n",
            &format!("[settings]\narchive = true\n{settings}"),
            1,
        )
        + tail;
    std::fs::write(&config_path, text).expect("write config");
    let cfg = inlet::config::load_file(&config_path, &|_: &str| None).expect("config");
    let stack =
        LocalStack::open(cfg.clone(), &dir.join("data"), Arc::new(SystemClock)).expect("stack");
    (config_path, cfg, stack)
}

/// `body` signed for `source` with `headers`, from 198.51.100.7, through the stack's
/// ingest: its answer's body once it is 200.
pub(crate) async fn accept(
    stack: &LocalStack,
    source: &str,
    headers: Headers,
    body: &[u8],
) -> String {
    let resp = stack
        .ingest
        .handle(WebhookRequest {
            method: "POST".into(),
            path: format!("/webhooks/{source}"),
            headers,
            body: body.to_vec(),
            source_ip: Some([198, 51, 100, 7].into()),
            ..Default::default()
        })
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiving_source_keeps_each_verified_request_and_the_cli_reads_and_rechecks_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config_path, cfg, stack) = archiving(dir.path(), "", "");
    let config = config_path.to_str().expect("utf8");
    let clock = SystemClock;
    let blobs = stack.blobs.clone().expect("blob store");

    // A claim-checked Stripe event, a Meta batch of three, and Telegram (whose scheme sends
    // its secret as a header).
    let mut sent = Vec::new();
    for (source, body) in [
        (
            "stripe",
            crate::large::stripe_body("evt_archived", 400 * 1024),
        ),
        ("meta", crate::large::meta_body(3)),
        ("telegram", sample_body("telegram", 4242)),
    ] {
        let headers = signed_headers(&cfg, source, &body, clock.now_ms(), "delivery-1");
        let answer = accept(&stack, source, headers.clone(), &body).await;
        sent.push((source, body, headers, answer));
    }
    // A captured request replayed (the same bytes and headers from elsewhere): a duplicate,
    // and the same archived document, not a second one.
    let (_, body, headers, _) = &sent[0];
    accept(&stack, "stripe", headers.clone(), body).await;
    let documents = std::fs::read_dir(dir.path().join("data/blobs/requests"))
        .expect("requests")
        .count();
    assert_eq!(documents, 3, "one document per distinct request");
    crate::pipeline::drain(&stack).await;

    let ledger = stack.store.ledger();
    let request_key = |key: String| {
        let ledger = &ledger;
        async move {
            let record = ledger.get(&key).await.expect("get").expect("record");
            record.summary.request_key.expect("an archived request")
        }
    };
    let stripe_key = key_of(&sent[0].3);
    let telegram_key = key_of(&sent[2].3);
    let meta: serde_json::Value = serde_json::from_str(&sent[1].3).expect("json");
    let meta_keys: Vec<String> = meta["dedupe_keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("key").to_owned())
        .collect();
    assert_eq!(meta_keys.len(), 3);
    let mut meta_requests = Vec::new();
    for k in &meta_keys {
        meta_requests.push(request_key(k.clone()).await);
    }
    meta_requests.dedup();
    assert_eq!(
        meta_requests.len(),
        1,
        "one archived request for the whole batch"
    );

    for (i, key) in [
        stripe_key.clone(),
        meta_keys[0].clone(),
        telegram_key.clone(),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, doc) = inlet::archive::read_key(&*blobs, &request_key(key).await)
            .await
            .expect("reads back");
        let (source, body, headers, _) = &sent[i];
        assert!(
            doc.body_bytes().expect("body") == *body,
            "{source}: byte-exact"
        );
        assert_eq!(doc.source, *source);
        for (name, value) in headers.iter() {
            let kept = doc.headers.get(name);
            if inlet::archive::is_credential(name) {
                assert!(kept.is_none(), "{source}: credential {name} archived");
                let stored = std::fs::read_dir(dir.path().join("data/blobs/requests"))
                    .expect("requests")
                    .map(|f| std::fs::read(f.expect("file").path()).expect("read"))
                    .any(|b| String::from_utf8_lossy(&b).contains(value));
                assert!(
                    !stored,
                    "{source}: the credential's value is in the archive"
                );
            } else {
                assert_eq!(kept.map(String::as_str), Some(value), "{source}: {name}");
            }
        }
    }

    // The CLI: the story names the archive, the body comes back byte-exact, the signature
    // re-checks offline; a token scheme cannot, and says why.
    let out_file = dir.path().join("request.bin");
    let out = inlet(&[
        "events",
        "show",
        "--config",
        config,
        &stripe_key,
        "--request-out",
        out_file.to_str().expect("utf8"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("archived:  requests/"), "{stdout}");
    assert!(std::fs::read(&out_file).expect("written") == sent[0].1);

    let out = inlet(&["verify", "--archived", &stripe_key, "--config", config]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("verdict: VALID"), "{stdout}");

    let out = inlet(&["verify", "--archived", &telegram_key, "--config", config]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("keeps no credential headers"), "{stdout}");

    // A damaged archive is refused, not re-checked.
    let key = request_key(stripe_key.clone()).await;
    std::fs::write(dir.path().join("data/blobs").join(&key), b"{}").expect("damage");
    let out = inlet(&["verify", "--archived", &stripe_key, "--config", config]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The TOML of an HTTP target at `addr` that no route names: where redeliveries go.
fn fixed_target(addr: std::net::SocketAddr) -> String {
    format!(
        "\n[[targets]]\nid = \"fixed\"\nkind = \"http\"\nurl = \"http://{addr}/hook\"\n\
         secret = \"literal:{}\"\nallow_private = [\"127.0.0.1/32\"]\ntimeout_seconds = 0.9\n",
        crate::support::receiver::SECRET
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_sends_each_archived_event_of_the_window_once_per_run_and_the_trail_shows_it() {
    use crate::support::receiver::{reply, start_receiver};

    let (addr, rx) = start_receiver().await;
    // The second event's first redelivery fails: the run reports it, the rerun sends it.
    rx.rule(|id, earlier| {
        if id == "stripe#evt_rd_2" && earlier == 0 {
            reply(500)
        } else {
            reply(200)
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let (config_path, cfg, stack) = archiving(dir.path(), "", &fixed_target(addr));
    let config = config_path.to_str().expect("utf8");
    let clock = SystemClock;

    // Three Stripe events (one of them claim-checked) and one refund; a GitHub event beside.
    let body = |id: &str, kind: &str, pad: usize| {
        serde_json::json!({"id": id, "object": "event", "type": kind, "created": 1_767_225_600,
            "data": {"object": {"id": format!("pi_{id}"), "object": "payment_intent",
                "amount": 100, "currency": "usd", "description": "x".repeat(pad)}}})
        .to_string()
        .into_bytes()
    };
    let sent = [
        ("stripe", body("evt_rd_1", "payment_intent.succeeded", 10)),
        (
            "stripe",
            body("evt_rd_2", "payment_intent.succeeded", 300 * 1024),
        ),
        ("stripe", body("evt_rd_3", "payment_intent.succeeded", 10)),
        ("stripe", body("evt_rd_4", "charge.refunded", 10)),
        ("github", sample_body("github", 4343)),
    ];
    for (source, body) in &sent {
        let headers = signed_headers(
            &cfg,
            source,
            body,
            clock.now_ms(),
            &uuid::Uuid::new_v4().to_string(),
        );
        accept(&stack, source, headers, body).await;
    }
    crate::pipeline::drain(&stack).await;
    assert!(rx.seen().is_empty(), "the fixed target is in no route");
    drop(stack);

    let redeliver = |extra: &[&str]| {
        let mut args = vec![
            "redeliver",
            "--config",
            config,
            "--source",
            "stripe",
            "--since",
            "1h",
            "--type",
            "payment.succeeded",
            "--to",
            "fixed",
        ];
        args.extend_from_slice(extra);
        inlet(&args)
    };
    let dry = redeliver(&["--dry-run"]);
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(stdout.contains("would redeliver 3 of 3"), "{stdout}");
    assert!(rx.seen().is_empty(), "a dry run sends nothing");

    // The first run: two go, one fails (exit 1, named).
    let first = redeliver(&[]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("redelivered 2 of 3"), "{stdout}");
    assert!(stdout.contains("1 failed"), "{stdout}");
    // The same command again: only the one that failed.
    let second = redeliver(&[]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(stdout.contains("redelivered 1 of 3"), "{stdout}");
    assert!(stdout.contains("2 already sent by this run"), "{stdout}");
    // Once more: nothing left for this run.
    let third = redeliver(&[]);
    assert!(String::from_utf8_lossy(&third.stdout).contains("redelivered 0 of 3"));

    let accepted: Vec<_> = rx.seen().into_iter().filter(|s| s.accepted()).collect();
    let mut keys: Vec<_> = accepted.iter().map(|s| s.webhook_id.clone()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["stripe#evt_rd_1", "stripe#evt_rd_2", "stripe#evt_rd_3"]
    );
    for s in &accepted {
        assert!(s.verified, "signed as the target signs");
        let env = inlet::envelope::Envelope::from_json(std::str::from_utf8(&s.body).expect("utf8"))
            .expect("an envelope");
        let original = &sent[match env.dedupe_key.as_str() {
            "stripe#evt_rd_1" => 0,
            "stripe#evt_rd_2" => 1,
            _ => 2,
        }]
        .1;
        assert!(env.body_bytes().expect("body") == *original, "byte-exact");
        assert!(env.replay.is_some(), "marked as a redelivery");
        assert!(env.request_ref.is_some());
    }

    // The trail: one `redelivered` entry per event and run.
    let out = inlet(&[
        "events",
        "--config",
        config,
        "--status",
        "redelivered",
        "--json",
        "--limit",
        "0",
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.to_string().contains("inlet redeliver to fixed")),
        "{lines:?}"
    );

    // A new run sends the window again, once.
    let other = redeliver(&["--run", "after-the-fix"]);
    assert!(String::from_utf8_lossy(&other.stdout).contains("redelivered 3 of 3"));
    assert_eq!(rx.seen().iter().filter(|s| s.accepted()).count(), 6);
}

#[tokio::test]
async fn the_local_blob_folder_keeps_each_kind_for_its_configured_days() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = "blob_retention_days = 2\narchive_retention_days = 5\n";
    let (_, cfg, stack) = archiving(dir.path(), settings, "");
    let body = crate::large::stripe_body("evt_swept", 300 * 1024);
    let headers = signed_headers(&cfg, "stripe", &body, SystemClock.now_ms(), "d");
    accept(&stack, "stripe", headers, &body).await;
    let blobs = dir.path().join("data/blobs");
    let files = |kind: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(blobs.join(kind))
            .map(|d| d.map(|f| f.expect("entry").path()).collect())
            .unwrap_or_default()
    };
    assert_eq!((files("bodies").len(), files("requests").len()), (1, 1));
    let age = |path: &std::path::Path, days: u64| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open")
            .set_modified(
                std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400),
            )
            .expect("mtime");
    };
    // Three days old: past the bodies' two days, inside the requests' five.
    age(&files("bodies")[0], 3);
    age(&files("requests")[0], 3);
    assert_eq!(stack.sweep_blobs().expect("sweep"), (1, 0));
    age(&files("requests")[0], 6);
    assert_eq!(stack.sweep_blobs().expect("sweep"), (0, 1));
    assert_eq!((files("bodies").len(), files("requests").len()), (0, 0));
}
