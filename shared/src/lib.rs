//! Inlet core. Domain logic (verification, envelopes, dedupe, routing) over small ports;
//! no AWS type appears outside `adapters::aws` and `lambda`.

pub mod adapters;
pub mod bootstrap;
pub mod checks;
pub mod config;
pub mod dlq;
mod enqueue;
pub mod envelope;
pub mod ingest;
pub mod lambda;
#[cfg(feature = "embedded")]
pub mod local;
pub mod metrics;
pub mod ordering;
pub mod poll;
pub mod ports;
pub mod providers;
pub mod remote_secrets;
pub mod request;
pub mod retry;
pub mod secret;
pub mod targets;
pub mod telemetry;
pub mod time;
pub mod trail;
pub mod worker;

/// `make test` searches every log line of the suite for secrets: capture the unit tests' too.
#[cfg(test)]
#[ctor::ctor(unsafe)]
fn capture_test_logs() {
    telemetry::init_test_capture();
}
