//! The HTTP and SQS targets against real receivers: an axum server on loopback
//! (`support::receiver`) that checks every signature and answers from a script,
//! the embedded queue and the AWS SQS adapter against moto, and one event fanned out to both
//! through the local pipeline.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use inlet::config::{TargetKind, TargetSpec};
use inlet::envelope::{sha256_hex, BodyEncoding, Envelope, VerifiedBy, Via};
use inlet::ports::{Ledger, Queue};
use inlet::targets::http::{HttpTarget, HttpTargetSpec};
use inlet::targets::sqs::{SqsTarget, SqsTargetSpec};
use inlet::targets::{DispatchError, Outgoing, Target};
use inlet::worker::Outcome;

use crate::pipeline::{sample_body, Running};
use crate::support::aws;
use crate::support::receiver::{reply, start_receiver, Reply, SECRET};

/// A credential in a target URL's query; `make test`'s log search looks for it too.
const URL_TOKEN: &str = "url-token-7c1d9e";

fn spec(url: String) -> HttpTargetSpec {
    HttpTargetSpec {
        url,
        secret: "literal:unused".into(),
        timeout_seconds: 5.0,
        max_concurrency: 8,
        allow_private: vec!["127.0.0.1/32".into()],
        headers: [("X-Team".to_owned(), "payments".to_owned())].into(),
        signing_key: None,
    }
}

fn target(mut spec: HttpTargetSpec) -> HttpTarget {
    spec.prepare(SECRET.into()).expect("valid spec");
    HttpTarget::new("hook".into(), &spec).expect("target")
}

fn envelope(n: usize) -> Envelope {
    let body = format!("{{\"id\":\"evt_{n}\"}}");
    Envelope {
        v: 1,
        source: "stripe".into(),
        provider: "stripe".into(),
        via: Via::Webhook,
        dedupe_key: format!("stripe#evt_{n}"),
        provider_event_id: Some(format!("evt_{n}")),
        event_type: Some("payment_intent.succeeded".into()),
        canonical_type: Some("payment.succeeded".into()),
        entity: None,
        object_id: None,
        amount: Some(2000),
        currency: Some("USD".into()),
        occurred_at: None,
        received_at: "2026-11-27T00:00:00.000Z".into(),
        verified: VerifiedBy {
            scheme: "stripe_v1".into(),
            key_id: Some("0".into()),
        },
        caller_ip: None,
        headers: Default::default(),
        body_sha256: sha256_hex(body.as_bytes()),
        body,
        body_encoding: BodyEncoding::Utf8,
        part: None,
        body_ref: None,
        request_ref: None,
        replay: None,
    }
}

/// Deliver decoded envelopes with their JSON, as the worker hands them to a target.
async fn deliver_all(t: &dyn Target, envelopes: &[Envelope]) -> Vec<Result<(), DispatchError>> {
    let json: Vec<String> = envelopes.iter().map(Envelope::to_json).collect();
    let outgoing: Vec<Outgoing> = envelopes
        .iter()
        .zip(&json)
        .map(|(e, j)| Outgoing::new(e, j))
        .collect();
    t.deliver(&outgoing).await
}

async fn deliver_one(t: &HttpTarget, e: &Envelope) -> Result<(), DispatchError> {
    deliver_all(t, std::slice::from_ref(e))
        .await
        .pop()
        .expect("one result")
}

#[tokio::test]
async fn http_target_posts_the_envelope_signed_so_a_standard_webhooks_receiver_verifies_it() {
    let (addr, rx) = start_receiver().await;
    let t = target(spec(format!("http://{addr}/hook")));
    let e = envelope(1);
    assert_eq!(deliver_one(&t, &e).await, Ok(()));
    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].verified, "the signature verifies");
    assert_eq!(seen[0].webhook_id, "stripe#evt_1");
    assert_eq!(seen[0].team.as_deref(), Some("payments"));
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    let got =
        Envelope::from_json(std::str::from_utf8(&seen[0].body).expect("utf8")).expect("envelope");
    assert_eq!(got, e);
}

#[tokio::test]
async fn http_target_500_then_200_is_retryable_then_delivered_under_the_same_webhook_id() {
    let (addr, rx) = start_receiver().await;
    rx.script([reply(500), reply(200)]);
    let t = target(spec(format!("http://{addr}/hook")));
    let e = envelope(2);
    assert!(matches!(
        deliver_one(&t, &e).await,
        Err(DispatchError::Retryable(m)) if m.contains("500")
    ));
    assert_eq!(deliver_one(&t, &e).await, Ok(()));
    let seen = rx.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|s| s.verified && s.webhook_id == "stripe#evt_2"));
}

#[tokio::test]
async fn http_target_429_carries_retry_after_and_400_is_permanent() {
    let (addr, rx) = start_receiver().await;
    rx.script([
        Reply {
            headers: vec![("retry-after", "7".into())],
            ..reply(429)
        },
        reply(503),
        reply(400),
    ]);
    let t = target(spec(format!("http://{addr}/hook")));
    let e = envelope(3);
    let throttled = deliver_one(&t, &e).await.expect_err("429");
    assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
    assert!(!throttled.is_permanent());
    assert!(matches!(
        deliver_one(&t, &e).await,
        Err(DispatchError::Retryable(_))
    ));
    let bad = deliver_one(&t, &e).await.expect_err("400");
    assert!(bad.is_permanent(), "{bad}");
}

#[tokio::test]
async fn http_target_never_follows_a_redirect() {
    let (addr, rx) = start_receiver().await;
    rx.script([Reply {
        headers: vec![("location", format!("http://{addr}/elsewhere"))],
        ..reply(302)
    }]);
    let t = target(spec(format!("http://{addr}/hook")));
    let err = deliver_one(&t, &envelope(4)).await.expect_err("302");
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("302"), "{err}");
    let paths: Vec<String> = rx.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        vec!["/hook".to_owned()],
        "/elsewhere was never asked"
    );
}

#[tokio::test]
async fn http_target_times_out_a_slow_receiver_as_retryable() {
    let (addr, rx) = start_receiver().await;
    rx.script([Reply {
        delay: Duration::from_secs(5),
        ..reply(200)
    }]);
    // A token in the query is a credential: the error (logged, kept in the trail) omits it.
    let mut s = spec(format!("http://{addr}/hook?token={URL_TOKEN}"));
    s.timeout_seconds = 0.3;
    let t = target(s);
    let started = std::time::Instant::now();
    let err = deliver_one(&t, &envelope(5)).await.expect_err("timeout");
    assert!(
        matches!(&err, DispatchError::Retryable(m) if m.contains("timed out")),
        "{err}"
    );
    assert!(!err.to_string().contains(URL_TOKEN), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn http_target_refuses_a_name_that_resolves_to_loopback_unless_allow_listed() {
    let (addr, rx) = start_receiver().await;
    // `localhost` goes through the resolver (a literal address would not).
    let mut refused = spec(format!("https://localhost:{}/hook", addr.port()));
    refused.allow_private.clear();
    let err = deliver_one(&target(refused), &envelope(6))
        .await
        .expect_err("refused");
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("SSRF guard"), "{err}");
    assert!(err.to_string().contains("loopback"), "{err}");
    // Allow-listed elsewhere only: plain http to localhost stays refused.
    let mut elsewhere = spec(format!("http://localhost:{}/hook", addr.port()));
    elsewhere.allow_private = vec!["10.0.0.0/8".into()];
    let err = deliver_one(&target(elsewhere), &envelope(6))
        .await
        .expect_err("refused");
    assert!(err.is_permanent(), "{err}");
    assert!(rx.seen().is_empty(), "no request reached the receiver");

    // Allow-listed: the same name is delivered to (127.0.0.1 kept, ::1 dropped).
    let allowed = spec(format!("http://localhost:{}/hook", addr.port()));
    assert_eq!(deliver_one(&target(allowed), &envelope(6)).await, Ok(()));
    assert_eq!(rx.seen().len(), 1);
}

#[tokio::test]
async fn http_target_keeps_at_most_max_concurrency_requests_in_flight() {
    let (addr, rx) = start_receiver().await;
    rx.script((0..6).map(|_| Reply {
        delay: Duration::from_millis(200),
        ..reply(200)
    }));
    let mut s = spec(format!("http://{addr}/hook"));
    s.max_concurrency = 2;
    let t = target(s);
    let envelopes: Vec<Envelope> = (10..16).map(envelope).collect();
    let results = deliver_all(&t, &envelopes).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(rx.seen().len(), 6);
    assert_eq!(rx.max_in_flight.load(Ordering::SeqCst), 2);
}

async fn forwarded_keys(queue: &dyn Queue, wait: Duration, want: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for _ in 0..15 {
        let batch = queue
            .receive(10, Duration::from_secs(60), wait)
            .await
            .expect("receive");
        for m in batch {
            keys.push(Envelope::from_json(&m.body).expect("envelope").dedupe_key);
        }
        if keys.len() >= want {
            break;
        }
    }
    keys.sort();
    keys
}

#[tokio::test]
async fn sqs_target_forwards_every_envelope_to_an_aws_queue() {
    let client = aws_sdk_sqs::Client::new(&aws::sdk_config().await);
    let url = client
        .create_queue()
        .queue_name(aws::unique_name("inlet-target"))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("url");
    let queue = Arc::new(inlet::adapters::aws::SqsQueue::from_conf(
        &aws::sdk_config().await,
        url.clone(),
    ));
    let t = SqsTarget::new("fwd".into(), queue.clone(), &url);
    let envelopes: Vec<Envelope> = (0..13).map(envelope).collect();
    let results = deliver_all(&t, &envelopes).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut want: Vec<String> = envelopes.iter().map(|e| e.dedupe_key.clone()).collect();
    want.sort();
    assert_eq!(
        forwarded_keys(queue.as_ref(), Duration::from_secs(1), 13).await,
        want
    );
}

#[tokio::test]
async fn sqs_target_to_a_fifo_queue_groups_by_entity_and_dedupes_a_resend() {
    let client = aws_sdk_sqs::Client::new(&aws::sdk_config().await);
    let url = client
        .create_queue()
        .queue_name(format!("{}.fifo", aws::unique_name("inlet-target")))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("create FIFO queue")
        .queue_url
        .expect("url");
    let queue = Arc::new(inlet::adapters::aws::SqsQueue::from_conf(
        &aws::sdk_config().await,
        url.clone(),
    ));
    let t = SqsTarget::new("fwd".into(), queue.clone(), &url);
    let mut e = envelope(1);
    e.entity = Some("wallet_7".into());
    // A retry of the same event inside SQS's 5-minute window is absorbed by the queue.
    for _ in 0..2 {
        let r = deliver_all(&t, std::slice::from_ref(&e)).await;
        assert!(matches!(r.as_slice(), [Ok(())]), "{r:?}");
    }
    let got = client
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
        )
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    let messages = got.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let group = messages[0]
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId))
        .map(String::as_str);
    assert_eq!(group, Some("wallet_7"));
}

#[tokio::test]
async fn sqs_target_to_a_missing_aws_queue_is_retryable() {
    let url = format!(
        "{}/123456789012/{}",
        aws::endpoint(),
        aws::unique_name("nope")
    );
    let queue = Arc::new(inlet::adapters::aws::SqsQueue::from_conf(
        &aws::sdk_config().await,
        url.clone(),
    ));
    let t = SqsTarget::new("fwd".into(), queue, &url);
    let e = envelope(1);
    let r = deliver_all(&t, std::slice::from_ref(&e)).await;
    assert!(
        matches!(r.as_slice(), [Err(DispatchError::Retryable(_))]),
        "{r:?}"
    );
}

#[tokio::test]
async fn one_event_fans_out_to_an_http_and_an_sqs_target_through_the_local_pipeline() {
    let (addr, rx) = start_receiver().await;
    // The first attempt fails at the HTTP target; the retry delivers.
    rx.script([reply(500)]);
    let run = Running::start(|doc| {
        doc.targets.push(TargetSpec {
            id: "hook".into(),
            kind: TargetKind::Http(HttpTargetSpec {
                secret: format!("literal:{SECRET}"),
                ..spec(format!("http://{addr}/hook"))
            }),
        });
        doc.targets.push(TargetSpec {
            id: "fwd".into(),
            kind: TargetKind::Sqs(SqsTargetSpec {
                queue_url: "https://sqs.us-east-1.amazonaws.com/123456789012/forwarded".into(),
            }),
        });
        doc.routes[0].targets.extend(["hook".into(), "fwd".into()]);
    })
    .await;
    let body = sample_body("stripe", 77);
    let (status, answer) = run.post_signed("stripe", &body).await;
    assert_eq!(status, 200, "{answer}");
    let key = answer["dedupe_key"].as_str().expect("key").to_owned();

    let first = run.drain().await;
    assert!(
        matches!(first.as_slice(), [Outcome::Failed { .. }]),
        "{first:?}"
    );
    // The queue shows the message again after its visibility timeout.
    run.clock
        .advance_ms((run.stack.config.settings.visibility_timeout_seconds as i64 + 1) * 1000);
    let second = run.drain().await;
    assert!(
        matches!(second.as_slice(), [Outcome::Dispatched { .. }]),
        "{second:?}"
    );

    let seen = rx.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.verified && s.webhook_id == key));
    let delivered =
        Envelope::from_json(std::str::from_utf8(&seen[1].body).expect("utf8")).expect("envelope");
    assert_eq!(delivered.body.as_bytes(), body.as_slice());

    let forwarded = run.stack.queues.queue("forwarded", None);
    let keys = forwarded_keys(&forwarded, Duration::ZERO, 1).await;
    // The retry went only to the HTTP target: the queue has the event once.
    assert_eq!(keys, vec![key.clone()]);
    assert_eq!(crate::pipeline::jsonl_keys(&run.jsonl()), vec![key]);
}

#[tokio::test]
async fn a_retry_reaches_only_the_http_target_that_failed_through_the_local_pipeline() {
    let (healthy_addr, healthy) = start_receiver().await;
    let (flaky_addr, flaky) = start_receiver().await;
    flaky.script([reply(503), reply(503)]);
    let run = Running::start(|doc| {
        for (id, addr) in [("healthy", healthy_addr), ("flaky", flaky_addr)] {
            doc.targets.push(TargetSpec {
                id: id.into(),
                kind: TargetKind::Http(HttpTargetSpec {
                    secret: format!("literal:{SECRET}"),
                    ..spec(format!("http://{addr}/hook"))
                }),
            });
        }
        doc.routes[0].targets = vec!["healthy".into(), "flaky".into()];
    })
    .await;
    let (status, answer) = run.post_signed("stripe", &sample_body("stripe", 78)).await;
    assert_eq!(status, 200, "{answer}");
    let key = answer["dedupe_key"].as_str().expect("key").to_owned();

    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.extend(run.drain().await);
        // Past the backoff (and the visibility timeout): the message is back.
        run.clock
            .advance_ms((run.stack.config.settings.visibility_timeout_seconds as i64 + 1) * 1000);
    }
    assert!(
        matches!(
            outcomes.as_slice(),
            [Outcome::Failed { error: e1, .. }, Outcome::Failed { .. }, Outcome::Dispatched { .. }]
                if e1.starts_with("target flaky")
        ),
        "{outcomes:?}"
    );
    assert_eq!(
        healthy.seen().len(),
        1,
        "the healthy target got it exactly once"
    );
    let seen = flaky.seen();
    assert_eq!(seen.len(), 3, "the failing one until it took it");
    assert!(seen.iter().all(|s| s.verified && s.webhook_id == key));
    let record = run
        .stack
        .store
        .ledger()
        .get(&key)
        .await
        .expect("get")
        .expect("record");
    assert_eq!(
        record.delivered.into_iter().collect::<Vec<_>>(),
        vec!["flaky".to_owned(), "healthy".to_owned()]
    );
}

#[test]
fn the_docs_targets_example_is_a_valid_config() {
    let page = include_str!("../../docs/targets.md");
    let section = page
        .split("## Configuring targets")
        .nth(1)
        .expect("a Configuring targets section");
    let example = section
        .split("```toml")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a toml example");
    let text = format!(
        "[[sources]]\nid = \"gh\"\nprovider = \"github\"\nsecrets = [\"env:GH\"]\n\
         [[targets]]\nid = \"bus\"\nkind = \"eventbridge\"\n{example}"
    );
    let env = |k: &str| match k {
        "GH" => Some("gh-secret".to_owned()),
        "PAYMENTS_HOOK_SECRET" => Some(SECRET.to_owned()),
        _ => None,
    };
    let doc = inlet::config::ConfigDoc::parse(&text, Some("toml")).expect("parses");
    let cfg = inlet::config::validate(doc, ".".into(), &env).expect("valid");
    assert_eq!(
        cfg.targets_for("gh", &[]),
        vec!["bus", "payments-api", "ledger-queue"]
    );
}

#[test]
fn an_sqs_target_on_the_stacks_own_queue_is_refused_locally() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = crate::pipeline::dev_config(dir.path(), |doc| {
        doc.targets.push(TargetSpec {
            id: "loop".into(),
            kind: TargetKind::Sqs(SqsTargetSpec {
                queue_url: inlet::local::MAIN_QUEUE.into(),
            }),
        });
    });
    let clock = Arc::new(inlet::ports::ManualClock::new(0));
    let store =
        inlet::adapters::embedded::EmbeddedStore::open_in_memory(clock.clone()).expect("store");
    match inlet::local::LocalStack::with_store(cfg, store, clock) {
        Err(e) => assert!(e.to_string().contains("loop"), "{e}"),
        Ok(_) => panic!("a target feeding the main queue back to itself was accepted"),
    }
}

/// The most requests the receiver had at once while `inlet dev`'s worker loops delivered four
/// events in batches of one, each answered after 300 ms.
async fn most_requests_at_once(worker_concurrency: usize) -> usize {
    let (addr, rx) = start_receiver().await;
    rx.script((0..4).map(|_| Reply {
        delay: Duration::from_millis(300),
        ..reply(200)
    }));
    let run = Running::start(|doc| {
        doc.settings.worker_batch_size = 1;
        doc.settings.worker_concurrency = worker_concurrency;
        doc.targets.push(TargetSpec {
            id: "hook".into(),
            kind: TargetKind::Http(HttpTargetSpec {
                secret: format!("literal:{SECRET}"),
                ..spec(format!("http://{addr}/hook"))
            }),
        });
        doc.routes[0].targets = vec!["hook".into()];
    })
    .await;
    run.post_stripe_events(40..44).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loops = tokio::spawn(inlet_cli::server::worker_loops(run.stack.clone(), stopped));
    crate::pipeline::wait_until(|| async { rx.seen().len() == 4 }).await;
    let _ = stop.send(true);
    loops.await.expect("worker loops");
    assert!(rx.seen().iter().all(|s| s.verified));
    rx.max_in_flight.load(Ordering::SeqCst)
}

#[tokio::test]
async fn the_local_worker_runs_as_many_batches_at_once_as_configured() {
    assert_eq!(most_requests_at_once(1).await, 1);
    assert_eq!(most_requests_at_once(3).await, 3);
}
