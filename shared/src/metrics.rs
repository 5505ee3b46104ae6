//! CloudWatch Embedded Metric Format: one JSON line on stdout per data point, which Lambda
//! ships to CloudWatch Logs and CloudWatch turns into metrics with no API call. Every
//! metric is per `source` and stack-wide (no dimension), the latter for alarms.
//!
//! The namespace is the stack's own (`POWERTOOLS_METRICS_NAMESPACE`, which the template
//! sets to `Inlet/<stack name>` unless its `MetricsNamespace` parameter says otherwise), so
//! the stack-wide series of two stacks in one account never mix under one alarm.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Powertools for AWS Lambda's variable for the metrics namespace.
pub(crate) const NAMESPACE_ENV: &str = "POWERTOOLS_METRICS_NAMESPACE";
/// The namespace when that variable is unset or blank (the CLI, tests).
pub(crate) const DEFAULT_NAMESPACE: &str = "Inlet";

static NAMESPACE: OnceLock<String> = OnceLock::new();

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turn EMF output on (Lambdas) or leave it off (the CLI, tests).
// Only the Lambdas' composition root (feature `aws-secrets`) turns it on.
#[cfg_attr(not(feature = "aws-secrets"), allow(dead_code))]
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// The namespace `var` names under [`NAMESPACE_ENV`], else [`DEFAULT_NAMESPACE`].
pub(crate) fn namespace_from(var: impl Fn(&str) -> Option<String>) -> String {
    var(NAMESPACE_ENV)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// This process's namespace, read from its environment once, at its first metric.
fn namespace() -> &'static str {
    NAMESPACE.get_or_init(|| namespace_from(|name| std::env::var(name).ok()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// Render one EMF document in `namespace` for a metric with a `source` dimension and
/// optionally one more (`("reason", why)`, `("target", id)`).
pub(crate) fn render(
    namespace: &str,
    now_ms: i64,
    name: &str,
    unit: Unit,
    value: f64,
    source: &str,
    extra: Option<(&str, &str)>,
) -> String {
    // Per source (and the extra dimension), and again with no dimension at all: the
    // stack-wide figure the template's alarms and dashboard read (an alarm cannot sum over
    // dimension values).
    let dims: Vec<Vec<&str>> = match extra {
        Some((dimension, _)) => vec![vec!["source", dimension], vec!["source"], vec![]],
        None => vec![vec!["source"], vec![]],
    };
    let mut doc = serde_json::json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": dims,
                "Metrics": [{"Name": name, "Unit": unit.as_str()}],
            }],
        },
        "source": source,
        name: value,
    });
    if let (Some((dimension, value)), Some(obj)) = (extra, doc.as_object_mut()) {
        obj.insert(
            dimension.into(),
            serde_json::Value::String(value.to_string()),
        );
    }
    doc.to_string()
}

#[cfg(test)]
thread_local! {
    static CAPTURED: std::cell::RefCell<Option<Vec<serde_json::Value>>> =
        const { std::cell::RefCell::new(None) };
}

/// Unit tests: record this thread's metric documents from now on (a `#[tokio::test]` runs on
/// one thread), whatever `enable` says.
#[cfg(test)]
pub(crate) fn capture() {
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
}

/// Unit tests: the values this thread emitted for `name` since `capture`.
#[cfg(test)]
pub(crate) fn captured(name: &str) -> Vec<f64> {
    CAPTURED.with(|c| {
        c.borrow()
            .iter()
            .flatten()
            .filter_map(|doc| doc.get(name).and_then(serde_json::Value::as_f64))
            .collect()
    })
}

pub(crate) fn emit(
    now_ms: i64,
    name: &str,
    unit: Unit,
    value: f64,
    source: &str,
    reason: Option<&str>,
) {
    emit_with(
        now_ms,
        name,
        unit,
        value,
        source,
        reason.map(|r| ("reason", r)),
    );
}

/// One count per `source` and one more dimension: `count_by(now, "target_failures", source,
/// ("target", id))`.
pub(crate) fn count_by(now_ms: i64, name: &str, source: &str, dimension: (&str, &str)) {
    emit_with(now_ms, name, Unit::Count, 1.0, source, Some(dimension));
}

fn emit_with(
    now_ms: i64,
    name: &str,
    unit: Unit,
    value: f64,
    source: &str,
    extra: Option<(&str, &str)>,
) {
    #[cfg(test)]
    {
        let line = render(namespace(), now_ms, name, unit, value, source, extra);
        let taken = CAPTURED.with(|c| match c.borrow_mut().as_mut() {
            Some(docs) => {
                docs.extend(serde_json::from_str(&line).ok());
                true
            }
            None => false,
        });
        if taken {
            return;
        }
    }
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let line = render(namespace(), now_ms, name, unit, value, source, extra);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

pub fn count(now_ms: i64, name: &str, source: &str) {
    emit(now_ms, name, Unit::Count, 1.0, source, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_declares_metric_and_dimensions() {
        let line = render(
            DEFAULT_NAMESPACE,
            1_000,
            "refused",
            Unit::Count,
            1.0,
            "stripe",
            Some(("reason", "signature_mismatch")),
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Inlet");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "refused"
        );
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["source", "reason"], ["source"], []])
        );
        let plain: serde_json::Value = serde_json::from_str(&render(
            DEFAULT_NAMESPACE,
            1_000,
            "dispatched",
            Unit::Count,
            1.0,
            "stripe",
            None,
        ))
        .expect("json");
        assert_eq!(
            plain["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["source"], []])
        );
        let by_target: serde_json::Value = serde_json::from_str(&render(
            DEFAULT_NAMESPACE,
            1_000,
            "target_failures",
            Unit::Count,
            1.0,
            "stripe",
            Some(("target", "ledger-api")),
        ))
        .expect("json");
        assert_eq!(
            by_target["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["source", "target"], ["source"], []])
        );
        assert_eq!(by_target["target"], "ledger-api");
        assert_eq!(v["refused"], 1.0);
        assert_eq!(v["reason"], "signature_mismatch");
        assert_eq!(v["source"], "stripe");
    }

    /// The namespace the environment names is the one in the document: what the template
    /// passes as `POWERTOOLS_METRICS_NAMESPACE` is what its alarms read.
    #[test]
    fn the_namespace_comes_from_powertools_variable_else_inlet() {
        let env = |value: Option<&'static str>| {
            move |name: &str| {
                (name == NAMESPACE_ENV)
                    .then_some(value)
                    .flatten()
                    .map(String::from)
            }
        };
        let doc = |namespace: &str| -> serde_json::Value {
            let line = render(
                namespace,
                1_000,
                "refused",
                Unit::Count,
                1.0,
                "stripe",
                None,
            );
            serde_json::from_str(&line).expect("json")
        };
        let staging = doc(&namespace_from(env(Some("Inlet/staging"))));
        assert_eq!(
            staging["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Inlet/staging"
        );
        let production = doc(&namespace_from(env(Some(" Inlet/production "))));
        assert_eq!(
            production["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Inlet/production"
        );
        for unset in [None, Some(""), Some("  ")] {
            assert_eq!(namespace_from(env(unset)), "Inlet", "{unset:?}");
        }
    }
}
