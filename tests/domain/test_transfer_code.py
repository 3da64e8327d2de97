"""Transfer codes: the word list, parsing what users type, and that the secret words never
show in a repr or an error about another part."""

from __future__ import annotations

import re

import pytest

from openpod.domain.transfer_code import CodeError, TransferCode, parse_code
from openpod.domain.transfer_words import WORDS


def test_the_word_list_has_256_distinct_short_lowercase_words() -> None:
    assert len(WORDS) == 256
    assert len(set(WORDS)) == 256
    assert all(re.fullmatch(r"[a-z]{3,8}", word) for word in WORDS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7-amber-falcon-orbit", "7-amber-falcon-orbit"),
        ("  7 Amber FALCON orbit\n", "7-amber-falcon-orbit"),
        ("99999 - acorn -- zipper zebra", "99999-acorn-zipper-zebra"),
        ("-12-apple-banana-cherry-", "12-apple-banana-cherry"),
    ],
)
def test_parse_normalises(text: str, expected: str) -> None:
    code = parse_code(text)
    assert code.text == expected
    assert code.nameplate == expected.split("-")[0]
    assert code.secret == expected.split("-", 1)[1]
    assert parse_code(code.text) == code


@pytest.mark.parametrize(
    ("text", "part", "message"),
    [
        ("", "code", "empty"),
        (" - ", "code", "empty"),
        ("0-amber-falcon-orbit", "nameplate", "1 to 99999"),
        ("007-amber-falcon-orbit", "nameplate", "1 to 99999"),
        ("100000-amber-falcon-orbit", "nameplate", "1 to 99999"),
        ("amber-falcon-orbit", "nameplate", "1 to 99999"),
        ("7", "word1", "missing its first word"),
        ("7-amber", "word2", "missing its second word"),
        ("7-amber-falcon", "word3", "missing its third word"),
        ("7-amber-falcon-orbit-otter", "code", "more than"),
        ("7-ambre-falcon-orbit", "word1", "first word 'ambre'"),
        ("7-amber-falcom-orbit", "word2", "second word 'falcom'"),
        ("7-amber-falcon-orbits", "word3", "third word 'orbits'"),
    ],
)
def test_parse_errors_name_the_part(text: str, part: str, message: str) -> None:
    with pytest.raises(CodeError, match=message) as caught:
        parse_code(text)
    assert caught.value.part == part


def test_an_error_about_one_word_does_not_show_the_others() -> None:
    with pytest.raises(CodeError) as caught:
        parse_code("7-amber-falcom-orbit")
    assert "amber" not in str(caught.value)
    assert "orbit" not in str(caught.value)


def test_repr_and_str_hide_the_words() -> None:
    code = parse_code("7-amber-falcon-orbit")
    for shown in (repr(code), str(code), f"{code}", repr([code])):
        assert "7" in shown
        assert not any(word in shown for word in code.words)


def test_new_codes_use_the_list_and_vary() -> None:
    codes = {TransferCode.new("7") for _ in range(40)}
    assert len(codes) > 30  # 2^24 secrets: 40 draws all but never collide
    for code in codes:
        assert code.nameplate == "7"
        assert all(word in WORDS for word in code.words)
        assert parse_code(code.text) == code


@pytest.mark.parametrize(
    ("nameplate", "words"),
    [("0", ("amber", "falcon", "orbit")), ("7", ("amber", "falcon", "nope"))],
)
def test_a_code_cannot_be_built_from_bad_parts(nameplate: str, words: tuple[str, str, str]) -> None:
    with pytest.raises(CodeError):
        TransferCode(nameplate, words)
