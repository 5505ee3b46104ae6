//! Where a config document comes from: a file, `INLET_CONFIG` (inline TOML or JSON, or an
//! SSM parameter) or `INLET_CONFIG_FILE`; and what can be read from it before validation.

use std::path::{Path, PathBuf};

use super::schema::ConfigDoc;
use super::secrets::SecretEnv;
use super::validate::{parse_every, validate};
use super::{invalid, Config, ConfigError};

impl ConfigDoc {
    /// `(source id, EventBridge Scheduler expression)` of every poll source, in config order:
    /// what the template's `PollSchedules` parameter takes. Needs no secrets, so a deploy step
    /// can run it without them.
    pub fn poll_schedules(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out = Vec::new();
        for (i, src) in self.sources.iter().enumerate() {
            if let Some(p) = &src.poll {
                let every = parse_every(&format!("sources[{i}].poll"), &p.every)?;
                out.push((src.id.clone(), crate::poll::schedule_expression(every)));
            }
        }
        Ok(out)
    }

    /// Every secret reference in the document, as written, in document order.
    pub(crate) fn secret_references(&self) -> Vec<&str> {
        self.secret_fields().into_iter().map(|(_, r)| r).collect()
    }

    pub fn parse(text: &str, hint: Option<&str>) -> Result<Self, ConfigError> {
        let json_first = match hint {
            Some("json") => true,
            Some(_) => false,
            None => text.trim_start().starts_with('{'),
        };
        let (format, parsed) = if json_first {
            (
                "JSON",
                serde_json::from_str(text).map_err(|e| e.to_string()),
            )
        } else {
            ("TOML", toml::from_str(text).map_err(|e| e.to_string()))
        };
        parsed.map_err(|first| ConfigError::Parse {
            format,
            message: every_unknown_field(text, json_first).unwrap_or(first),
        })
    }
}

/// The most unknown fields one error lists (each found by a parse of its own).
const MAX_UNKNOWN_FIELDS: usize = 50;

/// When the document is well formed but names fields the schema does not have: every such
/// field at once, each by its path, with the closest known name where one is near — rather
/// than serde's first only, one fix and rerun per typo. `None` when that is not the trouble
/// (a syntax error, a wrong type), and the parser's own message stands.
fn every_unknown_field(text: &str, json: bool) -> Option<String> {
    let mut doc: serde_json::Value = if json {
        serde_json::from_str(text).ok()?
    } else {
        toml::from_str(text).ok()?
    };
    let mut found = Vec::new();
    while found.len() < MAX_UNKNOWN_FIELDS {
        let Err(e) = serde_path_to_error::deserialize::<_, ConfigDoc>(&doc) else {
            break;
        };
        let message = e.inner().to_string();
        if !message.starts_with("unknown field") {
            break;
        }
        let hint = unknown_field_hint(&message);
        found.push(format!("{}: {message}{hint}", e.path()));
        if !remove_at(&mut doc, e.path()) {
            break;
        }
    }
    match found.len() {
        0 => None,
        1 => found.pop(),
        n => Some(format!("{n} unknown fields:\n  {}", found.join("\n  "))),
    }
}

/// "did you mean" from serde's own list of the expected names.
fn unknown_field_hint(message: &str) -> String {
    let mut names = message.split('`').skip(1).step_by(2);
    let Some(field) = names.next() else {
        return String::new();
    };
    crate::providers::closest_name(field, names)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Remove the field `path` names, so the next parse finds the next unknown one.
fn remove_at(doc: &mut serde_json::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    let mut at = doc;
    for segment in parents {
        let next = match (segment, at) {
            (Segment::Map { key }, serde_json::Value::Object(map)) => map.get_mut(key.as_str()),
            (Segment::Seq { index }, serde_json::Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        let Some(next) = next else {
            return false;
        };
        at = next;
    }
    at.as_object_mut()
        .is_some_and(|map| map.remove(key.as_str()).is_some())
}

/// Read a config file; relative paths in it resolve against its folder.
fn read_file(path: &Path) -> Result<(ConfigDoc, PathBuf), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let hint = path.extension().and_then(|e| e.to_str());
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((ConfigDoc::parse(&text, hint)?, base))
}

/// Load and validate a config file.
pub fn load_file(path: &Path, env: &dyn SecretEnv) -> Result<Config, ConfigError> {
    let (doc, base) = read_file(path)?;
    validate(doc, base, env)
}

/// Where a Lambda's config document is: read already (inline or a file), or an SSM
/// parameter to read (`INLET_CONFIG=ssm:/name`, for configs beyond a template parameter's
/// 4 KB, changed without a redeploy). Made once per cold start: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum DocSource {
    Ready(ConfigDoc, PathBuf),
    Parameter(String),
}

/// `INLET_CONFIG` (inline TOML or JSON, or `ssm:/name`) or `INLET_CONFIG_FILE`.
pub fn doc_source_from_env(env: &dyn SecretEnv) -> Result<DocSource, ConfigError> {
    if let Some(inline) = env.var("INLET_CONFIG").filter(|s| !s.trim().is_empty()) {
        if let Some(name) = inline.trim().strip_prefix("ssm:") {
            return Ok(DocSource::Parameter(name.to_string()));
        }
        Ok(DocSource::Ready(
            ConfigDoc::parse(&inline, None)?,
            PathBuf::from("."),
        ))
    } else if let Some(file) = env.var("INLET_CONFIG_FILE") {
        let (doc, base) = read_file(Path::new(&file))?;
        Ok(DocSource::Ready(doc, base))
    } else {
        Err(ConfigError::Missing)
    }
}

/// Load from `INLET_CONFIG` (inline) or `INLET_CONFIG_FILE`, with no secret store: remote
/// references fail validation with their field named.
pub fn load_from_env(env: &dyn SecretEnv) -> Result<Config, ConfigError> {
    match doc_source_from_env(env)? {
        DocSource::Ready(doc, base) => finish_from_env(doc, base, env),
        DocSource::Parameter(name) => Err(invalid(
            "INLET_CONFIG",
            format!("ssm:{name} is read only where a secret store is configured (the Lambdas)"),
        )
        .into()),
    }
}

/// Apply the deployment's settings and validate. The deployment owns the queue and lease
/// settings, so `INLET_MAX_RECEIVE_COUNT`, `INLET_LEASE_SECONDS` and
/// `INLET_VISIBILITY_TIMEOUT_SECONDS` (set by the template from the same parameters that
/// configure the queue) override the document's `settings`.
pub fn finish_from_env(
    mut doc: ConfigDoc,
    base: PathBuf,
    env: &dyn SecretEnv,
) -> Result<Config, ConfigError> {
    let number = |name: &str| -> Result<Option<u64>, ConfigError> {
        env.var(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| invalid(name, format!("{v:?} is not a whole number")).into())
            })
            .transpose()
    };
    if let Some(n) = number("INLET_MAX_RECEIVE_COUNT")? {
        doc.settings.max_receive_count = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = number("INLET_LEASE_SECONDS")? {
        doc.settings.lease_seconds = n;
    }
    if let Some(n) = number("INLET_VISIBILITY_TIMEOUT_SECONDS")? {
        doc.settings.visibility_timeout_seconds = n;
    }
    validate(doc, base, env)
}
