"""The settlement state machine, one transition at a time."""

from __future__ import annotations

import pytest

from openpod.domain.errors import InvalidSettlementTransition
from openpod.domain.settlement import FINAL, TRANSITIONS, SettlementStatus, advance

S = SettlementStatus


@pytest.mark.parametrize(("start", "end"), sorted(TRANSITIONS))
def test_each_allowed_transition(start: S, end: S) -> None:
    advance(start, end, "why" if end is S.FAILED else None)


@pytest.mark.parametrize(
    ("start", "end"), [(a, b) for a in S for b in S if (a, b) not in TRANSITIONS]
)
def test_every_other_transition_is_refused(start: S, end: S) -> None:
    with pytest.raises(InvalidSettlementTransition):
        advance(start, end, "why")


def test_failing_needs_a_reason() -> None:
    for reason in (None, "", "  "):
        with pytest.raises(InvalidSettlementTransition, match="reason"):
            advance(S.SUBMITTED, S.FAILED, reason)


def test_a_submission_that_did_not_land_goes_back_to_pending() -> None:
    advance(S.SUBMITTED, S.PENDING)
    with pytest.raises(InvalidSettlementTransition):
        advance(S.CONFIRMED, S.PENDING)


def test_final_states_go_nowhere() -> None:
    assert all(start not in FINAL for start, _ in TRANSITIONS)
