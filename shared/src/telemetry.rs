//! Structured JSON logs via `tracing`. Level from `RUST_LOG` (default `info`).
//!
//! One JSON object per line, each event's fields at the top level beside `timestamp`,
//! `level` and `message` — the shape CloudWatch Logs Insights discovers and Powertools users
//! query (`filter source = "stripe"`), not nested under `fields`.
//!
//! With `INLET_LOG_DIR` set (`make test` sets it), every process also appends its log lines
//! to a file of its own in that folder, at debug level for Inlet's crates, so the whole test
//! suite's log output can be searched for secrets afterwards
//! (`infra/scripts/no-secrets-in-logs`).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
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

/// The JSON line format of every log output. `with_target`: tracing's module path as
/// `target`; off on the processes' own output, where the worker's `target` field (the
/// delivery target's id) stands at the top level.
fn json_layer<S, W>(writer: W, with_target: bool) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_target(with_target)
        .with_writer(writer)
}

fn capture_layer<S>(kind: &str) -> Option<impl Layer<S>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    capture_file(kind)
        .map(|file| json_layer(file, true).with_filter(EnvFilter::new(CAPTURE_FILTER)))
}

/// JSON lines to stderr-or-stdout as given; idempotent (a second call is a no-op).
pub fn init_json_logs(to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let out = if to_stderr {
        json_layer(std::io::stderr, false).boxed()
    } else {
        json_layer(std::io::stdout, false).boxed()
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Lines written by the layer, kept in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn one_line(with_target: bool) -> serde_json::Value {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber =
            tracing_subscriber::registry().with(json_layer(move || writer.clone(), with_target));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                source = "stripe",
                dedupe_key = "stripe#evt_1",
                attempts = 2,
                "verified"
            );
        });
        let text = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf8");
        assert_eq!(text.lines().count(), 1, "{text}");
        serde_json::from_str(text.trim_end()).expect("one JSON object")
    }

    #[test]
    fn each_field_is_at_the_top_level_of_its_line() {
        let line = one_line(false);
        assert_eq!(line["source"], "stripe", "{line}");
        assert_eq!(line["dedupe_key"], "stripe#evt_1");
        assert_eq!(line["attempts"], 2);
        assert_eq!(line["message"], "verified");
        assert_eq!(line["level"], "INFO");
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line.get("fields").is_none(), "{line}");
        assert!(line.get("target").is_none(), "{line}");
        // The captured test logs name the module too.
        assert_eq!(one_line(true)["target"], module_path!());
    }
}
