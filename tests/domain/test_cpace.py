"""CPace (draft-irtf-cfrg-cpace, CPACE-X25519-SHA512): the draft's Appendix B.1 vectors, the
abort on low-order and malformed shares, and that only the same code gives the same key."""

from __future__ import annotations

import pytest

from openpod.domain.cpace import (
    CPace,
    PakeError,
    calculate_generator,
    generator_string,
    prefix_free_cat,
    prepend_len,
    scalar_mult_vfy,
)
from tests.vectors.transfer_crypto import LOW_ORDER_POINTS, LOW_ORDER_SCALAR

h = bytes.fromhex
PRS = b"Password"
CI = b"\nAinitiator\nBresponder"
SID = h("7e4b4791d6a8ef019b936c79fb7f2c57")
YA = h("45acf93116ae5d3dae995a7c627df2924321a8e857d9a200807131e38839b0c2")
YB = h("a145e914b347002d298ce2051394f0ed68cf3623dfe5db082c78ffa5a667acdc")
ISK_IR = h(
    "99a9e0ff35acb94ad8af1cd6b32ac409dc7d00557ccd9a7d19d3b4629e5f1f08"
    "4f9332096162438c7ecc78331b4eda17e1a229a47182eccc9ea58cd9cdcd8e9a"
)


def _pair(prs_a: bytes = PRS, prs_b: bytes = PRS) -> tuple[CPace, CPace]:
    a = CPace(prs=prs_a, sid=SID, ci=CI, initiator=True, ad=b"ADa", scalar=YA)
    b = CPace(prs=prs_b, sid=SID, ci=CI, initiator=False, ad=b"ADb", scalar=YB)
    return a, b


def test_string_utilities_match_the_draft() -> None:
    assert prepend_len(b"") == h("00")
    assert prepend_len(b"1234") == h("0431323334")
    assert prepend_len(bytes(range(127)))[:1] == h("7f")
    assert prepend_len(bytes(range(128)))[:2] == h("8001")
    assert prefix_free_cat(b"1234", b"5", b"", b"6789") == h("04313233340135000436373839")


def test_generator_matches_the_draft() -> None:
    gen_str = generator_string(PRS, CI, SID)
    assert len(gen_str) == 168
    assert gen_str.startswith(h("0843506163653235350850617373776f72646d00"))
    assert gen_str.endswith(
        h("160a41696e69746961746f720a42726573706f6e646572107e4b4791d6a8ef019b936c79fb7f2c57")
    )
    assert calculate_generator(PRS, CI, SID) == h(
        "4e6098733061c0e8486611a904fe5edb049804d26130a44131a6229e55c5c321"
    )


def test_shares_secret_point_and_isk_match_the_draft() -> None:
    a, b = _pair()
    assert a.share == h("6f7fd31863b18b0cc9830fc842c60dea80120ccf2fd375498225e45a52065361")
    assert b.share == h("e1b730a4956c0f853d96c5d125cebeeea46952c07c6f66da65bd9ffd2f71a462")
    k = h("2a905bc5f0b93ee72ac4b6ea8723520941adfc892935bf6f86d9e199befa6024")
    assert scalar_mult_vfy(YA, b.share) == k
    assert scalar_mult_vfy(YB, a.share) == k
    assert a.finish(b.share, b"ADb") == ISK_IR
    assert b.finish(a.share, b"ADa") == ISK_IR


@pytest.mark.parametrize("index", range(len(LOW_ORDER_POINTS)))
def test_scalar_mult_vfy_matches_the_draft_on_low_order_points(index: int) -> None:
    expected = {
        6: "d8e2c776bbacd510d09fd9278b7edcd25fc5ae9adfba3b6e040e8d3b71b21806",
        8: "c85c655ebe8be44ba9c0ffde69f2fe10194458d137f09bbff725ce58803cdb38",
        9: "db64dafa9b8fdd136914e61461935fe92aa372cb056314e1231bc4ec12417456",
        10: "e062dcd5376d58297be2618c7498f55baa07d7e03184e8aada20bca28888bf7a",
        11: "993c6ad11c4c29da9a56f7691fd0ff8d732e49de6250b6c2e80003ff4629a175",
    }.get(index, "00" * 32)
    result = scalar_mult_vfy(h(LOW_ORDER_SCALAR), h(LOW_ORDER_POINTS[index]))
    assert result.hex() == expected


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4, 5, 7])
def test_a_low_order_share_aborts(index: int) -> None:
    a, _ = _pair()
    with pytest.raises(PakeError, match="low-order"):
        a.finish(h(LOW_ORDER_POINTS[index]), b"ADb")


@pytest.mark.parametrize("share", [b"", bytes(31), bytes(33)])
def test_a_share_of_the_wrong_length_aborts(share: bytes) -> None:
    a, _ = _pair()
    with pytest.raises(PakeError, match="not 32"):
        a.finish(share, b"ADb")


def test_different_codes_give_different_keys() -> None:
    a, b = _pair(b"7-amber-falcon-orbit", b"7-amber-falcon-otter")
    assert a.finish(b.share, b"ADb") != b.finish(a.share, b"ADa")


def test_the_transcript_binds_roles_and_associated_data() -> None:
    a, b = _pair()
    isk = a.finish(b.share, b"ADb")
    assert a.finish(b.share, b"ADx") != isk
    same_side = CPace(prs=PRS, sid=SID, ci=CI, initiator=True, ad=b"ADb", scalar=YB)
    assert same_side.finish(a.share, b"ADa") != isk  # both initiators: transcripts differ


def test_fresh_scalars_agree_and_differ_each_time() -> None:
    args = {"prs": b"7-amber-falcon-orbit", "sid": SID, "ci": b"openpod-transfer/1"}
    a = CPace(**args, initiator=True, ad=b"sender")
    b = CPace(**args, initiator=False, ad=b"receiver")
    again = CPace(**args, initiator=True, ad=b"sender")
    assert a.share != again.share
    assert a.finish(b.share, b"receiver") == b.finish(a.share, b"sender")
    assert "scalar" not in repr(a)
