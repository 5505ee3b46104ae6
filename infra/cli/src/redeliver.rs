//! `inlet redeliver`: send a past window's events again, rebuilt from the raw archive, to one
//! target (not to every route) — after a handler's bug is fixed, last Tuesday's events go to it
//! again. Each event sent is recorded in the trail as `redelivered`, under an id made of the
//! run and the event, so a run interrupted and started again sends only what it had not sent
//! (a crash between a send and its record sends that one event again: at least once per run).

use std::collections::HashMap;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use inlet::archive::ArchivedRequest;
use inlet::config::Config;
use inlet::envelope::{sha256_hex, Envelope, Replay, INLINE_ENVELOPE_BYTES};
use inlet::ports::{
    put_blob, BlobKind, BlobRef, BlobStore, Clock, DedupeRecord, Ledger, Lookup, SystemClock,
    TrailEntry, TrailQuery, TrailRow, TrailStatus,
};
use inlet::targets::{Outgoing, Target};
use inlet::time::format_rfc3339_ms;

use crate::dlq::{Stack, Where};

#[derive(clap::Args)]
pub struct RedeliverArgs {
    /// The source whose events go again.
    #[arg(long)]
    source: String,
    /// From this time on (when each event was received): RFC 3339, or a duration back from
    /// now (15m, 2h, 3days).
    #[arg(long)]
    since: String,
    /// Up to this time (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Only this event type: the provider's or the canonical one.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// The one target to send to (a `[[targets]]` id).
    #[arg(long)]
    to: String,
    /// List what would go, send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Name the run (default: derived from source, window, type and target, so the same
    /// command resumes where an interrupted one stopped); a new name sends everything again.
    #[arg(long)]
    run: Option<String>,
}

/// What a run did, printed at the end.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    already: usize,
    not_archived: usize,
    failed: usize,
}

/// The run's name: the same arguments, the same run. The window's text is used as given (a
/// relative `--since 1h` names the same run however late it is run again).
fn run_name(args: &RedeliverArgs) -> String {
    args.run.clone().unwrap_or_else(|| {
        let key = format!(
            "{}|{}|{}|{}|{}",
            args.source,
            args.since,
            args.until.as_deref().unwrap_or(""),
            args.event_type.as_deref().unwrap_or(""),
            args.to
        );
        sha256_hex(key.as_bytes())[..12].to_owned()
    })
}

fn target(stack: &Stack, id: &str) -> Result<Arc<dyn Target>, String> {
    let config = stack
        .config()
        .ok_or("inlet redeliver needs the config (--config) for its sources and targets")?;
    let spec = config
        .targets
        .iter()
        .find(|t| t.id == id)
        .ok_or_else(|| format!("--to {id:?}: no such target in the config"))?;
    match stack {
        Stack::Local(s, _) => s.target(id).map_err(|e| e.to_string()),
        Stack::Aws { main, .. } => {
            use inlet::targets::{build_targets, TargetFactoryError};
            // The CLI links no EventBridge client: a bus target is refused by name.
            let bus_for = |_: Option<&str>| -> Result<Arc<dyn inlet::ports::EventBus>, _> {
                Err(TargetFactoryError::NoBus)
            };
            let queue_for = |url: &str| -> Result<Arc<dyn inlet::ports::Queue>, _> {
                let q = inlet::adapters::aws::SqsQueue::new(main.client().clone(), url);
                Ok(Arc::new(q) as Arc<dyn inlet::ports::Queue>)
            };
            let mut built = build_targets(
                std::slice::from_ref(spec),
                &config.base_dir,
                &bus_for,
                &queue_for,
            )
            .map_err(|e| format!("{e} (with --aws the CLI redelivers to HTTP and SQS targets)"))?;
            built
                .remove(id)
                .ok_or_else(|| format!("target {id:?} was not built"))
        }
    }
}

/// The records of the window, oldest first, with the type filter applied.
async fn records(
    ledger: &dyn Ledger,
    args: &RedeliverArgs,
    since_ms: i64,
    until_ms: i64,
    now_ms: i64,
) -> Result<Vec<DedupeRecord>, String> {
    let rows = ledger
        .list(&TrailQuery {
            source: Some(args.source.clone()),
            limit: 0,
            now_ms,
            since_ms: Some(since_ms),
            until_ms: Some(until_ms),
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut out: Vec<_> = rows
        .into_iter()
        .filter_map(|r| match r {
            TrailRow::Record(r) => Some(r),
            TrailRow::Entry(_) => None,
        })
        .filter(|r| {
            args.event_type.as_deref().is_none_or(|t| {
                r.event_type.as_deref() == Some(t) || r.summary.canonical_type.as_deref() == Some(t)
            })
        })
        .collect();
    out.sort_by_key(|r| (r.received_at_ms, r.key.clone()));
    Ok(out)
}

/// The trail entry id of `key` in `run`.
fn entry_id(run: &str, key: &str) -> String {
    format!("redeliver-{run}-{}", &sha256_hex(key.as_bytes())[..32])
}

async fn already_sent(
    ledger: &dyn Ledger,
    id: &str,
    key: &str,
    now_ms: i64,
) -> Result<bool, String> {
    let rows = ledger
        .lookup(Lookup::Entries(key), now_ms)
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows.iter().any(|r| match r {
        TrailRow::Entry(e) => e.id == id && e.status == TrailStatus::Redelivered,
        TrailRow::Record(_) => false,
    }))
}

/// The event of `record` rebuilt from its archived request.
fn rebuild(
    config: &Config,
    doc: &ArchivedRequest,
    request: &BlobRef,
    record: &DedupeRecord,
) -> Result<Envelope, String> {
    let source = config
        .source(&doc.source)
        .ok_or_else(|| format!("source {:?} is not in the config", doc.source))?;
    let key = &record.key;
    inlet::ingest::envelopes_from_archive(
        source,
        doc,
        request.clone(),
        record.received_at_ms,
        record.summary.caller_ip.as_deref(),
    )?
    .into_iter()
    .find(|e| &e.dedupe_key == key)
    .ok_or_else(|| format!("{key}: the archived request no longer yields this event"))
}

/// Send `env` to `target`: whole, and with its body by reference for a target whose entry
/// limit the whole passes (the body put in the blob store again, as ingest would).
async fn send(target: &dyn Target, blobs: &dyn BlobStore, env: &Envelope) -> Result<(), String> {
    let json = env.to_json();
    let claim = if json.len() > INLINE_ENVELOPE_BYTES {
        let body = env.body_bytes().map_err(|e| e.to_string())?;
        let r = put_blob(blobs, BlobKind::Body, &body)
            .await
            .map_err(|e| e.to_string())?;
        let mut claimed = env.clone();
        claimed.body = String::new();
        claimed.body_ref = Some(r);
        Some(claimed.to_json())
    } else {
        None
    };
    let out = Outgoing::new(env, &json).with_claim(claim.as_deref());
    match target.deliver(&[out]).await.into_iter().next() {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the target gave no answer".into()),
    }
}

pub async fn run(at: Where, args: RedeliverArgs) -> Result<(), String> {
    let stack = Stack::open(at).await?;
    let config = stack
        .config()
        .ok_or("inlet redeliver needs the config (--config) for its sources and targets")?;
    if config.source(&args.source).is_none() {
        return Err(format!(
            "--source {:?}: no such source in the config",
            args.source
        ));
    }
    let now_ms = SystemClock.now_ms();
    let time = |flag: &str, text: &str| {
        inlet::dlq::parse_since(text, now_ms).map_err(|e| format!("{flag}: {e}"))
    };
    let since_ms = time("--since", &args.since)?;
    let until_ms = match &args.until {
        Some(u) => time("--until", u)?,
        None => now_ms,
    };
    let run = run_name(&args);
    let target = target(&stack, &args.to)?;
    let (_, _, ledger) = stack.parts();
    let blobs = stack.blobs()?;
    let events = records(ledger, &args, since_ms, until_ms, now_ms).await?;
    eprintln!(
        "redeliver run {run}: {} event(s) of {} received {} .. {}, to {}{}",
        events.len(),
        args.source,
        format_rfc3339_ms(since_ms),
        format_rfc3339_ms(until_ms),
        args.to,
        if args.dry_run { " (dry run)" } else { "" }
    );
    let bar =
        ProgressBar::with_draw_target(Some(events.len() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("#-"),
    );
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let mut tally = Tally::default();
    // Events split from one request share its document: read once.
    let mut docs: HashMap<String, (BlobRef, ArchivedRequest)> = HashMap::new();
    for record in &events {
        bar.inc(1);
        let Some(request_key) = record.summary.request_key.clone() else {
            tally.not_archived += 1;
            continue;
        };
        let id = entry_id(&run, &record.key);
        if already_sent(ledger, &id, &record.key, now_ms).await? {
            tally.already += 1;
            continue;
        }
        if args.dry_run {
            println!(
                "{}  {}",
                format_rfc3339_ms(record.received_at_ms),
                record.key
            );
            tally.sent += 1;
            continue;
        }
        if !docs.contains_key(&request_key) {
            match inlet::archive::read_key(blobs, &request_key).await {
                Ok(read) => {
                    docs.insert(request_key.clone(), read);
                }
                Err(e) => {
                    bar.suspend(|| eprintln!("{}: {e}", record.key));
                    tally.failed += 1;
                    continue;
                }
            }
        }
        let (reference, doc) = &docs[&request_key];
        let sent = match rebuild(config, doc, reference, record) {
            Ok(mut env) => {
                env.replay = Some(Replay {
                    at: format_rfc3339_ms(now_ms),
                    forced: false,
                });
                send(target.as_ref(), blobs, &env).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            bar.suspend(|| eprintln!("{}: {e}", record.key));
            tally.failed += 1;
            continue;
        }
        tally.sent += 1;
        let at_ms = SystemClock.now_ms();
        let entry = TrailEntry {
            id,
            at_ms,
            source: record.source.clone(),
            status: TrailStatus::Redelivered,
            dedupe_key: Some(record.key.clone()),
            provider_event_id: record.provider_event_id.clone(),
            event_type: record.event_type.clone(),
            reason: Some(format!(
                "inlet redeliver to {} (run {run}) by {user}",
                args.to
            )),
            source_ip: None,
            expires_at_ms: config.settings.trail_expires_at(at_ms),
        };
        if let Err(e) = ledger.append_new(&entry).await {
            bar.suspend(|| {
                eprintln!(
                    "{}: sent, but not recorded ({e}); a rerun of this run sends it again",
                    record.key
                )
            });
        }
    }
    bar.finish_and_clear();
    let verb = if args.dry_run {
        "would redeliver"
    } else {
        "redelivered"
    };
    println!(
        "{verb} {} of {} event(s) to {} (run {run}): {} already sent by this run, {} without an archived request, {} failed",
        tally.sent,
        events.len(),
        args.to,
        tally.already,
        tally.not_archived,
        tally.failed
    );
    if tally.failed > 0 {
        return Err(format!(
            "{} event(s) could not be redelivered; run the same command again to retry them",
            tally.failed
        ));
    }
    Ok(())
}
