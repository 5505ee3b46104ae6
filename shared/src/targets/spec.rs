//! A target's table in the config document: each kind's fields, owned here beside the code
//! that delivers to it (the config's schema includes it as `[[targets]]`).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetKind {
    /// EventBridge `PutEvents`. Without `bus_name` the deployed bus from `INLET_BUS_NAME` is used.
    Eventbridge {
        #[serde(default)]
        bus_name: Option<String>,
    },
    /// One JSON envelope per line, for local use. Relative paths are relative to the config file.
    Jsonl { path: PathBuf },
    /// POST to a URL, signed with Standard Webhooks headers (`targets/http.rs`).
    Http(super::http::HttpTargetSpec),
    /// Forward to another SQS queue (`targets/sqs.rs`).
    Sqs(super::sqs::SqsTargetSpec),
}

// No deny_unknown_fields here: serde does not support it beside `flatten`; the flattened
// `TargetKind` refuses unknown fields instead.
#[derive(Debug, Clone, Deserialize)]
pub struct TargetSpec {
    pub id: String,
    #[serde(flatten)]
    pub kind: TargetKind,
}
