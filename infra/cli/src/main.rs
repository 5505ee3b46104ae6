//! `inlet`: the operator CLI. `inlet dev` runs the whole pipeline locally on the embedded
//! (SQLite) adapters with the same code the Lambdas run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use inlet::telemetry::LogFormat;

mod console;
mod cursor;
mod dev;
mod dlq;
mod events;
mod poll;
mod redeliver;
mod table;
mod verify;

use inlet_cli::placement::{self, CpuPlacement, CpuPlan};
use inlet_cli::sign;

#[derive(Parser)]
#[command(
    name = "inlet",
    version,
    about = "Inlet: verified, deduplicated, exactly-once webhooks and polls"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and print what it defines. With --template: check it against
    /// what the SAM template will create (no secrets needed) and print the parameter
    /// overrides it needs; exits 1 on an error.
    Check {
        /// The config file, TOML or JSON (default: inlet.toml in this folder, else $INLET_CONFIG).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The SAM template (template.yaml) the config will be deployed with.
        #[arg(long)]
        template: Option<PathBuf>,
        /// The overrides the deploy passes, as `sam deploy --parameter-overrides` takes them
        /// ("K=V K2='v 2'"). Given (or --samconfig), a needed one missing is an error.
        #[arg(long, requires = "template")]
        parameter_overrides: Option<String>,
        /// Read the overrides from a samconfig.toml's `[<env>.deploy.parameters]`.
        #[arg(long, requires = "template")]
        samconfig: Option<PathBuf>,
        /// The samconfig environment whose parameters to read.
        #[arg(long, default_value = "default", requires = "samconfig")]
        config_env: String,
        /// The stack's WebhookBaseUrl (or IngestFunctionUrl) output: print each source's
        /// full webhook URL.
        #[arg(long)]
        base_url: Option<String>,
        /// One JSON object: the sources (and with --template the errors, warnings, webhook
        /// URLs and parameter overrides).
        #[arg(long)]
        json: bool,
    },
    /// Print the template's PollSchedules parameter for a config: one EventBridge Scheduler
    /// schedule per poll source (`PollSchedules="id=rate(…),…"`, ready for
    /// `sam deploy --parameter-overrides`). Needs no secrets.
    Schedules {
        /// The config file, TOML or JSON (default: inlet.toml in this folder, else $INLET_CONFIG).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print only the value, without `PollSchedules="…"` around it.
        #[arg(long)]
        value: bool,
        /// One JSON object: the parameter's value and each source's schedule.
        #[arg(long, conflicts_with = "value")]
        json: bool,
    },
    /// Run ingest, queue, worker, ledger and targets in one process on SQLite.
    Dev {
        /// The config file, TOML or JSON (default: inlet.toml in this folder, else $INLET_CONFIG).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The address ingest's HTTP server listens on (port 0: any free one, printed).
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: String,
        /// Where the SQLite store lives (default: settings.data_dir beside the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The log lines on stderr: readable text on a terminal and JSON otherwise (auto),
        /// or always one of them.
        #[arg(long, value_enum, env = "INLET_LOG_FORMAT", default_value_t = LogFormatArg::Auto)]
        log_format: LogFormatArg,
        /// Where its threads run: split puts the webhooks and the queues' writes on one half
        /// of the CPUs and the worker and the ledger on the other, so a webhook's hand-offs
        /// stay on one CPU (docs/performance.md); off lets every thread run anywhere.
        #[arg(long, value_enum, env = "INLET_CPU_PLACEMENT", default_value_t = CpuPlacement::Split)]
        cpu_placement: CpuPlacement,
    },
    /// Run one poll of a source now (its `poll` table) on the local store.
    Poll {
        /// The config file, TOML or JSON (default: inlet.toml in this folder, else $INLET_CONFIG).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The source to poll (it needs a [sources.poll] table).
        #[arg(long)]
        source: String,
        /// Where the SQLite store lives (default: settings.data_dir beside the config).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The log lines on stderr, as `inlet dev --log-format`.
        #[arg(long, value_enum, env = "INLET_LOG_FORMAT", default_value_t = LogFormatArg::Auto)]
        log_format: LogFormatArg,
    },
    /// A poll source's cursor, the lease of a run in progress, its last runs and how long
    /// since the cursor moved; `--reset` forgets the cursor (asked for, and recorded in the
    /// trail). On the local store or a deployed stack (`--aws`).
    Cursor(cursor::CursorArgs),
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell), e.g.
    /// `inlet completions bash > ~/.local/share/bash-completion/completions/inlet`.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// The dead-letter queue: what is in it and why.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Move dead letters back to the main queue (all, or those the filters name). Safe to
    /// interrupt and rerun: an event sent twice is deduplicated.
    Replay {
        #[command(flatten)]
        at: dlq::Where,
        #[command(flatten)]
        args: dlq::ReplayArgs,
    },
    /// Send a past window's events again, rebuilt from the raw archive, to one target; each
    /// is recorded in the trail as `redelivered`. Safe to interrupt and rerun: the same
    /// command skips what its run already sent.
    Redeliver {
        #[command(flatten)]
        at: dlq::Where,
        #[command(flatten)]
        args: redeliver::RedeliverArgs,
    },
    /// Print (or send) a correctly signed request for a configured source.
    Sign {
        /// The config file, TOML or JSON (default: inlet.toml in this folder, else $INLET_CONFIG).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The source whose provider signs the request.
        #[arg(long)]
        source: String,
        /// Body file (default: a sample event for the provider).
        #[arg(long)]
        body: Option<PathBuf>,
        /// The sample event as this type, the provider's own (charge.refunded): for providers
        /// whose type is in the body.
        #[arg(long = "type", conflicts_with = "body")]
        event_type: Option<String>,
        /// POST it to this base URL (e.g. http://127.0.0.1:8787) and print the answer.
        #[arg(long)]
        send: Option<String>,
    },
    /// Diagnose a captured request: verdict and the precise reason. Exits 0 valid, 1 invalid,
    /// 2 on usage errors.
    Verify(verify::VerifyArgs),
    /// The event trail, newest first: dispatched, failed, dead, refused, duplicate, poll runs
    /// and checks, each with its reason; from the local store or a deployed stack (`--aws`).
    #[command(args_conflicts_with_subcommands = true)]
    Events {
        #[command(subcommand)]
        command: Option<EventsCommand>,
        #[command(flatten)]
        at: dlq::Where,
        #[command(flatten)]
        filters: Box<events::Filters>,
    },
    /// A web console on loopback (default http://127.0.0.1:8788/): the trail with filters,
    /// a search by any id, a chart, each event's story, the dead letters with replay, and
    /// the poll cursors; over the local store or a deployed stack (`--aws`) with your own
    /// credentials. It has no login: it only listens on a loopback address. `--read-only`
    /// removes replay.
    Console(console::Args),
}

#[derive(Subcommand)]
enum EventsCommand {
    /// One event's whole story: what it is, who sent it and when, each attempt's outcome,
    /// the targets that have it, what arrived for it later, and whether it is in the DLQ.
    Show {
        #[command(flatten)]
        at: dlq::Where,
        /// A dedupe key or a provider event id.
        id: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
        /// Write the archived request's body, byte-exact, to FILE (the source must archive).
        #[arg(long, value_name = "FILE")]
        request_out: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Dead letters, oldest first: source, dedupe key, attempts, the last error.
    List {
        #[command(flatten)]
        at: dlq::Where,
        /// At most this many dead letters.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter in full, by message id, dedupe key or provider event id.
    Show {
        #[command(flatten)]
        at: dlq::Where,
        /// A message id, dedupe key or provider event id.
        id: String,
    },
}

/// `--log-format` of the commands that log as they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormatArg {
    /// Text when stderr is a terminal, JSON otherwise.
    Auto,
    Json,
    Text,
}

impl LogFormatArg {
    fn resolve(self, stderr_is_terminal: bool) -> LogFormat {
        match self {
            LogFormatArg::Auto if stderr_is_terminal => LogFormat::Text,
            LogFormatArg::Auto | LogFormatArg::Json => LogFormat::Json,
            LogFormatArg::Text => LogFormat::Text,
        }
    }

    /// Logs on stderr in this format.
    fn init(self) {
        use std::io::IsTerminal;
        inlet::telemetry::init_cli_logs(self.resolve(std::io::stderr().is_terminal()));
    }
}

/// The config when no `--config` is given: `inlet.toml` in the current folder, else the
/// file `INLET_CONFIG` names.
fn default_config() -> Option<PathBuf> {
    let here = PathBuf::from("inlet.toml");
    if here.is_file() {
        return Some(here);
    }
    std::env::var_os("INLET_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `--config`, else the default, else an error that says where it looked.
fn config_path(flag: Option<PathBuf>) -> Result<PathBuf, String> {
    flag.or_else(default_config).ok_or_else(|| {
        "no config: pass --config FILE, put an inlet.toml in this folder, or set INLET_CONFIG"
            .to_owned()
    })
}

fn load(config: &Path) -> Result<inlet::config::Config, String> {
    let env = inlet::config::ProcessEnv::load().map_err(|e| e.to_string())?;
    let cfg =
        inlet::config::load_file(config, &env).map_err(|e| format!("{}: {e}", config.display()))?;
    inlet::bootstrap::supply_cert_fetcher(cfg.sources.values().map(|s| &s.provider));
    Ok(cfg)
}

fn schedules(config: &Path, bare: bool, json: bool) -> Result<(), String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let hint = config.extension().and_then(|e| e.to_str());
    let doc = inlet::config::ConfigDoc::parse(&text, hint)
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let schedules = doc
        .poll_schedules()
        .map_err(|e| format!("{}: {e}", config.display()))?;
    for (id, expr) in &schedules {
        // The template splits the list on commas and each entry on "=".
        if id.contains([',', '=']) {
            return Err(format!(
                "source id {id:?} cannot be scheduled: it contains , or ="
            ));
        }
        if !json {
            eprintln!("  {id}: {expr}");
        }
    }
    let list = schedules
        .iter()
        .map(|(id, expr)| format!("{id}={expr}"))
        .collect::<Vec<_>>()
        .join(",");
    if json {
        let each: serde_json::Map<String, serde_json::Value> = schedules
            .iter()
            .map(|(id, expr)| (id.clone(), expr.clone().into()))
            .collect();
        println!(
            "{}",
            serde_json::json!({"PollSchedules": list, "schedules": each})
        );
    } else if bare {
        println!("{list}");
    } else {
        println!("PollSchedules=\"{list}\"");
    }
    Ok(())
}

fn check_template(
    config: &Path,
    template: &Path,
    overrides: Option<&str>,
    samconfig: Option<(&Path, &str)>,
    base_url: Option<&str>,
    json: bool,
) -> Result<(), String> {
    use inlet_cli::deploy;

    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", config.display());
    let text = std::fs::read_to_string(config).map_err(|e| at(&e))?;
    let hint = config.extension().and_then(|e| e.to_str());
    let doc = inlet::config::ConfigDoc::parse(&text, hint).map_err(|e| at(&e))?;
    let compact = deploy::compact_json(&text, hint).map_err(|e| at(&e))?;
    let tpl = deploy::Template::read(template).map_err(|e| e.to_string())?;
    let mut given = std::collections::BTreeMap::new();
    if let Some((path, env)) = samconfig {
        given.extend(deploy::samconfig_overrides(path, env).map_err(|e| e.to_string())?);
    }
    if let Some(text) = overrides {
        given.extend(deploy::parse_overrides(text).map_err(|e| e.to_string())?);
    }
    let strict = overrides.is_some() || samconfig.is_some();
    let report = deploy::check(&doc, &compact, &tpl, &given, strict);
    let urls = deploy::webhook_urls(&doc, base_url);
    let line = report
        .overrides
        .iter()
        .map(|(k, v)| deploy::quote(k, v))
        .collect::<Vec<_>>()
        .join(" ");
    if json {
        let urls: serde_json::Map<String, serde_json::Value> = urls
            .into_iter()
            .map(|(id, url)| (id.to_string(), url.into()))
            .collect();
        let overrides: serde_json::Map<String, serde_json::Value> = report
            .overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone().into()))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "config": config.display().to_string(),
                "template": template.display().to_string(),
                "ok": report.errors.is_empty(),
                "errors": report.errors,
                "warnings": report.warnings,
                "webhook_urls": urls,
                "parameter_overrides": overrides,
                "parameter_overrides_line": line,
            })
        );
    } else {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        println!("webhook URLs to register at each provider:");
        for (id, url) in urls {
            match url {
                Some(url) => println!("  {id}: {url}"),
                None => println!("  {id}: poll only (no webhook URL)"),
            }
        }
        println!("parameter overrides this config needs (secrets not included):");
        println!("{line}");
    }
    match report.errors.len() {
        0 => Ok(()),
        n => Err(format!(
            "{}: {n} error(s) against {}",
            config.display(),
            template.display()
        )),
    }
}

fn data_dir(cfg: &inlet::config::Config, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| cfg.resolve_path(&cfg.settings.data_dir))
}

/// `inlet check` without `--template`: load the config (secrets resolved) and print each
/// source's entry point, targets, retry policy and poll.
fn check_config(config: &Path, base_url: Option<&str>, json: bool) -> Result<(), String> {
    let cfg = load(config)?;
    let base = base_url
        .map(inlet_cli::deploy::webhook_base)
        .unwrap_or_else(|| "/webhooks/".into());
    let mut sources = Vec::new();
    if !json {
        println!("{}: ok", config.display());
    }
    for (id, s) in &cfg.sources {
        let targets = cfg.targets_for(id, &[]);
        let entry = s.webhooks.then(|| format!("POST {base}{id}"));
        // Types-specific routes may retry some events longer (see docs/guarantees.md, Retries and the DLQ).
        let r = cfg.retry_policy(id, &[]);
        if json {
            sources.push(serde_json::json!({
                "id": id,
                "provider": s.provider.name(),
                "webhook": entry,
                "targets": targets,
                "retry": {
                    "attempts": r.attempts,
                    "backoff_ms": r.base.as_millis() as u64,
                    "backoff_cap_ms": r.cap.as_millis() as u64,
                },
                "poll": s.poll.as_ref().map(|p| serde_json::json!({
                    "kind": p.kind.name(),
                    "every_seconds": p.every.as_secs(),
                })),
            }));
            continue;
        }
        println!(
            "  source {id}: provider {}, {} → {}",
            s.provider.name(),
            entry.as_deref().unwrap_or("poll only"),
            targets.join(", ")
        );
        println!(
            "    retry: {} attempts, backoff {} doubling to {}",
            r.attempts,
            humantime::format_duration(r.base),
            humantime::format_duration(r.cap)
        );
        if let Some(p) = &s.poll {
            println!(
                "    poll: {} every {}",
                p.kind.name(),
                humantime::format_duration(p.every)
            );
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "config": config.display().to_string(),
                "ok": true,
                "sources": sources,
            })
        );
    }
    Ok(())
}

async fn dev(
    config: &Path,
    listen: &str,
    dir: Option<PathBuf>,
    logs: LogFormatArg,
    placement: std::io::Result<Option<CpuPlan>>,
) -> Result<(), String> {
    let cfg = load(config)?;
    let dir = data_dir(&cfg, dir);
    logs.init();
    dev::run(cfg, listen, &dir, placement).await
}

async fn poll_once(
    config: &Path,
    source: &str,
    dir: Option<PathBuf>,
    logs: LogFormatArg,
) -> Result<(), String> {
    let cfg = load(config)?;
    // Logs to stderr: stdout carries the run's summary.
    logs.init();
    let dir = data_dir(&cfg, dir);
    poll::run_once(cfg, &dir, source).await
}

/// Runs a command; `inlet verify` picks its own exit code (0 valid, 1 invalid, 2 usage).
///
/// `placement`: what [`placement::prepare`] did before the runtime started (`inlet dev` only).
async fn run(
    command: Command,
    placement: std::io::Result<Option<CpuPlan>>,
) -> Result<ExitCode, String> {
    let done = match command {
        Command::Verify(args) => return Ok(verify::run(args).await),
        Command::Check {
            config,
            template: Some(template),
            parameter_overrides,
            samconfig,
            config_env,
            base_url,
            json,
        } => check_template(
            &config_path(config)?,
            &template,
            parameter_overrides.as_deref(),
            samconfig.as_deref().map(|p| (p, config_env.as_str())),
            base_url.as_deref(),
            json,
        ),
        Command::Check {
            config,
            base_url,
            json,
            ..
        } => check_config(&config_path(config)?, base_url.as_deref(), json),
        Command::Schedules {
            config,
            value,
            json,
        } => schedules(&config_path(config)?, value, json),
        Command::Dev {
            config,
            listen,
            data_dir,
            log_format,
            cpu_placement: _,
        } => {
            dev(
                &config_path(config)?,
                &listen,
                data_dir,
                log_format,
                placement,
            )
            .await
        }
        Command::Poll {
            config,
            source,
            data_dir,
            log_format,
        } => poll_once(&config_path(config)?, &source, data_dir, log_format).await,
        Command::Cursor(args) => cursor::run(args).await,
        Command::Dlq {
            command: DlqCommand::List { at, limit, json },
        } => dlq::run_list(at, limit, json).await,
        Command::Dlq {
            command: DlqCommand::Show { at, id },
        } => dlq::run_show(at, &id).await,
        Command::Replay { at, args } => dlq::run_replay(at, args).await,
        Command::Redeliver { at, args } => redeliver::run(at, args).await,
        Command::Sign {
            config,
            source,
            body,
            event_type,
            send,
        } => {
            let cfg = load(&config_path(config)?)?;
            sign::run(
                &cfg,
                &source,
                body.as_deref(),
                event_type.as_deref(),
                send.as_deref(),
            )
            .await
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "inlet", &mut std::io::stdout());
            Ok(())
        }
        Command::Events {
            command:
                Some(EventsCommand::Show {
                    at,
                    id,
                    json,
                    request_out,
                }),
            ..
        } => events::show(at, &id, json, request_out.as_deref()).await,
        Command::Events { at, filters, .. } => events::run(at, *filters).await,
        Command::Console(args) => console::run(args).await,
    };
    done.map(|()| ExitCode::SUCCESS)
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = Cli::parse().command;
    // Before the runtime starts: its threads take the main thread's CPUs with them.
    let placement = match &command {
        Command::Dev { cpu_placement, .. } => placement::prepare(*cpu_placement),
        _ => Ok(None),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("inlet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command, placement)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("inlet: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option and argument of every command, nested ones too, without help text.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() {
                out.push(format!("{path} --{id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() {
                out.push(format!("{path} {} (no about)", sub.get_name()));
            }
            undocumented(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_flag_of_every_command_says_what_it_does() {
        use clap::CommandFactory;
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "inlet", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn auto_is_text_on_a_terminal_and_json_otherwise() {
        assert_eq!(LogFormatArg::Auto.resolve(true), LogFormat::Text);
        assert_eq!(LogFormatArg::Auto.resolve(false), LogFormat::Json);
        for terminal in [true, false] {
            assert_eq!(LogFormatArg::Json.resolve(terminal), LogFormat::Json);
            assert_eq!(LogFormatArg::Text.resolve(terminal), LogFormat::Text);
        }
    }
}
