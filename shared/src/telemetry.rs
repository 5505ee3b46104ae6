//! Structured JSON logs via `tracing`. Level from `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// JSON lines to stderr-or-stdout as given; idempotent (a second call is a no-op).
pub fn init_json_logs(to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false);
    let _ = if to_stderr {
        builder.with_writer(std::io::stderr).try_init()
    } else {
        builder.try_init()
    };
}
