"""Builds tests/vectors/transfer_crypto.json: the transfer cryptography, computed by the Python
side from fixed inputs, which the browser's crypto.js must reproduce byte for byte.

Regenerate after a deliberate protocol change with `.venv/bin/python -m tests.vectors.transfer_crypto`;
tests/domain/test_transfer_keys.py fails while the file and the code disagree.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from openpod.domain.cpace import CPace, calculate_generator, scalar_mult_vfy
from openpod.domain.transfer_code import CodeError, parse_code
from openpod.domain.transfer_keys import Sealer, SessionKeys, key_infos
from openpod.domain.transfer_words import WORDS

VECTORS_PATH = Path(__file__).with_name("transfer_crypto.json")

# draft-irtf-cfrg-cpace, Appendix B.1 (CPACE-X25519-SHA512)
DRAFT_CASE = {
    "name": "draft-irtf-cfrg-cpace B.1",
    "prs": b"Password",
    "ci": b"\nAinitiator\nBresponder",
    "sid": bytes.fromhex("7e4b4791d6a8ef019b936c79fb7f2c57"),
    "ada": b"ADa",
    "adb": b"ADb",
    "ya": bytes.fromhex("45acf93116ae5d3dae995a7c627df2924321a8e857d9a200807131e38839b0c2"),
    "yb": bytes.fromhex("a145e914b347002d298ce2051394f0ed68cf3623dfe5db082c78ffa5a667acdc"),
}
OPENPOD_SID = bytes.fromhex("00112233445566778899aabbccddeeff")
OPENPOD_CASE = {
    "name": "openpod transfer",
    "prs": b"7-amber-falcon-orbit",
    "ci": b"openpod-transfer/1",
    "sid": OPENPOD_SID,
    "ada": b"sender",
    "adb": b"receiver",
    "ya": hashlib.sha256(b"openpod test scalar a").digest(),
    "yb": hashlib.sha256(b"openpod test scalar b").digest(),
}
# Appendix B.1's scalar_mult_vfy cases: u0..ub with the draft's scalar s (q0..q5, q7 are zero).
LOW_ORDER_SCALAR = "af46e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449aff"
LOW_ORDER_POINTS = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "daffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "dbffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "d9ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
    "4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
]
RECORD_PLAINTEXTS = [b'J{"t":"hello","v":1}', b"D" + bytes(range(256)) * 4, b"D"]
CODE_INPUTS = [
    "7-amber-falcon-orbit",
    "  7 Amber FALCON orbit \n",
    "99999-acorn--zipper - zebra",
    "-12-apple-banana-cherry-",
    "",
    "   ",
    "0-amber-falcon-orbit",
    "007-amber-falcon-orbit",
    "100000-amber-falcon-orbit",
    "seven-amber-falcon-orbit",
    "7",
    "7-amber",
    "7-amber-falcon",
    "7-amber-falcon-orbit-extra",
    "7-ambre-falcon-orbit",
    "7-amber-falcom-orbit",
    "7-amber-falcon-orbits",
    "7_amber_falcon_orbit",
]
BASE64_INPUTS = [b"", b"f", b"fo", b"foo", b"foob", bytes(range(256))]


def sha256_pattern(length: int) -> bytes:
    """The test pattern both sides build: byte i is i mod 251 (no alignment with 64-byte blocks)."""
    return (bytes(range(251)) * (length // 251 + 1))[:length]


BLOCK = 4 << 20  # hashes.js BLOCK_SIZE
BLOCK_LENGTHS = (0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 12345)


def sha256_4m(data: bytes) -> str:
    """The pages' block hash (docs/transfer.md "Hashes"): the SHA-256 of the SHA-256s of each
    4 MiB of `data`, the last block shorter; of nothing for empty data."""
    blocks = b"".join(
        hashlib.sha256(data[at : at + BLOCK]).digest() for at in range(0, len(data), BLOCK)
    )
    return hashlib.sha256(blocks).hexdigest()


def _cpace_case(case: dict[str, Any]) -> dict[str, str]:
    prs, ci, sid = case["prs"], case["ci"], case["sid"]
    a = CPace(prs=prs, sid=sid, ci=ci, initiator=True, ad=case["ada"], scalar=case["ya"])
    b = CPace(prs=prs, sid=sid, ci=ci, initiator=False, ad=case["adb"], scalar=case["yb"])
    isk = a.finish(b.share, case["adb"])
    assert b.finish(a.share, case["ada"]) == isk
    fields = {key: value.hex() for key, value in case.items() if isinstance(value, bytes)}
    return {
        "name": case["name"],
        **fields,
        "generator": calculate_generator(prs, ci, sid).hex(),
        "share_a": a.share.hex(),
        "share_b": b.share.hex(),
        "k": scalar_mult_vfy(case["ya"], b.share).hex(),
        "isk": isk.hex(),
    }


def _session(cpace: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    isk, sid = bytes.fromhex(cpace["isk"]), bytes.fromhex(cpace["sid"])
    ya, yb = bytes.fromhex(cpace["share_a"]), bytes.fromhex(cpace["share_b"])
    keys = SessionKeys.derive(isk, sid, ya, yb)
    session = {
        "isk": cpace["isk"],
        "sid": cpace["sid"],
        "ya": cpace["share_a"],
        "yb": cpace["share_b"],
        "keys": {name: keys.key(name).hex() for name in key_infos()},
        "tag_sender": keys.confirm_tag("sender").hex(),
        "tag_receiver": keys.confirm_tag("receiver").hex(),
    }
    records: list[dict[str, Any]] = []
    for name in key_infos():
        if name.startswith("confirm"):
            continue
        sealer = Sealer(keys.key(name))
        plaintexts = RECORD_PLAINTEXTS if name == "data sender webrtc" else RECORD_PLAINTEXTS[:1]
        for seq, plaintext in enumerate(plaintexts):
            record = sealer.seal(plaintext)
            records.append(
                {"key": name, "seq": seq, "plaintext": plaintext.hex(), "record": record.hex()}
            )
    return session, records


def _code(text: str) -> dict[str, Any]:
    try:
        code = parse_code(text)
    except CodeError as error:
        return {"input": text, "error": error.part}
    return {
        "input": text,
        "nameplate": code.nameplate,
        "words": list(code.words),
        "text": code.text,
    }


def build_vectors() -> dict[str, Any]:
    """Every vector, as the JSON object written to VECTORS_PATH."""
    cpace = [_cpace_case(DRAFT_CASE), _cpace_case(OPENPOD_CASE)]
    session, records = _session(cpace[1])
    scalar = bytes.fromhex(LOW_ORDER_SCALAR)
    return {
        "about": (
            "Generated by tests/vectors/transfer_crypto.py from the Python implementation "
            "(python -m tests.vectors.transfer_crypto); crypto.js must reproduce every value."
        ),
        "cpace": cpace,
        "scalar_mult_vfy": {
            "scalar": LOW_ORDER_SCALAR,
            "cases": [
                {"u": u, "q": scalar_mult_vfy(scalar, bytes.fromhex(u)).hex()}
                for u in LOW_ORDER_POINTS
            ],
        },
        "session": session,
        "records": records,
        "sha256": [
            {"pattern_length": n, "digest": hashlib.sha256(sha256_pattern(n)).hexdigest()}
            for n in (0, 3, 55, 56, 63, 64, 65, 1000, 1 << 20)
        ]
        + [{"text": "abc", "digest": hashlib.sha256(b"abc").hexdigest()}],
        "sha256_4m": [
            {"pattern_length": n, "digest": sha256_4m(sha256_pattern(n))} for n in BLOCK_LENGTHS
        ],
        "words": list(WORDS),
        "codes": [_code(text) for text in CODE_INPUTS],
        "base64": [
            {"hex": data.hex(), "b64": base64.b64encode(data).decode()} for data in BASE64_INPUTS
        ],
    }


def render() -> str:
    """The file's exact text (stable key order, one trailing newline)."""
    return json.dumps(build_vectors(), indent=1) + "\n"


if __name__ == "__main__":
    VECTORS_PATH.write_text(render())
    print(f"wrote {VECTORS_PATH}")
