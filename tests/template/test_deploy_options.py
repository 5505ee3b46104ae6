"""Deploy options: the ingest Function URL (IngestFunctionUrl=enabled) and the concurrency
parameters (PollerReservedConcurrency, WorkerMaxConcurrency). Each guard is shown to fail on a
template broken the way it guards against."""

from __future__ import annotations

import copy

import pytest

from test_template import (
    evaluate,
    function_props,
    getatt,
    raw_tpl,  # noqa: F401 (the fixture tpl builds on)
    ref,
    resources,
    tpl,  # noqa: F401 (a fixture)
    worker_sqs_events,
)

NO_VALUE = {"Ref": "AWS::NoValue"}
URL_CONDITION = "HasIngestFunctionUrl"


def _url_resources(t: dict) -> dict:
    """Every resource that only exists with the Function URL."""
    return {
        name: r
        for name, r in resources(t).items()
        if r.get("Type") in ("AWS::Lambda::Url", "AWS::Lambda::Permission")
        and "IngestFunction" in (getatt(r["Properties"].get("TargetFunctionArn")) or ())
        + (ref(r["Properties"].get("FunctionName")),)
    }


def check_function_url_parameter(t: dict) -> None:
    p = t["Parameters"]["IngestFunctionUrl"]
    assert p["Type"] == "String"
    assert sorted(p["AllowedValues"]) == ["enabled", "none"]
    assert p["Default"] == "none", "a second, unthrottled way in: only by choice"
    cond = t["Conditions"][URL_CONDITION]
    assert evaluate(cond, {}, t) is False
    assert evaluate(cond, {"IngestFunctionUrl": "enabled"}, t) is True


def check_function_url(t: dict) -> None:
    found = _url_resources(t)
    urls = {n: r for n, r in found.items() if r["Type"] == "AWS::Lambda::Url"}
    assert len(urls) == 1, f"want one Function URL for ingest, have {sorted(urls)}"
    ((url_name, url),) = urls.items()
    # Providers cannot sign AWS requests: the URL is public, ingest verifies each webhook.
    assert url["Properties"].get("AuthType") == "NONE"
    assert getatt(url["Properties"]["TargetFunctionArn"]) == ("IngestFunction", "Arn")
    actions = {}
    for name, r in found.items():
        assert r.get("Condition") == URL_CONDITION, f"{name} must exist only with {URL_CONDITION}"
        if r["Type"] == "AWS::Lambda::Permission":
            actions[r["Properties"]["Action"]] = r["Properties"]
    # Since October 2025 a public URL needs both grants; the plain invoke only via the URL.
    assert set(actions) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}, sorted(actions)
    assert actions["lambda:InvokeFunctionUrl"].get("FunctionUrlAuthType") == "NONE"
    assert actions["lambda:InvokeFunction"].get("InvokedViaFunctionUrl") is True, (
        "lambda:InvokeFunction for everyone must be limited to calls through the URL"
    )
    out = t["Outputs"].get("IngestFunctionUrl")
    assert out is not None, "output IngestFunctionUrl missing"
    # Without the condition the output names a resource that does not exist: the deploy fails.
    assert out.get("Condition") == URL_CONDITION
    assert out["Value"] == {"Fn::Sub": "${" + url_name + ".FunctionUrl}webhooks/"}


def check_poller_reservation(t: dict) -> None:
    p = t["Parameters"]["PollerReservedConcurrency"]
    assert p["Type"] == "Number"
    # A reservation can fail the deploy (the account keeps 10 unreserved): none by default.
    assert int(p["Default"]) == -1 and int(p["MinValue"]) == -1
    cond = t["Conditions"]["HasPollerReservation"]
    assert evaluate(cond, {}, t) is False
    assert evaluate(cond, {"PollerReservedConcurrency": 1}, t) is True
    reserved = function_props(t, "PollerFunction").get("ReservedConcurrentExecutions")
    assert reserved == {"Fn::If": ["HasPollerReservation", {"Ref": "PollerReservedConcurrency"}, NO_VALUE]}, reserved


def check_worker_max_concurrency(t: dict) -> None:
    p = t["Parameters"]["WorkerMaxConcurrency"]
    assert p["Type"] == "Number"
    # SQS event sources accept 2-1000.
    assert int(p["MinValue"]) == 2 and int(p["MaxValue"]) == 1000
    assert 2 <= int(p["Default"]) <= 1000
    ((_, event),) = worker_sqs_events(t)
    scaling = event["Properties"].get("ScalingConfig", {})
    assert ref(scaling.get("MaximumConcurrency")) == "WorkerMaxConcurrency", scaling


CHECKS = [check_function_url_parameter, check_function_url, check_poller_reservation, check_worker_max_concurrency]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_deploy_options(tpl, check):
    check(tpl)


def _res(t: dict, name: str) -> dict:
    return t["Resources"][name]


MUTATIONS = {
    "Function URL on by default": (
        check_function_url_parameter,
        lambda t: t["Parameters"]["IngestFunctionUrl"].update(Default="enabled"),
    ),
    "Function URL always created": (
        check_function_url,
        lambda t: _res(t, "IngestUrl").pop("Condition"),
    ),
    "Function URL behind IAM (providers cannot call it)": (
        check_function_url,
        lambda t: _res(t, "IngestUrl")["Properties"].update(AuthType="AWS_IAM"),
    ),
    "Function URL on the worker": (
        check_function_url,
        lambda t: _res(t, "IngestUrl")["Properties"].update(TargetFunctionArn={"Fn::GetAtt": ["WorkerFunction", "Arn"]}),
    ),
    "no lambda:InvokeFunction grant": (
        check_function_url,
        lambda t: t["Resources"].pop("IngestUrlInvokePermission"),
    ),
    "anyone may invoke ingest directly": (
        check_function_url,
        lambda t: _res(t, "IngestUrlInvokePermission")["Properties"].pop("InvokedViaFunctionUrl"),
    ),
    "URL permission without its condition": (
        check_function_url,
        lambda t: _res(t, "IngestUrlPermission").pop("Condition"),
    ),
    "URL output without its condition": (
        check_function_url,
        lambda t: t["Outputs"]["IngestFunctionUrl"].pop("Condition"),
    ),
    "poller reserved by default": (
        check_poller_reservation,
        lambda t: t["Parameters"]["PollerReservedConcurrency"].update(Default=1),
    ),
    "poller reservation hard-coded": (
        check_poller_reservation,
        lambda t: _res(t, "PollerFunction")["Properties"].update(ReservedConcurrentExecutions=1),
    ),
    "worker concurrency uncapped": (
        check_worker_max_concurrency,
        lambda t: worker_sqs_events(t)[0][1]["Properties"].pop("ScalingConfig"),
    ),
    "worker concurrency below the SQS minimum": (
        check_worker_max_concurrency,
        lambda t: t["Parameters"]["WorkerMaxConcurrency"].update(MinValue=1),
    ),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_deploy_options_guard_catches(tpl, mutation):
    check, mutate = MUTATIONS[mutation]
    broken = copy.deepcopy(tpl)
    mutate(broken)
    with pytest.raises(AssertionError):
        check(broken)
