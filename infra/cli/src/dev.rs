use std::path::Path;
use std::sync::Arc;

use inlet::config::Config;
use inlet::local::LocalStack;
use inlet::ports::SystemClock;
use inlet_cli::server;
use tokio::sync::watch;

/// The stack, until Ctrl-C. The caller has set up the logs.
pub async fn run(cfg: Config, listen: &str, data_dir: &Path) -> Result<(), String> {
    let stack = Arc::new(
        LocalStack::open(cfg, data_dir, Arc::new(SystemClock)).map_err(|e| e.to_string())?,
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
    let worker = tokio::spawn(server::worker_loop(stack.clone(), rx.clone()));
    let polls = tokio::spawn(crate::poll::schedules(stack.clone(), rx.clone()));
    let checks = tokio::spawn(crate::poll::checks(stack.clone(), rx.clone()));
    let http = tokio::spawn(server::serve(stack.clone(), listener, rx));
    let _ = tokio::signal::ctrl_c().await;
    let _ = tx.send(true);
    let _ = worker.await;
    let _ = polls.await;
    let _ = checks.await;
    // How well writes were grouped: what the load test and a profile read.
    tracing::info!(
        writes = stack.store.writes(),
        commits = stack.store.commits(),
        "store writes and their group commits"
    );
    match http.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("http server: {e}")),
        Err(e) => Err(format!("http server task: {e}")),
    }
}
