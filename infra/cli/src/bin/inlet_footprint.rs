//! `inlet-footprint` (`make footprint`): each release Lambda binary started many times against
//! a local Runtime API stub, with AWS calls going to a moto server on loopback; prints init
//! time (process spawn to its first `next`), peak RSS after its events, and zip sizes.
//! Run through `infra/scripts/footprint`, which builds the binaries and starts moto.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use inlet_cli::runtime_stub::{Outcome, RuntimeStub};

const APIGW_V2: &str =
    include_str!("../../../../tests/fixtures/example-apigw-v2-request-no-authorizer.json");
const REGION: &str = "us-east-1";
const STRIPE_SECRET: &str = "whsec_inlet_footprint_0123456789abcdef";
const BO_KEY: &str = "inlet-footprint-backoffice-key";
/// Items on the fake back office's one page, per poll run.
const PAGE_ITEMS: usize = 10;
/// The worker's batch size in the template.
const BATCH: usize = 10;
const WAIT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(
    name = "inlet-footprint",
    about = "Init time and peak RSS of the Lambda binaries"
)]
struct Args {
    /// Folder with the release binaries ingest, worker, poller.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Folder with <function>.zip (x86_64), and arm64 zips at <arm64-dir>/<function>/bootstrap.zip.
    #[arg(long)]
    zip_dir: Option<PathBuf>,
    #[arg(long, default_value = "target/lambda")]
    arm64_dir: PathBuf,
    /// Process starts per function (the init time is their median).
    #[arg(long, default_value_t = 10)]
    starts: usize,
    /// Events per start: webhooks (ingest), SQS records in batches of 10 (worker), poll runs (poller).
    #[arg(long, default_value_t = 20)]
    events: usize,
    #[arg(long, value_delimiter = ',', default_value = "ingest,worker,poller")]
    functions: Vec<String>,
    /// Where the functions' logs go.
    #[arg(long, default_value = "target/footprint")]
    log_dir: PathBuf,
}

struct Row {
    function: String,
    init_ms: Vec<f64>,
    rss_kib: Vec<u64>,
    events: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inlet-footprint: {e}");
            ExitCode::from(1)
        }
    }
}

/// Everything the functions reach must be on this machine.
fn loopback_endpoint() -> Result<String, String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .map_err(|_| "AWS_ENDPOINT_URL is not set: run through infra/scripts/with-moto")?;
    let url = url_host(&endpoint);
    if url != Some("127.0.0.1") {
        return Err(format!("AWS_ENDPOINT_URL {endpoint} is not on 127.0.0.1"));
    }
    Ok(endpoint)
}

fn url_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    rest.split([':', '/']).next()
}

struct Stack {
    endpoint: String,
    queue_url: String,
    dlq_url: String,
    table: String,
    config: String,
    sqs: aws_sdk_sqs::Client,
}

async fn stack(endpoint: String, provider_base: &str) -> Result<Stack, String> {
    let sdk = inlet::adapters::aws::sdk_config_for_endpoint(&endpoint, REGION).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let name = format!("inlet-footprint-{}", uuid::Uuid::new_v4().simple());
    let mut urls = Vec::new();
    for queue in [name.clone(), format!("{name}-dlq")] {
        let url = sqs
            .create_queue()
            .queue_name(queue)
            .send()
            .await
            .map_err(|e| format!("CreateQueue: {e}"))?
            .queue_url
            .ok_or("CreateQueue returned no URL")?;
        urls.push(url);
    }
    inlet::adapters::aws::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &name)
        .await
        .map_err(|e| format!("CreateTable: {e}"))?;
    let config = format!(
        r#"[settings]
lease_seconds = 60
visibility_timeout_seconds = 180

[[sources]]
id = "stripe"
provider = "stripe"
secrets = ["env:FOOTPRINT_STRIPE_SECRET"]

[[sources]]
id = "backoffice"
provider = "generic"
webhooks = false
options = {{ signature = {{ header = "x-signature" }}, event_id = {{ json_pointer = "/id" }} }}
[sources.poll]
kind = "http_json"
every = "1m"
secrets = ["env:FOOTPRINT_BO_KEY"]
options = {{ url = "{provider_base}/v1/bets?after={{cursor}}", auth = {{ kind = "header", name = "x-api-key" }}, items_pointer = "/data", id_pointer = "/id", cursor = {{ kind = "item_field", pointer = "/id" }} }}

[[targets]]
id = "bus"
kind = "eventbridge"

[[routes]]
sources = ["*"]
targets = ["bus"]
"#
    );
    let dlq_url = urls.pop().ok_or("no DLQ")?;
    let queue_url = urls.pop().ok_or("no queue")?;
    Ok(Stack {
        endpoint,
        queue_url,
        dlq_url,
        table: name,
        config,
        sqs,
    })
}

/// A fake back office: one page of items when asked from the start, then nothing new.
async fn fake_provider() -> Result<(String, tokio::task::JoinHandle<()>), String> {
    use axum::extract::RawQuery;
    let app = axum::Router::new().route(
        "/v1/bets",
        axum::routing::get(|RawQuery(query): RawQuery| async move {
            let from_start = query.as_deref().is_none_or(|q| q.ends_with("after="));
            let items: Vec<serde_json::Value> = if from_start {
                (0..PAGE_ITEMS)
                    .map(|i| serde_json::json!({"id": format!("bet-{i:04}"), "type": "bet.placed", "amount": i}))
                    .collect()
            } else {
                Vec::new()
            };
            serde_json::json!({ "data": items }).to_string()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((base, server))
}

/// `count` signed Stripe webhooks as API Gateway HTTP API (v2) events.
fn webhook_events(stack: &Stack, count: usize, start: usize) -> Result<Vec<String>, String> {
    let env = |name: &str| match name {
        "INLET_CONFIG" => Some(stack.config.clone()),
        "FOOTPRINT_STRIPE_SECRET" => Some(STRIPE_SECRET.into()),
        "FOOTPRINT_BO_KEY" => Some(BO_KEY.into()),
        _ => None,
    };
    let config = inlet::config::load_from_env(&env).map_err(|e| e.to_string())?;
    let source = inlet_cli::sign::source(&config, "stripe").map_err(|e| e.to_string())?;
    let fixture: serde_json::Value = serde_json::from_str(APIGW_V2).map_err(|e| e.to_string())?;
    let now_ms = inlet::ports::Clock::now_ms(&inlet::ports::SystemClock);
    (0..count)
        .map(|i| {
            let id = format!("evt_footprint_{start}_{i}_{}", uuid::Uuid::new_v4().simple());
            let body = serde_json::json!({
                "id": id, "object": "event", "type": "payment_intent.succeeded",
                "created": now_ms / 1000, "data": {"object": {"id": "pi_1", "amount": 1000, "currency": "eur"}},
                "padding": "x".repeat(700),
            })
            .to_string()
            .into_bytes();
            let signed = inlet_cli::sign::sign_request(source, body, now_ms, &id)
                .map_err(|e| e.to_string())?;
            let mut ev = fixture.clone();
            ev["rawPath"] = signed.path.as_str().into();
            ev["requestContext"]["http"]["method"] = "POST".into();
            ev["requestContext"]["http"]["path"] = signed.path.as_str().into();
            for (k, v) in signed.headers.iter() {
                ev["headers"][k] = v.into();
            }
            ev["body"] = String::from_utf8_lossy(&signed.body).into_owned().into();
            ev["isBase64Encoded"] = false.into();
            Ok(ev.to_string())
        })
        .collect()
}

/// `count` messages from the queue (ingest's envelopes), as SQS events of up to 10 records.
async fn sqs_events(stack: &Stack, count: usize) -> Result<Vec<String>, String> {
    let mut records = Vec::new();
    while records.len() < count {
        let received = stack
            .sqs
            .receive_message()
            .queue_url(&stack.queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .map_err(|e| format!("ReceiveMessage: {e}"))?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return Err(format!(
                "the queue holds {} envelopes, the worker needs {count}: run ingest first",
                records.len()
            ));
        }
        for m in messages {
            let (Some(id), Some(body), Some(handle)) = (m.message_id, m.body, m.receipt_handle)
            else {
                continue;
            };
            records.push(serde_json::json!({
                "messageId": id, "receiptHandle": handle, "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "0",
                               "SenderId": "footprint", "ApproximateFirstReceiveTimestamp": "0"},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{REGION}:000000000000:{}", stack.table),
                "awsRegion": REGION,
            }));
        }
    }
    records.truncate(count);
    Ok(records
        .chunks(BATCH)
        .map(|batch| serde_json::json!({ "Records": batch }).to_string())
        .collect())
}

fn child_env(
    stack: &Stack,
    function: &str,
    runtime_api: &str,
    home: &Path,
) -> Vec<(String, String)> {
    let secrets = serde_json::json!({
        "FOOTPRINT_STRIPE_SECRET": STRIPE_SECRET,
        "FOOTPRINT_BO_KEY": BO_KEY,
    });
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api),
        ("INLET_CONFIG", stack.config.as_str()),
        ("INLET_SECRETS_JSON", &secrets.to_string()),
        ("INLET_QUEUE_URL", &stack.queue_url),
        ("INLET_DLQ_URL", &stack.dlq_url),
        ("INLET_TABLE", &stack.table),
        ("INLET_BUS_NAME", "default"),
        ("AWS_LAMBDA_FUNCTION_NAME", &format!("inlet-{function}")),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("_HANDLER", "bootstrap"),
        ("RUST_LOG", "info"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_ENDPOINT_URL", &stack.endpoint),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        // No profile files of the developer's: nothing but the variables above configures the SDK.
        ("HOME", &home.to_string_lossy()),
        ("AWS_CONFIG_FILE", &home.join("config").to_string_lossy()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            &home.join("credentials").to_string_lossy(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether an answer is a handled event, not a refusal or a retry: the figures are of the
/// path that does the work. Ingest answers 2xx, the worker fails no record, a poll run catches up.
fn handled(body: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    if let Some(status) = v.get("statusCode").and_then(|s| s.as_u64()) {
        return (200..300).contains(&status);
    }
    if let Some(failures) = v.get("batchItemFailures").and_then(|f| f.as_array()) {
        return failures.is_empty();
    }
    v.get("outcome").and_then(|o| o.as_str()) == Some("caught_up")
}

/// A function process, stopped (and reaped) however its run ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One cold start: spawn, wait for the first `next`, wait for every event's answer, read
/// the peak RSS, stop the process. Any failed event fails the run.
async fn one_start(
    bin: &Path,
    env: &[(String, String)],
    stub: &RuntimeStub,
    events: usize,
    log: &Path,
) -> Result<(f64, u64), String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let spawned = Instant::now();
    let child = std::process::Command::new(bin)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let child = Killed(child);
    let pid = child.0.id();
    let first = stub
        .wait_first_next(WAIT)
        .await
        .ok_or_else(|| format!("no first next within {WAIT:?}; log: {}", log.display()))?;
    let init_ms = first.duration_since(spawned).as_secs_f64() * 1000.0;
    let outcomes = stub.wait_outcomes(events, WAIT).await;
    let rss = vm_hwm_kib(pid);
    drop(child);
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| match o {
            Outcome::Response { body, .. } => !handled(body),
            _ => true,
        })
        .collect();
    if outcomes.len() < events || !failed.is_empty() {
        return Err(format!(
            "{} of {events} events answered, failures: {failed:?}; log: {}",
            outcomes.len(),
            log.display()
        ));
    }
    Ok((init_ms, rss.ok_or("no VmHWM in /proc")?))
}

async fn run(args: Args) -> Result<(), String> {
    let endpoint = loopback_endpoint()?;
    let (provider_base, _provider) = fake_provider().await?;
    let stack = stack(endpoint, &provider_base).await?;
    std::fs::create_dir_all(&args.log_dir).map_err(|e| e.to_string())?;
    let home = args.log_dir.join("home");
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for function in &args.functions {
        let bin = args.bin_dir.join(function);
        let mut row = Row {
            function: function.clone(),
            init_ms: Vec::new(),
            rss_kib: Vec::new(),
            events: args.events,
        };
        for start in 0..args.starts {
            let events = match function.as_str() {
                "ingest" => webhook_events(&stack, args.events, start)?,
                "worker" => sqs_events(&stack, args.events).await?,
                "poller" => vec![r#"{"source_id":"backoffice"}"#.to_string(); args.events],
                other => return Err(format!("unknown function {other}")),
            };
            let answers = events.len();
            let stub = RuntimeStub::start(events)
                .await
                .map_err(|e| e.to_string())?;
            let env = child_env(&stack, function, &stub.runtime_api(), &home);
            let log = args.log_dir.join(format!("{function}-{start}.log"));
            let (init, rss) = one_start(&bin, &env, &stub, answers, &log)
                .await
                .map_err(|e| format!("{function} start {start}: {e}"))?;
            row.init_ms.push(init);
            row.rss_kib.push(rss);
        }
        rows.push(row);
    }
    print_table(&args, &rows);
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn size(path: &Path) -> String {
    std::fs::metadata(path).map_or("-".into(), |m| m.len().to_string())
}

fn print_table(args: &Args, rows: &[Row]) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "footprint: {} starts per function, load average {}",
        args.starts,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<8} {:>7} {:>9} {:>9} {:>9} {:>14} {:>12} {:>14} {:>14}",
        "function",
        "events",
        "init p50",
        "init min",
        "init max",
        "peak RSS (MiB)",
        "binary",
        "zip x86_64",
        "zip arm64"
    );
    for row in rows {
        let binary = size(&args.bin_dir.join(&row.function));
        let zip = args.zip_dir.as_ref().map_or("-".into(), |d| {
            size(&d.join(format!("{}.zip", row.function)))
        });
        let arm64 = size(&args.arm64_dir.join(&row.function).join("bootstrap.zip"));
        let min = row.init_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max = row.init_ms.iter().copied().fold(0.0, f64::max);
        let rss = row.rss_kib.iter().max().copied().unwrap_or(0) as f64 / 1024.0;
        println!(
            "{:<8} {:>7} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>14.1} {:>12} {:>14} {:>14}",
            row.function,
            row.events,
            median(&row.init_ms),
            min,
            max,
            rss,
            binary,
            zip,
            arm64
        );
    }
}
