//! `inlet-load`: closed-loop load of distinct, correctly signed webhooks against a running
//! `inlet dev`, then the check that every acknowledged event was dispatched exactly once.
//! Exit 0 when it was, 1 when an acknowledged event was lost or doubled (or could not be
//! checked), 2 when the run could not start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use inlet_cli::load::{self, Plan, Stop};

#[derive(Parser)]
#[command(
    name = "inlet-load",
    version,
    about = "Load a running inlet dev with signed webhooks and check none was lost or doubled"
)]
struct Args {
    /// The config `inlet dev` runs (for the source's secrets and its JSONL target).
    #[arg(long, short)]
    config: PathBuf,
    /// inlet dev's base URL, e.g. http://127.0.0.1:8787.
    #[arg(long)]
    target: String,
    #[arg(long, default_value = "stripe")]
    source: String,
    /// Concurrent keep-alive connections; several (1,16,64) make one run each, in order.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    connections: Vec<usize>,
    /// How long each run sends (default 10s unless --requests is given).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Requests per run instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Bodies are padded to this many bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// The JSONL file the worker writes (default: the source's jsonl target in the config).
    #[arg(long)]
    events_file: Option<PathBuf>,
    /// Longest wait, after a run, for the worker to dispatch what was acknowledged.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    drain_timeout: Duration,
    /// inlet dev's process id, to report its CPU use beside the generator's.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also print each run as one JSON line.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("inlet-load: {e}");
            ExitCode::from(2)
        }
    }
}

/// `Ok(false)` when a run's accounting failed.
async fn run(args: Args) -> Result<bool, String> {
    let env = inlet::config::ProcessEnv::load().map_err(|e| e.to_string())?;
    let cfg = inlet::config::load_file(&args.config, &env)
        .map_err(|e| format!("{}: {e}", args.config.display()))?;
    let source = Arc::new(
        inlet_cli::sign::source(&cfg, &args.source)
            .map_err(|e| e.to_string())?
            .clone(),
    );
    let events = match args.events_file {
        Some(p) => p,
        None => load::events_file(&cfg, &args.source).map_err(|e| e.to_string())?,
    };
    let stop = match (args.requests, args.duration) {
        (Some(n), _) => Stop::Requests(n),
        (None, Some(d)) => Stop::After(d),
        (None, None) => Stop::After(Duration::from_secs(10)),
    };
    println!(
        "inlet-load: {} source {:?}, {}-byte bodies, {}; dispatches read from {}",
        args.target,
        args.source,
        args.body_size,
        match stop {
            Stop::After(d) => format!("{} per run", humantime::format_duration(d)),
            Stop::Requests(n) => format!("{n} requests per run"),
        },
        events.display()
    );
    if let Some(line) = tokio::task::spawn_blocking(handoffs)
        .await
        .map_err(|e| e.to_string())?
    {
        println!("{line}");
    }
    let mut reports = Vec::new();
    let mut holds = true;
    for connections in args.connections {
        let plan = Plan {
            base: args.target.clone(),
            connections,
            stop,
            body_size: args.body_size,
            drain_timeout: args.drain_timeout,
            server_pid: args.server_pid,
        };
        let report = load::run(&plan, source.clone(), &events)
            .await
            .map_err(|e| e.to_string())?;
        print!("{}", load::describe(&report));
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&report).map_err(|e| e.to_string())?
            );
        }
        holds &= report.holds();
        reports.push(report);
    }
    if reports.len() > 1 {
        print!("\n{}", load::table(&reports));
    }
    if !holds {
        eprintln!("inlet-load: an acknowledged event was lost or doubled, or could not be checked");
    }
    Ok(holds)
}

/// What a thread hand-off and its answer cost on this machine, across two CPUs and on one:
/// the cost `inlet dev --cpu-placement split` avoids on a webhook's path. `None` with fewer
/// than two CPUs, or where threads cannot be placed.
fn handoffs() -> Option<String> {
    use inlet_cli::placement::{allowed_cpus, handoff_round_trip};
    const ROUNDS: u32 = 5_000;
    let cpus = allowed_cpus().ok()?;
    let (&a, &b) = (cpus.first()?, cpus.get(1)?);
    let across = handoff_round_trip(a, b, ROUNDS).ok()?;
    let one = handoff_round_trip(a, a, ROUNDS).ok()?;
    Some(format!(
        "inlet-load: a thread hand-off and its answer: {:.1} µs across CPUs {a} and {b}, {:.1} µs both on CPU {a} (mean of {ROUNDS})",
        across.as_secs_f64() * 1e6,
        one.as_secs_f64() * 1e6,
    ))
}
