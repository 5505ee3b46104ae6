//! Counts the AWS calls the real adapters make: an SDK interceptor on the clients handed to
//! them, keyed by each request's `X-Amz-Target` (SQS, DynamoDB and EventBridge all speak the
//! AWS JSON protocol, which names the operation there). It runs once per attempt, so an SDK
//! retry is a call too, as AWS bills it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};

/// Calls sent so far, by `X-Amz-Target` (`AmazonSQS.SendMessage`, `AWSEvents.PutEvents`…).
pub type Calls = BTreeMap<String, usize>;

#[derive(Debug, Clone, Default)]
pub struct CallCounter(Arc<Mutex<Calls>>);

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("(no X-Amz-Target)")
            .to_owned();
        *self
            .0
            .lock()
            .expect("call counter lock")
            .entry(operation)
            .or_default() += 1;
        Ok(())
    }
}

impl CallCounter {
    /// The calls counted since the last `take`, and a fresh count from now.
    pub fn take(&self) -> Calls {
        std::mem::take(&mut *self.0.lock().expect("call counter lock"))
    }

    pub async fn sqs(&self) -> aws_sdk_sqs::Client {
        let conf = super::aws::sdk_config().await;
        aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&conf)
                .interceptor(self.clone())
                .build(),
        )
    }

    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let conf = super::aws::sdk_config().await;
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&conf)
                .interceptor(self.clone())
                .build(),
        )
    }

    pub async fn eventbridge(&self) -> aws_sdk_eventbridge::Client {
        let conf = super::aws::sdk_config().await;
        aws_sdk_eventbridge::Client::from_conf(
            aws_sdk_eventbridge::config::Builder::from(&conf)
                .interceptor(self.clone())
                .build(),
        )
    }
}

/// `pairs` as a call map, for comparing with [`CallCounter::take`].
pub fn calls(pairs: &[(&str, usize)]) -> Calls {
    pairs
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(op, n)| ((*op).to_owned(), *n))
        .collect()
}

pub fn total(calls: &Calls) -> usize {
    calls.values().sum()
}

/// Adds one measured path to the file `INLET_CALLS_REPORT` names (one JSON line each), so that
/// `make bench` prints these counts and prices them without a second way of counting.
pub fn report(path: &str, counted: &Calls, units: usize, unit: &str) {
    let Ok(file) = std::env::var("INLET_CALLS_REPORT") else {
        return;
    };
    static LOCK: Mutex<()> = Mutex::new(());
    let line = serde_json::json!({ "path": path, "calls": counted, "units": units, "unit": unit });
    let _guard = LOCK.lock().expect("report lock");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        panic!("writing the calls report {file}: {e}");
    }
}
