//! Secret references (`env:NAME`, `ssm:/name`, `secretsmanager:NAME#field`, `literal:` in
//! local configs) and the environments they resolve in.

use std::collections::BTreeMap;

use super::schema::{Environment, SecretSpec};
use super::{invalid, ConfigError, FieldError};
use crate::secret::Secret;

/// Where secret references are looked up: the process environment, then the JSON object
/// in `INLET_SECRETS_JSON` (how the SAM template passes its NoEcho secrets parameter).
pub trait SecretEnv {
    fn var(&self, name: &str) -> Option<String>;

    /// The value of a remote reference (`ssm:`, `secretsmanager:`) read before validation;
    /// `None` where no secret store was consulted.
    fn remote(&self, _reference: &str) -> Option<String> {
        None
    }
}

/// An environment plus the values read from a secret store.
pub struct WithRemote<'a> {
    pub env: &'a dyn SecretEnv,
    pub values: &'a crate::remote_secrets::RemoteValues,
}

impl SecretEnv for WithRemote<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.env.var(name)
    }

    fn remote(&self, reference: &str) -> Option<String> {
        self.values.get(reference).map(str::to_string)
    }
}

/// A function's environment variables: the process's own, or (in the deploy rehearsal) the
/// ones a template gives a function.
pub type Vars = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process's environment variables as [`Vars`].
pub fn process_vars() -> Vars {
    std::sync::Arc::new(|name: &str| std::env::var(name).ok())
}

/// A function's environment variables, then the keys of its `INLET_SECRETS_JSON`.
pub struct ProcessEnv {
    vars: Vars,
    json: BTreeMap<String, String>,
}

impl ProcessEnv {
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_vars(process_vars())
    }

    pub fn from_vars(vars: Vars) -> Result<Self, ConfigError> {
        let json = match vars("INLET_SECRETS_JSON") {
            Some(s) if !s.trim().is_empty() => serde_json::from_str(&s).map_err(|e| {
                ConfigError::from(invalid(
                    "INLET_SECRETS_JSON",
                    format!("must be a JSON object of strings: {e}"),
                ))
            })?,
            _ => BTreeMap::new(),
        };
        Ok(Self { vars, json })
    }
}

impl std::fmt::Debug for ProcessEnv {
    // Never the values: INLET_SECRETS_JSON holds secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessEnv")
            .field("secret_names", &self.json.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretEnv for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        (self.vars)(name).or_else(|| self.json.get(name).cloned())
    }
}

impl<F: Fn(&str) -> Option<String>> SecretEnv for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

pub(super) fn resolve_secret(
    field: &str,
    reference: &str,
    environment: Environment,
    env: &dyn SecretEnv,
) -> Result<String, FieldError> {
    if let Some(name) = reference.strip_prefix("env:") {
        return env.var(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            invalid(
                field,
                format!("environment variable {name} is not set (nor a key in INLET_SECRETS_JSON)"),
            )
        });
    }
    if crate::remote_secrets::is_remote(reference) {
        return env.remote(reference).ok_or_else(|| {
            invalid(
                field,
                format!(
                    "{reference} is read from AWS only where a secret store is configured (the Lambdas); locally use env:NAME"
                ),
            )
        });
    }
    if let Some(value) = reference.strip_prefix("literal:") {
        if environment != Environment::Local {
            return Err(invalid(
                field,
                "literal secrets are only allowed with settings.environment = \"local\"; use env:NAME",
            ));
        }
        return Ok(value.to_string());
    }
    Err(invalid(
        field,
        "a secret must be a reference: env:NAME, ssm:/parameter, secretsmanager:NAME[#field] (or literal:VALUE in a local config)",
    ))
}

fn parse_not_after(field: &str, s: &str) -> Result<i64, FieldError> {
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| invalid(field, format!("not an RFC 3339 time: {e}")))
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .map_err(|_| invalid(field, "before 1970"))
        })
}

/// A list of secret references, resolved; each keeps its configured id (or its index).
pub(super) fn resolve_secrets(
    field: &str,
    specs: &[SecretSpec],
    environment: Environment,
    env: &dyn SecretEnv,
) -> Result<Vec<Secret>, FieldError> {
    let mut secrets = Vec::new();
    for (j, spec) in specs.iter().enumerate() {
        let sf = format!("{field}[{j}]");
        let secret = match spec {
            SecretSpec::Ref(r) => Secret::new(
                j.to_string(),
                resolve_secret(&sf, r, environment, env)?,
                None,
            ),
            SecretSpec::Full {
                id,
                value,
                not_after,
            } => {
                let na = not_after
                    .as_deref()
                    .map(|t| parse_not_after(&format!("{sf}.not_after"), t))
                    .transpose()?;
                Secret::new(
                    id.clone(),
                    resolve_secret(&format!("{sf}.value"), value, environment, env)?,
                    na,
                )
            }
        };
        secrets.push(secret);
    }
    Ok(secrets)
}
