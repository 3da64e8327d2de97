"""The pod lifecycle as a literal transition table.

The control plane owns a pod's *desired* status (what the user asked for) and records its
*actual* status from what the node reports; every change of the actual status goes through
`next_status`, so a status can only move along an edge written below.
"""

import enum

from openpod.domain.errors import InvalidTransition


class PodStatus(enum.StrEnum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    FAILED = "FAILED"


class DesiredStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    TERMINATED = "TERMINATED"


class PodEvent(enum.StrEnum):
    # asked by the user (through the API)
    STOP = "stop"
    RESUME = "resume"
    TERMINATE = "terminate"
    # decided by the control plane
    SCHEDULED = "scheduled"  # a node and GPUs were assigned; the node is told to start
    UNSCHEDULABLE = "unschedulable"  # no node can take it
    # reported by the node
    READY = "ready"  # the process runs and SSH answers (or is known to be unavailable)
    START_FAILED = "start_failed"
    EXITED = "exited"  # the workload ended by itself
    CRASHED = "crashed"  # the workload ended with a non-zero code
    HALTED = "halted"  # the node confirms the pod's processes are gone after a stop
    REMOVED = "removed"  # the node confirms everything of the pod is deleted


S, E = PodStatus, PodEvent

TRANSITIONS: dict[tuple[PodStatus, PodEvent], PodStatus] = {
    (S.PENDING, E.SCHEDULED): S.STARTING,
    (S.PENDING, E.UNSCHEDULABLE): S.FAILED,
    (S.PENDING, E.TERMINATE): S.TERMINATED,  # never placed: nothing to clean on a node
    (S.STARTING, E.READY): S.RUNNING,
    (S.STARTING, E.START_FAILED): S.FAILED,
    (S.STARTING, E.EXITED): S.STOPPED,
    (S.STARTING, E.CRASHED): S.FAILED,
    (S.STARTING, E.STOP): S.STOPPING,
    (S.STARTING, E.TERMINATE): S.TERMINATING,
    (S.RUNNING, E.READY): S.RUNNING,  # readiness of more ports: no change of status
    (S.RUNNING, E.EXITED): S.STOPPED,
    (S.RUNNING, E.CRASHED): S.FAILED,
    (S.RUNNING, E.STOP): S.STOPPING,
    (S.RUNNING, E.TERMINATE): S.TERMINATING,
    (S.STOPPING, E.HALTED): S.STOPPED,
    (S.STOPPING, E.EXITED): S.STOPPED,
    (S.STOPPING, E.CRASHED): S.STOPPED,  # asked to stop: how it ended does not matter
    (S.STOPPING, E.STOP): S.STOPPING,
    (S.STOPPING, E.TERMINATE): S.TERMINATING,
    (S.STOPPED, E.STOP): S.STOPPED,
    (S.STOPPED, E.RESUME): S.PENDING,
    (S.STOPPED, E.TERMINATE): S.TERMINATING,
    (S.STOPPED, E.HALTED): S.STOPPED,
    (S.FAILED, E.RESUME): S.PENDING,
    (S.FAILED, E.STOP): S.FAILED,
    (S.FAILED, E.TERMINATE): S.TERMINATING,
    (S.FAILED, E.HALTED): S.FAILED,
    (S.TERMINATING, E.TERMINATE): S.TERMINATING,
    (S.TERMINATING, E.REMOVED): S.TERMINATED,
    (S.TERMINATED, E.TERMINATE): S.TERMINATED,
    (S.TERMINATED, E.REMOVED): S.TERMINATED,
}

_USER_WORDS = {E.STOP: "stop", E.RESUME: "resume", E.TERMINATE: "terminate"}

# Statuses in which a pod may hold GPUs on its node: until the node confirms that its
# processes are gone (stopped, removed), nothing else may be placed on them.
HOLDS_GPUS = frozenset({S.PENDING, S.STARTING, S.RUNNING, S.STOPPING, S.TERMINATING})


def next_status(current: PodStatus, event: PodEvent) -> PodStatus:
    """The status after `event`, or InvalidTransition naming why it is not allowed."""
    try:
        return TRANSITIONS[(current, event)]
    except KeyError:
        if event in _USER_WORDS:
            raise InvalidTransition(
                f"cannot {_USER_WORDS[event]} a pod that is {current.value}"
            ) from None
        raise InvalidTransition(
            f"event {event.value!r} is not allowed in {current.value}"
        ) from None


def can(current: PodStatus, event: PodEvent) -> bool:
    return (current, event) in TRANSITIONS


def desired_after(event: PodEvent) -> DesiredStatus | None:
    """The desired status a user event sets, if it sets one."""
    return {
        E.STOP: DesiredStatus.STOPPED,
        E.RESUME: DesiredStatus.RUNNING,
        E.TERMINATE: DesiredStatus.TERMINATED,
    }.get(event)
