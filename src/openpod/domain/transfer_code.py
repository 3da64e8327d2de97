"""The code a sender reads out to a receiver: `{nameplate}-{w1}-{w2}-{w3}`.

The nameplate (1..99999, handed out by the control plane) names a signaling room and is the
only part the server sees. The three words are the secret: they feed the PAKE and never leave
the two machines, so a `TransferCode` never shows them in its repr, and errors name the part
that is wrong rather than echo the code.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from openpod.domain.transfer_words import WORDS

_WORD_SET = frozenset(WORDS)
_NAMEPLATE = re.compile(r"[1-9][0-9]{0,4}")
# Parts are separated by runs of spaces, tabs, newlines or hyphens (the browser's parser uses
# the same characters, so both sides accept exactly the same texts).
_SEPARATORS = re.compile(r"[ \t\r\n-]+")
_TRIM = " \t\r\n"
_ORDINALS = ("first", "second", "third")


class CodeError(ValueError):
    """A code that cannot be used, and which part of it is wrong.

    `part` is "code" (empty or too many parts), "nameplate", "word1", "word2" or "word3".
    """

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part


def _check_nameplate(nameplate: str) -> None:
    if not _NAMEPLATE.fullmatch(nameplate):
        raise CodeError(
            "nameplate",
            "a code starts with a number from 1 to 99999, as in 7-amber-falcon-orbit",
        )


def _check_word(index: int, word: str) -> None:
    if word not in _WORD_SET:
        shown = word if word.isascii() and len(word) <= 16 else word[:16] + "…"
        raise CodeError(
            f"word{index + 1}", f"the {_ORDINALS[index]} word {shown!r} is not a code word"
        )


@dataclass(frozen=True, repr=False)
class TransferCode:
    """A parsed, normalised code. `text` is what users type; `secret` feeds the PAKE."""

    nameplate: str
    words: tuple[str, str, str]

    def __post_init__(self) -> None:
        _check_nameplate(self.nameplate)
        if len(self.words) != 3:
            raise CodeError("code", "a code has exactly three words")
        for index, word in enumerate(self.words):
            _check_word(index, word)

    @classmethod
    def new(cls, nameplate: str) -> TransferCode:
        """A fresh code for `nameplate` with three words drawn uniformly at random."""
        first, second, third = (secrets.choice(WORDS) for _ in range(3))
        return cls(nameplate, (first, second, third))

    @property
    def secret(self) -> str:
        """The secret part, `amber-falcon-orbit`."""
        return "-".join(self.words)

    @property
    def text(self) -> str:
        """The whole code, `7-amber-falcon-orbit` (the PAKE's password, UTF-8 encoded)."""
        return f"{self.nameplate}-{self.secret}"

    def __repr__(self) -> str:
        return f"TransferCode(nameplate={self.nameplate!r}, words=<hidden>)"

    __str__ = __repr__


def parse_code(text: str) -> TransferCode:
    """Parse what a user typed: lowercased, trimmed, parts split by spaces or hyphens.

    Raises CodeError naming the part that is missing or wrong.
    """
    parts = [part for part in _SEPARATORS.split(text.strip(_TRIM).lower()) if part]
    if not parts:
        raise CodeError("code", "the code is empty; it looks like 7-amber-falcon-orbit")
    _check_nameplate(parts[0])
    if len(parts) < 4:
        missing = _ORDINALS[len(parts) - 1]
        raise CodeError(f"word{len(parts)}", f"the code is missing its {missing} word")
    if len(parts) > 4:
        raise CodeError("code", "the code has more than a number and three words")
    for index, word in enumerate(parts[1:]):
        _check_word(index, word)
    return TransferCode(parts[0], (parts[1], parts[2], parts[3]))
