//! The webhook URL as an attacker sees it, with no secret or with one captured request: what
//! each attack may cost, and that it gets the same vague answer as every other forgery.
//! Bounds on time are generous (a loaded debug build), far below what the attacks cost
//! without their guards (seconds to minutes).

use std::time::{Duration, Instant};

use inlet::envelope::Envelope;
use inlet::ports::Clock;
use inlet::request::Headers;
use inlet::worker::Outcome;

use crate::pipeline::{sample_body, signed_headers, Running};

/// A Stripe event of exactly `len` bytes: the filler, `unit` repeated, sits in one string.
fn stripe_body(id: &str, len: usize, unit: &[u8]) -> Vec<u8> {
    let mut body =
        format!(r#"{{"id":"{id}","object":"event","type":"charge.succeeded","pad":""#).into_bytes();
    while body.len() + unit.len() + 2 <= len {
        body.extend_from_slice(unit);
    }
    body.resize(len - 2, b'a');
    body.extend_from_slice(b"\"}");
    body
}

/// `headers` with `name` set to `value`.
fn header_with(headers: &Headers, name: &str, value: String) -> Headers {
    let mut out = Headers::new();
    for (k, v) in headers.iter() {
        if k != name {
            out.insert(k, v.to_string());
        }
    }
    out.insert(name, value);
    out
}

/// 2,000 candidate signatures on a 260 KB body cost 650 times one entry when each was checked
/// with its own HMAC. Now the list is refused past a few entries, and an HMAC is computed
/// once per key however many candidates there are.
#[tokio::test]
async fn a_flood_of_candidate_signatures_costs_one_pass_and_blocks_no_one() {
    let run = Running::start(|doc| doc.settings.max_body_bytes = 300 * 1024).await;
    let now = run.clock.now_ms();
    let body = stripe_body("evt_flood", 260 * 1024, b"a");
    let good = signed_headers(&run.stack.config, "stripe", &body, now, "d");
    let (t, good_v1) = good
        .get("stripe-signature")
        .and_then(|v| v.split_once(",v1="))
        .expect("t=…,v1=…");
    let fake = "0".repeat(64);
    let flood = |n: usize| {
        let mut value = t.to_string();
        for _ in 0..n {
            value.push_str(&format!(",v1={fake}"));
        }
        value
    };

    // Three attackers at once, and a real webhook beside them.
    let started = Instant::now();
    let attack = || {
        let h = header_with(&good, "stripe-signature", flood(2000));
        let body = body.clone();
        let run = &run;
        async move { run.post("stripe", &h, &body).await }
    };
    let legit = async {
        let b = sample_body("stripe", 1);
        let at = Instant::now();
        let answer = run.post_signed("stripe", &b).await;
        (answer, at.elapsed())
    };
    let (a, b, c, ((status, answer), legit_took)) =
        tokio::join!(attack(), attack(), attack(), legit);
    let answers = [a, b, c];
    for (status, answer) in answers {
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"], "unverified");
    }
    assert_eq!(status, 200, "{answer}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "three 2,000-candidate requests took {took:?}"
    );
    assert!(
        legit_took < Duration::from_secs(2),
        "a real webhook waited {legit_took:?} behind them"
    );

    // A rotation's few candidates still verify when the right one is last…
    let eight = format!("{},v1={good_v1}", flood(7));
    let h = header_with(&good, "stripe-signature", eight);
    let (status, answer) = run.post("stripe", &h, &body).await;
    assert_eq!(status, 200, "{answer}");
    // …but not past the bound, even with the right one among them.
    let nine = format!("{},v1={good_v1}", flood(8));
    let h = header_with(&good, "stripe-signature", nine);
    let (status, _) = run.post("stripe", &h, &body).await;
    assert_eq!(status, 401);
    let reasons = run.refusal_reasons().await;
    assert!(
        reasons.iter().any(|r| r == "malformed_signature"),
        "{reasons:?}"
    );
}

/// Paddle and Standard Webhooks take lists of signatures too (the generic scheme's list
/// formats: its unit tests).
#[tokio::test]
async fn every_signature_list_is_bounded() {
    let run = Running::start(|_| {}).await;
    let now = run.clock.now_ms();
    // Eight wrong entries, then the right one: nine in all.
    type Pad = fn(&str) -> String;
    let cases: [(&str, &str, Pad); 2] = [
        ("paddle", "paddle-signature", |good| {
            let (ts, h1) = good.split_once(";h1=").expect("ts=…;h1=…");
            format!("{ts}{};h1={h1}", ";h1=00".repeat(8))
        }),
        ("svix", "svix-signature", |good| {
            format!("{}{good}", "v1,AAAA ".repeat(8))
        }),
    ];
    for (source, header, flood) in cases {
        let provider = &run.stack.config.source(source).expect("source").provider;
        let body = provider.sample_body("listed", now);
        let good = signed_headers(&run.stack.config, source, &body, now, "d-7");
        let value = good.get(header).expect("signature header").to_string();
        let h = header_with(&good, header, flood(&value));
        let (status, answer) = run.post(source, &h, &body).await;
        assert_eq!(status, 401, "{source}: {answer}");
        let (status, answer) = run.post(source, &good, &body).await;
        assert_eq!(status, 200, "{source}: {answer}");
    }
}

/// Missing, garbled, wrong, stale and future signatures: one answer, byte for byte. The
/// reason is in the trail.
#[tokio::test]
async fn every_signature_failure_gets_the_same_answer() {
    let run = Running::start(|_| {}).await;
    let now = run.clock.now_ms();
    let body = sample_body("stripe", 3);
    let good = signed_headers(&run.stack.config, "stripe", &body, now, "d");
    let value = good.get("stripe-signature").expect("header").to_string();
    let stale = signed_headers(&run.stack.config, "stripe", &body, now - 3_600_000, "d");
    let future = signed_headers(&run.stack.config, "stripe", &body, now + 3_600_000, "d");
    let wrong = value.replace("v1=", "v1=ff");
    let attempts = [
        Headers::new(),
        header_with(&good, "stripe-signature", "garbage".into()),
        header_with(&good, "stripe-signature", wrong),
        stale,
        future,
    ];
    let mut answers = Vec::new();
    for h in &attempts {
        let mut req = reqwest::Client::new()
            .post(format!("http://{}/webhooks/stripe", run.addr))
            .body(body.clone());
        for (k, v) in h.iter() {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("post");
        let status = resp.status().as_u16();
        answers.push((status, resp.text().await.expect("text")));
    }
    assert_eq!(answers[0].0, 401);
    for a in &answers[1..] {
        assert_eq!(a, &answers[0], "every failure answers alike");
    }
    let mut reasons = run.refusal_reasons().await;
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "malformed_signature",
            "missing_signature",
            "signature_mismatch",
            "timestamp_in_future",
            "timestamp_too_old"
        ]
    );
}

/// Methods are case-sensitive: `post` is not POST.
#[tokio::test]
async fn a_method_in_the_wrong_case_is_not_post() {
    let run = Running::start(|_| {}).await;
    let body = sample_body("stripe", 4);
    let h = signed_headers(&run.stack.config, "stripe", &body, run.clock.now_ms(), "d");
    for method in ["post", "Post"] {
        let mut req = reqwest::Client::new()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                format!("http://{}/webhooks/stripe", run.addr),
            )
            .body(body.clone());
        for (k, v) in h.iter() {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 405, "{method}");
        assert_eq!(
            resp.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some("POST")
        );
    }
    assert!(run.drain().await.is_empty(), "nothing queued");
}

/// A dual-stack listener sees an IPv4 caller as `::ffff:a.b.c.d`; the allow-list names the
/// IPv4 address.
#[tokio::test]
async fn an_ipv4_caller_on_a_dual_stack_socket_matches_its_ipv4_range() {
    let run = Running::start_at("[::]:0", |doc| {
        for s in doc.sources.iter_mut() {
            s.allow_cidrs = match s.id.as_str() {
                "stripe" => vec!["127.0.0.1/32".into()],
                "github" => vec!["10.0.0.0/8".into()],
                _ => continue,
            };
        }
    })
    .await;
    let port = run.addr.port();
    let send = |source: &'static str, n: u64| {
        let cfg = &run.stack.config;
        let body = sample_body(source, n);
        let h = signed_headers(cfg, source, &body, run.clock.now_ms(), &format!("d-{n}"));
        async move {
            let mut req = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/webhooks/{source}"))
                .body(body);
            for (k, v) in h.iter() {
                req = req.header(k, v);
            }
            req.send().await.expect("post").status().as_u16()
        }
    };
    assert_eq!(send("stripe", 1).await, 200);
    assert_eq!(
        send("github", 2).await,
        403,
        "and other ranges still refuse"
    );
}

/// GitHub, Shopify and Razorpay sign the body, not the delivery id: a captured delivery sent
/// again under a new id is the same event.
#[tokio::test]
async fn a_signed_body_resent_under_a_new_delivery_id_is_a_duplicate() {
    let run = Running::start(|_| {}).await;
    let now = run.clock.now_ms();
    for source in ["github", "shopify", "razorpay"] {
        let provider = &run.stack.config.source(source).expect("source").provider;
        let body = provider.sample_body("replayed", now);
        let first = signed_headers(&run.stack.config, source, &body, now, "delivery-a");
        let (status, answer) = run.post(source, &first, &body).await;
        assert_eq!(status, 200, "{source}: {answer}");
        let key = answer["dedupe_key"].as_str().expect("key").to_string();
        assert_eq!(
            run.drain().await,
            vec![Outcome::Dispatched {
                dedupe_key: key.clone()
            }]
        );
        // The attacker keeps the body and its signature and mints new ids.
        for minted in ["delivery-b", "delivery-c"] {
            let h = signed_headers(&run.stack.config, source, &body, now, minted);
            for (k, v) in h.iter() {
                assert!(
                    first.get(k) == Some(v) || v.contains(minted),
                    "{source}: {k} changed with the id, so it needs the secret"
                );
            }
            let (status, answer) = run.post(source, &h, &body).await;
            assert_eq!(status, 200, "{source}: {answer}");
            assert_eq!(answer["dedupe_key"], key.as_str(), "{source}");
            assert_eq!(
                run.drain().await,
                vec![Outcome::Duplicate {
                    dedupe_key: key.clone()
                }],
                "{source}: {minted}"
            );
        }
        let written = crate::pipeline::jsonl_keys(&run.jsonl());
        assert_eq!(written.iter().filter(|k| **k == key).count(), 1, "{source}");
    }
}

/// At exactly the configured limit, bodies that escape worst (backslashes, quotes, control
/// bytes, characters SQS refuses, bytes that are not UTF-8) are accepted and dispatched
/// byte-exact. Before, escaping doubled or sextupled them past the queue's 1 MiB and each
/// retry was answered 503 until the provider gave up.
#[tokio::test]
async fn bodies_at_the_limit_that_escape_worst_are_accepted_and_dispatched_byte_exact() {
    let limit = inlet::config::MAX_BODY_BYTES;
    let run = Running::start(|doc| doc.settings.max_body_bytes = limit).await;
    let fill = |unit: &[u8]| {
        let mut b = unit.repeat(limit / unit.len());
        b.resize(limit, b'x');
        b
    };
    let mut bodies = vec![
        ("github", fill(b"\\")),
        ("github", fill(b"\"")),
        ("github", fill(b"\x01")),
        ("github", fill(b"\xff")),
        ("github", fill("\u{FFFF}".as_bytes())),
        ("github", fill(b"\n")),
    ];
    // Stripe events whose JSON is escaped backslashes, or escaped newlines, end to end.
    bodies.push(("stripe", stripe_body("evt_backslashes", limit, b"\\\\")));
    bodies.push(("stripe", stripe_body("evt_newlines", limit, b"\\n")));
    for (n, (source, body)) in bodies.iter().enumerate() {
        assert_eq!(body.len(), limit);
        let h = signed_headers(
            &run.stack.config,
            source,
            body,
            run.clock.now_ms(),
            &format!("d-{n}"),
        );
        let (status, answer) = run.post(source, &h, body).await;
        assert_eq!(status, 200, "body {n} ({source}): {answer}");
        let outcomes = run.drain().await;
        assert!(
            matches!(outcomes.as_slice(), [Outcome::Dispatched { .. }]),
            "body {n}: {outcomes:?}"
        );
        let text = std::fs::read_to_string(run.jsonl()).expect("jsonl");
        let env: Envelope =
            serde_json::from_str(text.lines().last().expect("line")).expect("envelope");
        assert_eq!(
            &env.body_bytes().expect("body"),
            body,
            "body {n} byte-exact"
        );
    }
}
