//! CloudWatch Embedded Metric Format: one JSON line on stdout per data point, which Lambda
//! ships to CloudWatch Logs and CloudWatch turns into metrics with no API call.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

pub const NAMESPACE: &str = "Inlet";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turn EMF output on (Lambdas) or leave it off (the CLI, tests).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
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

/// Render one EMF document for a metric with `source` (and optional `reason`) dimensions.
pub fn render(
    now_ms: i64,
    name: &str,
    unit: Unit,
    value: f64,
    source: &str,
    reason: Option<&str>,
) -> String {
    let dims: Vec<&str> = if reason.is_some() {
        vec!["source", "reason"]
    } else {
        vec!["source"]
    };
    let mut doc = serde_json::json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dims],
                "Metrics": [{"Name": name, "Unit": unit.as_str()}],
            }],
        },
        "source": source,
        name: value,
    });
    if let (Some(r), Some(obj)) = (reason, doc.as_object_mut()) {
        obj.insert("reason".into(), serde_json::Value::String(r.to_string()));
    }
    doc.to_string()
}

pub fn emit(now_ms: i64, name: &str, unit: Unit, value: f64, source: &str, reason: Option<&str>) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let line = render(now_ms, name, unit, value, source, reason);
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
            1_000,
            "refused",
            Unit::Count,
            1.0,
            "stripe",
            Some("signature_mismatch"),
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Inlet");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "refused"
        );
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            serde_json::json!(["source", "reason"])
        );
        assert_eq!(v["refused"], 1.0);
        assert_eq!(v["reason"], "signature_mismatch");
        assert_eq!(v["source"], "stripe");
    }
}
