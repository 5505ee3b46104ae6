//! The one typed config document: sources, targets, routes and settings, in TOML (JSON
//! accepted), validated at start with every problem named by its field.
//!
//! - [`schema`]: the document as written (serde only, unknown fields refused);
//! - [`load`]: where a document comes from (a file, `INLET_CONFIG`, an SSM parameter);
//! - [`secrets`]: how secret references resolve;
//! - [`validate`](validate()): the document checked section by section and built into the
//!   runtime [`model`] — sources with their providers, polls, checks and ordering, targets,
//!   routes and the settings parsed.

mod deployed;
mod load;
mod model;
mod schema;
mod secrets;
mod validate;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use deployed::{refuse_single_machine, single_machine_settings};
pub use load::{doc_source_from_env, finish_from_env, load_file, load_from_env, DocSource};
pub(crate) use model::type_matches;
pub use model::{Check, Config, Route, ServerLimits, Source, MAX_AFTER, MIN_AFTER};
pub use schema::{
    CheckSpec, ConfigDoc, Environment, PollSpec, RateLimitSpec, RetrySpec, RouteSpec, SecretSpec,
    Settings, SourceSpec, MAX_BODY_BYTES,
};
pub use secrets::{process_vars, ProcessEnv, SecretEnv, Vars, WithRemote};
pub use validate::{parse_ingest_deadline, validate};
// Targets own their section of the document; it is part of the config's schema all the same.
pub use crate::targets::{TargetKind, TargetSpec};

/// One problem with the document, named by its path (`sources[2].secrets[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    // The message says what is wrong, often with its line: a syntax error, or a well-formed
    // document with an unknown field or a wrong type (not "invalid TOML" then).
    #[error("config ({format}): {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    /// Every problem validation found, in document order (never empty).
    #[error("{}", list(.0))]
    Invalid(Vec<FieldError>),
    #[error("no config: set INLET_CONFIG (inline TOML or JSON) or INLET_CONFIG_FILE")]
    Missing,
}

impl ConfigError {
    /// The named problems (none for a document that could not be read or parsed).
    pub fn problems(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(problems) => problems,
            _ => &[],
        }
    }
}

impl From<FieldError> for ConfigError {
    fn from(e: FieldError) -> Self {
        ConfigError::Invalid(vec![e])
    }
}

/// One problem reads as before (`field: message`); several as a list, so a user fixes them
/// in one pass instead of one start per mistake.
fn list(problems: &[FieldError]) -> String {
    match problems {
        [one] => one.to_string(),
        _ => {
            let mut out = format!("{} problems in the config:", problems.len());
            for p in problems {
                out.push_str("\n  - ");
                out.push_str(&p.to_string());
            }
            out
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}
