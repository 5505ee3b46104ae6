//! The real `inlet` binary: `check`, `sign`, `events`, and `inlet dev` killed with SIGKILL
//! after it acknowledged events, then restarted: every acknowledged event is dispatched
//! exactly once.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use inlet::ports::{Clock, SystemClock};

use crate::pipeline::{jsonl_keys, sample_body, signed_headers, DEV_CONFIG};

const INLET: &str = env!("CARGO_BIN_EXE_inlet");

/// The dev config with its files in `dir`; short visibility and lease so a killed worker's
/// message comes back within seconds of real time.
pub(crate) fn write_config(dir: &Path) -> PathBuf {
    let text = crate::pipeline::dev_config_text(dir)
        .replace("lease_seconds = 60", "lease_seconds = 1")
        .replace(
            "visibility_timeout_seconds = 180",
            "visibility_timeout_seconds = 2",
        );
    let path = dir.join("inlet.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

pub(crate) fn inlet(args: &[&str]) -> std::process::Output {
    Command::new(INLET).args(args).output().expect("run inlet")
}

pub(crate) struct Dev {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Dev {
    pub(crate) fn start(config: &Path) -> Self {
        Self::spawn(Command::new(INLET), config)
    }

    /// `inlet dev` on `config` and a free port, run by `cmd`: the binary with an environment of
    /// its own, or a wrapper that execs it with the arguments after its own.
    pub(crate) fn spawn(mut cmd: Command, config: &Path) -> Self {
        let child = cmd
            .args(["dev", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn inlet dev");
        Self::from_child(child)
    }

    /// A spawned `inlet dev` (stdout piped), once its banner names the address it serves.
    pub(crate) fn from_child(mut child: Child) -> Self {
        let stdout = child.stdout.take().expect("stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read banner");
        let base = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        Self { child, base }
    }

    pub(crate) fn kill(mut self) {
        // SIGKILL: no chance to flush or finish anything.
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn post(
    base: &str,
    cfg: &inlet::config::Config,
    source: &str,
    body: &[u8],
) -> (u16, String) {
    let headers = signed_headers(
        cfg,
        source,
        body,
        SystemClock.now_ms(),
        &uuid::Uuid::new_v4().to_string(),
    );
    let mut req = reqwest::Client::new()
        .post(format!("{base}/webhooks/{source}"))
        .body(body.to_vec());
    for (k, v) in headers.iter() {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("post");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

pub(crate) fn key_of(answer: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(answer).expect("json answer");
    v["dedupe_key"].as_str().expect("dedupe_key").to_string()
}

async fn wait_for_keys(jsonl: &Path, want: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while jsonl_keys(jsonl).len() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {want} events dispatched",
            jsonl_keys(jsonl).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn killing_inlet_dev_after_acknowledgement_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path());
    let cfg = inlet::config::load_file(&config_path, &|_: &str| None).expect("config");
    let jsonl = dir.path().join("events.jsonl");
    let mut acknowledged = Vec::new();

    // Three rounds: acknowledge a burst, SIGKILL at once (the worker is mid-batch or idle),
    // restart. Every source takes part.
    for round in 0..3u64 {
        let dev = Dev::start(&config_path);
        for n in 0..10u64 {
            let source = crate::pipeline::SOURCES[(n % 5) as usize];
            let (status, answer) = post(
                &dev.base,
                &cfg,
                source,
                &sample_body(source, round * 100 + n),
            )
            .await;
            assert_eq!(status, 200, "{source}: {answer}");
            acknowledged.push(key_of(&answer));
        }
        dev.kill();
    }
    let dev = Dev::start(&config_path);
    wait_for_keys(&jsonl, acknowledged.len()).await;
    let mut written = jsonl_keys(&jsonl);
    written.sort();
    acknowledged.sort();
    assert_eq!(
        written, acknowledged,
        "every acknowledged event exactly once"
    );
    drop(dev);
}

/// The nice value of each of `pid`'s threads named `comm`.
fn thread_nices(pid: u32, comm: &str) -> Vec<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            (name.trim() == comm).then_some(())?;
            inlet_cli::server::own_nice(&std::fs::read_to_string(dir.join("stat")).ok()?)
        })
        .collect()
}

#[tokio::test]
async fn inlet_devs_worker_thread_runs_below_the_priority_of_the_threads_answering_webhooks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path());
    let dev = Dev::start(&config_path);
    let pid = dev.child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let main = inlet_cli::server::own_nice(&stat).expect("the process's nice value");
    let want = (main + 5).min(19);
    crate::pipeline::wait_until(|| async { thread_nices(pid, "inlet-worker") == [want] }).await;
    let webhooks = thread_nices(pid, "tokio-rt-worker");
    assert!(
        !webhooks.is_empty() && webhooks.iter().all(|&n| n == main),
        "{webhooks:?}"
    );

    // And it works: an event posted is dispatched, the JSONL write on the worker's own
    // blocking thread, which has the worker's priority.
    let cfg = inlet::config::load_file(&config_path, &|_: &str| None).expect("config");
    let (status, answer) = post(&dev.base, &cfg, "stripe", &sample_body("stripe", 7)).await;
    assert_eq!(status, 200, "{answer}");
    wait_for_keys(&dir.path().join("events.jsonl"), 1).await;
    let io = thread_nices(pid, "inlet-worker-io");
    assert!(!io.is_empty() && io.iter().all(|&n| n == want), "{io:?}");
    assert!(thread_nices(pid, "tokio-rt-worker")
        .iter()
        .all(|&n| n == main));
}

/// The CPUs each of `pid`'s threads may run on, by thread name (as the kernel keeps it).
fn thread_cpus(pid: u32) -> Vec<(String, Vec<usize>)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    let mut threads: Vec<_> = tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            let list = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
            Some((
                name.trim().to_string(),
                inlet_cli::placement::parse_cpu_list(list)?,
            ))
        })
        .collect();
    threads.sort();
    threads
}

#[tokio::test]
async fn inlet_dev_keeps_a_webhooks_path_on_one_half_of_the_cpus_and_the_worker_on_the_other() {
    let allowed = inlet_cli::placement::allowed_cpus().expect("this process's CPUs");
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path());
    let dev = Dev::start(&config_path);
    let pid = dev.child.id();
    // The worker's blocking thread starts with the first JSONL write.
    let cfg = inlet::config::load_file(&config_path, &|_: &str| None).expect("config");
    let (status, answer) = post(&dev.base, &cfg, "stripe", &sample_body("stripe", 8)).await;
    assert_eq!(status, 200, "{answer}");
    wait_for_keys(&dir.path().join("events.jsonl"), 1).await;

    let threads = thread_cpus(pid);
    let cpus_of = |prefix: &str| -> Vec<&Vec<usize>> {
        let found: Vec<_> = threads
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, cpus)| cpus)
            .collect();
        assert!(!found.is_empty(), "no thread {prefix}* in {threads:?}");
        found
    };
    let Some(plan) = inlet_cli::placement::CpuPlan::split(&allowed) else {
        // One CPU: nothing to place, every thread keeps it.
        assert!(
            threads.iter().all(|(_, cpus)| *cpus == allowed),
            "{threads:?}"
        );
        return;
    };
    for ingest in ["tokio-rt-worker", "queues.db-writ"] {
        assert!(
            cpus_of(ingest).iter().all(|c| **c == plan.ingest),
            "{ingest}: {threads:?}"
        );
    }
    for delivery in [
        "inlet-worker",
        "inlet.db-writer",
        "inlet.db-checkp",
        "queues.db-check",
    ] {
        assert!(
            cpus_of(delivery).iter().all(|c| **c == plan.delivery),
            "{delivery}: {threads:?}"
        );
    }
    drop(dev);

    // `off` (here from the environment, as a service file would set it): every thread keeps
    // every CPU the process may use.
    let mut off = Command::new(INLET);
    off.env("INLET_CPU_PLACEMENT", "off");
    let dev = Dev::spawn(off, &config_path);
    let threads = thread_cpus(dev.child.id());
    assert!(
        threads
            .iter()
            .any(|(name, _)| name.starts_with("queues.db-writ")),
        "{threads:?}"
    );
    assert!(
        threads.iter().all(|(_, cpus)| *cpus == allowed),
        "{threads:?}"
    );
}

#[tokio::test]
async fn events_shows_dispatched_duplicate_and_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path());
    let cfg = inlet::config::load_file(&config_path, &|_: &str| None).expect("config");
    let jsonl = dir.path().join("events.jsonl");
    let dev = Dev::start(&config_path);
    let body = sample_body("stripe", 9);
    let headers = signed_headers(&cfg, "stripe", &body, SystemClock.now_ms(), "d");
    for _ in 0..2 {
        let mut req = reqwest::Client::new()
            .post(format!("{}/webhooks/stripe", dev.base))
            .body(body.clone());
        for (k, v) in headers.iter() {
            req = req.header(k, v);
        }
        assert_eq!(req.send().await.expect("post").status().as_u16(), 200);
    }
    let mut tampered = body.clone();
    tampered.push(b' ');
    let mut req = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", dev.base))
        .body(tampered);
    for (k, v) in headers.iter() {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.expect("post").status().as_u16(), 401);
    wait_for_keys(&jsonl, 1).await;

    // Wait until the worker has seen the second delivery too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let statuses = loop {
        let out = inlet(&[
            "events",
            "--json",
            "--config",
            config_path.to_str().expect("utf8"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The status, and its reason when there is one (`inlet events` shows them so).
        let statuses: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                let status = v["status"].as_str().expect("status");
                match v["reason"].as_str().expect("reason") {
                    "" => status.to_string(),
                    reason => format!("{status} ({reason})"),
                }
            })
            .collect();
        if statuses.iter().any(|s| s == "duplicate") || tokio::time::Instant::now() > deadline {
            break statuses;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(statuses.contains(&"dispatched".to_string()), "{statuses:?}");
    assert!(statuses.contains(&"duplicate".to_string()), "{statuses:?}");
    assert!(
        statuses.contains(&"refused (signature_mismatch)".to_string()),
        "{statuses:?}"
    );
    assert_eq!(jsonl_keys(&jsonl).len(), 1);
}

/// `inlet dev` with its stderr read line by line on a thread, and a signed webhook posted to
/// it: the dedupe key of the accepted event, and the first log line `is_verified` picks
/// (the "verified" line of that event).
async fn dev_log_line_of_a_webhook(
    args: &[&str],
    envs: &[(&str, &str)],
    is_verified: impl Fn(&str) -> bool,
) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path());
    let cfg = inlet::config::load_file(&config_path, &|_: &str| None).expect("config");
    let mut child = Command::new(INLET)
        .args(["dev", "--config"])
        .arg(&config_path)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("INLET_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn inlet dev");
    let stderr = child.stderr.take().expect("stderr");
    let dev = Dev::from_child(child);
    let (lines, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let (status, answer) = post(&dev.base, &cfg, "stripe", &sample_body("stripe", 31)).await;
    assert_eq!(status, 200, "{answer}");
    let key = key_of(&answer);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a log line naming the verified event")
            .expect("a line of text");
        if is_verified(&line) {
            return (key, line);
        }
    }
}

/// `inlet dev`'s log on stderr into a pipe: one JSON object per line, each event's fields at
/// the top level beside `timestamp`, `level` and `message`, as CloudWatch Logs Insights
/// reads them; the same with `--log-format json` or `INLET_LOG_FORMAT=json`.
#[tokio::test]
async fn log_lines_carry_their_fields_at_the_top_level() {
    let json_verified = |line: &str| {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        v["message"] == "verified"
    };
    for (args, envs) in [
        (&[][..], &[][..]),
        (&["--log-format", "json"][..], &[][..]),
        (&[][..], &[("INLET_LOG_FORMAT", "json")][..]),
    ] {
        let (key, line) = dev_log_line_of_a_webhook(args, envs, json_verified).await;
        let verified: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(verified["source"], "stripe", "{verified}");
        assert_eq!(verified["dedupe_key"], key.as_str(), "{verified}");
        assert_eq!(verified["level"], "INFO", "{verified}");
        assert!(verified["timestamp"].is_string(), "{verified}");
        assert!(verified.get("fields").is_none(), "{verified}");
    }
}

/// Asked for text (as on a terminal), `inlet dev` prints readable lines: level, message,
/// then the fields as `key=value`, and no JSON.
#[tokio::test]
async fn log_lines_are_text_when_asked() {
    for (args, envs) in [
        (&["--log-format", "text"][..], &[][..]),
        (&[][..], &[("INLET_LOG_FORMAT", "text")][..]),
    ] {
        let (key, line) =
            dev_log_line_of_a_webhook(args, envs, |line| line.contains(" verified ")).await;
        assert!(
            serde_json::from_str::<serde_json::Value>(&line).is_err(),
            "{line}"
        );
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains(" source=stripe "), "{line}");
        assert!(line.contains(&format!("dedupe_key={key}")), "{line}");
    }
}

#[test]
fn check_accepts_the_example_and_names_the_broken_field() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/dev/inlet.toml");
    let ok = inlet(&["check", "--config", example]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("source stripe"));
    assert!(
        String::from_utf8_lossy(&ok.stdout)
            .contains("retry: 5 attempts, backoff 1s doubling to 5m"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        DEV_CONFIG.replace("id = \"file\"", "id = \"files\""),
    )
    .expect("write");
    let bad = inlet(&["check", "--config", broken.to_str().expect("utf8")]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("routes[0].targets[0]"), "{err}");
}

#[test]
fn sign_prints_a_request_that_verifies() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/dev/inlet.toml");
    for source in crate::pipeline::SOURCES {
        let out = inlet(&["sign", "--config", example, "--source", source]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let req: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(req["path"], format!("/webhooks/{source}"));
        let cfg = inlet::config::load_file(Path::new(example), &|_: &str| None).expect("config");
        let headers: inlet::request::Headers = req["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("str").to_string()))
            .collect();
        let body = req["body"].as_str().expect("body").as_bytes().to_vec();
        let inbound = inlet::request::InboundRequest {
            method: "POST",
            headers: &headers,
            query: &[],
            body: &body,
        };
        let provider = &cfg.source(source).expect("source").provider;
        provider
            .verify(&inbound, SystemClock.now_ms())
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        provider
            .extract(&inbound)
            .unwrap_or_else(|e| panic!("{source}: {e}"));
    }
}

/// One vector of `shared/testdata/vectors.json`.
fn vector(id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/vectors.json"
    ))
    .expect("vectors");
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).expect("vectors json");
    all.into_iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no vector {id}"))
}

/// `inlet verify` on a vector: its body in a file, its headers as flags, extra args after.
fn verify_vector(v: &serde_json::Value, dir: &Path, extra: &[&str]) -> (i32, String) {
    let body = dir.join("body");
    std::fs::write(&body, v["body"].as_str().expect("body")).expect("write body");
    let mut cmd = Command::new(INLET);
    cmd.args([
        "verify",
        "--provider",
        v["provider"].as_str().expect("provider"),
    ]);
    cmd.arg("--body-file").arg(&body);
    for (name, value) in v["headers"].as_object().expect("headers") {
        cmd.arg("--header")
            .arg(format!("{name}: {}", value.as_str().expect("header")));
    }
    cmd.args(extra);
    let out = cmd.output().expect("run inlet verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().expect("exit code"), text)
}

#[test]
fn verify_gives_the_verdict_and_the_precise_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = vector("stripe-valid");
    let secret = v["secret"].as_str().expect("secret");
    let now = v["now"].as_i64().expect("now").to_string();

    let (code, out) = verify_vector(&v, dir.path(), &["--secret", secret, "--now", &now]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: VALID"), "{out}");
    assert!(out.contains("\"event_id\":\"evt_test_webhook\""), "{out}");

    // Rotation: the second of two keys matches, and is named.
    let (code, out) = verify_vector(
        &v,
        dir.path(),
        &["--secret", "whsec_old", "--secret", secret, "--now", &now],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("matched key: key2"), "{out}");

    let (code, out) = verify_vector(
        &v,
        dir.path(),
        &["--secret", "whsec_a", "--secret", "whsec_b", "--now", &now],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("matched none of 2 live key(s)"), "{out}");

    // 400 s after the signature: past Stripe's 300 s tolerance by the amount we say.
    let late = (v["timestamp"].as_i64().expect("ts") + 400).to_string();
    let (code, out) = verify_vector(&v, dir.path(), &["--secret", secret, "--now", &late]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("timestamp_too_old") && out.contains("400s past, tolerance 300s"),
        "{out}"
    );

    let mut unsigned = v.clone();
    unsigned["headers"] = serde_json::json!({});
    let (code, out) = verify_vector(&unsigned, dir.path(), &["--secret", secret]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no stripe-signature"), "{out}");

    // Usage errors are 2: no key, an unknown provider, a header without a colon.
    let (code, out) = verify_vector(&v, dir.path(), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("at least one secret"), "{out}");
    let mut unknown = v.clone();
    unknown["provider"] = "nope".into();
    let (code, out) = verify_vector(&unknown, dir.path(), &["--secret", secret]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown provider"), "{out}");
    assert_eq!(
        verify_vector(&v, dir.path(), &["--secret", secret, "--header", "nocolon"]).0,
        2
    );
}

#[test]
fn verify_uses_a_configured_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let cfg = inlet::config::load_file(&config, &|_: &str| None).expect("config");
    let body = sample_body("github", 7);
    let headers = signed_headers(&cfg, "github", &body, SystemClock.now_ms(), "delivery-7");
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, &body).expect("write body");
    let run = |body_file: &Path| {
        let mut cmd = Command::new(INLET);
        cmd.args(["verify", "--source", "github", "--config"])
            .arg(&config)
            .arg("--body-file")
            .arg(body_file);
        for (name, value) in headers.iter() {
            cmd.arg("--header").arg(format!("{name}: {value}"));
        }
        cmd.output().expect("run inlet verify")
    };
    let out = run(&body_file);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut tampered = body.clone();
    tampered.push(b' ');
    std::fs::write(&body_file, tampered).expect("tamper");
    let out = run(&body_file);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("signature_mismatch"));
}

/// Every provider vector through the real binary, the way someone holding only the
/// provider's docs would call it: the verdict (exit code) must be the vector's.
#[test]
fn verify_gives_every_provider_vector_its_expected_verdict() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata/vectors.json"
    ))
    .expect("vectors");
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).expect("json");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for v in &vectors {
        let mut v = v.clone();
        // The vector's own provider name: its spelling is accepted as written.
        let provider = v["provider"].as_str().expect("provider").to_string();
        if let Some(ct) = v["content_type"].as_str() {
            v["headers"]["Content-Type"] = ct.into();
        }
        // The vector's clock; without one, its own signed timestamp, else 2026-01-01.
        let now = v["now"]
            .as_i64()
            .or_else(|| v["timestamp"].as_i64())
            .unwrap_or(1_767_225_600)
            .to_string();
        let mut args: Vec<String> = vec!["--now".into(), now];
        for key in ["secret", "public_key"] {
            if let Some(k) = v[key].as_str() {
                args.extend(["--secret".into(), k.into()]);
            }
        }
        if let Some(url) = v["url"].as_str() {
            // The request carries the URL's query; the configured URL is the one registered
            // with the provider, without the `bodySHA256` Twilio appends for JSON bodies.
            let configured = url.split_once("&bodySHA256=").map_or(url, |(c, _)| c);
            args.extend(["--url".into(), configured.into()]);
            if let Some((_, query)) = url.split_once('?') {
                for pair in query.split('&') {
                    args.extend(["--query".into(), pair.into()]);
                }
            }
        }
        if let Some(method) = v["method"].as_str() {
            args.extend(["--method".into(), method.into()]);
        }
        if provider == "paypal" {
            let cert_url = v["headers"]["PAYPAL-CERT-URL"].as_str().expect("cert url");
            let pinned = serde_json::json!({cert_url: v["cert_pem"]});
            args.extend([
                "--option".into(),
                format!(
                    "webhook_id={}",
                    v["webhook_id"].as_str().expect("webhook id")
                ),
                "--option".into(),
                format!("certificates={pinned}"),
                "--option".into(),
                "fetch_certificates=false".into(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = verify_vector(&v, dir.path(), &args);
        let want = if v["expected"]["valid"].as_bool().expect("valid") {
            0
        } else {
            1
        };
        assert_eq!(code, want, "{}: {out}", v["id"]);
        checked += 1;
    }
    assert_eq!(checked, vectors.len());
}

/// A target that is down: every delivery fails (retryably) with the same error.
struct Down;

#[async_trait::async_trait]
impl inlet::targets::Target for Down {
    fn id(&self) -> &str {
        "file"
    }
    async fn deliver(
        &self,
        events: &[inlet::targets::Outgoing<'_>],
    ) -> Vec<Result<(), inlet::targets::DispatchError>> {
        events
            .iter()
            .map(|o| o.envelope)
            .map(|_| {
                Err(inlet::targets::DispatchError::Retryable(
                    "connection refused (test target down)".into(),
                ))
            })
            .collect()
    }
}

#[tokio::test]
async fn dead_letters_are_listed_with_their_reason_and_replayed_once_the_target_is_back() {
    use inlet::ports::Queue;

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path());
    let text = std::fs::read_to_string(&config_path)
        .expect("read config")
        .replace("max_receive_count = 5", "max_receive_count = 2");
    std::fs::write(&config_path, text).expect("write config");
    let cfg = inlet::config::load_file(&config_path, &|_: &str| None).expect("config");
    let config = config_path.to_str().expect("utf8");
    let clock = std::sync::Arc::new(SystemClock);
    let stack =
        inlet::local::LocalStack::open(cfg.clone(), &dir.path().join("data"), clock.clone())
            .expect("stack");

    // Four events accepted; the worker's target is down for every receive, so each goes to
    // the DLQ after max_receive_count (2) receives, its error in the ledger.
    let mut targets: std::collections::BTreeMap<
        String,
        std::sync::Arc<dyn inlet::targets::Target>,
    > = Default::default();
    targets.insert("file".into(), std::sync::Arc::new(Down));
    let down = inlet::worker::Worker::new(
        stack.config.clone(),
        std::sync::Arc::new(stack.store.ledger()),
        targets,
        clock.clone(),
    );
    let mut keys = Vec::new();
    for (i, source) in ["stripe", "github", "stripe", "svix"].iter().enumerate() {
        let body = sample_body(source, 700 + i as u64);
        let resp = stack
            .ingest
            .handle(inlet::ingest::WebhookRequest {
                method: "POST".into(),
                path: format!("/webhooks/{source}"),
                headers: signed_headers(&cfg, source, &body, clock.now_ms(), "d"),
                body,
                source_ip: Some([198, 51, 100, 4].into()),
                ..Default::default()
            })
            .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        keys.push(key_of(&resp.body));
    }
    while stack.dlq.depth().await.expect("depth") < Some(4) {
        let msgs = stack
            .queue
            .receive(10, Duration::ZERO, Duration::ZERO)
            .await
            .expect("receive");
        let records: Vec<inlet::ports::WorkerRecord> = msgs
            .iter()
            .map(|m| inlet::ports::WorkerRecord {
                message_id: m.message_id.clone(),
                body: m.body.clone(),
                receive_count: m.receive_count,
                receipt_handle: Some(m.receipt_handle.clone()),
                group_id: m.group_id.clone(),
            })
            .collect();
        down.process(&records).await;
    }

    let out = inlet(&["dlq", "list", "--json", "--config", config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in &rows {
        assert_eq!(row["attempts"], 2, "{row}");
        assert!(
            row["reason"]
                .as_str()
                .unwrap_or("")
                .contains("test target down"),
            "{row}"
        );
    }
    let out = inlet(&["dlq", "show", "--config", config, &keys[1]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"provider\": \"github\""));

    // The event's story says where it is and how to bring it back.
    let out = inlet(&["events", "show", &keys[1], "--config", config]);
    let story = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        story.contains("dead (") && story.contains("test target down"),
        "{story}"
    );
    assert!(
        story.contains("in the DLQ as message")
            && story.contains(&format!("inlet replay --ids {}", keys[1])),
        "{story}"
    );
    let out = inlet(&["events", "show", &keys[1], "--json", "--config", config]);
    let story: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(story["event"]["dedupe_key"], keys[1].as_str());
    assert_eq!(story["event"]["attempts"], 2);
    assert!(story["dead_letter"].is_string(), "{story}");
    assert_eq!(
        story["event"]["caller_ip"], "198.51.100.4",
        "who sent it, as ingest saw the connection"
    );

    // A dry run moves nothing; then only stripe's two go back, and are dispatched once.
    let out = inlet(&[
        "replay",
        "--config",
        config,
        "--source",
        "stripe",
        "--dry-run",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 of 4 dead letter(s) would be replayed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = inlet(&["replay", "--config", config, "--source", "stripe"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replayed 2 of 4"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The target is back: the real worker (JSONL file) takes what was replayed.
    while !stack
        .work_once(Duration::ZERO)
        .await
        .expect("work")
        .outcomes
        .is_empty()
    {}
    let jsonl = dir.path().join("events.jsonl");
    let mut want = vec![keys[0].clone(), keys[2].clone()];
    want.sort();
    let mut got = jsonl_keys(&jsonl);
    got.sort();
    assert_eq!(got, want);
    // The rest by id, then everything is out of the DLQ and dispatched exactly once.
    let ids = format!("{},{}", keys[1], keys[3]);
    let out = inlet(&["replay", "--config", config, "--ids", &ids]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    while !stack
        .work_once(Duration::ZERO)
        .await
        .expect("work")
        .outcomes
        .is_empty()
    {}
    assert_eq!(stack.dlq.depth().await.expect("depth"), Some(0));
    let mut got = jsonl_keys(&jsonl);
    got.sort();
    keys.sort();
    assert_eq!(got, keys);
    // A copy of a dispatched event in the DLQ: replayed, it is a duplicate; replayed with
    // --force, it is dispatched again and the trail says so.
    let done_body = {
        let text = std::fs::read_to_string(&jsonl).expect("jsonl");
        let mut e: inlet::envelope::Envelope =
            serde_json::from_str(text.lines().next().expect("a line")).expect("envelope");
        e.replay = None;
        serde_json::to_string(&e).expect("json")
    };
    let done_key = inlet::envelope::Envelope::from_json(&done_body)
        .expect("envelope")
        .dedupe_key;
    let outcomes_after = |force: bool| {
        let stack = &stack;
        let body = done_body.clone();
        let key = done_key.clone();
        async move {
            stack
                .dlq
                .send(&inlet::ports::OutboundMessage::new(body))
                .await
                .expect("send");
            let mut args = vec!["replay", "--config", config, "--ids", key.as_str()];
            if force {
                args.push("--force");
            }
            let out = inlet(&args);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stack
                .work_once(Duration::ZERO)
                .await
                .expect("work")
                .outcomes
                .into_iter()
                .map(|(_, o)| o)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        outcomes_after(false).await,
        vec![inlet::worker::Outcome::Duplicate {
            dedupe_key: done_key.clone()
        }]
    );
    assert_eq!(
        outcomes_after(true).await,
        vec![inlet::worker::Outcome::Dispatched {
            dedupe_key: done_key.clone()
        }]
    );
    let out = inlet(&["events", "--json", "--config", config]);
    let forced: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .filter(|v| {
            v["status"]
                .as_str()
                .unwrap_or("")
                .starts_with("forced_replay")
        })
        .collect();
    assert_eq!(forced.len(), 1, "{forced:?}");
    assert_eq!(forced[0]["dedupe_key"], done_key.as_str());

    let out = inlet(&["replay", "--config", config, "--since", "not a time"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}

/// `inlet replay` with its output captured, not a terminal: no progress bar, so no carriage
/// return in a log or a pipe; the summary alone.
#[tokio::test]
async fn replay_into_a_pipe_draws_no_progress_bar() {
    use inlet::ports::Queue;

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path());
    let cfg = inlet::config::load_file(&config_path, &|_: &str| None).expect("config");
    let clock = std::sync::Arc::new(SystemClock);
    let stack =
        inlet::local::LocalStack::open(cfg.clone(), &dir.path().join("data"), clock.clone())
            .expect("stack");
    // Three accepted events, moved from the main queue to the DLQ as they are.
    for n in 0..3 {
        let body = sample_body("stripe", 800 + n);
        let resp = stack
            .ingest
            .handle(inlet::ingest::WebhookRequest {
                method: "POST".into(),
                path: "/webhooks/stripe".into(),
                headers: signed_headers(&cfg, "stripe", &body, clock.now_ms(), "d"),
                body,
                ..Default::default()
            })
            .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    let queued = stack
        .queue
        .receive(10, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(queued.len(), 3);
    for m in &queued {
        stack
            .dlq
            .send(&inlet::ports::OutboundMessage::new(m.body.clone()))
            .await
            .expect("to the DLQ");
    }
    let config = config_path.to_str().expect("utf8");
    for args in [
        vec!["replay", "--config", config, "--dry-run"],
        vec!["replay", "--config", config],
    ] {
        let out = inlet(&args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(stdout.contains("3 dead letter(s)"), "{args:?}: {stdout}");
        assert!(
            !stderr.contains('\r'),
            "{args:?}: progress drawn into a pipe: {stderr:?}"
        );
        assert!(!stdout.contains('\r'), "{args:?}: {stdout:?}");
    }
    assert_eq!(stack.dlq.depth().await.expect("depth"), Some(0));
}

/// A config that uses every thing the template must grant: an `env:` webhook secret, an
/// `ssm:` poll key on a poll-only source, a `secretsmanager:` secret, an SQS target and
/// per-entity order.
const DEPLOY_CONFIG: &str = r#"
[settings]
lease_seconds = 60

[[sources]]
id = "stripe"
provider = "stripe"
secrets = ["env:STRIPE_WHSEC"]
order_by = "/data/object/customer"

[[sources]]
id = "tg"
provider = "telegram"
webhooks = false
[sources.poll]
kind = "telegram_updates"
every = "1m"
secrets = ["ssm:/inlet/tg-token"]

[[sources]]
id = "github"
provider = "github"
secrets = ["secretsmanager:inlet/keys#github"]

[[targets]]
id = "orders"
kind = "sqs"
queue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"

[[routes]]
sources = ["*"]
targets = ["orders"]
"#;

/// The overrides a deploy of DEPLOY_CONFIG needs, by parameter.
fn deploy_overrides() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PollSchedules", "\"tg=rate(1 minute)\""),
        (
            "TargetQueueArns",
            "arn:aws:sqs:eu-west-1:123456789012:orders",
        ),
        (
            "SsmParameterArns",
            "arn:aws:ssm:eu-west-1:123456789012:parameter/inlet/tg-token",
        ),
        (
            "SecretArns",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:inlet/keys-AbC123",
        ),
        ("QueueType", "fifo"),
        ("WebhookSecrets", "'{\"STRIPE_WHSEC\":\"whsec_x\"}'"),
    ]
}

fn template_path() -> String {
    format!("{}/../../template.yaml", env!("CARGO_MANIFEST_DIR"))
}

/// `inlet check --template` of `config` with the overrides (the config itself added as
/// InletConfig from the first run's output): exit code, stdout, stderr.
fn check_deploy(dir: &Path, config: &str, overrides: &[(&str, &str)]) -> (bool, String, String) {
    let path = dir.join("deploy.toml");
    std::fs::write(&path, config).expect("write config");
    let text = overrides
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = inlet(&[
        "check",
        "--config",
        path.to_str().expect("utf8"),
        "--template",
        &template_path(),
        "--parameter-overrides",
        &text,
        "--base-url",
        "https://abc.execute-api.eu-west-1.amazonaws.com/webhooks/",
    ]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_against_the_template_passes_a_complete_deploy_and_prints_its_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Without overrides: what to pass, and no error.
    let path = dir.path().join("deploy.toml");
    std::fs::write(&path, DEPLOY_CONFIG).expect("write");
    let out = inlet(&[
        "check",
        "--config",
        path.to_str().expect("utf8"),
        "--template",
        &template_path(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout.lines().last().expect("an overrides line");
    let inline = line
        .split("InletConfig='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no InletConfig in {line}"));
    let json: serde_json::Value = serde_json::from_str(inline).expect("InletConfig is JSON");
    assert_eq!(json["sources"][1]["poll"]["every"], "1m");
    assert!(
        line.contains("PollSchedules=\"tg=rate(1 minute)\"")
            || line.contains("PollSchedules='tg=rate(1 minute)'"),
        "{line}"
    );
    assert!(line.contains("QueueType=fifo"), "{line}");
    assert!(
        line.contains("TargetQueueArns=arn:aws:sqs:eu-west-1:123456789012:orders"),
        "{line}"
    );
    assert!(
        stderr.contains("SsmParameterArns") && stderr.contains("STRIPE_WHSEC"),
        "{stderr}"
    );
    // The same report as one JSON object, for a deploy script.
    let report = json_of(&inlet(&[
        "check",
        "--json",
        "--config",
        path.to_str().expect("utf8"),
        "--template",
        &template_path(),
    ]));
    assert_eq!(report["ok"], true);
    assert_eq!(report["parameter_overrides_line"], line);
    assert_eq!(report["parameter_overrides"]["QueueType"], "fifo");
    assert_eq!(report["webhook_urls"]["tg"], serde_json::Value::Null);
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("SsmParameterArns"), "{warnings}");

    // The whole deploy given: clean, and the URLs to register.
    let mut all = deploy_overrides();
    let quoted = format!("'{inline}'");
    all.push(("InletConfig", &quoted));
    let (ok, stdout, stderr) = check_deploy(dir.path(), DEPLOY_CONFIG, &all);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    assert!(
        stderr.contains("only its key names were checked"),
        "{stderr}"
    );
    assert!(
        stdout.contains("stripe: https://abc.execute-api.eu-west-1.amazonaws.com/webhooks/stripe"),
        "{stdout}"
    );
    assert!(stdout.contains("tg: poll only"), "{stdout}");
}

#[test]
fn check_against_the_template_names_the_field_and_the_parameter_of_each_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let without = |name: &str| -> Vec<(&'static str, &'static str)> {
        deploy_overrides()
            .into_iter()
            .filter(|(k, _)| *k != name)
            .collect()
    };
    let with = |name: &'static str, value: &'static str| {
        let mut o = without(name);
        o.push((name, value));
        o
    };
    let big = format!(
        "{DEPLOY_CONFIG}\n[[targets]]\nid = \"big\"\nkind = \"jsonl\"\npath = \"{}\"\n",
        "x".repeat(4100)
    );
    // (what, config, overrides, words one error must hold)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            "config too big",
            big,
            deploy_overrides(),
            &["InletConfig", "4096", "ssm:/name"],
        ),
        (
            "lease under the worker timeout",
            DEPLOY_CONFIG.replace("lease_seconds = 60", "lease_seconds = 20"),
            with("LeaseSeconds", "20"),
            &[
                "settings.lease_seconds",
                "WorkerTimeoutSeconds",
                "shorter than the worker timeout",
            ],
        ),
        (
            "an ingest deadline the ingest Lambda does not outlive",
            DEPLOY_CONFIG.replace(
                "lease_seconds = 60",
                "lease_seconds = 60\ningest_deadline = \"10s\"",
            ),
            deploy_overrides(),
            &[
                "settings.ingest_deadline (10s)",
                "IngestTimeoutSeconds (10 s)",
            ],
        ),
        (
            "config and parameter disagree",
            DEPLOY_CONFIG.to_string(),
            with("MaxReceiveCount", "9"),
            &["settings.max_receive_count = 5", "MaxReceiveCount=9"],
        ),
        (
            "source lease over the visibility",
            DEPLOY_CONFIG.replace("id = \"github\"", "id = \"github\"\nlease_seconds = 600"),
            deploy_overrides(),
            &["sources[2].lease_seconds", "QueueVisibilityTimeoutSeconds"],
        ),
        (
            "a poll source without its schedule",
            DEPLOY_CONFIG.to_string(),
            with("PollSchedules", "\"tg=rate(5 minutes)\""),
            &["sources[1].poll", "PollSchedules", "tg=rate(1 minute)"],
        ),
        (
            "a schedule of no poll source",
            DEPLOY_CONFIG.to_string(),
            with("PollSchedules", "\"tg=rate(1 minute),gone=rate(1 minute)\""),
            &["PollSchedules entry gone=rate(1 minute)"],
        ),
        (
            "an SQS target not granted",
            DEPLOY_CONFIG.to_string(),
            without("TargetQueueArns"),
            &["targets[0].queue_url", "TargetQueueArns"],
        ),
        (
            "an ssm: reference not granted",
            DEPLOY_CONFIG.to_string(),
            with(
                "SsmParameterArns",
                "arn:aws:ssm:eu-west-1:123456789012:parameter/inlet/other",
            ),
            &["sources[1].poll.secrets[0]", "SsmParameterArns"],
        ),
        (
            "a secretsmanager: reference not granted",
            DEPLOY_CONFIG.to_string(),
            with(
                "SecretArns",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:inlet/keys2-AbC123",
            ),
            &["sources[2].secrets[0]", "SecretArns"],
        ),
        (
            "order_by on a standard queue",
            DEPLOY_CONFIG.to_string(),
            with("QueueType", "standard"),
            &["sources[0].order_by", "QueueType=fifo"],
        ),
        (
            "an env: reference without its key",
            DEPLOY_CONFIG.to_string(),
            with("WebhookSecrets", "'{\"OTHER\":\"x\"}'"),
            &[
                "sources[0].secrets[0]",
                "WebhookSecrets has no key STRIPE_WHSEC",
            ],
        ),
        (
            "an override the template does not have",
            DEPLOY_CONFIG.to_string(),
            with("LeaseSecs", "60"),
            &["LeaseSecs", "no such parameter"],
        ),
        (
            "an override out of its range",
            DEPLOY_CONFIG.to_string(),
            with("WorkerMaxConcurrency", "1"),
            &["WorkerMaxConcurrency=1", "outside 2..1000"],
        ),
    ];
    for (what, config, overrides, want) in cases {
        let (ok, stdout, stderr) = check_deploy(dir.path(), &config, &overrides);
        assert!(!ok, "{what}: passed\n{stdout}\n{stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert!(
            errors.iter().any(|e| want.iter().all(|w| e.contains(w))),
            "{what}: no error naming {want:?} in\n{stderr}"
        );
    }
}

#[test]
fn check_reads_the_overrides_of_a_samconfig() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("deploy.toml");
    std::fs::write(
        &path,
        DEPLOY_CONFIG.replace("order_by = \"/data/object/customer\"\n", ""),
    )
    .expect("write");
    let samconfig = dir.path().join("samconfig.toml");
    std::fs::write(
        &samconfig,
        "version = 0.1\n[prod.deploy.parameters]\nparameter_overrides = [\"PollSchedules=tg=rate(2 minutes)\"]\n",
    )
    .expect("write");
    let out = inlet(&[
        "check",
        "--config",
        path.to_str().expect("utf8"),
        "--template",
        &template_path(),
        "--samconfig",
        samconfig.to_str().expect("utf8"),
        "--config-env",
        "prod",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("sources[1].poll (tg) has no entry tg=rate(1 minute) in PollSchedules"),
        "{stderr}"
    );
    // What samconfig gives counts as the whole deploy: the missing grants are errors too.
    assert!(stderr.contains("error: targets[0].queue_url"), "{stderr}");
}

/// A secret store that counts its reads: the Lambdas' start must refuse a one-machine config
/// before it reads any secret.
#[derive(Default)]
struct CountingStore(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl inlet::ports::SecretStore for CountingStore {
    async fn parameter(&self, name: &str) -> Result<String, inlet::ports::SecretStoreError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(inlet::ports::SecretStoreError::NotFound {
            reference: name.into(),
        })
    }
    async fn secret(&self, id: &str) -> Result<String, inlet::ports::SecretStoreError> {
        self.parameter(id).await
    }
}

/// The fields named on `error: FIELD: …` lines of `inlet check` (a field has no spaces).
fn error_fields(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .filter_map(|l| l.split_once(": ").map(|(field, _)| field.to_string()))
        .filter(|f| !f.contains(' '))
        .collect()
}

#[tokio::test]
async fn the_local_config_is_refused_by_check_and_by_a_lambda_start_for_the_same_fields() {
    let dev = format!("{}/../dev/inlet.toml", env!("CARGO_MANIFEST_DIR"));
    let out = inlet(&["check", "--config", &dev, "--template", &template_path()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let named = error_fields(&stderr);
    assert_eq!(
        named.first().map(String::as_str),
        Some("settings.environment"),
        "{stderr}"
    );
    let doc = inlet::config::ConfigDoc::parse(DEV_CONFIG, Some("toml")).expect("parses");
    let literals: Vec<(String, &str)> = doc
        .secret_fields()
        .into_iter()
        .filter(|(_, r)| r.starts_with("literal:"))
        .collect();
    assert!(literals.len() >= 5, "{literals:?}");
    for (field, reference) in &literals {
        assert!(named.contains(field), "{field} not named:\n{stderr}");
        let value = reference.trim_start_matches("literal:");
        assert!(
            !stdout.contains(value) && !stderr.contains(value),
            "the value of {field} was printed:\n{stdout}\n{stderr}"
        );
    }
    assert!(
        stderr.contains("is \"jsonl\"") && stderr.contains("the Lambdas refuse it at start"),
        "{stderr}"
    );

    // What a Lambda's init runs (`bootstrap::ingest`, `worker` and `poller` all load through
    // it), with INLET_CONFIG set to the same document.
    let store = CountingStore::default();
    let env = |name: &str| (name == "INLET_CONFIG").then(|| DEV_CONFIG.to_string());
    let err = inlet::bootstrap::load_config_from(&env, &store)
        .await
        .err()
        .expect("refused at start");
    let refused: Vec<String> = match &err {
        inlet::bootstrap::BootError::Config(e) => {
            e.problems().iter().map(|p| p.field.clone()).collect()
        }
        other => panic!("not a config error: {other}"),
    };
    assert_eq!(refused, named, "{err}");
    assert_eq!(store.0.load(std::sync::atomic::Ordering::SeqCst), 0);
    for (_, reference) in &literals {
        let value = reference.trim_start_matches("literal:");
        assert!(!err.to_string().contains(value), "{err}");
    }
}

#[test]
fn a_busy_port_is_named_with_the_way_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = inlet(&[
        "dev",
        "--config",
        config_path.to_str().expect("utf8"),
        "--listen",
        &addr,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot listen on {addr}: the address is in use"))
            && stderr.contains("--listen"),
        "{stderr}"
    );
}

#[test]
fn a_second_inlet_dev_on_the_same_store_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = write_config(dir.path());
    let first = Dev::start(&config_path);
    let out = inlet(&[
        "dev",
        "--config",
        config_path.to_str().expect("utf8"),
        "--listen",
        "127.0.0.1:0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("another `inlet dev` (pid {})", first.child.id())),
        "{stderr}"
    );
    // Killed, it leaves no lock behind: the next one starts.
    first.kill();
    let next = Dev::start(&config_path);
    assert!(next.base.starts_with("http://127.0.0.1:"), "{}", next.base);
}

#[test]
fn completions_cover_every_command_and_the_bash_script_parses() {
    let out = inlet(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout).into_owned();
    for word in [
        "events",
        "dlq",
        "replay",
        "--since",
        "--entity",
        "completions",
    ] {
        assert!(script.contains(word), "no {word} in the bash completions");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inlet.bash");
    std::fs::write(&path, &script).expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("bash");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let zsh = inlet(&["completions", "zsh"]);
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef inlet"));
    assert!(!inlet(&["completions", "tcsh"]).status.success());
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "inlet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn the_config_is_inlet_toml_here_else_inlet_config_else_an_error_that_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let run = |cwd: &Path, env: Option<&Path>, args: &[&str]| {
        let mut cmd = Command::new(INLET);
        cmd.args(args).current_dir(cwd).env_remove("INLET_CONFIG");
        if let Some(path) = env {
            cmd.env("INLET_CONFIG", path);
        }
        cmd.output().expect("run inlet")
    };

    let here = json_of(&run(dir.path(), None, &["check", "--json"]));
    assert_eq!(here["ok"], true);
    assert_eq!(here["config"], "inlet.toml");
    let ids: Vec<&str> = here["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"stripe") && ids.contains(&"paddle"),
        "{ids:?}"
    );
    let stripe = &here["sources"][ids.iter().position(|i| *i == "stripe").expect("stripe")];
    assert_eq!(stripe["webhook"], "POST /webhooks/stripe");
    assert!(stripe["retry"]["attempts"].as_u64().is_some(), "{stripe}");

    let by_env = json_of(&run(elsewhere.path(), Some(&config), &["check", "--json"]));
    assert_eq!(by_env["sources"], here["sources"]);
    // The local trail finds its store through the same default.
    let out = run(dir.path(), None, &["events", "--json"]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "a new, empty store: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for args in [&["check"][..], &["events"], &["dlq", "list"]] {
        let out = run(elsewhere.path(), None, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains("inlet.toml") && err.contains("INLET_CONFIG"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn schedules_json_gives_the_parameter_and_each_sources_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inlet.toml");
    std::fs::write(&path, DEPLOY_CONFIG).expect("config");
    let out = json_of(&inlet(&[
        "schedules",
        "--json",
        "--config",
        path.to_str().expect("utf8"),
    ]));
    assert_eq!(out["PollSchedules"], "tg=rate(1 minute)");
    assert_eq!(out["schedules"]["tg"], "rate(1 minute)");
}

#[test]
fn sign_type_makes_the_sample_that_type_or_says_why_it_cannot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let config = config.to_str().expect("utf8");
    let out = json_of(&inlet(&[
        "sign",
        "--config",
        config,
        "--source",
        "stripe",
        "--type",
        "charge.refunded",
    ]));
    let body: serde_json::Value =
        serde_json::from_str(out["body"].as_str().expect("body")).expect("json body");
    assert_eq!(body["type"], "charge.refunded");
    // GitHub names the event in a header its signature does not cover.
    let out = inlet(&[
        "sign", "--config", config, "--source", "github", "--type", "push",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("outside the body") && err.contains("--body"),
        "{err}"
    );
}
