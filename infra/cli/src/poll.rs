//! `inlet poll`: one poll run of a source now, on the local stack, and the schedules
//! `inlet dev` runs for every poll source.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use inlet::adapters::http_client::ReqwestHttp;
use inlet::config::Config;
use inlet::local::LocalStack;
use inlet::poll::runner::RunOutcome;
use inlet::ports::{Clock, SystemClock};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long one local run may take before it stops at a page boundary.
const RUN_BUDGET: Duration = Duration::from_secs(120);

pub fn http() -> Result<Arc<ReqwestHttp>, String> {
    ReqwestHttp::new(inlet::poll::MAX_RESPONSE_BYTES).map(Arc::new)
}

pub async fn run_once(cfg: Config, data_dir: &Path, source: &str) -> Result<(), String> {
    let stack =
        LocalStack::open(cfg, data_dir, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
    let holder = format!("inlet-poll-{}", std::process::id());
    let deadline = SystemClock.now_ms() + RUN_BUDGET.as_millis() as i64;
    let report = stack
        .poller(http()?, &holder)
        .run(source, deadline)
        .await
        .map_err(|e| e.to_string())?;
    let summary = serde_json::json!({
        "source": report.source,
        "outcome": report.outcome.as_str(),
        "requests": report.requests,
        "pages": report.pages,
        "items": report.items,
        "queued": report.enqueued.len(),
        "cursor": report.cursor,
    });
    println!("{summary}");
    match report.outcome {
        RunOutcome::Failed(why) => Err(format!("poll of {source} failed: {why}")),
        RunOutcome::Busy { holder, .. } => Err(format!(
            "another run ({holder}) is polling {source}; try again later"
        )),
        _ => Ok(()),
    }
}

/// Every poll source on its `every`, until `stop`: what EventBridge Scheduler does on AWS.
pub async fn schedules(stack: Arc<LocalStack>, stop: watch::Receiver<bool>) {
    let Ok(http) = http() else {
        warn!("no HTTP client: poll sources will not run");
        return;
    };
    let mut tasks = Vec::new();
    for (id, source) in &stack.config.sources {
        let Some(poll) = &source.poll else { continue };
        let (stack, http, id, every, mut stop) = (
            stack.clone(),
            http.clone(),
            id.clone(),
            poll.every,
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let poller = stack.poller(http, &format!("inlet-dev-{}", std::process::id()));
            loop {
                let deadline = SystemClock.now_ms() + RUN_BUDGET.as_millis() as i64;
                if let Err(e) = poller.run(&id, deadline).await {
                    warn!(source = %id, error = %e, "poll run failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Fire delayed checks as their messages come due, until `stop`: the poller Lambda's SQS
/// event source on AWS. The receive waits on the queue (it wakes when a delayed message
/// shows), so an idle stack does not spin.
pub async fn checks(stack: Arc<LocalStack>, mut stop: watch::Receiver<bool>) {
    if stack.config.sources.values().all(|s| s.checks.is_empty()) {
        return;
    }
    let Ok(http) = http() else {
        warn!("no HTTP client: delayed checks will not fire");
        return;
    };
    let runner = stack.check_runner(http, &format!("inlet-dev-check-{}", std::process::id()));
    while !*stop.borrow() {
        tokio::select! {
            r = stack.fire_checks_once(&runner, Duration::from_secs(20)) => match r {
                Ok(outcomes) => {
                    for (id, outcome) in outcomes {
                        info!(message_id = %id, outcome = ?outcome, "check message");
                    }
                }
                Err(e) => {
                    warn!(error = %e, "check batch failed");
                    // A broken store must not spin the CPU.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}
