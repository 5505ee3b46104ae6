//! `SecretStore` over SSM Parameter Store (`GetParameter` with decryption) and Secrets
//! Manager (`GetSecretValue`). Errors name the reference and the AWS error code only.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};

use crate::ports::{SecretStore, SecretStoreError};

#[derive(Debug, Clone)]
pub struct AwsSecretStore {
    ssm: aws_sdk_ssm::Client,
    secrets: aws_sdk_secretsmanager::Client,
}

impl AwsSecretStore {
    /// Building the clients makes no call: a config without remote references costs
    /// nothing at cold start.
    pub fn from_conf(config: &SdkConfig) -> Self {
        Self {
            ssm: aws_sdk_ssm::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
        }
    }
}

fn classify<E>(reference: String, err: &aws_sdk_ssm::error::SdkError<E>) -> SecretStoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = err.code().unwrap_or_default();
    match code {
        "ParameterNotFound" | "ResourceNotFoundException" => {
            SecretStoreError::NotFound { reference }
        }
        "AccessDeniedException" | "AccessDenied" => SecretStoreError::Denied {
            reference,
            message: err.message().unwrap_or(code).to_string(),
        },
        _ => SecretStoreError::Backend {
            reference,
            message: DisplayErrorContext(err).to_string(),
        },
    }
}

#[async_trait]
impl SecretStore for AwsSecretStore {
    async fn parameter(&self, name: &str) -> Result<String, SecretStoreError> {
        let reference = format!("ssm:{name}");
        let out = self
            .ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| classify(reference.clone(), &e))?;
        out.parameter
            .and_then(|p| p.value)
            .ok_or(SecretStoreError::NotFound { reference })
    }

    async fn secret(&self, id: &str) -> Result<String, SecretStoreError> {
        let reference = format!("secretsmanager:{id}");
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| classify(reference.clone(), &e))?;
        // A binary secret has no text form for a signing key: say so rather than guess.
        out.secret_string.ok_or(SecretStoreError::Backend {
            reference,
            message: "the secret has no SecretString (binary secrets are not supported)".into(),
        })
    }
}
