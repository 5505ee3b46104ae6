//! The deploy rehearsal: what a deployment wires, checked without an account. The functions'
//! environment comes from `template.yaml` itself (its intrinsics resolved against moto
//! resources made for the template's queues, table and bus), the real composition roots
//! (`bootstrap::*_with`, what each Lambda's `main` runs) build the parts from that
//! environment alone, and webhooks go ingest → queue → worker → bus and SQS target, with a
//! refusal, a duplicate, a failed delivery retried and then dead-lettered, a delayed check
//! scheduled and deferred, and a scheduled poll. Every AWS call each function makes passes a
//! recording proxy: each must be granted by that function's role in the template, on that
//! resource, and each grant must be used by a call, or by AWS on the function's behalf (a
//! listed, explained exception).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use inlet::adapters::aws::{create_table, sdk_config_for_endpoint};
use inlet::lambda::sqs::to_records;
use inlet::worker::Outcome;

use crate::lambda::{http_event, sqs_event, webhook_request, APIGW_V2};
use crate::support::aws::{endpoint, sdk_config, unique_name, REGION};
use crate::support::cfn::{load, Physical, Stack};
use crate::support::recorder::{Call, Recorder};

/// moto's account.
const ACCOUNT: &str = "123456789012";
const STRIPE_SECRET: &str = "whsec_rehearsal_0123456789abcdefghij";
const STRIPE_READ_KEY: &str = "rk_rehearsal_read_0123456789";

/// One Stripe source with a poll and a delayed check, to the stack's bus and an SQS target,
/// and one with per-entity order (the stale-version guard); secrets in SSM and Secrets Manager.
fn config(ssm_param: &str, secret: &str, api: &str, target_queue: &str) -> String {
    format!(
        r#"[[sources]]
id = "stripe"
provider = "stripe"
secrets = ["ssm:{ssm_param}"]
archive = true
[sources.poll]
kind = "stripe_events"
every = "1m"
secrets = ["secretsmanager:{secret}#key"]
max_requests_per_run = 5
options = {{ api_base = "{api}", page_size = 10, start = {{ lookback_seconds = 3600 }} }}
[[sources.checks]]
name = "settles"
on = ["payment_intent.created"]
expect = ["payment.succeeded"]
after = "1m"

[[sources]]
id = "wallets"
provider = "stripe"
secrets = ["ssm:{ssm_param}"]
order_by = "/data/object/customer"
version = "/created"

[[targets]]
id = "bus"
kind = "eventbridge"

[[targets]]
id = "copy"
kind = "sqs"
queue_url = "{target_queue}"

[[routes]]
sources = ["stripe"]
targets = ["bus", "copy"]

[[routes]]
sources = ["wallets"]
targets = ["bus"]
"#
    )
}

/// A Stripe event of `kind` for customer `customer`, created now.
fn stripe_event(id: &str, kind: &str, customer: &str, created: i64) -> serde_json::Value {
    serde_json::json!({
        "id": id, "object": "event", "type": kind, "created": created,
        "data": {"object": {"id": format!("pi_{id}"), "object": "payment_intent", "customer": customer, "amount": 2000, "currency": "usd"}}
    })
}

/// Stripe's `Stripe-Signature` for `body` at `now_s`.
fn stripe_headers(body: &[u8], now_s: i64) -> inlet::request::Headers {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(STRIPE_SECRET.as_bytes()).expect("key");
    mac.update(format!("{now_s}.").as_bytes());
    mac.update(body);
    let sig = hex::encode(mac.finalize().into_bytes());
    inlet::request::Headers::from_iter([
        ("stripe-signature", format!("t={now_s},v1={sig}")),
        ("content-type", "application/json".to_string()),
    ])
}

/// Stripe's `GET /v1/events` for the poll: two events created now, newest first, one page.
async fn serve_stripe_events(created: i64) -> String {
    use axum::routing::get;
    // The newer event is larger than a bus entry: the poller claim-checks it.
    let mut large = stripe_event("evt_polled_2", "payment_intent.succeeded", "cus_9", created);
    large["data"]["object"]["description"] = serde_json::json!("p".repeat(300 * 1024));
    let events = serde_json::json!({
        "object": "list",
        "has_more": false,
        "data": [
            large,
            stripe_event("evt_polled_1", "payment_intent.created", "cus_9", created - 1),
        ]
    });
    let app = axum::Router::new().route(
        "/v1/events",
        get(
            move |headers: axum::http::HeaderMap,
                  axum::extract::RawQuery(query): axum::extract::RawQuery| {
                let events = events.clone();
                async move {
                    let key = format!("Bearer {STRIPE_READ_KEY}");
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some(key.as_str())
                    {
                        return (axum::http::StatusCode::UNAUTHORIZED, "{}".to_string());
                    }
                    // A walk up from the newest finds nothing newer.
                    let paging = query.as_deref().is_some_and(|q| {
                        q.contains("ending_before") || q.contains("starting_after")
                    });
                    let body = if paging {
                        serde_json::json!({"object": "list", "has_more": false, "data": []})
                    } else {
                        events
                    };
                    (axum::http::StatusCode::OK, body.to_string())
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn template() -> String {
    std::fs::read_to_string(format!(
        "{}/../../template.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("template.yaml")
}

/// Creates in moto what the template declares, as CloudFormation would name it for a stack.
async fn physical_resources(
    stack_name: &str,
    template: &crate::support::cfn::Node,
) -> BTreeMap<String, Physical> {
    let sdk = sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let mut out = BTreeMap::new();
    for (logical, resource) in template.get("Resources").expect("Resources").entries() {
        let kind = resource
            .get("Type")
            .and_then(|t| t.str())
            .unwrap_or_default();
        let name = format!("{stack_name}-{logical}");
        let physical = match kind {
            "AWS::SQS::Queue" => {
                let url = sqs
                    .create_queue()
                    .queue_name(&name)
                    .send()
                    .await
                    .expect("create queue")
                    .queue_url
                    .expect("url");
                Physical {
                    reference: url,
                    arn: format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"),
                }
            }
            "AWS::DynamoDB::Table" => {
                create_table(&dynamodb, &name).await.expect("create table");
                Physical {
                    reference: name.clone(),
                    arn: format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"),
                }
            }
            "AWS::Events::EventBus" => {
                // The template names the bus after the stack.
                let bus = format!("{stack_name}-events");
                events
                    .create_event_bus()
                    .name(&bus)
                    .send()
                    .await
                    .expect("create bus");
                Physical {
                    reference: bus.clone(),
                    arn: format!("arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}"),
                }
            }
            "AWS::S3::Bucket" => {
                // Bucket names are lower case.
                let bucket = name.to_lowercase();
                inlet::adapters::aws::S3Blobs::from_conf(&sdk, &bucket)
                    .client()
                    .create_bucket()
                    .bucket(&bucket)
                    .send()
                    .await
                    .expect("create bucket");
                Physical {
                    reference: bucket.clone(),
                    arn: format!("arn:aws:s3:::{bucket}"),
                }
            }
            "AWS::Logs::LogGroup" => Physical {
                reference: name.clone(),
                arn: format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"),
            },
            _ => Physical {
                reference: name.clone(),
                arn: format!("arn:aws:{}:{REGION}:{ACCOUNT}:{name}", kind.to_lowercase()),
            },
        };
        out.insert(logical.clone(), physical);
    }
    out
}

/// The IAM action AWS authorizes an operation as (a batch call is authorized as its single
/// form).
fn action(operation: &str) -> String {
    let (service, op) = operation
        .split_once('.')
        .unwrap_or_else(|| panic!("not an AWS JSON operation: {operation}"));
    let prefix = match service {
        "AmazonSQS" => "sqs",
        s if s.starts_with("DynamoDB_") => "dynamodb",
        "AWSEvents" => "events",
        "AmazonSSM" => "ssm",
        "secretsmanager" => "secretsmanager",
        "AmazonS3" => "s3",
        other => panic!("service {other} not modelled"),
    };
    let op = match (prefix, op) {
        ("sqs", batch) if batch.ends_with("Batch") => batch.trim_end_matches("Batch"),
        (_, op) => op,
    };
    format!("{prefix}:{op}")
}

/// IAM's `*` in a resource: any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| glob(rest, &text[head.len() + i..]))
        }
    }
}

/// Each `(action, ARN)` a function's calls need: the recorded resource names (queue URLs,
/// table, bus, parameter and secret names) turned into the ARNs IAM checks.
fn needs(calls: &[Call], arns: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for call in calls {
        let action = action(&call.operation);
        assert!(!call.resources.is_empty(), "{call:?} names no resource");
        for r in &call.resources {
            // An object's ARN is recorded as it is (its key is the content's digest).
            let arn = match r.strip_prefix("arn:aws:s3:::") {
                Some(_) => r,
                None => arns.get(r).unwrap_or_else(|| {
                    panic!("{r} ({}) is none of the stack's resources", call.operation)
                }),
            };
            out.push((action.clone(), arn.clone()));
        }
    }
    out.sort();
    out.dedup();
    out
}

pub(crate) fn vars(env: BTreeMap<String, String>) -> inlet::config::Vars {
    Arc::new(move |name: &str| env.get(name).cloned())
}

/// What a rehearsal saw: the stack, the ARN of every resource name a call can carry, and the
/// AWS calls of each function.
pub(crate) struct Rehearsed {
    pub stack: Stack,
    pub arns: BTreeMap<String, String>,
    /// Ingest accepting the first webhook.
    pub ingest: Vec<Call>,
    /// The worker dispatching that event (scheduling its check on the way).
    pub worker: Vec<Call>,
    /// The worker's calls for the same message delivered again (SQS is at-least-once).
    pub duplicate: Vec<Call>,
    /// Everything else each function did: ingest's refusal, the worker's failed and
    /// dead-lettered delivery, the poller's scheduled run and deferred check.
    pub ingest_more: Vec<Call>,
    pub worker_more: Vec<Call>,
    pub poller: Vec<Call>,
}

/// SQS records for received messages, with their real receipt handles.
fn records(
    received: &[aws_sdk_sqs::types::Message],
    receive_count: u32,
) -> Vec<inlet::ports::WorkerRecord> {
    let mut event = sqs_event(
        &received
            .iter()
            .map(|m| {
                (
                    m.message_id.clone().expect("id"),
                    m.body.clone().expect("body"),
                    receive_count,
                )
            })
            .collect::<Vec<_>>(),
    );
    for (record, m) in event.records.iter_mut().zip(received) {
        record.receipt_handle = m.receipt_handle.clone();
    }
    to_records(event).records
}

async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    n: usize,
) -> Vec<aws_sdk_sqs::types::Message> {
    let mut out = Vec::new();
    for _ in 0..20 {
        out.extend(
            sqs.receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive")
                .messages
                .unwrap_or_default(),
        );
        if out.len() >= n {
            break;
        }
    }
    assert_eq!(out.len(), n, "{out:?}");
    out
}

/// Deploys the template's wiring on moto and runs every function through it.
pub(crate) async fn rehearse() -> Rehearsed {
    let stack_name = unique_name("rehearsal");
    let template = load(&template());
    let mut resources = physical_resources(&stack_name, &template).await;
    let sdk = sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);

    // What the deployment is given: the secrets in SSM and Secrets Manager, a target queue.
    let ssm_param = format!("/{stack_name}/stripe-whsec");
    aws_sdk_ssm::Client::new(&sdk)
        .put_parameter()
        .name(&ssm_param)
        .value(STRIPE_SECRET)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("put parameter");
    let ssm_arn = format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{ssm_param}");
    let secret_name = format!("{stack_name}-stripe-read");
    let secret_arn = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&secret_name)
        .secret_string(serde_json::json!({"key": STRIPE_READ_KEY}).to_string())
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("arn");
    let target_name = format!("{stack_name}-target");
    let target_url = sqs
        .create_queue()
        .queue_name(&target_name)
        .send()
        .await
        .expect("create target queue")
        .queue_url
        .expect("url");
    let target_arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{target_name}");
    let kms_key = format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/rehearsal");
    let now_s = inlet::ports::Clock::now_ms(&inlet::ports::SystemClock) / 1000;
    let api = serve_stripe_events(now_s).await;

    let params = BTreeMap::from([
        (
            "InletConfig".to_string(),
            config(&ssm_param, &secret_name, &api, &target_url),
        ),
        ("SsmParameterArns".to_string(), ssm_arn.clone()),
        ("SecretArns".to_string(), secret_arn.clone()),
        ("SecretsKmsKeyArns".to_string(), kms_key.clone()),
        ("TargetQueueArns".to_string(), target_arn.clone()),
        ("Tracing".to_string(), "Active".to_string()),
    ]);
    resources.insert(
        "(target queue)".into(),
        Physical {
            reference: target_url.clone(),
            arn: target_arn,
        },
    );
    let mut arns: BTreeMap<String, String> = resources
        .values()
        .map(|p| (p.reference.clone(), p.arn.clone()))
        .collect();
    arns.insert(ssm_param.clone(), ssm_arn);
    arns.insert(secret_name.clone(), secret_arn);
    let stack = Stack {
        template,
        name: stack_name.clone(),
        region: REGION.into(),
        account: ACCOUNT.into(),
        params,
        resources,
    };

    // Each variable naming a resource names one of the right kind.
    let kind_of = |value: &str| -> Option<String> {
        stack
            .resources
            .iter()
            .find(|(_, p)| p.reference == value)
            .and_then(|(logical, _)| {
                stack
                    .template
                    .get("Resources")
                    .and_then(|r| r.get(logical))
                    .and_then(|r| r.get("Type"))
                    .and_then(|t| t.str())
                    .map(str::to_string)
            })
    };
    let env: BTreeMap<&str, BTreeMap<String, String>> =
        ["IngestFunction", "WorkerFunction", "PollerFunction"]
            .into_iter()
            .map(|f| (f, stack.function_env(f)))
            .collect();
    for (function, vars) in &env {
        for (name, value) in vars {
            let want = if name.ends_with("_QUEUE_URL") || name.ends_with("_DLQ_URL") {
                "AWS::SQS::Queue"
            } else if name == "INLET_TABLE" {
                "AWS::DynamoDB::Table"
            } else if name == "INLET_BUS_NAME" {
                "AWS::Events::EventBus"
            } else if name == "INLET_BLOB_BUCKET" {
                "AWS::S3::Bucket"
            } else {
                continue;
            };
            assert_eq!(
                kind_of(value).as_deref(),
                Some(want),
                "{function} {name}={value}"
            );
        }
    }
    // So does each output, and the webhook base is where the HTTP API routes to ingest.
    for (name, value) in stack.outputs() {
        let want = if name.ends_with("QueueUrl") {
            "AWS::SQS::Queue"
        } else if name == "TableName" {
            "AWS::DynamoDB::Table"
        } else if name == "EventBusName" {
            "AWS::Events::EventBus"
        } else if name == "BlobBucketName" {
            "AWS::S3::Bucket"
        } else if name.ends_with("FunctionName") {
            "AWS::Serverless::Function"
        } else {
            continue;
        };
        assert_eq!(
            kind_of(&value).as_deref(),
            Some(want),
            "output {name}={value}"
        );
    }
    let route = stack.resolve(
        stack
            .resource("IngestFunction")
            .get("Properties")
            .and_then(|p| p.get("Events"))
            .and_then(|e| e.get("Webhook"))
            .and_then(|w| w.get("Properties"))
            .and_then(|p| p.get("Path"))
            .expect("ingest's HTTP API route"),
    );
    let base = stack.outputs()["WebhookBaseUrl"].clone();
    let path = base
        .split_once(".amazonaws.com")
        .map(|(_, p)| p.to_string())
        .expect("an execute-api URL");
    assert_eq!(
        route.text().map(|r| r.replace("{source}", "")),
        Some(path),
        "{base}"
    );

    let ingest_env = &env["IngestFunction"];
    let worker_env = &env["WorkerFunction"];
    let poller_env = &env["PollerFunction"];
    // What the CLI reads from the outputs (`inlet dlq`, `inlet replay`) is what the functions use.
    let outputs = stack.outputs();
    for (output, function, var) in [
        ("QueueUrl", ingest_env, "INLET_QUEUE_URL"),
        ("TableName", ingest_env, "INLET_TABLE"),
        ("DeadLetterQueueUrl", worker_env, "INLET_DLQ_URL"),
        ("EventBusName", worker_env, "INLET_BUS_NAME"),
        ("ChecksQueueUrl", worker_env, "INLET_CHECKS_QUEUE_URL"),
        ("ChecksQueueUrl", poller_env, "INLET_CHECKS_QUEUE_URL"),
        ("TableName", poller_env, "INLET_TABLE"),
        ("BlobBucketName", ingest_env, "INLET_BLOB_BUCKET"),
        ("BlobBucketName", worker_env, "INLET_BLOB_BUCKET"),
        ("BlobBucketName", poller_env, "INLET_BLOB_BUCKET"),
    ] {
        assert_eq!(
            outputs.get(output),
            function.get(var),
            "output {output} vs {var}"
        );
    }
    let events_queue = &stack.resources["EventsQueue"].reference;
    for e in [ingest_env, worker_env, poller_env] {
        assert_eq!(&e["INLET_QUEUE_URL"], events_queue);
    }
    let moto = endpoint();

    // Ingest, built as its main builds it, from its environment only.
    let ingest_calls = Recorder::start(&moto).await;
    let (ingest, remote) = inlet::bootstrap::ingest_with(
        sdk_config_for_endpoint(ingest_calls.endpoint(), REGION).await,
        vars(ingest_env.clone()),
    )
    .await
    .expect("ingest starts from the template's environment");
    assert!(remote, "the config read the secret stores");
    let startup = ingest_calls.take();
    let send_to = |source: &str, body: serde_json::Value, signed: bool| {
        let body = body.to_string().into_bytes();
        let mut headers = stripe_headers(&body, now_s);
        if !signed {
            headers = stripe_headers(b"another body", now_s);
        }
        let path = format!("/webhooks/{source}");
        webhook_request(&http_event(APIGW_V2, &path, &headers, &body, false))
    };
    let send = |body: serde_json::Value, signed: bool| send_to("stripe", body, signed);
    // Neither a check's `on` nor its `expect`: the plain path, whose sizes docs/scale.md uses.
    let plain = stripe_event("evt_r_1", "charge.refunded", "cus_1", now_s);
    let answer = ingest.handle(send(plain, true)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let ingest_seen = ingest_calls.take();
    let refused = ingest
        .handle(send(
            stripe_event("evt_r_x", "payment_intent.created", "cus_1", now_s),
            false,
        ))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let failing = stripe_event("evt_r_2", "payment_intent.succeeded", "cus_2", now_s);
    assert_eq!(ingest.handle(send(failing, true)).await.status, 200);
    let checked = stripe_event("evt_r_3", "payment_intent.created", "cus_3", now_s);
    assert_eq!(ingest.handle(send(checked, true)).await.status, 200);
    let ordered = stripe_event("evt_w_1", "charge.refunded", "cus_4", now_s);
    assert_eq!(
        ingest
            .handle(send_to("wallets", ordered, true))
            .await
            .status,
        200
    );
    // Larger than a bus entry: its body goes to the blob bucket before it is queued.
    let mut large = stripe_event("evt_r_big", "charge.refunded", "cus_5", now_s);
    large["data"]["object"]["description"] = serde_json::json!("x".repeat(300 * 1024));
    let large_body = large.to_string();
    assert_eq!(ingest.handle(send(large, true)).await.status, 200);
    let mut ingest_more = startup;
    ingest_more.extend(ingest_calls.take());
    assert!(
        ingest_more
            .iter()
            .any(|c| c.operation == "AmazonS3.PutObject"),
        "{ingest_more:?}"
    );

    // Worker, from its environment only: the first event to the bus and the target queue,
    // then again as a duplicate.
    let worker_calls = Recorder::start(&moto).await;
    let (worker, _) = inlet::bootstrap::worker_with(
        sdk_config_for_endpoint(worker_calls.endpoint(), REGION).await,
        vars(worker_env.clone()),
    )
    .await
    .expect("the worker starts from the template's environment");
    let mut worker_more = worker_calls.take();
    let received = receive(&sqs, events_queue, 5).await;
    let message = |id: &str| -> Vec<aws_sdk_sqs::types::Message> {
        received
            .iter()
            .filter(|m| m.body.as_deref().is_some_and(|b| b.contains(id)))
            .cloned()
            .collect()
    };
    let (second, third, fourth) = (message("evt_r_2"), message("evt_r_3"), message("evt_w_1"));
    let first = records(&message("evt_r_1"), 1);
    let result = tokio::time::timeout(Duration::from_secs(30), worker.process(&first))
        .await
        .expect("processed");
    assert!(
        matches!(
            result.outcomes.as_slice(),
            [(_, Outcome::Dispatched { .. })]
        ),
        "{result:?}"
    );
    let worker_seen = worker_calls.take();
    let again = worker.process(&first).await;
    assert!(
        matches!(again.outcomes.as_slice(), [(_, Outcome::Duplicate { .. })]),
        "{again:?}"
    );
    let duplicate = worker_calls.take();

    // The bus refuses the second event's entry: retried later, then dead-lettered once the
    // attempts are spent.
    let refused_entry = r#"{"FailedEntryCount":1,"Entries":[{"ErrorCode":"InternalFailure","ErrorMessage":"injected by the rehearsal"}]}"#;
    worker_calls.answer_next("AWSEvents.PutEvents", refused_entry);
    let retried = worker.process(&records(&second, 1)).await;
    assert!(
        matches!(retried.outcomes.as_slice(), [(_, Outcome::Failed { .. })]),
        "{retried:?}"
    );
    worker_calls.answer_next("AWSEvents.PutEvents", refused_entry);
    let last = worker_env
        .get("INLET_MAX_RECEIVE_COUNT")
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let dead = worker.process(&records(&second, last)).await;
    assert!(
        matches!(
            dead.outcomes.as_slice(),
            [(_, Outcome::DeadLettered { .. })]
        ),
        "{dead:?}"
    );
    // A check's `on` event: the check is stored and its message sent to the checks queue.
    let scheduling = worker.process(&records(&third, 1)).await;
    assert!(
        matches!(
            scheduling.outcomes.as_slice(),
            [(_, Outcome::Dispatched { .. })]
        ),
        "{scheduling:?}"
    );
    // An ordered source: its entity's version is read and recorded.
    let guarded = worker.process(&records(&fourth, 1)).await;
    assert!(
        matches!(
            guarded.outcomes.as_slice(),
            [(_, Outcome::Dispatched { .. })]
        ),
        "{guarded:?}"
    );
    // The claim-checked event: read back from the bucket, checked, dispatched.
    let claimed = worker.process(&records(&message("evt_r_big"), 1)).await;
    assert!(
        matches!(
            claimed.outcomes.as_slice(),
            [(_, Outcome::Dispatched { .. })]
        ),
        "{claimed:?}"
    );
    let claim_calls = worker_calls.take();
    assert!(
        claim_calls
            .iter()
            .any(|c| c.operation == "AmazonS3.GetObject"),
        "{claim_calls:?}"
    );
    // The target queue takes up to 1 MiB: the whole event, its body in place (beside the
    // three events forwarded before it).
    let forwarded = receive(&sqs, &target_url, 4).await;
    let back: Vec<serde_json::Value> = forwarded
        .iter()
        .filter_map(|m| serde_json::from_str(m.body.as_deref()?).ok())
        .filter(|v: &serde_json::Value| v["dedupe_key"] == "stripe#evt_r_big")
        .collect();
    assert_eq!(back.len(), 1, "one forwarded copy of the large event");
    assert!(
        back[0]["body"].as_str() == Some(large_body.as_str()),
        "the large event's body is not forwarded byte-exact"
    );
    worker_more.extend(claim_calls);
    worker_more.extend(worker_calls.take());

    // Poller: a scheduled run, and the check the first event scheduled (not due yet:
    // deferred with a fresh message).
    let poller_calls = Recorder::start(&moto).await;
    let (parts, _) = inlet::bootstrap::poller_with(
        sdk_config_for_endpoint(poller_calls.endpoint(), REGION).await,
        vars(poller_env.clone()),
    )
    .await
    .expect("the poller starts from the template's environment");
    let deadline = inlet::ports::Clock::now_ms(&inlet::ports::SystemClock) + 30_000;
    let reports = parts
        .poller
        .run_invocation("stripe", deadline)
        .await
        .expect("a scheduled run");
    assert!(
        reports.iter().map(|r| r.enqueued.len()).sum::<usize>() > 0,
        "{reports:?}"
    );
    let checks_queue = &stack.resources["ChecksQueue"].reference;
    // The check message is delayed until the check is due (a minute at least): what the
    // event source mapping will hand over is the message the worker sent, taken from its call.
    let check_body = worker_more
        .iter()
        .find(|c| {
            c.operation == "AmazonSQS.SendMessage"
                && c.body["QueueUrl"].as_str() == Some(checks_queue)
        })
        .and_then(|c| c.body["MessageBody"].as_str())
        .unwrap_or_else(|| panic!("the worker sent no check message: {worker_more:?}"))
        .to_string();
    let check_messages = [aws_sdk_sqs::types::Message::builder()
        .message_id("check-message-1")
        .receipt_handle("check-receipt-1")
        .body(check_body)
        .build()];
    let checks = parts.checks.as_ref().expect("the source has checks");
    let fired = checks.process(&records(&check_messages, 1), deadline).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    let poller_seen = poller_calls.take();

    Rehearsed {
        stack,
        arns,
        ingest: ingest_seen,
        worker: worker_seen,
        duplicate,
        ingest_more,
        worker_more,
        poller: poller_seen,
    }
}

/// What AWS itself does with a function's role, which no call of the function shows: each
/// `(role, action, resource)` with the reason. Anything else a role grants must be used.
fn aws_side(stack: &Stack, role: &str) -> Vec<(String, String, &'static str)> {
    let arn = |logical: &str| stack.resources[logical].arn.clone();
    let log_group = match role {
        "IngestRole" => "IngestLogGroup",
        "WorkerRole" => "WorkerLogGroup",
        _ => "PollerLogGroup",
    };
    let mut out = vec![
        (
            "logs:CreateLogStream".to_string(),
            arn(log_group),
            "Lambda writes the function's logs",
        ),
        (
            "logs:PutLogEvents".to_string(),
            arn(log_group),
            "Lambda writes the function's logs",
        ),
    ];
    for key in stack.params["SecretsKmsKeyArns"].split(',') {
        out.push((
            "kms:Decrypt".into(),
            key.to_string(),
            "SSM and Secrets Manager decrypt a customer-managed key's secrets as the caller",
        ));
    }
    for action in ["xray:PutTraceSegments", "xray:PutTelemetryRecords"] {
        out.push((
            action.into(),
            "*".into(),
            "with Tracing on, Lambda's X-Ray daemon sends the traces with the function's role",
        ));
    }
    let consumed = match role {
        "WorkerRole" => Some("EventsQueue"),
        "PollerRole" => Some("ChecksQueue"),
        _ => None,
    };
    if let Some(queue) = consumed {
        for action in [
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
        ] {
            out.push((
                action.into(),
                arn(queue),
                "the SQS event source mapping polls and deletes with the function's role",
            ));
        }
    }
    if role == "PollerRole" {
        out.push((
            "sqs:SendMessage".into(),
            arn("PollDeadLetterQueue"),
            "Lambda sends a failed asynchronous invocation to its on-failure destination",
        ));
    }
    out
}

#[tokio::test]
async fn every_call_each_function_makes_is_granted_and_every_grant_is_used() {
    let seen = rehearse().await;
    let bus = &seen.stack.resources["EventBus"].reference;
    assert!(
        seen.worker
            .iter()
            .any(|c| c.operation == "AWSEvents.PutEvents" && c.resources.contains(bus)),
        "{:?}",
        seen.worker
    );
    assert!(
        seen.duplicate
            .iter()
            .all(|c| c.operation != "AWSEvents.PutEvents"),
        "{:?}",
        seen.duplicate
    );
    let by_role = [
        (
            "IngestRole",
            [seen.ingest.clone(), seen.ingest_more.clone()].concat(),
        ),
        (
            "WorkerRole",
            [
                seen.worker.clone(),
                seen.duplicate.clone(),
                seen.worker_more.clone(),
            ]
            .concat(),
        ),
        ("PollerRole", seen.poller.clone()),
    ];
    for (role, calls) in by_role {
        let grants = seen.stack.role_grants(role);
        let needed = needs(&calls, &seen.arns);
        for (action, arn) in &needed {
            assert!(
                grants
                    .iter()
                    .any(|(a, r)| a == action && glob(r, arn)),
                "{role} does not grant {action} on {arn}, which the function calls; it grants {grants:#?}"
            );
        }
        let aws = aws_side(&seen.stack, role);
        // An exception the template no longer needs is dropped from the list, not kept.
        for (action, resource, why) in &aws {
            assert!(
                grants.iter().any(|(a, r)| a == action && r == resource),
                "{role}: the exception {action} on {resource} ({why}) is not granted"
            );
        }
        let unused: Vec<&(String, String)> = grants
            .iter()
            .filter(|(a, r)| {
                !needed.iter().any(|(na, narn)| na == a && glob(r, narn))
                    && !aws.iter().any(|(aa, ar, _)| aa == a && ar == r)
            })
            .collect();
        assert!(
            unused.is_empty(),
            "{role} grants what no call uses and AWS does not need: {unused:#?}\nthe calls: {needed:#?}"
        );
    }
}
