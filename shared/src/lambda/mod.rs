//! Conversions between the Lambda event types of `aws_lambda_events` and the domain, so each
//! function's `main.rs` stays a few lines and tests can drive the same code with real event
//! fixtures.

#[cfg(feature = "lambda-http")]
pub mod http;
#[cfg(feature = "lambda-sqs")]
pub mod sqs;
