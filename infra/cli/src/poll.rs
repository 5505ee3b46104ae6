//! `inlet poll`: one poll run of a source now, on the local stack, and the schedules
//! `inlet dev` runs for every poll source.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use inlet::adapters::http_client::ReqwestHttp;
use inlet::config::Config;
use inlet::local::LocalStack;
use inlet::poller::{PollError, Poller, RunOutcome, RunReport};
use inlet::ports::{Clock, PollStore, SystemClock};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long one local run may take before it stops at a page boundary.
const RUN_BUDGET: Duration = Duration::from_secs(120);

pub fn http() -> Result<Arc<ReqwestHttp>, String> {
    ReqwestHttp::new(inlet::poll::MAX_RESPONSE_BYTES)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

pub async fn run_once(cfg: Config, data_dir: &Path, source: &str) -> Result<(), String> {
    let stack =
        LocalStack::open(cfg, data_dir, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
    let deadline = SystemClock.now_ms() + RUN_BUDGET.as_millis() as i64;
    let poller = stack.poller(http()?, &holder_name());
    let report = run_reclaiming(&stack, &poller, source, deadline)
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
            let poller = stack.poller(http, &holder_name());
            loop {
                let deadline = SystemClock.now_ms() + RUN_BUDGET.as_millis() as i64;
                if let Err(e) = run_reclaiming(&stack, &poller, &id, deadline).await {
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

/// One run of `source`; when it finds the lease held by an `inlet` process of this host that
/// is gone (killed, crashed), that lease is released and the run tried once more, rather than
/// waiting minutes for it to lapse. Only the dead holder's own lease is cleared: a lease
/// another process took meanwhile is left alone.
pub async fn run_reclaiming(
    stack: &LocalStack,
    poller: &Poller,
    source: &str,
    deadline_ms: i64,
) -> Result<RunReport, PollError> {
    let report = poller.run(source, deadline_ms).await?;
    let RunOutcome::Busy { holder, .. } = &report.outcome else {
        return Ok(report);
    };
    if !is_dead_local_holder(holder, &hostname(), std::process::id(), process_alive) {
        return Ok(report);
    }
    warn!(source = %source, holder = %holder, "reclaimed the poll lease of a dead inlet process on this host");
    stack.store.ledger().release(source, holder).await?;
    poller.run(source, deadline_ms).await
}

/// This process in poll leases: `inlet-<hostname>-<pid>`, which is what lets another `inlet`
/// on the same host tell whether the holder still runs. (Two containers sharing one data
/// folder must have different hostnames, as Docker gives them by default: their pids are
/// not comparable.)
pub fn holder_name() -> String {
    format!("inlet-{}-{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Whether `holder` names an `inlet` process of `host`, other than `own_pid`, that `alive`
/// says is gone. Any doubt (another host, a name `inlet` did not write, no way to ask) is
/// `false`: the lease is then left to lapse on its own.
pub fn is_dead_local_holder(
    holder: &str,
    host: &str,
    own_pid: u32,
    alive: impl Fn(u32) -> Option<bool>,
) -> bool {
    let Some((holder_host, pid)) = holder
        .strip_prefix("inlet-")
        .and_then(|rest| rest.rsplit_once('-'))
    else {
        return false;
    };
    if holder_host != host || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    match pid.parse::<u32>() {
        Ok(pid) => pid != own_pid && alive(pid) == Some(false),
        Err(_) => false,
    }
}

/// Whether process `pid` of this host runs, from `/proc`: `None` where there is no `/proc`
/// to ask. A zombie (killed, not yet reaped by its parent) is gone.
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    match std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) {
        Ok(stat) => Some(!stat_says_gone(&stat)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

/// `/proc/<pid>/stat` is `pid (comm) state …`; the command may hold spaces and parentheses,
/// so the state is the field after the last `)`. `Z` (zombie) and `X` (dead) are gone.
fn stat_says_gone(stat: &str) -> bool {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "build-box-7";

    fn dead(_: u32) -> Option<bool> {
        Some(false)
    }

    #[test]
    fn only_a_gone_inlet_process_of_this_host_is_a_dead_holder() {
        assert!(is_dead_local_holder(
            "inlet-build-box-7-4242",
            HOST,
            1,
            dead
        ));
        // Alive, or no way to tell: wait for the lease to lapse.
        assert!(!is_dead_local_holder(
            "inlet-build-box-7-4242",
            HOST,
            1,
            |_| Some(true)
        ));
        assert!(!is_dead_local_holder(
            "inlet-build-box-7-4242",
            HOST,
            1,
            |_| None
        ));
        // Another host (a hostname that is a prefix of ours, too), ourselves, names inlet did
        // not write (a Lambda request id, the old inlet-poll-<pid>), malformed pids.
        for holder in [
            "inlet-other-host-4242",
            "inlet-build-box-4242",
            "inlet-build-box-7-1",
            "inlet-poll-4242",
            "3f2c9a1e-8d1b-4b7e-9d0a-1c2b3d4e5f60",
            "inlet-build-box-7-",
            "inlet-build-box-7-+42",
            "inlet-build-box-7-99999999999",
            "build-box-7-4242",
        ] {
            assert!(!is_dead_local_holder(holder, HOST, 1, dead), "{holder}");
        }
        // The holder this process writes parses back to this host and pid.
        let own = holder_name();
        assert!(!is_dead_local_holder(
            &own,
            &hostname(),
            std::process::id(),
            dead
        ));
        assert!(is_dead_local_holder(&own, &hostname(), 1, dead));
    }

    #[test]
    fn proc_tells_a_running_process_from_a_reaped_or_zombie_one() {
        assert_eq!(process_alive(std::process::id()), Some(true));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("reap");
        assert_eq!(process_alive(pid), Some(false), "a reaped process is gone");
        assert!(stat_says_gone("4242 (inlet) Z 1 4242 4242 0 -1"));
        assert!(stat_says_gone("4242 (odd) name) X 1"));
        assert!(!stat_says_gone("4242 (inlet) S 1 4242 4242 0 -1"));
        assert!(!stat_says_gone("4242 (a) Z b) R 1"));
        assert!(!stat_says_gone(""));
    }
}
