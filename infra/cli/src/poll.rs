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
use tracing::warn;

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
