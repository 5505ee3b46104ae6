//! The `inlet` CLI's reusable parts: the local HTTP server and worker loop, which the
//! end-to-end tests run in-process as well; request signing, which `inlet sign` and the
//! load generator share; the load generator itself (`inlet-load`); and the deploy check
//! (`inlet check --template`).

pub mod deploy;
pub mod load;
pub mod runtime_stub;
pub mod server;
pub mod sign;
