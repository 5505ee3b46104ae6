//! `inlet-load` against a real `inlet dev` (debug build, briefly): every acknowledged event
//! is dispatched exactly once, and the generator says so and exits 0. Throughput is never
//! asserted here; `make load` measures it (docs/performance.md).

use std::path::Path;
use std::process::Command;

use crate::cli::Dev;

const INLET_LOAD: &str = env!("CARGO_BIN_EXE_inlet-load");

/// The dev config with its store and JSONL file in `dir`, everything else as `make dev` runs.
fn dev_config_in(dir: &Path) -> std::path::PathBuf {
    let text = crate::pipeline::dev_config_text(dir);
    let path = dir.join("inlet.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn load_generator_finds_every_acknowledged_event_dispatched_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dev_config_in(dir.path());
    let dev = Dev::start(&config);
    let out = Command::new(INLET_LOAD)
        .arg("--config")
        .arg(&config)
        .args(["--target", &dev.base, "--source", "stripe"])
        .args(["--connections", "2", "--requests", "200", "--json"])
        .args(["--drain-timeout", "60s"])
        .arg("--server-pid")
        .arg(dev.child.id().to_string())
        .output()
        .expect("run inlet-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inlet-load failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report in {stdout}"));
    assert_eq!(
        report["statuses"],
        serde_json::json!({"200": 200}),
        "{stdout}"
    );
    assert_eq!(report["acknowledged"], 200, "{stdout}");
    assert_eq!(report["dispatched"], 200, "{stdout}");
    assert_eq!(report["lost"], 0, "{stdout}");
    assert_eq!(report["doubled"], 0, "{stdout}");
    assert!(
        stdout.contains("acknowledged 200, dispatched 200, lost 0, doubled 0"),
        "{stdout}"
    );
    // The backlog as sampled while the load ran: ends at the last answer, with every
    // acknowledged event counted and no more dispatched than acknowledged.
    let samples = report["backlog"].as_array().expect("backlog samples");
    let last = samples.last().expect("at least the last answer's sample");
    assert_eq!(last["acknowledged"], 200, "{stdout}");
    for s in samples {
        let (a, d) = (s["acknowledged"].as_u64(), s["dispatched"].as_u64());
        assert!(d <= a, "dispatched before acknowledged? {s}");
    }
    let (p99, p999) = (report["p99_ms"].as_f64(), report["p999_ms"].as_f64());
    assert!(p999 >= p99 && p999.is_some(), "{stdout}");
    assert!(stdout.contains("backlog each second:"), "{stdout}");
    // Where inlet dev's CPU went, by its threads' names: the runs' own profile. The
    // webhooks' runtime threads answered every request, so they cannot be missing.
    let threads = report["server_threads"].as_array().expect("server_threads");
    assert!(
        threads.iter().any(
            |t| t["name"] == "tokio-rt-worker" && t["micros_per_request"].as_f64() >= Some(1.0)
        ),
        "{stdout}"
    );
    let busy = report["cpu_busy"].as_array().expect("cpu_busy");
    assert!(
        !busy.is_empty()
            && busy
                .iter()
                .all(|f| (0.0..=1.0).contains(&f.as_f64().unwrap_or(-1.0))),
        "{stdout}"
    );
    assert!(
        stdout.contains("inlet dev CPU per request by thread (µs): "),
        "{stdout}"
    );
}

/// The check is real: events acknowledged but never written where the generator looks (a
/// JSONL file no worker writes) are reported lost, and the run fails.
#[test]
fn load_generator_fails_when_acknowledged_events_are_not_dispatched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dev_config_in(dir.path());
    let dev = Dev::start(&config);
    let out = Command::new(INLET_LOAD)
        .arg("--config")
        .arg(&config)
        .args(["--target", &dev.base, "--source", "stripe"])
        .args(["--connections", "1", "--requests", "5"])
        .args(["--drain-timeout", "1s"])
        .arg("--events-file")
        .arg(dir.path().join("nobody-writes-here.jsonl"))
        .output()
        .expect("run inlet-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("acknowledged 5, dispatched 0, lost 5, doubled 0"),
        "{stdout}"
    );
}
