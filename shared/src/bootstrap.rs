//! Building a Lambda's parts from its environment, once per cold start: one helper for
//! all three functions instead of the same set-up in every `main.rs`.

use std::sync::Arc;

use crate::config::{self, Config, ProcessEnv};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("config: {0}")]
    Config(#[from] config::ConfigError),
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    #[error("{0}")]
    Target(#[from] crate::targets::TargetBuildError),
    #[error("{0}")]
    Http(String),
}

#[cfg(any(
    feature = "aws-sqs",
    feature = "aws-dynamodb",
    feature = "aws-eventbridge"
))]
fn require(name: &'static str) -> Result<String, BootError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(BootError::MissingEnv(name))
}

/// Log format, EMF metrics on, config validated.
pub fn load_config() -> Result<Arc<Config>, BootError> {
    crate::telemetry::init_json_logs(false);
    crate::metrics::enable(true);
    let env = ProcessEnv::load()?;
    Ok(Arc::new(config::load_from_env(&env)?))
}

/// Ingest: `INLET_QUEUE_URL` for envelopes, `INLET_TABLE` for the refusal trail.
#[cfg(all(feature = "aws-sqs", feature = "aws-dynamodb"))]
pub async fn ingest() -> Result<crate::ingest::Ingest, BootError> {
    use crate::adapters::aws::{sdk_config_from_env, DynamoLedger, SqsQueue};
    use crate::ingest::Ingest;
    use crate::ports::SystemClock;

    let config = load_config()?;
    let sdk = sdk_config_from_env().await;
    let queue = SqsQueue::from_conf(&sdk, require("INLET_QUEUE_URL")?);
    let ledger = DynamoLedger::from_conf(&sdk, require("INLET_TABLE")?);
    Ok(Ingest::new(
        config,
        Arc::new(queue),
        Arc::new(ledger),
        Arc::new(SystemClock),
    ))
}

/// Whether any source has delayed checks (then the worker and the poller need the checks
/// queue; otherwise they neither need nor call it).
pub fn has_checks(config: &Config) -> bool {
    config.sources.values().any(|s| !s.checks.is_empty())
}

/// Worker: `INLET_TABLE` for dedupe, `INLET_BUS_NAME` as the default EventBridge bus, and
/// `INLET_CHECKS_QUEUE_URL` when a source has delayed checks; SQS and HTTP clients for the
/// targets of those kinds.
#[cfg(all(
    feature = "aws-dynamodb",
    feature = "aws-eventbridge",
    feature = "aws-sqs",
    feature = "http-fetch"
))]
pub async fn worker() -> Result<crate::worker::Worker, BootError> {
    use crate::adapters::aws::{sdk_config_from_env, DynamoLedger, EventBridgeBus, SqsQueue};
    use crate::checks::CheckScheduler;
    use crate::ports::{EventBus, Queue, SystemClock};
    use crate::targets::build_targets;
    use crate::worker::Worker;

    let config = load_config()?;
    let sdk = sdk_config_from_env().await;
    let ledger = Arc::new(DynamoLedger::from_conf(&sdk, require("INLET_TABLE")?));
    let default_bus = std::env::var("INLET_BUS_NAME")
        .ok()
        .filter(|b| !b.is_empty());
    let bus_for = |name: Option<&str>| -> Result<Arc<dyn EventBus>, String> {
        let bus = name
            .map(str::to_string)
            .or_else(|| default_bus.clone())
            .ok_or("no bus_name and INLET_BUS_NAME is not set")?;
        Ok(Arc::new(EventBridgeBus::from_conf(&sdk, bus)))
    };
    let queue_for = |url: &str| -> Result<Arc<dyn Queue>, String> {
        // A bare name would need a GetQueueUrl call (and its IAM grant) per cold start.
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "queue_url {url:?}: on AWS an SQS target needs the queue's URL"
            ));
        }
        Ok(Arc::new(SqsQueue::from_conf(&sdk, url)))
    };
    let targets = build_targets(&config, &bus_for, &queue_for)?;
    let checks = if has_checks(&config) {
        let queue = SqsQueue::from_conf(&sdk, require("INLET_CHECKS_QUEUE_URL")?);
        Some(CheckScheduler::new(ledger.clone(), Arc::new(queue)))
    } else {
        None
    };
    let worker = Worker::new(config, ledger, targets, Arc::new(SystemClock));
    Ok(match checks {
        Some(c) => worker.with_checks(c),
        None => worker,
    })
}

/// What the poller Lambda runs: scheduled polls, and due checks when a source has checks.
#[cfg(all(feature = "aws-sqs", feature = "aws-dynamodb", feature = "http-fetch"))]
pub struct PollerParts {
    pub poller: Arc<crate::poll::runner::Poller>,
    pub checks: Option<crate::checks::CheckRunner>,
}

/// Poller: `INLET_QUEUE_URL` for envelopes, `INLET_TABLE` for poll state, checks and the
/// trail, an HTTP client for the providers' APIs, and `INLET_CHECKS_QUEUE_URL` (to defer a
/// check not yet due) when a source has delayed checks.
#[cfg(all(feature = "aws-sqs", feature = "aws-dynamodb", feature = "http-fetch"))]
pub async fn poller() -> Result<PollerParts, BootError> {
    use crate::adapters::aws::{sdk_config_from_env, DynamoLedger, SqsQueue};
    use crate::adapters::http_client::ReqwestHttp;
    use crate::checks::CheckRunner;
    use crate::poll::runner::Poller;
    use crate::ports::SystemClock;

    let config = load_config()?;
    let sdk = sdk_config_from_env().await;
    let queue = SqsQueue::from_conf(&sdk, require("INLET_QUEUE_URL")?);
    let ledger = Arc::new(DynamoLedger::from_conf(&sdk, require("INLET_TABLE")?));
    let http = ReqwestHttp::new(crate::poll::MAX_RESPONSE_BYTES).map_err(BootError::Http)?;
    let clock = Arc::new(SystemClock);
    let poller = Arc::new(Poller::new(
        config.clone(),
        Arc::new(queue),
        ledger.clone(),
        ledger.clone(),
        Arc::new(http),
        clock.clone(),
        // One invocation at a time per instance: the instance is the lease holder.
        format!("poller-{}", uuid::Uuid::new_v4().simple()),
    ));
    let checks = if has_checks(&config) {
        let checks_queue = SqsQueue::from_conf(&sdk, require("INLET_CHECKS_QUEUE_URL")?);
        Some(CheckRunner::new(
            config,
            ledger.clone(),
            Arc::new(checks_queue),
            ledger,
            poller.clone(),
            clock,
        ))
    } else {
        None
    };
    Ok(PollerParts { poller, checks })
}
