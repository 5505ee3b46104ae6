use std::path::Path;
use std::sync::Arc;

use inlet::adapters::embedded::EmbeddedStore;
use inlet::envelope::rfc3339_ms;
use inlet::local::{DB_FILE, DEAD_LETTER_QUEUE, MAIN_QUEUE};
use inlet::ports::{DedupeStatus, Ledger, SystemClock, TrailQuery, TrailRow};

struct Line {
    at: String,
    source: String,
    key: String,
    event_id: String,
    event_type: String,
    status: String,
    attempts: String,
}

fn line(row: &TrailRow) -> Line {
    match row {
        TrailRow::Record(r) => Line {
            at: rfc3339_ms(r.received_at_ms),
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
        },
        TrailRow::Entry(e) => Line {
            at: rfc3339_ms(e.at_ms),
            source: e.source.clone(),
            key: e.dedupe_key.clone().unwrap_or_default(),
            event_id: e.provider_event_id.clone().unwrap_or_default(),
            event_type: e.event_type.clone().unwrap_or_default(),
            status: match &e.reason {
                Some(r) if e.status == inlet::ports::TrailStatus::Refused => {
                    format!("refused ({r})")
                }
                _ => e.status.as_str().to_string(),
            },
            attempts: String::new(),
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
        .list(&TrailQuery { source, limit })
        .await
        .map_err(|e| e.to_string())?;
    let lines: Vec<Line> = rows.iter().map(line).collect();
    if json {
        for l in &lines {
            let v = serde_json::json!({
                "received_at": l.at, "source": l.source, "dedupe_key": l.key,
                "provider_event_id": l.event_id, "type": l.event_type,
                "status": l.status, "attempts": l.attempts,
            });
            println!("{v}");
        }
        return Ok(());
    }
    println!(
        "{:<24}  {:<10}  {:<44}  {:<28}  {:<28}  {:<8}  STATUS",
        "RECEIVED_AT", "SOURCE", "DEDUPE_KEY", "PROVIDER_EVENT_ID", "TYPE", "ATTEMPTS"
    );
    for l in &lines {
        println!(
            "{:<24}  {:<10}  {:<44}  {:<28}  {:<28}  {:<8}  {}",
            l.at, l.source, l.key, l.event_id, l.event_type, l.attempts, l.status
        );
    }
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
