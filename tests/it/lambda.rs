//! The Lambda handlers' conversions driven with real event payload shapes (fixtures from
//! `aws_lambda_events` and `lambda_http`, each event also read by `lambda_http` as the
//! reference the ingest request must agree with), and the whole AWS path — ingest → SQS →
//! worker → DynamoDB → EventBridge → a rule's SQS target — against the moto server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_sqs::types::QueueAttributeName;
use base64::Engine;
use inlet::adapters::aws::SqsQueue;
use inlet::envelope::Envelope;
use inlet::ingest::Ingest;
use inlet::ingest::WebhookRequest;
use inlet::lambda::http::{into_webhook_request, response};
use inlet::lambda::sqs::{to_batch_response, to_records};
use inlet::ports::{Clock, DedupeStatus, EventBus, Ledger, Queue, SystemClock};
use inlet::targets::eventbridge::EventBridgeTarget;
use inlet::targets::Target;
use inlet::worker::Worker;

use crate::pipeline::{dev_config, sample_body, signed_headers};
use crate::support;

pub(crate) const APIGW_V2: &str =
    include_str!("../fixtures/example-apigw-v2-request-no-authorizer.json");
const FUNCTION_URL: &str = include_str!("../fixtures/lambda_function_url_request.json");
const SQS_EVENT: &str = include_str!("../fixtures/example-sqs-event.json");

/// A fixture event turned into a signed webhook POST for `source`.
pub(crate) fn http_event(
    fixture: &str,
    path: &str,
    headers: &inlet::request::Headers,
    body: &[u8],
    base64: bool,
) -> String {
    let mut ev: serde_json::Value = serde_json::from_str(fixture).expect("fixture");
    ev["rawPath"] = path.into();
    ev["rawQueryString"] = "".into();
    ev["requestContext"]["http"]["method"] = "POST".into();
    ev["requestContext"]["http"]["path"] = path.into();
    for (k, v) in headers.iter() {
        ev["headers"][k] = v.into();
    }
    if base64 {
        ev["body"] = base64::engine::general_purpose::STANDARD
            .encode(body)
            .into();
        ev["isBase64Encoded"] = true.into();
    } else {
        ev["body"] = String::from_utf8(body.to_vec()).expect("utf8").into();
        ev["isBase64Encoded"] = false.into();
    }
    ev.to_string()
}

/// The ingest Lambda's request for an event, after checking it against `lambda_http`'s
/// reading of the same event: method, path, query (from the URI it builds out of the raw
/// query string), every header (bar cookies, which it merges with the event's `cookies`), body, caller and id.
pub(crate) fn webhook_request(event: &str) -> WebhookRequest {
    use lambda_http::RequestExt;
    let parsed: ApiGatewayV2httpRequest =
        serde_json::from_str(event).expect("the ingest Lambda parses the event");
    let ours = into_webhook_request(parsed).expect("a request");
    let theirs = lambda_http::request::from_str(event).expect("lambda_http parses the event");
    assert_eq!(ours.method, theirs.method().as_str());
    assert_eq!(ours.path, theirs.raw_http_path());
    let their_query: Vec<(String, String)> = theirs
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    assert_eq!(ours.query, their_query);
    let mut their_headers: Vec<(String, String)> = theirs
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str() != "cookie")
        .map(|(k, v)| (k.to_string(), v.to_str().expect("text").to_string()))
        .collect();
    let mut our_headers: Vec<(String, String)> = ours
        .headers
        .iter()
        .filter(|(k, _)| *k != "cookie")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    our_headers.sort();
    their_headers.sort();
    assert_eq!(our_headers, their_headers);
    let their_body: &[u8] = match theirs.body() {
        lambda_http::Body::Empty => b"",
        lambda_http::Body::Text(t) => t.as_bytes(),
        lambda_http::Body::Binary(b) => b,
        _ => panic!("an unexpected body kind"),
    };
    assert_eq!(ours.body, their_body);
    match theirs.request_context_ref() {
        Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => {
            assert_eq!(
                ours.source_ip,
                ctx.http.source_ip.as_deref().and_then(|ip| ip.parse().ok())
            );
            assert_eq!(ours.request_id, ctx.request_id);
        }
        other => panic!("not a payload v2 context: {other:?}"),
    }
    ours
}

/// The dev config with every source routed to one EventBridge target `bus`.
pub(crate) fn eventbridge_config(dir: &std::path::Path) -> inlet::config::Config {
    dev_config(dir, |doc| {
        doc.targets = vec![inlet::config::TargetSpec {
            id: "bus".into(),
            kind: inlet::config::TargetKind::Eventbridge { bus_name: None },
        }];
        doc.routes[0].targets = vec!["bus".into()];
    })
}

/// SQS event records for received messages, in the event source mapping's shape.
pub(crate) fn sqs_event(messages: &[(String, String, u32)]) -> SqsEvent {
    let mut ev: serde_json::Value = serde_json::from_str(SQS_EVENT).expect("fixture");
    let template = ev["Records"][0].clone();
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|(id, body, count)| {
            let mut r = template.clone();
            r["messageId"] = id.as_str().into();
            r["receiptHandle"] = format!("receipt-of-{id}").into();
            r["body"] = body.as_str().into();
            r["attributes"]["ApproximateReceiveCount"] = count.to_string().into();
            r
        })
        .collect();
    ev["Records"] = records.into();
    let event = ev.to_string();
    // The records must say what the event says, field by field.
    let reference: serde_json::Value = serde_json::from_str(&event).expect("json");
    let reference: Vec<&serde_json::Value> = reference["Records"]
        .as_array()
        .expect("records")
        .iter()
        .collect();
    let ours = || serde_json::from_str::<SqsEvent>(&event).expect("the worker parses the event");
    let records = to_records(ours()).records;
    assert_eq!(records.len(), reference.len());
    for (r, m) in records.iter().zip(reference) {
        assert_eq!(m["messageId"], r.message_id.as_str());
        assert_eq!(m["body"], r.body.as_str());
        assert_eq!(m["receiptHandle"].as_str(), r.receipt_handle.as_deref());
        assert_eq!(
            m["attributes"]["ApproximateReceiveCount"],
            r.receive_count.to_string().as_str()
        );
        assert_eq!(
            m["attributes"]["MessageGroupId"].as_str(),
            r.group_id.as_deref()
        );
    }
    ours()
}

#[test]
fn api_gateway_v2_event_gives_the_exact_bytes_caller_ip_and_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dev_config(dir.path(), |_| {});
    // Not valid UTF-8, with a trailing CRLF: must arrive byte-exact through base64.
    let body = [0xffu8, 0x00, b'{', b'}', b'\r', b'\n'];
    let headers = signed_headers(&cfg, "custom", &body, SystemClock.now_ms(), "d");
    let event = http_event(APIGW_V2, "/webhooks/custom", &headers, &body, true);
    let w = webhook_request(&event);
    assert_eq!(w.body, body);
    assert_eq!(w.method, "POST");
    assert_eq!(w.path, "/webhooks/custom");
    assert_eq!(w.source_ip, Some("1.2.3.4".parse().expect("ip")));
    assert_eq!(w.request_id.as_deref(), Some("LV7fzho-PHcEJPw="));
    assert_eq!(w.headers.get("X-Signature"), headers.get("x-signature"));
}

#[test]
fn function_url_event_is_understood_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dev_config(dir.path(), |_| {});
    let body = sample_body("github", 1);
    let headers = signed_headers(&cfg, "github", &body, SystemClock.now_ms(), "d");
    let event = http_event(FUNCTION_URL, "/webhooks/github", &headers, &body, false);
    let w = webhook_request(&event);
    assert_eq!(w.body, body);
    assert_eq!(w.source_ip, Some("65.78.31.245".parse().expect("ip")));
    assert_eq!(w.path, "/webhooks/github");
}

/// Why the ingest Lambda reads `aws_lambda_events`' event rather than `lambda_http`'s
/// `Request`: `lambda_http` builds an `http::Uri` from the raw query string and panics on a
/// character a sender controls (here a raw space, which reaches `rawQueryString` through a
/// Function URL), and under the release profile's `panic = "abort"` that would end the warm
/// process. Ingest reads the same event and answers it.
#[tokio::test]
async fn a_raw_query_that_makes_lambda_http_panic_is_answered_by_ingest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Arc::new(dev_config(dir.path(), |_| {}));
    let body = sample_body("stripe", 5);
    let headers = signed_headers(&cfg, "stripe", &body, SystemClock.now_ms(), "d");
    let mut ev: serde_json::Value = serde_json::from_str(&http_event(
        APIGW_V2,
        "/webhooks/stripe",
        &headers,
        &body,
        false,
    ))
    .expect("event");
    ev["rawQueryString"] = "note=a b&x=\"<y>\"".into();
    let event = ev.to_string();

    let read = std::panic::catch_unwind(|| lambda_http::request::from_str(&event).is_ok());
    assert!(
        read.is_err(),
        "lambda_http now reads a raw space in the query: {read:?} (see docs/performance.md, Event parsing)"
    );

    let store = inlet::adapters::embedded::EmbeddedStore::open_in_memory(Arc::new(SystemClock))
        .expect("store");
    let ingest = Ingest::new(
        cfg,
        Arc::new(store.queue("main", None)),
        Arc::new(store.ledger()),
        Arc::new(SystemClock),
    );
    let parsed: ApiGatewayV2httpRequest = serde_json::from_str(&event).expect("parses");
    let req = into_webhook_request(parsed).expect("a request");
    assert_eq!(
        req.query,
        vec![
            ("note".to_string(), "a b".to_string()),
            ("x".to_string(), "\"<y>\"".to_string())
        ]
    );
    let resp = serde_json::to_value(response(ingest.handle(req).await)).expect("json");
    assert_eq!(resp["statusCode"], 200, "{resp}");
}

#[tokio::test]
async fn metas_get_check_is_answered_by_the_ingest_lambda_and_nothing_is_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Arc::new(dev_config(dir.path(), |_| {}));
    let store = inlet::adapters::embedded::EmbeddedStore::open_in_memory(Arc::new(SystemClock))
        .expect("store");
    let queue = store.queue("main", None);
    let ingest = Ingest::new(
        cfg,
        Arc::new(queue.clone()),
        Arc::new(store.ledger()),
        Arc::new(SystemClock),
    );
    let mut ev: serde_json::Value = serde_json::from_str(APIGW_V2).expect("fixture");
    ev["rawPath"] = "/webhooks/meta".into();
    ev["requestContext"]["http"]["method"] = "GET".into();
    ev["requestContext"]["http"]["path"] = "/webhooks/meta".into();
    ev["rawQueryString"] =
        "hub.mode=subscribe&hub.verify_token=inlet-dev-meta-verify-token&hub.challenge=1158201444"
            .into();
    ev["queryStringParameters"] = serde_json::json!({
        "hub.mode": "subscribe",
        "hub.verify_token": "inlet-dev-meta-verify-token",
        "hub.challenge": "1158201444",
    });
    ev["body"] = serde_json::Value::Null;
    let req = webhook_request(&ev.to_string());
    let resp = serde_json::to_value(response(ingest.handle(req).await)).expect("json");
    assert_eq!(resp["statusCode"], 200);
    assert_eq!(resp["headers"]["content-type"], "text/plain");
    assert_eq!(resp["body"], "1158201444");
    assert_eq!(
        queue
            .receive(10, Duration::from_secs(1), Duration::ZERO)
            .await
            .expect("receive"),
        vec![]
    );
}

#[test]
fn worker_reports_only_the_failed_records() {
    let event = sqs_event(&[
        ("good".into(), "x".into(), 1),
        ("bad".into(), "y".into(), 3),
    ]);
    let records = to_records(event);
    assert_eq!(records.records.len(), 2);
    assert_eq!(records.records[1].receive_count, 3);
    // The receipt handle travels with the record: the worker's backoff needs it.
    assert_eq!(
        records.records[1].receipt_handle.as_deref(),
        Some("receipt-of-bad")
    );
    let result = inlet::worker::BatchResult {
        outcomes: vec![
            (
                "good".into(),
                inlet::worker::Outcome::Dispatched {
                    dedupe_key: "k".into(),
                },
            ),
            (
                "bad".into(),
                inlet::worker::Outcome::Failed {
                    dedupe_key: None,
                    error: "e".into(),
                },
            ),
            // Moved to the DLQ by the worker: done here, so SQS deletes it.
            (
                "dead".into(),
                inlet::worker::Outcome::DeadLettered {
                    dedupe_key: Some("k2".into()),
                    reason: "target answered HTTP 400".into(),
                },
            ),
        ],
    };
    let resp = serde_json::to_value(to_batch_response(&result)).expect("json");
    assert_eq!(
        resp["batchItemFailures"],
        serde_json::json!([{"itemIdentifier": "bad"}])
    );
}

/// An SQS queue that a rule on `bus` delivers `inlet.*` events to, to see what EventBridge
/// really delivered.
pub(crate) async fn observe_bus(bus_name: &str) -> SqsQueue {
    let conf = support::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&conf);
    let url = sqs
        .create_queue()
        .queue_name(support::aws::unique_name("inlet-observe"))
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attrs")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("arn");
    let eb = aws_sdk_eventbridge::Client::new(&conf);
    eb.put_rule()
        .name("all-inlet")
        .event_bus_name(bus_name)
        .event_pattern(r#"{"source":[{"prefix":"inlet."}]}"#)
        .send()
        .await
        .expect("rule");
    eb.put_targets()
        .rule("all-inlet")
        .event_bus_name(bus_name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("observe")
                .arn(arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("targets");
    SqsQueue::new(sqs, url)
}

#[tokio::test]
async fn aws_webhook_goes_through_sqs_dynamodb_and_eventbridge_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Arc::new(eventbridge_config(dir.path()));
    let queues = support::aws::queues_with_dlq(5).await;
    let ledger = Arc::new(support::aws::ledger().await);
    let bus = Arc::new(support::aws::bus().await);
    let observed = observe_bus(bus.bus_name()).await;
    let clock = Arc::new(SystemClock);

    // Ingest Lambda: API Gateway event in, 200 out, envelope on SQS.
    let ingest = Ingest::new(
        cfg.clone(),
        Arc::new(queues.main.clone()),
        ledger.clone(),
        clock.clone(),
    );
    let body = sample_body("stripe", 77);
    let headers = signed_headers(&cfg, "stripe", &body, clock.now_ms(), "d");
    let event = http_event(APIGW_V2, "/webhooks/stripe", &headers, &body, false);
    let resp = response(ingest.handle(webhook_request(&event)).await);
    assert_eq!(resp.status_code, 200);

    // The same delivery again (a provider retry) is accepted and enqueued again.
    assert_eq!(ingest.handle(webhook_request(&event)).await.status, 200);

    // Worker Lambda: both messages in one SQS event.
    let mut received = Vec::new();
    while received.len() < 2 {
        let batch = queues
            .main
            .receive(10, Duration::from_secs(60), Duration::from_secs(1))
            .await
            .expect("receive");
        received.extend(batch);
    }
    let event = sqs_event(
        &received
            .iter()
            .map(|m| (m.message_id.clone(), m.body.clone(), m.receive_count))
            .collect::<Vec<_>>(),
    );
    let bus_dyn: Arc<dyn EventBus> = bus.clone();
    let mut targets: BTreeMap<String, Arc<dyn Target>> = BTreeMap::new();
    targets.insert(
        "bus".into(),
        Arc::new(EventBridgeTarget::new("bus".into(), bus_dyn)),
    );
    let worker = Worker::new(cfg.clone(), ledger.clone(), targets, clock.clone());
    let result = worker.process(&to_records(event).records).await;
    let resp = serde_json::to_value(to_batch_response(&result)).expect("json");
    assert_eq!(
        resp["batchItemFailures"],
        serde_json::json!([]),
        "{result:?}"
    );
    let dispatched = result
        .outcomes
        .iter()
        .filter(|(_, o)| matches!(o, inlet::worker::Outcome::Dispatched { .. }))
        .count();
    assert_eq!(dispatched, 1, "{result:?}");

    let key = "stripe#evt_test_77";
    let rec = ledger.get(key).await.expect("get").expect("record");
    assert_eq!(rec.status, DedupeStatus::Completed);

    // EventBridge delivered exactly one event, carrying the envelope.
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.extend(
            observed
                .receive(10, Duration::from_secs(30), Duration::from_secs(1))
                .await
                .expect("receive"),
        );
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    let delivered: serde_json::Value = serde_json::from_str(&seen[0].body).expect("event json");
    assert_eq!(delivered["source"], "inlet.stripe");
    assert_eq!(delivered["detail-type"], "payment_intent.succeeded");
    let env: Envelope = serde_json::from_value(delivered["detail"].clone()).expect("envelope");
    assert_eq!(env.dedupe_key, key);
    assert_eq!(env.body_bytes().expect("body"), body);
}

/// Passes events to the real bus, but spoils the detail of one event so that EventBridge
/// refuses that entry alone (`MalformedDetail`), as a per-entry failure would look.
struct SpoilOne {
    inner: Arc<dyn EventBus>,
    spoil_key: String,
}

#[async_trait::async_trait]
impl EventBus for SpoilOne {
    async fn publish(
        &self,
        events: &[inlet::ports::BusEvent],
    ) -> Result<Vec<inlet::ports::PublishResult>, inlet::ports::BusError> {
        let events: Vec<_> = events
            .iter()
            .cloned()
            .map(|mut e| {
                if e.detail.contains(&self.spoil_key) {
                    e.detail = "not json".into();
                }
                e
            })
            .collect();
        self.inner.publish(&events).await
    }
}

#[tokio::test]
async fn aws_put_events_entry_failure_fails_only_that_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Arc::new(eventbridge_config(dir.path()));
    let ledger = Arc::new(support::aws::ledger().await);
    let bus: Arc<dyn EventBus> = Arc::new(SpoilOne {
        inner: Arc::new(support::aws::bus().await),
        spoil_key: "stripe#evt_test_2".into(),
    });
    let mut targets: BTreeMap<String, Arc<dyn Target>> = BTreeMap::new();
    targets.insert(
        "bus".into(),
        Arc::new(EventBridgeTarget::new("bus".into(), bus)),
    );
    let clock = Arc::new(SystemClock);
    let worker = Worker::new(cfg.clone(), ledger.clone(), targets, clock.clone());

    // Build the two envelopes the ingest path would have queued.
    let store =
        inlet::adapters::embedded::EmbeddedStore::open_in_memory(clock.clone()).expect("store");
    let q = store.queue("q", None);
    let ingest = Ingest::new(
        cfg.clone(),
        Arc::new(q.clone()),
        Arc::new(store.ledger()),
        clock.clone(),
    );
    for n in [1, 2] {
        let body = sample_body("stripe", n);
        let resp = ingest
            .handle(inlet::ingest::WebhookRequest {
                method: "POST".into(),
                path: "/webhooks/stripe".into(),
                headers: signed_headers(&cfg, "stripe", &body, clock.now_ms(), "d"),
                body,
                ..Default::default()
            })
            .await;
        assert_eq!(resp.status, 200);
    }
    let msgs = q
        .receive(10, Duration::from_secs(30), Duration::ZERO)
        .await
        .expect("receive");
    let event = sqs_event(
        &msgs
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("m{}", i + 1), m.body.clone(), 1))
            .collect::<Vec<_>>(),
    );
    let result = worker.process(&to_records(event).records).await;
    let resp = serde_json::to_value(to_batch_response(&result)).expect("json");
    assert_eq!(
        resp["batchItemFailures"],
        serde_json::json!([{"itemIdentifier": "m2"}]),
        "{result:?}"
    );
    let ok = ledger
        .get("stripe#evt_test_1")
        .await
        .expect("get")
        .expect("record");
    let failed = ledger
        .get("stripe#evt_test_2")
        .await
        .expect("get")
        .expect("record");
    assert_eq!(ok.status, DedupeStatus::Completed);
    assert_eq!(failed.status, DedupeStatus::Failed);
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("MalformedDetail"),
        "{failed:?}"
    );
}
