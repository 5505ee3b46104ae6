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
    #[error("lease: {0}")]
    Lease(String),
}

/// The dedupe lease must outlast a worker invocation (else a live worker's key could be
/// taken over and its event dispatched twice) and end within the queue's visibility (else a
/// redelivery meets a dead worker's live lease). The config already checked lease ≤
/// visibility; this adds the function timeout, when the environment tells it.
pub fn check_lease(
    settings: &config::Settings,
    worker_timeout_seconds: Option<u64>,
) -> Result<(), BootError> {
    let lease = settings.lease_seconds;
    let visibility = settings.visibility_timeout_seconds;
    if lease > visibility {
        return Err(BootError::Lease(format!(
            "INLET_LEASE_SECONDS ({lease}) is longer than the queue visibility ({visibility} s): a redelivered message could meet a dead worker's live lease"
        )));
    }
    if let Some(timeout) = worker_timeout_seconds {
        if lease < timeout {
            return Err(BootError::Lease(format!(
                "INLET_LEASE_SECONDS ({lease}) is shorter than the worker timeout ({timeout} s): a live worker's key could be taken over and its event dispatched twice"
            )));
        }
    }
    Ok(())
}

/// [`check_lease`] for the settings and for every source's own `lease_seconds`.
pub fn check_leases(config: &Config, worker_timeout_seconds: Option<u64>) -> Result<(), BootError> {
    check_lease(&config.settings, worker_timeout_seconds)?;
    if let Some(timeout) = worker_timeout_seconds {
        for (id, source) in &config.sources {
            let lease = source.lease_ms / 1000;
            if lease < timeout as i64 {
                return Err(BootError::Lease(format!(
                    "source {id}: lease_seconds ({lease}) is shorter than the worker timeout ({timeout} s): a live worker's key could be taken over and its event dispatched twice"
                )));
            }
        }
    }
    Ok(())
}

/// The worker's timeout in seconds: `AWS_LAMBDA_FUNCTION_TIMEOUT` when the runtime sets it,
/// else `INLET_WORKER_TIMEOUT_SECONDS` (the template passes `WorkerTimeoutSeconds`), else
/// unknown (the check is skipped). A value that is not a number is an error, not a skip.
pub fn worker_timeout_seconds(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<u64>, BootError> {
    for name in [
        "AWS_LAMBDA_FUNCTION_TIMEOUT",
        "INLET_WORKER_TIMEOUT_SECONDS",
    ] {
        if let Some(v) = var(name).filter(|v| !v.trim().is_empty()) {
            return v.trim().parse().map(Some).map_err(|_| {
                BootError::Lease(format!("{name} = {v:?} is not a whole number of seconds"))
            });
        }
    }
    Ok(None)
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
    if config.needs_fifo() && !queue.is_fifo() {
        // Not fatal: the events still flow, only without the order the config asks for.
        tracing::warn!(
            "a source sets order_by but INLET_QUEUE_URL is a standard queue: deploy with QueueType=fifo for per-entity order"
        );
    }
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

/// Worker: `INLET_TABLE` for dedupe, `INLET_BUS_NAME` as the default EventBridge bus,
/// `INLET_QUEUE_URL` (visibility changes: the backoff) and `INLET_DLQ_URL` (permanent
/// failures), and `INLET_CHECKS_QUEUE_URL` when a source has delayed checks; SQS and HTTP
/// clients for the targets of those kinds. Refuses to start when the lease does not fit
/// between the function timeout and the queue visibility.
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
    check_leases(&config, worker_timeout_seconds(|n| std::env::var(n).ok())?)?;
    let sdk = sdk_config_from_env().await;
    let ledger = Arc::new(DynamoLedger::from_conf(&sdk, require("INLET_TABLE")?));
    let main_queue = SqsQueue::from_conf(&sdk, require("INLET_QUEUE_URL")?);
    let dlq = SqsQueue::from_conf(&sdk, require("INLET_DLQ_URL")?);
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
    let worker = Worker::new(config, ledger, targets, Arc::new(SystemClock))
        .with_queues(Arc::new(main_queue), Arc::new(dlq));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(lease: u64, visibility: u64) -> config::Settings {
        config::Settings {
            lease_seconds: lease,
            visibility_timeout_seconds: visibility,
            ..Default::default()
        }
    }

    #[test]
    fn the_lease_must_fit_between_the_worker_timeout_and_the_visibility() {
        assert!(check_lease(&settings(60, 180), Some(30)).is_ok());
        assert!(check_lease(&settings(60, 180), Some(60)).is_ok());
        assert!(
            check_lease(&settings(60, 180), None).is_ok(),
            "unknown timeout: skipped"
        );
        let short = check_lease(&settings(20, 180), Some(30)).expect_err("lease < timeout");
        assert!(
            short
                .to_string()
                .contains("shorter than the worker timeout (30 s)"),
            "{short}"
        );
        let long = check_lease(&settings(200, 180), None).expect_err("lease > visibility");
        assert!(
            long.to_string().contains("queue visibility (180 s)"),
            "{long}"
        );
    }

    #[test]
    fn every_sources_own_lease_must_outlast_the_worker_timeout() {
        let doc = config::ConfigDoc::parse(
            r#"
            [[sources]]
            id = "quick"
            provider = "github"
            secrets = ["env:S"]
            lease_seconds = 20
            [[targets]]
            id = "bus"
            kind = "eventbridge"
            [[routes]]
            sources = ["*"]
            targets = ["bus"]
            "#,
            Some("toml"),
        )
        .expect("parses");
        let cfg =
            config::validate(doc, ".".into(), &|_: &str| Some("s".to_owned())).expect("valid");
        assert!(check_leases(&cfg, None).is_ok());
        assert!(check_leases(&cfg, Some(20)).is_ok());
        let err = check_leases(&cfg, Some(30)).expect_err("20 s < 30 s");
        assert!(err.to_string().contains("source quick"), "{err}");
    }

    #[test]
    fn the_worker_timeout_comes_from_the_runtime_then_the_template() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(worker_timeout_seconds(env(&[])).ok(), Some(None));
        assert_eq!(
            worker_timeout_seconds(env(&[("INLET_WORKER_TIMEOUT_SECONDS", "30")])).ok(),
            Some(Some(30))
        );
        assert_eq!(
            worker_timeout_seconds(env(&[
                ("AWS_LAMBDA_FUNCTION_TIMEOUT", "45"),
                ("INLET_WORKER_TIMEOUT_SECONDS", "30")
            ]))
            .ok(),
            Some(Some(45))
        );
        assert!(worker_timeout_seconds(env(&[("INLET_WORKER_TIMEOUT_SECONDS", "soon")])).is_err());
    }
}
