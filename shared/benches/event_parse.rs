//! Reading one Lambda event into the domain, alone: the only per-event work that depends on
//! which crate reads the event (docs/performance.md, "Event parsing").
//!
//! - `http/<reader>/<size>`: a signed-webhook-shaped API Gateway v2 event (the committed
//!   fixture, a body of `<size>`) to ingest's `WebhookRequest`. `aws_lambda_events`: what the
//!   ingest Lambda runs (`ApiGatewayV2httpRequest`, then `inlet::lambda::http`);
//!   `lambda_http`: what `lambda_http::run` does before a handler sees the request (its
//!   `LambdaRequest`, the `http::Request` built from it), then the same fields taken out.
//! - `sqs/aws_lambda_events/<size>`: an SQS event of 10 records of `<size>` to the worker's
//!   records (`SqsEvent`, then `inlet::lambda::sqs::to_records`).

use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::sqs::SqsEvent;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inlet::ingest::WebhookRequest;
use inlet::request::Headers;

const APIGW_V2: &str =
    include_str!("../../tests/fixtures/example-apigw-v2-request-no-authorizer.json");
const SQS_EVENT: &str = include_str!("../../tests/fixtures/example-sqs-event.json");
const SIZES: &[(usize, &str)] = &[(1024, "1KB"), (8 * 1024, "8KB"), (64 * 1024, "64KB")];

/// A JSON body of `size` bytes, with the quotes a JSON body has to escape inside an event.
fn body(size: usize) -> String {
    let head = r#"{"id":"evt_bench","type":"payment_intent.succeeded","data":{"pad":""#;
    let tail = r#""}}"#;
    format!(
        "{head}{}{tail}",
        "x".repeat(size.saturating_sub(head.len() + tail.len()))
    )
}

fn http_event(size: usize) -> String {
    let mut ev: serde_json::Value = serde_json::from_str(APIGW_V2).expect("fixture");
    ev["rawPath"] = "/webhooks/stripe".into();
    ev["rawQueryString"] = "".into();
    ev["requestContext"]["http"]["method"] = "POST".into();
    ev["requestContext"]["http"]["path"] = "/webhooks/stripe".into();
    ev["headers"]["content-type"] = "application/json".into();
    ev["headers"]["stripe-signature"] = format!("t=1767225600,v1={}", "a".repeat(64)).into();
    ev["body"] = body(size).into();
    ev["isBase64Encoded"] = false.into();
    ev.to_string()
}

fn sqs_event(size: usize) -> String {
    let mut ev: serde_json::Value = serde_json::from_str(SQS_EVENT).expect("fixture");
    let template = ev["Records"][0].clone();
    ev["Records"] = (0..10)
        .map(|n| {
            let mut r = template.clone();
            r["messageId"] = format!("message-{n}").into();
            r["body"] = body(size).into();
            r
        })
        .collect::<Vec<_>>()
        .into();
    ev.to_string()
}

/// What `lambda_http::run` hands a handler, taken apart into ingest's request the way a
/// handler on it would.
fn via_lambda_http(event: &[u8]) -> WebhookRequest {
    use lambda_http::request::{LambdaRequest, RequestContext};
    use lambda_http::{Body, RequestExt};
    let parsed: LambdaRequest = serde_json::from_slice(event).expect("event parses");
    let (mut parts, body) = lambda_http::Request::from(parsed).into_parts();
    let mut headers = Headers::new();
    for (name, value) in &parts.headers {
        headers.insert(
            name.as_str(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
    }
    let path = parts.raw_http_path().to_string();
    let Some(RequestContext::ApiGatewayV2(ctx)) = parts.extensions.remove::<RequestContext>()
    else {
        panic!("not a payload v2 event")
    };
    WebhookRequest {
        method: parts.method.as_str().to_string(),
        path,
        query: WebhookRequest::parse_query(parts.uri.query()),
        headers,
        body: match body {
            Body::Text(t) => t.into_bytes(),
            Body::Binary(b) => b,
            _ => Vec::new(),
        },
        body_over_limit: false,
        source_ip: ctx.http.source_ip.and_then(|ip| ip.parse().ok()),
        request_id: ctx.request_id,
    }
}

fn via_aws_lambda_events(event: &[u8]) -> WebhookRequest {
    let parsed: ApiGatewayV2httpRequest = serde_json::from_slice(event).expect("event parses");
    inlet::lambda::http::into_webhook_request(parsed).expect("request")
}

/// One way of reading an API Gateway v2 event into ingest's request.
type Reader = fn(&[u8]) -> WebhookRequest;

fn http(c: &mut Criterion) {
    let mut group = c.benchmark_group("http");
    for &(size, label) in SIZES {
        let event = http_event(size);
        let ours = via_aws_lambda_events(event.as_bytes());
        let theirs = via_lambda_http(event.as_bytes());
        assert_eq!(
            (&ours.method, &ours.path, ours.headers.len(), &ours.body),
            (
                &theirs.method,
                &theirs.path,
                theirs.headers.len(),
                &theirs.body
            )
        );
        group.throughput(Throughput::Bytes(event.len() as u64));
        let readers: [(&str, Reader); 2] = [
            ("aws_lambda_events", via_aws_lambda_events),
            ("lambda_http", via_lambda_http),
        ];
        for (name, read) in readers {
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter(|| read(std::hint::black_box(event.as_bytes())))
            });
        }
    }
    group.finish();
}

fn sqs(c: &mut Criterion) {
    let mut group = c.benchmark_group("sqs");
    for &(size, label) in SIZES {
        let event = sqs_event(size);
        group.throughput(Throughput::Bytes(event.len() as u64));
        group.bench_function(BenchmarkId::new("aws_lambda_events", label), |b| {
            b.iter(|| {
                let parsed: SqsEvent =
                    serde_json::from_slice(std::hint::black_box(event.as_bytes()))
                        .expect("event parses");
                inlet::lambda::sqs::to_records(parsed).records
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = http, sqs
}
criterion_main!(benches);
