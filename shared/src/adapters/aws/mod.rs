//! AWS adapters for the ports: SQS (`Queue`), DynamoDB (`Ledger`), EventBridge (`EventBus`),
//! S3 (`BlobStore`), and the SDK configuration they share.
//!
//! A Lambda builds one [`aws_config::SdkConfig`] at start-up with [`sdk_config_from_env`]
//! (outside the handler, so warm invocations reuse the clients) and hands it to each
//! adapter's `from_conf`. Tests and `inlet` against an emulator use
//! [`sdk_config_for_endpoint`], which never consults the environment for credentials and so
//! never reaches the instance metadata service.

#[cfg(feature = "aws-dynamodb")]
pub mod dynamodb;
#[cfg(feature = "aws-eventbridge")]
pub mod eventbridge;
#[cfg(feature = "aws-s3")]
pub mod s3;
#[cfg(feature = "aws-secrets")]
pub mod secrets;
#[cfg(feature = "aws-sqs")]
pub mod sqs;

#[cfg(feature = "aws-dynamodb")]
pub use dynamodb::{create_table, DynamoLedger};
#[cfg(feature = "aws-eventbridge")]
pub use eventbridge::EventBridgeBus;
#[cfg(feature = "aws-s3")]
pub use s3::S3Blobs;
#[cfg(feature = "aws-secrets")]
pub use secrets::AwsSecretStore;
#[cfg(feature = "aws-sqs")]
pub use sqs::{MoveTask, SqsQueue};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

/// The SDK configuration of the environment: the standard credential chain and region,
/// and `AWS_ENDPOINT_URL` (or the per-service `AWS_ENDPOINT_URL_SQS`, …) when set, so the
/// same binary runs against AWS or any AWS-compatible endpoint.
pub async fn sdk_config_from_env() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An SDK configuration for an explicit endpoint (moto, a local emulator) with static dummy
/// credentials (`test`/`test`) and an explicit region. Nothing here falls back to the
/// credential chain, so it never calls the instance metadata service.
pub async fn sdk_config_for_endpoint(endpoint: &str, region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new("test", "test", None, None, "inlet-static"))
        .endpoint_url(endpoint)
        .load()
        .await
}
