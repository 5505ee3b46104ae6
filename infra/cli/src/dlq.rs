//! `inlet dlq list|show` and `inlet replay`: the dead-letter queue seen and emptied from the
//! command line, over any `Queue` and `Ledger` (the local store here; the same code runs
//! against a deployed stack's SQS queues and table).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use inlet::adapters::aws::{sdk_config_from_env, DynamoLedger, S3Blobs, SqsQueue};
use inlet::adapters::embedded::{QueueCounts, SqliteLedger};
use inlet::config::Config;
use inlet::dlq::{self, DeadLetter, Filter, Progress};
use inlet::local::{LocalStack, DEAD_LETTER_QUEUE, MAIN_QUEUE};
use inlet::ports::{BlobStore, Clock, Ledger, PollStore, Queue, SystemClock};
use inlet::time::format_rfc3339_ms;

/// Which stack the DLQ commands work on: the local store of a config, or a deployed stack's
/// queues and table (`--aws`; credentials, region and endpoint from the standard AWS
/// environment, e.g. `AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL`).
#[derive(clap::Args)]
pub struct Where {
    /// The config: for the local store (default: inlet.toml in this folder, else
    /// $INLET_CONFIG), and to check `--source` against.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The local store's folder (default: the config's settings.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Work on a deployed stack (the template's QueueUrl, DeadLetterQueueUrl and TableName
    /// outputs) instead of the local store.
    #[arg(long)]
    aws: bool,
    /// With --aws: the stack's events queue (its QueueUrl output).
    #[arg(long, env = "INLET_QUEUE_URL", requires = "aws")]
    queue_url: Option<String>,
    /// With --aws: the stack's dead-letter queue (its DeadLetterQueueUrl output).
    #[arg(long, env = "INLET_DLQ_URL", requires = "aws")]
    dlq_url: Option<String>,
    /// With --aws: the stack's ledger table (its TableName output).
    #[arg(long, env = "INLET_TABLE", requires = "aws")]
    table: Option<String>,
    /// With --aws: the stack's blob bucket (its BlobBucketName output), for claim-checked
    /// bodies and archived requests.
    #[arg(long, env = "INLET_BLOB_BUCKET", requires = "aws")]
    blob_bucket: Option<String>,
}

impl Where {
    /// The local store of `config` (the commands that take their own `--config`).
    pub(crate) fn local(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Self {
        Self {
            config,
            data_dir,
            aws: false,
            queue_url: None,
            dlq_url: None,
            table: None,
            blob_bucket: None,
        }
    }
}

pub(crate) enum Stack {
    Local(Box<LocalStack>, SqliteLedger),
    Aws {
        main: SqsQueue,
        dlq: SqsQueue,
        ledger: DynamoLedger,
        config: Option<Box<Config>>,
        blobs: Option<S3Blobs>,
    },
}

impl Stack {
    pub(crate) async fn open(w: Where) -> Result<Self, String> {
        // A deployed stack's config may name secrets only the stack can read: with --aws it is
        // read only when given.
        let path = if w.aws {
            w.config
        } else {
            w.config.or_else(crate::default_config)
        };
        let config = path.as_deref().map(crate::load).transpose()?;
        if !w.aws {
            let config = config.ok_or(
                "no config for the local store: pass --config FILE, put an inlet.toml in this \
                 folder or set INLET_CONFIG (or use --aws for a deployed stack)",
            )?;
            let dir = crate::data_dir(&config, w.data_dir);
            let stack =
                LocalStack::open(config, &dir, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
            let ledger = stack.store.ledger();
            return Ok(Stack::Local(Box::new(stack), ledger));
        }
        let need = |v: Option<String>, flag: &str, env: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| format!("--aws needs {flag} (or {env})"))
        };
        let (queue_url, dlq_url, table) = (
            need(w.queue_url, "--queue-url", "INLET_QUEUE_URL")?,
            need(w.dlq_url, "--dlq-url", "INLET_DLQ_URL")?,
            need(w.table, "--table", "INLET_TABLE")?,
        );
        let sdk = sdk_config_from_env().await;
        Ok(Stack::Aws {
            main: SqsQueue::from_conf(&sdk, queue_url),
            dlq: SqsQueue::from_conf(&sdk, dlq_url),
            ledger: DynamoLedger::from_conf(&sdk, table),
            config: config.map(Box::new),
            blobs: w
                .blob_bucket
                .filter(|b| !b.is_empty())
                .map(|b| S3Blobs::from_conf(&sdk, b)),
        })
    }

    /// Claim-checked bodies and archived requests, where the stack keeps them.
    pub(crate) fn blobs(&self) -> Result<&dyn BlobStore, String> {
        match self {
            Stack::Local(s, _) => s
                .blobs
                .as_deref()
                .ok_or_else(|| "the local stack has no blob store".to_owned()),
            Stack::Aws { blobs, .. } => blobs
                .as_ref()
                .map(|b| b as &dyn BlobStore)
                .ok_or_else(|| "--aws needs --blob-bucket (or INLET_BLOB_BUCKET): the stack's BlobBucketName output".to_owned()),
        }
    }

    pub(crate) fn parts(&self) -> (&dyn Queue, &dyn Queue, &dyn Ledger) {
        match self {
            Stack::Local(s, ledger) => (&s.queue, &s.dlq, ledger),
            Stack::Aws {
                main, dlq, ledger, ..
            } => (main, dlq, ledger),
        }
    }

    /// The poll cursors and leases (they live in the ledger's table on either store).
    pub(crate) fn polls(&self) -> &dyn PollStore {
        match self {
            Stack::Local(_, ledger) => ledger,
            Stack::Aws { ledger, .. } => ledger,
        }
    }

    pub(crate) fn config(&self) -> Option<&Config> {
        match self {
            Stack::Local(s, _) => Some(&s.config),
            Stack::Aws { config, .. } => config.as_deref(),
        }
    }

    /// The local store's main queue and DLQ counts (a deployed stack's are in CloudWatch).
    pub(crate) fn local_counts(&self) -> Result<Option<(QueueCounts, QueueCounts)>, String> {
        let Stack::Local(s, _) = self else {
            return Ok(None);
        };
        let count = |name| s.queues.queue_counts(name).map_err(|e| e.to_string());
        Ok(Some((count(MAIN_QUEUE)?, count(DEAD_LETTER_QUEUE)?)))
    }
}

pub async fn run_list(at: Where, limit: usize, json: bool) -> Result<(), String> {
    let stack = Stack::open(at).await?;
    let (_, dlq, ledger) = stack.parts();
    list(dlq, ledger, limit, json).await
}

pub async fn run_show(at: Where, id: &str) -> Result<(), String> {
    let stack = Stack::open(at).await?;
    let (_, dlq, ledger) = stack.parts();
    show(dlq, ledger, id).await
}

/// What `inlet replay` was asked for.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Only this source's events.
    #[arg(long)]
    pub source: Option<String>,
    /// Only events received since: an RFC 3339 time or a duration back (2h, 3days).
    #[arg(long)]
    pub since: Option<String>,
    /// Only these (comma-separated message ids, dedupe keys or provider event ids).
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<String>,
    /// Count what would move; move nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// On AWS, move message by message even without filters (default there: SQS's own
    /// message move task).
    #[arg(long)]
    pub one_by_one: bool,
    /// Dispatch again even the events the ledger says were dispatched (the trail records
    /// each as forced_replay). Without it a replayed event is still deduplicated.
    #[arg(long)]
    pub force: bool,
}

pub async fn run_replay(at: Where, args: ReplayArgs) -> Result<(), String> {
    let since_ms = args
        .since
        .as_deref()
        .map(|t| dlq::parse_since(t, SystemClock.now_ms()).map_err(|e| format!("--since: {e}")))
        .transpose()?;
    let stack = Stack::open(at).await?;
    if let (Some(s), Some(cfg)) = (&args.source, stack.config()) {
        if cfg.source(s).is_none() {
            return Err(format!("--source: no source {s:?} in the config"));
        }
    }
    let filter = Filter {
        source: args.source,
        since_ms,
        ids: args.ids,
    };
    if let Stack::Aws { main, dlq, .. } = &stack {
        // SQS's move task cannot mark envelopes, so a forced replay moves them itself.
        if filter.is_empty() && !args.dry_run && !args.one_by_one && !args.force {
            return move_task(dlq, main).await;
        }
    }
    let (main, dlq, _) = stack.parts();
    let options = dlq::ReplayOptions {
        dry_run: args.dry_run,
        force: args.force,
        now_ms: SystemClock.now_ms(),
    };
    replay(dlq, main, &filter, options).await
}

/// An unfiltered replay on AWS: SQS moves the messages itself (`StartMessageMoveTask`);
/// this follows the task until it ends.
async fn move_task(dlq: &SqsQueue, main: &SqsQueue) -> Result<(), String> {
    let handle = dlq.start_move_to(main).await.map_err(|e| e.to_string())?;
    eprintln!("started SQS message move task {handle}");
    let mut bar = Bar::new();
    loop {
        let task = dlq
            .move_task()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("SQS lists no move task for the DLQ")?;
        let p = Progress {
            scanned: task.moved as usize,
            matched: task.moved as usize,
            moved: task.moved as usize,
            total: task.to_move,
        };
        bar.show(&p, Some(&task.status));
        if task.finished() {
            bar.0.finish_and_clear();
            return match task.status.as_str() {
                "COMPLETED" => {
                    println!("replayed {} dead letter(s) to the main queue", task.moved);
                    Ok(())
                }
                other => Err(format!(
                    "move task {other} after {} message(s): {}",
                    task.moved,
                    task.failure_reason.as_deref().unwrap_or("no reason given")
                )),
            };
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Everything the table shows, so `--json` and the table agree.
fn row(l: &DeadLetter) -> serde_json::Value {
    let env = l.envelope.as_ref().ok();
    serde_json::json!({
        "message_id": l.message_id,
        "sent_at": format_rfc3339_ms(l.sent_at_ms),
        "source": env.map(|e| e.source.as_str()),
        "dedupe_key": l.dedupe_key(),
        "provider_event_id": env.and_then(|e| e.provider_event_id.as_deref()),
        "type": env.and_then(|e| e.event_type.as_deref()),
        "attempts": l.record.as_ref().map(|r| r.attempts),
        // Targets that took it already: a replay sends only to the others (unless --force).
        "delivered": l.record.as_ref().map(|r| &r.delivered),
        "last_attempt_at": l.record.as_ref().map(|r| format_rfc3339_ms(r.updated_at_ms)),
        "reason": l.reason(),
    })
}

async fn list(
    dlq: &dyn Queue,
    ledger: &dyn Ledger,
    limit: usize,
    json: bool,
) -> Result<(), String> {
    let letters = dlq::list(dlq, ledger, limit)
        .await
        .map_err(|e| e.to_string())?;
    if json {
        for l in &letters {
            println!("{}", row(l));
        }
        return Ok(());
    }
    let mut table = crate::table::plain(&["SENT", "SOURCE", "DEDUPE KEY", "ATTEMPTS", "REASON"]);
    crate::table::align_right(&mut table, 3);
    for l in &letters {
        let env = l.envelope.as_ref().ok();
        table.add_row(vec![
            format_rfc3339_ms(l.sent_at_ms),
            env.map(|e| e.source.clone()).unwrap_or_else(|| "?".into()),
            l.dedupe_key().unwrap_or(&l.message_id).to_string(),
            l.record
                .as_ref()
                .map(|r| r.attempts.to_string())
                .unwrap_or_default(),
            l.reason(),
        ]);
    }
    println!("{}", table.trim_fmt());
    println!("{} dead letter(s)", letters.len());
    Ok(())
}

/// One dead letter in full: its row, then the envelope (the event's body included: this is
/// an operator's own terminal, not a log).
async fn show(dlq: &dyn Queue, ledger: &dyn Ledger, id: &str) -> Result<(), String> {
    let letters = dlq::list(dlq, ledger, usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    let found = letters.iter().find(|l| {
        l.message_id == id
            || l.dedupe_key() == Some(id)
            || l.envelope
                .as_ref()
                .is_ok_and(|e| e.provider_event_id.as_deref() == Some(id))
    });
    let Some(l) = found else {
        return Err(format!(
            "no dead letter {id:?} (a message id, dedupe key or provider event id) among {}",
            letters.len()
        ));
    };
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    println!("{}", pretty(&row(l)));
    match &l.envelope {
        Ok(env) => println!(
            "{}",
            pretty(&serde_json::to_value(env).map_err(|e| e.to_string())?)
        ),
        Err(why) => println!("body is not an envelope ({why})"),
    }
    Ok(())
}

/// A replay's progress on stderr. indicatif draws it only when stderr is a terminal, so a
/// pipe or a log file gets no carriage returns, only the summary printed at the end.
struct Bar(ProgressBar, Option<bool>);

impl Bar {
    fn new() -> Self {
        Self::with_target(ProgressDrawTarget::stderr())
    }

    fn with_target(target: ProgressDrawTarget) -> Self {
        Self(ProgressBar::with_draw_target(None, target), None)
    }

    /// `note` follows the counts in parentheses (the SQS move task's status).
    fn show(&mut self, p: &Progress, note: Option<&str>) {
        let total = p.total.filter(|t| *t > 0);
        if self.1 != Some(total.is_some()) {
            self.1 = Some(total.is_some());
            self.0.set_style(style(total.is_some()));
        }
        match total {
            Some(total) => {
                self.0.set_length(total);
                self.0.set_position((p.scanned as u64).min(total));
            }
            None => self.0.set_position(p.scanned as u64),
        }
        let counts = format!("{} matched, {} moved", p.matched, p.moved);
        self.0.set_message(match note {
            Some(note) => format!("{counts} ({note})"),
            None => counts,
        });
    }
}

/// A bar out of 30 when the DLQ's size is known; the counts alone when it is not.
fn style(known_total: bool) -> ProgressStyle {
    let template = if known_total {
        "[{bar:30}] {pos}/{len} scanned, {msg}"
    } else {
        "{pos} scanned, {msg}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#-")
}

async fn replay(
    dlq: &dyn Queue,
    main: &dyn Queue,
    filter: &Filter,
    options: dlq::ReplayOptions,
) -> Result<(), String> {
    let mut bar = Bar::new();
    let mut show = |p: Progress| bar.show(&p, None);
    let done = dlq::replay(dlq, main, filter, options, &mut show).await;
    bar.0.finish_and_clear();
    let p =
        done.map_err(|e| format!("{e} (safe to rerun: a message sent twice is deduplicated)"))?;
    if options.dry_run {
        println!(
            "dry run: {} of {} dead letter(s) would be replayed",
            p.matched, p.scanned
        );
    } else {
        println!(
            "replayed {} of {} dead letter(s) to the main queue; {} left in the DLQ",
            p.moved,
            p.scanned,
            p.scanned - p.moved
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A terminal that keeps every piece of text drawn on it.
    #[derive(Debug, Default, Clone)]
    struct Screen(Arc<std::sync::Mutex<Vec<String>>>);

    impl Screen {
        /// The last text drawn, without the spaces that clear the rest of its line.
        fn last(&self) -> String {
            let written = self.0.lock().expect("screen");
            written
                .iter()
                .rev()
                .find(|s| !s.trim().is_empty())
                .map(|s| s.trim_end().to_string())
                .unwrap_or_default()
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            200
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().expect("screen").push(s.to_string());
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_bar_fills_with_the_scan() {
        let screen = Screen::default();
        let mut bar = Bar::with_target(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        let drawn = || screen.last();
        let p = Progress {
            scanned: 15,
            matched: 4,
            moved: 4,
            total: Some(30),
        };
        bar.show(&p, None);
        bar.0.tick();
        assert_eq!(
            drawn(),
            format!(
                "[{}{}] 15/30 scanned, 4 matched, 4 moved",
                "#".repeat(15),
                "-".repeat(15)
            )
        );
        bar.show(&Progress { total: None, ..p }, Some("RUNNING"));
        bar.0.tick();
        assert_eq!(drawn(), "15 scanned, 4 matched, 4 moved (RUNNING)");
    }
}
