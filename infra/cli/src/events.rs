use std::path::Path;
use std::sync::Arc;

use inlet::adapters::embedded::EmbeddedStore;
use inlet::local::{DB_FILE, DEAD_LETTER_QUEUE, MAIN_QUEUE};
use inlet::ports::{Clock, DedupeStatus, EventSummary, Ledger, SystemClock, TrailQuery, TrailRow};
use inlet::time::format_rfc3339_ms;

struct Line {
    at: String,
    source: String,
    key: String,
    event_id: String,
    event_type: String,
    status: String,
    attempts: String,
    /// The targets that have the event (a record's; empty for a trail entry).
    delivered: Vec<String>,
    summary: EventSummary,
}

/// "Who, which payment": the canonical type, entity and amount in one column.
fn what(s: &EventSummary) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &s.canonical_type {
        parts.push(c.clone());
    }
    if let Some(e) = &s.entity {
        parts.push(e.clone());
    }
    match (s.amount, &s.currency) {
        (Some(a), Some(c)) => parts.push(format!("{a} {c} (minor units)")),
        (Some(a), None) => parts.push(a.to_string()),
        _ => {}
    }
    parts.join(" ")
}

fn line(row: &TrailRow) -> Line {
    match row {
        TrailRow::Record(r) => Line {
            at: format_rfc3339_ms(r.received_at_ms),
            source: r.source.clone(),
            key: r.key.clone(),
            event_id: r.provider_event_id.clone().unwrap_or_default(),
            event_type: r.event_type.clone().unwrap_or_default(),
            status: match (r.status, r.dead) {
                (DedupeStatus::Completed, _) => "dispatched".into(),
                (DedupeStatus::InProgress, _) => "in_progress".into(),
                (DedupeStatus::Failed, true) => {
                    format!("dead ({})", r.last_error.as_deref().unwrap_or(""))
                }
                (DedupeStatus::Failed, false) => {
                    format!("failed ({})", r.last_error.as_deref().unwrap_or(""))
                }
            },
            attempts: r.attempts.to_string(),
            delivered: r.delivered.iter().cloned().collect(),
            summary: r.summary.clone(),
        },
        TrailRow::Entry(e) => Line {
            at: format_rfc3339_ms(e.at_ms),
            source: e.source.clone(),
            key: e.dedupe_key.clone().unwrap_or_default(),
            event_id: e.provider_event_id.clone().unwrap_or_default(),
            event_type: e.event_type.clone().unwrap_or_default(),
            status: match &e.reason {
                Some(r) if e.status == inlet::ports::TrailStatus::Refused => {
                    format!("refused ({r})")
                }
                Some(r) if e.status == inlet::ports::TrailStatus::Check => {
                    format!("check ({r})")
                }
                Some(r) if e.status == inlet::ports::TrailStatus::Dead => {
                    format!("dead ({r})")
                }
                _ => e.status.as_str().to_string(),
            },
            attempts: String::new(),
            delivered: Vec::new(),
            summary: EventSummary::default(),
        },
    }
}

pub async fn run(
    data_dir: &Path,
    source: Option<String>,
    json: bool,
    limit: usize,
) -> Result<(), String> {
    let db = data_dir.join(DB_FILE);
    if !db.exists() {
        return Err(format!(
            "no local store at {} (run `inlet dev` first)",
            db.display()
        ));
    }
    let store = EmbeddedStore::open(&db, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
    let rows = store
        .ledger()
        .list(&TrailQuery {
            source,
            limit,
            now_ms: SystemClock.now_ms(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let lines: Vec<Line> = rows.iter().map(line).collect();
    if json {
        for l in &lines {
            let v = serde_json::json!({
                "received_at": l.at, "source": l.source, "dedupe_key": l.key,
                "provider_event_id": l.event_id, "type": l.event_type,
                "status": l.status, "attempts": l.attempts, "delivered": l.delivered,
                "canonical_type": l.summary.canonical_type, "entity": l.summary.entity,
                "amount": l.summary.amount, "currency": l.summary.currency,
                "key_id": l.summary.key_id,
            });
            println!("{v}");
        }
        return Ok(());
    }
    let mut table = crate::table::plain(&[
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
    for l in &lines {
        table.add_row(vec![
            l.at.clone(),
            l.source.clone(),
            l.key.clone(),
            l.event_id.clone(),
            l.event_type.clone(),
            l.attempts.clone(),
            l.status.clone(),
            l.delivered.join(","),
            what(&l.summary),
        ]);
    }
    println!("{}", table.trim_fmt());
    let main = store.queue_counts(MAIN_QUEUE).map_err(|e| e.to_string())?;
    let dlq = store
        .queue_counts(DEAD_LETTER_QUEUE)
        .map_err(|e| e.to_string())?;
    println!(
        "\naccepted, not yet processed: {} queued, {} in flight; dead-letter queue: {}",
        main.visible + main.delayed,
        main.in_flight,
        dlq.visible + dlq.delayed + dlq.in_flight
    );
    Ok(())
}
