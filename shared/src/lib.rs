//! Inlet core. Domain logic (verification, envelopes, dedupe, routing) over small ports;
//! no AWS type appears outside `adapters::aws` and `lambda`.
//!
//! The modules form layers, and no two import each other (`make test` runs
//! `infra/scripts/check-module-cycles`):
//! - leaves: `time`, `secret`, `request`, `retry`, `metrics`, `telemetry`;
//! - the domain: `ports` (the traits the world is reached through), `envelope`, `archive`, `providers`
//!   (one file per provider), `ordering`, `poll` (the poll kinds), `targets`, `trail`,
//!   `remote_secrets`;
//! - `config`: the document, its validation, and the model everything below is built into;
//! - the pipeline over a `Config`: `enqueue`, `ingest`, `poller`, `worker`, `checks`, `dlq`;
//! - the edges: `adapters` (AWS and embedded implementations of the ports), `lambda` (event
//!   shapes), `bootstrap` and `local` (composition roots of the Lambdas and `inlet dev`).
//!
//! The Lambdas use only `bootstrap`, `lambda`, `telemetry` and `poller`'s run report; the
//! CLI's modules are listed in `docs/architecture.md` ("The library's surface"), which a test
//! keeps true.

pub mod adapters;
pub mod archive;
pub mod bootstrap;
mod bytescan;
pub mod checks;
pub mod config;
pub mod dlq;
mod enqueue;
pub mod envelope;
pub mod ingest;
pub mod lambda;
#[cfg(feature = "embedded")]
pub mod local;
mod metrics;
pub mod ordering;
pub mod poll;
pub mod poller;
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
