"""Guardrail tests for template.yaml (the SAM deployment template).

cfn-lint validates shapes, but a misspelt SAM event property (e.g.
`FunctionResponseType` without the `s`) passes it silently and turns off partial
batch responses. These tests assert the properties that Inlet's correctness,
cost and security rest on. Each check is a plain function that raises
AssertionError; the `test_guard_*` tests at the end feed each one a broken copy
of the template to prove it can fail.

Run: .venv/bin/python -m pytest -q tests/template
Another template: INLET_TEMPLATE=path/to/template.yaml (same command).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.decode import decode  # YAML loader that understands !Ref/!GetAtt/!Sub...

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(os.environ.get("INLET_TEMPLATE", ROOT / "template.yaml"))

# logical id -> cargo binary built by cargo-lambda
FUNCTIONS = {
    "IngestFunction": "ingest",
    "WorkerFunction": "worker",
    "PollerFunction": "poller",
}

# Environment each function needs (more is allowed).
REQUIRED_ENV = {
    "IngestFunction": {"INLET_CONFIG", "INLET_SECRETS_JSON", "INLET_QUEUE_URL", "INLET_TABLE"},
    "WorkerFunction": {
        "INLET_CONFIG",
        "INLET_TABLE",
        "INLET_BUS_NAME",
        "INLET_MAX_RECEIVE_COUNT",
        "INLET_LEASE_SECONDS",
        "INLET_QUEUE_URL",  # visibility changes: the retry backoff
        "INLET_DLQ_URL",  # permanent failures, moved by the worker itself
        "INLET_VISIBILITY_TIMEOUT_SECONDS",  # lease <= visibility, checked at start
        "INLET_WORKER_TIMEOUT_SECONDS",  # lease >= the function timeout, checked at start
    },
    "PollerFunction": {"INLET_CONFIG", "INLET_QUEUE_URL", "INLET_TABLE", "INLET_CHECKS_QUEUE_URL"},
}
REQUIRED_ENV["WorkerFunction"].add("INLET_CHECKS_QUEUE_URL")  # delayed checks

# Least privilege: per role, action -> the only resources it may name. Anything
# else (a new action, a wider resource) fails until this table is updated too.
# Secret references: exactly the secrets, parameters and keys the parameters name (empty:
# no policy), for every function.
SECRET_GRANTS = {
    "secretsmanager:GetSecretValue": {"SecretArns"},
    "ssm:GetParameter": {"SsmParameterArns"},
    "kms:Decrypt": {"SecretsKmsKeyArns"},
}

ALLOWED_GRANTS = {
    "IngestRole": {
        "logs:CreateLogStream": {"IngestLogGroup"},
        "logs:PutLogEvents": {"IngestLogGroup"},
        "sqs:SendMessage": {"EventsQueue"},
        "dynamodb:PutItem": {"LedgerTable"},
        # claim checks: only the bodies' prefix, never a read
        "s3:PutObject": {"BlobBucket/bodies/*", "BlobBucket/requests/*"},
        **SECRET_GRANTS,
    },
    "WorkerRole": {
        "logs:CreateLogStream": {"WorkerLogGroup"},
        "logs:PutLogEvents": {"WorkerLogGroup"},
        "sqs:ReceiveMessage": {"EventsQueue"},
        "sqs:DeleteMessage": {"EventsQueue"},
        "sqs:GetQueueAttributes": {"EventsQueue"},
        "sqs:ChangeMessageVisibility": {"EventsQueue"},
        # TargetQueueArns: the SQS targets' queues, a parameter (empty: no policy).
        "sqs:SendMessage": {"DeadLetterQueue", "ChecksQueue", "TargetQueueArns"},
        "dynamodb:GetItem": {"LedgerTable"},
        "dynamodb:PutItem": {"LedgerTable"},
        "dynamodb:UpdateItem": {"LedgerTable"},
        "events:PutEvents": {"EventBus"},
        "s3:GetObject": {"BlobBucket/bodies/*"},
        **SECRET_GRANTS,
    },
    "PollerRole": {
        "logs:CreateLogStream": {"PollerLogGroup"},
        "logs:PutLogEvents": {"PollerLogGroup"},
        "sqs:SendMessage": {"EventsQueue", "ChecksQueue", "PollDeadLetterQueue"},
        "s3:PutObject": {"BlobBucket/bodies/*"},
        "dynamodb:GetItem": {"LedgerTable"},
        "dynamodb:PutItem": {"LedgerTable"},
        "dynamodb:UpdateItem": {"LedgerTable"},
        # delayed checks: the poller consumes the checks queue
        "sqs:ReceiveMessage": {"ChecksQueue"},
        "sqs:DeleteMessage": {"ChecksQueue"},
        "sqs:GetQueueAttributes": {"ChecksQueue"},
        **SECRET_GRANTS,
    },
    "PollSchedulerRole": {
        "lambda:InvokeFunction": {"PollerFunction"},
        "sqs:SendMessage": {"PollDeadLetterQueue"},
    },
}

# The PollSchedules value the checks expand the template with (what
# `inlet schedules` prints for a config with these poll sources).
SAMPLE_POLL_SCHEDULES = "stripe=rate(10 minutes),tg-bot=rate(1 minute),kyc_vendor=cron(0/5 * * * ? *)"

# Every property SAM accepts on an SQS event source: anything else is a typo
# that SAM would reject at deploy time and the linters do not see.
SAM_SQS_EVENT_PROPERTIES = {
    "Queue",
    "BatchSize",
    "Enabled",
    "FilterCriteria",
    "FunctionResponseTypes",
    "KmsKeyArn",
    "MaximumBatchingWindowInSeconds",
    "MetricsConfig",
    "ProvisionedPollerConfig",
    "ScalingConfig",
}


# ------------------------------------------------------------------ helpers


def load_template(path: Path = TEMPLATE) -> dict:
    template, matches = decode(str(path))
    assert not matches, f"{path} does not parse: {[str(m) for m in matches]}"
    # Plain dicts/lists/strs (cfn-lint's node classes carry line marks).
    return json.loads(json.dumps(template))


def _alnum(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def _substitute(node, ident: str, value: str):
    if isinstance(node, dict):
        if node == {"Ref": ident}:
            return value
        return {
            k.replace("${" + ident + "}", value).replace("&{" + ident + "}", _alnum(value)): _substitute(v, ident, value)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_substitute(v, ident, value) for v in node]
    if isinstance(node, str):
        return node.replace("${" + ident + "}", value).replace("&{" + ident + "}", _alnum(value))
    return node


def parameter_list(t: dict, name: str, params: dict) -> list[str]:
    raw = params.get(name, t["Parameters"][name].get("Default", ""))
    return raw.split(",")  # CloudFormation: "" is one empty entry


def expand_foreach(t: dict, params: dict) -> dict:
    """What AWS::LanguageExtensions does with Fn::ForEach in Resources (the only place this
    template loops), for the given parameter values."""
    out = copy.deepcopy(t)
    res = {}
    for key, value in out.get("Resources", {}).items():
        if not key.startswith("Fn::ForEach::"):
            res[key] = value
            continue
        ident, collection, fragment = value
        for item in parameter_list(t, ref(collection), params):
            for k, v in _substitute(fragment, ident, item).items():
                assert k not in res, f"{key}: {item!r} makes a duplicate logical id {k}"
                res[k] = v
    out["Resources"] = res
    return out


def evaluate(node, params: dict, t: dict):
    """The few intrinsic functions the loop uses, evaluated the way CloudFormation would."""
    if isinstance(node, dict) and len(node) == 1:
        (fn, arg), = node.items()
        if fn == "Fn::Join":
            items = evaluate(arg[1], params, t) if isinstance(arg[1], dict) else arg[1]
            return arg[0].join(evaluate(x, params, t) for x in items)
        if fn == "Fn::Split":
            return evaluate(arg[1], params, t).split(arg[0])
        if fn == "Fn::Select":
            items = evaluate(arg[1], params, t)
            assert int(arg[0]) < len(items), f"Fn::Select {arg[0]} out of range of {items}"
            return items[int(arg[0])]
        if fn == "Ref" and arg in t.get("Parameters", {}):
            p = t["Parameters"][arg]
            return parameter_list(t, arg, params) if p["Type"] == "CommaDelimitedList" else params.get(arg, p.get("Default"))
        if fn == "Fn::Not":
            return not evaluate(arg[0], params, t)
        if fn == "Fn::Equals":
            return evaluate(arg[0], params, t) == evaluate(arg[1], params, t)
    return node


def poll_schedules(t: dict) -> dict:
    return resources(t, "AWS::Scheduler::Schedule")


@pytest.fixture(scope="module")
def raw_tpl() -> dict:
    return load_template()


@pytest.fixture(scope="module")
def tpl(raw_tpl) -> dict:
    return expand_foreach(raw_tpl, {"PollSchedules": SAMPLE_POLL_SCHEDULES})


def resources(t: dict, rtype: str | None = None) -> dict:
    res = t.get("Resources", {})
    return {k: v for k, v in res.items() if rtype is None or v.get("Type") == rtype}


def resource(t: dict, name: str, rtype: str) -> dict:
    res = t.get("Resources", {}).get(name)
    assert res is not None, f"resource {name} missing"
    assert res.get("Type") == rtype, f"{name} is {res.get('Type')}, expected {rtype}"
    return res


def props(t: dict, name: str, rtype: str) -> dict:
    return resource(t, name, rtype).get("Properties", {})


def function_props(t: dict, name: str) -> dict:
    """A function's properties with Globals.Function merged in, the way SAM does."""
    merged = copy.deepcopy(t.get("Globals", {}).get("Function", {}))
    own = props(t, name, "AWS::Serverless::Function")
    for key, value in own.items():
        if key == "Environment":
            vars_ = merged.get("Environment", {}).get("Variables", {})
            vars_.update(value.get("Variables", {}))
            merged["Environment"] = {"Variables": vars_}
        else:
            merged[key] = value
    return merged


def param_default(t: dict, name: str) -> int:
    p = t.get("Parameters", {}).get(name)
    assert p is not None, f"parameter {name} missing"
    assert "Default" in p, f"parameter {name} has no Default"
    return int(p["Default"])


def ref(value) -> str | None:
    return value.get("Ref") if isinstance(value, dict) and len(value) == 1 else None


def getatt(value) -> tuple[str, str] | None:
    if isinstance(value, dict) and list(value) == ["Fn::GetAtt"]:
        target = value["Fn::GetAtt"]
        if isinstance(target, str):
            target = target.split(".", 1)
        return tuple(target)
    return None


def bucket_prefix(value) -> str | None:
    """`BlobBucket/bodies/*` for `!Sub "${BlobBucket.Arn}/bodies/*"`: objects under one
    prefix of a stack bucket, the one form of object grant the roles may use."""
    if not (isinstance(value, dict) and list(value) == ["Fn::Sub"] and isinstance(value["Fn::Sub"], str)):
        return None
    m = re.fullmatch(r"\$\{(\w+)\.Arn\}/([a-z]+)/\*", value["Fn::Sub"])
    return f"{m.group(1)}/{m.group(2)}/*" if m else None


def iam_statements(node, path="$"):
    """Yield (path, statement) for every IAM policy statement anywhere in the template."""
    if isinstance(node, dict):
        if "Effect" in node and ("Action" in node or "NotAction" in node):
            yield path, node
        for k, v in node.items():
            yield from iam_statements(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from iam_statements(v, f"{path}[{i}]")


def as_list(v):
    return v if isinstance(v, list) else [v]


def worker_sqs_events(t: dict) -> list[tuple[str, dict]]:
    events = function_props(t, "WorkerFunction").get("Events", {})
    return [(n, e) for n, e in events.items() if e.get("Type") == "SQS"]


# ------------------------------------------------------------------- checks


def check_worker_reports_batch_item_failures(t: dict) -> None:
    sqs = worker_sqs_events(t)
    assert len(sqs) == 1, f"worker needs exactly one SQS event source, has {len(sqs)}"
    name, event = sqs[0]
    p = event.get("Properties", {})
    unknown = set(p) - SAM_SQS_EVENT_PROPERTIES
    assert not unknown, f"worker event {name}: unknown SQS event properties {sorted(unknown)} (typo?)"
    assert p.get("FunctionResponseTypes") == ["ReportBatchItemFailures"], (
        f"worker event {name} must set FunctionResponseTypes: [ReportBatchItemFailures]"
    )
    assert getatt(p.get("Queue")) == ("EventsQueue", "Arn"), "worker must consume EventsQueue"
    assert p.get("BatchSize") == 10
    # Lambda supports no batching window on a FIFO queue (QueueType=fifo; test_fifo.py).
    assert p.get("MaximumBatchingWindowInSeconds") == {"Fn::If": ["FifoQueues", {"Ref": "AWS::NoValue"}, 1]}


def check_visibility_covers_worker_timeout(t: dict) -> None:
    q = props(t, "EventsQueue", "AWS::SQS::Queue")
    assert ref(q.get("VisibilityTimeout")) == "QueueVisibilityTimeoutSeconds"
    assert ref(function_props(t, "WorkerFunction").get("Timeout")) == "WorkerTimeoutSeconds"
    vis = param_default(t, "QueueVisibilityTimeoutSeconds")
    timeout = param_default(t, "WorkerTimeoutSeconds")
    assert vis >= 6 * timeout, f"default visibility {vis}s < 6 x worker timeout {timeout}s"
    assert vis <= 43_200, "SQS visibility timeout maximum is 12 h"


def check_lease_between_timeout_and_visibility(t: dict) -> None:
    lease = param_default(t, "LeaseSeconds")
    timeout = param_default(t, "WorkerTimeoutSeconds")
    vis = param_default(t, "QueueVisibilityTimeoutSeconds")
    assert timeout <= lease <= vis, f"need worker timeout {timeout} <= lease {lease} <= visibility {vis}"
    env = function_props(t, "WorkerFunction")["Environment"]["Variables"]
    assert ref(env.get("INLET_LEASE_SECONDS")) == "LeaseSeconds"
    assert ref(env.get("INLET_MAX_RECEIVE_COUNT")) == "MaxReceiveCount"


def check_dead_letter_queue(t: dict) -> None:
    q = props(t, "EventsQueue", "AWS::SQS::Queue")
    redrive = q.get("RedrivePolicy")
    assert isinstance(redrive, dict), "EventsQueue needs a RedrivePolicy"
    assert getatt(redrive.get("deadLetterTargetArn")) == ("DeadLetterQueue", "Arn")
    assert ref(redrive.get("maxReceiveCount")) == "MaxReceiveCount"
    assert 1 <= param_default(t, "MaxReceiveCount") <= 1000
    dlq = props(t, "DeadLetterQueue", "AWS::SQS::Queue")
    assert int(dlq.get("MessageRetentionPeriod", 0)) == 1_209_600, "DLQ keeps messages 14 days"
    # A message keeps its original enqueue time in a standard DLQ: the DLQ must outlive the source.
    assert int(dlq["MessageRetentionPeriod"]) > int(q.get("MessageRetentionPeriod", 345_600))


def check_functions_build_as_rust_arm64(t: dict) -> None:
    declared = set(resources(t, "AWS::Serverless::Function"))
    assert declared == set(FUNCTIONS), f"functions {sorted(declared)} != {sorted(FUNCTIONS)}"
    for name, binary in FUNCTIONS.items():
        p = function_props(t, name)
        assert p.get("Runtime") == "provided.al2023", f"{name} runtime"
        assert p.get("Architectures") == ["arm64"], f"{name} architectures"
        assert p.get("Handler") == "bootstrap", f"{name} handler"
        assert p.get("CodeUri") == ".", f"{name} CodeUri (the workspace root)"
        assert ref(p.get("MemorySize")) == name.replace("Function", "MemorySize"), f"{name} memory is a parameter"
        meta = resource(t, name, "AWS::Serverless::Function").get("Metadata", {})
        assert meta.get("BuildMethod") == "rust-cargolambda", f"{name} BuildMethod"
        assert meta.get("BuildProperties", {}).get("Binary") == binary, f"{name} Binary"


def check_event_archive(t: dict) -> None:
    archives = [p["Properties"] for p in resources(t, "AWS::Events::Archive").values()]
    assert [getatt(a.get("SourceArn")) for a in archives] == [("EventBus", "Arn")], "the bus has one archive"
    assert ref(archives[0].get("RetentionDays")) == "EventArchiveRetentionDays"


def check_environment(t: dict) -> None:
    for name, required in REQUIRED_ENV.items():
        env = function_props(t, name).get("Environment", {}).get("Variables", {})
        missing = required - set(env)
        assert not missing, f"{name} lacks env {sorted(missing)}"
        assert ref(env["INLET_CONFIG"]) == "InletConfig"
        assert ref(env["INLET_QUEUE_URL"]) == "EventsQueue"
        if "INLET_TABLE" in required:
            assert ref(env["INLET_TABLE"]) == "LedgerTable"
    ingest = function_props(t, "IngestFunction")["Environment"]["Variables"]
    assert ref(ingest["INLET_SECRETS_JSON"]) == "WebhookSecrets"
    assert t["Parameters"]["WebhookSecrets"].get("NoEcho") is True
    worker = function_props(t, "WorkerFunction")["Environment"]["Variables"]
    assert ref(worker["INLET_BUS_NAME"]) == "EventBus"
    # The worker moves permanent failures to the queue's own DLQ, and checks its lease
    # against the very parameters that size the function and the queue.
    assert ref(worker["INLET_DLQ_URL"]) == "DeadLetterQueue"
    assert ref(worker["INLET_WORKER_TIMEOUT_SECONDS"]) == "WorkerTimeoutSeconds"
    assert ref(worker["INLET_VISIBILITY_TIMEOUT_SECONDS"]) == "QueueVisibilityTimeoutSeconds"
    assert ref(worker["INLET_LEASE_SECONDS"]) == "LeaseSeconds"


def check_ledger_table(t: dict) -> None:
    p = props(t, "LedgerTable", "AWS::DynamoDB::Table")
    assert p.get("BillingMode") == "PAY_PER_REQUEST"
    attrs = {a["AttributeName"]: a["AttributeType"] for a in p.get("AttributeDefinitions", [])}
    assert attrs == {"pk": "S", "gsi1pk": "S", "gsi1sk": "S", "gsi2pk": "S"}, attrs
    assert p.get("KeySchema") == [{"AttributeName": "pk", "KeyType": "HASH"}]
    gsis = {g["IndexName"]: g for g in p.get("GlobalSecondaryIndexes", [])}
    assert "by_source" in gsis, "GSI by_source missing"
    g = gsis["by_source"]
    assert g["KeySchema"] == [
        {"AttributeName": "gsi1pk", "KeyType": "HASH"},
        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
    ]
    assert g["Projection"] == {"ProjectionType": "ALL"}
    # Lookups by payment id or dedupe key: keys only (one index write per event).
    assert "by_ref" in gsis, "GSI by_ref missing"
    g = gsis["by_ref"]
    assert g["KeySchema"] == [
        {"AttributeName": "gsi2pk", "KeyType": "HASH"},
        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
    ]
    assert g["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert p.get("TimeToLiveSpecification") == {"AttributeName": "ttl", "Enabled": True}
    assert p.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True


# The Rust constant naming the attribute the DynamoDB ledger writes each item's expiry to
# (completed dedupe records and every trail entry).
LEDGER_SOURCE = ROOT / "shared" / "src" / "adapters" / "aws" / "dynamodb" / "mod.rs"


def ttl_attribute_in_code() -> str:
    found = re.findall(r'^pub const TTL_ATTRIBUTE: &str = "([^"]+)";', LEDGER_SOURCE.read_text(), re.M)
    assert len(found) == 1, f"expected one TTL_ATTRIBUTE in {LEDGER_SOURCE}, found {found}"
    return found[0]


def check_ttl_is_on_the_attribute_the_code_writes(t: dict) -> None:
    """Without TTL on that very attribute, nothing the trail stores ever expires on AWS."""
    p = props(t, "LedgerTable", "AWS::DynamoDB::Table")
    assert p.get("TimeToLiveSpecification") == {
        "AttributeName": ttl_attribute_in_code(),
        "Enabled": True,
    }, p.get("TimeToLiveSpecification")


def check_log_groups(t: dict) -> None:
    for name in FUNCTIONS:
        logging = function_props(t, name).get("LoggingConfig", {})
        assert logging.get("LogFormat") == "JSON", f"{name} should log JSON"
        group = ref(logging.get("LogGroup"))
        assert group, f"{name} has no LoggingConfig.LogGroup: Ref to its log group"
        lg = props(t, group, "AWS::Logs::LogGroup")
        assert lg.get("RetentionInDays"), f"{group} has no retention"
        days = lg["RetentionInDays"]
        if ref(days):
            days = param_default(t, ref(days))
        assert 1 <= int(days) <= 3653


# X-Ray has no resource-level permissions: its write actions take only "*". This statement is
# the one allowed to name "*", and only in a policy of its own that exists with Tracing on
# (check_tracing).
XRAY_STATEMENT = {
    "Sid": "XRayWrite",
    "Effect": "Allow",
    "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
    "Resource": "*",
}


def tracing_policies(role: dict) -> list:
    """The role's policies that exist only with Tracing on: (policy, else-branch)."""
    return [
        (p["Fn::If"][1], p["Fn::If"][2])
        for p in role.get("Properties", {}).get("Policies", [])
        if isinstance(p, dict) and "Fn::If" in p and p["Fn::If"][0] == "TracingOn"
    ]


def xray_exemptions(t: dict) -> set[int]:
    """The X-Ray statements that may name "*": exactly XRAY_STATEMENT, under TracingOn."""
    return {
        id(st)
        for role in resources(t, "AWS::IAM::Role").values()
        for policy, _ in tracing_policies(role)
        for st in policy["PolicyDocument"]["Statement"]
        if st == XRAY_STATEMENT
    }


def check_no_wildcard_iam(t: dict) -> None:
    statements = list(iam_statements(t))
    assert statements, "no IAM statements found (the roles moved?)"
    exempt = xray_exemptions(t)
    for path, st in statements:
        assert "NotResource" not in st and "NotAction" not in st, f"{path}: Not* grants are too wide"
        if st.get("Effect") != "Allow" or "Principal" in st:
            continue  # trust policies name a principal, not a resource
        if id(st) in exempt:
            continue
        assert "Resource" in st, f"{path}: Allow without Resource"
        for r in as_list(st["Resource"]):
            assert r != "*", f'{path}: Resource "*"'
            if isinstance(r, str):
                assert "*" not in r, f"{path}: wildcard resource {r!r}"
        for a in as_list(st["Action"]):
            assert isinstance(a, str) and "*" not in a, f"{path}: wildcard action {a!r}"


def check_functions_use_explicit_roles(t: dict) -> None:
    # Without Role, SAM generates one and attaches AWS managed policies granting on "*".
    for name in FUNCTIONS:
        p = function_props(t, name)
        assert getatt(p.get("Role")) == (name.replace("Function", "Role"), "Arn"), f"{name} Role"
        assert "Policies" not in p, f"{name}: Policies is ignored when Role is set"
    for name, role in resources(t, "AWS::IAM::Role").items():
        assert not role.get("Properties", {}).get("ManagedPolicyArns"), f"{name}: managed policies"


def check_least_privilege(t: dict) -> None:
    exempt = xray_exemptions(t)  # check_tracing's
    for role_name, allowed in ALLOWED_GRANTS.items():
        role = props(t, role_name, "AWS::IAM::Role")
        granted: dict[str, set[str]] = {}
        for _, st in iam_statements(role.get("Policies", [])):
            if id(st) in exempt:
                continue
            assert st.get("Effect") == "Allow"
            targets = set()
            for r in as_list(st["Resource"]):
                target = getatt(r) or (ref(r),)
                if not target[0] and bucket_prefix(r):
                    target = (bucket_prefix(r),)
                assert target[0], f"{role_name}: resource {r!r} is not a GetAtt/Ref of a stack resource"
                targets.add(target[0])
            for a in as_list(st["Action"]):
                granted.setdefault(a, set()).update(targets)
        assert granted == allowed, f"{role_name} grants {granted}, expected {allowed}"


def check_sqs_target_grant(t: dict) -> None:
    """The worker may send to the SQS targets' queues only when TargetQueueArns names some."""
    param = t["Parameters"]["TargetQueueArns"]
    assert param["Type"] == "CommaDelimitedList" and param["Default"] == "", param
    conditional = [
        p for p in props(t, "WorkerRole", "AWS::IAM::Role")["Policies"]
        if "Fn::If" in p and p["Fn::If"][0] == "HasTargetQueues"
    ]
    assert len(conditional) == 1, "one conditional policy for the target queues"
    condition, policy, otherwise = conditional[0]["Fn::If"]
    assert condition == "HasTargetQueues" and ref(otherwise) == "AWS::NoValue"
    assert "HasTargetQueues" in t["Conditions"]
    statements = policy["PolicyDocument"]["Statement"]
    assert [(s["Action"], ref(s["Resource"])) for s in statements] == [("sqs:SendMessage", "TargetQueueArns")]


def check_http_api(t: dict) -> None:
    api = props(t, "HttpApi", "AWS::Serverless::HttpApi")
    throttle = api.get("DefaultRouteSettings", {})
    assert "ThrottlingBurstLimit" in throttle and "ThrottlingRateLimit" in throttle
    events = function_props(t, "IngestFunction").get("Events", {})
    routes = set()
    for e in events.values():
        assert e.get("Type") == "HttpApi", "ingest is reached through the HTTP API only"
        p = e["Properties"]
        assert ref(p.get("ApiId")) == "HttpApi"
        routes.add((p.get("Method"), p.get("Path")))
    # POST is the route; ANY lets other methods reach ingest for a 405 instead of API GW's 404.
    assert routes == {("POST", "/webhooks/{source}"), ("ANY", "/webhooks/{source}")}, routes


def check_poll_schedules(t: dict) -> None:
    """One Scheduler schedule per PollSchedules entry, invoking the poller with that source."""
    schedules = poll_schedules(t)
    entries = [e.split("=", 1) for e in SAMPLE_POLL_SCHEDULES.split(",")]
    assert len(schedules) == len(entries), f"{len(schedules)} schedules for {len(entries)} poll sources"
    params = {"PollSchedules": SAMPLE_POLL_SCHEDULES}
    seen = set()
    for name, res in schedules.items():
        assert res.get("Condition") == "HasPollSchedules", f"{name}: condition"
        p = res["Properties"]
        source = json.loads(evaluate(p["Target"]["Input"], params, t))["source_id"]
        expr = evaluate(p["ScheduleExpression"], params, t)
        seen.add((source, expr))
        assert getatt(p["Target"]["Arn"]) == ("PollerFunction", "Arn"), f"{name} must invoke the poller"
        assert getatt(p["Target"]["RoleArn"]) == ("PollSchedulerRole", "Arn")
        assert getatt(p["Target"].get("DeadLetterConfig", {}).get("Arn")) == ("PollDeadLetterQueue", "Arn"), (
            f"{name}: failed invocations need a DLQ"
        )
        retry = p["Target"].get("RetryPolicy", {})
        assert ref(retry.get("MaximumRetryAttempts")) == "PollRetryAttempts", f"{name}: retry policy"
        assert 60 <= int(retry.get("MaximumEventAgeInSeconds", 0)) <= 86_400
        window = p["FlexibleTimeWindow"]
        assert list(window) == ["Fn::If"] and window["Fn::If"][0] == "PollWindowOff", f"{name}: flexible window"
        assert window["Fn::If"][2] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": {"Ref": "PollFlexibleWindowMinutes"}}
    assert seen == {(i, e) for i, e in entries}, seen
    trust = props(t, "PollSchedulerRole", "AWS::IAM::Role")["AssumeRolePolicyDocument"]["Statement"]
    assert [st["Principal"] for st in trust] == [{"Service": "scheduler.amazonaws.com"}]
    assert all("aws:SourceAccount" in st.get("Condition", {}).get("StringEquals", {}) for st in trust), (
        "confused deputy: the trust must name our account"
    )
    invoke = function_props(t, "PollerFunction").get("EventInvokeConfig", {})
    assert invoke.get("MaximumRetryAttempts") == 0, "a failed poll invocation is not retried in a loop"
    dest = invoke.get("DestinationConfig", {}).get("OnFailure", {})
    assert getatt(dest.get("Destination")) == ("PollDeadLetterQueue", "Arn"), "failed invocations are kept"


# The namespace of Inlet's own metrics, as the template writes it wherever it is used: the
# MetricsNamespace parameter, or Inlet/<stack name> when that is empty.
STACK_METRICS_NAMESPACE = {
    "Fn::If": ["DerivedMetricsNamespace", {"Fn::Sub": "Inlet/${AWS::StackName}"}, {"Ref": "MetricsNamespace"}]
}
STACK_NS = "<the stack's metrics namespace>"

# Every way events stop flowing has an alarm: (namespace, metric, what it watches).
REQUIRED_ALARMS = [
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "DeadLetterQueue"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "PollDeadLetterQueue"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "ChecksDeadLetterQueue"),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage", "EventsQueue"),
    (STACK_NS, "refused", None),
    (STACK_NS, "conflicts", None),
    (STACK_NS, "dispatch_failures", None),
    (STACK_NS, "poll_lag", None),
    (STACK_NS, "poll_errors", None),
    (STACK_NS, "secrets_refresh_failures", None),
] + [("AWS/Lambda", m, f) for f in FUNCTIONS for m in ("Errors", "Throttles")]


def check_secret_grants(t: dict) -> None:
    """Each function may read the secrets, parameters and keys the parameters list, only when
    they list some, and reads them again every SecretsRefreshSeconds."""
    conditions = {"SecretArns": "HasSecretArns", "SsmParameterArns": "HasSsmParameters", "SecretsKmsKeyArns": "HasSecretsKmsKeys"}
    for param, condition in conditions.items():
        p = t["Parameters"][param]
        assert p["Type"] == "CommaDelimitedList" and p["Default"] == "", param
        assert condition in t["Conditions"], condition
    for name in FUNCTIONS:
        role = name.replace("Function", "Role")
        guarded = {}
        for policy in props(t, role, "AWS::IAM::Role")["Policies"]:
            if "Fn::If" in policy:
                condition, doc, otherwise = policy["Fn::If"]
                assert ref(otherwise) == "AWS::NoValue", f"{role}: {condition} has an else branch"
                for st in doc["PolicyDocument"]["Statement"]:
                    guarded[ref(st["Resource"])] = condition
        for param, condition in conditions.items():
            assert guarded.get(param) == condition, f"{role}: {param} is not granted under {condition}"
        env = function_props(t, name)["Environment"]["Variables"]
        assert ref(env.get("INLET_SECRETS_REFRESH_SECONDS")) == "SecretsRefreshSeconds", name
    assert t["Parameters"]["WebhookSecrets"].get("NoEcho") is True


def alarm_metrics(alarm: dict) -> list[tuple[str, str, str | None]]:
    """(namespace, metric, the resource its dimension names) of a plain or metric-math alarm."""
    p = alarm["Properties"]
    plain = [(p.get("Namespace"), p.get("MetricName"), p.get("Dimensions", []))] if "MetricName" in p else []
    math = [
        (m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"], m["MetricStat"]["Metric"].get("Dimensions", []))
        for m in p.get("Metrics", [])
        if "MetricStat" in m
    ]
    out = []
    for ns, name, dims in plain + math:
        ns = STACK_NS if ns == STACK_METRICS_NAMESPACE else ns if isinstance(ns, str) else json.dumps(ns)
        target = None
        for d in dims:
            v = d["Value"]
            target = (getatt(v) or (ref(v),))[0] or json.dumps(v)
        out.append((ns, name, target))
    return out


def check_alarms(t: dict) -> None:
    alarms = resources(t, "AWS::CloudWatch::Alarm")
    watched = {m: name for name, a in alarms.items() for m in alarm_metrics(a)}
    missing = [m for m in REQUIRED_ALARMS if m not in watched]
    assert not missing, f"no alarm on {missing}"
    for name, a in alarms.items():
        p = a["Properties"]
        for key in ("AlarmActions", "OKActions"):
            assert p.get(key) == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}, f"{name} {key}"
        assert "Runbook" in json.dumps(p.get("AlarmDescription", "")), f"{name}: its description names no runbook entry"
        assert p.get("TreatMissingData") == "notBreaching", f"{name}: quiet periods are not incidents"
    # Inlet's metrics are alarmed stack-wide: the EMF lines carry a no-dimension set for this.
    for name, a in alarms.items():
        for ns, metric, target in alarm_metrics(a):
            if ns == STACK_NS:
                assert target is None, f"{name}: {metric} is emitted per source and stack-wide; alarm on the latter"


def dashboard_text(t: dict) -> str:
    """The dashboard body's text, before substitution."""
    sub = props(t, "Dashboard", "AWS::CloudWatch::Dashboard")["DashboardBody"]["Fn::Sub"]
    return sub[0] if isinstance(sub, list) else sub


def check_dashboard(t: dict) -> None:
    body = dashboard_text(t)
    for metric in ("enqueued", "refused", "dispatched", "dispatch_failures", "end_to_end_latency", "poll_lag", "missed_webhooks"):
        assert f'"{metric}"' in body, f"dashboard lacks {metric}"
    for alarm in resources(t, "AWS::CloudWatch::Alarm"):
        if "Errors" in alarm or "Throttles" in alarm:
            continue
        assert "${" + alarm + ".Arn}" in body, f"dashboard's alarm widget lacks {alarm}"
    assert "DashboardUrl" in t.get("Outputs", {})


def check_blob_bucket(t: dict) -> None:
    p = props(t, "BlobBucket", "AWS::S3::Bucket")
    rules = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rules and all(
        r["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms") for r in rules
    ), rules
    block = p["PublicAccessBlockConfiguration"]
    for flag in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
        assert block.get(flag) is True, f"{flag} must be true"
    assert p["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    # Every prefix the code writes expires on its own parameter; bodies outlive the DLQ.
    lifecycle = {r.get("Prefix"): r for r in p["LifecycleConfiguration"]["Rules"]}
    for prefix, param in (("bodies/", "BlobRetentionDays"), ("requests/", "ArchiveRetentionDays")):
        rule = lifecycle.get(prefix)
        assert rule and rule["Status"] == "Enabled", f"no lifecycle rule for {prefix}"
        assert rule["ExpirationInDays"] == {"Ref": param}, rule
    dlq_days = props(t, "DeadLetterQueue", "AWS::SQS::Queue")["MessageRetentionPeriod"] / 86400
    assert t["Parameters"]["BlobRetentionDays"]["MinValue"] > dlq_days, "a replayable body must outlive the DLQ"
    assert t["Resources"]["BlobBucket"].get("DeletionPolicy") == "Retain"
    # TLS only: a deny on the bucket and its objects whenever the request is not over TLS.
    policy = props(t, "BlobBucketPolicy", "AWS::S3::BucketPolicy")
    assert policy["Bucket"] == {"Ref": "BlobBucket"}
    denies = [
        s
        for s in policy["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny"
        and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
    ]
    assert denies, "no TLS-only deny"
    resources = denies[0]["Resource"]
    assert {"Fn::GetAtt": ["BlobBucket", "Arn"]} in resources and {"Fn::Sub": "${BlobBucket.Arn}/*"} in resources


def check_outputs(t: dict) -> None:
    outputs = t.get("Outputs", {})
    for name in ("WebhookBaseUrl", "QueueUrl", "DeadLetterQueueUrl", "TableName", "EventBusName", "BlobBucketName"):
        assert name in outputs, f"output {name} missing"
    url = outputs["WebhookBaseUrl"]["Value"]["Fn::Sub"]
    assert re.fullmatch(r"https://\$\{HttpApi\}\.execute-api\.\$\{AWS::Region\}\.\$\{AWS::URLSuffix\}/webhooks/", url), url


PSEUDO_PARAMETERS = {
    "AWS::AccountId",
    "AWS::NoValue",
    "AWS::NotificationARNs",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
}
# Resources SAM generates that the template may refer to (add here when used).
SAM_GENERATED: set[str] = set()


def _references(node, path="$"):
    """Yield (path, kind, name) for every Ref, GetAtt and ${Name} in a Sub."""
    if isinstance(node, dict):
        if len(node) == 1:
            (key, value), = node.items()
            if key == "Ref" and isinstance(value, str):
                yield path, "Ref", value
            elif key == "Fn::GetAtt":
                target = getatt(node)
                if target:
                    yield path, "GetAtt", target[0]
            elif key == "Fn::Sub":
                text, local = (value, {}) if isinstance(value, str) else (value[0], value[1])
                for name in re.findall(r"\$\{([^!}][^}]*)\}", text):
                    if name not in local:
                        yield path, "Sub", name.split(".", 1)[0] if "::" not in name else name
        for k, v in node.items():
            yield from _references(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _references(v, f"{path}[{i}]")


def check_references_resolve(t: dict) -> None:
    # cfn-lint 1.58 validates SAM resources without the SAM transform and does not
    # check Refs inside a Serverless::Function's Environment, so check them all here.
    resources_ = set(t.get("Resources", {})) | SAM_GENERATED
    names = resources_ | set(t.get("Parameters", {})) | PSEUDO_PARAMETERS
    for path, kind, name in _references(t):
        known = resources_ if kind == "GetAtt" else names
        assert name in known, f"{path}: {kind} to unknown {name!r}"


def check_poller_fires_delayed_checks(t: dict) -> None:
    events = function_props(t, "PollerFunction").get("Events", {})
    sqs = [(n, e) for n, e in events.items() if e.get("Type") == "SQS"]
    assert len(sqs) == 1, f"poller needs exactly one SQS event source (checks), has {len(sqs)}"
    name, event = sqs[0]
    p = event.get("Properties", {})
    unknown = set(p) - SAM_SQS_EVENT_PROPERTIES
    assert not unknown, f"poller event {name}: unknown SQS event properties {sorted(unknown)} (typo?)"
    assert p.get("FunctionResponseTypes") == ["ReportBatchItemFailures"], (
        f"poller event {name} must set FunctionResponseTypes: [ReportBatchItemFailures]"
    )
    assert getatt(p.get("Queue")) == ("ChecksQueue", "Arn"), "poller must consume ChecksQueue"
    q = props(t, "ChecksQueue", "AWS::SQS::Queue")
    assert ref(q.get("VisibilityTimeout")) == "ChecksVisibilityTimeoutSeconds"
    vis = param_default(t, "ChecksVisibilityTimeoutSeconds")
    timeout = param_default(t, "PollerTimeoutSeconds")
    assert vis >= 6 * timeout, f"default checks visibility {vis}s < 6 x poller timeout {timeout}s"
    redrive = q.get("RedrivePolicy", {})
    assert getatt(redrive.get("deadLetterTargetArn")) == ("ChecksDeadLetterQueue", "Arn")
    assert ref(redrive.get("maxReceiveCount")) == "MaxReceiveCount"
    for fn in ("WorkerFunction", "PollerFunction"):
        env = function_props(t, fn)["Environment"]["Variables"]
        assert ref(env.get("INLET_CHECKS_QUEUE_URL")) == "ChecksQueue", fn


# ------------------------------------------------------ two stacks in one account

ACCOUNT = "123456789012"
REGION = "eu-west-1"
NO_VALUE = object()
# Properties by which a template names a resource itself (else CloudFormation makes a name).
NAME_PROPERTIES = ("QueueName", "FunctionName", "TableName", "Name", "AlarmName", "DashboardName", "LogGroupName")


class Stack:
    """The template deployed as one stack: the intrinsic functions CloudFormation resolves,
    enough of them for the alarms, the dashboard and the functions' environment, with the
    names CloudFormation gives resources that do not name themselves
    (`<stack>-<logical id>-<suffix>`)."""

    def __init__(self, t: dict, name: str, params: dict | None = None):
        self.t, self.name, self.params = t, name, params or {}

    def resource_name(self, logical: str) -> str:
        res = self.t["Resources"].get(logical)
        assert res is not None, f"{self.name}: no resource {logical}"
        for key in NAME_PROPERTIES:
            if key in res.get("Properties", {}):
                return self.resolve(res["Properties"][key])
        suffix = hashlib.sha1(f"{self.name}/{logical}".encode()).hexdigest()[:12].upper()
        return f"{self.name}-{logical}-{suffix}"

    def ref(self, name: str):
        pseudo = {
            "AWS::StackName": self.name,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.t.get("Parameters", {}):
            p = self.t["Parameters"][name]
            value = self.params.get(name, p.get("Default", ""))
            return str(value).split(",") if p["Type"] == "CommaDelimitedList" else str(value)
        rtype = self.t["Resources"][name]["Type"]
        if rtype == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{self.resource_name(name)}"
        return self.resource_name(name)

    def getatt(self, logical: str, attribute: str) -> str:
        rtype = self.t["Resources"][logical]["Type"]
        if attribute == "Arn":
            service = rtype.split("::")[1].lower()
            return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{logical.lower()}:{self.resource_name(logical)}"
        if attribute == "QueueName":
            return self.resource_name(logical)
        return f"{self.resource_name(logical)}.{attribute}"

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.t["Conditions"][name]))

    def sub(self, text: str, local: dict) -> str:
        def one(match):
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return self.resolve(local[name])
            if "." in name and "::" not in name:
                return self.getatt(*name.split(".", 1))
            return self.ref(name)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, node):
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                return self.getatt(*getatt(node))
            if fn == "Fn::Sub":
                text, local = (arg, {}) if isinstance(arg, str) else arg
                return self.sub(text, local)
            if fn == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if fn == "Condition":
                return self.condition(arg)
            if fn == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if fn == "Fn::Not":
                return not self.resolve(arg[0])
            if fn == "Fn::And":
                return all(self.resolve(a) for a in arg)
            if fn == "Fn::Or":
                return any(self.resolve(a) for a in arg)
            if fn == "Fn::Join":
                return arg[0].join(self.resolve(arg[1]))
            if fn == "Fn::Split":
                return self.resolve(arg[1]).split(arg[0])
            if fn == "Fn::Select":
                return self.resolve(arg[1])[int(arg[0])]
            assert not fn.startswith("Fn::"), f"{fn} is not resolved by this test: add it"
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not NO_VALUE}

    def alarm_series(self) -> dict[str, set]:
        """Alarm → every series it reads: (namespace, metric, dimensions)."""
        out = {}
        for name, alarm in resources(self.t, "AWS::CloudWatch::Alarm").items():
            p = self.resolve(alarm["Properties"])
            metrics = [p] if "MetricName" in p else [m["MetricStat"]["Metric"] for m in p.get("Metrics", []) if "MetricStat" in m]
            out[name] = {
                (m["Namespace"], m["MetricName"], frozenset((d["Name"], d["Value"]) for d in m.get("Dimensions", [])))
                for m in metrics
            }
        return out

    def dashboard_series(self) -> set:
        body = json.loads(self.resolve(props(self.t, "Dashboard", "AWS::CloudWatch::Dashboard")["DashboardBody"]))
        out = set()
        for widget in body["widgets"]:
            if widget["type"] != "metric":
                continue
            for entry in widget["properties"]["metrics"]:
                names = [x for x in entry if isinstance(x, str)]
                assert names[0] not in (".", "..."), "the shorthand of repeated entries is not read by this test"
                ns, metric, dims = names[0], names[1], names[2:]
                out.add((ns, metric, frozenset(zip(dims[::2], dims[1::2]))))
        return out

    def function_namespaces(self) -> dict[str, str]:
        return {
            fn: self.resolve(function_props(self.t, fn)["Environment"]["Variables"].get("POWERTOOLS_METRICS_NAMESPACE"))
            for fn in FUNCTIONS
        }


def check_stacks_never_share_a_series(t: dict) -> None:
    """Staging and production in one account: no alarm or dashboard widget of one reads a series
    (namespace, metric, dimensions) of the other, and Inlet's own series are read in the very
    namespace the functions emit to."""
    stacks = [Stack(t, "inlet-staging"), Stack(t, "inlet-production")]
    read = []
    for stack in stacks:
        alarms = stack.alarm_series()
        assert alarms, "no alarms"
        for name, series in alarms.items():
            assert series, f"{stack.name}: {name} reads no metric"
        namespaces = set(stack.function_namespaces().values())
        assert len(namespaces) == 1 and None not in namespaces, f"{stack.name}: functions' namespaces {namespaces}"
        (emitted,) = namespaces
        assert not emitted.startswith("AWS/"), emitted
        every = {(name, s) for name, series in alarms.items() for s in series}
        every |= {("Dashboard", s) for s in stack.dashboard_series()}
        for where, (ns, metric, _) in every:
            if not ns.startswith("AWS/"):
                assert ns == emitted, f"{stack.name}: {where} reads {metric} in {ns}, the functions emit to {emitted}"
        read.append(every)
    shared = {s for _, s in read[0]} & {s for _, s in read[1]}
    readers = sorted({where for where, s in read[0] if s in shared})
    assert not shared, f"{readers} read series both stacks write: {sorted(map(str, shared))}"
    # A namespace given as a parameter is used as is, by the functions and the alarms alike.
    named = Stack(t, "inlet-staging", {"MetricsNamespace": "Payments/inlet"})
    assert set(named.function_namespaces().values()) == {"Payments/inlet"}
    assert ("Payments/inlet", "refused", frozenset()) in named.alarm_series()["RefusalSpikeAlarm"]


APPLICATION_LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]


def check_log_levels(t: dict) -> None:
    """The LogLevel parameter is the level every function logs at, through Lambda's own
    ApplicationLogLevel where it can be: up to INFO, where the function follows
    AWS_LAMBDA_LOG_LEVEL (a level changed in the console applies). Above INFO Lambda's filter
    stays at INFO, because a metric (EMF) line has no level and Lambda counts it INFO, and
    POWERTOOLS_LOG_LEVEL, which the functions honour first, carries the level."""
    params = t["Parameters"]
    assert params["LogLevel"]["AllowedValues"] == APPLICATION_LEVELS
    assert params["LogLevel"]["Default"] == "INFO"
    assert sorted(params["SystemLogLevel"]["AllowedValues"]) == ["DEBUG", "INFO", "WARN"]
    for level in APPLICATION_LEVELS:
        for system in params["SystemLogLevel"]["AllowedValues"]:
            stack = Stack(t, "inlet-staging", {"LogLevel": level, "SystemLogLevel": system})
            for fn in FUNCTIONS:
                p = stack.resolve(function_props(t, fn))
                logging, env = p["LoggingConfig"], p["Environment"]["Variables"]
                assert logging["LogFormat"] == "JSON", fn
                assert logging["SystemLogLevel"] == system, f"{fn}: {logging}"
                app = logging.get("ApplicationLogLevel")
                assert app in ("TRACE", "DEBUG", "INFO"), f"{fn} at {level}: Lambda would drop the metric lines ({app})"
                assert env.get("POWERTOOLS_LOG_LEVEL", app) == level, f"{fn} at {level}: logs at {env.get('POWERTOOLS_LOG_LEVEL', app)}"
                if APPLICATION_LEVELS.index(level) <= APPLICATION_LEVELS.index("INFO"):
                    assert "POWERTOOLS_LOG_LEVEL" not in env, f"{fn} at {level}: would override the console's level"
                # AWS_LAMBDA_LOG_LEVEL, always set with a JSON log format, is honoured first.
                assert "RUST_LOG" not in env, f"{fn}: RUST_LOG would never apply"


def check_tracing(t: dict) -> None:
    """X-Ray is an option: the functions' Tracing mode and their roles' X-Ray grant exist
    together, only when Tracing is not Disabled, and the grant is XRAY_STATEMENT alone."""
    p = t["Parameters"]["Tracing"]
    assert p["AllowedValues"] == ["Disabled", "PassThrough", "Active"] and p["Default"] == "Disabled", p
    for name, role in resources(t, "AWS::IAM::Role").items():
        policies = tracing_policies(role)
        if name not in {fn.replace("Function", "Role") for fn in FUNCTIONS}:
            assert not policies, f"{name} is no function's role"
            continue
        assert len(policies) == 1, f"{name}: {len(policies)} X-Ray policies"
        ((policy, otherwise),) = policies
        assert ref(otherwise) == "AWS::NoValue", f"{name}: {otherwise}"
        assert policy["PolicyDocument"]["Statement"] == [XRAY_STATEMENT], f"{name}: {policy}"
    for mode in p["AllowedValues"]:
        stack = Stack(t, "inlet-staging", {"Tracing": mode})
        for fn in FUNCTIONS:
            traced = stack.resolve(function_props(t, fn)).get("Tracing")
            statements = [
                st
                for policy in stack.resolve(props(t, fn.replace("Function", "Role"), "AWS::IAM::Role"))["Policies"]
                for st in policy["PolicyDocument"]["Statement"]
            ]
            if mode == "Disabled":
                assert traced is None and XRAY_STATEMENT not in statements, f"{fn}: {traced}"
            else:
                assert traced == mode and XRAY_STATEMENT in statements, f"{fn} with {mode}: {traced}"


CHECKS = [
    check_log_levels,
    check_tracing,
    check_stacks_never_share_a_series,
    check_references_resolve,
    check_poller_fires_delayed_checks,
    check_worker_reports_batch_item_failures,
    check_visibility_covers_worker_timeout,
    check_lease_between_timeout_and_visibility,
    check_dead_letter_queue,
    check_functions_build_as_rust_arm64,
    check_event_archive,
    check_environment,
    check_ledger_table,
    check_blob_bucket,
    check_ttl_is_on_the_attribute_the_code_writes,
    check_log_groups,
    check_no_wildcard_iam,
    check_functions_use_explicit_roles,
    check_least_privilege,
    check_sqs_target_grant,
    check_secret_grants,
    check_http_api,
    check_poll_schedules,
    check_alarms,
    check_dashboard,
    check_outputs,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_template(tpl, check):
    check(tpl)


def test_no_poll_sources_means_no_schedules(raw_tpl):
    """The default (empty) PollSchedules expands to one placeholder that the condition drops,
    and whose expressions still evaluate (CloudFormation resolves them before conditions)."""
    empty = expand_foreach(raw_tpl, {})
    schedules = poll_schedules(empty)
    assert len(schedules) == 1
    (res,) = schedules.values()
    assert evaluate(empty["Conditions"][res["Condition"]], {}, raw_tpl) is False
    assert evaluate(res["Properties"]["ScheduleExpression"], {}, raw_tpl) == "rate(1 day)"
    with_two = {"PollSchedules": "a=rate(1 minute),b=rate(2 minutes)"}
    assert evaluate(raw_tpl["Conditions"]["HasPollSchedules"], with_two, raw_tpl) is True


def test_inlet_schedules_output_fits_the_parameter(tmp_path):
    """`inlet schedules` prints what the PollSchedules loop expands into one schedule per source."""
    inlet = ROOT / "target" / "debug" / "inlet"
    if not inlet.is_file():
        pytest.skip("target/debug/inlet not built (make test builds it before this suite)")
    config = tmp_path / "inlet.toml"
    config.write_text(
        """
[[sources]]
id = "stripe"
provider = "stripe"
secrets = ["env:UNSET_IN_THIS_TEST"]
[sources.poll]
kind = "stripe_events"
every = "10m"
[[sources]]
id = "tg-bot"
provider = "telegram"
webhooks = false
[sources.poll]
kind = "telegram_updates"
every = "20s"
"""
    )
    out = subprocess.run([str(inlet), "schedules", "--config", str(config), "--value"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    value = out.stdout.strip()
    assert value == "stripe=rate(10 minutes),tg-bot=rate(1 minute)", value
    expanded = expand_foreach(load_template(), {"PollSchedules": value})
    got = {
        (json.loads(evaluate(r["Properties"]["Target"]["Input"], {}, expanded))["source_id"],
         evaluate(r["Properties"]["ScheduleExpression"], {}, expanded))
        for r in poll_schedules(expanded).values()
    }
    assert got == {("stripe", "rate(10 minutes)"), ("tg-bot", "rate(1 minute)")}


def test_samconfig_lets_sam_expand_the_language_extensions():
    """SAM CLI expands Fn::ForEach only with --language-extensions, and CloudFormation needs
    CAPABILITY_AUTO_EXPAND to run the transform: without them the deploy fails."""
    import tomllib

    conf = tomllib.loads((ROOT / "samconfig.toml").read_text())["default"]
    assert "AWS::LanguageExtensions" in load_template()["Transform"]
    for command in ("build", "deploy", "sync", "validate"):
        assert conf[command]["parameters"].get("language_extensions") is True, command
    assert "CAPABILITY_AUTO_EXPAND" in conf["deploy"]["parameters"]["capabilities"].split()


def test_binaries_exist_in_workspace():
    """Each Binary names a package under functions/ (cargo-lambda builds it by name)."""
    for binary in FUNCTIONS.values():
        cargo = ROOT / "functions" / binary / "Cargo.toml"
        assert cargo.is_file(), f"{cargo} missing"
        assert re.search(rf'^name\s*=\s*"{binary}"', cargo.read_text(), re.M), f"{cargo} is not package {binary}"


def test_cfn_lint_clean():
    """cfn-lint (the venv's, offline) reports nothing at all on the template."""
    cfn_lint = Path(sys.executable).parent / "cfn-lint"  # the one installed with this interpreter
    assert cfn_lint.is_file(), f"{cfn_lint} missing: run infra/scripts/venv"
    proc = subprocess.run(
        [str(cfn_lint), "--format", "parseable", "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), (
        f"cfn-lint exit {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    )


# ------------------------------------------------- the guards can fail


def _rename_key(d: dict, old: str, new: str) -> None:
    d[new] = d.pop(old)


def _worker_queue_event(t: dict) -> dict:
    return worker_sqs_events(t)[0][1]["Properties"]


def _dashboard_sub(t: dict) -> list:
    return t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]


MUTATIONS = {
    "misspelt FunctionResponseTypes": (
        check_worker_reports_batch_item_failures,
        lambda t: _rename_key(_worker_queue_event(t), "FunctionResponseTypes", "FunctionResponseType"),
    ),
    "batch item failures off": (
        check_worker_reports_batch_item_failures,
        lambda t: _worker_queue_event(t).pop("FunctionResponseTypes"),
    ),
    "visibility < 6x timeout": (
        check_visibility_covers_worker_timeout,
        lambda t: t["Parameters"]["QueueVisibilityTimeoutSeconds"].update(Default=179),
    ),
    "lease > visibility": (
        check_lease_between_timeout_and_visibility,
        lambda t: t["Parameters"]["LeaseSeconds"].update(Default=181),
    ),
    "lease < worker timeout": (
        check_lease_between_timeout_and_visibility,
        lambda t: t["Parameters"]["LeaseSeconds"].update(Default=29),
    ),
    "maxReceiveCount hard-coded": (
        check_dead_letter_queue,
        lambda t: t["Resources"]["EventsQueue"]["Properties"]["RedrivePolicy"].update(maxReceiveCount=5),
    ),
    "x86_64 worker": (
        check_functions_build_as_rust_arm64,
        lambda t: t["Resources"]["WorkerFunction"]["Properties"].update(Architectures=["x86_64"]),
    ),
    "wrong Binary": (
        check_functions_build_as_rust_arm64,
        lambda t: t["Resources"]["PollerFunction"]["Metadata"]["BuildProperties"].update(Binary="worker"),
    ),
    "public blob bucket": (
        check_blob_bucket,
        lambda t: t["Resources"]["BlobBucket"]["Properties"]["PublicAccessBlockConfiguration"].update(
            RestrictPublicBuckets=False
        ),
    ),
    "archive never expires": (
        check_blob_bucket,
        lambda t: t["Resources"]["BlobBucket"]["Properties"]["LifecycleConfiguration"]["Rules"].pop(1),
    ),
    "blob bucket over plain HTTP": (
        check_blob_bucket,
        lambda t: t["Resources"]["BlobBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Condition"][
            "Bool"
        ].update({"aws:SecureTransport": "true"}),
    ),
    "bodies expire before a dead letter": (
        check_blob_bucket,
        lambda t: t["Parameters"]["BlobRetentionDays"].update(MinValue=7),
    ),
    "no TTL": (
        check_ledger_table,
        lambda t: t["Resources"]["LedgerTable"]["Properties"].pop("TimeToLiveSpecification"),
    ),
    "TTL on another attribute than the code writes": (
        check_ttl_is_on_the_attribute_the_code_writes,
        lambda t: t["Resources"]["LedgerTable"]["Properties"]["TimeToLiveSpecification"].update(
            AttributeName="expires_at"
        ),
    ),
    "TTL disabled": (
        check_ttl_is_on_the_attribute_the_code_writes,
        lambda t: t["Resources"]["LedgerTable"]["Properties"]["TimeToLiveSpecification"].update(Enabled=False),
    ),
    "log group without retention": (
        check_log_groups,
        lambda t: t["Resources"]["IngestLogGroup"]["Properties"].pop("RetentionInDays"),
    ),
    'Resource "*"': (
        check_no_wildcard_iam,
        lambda t: t["Resources"]["IngestRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][1].update(
            Resource="*"
        ),
    ),
    "SAM-generated role": (
        check_functions_use_explicit_roles,
        lambda t: t["Resources"]["WorkerFunction"]["Properties"].pop("Role"),
    ),
    "ingest reads the table": (
        check_least_privilege,
        lambda t: t["Resources"]["IngestRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(
            {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": {"Fn::GetAtt": ["LedgerTable", "Arn"]}}
        ),
    ),
    "target queue grant without its condition": (
        check_sqs_target_grant,
        lambda t: t["Resources"]["WorkerRole"]["Properties"]["Policies"].__setitem__(
            1, t["Resources"]["WorkerRole"]["Properties"]["Policies"][1]["Fn::If"][1]
        ),
    ),
    "secret grant without its condition": (
        check_secret_grants,
        lambda t: t["Resources"]["PollerRole"]["Properties"]["Policies"].__setitem__(
            1, t["Resources"]["PollerRole"]["Properties"]["Policies"][1]["Fn::If"][1]
        ),
    ),
    "a secret read on any parameter": (
        check_no_wildcard_iam,
        lambda t: t["Resources"]["IngestRole"]["Properties"]["Policies"][2]["Fn::If"][1]["PolicyDocument"]["Statement"][0].update(
            Resource="arn:aws:ssm:us-east-1:123456789012:parameter/*"
        ),
    ),
    "no refresh interval": (
        check_secret_grants,
        lambda t: t["Globals"]["Function"]["Environment"]["Variables"].pop("INLET_SECRETS_REFRESH_SECONDS"),
    ),
    "no archive": (
        check_event_archive,
        lambda t: t["Resources"].pop("EventArchive"),
    ),
    "memory fixed": (
        check_functions_build_as_rust_arm64,
        lambda t: t["Resources"]["WorkerFunction"]["Properties"].__setitem__("MemorySize", 512),
    ),
    "no throttling": (
        check_http_api,
        lambda t: _rename_key(
            t["Resources"]["HttpApi"]["Properties"]["DefaultRouteSettings"], "ThrottlingBurstLimit", "ThrotlingBurstLimit"
        ),
    ),
    "Ref to a missing resource": (
        check_references_resolve,
        lambda t: t["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"].update(
            INLET_TABLE={"Ref": "LedgerTabel"}
        ),
    ),
    "Sub of a missing parameter": (
        check_references_resolve,
        lambda t: t["Resources"]["EventBus"]["Properties"].update(Name={"Fn::Sub": "${StackNam}-events"}),
    ),
    "schedule without a DLQ": (
        check_poll_schedules,
        lambda t: next(iter(poll_schedules(t).values()))["Properties"]["Target"].pop("DeadLetterConfig"),
    ),
    "schedule invokes the worker": (
        check_poll_schedules,
        lambda t: next(iter(poll_schedules(t).values()))["Properties"]["Target"].update(
            Arn={"Fn::GetAtt": ["WorkerFunction", "Arn"]}
        ),
    ),
    "a poll source without a schedule": (
        check_poll_schedules,
        lambda t: t["Resources"].pop(next(iter(poll_schedules(t)))),
    ),
    "scheduler trusts any account": (
        check_poll_schedules,
        lambda t: t["Resources"]["PollSchedulerRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0].pop(
            "Condition"
        ),
    ),
    "no DLQ alarm": (
        check_alarms,
        lambda t: t["Resources"].pop("DeadLetterQueueAlarm"),
    ),
    "alarm notifies nobody": (
        check_alarms,
        lambda t: t["Resources"]["PollLagAlarm"]["Properties"].pop("AlarmActions"),
    ),
    "refusal alarm per one source": (
        check_alarms,
        lambda t: t["Resources"]["RefusalSpikeAlarm"]["Properties"].update(
            Dimensions=[{"Name": "source", "Value": "stripe"}]
        ),
    ),
    "worker throttles unwatched": (
        check_alarms,
        lambda t: t["Resources"].pop("WorkerThrottlesAlarm"),
    ),
    "dashboard without latency": (
        check_dashboard,
        lambda t: _dashboard_sub(t).__setitem__(0, _dashboard_sub(t)[0].replace("end_to_end_latency", "x")),
    ),
    "an alarm left at the namespace Inlet": (
        check_stacks_never_share_a_series,
        lambda t: t["Resources"]["ConflictAlarm"]["Properties"].update(Namespace="Inlet"),
    ),
    "a metric-math alarm reading Inlet": (
        check_stacks_never_share_a_series,
        lambda t: t["Resources"]["DispatchFailureRateAlarm"]["Properties"]["Metrics"][1]["MetricStat"]["Metric"].update(
            Namespace="Inlet"
        ),
    ),
    "a dashboard widget reading Inlet": (
        check_stacks_never_share_a_series,
        lambda t: _dashboard_sub(t).__setitem__(
            0, _dashboard_sub(t)[0].replace('["${Namespace}", "poll_lag"', '["Inlet", "poll_lag"')
        ),
    ),
    "the functions emit to another namespace than the alarms read": (
        check_stacks_never_share_a_series,
        lambda t: t["Globals"]["Function"]["Environment"]["Variables"].update(POWERTOOLS_METRICS_NAMESPACE="Inlet"),
    ),
    "a Lambda alarm without its function": (
        check_stacks_never_share_a_series,
        lambda t: t["Resources"]["PollerThrottlesAlarm"]["Properties"].pop("Dimensions"),
    ),
    "Lambda's level follows WARN and drops the metrics": (
        check_log_levels,
        lambda t: t["Resources"]["WorkerFunction"]["Properties"]["LoggingConfig"].update(
            ApplicationLogLevel={"Ref": "LogLevel"}
        ),
    ),
    "POWERTOOLS_LOG_LEVEL always set, the console's level ignored": (
        check_log_levels,
        lambda t: t["Globals"]["Function"]["Environment"]["Variables"].update(POWERTOOLS_LOG_LEVEL={"Ref": "LogLevel"}),
    ),
    "a dead RUST_LOG": (
        check_log_levels,
        lambda t: t["Globals"]["Function"]["Environment"]["Variables"].update(RUST_LOG={"Ref": "LogLevel"}),
    ),
    "system log level fixed": (
        check_log_levels,
        lambda t: t["Resources"]["PollerFunction"]["Properties"]["LoggingConfig"].update(SystemLogLevel="WARN"),
    ),
    "X-Ray grant without its condition": (
        check_tracing,
        lambda t: t["Resources"]["IngestRole"]["Properties"]["Policies"].__setitem__(
            -1, t["Resources"]["IngestRole"]["Properties"]["Policies"][-1]["Fn::If"][1]
        ),
    ),
    "X-Ray grant on a wider action": (
        check_no_wildcard_iam,
        lambda t: t["Resources"]["WorkerRole"]["Properties"]["Policies"][-1]["Fn::If"][1]["PolicyDocument"]["Statement"][0][
            "Action"
        ].append("xray:GetTraceSummaries"),
    ),
    "a resource-wide grant named like X-Ray's": (
        check_no_wildcard_iam,
        lambda t: t["Resources"]["PollerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].append(
            {**XRAY_STATEMENT, "Action": ["sqs:SendMessage"]}
        ),
    ),
    "tracing on without the grant": (
        check_tracing,
        lambda t: t["Resources"]["PollerRole"]["Properties"]["Policies"].pop(),
    ),
    "tracing on regardless of the parameter": (
        check_tracing,
        lambda t: t["Globals"]["Function"].update(Tracing="Active"),
    ),
    "a queue alarm naming a fixed queue": (
        check_stacks_never_share_a_series,
        lambda t: t["Resources"]["ChecksDeadLetterQueueAlarm"]["Properties"]["Dimensions"][0].update(Value="inlet-checks-dlq"),
    ),
    "missing env": (
        check_environment,
        lambda t: t["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"].pop("INLET_BUS_NAME"),
    ),
    # delayed checks
    "poller check batches without item failures": (
        check_poller_fires_delayed_checks,
        lambda t: t["Resources"]["PollerFunction"]["Properties"]["Events"]["Checks"]["Properties"].pop(
            "FunctionResponseTypes"
        ),
    ),
    "checks visibility < 6x poller timeout": (
        check_poller_fires_delayed_checks,
        lambda t: t["Parameters"]["ChecksVisibilityTimeoutSeconds"].update(Default=359),
    ),
    "worker without the checks queue": (
        check_poller_fires_delayed_checks,
        lambda t: t["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"].pop(
            "INLET_CHECKS_QUEUE_URL"
        ),
    ),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_guard_catches(tpl, mutation):
    check, mutate = MUTATIONS[mutation]
    broken = copy.deepcopy(tpl)
    mutate(broken)
    with pytest.raises(AssertionError):
        check(broken)
