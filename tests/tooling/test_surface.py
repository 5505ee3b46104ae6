"""The binaries use only the library modules docs/architecture.md lists as its surface, and the
list names nothing they do not use: the table and the code cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"


def used(folder: Path) -> set[str]:
    """Top-level library modules named by `inlet::module` in a folder's Rust sources."""
    names: set[str] = set()
    for path in folder.rglob("*.rs"):
        names.update(re.findall(r"\binlet::(\w+)", path.read_text()))
        for group in re.findall(r"\binlet::\{([^}]*)\}", path.read_text(), re.S):
            names.update(re.findall(r"(?:^|,)\s*(\w+)", group))
    return names


def documented() -> dict[str, set[str]]:
    """module → the binaries the surface table says use it."""
    text = DOC.read_text()
    section = text.split("## The library's surface", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        users = {u.strip() for u in cells[1].split(",")}
        for module in re.findall(r"`(\w+)`", cells[0]):
            rows[module] = users
    return rows


def by(user: str) -> set[str]:
    return {m for m, users in documented().items() if user in users}


def test_the_lambdas_use_exactly_the_documented_modules():
    assert used(ROOT / "functions") == by("Lambdas")


def test_the_cli_uses_exactly_the_documented_modules():
    assert used(ROOT / "infra" / "cli" / "src") == by("CLI")


def test_the_table_is_read(tmp_path):
    # A table the parser silently skipped would make both checks above compare empty sets.
    assert {"bootstrap", "lambda", "config"} <= set(documented())
