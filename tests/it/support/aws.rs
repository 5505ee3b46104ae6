//! The AWS side of the test harness: SDK clients for the moto server that
//! `infra/scripts/with-moto` starts, and uniquely named resources per test so tests run in
//! parallel against one server.
//!
//! Clients get an explicit endpoint and static dummy credentials: nothing here ever reads
//! the credential chain, so no test can reach the instance metadata service or real AWS.

use aws_config::SdkConfig;
use aws_sdk_sqs::types::QueueAttributeName;
use inlet::adapters::aws::{
    create_table, sdk_config_for_endpoint, DynamoLedger, EventBridgeBus, S3Blobs, SqsQueue,
};

pub const ENDPOINT_VAR: &str = "INLET_TEST_AWS_ENDPOINT";
pub const REGION: &str = "us-east-1";

/// The moto endpoint. A missing one fails the test (never skips it): the AWS half of the
/// suite is as much the contract as the embedded half.
pub fn endpoint() -> String {
    match std::env::var(ENDPOINT_VAR) {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ => panic!(
            "{ENDPOINT_VAR} is not set: the AWS tests run against a local moto server. Run them through \
             `make test` or infra/scripts/with-moto, e.g. `infra/scripts/with-moto cargo test -p inlet-cli --test it`"
        ),
    }
}

/// Built per test: a `#[tokio::test]` runtime ends with its test, and a client's
/// connection pool must not outlive the runtime it was made on.
pub async fn sdk_config() -> SdkConfig {
    sdk_config_for_endpoint(&endpoint(), REGION).await
}

/// A resource name no other test uses (SQS allows 80 characters, `[A-Za-z0-9_-]`).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A main queue whose `RedrivePolicy` moves a message to `dlq` after `max_receive_count`
/// receives.
pub struct AwsQueues {
    pub main: SqsQueue,
    pub dlq: SqsQueue,
}

pub async fn queues_with_dlq(max_receive_count: u32) -> AwsQueues {
    let client = aws_sdk_sqs::Client::new(&sdk_config().await);
    let name = unique_name("inlet-test");

    let dlq_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .expect("create the DLQ")
        .queue_url
        .expect("the DLQ has a URL");
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("read the DLQ ARN")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("the DLQ has an ARN");

    // AWS documents maxReceiveCount as a string inside the policy JSON.
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count.to_string(),
    });
    let main_url = client
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .expect("create the main queue")
        .queue_url
        .expect("the main queue has a URL");

    AwsQueues {
        main: SqsQueue::new(client.clone(), main_url),
        dlq: SqsQueue::new(client, dlq_url),
    }
}

/// A fresh, empty bucket as a blob store.
pub async fn blobs() -> S3Blobs {
    let blobs = S3Blobs::from_conf(&sdk_config().await, unique_name("inlet-blobs"));
    blobs
        .client()
        .create_bucket()
        .bucket(blobs.bucket())
        .send()
        .await
        .expect("create the bucket");
    blobs
}

/// A fresh ledger table with the production schema.
pub async fn ledger() -> DynamoLedger {
    let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
    let table = unique_name("inlet-test-ledger");
    create_table(&client, &table)
        .await
        .expect("create the ledger table");
    DynamoLedger::new(client, table)
}

/// The trail items `ids` each carry the table's TTL attribute: `expires_at_ms` in seconds.
pub async fn assert_trail_ttl<'a>(
    ledger: &DynamoLedger,
    ids: impl IntoIterator<Item = &'a str>,
    expires_at_ms: i64,
) {
    use aws_sdk_dynamodb::types::AttributeValue;
    use inlet::adapters::aws::dynamodb::TTL_ATTRIBUTE;
    for id in ids {
        let item = ledger
            .client()
            .get_item()
            .table_name(ledger.table())
            .key("pk", AttributeValue::S(format!("trail#{id}")))
            .send()
            .await
            .expect("get item")
            .item
            .expect("stored");
        assert_eq!(
            item.get(TTL_ATTRIBUTE),
            Some(&AttributeValue::N((expires_at_ms / 1000).to_string())),
            "{id}"
        );
    }
}

/// A fresh custom event bus.
pub async fn bus() -> EventBridgeBus {
    let client = aws_sdk_eventbridge::Client::new(&sdk_config().await);
    let name = unique_name("inlet-test-bus");
    client
        .create_event_bus()
        .name(&name)
        .send()
        .await
        .expect("create the event bus");
    EventBridgeBus::new(client, name)
}
