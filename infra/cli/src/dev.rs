use std::path::Path;
use std::sync::Arc;

use inlet::adapters::embedded::{StoreThread, ThreadStart};
use inlet::config::Config;
use inlet::local::{LocalStack, StoreThreads};
use inlet::ports::SystemClock;
use inlet_cli::placement::{self, CpuPlan};
use inlet_cli::server;
use tokio::sync::watch;

/// The file `inlet dev` holds locked while it runs on a store (its pid inside).
const DEV_LOCK: &str = "inlet-dev.lock";

/// One `inlet dev` per store: a second one would start silently, then the two would share
/// its queues with neither saying so. The lock is the kernel's, so a killed process leaves
/// none behind; other commands (`inlet events`, `inlet dlq`) read the store beside it.
fn lock_store(data_dir: &Path) -> Result<std::fs::File, String> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let path = data_dir.join(DEV_LOCK);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(format!(
                "another `inlet dev` (pid {}) is running on the store in {}: stop it, or give this one --data-dir DIR",
                pid.trim(),
                data_dir.display()
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(format!("{}: {e}", path.display())),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file)
}

/// The stack, until Ctrl-C. The caller has set up the logs, and placed the calling thread
/// (and so the runtime's) for `placement` ([`inlet_cli::placement::prepare`]'s result).
pub async fn run(
    cfg: Config,
    listen: &str,
    data_dir: &Path,
    placement: std::io::Result<Option<CpuPlan>>,
) -> Result<(), String> {
    let _lock = lock_store(data_dir)?;
    let plan = match placement {
        Ok(plan) => plan,
        Err(e) => {
            tracing::warn!(error = %e, "threads not placed on CPUs; every thread may run on every CPU");
            None
        }
    };
    if let Some(plan) = &plan {
        tracing::info!(
            ingest_cpus = ?plan.ingest,
            delivery_cpus = ?plan.delivery,
            "threads placed: webhooks and queue writes on the ingest CPUs, the worker and the ledger on the delivery CPUs"
        );
    }
    let stack = Arc::new(
        LocalStack::open_placed(cfg, data_dir, Arc::new(SystemClock), store_threads(&plan))
            .map_err(|e| e.to_string())?,
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "cannot listen on {listen}: the address is in use (another `inlet dev`?); pick another with --listen 127.0.0.1:PORT (make dev LISTEN=127.0.0.1:PORT)"
            ),
            _ => format!("cannot listen on {listen}: {e}"),
        })?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // One line on stdout a script can wait for. A closed stdout must not stop the stack,
    // so write errors are ignored rather than panicking like println! would.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "inlet dev listening on http://{addr} (data in {})",
            data_dir.display()
        );
        for (id, source) in &stack.config.sources {
            let _ = writeln!(out, "  POST http://{addr}/webhooks/{id}");
            if let Some(p) = &source.poll {
                let _ = writeln!(out, "  poll {id}: {} every {:?}", p.kind.name(), p.every);
            }
            for c in &source.checks {
                let _ = writeln!(
                    out,
                    "  check {id}/{}: on {:?}, expect {:?} within {:?}, then poll {}",
                    c.name, c.on, c.expect, c.after, c.poll
                );
            }
        }
        let _ = out.flush();
    }
    let (tx, rx) = watch::channel(false);
    let delivery = plan.map(|p| p.delivery);
    let worker = server::spawn_worker_thread(stack.clone(), rx.clone(), delivery)
        .map_err(|e| format!("cannot start the worker thread: {e}"))?;
    let polls = tokio::spawn(crate::poll::schedules(stack.clone(), rx.clone()));
    let checks = tokio::spawn(crate::poll::checks(stack.clone(), rx.clone()));
    let sweeps = tokio::spawn(sweep_blobs(stack.clone(), rx.clone()));
    let http = tokio::spawn(server::serve(stack.clone(), listener, rx));
    let _ = tokio::signal::ctrl_c().await;
    let _ = tx.send(true);
    let _ = worker.await;
    let _ = polls.await;
    let _ = checks.await;
    let _ = sweeps.await;
    // How well writes were grouped: what the load test and a profile read.
    tracing::info!(
        ledger_writes = stack.store.writes(),
        ledger_commits = stack.store.commits(),
        queue_writes = stack.queues.writes(),
        queue_commits = stack.queues.commits(),
        "store writes and their group commits"
    );
    match http.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("http server: {e}")),
        Err(e) => Err(format!("http server task: {e}")),
    }
}

/// Where the store's threads go under `plan`: the queues' writer beside the webhooks (a
/// webhook's answer waits for its commit), the rest beside the worker.
fn store_threads(plan: &Option<CpuPlan>) -> StoreThreads {
    let Some(plan) = plan else {
        return StoreThreads::default();
    };
    let place = |writer: Vec<usize>, checkpointer: Vec<usize>| -> Option<ThreadStart> {
        Some(Arc::new(move |thread: StoreThread| {
            let cpus = match thread {
                StoreThread::Writer => &writer,
                StoreThread::Checkpointer => &checkpointer,
            };
            if let Err(e) = placement::pin_current_thread(cpus) {
                tracing::warn!(error = %e, ?thread, ?cpus, "a store thread runs on every CPU");
            }
        }))
    };
    StoreThreads {
        ledger: place(plan.delivery.clone(), plan.delivery.clone()),
        queues: place(plan.ingest.clone(), plan.delivery.clone()),
    }
}

/// The blob folder's retention: swept at start, then every hour, until `stop`.
async fn sweep_blobs(stack: Arc<LocalStack>, mut stop: watch::Receiver<bool>) {
    loop {
        match stack.sweep_blobs() {
            Ok((0, 0)) => {}
            Ok((bodies, requests)) => {
                tracing::info!(bodies, requests, "blobs past their retention removed")
            }
            Err(e) => tracing::warn!(error = %e, "blob retention sweep failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}
