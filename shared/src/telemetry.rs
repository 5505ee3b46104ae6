//! Structured JSON logs via `tracing`, in the shape Powertools for AWS Lambda gives the rest
//! of a team's functions: one JSON object per line with `level`, `message`, `timestamp`,
//! `service` and, inside a Lambda invocation, `cold_start`, `function_request_id` and
//! `xray_trace_id`, beside each event's own fields (`source`, `dedupe_key`, …) at the top
//! level, where CloudWatch Logs Insights discovers them (`filter source = "stripe"`).
//!
//! The level, first found wins: `POWERTOOLS_LOG_LEVEL`, `AWS_LAMBDA_LOG_LEVEL` (what Lambda
//! sets from the function's `LoggingConfig.ApplicationLogLevel`), `RUST_LOG` (tracing's
//! env-filter syntax, for a dependency's lines too), else `info`. A Powertools or Lambda level
//! applies to Inlet's own crates and the Lambda runtime client; every other crate logs its
//! warnings and errors only.
//!
//! With `INLET_LOG_DIR` set (`make test` sets it), every process also appends its log lines
//! to a file of its own in that folder, at debug level for Inlet's crates, so the whole test
//! suite's log output can be searched for secrets afterwards
//! (`infra/scripts/no-secrets-in-logs`).

use std::fmt::Write as _;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

pub const LOG_DIR_ENV: &str = "INLET_LOG_DIR";
/// Powertools' variable for the `service` key; each Lambda has a default of its own.
pub const SERVICE_ENV: &str = "POWERTOOLS_SERVICE_NAME";
/// The level variables, in the order they are honoured (the first that holds a level wins).
pub const POWERTOOLS_LEVEL_ENV: &str = "POWERTOOLS_LOG_LEVEL";
pub const LAMBDA_LEVEL_ENV: &str = "AWS_LAMBDA_LOG_LEVEL";
pub const RUST_LOG_ENV: &str = "RUST_LOG";
/// What the captured file gets: Inlet's own debug lines, everyone else's warnings.
const CAPTURE_FILTER: &str = "inlet=debug,inlet_cli=debug,inlet_shared=debug,warn";
/// The targets a Powertools or Lambda level applies to: Inlet's library, CLI and Lambdas,
/// and the Lambda runtime client.
const OWN_TARGETS: [&str; 6] = [
    "inlet",
    "inlet_cli",
    "ingest",
    "worker",
    "poller",
    "lambda_runtime",
];
/// The name of the span each Lambda invocation runs in (see [`invocation_span`]).
const INVOCATION: &str = "invocation";

/// Set by the first invocation of the process: every later one is warm.
static WARM: AtomicBool = AtomicBool::new(false);

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

/// The span one Lambda invocation runs in: every line logged inside it carries
/// `cold_start` (true on the process's first invocation only), `function_request_id` (the
/// Lambda request id) and, when Lambda passed an X-Ray trace header, `xray_trace_id` (its
/// `Root`). ERROR level so that no level filter drops it: a warning logged under it needs
/// its fields as much as an info line does.
pub fn invocation_span(request_id: &str, trace_header: Option<&str>) -> tracing::Span {
    let cold_start = !WARM.swap(true, Ordering::Relaxed);
    tracing::error_span!(
        INVOCATION,
        cold_start,
        function_request_id = request_id,
        xray_trace_id = trace_header.and_then(trace_root),
    )
}

/// The trace id of an X-Ray trace header (`Root=1-…;Parent=…;Sampled=1`), as Powertools
/// logs it.
fn trace_root(header: &str) -> Option<&str> {
    header
        .split(';')
        .find_map(|part| part.trim().strip_prefix("Root="))
        .filter(|root| !root.is_empty())
}

fn is_invocation(meta: &tracing::Metadata<'_>) -> bool {
    meta.name() == INVOCATION && meta.target() == module_path!()
}

/// tracing-subscriber's JSON line (timestamp, level, the event's fields flattened) with
/// `service` and the invocation span's fields spliced in after its opening brace: one
/// line, one object, and no parsing — the span's fields were serialised once, when the
/// invocation began.
struct LineFormat {
    /// `"service":"…",`, JSON-escaped once; empty for no service key.
    service: String,
    inner: Format<Json>,
}

impl LineFormat {
    fn new(service: Option<&str>, with_target: bool) -> Self {
        let service = service
            .and_then(|s| serde_json::to_string(s).ok())
            .map(|quoted| format!("\"service\":{quoted},"))
            .unwrap_or_default();
        let inner = fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(with_target);
        Self { service, inner }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let Some(rest) = line.strip_prefix('{') else {
            return writer.write_str(&line);
        };
        writer.write_char('{')?;
        writer.write_str(&self.service)?;
        let invocation = ctx
            .event_scope()
            .and_then(|mut scope| scope.find(|span| is_invocation(span.metadata())));
        if let Some(span) = invocation {
            let extensions = span.extensions();
            let fields = extensions
                .get::<FormattedFields<N>>()
                .and_then(|f| f.fields.strip_prefix('{')?.strip_suffix('}'))
                .filter(|f| !f.is_empty());
            if let Some(fields) = fields {
                writer.write_str(fields)?;
                writer.write_char(',')?;
            }
        }
        writer.write_str(rest)
    }
}

/// The JSON line format of every log output. `with_target`: tracing's module path as
/// `target`; off on the processes' own output, where the worker's `target` field (the
/// delivery target's id) stands at the top level.
fn json_layer<S, W>(writer: W, service: Option<&str>, with_target: bool) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fmt::layer()
        .json()
        .event_format(LineFormat::new(service, with_target))
        .with_writer(writer)
}

fn capture_layer<S>(kind: &str, service: Option<&str>) -> Option<impl Layer<S>>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    capture_file(kind)
        .map(|file| json_layer(file, service, true).with_filter(EnvFilter::new(CAPTURE_FILTER)))
}

/// A Powertools or Lambda level name (any case): `TRACE`, `DEBUG`, `INFO`, `WARN`
/// (`WARNING`), `ERROR`, `FATAL`/`CRITICAL` (as `error`: tracing has nothing above it),
/// `SILENT`/`OFF`.
fn named_level(value: &str) -> Option<LevelFilter> {
    Some(match value.trim().to_ascii_uppercase().as_str() {
        "TRACE" => LevelFilter::TRACE,
        "DEBUG" => LevelFilter::DEBUG,
        "INFO" => LevelFilter::INFO,
        "WARN" | "WARNING" => LevelFilter::WARN,
        "ERROR" | "FATAL" | "CRITICAL" => LevelFilter::ERROR,
        "SILENT" | "OFF" => LevelFilter::OFF,
        _ => return None,
    })
}

/// The filter of a process's own output, and a note for each variable that was set but
/// held no level (logged once the logs are up). The order is the module's (above).
fn level_directive(var: impl Fn(&str) -> Option<String>) -> (String, Vec<String>) {
    let mut notes = Vec::new();
    for name in [POWERTOOLS_LEVEL_ENV, LAMBDA_LEVEL_ENV] {
        let Some(value) = var(name).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let Some(level) = named_level(&value) else {
            notes.push(format!("{name} = {value:?} is not a log level"));
            continue;
        };
        // Other crates at most their warnings: an AWS SDK at debug floods the log.
        let mut directive = level.min(LevelFilter::WARN).to_string();
        for target in OWN_TARGETS {
            let _ = write!(directive, ",{target}={level}");
        }
        return (directive, notes);
    }
    if let Some(value) = var(RUST_LOG_ENV).filter(|v| !v.trim().is_empty()) {
        if EnvFilter::try_new(&value).is_ok() {
            return (value, notes);
        }
        notes.push(format!("{RUST_LOG_ENV} = {value:?} is not a filter"));
    }
    ("info".to_owned(), notes)
}

/// The service name: `POWERTOOLS_SERVICE_NAME`, else `default`.
fn service_name(var: impl Fn(&str) -> Option<String>, default: &str) -> String {
    var(SERVICE_ENV)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Lambda logs: JSON lines on stdout with `service` (`POWERTOOLS_SERVICE_NAME`, else
/// `default_service`). Idempotent (a second call is a no-op).
pub fn init_lambda_logs(default_service: &str) {
    let env = |name: &str| std::env::var(name).ok();
    let service = service_name(env, default_service);
    init(
        json_layer(std::io::stdout, Some(&service), false).boxed(),
        Some(&service),
    );
}

/// How the CLI writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, the Lambdas' shape without their keys: for a pipe, a file,
    /// a log collector.
    Json,
    /// tracing-subscriber's compact lines (time, level, message, then `key=value` fields):
    /// for a person at a terminal.
    Text,
}

/// The CLI's logs, on stderr in `format`, with no `service` key; idempotent.
pub fn init_cli_logs(format: LogFormat) {
    let out = match format {
        LogFormat::Json => json_layer(std::io::stderr, None, false).boxed(),
        LogFormat::Text => fmt::layer()
            .compact()
            .with_target(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    init(out, None);
}

fn init(out: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>, service: Option<&str>) {
    let (directive, notes) = level_directive(|name| std::env::var(name).ok());
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = tracing_subscriber::registry()
        .with(out.with_filter(filter))
        .with(capture_layer("process", service))
        .try_init();
    if installed.is_ok() {
        for note in notes {
            tracing::warn!(filter = %directive, "{note}; logging at the next level set instead");
        }
    }
}

/// For test binaries: with `INLET_LOG_DIR` set, send every log line of the tests to a file
/// there (nothing is printed); otherwise do nothing.
pub fn init_test_capture() {
    if let Some(layer) = capture_layer("tests", None) {
        let _ = tracing_subscriber::registry().with(layer).try_init();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing::Instrument;

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

    impl Lines {
        fn json(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().expect("lines").clone()).expect("utf8");
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    /// What `f` logs through the JSON layer, one parsed object per line.
    fn logged(
        service: Option<&str>,
        with_target: bool,
        filter: &str,
        f: impl FnOnce(),
    ) -> Vec<serde_json::Value> {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(
            json_layer(move || writer.clone(), service, with_target)
                .with_filter(EnvFilter::new(filter)),
        );
        tracing::subscriber::with_default(subscriber, f);
        lines.json()
    }

    fn verified() {
        tracing::info!(
            source = "stripe",
            dedupe_key = "stripe#evt_1",
            attempts = 2,
            "verified"
        );
    }

    #[test]
    fn each_field_is_at_the_top_level_of_its_line() {
        let lines = logged(None, false, "info", verified);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["source"], "stripe", "{line}");
        assert_eq!(line["dedupe_key"], "stripe#evt_1");
        assert_eq!(line["attempts"], 2);
        assert_eq!(line["message"], "verified");
        assert_eq!(line["level"], "INFO");
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line.get("fields").is_none(), "{line}");
        assert!(line.get("target").is_none(), "{line}");
        assert!(line.get("service").is_none(), "the CLI's lines: {line}");
        assert!(
            line.get("cold_start").is_none(),
            "outside an invocation: {line}"
        );
        // The captured test logs name the module too.
        assert_eq!(
            logged(None, true, "info", verified)[0]["target"],
            module_path!()
        );
    }

    /// A Lambda's line: Powertools' keys at the top level beside Inlet's, the invocation's
    /// on every line logged inside it (a warning under a warn filter too, and inside a
    /// nested span), none outside it.
    #[test]
    fn lines_inside_an_invocation_carry_powertools_keys() {
        let header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let lines = logged(Some("inlet-\"ingest\""), false, "warn", || {
            let span = invocation_span("req-1", Some(header));
            span.in_scope(|| {
                let _nested = tracing::info_span!("dispatch", target = "bus").entered();
                tracing::warn!(source = "stripe", "refused");
            });
            tracing::warn!("between invocations");
            invocation_span("req-2", None).in_scope(|| tracing::error!("failed"));
        });
        assert_eq!(lines.len(), 3, "{lines:?}");
        let first = &lines[0];
        assert_eq!(first["service"], "inlet-\"ingest\"", "{first}");
        assert_eq!(first["function_request_id"], "req-1", "{first}");
        assert_eq!(
            first["xray_trace_id"],
            "1-5759e988-bd862e3fe1be46a994272793"
        );
        assert_eq!(first["level"], "WARN");
        assert_eq!(first["message"], "refused");
        assert_eq!(first["source"], "stripe");
        assert!(first["cold_start"].is_boolean(), "{first}");
        let between = &lines[1];
        assert_eq!(between["service"], "inlet-\"ingest\"");
        for key in ["cold_start", "function_request_id", "xray_trace_id"] {
            assert!(
                between.get(key).is_none(),
                "{key} outside an invocation: {between}"
            );
        }
        let second = &lines[2];
        assert_eq!(second["function_request_id"], "req-2", "{second}");
        assert_eq!(
            second["cold_start"], false,
            "only the first is cold: {second}"
        );
        assert!(second.get("xray_trace_id").is_none(), "no header: {second}");
    }

    /// An invocation's fields follow its future across awaits, as the Lambdas run it.
    #[tokio::test]
    async fn an_instrumented_handler_logs_under_its_invocation() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry().with(json_layer(
            move || writer.clone(),
            Some("inlet-worker"),
            false,
        ));
        let _guard = tracing::subscriber::set_default(subscriber);
        async {
            tokio::task::yield_now().await;
            tracing::info!(dedupe_key = "k", "dispatched");
        }
        .instrument(invocation_span("req-9", None))
        .await;
        let line = &lines.json()[0];
        assert_eq!(line["function_request_id"], "req-9", "{line}");
        assert_eq!(line["dedupe_key"], "k");
        assert_eq!(line["service"], "inlet-worker");
    }

    #[test]
    fn the_trace_id_is_the_headers_root() {
        assert_eq!(
            trace_root("Root=1-abc-def;Parent=1;Sampled=0"),
            Some("1-abc-def")
        );
        assert_eq!(trace_root("Parent=1; Root=1-x"), Some("1-x"));
        assert_eq!(trace_root("Parent=1;Sampled=1"), None);
        assert_eq!(trace_root("Root="), None);
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_level_comes_from_powertools_then_lambda_then_rust_log() {
        let own = |level: &str, others: &str| {
            let mut d = others.to_owned();
            for t in OWN_TARGETS {
                d.push_str(&format!(",{t}={level}"));
            }
            d
        };
        assert_eq!(level_directive(env(&[])), ("info".to_owned(), vec![]));
        assert_eq!(
            level_directive(env(&[(RUST_LOG_ENV, "inlet=trace,hyper=debug")])).0,
            "inlet=trace,hyper=debug"
        );
        assert_eq!(
            level_directive(env(&[(LAMBDA_LEVEL_ENV, "DEBUG"), (RUST_LOG_ENV, "trace")])).0,
            own("debug", "warn")
        );
        assert_eq!(
            level_directive(env(&[
                (POWERTOOLS_LEVEL_ENV, "error"),
                (LAMBDA_LEVEL_ENV, "DEBUG"),
                (RUST_LOG_ENV, "trace")
            ]))
            .0,
            own("error", "error")
        );
        assert_eq!(
            level_directive(env(&[(LAMBDA_LEVEL_ENV, "FATAL")])).0,
            own("error", "error")
        );
        // A value that is no level is skipped for the next, and said so.
        let (directive, notes) = level_directive(env(&[
            (POWERTOOLS_LEVEL_ENV, "verbose"),
            (LAMBDA_LEVEL_ENV, "TRACE"),
        ]));
        assert_eq!(directive, own("trace", "warn"));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("POWERTOOLS_LOG_LEVEL"), "{notes:?}");
        let (directive, notes) = level_directive(env(&[(RUST_LOG_ENV, "inlet=loud")]));
        assert_eq!((directive.as_str(), notes.len()), ("info", 1));
        // Every directive this builds is one tracing takes.
        for level in ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "SILENT"] {
            let pairs: &'static [(&str, &str)] =
                Box::leak(Box::new([(POWERTOOLS_LEVEL_ENV, level)]));
            let (directive, _) = level_directive(env(pairs));
            assert!(EnvFilter::try_new(&directive).is_ok(), "{directive}");
        }
    }

    /// A Powertools level lets Inlet's own debug lines through and keeps another crate's
    /// below warnings out.
    #[test]
    fn a_powertools_level_is_inlets_own() {
        let (directive, _) = level_directive(env(&[(POWERTOOLS_LEVEL_ENV, "DEBUG")]));
        let lines = logged(None, true, &directive, || {
            tracing::debug!("ours");
            tracing::debug!(target: "aws_smithy_runtime", "theirs");
            tracing::warn!(target: "aws_smithy_runtime", "their warning");
        });
        let messages: Vec<_> = lines.iter().map(|l| l["message"].clone()).collect();
        assert_eq!(messages, ["ours", "their warning"], "{lines:?}");
    }

    #[test]
    fn the_service_is_powertools_else_the_functions_own() {
        assert_eq!(service_name(env(&[]), "inlet-poller"), "inlet-poller");
        assert_eq!(
            service_name(env(&[(SERVICE_ENV, "payments-inlet")]), "inlet-poller"),
            "payments-inlet"
        );
        assert_eq!(
            service_name(env(&[(SERVICE_ENV, " ")]), "inlet-poller"),
            "inlet-poller"
        );
    }
}
