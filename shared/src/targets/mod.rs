//! Dispatch targets: one file each behind [`Target`]. The worker hands each target the
//! envelopes routed to it and gets one result per envelope back.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::envelope::Envelope;
use crate::ports::{EventBus, Queue};

pub mod eventbridge;
pub mod http;
pub mod jsonl;
mod spec;
pub mod sqs;

pub use spec::{TargetKind, TargetSpec};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// Worth retrying: throttling, a network error, a per-entry failure.
    #[error("{0}")]
    Retryable(String),
    /// Will fail the same way every time (a malformed event, a missing target).
    #[error("{0}")]
    Permanent(String),
    /// Worth retrying, and the target said when (an HTTP `Retry-After`): the backoff should
    /// wait at least `after`. A variant of its own so every `Retryable(msg)` stays as it was.
    #[error("{message} (retry after {}s)", after.as_secs())]
    RetryAfter {
        message: String,
        after: std::time::Duration,
    },
}

impl DispatchError {
    /// Whether retrying can never help (the record belongs in the DLQ at once).
    pub fn is_permanent(&self) -> bool {
        matches!(self, DispatchError::Permanent(_))
    }

    /// The delay the target asked for, if it asked.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            DispatchError::RetryAfter { after, .. } => Some(*after),
            _ => None,
        }
    }

    /// The same error, its message naming `target` (the HTTP and SQS targets name
    /// themselves already; the others do not), so a DLQ reason says which target failed.
    pub fn naming(self, target: &str) -> Self {
        let name = |message: String| {
            let own = format!("target {target}");
            match message.strip_prefix(&own) {
                Some(rest) if rest.starts_with([' ', ':']) => message,
                _ => format!("{own}: {message}"),
            }
        };
        match self {
            DispatchError::Retryable(m) => DispatchError::Retryable(name(m)),
            DispatchError::Permanent(m) => DispatchError::Permanent(name(m)),
            DispatchError::RetryAfter { message, after } => DispatchError::RetryAfter {
                message: name(message),
                after,
            },
        }
    }

    /// One event's failures at several targets as one error: permanent if any is (retrying
    /// cannot complete the event), else waiting for the longest `Retry-After`; the message
    /// lists them all. `None` when there are none.
    pub(crate) fn merge(errors: Vec<DispatchError>) -> Option<Self> {
        if errors.len() <= 1 {
            return errors.into_iter().next();
        }
        // The merged error carries the longest delay itself: each part only its text.
        let message = errors
            .iter()
            .map(|e| match e {
                DispatchError::RetryAfter { message, .. } => message.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        if errors.iter().any(DispatchError::is_permanent) {
            return Some(DispatchError::Permanent(message));
        }
        Some(
            match errors.iter().filter_map(DispatchError::retry_after).max() {
                Some(after) => DispatchError::RetryAfter { message, after },
                None => DispatchError::Retryable(message),
            },
        )
    }
}

/// An event on its way to a target: the decoded envelope, and its JSON exactly as it sat
/// on the queue. Targets send `json` rather than serialising the envelope again: for a 64 KB
/// body that second serialisation was ~30 % of the worker's CPU (docs/performance.md).
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub envelope: &'a Envelope,
    /// `envelope` as JSON with the body in place: what ingest or the poller queued
    /// (`Envelope::to_json`), or, for a claimed body, the envelope rebuilt around it.
    pub json: &'a str,
    /// For a claimed body, the envelope as queued: the body by reference (`body_ref`), for a
    /// target whose entry limit `json` passes.
    pub claim: Option<&'a str>,
}

impl<'a> Outgoing<'a> {
    pub fn new(envelope: &'a Envelope, json: &'a str) -> Self {
        Self {
            envelope,
            json,
            claim: None,
        }
    }

    pub fn with_claim(mut self, claim: Option<&'a str>) -> Self {
        self.claim = claim;
        self
    }

    /// The JSON to send where an entry takes at most `limit` bytes of it: the whole event
    /// when it fits, else its body by reference when it has one (else the whole event, for
    /// the target to refuse).
    pub fn fitting(&self, limit: usize) -> &'a str {
        match self.claim {
            Some(claim) if self.json.len() > limit => claim,
            _ => self.json,
        }
    }
}

#[async_trait]
pub trait Target: Send + Sync {
    fn id(&self) -> &str;

    /// One result per event, in order. A target must be safe to call again with an event
    /// it already took (the worker retries after crashes).
    async fn deliver(&self, events: &[Outgoing<'_>]) -> Vec<Result<(), DispatchError>>;
}

#[derive(Debug, thiserror::Error)]
#[error("target {id}: {reason}")]
pub struct TargetBuildError {
    pub id: String,
    #[source]
    pub reason: TargetFactoryError,
}

/// Why the bus, queue, file or client a target needs cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TargetFactoryError {
    #[error("no bus_name and INLET_BUS_NAME is not set")]
    NoBus,
    #[error("queue {0:?} is the stack's own queue; forwarding there would loop")]
    OwnQueue(String),
    #[error("queue_url {0:?}: on AWS an SQS target needs the queue's URL")]
    QueueNotUrl(String),
    #[error("this build has no HTTP client (feature http-fetch)")]
    NoHttpClient,
    #[error("{0}")]
    Jsonl(#[from] jsonl::JsonlError),
    #[cfg(feature = "http-fetch")]
    #[error("{0}")]
    Http(#[from] http::HttpTargetError),
}

/// Supplies an event bus for a bus name (`None` = the deployment's default bus).
pub type BusFactory<'a> =
    dyn Fn(Option<&str>) -> Result<Arc<dyn EventBus>, TargetFactoryError> + 'a;

/// Supplies a queue for an SQS target's `queue_url` (the AWS stack: an SQS client on that
/// URL; the embedded stack: a queue of that name in the same SQLite file).
pub type QueueFactory<'a> = dyn Fn(&str) -> Result<Arc<dyn Queue>, TargetFactoryError> + 'a;

/// Builds the configured targets; the embedded and AWS stacks pass their own `bus_for` and
/// `queue_for`. Relative paths resolve against `base_dir` (the config file's folder).
pub fn build_targets(
    specs: &[TargetSpec],
    base_dir: &Path,
    bus_for: &BusFactory<'_>,
    queue_for: &QueueFactory<'_>,
) -> Result<BTreeMap<String, Arc<dyn Target>>, TargetBuildError> {
    let mut out: BTreeMap<String, Arc<dyn Target>> = BTreeMap::new();
    for spec in specs {
        let err = |reason: TargetFactoryError| TargetBuildError {
            id: spec.id.clone(),
            reason,
        };
        let target: Arc<dyn Target> = match &spec.kind {
            TargetKind::Eventbridge { bus_name } => Arc::new(eventbridge::EventBridgeTarget::new(
                spec.id.clone(),
                bus_for(bus_name.as_deref()).map_err(err)?,
            )),
            TargetKind::Jsonl { path } => Arc::new(
                jsonl::JsonlTarget::open(spec.id.clone(), &base_dir.join(path))
                    .map_err(|e| err(e.into()))?,
            ),
            TargetKind::Http(http) => build_http(&spec.id, http).map_err(err)?,
            TargetKind::Sqs(sqs) => Arc::new(sqs::SqsTarget::new(
                spec.id.clone(),
                queue_for(&sqs.queue_url).map_err(err)?,
                &sqs.queue_url,
            )),
        };
        out.insert(spec.id.clone(), target);
    }
    Ok(out)
}

#[cfg(feature = "http-fetch")]
fn build_http(
    id: &str,
    spec: &http::HttpTargetSpec,
) -> Result<Arc<dyn Target>, TargetFactoryError> {
    Ok(Arc::new(http::HttpTarget::new(id.to_owned(), spec)?))
}

/// Only a build that links an HTTP client (feature `http-fetch`) can deliver over HTTP.
#[cfg(not(feature = "http-fetch"))]
fn build_http(
    _id: &str,
    _spec: &http::HttpTargetSpec,
) -> Result<Arc<dyn Target>, TargetFactoryError> {
    Err(TargetFactoryError::NoHttpClient)
}
