"""The ABI codec, with no chain: selectors, calls, results, reverts and logs, checked against
eth-abi and keccak directly rather than against the codec itself; nothing eth-abi raises gets
out (malformed answers and logs are `ChainError`s naming what they were for), and the payments
contract's reverts decode with the token's errors too. Last, on the session anvil, the same
seen through `Contract`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from eth_abi.abi import decode, encode
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from openpod.adapters.chain import (
    ChainError,
    Charge,
    Codec,
    Contract,
    DecodedError,
    LeaseTerms,
    Reverted,
    Rpc,
    artifact,
    codec,
    lease_id,
    send_and_wait,
    short_bytes32,
)
from openpod.adapters.chain.codec import abi_type
from tests.support.chain import FEE_BPS, H100, RATES, TOKENS, Chain, MakeUser, new_signer

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


# ---- nothing of eth-abi's escapes: what cannot be encoded or decoded is a ChainError ------


def test_an_empty_answer_is_a_chain_error_naming_the_function() -> None:
    with pytest.raises(ChainError, match=r"decimals\(\) returned no data: no contract"):
        codec("DevToken").decode_result("decimals", b"")


@pytest.mark.parametrize(
    ("contract", "function", "data", "words"),
    [
        ("OpenPodPayments", "treasury", bytes(31), ("treasury()", "31 bytes", "(address)")),
        ("OpenPodPayments", "treasury", b"\x01" * 32, ("treasury()",)),  # dirty padding
        ("OpenPodPayments", "paused", (2).to_bytes(32, "big"), ("paused()", "(bool)")),
        ("DevToken", "name", encode(["bytes"], [b"\xff\xfe"]), ("name()", "(string)")),  # not UTF-8
        ("DevToken", "name", (32).to_bytes(32, "big") + b"\xff" * 32, ("name()",)),  # huge length
    ],
)
def test_a_malformed_answer_is_a_chain_error_naming_the_function(
    contract: str, function: str, data: bytes, words: tuple[str, ...]
) -> None:
    with pytest.raises(ChainError) as caught:
        codec(contract).decode_result(function, data)
    for word in words:
        assert word in str(caught.value)


def test_arguments_that_do_not_fit_are_a_chain_error_naming_the_function() -> None:
    with pytest.raises(ChainError, match=r"cannot encode isPaid\(uint256\)"):
        PAYMENTS.encode_call("isPaid", "seven")
    with pytest.raises(ChainError, match=r"cannot encode setFee\(uint16\).*70000"):
        PAYMENTS.encode_call("setFee", 70_000)
    with pytest.raises(ChainError, match=r"cannot encode payment\("):
        PAYMENTS.encode_call("payment", 7, LEASE)  # too few
    with pytest.raises(ChainError, match=r"cannot encode constructor\("):
        PAYMENTS.encode_constructor(USER)
    with pytest.raises(KeyError):  # a function the ABI lacks is the caller's bug, not the chain's
        PAYMENTS.encode_call("pay", 7)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: LeaseTerms("pod", 1, "0x12", PROVIDER, "H100", 1, 1, 1).as_tuple(), "lease user"),
        (lambda: LeaseTerms("pod", 1, USER, "nope", "H100", 1, 1, 1).as_tuple(), "provider"),
        (
            lambda: Charge(7, LEASE, USER, "0x" + "zz" * 20, 60, "H100", 1).as_tuple(),
            "settlement 7",
        ),
        (lambda: lease_id(USER, "pod", 2**32), "a lease id"),  # generation is a uint32
        (
            lambda: LeaseTerms("pod", 1, USER, PROVIDER, "H100", 1, 1, 1).typed_data(1, ""),
            "payments",
        ),
    ],
)
def test_bad_addresses_and_values_in_leases_and_charges_are_chain_errors(
    make: Callable[[], object], field: str
) -> None:
    with pytest.raises(ChainError, match=field):
        make()


async def test_a_contract_at_something_not_an_address_is_a_chain_error() -> None:
    async with Rpc("http://127.0.0.1:9") as rpc:  # never called
        with pytest.raises(ChainError, match="DevToken address '0x1234' is not an address"):
            Contract(rpc, "DevToken", "0x1234")


def test_an_error_string_that_is_not_utf8_still_decodes() -> None:
    data = selector("Error(string)") + encode(["bytes"], [b"bad \xff byte"])
    assert PAYMENTS.decode_error(data) == DecodedError("Error", {"message": "bad \ufffd byte"})


@pytest.mark.parametrize(
    "data",
    [
        selector("Error(string)") + (32).to_bytes(32, "big") + b"\xff" * 32,  # absurd length
        # a field name that is not UTF-8 (bytes and string encode alike)
        selector("LeaseMismatch(bytes32,string)") + encode(["bytes32", "bytes"], [LEASE, b"\xff"]),
        selector("Panic(uint256)") + bytes(31),
    ],
)
def test_malformed_revert_data_is_unknown_not_an_exception(data: bytes) -> None:
    assert PAYMENTS.decode_error(data) is None


# ---- the token's errors, bubbled up through the payments contract -----------------------

ALLOWANCE = selector("ERC20InsufficientAllowance(address,uint256,uint256)") + encode(
    ["address", "uint256", "uint256"], [CONTRACT, 0, 57]
)


def test_the_payments_codec_falls_back_to_the_tokens_errors() -> None:
    expected = DecodedError(
        "ERC20InsufficientAllowance", {"spender": CONTRACT, "allowance": 0, "needed": 57}
    )
    assert codec("DevToken").decode_error(ALLOWANCE) == expected
    assert PAYMENTS.decode_error(ALLOWANCE) == expected  # the default fallback
    assert codec("OpenPodPayments", ()).decode_error(ALLOWANCE) is None  # none asked for
    assert codec("OpenPodPayments", ("DevToken",)) is PAYMENTS  # one codec per ABI and fallbacks
    assert PAYMENTS.fallbacks == (codec("DevToken"),)


def test_a_contracts_own_error_comes_before_a_fallbacks_with_the_same_selector() -> None:
    def error_abi(name: str, arg: str) -> list[dict[str, Any]]:
        return [{"type": "error", "name": name, "inputs": [{"name": arg, "type": "uint256"}]}]

    data = selector("Oops(uint256)") + encode(["uint256"], [3])
    other = Codec(error_abi("Oops", "theirs"))
    ours = Codec(error_abi("Oops", "ours"), fallbacks=[other])
    assert ours.decode_error(data) == DecodedError("Oops", {"ours": 3})
    assert Codec([], fallbacks=[Codec([]), other]).decode_error(data) == DecodedError(
        "Oops", {"theirs": 3}
    )
    assert Codec([], fallbacks=[Codec([])]).decode_error(data) is None


# ---- logs a node may send malformed -----------------------------------------------------


def _rejected(**changes: Any) -> dict[str, Any]:
    log = _log(
        [PAYMENTS.event_topic("PaymentRejected"), encode(["uint256"], [9])],
        encode(["bytes"], [b"why"]),
    )
    log.update(changes)
    return log


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"data": "0xnothex"}, ("PaymentRejected", "not hex")),
        ({"data": "0x" + "00" * 31}, ("malformed PaymentRejected log",)),
        ({"topics": [_rejected()["topics"][0], "0x12zz"]}, ("topic", "not hex")),
        ({"topics": [_rejected()["topics"][0], "0x1234"]}, ("malformed PaymentRejected log",)),
        ({"address": "0x12"}, ("malformed PaymentRejected log",)),
        ({"blockNumber": None}, ("malformed PaymentRejected log",)),
        ({"logIndex": "0xzz"}, ("malformed PaymentRejected log",)),
    ],
)
def test_a_malformed_log_of_ours_is_a_chain_error_naming_the_event(
    changes: dict[str, Any], words: tuple[str, ...]
) -> None:
    with pytest.raises(ChainError) as caught:
        PAYMENTS.decode_log(_rejected(**changes))
    for word in words:
        assert word in str(caught.value)
    log = _rejected()
    del log["transactionHash"]
    with pytest.raises(ChainError, match="a PaymentRejected log without 'transactionHash'"):
        PAYMENTS.decode_log(log)


def test_a_log_with_another_layout_of_indexed_fields_is_not_ours() -> None:
    # ERC-721's Transfer has the same signature as ERC-20's but its third field is indexed too.
    transfer = keccak(text="Transfer(address,address,uint256)")
    topics = [transfer, encode(["address"], [USER]), encode(["address"], [PROVIDER])]
    token = codec("DevToken")
    event = token.decode_log(_log(topics, encode(["uint256"], [5])))
    assert event is not None and event.args == {"from": USER, "to": PROVIDER, "value": 5}
    nft = _log([*topics, encode(["uint256"], [5])], b"")
    assert token.decode_log(nft) is None
    assert token.decode_log(_log(topics[:2], encode(["uint256"], [5]))) is None


def test_an_indexed_string_is_its_hash() -> None:
    abi = [
        {
            "type": "event",
            "name": "Named",
            "inputs": [
                {"name": "name", "type": "string", "indexed": True},
                {"name": "n", "type": "uint256", "indexed": False},
            ],
        }
    ]
    named = Codec(abi)
    event = named.decode_log(
        _log([named.event_topic("Named"), keccak(text="alice")], encode(["uint256"], [1]))
    )
    assert event is not None and event.args == {"name": keccak(text="alice"), "n": 1}


def _outputs_and_errors() -> tuple[list[tuple[Codec, str]], list[bytes]]:
    functions, selectors = [], [selector("Error(string)"), selector("Panic(uint256)")]
    for name in ("OpenPodPayments", "DevToken"):
        for item in artifact(name).abi:
            if item["type"] == "function" and item["outputs"]:
                functions.append((codec(name), str(item["name"])))
            elif item["type"] == "error":
                types = ",".join(abi_type(i) for i in item["inputs"])
                selectors.append(selector(f"{item['name']}({types})"))
    return functions, selectors


FUNCTIONS, ERROR_SELECTORS = _outputs_and_errors()
# ABI-looking bytes: words that read as small offsets and lengths, huge ones, or noise.
WORDS = st.lists(
    st.one_of(
        st.integers(0, 320).map(lambda n: n.to_bytes(32, "big")),
        st.just(b"\xff" * 32),
        st.binary(min_size=32, max_size=32),
    ),
    max_size=10,
).map(b"".join)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(body=st.one_of(WORDS, st.binary(max_size=200)), pick=st.integers(min_value=0))
def test_no_bytes_make_decoding_raise_anything_but_a_chain_error(body: bytes, pick: int) -> None:
    owner, function = FUNCTIONS[pick % len(FUNCTIONS)]
    with contextlib.suppress(ChainError):
        owner.decode_result(function, body)
    decoded = PAYMENTS.decode_error(ERROR_SELECTORS[pick % len(ERROR_SELECTORS)] + body)
    assert decoded is None or isinstance(decoded, DecodedError)


class CannedRpc(Rpc):
    """A node that answers each method with a fixed, here malformed, result: what no real anvil
    sends, to see that `Contract` and `send_and_wait` translate it."""

    def __init__(self, answers: dict[str, Any]) -> None:
        super().__init__("http://127.0.0.1:9")  # never connected to
        self.answers = answers

    async def request(self, method: str, params: list[Any] | None = None) -> Any:
        return self.answers[method]


async def test_a_receipt_without_a_status_is_a_chain_error() -> None:
    answers = {
        "eth_estimateGas": "0x5208",
        "eth_getBlockByNumber": {"baseFeePerGas": "0x1"},
        "eth_maxPriorityFeePerGas": "0x1",
        "eth_chainId": "0x7a69",
        "eth_getTransactionCount": "0x0",
        "eth_sendRawTransaction": "0x" + "ab" * 32,
        "eth_getTransactionReceipt": {"blockNumber": "0x1", "root": "0x" + "00" * 32},
    }
    async with CannedRpc(answers) as rpc:
        with pytest.raises(ChainError, match=r"the receipt of 0xabab.* has no status"):
            await send_and_wait(rpc, new_signer(), CONTRACT, b"")


async def test_a_receipt_log_from_no_address_is_a_chain_error() -> None:
    async with CannedRpc({}) as rpc:
        payments = Contract(rpc, "OpenPodPayments", CONTRACT)
        rejected = _rejected()
        assert [e.name for e in payments.events({"logs": [rejected]})] == ["PaymentRejected"]
        assert payments.events({"logs": None}) == []
        with pytest.raises(ChainError, match="a log's address '0xnope' is not an address"):
            payments.events({"logs": [{**rejected, "address": "0xnope"}]})


# ---- on the session anvil: what `Contract` makes of a node's answers ---------------------


async def test_reading_an_address_without_a_contract_names_function_and_address(rpc: Rpc) -> None:
    nobody = new_signer().address
    with pytest.raises(ChainError) as caught:
        await Contract(rpc, "DevToken", nobody).read("decimals")
    assert not isinstance(caught.value, Reverted)
    assert f"DevToken at {nobody}: decimals() returned no data" in str(caught.value)


async def test_a_token_error_bubbled_up_by_the_payments_contract_is_decoded(
    chain: Chain, make_user: MakeUser
) -> None:
    user = await make_user(allowance=0)  # tokens, a cap and a lease, but nothing approved
    amount = 60 * RATES[H100]
    fee = amount * FEE_BPS // 10_000
    expected = DecodedError(
        "ERC20InsufficientAllowance",
        {"spender": chain.payments.address, "allowance": 0, "needed": amount - fee},
    )
    data = chain.payments.calldata("payment", *user.charge(1, 60).as_tuple())

    with pytest.raises(Reverted) as simulated:
        await chain.payments.simulate(chain.operator.address, data)
    assert simulated.value.error == expected
    with pytest.raises(Reverted) as sent:
        await chain.payments.send(chain.operator, data)
    assert sent.value.error == expected and str(expected) in str(sent.value)
    # Without the fallback the same revert comes back undecoded, its data intact.
    bare = Contract(chain.rpc, "OpenPodPayments", chain.payments.address, fallbacks=())
    with pytest.raises(Reverted) as undecoded:
        await bare.simulate(chain.operator.address, data)
    assert undecoded.value.error is None and undecoded.value.data == simulated.value.data
    assert await chain.balance(user.address) == TOKENS  # nothing moved


async def test_a_read_that_reverts_comes_back_decoded(chain: Chain) -> None:
    charge = Charge(1, LEASE, USER, PROVIDER, 60, H100, 1)
    with pytest.raises(Reverted) as caught:  # eth_call from no one: not an operator
        await chain.payments.read("payment", *charge.as_tuple())
    assert caught.value.error is not None
    assert caught.value.error.name == "AccessControlUnauthorizedAccount"
