//! `inlet events`: the trail — dedupe records and trail entries, newest first — from the local
//! store or a deployed stack's table (`--aws`), with the same columns and JSON either way.

use inlet::ports::{
    Clock, DedupeRecord, DedupeStatus, EventSummary, Ledger, Lookup, SystemClock, TrailQuery,
    TrailRow, TrailStatus,
};
use inlet::time::format_rfc3339_ms;

use crate::dlq::{Stack, Where};

/// Which rows to show. Filters are applied to the source's rows newest first, so `--limit`
/// counts matching rows.
#[derive(clap::Args, Debug, Default)]
pub struct Filters {
    /// Only this source (checked against the config when one is given).
    #[arg(long)]
    pub source: Option<String>,
    /// Only rows whose status is this: an event's (dispatched, in_progress, failed, dead) or
    /// a trail entry's (refused, duplicate, conflict, poll_run, check, missed_webhook, stale,
    /// forced_replay, cursor_reset, redelivered; a wrong one is answered with the list).
    #[arg(long)]
    pub status: Option<String>,
    /// Only this event type: the provider's (payment_intent.succeeded) or the canonical one
    /// (payment.succeeded).
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only events about this entity: the player, customer or wallet the provider names.
    #[arg(long)]
    pub entity: Option<String>,
    /// Only this event or payment: a provider event id, a dedupe key, or the id of the
    /// payment, refund or order it reports on (pi_…). Found through an index, not a listing.
    #[arg(long)]
    pub id: Option<String>,
    /// Only rows from this time on: RFC 3339, or a duration back from now (15m, 2h, 3days).
    #[arg(long)]
    pub since: Option<String>,
    /// Only rows up to this time: RFC 3339, or a duration back from now.
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many rows (0: all).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Keep watching: after the rows so far, print each new row and each change of an
    /// event's status (received, then dispatched or dead) as it happens, until Ctrl-C.
    #[arg(long, conflicts_with = "until")]
    pub follow: bool,
    /// With --follow: how often to look, e.g. 1s, 500ms (each look is one listing).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, requires = "follow")]
    pub every: std::time::Duration,
}

/// One row as both outputs show it.
#[derive(Debug, PartialEq)]
pub(crate) struct Line {
    pub(crate) at_ms: i64,
    pub(crate) source: String,
    pub(crate) key: String,
    pub(crate) event_id: String,
    pub(crate) event_type: String,
    /// `dispatched`, `dead`, `refused`, `poll_run`, … (no reason).
    pub(crate) status: String,
    /// Why: the last error, the refusal, the poll run's outcome and counts, the check's result.
    pub(crate) reason: String,
    pub(crate) attempts: Option<u32>,
    /// The targets that have the event (a record's; empty for a trail entry).
    pub(crate) delivered: Vec<String>,
    pub(crate) summary: EventSummary,
}

impl Line {
    /// The status column: the status, and its reason when there is one.
    pub(crate) fn status_text(&self) -> String {
        if self.reason.is_empty() {
            self.status.clone()
        } else {
            format!("{} ({})", self.status, self.reason)
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "received_at": format_rfc3339_ms(self.at_ms), "source": self.source,
            "dedupe_key": self.key, "provider_event_id": self.event_id, "type": self.event_type,
            "status": self.status, "reason": self.reason, "attempts": self.attempts,
            "delivered": self.delivered, "canonical_type": self.summary.canonical_type,
            "entity": self.summary.entity, "amount": self.summary.amount,
            "currency": self.summary.currency, "key_id": self.summary.key_id,
            "object_id": self.summary.object_id, "caller_ip": self.summary.caller_ip,
        })
    }
}

/// "Who, which payment": the canonical type, entity and amount in one column.
pub(crate) fn what(s: &EventSummary) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &s.canonical_type {
        parts.push(c.clone());
    }
    if let Some(o) = &s.object_id {
        parts.push(o.clone());
    }
    // Stripe names a customer-less payment its own entity: said once.
    if let Some(e) = s
        .entity
        .as_ref()
        .filter(|e| s.object_id.as_ref() != Some(*e))
    {
        parts.push(format!("for {e}"));
    }
    match (s.amount, &s.currency) {
        (Some(a), Some(c)) => parts.push(format!("{a} {c} (minor units)")),
        (Some(a), None) => parts.push(a.to_string()),
        _ => {}
    }
    parts.join(" ")
}

fn line(row: TrailRow) -> Line {
    match row {
        TrailRow::Record(r) => Line {
            at_ms: r.received_at_ms,
            source: r.source,
            key: r.key,
            event_id: r.provider_event_id.unwrap_or_default(),
            event_type: r.event_type.unwrap_or_default(),
            status: match (r.status, r.dead) {
                (DedupeStatus::Completed, _) => "dispatched",
                (DedupeStatus::InProgress, _) => "in_progress",
                (DedupeStatus::Failed, true) => "dead",
                (DedupeStatus::Failed, false) => "failed",
            }
            .to_string(),
            reason: match r.status {
                DedupeStatus::Failed => r.last_error.unwrap_or_default(),
                _ => String::new(),
            },
            attempts: Some(r.attempts),
            delivered: r.delivered.into_iter().collect(),
            summary: r.summary,
        },
        TrailRow::Entry(e) => Line {
            at_ms: e.at_ms,
            source: e.source,
            key: e.dedupe_key.unwrap_or_default(),
            event_id: e.provider_event_id.unwrap_or_default(),
            event_type: e.event_type.unwrap_or_default(),
            status: e.status.as_str().to_string(),
            reason: e.reason.unwrap_or_default(),
            attempts: None,
            delivered: Vec::new(),
            summary: EventSummary::default(),
        },
    }
}

/// No filter, or one `have` meets.
fn is(want: &Option<String>, have: &[Option<&str>]) -> bool {
    want.as_deref().is_none_or(|w| have.contains(&Some(w)))
}

/// The filters, checked and with their times read.
pub(crate) struct Query {
    filters: Filters,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    /// The config's sources, when there is a config: an id is also tried as the dedupe key
    /// `<source>#<id>` of each (one read apiece).
    sources: Vec<String>,
}

impl Query {
    pub(crate) fn new(filters: Filters, now_ms: i64) -> Result<Self, String> {
        let time = |flag: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| inlet::dlq::parse_since(t, now_ms).map_err(|e| format!("{flag}: {e}")))
                .transpose()
        };
        if let Some(status) = &filters.status {
            let known = ["dispatched", "in_progress", "failed", "dead"];
            if !known.contains(&status.as_str()) && TrailStatus::parse(status).is_none() {
                let trail: Vec<&str> = TrailStatus::ALL.iter().map(|t| t.as_str()).collect();
                return Err(format!(
                    "--status {status:?} is not a status: {}, or a trail status ({})",
                    known.join(", "),
                    trail.join(", ")
                ));
            }
        }
        Ok(Self {
            since_ms: time("--since", &filters.since)?,
            until_ms: time("--until", &filters.until)?,
            filters,
            sources: Vec::new(),
        })
    }

    /// The query with the stack's configured sources, for id lookups.
    pub(crate) fn for_stack(mut self, stack: &Stack) -> Self {
        self.sources = stack
            .config()
            .map(|c| c.sources.keys().cloned().collect())
            .unwrap_or_default();
        self
    }

    fn matches(&self, l: &Line) -> bool {
        let id = &[
            Some(l.event_id.as_str()),
            Some(l.key.as_str()),
            l.summary.object_id.as_deref(),
        ];
        self.matches_besides_id(l) && is(&self.filters.id, id)
    }

    /// Every filter but `--id`: what the rows an id's lookup found must still pass (a later
    /// trail entry names the event's key, not the payment id that found it).
    fn matches_besides_id(&self, l: &Line) -> bool {
        let f = &self.filters;
        is(&f.source, &[Some(&l.source)])
            && is(&f.status, &[Some(&l.status)])
            && is(
                &f.event_type,
                &[Some(&l.event_type), l.summary.canonical_type.as_deref()],
            )
            && is(&f.entity, &[l.summary.entity.as_deref()])
            && self.since_ms.is_none_or(|t| l.at_ms >= t)
            && self.until_ms.is_none_or(|t| l.at_ms <= t)
    }

    /// Whether listing must read past `limit` rows to find `limit` matching ones.
    fn filters_rows(&self) -> bool {
        let f = &self.filters;
        f.status.is_some()
            || f.event_type.is_some()
            || f.entity.is_some()
            || f.id.is_some()
            || self.since_ms.is_some()
            || self.until_ms.is_some()
    }
}

/// The records an id names, read by key and through the lookup index: the id as a dedupe
/// key, as `<source>#<id>` for each known source, and as the object (payment) id. Empty when
/// none is found.
async fn records_named(
    ledger: &dyn Ledger,
    id: &str,
    sources: &[String],
    now_ms: i64,
) -> Result<Vec<DedupeRecord>, String> {
    let err = |e: inlet::ports::LedgerError| e.to_string();
    let keys = std::iter::once(id.to_owned()).chain(sources.iter().map(|s| format!("{s}#{id}")));
    let gets =
        futures_util::future::try_join_all(keys.map(|k| async move { ledger.get(&k).await }))
            .await
            .map_err(err)?;
    let mut records: Vec<DedupeRecord> = gets.into_iter().flatten().collect();
    for row in ledger
        .lookup(Lookup::Object(id), now_ms)
        .await
        .map_err(err)?
    {
        if let TrailRow::Record(r) = row {
            if !records.iter().any(|have| have.key == r.key) {
                records.push(r);
            }
        }
    }
    records.sort_by(|a, b| {
        b.received_at_ms
            .cmp(&a.received_at_ms)
            .then(b.key.cmp(&a.key))
    });
    Ok(records)
}

/// The trail entries about `key` (duplicates, conflicts, replays, the DLQ move), newest first.
async fn entries_about(ledger: &dyn Ledger, key: &str, now_ms: i64) -> Result<Vec<Line>, String> {
    Ok(ledger
        .lookup(Lookup::Entries(key), now_ms)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(line)
        .collect())
}

/// The trail's rows that match, newest first, at most `limit` (0: all).
pub(crate) async fn rows(
    ledger: &dyn Ledger,
    query: &Query,
    now_ms: i64,
) -> Result<Vec<Line>, String> {
    let limit = query.filters.limit;
    if let Some(id) = &query.filters.id {
        let records = records_named(ledger, id, &query.sources, now_ms).await?;
        if !records.is_empty() {
            let entries = futures_util::future::try_join_all(
                records
                    .iter()
                    .map(|r| entries_about(ledger, &r.key, now_ms)),
            )
            .await?;
            let mut lines: Vec<Line> = entries
                .into_iter()
                .flatten()
                .chain(records.into_iter().map(|r| line(TrailRow::Record(r))))
                .filter(|l| query.matches_besides_id(l))
                .collect();
            lines.sort_by_key(|l| std::cmp::Reverse(l.at_ms));
            if limit > 0 {
                lines.truncate(limit);
            }
            return Ok(lines);
        }
        // An id no key or index names (an unsigned delivery id, a refused request's id):
        // the listing, filtered.
    }
    listed_rows(ledger, query, now_ms).await
}

/// The rows of the source's listing (of its time window) that match, newest first.
async fn listed_rows(ledger: &dyn Ledger, query: &Query, now_ms: i64) -> Result<Vec<Line>, String> {
    let limit = query.filters.limit;
    let listed = ledger
        .list(&TrailQuery {
            source: query.filters.source.clone(),
            limit: if query.filters_rows() { 0 } else { limit },
            now_ms,
            since_ms: query.since_ms,
            until_ms: query.until_ms,
        })
        .await
        .map_err(|e| e.to_string())?;
    let matching = listed.into_iter().map(line).filter(|l| query.matches(l));
    Ok(if limit == 0 {
        matching.collect()
    } else {
        matching.take(limit).collect()
    })
}

/// Refuse a `--source` the config does not have, with the closest name as a hint.
pub(crate) fn check_source(stack: &Stack, source: Option<&str>) -> Result<(), String> {
    let (Some(source), Some(cfg)) = (source, stack.config()) else {
        return Ok(());
    };
    if cfg.source(source).is_some() {
        return Ok(());
    }
    let hint = inlet::providers::closest_name(source, cfg.sources.keys().map(String::as_str))
        .map(|k| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default();
    Err(format!(
        "--source {source:?}: no such source in the config{hint}"
    ))
}

pub async fn run(at: Where, filters: Filters) -> Result<(), String> {
    let stack = Stack::open(at).await?;
    check_source(&stack, filters.source.as_deref())?;
    let now_ms = SystemClock.now_ms();
    let (json, follow, every) = (filters.json, filters.follow, filters.every);
    let query = Query::new(filters, now_ms)?.for_stack(&stack);
    let (_, _, ledger) = stack.parts();
    let lines = rows(ledger, &query, now_ms).await?;
    if follow {
        return follow_rows(ledger, query, lines, json, every).await;
    }
    if json {
        for l in &lines {
            println!("{}", l.json());
        }
        return Ok(());
    }
    print_table(&lines);
    if let Some((main, dlq)) = stack.local_counts()? {
        println!(
            "\naccepted, not yet processed: {} queued, {} in flight; dead-letter queue: {}",
            main.visible + main.delayed,
            main.in_flight,
            dlq.visible + dlq.delayed + dlq.in_flight
        );
    }
    Ok(())
}

/// What makes a row new to a follower: an event's key with its status and attempts (so each
/// change is shown once), a trail entry's time, source, key, status and reason.
fn seen_as(l: &Line) -> String {
    match l.attempts {
        Some(n) => format!("{}|{}|{n}", l.key, l.status),
        None => format!(
            "{}|{}|{}|{}|{}",
            l.at_ms, l.source, l.key, l.status, l.reason
        ),
    }
}

/// How far back each look reaches: an event received earlier than this before the follow
/// began, or this long ago, is no longer watched for a change of status.
const FOLLOW_WINDOW_MS: i64 = 15 * 60 * 1000;

/// `--follow`: the rows so far oldest first, then every `every` the rows of the window that
/// are new or changed, until Ctrl-C. Each look is one listing of the window, so what a look
/// costs is bounded by the window, not by how long the follow has run.
async fn follow_rows(
    ledger: &dyn Ledger,
    mut query: Query,
    first: Vec<Line>,
    json: bool,
    every: std::time::Duration,
) -> Result<(), String> {
    use std::io::Write;
    // Written, not println!'d: a reader that went away (`| head`) ends the follow instead
    // of a panic.
    let show = |lines: &mut dyn Iterator<Item = &Line>| -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        for l in lines {
            if json {
                writeln!(out, "{}", l.json())?;
            } else {
                writeln!(
                    out,
                    "{}  {}  {}  {}  {}  {}",
                    format_rfc3339_ms(l.at_ms),
                    l.source,
                    if l.key.is_empty() { "-" } else { &l.key },
                    if l.event_type.is_empty() {
                        "-"
                    } else {
                        &l.event_type
                    },
                    l.status_text(),
                    what(&l.summary)
                )?;
            }
        }
        out.flush()
    };
    // What has been shown, with when it happened, so the set forgets what left the window.
    let mut seen: std::collections::HashMap<String, i64> =
        first.iter().map(|l| (seen_as(l), l.at_ms)).collect();
    if show(&mut first.iter().rev()).is_err() {
        return Ok(());
    }
    let started = SystemClock.now_ms();
    query.filters.limit = 0;
    let asked_since = query.since_ms;
    let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = SystemClock.now_ms();
        let floor = (started - FOLLOW_WINDOW_MS).max(now - FOLLOW_WINDOW_MS);
        query.since_ms = Some(asked_since.map_or(floor, |s| s.max(floor)));
        seen.retain(|_, at| *at >= floor);
        let mut fresh: Vec<Line> = rows(ledger, &query, now)
            .await?
            .into_iter()
            .filter(|l| seen.insert(seen_as(l), l.at_ms).is_none())
            .collect();
        fresh.reverse();
        if show(&mut fresh.iter()).is_err() {
            return Ok(());
        }
    }
}

/// One event's whole story: its record, what the trail holds for its key since, and the
/// dead-letter message that carries it, if any.
pub(crate) struct Story {
    pub(crate) event: Line,
    pub(crate) via: String,
    pub(crate) updated_at_ms: i64,
    /// Duplicates, conflicts, forced replays, the DLQ move: oldest first.
    pub(crate) later: Vec<Line>,
    /// The DLQ message id, when the event sits in the dead-letter queue.
    pub(crate) dead_letter: Option<String>,
    /// The other events of the same payment, newest first (their dedupe keys).
    pub(crate) others: Vec<String>,
    /// The request it came in, when its source archives (`requests/<sha256>`).
    pub(crate) request_key: Option<String>,
}

impl Story {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "event": self.event.json(),
            "via": self.via,
            "updated_at": format_rfc3339_ms(self.updated_at_ms),
            "trail": self.later.iter().map(Line::json).collect::<Vec<_>>(),
            "dead_letter": self.dead_letter,
            "same_payment": self.others,
            "archived_request": self.request_key,
        })
    }
}

/// The story of `id`: a dedupe key, `<source>#<id>`, a payment (object) id — its newest
/// event — else a provider event id found in the trail.
pub(crate) async fn story(stack: &Stack, id: &str, now_ms: i64) -> Result<Story, String> {
    let (_, dlq, ledger) = stack.parts();
    let sources: Vec<String> = stack
        .config()
        .map(|c| c.sources.keys().cloned().collect())
        .unwrap_or_default();
    let mut named = records_named(ledger, id, &sources, now_ms).await?;
    let record = if named.is_empty() {
        let query = Query::new(
            Filters {
                id: Some(id.to_owned()),
                limit: 0,
                ..Filters::default()
            },
            now_ms,
        )?;
        // Nothing the index names: the listing, as `rows` would fall back to.
        let key = listed_rows(ledger, &query, now_ms)
            .await?
            .into_iter()
            .map(|l| l.key)
            .find(|k| !k.is_empty())
            .ok_or_else(|| {
                format!(
                    "no event {id:?} (a dedupe key, provider event id or payment id) in the trail"
                )
            })?;
        ledger
            .get(&key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{key}: in the trail but its record has expired"))?
    } else {
        named.remove(0)
    };
    let key = record.key.clone();
    let mut later = entries_about(ledger, &key, now_ms).await?;
    later.reverse();
    let others = named.into_iter().map(|r| r.key).collect();
    // Only an event that failed can be in the DLQ: the queue is read only then.
    let dead_letter = if record.status == DedupeStatus::Failed {
        inlet::dlq::list(dlq, ledger, usize::MAX)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|l| l.dedupe_key() == Some(key.as_str()))
            .map(|l| l.message_id)
    } else {
        None
    };
    let (via, updated_at_ms) = (record.via.clone(), record.updated_at_ms);
    let request_key = record.summary.request_key.clone();
    Ok(Story {
        event: line(TrailRow::Record(record)),
        via,
        updated_at_ms,
        later,
        dead_letter,
        others,
        request_key,
    })
}

/// The archived request `story` names, read back and checked.
pub(crate) async fn archived(
    stack: &Stack,
    story: &Story,
) -> Result<inlet::archive::ArchivedRequest, String> {
    let key = story.request_key.as_deref().ok_or_else(|| {
        format!(
            "{}: its request was not archived (the source's `archive` was off when it came)",
            story.event.key
        )
    })?;
    inlet::archive::read_key(stack.blobs()?, key)
        .await
        .map(|(_, doc)| doc)
        .map_err(|e| e.to_string())
}

/// `inlet events show ID`: one event's whole story.
pub async fn show(
    at: Where,
    id: &str,
    json: bool,
    request_out: Option<&std::path::Path>,
) -> Result<(), String> {
    let stack = Stack::open(at).await?;
    let story = story(&stack, id, SystemClock.now_ms()).await?;
    if let Some(path) = request_out {
        let doc = archived(&stack, &story).await?;
        let body = doc.body_bytes()?;
        std::fs::write(path, &body).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!(
            "wrote the {}-byte body of {} to {}",
            body.len(),
            story.request_key.as_deref().unwrap_or(""),
            path.display()
        );
    }
    if json {
        println!("{}", story.json());
        return Ok(());
    }
    let event = &story.event;
    let key = &event.key;
    println!("{key}  ({} event {})", event.source, event.event_id);
    println!(
        "  what:      {}  [{}]",
        what(&event.summary),
        event.event_type
    );
    println!(
        "  verified:  key {}, via {}{}",
        event.summary.key_id.as_deref().unwrap_or("?"),
        story.via,
        event
            .summary
            .caller_ip
            .as_deref()
            .map(|ip| format!(", from {ip}"))
            .unwrap_or_default()
    );
    println!(
        "  received:  {}   last change {}   attempts {}",
        format_rfc3339_ms(event.at_ms),
        format_rfc3339_ms(story.updated_at_ms),
        event.attempts.unwrap_or_default()
    );
    println!("  status:    {}", event.status_text());
    if !event.delivered.is_empty() {
        println!("  delivered: {}", event.delivered.join(", "));
    }
    for l in &story.later {
        println!("  then {}  {}", format_rfc3339_ms(l.at_ms), l.status_text());
    }
    if !story.others.is_empty() {
        println!("  same payment: {}", story.others.join(", "));
    }
    if let Some(message_id) = &story.dead_letter {
        println!(
            "  in the DLQ as message {message_id}: replay it with `inlet replay --ids {key}` (and --config or --aws)"
        );
    }
    if let Some(request) = &story.request_key {
        match archived(&stack, &story).await {
            Ok(doc) => println!(
                "  archived:  {request}  {} {}, {} event(s), headers {}; `--request-out FILE` writes the body, `inlet verify --archived {key}` re-checks it",
                doc.method,
                doc.path,
                doc.events,
                doc.headers.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            Err(e) => println!("  archived:  {request} (not readable: {e})"),
        }
    }
    Ok(())
}

fn print_table(lines: &[Line]) {
    let mut table = crate::table::fitted(&[
        "RECEIVED_AT",
        "SOURCE",
        "DEDUPE_KEY",
        "PROVIDER_EVENT_ID",
        "TYPE",
        "ATTEMPTS",
        "STATUS",
        "DELIVERED_TO",
        "WHAT",
    ]);
    crate::table::align_right(&mut table, 5);
    for l in lines {
        table.add_row(vec![
            format_rfc3339_ms(l.at_ms),
            l.source.clone(),
            l.key.clone(),
            l.event_id.clone(),
            l.event_type.clone(),
            l.attempts.map(|a| a.to_string()).unwrap_or_default(),
            l.status_text(),
            l.delivered.join(","),
            what(&l.summary),
        ]);
    }
    println!("{}", table.trim_fmt());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_status_is_refused_naming_the_known_ones() {
        let f = Filters {
            status: Some("dispatch".into()),
            ..Filters::default()
        };
        let err = Query::new(f, 0).err().expect("refused");
        assert!(
            err.contains("dispatched") && err.contains("poll_run"),
            "{err}"
        );
    }
}
