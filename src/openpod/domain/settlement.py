"""A settlement's life: cut off-chain as PENDING, then SUBMITTED as a contract call, then
CONFIRMED on chain; or FAILED, with the reason, from either of the first two. A SUBMITTED
settlement whose transaction did not land (reverted as a whole, or its nonce taken by another
transaction) goes back to PENDING to be sent again: the contract pays its number once only."""

import enum

from openpod.domain.errors import InvalidSettlementTransition


class SettlementStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    CONFIRMED = "CONFIRMED"
    FAILED = "FAILED"


_S = SettlementStatus
TRANSITIONS: frozenset[tuple[SettlementStatus, SettlementStatus]] = frozenset(
    {
        (_S.PENDING, _S.SUBMITTED),
        (_S.SUBMITTED, _S.CONFIRMED),
        (_S.SUBMITTED, _S.PENDING),
        (_S.PENDING, _S.FAILED),
        (_S.SUBMITTED, _S.FAILED),
    }
)
FINAL = frozenset({_S.CONFIRMED, _S.FAILED})


def advance(current: SettlementStatus, to: SettlementStatus, reason: str | None = None) -> None:
    """Check that `current` may become `to`; FAILED needs a reason."""
    if (current, to) not in TRANSITIONS:
        raise InvalidSettlementTransition(f"a {current} settlement cannot become {to}")
    if to is _S.FAILED and not (reason and reason.strip()):
        raise InvalidSettlementTransition("a settlement fails with a reason")
