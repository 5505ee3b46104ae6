//! The raw archive (issue 19): an archiving source keeps every verified request byte-exact
//! in the blob store, once per request, linked from each event split from it, without its
//! credentials; `inlet events show --request-out` writes it back out and `inlet verify
//! --archived` re-checks its signature offline.

use std::sync::Arc;

use inlet::ingest::WebhookRequest;
use inlet::ports::{Clock, Ledger, SystemClock};

use crate::cli::{inlet, key_of, write_config};
use crate::pipeline::{sample_body, signed_headers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiving_source_keeps_each_verified_request_and_the_cli_reads_and_rechecks_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path());
    let text = std::fs::read_to_string(&config_path)
        .expect("read config")
        .replacen("[settings]\n", "[settings]\narchive = true\n", 1);
    std::fs::write(&config_path, text).expect("write config");
    let config = config_path.to_str().expect("utf8");
    let cfg = inlet::config::load_file(&config_path, &|_: &str| None).expect("config");
    let clock = Arc::new(SystemClock);
    let stack =
        inlet::local::LocalStack::open(cfg.clone(), &dir.path().join("data"), clock.clone())
            .expect("stack");
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
        let resp = stack
            .ingest
            .handle(WebhookRequest {
                method: "POST".into(),
                path: format!("/webhooks/{source}"),
                headers: headers.clone(),
                body: body.clone(),
                source_ip: Some([198, 51, 100, 7].into()),
                ..Default::default()
            })
            .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        sent.push((source, body, headers, resp.body));
    }
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
        let doc = inlet::archive::read_key(&*blobs, &request_key(key).await)
            .await
            .expect("reads back");
        let (source, body, headers, _) = &sent[i];
        assert!(
            doc.body_bytes().expect("body") == *body,
            "{source}: byte-exact"
        );
        assert_eq!(doc.source, *source);
        assert_eq!(doc.caller_ip.as_deref(), Some("198.51.100.7"));
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
