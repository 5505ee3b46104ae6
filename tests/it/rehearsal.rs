//! The deploy rehearsal: what a deployment wires, checked without an account. The functions'
//! environment comes from `template.yaml` itself (its intrinsics resolved against moto
//! resources made for the template's queues, table and bus), the real composition roots
//! (`bootstrap::*_with`, what each Lambda's `main` runs) build the parts from that
//! environment alone, and one signed webhook goes ingest → queue → worker → bus. Every AWS
//! call each function makes passes a recording proxy, and each must be granted by that
//! function's role in the template, on that resource.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use inlet::adapters::aws::{create_table, sdk_config_for_endpoint};
use inlet::lambda::sqs::to_records;
use inlet::worker::Outcome;

use crate::lambda::{http_event, sqs_event, webhook_request, APIGW_V2};
use crate::pipeline::{sample_body, signed_headers};
use crate::support::aws::{endpoint, sdk_config, unique_name, REGION};
use crate::support::cfn::{load, Physical, Stack};
use crate::support::recorder::{Call, Recorder};

/// moto's account.
const ACCOUNT: &str = "123456789012";
const STRIPE_SECRET: &str = "whsec_rehearsal_0123456789abcdefghij";

const CONFIG: &str = r#"{
  "sources": [{"id": "stripe", "provider": "stripe", "secrets": ["env:STRIPE_WHSEC"]}],
  "targets": [{"id": "bus", "kind": "eventbridge"}],
  "routes": [{"sources": ["stripe"], "targets": ["bus"]}]
}"#;

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
        other => panic!("service {other} not modelled"),
    };
    let op = match (prefix, op) {
        ("sqs", batch) if batch.ends_with("Batch") => batch.trim_end_matches("Batch"),
        (_, op) => op,
    };
    format!("{prefix}:{op}")
}

/// The ARN a recorded resource (a queue URL, table or bus name) stands for.
fn arn_of(resources: &BTreeMap<String, Physical>, named: &str) -> String {
    resources
        .values()
        .find(|p| p.reference == named || p.arn == named)
        .map(|p| p.arn.clone())
        .unwrap_or_else(|| panic!("{named} is none of the stack's resources"))
}

fn assert_granted(stack: &Stack, role: &str, calls: &[Call]) {
    let grants = stack.role_grants(role);
    assert!(!calls.is_empty(), "{role}: no call recorded");
    for call in calls {
        let action = action(&call.operation);
        assert!(!call.resources.is_empty(), "{call:?} names no resource");
        for r in &call.resources {
            let arn = arn_of(&stack.resources, r);
            assert!(
                grants.iter().any(|(a, res)| *a == action && *res == arn),
                "{role} does not grant {action} on {arn} (the function calls {}); it grants {grants:#?}",
                call.operation
            );
        }
    }
}

fn vars(env: BTreeMap<String, String>) -> inlet::config::Vars {
    Arc::new(move |name: &str| env.get(name).cloned())
}

/// What a rehearsal saw: the stack, and the AWS calls of each function on the way.
pub(crate) struct Rehearsed {
    pub stack: Stack,
    pub ingest: Vec<Call>,
    pub worker: Vec<Call>,
    /// The worker's calls for the same message delivered again (SQS is at-least-once).
    pub duplicate: Vec<Call>,
}

/// Deploys the template's wiring on moto and sends one signed Stripe webhook through it.
pub(crate) async fn rehearse() -> Rehearsed {
    let stack_name = unique_name("rehearsal");
    let template = load(&template());
    let resources = physical_resources(&stack_name, &template).await;
    let params = BTreeMap::from([
        ("InletConfig".to_string(), CONFIG.to_string()),
        (
            "WebhookSecrets".to_string(),
            serde_json::json!({"STRIPE_WHSEC": STRIPE_SECRET}).to_string(),
        ),
    ]);
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
                    .resource(logical)
                    .get("Type")
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
    let ingest_env = &env["IngestFunction"];
    let worker_env = &env["WorkerFunction"];
    assert_eq!(ingest_env["INLET_QUEUE_URL"], worker_env["INLET_QUEUE_URL"]);

    // Ingest, built as its main builds it, from its environment only.
    let moto = endpoint();
    let ingest_calls = Recorder::start(&moto).await;
    let (ingest, _) = inlet::bootstrap::ingest_with(
        sdk_config_for_endpoint(ingest_calls.endpoint(), REGION).await,
        vars(ingest_env.clone()),
    )
    .await
    .expect("ingest starts from the template's environment");
    let cfg = {
        let env = ingest_env.clone();
        let vars = vars(env);
        inlet::config::load_from_env(&inlet::config::ProcessEnv::from_vars(vars).expect("env"))
            .expect("the config loads")
    };
    let body = sample_body("stripe", 1);
    let now_ms = inlet::ports::Clock::now_ms(&inlet::ports::SystemClock);
    let headers = signed_headers(&cfg, "stripe", &body, now_ms, "d");
    let event = http_event(APIGW_V2, "/webhooks/stripe", &headers, &body, false);
    let answer = ingest.handle(webhook_request(&event)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // The event source mapping's part: receive from the queue the template gives ingest.
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let received = sqs
        .receive_message()
        .queue_url(&ingest_env["INLET_QUEUE_URL"])
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive")
        .messages
        .unwrap_or_default();
    assert_eq!(received.len(), 1, "{received:?}");
    let records = to_records(sqs_event(&[(
        received[0].message_id.clone().expect("id"),
        received[0].body.clone().expect("body"),
        1,
    )]))
    .records;

    // Worker, from its environment only, to the stack's bus.
    let worker_calls = Recorder::start(&moto).await;
    let (worker, _) = inlet::bootstrap::worker_with(
        sdk_config_for_endpoint(worker_calls.endpoint(), REGION).await,
        vars(worker_env.clone()),
    )
    .await
    .expect("the worker starts from the template's environment");
    let result = tokio::time::timeout(Duration::from_secs(30), worker.process(&records))
        .await
        .expect("processed");
    assert!(
        matches!(
            result.outcomes.as_slice(),
            [(_, Outcome::Dispatched { .. })]
        ),
        "{result:?}"
    );

    let ingest_seen = ingest_calls.take();
    let worker_seen = worker_calls.take();

    // The same message again: a duplicate, which reaches no target and leaves a trail line.
    let again = worker.process(&records).await;
    assert!(
        matches!(again.outcomes.as_slice(), [(_, Outcome::Duplicate { .. })]),
        "{again:?}"
    );
    Rehearsed {
        stack,
        ingest: ingest_seen,
        worker: worker_seen,
        duplicate: worker_calls.take(),
    }
}

#[tokio::test]
async fn a_webhook_goes_through_the_wiring_the_template_defines_and_every_call_is_granted() {
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
    assert_granted(&seen.stack, "IngestRole", &seen.ingest);
    assert_granted(&seen.stack, "WorkerRole", &seen.worker);
    assert_granted(&seen.stack, "WorkerRole", &seen.duplicate);
}
