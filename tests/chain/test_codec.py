"""The ABI codec, with no chain: selectors, calls, results, reverts and logs, checked against
eth-abi and keccak directly rather than against the codec itself."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import decode, encode
from eth_utils.crypto import keccak

from openpod.adapters.chain import Codec, DecodedError, codec, short_bytes32
from openpod.adapters.chain.codec import abi_type

PAYMENTS = codec("OpenPodPayments")
CHARGE = "(uint256,bytes32,address,address,uint256,bytes32,uint256)"
USER = "0x1111111111111111111111111111111111111111"
PROVIDER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55 checksummed (the EIP example)
CONTRACT = "0xDeaDbeefdEAdbeefdEadbEEFdeadbeEFdEaDbeeF"
GPU = short_bytes32("NVIDIA H100 80GB HBM3")
LEASE = keccak(b"lease")


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def test_selectors_are_keccak_of_the_canonical_signature() -> None:
    assert PAYMENTS.selector("payment") == selector(
        "payment(uint256,bytes32,address,address,uint256,bytes32,uint256)"
    )
    assert PAYMENTS.selector("paymentBatch") == selector(f"paymentBatch({CHARGE}[])")
    assert PAYMENTS.selector("isPaid") == selector("isPaid(uint256)")
    assert codec("DevToken").selector("transfer") == bytes.fromhex("a9059cbb")  # ERC-20's
    assert PAYMENTS.event_topic("Paid") == keccak(
        text="Paid(uint256,address,address,bytes32,bytes32,uint256,uint256,uint256,uint256,uint256)"
    )
    with pytest.raises(KeyError):
        PAYMENTS.event_topic("Nothing")


def test_tuple_arrays_get_their_canonical_type() -> None:
    item = {
        "type": "tuple[]",
        "components": [
            {"type": "uint256"},
            {"type": "tuple", "components": [{"type": "address"}, {"type": "bytes32[2]"}]},
        ],
    }
    assert abi_type(item) == "(uint256,(address,bytes32[2]))[]"


def test_a_call_encodes_as_selector_and_arguments() -> None:
    args = (7, LEASE, USER, PROVIDER, 60, GPU, 2)
    data = PAYMENTS.encode_call("payment", *args)
    assert data[:4] == PAYMENTS.selector("payment")
    types = ["uint256", "bytes32", "address", "address", "uint256", "bytes32", "uint256"]
    assert decode(types, data[4:]) == (7, LEASE, USER, PROVIDER.lower(), 60, GPU, 2)
    charges = [(1, LEASE, USER, PROVIDER, 60, GPU, 1), (2, LEASE, USER, PROVIDER, 30, GPU, 1)]
    batch = PAYMENTS.encode_call("paymentBatch", charges)
    assert batch[4:] == encode([f"{CHARGE}[]"], [charges])


def test_results_decode_with_checksummed_addresses() -> None:
    assert PAYMENTS.decode_result("quote", encode(["uint256", "uint256"], [10, 1])) == (10, 1)
    assert PAYMENTS.decode_result("treasury", encode(["address"], [PROVIDER.lower()])) == (
        PROVIDER,
    )
    assert PAYMENTS.decode_result("isPaid", encode(["bool"], [True])) == (True,)


def test_a_custom_error_decodes_with_its_argument_names() -> None:
    data = selector("CapExceeded(address,uint256,uint256)") + encode(
        ["address", "uint256", "uint256"], [PROVIDER.lower(), 11, 10]
    )
    decoded = PAYMENTS.decode_error(data)
    assert decoded == DecodedError("CapExceeded", {"user": PROVIDER, "wouldSpend": 11, "cap": 10})
    assert str(decoded) == f"CapExceeded(user={PROVIDER}, wouldSpend=11, cap=10)"
    mismatch = selector("LeaseMismatch(bytes32,string)") + encode(
        ["bytes32", "string"], [LEASE, "gpuCount"]
    )
    assert PAYMENTS.decode_error(mismatch) == DecodedError(
        "LeaseMismatch", {"lease": LEASE, "field": "gpuCount"}
    )
    assert PAYMENTS.decode_error(selector("EmptyBatch()")) == DecodedError("EmptyBatch", {})


def test_error_string_and_panic_decode_whatever_the_contract() -> None:
    message = selector("Error(string)") + encode(["string"], ["nope"])
    panic = selector("Panic(uint256)") + encode(["uint256"], [0x11])
    for any_codec in (PAYMENTS, Codec([])):
        assert any_codec.decode_error(message) == DecodedError("Error", {"message": "nope"})
        assert any_codec.decode_error(panic) == DecodedError("Panic", {"code": 0x11})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x02\x03",  # shorter than a selector
        selector("NoSuchError(uint256)") + encode(["uint256"], [1]),
        selector("CapExceeded(address,uint256,uint256)") + bytes(40),  # truncated arguments
        selector("Error(string)") + bytes(10),
        selector("Panic(uint256)"),
    ],
)
def test_unknown_or_truncated_revert_data_decodes_to_none(data: bytes) -> None:
    assert PAYMENTS.decode_error(data) is None


def _log(topics: list[bytes], data: bytes, address: str = CONTRACT.lower()) -> dict[str, Any]:
    return {
        "address": address,
        "topics": ["0x" + t.hex() for t in topics],
        "data": "0x" + data.hex(),
        "blockNumber": "0x1a",
        "transactionHash": "0x" + "cd" * 32,
        "logIndex": "0x3",
    }


def test_a_log_decodes_indexed_and_plain_fields_by_name() -> None:
    topics = [
        PAYMENTS.event_topic("Paid"),
        encode(["uint256"], [7]),
        encode(["address"], [USER]),
        encode(["address"], [PROVIDER]),
    ]
    data = encode(
        ["bytes32", "bytes32", "uint256", "uint256", "uint256", "uint256", "uint256"],
        [LEASE, GPU, 2, 60, 5, 600, 30],
    )
    event = PAYMENTS.decode_log(_log(topics, data))
    assert event is not None
    assert (event.name, event.address, event.block_number, event.log_index) == (
        "Paid",
        CONTRACT,
        26,
        3,
    )
    assert event.tx_hash == "0x" + "cd" * 32
    assert event.args == {
        "settlementId": 7,
        "user": USER,
        "provider": PROVIDER,
        "lease": LEASE,
        "gpuType": GPU,
        "gpuCount": 2,
        "durationSeconds": 60,
        "rate": 5,
        "amount": 600,
        "fee": 30,
    }
    rejected = PAYMENTS.decode_log(
        _log(
            [PAYMENTS.event_topic("PaymentRejected"), encode(["uint256"], [9])],
            encode(["bytes"], [selector("EmptyBatch()")]),
        )
    )
    assert rejected is not None
    assert rejected.args == {"settlementId": 9, "reason": selector("EmptyBatch()")}


def test_a_log_of_another_event_or_with_no_topics_is_none() -> None:
    transfer = keccak(text="Transfer(address,address,uint256)")  # the token's, not ours
    assert PAYMENTS.decode_log(_log([transfer], encode(["uint256"], [1]))) is None
    assert PAYMENTS.decode_log(_log([], b"")) is None
