//! The one integration-test binary (each binary links the AWS SDK again; see TOOLCHAIN.md).

mod catalogue;
mod cli;
mod conformance;
mod lambda;
mod pipeline;
mod polling;
mod support;
mod targets;
