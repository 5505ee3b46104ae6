//! Adapters for the ports: AWS services (`aws`) and SQLite (`embedded`), selected by
//! Cargo features so a Lambda never links SQLite and the CLI never needs the AWS SDK.

#[cfg(any(
    feature = "aws-sqs",
    feature = "aws-dynamodb",
    feature = "aws-eventbridge",
    feature = "aws-secrets"
))]
pub mod aws;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "http-fetch")]
pub mod http_client;
#[cfg(feature = "http-fetch")]
pub mod https;
