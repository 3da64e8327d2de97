"""The pod lifecycle table, one transition at a time."""

from __future__ import annotations

import pytest

from openpod.domain.errors import InvalidTransition
from openpod.domain.lifecycle import (
    HOLDS_GPUS,
    TRANSITIONS,
    PodEvent,
    PodStatus,
    desired_after,
    next_status,
)

S, E = PodStatus, PodEvent


@pytest.mark.parametrize(
    ("start", "event", "end"), [(s, e, t) for (s, e), t in TRANSITIONS.items()]
)
def test_every_written_transition_is_taken(
    start: PodStatus, event: PodEvent, end: PodStatus
) -> None:
    assert next_status(start, event) is end


FORBIDDEN = [(s, e) for s in PodStatus for e in PodEvent if (s, e) not in TRANSITIONS]


@pytest.mark.parametrize(("start", "event"), FORBIDDEN)
def test_every_other_transition_is_refused(start: PodStatus, event: PodEvent) -> None:
    with pytest.raises(InvalidTransition):
        next_status(start, event)


def test_the_happy_path_of_a_pod() -> None:
    path = [
        E.SCHEDULED,
        E.READY,
        E.STOP,
        E.HALTED,
        E.RESUME,
        E.SCHEDULED,
        E.READY,
        E.TERMINATE,
        E.REMOVED,
    ]
    status = S.PENDING
    seen = []
    for event in path:
        status = next_status(status, event)
        seen.append(status)
    assert seen == [
        S.STARTING,
        S.RUNNING,
        S.STOPPING,
        S.STOPPED,
        S.PENDING,
        S.STARTING,
        S.RUNNING,
        S.TERMINATING,
        S.TERMINATED,
    ]


def test_user_errors_name_the_action_and_the_status() -> None:
    with pytest.raises(InvalidTransition, match="cannot resume a pod that is RUNNING"):
        next_status(S.RUNNING, E.RESUME)
    with pytest.raises(InvalidTransition, match="cannot stop a pod that is TERMINATED"):
        next_status(S.TERMINATED, E.STOP)


def test_terminated_is_final_and_stopped_pods_hold_no_gpus() -> None:
    assert all(t is S.TERMINATED for (s, _), t in TRANSITIONS.items() if s is S.TERMINATED)
    assert S.STOPPED not in HOLDS_GPUS and S.FAILED not in HOLDS_GPUS
    assert S.RUNNING in HOLDS_GPUS and S.STOPPING in HOLDS_GPUS


def test_user_events_set_the_desired_status() -> None:
    assert desired_after(E.STOP) == "STOPPED"
    assert desired_after(E.RESUME) == "RUNNING"
    assert desired_after(E.TERMINATE) == "TERMINATED"
    assert desired_after(E.READY) is None
