//! Where `ssm:` and `secretsmanager:` references are read: AWS SSM Parameter Store and
//! Secrets Manager (`adapters::aws::secrets`). Values pass through as text; they are never
//! logged, and an error names the reference, never a value.

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum SecretStoreError {
    #[error("{reference} does not exist")]
    NotFound { reference: String },
    #[error("{reference}: access denied ({message})")]
    Denied { reference: String, message: String },
    #[error("{reference}: {message}")]
    Backend { reference: String, message: String },
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    /// An SSM parameter's value, decrypted when it is a SecureString.
    async fn parameter(&self, name: &str) -> Result<String, SecretStoreError>;

    /// A Secrets Manager secret's current `SecretString` (name or ARN).
    async fn secret(&self, id: &str) -> Result<String, SecretStoreError>;
}
