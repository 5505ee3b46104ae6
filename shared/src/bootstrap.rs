//! Building a Lambda's parts from its environment, once per cold start: one helper for
//! all three functions instead of the same set-up in every `main.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{self, Config, ProcessEnv, Vars};
use crate::ports::Clock;
use crate::providers::Provider;

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
    #[error("secrets: {0}")]
    Secrets(#[from] crate::remote_secrets::RemoteSecretError),
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
            check_source_lease(id, source.lease_ms / 1000, timeout)?;
        }
    }
    Ok(())
}

/// A source's own `lease_seconds` against the worker's timeout (its upper bound, the
/// visibility, is the config's own check).
pub fn check_source_lease(id: &str, lease: i64, timeout: u64) -> Result<(), BootError> {
    if lease < timeout as i64 {
        return Err(BootError::Lease(format!(
            "source {id}: lease_seconds ({lease}) is shorter than the worker timeout ({timeout} s): a live worker's key could be taken over and its event dispatched twice"
        )));
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

#[cfg(all(feature = "aws-sqs", feature = "aws-dynamodb", feature = "aws-secrets"))]
fn require(vars: &Vars, name: &'static str) -> Result<String, BootError> {
    vars(name)
        .filter(|v| !v.is_empty())
        .ok_or(BootError::MissingEnv(name))
}

/// A validated config, and whether it read a secret store (then it is read again every
/// refresh interval, so rotated secrets and an edited SSM config apply without a redeploy).
pub struct Loaded {
    pub config: Arc<Config>,
    pub remote: bool,
}

/// The config read from `vars` (from SSM when `INLET_CONFIG=ssm:/name`),
/// refused if it holds settings for one machine (`config::single_machine_settings`), its
/// `ssm:` and `secretsmanager:` references read, and validated.
pub async fn load_config(
    store: &dyn crate::ports::SecretStore,
    vars: &Vars,
) -> Result<Loaded, BootError> {
    load_config_from(&ProcessEnv::from_vars(vars.clone())?, store).await
}

/// [`load_config`] from a given environment.
pub async fn load_config_from(
    env: &(dyn config::SecretEnv + Sync),
    store: &dyn crate::ports::SecretStore,
) -> Result<Loaded, BootError> {
    use crate::remote_secrets::{fetch_all, RemoteSecretError};

    let (doc, base, from_store) = match config::doc_source_from_env(env)? {
        config::DocSource::Ready(doc, base) => (doc, base, false),
        config::DocSource::Parameter(name) => {
            let text = store
                .parameter(&name)
                .await
                .map_err(RemoteSecretError::from)?;
            (
                config::ConfigDoc::parse(&text, None)?,
                std::path::PathBuf::from("."),
                true,
            )
        }
    };
    // Before any secret is fetched: a config written for one machine never starts here.
    config::refuse_single_machine(&doc)?;
    let values = fetch_all(store, doc.secret_references()).await?;
    let env = config::WithRemote {
        env,
        values: &values,
    };
    let config = config::finish_from_env(doc, base, &env)?;
    supply_cert_fetcher(config.sources.values().map(|s| &s.provider));
    Ok(Loaded {
        config: Arc::new(config),
        remote: from_store || !values.is_empty(),
    })
}

/// Give `providers` this build's certificate fetcher (PayPal's signing certificates, see
/// `ports::certs`): HTTPS with TLS verification where the `http-fetch` feature is on. Without
/// it, or if its client cannot be built, only pinned certificates verify. Every place that
/// builds providers from config and then verifies requests calls this once.
pub fn supply_cert_fetcher<'a>(providers: impl IntoIterator<Item = &'a Arc<dyn Provider>>) {
    #[cfg(feature = "http-fetch")]
    if let Ok(https) = crate::adapters::https::HttpsFetcher::new() {
        let fetcher: Arc<dyn crate::ports::CertFetcher> = Arc::new(https);
        for provider in providers {
            provider.use_cert_fetcher(&fetcher);
        }
    }
    #[cfg(not(feature = "http-fetch"))]
    let _ = providers;
}

/// How often a config that reads a secret store is read again: `INLET_SECRETS_REFRESH_SECONDS`
/// (default 300; 0 turns the refresh off).
pub fn refresh_interval(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Duration>, BootError> {
    const NAME: &str = "INLET_SECRETS_REFRESH_SECONDS";
    let seconds = match var(NAME).filter(|v| !v.trim().is_empty()) {
        None => 300,
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            BootError::Config(
                config::FieldError::new(NAME, format!("{v:?} is not a whole number of seconds"))
                    .into(),
            )
        })?,
    };
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

type Built<T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(T, bool), BootError>> + Send + 'static>,
>;
type Build<T> = Box<dyn Fn() -> Built<T> + Send + Sync>;

/// A Lambda's part (ingest, worker, poller), rebuilt from a freshly read config once its
/// interval has passed, when its config reads a secret store. A failed rebuild keeps the
/// part it has (a secret store outage must not stop intake) and tries again after the next
/// interval. One invocation at a time per Lambda instance, so the rebuild happens between
/// invocations, never under one.
pub struct Refreshing<T> {
    every: Option<Duration>,
    build: Build<T>,
    state: tokio::sync::Mutex<(Instant, Arc<T>)>,
}

impl<T: Send + Sync + 'static> Refreshing<T> {
    /// Build the part once; `build` returns it and whether it read a secret store.
    pub async fn start<F, Fut>(every: Option<Duration>, build: F) -> Result<Self, BootError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(T, bool), BootError>> + Send + 'static,
    {
        let (part, remote) = build().await?;
        Ok(Self {
            every: every.filter(|_| remote),
            build: Box::new(move || Box::pin(build())),
            state: tokio::sync::Mutex::new((Instant::now(), Arc::new(part))),
        })
    }

    pub async fn get(&self) -> Arc<T> {
        let mut state = self.state.lock().await;
        if let Some(every) = self.every {
            if state.0.elapsed() >= every {
                state.0 = Instant::now();
                match (self.build)().await {
                    Ok((part, _)) => {
                        state.1 = Arc::new(part);
                        tracing::info!("config and secrets read again");
                    }
                    Err(e) => {
                        // A stack-wide figure: the failure is the store's, not a source's.
                        crate::metrics::count(
                            crate::ports::SystemClock.now_ms(),
                            "secrets_refresh_failures",
                            "all",
                        );
                        tracing::warn!(error = %e, "reading config and secrets again failed; keeping the previous ones");
                    }
                }
            }
        }
        state.1.clone()
    }
}

/// Ingest: `INLET_QUEUE_URL` for envelopes, `INLET_TABLE` for the refusal trail.
#[cfg(all(feature = "aws-sqs", feature = "aws-dynamodb", feature = "aws-secrets"))]
pub async fn ingest() -> Result<Refreshing<crate::ingest::Ingest>, BootError> {
    refreshing(ingest_with).await
}

#[cfg(all(feature = "aws-sqs", feature = "aws-dynamodb", feature = "aws-secrets"))]
pub async fn ingest_with(
    sdk: aws_config::SdkConfig,
    vars: Vars,
) -> Result<(crate::ingest::Ingest, bool), BootError> {
    use crate::adapters::aws::{AwsSecretStore, DynamoLedger, SqsQueue};
    use crate::ingest::Ingest;
    use crate::ports::SystemClock;

    let Loaded { config, remote } = load_config(&AwsSecretStore::from_conf(&sdk), &vars).await?;
    let queue = SqsQueue::from_conf(&sdk, require(&vars, "INLET_QUEUE_URL")?);
    if config.needs_fifo() && !queue.is_fifo() {
        // Not fatal: the events still flow, only without the order the config asks for.
        tracing::warn!(
            "a source sets order_by but INLET_QUEUE_URL is a standard queue: deploy with QueueType=fifo for per-entity order"
        );
    }
    let ledger = DynamoLedger::from_conf(&sdk, require(&vars, "INLET_TABLE")?);
    let ingest = Ingest::new(
        config,
        Arc::new(queue),
        Arc::new(ledger),
        Arc::new(SystemClock),
    );
    let ingest = match blobs(&sdk, &vars) {
        Some(b) => ingest.with_blobs(b),
        None => ingest,
    };
    Ok((ingest, remote))
}

/// The blob bucket `INLET_BLOB_BUCKET` names (claim checks); without it, bodies travel
/// inline only (a stack deployed before the bucket existed).
#[cfg(all(feature = "aws-s3", feature = "aws-secrets"))]
fn blobs(sdk: &aws_config::SdkConfig, vars: &Vars) -> Option<Arc<dyn crate::ports::BlobStore>> {
    let bucket = vars("INLET_BLOB_BUCKET").filter(|b| !b.is_empty())?;
    Some(Arc::new(crate::adapters::aws::S3Blobs::from_conf(
        sdk, bucket,
    )))
}

#[cfg(all(feature = "aws-secrets", not(feature = "aws-s3")))]
fn blobs(_: &aws_config::SdkConfig, _: &Vars) -> Option<Arc<dyn crate::ports::BlobStore>> {
    None
}

/// One SDK configuration per cold start, shared by every rebuild of the part.
#[cfg(feature = "aws-secrets")]
async fn refreshing<T, Fut>(
    build: fn(aws_config::SdkConfig, Vars) -> Fut,
) -> Result<Refreshing<T>, BootError>
where
    T: Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(T, bool), BootError>> + Send + 'static,
{
    // A Lambda's process: EMF metrics on stdout, for CloudWatch (each `main` has set up its
    // logs already, with its own service name).
    crate::metrics::enable(true);
    let sdk = crate::adapters::aws::sdk_config_from_env().await;
    let vars = config::process_vars();
    let every = refresh_interval(|n| vars(n))?;
    Refreshing::start(every, move || build(sdk.clone(), vars.clone())).await
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
    feature = "aws-secrets",
    feature = "http-fetch"
))]
pub async fn worker() -> Result<Refreshing<crate::worker::Worker>, BootError> {
    refreshing(worker_with).await
}

#[cfg(all(
    feature = "aws-dynamodb",
    feature = "aws-eventbridge",
    feature = "aws-sqs",
    feature = "aws-secrets",
    feature = "http-fetch"
))]
pub async fn worker_with(
    sdk: aws_config::SdkConfig,
    vars: Vars,
) -> Result<(crate::worker::Worker, bool), BootError> {
    use crate::adapters::aws::{AwsSecretStore, DynamoLedger, EventBridgeBus, SqsQueue};
    use crate::checks::CheckScheduler;
    use crate::ports::{EventBus, Queue, SystemClock};
    use crate::targets::{build_targets, TargetFactoryError};
    use crate::worker::Worker;

    let Loaded { config, remote } = load_config(&AwsSecretStore::from_conf(&sdk), &vars).await?;
    check_leases(&config, worker_timeout_seconds(|n| vars(n))?)?;
    let ledger = Arc::new(DynamoLedger::from_conf(
        &sdk,
        require(&vars, "INLET_TABLE")?,
    ));
    let main_queue = SqsQueue::from_conf(&sdk, require(&vars, "INLET_QUEUE_URL")?);
    let dlq = SqsQueue::from_conf(&sdk, require(&vars, "INLET_DLQ_URL")?);
    let default_bus = vars("INLET_BUS_NAME").filter(|b| !b.is_empty());
    let bus_for = |name: Option<&str>| -> Result<Arc<dyn EventBus>, TargetFactoryError> {
        let bus = name
            .map(str::to_string)
            .or_else(|| default_bus.clone())
            .ok_or(TargetFactoryError::NoBus)?;
        Ok(Arc::new(EventBridgeBus::from_conf(&sdk, bus)))
    };
    let queue_for = |url: &str| -> Result<Arc<dyn Queue>, TargetFactoryError> {
        // A bare name would need a GetQueueUrl call (and its IAM grant) per cold start.
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(TargetFactoryError::QueueNotUrl(url.to_owned()));
        }
        Ok(Arc::new(SqsQueue::from_conf(&sdk, url)))
    };
    let targets = build_targets(&config.targets, &config.base_dir, &bus_for, &queue_for)?;
    let checks = if has_checks(&config) {
        let queue = SqsQueue::from_conf(&sdk, require(&vars, "INLET_CHECKS_QUEUE_URL")?);
        Some(CheckScheduler::new(ledger.clone(), Arc::new(queue)))
    } else {
        None
    };
    let worker = Worker::new(config, ledger, targets, Arc::new(SystemClock))
        .with_queues(Arc::new(main_queue), Arc::new(dlq));
    let worker = match blobs(&sdk, &vars) {
        Some(b) => worker.with_blobs(b),
        None => worker,
    };
    let worker = match checks {
        Some(c) => worker.with_checks(c),
        None => worker,
    };
    Ok((worker, remote))
}

/// What the poller Lambda runs: scheduled polls, and due checks when a source has checks.
#[cfg(all(feature = "aws-sqs", feature = "aws-dynamodb", feature = "http-fetch"))]
pub struct PollerParts {
    pub poller: Arc<crate::poller::Poller>,
    pub checks: Option<crate::checks::CheckRunner>,
}

/// Poller: `INLET_QUEUE_URL` for envelopes, `INLET_TABLE` for poll state, checks and the
/// trail, an HTTP client for the providers' APIs, and `INLET_CHECKS_QUEUE_URL` (to defer a
/// check not yet due) when a source has delayed checks.
#[cfg(all(
    feature = "aws-sqs",
    feature = "aws-dynamodb",
    feature = "aws-secrets",
    feature = "http-fetch"
))]
pub async fn poller() -> Result<Refreshing<PollerParts>, BootError> {
    refreshing(poller_with).await
}

#[cfg(all(
    feature = "aws-sqs",
    feature = "aws-dynamodb",
    feature = "aws-secrets",
    feature = "http-fetch"
))]
pub async fn poller_with(
    sdk: aws_config::SdkConfig,
    vars: Vars,
) -> Result<(PollerParts, bool), BootError> {
    use crate::adapters::aws::{AwsSecretStore, DynamoLedger, SqsQueue};
    use crate::adapters::http_client::ReqwestHttp;
    use crate::checks::CheckRunner;
    use crate::poller::Poller;
    use crate::ports::SystemClock;

    let Loaded { config, remote } = load_config(&AwsSecretStore::from_conf(&sdk), &vars).await?;
    let queue = SqsQueue::from_conf(&sdk, require(&vars, "INLET_QUEUE_URL")?);
    let ledger = Arc::new(DynamoLedger::from_conf(
        &sdk,
        require(&vars, "INLET_TABLE")?,
    ));
    let http = ReqwestHttp::new(crate::poll::MAX_RESPONSE_BYTES)
        .map_err(|e| BootError::Http(e.to_string()))?;
    let clock = Arc::new(SystemClock);
    let poller = Poller::new(
        config.clone(),
        Arc::new(queue),
        ledger.clone(),
        ledger.clone(),
        Arc::new(http),
        clock.clone(),
        // One invocation at a time per instance: the instance is the lease holder.
        format!("poller-{}", uuid::Uuid::new_v4().simple()),
    );
    let poller = Arc::new(match blobs(&sdk, &vars) {
        Some(b) => poller.with_blobs(b),
        None => poller,
    });
    let checks = if has_checks(&config) {
        let checks_queue = SqsQueue::from_conf(&sdk, require(&vars, "INLET_CHECKS_QUEUE_URL")?);
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
    Ok((PollerParts { poller, checks }, remote))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A part that records which build made it; the builder fails when told to.
    async fn counting(
        every: Option<Duration>,
        remote: bool,
    ) -> (
        Refreshing<u32>,
        Arc<AtomicU32>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let builds = Arc::new(AtomicU32::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (b, f) = (builds.clone(), fail.clone());
        let part = Refreshing::start(every, move || {
            let (b, f) = (b.clone(), f.clone());
            async move {
                if f.load(Ordering::SeqCst) {
                    return Err(BootError::Http("store unreachable".into()));
                }
                Ok((b.fetch_add(1, Ordering::SeqCst) + 1, remote))
            }
        })
        .await
        .unwrap();
        (part, builds, fail)
    }

    #[tokio::test]
    async fn a_config_that_reads_the_store_is_rebuilt_after_its_interval() {
        let (part, builds, fail) = counting(Some(Duration::ZERO), true).await;
        assert_eq!(*part.get().await, 2, "the interval passed: rebuilt");
        assert_eq!(*part.get().await, 3);
        // A store outage keeps the part it has.
        fail.store(true, Ordering::SeqCst);
        crate::metrics::capture();
        assert_eq!(*part.get().await, 3);
        assert_eq!(crate::metrics::captured("secrets_refresh_failures"), [1.0]);
        fail.store(false, Ordering::SeqCst);
        assert_eq!(*part.get().await, 4, "and recovers at the next interval");
        assert_eq!(builds.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn no_rebuild_inside_the_interval_or_without_remote_secrets() {
        let (part, builds, _) = counting(Some(Duration::from_secs(3600)), true).await;
        part.get().await;
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        let (part, builds, _) = counting(Some(Duration::ZERO), false).await;
        part.get().await;
        assert_eq!(
            builds.load(Ordering::SeqCst),
            1,
            "env secrets cannot change"
        );
    }

    #[test]
    fn the_refresh_interval_defaults_to_five_minutes_and_zero_turns_it_off() {
        assert_eq!(
            refresh_interval(|_| None).unwrap(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(refresh_interval(|_| Some("0".into())).unwrap(), None);
        assert_eq!(
            refresh_interval(|_| Some("60".into())).unwrap(),
            Some(Duration::from_secs(60))
        );
        assert!(refresh_interval(|_| Some("5m".into())).is_err());
    }

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

    /// The Lambdas' config loader is the composition root that supplies PayPal's certificate
    /// fetcher: with it, an unpinned certificate is "not loaded" yet (`prepare` fetches it);
    /// a PayPal built without it has fetching off.
    #[cfg(feature = "http-fetch")]
    #[tokio::test]
    async fn the_lambdas_config_gives_paypal_the_https_certificate_fetcher() {
        use crate::ports::{SecretStore, SecretStoreError};
        use crate::providers::VerifyError;
        use crate::request::{Headers, InboundRequest};

        struct NoStore;
        #[async_trait::async_trait]
        impl SecretStore for NoStore {
            async fn parameter(&self, name: &str) -> Result<String, SecretStoreError> {
                Err(SecretStoreError::NotFound {
                    reference: name.into(),
                })
            }
            async fn secret(&self, id: &str) -> Result<String, SecretStoreError> {
                Err(SecretStoreError::NotFound {
                    reference: id.into(),
                })
            }
        }
        let doc = r#"
            [[sources]]
            id = "pp"
            provider = "paypal"
            options = { webhook_id = "W" }
            [[targets]]
            id = "bus"
            kind = "eventbridge"
            [[routes]]
            sources = ["*"]
            targets = ["bus"]
        "#;
        let env = |name: &str| (name == "INLET_CONFIG").then(|| doc.to_string());
        let Loaded { config, .. } = load_config_from(&env, &NoStore).await.expect("loads");
        let headers = Headers::from_iter([
            ("paypal-transmission-sig", "AAAA"),
            ("paypal-transmission-id", "t-1"),
            ("paypal-transmission-time", "2026-01-01T00:00:00Z"),
            (
                "paypal-cert-url",
                "https://api.paypal.com/v1/notifications/certs/CERT-1",
            ),
        ]);
        let req = InboundRequest {
            method: "POST",
            headers: &headers,
            query: &[],
            body: b"{}",
        };
        let now_ms = 1_767_225_600_000;
        let supplied = config.sources["pp"].provider.verify(&req, now_ms);
        assert!(
            matches!(&supplied, Err(VerifyError::Unavailable(m)) if m.ends_with("is not loaded")),
            "{supplied:?}"
        );
        let bare =
            crate::providers::build("paypal", &serde_json::json!({"webhook_id": "W"}), vec![])
                .expect("builds");
        let unsupplied = bare.verify(&req, now_ms);
        assert!(
            matches!(&unsupplied, Err(VerifyError::Unavailable(m)) if m.contains("fetching is off")),
            "{unsupplied:?}"
        );
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
