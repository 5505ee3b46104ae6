//! What a config must not hold where it runs in a Lambda. A local config (`inlet dev`) may keep
//! its secrets in the file and write events to a file on disk; deployed, the first would put
//! secrets in CloudFormation parameters and logs, the second loses events with the instance.
//! The Lambdas refuse such a config at start and `inlet check --template` reports it, both
//! from this one list, and neither ever prints a secret's value.

use super::schema::{ConfigDoc, Environment, SecretSpec};
use super::{ConfigError, FieldError};
use crate::targets::TargetKind;

impl ConfigDoc {
    /// Every secret reference in document order, with the field that holds it.
    pub fn secret_fields(&self) -> Vec<(String, &str)> {
        fn specs<'a>(field: &str, list: &'a [SecretSpec], out: &mut Vec<(String, &'a str)>) {
            for (j, s) in list.iter().enumerate() {
                match s {
                    SecretSpec::Ref(r) => out.push((format!("{field}[{j}]"), r.as_str())),
                    SecretSpec::Full { value, .. } => {
                        out.push((format!("{field}[{j}].value"), value.as_str()))
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (i, src) in self.sources.iter().enumerate() {
            specs(&format!("sources[{i}].secrets"), &src.secrets, &mut out);
            if let Some(p) = &src.poll {
                specs(&format!("sources[{i}].poll.secrets"), &p.secrets, &mut out);
            }
        }
        for (i, t) in self.targets.iter().enumerate() {
            if let TargetKind::Http(http) = &t.kind {
                out.push((format!("targets[{i}].secret"), http.secret.as_str()));
            }
        }
        out
    }
}

/// Every setting of `doc` that only works on one machine, in document order; empty when the
/// config can be deployed.
pub fn single_machine_settings(doc: &ConfigDoc) -> Vec<FieldError> {
    let mut out = Vec::new();
    if doc.settings.environment == Environment::Local {
        out.push(FieldError::new(
            "settings.environment",
            "is \"local\", which is for inlet dev on one machine (it lets secrets sit in the file); a deployed config leaves it out",
        ));
    }
    for (field, reference) in doc.secret_fields() {
        if reference.starts_with("literal:") {
            out.push(FieldError::new(
                field,
                "is a literal secret (its value is in the config); deployed, name it: env:NAME (a key of WebhookSecrets), ssm:/name or secretsmanager:name",
            ));
        }
    }
    for (i, t) in doc.targets.iter().enumerate() {
        match &t.kind {
            TargetKind::Jsonl { .. } => out.push(FieldError::new(
                format!("targets[{i}].kind"),
                format!(
                    "target {:?} is \"jsonl\": a file on one machine's disk, lost with a Lambda's instance; use eventbridge, sqs or http",
                    t.id
                ),
            )),
            TargetKind::Http(http) if points_at_this_machine(&http.url) => {
                out.push(FieldError::new(
                    format!("targets[{i}].url"),
                    format!(
                        "target {:?} points at this machine (loopback); nothing listens there in a Lambda",
                        t.id
                    ),
                ))
            }
            _ => {}
        }
    }
    out
}

/// The Lambdas' start: a config with any [`single_machine_settings`] is refused, naming each.
pub fn refuse_single_machine(doc: &ConfigDoc) -> Result<(), ConfigError> {
    match single_machine_settings(doc) {
        problems if problems.is_empty() => Ok(()),
        problems => Err(ConfigError::Invalid(problems)),
    }
}

fn points_at_this_machine(text: &str) -> bool {
    match url::Url::parse(text).ok().as_ref().and_then(url::Url::host) {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = include_str!("../../../infra/dev/inlet.toml");

    fn doc(text: &str) -> ConfigDoc {
        ConfigDoc::parse(text, Some("toml")).expect("parses")
    }

    fn fields(problems: &[FieldError]) -> Vec<&str> {
        problems.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn the_dev_config_is_refused_for_every_local_setting_and_never_shows_a_value() {
        let d = doc(DEV);
        let problems = single_machine_settings(&d);
        let named = fields(&problems);
        assert_eq!(named.first(), Some(&"settings.environment"), "{named:?}");
        let literals: Vec<String> = d
            .secret_fields()
            .into_iter()
            .filter(|(_, r)| r.starts_with("literal:"))
            .map(|(f, _)| f)
            .collect();
        assert!(literals.len() >= 5, "{literals:?}");
        for field in &literals {
            assert!(
                named.contains(&field.as_str()),
                "{field} not named: {named:?}"
            );
        }
        assert!(named.iter().any(|f| f.ends_with(".kind")), "{named:?}");
        let text = refuse_single_machine(&d).expect_err("refused").to_string();
        for (_, reference) in d.secret_fields() {
            let value = reference.trim_start_matches("literal:");
            assert!(!text.contains(value), "{value} printed in {text}");
        }
    }

    #[test]
    fn a_deployed_config_passes() {
        let d = doc(r#"
[[sources]]
id = "stripe"
provider = "stripe"
secrets = ["env:STRIPE_WHSEC", { id = "old", value = "secretsmanager:inlet/keys#stripe_old", not_after = "2030-01-01T00:00:00Z" }]

[[targets]]
id = "bus"
kind = "eventbridge"

[[targets]]
id = "crm"
kind = "http"
url = "https://crm.example.com/hooks"
secret = "ssm:/inlet/crm"

[[routes]]
sources = ["stripe"]
targets = ["bus", "crm"]
"#);
        assert_eq!(single_machine_settings(&d), vec![]);
        assert!(refuse_single_machine(&d).is_ok());
        assert_eq!(
            d.secret_fields()
                .iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>(),
            [
                "sources[0].secrets[0]",
                "sources[0].secrets[1].value",
                "targets[1].secret"
            ]
        );
    }

    #[test]
    fn loopback_targets_are_named_and_private_ones_are_not() {
        for (url, local) in [
            ("http://127.0.0.1:9000/in", true),
            ("http://[::1]:9000/in", true),
            ("http://localhost/in", true),
            ("https://api.localhost./in", true),
            ("http://0.0.0.0/in", true),
            ("http://10.0.3.7/in", false),
            ("https://hooks.example.com/in", false),
            ("not a url", false),
        ] {
            assert_eq!(points_at_this_machine(url), local, "{url}");
        }
    }
}
