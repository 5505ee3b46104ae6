//! Adapters for the ports: AWS services (`aws`) and SQLite (`embedded`), selected by
//! Cargo features so a Lambda never links SQLite and the CLI never needs the AWS SDK.

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "embedded")]
pub mod embedded;
