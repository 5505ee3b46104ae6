"""The module cycle check of `make test` (infra/scripts/check-module-cycles) passes the
library as it is and names the modules of a cycle when one appears."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "scripts" / "check-module-cycles"


def run(src: Path | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, str(SCRIPT)] + ([str(src)] if src else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    for name, text in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def test_the_library_has_no_cycle():
    out = run()
    assert out.returncode == 0, out.stderr
    assert "no import cycle" in out.stdout


def test_a_cycle_through_a_nested_file_is_named(tmp_path):
    src = tree(
        tmp_path,
        {
            "lib.rs": "pub mod a;\npub mod b;\npub mod c;\n",
            "a.rs": "use crate::b::Thing;\n",
            "b/mod.rs": "mod inner;\n",
            "b/inner.rs": "pub fn f() { crate::a::g() }\n",
            "c.rs": "use crate::{a, b::Thing};\n",
        },
    )
    out = run(src)
    assert out.returncode == 1
    assert "a, b" in out.stderr, out.stderr
    assert "c" not in out.stderr.split("cycle:")[1].splitlines()[0], out.stderr


def test_tests_and_comments_do_not_count(tmp_path):
    src = tree(
        tmp_path,
        {
            "a.rs": "use crate::b::Thing;\n",
            "b.rs": (
                "/// Unlike `crate::a`, this …\npub struct Thing;\n"
                "#[cfg(all(test, feature = \"x\"))]\nmod tests {\n    use crate::a;\n}\n"
            ),
        },
    )
    out = run(src)
    assert out.returncode == 0, out.stderr
