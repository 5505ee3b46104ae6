//! `inlet check --template`: a config against what `template.yaml` will create, with the
//! parameter overrides a deploy passes. Everything here works on the config document, not
//! the validated config, so it needs no secret: a deploy step can run it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use inlet::config::{ConfigDoc, Settings, TargetKind};
use inlet::remote_secrets::RemoteRef;
use yaml_rust2::{Yaml, YamlLoader};

/// CloudFormation's cap on a parameter value, which `InletConfig` carries inline.
pub const MAX_INLINE_CONFIG: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: not a template: {message}")]
    Template { path: String, message: String },
    #[error("parameter overrides: {0}")]
    Overrides(String),
}

/// One template parameter: what CloudFormation checks a value against.
#[derive(Debug, Clone, Default)]
pub struct Param {
    pub kind: String,
    pub default: Option<String>,
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
    pub allowed: Vec<String>,
}

/// The template's `Parameters`, the only part read.
#[derive(Debug, Default)]
pub struct Template {
    pub params: BTreeMap<String, Param>,
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(y: &Yaml) -> Option<f64> {
    scalar(y).and_then(|s| s.parse().ok())
}

impl Template {
    pub fn read(path: &Path) -> Result<Self, DeployError> {
        let text = std::fs::read_to_string(path).map_err(|e| DeployError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text).map_err(|message| DeployError::Template {
            path: path.display().to_string(),
            message,
        })
    }

    /// CloudFormation's short tags (`!Ref`, `!Sub`, …) elsewhere in the file are ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
        let Some(Yaml::Hash(params)) = docs.first().map(|d| &d["Parameters"]) else {
            return Err("no Parameters section".into());
        };
        let mut out = BTreeMap::new();
        for (name, spec) in params {
            let name = scalar(name).ok_or("a parameter name is not a string")?;
            let kind = scalar(&spec["Type"]).ok_or(format!("parameter {name} has no Type"))?;
            let allowed = match &spec["AllowedValues"] {
                Yaml::Array(items) => items.iter().filter_map(scalar).collect(),
                _ => Vec::new(),
            };
            out.insert(
                name,
                Param {
                    kind,
                    default: scalar(&spec["Default"]),
                    min_value: number(&spec["MinValue"]),
                    max_value: number(&spec["MaxValue"]),
                    allowed,
                },
            );
        }
        Ok(Self { params: out })
    }
}

/// SAM's `--parameter-overrides` text: `Key=Value` pairs apart by spaces, a value quoted
/// with `"…"` (backslash escapes) or `'…'` when it holds spaces.
pub fn parse_overrides(text: &str) -> Result<BTreeMap<String, String>, DeployError> {
    let bad = |m: String| DeployError::Overrides(m);
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            if c.is_whitespace() {
                return Err(bad(format!("{key:?} has no =value")));
            }
            key.push(c);
        }
        if key.is_empty() {
            return Err(bad("an entry has no key".into()));
        }
        let mut value = String::new();
        match chars.peek().copied() {
            Some(q @ ('"' | '\'')) => {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == q {
                        closed = true;
                        break;
                    }
                    if c == '\\' && q == '"' {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                        continue;
                    }
                    value.push(c);
                }
                if !closed {
                    return Err(bad(format!("{key}: unterminated quote")));
                }
            }
            _ => {
                while let Some(c) = chars.peek().copied() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.insert(key, value);
    }
}

/// `parameter_overrides` of `[<env>.deploy.parameters]` in a samconfig.toml (a string, or
/// a list of `Key=Value` strings).
pub fn samconfig_overrides(
    path: &Path,
    env: &str,
) -> Result<BTreeMap<String, String>, DeployError> {
    let read = |message: String| DeployError::Read {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| read(e.to_string()))?;
    let value = table
        .get(env)
        .and_then(|e| e.get("deploy"))
        .and_then(|d| d.get("parameters"))
        .and_then(|p| p.get("parameter_overrides"));
    match value {
        None => Ok(BTreeMap::new()),
        Some(toml::Value::String(s)) => parse_overrides(s),
        Some(toml::Value::Array(items)) => {
            let mut out = BTreeMap::new();
            for item in items {
                let s = item.as_str().ok_or_else(|| {
                    read("parameter_overrides: a list item is not a string".into())
                })?;
                out.extend(parse_overrides(s)?);
            }
            Ok(out)
        }
        Some(_) => Err(read(
            "parameter_overrides must be a string or a list of strings".into(),
        )),
    }
}

/// What `inlet check --template` found.
#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// The overrides this config needs, in template order.
    pub overrides: Vec<(String, String)>,
}

/// The config document as the compact JSON `InletConfig` takes.
pub fn compact_json(text: &str, hint: Option<&str>) -> Result<String, String> {
    let value: serde_json::Value = if hint == Some("json") || text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else {
        let t: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        serde_json::to_value(t).map_err(|e| e.to_string())?
    };
    serde_json::to_string(&value).map_err(|e| e.to_string())
}

/// The config as JSON with each literal secret's value replaced: the report prints the
/// InletConfig override, and a literal's value must never reach a terminal or a CI log.
fn without_literal_values(config_json: &str, doc: &ConfigDoc) -> String {
    fn walk(v: &mut serde_json::Value, literals: &[&str]) {
        match v {
            serde_json::Value::String(s) if literals.contains(&s.as_str()) => {
                *s = "literal:<not shown>".into();
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, literals)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|i| walk(i, literals)),
            _ => {}
        }
    }
    let fields = doc.secret_fields();
    let literals: Vec<&str> = fields
        .iter()
        .map(|(_, r)| *r)
        .filter(|r| r.starts_with("literal:"))
        .collect();
    match serde_json::from_str::<serde_json::Value>(config_json) {
        Ok(mut value) if !literals.is_empty() => {
            walk(&mut value, &literals);
            value.to_string()
        }
        _ => config_json.to_string(),
    }
}

/// The queue ARN of an SQS queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`).
pub fn queue_arn(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let mut labels = host.split('.');
    if labels.next()? != "sqs" {
        return None;
    }
    let region = labels.next()?;
    let partition = if host.ends_with(".amazonaws.com.cn") {
        "aws-cn"
    } else {
        "aws"
    };
    let (account, name) = path.trim_end_matches('/').split_once('/')?;
    let ok = |s: &str| !s.is_empty() && !s.contains('/');
    (ok(region) && account.bytes().all(|b| b.is_ascii_digit()) && ok(name))
        .then(|| format!("arn:{partition}:sqs:{region}:{account}:{name}"))
}

/// Whether `arns` grant the remote reference: `Some(true)` listed, `Some(false)` not,
/// `None` when an entry is a pattern this cannot evaluate.
fn covered(reference: &RemoteRef, arns: &[String]) -> Option<bool> {
    let mut unsure = false;
    for arn in arns {
        let resource = match reference {
            RemoteRef::Ssm { name } => {
                if name.starts_with("arn:") {
                    if arn == name {
                        return Some(true);
                    }
                    continue;
                }
                let Some((_, param)) = arn.split_once(":parameter") else {
                    unsure |= !arn.starts_with("arn:");
                    continue;
                };
                // An ARN spells /a/b as parameter/a/b, and a bare name b as parameter/b.
                let want = if name.starts_with('/') {
                    name.clone()
                } else {
                    format!("/{name}")
                };
                (param, want)
            }
            RemoteRef::SecretsManager { id, .. } => {
                if id.starts_with("arn:") {
                    if arn == id || arn.starts_with(&format!("{id}-")) {
                        return Some(true);
                    }
                    continue;
                }
                let Some((_, secret)) = arn.split_once(":secret:") else {
                    unsure |= !arn.starts_with("arn:");
                    continue;
                };
                // Secrets Manager appends "-" and 6 random characters to a secret's name.
                let suffix_ok = secret.strip_prefix(id.as_str()).is_some_and(|rest| {
                    rest.is_empty()
                        || rest == "-??????"
                        || rest == "*"
                        || (rest.len() == 7
                            && rest.starts_with('-')
                            && rest[1..].bytes().all(|b| b.is_ascii_alphanumeric()))
                });
                if suffix_ok {
                    return Some(true);
                }
                unsure |= secret.contains(['*', '?']);
                continue;
            }
        };
        let (param, want) = resource;
        if param == want {
            return Some(true);
        }
        unsure |= param.contains(['*', '?']);
    }
    (!unsure).then_some(false)
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Check a config document (`text` as written, for its JSON size) against a template and
/// the overrides a deploy passes. `strict`: the overrides are the whole deploy (given on
/// the command line or in samconfig), so a needed one that is missing is an error; else
/// the report lists it to pass.
pub fn check(
    doc: &ConfigDoc,
    config_json: &str,
    template: &Template,
    given: &BTreeMap<String, String>,
    strict: bool,
) -> Report {
    let mut c = Checker {
        doc,
        template,
        given,
        strict,
        r: Report::default(),
    };
    c.single_machine();
    c.overrides_fit_the_template();
    c.inline_config(&without_literal_values(config_json, doc));
    c.queue_settings();
    c.timeouts();
    c.poll_schedules();
    c.sqs_targets();
    c.secret_references();
    c.fifo_order();
    c.r
}

/// One `inlet check --template` run: the inputs and the report its sections add to, in
/// the order the report lists them.
struct Checker<'a> {
    doc: &'a ConfigDoc,
    template: &'a Template,
    given: &'a BTreeMap<String, String>,
    strict: bool,
    r: Report,
}

impl Checker<'_> {
    /// A parameter's value for this deploy: the override, else the template's default.
    fn value(&self, name: &str) -> Option<String> {
        self.given.get(name).cloned().or_else(|| {
            self.template
                .params
                .get(name)
                .and_then(|p| p.default.clone())
        })
    }

    fn param_u64(&self, name: &str) -> Option<u64> {
        self.value(name).and_then(|v| v.trim().parse::<u64>().ok())
    }

    fn list_param(&self, name: &str) -> Vec<String> {
        self.value(name).map(|v| list(&v)).unwrap_or_default()
    }

    /// `InletConfig=ssm:<name>`: the config is read from that SSM parameter.
    fn config_ssm(&self) -> Option<String> {
        self.given
            .get("InletConfig")
            .and_then(|v| v.trim().strip_prefix("ssm:"))
            .map(str::to_string)
    }

    /// A needed value: agree with a given override, or be listed to pass.
    fn need(&mut self, field: &str, name: &str, want: String, same: bool) {
        if !self.template.params.contains_key(name) {
            self.r.errors.push(format!(
                "{field} needs the template parameter {name}, which it does not have"
            ));
            return;
        }
        // A long value (the config itself) is only in the overrides line printed last.
        let shown = if want.len() > 80 {
            "(the value printed below)".to_string()
        } else {
            want.clone()
        };
        let current = self.value(name);
        match self.given.get(name) {
            Some(_) if same => {}
            Some(have) if have.len() > 80 => self.r.errors.push(format!(
                "{field} needs {name}={shown}, the overrides pass another value"
            )),
            Some(have) => self.r.errors.push(format!(
                "{field} needs {name}={shown}, the overrides pass {name}={have}"
            )),
            None if self.strict && current.as_deref() != Some(want.as_str()) => self.r.errors.push(
                format!("{field} needs {name}={shown}, the overrides do not pass {name}"),
            ),
            None => {}
        }
        if current.as_deref() != Some(want.as_str()) || self.given.contains_key(name) {
            self.r.overrides.push((name.to_string(), want));
        }
    }

    /// Each override names a template parameter and fits its type, allowed values and range.
    fn overrides_fit_the_template(&mut self) {
        for (name, value) in self.given {
            let Some(p) = self.template.params.get(name) else {
                self.r.errors.push(format!(
                    "override {name}: the template has no such parameter"
                ));
                continue;
            };
            if !p.allowed.is_empty() && !p.allowed.contains(value) {
                self.r.errors.push(format!(
                    "override {name}={value}: allowed values are {}",
                    p.allowed.join(", ")
                ));
            }
            if p.kind != "Number" {
                continue;
            }
            match value.trim().parse::<f64>() {
                Err(_) => self
                    .r
                    .errors
                    .push(format!("override {name}={value}: not a number")),
                Ok(n)
                    if p.min_value.is_some_and(|m| n < m) || p.max_value.is_some_and(|m| n > m) =>
                {
                    self.r.errors.push(format!(
                        "override {name}={value}: outside {}..{}",
                        p.min_value.map_or("".into(), |m| m.to_string()),
                        p.max_value.map_or("".into(), |m| m.to_string())
                    ))
                }
                Ok(_) => {}
            }
        }
    }

    /// What only works on one machine (a local config, literal secrets, a file target) is
    /// refused by the Lambdas at start: an error here, before anything is deployed.
    fn single_machine(&mut self) {
        for problem in inlet::config::single_machine_settings(self.doc) {
            self.r
                .errors
                .push(format!("{problem} (the Lambdas refuse it at start)"));
        }
    }

    /// InletConfig: inline compact JSON within CloudFormation's cap, or an SSM parameter.
    fn inline_config(&mut self, config_json: &str) {
        if self.config_ssm().is_some() {
            return;
        }
        if config_json.len() > MAX_INLINE_CONFIG {
            self.r.errors.push(format!(
                "the config is {} bytes as compact JSON; InletConfig takes at most {MAX_INLINE_CONFIG}: store it in an SSM parameter, pass InletConfig=ssm:/name and list the parameter's ARN in SsmParameterArns",
                config_json.len()
            ));
            return;
        }
        let same = self.given.get("InletConfig").is_some_and(|v| {
            serde_json::from_str::<serde_json::Value>(v).ok()
                == serde_json::from_str::<serde_json::Value>(config_json).ok()
        });
        self.need("the config", "InletConfig", config_json.to_string(), same);
    }

    /// The deployment's queue settings replace the document's (finish_from_env).
    fn queue_settings(&mut self) {
        let s = &self.doc.settings;
        let numbers = [
            ("settings.lease_seconds", "LeaseSeconds", s.lease_seconds),
            (
                "settings.visibility_timeout_seconds",
                "QueueVisibilityTimeoutSeconds",
                s.visibility_timeout_seconds,
            ),
            (
                "settings.max_receive_count",
                "MaxReceiveCount",
                u64::from(s.max_receive_count),
            ),
        ];
        for (field, name, want) in numbers {
            let same = self
                .given
                .get(name)
                .is_some_and(|v| v.trim().parse::<u64>().ok() == Some(want));
            self.need(&format!("{field} = {want}"), name, want.to_string(), same);
        }
    }

    /// Leases against the worker's timeout and the queue's visibility timeout, and the
    /// ingest deadline against the ingest Lambda's timeout.
    fn timeouts(&mut self) {
        let doc = self.doc;
        let settings = Settings {
            lease_seconds: self
                .param_u64("LeaseSeconds")
                .unwrap_or(doc.settings.lease_seconds),
            visibility_timeout_seconds: self
                .param_u64("QueueVisibilityTimeoutSeconds")
                .unwrap_or(doc.settings.visibility_timeout_seconds),
            ..doc.settings.clone()
        };
        let timeout = self.param_u64("WorkerTimeoutSeconds");
        if let Err(e) = inlet::bootstrap::check_lease(&settings, timeout) {
            self.r.errors.push(format!(
                "settings.lease_seconds vs LeaseSeconds, QueueVisibilityTimeoutSeconds, WorkerTimeoutSeconds: {e}"
            ));
        }
        self.source_leases(settings.visibility_timeout_seconds, timeout);
        self.ingest_deadline();
        if let Some(t) = timeout {
            let vis = settings.visibility_timeout_seconds;
            if vis < 6 * t {
                self.r.warnings.push(format!(
                    "QueueVisibilityTimeoutSeconds ({vis}) is under 6 x WorkerTimeoutSeconds ({t}), which AWS asks for an SQS event source"
                ));
            }
        }
    }

    fn source_leases(&mut self, visibility: u64, timeout: Option<u64>) {
        for (i, src) in self.doc.sources.iter().enumerate() {
            let Some(lease) = src.lease_seconds else {
                continue;
            };
            if let Some(t) = timeout {
                if let Err(e) = inlet::bootstrap::check_source_lease(&src.id, lease as i64, t) {
                    self.r.errors.push(format!(
                        "sources[{i}].lease_seconds vs WorkerTimeoutSeconds: {e}"
                    ));
                }
            }
            if lease > visibility {
                self.r.errors.push(format!(
                    "sources[{i}].lease_seconds ({lease}) is longer than QueueVisibilityTimeoutSeconds ({visibility}): a redelivery could meet a dead worker's live lease"
                ));
            }
        }
    }

    /// Past its timeout the ingest Lambda answers a gateway error, not the 503 the deadline
    /// is there to give.
    fn ingest_deadline(&mut self) {
        let written = &self.doc.settings.ingest_deadline;
        if let (Some(t), Ok(deadline)) = (
            self.param_u64("IngestTimeoutSeconds"),
            inlet::config::parse_ingest_deadline(written),
        ) {
            if deadline >= std::time::Duration::from_secs(t) {
                self.r.errors.push(format!(
                    "settings.ingest_deadline ({written}) is not below IngestTimeoutSeconds ({t} s): a slow queue would time the ingest Lambda out instead of answering 503"
                ));
            }
        }
    }

    /// One schedule per poll source, exactly what `inlet schedules` prints.
    fn poll_schedules(&mut self) {
        let schedules = match self.doc.poll_schedules() {
            Err(e) => return self.r.errors.push(e.to_string()),
            Ok(schedules) => schedules,
        };
        let want: Vec<String> = schedules
            .iter()
            .map(|(id, e)| format!("{id}={e}"))
            .collect();
        let have = self.list_param("PollSchedules");
        let have_set: BTreeSet<&String> = have.iter().collect();
        if self.given.contains_key("PollSchedules") || self.strict {
            for (i, src) in self.doc.sources.iter().enumerate() {
                if let Some((_, e)) = schedules.iter().find(|(id, _)| id == &src.id) {
                    let entry = format!("{}={e}", src.id);
                    if !have_set.contains(&entry) {
                        self.r.errors.push(format!(
                            "sources[{i}].poll ({}) has no entry {entry} in PollSchedules",
                            src.id
                        ));
                    }
                }
            }
            for entry in have.iter().filter(|e| !want.contains(*e)) {
                self.r.errors.push(format!(
                    "PollSchedules entry {entry} matches no poll source of the config (`inlet schedules` prints the list): its invocations would fail"
                ));
            }
        }
        let want_set: BTreeSet<&String> = want.iter().collect();
        if want_set != have_set || self.given.contains_key("PollSchedules") {
            self.r
                .overrides
                .push(("PollSchedules".into(), want.join(",")));
        }
    }

    /// SQS targets: the worker may send only to the queues TargetQueueArns lists.
    fn sqs_targets(&mut self) {
        let mut queue_arns = Vec::new();
        for (i, t) in self.doc.targets.iter().enumerate() {
            if let TargetKind::Sqs(sqs) = &t.kind {
                match queue_arn(&sqs.queue_url) {
                    Some(arn) => queue_arns.push((i, arn)),
                    None => self.r.errors.push(format!(
                        "targets[{i}].queue_url {:?} is not an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>): TargetQueueArns cannot grant it",
                        sqs.queue_url
                    )),
                }
            }
        }
        let granted = self.list_param("TargetQueueArns");
        if self.given.contains_key("TargetQueueArns") || self.strict {
            for (i, arn) in queue_arns.iter().filter(|(_, a)| !granted.contains(a)) {
                self.r.errors.push(format!(
                    "targets[{i}].queue_url: TargetQueueArns does not list {arn}"
                ));
            }
        }
        let mut want_arns: Vec<String> = granted.clone();
        for (_, arn) in queue_arns {
            if !want_arns.contains(&arn) {
                want_arns.push(arn);
            }
        }
        if want_arns != granted {
            self.r
                .overrides
                .push(("TargetQueueArns".into(), want_arns.join(",")));
        }
    }

    /// Secret references: ssm: and secretsmanager: need their grants, env: a WebhookSecrets key.
    fn secret_references(&mut self) {
        let mut refs: Vec<(String, String)> = self
            .doc
            .secret_fields()
            .into_iter()
            .map(|(field, reference)| (field, reference.to_string()))
            .collect();
        if let Some(name) = self.config_ssm() {
            refs.push(("InletConfig".into(), format!("ssm:{name}")));
        }
        let mut env_names: Vec<(String, String)> = Vec::new();
        for (field, reference) in &refs {
            if let Some(name) = reference.strip_prefix("env:") {
                env_names.push((field.clone(), name.to_string()));
                continue;
            }
            match RemoteRef::parse(reference) {
                None => {}
                Some(Err(e)) => self.r.errors.push(format!("{field}: {e}")),
                Some(Ok(parsed)) => self.remote_grant(field, reference, &parsed),
            }
        }
        if !env_names.is_empty() {
            self.webhook_secrets(&env_names);
        }
    }

    /// An `ssm:` or `secretsmanager:` reference against the ARNs its parameter grants.
    fn remote_grant(&mut self, field: &str, reference: &str, parsed: &RemoteRef) {
        let param = match parsed {
            RemoteRef::Ssm { .. } => "SsmParameterArns",
            RemoteRef::SecretsManager { .. } => "SecretArns",
        };
        let arns = self.list_param(param);
        match covered(parsed, &arns) {
            Some(true) => {}
            Some(false) if self.given.contains_key(param) || self.strict => self.r.errors.push(format!(
                "{field} = {reference}: {param} lists no ARN for it (the functions may read only what it lists)"
            )),
            Some(false) => self.r.warnings.push(format!(
                "{field} = {reference}: pass its ARN in {param}"
            )),
            None => self.r.warnings.push(format!(
                "{field} = {reference}: cannot tell whether {param} covers it (a pattern or not an ARN); check by hand"
            )),
        }
    }

    /// `env:` references against the keys of WebhookSecrets (the values are never read).
    fn webhook_secrets(&mut self, env_names: &[(String, String)]) {
        let Some(json) = self.given.get("WebhookSecrets") else {
            let names: BTreeSet<&str> = env_names.iter().map(|(_, n)| n.as_str()).collect();
            let msg = format!(
                "env: references need WebhookSecrets (NoEcho, never printed) with the keys {}",
                names.into_iter().collect::<Vec<_>>().join(", ")
            );
            if self.strict {
                self.r.errors.push(msg);
            } else {
                self.r.warnings.push(msg);
            }
            return;
        };
        let Ok(keys) = serde_json::from_str::<BTreeMap<String, serde_json::Value>>(json) else {
            self.r
                .errors
                .push("WebhookSecrets is not a JSON object".to_string());
            return;
        };
        for (field, name) in env_names {
            if !keys.contains_key(name) {
                self.r.errors.push(format!(
                    "{field} = env:{name}: WebhookSecrets has no key {name}"
                ));
            }
        }
        self.r
            .warnings
            .push("WebhookSecrets: only its key names were checked, not the secrets".into());
    }

    /// Per-entity order needs FIFO queues.
    fn fifo_order(&mut self) {
        let ordered = self.doc.sources.iter().position(|s| s.order_by.is_some());
        if let Some(i) = ordered {
            let same = self.given.get("QueueType").map(String::as_str) == Some("fifo");
            self.need(
                &format!("sources[{i}].order_by"),
                "QueueType",
                "fifo".into(),
                same,
            );
        }
    }
}

/// One override as SAM's `--parameter-overrides` takes it.
pub fn quote(name: &str, value: &str) -> String {
    if !value.is_empty() && !value.contains(char::is_whitespace) && !value.contains(['"', '\'']) {
        format!("{name}={value}")
    } else if !value.contains('\'') {
        format!("{name}='{value}'")
    } else {
        format!(
            "{name}=\"{}\"",
            value.replace('\\', "\\\\").replace('"', "\\\"")
        )
    }
}

/// The webhook base of a stack URL: the outputs end in `/webhooks/`; a bare API or
/// Function URL gets it added.
pub fn webhook_base(url: &str) -> String {
    let b = url.trim_end_matches('/');
    if b.ends_with("/webhooks") {
        format!("{b}/")
    } else {
        format!("{b}/webhooks/")
    }
}

/// Each webhook source's URL to register at its provider: `base` is the template's
/// `WebhookBaseUrl` (or `IngestFunctionUrl`) output; without it, a placeholder.
pub fn webhook_urls(doc: &ConfigDoc, base: Option<&str>) -> Vec<(String, Option<String>)> {
    let base = base
        .map(webhook_base)
        .unwrap_or_else(|| "<WebhookBaseUrl>".into());
    doc.sources
        .iter()
        .map(|s| (s.id.clone(), s.webhooks.then(|| format!("{base}{}", s.id))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_the_way_sam_writes_them() {
        let o = parse_overrides(
            r#" A=1 PollSchedules="a=rate(1 minute),b=rate(2 minutes)" C='{"x": "y"}' D="q\"x" E="#,
        )
        .expect("parses");
        assert_eq!(o["A"], "1");
        assert_eq!(o["PollSchedules"], "a=rate(1 minute),b=rate(2 minutes)");
        assert_eq!(o["C"], r#"{"x": "y"}"#);
        assert_eq!(o["D"], "q\"x");
        assert_eq!(o["E"], "");
        assert!(parse_overrides("A=\"open").is_err());
        assert!(parse_overrides("novalue B=1").is_err());
        for (k, v) in [
            ("A", "x y"),
            ("B", r#"{"a":"b"}"#),
            ("C", r#"it's "q""#),
            ("D", ""),
        ] {
            let back = parse_overrides(&quote(k, v)).expect("quoted parses");
            assert_eq!(back[k], v, "{}", quote(k, v));
        }
    }

    #[test]
    fn queue_urls_become_arns() {
        assert_eq!(
            queue_arn("https://sqs.eu-west-1.amazonaws.com/123456789012/orders").as_deref(),
            Some("arn:aws:sqs:eu-west-1:123456789012:orders")
        );
        assert_eq!(
            queue_arn("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/o.fifo").as_deref(),
            Some("arn:aws-cn:sqs:cn-north-1:123456789012:o.fifo")
        );
        assert_eq!(queue_arn("orders"), None);
        assert_eq!(queue_arn("https://example.com/1/orders"), None);
    }

    #[test]
    fn grants_match_by_name() {
        let ssm = RemoteRef::Ssm {
            name: "/inlet/stripe".into(),
        };
        let sm = RemoteRef::SecretsManager {
            id: "inlet/keys".into(),
            field: Some("stripe".into()),
        };
        let p = |s: &str| vec![s.to_string()];
        let a = "arn:aws:ssm:eu-west-1:1:parameter/inlet/stripe";
        assert_eq!(covered(&ssm, &p(a)), Some(true));
        assert_eq!(
            covered(&ssm, &p("arn:aws:ssm:eu-west-1:1:parameter/inlet/stripe2")),
            Some(false)
        );
        assert_eq!(
            covered(&ssm, &p("arn:aws:ssm:eu-west-1:1:parameter/inlet/*")),
            None
        );
        let s = "arn:aws:secretsmanager:eu-west-1:1:secret:inlet/keys-AbCdEf";
        assert_eq!(covered(&sm, &p(s)), Some(true));
        assert_eq!(
            covered(
                &sm,
                &p("arn:aws:secretsmanager:eu-west-1:1:secret:inlet/keys2-AbCdEf")
            ),
            Some(false)
        );
        assert_eq!(
            covered(
                &sm,
                &p("arn:aws:secretsmanager:eu-west-1:1:secret:inlet/keys-??????")
            ),
            Some(true)
        );
    }

    #[test]
    fn the_template_parameters_are_read_past_the_short_tags() {
        let t = Template::parse(
            "Parameters:\n  A:\n    Type: Number\n    Default: -1\n    MinValue: -1\n  B:\n    Type: String\n    AllowedValues: [x, y]\nResources:\n  R:\n    Type: X\n    Properties:\n      V: !If [C, !Ref A, !Ref AWS::NoValue]\n      S: !Sub \"${A}\"\n",
        )
        .expect("parses");
        assert_eq!(t.params["A"].default.as_deref(), Some("-1"));
        assert_eq!(t.params["A"].min_value, Some(-1.0));
        assert_eq!(t.params["B"].allowed, ["x", "y"]);
        assert!(Template::parse("Resources: {}\n").is_err());
    }
}
