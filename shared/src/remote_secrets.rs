//! Secret references kept outside the config and the template: `ssm:/path/name` (an SSM
//! SecureString parameter) and `secretsmanager:NAME_OR_ARN` or `secretsmanager:NAME#field`
//! (a field of a JSON secret). They are read once per cold start and again every refresh
//! interval, so a rotated secret is picked up without a redeploy.

use std::collections::BTreeMap;

use crate::ports::{SecretStore, SecretStoreError};

/// One remote reference, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteRef {
    Ssm { name: String },
    SecretsManager { id: String, field: Option<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteSecretError {
    #[error("{reference:?}: {message}")]
    Malformed { reference: String, message: String },
    #[error(transparent)]
    Store(#[from] SecretStoreError),
    #[error("{reference}: the secret is not a JSON object with a string field {field:?}")]
    MissingField { reference: String, field: String },
    #[error("{reference}: the value is empty")]
    Empty { reference: String },
}

impl RemoteRef {
    /// `None` when `reference` is not a remote kind (`env:`, `literal:` are resolved locally).
    pub fn parse(reference: &str) -> Option<Result<Self, RemoteSecretError>> {
        let malformed = |message: &str| RemoteSecretError::Malformed {
            reference: reference.to_string(),
            message: message.to_string(),
        };
        if let Some(name) = reference.strip_prefix("ssm:") {
            // SSM names are `/a/b` paths or bare names; an ARN is accepted too.
            return Some(
                if name.trim().is_empty() || name.contains(char::is_whitespace) {
                    Err(malformed("expected ssm:/path/to/parameter"))
                } else {
                    Ok(RemoteRef::Ssm {
                        name: name.to_string(),
                    })
                },
            );
        }
        if let Some(rest) = reference.strip_prefix("secretsmanager:") {
            let (id, field) = match rest.rsplit_once('#') {
                Some((id, field)) => (id, Some(field)),
                None => (rest, None),
            };
            return Some(
                if id.trim().is_empty()
                    || id.contains(char::is_whitespace)
                    || field.is_some_and(str::is_empty)
                {
                    Err(malformed(
                        "expected secretsmanager:NAME_OR_ARN or secretsmanager:NAME#json_field",
                    ))
                } else {
                    Ok(RemoteRef::SecretsManager {
                        id: id.to_string(),
                        field: field.map(str::to_string),
                    })
                },
            );
        }
        None
    }
}

/// Whether a reference is read from a secret store rather than the process.
pub(crate) fn is_remote(reference: &str) -> bool {
    RemoteRef::parse(reference).is_some()
}

/// The values of remote references, keyed by the reference as written.
#[derive(Default, Clone)]
pub struct RemoteValues(BTreeMap<String, String>);

impl RemoteValues {
    pub fn get(&self, reference: &str) -> Option<&str> {
        self.0.get(reference).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// Values never print, even in a debug dump of a boot error.
impl std::fmt::Debug for RemoteValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Read every distinct reference once. A secret named by several references (different
/// fields of one JSON secret) is fetched once.
pub(crate) async fn fetch_all<'a>(
    store: &dyn SecretStore,
    references: impl IntoIterator<Item = &'a str>,
) -> Result<RemoteValues, RemoteSecretError> {
    let mut fetched: BTreeMap<(bool, String), String> = BTreeMap::new();
    let mut values = BTreeMap::new();
    for reference in references {
        if values.contains_key(reference) {
            continue;
        }
        let Some(parsed) = RemoteRef::parse(reference) else {
            continue;
        };
        let value = match parsed? {
            RemoteRef::Ssm { name } => {
                let key = (false, name);
                match fetched.get(&key) {
                    Some(v) => v.clone(),
                    None => {
                        let v = store.parameter(&key.1).await?;
                        fetched.insert(key, v.clone());
                        v
                    }
                }
            }
            RemoteRef::SecretsManager { id, field } => {
                let key = (true, id);
                let whole = match fetched.get(&key) {
                    Some(v) => v.clone(),
                    None => {
                        let v = store.secret(&key.1).await?;
                        fetched.insert(key, v.clone());
                        v
                    }
                };
                match field {
                    None => whole,
                    Some(field) => json_field(&whole, &field).ok_or_else(|| {
                        RemoteSecretError::MissingField {
                            reference: reference.to_string(),
                            field,
                        }
                    })?,
                }
            }
        };
        if value.is_empty() {
            return Err(RemoteSecretError::Empty {
                reference: reference.to_string(),
            });
        }
        values.insert(reference.to_string(), value);
    }
    Ok(RemoteValues(values))
}

fn json_field(secret: &str, field: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(secret)
        .ok()?
        .get(field)?
    {
        serde_json::Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// Parameters and secrets in memory, counting reads.
    #[derive(Default)]
    pub(crate) struct MemoryStore {
        pub parameters: Mutex<BTreeMap<String, String>>,
        pub secrets: Mutex<BTreeMap<String, String>>,
        pub reads: Mutex<u32>,
    }

    impl MemoryStore {
        pub(crate) fn set_parameter(&self, name: &str, value: &str) {
            self.parameters
                .lock()
                .unwrap()
                .insert(name.into(), value.into());
        }
        pub(crate) fn set_secret(&self, id: &str, value: &str) {
            self.secrets.lock().unwrap().insert(id.into(), value.into());
        }
    }

    #[async_trait]
    impl SecretStore for MemoryStore {
        async fn parameter(&self, name: &str) -> Result<String, SecretStoreError> {
            *self.reads.lock().unwrap() += 1;
            self.parameters
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .ok_or(SecretStoreError::NotFound {
                    reference: format!("ssm:{name}"),
                })
        }
        async fn secret(&self, id: &str) -> Result<String, SecretStoreError> {
            *self.reads.lock().unwrap() += 1;
            self.secrets
                .lock()
                .unwrap()
                .get(id)
                .cloned()
                .ok_or(SecretStoreError::NotFound {
                    reference: format!("secretsmanager:{id}"),
                })
        }
    }

    #[test]
    fn references_parse_or_say_what_is_expected() {
        assert_eq!(
            RemoteRef::parse("ssm:/inlet/github").unwrap().unwrap(),
            RemoteRef::Ssm {
                name: "/inlet/github".into()
            }
        );
        assert_eq!(
            RemoteRef::parse("secretsmanager:inlet/keys#stripe")
                .unwrap()
                .unwrap(),
            RemoteRef::SecretsManager {
                id: "inlet/keys".into(),
                field: Some("stripe".into())
            }
        );
        assert_eq!(
            RemoteRef::parse(
                "secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:inlet-AbCdEf"
            )
            .unwrap()
            .unwrap(),
            RemoteRef::SecretsManager {
                id: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:inlet-AbCdEf".into(),
                field: None
            }
        );
        assert!(RemoteRef::parse("env:X").is_none());
        assert!(RemoteRef::parse("literal:x").is_none());
        for bad in ["ssm:", "ssm: /x", "secretsmanager:", "secretsmanager:x#"] {
            let err = RemoteRef::parse(bad).unwrap().unwrap_err();
            assert!(
                matches!(err, RemoteSecretError::Malformed { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn each_secret_is_read_once_and_fields_come_from_its_json() {
        let store = MemoryStore::default();
        store.set_parameter("/inlet/gh", "gh-secret");
        store.set_secret(
            "inlet/keys",
            r#"{"stripe":"whsec_a","paddle":"pdl_b","n":1}"#,
        );
        let refs = [
            "ssm:/inlet/gh",
            "secretsmanager:inlet/keys#stripe",
            "secretsmanager:inlet/keys#paddle",
            "ssm:/inlet/gh",
            "env:IGNORED",
        ];
        let values = fetch_all(&store, refs).await.unwrap();
        assert_eq!(values.get("ssm:/inlet/gh"), Some("gh-secret"));
        assert_eq!(
            values.get("secretsmanager:inlet/keys#stripe"),
            Some("whsec_a")
        );
        assert_eq!(
            values.get("secretsmanager:inlet/keys#paddle"),
            Some("pdl_b")
        );
        assert_eq!(values.len(), 3);
        assert_eq!(*store.reads.lock().unwrap(), 2, "one read per stored item");
        assert!(
            !format!("{values:?}").contains("whsec_a"),
            "values never print"
        );

        let missing = fetch_all(&store, ["secretsmanager:inlet/keys#n"]).await;
        assert!(matches!(
            missing,
            Err(RemoteSecretError::MissingField { .. })
        ));
        let absent = fetch_all(&store, ["ssm:/nope"]).await.unwrap_err();
        assert!(absent.to_string().contains("ssm:/nope"), "{absent}");
        store.set_parameter("/empty", "");
        assert!(matches!(
            fetch_all(&store, ["ssm:/empty"]).await,
            Err(RemoteSecretError::Empty { .. })
        ));
    }
}
