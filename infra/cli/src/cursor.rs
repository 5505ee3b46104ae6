//! `inlet cursor SOURCE`: where a poll source stands — its cursor, the lease of a run in
//! progress, its last runs and how long since the cursor moved — on the local store or a
//! deployed stack; and `--reset`, which forgets the cursor when the provider no longer
//! knows it (a Stripe event older than its 30 days), asked for and recorded in the trail.

use std::io::{BufRead, IsTerminal, Write};

use inlet::config::Settings;
use inlet::ports::{Clock, PollState, SystemClock, TrailEntry, TrailStatus};
use inlet::time::format_rfc3339_ms;

use crate::dlq::{Stack, Where};
use crate::events::{self, Filters, Query};

/// How much of a cursor the text output and the trail entry keep (a cursor is the poll
/// kind's own JSON: an event id, a time, a page token).
const CURSOR_SHOWN: usize = 300;

#[derive(clap::Args)]
pub struct CursorArgs {
    /// The poll source (a source with a [sources.NAME.poll] table).
    pub source: String,
    /// Forget the cursor: the next run starts where a new source's first run does, and
    /// what it sees again is deduplicated. Refused while a run holds the lease.
    #[arg(long)]
    pub reset: bool,
    /// With --reset: do not ask for the source's name first (needed without a terminal).
    #[arg(long, requires = "reset")]
    pub yes: bool,
    /// One JSON object (before and after, with --reset).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub at: Where,
}

pub(crate) fn shown(text: &str) -> String {
    match text.char_indices().nth(CURSOR_SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn state_json(s: &PollState, now_ms: i64) -> serde_json::Value {
    serde_json::json!({
        "source": s.source,
        "cursor": s.cursor,
        "version": s.version,
        "lease_holder": s.lease_holder.as_ref().filter(|_| s.lease_until_ms >= now_ms),
        "lease_until": (s.lease_until_ms >= now_ms).then(|| format_rfc3339_ms(s.lease_until_ms)),
        "updated_at": format_rfc3339_ms(s.updated_at_ms),
        "since_update_ms": now_ms - s.updated_at_ms,
    })
}

pub async fn run(args: CursorArgs) -> Result<(), String> {
    let stack = Stack::open(args.at).await?;
    let source = args.source;
    events::check_source(&stack, Some(&source))?;
    if let Some(cfg) = stack.config() {
        if cfg.source(&source).is_some_and(|s| s.poll.is_none()) {
            return Err(format!(
                "source {source:?} is not polled: it has no [sources.{source}.poll] table"
            ));
        }
    }
    let now_ms = SystemClock.now_ms();
    let state = stack
        .polls()
        .state(&source)
        .await
        .map_err(|e| e.to_string())?;
    let runs = last_runs(&stack, &source, now_ms).await?;
    if !args.reset {
        return print(&source, state.as_ref(), &runs, now_ms, args.json);
    }
    let Some(before) = state else {
        return Err(format!(
            "{source} has never been polled: there is no cursor to reset"
        ));
    };
    if !args.json {
        print(&source, Some(&before), &runs, now_ms, false)?;
    }
    if !args.yes {
        confirm(&source, before.version)?;
    }
    let now_ms = SystemClock.now_ms();
    let version = stack
        .polls()
        .reset(&source, before.version, now_ms)
        .await
        .map_err(|e| e.to_string())?;
    let was = before.cursor.as_deref().map(shown).unwrap_or_default();
    let entry = TrailEntry {
        id: uuid::Uuid::new_v4().to_string(),
        at_ms: now_ms,
        source: source.clone(),
        status: TrailStatus::CursorReset,
        dedupe_key: None,
        provider_event_id: None,
        event_type: None,
        reason: Some(format!(
            "by {} from version {}; the cursor was {was}",
            operator(),
            before.version
        )),
        source_ip: None,
        expires_at_ms: stack
            .config()
            .map_or_else(Settings::default, |c| c.settings.clone())
            .trail_expires_at(now_ms),
    };
    let (_, _, ledger) = stack.parts();
    // The reset is done: a trail that cannot be written is said, not a reason to undo it.
    let recorded = ledger.append(&entry).await.map_err(|e| e.to_string());
    if args.json {
        let after = stack
            .polls()
            .state(&source)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "{}",
            serde_json::json!({
                "before": state_json(&before, now_ms),
                "after": after.map(|s| state_json(&s, now_ms)),
                "trail_entry": recorded.as_ref().ok().map(|()| &entry.id),
            })
        );
    } else {
        println!(
            "\nreset: {source}'s cursor is forgotten (version {version}); its next run starts afresh"
        );
    }
    recorded.map_err(|e| format!("the cursor was reset, but the trail entry was not written: {e}"))
}

/// Who asked, for the trail: the login name where the environment says it.
fn operator() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "an operator".to_owned())
}

/// The operator types the source's name, as GitHub asks before a deletion; without a terminal
/// there is nobody to ask, so `--yes` must say it.
fn confirm(source: &str, version: u64) -> Result<(), String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(
            "--reset asks for confirmation on a terminal; add --yes to reset without one".into(),
        );
    }
    print!(
        "\nReset the cursor of {source} (version {version})? Its next run starts where a new \
         source's does; events it sees again are deduplicated.\nType the source's name to confirm: "
    );
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    if answer.trim() != source {
        return Err("not confirmed: nothing changed".into());
    }
    Ok(())
}

/// The source's last five poll runs, newest first.
pub(crate) async fn last_runs(
    stack: &Stack,
    source: &str,
    now_ms: i64,
) -> Result<Vec<events::Line>, String> {
    let query = Query::new(
        Filters {
            source: Some(source.to_owned()),
            status: Some(TrailStatus::PollRun.as_str().to_owned()),
            limit: 5,
            ..Filters::default()
        },
        now_ms,
    )?;
    let (_, _, ledger) = stack.parts();
    events::rows(ledger, &query, now_ms).await
}

fn print(
    source: &str,
    state: Option<&PollState>,
    runs: &[events::Line],
    now_ms: i64,
    json: bool,
) -> Result<(), String> {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "state": state.map(|s| state_json(s, now_ms)),
                "last_runs": runs.iter().map(events::Line::json).collect::<Vec<_>>(),
            })
        );
        return Ok(());
    }
    let Some(s) = state else {
        println!("{source}: never polled (no cursor yet)");
        return Ok(());
    };
    println!("{source}");
    println!(
        "  cursor:   {} (version {})",
        s.cursor
            .as_deref()
            .map(shown)
            .unwrap_or_else(|| "none".into()),
        s.version
    );
    println!(
        "  moved:    {} ({} ago)",
        format_rfc3339_ms(s.updated_at_ms),
        humantime::format_duration(std::time::Duration::from_secs(
            u64::try_from((now_ms - s.updated_at_ms) / 1000).unwrap_or(0)
        ))
    );
    match (&s.lease_holder, s.lease_until_ms >= now_ms) {
        (Some(holder), true) => println!(
            "  lease:    held by {holder} until {}",
            format_rfc3339_ms(s.lease_until_ms)
        ),
        _ => println!("  lease:    free (no run in progress)"),
    }
    for (i, run) in runs.iter().enumerate() {
        println!(
            "  {}{}  {}",
            if i == 0 { "runs:     " } else { "          " },
            format_rfc3339_ms(run.at_ms),
            run.reason
        );
    }
    Ok(())
}
