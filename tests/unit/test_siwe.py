"""EIP-4361 messages: the text the spec gives, round trips, and every way a message is wrong."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from openpod.domain.siwe import SiweError, SiweMessage, format_time, new_nonce, parse_time

ADDRESS = "0xe5A12547fe4E872D192E3eCecb76F2Ce1aeA4946"
T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)

FULL = f"""https://pods.example.org:8443 wants you to sign in with your Ethereum account:
{ADDRESS}

Link this wallet to your openpod account.

URI: https://pods.example.org:8443/login?x=1#y
Version: 1
Chain ID: 31337
Nonce: 32891756abcDEF
Issued At: 2026-11-27T10:00:00Z
Expiration Time: 2026-11-27T10:10:00.500Z
Not Before: 2026-11-27T09:59:00Z
Request ID: req-7:@a
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/claim.json"""

MINIMAL = f"""pods.example.org wants you to sign in with your Ethereum account:
{ADDRESS}


URI: https://pods.example.org
Version: 1
Chain ID: 1
Nonce: abcdefgh
Issued At: 2026-11-27T10:00:00Z"""


def _message(**changes: object) -> SiweMessage:
    fields: dict[str, object] = dict(
        domain="127.0.0.1:8420",
        address=ADDRESS,
        uri="http://127.0.0.1:8420",
        chain_id=31337,
        nonce="Abc123Def456Ghi78",
        issued_at=T0,
        statement="Link this wallet to your openpod account.",
    )
    fields.update(changes)
    return SiweMessage(**fields)  # type: ignore[arg-type]


def test_a_full_message_parses_field_by_field_and_renders_back_byte_for_byte() -> None:
    message = SiweMessage.parse(FULL)
    assert message.scheme == "https"
    assert message.domain == "pods.example.org:8443"
    assert message.address == ADDRESS
    assert message.statement == "Link this wallet to your openpod account."
    assert message.uri == "https://pods.example.org:8443/login?x=1#y"
    assert message.version == "1"
    assert message.chain_id == 31337
    assert message.nonce == "32891756abcDEF"
    assert message.issued_at == T0
    assert message.expiration_time == T0 + timedelta(minutes=10, milliseconds=500)
    assert message.not_before == T0 - timedelta(minutes=1)
    assert message.request_id == "req-7:@a"
    assert message.resources == (
        "ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
        "https://example.com/claim.json",
    )
    assert message.text() == FULL


def test_without_a_statement_three_line_feeds_follow_the_address() -> None:
    message = SiweMessage.parse(MINIMAL)
    assert message.statement is None and message.scheme is None
    assert message.expiration_time is None and message.resources is None
    assert message.text() == MINIMAL
    assert f"{ADDRESS}\n\n\nURI: " in _message(statement=None).text()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"statement": None},
        {"scheme": "http"},
        {"expiration_time": T0 + timedelta(minutes=10)},
        {"not_before": T0, "request_id": ""},
        {"resources": ()},
        {"resources": ("https://a.example/1", "urn:x:y")},
        {"issued_at": T0.replace(microsecond=123456)},
        {"domain": "user@[::1]:8420", "uri": "http://[::1]:8420/"},
    ],
)
def test_built_messages_survive_a_round_trip(changes: dict[str, object]) -> None:
    message = _message(**changes)
    text = message.text()
    assert SiweMessage.parse(text) == message
    assert SiweMessage.parse(text).text() == text


def test_times_in_other_offsets_are_the_same_instant_rendered_in_utc() -> None:
    text = MINIMAL.replace("2026-11-27T10:00:00Z", "2026-11-27T12:00:00.1234567+02:00")
    message = SiweMessage.parse(text)
    assert message.issued_at == T0 + timedelta(microseconds=123456)
    assert format_time(message.issued_at) == "2026-11-27T10:00:00.123456Z"
    assert parse_time("t", "2026-11-27T10:00:00z") == T0
    assert parse_time("t", "2026-11-27t05:30:00-04:30") == T0
    assert format_time(T0.astimezone(timezone(timedelta(hours=-3)))) == "2026-11-27T10:00:00Z"


def _broken(old: str, new: str, text: str = FULL) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "domain"),
        (_broken("wants you to sign in", "wants you to log in"), "domain"),
        (_broken("https://pods.example.org:8443 ", "https://pods example.org "), "domain"),
        (_broken("https://pods", "1http://pods"), "scheme"),
        (_broken(ADDRESS, ADDRESS[:-1]), "address"),
        (_broken(ADDRESS, "0x" + "g" * 40), "address"),
        (_broken(f"{ADDRESS}\n\n", f"{ADDRESS}\nhello\n"), "address"),
        (_broken("account.\n\nURI", "account.\nURI"), "statement"),
        (_broken("Link this wallet", 'Link "this" wallet'), "statement"),
        (_broken("Link this wallet", "Link this wället"), "statement"),
        (_broken("URI: https://pods.example.org:8443/login?x=1#y", "URI: not a uri"), "URI"),
        (_broken("URI: ", "Uri: "), "URI"),
        (_broken("Version: 1", "Version: 2"), "Version"),
        (_broken("Chain ID: 31337", "Chain ID: 0x7a69"), "Chain ID"),
        (_broken("Chain ID: 31337", "Chain ID: "), "Chain ID"),
        (_broken("Nonce: 32891756abcDEF", "Nonce: 1234567"), "Nonce"),
        (_broken("Nonce: 32891756abcDEF", "Nonce: 12345678-9"), "Nonce"),
        (_broken("Issued At: 2026-11-27T10:00:00Z", "Issued At: 2026-11-27 10:00:00"), "Issued At"),
        (
            _broken("Issued At: 2026-11-27T10:00:00Z", "Issued At: 2026-02-30T10:00:00Z"),
            "Issued At",
        ),
        (_broken("Issued At: 2026-11-27T10:00:00Z", "Issued At: 2026-11-27T10:00:00"), "Issued At"),
        (_broken("10:10:00.500Z", "25:10:00Z"), "Expiration Time"),
        (_broken("Not Before: 2026-11-27T09:59:00Z", "Not Before: yesterday"), "Not Before"),
        (_broken("Request ID: req-7:@a", "Request ID: a b"), "Request ID"),
        (_broken("- https://example.com/claim.json", "- not a uri"), "Resources"),
        (
            _broken("- https://example.com/claim.json", "* https://example.com/claim.json"),
            "message",
        ),
        (
            _broken(
                "Expiration Time: 2026-11-27T10:10:00.500Z\nNot Before: 2026-11-27T09:59:00Z",
                "Not Before: 2026-11-27T09:59:00Z\nExpiration Time: 2026-11-27T10:10:00.500Z",
            ),
            "Expiration Time",
        ),
        (FULL + "\n", "message"),
        (FULL.replace("\n", "\r\n"), "message"),
        (MINIMAL.rsplit("\n", 1)[0], "Issued At"),
        (MINIMAL.split("\nNonce")[0], "Nonce"),
        (f"{MINIMAL.split(chr(10))[0]}\n{ADDRESS}", "address"),
    ],
)
def test_a_malformed_message_is_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(SiweError) as caught:
        SiweMessage.parse(text)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"domain": ""}, "domain"),
        ({"domain": "a/b"}, "domain"),
        ({"address": ADDRESS.lower()[:-2]}, "address"),
        ({"statement": ""}, "statement"),
        ({"statement": "two\nlines"}, "statement"),
        ({"uri": "relative/path"}, "URI"),
        ({"version": "2"}, "Version"),
        ({"chain_id": -1}, "Chain ID"),
        ({"chain_id": True}, "Chain ID"),
        ({"nonce": "short"}, "Nonce"),
        ({"issued_at": T0.replace(tzinfo=None)}, "Issued At"),
        ({"expiration_time": datetime(2026, 1, 1)}, "Expiration Time"),
        ({"request_id": "a b"}, "Request ID"),
        ({"resources": ("ok:1", "no uri")}, "Resources"),
        ({"scheme": "ht tp"}, "scheme"),
    ],
)
def test_building_checks_every_field_as_parsing_does(
    changes: dict[str, object], field: str
) -> None:
    with pytest.raises(SiweError) as caught:
        _message(**changes)
    assert caught.value.field == field


def test_times_are_checked_against_now_with_a_skew_for_the_signers_clock() -> None:
    skew = timedelta(seconds=60)
    message = _message(expiration_time=T0 + timedelta(minutes=5), not_before=T0)
    message.check_times(T0, skew)
    message.check_times(T0 - skew, skew)  # the wallet's clock runs a minute ahead: fine
    with pytest.raises(SiweError, match=r"^Issued At: .* is in the future"):
        message.check_times(T0 - skew - timedelta(seconds=1), skew)
    with pytest.raises(SiweError, match=r"^Expiration Time: .* has passed"):
        message.check_times(T0 + timedelta(minutes=5), skew)
    late = dataclasses.replace(message, not_before=T0 + timedelta(minutes=2))
    with pytest.raises(SiweError, match=r"^Not Before: not valid before"):
        late.check_times(T0, skew)


def test_nonces_are_random_letters_and_digits_of_at_least_eight() -> None:
    nonces = {new_nonce() for _ in range(200)}
    assert len(nonces) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9]{17}", n) for n in nonces)
    assert re.fullmatch(r"[A-Za-z0-9]{8}", new_nonce(8))
    with pytest.raises(ValueError, match="at least 8"):
        new_nonce(7)
