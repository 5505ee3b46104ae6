//! `inlet verify`: run one captured request through a provider's verifier and say exactly
//! why it passes or fails — without a queue, a store or a server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use inlet::ports::{Clock, SystemClock};
use inlet::providers::{self, HandshakeReply, Provider, VerifyError};
use inlet::request::{Headers, InboundRequest};
use inlet::secret::Secret;

/// Exit codes: the verdict is 0/1 so scripts can branch on it; anything that stopped us
/// from reaching a verdict (bad flags, unreadable file, bad config) is 2, like clap's usage
/// errors.
const VALID: u8 = 0;
const INVALID: u8 = 1;
const USAGE: u8 = 2;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Provider name (stripe, github, slack, …), with --secret/--public-key.
    #[arg(long, conflicts_with_all = ["source", "config"], required_unless_present_any = ["source", "archived"])]
    provider: Option<String>,
    /// A secret to try; repeat for rotation (tried in order, reported by position).
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// A public key (Discord, SendGrid, Standard Webhooks whpk_); repeatable.
    #[arg(long = "public-key")]
    public_keys: Vec<String>,
    /// Provider option as KEY=VALUE (VALUE parsed as JSON when it is JSON); repeatable.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
    /// The public URL the provider was configured with (Twilio, Square): sets option `url`.
    #[arg(long)]
    url: Option<String>,
    /// A configured source instead of --provider (needs --config).
    #[arg(long, requires = "config")]
    source: Option<String>,
    /// The config that defines --source.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A request header, 'Name: value'; repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A query parameter, NAME=VALUE (Meta's GET handshake); repeatable.
    #[arg(long = "query", value_name = "NAME=VALUE")]
    query: Vec<String>,
    /// The request's method (GET for a handshake).
    #[arg(long, default_value = "POST")]
    method: String,
    /// The exact body bytes as captured.
    #[arg(long, required_unless_present = "archived")]
    body_file: Option<PathBuf>,
    /// Re-check an archived request instead of a captured one: an event's dedupe key,
    /// provider event id or payment id (with --config; the store is the config's, or
    /// --data-dir). Verified at the time it was received unless --now says otherwise.
    #[arg(long, value_name = "ID", requires = "config",
          conflicts_with_all = ["provider", "source", "body_file", "headers", "query"])]
    archived: Option<String>,
    /// With --archived: the local store's folder (default: the config's settings.data_dir).
    #[arg(long, requires = "archived")]
    data_dir: Option<PathBuf>,
    /// The clock to verify at, unix seconds (default: now), for a request captured earlier.
    #[arg(long)]
    now: Option<i64>,
}

fn usage(message: String) -> (u8, String) {
    (USAGE, message)
}

fn provider_from_flags(args: &VerifyArgs, name: &str) -> Result<Arc<dyn Provider>, String> {
    let mut options = serde_json::Map::new();
    for kv in &args.options {
        let (key, value) = kv
            .split_once('=')
            .ok_or_else(|| format!("--option {kv:?}: expected KEY=VALUE"))?;
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        options.insert(key.trim().to_string(), value);
    }
    if let Some(url) = &args.url {
        options.insert("url".into(), url.clone().into());
    }
    let secrets: Vec<Secret> = args
        .secrets
        .iter()
        .chain(&args.public_keys)
        .enumerate()
        .map(|(i, s)| Secret::new(format!("key{}", i + 1), s.as_bytes().to_vec(), None))
        .collect();
    let options = if options.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Object(options)
    };
    let provider = providers::build(name, &options, secrets).map_err(|e| e.to_string())?;
    inlet::bootstrap::supply_cert_fetcher([&provider]);
    Ok(provider)
}

fn parse_headers(lines: &[String]) -> Result<Headers, String> {
    let mut headers = Headers::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("--header {line:?}: expected 'Name: value'"))?;
        if name.trim().is_empty() {
            return Err(format!("--header {line:?}: empty header name"));
        }
        headers.insert(name.trim(), value.trim());
    }
    Ok(headers)
}

fn parse_query(pairs: &[String]) -> Result<Vec<(String, String)>, String> {
    pairs
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--query {kv:?}: expected NAME=VALUE"))
        })
        .collect()
}

pub async fn run(args: VerifyArgs) -> ExitCode {
    match verdict(&args).await {
        Ok(code) => ExitCode::from(code),
        Err((code, message)) => {
            eprintln!("inlet verify: {message}");
            ExitCode::from(code)
        }
    }
}

/// The provider to verify with: a configured source's, or one built from the flags.
fn provider(args: &VerifyArgs) -> Result<Arc<dyn Provider>, (u8, String)> {
    match (&args.source, &args.config, &args.provider) {
        (Some(source), Some(config), _) => {
            let cfg = crate::load(config).map_err(usage)?;
            let src = cfg
                .source(source)
                .ok_or_else(|| usage(format!("no source {source:?} in {}", config.display())))?;
            Ok(src.provider.clone())
        }
        // Keys are checked by the provider (PayPal needs none: its key is a certificate).
        (None, _, Some(name)) => provider_from_flags(args, name).map_err(usage),
        _ => Err(usage("give --provider or --source with --config".into())),
    }
}

/// The captured request's parts, as read from the flags and the body file.
struct Captured {
    body: Vec<u8>,
    headers: Headers,
    query: Vec<(String, String)>,
    now_ms: i64,
}

/// `--now` in milliseconds, or `default`.
fn now_ms(args: &VerifyArgs, default: i64) -> Result<i64, (u8, String)> {
    match args.now {
        Some(s) => s
            .checked_mul(1000)
            .ok_or_else(|| usage(format!("--now {s}: out of range"))),
        None => Ok(default),
    }
}

fn captured(args: &VerifyArgs) -> Result<Captured, (u8, String)> {
    let path = args
        .body_file
        .as_ref()
        .ok_or_else(|| usage("give --body-file (or --archived ID)".into()))?;
    let body = std::fs::read(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    let headers = parse_headers(&args.headers).map_err(usage)?;
    let query = parse_query(&args.query).map_err(usage)?;
    Ok(Captured {
        body,
        headers,
        query,
        now_ms: now_ms(args, SystemClock.now_ms())?,
    })
}

/// `--archived ID`: the request the event came in, from the archive, verified with its
/// source's current keys at the time it was received.
async fn archived_verdict(args: &VerifyArgs, id: &str) -> Result<u8, (u8, String)> {
    let at = crate::dlq::Where::local(args.config.clone(), args.data_dir.clone());
    let stack = crate::dlq::Stack::open(at).await.map_err(usage)?;
    let story = crate::events::story(&stack, id, SystemClock.now_ms())
        .await
        .map_err(usage)?;
    let doc = crate::events::archived(&stack, &story)
        .await
        .map_err(usage)?;
    let source = stack
        .config()
        .and_then(|c| c.source(&doc.source))
        .ok_or_else(|| {
            usage(format!(
                "the archived request's source {:?} is not in the config",
                doc.source
            ))
        })?;
    let body = doc.body_bytes().map_err(usage)?;
    let headers = doc.request_headers();
    let received_at_ms = story.event.at_ms;
    println!(
        "archived: {} ({} {} received at {}, verified then by {} key {})",
        story.request_key.as_deref().unwrap_or(""),
        doc.method,
        doc.path,
        inlet::time::format_rfc3339_ms(received_at_ms),
        doc.verified.scheme,
        doc.verified.key_id.as_deref().unwrap_or("-")
    );
    let c = Captured {
        body,
        headers,
        query: doc.query.clone(),
        now_ms: now_ms(args, received_at_ms)?,
    };
    let code = check(source.provider.as_ref(), &doc.method, &c).await;
    if code == INVALID {
        println!(
            "note: the archive keeps no credential headers (authorization, tokens, secrets): a \
             scheme that sends its secret as a header cannot be re-checked from it"
        );
    }
    Ok(code)
}

async fn verdict(args: &VerifyArgs) -> Result<u8, (u8, String)> {
    if let Some(id) = &args.archived {
        return archived_verdict(args, id).await;
    }
    let provider = provider(args)?;
    let c = captured(args)?;
    Ok(check(provider.as_ref(), &args.method, &c).await)
}

/// The verdict on one request, printed.
async fn check(provider: &dyn Provider, method: &str, c: &Captured) -> u8 {
    let req = InboundRequest {
        method,
        headers: &c.headers,
        query: &c.query,
        body: &c.body,
    };
    println!("provider: {}", provider.name());
    println!(
        "body: {} bytes, sha256 {}",
        c.body.len(),
        inlet::envelope::sha256_hex(&c.body)
    );
    if let Some(answer) = provider.handshake(&req, c.now_ms) {
        return handshake_verdict(answer);
    }
    let checked = match provider.prepare(&req).await {
        Ok(()) => provider.verify(&req, c.now_ms),
        Err(e) => Err(e),
    };
    let verified = match checked {
        Ok(v) => v,
        Err(e) => {
            println!("verdict: INVALID ({})", e.reason());
            println!("reason: {e}");
            return INVALID;
        }
    };
    println!("verdict: VALID");
    println!(
        "scheme: {}, matched key: {}",
        verified.scheme,
        verified.key_id.as_deref().unwrap_or("-")
    );
    print_events(provider, &req);
    VALID
}

fn handshake_verdict(answer: Result<HandshakeReply, VerifyError>) -> u8 {
    match answer {
        Ok(reply) => {
            println!("verdict: VALID handshake");
            println!(
                "answer: {} {} {}",
                reply.status, reply.content_type, reply.body
            );
            VALID
        }
        Err(e) => {
            println!("verdict: INVALID handshake ({})", e.reason());
            println!("reason: {e}");
            INVALID
        }
    }
}

/// What ingest would make of a verified request. The verdict is about authenticity, which
/// holds either way; a body ingest would refuse is reported beside it.
fn print_events(provider: &dyn Provider, req: &InboundRequest<'_>) {
    match provider.extract(req) {
        Ok(events) => {
            println!("events: {}", events.len());
            for (i, e) in events.iter().enumerate() {
                let line = serde_json::json!({
                    "event_id": e.event_id, "type": e.event_type,
                    "canonical_type": e.canonical_type, "entity": e.entity,
                    "amount": e.amount, "currency": e.currency,
                    "occurred_at": e.occurred_at_ms.map(inlet::time::format_rfc3339_ms),
                    "part_bytes": e.part.as_ref().map(Vec::len),
                });
                println!("  [{i}] {line}");
            }
        }
        Err(e) => println!("events: none: ingest would answer 400: {e}"),
    }
}
