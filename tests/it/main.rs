//! The one integration-test binary (each binary links the AWS SDK again, which costs minutes of build on two cores).

mod archive;
mod calls;
mod catalogue;
mod checks;
mod cli;
mod conformance;
mod console;
mod cursor;
mod dlq_aws;
mod docs;
mod events;
mod faults;
mod hostile;
mod hostile_batches;
mod hostile_server;
mod lambda;
mod large;
mod load;
mod ordering;
mod pipeline;
mod polling;
mod polling_acceptance;
pub(crate) mod rehearsal;
mod retention;
mod retries;
mod runtime_stub;
mod scale;
mod secrets;
mod support;
mod targets;

/// `make test` searches every log line of the suite for secrets: capture these tests' too.
#[ctor::ctor(unsafe)]
fn capture_test_logs() {
    inlet::telemetry::init_test_capture();
}
