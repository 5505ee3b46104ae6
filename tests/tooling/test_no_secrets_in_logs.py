"""The log secret search of `make test` (infra/scripts/no-secrets-in-logs) catches a leak
in every form it looks for, and refuses to pass when there is nothing to search."""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "scripts" / "no-secrets-in-logs"
SECRET = "inlet-dev-github-secret"  # configured in infra/dev/inlet.toml


def run(log_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(log_dir), str(ROOT)], capture_output=True, text=True, timeout=120)


def write(log_dir: Path, line: str) -> None:
    log_dir.mkdir(exist_ok=True)
    (log_dir / "tests-1.jsonl").write_text('{"timestamp":"2026-01-01T00:00:00.000000Z","level":"INFO","message":"ok"}\n' + line + "\n")


def test_clean_logs_pass(tmp_path):
    write(tmp_path / "logs", '{"timestamp":"2026-01-01T00:00:00.000000Z","level":"WARN","message":"refused","reason":"signature_mismatch"}')
    out = run(tmp_path / "logs")
    assert out.returncode == 0, out.stderr
    assert "ok (" in out.stdout


@pytest.mark.parametrize(
    "form",
    [SECRET, urllib.parse.quote("123456:inlet-test-bot-token", safe=""), base64.b64encode(SECRET.encode()).decode()],
    ids=["raw", "percent-encoded", "base64"],
)
def test_a_leak_fails_with_file_and_line(tmp_path, form):
    write(tmp_path / "logs", '{"timestamp":"2026-01-01T00:00:00.000000Z","level":"DEBUG","message":"sent","auth":"' + form + '"}')
    out = run(tmp_path / "logs")
    assert out.returncode == 1
    assert "tests-1.jsonl:2" in out.stderr, out.stderr


def test_no_logs_is_a_failure_not_a_pass(tmp_path):
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty").returncode == 1
    assert run(tmp_path / "missing").returncode == 1
