"""The Logs Insights queries the template saves name only fields and messages the code logs:
a renamed log field or message fails here instead of leaving on-call with an empty result."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_template import load_template

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "shared" / "src", ROOT / "functions"]
# Fields every line has (tracing's JSON layer and the Powertools-shaped keys) or Insights adds.
ALWAYS = {"level", "message", "timestamp", "service"}
KEYWORDS = {
    "fields", "filter", "stats", "sort", "limit", "by", "as", "and", "or", "not", "like", "in",
    "asc", "desc", "count", "pct", "bin", "ispresent",
}


def code_text() -> str:
    return "\n".join(
        p.read_text() for root in SOURCES for p in root.rglob("*.rs") if "tests" not in p.parts
    )


def logged_fields(code: str) -> set[str]:
    """Every field a tracing event or span of the code carries, and every EMF metric name."""
    names: set[str] = set()
    for call in re.findall(r"\b(?:info|warn|error|debug|trace|\w+_span)!\((.*?)\);", code, re.S):
        call = re.sub(r'"([^"\\]|\\.)*"', '""', call)
        names.update(re.findall(r"(?:^|,)\s*(\w+)\s*(?==|,|$)", call))
    names.update(re.findall(r'metrics::(?:emit|count|gauge|timing)\(\s*[^,]+,\s*"(\w+)"', code))
    return names


def queries() -> dict[str, str]:
    t = load_template()
    return {
        name: r["Properties"]["QueryString"]
        for name, r in t["Resources"].items()
        if isinstance(r, dict) and r.get("Type") == "AWS::Logs::QueryDefinition"
    }


def names_in(query: str) -> tuple[set[str], set[str]]:
    """The field names a query reads and the messages it filters on."""
    messages = set(re.findall(r'message\s*=\s*"([^"]+)"', query))
    text = re.sub(r'"[^"]*"|/[^/]*/', " ", query)  # strings and regexes are values
    aliases = set(re.findall(r"\bas\s+(\w+)", text))  # names the query gives its results
    words = set(re.findall(r"(?<![@\w])[a-z_][a-z0-9_]*", text))
    return words - KEYWORDS - ALWAYS - aliases, messages


def test_the_template_saves_the_queries_on_call_asks_for():
    assert set(queries()) >= {
        "QueryEventById", "QueryRefusals", "QueryDeadLetters", "QueryFailingPolls", "QueryLatency",
    }


@pytest.mark.parametrize("name", sorted(queries()))
def test_every_field_and_message_a_query_names_is_logged(name):
    code = code_text()
    logged = logged_fields(code)
    fields, messages = names_in(queries()[name])
    for field in fields:
        assert field in logged, f"{name}: the code logs no field {field!r}"
    for message in messages:
        assert f'"{message}"' in code, f"{name}: the code logs no message {message!r}"


def test_a_renamed_field_or_message_is_caught():
    logged = logged_fields(code_text())
    assert {"dedupe_key", "source_ip", "outcome", "end_to_end_latency"} <= logged
    fields, messages = names_in('fields source, dedupe_keys | filter message = "refusd"')
    assert "dedupe_keys" in fields and "dedupe_keys" not in logged
    assert f'"{messages.pop()}"' not in code_text()
