"""A key in an encrypted JSON keystore (Web3 Secret Storage), decrypted into memory once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# eth_account takes ~0.8 s to import (eth_keyfile pulls in py_ecc): imported where a key is
# used, so CLI commands that never touch a wallet start without it.


class SignerError(Exception):
    """The keystore could not be read, decrypted or written."""


class KeystoreSigner:
    """Signs with a key decrypted from a keystore file. The password and the key never
    appear in errors or logs; `repr` shows the address only."""

    def __init__(self, private_key: bytes) -> None:
        from eth_account import Account

        self._account = Account.from_key(private_key)

    def __repr__(self) -> str:
        return f"KeystoreSigner({self.address})"

    @property
    def address(self) -> str:
        return str(self._account.address)

    @classmethod
    def load(cls, path: Path, password: str) -> KeystoreSigner:
        try:
            keystore = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SignerError(f"cannot read keystore {path}: {type(exc).__name__}") from None
        from eth_account import Account

        try:
            key = Account.decrypt(keystore, password)
        except ValueError:
            raise SignerError(f"wrong password for keystore {path}") from None
        return cls(bytes(key))

    @classmethod
    def create(cls, path: Path, password: str, private_key: bytes | None = None) -> KeystoreSigner:
        """A new key (or `private_key`), written encrypted to `path` (mode 0600, not replaced)."""
        from eth_account import Account

        account = Account.from_key(private_key) if private_key else Account.create()
        keystore = Account.encrypt(account.key, password)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise SignerError(f"keystore {path} exists already") from None
        with os.fdopen(fd, "w") as out:
            json.dump(keystore, out)
        return cls(bytes(account.key))

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        return bytes(self._account.sign_transaction(tx).raw_transaction)

    def sign_typed_data(self, typed_data: dict[str, Any]) -> bytes:
        """An EIP-712 signature (65 bytes, r || s || v)."""
        from eth_account.messages import encode_typed_data

        message = encode_typed_data(full_message=typed_data)
        return bytes(self._account.sign_message(message).signature)

    def sign_message(self, text: str) -> bytes:
        """An EIP-191 personal_sign signature (what Sign-In with Ethereum asks for)."""
        from eth_account.messages import encode_defunct

        return bytes(self._account.sign_message(encode_defunct(text=text)).signature)
