//! `inlet dlq list|show` and `inlet replay`: the dead-letter queue seen and emptied from the
//! command line, over any `Queue` and `Ledger` (the local store here; the same code runs
//! against a deployed stack's SQS queues and table).

use std::io::Write;

use inlet::dlq::{self, DeadLetter, Filter, Progress};
use inlet::envelope::rfc3339_ms;
use inlet::ports::{Ledger, Queue};

/// Everything the table shows, so `--json` and the table agree.
fn row(l: &DeadLetter) -> serde_json::Value {
    let env = l.envelope.as_ref().ok();
    serde_json::json!({
        "message_id": l.message_id,
        "sent_at": rfc3339_ms(l.sent_at_ms),
        "source": env.map(|e| e.source.as_str()),
        "dedupe_key": l.dedupe_key(),
        "provider_event_id": env.and_then(|e| e.provider_event_id.as_deref()),
        "type": env.and_then(|e| e.event_type.as_deref()),
        "attempts": l.record.as_ref().map(|r| r.attempts),
        "last_attempt_at": l.record.as_ref().map(|r| rfc3339_ms(r.updated_at_ms)),
        "reason": l.reason(),
    })
}

pub async fn list(
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
    println!(
        "{:<24}  {:<12}  {:<40}  {:>8}  REASON",
        "SENT", "SOURCE", "DEDUPE KEY", "ATTEMPTS"
    );
    for l in &letters {
        let env = l.envelope.as_ref().ok();
        println!(
            "{:<24}  {:<12}  {:<40}  {:>8}  {}",
            rfc3339_ms(l.sent_at_ms),
            env.map(|e| e.source.as_str()).unwrap_or("?"),
            l.dedupe_key().unwrap_or(&l.message_id),
            l.record
                .as_ref()
                .map(|r| r.attempts.to_string())
                .unwrap_or_default(),
            l.reason()
        );
    }
    println!("{} dead letter(s)", letters.len());
    Ok(())
}

/// One dead letter in full: its row, then the envelope (the event's body included: this is
/// an operator's own terminal, not a log).
pub async fn show(dlq: &dyn Queue, ledger: &dyn Ledger, id: &str) -> Result<(), String> {
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

fn bar(p: &Progress) -> String {
    const WIDTH: usize = 30;
    match p.total.filter(|t| *t > 0) {
        Some(total) => {
            let done = (p.scanned as u64).min(total);
            let filled = (done * WIDTH as u64 / total) as usize;
            format!(
                "[{}{}] {done}/{total} scanned, {} matched, {} moved",
                "#".repeat(filled),
                "-".repeat(WIDTH - filled),
                p.matched,
                p.moved
            )
        }
        None => format!(
            "{} scanned, {} matched, {} moved",
            p.scanned, p.matched, p.moved
        ),
    }
}

pub async fn replay(
    dlq: &dyn Queue,
    main: &dyn Queue,
    filter: &Filter,
    dry_run: bool,
) -> Result<(), String> {
    let mut show = |p: Progress| {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}", bar(&p));
        let _ = err.flush();
    };
    let done = dlq::replay(dlq, main, filter, dry_run, &mut show).await;
    eprintln!();
    let p =
        done.map_err(|e| format!("{e} (safe to rerun: a message sent twice is deduplicated)"))?;
    if dry_run {
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

    #[test]
    fn the_bar_fills_with_the_scan() {
        let p = Progress {
            scanned: 15,
            matched: 4,
            moved: 4,
            total: Some(30),
        };
        assert_eq!(
            bar(&p),
            format!(
                "[{}{}] 15/30 scanned, 4 matched, 4 moved",
                "#".repeat(15),
                "-".repeat(15)
            )
        );
        assert_eq!(
            bar(&Progress { total: None, ..p }),
            "15 scanned, 4 matched, 4 moved"
        );
    }
}
