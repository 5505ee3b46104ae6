//! Structured JSON logs via `tracing`. Level from `RUST_LOG` (default `info`).
//!
//! With `INLET_LOG_DIR` set (`make test` sets it), every process also appends its log lines
//! to a file of its own in that folder, at debug level for Inlet's crates, so the whole test
//! suite's log output can be searched for secrets afterwards
//! (`infra/scripts/no-secrets-in-logs`).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

pub const LOG_DIR_ENV: &str = "INLET_LOG_DIR";
/// What the captured file gets: Inlet's own debug lines, everyone else's warnings.
const CAPTURE_FILTER: &str = "inlet=debug,inlet_cli=debug,inlet_shared=debug,warn";

/// A fresh file in `INLET_LOG_DIR` for this process, if the variable is set.
fn capture_file(kind: &str) -> Option<Mutex<File>> {
    let dir = PathBuf::from(std::env::var_os(LOG_DIR_ENV)?);
    std::fs::create_dir_all(&dir).ok()?;
    let name = format!(
        "{kind}-{}-{}.jsonl",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    File::create(dir.join(name)).ok().map(Mutex::new)
}

fn capture_layer<S>(kind: &str) -> Option<impl Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    capture_file(kind).map(|file| {
        fmt::layer()
            .json()
            .with_current_span(false)
            .with_writer(file)
            .with_filter(EnvFilter::new(CAPTURE_FILTER))
    })
}

/// JSON lines to stderr-or-stdout as given; idempotent (a second call is a no-op).
pub fn init_json_logs(to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let out = fmt::layer()
        .json()
        .with_current_span(false)
        .with_target(false);
    let out = if to_stderr {
        out.with_writer(std::io::stderr).boxed()
    } else {
        out.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(out.with_filter(filter))
        .with(capture_layer("process"))
        .try_init();
}

/// For test binaries: with `INLET_LOG_DIR` set, send every log line of the tests to a file
/// there (nothing is printed); otherwise do nothing.
pub fn init_test_capture() {
    if let Some(layer) = capture_layer("tests") {
        let _ = tracing_subscriber::registry().with(layer).try_init();
    }
}
