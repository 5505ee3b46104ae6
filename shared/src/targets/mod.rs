//! Dispatch targets: one file each behind [`Target`]. The worker hands each target the
//! envelopes routed to it and gets one result per envelope back.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{Config, TargetKind};
use crate::envelope::Envelope;
use crate::ports::EventBus;

pub mod eventbridge;
pub mod jsonl;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// Worth retrying: throttling, a network error, a per-entry failure.
    #[error("{0}")]
    Retryable(String),
    /// Will fail the same way every time (a malformed event, a missing target).
    #[error("{0}")]
    Permanent(String),
}

#[async_trait]
pub trait Target: Send + Sync {
    fn id(&self) -> &str;

    /// One result per envelope, in order. A target must be safe to call again with an
    /// envelope it already took (the worker retries after crashes).
    async fn deliver(&self, envelopes: &[&Envelope]) -> Vec<Result<(), DispatchError>>;
}

#[derive(Debug, thiserror::Error)]
#[error("target {id}: {message}")]
pub struct TargetBuildError {
    pub id: String,
    pub message: String,
}

/// Supplies an event bus for a bus name (`None` = the deployment's default bus).
pub type BusFactory<'a> = dyn Fn(Option<&str>) -> Result<Arc<dyn EventBus>, String> + 'a;

/// Builds the configured targets; the embedded and AWS stacks pass their own `bus_for`.
pub fn build_targets(
    config: &Config,
    bus_for: &BusFactory<'_>,
) -> Result<BTreeMap<String, Arc<dyn Target>>, TargetBuildError> {
    let mut out: BTreeMap<String, Arc<dyn Target>> = BTreeMap::new();
    for spec in &config.targets {
        let err = |message: String| TargetBuildError {
            id: spec.id.clone(),
            message,
        };
        let target: Arc<dyn Target> = match &spec.kind {
            TargetKind::Eventbridge { bus_name } => Arc::new(eventbridge::EventBridgeTarget::new(
                spec.id.clone(),
                bus_for(bus_name.as_deref()).map_err(err)?,
            )),
            TargetKind::Jsonl { path } => Arc::new(
                jsonl::JsonlTarget::open(spec.id.clone(), &config.resolve_path(path))
                    .map_err(|e| err(e.to_string()))?,
            ),
        };
        out.insert(spec.id.clone(), target);
    }
    Ok(out)
}
