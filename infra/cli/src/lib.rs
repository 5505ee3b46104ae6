//! The `inlet` CLI's reusable parts: the local HTTP server and worker loop, which the
//! end-to-end tests run in-process as well.

pub mod server;
