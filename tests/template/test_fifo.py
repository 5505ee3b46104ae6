"""QueueType=fifo: EventsQueue and its DeadLetterQueue become FIFO queues together (per-entity
order for sources with `order_by`), the redrive and partial batch responses stay, and the
worker's event source drops the batching window Lambda refuses on FIFO queues. Each guard is
shown to fail on a template broken the way it guards against."""

from __future__ import annotations

import copy

import pytest

from test_template import (
    check_dead_letter_queue,
    check_worker_reports_batch_item_failures,
    props,
    raw_tpl,  # noqa: F401 (the fixture tpl builds on)
    tpl,  # noqa: F401 (a fixture)
    worker_sqs_events,
)

NO_VALUE = {"Ref": "AWS::NoValue"}


def fifo_if(value) -> dict:
    return {"Fn::If": ["FifoQueues", value, NO_VALUE]}


def check_queue_type_parameter(t: dict) -> None:
    p = t["Parameters"]["QueueType"]
    assert p["Type"] == "String"
    assert sorted(p["AllowedValues"]) == ["fifo", "standard"]
    assert p["Default"] == "standard", "FIFO costs throughput: only by choice"
    assert t["Conditions"]["FifoQueues"] == {"Fn::Equals": [{"Ref": "QueueType"}, "fifo"]}


def check_queues_are_fifo_together(t: dict) -> None:
    for name in ("EventsQueue", "DeadLetterQueue"):
        q = props(t, name, "AWS::SQS::Queue")
        # AWS: a FIFO queue's dead-letter queue must be FIFO too.
        assert q.get("FifoQueue") == fifo_if(True), f"{name}: FifoQueue must follow QueueType"
        # A FIFO queue's name must end in .fifo; CloudFormation adds it when no name is set,
        # and the adapters tell FIFO by that suffix.
        assert "QueueName" not in q, f"{name}: let CloudFormation name it"
    main = props(t, "EventsQueue", "AWS::SQS::Queue")
    assert main.get("DeduplicationScope") == fifo_if("messageGroup")
    assert main.get("FifoThroughputLimit") == fifo_if("perMessageGroupId")
    check_dead_letter_queue(t)
    check_worker_reports_batch_item_failures(t)


def check_no_batching_window_on_fifo(t: dict) -> None:
    ((_, event),) = worker_sqs_events(t)
    window = event["Properties"].get("MaximumBatchingWindowInSeconds")
    assert isinstance(window, dict) and "Fn::If" in window, "the window must depend on QueueType"
    cond, on_fifo, _ = window["Fn::If"]
    assert cond == "FifoQueues" and on_fifo == NO_VALUE


CHECKS = [check_queue_type_parameter, check_queues_are_fifo_together, check_no_batching_window_on_fifo]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_fifo(tpl, check):
    check(tpl)


def _queue(t: dict, name: str) -> dict:
    return t["Resources"][name]["Properties"]


MUTATIONS = {
    "FIFO main queue with a standard DLQ": (
        check_queues_are_fifo_together,
        lambda t: _queue(t, "DeadLetterQueue").pop("FifoQueue"),
    ),
    "FIFO always on": (
        check_queues_are_fifo_together,
        lambda t: _queue(t, "EventsQueue").update(FifoQueue=True),
    ),
    "a FIFO queue named without .fifo": (
        check_queues_are_fifo_together,
        lambda t: _queue(t, "EventsQueue").update(QueueName="inlet-events"),
    ),
    "FIFO queue without its redrive": (
        check_queues_are_fifo_together,
        lambda t: _queue(t, "EventsQueue").pop("RedrivePolicy"),
    ),
    "batching window on a FIFO queue": (
        check_no_batching_window_on_fifo,
        lambda t: worker_sqs_events(t)[0][1]["Properties"].update(MaximumBatchingWindowInSeconds=1),
    ),
    "FIFO by default": (
        check_queue_type_parameter,
        lambda t: t["Parameters"]["QueueType"].update(Default="fifo"),
    ),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_fifo_guard_catches(tpl, mutation):
    check, mutate = MUTATIONS[mutation]
    broken = copy.deepcopy(tpl)
    mutate(broken)
    with pytest.raises(AssertionError):
        check(broken)
