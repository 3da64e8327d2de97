"""Helpers for the chain tests: a real anvil's JSON-RPC, contract reads, fast keystores."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils.address import to_checksum_address

from openpod.adapters.chain import codec


def rpc(url: str, method: str, *params: Any) -> Any:
    """One JSON-RPC call (anvil's test methods included); an error answer fails the test.
    urllib, not httpx: a new httpx client costs ~0.1 s building a TLS context."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    assert url.startswith("http://127.0.0.1:"), url  # tests talk to their own anvil only
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        answer = json.loads(response.read())
    assert "error" not in answer, answer
    return answer["result"]


def read(url: str, name: str, address: str, function: str, *args: Any) -> Any:
    """A view of a deployed contract, e.g. `read(url, "OpenPodPayments", p, "feeBps")`; one
    value, or the tuple of several."""
    abi = codec(name)
    data = rpc(
        url,
        "eth_call",
        {"to": address, "data": "0x" + abi.encode_call(function, *args).hex()},
        "latest",
    )
    values = abi.decode_result(function, bytes.fromhex(str(data)[2:]))
    return values[0] if len(values) == 1 else values


def has_code(url: str, address: str, block: str = "latest") -> bool:
    return str(rpc(url, "eth_getCode", address, block)) not in ("0x", "0x0")


def keystore_address(path: Path) -> str:
    return str(
        to_checksum_address("0x" + json.loads(path.read_text())["address"].removeprefix("0x"))
    )


def fast_keystore(directory: Path, name: str) -> tuple[Path, Path, str, bytes]:
    """A keystore with a cheap KDF (the real ones take ~1 s of scrypt to open) and its 0600
    password file: (keystore, password file, address, private key)."""
    account = Account.create()
    password = f"secret-{name}-{os.urandom(4).hex()}"
    keystore = directory / f"{name}.json"
    keystore.write_text(
        json.dumps(Account.encrypt(account.key, password, kdf="pbkdf2", iterations=2))
    )
    password_file = directory / f"{name}.password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return keystore, password_file, str(account.address), bytes(account.key)
