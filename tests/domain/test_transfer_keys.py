"""The key schedule and sealed records: the shared vectors file is what the Python code
computes, a wrong code fails the confirmation, and a record that is altered, replayed,
reordered or opened with the wrong key fails with IntegrityError."""

from __future__ import annotations

import json

import pytest

from openpod.domain.cpace import CPace
from openpod.domain.transfer_keys import IntegrityError, Opener, Sealer, SessionKeys
from tests.vectors.transfer_crypto import OPENPOD_SID as SID
from tests.vectors.transfer_crypto import VECTORS_PATH, render


def _session(receiver_code: bytes = b"7-amber-falcon-orbit") -> tuple[SessionKeys, SessionKeys]:
    ci = b"openpod-transfer/1"
    sender = CPace(prs=b"7-amber-falcon-orbit", sid=SID, ci=ci, initiator=True, ad=b"sender")
    receiver = CPace(prs=receiver_code, sid=SID, ci=ci, initiator=False, ad=b"receiver")
    isk_s = sender.finish(receiver.share, b"receiver")
    isk_r = receiver.finish(sender.share, b"sender")
    return (
        SessionKeys.derive(isk_s, SID, sender.share, receiver.share),
        SessionKeys.derive(isk_r, SID, sender.share, receiver.share),
    )


def test_the_vectors_file_is_what_python_computes() -> None:
    assert VECTORS_PATH.read_text() == render(), (
        "tests/vectors/transfer_crypto.json is stale: run python -m tests.vectors.transfer_crypto"
    )


def test_the_vectors_cover_every_key_and_the_draft() -> None:
    vectors = json.loads(VECTORS_PATH.read_text())
    assert vectors["cpace"][0]["isk"].startswith("99a9e0ff35acb94a")  # the draft's ISK_IR
    assert len(vectors["session"]["keys"]) == 10
    assert {r["key"] for r in vectors["records"]} == {
        name for name in vectors["session"]["keys"] if not name.startswith("confirm")
    }


def test_the_same_code_confirms_both_ways() -> None:
    sender, receiver = _session()
    receiver.check_confirm("sender", sender.confirm_tag("sender"))
    sender.check_confirm("receiver", receiver.confirm_tag("receiver"))
    assert sender.confirm_tag("sender") != sender.confirm_tag("receiver")
    assert sender.data_key("sender", "relay") == receiver.data_key("sender", "relay")


def test_a_wrong_code_fails_the_confirmation() -> None:
    sender, thief = _session(b"7-amber-falcon-otter")
    with pytest.raises(IntegrityError, match="do not match"):
        sender.check_confirm("receiver", thief.confirm_tag("receiver"))
    with pytest.raises(IntegrityError):
        sender.check_confirm("receiver", b"")


def test_keys_are_distinct_per_purpose_and_hidden() -> None:
    keys, _ = _session()
    all_keys = [keys.signal_key("sender"), keys.signal_key("receiver")] + [
        keys.data_key(role, transport)
        for role in ("sender", "receiver")
        for transport in ("direct", "webrtc", "relay")
    ]
    assert len(set(all_keys)) == 8
    assert all(len(key) == 32 for key in all_keys)
    assert all(key.hex() not in repr(keys) for key in all_keys)
    with pytest.raises(ValueError, match="transport"):
        keys.data_key("sender", "carrier-pigeon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="role"):
        keys.signal_key("server")  # type: ignore[arg-type]


def test_records_open_in_order() -> None:
    key = bytes(range(32))
    sealer, opener = Sealer(key), Opener(key)
    payloads: list[bytes | memoryview] = [b"J{}", b"D" + bytes(1000), b"", memoryview(b"Dview")]
    records = [sealer.seal(payload) for payload in payloads]
    assert [len(r) for r in records] == [len(p) + 16 for p in payloads]
    assert [opener.open(r) for r in records] == [bytes(p) for p in payloads]
    assert records[0][:3] != b"J{}"


def _three_records(key: bytes) -> list[bytes]:
    sealer = Sealer(key)
    return [sealer.seal(b"D" + bytes([n]) * 64) for n in range(3)]


@pytest.mark.parametrize("position", [0, 10, 64, 80])
def test_a_flipped_byte_fails(position: int) -> None:
    key = bytes(32)
    record = bytearray(_three_records(key)[0])
    record[position] ^= 0x01
    with pytest.raises(IntegrityError, match="altered"):
        Opener(key).open(bytes(record))


def test_a_replayed_record_fails_and_ends_the_opener() -> None:
    key = bytes(32)
    records = _three_records(key)
    opener = Opener(key)
    opener.open(records[0])
    with pytest.raises(IntegrityError):
        opener.open(records[0])
    with pytest.raises(IntegrityError, match="earlier record"):
        opener.open(records[1])  # the right one, but the session is over


@pytest.mark.parametrize("record", [b"", b"short", bytes(16)])
def test_a_reordered_truncated_or_foreign_record_fails(record: bytes) -> None:
    key = bytes(32)
    records = _three_records(key)
    with pytest.raises(IntegrityError):
        Opener(key).open(records[1])  # skips record 0
    with pytest.raises(IntegrityError):
        Opener(key).open(records[0][:-1])
    with pytest.raises(IntegrityError):
        Opener(bytes(31) + b"\x01").open(records[0])
    with pytest.raises(IntegrityError):
        Opener(key).open(record)
